import { DeviceFlag, Errno, PCI_NUM_IRQS, PCI_NUM_REGIONS, RegionIndex } from '../wire/constants.js';
import type { Bar0Source } from './bar0-source.js';
import { installBars } from './bar-registers.js';
import type { MsixLayout } from './capabilities.js';
import { ConfigRegion } from './config-region.js';
import { DeviceError } from './errors.js';
import type { DeviceConfig } from './config-source.js';
import { DmaMapTable, type DmaFileOps } from './dma-maps.js';
import { EmulatedFunction, type DeviceIdentity } from './emulated-function.js';
import { FdBudget } from './fd-budget.js';
import { Interrupts, type EventSink } from './interrupts.js';
import { LAYOUTS, planLayout, type LayoutName, type MemoryBarLayout, type MemoryLayout } from './layout.js';
import { MemoryBar, type MemoryBacking } from './memory-bar.js';
import { sliceMemory } from './memory-slice.js';
import { Cfg } from './pci.js';
import type { PciFunction } from './pci-function.js';
import type { Region } from './region.js';

export { DEFAULT_IDENTITY, type DeviceIdentity } from './emulated-function.js';

interface DeviceOptions {
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
  /**
   * A new open file description of a region's fd for one client, or null to
   * share the fd as it is (the default).
   */
  reopenForClient?: (fd: number) => number | null;
}

/** The GPU as the daemon emulates it, its registers from a BAR0 source. */
export interface EmulatedDeviceOptions extends DeviceOptions {
  identity: DeviceIdentity;
  bar0: Bar0Source;
  msixVectors?: number;
}

/** Whatever stands behind the registers, e.g. a host function passed through. */
export interface FunctionDeviceOptions extends DeviceOptions {
  function: PciFunction;
}

export type GpuDeviceOptions = EmulatedDeviceOptions | FunctionDeviceOptions;

/** The aperture BAR's size in the `bar2` layout: the memory size rounded up to a power of two, a page at least. */
export { memoryBarSize as apertureBarSize } from './layout.js';

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

/** Memory BAR type bits 2:1 = 0b10: a 64-bit BAR, whose upper half is the next slot. */
const BAR_TYPE_MASK = 0x7;
const BAR_MEM64 = 0x4;

/**
 * The PCI device presented to the client: a GPU whose registers are BAR0 and
 * whose cache-coherent memory is shown by 64-bit prefetchable BARs as the
 * layout says: all of it at BAR2, or split between BAR4 and BAR2 (see layout.ts).
 * Behind the registers stands a PciFunction: the daemon's emulation, or a host
 * function passed through; the memory BARs are laid over either.
 */
export class GpuDevice {
  readonly numRegions = PCI_NUM_REGIONS;
  readonly numIrqs = PCI_NUM_IRQS;
  readonly function: PciFunction;
  readonly config: DeviceConfig;
  readonly bar0: Region;
  /** The BAR of the usable coherent memory: BAR2 in the `bar2` layout, BAR4 in `gh` and `gb`. */
  readonly aperture: MemoryBar;
  /** Every memory BAR, in BAR order. */
  readonly memoryBars: readonly MemoryBar[];
  readonly memoryLayout: MemoryLayout;
  readonly interrupts: Interrupts;
  readonly dma: DmaMapTable;
  readonly clientFds: FdBudget;
  /** See DeviceOptions.reopenForClient; the session closes what it returns. */
  readonly reopenForClient: (fd: number) => number | null;
  private readonly regions: (Region | null)[];

  constructor(opts: GpuDeviceOptions) {
    const fn = 'function' in opts ? opts.function : new EmulatedFunction(opts.identity, opts.bar0, opts.pageSize, opts.msixVectors);
    this.function = fn;
    this.config = fn.config;
    this.bar0 = fn.bar0;
    this.memoryLayout = planLayout(opts.layout ?? 'bar2', opts.aperture.size);
    this.checkMemorySlots();
    this.memoryBars = this.memoryLayout.bars.map(
      (b) => new MemoryBar(b.bar, b.barSize, sliceMemory(opts.aperture, b.offset, b.length), opts.pageSize),
    );
    const usable = this.memoryLayout.bars.findIndex((b) => b.role !== 'resmem');
    this.aperture = this.memoryBars[usable]!;

    this.regions = new Array<Region | null>(PCI_NUM_REGIONS).fill(null);
    for (let i = 0; i < PCI_NUM_REGIONS; i++) this.regions[i] = fn.region(i);
    for (const bar of this.memoryBars) this.regions[bar.index] = bar;
    this.regions[RegionIndex.CONFIG] = new ConfigRegion(this.config);
    installBars(
      this.config,
      this.memoryBars.map((b) => ({ index: b.index, size: b.size, prefetchable: true })),
    );

    this.clientFds = new FdBudget(opts.maxClientFds ?? Infinity);
    this.reopenForClient = opts.reopenForClient ?? (() => null);
    this.interrupts = new Interrupts(fn.irqKinds, opts.events, fn.irqRoute, this.clientFds);
    this.dma = new DmaMapTable(opts.dmaOps, opts.maxDmaMaps, opts.pageSize, fn.dmaObserver, this.clientFds);
  }

  get flags(): number {
    return DeviceFlag.PCI | (this.function.resettable ? DeviceFlag.RESET : 0);
  }

  /** Vendor, device, subsystem and revision as config space shows them. */
  get identity(): DeviceIdentity {
    if (this.function instanceof EmulatedFunction) return this.function.identity;
    const b = Buffer.alloc(0x30);
    this.config.read(0, b, 0, b.length);
    return {
      vendorId: b.readUInt16LE(Cfg.VENDOR_ID),
      deviceId: b.readUInt16LE(Cfg.DEVICE_ID),
      subsystemVendorId: b.readUInt16LE(Cfg.SUBSYSTEM_VENDOR_ID),
      subsystemId: b.readUInt16LE(Cfg.SUBSYSTEM_ID),
      revision: b[Cfg.REVISION]!,
    };
  }

  /** The register source of an emulated device; null when a host function stands behind BAR0. */
  get bar0Source(): Bar0Source | null {
    return this.function instanceof EmulatedFunction ? this.function.source : null;
  }

  /** Where the emulated MSI-X table lives; null for a host function (its own MSI-X is the host's). */
  get msix(): MsixLayout | null {
    return this.function instanceof EmulatedFunction ? this.function.msix : null;
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

  /** The region an access of `count` bytes at `offset` may go to; refuses (EINVAL) what is not there. */
  accessible(index: number, offset: number, count: number, write: boolean): Region {
    const r = this.regions[index];
    if (!r) throw new DeviceError(Errno.EINVAL, `no region ${index}`);
    if (write ? !r.writable : !r.readable) throw new DeviceError(Errno.EINVAL, `region ${index} is not ${write ? 'writable' : 'readable'}`);
    if (offset >= r.size || count > r.size - offset) {
      throw new DeviceError(Errno.EINVAL, `region ${index}: [0x${offset.toString(16)}, +${count}) beyond size 0x${r.size.toString(16)}`);
    }
    return r;
  }

  /**
   * Function-level reset: what stands behind the registers first (a real device
   * may have to become ready again), then the emulated config registers, cleared
   * even when that wait fails. Memory contents are kept.
   */
  reset(): void | Promise<void> {
    let pending: void | Promise<void>;
    try {
      pending = this.function.reset();
    } catch (err) {
      this.config.reset();
      throw err;
    }
    if (pending instanceof Promise) return pending.finally(() => this.config.reset());
    this.config.reset();
  }

  /** The client left: drop its memory maps and eventfds. */
  releaseClient(): void {
    this.dma.clear();
    this.interrupts.releaseAll();
  }

  /**
   * The memory BARs' registers are laid over the function's config space: their
   * slots must hold no BAR of the function, nor the upper half of a 64-bit BAR
   * in the slot before.
   */
  private checkMemorySlots(): void {
    const layout = this.memoryLayout.name;
    const b = Buffer.alloc(4);
    for (const { bar } of this.memoryLayout.bars) {
      for (const slot of [bar, bar + 1]) {
        const r = this.function.region(slot);
        if (r) {
          throw new Error(
            `${this.function.description} has a BAR${slot} of ${r.size} bytes where the memory BAR${bar}/${bar + 1} of layout ${layout} goes (another --layout may leave it free)`,
          );
        }
      }
      if (bar > 0 && this.function.region(bar - 1)) {
        this.config.read(Cfg.BAR0 + 4 * (bar - 1), b, 0, 4);
        if ((b.readUInt32LE(0) & BAR_TYPE_MASK) === BAR_MEM64) {
          throw new Error(`${this.function.description}: its 64-bit BAR${bar - 1} uses slot ${bar}, where the memory BAR of layout ${layout} goes`);
        }
      }
    }
  }
}
