// What a guest must see of one device in each --layout, shared by the x86 and arm64 guest
// tests: the host writes marks into the aperture file before boot, bar-check in the guest
// checks the BARs (sizes, flags), the marks at each BAR's slice, guest writes and the
// padding, and the host then finds the guest's writes in the right slice.
import fs from 'node:fs';
import { expect } from 'vitest';
import type { LayoutName, MemoryBarLayout } from '../../src/device/layout.js';
import type { TestDaemon } from '../helpers/daemon.js';
import { fillPattern, findPatternMismatch, shellQuote } from './bar-check.js';
import { parseChecks } from './boot.js';

const MiB = 2 ** 20;
const KiB = 1024;
export const hex = (n: number): string => `0x${n.toString(16)}`;

export interface LayoutCase {
  layout: LayoutName;
  label: string;
  memory: number;
  deviceId: number;
  /** BAR slot -> size in the guest (0: absent). */
  bars: Record<number, number>;
  /**
   * bar-check maps the memory BARs this many bytes at a time (--window) instead of whole:
   * a whole 128 GiB BAR costs a TCG guest tens of seconds of page-table fill and teardown.
   */
  window?: number;
}

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

/** Last 4-byte aligned word of the slice (in the trapped partial page when there is one). */
export const tailOffset = (p: MemoryBarLayout): number => p.length - 4 - ((p.length - 4) % 4);

/** The host writes into the aperture file, at each BAR's slice, what the guest must then see. */
export function hostWrites(file: string, parts: MemoryBarLayout[]): void {
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

function barCheckRun(c: LayoutCase, p: MemoryBarLayout, first: boolean): string[] {
  const m = marks(p.bar);
  const args = ['--device', hex(c.deviceId), '--mem-bar', String(p.bar), '--mem-size', hex(p.length)];
  if (c.window !== undefined) args.push('--window', hex(c.window));
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

const marker = (tag: string, bar: number, what: 'BEGIN' | 'END'): string => `RUN ${tag} mem-bar ${bar} ${what}`;

/** Guest shell commands: one bar-check run per memory BAR of the device, between markers. */
export function layoutScript(c: LayoutCase, parts: MemoryBarLayout[], tag: string): string {
  return parts
    .map((p, i) =>
      [
        `echo "${marker(tag, p.bar, 'BEGIN')}"`,
        `bar-check ${shellQuote(barCheckRun(c, p, i === 0))}`,
        `echo "bar-check exit=$?"`,
        `echo "${marker(tag, p.bar, 'END')}"`,
      ].join('\n'),
    )
    .join('\n');
}

/** The console output of the bar-check run for one memory BAR, between the markers. */
export function runOutput(output: string, tag: string, bar: number): string {
  const start = output.indexOf(marker(tag, bar, 'BEGIN'));
  const end = output.indexOf(marker(tag, bar, 'END'));
  return start >= 0 && end > start ? output.slice(start, end) : '';
}

export interface SeenBar {
  bar: number;
  start: bigint;
  size: number;
  flags: string;
}

/** The BAR lines bar-check printed in the device's first run. */
export function seenBars(output: string, tag: string, parts: MemoryBarLayout[]): SeenBar[] {
  const first = runOutput(output, tag, parts[0]!.bar);
  return [...first.matchAll(/^BAR (\d) start=(0x[0-9a-f]+) .* size=(0x[0-9a-f]+) (.*)$/gm)].map((m) => ({
    bar: Number(m[1]),
    start: BigInt(m[2]!),
    size: Number(m[3]),
    flags: m[4]!.trim(),
  }));
}

/** Everything the guest reported for the device: BARs, sizes, flags, marks, writes, padding. */
export function expectGuestSaw(output: string, c: LayoutCase, parts: MemoryBarLayout[], tag: string, why: string): void {
  expect(output, why).toMatch(new RegExp(`DEVICE [0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\\.0 10de:${c.deviceId.toString(16)}`));
  const present = Object.entries(c.bars).filter(([, size]) => size > 0).map(([bar]) => Number(bar));
  expect(seenBars(output, tag, parts).map((b) => [b.bar, b.size, b.flags]), `${tag}\n${why}`).toEqual(
    present.map((bar) => [bar, c.bars[bar], bar === 0 ? 'mem mem64' : 'mem mem64 prefetch']),
  );
  for (const p of parts) {
    const run = runOutput(output, tag, p.bar);
    const checks = parseChecks(run);
    const failed = checks.filter((x) => !x.pass).map((x) => `${x.name} ${x.details}`);
    expect(failed, `${tag} BAR${p.bar}\n${why}`).toEqual([]);
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
    for (const name of must) expect(names, `${tag} BAR${p.bar}: ${name}\n${why}`).toContain(name);
    // --padding-auto: at least the start, middle and end of the padding, each at 4 widths and a write
    expect(names.filter((n) => n.startsWith('padding-read')).length, `${tag} BAR${p.bar}\n${why}`).toBeGreaterThanOrEqual(12);
    expect(names.filter((n) => n.startsWith('padding-write')).length, `${tag} BAR${p.bar}\n${why}`).toBeGreaterThanOrEqual(3);
    expect(run, `${tag} BAR${p.bar}\n${why}`).toContain('bar-check exit=0');
  }
}

/** What the guest wrote landed in each BAR's own slice of the aperture, and the padding wrote nowhere. */
export function expectHostSaw(file: string, c: LayoutCase, parts: MemoryBarLayout[], d: TestDaemon): void {
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
}
