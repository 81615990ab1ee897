import type { Logger } from 'pino';
import { native } from '../native/native.js';

/** How long each progress report during start-up extends systemd's start timeout. */
const START_EXTENSION_USEC = 30_000_000;

/**
 * The sd_notify protocol: READY=1, STATUS=..., STOPPING=1 and watchdog pings
 * sent as datagrams to $NOTIFY_SOCKET. Without NOTIFY_SOCKET (not run by
 * systemd, or not Type=notify) every call does nothing.
 */
export class ServiceNotifier {
  private lastStatus = '';
  private ready = false;
  private warned = false;
  private watchdog: NodeJS.Timeout | null = null;

  constructor(
    private readonly address: string | null,
    private readonly log: Logger,
    private readonly watchdogUsec: number | null = null,
  ) {}

  static fromEnv(log: Logger, env: NodeJS.ProcessEnv = process.env, pid = process.pid): ServiceNotifier {
    const address = env['NOTIFY_SOCKET'] || null;
    return new ServiceNotifier(address, log, watchdogInterval(env, pid));
  }

  get enabled(): boolean {
    return this.address !== null;
  }

  /** The device serves: systemd considers the service started. */
  notifyReady(): void {
    this.ready = true;
    this.send(`READY=1\nSTATUS=${this.lastStatus || 'ready'}`);
  }

  /**
   * What the daemon is doing, in a few words ("client pid 42 attached",
   * "scrubbing 40%"). Repeats are not sent. Before READY=1, each report also
   * pushes systemd's start timeout out, so a long start-up scrub that keeps
   * making progress is not killed, and one that stalls still is.
   */
  status(text: string): void {
    if (text === this.lastStatus) return;
    this.lastStatus = text;
    this.send(this.ready ? `STATUS=${text}` : `STATUS=${text}\nEXTEND_TIMEOUT_USEC=${START_EXTENSION_USEC}`);
  }

  stopping(): void {
    this.stopWatchdog();
    this.lastStatus = 'stopping';
    this.send('STOPPING=1\nSTATUS=stopping');
  }

  /**
   * Pings WATCHDOG=1 at half of WATCHDOG_USEC (WatchdogSec=). The timer runs
   * on the event loop, so a loop stuck for longer than the watchdog period
   * stops the pings and systemd restarts the daemon.
   */
  startWatchdog(): void {
    if (this.address === null || this.watchdogUsec === null || this.watchdog !== null) return;
    const periodMs = Math.max(1, Math.floor(this.watchdogUsec / 2000));
    this.send('WATCHDOG=1');
    this.watchdog = setInterval(() => this.send('WATCHDOG=1'), periodMs);
    this.watchdog.unref();
    this.log.info({ periodMs }, 'systemd watchdog enabled');
  }

  stopWatchdog(): void {
    if (this.watchdog !== null) clearInterval(this.watchdog);
    this.watchdog = null;
  }

  private send(message: string): void {
    if (this.address === null) return;
    try {
      native.notifySend(this.address, message);
    } catch (err) {
      // The daemon works without its service manager hearing from it; say so once.
      if (!this.warned) this.log.warn({ err, address: this.address }, 'cannot notify the service manager');
      this.warned = true;
    }
  }
}

/** WATCHDOG_USEC when it is meant for this process (WATCHDOG_PID unset or ours), else null. */
export function watchdogInterval(env: NodeJS.ProcessEnv, pid: number): number | null {
  const usec = Number(env['WATCHDOG_USEC']);
  if (!Number.isSafeInteger(usec) || usec <= 0) return null;
  const forPid = env['WATCHDOG_PID'];
  if (forPid !== undefined && forPid !== '' && Number(forPid) !== pid) return null;
  return usec;
}
