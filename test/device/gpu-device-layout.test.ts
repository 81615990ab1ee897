import { describe, expect, it } from 'vitest';
import type { GpuDevice } from '../../src/device/gpu-device.js';
import type { LayoutName } from '../../src/device/layout.js';
import { RegionIndex } from '../../src/wire/constants.js';
import { FakeMemory, makeDevice } from './fakes.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const PAGE = 4096;

describe('GpuDevice layouts', () => {
  function device(layout: LayoutName | undefined, memory: FakeMemory): GpuDevice {
    return makeDevice({ aperture: memory, ...(layout ? { layout } : {}) }).device;
  }

  const cfg = (d: GpuDevice, off: number) => d.config.read32(off);
  function cfgWrite(d: GpuDevice, off: number, value: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(value >>> 0);
    d.config.write(off, b, 0, 4);
  }
  /** Writes all ones to both dwords of a 64-bit BAR and reads back the size mask. */
  function probe(d: GpuDevice, bar: number): bigint {
    const at = 0x10 + 4 * bar;
    cfgWrite(d, at, 0xffffffff);
    cfgWrite(d, at + 4, 0xffffffff);
    return (BigInt(cfg(d, at + 4)) << 32n) | BigInt(cfg(d, at));
  }
  const sizeOf = (mask: bigint) => Number(((~(mask & ~0xfn)) & 0xffff_ffff_ffff_ffffn) + 1n);

  it('bar2 (the default): BAR0 and BAR2; BAR4 reads 0', () => {
    const d = device(undefined, new FakeMemory(96 * MiB));
    expect(d.layout.name).toBe('bar2');
    expect(d.region(RegionIndex.BAR2)?.size).toBe(128 * MiB);
    expect(d.region(RegionIndex.BAR4)).toBeNull();
    expect(d.aperture.index).toBe(RegionIndex.BAR2);
    expect(probe(d, 2) & 0xfn).toBe(0xcn);
    expect(sizeOf(probe(d, 2))).toBe(128 * MiB);
    expect(probe(d, 4)).toBe(0n);
  });

  it('gh: BAR2 (resmem) and BAR4 (usemem) registers size and keep a base like hardware', () => {
    const d = device('gh', new FakeMemory(2816 * MiB));
    for (const [bar, size] of [[2, 2 * GiB], [4, 2 * GiB]] as const) {
      const at = 0x10 + 4 * bar;
      expect(cfg(d, at)).toBe(0xc); // 64-bit, prefetchable, base 0
      expect(cfg(d, at + 4)).toBe(0);
      const mask = probe(d, bar);
      expect(mask & 0xfn).toBe(0xcn);
      expect(sizeOf(mask)).toBe(size);
      // a base the OS programs is kept, with the bits below the size cleared
      cfgWrite(d, at, 0x8000_0000 | 0x1234);
      cfgWrite(d, at + 4, 0x1);
      expect(cfg(d, at)).toBe((0x8000_0000 | 0xc) >>> 0);
      expect(cfg(d, at + 4)).toBe(1);
    }
    // BAR0 is untouched by the layout: 16 MiB, 64-bit, not prefetchable
    expect(probe(d, 0) & 0xfn).toBe(0x4n);
    expect(sizeOf(probe(d, 0))).toBe(16 * MiB);
    // a reset zeroes the stored bases
    d.reset();
    expect(cfg(d, 0x18)).toBe(0xc);
    expect(cfg(d, 0x20)).toBe(0xc);
    expect(cfg(d, 0x24)).toBe(0);
  });

  it('gh: a 4 GiB usemem BAR (beyond 32 bits) sizes through the high dword', () => {
    const d = device('gh', new FakeMemory(3 * GiB + 256 * MiB));
    const mask = probe(d, 4);
    expect(Number(mask & 0xffffffffn)).toBe(0xc);
    expect(Number(mask >> 32n)).toBe(0xffffffff);
    expect(sizeOf(mask)).toBe(4 * GiB);
  });

  it('gb: BAR4 holds all memory; BAR2/3 read 0 and ignore writes', () => {
    const d = device('gb', new FakeMemory(160 * MiB));
    expect(d.region(RegionIndex.BAR2)).toBeNull();
    expect(d.region(RegionIndex.BAR4)?.size).toBe(256 * MiB);
    expect(sizeOf(probe(d, 4))).toBe(256 * MiB);
    expect(probe(d, 2)).toBe(0n);
    expect(cfg(d, 0x18)).toBe(0);
    expect(cfg(d, 0x1c)).toBe(0);
  });

  it('absent BARs (1, 3, 5 as halves aside) read 0 in every layout', () => {
    for (const [layout, absent] of [['bar2', [4]], ['gh', []], ['gb', [2]]] as const) {
      const d = device(layout, new FakeMemory(2 * GiB));
      for (const bar of absent) {
        expect(cfg(d, 0x10 + 4 * bar)).toBe(0);
        expect(d.region(bar)).toBeNull();
      }
      expect(cfg(d, 0x30)).toBe(0); // no expansion ROM either
      expect(d.region(RegionIndex.ROM)).toBeNull();
    }
  });

  it('gh: each memory BAR reads and writes its own part of the aperture; each padding reads ~0 and drops writes', () => {
    const mem = new FakeMemory(2816 * MiB);
    const d = device('gh', mem);
    const use = d.region(RegionIndex.BAR4)!;
    const res = d.region(RegionIndex.BAR2)!;
    const useLen = 1536 * MiB;
    mem.poke(0x1000, [0xaa]);
    mem.poke(useLen + 0x1000, [0xbb]);
    const one = new Uint8Array(1);
    use.read(0x1000, one, 0, 1);
    expect(one[0]).toBe(0xaa);
    res.read(0x1000, one, 0, 1);
    expect(one[0]).toBe(0xbb);
    // a write through BAR2 lands after usemem in the aperture
    res.write(0x20, Uint8Array.of(1, 2, 3, 4), 0, 4);
    expect(mem.peek(useLen + 0x20, 4)).toEqual([1, 2, 3, 4]);
    // the last byte of usemem and the first of the usemem padding
    mem.poke(useLen - 1, [0x5c]);
    const edge = new Uint8Array(2);
    use.read(useLen - 1, edge, 0, 2);
    expect([...edge]).toEqual([0x5c, 0xff]);
    // resmem padding: reads ~0, a write reaches no memory
    const pad = new Uint8Array(8);
    res.read(1280 * MiB + 8, pad, 0, 8);
    expect([...pad]).toEqual(new Array(8).fill(0xff));
    const before = mem.writes.length;
    res.write(1280 * MiB + 8, Uint8Array.of(9, 9, 9, 9), 0, 4);
    use.write(2 * GiB - 4, Uint8Array.of(9, 9, 9, 9), 0, 4);
    expect(mem.writes.length).toBe(before);
    expect(d.memoryBars.map((b) => b.padding.droppedWrites)).toEqual([1, 1]);
  });

  it('gh: each BAR maps its part straight from the aperture fd', () => {
    const d = device('gh', new FakeMemory(2816 * MiB + 1000, 1000, 64 * PAGE));
    expect(d.region(RegionIndex.BAR4)!.mmap).toEqual({ fd: 1000, fdOffset: 64 * PAGE, areas: [{ offset: 0, size: 1536 * MiB }] });
    // resmem ends in a partial page: only whole pages are mapped, the rest is trapped
    expect(d.region(RegionIndex.BAR2)!.mmap).toEqual({
      fd: 1000,
      fdOffset: 64 * PAGE + 1536 * MiB,
      areas: [{ offset: 0, size: 1280 * MiB }],
    });
  });

  it('describes the layout for reports', () => {
    const d = device('gh', new FakeMemory(2816 * MiB));
    expect(d.layout).toEqual({
      name: 'gh',
      summary: expect.stringContaining('Grace Hopper'),
      memorySize: 2816 * MiB,
      bars: [
        { bar: 0, holds: 'registers', size: 16 * MiB, prefetchable: false },
        { bar: 2, holds: 'resmem', size: 2 * GiB, prefetchable: true, memory: { offset: 1536 * MiB, length: 1280 * MiB, caching: 'write-combine' } },
        { bar: 4, holds: 'usemem', size: 2 * GiB, prefetchable: true, memory: { offset: 0, length: 1536 * MiB, caching: 'cacheable' } },
      ],
    });
    expect(d.aperture.index).toBe(RegionIndex.BAR4);
  });

  it('refuses a gh memory too small to split', () => {
    expect(() => device('gh', new FakeMemory(GiB))).toThrow(/layout gh needs at least 1\.5 GiB/);
  });
});
