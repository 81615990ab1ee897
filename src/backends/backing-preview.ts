import fs from 'node:fs';
import path from 'node:path';
import { charDeviceKind, DEFAULT_APERTURE_SIZE, HUGETLBFS_MAGIC, type ApertureOptions, type BackingFacts } from './aperture.js';
import { native } from '../native/native.js';
import { devMemCacheable } from './dev-mem.js';
import { findDaxDevice } from './device-dax.js';
import { SYSFS_ROOT } from './sysfs.js';

export interface BackingPreview {
  /** What openAperture would report, as far as can be told without opening anything. */
  facts: BackingFacts;
  /** Whether the backing file exists (serve would create a missing one). */
  exists: boolean;
  /** Bytes of memory: the size asked for, else the default (for a device-dax, the rest of the device). */
  size: number;
}

/**
 * The facts of a backing from its options, for `describe`: only stat, statfs
 * and sysfs are read; nothing is opened, created or allocated.
 */
export function previewBacking(opts: Omit<ApertureOptions, 'pageSize'> & { pageSize?: number }): BackingPreview {
  const sysfs = opts.sysfsRoot ?? SYSFS_ROOT;
  const page = opts.pageSize ?? native.pageSize();
  const numaNode = opts.numaNode ?? null;
  const size = opts.size ?? DEFAULT_APERTURE_SIZE;
  if (!opts.path) {
    const huge = opts.hugePageSize;
    return { facts: { kind: huge ? 'memfd-hugetlb' : 'memfd', path: null, numaNode, pageSize: huge ?? page, cacheable: true }, exists: true, size };
  }
  const p = opts.path;
  let st: fs.Stats | null = null;
  try {
    st = fs.statSync(p);
  } catch {
    // missing: what serve would create, judged by the filesystem it would land on
  }
  if (st?.isCharacterDevice()) {
    const dax = findDaxDevice(sysfs, p, st.rdev);
    if (dax) {
      return {
        facts: { kind: 'device-dax', path: p, numaNode: dax.numaNode, pageSize: dax.align, cacheable: true },
        exists: true,
        size: opts.size ?? Math.max(0, dax.size - opts.base),
      };
    }
    const kind = charDeviceKind(st.rdev);
    return { facts: { kind, path: p, numaNode: null, pageSize: page, cacheable: kind === 'dev-mem' ? devMemCacheable(opts.arch ?? process.arch) : null }, exists: true, size };
  }
  let fsType = 0;
  let bsize = page;
  try {
    const info = fs.statfsSync(st ? p : path.dirname(path.resolve(p)));
    fsType = info.type;
    bsize = info.bsize;
  } catch {
    // the folder is missing too: serve will fail to create it
  }
  const hugetlbfs = fsType === HUGETLBFS_MAGIC;
  return {
    facts: hugetlbfs
      ? { kind: 'hugetlbfs', path: p, numaNode, pageSize: bsize, cacheable: true }
      : { kind: 'file', path: p, numaNode: null, pageSize: page, cacheable: true },
    exists: st !== null,
    size,
  };
}
