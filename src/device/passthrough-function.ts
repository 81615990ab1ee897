import { Errno, IRQ_SET_DATA_MASK, IrqSetFlag, PCI_NUM_IRQS, RegionIndex } from '../wire/constants.js';
import { DeviceError } from './errors.js';
import type { IrqSet } from '../wire/messages.js';
import type { DmaObserver } from './dma-maps.js';
import type { HostFunction, HostRegion } from './host-function.js';
import type { IrqKind, IrqRoute } from './interrupts.js';
import { PassthroughConfig } from './passthrough-config.js';
import { Cfg } from './pci.js';
import type { PciFunction } from './pci-function.js';
import { DEFAULT_READINESS, READINESS_REGISTERS, readinessApplies, waitReady, type ReadinessOptions } from './readiness.js';
import type { Region, RegionMmap } from './region.js';

const IRQ_NAMES = ['INTx', 'MSI', 'MSI-X', 'ERR', 'REQ'];

export class PassthroughError extends Error {}

/** A region of the host function, read and written in place and mapped straight from the host's fd. */
export class PassthroughRegion implements Region {
  readonly index: number;
  readonly size: number;
  readonly readable: boolean;
  readonly writable: boolean;
  readonly mmap: RegionMmap | null;

  constructor(
    private readonly host: HostFunction,
    r: HostRegion,
  ) {
    this.index = r.index;
    this.size = r.size;
    this.readable = r.readable;
    this.writable = r.writable;
    this.mmap = r.mmap;
  }

  read(offset: number, dst: Uint8Array, dstOffset: number, count: number): void {
    this.host.read(this.index, offset, dst, dstOffset, count);
  }

  write(offset: number, src: Uint8Array, srcOffset: number, count: number): void {
    this.host.write(this.index, offset, src, srcOffset, count);
  }
}

export interface PassthroughOptions {
  readiness?: ReadinessOptions;
}

/**
 * A host function passed through: config space, BARs and ROM are the host's
 * (the device lays its memory BARs' registers over config space); the host driver
 * signals the client's eventfds and the host IOMMU maps the client's memory.
 */
export class PassthroughFunction implements PciFunction {
  readonly config: PassthroughConfig;
  readonly bar0: PassthroughRegion;
  readonly irqKinds: IrqKind[];
  readonly irqRoute: IrqRoute;
  readonly vendorId: number;
  private readonly regions = new Map<number, PassthroughRegion>();
  private readonly readiness: ReadinessOptions;
  private readonly scratch = Buffer.alloc(4);

  constructor(
    readonly host: HostFunction,
    opts: PassthroughOptions = {},
  ) {
    this.readiness = opts.readiness ?? DEFAULT_READINESS;
    const cfg = host.region(RegionIndex.CONFIG);
    if (!cfg || !cfg.readable || !cfg.writable) throw new PassthroughError(`${host.description}: no readable and writable config space`);
    this.config = new PassthroughConfig({
      size: cfg.size,
      read: (o, dst, at, n) => host.read(RegionIndex.CONFIG, o, dst, at, n),
      write: (o, src, at, n) => host.write(RegionIndex.CONFIG, o, src, at, n),
    });
    this.vendorId = this.config.read16(Cfg.VENDOR_ID);

    for (let i = RegionIndex.BAR0; i <= RegionIndex.ROM; i++) {
      const r = host.region(i);
      if (r) this.regions.set(i, new PassthroughRegion(host, r));
    }
    const bar0 = this.regions.get(RegionIndex.BAR0);
    if (!bar0) throw new PassthroughError(`${host.description}: the host function has no BAR0`);
    this.bar0 = bar0;
    if (readinessApplies(this.readiness.mode, this.vendorId)) {
      const need = Math.max(...READINESS_REGISTERS) + 4;
      if (bar0.size < need) {
        throw new PassthroughError(`${host.description}: BAR0 of ${bar0.size} bytes has no readiness registers (use --ready-wait off)`);
      }
    }

    this.irqKinds = [];
    for (let i = 0; i < PCI_NUM_IRQS; i++) {
      const irq = host.irq(i);
      this.irqKinds.push({ index: i, name: IRQ_NAMES[i]!, count: irq?.count ?? 0, flags: irq?.flags ?? 0 });
    }
    this.irqRoute = {
      apply: (req, fds) => this.applyIrqs(req, fds),
      disable: (index) => {
        try {
          host.setIrqs(IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, index, 0, 0, {});
        } catch {
          // the index was not enabled on the host, or the host is gone: nothing to undo
        }
      },
    };
  }

  get description(): string {
    return this.host.description;
  }

  get resettable(): boolean {
    return this.host.resettable;
  }

  get dmaObserver(): DmaObserver | null {
    return this.host.dma;
  }

  region(index: number): Region | null {
    return this.regions.get(index) ?? null;
  }

  reset(): void | Promise<void> {
    if (!this.host.resettable) throw new DeviceError(Errno.ENOTSUP, `${this.description} cannot be reset by its host driver`);
    this.host.reset();
    if (readinessApplies(this.readiness.mode, this.vendorId)) return this.waitReady();
  }

  ready(): Promise<void> | null {
    return readinessApplies(this.readiness.mode, this.vendorId) ? this.waitReady() : null;
  }

  close(): void {
    this.host.close();
  }

  private waitReady(): Promise<void> {
    return waitReady((offset) => {
      this.bar0.read(offset, this.scratch, 0, 4);
      return this.scratch.readUInt32LE(0);
    }, this.readiness);
  }

  private applyIrqs(req: IrqSet, fds: readonly number[]): void {
    const data = req.flags & IRQ_SET_DATA_MASK;
    if (data === IrqSetFlag.DATA_EVENTFD) {
      const eventfds = fds.length > 0 ? fds : new Array<null>(req.count).fill(null);
      this.host.setIrqs(req.flags, req.index, req.start, req.count, { eventfds });
    } else if (data === IrqSetFlag.DATA_BOOL) {
      this.host.setIrqs(req.flags, req.index, req.start, req.count, { bools: req.bools.subarray(0, req.count) });
    } else {
      this.host.setIrqs(req.flags, req.index, req.start, req.count, {});
    }
  }
}
