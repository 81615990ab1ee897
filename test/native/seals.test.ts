import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { isSyscallError, native } from '../../src/native/native.js';

describe('addSeals', () => {
  it('stops a holder of a sealed memfd from shrinking or growing it, not from writing or punching', () => {
    const fd = native.memfdCreate('seal-test', native.MFD_ALLOW_SEALING);
    try {
      fs.ftruncateSync(fd, 64 * 1024);
      fs.writeSync(fd, Buffer.from([1, 2, 3]), 0, 3, 100);
      native.addSeals(fd, native.F_SEAL_SHRINK | native.F_SEAL_GROW | native.F_SEAL_SEAL);
      expect(() => fs.ftruncateSync(fd, 4096)).toThrow(expect.objectContaining({ code: 'EPERM' }));
      expect(() => fs.ftruncateSync(fd, 128 * 1024)).toThrow(expect.objectContaining({ code: 'EPERM' }));
      // a peer that got the fd over the socket has its own file description: same file, same seals
      const other = fs.openSync(`/proc/self/fd/${fd}`, 'r+');
      expect(() => fs.ftruncateSync(other, 0)).toThrow(expect.objectContaining({ code: 'EPERM' }));
      fs.closeSync(other);
      expect(fs.fstatSync(fd).size).toBe(64 * 1024);
      // further seals are refused once F_SEAL_SEAL is set
      expect(() => native.addSeals(fd, native.F_SEAL_SHRINK)).toThrow(expect.objectContaining({ code: 'EPERM', syscall: 'fcntl' }));
      fs.writeSync(fd, Buffer.from([9]), 0, 1, 101);
      native.fallocatePunchHole(fd, 0, 4096);
      const b = Buffer.alloc(3);
      fs.readSync(fd, b, 0, 3, 100);
      expect([...b]).toEqual([0, 0, 0]);
    } finally {
      native.closeFd(fd);
    }
  });

  it('fails with EPERM on a memfd made without MFD_ALLOW_SEALING and EINVAL on a pipe', () => {
    const fd = native.memfdCreate('no-seal', 0);
    try {
      expect(() => native.addSeals(fd, native.F_SEAL_SHRINK)).toThrow(expect.objectContaining({ code: 'EPERM' }));
    } finally {
      native.closeFd(fd);
    }
    const [a, b] = native.socketPair();
    try {
      let err: unknown;
      try {
        native.addSeals(a, native.F_SEAL_SHRINK);
      } catch (e) {
        err = e;
      }
      expect(isSyscallError(err, 'EINVAL')).toBe(true);
    } finally {
      native.closeFd(a);
      native.closeFd(b);
    }
  });

  it('validates its arguments', () => {
    expect(() => native.addSeals(-1, native.F_SEAL_SHRINK)).toThrow(RangeError);
    expect(() => native.addSeals('3' as unknown as number, 1)).toThrow(TypeError);
    expect(() => native.addSeals(0, -1)).toThrow(RangeError);
  });
});
