// `npm run test:arm64 [-- --ci] [--page-sizes 4096,16384] [--root DIR] [-- vitest args]`
//
// Provisions the arm64 root, builds this checkout in it and runs the vitest suite there
// under qemu-user, once per page size qemu-user reports to the program (QEMU_PAGESIZE).
// test/guest is left out: it needs the x86 host's QEMU. --ci runs the part that exercises
// the native code and the protocol (CI_PATHS) to fit CI's time budget.
import fs from 'node:fs';
import path from 'node:path';
import { ensureArm64Build, interpreterFor, registeredInterpreter, registerInterpreter, runInArm64Root } from './arm64-root.js';

/** What CI runs on arm64: the binding, the protocol, the server, the device and the backings. */
export const CI_PATHS = ['test/native', 'test/wire', 'test/transport', 'test/server', 'test/device', 'test/backends'];
/**
 * Left out of the CI part: the codec's fast-check properties are pure JavaScript, the same
 * on every architecture, and took a third of the part's time under emulation (4-5 min).
 */
const CI_EXCLUDE = ['test/wire/parser.property.test.ts'];
/** 64 KiB (what NVIDIA recommends for Grace) cannot run here: QEMU from 9.0 ignores QEMU_PAGESIZE, and Node crashes (SIGSEGV) under 7.2 at 65536 (docs/testing.md). */
export const DEFAULT_PAGE_SIZES = [4096, 16384];
/**
 * Left out of the CI part after its first page size: what JavaScript allocates and keeps
 * (no allocation per trapped access; a daemon flat over 3000 hostile clients) does not
 * depend on the page size, and these two took 3.5 of the 16 KiB pass's 11 min.
 */
const CI_FIRST_PAGE_SIZE_ONLY = ['test/server/hot-path.test.ts', 'test/server/endurance.test.ts'];
/** test/guest needs the x86 host's QEMU; test/arm64 is the host side of this runner (git, unshare). */
const EXCLUDE = ['test/guest/**', 'test/arm64/**'];

interface Args {
  ci: boolean;
  pageSizes: number[];
  root: string | undefined;
  vitest: string[];
}

function parseArgs(argv: string[]): Args {
  const a: Args = { ci: false, pageSizes: [], root: undefined, vitest: [] };
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i]!;
    if (x === '--ci') a.ci = true;
    else if (x === '--page-sizes') {
      a.pageSizes = (argv[++i] ?? '').split(',').map(Number);
      if (a.pageSizes.some((n) => !Number.isInteger(n) || n < 4096 || (n & (n - 1)) !== 0)) {
        throw new Error(`--page-sizes: powers of two from 4096, comma-separated (got ${argv[i]})`);
      }
    } else if (x === '--root') a.root = argv[++i];
    else if (x === '--') a.vitest.push(...argv.slice(i + 1)), (i = argv.length);
    else a.vitest.push(x);
  }
  if (a.pageSizes.length === 0) a.pageSizes = DEFAULT_PAGE_SIZES;
  return a;
}

function minutes(ms: number): string {
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

function main(): number {
  const args = parseArgs(process.argv.slice(2));
  const t0 = Date.now();
  const build = ensureArm64Build(args.root !== undefined ? { dir: args.root } : {});
  const tBuild = Date.now() - t0;
  console.log(`arm64: ${build.dirInRoot} ready in ${minutes(tBuild)}${build.built ? ' (built)' : ' (cached)'}`);

  const paths = args.ci ? CI_PATHS : [];
  const results: Result[] = [];
  try {
    runAll(args, build, paths, results);
  } finally {
    registerInterpreter(build.root.qemuUser);
  }
  printSummary(args, build, tBuild, t0, results);
  return results.every((r) => r.ok) ? 0 : 1;
}

type Result = { pageSize: number; ok: boolean; ms: number; why: string };

function runAll(args: Args, build: ReturnType<typeof ensureArm64Build>, paths: string[], results: Result[]): void {
  for (const [i, pageSize] of args.pageSizes.entries()) {
    const interpreter = interpreterFor(build.root, pageSize);
    const exclude = [...EXCLUDE, ...(args.ci ? CI_EXCLUDE : []), ...(args.ci && i > 0 ? CI_FIRST_PAGE_SIZE_ONLY : [])];
    registerInterpreter(interpreter);
    console.log(`\narm64: vitest at ${pageSize}-byte pages under ${interpreter}${args.ci ? ` (CI part: ${paths.join(' ')})` : ' (all but test/guest)'}`);
    const t = Date.now();
    const r = runInArm64Root(
      build.root.root,
      ['node', 'node_modules/vitest/vitest.mjs', 'run', '--testTimeout=600000', '--hookTimeout=600000', '--no-isolate', ...exclude.flatMap((e) => ['--exclude', e]), ...paths, ...args.vitest],
      // dist/ is compiled with the build (its key covers src/ and tsconfig); generous hang
      // guards, as everything runs 10-30 times slower under emulation; the worker process
      // kept across files (--no-isolate), as starting one per file under emulation took
      // 40% of a pass. One worker (vitest's default on 2 cores): with two, the emulated
      // processes starve each other and time-based tests fail (docs/testing.md, Times).
      {
        cwd: build.dirInRoot,
        pageSize,
        env: { NVGRACE_DIST_PREBUILT: '1' },
      },
    );
    const ms = Date.now() - t;
    // binfmt_misc is host-wide: another process may have registered another interpreter
    // meanwhile, and then part of this run was not at this page size.
    const now = registeredInterpreter();
    const swapped = now !== interpreter ? `the aarch64 interpreter was changed to ${now} during the run` : '';
    const ok = r.status === 0 && swapped === '';
    results.push({ pageSize, ok, ms, why: ok ? '' : swapped || `exit ${r.status ?? r.signal}` });
  }
}

function printSummary(args: Args, build: ReturnType<typeof ensureArm64Build>, tBuild: number, t0: number, results: Result[]): void {
  console.log('\narm64 summary:');
  console.log(`  root and build: ${minutes(tBuild)}${build.built ? ' (built)' : ' (cached)'}`);
  for (const r of results) {
    console.log(`  ${String(r.pageSize).padStart(5)}-byte pages: ${r.ok ? 'passed' : `FAILED (${r.why})`} in ${minutes(r.ms)}`);
  }
  console.log(`  total: ${minutes(Date.now() - t0)}`);
  const summaryFile = path.join(build.root.root, 'work', '.last-run.json');
  fs.writeFileSync(summaryFile, JSON.stringify({ ci: args.ci, build: { ms: tBuild, built: build.built }, results }, null, 2));
}

process.exitCode = main();
