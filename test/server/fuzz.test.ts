// Socket-level fuzzer: bursts of random, mutated and valid messages (with memfds,
// eventfds, /dev/null and socket fds) against a live daemon in this process.
// After every burst the daemon must hold none of the client's fds, must not have
// failed internally, and must serve a normal session.
//   short run: part of `npm test`;  longer: `npm run fuzz -- --seconds N [--seed S]`
import { describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../src/client/client.js';
import { native } from '../../src/native/native.js';
import { DEFAULT_LIMITS } from '../../src/transport/connection.js';
import { RegionIndex } from '../../src/wire/constants.js';
import { startTestDaemon, until } from '../helpers/daemon.js';
import { Rng, fuzzMessage } from '../helpers/fuzz-messages.js';
import { RawPeer } from '../helpers/raw-peer.js';
import { sleep } from '../native/helpers.js';

const SECONDS = Number(process.env['NVGRACE_FUZZ_SECONDS'] ?? 6);
const SEED = Number(process.env['NVGRACE_FUZZ_SEED'] ?? Math.floor(Math.random() * 0x7fffffff));

async function burst(socket: string, r: Rng): Promise<number> {
  const peer = RawPeer.connect(socket);
  let sent = 0;
  try {
    if (r.chance(0.85)) await peer.negotiate();
    const n = r.int(150) + 10;
    for (let i = 0; i < n && peer.closedReason === null; i++) {
      const m = fuzzMessage(r);
      try {
        if (r.chance(0.1) && m.bytes.length > 1) {
          // split across sendmsg calls, fds with the first part
          const cut = 1 + r.int(m.bytes.length - 1);
          await peer.send(m.bytes.subarray(0, cut), m.fds.length > 0 ? m.fds : null);
          await sleep(r.int(3));
          await peer.send(m.bytes.subarray(cut));
        } else {
          await peer.send(m.bytes, m.fds.length > 0 ? m.fds : null);
        }
        sent++;
      } catch (err) {
        // the daemon closed the connection (a message it could not frame): fine
        if (!/Broken pipe|reset|connection closed/i.test((err as Error).message)) throw err;
        break;
      } finally {
        for (const fd of m.fds) native.closeFd(fd);
      }
      if (i % 16 === 0) {
        peer.drain();
        await new Promise((res) => setImmediate(res));
      }
    }
    await sleep(r.int(10));
  } finally {
    peer.close();
  }
  return sent;
}

describe('socket fuzzer', () => {
  it(`survives ${SECONDS} s of hostile bursts (seed ${SEED})`, async () => {
    const d = startTestDaemon({ limits: { ...DEFAULT_LIMITS, stallTimeoutMs: 500 }, maxClientFds: 64 });
    const daemon = d.running.daemon;
    const r = new Rng(SEED);
    const baseFds = native.fdCount();
    const end = Date.now() + SECONDS * 1000;
    let bursts = 0;
    let messages = 0;
    try {
      while (Date.now() < end) {
        messages += await burst(d.socket, r);
        bursts++;
        const where = `seed ${SEED}, burst ${bursts}`;
        await until(() => daemon.client === null, `client released (${where})`);
        expect(daemon.device.dma.count, where).toBe(0);
        expect(daemon.device.clientFds.held, where).toBe(0);
        expect(daemon.device.interrupts.heldFds, where).toBe(0);
        expect(daemon.counters.internalErrors, where).toBe(0);
        expect(native.fdCount(), `open fds (${where})`).toBe(baseFds);
        // a normal session still works
        const c = VfioUserClient.connect(d.socket);
        await c.negotiate();
        expect((await c.regionRead(RegionIndex.CONFIG, 0, 2)).readUInt16LE(0), where).toBe(0x10de);
        const { info, fd } = await c.regionInfo(RegionIndex.BAR2);
        expect(info.size, where).toBe(128 * 1024 * 1024);
        native.closeFd(fd!);
        c.close();
        await until(() => daemon.client === null, `normal client released (${where})`);
        expect(native.fdCount(), `open fds after a normal session (${where})`).toBe(baseFds);
      }
    } finally {
      d.stop();
    }
    console.info(`fuzz: seed ${SEED}, ${bursts} bursts, ${messages} messages in ${SECONDS} s; ${JSON.stringify(daemon.counters.summary())}`);
    expect(bursts).toBeGreaterThan(0);
  }, SECONDS * 1000 + 60_000);
});
