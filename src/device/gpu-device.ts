import { DeviceFlag, PCI_NUM_IRQS, PCI_NUM_REGIONS, RegionIndex } from '../wire/constants.js';
import { installBars, nextPowerOfTwo } from './bar-registers.js';
import { ConfigRegion } from './config-region.js';
import type { DeviceConfig } from './config-source.js';
import { DmaMapTable, type DmaFileOps } from './dma-maps.js';
import { Interrupts, type EventSink } from './interrupts.js';
import { MemoryBar, type MemoryBacking } from './memory-bar.js';
import type { PciFunction } from './pci-function.js';
import type { Region } from './region.js';

export { DEFAULT_IDENTITY, type DeviceIdentity } from './emulated-function.js';

export interface GpuDeviceOptions {
  /** What stands behind the registers: emulated, or a host function passed through. */
  function: PciFunction;
  aperture: MemoryBacking;
  pageSize: number;
  events: EventSink;
  dmaOps: DmaFileOps;
  maxDmaMaps: number;
}

/** Slot of the aperture BAR: BAR2/3, as in the original nvgrace-gpu design. */
export const APERTURE_BAR = RegionIndex.BAR2;

/**
 * The PCI device presented to the client: a GPU whose registers are BAR0 and
 * whose cache-coherent memory is the 64-bit prefetchable BAR2.
 */
export class GpuDevice {
  readonly numRegions = PCI_NUM_REGIONS;
  readonly numIrqs = PCI_NUM_IRQS;
  readonly config: DeviceConfig;
  readonly bar0: Region;
  readonly aperture: MemoryBar;
  readonly interrupts: Interrupts;
  readonly dma: DmaMapTable;
  private readonly regions: (Region | null)[];

  constructor(private readonly opts: GpuDeviceOptions) {
    const fn = opts.function;
    this.config = fn.config;
    this.bar0 = fn.bar0;
    this.aperture = new MemoryBar(APERTURE_BAR, apertureBarSize(opts.aperture.size), opts.aperture, opts.pageSize);

    this.regions = new Array<Region | null>(PCI_NUM_REGIONS).fill(null);
    for (let i = 0; i < PCI_NUM_REGIONS; i++) this.regions[i] = fn.region(i);
    this.regions[APERTURE_BAR] = this.aperture;
    this.regions[RegionIndex.CONFIG] = new ConfigRegion(this.config);
    installBars(this.config, [{ index: APERTURE_BAR, size: this.aperture.size, prefetchable: true }]);

    this.interrupts = new Interrupts(fn.irqKinds, opts.events, fn.irqRoute);
    this.dma = new DmaMapTable(opts.dmaOps, opts.maxDmaMaps, opts.pageSize, fn.dmaObserver);
  }

  get function(): PciFunction {
    return this.opts.function;
  }

  get flags(): number {
    return DeviceFlag.PCI | (this.opts.function.resettable ? DeviceFlag.RESET : 0);
  }

  /** The region at `index`, or null for an index the device does not implement (size 0). */
  region(index: number): Region | null {
    return this.regions[index] ?? null;
  }

  /**
   * Function-level reset: what lies behind the registers first (it may wait for
   * a real device to become ready), then the emulated config registers, cleared
   * even when that wait fails. Memory contents are kept.
   */
  reset(): void | Promise<void> {
    let pending: void | Promise<void>;
    try {
      pending = this.opts.function.reset();
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
}

/** The aperture BAR is the memory size rounded up to a power of two (a page at least). */
export function apertureBarSize(memorySize: number): number {
  return Math.max(4096, nextPowerOfTwo(memorySize));
}
