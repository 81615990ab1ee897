import { native, type Poller } from '../native/native.js';
import { sizeClass, type BufferPool } from './buffer-pool.js';
import { HEADER_SIZE, Limits } from '../wire/constants.js';
import { decodeHeader, readU32 } from '../wire/parser.js';
import type { Header } from '../wire/messages.js';

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/** Receives whole messages; `buf` and `header` are only valid during the call. */
export interface MessageSink {
  /**
   * The message is `header.size` bytes of `buf` from `at` (the header included).
   * `fds` came with the message and belong to the sink: it keeps what it uses
   * and the connection closes whatever is left in the array afterwards. A
   * returned promise pauses reading until it settles (commands run in order).
   */
  onMessage(header: Header, buf: Buffer, at: number, fds: number[]): void | Promise<void>;
  onClose(reason: string, error?: Error): void;
  /**
   * The message with this header broke a framing rule (more fds than one
   * message may carry) and the connection closes right after: a chance to
   * answer it with an error first. Only called when its header has arrived.
   */
  onBroken?(header: Header, reason: string): void;
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
  // room above the largest transfer: a transfer too large gets an error reply, not a closed stream
  maxMessageSize: 2 * Limits.MAX_DATA_XFER_SIZE,
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

/** fds that arrived with the message starting at stream position `at`. */
interface FdBatch {
  at: number;
  fds: number[];
}

const EMPTY = Buffer.alloc(0);
/** Receive buffer to start with; grown for larger messages. */
const INITIAL_BUFFER = 64 * 1024;
/** Below this much free space at the end, buffered bytes move to the front before a read. */
const MIN_READ_SPACE = 4096;

/**
 * One vfio-user stream over a connected UNIX socket: frames messages, sends
 * replies in one sendmsg each, and applies back-pressure and stall timeouts.
 * It knows nothing of commands.
 *
 * Framing reads as many bytes as the socket holds with one recvmsg and hands
 * out whole messages in place from the receive buffer, so a message costs a
 * single recvmsg. After the replies are sent it reads again until EAGAIN: a
 * client waiting for a reply usually runs on the same CPU, preempts the daemon
 * as soon as the reply is sent and has its next request queued by the time the
 * daemon resumes, which that read then takes without a trip through the event
 * loop (bench/NOTES.md has the numbers).
 *
 * fds: the kernel ends a recvmsg with the segment that carried them, and a
 * sender attaches them to the sendmsg that starts its message, so they belong
 * to the last message that starts in the bytes just read (or, if none starts
 * there, to the message those bytes continue).
 */
export class Connection {
  private readonly poller: Poller;
  private recvBuf: Buffer;
  private readonly fdScratch = new Int32Array(Limits.MAX_MSG_FDS + 1);
  private readonly header: Header = { id: 0, command: 0, size: 0, flags: 0, error: 0 };
  /** Buffer index of the next message to hand out, and of the end of received bytes. */
  private head = 0;
  private end = 0;
  /** Stream position of recvBuf[0]: bytes dropped from the front so far. */
  private base = 0;
  private readonly fdBatches: FdBatch[] = [];
  /** Handed to the sink for the (usual) message without fds. */
  private readonly noFds: number[] = [];
  private readonly outQueue: Pending[] = [];
  private queuedBytes = 0;
  private busy = false;
  private closed = false;
  private resumeScheduled = false;
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
    /** Where the receive buffer and queued reply chunks come from and go back to (the daemon's, shared by its clients). */
    private readonly pool: BufferPool | null = null,
  ) {
    this.recvBuf = this.alloc(INITIAL_BUFFER);
    this.poller = native.createPoller(fd, (status, events) => this.onEvents(status, events));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** The peer has closed (or stopped writing to) the connection, which ends once its last bytes are read. */
  peerHungUp(): boolean {
    if (this.closed) return true;
    try {
      return native.peerHungUp(this.fd);
    } catch {
      return true;
    }
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
    for (const b of this.fdBatches.splice(0)) this.closeFds(b.fds);
    // Queued fds are the daemon's own (region fds), not the client's: they stay open.
    for (const p of this.outQueue.splice(0)) this.pool?.give(p.data);
    this.queuedBytes = 0;
    this.pool?.give(this.recvBuf);
    this.recvBuf = EMPTY;
    this.head = this.end = 0;
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
      const data = this.alloc(Math.max(CHUNK, bytes.length));
      data.set(bytes, 0);
      this.outQueue.push({ data, start: 0, end: bytes.length, fds });
    }
    this.queuedBytes += bytes.length;
    this.updatePolling();
    this.armStall();
  }

  private alloc(size: number): Buffer {
    return this.pool ? this.pool.take(size) : Buffer.allocUnsafe(sizeClass(size));
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
      this.pool?.give(head.data);
    }
    if (this.outQueue.length === 0 && !this.midMessage()) this.clearStall();
    this.updatePolling();
    // Messages left buffered while replies were backed up can go on now.
    if (this.queuedBytes <= this.limits.highWaterBytes && this.hasWholeMessage()) this.readMessages();
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

  /** Hands out buffered whole messages, reading more until the socket is empty. */
  private readMessages(): void {
    let handled = 0;
    while (!this.closed && !this.busy && this.queuedBytes <= this.limits.highWaterBytes) {
      const size = this.wholeMessageSize();
      if (size < 0) return; // framing error: closed
      if (size > 0) {
        if (handled === this.limits.batch) {
          this.resumeSoon();
          break;
        }
        handled++;
        this.dispatch(size);
        continue;
      }
      const n = this.receive();
      if (n < 0) break; // EAGAIN, or closed for too many fds
      if (n === 0) {
        this.close(this.end > this.head ? 'peer closed mid-message' : 'peer closed');
        return;
      }
    }
    if (!this.closed) {
      if (this.midMessage()) this.armStall();
      else if (this.outQueue.length === 0) this.clearStall();
      this.updatePolling();
    }
  }

  /**
   * Size of the whole message at `head`, 0 if it is not all here yet, -1 after
   * closing for a size that cannot be framed. Makes room for a large message.
   */
  private wholeMessageSize(): number {
    const avail = this.end - this.head;
    if (avail < HEADER_SIZE) return 0;
    const size = readU32(this.recvBuf, this.head + 4);
    if (size < HEADER_SIZE || size > this.limits.maxMessageSize) {
      this.close(`message size ${size} outside ${HEADER_SIZE}..${this.limits.maxMessageSize}: stream cannot be framed`);
      return -1;
    }
    if (avail >= size) return size;
    if (this.head + size > this.recvBuf.length) this.makeRoom(size);
    return 0;
  }

  private hasWholeMessage(): boolean {
    const avail = this.end - this.head;
    return avail >= HEADER_SIZE && avail >= readU32(this.recvBuf, this.head + 4);
  }

  /** Part of a message has come and the rest has not. */
  private midMessage(): boolean {
    return this.end > this.head && !this.hasWholeMessage();
  }

  /** Moves the buffered bytes to the front, into a bigger buffer if `need` does not fit. */
  private makeRoom(need: number): void {
    const pending = this.end - this.head;
    if (need > this.recvBuf.length) {
      const bigger = this.alloc(need);
      this.recvBuf.copy(bigger, 0, this.head, this.end);
      this.pool?.give(this.recvBuf);
      this.recvBuf = bigger;
    } else {
      this.recvBuf.copyWithin(0, this.head, this.end);
    }
    this.base += this.head;
    this.head = 0;
    this.end = pending;
  }

  /** One recvmsg into the free end of the buffer; -1 on EAGAIN or after closing. */
  private receive(): number {
    if (this.head === this.end) {
      this.base += this.head;
      this.head = this.end = 0;
    } else if (this.recvBuf.length - this.end < MIN_READ_SPACE && this.head > 0) {
      this.makeRoom(0);
    }
    const at = this.end;
    const want = this.recvBuf.length - at;
    let n: number;
    try {
      n = native.recvMsg(this.fd, this.recvBuf, at, want, this.fdScratch);
    } catch (err) {
      this.close(`receive failed: ${(err as Error).message}`, err as Error);
      return -1;
    }
    const nfds = this.fdScratch[0]!;
    if (n > 0) {
      this.end += n;
      this.moved += n;
    }
    if (nfds < 0) {
      // More fds than any message may carry: the kernel truncated them (and we closed what came).
      this.tooManyFds(this.messageAt(n > 0 ? this.end : at + 1));
      return -1;
    }
    if (nfds > 0) {
      const fds: number[] = [];
      for (let i = 1; i <= nfds; i++) fds.push(this.fdScratch[i]!);
      this.fdScratch[0] = 0;
      this.keepFds(fds, n > 0 ? this.end : at + 1);
      if (this.closed) return -1;
    }
    return n;
  }

  /**
   * Files fds that came with the bytes just read, up to `to`, under their
   * message: the last one starting before `to` (one starting in those bytes,
   * or else the one they continue).
   */
  private keepFds(fds: number[], to: number): void {
    const owner = this.messageAt(to);
    const at = this.base + owner;
    const last = this.fdBatches[this.fdBatches.length - 1];
    let count = fds.length;
    if (last && last.at === at) {
      for (const fd of fds) last.fds.push(fd);
      count = last.fds.length;
    } else {
      this.fdBatches.push({ at, fds });
    }
    if (count > Limits.MAX_MSG_FDS) this.tooManyFds(owner);
  }

  /** Buffer index of the last message starting before `to` (or of the one the bytes up to `to` continue). */
  private messageAt(to: number): number {
    let owner = this.head;
    for (let pos = this.head; pos < to; ) {
      owner = pos;
      if (pos + HEADER_SIZE > this.end) break;
      const size = readU32(this.recvBuf, pos + 4);
      if (size < HEADER_SIZE) break; // framing fails when this message comes up
      pos += size;
    }
    return owner;
  }

  /** Closes the connection, answering the message at buffer index `at` first when its header is here. */
  private tooManyFds(at: number): void {
    const reason = `more than ${Limits.MAX_MSG_FDS} file descriptors in one message`;
    if (this.sink.onBroken && at + HEADER_SIZE <= this.end) {
      decodeHeader(this.recvBuf, at, this.header);
      try {
        this.sink.onBroken(this.header, reason);
      } catch {
        // closing anyway
      }
    }
    this.close(reason);
  }

  private dispatch(size: number): void {
    const at = this.head;
    this.head += size;
    decodeHeader(this.recvBuf, at, this.header);
    const fds = this.takeFds(this.base + at);
    let result: void | Promise<void>;
    try {
      result = this.sink.onMessage(this.header, this.recvBuf, at, fds);
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

  /** The fds of the message at stream position `at`; the sink may take them out of the array. */
  private takeFds(at: number): number[] {
    // Emptied only when a sink left something in it: setting length goes through the runtime.
    if (this.noFds.length !== 0) this.noFds.length = 0;
    if (this.fdBatches.length === 0) return this.noFds;
    let fds = this.noFds;
    while (this.fdBatches.length > 0 && this.fdBatches[0]!.at <= at) {
      const b = this.fdBatches.shift()!;
      if (b.at === at) fds = b.fds;
      else this.closeFds(b.fds); // not expected: every batch is filed under a message start
    }
    return fds;
  }

  /** Goes on with buffered messages after the event loop has had its turn. */
  private resumeSoon(): void {
    if (this.resumeScheduled) return;
    this.resumeScheduled = true;
    setImmediate(() => {
      this.resumeScheduled = false;
      if (!this.closed) this.readMessages();
    });
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
      if (this.closed || (!this.midMessage() && this.outQueue.length === 0)) return;
      if (this.moved !== this.movedAtArm) {
        this.armStall(); // bytes moved meanwhile: not stalled
        return;
      }
      if (this.midMessage()) this.close(`client stalled mid-message for ${this.limits.stallTimeoutMs} ms`);
      else this.close(`client left ${this.queuedBytes} reply bytes unread for ${this.limits.stallTimeoutMs} ms`);
    }, this.limits.stallTimeoutMs);
    this.stallTimer.unref();
  }

  private clearStall(): void {
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.stallTimer = null;
  }
}
