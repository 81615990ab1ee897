import fs from 'node:fs';
import { InvalidArgumentError } from 'commander';
import type { Bar0Spec } from '../backends/bar0-spec.js';
import { parseHugePageSize } from '../backends/hugepages.js';
import { parseBdf } from '../backends/vfio/pci-address.js';

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/** "4096", "96M", "1.5G", "2TiB" (binary units) → bytes. */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?B)?\s*$/.exec(text);
  if (!m) throw new InvalidArgumentError(`"${text}" is not a size (bytes, or a number with K, M, G or T)`);
  const bytes = Number(m[1]) * UNITS[m[2]!.toUpperCase()]!;
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new InvalidArgumentError(`"${text}" is not a whole, positive number of bytes`);
  return bytes;
}

/** "0x80_0000_0000" or decimal → number. */
export function parseAddress(text: string): number {
  const clean = text.replace(/_/g, '');
  const value = /^0x[0-9a-f]+$/i.test(clean) ? Number.parseInt(clean.slice(2), 16) : /^\d+$/.test(clean) ? Number(clean) : NaN;
  if (!Number.isSafeInteger(value) || value < 0) throw new InvalidArgumentError(`"${text}" is not an address (hex with 0x, or decimal)`);
  return value;
}

/** A 16-bit PCI ID, hex with or without 0x. */
export function parsePciId(text: string): number {
  const clean = text.replace(/^0x/i, '');
  if (!/^[0-9a-f]{1,4}$/i.test(clean)) throw new InvalidArgumentError(`"${text}" is not a 16-bit hex PCI ID`);
  return Number.parseInt(clean, 16);
}

/** A whole number >= min (counts, timeouts in seconds). */
export function parseCount(text: string, min = 1): number {
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text)) || Number(text) < min) {
    throw new InvalidArgumentError(`"${text}" is not a whole number >= ${min}`);
  }
  return Number(text);
}

/** Whole seconds, at least 1. */
export function parseSeconds(text: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1) throw new InvalidArgumentError(`"${text}" is not a whole number of seconds (1 or more)`);
  return Number(text);
}

export function parseMode(text: string): number {
  if (!/^0?[0-7]{3}$/.test(text)) throw new InvalidArgumentError(`"${text}" is not an octal file mode like 0600`);
  return Number.parseInt(text, 8);
}

export function formatSize(bytes: number): string {
  for (const [unit, div] of [['TiB', 2 ** 40], ['GiB', 2 ** 30], ['MiB', 2 ** 20], ['KiB', 2 ** 10]] as const) {
    if (bytes >= div && bytes % div === 0) return `${bytes / div} ${unit}`;
  }
  return `${bytes} B`;
}

export function hex(n: number, width = 0): string {
  return '0x' + n.toString(16).padStart(width, '0');
}

/** A uid as a number, or a user name looked up in /etc/passwd. */
export function parseUid(text: string): number {
  return lookupId(text, '/etc/passwd', 'user');
}

/** A gid as a number, or a group name looked up in /etc/group. */
export function parseGid(text: string): number {
  return lookupId(text, '/etc/group', 'group');
}

function lookupId(text: string, file: string, what: string): number {
  if (/^\d+$/.test(text)) return Number(text);
  let lines: string[] = [];
  try {
    lines = fs.readFileSync(file, 'utf8').split('\n');
  } catch {
    // fall through to the error below
  }
  for (const line of lines) {
    const [name, , id] = line.split(':');
    if (name === text && id !== undefined && /^\d+$/.test(id)) return Number(id);
  }
  throw new InvalidArgumentError(`no ${what} "${text}" in ${file} (give a number instead)`);
}

/** "2M", "1G", "64K", "512M", "16G" (also 2MB, 1GiB, ...) → bytes; the host's offer is checked at start. */
export function parseHugePages(text: string): number {
  const bytes = parseHugePageSize(text);
  if (bytes === null) {
    throw new InvalidArgumentError(`"${text}" is not a huge page size: a power of two from 64K, as /sys/kernel/mm/hugepages lists them (2M, 1G; on arm64 also 64K, 32M, 512M, 16G)`);
  }
  return bytes;
}

/** A NUMA node id. */
export function parseNumaNode(text: string): number {
  if (!/^\d{1,4}$/.test(text)) throw new InvalidArgumentError(`"${text}" is not a NUMA node number`);
  return Number(text);
}

/** --bar0: "emulated", "file:PATH", "sysfs:BDF" or "vfio:BDF|/dev/vfio/devices/vfioN". */
export function parseBar0Spec(text: string): Bar0Spec {
  if (text === 'emulated') return { kind: 'emulated' };
  const colon = text.indexOf(':');
  const kind = colon > 0 ? text.slice(0, colon) : '';
  const rest = text.slice(colon + 1);
  if (rest.length > 0) {
    if (kind === 'file') return { kind: 'file', path: rest };
    const bdf = parseBdf(rest);
    if (kind === 'sysfs' && bdf) return { kind: 'sysfs', bdf };
    if (kind === 'vfio' && (bdf || rest.startsWith('/'))) return { kind: 'vfio', target: bdf ?? rest };
  }
  throw new Error(`--bar0 must be "emulated", "file:PATH", "sysfs:BDF" or "vfio:BDF|/dev/vfio/devices/vfioN" (BDF as 0000:01:00.0), not "${text}"`);
}
