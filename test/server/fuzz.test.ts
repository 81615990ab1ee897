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
import { Rng } from '../helpers/fuzz-messages.js';
import { hostileBurst } from '../helpers/hostile-client.js';

const SECONDS = Number(process.env['NVGRACE_FUZZ_SECONDS'] ?? 6);
const SEED = Number(process.env['NVGRACE_FUZZ_SEED'] ?? Math.floor(Math.random() * 0x7fffffff));

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
        messages += await hostileBurst(d.socket, r);
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
