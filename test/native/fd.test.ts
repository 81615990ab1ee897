import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { EFD_NONBLOCK, EFD_SEMAPHORE, isSyscallError, native } from '../../src/native/native.js';
import { isCloexec, isNonblocking } from './helpers.js';

// <asm-generic/ioctls.h>
const FIONREAD = 0x541b;
const FIONCLEX = 0x5450;
const FIOCLEX = 0x5451;

describe('eventfd', () => {
  it('creates a close-on-exec eventfd, non-blocking on request', () => {
    const fd = native.eventfd(0, EFD_NONBLOCK);
    expect(isCloexec(fd)).toBe(true);
    expect(isNonblocking(fd)).toBe(true);
    const blocking = native.eventfd(0, 0);
    expect(isCloexec(blocking)).toBe(true);
    expect(isNonblocking(blocking)).toBe(false);
    native.closeFd(fd);
    native.closeFd(blocking);
  });

  it('adds writes up and resets on read; -1 when empty', () => {
    const fd = native.eventfd(5, EFD_NONBLOCK);
    expect(native.eventfdWrite(fd, 10)).toBe(0);
    expect(native.eventfdWrite(fd, 2 ** 40)).toBe(0);
    expect(native.eventfdRead(fd)).toBe(2 ** 40 + 15);
    expect(native.eventfdRead(fd)).toBe(-1);
    native.closeFd(fd);
  });

  it('counts down by one in semaphore mode', () => {
    const fd = native.eventfd(3, EFD_NONBLOCK | EFD_SEMAPHORE);
    expect([native.eventfdRead(fd), native.eventfdRead(fd), native.eventfdRead(fd)]).toEqual([1, 1, 1]);
    expect(native.eventfdRead(fd)).toBe(-1);
    native.closeFd(fd);
  });

  it('returns -1 instead of blocking when the counter would overflow', () => {
    const fd = native.eventfd(0, EFD_NONBLOCK);
    const big = Number.MAX_SAFE_INTEGER;
    let result = 0;
    let writes = 0;
    // The counter tops out at 2^64 - 2: about 2048 writes of 2^53.
    while (result === 0 && writes < 5000) {
      result = native.eventfdWrite(fd, big);
      writes++;
    }
    expect(result).toBe(-1);
    expect(writes).toBeGreaterThan(2000);
    native.closeFd(fd);
  });

  it('validates values and reports errno errors', () => {
    const fd = native.eventfd(0, EFD_NONBLOCK);
    expect(() => native.eventfdWrite(fd, -1)).toThrow(RangeError);
    expect(() => native.eventfdWrite(fd, 2 ** 53)).toThrow(RangeError);
    expect(() => native.eventfd(-1, 0)).toThrow(RangeError);
    expect(() => native.eventfd(0, 0x7)).toThrow(expect.objectContaining({ code: 'EINVAL', syscall: 'eventfd' }));
    const [a, b] = native.socketPair();
    // A socket is not an eventfd: 8-byte write succeeds, but reading from an empty socket is EAGAIN.
    expect(native.eventfdRead(a)).toBe(-1);
    native.closeFd(a);
    native.closeFd(b);
    native.closeFd(fd);
    expect(() => native.eventfdRead(fd)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'read' }));
  });
});

describe('closeFd', () => {
  it('closes, and throws EBADF for a closed fd', () => {
    const fd = native.eventfd(0, 0);
    native.closeFd(fd);
    let err: unknown;
    try {
      native.closeFd(fd);
    } catch (e) {
      err = e;
    }
    expect(isSyscallError(err, 'EBADF')).toBe(true);
    expect(err).toMatchObject({ code: 'EBADF', errno: 9, syscall: 'close', message: 'close: Bad file descriptor' });
    expect(() => native.closeFd(-1)).toThrow(RangeError);
    expect(() => native.closeFd('3' as unknown as number)).toThrow(TypeError);
  });
});

describe('fdCount', () => {
  it('matches the entries of /proc/self/fd', () => {
    // readdirSync's own directory fd shows up in its listing; fdCount leaves its own out.
    expect(native.fdCount()).toBe(readdirSync('/proc/self/fd').length - 1);
  });

  it('follows opens and closes', () => {
    const before = native.fdCount();
    const fds = [native.eventfd(0, 0), native.eventfd(0, 0), ...native.socketPair()];
    expect(native.fdCount()).toBe(before + 4);
    for (const fd of fds) native.closeFd(fd);
    expect(native.fdCount()).toBe(before);
  });
});

describe('ioctl', () => {
  it('passes a buffer by pointer and returns the result (FIONREAD)', () => {
    const [a, b] = native.socketPair();
    native.sendMsg(a, new Uint8Array(5), 0, 5, null);
    const avail = new Int32Array(1);
    expect(native.ioctl(b, FIONREAD, avail)).toBe(0);
    expect(avail[0]).toBe(5);
    // Any view works; the pointer is the view's first byte.
    const dv = new DataView(new ArrayBuffer(12), 4, 4);
    native.ioctl(b, FIONREAD, dv);
    expect(dv.getInt32(0, true)).toBe(5);
    native.closeFd(a);
    native.closeFd(b);
  });

  it('passes an integer argument (FIONCLEX / FIOCLEX)', () => {
    const fd = native.eventfd(0, 0);
    expect(native.ioctl(fd, FIONCLEX, 0)).toBe(0);
    expect(isCloexec(fd)).toBe(false);
    expect(native.ioctl(fd, FIOCLEX, 0)).toBe(0);
    expect(isCloexec(fd)).toBe(true);
    native.closeFd(fd);
  });

  it('throws errno errors', () => {
    const fd = native.eventfd(0, 0);
    expect(() => native.ioctl(fd, FIONREAD, new Int32Array(1))).toThrow(
      expect.objectContaining({ code: 'ENOTTY', syscall: 'ioctl', errno: 25 }),
    );
    expect(() => native.ioctl(fd, FIONREAD, 'x' as unknown as number)).toThrow(TypeError);
    expect(() => native.ioctl(fd, 2 ** 32, 0)).toThrow(RangeError);
    native.closeFd(fd);
  });
});
