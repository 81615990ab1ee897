import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { native } from '../../src/native/native.js';

const SCRIPT = fileURLToPath(new URL('./ensure-systemd-tools.sh', import.meta.url));

/** Installs Debian's systemd package when its offline tools are missing (fails the test otherwise). */
export function ensureSystemdTools(): void {
  execFileSync('bash', [SCRIPT], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 300_000 });
}

/** The service manager's end of NOTIFY_SOCKET: collects every datagram sent to it. */
export class NotifyReceiver {
  readonly messages: string[] = [];
  private readonly fd: number;
  private readonly timer: NodeJS.Timeout;
  private readonly buf = new Uint8Array(4096);
  private readonly fds = new Int32Array(2);

  constructor(readonly address: string) {
    this.fd = native.notifyListen(address);
    this.timer = setInterval(() => this.drain(), 5);
  }

  drain(): void {
    for (;;) {
      const n = native.recvMsg(this.fd, this.buf, 0, this.buf.length, this.fds);
      if (n < 0) return;
      this.messages.push(Buffer.from(this.buf.subarray(0, n)).toString());
    }
  }

  /** Waits for a message matching `re` (at index `from` or later), returning it. */
  async waitFor(re: RegExp, from = 0, timeoutMs = 10_000): Promise<string> {
    const start = Date.now();
    for (;;) {
      this.drain();
      const m = this.messages.slice(from).find((x) => re.test(x));
      if (m !== undefined) return m;
      if (Date.now() - start > timeoutMs) throw new Error(`no notify message matching ${re}; got ${JSON.stringify(this.messages)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  close(): void {
    clearInterval(this.timer);
    native.closeFd(this.fd);
  }
}
