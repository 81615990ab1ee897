import type { MemoryBacking } from '../device/memory-bar.js';
import { native } from '../native/native.js';
import { copyBytes } from './byte-copy.js';

interface Window {
  start: number;
  end: number;
  buffer: ArrayBuffer;
  bytes: Uint8Array;
  used: number;
}

/** Bytes mapped per window: a huge page, so a window is one TLB entry where THP applies. */
export const DEFAULT_WINDOW = 2 * 1024 * 1024;
/** Windows kept mapped; the least recently used one goes first. */
export const DEFAULT_MAX_WINDOWS = 8;

/**
 * Memory too large to map whole (an aperture of up to terabytes, where an
 * ArrayBuffer holds at most 4 GiB), reached through a few windows mapped on
 * demand. A trapped access then costs a memory copy instead of a pread/pwrite
 * syscall. Only for fds nobody can shrink (a sealed memfd): touching a mapping
 * past the end of a truncated file is a SIGBUS.
 */
export class WindowedMemory implements MemoryBacking {
  private readonly windows: Window[] = [];
  private last: Window | null = null;
  private clock = 0;

  constructor(
    readonly fd: number,
    readonly fdOffset: number,
    readonly size: number,
    private readonly windowSize = DEFAULT_WINDOW,
    private readonly maxWindows = DEFAULT_MAX_WINDOWS,
  ) {}

  /** Windows currently mapped. */
  get mappedWindows(): number {
    return this.windows.length;
  }

  read(offset: number, dst: Uint8Array, dstOffset: number, count: number): void {
    while (count > 0) {
      const w = this.window(offset);
      const n = Math.min(count, w.end - offset);
      copyBytes(w.bytes, offset - w.start, dst, dstOffset, n);
      offset += n;
      dstOffset += n;
      count -= n;
    }
  }

  write(offset: number, src: Uint8Array, srcOffset: number, count: number): void {
    while (count > 0) {
      const w = this.window(offset);
      const n = Math.min(count, w.end - offset);
      copyBytes(src, srcOffset, w.bytes, offset - w.start, n);
      offset += n;
      srcOffset += n;
      count -= n;
    }
  }

  /** Unmaps every window; later accesses map again. */
  unmapAll(): void {
    for (const w of this.windows.splice(0)) native.munmap(w.buffer);
    this.last = null;
  }

  private window(offset: number): Window {
    const last = this.last;
    if (last !== null && offset >= last.start && offset < last.end) return last;
    for (const w of this.windows) {
      if (offset >= w.start && offset < w.end) {
        w.used = ++this.clock;
        this.last = w;
        return w;
      }
    }
    return this.map(offset);
  }

  private map(offset: number): Window {
    if (this.windows.length >= this.maxWindows) this.evict();
    const start = offset - (offset % this.windowSize);
    const end = Math.min(start + this.windowSize, this.size);
    const buffer = native.mmap(this.fd, end - start, native.PROT_READ | native.PROT_WRITE, native.MAP_SHARED, this.fdOffset + start);
    const w: Window = { start, end, buffer, bytes: new Uint8Array(buffer), used: ++this.clock };
    this.windows.push(w);
    this.last = w;
    return w;
  }

  private evict(): void {
    let oldest = 0;
    for (let i = 1; i < this.windows.length; i++) if (this.windows[i]!.used < this.windows[oldest]!.used) oldest = i;
    const [w] = this.windows.splice(oldest, 1);
    if (this.last === w) this.last = null;
    native.munmap(w!.buffer);
  }
}
