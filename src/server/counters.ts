import { Command, PCI_NUM_REGIONS } from '../wire/constants.js';

const COMMAND_SLOTS = 32;

/**
 * What the daemon counts: plain numbers in preallocated arrays, so counting on
 * the trapped path costs an increment and nothing else.
 */
export class Counters {
  readonly messages = new Float64Array(COMMAND_SLOTS);
  readonly errorsByErrno = new Map<number, number>();
  /** Trapped REGION_READ/WRITE accesses by region index. */
  readonly trappedReads = new Float64Array(PCI_NUM_REGIONS);
  readonly trappedWrites = new Float64Array(PCI_NUM_REGIONS);
  connections = 0;
  refusedConnections = 0;
  protocolErrors = 0;
  /** Requests that failed with something other than a protocol error: a bug or an I/O error. */
  internalErrors = 0;
  /** Scrubs that failed (each is retried; no client is admitted meanwhile). */
  scrubFailures = 0;

  countMessage(command: number): void {
    this.messages[command < COMMAND_SLOTS ? command : 0]!++;
  }

  countError(errno: number): void {
    this.errorsByErrno.set(errno, (this.errorsByErrno.get(errno) ?? 0) + 1);
  }

  messageCount(command: number): number {
    return this.messages[command] ?? 0;
  }

  summary(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [name, id] of Object.entries(Command)) {
      const n = this.messages[id] ?? 0;
      if (n > 0) out[`msg_${name.toLowerCase()}`] = n;
    }
    for (const [errno, n] of this.errorsByErrno) out[`errno_${errno}`] = n;
    this.trappedReads.forEach((n, i) => n > 0 && (out[`trapped_reads_region${i}`] = n));
    this.trappedWrites.forEach((n, i) => n > 0 && (out[`trapped_writes_region${i}`] = n));
    out['connections'] = this.connections;
    out['refused_connections'] = this.refusedConnections;
    out['internal_errors'] = this.internalErrors;
    out['scrub_failures'] = this.scrubFailures;
    return out;
  }
}
