import type { DeviceConfig, EmulatedDword } from './config-source.js';

/** A host function's configuration space as its VFIO driver presents it. */
export interface HostConfig {
  readonly size: number;
  read(offset: number, dst: Uint8Array, dstOffset: number, count: number): void;
  write(offset: number, src: Uint8Array, srcOffset: number, count: number): void;
}

/**
 * Configuration space of a passed-through function: every byte is the host's,
 * read live (status bits, capability state), except the dwords the daemon
 * emulates, which never reach the host.
 *
 * What must not reach hardware is already kept from it by the host's VFIO
 * driver, which virtualizes the BAR and ROM registers, the MSI and MSI-X
 * capabilities and anything it does not know. What it cannot know about are the
 * registers of BARs the hardware does not have: the aperture's, laid over here.
 */
export class PassthroughConfig implements DeviceConfig {
  private readonly shadow: Buffer;
  private readonly emulated = new Map<number, EmulatedDword>();
  /** Sorted offsets of emulated dwords, so an access finds its overlaps without allocating. */
  private offsets: number[] = [];
  private readonly scratch = Buffer.alloc(4);

  constructor(private readonly host: HostConfig) {
    this.shadow = Buffer.alloc(host.size);
  }

  get size(): number {
    return this.host.size;
  }

  emulate(offset: number, dword: EmulatedDword): void {
    if (offset % 4 !== 0 || offset + 4 > this.size) throw new Error(`emulated dword at bad offset ${offset}`);
    this.emulated.set(offset, dword);
    this.offsets = [...this.emulated.keys()].sort((a, b) => a - b);
  }

  store32(offset: number, value: number): void {
    this.shadow.writeUInt32LE(value >>> 0, offset);
  }

  read8(offset: number): number {
    this.read(offset, this.scratch, 0, 1);
    return this.scratch[0]!;
  }

  read16(offset: number): number {
    this.read(offset, this.scratch, 0, 2);
    return this.scratch.readUInt16LE(0);
  }

  read32(offset: number): number {
    this.read(offset, this.scratch, 0, 4);
    return this.scratch.readUInt32LE(0);
  }

  read(offset: number, dst: Uint8Array, dstOffset: number, count: number): void {
    this.host.read(offset, dst, dstOffset, count);
    const end = offset + count;
    for (const at of this.offsets) {
      if (at + 4 <= offset) continue;
      if (at >= end) break;
      const from = Math.max(at, offset);
      const to = Math.min(at + 4, end);
      this.shadow.copy(dst, dstOffset + (from - offset), from, to);
    }
  }

  write(offset: number, src: Uint8Array, srcOffset: number, count: number): void {
    const end = offset + count;
    let at = offset;
    for (const dword of this.offsets) {
      if (dword + 4 <= at) continue;
      if (dword >= end) break;
      // The host's part before this emulated dword, in one write so its width is kept.
      if (dword > at) this.host.write(at, src, srcOffset + (at - offset), dword - at);
      const from = Math.max(dword, at);
      const to = Math.min(dword + 4, end);
      let value = this.shadow.readUInt32LE(dword);
      for (let b = from; b < to; b++) {
        const shift = 8 * (b - dword);
        value = ((value & ~(0xff << shift)) | (src[srcOffset + (b - offset)]! << shift)) >>> 0;
      }
      this.emulated.get(dword)!.write(value);
      at = to;
    }
    if (at < end) this.host.write(at, src, srcOffset + (at - offset), end - at);
  }

  reset(): void {
    for (const d of this.emulated.values()) d.reset();
  }
}
