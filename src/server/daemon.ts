import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { GpuDevice } from '../device/gpu-device.js';
import type { ConnectionLimits, PeerCredentials } from '../transport/connection.js';
import { Counters } from './counters.js';
import { ACCEPT_BACKOFF_MS, ListenError, Listener } from '../transport/listener.js';
import type { ScrubProgress } from '../device/memory-scrub.js';
import { ScrubScheduler, type ScrubJob } from './scrub-scheduler.js';
import { TenantGate, type ActiveClient } from './tenant-gate.js';
import { TenantProcesses } from './tenant-processes.js';

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
  /** A client must finish VERSION this long after it is admitted, or it is dropped; 0 or absent: no limit. */
  negotiateTimeoutMs?: number;
  /** When to zero the memory, and how (injected: the backing knows). */
  scrub?: ScrubJob;
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

/**
 * Serves one device to one client at a time. When the client goes, its maps
 * and eventfds are released and the next client finds the device, and its
 * memory, as the last one left it.
 *
 * The daemon listens; who gets the device is the TenantGate's business, the
 * previous clients' processes are the TenantProcesses', and zeroing the
 * memory between tenants is the ScrubScheduler's.
 */
export class Daemon {
  readonly counters = new Counters();
  private listener: Listener | null = null;
  private readied = false;
  private readonly scrubs: ScrubScheduler;
  private readonly processes: TenantProcesses;
  private readonly gate: TenantGate;

  constructor(
    readonly device: GpuDevice,
    private readonly log: Logger,
    private readonly opts: DaemonOptions,
  ) {
    const status = (text: string) => this.status(text);
    // a scrub runs with the listener paused: a client that connects meanwhile waits in the backlog
    this.scrubs = new ScrubScheduler(
      opts.scrub,
      log,
      this.counters,
      {
        status,
        onDirty: () => this.listener?.pause(),
        onClean: () => {
          this.listener?.resume();
          this.serving();
        },
      },
      opts.scrubRetryMs,
    );
    this.processes = new TenantProcesses(log, opts.tenantExitTimeoutMs ?? 0, opts.scrub?.mode === 'on-release', () => this.scrubs.start('release'));
    this.gate = new TenantGate(device, log, this.counters, this.processes, this.scrubs, {
      allowUids: opts.allowUids,
      limits: opts.limits,
      negotiateTimeoutMs: opts.negotiateTimeoutMs,
      onClientGone: opts.onClientGone,
      status,
    });
  }

  get client(): ActiveClient | null {
    return this.gate.client;
  }

  start(): void {
    const onClient = (fd: number, peer: PeerCredentials | null) => this.gate.onClient(fd, peer);
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
    if (this.scrubs.mode === 'on-start') this.scrubs.start('start');
    else this.serving();
  }

  /** Bytes scrubbed so far, while a scrub runs. */
  get scrubProgress(): ScrubProgress | null {
    return this.scrubs.progress;
  }

  /** Ends the session (if any), stops listening and removes the socket. */
  stop(reason = 'daemon stopping'): void {
    this.scrubs.stop();
    this.processes.stop();
    this.gate.stop(reason);
    this.listener?.close();
    this.listener = null;
  }

  /** Resolves when no scrub is running (one that was stopped counts as over). */
  whenScrubbed(): Promise<void> {
    return this.scrubs.whenIdle();
  }

  /** Resolves once no client is attached. */
  whenIdle(): Promise<void> {
    return this.gate.whenIdle();
  }

  private serving(): void {
    this.status('waiting for a client');
    if (this.readied) return;
    this.readied = true;
    this.opts.onReady?.();
  }

  private status(text: string): void {
    this.opts.onStatus?.(text);
  }
}
