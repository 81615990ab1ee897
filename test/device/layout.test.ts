import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isPowerOfTwo } from '../../src/common/arith.js';
import {
  deviceIdMismatch,
  GH_MIN_MEMORY,
  LAYOUTS,
  LayoutError,
  planLayout,
  type MemoryLayout,
} from '../../src/device/layout.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

function bar(l: MemoryLayout, index: number) {
  const b = l.bars.find((x) => x.bar === index);
  if (!b) throw new Error(`no BAR${index} in ${l.name}`);
  return b;
}

describe('planLayout', () => {
  it('bar2: all memory at BAR2, rounded up to a power of two', () => {
    const l = planLayout('bar2', 96 * MiB);
    expect(l.bars).toEqual([{ bar: 2, role: 'aperture', offset: 0, length: 96 * MiB, barSize: 128 * MiB, caching: 'cacheable' }]);
    expect(planLayout('bar2', 100).bars[0]!.barSize).toBe(4096);
  });

  it('gb: all memory at BAR4, nothing at BAR2', () => {
    const l = planLayout('gb', 189 * GiB + 3 * MiB);
    expect(l.bars).toEqual([{ bar: 4, role: 'usemem', offset: 0, length: 189 * GiB + 3 * MiB, barSize: 256 * GiB, caching: 'cacheable' }]);
  });

  it('gh: usemem is (memory - 1 GiB) rounded down to 512 MiB at BAR4, the rest after it at BAR2', () => {
    // 2.75 GiB: usemem 1.5 GiB, resmem 1.25 GiB, both BARs 2 GiB
    const l = planLayout('gh', 2816 * MiB);
    expect(bar(l, 4)).toEqual({ bar: 4, role: 'usemem', offset: 0, length: 1536 * MiB, barSize: 2 * GiB, caching: 'cacheable' });
    expect(bar(l, 2)).toEqual({ bar: 2, role: 'resmem', offset: 1536 * MiB, length: 1280 * MiB, barSize: 2 * GiB, caching: 'write-combine' });
    // in BAR order
    expect(l.bars.map((b) => b.bar)).toEqual([2, 4]);
  });

  it('gh: a GH200-like memory that is not a multiple of 512 MiB', () => {
    const mem = 95 * GiB + 800 * MiB + 4096; // not even a whole number of MiB
    const l = planLayout('gh', mem);
    expect(bar(l, 4).length).toBe(94.5 * GiB);
    expect(bar(l, 4).barSize).toBe(128 * GiB);
    expect(bar(l, 2).offset).toBe(94.5 * GiB);
    expect(bar(l, 2).length).toBe(mem - 94.5 * GiB);
    expect(bar(l, 2).barSize).toBe(2 * GiB);
  });

  it('gh: the usemem BAR is sized before the rounding, as the kernel does', () => {
    // memory - 1 GiB = 2 GiB + 256 MiB -> BAR 4 GiB, though usemem rounds down to 2 GiB
    const l = planLayout('gh', 3 * GiB + 256 * MiB);
    expect(bar(l, 4).length).toBe(2 * GiB);
    expect(bar(l, 4).barSize).toBe(4 * GiB);
    expect(bar(l, 2).length).toBe(1280 * MiB);
  });

  it('gh: the smallest memory is 1.5 GiB; less is refused with one line', () => {
    const l = planLayout('gh', GH_MIN_MEMORY);
    expect(bar(l, 4).length).toBe(512 * MiB);
    expect(bar(l, 2).length).toBe(GiB);
    for (const small of [GH_MIN_MEMORY - 1, GiB, 96 * MiB]) {
      expect(() => planLayout('gh', small)).toThrow(LayoutError);
    }
    expect(() => planLayout('gh', GiB)).toThrow(/^layout gh needs at least 1\.5 GiB of memory .*not 1 GiB$/);
  });

  it('refuses a size that is not a positive whole number', () => {
    for (const bad of [0, -1, 1.5, Number.NaN]) expect(() => planLayout('bar2', bad)).toThrow(LayoutError);
  });

  it('gh: for any memory the parts tile it, usemem is whole 512 MiB blocks, resmem is 1 to 1.5 GiB', () => {
    fc.assert(
      fc.property(fc.integer({ min: GH_MIN_MEMORY, max: 2 ** 42 }), (mem) => {
        const l = planLayout('gh', mem);
        const use = bar(l, 4);
        const res = bar(l, 2);
        expect(use.offset).toBe(0);
        expect(res.offset).toBe(use.length);
        expect(use.length + res.length).toBe(mem);
        expect(use.length % (512 * MiB)).toBe(0);
        expect(use.length).toBeGreaterThan(0);
        expect(res.length).toBeGreaterThanOrEqual(GiB);
        expect(res.length).toBeLessThan(GiB + 512 * MiB);
        for (const b of l.bars) {
          expect(isPowerOfTwo(b.barSize)).toBe(true);
          expect(b.barSize).toBeGreaterThanOrEqual(b.length);
          expect(b.barSize).toBeLessThan(2 * Math.max(b.length, mem - GiB));
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('layout device IDs', () => {
  it('defaults to a Hopper ID for bar2 and gh and a Blackwell ID for gb', () => {
    expect(LAYOUTS.bar2.defaultDeviceId).toBe(0x2342);
    expect(LAYOUTS.gh.defaultDeviceId).toBe(0x2342);
    expect(LAYOUTS.gb.defaultDeviceId).toBe(0x2941);
    expect(LAYOUTS.gh.deviceIds).toEqual([0x2342, 0x2345, 0x2348]);
    expect(LAYOUTS.gb.deviceIds).toEqual([0x2941, 0x31c2]);
  });

  it('flags a known ID of the other family, and nothing else', () => {
    expect(deviceIdMismatch('gb', 0x2345)).toBe(true);
    expect(deviceIdMismatch('gh', 0x31c2)).toBe(true);
    expect(deviceIdMismatch('bar2', 0x2941)).toBe(true);
    expect(deviceIdMismatch('gb', 0x31c2)).toBe(false);
    expect(deviceIdMismatch('gh', 0x2348)).toBe(false);
    expect(deviceIdMismatch('gh', 0x1234)).toBe(false);
  });
});
