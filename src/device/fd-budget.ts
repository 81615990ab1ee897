import { Errno } from '../wire/constants.js';
import { DeviceError } from './errors.js';

/**
 * How many of the client's fds the device may hold at once (DMA map fds and
 * eventfds together). Without it a client could make the daemon hold one fd per
 * DMA map, up to the advertised map limit, and run the process out of fds.
 */
export class FdBudget {
  private count = 0;

  constructor(readonly limit: number) {}

  get held(): number {
    return this.count;
  }

  /** Reserves `n` more fds or refuses the request with EMFILE. */
  take(n: number, what: string): void {
    if (n <= 0) return;
    if (this.count + n > this.limit) {
      throw new DeviceError(Errno.EMFILE, `${what}: the client would hold ${this.count + n} fds, limit ${this.limit}`);
    }
    this.count += n;
  }

  release(n: number): void {
    if (n > 0) this.count = Math.max(0, this.count - n);
  }
}
