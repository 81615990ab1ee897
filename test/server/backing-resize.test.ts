// Clients get the backing fds to map the BARs, and an fd that maps writable can
// also resize its file: memfds are sealed against it; files get their size back.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseBar0Spec } from '../../src/cli/parse.js';
import { VfioUserClient } from '../../src/client/client.js';
import { native } from '../../src/native/native.js';
import { RegionIndex } from '../../src/wire/constants.js';
import { startTestDaemon, until, type TestDaemon } from '../helpers/daemon.js';

const MiB = 1024 * 1024;

/** The file offset of one of our fds: shared by every fd of the same open file description. */
function filePos(fd: number): number {
  return Number(/^pos:\s+(\d+)/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]);
}

describe('a client changing the backing files it was given', () => {
  let d: TestDaemon | null = null;
  afterEach(() => {
    d?.stop();
    d = null;
  });

  it('cannot shrink or grow the memfds (aperture, emulated BAR0)', async () => {
    d = startTestDaemon({ aperturePath: undefined, apertureSize: 8 * MiB });
    const c = VfioUserClient.connect(d.socket);
    await c.negotiate();
    for (const region of [RegionIndex.BAR2, RegionIndex.BAR0]) {
      const { fd } = await c.regionInfo(region);
      expect(() => fs.ftruncateSync(fd!, 0)).toThrow(expect.objectContaining({ code: 'EPERM' }));
      expect(() => fs.ftruncateSync(fd!, 1024 * MiB)).toThrow(expect.objectContaining({ code: 'EPERM' }));
      native.closeFd(fd!);
    }
    await c.regionWrite(RegionIndex.BAR2, 8 * MiB - 4, Buffer.from([1, 2, 3, 4]));
    expect([...(await c.regionRead(RegionIndex.BAR2, 8 * MiB - 4, 4))]).toEqual([1, 2, 3, 4]);
    c.close();
  });

  it('gets the size of a file aperture and a file BAR0 back when the client leaves', async () => {
    const size = 8 * MiB;
    const bar0 = path.join(fs.mkdtempSync('/tmp/nvgrace-bar0-'), 'regs');
    fs.writeFileSync(bar0, Buffer.alloc(256 * 1024, 0x11));
    try {
      d = startTestDaemon({ apertureSize: size, bar0: parseBar0Spec(`file:${bar0}`) });
      const c = VfioUserClient.connect(d.socket);
      await c.negotiate();
      await c.regionWrite(RegionIndex.BAR2, 0x800, Buffer.from('kept'));
      const ap = (await c.regionInfo(RegionIndex.BAR2)).fd!;
      const regs = (await c.regionInfo(RegionIndex.BAR0)).fd!;
      fs.ftruncateSync(ap, 4096);
      fs.ftruncateSync(regs, 0);
      // the daemon reads the missing bytes as zeros, and does not fault
      expect([...(await c.regionRead(RegionIndex.BAR2, size - 8, 4))]).toEqual([0, 0, 0, 0]);
      expect([...(await c.regionRead(RegionIndex.BAR0, 0x100, 4))]).toEqual([0, 0, 0, 0]);
      fs.ftruncateSync(ap, 4 * size); // and growing
      native.closeFd(ap);
      native.closeFd(regs);
      c.close();
      await until(() => d!.running.daemon.client === null, 'client gone');
      expect(fs.statSync(d.aperturePath).size).toBe(size);
      expect(fs.statSync(bar0).size).toBe(256 * 1024);
      const next = VfioUserClient.connect(d.socket);
      await next.negotiate();
      expect((await next.regionRead(RegionIndex.BAR2, 0x800, 4)).toString()).toBe('kept');
      expect([...(await next.regionRead(RegionIndex.BAR2, size - 4, 4))]).toEqual([0, 0, 0, 0]);
      next.close();
    } finally {
      fs.rmSync(path.dirname(bar0), { recursive: true, force: true });
    }
  });

  it('gets an open file of its own: what it changes there reaches neither the daemon nor the next client', async () => {
    d = startTestDaemon({ apertureSize: 8 * MiB });
    const daemonFd = d.running.daemon.device.aperture.mmap!.fd;
    const c = VfioUserClient.connect(d.socket);
    await c.negotiate();
    const fd = (await c.regionInfo(RegionIndex.BAR2)).fd!;
    const again = (await c.regionInfo(RegionIndex.BAR2)).fd!; // asked again: the same open file
    expect(filePos(again)).toBe(0);
    fs.readSync(fd, Buffer.alloc(4096), 0, 4096, null); // moves the offset of the client's open file
    expect(filePos(fd)).toBe(4096);
    expect(filePos(again)).toBe(4096);
    expect(filePos(daemonFd)).toBe(0);
    native.closeFd(fd);
    native.closeFd(again);
    c.close();
    await until(() => d!.running.daemon.client === null, 'client gone');
    const next = VfioUserClient.connect(d.socket);
    await next.negotiate();
    const fd2 = (await next.regionInfo(RegionIndex.BAR2)).fd!;
    expect(filePos(fd2)).toBe(0);
    native.closeFd(fd2);
    next.close();
  });
});
