import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../src/native/native.js';
import { Connection, DEFAULT_LIMITS, type ConnectionLimits } from '../../src/transport/connection.js';
import type { Header } from '../../src/wire/messages.js';
import { msgCtruncGap } from '../helpers/emulation.js';
import { HANG_GUARD_MS } from '../helpers/patience.js';

interface Seen {
  header: Header;
  bytes: Buffer;
  at: number;
  fds: number[];
}

/** A message of `size` bytes: a header whose id is `id`, then a recognisable body. */
function message(id: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt16LE(id, 0);
  b.writeUInt16LE(9, 2);
  b.writeUInt32LE(size, 4);
  for (let i = 16; i < size; i++) b[i] = (id + i) & 0xff;
  return b;
}

const until = async (cond: () => boolean, what: string) => {
  const end = Date.now() + HANG_GUARD_MS;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
};

describe('Connection framing', () => {
  const open: number[] = [];
  let conn: Connection | null = null;
  afterEach(() => {
    conn?.close('test over');
    conn = null;
    for (const fd of open.splice(0)) {
      try {
        native.closeFd(fd);
      } catch {
        // closed by the test
      }
    }
  });

  /** A started connection on one end of a socket pair; the test writes to `peer`. */
  function connect(opts: { limits?: Partial<ConnectionLimits>; onMessage?: (s: Seen) => void | Promise<void> } = {}) {
    const [peer, ours] = native.socketPair();
    open.push(peer);
    const seen: Seen[] = [];
    const closed: string[] = [];
    const broken: { header: Header; reason: string }[] = [];
    conn = new Connection(
      ours,
      null,
      {
        onMessage(header, buf, at, fds) {
          const s = { header: { ...header }, bytes: Buffer.from(buf.subarray(at, at + header.size)), at, fds: fds.splice(0) };
          seen.push(s);
          return opts.onMessage?.(s);
        },
        onClose(reason) {
          closed.push(reason);
        },
        onBroken(header, reason) {
          broken.push({ header: { ...header }, reason });
        },
      },
      { ...DEFAULT_LIMITS, ...opts.limits },
    );
    conn.start();
    return { peer, seen, closed, broken };
  }

  it('hands out each of several messages sent in one write, in order and intact', async () => {
    const { peer, seen } = connect();
    const msgs = [message(1, 32), message(2, 16), message(3, 36), message(4, 100)];
    const all = Buffer.concat(msgs);
    expect(native.sendMsg(peer, all, 0, all.length, null)).toBe(all.length);
    await until(() => seen.length === 4, 'four messages');
    expect(seen.map((s) => s.header.id)).toEqual([1, 2, 3, 4]);
    seen.forEach((s, i) => expect(s.bytes.equals(msgs[i]!)).toBe(true));
    // handed out in place: offsets into the receive buffer, one after the other
    expect(seen.map((s) => s.at)).toEqual([0, 32, 48, 84]);
  });

  it('waits for a message split anywhere, header included', async () => {
    const { peer, seen } = connect();
    const m = message(7, 40);
    for (const [from, to] of [[0, 5], [5, 16], [16, 17], [17, 40]] as const) {
      native.sendMsg(peer, m, from, to - from, null);
      await new Promise((r) => setTimeout(r, 5));
      expect(seen.length).toBe(to === 40 ? 1 : 0);
    }
    expect(seen[0]!.bytes.equals(m)).toBe(true);
  });

  it('grows the buffer for a message larger than it, keeping what came before', async () => {
    const { peer, seen } = connect();
    const small = message(1, 20);
    const big = message(2, 1024 * 1024 + 32);
    const both = Buffer.concat([small, big]);
    for (let at = 0; at < both.length; ) {
      const n = native.sendMsg(peer, both, at, Math.min(200_000, both.length - at), null);
      if (n > 0) at += n;
      await new Promise((r) => setImmediate(r));
    }
    await until(() => seen.length === 2, 'both messages');
    expect(seen[0]!.bytes.equals(small)).toBe(true);
    expect(seen[1]!.bytes.equals(big)).toBe(true);
  });

  it('gives fds to the message they were sent with, whichever comes first', async () => {
    const { peer, seen } = connect();
    const [e1, e2] = [native.eventfd(0, 0), native.eventfd(0, 0)];
    open.push(e1, e2);
    // Queued before the connection reads: one recvmsg may take all three.
    const a = message(1, 24);
    const b = message(2, 24);
    const c = message(3, 24);
    native.sendMsg(peer, a, 0, a.length, [e1]);
    native.sendMsg(peer, b, 0, b.length, null);
    native.sendMsg(peer, c, 0, c.length, [e2]);
    await until(() => seen.length === 3, 'three messages');
    expect(seen.map((s) => s.fds.length)).toEqual([1, 0, 1]);
    for (const s of seen) for (const fd of s.fds) open.push(fd);
    // the fds are the eventfds that were sent: a count written to one is read from the other
    native.eventfdWrite(e2, 5);
    expect(native.eventfdRead(seen[2]!.fds[0]!)).toBe(5);
  });

  it('gives fds sent with the body of a message to that message', async () => {
    const { peer, seen } = connect();
    const e = native.eventfd(0, 0);
    open.push(e);
    const m = message(9, 40);
    native.sendMsg(peer, m, 0, 16, null);
    await new Promise((r) => setTimeout(r, 5));
    native.sendMsg(peer, m, 16, 24, [e]);
    await until(() => seen.length === 1, 'the message');
    expect(seen[0]!.fds.length).toBe(1);
    open.push(...seen[0]!.fds);
  });

  it('closes the connection when one message brings more than 16 fds in two parts, telling the sink first', async () => {
    const { peer, seen, closed, broken } = connect();
    const fds = Array.from({ length: 9 }, () => native.eventfd(0, 0));
    open.push(...fds);
    const m = message(1, 40);
    native.sendMsg(peer, m, 0, 16, fds);
    await new Promise((r) => setTimeout(r, 5));
    native.sendMsg(peer, m, 16, 24, fds);
    await until(() => closed.length === 1, 'close');
    expect(closed[0]).toBe('more than 16 file descriptors in one message');
    expect(broken).toEqual([{ header: expect.objectContaining({ id: 1, command: 9, size: 40 }), reason: closed[0] }]);
    expect(seen.length).toBe(0);
  });

  // qemu-user does not report MSG_CTRUNC (an emulation gap, docs/testing.md): the truncation is not seen there
  const ctruncGap = msgCtruncGap();
  if (ctruncGap !== null) console.warn(`skipped: MSG_CTRUNC: ${ctruncGap}`);
  it.skipIf(ctruncGap !== null)('closes the connection when one sendmsg brings more than 16 fds (the kernel truncates them), with the same words', async () => {
    const { peer, seen, closed, broken } = connect();
    const before = native.fdCount();
    // our binding sends at most 16 fds at a time: Python's socket.send_fds sends 20 in one sendmsg
    const m = message(1, 24);
    const script = 'import os, socket, sys\ns = socket.socket(fileno=3)\nsocket.send_fds(s, [bytes.fromhex(sys.argv[1])], [os.open("/dev/null", os.O_RDONLY) for _ in range(20)])\ns.detach()';
    const r = spawnSync('python3', ['-c', script, m.toString('hex')], { stdio: ['ignore', 'inherit', 'inherit', peer] });
    expect(r.status).toBe(0);
    await until(() => closed.length === 1, 'close');
    expect(closed[0]).toBe('more than 16 file descriptors in one message');
    // the message is answered (the sink is told), not handed out
    expect(broken.map((b) => b.header.id)).toEqual([1]);
    expect(seen.length).toBe(0);
    expect(native.fdCount()).toBe(before - 1); // none of the 20 is left open, and our end is closed
  });

  it('closes without telling the sink when the fds came before a whole header', async () => {
    const { peer, closed, broken } = connect();
    const fds = Array.from({ length: 9 }, () => native.eventfd(0, 0));
    open.push(...fds);
    const m = message(1, 40);
    native.sendMsg(peer, m, 0, 4, fds);
    await new Promise((r) => setTimeout(r, 5));
    native.sendMsg(peer, m, 4, 4, fds);
    await until(() => closed.length === 1, 'close');
    expect(closed[0]).toBe('more than 16 file descriptors in one message');
    expect(broken).toEqual([]);
  });

  it('goes on with messages left over after a batch, with nothing more arriving', async () => {
    const { peer, seen } = connect({ limits: { batch: 4 } });
    const msgs = Array.from({ length: 23 }, (_, i) => message(i, 16 + i));
    const all = Buffer.concat(msgs);
    native.sendMsg(peer, all, 0, all.length, null);
    await until(() => seen.length === 23, 'all 23 messages');
    expect(seen.map((s) => s.header.id)).toEqual(msgs.map((_, i) => i));
  });

  it('holds later messages while a handler is busy, then hands them out in order', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { peer, seen } = connect({ onMessage: (s) => (s.header.id === 1 ? gate : undefined) });
    const all = Buffer.concat([message(1, 16), message(2, 20), message(3, 24)]);
    native.sendMsg(peer, all, 0, all.length, null);
    await until(() => seen.length === 1, 'the first message');
    await new Promise((r) => setTimeout(r, 20));
    expect(seen.length).toBe(1);
    release();
    await until(() => seen.length === 3, 'the rest');
    expect(seen.map((s) => s.header.id)).toEqual([1, 2, 3]);
    expect(seen[2]!.bytes.equals(message(3, 24))).toBe(true);
  });

  it('closes on a size that cannot be framed, and on EOF mid-message', async () => {
    for (const size of [8, 3 * 1024 * 1024]) {
      const { peer, closed } = connect();
      const m = message(1, 16);
      m.writeUInt32LE(size, 4);
      native.sendMsg(peer, m, 0, 16, null);
      await until(() => closed.length === 1, 'close');
      expect(closed[0]).toMatch(/cannot be framed/);
      conn = null;
    }
    const { peer, closed } = connect();
    native.sendMsg(peer, message(1, 40), 0, 20, null);
    await new Promise((r) => setTimeout(r, 5));
    native.closeFd(peer);
    await until(() => closed.length === 1, 'close');
    expect(closed[0]).toBe('peer closed mid-message');
  });

  it('gives up on a client stalled mid-message, but not on one between messages', async () => {
    const { peer, closed } = connect({ limits: { stallTimeoutMs: 50 } });
    native.sendMsg(peer, message(1, 16), 0, 16, null);
    await new Promise((r) => setTimeout(r, 120));
    expect(closed).toEqual([]);
    native.sendMsg(peer, message(2, 40), 0, 30, null);
    await until(() => closed.length === 1, 'close');
    expect(closed[0]).toMatch(/stalled mid-message/);
  });
});
