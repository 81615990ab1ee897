// The systemd guest: a Debian trixie root with systemd as PID 1, provisioned by
// provision-systemd-root.sh, and the per-run disk that carries the project into it.
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { filesUnder, productionPackages, REPO_DIR } from './node-initramfs.js';
import { GUEST_DIR, SYSTEM_CACHE_DIR, guestCacheDir } from './paths.js';

export const SYSTEMD_PROVISION_SCRIPT = join(GUEST_DIR, 'provision-systemd-root.sh');
export const SYSTEMD_ROOT_STAMP = '.nvgrace-systemd-root.stamp';

/** $NVGRACE_SYSTEMD_ROOT, else /var/cache/nvgrace-vfio-user/systemd-root. */
export function systemdRootDir(): string {
  const fromEnv = process.env.NVGRACE_SYSTEMD_ROOT;
  return fromEnv !== undefined && fromEnv !== '' ? fromEnv : join(SYSTEM_CACHE_DIR, 'systemd-root');
}

export interface SystemdRoot {
  dir: string;
  image: string;
  kernel: string;
  initrd: string;
}

function complete(dir: string): SystemdRoot | null {
  const r = { dir, image: join(dir, 'rootfs.img'), kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.cpio') };
  return existsSync(join(dir, SYSTEMD_ROOT_STAMP)) && existsSync(r.image) && existsSync(r.kernel) && existsSync(r.initrd) ? r : null;
}

/**
 * The provisioned root, built first when missing (the script is a no-op when its stamp
 * matches the recipe). Its progress goes to stderr; rejects with the tail of its output.
 */
export function ensureSystemdRoot(): Promise<SystemdRoot> {
  const dir = systemdRootDir();
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [SYSTEMD_PROVISION_SCRIPT, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let tail = '';
    const keep = (chunk: Buffer): void => {
      process.stderr.write(chunk);
      tail = (tail + chunk.toString()).slice(-4000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const root = complete(dir);
      if (code === 0 && root !== null) resolve(root);
      else reject(new Error(`${SYSTEMD_PROVISION_SCRIPT} failed (${signal ?? `exit ${code}`}):\n${tail}`));
    });
  });
}

export interface PayloadDisk {
  path: string;
  bytes: number;
  remove(): void;
}

/**
 * A raw ext4 image (mke2fs -d, no loop mount) mounted read-only on /opt in the guest:
 * nvgrace-vfio-user/ is the checkout as `npm ci` leaves it (package.json, bin/, dist/,
 * the built addon, production node_modules/, systemd/), nvgrace-test/ the guest's
 * script, its parameters and the client.
 */
export function buildPayloadDisk(testFiles: Record<string, string | Buffer>): PayloadDisk {
  const base = join(guestCacheDir(), 'systemd-guest');
  const stage = join(base, `payload-${process.pid}-${Date.now()}`);
  const image = `${stage}.img`;
  const put = (rel: string, data: string | Buffer, mode = 0o644): void => {
    const to = join(stage, rel);
    mkdirSync(dirname(to), { recursive: true });
    writeFileSync(to, data, { mode });
  };
  const copy = (from: string): void => {
    const to = join(stage, 'nvgrace-vfio-user', relative(REPO_DIR, from));
    mkdirSync(dirname(to), { recursive: true });
    copyFileSync(from, to);
  };
  try {
    for (const f of ['package.json', 'bin/nvgrace-vfio-user.js', 'build/Release/nvgrace_native.node']) copy(join(REPO_DIR, f));
    for (const dir of ['dist', 'systemd']) for (const f of filesUnder(join(REPO_DIR, dir))) if (!f.endsWith('.map')) copy(f);
    for (const pkg of productionPackages(REPO_DIR)) for (const f of filesUnder(pkg)) copy(f);
    for (const [rel, data] of Object.entries(testFiles)) put(join('nvgrace-test', rel), data, rel.endsWith('.sh') ? 0o755 : 0o644);
    const used = Number(execFileSync('du', ['-sm', '--apparent-size', stage], { encoding: 'utf8' }).split('\t')[0]);
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'nvgrace-payload', '-d', stage, image, `${used * 2 + 32}M`], { stdio: 'pipe' });
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
  return { path: image, bytes: statSync(image).size, remove: () => rmSync(image, { force: true }) };
}

/** A file of this folder, for the payload. */
export function guestFile(name: string): string {
  return readFileSync(join(GUEST_DIR, name), 'utf8');
}
