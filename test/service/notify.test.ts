// The daemon as a Type=notify service: the test plays systemd's part by
// listening on NOTIFY_SOCKET and reading what the daemon reports.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../src/client/client.js';
import { finished, spawnCli, waitForLog } from '../helpers/cli.js';
import pino from 'pino';
import { ServiceNotifier, watchdogInterval } from '../../src/service/notify.js';
import { NotifyReceiver } from './helpers.js';

describe('sd_notify', () => {
  let dir: string;
  let receiver: NotifyReceiver | null = null;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-notify-'));
  });
  afterEach(() => {
    receiver?.close();
    receiver = null;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it.each([
    ['a filesystem socket', (d: string) => path.join(d, 'notify')],
    ['an abstract socket', () => `@nvgrace-notify-test-${process.pid}-${Date.now()}`],
  ])('reports READY, STATUS as clients come and go, watchdog pings and STOPPING through %s', async (_what, address) => {
    receiver = new NotifyReceiver(address(dir));
    const socket = path.join(dir, 'gpu.sock');
    const daemon = spawnCli(['serve', '--socket', socket], {
      ...process.env,
      NOTIFY_SOCKET: receiver.address,
      WATCHDOG_USEC: '200000',
      WATCHDOG_PID: '', // unset-equivalent: the pings are for whoever runs
    });
    try {
      const ready = await receiver.waitFor(/READY=1/);
      expect(ready).toContain('STATUS=waiting for a client');
      expect(fs.existsSync(socket)).toBe(true); // READY only once it listens
      await receiver.waitFor(/^WATCHDOG=1$/);

      const client = VfioUserClient.connect(socket);
      await client.negotiate();
      await receiver.waitFor(new RegExp(`^STATUS=client pid ${process.pid} attached$`));
      client.close();
      await receiver.waitFor(/^STATUS=waiting for a client$/, receiver.messages.indexOf(ready) + 1);

      // pings keep coming at about half the 200 ms period
      const pingsBefore = receiver.messages.filter((m) => m === 'WATCHDOG=1').length;
      await new Promise((r) => setTimeout(r, 450));
      receiver.drain();
      expect(receiver.messages.filter((m) => m === 'WATCHDOG=1').length - pingsBefore).toBeGreaterThanOrEqual(2);

      daemon.kill('SIGTERM');
      const r = await finished(daemon);
      expect(r.code).toBe(0);
      const stopping = await receiver.waitFor(/STOPPING=1/);
      expect(stopping).toContain('STATUS=stopping');
      // nothing after STOPPING=1 but, at most, nothing: the watchdog stops first
      const after = receiver.messages.slice(receiver.messages.indexOf(stopping) + 1);
      expect(after.filter((m) => m.startsWith('WATCHDOG'))).toEqual([]);
    } finally {
      daemon.kill('SIGKILL');
    }
  });

  it('reports a start-up scrub, extending the start timeout, before READY=1', async () => {
    receiver = new NotifyReceiver(path.join(dir, 'notify'));
    const socket = path.join(dir, 'gpu.sock');
    const aperture = path.join(dir, 'aperture');
    fs.writeFileSync(aperture, Buffer.alloc(8 * 1024 * 1024, 0x5a));
    const daemon = spawnCli(['serve', '--socket', socket, '--scrub', 'on-start', '--aperture-path', aperture, '--aperture-size', '8M'], {
      ...process.env,
      NOTIFY_SOCKET: receiver.address,
    });
    try {
      const ready = await receiver.waitFor(/READY=1/);
      const before = receiver.messages.slice(0, receiver.messages.indexOf(ready));
      expect(before[0]).toMatch(/^STATUS=scrubbing 0%\nEXTEND_TIMEOUT_USEC=\d+$/);
      expect(before).toContain('STATUS=scrubbing 100%\nEXTEND_TIMEOUT_USEC=30000000');
      expect(ready).toContain('STATUS=waiting for a client');
      expect(fs.readFileSync(aperture).equals(Buffer.alloc(8 * 1024 * 1024))).toBe(true);
    } finally {
      daemon.kill('SIGTERM');
      await finished(daemon);
    }
  });

  it('keeps serving, with one warning, when NOTIFY_SOCKET points nowhere', async () => {
    const socket = path.join(dir, 'gpu.sock');
    const daemon = spawnCli(['serve', '--socket', socket], { ...process.env, NOTIFY_SOCKET: path.join(dir, 'nobody') });
    try {
      await waitForLog(daemon, 'device ready');
      const client = VfioUserClient.connect(socket);
      await client.negotiate();
      client.close();
      daemon.kill('SIGTERM');
      const r = await finished(daemon);
      expect(r.code).toBe(0);
      expect(r.stderr.match(/cannot notify the service manager/g)).toHaveLength(1);
    } finally {
      daemon.kill('SIGKILL');
    }
  });
});

describe('watchdogInterval', () => {
  it('uses WATCHDOG_USEC only when WATCHDOG_PID is unset or this process', () => {
    expect(watchdogInterval({ WATCHDOG_USEC: '30000000' }, 7)).toBe(30_000_000);
    expect(watchdogInterval({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '7' }, 7)).toBe(30_000_000);
    expect(watchdogInterval({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '8' }, 7)).toBeNull();
    expect(watchdogInterval({ WATCHDOG_USEC: '0' }, 7)).toBeNull();
    expect(watchdogInterval({ WATCHDOG_USEC: 'soon' }, 7)).toBeNull();
    expect(watchdogInterval({}, 7)).toBeNull();
  });

  it('a notifier without NOTIFY_SOCKET sends nothing and starts no timer', () => {
    const n = ServiceNotifier.fromEnv(pino({ level: 'silent' }), { WATCHDOG_USEC: '1000' }, 7);
    expect(n.enabled).toBe(false);
    n.startWatchdog();
    n.notifyReady();
    n.status('x');
    n.stopping();
  });
});
