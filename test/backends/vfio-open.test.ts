// Opening a host device through VFIO: the operator's usual mistakes each get one line
// naming the problem and the fix. A fake sysfs and /dev tree stands in for the host.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openSysfsBar0 } from '../../src/backends/bar0-sysfs.js';
import { VfioSetupError } from '../../src/backends/vfio/host-error.js';
import { openVfio } from '../../src/backends/vfio/open.js';
import { parseBdf, type HostPaths } from '../../src/backends/vfio/pci-address.js';
import { VfioIoctl } from '../../src/backends/vfio/uapi.js';
import { unknownIoctlErrno } from '../helpers/emulation.js';

const BDF = '0000:01:00.0';
const roots: string[] = [];
afterEach(() => {
  for (const r of roots.splice(0)) fs.rmSync(r, { recursive: true, force: true });
});

interface TreeOptions {
  driver?: string;
  group?: string;
  container?: boolean;
  groupNode?: boolean;
  resource0?: number;
  enable?: string;
}

/** sysfs/bus/pci/devices/<bdf> (driver and iommu_group links) and dev/vfio. */
function tree(o: TreeOptions = {}): HostPaths {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-open-'));
  roots.push(root);
  const sysfs = path.join(root, 'sys');
  const dev = path.join(root, 'dev');
  const devDir = path.join(sysfs, 'devices/pci0000:00', BDF);
  fs.mkdirSync(devDir, { recursive: true });
  fs.mkdirSync(path.join(sysfs, 'bus/pci/devices'), { recursive: true });
  fs.symlinkSync(devDir, path.join(sysfs, 'bus/pci/devices', BDF));
  if (o.driver) {
    fs.mkdirSync(path.join(sysfs, 'bus/pci/drivers', o.driver), { recursive: true });
    fs.symlinkSync(path.join(sysfs, 'bus/pci/drivers', o.driver), path.join(devDir, 'driver'));
  }
  if (o.group) {
    fs.mkdirSync(path.join(sysfs, 'kernel/iommu_groups', o.group, 'devices'), { recursive: true });
    fs.symlinkSync(path.join(sysfs, 'kernel/iommu_groups', o.group), path.join(devDir, 'iommu_group'));
  }
  fs.mkdirSync(path.join(dev, 'vfio'), { recursive: true });
  if (o.container) fs.writeFileSync(path.join(dev, 'vfio/vfio'), '');
  if (o.groupNode && o.group) fs.writeFileSync(path.join(dev, 'vfio', o.group), '');
  if (o.resource0 !== undefined) fs.writeFileSync(path.join(devDir, 'resource0'), Buffer.alloc(o.resource0));
  if (o.enable !== undefined) fs.writeFileSync(path.join(devDir, 'enable'), o.enable);
  return { sysfs, dev };
}

function setupError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(VfioSetupError);
    const msg = (err as Error).message;
    expect(msg.split('\n')).toHaveLength(1);
    return msg;
  }
  throw new Error('expected a setup error');
}

describe('PCI addresses', () => {
  it('accepts the forms lspci prints and canonicalizes them', () => {
    expect(parseBdf('0000:01:00.0')).toBe('0000:01:00.0');
    expect(parseBdf('01:00.1')).toBe('0000:01:00.1');
    expect(parseBdf('0009:1A:1f.7')).toBe('0009:1a:1f.7');
    for (const bad of ['', '1:2', '0000:01:00.8', '0000:01:20.0', '00000:01:00.0', 'vfio0']) expect(parseBdf(bad), bad).toBeNull();
  });
});

describe('opening a host device through VFIO: one clear line per operator error', () => {
  it('no such device', () => {
    const paths = tree();
    expect(setupError(() => openVfio('0000:02:00.0', { paths }))).toBe('no PCI device 0000:02:00.0 on this host (lspci -D lists them)');
  });

  it('a target that is neither an address nor a path', () => {
    expect(setupError(() => openVfio('gpu0', { paths: tree() }))).toMatch(/neither a PCI address .* nor a VFIO device path/);
  });

  it('device bound to no driver, or to another driver than vfio-pci', () => {
    expect(setupError(() => openVfio(BDF, { paths: tree({ group: '5' }) }))).toBe(
      `device ${BDF} is bound to no driver, not vfio-pci: modprobe vfio-pci; echo vfio-pci > /sys/bus/pci/devices/${BDF}/driver_override; echo ${BDF} > /sys/bus/pci/drivers_probe`,
    );
    expect(setupError(() => openVfio(BDF, { paths: tree({ driver: 'nouveau', group: '5' }) }))).toBe(
      `device ${BDF} is bound to nouveau, not vfio-pci: modprobe vfio-pci; echo vfio-pci > /sys/bus/pci/devices/${BDF}/driver_override; echo ${BDF} > /sys/bus/pci/drivers/nouveau/unbind; echo ${BDF} > /sys/bus/pci/drivers_probe`,
    );
  });

  it('IOMMU missing: no group', () => {
    expect(setupError(() => openVfio(BDF, { paths: tree({ driver: 'vfio-pci' }) }))).toMatch(/^IOMMU missing: device 0000:01:00.0 is in no IOMMU group; turn the IOMMU on/);
  });

  it('VFIO missing: no container node', () => {
    expect(setupError(() => openVfio(BDF, { paths: tree({ driver: 'vfio-pci', group: '5', groupNode: true }) }))).toMatch(/^VFIO missing: .*\/dev\/vfio\/vfio does not exist \(modprobe vfio-pci\)$/);
  });

  it('a container node that is not VFIO', () => {
    // ENOTTY; qemu-user 7.2 (the 16 KiB run) answers ENOSYS before the kernel sees it
    const errno = unknownIoctlErrno(VfioIoctl.GET_API_VERSION);
    expect(setupError(() => openVfio(BDF, { paths: tree({ driver: 'vfio-pci', group: '5', container: true, groupNode: true }) }))).toBe(`VFIO_GET_API_VERSION failed: ${errno}`);
  });

  it('a variant driver (nvgrace_gpu_vfio_pci) is a VFIO driver too', () => {
    // gets past the driver check, to the missing container
    expect(setupError(() => openVfio(BDF, { paths: tree({ driver: 'nvgrace_gpu_vfio_pci', group: '5' }) }))).toMatch(/^VFIO missing/);
  });

  it('a cdev path without iommufd', () => {
    const paths = tree();
    fs.mkdirSync(path.join(paths.dev, 'vfio/devices'), { recursive: true });
    expect(setupError(() => openVfio(path.join(paths.dev, 'vfio/devices/vfio0'), { paths }))).toMatch(/vfio\/devices\/vfio0 \(VFIO device\) does not exist$/);
    fs.writeFileSync(path.join(paths.dev, 'vfio/devices/vfio0'), '');
    expect(setupError(() => openVfio(path.join(paths.dev, 'vfio/devices/vfio0'), { paths }))).toMatch(/^IOMMU missing: .*\/dev\/iommu does not exist/);
  });
});

describe('--bar0 sysfs: a host device with no driver, registers only', () => {
  it('maps resource0, enabling the device first', () => {
    const paths = tree({ resource0: 0x10000, enable: '0\n' });
    const dir = path.join(paths.sysfs, 'bus/pci/devices', BDF);
    const r0 = Buffer.alloc(0x10000);
    r0.writeUInt32LE(0x010000ed, 0);
    fs.writeFileSync(path.join(dir, 'resource0'), r0);
    const src = openSysfsBar0('01:00.0', paths);
    try {
      expect(fs.readFileSync(path.join(dir, 'enable'), 'utf8')).toBe('1');
      expect(src.kind).toBe('sysfs');
      expect(src.description).toMatch(/registers only: no DMA, no interrupts/);
      expect(src.barSize).toBe(0x20000); // at least room for registers and the MSI-X table
      const b = Buffer.alloc(4);
      src.memory.read(0, b, 0, 4);
      expect(b.readUInt32LE(0)).toBe(0x010000ed);
      src.memory.write(8, Buffer.from([1, 2, 3, 4]), 0, 4);
      src.memory.write(13, Buffer.from([5, 6, 7]), 0, 3);
      src.memory.write(16, Buffer.from([1, 2, 3, 4, 5, 6, 7, 8]), 0, 8);
    } finally {
      src.close();
    }
    const after = fs.readFileSync(path.join(dir, 'resource0'));
    expect(after.readUInt32LE(8)).toBe(0x04030201);
    expect([...after.subarray(13, 16)]).toEqual([5, 6, 7]);
    expect(after.readBigUInt64LE(16)).toBe(0x0807060504030201n);
  });

  it('refuses a device a driver owns, or one without a memory BAR0', () => {
    expect(() => openSysfsBar0(BDF, tree({ driver: 'nvidia', resource0: 4096, enable: '1' }))).toThrow(
      `device ${BDF} is bound to nvidia; --bar0 sysfs: needs it unbound (echo ${BDF} > /sys/bus/pci/drivers/nvidia/unbind)`,
    );
    expect(() => openSysfsBar0(BDF, tree({ enable: '1' }))).toThrow(/has no memory BAR0/);
    expect(() => openSysfsBar0('0000:09:00.0', tree())).toThrow(/no PCI device 0000:09:00.0/);
  });
});
