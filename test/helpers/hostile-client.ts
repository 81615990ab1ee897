// One hostile client's life, as the socket fuzzer plays it: usually VERSION,
// then random, mutated and valid messages (fds of every kind, split sends,
// replies left unread now and then), then gone.
import { native } from '../../src/native/native.js';
import { Rng, fuzzMessage } from './fuzz-messages.js';
import { RawPeer } from './raw-peer.js';
import { sleep } from '../native/helpers.js';

/** Sends one burst over a new connection and closes it; returns the messages sent. */
export async function hostileBurst(socket: string, r: Rng, maxMessages = 160): Promise<number> {
  const peer = RawPeer.connect(socket);
  let sent = 0;
  try {
    if (r.chance(0.85)) await peer.negotiate();
    const n = r.int(maxMessages - 9) + 10;
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
