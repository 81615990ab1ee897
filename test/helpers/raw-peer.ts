// A vfio-user peer that sends raw bytes (and fds) exactly as given, so tests can
// send what no well-behaved client would, and collects whatever comes back.
import { native } from '../../src/native/native.js';
import { Connection } from '../../src/transport/connection.js';
import { Command, Flag, HEADER_SIZE, MsgType } from '../../src/wire/constants.js';
import type { Header } from '../../src/wire/messages.js';
import { encodeVersion, writeHeader } from '../../src/wire/serializer.js';
import { QEMU_LIKE_CAPS } from '../../src/client/client.js';
import { HANG_GUARD_MS } from './patience.js';

export interface RawReply {
  header: Header;
  payload: Buffer;
  fds: number[];
}

export class RawPeer {
  private readonly conn: Connection;
  private readonly inbox: RawReply[] = [];
  private wake: (() => void) | null = null;
  closedReason: string | null = null;

  private constructor(readonly fd: number) {
    this.conn = new Connection(fd, null, {
      onMessage: (header, buf, at, fds) => {
        this.inbox.push({ header: { ...header }, payload: Buffer.from(buf.subarray(at + HEADER_SIZE, at + header.size)), fds: fds.splice(0) });
        this.wake?.();
      },
      onClose: (reason) => {
        this.closedReason = reason;
        this.wake?.();
      },
    });
    this.conn.start();
  }

  static connect(path: string): RawPeer {
    return new RawPeer(native.connectUnix(path));
  }

  /** Writes all of `bytes` (fds with the first byte), waiting while the socket is full. */
  async send(bytes: Uint8Array, fds: number[] | null = null, timeoutMs = HANG_GUARD_MS): Promise<void> {
    let off = 0;
    let pendingFds = fds;
    const end = Date.now() + timeoutMs;
    while (off < bytes.length) {
      // our end is closed (and its number maybe reused) once the connection has closed
      if (this.closedReason !== null) throw new Error(`connection closed: ${this.closedReason}`);
      const n = native.sendMsg(this.fd, bytes, off, bytes.length - off, pendingFds);
      if (n > 0) {
        off += n;
        pendingFds = null;
        continue;
      }
      if (Date.now() > end) throw new Error(`send stalled after ${off} of ${bytes.length} bytes`);
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  /** Tries one non-blocking send; returns bytes taken (0 when the socket is full). */
  trySend(bytes: Uint8Array, fds: number[] | null = null): number {
    if (this.closedReason !== null) throw new Error(`connection closed: ${this.closedReason}`);
    return Math.max(0, native.sendMsg(this.fd, bytes, 0, bytes.length, fds));
  }

  /** The next message from the daemon; rejects when the connection closes first. */
  async next(timeoutMs = HANG_GUARD_MS): Promise<RawReply> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const r = this.inbox.shift();
      if (r) return r;
      if (this.closedReason !== null) throw new Error(`closed: ${this.closedReason}`);
      if (Date.now() > end) throw new Error('no reply');
      await this.wait(end - Date.now());
    }
  }

  /** Resolves with the reason once the daemon has closed the connection. */
  async closed(timeoutMs = HANG_GUARD_MS): Promise<string> {
    const end = Date.now() + timeoutMs;
    while (this.closedReason === null) {
      // replies that arrive before the close are dropped (and their fds closed)
      for (const r of this.inbox.splice(0)) r.fds.forEach((fd) => native.closeFd(fd));
      if (Date.now() > end) throw new Error('connection still open');
      await this.wait(end - Date.now());
    }
    return this.closedReason;
  }

  async request(bytes: Uint8Array, fds: number[] | null = null): Promise<RawReply> {
    await this.send(bytes, fds);
    return this.next();
  }

  /** VERSION as QEMU sends it; throws unless the reply is a success. */
  async negotiate(): Promise<void> {
    const r = await this.request(encodeVersion(1, MsgType.COMMAND, 0, 0, QEMU_LIKE_CAPS));
    if (r.header.flags & Flag.ERROR) throw new Error(`VERSION refused: errno ${r.header.error}`);
  }

  /** Drops whatever arrived so far, closing the fds that came with it. */
  drain(): void {
    for (const r of this.inbox.splice(0)) r.fds.forEach((fd) => native.closeFd(fd));
  }

  get pending(): number {
    return this.inbox.length;
  }

  close(): void {
    for (const r of this.inbox.splice(0)) r.fds.forEach((fd) => native.closeFd(fd));
    this.conn.close('test closed');
  }

  private wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, Math.max(1, ms));
      function done(): void {
        clearTimeout(t);
        resolve();
      }
      this.wake = () => {
        this.wake = null;
        done();
      };
    });
  }
}

/** A message with the given header fields and payload; `size` defaults to the true size. */
export function rawMessage(command: number, payload: Uint8Array = new Uint8Array(), opts: { id?: number; flags?: number; size?: number; error?: number } = {}): Buffer {
  const buf = Buffer.alloc(HEADER_SIZE + payload.length);
  writeHeader(buf, 0, opts.id ?? 7, command, opts.size ?? buf.length, opts.flags ?? MsgType.COMMAND, opts.error ?? 0);
  buf.set(payload, HEADER_SIZE);
  return buf;
}

/** The errno of an error reply, or 0 for a success reply. */
export function errnoOf(r: RawReply): number {
  if ((r.header.flags & Flag.TYPE_MASK) !== MsgType.REPLY) throw new Error(`not a reply: flags 0x${r.header.flags.toString(16)}`);
  return r.header.flags & Flag.ERROR ? r.header.error : 0;
}

export { Command };
