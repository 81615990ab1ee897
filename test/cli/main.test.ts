import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { native } from '../../src/native/native.js';
import { finished, runCli, spawnCli, waitForLog } from '../helpers/cli.js';

describe('command line', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-cli-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('shows help with examples', async () => {
    const r = await runCli(['serve', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('--aperture-size');
    expect(r.stdout).toContain('Examples:');
    expect(r.stdout).toContain('vfio-user-pci');
  });

  it.each([
    [['serve', '--socket', 'x', '--aperture-size', 'lots']],
    [['serve', '--socket', 'x', '--bogus']],
    [['serve']],
    [['serve', '--socket', 'x', '--bar0', 'magic']],
    [['serve', '--socket', 'x', '--bar0', 'vfio:gpu0']],
    [['serve', '--socket', 'x', '--bar0', 'sysfs:/dev/mem']],
    [['serve', '--socket', 'x', '--ready-wait', 'sometimes']],
    [['serve', '--socket', 'x', '--ready-timeout', '0']],
    [['serve', '--socket', 'x', '--device-id', '0x12345']],
    [['frobnicate']],
  ])('rejects bad usage %j with one line and exit 2', async (args) => {
    const r = await runCli(args);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/error/i);
  });

  it('a host device that is not there, or not on vfio-pci, is one line and exit 1', async () => {
    const r = await runCli(['serve', '--socket', path.join(dir, 'gpu.sock'), '--bar0', 'vfio:0000:fe:1f.7']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n').at(-1)).toBe('nvgrace-vfio-user: no PCI device 0000:fe:1f.7 on this host (lspci -D lists them)');
    expect(fs.existsSync(path.join(dir, 'gpu.sock'))).toBe(false);
  });

  it('serves, answers inspect, and exits 0 on SIGTERM removing its socket', async () => {
    const socket = path.join(dir, 'gpu.sock');
    const daemon = spawnCli(['serve', '--socket', socket, '--aperture-size', '96M']);
    await waitForLog(daemon, 'device ready');
    expect(fs.statSync(socket).mode & 0o777).toBe(0o600);
    const r = await runCli(['inspect', '--socket', socket]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/region 2 BAR2: size 128 MiB/);
    expect(r.stdout).toMatch(/mmap area 0x0\.\.0x6000000 \(96 MiB\)/);
    expect(r.stdout).toMatch(/vendor 0x10de device 0x2342 class 0x030200/);
    await waitForLog(daemon, 'client disconnected');
    daemon.kill('SIGTERM');
    const done = await finished(daemon);
    expect(done.code).toBe(0);
    expect(fs.existsSync(socket)).toBe(false);
    // every log line is JSON
    for (const line of done.stderr.trim().split('\n')) expect(() => JSON.parse(line)).not.toThrow();
  });

  it('replaces a stale socket and refuses a live one or a non-socket', async () => {
    const socket = path.join(dir, 'gpu.sock');
    // a stale socket: bound, then its owner is gone
    const fd = native.listenUnix(socket, 1, 0o600);
    native.closeFd(fd);
    const daemon = spawnCli(['serve', '--socket', socket]);
    await waitForLog(daemon, 'listening');
    const second = await runCli(['serve', '--socket', socket]);
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/in use by a running daemon/);
    daemon.kill('SIGINT');
    expect((await finished(daemon)).code).toBe(0);

    const plain = path.join(dir, 'plain');
    fs.writeFileSync(plain, 'keep me');
    const r = await runCli(['serve', '--socket', plain]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not a socket/);
    expect(fs.readFileSync(plain, 'utf8')).toBe('keep me');
  });

  it('refuses an aperture file too small for base + size, in one line', async () => {
    const file = path.join(dir, 'small');
    fs.writeFileSync(file, Buffer.alloc(4096));
    const r = await runCli(['serve', '--socket', path.join(dir, 's.sock'), '--aperture-path', file, '--aperture-size', '1M']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/holds 4096 bytes/);
  });
});
