import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ApertureError, openAperture, type Aperture } from '../../src/backends/aperture.js';
import { checkNumaNode, nodeFreeBytes, nodesWithMemory } from '../../src/backends/numa.js';
import { parseNodeList } from '../../src/backends/sysfs.js';
import { native } from '../../src/native/native.js';
import { poolCounts, requireReservation, reserveHugePages, type HugePageReservation } from '../helpers/hugepages.js';
import { fakeSysfs } from '../helpers/fake-sysfs.js';
import { numaCallsGap } from '../helpers/emulation.js';

const MiB = 1024 * 1024;
const page = native.pageSize();
const RW = native.PROT_READ | native.PROT_WRITE;

/** numa_maps lines of this process's mappings of the aperture memfd. */
function apertureNumaMaps(): string[] {
  return fs
    .readFileSync('/proc/self/numa_maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes('/memfd:nvgrace-aperture'));
}

/** Maps the aperture's fd as the client (QEMU) would: its own mapping, never mbind'ed. */
function clientMapping(ap: Aperture, length: number): ArrayBuffer {
  return native.mmap(ap.memory.fd, length, RW, native.MAP_SHARED, ap.memory.fdOffset);
}

function nodesOf(map: ArrayBuffer, length: number, stride: number): number[] {
  const status = new Int32Array(Math.ceil(length / stride));
  native.pageNodes(map, 0, stride, status);
  return [...status];
}

describe('NUMA nodes from sysfs (fake tree)', () => {
  let root: string;
  beforeEach(() => {
    root = fakeSysfs({
      'devices/system/node/has_memory': '0,2-3',
      'devices/system/node/node0/meminfo': 'Node 0 MemTotal:       8000000 kB\nNode 0 MemFree:         1024 kB\nNode 0 MemUsed:  7998976 kB',
      'devices/system/node/node1/cpulist': '0-71',
      'devices/system/node/node2/meminfo': 'Node 2 MemFree:  99999999 kB',
      'devices/system/node/node3/meminfo': 'garbage',
    });
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('parses node lists and free memory', () => {
    expect(parseNodeList('0,2-3')).toEqual([0, 2, 3]);
    expect(parseNodeList('0-1,4,6-8\n')).toEqual([0, 1, 4, 6, 7, 8]);
    expect(parseNodeList('')).toEqual([]);
    expect(nodesWithMemory(root)).toEqual([0, 2, 3]);
    expect(nodeFreeBytes(root, 0)).toBe(1024 * 1024);
    expect(nodeFreeBytes(root, 3)).toBeNull();
    expect(nodeFreeBytes(root, 9)).toBeNull();
  });

  it('refuses a node that does not exist or has no memory (a CPU-only node)', () => {
    expect(() => checkNumaNode(root, 7)).toThrow('NUMA node 7 does not exist on this host (nodes with memory: 0,2,3)');
    expect(() => checkNumaNode(root, 1)).toThrow('NUMA node 1 has no memory (nodes with memory: 0,2,3)');
    expect(() => checkNumaNode(root, 2)).not.toThrow();
  });

  it('refuses shared memory bigger than what the node has free, instead of spilling elsewhere', () => {
    expect(() => openAperture({ size: 8 * MiB, base: 0, pageSize: page, numaNode: 0, sysfsRoot: root })).toThrow(
      'NUMA node 0 has 1 MiB free; the aperture needs 8 MiB; refusing to fall back to another node',
    );
  });
});

/** qemu-user has no mbind, get_mempolicy or move_pages (docs/testing.md, emulation gaps). */
const NUMA_GAP = numaCallsGap();
if (NUMA_GAP !== null) console.warn(`skipped: binding apertures to a node: ${NUMA_GAP}`);

describe('an aperture bound to a NUMA node', () => {
  const open: Aperture[] = [];
  const maps: ArrayBuffer[] = [];
  afterEach(() => {
    for (const m of maps.splice(0)) native.munmap(m);
    for (const ap of open.splice(0)) ap.close();
  });

  it('refuses a node that does not exist, in one line, with no fallback', () => {
    const nodes = nodesWithMemory('/sys');
    const missing = Math.max(...nodes, 0) + 1;
    let err: unknown;
    try {
      open.push(openAperture({ size: 4 * MiB, base: 0, pageSize: page, numaNode: missing }));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ApertureError);
    expect((err as Error).message).toBe(
      `--aperture-numa-node: NUMA node ${missing} does not exist on this host (nodes with memory: ${nodes.join(',')}); refusing to fall back to another node`,
    );
  });

  it.skipIf(NUMA_GAP !== null)('binds shared memory on the file itself: pages the client faults in through its own mapping land on the node', () => {
    const size = 8 * MiB;
    const ap = openAperture({ size, base: 2 * MiB, pageSize: page, numaNode: 0 });
    open.push(ap);
    expect(ap.facts).toEqual({ kind: 'memfd', path: null, numaNode: 0, pageSize: page, cacheable: true });
    expect(fs.fstatSync(ap.memory.fd).blocks).toBe(0); // nothing allocated at start

    const client = clientMapping(ap, size);
    maps.push(client);
    expect(native.getMempolicy(client, 0)).toEqual({ mode: native.MPOL_BIND, flags: 0, nodes: [0] });
    expect(native.getMempolicy(client, size - page).nodes).toEqual([0]);
    new Uint8Array(client).fill(0x3c, 0, 16 * page);
    const nodes = nodesOf(client, 16 * page, page);
    expect(nodes).toEqual(new Array(16).fill(0));
    // the kernel's own account of the client's mapping: the policy, and 16 pages on node 0
    const line = apertureNumaMaps().find((l) => / N0=16\b/.test(l));
    expect(line).toMatch(/ bind:0 /);

    // trapped writes (pwrite by the daemon) allocate by the same policy
    ap.memory.write(size - 3, Uint8Array.from([1, 2, 3]), 0, 3);
    const view = new Uint8Array(client);
    expect([...view.subarray(size - 3)]).toEqual([1, 2, 3]);
    expect(nodesOf(client, size, size - page).at(-1)).toBe(0);
  });

  it('refuses to bind memory it does not allocate (a regular or tmpfs file)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-numa-'));
    try {
      expect(() => openAperture({ size: MiB, base: 0, path: path.join(dir, 'ap'), pageSize: page, numaNode: 0 })).toThrow(
        /--aperture-numa-node binds memory the daemon allocates: use it without --aperture-path, or with a file on a hugetlbfs mount/,
      );
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
  });

  describe.skipIf(NUMA_GAP !== null)('with huge pages', () => {
    let pool: HugePageReservation | string | null = null;
    beforeAll(async () => {
      pool = await reserveHugePages(2 * MiB, 4);
    });
    afterAll(async () => {
      if (typeof pool === 'object') await pool?.release();
    });

    it('allocates every huge page on the node at start, so the client maps pages already there', (ctx) => {
      requireReservation(pool, ctx);
      const size = 6 * MiB;
      const ap = openAperture({ size, base: 0, pageSize: page, numaNode: 0, hugePageSize: 2 * MiB });
      open.push(ap);
      expect(ap.facts).toEqual({ kind: 'memfd-hugetlb', path: null, numaNode: 0, pageSize: 2 * MiB, cacheable: true });
      // hugetlbfs keeps no shared policy: what proves the binding is that the pages exist, on node 0
      expect(fs.fstatSync(ap.memory.fd).blocks * 512).toBe(size);
      const client = clientMapping(ap, size);
      maps.push(client);
      expect(native.getMempolicy(client, 0).mode).toBe(native.MPOL_DEFAULT);
      const view = new Uint8Array(client);
      for (let at = 0; at < size; at += 2 * MiB) expect(view[at]).toBe(0); // maps the existing pages
      expect(nodesOf(client, size, 2 * MiB)).toEqual([0, 0, 0]);
      expect(apertureNumaMaps().some((l) => / huge /.test(l) && / N0=3\b/.test(l))).toBe(true);
    });

    it('refuses a huge page pool too small for the node in one line', () => {
      const { total } = poolCounts(2 * MiB);
      expect(() => openAperture({ size: (total + 64) * 2 * MiB, base: 0, pageSize: page, numaNode: 0, hugePageSize: 2 * MiB })).toThrow(
        /^huge page pool too small: the aperture needs \d+ pages of 2 MiB.*raise \/sys\/.*hugepages-2048kB\/nr_hugepages/,
      );
    });
  });
});
