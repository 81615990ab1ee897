// The host VFIO and iommufd kernel interfaces (<linux/vfio.h>, <linux/iommufd.h>):
// ioctl numbers and the byte layout of their structures. Pure: no I/O here, so
// every layout is unit tested against the C headers. The device, region and DMA
// flags are the ones vfio-user reuses: wire/constants.ts holds them for both.
import { RegionCap, RegionFlag } from '../../wire/constants.js';
import type { SparseArea } from '../../wire/messages.js';

/** _IO(type, nr): VFIO and iommufd encode neither a size nor a direction. */
function io(type: number, nr: number): number {
  return (type << 8) | nr;
}

const VFIO_TYPE = 0x3b; // ';'
const VFIO_BASE = 100;
const IOMMUFD_TYPE = 0x3b;

export const VfioIoctl = {
  GET_API_VERSION: io(VFIO_TYPE, VFIO_BASE + 0),
  CHECK_EXTENSION: io(VFIO_TYPE, VFIO_BASE + 1),
  SET_IOMMU: io(VFIO_TYPE, VFIO_BASE + 2),
  GROUP_GET_STATUS: io(VFIO_TYPE, VFIO_BASE + 3),
  GROUP_SET_CONTAINER: io(VFIO_TYPE, VFIO_BASE + 4),
  GROUP_UNSET_CONTAINER: io(VFIO_TYPE, VFIO_BASE + 5),
  GROUP_GET_DEVICE_FD: io(VFIO_TYPE, VFIO_BASE + 6),
  DEVICE_GET_INFO: io(VFIO_TYPE, VFIO_BASE + 7),
  DEVICE_GET_REGION_INFO: io(VFIO_TYPE, VFIO_BASE + 8),
  DEVICE_GET_IRQ_INFO: io(VFIO_TYPE, VFIO_BASE + 9),
  DEVICE_SET_IRQS: io(VFIO_TYPE, VFIO_BASE + 10),
  DEVICE_RESET: io(VFIO_TYPE, VFIO_BASE + 11),
  IOMMU_GET_INFO: io(VFIO_TYPE, VFIO_BASE + 12),
  IOMMU_MAP_DMA: io(VFIO_TYPE, VFIO_BASE + 13),
  IOMMU_UNMAP_DMA: io(VFIO_TYPE, VFIO_BASE + 14),
  DEVICE_BIND_IOMMUFD: io(VFIO_TYPE, VFIO_BASE + 18),
  DEVICE_ATTACH_IOMMUFD_PT: io(VFIO_TYPE, VFIO_BASE + 19),
} as const;

export const IommufdIoctl = {
  DESTROY: io(IOMMUFD_TYPE, 0x80),
  IOAS_ALLOC: io(IOMMUFD_TYPE, 0x81),
  IOAS_MAP: io(IOMMUFD_TYPE, 0x85),
  IOAS_UNMAP: io(IOMMUFD_TYPE, 0x86),
} as const;

export const VFIO_API_VERSION = 0;
export const VfioIommuType = { TYPE1: 1, TYPE1v2: 3 } as const;

export const GroupFlag = { VIABLE: 1 << 0, CONTAINER_SET: 1 << 1 } as const;
/** Region capabilities of the host kernel: vfio-user's, and one more. */
export const RegionInfoCap = { ...RegionCap, MSIX_MAPPABLE: 3 } as const;
export const IoasMapFlag = { FIXED_IOVA: 1 << 0, WRITEABLE: 1 << 1, READABLE: 1 << 2 } as const;

export const StructSize = {
  GROUP_STATUS: 8,
  DEVICE_INFO: 24,
  REGION_INFO: 32,
  IRQ_INFO: 16,
  IRQ_SET: 20,
  DMA_MAP: 32,
  DMA_UNMAP: 24,
  BIND_IOMMUFD: 16,
  ATTACH_IOMMUFD_PT: 12,
  IOAS_ALLOC: 12,
  IOAS_MAP: 40,
  IOAS_UNMAP: 24,
} as const;

function u64(buf: Buffer, at: number, value: number): void {
  buf.writeBigUInt64LE(BigInt(value), at);
}

function readU64(buf: Buffer, at: number): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`64-bit value 0x${v.toString(16)} beyond 2^53`);
  return Number(v);
}

/** struct vfio_group_status with argsz set, for the kernel to fill. */
export function groupStatusRequest(): Buffer {
  const b = Buffer.alloc(StructSize.GROUP_STATUS);
  b.writeUInt32LE(StructSize.GROUP_STATUS, 0);
  return b;
}

export function groupStatusFlags(b: Buffer): number {
  return b.readUInt32LE(4);
}

/** The int32 the group's SET_CONTAINER takes by pointer. */
export function fdArgument(fd: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(fd, 0);
  return b;
}

/** GROUP_GET_DEVICE_FD takes the device's name as a NUL-terminated string. */
export function deviceNameArgument(name: string): Buffer {
  return Buffer.from(`${name}\0`, 'utf8');
}

export interface VfioDeviceInfo {
  flags: number;
  numRegions: number;
  numIrqs: number;
}

export function deviceInfoRequest(): Buffer {
  const b = Buffer.alloc(StructSize.DEVICE_INFO);
  b.writeUInt32LE(StructSize.DEVICE_INFO, 0);
  return b;
}

export function decodeVfioDeviceInfo(b: Buffer): VfioDeviceInfo {
  return { flags: b.readUInt32LE(4), numRegions: b.readUInt32LE(8), numIrqs: b.readUInt32LE(12) };
}

export interface VfioRegionInfo {
  index: number;
  flags: number;
  size: number;
  /** Offset of the region in the device fd (for pread/pwrite and mmap). */
  offset: number;
  /** Areas that may be mapped, when the region has a sparse mmap capability. */
  sparse: SparseArea[] | null;
  /** The whole region may be mapped even where the MSI-X table is. */
  msixMappable: boolean;
  /** The size the kernel wants for the capabilities; larger than argsz means ask again. */
  argsz: number;
}

/** struct vfio_region_info of `argsz` bytes (32, or more to receive capabilities). */
export function regionInfoRequest(index: number, argsz: number = StructSize.REGION_INFO): Buffer {
  const b = Buffer.alloc(Math.max(argsz, StructSize.REGION_INFO));
  b.writeUInt32LE(b.length, 0);
  b.writeUInt32LE(index, 8);
  return b;
}

/** Decodes a region info reply, following its capability chain when it fits in the buffer. */
export function decodeVfioRegionInfo(b: Buffer): VfioRegionInfo {
  const info: VfioRegionInfo = {
    argsz: b.readUInt32LE(0),
    flags: b.readUInt32LE(4),
    index: b.readUInt32LE(8),
    size: readU64(b, 16),
    offset: readU64(b, 24),
    sparse: null,
    msixMappable: false,
  };
  if (!(info.flags & RegionFlag.CAPS) || info.argsz > b.length) return info;
  let at = b.readUInt32LE(12);
  for (let hops = 0; at !== 0 && hops < 64; hops++) {
    if (at < StructSize.REGION_INFO || at + 8 > b.length) throw new RangeError(`region ${info.index}: capability at ${at} outside the ${b.length}-byte info`);
    const id = b.readUInt16LE(at);
    const next = b.readUInt32LE(at + 4);
    if (id === RegionInfoCap.SPARSE_MMAP) {
      const n = b.readUInt32LE(at + 8);
      if (at + 16 + 16 * n > b.length) throw new RangeError(`region ${info.index}: ${n} sparse areas overrun the info`);
      info.sparse = [];
      for (let i = 0; i < n; i++) {
        info.sparse.push({ offset: readU64(b, at + 16 + 16 * i), size: readU64(b, at + 24 + 16 * i) });
      }
    } else if (id === RegionInfoCap.MSIX_MAPPABLE) {
      info.msixMappable = true;
    }
    at = next;
  }
  return info;
}

export interface VfioIrqInfo {
  index: number;
  flags: number;
  count: number;
}

export function irqInfoRequest(index: number): Buffer {
  const b = Buffer.alloc(StructSize.IRQ_INFO);
  b.writeUInt32LE(StructSize.IRQ_INFO, 0);
  b.writeUInt32LE(index, 8);
  return b;
}

export function decodeVfioIrqInfo(b: Buffer): VfioIrqInfo {
  return { flags: b.readUInt32LE(4), index: b.readUInt32LE(8), count: b.readUInt32LE(12) };
}

/**
 * struct vfio_irq_set. `data` is what follows the header: one int32 eventfd per
 * interrupt (-1 de-assigns) for DATA_EVENTFD, one byte per interrupt for
 * DATA_BOOL, nothing for DATA_NONE. The flags are the same numbers as vfio-user's.
 */
export function irqSet(flags: number, index: number, start: number, count: number, data: { eventfds?: readonly (number | null)[]; bools?: Uint8Array } = {}): Buffer {
  const fds = data.eventfds;
  const dataSize = fds ? 4 * fds.length : data.bools ? data.bools.length : 0;
  const b = Buffer.alloc(StructSize.IRQ_SET + dataSize);
  b.writeUInt32LE(b.length, 0);
  b.writeUInt32LE(flags, 4);
  b.writeUInt32LE(index, 8);
  b.writeUInt32LE(start, 12);
  b.writeUInt32LE(count, 16);
  if (fds) fds.forEach((fd, i) => b.writeInt32LE(fd ?? -1, StructSize.IRQ_SET + 4 * i));
  else if (data.bools) b.set(data.bools, StructSize.IRQ_SET);
  return b;
}

/** struct vfio_iommu_type1_dma_map. */
export function dmaMap(vaddr: number, iova: number, size: number, flags: number): Buffer {
  const b = Buffer.alloc(StructSize.DMA_MAP);
  b.writeUInt32LE(StructSize.DMA_MAP, 0);
  b.writeUInt32LE(flags, 4);
  u64(b, 8, vaddr);
  u64(b, 16, iova);
  u64(b, 24, size);
  return b;
}

/** struct vfio_iommu_type1_dma_unmap (no dirty bitmap). */
export function dmaUnmap(iova: number, size: number, flags = 0): Buffer {
  const b = Buffer.alloc(StructSize.DMA_UNMAP);
  b.writeUInt32LE(StructSize.DMA_UNMAP, 0);
  b.writeUInt32LE(flags, 4);
  u64(b, 8, iova);
  u64(b, 16, size);
  return b;
}

/** struct vfio_device_bind_iommufd; the kernel writes out_devid at 12. */
export function bindIommufd(iommufd: number): Buffer {
  const b = Buffer.alloc(StructSize.BIND_IOMMUFD);
  b.writeUInt32LE(StructSize.BIND_IOMMUFD, 0);
  b.writeInt32LE(iommufd, 8);
  return b;
}

/** struct vfio_device_attach_iommufd_pt. */
export function attachIommufdPt(ptId: number): Buffer {
  const b = Buffer.alloc(StructSize.ATTACH_IOMMUFD_PT);
  b.writeUInt32LE(StructSize.ATTACH_IOMMUFD_PT, 0);
  b.writeUInt32LE(ptId, 8);
  return b;
}

/** struct iommu_ioas_alloc; the kernel writes out_ioas_id at 8. */
export function ioasAlloc(): Buffer {
  const b = Buffer.alloc(StructSize.IOAS_ALLOC);
  b.writeUInt32LE(StructSize.IOAS_ALLOC, 0);
  return b;
}

export function ioasAllocId(b: Buffer): number {
  return b.readUInt32LE(8);
}

/** struct iommu_ioas_map at a fixed IOVA. */
export function ioasMap(ioasId: number, userVa: number, iova: number, length: number, flags: number): Buffer {
  const b = Buffer.alloc(StructSize.IOAS_MAP);
  b.writeUInt32LE(StructSize.IOAS_MAP, 0);
  b.writeUInt32LE(flags | IoasMapFlag.FIXED_IOVA, 4);
  b.writeUInt32LE(ioasId, 8);
  u64(b, 16, userVa);
  u64(b, 24, length);
  u64(b, 32, iova);
  return b;
}

/** struct iommu_ioas_unmap. */
export function ioasUnmap(ioasId: number, iova: number, length: number): Buffer {
  const b = Buffer.alloc(StructSize.IOAS_UNMAP);
  b.writeUInt32LE(StructSize.IOAS_UNMAP, 0);
  b.writeUInt32LE(ioasId, 4);
  u64(b, 8, iova);
  u64(b, 16, length);
  return b;
}
