import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { importCycles, importGraph, layeringViolations, type ImportGraph } from './layers.js';

const SRC = fileURLToPath(new URL('../../src', import.meta.url));

describe('layering of src/', () => {
  it('every import points the way the layer table allows, and no files import each other in a cycle', () => {
    const graph = importGraph(SRC);
    expect(graph.size).toBeGreaterThan(50);
    expect(layeringViolations(graph)).toEqual([]);
  });

  it('reads import, export-from, type-only and dynamic imports', () => {
    const graph = importGraph(SRC);
    // dynamic: serve loads the metrics registry only when asked for
    expect(graph.get('cli/serve.ts')).toContain('service/metrics.ts');
    // type-only
    expect(graph.get('server/session.ts')).toContain('device/gpu-device.ts');
  });
});

describe('the check fails on a planted bad import', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  function plantedCopy(file: string, line: string): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-layers-'));
    dirs.push(dir);
    fs.cpSync(SRC, dir, { recursive: true });
    fs.appendFileSync(path.join(dir, file), `\n${line}\n`);
    return dir;
  }

  it('device importing server (upward)', () => {
    const dir = plantedCopy('device/region.ts', "import type { Session } from '../server/session.js';");
    expect(layeringViolations(importGraph(dir))).toContain(
      'device/region.ts imports server/session.ts: device may not import server',
    );
  });

  it('device importing a backend (the interfaces live in device)', () => {
    const dir = plantedCopy('device/gpu-device.ts', "export { FdMemory } from '../backends/fd-memory.js';");
    const found = layeringViolations(importGraph(dir));
    expect(found).toContain('device/gpu-device.ts imports backends/fd-memory.ts: device may not import backends');
    // backends/fd-memory -> device/memory-bar and gpu-device -> memory-bar do not close a cycle; the layer rule alone catches it
  });

  it('device making wire errors', () => {
    const dir = plantedCopy('device/interrupts.ts', "import { WireError } from '../wire/errors.js';");
    expect(layeringViolations(importGraph(dir))).toContain(
      'device/interrupts.ts imports wire/errors.ts: device may import only wire/constants.ts, wire/messages.ts of wire',
    );
  });

  it('server reaching into backends', () => {
    const dir = plantedCopy('server/session.ts', "const later = () => import('../backends/client-fd.js');");
    expect(layeringViolations(importGraph(dir))).toContain(
      'server/session.ts imports backends/client-fd.ts: server may not import backends',
    );
  });

  it('a cycle inside one layer', () => {
    const dir = plantedCopy('cli/open-function.ts', "import type { ServeOptions } from './serve.js';");
    expect(layeringViolations(importGraph(dir))).toContain('import cycle among cli/open-function.ts, cli/serve.ts');
  });

  it('a synthetic graph: an upward import and a three-file cycle', () => {
    const graph: ImportGraph = new Map([
      ['wire/a.ts', ['transport/b.ts']],
      ['transport/b.ts', ['wire/a.ts']],
      ['device/x.ts', ['device/y.ts']],
      ['device/y.ts', ['device/z.ts']],
      ['device/z.ts', ['device/x.ts']],
      ['mystery/q.ts', []],
    ]);
    expect(layeringViolations(graph).sort()).toEqual([
      'import cycle among device/x.ts, device/y.ts, device/z.ts',
      'import cycle among transport/b.ts, wire/a.ts',
      'mystery/q.ts: layer "mystery" is not in the layer table',
      'wire/a.ts imports transport/b.ts: wire may not import transport',
    ]);
    expect(importCycles(new Map([['a.ts', ['a.ts']]]))).toEqual([['a.ts']]);
  });
});
