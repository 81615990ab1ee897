import type { DmaObserver } from './dma-maps.js';
import type { RegionMmap } from './region.js';

/** One region of a host function (a BAR, the ROM, config space) as its driver describes it. */
export interface HostRegion {
  readonly index: number;
  readonly size: number;
  readonly readable: boolean;
  readonly writable: boolean;
  /** What the client may map straight from the host's device fd; null when nothing. */
  readonly mmap: RegionMmap | null;
}

export interface HostIrq {
  readonly flags: number;
  readonly count: number;
}

/**
 * A physical PCI function the daemon passes through, as the device model needs
 * it: regions read and written in place, interrupts signalled by the host's
 * driver straight to the client's eventfds, DMA through the host IOMMU, and
 * reset. The host VFIO backend implements it; tests use fakes.
 */
export interface HostFunction {
  readonly description: string;
  readonly resettable: boolean;
  /** The region at `index` when the host has it (size > 0), else null. */
  region(index: number): HostRegion | null;
  read(index: number, offset: number, dst: Uint8Array, dstOffset: number, count: number): void;
  write(index: number, offset: number, src: Uint8Array, srcOffset: number, count: number): void;
  /** The host's interrupt index, or null when it has none of that kind. */
  irq(index: number): HostIrq | null;
  /**
   * VFIO_DEVICE_SET_IRQS with vfio-user's flags (they are the same numbers):
   * one eventfd per interrupt (null de-assigns) or one bool byte per interrupt.
   */
  setIrqs(flags: number, index: number, start: number, count: number, data: { eventfds?: readonly (number | null)[]; bools?: Uint8Array }): void;
  /** Function-level reset through the host driver. */
  reset(): void;
  /** Maps the client's memory into the host IOMMU; null when the function cannot DMA. */
  readonly dma: DmaObserver | null;
  close(): void;
}
