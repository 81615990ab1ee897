import { native } from '../native/native.js';
import { mappingFault } from './windowed-memory.js';

/**
 * Bytes mapped at a time when zeroing through a mapping. Each window costs a
 * mapping set up and torn down (with its TLB shootdown): on 2 MiB huge pages
 * 16 MiB windows ran at 28 GB/s, 64 MiB at 48, 256 MiB at 60 and 1 GiB at 60;
 * on 4 KiB pages the size hardly mattered (bench/NOTES.md). The scrub yields to
 * the event loop between calls, so a window is also its longest blocking step
 * (about 5 ms at that speed).
 */
export const ZERO_MAP_WINDOW = 256 * 1024 * 1024;

/**
 * Writes zeros over [offset, offset + length) of `fd` through shared mappings,
 * one window at a time: the scrub of memory that is not hole-punched (/dev/mem,
 * device-dax, huge pages). Mappings start and end on `granularity` (the
 * backing's page: the system page, a huge page, the device-dax alignment).
 * Each window is mapped with MAP_POPULATE, so its page tables are filled in one
 * pass instead of by a fault per page (nothing to do where mmap fills them
 * itself, as for /dev/mem), zeroed by memset in native code, and unmapped.
 * Synchronous: callers yield between calls.
 */
export function zeroThroughMapping(
  fd: number,
  offset: number,
  length: number,
  granularity: number,
  window: number = ZERO_MAP_WINDOW,
): void {
  if (!(granularity > 0) || granularity % native.pageSize() !== 0) {
    throw new RangeError(`granularity ${granularity} must be a positive multiple of the ${native.pageSize()}-byte page`);
  }
  if (!(window > 0)) throw new RangeError(`window ${window} must be positive`);
  const step = Math.max(granularity, window - (window % granularity));
  const prot = native.PROT_READ | native.PROT_WRITE;
  const flags = native.MAP_SHARED | native.MAP_POPULATE;
  const end = offset + length;
  for (let mapStart = offset - (offset % granularity); mapStart < end; mapStart += step) {
    const mapEnd = Math.min(mapStart + step, end + ((granularity - (end % granularity)) % granularity));
    const map = native.mmap(fd, mapEnd - mapStart, prot, flags, mapStart);
    try {
      const from = Math.max(offset, mapStart);
      const err = native.fillMemory(map, from - mapStart, Math.min(end, mapEnd) - from, 0);
      if (err !== 0) throw mappingFault(err, from, Math.min(end, mapEnd) - from, 'zeroing');
    } finally {
      native.munmap(map);
    }
  }
}
