import type { DeviceConfig, EmulatedDword } from './config-source.js';
import { CONFIG_SPACE_SIZE } from './pci.js';

export type { EmulatedDword } from './config-source.js';

/**
 * PCI configuration space: bytes, a writable-bit mask and a write-1-to-clear mask
 * per byte, and emulated dwords. Everything not marked writable is read-only,
 * so a guest cannot change identity, capability pointers or reserved fields.
 */
export class ConfigSpace implements DeviceConfig {
  readonly size = CONFIG_SPACE_SIZE;
  private readonly bytes = Buffer.alloc(CONFIG_SPACE_SIZE);
  private readonly writable = Buffer.alloc(CONFIG_SPACE_SIZE);
  private readonly clearOnOne = Buffer.alloc(CONFIG_SPACE_SIZE);
  private readonly emulated = new Map<number, EmulatedDword>();
  private initial: Buffer | null = null;

  /** Defines `width` bytes at `offset` with an initial value and masks. */
  define(offset: number, width: 1 | 2 | 4, value: number, writableMask = 0, rw1cMask = 0): void {
    for (let i = 0; i < width; i++) {
      const shift = 8 * i;
      this.bytes[offset + i] = (value >>> shift) & 0xff;
      this.writable[offset + i] = (writableMask >>> shift) & 0xff;
      this.clearOnOne[offset + i] = (rw1cMask >>> shift) & 0xff;
    }
  }

  /** Hands the dword at `offset` (dword aligned) to an emulator. */
  emulate(offset: number, dword: EmulatedDword): void {
    if (offset % 4 !== 0) throw new Error(`emulated dword at unaligned offset ${offset}`);
    this.emulated.set(offset, dword);
  }

  /** Device-side store of a value, bypassing guest write masks (used by emulators). */
  store32(offset: number, value: number): void {
    this.bytes.writeUInt32LE(value >>> 0, offset);
  }

  read8(offset: number): number {
    return this.bytes[offset]!;
  }

  read16(offset: number): number {
    return this.bytes.readUInt16LE(offset);
  }

  read32(offset: number): number {
    return this.bytes.readUInt32LE(offset);
  }

  /** Marks the current contents as the power-on state that reset() returns to. */
  seal(): void {
    this.initial = Buffer.from(this.bytes);
  }

  reset(): void {
    if (this.initial) this.initial.copy(this.bytes);
    for (const d of this.emulated.values()) d.reset();
  }

  /** Caller has checked that [offset, offset+count) lies inside the space. */
  read(offset: number, dst: Uint8Array, dstOffset: number, count: number): void {
    // Register-sized reads copy byte by byte: Buffer#copy would allocate a view per call.
    if (count <= 8) {
      for (let i = 0; i < count; i++) dst[dstOffset + i] = this.bytes[offset + i]!;
      return;
    }
    this.bytes.copy(dst, dstOffset, offset, offset + count);
  }

  write(offset: number, src: Uint8Array, srcOffset: number, count: number): void {
    let i = 0;
    while (i < count) {
      const at = offset + i;
      const dwordAt = at & ~3;
      const emulator = this.emulated.size > 0 ? this.emulated.get(dwordAt) : undefined;
      if (emulator) {
        // Merge the written bytes of this dword into its current value, then let the emulator decide.
        let value = this.bytes.readUInt32LE(dwordAt);
        while (i < count && ((offset + i) & ~3) === dwordAt) {
          const shift = 8 * ((offset + i) & 3);
          value = ((value & ~(0xff << shift)) | (src[srcOffset + i]! << shift)) >>> 0;
          i++;
        }
        emulator.write(value);
        continue;
      }
      const v = src[srcOffset + i]!;
      const w = this.writable[at]!;
      let b = (this.bytes[at]! & ~w) | (v & w);
      b &= ~(v & this.clearOnOne[at]!);
      this.bytes[at] = b & 0xff;
      i++;
    }
  }
}
