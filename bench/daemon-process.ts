import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { daemonBin } from './paths.js';

/** The daemon as its own process, started the way a user starts it (default log level). */
export class DaemonProcess {
  private readonly child: ChildProcess;
  private exited: Promise<number | null>;

  private constructor(
    readonly socket: string,
    readonly logPath: string,
    args: string[],
  ) {
    const log = fs.openSync(logPath, 'w');
    this.child = spawn(process.execPath, [daemonBin, 'serve', '--socket', socket, ...args], {
      stdio: ['ignore', 'ignore', log],
    });
    fs.closeSync(log);
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  static start(dir: string, name: string, args: string[]): DaemonProcess {
    return new DaemonProcess(path.join(dir, `${name}.sock`), path.join(dir, `${name}.log`), args);
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** The end of the daemon's log, for error messages. */
  logTail(lines = 5): string {
    try {
      return fs.readFileSync(this.logPath, 'utf8').trim().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(timer);
  }
}
