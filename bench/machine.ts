import fs from 'node:fs';
import os from 'node:os';

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  os: string;
  node: string;
  gcc: string;
  virtualized: boolean;
  /** 1-minute load average when the run started and ended: other work on the machine skews figures. */
  loadStart: number;
  loadEnd: number;
}

function osName(): string {
  try {
    const m = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(fs.readFileSync('/etc/os-release', 'utf8'));
    return m?.[1] ?? os.type();
  } catch {
    return os.type();
  }
}

function virtualized(): boolean {
  try {
    return /^flags\s*:.*\bhypervisor\b/m.test(fs.readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    return false;
  }
}

export function describeMachine(gcc: string): Machine {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()}`,
    os: osName(),
    node: process.version,
    gcc,
    virtualized: virtualized(),
    loadStart: os.loadavg()[0]!,
    loadEnd: os.loadavg()[0]!,
  };
}

export function machineLine(m: Machine): string {
  return `${m.cpu}, ${m.cores} cores${m.virtualized ? ' (VM)' : ''}, ${m.memoryGiB} GiB, ${m.os}, ${m.kernel}, Node ${m.node}, gcc ${m.gcc}; load ${m.loadStart.toFixed(2)} → ${m.loadEnd.toFixed(2)}`;
}
