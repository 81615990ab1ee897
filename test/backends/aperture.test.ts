import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ApertureError, openAperture } from '../../src/backends/aperture.js';
import { VfioUserClient } from '../../src/client/client.js';
import { RegionIndex } from '../../src/wire/constants.js';
import { startTestDaemon } from '../helpers/daemon.js';

const GiB = 1024 ** 3;

describe('openAperture', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-ap-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('creates a missing file sparse, sized base + size, and touches none of it', () => {
    const file = path.join(dir, 'ap');
    const ap = openAperture({ size: 512 * GiB, base: 4096, path: file, pageSize: 4096 });
    try {
      const st = fs.statSync(file);
      expect(st.size).toBe(512 * GiB + 4096);
      expect(st.blocks).toBe(0);
      expect(st.mode & 0o777).toBe(0o600);
      expect(ap.kind).toBe('file');
      expect(ap.memory.fdOffset).toBe(4096);
    } finally {
      ap.close();
    }
  });

  it('refuses an unaligned base, a zero size, a short file and a directory', () => {
    expect(() => openAperture({ size: 4096, base: 100, pageSize: 4096 })).toThrow(ApertureError);
    expect(() => openAperture({ size: 0, base: 0, pageSize: 4096 })).toThrow(/positive/);
    const short = path.join(dir, 'short');
    fs.writeFileSync(short, Buffer.alloc(8192));
    expect(() => openAperture({ size: 8192, base: 4096, path: short, pageSize: 4096 })).toThrow(/holds 8192 bytes; base\+size needs 12288/);
    expect(() => openAperture({ size: 4096, base: 0, path: dir, pageSize: 4096 })).toThrow();
  });

  it('accepts a character device (the /dev/mem case) without a size check', () => {
    const ap = openAperture({ size: 1 << 20, base: 0, path: '/dev/zero', pageSize: 4096 });
    try {
      expect(ap.kind).toBe('char-device');
    } finally {
      ap.close();
    }
  });
});

describe('a 512 GiB aperture', () => {
  it('starts without allocating memory and serves padding and memory at its ends', async () => {
    const d = startTestDaemon({ apertureSize: 512 * GiB - 4096 });
    try {
      expect(fs.statSync(d.aperturePath).blocks).toBe(0);
      const c = VfioUserClient.connect(d.socket);
      await c.negotiate();
      const { info, fd } = await c.regionInfo(RegionIndex.BAR2);
      if (fd !== null) (await import('../../src/native/native.js')).native.closeFd(fd);
      expect(info.size).toBe(512 * GiB);
      expect([...(await c.regionRead(RegionIndex.BAR2, 512 * GiB - 4, 4))]).toEqual([0xff, 0xff, 0xff, 0xff]);
      await c.regionWrite(RegionIndex.BAR2, 512 * GiB - 4096 - 4, Buffer.from([1, 2, 3, 4]));
      expect([...(await c.regionRead(RegionIndex.BAR2, 512 * GiB - 4096 - 4, 4))]).toEqual([1, 2, 3, 4]);
      c.close();
      expect(fs.statSync(d.aperturePath).blocks).toBeLessThanOrEqual(8 * 8); // one page, in 512-byte blocks (some filesystems allocate more)
    } finally {
      d.stop();
    }
  });
});
