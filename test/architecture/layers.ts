// The layering rule of src/ and a check of the import graph against it.
// Kept in one place so that README's Design section can point here.
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

/**
 * Which layers each layer may import (besides itself). A layer is a folder of
 * src/; the files at the top of src/ (the logger) are the layer `log`.
 *
 * - common: integer arithmetic (alignUp, nextPowerOfTwo, ...), below everything.
 * - native: the typed loader of the N-API binding, below everything but common.
 * - wire: the pure codec, nothing below it.
 * - device: the model. It owns the interfaces it needs (MemoryBacking,
 *   Bar0Source, DmaFileOps, EventSink, HostFunction) and speaks the protocol's
 *   vocabulary (wire constants and message shapes) but makes no wire errors.
 * - backends: implement device's interfaces over the host (memfd, files, VFIO).
 * - server: sessions and the daemon; knows the device, never a backend
 *   (what it needs from one is injected through the device).
 * - cli (and orchestration, service) assemble backends into a device.
 */
const LAYER_TABLE: Record<string, readonly string[]> = {
  common: [],
  native: [],
  wire: [],
  log: [],
  device: ['wire'],
  backends: ['device', 'wire', 'native'],
  transport: ['wire', 'native'],
  server: ['device', 'transport', 'wire', 'native'],
  client: ['transport', 'wire', 'native'],
  service: ['server', 'device', 'wire', 'native'],
  orchestration: ['client', 'device', 'backends', 'wire', 'native'],
  cli: ['service', 'orchestration', 'client', 'server', 'transport', 'device', 'backends', 'wire', 'native', 'log'],
};
/** `common` (pure arithmetic) is below everything. */
export const LAYERS: Record<string, readonly string[]> = Object.fromEntries(
  Object.entries(LAYER_TABLE).map(([layer, deps]) => [layer, layer === 'common' ? deps : [...deps, 'common']]),
);

/** Layers that may import only some files of another: the protocol's vocabulary, not its codec or errors. */
export const ONLY_FILES: Record<string, Record<string, readonly string[]>> = {
  device: { wire: ['wire/constants.ts', 'wire/messages.ts'] },
  backends: { wire: ['wire/constants.ts', 'wire/messages.ts'] },
};

/** file (relative to src/, e.g. `device/region.ts`) -> the src files it imports. */
export type ImportGraph = Map<string, string[]>;

export function layerOf(file: string): string {
  const slash = file.indexOf('/');
  return slash < 0 ? 'log' : file.slice(0, slash);
}

/** Every import, export-from and dynamic import() of a relative path, read with the TypeScript scanner. */
export function importGraph(srcDir: string): ImportGraph {
  const graph: ImportGraph = new Map();
  const walk = (dir: string): void => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.endsWith('.ts')) {
        const info = ts.preProcessFile(fs.readFileSync(full, 'utf8'), true, true);
        const targets = info.importedFiles
          .map((f) => f.fileName)
          .filter((spec) => spec.startsWith('.'))
          .map((spec) => path.relative(srcDir, path.resolve(path.dirname(full), spec)).replace(/\.js$/, '.ts'));
        graph.set(path.relative(srcDir, full), targets);
      }
    }
  };
  walk(srcDir);
  return graph;
}

/** What breaks the rule: an import the layer table does not allow, an unknown layer, or a cycle of files. */
export function layeringViolations(graph: ImportGraph): string[] {
  const out: string[] = [];
  for (const [file, targets] of graph) {
    const from = layerOf(file);
    const allowed = LAYERS[from];
    if (!allowed) {
      out.push(`${file}: layer "${from}" is not in the layer table`);
      continue;
    }
    for (const target of targets) {
      const to = layerOf(target);
      if (to === from) continue;
      if (!allowed.includes(to)) out.push(`${file} imports ${target}: ${from} may not import ${to}`);
      else {
        const only = ONLY_FILES[from]?.[to];
        if (only && !only.includes(target)) out.push(`${file} imports ${target}: ${from} may import only ${only.join(', ')} of ${to}`);
      }
    }
  }
  for (const cycle of importCycles(graph)) out.push(`import cycle among ${cycle.join(', ')}`);
  return out;
}

/** The files of each import cycle (strongly connected components of more than one file, or a file importing itself). */
export function importCycles(graph: ImportGraph): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  let next = 0;
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const component: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      component.push(w);
    } while (w !== v);
    if (component.length > 1 || (graph.get(v) ?? []).includes(v)) cycles.push(component.sort());
  };
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v);
  return cycles;
}
