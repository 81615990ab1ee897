// Faults: many clients coming and going, signals during a session, a daemon
// killed outright. Nothing leaks, nothing is lost.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../src/client/client.js';
import { native } from '../../src/native/native.js';
import { DmaMapFlag, IrqIndex, IrqSetFlag, RegionIndex } from '../../src/wire/constants.js';
import { finished, spawnCli, waitForLog } from '../helpers/cli.js';
import { startTestDaemon, until } from '../helpers/daemon.js';
import { RawPeer } from '../helpers/raw-peer.js';
import { isListening } from '../service/helpers.js';
import { collectGarbage } from '../native/helpers.js';
import { HANG_GUARD_MS, LONG_TEST_MS } from '../helpers/patience.js';

const MiB = 1024 * 1024;
const PAGE = native.pageSize();

/** One full client life: maps, an eventfd, the BAR2 fd, some I/O, then gone. */
async function clientLife(socket: string, ram: number, i: number): Promise<void> {
  const c = VfioUserClient.connect(socket);
  try {
    await c.negotiate();
    await c.dmaMap(0x100000, 16 * PAGE, DmaMapFlag.READ | DmaMapFlag.WRITE, ram, 0);
    await c.dmaMap(0x200000, PAGE, DmaMapFlag.READ);
    const efd = native.eventfd(0, native.EFD_NONBLOCK);
    await c.setIrqs(IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, IrqIndex.MSIX, i % 16, 1, [efd]);
    native.closeFd(efd);
    const { fd } = await c.regionInfo(RegionIndex.BAR2);
    native.closeFd(fd!);
    await c.regionWrite(RegionIndex.BAR2, (i % 1024) * PAGE, Buffer.from([i & 0xff]));
    expect((await c.regionRead(RegionIndex.BAR2, (i % 1024) * PAGE, 1))[0]).toBe(i & 0xff);
  } finally {
    c.close();
  }
}

function procFds(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

function procRss(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

describe('500 connect/disconnect cycles', () => {
  it('leave the in-process daemon with the same fds and heap', async () => {
    const d = startTestDaemon();
    const ram = native.memfdCreate('guest-ram', 0);
    fs.ftruncateSync(ram, MiB);
    try {
      const daemon = d.running.daemon;
      const cycle = async (i: number) => {
        await clientLife(d.socket, ram, i);
        await until(() => daemon.client === null, 'client released');
      };
      for (let i = 0; i < 50; i++) await cycle(i); // warm up (JIT, pools)
      await collectGarbage();
      const fds0 = native.fdCount();
      const heap0 = process.memoryUsage();
      for (let i = 0; i < 500; i++) await cycle(i);
      await collectGarbage();
      const heap1 = process.memoryUsage();
      expect(native.fdCount()).toBe(fds0);
      expect(daemon.device.clientFds.held).toBe(0);
      expect(daemon.counters.connections).toBe(550);
      const grew = heap1.heapUsed - heap0.heapUsed + heap1.arrayBuffers - heap0.arrayBuffers;
      console.info(`500 cycles in process: heap+buffers ${(grew / MiB).toFixed(2)} MiB`);
      expect(grew).toBeLessThan(2 * MiB);
    } finally {
      native.closeFd(ram);
      d.stop();
    }
  }, LONG_TEST_MS);

  it('leave a daemon process with the same fd count and a flat RSS', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-cycles-'));
    const socket = path.join(dir, 'gpu.sock');
    const daemon = spawnCli(['serve', '--socket', socket, '--aperture-size', '8M', '--log-level', 'warn']);
    const ram = native.memfdCreate('guest-ram', 0);
    fs.ftruncateSync(ram, MiB);
    try {
      await until(() => isListening(socket), 'listening socket', HANG_GUARD_MS);
      const pid = daemon.pid!;
      // after one client the daemon also holds a pidfd of this (still running) client process
      await clientLife(socket, ram, 0);
      await new Promise((r) => setTimeout(r, 300));
      const idleFds = procFds(pid);
      // each client is released (every fd it gave back closed) before the next comes
      const cycle = async (i: number) => {
        await clientLife(socket, ram, i);
        await until(() => procFds(pid) === idleFds, `daemon back to ${idleFds} fds after cycle ${i}`, HANG_GUARD_MS);
      };
      for (let i = 0; i < 100; i++) await cycle(i); // warm up
      const rss0 = procRss(pid);
      for (let i = 0; i < 500; i++) await cycle(i);
      const rss1 = procRss(pid);
      console.info(`500 cycles, daemon process: ${idleFds} fds throughout, RSS ${(rss0 / MiB).toFixed(1)} -> ${(rss1 / MiB).toFixed(1)} MiB`);
      expect(rss1 - rss0).toBeLessThan(16 * MiB);
      expect(daemon.exitCode).toBeNull();
      daemon.kill('SIGTERM');
      expect((await finished(daemon)).code).toBe(0);
    } finally {
      native.closeFd(ram);
      if (daemon.exitCode === null) daemon.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, LONG_TEST_MS);
});

describe('signals and crashes', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-faults-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('exits 0 on SIGTERM in the middle of an active session, removing its socket', async () => {
    const socket = path.join(dir, 'gpu.sock');
    const daemon = spawnCli(['serve', '--socket', socket, '--aperture-size', '16M']);
    await waitForLog(daemon, 'device ready');
    const c = RawPeer.connect(socket);
    await c.negotiate();
    const busy = VfioUserClient.connect(socket); // refused: one client per device
    await expect(busy.negotiate()).rejects.toThrow(/closed/);
    // a message half sent: the daemon is waiting for the rest when the signal comes
    await c.send(Buffer.from([1, 0, 4, 0, 32, 0, 0, 0]));
    daemon.kill('SIGTERM');
    const done = await finished(daemon);
    expect(done.code).toBe(0);
    expect(done.signal).toBeNull();
    expect(fs.existsSync(socket)).toBe(false);
    expect(done.stderr).toContain('client disconnected');
    await c.closed();
    c.close();
  });

  it('keeps every byte of a file-backed aperture when the daemon is killed (SIGKILL) and restarted', async () => {
    const socket = path.join(dir, 'gpu.sock');
    const file = `/dev/shm/nvgrace-kill-${process.pid}-${Date.now()}`;
    const size = 8 * MiB + 512;
    const args = ['serve', '--socket', socket, '--aperture-path', file, '--aperture-size', String(size)];
    try {
      const data = Buffer.alloc(size);
      for (let i = 0; i + 4 <= size; i += 4) data.writeUInt32LE(Math.imul(i, 0x9e3779b1) >>> 0, i);
      const first = spawnCli(args);
      await waitForLog(first, 'device ready');
      const c = VfioUserClient.connect(socket);
      await c.negotiate();
      for (let off = 0; off < size; off += MiB) await c.regionWrite(RegionIndex.BAR2, off, data.subarray(off, Math.min(size, off + MiB)));
      // killed with a client attached and posted writes in flight
      c.postRegionWrite(RegionIndex.BAR2, 0, data.subarray(0, 64));
      await c.regionRead(RegionIndex.BAR2, 0, 4);
      first.kill('SIGKILL');
      expect((await finished(first)).signal).toBe('SIGKILL');
      expect(fs.existsSync(socket)).toBe(true); // left behind: stale
      const second = spawnCli(args);
      await waitForLog(second, 'device ready');
      const c2 = VfioUserClient.connect(socket);
      await c2.negotiate();
      const back: Buffer[] = [];
      for (let off = 0; off < size; off += MiB) back.push(await c2.regionRead(RegionIndex.BAR2, off, Math.min(MiB, size - off)));
      c2.close();
      expect(Buffer.concat(back).equals(data)).toBe(true);
      second.kill('SIGTERM');
      expect((await finished(second)).code).toBe(0);
    } finally {
      fs.rmSync(file, { force: true });
    }
  });
});
