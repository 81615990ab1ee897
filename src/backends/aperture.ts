import fs from 'node:fs';
import nodePath from 'node:path';
import { alignUp } from '../common/arith.js';
import type { MemoryBacking } from '../device/memory-bar.js';
import { isSyscallError, MAX_MAPPING_LENGTH, native } from '../native/native.js';
import { checkDevMemRange, devMemCacheable } from './dev-mem.js';
import { devMajorMinor, findDaxDevice, type DaxDevice } from './device-dax.js';
import { FdMemory } from './fd-memory.js';
import { serviceDropInHint } from './service-hint.js';
import { sizeGuard } from './size-guard.js';
import { pageSizeName, poolTooSmallMessage, readHugePagePool } from './hugepages.js';
import { bindToNode, checkNumaNode, nodeFreeBytes, pagesOffNode } from './numa.js';
import { SYSFS_ROOT } from './sysfs.js';
import { forEachWindow, WindowedMemory } from './windowed-memory.js';

/**
 * What backs the aperture:
 * - memfd: anonymous shared memory (shmem), the default;
 * - memfd-hugetlb: anonymous huge pages (memfd with MFD_HUGETLB);
 * - file: a regular or tmpfs file;
 * - hugetlbfs: a file on a hugetlbfs mount;
 * - device-dax: /dev/daxX.Y;
 * - dev-mem: /dev/mem (physical addresses);
 * - char-device: any other character device.
 */
export type ApertureKind = 'memfd' | 'memfd-hugetlb' | 'file' | 'hugetlbfs' | 'device-dax' | 'dev-mem' | 'char-device';

export const DEFAULT_APERTURE_SIZE = 96 * 1024 * 1024;
/** statfs f_type of hugetlbfs. */
export const HUGETLBFS_MAGIC = 0x958458f6;

export interface ApertureOptions {
  /** Bytes of coherent memory; default 96 MiB, or for a device-dax the rest of the device after `base`. */
  size?: number | undefined;
  /** Host physical base: the offset of the memory inside the backing. */
  base: number;
  /** Backing file; none means anonymous shared memory (memfd). */
  path?: string | undefined;
  /** The system page size. */
  pageSize: number;
  /** Back the memory with huge pages of this size (anonymous memory, or checked against a hugetlbfs file). */
  hugePageSize?: number | undefined;
  /** Bind the memory strictly to this NUMA node (anonymous memory or hugetlbfs). */
  numaNode?: number | undefined;
  /** Where sysfs is (tests point it at a fake tree). */
  sysfsRoot?: string | undefined;
  /** CPU architecture the warnings are for; default process.arch. */
  arch?: string | undefined;
}

/** The facts about a backing that an operator (and `describe`) needs. */
export interface BackingFacts {
  kind: ApertureKind;
  path: string | null;
  /** NUMA node the memory is bound to (or, for device-dax, lives on); null when not known. */
  numaNode: number | null;
  /** Bytes per page of the backing; the client maps in multiples of it. */
  pageSize: number;
  /** Whether the host maps the memory as normal cacheable memory; null when it cannot tell. */
  cacheable: boolean | null;
}

export interface Aperture {
  readonly kind: ApertureKind;
  readonly path: string | null;
  readonly memory: MemoryBacking;
  readonly facts: BackingFacts;
  /**
   * Puts back the size of a file backing a client changed, and reserves the
   * huge pages of a huge page backing again (on its NUMA node), which a
   * client can take by truncating or punching; the size found, or null.
   * Throws when the pool can no longer supply them.
   */
  restoreSize(): number | null;
  /** One-line warnings to log at start. */
  readonly warnings: readonly string[];
  close(): void;
}

export class ApertureError extends Error {}

/**
 * Opens the backing of the coherent memory. Nothing here touches the memory
 * itself unless a NUMA binding of huge pages needs it: a memfd or a new file
 * is only sized (sparse), so a 512 GiB aperture starts as fast as a small one.
 */
export function openAperture(opts: ApertureOptions): Aperture {
  const sysfs = opts.sysfsRoot ?? SYSFS_ROOT;
  if (opts.size !== undefined && (!Number.isSafeInteger(opts.size) || opts.size <= 0)) {
    throw new ApertureError(`aperture size ${opts.size} must be positive`);
  }
  checkAligned(opts.base, opts.pageSize, `the ${opts.pageSize}-byte page`);
  const ap = opts.path ? openPath(opts.path, opts, sysfs) : openAnonymous(opts, sysfs);
  return { ...ap, warnings: backingWarnings(ap.facts, opts.arch ?? process.arch) };
}

/** One-line warnings about a backing, for the log at start. */
export function backingWarnings(facts: BackingFacts, arch: string): string[] {
  if (facts.kind === 'dev-mem' && arch === 'arm64') {
    return [
      `aperture ${facts.path}: on arm64 /dev/mem maps memory outside the kernel's linear map as uncached Device memory ` +
        `(not the coherent cacheable mapping the GPU memory needs; unaligned guest accesses can fault); ` +
        `prefer --aperture-path /dev/daxX.Y, or --aperture-numa-node N (with --aperture-hugepages) where the memory is onlined as a NUMA node`,
    ];
  }
  return [];
}

/** What a character device is, by its numbers: /dev/mem is 1:1 on every Linux. */
export function charDeviceKind(rdev: number): 'dev-mem' | 'char-device' {
  const [major, minor] = devMajorMinor(rdev);
  return major === 1 && minor === 1 ? 'dev-mem' : 'char-device';
}

function checkNode(sysfs: string, node: number | undefined): void {
  if (node === undefined) return;
  try {
    checkNumaNode(sysfs, node);
  } catch (err) {
    throw new ApertureError(`--aperture-numa-node: ${(err as Error).message}; refusing to fall back to another node`);
  }
}

function checkHugePageSize(sysfs: string, huge: number): void {
  try {
    readHugePagePool(sysfs, huge);
  } catch (err) {
    throw new ApertureError(`--aperture-hugepages: ${(err as Error).message}`);
  }
  checkMappable(huge, '--aperture-hugepages');
}

/** The daemon maps whole huge pages itself (the trapped tail, NUMA placement, the scrub). */
function checkMappable(huge: number, what: string): void {
  if (huge > MAX_MAPPING_LENGTH) {
    throw new ApertureError(
      `${what}: ${pageSizeName(huge)} pages are larger than one mapping of this Node.js can be (${pageSizeName(MAX_MAPPING_LENGTH)}), ` +
        'and the daemon must map whole pages; use a smaller huge page size',
    );
  }
}

function openAnonymous(opts: ApertureOptions, sysfs: string): Aperture {
  const size = opts.size ?? DEFAULT_APERTURE_SIZE;
  const huge = opts.hugePageSize;
  checkNode(sysfs, opts.numaNode);
  if (huge !== undefined) {
    checkHugePageSize(sysfs, huge);
    checkAligned(opts.base, huge, `the ${pageSizeName(huge)} huge page`);
  }
  if (huge === undefined && opts.numaNode !== undefined) {
    const free = nodeFreeBytes(sysfs, opts.numaNode);
    if (free !== null && free < size) {
      throw new ApertureError(
        `NUMA node ${opts.numaNode} has ${mib(free)} free; the aperture needs ${mib(size)}; refusing to fall back to another node`,
      );
    }
  }
  // >>> 0: log2 of 4 GiB and more reaches bit 31 (MFD_HUGE_16GB is 34 << 26)
  const flags = ((huge === undefined ? 0 : native.MFD_HUGETLB | (Math.log2(huge) << 26)) | native.MFD_ALLOW_SEALING) >>> 0;
  const fd = native.memfdCreate('nvgrace-aperture', flags);
  try {
    const end = opts.base + size;
    fs.ftruncateSync(fd, huge === undefined ? end : alignUp(end, huge));
    if (huge === undefined) {
      if (opts.numaNode !== undefined) bindShmem(fd, opts.base, end, opts.pageSize, opts.numaNode);
      sealSize(fd);
      // sealed, so trapped accesses can copy from a mapping: a pread/pwrite would cost more than the access
      return wrap({ kind: 'memfd', path: null, numaNode: opts.numaNode ?? null, pageSize: opts.pageSize, cacheable: true }, fd, new WindowedMemory(fd, opts.base, size, opts.pageSize));
    }
    const prepare = () => prepareHugePages(fd, opts.base, end, huge, opts.numaNode, sysfs, 'anonymous memory');
    prepare();
    sealSize(fd);
    // sealed, but a client can still punch pages out (and the pool may not give them back)
    const memory = new WindowedMemory(fd, opts.base, size, huge, { guarded: true });
    return wrap({ kind: 'memfd-hugetlb', path: null, numaNode: opts.numaNode ?? null, pageSize: huge, cacheable: true }, fd, memory, hugePageRestore(null, memory, prepare));
  } catch (err) {
    native.closeFd(fd);
    throw err;
  }
}

function openPath(path: string, opts: ApertureOptions, sysfs: string): Aperture {
  let fd: number;
  let created = false;
  try {
    // O_NOFOLLOW is not used: /dev/daxX.Y and /dev/mem are commonly reached through udev links.
    fd = fs.openSync(path, fs.constants.O_RDWR);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EPERM' || code === 'EACCES') {
      const hint = deviceRefusedHint(path, err);
      if (hint !== null) throw new ApertureError(`cannot open aperture ${path}: ${(err as Error).message}; ${hint}`);
    }
    if (code !== 'ENOENT') throw new ApertureError(`cannot open aperture ${path}: ${(err as Error).message}`);
    if (isDeviceNodePath(path)) {
      // creating it would put a RAM file where a device was meant (e.g. /dev/mem on a kernel without CONFIG_DEVMEM)
      throw new ApertureError(`aperture ${path} does not exist; a missing device node is not created as a file`);
    }
    try {
      fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    } catch (err2) {
      throw new ApertureError(`cannot create aperture ${path}: ${(err2 as Error).message}`);
    }
    created = true;
  }
  try {
    const st = fs.fstatSync(fd);
    if (st.isCharacterDevice()) return openCharDevice(path, fd, st, opts, sysfs);
    if (!st.isFile()) throw new ApertureError(`aperture ${path} is neither a regular file nor a character device`);
    const fsInfo = fs.statfsSync(path);
    const hugetlbfs = fsInfo.type === HUGETLBFS_MAGIC;
    const size = opts.size ?? DEFAULT_APERTURE_SIZE;
    const end = opts.base + size;
    if (!hugetlbfs) {
      if (opts.hugePageSize !== undefined) {
        throw new ApertureError(`--aperture-hugepages needs anonymous memory (no --aperture-path) or a file on a hugetlbfs mount; ${path} is not on one`);
      }
      if (opts.numaNode !== undefined) {
        throw new ApertureError(`--aperture-numa-node binds memory the daemon allocates: use it without --aperture-path, or with a file on a hugetlbfs mount; ${path} is not on one`);
      }
      if (created) fs.ftruncateSync(fd, end);
      checkFileSize(path, st.size, created, end);
      // a client can truncate it: trapped accesses copy through the SIGBUS guard
      const memory = new WindowedMemory(fd, opts.base, size, opts.pageSize, { guarded: true });
      const restoreSize = sizeGuard(fd);
      return wrap({ kind: 'file', path, numaNode: null, pageSize: opts.pageSize, cacheable: true }, fd, memory, () => {
        const found = restoreSize();
        if (found !== null) memory.forgetPopulated();
        return found;
      });
    }
    // hugetlbfs reports its page size as the block size
    const huge = fsInfo.bsize;
    if (opts.hugePageSize !== undefined && opts.hugePageSize !== huge) {
      throw new ApertureError(
        `${path} is on a hugetlbfs mount of ${pageSizeName(huge)} pages, but --aperture-hugepages asks for ${pageSizeName(opts.hugePageSize)}`,
      );
    }
    checkNode(sysfs, opts.numaNode);
    checkMappable(huge, path);
    checkAligned(opts.base, huge, `the ${pageSizeName(huge)} huge page`);
    if (created) fs.ftruncateSync(fd, alignUp(end, huge));
    checkFileSize(path, st.size, created, end);
    const prepare = () => prepareHugePages(fd, opts.base, end, huge, opts.numaNode, sysfs, path);
    prepare();
    const memory = new WindowedMemory(fd, opts.base, size, huge, { guarded: true });
    return wrap({ kind: 'hugetlbfs', path, numaNode: opts.numaNode ?? null, pageSize: huge, cacheable: true }, fd, memory, hugePageRestore(sizeGuard(fd), memory, prepare));
  } catch (err) {
    fs.closeSync(fd);
    if (created) fs.rmSync(path, { force: true });
    throw err;
  }
}

function openCharDevice(path: string, fd: number, st: fs.Stats, opts: ApertureOptions, sysfs: string): Aperture {
  let dax: DaxDevice | null;
  try {
    dax = findDaxDevice(sysfs, path, st.rdev);
  } catch (err) {
    throw new ApertureError((err as Error).message);
  }
  if (opts.hugePageSize !== undefined) {
    throw new ApertureError(`--aperture-hugepages does not apply to ${path}: ${dax ? 'a device-dax maps at its own alignment' : 'a character device has its own pages'}`);
  }
  if (opts.numaNode !== undefined) {
    throw new ApertureError(
      `--aperture-numa-node does not apply to ${path}: ${dax ? `a device-dax's memory lives where it is (node ${dax.numaNode ?? 'unknown'})` : 'device memory cannot be bound'}`,
    );
  }
  if (dax) {
    checkAligned(opts.base, dax.align, `${dax.name}'s ${pageSizeName(dax.align)} alignment`);
    if (opts.base >= dax.size) throw new ApertureError(`aperture base 0x${opts.base.toString(16)} is beyond the end of ${dax.name} (${dax.size} bytes)`);
    const size = opts.size ?? dax.size - opts.base;
    if (opts.base + size > dax.size) {
      throw new ApertureError(`${dax.name} holds ${dax.size} bytes; base+size needs ${opts.base + size}`);
    }
    return wrap({ kind: 'device-dax', path, numaNode: dax.numaNode, pageSize: dax.align, cacheable: true }, fd, new WindowedMemory(fd, opts.base, size, dax.align));
  }
  const size = opts.size ?? DEFAULT_APERTURE_SIZE;
  const kind = charDeviceKind(st.rdev);
  if (kind === 'dev-mem') {
    try {
      checkDevMemRange(path, fd, opts.base, size, opts.pageSize);
    } catch (err) {
      throw new ApertureError((err as Error).message);
    }
  }
  return wrap({ kind, path, numaNode: null, pageSize: opts.pageSize, cacheable: kind === 'dev-mem' ? devMemCacheable(opts.arch ?? process.arch) : null }, fd, new FdMemory(fd, opts.base, size));
}

/**
 * Sets the shared policy of [start, end) of a shmem file: mbind on a shared
 * mapping of shmem binds the file range itself, so pages the client faults in
 * through its own mapping are allocated on the node too.
 */
function bindShmem(fd: number, start: number, end: number, pageSize: number, node: number): void {
  forEachWindow(fd, start, end, pageSize, (map) => bindToNode(map, 0, map.byteLength, node));
}

/**
 * Makes the huge pages of [start, end) certain before any client maps them.
 * Mapping a hugetlbfs range shared reserves its pages (the reservation stays
 * with the file), so a short pool is an error now, not a SIGBUS in the client.
 * hugetlbfs keeps no shared policy, so a NUMA binding holds only for pages
 * allocated through the mapping that carries it: they are all faulted in here,
 * then checked to be on the node.
 */
function prepareHugePages(fd: number, start: number, end: number, huge: number, node: number | undefined, sysfs: string, what: string): void {
  const mapEnd = alignUp(end, huge);
  const needed = (mapEnd - start) / huge;
  try {
    forEachWindow(fd, start, mapEnd, huge, (map, at) => {
      if (node === undefined) return;
      bindToNode(map, 0, map.byteLength, node);
      try {
        native.populate(map, 0, map.byteLength, true);
      } catch (err) {
        // a page the node cannot supply fails the fault: ENOMEM, or EFAULT where it would be SIGBUS
        if (isSyscallError(err, 'ENOMEM') || isSyscallError(err, 'EFAULT')) {
          throw new ApertureError(poolTooSmallMessage(readHugePagePool(sysfs, huge, node), needed));
        }
        if (isSyscallError(err, 'EINVAL')) {
          throw new ApertureError(`${what}: cannot fault huge pages in on NUMA node ${node}: madvise(MADV_POPULATE_WRITE) needs Linux 5.14 or later`);
        }
        throw err;
      }
      const off = pagesOffNode(map, 0, map.byteLength, huge, node);
      if (off.size > 0) {
        const where = [...off].map(([n, count]) => `${count} on node ${n}`).join(', ');
        throw new ApertureError(`${what}: huge pages at 0x${at.toString(16)} are not on NUMA node ${node} (${where}); they were allocated before the binding`);
      }
    });
  } catch (err) {
    if (isSyscallError(err, 'ENOMEM') && err.syscall === 'mmap') {
      // the reservation is host wide, but raising the host-wide pool would not put the pages on the node
      const onNode = node === undefined ? null : readHugePagePool(sysfs, huge, node);
      throw new ApertureError(poolTooSmallMessage(onNode !== null && onNode.free < needed ? onNode : readHugePagePool(sysfs, huge), needed));
    }
    throw err;
  }
}

/**
 * The client gets this memfd to map the BAR, sharing our open file: sealed so
 * it cannot shrink it under the next tenant's (or our own) mappings, or grow
 * it to eat host memory. Writes and hole punching (the scrub) still work.
 */
function sealSize(fd: number): void {
  native.memfdAddSeals(fd, native.F_SEAL_SHRINK | native.F_SEAL_GROW | native.F_SEAL_SEAL);
}

/**
 * After a client: the size of a hugetlbfs file back (when it has one), then
 * its huge pages reserved again, and placed again on the NUMA node. A client
 * that truncated the file or punched pages out of it took their reservation
 * (and placement) with them; without this the next tenant's faults, or the
 * scrub's, would take pages from whatever the pool holds then, or fail. A
 * pool that can no longer supply them is an error here (the scrub retries).
 */
function hugePageRestore(restoreSize: (() => number | null) | null, memory: WindowedMemory, prepare: () => void): () => number | null {
  return () => {
    const found = restoreSize?.() ?? null;
    prepare();
    if (found !== null) memory.forgetPopulated();
    return found;
  };
}

function wrap(facts: BackingFacts, fd: number, memory: FdMemory | WindowedMemory, restoreSize: () => number | null = () => null): Aperture {
  let open = true;
  return {
    kind: facts.kind,
    path: facts.path,
    memory,
    facts,
    restoreSize,
    warnings: [],
    close() {
      if (!open) return;
      open = false;
      if (memory instanceof WindowedMemory) memory.close();
      fs.closeSync(fd);
    },
  };
}

/** A path in /dev that names a device, not a file on one of its memory filesystems. */
/** What a refused device node needs, or null for anything but a character device. */
function deviceRefusedHint(path: string, err: unknown): string | null {
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch {
    return null;
  }
  if (!st.isCharacterDevice()) return null;
  if (charDeviceKind(st.rdev) === 'dev-mem') {
    return serviceDropInHint(err, 'devmem.conf', 'CapabilityBoundingSet=CAP_SYS_RAWIO, DeviceAllow=/dev/mem rw') ?? 'opening /dev/mem needs root with CAP_SYS_RAWIO';
  }
  return process.env['INVOCATION_ID'] !== undefined ? `the service's device policy refuses it: add a drop-in with DeviceAllow=${path} rw` : null;
}

function isDeviceNodePath(p: string): boolean {
  const abs = nodePath.resolve(p);
  return abs.startsWith('/dev/') && !abs.startsWith('/dev/shm/') && !abs.startsWith('/dev/hugepages/');
}

function checkFileSize(path: string, size: number, created: boolean, end: number): void {
  if (!created && size < end) {
    throw new ApertureError(`aperture file ${path} holds ${size} bytes; base+size needs ${end} (grow it with truncate -s ${end})`);
  }
}

function checkAligned(base: number, align: number, what: string): void {
  if (base % align !== 0) throw new ApertureError(`aperture base 0x${base.toString(16)} is not aligned to ${what}`);
}

function mib(bytes: number): string {
  return `${Math.floor(bytes / 2 ** 20)} MiB`;
}
