import fs from 'node:fs';
import { native, type Poller } from '../native/native.js';
import type { PeerCredentials } from './connection.js';

export class ListenError extends Error {}

/**
 * The daemon's listening UNIX socket. A stale socket file left by a dead daemon
 * is replaced; a live one, a symlink or any other kind of file is refused. A
 * socket passed in by a service manager (adopt) is used as it is and its file
 * is left alone: the service manager owns it.
 */
export class Listener {
  private readonly poller: Poller;
  private closed = false;

  private constructor(
    readonly path: string,
    readonly fd: number,
    private readonly onClient: (fd: number, peer: PeerCredentials | null) => void,
    private readonly onError: (err: Error) => void,
    /** Inode of the socket file we created, which close() removes; null when not ours. */
    private readonly ino: number | null,
  ) {
    this.poller = native.createPoller(fd, (status) => this.accept(status));
    this.poller.start(native.READABLE);
  }

  static open(
    path: string,
    mode: number,
    onClient: (fd: number, peer: PeerCredentials | null) => void,
    onError: (err: Error) => void,
  ): Listener {
    clearStaleSocket(path);
    let fd: number;
    try {
      fd = native.listenUnix(path, 16, mode);
    } catch (err) {
      throw new ListenError(`cannot listen on ${path}: ${(err as Error).message}`);
    }
    return new Listener(path, fd, onClient, onError, fs.statSync(path).ino);
  }

  /** Serves on an inherited listening socket (systemd socket activation). */
  static adopt(
    fd: number,
    onClient: (fd: number, peer: PeerCredentials | null) => void,
    onError: (err: Error) => void,
  ): Listener {
    let address: string;
    try {
      address = native.adoptListener(fd);
    } catch (err) {
      throw new ListenError(`inherited fd ${fd} is not a listening UNIX stream socket: ${(err as Error).message}`);
    }
    return new Listener(address, fd, onClient, onError, null);
  }

  /** Leaves new connections in the kernel's backlog until resume(). */
  pause(): void {
    if (!this.closed) this.poller.stop();
  }

  resume(): void {
    if (!this.closed) this.poller.start(native.READABLE);
  }

  /** Stops accepting and removes the socket file, if it is still ours. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
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
        // EMFILE and the like: report, and keep listening for the next wake-up.
        this.onError(err as Error);
        return;
      }
      if (fd < 0) return;
      let peer: PeerCredentials | null = null;
      try {
        peer = native.peerCred(fd);
      } catch {
        peer = null;
      }
      this.onClient(fd, peer);
    }
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
