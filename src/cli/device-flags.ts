import type { Command } from 'commander';
import type { DeviceFlags } from '../orchestration/description.js';
import { apertureSize } from './aperture-size.js';
import { parseBar0Spec } from './parse.js';

/** The flags that say what the device is, as `serve` and `describe` both take them. */
export function deviceFlagValues(o: Record<string, any>, cmd: Command): Omit<DeviceFlags, 'socket' | 'sysfsRoot'> {
  return {
    apertureSize: apertureSize(o, cmd),
    apertureBase: o['apertureBase'],
    aperturePath: o['aperturePath'],
    apertureHugePages: o['apertureHugepages'],
    apertureNumaNode: o['apertureNumaNode'],
    bar0: typeof o['bar0'] === 'string' ? parseBar0Spec(o['bar0']) : o['bar0'],
    layout: o['layout'],
    vendorId: o['vendorId'],
    deviceId: o['deviceId'],
  };
}
