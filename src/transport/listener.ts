import fs from 'node:fs';
import { native, type Poller } from '../native/native.js';
import type { PeerCredentials } from './connection.js';

export class ListenError extends Error {}

/** How long accepting pauses after accept() fails (EMFILE and the like). */
export const ACCEPT_BACKOFF_MS = 250;

/**
 * The daemon's listening UNIX socket. A stale socket file left by a dead daemon
 * is replaced; a live one, a symlink or any other kind of file is refused. A
 * socket passed in by a service manager (adopt) is used as it is and its file
 * is left alone: the service manager owns it.
 */
export class Listener {
  private readonly poller: Poller;
  private closed = false;
  private paused = false;
  private backoff: NodeJS.Timeout | null = null;
  /** accept() failures since the last success; only the first of a run is reported. */
  private failures = 0;

  private constructor(
    readonly path: string,
    readonly fd: number,
    private readonly onClient: (fd: number, peer: PeerCredentials | null) => void,
    private readonly onError: (err: Error) => void,
    /** Inode of the socket file we created, which close() removes; null when not ours. */
    private readonly ino: number | null,
    private readonly onRecover: (failures: number) => void,
  ) {
    this.poller = native.createPoller(fd, (status) => this.accept(status));
    this.poller.start(native.READABLE);
  }

  static open(
    path: string,
    mode: number,
    onClient: (fd: number, peer: PeerCredentials | null) => void,
    onError: (err: Error) => void,
    onRecover: (failures: number) => void = () => {},
  ): Listener {
    clearStaleSocket(path);
    let fd: number;
    try {
      fd = native.listenUnix(path, 16, mode);
    } catch (err) {
      throw new ListenError(`cannot listen on ${path}: ${(err as Error).message}`);
    }
    return new Listener(path, fd, onClient, onError, fs.statSync(path).ino, onRecover);
  }

  /** Serves on an inherited listening socket (systemd socket activation). */
  static adopt(
    fd: number,
    onClient: (fd: number, peer: PeerCredentials | null) => void,
    onError: (err: Error) => void,
    onRecover: (failures: number) => void = () => {},
  ): Listener {
    let address: string;
    try {
      address = native.adoptListener(fd);
    } catch (err) {
      throw new ListenError(`inherited fd ${fd} is not a listening UNIX stream socket: ${(err as Error).message}`);
    }
    return new Listener(address, fd, onClient, onError, null, onRecover);
  }

  /** accept() failures in the current run of failures (0 once one succeeds). */
  get acceptFailures(): number {
    return this.failures;
  }

  /** Leaves new connections in the kernel's backlog until resume(). */
  pause(): void {
    this.paused = true;
    this.updatePolling();
  }

  resume(): void {
    this.paused = false;
    this.updatePolling();
  }

  /** Stops accepting and removes the socket file, if it is still ours. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.backoff) clearTimeout(this.backoff);
    this.backoff = null;
    this.poller.close();
    native.closeFd(this.fd);
    if (this.ino === null) return;
    try {
      if (fs.lstatSync(this.path).ino === this.ino) fs.unlinkSync(this.path);
    } catch {
      // already removed by someone else
    }
  }

  private accept(status: number): void {
    if (this.closed) return;
    if (status < 0) {
      this.onError(new Error(`listening socket error ${status}`));
      return;
    }
    for (;;) {
      let fd: number;
      try {
        fd = native.accept(this.fd);
      } catch (err) {
        this.failed(err as Error);
        return;
      }
      if (fd < 0) return;
      if (this.failures > 0) {
        this.onRecover(this.failures);
        this.failures = 0;
      }
      let peer: PeerCredentials | null = null;
      try {
        peer = native.peerCred(fd);
      } catch {
        peer = null;
      }
      this.onClient(fd, peer);
    }
  }

  /**
   * The pending connection stays in the backlog and keeps the socket readable
   * (EMFILE, ENFILE, ENOBUFS leave it there), so listening on would wake us in
   * a loop: stop for a moment, then retry. Only the first failure of a run is
   * reported.
   */
  private failed(err: Error): void {
    if (this.failures++ === 0) this.onError(err);
    this.backoff = setTimeout(() => {
      this.backoff = null;
      this.updatePolling();
    }, ACCEPT_BACKOFF_MS);
    this.updatePolling();
  }

  private updatePolling(): void {
    if (this.closed) return;
    if (this.paused || this.backoff) this.poller.stop();
    else this.poller.start(native.READABLE);
  }
}

function clearStaleSocket(path: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch {
    return; // nothing there
  }
  if (st.isSymbolicLink()) throw new ListenError(`${path} is a symbolic link; refusing to listen through it`);
  if (!st.isSocket()) throw new ListenError(`${path} exists and is not a socket; refusing to replace it`);
  let probe = -1;
  try {
    probe = native.connectUnix(path);
  } catch {
    fs.unlinkSync(path); // nobody answers: a stale socket from a daemon that died
    return;
  }
  native.closeFd(probe);
  throw new ListenError(`${path} is in use by a running daemon`);
}
