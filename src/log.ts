import { isatty } from 'node:tty';
import pino, { type Logger } from 'pino';
import { formatLogLine } from './log-format.js';

export type { Logger };

/**
 * JSON lines on stderr (journald keeps them as they are); readable lines
 * instead when stderr is a terminal (in colour unless NO_COLOR is set).
 */
export function createLogger(level: string, destination: number = 2): Logger {
  const options = { level, base: { service: 'nvgrace-vfio-user' } };
  const out = pino.destination({ fd: destination, sync: true });
  if (!isatty(destination)) return pino(options, out);
  const color = !process.env['NO_COLOR'];
  return pino(options, { write: (line: string) => void out.write(formatLogLine(line, color)) });
}
