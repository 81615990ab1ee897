import fs from 'node:fs';

/**
 * A new open file description of the file behind `fd`, to hand to one client,
 * or null for a file that cannot be opened again (an anonymous inode such as a
 * VFIO device fd): that one is shared as it is.
 * File status flags (O_APPEND, O_DIRECT, O_NONBLOCK) and the file offset live
 * in the description: a client given the daemon's own could set O_APPEND and
 * send the daemon's pwrite()s to the end of the file, or make the next
 * tenant's writable mmap fail. Closed when the client goes.
 */
export function reopenForClient(fd: number): number | null {
  try {
    return fs.openSync(`/proc/self/fd/${fd}`, fs.constants.O_RDWR); // libuv adds O_CLOEXEC
  } catch {
    return null;
  }
}
