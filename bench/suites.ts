import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DaemonProcess } from './daemon-process.js';
import { figure, ratioTarget, type Figure } from './figures.js';
import { summarize } from './stats.js';
import { runHarness } from './harness.js';
import { daemonBin, distModule, repoRoot } from './paths.js';
import { reserveHugePages } from '../test/helpers/hugepages.js';

const GiB = 2 ** 30;
const MiB = 2 ** 20;

export interface BenchConfig {
  quick: boolean;
  runs: number;
  rttIters: number;
  postedMsgs: number;
  multiMsgs: number;
  dmaPairs: number;
  startupRuns: number;
  startupReads: number;
  mappedBytes: number;
  scrubBytes: number;
  scrubWindow: number;
}

export function config(quick: boolean, runs?: number): BenchConfig {
  return quick
    ? { quick, runs: runs ?? 2, rttIters: 200, postedMsgs: 1024, multiMsgs: 512, dmaPairs: 100, startupRuns: runs ?? 1, startupReads: 100, mappedBytes: 8 * MiB, scrubBytes: 8 * MiB, scrubWindow: 4 * MiB }
    : { quick, runs: runs ?? 9, rttIters: 3000, postedMsgs: 100_000, multiMsgs: 1024, dmaPairs: 3000, startupRuns: runs ?? 9, startupReads: 1000, mappedBytes: 512 * MiB, scrubBytes: 1 * GiB, scrubWindow: 256 * MiB };
}

export interface Context {
  cfg: BenchConfig;
  harness: string;
  /** Scratch directory for sockets and logs. */
  dir: string;
  /** Directory on tmpfs for memory files. */
  shmDir: string;
  log(line: string): void;
}

/** The daemon under test for the socket benches: the default memfd aperture of 1 GiB + 2 KiB. */
const APERTURE = GiB + 2048;
/** BAR2 is 2 GiB: memory to 1 GiB + 2 KiB (the last 2 KiB trapped), padding after. */
const TRAPPED_TARGETS = [
  { id: 'rtt-config', title: 'Trapped 4-byte read: config space', region: 7, offset: 0 },
  { id: 'rtt-padding', title: 'Trapped 4-byte read: BAR2 padding', region: 2, offset: 1.5 * GiB },
  { id: 'rtt-bar2-tail', title: 'Trapped 4-byte read: BAR2 memory tail', region: 2, offset: GiB + 16 },
  { id: 'rtt-bar0', title: 'Trapped 4-byte read: BAR0 register', region: 0, offset: 16 * MiB - 64 * 1024 },
];
const SOCKET_FLOOR =
  'the same C client against a C peer that frames and answers each message, over a socketpair between two processes; both wait for data in poll() before reading, as QEMU\'s event-driven client does; client, peer and daemon pinned to one CPU';

async function withDaemon<T>(ctx: Context, name: string, args: string[], body: (d: DaemonProcess) => T): Promise<T> {
  const d = DaemonProcess.start(ctx.dir, name, args);
  try {
    return body(d);
  } catch (err) {
    throw new Error(`${(err as Error).message}\ndaemon log:\n${d.logTail()}`);
  } finally {
    await d.stop();
  }
}

interface RttTarget {
  region: number;
  offset: number;
  count: number;
  daemon_ns: number[];
  floor_ns: number[];
  daemon_mean_ns: number[];
  floor_mean_ns: number[];
  daemon_p99_ns: number[];
  floor_p99_ns: number[];
  daemon_cpu_ns: number[];
  floor_cpu_ns: number[];
  client_cpu_with_daemon_ns: number[];
  client_cpu_with_floor_ns: number[];
}
interface RttOut {
  targets: RttTarget[];
}
interface StreamOut {
  daemon_per_s: number[];
  floor_per_s: number[];
}

/** Joins the single-run outputs of several harness invocations, series by series. */
function concatRuns<T extends object>(outs: T[]): T {
  const first = outs[0]!;
  const joined = { ...first } as Record<string, unknown>;
  for (const [k, v] of Object.entries(first)) {
    if (Array.isArray(v) && v.every((x) => typeof x === 'number')) {
      joined[k] = outs.flatMap((o) => (o as Record<string, number[]>)[k]!);
    }
  }
  return joined as T;
}

const us = (ns: number[]) => ns.map((x) => x / 1000);

/** Harness arguments for a server: one run per harness process, everything on the last CPU (see socketSuite). */
const pinnedTo = (socket: string, pid: number) => ['--socket', socket, '--runs', '1', '--pid', String(pid), '--cpu', String(os.cpus().length - 1)];

/** Runs of one 4-byte read (the config-space one unless told) alone against the server behind `pinned`, joined. */
function configReadRuns(ctx: Context, pinned: string[], extra: string[] = [], target = '7:0:4'): RttTarget {
  return concatRuns(
    Array.from({ length: ctx.cfg.runs }, (_, r) =>
      runHarness<RttOut>(ctx.harness, ['rtt', ...pinned, ...extra, '--iters', String(ctx.cfg.rttIters), '--floor-first', String(r % 2), '--target', target], 'rtt').targets[0]!,
    ),
  );
}

/**
 * The memory-tail read of a file aperture (tmpfs), which a client could
 * truncate: copied under the SIGBUS guard, one native call, where the default
 * memfd's tail is a plain copy. No target: it shows what the guard costs.
 */
async function guardedTailFigure(ctx: Context): Promise<Figure> {
  const file = path.join(ctx.shmDir, 'guarded-aperture');
  try {
    return await withDaemon(ctx, 'guarded', ['--aperture-size', String(APERTURE), '--aperture-path', file], (d) => {
      ctx.log('trapped round trips, file aperture (guarded copy)');
      const out = configReadRuns(ctx, pinnedTo(d.socket, d.pid), [], `2:${GiB + 16}:4`);
      const f = figure(
        {
          id: 'rtt-bar2-tail-guarded',
          title: 'Trapped 4-byte read: BAR2 memory tail of a file aperture (SIGBUS-guarded copy)',
          unit: 'µs',
          better: 'lower',
          floorLabel: `median round trip: ${SOCKET_FLOOR}`,
        },
        us(out.daemon_ns),
        us(out.floor_ns),
      );
      f.detail = {
        daemon_cpu_us_per_request: summarize(us(out.daemon_cpu_ns)),
        floor_cpu_us_per_request: summarize(us(out.floor_cpu_ns)),
      };
      return f;
    });
  } finally {
    fs.rmSync(file, { force: true });
  }
}

/**
 * The config-space read against a minimal Node.js server on the daemon's own
 * binding (bench/node-echo-server.ts): the share of the round trip that is
 * Node.js, not the daemon. No target.
 */
async function nodeServerFigure(ctx: Context): Promise<Figure> {
  const socket = path.join(ctx.dir, 'node-echo.sock');
  const script = path.join(repoRoot, '.cache', 'bench', 'js', 'bench', 'node-echo-server.js');
  const child = spawn(process.execPath, [script, socket], { stdio: ['ignore', 'ignore', 'inherit'] });
  try {
    const started = Date.now();
    while (!fs.existsSync(socket)) {
      if (child.exitCode !== null || Date.now() - started > 10_000) throw new Error('the minimal Node.js server did not start');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    ctx.log('trapped round trips, minimal Node.js server');
    const out = configReadRuns(ctx, pinnedTo(socket, child.pid!));
    const f = figure(
      {
        id: 'rtt-node-server',
        title: 'Trapped 4-byte read: config space, from a minimal Node.js server on the same binding (not the daemon)',
        unit: 'µs',
        better: 'lower',
        floorLabel: `median round trip: ${SOCKET_FLOOR}`,
      },
      us(out.daemon_ns),
      us(out.floor_ns),
    );
    f.detail = {
      server_cpu_us_per_request: summarize(us(out.daemon_cpu_ns)),
      floor_cpu_us_per_request: summarize(us(out.floor_cpu_ns)),
    };
    return f;
  } finally {
    child.kill('SIGTERM');
  }
}

export async function socketSuite(ctx: Context): Promise<Figure[]> {
  const figures = await daemonSocketFigures(ctx);
  // after the trapped reads and the blocking-client read, before the streams
  figures.splice(5, 0, await nodeServerFigure(ctx), await guardedTailFigure(ctx));
  return figures;
}

async function daemonSocketFigures(ctx: Context): Promise<Figure[]> {
  const { cfg } = ctx;
  return withDaemon(ctx, 'socket', ['--aperture-size', String(APERTURE)], (d) => {
    // The client, the floor peer and the daemon share one CPU: on a VM a wake-up
    // on another, idle vCPU costs tens of microseconds, and whether the scheduler
    // keeps two processes together is luck that would decide the figure, not the
    // daemon (bench/NOTES.md). One harness process per run, each with its own
    // connection and floor peer.
    const pinned = pinnedTo(d.socket, d.pid);
    const perRun = <T extends object>(what: string, args: (run: number) => string[]): T =>
      concatRuns(Array.from({ length: cfg.runs }, (_, r) => runHarness<T>(ctx.harness, [...args(r), ...pinned], what)));

    ctx.log('trapped round trips');
    const targets = TRAPPED_TARGETS.flatMap((t) => ['--target', `${t.region}:${t.offset}:4`]);
    const perTarget = Array.from({ length: cfg.runs }, (_, r) =>
      runHarness<RttOut>(
        ctx.harness,
        ['rtt', ...pinned, '--iters', String(cfg.rttIters), '--floor-first', String(r % 2), ...targets],
        'rtt',
      ),
    );
    const figures = TRAPPED_TARGETS.map((t, i) => {
      const out = concatRuns(perTarget.map((o) => o.targets[i]!));
      const f = figure(
        { id: t.id, title: t.title, unit: 'µs', better: 'lower', floorLabel: `median 4-byte REGION_READ round trip (32-byte request, 36-byte reply): ${SOCKET_FLOOR}` },
        us(out.daemon_ns),
        us(out.floor_ns),
      );
      f.target = ratioTarget(f, 1.3);
      f.detail = {
        daemon_mean_us: summarize(us(out.daemon_mean_ns)),
        floor_mean_us: summarize(us(out.floor_mean_ns)),
        daemon_p99_us: summarize(us(out.daemon_p99_ns)),
        floor_p99_us: summarize(us(out.floor_p99_ns)),
        daemon_cpu_us_per_request: summarize(us(out.daemon_cpu_ns)),
        floor_cpu_us_per_request: summarize(us(out.floor_cpu_ns)),
        client_cpu_us_with_daemon: summarize(us(out.client_cpu_with_daemon_ns)),
        client_cpu_us_with_floor: summarize(us(out.client_cpu_with_floor_ns)),
      };
      return f;
    });

    // The same read with a client that blocks in recvmsg instead of waiting for
    // readiness: no target, it shows what the spurious wake-up costs (bench/NOTES.md).
    ctx.log('trapped round trips, blocking client');
    const blocking = configReadRuns(ctx, pinned, ['--wait', 'block']);
    const blockingFigure = figure(
      {
        id: 'rtt-config-blocking-client',
        title: 'Trapped 4-byte read: config space, client blocking in recvmsg',
        unit: 'µs',
        better: 'lower',
        floorLabel: `as above, with client and C peer blocking in recvmsg instead of waiting in poll`,
      },
      us(blocking.daemon_ns),
      us(blocking.floor_ns),
    );
    blockingFigure.detail = {
      daemon_cpu_us_per_request: summarize(us(blocking.daemon_cpu_ns)),
      floor_cpu_us_per_request: summarize(us(blocking.floor_cpu_ns)),
    };
    figures.push(blockingFigure);

    ctx.log('posted writes');
    const bar0Reg = String(16 * MiB - 64 * 1024);
    const posted = perRun<StreamOut>('posted', () => ['posted', '--msgs', String(cfg.postedMsgs), '--region', '0', '--offset', bar0Reg]);
    figures.push(
      figure(
        { id: 'posted-write', title: 'Posted 4-byte REGION_WRITE (NO_REPLY) to BAR0', unit: 'msg/s', better: 'higher', floorLabel: `a stream of the same messages: ${SOCKET_FLOOR}` },
        posted.daemon_per_s,
        posted.floor_per_s,
      ),
    );
    const multi = perRun<StreamOut>('multi', () => ['multi', '--msgs', String(cfg.multiMsgs), '--entries', '200', '--region', '0', '--offset', bar0Reg]);
    figures.push(
      figure(
        { id: 'write-multi', title: 'REGION_WRITE_MULTI, 200 writes each, to BAR0', unit: 'writes/s', better: 'higher', floorLabel: `a stream of the same messages: ${SOCKET_FLOOR}` },
        multi.daemon_per_s,
        multi.floor_per_s,
      ),
    );

    ctx.log('DMA map churn');
    const dma = perRun<StreamOut>('dma', () => ['dma', '--pairs', String(cfg.dmaPairs)]);
    const fd = figure(
      { id: 'dma-churn', title: 'DMA_MAP + DMA_UNMAP pairs with an fd (2 MiB memfd)', unit: 'pairs/s', better: 'higher', floorLabel: `the same pairs, the fd passed and closed: ${SOCKET_FLOOR}` },
      dma.daemon_per_s,
      dma.floor_per_s,
    );
    fd.target = { text: '≥ 20,000 pairs/s', met: fd.daemon.median >= 20_000 };
    figures.push(fd);
    return figures;
  });
}

interface StartupOut {
  ready_ms: number;
  rss_ready_kb: number;
  rss_kb: number;
  hwm_kb: number;
}

export function startupSuite(ctx: Context): Figure[] {
  const { cfg } = ctx;
  const floorListener = path.join(repoRoot, '.cache', 'bench', 'js', 'bench', 'floor-listener.js');
  const sizes = [
    { label: '1 GiB', bytes: GiB },
    { label: '64 GiB', bytes: 64 * GiB },
    { label: '512 GiB', bytes: 512 * GiB },
  ];
  const socket = path.join(ctx.dir, 'startup.sock');
  const run = (command: string[]): StartupOut =>
    runHarness<StartupOut>(ctx.harness, ['startup', '--socket', socket, '--reads', String(cfg.startupReads), '--', ...command], 'startup', 60_000);
  const floor: StartupOut[] = [];
  const daemon: StartupOut[][] = sizes.map(() => []);
  ctx.log('start-up and memory');
  for (let r = 0; r < cfg.startupRuns; r++) {
    // the floor and the three sizes take turns at going first
    const order = [-1, 0, 1, 2];
    for (let k = 0; k < order.length; k++) {
      const i = order[(k + r) % order.length]!;
      if (i < 0) floor.push(run([process.execPath, floorListener, socket]));
      else daemon[i]!.push(run([process.execPath, daemonBin, 'serve', '--socket', socket, '--aperture-size', String(sizes[i]!.bytes)]));
    }
  }
  const figures: Figure[] = [];
  const startupFloor = 'a bare Node.js vfio-user listener (net module, answers VERSION): process start to the first VERSION reply';
  const rssFloor = 'the same bare Node.js listener after the same reads';
  sizes.forEach((s, i) => {
    figures.push(
      figure(
        { id: `startup-${s.bytes / GiB}g`, title: `Start-up to first reply, ${s.label} aperture`, unit: 'ms', better: 'lower', floorLabel: startupFloor },
        daemon[i]!.map((o) => o.ready_ms),
        floor.map((o) => o.ready_ms),
      ),
    );
  });
  const base = figures[0]!.daemon.median;
  for (const f of figures.slice(1)) {
    const x = f.daemon.median / base;
    f.target = { text: `≤ 1.2× the 1 GiB start-up (${x.toFixed(2)}×)`, met: x <= 1.2 };
  }
  sizes.forEach((s, i) => {
    const f = figure(
      { id: `rss-${s.bytes / GiB}g`, title: `Resident memory serving, ${s.label} aperture`, unit: 'MB', better: 'lower', floorLabel: rssFloor },
      daemon[i]!.map((o) => (o.rss_kb * 1024) / 1e6),
      floor.map((o) => (o.rss_kb * 1024) / 1e6),
    );
    f.target = { text: '< 100 MB', met: f.daemon.median < 100 };
    figures.push(f);
  });
  return figures;
}

interface MappedOut {
  bytes: number;
  read_daemon_gbps: number[];
  read_floor_gbps: number[];
  write_daemon_gbps: number[];
  write_floor_gbps: number[];
}

export async function mappedSuite(ctx: Context, aperturePath: string): Promise<Figure[]> {
  const { cfg } = ctx;
  return withDaemon(ctx, 'mapped', ['--aperture-path', aperturePath, '--aperture-size', String(cfg.mappedBytes + 2048)], (d) => {
    ctx.log('mapped BAR2 bandwidth');
    const m = runHarness<MappedOut>(
      ctx.harness,
      ['mapped', '--socket', d.socket, '--path', aperturePath, '--bytes', String(cfg.mappedBytes), '--runs', String(cfg.runs)],
      'mapped',
    );
    const floorLabel = `memcpy of ${m.bytes / MiB} MiB on the same memory mapped directly from its file`;
    const read = figure(
      { id: 'mapped-read', title: 'BAR2 read through the mapping the daemon hands out', unit: 'GB/s', better: 'higher', floorLabel },
      m.read_daemon_gbps,
      m.read_floor_gbps,
    );
    const write = figure(
      { id: 'mapped-write', title: 'BAR2 write through the mapping the daemon hands out', unit: 'GB/s', better: 'higher', floorLabel },
      m.write_daemon_gbps,
      m.write_floor_gbps,
    );
    read.target = ratioTarget(read, 0.95);
    write.target = ratioTarget(write, 0.95);
    return [read, write];
  });
}

interface MemsetOut {
  bytes: number;
  window: number;
  in_place_gbps: number[];
  windowed_gbps: number[];
}

/** The parts of the daemon the scrub bench runs in-process (dist/, loaded at run time). */
interface ApertureModule {
  openAperture(opts: { size: number; base: number; pageSize: number; hugePageSize?: number }): {
    memory: { fd: number };
    close(): void;
  };
}
interface ScrubModule {
  scrubAperture(aperture: unknown): Promise<'done' | 'stopped'>;
}
interface WindowedModule {
  WindowedMemory: new (fd: number, fdOffset: number, size: number, granularity: number) => {
    readonly windowSize: number;
    zero(offset: number, length: number): void;
    close(): void;
  };
}
interface NativeMemory {
  native: {
    pageSize(): number;
  };
}

const HUGE_PAGE = 2 * MiB;

interface ScrubRuns {
  /** The first scrub of an aperture after the daemon opened it. */
  first: number[];
  /** C memset of the same memory in place, just before the first scrub. */
  firstFloor: number[];
  /** A later scrub (the next tenant's), the daemon's mappings already in place: per run, the median of a few. */
  steady: number[];
  /** C memset in place before each of those, same median. */
  steadyFloor: number[];
}

/** Later tenants per run: memory bandwidth on a shared VM swings by 2x from one second to the next. */
const STEADY_TENANTS = 3;

const medianOf = (xs: number[]) => summarize(xs).median;

/**
 * Per run: a fresh aperture; C writes the memory as a tenant leaves it and
 * times memset on its own mapping (the floor); the daemon scrubs it; then the
 * same for a few more tenants, whose scrubs find the daemon's mappings kept.
 */
async function scrubRuns(ctx: Context, open: () => { fd: number; scrub: () => Promise<void>; close: () => void }): Promise<ScrubRuns> {
  const { cfg } = ctx;
  const size = cfg.scrubBytes;
  const out: ScrubRuns = { first: [], firstFloor: [], steady: [], steadyFloor: [] };
  const timed = async (scrub: () => Promise<void>) => {
    const t0 = process.hrtime.bigint();
    await scrub();
    return size / Number(process.hrtime.bigint() - t0);
  };
  for (let r = 0; r < cfg.runs; r++) {
    const ap = open();
    try {
      const floor = () =>
        runHarness<MemsetOut>(ctx.harness, ['memset', '--path', `/proc/${process.pid}/fd/${ap.fd}`, '--bytes', String(size), '--runs', '1', '--entries', String(cfg.scrubWindow)], 'memset').in_place_gbps[0]!;
      out.firstFloor.push(floor());
      out.first.push(await timed(ap.scrub));
      const scrubs: number[] = [];
      const floors: number[] = [];
      for (let t = 0; t < STEADY_TENANTS; t++) {
        floors.push(floor());
        scrubs.push(await timed(ap.scrub));
      }
      out.steady.push(medianOf(scrubs));
      out.steadyFloor.push(medianOf(floors));
    } finally {
      ap.close();
    }
  }
  return out;
}

export async function scrubSuite(ctx: Context, hugePages = true): Promise<Figure[]> {
  const { cfg } = ctx;
  const { native } = (await import(distModule('native/native.js'))) as NativeMemory;
  const { openAperture } = (await import(distModule('backends/aperture.js'))) as ApertureModule;
  const { scrubAperture } = (await import(distModule('backends/scrub.js'))) as ScrubModule;
  const { WindowedMemory } = (await import(distModule('backends/windowed-memory.js'))) as WindowedModule;
  const size = cfg.scrubBytes;
  const page = native.pageSize();
  const mib = `${size / MiB} MiB`;
  const figures: Figure[] = [];
  const pair = (runs: ScrubRuns, id: string, title: string, what: string, target: boolean) => {
    const steady = figure(
      { id, title: `${title}, next tenant`, unit: 'GB/s', better: 'higher', floorLabel: `C memset of the same ${mib} of ${what}, already mapped and faulted in` },
      runs.steady,
      runs.steadyFloor,
    );
    if (target) steady.target = ratioTarget(steady, 0.9);
    const first = figure(
      { id: `${id}-first`, title: `${title}, first scrub after start`, unit: 'GB/s', better: 'higher', floorLabel: `C memset of the same ${mib} of ${what}, already mapped and faulted in` },
      runs.first,
      runs.firstFloor,
    );
    figures.push(steady, first);
  };

  // Huge pages: what device memory is mapped in (device-dax), and --aperture-hugepages.
  const reservation = hugePages ? await reserveHugePages(HUGE_PAGE, Math.ceil(size / HUGE_PAGE) + 1).catch((err: Error) => err.message) : '--no-huge-pages';
  if (typeof reservation === 'string') {
    ctx.log(`scrub on huge pages skipped: ${reservation}`);
  } else {
    ctx.log('scrub (2 MiB huge pages)');
    try {
      const huge = await scrubRuns(ctx, () => {
        const ap = openAperture({ size, base: 0, pageSize: page, hugePageSize: HUGE_PAGE });
        return { fd: ap.memory.fd, scrub: async () => void (await scrubAperture(ap)), close: () => ap.close() };
      });
      pair(huge, 'scrub-huge', 'Scrub, 2 MiB huge pages (zeroed in place)', 'huge pages', true);
    } finally {
      await reservation.release();
    }
  }

  // 4 KiB pages zeroed in place, as for a device-dax with 4 KiB alignment: the
  // daemon's windows over a memfd, driven directly (for a memfd it punches holes).
  ctx.log('scrub (4 KiB pages, zeroed in place)');
  const small = await scrubRuns(ctx, () => {
    const ap = openAperture({ size, base: 0, pageSize: page });
    const mem = new WindowedMemory(ap.memory.fd, 0, size, page);
    const step = mem.windowSize; // scrubAperture's step through kept windows
    return {
      fd: ap.memory.fd,
      // the steps and yields of scrubAperture, through zero() where it would punch
      scrub: async () => {
        for (let at = 0; at < size; at += step) {
          mem.zero(at, Math.min(step, size - at));
          await new Promise<void>((resolve) => setImmediate(resolve));
        }
      },
      close: () => {
        mem.close();
        ap.close();
      },
    };
  });
  pair(small, 'scrub-4k', 'Scrub, 4 KiB pages (zeroed in place)', '4 KiB shmem pages', true);

  // What the daemon does for a memfd or tmpfs aperture: give the pages back.
  ctx.log('scrub (memfd aperture, hole punch)');
  const punch = await scrubRuns(ctx, () => {
    const ap = openAperture({ size, base: 0, pageSize: page });
    return { fd: ap.memory.fd, scrub: async () => void (await scrubAperture(ap)), close: () => ap.close() };
  });
  figures.push(
    figure(
      { id: 'scrub-punch', title: 'Scrub of a memfd aperture (hole punch: frees the memory)', unit: 'GB/s', better: 'higher', floorLabel: `C memset of the same ${mib} of 4 KiB shmem pages, already mapped and faulted in` },
      [...punch.first, ...punch.steady],
      [...punch.firstFloor, ...punch.steadyFloor],
    ),
  );
  return figures;
}
