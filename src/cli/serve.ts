import { openAperture, type Aperture } from '../backends/aperture.js';
import { openEmulatedBar0 } from '../backends/bar0-emulated.js';
import { openFileBar0 } from '../backends/bar0-file.js';
import type { Bar0Source, Bar0Spec } from '../backends/bar0-source.js';
import { dmaFileOps, eventfdSink } from '../backends/client-memory.js';
import { scrubAperture, type ScrubMode } from '../backends/scrub.js';
import { DEFAULT_IDENTITY, GpuDevice } from '../device/gpu-device.js';
import { createLogger } from '../log.js';
import { native } from '../native/native.js';
import { Daemon } from '../server/daemon.js';
import { Limits } from '../wire/constants.js';
import { formatSize, hex } from './parse.js';

export interface ServeOptions {
  socket: string;
  socketMode: number;
  socketGroup?: number | undefined;
  allowUids?: number[];
  scrub?: ScrubMode;
  /** Default 96 MiB; for a device-dax, the rest of the device after the base. */
  apertureSize?: number | undefined;
  apertureBase: number;
  aperturePath?: string | undefined;
  /** Huge page size in bytes (2 MiB or 1 GiB). */
  apertureHugePages?: number | undefined;
  apertureNumaNode?: number | undefined;
  /** For tests: the CPU architecture start-up warnings are for, and where sysfs is. */
  arch?: string | undefined;
  sysfsRoot?: string | undefined;
  bar0: Bar0Spec;
  vendorId: number;
  deviceId: number;
  logLevel: string;
}

export interface Running {
  daemon: Daemon;
  aperture: Aperture;
  stop(): void;
}

/** Builds the device from the options and starts serving it. */
export function startDaemon(opts: ServeOptions): Running {
  const log = createLogger(opts.logLevel);
  const pageSize = native.pageSize();
  const aperture: Aperture = openAperture({
    size: opts.apertureSize,
    base: opts.apertureBase,
    path: opts.aperturePath,
    pageSize,
    hugePageSize: opts.apertureHugePages,
    numaNode: opts.apertureNumaNode,
    arch: opts.arch,
    sysfsRoot: opts.sysfsRoot,
  });
  for (const w of aperture.warnings) log.warn(w);
  let bar0: Bar0Source;
  try {
    bar0 = opts.bar0.kind === 'emulated' ? openEmulatedBar0() : openFileBar0(opts.bar0.path);
  } catch (err) {
    aperture.close();
    throw err;
  }
  const device = new GpuDevice({
    identity: { ...DEFAULT_IDENTITY, vendorId: opts.vendorId, deviceId: opts.deviceId },
    bar0,
    aperture: aperture.memory,
    pageSize,
    events: eventfdSink,
    dmaOps: dmaFileOps,
    maxDmaMaps: Limits.MAX_DMA_MAPS,
  });
  const scrubMode = opts.scrub ?? 'never';
  const daemon = new Daemon(device, log, {
    socketPath: opts.socket,
    socketMode: opts.socketMode,
    socketGroup: opts.socketGroup,
    allowUids: opts.allowUids ?? [],
    scrub: { mode: scrubMode, run: (progress, stop) => scrubAperture(aperture, progress, stop) },
  });
  try {
    daemon.start();
  } catch (err) {
    bar0.close();
    aperture.close();
    throw err;
  }
  log.info(
    {
      vendor: hex(opts.vendorId, 4),
      device: hex(opts.deviceId, 4),
      bar0: { source: bar0.description, size: formatSize(device.bar0.size) },
      bar2: {
        backing: aperture.facts,
        base: hex(opts.apertureBase),
        memory: formatSize(aperture.memory.size),
        size: formatSize(device.aperture.size),
        mapped: formatSize(device.aperture.mmap?.areas.reduce((n, a) => n + a.size, 0) ?? 0),
      },
    },
    'device ready',
  );

  let stopped = false;
  return {
    daemon,
    aperture,
    stop() {
      if (stopped) return;
      stopped = true;
      daemon.stop();
      // a scrub in progress stops at its next window; close the backing after it
      void daemon.whenScrubbed().then(() => {
        bar0.close();
        aperture.close();
        log.info('stopped');
      });
    },
  };
}

/** Runs until SIGTERM or SIGINT, then closes the client and removes the socket. */
export async function serve(opts: ServeOptions): Promise<number> {
  const running = startDaemon(opts);
  await new Promise<void>((resolve) => {
    const onSignal = () => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      running.stop();
      resolve();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  return 0;
}
