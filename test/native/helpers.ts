import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { setImmediate as immediate } from 'node:timers/promises';
import { HANG_GUARD_MS } from '../helpers/patience.js';

const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;

/** The open-file flags of one of our fds, from /proc/self/fdinfo. */
export function fdFlags(fd: number): number {
  const info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  const m = /^flags:\s+([0-7]+)$/m.exec(info);
  if (m?.[1] === undefined) throw new Error(`no flags in fdinfo of ${fd}`);
  return parseInt(m[1], 8);
}

export const isCloexec = (fd: number): boolean => (fdFlags(fd) & O_CLOEXEC) !== 0;
export const isNonblocking = (fd: number): boolean => (fdFlags(fd) & O_NONBLOCK) !== 0;

/** Resident set size of this process in bytes. */
export function vmRss(): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  if (m?.[1] === undefined) throw new Error('no VmRSS');
  return Number(m[1]) * 1024;
}

/** Number of lines of /proc/self/maps mentioning `needle` (e.g. a memfd name). */
export function mappingsOf(needle: string): number {
  return readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes(needle)).length;
}

setFlagsFromString('--expose-gc');
const gcFn = runInNewContext('gc') as () => void;

/**
 * Full GC, then a few event loop turns: Node runs N-API finalizers (and the
 * free callbacks of external buffers) from setImmediate.
 */
export async function collectGarbage(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    gcFn();
    await immediate();
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves when `cond` holds, polling every few ms; rejects after `ms`. */
export async function waitFor(cond: () => boolean, ms = HANG_GUARD_MS): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting for condition');
    await sleep(2);
  }
}

let seq = 0;
/** A unique name for this process (socket paths, memfd names). */
export const uniqueName = (tag: string): string => `nvgrace-${tag}-${process.pid}-${seq++}`;
