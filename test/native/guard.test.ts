// The SIGBUS guard (binding/guard.c): copies and fills through a mapping whose
// file was truncated under it return EFAULT instead of ending the process, and
// every SIGBUS that is not a guarded access goes where it went before.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../src/native/native.js';
import { mmapPastEofGap } from '../helpers/emulation.js';
import { LONG_TEST_MS } from '../helpers/patience.js';

const page = native.pageSize();
const RW = native.PROT_READ | native.PROT_WRITE;
const EFAULT = 14;
const SIGBUS_BIT = 1n << BigInt(7 - 1);
const ADDON = fileURLToPath(new URL('../../build/Release/nvgrace_native.node', import.meta.url));

/** SIGBUS in this thread's blocked mask (/proc/thread-self/status). */
function sigbusBlocked(): boolean {
  const m = /^SigBlk:\s+([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/thread-self/status', 'utf8'));
  return (BigInt(`0x${m![1]}`) & SIGBUS_BIT) !== 0n;
}

/** Runs a CommonJS script in a fresh node with `n` bound to the addon. */
function runNode(body: string, opts: { stdin?: string } = {}) {
  const script = `const n = require(${JSON.stringify(ADDON)}); const fs = require('fs');\n${body}`;
  return spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: LONG_TEST_MS, input: opts.stdin });
}

describe('copyMemory and fillMemory under the SIGBUS guard', () => {
  const cleanup: (() => void)[] = [];
  afterEach(() => {
    for (const f of cleanup.splice(0).reverse()) f();
  });
  /** A memfd of `pages` pages mapped whole; the memfd has no seals, so it can be truncated. */
  function mapped(pages: number) {
    const fd = native.memfdCreate('guard-test', 0);
    fs.ftruncateSync(fd, pages * page);
    const ab = native.mmap(fd, pages * page, RW, native.MAP_SHARED, 0);
    cleanup.push(() => native.closeFd(fd));
    cleanup.push(() => native.munmap(ab));
    return { fd, ab, u: new Uint8Array(ab) };
  }

  it('copies between any two buffers and returns 0', () => {
    const { ab, u } = mapped(2);
    const src = Buffer.from('0123456789abcdef');
    expect(native.copyMemory(ab, page - 3, src, 2, 8)).toBe(0); // across a page boundary
    expect(Buffer.from(u.subarray(page - 3, page + 5)).toString()).toBe('23456789');
    const dst = Buffer.alloc(12, 0x2e);
    expect(native.copyMemory(dst.subarray(2), 1, u, page - 3, 8)).toBe(0); // a view's byteOffset counts
    expect(dst.toString()).toBe('...23456789.');
    // overlapping ranges of one buffer: memmove
    const b = Buffer.from('abcdefgh');
    expect(native.copyMemory(b, 2, b, 0, 6)).toBe(0);
    expect(b.toString()).toBe('ababcdef');
    expect(native.copyMemory(b, 8, src, 0, 0)).toBe(0);
  });

  it('checks bounds and arguments', () => {
    const a = new ArrayBuffer(64);
    const b = new Uint8Array(64);
    expect(() => native.copyMemory(a, 60, b, 0, 5)).toThrow(RangeError);
    expect(() => native.copyMemory(a, 0, b, 60, 5)).toThrow(RangeError);
    expect(() => native.copyMemory(a, 0, b, 0, 65)).toThrow(RangeError);
    expect(() => native.copyMemory(a, -1, b, 0, 1)).toThrow(RangeError);
    expect(() => native.copyMemory(a, 0, b, 0, 1.5)).toThrow(RangeError);
    expect(() => native.copyMemory(a, 0, 'x' as unknown as ArrayBuffer, 0, 1)).toThrow(TypeError);
  });

  it('returns EFAULT for pages the file lost, copies and fills what is still there, and leaves SIGBUS unblocked', () => {
    const { fd, ab, u } = mapped(4);
    u.fill(0x11);
    // pages 2 and 3 are gone; the rest of page 1 reads as zero (where an emulation gap
    // leaves the rest of the last page unmapped, the cut falls on a page instead)
    fs.ftruncateSync(fd, mmapPastEofGap() === null ? page + 100 : 2 * page);
    const dst = Buffer.alloc(16);
    expect(native.copyMemory(dst, 0, ab, 2 * page + 8, 4)).toBe(EFAULT);
    expect(sigbusBlocked()).toBe(false);
    expect(native.copyMemory(ab, 3 * page, dst, 0, 16)).toBe(EFAULT);
    expect(native.fillMemory(ab, 0, 4 * page, 0x22)).toBe(EFAULT);
    // the fill stopped at the first lost page, having written what came before it
    expect(u[0]).toBe(0x22);
    expect(u[2 * page - 1]).toBe(0x22);
    // a copy that starts in memory and runs into a lost page fails as a whole
    expect(native.copyMemory(dst, 0, ab, 2 * page - 8, 16)).toBe(EFAULT);
    // again and again: each fault is caught, none is left pending or blocked
    for (let i = 0; i < 100; i++) expect(native.copyMemory(dst, 0, ab, 3 * page, 4)).toBe(EFAULT);
    expect(sigbusBlocked()).toBe(false);
    expect(native.copyMemory(dst, 0, ab, 8, 4)).toBe(0);
    expect([...dst.subarray(0, 4)]).toEqual([0x22, 0x22, 0x22, 0x22]);
    // grown back: the pages are there again (zeros)
    fs.ftruncateSync(fd, 4 * page);
    expect(native.copyMemory(dst, 0, ab, 3 * page, 4)).toBe(0);
    expect([...dst.subarray(0, 4)]).toEqual([0, 0, 0, 0]);
    expect(native.fillMemory(ab, 0, 4 * page, 0x33)).toBe(0);
    expect(u[4 * page - 1]).toBe(0x33);
  });

  it('guards each thread on its own (a worker thread)', async () => {
    const { Worker } = await import('node:worker_threads');
    const code = `
const { parentPort } = require('worker_threads');
const n = require(${JSON.stringify(ADDON)}); const fs = require('fs');
const fd = n.memfdCreate('guard-worker', 0); fs.ftruncateSync(fd, 2 * ${page});
const ab = n.mmap(fd, 2 * ${page}, 3, n.MAP_SHARED, 0);
fs.ftruncateSync(fd, 0);
parentPort.postMessage([n.copyMemory(Buffer.alloc(4), 0, ab, ${page}, 4), n.fillMemory(ab, 0, 8, 1)]);`;
    const w = new Worker(code, { eval: true });
    const result = await new Promise((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
    await w.terminate();
    expect(result).toEqual([EFAULT, EFAULT]);
  });

  it('leaves a fault outside any guarded access fatal, as SIGBUS with its default action', () => {
    const r = runNode(`
const fd = n.memfdCreate('guard-fatal', 0); fs.ftruncateSync(fd, 2 * ${page});
const ab = n.mmap(fd, 2 * ${page}, 3, n.MAP_SHARED, 0);
fs.ftruncateSync(fd, 0);
console.log('guarded', n.copyMemory(Buffer.alloc(4), 0, ab, 0, 4));
console.log('plain', new Uint8Array(ab)[0]);`);
    expect(r.stdout).toBe('guarded 14\n');
    expect(r.signal).toBe('SIGBUS');
  });

  it('passes a SIGBUS that is not a fault on to the handler that was there before', () => {
    // process.on installs libuv's handler before the addon loads, so ours chains to it
    const script = `
process.on('SIGBUS', () => { console.log('handled by the previous handler'); process.exit(0); });
const n = require(${JSON.stringify(ADDON)});
process.kill(process.pid, 'SIGBUS');
setTimeout(() => process.exit(3), 5000);`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: LONG_TEST_MS });
    expect(r.stdout).toBe('handled by the previous handler\n');
    expect(r.status).toBe(0);
    // and with no handler before ours, a sent SIGBUS ends the process as it would have
    const plain = runNode(`process.kill(process.pid, 'SIGBUS'); setTimeout(() => process.exit(3), 5000);`);
    expect(plain.signal).toBe('SIGBUS');
  });
});
