import fs from 'node:fs';
import path from 'node:path';
import { TWO_32 } from '../common/arith.js';
import { readIntAttr, sysPath } from './sysfs.js';

/** What sysfs says about a device-dax node such as /dev/dax0.0. */
export interface DaxDevice {
  name: string;
  /** The device's sysfs directory. */
  dir: string;
  /** Bytes the device maps. */
  size: number;
  /** Mapping granularity: offsets and lengths of a mapping must be multiples of it. */
  align: number;
  /** NUMA node of the memory, when the kernel says. */
  numaNode: number | null;
}

/** Major and minor of a Linux dev_t as glibc encodes it. */
export function devMajorMinor(rdev: number): [number, number] {
  const hi = Math.floor(rdev / TWO_32);
  const lo = rdev % TWO_32;
  const major = ((lo >>> 8) & 0xfff) | ((hi & 0xfffff000) >>> 0);
  const minor = (lo & 0xff) | ((lo >>> 12) & 0xfff00);
  return [major, minor];
}

function realpathOrNull(p: string): string | null {
  try {
    return fs.realpathSync(p);
  } catch {
    return null;
  }
}

/**
 * The device-dax behind a character device, found through sysfs: by its
 * major:minor (/sys/dev/char/M:m, whose subsystem is "dax"), else by its name
 * (/sys/bus/dax/devices/daxX.Y, /sys/class/dax/daxX.Y). Null when the device
 * is not a device-dax.
 */
export function findDaxDevice(sysfsRoot: string, devicePath: string, rdev: number): DaxDevice | null {
  const [major, minor] = devMajorMinor(rdev);
  const byNumber = realpathOrNull(sysPath(sysfsRoot, 'dev', 'char', `${major}:${minor}`));
  if (byNumber !== null) {
    const subsystem = realpathOrNull(path.join(byNumber, 'subsystem'));
    if (subsystem !== null && path.basename(subsystem) === 'dax') return readDaxDevice(byNumber);
  }
  const name = path.basename(realpathOrNull(devicePath) ?? devicePath);
  if (!/^dax\d+\.\d+$/.test(name)) return null;
  for (const dir of [sysPath(sysfsRoot, 'bus', 'dax', 'devices', name), sysPath(sysfsRoot, 'class', 'dax', name)]) {
    const real = realpathOrNull(dir);
    if (real !== null) return readDaxDevice(real);
  }
  throw new Error(`${devicePath} looks like a device-dax but sysfs has no ${name} (looked in ${sysPath(sysfsRoot, 'bus', 'dax', 'devices')} and ${sysPath(sysfsRoot, 'class', 'dax')})`);
}

/** Reads size, alignment and NUMA node from a device-dax sysfs directory. */
export function readDaxDevice(dir: string): DaxDevice {
  const name = path.basename(dir);
  const size = readIntAttr(path.join(dir, 'size'));
  if (size === null || size <= 0) throw new Error(`device-dax ${name}: cannot read its size from ${path.join(dir, 'size')}`);
  // per-device align (Linux 5.10+), else the region's
  const alignFiles = [path.join(dir, 'align'), path.join(dir, '..', 'dax_region', 'align'), path.join(dir, 'device', 'dax_region', 'align')];
  let align: number | null = null;
  for (const f of alignFiles) {
    align = readIntAttr(f);
    if (align !== null) break;
  }
  if (align === null) throw new Error(`device-dax ${name}: cannot read its alignment (looked for ${alignFiles.join(', ')})`);
  if (align <= 0 || 2 ** Math.round(Math.log2(align)) !== align) {
    throw new Error(`device-dax ${name}: alignment ${align} is not a power of two`);
  }
  if (size % align !== 0) throw new Error(`device-dax ${name}: size ${size} is not a multiple of its alignment ${align}`);
  let numaNode: number | null = null;
  for (const f of ['target_node', 'numa_node']) {
    const n = readIntAttr(path.join(dir, f));
    if (n !== null) {
      numaNode = n >= 0 ? n : null;
      break;
    }
  }
  return { name, dir, size, align, numaNode };
}
