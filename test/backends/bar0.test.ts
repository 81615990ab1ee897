import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openEmulatedBar0, READINESS_REGISTERS } from '../../src/backends/bar0-emulated.js';
import { openFileBar0 } from '../../src/backends/bar0-file.js';
import { parseBar0Spec } from '../../src/cli/parse.js';
import { VfioUserClient } from '../../src/client/client.js';
import { native } from '../../src/native/native.js';
import { RegionIndex } from '../../src/wire/constants.js';
import { startTestDaemon } from '../helpers/daemon.js';

describe('BAR0 sources', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-bar0-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('parses --bar0', () => {
    expect(parseBar0Spec('emulated')).toEqual({ kind: 'emulated' });
    expect(parseBar0Spec('file:/sys/x/resource0')).toEqual({ kind: 'file', path: '/sys/x/resource0' });
    expect(() => parseBar0Spec('file:')).toThrow();
    expect(() => parseBar0Spec('vfio')).toThrow(/emulated/);
  });

  it('the emulated register file reads ready, and reset restores readiness', () => {
    const b = openEmulatedBar0();
    try {
      const out = Buffer.alloc(4);
      for (const reg of READINESS_REGISTERS) {
        b.memory.read(reg, out, 0, 4);
        expect(out.readUInt32LE(0)).toBe(0xff);
      }
      b.memory.write(READINESS_REGISTERS[0], Buffer.alloc(4), 0, 4);
      b.reset();
      b.memory.read(READINESS_REGISTERS[0], out, 0, 4);
      expect(out.readUInt32LE(0)).toBe(0xff);
    } finally {
      b.close();
    }
  });

  it('a file source sizes its BAR to a power of two and refuses what it cannot map', () => {
    const file = path.join(dir, 'regs');
    fs.writeFileSync(file, Buffer.alloc(300 * 1024, 7));
    const b = openFileBar0(file);
    try {
      expect(b.barSize).toBe(512 * 1024);
      expect(b.memory.size).toBe(300 * 1024);
    } finally {
      b.close();
    }
    fs.writeFileSync(path.join(dir, 'empty'), '');
    expect(() => openFileBar0(path.join(dir, 'empty'))).toThrow(/empty/);
    expect(() => openFileBar0(path.join(dir, 'missing'))).toThrow(/cannot open/);
  });

  it('serves a file as BAR0 over the socket: mapped area, trapped reads and writes, padding', async () => {
    const file = path.join(dir, 'resource0');
    const bytes = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < bytes.length; i += 4) bytes.writeUInt32LE((i ^ 0xa5a5a5a5) >>> 0, i);
    fs.writeFileSync(file, bytes);
    const d = startTestDaemon({ bar0: { kind: 'file', path: file } });
    const c = VfioUserClient.connect(d.socket);
    try {
      await c.negotiate();
      const { info, fd } = await c.regionInfo(RegionIndex.BAR0);
      expect(info.size).toBe(1024 * 1024);
      // everything but the MSI-X window (last 64 KiB) is mapped
      expect(info.sparseAreas).toEqual([{ offset: 0, size: 1024 * 1024 - 64 * 1024 }]);
      const map = native.mmap(fd!, 4096, native.PROT_READ | native.PROT_WRITE, native.MAP_SHARED, info.offset);
      expect(new DataView(map).getUint32(0x100, true)).toBe((0x100 ^ 0xa5a5a5a5) >>> 0);
      native.munmap(map);
      native.closeFd(fd!);
      expect((await c.regionRead(RegionIndex.BAR0, 0x2000, 4)).readUInt32LE(0)).toBe((0x2000 ^ 0xa5a5a5a5) >>> 0);
      await c.regionWrite(RegionIndex.BAR0, 0x3000, Buffer.from([1, 2, 3, 4]));
      expect(fs.readFileSync(file).subarray(0x3000, 0x3004)).toEqual(Buffer.from([1, 2, 3, 4]));
    } finally {
      c.close();
      d.stop();
    }
  });
});
