import fs from 'node:fs';
import type { MemoryBacking } from '../device/memory-bar.js';

/**
 * Memory reached through a file descriptor with pread/pwrite: the trapped path
 * of a BAR whose bulk the client maps from the same fd, so both views share the
 * page cache (or the device memory) and always agree. Used for character
 * devices (/dev/mem and the like); files go through a guarded WindowedMemory.
 */
export class FdMemory implements MemoryBacking {
  constructor(
    readonly fd: number,
    readonly fdOffset: number,
    readonly size: number,
  ) {}

  read(offset: number, dst: Uint8Array, dstOffset: number, count: number): void {
    let done = 0;
    while (done < count) {
      const n = fs.readSync(this.fd, dst, dstOffset + done, count - done, this.fdOffset + offset + done);
      if (n === 0) {
        // Past the end of a short file: nothing is there, read as zero.
        dst.fill(0, dstOffset + done, dstOffset + count);
        return;
      }
      done += n;
    }
  }

  write(offset: number, src: Uint8Array, srcOffset: number, count: number): void {
    let done = 0;
    while (done < count) {
      done += fs.writeSync(this.fd, src, srcOffset + done, count - done, this.fdOffset + offset + done);
    }
  }
}
