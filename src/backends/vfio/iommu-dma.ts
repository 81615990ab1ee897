import type { DmaMapping, DmaObserver } from '../../device/dma-maps.js';
import { native } from '../../native/native.js';
import { DmaMapFlag } from '../../wire/constants.js';
import { HostError } from './host-error.js';

/** An IO address space of the host IOMMU: a type1 container or an iommufd IOAS. */
export interface Iommu {
  readonly kind: string;
  /** Maps [vaddr, +size) of this process at `iova`; throws a syscall error. */
  map(vaddr: number, iova: number, size: number, readable: boolean, writable: boolean): void;
  unmap(iova: number, size: number): void;
}

interface Pinned {
  address: number;
  size: number;
  iova: number;
}

const ENOMEM = 12;

/**
 * Puts every map of client memory into the host IOMMU at its DMA address, so
 * the passed-through device reaches the client's memory itself. The IOMMU
 * takes a process address: the daemon maps the client's fd for it (natively,
 * so a map may exceed the 4 GiB an ArrayBuffer can hold) and keeps that mapping
 * until the map goes. The kernel pins the pages while they are mapped.
 */
export class IommuDma implements DmaObserver {
  private readonly pinned = new Map<Readonly<DmaMapping>, Pinned>();

  constructor(
    private readonly iommu: Iommu,
    private readonly onError: (message: string, err: unknown) => void = () => {},
  ) {}

  get count(): number {
    return this.pinned.size;
  }

  mapped(m: Readonly<DmaMapping>): void {
    // Memory not shared by fd (ROM, anonymous RAM) cannot be given to the IOMMU; the device simply cannot reach it.
    if (m.fd === null || !(m.flags & (DmaMapFlag.READ | DmaMapFlag.WRITE))) return;
    const writable = (m.flags & DmaMapFlag.WRITE) !== 0;
    const prot = native.PROT_READ | (writable ? native.PROT_WRITE : 0);
    const address = native.mmapAddress(m.fd, m.size, prot, native.MAP_SHARED, m.fdOffset);
    try {
      this.iommu.map(address, m.address, m.size, (m.flags & DmaMapFlag.READ) !== 0, writable);
    } catch (err) {
      native.munmapAddress(address, m.size);
      const e = err as { code?: string; errno?: number };
      const where = `[0x${m.address.toString(16)}, +0x${m.size.toString(16)})`;
      if (e.errno === ENOMEM) {
        throw new HostError(
          `host IOMMU (${this.iommu.kind}) could not pin ${where}: locked-memory limit reached; raise the daemon's RLIMIT_MEMLOCK to the VM's memory size (ulimit -l, LimitMEMLOCK=)`,
          ENOMEM,
        );
      }
      throw new HostError(`host IOMMU (${this.iommu.kind}) refused ${where}: ${e.code ?? (err as Error).message}`, e.errno ?? 5);
    }
    this.pinned.set(m, { address, size: m.size, iova: m.address });
  }

  unmapped(m: Readonly<DmaMapping>): void {
    const p = this.pinned.get(m);
    if (!p) return;
    this.pinned.delete(m);
    this.release(p);
  }

  /** Undoes every map (the host function is closing). */
  clear(): void {
    for (const p of this.pinned.values()) this.release(p);
    this.pinned.clear();
  }

  private release(p: Pinned): void {
    try {
      this.iommu.unmap(p.iova, p.size);
    } catch (err) {
      this.onError(`host IOMMU unmap of [0x${p.iova.toString(16)}, +0x${p.size.toString(16)}) failed`, err);
    }
    try {
      native.munmapAddress(p.address, p.size);
    } catch (err) {
      this.onError('munmap of a DMA mapping failed', err);
    }
  }
}
