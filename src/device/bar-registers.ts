import type { ConfigOverlay, EmulatedDword } from './config-source.js';
import { BarFlag, Cfg } from './pci.js';
import { isPowerOfTwo, TWO_32 } from '../common/arith.js';

export interface BarSpec {
  /** First BAR slot (0-5); a 64-bit BAR also uses the next one. */
  index: number;
  /** Power of two, at least 16 bytes. */
  size: number;
  prefetchable: boolean;
}

/**
 * The BAR registers of 64-bit memory BARs, emulated as hardware does: the low
 * bits below the size read as zero, so writing all ones and reading back gives
 * the size mask with the type bits; a written base is kept until reset.
 */
export function installBars(cfg: ConfigOverlay, bars: readonly BarSpec[]): void {
  for (const bar of bars) {
    if (bar.size < 16 || !isPowerOfTwo(bar.size)) {
      throw new Error(`BAR${bar.index} size ${bar.size} is not a power of two of at least 16`);
    }
    const typeBits = BarFlag.MEM_TYPE_64 | (bar.prefetchable ? BarFlag.PREFETCH : 0);
    const lowMask = bar.size >= TWO_32 ? 0 : ((~(bar.size - 1) >>> 0) & ~0xf) >>> 0;
    const highMask = bar.size > TWO_32 ? ~(bar.size / TWO_32 - 1) >>> 0 : 0xffffffff;
    const lowAt = Cfg.BAR0 + 4 * bar.index;
    const low: EmulatedDword = {
      write: (v) => cfg.store32(lowAt, ((v & lowMask) | typeBits) >>> 0),
      reset: () => cfg.store32(lowAt, typeBits),
    };
    const high: EmulatedDword = {
      write: (v) => cfg.store32(lowAt + 4, (v & highMask) >>> 0),
      reset: () => cfg.store32(lowAt + 4, 0),
    };
    cfg.emulate(lowAt, low);
    cfg.emulate(lowAt + 4, high);
    low.reset();
    high.reset();
  }
}
