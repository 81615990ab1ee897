import type { MemoryBacking } from '../device/memory-bar.js';
import { native } from '../native/native.js';
import { copyBytes } from './byte-copy.js';

/**
 * Memory reached through the daemon's own shared mapping of an fd. Used where
 * pread/pwrite do not work, such as sysfs `resource0` files of memory BARs,
 * which only support mmap, and for the emulated register file, where a trapped
 * access then costs no syscall. Only for fds nobody can shrink (sysfs, sealed
 * memfds): touching a mapping past the end of a truncated file is a SIGBUS.
 */
export class MappedMemory implements MemoryBacking {
  private readonly buffer: ArrayBuffer;
  private readonly bytes: Uint8Array;

  constructor(
    readonly fd: number,
    readonly fdOffset: number,
    readonly size: number,
  ) {
    this.buffer = native.mmap(fd, size, native.PROT_READ | native.PROT_WRITE, native.MAP_SHARED, fdOffset);
    this.bytes = new Uint8Array(this.buffer);
  }

  read(offset: number, dst: Uint8Array, dstOffset: number, count: number): void {
    copyBytes(this.bytes, offset, dst, dstOffset, count);
  }

  write(offset: number, src: Uint8Array, srcOffset: number, count: number): void {
    copyBytes(src, srcOffset, this.bytes, offset, count);
  }

  unmap(): void {
    native.munmap(this.buffer);
  }
}
