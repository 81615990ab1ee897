import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { GpuDevice } from '../device/gpu-device.js';
import type { ScrubMode, ScrubProgress } from '../device/memory-scrub.js';
import { native } from '../native/native.js';
import { Connection, DEFAULT_LIMITS, type ConnectionLimits, type PeerCredentials } from '../transport/connection.js';
import { Counters } from './counters.js';
import { ACCEPT_BACKOFF_MS, ListenError, Listener } from '../transport/listener.js';
import { ProcessWatch } from './process-watch.js';
import { Session } from './session.js';

export interface DaemonOptions {
  /** Socket file to create; unused when listenFd is given. */
  socketPath?: string | undefined;
  /** An inherited listening socket (socket activation); its file is not ours to touch. */
  listenFd?: number | undefined;
  socketMode: number;
  /** Group to give the socket file (numeric gid), if any. */
  socketGroup?: number | undefined;
  /** Peer uids allowed to attach; empty means anyone who can open the socket. */
  allowUids?: readonly number[];
  limits?: ConnectionLimits;
  /** When to zero the memory, and how (injected: the backing knows). */
  scrub?: {
    mode: ScrubMode;
    run(onProgress: (p: ScrubProgress) => void, shouldStop: () => boolean): Promise<'done' | 'stopped'>;
  };
  /** What the daemon is doing, in words (for a service manager's status line). */
  onStatus?: (status: string) => void;
  /** Called once, when the device first serves clients (after a start-up scrub). */
  onReady?: () => void;
  /**
   * A client that disconnects may live on and keep its mapping of the aperture.
   * A new client from another process then waits up to this long for it to
   * exit (and for an on-release scrub, which is put off until then), and is
   * refused if it has not. 0 or absent: no waiting.
   */
  tenantExitTimeoutMs?: number;
  /** Called when a client has gone and its maps and eventfds are released (checks on the backing). */
  onClientGone?: () => void;
  /** Delay before the first retry of a failed scrub (then doubled, up to a minute); default 1 s. */
  scrubRetryMs?: number;
}

const SCRUB_RETRY_MS = 1000;
const SCRUB_RETRY_MAX_MS = 60_000;

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
  private stopping = false;
  private scrubbing: Promise<void> | null = null;
  private scrubState: ScrubProgress | null = null;
  private readied = false;
  /** The attached client's process, watched so we know when it is gone. */
  private tenant: ProcessWatch | null = null;
  /** A detached client's process that is still running. */
  private previous: ProcessWatch | null = null;
  /** A client held back until `previous` exits. */
  private parked: { fd: number; peer: PeerCredentials | null } | null = null;
  private scrubWhenPreviousExits = false;
  private scrubRetry: NodeJS.Timeout | null = null;
  /** Failed scrubs in a row; the retry delay doubles with each. */
  private scrubFailuresInRow = 0;

  constructor(
    readonly device: GpuDevice,
    private readonly log: Logger,
    private readonly opts: DaemonOptions,
  ) {}

  get client(): ActiveClient | null {
    return this.active;
  }

  start(): void {
    const onClient = (fd: number, peer: PeerCredentials | null) => this.onClient(fd, peer);
    const onError = (err: Error) => this.log.error({ err, retryMs: ACCEPT_BACKOFF_MS }, 'accept failed; retrying quietly until it works again');
    const onRecover = (failures: number) => this.log.info({ failures }, 'accepting clients again');
    if (this.opts.listenFd !== undefined) {
      this.listener = Listener.adopt(this.opts.listenFd, onClient, onError, onRecover);
      const asked = this.opts.socketPath;
      if (asked !== undefined && path.resolve(asked) !== this.listener.path) {
        this.listener.close();
        throw new ListenError(`--socket ${asked} is not the socket the service manager passed (${this.listener.path || 'unnamed'})`);
      }
      this.log.info({ socket: this.listener.path, fd: this.opts.listenFd }, 'listening on the socket passed by the service manager');
    } else {
      const file = this.opts.socketPath;
      if (file === undefined) throw new ListenError('no socket to listen on');
      this.listener = Listener.open(file, this.opts.socketMode, onClient, onError, onRecover);
      if (this.opts.socketGroup !== undefined) fs.chownSync(file, -1, this.opts.socketGroup);
      this.log.info({ socket: file }, 'listening');
    }
    if (this.opts.scrub?.mode === 'on-start') this.scrub('start');
    else this.serving();
  }

  /** Bytes scrubbed so far, while a scrub runs. */
  get scrubProgress(): ScrubProgress | null {
    return this.scrubState;
  }

  private serving(): void {
    this.status('waiting for a client');
    if (this.readied) return;
    this.readied = true;
    this.opts.onReady?.();
  }

  /** Ends the session (if any), stops listening and removes the socket. */
  stop(reason = 'daemon stopping'): void {
    this.stopping = true;
    this.active?.connection.close(reason);
    this.listener?.close();
    this.listener = null;
    if (this.scrubRetry) clearTimeout(this.scrubRetry);
    this.scrubRetry = null;
    this.previous?.close(); // a parked client is closed by its waiter
    this.previous = null;
    this.tenant?.close();
    this.tenant = null;
  }

  /** Resolves when no scrub is running (one that was stopped counts as over). */
  whenScrubbed(): Promise<void> {
    return this.scrubbing ?? Promise.resolve();
  }

  private status(text: string): void {
    this.opts.onStatus?.(text);
  }

  /**
   * Zeroes the memory with the listener paused: a client that connects
   * meanwhile waits in the backlog and is served once the memory is clean.
   * A scrub that fails keeps the listener paused and is tried again later:
   * the next tenant must never be handed the last one's data.
   */
  private scrub(why: 'start' | 'release'): void {
    const scrub = this.opts.scrub!;
    this.listener?.pause();
    const started = Date.now();
    let lastLog = started;
    let lastPct = -1;
    this.log.info({ why }, 'scrubbing aperture');
    this.status('scrubbing 0%');
    this.scrubState = { done: 0, total: 0 };
    const onProgress = (p: ScrubProgress) => {
      this.scrubState = p;
      const pct = Math.floor((100 * p.done) / p.total);
      if (pct !== lastPct) this.status(`scrubbing ${pct}%`);
      lastPct = pct;
      if (Date.now() - lastLog > 2000) {
        lastLog = Date.now();
        this.log.info({ done: p.done, total: p.total, percent: pct }, 'scrub progress');
      }
    };
    // started from a promise, so a run() that throws at once fails like one that rejects
    this.scrubbing = Promise.resolve()
      .then(() => scrub.run(onProgress, () => this.stopping))
      .then(
        (result) => {
          const ms = Date.now() - started;
          this.scrubFailuresInRow = 0;
          if (result === 'done') this.log.info({ ms }, 'aperture scrubbed');
          else this.log.warn({ ms }, 'scrub interrupted by shutdown');
          return true;
        },
        (err: Error) => {
          this.counters.scrubFailures++;
          this.scrubFailuresInRow++;
          const retryMs = Math.min(SCRUB_RETRY_MAX_MS, (this.opts.scrubRetryMs ?? SCRUB_RETRY_MS) * 2 ** (this.scrubFailuresInRow - 1));
          this.log.error({ err, retryMs, failures: this.scrubFailuresInRow }, 'scrub failed; no client is admitted until the memory is clean');
          this.status(`scrub failed (${err.message}); retrying in ${Math.ceil(retryMs / 1000)} s`);
          if (!this.stopping) {
            this.scrubRetry = setTimeout(() => {
              this.scrubRetry = null;
              if (!this.stopping) this.scrub(why);
            }, retryMs);
          }
          return false;
        },
      )
      .then((clean) => {
        this.scrubbing = null;
        this.scrubState = null;
        if (clean && !this.stopping) {
          this.listener?.resume();
          this.serving();
        }
      });
  }

  /** Resolves once no client is attached. */
  whenIdle(): Promise<void> {
    if (!this.active) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private onClient(fd: number, peer: PeerCredentials | null): void {
    this.counters.connections++;
    if (this.active || this.parked) {
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
    const prev = this.previous;
    if (prev && !prev.exited) {
      if (peer?.pid !== prev.pid) {
        this.park(fd, peer, prev);
        return;
      }
      // the same process attaching again (a device re-plugged): still the same tenant
      this.previous = null;
      this.tenant = prev;
      this.scrubWhenPreviousExits = false;
    }
    this.admit(fd, peer);
  }

  /** Holds a new client until the previous client's process exits (and any scrub is over), or refuses it. */
  private park(fd: number, peer: PeerCredentials | null, prev: ProcessWatch): void {
    const timeoutMs = this.opts.tenantExitTimeoutMs ?? 0;
    this.parked = { fd, peer };
    this.log.warn(
      { peer, previousPid: prev.pid, timeoutMs },
      'holding a new client until the previous client process exits: it may still map the aperture',
    );
    this.status(`waiting for pid ${prev.pid} to exit`);
    void prev.whenExited(timeoutMs).then(async (exited) => {
      if (exited) await this.whenScrubbed();
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
        this.status(`waiting for pid ${prev.pid} to exit`);
        return;
      }
      this.log.info({ peer, previousPid: prev.pid }, 'previous client process exited; admitting the waiting client');
      this.admit(fd, peer);
    });
  }

  /** Starts watching a client's process, when that is asked for and possible. */
  private watch(peer: PeerCredentials | null): ProcessWatch | null {
    if (!this.opts.tenantExitTimeoutMs) return null;
    // pid 0: the peer is in another pid namespace; our own pid: a client inside the daemon (tests)
    if (!peer || peer.pid <= 0 || peer.pid === process.pid) {
      if (peer?.pid !== process.pid) this.log.warn({ peer }, 'cannot watch this client process: the next client will not wait for it to exit');
      return null;
    }
    const w = ProcessWatch.open(peer.pid);
    if (w instanceof Error) {
      this.log.warn({ peer, err: w.message }, 'cannot watch this client process: the next client will not wait for it to exit');
      return null;
    }
    return w;
  }

  /** The client left. If its process lives on, the next tenant (and an on-release scrub) waits for it. */
  private released(mayHaveWritten: boolean): boolean {
    const t = this.tenant;
    this.tenant = null;
    if (!t) return false;
    if (t.exited || this.stopping) {
      t.close();
      return false;
    }
    this.previous?.close();
    this.previous = t;
    this.scrubWhenPreviousExits = this.opts.scrub?.mode === 'on-release' && mayHaveWritten;
    this.log.info({ pid: t.pid }, 'the client disconnected but its process is still running');
    t.onExit((exited) => {
      if (this.previous !== t) return;
      this.previous = null;
      t.close();
      if (!exited || this.stopping) return;
      this.log.info({ pid: t.pid }, 'the previous client process exited');
      if (this.scrubWhenPreviousExits) {
        this.scrubWhenPreviousExits = false;
        this.scrub('release');
      }
    });
    return this.scrubWhenPreviousExits;
  }

  private admit(fd: number, peer: PeerCredentials | null): void {
    this.tenant ??= this.watch(peer);
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
      try {
        this.opts.onClientGone?.();
      } catch (err) {
        log.error({ err }, 'check after the client left failed');
      }
      const scrubLater = this.released(session.mayHaveWritten);
      for (const w of this.idleWaiters.splice(0)) w();
      if (this.stopping) return;
      if (this.opts.scrub?.mode === 'on-release' && session.mayHaveWritten && !scrubLater) this.scrub('release');
      else this.status('waiting for a client');
    });
    this.active = { connection, session, peer, since: Date.now() };
    log.info({ pid: peer?.pid, uid: peer?.uid, gid: peer?.gid }, 'client connected');
    this.status(`client pid ${peer?.pid ?? 'unknown'} attached`);
    connection.start();
  }
}
