import type { ConfigSpace } from './config-space.js';
import { CapId, Cfg } from './pci.js';

export interface MsixLayout {
  vectors: number;
  /** BAR slot and offset of the vector table and pending-bit array. */
  bar: number;
  tableOffset: number;
  pbaOffset: number;
}

export const PM_CAP = 0x40;
export const MSI_CAP = 0x48;
export const MSIX_CAP = 0x58;
export const EXP_CAP = 0x68;

/**
 * Standard capability list of the device: power management, MSI (one vector),
 * MSI-X, PCI Express endpoint. Only the fields an OS programs are writable.
 */
export function installCapabilities(cfg: ConfigSpace, msix: MsixLayout): void {
  cfg.define(Cfg.CAPABILITY_LIST, 1, PM_CAP);

  // Power management v3; D0-D3hot in PMCSR bits 0-1, No_Soft_Reset set (state kept across D3hot->D0).
  cfg.define(PM_CAP, 1, CapId.PM);
  cfg.define(PM_CAP + 1, 1, MSI_CAP);
  cfg.define(PM_CAP + 2, 2, 0x0003);
  cfg.define(PM_CAP + 4, 2, 0x0008, 0x0003, 0x8000);

  // MSI, 64-bit, one vector: enable (bit 0) and multiple-message enable (bits 4-6) are writable.
  cfg.define(MSI_CAP, 1, CapId.MSI);
  cfg.define(MSI_CAP + 1, 1, MSIX_CAP);
  cfg.define(MSI_CAP + 2, 2, 0x0080, 0x0071);
  cfg.define(MSI_CAP + 4, 4, 0, 0xfffffffc);
  cfg.define(MSI_CAP + 8, 4, 0, 0xffffffff);
  cfg.define(MSI_CAP + 12, 2, 0, 0xffff);

  // MSI-X: table size is N-1; enable (bit 15) and function mask (bit 14) are the writable bits.
  if (msix.vectors < 1 || msix.vectors > 2048) throw new Error(`MSI-X vectors ${msix.vectors} out of range`);
  cfg.define(MSIX_CAP, 1, CapId.MSIX);
  cfg.define(MSIX_CAP + 1, 1, EXP_CAP);
  cfg.define(MSIX_CAP + 2, 2, msix.vectors - 1, 0xc000);
  cfg.define(MSIX_CAP + 4, 4, (msix.tableOffset | msix.bar) >>> 0);
  cfg.define(MSIX_CAP + 8, 4, (msix.pbaOffset | msix.bar) >>> 0);

  // PCI Express v2 endpoint, 60 bytes. QEMU rewrites link fields when the device sits on a root bus.
  cfg.define(EXP_CAP, 1, CapId.EXP);
  cfg.define(EXP_CAP + 1, 1, 0);
  cfg.define(EXP_CAP + 2, 2, 0x0002); // version 2, type 0 = endpoint
  cfg.define(EXP_CAP + 4, 4, 0x00008001); // devcap: max payload 256, role-based error reporting
  cfg.define(EXP_CAP + 8, 2, 0x2810, 0x7fff); // devctl: relaxed ordering, no snoop, MRRS 512
  cfg.define(EXP_CAP + 10, 2, 0, 0, 0x000f); // devsta: error bits are RW1C
  cfg.define(EXP_CAP + 12, 4, 0x00000104); // linkcap: 16 GT/s x16
  cfg.define(EXP_CAP + 16, 2, 0, 0x01c3); // linkctl
  cfg.define(EXP_CAP + 18, 2, 0x0104); // linksta: 16 GT/s x16
  cfg.define(EXP_CAP + 36, 4, 0x00000010); // devcap2: completion timeout disable supported
  cfg.define(EXP_CAP + 40, 2, 0, 0x041f); // devctl2
}

/** MSI-X control bits the device model looks at. */
export const MSIX_ENABLE = 0x8000;
export const MSIX_MASKALL = 0x4000;
