import { native, type Poller } from '../native/native.js';
import { HEADER_SIZE } from '../wire/constants.js';
import { decodeHeader } from '../wire/parser.js';
import type { Header } from '../wire/messages.js';

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/** Receives whole messages; `buf` and `header` are only valid during the call. */
export interface MessageSink {
  /**
   * `fds` came with the message and belong to the sink: it keeps what it uses
   * and the connection closes whatever is left in the array afterwards. A
   * returned promise pauses reading until it settles (commands run in order).
   */
  onMessage(header: Header, buf: Buffer, fds: number[]): void | Promise<void>;
  onClose(reason: string, error?: Error): void;
}

export interface ConnectionLimits {
  /** Largest message accepted, header included; a larger header ends the connection. */
  maxMessageSize: number;
  /** Replies buffered for a client that does not read them, before reading stops. */
  highWaterBytes: number;
  /**
   * How long a half-received message or an unread reply backlog may go without
   * any byte moving before the client is dropped (it is dropped between one and
   * two of these after the last byte moved).
   */
  stallTimeoutMs: number;
  /** Messages handled per wake-up before yielding to the event loop. */
  batch: number;
}

export const DEFAULT_LIMITS: ConnectionLimits = {
  maxMessageSize: 2 * 1024 * 1024,
  highWaterBytes: 4 * 1024 * 1024,
  stallTimeoutMs: 10_000,
  batch: 64,
};

/** Replies waiting for the socket; small ones share a chunk (no object per reply). */
interface Pending {
  data: Buffer;
  start: number;
  end: number;
  /** Sent with the first byte of this entry; never appended to. */
  fds: number[] | null;
}

const CHUNK = 64 * 1024;

const MAX_FDS = 16;

/**
 * One vfio-user stream over a connected UNIX socket: frames messages (header,
 * then body, fds taken with the header), sends replies in one sendmsg each,
 * and applies back-pressure and stall timeouts. It knows nothing of commands.
 */
export class Connection {
  private readonly poller: Poller;
  private recvBuf = Buffer.allocUnsafe(64 * 1024);
  private readonly fdScratch = new Int32Array(MAX_FDS + 1);
  private readonly header: Header = { id: 0, command: 0, size: 0, flags: 0, error: 0 };
  private received = 0;
  private need = HEADER_SIZE;
  private fds: number[] = [];
  private readonly outQueue: Pending[] = [];
  private queuedBytes = 0;
  private busy = false;
  private closed = false;
  private stallTimer: NodeJS.Timeout | null = null;
  /** Bytes moved either way; a stall timer that finds it changed starts over. */
  private moved = 0;
  private movedAtArm = 0;
  private events = 0;

  constructor(
    readonly fd: number,
    readonly peer: PeerCredentials | null,
    private readonly sink: MessageSink,
    private readonly limits: ConnectionLimits = DEFAULT_LIMITS,
  ) {
    this.poller = native.createPoller(fd, (status, events) => this.onEvents(status, events));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  get backlogBytes(): number {
    return this.queuedBytes;
  }

  start(): void {
    this.updatePolling();
  }

  /**
   * Sends `length` bytes of `buf` (with fds) as one message. The bytes are
   * copied only when the socket cannot take them at once, so callers may reuse `buf`.
   */
  send(buf: Uint8Array, length: number, fds: number[] | null = null): void {
    if (this.closed) return;
    if (this.outQueue.length === 0) {
      const n = this.trySend(buf, 0, length, fds);
      if (n === length) {
        this.moved += n;
        return;
      }
      const sent = Math.max(n, 0);
      this.moved += sent;
      this.enqueue(buf.subarray(sent, length), sent > 0 ? null : fds);
    } else {
      this.enqueue(buf.subarray(0, length), fds);
    }
  }

  close(reason: string, error?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.clearStall();
    this.poller.close();
    this.closeFds(this.fds);
    this.fds = [];
    // Queued fds are the daemon's own (region fds), not the client's: they stay open.
    this.outQueue.length = 0;
    this.queuedBytes = 0;
    try {
      native.closeFd(this.fd);
    } catch {
      // already gone; nothing else holds it
    }
    this.sink.onClose(reason, error);
  }

  /** Copies `bytes` into the queue: appended to the last chunk when it has room and no fds come along. */
  private enqueue(bytes: Uint8Array, fds: number[] | null): void {
    const tail = this.outQueue[this.outQueue.length - 1];
    if (fds === null && tail && tail.data.length - tail.end >= bytes.length) {
      tail.data.set(bytes, tail.end);
      tail.end += bytes.length;
    } else {
      const data = Buffer.allocUnsafe(Math.max(CHUNK, bytes.length));
      data.set(bytes, 0);
      this.outQueue.push({ data, start: 0, end: bytes.length, fds });
    }
    this.queuedBytes += bytes.length;
    this.updatePolling();
    this.armStall();
  }

  private trySend(buf: Uint8Array, offset: number, length: number, fds: number[] | null): number {
    try {
      return native.sendMsg(this.fd, buf, offset, length, fds);
    } catch (err) {
      this.close(`send failed: ${(err as Error).message}`, err as Error);
      return length;
    }
  }

  private flush(): void {
    while (this.outQueue.length > 0 && !this.closed) {
      const head = this.outQueue[0]!;
      const n = this.trySend(head.data, head.start, head.end - head.start, head.fds);
      if (this.closed) return;
      if (n < 0) break;
      head.fds = null;
      this.queuedBytes -= n;
      this.moved += n;
      head.start += n;
      if (head.start < head.end) break;
      this.outQueue.shift();
    }
    if (this.outQueue.length === 0 && this.received === 0) this.clearStall();
    this.updatePolling();
  }

  private onEvents(status: number, events: number): void {
    if (this.closed) return;
    if (status < 0) {
      // libuv reports EPOLLERR as EBADF: on a UNIX stream that is the peer resetting the connection
      this.close(status === -9 ? 'connection reset by peer' : `socket error ${status}`);
      return;
    }
    if (events & native.WRITABLE) this.flush();
    if (!this.closed && events & (native.READABLE | native.DISCONNECT)) this.readMessages();
  }

  private readMessages(): void {
    for (let handled = 0; handled < this.limits.batch && !this.closed && !this.busy; ) {
      if (this.queuedBytes > this.limits.highWaterBytes) break;
      const n = this.receive();
      if (n < 0) break; // EAGAIN
      if (n === 0) {
        this.close(this.received > 0 ? 'peer closed mid-message' : 'peer closed');
        return;
      }
      if (this.received < this.need) continue;
      if (this.need === HEADER_SIZE) {
        decodeHeader(this.recvBuf, 0, this.header);
        const size = this.header.size;
        if (size < HEADER_SIZE || size > this.limits.maxMessageSize) {
          this.close(`message size ${size} outside ${HEADER_SIZE}..${this.limits.maxMessageSize}: stream cannot be framed`);
          return;
        }
        if (size > this.recvBuf.length) this.recvBuf = Buffer.allocUnsafe(size);
        this.need = size;
        if (this.received < size) continue;
      }
      handled++;
      this.dispatch();
    }
    if (!this.closed) {
      if (this.received > 0) this.armStall();
      else if (this.outQueue.length === 0) this.clearStall();
      this.updatePolling();
    }
  }

  /** One recvmsg for the rest of the current header or body; -1 on EAGAIN. */
  private receive(): number {
    let n: number;
    try {
      n = native.recvMsg(this.fd, this.recvBuf, this.received, this.need - this.received, this.fdScratch);
    } catch (err) {
      this.close(`receive failed: ${(err as Error).message}`, err as Error);
      return 0;
    }
    const nfds = this.fdScratch[0]!;
    if (nfds < 0) {
      // More fds than any message may carry: the kernel truncated them (and we closed what came).
      this.close('too many file descriptors in one message');
      return -1;
    }
    for (let i = 1; i <= nfds; i++) this.fds.push(this.fdScratch[i]!);
    this.fdScratch[0] = 0;
    if (this.fds.length > MAX_FDS) {
      this.close('too many file descriptors for one message');
      return -1;
    }
    if (n > 0) {
      this.received += n;
      this.moved += n;
    }
    return n;
  }

  private dispatch(): void {
    const fds = this.fds;
    this.fds = fds.length === 0 ? fds : [];
    this.received = 0;
    this.need = HEADER_SIZE;
    let result: void | Promise<void>;
    try {
      result = this.sink.onMessage(this.header, this.recvBuf, fds);
    } catch (err) {
      this.closeFds(fds);
      this.close(`handler failed: ${(err as Error).message}`, err as Error);
      return;
    }
    if (result instanceof Promise) {
      this.busy = true;
      this.updatePolling();
      result.then(
        () => {
          this.closeFds(fds);
          this.busy = false;
          if (!this.closed) this.readMessages();
        },
        (err: Error) => {
          this.closeFds(fds);
          this.busy = false;
          this.close(`handler failed: ${err.message}`, err);
        },
      );
      return;
    }
    if (fds.length > 0) this.closeFds(fds);
  }

  private closeFds(fds: number[]): void {
    for (const fd of fds.splice(0, fds.length)) {
      try {
        native.closeFd(fd);
      } catch {
        // the sink may have closed it already
      }
    }
  }

  private updatePolling(): void {
    if (this.closed) return;
    let want = 0;
    if (!this.busy && this.queuedBytes <= this.limits.highWaterBytes) want |= native.READABLE;
    if (this.outQueue.length > 0) want |= native.WRITABLE;
    if (want === this.events) return;
    this.events = want;
    if (want === 0) this.poller.stop();
    else this.poller.start(want);
  }

  /** One timer per stall period, not per message: progress is checked when it fires. */
  private armStall(): void {
    if (this.stallTimer) return;
    this.movedAtArm = this.moved;
    this.stallTimer = setTimeout(() => {
      this.stallTimer = null;
      if (this.closed || (this.received === 0 && this.outQueue.length === 0)) return;
      if (this.moved !== this.movedAtArm) {
        this.armStall(); // bytes moved meanwhile: not stalled
        return;
      }
      if (this.received > 0) this.close(`client stalled mid-message for ${this.limits.stallTimeoutMs} ms`);
      else this.close(`client left ${this.queuedBytes} reply bytes unread for ${this.limits.stallTimeoutMs} ms`);
    }, this.limits.stallTimeoutMs);
    this.stallTimer.unref();
  }

  private clearStall(): void {
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.stallTimer = null;
  }
}
