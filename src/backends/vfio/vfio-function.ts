import fs from 'node:fs';
import type { HostFunction, HostIrq, HostRegion } from '../../device/host-function.js';
import { native } from '../../native/native.js';
import { DeviceFlag, RegionFlag } from '../../wire/constants.js';
import { HostError } from './host-error.js';
import type { IommuDma } from './iommu-dma.js';
import {
  StructSize,
  VfioIoctl,
  decodeVfioDeviceInfo,
  decodeVfioIrqInfo,
  decodeVfioRegionInfo,
  deviceInfoRequest,
  irqInfoRequest,
  irqSet,
  regionInfoRequest,
  type VfioRegionInfo,
} from './uapi.js';

/** vfio-pci's fixed region indexes: BAR0-5, ROM, config space, VGA. */
const PCI_REGIONS = 9;

/**
 * An open VFIO device fd of a PCI function (from a group or a cdev): its regions
 * and interrupts as the kernel describes them, register access with pread and
 * pwrite at the region's offset, interrupts and reset by ioctl.
 */
export class VfioFunction implements HostFunction {
  readonly resettable: boolean;
  private readonly regions: (HostRegion & { offset: number })[] = [];
  private readonly irqs: HostIrq[] = [];
  private closed = false;

  constructor(
    readonly fd: number,
    readonly description: string,
    readonly dma: IommuDma | null,
    private readonly release: () => void,
  ) {
    const info = decodeVfioDeviceInfo(this.ioctl(VfioIoctl.DEVICE_GET_INFO, deviceInfoRequest(), 'VFIO_DEVICE_GET_INFO'));
    if (!(info.flags & DeviceFlag.PCI)) throw new Error(`${description} is not a PCI device (VFIO device flags 0x${info.flags.toString(16)})`);
    this.resettable = (info.flags & DeviceFlag.RESET) !== 0;
    for (let i = 0; i < Math.min(info.numRegions, PCI_REGIONS); i++) {
      const r = this.regionInfo(i);
      if (r === null || r.size === 0) continue;
      let mmap: HostRegion['mmap'] = null;
      if (r.flags & RegionFlag.MMAP) {
        const areas = (r.sparse ?? [{ offset: 0, size: r.size }]).filter((a) => a.size > 0);
        if (areas.length > 0) mmap = { fd, fdOffset: r.offset, areas };
      }
      this.regions[i] = {
        index: i,
        size: r.size,
        offset: r.offset,
        readable: (r.flags & RegionFlag.READ) !== 0,
        writable: (r.flags & RegionFlag.WRITE) !== 0,
        mmap,
      };
    }
    for (let i = 0; i < info.numIrqs; i++) {
      const irq = decodeVfioIrqInfo(this.ioctl(VfioIoctl.DEVICE_GET_IRQ_INFO, irqInfoRequest(i), 'VFIO_DEVICE_GET_IRQ_INFO'));
      this.irqs[i] = { flags: irq.flags, count: irq.count };
    }
  }

  region(index: number): HostRegion | null {
    return this.regions[index] ?? null;
  }

  irq(index: number): HostIrq | null {
    const irq = this.irqs[index];
    return irq && irq.count > 0 ? irq : null;
  }

  read(index: number, offset: number, dst: Uint8Array, dstOffset: number, count: number): void {
    const at = this.offsetOf(index, offset, count);
    let done = 0;
    while (done < count) {
      const n = fs.readSync(this.fd, dst, dstOffset + done, count - done, at + done);
      if (n === 0) throw new HostError(`${this.description}: region ${index} read at 0x${(offset + done).toString(16)} returned nothing`, 5);
      done += n;
    }
  }

  write(index: number, offset: number, src: Uint8Array, srcOffset: number, count: number): void {
    const at = this.offsetOf(index, offset, count);
    let done = 0;
    while (done < count) {
      const n = fs.writeSync(this.fd, src, srcOffset + done, count - done, at + done);
      if (n === 0) throw new HostError(`${this.description}: region ${index} write at 0x${(offset + done).toString(16)} took nothing`, 5);
      done += n;
    }
  }

  setIrqs(flags: number, index: number, start: number, count: number, data: { eventfds?: readonly (number | null)[]; bools?: Uint8Array }): void {
    this.ioctl(VfioIoctl.DEVICE_SET_IRQS, irqSet(flags, index, start, count, data), 'VFIO_DEVICE_SET_IRQS');
  }

  reset(): void {
    this.ioctl(VfioIoctl.DEVICE_RESET, 0, 'VFIO_DEVICE_RESET');
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.dma?.clear();
    try {
      native.closeFd(this.fd);
    } finally {
      this.release();
    }
  }

  private offsetOf(index: number, offset: number, count: number): number {
    const r = this.regions[index];
    if (!r || offset + count > r.size) throw new HostError(`${this.description}: region ${index} has no [0x${offset.toString(16)}, +${count})`, 22);
    return r.offset + offset;
  }

  /**
   * Region info with its capabilities: asked with 32 bytes, again with the size
   * the kernel wants. Null for a region the device lacks (vfio-pci refuses the
   * VGA region of a device without VGA with EINVAL).
   */
  private regionInfo(index: number): VfioRegionInfo | null {
    let argsz: number = StructSize.REGION_INFO;
    for (;;) {
      const req = regionInfoRequest(index, argsz);
      try {
        native.ioctl(this.fd, VfioIoctl.DEVICE_GET_REGION_INFO, req);
      } catch (err) {
        if ((err as { code?: string }).code === 'EINVAL') return null;
        throw new HostError(`${this.description}: VFIO_DEVICE_GET_REGION_INFO ${index} failed: ${(err as Error).message}`, (err as { errno?: number }).errno ?? 5);
      }
      const b = req;
      const info = decodeVfioRegionInfo(b);
      if (info.argsz <= argsz || argsz > StructSize.REGION_INFO) return info;
      argsz = info.argsz;
    }
  }

  private ioctl<T extends Buffer | number>(request: number, arg: T, name: string): T {
    try {
      native.ioctl(this.fd, request, arg);
    } catch (err) {
      const e = err as { code?: string; errno?: number };
      throw new HostError(`${this.description}: ${name} failed: ${e.code ?? (err as Error).message}`, e.errno ?? 5);
    }
    return arg;
  }
}
