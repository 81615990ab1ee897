// Clients get the backing fds to map the BARs, and an fd that maps writable can
// also resize its file: memfds are sealed against it; files get their size back.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openAperture } from '../../src/backends/aperture.js';
import { scrubAperture } from '../../src/backends/scrub.js';
import { parseBar0Spec } from '../../src/cli/parse.js';
import { VfioUserClient } from '../../src/client/client.js';
import { native } from '../../src/native/native.js';
import { Errno, RegionIndex } from '../../src/wire/constants.js';
import { startTestDaemon, until, type TestDaemon } from '../helpers/daemon.js';
import { mountHugetlbfs, requireReservation, reserveHugePages, type HugePageReservation } from '../helpers/hugepages.js';
import { hugetlbMmapGap, mmapPastEofGap } from '../helpers/emulation.js';

const MiB = 1024 * 1024;

/** The file offset of one of our fds: shared by every fd of the same open file description. */
function filePos(fd: number): number {
  return Number(/^pos:\s+(\d+)/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]);
}

async function expectErrno(p: Promise<unknown>, errno: number): Promise<void> {
  await expect(p).rejects.toMatchObject({ errno });
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

  it('answers EFAULT for what a client cut off a file aperture and a file BAR0, and the next client gets them back sized and scrubbed', async () => {
    const size = 8 * MiB - 4096; // BAR2 is 8 MiB: its last page is padding
    const bar0 = path.join(fs.mkdtempSync('/tmp/nvgrace-bar0-'), 'regs');
    fs.writeFileSync(bar0, Buffer.alloc(256 * 1024, 0x11));
    try {
      d = startTestDaemon({ apertureSize: size, bar0: parseBar0Spec(`file:${bar0}`), scrub: 'on-release' });
      const c = VfioUserClient.connect(d.socket);
      await c.negotiate();
      await c.regionWrite(RegionIndex.BAR2, 0x800, Buffer.from('kept'));
      await c.regionWrite(RegionIndex.BAR2, size - 8, Buffer.from('tail'));
      const ap = (await c.regionInfo(RegionIndex.BAR2)).fd!;
      const regs = (await c.regionInfo(RegionIndex.BAR0)).fd!;
      fs.ftruncateSync(ap, 4096);
      fs.ftruncateSync(regs, 0);
      // the daemon's own accesses to what is gone fault; each is an error reply, and the daemon lives on
      await expectErrno(c.regionRead(RegionIndex.BAR2, size - 8, 4), Errno.EFAULT);
      await expectErrno(c.regionWrite(RegionIndex.BAR2, size - 8, Buffer.from('more')), Errno.EFAULT);
      await expectErrno(c.regionRead(RegionIndex.BAR2, 0x1ff8, 16), Errno.EFAULT); // from a kept page into a lost one
      // BAR0's window is mapped at its first access, after the cut: qemu-user 7.2 at 16 KiB
      // pages cannot map it at all (an emulation gap, docs/testing.md), a kernel maps it and faults
      const bar0Errno = mmapPastEofGap() === null ? Errno.EFAULT : Errno.EINVAL;
      await expectErrno(c.regionRead(RegionIndex.BAR0, 0x100, 4), bar0Errno);
      await expectErrno(c.regionWrite(RegionIndex.BAR0, 0x100, Buffer.from([1, 2, 3, 4])), bar0Errno);
      c.postRegionWrite(RegionIndex.BAR2, size - 4, Buffer.from('lost')); // posted: dropped
      // what is still there, the padding and config space are served as before
      expect((await c.regionRead(RegionIndex.BAR2, 0x800, 4)).toString()).toBe('kept');
      expect([...(await c.regionRead(RegionIndex.BAR2, 8 * MiB - 8, 8))]).toEqual(new Array(8).fill(0xff));
      expect((await c.regionRead(RegionIndex.CONFIG, 0, 2)).readUInt16LE(0)).toBe(0x10de);
      const counters = d.running.daemon.counters;
      expect(counters.errorsByErrno.get(Errno.EFAULT)).toBe(bar0Errno === Errno.EFAULT ? 6 : 4);
      // (under the gap each refused window map is an unexpected error of the daemon's own)
      expect(counters.internalErrors).toBe(bar0Errno === Errno.EFAULT ? 0 : 2);
      fs.ftruncateSync(ap, 4 * size); // and growing
      native.closeFd(ap);
      native.closeFd(regs);
      c.close();
      await until(() => d!.running.daemon.client === null, 'client gone');
      expect(fs.statSync(d.aperturePath).size).toBe(size);
      expect(fs.statSync(bar0).size).toBe(256 * 1024);
      await d.running.daemon.whenScrubbed();
      expect(counters.scrubFailures).toBe(0);
      const next = VfioUserClient.connect(d.socket);
      await next.negotiate();
      expect((await next.regionInfo(RegionIndex.BAR2)).info.size).toBe(8 * MiB);
      expect([...(await next.regionRead(RegionIndex.BAR2, 0x800, 4))]).toEqual([0, 0, 0, 0]);
      expect([...(await next.regionRead(RegionIndex.BAR2, size - 8, 8))]).toEqual(new Array(8).fill(0));
      expect(fs.readFileSync(d.aperturePath).equals(Buffer.alloc(size))).toBe(true);
      // BAR0 is not scrubbed: its bytes past the cut came back as zeros
      expect([...(await next.regionRead(RegionIndex.BAR0, 0x100, 4))]).toEqual([0, 0, 0, 0]);
      await next.regionWrite(RegionIndex.BAR2, size - 8, Buffer.from('next'));
      expect((await next.regionRead(RegionIndex.BAR2, size - 8, 4)).toString()).toBe('next');
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

/** qemu-user 7.2 (the 16 KiB run) maps no hugetlb memory (docs/testing.md, emulation gaps). */
const HUGETLB_GAP = hugetlbMmapGap();

describe.skipIf(HUGETLB_GAP !== null)('a client truncating a hugetlbfs aperture (2 MiB pages)', () => {
  let pool: HugePageReservation | string | null = null;
  // 3 pages for each test's 6 MiB file
  beforeAll(async () => {
    pool = await reserveHugePages(2 * MiB, 6);
  });
  afterAll(async () => {
    if (typeof pool === 'object') await pool?.release();
  });
  let d: TestDaemon | null = null;
  let mnt: ReturnType<typeof mountHugetlbfs> | null = null;
  afterEach(() => {
    d?.stop();
    d = null;
    mnt?.unmount();
    mnt = null;
  });

  it('gets EFAULT for trapped accesses to the lost pages; the next client gets the file sized, reserved and scrubbed', async (ctx) => {
    requireReservation(pool, ctx);
    mnt = mountHugetlbfs(2 * MiB);
    const file = path.join(mnt.dir, 'gpu0');
    const size = 5 * MiB; // BAR2 of 8 MiB: 2 huge pages mapped, the tail page trapped, padding from 5 MiB
    d = startTestDaemon({ aperturePath: file, apertureSize: size, scrub: 'on-release' });
    const c = VfioUserClient.connect(d.socket);
    await c.negotiate();
    await c.regionWrite(RegionIndex.BAR2, 0x800, Buffer.from('kept'));
    await c.regionWrite(RegionIndex.BAR2, size - 8, Buffer.from('tail'));
    expect((await c.regionRead(RegionIndex.BAR2, size - 8, 4)).toString()).toBe('tail');
    const fd = (await c.regionInfo(RegionIndex.BAR2)).fd!;
    fs.ftruncateSync(fd, 0); // every huge page goes back to the pool, out of the daemon's mapping too
    await expectErrno(c.regionRead(RegionIndex.BAR2, size - 8, 4), Errno.EFAULT);
    await expectErrno(c.regionRead(RegionIndex.BAR2, 0x800, 4), Errno.EFAULT);
    await expectErrno(c.regionWrite(RegionIndex.BAR2, 4 * MiB, Buffer.from('more')), Errno.EFAULT);
    c.postRegionWrite(RegionIndex.BAR2, 4 * MiB + 8, Buffer.from('lost'));
    // an access that is only partly memory fails as a whole; one wholly in the padding is ~0 as ever
    await expectErrno(c.regionRead(RegionIndex.BAR2, size - 4, 8), Errno.EFAULT);
    expect([...(await c.regionRead(RegionIndex.BAR2, size, 8))]).toEqual(new Array(8).fill(0xff));
    expect((await c.regionRead(RegionIndex.CONFIG, 0, 2)).readUInt16LE(0)).toBe(0x10de);
    const counters = d.running.daemon.counters;
    expect(counters.errorsByErrno.get(Errno.EFAULT)).toBe(5);
    expect(counters.internalErrors).toBe(0);
    native.closeFd(fd);
    c.close();
    await until(() => d!.running.daemon.client === null, 'client gone');
    expect(fs.statSync(file).size).toBe(6 * MiB);
    await d.running.daemon.whenScrubbed();
    expect(counters.scrubFailures).toBe(0);
    const next = VfioUserClient.connect(d.socket);
    await next.negotiate();
    const { info, fd: nextFd } = await next.regionInfo(RegionIndex.BAR2);
    expect(info.size).toBe(8 * MiB);
    expect([...(await next.regionRead(RegionIndex.BAR2, 0x800, 4))]).toEqual([0, 0, 0, 0]);
    expect([...(await next.regionRead(RegionIndex.BAR2, size - 8, 8))]).toEqual(new Array(8).fill(0));
    await next.regionWrite(RegionIndex.BAR2, size - 8, Buffer.from('next'));
    // the next client maps the memory whole, as QEMU would, and sees the same bytes
    const map = native.mmap(nextFd!, 6 * MiB, native.PROT_READ | native.PROT_WRITE, native.MAP_SHARED, 0);
    const bytes = new Uint8Array(map);
    expect(Buffer.from(bytes.subarray(size - 8, size - 4)).toString()).toBe('next');
    expect(bytes.subarray(0, size - 8).every((b) => b === 0)).toBe(true);
    native.munmap(map);
    native.closeFd(nextFd!);
    next.close();
  });

  it('a scrub through a truncated file fails with EFAULT, and after the size is restored succeeds', async (ctx) => {
    requireReservation(pool, ctx);
    mnt = mountHugetlbfs(2 * MiB);
    const file = path.join(mnt.dir, 'gpu0');
    const ap = openAperture({ size: 5 * MiB, base: 0, path: file, pageSize: native.pageSize() });
    try {
      ap.memory.write(3 * MiB, Buffer.from('data'), 0, 4);
      expect(await scrubAperture(ap)).toBe('done'); // faults every page in through the kept windows
      ap.memory.write(3 * MiB, Buffer.from('data'), 0, 4);
      // a tenant process that lives on truncates the file after the daemon restored its size
      fs.truncateSync(file, 2 * MiB);
      await expect(scrubAperture(ap)).rejects.toMatchObject({ errno: Errno.EFAULT, message: expect.stringMatching(/^zeroing .*the memory is gone/) });
      expect(ap.restoreSize()).toBe(2 * MiB);
      expect(fs.statSync(file).size).toBe(6 * MiB);
      expect(await scrubAperture(ap)).toBe('done');
      const out = Buffer.alloc(5 * MiB, 1);
      ap.memory.read(0, out, 0, out.length);
      expect(out.equals(Buffer.alloc(5 * MiB))).toBe(true);
    } finally {
      ap.close();
    }
  });
});
