import { spawnSync } from 'node:child_process';
import { setImmediate as immediate } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import {
  DISCONNECT,
  EFD_NONBLOCK,
  NATIVE_BINDING_PATH,
  READABLE,
  WRITABLE,
  native,
  type Poller,
} from '../../src/native/native.js';
import { collectGarbage, sleep, waitFor } from './helpers.js';
import { HANG_GUARD_MS, LONG_TEST_MS } from '../helpers/patience.js';

const one = new Uint8Array([1]);

interface Call {
  status: number;
  events: number;
}

function watch(fd: number): { poller: Poller; calls: Call[] } {
  const calls: Call[] = [];
  const poller = native.createPoller(fd, (status, events) => {
    calls.push({ status, events });
  });
  return { poller, calls };
}

/** Runs a CommonJS script with the addon available as `native`. */
function runChild(body: string, timeoutMs = HANG_GUARD_MS, flags: string[] = []) {
  const script = `const native = require(${JSON.stringify(NATIVE_BINDING_PATH)});\n${body}`;
  return spawnSync(process.execPath, [...flags, '-e', script], { encoding: 'utf8', timeout: timeoutMs });
}

describe('Poller', () => {
  it('exports the event bits', () => {
    expect([READABLE, WRITABLE, DISCONNECT]).toEqual([1, 2, 4]);
  });

  it('calls back when the fd becomes readable, with `this` = the poller', async () => {
    const [a, b] = native.socketPair();
    let self: unknown;
    const calls: Call[] = [];
    const poller = native.createPoller(b, function (this: Poller, status, events) {
      self = this;
      calls.push({ status, events });
      // Level triggered: consume so it stops firing.
      native.recvMsg(b, new Uint8Array(8), 0, 8, new Int32Array(1));
    });
    poller.start(READABLE);
    await sleep(20);
    expect(calls).toEqual([]); // nothing to read yet

    native.sendMsg(a, one, 0, 1, null);
    await waitFor(() => calls.length > 0);
    expect(calls[0]).toEqual({ status: 0, events: READABLE });
    expect(self).toBe(poller);
    poller.close();
    native.closeFd(a);
    native.closeFd(b);
  });

  it('reports WRITABLE and DISCONNECT', async () => {
    const [a, b] = native.socketPair();
    const { poller, calls } = watch(b);
    poller.start(WRITABLE);
    await waitFor(() => calls.length > 0);
    expect(calls[0]!.events & WRITABLE).toBe(WRITABLE);
    poller.stop();

    calls.length = 0;
    poller.start(DISCONNECT);
    await sleep(20);
    expect(calls).toEqual([]);
    native.closeFd(a);
    await waitFor(() => calls.length > 0);
    expect(calls[0]!.status).toBe(0);
    expect(calls[0]!.events & DISCONNECT).toBe(DISCONNECT);
    poller.close();
    native.closeFd(b);
  });

  it('stop() stops callbacks and start() resumes them', async () => {
    const [a, b] = native.socketPair();
    const { poller, calls } = watch(b);
    poller.start(READABLE);
    native.sendMsg(a, one, 0, 1, null); // never consumed: level triggered, fires every turn
    await waitFor(() => calls.length >= 3);
    poller.stop();
    const seen = calls.length;
    await sleep(50);
    expect(calls.length).toBe(seen);
    poller.start(READABLE);
    await waitFor(() => calls.length > seen);
    poller.close();
    native.closeFd(a);
    native.closeFd(b);
  });

  it('close() ends callbacks, is idempotent, and leaves the fd open', async () => {
    const [a, b] = native.socketPair();
    const { poller, calls } = watch(b);
    poller.start(READABLE);
    native.sendMsg(a, one, 0, 1, null);
    await waitFor(() => calls.length > 0);
    poller.close();
    poller.close();
    const seen = calls.length;
    await sleep(50);
    expect(calls.length).toBe(seen);
    expect(() => poller.start(READABLE)).toThrow(expect.objectContaining({ code: 'ERR_POLLER_CLOSED' }));
    poller.stop(); // no-op
    poller.ref();
    poller.unref();
    // The fd is still usable.
    const buf = new Uint8Array(4);
    expect(native.recvMsg(b, buf, 0, 4, new Int32Array(1))).toBe(1);
    native.closeFd(a);
    native.closeFd(b);
  });

  it('can be closed from inside its own callback', async () => {
    const [a, b] = native.socketPair();
    let n = 0;
    const poller = native.createPoller(b, () => {
      n++;
      poller.close();
    });
    poller.start(READABLE);
    native.sendMsg(a, one, 0, 1, null);
    await waitFor(() => n > 0);
    await sleep(30);
    expect(n).toBe(1);
    native.closeFd(a);
    native.closeFd(b);
  });

  it('drains nextTicks and microtasks after each callback (napi_make_callback)', async () => {
    // Two fds that are ready in the same epoll batch: the second callback must
    // see the first callback's tick and microtask already run.
    const [a1, b1] = native.socketPair();
    const [a2, b2] = native.socketPair();
    native.sendMsg(a1, one, 0, 1, null);
    native.sendMsg(a2, one, 0, 1, null);
    const order: string[] = [];
    const pollers = [b1, b2].map((fd) => {
      const p = native.createPoller(fd, () => {
        p.close();
        order.push('callback');
        process.nextTick(() => order.push('tick'));
        void Promise.resolve().then(() => order.push('microtask'));
      });
      return p;
    });
    for (const p of pollers) p.start(READABLE);
    await waitFor(() => order.length === 6);
    expect(order).toEqual(['callback', 'tick', 'microtask', 'callback', 'tick', 'microtask']);
    for (const fd of [a1, b1, a2, b2]) native.closeFd(fd);
  });

  it('refuses a second poller on the same fd until the first is closed', () => {
    const [a, b] = native.socketPair();
    const p1 = native.createPoller(b, () => {});
    expect(() => native.createPoller(b, () => {})).toThrow(
      expect.objectContaining({ code: 'EEXIST', syscall: 'uv_poll_init' }),
    );
    p1.close();
    const p2 = native.createPoller(b, () => {});
    p2.close();
    native.closeFd(a);
    native.closeFd(b);
  });

  it('validates its arguments', () => {
    const efd = native.eventfd(0, EFD_NONBLOCK);
    const memfd = native.memfdCreate('poll-me', 0);
    expect(() => native.createPoller(efd, 'nope' as unknown as () => void)).toThrow(TypeError);
    expect(() => native.createPoller(-1, () => {})).toThrow(RangeError);
    // epoll cannot watch a memfd (regular shmem file).
    expect(() => native.createPoller(memfd, () => {})).toThrow(expect.objectContaining({ code: 'EPERM' }));
    const p = native.createPoller(efd, () => {});
    expect(() => p.start(8)).toThrow(RangeError);
    const start = p.start.bind({}) as (ev: number) => void;
    expect(() => start(READABLE)).toThrow(TypeError);
    p.close();
    native.closeFd(efd);
    native.closeFd(memfd);
  });

  it('keeps a started poller alive without JS references; frees a stopped one on GC', async () => {
    const efd = native.eventfd(0, EFD_NONBLOCK);
    let fired = 0;
    // Started, then dropped: must survive GC and still deliver.
    (() => {
      native.createPoller(efd, () => {
        fired++;
        native.eventfdRead(efd);
      }).start(READABLE);
    })();
    await collectGarbage();
    native.eventfdWrite(efd, 1);
    await waitFor(() => fired > 0);
    // It is still registered, so the fd cannot be watched twice.
    expect(() => native.createPoller(efd, () => {})).toThrow(expect.objectContaining({ code: 'EEXIST' }));

    // Not started and dropped: GC closes its handle, so the fd is free again.
    const efd2 = native.eventfd(0, EFD_NONBLOCK);
    (() => {
      native.createPoller(efd2, () => {});
    })();
    await collectGarbage();
    const again = native.createPoller(efd2, () => {});
    again.close();
    native.closeFd(efd2);
  });

  it('does not fire for an eventfd until it is written', async () => {
    const efd = native.eventfd(0, EFD_NONBLOCK);
    const { poller, calls } = watch(efd);
    poller.start(READABLE);
    await immediate();
    await sleep(20);
    expect(calls).toEqual([]);
    native.eventfdWrite(efd, 3);
    await waitFor(() => calls.length > 0);
    expect(native.eventfdRead(efd)).toBe(3);
    poller.close();
    native.closeFd(efd);
  });
});

describe('Poller in a child process', () => {
  const ping = `
const [a, b] = native.socketPair();
const poke = () => native.sendMsg(a, new Uint8Array([1]), 0, 1, null);
`;

  it('turns an exception in the callback into an uncaughtException', () => {
    const r = runChild(`${ping}
process.on('uncaughtException', (err) => {
  console.log('caught ' + err.message);
  p.close();
});
const p = native.createPoller(b, () => { throw new Error('boom'); });
p.start(native.READABLE);
poke();
`);
    expect(r.stdout).toBe('caught boom\n');
    expect(r.status).toBe(0);
  });

  it('crashes the process like Node when nothing handles the exception', () => {
    const r = runChild(`${ping}
const p = native.createPoller(b, () => { throw new Error('unhandled boom'); });
p.start(native.READABLE);
poke();
`);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('unhandled boom');
  });

  it('keeps the event loop alive while started, unless unref()ed', () => {
    const body = (unref: boolean) => `${ping}
const p = native.createPoller(b, () => {});
p.start(native.READABLE);
${unref ? 'p.unref();' : ''}
setTimeout(() => { console.log('still running'); p.close(); }, 200).unref();
`;
    const kept = runChild(body(false));
    expect(kept.stdout).toBe('still running\n');
    expect(kept.status).toBe(0);
    const released = runChild(body(true));
    expect(released.stdout).toBe('');
    expect(released.status).toBe(0);
  });

  it('lets the process exit once the poller is closed or stopped', () => {
    const r = runChild(`${ping}
const p = native.createPoller(b, function () { native.recvMsg(b, new Uint8Array(1), 0, 1, new Int32Array(1)); this.stop(); console.log('got it'); });
p.start(native.READABLE);
poke();
`);
    expect(r.stdout).toBe('got it\n');
    expect(r.status).toBe(0);
    expect(r.error).toBeUndefined(); // not killed by the timeout
  });

  it('frees closed pollers: memory stays flat over many create/close cycles', () => {
    const r = runChild(
      `
const efd = native.eventfd(0, native.EFD_NONBLOCK);
const rss = () => Number(/VmRSS:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
async function round() {
  for (let i = 0; i < 20000; i++) {
    const p = native.createPoller(efd, () => {});
    p.start(native.READABLE);
    p.close();
  }
  for (let i = 0; i < 3; i++) { gc(); await new Promise((r) => setImmediate(r)); }
}
(async () => {
  for (let i = 0; i < 3; i++) await round();
  const base = rss();
  for (let i = 0; i < 15; i++) await round();
  console.log(JSON.stringify({ growth: rss() - base }));
})();
`,
      LONG_TEST_MS,
      ['--expose-gc'],
    );
    expect(r.status, r.stderr).toBe(0);
    const { growth } = JSON.parse(r.stdout) as { growth: number };
    // 300k pollers; leaking each one (struct, handle, callback) would be > 50 MB.
    expect(growth).toBeLessThan(16 * 1024 * 1024);
  }, LONG_TEST_MS);
});
