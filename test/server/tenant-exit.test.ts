// A client that disconnects but keeps running keeps its mapping of the aperture:
// the next tenant (from another process) is held until it exits, or refused.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../src/client/client.js';
import { RegionIndex } from '../../src/wire/constants.js';
import { startTestDaemon, until, type TestDaemon } from '../helpers/daemon.js';
import { sleep } from '../native/helpers.js';
import { HANG_GUARD_MS } from '../helpers/patience.js';

const DIST = fileURLToPath(new URL('../../dist', import.meta.url));

// The previous tenant, in a process of its own (the compiled client): attaches,
// maps BAR2, writes, detaches and lives on with its mapping. On stdin:
// "write" writes through the kept mapping, "reattach" attaches again.
const TENANT = `
const { VfioUserClient } = await import(${JSON.stringify(DIST + '/client/client.js')});
const { native } = await import(${JSON.stringify(DIST + '/native/native.js')});
const socket = process.argv[1];
let c = VfioUserClient.connect(socket);
await c.negotiate();
const { info, fd } = await c.regionInfo(2);
const mem = new Uint8Array(native.mmap(fd, info.sparseAreas[0].size, native.PROT_READ | native.PROT_WRITE, native.MAP_SHARED, info.offset));
mem.set(Buffer.from('tenant-A'), 0x1000);
c.close();
console.log('DETACHED');
process.stdin.on('data', async (b) => {
  for (const cmd of b.toString().split('\\n').filter(Boolean)) {
    if (cmd === 'write') { mem.set(Buffer.from('after-detach'), 0x2000); console.log('WROTE'); }
    if (cmd === 'reattach') { c = VfioUserClient.connect(socket); await c.negotiate(); console.log('REATTACHED'); c.close(); }
  }
});
`;

interface Tenant {
  child: ChildProcessWithoutNullStreams;
  out: () => string;
  waitFor(text: string): Promise<void>;
}

function startTenant(socket: string): Tenant {
  const child = spawn(process.execPath, ['--input-type=module', '-e', TENANT, socket], { stdio: 'pipe' });
  let out = '';
  let err = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  return {
    child,
    out: () => out,
    waitFor: (text) => until(() => out.includes(text), `tenant to print ${text} (stderr: ${err})`, HANG_GUARD_MS),
  };
}

describe('the previous tenant process is still running', () => {
  let d: TestDaemon | null = null;
  const children: ChildProcessWithoutNullStreams[] = [];
  afterEach(() => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    d?.stop();
    d = null;
  });

  it('holds the next client until it exits, then scrubs (on-release) and admits it', async () => {
    d = startTestDaemon({ tenantExitTimeoutMs: 10_000, scrub: 'on-release' });
    const daemon = d.running.daemon;
    const a = startTenant(d.socket);
    children.push(a.child);
    await a.waitFor('DETACHED');
    await until(() => daemon.client === null, 'tenant A detached');

    const b = VfioUserClient.connect(d.socket);
    let admitted = false;
    const negotiated = b.negotiate().then(() => (admitted = true));
    await sleep(400);
    expect(admitted).toBe(false); // held back while A lives
    expect(daemon.client).toBeNull();
    // one client waits at most: another is refused at once
    const other = VfioUserClient.connect(d.socket);
    await expect(other.negotiate()).rejects.toThrow(/closed/);
    expect(admitted).toBe(false);
    // A still maps the aperture and writes after it detached: the attack
    a.child.stdin.write('write\n');
    await a.waitFor('WROTE');
    a.child.kill('SIGKILL');
    await negotiated;
    // the scrub ran after A was gone, so nothing A wrote reaches B
    expect([...(await b.regionRead(RegionIndex.BAR2, 0x1000, 8))]).toEqual(new Array(8).fill(0));
    expect([...(await b.regionRead(RegionIndex.BAR2, 0x2000, 12))]).toEqual(new Array(12).fill(0));
    b.close();
  });

  it('refuses the next client after the timeout, and admits one once the process is gone', async () => {
    d = startTestDaemon({ tenantExitTimeoutMs: 400 });
    const daemon = d.running.daemon;
    const a = startTenant(d.socket);
    children.push(a.child);
    await a.waitFor('DETACHED');
    await until(() => daemon.client === null, 'tenant A detached');
    const t0 = Date.now();
    const b = VfioUserClient.connect(d.socket);
    await expect(b.negotiate()).rejects.toThrow(/closed/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(350);
    expect(daemon.counters.refusedConnections).toBe(1);
    const exited = new Promise((r) => a.child.once('exit', r));
    a.child.kill('SIGKILL');
    await exited;
    const c = VfioUserClient.connect(d.socket);
    await c.negotiate();
    expect((await c.regionRead(RegionIndex.BAR2, 0x1000, 8)).toString()).toBe('tenant-A'); // no scrub asked
    c.close();
  });

  it('lets the same process attach again at once (a device re-plugged)', async () => {
    d = startTestDaemon({ tenantExitTimeoutMs: 10_000 });
    const a = startTenant(d.socket);
    children.push(a.child);
    await a.waitFor('DETACHED');
    await until(() => d!.running.daemon.client === null, 'tenant A detached');
    const t0 = Date.now();
    a.child.stdin.write('reattach\n');
    await a.waitFor('REATTACHED');
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(d.running.daemon.counters.refusedConnections).toBe(0);
  });

  it('does not wait when the timeout is 0', async () => {
    d = startTestDaemon({ tenantExitTimeoutMs: 0 });
    const a = startTenant(d.socket);
    children.push(a.child);
    await a.waitFor('DETACHED');
    await until(() => d!.running.daemon.client === null, 'tenant A detached');
    const b = VfioUserClient.connect(d.socket);
    await b.negotiate();
    expect(a.child.exitCode).toBeNull();
    b.close();
  });
});
