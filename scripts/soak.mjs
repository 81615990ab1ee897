#!/usr/bin/env node
// npm run soak -- --minutes N [--seed S]: hostile clients (the socket fuzzer's
// bursts) against a daemon process for N minutes, printing its RSS, heap and
// fds every 30 s, then whether the second half grew (test/server/endurance.test.ts).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
let minutes = 20;
let seed;
for (let i = 0; i < args.length; i++) {
  const [flag, inline] = args[i].split('=', 2);
  const value = inline ?? args[++i];
  if (flag === '--minutes' && /^\d+$/.test(value ?? '') && Number(value) > 0) minutes = Number(value);
  else if (flag === '--seed' && /^\d+$/.test(value ?? '')) seed = value;
  else {
    console.error('usage: npm run soak -- --minutes N [--seed S]');
    process.exit(2);
  }
}

const root = fileURLToPath(new URL('..', import.meta.url));
const vitest = fileURLToPath(new URL('../node_modules/vitest/vitest.mjs', import.meta.url));
const env = { ...process.env, NVGRACE_SOAK_MINUTES: String(minutes) };
if (seed !== undefined) env.NVGRACE_SOAK_SEED = seed;
const r = spawnSync(process.execPath, [vitest, 'run', 'test/server/endurance.test.ts'], { cwd: root, env, stdio: 'inherit' });
process.exit(r.status ?? 1);
