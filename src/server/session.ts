import type { Logger } from 'pino';
import { DeviceError } from '../device/errors.js';
import type { GpuDevice } from '../device/gpu-device.js';
import {
  Command,
  DmaUnmapFlag,
  Errno,
  Flag,
  HEADER_SIZE,
  KNOWN_HEADER_FLAGS,
  Limits,
  MsgType,
  RegionFlag,
  Size,
  commandName,
} from '../wire/constants.js';
import { WireError } from '../wire/errors.js';
import type { Capabilities, Header, RegionAccess } from '../wire/messages.js';
import {
  checkDmaMap,
  checkDmaUnmap,
  checkIrqSet,
  checkTransferSize,
  decodeDeviceInfo,
  decodeDmaMap,
  decodeDmaUnmap,
  decodeIndexQuery,
  decodeIrqSet,
  decodeRegionAccess,
  decodeVersion,
  decodeWriteMultiCount,
  decodeWriteMultiEntry,
} from '../wire/parser.js';
import {
  encodeDeviceInfoReply,
  encodeEchoReply,
  encodeEmptyReply,
  encodeIrqInfoReply,
  encodeRegionInfoReply,
  encodeVersion,
  regionInfoSize,
  writeEchoReply,
  writeEmptyReply,
  writeErrorReply,
  writeRegionReadReply,
  writeRegionWriteReply,
  writeU32,
  writeWriteMultiReply,
} from '../wire/serializer.js';
import { native } from '../native/native.js';
import type { Counters } from './counters.js';
import type { Connection, MessageSink } from '../transport/connection.js';

/** A buffer for a session's replies (the largest is a REGION_READ of max_data_xfer_size). */
export function newReplyBuffer(): Buffer {
  return Buffer.allocUnsafeSlow(HEADER_SIZE + Size.REGION_ACCESS + Limits.MAX_DATA_XFER_SIZE);
}

/** Minimal view of the connection the session replies through. */
export type ReplyChannel = Pick<Connection, 'send' | 'close'>;

/**
 * The protocol state of one client: version negotiation, then each command
 * validated and applied to the device, in order, with exactly one reply for
 * every command that wants one.
 */
export class Session implements MessageSink {
  private negotiated = false;
  private clientCaps: Capabilities | null = null;
  private writeMultiple = false;
  /**
   * Reused for REGION_READ/WRITE replies: the trapped path allocates nothing.
   * Each reply is written and sent (or copied into the send queue) at once, so
   * one buffer may serve every session of a daemon.
   */
  private readonly replyBuf: Buffer;
  private readonly access: RegionAccess = { offset: 0, region: 0, count: 0, dataOffset: -1 };
  private readonly traceAccess: boolean;
  /** This client's own open files of the mappable regions (see GpuDevice.reopenForClient). */
  private readonly regionFds = new Map<number, number>();
  /**
   * Whether this client could have changed device memory: it wrote a region
   * or was given an fd to map one. A client that did neither (`describe`)
   * leaves nothing behind for a scrub to clear.
   */
  mayHaveWritten = false;

  constructor(
    private readonly device: GpuDevice,
    private readonly channel: ReplyChannel,
    private readonly log: Logger,
    private readonly counters: Counters,
    private readonly onEnd: (reason: string, error?: Error) => void = () => {},
    replyBuf: Buffer = newReplyBuffer(),
  ) {
    this.replyBuf = replyBuf;
    this.traceAccess = log.isLevelEnabled('trace');
  }

  /** VERSION has been agreed. */
  get isNegotiated(): boolean {
    return this.negotiated;
  }

  get capabilities(): Capabilities | null {
    return this.clientCaps;
  }

  /** Returns a promise only while a command waits (a reset waiting for the device); reading pauses until then. */
  onMessage(h: Header, buf: Buffer, at: number, fds: number[]): void | Promise<void> {
    this.counters.countMessage(h.command);
    const noReply = (h.flags & Flag.NO_REPLY) !== 0;
    try {
      if ((h.flags & Flag.TYPE_MASK) !== MsgType.COMMAND) {
        throw new WireError(Errno.EINVAL, `message type ${h.flags & Flag.TYPE_MASK} from client (only commands are accepted)`);
      }
      if (h.flags & ~KNOWN_HEADER_FLAGS) throw new WireError(Errno.EINVAL, `unknown header flags 0x${h.flags.toString(16)}`);
      if (!this.negotiated && h.command !== Command.VERSION) {
        throw new WireError(Errno.EINVAL, `${commandName(h.command)} before VERSION`);
      }
      const pending = this.handle(h, buf, at + HEADER_SIZE, h.size - HEADER_SIZE, fds, noReply);
      if (pending) {
        const header = { ...h };
        return pending.catch((err: unknown) => this.fail(header, err, noReply));
      }
    } catch (err) {
      this.fail(h, err, noReply);
    }
  }

  /** A message the connection cannot take (too many fds): its error reply goes out before the close. */
  onBroken(h: Header, reason: string): void {
    this.fail(h, new WireError(Errno.EINVAL, reason), (h.flags & Flag.NO_REPLY) !== 0);
  }

  onClose(reason: string, error?: Error): void {
    for (const fd of this.regionFds.values()) native.closeFd(fd);
    this.regionFds.clear();
    this.device.releaseClient();
    this.onEnd(reason, error);
  }

  private handle(h: Header, buf: Buffer, at: number, len: number, fds: number[], noReply: boolean): void | Promise<void> {
    switch (h.command) {
      case Command.REGION_READ:
        return this.regionRead(h, buf, at, len, noReply);
      case Command.REGION_WRITE:
        return this.regionWrite(h, buf, at, len, noReply);
      case Command.REGION_WRITE_MULTI:
        return this.writeMulti(h, buf, at, len, noReply);
      case Command.VERSION:
        return this.version(h, buf, at, len, noReply);
      case Command.DMA_MAP:
        return this.dmaMap(h, buf, at, len, fds, noReply);
      case Command.DMA_UNMAP:
        return this.dmaUnmap(h, buf, at, len, noReply);
      case Command.DEVICE_GET_INFO:
        return this.deviceInfo(h, buf, at, len, noReply);
      case Command.DEVICE_GET_REGION_INFO:
        return this.regionInfo(h, buf, at, len, noReply);
      case Command.DEVICE_GET_REGION_IO_FDS:
        return this.regionIoFds(h, buf, at, len, noReply);
      case Command.DEVICE_GET_IRQ_INFO:
        return this.irqInfo(h, buf, at, len, noReply);
      case Command.DEVICE_SET_IRQS:
        return this.setIrqs(h, buf, at, len, fds, noReply);
      case Command.DEVICE_RESET:
        return this.reset(h, len, noReply);
      case Command.DEVICE_FEATURE:
      case Command.MIG_DATA_READ:
      case Command.MIG_DATA_WRITE:
      case Command.DIRTY_PAGES:
        throw new WireError(Errno.EOPNOTSUPP, `${commandName(h.command)} is not supported by this device`);
      case Command.DMA_READ:
      case Command.DMA_WRITE:
        throw new WireError(Errno.EINVAL, `${commandName(h.command)} is a server-to-client command`);
      default:
        throw new WireError(Errno.ENOSYS, `unknown command ${h.command}`);
    }
  }

  private reply(h: Header, msg: Buffer, noReply: boolean, fds: number[] | null = null): void {
    if (!noReply) this.channel.send(msg, msg.length, fds);
  }

  private fail(h: Header, err: unknown, noReply: boolean): void {
    // the edge where the device's refusals become wire error replies
    const refused = err instanceof WireError || err instanceof DeviceError;
    const errno = refused ? err.errno : errnoOf(err);
    this.counters.countError(errno);
    if (refused) {
      this.log.debug({ command: commandName(h.command), id: h.id, errno, reason: err.message }, 'request refused');
    } else {
      this.counters.internalErrors++;
      this.log.warn({ command: commandName(h.command), id: h.id, errno, err }, 'request failed');
    }
    if (noReply) return;
    const size = writeErrorReply(this.replyBuf, 0, h.id, h.command, errno);
    this.channel.send(this.replyBuf, size);
  }

  private version(h: Header, buf: Buffer, at: number, len: number, noReply: boolean): void {
    if (this.negotiated) throw new WireError(Errno.EINVAL, 'VERSION sent twice');
    const v = decodeVersion(buf, at, len);
    if (v.major !== 0) {
      const size = writeErrorReply(this.replyBuf, 0, h.id, h.command, Errno.ENOTSUP);
      this.channel.send(this.replyBuf, size);
      this.channel.close(`client protocol version ${v.major}.${v.minor} unsupported (server speaks 0.0)`);
      return;
    }
    const caps = v.capabilities;
    // DMA maps must be aligned to the host page. A client that can map at some page size
    // up to ours can align to ours (QEMU proposes 4096 on every host and aligns its maps
    // to the host page itself); one whose smallest size is larger cannot map our page.
    const page = this.device.dma.pageSize;
    if (caps?.pgsizes !== undefined && caps.pgsizes % (2 * page) === 0) {
      throw new WireError(Errno.EINVAL, `client page sizes 0x${caps.pgsizes.toString(16)} have none of ${page} bytes or less`);
    }
    this.clientCaps = caps;
    // Only capabilities the client proposed may be echoed; write_multiple is one of them.
    this.writeMultiple = caps?.writeMultiple === true;
    const ours: Capabilities = {
      names: [],
      maxMsgFds: Limits.MAX_MSG_FDS,
      maxDataXferSize: Limits.MAX_DATA_XFER_SIZE,
      pgsizes: page,
      maxDmaMaps: this.device.dma.maxMaps,
    };
    if (this.writeMultiple) ours.writeMultiple = true;
    this.negotiated = true;
    this.reply(h, encodeVersion(h.id, MsgType.REPLY, 0, 0, ours), noReply);
  }

  private dmaMap(h: Header, buf: Buffer, at: number, len: number, fds: number[], noReply: boolean): void {
    const m = decodeDmaMap(buf, at, len);
    checkDmaMap(m, fds.length);
    const fd = fds.length === 1 ? fds[0]! : null;
    this.device.dma.add(m.address, m.size, m.flags, fd, m.offset);
    fds.length = 0; // the table owns the fd now
    if (!noReply) this.channel.send(this.replyBuf, writeEmptyReply(this.replyBuf, h.id, h.command));
  }

  private dmaUnmap(h: Header, buf: Buffer, at: number, len: number, noReply: boolean): void {
    const u = decodeDmaUnmap(buf, at, len);
    checkDmaUnmap(u, len);
    if (u.flags & DmaUnmapFlag.ALL) this.device.dma.clear();
    else this.device.dma.remove(u.address, u.size);
    if (!noReply) this.channel.send(this.replyBuf, writeEchoReply(this.replyBuf, h.id, h.command, buf, at, Size.DMA_UNMAP));
  }

  private deviceInfo(h: Header, buf: Buffer, at: number, len: number, noReply: boolean): void {
    const q = decodeDeviceInfo(buf, at, len);
    const d = this.device;
    this.reply(h, encodeDeviceInfoReply(h.id, d.flags, d.numRegions, d.numIrqs), noReply);
  }

  private regionInfo(h: Header, buf: Buffer, at: number, len: number, noReply: boolean): void {
    const q = decodeIndexQuery(buf, at, len, Size.REGION_INFO, 'DEVICE_GET_REGION_INFO');
    if (q.index >= this.device.numRegions) throw new WireError(Errno.EINVAL, `no region ${q.index}`);
    const r = this.device.region(q.index);
    if (!r) {
      this.reply(h, encodeRegionInfoReply(h.id, q.argsz, { flags: 0, index: q.index, size: 0, offset: 0, sparseAreas: null }), noReply);
      return;
    }
    let flags = (r.readable ? RegionFlag.READ : 0) | (r.writable ? RegionFlag.WRITE : 0);
    const canSendFd = (this.clientCaps?.maxMsgFds ?? 1) >= 1;
    const mm = canSendFd ? r.mmap : null;
    if (!mm) {
      this.reply(h, encodeRegionInfoReply(h.id, q.argsz, { flags, index: q.index, size: r.size, offset: 0, sparseAreas: null }), noReply);
      return;
    }
    const whole = mm.areas.length === 1 && mm.areas[0]!.offset === 0 && mm.areas[0]!.size === r.size;
    const areas = whole ? null : mm.areas;
    if (q.argsz < regionInfoSize(areas)) {
      // Too small for the capabilities: state the size needed and the client asks
      // again. No fd and no MMAP/CAPS flags yet (QEMU rejects CAPS without an offset).
      this.reply(h, encodeRegionInfoReply(h.id, q.argsz, { flags, index: q.index, size: r.size, offset: mm.fdOffset, sparseAreas: areas }), noReply);
      return;
    }
    flags |= RegionFlag.MMAP | (areas ? RegionFlag.CAPS : 0);
    const msg = encodeRegionInfoReply(h.id, q.argsz, { flags, index: q.index, size: r.size, offset: mm.fdOffset, sparseAreas: areas });
    this.mayHaveWritten = true;
    let fd = this.regionFds.get(q.index);
    if (fd === undefined) {
      fd = this.device.reopenForClient(mm.fd) ?? mm.fd;
      if (fd !== mm.fd) this.regionFds.set(q.index, fd);
    }
    this.reply(h, msg, noReply, [fd]);
  }

  private regionIoFds(h: Header, buf: Buffer, at: number, len: number, noReply: boolean): void {
    const q = decodeIndexQuery(buf, at, len, Size.REGION_IO_FDS, 'DEVICE_GET_REGION_IO_FDS');
    if (q.index >= this.device.numRegions) throw new WireError(Errno.EINVAL, `no region ${q.index}`);
    // No ioeventfd sub-regions: every trapped access comes over the socket.
    const payload = Buffer.alloc(Size.REGION_IO_FDS);
    writeU32(payload, 0, Size.REGION_IO_FDS);
    writeU32(payload, 8, q.index);
    this.reply(h, encodeEchoReply(h.id, h.command, payload), noReply);
  }

  private irqInfo(h: Header, buf: Buffer, at: number, len: number, noReply: boolean): void {
    const q = decodeIndexQuery(buf, at, len, Size.IRQ_INFO, 'DEVICE_GET_IRQ_INFO');
    const k = this.device.interrupts.info(q.index);
    if (!k) throw new WireError(Errno.EINVAL, `no irq index ${q.index}`);
    this.reply(h, encodeIrqInfoReply(h.id, k.index, k.flags, k.count), noReply);
  }

  private setIrqs(h: Header, buf: Buffer, at: number, len: number, fds: number[], noReply: boolean): void {
    const s = decodeIrqSet(buf, at, len);
    checkIrqSet(s, fds.length);
    this.device.interrupts.set(s, fds);
    this.reply(h, encodeEmptyReply(h.id, h.command), noReply);
  }

  private reset(h: Header, len: number, noReply: boolean): void | Promise<void> {
    if (len !== 0) throw new WireError(Errno.EINVAL, 'DEVICE_RESET carries no payload');
    const { id, command } = h;
    const done = () => {
      this.log.info('device reset');
      this.reply(h, encodeEmptyReply(id, command), noReply);
    };
    const pending = this.device.reset();
    return pending ? pending.then(done) : done();
  }

  private regionRead(h: Header, buf: Buffer, at: number, len: number, noReply: boolean): void {
    const a = decodeRegionAccess(buf, at, len, false, this.access);
    checkTransferSize(a);
    const r = this.device.accessible(a.region, a.offset, a.count, false);
    this.counters.trappedReads[a.region]!++;
    if (this.traceAccess) this.log.trace({ region: a.region, offset: a.offset, count: a.count }, 'read');
    if (noReply) return; // a read nobody waits for has no effect on this device
    const size = writeRegionReadReply(this.replyBuf, h.id, a.offset, a.region, a.count);
    r.read(a.offset, this.replyBuf, HEADER_SIZE + Size.REGION_ACCESS, a.count);
    this.channel.send(this.replyBuf, size);
  }

  private regionWrite(h: Header, buf: Buffer, at: number, len: number, noReply: boolean): void {
    const a = decodeRegionAccess(buf, at, len, true, this.access);
    checkTransferSize(a);
    const r = this.device.accessible(a.region, a.offset, a.count, true);
    this.mayHaveWritten = true;
    this.counters.trappedWrites[a.region]!++;
    if (this.traceAccess) this.log.trace({ region: a.region, offset: a.offset, count: a.count }, 'write');
    r.write(a.offset, buf, a.dataOffset, a.count);
    if (noReply) return;
    const size = writeRegionWriteReply(this.replyBuf, h.id, a.offset, a.region, a.count);
    this.channel.send(this.replyBuf, size);
  }

  /**
   * A bad batch is dropped whole. QEMU posts every batch (NO_REPLY), so its
   * errors are only logged; a client that asks gets wr_cnt or the error.
   */
  private writeMulti(h: Header, buf: Buffer, at: number, len: number, noReply: boolean): void {
    if (!this.writeMultiple) throw new WireError(Errno.EINVAL, 'REGION_WRITE_MULTI without the write_multiple capability');
    const n = decodeWriteMultiCount(buf, at, len, Limits.MAX_WRITE_MULTI);
    const a = this.access;
    for (let i = 0; i < n; i++) {
      decodeWriteMultiEntry(buf, at, i, a);
      this.device.accessible(a.region, a.offset, a.count, true);
    }
    this.mayHaveWritten = true;
    for (let i = 0; i < n; i++) {
      decodeWriteMultiEntry(buf, at, i, a);
      this.counters.trappedWrites[a.region]!++;
      this.device.region(a.region)!.write(a.offset, buf, a.dataOffset, a.count);
    }
    if (!noReply) this.channel.send(this.replyBuf, writeWriteMultiReply(this.replyBuf, h.id, n));
  }
}

function errnoOf(err: unknown): number {
  const e = err as { errno?: unknown; code?: unknown };
  if (typeof e?.errno === 'number') return Math.abs(e.errno);
  return Errno.EIO;
}
