import fs from 'node:fs';

/** What a client may make the daemon hold by default: far above what QEMU uses (a few maps, ~20 eventfds). */
export const DEFAULT_MAX_CLIENT_FDS = 1024;
/** fds kept free for the daemon itself: its files, sockets, one message's fds in flight, a refused client. */
const RESERVED_FDS = 128;

/** The soft RLIMIT_NOFILE of this process, or null when it cannot be read. */
export function openFileLimit(): number | null {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    if (!m) return null;
    return m[1] === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(m[1]);
  } catch {
    return null;
  }
}

/**
 * The cap on client fds held at once: the requested value (or the default),
 * lowered if RLIMIT_NOFILE would not leave the daemon room for its own fds.
 */
export function clientFdLimit(requested: number | undefined, nofile: number | null = openFileLimit()): { limit: number; lowered: boolean } {
  const want = requested ?? DEFAULT_MAX_CLIENT_FDS;
  if (nofile === null) return { limit: want, lowered: false };
  const room = Math.max(16, nofile - RESERVED_FDS);
  return want > room ? { limit: room, lowered: true } : { limit: want, lowered: false };
}
