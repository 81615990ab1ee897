import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseBar0Spec } from '../../src/cli/parse.js';
import { startDaemon, type Running, type ServeOptions } from '../../src/cli/serve.js';
import { HANG_GUARD_MS } from './patience.js';

export interface TestDaemon {
  running: Running;
  dir: string;
  socket: string;
  aperturePath: string;
  apertureSize: number;
  stop(): void;
}

/** A daemon in this process, with its aperture in a file the test can read and write. */
export function startTestDaemon(overrides: Partial<ServeOptions> = {}): TestDaemon {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-test-'));
  const apertureSize = overrides.apertureSize ?? 96 * 1024 * 1024 + 1000;
  const opts: ServeOptions = {
    socket: path.join(dir, 'gpu.sock'),
    socketMode: 0o600,
    apertureSize,
    apertureBase: 0,
    aperturePath: path.join(dir, 'aperture'),
    bar0: parseBar0Spec('emulated'),
    vendorId: 0x10de,
    logLevel: process.env['NVGRACE_TEST_LOG'] ?? 'silent',
    ...overrides,
  };
  const running = startDaemon(opts);
  return {
    running,
    dir,
    socket: opts.socket!,
    aperturePath: opts.aperturePath!,
    apertureSize,
    stop() {
      running.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Polls `cond` on the event loop until it holds (the daemon runs in this process). */
export async function until(cond: () => boolean, what: string, timeoutMs = HANG_GUARD_MS): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
