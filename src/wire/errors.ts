import { Errno } from './constants.js';

/**
 * The only error the codec throws: a message that does not fit the protocol.
 * `errno` is what goes back to the client in an error reply.
 */
export class WireError extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
    this.name = 'WireError';
  }
}

export function invalid(message: string): WireError {
  return new WireError(Errno.EINVAL, message);
}
