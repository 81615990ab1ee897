import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { WindowedMemory } from '../../src/backends/windowed-memory.js';
import { native } from '../../src/native/native.js';
import { mappingsOf } from '../native/helpers.js';

const W = 64 * 1024;

describe('WindowedMemory', () => {
  const fds: number[] = [];
  afterEach(() => {
    for (const fd of fds.splice(0)) native.closeFd(fd);
  });

  function memfd(name: string, size: number): number {
    const fd = native.memfdCreate(name, 0);
    fds.push(fd);
    fs.ftruncateSync(fd, size);
    return fd;
  }

  it('reads and writes the same bytes as the fd, across window edges and from a file offset', () => {
    const base = 4096;
    const size = 3 * W + 1000; // three windows and a partial one
    const fd = memfd('wm-agree', base + size + 4096);
    const mem = new WindowedMemory(fd, base, size, W, 2);
    try {
      const pattern = Buffer.alloc(size);
      for (let i = 0; i < size; i++) pattern[i] = (i * 7 + 3) & 0xff;
      // written through the fd, read through the windows, in pieces that straddle edges
      fs.writeSync(fd, pattern, 0, size, base);
      for (const [at, n] of [[0, 4], [W - 2, 4], [W - 1, 2 * W + 2], [3 * W + 990, 10], [5, 100]] as const) {
        const out = Buffer.alloc(n);
        mem.read(at, out, 0, n);
        expect(out.equals(pattern.subarray(at, at + n))).toBe(true);
      }
      // written through the windows, seen through the fd
      const data = Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x01, 0x02]);
      mem.write(2 * W - 3, data, 0, 6);
      mem.write(size - 1, data, 5, 1);
      const back = Buffer.alloc(6);
      fs.readSync(fd, back, 0, 6, base + 2 * W - 3);
      expect(back.equals(data)).toBe(true);
      fs.readSync(fd, back, 0, 1, base + size - 1);
      expect(back[0]).toBe(0x02);
      // bytes outside [base, base + size) are untouched
      fs.readSync(fd, back, 0, 1, base - 1);
      expect(back[0]).toBe(0);
      // a large access takes the set() path
      const big = Buffer.alloc(W + 77);
      mem.read(W, big, 0, big.length);
      const expected = Buffer.from(pattern.subarray(W, W + big.length));
      expected.set(data.subarray(0, 6), W - 3);
      expect(big.equals(expected)).toBe(true);
    } finally {
      mem.unmapAll();
    }
  });

  it('keeps at most maxWindows mapped, dropping the least recently used, and unmaps them all', () => {
    const fd = memfd('wm-evict', 8 * W);
    const mem = new WindowedMemory(fd, 0, 8 * W, W, 3);
    const one = Buffer.alloc(1);
    for (let w = 0; w < 8; w++) {
      mem.write(w * W + 1, Buffer.from([w + 1]), 0, 1);
      expect(mem.mappedWindows).toBe(Math.min(w + 1, 3));
    }
    expect(mappingsOf('wm-evict')).toBe(3);
    // windows 5, 6, 7 are mapped; touching 5 makes 6 the oldest, so reading 0 drops 6
    mem.read(5 * W, one, 0, 1);
    mem.read(1, one, 0, 1);
    expect(one[0]).toBe(1);
    expect(mappingsOf('wm-evict')).toBe(3);
    for (let w = 0; w < 8; w++) {
      mem.read(w * W + 1, one, 0, 1);
      expect(one[0]).toBe(w + 1);
    }
    mem.unmapAll();
    expect(mem.mappedWindows).toBe(0);
    expect(mappingsOf('wm-evict')).toBe(0);
  });
});
