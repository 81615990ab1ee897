// Numbers defined by the vfio-user specification (qemu docs/interop/vfio-user.rst)
// and by <linux/vfio.h>, whose structures the protocol reuses.

export const HEADER_SIZE = 16;

export const Command = {
  VERSION: 1,
  DMA_MAP: 2,
  DMA_UNMAP: 3,
  DEVICE_GET_INFO: 4,
  DEVICE_GET_REGION_INFO: 5,
  DEVICE_GET_REGION_IO_FDS: 6,
  DEVICE_GET_IRQ_INFO: 7,
  DEVICE_SET_IRQS: 8,
  REGION_READ: 9,
  REGION_WRITE: 10,
  DMA_READ: 11,
  DMA_WRITE: 12,
  DEVICE_RESET: 13,
  DIRTY_PAGES: 14,
  REGION_WRITE_MULTI: 15,
  DEVICE_FEATURE: 16,
  MIG_DATA_READ: 17,
  MIG_DATA_WRITE: 18,
} as const;
export type CommandId = (typeof Command)[keyof typeof Command];

const commandNames: Record<number, string> = Object.fromEntries(
  Object.entries(Command).map(([name, id]) => [id, name]),
);
export function commandName(id: number): string {
  return commandNames[id] ?? `UNKNOWN_${id}`;
}

/** Header flag bits. */
export const MsgType = { COMMAND: 0x0, REPLY: 0x1 } as const;
export const Flag = {
  TYPE_MASK: 0xf,
  NO_REPLY: 0x10,
  ERROR: 0x20,
} as const;
export const KNOWN_HEADER_FLAGS = Flag.TYPE_MASK | Flag.NO_REPLY | Flag.ERROR;

/** Errno values carried in error replies (Linux numbering). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  EMFILE: 24,
  ENOSPC: 28,
  ERANGE: 34,
  ENOSYS: 38,
  EPROTO: 71,
  EMSGSIZE: 90,
  EOPNOTSUPP: 95,
  ENOTSUP: 95,
  ETIMEDOUT: 110,
} as const;

/** Region indexes of a PCI device (VFIO_PCI_*_REGION_INDEX). */
export const RegionIndex = {
  BAR0: 0,
  BAR1: 1,
  BAR2: 2,
  BAR3: 3,
  BAR4: 4,
  BAR5: 5,
  ROM: 6,
  CONFIG: 7,
  VGA: 8,
} as const;
export const PCI_NUM_REGIONS = 9;

/** IRQ indexes of a PCI device (VFIO_PCI_*_IRQ_INDEX). */
export const IrqIndex = { INTX: 0, MSI: 1, MSIX: 2, ERR: 3, REQ: 4 } as const;
export const PCI_NUM_IRQS = 5;

export const DeviceFlag = { RESET: 1 << 0, PCI: 1 << 1 } as const;

export const RegionFlag = { READ: 1 << 0, WRITE: 1 << 1, MMAP: 1 << 2, CAPS: 1 << 3 } as const;

export const RegionCap = { SPARSE_MMAP: 1, TYPE: 2 } as const;
export const SPARSE_MMAP_VERSION = 1;

export const IrqInfoFlag = { EVENTFD: 1 << 0, MASKABLE: 1 << 1, AUTOMASKED: 1 << 2, NORESIZE: 1 << 3 } as const;

export const IrqSetFlag = {
  DATA_NONE: 1 << 0,
  DATA_BOOL: 1 << 1,
  DATA_EVENTFD: 1 << 2,
  ACTION_MASK: 1 << 3,
  ACTION_UNMASK: 1 << 4,
  ACTION_TRIGGER: 1 << 5,
} as const;
export const IRQ_SET_DATA_MASK = IrqSetFlag.DATA_NONE | IrqSetFlag.DATA_BOOL | IrqSetFlag.DATA_EVENTFD;
export const IRQ_SET_ACTION_MASK = IrqSetFlag.ACTION_MASK | IrqSetFlag.ACTION_UNMASK | IrqSetFlag.ACTION_TRIGGER;

export const DmaMapFlag = { READ: 1 << 0, WRITE: 1 << 1 } as const;
export const DmaUnmapFlag = { GET_DIRTY_PAGE_INFO: 1 << 0, ALL: 1 << 1 } as const;

/** Fixed payload sizes (after the 16-byte header). */
export const Size = {
  VERSION_MIN: 4,
  DMA_MAP: 32,
  DMA_UNMAP: 24,
  DEVICE_INFO: 16,
  REGION_INFO: 32,
  REGION_IO_FDS: 16,
  IRQ_INFO: 16,
  IRQ_SET: 20,
  REGION_ACCESS: 16,
  WRITE_MULTI_COUNT: 8,
  WRITE_MULTI_ENTRY: 24,
  WRITE_MULTI_DATA: 8,
  CAP_HEADER: 8,
  SPARSE_MMAP_HEADER: 8,
  SPARSE_MMAP_AREA: 16,
} as const;

/** What this server advertises and enforces. */
export const Limits = {
  /** fds we accept in one message; the binding's NV_MAX_FDS (test/native/native.test.ts checks they agree). */
  MAX_MSG_FDS: 16,
  /** Largest REGION_READ/WRITE count; QEMU accepts up to 64 MiB. */
  MAX_DATA_XFER_SIZE: 1 << 20,
  MAX_DMA_MAPS: 65535,
  /** Largest write-multi batch QEMU builds. */
  MAX_WRITE_MULTI: 200,
} as const;
