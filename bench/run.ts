/**
 * `npm run bench`: measures what the daemon itself costs against the physical
 * floor on the same machine, in the same run, and writes a markdown table, JSON
 * and an SVG chart (bench/results/ unless --out DIR).
 *
 *   --quick      tiny sizes and 1-2 runs: checks that everything works (seconds)
 *   --runs N     runs per figure (default 9)
 *   --only LIST  comma-separated suites: socket, startup, mapped, scrub
 *   --out DIR    where the results go
 *   --no-huge-pages  leave out the two scrub figures on huge pages (for an emulator
 *                that cannot map them; the tests pass it for the listed gap)
 *
 * As root it grows the 2 MiB huge page pool for the scrub figure on huge pages
 * and gives the pages back (the tests' lock and increments); otherwise that
 * figure is left out.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { Figure } from './figures.js';
import { buildHarness } from './harness.js';
import { describeMachine } from './machine.js';
import { repoRoot } from './paths.js';
import { markdown, svg, type BenchResult } from './report.js';
import { config, mappedSuite, scrubSuite, socketSuite, startupSuite, type Context } from './suites.js';

const SUITES = ['socket', 'startup', 'mapped', 'scrub'] as const;

function log(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

/** The compiled daemon and its native addon, built if missing. */
function ensureBuilt(): void {
  if (!fs.existsSync(path.join(repoRoot, 'build', 'Release', 'nvgrace_native.node'))) {
    log('native addon missing: npm rebuild');
    execFileSync('npm', ['rebuild'], { cwd: repoRoot, stdio: 'inherit' });
  }
  if (!fs.existsSync(path.join(repoRoot, 'dist', 'cli', 'main.js'))) {
    log('dist/ missing: npm run build');
    execFileSync('npm', ['run', 'build'], { cwd: repoRoot, stdio: 'inherit' });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      runs: { type: 'string' },
      only: { type: 'string' },
      out: { type: 'string' },
      'no-huge-pages': { type: 'boolean', default: false },
    },
  });
  const runs = values.runs === undefined ? undefined : Number(values.runs);
  if (runs !== undefined && (!Number.isInteger(runs) || runs < 1)) throw new Error(`--runs ${values.runs}: a positive integer`);
  const only = values.only ? values.only.split(',') : [...SUITES];
  for (const s of only) if (!(SUITES as readonly string[]).includes(s)) throw new Error(`--only: unknown suite ${s} (${SUITES.join(', ')})`);
  const outDir = path.resolve(values.out ?? path.join(repoRoot, 'bench', 'results'));
  const cfg = config(values.quick, runs);

  const started = Date.now();
  ensureBuilt();
  const harness = buildHarness(log);
  const machine = describeMachine(execFileSync('gcc', ['-dumpfullversion'], { encoding: 'utf8' }).trim());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-bench-'));
  const shmDir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'nvgrace-bench-'));
  const ctx: Context = { cfg, harness, dir, shmDir, log };
  const figures: Figure[] = [];
  try {
    if (only.includes('socket')) figures.push(...(await socketSuite(ctx)));
    if (only.includes('startup')) figures.push(...startupSuite(ctx));
    const memory = path.join(shmDir, 'aperture');
    if (only.includes('mapped')) figures.push(...(await mappedSuite(ctx, memory)));
    if (only.includes('scrub')) figures.push(...(await scrubSuite(ctx, !values['no-huge-pages'])));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(shmDir, { recursive: true, force: true });
  }
  machine.loadEnd = os.loadavg()[0]!;

  const result: BenchResult = {
    tool: 'nvgrace-vfio-user bench',
    mode: cfg.quick ? 'quick' : 'full',
    runs: cfg.runs,
    startedAt: new Date(started).toISOString(),
    durationS: (Date.now() - started) / 1000,
    machine,
    figures,
  };
  fs.mkdirSync(outDir, { recursive: true });
  const md = markdown(result);
  fs.writeFileSync(path.join(outDir, 'bench.json'), JSON.stringify(result, null, 2) + '\n');
  fs.writeFileSync(path.join(outDir, 'bench.md'), md);
  fs.writeFileSync(path.join(outDir, 'bench.svg'), svg(result));
  process.stdout.write(md);
  log(`results in ${outDir} (bench.md, bench.json, bench.svg)`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
