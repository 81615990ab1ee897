import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { native } from '../../src/native/native.js';
import { isNonblocking } from './helpers.js';

const MAX = 0xfffffffffffffffen;

function fill(fd: number, value: bigint): void {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(value);
  fs.writeSync(fd, b);
}

describe('eventfdSignal and eventfdTryRead', () => {
  it('adds 1 to a non-blocking eventfd, and reports a full counter as -1', () => {
    const fd = native.eventfd(0, native.EFD_NONBLOCK);
    expect(native.eventfdSignal(fd)).toBe(0);
    expect(native.eventfdSignal(fd)).toBe(0);
    expect(native.eventfdRead(fd)).toBe(2);
    fill(fd, MAX);
    expect(native.eventfdSignal(fd)).toBe(-1);
    native.closeFd(fd);
  });

  it('returns from a blocking eventfd whose counter is full, leaving its flags alone', () => {
    const fd = native.eventfd(0, 0);
    fill(fd, MAX - 1n);
    expect(native.eventfdSignal(fd)).toBe(0); // reaches the maximum
    expect(native.eventfdSignal(fd)).toBe(-1); // would block: cut short by the timer
    expect(native.eventfdSignal(fd)).toBe(-1);
    expect(isNonblocking(fd)).toBe(false);
    // the timer signal is disarmed afterwards: a later blocking read is not interrupted
    expect(native.eventfdRead(fd)).toBe(Number(MAX));
    native.closeFd(fd);
  });

  it('throws for a closed fd', () => {
    const fd = native.eventfd(0, 0);
    native.closeFd(fd);
    expect(() => native.eventfdSignal(fd)).toThrow(/EBADF|bad file/i);
  });

  it('eventfdTryRead: reads and resets, and returns -1 from an empty blocking eventfd instead of waiting', () => {
    const fd = native.eventfd(0, 0); // blocking
    expect(native.eventfdTryRead(fd)).toBe(-1);
    native.eventfdWrite(fd, 3);
    expect(native.eventfdTryRead(fd)).toBe(3);
    expect(native.eventfdTryRead(fd)).toBe(-1);
    expect(isNonblocking(fd)).toBe(false);
    native.closeFd(fd);
  });
});
