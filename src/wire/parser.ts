// Pure decoders for vfio-user payloads. Each takes the buffer, where the payload
// starts and how long it is; none does I/O, and none throws anything but WireError.
import { DmaUnmapFlag, Errno, HEADER_SIZE, IRQ_SET_ACTION_MASK, IRQ_SET_DATA_MASK, IrqSetFlag, Limits, Size } from './constants.js';
import { TWO_32 } from '../common/arith.js';
import { WireError, invalid } from './errors.js';
import type {
  Capabilities,
  DeviceInfo,
  DmaMap,
  DmaUnmap,
  Header,
  IndexQuery,
  IrqInfo,
  IrqSet,
  RegionAccess,
  RegionInfo,
  SparseArea,
  Version,
} from './messages.js';
import { RegionCap } from './constants.js';

/** Reads a little-endian u64; values that a JS number cannot hold exactly are refused. */
export function readU64(buf: Uint8Array, at: number, what: string): number {
  const lo = readU32(buf, at);
  const hi = readU32(buf, at + 4);
  if (hi > 0x1fffff) throw new WireError(Errno.ERANGE, `${what} is beyond 2^53`);
  return hi * TWO_32 + lo;
}

export function readU32(buf: Uint8Array, at: number): number {
  return (buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16)) + buf[at + 3]! * 0x1000000;
}

export function readU16(buf: Uint8Array, at: number): number {
  return buf[at]! | (buf[at + 1]! << 8);
}

function need(len: number, min: number, what: string): void {
  if (len < min) throw invalid(`${what}: payload of ${len} bytes, need ${min}`);
}

function exact(len: number, size: number, what: string): void {
  if (len !== size) throw invalid(`${what}: payload of ${len} bytes, expected ${size}`);
}

export function decodeHeader(buf: Uint8Array, at = 0, out?: Header): Header {
  if (buf.length - at < HEADER_SIZE) throw invalid(`header: ${buf.length - at} bytes, need ${HEADER_SIZE}`);
  const h = out ?? { id: 0, command: 0, size: 0, flags: 0, error: 0 };
  h.id = readU16(buf, at);
  h.command = readU16(buf, at + 2);
  h.size = readU32(buf, at + 4);
  h.flags = readU32(buf, at + 8);
  h.error = readU32(buf, at + 12);
  return h;
}

export function decodeVersion(buf: Uint8Array, at: number, len: number): Version {
  need(len, Size.VERSION_MIN, 'VERSION');
  const major = readU16(buf, at);
  const minor = readU16(buf, at + 2);
  if (len === Size.VERSION_MIN) return { major, minor, capabilities: null };
  const json = buf.subarray(at + 4, at + len);
  if (json[json.length - 1] !== 0) throw invalid('VERSION: capability JSON is not NUL-terminated');
  const text = Buffer.from(json.buffer, json.byteOffset, json.length - 1).toString('utf8');
  if (text.length === 0) return { major, minor, capabilities: null };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw invalid('VERSION: capability data is not JSON');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw invalid('VERSION: capability data is not a JSON object');
  }
  const capsValue = (parsed as Record<string, unknown>)['capabilities'];
  if (capsValue === undefined) return { major, minor, capabilities: { names: [] } };
  if (capsValue === null || typeof capsValue !== 'object' || Array.isArray(capsValue)) {
    throw invalid('VERSION: "capabilities" is not an object');
  }
  return { major, minor, capabilities: decodeCapabilities(capsValue as Record<string, unknown>) };
}

function capNumber(caps: Record<string, unknown>, key: string): number | undefined {
  const v = caps[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw invalid(`VERSION: capability ${key} is not a non-negative integer`);
  }
  return v;
}

function decodeCapabilities(caps: Record<string, unknown>): Capabilities {
  const out: Capabilities = { names: Object.keys(caps) };
  const maxMsgFds = capNumber(caps, 'max_msg_fds');
  const maxDataXferSize = capNumber(caps, 'max_data_xfer_size');
  const pgsizes = capNumber(caps, 'pgsizes');
  const maxDmaMaps = capNumber(caps, 'max_dma_maps');
  if (maxMsgFds !== undefined) out.maxMsgFds = maxMsgFds;
  if (maxDataXferSize !== undefined) out.maxDataXferSize = maxDataXferSize;
  if (pgsizes !== undefined) out.pgsizes = pgsizes;
  if (maxDmaMaps !== undefined) out.maxDmaMaps = maxDmaMaps;
  const wm = caps['write_multiple'];
  if (wm !== undefined) {
    if (typeof wm !== 'boolean') throw invalid('VERSION: capability write_multiple is not a boolean');
    out.writeMultiple = wm;
  }
  return out;
}

export function decodeDmaMap(buf: Uint8Array, at: number, len: number): DmaMap {
  exact(len, Size.DMA_MAP, 'DMA_MAP');
  return {
    argsz: readU32(buf, at),
    flags: readU32(buf, at + 4),
    offset: readU64(buf, at + 8, 'DMA_MAP offset'),
    address: readU64(buf, at + 16, 'DMA_MAP address'),
    size: readU64(buf, at + 24, 'DMA_MAP size'),
  };
}

export function decodeDmaUnmap(buf: Uint8Array, at: number, len: number): DmaUnmap {
  // A dirty-page bitmap may follow the fixed part; the caller decides whether it is allowed.
  need(len, Size.DMA_UNMAP, 'DMA_UNMAP');
  return {
    argsz: readU32(buf, at),
    flags: readU32(buf, at + 4),
    address: readU64(buf, at + 8, 'DMA_UNMAP address'),
    size: readU64(buf, at + 16, 'DMA_UNMAP size'),
  };
}

/** The shape of a DMA_MAP with the `fdCount` fds that came with it: the fixed argsz, one fd at most. */
export function checkDmaMap(m: DmaMap, fdCount: number): void {
  if (m.argsz !== Size.DMA_MAP) throw invalid(`DMA_MAP argsz ${m.argsz}, expected ${Size.DMA_MAP}`);
  if (fdCount > 1) throw invalid(`DMA_MAP with ${fdCount} fds`);
}

/** The shape of a DMA_UNMAP of `len` payload bytes: no dirty bitmap, known flags, ALL alone. */
export function checkDmaUnmap(u: DmaUnmap, len: number): void {
  if (len !== Size.DMA_UNMAP) throw invalid('DMA_UNMAP dirty bitmaps are not supported');
  if (u.argsz < Size.DMA_UNMAP) throw invalid(`DMA_UNMAP argsz ${u.argsz} below ${Size.DMA_UNMAP}`);
  if (u.flags & DmaUnmapFlag.GET_DIRTY_PAGE_INFO) throw new WireError(Errno.EOPNOTSUPP, 'dirty page tracking is not supported');
  if (u.flags & ~DmaUnmapFlag.ALL) throw invalid(`DMA_UNMAP flags 0x${u.flags.toString(16)}`);
  if (u.flags & DmaUnmapFlag.ALL && (u.address !== 0 || u.size !== 0)) throw invalid('DMA_UNMAP ALL with an address or size');
}

export function decodeDeviceInfo(buf: Uint8Array, at: number, len: number): DeviceInfo {
  need(len, Size.DEVICE_INFO, 'DEVICE_GET_INFO');
  const argsz = readU32(buf, at);
  if (argsz < Size.DEVICE_INFO) throw invalid(`DEVICE_GET_INFO argsz ${argsz} below ${Size.DEVICE_INFO}`);
  return {
    argsz,
    flags: readU32(buf, at + 4),
    numRegions: readU32(buf, at + 8),
    numIrqs: readU32(buf, at + 12),
  };
}

/** GET_REGION_INFO, GET_IRQ_INFO and GET_REGION_IO_FDS requests: argsz, flags, index; `min` bytes at least, and argsz too. */
export function decodeIndexQuery(buf: Uint8Array, at: number, len: number, min: number, what: string): IndexQuery {
  need(len, min, what);
  const argsz = readU32(buf, at);
  if (argsz < min) throw invalid(`${what}: argsz ${argsz} below ${min}`);
  return { argsz, flags: readU32(buf, at + 4), index: readU32(buf, at + 8) };
}

export function decodeRegionInfo(buf: Uint8Array, at: number, len: number): RegionInfo {
  need(len, Size.REGION_INFO, 'region info');
  const info: RegionInfo = {
    argsz: readU32(buf, at),
    flags: readU32(buf, at + 4),
    index: readU32(buf, at + 8),
    capOffset: readU32(buf, at + 12),
    size: readU64(buf, at + 16, 'region size'),
    offset: readU64(buf, at + 24, 'region offset'),
    sparseAreas: null,
  };
  // Walk the capability chain; offsets are from the start of the struct.
  let next = info.capOffset;
  for (let hops = 0; next !== 0; hops++) {
    if (hops > 16) throw invalid('region info: capability chain too long');
    if (next < Size.REGION_INFO || next + Size.CAP_HEADER > len) throw invalid('region info: capability outside payload');
    const id = readU16(buf, at + next);
    if (id === RegionCap.SPARSE_MMAP) info.sparseAreas = decodeSparseAreas(buf, at + next, len - next);
    next = readU32(buf, at + next + 4);
  }
  return info;
}

function decodeSparseAreas(buf: Uint8Array, at: number, len: number): SparseArea[] {
  need(len, Size.CAP_HEADER + Size.SPARSE_MMAP_HEADER, 'sparse mmap capability');
  const n = readU32(buf, at + Size.CAP_HEADER);
  need(len, Size.CAP_HEADER + Size.SPARSE_MMAP_HEADER + n * Size.SPARSE_MMAP_AREA, 'sparse mmap areas');
  const areas: SparseArea[] = [];
  for (let i = 0; i < n; i++) {
    const p = at + Size.CAP_HEADER + Size.SPARSE_MMAP_HEADER + i * Size.SPARSE_MMAP_AREA;
    areas.push({ offset: readU64(buf, p, 'area offset'), size: readU64(buf, p + 8, 'area size') });
  }
  return areas;
}

export function decodeIrqInfo(buf: Uint8Array, at: number, len: number): IrqInfo {
  need(len, Size.IRQ_INFO, 'irq info');
  return {
    argsz: readU32(buf, at),
    flags: readU32(buf, at + 4),
    index: readU32(buf, at + 8),
    count: readU32(buf, at + 12),
  };
}

export function decodeIrqSet(buf: Uint8Array, at: number, len: number): IrqSet {
  need(len, Size.IRQ_SET, 'DEVICE_SET_IRQS');
  return {
    argsz: readU32(buf, at),
    flags: readU32(buf, at + 4),
    index: readU32(buf, at + 8),
    start: readU32(buf, at + 12),
    count: readU32(buf, at + 16),
    bools: buf.subarray(at + Size.IRQ_SET, at + len),
  };
}

/**
 * The shape of a SET_IRQS as <linux/vfio.h> defines it, with the `fdCount`
 * eventfds that came with it: one data type and one action, data for every
 * vector, fds only with DATA_EVENTFD. Whether the index and vectors exist is
 * the device's to say.
 */
export function checkIrqSet(s: IrqSet, fdCount: number): void {
  if (s.argsz < Size.IRQ_SET) throw invalid(`SET_IRQS: argsz ${s.argsz} below ${Size.IRQ_SET}`);
  const data = s.flags & IRQ_SET_DATA_MASK;
  const action = s.flags & IRQ_SET_ACTION_MASK;
  if (s.flags & ~(IRQ_SET_DATA_MASK | IRQ_SET_ACTION_MASK)) throw invalid('SET_IRQS: unknown flags');
  if (!isSingleBit(data) || !isSingleBit(action)) throw invalid('SET_IRQS: exactly one data type and one action required');
  if (s.count === 0) {
    // count 0 with DATA_NONE and TRIGGER disables the whole index.
    if (data !== IrqSetFlag.DATA_NONE || action !== IrqSetFlag.ACTION_TRIGGER || s.start !== 0) {
      throw invalid('SET_IRQS: count 0 is only valid to disable an index');
    }
    if (fdCount > 0) throw invalid('SET_IRQS: fds sent with count 0');
    return;
  }
  if (data === IrqSetFlag.DATA_BOOL && s.bools.length < s.count) throw invalid(`SET_IRQS: ${s.bools.length} bools for count ${s.count}`);
  if (data !== IrqSetFlag.DATA_EVENTFD && fdCount > 0) throw invalid('SET_IRQS: fds sent without DATA_EVENTFD');
  if (data === IrqSetFlag.DATA_EVENTFD && fdCount !== 0 && fdCount !== s.count) {
    throw invalid(`SET_IRQS: ${fdCount} eventfds for count ${s.count}`);
  }
}

function isSingleBit(v: number): boolean {
  return v !== 0 && (v & (v - 1)) === 0;
}

/**
 * REGION_READ request or REGION_WRITE request/reply. Fills `out` so the hot path
 * allocates nothing; `hasData` says a write body must follow (and match count).
 */
export function decodeRegionAccess(
  buf: Uint8Array,
  at: number,
  len: number,
  hasData: boolean,
  out: RegionAccess,
): RegionAccess {
  need(len, Size.REGION_ACCESS, 'region access');
  out.offset = readU64(buf, at, 'region offset');
  out.region = readU32(buf, at + 8);
  out.count = readU32(buf, at + 12);
  if (hasData) {
    if (len !== Size.REGION_ACCESS + out.count) {
      throw invalid(`REGION_WRITE: ${len - Size.REGION_ACCESS} data bytes for count ${out.count}`);
    }
    out.dataOffset = at + Size.REGION_ACCESS;
  } else {
    if (len !== Size.REGION_ACCESS) throw invalid('REGION_READ carries data');
    out.dataOffset = -1;
  }
  return out;
}

/** A REGION_READ/WRITE request moves 1 byte up to the max_data_xfer_size this server advertises. */
export function checkTransferSize(a: RegionAccess): void {
  if (a.count === 0 || a.count > Limits.MAX_DATA_XFER_SIZE) {
    throw invalid(`access of ${a.count} bytes (1..${Limits.MAX_DATA_XFER_SIZE})`);
  }
}

/** Number of entries in a REGION_WRITE_MULTI, checked against the payload length. */
export function decodeWriteMultiCount(buf: Uint8Array, at: number, len: number, max: number): number {
  need(len, Size.WRITE_MULTI_COUNT, 'REGION_WRITE_MULTI');
  const n = readU64(buf, at, 'wr_cnt');
  if (n === 0 || n > max) throw invalid(`REGION_WRITE_MULTI: ${n} writes (1..${max} allowed)`);
  if (len !== Size.WRITE_MULTI_COUNT + n * Size.WRITE_MULTI_ENTRY) {
    throw invalid(`REGION_WRITE_MULTI: payload of ${len} bytes does not hold ${n} writes`);
  }
  return n;
}

/** Entry `i` of a REGION_WRITE_MULTI whose count was checked. */
export function decodeWriteMultiEntry(buf: Uint8Array, at: number, i: number, out: RegionAccess): RegionAccess {
  const p = at + Size.WRITE_MULTI_COUNT + i * Size.WRITE_MULTI_ENTRY;
  out.offset = readU64(buf, p, 'write offset');
  out.region = readU32(buf, p + 8);
  out.count = readU32(buf, p + 12);
  if (out.count === 0 || out.count > Size.WRITE_MULTI_DATA) {
    throw invalid(`REGION_WRITE_MULTI: entry ${i} count ${out.count} (1..${Size.WRITE_MULTI_DATA} allowed)`);
  }
  out.dataOffset = p + Size.REGION_ACCESS;
  return out;
}
