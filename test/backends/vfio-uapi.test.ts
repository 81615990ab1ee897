// The VFIO/iommufd structure layouts and ioctl numbers, checked against the C headers
// of this machine (linux-libc-dev, which the native build needs anyway): a small C
// program prints sizeof/offsetof and the ioctl numbers, and our encoders must put each
// field exactly there.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import * as U from '../../src/backends/vfio/uapi.js';
import { DeviceFlag, DmaMapFlag, RegionFlag } from '../../src/wire/constants.js';

const PROBE = String.raw`
#include <stddef.h>
#include <stdio.h>
#include <linux/vfio.h>
#if __has_include(<linux/iommufd.h>)
#include <linux/iommufd.h>
#define HAVE_IOMMUFD 1
#endif
#define I(name) printf("\"%s\": %lu,\n", #name, (unsigned long)(name))
#define S(t) printf("\"sizeof %s\": %zu,\n", #t, sizeof(struct t))
#define O(t, f) printf("\"%s.%s\": %zu,\n", #t, #f, offsetof(struct t, f))
int main(void) {
  printf("{\n");
  I(VFIO_GET_API_VERSION); I(VFIO_CHECK_EXTENSION); I(VFIO_SET_IOMMU); I(VFIO_GROUP_GET_STATUS);
  I(VFIO_GROUP_SET_CONTAINER); I(VFIO_GROUP_UNSET_CONTAINER); I(VFIO_GROUP_GET_DEVICE_FD);
  I(VFIO_DEVICE_GET_INFO); I(VFIO_DEVICE_GET_REGION_INFO); I(VFIO_DEVICE_GET_IRQ_INFO);
  I(VFIO_DEVICE_SET_IRQS); I(VFIO_DEVICE_RESET); I(VFIO_IOMMU_GET_INFO); I(VFIO_IOMMU_MAP_DMA); I(VFIO_IOMMU_UNMAP_DMA);
  I(VFIO_API_VERSION); I(VFIO_TYPE1_IOMMU); I(VFIO_TYPE1v2_IOMMU); I(VFIO_GROUP_FLAGS_VIABLE); I(VFIO_GROUP_FLAGS_CONTAINER_SET);
  I(VFIO_DEVICE_FLAGS_RESET); I(VFIO_DEVICE_FLAGS_PCI);
  I(VFIO_REGION_INFO_FLAG_READ); I(VFIO_REGION_INFO_FLAG_WRITE); I(VFIO_REGION_INFO_FLAG_MMAP); I(VFIO_REGION_INFO_FLAG_CAPS);
  I(VFIO_REGION_INFO_CAP_SPARSE_MMAP); I(VFIO_REGION_INFO_CAP_TYPE); I(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE);
  I(VFIO_DMA_MAP_FLAG_READ); I(VFIO_DMA_MAP_FLAG_WRITE); I(VFIO_PCI_CONFIG_REGION_INDEX);
  I(VFIO_IRQ_SET_DATA_NONE); I(VFIO_IRQ_SET_DATA_BOOL); I(VFIO_IRQ_SET_DATA_EVENTFD);
  I(VFIO_IRQ_SET_ACTION_MASK); I(VFIO_IRQ_SET_ACTION_UNMASK); I(VFIO_IRQ_SET_ACTION_TRIGGER);
  S(vfio_group_status); O(vfio_group_status, flags);
  O(vfio_device_info, flags); O(vfio_device_info, num_regions); O(vfio_device_info, num_irqs);
  S(vfio_region_info); O(vfio_region_info, flags); O(vfio_region_info, index); O(vfio_region_info, cap_offset);
  O(vfio_region_info, size); O(vfio_region_info, offset);
  S(vfio_info_cap_header); O(vfio_info_cap_header, version); O(vfio_info_cap_header, next);
  O(vfio_region_info_cap_sparse_mmap, nr_areas); O(vfio_region_info_cap_sparse_mmap, areas);
  S(vfio_region_sparse_mmap_area); O(vfio_region_sparse_mmap_area, size);
  S(vfio_irq_info); O(vfio_irq_info, flags); O(vfio_irq_info, index); O(vfio_irq_info, count);
  S(vfio_irq_set); O(vfio_irq_set, flags); O(vfio_irq_set, index); O(vfio_irq_set, start); O(vfio_irq_set, count); O(vfio_irq_set, data);
  S(vfio_iommu_type1_dma_map); O(vfio_iommu_type1_dma_map, flags); O(vfio_iommu_type1_dma_map, vaddr);
  O(vfio_iommu_type1_dma_map, iova); O(vfio_iommu_type1_dma_map, size);
  S(vfio_iommu_type1_dma_unmap); O(vfio_iommu_type1_dma_unmap, flags); O(vfio_iommu_type1_dma_unmap, iova); O(vfio_iommu_type1_dma_unmap, size);
#ifdef VFIO_DEVICE_BIND_IOMMUFD
  I(VFIO_DEVICE_BIND_IOMMUFD); I(VFIO_DEVICE_ATTACH_IOMMUFD_PT);
  O(vfio_device_bind_iommufd, iommufd); O(vfio_device_bind_iommufd, out_devid);
  O(vfio_device_attach_iommufd_pt, pt_id);
#endif
#ifdef HAVE_IOMMUFD
  I(IOMMU_IOAS_ALLOC); I(IOMMU_IOAS_MAP); I(IOMMU_IOAS_UNMAP); I(IOMMU_DESTROY);
  I(IOMMU_IOAS_MAP_FIXED_IOVA); I(IOMMU_IOAS_MAP_WRITEABLE); I(IOMMU_IOAS_MAP_READABLE);
  O(iommu_ioas_alloc, out_ioas_id); S(iommu_ioas_map); O(iommu_ioas_map, flags); O(iommu_ioas_map, ioas_id);
  O(iommu_ioas_map, user_va); O(iommu_ioas_map, length); O(iommu_ioas_map, iova);
  S(iommu_ioas_unmap); O(iommu_ioas_unmap, ioas_id); O(iommu_ioas_unmap, iova); O(iommu_ioas_unmap, length);
#endif
  printf("\"end\": 0}\n");
  return 0;
}
`;

let C: Record<string, number> = {};

beforeAll(() => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-uapi-'));
  try {
    fs.writeFileSync(path.join(dir, 'probe.c'), PROBE);
    execFileSync('cc', ['-o', path.join(dir, 'probe'), path.join(dir, 'probe.c')], { stdio: 'pipe' });
    C = JSON.parse(execFileSync(path.join(dir, 'probe'), { encoding: 'utf8' })) as Record<string, number>;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

const c = (key: string): number => {
  const v = C[key];
  if (v === undefined) throw new Error(`the C probe printed no ${key}`);
  return v;
};

describe('VFIO uapi: ioctl numbers and constants match <linux/vfio.h>', () => {
  it('ioctl numbers', () => {
    expect(U.VfioIoctl.GET_API_VERSION).toBe(c('VFIO_GET_API_VERSION'));
    expect(U.VfioIoctl.CHECK_EXTENSION).toBe(c('VFIO_CHECK_EXTENSION'));
    expect(U.VfioIoctl.SET_IOMMU).toBe(c('VFIO_SET_IOMMU'));
    expect(U.VfioIoctl.GROUP_GET_STATUS).toBe(c('VFIO_GROUP_GET_STATUS'));
    expect(U.VfioIoctl.GROUP_SET_CONTAINER).toBe(c('VFIO_GROUP_SET_CONTAINER'));
    expect(U.VfioIoctl.GROUP_UNSET_CONTAINER).toBe(c('VFIO_GROUP_UNSET_CONTAINER'));
    expect(U.VfioIoctl.GROUP_GET_DEVICE_FD).toBe(c('VFIO_GROUP_GET_DEVICE_FD'));
    expect(U.VfioIoctl.DEVICE_GET_INFO).toBe(c('VFIO_DEVICE_GET_INFO'));
    expect(U.VfioIoctl.DEVICE_GET_REGION_INFO).toBe(c('VFIO_DEVICE_GET_REGION_INFO'));
    expect(U.VfioIoctl.DEVICE_GET_IRQ_INFO).toBe(c('VFIO_DEVICE_GET_IRQ_INFO'));
    expect(U.VfioIoctl.DEVICE_SET_IRQS).toBe(c('VFIO_DEVICE_SET_IRQS'));
    expect(U.VfioIoctl.DEVICE_RESET).toBe(c('VFIO_DEVICE_RESET'));
    expect(U.VfioIoctl.IOMMU_GET_INFO).toBe(c('VFIO_IOMMU_GET_INFO'));
    expect(U.VfioIoctl.IOMMU_MAP_DMA).toBe(c('VFIO_IOMMU_MAP_DMA'));
    expect(U.VfioIoctl.IOMMU_UNMAP_DMA).toBe(c('VFIO_IOMMU_UNMAP_DMA'));
  });

  it('constants and flags', () => {
    expect(U.VFIO_API_VERSION).toBe(c('VFIO_API_VERSION'));
    expect(U.VfioIommuType.TYPE1).toBe(c('VFIO_TYPE1_IOMMU'));
    expect(U.VfioIommuType.TYPE1v2).toBe(c('VFIO_TYPE1v2_IOMMU'));
    expect(U.GroupFlag.VIABLE).toBe(c('VFIO_GROUP_FLAGS_VIABLE'));
    expect(U.GroupFlag.CONTAINER_SET).toBe(c('VFIO_GROUP_FLAGS_CONTAINER_SET'));
    expect(DeviceFlag.RESET).toBe(c('VFIO_DEVICE_FLAGS_RESET'));
    expect(DeviceFlag.PCI).toBe(c('VFIO_DEVICE_FLAGS_PCI'));
    expect(RegionFlag).toEqual({
      READ: c('VFIO_REGION_INFO_FLAG_READ'),
      WRITE: c('VFIO_REGION_INFO_FLAG_WRITE'),
      MMAP: c('VFIO_REGION_INFO_FLAG_MMAP'),
      CAPS: c('VFIO_REGION_INFO_FLAG_CAPS'),
    });
    expect(U.RegionInfoCap).toEqual({
      SPARSE_MMAP: c('VFIO_REGION_INFO_CAP_SPARSE_MMAP'),
      TYPE: c('VFIO_REGION_INFO_CAP_TYPE'),
      MSIX_MAPPABLE: c('VFIO_REGION_INFO_CAP_MSIX_MAPPABLE'),
    });
    expect(DmaMapFlag).toEqual({ READ: c('VFIO_DMA_MAP_FLAG_READ'), WRITE: c('VFIO_DMA_MAP_FLAG_WRITE') });
    expect(c('VFIO_PCI_CONFIG_REGION_INDEX')).toBe(7);
  });

  it('vfio-user SET_IRQS flags are the kernel numbers (they are passed through unchanged)', async () => {
    const { IrqSetFlag } = await import('../../src/wire/constants.js');
    expect(IrqSetFlag).toEqual({
      DATA_NONE: c('VFIO_IRQ_SET_DATA_NONE'),
      DATA_BOOL: c('VFIO_IRQ_SET_DATA_BOOL'),
      DATA_EVENTFD: c('VFIO_IRQ_SET_DATA_EVENTFD'),
      ACTION_MASK: c('VFIO_IRQ_SET_ACTION_MASK'),
      ACTION_UNMASK: c('VFIO_IRQ_SET_ACTION_UNMASK'),
      ACTION_TRIGGER: c('VFIO_IRQ_SET_ACTION_TRIGGER'),
    });
  });

  it('iommufd numbers and layouts (compared with the C header where this machine has it)', () => {
    // From <linux/iommufd.h> and <linux/vfio.h> of Linux 6.6+.
    const expected: Record<string, number> = {
      VFIO_DEVICE_BIND_IOMMUFD: U.VfioIoctl.DEVICE_BIND_IOMMUFD,
      VFIO_DEVICE_ATTACH_IOMMUFD_PT: U.VfioIoctl.DEVICE_ATTACH_IOMMUFD_PT,
      IOMMU_IOAS_ALLOC: U.IommufdIoctl.IOAS_ALLOC,
      IOMMU_IOAS_MAP: U.IommufdIoctl.IOAS_MAP,
      IOMMU_IOAS_UNMAP: U.IommufdIoctl.IOAS_UNMAP,
      IOMMU_DESTROY: U.IommufdIoctl.DESTROY,
    };
    expect(expected).toEqual({
      VFIO_DEVICE_BIND_IOMMUFD: 0x3b76,
      VFIO_DEVICE_ATTACH_IOMMUFD_PT: 0x3b77,
      IOMMU_IOAS_ALLOC: 0x3b81,
      IOMMU_IOAS_MAP: 0x3b85,
      IOMMU_IOAS_UNMAP: 0x3b86,
      IOMMU_DESTROY: 0x3b80,
    });
    for (const [name, value] of Object.entries(expected)) if (name in C) expect(value, name).toBe(C[name]);
    if ('iommu_ioas_map.iova' in C) {
      expect(U.StructSize.IOAS_MAP).toBe(c('sizeof iommu_ioas_map'));
      expect(U.StructSize.IOAS_UNMAP).toBe(c('sizeof iommu_ioas_unmap'));
    }
  });
});

describe('VFIO uapi: every encoder puts each field where the C struct has it', () => {
  it('group status and region/irq info requests', () => {
    expect(U.StructSize.GROUP_STATUS).toBe(c('sizeof vfio_group_status'));
    const st = U.groupStatusRequest();
    expect(st.readUInt32LE(0)).toBe(st.length);
    st.writeUInt32LE(3, c('vfio_group_status.flags'));
    expect(U.groupStatusFlags(st)).toBe(3);

    expect(U.StructSize.REGION_INFO).toBe(c('sizeof vfio_region_info'));
    const ri = U.regionInfoRequest(7);
    expect(ri.readUInt32LE(0)).toBe(32);
    expect(ri.readUInt32LE(c('vfio_region_info.index'))).toBe(7);
    expect(U.regionInfoRequest(0, 128).readUInt32LE(0)).toBe(128);

    expect(U.StructSize.IRQ_INFO).toBe(c('sizeof vfio_irq_info'));
    const ii = U.irqInfoRequest(2);
    expect(ii.readUInt32LE(c('vfio_irq_info.index'))).toBe(2);
    ii.writeUInt32LE(0x9, c('vfio_irq_info.flags'));
    ii.writeUInt32LE(16, c('vfio_irq_info.count'));
    expect(U.decodeVfioIrqInfo(ii)).toEqual({ index: 2, flags: 0x9, count: 16 });

    const di = U.deviceInfoRequest();
    expect(di.length).toBeGreaterThanOrEqual(c('vfio_device_info.num_irqs') + 4);
    di.writeUInt32LE(3, c('vfio_device_info.flags'));
    di.writeUInt32LE(9, c('vfio_device_info.num_regions'));
    di.writeUInt32LE(5, c('vfio_device_info.num_irqs'));
    expect(U.decodeVfioDeviceInfo(di)).toEqual({ flags: 3, numRegions: 9, numIrqs: 5 });
  });

  it('SET_IRQS with eventfds (-1 de-assigns) and with bools', () => {
    expect(U.StructSize.IRQ_SET).toBe(c('sizeof vfio_irq_set'));
    const s = U.irqSet(0x24, 1, 2, 3, { eventfds: [10, null, 12] });
    expect(s.length).toBe(c('vfio_irq_set.data') + 12);
    expect(s.readUInt32LE(0)).toBe(s.length);
    expect(s.readUInt32LE(c('vfio_irq_set.flags'))).toBe(0x24);
    expect(s.readUInt32LE(c('vfio_irq_set.index'))).toBe(1);
    expect(s.readUInt32LE(c('vfio_irq_set.start'))).toBe(2);
    expect(s.readUInt32LE(c('vfio_irq_set.count'))).toBe(3);
    const d = c('vfio_irq_set.data');
    expect([s.readInt32LE(d), s.readInt32LE(d + 4), s.readInt32LE(d + 8)]).toEqual([10, -1, 12]);
    const b = U.irqSet(0x22, 0, 0, 2, { bools: new Uint8Array([1, 0]) });
    expect(b.length).toBe(d + 2);
    expect([...b.subarray(d)]).toEqual([1, 0]);
    expect(U.irqSet(0x21, 2, 0, 0).length).toBe(d);
  });

  it('type1 DMA map and unmap, addresses beyond 2^32', () => {
    expect(U.StructSize.DMA_MAP).toBe(c('sizeof vfio_iommu_type1_dma_map'));
    const m = U.dmaMap(0x7f12_3456_7000, 0x1_0000_0000, 0x20_0000, 3);
    expect(m.readUInt32LE(0)).toBe(m.length);
    expect(m.readUInt32LE(c('vfio_iommu_type1_dma_map.flags'))).toBe(3);
    expect(m.readBigUInt64LE(c('vfio_iommu_type1_dma_map.vaddr'))).toBe(0x7f12_3456_7000n);
    expect(m.readBigUInt64LE(c('vfio_iommu_type1_dma_map.iova'))).toBe(0x1_0000_0000n);
    expect(m.readBigUInt64LE(c('vfio_iommu_type1_dma_map.size'))).toBe(0x20_0000n);
    expect(U.StructSize.DMA_UNMAP).toBe(c('sizeof vfio_iommu_type1_dma_unmap'));
    const u = U.dmaUnmap(0x100000, 0x2000);
    expect(u.readUInt32LE(0)).toBe(u.length);
    expect(u.readBigUInt64LE(c('vfio_iommu_type1_dma_unmap.iova'))).toBe(0x100000n);
    expect(u.readBigUInt64LE(c('vfio_iommu_type1_dma_unmap.size'))).toBe(0x2000n);
  });

  it('iommufd structures', () => {
    const bind = U.bindIommufd(9);
    expect(bind.readUInt32LE(0)).toBe(16);
    expect(bind.readInt32LE(C['vfio_device_bind_iommufd.iommufd'] ?? 8)).toBe(9);
    const att = U.attachIommufdPt(5);
    expect(att.readUInt32LE(C['vfio_device_attach_iommufd_pt.pt_id'] ?? 8)).toBe(5);
    const alloc = U.ioasAlloc();
    alloc.writeUInt32LE(77, C['iommu_ioas_alloc.out_ioas_id'] ?? 8);
    expect(U.ioasAllocId(alloc)).toBe(77);
    const map = U.ioasMap(4, 0x7f00_0000_0000, 0x100000, 0x200000, U.IoasMapFlag.READABLE | U.IoasMapFlag.WRITEABLE);
    expect(map.length).toBe(40);
    expect(map.readUInt32LE(C['iommu_ioas_map.flags'] ?? 4)).toBe(0b111); // fixed IOVA, writeable, readable
    expect(map.readUInt32LE(C['iommu_ioas_map.ioas_id'] ?? 8)).toBe(4);
    expect(map.readBigUInt64LE(C['iommu_ioas_map.user_va'] ?? 16)).toBe(0x7f00_0000_0000n);
    expect(map.readBigUInt64LE(C['iommu_ioas_map.length'] ?? 24)).toBe(0x200000n);
    expect(map.readBigUInt64LE(C['iommu_ioas_map.iova'] ?? 32)).toBe(0x100000n);
    const unmap = U.ioasUnmap(4, 0x100000, 0x200000);
    expect(unmap.readUInt32LE(C['iommu_ioas_unmap.ioas_id'] ?? 4)).toBe(4);
    expect(unmap.readBigUInt64LE(C['iommu_ioas_unmap.iova'] ?? 8)).toBe(0x100000n);
    expect(unmap.readBigUInt64LE(C['iommu_ioas_unmap.length'] ?? 16)).toBe(0x200000n);
  });
});

describe('VFIO uapi: region info replies and their capability chains', () => {
  /** A region info reply as the kernel writes it, laid out with the C offsets. */
  function reply(caps: { id: number; body: Buffer }[], opts: { flags?: number; argsz?: number; length?: number } = {}): Buffer {
    const hdr = c('sizeof vfio_info_cap_header');
    let total = c('sizeof vfio_region_info');
    const at: number[] = [];
    for (const cap of caps) {
      at.push(total);
      total += hdr + cap.body.length;
    }
    const b = Buffer.alloc(opts.length ?? total);
    b.writeUInt32LE(opts.argsz ?? total, 0);
    b.writeUInt32LE(opts.flags ?? (RegionFlag.READ | RegionFlag.WRITE | RegionFlag.MMAP | (caps.length ? RegionFlag.CAPS : 0)), c('vfio_region_info.flags'));
    b.writeUInt32LE(0, c('vfio_region_info.index'));
    b.writeUInt32LE(caps.length ? at[0]! : 0, c('vfio_region_info.cap_offset'));
    b.writeBigUInt64LE(0x1000000n, c('vfio_region_info.size'));
    b.writeBigUInt64LE(0n, c('vfio_region_info.offset'));
    caps.forEach((cap, i) => {
      if (at[i]! + hdr + cap.body.length > b.length) return;
      b.writeUInt16LE(cap.id, at[i]!);
      b.writeUInt16LE(1, at[i]! + c('vfio_info_cap_header.version'));
      b.writeUInt32LE(at[i + 1] ?? 0, at[i]! + c('vfio_info_cap_header.next'));
      cap.body.copy(b, at[i]! + hdr);
    });
    return b;
  }

  function sparse(areas: [number, number][]): Buffer {
    const hdr = c('sizeof vfio_info_cap_header');
    const body = Buffer.alloc(c('vfio_region_info_cap_sparse_mmap.areas') - hdr + areas.length * c('sizeof vfio_region_sparse_mmap_area'));
    body.writeUInt32LE(areas.length, c('vfio_region_info_cap_sparse_mmap.nr_areas') - hdr);
    areas.forEach(([o, s], i) => {
      const at = c('vfio_region_info_cap_sparse_mmap.areas') - hdr + i * c('sizeof vfio_region_sparse_mmap_area');
      body.writeBigUInt64LE(BigInt(o), at);
      body.writeBigUInt64LE(BigInt(s), at + c('vfio_region_sparse_mmap_area.size'));
    });
    return body;
  }

  it('decodes the sparse areas around an MSI-X table, and the BAR0 of vfio-pci at offset 0', () => {
    const info = U.decodeVfioRegionInfo(reply([{ id: U.RegionInfoCap.SPARSE_MMAP, body: sparse([[0, 0xff0000], [0xff1000, 0xf000]]) }]));
    expect(info.size).toBe(0x1000000);
    expect(info.offset).toBe(0);
    expect(info.sparse).toEqual([
      { offset: 0, size: 0xff0000 },
      { offset: 0xff1000, size: 0xf000 },
    ]);
    expect(info.msixMappable).toBe(false);
  });

  it('follows the chain past other capabilities', () => {
    const info = U.decodeVfioRegionInfo(
      reply([
        { id: U.RegionInfoCap.MSIX_MAPPABLE, body: Buffer.alloc(0) },
        { id: U.RegionInfoCap.SPARSE_MMAP, body: sparse([[0x1000, 0x2000]]) },
      ]),
    );
    expect(info.msixMappable).toBe(true);
    expect(info.sparse).toEqual([{ offset: 0x1000, size: 0x2000 }]);
  });

  it('leaves the capabilities alone when the kernel wanted a larger buffer (asks again)', () => {
    const full = reply([{ id: U.RegionInfoCap.SPARSE_MMAP, body: sparse([[0, 0x1000]]) }]);
    const short = reply([{ id: U.RegionInfoCap.SPARSE_MMAP, body: sparse([[0, 0x1000]]) }], { argsz: full.length, length: 32 });
    const info = U.decodeVfioRegionInfo(short);
    expect(info.argsz).toBe(full.length);
    expect(info.sparse).toBeNull();
  });

  it('refuses a capability pointer or area count that runs outside the reply', () => {
    const b = reply([{ id: U.RegionInfoCap.SPARSE_MMAP, body: sparse([[0, 0x1000]]) }]);
    const bad = Buffer.from(b);
    bad.writeUInt32LE(b.length + 8, c('vfio_region_info.cap_offset'));
    expect(() => U.decodeVfioRegionInfo(bad)).toThrow(RangeError);
    const many = Buffer.from(b);
    many.writeUInt32LE(1000, 32 + c('vfio_region_info_cap_sparse_mmap.nr_areas'));
    expect(() => U.decodeVfioRegionInfo(many)).toThrow(/overrun/);
  });
});
