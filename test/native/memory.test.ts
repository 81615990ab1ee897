import { ftruncateSync, fstatSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  MAP_ANONYMOUS,
  MAP_NORESERVE,
  MAP_PRIVATE,
  MAP_SHARED,
  MAX_MAPPING_LENGTH,
  MFD_ALLOW_SEALING,
  MFD_HUGETLB,
  MFD_HUGE_1GB,
  MFD_HUGE_2MB,
  PROT_READ,
  PROT_WRITE,
  native,
} from '../../src/native/native.js';
import { collectGarbage, isCloexec, mappingsOf, uniqueName, vmRss } from './helpers.js';
import { noreserveRssGap, userModeEmulation } from '../helpers/emulation.js';

const RW = PROT_READ | PROT_WRITE;
const page = native.pageSize();

function memfd(size: number, tag = 'mem'): { fd: number; name: string } {
  const name = uniqueName(tag);
  const fd = native.memfdCreate(name, 0);
  ftruncateSync(fd, size);
  return { fd, name };
}

describe('memfdCreate', () => {
  it('creates a close-on-exec memfd and exports the flag constants', () => {
    const fd = native.memfdCreate('flags', MFD_ALLOW_SEALING);
    expect(isCloexec(fd)).toBe(true);
    expect(fstatSync(fd).size).toBe(0);
    native.closeFd(fd);
    expect(MFD_ALLOW_SEALING).toBe(2);
    expect(MFD_HUGETLB).toBe(4);
    expect(MFD_HUGE_2MB).toBe(21 << 26);
    expect(MFD_HUGE_1GB).toBe(30 << 26);
  });

  it('throws errno errors for bad names and flags', () => {
    expect(() => native.memfdCreate('x'.repeat(300), 0)).toThrow(
      expect.objectContaining({ code: 'EINVAL', syscall: 'memfd_create', errno: 22 }),
    );
    expect(() => native.memfdCreate('bad-flags', 0x10000)).toThrow(
      expect.objectContaining({ code: 'EINVAL', syscall: 'memfd_create' }),
    );
  });

  it('leaks no fds over 1000 create/close cycles', () => {
    const before = native.fdCount();
    for (let i = 0; i < 1000; i++) native.closeFd(native.memfdCreate('cycle', 0));
    expect(native.fdCount()).toBe(before);
  });
});

describe('mmap / munmap', () => {
  it('maps a memfd shared: two mappings see the same bytes, a private one does not', () => {
    const { fd } = memfd(2 * page);
    const a = native.mmap(fd, 2 * page, RW, MAP_SHARED, 0);
    const b = native.mmap(fd, page, RW, MAP_SHARED, page); // second page only
    const p = native.mmap(fd, 2 * page, RW, MAP_PRIVATE, 0);
    expect(a.byteLength).toBe(2 * page);
    expect(b.byteLength).toBe(page);
    new Uint8Array(a).set([9, 8, 7], page);
    expect(Array.from(new Uint8Array(b, 0, 3))).toEqual([9, 8, 7]);
    new Uint8Array(p)[page] = 1; // copy-on-write
    expect(new Uint8Array(a)[page]).toBe(9);
    for (const ab of [a, b, p]) native.munmap(ab);
    native.closeFd(fd);
  });

  it('munmap detaches: byteLength 0, views empty, second munmap EINVAL', () => {
    const { fd, name } = memfd(page);
    const ab = native.mmap(fd, page, RW, MAP_SHARED, 0);
    const view = new Uint8Array(ab);
    view[0] = 1;
    expect(mappingsOf(name)).toBe(1);
    native.munmap(ab);
    expect(mappingsOf(name)).toBe(0);
    expect(ab.byteLength).toBe(0);
    expect(view.length).toBe(0);
    expect(view[0]).toBeUndefined(); // no access to the freed pages
    expect(() => native.munmap(ab)).toThrow(expect.objectContaining({ code: 'EINVAL', syscall: 'munmap' }));
    native.closeFd(fd);
  });

  it('refuses to munmap what mmap did not return', () => {
    expect(() => native.munmap(new ArrayBuffer(page))).toThrow(
      expect.objectContaining({ code: 'EINVAL', errno: 22, syscall: 'munmap' }),
    );
    const { fd } = memfd(page);
    const ab = native.mmap(fd, page, RW, MAP_SHARED, 0);
    expect(() => native.munmap(new Uint8Array(ab) as unknown as ArrayBuffer)).toThrow(TypeError);
    expect(ab.byteLength).toBe(page); // untouched by the failed calls
    native.munmap(ab);
    native.closeFd(fd);
  });

  it('throws errno errors: length 0, bad fd, unaligned offset', () => {
    const { fd } = memfd(page);
    expect(() => native.mmap(fd, 0, RW, MAP_SHARED, 0)).toThrow(
      expect.objectContaining({ code: 'EINVAL', syscall: 'mmap' }),
    );
    expect(() => native.mmap(99_999, page, RW, MAP_SHARED, 0)).toThrow(
      expect.objectContaining({ code: 'EBADF', syscall: 'mmap' }),
    );
    expect(() => native.mmap(fd, page, RW, MAP_SHARED, 1)).toThrow(
      expect.objectContaining({ code: 'EINVAL', syscall: 'mmap' }),
    );
    native.closeFd(fd);
  });

  it('maps anonymous memory with fd -1', () => {
    const ab = native.mmap(-1, 4 * page, RW, MAP_PRIVATE | MAP_ANONYMOUS, 0);
    const u = new Uint8Array(ab);
    expect(u.every((x) => x === 0)).toBe(true);
    u.fill(3);
    native.munmap(ab);
  });

  it('survives address reuse across 1000 map/unmap cycles without leaking mappings', () => {
    const { fd, name } = memfd(16 * page);
    for (let i = 0; i < 1000; i++) {
      const ab = native.mmap(fd, 16 * page, RW, MAP_SHARED, 0);
      new Uint8Array(ab)[i % (16 * page)] = i & 0xff;
      native.munmap(ab);
    }
    expect(mappingsOf(name)).toBe(0);
    native.closeFd(fd);
  });

  it('unmaps mappings that are only garbage collected', async () => {
    const { fd, name } = memfd(page, 'gc');
    (() => {
      for (let i = 0; i < 20; i++) new Uint8Array(native.mmap(fd, page, RW, MAP_SHARED, 0))[0] = i;
    })();
    // Mappings of offset 0 at different addresses never merge: one line each. qemu-user
    // writes /proc/self/maps itself and lists neighbours as one (an emulation gap).
    if (userModeEmulation() === null) expect(mappingsOf(name)).toBe(20);
    else expect(mappingsOf(name)).toBeGreaterThan(0);
    // a full collection need not find every dead buffer at once (under emulation it did
    // not): collect until none is left, a bounded number of times
    for (let i = 0; i < 20 && mappingsOf(name) > 0; i++) await collectGarbage();
    expect(mappingsOf(name)).toBe(0);
    native.closeFd(fd);
  });

  it('never unmaps twice: explicit munmap then GC leaves a new mapping at that address alone', async () => {
    const { fd, name } = memfd(page, 'reuse');
    (() => {
      for (let i = 0; i < 50; i++) native.munmap(native.mmap(fd, page, RW, MAP_SHARED, 0));
    })();
    // Likely reuses the addresses the 50 dead ArrayBuffers pointed at.
    const keep = native.mmap(fd, page, RW, MAP_SHARED, 0);
    new Uint8Array(keep)[7] = 77;
    await collectGarbage(); // finalizers of the 50 run now
    expect(mappingsOf(name)).toBe(1);
    expect(new Uint8Array(keep)[7]).toBe(77);
    native.munmap(keep);
    native.closeFd(fd);
  });

  // qemu-user 7.2 (the 16 KiB run) spends resident memory on every page mapped, touched or not
  it.skipIf(noreserveRssGap() !== null)('maps all of a 1 TiB memfd (MAP_NORESERVE) without RSS growth', () => {
    const TiB = 2 ** 40;
    const { fd, name } = memfd(TiB, 'tib');
    const rss0 = vmRss();

    // One ArrayBuffer cannot be that large on Node 20: a clear error, nothing left mapped.
    if (TiB > MAX_MAPPING_LENGTH) {
      expect(() => native.mmap(fd, TiB, RW, MAP_SHARED | MAP_NORESERVE, 0)).toThrow(
        expect.objectContaining({ name: 'RangeError', code: 'ERR_BUFFER_TOO_LARGE' }),
      );
      expect(mappingsOf(name)).toBe(0);
    }

    // So map it as windows of the largest size an ArrayBuffer allows.
    const window = Math.min(TiB, MAX_MAPPING_LENGTH);
    const windows: ArrayBuffer[] = [];
    for (let off = 0; off < TiB; off += window) {
      windows.push(native.mmap(fd, window, RW, MAP_SHARED | MAP_NORESERVE, off));
    }
    expect(windows.length).toBe(TiB / window);
    for (const ab of windows) expect(ab.byteLength).toBe(window);

    // Touch the very last byte and a byte in the middle.
    const last = windows[windows.length - 1]!;
    new Uint8Array(last, window - 1, 1)[0] = 0xab;
    new Uint8Array(windows[windows.length >> 1]!, 12345, 1)[0] = 0xcd;
    expect(vmRss() - rss0).toBeLessThan(50 * 1024 * 1024);

    for (const ab of windows) native.munmap(ab);
    expect(mappingsOf(name)).toBe(0);

    // The bytes went to the memfd: map the last page again to see them.
    const tail = native.mmap(fd, page, PROT_READ, MAP_SHARED, TiB - page);
    expect(new Uint8Array(tail)[page - 1]).toBe(0xab);
    native.munmap(tail);
    native.closeFd(fd);
  });
});

describe('fillMemory', () => {
  it('fills exactly the requested range of a mapping', () => {
    const { fd } = memfd(page);
    const ab = native.mmap(fd, page, RW, MAP_SHARED, 0);
    const u = new Uint8Array(ab);
    native.fillMemory(ab, 100, 200, 0xa5);
    expect(u[99]).toBe(0);
    expect(u.subarray(100, 300).every((x) => x === 0xa5)).toBe(true);
    expect(u[300]).toBe(0);
    native.fillMemory(ab, 0, page, 0);
    expect(u.every((x) => x === 0)).toBe(true);
    native.fillMemory(ab, page, 0, 1); // empty range at the end is fine
    native.munmap(ab);
    native.closeFd(fd);
  });

  it('honours the byteOffset of a view', () => {
    const u = new Uint8Array(16);
    native.fillMemory(u.subarray(4, 12), 2, 4, 0xff);
    expect(Array.from(u)).toEqual([0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0, 0, 0]);
  });

  it('checks bounds and arguments', () => {
    const ab = new ArrayBuffer(64);
    expect(() => native.fillMemory(ab, 0, 65, 0)).toThrow(RangeError);
    expect(() => native.fillMemory(ab, 60, 5, 0)).toThrow(RangeError);
    expect(() => native.fillMemory(ab, 65, 0, 0)).toThrow(RangeError);
    expect(() => native.fillMemory(ab, -1, 1, 0)).toThrow(RangeError);
    expect(() => native.fillMemory(ab, 0, 2 ** 53, 0)).toThrow(RangeError);
    expect(() => native.fillMemory(ab, 0, 1.5, 0)).toThrow(RangeError);
    expect(() => native.fillMemory(ab, 0, 1, 256)).toThrow(RangeError);
    expect(() => native.fillMemory(ab, 0, 1, -1)).toThrow(RangeError);
    expect(() => native.fillMemory(ab, Number.NaN, 1, 0)).toThrow(RangeError);
    expect(() => native.fillMemory('x' as unknown as ArrayBuffer, 0, 1, 0)).toThrow(TypeError);
    expect(new Uint8Array(ab).every((x) => x === 0)).toBe(true); // nothing written
  });

  it('refuses a detached (unmapped) buffer', () => {
    const ab = native.mmap(-1, page, RW, MAP_PRIVATE | MAP_ANONYMOUS, 0);
    native.munmap(ab);
    expect(() => native.fillMemory(ab, 0, 1, 0)).toThrow(RangeError);
  });
});

describe('fallocatePunchHole', () => {
  it('zeroes the punched range and keeps the size', () => {
    const { fd } = memfd(3 * page);
    const ab = native.mmap(fd, 3 * page, RW, MAP_SHARED, 0);
    const u = new Uint8Array(ab);
    u.fill(0xff);
    native.fallocatePunchHole(fd, page, page);
    expect(u.subarray(0, page).every((x) => x === 0xff)).toBe(true);
    expect(u.subarray(page, 2 * page).every((x) => x === 0)).toBe(true);
    expect(u.subarray(2 * page).every((x) => x === 0xff)).toBe(true);
    expect(fstatSync(fd).size).toBe(3 * page);
    native.munmap(ab);
    native.closeFd(fd);
  });

  it('throws errno errors', () => {
    const [a, b] = native.socketPair();
    expect(() => native.fallocatePunchHole(a, 0, page)).toThrow(
      expect.objectContaining({ syscall: 'fallocate', code: 'ENODEV' }),
    );
    native.closeFd(a);
    native.closeFd(b);
  });
});

describe('pageSize', () => {
  it('is a power of two of at least 4 KiB', () => {
    expect(page).toBeGreaterThanOrEqual(4096);
    expect(page & (page - 1)).toBe(0);
  });
});
