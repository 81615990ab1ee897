import { ftruncateSync, readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE, native } from '../../src/native/native.js';
import { uniqueName } from './helpers.js';
import { numaCallsGap } from '../helpers/emulation.js';

const RW = PROT_READ | PROT_WRITE;
const page = native.pageSize();
const ENOENT = 2;

/** The /proc/self/numa_maps lines of the mappings of the memfd `name`. */
function numaMapsLines(name: string): string[] {
  return readFileSync('/proc/self/numa_maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes(name));
}

/** qemu-user has none of these calls (docs/testing.md, emulation gaps). */
const GAP = numaCallsGap();
if (GAP !== null) console.warn(`skipped: NUMA policy calls: ${GAP}`);

describe.skipIf(GAP !== null)('NUMA policy calls', () => {
  const cleanup: (() => void)[] = [];
  afterEach(() => {
    for (const f of cleanup.splice(0).reverse()) f();
  });
  function memfd(size: number): { fd: number; name: string } {
    const name = uniqueName('numa');
    const fd = native.memfdCreate(name, 0);
    ftruncateSync(fd, size);
    cleanup.push(() => native.closeFd(fd));
    return { fd, name };
  }
  function map(fd: number, size: number, flags = MAP_SHARED): ArrayBuffer {
    const ab = native.mmap(fd, size, RW, flags, 0);
    cleanup.push(() => native.munmap(ab));
    return ab;
  }

  it('mbind on a shared memfd mapping binds the file: another mapping faults its pages by that policy', () => {
    const { fd, name } = memfd(8 * page);
    const a = map(fd, 8 * page);
    expect(native.getMempolicy(a, 0).mode).toBe(native.MPOL_DEFAULT);
    native.mbind(a, 0, 8 * page, native.MPOL_BIND, [0], 0);
    expect(native.getMempolicy(a, 0)).toEqual({ mode: native.MPOL_BIND, flags: 0, nodes: [0] });

    // a second mapping, as QEMU's would be: never mbind'ed itself
    const b = map(fd, 8 * page);
    expect(native.getMempolicy(b, 5 * page)).toEqual({ mode: native.MPOL_BIND, flags: 0, nodes: [0] });
    const status = new Int32Array(8);
    native.pageNodes(b, 0, page, status);
    expect([...status]).toEqual(new Array(8).fill(-ENOENT)); // nothing faulted in yet
    new Uint8Array(b).fill(7, 0, 3 * page);
    native.pageNodes(b, 0, page, status);
    expect([...status]).toEqual([0, 0, 0, -ENOENT, -ENOENT, -ENOENT, -ENOENT, -ENOENT]);
    // the kernel's own account of both mappings
    const lines = numaMapsLines(name);
    expect(lines).toHaveLength(2);
    for (const l of lines) expect(l).toMatch(/ bind:0 /);
    expect(lines.some((l) => / N0=3\b/.test(l))).toBe(true);
  });

  it('a policy on a private anonymous mapping stays with that mapping', () => {
    const a = native.mmap(-1, 4 * page, RW, MAP_PRIVATE | MAP_ANONYMOUS, 0);
    cleanup.push(() => native.munmap(a));
    native.mbind(a, page, page, native.MPOL_BIND, [0], 0);
    expect(native.getMempolicy(a, 0).mode).toBe(native.MPOL_DEFAULT);
    expect(native.getMempolicy(a, page).nodes).toEqual([0]);
    expect(native.getMempolicy(a, 2 * page).mode).toBe(native.MPOL_DEFAULT);
  });

  it('populate faults pages in without touching them from JS', () => {
    const { fd } = memfd(4 * page);
    const a = map(fd, 4 * page);
    native.populate(a, page, 2 * page, true);
    const status = new Int32Array(4);
    native.pageNodes(a, 0, page, status);
    expect([...status]).toEqual([-ENOENT, 0, 0, -ENOENT]);
  });

  it('reports errno errors and checks ranges', () => {
    const { fd } = memfd(2 * page);
    const a = map(fd, 2 * page);
    // node 1000 exists nowhere
    expect(() => native.mbind(a, 0, page, native.MPOL_BIND, [1000], 0)).toThrow(expect.objectContaining({ code: 'EINVAL', syscall: 'mbind' }));
    // unaligned start
    expect(() => native.mbind(a, 1, page, native.MPOL_BIND, [0], 0)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => native.mbind(a, 0, 3 * page, native.MPOL_BIND, [0], 0)).toThrow(RangeError);
    expect(() => native.mbind(a, 0, page, native.MPOL_BIND, [1024], 0)).toThrow(RangeError);
    expect(() => native.mbind(a, 0, page, native.MPOL_BIND, 0 as unknown as number[], 0)).toThrow(TypeError);
    expect(() => native.getMempolicy(a, 2 * page)).toThrow(RangeError);
    expect(() => native.pageNodes(a, 0, page, new Int32Array(3))).toThrow(RangeError);
    expect(() => native.pageNodes(a, 0, page, new Uint32Array(2) as unknown as Int32Array)).toThrow(TypeError);
    expect(() => native.populate(a, 0, 4 * page, true)).toThrow(RangeError);
    native.pageNodes(a, 0, page, new Int32Array(0)); // nothing asked, nothing done
  });
});
