import fs from 'node:fs';
import { readIntAttr, sysPath } from './sysfs.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

const TiB = 1024 * GiB;

/** Smallest huge page any kernel offers (arm64 with 4 KiB pages: 64 KiB contiguous PTEs). */
export const MIN_HUGE_PAGE_SIZE = 64 * KiB;

/**
 * "64K", "2M", "32M", "512M", "1G", "16G" (also 2048K, 2MB, 2MiB, any case) → bytes;
 * null unless a power of two from 64 KiB. Which sizes a host offers depends on its
 * architecture and page size (x86-64: 2M, 1G; arm64 with 4 KiB pages: 64K, 2M, 32M, 1G;
 * 16 KiB: 2M, 32M, 1G; 64 KiB: 2M, 512M, 16G): the aperture checks that when it opens.
 */
export function parseHugePageSize(text: string): number | null {
  const m = /^\s*(\d{1,10})\s*([kmgt])(?:i?b)?\s*$/i.exec(text);
  if (!m) return null;
  const bytes = Number(m[1]) * { k: KiB, m: MiB, g: GiB, t: TiB }[m[2]!.toLowerCase() as 'k' | 'm' | 'g' | 't'];
  return bytes >= MIN_HUGE_PAGE_SIZE && Number.isSafeInteger(bytes) && Number.isInteger(Math.log2(bytes)) ? bytes : null;
}

/** "2 MiB", "1 GiB": how errors and logs name a page size. */
export function pageSizeName(bytes: number): string {
  if (bytes >= TiB && bytes % TiB === 0) return `${bytes / TiB} TiB`;
  if (bytes >= GiB && bytes % GiB === 0) return `${bytes / GiB} GiB`;
  if (bytes >= MiB && bytes % MiB === 0) return `${bytes / MiB} MiB`;
  return `${bytes / KiB} KiB`;
}

/** The pool of one huge page size, host wide or on one NUMA node. */
export interface HugePagePool {
  pageSize: number;
  node: number | null;
  total: number;
  free: number;
  /** Free pages promised to existing mappings (host-wide pools only; 0 per node). */
  reserved: number;
  /** The knob an operator raises: `.../nr_hugepages`. */
  knob: string;
}

function poolDir(sysfsRoot: string, pageSize: number, node: number | null): string {
  const leaf = `hugepages-${pageSize / KiB}kB`;
  return node === null
    ? sysPath(sysfsRoot, 'kernel', 'mm', 'hugepages', leaf)
    : sysPath(sysfsRoot, 'devices', 'system', 'node', `node${node}`, 'hugepages', leaf);
}

/** Huge page sizes this kernel supports, in bytes, smallest first. */
export function supportedHugePageSizes(sysfsRoot: string): number[] {
  let names: string[] = [];
  try {
    names = fs.readdirSync(sysPath(sysfsRoot, 'kernel', 'mm', 'hugepages'));
  } catch {
    return [];
  }
  return names
    .map((n) => /^hugepages-(\d+)kB$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]) * KiB)
    .sort((a, b) => a - b);
}

/** Reads a pool; throws when this kernel has no such page size. */
export function readHugePagePool(sysfsRoot: string, pageSize: number, node: number | null = null): HugePagePool {
  const dir = poolDir(sysfsRoot, pageSize, node);
  const total = readIntAttr(sysPath(dir, 'nr_hugepages'));
  const free = readIntAttr(sysPath(dir, 'free_hugepages'));
  if (total === null || free === null) {
    const sizes = supportedHugePageSizes(sysfsRoot).map(pageSizeName);
    throw new Error(
      `this host has no ${pageSizeName(pageSize)} huge pages${node === null ? '' : ` on NUMA node ${node}`} ` +
        `(${dir} is missing; supported sizes: ${sizes.length > 0 ? sizes.join(', ') : 'none'})`,
    );
  }
  return {
    pageSize,
    node,
    total,
    free,
    reserved: node === null ? (readIntAttr(sysPath(dir, 'resv_hugepages')) ?? 0) : 0,
    knob: sysPath(dir, 'nr_hugepages'),
  };
}

/** The one line that says why a pool cannot hold `needed` pages and how to fix it. */
export function poolTooSmallMessage(pool: HugePagePool, needed: number): string {
  const where = pool.node === null ? '' : ` on NUMA node ${pool.node}`;
  const available = Math.max(0, pool.free - pool.reserved);
  return (
    `huge page pool too small: the aperture needs ${needed} pages of ${pageSizeName(pool.pageSize)}${where}, ` +
    `${available} are available (${pool.total} in the pool, ${pool.free} free, ${pool.reserved} reserved); ` +
    `raise ${pool.knob} (e.g. echo ${pool.total + needed - available} > ${pool.knob})`
  );
}
