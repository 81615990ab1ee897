import pino, { type Logger } from 'pino';

export type { Logger };

/** JSON lines on stderr (journald keeps them as they are). */
export function createLogger(level: string, destination: number = 2): Logger {
  return pino({ level, base: { service: 'nvgrace-vfio-user' } }, pino.destination({ fd: destination, sync: true }));
}
