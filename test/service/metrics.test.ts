// Observability: the Prometheus endpoint, the SIGUSR1 summary line.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../src/client/client.js';
import { native } from '../../src/native/native.js';
import { daemonRegistry } from '../../src/service/metrics.js';
import { parseListenAddress } from '../../src/service/metrics-http.js';
import { DmaMapFlag, RegionIndex } from '../../src/wire/constants.js';
import { finished, spawnCli, waitForLog } from '../helpers/cli.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';

const MiB = 1024 * 1024;

/** Parses the Prometheus text format into "name{labels}" → value. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

async function scrape(port: number): Promise<Map<string, number>> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseMetrics(await r.text());
}

/** Traffic with something to count in every family: a trapped read, a padding write, an error, a DMA map. */
async function traffic(client: VfioUserClient): Promise<number> {
  await client.negotiate();
  await client.regionRead(RegionIndex.BAR2, 0x1000, 4);
  await client.regionWrite(RegionIndex.BAR2, 100 * MiB, Buffer.from([1, 2, 3, 4])); // memory is 96 MiB: padding
  await expect(client.regionRead(RegionIndex.BAR2, 1024 * MiB, 4)).rejects.toMatchObject({ errno: 22 });
  const mfd = native.memfdCreate('guest-ram', 0);
  fs.ftruncateSync(mfd, MiB);
  await client.dmaMap(0x100000, MiB, DmaMapFlag.READ | DmaMapFlag.WRITE, mfd, 0);
  return mfd;
}

describe('metrics endpoint', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-metrics-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('serves counters on loopback that move with client traffic', async () => {
    const socket = path.join(dir, 'gpu.sock');
    const daemon = spawnCli(['serve', '--socket', socket, '--metrics-listen', '0']);
    try {
      await waitForLog(daemon, 'serving metrics');
      const line = daemon.out.stderr.split('\n').find((l) => l.includes('serving metrics'))!;
      const { address } = JSON.parse(line) as { address: { host: string; port: number } };
      expect(address.host).toBe('127.0.0.1'); // a bare port binds loopback only

      let m = await scrape(address.port);
      expect(m.get('nvgrace_vfio_user_messages_total{command="VERSION"}')).toBe(0);
      expect(m.get('nvgrace_vfio_user_client_connections_total')).toBe(0);
      expect(m.get('nvgrace_vfio_user_client_attached')).toBe(0);
      expect(m.get('nvgrace_vfio_user_device_info{vendor_id="0x10de",device_id="0x2342",layout="bar2",backing="memfd"}')).toBe(1);
      expect(m.get('nvgrace_vfio_user_aperture_memory_bytes')).toBe(96 * MiB);
      expect(m.get('nvgrace_vfio_user_aperture_bar_bytes')).toBe(128 * MiB);
      expect(m.get('nvgrace_vfio_user_scrub_in_progress')).toBe(0);
      expect(m.has('process_resident_memory_bytes')).toBe(true);

      const client = VfioUserClient.connect(socket);
      const mfd = await traffic(client);
      m = await scrape(address.port);
      expect(m.get('nvgrace_vfio_user_messages_total{command="VERSION"}')).toBe(1);
      expect(m.get('nvgrace_vfio_user_messages_total{command="REGION_READ"}')).toBe(2);
      expect(m.get('nvgrace_vfio_user_messages_total{command="REGION_WRITE"}')).toBe(1);
      expect(m.get('nvgrace_vfio_user_messages_total{command="DMA_MAP"}')).toBe(1);
      expect(m.get('nvgrace_vfio_user_errors_total{errno="EINVAL"}')).toBe(1);
      expect(m.get('nvgrace_vfio_user_trapped_accesses_total{region="BAR2",op="read"}')).toBe(1);
      expect(m.get('nvgrace_vfio_user_trapped_accesses_total{region="BAR2",op="write"}')).toBe(1);
      expect(m.get('nvgrace_vfio_user_trapped_accesses_total{region="BAR0",op="read"}')).toBe(0);
      expect(m.get('nvgrace_vfio_user_padding_dropped_writes_total{region="BAR2"}')).toBe(1);
      expect(m.get('nvgrace_vfio_user_padding_dropped_bytes_total{region="BAR2"}')).toBe(4);
      expect(m.get('nvgrace_vfio_user_padding_dropped_writes_total{region="BAR0"}')).toBe(0);
      expect(m.get('nvgrace_vfio_user_dma_maps')).toBe(1);
      expect(m.get('nvgrace_vfio_user_client_connections_total')).toBe(1);
      expect(m.get('nvgrace_vfio_user_client_attached')).toBe(1);

      // a second client is refused while the first is attached
      const second = VfioUserClient.connect(socket);
      await expect(second.negotiate()).rejects.toThrow(/closed/);
      client.close();
      native.closeFd(mfd);
      for (let i = 0; i < 100 && (m.get('nvgrace_vfio_user_client_attached') ?? 1) !== 0; i++) {
        await new Promise((r) => setTimeout(r, 20));
        m = await scrape(address.port);
      }
      expect(m.get('nvgrace_vfio_user_client_attached')).toBe(0);
      expect(m.get('nvgrace_vfio_user_dma_maps')).toBe(0);
      expect(m.get('nvgrace_vfio_user_client_connections_total')).toBe(2);
      expect(m.get('nvgrace_vfio_user_client_connections_refused_total')).toBe(1);

      expect((await fetch(`http://127.0.0.1:${address.port}/`)).status).toBe(404);
      expect((await fetch(`http://127.0.0.1:${address.port}/metrics`, { method: 'POST' })).status).toBe(405);
      daemon.kill('SIGTERM');
      expect((await finished(daemon)).code).toBe(0);
    } finally {
      daemon.kill('SIGKILL');
    }
  });

  it('fails the start when the metrics port is taken', async () => {
    const first = spawnCli(['serve', '--socket', path.join(dir, 'a.sock'), '--metrics-listen', '0']);
    try {
      await waitForLog(first, 'serving metrics');
      const line = first.out.stderr.split('\n').find((l) => l.includes('serving metrics'))!;
      const port = (JSON.parse(line) as { address: { port: number } }).address.port;
      const second = spawnCli(['serve', '--socket', path.join(dir, 'b.sock'), '--metrics-listen', `127.0.0.1:${port}`]);
      const r = await finished(second);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/EADDRINUSE/);
      expect(fs.existsSync(path.join(dir, 'b.sock'))).toBe(false);
    } finally {
      first.kill('SIGTERM');
      await finished(first);
    }
  });

  it('parses listen addresses: a bare port is loopback', () => {
    expect(parseListenAddress('9464')).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(parseListenAddress('0.0.0.0:9464')).toEqual({ host: '0.0.0.0', port: 9464 });
    expect(parseListenAddress('[::1]:80')).toEqual({ host: '::1', port: 80 });
    expect(parseListenAddress('localhost:1')).toEqual({ host: 'localhost', port: 1 });
    for (const bad of ['', ':9464', 'host:', '70000', 'a:b:c', '::1:80']) expect(() => parseListenAddress(bad)).toThrow();
  });
});

describe('metrics registry', () => {
  let d: TestDaemon | null = null;
  afterEach(() => {
    d?.stop();
    d = null;
  });

  it('reports scrub progress while a scrub runs', async () => {
    d = startTestDaemon();
    const daemon = d.running.daemon;
    const registry = daemonRegistry(daemon, d.running.labels);
    let progress: { done: number; total: number } | null = { done: 48 * MiB, total: 96 * MiB };
    Object.defineProperty(daemon, 'scrubProgress', { get: () => progress });
    let m = parseMetrics(await registry.metrics());
    expect(m.get('nvgrace_vfio_user_scrub_in_progress')).toBe(1);
    expect(m.get('nvgrace_vfio_user_scrub_progress_ratio')).toBe(0.5);
    progress = null;
    m = parseMetrics(await registry.metrics());
    expect(m.get('nvgrace_vfio_user_scrub_in_progress')).toBe(0);
    expect(m.get('nvgrace_vfio_user_scrub_progress_ratio')).toBe(0);
    expect(m.get('nvgrace_vfio_user_scrub_failures_total')).toBe(0);
    daemon.counters.scrubFailures = 3;
    m = parseMetrics(await registry.metrics());
    expect(m.get('nvgrace_vfio_user_scrub_failures_total')).toBe(3);
  });

  it('counts trapped BAR0 reads and names a file backing', async () => {
    d = startTestDaemon();
    const registry = daemonRegistry(d.running.daemon, d.running.labels);
    const client = VfioUserClient.connect(d.socket);
    await client.negotiate();
    for (let i = 0; i < 5; i++) await client.regionRead(RegionIndex.BAR0, 0x1498, 4);
    const m = parseMetrics(await registry.metrics());
    expect(m.get('nvgrace_vfio_user_trapped_accesses_total{region="BAR0",op="read"}')).toBe(5);
    expect(m.get(`nvgrace_vfio_user_device_info{vendor_id="0x10de",device_id="0x2342",layout="bar2",backing="file:${d.aperturePath}"}`)).toBe(1);
    client.close();
  });
});

describe('SIGUSR1', () => {
  it('logs one line with the counters', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-usr1-'));
    const socket = path.join(dir, 'gpu.sock');
    const daemon = spawnCli(['serve', '--socket', socket]);
    try {
      await waitForLog(daemon, 'device ready');
      const client = VfioUserClient.connect(socket);
      const mfd = await traffic(client);
      daemon.kill('SIGUSR1');
      await waitForLog(daemon, '"msg":"counters"');
      const lines = daemon.out.stderr.split('\n').filter((l) => l.includes('"msg":"counters"'));
      expect(lines).toHaveLength(1);
      const summary = JSON.parse(lines[0]!) as Record<string, unknown>;
      expect(summary).toMatchObject({
        msg_version: 1,
        msg_region_read: 2,
        msg_region_write: 1,
        msg_dma_map: 1,
        errors_EINVAL: 1,
        trapped_reads_BAR2: 1,
        trapped_writes_BAR2: 1,
        padding_dropped_writes_BAR2: 1,
        dma_maps: 1,
        connections: 1,
        refused_connections: 0,
        client: process.pid,
      });
      client.close();
      native.closeFd(mfd);
      daemon.kill('SIGTERM');
      expect((await finished(daemon)).code).toBe(0);
    } finally {
      daemon.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
