import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../src/client/client.js';
import { RegionIndex } from '../../src/wire/constants.js';
import { startTestDaemon, until, type TestDaemon } from '../helpers/daemon.js';

describe('access and tenants', () => {
  let d: TestDaemon | null = null;
  afterEach(() => {
    d?.stop();
    d = null;
  });

  it('creates the socket with the requested mode and group', () => {
    d = startTestDaemon({ socketMode: 0o660, socketGroup: 0 });
    const st = fs.statSync(d.socket);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o660);
    expect(st.gid).toBe(0);
  });

  it('refuses a peer whose uid is not allowed', async () => {
    d = startTestDaemon({ allowUids: [process.getuid!() + 4242] });
    const c = VfioUserClient.connect(d.socket);
    await expect(c.negotiate()).rejects.toThrow(/closed/);
    expect(d.running.daemon.counters.refusedConnections).toBe(1);
  });

  it('admits an allowed uid', async () => {
    d = startTestDaemon({ allowUids: [process.getuid!()] });
    const c = VfioUserClient.connect(d.socket);
    await c.negotiate();
    c.close();
  });

  it('scrubs on release: the next tenant reads zeros, the daemon keeps serving', async () => {
    d = startTestDaemon({ scrub: 'on-release' });
    const a = VfioUserClient.connect(d.socket);
    await a.negotiate();
    await a.regionWrite(RegionIndex.BAR2, 0x1000, Buffer.from('secret!!'));
    a.close();
    await until(() => d!.running.daemon.client === null, 'tenant A gone');
    const b = VfioUserClient.connect(d.socket);
    await b.negotiate(); // waits in the backlog until the scrub is over
    expect([...(await b.regionRead(RegionIndex.BAR2, 0x1000, 8))]).toEqual(new Array(8).fill(0));
    expect(fs.readFileSync(d.aperturePath).subarray(0x1000, 0x1008)).toEqual(Buffer.alloc(8));
    b.close();
  });

  it('scrubs at start when asked', async () => {
    const size = 8 * 1024 * 1024;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-onstart-'));
    const file = path.join(dir, 'ap');
    const old = Buffer.alloc(size, 0x5a);
    fs.writeFileSync(file, old);
    try {
      d = startTestDaemon({ scrub: 'on-start', aperturePath: file, apertureSize: size });
      const c = VfioUserClient.connect(d.socket);
      await c.negotiate();
      expect([...(await c.regionRead(RegionIndex.BAR2, size - 4, 4))]).toEqual([0, 0, 0, 0]);
      c.close();
      expect(fs.readFileSync(file).equals(Buffer.alloc(size))).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps every byte of a file-backed aperture across a daemon restart', async () => {
    const size = 4 * 1024 * 1024 + 512;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-restart-'));
    const file = path.join(dir, 'ap');
    try {
      const data = Buffer.alloc(size);
      for (let i = 0; i < size; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i);
      d = startTestDaemon({ aperturePath: file, apertureSize: size });
      let c = VfioUserClient.connect(d.socket);
      await c.negotiate();
      for (let off = 0; off < size; off += 1 << 20) {
        await c.regionWrite(RegionIndex.BAR2, off, data.subarray(off, Math.min(size, off + (1 << 20))));
      }
      c.close();
      d.stop();
      d = startTestDaemon({ aperturePath: file, apertureSize: size });
      c = VfioUserClient.connect(d.socket);
      await c.negotiate();
      const back: Buffer[] = [];
      for (let off = 0; off < size; off += 1 << 20) back.push(await c.regionRead(RegionIndex.BAR2, off, Math.min(1 << 20, size - off)));
      c.close();
      expect(Buffer.concat(back).equals(data)).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
