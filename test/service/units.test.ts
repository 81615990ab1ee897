// The systemd units as shipped and as installed pass `systemd-analyze verify`
// (which works offline: no systemd as PID 1 needed).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { SERVICE, SOCKET, UNITS_DIR } from '../../src/cli/install-units.js';
import { CLI, runCli } from '../helpers/cli.js';
import { ensureSystemdTools } from './helpers.js';

beforeAll(() => ensureSystemdTools(), 300_000);

/** verify the gpu0 instances of the units in `unitDir`: exit code and everything it said. */
function verify(unitDir: string): { code: number | null; output: string } {
  const r = spawnSync('systemd-analyze', ['verify', '--man=no', './nvgrace-vfio-user@gpu0.service', './nvgrace-vfio-user@gpu0.socket'], {
    cwd: unitDir,
    encoding: 'utf8',
  });
  return { code: r.status, output: (r.stdout + r.stderr).trim() };
}

describe('systemd units', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-units-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('install-units puts the units and the example flags under --prefix, ExecStart on this CLI', async () => {
    const envDir = path.join(dir, 'etc/nvgrace-vfio-user');
    fs.mkdirSync(envDir, { recursive: true });
    fs.writeFileSync(path.join(envDir, 'gpu0.env'), 'NVGRACE_VFIO_USER_APERTURE_SIZE=1G\n');
    const r = await runCli(['install-units', '--prefix', dir]);
    expect(r.code).toBe(0);
    const unitDir = path.join(dir, 'etc/systemd/system');
    const service = fs.readFileSync(path.join(unitDir, SERVICE), 'utf8');
    const execStart = `ExecStart=${process.execPath} ${fs.realpathSync(CLI)} serve`;
    expect(service.split('\n').filter((l) => l.startsWith('ExecStart='))).toEqual([execStart]);
    expect(r.stdout).toContain(execStart);
    expect(fs.readFileSync(path.join(unitDir, SOCKET), 'utf8')).toBe(fs.readFileSync(path.join(UNITS_DIR, SOCKET), 'utf8'));
    expect(fs.statSync(path.join(unitDir, SERVICE)).mode & 0o777).toBe(0o644);
    expect(fs.readFileSync(path.join(envDir, 'example.env'), 'utf8')).toMatch(/^NVGRACE_VFIO_USER_APERTURE_SIZE=/m);
    // an instance's own flags are never overwritten
    expect(fs.readFileSync(path.join(envDir, 'gpu0.env'), 'utf8')).toBe('NVGRACE_VFIO_USER_APERTURE_SIZE=1G\n');

    expect(verify(unitDir)).toEqual({ code: 0, output: '' });
  });

  it('the shipped units and drop-ins verify cleanly (ExecStart stubbed)', () => {
    const stub = path.join(dir, 'nvgrace-vfio-user');
    fs.writeFileSync(stub, '#!/bin/sh\n', { mode: 0o755 });
    for (const f of [SERVICE, SOCKET]) {
      const text = fs.readFileSync(path.join(UNITS_DIR, f), 'utf8');
      fs.writeFileSync(path.join(dir, f), text.replace(/^ExecStart=\S+/m, `ExecStart=${stub}`));
    }
    expect(verify(dir)).toEqual({ code: 0, output: '' });

    const dropins = path.join(dir, `${SERVICE}.d`);
    fs.mkdirSync(dropins);
    for (const f of fs.readdirSync(path.join(UNITS_DIR, 'drop-ins'))) fs.copyFileSync(path.join(UNITS_DIR, 'drop-ins', f), path.join(dropins, f));
    expect(fs.readdirSync(dropins).sort()).toEqual(['devmem.conf', 'vfio.conf']);
    expect(verify(dir)).toEqual({ code: 0, output: '' });

    // the check can fail: a typo in a drop-in is reported
    fs.writeFileSync(path.join(dropins, 'typo.conf'), '[Service]\nDeviceAlow=/dev/mem rw\n');
    const bad = verify(dir);
    expect(bad.output).toMatch(/Unknown key 'DeviceAlow'/);
  });

  it('verify fails for a unit whose ExecStart does not exist', () => {
    const text = fs.readFileSync(path.join(UNITS_DIR, SERVICE), 'utf8');
    fs.writeFileSync(path.join(dir, SERVICE), text.replace(/^ExecStart=\S+/m, `ExecStart=${path.join(dir, 'missing')}`));
    fs.copyFileSync(path.join(UNITS_DIR, SOCKET), path.join(dir, SOCKET));
    const r = verify(dir);
    expect(r.code).not.toBe(0);
    expect(r.output).toMatch(/is not executable/);
  });

  it('the service is hardened: no capabilities, closed device policy, read-only system', () => {
    const text = fs.readFileSync(path.join(UNITS_DIR, SERVICE), 'utf8');
    for (const line of [
      'Type=notify',
      'EnvironmentFile=/etc/nvgrace-vfio-user/%i.env',
      'CapabilityBoundingSet=',
      'NoNewPrivileges=yes',
      'ProtectSystem=strict',
      'ProtectHome=yes',
      'PrivateTmp=yes',
      'DevicePolicy=closed',
    ]) {
      expect(text.split('\n')).toContain(line);
    }
    expect(text).not.toMatch(/^DeviceAllow=/m); // the default backing needs no device node
    const socket = fs.readFileSync(path.join(UNITS_DIR, SOCKET), 'utf8').split('\n');
    expect(socket).toContain('ListenStream=/run/nvgrace-vfio-user/%i.sock');
    expect(socket).toContain('SocketMode=0660');
  });
});
