// Huge pages for tests: grows the kernel's pool by what a test needs and gives
// them back afterwards. Test files run in parallel processes, so every change
// of nr_hugepages is an increment or decrement made under a lock file.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'vitest';

const LOCK = path.join(os.tmpdir(), 'nvgrace-test-hugepages.lock');

export function poolKnob(pageSize: number): string {
  return `/sys/kernel/mm/hugepages/hugepages-${pageSize / 1024}kB/nr_hugepages`;
}

function readCount(file: string): number {
  return Number(fs.readFileSync(file, 'utf8').trim());
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function withLock<T>(fn: () => T | Promise<T>): Promise<T> {
  const start = Date.now();
  for (;;) {
    try {
      fs.writeFileSync(LOCK, String(process.pid), { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = Number(fs.readFileSync(LOCK, 'utf8') || '0');
      if (owner > 0 && !pidAlive(owner)) fs.rmSync(LOCK, { force: true }); // left by a crashed run
      if (Date.now() - start > 60_000) throw new Error(`huge page lock ${LOCK} held by pid ${owner} for a minute`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(LOCK, { force: true });
  }
}

export interface HugePageReservation {
  pageSize: number;
  count: number;
  release(): Promise<void>;
}

/**
 * Adds `count` pages of `pageSize` to the pool (needs root). Throws when the
 * kernel cannot find them; returns a skip reason when not root outside CI.
 */
export async function reserveHugePages(pageSize: number, count: number): Promise<HugePageReservation | string> {
  const knob = poolKnob(pageSize);
  if (process.getuid?.() !== 0) {
    const reason = `not root: cannot add ${count} huge pages of ${pageSize / 1024} kB to the pool (${knob})`;
    if (process.env.CI === 'true') throw new Error(`${reason}; CI must run the huge page tests as root`);
    return reason;
  }
  await withLock(() => {
    const before = readCount(knob);
    fs.writeFileSync(knob, String(before + count));
    const after = readCount(knob);
    if (after < before + count) {
      fs.writeFileSync(knob, String(before));
      throw new Error(`the kernel found only ${after - before} of ${count} free ${pageSize / 1024} kB huge pages for the test pool (${knob})`);
    }
  });
  let released = false;
  return {
    pageSize,
    count,
    async release() {
      if (released) return;
      released = true;
      await withLock(async () => {
        // pages still in use (a mapping not yet gone) keep the pool from shrinking: retry a while
        const target = Math.max(0, readCount(knob) - count);
        for (let i = 0; i < 100; i++) {
          fs.writeFileSync(knob, String(target));
          if (readCount(knob) <= target) return;
          await new Promise((r) => setTimeout(r, 50));
        }
        console.warn(`huge page pool ${knob} stays at ${readCount(knob)} (wanted ${target}): pages still in use`);
      });
    },
  };
}

/** In a test: the reservation, or a loud skip (outside CI only; reserveHugePages already threw in CI). */
export function requireReservation(r: HugePageReservation | string | null, ctx: TestContext): HugePageReservation {
  if (r === null) throw new Error('huge pages were not reserved (beforeAll did not run?)');
  if (typeof r === 'string') {
    console.warn(`\n!!! SKIPPING huge page test: ${r}\n`);
    ctx.skip(`SKIPPED: ${r}`);
  }
  return r as HugePageReservation;
}

/** HugePages_* counters of /proc/meminfo (pages of the default size). */
export function meminfoHugePages(): { total: number; free: number; rsvd: number } {
  const text = fs.readFileSync('/proc/meminfo', 'utf8');
  const get = (k: string) => Number(new RegExp(`^HugePages_${k}:\\s+(\\d+)`, 'm').exec(text)?.[1] ?? NaN);
  return { total: get('Total'), free: get('Free'), rsvd: get('Rsvd') };
}

/** Free and reserved pages of one size, from sysfs. */
export function poolCounts(pageSize: number): { total: number; free: number; resv: number } {
  const dir = path.dirname(poolKnob(pageSize));
  return {
    total: readCount(path.join(dir, 'nr_hugepages')),
    free: readCount(path.join(dir, 'free_hugepages')),
    resv: readCount(path.join(dir, 'resv_hugepages')),
  };
}

/** A fresh hugetlbfs mount of `pageSize` pages in a temporary directory (root only). */
export function mountHugetlbfs(pageSize: number): { dir: string; unmount(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-hugetlbfs-'));
  execFileSync('mount', ['-t', 'hugetlbfs', '-o', `pagesize=${pageSize / 1024}K,mode=0700`, 'nvgrace-test', dir]);
  return {
    dir,
    unmount() {
      execFileSync('umount', ['-l', dir]);
      fs.rmdirSync(dir);
    },
  };
}
