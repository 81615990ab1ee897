// QEMU killed with SIGKILL while it is attached (during guest boot, and while the
// guest loops over trapped BAR2 padding accesses): the daemon releases it, leaks
// nothing, and the next QEMU's guest reads the same aperture bytes.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../src/native/native.js';
import { RegionIndex } from '../../src/wire/constants.js';
import { startTestDaemon, until, type TestDaemon } from '../helpers/daemon.js';
import { fillPattern, nvgraceBarCheckArgs, shellQuote } from './bar-check.js';
import { bootGuest, describeBoot, parseBarCheckDone, parseChecks, type BootResult } from './boot.js';
import { buildInitramfs } from './initramfs.js';
import { useQemu } from './qemu-fixture.js';
import { collectGarbage } from '../native/helpers.js';

const MiB = 1024 * 1024;
const MEM = 96 * MiB;
const qemu = useQemu();

const device = (socket: string): string[] => [
  '-device',
  JSON.stringify({ driver: 'vfio-user-pci', id: 'gpu0', socket: { type: 'unix', path: socket } }),
];

const sha = (file: string): string => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

describe('QEMU killed while attached', () => {
  let d: TestDaemon | null = null;
  afterEach(() => {
    d?.stop();
    d = null;
  });

  it('during boot and during a trapped access; then a new QEMU reads the same bytes', async (ctx) => {
    const q = qemu.require(ctx);
    const file = `/dev/shm/nvgrace-faults-${process.pid}-${Date.now()}`;
    d = startTestDaemon({ apertureSize: MEM, aperturePath: file });
    const daemon = d.running.daemon;
    try {
      const head = Buffer.alloc(4 * MiB);
      head.writeUInt32LE(0xfeedf00d, 0x1000);
      fillPattern(head, MiB, MiB, 0x51);
      const fd = fs.openSync(file, 'r+');
      fs.writeSync(fd, head, 0, head.length, 0);
      const tail = Buffer.alloc(4);
      tail.writeUInt32LE(0x0ddba11);
      fs.writeSync(fd, tail, 0, 4, MEM - 4);
      fs.closeSync(fd);
      const before = sha(file);
      await collectGarbage();
      const baseFds = native.fdCount();
      const heap0 = process.memoryUsage();

      /** Boots a guest and SIGKILLs its QEMU (the daemon's client, by its SO_PEERCRED pid) once `ready()` holds. */
      const bootAndKill = async (initCommands: string, ready: (serial: string) => boolean, what: string): Promise<BootResult> => {
        const initrd = await buildInitramfs({ initCommands });
        let killed = false;
        let serial = '';
        const watch = setInterval(() => {
          const pid = daemon.client?.peer?.pid;
          if (!killed && pid && ready(serial)) {
            killed = true;
            process.kill(pid, 'SIGKILL');
          }
        }, 10);
        try {
          const r = await bootGuest({
            qemu: q,
            initrd,
            extraArgs: device(d!.socket),
            timeoutMs: 120_000,
            onOutput: (s) => (serial += s),
          });
          expect(killed, `${what}: ${describeBoot(r)}`).toBe(true);
          expect(r.signal, describeBoot(r)).toBe('SIGKILL');
          return r;
        } finally {
          clearInterval(watch);
        }
      };
      const afterKill = async (what: string) => {
        await until(() => daemon.client === null, `${what}: killed QEMU released`, 10_000);
        expect(native.fdCount(), `${what}: open fds`).toBe(baseFds);
        expect(daemon.device.clientFds.held).toBe(0);
        expect(daemon.device.dma.count).toBe(0);
        expect(daemon.counters.internalErrors).toBe(0);
      };

      // 1. during boot: the device is realized, the firmware is done, the kernel is starting
      let romAt = 0;
      const r1 = await bootAndKill(
        'sleep 600',
        (serial) => {
          if (!romAt && serial.includes('Booting from ROM')) romAt = Date.now();
          return romAt > 0 && Date.now() - romAt > 1000;
        },
        'boot',
      );
      expect(r1.output, describeBoot(r1)).not.toContain('GUEST-INIT START');
      await afterKill('boot');

      // 2. during a trapped access: the guest reads and writes BAR2 padding in a loop
      const padReads = () => daemon.counters.trappedReads[RegionIndex.BAR2]!;
      const loop = `echo LOOP-START\nwhile true; do bar-check --mem-size 0x${MEM.toString(16)} --padding 0x${(MEM + 0x100000).toString(16)} >/dev/null; done`;
      const start = padReads();
      const r2 = await bootAndKill(loop, () => padReads() > start + 300, 'trapped loop');
      expect(r2.output).toContain('LOOP-START');
      await afterKill('trapped loop');

      // 3. a new QEMU: its guest finds the host's bytes where they were
      expect(sha(file)).toBe(before);
      const args = nvgraceBarCheckArgs({
        memSize: MEM,
        bar2Size: 128 * MiB,
        expect: [
          [0x1000, 0xfeedf00d],
          [MEM - 4, 0x0ddba11],
        ],
        extra: ['--expect-fill', `1M:1M:0x51`],
      });
      const initrd = await buildInitramfs({ initCommands: `bar-check ${shellQuote(args)}\necho "bar-check exit=$?"` });
      const r3 = await bootGuest({ qemu: q, initrd, extraArgs: device(d.socket), timeoutMs: 180_000 });
      const why = describeBoot(r3);
      expect(r3.timedOut, why).toBe(false);
      expect(parseChecks(r3.output).filter((c) => !c.pass), why).toEqual([]);
      expect(parseBarCheckDone(r3.output)?.fail, why).toBe(0);
      expect(parseChecks(r3.output).map((c) => c.name), why).toContain('expect-fill@0x100000+0x100000');
      expect(r3.output, why).toContain('bar-check exit=0');
      await afterKill('clean run');
      expect(sha(file)).toBe(before);
      await collectGarbage();
      const heap1 = process.memoryUsage();
      const grew = heap1.heapUsed - heap0.heapUsed + heap1.arrayBuffers - heap0.arrayBuffers;
      console.info(`three QEMU runs, two killed: heap+buffers ${(grew / MiB).toFixed(2)} MiB, fds ${baseFds} -> ${native.fdCount()}`);
      expect(grew).toBeLessThan(8 * MiB);
    } finally {
      fs.rmSync(file, { force: true });
    }
  }, 420_000);
});
