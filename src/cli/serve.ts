import { openAperture, type Aperture } from '../backends/aperture.js';
import type { Bar0Spec } from '../backends/bar0-source.js';
import { dmaFileOps, eventfdSink } from '../backends/client-memory.js';
import { scrubAperture, type ScrubMode } from '../backends/scrub.js';
import { GpuDevice } from '../device/gpu-device.js';
import { deviceIdMismatch, LAYOUTS, planLayout, type LayoutName } from '../device/layout.js';
import type { PciFunction } from '../device/pci-function.js';
import type { ReadyWaitMode } from '../device/readiness.js';
import { createLogger } from '../log.js';
import { native } from '../native/native.js';
import { Daemon } from '../server/daemon.js';
import { clientFdLimit } from '../server/fd-limits.js';
import type { ConnectionLimits } from '../transport/connection.js';
import { Limits } from '../wire/constants.js';
import type { DeviceLabels } from '../service/metrics.js';
import { startMetricsServer, type ListenAddress } from '../service/metrics-http.js';
import { ServiceNotifier } from '../service/notify.js';
import { countersSummary } from '../service/stats.js';
import type { Registry } from 'prom-client';
import type { Logger } from 'pino';
import { openPciFunction } from './open-function.js';
import { formatSize, hex } from './parse.js';

export interface ServeOptions {
  /** Socket file to create; unused when listenFd is given. */
  socket?: string | undefined;
  /** A listening socket passed by socket activation. */
  listenFd?: number | undefined;
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
  /** Which BARs hold the memory; default `bar2`. */
  layout?: LayoutName | undefined;
  vendorId: number;
  /** Default: the layout's (0x2342 for bar2 and gh, 0x2941 for gb). */
  deviceId?: number | undefined;
  logLevel: string;
  /** Where to serve Prometheus metrics, if anywhere. */
  metricsListen?: ListenAddress | undefined;
  /** Readiness wait of a passed-through GPU (at start and after each reset). */
  readyWait?: ReadyWaitMode;
  readyTimeoutMs?: number;
}

export interface Running {
  daemon: Daemon;
  /** The backing; its `facts` say what it is (kind, NUMA node, page size, cacheable). */
  aperture: Aperture;
  /** What metrics say about the device. */
  labels: DeviceLabels;
  /** Resolves once the daemon listens (after a passed-through GPU is ready); rejects if it never will. */
  ready: Promise<void>;
  stop(): void;
}

export const DEFAULT_TENANT_EXIT_TIMEOUT_MS = 10_000;

/** What the daemon tells its service manager, and the logger to use. */
export interface DaemonHooks {
  log?: Logger;
  onStatus?: (status: string) => void;
  onReady?: () => void;
}

/** Builds the device from the options and starts serving it. */
export function startDaemon(opts: ServeOptions, hooks: DaemonHooks = {}): Running {
  const { log = createLogger(opts.logLevel), ...daemonHooks } = hooks;
  const pageSize = native.pageSize();
  const layoutName = opts.layout ?? 'bar2';
  // before the backing is opened (or created): a size the layout cannot split is refused up front
  // (a device-dax without a size is sized from sysfs, and checked when the device is built)
  if (opts.apertureSize !== undefined) planLayout(layoutName, opts.apertureSize);
  const deviceId = opts.deviceId ?? LAYOUTS[layoutName].defaultDeviceId;
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
  const fdCap = clientFdLimit(opts.maxClientFds);
  if (fdCap.lowered) log.warn({ maxClientFds: fdCap.limit }, 'client fd limit lowered to fit RLIMIT_NOFILE');
  let fn: PciFunction | null = null;
  let device: GpuDevice;
  try {
    fn = openPciFunction(opts, deviceId, pageSize, log);
    device = new GpuDevice({
      function: fn,
      aperture: aperture.memory,
      layout: layoutName,
      pageSize,
      events: eventfdSink,
      dmaOps: dmaFileOps,
      maxDmaMaps: Limits.MAX_DMA_MAPS,
      maxClientFds: fdCap.limit,
    });
  } catch (err) {
    fn?.close();
    aperture.close();
    throw err;
  }
  const id = device.identity;
  const scrubMode = opts.scrub ?? 'never';
  const restoreSizes = () => {
    let failed: unknown = null;
    for (const [backing, restore] of [['aperture', () => aperture.restoreSize()], ['BAR0', () => device.bar0Source?.restoreSize?.() ?? null]] as const) {
      // one backing that cannot be restored (huge pages the pool no longer has) leaves the other to be
      try {
        const found = restore();
        if (found !== null) log.error({ backing, foundSize: found }, 'the client resized the backing file; its size is restored');
      } catch (err) {
        failed ??= err;
      }
    }
    if (failed !== null) throw failed;
  };
  const daemon = new Daemon(device, log, {
    socketPath: opts.socket,
    listenFd: opts.listenFd,
    socketMode: opts.socketMode,
    socketGroup: opts.socketGroup,
    allowUids: opts.allowUids ?? [],
    tenantExitTimeoutMs: opts.tenantExitTimeoutMs ?? DEFAULT_TENANT_EXIT_TIMEOUT_MS,
    onClientGone: restoreSizes,
    ...(opts.limits ? { limits: opts.limits } : {}),
    // a tenant process that lives on may have resized the file since it left: zeroing
    // through a mapping past the end of a file would be a SIGBUS
    scrub: {
      mode: scrubMode,
      run: async (progress, stop) => {
        restoreSizes();
        return scrubAperture(aperture, progress, stop);
      },
    },
    ...daemonHooks,
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
  // A passed-through GPU is listened for only once it is ready (its host reset it on open).
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
  if (deviceIdMismatch(layoutName, id.deviceId)) {
    log.warn({ device: hex(id.deviceId, 4), layout: layoutName }, 'the device ID belongs to the other GPU family than the layout; a stock guest driver may not expect this');
  }
  const memory = { backing: aperture.facts, base: hex(opts.apertureBase), size: formatSize(aperture.memory.size) };
  const bars: Record<string, unknown> = { bar0: { source: fn.description, size: formatSize(device.bar0.size) } };
  for (const part of device.memoryLayout.bars) {
    bars[`bar${part.bar}`] = {
      holds: part.role,
      offset: hex(part.offset),
      memory: formatSize(part.length),
      size: formatSize(part.barSize),
      mapped: formatSize(device.region(part.bar)?.mmap?.areas.reduce((n, a) => n + a.size, 0) ?? 0),
    };
  }
  log.info({ vendor: hex(id.vendorId, 4), device: hex(id.deviceId, 4), layout: layoutName, memory, ...bars }, 'device ready');

  let stopped = false;
  return {
    daemon,
    aperture,
    labels: {
      vendorId: hex(id.vendorId, 4),
      deviceId: hex(id.deviceId, 4),
      layout: layoutName,
      backing: aperture.path ? `${aperture.kind}:${aperture.path}` : aperture.kind,
      memoryBytes: aperture.memory.size,
      barBytes: device.aperture.size,
    },
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

/**
 * Runs until SIGTERM or SIGINT, then closes the client and removes the socket
 * (unless the service manager passed it). Tells systemd what it is doing when
 * run as a Type=notify service; SIGUSR1 logs a summary of the counters.
 */
export async function serve(opts: ServeOptions): Promise<number> {
  const log = createLogger(opts.logLevel);
  const notifier = ServiceNotifier.fromEnv(log);
  // Bound first, so a busy port fails the start before systemd hears READY=1.
  let registry: Registry | null = null;
  const metrics = opts.metricsListen ? await startMetricsServer(() => registry, opts.metricsListen) : null;
  let running: Running;
  try {
    running = startDaemon(opts, {
      log,
      onStatus: (text) => notifier.status(text),
      onReady: () => notifier.notifyReady(),
    });
    await running.ready;
  } catch (err) {
    await metrics?.close();
    throw err;
  }
  const { daemon } = running;
  if (metrics) {
    // prom-client is loaded only when metrics are asked for: it costs start-up time
    const { daemonRegistry } = await import('../service/metrics.js');
    registry = daemonRegistry(daemon, running.labels);
    log.info({ address: metrics.address }, 'serving metrics at /metrics');
  }
  notifier.startWatchdog();
  const onUsr1 = () => log.info(countersSummary(daemon), 'counters');
  process.on('SIGUSR1', onUsr1);
  // The handlers stay for good: a second SIGTERM (timeout(1) sends two) must not
  // kill a shutdown in progress with Node's default action.
  await new Promise<void>((resolve) => {
    process.on('SIGTERM', () => resolve());
    process.on('SIGINT', () => resolve());
  });
  notifier.stopping();
  process.off('SIGUSR1', onUsr1);
  running.stop();
  await metrics?.close();
  return 0;
}
