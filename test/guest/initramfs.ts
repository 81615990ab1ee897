// Builds the guest's initramfs: a gzip'd newc cpio archive with a static busybox,
// bar-check and an /init script. Written in TypeScript (no cpio tool needed).
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { buildBarCheck } from './bar-check.js';
import { guestCacheDir, qemuRootDir } from './paths.js';
import type { GuestArch } from './qemu-env.js';

/** Printed by /init before the caller's commands. */
export const INIT_START_MARK = 'GUEST-INIT START';
/** Printed by /init after the caller's commands, as `GUEST-INIT END status=<n>`. */
export const INIT_END_MARK = 'GUEST-INIT END';

export interface ExtraFile {
  /** Path inside the guest, e.g. "/etc/expected.bin" (parent folders are created). */
  path: string;
  /** Permission bits, e.g. 0o644. */
  mode: number;
  data: Buffer | string;
}

export interface BuildInitramfsOptions {
  /** Shell commands (busybox sh) run by /init after the mounts, before poweroff. */
  initCommands: string;
  extraFiles?: ExtraFile[];
  /** Static busybox to include (default: findBusybox(arch)). */
  busybox?: string;
  /** Default x86_64: busybox and bar-check are built for it. */
  arch?: GuestArch;
}

// ---------------------------------------------------------------------------- cpio (newc)

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

export interface CpioEntry {
  /** Path without a leading slash ("bin/busybox"); "." for the root. */
  name: string;
  /** Full st_mode (type and permission bits). */
  mode: number;
  data?: Buffer;
  /** For device nodes. */
  rdevMajor?: number;
  rdevMinor?: number;
}

const pad4 = (n: number): number => (4 - (n % 4)) % 4;

/** Serialises entries as a newc ("070701") archive with its TRAILER!!! entry. */
export function newcArchive(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const put = (e: CpioEntry, inode: number): void => {
    const name = Buffer.from(`${e.name}\0`);
    const data = e.data ?? Buffer.alloc(0);
    const isDir = (e.mode & 0o170000) === S_IFDIR;
    const fields = [
      inode,
      e.mode,
      0, // uid
      0, // gid
      isDir ? 2 : 1, // nlink
      0, // mtime: fixed, so the image is reproducible
      data.length,
      0, // devmajor
      0, // devminor
      e.rdevMajor ?? 0,
      e.rdevMinor ?? 0,
      name.length,
      0, // check
    ];
    const header = `070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}`;
    parts.push(Buffer.from(header, 'ascii'), name, Buffer.alloc(pad4(header.length + name.length)));
    parts.push(data, Buffer.alloc(pad4(data.length)));
  };
  for (const e of entries) put(e, ino++);
  put({ name: 'TRAILER!!!', mode: 0 }, 0);
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------- busybox

const EM_X86_64 = 62;
const EM_AARCH64 = 183;

/** The ELF machine of a 64-bit little-endian executable, as a GuestArch, or null. */
export function elfArch(file: Buffer): GuestArch | null {
  if (file.length < 20 || file.readUInt32BE(0) !== 0x7f454c46 || file[4] !== 2 || file[5] !== 1) return null;
  const machine = file.readUInt16LE(18);
  return machine === EM_X86_64 ? 'x86_64' : machine === EM_AARCH64 ? 'aarch64' : null;
}

/** True when an ELF file has no PT_INTERP program header (statically linked). */
export function isStaticElf(file: Buffer): boolean {
  if (file.length < 64 || file.readUInt32BE(0) !== 0x7f454c46 || file[4] !== 2) return false;
  const phoff = Number(file.readBigUInt64LE(32));
  const phentsize = file.readUInt16LE(54);
  const phnum = file.readUInt16LE(56);
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 4 > file.length) return false;
    if (file.readUInt32LE(at) === 3 /* PT_INTERP */) return false;
  }
  return true;
}

/**
 * A static busybox for the architecture: $NVGRACE_BUSYBOX (x86_64) or
 * $NVGRACE_BUSYBOX_AARCH64, the provisioned root's (arm64/busybox for aarch64), or the
 * host's (busybox-static) — the first that exists, is statically linked and is built
 * for that architecture.
 */
export function findBusybox(arch: GuestArch = 'x86_64'): string {
  const root = qemuRootDir();
  const candidates = (
    arch === 'aarch64'
      ? [process.env.NVGRACE_BUSYBOX_AARCH64, join(root, 'arm64/busybox'), '/usr/bin/busybox', '/bin/busybox']
      : [process.env.NVGRACE_BUSYBOX, join(root, 'usr/bin/busybox'), join(root, 'bin/busybox'), '/usr/bin/busybox', '/bin/busybox']
  ).filter((p): p is string => p !== undefined && p !== '');
  for (const p of candidates) {
    try {
      const file = readFileSync(p);
      if (isStaticElf(file) && elfArch(file) === arch) return p;
    } catch {
      // not there
    }
  }
  throw new Error(
    `no static ${arch} busybox among ${candidates.join(', ')}: provision the QEMU root, ` +
      `install busybox-static, or set ${arch === 'aarch64' ? 'NVGRACE_BUSYBOX_AARCH64' : 'NVGRACE_BUSYBOX'}`,
  );
}

// ---------------------------------------------------------------------------- init

function initScript(): string {
  return `#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null || /bin/busybox mdev -s
/bin/busybox --install -s
mount -t tmpfs tmpfs /tmp
echo "${INIT_START_MARK}"
/bin/sh /test.sh
echo "${INIT_END_MARK} status=$?"
sync
poweroff -f
`;
}

function guestPath(p: string): string {
  const name = p.replace(/^\/+/, '').replace(/\/+$/, '');
  if (name === '' || name.split('/').includes('..')) throw new Error(`bad guest path: ${p}`);
  return name;
}

/**
 * Builds (or reuses) an initramfs whose /init mounts /proc, /sys and /dev, installs the
 * busybox applets, runs `initCommands` as /test.sh, prints `GUEST-INIT END status=<n>`
 * and powers the guest off. /bin/bar-check is included. Returns the image's path, under
 * <cache>/initramfs/, named by a hash of its content.
 */
export async function buildInitramfs(options: BuildInitramfsOptions): Promise<string> {
  const arch = options.arch ?? 'x86_64';
  const busybox = readFileSync(options.busybox ?? findBusybox(arch));
  const barCheck = readFileSync(await buildBarCheck(arch));

  const dirs = new Set<string>(['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'tmp', 'run', 'root', 'etc']);
  const files = new Map<string, CpioEntry>();
  const addFile = (name: string, mode: number, data: Buffer): void => {
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
    files.set(name, { name, mode, data });
  };
  addFile('bin/busybox', S_IFREG | 0o755, busybox);
  addFile('bin/sh', S_IFLNK | 0o777, Buffer.from('busybox'));
  addFile('bin/bar-check', S_IFREG | 0o755, barCheck);
  addFile('init', S_IFREG | 0o755, Buffer.from(initScript()));
  addFile('test.sh', S_IFREG | 0o755, Buffer.from(`${options.initCommands}\n`));
  for (const f of options.extraFiles ?? []) {
    const data = typeof f.data === 'string' ? Buffer.from(f.data) : f.data;
    addFile(guestPath(f.path), S_IFREG | (f.mode & 0o7777), data);
  }

  const entries: CpioEntry[] = [{ name: '.', mode: S_IFDIR | 0o755 }];
  for (const d of [...dirs].sort()) {
    if (!files.has(d)) entries.push({ name: d, mode: S_IFDIR | (d === 'tmp' ? 0o1777 : 0o755) });
  }
  // The kernel opens /dev/console for init before anything is mounted.
  entries.push({ name: 'dev/console', mode: S_IFCHR | 0o600, rdevMajor: 5, rdevMinor: 1 });
  entries.push(...[...files.values()].sort((a, b) => a.name.localeCompare(b.name)));

  const archive = newcArchive(entries);
  const hash = createHash('sha256').update(archive).digest('hex').slice(0, 16);
  const dir = join(guestCacheDir(), 'initramfs');
  const out = join(dir, `initramfs-${hash}.cpio.gz`);
  if (existsSync(out)) {
    const now = new Date();
    utimesSync(out, now, now); // keeps it off the prune list
    return out;
  }
  mkdirSync(dir, { recursive: true });
  const tmp = `${out}.tmp.${process.pid}`;
  writeFileSync(tmp, gzipSync(archive, { level: 6 }));
  renameSync(tmp, out);
  pruneImages(dir, out);
  return out;
}

/** Keeps the newest KEEP_IMAGES images (tests that embed fresh data make new ones). */
const KEEP_IMAGES = 32;
function pruneImages(dir: string, keep: string): void {
  try {
    const images = readdirSync(dir)
      .filter((n) => n.endsWith('.cpio.gz'))
      .map((n) => ({ path: join(dir, n), mtime: statSync(join(dir, n)).mtimeMs }))
      .sort((a, b) => b.mtime - a.mtime);
    for (const img of images.slice(KEEP_IMAGES)) {
      if (img.path !== keep) rmSync(img.path, { force: true });
    }
  } catch {
    // another process pruned first
  }
}
