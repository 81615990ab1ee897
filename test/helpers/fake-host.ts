// A host PCI function without hardware, for the pass-through device model: regions are
// plain buffers (BAR0 also a memfd a client can map), and every call the device makes
// into the "host driver" is recorded.
import fs from 'node:fs';
import type { DmaMapping, DmaObserver } from '../../src/device/dma-maps.js';
import type { HostFunction, HostIrq, HostRegion } from '../../src/device/host-function.js';
import { native } from '../../src/native/native.js';

export interface FakeHostOptions {
  vendorId?: number;
  deviceId?: number;
  bar0Size?: number;
  /** Extra host regions by index (size), e.g. { 2: 4096 } for a host BAR2. */
  extraRegions?: Record<number, number>;
  /** BAR registers to put in config space, by BAR slot. */
  barRegisters?: Record<number, number>;
  irqCounts?: number[];
  resettable?: boolean;
  /** Sparse mmap areas of BAR0 (default: the whole BAR). */
  bar0Areas?: { offset: number; size: number }[];
}

export interface SetIrqsCall {
  flags: number;
  index: number;
  start: number;
  count: number;
  eventfds?: (number | null)[];
  bools?: number[];
}

export class FakeHost implements HostFunction {
  readonly description = 'fake host function';
  readonly config = Buffer.alloc(256);
  readonly bar0: Buffer;
  readonly bar0Fd: number;
  readonly resettable: boolean;
  readonly regions = new Map<number, HostRegion>();
  readonly buffers = new Map<number, Buffer>();
  readonly irqCalls: SetIrqsCall[] = [];
  readonly configWrites: { offset: number; bytes: number[] }[] = [];
  readonly dmaEvents: string[] = [];
  resets = 0;
  closed = false;
  /** Makes the next setIrqs throw this errno. */
  failIrqsWith: number | null = null;
  /** Called on every BAR0 read of 4 bytes at `offset` (readiness polling). */
  onBar0Read: ((offset: number) => void) | null = null;
  readonly dma: DmaObserver;
  private readonly irqInfo: HostIrq[];

  constructor(o: FakeHostOptions = {}) {
    this.resettable = o.resettable ?? true;
    const bar0Size = o.bar0Size ?? 1 << 20;
    this.config.writeUInt16LE(o.vendorId ?? 0x1234, 0);
    this.config.writeUInt16LE(o.deviceId ?? 0x11e8, 2);
    this.config.writeUInt16LE(0x0010, 6); // status: capability list
    this.config[0x34] = 0x40;
    this.config[0x40] = 0x05; // MSI capability, end of the list
    for (const [slot, v] of Object.entries(o.barRegisters ?? {})) this.config.writeUInt32LE(v >>> 0, 0x10 + 4 * Number(slot));
    this.bar0Fd = native.memfdCreate('fake-bar0', 0);
    fs.ftruncateSync(this.bar0Fd, bar0Size);
    this.bar0 = Buffer.alloc(bar0Size);
    this.buffers.set(0, this.bar0);
    this.buffers.set(7, this.config);
    this.regions.set(0, {
      index: 0,
      size: bar0Size,
      readable: true,
      writable: true,
      mmap: { fd: this.bar0Fd, fdOffset: 0, areas: o.bar0Areas ?? [{ offset: 0, size: bar0Size }] },
    });
    this.regions.set(7, { index: 7, size: 256, readable: true, writable: true, mmap: null });
    for (const [index, size] of Object.entries(o.extraRegions ?? {})) {
      this.regions.set(Number(index), { index: Number(index), size, readable: true, writable: true, mmap: null });
      this.buffers.set(Number(index), Buffer.alloc(size));
    }
    const counts = o.irqCounts ?? [1, 1, 0, 0, 1];
    this.irqInfo = counts.map((count, i) => ({ count, flags: i === 0 ? 0x7 : 0x1 }));
    this.dma = {
      mapped: (m: Readonly<DmaMapping>) => {
        this.dmaEvents.push(`map 0x${m.address.toString(16)}+0x${m.size.toString(16)} fd=${m.fd === null ? 'none' : 'yes'}`);
      },
      unmapped: (m: Readonly<DmaMapping>) => {
        this.dmaEvents.push(`unmap 0x${m.address.toString(16)}+0x${m.size.toString(16)}`);
      },
    };
  }

  region(index: number): HostRegion | null {
    return this.regions.get(index) ?? null;
  }

  read(index: number, offset: number, dst: Uint8Array, dstOffset: number, count: number): void {
    if (index === 0 && count === 4) this.onBar0Read?.(offset);
    this.buffers.get(index)!.copy(dst, dstOffset, offset, offset + count);
  }

  write(index: number, offset: number, src: Uint8Array, srcOffset: number, count: number): void {
    if (index === 7) this.configWrites.push({ offset, bytes: [...src.subarray(srcOffset, srcOffset + count)] });
    Buffer.from(src.buffer, src.byteOffset + srcOffset, count).copy(this.buffers.get(index)!, offset);
  }

  irq(index: number): HostIrq | null {
    const i = this.irqInfo[index];
    return i && i.count > 0 ? i : null;
  }

  setIrqs(flags: number, index: number, start: number, count: number, data: { eventfds?: readonly (number | null)[]; bools?: Uint8Array }): void {
    if (this.failIrqsWith !== null) {
      const errno = this.failIrqsWith;
      this.failIrqsWith = null;
      throw Object.assign(new Error('VFIO_DEVICE_SET_IRQS failed'), { errno });
    }
    const call: SetIrqsCall = { flags, index, start, count };
    if (data.eventfds) call.eventfds = [...data.eventfds];
    if (data.bools) call.bools = [...data.bools];
    this.irqCalls.push(call);
  }

  reset(): void {
    this.resets++;
  }

  close(): void {
    if (!this.closed) native.closeFd(this.bar0Fd);
    this.closed = true;
  }
}
