// Finds a QEMU that can attach a vfio-user device (>= 10.1, with vfio-user-pci), and a
// guest kernel to boot with it; provisions one when asked to.
import { execFile, spawn } from 'node:child_process';
import { accessSync, constants, existsSync, readdirSync, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { release } from 'node:os';
import { PROVISION_SCRIPT, ROOT_STAMP, qemuRootDir } from './paths.js';

export const MIN_QEMU_VERSION = '10.1';

/** The guest's architecture: x86_64 (q35) or aarch64 (virt, as on Grace hosts). */
export type GuestArch = 'x86_64' | 'aarch64';
/** arm64 kernels in the provisioned root, by page size (Debian's arm64 and arm64-16k flavours). */
export type Arm64PageSize = '4k' | '16k';
export const ARM64_PAGE_SIZES: readonly Arm64PageSize[] = ['4k', '16k'];

/** The program for an architecture, and the variable that may name one. */
export const QEMU_BINARY: Record<GuestArch, { program: string; env: string }> = {
  x86_64: { program: 'qemu-system-x86_64', env: 'QEMU' },
  aarch64: { program: 'qemu-system-aarch64', env: 'QEMU_AARCH64' },
};

export interface QemuInstall {
  arch: GuestArch;
  /** Program to spawn (a qemu-system-x86_64/-aarch64, or the provisioned root's ld-linux). */
  command: string;
  /** Arguments that go before QEMU's own (loader arguments, QEMU binary, -L folders). */
  prefixArgs: string[];
  /** QEMU version, e.g. "11.1.3". */
  version: string;
  /** Guest kernel (bzImage, or the arm64 Image with 4 KiB pages) to boot with -kernel. */
  kernel: string;
  /** aarch64: the kernels by page size (kernel is the 4k one). */
  arm64Kernels: Record<Arm64PageSize, string> | null;
  /** The provisioned root this QEMU runs from, or null. */
  root: string | null;
  /** Extra environment for QEMU (QEMU_MODULE_DIR for the root's loadable modules). */
  env: Record<string, string>;
  /** Where it was found. */
  source: 'env' | 'path' | 'root';
}

export interface FindQemuOptions {
  /** Receives one line per candidate looked at and why it was taken or passed over. */
  log?: string[];
  /** Default x86_64. */
  arch?: GuestArch;
}

/** "QEMU emulator version 11.1.3 (Debian ...)" -> "11.1.3". */
export function parseQemuVersion(text: string): string | null {
  const m = /QEMU emulator version (\d+\.\d+(?:\.\d+)?)/.exec(text);
  return m?.[1] ?? null;
}

/** Numeric dotted-version comparison: versionAtLeast("11.1.3", "10.1") is true. */
export function versionAtLeast(version: string, min: string): boolean {
  const a = version.split('.').map(Number);
  const b = min.split('.').map(Number);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x !== y) return x > y;
  }
  return true;
}

function run(
  command: string,
  args: string[],
  env: Record<string, string>,
  timeoutMs = 20_000,
): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      command,
      args,
      { env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => resolve({ ok: err === null, stdout, stderr }),
    );
  });
}

function readable(path: string): boolean {
  try {
    accessSync(path, constants.R_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** Newest /boot/vmlinuz-* under a root (or "/"), or vmlinuz-* in another folder of it. */
function kernelIn(root: string, folder = 'boot'): string | null {
  const boot = join(root, folder);
  let names: string[];
  try {
    names = readdirSync(boot).filter((n) => n.startsWith('vmlinuz-'));
  } catch {
    return null;
  }
  names.sort((x, y) => y.localeCompare(x, 'en', { numeric: true }));
  for (const n of names) if (readable(join(boot, n))) return join(boot, n);
  return null;
}

function isCompleteRoot(root: string): boolean {
  return existsSync(join(root, ROOT_STAMP));
}

/** The provisioned root's arm64 kernels (arm64/4k, arm64/16k), or null when one is missing. */
export function arm64KernelsIn(root: string): Record<Arm64PageSize, string> | null {
  const found: Partial<Record<Arm64PageSize, string>> = {};
  for (const size of ARM64_PAGE_SIZES) {
    const k = kernelIn(join(root, 'arm64', size), '.');
    if (k === null) return null;
    found[size] = k;
  }
  return found as Record<Arm64PageSize, string>;
}

/**
 * aarch64 kernels: $NVGRACE_ARM64_KERNEL_4K / _16K when set, else the given root's,
 * else the provisioned root's.
 */
function findArm64Kernels(root: string | null, log: string[]): Record<Arm64PageSize, string> | null {
  const roots = [root, isCompleteRoot(qemuRootDir()) ? qemuRootDir() : null];
  let fromRoot: Record<Arm64PageSize, string> | null = null;
  for (const r of roots) if (fromRoot === null && r !== null) fromRoot = arm64KernelsIn(r);
  const out: Partial<Record<Arm64PageSize, string>> = {};
  for (const size of ARM64_PAGE_SIZES) {
    const name = `NVGRACE_ARM64_KERNEL_${size.toUpperCase()}`;
    const fromEnv = process.env[name];
    if (fromEnv !== undefined && fromEnv !== '') {
      if (!readable(fromEnv)) {
        log.push(`${name}=${fromEnv} is not a readable file`);
        return null;
      }
      out[size] = fromEnv;
    } else if (fromRoot !== null) out[size] = fromRoot[size];
    else {
      log.push(`no arm64 ${size} kernel: set ${name} or provision the QEMU root`);
      return null;
    }
  }
  return out as Record<Arm64PageSize, string>;
}

/**
 * The kernel to boot: $NVGRACE_GUEST_KERNEL, else the given root's, else the provisioned
 * root's, else the running host kernel's image when readable.
 */
function findKernel(root: string | null, log: string[]): string | null {
  const fromEnv = process.env.NVGRACE_GUEST_KERNEL;
  if (fromEnv !== undefined && fromEnv !== '') {
    if (readable(fromEnv)) return fromEnv;
    log.push(`NVGRACE_GUEST_KERNEL=${fromEnv} is not a readable file`);
    return null;
  }
  const roots = [root, isCompleteRoot(qemuRootDir()) ? qemuRootDir() : null];
  for (const r of roots) {
    if (r === null) continue;
    const k = kernelIn(r);
    if (k !== null) return k;
  }
  const host = `/boot/vmlinuz-${release()}`;
  if (readable(host)) return host;
  log.push('no guest kernel: set NVGRACE_GUEST_KERNEL or provision the QEMU root');
  return null;
}

async function probe(
  arch: GuestArch,
  label: string,
  source: QemuInstall['source'],
  command: string,
  prefixArgs: string[],
  env: Record<string, string>,
  root: string | null,
  log: string[],
): Promise<QemuInstall | null> {
  const v = await run(command, [...prefixArgs, '--version'], env);
  const version = parseQemuVersion(v.stdout);
  if (!v.ok || version === null) {
    log.push(`${label}: does not run (${(v.stderr || v.stdout).trim().split('\n')[0] ?? ''})`);
    return null;
  }
  if (!versionAtLeast(version, MIN_QEMU_VERSION)) {
    log.push(`${label}: QEMU ${version} is older than ${MIN_QEMU_VERSION}`);
    return null;
  }
  const d = await run(command, [...prefixArgs, '-device', 'help'], env);
  if (!d.stdout.includes('"vfio-user-pci"')) {
    log.push(`${label}: QEMU ${version} has no vfio-user-pci device`);
    return null;
  }
  const arm64Kernels = arch === 'aarch64' ? findArm64Kernels(root, log) : null;
  const kernel = arch === 'aarch64' ? (arm64Kernels?.['4k'] ?? null) : findKernel(root, log);
  if (kernel === null) {
    log.push(`${label}: QEMU ${version} is usable but there is no ${arch} guest kernel`);
    return null;
  }
  log.push(`${label}: using QEMU ${version}, kernel ${kernel}`);
  return { arch, command, prefixArgs, version, kernel, arm64Kernels, root, env, source };
}

/** Command line pieces that run a provisioned root's QEMU from the host (no chroot). */
export function rootQemuCommand(
  root: string,
  arch: GuestArch = 'x86_64',
): {
  command: string;
  prefixArgs: string[];
  env: Record<string, string>;
} {
  return {
    command: join(root, 'usr/lib64/ld-linux-x86-64.so.2'),
    prefixArgs: [
      '--library-path',
      [join(root, 'usr/lib/x86_64-linux-gnu'), join(root, 'lib/x86_64-linux-gnu')].join(':'),
      join(root, 'usr/bin', QEMU_BINARY[arch].program),
      '-L',
      join(root, 'usr/share/qemu'),
      ...(arch === 'x86_64' ? ['-L', join(root, 'usr/share/seabios')] : []),
    ],
    // QEMU looks for its loadable modules (accel-qtest, ...) under its configured prefix,
    // which is the host's /usr here; point it at the root's.
    env: { QEMU_MODULE_DIR: join(root, 'usr/lib/x86_64-linux-gnu/qemu') },
  };
}

/**
 * A usable QEMU for the architecture, in this order: $QEMU (a qemu-system-x86_64) or
 * $QEMU_AARCH64 (a qemu-system-aarch64), the program on PATH, the provisioned root
 * ($NVGRACE_QEMU_ROOT or /var/cache/nvgrace-vfio-user/qemu-root). Null when none
 * qualifies (options.log says why).
 */
export async function findQemu(options: FindQemuOptions = {}): Promise<QemuInstall | null> {
  const log = options.log ?? [];
  const arch = options.arch ?? 'x86_64';
  const { program, env: envName } = QEMU_BINARY[arch];

  const fromEnv = process.env[envName];
  if (fromEnv !== undefined && fromEnv !== '') {
    if (!executable(fromEnv)) log.push(`${envName}=${fromEnv}: not an executable file`);
    else {
      const q = await probe(arch, `${envName}=${fromEnv}`, 'env', fromEnv, [], {}, null, log);
      if (q !== null) return q;
    }
  }

  const onPath = (process.env.PATH ?? '')
    .split(delimiter)
    .filter((d) => d !== '')
    .map((d) => join(d, program))
    .find(executable);
  if (onPath === undefined) log.push(`PATH: no ${program}`);
  else {
    const q = await probe(arch, `PATH ${onPath}`, 'path', onPath, [], {}, null, log);
    if (q !== null) return q;
  }

  const root = qemuRootDir();
  if (!isCompleteRoot(root)) {
    log.push(`root ${root}: not provisioned for this recipe (run ${PROVISION_SCRIPT})`);
    return null;
  }
  const r = rootQemuCommand(root, arch);
  if (!executable(r.command)) {
    log.push(`root ${root}: no ${r.command}`);
    return null;
  }
  return probe(arch, `root ${root}`, 'root', r.command, r.prefixArgs, r.env, root, log);
}

/** True when a missing QEMU should be provisioned: always, unless NVGRACE_NO_PROVISION=1 outside CI. */
export function provisioningRequested(): boolean {
  // The guest tests are part of every run: provision unless the user opted out.
  return process.env.CI === 'true' || process.env.NVGRACE_NO_PROVISION !== '1';
}

/**
 * Runs provision-qemu.sh (into $NVGRACE_QEMU_ROOT or the default root). Its progress goes
 * to this process's stderr. Rejects with the tail of its output when it fails.
 */
export function provisionQemu(): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [PROVISION_SCRIPT, qemuRootDir()], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let tail = '';
    const keep = (chunk: Buffer): void => {
      process.stderr.write(chunk);
      tail = (tail + chunk.toString()).slice(-4000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${PROVISION_SCRIPT} failed (${signal ?? `exit ${code}`}):\n${tail}`));
    });
  });
}

/**
 * findQemu(), provisioning first when nothing is found and provisioning is requested
 * (see provisioningRequested, or options.provision). A root found is also handed to the
 * script, which returns at once when the root is of its current recipe and rebuilds it
 * otherwise (an older root may lack the arm64 parts); under its lock, parallel test
 * files wait for one rebuild, before any of them starts QEMU from the root.
 */
export async function ensureQemu(
  options: FindQemuOptions & { provision?: boolean } = {},
): Promise<QemuInstall | null> {
  const found = await findQemu(options);
  if (found !== null && found.source !== 'root') return found;
  if (!(options.provision ?? provisioningRequested())) return found;
  options.log?.push(`provisioning with ${PROVISION_SCRIPT}`);
  try {
    await provisionQemu();
  } catch (err) {
    if (found === null) throw err;
    // e.g. not root: an older root still serves what it has.
    options.log?.push(`provisioning failed; using the root as it is: ${(err as Error).message.split('\n')[0]}`);
    return found;
  }
  return findQemu(options);
}

/** Human-readable summary of an install, for test logs. */
export function describeQemu(q: QemuInstall): string {
  const kernels = q.arm64Kernels !== null ? Object.values(q.arm64Kernels).join(', ') : q.kernel;
  return `${QEMU_BINARY[q.arch].program} ${q.version} (${q.source}${q.root !== null ? ` ${q.root}` : ''}), kernel ${kernels}`;
}
