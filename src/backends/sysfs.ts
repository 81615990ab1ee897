import fs from 'node:fs';
import path from 'node:path';

/**
 * Reading kernel facts from sysfs. Every caller takes the sysfs root as a
 * parameter so tests can point it at a fake tree.
 */
export const SYSFS_ROOT = '/sys';

/** The trimmed contents of a sysfs attribute, or null when it is absent. */
export function readAttr(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return null;
  }
}

/** A decimal or 0x-hex attribute, or null when absent or not a number. */
export function readIntAttr(file: string): number | null {
  const text = readAttr(file);
  if (text === null) return null;
  const value = /^0x[0-9a-f]+$/i.test(text) ? Number.parseInt(text, 16) : /^-?\d+$/.test(text) ? Number(text) : NaN;
  return Number.isSafeInteger(value) ? value : null;
}

/** "0-2,5,7-8" (the kernel's list format) → [0, 1, 2, 5, 7, 8]. */
export function parseNodeList(text: string): number[] {
  const out: number[] = [];
  for (const part of text.split(',')) {
    const m = /^\s*(\d+)(?:-(\d+))?\s*$/.exec(part);
    if (!m) continue;
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    for (let n = lo; n <= hi; n++) out.push(n);
  }
  return out;
}

export function sysPath(root: string, ...parts: string[]): string {
  return path.join(root, ...parts);
}
