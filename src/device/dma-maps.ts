import { DmaMapFlag, Errno } from '../wire/constants.js';
import { WireError } from '../wire/errors.js';

/** The file operations DMA maps need, injected so the table itself stays pure. */
export interface DmaFileOps {
  /** Throws (with errno) unless [offset, offset+size) of fd can be mapped. */
  check(fd: number, offset: number, size: number): void;
  map(fd: number, offset: number, size: number, writable: boolean): ArrayBuffer;
  unmap(memory: ArrayBuffer): void;
  close(fd: number): void;
}

/**
 * Told of every map entering and leaving the table, so a real device can reach
 * the same memory (the host IOMMU of a passed-through function).
 */
export interface DmaObserver {
  /** Called before a map enters the table; throwing refuses the map. */
  mapped(m: Readonly<DmaMapping>): void;
  /** Called when a map leaves the table, before its fd is closed; must not throw. */
  unmapped(m: Readonly<DmaMapping>): void;
}

export interface DmaMapping {
  address: number;
  size: number;
  flags: number;
  /** null for memory the client did not share by fd (reachable only by DMA messages). */
  fd: number | null;
  fdOffset: number;
  /** Mapped on first use, so that a VM's many maps cost nothing until DMA happens. */
  memory: ArrayBuffer | null;
}

/**
 * The client memory the device may reach, keyed by DMA (guest physical) address.
 * Kept sorted and non-overlapping; every fd it holds is closed on unmap or release.
 */
export class DmaMapTable {
  private readonly maps: DmaMapping[] = [];

  constructor(
    private readonly ops: DmaFileOps,
    readonly maxMaps: number,
    readonly pageSize: number,
    private readonly observer: DmaObserver | null = null,
  ) {}

  get count(): number {
    return this.maps.length;
  }

  get heldFds(): number {
    return this.maps.reduce((n, m) => n + (m.fd === null ? 0 : 1), 0);
  }

  list(): readonly DmaMapping[] {
    return this.maps;
  }

  /** Adds a mapping; on success the table owns `fd`, on failure the caller still does. */
  add(address: number, size: number, flags: number, fd: number | null, fdOffset: number): DmaMapping {
    if (flags & ~(DmaMapFlag.READ | DmaMapFlag.WRITE)) throw new WireError(Errno.EINVAL, `DMA_MAP: unknown flags 0x${flags.toString(16)}`);
    if (size === 0) throw new WireError(Errno.EINVAL, 'DMA_MAP: size 0');
    if (address % this.pageSize || size % this.pageSize) {
      throw new WireError(Errno.EINVAL, `DMA_MAP: address/size not aligned to ${this.pageSize}`);
    }
    if (!Number.isSafeInteger(address + size)) throw new WireError(Errno.EINVAL, 'DMA_MAP: range overflows');
    if (fd === null && fdOffset !== 0) throw new WireError(Errno.EINVAL, 'DMA_MAP: offset without an fd');
    if (fd !== null && fdOffset % this.pageSize) throw new WireError(Errno.EINVAL, 'DMA_MAP: file offset not page aligned');
    if (this.maps.length >= this.maxMaps) throw new WireError(Errno.ENOSPC, `DMA_MAP: limit of ${this.maxMaps} maps reached`);
    const at = this.insertionPoint(address);
    const before = this.maps[at - 1];
    const after = this.maps[at];
    if ((before && before.address + before.size > address) || (after && address + size > after.address)) {
      throw new WireError(Errno.EEXIST, `DMA_MAP: [0x${address.toString(16)}, +0x${size.toString(16)}) overlaps a map`);
    }
    if (fd !== null) this.ops.check(fd, fdOffset, size);
    const m: DmaMapping = { address, size, flags, fd, fdOffset, memory: null };
    this.observer?.mapped(m);
    this.maps.splice(at, 0, m);
    return m;
  }

  /** Removes the mapping that matches exactly. */
  remove(address: number, size: number): DmaMapping {
    const at = this.insertionPoint(address);
    const m = this.maps[at];
    if (!m || m.address !== address || m.size !== size) {
      throw new WireError(Errno.ENOENT, `DMA_UNMAP: no map at [0x${address.toString(16)}, +0x${size.toString(16)})`);
    }
    this.maps.splice(at, 1);
    this.drop(m);
    return m;
  }

  /** Removes everything (DMA_UNMAP with the ALL flag, or the client leaving). */
  clear(): void {
    for (const m of this.maps.splice(0, this.maps.length)) this.drop(m);
  }

  /** The mapping holding [address, address+length), or null. */
  find(address: number, length: number): DmaMapping | null {
    const at = this.insertionPoint(address + 1) - 1;
    const m = this.maps[at];
    if (!m || address < m.address || address + length > m.address + m.size) return null;
    return m;
  }

  /** Bytes of client memory at a DMA address, mapping the region on first use. */
  view(address: number, length: number, write: boolean): Uint8Array {
    const m = this.find(address, length);
    if (!m) throw new WireError(Errno.EFAULT, `DMA: 0x${address.toString(16)}+${length} is not mapped`);
    if (m.fd === null) throw new WireError(Errno.EFAULT, 'DMA: region was not shared by fd');
    if (write ? !(m.flags & DmaMapFlag.WRITE) : !(m.flags & DmaMapFlag.READ)) {
      throw new WireError(Errno.EACCES, 'DMA: access not permitted by map flags');
    }
    m.memory ??= this.ops.map(m.fd, m.fdOffset, m.size, (m.flags & DmaMapFlag.WRITE) !== 0);
    return new Uint8Array(m.memory, address - m.address, length);
  }

  private drop(m: DmaMapping): void {
    this.observer?.unmapped(m);
    if (m.memory) this.ops.unmap(m.memory);
    m.memory = null;
    if (m.fd !== null) this.ops.close(m.fd);
    m.fd = null;
  }

  /** First index whose address is >= `address`. */
  private insertionPoint(address: number): number {
    let lo = 0;
    let hi = this.maps.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.maps[mid]!.address < address) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
