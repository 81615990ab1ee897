/**
 * What lifts the shipped unit's hardening for a refused open, when the daemon runs under
 * systemd (INVOCATION_ID is set for every service process): the unit refuses device nodes
 * (DevicePolicy=closed), capabilities and writes to /sys, and a drop-in in systemd/drop-ins/
 * allows each. Null outside a service or for other errors.
 */
export function serviceDropInHint(err: unknown, dropIn: string, allows: string): string | null {
  if (process.env['INVOCATION_ID'] === undefined) return null;
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if (code !== 'EPERM' && code !== 'EACCES' && code !== 'EROFS') return null;
  return `the service needs the ${dropIn} drop-in (${allows}; see systemd/drop-ins/)`;
}
