import type { Command } from 'commander';
import { previewBacking } from '../backends/backing-preview.js';

/** --aperture-size, or when not given, what the backing holds (a device-dax: the rest of the device). */
export function apertureSize(o: Record<string, unknown>, cmd: Command): number {
  const given = o['apertureSize'] as number;
  if (cmd.getOptionValueSource('apertureSize') !== 'default' || !o['aperturePath']) return given;
  try {
    return previewBacking({ base: o['apertureBase'] as number, path: o['aperturePath'] as string }).size;
  } catch {
    return given; // serve says what is wrong with the backing
  }
}
