import { native } from '../native/native.js';

/** Buffers up to this size come from the JS heap's allocator and are kept for reuse. */
const SMALL = 64 * 1024;

/**
 * Buffers for connections that come and go by the thousand. The daemon
 * serves one client at a time while hostile ones may connect at a high rate:
 * a fresh receive buffer and reply chunks per connection would lie about as
 * garbage until V8's next full collection, and the allocator keeps the heap
 * pages they lived in, so resident memory would ratchet up with the
 * connection rate and never come back.
 *
 * So small buffers (the 64 KiB receive buffer and reply chunks) are kept and
 * handed to the next connection, at most `maxSmall` of them; larger ones (a
 * receive buffer grown for a large message, a large reply that had to wait)
 * are anonymous mappings of their own, unmapped the moment they are given
 * back, so their memory returns to the system at once.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];
  private readonly mapped = new WeakSet<ArrayBufferLike>();

  constructor(private readonly maxSmall = 16) {}

  /** Small buffers held for reuse. */
  get kept(): number {
    return this.free.length;
  }

  /** A buffer of at least `size` bytes (its contents are garbage). */
  take(size: number): Buffer {
    if (size <= SMALL) return this.free.pop() ?? Buffer.allocUnsafeSlow(SMALL);
    const ab = native.mmap(-1, sizeClass(size), native.PROT_READ | native.PROT_WRITE, native.MAP_PRIVATE | native.MAP_ANONYMOUS, 0);
    this.mapped.add(ab);
    return Buffer.from(ab);
  }

  /** Hands `buf` (from take) back; the caller must not touch it again. */
  give(buf: Buffer): void {
    if (this.mapped.has(buf.buffer)) {
      this.mapped.delete(buf.buffer);
      native.munmap(buf.buffer as ArrayBuffer);
    } else if (buf.length === SMALL && this.free.length < this.maxSmall) {
      this.free.push(buf);
    }
  }
}

/** The power of two at or above `size` (at least 4 KiB). */
export function sizeClass(size: number): number {
  let c = 4096;
  while (c < size) c *= 2;
  return c;
}
