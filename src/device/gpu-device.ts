import { DeviceFlag, IrqIndex, IrqInfoFlag, PCI_NUM_IRQS, PCI_NUM_REGIONS, RegionIndex } from '../wire/constants.js';
import type { Bar0Source } from '../backends/bar0-source.js';
import { installBars, nextPowerOfTwo } from './bar-registers.js';
import { installCapabilities, type MsixLayout } from './capabilities.js';
import { ConfigRegion } from './config-region.js';
import { ConfigSpace } from './config-space.js';
import { DmaMapTable, type DmaFileOps } from './dma-maps.js';
import { FdBudget } from './fd-budget.js';
import { Interrupts, type EventSink, type IrqKind } from './interrupts.js';
import { MemoryBar, type MemoryBacking } from './memory-bar.js';
import { Cfg, Command, NVIDIA_VENDOR_ID, PCI_CLASS_3D_CONTROLLER, Status } from './pci.js';
import { subtractArea, type Region } from './region.js';

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

export interface GpuDeviceOptions {
  identity: DeviceIdentity;
  bar0: Bar0Source;
  aperture: MemoryBacking;
  pageSize: number;
  events: EventSink;
  dmaOps: DmaFileOps;
  maxDmaMaps: number;
  /** Client fds (DMA maps and eventfds) held at once; unlimited when absent. */
  maxClientFds?: number;
  msixVectors?: number;
}

/** Slot of the aperture BAR: BAR2/3, as in the original nvgrace-gpu design. */
export const APERTURE_BAR = RegionIndex.BAR2;
/** The MSI-X table and PBA live in the last 64 KiB of BAR0. */
const MSIX_WINDOW = 64 * 1024;

/**
 * The PCI device presented to the client: a GPU whose registers are BAR0 and
 * whose cache-coherent memory is the 64-bit prefetchable BAR2.
 */
export class GpuDevice {
  readonly flags = DeviceFlag.PCI | DeviceFlag.RESET;
  readonly numRegions = PCI_NUM_REGIONS;
  readonly numIrqs = PCI_NUM_IRQS;
  readonly config = new ConfigSpace();
  readonly bar0: MemoryBar;
  readonly aperture: MemoryBar;
  readonly interrupts: Interrupts;
  readonly dma: DmaMapTable;
  readonly msix: MsixLayout;
  readonly clientFds: FdBudget;
  private readonly regions: (Region | null)[];

  constructor(private readonly opts: GpuDeviceOptions) {
    const bar0Size = opts.bar0.barSize;
    const vectors = opts.msixVectors ?? 16;
    this.msix = { vectors, bar: 0, tableOffset: bar0Size - MSIX_WINDOW, pbaOffset: bar0Size - MSIX_WINDOW / 2 };

    this.bar0 = new MemoryBar(RegionIndex.BAR0, bar0Size, opts.bar0.memory, opts.pageSize, [
      this.msix.tableOffset,
      bar0Size,
    ]);
    this.aperture = new MemoryBar(APERTURE_BAR, apertureBarSize(opts.aperture.size), opts.aperture, opts.pageSize);

    this.regions = new Array<Region | null>(PCI_NUM_REGIONS).fill(null);
    this.regions[RegionIndex.BAR0] = this.bar0;
    this.regions[APERTURE_BAR] = this.aperture;
    this.regions[RegionIndex.CONFIG] = new ConfigRegion(this.config);

    this.buildConfig();
    this.clientFds = new FdBudget(opts.maxClientFds ?? Infinity);
    this.interrupts = new Interrupts(irqKinds(vectors), opts.events, this.clientFds);
    this.dma = new DmaMapTable(opts.dmaOps, opts.maxDmaMaps, opts.pageSize, this.clientFds);
  }

  get identity(): DeviceIdentity {
    return this.opts.identity;
  }

  get bar0Source(): Bar0Source {
    return this.opts.bar0;
  }

  /** The region at `index`, or null for an index the device does not implement (size 0). */
  region(index: number): Region | null {
    return this.regions[index] ?? null;
  }

  /** Function-level reset: registers to power-on values; memory contents are kept. */
  reset(): void {
    this.config.reset();
    this.opts.bar0.reset();
  }

  /** The client left: drop its memory maps and eventfds. */
  releaseClient(): void {
    this.dma.clear();
    this.interrupts.releaseAll();
  }

  private buildConfig(): void {
    const c = this.config;
    const id = this.opts.identity;
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
    installBars(c, [
      { index: RegionIndex.BAR0, size: this.bar0.size, prefetchable: false },
      { index: APERTURE_BAR, size: this.aperture.size, prefetchable: true },
    ]);
    installCapabilities(c, this.msix);
    c.seal();
  }
}

/** The aperture BAR is the memory size rounded up to a power of two (a page at least). */
export function apertureBarSize(memorySize: number): number {
  return Math.max(4096, nextPowerOfTwo(memorySize));
}

function irqKinds(msixVectors: number): IrqKind[] {
  const ef = IrqInfoFlag.EVENTFD;
  return [
    { index: IrqIndex.INTX, name: 'INTx', count: 1, flags: ef | IrqInfoFlag.MASKABLE | IrqInfoFlag.AUTOMASKED },
    { index: IrqIndex.MSI, name: 'MSI', count: 0, flags: ef },
    { index: IrqIndex.MSIX, name: 'MSI-X', count: msixVectors, flags: ef | IrqInfoFlag.NORESIZE },
    { index: IrqIndex.ERR, name: 'ERR', count: 1, flags: ef },
    { index: IrqIndex.REQ, name: 'REQ', count: 1, flags: ef },
  ];
}
