import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { finished, runCli, spawnCli, waitForLog } from '../helpers/cli.js';

describe('command line: --layout', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-cli-layout-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('lists the layouts in the help', async () => {
    const r = await runCli(['serve', '--help']);
    expect(r.stdout).toMatch(/--layout <layout>[\s\S]*choices:\s+"bar2",\s+"gh",\s+"gb"/); // help lines wrap anywhere
  });

  it.each([
    [['--layout', 'hopper'], /argument 'hopper' is invalid/],
    [['--layout', 'gh'], /layout gh needs at least 1\.5 GiB of memory .*not 96 MiB \(--aperture-size\)/],
    [['--layout', 'gh', '--aperture-size', '1535M'], /layout gh needs at least 1\.5 GiB/],
  ])('refuses %j with one line and exit 2, creating nothing', async (flags, message) => {
    const file = path.join(dir, 'aperture');
    const r = await runCli(['serve', '--socket', path.join(dir, 's.sock'), '--aperture-path', file, ...flags]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^error: /);
    expect(r.stderr).toMatch(message);
    expect(fs.existsSync(file)).toBe(false);
  });

  it('serves gb with the Blackwell device ID and the memory at BAR4 only', async () => {
    const socket = path.join(dir, 'gpu.sock');
    const daemon = spawnCli(['serve', '--socket', socket, '--layout', 'gb', '--aperture-size', '96M']);
    await waitForLog(daemon, 'device ready');
    const ready = daemon.out.stderr.split('\n').find((l) => l.includes('device ready'))!;
    expect(JSON.parse(ready)).toMatchObject({ layout: 'gb', device: '0x2941', bar4: { holds: 'usemem', size: '128 MiB' } });
    const r = await runCli(['inspect', '--socket', socket]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/region 4 BAR4: size 128 MiB/);
    expect(r.stdout).not.toMatch(/region 2 /);
    expect(r.stdout).toMatch(/device 0x2941/);
    daemon.kill('SIGTERM');
    expect((await finished(daemon)).code).toBe(0);
  });

  it('serves gh with usemem at BAR4 and resmem at BAR2, and warns about a Blackwell ID', async () => {
    const socket = path.join(dir, 'gpu.sock');
    const daemon = spawnCli(['serve', '--socket', socket, '--layout', 'gh', '--aperture-size', '2816M', '--device-id', '31c2']);
    await waitForLog(daemon, 'device ready');
    const lines = daemon.out.stderr.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.find((l) => l['msg'] === 'device ready')).toMatchObject({
      layout: 'gh',
      device: '0x31c2',
      bar2: { holds: 'resmem', offset: '0x60000000', memory: '1280 MiB', size: '2 GiB' },
      bar4: { holds: 'usemem', offset: '0x0', memory: '1536 MiB', size: '2 GiB' },
    });
    expect(lines.some((l) => l['level'] === 40 && String(l['msg']).includes('other GPU family'))).toBe(true);
    const r = await runCli(['inspect', '--socket', socket]);
    expect(r.stdout).toMatch(/region 2 BAR2: size 2 GiB .* fd-offset 0x60000000/);
    expect(r.stdout).toMatch(/region 4 BAR4: size 2 GiB .* fd-offset 0x0/);
    daemon.kill('SIGTERM');
    expect((await finished(daemon)).code).toBe(0);
  });
});
