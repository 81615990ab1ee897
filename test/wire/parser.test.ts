import { describe, expect, it } from 'vitest';
import { Errno, HEADER_SIZE, IrqIndex, IrqSetFlag, RegionCap, Size } from '../../src/wire/constants.js';
import { WireError } from '../../src/wire/errors.js';
import type { IrqSet, RegionAccess } from '../../src/wire/messages.js';
import {
  checkIrqSet,
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
  readU16,
  readU32,
  readU64,
} from '../../src/wire/parser.js';

/** Runs `fn` and returns the WireError it throws; fails the test if it throws anything else or nothing. */
function wireError(fn: () => unknown): WireError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(WireError);
    return err as WireError;
  }
  expect.fail('expected a WireError');
}

function expectEinval(fn: () => unknown): void {
  expect(wireError(fn).errno).toBe(Errno.EINVAL);
}

function u64le(value: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(value);
  return b;
}

function access(): RegionAccess {
  return { offset: -7, region: -7, count: -7, dataOffset: -7 };
}

/** VERSION payload: major, minor and the given bytes as the JSON part. */
function versionPayload(json: string | Buffer, major = 0, minor = 1): Buffer {
  const tail = typeof json === 'string' ? Buffer.from(json, 'utf8') : json;
  const b = Buffer.alloc(4 + tail.length);
  b.writeUInt16LE(major, 0);
  b.writeUInt16LE(minor, 2);
  tail.copy(b, 4);
  return b;
}

const nul = (s: string) => Buffer.from(s + '\0', 'utf8');

describe('integer readers', () => {
  it('read little-endian values, including the high bit of a u32', () => {
    const b = Buffer.from([0x01, 0x02, 0x03, 0x84, 0x05, 0x06, 0x07, 0x00]);
    expect(readU16(b, 0)).toBe(0x0201);
    expect(readU32(b, 0)).toBe(0x84030201);
    expect(readU32(Buffer.from([0xff, 0xff, 0xff, 0xff]), 0)).toBe(0xffffffff);
    expect(readU64(b, 0, 'x')).toBe(0x0007060584030201);
  });

  it('readU64 accepts 2^53-1 and refuses 2^53 and above with ERANGE', () => {
    expect(readU64(u64le(2n ** 53n - 1n), 0, 'x')).toBe(Number.MAX_SAFE_INTEGER);
    for (const v of [2n ** 53n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n]) {
      const err = wireError(() => readU64(u64le(v), 0, 'thing'));
      expect(err.errno).toBe(Errno.ERANGE);
      expect(err.message).toContain('thing');
    }
  });
});

describe('decodeHeader', () => {
  it('decodes every field at an offset', () => {
    const b = Buffer.alloc(3 + HEADER_SIZE);
    b.writeUInt16LE(0xbeef, 3);
    b.writeUInt16LE(9, 5);
    b.writeUInt32LE(0x12345678, 7);
    b.writeUInt32LE(0x80000021, 11);
    b.writeUInt32LE(0xfffffffe, 15);
    expect(decodeHeader(b, 3)).toEqual({ id: 0xbeef, command: 9, size: 0x12345678, flags: 0x80000021, error: 0xfffffffe });
  });

  it('fills the object it is given', () => {
    const out = { id: 0, command: 0, size: 0, flags: 0, error: 0 };
    const b = Buffer.alloc(HEADER_SIZE);
    b.writeUInt16LE(7, 0);
    expect(decodeHeader(b, 0, out)).toBe(out);
    expect(out.id).toBe(7);
  });

  it('refuses fewer than 16 bytes', () => {
    expectEinval(() => decodeHeader(Buffer.alloc(15)));
    expectEinval(() => decodeHeader(Buffer.alloc(20), 5));
    expect(() => decodeHeader(Buffer.alloc(20), 4)).not.toThrow();
  });
});

describe('fixed-size decoders refuse short payloads with EINVAL', () => {
  const big = Buffer.alloc(256);
  const cases: [string, number, (len: number) => unknown][] = [
    ['VERSION', Size.VERSION_MIN, (len) => decodeVersion(big, 0, len)],
    ['DMA_MAP', Size.DMA_MAP, (len) => decodeDmaMap(big, 0, len)],
    ['DMA_UNMAP', Size.DMA_UNMAP, (len) => decodeDmaUnmap(big, 0, len)],
    ['DEVICE_GET_INFO', Size.DEVICE_INFO, (len) => decodeDeviceInfo(big, 0, len)],
    ['index query', Size.REGION_INFO, (len) => decodeIndexQuery(big, 0, len, Size.REGION_INFO, 'q')],
    ['region info', Size.REGION_INFO, (len) => decodeRegionInfo(big, 0, len)],
    ['irq info', Size.IRQ_INFO, (len) => decodeIrqInfo(big, 0, len)],
    ['SET_IRQS', Size.IRQ_SET, (len) => decodeIrqSet(big, 0, len)],
    ['region access', Size.REGION_ACCESS, (len) => decodeRegionAccess(big, 0, len, false, access())],
    ['write multi', Size.WRITE_MULTI_COUNT, (len) => decodeWriteMultiCount(big, 0, len, 200)],
  ];
  for (const [name, min, decode] of cases) {
    it(`${name}: ${min - 1} bytes and 0 bytes are refused`, () => {
      expectEinval(() => decode(min - 1));
      expectEinval(() => decode(0));
    });
  }

  it('DMA_MAP must be exactly 32 bytes', () => {
    expectEinval(() => decodeDmaMap(big, 0, 33));
    expect(() => decodeDmaMap(big, 0, 32)).not.toThrow();
  });

  it('DMA_UNMAP accepts a trailing bitmap', () => {
    expect(decodeDmaUnmap(big, 0, 40).size).toBe(0);
  });
});

describe('u64 fields beyond 2^53 are ERANGE', () => {
  const tooBig = u64le(2n ** 53n);
  function withU64(len: number, at: number): Buffer {
    const b = Buffer.alloc(len);
    tooBig.copy(b, at);
    return b;
  }
  it.each([
    ['DMA_MAP offset', () => decodeDmaMap(withU64(32, 8), 0, 32)],
    ['DMA_MAP address', () => decodeDmaMap(withU64(32, 16), 0, 32)],
    ['DMA_MAP size', () => decodeDmaMap(withU64(32, 24), 0, 32)],
    ['DMA_UNMAP address', () => decodeDmaUnmap(withU64(24, 8), 0, 24)],
    ['DMA_UNMAP size', () => decodeDmaUnmap(withU64(24, 16), 0, 24)],
    ['region info size', () => decodeRegionInfo(withU64(32, 16), 0, 32)],
    ['region info offset', () => decodeRegionInfo(withU64(32, 24), 0, 32)],
    ['region access offset', () => decodeRegionAccess(withU64(16, 0), 0, 16, false, access())],
    ['write multi count', () => decodeWriteMultiCount(withU64(8, 0), 0, 8, 200)],
  ])('%s', (_name, fn) => {
    expect(wireError(fn).errno).toBe(Errno.ERANGE);
  });

  it('a u64 of exactly 2^53-1 decodes', () => {
    const b = Buffer.alloc(32);
    u64le(2n ** 53n - 1n).copy(b, 24);
    expect(decodeDmaMap(b, 0, 32).size).toBe(Number.MAX_SAFE_INTEGER);
  });
});

describe('decodeVersion', () => {
  it('without JSON: capabilities null', () => {
    expect(decodeVersion(versionPayload('', 0, 1), 0, 4)).toEqual({ major: 0, minor: 1, capabilities: null });
  });

  it('a lone NUL is an empty JSON string: capabilities null', () => {
    expect(decodeVersion(versionPayload(nul('')), 0, 5).capabilities).toBeNull();
  });

  it('decodes the known capabilities and lists every name', () => {
    const json = JSON.stringify({
      capabilities: {
        max_msg_fds: 8,
        max_data_xfer_size: 1048576,
        pgsizes: 4096,
        max_dma_maps: 65535,
        write_multiple: true,
        migration: { pgsize: 4096 },
      },
    });
    const p = versionPayload(nul(json), 3, 4);
    expect(decodeVersion(p, 0, p.length)).toEqual({
      major: 3,
      minor: 4,
      capabilities: {
        names: ['max_msg_fds', 'max_data_xfer_size', 'pgsizes', 'max_dma_maps', 'write_multiple', 'migration'],
        maxMsgFds: 8,
        maxDataXferSize: 1048576,
        pgsizes: 4096,
        maxDmaMaps: 65535,
        writeMultiple: true,
      },
    });
  });

  it('an object without "capabilities" gives an empty capability set', () => {
    const p = versionPayload(nul('{"other":1}'));
    expect(decodeVersion(p, 0, p.length).capabilities).toEqual({ names: [] });
  });

  it('decodes at an offset inside a larger buffer', () => {
    const p = versionPayload(nul('{"capabilities":{"max_msg_fds":3}}'), 1, 2);
    const b = Buffer.concat([Buffer.from([9, 9, 9]), p, Buffer.from('garbage')]);
    expect(decodeVersion(b, 3, p.length)).toEqual({ major: 1, minor: 2, capabilities: { names: ['max_msg_fds'], maxMsgFds: 3 } });
  });

  it.each([
    ['JSON not NUL-terminated', Buffer.from('{}', 'utf8')],
    ['not JSON', nul('{capabilities:')],
    ['bytes after the NUL', Buffer.from('{}\0x', 'latin1')],
    ['a JSON number', nul('42')],
    ['a JSON string', nul('"x"')],
    ['JSON null', nul('null')],
    ['a JSON array', nul('[]')],
    ['capabilities is an array', nul('{"capabilities":[]}')],
    ['capabilities is null', nul('{"capabilities":null}')],
    ['capabilities is a number', nul('{"capabilities":1}')],
    ['max_msg_fds is a string', nul('{"capabilities":{"max_msg_fds":"8"}}')],
    ['max_msg_fds is negative', nul('{"capabilities":{"max_msg_fds":-1}}')],
    ['max_data_xfer_size is fractional', nul('{"capabilities":{"max_data_xfer_size":1.5}}')],
    ['pgsizes is beyond 2^53', nul('{"capabilities":{"pgsizes":18446744073709551615}}')],
    ['max_dma_maps is a boolean', nul('{"capabilities":{"max_dma_maps":true}}')],
    ['write_multiple is a number', nul('{"capabilities":{"write_multiple":1}}')],
    ['write_multiple is null', nul('{"capabilities":{"write_multiple":null}}')],
  ])('%s → EINVAL', (_name, json) => {
    const p = versionPayload(json);
    expectEinval(() => decodeVersion(p, 0, p.length));
  });
});

describe('DMA_MAP / DMA_UNMAP / DEVICE_GET_INFO / IRQ_INFO / index query', () => {
  it('decode their fields', () => {
    const b = Buffer.alloc(32);
    b.writeUInt32LE(32, 0);
    b.writeUInt32LE(3, 4);
    b.writeBigUInt64LE(0x1000n, 8);
    b.writeBigUInt64LE(0x1_0000_0000n, 16);
    b.writeBigUInt64LE(0x20_0000n, 24);
    expect(decodeDmaMap(b, 0, 32)).toEqual({ argsz: 32, flags: 3, offset: 0x1000, address: 0x1_0000_0000, size: 0x20_0000 });
    expect(decodeDmaUnmap(b, 0, 24)).toEqual({ argsz: 32, flags: 3, address: 0x1000, size: 0x1_0000_0000 });
    expect(decodeDeviceInfo(b, 0, 16)).toEqual({ argsz: 32, flags: 3, numRegions: 0x1000, numIrqs: 0 });
    expect(decodeIrqInfo(b, 0, 16)).toEqual({ argsz: 32, flags: 3, index: 0x1000, count: 0 });
    expect(decodeIndexQuery(b, 0, 16, 16, 'q')).toEqual({ argsz: 32, flags: 3, index: 0x1000 });
  });
});

describe('decodeRegionInfo', () => {
  function info(capOffset: number, extra: number): Buffer {
    const b = Buffer.alloc(32 + extra);
    b.writeUInt32LE(32 + extra, 0);
    b.writeUInt32LE(0xf, 4);
    b.writeUInt32LE(2, 8);
    b.writeUInt32LE(capOffset, 12);
    b.writeBigUInt64LE(1n << 40n, 16);
    b.writeBigUInt64LE(0x2000n, 24);
    return b;
  }

  it('without capabilities: sparseAreas null', () => {
    expect(decodeRegionInfo(info(0, 0), 0, 32)).toEqual({
      argsz: 32,
      flags: 0xf,
      index: 2,
      capOffset: 0,
      size: 2 ** 40,
      offset: 0x2000,
      sparseAreas: null,
    });
  });

  it('follows the chain past an unknown capability to the sparse one', () => {
    // TYPE capability at 32 (16 bytes), then sparse mmap at 48 with one area.
    const b = info(32, 16 + 32);
    b.writeUInt16LE(RegionCap.TYPE, 32);
    b.writeUInt32LE(48, 36);
    b.writeUInt16LE(RegionCap.SPARSE_MMAP, 48);
    b.writeUInt16LE(1, 50);
    b.writeUInt32LE(0, 52);
    b.writeUInt32LE(1, 56);
    b.writeBigUInt64LE(0x1000n, 64);
    b.writeBigUInt64LE(0x3000n, 72);
    expect(decodeRegionInfo(b, 0, b.length).sparseAreas).toEqual([{ offset: 0x1000, size: 0x3000 }]);
  });

  it('refuses a capability offset inside the fixed part or past the payload', () => {
    expectEinval(() => decodeRegionInfo(info(8, 16), 0, 48));
    expectEinval(() => decodeRegionInfo(info(31, 16), 0, 48));
    expectEinval(() => decodeRegionInfo(info(41, 16), 0, 48));
    expectEinval(() => decodeRegionInfo(info(32, 0), 0, 32));
  });

  it('refuses a capability chain that loops', () => {
    const b = info(32, 8);
    b.writeUInt16LE(RegionCap.TYPE, 32);
    b.writeUInt32LE(32, 36); // next points at itself
    expectEinval(() => decodeRegionInfo(b, 0, b.length));
  });

  it('refuses a sparse capability whose areas do not fit', () => {
    const b = info(32, 16 + 16);
    b.writeUInt16LE(RegionCap.SPARSE_MMAP, 32);
    b.writeUInt32LE(2, 40); // two areas, room for one
    expectEinval(() => decodeRegionInfo(b, 0, b.length));
    b.writeUInt32LE(0xffffffff, 40);
    expectEinval(() => decodeRegionInfo(b, 0, b.length));
    b.writeUInt32LE(1, 40);
    expect(decodeRegionInfo(b, 0, b.length).sparseAreas).toEqual([{ offset: 0, size: 0 }]);
  });

  it('refuses a sparse capability too short for its own header', () => {
    const b = info(32, 12);
    b.writeUInt16LE(RegionCap.SPARSE_MMAP, 32);
    expectEinval(() => decodeRegionInfo(b, 0, b.length));
  });
});

describe('decodeIrqSet', () => {
  it('decodes the fixed part and hands out the trailing bools', () => {
    const b = Buffer.alloc(4 + 20 + 3);
    b.writeUInt32LE(23, 4);
    b.writeUInt32LE(0x22, 8);
    b.writeUInt32LE(2, 12);
    b.writeUInt32LE(1, 16);
    b.writeUInt32LE(3, 20);
    b.set([1, 0, 1], 24);
    const s = decodeIrqSet(b, 4, 23);
    expect({ ...s, bools: [...s.bools] }).toEqual({ argsz: 23, flags: 0x22, index: 2, start: 1, count: 3, bools: [1, 0, 1] });
  });

  it('has no bools when the payload is the fixed part', () => {
    expect(decodeIrqSet(Buffer.alloc(40), 0, 20).bools.length).toBe(0);
  });
});

describe('checkIrqSet: the shape of a SET_IRQS and its fds', () => {
  const { DATA_NONE, DATA_BOOL, DATA_EVENTFD, ACTION_MASK, ACTION_UNMASK, ACTION_TRIGGER } = IrqSetFlag;
  const req = (flags: number, index: number, start: number, count: number, bools: number[] = []): IrqSet => ({
    argsz: 20 + bools.length,
    flags,
    index,
    start,
    count,
    bools: Uint8Array.from(bools),
  });
  const invalid: [string, IrqSet, number[]][] = [
    ['two data types', req(DATA_NONE | DATA_BOOL | ACTION_TRIGGER, IrqIndex.MSIX, 0, 1, [1]), []],
    ['no data type', req(ACTION_TRIGGER, IrqIndex.MSIX, 0, 1), []],
    ['two actions', req(DATA_NONE | ACTION_MASK | ACTION_TRIGGER, IrqIndex.INTX, 0, 1), []],
    ['no action', req(DATA_NONE, IrqIndex.MSIX, 0, 1), []],
    ['unknown flag bits', req(DATA_NONE | ACTION_TRIGGER | (1 << 6), IrqIndex.MSIX, 0, 1), []],
    ['high unknown flag bit', req(DATA_NONE | ACTION_TRIGGER | 0x80000000, IrqIndex.MSIX, 0, 1), []],
    ['fewer fds than count', req(DATA_EVENTFD | ACTION_TRIGGER, IrqIndex.MSIX, 0, 3), [50, 51]],
    ['more fds than count', req(DATA_EVENTFD | ACTION_TRIGGER, IrqIndex.MSIX, 0, 1), [50, 51]],
    ['fds with DATA_NONE', req(DATA_NONE | ACTION_TRIGGER, IrqIndex.MSIX, 0, 1), [50]],
    ['fds with DATA_BOOL', req(DATA_BOOL | ACTION_TRIGGER, IrqIndex.MSIX, 0, 1, [1]), [50]],
    ['BOOL array shorter than count', req(DATA_BOOL | ACTION_TRIGGER, IrqIndex.MSIX, 0, 3, [1, 1]), []],
    ['BOOL array empty', req(DATA_BOOL | ACTION_TRIGGER, IrqIndex.MSIX, 0, 1), []],
    ['argsz below 20', { ...req(DATA_NONE | ACTION_TRIGGER, IrqIndex.MSIX, 0, 1), argsz: 19 }, []],
    ['count 0 with DATA_BOOL', req(DATA_BOOL | ACTION_TRIGGER, IrqIndex.MSIX, 0, 0), []],
    ['count 0 with DATA_EVENTFD', req(DATA_EVENTFD | ACTION_TRIGGER, IrqIndex.MSIX, 0, 0), []],
    ['count 0 with a start', req(DATA_NONE | ACTION_TRIGGER, IrqIndex.MSIX, 1, 0), []],
    ['count 0 with MASK', req(DATA_NONE | ACTION_MASK, IrqIndex.INTX, 0, 0), []],
    ['count 0 with UNMASK', req(DATA_NONE | ACTION_UNMASK, IrqIndex.INTX, 0, 0), []],
    ['count 0 disable with fds attached', req(DATA_NONE | ACTION_TRIGGER, IrqIndex.MSIX, 0, 0), [50]],
  ];
  for (const [name, request, fds] of invalid) {
    it(`refuses ${name}`, () => expectEinval(() => checkIrqSet(request, fds.length)));
  }

  it.each([
    ['eventfds for every vector', req(DATA_EVENTFD | ACTION_TRIGGER, IrqIndex.MSIX, 0, 2), 2],
    ['no eventfds: de-assign', req(DATA_EVENTFD | ACTION_TRIGGER, IrqIndex.MSIX, 0, 2), 0],
    ['a disable', req(DATA_NONE | ACTION_TRIGGER, IrqIndex.MSIX, 0, 0), 0],
    ['bools for every vector', req(DATA_BOOL | ACTION_MASK, IrqIndex.INTX, 0, 1, [1]), 0],
    ['an unmask', req(DATA_NONE | ACTION_UNMASK, IrqIndex.INTX, 0, 1), 0],
    // vectors that do not exist are the device's to refuse
    ['any index and range', req(DATA_NONE | ACTION_TRIGGER, 0xffffffff, 7, 9), 0],
  ] as const)('accepts %s', (_name, request, fdCount) => {
    expect(() => checkIrqSet(request, fdCount)).not.toThrow();
  });
});

describe('decodeRegionAccess', () => {
  function req(count: number, data: number): Buffer {
    const b = Buffer.alloc(16 + data);
    b.writeBigUInt64LE(0x1234n, 0);
    b.writeUInt32LE(7, 8);
    b.writeUInt32LE(count, 12);
    return b;
  }

  it('a read request has no data', () => {
    expect(decodeRegionAccess(req(4, 0), 0, 16, false, access())).toEqual({ offset: 0x1234, region: 7, count: 4, dataOffset: -1 });
  });

  it('a write request points at its data', () => {
    const b = Buffer.concat([Buffer.alloc(5), req(4, 4)]);
    expect(decodeRegionAccess(b, 5, 20, true, access())).toEqual({ offset: 0x1234, region: 7, count: 4, dataOffset: 21 });
  });

  it('a write whose data length differs from count is refused', () => {
    expectEinval(() => decodeRegionAccess(req(4, 3), 0, 19, true, access()));
    expectEinval(() => decodeRegionAccess(req(4, 5), 0, 21, true, access()));
    expectEinval(() => decodeRegionAccess(req(0xffffffff, 4), 0, 20, true, access()));
  });
});

describe('REGION_WRITE_MULTI', () => {
  function multi(n: number, entries: number): Buffer {
    const b = Buffer.alloc(8 + entries * 24);
    b.writeBigUInt64LE(BigInt(n), 0);
    for (let i = 0; i < entries; i++) {
      const p = 8 + 24 * i;
      b.writeBigUInt64LE(BigInt(0x100 * i), p);
      b.writeUInt32LE(i, p + 8);
      b.writeUInt32LE(1 + (i % 8), p + 12);
    }
    return b;
  }

  it('accepts a count that matches the payload', () => {
    const b = multi(3, 3);
    expect(decodeWriteMultiCount(b, 0, b.length, 200)).toBe(3);
    expect(decodeWriteMultiEntry(b, 0, 2, access())).toEqual({ offset: 0x200, region: 2, count: 3, dataOffset: 8 + 48 + 16 });
  });

  it('refuses a count of 0', () => {
    expectEinval(() => decodeWriteMultiCount(multi(0, 0), 0, 8, 200));
  });

  it('refuses a count above the maximum', () => {
    const b = multi(201, 201);
    expectEinval(() => decodeWriteMultiCount(b, 0, b.length, 200));
    const c = multi(4, 4);
    expectEinval(() => decodeWriteMultiCount(c, 0, c.length, 3));
  });

  it('refuses a payload that does not hold exactly count entries', () => {
    const b = multi(3, 4);
    expectEinval(() => decodeWriteMultiCount(b, 0, b.length, 200));
    expectEinval(() => decodeWriteMultiCount(b, 0, 8 + 2 * 24, 200));
    expectEinval(() => decodeWriteMultiCount(b, 0, 8 + 3 * 24 - 1, 200));
    expectEinval(() => decodeWriteMultiCount(b, 0, 8 + 3 * 24 + 1, 200));
  });

  it('refuses entries whose count is 0 or more than 8', () => {
    const b = multi(2, 2);
    b.writeUInt32LE(0, 8 + 12);
    expectEinval(() => decodeWriteMultiEntry(b, 0, 0, access()));
    b.writeUInt32LE(9, 8 + 24 + 12);
    expectEinval(() => decodeWriteMultiEntry(b, 0, 1, access()));
    b.writeUInt32LE(8, 8 + 24 + 12);
    expect(decodeWriteMultiEntry(b, 0, 1, access()).count).toBe(8);
  });
});

