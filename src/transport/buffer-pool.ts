/**
 * Buffers passed from one connection to the next. The daemon serves one
 * client at a time while hostile ones may come and go by the thousand: a
 * fresh receive buffer and reply chunks per connection would lie about as
 * garbage until V8's next full collection, and the allocator keeps the heap
 * pages they lived in, so resident memory would ratchet up with the
 * connection rate and never come back. Reused, they cost the same few
 * megabytes for the daemon's whole life.
 *
 * Sizes are rounded up to a power of two so that a buffer given back fits
 * the next request of its class; at most `maxBytes` are kept.
 */
export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private keptBytes = 0;

  constructor(private readonly maxBytes: number) {}

  /** Bytes held for reuse. */
  get kept(): number {
    return this.keptBytes;
  }

  /** A buffer of at least `size` bytes (its contents are garbage). */
  take(size: number): Buffer {
    const cls = sizeClass(size);
    const b = this.free.get(cls)?.pop();
    if (b) {
      this.keptBytes -= b.length;
      return b;
    }
    return Buffer.allocUnsafeSlow(cls);
  }

  /** Hands `buf` back for reuse; the caller must not touch it again. */
  give(buf: Buffer): void {
    const cls = buf.length;
    if (cls !== sizeClass(cls) || this.keptBytes + cls > this.maxBytes) return;
    let list = this.free.get(cls);
    if (!list) this.free.set(cls, (list = []));
    list.push(buf);
    this.keptBytes += cls;
  }
}

/** The power of two at or above `size` (at least 4 KiB). */
export function sizeClass(size: number): number {
  let c = 4096;
  while (c < size) c *= 2;
  return c;
}
