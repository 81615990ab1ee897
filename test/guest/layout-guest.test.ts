// Each --layout seen from a Linux guest under QEMU: which BARs exist, their sizes and flags,
// that every memory BAR shows its own slice of the aperture, and that every padding reads ~0.
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { planLayout } from '../../src/device/layout.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { bootGuest, describeBoot } from './boot.js';
import { buildInitramfs } from './initramfs.js';
import { expectGuestSaw, expectHostSaw, hostWrites, layoutScript, type LayoutCase } from './layout-checks.js';
import { useQemu } from './qemu-fixture.js';
import { vfioUserDevice } from './vfio-user-device.js';

const MiB = 2 ** 20;
const qemu = useQemu();

const CASES: LayoutCase[] = [
  // 96 MiB: BAR2 128 MiB, nothing at BAR4
  { layout: 'bar2', label: '96 MiB', memory: 96 * MiB, deviceId: 0x2342, bars: { 0: 16 * MiB, 1: 0, 2: 128 * MiB, 3: 0, 4: 0, 5: 0 } },
  // 2.75 GiB + 1000 bytes: usemem 1.5 GiB at BAR4, resmem 1.25 GiB + 1000 at BAR2 (partial last page), both BARs 2 GiB
  { layout: 'gh', label: '2.75 GiB + 1000 bytes', memory: 2816 * MiB + 1000, deviceId: 0x2342, bars: { 0: 16 * MiB, 1: 0, 2: 2048 * MiB, 3: 0, 4: 2048 * MiB, 5: 0 } },
  // 3.25 GiB: usemem 2 GiB, but the kernel sizes its BAR from memory - 1 GiB = 2.25 GiB, so BAR4 is 4 GiB
  { layout: 'gh', label: '3.25 GiB, 4 GiB BAR4', memory: 3328 * MiB, deviceId: 0x2342, bars: { 0: 16 * MiB, 1: 0, 2: 2048 * MiB, 3: 0, 4: 4096 * MiB, 5: 0 } },
  // 160 MiB: all at BAR4 (256 MiB); BAR2/3 absent
  { layout: 'gb', label: '160 MiB', memory: 160 * MiB, deviceId: 0x2941, bars: { 0: 16 * MiB, 1: 0, 2: 0, 3: 0, 4: 256 * MiB, 5: 0 } },
];

describe('layouts seen from a QEMU guest', () => {
  let d: TestDaemon | null = null;
  afterEach(() => {
    d?.stop();
    d = null;
  });

  it.for(CASES)('--layout $layout, $label', { timeout: 300_000 }, async (c, ctx) => {
    const q = qemu.require(ctx);
    const parts = planLayout(c.layout, c.memory).bars;
    const file = `/dev/shm/nvgrace-layout-${c.layout}-${process.pid}-${Date.now()}`;
    d = startTestDaemon({ layout: c.layout, apertureSize: c.memory, aperturePath: file });
    try {
      hostWrites(file, parts);
      const initrd = await buildInitramfs({ initCommands: layoutScript(c, parts, c.layout) });
      const r = await bootGuest({ qemu: q, initrd, extraArgs: vfioUserDevice(d.socket), timeoutMs: 120_000 });
      const why = describeBoot(r, 120);
      console.info(`guest boot (--layout ${c.layout}): ${r.durationMs} ms`);
      expect(r.timedOut, why).toBe(false);
      expectGuestSaw(r.output, c, parts, c.layout, why);
      expectHostSaw(file, c, parts, d);
    } finally {
      fs.rmSync(file, { force: true });
    }
  });
});
