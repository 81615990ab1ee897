import { describe, expect, it } from 'vitest';
import { isPowerOfTwo, nextPowerOfTwo } from '../../src/common/arith.js';
import { installBars, type BarSpec } from '../../src/device/bar-registers.js';
import type { DeviceConfig } from '../../src/device/config-source.js';
import { ConfigSpace } from '../../src/device/config-space.js';
import { makeDevice } from './fakes.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

function bars(specs: BarSpec[]): ConfigSpace {
  const cfg = new ConfigSpace();
  installBars(cfg, specs);
  cfg.seal();
  return cfg;
}

function w32(cfg: DeviceConfig, offset: number, value: number): void {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0);
  cfg.write(offset, b, 0, 4);
}

function w16(cfg: DeviceConfig, offset: number, value: number): void {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(value);
  cfg.write(offset, b, 0, 2);
}

function w8(cfg: DeviceConfig, offset: number, value: number): void {
  cfg.write(offset, Uint8Array.of(value), 0, 1);
}

const barAt = (index: number) => 0x10 + 4 * index;

/** The 64-bit value of a BAR pair. */
function read64(cfg: DeviceConfig, index: number): bigint {
  return (BigInt(cfg.read32(barAt(index) + 4)) << 32n) | BigInt(cfg.read32(barAt(index)));
}

/** What an OS computes from the all-ones read-back. */
function sizeFromProbe(value: bigint): bigint {
  const mask = value & ~0xfn;
  return ((~mask) & 0xffff_ffff_ffff_ffffn) + 1n;
}

const cases = [
  { name: 'BAR0, 16 MiB, non-prefetchable', spec: { index: 0, size: 16 * MiB, prefetchable: false }, type: 0x4, low: 0xff000000, high: 0xffffffff },
  { name: 'BAR2, 128 MiB, prefetchable', spec: { index: 2, size: 128 * MiB, prefetchable: true }, type: 0xc, low: 0xf8000000, high: 0xffffffff },
  { name: 'BAR2, 2 GiB, prefetchable', spec: { index: 2, size: 2 * GiB, prefetchable: true }, type: 0xc, low: 0x80000000, high: 0xffffffff },
  { name: 'BAR2, 4 GiB, prefetchable', spec: { index: 2, size: 4 * GiB, prefetchable: true }, type: 0xc, low: 0x00000000, high: 0xffffffff },
  { name: 'BAR2, 2^40, prefetchable', spec: { index: 2, size: 2 ** 40, prefetchable: true }, type: 0xc, low: 0x00000000, high: 0xffffff00 },
  { name: 'BAR4, 16 bytes, non-prefetchable', spec: { index: 4, size: 16, prefetchable: false }, type: 0x4, low: 0xfffffff0, high: 0xffffffff },
];

describe('installBars', () => {
  for (const c of cases) {
    describe(c.name, () => {
      const lo = barAt(c.spec.index);
      const hi = lo + 4;

      it('reads as a 64-bit memory BAR with base 0 at power-on', () => {
        const cfg = bars([c.spec]);
        expect(cfg.read32(lo)).toBe(c.type);
        expect(cfg.read32(hi)).toBe(0);
      });

      it('writing all ones reads back the size mask with the type bits', () => {
        const cfg = bars([c.spec]);
        w32(cfg, lo, 0xffffffff);
        w32(cfg, hi, 0xffffffff);
        expect(cfg.read32(lo)).toBe((c.low | c.type) >>> 0);
        expect(cfg.read32(hi)).toBe(c.high);
        expect(sizeFromProbe(read64(cfg, c.spec.index))).toBe(BigInt(c.spec.size));
      });

      it('keeps a written base, with the bits below the size cleared', () => {
        const cfg = bars([c.spec]);
        w32(cfg, lo, 0x12345678);
        w32(cfg, hi, 0x9abcdef0);
        expect(cfg.read32(lo)).toBe(((0x12345678 & c.low) | c.type) >>> 0);
        expect(cfg.read32(hi)).toBe((0x9abcdef0 & c.high) >>> 0);
        // The type bits cannot be written away.
        w32(cfg, lo, 0);
        expect(cfg.read32(lo)).toBe(c.type);
      });

      it('byte-wise writes of all ones build the same mask', () => {
        const cfg = bars([c.spec]);
        for (let i = 0; i < 8; i++) w8(cfg, lo + i, 0xff);
        expect(cfg.read32(lo)).toBe((c.low | c.type) >>> 0);
        expect(cfg.read32(hi)).toBe(c.high);
      });

      it('16-bit writes merge with the other half of the dword', () => {
        const cfg = bars([c.spec]);
        w16(cfg, lo + 2, 0xffff);
        expect(cfg.read32(lo)).toBe(((0xffff0000 & c.low) | c.type) >>> 0);
        w16(cfg, lo, 0xffff);
        expect(cfg.read32(lo)).toBe((c.low | c.type) >>> 0);
        w16(cfg, hi + 2, 0xabcd);
        expect(cfg.read32(hi)).toBe((0xabcd0000 & c.high) >>> 0);
        w16(cfg, hi, 0x1234);
        expect(cfg.read32(hi)).toBe((0xabcd1234 & c.high) >>> 0);
      });

      it('a byte write keeps the rest of the programmed base', () => {
        const cfg = bars([c.spec]);
        w32(cfg, lo, 0xffffffff);
        w32(cfg, hi, 0x00000012);
        w8(cfg, lo + 3, 0x00);
        expect(cfg.read32(lo)).toBe(((0x00ffffff & c.low) | c.type) >>> 0);
        expect(cfg.read32(hi)).toBe(0x12 & c.high);
      });

      it('reset clears the stored base', () => {
        const cfg = bars([c.spec]);
        w32(cfg, lo, 0xffffffff);
        w32(cfg, hi, 0xffffffff);
        cfg.reset();
        expect(cfg.read32(lo)).toBe(c.type);
        expect(cfg.read32(hi)).toBe(0);
      });
    });
  }

  it('two BARs are independent', () => {
    const cfg = bars([cases[0]!.spec, cases[4]!.spec]);
    w32(cfg, 0x10, 0xffffffff);
    expect(cfg.read32(0x18)).toBe(0xc);
    w32(cfg, 0x1c, 0x1234);
    expect(cfg.read32(0x14)).toBe(0);
    expect(cfg.read32(0x10)).toBe(0xff000004);
  });

  it('refuses sizes that are not a power of two of at least 16', () => {
    for (const size of [0, 8, 15, 24, 3 * MiB, 2 ** 40 + 4096, 96 * GiB]) {
      expect(() => installBars(new ConfigSpace(), [{ index: 0, size, prefetchable: false }])).toThrow(/power of two/);
    }
  });
});

describe('BAR registers of the GPU device', () => {
  it('BAR0 probes as 16 MiB non-prefetchable and BAR2 as the aperture, prefetchable', () => {
    const { device } = makeDevice({ apertureSize: 96 * MiB + 100 });
    const cfg = device.config;
    expect(cfg.read32(0x10)).toBe(0x4);
    expect(cfg.read32(0x18)).toBe(0xc);
    for (const at of [0x10, 0x14, 0x18, 0x1c]) w32(cfg, at, 0xffffffff);
    expect(sizeFromProbe(read64(cfg, 0))).toBe(16n * 1024n * 1024n);
    expect(sizeFromProbe(read64(cfg, 2))).toBe(128n * 1024n * 1024n);
    expect(cfg.read32(0x18) & 0xf).toBe(0xc);
  });

  it('a 95 GiB aperture is a 128 GiB BAR2 with an upper-dword mask', () => {
    const { device } = makeDevice({ apertureSize: 95 * GiB });
    const cfg = device.config;
    w32(cfg, 0x18, 0xffffffff);
    w32(cfg, 0x1c, 0xffffffff);
    expect(cfg.read32(0x18)).toBe(0xc);
    expect(cfg.read32(0x1c)).toBe(0xffffffe0);
    expect(sizeFromProbe(read64(cfg, 2))).toBe(128n * 1024n * 1024n * 1024n);
  });

  it('unused BAR slots 4 and 5 and the ROM BAR read 0 and ignore writes', () => {
    const { device } = makeDevice();
    const cfg = device.config;
    for (const at of [0x20, 0x24, 0x30]) {
      w32(cfg, at, 0xffffffff);
      expect(cfg.read32(at)).toBe(0);
      for (let i = 0; i < 4; i++) w8(cfg, at + i, 0xff);
      expect(cfg.read32(at)).toBe(0);
    }
  });

  it('slots 1 and 3 are the upper halves of BAR0 and BAR2, not separate BARs', () => {
    const { device } = makeDevice();
    const cfg = device.config;
    w32(cfg, 0x14, 0x00000001);
    w32(cfg, 0x1c, 0x00000002);
    expect(read64(device.config, 0)).toBe((1n << 32n) | 4n);
    expect(read64(device.config, 2)).toBe((2n << 32n) | 0xcn);
  });

  it('device reset clears programmed bases', () => {
    const { device } = makeDevice();
    const cfg = device.config;
    w32(cfg, 0x10, 0xfd000000);
    w32(cfg, 0x18, 0xe0000000);
    w32(cfg, 0x1c, 0x00000040);
    device.reset();
    expect(read64(cfg, 0)).toBe(0x4n);
    expect(read64(cfg, 2)).toBe(0xcn);
  });
});

describe('isPowerOfTwo / nextPowerOfTwo', () => {
  it('isPowerOfTwo works beyond 2^32 and refuses non-integers', () => {
    for (const p of [1, 2, 16, 2 ** 31, 2 ** 32, 2 ** 40, 2 ** 52]) expect(isPowerOfTwo(p)).toBe(true);
    for (const n of [0, -2, 3, 12, 2 ** 32 + 2 ** 31, 2 ** 40 - 1, 2 ** 40 + 4096, 0.5, 1.5, NaN, Infinity]) {
      expect(isPowerOfTwo(n)).toBe(false);
    }
  });

  it('nextPowerOfTwo rounds up and keeps powers of two', () => {
    const cases: [number, number][] = [
      [0, 1],
      [1, 1],
      [2, 2],
      [3, 4],
      [4096, 4096],
      [4097, 8192],
      [96 * MiB, 128 * MiB],
      [96 * MiB + 100, 128 * MiB],
      [GiB, GiB],
      [GiB + 1, 2 * GiB],
      [95 * GiB, 128 * GiB],
      [2 ** 40 - 1, 2 ** 40],
      [2 ** 40 + 1, 2 ** 41],
      [2 ** 52 + 1, 2 ** 53],
    ];
    for (const [n, p] of cases) expect([n, nextPowerOfTwo(n)]).toEqual([n, p]);
  });
});
