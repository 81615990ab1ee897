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
  'the same C client against a C peer that frames and answers each message, over a socketpair between two processes; client, peer and daemon pinned to one CPU';

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

export async function socketSuite(ctx: Context): Promise<Figure[]> {
  const { cfg } = ctx;
  return withDaemon(ctx, 'socket', ['--aperture-size', String(APERTURE)], (d) => {
    // The client, the floor peer and the daemon share one CPU: on a VM a wake-up
    // on another, idle vCPU costs tens of microseconds, and whether the scheduler
    // keeps two processes together is luck that would decide the figure, not the
    // daemon (bench/NOTES.md). One harness process per run, each with its own
    // connection and floor peer.
    const pinned = ['--socket', d.socket, '--runs', '1', '--pid', String(d.pid), '--cpu', String(os.cpus().length - 1)];
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
interface ScrubPrimitive {
  zeroThroughMapping(fd: number, offset: number, length: number, granularity: number, window?: number): void;
}
interface NativeMemory {
  native: {
    fallocatePunchHole(fd: number, offset: number, length: number): void;
    pageSize(): number;
    memfdCreate(name: string, flags: number): number;
    closeFd(fd: number): void;
    readonly MFD_HUGETLB: number;
    readonly MFD_HUGE_2MB: number;
  };
}

const HUGE_PAGE = 2 * MiB;

interface ScrubRuns {
  fill: number[];
  inPlace: number[];
  cWindowed: number[];
  punch: number[];
}

/**
 * Alternates, run by run: C (which populates the memory as a tenant leaves it,
 * then times memset on its mapping and through windows), the primitive, and
 * (for shmem) a hole punch, which frees the pages the next run populates again.
 */
async function scrubRuns(ctx: Context, memoryPath: string, fd: number, granularity: number, punch: (() => void) | null): Promise<ScrubRuns> {
  const { cfg } = ctx;
  const primitive = (await import(distModule('backends/scrub-primitive.js'))) as ScrubPrimitive;
  const size = cfg.scrubBytes;
  const out: ScrubRuns = { fill: [], inPlace: [], cWindowed: [], punch: [] };
  for (let r = 0; r < cfg.runs; r++) {
    const c = runHarness<MemsetOut>(ctx.harness, ['memset', '--path', memoryPath, '--bytes', String(size), '--runs', '1', '--entries', String(cfg.scrubWindow)], 'memset');
    out.inPlace.push(c.in_place_gbps[0]!);
    out.cWindowed.push(c.windowed_gbps[0]!);
    let t0 = process.hrtime.bigint();
    primitive.zeroThroughMapping(fd, 0, size, granularity, cfg.scrubWindow);
    out.fill.push(size / Number(process.hrtime.bigint() - t0));
    if (punch) {
      t0 = process.hrtime.bigint();
      punch();
      out.punch.push(size / Number(process.hrtime.bigint() - t0));
    }
  }
  return out;
}

export async function scrubSuite(ctx: Context, memoryPath: string): Promise<Figure[]> {
  const { cfg } = ctx;
  const { native } = (await import(distModule('native/native.js'))) as NativeMemory;
  const size = cfg.scrubBytes;
  const mib = `${size / MiB} MiB`;
  const window = `${cfg.scrubWindow / MiB} MiB windows`;
  if (fs.statSync(memoryPath).size < size) fs.truncateSync(memoryPath, size);
  ctx.log('scrub (4 KiB shmem pages)');
  const fd = fs.openSync(memoryPath, 'r+');
  let small: ScrubRuns;
  try {
    small = await scrubRuns(ctx, memoryPath, fd, native.pageSize(), () => {
      for (let at = 0; at < size; at += 256 * MiB) native.fallocatePunchHole(fd, at, Math.min(256 * MiB, size - at));
    });
  } finally {
    fs.closeSync(fd);
  }
  const figures: Figure[] = [];
  const fill = figure(
    { id: 'scrub-fill', title: 'Scrub primitive, 4 KiB shmem pages', unit: 'GB/s', better: 'higher', floorLabel: `C memset of the same ${mib}, already mapped and faulted in` },
    small.fill,
    small.inPlace,
  );
  fill.target = ratioTarget(fill, 0.9);
  figures.push(fill);

  // The same on 2 MiB huge pages, the kind of memory the primitive is for (device
  // memory is mapped in huge pages or whole); the pool is grown for the run.
  const reservation = await reserveHugePages(HUGE_PAGE, Math.ceil(size / HUGE_PAGE) + 1).catch((err: Error) => err.message);
  let huge: ScrubRuns | null = null;
  if (typeof reservation === 'string') {
    ctx.log(`scrub on huge pages skipped: ${reservation}`);
  } else {
    ctx.log('scrub (2 MiB huge pages)');
    try {
      const hfd = native.memfdCreate('nvgrace-bench-huge', native.MFD_HUGETLB | native.MFD_HUGE_2MB);
      try {
        fs.ftruncateSync(hfd, size);
        huge = await scrubRuns(ctx, `/proc/${process.pid}/fd/${hfd}`, hfd, HUGE_PAGE, null);
      } finally {
        native.closeFd(hfd);
      }
    } finally {
      await reservation.release();
    }
  }
  if (huge) {
    const f = figure(
      { id: 'scrub-fill-huge', title: 'Scrub primitive, 2 MiB huge pages', unit: 'GB/s', better: 'higher', floorLabel: `C memset of the same ${mib} of huge pages, already mapped and faulted in` },
      huge.fill,
      huge.inPlace,
    );
    f.target = ratioTarget(f, 0.9);
    figures.push(f);
  }
  figures.push(
    figure(
      { id: 'scrub-fill-vs-c', title: 'Scrub primitive vs C doing the same, 4 KiB pages', unit: 'GB/s', better: 'higher', floorLabel: `C mmap (MAP_POPULATE) + memset + munmap of the same memory, ${window}` },
      small.fill,
      small.cWindowed,
    ),
  );
  if (huge) {
    figures.push(
      figure(
        { id: 'scrub-fill-huge-vs-c', title: 'Scrub primitive vs C doing the same, 2 MiB pages', unit: 'GB/s', better: 'higher', floorLabel: `C mmap (MAP_POPULATE) + memset + munmap of the same memory, ${window}` },
        huge.fill,
        huge.cWindowed,
      ),
    );
  }
  figures.push(
    figure(
      { id: 'scrub-punch', title: 'Scrub by hole punch (memfd/tmpfs backings)', unit: 'GB/s', better: 'higher', floorLabel: `C memset of the same ${mib}, already mapped and faulted in` },
      small.punch,
      small.inPlace,
    ),
  );
  return figures;
}
