import { openAperture, type Aperture } from '../backends/aperture.js';
import type { Bar0Spec } from '../backends/bar0-source.js';
import { dmaFileOps, eventfdSink } from '../backends/client-memory.js';
import { scrubAperture, type ScrubMode } from '../backends/scrub.js';
import { GpuDevice } from '../device/gpu-device.js';
import type { PciFunction } from '../device/pci-function.js';
import type { ReadyWaitMode } from '../device/readiness.js';
import { createLogger } from '../log.js';
import { native } from '../native/native.js';
import { Daemon } from '../server/daemon.js';
import { Limits } from '../wire/constants.js';
import { openPciFunction } from './open-function.js';
import { formatSize, hex } from './parse.js';

export interface ServeOptions {
  socket: string;
  socketMode: number;
  socketGroup?: number | undefined;
  allowUids?: number[];
  scrub?: ScrubMode;
  apertureSize: number;
  apertureBase: number;
  aperturePath?: string | undefined;
  bar0: Bar0Spec;
  vendorId: number;
  deviceId: number;
  logLevel: string;
  /** Readiness wait of a passed-through GPU (at start and after each reset). */
  readyWait?: ReadyWaitMode;
  readyTimeoutMs?: number;
}

export interface Running {
  daemon: Daemon;
  /** Resolves once the daemon listens (after a passed-through GPU is ready); rejects if it never will. */
  ready: Promise<void>;
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
  });
  let fn: PciFunction | null = null;
  let device: GpuDevice;
  try {
    fn = openPciFunction(opts, pageSize, log);
    device = new GpuDevice({
      function: fn,
      aperture: aperture.memory,
      pageSize,
      events: eventfdSink,
      dmaOps: dmaFileOps,
      maxDmaMaps: Limits.MAX_DMA_MAPS,
    });
  } catch (err) {
    fn?.close();
    aperture.close();
    throw err;
  }
  const scrubMode = opts.scrub ?? 'never';
  const daemon = new Daemon(device, log, {
    socketPath: opts.socket,
    socketMode: opts.socketMode,
    socketGroup: opts.socketGroup,
    allowUids: opts.allowUids ?? [],
    scrub: { mode: scrubMode, run: (progress, stop) => scrubAperture(aperture, progress, stop) },
  });
  const startListening = () => {
    try {
      daemon.start();
    } catch (err) {
      fn.close();
      aperture.close();
      throw err;
    }
  };
  const waiting = fn.ready();
  let ready: Promise<void>;
  if (waiting === null) {
    startListening();
    ready = Promise.resolve();
  } else {
    log.info({ function: fn.description }, 'waiting for the device to be ready');
    ready = waiting.then(startListening, (err: Error) => {
      fn.close();
      aperture.close();
      throw err;
    });
  }
  const cfg = Buffer.alloc(4);
  device.config.read(0, cfg, 0, 4);
  log.info(
    {
      vendor: hex(cfg.readUInt16LE(0), 4),
      device: hex(cfg.readUInt16LE(2), 4),
      bar0: { source: fn.description, size: formatSize(device.bar0.size) },
      bar2: {
        backing: aperture.kind,
        path: aperture.path,
        base: hex(opts.apertureBase),
        memory: formatSize(opts.apertureSize),
        size: formatSize(device.aperture.size),
        mapped: formatSize(device.aperture.mmap?.areas.reduce((n, a) => n + a.size, 0) ?? 0),
      },
    },
    'device ready',
  );

  let stopped = false;
  return {
    daemon,
    ready,
    stop() {
      if (stopped) return;
      stopped = true;
      daemon.stop();
      // a scrub in progress stops at its next window; close the backing after it
      void daemon.whenScrubbed().then(() => {
        fn.close();
        aperture.close();
        log.info('stopped');
      });
    },
  };
}

/** Runs until SIGTERM or SIGINT, then closes the client and removes the socket. */
export async function serve(opts: ServeOptions): Promise<number> {
  const running = startDaemon(opts);
  await running.ready;
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
