// Where the real-QEMU test infrastructure keeps things.
import { accessSync, constants, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** This folder (test/guest). */
export const GUEST_DIR = dirname(fileURLToPath(import.meta.url));

/** The provisioning script. */
export const PROVISION_SCRIPT = join(GUEST_DIR, 'provision-qemu.sh');

/** The guest-side BAR checker's source. */
export const BAR_CHECK_SOURCE = join(GUEST_DIR, 'bar-check.c');

/** System-wide cache (the provisioning script's default parent folder). */
export const SYSTEM_CACHE_DIR = '/var/cache/nvgrace-vfio-user';

/** Name of the file provision-qemu.sh writes into a complete root. */
export const ROOT_STAMP = '.nvgrace-qemu-root.stamp';

/** The QEMU root: $NVGRACE_QEMU_ROOT, else /var/cache/nvgrace-vfio-user/qemu-root. */
export function qemuRootDir(): string {
  const fromEnv = process.env.NVGRACE_QEMU_ROOT;
  return fromEnv !== undefined && fromEnv !== '' ? fromEnv : join(SYSTEM_CACHE_DIR, 'qemu-root');
}

function writableDir(dir: string): boolean {
  try {
    mkdirSync(dir, { recursive: true });
    accessSync(dir, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

let cacheDir: string | undefined;

/**
 * Folder for built artefacts (bar-check binaries, initramfs images): $NVGRACE_CACHE_DIR,
 * else /var/cache/nvgrace-vfio-user when writable, else ~/.cache/nvgrace-vfio-user
 * ($XDG_CACHE_HOME honoured). Created on first use.
 */
export function guestCacheDir(): string {
  if (cacheDir !== undefined) return cacheDir;
  const fromEnv = process.env.NVGRACE_CACHE_DIR;
  const xdg = process.env.XDG_CACHE_HOME;
  const candidates =
    fromEnv !== undefined && fromEnv !== ''
      ? [fromEnv]
      : [
          SYSTEM_CACHE_DIR,
          join(xdg !== undefined && xdg !== '' ? xdg : join(homedir(), '.cache'), 'nvgrace-vfio-user'),
        ];
  for (const dir of candidates) {
    if (writableDir(dir)) {
      cacheDir = dir;
      return dir;
    }
  }
  throw new Error(`no writable cache folder among: ${candidates.join(', ')}`);
}
