// Real-QEMU smoke test: boots the TCG guest with no vfio-user device and checks that the
// guest tooling (initramfs, /init, bar-check) works. Under CI=true a missing QEMU fails;
// elsewhere it is provisioned too, unless the user opted out with NVGRACE_NO_PROVISION=1.
import { closeSync, ftruncateSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { describe, expect, it, type TestContext } from 'vitest';
import { fillPattern, findPatternMismatch } from './bar-check.js';
import {
  bootGuest,
  describeBoot,
  initExitStatus,
  parseBarCheckDone,
  parseChecks,
  type BootResult,
} from './boot.js';
import { buildInitramfs, INIT_START_MARK } from './initramfs.js';
import type { QemuInstall } from './qemu-env.js';
import { useQemu } from './qemu-fixture.js';

const BOOT_TEST_TIMEOUT_MS = 240_000;
const qemu = useQemu();
const requireQemu = (ctx: TestContext): QemuInstall => qemu.require(ctx);

async function boot(q: QemuInstall, initCommands: string, extraArgs: string[] = []): Promise<BootResult> {
  const initrd = await buildInitramfs({ initCommands });
  return bootGuest({ qemu: q, initrd, extraArgs, timeoutMs: 180_000 });
}

describe('real-QEMU guest', () => {
  it('boots and runs bar-check with no vfio-user device', async (ctx) => {
    const q = requireQemu(ctx);
    const r = await boot(q, 'bar-check --list\necho "bar-check exit=$?"');
    const why = describeBoot(r);
    console.info(`guest boot (no device): ${r.durationMs} ms`);
    expect(r.timedOut, why).toBe(false);
    expect(r.exitCode, why).toBe(0);
    expect(r.output, why).toContain(INIT_START_MARK);
    // The q35 host bridge is always there.
    expect(r.output, why).toMatch(/PCI 0000:00:00\.0 8086:29c0 class=060000/);
    expect(r.output, why).toContain('DEVICE none vendor=0x10de');
    expect(r.output, why).toContain('bar-check exit=0');
    expect(parseBarCheckDone(r.output), why).toEqual({ pass: 0, fail: 0 });
    expect(parseChecks(r.output), why).toEqual([]);
    expect(initExitStatus(r.output), why).toBe(0);
  }, BOOT_TEST_TIMEOUT_MS);

  it('bar-check enables, sizes and maps a real BAR (QEMU edu device)', async (ctx) => {
    const q = requireQemu(ctx);
    // edu: 1 MiB 32-bit BAR0; 0x00 reads the id 0x010000ed, 0x04 reads back ~written.
    const cmd = [
      'bar-check --vendor 0x1234 --device 0x11e8',
      '--bar-size 0:1M --bar-flags 0:mem32,noprefetch',
      '--reg-expect 0:0x010000ed --reg-read 0',
      '--reg-write 4:0x12345678 --reg-expect 4:0xedcba987',
      '--reg-expect 0:0xdeadbeef', // must FAIL: shows failures are reported
    ].join(' ');
    const r = await boot(q, `${cmd}\necho "bar-check exit=$?"`, ['-device', 'edu']);
    const why = describeBoot(r);
    console.info(`guest boot (edu): ${r.durationMs} ms`);
    expect(r.exitCode, why).toBe(0);
    expect(r.output, why).toMatch(/DEVICE 0000:00:0[0-9a-f]\.0 1234:11e8/);
    expect(r.output, why).toMatch(/BAR 0 start=0x[0-9a-f]+ end=0x[0-9a-f]+ flags=0x[0-9a-f]+ size=0x100000 mem\b/);
    expect(r.output, why).toMatch(/READ bar0@0x0\/32 = 0x10000ed\b/);
    const checks = parseChecks(r.output).map((c) => `${c.name} ${c.pass ? 'PASS' : 'FAIL'}`);
    expect(checks, why).toEqual([
      'enable PASS',
      'bar0-size PASS',
      'bar0-flags PASS',
      'mmap-bar0 PASS',
      'reg-expect32@0x0 PASS',
      'reg-expect32@0x4 PASS',
      'reg-expect32@0x0 FAIL',
    ]);
    expect(parseBarCheckDone(r.output), why).toEqual({ pass: 6, fail: 1 });
    expect(r.output, why).toContain('bar-check exit=1');
  }, BOOT_TEST_TIMEOUT_MS);

  it('bar-check reads host data and leaves guest writes in a shared 64-bit BAR (ivshmem-plain)', async (ctx) => {
    const q = requireQemu(ctx);
    // Stand-in for the nvgrace BAR2: a 128 MiB host file behind a 64-bit prefetchable BAR.
    // The top quarter plays "padding": the host fills it with 0xff, so the padding reads
    // pass and the padding writes (which this plain memory keeps) are reported as FAIL.
    const MiB = 1024 * 1024;
    const barSize = 128 * MiB;
    const memSize = 96 * MiB;
    const file = `/dev/shm/nvgrace-guest-test-${process.pid}-${randomBytes(4).toString('hex')}`;
    const fd = openSync(file, 'w+', 0o600);
    try {
      ftruncateSync(fd, barSize);
      const head = Buffer.alloc(4 * MiB);
      head.writeUInt32LE(0xdeadbeef, 0x1000);
      head.writeUInt32LE(0x12345678, 0x5ffc);
      fillPattern(head, 1 * MiB, 1 * MiB, 0xabc);
      writeSync(fd, head, 0, head.length, 0);
      const padding = Buffer.alloc(barSize - memSize, 0xff);
      writeSync(fd, padding, 0, padding.length, memSize);
      closeSync(fd);

      const cmd = [
        'bar-check --vendor 0x1af4 --device 0x1110 --mem-bar 2 --mem-size 96M',
        '--bar-size 2:128M --bar-flags 2:mem64,prefetch',
        '--expect 0x1000:0xdeadbeef --expect 0x5ffc:0x12345678',
        '--expect 0x1002:0xdead:16 --expect 0x1003:0xde:8 --expect 0x1000:0xdeadbeef:64',
        '--expect-fill 1M:1M:0xabc',
        '--write 0x2000:0xcafef00d --write 0x5ffffff8:1:64',
        '--write-fill 2M:64K:0x77',
        '--padding-auto',
      ].join(' ');
      const r = await boot(q, cmd, [
        '-object',
        `memory-backend-file,id=shm0,mem-path=${file},size=${barSize},share=on`,
        '-device',
        'ivshmem-plain,memdev=shm0',
      ]);
      const why = describeBoot(r);
      console.info(`guest boot (ivshmem 128 MiB): ${r.durationMs} ms`);
      expect(r.exitCode, why).toBe(0);
      expect(r.output, why).toMatch(/BAR 2 start=0x[0-9a-f]+ end=0x[0-9a-f]+ flags=0x[0-9a-f]+ size=0x8000000 mem mem64 prefetch/);
      const checks = parseChecks(r.output);
      const byName = new Map(checks.map((c) => [c.name, c]));
      for (const name of [
        'enable',
        'bar2-size',
        'bar2-flags',
        'mmap-bar2',
        'expect32@0x1000',
        'expect32@0x5ffc',
        'expect16@0x1002',
        'expect8@0x1003',
        'expect64@0x1000',
        'expect-fill@0x100000+0x100000',
        'write32@0x2000',
        'write-fill@0x200000+0x10000',
      ]) {
        expect(byName.get(name)?.pass, `${name}\n${why}`).toBe(true);
      }
      // Out of range: reported, not crashed.
      expect(byName.get('write64@0x5ffffff8')?.pass, why).toBe(false);
      // --padding-auto: offsets 96M (page-aligned, so no separate next-page one), middle, end - 8.
      const padOffsets = [memSize, memSize + (barSize - memSize) / 2, barSize - 8].map((o) => `0x${o.toString(16)}`);
      for (const off of padOffsets) {
        for (const w of [8, 16, 32, 64]) expect(byName.get(`padding-read${w}@${off}`)?.pass, why).toBe(true);
        expect(byName.get(`padding-write@${off}`)?.pass, why).toBe(false);
      }
      expect(parseBarCheckDone(r.output), why).toEqual({
        pass: checks.filter((c) => c.pass).length,
        fail: checks.filter((c) => !c.pass).length,
      });

      // What the guest left behind in the host file.
      const after = readFileSync(file);
      expect(after.readUInt32LE(0x2000)).toBe(0xcafef00d);
      expect(findPatternMismatch(after, 2 * MiB, 64 * 1024, 0x77)).toBe(-1);
      expect(findPatternMismatch(after, 1 * MiB, 1 * MiB, 0xabc)).toBe(-1);
      // The last write bar-check makes at a padding offset is the 64-bit one.
      expect(after.readBigUInt64LE(memSize)).toBe(0x0123456789abcdefn);
    } finally {
      rmSync(file, { force: true });
    }
  }, BOOT_TEST_TIMEOUT_MS);
});
