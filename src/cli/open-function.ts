import type { Logger } from 'pino';
import { openEmulatedBar0 } from '../backends/bar0-emulated.js';
import { openFileBar0 } from '../backends/bar0-file.js';
import type { Bar0Spec } from '../backends/bar0-spec.js';
import type { Bar0Source } from '../device/bar0-source.js';
import { openSysfsBar0 } from '../backends/bar0-sysfs.js';
import { openVfio } from '../backends/vfio/open.js';
import { DEFAULT_IDENTITY, EmulatedFunction } from '../device/emulated-function.js';
import { PassthroughFunction } from '../device/passthrough-function.js';
import type { PciFunction } from '../device/pci-function.js';
import { DEFAULT_READINESS, type ReadyWaitMode } from '../device/readiness.js';

/** The serve options that choose what stands behind BAR0. */
export interface FunctionOptions {
  bar0: Bar0Spec;
  vendorId: number;
  readyWait?: ReadyWaitMode;
  readyTimeoutMs?: number;
}

/** What stands behind BAR0, from --bar0: an emulated function over a register source, or a host function passed through. */
export function openPciFunction(opts: FunctionOptions, deviceId: number, pageSize: number, log: Logger): PciFunction {
  const spec = opts.bar0;
  if (spec.kind === 'vfio') {
    const host = openVfio(spec.target, { onError: (message, err) => log.error({ err }, message) });
    try {
      return new PassthroughFunction(host, {
        readiness: {
          ...DEFAULT_READINESS,
          mode: opts.readyWait ?? DEFAULT_READINESS.mode,
          timeoutMs: opts.readyTimeoutMs ?? DEFAULT_READINESS.timeoutMs,
        },
      });
    } catch (err) {
      host.close();
      throw err;
    }
  }
  let source: Bar0Source;
  if (spec.kind === 'emulated') source = openEmulatedBar0();
  else if (spec.kind === 'file') source = openFileBar0(spec.path);
  else source = openSysfsBar0(spec.bdf);
  return new EmulatedFunction({ ...DEFAULT_IDENTITY, vendorId: opts.vendorId, deviceId }, source, pageSize);
}
