import type { Command } from 'commander';
import { apertureSize } from './aperture-size.js';
import { parseBar0Spec } from './parse.js';

/** The flags that say what the device is, as `serve` and `describe` both take them. */
export function deviceFlagValues(o: Record<string, any>, cmd: Command) {
  return {
    apertureSize: apertureSize(o, cmd),
    apertureBase: o['apertureBase'] as number,
    aperturePath: o['aperturePath'] as string | undefined,
    apertureHugePages: o['apertureHugepages'] as number | undefined,
    apertureNumaNode: o['apertureNumaNode'] as number | undefined,
    bar0: typeof o['bar0'] === 'string' ? parseBar0Spec(o['bar0']) : o['bar0'],
    layout: o['layout'],
    vendorId: o['vendorId'] as number,
    deviceId: o['deviceId'] as number | undefined,
  };
}
