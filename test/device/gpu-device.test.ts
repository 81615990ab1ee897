import { describe, expect, it } from 'vitest';
import { MSI_CAP, MSIX_CAP, PM_CAP, EXP_CAP } from '../../src/device/capabilities.js';
import { DEFAULT_IDENTITY, apertureBarSize } from '../../src/device/gpu-device.js';
import { CapId, Cfg } from '../../src/device/pci.js';
import { DeviceFlag, DmaMapFlag, IrqIndex, IrqInfoFlag, IrqSetFlag, RegionIndex } from '../../src/wire/constants.js';
import { FakeBar0, FakeMemory, makeDevice } from './fakes.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

function w(device: ReturnType<typeof makeDevice>['device'], offset: number, width: 1 | 2 | 4, value: number): void {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0);
  device.region(RegionIndex.CONFIG)!.write(offset, b, 0, width);
}

/** Walks the standard capability list from 0x34; returns [offset, id] pairs. */
function capabilities(device: ReturnType<typeof makeDevice>['device']): [number, number][] {
  const cfg = device.config;
  const out: [number, number][] = [];
  const seen = new Set<number>();
  let at = cfg.read8(Cfg.CAPABILITY_LIST);
  while (at !== 0) {
    expect(seen.has(at)).toBe(false);
    seen.add(at);
    expect(at).toBeGreaterThanOrEqual(0x40);
    expect(at % 4).toBe(0);
    out.push([at, cfg.read8(at)]);
    at = cfg.read8(at + 1);
  }
  return out;
}

describe('GpuDevice configuration header', () => {
  it('identifies as an NVIDIA 3D controller, header type 0, INTA', () => {
    const { device } = makeDevice();
    const c = device.config;
    expect(c.read16(Cfg.VENDOR_ID)).toBe(0x10de);
    expect(c.read16(Cfg.DEVICE_ID)).toBe(0x2342);
    expect(c.read8(Cfg.REVISION)).toBe(DEFAULT_IDENTITY.revision);
    expect(c.read8(Cfg.CLASS_PROG)).toBe(0);
    expect(c.read16(Cfg.CLASS_DEVICE)).toBe(0x0302);
    expect(c.read8(Cfg.HEADER_TYPE)).toBe(0);
    expect(c.read16(Cfg.SUBSYSTEM_VENDOR_ID)).toBe(DEFAULT_IDENTITY.subsystemVendorId);
    expect(c.read16(Cfg.SUBSYSTEM_ID)).toBe(DEFAULT_IDENTITY.subsystemId);
    expect(c.read8(Cfg.INTERRUPT_PIN)).toBe(1);
    expect(c.read16(Cfg.COMMAND)).toBe(0);
    expect(c.read16(Cfg.STATUS) & 0x10).toBe(0x10);
  });

  it('uses the identity it is given', () => {
    const identity = { vendorId: 0x1234, deviceId: 0x5678, subsystemVendorId: 0x9abc, subsystemId: 0xdef0, revision: 7 };
    const { device } = makeDevice({ identity });
    expect(device.identity).toBe(identity);
    expect(device.config.read32(0)).toBe(0x56781234);
    expect(device.config.read32(0x2c)).toBe(0xdef09abc);
    expect(device.config.read8(Cfg.REVISION)).toBe(7);
  });

  it('identity, class and capability pointer ignore writes', () => {
    const { device } = makeDevice();
    const before = [0x00, 0x08, 0x0c, 0x2c, 0x34].map((o) => device.config.read32(o));
    for (const o of [0x00, 0x08, 0x2c, 0x34]) w(device, o, 4, 0xffffffff);
    w(device, 0x0e, 1, 0x80);
    const after = [0x00, 0x08, 0x0c, 0x2c, 0x34].map((o) => device.config.read32(o));
    // 0x0c holds the cache line size, which is writable; everything else is unchanged.
    expect(after[0]).toBe(before[0]);
    expect(after[1]).toBe(before[1]);
    expect(after[2]! & 0xffffff00).toBe(before[2]! & 0xffffff00);
    expect(after[3]).toBe(before[3]);
    expect(after[4]).toBe(before[4]);
  });

  it('the command register keeps its writable bits only', () => {
    const { device } = makeDevice();
    w(device, Cfg.COMMAND, 2, 0xffff);
    // memory, bus master, parity, SERR, INTx disable; no I/O space (the device has no I/O BARs).
    expect(device.config.read16(Cfg.COMMAND)).toBe(0x0546);
    w(device, Cfg.COMMAND, 2, 0x0001);
    expect(device.config.read16(Cfg.COMMAND)).toBe(0);
  });

  it('a dword write to command/status leaves the status bits alone', () => {
    const { device } = makeDevice();
    w(device, Cfg.COMMAND, 4, 0xffffffff);
    expect(device.config.read16(Cfg.COMMAND)).toBe(0x0546);
    expect(device.config.read16(Cfg.STATUS)).toBe(0x0010);
  });

  it('interrupt line is writable, interrupt pin is not', () => {
    const { device } = makeDevice();
    expect(device.config.read8(Cfg.INTERRUPT_LINE)).toBe(0xff);
    w(device, Cfg.INTERRUPT_LINE, 2, 0x030b);
    expect(device.config.read8(Cfg.INTERRUPT_LINE)).toBe(0x0b);
    expect(device.config.read8(Cfg.INTERRUPT_PIN)).toBe(1);
  });
});

describe('GpuDevice capabilities', () => {
  it('the chain from 0x34 is PM, MSI, MSI-X, PCI Express, then ends', () => {
    const { device } = makeDevice();
    expect(capabilities(device)).toEqual([
      [PM_CAP, CapId.PM],
      [MSI_CAP, CapId.MSI],
      [MSIX_CAP, CapId.MSIX],
      [EXP_CAP, CapId.EXP],
    ]);
    expect(capabilities(device).map(([, id]) => id)).toEqual([0x01, 0x05, 0x11, 0x10]);
  });

  it('MSI: 64-bit, one vector; enable, address and data are writable', () => {
    const { device } = makeDevice();
    const c = device.config;
    expect(c.read16(MSI_CAP + 2)).toBe(0x0080);
    w(device, MSI_CAP + 2, 2, 0xffff);
    expect(c.read16(MSI_CAP + 2)).toBe(0x00f1);
    w(device, MSI_CAP + 4, 4, 0xfee00003);
    expect(c.read32(MSI_CAP + 4)).toBe(0xfee00000);
    w(device, MSI_CAP + 12, 2, 0x4041);
    expect(c.read16(MSI_CAP + 12)).toBe(0x4041);
  });

  it('capabilities do not overlap and stay in the standard header space', () => {
    const ends = { [CapId.PM]: 8, [CapId.MSI]: 14, [CapId.MSIX]: 12, [CapId.EXP]: 60 } as Record<number, number>;
    const caps = capabilities(makeDevice().device);
    for (let i = 0; i < caps.length; i++) {
      const [at, id] = caps[i]!;
      const end = at + ends[id]!;
      expect(end).toBeLessThanOrEqual(0x100);
      for (const [other] of caps.slice(i + 1)) expect(other >= end || other + 2 <= at).toBe(true);
    }
  });

  it('PCI Express v2 endpoint', () => {
    const c = makeDevice().device.config;
    expect(c.read16(EXP_CAP + 2) & 0xf).toBe(2);
    expect((c.read16(EXP_CAP + 2) >> 4) & 0xf).toBe(0);
  });

  it('PM: the power state bits are writable, the rest of PMCSR is not', () => {
    const { device } = makeDevice();
    w(device, PM_CAP + 4, 2, 0x7ffc);
    expect(device.config.read16(PM_CAP + 4)).toBe(0x0008);
    w(device, PM_CAP + 4, 2, 0x0003);
    expect(device.config.read16(PM_CAP + 4)).toBe(0x000b);
  });

  it.each([1, 16, 33, 2048])('MSI-X with %i vectors: table and PBA inside BAR0, clear of each other', (vectors) => {
    const { device } = makeDevice({ msixVectors: vectors });
    const c = device.config;
    const bar0Size = device.region(RegionIndex.BAR0)!.size;
    expect(c.read16(MSIX_CAP + 2) & 0x7ff).toBe(vectors - 1);
    const table = c.read32(MSIX_CAP + 4);
    const pba = c.read32(MSIX_CAP + 8);
    expect(table & 7).toBe(0); // BIR 0
    expect(pba & 7).toBe(0);
    const tableOffset = table & ~7;
    const pbaOffset = pba & ~7;
    expect(tableOffset % 8).toBe(0);
    expect(tableOffset + 16 * vectors).toBeLessThanOrEqual(pbaOffset);
    expect(pbaOffset + 8 * Math.ceil(vectors / 64)).toBeLessThanOrEqual(bar0Size);
    expect(device.msix).toEqual({ vectors, bar: 0, tableOffset, pbaOffset });
    expect(device.interrupts.info(IrqIndex.MSIX)?.count).toBe(vectors);
  });

  it('MSI-X: table size is read-only, enable and function mask are writable', () => {
    const { device } = makeDevice();
    w(device, MSIX_CAP + 2, 2, 0xffff);
    expect(device.config.read16(MSIX_CAP + 2)).toBe(0xc000 | 15);
    w(device, MSIX_CAP + 4, 4, 0);
    expect(device.config.read32(MSIX_CAP + 4)).toBe(device.msix?.tableOffset);
  });

  it('refuses an MSI-X vector count out of range', () => {
    expect(() => makeDevice({ msixVectors: 0 })).toThrow(/MSI-X/);
    expect(() => makeDevice({ msixVectors: 2049 })).toThrow(/MSI-X/);
  });
});

describe('GpuDevice regions', () => {
  it('BAR0 16 MiB, BAR2 the aperture rounded up, config 4 KiB, the rest absent', () => {
    const { device } = makeDevice({ apertureSize: 96 * MiB + 100 });
    expect(device.region(RegionIndex.BAR0)!.size).toBe(16 * MiB);
    expect(device.region(RegionIndex.BAR2)!.size).toBe(128 * MiB);
    expect(device.region(RegionIndex.BAR2)).toBe(device.aperture);
    expect(device.region(RegionIndex.CONFIG)!.size).toBe(4096);
    for (const i of [RegionIndex.BAR1, RegionIndex.BAR3, RegionIndex.BAR4, RegionIndex.BAR5, RegionIndex.ROM, RegionIndex.VGA, 9, 100]) {
      expect(device.region(i)).toBeNull();
    }
    expect(device.numRegions).toBe(9);
    expect(device.numIrqs).toBe(5);
    expect(device.flags).toBe(DeviceFlag.PCI | DeviceFlag.RESET);
  });

  it('BAR2 size follows the aperture for big memories without allocating them', () => {
    for (const [mem, bar] of [
      [GiB, GiB],
      [95 * GiB, 128 * GiB],
      [480 * GiB, 512 * GiB],
    ] as const) {
      const { device } = makeDevice({ apertureSize: mem });
      expect(device.region(RegionIndex.BAR2)!.size).toBe(bar);
    }
  });

  it('apertureBarSize rounds up to a power of two, at least a page', () => {
    expect(apertureBarSize(96 * MiB)).toBe(128 * MiB);
    expect(apertureBarSize(96 * MiB + 100)).toBe(128 * MiB);
    expect(apertureBarSize(GiB)).toBe(GiB);
    expect(apertureBarSize(95 * GiB)).toBe(128 * GiB);
    expect(apertureBarSize(100)).toBe(4096);
    expect(apertureBarSize(0)).toBe(4096);
  });

  it('BAR0 mmap leaves out the MSI-X window; BAR2 offers the whole pages of memory', () => {
    const { device } = makeDevice({ apertureSize: 96 * MiB + 100 });
    expect(device.bar0.mmap).toEqual({ fd: 200, fdOffset: 0, areas: [{ offset: 0, size: 16 * MiB - 64 * KiB }] });
    expect(device.aperture.mmap).toEqual({ fd: 300, fdOffset: 0, areas: [{ offset: 0, size: 96 * MiB }] });
  });

  it('BAR2 padding reads all ones; BAR0 memory and aperture memory are the backings', () => {
    const { device, aperture, bar0 } = makeDevice({ apertureSize: 10000 });
    aperture.poke(9998, [0x12, 0x34]);
    const dst = new Uint8Array(4);
    device.region(RegionIndex.BAR2)!.read(9998, dst, 0, 4);
    expect([...dst]).toEqual([0x12, 0x34, 0xff, 0xff]);
    device.region(RegionIndex.BAR0)!.write(0x100, Uint8Array.of(0xaa), 0, 1);
    expect(bar0.memory.peek(0x100, 1)).toEqual([0xaa]);
  });

  it('a BAR0 source with less memory than its BAR pads like the aperture', () => {
    const bar0 = new FakeBar0(128 * KiB, 70000);
    const { device } = makeDevice({ bar0 });
    const dst = new Uint8Array(8);
    device.region(RegionIndex.BAR0)!.read(69996, dst, 0, 8);
    expect([...dst.subarray(4)]).toEqual([0xff, 0xff, 0xff, 0xff]);
    expect(device.bar0Source).toBe(bar0);
  });
});

describe('GpuDevice interrupts', () => {
  it('INTx is maskable and automasked; MSI has one vector; MSI-X, ERR and REQ use eventfds', () => {
    const { device } = makeDevice();
    const k = device.interrupts.kinds;
    expect(k.map((x) => x.index)).toEqual([0, 1, 2, 3, 4]);
    expect(k[IrqIndex.INTX]).toMatchObject({ count: 1 });
    expect(k[IrqIndex.INTX]!.flags & (IrqInfoFlag.MASKABLE | IrqInfoFlag.AUTOMASKED | IrqInfoFlag.EVENTFD)).toBe(0x7);
    expect(k[IrqIndex.MSI]!.count).toBe(1);
    expect(k[IrqIndex.MSIX]!.count).toBe(16);
    expect(k[IrqIndex.MSIX]!.flags & IrqInfoFlag.MASKABLE).toBe(0);
    expect(k[IrqIndex.ERR]!.count).toBe(1);
    expect(k[IrqIndex.REQ]!.count).toBe(1);
  });
});

describe('GpuDevice reset and client release', () => {
  it('reset restores command, BARs and capabilities but keeps memory contents', () => {
    const { device, aperture, bar0 } = makeDevice({ apertureSize: 1 * MiB });
    const pristine = new Uint8Array(256);
    device.config.read(0, pristine, 0, 256);

    w(device, Cfg.COMMAND, 2, 0x0006);
    w(device, 0x10, 4, 0xfd000000);
    w(device, 0x18, 4, 0xe0000000);
    w(device, 0x1c, 4, 0x00000040);
    w(device, Cfg.INTERRUPT_LINE, 1, 0x0b);
    w(device, MSIX_CAP + 2, 2, 0x8000);
    w(device, PM_CAP + 4, 2, 0x0003);
    device.region(RegionIndex.BAR2)!.write(0x1000, Uint8Array.of(1, 2, 3), 0, 3);
    device.region(RegionIndex.BAR0)!.write(0x2000, Uint8Array.of(4), 0, 1);
    expect(device.config.read16(Cfg.COMMAND)).toBe(0x0006);

    device.reset();
    const after = new Uint8Array(256);
    device.config.read(0, after, 0, 256);
    expect([...after]).toEqual([...pristine]);
    expect(bar0.resets).toBe(1);
    expect(aperture.peek(0x1000, 3)).toEqual([1, 2, 3]);
    expect(bar0.memory.peek(0x2000, 1)).toEqual([4]);
  });

  it('releaseClient closes the DMA fds and eventfds the client handed over', () => {
    const { device, events, dmaOps } = makeDevice();
    device.dma.add(0x10000, 0x1000, DmaMapFlag.READ, 7, 0);
    device.interrupts.set(
      { argsz: 20, flags: IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, index: IrqIndex.MSIX, start: 0, count: 2, bools: new Uint8Array() },
      [20, 21],
    );
    device.releaseClient();
    expect(dmaOps.closed).toEqual([7]);
    expect(events.closed).toEqual([20, 21]);
    expect(device.dma.count).toBe(0);
    expect(device.interrupts.heldFds).toBe(0);
  });

  it('the DMA table uses the page size and map limit it was given', () => {
    const { device } = makeDevice({ maxDmaMaps: 3, pageSize: 64 * KiB });
    expect(device.dma.maxMaps).toBe(3);
    expect(device.dma.pageSize).toBe(64 * KiB);
  });

  it('an aperture backing with an unaligned fd offset is not offered for mmap', () => {
    const { device } = makeDevice({ aperture: new FakeMemory(1 * MiB, 300, 100) });
    expect(device.aperture.mmap).toBeNull();
  });
});
