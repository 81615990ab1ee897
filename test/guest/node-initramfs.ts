// An initramfs that runs this project inside a guest: the host's own Node.js (with the
// shared libraries it loads), the compiled daemon and client, their production
// dependencies, and kernel modules taken from the guest kernel's module tree.
//
// Node is about 100 MB, so the image is a plain (uncompressed) newc archive: the guest
// kernel unpacks it without a decompression pass, which under TCG costs seconds.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { INIT_END_MARK, INIT_START_MARK, findBusybox, newcArchive, type CpioEntry } from './initramfs.js';
import { guestCacheDir } from './paths.js';
import type { GuestArch } from './qemu-env.js';

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

/** The repository root. */
export const REPO_DIR = fileURLToPath(new URL('../..', import.meta.url));
/** Where the project lives inside the guest. */
export const GUEST_PROJECT_DIR = '/opt/nvgrace';

export interface NodeInitramfsOptions {
  /** busybox sh commands run by /init, given the module files to insmod in order (under /lib/modules); the guest powers off afterwards. */
  initCommands: (moduleFiles: string[]) => string;
  /** The guest kernel (…/boot/vmlinuz-<version>): its modules are looked up beside it (only with modules). */
  kernel?: string;
  /** Modules to load, dependencies first, in this order (names as modprobe takes them). Default none. */
  modules?: string[];
  /** Default x86_64 (busybox for it). */
  arch?: GuestArch;
  /**
   * Node, the shared libraries it loads and any other files it reads at start (a
   * distribution's externalized builtins), at their guest paths; default the host's own
   * node (ldd).
   */
  node?: { binary: string; libraries: { guestPath: string; hostPath: string }[]; files?: { guestPath: string; hostPath: string }[] };
  /** A built tree of the project (dist/, the native addon, node_modules); default this checkout. */
  projectDir?: string;
  /** Files of this checkout to carry as well (repository-relative); default the x86 guest checks. */
  checkoutFiles?: string[];
}

export interface NodeInitramfs {
  path: string;
  /** Module files in load order, relative to /lib/modules in the guest. */
  moduleFiles: string[];
  bytes: number;
  remove(): void;
}

/** The kernel's module folder: <root>/lib/modules/<version> for a kernel at <root>/boot/vmlinuz-<version>. */
export function modulesDirFor(kernel: string): string {
  const version = basename(kernel).replace(/^vmlinuz-/, '');
  const boot = dirname(kernel);
  const root = basename(boot) === 'boot' ? dirname(boot) : '/';
  return join(root, 'lib/modules', version);
}

const moduleName = (file: string): string => basename(file).replace(/\.ko(\.(xz|gz|zst))?$/, '').replace(/-/g, '_');

/**
 * Files (relative to the module folder) to insmod, dependencies first, for the named
 * modules; modules built into the kernel are left out. Throws for an unknown module.
 */
export function resolveModules(modulesDir: string, names: string[]): string[] {
  const deps = new Map<string, { file: string; deps: string[] }>();
  for (const line of readFileSync(join(modulesDir, 'modules.dep'), 'utf8').split('\n')) {
    const [file, rest] = line.split(':');
    if (!file || rest === undefined) continue;
    deps.set(moduleName(file), { file, deps: rest.trim().split(/\s+/).filter(Boolean) });
  }
  let builtin = new Set<string>();
  try {
    builtin = new Set(readFileSync(join(modulesDir, 'modules.builtin'), 'utf8').split('\n').filter(Boolean).map(moduleName));
  } catch {
    // no list: nothing is known to be built in
  }
  const order: string[] = [];
  const visit = (name: string): void => {
    const key = name.replace(/-/g, '_');
    const entry = deps.get(key);
    if (!entry) {
      if (builtin.has(key)) return;
      throw new Error(`kernel module ${name} is neither in ${modulesDir}/modules.dep nor built in`);
    }
    if (order.includes(entry.file)) return;
    for (const d of entry.deps) visit(moduleName(d));
    order.push(entry.file);
  };
  for (const n of names) visit(n);
  return order;
}

/** The shared libraries (and loader) a dynamic executable needs, as absolute paths, from ldd. */
function sharedLibraries(executable: string): string[] {
  const out = execFileSync('ldd', [executable], { encoding: 'utf8' });
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (m?.[1]) libs.push(m[1]);
  }
  return libs;
}

/** Production dependencies of the package at `dir`, resolved like Node does (nested first, then hoisted). */
export function productionPackages(root: string): string[] {
  const found = new Set<string>();
  const visit = (pkgDir: string): void => {
    const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
    for (const name of Object.keys(pkg.dependencies ?? {})) {
      let at: string | null = null;
      for (let dir = pkgDir; at === null; dir = dirname(dir)) {
        const candidate = join(dir, 'node_modules', name);
        try {
          if (statSync(join(candidate, 'package.json')).isFile()) at = candidate;
        } catch {
          // not here: look one folder up
        }
        if (dir === root || dir === dirname(dir)) break;
      }
      if (at === null) throw new Error(`dependency ${name} of ${pkgDir} is not installed (run npm ci)`);
      if (found.has(at)) continue;
      found.add(at);
      visit(at);
    }
  };
  visit(root);
  return [...found];
}

/**
 * Files a distribution's libnode loads from /usr/share/nodejs at start instead of carrying
 * them (Debian externalizes acorn, cjs-module-lexer, undici and others): the paths named in
 * the library, as they exist under `root` (a path in the root -> its host path).
 */
export function externalizedBuiltins(libnode: string, resolve: (guestPath: string) => string): { guestPath: string; hostPath: string }[] {
  const names = new Set(readFileSync(libnode).toString('latin1').match(/\/usr\/share\/nodejs\/[\w@./-]+\.js/g) ?? []);
  const out: { guestPath: string; hostPath: string }[] = [];
  for (const guestPath of [...names].sort()) {
    const hostPath = resolve(guestPath);
    try {
      if (statSync(hostPath).isFile()) out.push({ guestPath, hostPath });
    } catch {
      // named in the library but not installed: node then does without it
    }
  }
  return out;
}

/** The guest-side checks of the x86 Node guests (nested pass-through, kernel memory). */
const DEFAULT_CHECKOUT_FILES = ['test/vfio/l1-check.mjs', 'test/guest/kernel-mem-check.mjs', 'test/guest/kernel-mem-mistakes.mjs'];

/** The host's own node and its libraries (what an x86_64 guest runs). */
function hostNode(): NonNullable<NodeInitramfsOptions['node']> {
  const binary = realpathSync(process.execPath);
  return { binary, libraries: sharedLibraries(binary).map((lib) => ({ guestPath: lib, hostPath: lib })) };
}

function kernelOf(o: NodeInitramfsOptions): string {
  if (o.kernel === undefined) throw new Error('buildNodeInitramfs: modules need the kernel they belong to');
  return o.kernel;
}

export function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

function initScript(): string {
  return `#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s 2>/dev/null
mount -t tmpfs tmpfs /tmp
echo "${INIT_START_MARK}"
/bin/sh /test.sh
echo "${INIT_END_MARK} status=$?"
sync
poweroff -f
`;
}

/** Builds the image into the cache folder; remove() deletes it (it is large and made fresh each time). */
export function buildNodeInitramfs(o: NodeInitramfsOptions): NodeInitramfs {
  const dirs = new Set<string>(['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'tmp', 'run', 'root', 'etc']);
  const files = new Map<string, CpioEntry>();
  const add = (guestPath: string, mode: number, data: Buffer): void => {
    const name = guestPath.replace(/^\/+/, '');
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
    files.set(name, { name, mode, data });
  };
  const addFile = (guestPath: string, hostPath: string): void => {
    const mode = statSync(hostPath).mode & 0o777;
    add(guestPath, S_IFREG | mode, readFileSync(hostPath));
  };

  add('bin/busybox', S_IFREG | 0o755, readFileSync(findBusybox(o.arch ?? 'x86_64')));
  add('bin/sh', S_IFLNK | 0o777, Buffer.from('busybox'));
  add('init', S_IFREG | 0o755, Buffer.from(initScript()));

  // Node and what it loads, at the paths the dynamic loader looks in.
  const node = o.node ?? hostNode();
  add('usr/bin/node', S_IFREG | 0o755, readFileSync(node.binary));
  for (const lib of node.libraries) add(lib.guestPath, S_IFREG | 0o755, readFileSync(realpathSync(lib.hostPath)));
  for (const f of node.files ?? []) add(f.guestPath, S_IFREG | 0o644, readFileSync(realpathSync(f.hostPath)));

  // The project: compiled code, the native addon, production dependencies, the guest-side check.
  const project = GUEST_PROJECT_DIR.replace(/^\//, '');
  const built = o.projectDir ?? REPO_DIR;
  for (const f of ['package.json', 'bin/nvgrace-vfio-user.js', 'build/Release/nvgrace_native.node']) {
    addFile(`${project}/${f}`, join(built, f));
  }
  for (const f of o.checkoutFiles ?? DEFAULT_CHECKOUT_FILES) addFile(`${project}/${f}`, join(REPO_DIR, f));
  for (const f of filesUnder(join(built, 'dist'))) if (!f.endsWith('.map')) addFile(`${project}/${relative(built, f)}`, f);
  for (const pkg of productionPackages(built)) {
    for (const f of filesUnder(pkg)) addFile(`${project}/${relative(built, f)}`, f);
  }

  // Kernel modules, kept compressed as shipped: the guest's busybox unpacks .xz itself.
  const moduleFiles = (o.modules ?? []).length > 0 ? resolveModules(modulesDirFor(kernelOf(o)), o.modules ?? []) : [];
  const modulesDir = moduleFiles.length > 0 ? modulesDirFor(kernelOf(o)) : '';
  for (const m of moduleFiles) {
    const raw = readFileSync(join(modulesDir, m));
    if (m.endsWith('.gz')) add(`lib/modules/${m.replace(/\.gz$/, '')}`, S_IFREG | 0o644, gunzipSync(raw));
    else if (m.endsWith('.zst')) throw new Error(`${m}: zstd-compressed modules are not supported (the guest's busybox has no zstd)`);
    else add(`lib/modules/${m}`, S_IFREG | 0o644, raw);
  }

  const guestModules = moduleFiles.map((m) => m.replace(/\.gz$/, ''));
  add('test.sh', S_IFREG | 0o755, Buffer.from(`${o.initCommands(guestModules)}\n`));

  const entries: CpioEntry[] = [{ name: '.', mode: S_IFDIR | 0o755 }];
  for (const d of [...dirs].sort()) if (!files.has(d)) entries.push({ name: d, mode: S_IFDIR | (d === 'tmp' ? 0o1777 : 0o755) });
  entries.push({ name: 'dev/console', mode: S_IFCHR | 0o600, rdevMajor: 5, rdevMinor: 1 });
  entries.push(...[...files.values()].sort((a, b) => a.name.localeCompare(b.name)));
  const archive = newcArchive(entries);

  const dir = join(guestCacheDir(), 'nested');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `initramfs-node-${process.pid}-${Date.now()}.cpio`);
  writeFileSync(path, archive);
  return {
    path,
    moduleFiles: guestModules,
    bytes: archive.length,
    remove: () => rmSync(path, { force: true }),
  };
}
