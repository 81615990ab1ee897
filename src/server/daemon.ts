import type { Logger } from 'pino';
import type { GpuDevice } from '../device/gpu-device.js';
import { native } from '../native/native.js';
import { Connection, DEFAULT_LIMITS, type ConnectionLimits, type PeerCredentials } from '../transport/connection.js';
import { Counters } from './counters.js';
import { Listener } from '../transport/listener.js';
import { Session } from './session.js';

export interface DaemonOptions {
  socketPath: string;
  socketMode: number;
  limits?: ConnectionLimits;
}

interface ActiveClient {
  connection: Connection;
  session: Session;
  peer: PeerCredentials | null;
  since: number;
}

/**
 * Serves one device to one client at a time. When the client goes, its maps
 * and eventfds are released and the next client finds the device, and its
 * memory, as the last one left it.
 */
export class Daemon {
  readonly counters = new Counters();
  private listener: Listener | null = null;
  private active: ActiveClient | null = null;
  private idleWaiters: (() => void)[] = [];

  constructor(
    readonly device: GpuDevice,
    private readonly log: Logger,
    private readonly opts: DaemonOptions,
  ) {}

  get client(): ActiveClient | null {
    return this.active;
  }

  start(): void {
    this.listener = Listener.open(
      this.opts.socketPath,
      this.opts.socketMode,
      (fd, peer) => this.onClient(fd, peer),
      (err) => this.log.error({ err }, 'accept failed'),
    );
    this.log.info({ socket: this.opts.socketPath }, 'listening');
  }

  /** Ends the session (if any), stops listening and removes the socket. */
  stop(reason = 'daemon stopping'): void {
    this.active?.connection.close(reason);
    this.listener?.close();
    this.listener = null;
  }

  /** Resolves once no client is attached. */
  whenIdle(): Promise<void> {
    if (!this.active) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private onClient(fd: number, peer: PeerCredentials | null): void {
    this.counters.connections++;
    if (this.active) {
      this.counters.refusedConnections++;
      this.log.warn({ peer, current: this.active.peer }, 'refusing a second client: the device already has one');
      native.closeFd(fd);
      return;
    }
    const log = this.log.child({ client: peer?.pid ?? 'unknown' });
    let session!: Session;
    const connection = new Connection(
      fd,
      peer,
      {
        onMessage: (h, buf, at, fds) => session.onMessage(h, buf, at, fds),
        onClose: (reason, error) => session.onClose(reason, error),
      },
      this.opts.limits ?? DEFAULT_LIMITS,
    );
    session = new Session(this.device, connection, log, this.counters, (reason, error) => {
      if (error) log.warn({ reason, err: error }, 'client disconnected');
      else log.info({ reason }, 'client disconnected');
      this.active = null;
      for (const w of this.idleWaiters.splice(0)) w();
    });
    this.active = { connection, session, peer, since: Date.now() };
    log.info({ pid: peer?.pid, uid: peer?.uid, gid: peer?.gid }, 'client connected');
    connection.start();
  }
}
