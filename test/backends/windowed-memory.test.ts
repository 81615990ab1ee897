import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { forEachWindow, WindowedMemory } from '../../src/backends/windowed-memory.js';
import { native } from '../../src/native/native.js';
import { Errno } from '../../src/wire/constants.js';
import { DeviceError } from '../../src/device/errors.js';
import { LONG_TEST_MS } from '../helpers/patience.js';
import { SCAVENGE_COUNTER } from '../helpers/scavenges.js';

const page = native.pageSize();
const DIST = fileURLToPath(new URL('../../dist/backends/windowed-memory.js', import.meta.url));

function mappingsOf(name: string): number {
  return fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes(`/memfd:${name}`)).length;
}

describe('WindowedMemory', () => {
  const fds: number[] = [];
  afterEach(() => {
    for (const fd of fds.splice(0)) native.closeFd(fd);
  });
  function memfd(name: string, size: number): number {
    const fd = native.memfdCreate(name, 0);
    fs.ftruncateSync(fd, size);
    fds.push(fd);
    return fd;
  }

  it('reads and writes across windows, mapping each one only when first used', () => {
    const fd = memfd('win-a', 16 * page);
    // memory: 5 pages and a bit from page 2 on, in windows of 2 pages
    const size = 5 * page + 100;
    const mem = new WindowedMemory(fd, 2 * page, size, page, { windowSize: 2 * page });
    expect(mem.windowSize).toBe(2 * page);
    expect(mem.mappedWindows).toBe(0);

    const src = Uint8Array.from({ length: 3 * page }, (_, i) => (i * 7) & 0xff);
    mem.write(page - 10, src, 0, src.length); // spans windows 0 and 1
    expect(mem.mappedWindows).toBe(2);
    const file = Buffer.alloc(src.length);
    fs.readSync(fd, file, 0, file.length, 2 * page + page - 10);
    expect(file.equals(Buffer.from(src))).toBe(true);

    const back = new Uint8Array(3 * page + 4);
    mem.read(page - 10, back, 4, 3 * page);
    expect(Buffer.from(back.subarray(4)).equals(Buffer.from(src))).toBe(true);
    // register-sized accesses across a window boundary
    mem.write(2 * page - 3, Uint8Array.from([1, 2, 3, 4, 5, 6]), 0, 6);
    const six = new Uint8Array(6);
    mem.read(2 * page - 3, six, 0, 6);
    expect([...six]).toEqual([1, 2, 3, 4, 5, 6]);
    // the last window (2) stops at the memory end, rounded up to the granularity
    mem.write(size - 1, Uint8Array.from([9]), 0, 1);
    expect(mem.mappedWindows).toBe(3);
    const one = Buffer.alloc(1);
    fs.readSync(fd, one, 0, 1, 2 * page + size - 1);
    expect(one[0]).toBe(9);
    expect(mappingsOf('win-a')).toBeGreaterThan(0);

    mem.close();
    expect(mem.mappedWindows).toBe(0);
    expect(mappingsOf('win-a')).toBe(0);
  });

  it('zeroes a range across windows through the kept mappings, and again after the memory changed', () => {
    const fd = memfd('win-fill', 16 * page);
    const size = 7 * page + 100;
    const mem = new WindowedMemory(fd, 2 * page, size, page, { windowSize: 2 * page });
    fs.writeSync(fd, Buffer.alloc(16 * page, 0xee), 0, 16 * page, 0);
    const from = page + 5; // ragged at both ends, over windows 0..3
    const to = size - 3;
    mem.zero(from, to - from);
    const windows = mem.mappedWindows;
    expect(windows).toBe(4);
    const whole = Buffer.alloc(16 * page);
    const check = () => {
      fs.readSync(fd, whole, 0, whole.length, 0);
      for (let i = 0; i < whole.length; i++) {
        const inside = i >= 2 * page + from && i < 2 * page + to;
        if (whole[i] !== (inside ? 0 : 0xee)) throw new Error(`byte ${i}: ${whole[i]}`);
      }
    };
    check();
    // a tenant writes the memory through its own mapping; the next pass reuses the windows
    fs.writeSync(fd, Buffer.alloc(16 * page, 0xee), 0, 16 * page, 0);
    mem.zero(from, to - from);
    expect(mem.mappedWindows).toBe(windows);
    check();
    mem.close();
  });

  it('guarded: an access to bytes the file lost is an EFAULT error, and the memory still there keeps working', () => {
    const fd = memfd('win-trunc', 8 * page);
    const mem = new WindowedMemory(fd, 0, 8 * page, page, { windowSize: 4 * page, guarded: true });
    const four = Uint8Array.from([1, 2, 3, 4]);
    const back = new Uint8Array(8);
    mem.write(6 * page, four, 0, 4);
    mem.read(6 * page, back, 0, 4);
    expect([...back.subarray(0, 4)]).toEqual([1, 2, 3, 4]);
    mem.zero(0, 8 * page);
    fs.ftruncateSync(fd, 2 * page); // what a client holding the fd can do
    const efault = expect.objectContaining({ errno: Errno.EFAULT, message: expect.stringMatching(new RegExp(`^read \\[0x${(6 * page).toString(16)}, \\+4\\): the memory is gone`)) });
    expect(() => mem.read(6 * page, back, 0, 4)).toThrow(efault);
    expect(() => mem.read(6 * page, back, 0, 4)).toThrow(DeviceError);
    expect(() => mem.write(3 * page, four, 0, 4)).toThrow(expect.objectContaining({ errno: Errno.EFAULT }));
    expect(() => mem.write(2 * page - 2, four, 0, 4)).toThrow(expect.objectContaining({ errno: Errno.EFAULT })); // runs into a lost page
    expect(() => mem.zero(0, 8 * page)).toThrow(expect.objectContaining({ errno: Errno.EFAULT, message: expect.stringMatching(/^zeroing /) }));
    mem.write(page, four, 0, 4);
    mem.read(page, back, 0, 4);
    expect([...back.subarray(0, 4)]).toEqual([1, 2, 3, 4]);
    // grown back (the daemon restores the size when the client leaves): new pages, zeros
    fs.ftruncateSync(fd, 8 * page);
    mem.forgetPopulated();
    mem.zero(0, 8 * page);
    mem.read(6 * page, back, 0, 8);
    expect([...back]).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    mem.close();
  });

  it('refuses an offset off the granularity, and rounds the window to it', () => {
    const fd = memfd('win-b', 16 * page);
    expect(() => new WindowedMemory(fd, page, page, 2 * page)).toThrow(/not a multiple/);
    expect(new WindowedMemory(fd, 0, page, 2 * page, { windowSize: 5 * page }).windowSize).toBe(4 * page);
    expect(new WindowedMemory(fd, 0, page, 4 * page, { windowSize: page }).windowSize).toBe(4 * page);
  });

  it('forEachWindow maps a range piece by piece and unmaps each piece', () => {
    const fd = memfd('win-c', 10 * page);
    const seen: [number, number][] = [];
    forEachWindow(fd, 2 * page, 9 * page, page, (map, at) => {
      seen.push([at, map.byteLength]);
      expect(mappingsOf('win-c')).toBe(1);
      new Uint8Array(map)[0] = at / page;
    }, 3 * page);
    expect(seen).toEqual([[2 * page, 3 * page], [5 * page, 3 * page], [8 * page, page]]);
    expect(mappingsOf('win-c')).toBe(0);
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, 5 * page);
    expect(b[0]).toBe(5);
  });

  it('serves register-sized accesses without allocating, guarded or not', () => {
    // scavenges while 200k trapped 4- and 8-byte accesses run in a fresh process; a control loop allocates
    const gcs = (body: string, guarded = false) => {
      const script = `
const { WindowedMemory } = await import(${JSON.stringify(DIST)});
const { native } = await import(${JSON.stringify(DIST.replace('backends/windowed-memory.js', 'native/native.js'))});
const fd = native.memfdCreate('win-gc', 0);
(await import('node:fs')).ftruncateSync(fd, 1 << 20);
const mem = new WindowedMemory(fd, 0, 1 << 20, native.pageSize(), { windowSize: 1 << 18, guarded: ${guarded} });
const buf = new Uint8Array(64);
let sink = 0;
function loop(n) { for (let i = 0; i < n; i++) { const off = (i * 4104) % ((1 << 20) - 64); ${body} } }
loop(20000);
${SCAVENGE_COUNTER}
loop(200000);
setTimeout(() => { obs.disconnect(); console.log(gcs); }, 100);
`;
      const r = spawnSync(process.execPath, ['--max-semi-space-size=1', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: LONG_TEST_MS });
      expect(r.status, r.stderr).toBe(0);
      return Number(r.stdout.trim());
    };
    expect(gcs('mem.write(off, buf, 0, 4); mem.read(off, buf, 8, 8); sink += buf[8];')).toBeLessThanOrEqual(1);
    // the same through the SIGBUS guard, and a larger copy that way
    expect(gcs('mem.write(off, buf, 0, 4); mem.read(off, buf, 8, 8); mem.read(off, buf, 0, 64); sink += buf[8];', true)).toBeLessThanOrEqual(1);
    expect(gcs('mem.read(off, buf, 0, 32); sink += buf.slice(0, 4)[0];')).toBeGreaterThan(1);
  });
});
