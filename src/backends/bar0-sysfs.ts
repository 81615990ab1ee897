import fs from 'node:fs';
import path from 'node:path';
import type { Bar0Source } from '../device/bar0-source.js';
import { nextPowerOfTwo } from '../common/arith.js';
import { MIN_FILE_BAR0_SIZE } from './bar0-file.js';
import { MmioMemory } from './mmio-memory.js';
import { serviceDropInHint } from './service-hint.js';
import { parseBdf, pciDeviceDir, SYSTEM_PATHS, type HostPaths } from './vfio/pci-address.js';

/**
 * BAR0 of a host PCI function with no driver bound, through its sysfs
 * `resource0`: the client maps the registers directly and trapped accesses go
 * through the daemon's mapping. Register access only: no host driver owns the
 * function, so nothing maps client memory for its DMA or forwards its
 * interrupts; config space stays the daemon's emulated one.
 */
/** A resourceN and `enable` are written through /sys, which the shipped unit mounts read-only. */
function sysfsHint(err: unknown): string {
  const hint = serviceDropInHint(err, 'vfio.conf', 'ReadWritePaths=/sys/devices');
  return hint === null ? '' : `; ${hint}`;
}

export function openSysfsBar0(target: string, paths: HostPaths = SYSTEM_PATHS): Bar0Source {
  const bdf = parseBdf(target);
  if (!bdf) throw new Error(`"${target}" is not a PCI address like 0000:01:00.0`);
  const dir = pciDeviceDir(bdf, paths);
  if (!fs.existsSync(dir)) throw new Error(`no PCI device ${bdf} on this host (lspci -D lists them)`);
  let driver: string | null = null;
  try {
    driver = path.basename(fs.readlinkSync(path.join(dir, 'driver')));
  } catch {
    // no driver: what we want
  }
  if (driver !== null) {
    throw new Error(`device ${bdf} is bound to ${driver}; --bar0 sysfs: needs it unbound (echo ${bdf} > /sys/bus/pci/drivers/${driver}/unbind)`);
  }
  const resource = path.join(dir, 'resource0');
  if (!fs.existsSync(resource)) throw new Error(`device ${bdf} has no memory BAR0 (${resource} is missing)`);
  // Memory decoding must be on for the registers to answer; `enable` turns it on (and keeps a count).
  try {
    if (fs.readFileSync(path.join(dir, 'enable'), 'utf8').trim() === '0') fs.writeFileSync(path.join(dir, 'enable'), '1');
  } catch (err) {
    // the kernel lets only CAP_SYS_ADMIN write `enable`; the shipped unit gives no capabilities
    const hint =
      (err as NodeJS.ErrnoException).code === 'EPERM'
        ? `; writing it needs CAP_SYS_ADMIN${process.env['INVOCATION_ID'] !== undefined ? ', which the service does not have' : ''}: enable the device before the daemon starts (echo 1 > ${path.join(dir, 'enable')} as root)`
        : sysfsHint(err);
    throw new Error(`cannot enable ${bdf} (${path.join(dir, 'enable')}): ${(err as Error).message}${hint}`);
  }
  let fd: number;
  try {
    fd = fs.openSync(resource, fs.constants.O_RDWR);
  } catch (err) {
    throw new Error(`cannot open ${resource}: ${(err as Error).message}${sysfsHint(err)}`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size === 0) throw new Error(`${resource} is empty`);
    const memory = new MmioMemory(fd, 0, size);
    let open = true;
    return {
      kind: 'sysfs',
      description: `sysfs ${bdf} resource0 (registers only: no DMA, no interrupts)`,
      memory,
      barSize: Math.max(MIN_FILE_BAR0_SIZE, nextPowerOfTwo(size)),
      reset() {},
      close() {
        if (open) {
          memory.unmap();
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
