/** A failed host operation, carrying the errno the client's error reply gets. */
export class HostError extends Error {
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(message);
  }
}

/** Opening the host device failed for a reason the operator can fix; the message is one line saying how. */
export class VfioSetupError extends Error {}
