import { describe, expect, it } from 'vitest';
import { ConfigSpace, type EmulatedDword } from '../../src/device/config-space.js';
import { ConfigRegion } from '../../src/device/config-region.js';
import { CONFIG_SPACE_SIZE } from '../../src/device/pci.js';
import { RegionIndex } from '../../src/wire/constants.js';

function write(cfg: ConfigSpace, offset: number, bytes: number[], srcOffset = 0): void {
  const src = Uint8Array.from([...new Array<number>(srcOffset).fill(0xee), ...bytes]);
  cfg.write(offset, src, srcOffset, bytes.length);
}

function write32(cfg: ConfigSpace, offset: number, value: number): void {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0);
  cfg.write(offset, b, 0, 4);
}

function write16(cfg: ConfigSpace, offset: number, value: number): void {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(value);
  cfg.write(offset, b, 0, 2);
}

/** An emulated dword that records what it was given and stores value ^ 0xffffffff through the space. */
function recorder(cfg: ConfigSpace, at: number) {
  const writes: number[] = [];
  let resets = 0;
  const d: EmulatedDword = {
    write: (v) => {
      writes.push(v);
      cfg.store32(at, ~v);
    },
    reset: () => {
      resets++;
      cfg.store32(at, 0x11223344);
    },
  };
  return { d, writes, resets: () => resets };
}

describe('ConfigSpace', () => {
  it('is 4 KiB of zeros before anything is defined', () => {
    const cfg = new ConfigSpace();
    expect(cfg.size).toBe(CONFIG_SPACE_SIZE);
    expect(cfg.size).toBe(4096);
    const all = new Uint8Array(4096).fill(0xaa);
    cfg.read(0, all, 0, 4096);
    expect(all.every((b) => b === 0)).toBe(true);
  });

  it('define stores little-endian values read back at every width', () => {
    const cfg = new ConfigSpace();
    cfg.define(0x00, 2, 0x10de);
    cfg.define(0x02, 2, 0x2342);
    cfg.define(0x08, 4, 0x030200a1);
    cfg.define(0x3d, 1, 1);
    expect(cfg.read32(0)).toBe(0x234210de);
    expect(cfg.read16(2)).toBe(0x2342);
    expect(cfg.read8(1)).toBe(0x10);
    expect(cfg.read32(8)).toBe(0x030200a1);
    expect(cfg.read8(0x3d)).toBe(1);
    const dst = new Uint8Array(6).fill(0xaa);
    cfg.read(0, dst, 1, 4);
    expect([...dst]).toEqual([0xaa, 0xde, 0x10, 0x42, 0x23, 0xaa]);
  });

  it('bytes defined without a writable mask ignore writes', () => {
    const cfg = new ConfigSpace();
    cfg.define(0x00, 4, 0x234210de);
    write32(cfg, 0, 0xffffffff);
    write(cfg, 1, [0x00]);
    expect(cfg.read32(0)).toBe(0x234210de);
    // Undefined bytes are read-only zeros too.
    write32(cfg, 0x100, 0xffffffff);
    expect(cfg.read32(0x100)).toBe(0);
  });

  it('only the writable bits change', () => {
    const cfg = new ConfigSpace();
    cfg.define(0x04, 2, 0x0000, 0x0546);
    write16(cfg, 0x04, 0xffff);
    expect(cfg.read16(0x04)).toBe(0x0546);
    write16(cfg, 0x04, 0x0002);
    expect(cfg.read16(0x04)).toBe(0x0002);
    // A read-only bit already set stays set when 0 is written.
    cfg.define(0x0c, 1, 0x81, 0x0f);
    write(cfg, 0x0c, [0x00]);
    expect(cfg.read8(0x0c)).toBe(0x80);
    write(cfg, 0x0c, [0x7e]);
    expect(cfg.read8(0x0c)).toBe(0x8e);
  });

  it('honours the source offset of a write', () => {
    const cfg = new ConfigSpace();
    cfg.define(0x3c, 1, 0, 0xff);
    write(cfg, 0x3c, [0x42], 5);
    expect(cfg.read8(0x3c)).toBe(0x42);
  });

  it('RW1C bits clear when 1 is written and stay when 0 is written', () => {
    const cfg = new ConfigSpace();
    cfg.define(0x06, 2, 0xf910, 0, 0xf900);
    write16(cfg, 0x06, 0x0000);
    expect(cfg.read16(0x06)).toBe(0xf910);
    write16(cfg, 0x06, 0x8000);
    expect(cfg.read16(0x06)).toBe(0x7910);
    write16(cfg, 0x06, 0x0110); // bit 4 is not RW1C: writing it changes nothing
    expect(cfg.read16(0x06)).toBe(0x7810);
    write16(cfg, 0x06, 0xffff);
    expect(cfg.read16(0x06)).toBe(0x0010);
    // Writing 1 to an already clear RW1C bit does not set it.
    write16(cfg, 0x06, 0xffff);
    expect(cfg.read16(0x06)).toBe(0x0010);
  });

  it('a dword write over two fields applies each field’s masks', () => {
    const cfg = new ConfigSpace();
    cfg.define(0x04, 2, 0, 0x0546);
    cfg.define(0x06, 2, 0x8010, 0, 0xf900);
    write32(cfg, 0x04, 0xffffffff);
    expect(cfg.read16(0x04)).toBe(0x0546);
    expect(cfg.read16(0x06)).toBe(0x0010);
  });

  describe('emulated dwords', () => {
    it('refuse an unaligned offset', () => {
      const cfg = new ConfigSpace();
      expect(() => cfg.emulate(0x12, recorder(cfg, 0x12).d)).toThrow(/unaligned/);
    });

    it('get the whole dword with the written bytes merged into the current value', () => {
      const cfg = new ConfigSpace();
      const r = recorder(cfg, 0x10);
      cfg.emulate(0x10, r.d);
      cfg.store32(0x10, 0xaabbccdd);
      write(cfg, 0x11, [0x01, 0x02]); // bytes 1 and 2
      expect(r.writes).toEqual([0xaa0201dd]);
      // The emulator decides what is stored; the write masks play no part.
      expect(cfg.read32(0x10)).toBe(~0xaa0201dd >>> 0);
      write32(cfg, 0x10, 0x12345678);
      expect(r.writes).toEqual([0xaa0201dd, 0x12345678]);
    });

    it('a write spanning a plain byte and an emulated dword is split', () => {
      const cfg = new ConfigSpace();
      cfg.define(0x0f, 1, 0, 0xff);
      const r = recorder(cfg, 0x10);
      cfg.emulate(0x10, r.d);
      write(cfg, 0x0f, [0x5a, 0x01, 0x02, 0x03, 0x04, 0x05]); // 0x0f, 0x10-0x13, 0x14
      expect(cfg.read8(0x0f)).toBe(0x5a);
      expect(r.writes).toEqual([0x04030201]);
      expect(cfg.read8(0x14)).toBe(0); // not writable
    });

    it('two adjacent emulated dwords each get their part', () => {
      const cfg = new ConfigSpace();
      const lo = recorder(cfg, 0x10);
      const hi = recorder(cfg, 0x14);
      cfg.emulate(0x10, lo.d);
      cfg.emulate(0x14, hi.d);
      write(cfg, 0x12, [1, 2, 3, 4]);
      expect(lo.writes).toEqual([0x02010000]);
      expect(hi.writes).toEqual([0x00000403]);
    });
  });

  describe('reset', () => {
    it('restores the sealed contents and resets emulated dwords', () => {
      const cfg = new ConfigSpace();
      cfg.define(0x04, 2, 0x0000, 0xffff);
      cfg.define(0x06, 2, 0x8010, 0, 0x8000);
      cfg.define(0x3c, 1, 0xff, 0xff);
      const r = recorder(cfg, 0x10);
      cfg.emulate(0x10, r.d);
      cfg.seal();
      write16(cfg, 0x04, 0x0406);
      write16(cfg, 0x06, 0x8000);
      write(cfg, 0x3c, [0x0b]);
      write32(cfg, 0x10, 0);
      expect(cfg.read16(0x06)).toBe(0x0010);
      cfg.reset();
      expect(cfg.read16(0x04)).toBe(0);
      expect(cfg.read16(0x06)).toBe(0x8010);
      expect(cfg.read8(0x3c)).toBe(0xff);
      expect(r.resets()).toBe(1);
      expect(cfg.read32(0x10)).toBe(0x11223344);
    });

    it('keeps the masks: the space behaves the same after reset', () => {
      const cfg = new ConfigSpace();
      cfg.define(0x04, 2, 0, 0x0006);
      cfg.seal();
      cfg.reset();
      write16(cfg, 0x04, 0xffff);
      expect(cfg.read16(0x04)).toBe(0x0006);
    });

    it('the sealed image is a copy: later writes do not change it', () => {
      const cfg = new ConfigSpace();
      cfg.define(0x3c, 1, 0x00, 0xff);
      cfg.seal();
      write(cfg, 0x3c, [0x42]);
      cfg.reset();
      write(cfg, 0x3c, [0x43]);
      cfg.reset();
      expect(cfg.read8(0x3c)).toBe(0);
    });
  });
});

describe('ConfigRegion', () => {
  it('is region 7, 4 KiB, trapped, and reads and writes through the space', () => {
    const cfg = new ConfigSpace();
    cfg.define(0x00, 2, 0x10de);
    cfg.define(0x3c, 1, 0, 0xff);
    const r = new ConfigRegion(cfg);
    expect(r.index).toBe(RegionIndex.CONFIG);
    expect(r.size).toBe(4096);
    expect(r.mmap).toBeNull();
    expect(r.readable && r.writable).toBe(true);
    r.write(0x3c, Uint8Array.from([0, 0x33]), 1, 1);
    r.write(0x00, Uint8Array.from([0, 0]), 0, 2);
    const dst = new Uint8Array(3);
    r.read(0x00, dst, 1, 2);
    expect([...dst]).toEqual([0, 0xde, 0x10]);
    expect(cfg.read8(0x3c)).toBe(0x33);
  });
});
