import fs from 'node:fs';
import { nextPowerOfTwo } from '../common/arith.js';
import type { Bar0Source } from '../device/bar0-source.js';
import { serviceDropInHint } from './service-hint.js';
import { native } from '../native/native.js';
import { MmioMemory } from './mmio-memory.js';
import { sizeGuard } from './size-guard.js';
import { WindowedMemory } from './windowed-memory.js';

const SYSFS_MAGIC = 0x62656572;

/** Smallest BAR0 we present: room for registers and, in its last 64 KiB, the MSI-X table. */
export const MIN_FILE_BAR0_SIZE = 128 * 1024;

/**
 * BAR0 from the bytes of a file, e.g. a PCI `resource0` in sysfs: the client
 * maps the file itself; trapped accesses go through the daemon's own mapping,
 * because sysfs resource files of memory BARs cannot be read with pread, at
 * the access's own width, because registers care.
 */
export function openFileBar0(path: string): Bar0Source {
  let fd: number;
  try {
    fd = fs.openSync(path, fs.constants.O_RDWR);
  } catch (err) {
    const hint = path.startsWith('/sys/') ? serviceDropInHint(err, 'vfio.conf', 'ReadWritePaths=/sys/devices') : null;
    throw new Error(`cannot open BAR0 file ${path}: ${(err as Error).message}${hint === null ? '' : `; ${hint}`}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new Error(`BAR0 file ${path} is not a regular file`);
    if (st.size === 0) throw new Error(`BAR0 file ${path} is empty`);
    // A sysfs resource file cannot be resized, but can only be mapped. Any other
    // file a client can truncate: it is copied through the SIGBUS guard, so a
    // trapped access to bytes it cut off gets an error instead of ending us.
    const sysfs = fs.statfsSync(path).type === SYSFS_MAGIC;
    const memory = sysfs ? new MmioMemory(fd, 0, st.size) : new WindowedMemory(fd, 0, st.size, native.pageSize(), { guarded: true });
    let open = true;
    return {
      kind: 'file',
      description: `file ${path}`,
      memory,
      barSize: Math.max(MIN_FILE_BAR0_SIZE, nextPowerOfTwo(st.size)),
      reset() {},
      restoreSize: sysfs ? () => null : sizeGuard(fd),
      close() {
        if (open) {
          if (memory instanceof MmioMemory) memory.unmap();
          else memory.close();
          fs.closeSync(fd);
        }
        open = false;
      },
    };
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}
