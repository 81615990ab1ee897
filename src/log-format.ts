/** pino's numeric levels, as words padded to one width. */
const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO ', 40: 'WARN ', 50: 'ERROR', 60: 'FATAL' };
const COLORS: Record<number, string> = { 10: '90', 20: '36', 30: '32', 40: '33', 50: '31', 60: '35' };
/** Fields every line has, shown in the prefix or not at all. */
const HIDDEN = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'service']);

function value(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (typeof v === 'object' && v !== null) return JSON.stringify(v);
  return String(v);
}

/**
 * One JSON log line (as pino writes it) as a line for a person at a terminal:
 * `12:34:56.789 INFO  client connected pid=42 uid=0`. An error's stack
 * follows on indented lines. A line that is not JSON passes through.
 */
export function formatLogLine(json: string, color = false): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  const level = typeof rec['level'] === 'number' ? rec['level'] : 30;
  const time = typeof rec['time'] === 'number' ? new Date(rec['time']).toTimeString().slice(0, 8) + '.' + String(rec['time'] % 1000).padStart(3, '0') : '';
  const word = LEVELS[level] ?? `L${level}`;
  const tag = color ? `\x1b[${COLORS[level] ?? '0'}m${word}\x1b[0m` : word;
  const parts = [time, tag, String(rec['msg'] ?? '')].filter((p) => p !== '');
  let stack = '';
  for (const [k, v] of Object.entries(rec)) {
    if (HIDDEN.has(k)) continue;
    if (k === 'err' && typeof v === 'object' && v !== null) {
      const e = v as { message?: unknown; stack?: unknown };
      parts.push(`err=${value(e.message ?? '')}`);
      if (typeof e.stack === 'string') stack = e.stack.split('\n').slice(1).map((l) => `    ${l.trim()}\n`).join('');
      continue;
    }
    parts.push(`${k}=${value(v)}`);
  }
  return `${parts.join(' ')}\n${stack}`;
}
