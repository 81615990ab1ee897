import type { MemoryBacking } from '../device/memory-bar.js';
import { native } from '../native/native.js';

/**
 * Device registers reached through the daemon's mapping of a BAR (a sysfs
 * `resource0`). Registers answer by access width (a 32-bit register read byte
 * by byte is four different reads, or none at all), so an aligned access of 1,
 * 2, 4 or 8 bytes is made as one load or store of that width, through a typed
 * array of that element size (a DataView would move single bytes); anything
 * else goes byte by byte.
 */
export class MmioMemory implements MemoryBacking {
  private readonly buffer: ArrayBuffer;
  private readonly u8: Uint8Array;
  private readonly u16: Uint16Array;
  private readonly u32: Uint32Array;
  private readonly u64: BigUint64Array;

  constructor(
    readonly fd: number,
    readonly fdOffset: number,
    readonly size: number,
  ) {
    this.buffer = native.mmap(fd, size, native.PROT_READ | native.PROT_WRITE, native.MAP_SHARED, fdOffset);
    this.u8 = new Uint8Array(this.buffer);
    this.u16 = new Uint16Array(this.buffer, 0, size >>> 1);
    this.u32 = new Uint32Array(this.buffer, 0, size >>> 2);
    this.u64 = new BigUint64Array(this.buffer, 0, Math.floor(size / 8));
  }

  read(offset: number, dst: Uint8Array, dstOffset: number, count: number): void {
    if (offset % count === 0) {
      if (count === 4) return put(dst, dstOffset, this.u32[offset >>> 2]!, 4);
      if (count === 2) return put(dst, dstOffset, this.u16[offset >>> 1]!, 2);
      if (count === 1) {
        dst[dstOffset] = this.u8[offset]!;
        return;
      }
      if (count === 8) {
        const x = this.u64[offset / 8]!;
        put(dst, dstOffset, Number(x & 0xffffffffn), 4);
        put(dst, dstOffset + 4, Number(x >> 32n), 4);
        return;
      }
    }
    for (let i = 0; i < count; i++) dst[dstOffset + i] = this.u8[offset + i]!;
  }

  write(offset: number, src: Uint8Array, srcOffset: number, count: number): void {
    if (offset % count === 0) {
      if (count === 4) {
        this.u32[offset >>> 2] = get(src, srcOffset, 4);
        return;
      }
      if (count === 2) {
        this.u16[offset >>> 1] = get(src, srcOffset, 2);
        return;
      }
      if (count === 1) {
        this.u8[offset] = src[srcOffset]!;
        return;
      }
      if (count === 8) {
        this.u64[offset / 8] = BigInt(get(src, srcOffset, 4)) | (BigInt(get(src, srcOffset + 4, 4)) << 32n);
        return;
      }
    }
    for (let i = 0; i < count; i++) this.u8[offset + i] = src[srcOffset + i]!;
  }

  unmap(): void {
    native.munmap(this.buffer);
  }
}

function put(dst: Uint8Array, at: number, value: number, width: number): void {
  for (let i = 0; i < width; i++) dst[at + i] = (value >>> (8 * i)) & 0xff;
}

function get(src: Uint8Array, at: number, width: number): number {
  let v = 0;
  for (let i = width - 1; i >= 0; i--) v = (v * 256 + src[at + i]!) >>> 0;
  return v;
}
