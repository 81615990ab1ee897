import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

/** RLIMIT_NOFILE of a process (this one by default), from /proc/<pid>/limits. */
export function openFileLimit(pid: number | 'self' = 'self'): { soft: number; hard: number } {
  const m = /^Max open files\s+(\d+)\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'));
  if (!m) throw new Error('no "Max open files" line');
  return { soft: Number(m[1]), hard: Number(m[2]) };
}

/** Sets the soft RLIMIT_NOFILE of a running process (util-linux prlimit), hard limit unchanged. */
export function setOpenFileLimit(soft: number, pid: number = process.pid): void {
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${soft}:`]);
}
