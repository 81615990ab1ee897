// Each --layout seen from a Linux guest under QEMU: which BARs exist, their sizes and flags,
// that every memory BAR shows its own slice of the aperture, and that every padding reads ~0.
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { planLayout, type LayoutName, type MemoryBarLayout } from '../../src/device/layout.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { fillPattern, findPatternMismatch, shellQuote } from './bar-check.js';
import { bootGuest, describeBoot, parseChecks } from './boot.js';
import { buildInitramfs } from './initramfs.js';
import { useQemu } from './qemu-fixture.js';
import { vfioUserDevice } from './vfio-user-device.js';

const MiB = 2 ** 20;
const KiB = 1024;
const qemu = useQemu();
const hex = (n: number) => `0x${n.toString(16)}`;

interface Case {
  layout: LayoutName;
  label: string;
  memory: number;
  deviceId: number;
  /** BAR slot -> size in the guest (0: absent). */
  bars: Record<number, number>;
}

const CASES: Case[] = [
  // 96 MiB: BAR2 128 MiB, nothing at BAR4
  { layout: 'bar2', label: '96 MiB', memory: 96 * MiB, deviceId: 0x2342, bars: { 0: 16 * MiB, 1: 0, 2: 128 * MiB, 3: 0, 4: 0, 5: 0 } },
  // 2.75 GiB + 1000 bytes: usemem 1.5 GiB at BAR4, resmem 1.25 GiB + 1000 at BAR2 (partial last page), both BARs 2 GiB
  { layout: 'gh', label: '2.75 GiB + 1000 bytes', memory: 2816 * MiB + 1000, deviceId: 0x2342, bars: { 0: 16 * MiB, 1: 0, 2: 2048 * MiB, 3: 0, 4: 2048 * MiB, 5: 0 } },
  // 3.25 GiB: usemem 2 GiB, but the kernel sizes its BAR from memory - 1 GiB = 2.25 GiB, so BAR4 is 4 GiB
  { layout: 'gh', label: '3.25 GiB, 4 GiB BAR4', memory: 3328 * MiB, deviceId: 0x2342, bars: { 0: 16 * MiB, 1: 0, 2: 2048 * MiB, 3: 0, 4: 4096 * MiB, 5: 0 } },
  // 160 MiB: all at BAR4 (256 MiB); BAR2/3 absent
  { layout: 'gb', label: '160 MiB', memory: 160 * MiB, deviceId: 0x2941, bars: { 0: 16 * MiB, 1: 0, 2: 0, 3: 0, 4: 256 * MiB, 5: 0 } },
];

/** Values a BAR's checks use: distinct per BAR, so a slice shown at the wrong BAR or offset fails. */
function marks(bar: number) {
  return {
    head: (0x10c0ffee + bar * 0x01000000) >>> 0,
    tail: (0x7a110000 + bar) >>> 0,
    guest: (0x60e57000 + bar) >>> 0,
    fillSeed: 0x1000 + bar,
    writeSeed: 0x2000 + bar,
  };
}

const FILL_AT = 1 * MiB;
const FILL_LEN = 256 * KiB;
const WRITE_FILL_AT = 4 * MiB;
const WRITE_FILL_LEN = 64 * KiB;

/** The host writes into the aperture file, at each BAR's slice, what the guest must then see. */
function hostWrites(file: string, parts: MemoryBarLayout[]): void {
  const fd = fs.openSync(file, 'r+');
  try {
    for (const p of parts) {
      const m = marks(p.bar);
      const buf = Buffer.alloc(4);
      buf.writeUInt32LE(m.head);
      fs.writeSync(fd, buf, 0, 4, p.offset + 0x1000);
      buf.writeUInt32LE(m.tail);
      fs.writeSync(fd, buf, 0, 4, p.offset + tailOffset(p));
      const fill = Buffer.alloc(FILL_LEN);
      fillPattern(fill, FILL_AT, FILL_LEN, m.fillSeed, FILL_AT);
      fs.writeSync(fd, fill, 0, FILL_LEN, p.offset + FILL_AT);
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Last 4-byte aligned word of the slice (in the trapped partial page when there is one). */
const tailOffset = (p: MemoryBarLayout) => (p.length - 4) & ~3;

function barCheckRun(c: Case, p: MemoryBarLayout, first: boolean): string[] {
  const m = marks(p.bar);
  const args = ['--device', hex(c.deviceId), '--mem-bar', String(p.bar), '--mem-size', hex(p.length)];
  if (first) {
    for (const [bar, size] of Object.entries(c.bars)) {
      args.push('--bar-size', `${bar}:${hex(size)}`);
      if (size > 0) args.push('--bar-flags', `${bar}:${bar === '0' ? 'mem64,noprefetch' : 'mem64,prefetch'}`);
    }
    args.push('--reg-expect', '0x1498:0xff', '--reg-expect', '0x200bc:0xff');
  }
  args.push(
    '--expect', `0x1000:${hex(m.head)}`,
    '--expect', `${hex(tailOffset(p))}:${hex(m.tail)}`,
    '--expect-fill', `${hex(FILL_AT)}:${hex(FILL_LEN)}:${hex(m.fillSeed)}`,
    '--write', `0x2000:${hex(m.guest)}`,
    '--write-fill', `${hex(WRITE_FILL_AT)}:${hex(WRITE_FILL_LEN)}:${hex(m.writeSeed)}`,
    '--padding-auto',
  );
  return args;
}

/** The console output of the bar-check run for one memory BAR, between the markers the init script prints. */
function runOutput(output: string, bar: number): string {
  const start = output.indexOf(`RUN mem-bar ${bar} BEGIN`);
  const end = output.indexOf(`RUN mem-bar ${bar} END`);
  return start >= 0 && end > start ? output.slice(start, end) : '';
}

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
      const script = parts
        .map((p, i) =>
          [
            `echo "RUN mem-bar ${p.bar} BEGIN"`,
            `bar-check ${shellQuote(barCheckRun(c, p, i === 0))}`,
            `echo "bar-check exit=$?"`,
            `echo "RUN mem-bar ${p.bar} END"`,
          ].join('\n'),
        )
        .join('\n');
      const initrd = await buildInitramfs({ initCommands: script });
      const r = await bootGuest({ qemu: q, initrd, extraArgs: vfioUserDevice(d.socket), timeoutMs: 120_000 });
      const why = describeBoot(r, 120);
      console.info(`guest boot (--layout ${c.layout}): ${r.durationMs} ms`);
      expect(r.timedOut, why).toBe(false);

      // the device, and exactly the BARs the layout has, with their sizes and flags (from sysfs)
      expect(r.output, why).toMatch(new RegExp(`DEVICE 0000:00:[0-9a-f]{2}\\.0 10de:${c.deviceId.toString(16)}`));
      const present = Object.entries(c.bars).filter(([, size]) => size > 0).map(([bar]) => Number(bar));
      const firstRun = runOutput(r.output, parts[0]!.bar);
      const seen = [...firstRun.matchAll(/^BAR (\d) .* size=(0x[0-9a-f]+) (.*)$/gm)].map((m) => [Number(m[1]), Number(m[2]), m[3]!.trim()]);
      expect(seen, why).toEqual(
        present.map((bar) => [bar, c.bars[bar], bar === 0 ? 'mem mem64' : 'mem mem64 prefetch']),
      );

      for (const p of parts) {
        const checks = parseChecks(runOutput(r.output, p.bar));
        const failed = checks.filter((x) => !x.pass).map((x) => `${x.name} ${x.details}`);
        expect(failed, `BAR${p.bar}\n${why}`).toEqual([]);
        const names = checks.map((x) => x.name);
        const must = [
          `mmap-bar${p.bar}`,
          'expect32@0x1000',
          `expect32@${hex(tailOffset(p))}`,
          `expect-fill@${hex(FILL_AT)}+${hex(FILL_LEN)}`,
          'write32@0x2000',
          `write-fill@${hex(WRITE_FILL_AT)}+${hex(WRITE_FILL_LEN)}`,
        ];
        if (p === parts[0]) {
          for (const bar of Object.keys(c.bars)) must.push(`bar${bar}-size`);
          for (const bar of present) must.push(`bar${bar}-flags`);
        }
        for (const name of must) expect(names, `BAR${p.bar}: ${name}\n${why}`).toContain(name);
        // --padding-auto: at least the start, middle and end of the padding, each at 4 widths and a write
        expect(names.filter((n) => n.startsWith('padding-read')).length, `BAR${p.bar}\n${why}`).toBeGreaterThanOrEqual(12);
        expect(names.filter((n) => n.startsWith('padding-write')).length, `BAR${p.bar}\n${why}`).toBeGreaterThanOrEqual(3);
      }
      expect(r.output.match(/bar-check exit=0/g)?.length, why).toBe(parts.length);

      // what the guest wrote landed in each BAR's own slice of the aperture, and the padding writes nowhere
      const fd = fs.openSync(file, 'r');
      try {
        for (const p of parts) {
          const m = marks(p.bar);
          const word = Buffer.alloc(4);
          fs.readSync(fd, word, 0, 4, p.offset + 0x2000);
          expect(word.readUInt32LE(0), `BAR${p.bar} guest write`).toBe(m.guest);
          const fill = Buffer.alloc(WRITE_FILL_LEN);
          fs.readSync(fd, fill, 0, WRITE_FILL_LEN, p.offset + WRITE_FILL_AT);
          expect(findPatternMismatch(fill, WRITE_FILL_AT, WRITE_FILL_LEN, m.writeSeed, WRITE_FILL_AT), `BAR${p.bar} write-fill`).toBe(-1);
        }
      } finally {
        fs.closeSync(fd);
      }
      expect(fs.statSync(file).size).toBe(c.memory);
      for (const bar of d.running.daemon.device.memoryBars) {
        expect(bar.padding.droppedWrites, `BAR${bar.index} padding writes`).toBeGreaterThan(0);
      }
    } finally {
      fs.rmSync(file, { force: true });
    }
  });
});
