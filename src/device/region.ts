import type { SparseArea } from '../wire/messages.js';

/** How the client may map part of a region: which fd, at which file offset, which areas. */
export interface RegionMmap {
  fd: number;
  /** File offset of region offset 0; sparse area offsets are added to it. */
  fdOffset: number;
  areas: SparseArea[];
}

/**
 * A device region as the protocol sees it. Accesses arrive bounds-checked
 * against `size`; an implementation may throw an Error with an `errno`.
 */
export interface Region {
  readonly index: number;
  readonly size: number;
  readonly readable: boolean;
  readonly writable: boolean;
  readonly mmap: RegionMmap | null;
  read(offset: number, dst: Uint8Array, dstOffset: number, count: number): void;
  write(offset: number, src: Uint8Array, srcOffset: number, count: number): void;
}

/** The parts of `areas` left after removing [cutStart, cutEnd); callers align the cut. */
export function subtractArea(areas: readonly SparseArea[], cutStart: number, cutEnd: number): SparseArea[] {
  const out: SparseArea[] = [];
  for (const a of areas) {
    const end = a.offset + a.size;
    if (cutEnd <= a.offset || cutStart >= end) {
      out.push(a);
      continue;
    }
    if (cutStart > a.offset) out.push({ offset: a.offset, size: cutStart - a.offset });
    if (cutEnd < end) out.push({ offset: cutEnd, size: end - cutEnd });
  }
  return out;
}
