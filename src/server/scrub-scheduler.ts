import type { Logger } from 'pino';
import type { ScrubMode, ScrubProgress } from '../device/memory-scrub.js';
import type { Counters } from './counters.js';

/** When to zero the memory, and how (injected: the backing knows). */
export interface ScrubJob {
  mode: ScrubMode;
  run(onProgress: (p: ScrubProgress) => void, shouldStop: () => boolean): Promise<'done' | 'stopped'>;
}

/** What a scrub needs from the daemon around it. */
export interface ScrubHooks {
  /** What the daemon is doing, in words. */
  status(text: string): void;
  /** A scrub starts: admit nobody until onClean. */
  onDirty(): void;
  /** A scrub succeeded: clients may be admitted again. */
  onClean(): void;
}

const SCRUB_RETRY_MS = 1000;
const SCRUB_RETRY_MAX_MS = 60_000;

/**
 * Runs the scrub between tenants and retries a failed one: after 1 s, then 2,
 * 4, ... up to a minute. Until one succeeds the daemon stays closed to new
 * clients: the next tenant must never be handed the last one's data.
 */
export class ScrubScheduler {
  private running: Promise<void> | null = null;
  private state: ScrubProgress | null = null;
  private retry: NodeJS.Timeout | null = null;
  /** Failed scrubs in a row; the retry delay doubles with each. */
  private failuresInRow = 0;
  private stopped = false;
  private cleanWaiters: (() => void)[] = [];

  constructor(
    private readonly job: ScrubJob | undefined,
    private readonly log: Logger,
    private readonly counters: Counters,
    private readonly hooks: ScrubHooks,
    private readonly firstRetryMs = SCRUB_RETRY_MS,
  ) {}

  get mode(): ScrubJob['mode'] {
    return this.job?.mode ?? 'never';
  }

  /** Bytes scrubbed so far, while a scrub runs. */
  get progress(): ScrubProgress | null {
    return this.state;
  }

  /** Resolves when no scrub is running (one that was stopped counts as over). */
  whenIdle(): Promise<void> {
    return this.running ?? Promise.resolve();
  }

  /**
   * Resolves once the memory is clean: at once when no scrub is running or
   * waiting to be retried, else when one succeeds (a failed scrub is not
   * enough), or when the daemon stops.
   */
  whenClean(): Promise<void> {
    if (this.stopped || (!this.running && !this.retry)) return Promise.resolve();
    return new Promise((resolve) => this.cleanWaiters.push(resolve));
  }

  /** Stops retrying; a running scrub stops at its next step. */
  stop(): void {
    this.stopped = true;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    if (!this.running) this.wakeCleanWaiters();
  }

  private wakeCleanWaiters(): void {
    for (const w of this.cleanWaiters.splice(0)) w();
  }

  /** Zeroes the memory now, with admission held off until it is clean. */
  start(why: 'start' | 'release'): void {
    const job = this.job!;
    this.hooks.onDirty();
    const started = Date.now();
    let lastLog = started;
    let lastPct = -1;
    this.log.info({ why }, 'scrubbing aperture');
    this.hooks.status('scrubbing 0%');
    this.state = { done: 0, total: 0 };
    const onProgress = (p: ScrubProgress) => {
      this.state = p;
      const pct = Math.floor((100 * p.done) / p.total);
      if (pct !== lastPct) this.hooks.status(`scrubbing ${pct}%`);
      lastPct = pct;
      if (Date.now() - lastLog > 2000) {
        lastLog = Date.now();
        this.log.info({ done: p.done, total: p.total, percent: pct }, 'scrub progress');
      }
    };
    // started from a promise, so a run() that throws at once fails like one that rejects
    this.running = Promise.resolve()
      .then(() => job.run(onProgress, () => this.stopped))
      .then(
        (result) => {
          const ms = Date.now() - started;
          this.failuresInRow = 0;
          if (result === 'done') this.log.info({ ms }, 'aperture scrubbed');
          else this.log.warn({ ms }, 'scrub interrupted by shutdown');
          return true;
        },
        (err: Error) => {
          this.failed(err, why);
          return false;
        },
      )
      .then((clean) => {
        this.running = null;
        this.state = null;
        if (clean && !this.stopped) this.hooks.onClean();
        if (clean || this.stopped) this.wakeCleanWaiters();
      });
  }

  private failed(err: Error, why: 'start' | 'release'): void {
    this.counters.scrubFailures++;
    this.failuresInRow++;
    const retryMs = Math.min(SCRUB_RETRY_MAX_MS, this.firstRetryMs * 2 ** (this.failuresInRow - 1));
    this.log.error({ err, retryMs, failures: this.failuresInRow }, 'scrub failed; no client is admitted until the memory is clean');
    this.hooks.status(`scrub failed (${err.message}); retrying in ${Math.ceil(retryMs / 1000)} s`);
    if (this.stopped) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      if (!this.stopped) this.start(why);
    }, retryMs);
  }
}
