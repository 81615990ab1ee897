#!/usr/bin/env node
// npm run fuzz -- --seconds N [--seed S]: runs the socket fuzzer
// (test/server/fuzz.test.ts) for N seconds against a daemon in the test process.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
let seconds = 60;
let seed;
for (let i = 0; i < args.length; i++) {
  const [flag, inline] = args[i].split('=', 2);
  const value = inline ?? args[++i];
  if (flag === '--seconds' && /^\d+$/.test(value ?? '') && Number(value) > 0) seconds = Number(value);
  else if (flag === '--seed' && /^\d+$/.test(value ?? '')) seed = value;
  else {
    console.error('usage: npm run fuzz -- --seconds N [--seed S]');
    process.exit(2);
  }
}

const root = fileURLToPath(new URL('..', import.meta.url));
const vitest = fileURLToPath(new URL('../node_modules/vitest/vitest.mjs', import.meta.url));
const env = { ...process.env, NVGRACE_FUZZ_SECONDS: String(seconds) };
if (seed !== undefined) env.NVGRACE_FUZZ_SEED = seed;
const r = spawnSync(process.execPath, [vitest, 'run', 'test/server/fuzz.test.ts'], { cwd: root, env, stdio: 'inherit' });
process.exit(r.status ?? 1);
