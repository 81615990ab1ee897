/**
 * A request the device model refuses: out of range, not supported, over a
 * limit. `errno` (Linux numbering) is what the session puts in the error reply;
 * the device itself knows nothing of replies.
 */
export class DeviceError extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
    this.name = 'DeviceError';
  }
}
