import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { HANG_GUARD_MS } from './patience.js';

export const CLI = fileURLToPath(new URL('../../bin/nvgrace-vfio-user.js', import.meta.url));

export interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], timeoutMs = HANG_GUARD_MS): Promise<Finished> {
  return finished(spawnCli(args), timeoutMs);
}

export function spawnCli(args: string[], env?: NodeJS.ProcessEnv): ChildProcess & { out: { stdout: string; stderr: string } } {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...(env ? { env } : {}) }) as ChildProcess & {
    out: { stdout: string; stderr: string };
  };
  child.out = { stdout: '', stderr: '' };
  child.stdout!.on('data', (b: Buffer) => (child.out.stdout += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (child.out.stderr += b.toString()));
  return child;
}

export function finished(child: ReturnType<typeof spawnCli>, timeoutMs = HANG_GUARD_MS): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`CLI did not finish in ${timeoutMs} ms: ${child.out.stderr}`));
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      // let the pipes drain
      setImmediate(() => resolve({ code, signal, stdout: child.out.stdout, stderr: child.out.stderr }));
    });
  });
}

/** Waits until the daemon logs a line containing `text`. */
export async function waitForLog(child: ReturnType<typeof spawnCli>, text: string, timeoutMs = HANG_GUARD_MS): Promise<void> {
  const start = Date.now();
  while (!child.out.stderr.includes(text)) {
    if (child.exitCode !== null) throw new Error(`daemon exited (${child.exitCode}): ${child.out.stderr}`);
    if (Date.now() - start > timeoutMs) throw new Error(`no "${text}" in log: ${child.out.stderr}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Waits until the daemon's log holds `count` lines containing `text`. */
export async function waitForLogCount(child: ReturnType<typeof spawnCli>, text: string, count: number, timeoutMs = HANG_GUARD_MS): Promise<void> {
  const start = Date.now();
  while (child.out.stderr.split(text).length - 1 < count) {
    if (child.exitCode !== null) throw new Error(`daemon exited (${child.exitCode}): ${child.out.stderr}`);
    if (Date.now() - start > timeoutMs) throw new Error(`fewer than ${count} "${text}" in log: ${child.out.stderr}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
