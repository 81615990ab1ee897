// Host side of bar-check.c: builds the static guest binary (cached by source hash), and
// helpers to drive it.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BAR_CHECK_SOURCE, guestCacheDir } from './paths.js';
import type { GuestArch } from './qemu-env.js';

const CFLAGS = ['-static', '-O2', '-Wall', '-Wextra'];

/** The compiler for a guest architecture: $CC (x86_64) / $CC_AARCH64, else gcc / the cross gcc. */
function compilerFor(arch: GuestArch): string {
  const [name, fallback] = arch === 'aarch64' ? ['CC_AARCH64', 'aarch64-linux-gnu-gcc'] : ['CC', 'gcc'];
  const fromEnv = process.env[name];
  return fromEnv !== undefined && fromEnv !== '' ? fromEnv : fallback;
}

/**
 * Path of the static bar-check binary for the guest architecture, built with
 * `gcc -static -O2` (aarch64: `aarch64-linux-gnu-gcc`, from gcc-aarch64-linux-gnu, which
 * provision-qemu.sh installs) on first use and kept at
 * <cache>/bar-check/bar-check[-aarch64]-<hash of source and flags>.
 */
export async function buildBarCheck(arch: GuestArch = 'x86_64'): Promise<string> {
  const source = readFileSync(BAR_CHECK_SOURCE);
  const hash = createHash('sha256').update(source).update(CFLAGS.join(' ')).digest('hex');
  const dir = join(guestCacheDir(), 'bar-check');
  const out = join(dir, `bar-check${arch === 'x86_64' ? '' : `-${arch}`}-${hash.slice(0, 16)}`);
  if (existsSync(out)) return out;
  mkdirSync(dir, { recursive: true });
  const tmp = `${out}.tmp.${process.pid}`;
  const cc = compilerFor(arch);
  await new Promise<void>((resolve, reject) => {
    execFile(cc, [...CFLAGS, '-o', tmp, BAR_CHECK_SOURCE], (err, _stdout, stderr) => {
      if (err === null) resolve();
      else {
        rmSync(tmp, { force: true });
        reject(
          new Error(
            `building bar-check failed (${cc} ${CFLAGS.join(' ')}; needs ${arch === 'x86_64' ? 'gcc and libc6-dev' : 'gcc-aarch64-linux-gnu and libc6-dev-arm64-cross'}):\n${stderr}`,
          ),
        );
      }
    });
  });
  renameSync(tmp, out);
  return out;
}

/** The 32-bit word bar-check's --expect-fill/--write-fill expect at BAR offset `offset`. */
export function patternWord(offset: number, seed: number): number {
  return (Math.imul(Math.floor(offset / 4) >>> 0, 0x9e3779b1) + seed) >>> 0;
}

/** Fills buf (which holds the BAR from byte `base` on) with the pattern over [off, off+len). */
export function fillPattern(buf: Buffer, off: number, len: number, seed: number, base = 0): void {
  for (let o = off; o < off + len; o += 4) buf.writeUInt32LE(patternWord(o, seed), o - base);
}

/** First offset in [off, off+len) where buf differs from the pattern, or -1. */
export function findPatternMismatch(
  buf: Buffer,
  off: number,
  len: number,
  seed: number,
  base = 0,
): number {
  for (let o = off; o < off + len; o += 4) {
    if (buf.readUInt32LE(o - base) !== patternWord(o, seed)) return o;
  }
  return -1;
}

const hex = (n: number | bigint): string => `0x${n.toString(16)}`;

export interface NvgraceBarCheckOptions {
  /** Bytes of host memory at the start of BAR2 (the aperture size). */
  memSize: number;
  /** BAR2 size (memSize rounded up to a power of two). */
  bar2Size: number;
  /** BAR0 size; default 16 MiB. */
  bar0Size?: number;
  /** 32-bit values the host wrote before boot: [offset, value]. */
  expect?: Array<[number, number]>;
  /** 32-bit values for the guest to write (the host checks them afterwards). */
  write?: Array<[number, number]>;
  /** Check the padding at bar-check's automatic offsets (default true). */
  padding?: boolean;
  /** Extra padding offsets (8-aligned, in [memSize, bar2Size - 8]). */
  paddingOffsets?: number[];
  /** Anything else to append. */
  extra?: string[];
}

/** bar-check arguments for the nvgrace device: sizes, flags, host values, writes, padding. */
export function nvgraceBarCheckArgs(o: NvgraceBarCheckOptions): string[] {
  const args = [
    '--vendor',
    '0x10de',
    '--device',
    '0x2342',
    '--mem-size',
    hex(o.memSize),
    '--bar-size',
    `0:${hex(o.bar0Size ?? 16 * 1024 * 1024)}`,
    '--bar-flags',
    '0:mem64,noprefetch',
    '--bar-size',
    `2:${hex(o.bar2Size)}`,
    '--bar-flags',
    '2:mem64,prefetch',
  ];
  for (const [off, v] of o.expect ?? []) args.push('--expect', `${hex(off)}:${hex(v >>> 0)}`);
  for (const [off, v] of o.write ?? []) args.push('--write', `${hex(off)}:${hex(v >>> 0)}`);
  if (o.padding ?? true) args.push('--padding-auto');
  for (const off of o.paddingOffsets ?? []) args.push('--padding', hex(off));
  args.push(...(o.extra ?? []));
  return args;
}

/** Quotes arguments for the guest's busybox sh. */
export function shellQuote(args: string[]): string {
  return args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}
