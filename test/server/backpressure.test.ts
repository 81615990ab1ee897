// A client that sends and never reads: the daemon stops reading once its reply
// backlog passes the high-water mark, holds a bounded amount of memory, and
// drops the client after the stall timeout.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QEMU_LIKE_CAPS, VfioUserClient } from '../../src/client/client.js';
import { native } from '../../src/native/native.js';
import { DEFAULT_LIMITS, type ConnectionLimits } from '../../src/transport/connection.js';
import { MsgType, RegionIndex } from '../../src/wire/constants.js';
import { encodeDeviceGetInfo, encodeRegionRead, encodeVersion } from '../../src/wire/serializer.js';
import { startTestDaemon, until, type TestDaemon } from '../helpers/daemon.js';
import { collectGarbage, sleep } from '../native/helpers.js';
import { RawPeer } from '../helpers/raw-peer.js';
import { LONG_TEST_MS } from '../helpers/patience.js';

const MiB = 1024 * 1024;
const LIMITS: ConnectionLimits = { ...DEFAULT_LIMITS, stallTimeoutMs: 1000 };

/** Sends `msg` repeatedly, never reading, until the socket has refused every try for `quietMs`. */
async function floodUntilBlocked(fd: number, msg: Buffer, perSend: number, quietMs = 300): Promise<number> {
  const batch = Buffer.concat(Array.from({ length: perSend }, () => msg));
  let sent = 0;
  let blockedSince = 0;
  for (;;) {
    const n = native.sendMsg(fd, batch, 0, batch.length, null);
    if (n > 0) {
      sent += n;
      blockedSince = 0;
      if (n < batch.length) {
        // finish the partial batch so the stream stays framed
        let off = n;
        while (off < batch.length) {
          const m = native.sendMsg(fd, batch, off, batch.length - off, null);
          if (m > 0) off += m;
          else await sleep(2);
          if (off < batch.length && Date.now() - (blockedSince ||= Date.now()) > quietMs) return sent + off - n;
        }
        sent += batch.length - n;
        blockedSince = 0;
      }
      await new Promise((r) => setImmediate(r));
      continue;
    }
    blockedSince ||= Date.now();
    if (Date.now() - blockedSince > quietMs) return sent;
    await sleep(5);
  }
}

describe('a client that never reads its replies', () => {
  let d: TestDaemon;
  let baseFds: number;
  beforeEach(() => {
    d = startTestDaemon({ limits: LIMITS });
    baseFds = native.fdCount();
  });
  afterEach(() => d.stop());

  it.each([
    ['tiny replies (DEVICE_GET_INFO)', encodeDeviceGetInfo(2), 512],
    ['1 MiB replies (REGION_READ)', encodeRegionRead(3, RegionIndex.BAR2, 0, MiB), 8],
  ])('%s: bounded backlog and memory, dropped after the stall timeout', async (_name, msg, perSend) => {
    await collectGarbage();
    const heap0 = process.memoryUsage();
    const fd = native.connectUnix(d.socket);
    const v = encodeVersion(1, MsgType.COMMAND, 0, 0, QEMU_LIKE_CAPS);
    expect(native.sendMsg(fd, v, 0, v.length, null)).toBe(v.length);
    const sent = await floodUntilBlocked(fd, msg, perSend);
    const conn = d.running.daemon.client!.connection;
    expect(conn.isClosed).toBe(false);
    const backlog = conn.backlogBytes;
    // reading stopped just past the high-water mark: at most one more reply
    expect(backlog).toBeGreaterThan(LIMITS.highWaterBytes);
    expect(backlog).toBeLessThanOrEqual(LIMITS.highWaterBytes + MiB + 64);
    await collectGarbage();
    const heap1 = process.memoryUsage();
    const grew = heap1.heapUsed + heap1.arrayBuffers - heap0.heapUsed - heap0.arrayBuffers;
    console.info(`${_name}: sent ${sent} bytes, backlog ${backlog}, heap+buffers grew ${(grew / MiB).toFixed(1)} MiB`);
    expect(grew).toBeLessThan(LIMITS.highWaterBytes + 8 * MiB);
    // the daemon is not blocked meanwhile: another client is answered (refused: the device is busy)
    const other = native.connectUnix(d.socket);
    await until(() => d.running.daemon.counters.refusedConnections === 1, 'second client refused');
    native.closeFd(other);
    // and the silent client is dropped after the stall timeout (one to two of them)
    await until(() => d.running.daemon.client === null, 'stalled client dropped', LIMITS.stallTimeoutMs * 5);
    native.closeFd(fd);
    await collectGarbage();
    const heap2 = process.memoryUsage();
    expect(heap2.heapUsed + heap2.arrayBuffers - heap0.heapUsed - heap0.arrayBuffers).toBeLessThan(4 * MiB);
    expect(native.fdCount()).toBe(baseFds);
    const c = VfioUserClient.connect(d.socket);
    await c.negotiate();
    expect((await c.deviceInfo()).numRegions).toBe(9);
    c.close();
  }, LONG_TEST_MS);
});

describe('stall timeouts measure time without progress', () => {
  const STALL = 300;
  let d: TestDaemon;
  beforeEach(() => {
    d = startTestDaemon({ limits: { ...DEFAULT_LIMITS, stallTimeoutMs: STALL } });
  });
  afterEach(() => d.stop());

  it('keeps a busy client whose large messages are always arriving', async () => {
    const c = VfioUserClient.connect(d.socket);
    await c.negotiate();
    const data = Buffer.alloc(MiB, 0x5a);
    const end = Date.now() + 6 * STALL;
    let n = 0;
    while (Date.now() < end) {
      c.postRegionWrite(RegionIndex.BAR2, (n++ % 64) * MiB, data);
      await new Promise((r) => setImmediate(r));
    }
    expect((await c.regionRead(RegionIndex.BAR2, 63 * MiB, 4)).readUInt32LE(0)).toBe(0x5a5a5a5a);
    expect(c.closed).toBeNull();
    expect(d.running.daemon.client).not.toBeNull();
    c.close();
  });

  it('drops a client stalled mid-message even after its queued replies were read', async () => {
    const peer = RawPeer.connect(d.socket);
    await peer.negotiate();
    // a 1 MiB reply does not fit in the socket: it is queued, then read by the peer
    const read = encodeRegionRead(5, RegionIndex.BAR2, 0, MiB);
    const half = encodeDeviceGetInfo(6).subarray(0, 9);
    await peer.send(Buffer.concat([read, half]));
    const r = await peer.next();
    expect(r.header.id).toBe(5);
    await peer.closed(STALL * 8);
    peer.close();
  });
});
