import { native, type Poller } from '../native/native.js';

/**
 * Tells when a client's process has exited, through a pidfd opened while the
 * client is connected (so a later reuse of its pid cannot fool it). A client
 * that disconnects may keep running and keep its mapping of the aperture; the
 * daemon uses this to hold the next tenant back until it is gone.
 */
export class ProcessWatch {
  private poller: Poller | null;
  private done = false;
  private readonly waiters: ((exited: boolean) => void)[] = [];

  private constructor(
    readonly pid: number,
    private fd: number,
  ) {
    this.poller = native.createPoller(fd, () => this.finish(true));
    this.poller.start(native.READABLE);
    this.poller.unref(); // watching must not keep a stopping daemon alive
  }

  /** A watch on `pid`, or an Error saying why it cannot be watched (e.g. ESRCH: already gone). */
  static open(pid: number): ProcessWatch | Error {
    let fd: number;
    try {
      fd = native.pidfdOpen(pid);
    } catch (err) {
      return err as Error;
    }
    try {
      return new ProcessWatch(pid, fd);
    } catch (err) {
      native.closeFd(fd);
      return err as Error;
    }
  }

  get exited(): boolean {
    return this.done;
  }

  /** Resolves true when the process exits, false if `timeoutMs` passes first. */
  whenExited(timeoutMs: number): Promise<boolean> {
    if (this.done) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(onExit);
        if (i >= 0) this.waiters.splice(i, 1);
        resolve(false);
      }, timeoutMs);
      const onExit = (exited: boolean) => {
        clearTimeout(timer);
        resolve(exited);
      };
      this.waiters.push(onExit);
    });
  }

  /** Calls `cb(true)` when the process exits, or `cb(false)` if the watch is closed first. */
  onExit(cb: (exited: boolean) => void): void {
    if (this.done) cb(true);
    else this.waiters.push(cb);
  }

  /** Stops watching; pending waiters resolve false. */
  close(): void {
    this.finish(false);
  }

  private finish(exited: boolean): void {
    if (this.poller) {
      this.poller.close();
      this.poller = null;
      native.closeFd(this.fd);
      this.fd = -1;
    }
    if (exited) this.done = true;
    for (const w of this.waiters.splice(0)) w(exited);
  }
}
