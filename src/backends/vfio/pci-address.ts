import path from 'node:path';

/**
 * "0000:01:00.0", "01:00.0" (domain 0) → the canonical domain:bus:device.function
 * sysfs uses; null when the text is not a PCI address.
 */
export function parseBdf(text: string): string | null {
  const m = /^(?:([0-9a-f]{1,4}):)?([0-9a-f]{1,2}):([0-9a-f]{1,2})\.([0-7])$/i.exec(text.trim());
  if (!m) return null;
  const [, domain = '0', bus, dev, fn] = m;
  if (Number.parseInt(dev!, 16) > 0x1f) return null;
  return `${domain.padStart(4, '0')}:${bus!.padStart(2, '0')}:${dev!.padStart(2, '0')}.${fn}`.toLowerCase();
}

/** Where the kernel shows PCI devices and VFIO nodes; tests point these at fake trees. */
export interface HostPaths {
  sysfs: string;
  dev: string;
}

export const SYSTEM_PATHS: HostPaths = { sysfs: '/sys', dev: '/dev' };

export function pciDeviceDir(bdf: string, paths: HostPaths = SYSTEM_PATHS): string {
  return path.join(paths.sysfs, 'bus/pci/devices', bdf);
}
