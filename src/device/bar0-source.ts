import type { MemoryBacking } from './memory-bar.js';

/**
 * Where BAR0, the register BAR, comes from. Every source exposes its bytes as
 * fd-backed memory the client can map. Backends implement it; the device
 * model owns it.
 */
export interface Bar0Source {
  readonly kind: string;
  readonly description: string;
  readonly memory: MemoryBacking;
  /** BAR size: a power of two no smaller than the memory. */
  readonly barSize: number;
  reset(): void;
  /** Puts back the size of a file a client changed; the size found, or null. */
  restoreSize?(): number | null;
  close(): void;
}
