import { describe, expect, it } from 'vitest';
import { installBars } from '../../src/device/bar-registers.js';
import { PassthroughConfig, type HostConfig } from '../../src/device/passthrough-config.js';

/** A host config space that records the width and place of every write that reaches it. */
function fakeHost(): HostConfig & { bytes: Buffer; writes: string[] } {
  const bytes = Buffer.alloc(256);
  for (let i = 0; i < 256; i++) bytes[i] = i; // recognisable contents
  const writes: string[] = [];
  return {
    bytes,
    writes,
    size: 256,
    read(offset, dst, dstOffset, count) {
      bytes.copy(dst, dstOffset, offset, offset + count);
    },
    write(offset, src, srcOffset, count) {
      writes.push(`0x${offset.toString(16)}/${count}`);
      Buffer.from(src.buffer, src.byteOffset + srcOffset, count).copy(bytes, offset);
    },
  };
}

const MiB = 1 << 20;

function withAperture() {
  const host = fakeHost();
  const cfg = new PassthroughConfig(host);
  installBars(cfg, [{ index: 2, size: MiB, prefetchable: true }]);
  return { host, cfg };
}

function read32(cfg: PassthroughConfig, offset: number): number {
  const b = Buffer.alloc(4);
  cfg.read(offset, b, 0, 4);
  return b.readUInt32LE(0);
}

function write32(cfg: PassthroughConfig, offset: number, v: number): void {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  cfg.write(offset, b, 0, 4);
}

describe('PassthroughConfig: host config space with the aperture BAR laid over it', () => {
  it('reads the host bytes everywhere but the emulated BAR2/3 dwords', () => {
    const { host, cfg } = withAperture();
    expect(cfg.size).toBe(256);
    const all = Buffer.alloc(256);
    cfg.read(0, all, 0, 256);
    for (let i = 0; i < 256; i++) {
      if (i >= 0x18 && i < 0x20) continue;
      expect(all[i], `byte 0x${i.toString(16)}`).toBe(i);
    }
    expect(all.readUInt32LE(0x18)).toBe(0xc); // 64-bit prefetchable, no base yet
    expect(all.readUInt32LE(0x1c)).toBe(0);
    // the host still holds its own bytes there: the overlay never wrote them
    expect(host.bytes.readUInt32LE(0x18)).toBe(0x1b1a1918);
    // a read straddling the overlay edge mixes both
    const edge = Buffer.alloc(4);
    cfg.read(0x16, edge, 0, 4);
    expect([...edge]).toEqual([0x16, 0x17, 0x0c, 0x00]);
  });

  it('sizes and bases the aperture BAR without any write reaching the host', () => {
    const { host, cfg } = withAperture();
    write32(cfg, 0x18, 0xffffffff);
    write32(cfg, 0x1c, 0xffffffff);
    expect(read32(cfg, 0x18)).toBe(0xfff0000c);
    expect(read32(cfg, 0x1c)).toBe(0xffffffff);
    write32(cfg, 0x18, 0xa0000000);
    write32(cfg, 0x1c, 0x1);
    expect(read32(cfg, 0x18)).toBe(0xa000000c);
    expect(read32(cfg, 0x1c)).toBe(1);
    expect(host.writes).toEqual([]);
  });

  it('keeps the width of host writes and splits a write that spans the overlay', () => {
    const { host, cfg } = withAperture();
    const cmd = Buffer.from([0x06, 0x01]);
    cfg.write(0x04, cmd, 0, 2);
    expect(host.writes).toEqual(['0x4/2']);
    expect(host.bytes.readUInt16LE(0x04)).toBe(0x0106);

    // 0x14..0x24: BAR1 to the host, BAR2/3 to the emulator, BAR4 to the host
    const span = Buffer.alloc(16, 0xff);
    cfg.write(0x14, span, 0, 16);
    expect(host.writes.slice(1)).toEqual(['0x14/4', '0x20/4']);
    expect(read32(cfg, 0x18)).toBe(0xfff0000c);
    expect(host.bytes.readUInt32LE(0x14)).toBe(0xffffffff);
  });

  it('merges a byte write into the emulated dword', () => {
    const { cfg } = withAperture();
    write32(cfg, 0x18, 0xa0000000);
    cfg.write(0x1b, Buffer.from([0xb0]), 0, 1);
    expect(read32(cfg, 0x18)).toBe(0xb000000c);
  });

  it('reset clears the emulated registers and leaves the host alone', () => {
    const { host, cfg } = withAperture();
    write32(cfg, 0x18, 0xa0000000);
    write32(cfg, 0x04, 0x00000106);
    cfg.reset();
    expect(read32(cfg, 0x18)).toBe(0xc);
    expect(host.bytes.readUInt32LE(0x04)).toBe(0x106);
  });

  it('refuses an emulated dword that is unaligned or outside the space', () => {
    const cfg = new PassthroughConfig(fakeHost());
    const d = { write() {}, reset() {} };
    expect(() => cfg.emulate(0x19, d)).toThrow(/bad offset/);
    expect(() => cfg.emulate(256, d)).toThrow(/bad offset/);
  });
});
