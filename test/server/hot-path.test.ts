import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { LONG_TEST_MS } from '../helpers/patience.js';
import { SCAVENGE_COUNTER } from '../helpers/scavenges.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const dist = (rel: string) => JSON.stringify(pathToFileURL(`${root}dist/${rel}`).href);

/**
 * Runs each trapped access 100k times through a Connection and a Session over a
 * real socket pair, driven synchronously, in a fresh process with a 1 MiB young
 * generation, and reports the scavenges seen during each: an access that
 * allocates even a few bytes shows up there.
 */
function gcsPerAccess(): Record<string, number> {
  const script = `
import { native } from ${dist('native/native.js')};
import { Connection } from ${dist('transport/connection.js')};
import { Session } from ${dist('server/session.js')};
import { Counters } from ${dist('server/counters.js')};
import { openAperture } from ${dist('backends/aperture.js')};
import { openEmulatedBar0 } from ${dist('backends/bar0-emulated.js')};
import { dmaFileOps, eventfdSink } from ${dist('backends/client-memory.js')};
import { DEFAULT_IDENTITY, GpuDevice } from ${dist('device/gpu-device.js')};
import { createLogger } from ${dist('log.js')};
import { encodeVersion, encodeRegionRead, encodeRegionWrite } from ${dist('wire/serializer.js')};

const GiB = 2 ** 30;
const aperture = openAperture({ size: GiB + 2048, base: 0, pageSize: native.pageSize() });
const device = new GpuDevice({ identity: DEFAULT_IDENTITY, bar0: openEmulatedBar0(), aperture: aperture.memory,
  pageSize: native.pageSize(), events: eventfdSink, dmaOps: dmaFileOps, maxDmaMaps: 16 });
const [client, server] = native.socketPair();
let session;
const conn = new Connection(server, null, { onMessage: (h, b, at, f) => session.onMessage(h, b, at, f), onClose() {} });
session = new Session(device, conn, createLogger('info'), new Counters());
const drive = () => conn.onEvents(0, native.READABLE);
const reply = Buffer.alloc(4096), fds = new Int32Array(17);
const v = encodeVersion(1, 0, 0, 0, { names: [], writeMultiple: true });
native.sendMsg(client, v, 0, v.length, null); drive(); native.recvMsg(client, reply, 0, 4096, fds);

const accesses = {
  'config read': [encodeRegionRead(2, 7, 0, 4), true],
  'BAR2 padding read': [encodeRegionRead(2, 2, 1.5 * GiB, 8), true],
  'BAR2 memory read': [encodeRegionRead(2, 2, GiB + 16, 4), true],
  'BAR0 register read': [encodeRegionRead(2, 0, 0x1498, 4), true],
  'BAR0 register write': [encodeRegionWrite(2, 0, 0x100, Buffer.from([1, 2, 3, 4])), true],
  'posted BAR0 write': [encodeRegionWrite(2, 0, 0x104, Buffer.from([1, 2, 3, 4]), true), false],
  'config write': [encodeRegionWrite(2, 7, 0x3c, Buffer.from([5])), true],
};
${SCAVENGE_COUNTER}
const settle = () => new Promise((r) => setTimeout(r, 50)); // entries arrive asynchronously
const out = {};
function loop(req, answered, n, fresh) {
  for (let i = 0; i < n; i++) {
    const m = fresh ? Buffer.from(req) : req;
    native.sendMsg(client, m, 0, m.length, null);
    drive();
    if (answered) native.recvMsg(client, reply, 0, 4096, fds);
  }
}
// Each access is warmed up, then counted from an empty young generation.
async function count(req, answered, fresh) {
  loop(req, answered, 10000, fresh);
  globalThis.gc();
  await settle();
  gcs = 0;
  loop(req, answered, 100000, fresh);
  await settle();
  return gcs;
}
for (const [name, [req, answered]] of Object.entries(accesses)) out[name] = await count(req, answered, false);
// control: the same loop allocating one small buffer per access
out['(control) allocating loop'] = await count(accesses['config read'][0], true, true);
obs.disconnect();
conn.close('done');
aperture.close();
console.log(JSON.stringify(out));
`;
  const r = spawnSync(process.execPath, ['--max-semi-space-size=1', '--expose-gc', '--input-type=module', '-e', script], {
    cwd: root,
    encoding: 'utf8',
    timeout: LONG_TEST_MS,
  });
  if (r.status !== 0) throw new Error(`hot-path script failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, number>;
}

describe('trapped path', () => {
  it('allocates nothing per access: framing, session, device and reply', () => {
    const gcs = gcsPerAccess();
    expect(gcs['(control) allocating loop']).toBeGreaterThan(5);
    for (const [access, n] of Object.entries(gcs)) {
      if (access.startsWith('(control)')) continue;
      expect(n, `${access}: GCs during 100k accesses`).toBeLessThanOrEqual(1);
    }
  }, LONG_TEST_MS);
});
