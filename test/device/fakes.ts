// In-memory stand-ins for what the device model gets injected: memory backings,
// a BAR0 source, an eventfd sink and DMA file operations. No I/O anywhere.
import type { Bar0Source } from '../../src/device/bar0-source.js';
import type { DmaFileOps } from '../../src/device/dma-maps.js';
import { GpuDevice, DEFAULT_IDENTITY, type EmulatedDeviceOptions } from '../../src/device/gpu-device.js';
import type { EventSink } from '../../src/device/interrupts.js';
import type { MemoryBacking } from '../../src/device/memory-bar.js';
import { Errno } from '../../src/wire/constants.js';
import { DeviceError } from '../../src/device/errors.js';

/**
 * Memory of any size (up to 2^53), sparse: only bytes written are stored, the
 * rest read as `fill`. Accesses outside [0, size) throw, so a caller that
 * forgets to split at the end of memory is caught.
 */
export class FakeMemory implements MemoryBacking {
  private readonly bytes = new Map<number, number>();
  readonly reads: { offset: number; count: number }[] = [];
  readonly writes: { offset: number; count: number }[] = [];

  constructor(
    readonly size: number,
    readonly fd = 100,
    readonly fdOffset = 0,
    private readonly fill = 0,
  ) {}

  private check(offset: number, count: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || count < 0 || offset + count > this.size) {
      throw new Error(`FakeMemory: access [${offset}, +${count}) outside ${this.size} bytes`);
    }
  }

  read(offset: number, dst: Uint8Array, dstOffset: number, count: number): void {
    this.check(offset, count);
    this.reads.push({ offset, count });
    for (let i = 0; i < count; i++) dst[dstOffset + i] = this.bytes.get(offset + i) ?? this.fill;
  }

  write(offset: number, src: Uint8Array, srcOffset: number, count: number): void {
    this.check(offset, count);
    this.writes.push({ offset, count });
    for (let i = 0; i < count; i++) this.bytes.set(offset + i, src[srcOffset + i]!);
  }

  /** Test-side access that is not recorded. */
  peek(offset: number, count: number): number[] {
    return Array.from({ length: count }, (_, i) => this.bytes.get(offset + i) ?? this.fill);
  }

  poke(offset: number, values: readonly number[]): void {
    values.forEach((v, i) => this.bytes.set(offset + i, v));
  }

  /** Fills every byte with a pattern of its address (only sensible for small sizes). */
  pattern(): this {
    for (let i = 0; i < this.size; i++) this.bytes.set(i, (i * 7 + 3) & 0xff);
    return this;
  }
}

export class FakeBar0 implements Bar0Source {
  readonly kind = 'fake';
  readonly description = 'in-memory test BAR0';
  readonly memory: FakeMemory;
  resets = 0;
  closed = 0;

  constructor(readonly barSize = 16 * 1024 * 1024, memorySize = barSize) {
    this.memory = new FakeMemory(memorySize, 200);
  }

  reset(): void {
    this.resets++;
  }

  close(): void {
    this.closed++;
  }
}

export class FakeEvents implements EventSink {
  readonly signals: number[] = [];
  readonly closed: number[] = [];
  /** Watched unmask fds and how to fire them, as if the client signalled them. */
  readonly watched = new Map<number, () => void>();
  /** fds check() refuses, as if they were not eventfds. */
  readonly notEventfds = new Set<number>();

  check(fd: number): void {
    if (this.notEventfds.has(fd)) throw new DeviceError(Errno.EINVAL, `fd ${fd} is not an eventfd`);
  }

  watch(fd: number, onSignal: () => void): () => void {
    if (this.watched.has(fd)) throw new Error(`fd ${fd} watched twice`);
    this.watched.set(fd, onSignal);
    return () => this.watched.delete(fd);
  }

  /** The client signals `fd`. */
  fire(fd: number): void {
    const cb = this.watched.get(fd);
    if (!cb) throw new Error(`fd ${fd} is not watched`);
    cb();
  }

  signal(fd: number): void {
    if (this.closed.includes(fd)) throw new Error(`signal of closed fd ${fd}`);
    this.signals.push(fd);
  }

  close(fd: number): void {
    if (this.closed.includes(fd)) throw new Error(`fd ${fd} closed twice`);
    if (this.watched.has(fd)) throw new Error(`fd ${fd} closed while still watched`);
    this.closed.push(fd);
  }
}

export class FakeDmaOps implements DmaFileOps {
  readonly checks: { fd: number; offset: number; size: number }[] = [];
  readonly maps: { fd: number; offset: number; size: number; writable: boolean; memory: ArrayBuffer }[] = [];
  readonly unmapped: ArrayBuffer[] = [];
  readonly closed: number[] = [];
  /** fds whose check fails with EBADF. */
  readonly bad = new Set<number>();

  check(fd: number, offset: number, size: number): void {
    this.checks.push({ fd, offset, size });
    if (this.bad.has(fd)) throw new DeviceError(Errno.EBADF, `fd ${fd} is bad`);
  }

  map(fd: number, offset: number, size: number, writable: boolean): ArrayBuffer {
    const memory = new ArrayBuffer(size);
    this.maps.push({ fd, offset, size, writable, memory });
    return memory;
  }

  unmap(memory: ArrayBuffer): void {
    this.unmapped.push(memory);
  }

  close(fd: number): void {
    if (this.closed.includes(fd)) throw new Error(`fd ${fd} closed twice`);
    this.closed.push(fd);
  }
}

export interface TestDevice {
  device: GpuDevice;
  bar0: FakeBar0;
  aperture: FakeMemory;
  events: FakeEvents;
  dmaOps: FakeDmaOps;
}

export function makeDevice(opts: Partial<EmulatedDeviceOptions> & { apertureSize?: number } = {}): TestDevice {
  const bar0 = (opts.bar0 as FakeBar0 | undefined) ?? new FakeBar0();
  const aperture = (opts.aperture as FakeMemory | undefined) ?? new FakeMemory(opts.apertureSize ?? 96 * 1024 * 1024 + 100, 300);
  const events = (opts.events as FakeEvents | undefined) ?? new FakeEvents();
  const dmaOps = (opts.dmaOps as FakeDmaOps | undefined) ?? new FakeDmaOps();
  const device = new GpuDevice({
    identity: opts.identity ?? DEFAULT_IDENTITY,
    bar0,
    aperture,
    pageSize: opts.pageSize ?? 4096,
    events,
    dmaOps,
    maxDmaMaps: opts.maxDmaMaps ?? 16,
    ...(opts.msixVectors !== undefined ? { msixVectors: opts.msixVectors } : {}),
    ...(opts.layout !== undefined ? { layout: opts.layout } : {}),
  });
  return { device, bar0, aperture, events, dmaOps };
}
