import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { FdMemory } from '../../src/backends/fd-memory.js';
import type { DmaFileOps } from '../../src/device/dma-maps.js';
import { GpuDevice } from '../../src/device/gpu-device.js';
import type { EventSink } from '../../src/device/interrupts.js';
import type { LayoutName } from '../../src/device/layout.js';
import { PassthroughFunction } from '../../src/device/passthrough-function.js';
import type { ReadinessOptions } from '../../src/device/readiness.js';
import { native } from '../../src/native/native.js';
import { IrqSetFlag } from '../../src/wire/constants.js';
import type { IrqSet } from '../../src/wire/messages.js';
import { FakeHost, type FakeHostOptions } from '../helpers/fake-host.js';

const MiB = 1 << 20;
const closed: number[] = [];
const sink: EventSink = {
  check: () => {},
  signal: () => {},
  watch: () => {
    throw new Error('a host function watches its own unmask eventfds');
  },
  close: (fd) => closed.push(fd),
};
const dmaOps: DmaFileOps = {
  check() {},
  map: () => new ArrayBuffer(8),
  unmap() {},
  close: (fd) => closed.push(fd),
};

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanup.splice(0)) f();
  closed.length = 0;
});

function device(hostOpts: FakeHostOptions = {}, readiness?: ReadinessOptions, layout: LayoutName = 'bar2') {
  const host = new FakeHost(hostOpts);
  const memfd = native.memfdCreate('aperture', 0);
  fs.ftruncateSync(memfd, 2 * MiB);
  cleanup.push(() => {
    host.close();
    native.closeFd(memfd);
  });
  const fn = new PassthroughFunction(host, readiness ? { readiness } : {});
  const dev = new GpuDevice({ function: fn, aperture: new FdMemory(memfd, 0, 2 * MiB), layout, pageSize: 4096, events: sink, dmaOps, maxDmaMaps: 16 });
  return { host, fn, dev };
}

function cfg32(dev: GpuDevice, offset: number): number {
  const b = Buffer.alloc(4);
  dev.region(7)!.read(offset, b, 0, 4);
  return b.readUInt32LE(0);
}

function irqSet(flags: number, index: number, start: number, count: number, bools = new Uint8Array()): IrqSet {
  return { argsz: 20 + bools.length, flags, index, start, count, bools };
}

const EVENTFD_TRIGGER = IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER;

describe('a passed-through host function behind the device', () => {
  it('shows the host regions, BAR0 mapped from the host fd with the host areas, and the aperture at BAR2', () => {
    const areas = [
      { offset: 0, size: 0x8000 },
      { offset: 0xa000, size: MiB - 0xa000 },
    ];
    const { host, dev } = device({ bar0Areas: areas, extraRegions: { 4: 4096, 6: 0x10000 } });
    const bar0 = dev.region(0)!;
    expect(bar0.size).toBe(MiB);
    expect(bar0.mmap).toEqual({ fd: host.bar0Fd, fdOffset: 0, areas });
    expect(dev.region(4)!.size).toBe(4096);
    expect(dev.region(6)!.size).toBe(0x10000); // the ROM
    expect(dev.region(2)).toBe(dev.aperture);
    expect(dev.region(1)).toBeNull();
    expect(dev.region(7)!.size).toBe(256);

    // trapped BAR0 accesses go to the host region, in place
    dev.region(0)!.write(0x100, Buffer.from([1, 2, 3, 4]), 0, 4);
    expect(host.bar0.readUInt32LE(0x100)).toBe(0x04030201);
    host.bar0.writeUInt32LE(0xcafe, 0x200);
    const b = Buffer.alloc(4);
    dev.region(0)!.read(0x200, b, 0, 4);
    expect(b.readUInt32LE(0)).toBe(0xcafe);
  });

  it('presents the host identity and capabilities with the aperture BAR registers over them', () => {
    const { dev } = device({ barRegisters: { 0: 0xfe800000 } });
    expect(cfg32(dev, 0)).toBe(0x11e81234);
    expect(cfg32(dev, 0x10)).toBe(0xfe800000);
    expect(cfg32(dev, 0x18)).toBe(0xc);
    const caps = Buffer.alloc(2);
    dev.region(7)!.read(0x40, caps, 0, 1);
    expect(caps[0]).toBe(0x05);
    expect(dev.flags).toBe(3); // PCI | RESET
  });

  it('refuses a host function with its own BAR where a memory BAR of the layout goes', () => {
    expect(() => device({ extraRegions: { 2: 4096 } })).toThrow(
      'fake host function has a BAR2 of 4096 bytes where the memory BAR2/3 of layout bar2 goes (another --layout may leave it free)',
    );
    expect(() => device({ extraRegions: { 3: 4096 } })).toThrow(/BAR3 of 4096 bytes where the memory BAR2\/3/);
    // a 64-bit BAR1 has its upper half in slot 2
    expect(() => device({ extraRegions: { 1: 4096 }, barRegisters: { 1: 0x0000000c } })).toThrow(/its 64-bit BAR1 uses slot 2, where the memory BAR of layout bar2 goes/);
    expect(() => device({ extraRegions: { 1: 4096 }, barRegisters: { 1: 0x00000000 } })).not.toThrow();
    expect(() => device({ extraRegions: { 4: 4096 } }, undefined, 'gb')).toThrow(/BAR4 of 4096 bytes where the memory BAR4\/5 of layout gb goes/);
  });

  it('passes a host BAR2 through when the layout puts the memory at BAR4 (Grace Blackwell)', () => {
    const { host, dev } = device({ extraRegions: { 2: 0x10000 }, barRegisters: { 2: 0x0000000c } }, undefined, 'gb');
    expect(dev.region(2)!.size).toBe(0x10000);
    expect(dev.region(4)).toBe(dev.aperture);
    expect(cfg32(dev, 0x18)).toBe(0xc); // the host's own BAR2 register
    expect(cfg32(dev, 0x20)).toBe(0xc); // the memory BAR's, emulated
    dev.region(2)!.write(0x10, Buffer.from([9]), 0, 1);
    expect(host.buffers.get(2)![0x10]).toBe(9);
  });

  it('takes its interrupt counts from the host', () => {
    const { dev } = device({ irqCounts: [1, 1, 0, 0, 1] });
    expect(dev.interrupts.kinds.map((k) => [k.name, k.count])).toEqual([
      ['INTx', 1],
      ['MSI', 1],
      ['MSI-X', 0],
      ['ERR', 0],
      ['REQ', 1],
    ]);
  });

  it('hands SET_IRQS eventfds to the host driver and keeps them until de-assigned', () => {
    const { host, dev } = device();
    const fds = [101];
    dev.interrupts.set(irqSet(EVENTFD_TRIGGER, 1, 0, 1), fds);
    expect(fds).toEqual([]); // taken
    expect(host.irqCalls).toEqual([{ flags: EVENTFD_TRIGGER, index: 1, start: 0, count: 1, eventfds: [101] }]);
    expect(dev.interrupts.isAssigned(1, 0)).toBe(true);

    // de-assign: -1 to the host, our copy closed
    dev.interrupts.set(irqSet(EVENTFD_TRIGGER, 1, 0, 1), []);
    expect(host.irqCalls[1]).toEqual({ flags: EVENTFD_TRIGGER, index: 1, start: 0, count: 1, eventfds: [null] });
    expect(closed).toEqual([101]);

    // INTx unmask and a loopback trigger are the host's to do, not ours
    dev.interrupts.set(irqSet(IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_UNMASK, 0, 0, 1), []);
    dev.interrupts.set(irqSet(IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_TRIGGER, 0, 0, 1, new Uint8Array([1])), []);
    expect(host.irqCalls.slice(2)).toEqual([
      { flags: IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_UNMASK, index: 0, start: 0, count: 1 },
      { flags: IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_TRIGGER, index: 0, start: 0, count: 1, bools: [1] },
    ]);
  });

  it('leaves the fds with the caller when the host refuses them', () => {
    const { host, dev } = device();
    host.failIrqsWith = 22;
    const fds = [55];
    expect(() => dev.interrupts.set(irqSet(EVENTFD_TRIGGER, 1, 0, 1), fds)).toThrow(/SET_IRQS failed/);
    expect(fds).toEqual([55]);
    expect(dev.interrupts.isAssigned(1, 0)).toBe(false);
  });

  it('disables on the host what the client left enabled when it goes', () => {
    const { host, dev } = device();
    dev.interrupts.set(irqSet(EVENTFD_TRIGGER, 1, 0, 1), [7]);
    dev.interrupts.set(irqSet(EVENTFD_TRIGGER, 4, 0, 1), [8]);
    host.irqCalls.length = 0;
    dev.releaseClient();
    const disable = IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER;
    expect(host.irqCalls).toEqual([
      { flags: disable, index: 1, start: 0, count: 0 },
      { flags: disable, index: 4, start: 0, count: 0 },
    ]);
    expect(closed.sort()).toEqual([7, 8]);
  });

  it('tells the host IOMMU of every DMA map and unmap', () => {
    const { host, dev } = device();
    dev.dma.add(0x100000, 0x200000, 3, 40, 0);
    dev.dma.add(0x400000, 0x1000, 1, null, 0);
    dev.dma.remove(0x100000, 0x200000);
    dev.dma.add(0x800000, 0x1000, 3, 41, 0);
    dev.releaseClient();
    expect(host.dmaEvents).toEqual([
      'map 0x100000+0x200000 fd=yes',
      'map 0x400000+0x1000 fd=none',
      'unmap 0x100000+0x200000',
      'map 0x800000+0x1000 fd=yes',
      'unmap 0x400000+0x1000',
      'unmap 0x800000+0x1000',
    ]);
  });

  it('resets the host function and clears the emulated BAR registers; no wait for other vendors', () => {
    const { host, dev } = device();
    dev.region(7)!.write(0x18, Buffer.from([0, 0, 0, 0xa0]), 0, 4);
    expect(cfg32(dev, 0x18)).toBe(0xa000000c);
    const r = dev.reset();
    expect(r).toBeUndefined();
    expect(host.resets).toBe(1);
    expect(cfg32(dev, 0x18)).toBe(0xc);
  });

  it('waits for an NVIDIA GPU to be ready after the reset', async () => {
    const { host, fn, dev } = device({ vendorId: 0x10de }, { mode: 'auto', timeoutMs: 5000, intervalMs: 5 });
    let polls = 0;
    host.onBar0Read = () => {
      if (++polls === 6) {
        host.bar0.writeUInt32LE(0xff, 0x1498);
        host.bar0.writeUInt32LE(0xff, 0x200bc);
      }
    };
    expect(fn.ready()).not.toBeNull();
    dev.region(7)!.write(0x18, Buffer.from([0, 0, 0, 0xa0]), 0, 4);
    const pending = dev.reset();
    expect(pending).toBeInstanceOf(Promise);
    expect(host.resets).toBe(1);
    await pending;
    expect(polls).toBeGreaterThanOrEqual(6);
    expect(cfg32(dev, 0x18)).toBe(0xc);
  });

  it('fails the reset with the readiness error, BAR registers cleared all the same', async () => {
    const { dev } = device({ vendorId: 0x10de }, { mode: 'auto', timeoutMs: 20, intervalMs: 5 });
    dev.region(7)!.write(0x18, Buffer.from([0, 0, 0, 0xa0]), 0, 4);
    await expect(dev.reset()).rejects.toThrow(/device not ready after 20 ms: readiness registers read 0x1498=0x0 0x200bc=0x0/);
    expect(cfg32(dev, 0x18)).toBe(0xc);
  });

  it('skips the wait when told to, and refuses it for a BAR0 too small to hold the registers', () => {
    const off = device({ vendorId: 0x10de }, { mode: 'off', timeoutMs: 20, intervalMs: 5 });
    expect(off.fn.ready()).toBeNull();
    expect(() => device({ vendorId: 0x10de, bar0Size: 0x10000 }, { mode: 'on', timeoutMs: 20, intervalMs: 5 })).toThrow(/no readiness registers/);
  });

  it('refuses DEVICE_RESET when the host driver cannot reset the function', () => {
    const { dev } = device({ resettable: false });
    expect(dev.flags).toBe(2);
    expect(() => dev.reset()).toThrow(/cannot be reset/);
  });
});
