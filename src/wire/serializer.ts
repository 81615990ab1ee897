// Pure encoders for vfio-user messages. The write* functions fill a caller's
// buffer (the server reuses one per connection); the encode* functions return
// a fresh Buffer for messages that are rare or built by the client.
import { TWO_32 } from '../common/arith.js';
import { Command, Flag, HEADER_SIZE, MsgType, RegionCap, Size, SPARSE_MMAP_VERSION } from './constants.js';
import type { Capabilities, RegionInfo, SparseArea } from './messages.js';

export function writeU64(buf: Uint8Array, at: number, value: number): void {
  const lo = value % TWO_32;
  writeU32(buf, at, lo);
  writeU32(buf, at + 4, (value - lo) / TWO_32);
}

export function writeU32(buf: Uint8Array, at: number, value: number): void {
  buf[at] = value & 0xff;
  buf[at + 1] = (value >>> 8) & 0xff;
  buf[at + 2] = (value >>> 16) & 0xff;
  buf[at + 3] = (value >>> 24) & 0xff;
}

export function writeU16(buf: Uint8Array, at: number, value: number): void {
  buf[at] = value & 0xff;
  buf[at + 1] = (value >>> 8) & 0xff;
}

export function writeHeader(
  buf: Uint8Array,
  at: number,
  id: number,
  command: number,
  size: number,
  flags: number,
  error = 0,
): void {
  writeU16(buf, at, id);
  writeU16(buf, at + 2, command);
  writeU32(buf, at + 4, size);
  writeU32(buf, at + 8, flags);
  writeU32(buf, at + 12, error);
}

/** An error reply is the header alone. */
export function writeErrorReply(buf: Uint8Array, at: number, id: number, command: number, errno: number): number {
  writeHeader(buf, at, id, command, HEADER_SIZE, MsgType.REPLY | Flag.ERROR, errno);
  return HEADER_SIZE;
}

function message(command: number, id: number, payload: number, flags: number): Buffer {
  const buf = Buffer.alloc(HEADER_SIZE + payload);
  writeHeader(buf, 0, id, command, HEADER_SIZE + payload, flags);
  return buf;
}

function capsJson(caps: Capabilities): Record<string, number | boolean> {
  const out: Record<string, number | boolean> = {};
  if (caps.maxMsgFds !== undefined) out['max_msg_fds'] = caps.maxMsgFds;
  if (caps.maxDataXferSize !== undefined) out['max_data_xfer_size'] = caps.maxDataXferSize;
  if (caps.pgsizes !== undefined) out['pgsizes'] = caps.pgsizes;
  if (caps.maxDmaMaps !== undefined) out['max_dma_maps'] = caps.maxDmaMaps;
  if (caps.writeMultiple !== undefined) out['write_multiple'] = caps.writeMultiple;
  return out;
}

/** VERSION request or reply: major, minor, NUL-terminated JSON. */
export function encodeVersion(
  id: number,
  type: number,
  major: number,
  minor: number,
  caps: Capabilities | null,
): Buffer {
  const json = caps ? Buffer.from(JSON.stringify({ capabilities: capsJson(caps) }) + '\0', 'utf8') : Buffer.alloc(0);
  const buf = message(Command.VERSION, id, Size.VERSION_MIN + json.length, type);
  writeU16(buf, HEADER_SIZE, major);
  writeU16(buf, HEADER_SIZE + 2, minor);
  json.copy(buf, HEADER_SIZE + 4);
  return buf;
}

export function encodeDeviceInfoReply(id: number, flags: number, numRegions: number, numIrqs: number): Buffer {
  const buf = message(Command.DEVICE_GET_INFO, id, Size.DEVICE_INFO, MsgType.REPLY);
  writeU32(buf, HEADER_SIZE, Size.DEVICE_INFO);
  writeU32(buf, HEADER_SIZE + 4, flags);
  writeU32(buf, HEADER_SIZE + 8, numRegions);
  writeU32(buf, HEADER_SIZE + 12, numIrqs);
  return buf;
}

/** Bytes a region info needs with its capabilities. */
export function regionInfoSize(areas: readonly SparseArea[] | null): number {
  if (!areas) return Size.REGION_INFO;
  return Size.REGION_INFO + Size.CAP_HEADER + Size.SPARSE_MMAP_HEADER + areas.length * Size.SPARSE_MMAP_AREA;
}

/**
 * Region info reply. argsz always states the full size; the capabilities are
 * included only when the client's argsz leaves room for them (the client then
 * asks again with a bigger argsz).
 */
export function encodeRegionInfoReply(
  id: number,
  clientArgsz: number,
  info: Omit<RegionInfo, 'argsz' | 'capOffset'>,
): Buffer {
  const full = regionInfoSize(info.sparseAreas);
  const withCaps = info.sparseAreas !== null && clientArgsz >= full;
  const payload = withCaps ? full : Size.REGION_INFO;
  const buf = message(Command.DEVICE_GET_REGION_INFO, id, payload, MsgType.REPLY);
  const p = HEADER_SIZE;
  writeU32(buf, p, full);
  writeU32(buf, p + 4, info.flags);
  writeU32(buf, p + 8, info.index);
  writeU32(buf, p + 12, withCaps ? Size.REGION_INFO : 0);
  writeU64(buf, p + 16, info.size);
  writeU64(buf, p + 24, info.offset);
  if (withCaps && info.sparseAreas) {
    const c = p + Size.REGION_INFO;
    writeU16(buf, c, RegionCap.SPARSE_MMAP);
    writeU16(buf, c + 2, SPARSE_MMAP_VERSION);
    writeU32(buf, c + 4, 0);
    writeU32(buf, c + 8, info.sparseAreas.length);
    writeU32(buf, c + 12, 0);
    info.sparseAreas.forEach((a, i) => {
      const q = c + Size.CAP_HEADER + Size.SPARSE_MMAP_HEADER + i * Size.SPARSE_MMAP_AREA;
      writeU64(buf, q, a.offset);
      writeU64(buf, q + 8, a.size);
    });
  }
  return buf;
}

export function encodeIrqInfoReply(id: number, index: number, flags: number, count: number): Buffer {
  const buf = message(Command.DEVICE_GET_IRQ_INFO, id, Size.IRQ_INFO, MsgType.REPLY);
  writeU32(buf, HEADER_SIZE, Size.IRQ_INFO);
  writeU32(buf, HEADER_SIZE + 4, flags);
  writeU32(buf, HEADER_SIZE + 8, index);
  writeU32(buf, HEADER_SIZE + 12, count);
  return buf;
}

/** Header and fixed part of a REGION_READ reply; the caller fills `count` data bytes after it. */
export function writeRegionReadReply(buf: Uint8Array, id: number, offset: number, region: number, count: number): number {
  const size = HEADER_SIZE + Size.REGION_ACCESS + count;
  writeHeader(buf, 0, id, Command.REGION_READ, size, MsgType.REPLY);
  writeU64(buf, HEADER_SIZE, offset);
  writeU32(buf, HEADER_SIZE + 8, region);
  writeU32(buf, HEADER_SIZE + 12, count);
  return size;
}

export function writeRegionWriteReply(buf: Uint8Array, id: number, offset: number, region: number, count: number): number {
  const size = HEADER_SIZE + Size.REGION_ACCESS;
  writeHeader(buf, 0, id, Command.REGION_WRITE, size, MsgType.REPLY);
  writeU64(buf, HEADER_SIZE, offset);
  writeU32(buf, HEADER_SIZE + 8, region);
  writeU32(buf, HEADER_SIZE + 12, count);
  return size;
}

/** A REGION_WRITE_MULTI reply: wr_cnt, the number of writes done. */
export function writeWriteMultiReply(buf: Uint8Array, id: number, writes: number): number {
  const size = HEADER_SIZE + Size.WRITE_MULTI_COUNT;
  writeHeader(buf, 0, id, Command.REGION_WRITE_MULTI, size, MsgType.REPLY);
  writeU64(buf, HEADER_SIZE, writes);
  return size;
}

/** An empty reply into a caller's buffer (the DMA churn of a booting VM allocates nothing); returns its size. */
export function writeEmptyReply(buf: Uint8Array, id: number, command: number): number {
  writeHeader(buf, 0, id, command, HEADER_SIZE, MsgType.REPLY);
  return HEADER_SIZE;
}

/** A reply echoing `length` bytes of `src` from `srcAt`, into a caller's buffer; returns its size. */
export function writeEchoReply(buf: Uint8Array, id: number, command: number, src: Uint8Array, srcAt: number, length: number): number {
  writeHeader(buf, 0, id, command, HEADER_SIZE + length, MsgType.REPLY);
  for (let i = 0; i < length; i++) buf[HEADER_SIZE + i] = src[srcAt + i]!;
  return HEADER_SIZE + length;
}

/** A reply with an empty payload (DMA_MAP, SET_IRQS, DEVICE_RESET). */
export function encodeEmptyReply(id: number, command: number): Buffer {
  return message(command, id, 0, MsgType.REPLY);
}

/** A reply that echoes the request payload. */
export function encodeEchoReply(id: number, command: number, payload: Uint8Array): Buffer {
  const buf = message(command, id, payload.length, MsgType.REPLY);
  buf.set(payload, HEADER_SIZE);
  return buf;
}

// ---- requests, as a client builds them -------------------------------------

export function encodeDmaMap(id: number, flags: number, offset: number, address: number, size: number): Buffer {
  const buf = message(Command.DMA_MAP, id, Size.DMA_MAP, MsgType.COMMAND);
  writeU32(buf, HEADER_SIZE, Size.DMA_MAP);
  writeU32(buf, HEADER_SIZE + 4, flags);
  writeU64(buf, HEADER_SIZE + 8, offset);
  writeU64(buf, HEADER_SIZE + 16, address);
  writeU64(buf, HEADER_SIZE + 24, size);
  return buf;
}

export function encodeDmaUnmap(id: number, flags: number, address: number, size: number): Buffer {
  const buf = message(Command.DMA_UNMAP, id, Size.DMA_UNMAP, MsgType.COMMAND);
  writeU32(buf, HEADER_SIZE, Size.DMA_UNMAP);
  writeU32(buf, HEADER_SIZE + 4, flags);
  writeU64(buf, HEADER_SIZE + 8, address);
  writeU64(buf, HEADER_SIZE + 16, size);
  return buf;
}

export function encodeDeviceGetInfo(id: number): Buffer {
  const buf = message(Command.DEVICE_GET_INFO, id, Size.DEVICE_INFO, MsgType.COMMAND);
  writeU32(buf, HEADER_SIZE, Size.DEVICE_INFO);
  return buf;
}

/** GET_REGION_INFO / GET_IRQ_INFO / GET_REGION_IO_FDS request. */
export function encodeIndexQuery(id: number, command: number, argsz: number, index: number, payload: number): Buffer {
  const buf = message(command, id, payload, MsgType.COMMAND);
  writeU32(buf, HEADER_SIZE, argsz);
  writeU32(buf, HEADER_SIZE + 8, index);
  return buf;
}

export function encodeSetIrqs(
  id: number,
  flags: number,
  index: number,
  start: number,
  count: number,
  bools: Uint8Array | null = null,
): Buffer {
  const extra = bools ? bools.length : 0;
  const buf = message(Command.DEVICE_SET_IRQS, id, Size.IRQ_SET + extra, MsgType.COMMAND);
  writeU32(buf, HEADER_SIZE, Size.IRQ_SET + extra);
  writeU32(buf, HEADER_SIZE + 4, flags);
  writeU32(buf, HEADER_SIZE + 8, index);
  writeU32(buf, HEADER_SIZE + 12, start);
  writeU32(buf, HEADER_SIZE + 16, count);
  if (bools) buf.set(bools, HEADER_SIZE + Size.IRQ_SET);
  return buf;
}

export function encodeRegionRead(id: number, region: number, offset: number, count: number): Buffer {
  const buf = message(Command.REGION_READ, id, Size.REGION_ACCESS, MsgType.COMMAND);
  writeU64(buf, HEADER_SIZE, offset);
  writeU32(buf, HEADER_SIZE + 8, region);
  writeU32(buf, HEADER_SIZE + 12, count);
  return buf;
}

export function encodeRegionWrite(id: number, region: number, offset: number, data: Uint8Array, noReply = false): Buffer {
  const buf = message(
    Command.REGION_WRITE,
    id,
    Size.REGION_ACCESS + data.length,
    MsgType.COMMAND | (noReply ? Flag.NO_REPLY : 0),
  );
  writeU64(buf, HEADER_SIZE, offset);
  writeU32(buf, HEADER_SIZE + 8, region);
  writeU32(buf, HEADER_SIZE + 12, data.length);
  buf.set(data, HEADER_SIZE + Size.REGION_ACCESS);
  return buf;
}

export interface MultiWrite {
  region: number;
  offset: number;
  /** 1 to 8 bytes. */
  data: Uint8Array;
}

/** REGION_WRITE_MULTI; QEMU always sends it without a reply (the default here too). */
export function encodeWriteMulti(id: number, writes: readonly MultiWrite[], noReply = true): Buffer {
  const buf = message(
    Command.REGION_WRITE_MULTI,
    id,
    Size.WRITE_MULTI_COUNT + writes.length * Size.WRITE_MULTI_ENTRY,
    MsgType.COMMAND | (noReply ? Flag.NO_REPLY : 0),
  );
  writeU64(buf, HEADER_SIZE, writes.length);
  writes.forEach((w, i) => {
    if (w.data.length < 1 || w.data.length > Size.WRITE_MULTI_DATA) {
      throw new RangeError(`write-multi entry ${i}: ${w.data.length} bytes (1..${Size.WRITE_MULTI_DATA})`);
    }
    const p = HEADER_SIZE + Size.WRITE_MULTI_COUNT + i * Size.WRITE_MULTI_ENTRY;
    writeU64(buf, p, w.offset);
    writeU32(buf, p + 8, w.region);
    writeU32(buf, p + 12, w.data.length);
    buf.set(w.data, p + Size.REGION_ACCESS);
  });
  return buf;
}

export function encodeDeviceReset(id: number): Buffer {
  return message(Command.DEVICE_RESET, id, 0, MsgType.COMMAND);
}
