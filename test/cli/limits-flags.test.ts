import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RequestError, VfioUserClient } from '../../src/client/client.js';
import { native } from '../../src/native/native.js';
import { DmaMapFlag } from '../../src/wire/constants.js';
import { finished, runCli, spawnCli, waitForLog } from '../helpers/cli.js';

describe('client limit flags', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-limits-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it.each([
    [['--max-client-fds', '0']],
    [['--max-client-fds', 'many']],
    [['--tenant-exit-timeout', '-1']],
    [['--tenant-exit-timeout', '1.5']],
    [['--negotiate-timeout', '-1']],
    [['--negotiate-timeout', 'soon']],
  ])('rejects %j with one line and exit 2', async (flags) => {
    const r = await runCli(['serve', '--socket', path.join(dir, 's.sock'), ...flags]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('--max-client-fds caps the fds a client makes the daemon hold', async () => {
    const socket = path.join(dir, 'gpu.sock');
    const daemon = spawnCli(['serve', '--socket', socket, '--aperture-size', '8M', '--max-client-fds', '2', '--tenant-exit-timeout', '0']);
    await waitForLog(daemon, 'device ready');
    const ram = native.memfdCreate('ram', 0);
    fs.ftruncateSync(ram, 1 << 20);
    const c = VfioUserClient.connect(socket);
    try {
      await c.negotiate();
      const rw = DmaMapFlag.READ | DmaMapFlag.WRITE;
      const page = native.pageSize();
      await c.dmaMap(0x100000, page, rw, ram, 0);
      await c.dmaMap(0x200000, page, rw, ram, page);
      const err = await c.dmaMap(0x300000, page, rw, ram, 2 * page).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RequestError);
      expect((err as RequestError).errno).toBe(24); // EMFILE
      await c.dmaMap(0x400000, page, DmaMapFlag.READ); // a map without an fd holds none
    } finally {
      c.close();
      native.closeFd(ram);
    }
    daemon.kill('SIGTERM');
    expect((await finished(daemon)).code).toBe(0);
  });
});
