import { DmaMapFlag, Errno } from '../wire/constants.js';
import { DeviceError } from './errors.js';
import { FdBudget } from './fd-budget.js';

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
  /** Where `memory` starts in the map: a large map is reached through a window. */
  memoryOffset: number;
}

/**
 * Largest piece of a map mapped at once. Node 20 cannot hold more than 4 GiB
 * in one ArrayBuffer, and a guest's RAM map can be far larger.
 */
export const DMA_WINDOW = 1024 * 1024 * 1024;

/**
 * The client memory the device may reach, keyed by DMA (guest physical) address.
 * Kept sorted and non-overlapping; every fd it holds is closed on unmap or release.
 */
export class DmaMapTable {
  private readonly maps: DmaMapping[] = [];

  /** Windows start at multiples of this, so an access of up to window - step bytes fits in one. */
  private readonly windowStep: number;

  constructor(
    private readonly ops: DmaFileOps,
    readonly maxMaps: number,
    readonly pageSize: number,
    private readonly observer: DmaObserver | null = null,
    private readonly fds: FdBudget = new FdBudget(Infinity),
    readonly windowSize: number = DMA_WINDOW,
  ) {
    this.windowStep = windowSize / 4;
    if (this.windowStep % pageSize) throw new Error(`DMA window ${windowSize} is not a multiple of 4 pages`);
  }

  get count(): number {
    return this.maps.length;
  }

  get heldFds(): number {
    let n = 0;
    for (const m of this.maps) if (m.fd !== null) n++;
    return n;
  }

  list(): readonly DmaMapping[] {
    return this.maps;
  }

  /** Adds a mapping; on success the table owns `fd`, on failure the caller still does. */
  add(address: number, size: number, flags: number, fd: number | null, fdOffset: number): DmaMapping {
    if (flags & ~(DmaMapFlag.READ | DmaMapFlag.WRITE)) throw new DeviceError(Errno.EINVAL, `DMA_MAP: unknown flags 0x${flags.toString(16)}`);
    if (size === 0) throw new DeviceError(Errno.EINVAL, 'DMA_MAP: size 0');
    if (address % this.pageSize || size % this.pageSize) {
      throw new DeviceError(Errno.EINVAL, `DMA_MAP: address/size not aligned to ${this.pageSize}`);
    }
    if (!Number.isSafeInteger(address + size)) throw new DeviceError(Errno.EINVAL, 'DMA_MAP: range overflows');
    if (fd === null && fdOffset !== 0) throw new DeviceError(Errno.EINVAL, 'DMA_MAP: offset without an fd');
    if (fd !== null && fdOffset % this.pageSize) throw new DeviceError(Errno.EINVAL, 'DMA_MAP: file offset not page aligned');
    if (this.maps.length >= this.maxMaps) throw new DeviceError(Errno.ENOSPC, `DMA_MAP: limit of ${this.maxMaps} maps reached`);
    const at = this.insertionPoint(address);
    const before = this.maps[at - 1];
    const after = this.maps[at];
    if ((before && before.address + before.size > address) || (after && address + size > after.address)) {
      throw new DeviceError(Errno.EEXIST, `DMA_MAP: [0x${address.toString(16)}, +0x${size.toString(16)}) overlaps a map`);
    }
    if (fd !== null) {
      this.ops.check(fd, fdOffset, size);
      this.fds.take(1, 'DMA_MAP');
    }
    const m: DmaMapping = { address, size, flags, fd, fdOffset, memory: null, memoryOffset: 0 };
    try {
      this.observer?.mapped(m);
    } catch (err) {
      if (fd !== null) this.fds.release(1);
      throw err;
    }
    this.maps.splice(at, 0, m);
    return m;
  }

  /** Removes the mapping that matches exactly. */
  remove(address: number, size: number): DmaMapping {
    const at = this.insertionPoint(address);
    const m = this.maps[at];
    if (!m || m.address !== address || m.size !== size) {
      throw new DeviceError(Errno.ENOENT, `DMA_UNMAP: no map at [0x${address.toString(16)}, +0x${size.toString(16)})`);
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

  /**
   * Bytes of client memory at a DMA address, mapped on first use: the whole map
   * when it fits in a window, else the window around the access. The view is
   * valid until the next view() of the same map or its removal.
   */
  view(address: number, length: number, write: boolean): Uint8Array {
    const m = this.find(address, length);
    if (!m) throw new DeviceError(Errno.EFAULT, `DMA: 0x${address.toString(16)}+${length} is not mapped`);
    if (m.fd === null) throw new DeviceError(Errno.EFAULT, 'DMA: region was not shared by fd');
    if (write ? !(m.flags & DmaMapFlag.WRITE) : !(m.flags & DmaMapFlag.READ)) {
      throw new DeviceError(Errno.EACCES, 'DMA: access not permitted by map flags');
    }
    const at = address - m.address;
    if (!m.memory || at < m.memoryOffset || at + length > m.memoryOffset + m.memory.byteLength) {
      let start = 0;
      let size = m.size;
      if (m.size > this.windowSize) {
        if (length > this.windowSize - this.windowStep) {
          throw new DeviceError(Errno.EINVAL, `DMA: access of ${length} bytes is larger than a window`);
        }
        start = at - (at % this.windowStep);
        size = Math.min(this.windowSize, m.size - start);
      }
      if (m.memory) this.ops.unmap(m.memory);
      m.memory = null;
      m.memory = this.ops.map(m.fd, m.fdOffset + start, size, (m.flags & DmaMapFlag.WRITE) !== 0);
      m.memoryOffset = start;
    }
    return new Uint8Array(m.memory, at - m.memoryOffset, length);
  }

  private drop(m: DmaMapping): void {
    this.observer?.unmapped(m);
    if (m.memory) this.ops.unmap(m.memory);
    m.memory = null;
    if (m.fd !== null) {
      this.ops.close(m.fd);
      this.fds.release(1);
    }
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
