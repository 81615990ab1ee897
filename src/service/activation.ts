/** First fd a service manager passes (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;

export class ActivationError extends Error {}

/**
 * The listening socket passed by systemd socket activation: LISTEN_PID names
 * this process and LISTEN_FDS counts the fds from 3 on. Returns null when
 * nothing was passed to this process. The variables are then removed from the
 * environment so that no child takes the fds for its own.
 */
export function takeListenFd(env: NodeJS.ProcessEnv = process.env, pid = process.pid): number | null {
  const forPid = env['LISTEN_PID'];
  const count = env['LISTEN_FDS'];
  if (forPid === undefined || count === undefined) return null;
  if (Number(forPid) !== pid) return null; // meant for a parent that exec'd us without clearing them
  delete env['LISTEN_PID'];
  delete env['LISTEN_FDS'];
  delete env['LISTEN_FDNAMES'];
  const n = Number(count);
  if (!Number.isSafeInteger(n) || n < 0) throw new ActivationError(`LISTEN_FDS="${count}" is not a count of fds`);
  if (n === 0) return null;
  if (n > 1) {
    throw new ActivationError(`the service manager passed ${n} sockets; one device listens on one (give the .socket unit a single ListenStream=)`);
  }
  return LISTEN_FDS_START;
}
