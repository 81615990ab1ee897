// The layouts over a real socket, with our own client: which regions exist, where each
// maps in the aperture file, trapped accesses, padding and the BAR registers.
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../src/client/client.js';
import { native } from '../../src/native/native.js';
import { RegionIndex } from '../../src/wire/constants.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const CFG = RegionIndex.CONFIG;

describe('layouts over a socket', () => {
  let d: TestDaemon | null = null;
  let client: VfioUserClient | null = null;
  afterEach(() => {
    client?.close();
    d?.stop();
    client = null;
    d = null;
  });

  async function start(layout: 'bar2' | 'gh' | 'gb', apertureSize: number, deviceId?: number): Promise<VfioUserClient> {
    d = startTestDaemon({ layout, apertureSize, ...(deviceId === undefined ? {} : { deviceId }) });
    client = VfioUserClient.connect(d.socket);
    await client.negotiate();
    return client;
  }

  async function regionSizes(c: VfioUserClient): Promise<number[]> {
    const sizes: number[] = [];
    for (let i = 0; i < 6; i++) {
      const { info, fd } = await c.regionInfo(i);
      if (fd !== null) native.closeFd(fd);
      sizes.push(info.size);
    }
    return sizes;
  }

  async function cfg32(c: VfioUserClient, off: number): Promise<number> {
    return (await c.regionRead(CFG, off, 4)).readUInt32LE(0);
  }

  /** BAR size from the config registers, sized by writing all ones as an OS does. */
  async function probeBar(c: VfioUserClient, bar: number): Promise<{ flags: number; size: number }> {
    const at = 0x10 + 4 * bar;
    const ones = Buffer.from([0xff, 0xff, 0xff, 0xff]);
    await c.regionWrite(CFG, at, ones);
    await c.regionWrite(CFG, at + 4, ones);
    const mask = (BigInt(await cfg32(c, at + 4)) << 32n) | BigInt(await cfg32(c, at));
    if (mask === 0n) return { flags: 0, size: 0 };
    return { flags: Number(mask & 0xfn), size: Number(((~(mask & ~0xfn)) & 0xffff_ffff_ffff_ffffn) + 1n) };
  }

  it('gh: BAR4 maps usemem from the start of the aperture, BAR2 maps resmem after it', async () => {
    const mem = 2816 * MiB; // usemem 1.5 GiB, resmem 1.25 GiB
    const c = await start('gh', mem);
    expect(await regionSizes(c)).toEqual([16 * MiB, 0, 2 * GiB, 0, 2 * GiB, 0]);
    expect((await c.regionRead(CFG, 2, 2)).readUInt16LE(0)).toBe(0x2342);

    const fd = fs.openSync(d!.aperturePath, 'r+');
    try {
      const mark = Buffer.alloc(4);
      mark.writeUInt32LE(0x11112222);
      fs.writeSync(fd, mark, 0, 4, 0x3000); // usemem 0x3000
      mark.writeUInt32LE(0x33334444);
      fs.writeSync(fd, mark, 0, 4, 1536 * MiB + 0x3000); // resmem 0x3000

      for (const [index, fileOffset, areaSize, value] of [
        [RegionIndex.BAR4, 0, 1536 * MiB, 0x11112222],
        [RegionIndex.BAR2, 1536 * MiB, 1280 * MiB, 0x33334444],
      ] as const) {
        const { info, fd: regionFd } = await c.regionInfo(index);
        expect(regionFd).not.toBeNull();
        expect(info.offset).toBe(fileOffset);
        expect(info.sparseAreas).toEqual([{ offset: 0, size: areaSize }]);
        // the client maps the BAR's area at the offset it was given and sees that part of the file
        const map = native.mmap(regionFd!, 64 * 1024, native.PROT_READ | native.PROT_WRITE, native.MAP_SHARED, info.offset);
        try {
          expect(Buffer.from(map).readUInt32LE(0x3000)).toBe(value);
          new Uint8Array(map).set([0xc0, 0xff, 0xee, index], 0x5000);
        } finally {
          native.munmap(map);
          native.closeFd(regionFd!);
        }
        // the trapped path agrees with the mapping
        expect((await c.regionRead(index, 0x3000, 4)).readUInt32LE(0)).toBe(value);
        expect([...(await c.regionRead(index, 0x5000, 4))]).toEqual([0xc0, 0xff, 0xee, index]);
      }
      // trapped writes land in the right place in the file
      await c.regionWrite(RegionIndex.BAR2, 0x40, Buffer.from('resmem!'));
      await c.regionWrite(RegionIndex.BAR4, 0x40, Buffer.from('usemem!'));
      const back = Buffer.alloc(7);
      fs.readSync(fd, back, 0, 7, 1536 * MiB + 0x40);
      expect(back.toString()).toBe('resmem!');
      fs.readSync(fd, back, 0, 7, 0x40);
      expect(back.toString()).toBe('usemem!');
    } finally {
      fs.closeSync(fd);
    }

    // both paddings read ~0 and drop writes
    for (const [index, memEnd] of [[RegionIndex.BAR4, 1536 * MiB], [RegionIndex.BAR2, 1280 * MiB]] as const) {
      await c.regionWrite(index, memEnd + 16, Buffer.from([1, 2, 3, 4]));
      expect([...(await c.regionRead(index, memEnd + 16, 8))]).toEqual(new Array(8).fill(0xff));
      expect([...(await c.regionRead(index, 2 * GiB - 8, 8))]).toEqual(new Array(8).fill(0xff));
    }
    // a write at the end of usemem does not spill into resmem
    await c.regionWrite(RegionIndex.BAR4, 1536 * MiB - 2, Buffer.from([0xaa, 0xbb, 0xcc, 0xdd]));
    expect([...(await c.regionRead(RegionIndex.BAR2, 0, 2))]).toEqual([0, 0]);
    expect([...(await c.regionRead(RegionIndex.BAR4, 1536 * MiB - 2, 4))]).toEqual([0xaa, 0xbb, 0xff, 0xff]);
    expect(fs.statSync(d!.aperturePath).size).toBe(mem);
    expect(d!.running.daemon.device.memoryBars.map((b) => b.padding.droppedWrites)).toEqual([1, 2]);
  });

  it('gh: BAR2 and BAR4 registers size like hardware and are cleared by a reset', async () => {
    const c = await start('gh', 3 * GiB + 256 * MiB); // usemem BAR 4 GiB (the kernel's sizing), resmem 2 GiB
    expect(await probeBar(c, 2)).toEqual({ flags: 0xc, size: 2 * GiB });
    expect(await probeBar(c, 4)).toEqual({ flags: 0xc, size: 4 * GiB });
    expect(await probeBar(c, 0)).toEqual({ flags: 0x4, size: 16 * MiB });
    await c.regionWrite(CFG, 0x20, Buffer.from([0, 0, 0, 0]));
    await c.regionWrite(CFG, 0x24, Buffer.from([0x10, 0, 0, 0]));
    expect(await cfg32(c, 0x20)).toBe(0xc);
    expect(await cfg32(c, 0x24)).toBe(0x10);
    await c.reset();
    expect([await cfg32(c, 0x18), await cfg32(c, 0x1c), await cfg32(c, 0x20), await cfg32(c, 0x24)]).toEqual([0xc, 0, 0xc, 0]);
  });

  it('gb: only BAR0 and BAR4; BAR2 is absent and its registers stay 0', async () => {
    const mem = 160 * MiB;
    const c = await start('gb', mem);
    expect(await regionSizes(c)).toEqual([16 * MiB, 0, 0, 0, 256 * MiB, 0]);
    expect((await c.regionRead(CFG, 2, 2)).readUInt16LE(0)).toBe(0x2941);
    expect(await probeBar(c, 2)).toEqual({ flags: 0, size: 0 });
    expect(await probeBar(c, 4)).toEqual({ flags: 0xc, size: 256 * MiB });
    await expect(c.regionRead(RegionIndex.BAR2, 0, 4)).rejects.toMatchObject({ errno: 22 });
    await c.regionWrite(RegionIndex.BAR4, 0x100, Buffer.from('blackwell'));
    const back = Buffer.alloc(9);
    const fd = fs.openSync(d!.aperturePath, 'r');
    fs.readSync(fd, back, 0, 9, 0x100);
    fs.closeSync(fd);
    expect(back.toString()).toBe('blackwell');
    expect([...(await c.regionRead(RegionIndex.BAR4, mem, 4))]).toEqual([0xff, 0xff, 0xff, 0xff]);
  });

  it('bar2: BAR4 is absent; --device-id overrides the layout default', async () => {
    const c = await start('bar2', 96 * MiB, 0x2348);
    expect(await regionSizes(c)).toEqual([16 * MiB, 0, 128 * MiB, 0, 0, 0]);
    expect(await probeBar(c, 4)).toEqual({ flags: 0, size: 0 });
    expect((await c.regionRead(CFG, 2, 2)).readUInt16LE(0)).toBe(0x2348);
  });
});
