import fs from 'node:fs';
import { native } from '../native/native.js';
import { parseNodeList, readAttr, sysPath } from './sysfs.js';

const nodeRoot = (sysfsRoot: string) => sysPath(sysfsRoot, 'devices', 'system', 'node');

/** Nodes that have memory (N_MEMORY); empty when sysfs has no NUMA information. */
export function nodesWithMemory(sysfsRoot: string): number[] {
  const text = readAttr(sysPath(nodeRoot(sysfsRoot), 'has_memory'));
  return text === null ? [] : parseNodeList(text);
}

/**
 * Refuses a node that does not exist or has no memory, in one line: binding
 * to it would fail at the first fault, inside the client.
 */
export function checkNumaNode(sysfsRoot: string, node: number): void {
  const withMemory = nodesWithMemory(sysfsRoot);
  const known = withMemory.length > 0 ? withMemory.join(',') : 'none';
  if (!fs.existsSync(sysPath(nodeRoot(sysfsRoot), `node${node}`))) {
    throw new Error(`NUMA node ${node} does not exist on this host (nodes with memory: ${known})`);
  }
  if (!withMemory.includes(node)) {
    throw new Error(`NUMA node ${node} has no memory (nodes with memory: ${known})`);
  }
}

/** MemFree of a node in bytes, from nodeN/meminfo; null when unreadable. */
export function nodeFreeBytes(sysfsRoot: string, node: number): number | null {
  const text = readAttr(sysPath(nodeRoot(sysfsRoot), `node${node}`, 'meminfo'));
  const m = text === null ? null : /MemFree:\s+(\d+)\s*kB/.exec(text);
  return m ? Number(m[1]) * 1024 : null;
}

/**
 * Binds [offset, offset + length) of a shared mapping strictly to `node`
 * (MPOL_BIND: an allocation that cannot be met there fails; it never spills
 * to another node), and checks that the kernel recorded it.
 */
export function bindToNode(map: ArrayBuffer, offset: number, length: number, node: number): void {
  native.mbind(map, offset, length, native.MPOL_BIND, [node], 0);
  const p = native.getMempolicy(map, offset);
  if (p.mode !== native.MPOL_BIND || p.nodes.length !== 1 || p.nodes[0] !== node) {
    throw new Error(`the kernel did not keep the binding to NUMA node ${node} (policy mode ${p.mode}, nodes ${p.nodes.join(',')})`);
  }
}

/**
 * Nodes of the pages of a mapping, one per `stride` bytes, that are not on
 * `node` (pages not present are ignored). Empty when all are where they belong.
 */
export function pagesOffNode(map: ArrayBuffer, offset: number, length: number, stride: number, node: number): Map<number, number> {
  const count = Math.ceil(length / stride);
  const status = new Int32Array(count);
  native.pageNodes(map, offset, stride, status);
  const off = new Map<number, number>();
  for (const s of status) {
    if (s >= 0 && s !== node) off.set(s, (off.get(s) ?? 0) + 1);
  }
  return off;
}
