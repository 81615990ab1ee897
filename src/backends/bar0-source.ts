import type { MemoryBacking } from '../device/memory-bar.js';

/**
 * Where BAR0, the register BAR, comes from. Every source exposes its bytes as
 * fd-backed memory the client can map; more sources (host VFIO) plug in here.
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

export type Bar0Spec = { kind: 'emulated' } | { kind: 'file'; path: string };

export function parseBar0Spec(text: string): Bar0Spec {
  if (text === 'emulated') return { kind: 'emulated' };
  if (text.startsWith('file:') && text.length > 'file:'.length) return { kind: 'file', path: text.slice('file:'.length) };
  throw new Error(`--bar0 must be "emulated" or "file:PATH", not "${text}"`);
}
