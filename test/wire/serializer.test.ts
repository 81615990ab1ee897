import { describe, expect, it } from 'vitest';
import {
  Command,
  DmaMapFlag,
  Flag,
  HEADER_SIZE,
  IrqSetFlag,
  MsgType,
  RegionCap,
  RegionFlag,
  Size,
  SPARSE_MMAP_VERSION,
} from '../../src/wire/constants.js';
import type { RegionAccess } from '../../src/wire/messages.js';
import {
  decodeDeviceInfo,
  decodeDmaMap,
  decodeDmaUnmap,
  decodeHeader,
  decodeIndexQuery,
  decodeIrqInfo,
  decodeIrqSet,
  decodeRegionAccess,
  decodeRegionInfo,
  decodeVersion,
  decodeWriteMultiCount,
  decodeWriteMultiEntry,
} from '../../src/wire/parser.js';
import {
  encodeDeviceGetInfo,
  encodeDeviceInfoReply,
  encodeDeviceReset,
  encodeDmaMap,
  encodeDmaUnmap,
  encodeEchoReply,
  encodeEmptyReply,
  encodeIndexQuery,
  encodeIrqInfoReply,
  encodeRegionInfoReply,
  encodeRegionRead,
  encodeRegionWrite,
  encodeSetIrqs,
  encodeVersion,
  encodeWriteMulti,
  regionInfoSize,
  writeErrorReply,
  writeHeader,
  writeRegionReadReply,
  writeRegionWriteReply,
  writeU16,
  writeU32,
  writeU64,
} from '../../src/wire/serializer.js';

const payloadLen = (buf: Buffer) => buf.length - HEADER_SIZE;

function access(): RegionAccess {
  return { offset: 0, region: 0, count: 0, dataOffset: 0 };
}

/** Checks the header of an encoded message against its own length and returns it. */
function header(buf: Buffer) {
  const h = decodeHeader(buf);
  expect(h.size).toBe(buf.length);
  return h;
}

describe('integer writers', () => {
  it('write little-endian', () => {
    const b = Buffer.alloc(14);
    writeU16(b, 0, 0xabcd);
    writeU32(b, 2, 0xfedcba98);
    writeU64(b, 6, 0x1f_ffff_ffff_fffe);
    expect(b.readUInt16LE(0)).toBe(0xabcd);
    expect(b.readUInt32LE(2)).toBe(0xfedcba98);
    expect(b.readBigUInt64LE(6)).toBe(0x1f_ffff_ffff_fffen);
  });

  it('writeU64 splits at 2^32 exactly', () => {
    const b = Buffer.alloc(8);
    writeU64(b, 0, 2 ** 32);
    expect(b.readBigUInt64LE(0)).toBe(1n << 32n);
    writeU64(b, 0, 2 ** 32 - 1);
    expect(b.readBigUInt64LE(0)).toBe(0xffff_ffffn);
  });

  it('only the bytes of the field are touched', () => {
    const b = Buffer.alloc(12, 0x55);
    writeU64(b, 2, 0);
    expect([...b]).toEqual([0x55, 0x55, 0, 0, 0, 0, 0, 0, 0, 0, 0x55, 0x55]);
  });
});

describe('headers and simple replies', () => {
  it('writeHeader writes all five fields', () => {
    const b = Buffer.alloc(20);
    writeHeader(b, 4, 0x1234, Command.DMA_MAP, 48, MsgType.COMMAND | Flag.NO_REPLY, 5);
    expect(decodeHeader(b, 4)).toEqual({ id: 0x1234, command: Command.DMA_MAP, size: 48, flags: Flag.NO_REPLY, error: 5 });
  });

  it('an error reply is a bare header with the ERROR flag and errno', () => {
    const b = Buffer.alloc(32, 0xee);
    expect(writeErrorReply(b, 0, 9, Command.REGION_READ, 22)).toBe(HEADER_SIZE);
    expect(decodeHeader(b)).toEqual({ id: 9, command: Command.REGION_READ, size: 16, flags: MsgType.REPLY | Flag.ERROR, error: 22 });
    expect(b[16]).toBe(0xee);
  });

  it('empty and echo replies', () => {
    const e = encodeEmptyReply(4, Command.DMA_MAP);
    expect(e.length).toBe(HEADER_SIZE);
    expect(header(e)).toMatchObject({ id: 4, command: Command.DMA_MAP, flags: MsgType.REPLY });
    const echo = encodeEchoReply(5, Command.DMA_UNMAP, Uint8Array.from([1, 2, 3]));
    expect(header(echo)).toMatchObject({ id: 5, command: Command.DMA_UNMAP, flags: MsgType.REPLY });
    expect([...echo.subarray(HEADER_SIZE)]).toEqual([1, 2, 3]);
  });

  it('device info and irq info replies state their own argsz', () => {
    const d = encodeDeviceInfoReply(1, 3, 9, 5);
    expect(header(d)).toMatchObject({ command: Command.DEVICE_GET_INFO, flags: MsgType.REPLY });
    expect(decodeDeviceInfo(d, HEADER_SIZE, payloadLen(d))).toEqual({ argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 });
    const q = encodeIrqInfoReply(2, 2, 0xb, 16);
    expect(header(q)).toMatchObject({ command: Command.DEVICE_GET_IRQ_INFO, flags: MsgType.REPLY });
    expect(decodeIrqInfo(q, HEADER_SIZE, payloadLen(q))).toEqual({ argsz: 16, flags: 0xb, index: 2, count: 16 });
  });

  it('region read/write replies', () => {
    const b = Buffer.alloc(64, 0xaa);
    const n = writeRegionReadReply(b, 6, 2 ** 40, 2, 8);
    expect(n).toBe(HEADER_SIZE + 16 + 8);
    expect(decodeHeader(b)).toMatchObject({ id: 6, command: Command.REGION_READ, size: n, flags: MsgType.REPLY });
    expect(decodeRegionAccess(b, HEADER_SIZE, 16, false, access())).toMatchObject({ offset: 2 ** 40, region: 2, count: 8 });

    const m = writeRegionWriteReply(b, 7, 0x10, 7, 4);
    expect(m).toBe(HEADER_SIZE + 16);
    expect(decodeHeader(b)).toMatchObject({ id: 7, command: Command.REGION_WRITE, size: m, flags: MsgType.REPLY });
    expect(decodeRegionAccess(b, HEADER_SIZE, 16, false, access())).toMatchObject({ offset: 0x10, region: 7, count: 4 });
  });
});

describe('region info reply', () => {
  const areas = [
    { offset: 0, size: 0x8000 },
    { offset: 0x10000, size: 2 ** 40 - 0x10000 },
  ];
  const base = {
    flags: RegionFlag.READ | RegionFlag.WRITE | RegionFlag.MMAP | RegionFlag.CAPS,
    index: 2,
    size: 2 ** 40,
    offset: 0x3000,
  };
  const full = 32 + 8 + 8 + 2 * 16;

  it('regionInfoSize counts the header, the sparse header and the areas', () => {
    expect(regionInfoSize(null)).toBe(32);
    expect(regionInfoSize([])).toBe(48);
    expect(regionInfoSize(areas)).toBe(full);
  });

  it('a small client argsz gets the fixed part, argsz stating the full size and no cap_offset', () => {
    for (const clientArgsz of [32, full - 1]) {
      const r = encodeRegionInfoReply(1, clientArgsz, { ...base, sparseAreas: areas });
      expect(payloadLen(r)).toBe(32);
      expect(header(r)).toMatchObject({ id: 1, command: Command.DEVICE_GET_REGION_INFO, flags: MsgType.REPLY });
      expect(decodeRegionInfo(r, HEADER_SIZE, payloadLen(r))).toEqual({
        argsz: full,
        ...base,
        capOffset: 0,
        sparseAreas: null,
      });
    }
  });

  it('a big enough client argsz gets the sparse capability at offset 32', () => {
    for (const clientArgsz of [full, full + 100]) {
      const r = encodeRegionInfoReply(1, clientArgsz, { ...base, sparseAreas: areas });
      expect(payloadLen(r)).toBe(full);
      const p = HEADER_SIZE;
      expect(r.readUInt32LE(p + 12)).toBe(32);
      expect(r.readUInt16LE(p + 32)).toBe(RegionCap.SPARSE_MMAP);
      expect(r.readUInt16LE(p + 34)).toBe(SPARSE_MMAP_VERSION);
      expect(r.readUInt32LE(p + 36)).toBe(0); // last capability
      expect(r.readUInt32LE(p + 40)).toBe(2);
      expect(decodeRegionInfo(r, HEADER_SIZE, payloadLen(r))).toEqual({
        argsz: full,
        ...base,
        capOffset: 32,
        sparseAreas: areas,
      });
    }
  });

  it('an empty area list is still a capability', () => {
    const r = encodeRegionInfoReply(1, 48, { ...base, sparseAreas: [] });
    expect(decodeRegionInfo(r, HEADER_SIZE, payloadLen(r))).toMatchObject({ argsz: 48, capOffset: 32, sparseAreas: [] });
  });

  it('a region without sparse areas is the fixed part whatever the client argsz', () => {
    const r = encodeRegionInfoReply(1, 4096, { ...base, sparseAreas: null });
    expect(payloadLen(r)).toBe(32);
    expect(decodeRegionInfo(r, HEADER_SIZE, 32)).toMatchObject({ argsz: 32, capOffset: 0, sparseAreas: null });
  });
});

describe('round trips', () => {
  it('DMA_MAP', () => {
    const b = encodeDmaMap(0xfffe, DmaMapFlag.READ | DmaMapFlag.WRITE, 2 ** 52 + 4096, 2 ** 53 - 4096, 0x4000_0000);
    expect(header(b)).toMatchObject({ id: 0xfffe, command: Command.DMA_MAP, flags: MsgType.COMMAND });
    expect(payloadLen(b)).toBe(Size.DMA_MAP);
    expect(decodeDmaMap(b, HEADER_SIZE, payloadLen(b))).toEqual({
      argsz: 32,
      flags: 3,
      offset: 2 ** 52 + 4096,
      address: 2 ** 53 - 4096,
      size: 0x4000_0000,
    });
  });

  it('DMA_UNMAP', () => {
    const b = encodeDmaUnmap(2, 2, 0x1_0000_0000, 0x2000);
    expect(header(b)).toMatchObject({ command: Command.DMA_UNMAP });
    expect(payloadLen(b)).toBe(Size.DMA_UNMAP);
    expect(decodeDmaUnmap(b, HEADER_SIZE, payloadLen(b))).toEqual({ argsz: 24, flags: 2, address: 0x1_0000_0000, size: 0x2000 });
  });

  it('SET_IRQS without and with bools', () => {
    const flags = IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER;
    const a = encodeSetIrqs(3, flags, 2, 4, 5);
    expect(header(a)).toMatchObject({ command: Command.DEVICE_SET_IRQS });
    const sa = decodeIrqSet(a, HEADER_SIZE, payloadLen(a));
    expect({ ...sa, bools: sa.bools.length }).toEqual({ argsz: 20, flags, index: 2, start: 4, count: 5, bools: 0 });

    const b = encodeSetIrqs(4, IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_MASK, 0, 0, 3, Uint8Array.from([1, 0, 1]));
    const sb = decodeIrqSet(b, HEADER_SIZE, payloadLen(b));
    expect(sb.argsz).toBe(23);
    expect([...sb.bools]).toEqual([1, 0, 1]);
  });

  it('REGION_READ', () => {
    const b = encodeRegionRead(8, 2, 2 ** 40 - 8, 8);
    expect(header(b)).toMatchObject({ id: 8, command: Command.REGION_READ, flags: MsgType.COMMAND });
    expect(decodeRegionAccess(b, HEADER_SIZE, payloadLen(b), false, access())).toEqual({
      offset: 2 ** 40 - 8,
      region: 2,
      count: 8,
      dataOffset: -1,
    });
  });

  it('REGION_WRITE, with and without NO_REPLY', () => {
    const data = Uint8Array.from([9, 8, 7, 6, 5]);
    for (const noReply of [false, true]) {
      const b = encodeRegionWrite(9, 7, 0x10, data, noReply);
      expect(header(b)).toMatchObject({ command: Command.REGION_WRITE, flags: noReply ? Flag.NO_REPLY : 0 });
      const a = decodeRegionAccess(b, HEADER_SIZE, payloadLen(b), true, access());
      expect(a).toEqual({ offset: 0x10, region: 7, count: 5, dataOffset: HEADER_SIZE + 16 });
      expect([...b.subarray(a.dataOffset, a.dataOffset + a.count)]).toEqual([...data]);
    }
  });

  it('REGION_WRITE_MULTI is sent without reply and decodes entry by entry', () => {
    const writes = [
      { region: 0, offset: 0x100, data: Uint8Array.from([1]) },
      { region: 2, offset: 2 ** 40 + 4, data: Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]) },
      { region: 7, offset: 4, data: Uint8Array.from([0xaa, 0xbb]) },
    ];
    const b = encodeWriteMulti(10, writes);
    expect(header(b)).toMatchObject({ command: Command.REGION_WRITE_MULTI, flags: MsgType.COMMAND | Flag.NO_REPLY });
    const n = decodeWriteMultiCount(b, HEADER_SIZE, payloadLen(b), 200);
    expect(n).toBe(3);
    for (let i = 0; i < n; i++) {
      const e = decodeWriteMultiEntry(b, HEADER_SIZE, i, access());
      const w = writes[i]!;
      expect(e).toMatchObject({ region: w.region, offset: w.offset, count: w.data.length });
      expect([...b.subarray(e.dataOffset, e.dataOffset + e.count)]).toEqual([...w.data]);
    }
  });

  it('VERSION without capabilities', () => {
    const b = encodeVersion(0, MsgType.COMMAND, 0, 1, null);
    expect(payloadLen(b)).toBe(4);
    expect(header(b)).toMatchObject({ command: Command.VERSION, flags: MsgType.COMMAND });
    expect(decodeVersion(b, HEADER_SIZE, payloadLen(b))).toEqual({ major: 0, minor: 1, capabilities: null });
  });

  it('VERSION with capabilities is NUL-terminated JSON that decodes back', () => {
    const caps = { names: [], maxMsgFds: 16, maxDataXferSize: 1 << 20, pgsizes: 4096, maxDmaMaps: 65535, writeMultiple: false };
    const b = encodeVersion(1, MsgType.REPLY, 0, 1, caps);
    expect(b[b.length - 1]).toBe(0);
    expect(header(b)).toMatchObject({ id: 1, command: Command.VERSION, flags: MsgType.REPLY });
    const v = decodeVersion(b, HEADER_SIZE, payloadLen(b));
    expect(v.major).toBe(0);
    expect(v.minor).toBe(1);
    expect(v.capabilities).toEqual({
      ...caps,
      names: ['max_msg_fds', 'max_data_xfer_size', 'pgsizes', 'max_dma_maps', 'write_multiple'],
    });
  });

  it('VERSION with an empty capability set', () => {
    const b = encodeVersion(1, MsgType.COMMAND, 0, 1, { names: ['ignored'] });
    expect(decodeVersion(b, HEADER_SIZE, payloadLen(b)).capabilities).toEqual({ names: [] });
  });

  it('DEVICE_GET_INFO, index queries, DEVICE_RESET', () => {
    const g = encodeDeviceGetInfo(1);
    expect(header(g)).toMatchObject({ command: Command.DEVICE_GET_INFO });
    expect(decodeDeviceInfo(g, HEADER_SIZE, payloadLen(g))).toEqual({ argsz: 16, flags: 0, numRegions: 0, numIrqs: 0 });

    const q = encodeIndexQuery(2, Command.DEVICE_GET_REGION_INFO, 80, 7, Size.REGION_INFO);
    expect(header(q)).toMatchObject({ command: Command.DEVICE_GET_REGION_INFO });
    expect(payloadLen(q)).toBe(32);
    expect(decodeIndexQuery(q, HEADER_SIZE, payloadLen(q), 32, 'q')).toEqual({ argsz: 80, flags: 0, index: 7 });

    const r = encodeDeviceReset(3);
    expect(r.length).toBe(HEADER_SIZE);
    expect(header(r)).toMatchObject({ command: Command.DEVICE_RESET, flags: MsgType.COMMAND });
  });
});
