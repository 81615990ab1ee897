import { openAperture, type Aperture } from '../backends/aperture.js';
import { reopenForClient } from '../backends/client-fd.js';
import { dmaFileOps, eventfdSink } from '../backends/client-memory.js';
import { scrubAperture } from '../backends/scrub.js';
import { GpuDevice } from '../device/gpu-device.js';
import type { ScrubMode } from '../device/memory-scrub.js';
import { deviceIdMismatch, LAYOUTS, planLayout } from '../device/layout.js';
import type { PciFunction } from '../device/pci-function.js';
import type { ReadyWaitMode } from '../device/readiness.js';
import { createLogger } from '../log.js';
import { native } from '../native/native.js';
import type { DeviceFlags } from '../orchestration/description.js';
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

/** The device flags (what the device is made of), and how to serve it. */
export interface ServeOptions extends DeviceFlags {
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
  /** A client must finish VERSION this long after it is admitted, or it is dropped (default 5 s; 0: no limit). */
  negotiateTimeoutMs?: number;
  /** Framing limits and stall timeouts of client connections (tests make them small). */
  limits?: ConnectionLimits;
  /** For tests: the CPU architecture start-up warnings are for. */
  arch?: string | undefined;
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
export const DEFAULT_NEGOTIATE_TIMEOUT_MS = 5_000;

/** What the daemon tells its service manager, and the logger to use. */
export interface DaemonHooks {
  log?: Logger;
  onStatus?: (status: string) => void;
  onReady?: () => void;
}

/** The device and what it is built on. */
interface BuiltDevice {
  aperture: Aperture;
  /** What stands behind BAR0. */
  fn: PciFunction;
  device: GpuDevice;
  /** Closes the function and the backing: the one way they are closed. */
  close(): void;
}

/** Builds the device from the options and starts serving it. */
export function startDaemon(opts: ServeOptions, hooks: DaemonHooks = {}): Running {
  const { log = createLogger(opts.logLevel), ...daemonHooks } = hooks;
  const built = buildDevice(opts, log);
  const daemon = createDaemon(opts, built, log, daemonHooks);
  const ready = listenWhenReady(daemon, built, log);
  logDeviceReady(opts, built, log);
  let stopped = false;
  return {
    daemon,
    aperture: built.aperture,
    labels: deviceLabels(built),
    ready,
    stop() {
      if (stopped) return;
      stopped = true;
      daemon.stop();
      // a scrub in progress stops at its next window; close the backing after it
      void daemon.whenScrubbed().then(() => {
        built.close();
        log.info('stopped');
      });
    },
  };
}

/** Opens the backing and what stands behind BAR0, and lays the device over them; on failure nothing stays open. */
function buildDevice(opts: ServeOptions, log: Logger): BuiltDevice {
  const pageSize = native.pageSize();
  const layoutName = opts.layout ?? 'bar2';
  // before the backing is opened (or created): a size the layout cannot split is refused up front
  // (a device-dax without a size is sized from sysfs, and checked when the device is built)
  if (opts.apertureSize !== undefined) planLayout(layoutName, opts.apertureSize);
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
  try {
    fn = openPciFunction(opts, opts.deviceId ?? LAYOUTS[layoutName].defaultDeviceId, pageSize, log);
    const device = new GpuDevice({
      function: fn,
      aperture: aperture.memory,
      layout: layoutName,
      pageSize,
      events: eventfdSink,
      dmaOps: dmaFileOps,
      maxDmaMaps: Limits.MAX_DMA_MAPS,
      maxClientFds: fdCap.limit,
      reopenForClient,
    });
    const opened = fn;
    return { aperture, fn, device, close: () => closeAll(opened, aperture) };
  } catch (err) {
    closeAll(fn, aperture);
    throw err;
  }
}

function closeAll(fn: PciFunction | null, aperture: Aperture): void {
  fn?.close();
  aperture.close();
}

/** The daemon serving the device, with the scrub and the checks on the backings a client leaves behind. */
function createDaemon(opts: ServeOptions, built: BuiltDevice, log: Logger, hooks: Omit<DaemonHooks, 'log'>): Daemon {
  const restoreSizes = () => restoreBackingSizes(built, log);
  return new Daemon(built.device, log, {
    socketPath: opts.socket,
    listenFd: opts.listenFd,
    socketMode: opts.socketMode,
    socketGroup: opts.socketGroup,
    allowUids: opts.allowUids ?? [],
    tenantExitTimeoutMs: opts.tenantExitTimeoutMs ?? DEFAULT_TENANT_EXIT_TIMEOUT_MS,
    negotiateTimeoutMs: opts.negotiateTimeoutMs ?? DEFAULT_NEGOTIATE_TIMEOUT_MS,
    onClientGone: restoreSizes,
    ...(opts.limits ? { limits: opts.limits } : {}),
    // a tenant process that lives on may have resized the file since it left: zeroing
    // through a mapping past the end of a file would be a SIGBUS
    scrub: {
      mode: opts.scrub ?? 'never',
      run: async (progress, stop) => {
        restoreSizes();
        return scrubAperture(built.aperture, progress, stop);
      },
    },
    ...hooks,
  });
}

/** Puts back the size of a backing file a client truncated or grew, and says so. */
function restoreBackingSizes(built: BuiltDevice, log: Logger): void {
  const backings = [
    ['aperture', () => built.aperture.restoreSize()],
    ['BAR0', () => built.device.bar0Source?.restoreSize?.() ?? null],
  ] as const;
  let failed: unknown = null;
  for (const [backing, restore] of backings) {
    // one backing that cannot be restored (huge pages the pool no longer has) leaves the other to be
    try {
      const found = restore();
      if (found !== null) log.error({ backing, foundSize: found }, 'the client resized the backing file; its size is restored');
    } catch (err) {
      failed ??= err;
    }
  }
  if (failed !== null) throw failed;
}

/**
 * Listens once what stands behind BAR0 is ready (a passed-through GPU is reset
 * by its host on open); the device is closed if listening fails or it never is.
 */
function listenWhenReady(daemon: Daemon, built: BuiltDevice, log: Logger): Promise<void> {
  const listen = () => {
    try {
      daemon.start();
    } catch (err) {
      built.close();
      throw err;
    }
  };
  const waiting = built.fn.ready();
  if (waiting === null) {
    listen();
    return Promise.resolve();
  }
  log.info({ function: built.fn.description }, 'waiting for the device to be ready');
  return waiting.then(listen, (err: Error) => {
    built.close();
    throw err;
  });
}

/** The start-up log line: identity, layout, the backing and every BAR. */
function logDeviceReady(opts: ServeOptions, built: BuiltDevice, log: Logger): void {
  const { aperture, fn, device } = built;
  const id = device.identity;
  const layoutName = device.memoryLayout.name;
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
}

/** What metrics say about the device. */
function deviceLabels({ aperture, device }: BuiltDevice): DeviceLabels {
  const id = device.identity;
  return {
    vendorId: hex(id.vendorId, 4),
    deviceId: hex(id.deviceId, 4),
    layout: device.memoryLayout.name,
    backing: aperture.path ? `${aperture.kind}:${aperture.path}` : aperture.kind,
    memoryBytes: aperture.memory.size,
    barBytes: device.aperture.size,
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
  // Installed before the socket exists: a SIGTERM that comes as soon as it does
  // (or during a start-up scrub) must stop the daemon cleanly, not kill it with
  // Node's default action and leave the socket file behind. The handlers stay for
  // good: a second SIGTERM (timeout(1) sends two) must not kill a shutdown in progress.
  let requestStop!: () => void;
  const stopRequested = new Promise<void>((resolve) => (requestStop = resolve));
  const onStopSignal = () => requestStop();
  process.on('SIGTERM', onStopSignal);
  process.on('SIGINT', onStopSignal);
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
    process.off('SIGTERM', onStopSignal);
    process.off('SIGINT', onStopSignal);
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
  await stopRequested;
  notifier.stopping();
  process.off('SIGUSR1', onUsr1);
  running.stop();
  await metrics?.close();
  return 0;
}
