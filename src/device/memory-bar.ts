import type { Region, RegionMmap } from './region.js';
import { alignDown, alignUp } from '../common/arith.js';
import { subtractArea } from './region.js';

/** Memory behind a BAR: the coherent GPU memory, or any file-like backing. */
export interface MemoryBacking {
  /** Bytes of real memory; may be less than the BAR. */
  readonly size: number;
  /** fd the client maps, and the file offset of memory byte 0. */
  readonly fd: number;
  readonly fdOffset: number;
  /**
   * Granularity the client must map in, when coarser than the system page:
   * the huge page size, or a device-dax alignment. The sparse-mmap area and
   * its fd offset are aligned to it so the client can map with large pages.
   */
  readonly mapGranularity?: number;
  read(offset: number, dst: Uint8Array, dstOffset: number, count: number): void;
  write(offset: number, src: Uint8Array, srcOffset: number, count: number): void;
}

export interface PaddingCounters {
  droppedWrites: number;
  droppedBytes: number;
}

/**
 * A memory BAR whose size is the memory size rounded up to a power of two.
 *
 * PCI BARs are powers of two but the coherent memory of a Grace Hopper GPU is
 * not, so the BAR ends in padding that has no memory behind it. As the kernel's
 * nvgrace-gpu driver does, reads there return all ones at any width and writes
 * are dropped (yet reported as done); an access that crosses the end of memory is
 * split into its real and padding parts. Only whole pages of memory are offered
 * for mmap; the rest, a partial last page included, is trapped and served here
 * from the same backing, so the mapped and trapped views agree.
 */
export class MemoryBar implements Region {
  readonly readable = true;
  readonly writable = true;
  readonly mmap: RegionMmap | null;
  readonly padding: PaddingCounters = { droppedWrites: 0, droppedBytes: 0 };

  constructor(
    readonly index: number,
    readonly size: number,
    private readonly memory: MemoryBacking,
    pageSize: number,
    /** A range kept trapped even though memory is behind it (the MSI-X table). */
    trapped?: readonly [number, number],
  ) {
    if (memory.size > size) throw new Error(`BAR${index}: memory of ${memory.size} bytes exceeds BAR of ${size}`);
    pageSize = Math.max(pageSize, memory.mapGranularity ?? 0);
    const mappable = alignDown(memory.size, pageSize);
    let areas = mappable > 0 ? [{ offset: 0, size: mappable }] : [];
    if (trapped) areas = subtractArea(areas, alignDown(trapped[0], pageSize), alignUp(trapped[1], pageSize));
    this.mmap =
      areas.length > 0 && memory.fdOffset % pageSize === 0
        ? { fd: memory.fd, fdOffset: memory.fdOffset, areas }
        : null;
  }

  read(offset: number, dst: Uint8Array, dstOffset: number, count: number): void {
    const real = this.realPart(offset, count);
    if (real > 0) this.memory.read(offset, dst, dstOffset, real);
    if (real < count) dst.fill(0xff, dstOffset + real, dstOffset + count);
  }

  write(offset: number, src: Uint8Array, srcOffset: number, count: number): void {
    const real = this.realPart(offset, count);
    if (real > 0) this.memory.write(offset, src, srcOffset, real);
    if (real < count) {
      this.padding.droppedWrites++;
      this.padding.droppedBytes += count - real;
    }
  }

  /** Bytes of [offset, offset+count) that fall inside memory. */
  private realPart(offset: number, count: number): number {
    const end = this.memory.size;
    if (offset >= end) return 0;
    return Math.min(count, end - offset);
  }
}
