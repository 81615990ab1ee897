import type { MemoryBacking } from './memory-bar.js';

/**
 * A window of another backing: the same fd, a later file offset. Lets two BARs
 * show different parts of one aperture (usemem and resmem) with no copy, and
 * the client maps each part straight from the aperture's fd.
 */
export class MemorySlice implements MemoryBacking {
  readonly fd: number;
  readonly fdOffset: number;
  readonly mapGranularity: number | undefined;

  constructor(
    private readonly parent: MemoryBacking,
    private readonly offset: number,
    readonly size: number,
  ) {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(size) || offset < 0 || size <= 0 || offset + size > parent.size) {
      throw new Error(`slice [${offset}, +${size}) is outside memory of ${parent.size} bytes`);
    }
    this.fd = parent.fd;
    this.fdOffset = parent.fdOffset + offset;
    // a huge page or device-dax backing maps in its own granularity in every slice
    this.mapGranularity = parent.mapGranularity;
  }

  read(offset: number, dst: Uint8Array, dstOffset: number, count: number): void {
    this.parent.read(this.offset + offset, dst, dstOffset, count);
  }

  write(offset: number, src: Uint8Array, srcOffset: number, count: number): void {
    this.parent.write(this.offset + offset, src, srcOffset, count);
  }
}

/** `memory` itself when the slice would be all of it, else a slice. */
export function sliceMemory(memory: MemoryBacking, offset: number, size: number): MemoryBacking {
  return offset === 0 && size === memory.size ? memory : new MemorySlice(memory, offset, size);
}
