import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Daemon } from '../server/daemon.js';
import { errnoName, implementedRegions, messagesByCommand, paddingDrops, regionName } from './stats.js';

const P = 'nvgrace_vfio_user_';

export interface DeviceLabels {
  vendorId: string;
  deviceId: string;
  layout: string;
  backing: string;
  memoryBytes: number;
  barBytes: number;
}

/**
 * A Prometheus registry over the daemon's own counters. Nothing is counted
 * twice: the hot path keeps incrementing plain numbers (server/counters.ts),
 * and each metric reads them in its collect() callback at scrape time, so a
 * counter is reset and set to the daemon's total on every scrape.
 */
export function daemonRegistry(daemon: Daemon, device: DeviceLabels): Registry {
  const registry = new Registry();
  registerTraffic(registry, daemon);
  registerClients(registry, daemon);
  registerScrub(registry, daemon);
  registerDevice(registry, device);
  collectDefaultMetrics({ register: registry });
  return registry;
}

type Inc = (labels: Record<string, string>, n: number) => void;

/** A counter with labels, filled from the daemon's numbers at scrape time. */
function labelledCounter(registry: Registry, name: string, help: string, labelNames: string[], fill: (inc: Inc) => void): void {
  new Counter({
    name: P + name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      fill((labels, n) => this.inc(labels, n));
    },
  });
}

/** A counter that is one of the daemon's plain numbers, read at scrape time. */
function plainCounter(registry: Registry, name: string, help: string, read: () => number): void {
  new Counter({
    name: P + name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

/** A gauge read at scrape time. */
function gauge(registry: Registry, name: string, help: string, read: () => number): void {
  new Gauge({
    name: P + name,
    help,
    registers: [registry],
    collect() {
      this.set(read());
    },
  });
}

/** Messages, errors, trapped accesses, dropped padding writes, DMA maps. */
function registerTraffic(registry: Registry, daemon: Daemon): void {
  const c = daemon.counters;
  labelledCounter(registry, 'messages_total', 'vfio-user messages received, by command', ['command'], (inc) => {
    for (const [command, n] of messagesByCommand(daemon)) inc({ command }, n);
  });
  labelledCounter(registry, 'errors_total', 'error replies (or refused posted messages), by errno', ['errno'], (inc) => {
    for (const [errno, n] of c.errorsByErrno) inc({ errno: errnoName(errno) }, n);
  });
  labelledCounter(
    registry,
    'trapped_accesses_total',
    'REGION_READ/REGION_WRITE accesses served by the daemon (not through a mapping), by region',
    ['region', 'op'],
    (inc) => {
      for (const i of implementedRegions(daemon)) {
        inc({ region: regionName(i), op: 'read' }, c.trappedReads[i]!);
        inc({ region: regionName(i), op: 'write' }, c.trappedWrites[i]!);
      }
    },
  );
  labelledCounter(registry, 'padding_dropped_writes_total', 'writes to BAR padding beyond the memory, dropped, by region', ['region'], (inc) => {
    for (const p of paddingDrops(daemon)) inc({ region: p.region }, p.writes);
  });
  labelledCounter(registry, 'padding_dropped_bytes_total', 'bytes of dropped padding writes, by region', ['region'], (inc) => {
    for (const p of paddingDrops(daemon)) inc({ region: p.region }, p.bytes);
  });
  gauge(registry, 'dma_maps', 'DMA mappings of guest memory the client has registered', () => daemon.device.dma.count);
}

function registerClients(registry: Registry, daemon: Daemon): void {
  const c = daemon.counters;
  plainCounter(registry, 'client_connections_total', 'client connections accepted on the socket, including refused ones', () => c.connections);
  plainCounter(registry, 'client_connections_refused_total', 'client connections refused (the device had a client, or the uid was not allowed)', () => c.refusedConnections);
  gauge(registry, 'client_attached', '1 while a client is attached', () => (daemon.client ? 1 : 0));
}

function registerScrub(registry: Registry, daemon: Daemon): void {
  gauge(registry, 'scrub_in_progress', '1 while the aperture memory is being zeroed', () => (daemon.scrubProgress ? 1 : 0));
  plainCounter(registry, 'scrub_failures_total', 'scrubs that failed; each is retried, and no client is admitted until one succeeds', () => daemon.counters.scrubFailures);
  gauge(registry, 'scrub_progress_ratio', 'fraction of the aperture zeroed by the scrub in progress (0 when none runs)', () => {
    const s = daemon.scrubProgress;
    return s && s.total > 0 ? s.done / s.total : 0;
  });
}

/** Facts of the device that do not change while it runs. */
function registerDevice(registry: Registry, device: DeviceLabels): void {
  new Gauge({
    name: `${P}device_info`,
    help: 'the device served (always 1; the labels carry the facts)',
    labelNames: ['vendor_id', 'device_id', 'layout', 'backing'],
    registers: [registry],
  }).set({ vendor_id: device.vendorId, device_id: device.deviceId, layout: device.layout, backing: device.backing }, 1);
  new Gauge({
    name: `${P}aperture_memory_bytes`,
    help: 'bytes of coherent memory, all memory BARs together',
    registers: [registry],
  }).set(device.memoryBytes);
  new Gauge({
    name: `${P}aperture_bar_bytes`,
    help: 'size of the BAR with the usable coherent memory (BAR2, or BAR4 in the gh and gb layouts)',
    registers: [registry],
  }).set(device.barBytes);
}
