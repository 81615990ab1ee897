import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { zeroThroughMapping } from '../../src/backends/scrub-primitive.js';
import { native } from '../../src/native/native.js';
import { mappingsOf } from '../native/helpers.js';

/** The host page (qemu-user's QEMU_PAGESIZE included): the smallest granule a mapping can have. */
const PAGE = native.pageSize();

describe('zeroThroughMapping', () => {
  const fds: number[] = [];
  afterEach(() => {
    for (const fd of fds.splice(0)) native.closeFd(fd);
  });

  it('zeroes exactly [offset, offset + length), unaligned ends included, window by window', () => {
    const size = 1024 * 1024;
    const fd = native.memfdCreate('zero-test', 0);
    fds.push(fd);
    fs.ftruncateSync(fd, size);
    const ones = Buffer.alloc(size, 0xa5);
    fs.writeSync(fd, ones, 0, size, 0);
    const offset = 3 * PAGE + 123;
    const length = 5 * 64 * 1024 + 77; // several 64 KiB windows and a ragged end
    zeroThroughMapping(fd, offset, length, PAGE, 64 * 1024);
    const back = Buffer.alloc(size);
    fs.readSync(fd, back, 0, size, 0);
    expect(back.subarray(0, offset).every((b) => b === 0xa5)).toBe(true);
    expect(back.subarray(offset, offset + length).every((b) => b === 0)).toBe(true);
    expect(back.subarray(offset + length).every((b) => b === 0xa5)).toBe(true);
    expect(mappingsOf('zero-test')).toBe(0); // every window was unmapped
  });

  it('maps whole granules: a window is rounded down to them, never below one', () => {
    const fd = native.memfdCreate('zero-granule', 0);
    fds.push(fd);
    fs.ftruncateSync(fd, 256 * 1024);
    fs.writeSync(fd, Buffer.alloc(256 * 1024, 0x11), 0, 256 * 1024, 0);
    // 64 KiB granules, a 100 KiB window (so 64 KiB steps), an unaligned range inside them
    zeroThroughMapping(fd, 70 * 1024 + 5, 120 * 1024, 64 * 1024, 100 * 1024);
    const back = Buffer.alloc(256 * 1024);
    fs.readSync(fd, back, 0, back.length, 0);
    const zeroFrom = 70 * 1024 + 5;
    const zeroTo = zeroFrom + 120 * 1024;
    expect(back.subarray(0, zeroFrom).every((b) => b === 0x11)).toBe(true);
    expect(back.subarray(zeroFrom, zeroTo).every((b) => b === 0)).toBe(true);
    expect(back.subarray(zeroTo).every((b) => b === 0x11)).toBe(true);
  });

  it('refuses a granularity that is not whole pages, and an empty window', () => {
    const fd = native.memfdCreate('zero-bad', 0);
    fds.push(fd);
    fs.ftruncateSync(fd, 2 * PAGE);
    expect(() => zeroThroughMapping(fd, 0, 2 * PAGE, 1000)).toThrow(RangeError);
    expect(() => zeroThroughMapping(fd, 0, 2 * PAGE, 0)).toThrow(RangeError);
    expect(() => zeroThroughMapping(fd, 0, 2 * PAGE, PAGE, 0)).toThrow(RangeError);
  });
});
