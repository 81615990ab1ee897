// The README's Design sketch is what a newcomer reads first: it must name every layer of
// src/ and list them in an order the layer table (layers.ts) agrees with.
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { LAYERS } from './layers.js';

const README = fs.readFileSync(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8');
const SRC = fileURLToPath(new URL('../../src', import.meta.url));

/** The layers the Design sketch lists, top first: `src/NAME/` lines, and `src/log*.ts` as `log`. */
function sketchLayers(readme: string): string[] {
  const design = /^## Design\n+```\n([\s\S]*?)\n```/m.exec(readme);
  if (design === null) throw new Error('README has no Design section with a code block');
  return design[1]!
    .split('\n')
    .map((line) => /^src\/(\w+)\/|^src\/(log)\*\.ts/.exec(line))
    .filter((m) => m !== null)
    .map((m) => m![1] ?? m![2]!);
}

/** Pairs (layer, dependency) the sketch lists upside down: "imports point down this list". */
function upwardImports(order: readonly string[]): string[] {
  const bad: string[] = [];
  for (const [layer, deps] of Object.entries(LAYERS)) {
    for (const dep of deps) if (order.indexOf(dep) < order.indexOf(layer)) bad.push(`${layer} -> ${dep}`);
  }
  return bad;
}

describe("the README's Design sketch", () => {
  it('names every folder of src/ (and the logger), each once, and nothing else', () => {
    const listed = sketchLayers(README);
    const folders = fs.readdirSync(SRC, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    expect([...listed].sort()).toEqual([...folders, 'log'].sort());
    expect(Object.keys(LAYERS).sort()).toEqual([...listed].sort());
  });

  it('lists the layers so that every import the table allows points down the list', () => {
    expect(upwardImports(sketchLayers(README))).toEqual([]);
  });

  it('fails on a sketch that lists a layer above one it may not import', () => {
    const listed = sketchLayers(README);
    const swapped = [...listed];
    const i = swapped.indexOf('device');
    const j = swapped.indexOf('backends');
    [swapped[i], swapped[j]] = [swapped[j]!, swapped[i]!];
    expect(upwardImports(swapped)).toContain('backends -> device');
    expect(sketchLayers(README.replace(/^src\/wire\/.*\n/m, ''))).not.toContain('wire');
  });
});
