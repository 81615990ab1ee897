// A daemon whose BAR0 is a passed-through host function (a fake one), over a real socket
// with our client: the client maps the host's fd itself, interrupts go to the host driver,
// and a reset that waits for the device holds back the commands behind it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../src/client/client.js';
import { dmaFileOps, eventfdSink } from '../../src/backends/client-memory.js';
import { FdMemory } from '../../src/backends/fd-memory.js';
import { GpuDevice } from '../../src/device/gpu-device.js';
import { PassthroughFunction } from '../../src/device/passthrough-function.js';
import { createLogger } from '../../src/log.js';
import { native } from '../../src/native/native.js';
import { Daemon } from '../../src/server/daemon.js';
import { DmaMapFlag, IrqIndex, IrqSetFlag, Limits, RegionIndex } from '../../src/wire/constants.js';
import { FakeHost } from '../helpers/fake-host.js';

const MiB = 1 << 20;
const stops: (() => void)[] = [];
afterEach(() => {
  for (const s of stops.splice(0)) s();
});

function serve(host: FakeHost, readyMs = 0, timeoutMs = 5000) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-pt-'));
  const socket = path.join(dir, 'gpu.sock');
  const aperture = native.memfdCreate('aperture', 0);
  fs.ftruncateSync(aperture, MiB);
  const fn = new PassthroughFunction(host, { readiness: { mode: 'auto', timeoutMs, intervalMs: 10 } });
  // an NVIDIA host becomes ready readyMs after each reset
  let resetAt = 0;
  const realReset = host.reset.bind(host);
  host.reset = () => {
    realReset();
    resetAt = Date.now();
    host.bar0.writeUInt32LE(0, 0x1498);
    host.bar0.writeUInt32LE(0, 0x200bc);
  };
  host.onBar0Read = () => {
    if (Date.now() - resetAt >= readyMs) {
      host.bar0.writeUInt32LE(0xff, 0x1498);
      host.bar0.writeUInt32LE(0xff, 0x200bc);
    }
  };
  const device = new GpuDevice({ function: fn, aperture: new FdMemory(aperture, 0, MiB), pageSize: 4096, events: eventfdSink, dmaOps: dmaFileOps, maxDmaMaps: Limits.MAX_DMA_MAPS });
  const daemon = new Daemon(device, createLogger(process.env['NVGRACE_TEST_LOG'] ?? 'silent'), { socketPath: socket, socketMode: 0o600 });
  daemon.start();
  stops.push(() => {
    daemon.stop();
    host.close();
    native.closeFd(aperture);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { socket, daemon };
}

async function client(socket: string): Promise<VfioUserClient> {
  const c = VfioUserClient.connect(socket);
  stops.unshift(() => c.close());
  await c.negotiate();
  return c;
}

describe('daemon passing a host function through', () => {
  it('hands the client the host fd for BAR0, with the host areas, and forwards trapped accesses', async () => {
    const host = new FakeHost({ bar0Areas: [{ offset: 0, size: 0xf0000 }] });
    const { socket } = serve(host);
    const c = await client(socket);
    const { info, fd } = await c.regionInfo(RegionIndex.BAR0);
    expect(info.size).toBe(MiB);
    expect(info.sparseAreas).toEqual([{ offset: 0, size: 0xf0000 }]);
    expect(fd).not.toBeNull();
    // the fd is the host's: what the host device has there, the client sees
    const hostBytes = Buffer.alloc(4);
    hostBytes.writeUInt32LE(0x010000ed);
    fs.writeSync(host.bar0Fd, hostBytes, 0, 4, 0x100);
    const map = native.mmap(fd!, 0xf0000, native.PROT_READ, native.MAP_SHARED, info.offset);
    expect(new Uint32Array(map)[0x100 / 4]).toBe(0x010000ed);
    native.munmap(map);
    native.closeFd(fd!);

    await c.regionWrite(RegionIndex.BAR0, 0x04, Buffer.from([0x78, 0x56, 0x34, 0x12]));
    expect(host.bar0.readUInt32LE(0x04)).toBe(0x12345678);
    const cfg = await c.regionRead(RegionIndex.CONFIG, 0, 4);
    expect(cfg.readUInt32LE(0)).toBe(0x11e81234);
    expect((await c.irqInfo(IrqIndex.MSI)).count).toBe(1);
    expect((await c.irqInfo(IrqIndex.MSIX)).count).toBe(0);
  });

  it('gives the client eventfds to the host driver, maps its memory into the IOMMU, and undoes both when it leaves', async () => {
    const host = new FakeHost();
    const { socket, daemon } = serve(host);
    const c = await client(socket);
    const efd = native.eventfd(0, 0);
    const mem = native.memfdCreate('client-ram', 0);
    fs.ftruncateSync(mem, 2 * MiB);
    try {
      await c.setIrqs(IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, IrqIndex.MSI, 0, 1, [efd]);
      expect(host.irqCalls).toHaveLength(1);
      expect(host.irqCalls[0]!.eventfds).toHaveLength(1);
      expect(typeof host.irqCalls[0]!.eventfds![0]).toBe('number'); // the daemon's copy of the client's fd
      await c.dmaMap(0x100000, 2 * MiB, DmaMapFlag.READ | DmaMapFlag.WRITE, mem, 0);
      expect(host.dmaEvents).toEqual(['map 0x100000+0x200000 fd=yes']);
      const idle = daemon.whenIdle();
      c.close();
      await idle;
      expect(host.dmaEvents).toEqual(['map 0x100000+0x200000 fd=yes', 'unmap 0x100000+0x200000']);
      expect(host.irqCalls[1]).toEqual({ flags: IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, index: IrqIndex.MSI, start: 0, count: 0 });
    } finally {
      native.closeFd(efd);
      native.closeFd(mem);
    }
  });

  it('answers DEVICE_RESET only once a GPU is ready again, and serves later commands after it, in order', async () => {
    const host = new FakeHost({ vendorId: 0x10de });
    const { socket } = serve(host, 150);
    const c = await client(socket);
    await c.regionWrite(RegionIndex.CONFIG, 0x18, Buffer.from([0, 0, 0, 0xa0]));
    const order: string[] = [];
    const t0 = Date.now();
    const reset = c.reset().then(() => order.push('reset'));
    const read = c.regionRead(RegionIndex.CONFIG, 0x18, 4).then((b) => {
      order.push('read');
      return b.readUInt32LE(0);
    });
    const [, bar2] = await Promise.all([reset, read]);
    expect(order).toEqual(['reset', 'read']);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    expect(host.resets).toBe(1);
    expect(bar2).toBe(0xc); // the emulated BAR register was cleared by the reset
  });

  it('replies with an error when the GPU never becomes ready, and keeps serving', async () => {
    const host = new FakeHost({ vendorId: 0x10de });
    const { socket } = serve(host, 60_000, 200);
    const c = await client(socket);
    await expect(c.reset()).rejects.toMatchObject({ errno: 110 }); // ETIMEDOUT
    expect((await c.regionRead(RegionIndex.CONFIG, 0, 2)).readUInt16LE(0)).toBe(0x10de);
  });
});
