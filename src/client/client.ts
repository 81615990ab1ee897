import { native } from '../native/native.js';
import { Connection } from '../transport/connection.js';
import { Command, Errno, Flag, HEADER_SIZE, MsgType, Size } from '../wire/constants.js';
import type { Capabilities, DeviceInfo, Header, IrqInfo, RegionInfo, Version } from '../wire/messages.js';
import { decodeDeviceInfo, decodeIrqInfo, decodeRegionInfo, decodeVersion } from '../wire/parser.js';
import {
  encodeDeviceGetInfo,
  encodeDeviceReset,
  encodeDmaMap,
  encodeDmaUnmap,
  encodeIndexQuery,
  encodeRegionRead,
  encodeRegionWrite,
  encodeSetIrqs,
  encodeVersion,
  encodeWriteMulti,
  type MultiWrite,
} from '../wire/serializer.js';

export interface Reply {
  header: Header;
  payload: Buffer;
  fds: number[];
}

/** An error reply from the server. */
export class RequestError extends Error {
  constructor(
    readonly command: number,
    readonly errno: number,
  ) {
    super(`command ${command} failed with errno ${errno}`);
    this.name = 'RequestError';
  }
}

interface Waiter {
  resolve(r: Reply): void;
  reject(e: Error): void;
}

/** What QEMU 10.1+ proposes; our client does the same by default. */
export const QEMU_LIKE_CAPS: Capabilities = {
  names: [],
  maxMsgFds: 16,
  maxDataXferSize: 1024 * 1024,
  pgsizes: 4096,
  maxDmaMaps: 65535,
  writeMultiple: true,
};

/**
 * A vfio-user client: used by `inspect`, the tests and the benchmarks. Replies
 * arrive in request order (the server processes strictly in order).
 */
export class VfioUserClient {
  private readonly waiters: Waiter[] = [];
  private nextId = 1;
  private closedReason: string | null = null;
  private readonly conn: Connection;
  serverVersion: Version | null = null;

  private constructor(fd: number) {
    this.conn = new Connection(fd, null, {
      onMessage: (header, buf, at, fds) => this.onReply(header, buf, at, fds),
      onClose: (reason) => {
        this.closedReason = reason;
        for (const w of this.waiters.splice(0)) w.reject(new Error(`connection closed: ${reason}`));
      },
    });
    this.conn.start();
  }

  static connect(path: string): VfioUserClient {
    return new VfioUserClient(native.connectUnix(path));
  }

  get closed(): string | null {
    return this.closedReason;
  }

  id(): number {
    const id = this.nextId;
    this.nextId = (this.nextId + 1) & 0xffff;
    return id;
  }

  /** Sends a message that wants a reply and waits for it; error replies reject. */
  request(msg: Buffer, fds: number[] | null = null): Promise<Reply> {
    if (this.closedReason) return Promise.reject(new Error(`connection closed: ${this.closedReason}`));
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.conn.send(msg, msg.length, fds);
    });
  }

  /** Sends a message without waiting (NO_REPLY messages). */
  post(msg: Buffer, fds: number[] | null = null): void {
    this.conn.send(msg, msg.length, fds);
  }

  close(): void {
    this.conn.close('client closed');
  }

  async negotiate(caps: Capabilities | null = QEMU_LIKE_CAPS): Promise<Version> {
    const r = await this.request(encodeVersion(this.id(), MsgType.COMMAND, 0, 0, caps));
    this.serverVersion = decodeVersion(r.payload, 0, r.payload.length);
    return this.serverVersion;
  }

  async deviceInfo(): Promise<DeviceInfo> {
    const r = await this.request(encodeDeviceGetInfo(this.id()));
    return decodeDeviceInfo(r.payload, 0, r.payload.length);
  }

  /** Region info as QEMU asks for it: 32 bytes first, again with the size the server states. */
  async regionInfo(index: number): Promise<{ info: RegionInfo; fd: number | null }> {
    let argsz: number = Size.REGION_INFO;
    for (let attempt = 0; attempt < 3; attempt++) {
      const r = await this.request(encodeIndexQuery(this.id(), Command.DEVICE_GET_REGION_INFO, argsz, index, Size.REGION_INFO));
      const info = decodeRegionInfo(r.payload, 0, r.payload.length);
      if (info.argsz > argsz) {
        for (const fd of r.fds) native.closeFd(fd);
        argsz = info.argsz;
        continue;
      }
      if (r.fds.length > 1) for (const fd of r.fds.slice(1)) native.closeFd(fd);
      return { info, fd: r.fds[0] ?? null };
    }
    throw new Error(`region ${index}: server keeps growing argsz`);
  }

  async irqInfo(index: number): Promise<IrqInfo> {
    const r = await this.request(encodeIndexQuery(this.id(), Command.DEVICE_GET_IRQ_INFO, Size.IRQ_INFO, index, Size.IRQ_INFO));
    return decodeIrqInfo(r.payload, 0, r.payload.length);
  }

  async regionRead(region: number, offset: number, count: number): Promise<Buffer> {
    const r = await this.request(encodeRegionRead(this.id(), region, offset, count));
    return r.payload.subarray(Size.REGION_ACCESS);
  }

  async regionWrite(region: number, offset: number, data: Uint8Array): Promise<void> {
    await this.request(encodeRegionWrite(this.id(), region, offset, data));
  }

  postRegionWrite(region: number, offset: number, data: Uint8Array): void {
    this.post(encodeRegionWrite(this.id(), region, offset, data, true));
  }

  postWriteMulti(writes: readonly MultiWrite[]): void {
    this.post(encodeWriteMulti(this.id(), writes));
  }

  async dmaMap(address: number, size: number, flags: number, fd: number | null = null, offset = 0): Promise<void> {
    await this.request(encodeDmaMap(this.id(), flags, offset, address, size), fd === null ? null : [fd]);
  }

  async dmaUnmap(address: number, size: number, flags = 0): Promise<void> {
    await this.request(encodeDmaUnmap(this.id(), flags, address, size));
  }

  async setIrqs(flags: number, index: number, start: number, count: number, fds: number[] | null = null, bools: Uint8Array | null = null): Promise<void> {
    await this.request(encodeSetIrqs(this.id(), flags, index, start, count, bools), fds);
  }

  async reset(): Promise<void> {
    await this.request(encodeDeviceReset(this.id()));
  }

  private onReply(header: Header, buf: Buffer, at: number, fds: number[]): void {
    const w = this.waiters.shift();
    const taken = fds.splice(0, fds.length);
    if (!w) {
      for (const fd of taken) native.closeFd(fd);
      return;
    }
    if ((header.flags & Flag.TYPE_MASK) !== MsgType.REPLY) {
      for (const fd of taken) native.closeFd(fd);
      w.reject(new Error(`expected a reply, got type ${header.flags & Flag.TYPE_MASK}`));
      return;
    }
    if (header.flags & Flag.ERROR) {
      for (const fd of taken) native.closeFd(fd);
      w.reject(new RequestError(header.command, header.error || Errno.EIO));
      return;
    }
    w.resolve({
      header: { ...header },
      payload: Buffer.from(buf.subarray(at + HEADER_SIZE, at + header.size)),
      fds: taken,
    });
  }
}
