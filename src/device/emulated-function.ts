import type { Bar0Source } from './bar0-source.js';
import { IrqIndex, IrqInfoFlag, RegionIndex } from '../wire/constants.js';
import { installBars } from './bar-registers.js';
import { installCapabilities, type MsixLayout } from './capabilities.js';
import { ConfigSpace } from './config-space.js';
import type { IrqKind } from './interrupts.js';
import { MemoryBar } from './memory-bar.js';
import { Cfg, Command, NVIDIA_VENDOR_ID, PCI_CLASS_3D_CONTROLLER, Status } from './pci.js';
import type { PciFunction } from './pci-function.js';
import type { Region } from './region.js';

export interface DeviceIdentity {
  vendorId: number;
  deviceId: number;
  subsystemVendorId: number;
  subsystemId: number;
  revision: number;
}

export const DEFAULT_IDENTITY: DeviceIdentity = {
  vendorId: NVIDIA_VENDOR_ID,
  deviceId: 0x2342,
  subsystemVendorId: NVIDIA_VENDOR_ID,
  subsystemId: 0x16eb,
  revision: 0xa1,
};

/** The MSI-X table and PBA live in the last 64 KiB of BAR0. */
const MSIX_WINDOW = 64 * 1024;

/**
 * The GPU as the daemon emulates it: its own config space (identity, the BAR0
 * registers, power management, MSI, MSI-X, PCI Express), BAR0 from a register
 * source, and interrupts the daemon signals itself.
 */
export class EmulatedFunction implements PciFunction {
  readonly config = new ConfigSpace();
  readonly bar0: MemoryBar;
  readonly msix: MsixLayout;
  readonly resettable = true;
  readonly irqKinds: IrqKind[];
  readonly irqRoute = null;
  readonly dmaObserver = null;

  constructor(
    readonly identity: DeviceIdentity,
    readonly source: Bar0Source,
    pageSize: number,
    msixVectors: number = 16,
  ) {
    const size = source.barSize;
    if (size < 2 * MSIX_WINDOW) throw new Error(`BAR0 of ${size} bytes leaves no room for the MSI-X table (need ${2 * MSIX_WINDOW})`);
    this.msix = { vectors: msixVectors, bar: 0, tableOffset: size - MSIX_WINDOW, pbaOffset: size - MSIX_WINDOW / 2 };
    this.bar0 = new MemoryBar(RegionIndex.BAR0, size, source.memory, pageSize, [this.msix.tableOffset, size]);
    this.irqKinds = irqKinds(msixVectors);
    this.buildConfig();
  }

  get description(): string {
    return this.source.description;
  }

  region(index: number): Region | null {
    return index === RegionIndex.BAR0 ? this.bar0 : null;
  }

  reset(): void {
    this.source.reset();
  }

  ready(): null {
    return null;
  }

  close(): void {
    this.source.close();
  }

  private buildConfig(): void {
    const c = this.config;
    const id = this.identity;
    c.define(Cfg.VENDOR_ID, 2, id.vendorId);
    c.define(Cfg.DEVICE_ID, 2, id.deviceId);
    c.define(
      Cfg.COMMAND,
      2,
      0,
      Command.MEMORY | Command.MASTER | Command.PARITY | Command.SERR | Command.INTX_DISABLE,
    );
    c.define(Cfg.STATUS, 2, Status.CAP_LIST, 0, Status.RW1C);
    c.define(Cfg.REVISION, 1, id.revision);
    c.define(Cfg.CLASS_PROG, 1, 0);
    c.define(Cfg.CLASS_DEVICE, 2, PCI_CLASS_3D_CONTROLLER);
    c.define(Cfg.CACHE_LINE, 1, 0, 0xff);
    c.define(Cfg.LATENCY, 1, 0);
    c.define(Cfg.HEADER_TYPE, 1, 0);
    c.define(Cfg.SUBSYSTEM_VENDOR_ID, 2, id.subsystemVendorId);
    c.define(Cfg.SUBSYSTEM_ID, 2, id.subsystemId);
    c.define(Cfg.INTERRUPT_LINE, 1, 0xff, 0xff);
    c.define(Cfg.INTERRUPT_PIN, 1, 1);
    installBars(c, [{ index: RegionIndex.BAR0, size: this.bar0.size, prefetchable: false }]);
    installCapabilities(c, this.msix);
    c.seal();
  }
}

function irqKinds(msixVectors: number): IrqKind[] {
  const ef = IrqInfoFlag.EVENTFD;
  return [
    { index: IrqIndex.INTX, name: 'INTx', count: 1, flags: ef | IrqInfoFlag.MASKABLE | IrqInfoFlag.AUTOMASKED },
    { index: IrqIndex.MSI, name: 'MSI', count: 1, flags: ef },
    { index: IrqIndex.MSIX, name: 'MSI-X', count: msixVectors, flags: ef | IrqInfoFlag.NORESIZE },
    { index: IrqIndex.ERR, name: 'ERR', count: 1, flags: ef },
    { index: IrqIndex.REQ, name: 'REQ', count: 1, flags: ef },
  ];
}
