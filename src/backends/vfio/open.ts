import fs from 'node:fs';
import path from 'node:path';
import { native } from '../../native/native.js';
import { DmaMapFlag } from '../../wire/constants.js';
import { VfioSetupError } from './host-error.js';
import { IommuDma, type Iommu } from './iommu-dma.js';
import { parseBdf, pciDeviceDir, SYSTEM_PATHS, type HostPaths } from './pci-address.js';
import {
  GroupFlag,
  IoasMapFlag,
  IommufdIoctl,
  VFIO_API_VERSION,
  VfioIoctl,
  VfioIommuType,
  attachIommufdPt,
  bindIommufd,
  deviceNameArgument,
  dmaMap,
  dmaUnmap,
  fdArgument,
  groupStatusFlags,
  groupStatusRequest,
  ioasAlloc,
  ioasAllocId,
  ioasMap,
  ioasUnmap,
} from './uapi.js';
import { VfioFunction } from './vfio-function.js';
import { serviceDropInHint } from '../service-hint.js';

export interface OpenVfioOptions {
  paths?: HostPaths;
  /** Where IOMMU unmap failures are reported (they cannot be returned to anyone). */
  onError?: (message: string, err: unknown) => void;
}

/**
 * Opens a PCI function through VFIO. `target` is a PCI address (the legacy
 * group and a type1 container; the function's cdev with iommufd when the kernel
 * has no group node) or a cdev path /dev/vfio/devices/vfioN (iommufd).
 */
export function openVfio(target: string, opts: OpenVfioOptions = {}): VfioFunction {
  const paths = opts.paths ?? SYSTEM_PATHS;
  if (target.startsWith('/')) return openCdev(target, null, paths, opts);
  const bdf = parseBdf(target);
  if (!bdf) throw new VfioSetupError(`"${target}" is neither a PCI address (0000:01:00.0) nor a VFIO device path (/dev/vfio/devices/vfio0)`);
  const group = checkHostDevice(bdf, paths);
  const groupNode = path.join(paths.dev, 'vfio', group);
  if (!fs.existsSync(groupNode)) {
    const cdev = cdevOf(bdf, paths);
    if (cdev) return openCdev(cdev, bdf, paths, opts);
  }
  return openGroup(bdf, group, paths, opts);
}

/** The device exists, is bound to a VFIO driver and sits in an IOMMU group: returns the group's number. */
export function checkHostDevice(bdf: string, paths: HostPaths = SYSTEM_PATHS): string {
  const dir = pciDeviceDir(bdf, paths);
  if (!fs.existsSync(dir)) throw new VfioSetupError(`no PCI device ${bdf} on this host (lspci -D lists them)`);
  const driver = linkName(path.join(dir, 'driver'));
  if (driver === null || !driver.includes('vfio')) {
    const unbind = driver === null ? '' : `echo ${bdf} > /sys/bus/pci/drivers/${driver}/unbind; `;
    throw new VfioSetupError(
      `device ${bdf} is ${driver === null ? 'bound to no driver' : `bound to ${driver}`}, not vfio-pci: ` +
        `modprobe vfio-pci; echo vfio-pci > /sys/bus/pci/devices/${bdf}/driver_override; ${unbind}echo ${bdf} > /sys/bus/pci/drivers_probe`,
    );
  }
  const group = linkName(path.join(dir, 'iommu_group'));
  if (group === null) {
    throw new VfioSetupError(
      `IOMMU missing: device ${bdf} is in no IOMMU group; turn the IOMMU on (firmware VT-d/AMD-Vi/SMMU, and intel_iommu=on or amd_iommu=on on the kernel command line)`,
    );
  }
  return group;
}

function linkName(p: string): string | null {
  try {
    return path.basename(fs.readlinkSync(p));
  } catch {
    return null;
  }
}

function cdevOf(bdf: string, paths: HostPaths): string | null {
  try {
    const names = fs.readdirSync(path.join(pciDeviceDir(bdf, paths), 'vfio-dev')).filter((n) => /^vfio\d+$/.test(n));
    return names.length > 0 ? path.join(paths.dev, 'vfio/devices', names[0]!) : null;
  } catch {
    return null;
  }
}

/** open(2) with the one-line explanation an operator needs for the usual failures. */
function openNode(p: string, what: string): number {
  try {
    return fs.openSync(p, fs.constants.O_RDWR);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM') {
      const hint = serviceDropInHint(err, 'vfio.conf', 'DeviceAllow= for /dev/vfio and /dev/iommu, LimitMEMLOCK=infinity, CAP_IPC_LOCK');
      if (hint !== null) throw new VfioSetupError(`no permission on ${p} (${what}): ${hint}`);
      throw new VfioSetupError(`no permission on ${p} (${what}): run the daemon as root, or give its user the node (chown USER ${p}; a udev rule keeps it across reboots)`);
    }
    if (code === 'EBUSY') throw new VfioSetupError(`${p} (${what}) is in use by another process (a QEMU or another daemon holding this device)`);
    if (code === 'ENOENT') throw new VfioSetupError(`${p} (${what}) does not exist`);
    throw new VfioSetupError(`cannot open ${p} (${what}): ${(err as Error).message}`);
  }
}

function ioctlOrExplain(fd: number, request: number, arg: Buffer | number, explain: (code: string) => string): number {
  try {
    return native.ioctl(fd, request, arg);
  } catch (err) {
    const code = (err as { code?: string }).code ?? (err as Error).message;
    throw new VfioSetupError(explain(code));
  }
}

function closeAll(fds: number[]): void {
  for (const fd of fds.reverse()) {
    try {
      native.closeFd(fd);
    } catch {
      // already closed
    }
  }
}

/** The legacy path: container + group, type1 IOMMU. */
function openGroup(bdf: string, group: string, paths: HostPaths, opts: OpenVfioOptions): VfioFunction {
  const held: number[] = [];
  try {
    const containerPath = path.join(paths.dev, 'vfio/vfio');
    if (!fs.existsSync(containerPath)) throw new VfioSetupError(`VFIO missing: ${containerPath} does not exist (modprobe vfio-pci)`);
    const container = openNode(containerPath, 'the VFIO container');
    held.push(container);
    const version = ioctlOrExplain(container, VfioIoctl.GET_API_VERSION, 0, (c) => `VFIO_GET_API_VERSION failed: ${c}`);
    if (version !== VFIO_API_VERSION) throw new VfioSetupError(`unknown VFIO API version ${version} (this daemon speaks ${VFIO_API_VERSION})`);
    const type = [VfioIommuType.TYPE1v2, VfioIommuType.TYPE1].find(
      (t) => ioctlOrExplain(container, VfioIoctl.CHECK_EXTENSION, t, (c) => `VFIO_CHECK_EXTENSION failed: ${c}`) > 0,
    );
    if (type === undefined) throw new VfioSetupError('IOMMU missing: VFIO offers no type1 IOMMU (modprobe vfio_iommu_type1; is the IOMMU on?)');

    const groupPath = path.join(paths.dev, 'vfio', group);
    const groupFd = openNode(groupPath, `IOMMU group ${group} of ${bdf}`);
    held.push(groupFd);
    const status = groupStatusRequest();
    ioctlOrExplain(groupFd, VfioIoctl.GROUP_GET_STATUS, status, (c) => `VFIO_GROUP_GET_STATUS on ${groupPath} failed: ${c}`);
    if (!(groupStatusFlags(status) & GroupFlag.VIABLE)) {
      throw new VfioSetupError(
        `IOMMU group ${group} is not viable: every device in it must be bound to vfio-pci or to no driver (${groupMembers(group, paths)})`,
      );
    }
    ioctlOrExplain(groupFd, VfioIoctl.GROUP_SET_CONTAINER, fdArgument(container), (c) => `VFIO_GROUP_SET_CONTAINER for group ${group} failed: ${c}`);
    ioctlOrExplain(container, VfioIoctl.SET_IOMMU, type, (c) =>
      c === 'EPERM'
        ? 'IOMMU without interrupt remapping: vfio_iommu_type1 refuses such hosts unless loaded with allow_unsafe_interrupts=1 (which lets the device forge interrupts)'
        : `VFIO_SET_IOMMU (type1) failed: ${c}`,
    );
    const deviceFd = ioctlOrExplain(groupFd, VfioIoctl.GROUP_GET_DEVICE_FD, deviceNameArgument(bdf), (c) => `VFIO_GROUP_GET_DEVICE_FD for ${bdf} failed: ${c}`);
    held.push(deviceFd);

    const iommu: Iommu = {
      kind: 'vfio type1',
      map(vaddr, iova, size, readable, writable) {
        native.ioctl(container, VfioIoctl.IOMMU_MAP_DMA, dmaMap(vaddr, iova, size, (readable ? DmaMapFlag.READ : 0) | (writable ? DmaMapFlag.WRITE : 0)));
      },
      unmap(iova, size) {
        native.ioctl(container, VfioIoctl.IOMMU_UNMAP_DMA, dmaUnmap(iova, size));
      },
    };
    const fn = new VfioFunction(deviceFd, `${bdf} (VFIO group ${group})`, new IommuDma(iommu, opts.onError), () => closeAll([container, groupFd]));
    return fn;
  } catch (err) {
    closeAll(held);
    throw err;
  }
}

/** The cdev path: the device's own node bound to an iommufd IO address space. */
function openCdev(cdev: string, bdf: string | null, paths: HostPaths, opts: OpenVfioOptions): VfioFunction {
  const held: number[] = [];
  try {
    const deviceFd = openNode(cdev, `VFIO device${bdf ? ` of ${bdf}` : ''}`);
    held.push(deviceFd);
    const iommuPath = path.join(paths.dev, 'iommu');
    if (!fs.existsSync(iommuPath)) throw new VfioSetupError(`IOMMU missing: ${iommuPath} does not exist (a kernel with CONFIG_IOMMUFD; modprobe iommufd)`);
    const iommufd = openNode(iommuPath, 'iommufd');
    held.push(iommufd);
    ioctlOrExplain(deviceFd, VfioIoctl.DEVICE_BIND_IOMMUFD, bindIommufd(iommufd), (c) => `VFIO_DEVICE_BIND_IOMMUFD on ${cdev} failed: ${c}`);
    const alloc = ioasAlloc();
    ioctlOrExplain(iommufd, IommufdIoctl.IOAS_ALLOC, alloc, (c) => `IOMMU_IOAS_ALLOC failed: ${c}`);
    const ioas = ioasAllocId(alloc);
    ioctlOrExplain(deviceFd, VfioIoctl.DEVICE_ATTACH_IOMMUFD_PT, attachIommufdPt(ioas), (c) =>
      c === 'EPERM' ? 'IOMMU without interrupt remapping: iommufd refuses such hosts unless allow_unsafe_interrupts=1' : `VFIO_DEVICE_ATTACH_IOMMUFD_PT on ${cdev} failed: ${c}`,
    );
    const iommu: Iommu = {
      kind: 'iommufd',
      map(vaddr, iova, size, readable, writable) {
        const flags = (readable ? IoasMapFlag.READABLE : 0) | (writable ? IoasMapFlag.WRITEABLE : 0);
        native.ioctl(iommufd, IommufdIoctl.IOAS_MAP, ioasMap(ioas, vaddr, iova, size, flags));
      },
      unmap(iova, size) {
        native.ioctl(iommufd, IommufdIoctl.IOAS_UNMAP, ioasUnmap(ioas, iova, size));
      },
    };
    return new VfioFunction(deviceFd, `${bdf ?? cdev} (VFIO cdev ${cdev}, iommufd)`, new IommuDma(iommu, opts.onError), () => closeAll([iommufd]));
  } catch (err) {
    closeAll(held);
    throw err;
  }
}

/** "0000:01:00.0 (vfio-pci), 0000:01:00.1 (snd_hda_intel)": who is in a group, for the not-viable message. */
function groupMembers(group: string, paths: HostPaths): string {
  try {
    const dir = path.join(paths.sysfs, 'kernel/iommu_groups', group, 'devices');
    return fs
      .readdirSync(dir)
      .sort()
      .map((d) => `${d} (${linkName(path.join(dir, d, 'driver')) ?? 'no driver'})`)
      .join(', ');
  } catch {
    return `see /sys/kernel/iommu_groups/${group}/devices`;
  }
}
