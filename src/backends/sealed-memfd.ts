import fs from 'node:fs';
import { native } from '../native/native.js';

/**
 * Shared memory of a fixed size. The client gets this fd (to map the BAR) with
 * the same open file as ours, so without seals it could ftruncate it: shrink
 * it under the next tenant's mappings (SIGBUS) or grow it to eat host memory.
 * Sealed against both; writes and hole punching (the scrub) still work.
 */
export function sealedMemfd(name: string, size: number): number {
  const fd = native.memfdCreate(name, native.MFD_ALLOW_SEALING);
  try {
    fs.ftruncateSync(fd, size);
    native.memfdAddSeals(fd, native.F_SEAL_SHRINK | native.F_SEAL_GROW | native.F_SEAL_SEAL);
  } catch (err) {
    native.closeFd(fd);
    throw err;
  }
  return fd;
}
