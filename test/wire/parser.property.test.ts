import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Errno, HEADER_SIZE, MsgType, RegionCap, Size } from '../../src/wire/constants.js';
import { WireError } from '../../src/wire/errors.js';
import type { Capabilities, RegionAccess } from '../../src/wire/messages.js';
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
  readU64,
} from '../../src/wire/parser.js';
import {
  encodeDeviceInfoReply,
  encodeDmaMap,
  encodeDmaUnmap,
  encodeIrqInfoReply,
  encodeRegionInfoReply,
  encodeRegionRead,
  encodeRegionWrite,
  encodeSetIrqs,
  encodeVersion,
  encodeWriteMulti,
  writeHeader,
  writeU64,
} from '../../src/wire/serializer.js';

const RUNS = { numRuns: 500 };

const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u64 = fc.maxSafeNat();

/** Runs a decoder; anything it throws must be a WireError carrying EINVAL or ERANGE. */
function onlyWireError(fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof WireError)) throw new Error(`decoder threw a non-WireError: ${String(err)}`);
    expect([Errno.EINVAL, Errno.ERANGE]).toContain(err.errno);
  }
}

/** A buffer and a window [at, at+len) inside it. */
const windowed = (maxLength = 160) =>
  fc
    .uint8Array({ maxLength })
    .chain((bytes) =>
      fc
        .integer({ min: 0, max: bytes.length })
        .chain((at) => fc.record({ bytes: fc.constant(bytes), at: fc.constant(at), len: fc.integer({ min: 0, max: bytes.length - at }) })),
    );

/** Like `windowed` but the window is mostly exactly the size a decoder wants, so decoding gets past its length checks. */
const sized = (size: number, slack = 48) =>
  fc.record({
    pre: fc.nat({ max: 8 }),
    body: fc.uint8Array({ minLength: size, maxLength: size + slack }),
    post: fc.nat({ max: 8 }),
    exact: fc.boolean(),
  }).map(({ pre, body, post, exact }) => {
    const bytes = new Uint8Array(pre + body.length + post);
    bytes.set(body, pre);
    return { bytes, at: pre, len: exact ? size : body.length };
  });

const anyWindow = (size: number) => fc.oneof(windowed(), sized(size));

function access(): RegionAccess {
  return { offset: 0, region: 0, count: 0, dataOffset: 0 };
}

describe('decoders throw nothing but WireError on arbitrary input', () => {
  it('decodeHeader', () => {
    fc.assert(fc.property(windowed(), ({ bytes, at }) => onlyWireError(() => decodeHeader(bytes, at))), RUNS);
  });

  it.each([
    ['decodeDmaMap', Size.DMA_MAP, decodeDmaMap],
    ['decodeDmaUnmap', Size.DMA_UNMAP, decodeDmaUnmap],
    ['decodeDeviceInfo', Size.DEVICE_INFO, decodeDeviceInfo],
    ['decodeIrqInfo', Size.IRQ_INFO, decodeIrqInfo],
    ['decodeIrqSet', Size.IRQ_SET, decodeIrqSet],
    ['decodeVersion', Size.VERSION_MIN, decodeVersion],
    ['decodeRegionInfo', Size.REGION_INFO, decodeRegionInfo],
  ] as const)('%s', (_name, size, decode) => {
    fc.assert(fc.property(anyWindow(size), ({ bytes, at, len }) => onlyWireError(() => decode(bytes, at, len))), RUNS);
  });

  it('decodeIndexQuery', () => {
    const mins = fc.constantFrom(Size.REGION_INFO, Size.REGION_IO_FDS, Size.IRQ_INFO);
    fc.assert(
      fc.property(anyWindow(16), mins, ({ bytes, at, len }, min) => onlyWireError(() => decodeIndexQuery(bytes, at, len, min, 'q'))),
      RUNS,
    );
  });

  it('decodeRegionAccess, with and without data', () => {
    fc.assert(
      fc.property(anyWindow(Size.REGION_ACCESS), fc.boolean(), ({ bytes, at, len }, hasData) =>
        onlyWireError(() => {
          const a = decodeRegionAccess(bytes, at, len, hasData, access());
          // When it accepts write data, the data lies inside the window.
          if (hasData) expect(a.dataOffset + a.count).toBe(at + len);
        }),
      ),
      RUNS,
    );
  });

  it('decodeWriteMultiCount and then every entry', () => {
    // A count of 0..6 planted in the first byte, with a payload of about that many entries,
    // makes it likely that the count check passes and the entries get decoded.
    const planted = fc
      .integer({ min: 0, max: 6 })
      .chain((n) =>
        fc.record({ n: fc.constant(n), bytes: fc.uint8Array({ minLength: 8 + n * 24, maxLength: 8 + n * 24 + 2 }) }),
      )
      .map(({ n, bytes }) => {
        bytes.fill(0, 0, 8);
        bytes[0] = n;
        return { bytes, at: 0, len: bytes.length };
      });
    fc.assert(
      fc.property(fc.oneof(planted, windowed()), fc.integer({ min: 1, max: 300 }), ({ bytes, at, len }, max) =>
        onlyWireError(() => {
          const n = decodeWriteMultiCount(bytes, at, len, max);
          expect(n).toBeGreaterThan(0);
          expect(n).toBeLessThanOrEqual(max);
          expect(8 + n * 24).toBe(len);
          for (let i = 0; i < n; i++) {
            onlyWireError(() => {
              const e = decodeWriteMultiEntry(bytes, at, i, access());
              expect(e.count).toBeGreaterThanOrEqual(1);
              expect(e.count).toBeLessThanOrEqual(8);
              expect(e.dataOffset + 8).toBeLessThanOrEqual(at + len);
            });
          }
        }),
      ),
      RUNS,
    );
  });

  it('decodeRegionInfo on well-formed capability chains, then mutated and truncated', () => {
    const area = fc.record({ offset: u64, size: u64 });
    const cap = fc.oneof(
      fc.record({ id: fc.constant<number>(RegionCap.SPARSE_MMAP), areas: fc.array(area, { maxLength: 4 }) }),
      fc.record({ id: fc.constantFrom<number>(RegionCap.TYPE, 0x7777), areas: fc.constant([]) }),
    );
    const mutation = fc.record({ at: fc.nat(), value: fc.oneof(fc.nat({ max: 0xff }), u32), wide: fc.boolean() });
    const input = fc.record({
      caps: fc.array(cap, { maxLength: 4 }),
      mutations: fc.oneof(fc.constant([]), fc.array(mutation, { minLength: 1, maxLength: 3 })),
      cut: fc.oneof(fc.constant(0), fc.nat({ max: 40 })),
    });
    fc.assert(
      fc.property(input, ({ caps, mutations, cut }) => {
        // Lay the chain out after the fixed part: a sparse cap is 16 bytes plus its areas, others 16 bytes.
        const sizes = caps.map((c) => 16 + 16 * c.areas.length);
        const total = 32 + sizes.reduce((a, n) => a + n, 0);
        const b = Buffer.alloc(total);
        b.writeUInt32LE(total, 0);
        b.writeUInt32LE(caps.length > 0 ? 32 : 0, 12);
        b.writeBigUInt64LE(1n << 40n, 16);
        let at = 32;
        caps.forEach((c, i) => {
          const next = i + 1 < caps.length ? at + sizes[i]! : 0;
          b.writeUInt16LE(c.id, at);
          b.writeUInt16LE(1, at + 2);
          b.writeUInt32LE(next, at + 4);
          b.writeUInt32LE(c.areas.length, at + 8);
          c.areas.forEach((a, j) => {
            b.writeBigUInt64LE(BigInt(a.offset), at + 16 + 16 * j);
            b.writeBigUInt64LE(BigInt(a.size), at + 24 + 16 * j);
          });
          at += sizes[i]!;
        });
        for (const m of mutations) {
          const p = m.at % total;
          if (m.wide && p + 4 <= total) b.writeUInt32LE(m.value, p);
          else b[p] = m.value & 0xff;
        }
        const len = Math.max(0, total - cut);
        onlyWireError(() => {
          const info = decodeRegionInfo(b, 0, len);
          if (mutations.length === 0 && cut === 0) {
            const sparse = caps.filter((c) => c.id === RegionCap.SPARSE_MMAP);
            expect(info.sparseAreas).toEqual(sparse.length > 0 ? sparse[sparse.length - 1]!.areas : null);
          }
        });
        if (mutations.length === 0 && cut === 0) expect(() => decodeRegionInfo(b, 0, len)).not.toThrow();
      }),
      RUNS,
    );
  });

  it('decodeVersion with JSON-shaped payloads', () => {
    const capKey = fc.constantFrom('max_msg_fds', 'max_data_xfer_size', 'pgsizes', 'max_dma_maps', 'write_multiple', 'migration', 'x');
    const capValue = fc.oneof(fc.jsonValue(), fc.integer({ min: -5, max: 2 ** 20 }), fc.boolean(), fc.double());
    const caps = fc.dictionary(capKey, capValue);
    const text = fc.oneof(
      fc.json(),
      caps.map((c) => JSON.stringify({ capabilities: c })),
      fc.jsonValue().map((v) => JSON.stringify({ capabilities: v })),
      fc.string(),
    );
    fc.assert(
      fc.property(text, fc.boolean(), u16, u16, (json, terminate, major, minor) => {
        const tail = Buffer.from(terminate ? json + '\0' : json, 'utf8');
        const p = Buffer.alloc(4 + tail.length);
        p.writeUInt16LE(major, 0);
        p.writeUInt16LE(minor, 2);
        tail.copy(p, 4);
        onlyWireError(() => {
          const v = decodeVersion(p, 0, p.length);
          expect(v.major).toBe(major);
          expect(v.minor).toBe(minor);
          const c = v.capabilities;
          if (!c) return;
          for (const k of ['maxMsgFds', 'maxDataXferSize', 'pgsizes', 'maxDmaMaps'] as const) {
            if (c[k] !== undefined) expect(Number.isSafeInteger(c[k]) && c[k] >= 0).toBe(true);
          }
          if (c.writeMultiple !== undefined) expect(typeof c.writeMultiple).toBe('boolean');
        });
      }),
      RUNS,
    );
  });
});

describe('round trips', () => {
  it('header', () => {
    fc.assert(
      fc.property(u16, u16, u32, u32, u32, fc.nat({ max: 8 }), (id, command, size, flags, error, at) => {
        const b = new Uint8Array(at + HEADER_SIZE);
        writeHeader(b, at, id, command, size, flags, error);
        expect(decodeHeader(b, at)).toEqual({ id, command, size, flags, error });
      }),
      RUNS,
    );
  });

  it('u64: values below 2^53 read back exactly, the rest are ERANGE', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), (v) => {
        const b = Buffer.alloc(8);
        b.writeBigUInt64LE(v);
        if (v < 2n ** 53n) {
          expect(readU64(b, 0, 'v')).toBe(Number(v));
        } else {
          expect(() => readU64(b, 0, 'v')).toThrow(WireError);
          try {
            readU64(b, 0, 'v');
          } catch (err) {
            expect((err as WireError).errno).toBe(Errno.ERANGE);
          }
        }
      }),
      RUNS,
    );
    fc.assert(
      fc.property(u64, (v) => {
        const b = Buffer.alloc(8);
        writeU64(b, 0, v);
        expect(b.readBigUInt64LE(0)).toBe(BigInt(v));
      }),
      RUNS,
    );
  });

  it('DMA_MAP', () => {
    fc.assert(
      fc.property(u16, u32, u64, u64, u64, (id, flags, offset, address, size) => {
        const b = encodeDmaMap(id, flags, offset, address, size);
        expect(decodeHeader(b)).toMatchObject({ id, size: b.length });
        expect(decodeDmaMap(b, HEADER_SIZE, b.length - HEADER_SIZE)).toEqual({ argsz: Size.DMA_MAP, flags, offset, address, size });
      }),
      RUNS,
    );
  });

  it('DMA_UNMAP', () => {
    fc.assert(
      fc.property(u16, u32, u64, u64, (id, flags, address, size) => {
        const b = encodeDmaUnmap(id, flags, address, size);
        expect(decodeHeader(b).id).toBe(id);
        expect(decodeDmaUnmap(b, HEADER_SIZE, b.length - HEADER_SIZE)).toEqual({ argsz: Size.DMA_UNMAP, flags, address, size });
      }),
      RUNS,
    );
  });

  it('device info and irq info replies', () => {
    fc.assert(
      fc.property(u16, u32, u32, u32, (id, a, b, c) => {
        const d = encodeDeviceInfoReply(id, a, b, c);
        expect(decodeDeviceInfo(d, HEADER_SIZE, d.length - HEADER_SIZE)).toEqual({ argsz: 16, flags: a, numRegions: b, numIrqs: c });
        const q = encodeIrqInfoReply(id, a, b, c);
        expect(decodeIrqInfo(q, HEADER_SIZE, q.length - HEADER_SIZE)).toEqual({ argsz: 16, flags: b, index: a, count: c });
      }),
      RUNS,
    );
  });

  it('SET_IRQS', () => {
    fc.assert(
      fc.property(u16, u32, u32, u32, u32, fc.option(fc.uint8Array({ maxLength: 64 })), (id, flags, index, start, count, bools) => {
        const b = encodeSetIrqs(id, flags, index, start, count, bools);
        const s = decodeIrqSet(b, HEADER_SIZE, b.length - HEADER_SIZE);
        expect({ ...s, bools: [...s.bools] }).toEqual({
          argsz: Size.IRQ_SET + (bools?.length ?? 0),
          flags,
          index,
          start,
          count,
          bools: [...(bools ?? [])],
        });
      }),
      RUNS,
    );
  });

  it('REGION_READ and REGION_WRITE', () => {
    fc.assert(
      fc.property(u16, u32, u64, u32, fc.uint8Array({ maxLength: 64 }), fc.boolean(), (id, region, offset, count, data, noReply) => {
        const r = encodeRegionRead(id, region, offset, count);
        expect(decodeRegionAccess(r, HEADER_SIZE, r.length - HEADER_SIZE, false, access())).toEqual({ offset, region, count, dataOffset: -1 });
        const w = encodeRegionWrite(id, region, offset, data, noReply);
        const a = decodeRegionAccess(w, HEADER_SIZE, w.length - HEADER_SIZE, true, access());
        expect(a).toEqual({ offset, region, count: data.length, dataOffset: HEADER_SIZE + Size.REGION_ACCESS });
        expect([...w.subarray(a.dataOffset, a.dataOffset + a.count)]).toEqual([...data]);
      }),
      RUNS,
    );
  });

  it('REGION_WRITE_MULTI', () => {
    const write = fc.record({ region: u32, offset: u64, data: fc.uint8Array({ minLength: 1, maxLength: 8 }) });
    fc.assert(
      fc.property(u16, fc.array(write, { minLength: 1, maxLength: 20 }), (id, writes) => {
        const b = encodeWriteMulti(id, writes);
        const n = decodeWriteMultiCount(b, HEADER_SIZE, b.length - HEADER_SIZE, 200);
        expect(n).toBe(writes.length);
        writes.forEach((w, i) => {
          const e = decodeWriteMultiEntry(b, HEADER_SIZE, i, access());
          expect(e).toMatchObject({ region: w.region, offset: w.offset, count: w.data.length });
          expect([...b.subarray(e.dataOffset, e.dataOffset + e.count)]).toEqual([...w.data]);
        });
      }),
      RUNS,
    );
  });

  it('VERSION', () => {
    const caps = fc.option(
      fc.record(
        {
          maxMsgFds: u32,
          maxDataXferSize: u64,
          pgsizes: u64,
          maxDmaMaps: u32,
          writeMultiple: fc.boolean(),
        },
        { requiredKeys: [] },
      ),
    );
    fc.assert(
      fc.property(u16, fc.constantFrom(MsgType.COMMAND, MsgType.REPLY), u16, u16, caps, (id, type, major, minor, c) => {
        const full: Capabilities | null = c ? { names: [], ...c } : null;
        const b = encodeVersion(id, type, major, minor, full);
        expect(decodeHeader(b)).toMatchObject({ id, flags: type, size: b.length });
        const v = decodeVersion(b, HEADER_SIZE, b.length - HEADER_SIZE);
        expect(v.major).toBe(major);
        expect(v.minor).toBe(minor);
        if (!c) {
          expect(v.capabilities).toBeNull();
          return;
        }
        const { names, ...fields } = v.capabilities!;
        expect(fields).toEqual(c);
        expect(names.length).toBe(Object.keys(c).length);
      }),
      RUNS,
    );
  });

  it('region info reply: full argsz always, areas only when the client has room', () => {
    const area = fc.record({ offset: u64, size: u64 });
    fc.assert(
      fc.property(
        u16,
        fc.record({ flags: u32, index: u32, size: u64, offset: u64, sparseAreas: fc.option(fc.array(area, { maxLength: 8 })) }),
        u32,
        (id, info, clientArgsz) => {
          const b = encodeRegionInfoReply(id, clientArgsz, info);
          const d = decodeRegionInfo(b, HEADER_SIZE, b.length - HEADER_SIZE);
          const full = info.sparseAreas ? 48 + 16 * info.sparseAreas.length : 32;
          const withCaps = info.sparseAreas !== null && clientArgsz >= full;
          expect(d).toEqual({
            argsz: full,
            flags: info.flags,
            index: info.index,
            size: info.size,
            offset: info.offset,
            capOffset: withCaps ? 32 : 0,
            sparseAreas: withCaps ? info.sparseAreas : null,
          });
          expect(b.length - HEADER_SIZE).toBe(withCaps ? full : 32);
        },
      ),
      RUNS,
    );
  });
});
