import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import type { DmaMapping } from '../../src/device/dma-maps.js';
import { HostError } from '../../src/backends/vfio/host-error.js';
import { IommuDma, type Iommu } from '../../src/backends/vfio/iommu-dma.js';
import { native } from '../../src/native/native.js';
import { mappingsOf } from '../native/helpers.js';

const fds: number[] = [];
afterEach(() => {
  for (const fd of fds.splice(0)) native.closeFd(fd);
});

function memfd(size: number, name = 'dma'): number {
  const fd = native.memfdCreate(name, 0);
  fs.ftruncateSync(fd, size);
  fds.push(fd);
  return fd;
}

function mapping(address: number, size: number, flags: number, fd: number | null, fdOffset = 0): DmaMapping {
  return { address, size, flags, fd, fdOffset, memory: null, memoryOffset: 0 };
}

/** An IOMMU that records calls; it can be told to fail the next map with an errno. */
function fakeIommu() {
  const calls: string[] = [];
  const iommu: Iommu & { calls: string[]; failWith: string | null; addresses: number[] } = {
    kind: 'fake',
    calls,
    failWith: null,
    addresses: [],
    map(vaddr, iova, size, readable, writable) {
      if (iommu.failWith) {
        const code = iommu.failWith;
        iommu.failWith = null;
        throw Object.assign(new Error(`ioctl: ${code}`), { code, errno: code === 'ENOMEM' ? 12 : 22 });
      }
      iommu.addresses.push(vaddr);
      calls.push(`map iova=0x${iova.toString(16)} size=0x${size.toString(16)} r=${readable} w=${writable}`);
    },
    unmap(iova, size) {
      calls.push(`unmap iova=0x${iova.toString(16)} size=0x${size.toString(16)}`);
    },
  };
  return iommu;
}

describe('client memory in the host IOMMU', () => {
  it('maps each fd-backed map at its DMA address from a fresh page-aligned mapping, and undoes it', () => {
    const iommu = fakeIommu();
    const dma = new IommuDma(iommu);
    const fd = memfd(8 << 20, 'iommu-dma-observer');
    const a = mapping(0x100000, 2 << 20, 3, fd, 0);
    const b = mapping(0x400000, 1 << 20, 1, fd, 4 << 20);
    dma.mapped(a);
    dma.mapped(b);
    expect(dma.count).toBe(2);
    expect(iommu.calls).toEqual(['map iova=0x100000 size=0x200000 r=true w=true', 'map iova=0x400000 size=0x100000 r=true w=false']);
    for (const addr of iommu.addresses) {
      expect(Number.isSafeInteger(addr) && addr > 0).toBe(true);
      expect(addr % native.pageSize()).toBe(0);
    }
    expect(iommu.addresses[0]).not.toBe(iommu.addresses[1]);
    expect(mappingsOf('iommu-dma-observer')).toBe(2);
    dma.unmapped(a);
    dma.unmapped(a); // twice: nothing more
    dma.clear();
    expect(iommu.calls.slice(2)).toEqual(['unmap iova=0x100000 size=0x200000', 'unmap iova=0x400000 size=0x100000']);
    expect(dma.count).toBe(0);
    expect(mappingsOf('iommu-dma-observer')).toBe(0);
  });

  it('maps more than the 4 GiB one ArrayBuffer may hold (sparse memfd)', () => {
    const iommu = fakeIommu();
    const dma = new IommuDma(iommu);
    const size = 6 * 2 ** 30;
    const m = mapping(0x1_0000_0000, size, 3, memfd(size));
    dma.mapped(m);
    expect(iommu.calls).toEqual([`map iova=0x100000000 size=0x${size.toString(16)} r=true w=true`]);
    dma.unmapped(m);
  });

  it('leaves out memory not shared by fd and maps without access', () => {
    const iommu = fakeIommu();
    const dma = new IommuDma(iommu);
    dma.mapped(mapping(0x100000, 0x1000, 3, null));
    dma.mapped(mapping(0x200000, 0x1000, 0, memfd(0x1000)));
    expect(iommu.calls).toEqual([]);
    expect(dma.count).toBe(0);
  });

  it('says what to do when the pinning limit is hit, and keeps nothing of a refused map', () => {
    const iommu = fakeIommu();
    const dma = new IommuDma(iommu);
    iommu.failWith = 'ENOMEM';
    const err = (() => {
      try {
        dma.mapped(mapping(0x100000, 0x1000, 3, memfd(0x1000)));
      } catch (e) {
        return e as HostError;
      }
      return null;
    })();
    expect(err).toBeInstanceOf(HostError);
    expect(err!.errno).toBe(12);
    expect(err!.message).toMatch(/locked-memory limit reached; raise the daemon's RLIMIT_MEMLOCK/);
    iommu.failWith = 'EINVAL';
    expect(() => dma.mapped(mapping(0x100000, 0x1000, 3, memfd(0x1000)))).toThrow(/refused \[0x100000, \+0x1000\): EINVAL/);
    expect(dma.count).toBe(0);
  });

  it('reports an unmap the IOMMU refuses instead of throwing', () => {
    const errors: string[] = [];
    const iommu = fakeIommu();
    iommu.unmap = () => {
      throw new Error('ENOENT');
    };
    const dma = new IommuDma(iommu, (msg) => errors.push(msg));
    const m = mapping(0x100000, 0x1000, 3, memfd(0x1000));
    dma.mapped(m);
    expect(() => dma.unmapped(m)).not.toThrow();
    expect(errors).toEqual(['host IOMMU unmap of [0x100000, +0x1000) failed']);
  });
});

describe('native mappings by address', () => {
  it('maps and unmaps, and reports bad arguments', () => {
    const fd = memfd(0x2000);
    const addr = native.mmapAddress(fd, 0x2000, native.PROT_READ | native.PROT_WRITE, native.MAP_SHARED, 0);
    expect(addr % native.pageSize()).toBe(0);
    native.munmapAddress(addr, 0x2000);
    expect(() => native.mmapAddress(1 << 20, 0x1000, native.PROT_READ, native.MAP_SHARED, 0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => native.mmapAddress(fd, 0, native.PROT_READ, native.MAP_SHARED, 0)).toThrow(RangeError);
    expect(() => native.munmapAddress(addr + 1, 0x1000)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });
});
