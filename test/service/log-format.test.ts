// Logs: JSON lines for journald, readable lines on a terminal.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatLogLine } from '../../src/log-format.js';
import { CLI } from '../helpers/cli.js';
import { HANG_GUARD_MS } from '../helpers/patience.js';

describe('formatLogLine', () => {
  const t = new Date(2026, 0, 2, 3, 4, 5, 67).getTime();

  it('puts time, level and message first, then the fields', () => {
    const line = JSON.stringify({ level: 30, time: t, pid: 1, hostname: 'h', service: 'nvgrace-vfio-user', msg: 'client connected', pid2: 42, peer: { uid: 0 }, path: '/a b' });
    expect(formatLogLine(line)).toBe('03:04:05.067 INFO  client connected pid2=42 peer={"uid":0} path="/a b"\n');
  });

  it('colours the level on request and shows an error with its stack', () => {
    const line = JSON.stringify({ level: 50, time: t, msg: 'request failed', err: { type: 'Error', message: 'boom', stack: 'Error: boom\n    at f (x.js:1:1)' } });
    expect(formatLogLine(line, true)).toBe('03:04:05.067 \x1b[31mERROR\x1b[0m request failed err=boom\n    at f (x.js:1:1)\n');
  });

  it('passes through what is not JSON', () => {
    expect(formatLogLine('plain text')).toBe('plain text\n');
  });
});

describe('the daemon on a terminal', () => {
  /**
   * What the daemon writes to stderr from its start until it listens and is sent SIGTERM
   * (once it listens, not after a fixed time: under emulation it starts 20 times slower).
   * On a pseudo-terminal (script(1)) when `pty`, so stderr is a TTY there; else a pipe.
   */
  function serveBriefly(env: NodeJS.ProcessEnv, pty: boolean): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-tty-'));
    try {
      const sock = path.join(dir, 's.sock');
      const polls = HANG_GUARD_MS / 50;
      const cmd =
        `${process.execPath} ${CLI} serve --socket ${sock} & pid=$!; ` +
        `n=0; while [ ! -S ${sock} ] && [ $n -lt ${polls} ]; do sleep 0.05; n=$((n+1)); done; ` +
        `sleep 0.2; kill -TERM $pid; wait $pid`;
      const r = pty
        ? spawnSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8', env, timeout: 2 * HANG_GUARD_MS })
        : spawnSync('sh', ['-c', cmd], { encoding: 'utf8', env, timeout: 2 * HANG_GUARD_MS });
      expect(r.status, r.stderr).toBe(0);
      return pty ? r.stdout : r.stderr;
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  const underPty = (env: NodeJS.ProcessEnv) => serveBriefly(env, true);

  it('writes readable lines, not JSON, when stderr is a TTY', () => {
    const out = underPty({ ...process.env, NO_COLOR: '1' });
    expect(out).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO  listening socket=\S+s\.sock\r?$/m);
    expect(out).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO  device ready vendor=0x10de device=0x2342 /m);
    expect(out).toMatch(/INFO  stopped/);
    expect(out).not.toContain('{"level"');
    expect(out).not.toContain('\x1b[');
  });

  it('colours the level unless NO_COLOR is set', () => {
    const env = { ...process.env };
    delete env['NO_COLOR'];
    expect(underPty(env)).toContain('\x1b[32mINFO \x1b[0m listening');
  });

  it('writes JSON when stderr is not a TTY', () => {
    const lines = serveBriefly(process.env, false).trim().split('\n');
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 30, msg: 'listening' });
    expect(JSON.parse(lines.at(-1)!)).toMatchObject({ level: 30, msg: 'stopped' });
  });
});
