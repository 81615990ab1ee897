import { RegionIndex } from '../wire/constants.js';
import { nextPowerOfTwo } from '../common/arith.js';

/**
 * Where the coherent memory sits among the BARs.
 * - `bar2`: the whole memory at BAR2/3 (the original design, the kernel patch series v1-v10).
 * - `gh`: Grace Hopper as the mainline kernel (6.8+) shows it, which NVIDIA's stock guest
 *   driver expects: usable memory ("usemem") at BAR4/5, the reserved rest ("resmem") at BAR2/3.
 * - `gb`: Grace Blackwell (6.14+): all memory is usemem at BAR4/5; BAR2/3 belongs to the
 *   physical device (its BAR1) and is absent here.
 */
export type LayoutName = 'bar2' | 'gh' | 'gb';
export const LAYOUT_NAMES: readonly LayoutName[] = ['bar2', 'gh', 'gb'];

/** What a memory BAR holds: all of the memory, or one of the mainline driver's two parts. */
export type MemoryRole = 'aperture' | 'usemem' | 'resmem';

export interface MemoryBarLayout {
  /** BAR slot; a 64-bit BAR also takes the next slot. */
  bar: number;
  role: MemoryRole;
  /** Where this BAR's memory starts within the coherent memory (and so within the backing, after the base). */
  offset: number;
  /** Bytes of memory behind the BAR; the rest of the BAR is ~0 padding. */
  length: number;
  /** BAR size: a power of two. */
  barSize: number;
  /**
   * How the kernel driver maps this part on a real host. The daemon can only hand out
   * what its backing gives; the field says what a faithful backing should be.
   */
  caching: 'cacheable' | 'write-combine';
}

export interface MemoryLayout {
  name: LayoutName;
  /** Bytes of coherent memory the layout splits. */
  memorySize: number;
  /** The memory BARs, in BAR order. */
  bars: MemoryBarLayout[];
}

export interface LayoutInfo {
  summary: string;
  /** Device ID used when none is given. */
  defaultDeviceId: number;
  /** IDs of real parts of the matching GPU family (vendor 0x10de), as the kernel driver lists them. */
  deviceIds: readonly number[];
}

const HOPPER_IDS = [0x2342, 0x2345, 0x2348] as const;
const BLACKWELL_IDS = [0x2941, 0x31c2] as const;

export const LAYOUTS: Readonly<Record<LayoutName, LayoutInfo>> = {
  bar2: { summary: 'all memory at BAR2/3', defaultDeviceId: 0x2342, deviceIds: HOPPER_IDS },
  gh: { summary: 'Grace Hopper: usemem at BAR4/5, resmem at BAR2/3', defaultDeviceId: 0x2342, deviceIds: HOPPER_IDS },
  gb: { summary: 'Grace Blackwell: all memory at BAR4/5, no BAR2/3', defaultDeviceId: 0x2941, deviceIds: BLACKWELL_IDS },
};

const MiB = 2 ** 20;
const GiB = 2 ** 30;
/** Hopper reserves 1 GiB (plus the rounding below) for the guest driver's MIG workaround. */
export const GH_RESERVED = GiB;
/** usemem is added to the guest kernel in blocks of this size: a fixed firmware/driver ABI value. */
export const GH_BLOCK = 512 * MiB;
/** The smallest memory the gh layout accepts: the reserve plus one block of usemem. */
export const GH_MIN_MEMORY = GH_RESERVED + GH_BLOCK;

export class LayoutError extends Error {}

export function isLayoutName(name: string): name is LayoutName {
  return (LAYOUT_NAMES as readonly string[]).includes(name);
}

/** Memory BAR size: the length rounded up to a power of two, a page at least. */
export function memoryBarSize(length: number): number {
  return Math.max(4096, nextPowerOfTwo(length));
}

/** Splits `memorySize` bytes of coherent memory into the BARs of layout `name`, as the kernel driver does. */
export function planLayout(name: LayoutName, memorySize: number): MemoryLayout {
  if (!Number.isSafeInteger(memorySize) || memorySize <= 0) {
    throw new LayoutError(`memory size ${memorySize} must be a positive number of bytes`);
  }
  switch (name) {
    case 'bar2':
      return {
        name,
        memorySize,
        bars: [{ bar: RegionIndex.BAR2, role: 'aperture', offset: 0, length: memorySize, barSize: memoryBarSize(memorySize), caching: 'cacheable' }],
      };
    case 'gb':
      return {
        name,
        memorySize,
        bars: [{ bar: RegionIndex.BAR4, role: 'usemem', offset: 0, length: memorySize, barSize: memoryBarSize(memorySize), caching: 'cacheable' }],
      };
    case 'gh': {
      if (memorySize < GH_MIN_MEMORY) {
        throw new LayoutError(
          `layout gh needs at least 1.5 GiB of memory (1 GiB reserved plus one 512 MiB block of usable memory), ` +
            `not ${describeBytes(memorySize)}`,
        );
      }
      // The kernel sizes the usemem BAR before rounding usemem down to whole blocks, so
      // the BAR can be twice what the rounded length needs; kept as the kernel has it.
      const beforeRounding = memorySize - GH_RESERVED;
      const usemem = beforeRounding - (beforeRounding % GH_BLOCK);
      const resmem = memorySize - usemem;
      return {
        name,
        memorySize,
        bars: [
          { bar: RegionIndex.BAR2, role: 'resmem', offset: usemem, length: resmem, barSize: memoryBarSize(resmem), caching: 'write-combine' },
          { bar: RegionIndex.BAR4, role: 'usemem', offset: 0, length: usemem, barSize: memoryBarSize(beforeRounding), caching: 'cacheable' },
        ],
      };
    }
  }
}

/** True when `deviceId` is a known part of another family than the layout's (a guest driver would be misled). */
export function deviceIdMismatch(name: LayoutName, deviceId: number): boolean {
  const other = name === 'gb' ? HOPPER_IDS : BLACKWELL_IDS;
  return (other as readonly number[]).includes(deviceId);
}

function describeBytes(n: number): string {
  if (n % GiB === 0) return `${n / GiB} GiB`;
  if (n % MiB === 0) return `${n / MiB} MiB`;
  return `${n} bytes`;
}
