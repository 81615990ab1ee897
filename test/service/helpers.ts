import fs from 'node:fs';
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { native } from '../../src/native/native.js';
import { CLI, type spawnCli } from '../helpers/cli.js';
import { HANG_GUARD_MS } from '../helpers/patience.js';

type Child = ReturnType<typeof spawnCli>;

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
  async waitFor(re: RegExp, from = 0, timeoutMs = HANG_GUARD_MS): Promise<string> {
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

/**
 * systemd-socket-activate listening on `socket`: on the first connection it
 * execs the daemon (`serve` with `args`, and `env` set) with the listening
 * socket as fd 3, as systemd does for a .socket unit.
 */
export function activate(socket: string, args: string[], env: Record<string, string> = {}): Child {
  const setenv = Object.entries(env).map(([k, v]) => `--setenv=${k}=${v}`);
  const child = spawn('systemd-socket-activate', ['--listen', socket, ...setenv, process.execPath, CLI, 'serve', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  }) as Child;
  child.out = { stdout: '', stderr: '' };
  child.stdout!.on('data', (b: Buffer) => (child.out.stdout += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (child.out.stderr += b.toString()));
  return child;
}

/** Polls `cond` until it holds; the error carries the child's log. */
export async function untilChild(cond: () => boolean, what: string, child: Child, timeoutMs = HANG_GUARD_MS): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}: ${child.out.stderr}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The port the daemon logged for its metrics endpoint. */
export function metricsPort(child: Child): number {
  const line = child.out.stderr.split('\n').find((l) => l.includes('serving metrics'));
  if (line === undefined) throw new Error(`no metrics address in the log: ${child.out.stderr}`);
  return (JSON.parse(line) as { address: { port: number } }).address.port;
}

/** One scrape of /metrics as "name{labels}" → value. */
export async function scrapeMetrics(port: number): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

/**
 * True once a UNIX socket at `socketPath` is listening. The file appears at
 * bind(), a moment before listen(); /proc/net/unix tells the two apart without
 * connecting (a connection would start a socket-activated daemon).
 */
export function isListening(socketPath: string): boolean {
  let table = '';
  try {
    table = fs.readFileSync('/proc/net/unix', 'utf8');
  } catch {
    return false;
  }
  // Num RefCount Protocol Flags Type St Inode Path; Flags 0x10000 is __SO_ACCEPTCON
  return table.split('\n').some((line) => {
    const f = line.trim().split(/\s+/);
    return f[7] === socketPath && (parseInt(f[3] ?? '0', 16) & 0x10000) !== 0;
  });
}
