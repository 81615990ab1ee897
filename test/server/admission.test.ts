// Who gets the device: a client that never negotiates is dropped after
// --negotiate-timeout, an idle negotiated one never is; a client arriving while
// the previous one is torn down waits for it, a second client beside a live
// one is refused.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { VfioUserClient } from '../../src/client/client.js';
import { native } from '../../src/native/native.js';
import { Command, HEADER_SIZE, MsgType, RegionIndex } from '../../src/wire/constants.js';
import { encodeRegionWrite, encodeVersion } from '../../src/wire/serializer.js';
import { QEMU_LIKE_CAPS } from '../../src/client/client.js';
import { spawnCli, waitForLog } from '../helpers/cli.js';
import { startTestDaemon, until, type TestDaemon } from '../helpers/daemon.js';
import { RawPeer, errnoOf, rawMessage } from '../helpers/raw-peer.js';
import { isListening } from '../service/helpers.js';

const BAR2 = RegionIndex.BAR2;

describe('--negotiate-timeout', () => {
  let d: TestDaemon | null = null;
  afterEach(() => {
    vi.useRealTimers();
    d?.stop();
    d = null;
  });

  it('drops a client that never sends VERSION, and one that sends half of it; a real client then gets in', async () => {
    d = startTestDaemon({ negotiateTimeoutMs: 200 });
    const daemon = d.running.daemon;
    const silent = RawPeer.connect(d.socket);
    await until(() => daemon.client !== null, 'silent client attached');
    expect(await silent.closed(10_000)).toBe('peer closed');
    await until(() => daemon.client === null, 'silent client gone');

    const half = RawPeer.connect(d.socket);
    const version = encodeVersion(1, MsgType.COMMAND, 0, 0, QEMU_LIKE_CAPS);
    await half.send(version.subarray(0, HEADER_SIZE + 3));
    expect(await half.closed(10_000)).toBe('peer closed');
    await until(() => daemon.client === null, 'half-negotiated client gone');

    const c = VfioUserClient.connect(d.socket);
    await c.negotiate();
    expect((await c.regionRead(RegionIndex.CONFIG, 0, 2)).readUInt16LE(0)).toBe(0x10de);
    c.close();
    expect(daemon.counters.refusedConnections).toBe(0);
  });

  it('never drops an idle client once it has negotiated (fake timers stand in for the wait)', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    d = startTestDaemon({ negotiateTimeoutMs: 5000, limits: undefined });
    const daemon = d.running.daemon;
    const idle = RawPeer.connect(d.socket);
    await idle.negotiate();
    await vi.advanceTimersByTimeAsync(3_600_000); // an hour without a word
    expect(idle.closedReason).toBeNull();
    const r = await idle.request(rawMessage(Command.DEVICE_GET_INFO, Buffer.from([16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])));
    expect(errnoOf(r)).toBe(0);
    idle.close();
    await vi.advanceTimersByTimeAsync(10);
    for (let i = 0; i < 100 && daemon.client !== null; i++) await new Promise((res) => setImmediate(res));
    expect(daemon.client).toBeNull();

    // the same wait drops a client that has not negotiated: the fake clock does drive the daemon's timer
    const silent = RawPeer.connect(d.socket);
    for (let i = 0; i < 100 && daemon.client === null; i++) await new Promise((res) => setImmediate(res));
    expect(daemon.client).not.toBeNull();
    await vi.advanceTimersByTimeAsync(5000);
    for (let i = 0; i < 100 && silent.closedReason === null; i++) await new Promise((res) => setImmediate(res));
    expect(silent.closedReason).toBe('peer closed');
  });

  it('logs the drop in one line; the flag also comes from the environment', async () => {
    const dir = (await import('node:fs')).mkdtempSync((await import('node:path')).join((await import('node:os')).tmpdir(), 'nvgrace-negotiate-'));
    const socket = `${dir}/gpu.sock`;
    const daemon = spawnCli(['serve', '--socket', socket, '--aperture-size', '8M'], { ...process.env, NVGRACE_VFIO_USER_NEGOTIATE_TIMEOUT: '1' });
    try {
      await until(() => isListening(socket), 'listening', 10_000);
      const silent = RawPeer.connect(socket);
      await silent.closed(10_000);
      await waitForLog(daemon, 'client disconnected');
      const lines = daemon.out.stderr.split('\n').filter((l) => l.includes('"client":'));
      // connected, then the drop: one warning that says why
      expect(lines.map((l) => JSON.parse(l).msg)).toEqual(['client connected', 'client disconnected']);
      const drop = JSON.parse(lines[1]!);
      expect(drop.level).toBe(40);
      expect(drop.reason).toBe('no VERSION within 1 s of connecting (--negotiate-timeout): dropped');
    } finally {
      daemon.kill('SIGKILL');
      (await import('node:fs')).rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('one tenant at a time', () => {
  let d: TestDaemon | null = null;
  afterEach(() => {
    d?.stop();
    d = null;
  });

  it('lets a client that arrives while the previous one is torn down (and scrubbed) wait for it, not refuses it', async () => {
    d = startTestDaemon({ scrub: 'on-release' });
    const daemon = d.running.daemon;
    const a = RawPeer.connect(d.socket);
    await a.negotiate();
    // posted writes that take the daemon many batches to read, then A hangs up and B connects at once
    const writes = Buffer.concat(Array.from({ length: 2000 }, (_, i) => encodeRegionWrite(i, BAR2, 8 * i, Buffer.from('written!'), true)));
    await a.send(writes);
    a.close();
    const b = VfioUserClient.connect(d.socket);
    await b.negotiate();
    expect(daemon.counters.refusedConnections).toBe(0);
    expect(daemon.counters.connections).toBe(2);
    expect(daemon.counters.messageCount(Command.REGION_WRITE)).toBe(2000); // A's last messages were all read
    // the on-release scrub ran between them
    expect((await b.regionRead(BAR2, 0, 8)).equals(Buffer.alloc(8))).toBe(true);
    expect((await b.regionRead(BAR2, 8 * 1999, 8)).equals(Buffer.alloc(8))).toBe(true);
    b.close();
  });

  it('still refuses a second client while the first is attached and alive', async () => {
    d = startTestDaemon();
    const daemon = d.running.daemon;
    const a = VfioUserClient.connect(d.socket);
    await a.negotiate();
    const b = RawPeer.connect(d.socket);
    expect(await b.closed()).toBe('peer closed');
    expect(daemon.counters.refusedConnections).toBe(1);
    expect((await a.regionRead(RegionIndex.CONFIG, 0, 2)).readUInt16LE(0)).toBe(0x10de);
    a.close();
    await until(() => daemon.client === null, 'first client gone');
    expect(native.fdCount()).toBeGreaterThan(0);
  });
});
