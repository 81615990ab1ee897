import { DeviceError } from '../device/errors.js';
import type { MemoryBacking } from '../device/memory-bar.js';
import { isSyscallError, MAX_MAPPING_LENGTH, native } from '../native/native.js';
import { Errno } from '../wire/constants.js';

const GiB = 1024 * 1024 * 1024;

export interface WindowOptions {
  /** Bytes per window (rounded down to the granularity); default 1 GiB or the largest ArrayBuffer. */
  windowSize?: number;
  /**
   * Copy through the SIGBUS guard (native copyMemory): for files a client can
   * truncate or punch pages out of, where a plain load or store would fault and
   * end the daemon. A fault becomes an error (EFAULT) for that access only.
   */
  guarded?: boolean;
}

/**
 * The error for an access through a mapping whose pages could not be had:
 * EFAULT (refused, as the client's doing: a file it truncated, huge pages it
 * punched out and the pool cannot give back) or EIO (a hardware memory error).
 */
export function mappingFault(errno: number, offset: number, length: number, what: string): Error {
  const range = `[0x${offset.toString(16)}, +${length})`;
  if (errno === Errno.EFAULT) {
    return new DeviceError(Errno.EFAULT, `${what} ${range}: the memory is gone (its backing file was truncated, or its pages released)`);
  }
  return Object.assign(new Error(`${what} ${range}: hardware memory error`), { errno, code: errno === Errno.EIO ? 'EIO' : `errno ${errno}` });
}

/**
 * Memory reached through the daemon's own shared mappings of an fd: backings
 * that pread/pwrite cannot serve (device-dax: mmap only; hugetlbfs: no
 * write(2)), the sealed memfds (a copy costs less than a syscall), and files a
 * client may resize (guarded). The fd is mapped in windows, each created on
 * first use and kept: an aperture may be far larger than one ArrayBuffer can
 * be (4 GiB on Node 20), and most of it is never trapped.
 *
 * Windows start at fdOffset and are multiples of `mapGranularity` (the huge page
 * size or the device-dax alignment), which both kinds require of a mapping.
 */
export class WindowedMemory implements MemoryBacking {
  readonly windowSize: number;
  readonly guarded: boolean;
  private readonly windows: (Uint8Array | undefined)[] = [];
  private readonly buffers: ArrayBuffer[] = [];
  /** Per window, how far from its start a fill has faulted it in: later fills there go straight to memset. */
  private readonly faultedTo: number[] = [];
  /** End of the fd range the windows may cover: the memory end, rounded up to the granularity. */
  private readonly mapEnd: number;

  constructor(
    readonly fd: number,
    readonly fdOffset: number,
    readonly size: number,
    readonly mapGranularity: number,
    opts: WindowOptions = {},
  ) {
    const windowSize = opts.windowSize ?? Math.min(GiB, MAX_MAPPING_LENGTH);
    this.guarded = opts.guarded ?? false;
    if (fdOffset % mapGranularity !== 0) throw new Error(`offset 0x${fdOffset.toString(16)} is not a multiple of ${mapGranularity}`);
    this.windowSize = Math.max(mapGranularity, windowSize - (windowSize % mapGranularity));
    const end = fdOffset + size;
    this.mapEnd = end + ((mapGranularity - (end % mapGranularity)) % mapGranularity);
  }

  read(offset: number, dst: Uint8Array, dstOffset: number, count: number): void {
    while (count > 0) {
      const w = this.window(offset);
      const at = offset % this.windowSize;
      const n = Math.min(count, w.length - at);
      if (this.guarded) {
        const err = native.copyMemory(dst, dstOffset, w, at, n);
        if (err !== 0) throw mappingFault(err, offset, n, 'read');
      } else if (n <= 16) {
        // register-sized accesses are copied by hand: a subarray view would be garbage
        for (let i = 0; i < n; i++) dst[dstOffset + i] = w[at + i]!;
      } else dst.set(w.subarray(at, at + n), dstOffset);
      offset += n;
      dstOffset += n;
      count -= n;
    }
  }

  write(offset: number, src: Uint8Array, srcOffset: number, count: number): void {
    while (count > 0) {
      const w = this.window(offset);
      const at = offset % this.windowSize;
      const n = Math.min(count, w.length - at);
      if (this.guarded) {
        const err = native.copyMemory(w, at, src, srcOffset, n);
        if (err !== 0) throw mappingFault(err, offset, n, 'write');
      } else if (n <= 16) {
        for (let i = 0; i < n; i++) w[at + i] = src[srcOffset + i]!;
      } else w.set(src.subarray(srcOffset, srcOffset + n), at);
      offset += n;
      srcOffset += n;
      count -= n;
    }
  }

  /**
   * Zeroes [offset, offset + length) through the kept windows: the scrub of
   * memory that is not hole-punched. The first pass over a window faults its
   * pages in with one MADV_POPULATE_WRITE (on 4 KiB pages a fault per page
   * costs several times the zeroing); after that the window's page tables
   * stay in place, so the scrub after every later tenant runs at memory speed
   * instead of paying for a mapping each time (bench/NOTES.md).
   */
  zero(offset: number, length: number): void {
    while (length > 0) {
      const index = Math.floor(offset / this.windowSize);
      const w = this.window(offset);
      const at = offset % this.windowSize;
      const n = Math.min(length, w.length - at);
      const faulted = this.faultedTo[index] ?? 0;
      if (at + n > faulted) {
        const g = this.mapGranularity;
        const from = Math.max(faulted, at - (at % g));
        const to = Math.min(w.length, at + n + ((g - ((at + n) % g)) % g));
        try {
          native.populate(w.buffer as ArrayBuffer, from, to - from, true);
        } catch (err) {
          // before Linux 5.14 (EINVAL) the memset below faults the pages in itself; any
          // other failure (a page that cannot be had) is an error here, not a SIGBUS there
          if (!isSyscallError(err, 'EINVAL')) throw err;
        }
        if (from <= faulted) this.faultedTo[index] = to;
      }
      const err = native.fillMemory(w, at, n, 0);
      if (err !== 0) throw mappingFault(err, offset, n, 'zeroing');
      offset += n;
      length -= n;
    }
  }

  /**
   * Forgets which windows were faulted in: after their file was truncated and
   * grown back the pages are new, so the next zero() populates them again
   * instead of faulting them in one by one.
   */
  forgetPopulated(): void {
    this.faultedTo.length = 0;
  }

  /** How many windows are mapped now. */
  get mappedWindows(): number {
    return this.buffers.length;
  }

  /** Unmaps every window; the memory must not be used afterwards. */
  close(): void {
    for (const b of this.buffers) native.munmap(b);
    this.buffers.length = 0;
    this.windows.length = 0;
    this.faultedTo.length = 0;
  }

  private window(offset: number): Uint8Array {
    const index = Math.floor(offset / this.windowSize);
    const existing = this.windows[index];
    if (existing) return existing;
    const start = this.fdOffset + index * this.windowSize;
    const length = Math.min(this.windowSize, this.mapEnd - start);
    const buffer = native.mmap(this.fd, length, native.PROT_READ | native.PROT_WRITE, native.MAP_SHARED, start);
    this.buffers.push(buffer);
    const bytes = new Uint8Array(buffer);
    this.windows[index] = bytes;
    return bytes;
  }
}

/**
 * Maps [start, end) of an fd window by window (each a multiple of
 * `granularity`), hands each mapping to `fn` with its fd offset, and unmaps it.
 */
export function forEachWindow(
  fd: number,
  start: number,
  end: number,
  granularity: number,
  fn: (map: ArrayBuffer, fdOffset: number) => void,
  windowSize = Math.min(GiB, MAX_MAPPING_LENGTH),
): void {
  const step = Math.max(granularity, windowSize - (windowSize % granularity));
  for (let at = start; at < end; at += step) {
    const map = native.mmap(fd, Math.min(step, end - at), native.PROT_READ | native.PROT_WRITE, native.MAP_SHARED, at);
    try {
      fn(map, at);
    } finally {
      native.munmap(map);
    }
  }
}
