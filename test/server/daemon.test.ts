import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QEMU_LIKE_CAPS, RequestError, VfioUserClient } from '../../src/client/client.js';
import { createLogger } from '../../src/log.js';
import { native } from '../../src/native/native.js';
import { Daemon } from '../../src/server/daemon.js';
import type { Version } from '../../src/wire/messages.js';
import { DmaMapFlag, IrqIndex, IrqSetFlag, RegionIndex } from '../../src/wire/constants.js';
import { makeDevice } from '../device/fakes.js';
import { startTestDaemon, until, type TestDaemon } from '../helpers/daemon.js';

const BAR2 = RegionIndex.BAR2;
const PAGE = native.pageSize();

describe('daemon over a real socket', () => {
  let d: TestDaemon;
  let client: VfioUserClient;
  let version: Version;

  beforeEach(async () => {
    d = startTestDaemon();
    client = VfioUserClient.connect(d.socket);
    version = await client.negotiate();
  });

  afterEach(() => {
    client.close();
    d.stop();
  });

  it('hands out the aperture fd and the mapped and trapped views agree', async () => {
    const { info, fd } = await client.regionInfo(BAR2);
    expect(info.size).toBe(128 * 1024 * 1024);
    expect(fd).not.toBeNull();
    const areas = info.sparseAreas!;
    expect(areas).toEqual([{ offset: 0, size: 96 * 1024 * 1024 }]);
    const map = native.mmap(fd!, areas[0]!.size, native.PROT_READ | native.PROT_WRITE, native.MAP_SHARED, info.offset);
    try {
      const mem = new Uint8Array(map);
      // written through the mapping, read through the socket
      mem.set([1, 2, 3, 4, 5, 6, 7, 8], 0x123450);
      expect([...(await client.regionRead(BAR2, 0x123450, 8))]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      // written through the socket, seen in the mapping and in the backing file
      await client.regionWrite(BAR2, 0x200000, Buffer.from([0xde, 0xad, 0xbe, 0xef]));
      expect([...mem.subarray(0x200000, 0x200004)]).toEqual([0xde, 0xad, 0xbe, 0xef]);
      const file = fs.readFileSync(d.aperturePath);
      expect(file.readUInt32LE(0x200000)).toBe(0xefbeadde);
    } finally {
      native.munmap(map);
      native.closeFd(fd!);
    }
  });

  it('serves the trailing partial page of memory from the same backing', async () => {
    const tail = 96 * 1024 * 1024 + 10;
    await client.regionWrite(BAR2, tail, Buffer.from([0x11, 0x22, 0x33, 0x44]));
    expect(fs.readFileSync(d.aperturePath).subarray(tail, tail + 4)).toEqual(Buffer.from([0x11, 0x22, 0x33, 0x44]));
    expect([...(await client.regionRead(BAR2, tail, 4))]).toEqual([0x11, 0x22, 0x33, 0x44]);
  });

  it('reads padding as all ones at every width and drops writes to it', async () => {
    const pad = d.apertureSize + 24;
    for (const width of [1, 2, 4, 8]) {
      expect([...(await client.regionRead(BAR2, pad, width))]).toEqual(new Array(width).fill(0xff));
    }
    const bar = d.running.daemon.device.aperture;
    const before = bar.padding.droppedWrites;
    await client.regionWrite(BAR2, pad, Buffer.from([0, 0, 0, 0]));
    expect(bar.padding.droppedWrites).toBe(before + 1);
    expect([...(await client.regionRead(BAR2, pad, 4))]).toEqual([0xff, 0xff, 0xff, 0xff]);
    expect([...(await client.regionRead(BAR2, 128 * 1024 * 1024 - 8, 8))]).toEqual(new Array(8).fill(0xff));
    // the file behind the memory is not grown or touched by padding writes
    expect(fs.statSync(d.aperturePath).size).toBe(d.apertureSize);
  });

  it('splits an access that crosses the end of memory', async () => {
    const end = d.apertureSize;
    await client.regionWrite(BAR2, end - 2, Buffer.from([0xaa, 0xbb, 0xcc, 0xdd]));
    expect([...(await client.regionRead(BAR2, end - 2, 4))]).toEqual([0xaa, 0xbb, 0xff, 0xff]);
    expect([...fs.readFileSync(d.aperturePath).subarray(end - 2, end)]).toEqual([0xaa, 0xbb]);
  });

  it('refuses accesses past the BAR end and to absent regions', async () => {
    await expect(client.regionRead(BAR2, 128 * 1024 * 1024 - 2, 4)).rejects.toMatchObject({ errno: 22 });
    await expect(client.regionRead(RegionIndex.BAR4, 0, 4)).rejects.toBeInstanceOf(RequestError);
    await expect(client.regionRead(42, 0, 4)).rejects.toMatchObject({ errno: 22 });
    // the session survives errors
    expect((await client.regionRead(RegionIndex.CONFIG, 0, 2)).readUInt16LE(0)).toBe(0x10de);
  });

  it('sizes the BARs through config space like hardware', async () => {
    const cfg = RegionIndex.CONFIG;
    const ones = Buffer.from([0xff, 0xff, 0xff, 0xff]);
    await client.regionWrite(cfg, 0x18, ones);
    await client.regionWrite(cfg, 0x1c, ones);
    expect((await client.regionRead(cfg, 0x18, 4)).readUInt32LE(0)).toBe((~(128 * 1024 * 1024 - 1) & ~0xf | 0xc) >>> 0);
    expect((await client.regionRead(cfg, 0x1c, 4)).readUInt32LE(0)).toBe(0xffffffff);
    await client.regionWrite(cfg, 0x10, ones);
    expect((await client.regionRead(cfg, 0x10, 4)).readUInt32LE(0)).toBe(0xff000004);
    await client.regionWrite(cfg, 0x20, ones);
    expect((await client.regionRead(cfg, 0x20, 4)).readUInt32LE(0)).toBe(0);
  });

  it('does not reply to posted writes and keeps order', async () => {
    client.postRegionWrite(BAR2, 0x1000, Buffer.from([9, 9, 9, 9]));
    client.postWriteMulti([
      { region: BAR2, offset: 0x1004, data: Buffer.from([1, 2]) },
      { region: BAR2, offset: 0x1006, data: Buffer.from([3, 4]) },
    ]);
    expect([...(await client.regionRead(BAR2, 0x1000, 8))]).toEqual([9, 9, 9, 9, 1, 2, 3, 4]);
  });

  it('advertises the host page size for DMA maps and takes QEMU\'s 4096 proposal on any host', async () => {
    const page = native.pageSize();
    expect(QEMU_LIKE_CAPS.pgsizes).toBe(4096);
    expect(version.capabilities?.pgsizes).toBe(page);
    const rw = DmaMapFlag.READ | DmaMapFlag.WRITE;
    // Maps at the advertised size work; with pages above 4 KiB a 4 KiB-aligned one is refused.
    await client.dmaMap(16 * page, page, rw);
    if (page > 4096) await expect(client.dmaMap(32 * page + 4096, page, rw)).rejects.toMatchObject({ errno: 22 });
    await expect(client.dmaMap(32 * page + page / 2, page, rw)).rejects.toMatchObject({ errno: 22 });
    expect(d.running.daemon.device.dma.count).toBe(1);
  });

  it('records DMA maps with and without fds and releases them on disconnect', async () => {
    const mfd = native.memfdCreate('guest-ram', 0);
    fs.ftruncateSync(mfd, 1 << 20);
    const rw = DmaMapFlag.READ | DmaMapFlag.WRITE;
    await client.dmaMap(0x100000, 1 << 20, rw, mfd, 0);
    native.closeFd(mfd);
    await client.dmaMap(0xc0000, 0x20000, DmaMapFlag.READ);
    const dma = d.running.daemon.device.dma;
    expect(dma.count).toBe(2);
    await expect(client.dmaMap(0x100000, PAGE, rw)).rejects.toMatchObject({ errno: 17 });
    // the server can reach the client's memory through the fd
    dma.view(0x100010, 4, true).set([7, 7, 7, 7]);
    await client.dmaUnmap(0xc0000, 0x20000);
    expect(dma.count).toBe(1);
    client.close();
    await until(() => dma.count === 0, 'maps released after disconnect');
  });

  it('assigns, triggers and releases interrupt eventfds', async () => {
    const efd = native.eventfd(0, native.EFD_NONBLOCK);
    await client.setIrqs(IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, IrqIndex.MSIX, 3, 1, [efd]);
    expect(native.eventfdRead(efd)).toBe(-1);
    await client.setIrqs(IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, IrqIndex.MSIX, 3, 1);
    expect(native.eventfdRead(efd)).toBe(1);
    const irqs = d.running.daemon.device.interrupts;
    expect(irqs.isAssigned(IrqIndex.MSIX, 3)).toBe(true);
    await client.setIrqs(IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, IrqIndex.MSIX, 0, 0);
    expect(irqs.isAssigned(IrqIndex.MSIX, 3)).toBe(false);
    native.closeFd(efd);
  });

  it('unmasks INTx when the client signals its unmask eventfd', async () => {
    const trigger = native.eventfd(0, native.EFD_NONBLOCK);
    const unmask = native.eventfd(0, native.EFD_NONBLOCK);
    await client.setIrqs(IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, IrqIndex.INTX, 0, 1, [trigger]);
    await client.setIrqs(IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_UNMASK, IrqIndex.INTX, 0, 1, [unmask]);
    const irqs = d.running.daemon.device.interrupts;
    irqs.trigger(IrqIndex.INTX, 0);
    expect(native.eventfdRead(trigger)).toBe(1);
    irqs.trigger(IrqIndex.INTX, 0); // automasked: held back
    expect(native.eventfdRead(trigger)).toBe(-1);
    native.eventfdWrite(unmask, 1);
    await until(() => !irqs.isMasked(IrqIndex.INTX, 0) || native.eventfdRead(trigger) === 1, 'unmask through the eventfd');
    native.closeFd(trigger);
    native.closeFd(unmask);
  });

  it('keeps aperture contents across clients and refuses a second client', async () => {
    await client.regionWrite(BAR2, 0x4000, Buffer.from('tenant-A'));
    const second = VfioUserClient.connect(d.socket);
    await expect(second.negotiate()).rejects.toThrow(/closed/);
    client.close();
    await until(() => d.running.daemon.client === null, 'first client gone');
    const next = VfioUserClient.connect(d.socket);
    try {
      await next.negotiate();
      expect((await next.regionRead(BAR2, 0x4000, 8)).toString()).toBe('tenant-A');
    } finally {
      next.close();
    }
  });

  it('resets emulated registers but not memory', async () => {
    await client.regionWrite(RegionIndex.CONFIG, 0x18, Buffer.from([0, 0, 0, 0x80]));
    await client.regionWrite(BAR2, 0x10, Buffer.from([5]));
    await client.reset();
    expect((await client.regionRead(RegionIndex.CONFIG, 0x18, 4)).readUInt32LE(0)).toBe(0xc);
    expect((await client.regionRead(BAR2, 0x10, 1))[0]).toBe(5);
    // BAR0 readiness registers read ready
    expect((await client.regionRead(RegionIndex.BAR0, 0x1498, 4)).readUInt32LE(0)).toBe(0xff);
    expect((await client.regionRead(RegionIndex.BAR0, 0x200bc, 4)).readUInt32LE(0)).toBe(0xff);
  });

  it('answers DEVICE_FEATURE with an error', async () => {
    const { encodeDeviceFeature } = await import('../helpers/fuzz-messages.js');
    await expect(client.request(encodeDeviceFeature(client.id(), 16, (1 << 16) | 1))).rejects.toMatchObject({ errno: 95 });
  });
});

describe('a scrub that fails', () => {
  const stops: (() => void)[] = [];
  afterEach(() => {
    for (const s of stops.splice(0)) s();
  });

  it('admits no client until a retry has cleaned the memory, and counts the failure', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-scrubfail-'));
    const socket = path.join(dir, 'gpu.sock');
    const { device } = makeDevice();
    let attempts = 0;
    let failing = true;
    const statuses: string[] = [];
    let ready = false;
    const daemon = new Daemon(device, createLogger(process.env['NVGRACE_TEST_LOG'] ?? 'silent'), {
      socketPath: socket,
      socketMode: 0o600,
      scrubRetryMs: 50,
      onStatus: (s) => statuses.push(s),
      onReady: () => (ready = true),
      scrub: {
        mode: 'on-start',
        run: async () => {
          attempts++;
          if (failing) throw new Error('no memory for the page tables');
          return 'done';
        },
      },
    });
    daemon.start();
    stops.push(() => {
      daemon.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    // the connection waits in the backlog: VERSION is not answered while the memory is dirty
    const c = VfioUserClient.connect(socket);
    stops.unshift(() => c.close());
    let negotiated = false;
    const version = c.negotiate().then(() => (negotiated = true));
    await until(() => attempts >= 3, 'three failed scrubs');
    expect(negotiated).toBe(false);
    expect(ready).toBe(false);
    expect(daemon.counters.scrubFailures).toBeGreaterThanOrEqual(2);
    expect(statuses.some((s) => /^scrub failed \(no memory for the page tables\); retrying in \d+ s$/.test(s))).toBe(true);

    failing = false;
    await version;
    expect(ready).toBe(true);
    let lastFailure = -1;
    statuses.forEach((s, i) => s.startsWith('scrub failed') && (lastFailure = i));
    expect(statuses.slice(lastFailure + 1)).toEqual(['scrubbing 0%', 'waiting for a client', expect.stringMatching(/^client pid \d+ attached$/)]);
    expect(daemon.counters.summary()['scrub_failures']).toBe(attempts - 1);
  });

  it('stops retrying when the daemon stops', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-scrubfail-'));
    const { device } = makeDevice();
    let attempts = 0;
    const daemon = new Daemon(device, createLogger('silent'), {
      socketPath: path.join(dir, 'gpu.sock'),
      socketMode: 0o600,
      scrubRetryMs: 20,
      scrub: {
        mode: 'on-start',
        run: () => {
          attempts++;
          throw new Error('fails at once'); // thrown, not rejected: handled the same
        },
      },
    });
    daemon.start();
    await until(() => attempts >= 2, 'a retry');
    daemon.stop();
    fs.rmSync(dir, { recursive: true, force: true });
    const seen = attempts;
    await new Promise((r) => setTimeout(r, 100));
    expect(attempts).toBe(seen);
  });
});
