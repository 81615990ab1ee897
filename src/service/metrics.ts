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
  const c = daemon.counters;
  /** A counter that is one of the daemon's plain numbers, read at scrape time. */
  const plainCounter = (name: string, help: string, read: () => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });

  new Counter({
    name: `${P}messages_total`,
    help: 'vfio-user messages received, by command',
    labelNames: ['command'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [command, n] of messagesByCommand(daemon)) this.inc({ command }, n);
    },
  });
  new Counter({
    name: `${P}errors_total`,
    help: 'error replies (or refused posted messages), by errno',
    labelNames: ['errno'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [errno, n] of c.errorsByErrno) this.inc({ errno: errnoName(errno) }, n);
    },
  });
  new Counter({
    name: `${P}trapped_accesses_total`,
    help: 'REGION_READ/REGION_WRITE accesses served by the daemon (not through a mapping), by region',
    labelNames: ['region', 'op'],
    registers: [registry],
    collect() {
      this.reset();
      for (const i of implementedRegions(daemon)) {
        this.inc({ region: regionName(i), op: 'read' }, c.trappedReads[i]!);
        this.inc({ region: regionName(i), op: 'write' }, c.trappedWrites[i]!);
      }
    },
  });
  new Counter({
    name: `${P}padding_dropped_writes_total`,
    help: 'writes to BAR padding beyond the memory, dropped, by region',
    labelNames: ['region'],
    registers: [registry],
    collect() {
      this.reset();
      for (const p of paddingDrops(daemon)) this.inc({ region: p.region }, p.writes);
    },
  });
  new Counter({
    name: `${P}padding_dropped_bytes_total`,
    help: 'bytes of dropped padding writes, by region',
    labelNames: ['region'],
    registers: [registry],
    collect() {
      this.reset();
      for (const p of paddingDrops(daemon)) this.inc({ region: p.region }, p.bytes);
    },
  });
  new Gauge({
    name: `${P}dma_maps`,
    help: 'DMA mappings of guest memory the client has registered',
    registers: [registry],
    collect() {
      this.set(daemon.device.dma.count);
    },
  });
  plainCounter(`${P}client_connections_total`, 'client connections accepted on the socket, including refused ones', () => c.connections);
  plainCounter(`${P}client_connections_refused_total`, 'client connections refused (the device had a client, or the uid was not allowed)', () => c.refusedConnections);
  new Gauge({
    name: `${P}client_attached`,
    help: '1 while a client is attached',
    registers: [registry],
    collect() {
      this.set(daemon.client ? 1 : 0);
    },
  });
  new Gauge({
    name: `${P}scrub_in_progress`,
    help: '1 while the aperture memory is being zeroed',
    registers: [registry],
    collect() {
      this.set(daemon.scrubProgress ? 1 : 0);
    },
  });
  plainCounter(`${P}scrub_failures_total`, 'scrubs that failed; each is retried, and no client is admitted until one succeeds', () => c.scrubFailures);
  new Gauge({
    name: `${P}scrub_progress_ratio`,
    help: 'fraction of the aperture zeroed by the scrub in progress (0 when none runs)',
    registers: [registry],
    collect() {
      const s = daemon.scrubProgress;
      this.set(s && s.total > 0 ? s.done / s.total : 0);
    },
  });
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

  collectDefaultMetrics({ register: registry });
  return registry;
}
