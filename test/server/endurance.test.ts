// Endurance: a daemon process under thousands of hostile connections keeps
// flat resident memory and fds. In `npm test`: a fixed number of connections
// with a fixed seed, sampled by connection count (not by time). Longer, timed
// and printed: `npm run soak -- --minutes N` (scripts/soak.mjs).
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../src/client/client.js';
import { RegionIndex } from '../../src/wire/constants.js';
import { encodeRegionRead, encodeRegionWrite } from '../../src/wire/serializer.js';
import { spawnCli, waitForLog, finished } from '../helpers/cli.js';
import { until } from '../helpers/daemon.js';
import { Rng } from '../helpers/fuzz-messages.js';
import { hostileBurst } from '../helpers/hostile-client.js';
import { RawPeer } from '../helpers/raw-peer.js';
import { isListening } from '../service/helpers.js';

const MiB = 1024 * 1024;
const SOAK_MINUTES = Number(process.env['NVGRACE_SOAK_MINUTES'] ?? 0);
const SEED = Number(process.env['NVGRACE_SOAK_SEED'] ?? 15);
/** Hostile connections in `npm test`, and how often memory is sampled. */
const CONNECTIONS = 3000;
const SAMPLE_EVERY = 100;
/** What the test (not a soak) lets RSS grow by per connection in its second half. */
const LEAK_BOUND_PER_CONNECTION = 4 * 1024;
/** The device memory the daemon maps, paged in up front (see preTouch): the emulated BAR0 and the aperture. */
const BAR0_SIZE = 16 * MiB;
/** Preloaded into the daemon: a full garbage collection on SIGUSR2 before each sample. */
const GC_ON_SIGNAL = fileURLToPath(new URL('../helpers/gc-on-signal.cjs', import.meta.url));
const APERTURE_SIZE = 96 * MiB;

interface Sample {
  connections: number;
  seconds: number;
  rss: number;
  anon: number;
  file: number;
  shmem: number;
  fds: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  /** Sizes of V8's young generation, old generation and code space. */
  newSpace: number;
  oldSpace: number;
  codeSpace: number;
}

/** The Node.js options the shipped service unit gives the daemon (its heap bounds): the test measures what ships. */
function unitNodeOptions(): string {
  const unit = fs.readFileSync(new URL('../../systemd/nvgrace-vfio-user@.service', import.meta.url), 'utf8');
  const options = /^Environment="NODE_OPTIONS=([^"]*)"$/m.exec(unit)?.[1];
  if (options === undefined) throw new Error('no Environment="NODE_OPTIONS=..." in the service unit');
  return options;
}

function procStatus(pid: number): Pick<Sample, 'rss' | 'anon' | 'file' | 'shmem'> {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(text)![1]) * 1024;
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile'), shmem: kb('RssShmem') };
}

/** The daemon's own view of its heap, from its metrics endpoint. */
async function heap(port: number): Promise<Pick<Sample, 'heapUsed' | 'heapTotal' | 'external' | 'newSpace' | 'oldSpace' | 'codeSpace'>> {
  // a connection of its own each time, closed after the answer: no keep-alive socket in the daemon's fd count
  const text = await new Promise<string>((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/metrics', agent: false, headers: { connection: 'close' } }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve(body));
        res.on('close', () => (res.complete ? undefined : reject(new Error('metrics response cut short'))));
      })
      .on('error', reject);
  });
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  const space = (name: string) => value(`nodejs_heap_space_size_total_bytes\\{space="${name}"[^}]*\\}`);
  return {
    heapUsed: value('nodejs_heap_size_used_bytes'),
    heapTotal: value('nodejs_heap_size_total_bytes'),
    external: value('nodejs_external_memory_bytes'),
    newSpace: space('new'),
    oldSpace: space('old'),
    codeSpace: space('code'),
  };
}

const mb = (n: number) => (n / MiB).toFixed(1).padStart(6);

export function formatSample(s: Sample): string {
  return `${String(Math.round(s.seconds)).padStart(6)} s ${String(s.connections).padStart(7)} conns  RSS ${mb(s.rss)} MiB (anon ${mb(s.anon)}, file ${mb(s.file)}, shmem ${mb(s.shmem)})  heap ${mb(s.heapUsed)}/${mb(s.heapTotal)} MiB (new ${mb(s.newSpace)}, old ${mb(s.oldSpace)}, code ${mb(s.codeSpace)})  external ${mb(s.external)} MiB  fds ${s.fds}`;
}

/**
 * The fuzzer reads and writes all over the emulated BAR0 (a 16 MiB shared
 * memory file) and the aperture (a 96 MiB file), both mapped by the daemon:
 * each page it touches first counts in the daemon's RSS, up to their sizes.
 * That is the device's own memory, not growth; writing every page once before
 * measuring puts it all in from the start.
 */
async function preTouch(socket: string): Promise<void> {
  const p = RawPeer.connect(socket);
  await p.negotiate();
  const writes: Buffer[] = [];
  for (let off = 0; off < BAR0_SIZE; off += 4096) writes.push(encodeRegionWrite(1, RegionIndex.BAR0, off + 0x800, Buffer.alloc(4), true));
  for (let off = 0; off < APERTURE_SIZE; off += 4096) writes.push(encodeRegionWrite(1, RegionIndex.BAR2, off, Buffer.alloc(4), true));
  await p.send(Buffer.concat(writes), null, 30_000);
  // a reply after the posted writes: they have all been applied
  await p.request(encodeRegionRead(2, RegionIndex.BAR2, APERTURE_SIZE - 4, 4));
  p.close();
}

/** Fails, saying what it was doing, instead of waiting for ever on a step that never ends. */
async function step<T>(what: string, p: Promise<T>, ms = 60_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no progress in ${ms / 1000} s`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A well-behaved client that waits its turn; the sample is taken while it is attached (so the previous client is torn down). */
async function probe(socket: string, pid: number, port: number, connections: number, t0: number): Promise<Sample> {
  const c = VfioUserClient.connect(socket);
  try {
    await c.negotiate();
    expect((await c.regionRead(RegionIndex.CONFIG, 0, 2)).readUInt16LE(0)).toBe(0x10de);
    const fds = fs.readdirSync(`/proc/${pid}/fd`).length;
    return { connections, seconds: (Date.now() - t0) / 1000, ...procStatus(pid), fds, ...(await heap(port)) };
  } finally {
    c.close();
  }
}

describe('endurance under hostile clients', () => {
  it(
    SOAK_MINUTES > 0 ? `soak: ${SOAK_MINUTES} min of hostile connections (seed ${SEED})` : `${CONNECTIONS} hostile connections leave a daemon process at a flat RSS and fd count (seed ${SEED})`,
    async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-endurance-'));
      const socket = path.join(dir, 'gpu.sock');
      // at the operator's log level, so the per-client log lines (pino child loggers) are part of what is measured
      const daemon = spawnCli(['serve', '--socket', socket, '--aperture-path', path.join(dir, 'aperture'), '--aperture-size', '96M', '--log-level', 'info', '--metrics-listen', '0'], {
        ...process.env,
        NODE_OPTIONS: `${process.env['NVGRACE_SOAK_NODE_OPTIONS'] ?? unitNodeOptions()} --require ${GC_ON_SIGNAL}`,
      });
      try {
        await waitForLog(daemon, 'serving metrics');
        await until(() => isListening(socket), 'listening socket', 10_000);
        const line = daemon.out.stderr.split('\n').find((l) => l.includes('serving metrics'))!;
        const port = (JSON.parse(line) as { address: { port: number } }).address.port;
        const pid = daemon.pid!;
        await step('writing every page of BAR0', preTouch(socket));
        const r = new Rng(SEED);
        const t0 = Date.now();
        const samples: Sample[] = [];
        let connections = 0;
        let failed = 0;
        const burstsUntil = SOAK_MINUTES > 0 ? () => Date.now() - t0 < SOAK_MINUTES * 60_000 : () => connections < CONNECTIONS;
        let nextPrint = 0;
        let warnings = 0;
        const sample = async () => {
          process.kill(pid, 'SIGUSR2');
          await step('a full garbage collection in the daemon', waitForLog(daemon, 'endurance: full gc done'));
          const s = await step(`probe after ${connections} connections`, probe(socket, pid, port, connections, t0));
          // the log is not kept: a client line per connection would grow this process, not the daemon
          warnings += daemon.out.stderr.split('\n').filter((l) => /"level":(40|50|60)/.test(l)).length;
          daemon.out.stderr = '';
          samples.push(s);
          if (SOAK_MINUTES === 0 || s.seconds >= nextPrint) {
            console.info(formatSample(s));
            nextPrint = s.seconds + 30;
          }
        };
        await sample();
        while (burstsUntil()) {
          try {
            await step(`hostile connection ${connections + 1}`, hostileBurst(socket, r));
          } catch (err) {
            failed++; // e.g. VERSION refused: counted, the run goes on
            if (failed > connections / 100 + 5) throw err;
          }
          connections++;
          if (connections % SAMPLE_EVERY === 0) await sample();
        }
        await sample();
        expect(daemon.exitCode).toBeNull();

        // After a warm-up, the second half's peak over the first half's. A soak (tens of
        // thousands of connections) must show a plateau: under 1 MiB. The test's 3,000
        // are too few for that (the allocator settles by up to 2 MiB in them, and by none
        // over 80,000 in a soak), so it holds a bound per connection that a leak of
        // per-connection buffers crosses (the bug it was written for kept 17 KiB each).
        const warm = samples.slice(Math.max(1, Math.floor(samples.length / 6)));
        const half = Math.floor(warm.length / 2);
        const first = warm.slice(0, half);
        const second = warm.slice(half);
        const peak = (xs: Sample[], k: keyof Sample) => Math.max(...xs.map((s) => s[k]));
        const growth = peak(second, 'rss') - peak(first, 'rss');
        const bound = SOAK_MINUTES > 0 ? MiB : LEAK_BOUND_PER_CONNECTION * (second.at(-1)!.connections - first.at(-1)!.connections);
        const fdsSeen = new Set(samples.map((s) => s.fds));
        console.info(
          `${connections} hostile connections (${failed} failed) in ${Math.round((Date.now() - t0) / 1000)} s: ` +
            `RSS peak ${mb(peak(first, 'rss'))} MiB in the first half, ${mb(peak(second, 'rss'))} MiB in the second (growth ${(growth / MiB).toFixed(2)} MiB); ` +
            `fds ${[...fdsSeen].join(', ')}; ${warnings} warnings logged`,
        );
        expect(fdsSeen.size, 'the same fd count at every sample').toBe(1);
        expect(growth, `RSS growth over the second half (bound ${mb(bound)} MiB)`).toBeLessThan(bound);
        daemon.kill('SIGTERM');
        expect((await finished(daemon)).code).toBe(0);
      } finally {
        if (daemon.exitCode === null) daemon.kill('SIGKILL');
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
    SOAK_MINUTES * 60_000 + 240_000,
  );
});
