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
import { clientFdLimit } from '../server/fd-limits.js';
import type { ConnectionLimits } from '../transport/connection.js';
import { Limits } from '../wire/constants.js';
import { formatSize, hex } from './parse.js';

export interface ServeOptions {
  socket: string;
  socketMode: number;
  socketGroup?: number | undefined;
  allowUids?: number[];
  scrub?: ScrubMode;
  /** Client fds (DMA maps, eventfds) held at once; default 1024, lowered to fit RLIMIT_NOFILE. */
  maxClientFds?: number;
  /**
   * How long a new client waits for the previous client's process to exit
   * before it is refused (default 10 s; 0: no waiting).
   */
  tenantExitTimeoutMs?: number;
  /** Framing limits and stall timeouts of client connections (tests make them small). */
  limits?: ConnectionLimits;
  apertureSize: number;
  apertureBase: number;
  aperturePath?: string | undefined;
  bar0: Bar0Spec;
  vendorId: number;
  deviceId: number;
  logLevel: string;
}

export interface Running {
  daemon: Daemon;
  stop(): void;
}

export const DEFAULT_TENANT_EXIT_TIMEOUT_MS = 10_000;

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
  let bar0: Bar0Source;
  try {
    bar0 = opts.bar0.kind === 'emulated' ? openEmulatedBar0() : openFileBar0(opts.bar0.path);
  } catch (err) {
    aperture.close();
    throw err;
  }
  const fdCap = clientFdLimit(opts.maxClientFds);
  if (fdCap.lowered) log.warn({ maxClientFds: fdCap.limit }, 'client fd limit lowered to fit RLIMIT_NOFILE');
  const device = new GpuDevice({
    identity: { ...DEFAULT_IDENTITY, vendorId: opts.vendorId, deviceId: opts.deviceId },
    bar0,
    aperture: aperture.memory,
    pageSize,
    events: eventfdSink,
    dmaOps: dmaFileOps,
    maxDmaMaps: Limits.MAX_DMA_MAPS,
    maxClientFds: fdCap.limit,
  });
  const scrubMode = opts.scrub ?? 'never';
  const daemon = new Daemon(device, log, {
    socketPath: opts.socket,
    socketMode: opts.socketMode,
    socketGroup: opts.socketGroup,
    allowUids: opts.allowUids ?? [],
    tenantExitTimeoutMs: opts.tenantExitTimeoutMs ?? DEFAULT_TENANT_EXIT_TIMEOUT_MS,
    onClientGone: () => {
      for (const [backing, restore] of [['aperture', () => aperture.restoreSize()], ['BAR0', () => bar0.restoreSize?.() ?? null]] as const) {
        const found = restore();
        if (found !== null) log.error({ backing, foundSize: found }, 'the client resized the backing file; its size is restored');
      }
    },
    ...(opts.limits ? { limits: opts.limits } : {}),
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
