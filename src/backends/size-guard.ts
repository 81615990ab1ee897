import fs from 'node:fs';

/**
 * A regular file whose fd clients get can be truncated or grown by them (an
 * fd that maps writable can also ftruncate). This remembers the size and puts
 * it back; returns the size found when it had changed, else null.
 */
export function sizeGuard(fd: number): () => number | null {
  const size = fs.fstatSync(fd).size;
  return () => {
    const now = fs.fstatSync(fd).size;
    if (now === size) return null;
    fs.ftruncateSync(fd, size);
    return now;
  };
}
