import { RegionIndex } from '../wire/constants.js';
import type { ConfigSource } from './config-source.js';
import type { Region } from './region.js';

/** PCI configuration space as region 7: always trapped, never mapped. */
export class ConfigRegion implements Region {
  readonly index = RegionIndex.CONFIG;
  readonly readable = true;
  readonly writable = true;
  readonly mmap = null;

  constructor(private readonly config: ConfigSource) {}

  get size(): number {
    return this.config.size;
  }

  read(offset: number, dst: Uint8Array, dstOffset: number, count: number): void {
    this.config.read(offset, dst, dstOffset, count);
  }

  write(offset: number, src: Uint8Array, srcOffset: number, count: number): void {
    this.config.write(offset, src, srcOffset, count);
  }
}
