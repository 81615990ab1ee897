// The arm64 (aarch64) root and a build of this project inside it, for running the daemon
// and its tests as on an arm64 host, under qemu-user (binfmt_misc). Used by
// `npm run test:arm64` and by the arm64 guest tests (which take the arm64 node, its
// libraries and a built tree from here).
//
// Layout on the host (ROOT defaults to /var/cache/nvgrace-vfio-user/arm64-root):
//   ROOT/                 Debian trixie arm64 with nodejs, npm, build-essential, python3
//   ROOT.qemu-user/       trixie's static qemu-aarch64, the binfmt interpreter
//   ROOT/work/<key>/      the files of a checkout git tracks or would (not ignored), node_modules and the
//                         aarch64 addon (`npm ci` run in the root), dist/ compiled
// <key> hashes what the build depends on (package*.json, binding.gyp, binding/, src/,
// tsconfig*.json); a warm call only refreshes the other tracked files (tests, scripts).
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const DEFAULT_ARM64_ROOT = '/var/cache/nvgrace-vfio-user/arm64-root';
/** The checkout this file belongs to (also when run compiled from .cache/). */
const PROJECT = ((): string => {
  let d = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(d, 'test/arm64/provision-arm64-root.sh'))) {
    const up = path.dirname(d);
    if (up === d) throw new Error('arm64-root: cannot find the project checkout');
    d = up;
  }
  return d;
})();
const PROVISION = path.join(PROJECT, 'test/arm64/provision-arm64-root.sh');
const STAMP = '.nvgrace-arm64-build.json';
/** Build dirs kept under ROOT/work (least recently used go first). */
const KEEP_BUILDS = 3;
const ROOT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface Arm64Root {
  /** Host path of the root. */
  root: string;
  /** Host path of the qemu-aarch64 registered for aarch64 ELF files (trixie's, 10.x). */
  qemuUser: string;
  /** Host path of bookworm's qemu-aarch64 (7.2), which honours QEMU_PAGESIZE. */
  qemuUserPageSize: string;
  /** Host path of the arm64 node binary (`/usr/bin/node` in the root). */
  node: string;
  /** Host path of the root's aarch64 dynamic loader. */
  loader: string;
  /** Host paths of the root's aarch64 library directories. */
  libraryDirs: string[];
}

export interface Arm64Build {
  root: Arm64Root;
  /** Hash of the build inputs; also the directory's name. */
  key: string;
  /** The built project tree, as seen inside the root (`/work/<key>`). */
  dirInRoot: string;
  /** The same tree as a host path. */
  dir: string;
  /** True when this call ran `npm ci` or `tsc` (a cold or partly cold build). */
  built: boolean;
}

export interface Arm64Options {
  /** The root's host path; default $NVGRACE_ARM64_ROOT or DEFAULT_ARM64_ROOT. */
  dir?: string;
  /** The checkout to copy; default the one this file is in. */
  checkout?: string;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

const defaultLog = (line: string): void => {
  process.stderr.write(`arm64: ${line}\n`);
};

export function arm64RootDir(dir?: string): string {
  return path.resolve(dir ?? process.env['NVGRACE_ARM64_ROOT'] ?? DEFAULT_ARM64_ROOT);
}

/** Provisions the root if needed (needs root then) and makes sure binfmt points at it. */
export function ensureArm64Root(opts: Arm64Options = {}): Arm64Root {
  const root = arm64RootDir(opts.dir);
  const r = spawnSync('bash', [PROVISION, root], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (r.status !== 0) {
    throw new Error(`provisioning the arm64 root failed (${PROVISION} ${root} exited ${r.status ?? r.signal})`);
  }
  return describeRoot(root);
}

function describeRoot(root: string): Arm64Root {
  return {
    root,
    qemuUser: `${root}.qemu-user/qemu-aarch64`,
    qemuUserPageSize: `${root}.qemu-user/qemu-aarch64-pagesize`,
    node: path.join(root, 'usr/bin/node'),
    loader: path.join(root, 'lib/ld-linux-aarch64.so.1'),
    libraryDirs: [path.join(root, 'usr/lib/aarch64-linux-gnu'), path.join(root, 'lib/aarch64-linux-gnu')],
  };
}

const BINFMT = '/proc/sys/fs/binfmt_misc';
const BINFMT_NAME = 'qemu-aarch64';
const AARCH64_MAGIC = '\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00';
const AARCH64_MASK = '\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff';

/**
 * The interpreter a run at `pageSize` needs: QEMU 9.0 and later ignore QEMU_PAGESIZE (the
 * emulated page is the host's), so pages other than the host's take bookworm's 7.2.
 * binfmt_misc is host-wide: while a 16 KiB run goes on, every aarch64 program on this
 * host runs under 7.2 (at the host page unless it asks for another one).
 */
export function interpreterFor(root: Arm64Root, pageSize: number | undefined): string {
  return pageSize === undefined || pageSize === 4096 ? root.qemuUser : root.qemuUserPageSize;
}

/** The interpreter binfmt_misc runs aarch64 programs with now (null when none). */
export function registeredInterpreter(): string | null {
  try {
    const line = fs.readFileSync(path.join(BINFMT, BINFMT_NAME), 'utf8').split('\n').find((l) => l.startsWith('interpreter '));
    return line === undefined ? null : line.slice('interpreter '.length);
  } catch {
    return null;
  }
}

/** Registers `interpreter` for aarch64 ELF files (flag F: it also works in the chroot). Needs root. */
export function registerInterpreter(interpreter: string): void {
  const entry = path.join(BINFMT, BINFMT_NAME);
  let current = '';
  try {
    current = fs.readFileSync(entry, 'utf8');
  } catch {
    /* none registered */
  }
  if (current.split('\n').includes(`interpreter ${interpreter}`) && current.startsWith('enabled')) return;
  if (current !== '') fs.writeFileSync(entry, '-1');
  fs.writeFileSync(path.join(BINFMT, 'register'), `:${BINFMT_NAME}:M::${AARCH64_MAGIC}:${AARCH64_MASK}:${interpreter}:FP`);
}

export interface RunOptions {
  /** Working directory inside the root. */
  cwd?: string;
  /** Extra environment (the process starts from a clean one). */
  env?: Record<string, string | undefined>;
  /** The page size qemu-user reports to the program (QEMU_PAGESIZE); default the host's. */
  pageSize?: number;
  stdio?: 'inherit' | 'pipe';
  timeoutMs?: number;
}

/**
 * The host command that runs `argv` inside the root: a private mount namespace (so the
 * bind mounts vanish with the process, whatever happens to it) with /proc, /sys, /dev
 * and the host's /tmp (shared lock files such as the huge page pool's) bound in, then
 * chroot. Needs root.
 */
export function arm64Command(root: string, argv: string[], opts: RunOptions = {}): { file: string; args: string[] } {
  const env: Record<string, string> = {
    PATH: ROOT_PATH,
    HOME: '/root',
    LANG: 'C.UTF-8',
    NODE_EXTRA_CA_CERTS: '/etc/nvgrace/host-ca.crt',
  };
  for (const k of ['CI', 'FORCE_COLOR', 'NO_COLOR', 'TERM']) {
    const v = process.env[k];
    if (v !== undefined) env[k] = v;
  }
  if (opts.pageSize !== undefined) env['QEMU_PAGESIZE'] = String(opts.pageSize);
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  const script = [
    'set -e',
    'r="$1"; cwd="$2"; shift 2',
    'mount -t proc proc "$r/proc"',
    'mount --rbind /sys "$r/sys"',
    'mount --rbind /dev "$r/dev"',
    'mount --bind /tmp "$r/tmp"',
    'exec chroot "$r" /usr/bin/env -i "$@"',
  ].join('\n');
  const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  return {
    file: 'unshare',
    args: [
      '--mount', '--propagation', 'private', '--', 'sh', '-c', script, 'sh', root, opts.cwd ?? '/',
      ...envArgs, '/bin/sh', '-c', 'cd "$0" && exec "$@"', opts.cwd ?? '/', ...argv,
    ],
  };
}

export function runInArm64Root(root: string, argv: string[], opts: RunOptions = {}): SpawnSyncReturns<string> {
  const { file, args } = arm64Command(root, argv, opts);
  return spawnSync(file, args, {
    stdio: opts.stdio === 'pipe' ? ['ignore', 'pipe', 'pipe'] : 'inherit',
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
    ...(opts.timeoutMs !== undefined ? { timeout: opts.timeoutMs, killSignal: 'SIGKILL' as const } : {}),
  });
}

function runChecked(root: string, argv: string[], opts: RunOptions, what: string): void {
  const r = runInArm64Root(root, argv, { ...opts, stdio: 'pipe' });
  if (r.status !== 0) {
    const tail = `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n').slice(-40).join('\n');
    throw new Error(`${what} in the arm64 root failed (exit ${r.status ?? r.signal}):\n${tail}`);
  }
}

/**
 * The aarch64 shared libraries `/usr/bin/node` of the root loads, as
 * { inRoot, host } pairs (symlinks resolved on the host side), for copying node elsewhere.
 */
export function arm64NodeLibraries(root: Arm64Root): { inRoot: string; host: string }[] {
  const r = runInArm64Root(root.root, ['ldd', '/usr/bin/node'], { stdio: 'pipe' });
  if (r.status !== 0) throw new Error(`ldd /usr/bin/node in ${root.root} failed: ${r.stderr}`);
  const out: { inRoot: string; host: string }[] = [];
  for (const line of r.stdout.split('\n')) {
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (!m) continue;
    const inRoot = m[1]!;
    out.push({ inRoot, host: resolveInRoot(root.root, inRoot) });
  }
  return out;
}

/** A path inside the root as a host path, following symlinks relative to the root. */
export function resolveInRoot(root: string, p: string, depth = 0): string {
  if (depth > 40) throw new Error(`symlink loop at ${p} in ${root}`);
  const parts = p.split('/').filter(Boolean);
  let cur = '/';
  for (let i = 0; i < parts.length; i++) {
    const next = path.posix.join(cur, parts[i]!);
    const host = path.join(root, next);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(host);
    } catch {
      return path.join(root, next, ...parts.slice(i + 1));
    }
    if (st.isSymbolicLink()) {
      const target = fs.readlinkSync(host);
      const joined = target.startsWith('/') ? target : path.posix.join(cur, target);
      return resolveInRoot(root, path.posix.join(joined, ...parts.slice(i + 1)), depth + 1);
    }
    cur = next;
  }
  return path.join(root, cur);
}

// ------------------------------------------------------------------------------- build

/** Files of the build's inputs: what node_modules, the addon and dist/ depend on. */
function isBuildInput(f: string): boolean {
  return (
    f === 'package.json' || f === 'package-lock.json' || f === 'binding.gyp' || /^tsconfig[^/]*\.json$/.test(f) ||
    f.startsWith('binding/') || f.startsWith('src/')
  );
}

/** What `npm ci` depends on: a tree with the same deps key can lend its node_modules. */
function isDepsInput(f: string): boolean {
  return f === 'package.json' || f === 'package-lock.json' || f === 'binding.gyp' || f.startsWith('binding/');
}

/** The checkout's files as git sees them: tracked, plus new ones not ignored (so an uncommitted test runs too). */
export function trackedFiles(checkout: string): string[] {
  const out = execFileSync('git', ['-C', checkout, 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return out
    .split('\0')
    .filter((f) => f.length > 0)
    .filter((f) => {
      try {
        return fs.lstatSync(path.join(checkout, f)).isFile();
      } catch {
        return false; // deleted in the working tree
      }
    })
    .sort();
}

function hashFiles(checkout: string, files: string[]): string {
  const h = createHash('sha256');
  for (const f of files) {
    h.update(f).update('\0');
    h.update(fs.readFileSync(path.join(checkout, f)));
    h.update('\0');
  }
  return h.digest('hex').slice(0, 20);
}

/** Copies the tracked files into dir where they differ; removes tracked files no longer in the list. */
function syncFiles(checkout: string, files: string[], dir: string): number {
  let copied = 0;
  for (const f of files) {
    const src = path.join(checkout, f);
    const dst = path.join(dir, f);
    const data = fs.readFileSync(src);
    let same = false;
    try {
      same = fs.readFileSync(dst).equals(data);
    } catch {
      /* missing */
    }
    if (same) continue;
    fs.mkdirSync(path.dirname(dst), { recursive: true });
    const tmp = `${dst}.nvgrace-tmp`;
    fs.writeFileSync(tmp, data, { mode: fs.statSync(src).mode & 0o777 });
    fs.renameSync(tmp, dst);
    copied++;
  }
  const listFile = path.join(dir, '.nvgrace-tracked');
  const listed = new Set(files);
  try {
    for (const old of fs.readFileSync(listFile, 'utf8').split('\n')) {
      if (old && !listed.has(old)) fs.rmSync(path.join(dir, old), { force: true });
    }
  } catch {
    /* first sync */
  }
  fs.writeFileSync(listFile, files.join('\n'));
  return copied;
}

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** One builder at a time per root (parallel callers wait; a dead holder's lock is taken over). */
function withLock<T>(lockPath: string, log: (s: string) => void, fn: () => T): T {
  let said = false;
  for (;;) {
    try {
      fs.writeFileSync(lockPath, String(process.pid), { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      let owner = 0;
      try {
        owner = Number(fs.readFileSync(lockPath, 'utf8') || '0');
      } catch {
        continue;
      }
      if (owner > 0 && !pidAlive(owner)) {
        fs.rmSync(lockPath, { force: true });
        continue;
      }
      if (!said) log(`waiting for pid ${owner} (building in the arm64 root)`);
      said = true;
      sleepMs(500);
    }
  }
  try {
    return fn();
  } finally {
    fs.rmSync(lockPath, { force: true });
  }
}

interface BuildStamp {
  key: string;
  depsKey: string;
  seconds: number;
}

function readStamp(dir: string): BuildStamp | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, STAMP), 'utf8')) as BuildStamp;
  } catch {
    return null;
  }
}

/**
 * A built copy of the checkout inside the root: `npm ci` there (the addon compiled for
 * aarch64 under emulation) when its inputs are new; when only src/ or tsconfig changed,
 * node_modules and the addon come from an earlier build with the same dependencies and
 * only `tsc` runs. Other tracked files are refreshed on every call.
 */
export function ensureArm64Build(opts: Arm64Options = {}): Arm64Build {
  const log = opts.log ?? defaultLog;
  const root = ensureArm64Root(opts);
  const checkout = path.resolve(opts.checkout ?? PROJECT);
  const files = trackedFiles(checkout);
  const key = hashFiles(checkout, files.filter(isBuildInput));
  const depsKey = hashFiles(checkout, files.filter(isDepsInput));
  const workRoot = path.join(root.root, 'work');
  fs.mkdirSync(workRoot, { recursive: true });
  const dir = path.join(workRoot, key);
  const dirInRoot = `/work/${key}`;

  const finish = (built: boolean): Arm64Build => {
    syncFiles(checkout, files, dir);
    const now = new Date();
    fs.utimesSync(path.join(dir, STAMP), now, now);
    return { root, key, dirInRoot, dir, built };
  };
  if (readStamp(dir)?.key === key) return finish(false);

  return withLock(path.join(workRoot, '.lock'), log, () => {
    if (readStamp(dir)?.key === key) return finish(false);
    const start = Date.now();
    const tmpName = `${key}.tmp.${process.pid}`;
    const tmp = path.join(workRoot, tmpName);
    fs.rmSync(tmp, { recursive: true, force: true });
    for (const e of fs.readdirSync(workRoot)) {
      if (/\.tmp\.\d+$/.test(e)) fs.rmSync(path.join(workRoot, e), { recursive: true, force: true }); // an interrupted build
    }
    fs.mkdirSync(tmp);
    try {
      syncFiles(checkout, files, tmp);
      const donor = fs
        .readdirSync(workRoot)
        .map((e) => path.join(workRoot, e))
        .find((d) => readStamp(d)?.depsKey === depsKey && fs.existsSync(path.join(d, 'node_modules')));
      if (donor) {
        log(`build inputs changed, dependencies did not: node_modules and the addon from ${path.basename(donor)}`);
        execFileSync('cp', ['-a', path.join(donor, 'node_modules'), path.join(donor, 'build'), tmp]);
      } else {
        // Scripts off: the addon is built explicitly, and dist/ (plain JavaScript, the same
        // on every architecture) comes from the host's tsc, minutes faster than under emulation.
        log(`npm ci in the arm64 root (${dirInRoot}; the addon builds for aarch64 under emulation, minutes)`);
        runChecked(root.root, ['npm', 'ci', '--ignore-scripts'], { cwd: `/work/${tmpName}` }, 'npm ci');
        runChecked(root.root, ['npm', 'run', 'install'], { cwd: `/work/${tmpName}` }, 'node-gyp (the addon)');
      }
      hostTsc(checkout, tmp);
      const addon = path.join(tmp, 'build/Release/nvgrace_native.node');
      const elf = fs.readFileSync(addon).subarray(0, 20);
      if (elf.readUInt16LE(18) !== 183) throw new Error(`${addon} is not an aarch64 ELF file`);
      const seconds = Math.round((Date.now() - start) / 1000);
      fs.writeFileSync(path.join(tmp, STAMP), JSON.stringify({ key, depsKey, seconds } satisfies BuildStamp));
      fs.rmSync(dir, { recursive: true, force: true });
      fs.renameSync(tmp, dir);
      log(`built ${dirInRoot} in ${seconds} s`);
    } catch (err) {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw err;
    }
    prune(workRoot, dir);
    return finish(true);
  });
}

/** dist/ of the tree, compiled by the host's TypeScript from the same sources. */
function hostTsc(checkout: string, tree: string): void {
  const tsc = path.join(checkout, 'node_modules/typescript/bin/tsc');
  if (!fs.existsSync(tsc)) throw new Error(`${tsc} is missing: run npm ci in ${checkout} first`);
  execFileSync(process.execPath, [tsc, '-p', path.join(tree, 'tsconfig.build.json')], { cwd: tree, stdio: 'inherit' });
}

function prune(workRoot: string, keep: string): void {
  const builds = fs
    .readdirSync(workRoot)
    .map((e) => path.join(workRoot, e))
    .filter((d) => d !== keep && readStamp(d) !== null)
    .map((d) => ({ d, t: fs.statSync(path.join(d, STAMP)).mtimeMs }))
    .sort((a, b) => b.t - a.t);
  for (const { d } of builds.slice(KEEP_BUILDS - 1)) fs.rmSync(d, { recursive: true, force: true });
}
