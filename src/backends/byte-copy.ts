/** Copies up to this many bytes one by one; more go through TypedArray#set. */
const SMALL_COPY = 32;

/**
 * Copies `count` bytes between two distinct memories. Register-sized copies, the
 * trapped path's usual case, go byte by byte because `subarray()` (and
 * Buffer#copy from a non-zero offset) would allocate a view on every access.
 */
export function copyBytes(src: Uint8Array, srcOffset: number, dst: Uint8Array, dstOffset: number, count: number): void {
  if (count <= SMALL_COPY) {
    for (let i = 0; i < count; i++) dst[dstOffset + i] = src[srcOffset + i]!;
    return;
  }
  dst.set(src.subarray(srcOffset, srcOffset + count), dstOffset);
}
