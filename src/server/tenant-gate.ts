import type { Logger } from 'pino';
import type { GpuDevice } from '../device/gpu-device.js';
import { native } from '../native/native.js';
import { BufferPool } from '../transport/buffer-pool.js';
import { Connection, DEFAULT_LIMITS, type ConnectionLimits, type PeerCredentials } from '../transport/connection.js';
import type { Counters } from './counters.js';
import type { ProcessWatch } from './process-watch.js';
import type { ScrubScheduler } from './scrub-scheduler.js';
import { newReplyBuffer, Session } from './session.js';
import type { TenantProcesses } from './tenant-processes.js';

export interface ActiveClient {
  connection: Connection;
  session: Session;
  peer: PeerCredentials | null;
  since: number;
}

export interface TenantGateOptions {
  /** Peer uids allowed to attach; empty means anyone who can open the socket. */
  allowUids?: readonly number[] | undefined;
  limits?: ConnectionLimits | undefined;
  /**
   * A client that has not finished VERSION this long after it was admitted is
   * dropped (it would hold the device for nothing); 0 or absent: never. Once
   * negotiated, a client may stay idle for good.
   */
  negotiateTimeoutMs?: number | undefined;
  /** Called when a client has gone and its maps and eventfds are released (checks on the backing). */
  onClientGone?: (() => void) | undefined;
  /** What the daemon is doing, in words. */
  status(text: string): void;
}

/**
 * Decides who gets the device, one tenant at a time: refuses a second client
 * and peers whose uid is not allowed, holds a client back while the previous
 * client is being torn down or its process lives on (and its scrub runs),
 * and runs the admitted client's session until it leaves.
 */
export class TenantGate {
  private active: ActiveClient | null = null;
  private idleWaiters: (() => void)[] = [];
  /** A client held back until the previous client's process exits. */
  private parked: { fd: number; peer: PeerCredentials | null } | null = null;
  /** A client that came while the attached one was leaving: it goes in once that one is torn down. */
  private held: { fd: number; peer: PeerCredentials | null } | null = null;
  private stopping = false;
  /** Buffers every client's connection and session reuse (see BufferPool). */
  private readonly buffers = new BufferPool();
  private readonly replyBuf = newReplyBuffer();

  constructor(
    private readonly device: GpuDevice,
    private readonly log: Logger,
    private readonly counters: Counters,
    private readonly processes: TenantProcesses,
    private readonly scrubs: ScrubScheduler,
    private readonly opts: TenantGateOptions,
  ) {}

  get client(): ActiveClient | null {
    return this.active;
  }

  /** Resolves once no client is attached. */
  whenIdle(): Promise<void> {
    if (!this.active) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Ends the session, if any; a parked client is closed by its waiter. */
  stop(reason: string): void {
    this.stopping = true;
    this.active?.connection.close(reason);
  }

  /** A connection the listener accepted. */
  onClient(fd: number, peer: PeerCredentials | null): void {
    this.counters.connections++;
    // A client whose peer has hung up is on its way out (its last messages are
    // still being read): the newcomer waits for it rather than being refused.
    const leaving = this.active !== null && this.active.connection.peerHungUp();
    if ((this.active && !leaving) || this.held || this.parked) {
      this.counters.refusedConnections++;
      const current = this.active?.peer ?? this.parked?.peer;
      this.log.warn({ peer, current }, 'refusing a second client: the device already has one');
      native.closeFd(fd);
      return;
    }
    const allowed = this.opts.allowUids ?? [];
    if (allowed.length > 0 && (peer === null || !allowed.includes(peer.uid))) {
      this.counters.refusedConnections++;
      this.log.warn({ peer }, 'refusing a client whose uid is not allowed (--allow-uid)');
      native.closeFd(fd);
      return;
    }
    if (this.active) {
      this.held = { fd, peer };
      this.log.info({ peer, previous: this.active.peer }, 'holding a new client until the previous one is torn down');
      return;
    }
    this.enter(fd, peer);
  }

  /** The device is free: the client goes in, or waits for the previous client's process. */
  private enter(fd: number, peer: PeerCredentials | null): void {
    const prev = this.processes.blocking(peer);
    if (prev) this.park(fd, peer, prev);
    else this.admit(fd, peer);
  }

  /** Holds a new client until the previous client's process exits (and any scrub is over), or refuses it. */
  private park(fd: number, peer: PeerCredentials | null, prev: ProcessWatch): void {
    const timeoutMs = this.processes.exitTimeoutMs;
    this.parked = { fd, peer };
    this.log.warn(
      { peer, previousPid: prev.pid, timeoutMs },
      'holding a new client until the previous client process exits: it may still map the aperture',
    );
    this.opts.status(`waiting for pid ${prev.pid} to exit`);
    void prev.whenExited(timeoutMs).then(async (exited) => {
      if (exited) await this.scrubs.whenClean();
      this.parked = null;
      if (this.stopping) {
        native.closeFd(fd);
        return;
      }
      if (!exited) {
        this.counters.refusedConnections++;
        this.log.error(
          { peer, previousPid: prev.pid, timeoutMs },
          'refusing a client: the previous client process is still running and may still map the aperture; make sure it exits',
        );
        native.closeFd(fd);
        this.opts.status(`waiting for pid ${prev.pid} to exit`);
        return;
      }
      this.log.info({ peer, previousPid: prev.pid }, 'previous client process exited; admitting the waiting client');
      this.admit(fd, peer);
    });
  }

  private admit(fd: number, peer: PeerCredentials | null): void {
    this.processes.attached(peer);
    const log = this.log.child({ client: peer?.pid ?? 'unknown' });
    let session!: Session;
    const connection = new Connection(
      fd,
      peer,
      {
        onMessage: (h, buf, at, fds) => session.onMessage(h, buf, at, fds),
        onClose: (reason, error) => session.onClose(reason, error),
        onBroken: (h, reason) => session.onBroken(h, reason),
      },
      this.opts.limits ?? DEFAULT_LIMITS,
      this.buffers,
    );
    const negotiateMs = this.opts.negotiateTimeoutMs ?? 0;
    let noVersion: NodeJS.Timeout | null = null;
    let droppedForNoVersion = false;
    session = new Session(
      this.device,
      connection,
      log,
      this.counters,
      (reason, error) => {
        if (noVersion) clearTimeout(noVersion);
        this.left(session, log, reason, error, droppedForNoVersion);
      },
      this.replyBuf,
    );
    if (negotiateMs > 0) {
      noVersion = setTimeout(() => {
        noVersion = null;
        if (session.isNegotiated || connection.isClosed) return;
        droppedForNoVersion = true;
        connection.close(`no VERSION within ${negotiateMs / 1000} s of connecting (--negotiate-timeout): dropped`);
      }, negotiateMs);
      noVersion.unref();
    }
    this.active = { connection, session, peer, since: Date.now() };
    log.info({ pid: peer?.pid, uid: peer?.uid, gid: peer?.gid }, 'client connected');
    this.opts.status(`client pid ${peer?.pid ?? 'unknown'} attached`);
    connection.start();
  }

  /** The session ended: the device is free, once an on-release scrub (if any) is done. */
  private left(session: Session, log: Logger, reason: string, error: Error | undefined, dropped: boolean): void {
    if (error) log.warn({ reason, err: error }, 'client disconnected');
    else if (dropped) log.warn({ reason }, 'client disconnected');
    else log.info({ reason }, 'client disconnected');
    this.active = null;
    try {
      this.opts.onClientGone?.();
    } catch (err) {
      log.error({ err }, 'check after the client left failed');
    }
    const scrubLater = this.processes.released(session.mayHaveWritten);
    for (const w of this.idleWaiters.splice(0)) w();
    const held = this.held;
    if (this.stopping) {
      this.held = null;
      if (held) native.closeFd(held.fd);
      return;
    }
    if (this.scrubs.mode === 'on-release' && session.mayHaveWritten && !scrubLater) this.scrubs.start('release');
    else this.opts.status('waiting for a client');
    if (!held) return;
    // after the scrub, like a client that waited in the backlog
    void this.scrubs.whenClean().then(() => {
      this.held = null;
      if (this.stopping) native.closeFd(held.fd);
      else this.enter(held.fd, held.peer);
    });
  }
}
