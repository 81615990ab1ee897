// PCI configuration-space layout (PCI Local Bus 3.0, PCI Express Base 4.0).

export const CONFIG_SPACE_SIZE = 4096;

export const Cfg = {
  VENDOR_ID: 0x00,
  DEVICE_ID: 0x02,
  COMMAND: 0x04,
  STATUS: 0x06,
  REVISION: 0x08,
  CLASS_PROG: 0x09,
  CLASS_DEVICE: 0x0a,
  CACHE_LINE: 0x0c,
  LATENCY: 0x0d,
  HEADER_TYPE: 0x0e,
  BAR0: 0x10,
  SUBSYSTEM_VENDOR_ID: 0x2c,
  SUBSYSTEM_ID: 0x2e,
  ROM: 0x30,
  CAPABILITY_LIST: 0x34,
  INTERRUPT_LINE: 0x3c,
  INTERRUPT_PIN: 0x3d,
} as const;

export const Command = {
  IO: 1 << 0,
  MEMORY: 1 << 1,
  MASTER: 1 << 2,
  PARITY: 1 << 6,
  SERR: 1 << 8,
  INTX_DISABLE: 1 << 10,
} as const;

export const Status = {
  INTERRUPT: 1 << 3,
  CAP_LIST: 1 << 4,
  /** Error bits software clears by writing 1. */
  RW1C: 0xf900,
} as const;

export const BarFlag = {
  IO: 0x1,
  MEM_TYPE_64: 0x4,
  PREFETCH: 0x8,
} as const;

export const CapId = { PM: 0x01, MSI: 0x05, EXP: 0x10, MSIX: 0x11 } as const;

export const PCI_CLASS_3D_CONTROLLER = 0x0302;
export const NVIDIA_VENDOR_ID = 0x10de;
