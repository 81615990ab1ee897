import { constants } from 'node:os';
import { MemoryBar } from '../device/memory-bar.js';
import type { Daemon } from '../server/daemon.js';
import { Command, RegionIndex } from '../wire/constants.js';

const REGION_NAMES: Record<number, string> = Object.fromEntries(Object.entries(RegionIndex).map(([n, i]) => [i, n]));
const ERRNO_NAMES: Record<number, string> = Object.fromEntries(Object.entries(constants.errno).map(([n, i]) => [i, n]));

export const regionName = (index: number): string => REGION_NAMES[index] ?? `region${index}`;
export const errnoName = (errno: number): string => ERRNO_NAMES[errno] ?? `E${errno}`;

/** The implemented regions of the daemon's device, by index. */
export function implementedRegions(daemon: Daemon): number[] {
  const out: number[] = [];
  for (let i = 0; i < daemon.device.numRegions; i++) if (daemon.device.region(i) !== null) out.push(i);
  return out;
}

/** Messages received, by command name ("unknown" for ids the protocol does not define). */
export function messagesByCommand(daemon: Daemon): Map<string, number> {
  const m = daemon.counters.messages;
  const out = new Map<string, number>(Object.keys(Command).map((name) => [name, 0]));
  const known = new Set<number>(Object.values(Command));
  let unknown = 0;
  for (let id = 0; id < m.length; id++) {
    if (known.has(id)) out.set(commandNameOf(id), m[id]!);
    else unknown += m[id]!;
  }
  out.set('unknown', unknown);
  return out;
}

function commandNameOf(id: number): string {
  for (const [name, value] of Object.entries(Command)) if (value === id) return name;
  return 'unknown';
}

/** Padding writes dropped by each memory BAR: how many writes and how many bytes. */
export function paddingDrops(daemon: Daemon): { region: string; writes: number; bytes: number }[] {
  const d = daemon.device;
  // BAR0 has padding only when the daemon serves it (a passed-through BAR0 is the host's).
  const bars = [d.bar0, ...d.memoryBars].filter((b): b is MemoryBar => b instanceof MemoryBar);
  return bars.map((bar) => ({
    region: regionName(bar.index),
    writes: bar.padding.droppedWrites,
    bytes: bar.padding.droppedBytes,
  }));
}

/**
 * Everything the daemon counts, flat, for a one-line log summary (SIGUSR1).
 * Zero counts of messages, errors and accesses are left out to keep it short.
 */
export function countersSummary(daemon: Daemon): Record<string, number | string> {
  const c = daemon.counters;
  const out: Record<string, number | string> = {};
  for (const [name, n] of messagesByCommand(daemon)) if (n > 0) out[`msg_${name.toLowerCase()}`] = n;
  for (const [errno, n] of c.errorsByErrno) out[`errors_${errnoName(errno)}`] = n;
  for (const i of implementedRegions(daemon)) {
    if (c.trappedReads[i]! > 0) out[`trapped_reads_${regionName(i)}`] = c.trappedReads[i]!;
    if (c.trappedWrites[i]! > 0) out[`trapped_writes_${regionName(i)}`] = c.trappedWrites[i]!;
  }
  for (const p of paddingDrops(daemon)) if (p.writes > 0) out[`padding_dropped_writes_${p.region}`] = p.writes;
  out['dma_maps'] = daemon.device.dma.count;
  out['connections'] = c.connections;
  out['refused_connections'] = c.refusedConnections;
  out['client'] = daemon.client?.peer?.pid ?? (daemon.client ? 'unknown' : 'none');
  if (c.scrubFailures > 0) out['scrub_failures'] = c.scrubFailures;
  const scrub = daemon.scrubProgress;
  if (scrub) out['scrub_percent'] = scrub.total > 0 ? Math.floor((100 * scrub.done) / scrub.total) : 0;
  return out;
}
