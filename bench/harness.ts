import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from './paths.js';

const SOURCES = ['proto.h', 'proto.c', 'client.h', 'client.c', 'floor.h', 'floor.c', 'harness.c'];
const CFLAGS = ['-std=gnu11', '-O2', '-Wall', '-Wextra', '-Werror'];

function gccVersion(): string | null {
  const r = spawnSync('gcc', ['-dumpfullversion'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

/** gcc, installed from Debian with bench/install-deps.sh when it is missing. */
export function ensureCompiler(log: (line: string) => void): string {
  let version = gccVersion();
  if (version) return version;
  log('gcc not found: installing it (bench/install-deps.sh)');
  execFileSync('bash', [path.join(repoRoot, 'bench', 'install-deps.sh')], { stdio: 'inherit' });
  version = gccVersion();
  if (!version) throw new Error('gcc is still missing after bench/install-deps.sh');
  return version;
}

/**
 * The C harness binary, compiled once per distinct source and compiler and
 * cached under .cache/bench/.
 */
export function buildHarness(log: (line: string) => void): string {
  const gcc = ensureCompiler(log);
  const dir = path.join(repoRoot, 'bench', 'c');
  const hash = createHash('sha256').update(gcc).update(CFLAGS.join(' '));
  for (const f of SOURCES) hash.update(f).update(fs.readFileSync(path.join(dir, f)));
  const cacheDir = path.join(repoRoot, '.cache', 'bench');
  const bin = path.join(cacheDir, `harness-${hash.digest('hex').slice(0, 16)}`);
  if (fs.existsSync(bin)) return bin;
  fs.mkdirSync(cacheDir, { recursive: true });
  const tmp = `${bin}.${process.pid}.tmp`;
  log(`compiling the C harness with gcc ${gcc}`);
  execFileSync('gcc', [...CFLAGS, '-o', tmp, ...SOURCES.filter((f) => f.endsWith('.c')).map((f) => path.join(dir, f))], {
    stdio: 'inherit',
  });
  fs.renameSync(tmp, bin);
  // binaries of earlier sources are of no further use
  for (const f of fs.readdirSync(cacheDir)) {
    if (f.startsWith('harness-') && path.join(cacheDir, f) !== bin) fs.rmSync(path.join(cacheDir, f), { force: true });
  }
  return bin;
}

/** Runs one harness subcommand and parses the JSON object it prints. */
export function runHarness<T>(bin: string, args: string[], what: string, timeoutMs = 120_000): T {
  const r = spawnSync(bin, args, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 });
  if (r.error) throw new Error(`${what}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${what}: harness exited with ${r.status ?? r.signal}: ${r.stderr.trim()}`);
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`${what}: harness printed no JSON: ${r.stdout.slice(0, 200)}`);
  }
}
