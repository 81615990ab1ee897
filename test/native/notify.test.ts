import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isSyscallError, native } from '../../src/native/native.js';
import { isCloexec, isNonblocking, uniqueName } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'nvgrace-notify-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const FIONBIO = 0x5421;
const FIONCLEX = 0x5450;

function errnoOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (isSyscallError(e)) return e.code;
    throw e;
  }
  throw new Error('did not throw');
}

/** Reads one pending datagram, or null when none is queued. */
function receive(fd: number): string | null {
  const buf = new Uint8Array(4096);
  const fds = new Int32Array(2);
  const n = native.recvMsg(fd, buf, 0, buf.length, fds);
  return n < 0 ? null : Buffer.from(buf.subarray(0, n)).toString();
}

describe('notifySend / notifyListen', () => {
  it('delivers each message as one datagram to a filesystem address', () => {
    const path = join(dir, 'notify.sock');
    const fd = native.notifyListen(path);
    try {
      expect(isNonblocking(fd) && isCloexec(fd)).toBe(true);
      native.notifySend(path, 'READY=1\nSTATUS=waiting for a client');
      native.notifySend(path, 'WATCHDOG=1');
      expect(receive(fd)).toBe('READY=1\nSTATUS=waiting for a client');
      expect(receive(fd)).toBe('WATCHDOG=1');
      expect(receive(fd)).toBeNull();
    } finally {
      native.closeFd(fd);
    }
  });

  it('reaches an abstract "@name" address', () => {
    const addr = `@${uniqueName('notify')}`;
    const fd = native.notifyListen(addr);
    try {
      native.notifySend(addr, 'STOPPING=1');
      expect(receive(fd)).toBe('STOPPING=1');
    } finally {
      native.closeFd(fd);
    }
  });

  it('refuses addresses that are not AF_UNIX and reports a missing listener', () => {
    expect(errnoOf(() => native.notifySend('vsock:2:1234', 'READY=1'))).toBe('EAFNOSUPPORT');
    expect(errnoOf(() => native.notifySend('relative/path', 'READY=1'))).toBe('EAFNOSUPPORT');
    expect(errnoOf(() => native.notifySend('@', 'READY=1'))).toBe('EAFNOSUPPORT');
    expect(errnoOf(() => native.notifySend(join(dir, 'nobody-here'), 'READY=1'))).toBe('ENOENT');
    expect(errnoOf(() => native.notifySend(`/${'x'.repeat(200)}`, 'READY=1'))).toBe('ENAMETOOLONG');
  });
});

describe('adoptListener', () => {
  it('takes a blocking, inheritable listening socket and makes it non-blocking and close-on-exec', () => {
    const path = join(dir, 'listen.sock');
    const fd = native.listenUnix(path, 4, 0o600);
    try {
      // what systemd passes: blocking and without FD_CLOEXEC
      native.ioctl(fd, FIONBIO, new Int32Array([0]));
      native.ioctl(fd, FIONCLEX, 0);
      expect(isNonblocking(fd) || isCloexec(fd)).toBe(false);
      expect(native.adoptListener(fd)).toBe(path);
      expect(isNonblocking(fd) && isCloexec(fd)).toBe(true);
      expect(native.accept(fd)).toBe(-1); // non-blocking: nothing pending
    } finally {
      native.closeFd(fd);
    }
  });

  it('names an abstract listener with "@"', () => {
    const name = uniqueName('adopt');
    const fd = native.listenUnix(`\0${name}`, 4, 0o600);
    try {
      expect(native.adoptListener(fd)).toBe(`@${name}`);
    } finally {
      native.closeFd(fd);
    }
  });

  it('refuses what is not a listening AF_UNIX stream socket', () => {
    const [a, b] = native.socketPair();
    const ev = native.eventfd(0, 0);
    const dgram = native.notifyListen(join(dir, 'dgram.sock'));
    try {
      expect(errnoOf(() => native.adoptListener(a))).toBe('EINVAL');
      expect(errnoOf(() => native.adoptListener(dgram))).toBe('EPROTOTYPE');
      expect(errnoOf(() => native.adoptListener(ev))).toBe('ENOTSOCK');
      expect(errnoOf(() => native.adoptListener(100_000))).toBe('EBADF');
    } finally {
      for (const fd of [a, b, ev, dgram]) native.closeFd(fd);
    }
  });
});
