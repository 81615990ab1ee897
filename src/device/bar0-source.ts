import type { MemoryBacking } from './memory-bar.js';
import { parseBdf } from '../backends/vfio/pci-address.js';

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

export type Bar0Spec =
  | { kind: 'emulated' }
  | { kind: 'file'; path: string }
  /** A host function with no driver, through its sysfs resource0: registers only. */
  | { kind: 'sysfs'; bdf: string }
  /** A host function bound to vfio-pci, passed through: a PCI address or a VFIO cdev path. */
  | { kind: 'vfio'; target: string };

export function parseBar0Spec(text: string): Bar0Spec {
  if (text === 'emulated') return { kind: 'emulated' };
  const colon = text.indexOf(':');
  const kind = colon > 0 ? text.slice(0, colon) : '';
  const rest = text.slice(colon + 1);
  if (rest.length > 0) {
    if (kind === 'file') return { kind: 'file', path: rest };
    const bdf = parseBdf(rest);
    if (kind === 'sysfs' && bdf) return { kind: 'sysfs', bdf };
    if (kind === 'vfio' && (bdf || rest.startsWith('/'))) return { kind: 'vfio', target: bdf ?? rest };
  }
  throw new Error(`--bar0 must be "emulated", "file:PATH", "sysfs:BDF" or "vfio:BDF|/dev/vfio/devices/vfioN" (BDF as 0000:01:00.0), not "${text}"`);
}
