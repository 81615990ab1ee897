import { DeviceFlag, IrqIndex, IrqInfoFlag, PCI_NUM_IRQS, PCI_NUM_REGIONS, RegionIndex } from '../wire/constants.js';
import type { Bar0Source } from '../backends/bar0-source.js';
import { installBars } from './bar-registers.js';
import { installCapabilities, type MsixLayout } from './capabilities.js';
import { ConfigRegion } from './config-region.js';
import { ConfigSpace } from './config-space.js';
import { DmaMapTable, type DmaFileOps } from './dma-maps.js';
import { FdBudget } from './fd-budget.js';
import { Interrupts, type EventSink, type IrqKind } from './interrupts.js';
import { LAYOUTS, planLayout, type LayoutName, type MemoryBarLayout, type MemoryLayout } from './layout.js';
import { MemoryBar, type MemoryBacking } from './memory-bar.js';
import { sliceMemory } from './memory-slice.js';
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
  /** All of the coherent memory; the layout decides which BARs show which part. */
  aperture: MemoryBacking;
  /** Default `bar2`. */
  layout?: LayoutName;
  pageSize: number;
  events: EventSink;
  dmaOps: DmaFileOps;
  maxDmaMaps: number;
  /** Client fds (DMA maps and eventfds) held at once; unlimited when absent. */
  maxClientFds?: number;
  msixVectors?: number;
}

/** The aperture BAR's size in the `bar2` layout: the memory size rounded up to a power of two, a page at least. */
export { memoryBarSize as apertureBarSize } from './layout.js';

/** Slot of the aperture BAR in the `bar2` layout: BAR2/3, as in the original nvgrace-gpu design. */
export const APERTURE_BAR = RegionIndex.BAR2;

/** One BAR of the device, for reports (describe, qemu-args, logs). */
export interface BarDescription {
  /** BAR slot; every BAR here is 64-bit, so it also takes the next slot. */
  bar: number;
  holds: 'registers' | MemoryBarLayout['role'];
  size: number;
  prefetchable: boolean;
  /** For a memory BAR: which part of the coherent memory is behind it, and how a real host maps it. */
  memory?: { offset: number; length: number; caching: MemoryBarLayout['caching'] };
}

/** Which BARs the device has and what each holds; slots not listed read 0 in config space. */
export interface DeviceLayout {
  name: LayoutName;
  summary: string;
  memorySize: number;
  bars: BarDescription[];
}
/** The MSI-X table and PBA live in the last 64 KiB of BAR0. */
const MSIX_WINDOW = 64 * 1024;

/**
 * The PCI device presented to the client: a GPU whose registers are BAR0 and
 * whose cache-coherent memory is shown by 64-bit prefetchable BARs as the
 * layout says: all of it at BAR2, or split between BAR4 and BAR2 (see layout.ts).
 */
export class GpuDevice {
  readonly flags = DeviceFlag.PCI | DeviceFlag.RESET;
  readonly numRegions = PCI_NUM_REGIONS;
  readonly numIrqs = PCI_NUM_IRQS;
  readonly config = new ConfigSpace();
  readonly bar0: MemoryBar;
  /** The BAR of the usable coherent memory: BAR2 in the `bar2` layout, BAR4 in `gh` and `gb`. */
  readonly aperture: MemoryBar;
  /** Every memory BAR, in BAR order. */
  readonly memoryBars: readonly MemoryBar[];
  readonly memoryLayout: MemoryLayout;
  readonly interrupts: Interrupts;
  readonly dma: DmaMapTable;
  readonly msix: MsixLayout;
  readonly clientFds: FdBudget;
  private readonly regions: (Region | null)[];

  constructor(private readonly opts: GpuDeviceOptions) {
    const bar0Size = opts.bar0.barSize;
    if (bar0Size < 2 * MSIX_WINDOW) throw new Error(`BAR0 of ${bar0Size} bytes leaves no room for the MSI-X table (need ${2 * MSIX_WINDOW})`);
    const vectors = opts.msixVectors ?? 16;
    this.msix = { vectors, bar: 0, tableOffset: bar0Size - MSIX_WINDOW, pbaOffset: bar0Size - MSIX_WINDOW / 2 };

    this.bar0 = new MemoryBar(RegionIndex.BAR0, bar0Size, opts.bar0.memory, opts.pageSize, [
      this.msix.tableOffset,
      bar0Size,
    ]);
    this.memoryLayout = planLayout(opts.layout ?? 'bar2', opts.aperture.size);
    this.memoryBars = this.memoryLayout.bars.map(
      (b) => new MemoryBar(b.bar, b.barSize, sliceMemory(opts.aperture, b.offset, b.length), opts.pageSize),
    );
    const usable = this.memoryLayout.bars.findIndex((b) => b.role !== 'resmem');
    this.aperture = this.memoryBars[usable]!;

    this.regions = new Array<Region | null>(PCI_NUM_REGIONS).fill(null);
    this.regions[RegionIndex.BAR0] = this.bar0;
    for (const bar of this.memoryBars) this.regions[bar.index] = bar;
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

  /** Which BARs exist and what each holds. */
  get layout(): DeviceLayout {
    const m = this.memoryLayout;
    return {
      name: m.name,
      summary: LAYOUTS[m.name].summary,
      memorySize: m.memorySize,
      bars: [
        { bar: RegionIndex.BAR0, holds: 'registers', size: this.bar0.size, prefetchable: false },
        ...m.bars.map((b) => ({
          bar: b.bar,
          holds: b.role,
          size: b.barSize,
          prefetchable: true,
          memory: { offset: b.offset, length: b.length, caching: b.caching },
        })),
      ],
    };
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
      ...this.memoryBars.map((b) => ({ index: b.index, size: b.size, prefetchable: true })),
    ]);
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
