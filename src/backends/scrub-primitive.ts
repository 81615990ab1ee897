import { native } from '../native/native.js';

/**
 * Bytes mapped at a time when zeroing through a mapping. Measured on 4 KiB
 * shmem pages (bench/NOTES.md): from 16 MiB up the window size hardly matters,
 * and a small one keeps each blocking step short.
 */
export const ZERO_MAP_WINDOW = 16 * 1024 * 1024;

/**
 * Writes zeros over [offset, offset + length) of `fd` through shared mappings,
 * one window at a time: the scrub of memory that cannot be hole-punched
 * (/dev/mem, DAX). Each window is mapped with MAP_POPULATE so its page tables
 * are filled in one pass instead of by a fault per page (ignored where the
 * mapping is already complete, as for /dev/mem), zeroed with memset in native
 * code, and unmapped. Synchronous: callers yield between calls.
 */
export function zeroThroughMapping(fd: number, offset: number, length: number, window: number = ZERO_MAP_WINDOW): void {
  const page = native.pageSize();
  if (window <= 0 || window % page !== 0) throw new RangeError(`window ${window} must be a positive multiple of the ${page}-byte page`);
  const prot = native.PROT_READ | native.PROT_WRITE;
  const flags = native.MAP_SHARED | native.MAP_POPULATE;
  const end = offset + length;
  for (let at = offset; at < end; ) {
    const mapStart = at - (at % page);
    const mapLen = Math.min(mapStart + window, end) - mapStart;
    const map = native.mmap(fd, mapLen, prot, flags, mapStart);
    try {
      native.fillMemory(map, at - mapStart, mapLen - (at - mapStart), 0);
    } finally {
      native.munmap(map);
    }
    at = mapStart + mapLen;
  }
}
