import type { DeviceConfig } from './config-source.js';
import type { DmaObserver } from './dma-maps.js';
import type { IrqKind, IrqRoute } from './interrupts.js';
import type { Region } from './region.js';

/**
 * What stands behind the device's registers: the config space, BAR0 and any
 * other region the client sees, the interrupt lines, and what DMA and reset
 * mean. Either emulated by the daemon, or a host function passed through; the
 * device adds the aperture BAR on top of either.
 */
export interface PciFunction {
  readonly description: string;
  readonly config: DeviceConfig;
  /** The register BAR, region 0. */
  readonly bar0: Region;
  readonly resettable: boolean;
  readonly irqKinds: readonly IrqKind[];
  /** Null when the daemon signals the eventfds itself. */
  readonly irqRoute: IrqRoute | null;
  /** Null when no real device reaches client memory. */
  readonly dmaObserver: DmaObserver | null;
  /** The region at `index` other than config space and the aperture, or null. */
  region(index: number): Region | null;
  /**
   * Resets what lies behind the registers; the device resets the emulated config
   * registers afterwards. May wait (a GPU's readiness after a reset).
   */
  reset(): void | Promise<void>;
  /**
   * What to wait for before serving: a GPU's readiness after the host reset it
   * on open; null when there is nothing to wait for.
   */
  ready(): Promise<void> | null;
  close(): void;
}
