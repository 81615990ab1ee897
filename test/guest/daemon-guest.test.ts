// The real-client test: a Linux guest under QEMU >= 10.1 attaches to the daemon with
// -device vfio-user-pci and checks BAR2 from the inside, through sysfs.
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { fillPattern, findPatternMismatch, nvgraceBarCheckArgs, shellQuote } from './bar-check.js';
import { bootGuest, describeBoot, parseBarCheckDone, parseChecks } from './boot.js';
import { buildInitramfs } from './initramfs.js';
import { useQemu } from './qemu-fixture.js';
import { vfioUserDevice } from './vfio-user-device.js';

const MiB = 1024 * 1024;
const qemu = useQemu();

describe('QEMU guest attached to the daemon', () => {
  let d: TestDaemon | null = null;
  afterEach(() => {
    d?.stop();
    d = null;
  });

  it('sees host bytes in BAR2, leaves its writes for the host, and reads ~0 padding', async (ctx) => {
    const q = qemu.require(ctx);
    const memSize = 96 * MiB; // not a power of two: BAR2 is 128 MiB with 32 MiB of padding
    d = startTestDaemon({ apertureSize: memSize, aperturePath: `/dev/shm/nvgrace-guest-${process.pid}-${Date.now()}` });
    const file = d.aperturePath;
    try {
      // host writes before boot
      const fd = fs.openSync(file, 'r+');
      const head = Buffer.alloc(4 * MiB);
      head.writeUInt32LE(0xdeadbeef, 0x1000);
      fillPattern(head, 1 * MiB, 1 * MiB, 0xabc);
      fs.writeSync(fd, head, 0, head.length, 0);
      const last = Buffer.alloc(4);
      last.writeUInt32LE(0x600dcafe);
      fs.writeSync(fd, last, 0, 4, memSize - 4);
      fs.closeSync(fd);

      const args = nvgraceBarCheckArgs({
        memSize,
        bar2Size: 128 * MiB,
        expect: [
          [0x1000, 0xdeadbeef],
          [memSize - 4, 0x600dcafe],
        ],
        write: [
          [0x2000, 0xcafef00d],
          [memSize - 8, 0x5a5a5a5a],
        ],
        extra: [
          '--expect-fill', '1M:1M:0xabc',
          '--write-fill', '8M:64K:0x77',
          '--reg-expect', '0x1498:0xff',
          '--reg-expect', '0x200bc:0xff',
        ],
      });
      const initrd = await buildInitramfs({ initCommands: `bar-check ${shellQuote(args)}\necho "bar-check exit=$?"` });
      const r = await bootGuest({ qemu: q, initrd, extraArgs: vfioUserDevice(d.socket), timeoutMs: 180_000 });
      const why = describeBoot(r);
      console.info(`guest boot (vfio-user daemon): ${r.durationMs} ms`);
      expect(r.timedOut, why).toBe(false);
      expect(r.output, why).toMatch(/DEVICE 0000:00:[0-9a-f]{2}\.0 10de:2342/);
      expect(r.output, why).toMatch(/BAR 0 start=0x[0-9a-f]+ end=0x[0-9a-f]+ flags=0x[0-9a-f]+ size=0x1000000 mem mem64\b/);
      expect(r.output, why).toMatch(/BAR 2 start=0x[0-9a-f]+ end=0x[0-9a-f]+ flags=0x[0-9a-f]+ size=0x8000000 mem mem64 prefetch/);
      const checks = parseChecks(r.output);
      const failed = checks.filter((c) => !c.pass).map((c) => `${c.name} ${c.details}`);
      expect(failed, why).toEqual([]);
      const names = checks.map((c) => c.name);
      for (const must of ['bar2-size', 'bar2-flags', 'bar0-size', 'expect32@0x1000', 'expect-fill@0x100000+0x100000', 'write32@0x2000']) {
        expect(names, why).toContain(must);
      }
      expect(names.filter((n) => n.startsWith('padding-read')).length, why).toBeGreaterThanOrEqual(12);
      expect(names.filter((n) => n.startsWith('padding-write')).length, why).toBeGreaterThanOrEqual(3);
      expect(parseBarCheckDone(r.output)?.fail, why).toBe(0);
      expect(r.output, why).toContain('bar-check exit=0');

      // what the guest left for the host
      const after = fs.readFileSync(file);
      expect(after.length).toBe(memSize);
      expect(after.readUInt32LE(0x2000)).toBe(0xcafef00d);
      expect(after.readUInt32LE(memSize - 8)).toBe(0x5a5a5a5a);
      expect(findPatternMismatch(after, 8 * MiB, 64 * 1024, 0x77)).toBe(-1);
      // the padding writes were dropped, not stored anywhere
      expect(d.running.daemon.device.aperture.padding.droppedWrites).toBeGreaterThan(0);
    } finally {
      fs.rmSync(file, { force: true });
    }
  }, 300_000);
});
