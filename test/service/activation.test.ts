// Socket activation as systemd does it, through systemd-socket-activate: it
// binds the socket, and on the first connection execs the daemon with the
// listening socket as fd 3 (LISTEN_FDS=1, LISTEN_PID = the daemon).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../src/client/client.js';
import { ActivationError, LISTEN_FDS_START, takeListenFd } from '../../src/service/activation.js';
import { RegionIndex } from '../../src/wire/constants.js';
import { finished } from '../helpers/cli.js';
import { activate, ensureSystemdTools, isListening, untilChild as until } from './helpers.js';

beforeAll(() => ensureSystemdTools(), 300_000);

describe('socket activation', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-activate-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('serves a client on the socket systemd passed, flags from the environment, and leaves the socket file alone', async () => {
    const socket = path.join(dir, 'gpu0.sock');
    const daemon = activate(socket, [], {
      NVGRACE_VFIO_USER_APERTURE_SIZE: '48M',
      NVGRACE_VFIO_USER_DEVICE_ID: '2345',
    });
    try {
      await until(() => isListening(socket), 'the activator to listen', daemon);
      const ino = fs.statSync(socket).ino;
      // The daemon is not running yet: this connection starts it.
      const client = VfioUserClient.connect(socket);
      await client.negotiate();
      const { info, fd } = await client.regionInfo(RegionIndex.BAR2);
      expect(fd).not.toBeNull();
      expect(info.size).toBe(64 * 1024 * 1024); // 48 MiB of memory, rounded up
      expect(info.sparseAreas).toEqual([{ offset: 0, size: 48 * 1024 * 1024 }]);
      const cfg = await client.regionRead(RegionIndex.CONFIG, 0, 4);
      expect(cfg.readUInt16LE(2)).toBe(0x2345);
      client.close();
      expect(daemon.out.stderr).toContain('listening on the socket passed by the service manager');
      expect(daemon.out.stderr).toContain(`"socket":"${socket}"`);

      // The same socket serves the next client: the daemon keeps it.
      const again = VfioUserClient.connect(socket);
      await again.negotiate();
      again.close();

      daemon.kill('SIGTERM');
      const r = await finished(daemon);
      expect(r.code).toBe(0);
      expect(fs.statSync(socket).ino).toBe(ino); // systemd's, not ours to unlink
    } finally {
      daemon.kill('SIGKILL');
    }
  });

  it('refuses a --socket that is not the one passed', async () => {
    const socket = path.join(dir, 'gpu0.sock');
    const daemon = activate(socket, ['--socket', path.join(dir, 'other.sock')]);
    try {
      await until(() => isListening(socket), 'the activator to listen', daemon);
      const client = VfioUserClient.connect(socket);
      await expect(client.negotiate()).rejects.toThrow(/closed/);
      const r = await finished(daemon);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/is not the socket the service manager passed/);
    } finally {
      daemon.kill('SIGKILL');
    }
  });
});

describe('takeListenFd', () => {
  it('takes fd 3 when LISTEN_PID is this process, and clears the variables', () => {
    const env: NodeJS.ProcessEnv = { LISTEN_PID: '123', LISTEN_FDS: '1', LISTEN_FDNAMES: 'gpu0' };
    expect(takeListenFd(env, 123)).toBe(LISTEN_FDS_START);
    expect(env).toEqual({});
  });

  it('ignores variables meant for another process, or none', () => {
    const env: NodeJS.ProcessEnv = { LISTEN_PID: '99', LISTEN_FDS: '1' };
    expect(takeListenFd(env, 123)).toBeNull();
    expect(env['LISTEN_FDS']).toBe('1');
    expect(takeListenFd({}, 123)).toBeNull();
    expect(takeListenFd({ LISTEN_PID: '123', LISTEN_FDS: '0' }, 123)).toBeNull();
  });

  it('refuses several sockets or a malformed count', () => {
    expect(() => takeListenFd({ LISTEN_PID: '5', LISTEN_FDS: '2' }, 5)).toThrow(ActivationError);
    expect(() => takeListenFd({ LISTEN_PID: '5', LISTEN_FDS: 'x' }, 5)).toThrow(/not a count/);
  });
});
