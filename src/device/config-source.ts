/** A dword whose value the device computes (BAR registers), instead of a plain masked store. */
export interface EmulatedDword {
  /** `value` is the dword after merging the written bytes into the current one. */
  write(value: number): void;
  reset(): void;
}

/**
 * PCI configuration space as the client sees it (region 7): built by the
 * daemon for an emulated device, or a host function's own with the daemon's
 * registers laid over it. Accesses arrive bounds-checked against `size`.
 */
export interface ConfigSource {
  readonly size: number;
  read(offset: number, dst: Uint8Array, dstOffset: number, count: number): void;
  write(offset: number, src: Uint8Array, srcOffset: number, count: number): void;
  read8(offset: number): number;
  read16(offset: number): number;
  read32(offset: number): number;
  /** Function-level reset: emulated registers return to their power-on values. */
  reset(): void;
}

/** Where the device's own register emulators (the aperture's BAR registers) plug in. */
export interface ConfigOverlay {
  /** Hands the dword at `offset` (dword aligned) to an emulator. */
  emulate(offset: number, dword: EmulatedDword): void;
  /** Device-side store of an emulated dword's value, bypassing guest write masks. */
  store32(offset: number, value: number): void;
}

export type DeviceConfig = ConfigSource & ConfigOverlay;
