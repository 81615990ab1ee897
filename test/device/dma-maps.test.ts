import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DmaMapTable } from '../../src/device/dma-maps.js';
import { DmaMapFlag, Errno } from '../../src/wire/constants.js';
import { DeviceError } from '../../src/device/errors.js';
import { FakeDmaOps } from './fakes.js';

const RW = DmaMapFlag.READ | DmaMapFlag.WRITE;
const PAGE = 4096;

function setup(maxMaps = 16) {
  const ops = new FakeDmaOps();
  const table = new DmaMapTable(ops, maxMaps, PAGE);
  return { ops, table };
}

function errno(fn: () => unknown): number {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(DeviceError);
    return (err as DeviceError).errno;
  }
  expect.fail('expected a DeviceError');
}

describe('DmaMapTable.add / remove', () => {
  it('adds a mapping, owns its fd, and removes it when it matches exactly', () => {
    const { ops, table } = setup();
    const m = table.add(0x10000, 0x2000, RW, 5, 0x1000);
    expect(m).toEqual({ address: 0x10000, size: 0x2000, flags: RW, fd: 5, fdOffset: 0x1000, memory: null, memoryOffset: 0 });
    expect(ops.checks).toEqual([{ fd: 5, offset: 0x1000, size: 0x2000 }]);
    expect(table.count).toBe(1);
    expect(table.heldFds).toBe(1);
    expect(ops.maps).toEqual([]); // nothing is mapped until used

    expect(table.remove(0x10000, 0x2000)).toBe(m);
    expect(ops.closed).toEqual([5]);
    expect(table.count).toBe(0);
    expect(table.heldFds).toBe(0);
  });

  it('accepts maps without an fd', () => {
    const { ops, table } = setup();
    table.add(0x0, 0x1000, DmaMapFlag.READ, null, 0);
    expect(ops.checks).toEqual([]);
    expect(table.heldFds).toBe(0);
    table.remove(0x0, 0x1000);
    expect(ops.closed).toEqual([]);
  });

  it('keeps the maps sorted by address', () => {
    const { table } = setup();
    for (const a of [0x50000, 0x10000, 0x30000, 0x20000, 0x40000]) table.add(a, 0x1000, RW, null, 0);
    expect(table.list().map((m) => m.address)).toEqual([0x10000, 0x20000, 0x30000, 0x40000, 0x50000]);
  });

  it('adjacent maps are fine', () => {
    const { table } = setup();
    table.add(0x10000, 0x2000, RW, null, 0);
    table.add(0x12000, 0x1000, RW, null, 0);
    table.add(0xe000, 0x2000, RW, null, 0);
    expect(table.count).toBe(3);
  });

  it.each([
    ['the same range', 0x10000, 0x2000],
    ['the same start, smaller', 0x10000, 0x1000],
    ['a range starting inside', 0x11000, 0x2000],
    ['a range ending inside', 0xf000, 0x2000],
    ['a range covering it', 0x8000, 0x10000],
    ['a range inside it', 0x11000, 0x1000],
  ])('overlapping %s is EEXIST and leaves the fd with the caller', (_name, address, size) => {
    const { ops, table } = setup();
    table.add(0x10000, 0x2000, RW, 5, 0);
    expect(errno(() => table.add(address, size, RW, 6, 0))).toBe(Errno.EEXIST);
    expect(ops.closed).toEqual([]);
    expect(ops.checks.length).toBe(1);
    expect(table.count).toBe(1);
  });

  it('overlap with the map before and with the map after are both found', () => {
    const { table } = setup();
    table.add(0x10000, 0x2000, RW, null, 0);
    table.add(0x20000, 0x2000, RW, null, 0);
    expect(errno(() => table.add(0x11000, 0x2000, RW, null, 0))).toBe(Errno.EEXIST);
    expect(errno(() => table.add(0x13000, 0xe000, RW, null, 0))).toBe(Errno.EEXIST);
    table.add(0x12000, 0xe000, RW, null, 0); // fills the gap exactly
    expect(table.count).toBe(3);
  });

  it.each([
    ['unaligned address', 0x10001, 0x1000, RW, 5, 0],
    ['unaligned size', 0x10000, 0x1001, RW, 5, 0],
    ['size 0', 0x10000, 0, RW, 5, 0],
    ['unknown flags', 0x10000, 0x1000, 0x4, 5, 0],
    ['high unknown flag', 0x10000, 0x1000, 0x80000001, 5, 0],
    ['unaligned file offset', 0x10000, 0x1000, RW, 5, 0x800],
    ['an offset without an fd', 0x10000, 0x1000, RW, null, 0x1000],
    ['a range past 2^53', 2 ** 53 - PAGE, 2 * PAGE, RW, 5, 0],
  ] as const)('%s is EINVAL and leaves the fd with the caller', (_name, address, size, flags, fd, off) => {
    const { ops, table } = setup();
    expect(errno(() => table.add(address, size, flags, fd, off))).toBe(Errno.EINVAL);
    expect(ops.closed).toEqual([]);
    expect(ops.checks).toEqual([]);
    expect(table.count).toBe(0);
  });

  it('a failing fd check propagates and leaves the fd with the caller', () => {
    const { ops, table } = setup();
    ops.bad.add(9);
    expect(errno(() => table.add(0x10000, 0x1000, RW, 9, 0))).toBe(Errno.EBADF);
    expect(ops.closed).toEqual([]);
    expect(table.count).toBe(0);
  });

  it('refuses more than maxMaps with ENOSPC', () => {
    const { ops, table } = setup(2);
    table.add(0x1000, 0x1000, RW, 1, 0);
    table.add(0x3000, 0x1000, RW, 2, 0);
    expect(errno(() => table.add(0x5000, 0x1000, RW, 3, 0))).toBe(Errno.ENOSPC);
    expect(ops.closed).toEqual([]);
    table.remove(0x1000, 0x1000);
    table.add(0x5000, 0x1000, RW, 3, 0);
    expect(table.count).toBe(2);
  });

  it.each([
    ['an address with no map', 0x40000, 0x1000],
    ['the right address, wrong size', 0x10000, 0x1000],
    ['an address inside a map', 0x11000, 0x1000],
    ['a range covering a map', 0xf000, 0x4000],
  ])('removing %s is ENOENT and changes nothing', (_name, address, size) => {
    const { ops, table } = setup();
    table.add(0x10000, 0x2000, RW, 5, 0);
    expect(errno(() => table.remove(address, size))).toBe(Errno.ENOENT);
    expect(table.count).toBe(1);
    expect(ops.closed).toEqual([]);
  });

  it('clear drops every map, unmapping and closing what it holds', () => {
    const { ops, table } = setup();
    table.add(0x10000, 0x1000, RW, 5, 0);
    table.add(0x20000, 0x1000, RW, null, 0);
    table.add(0x30000, 0x1000, DmaMapFlag.READ, 7, 0);
    table.view(0x30000, 8, false);
    const memory = ops.maps[0]!.memory;
    table.clear();
    expect(table.count).toBe(0);
    expect(table.heldFds).toBe(0);
    expect([...ops.closed].sort()).toEqual([5, 7]);
    expect(ops.unmapped).toEqual([memory]);
    table.clear();
    expect(ops.closed.length).toBe(2);
  });
});

describe('DmaMapTable.find', () => {
  it('finds the map holding a range, and nothing across a map boundary', () => {
    const { table } = setup();
    const a = table.add(0x10000, 0x2000, RW, null, 0);
    const b = table.add(0x12000, 0x1000, RW, null, 0);
    table.add(0x20000, 0x1000, RW, null, 0);
    expect(table.find(0x10000, 1)).toBe(a);
    expect(table.find(0x11ff8, 8)).toBe(a);
    expect(table.find(0x10000, 0x2000)).toBe(a);
    expect(table.find(0x12000, 4)).toBe(b);
    expect(table.find(0x11ffc, 8)).toBeNull(); // crosses from a into b
    expect(table.find(0xfff8, 16)).toBeNull();
    expect(table.find(0x13000, 4)).toBeNull(); // the gap
    expect(table.find(0x0, 4)).toBeNull();
    expect(table.find(0x21000, 1)).toBeNull();
  });
});

describe('DmaMapTable.view', () => {
  it('maps on first use, once, with the map’s writability', () => {
    const { ops, table } = setup();
    table.add(0x10000, 0x2000, RW, 5, 0x3000);
    table.add(0x20000, 0x1000, DmaMapFlag.READ, 6, 0);
    const v = table.view(0x10010, 4, true);
    expect(ops.maps.map(({ fd, offset, size, writable }) => ({ fd, offset, size, writable }))).toEqual([
      { fd: 5, offset: 0x3000, size: 0x2000, writable: true },
    ]);
    v.set([1, 2, 3, 4]);
    const again = table.view(0x10000, 0x20, false);
    expect(ops.maps.length).toBe(1);
    expect([...again.subarray(0x10, 0x14)]).toEqual([1, 2, 3, 4]);
    expect(v.byteOffset).toBe(0x10);
    expect(v.length).toBe(4);

    table.view(0x20000, 4, false);
    expect(ops.maps[1]).toMatchObject({ fd: 6, writable: false });
  });

  it('refuses writes through a read-only map and reads through a write-only map with EACCES', () => {
    const { ops, table } = setup();
    table.add(0x10000, 0x1000, DmaMapFlag.READ, 5, 0);
    table.add(0x20000, 0x1000, DmaMapFlag.WRITE, 6, 0);
    table.add(0x30000, 0x1000, 0, 7, 0);
    expect(errno(() => table.view(0x10000, 4, true))).toBe(Errno.EACCES);
    expect(errno(() => table.view(0x20000, 4, false))).toBe(Errno.EACCES);
    expect(errno(() => table.view(0x30000, 4, false))).toBe(Errno.EACCES);
    expect(errno(() => table.view(0x30000, 4, true))).toBe(Errno.EACCES);
    expect(ops.maps).toEqual([]);
    table.view(0x10000, 4, false);
    table.view(0x20000, 4, true);
    expect(ops.maps.length).toBe(2);
  });

  it('memory not shared by fd, or not mapped at all, is EFAULT', () => {
    const { ops, table } = setup();
    table.add(0x10000, 0x1000, RW, null, 0);
    table.add(0x20000, 0x1000, RW, 5, 0);
    expect(errno(() => table.view(0x10000, 4, false))).toBe(Errno.EFAULT);
    expect(errno(() => table.view(0x40000, 4, false))).toBe(Errno.EFAULT);
    expect(errno(() => table.view(0x20ffc, 8, false))).toBe(Errno.EFAULT);
    expect(ops.maps).toEqual([]);
  });

  it('remove unmaps the memory of a used map before closing its fd', () => {
    const { ops, table } = setup();
    table.add(0x10000, 0x1000, RW, 5, 0);
    table.view(0x10000, 4, false);
    const m = table.remove(0x10000, 0x1000);
    expect(ops.unmapped).toEqual([ops.maps[0]!.memory]);
    expect(ops.closed).toEqual([5]);
    expect(m.memory).toBeNull();
    expect(m.fd).toBeNull();
  });
});

describe('DmaMapTable against a model', () => {
  it('add/remove/find agree with a list of non-overlapping ranges', () => {
    const pages = fc.integer({ min: 0, max: 40 });
    const op = fc.oneof(
      fc.record({ kind: fc.constant('add' as const), page: pages, n: fc.integer({ min: 1, max: 6 }) }),
      fc.record({ kind: fc.constant('remove' as const), page: pages, n: fc.integer({ min: 1, max: 6 }) }),
      fc.record({ kind: fc.constant('find' as const), page: pages, n: fc.integer({ min: 1, max: 6 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
        const { table, ops: files } = setup(8);
        const model: { page: number; n: number; fd: number }[] = [];
        let nextFd = 100;
        const closedExpected: number[] = [];
        for (const o of ops) {
          const address = o.page * PAGE;
          const size = o.n * PAGE;
          if (o.kind === 'add') {
            const fd = nextFd++;
            const overlaps = model.some((m) => o.page < m.page + m.n && m.page < o.page + o.n);
            const full = model.length >= 8;
            if (full) expect(errno(() => table.add(address, size, RW, fd, 0))).toBe(Errno.ENOSPC);
            else if (overlaps) expect(errno(() => table.add(address, size, RW, fd, 0))).toBe(Errno.EEXIST);
            else {
              table.add(address, size, RW, fd, 0);
              model.push({ page: o.page, n: o.n, fd });
            }
          } else if (o.kind === 'remove') {
            const i = model.findIndex((m) => m.page === o.page && m.n === o.n);
            if (i < 0) expect(errno(() => table.remove(address, size))).toBe(Errno.ENOENT);
            else {
              table.remove(address, size);
              closedExpected.push(model[i]!.fd);
              model.splice(i, 1);
            }
          } else {
            const holder = model.find((m) => o.page >= m.page && o.page + o.n <= m.page + m.n);
            const found = table.find(address, size);
            expect(found ? found.fd : null).toBe(holder ? holder.fd : null);
          }
          expect(table.count).toBe(model.length);
        }
        expect(files.closed).toEqual(closedExpected);
        const sorted = [...model].sort((a, b) => a.page - b.page);
        expect(table.list().map((m) => [m.address, m.size, m.fd])).toEqual(sorted.map((m) => [m.page * PAGE, m.n * PAGE, m.fd]));
      }),
      { numRuns: 300 },
    );
  });
});
