import type { Logger } from 'pino';
import type { PeerCredentials } from '../transport/connection.js';
import { ProcessWatch } from './process-watch.js';

/**
 * Watches the processes of the attached client and of the one before it. A
 * client that disconnects may live on and keep its mapping of the aperture:
 * the next client from another process then waits for it to exit, and an
 * on-release scrub is put off until then.
 */
export class TenantProcesses {
  /** The attached client's process. */
  private tenant: ProcessWatch | null = null;
  /** A detached client's process that is still running. */
  private previous: ProcessWatch | null = null;
  private scrubWhenPreviousExits = false;
  private stopped = false;

  constructor(
    private readonly log: Logger,
    /** How long a new client waits for the previous process; 0: no watching at all. */
    readonly exitTimeoutMs: number,
    private readonly scrubOnRelease: boolean,
    /** The previous client's process exited and left memory to scrub. */
    private readonly scrubNow: () => void,
  ) {}

  /**
   * The previous client's process that a new client from `peer` must wait
   * for, if it still runs. The same process attaching again (a device
   * re-plugged) is still the same tenant, and is let in at once.
   */
  blocking(peer: PeerCredentials | null): ProcessWatch | null {
    const prev = this.previous;
    if (!prev || prev.exited) return null;
    if (peer?.pid !== prev.pid) return prev;
    this.previous = null;
    this.tenant = prev;
    this.scrubWhenPreviousExits = false;
    return null;
  }

  /** A client attached: watch its process, when that is asked for and possible. */
  attached(peer: PeerCredentials | null): void {
    this.tenant ??= this.watch(peer);
  }

  /** The client left. Returns true when its process lives on and the on-release scrub waits for it. */
  released(mayHaveWritten: boolean): boolean {
    const t = this.tenant;
    this.tenant = null;
    if (!t) return false;
    if (t.exited || this.stopped) {
      t.close();
      return false;
    }
    this.previous?.close();
    this.previous = t;
    this.scrubWhenPreviousExits = this.scrubOnRelease && mayHaveWritten;
    this.log.info({ pid: t.pid }, 'the client disconnected but its process is still running');
    return this.scrubWhenPreviousExits;
  }

  /** The watched process exited (or its watch was closed): only the previous client's matters. */
  private exited(t: ProcessWatch, exited: boolean): void {
    if (this.previous !== t) return;
    this.previous = null;
    t.close();
    if (!exited || this.stopped) return;
    this.log.info({ pid: t.pid }, 'the previous client process exited');
    if (this.scrubWhenPreviousExits) {
      this.scrubWhenPreviousExits = false;
      this.scrubNow();
    }
  }

  stop(): void {
    this.stopped = true;
    this.previous?.close(); // a parked client is closed by its waiter
    this.previous = null;
    this.tenant?.close();
    this.tenant = null;
  }

  private watch(peer: PeerCredentials | null): ProcessWatch | null {
    if (!this.exitTimeoutMs) return null;
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
    // once per process, not per disconnection: a process that reconnects again and again adds nothing
    w.onExit((exited) => this.exited(w, exited));
    return w;
  }
}
