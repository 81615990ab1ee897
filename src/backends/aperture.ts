import fs from 'node:fs';
import { FdMemory } from './fd-memory.js';
import { sealedMemfd } from './sealed-memfd.js';
import { sizeGuard } from './size-guard.js';

export type ApertureKind = 'memfd' | 'file' | 'char-device';

export interface ApertureOptions {
  /** Bytes of coherent memory. */
  size: number;
  /** Host physical base: the offset of the memory inside the backing. */
  base: number;
  /** Backing file; none means anonymous shared memory (memfd). */
  path?: string | undefined;
  pageSize: number;
}

export interface Aperture {
  readonly kind: ApertureKind;
  readonly path: string | null;
  readonly memory: FdMemory;
  /** Puts back the size of a regular-file backing a client changed; the size found, or null. */
  restoreSize(): number | null;
  close(): void;
}

export class ApertureError extends Error {}

/**
 * Opens the backing of the coherent memory. Nothing here touches the memory
 * itself: a memfd or a new file is only sized (sparse), so a 512 GiB aperture
 * starts as fast as a small one.
 */
export function openAperture(opts: ApertureOptions): Aperture {
  if (!Number.isSafeInteger(opts.size) || opts.size <= 0) throw new ApertureError(`aperture size ${opts.size} must be positive`);
  if (opts.base % opts.pageSize !== 0) {
    throw new ApertureError(`aperture base 0x${opts.base.toString(16)} is not aligned to the ${opts.pageSize}-byte page`);
  }
  const end = opts.base + opts.size;
  if (!opts.path) return wrap('memfd', null, sealedMemfd('nvgrace-aperture', end), opts);

  const path = opts.path;
  let fd: number;
  try {
    // O_NOFOLLOW is not used: /dev/daxX.Y and /dev/mem are commonly reached through udev links.
    fd = fs.openSync(path, fs.constants.O_RDWR);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') throw new ApertureError(`cannot open aperture ${path}: ${(err as Error).message}`);
    fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    fs.ftruncateSync(fd, end);
  }
  try {
    const st = fs.fstatSync(fd);
    if (st.isCharacterDevice()) return wrap('char-device', path, fd, opts);
    if (!st.isFile()) throw new ApertureError(`aperture ${path} is neither a regular file nor a character device`);
    if (st.size < end) {
      throw new ApertureError(
        `aperture file ${path} holds ${st.size} bytes; base+size needs ${end} (grow it with truncate -s ${end})`,
      );
    }
    return wrap('file', path, fd, opts);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

function wrap(kind: ApertureKind, path: string | null, fd: number, opts: ApertureOptions): Aperture {
  let open = true;
  // memfds are sealed against resizing and devices have no size to change
  const restoreSize = kind === 'file' ? sizeGuard(fd) : () => null;
  return {
    kind,
    path,
    restoreSize,
    memory: new FdMemory(fd, opts.base, opts.size),
    close() {
      if (open) fs.closeSync(fd);
      open = false;
    },
  };
}
