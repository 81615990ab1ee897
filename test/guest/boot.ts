// Boots a test guest under QEMU (TCG) and collects its serial console.
import { spawn, type ChildProcess } from 'node:child_process';
import type { Arm64PageSize, GuestArch, QemuInstall } from './qemu-env.js';
import { INIT_END_MARK } from './initramfs.js';

export interface BootOptions {
  qemu: QemuInstall;
  /** aarch64: which of the root's kernels (default 4k); x86_64: unused. */
  pageSize?: Arm64PageSize;
  /** Boot this kernel instead (default: the install's for the page size). */
  kernel?: string;
  /** Initramfs image (see buildInitramfs). */
  initrd: string;
  /** More QEMU arguments, e.g. a vfio-user-pci -device. */
  extraArgs?: string[];
  /** Guest RAM in MiB (memfd-backed, shared, so vfio-user DMA can map it). Default 512. */
  memoryMiB?: number;
  /**
   * extraArgs bring their own -m and RAM backend (e.g. on a NUMA node): the
   * default RAM arguments are left out and memoryMiB is unused.
   */
  ownMemory?: boolean;
  /** QEMU is killed after this long. Default 120 s. */
  timeoutMs?: number;
  /** More kernel command-line words. */
  appendArgs?: string[];
  /** Sees the serial output as it arrives (e.g. to stream it to a log). */
  onOutput?: (chunk: string) => void;
}

export interface BootResult {
  /** Serial console (QEMU's stdout). */
  output: string;
  /** QEMU's own diagnostics (e.g. a vfio-user connection failure). */
  stderr: string;
  /** QEMU's exit code; null when it was killed. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  durationMs: number;
  /** Full argument vector QEMU was started with (after the install's prefix). */
  args: string[];
}

export const DEFAULT_MEMORY_MIB = 512;
export const DEFAULT_BOOT_TIMEOUT_MS = 120_000;

/** Kernel command line: serial console, quiet, and any panic ends QEMU (with -no-reboot). */
export const BASE_APPEND = ['console=ttyS0', 'quiet', 'panic=-1'];

/** The console and machine per architecture: q35 with a 16550 serial; virt with a PL011 (ttyAMA0). */
export const ARCH_GUEST: Record<GuestArch, { console: string; machine: string; cpu: string[] }> = {
  x86_64: { console: 'ttyS0', machine: 'q35', cpu: [] },
  // pauth-impdef: QEMU's own pointer-authentication hash, much cheaper under TCG than the
  // architected one; a guest cannot tell.
  aarch64: { console: 'ttyAMA0', machine: 'virt', cpu: ['-cpu', 'max,pauth-impdef=on'] },
};

/** The kernel command line's base words for an architecture. */
export function baseAppend(arch: GuestArch): string[] {
  return BASE_APPEND.map((w) => (w.startsWith('console=') ? `console=${ARCH_GUEST[arch].console}` : w));
}

/** The kernel a boot uses. */
export function bootKernel(o: BootOptions): string {
  if (o.kernel !== undefined) return o.kernel;
  if (o.qemu.arch === 'aarch64' && o.qemu.arm64Kernels !== null) return o.qemu.arm64Kernels[o.pageSize ?? '4k'];
  return o.qemu.kernel;
}

/** QEMU arguments for a guest boot (without the install's prefixArgs). */
export function guestArgs(o: BootOptions): string[] {
  const mem = o.memoryMiB ?? DEFAULT_MEMORY_MIB;
  const ram = o.ownMemory ? [] : ['-m', `${mem}M`, '-object', `memory-backend-memfd,id=mem0,size=${mem}M,share=on`];
  const a = ARCH_GUEST[o.qemu.arch];
  return [
    '-machine',
    o.ownMemory ? a.machine : `${a.machine},memory-backend=mem0`,
    ...a.cpu,
    '-accel',
    'tcg',
    ...ram,
    '-nographic',
    '-no-reboot',
    // No default NIC: saves its option ROM and keeps the slots for the device under test.
    '-nic',
    'none',
    '-kernel',
    bootKernel(o),
    '-initrd',
    o.initrd,
    '-append',
    [...baseAppend(o.qemu.arch), ...(o.appendArgs ?? [])].join(' '),
    ...(o.extraArgs ?? []),
  ];
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function killLiveOnExit(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const c of live) c.kill('SIGKILL');
  });
}

/**
 * Runs QEMU until the guest powers off (or QEMU exits otherwise), killing it after
 * timeoutMs. Never rejects for a guest failure: look at the result.
 */
export function bootGuest(o: BootOptions): Promise<BootResult> {
  const args = guestArgs(o);
  const timeoutMs = o.timeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS;
  const started = Date.now();
  killLiveOnExit();
  return new Promise((resolve, reject) => {
    // stdin stays an open pipe: -nographic multiplexes the monitor onto stdio.
    const child = spawn(o.qemu.command, [...o.qemu.prefixArgs, ...args], {
      env: { ...process.env, ...o.qemu.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    live.add(child);
    let output = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (s: string) => {
      output += s;
      o.onOutput?.(s);
    });
    child.stderr.on('data', (s: string) => {
      stderr += s;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 2000).unref();
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      live.delete(child);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      live.delete(child);
      child.stdin.destroy();
      resolve({
        output,
        stderr,
        exitCode: code,
        signal,
        timedOut,
        durationMs: Date.now() - started,
        args,
      });
    });
  });
}

export interface CheckResult {
  name: string;
  pass: boolean;
  details: string;
}

const lines = (output: string): string[] => output.split(/\r?\n|\r/);

/** The `CHECK <name> PASS|FAIL <details>` lines of bar-check, in order. */
export function parseChecks(output: string): CheckResult[] {
  const out: CheckResult[] = [];
  for (const line of lines(output)) {
    // Anchored on the word CHECK anywhere in the line: a kernel message may precede it.
    const m = /(?:^|\s)CHECK (\S+) (PASS|FAIL)(?: (.*))?$/.exec(line);
    if (m !== null) out.push({ name: m[1] ?? '', pass: m[2] === 'PASS', details: (m[3] ?? '').trim() });
  }
  return out;
}

/** bar-check's `BAR-CHECK DONE pass=N fail=M` totals (the last such line), or null. */
export function parseBarCheckDone(output: string): { pass: number; fail: number } | null {
  let found: { pass: number; fail: number } | null = null;
  for (const line of lines(output)) {
    const m = /BAR-CHECK DONE pass=(\d+) fail=(\d+)/.exec(line);
    if (m !== null) found = { pass: Number(m[1]), fail: Number(m[2]) };
  }
  return found;
}

/** Exit status of the caller's init commands (`GUEST-INIT END status=N`), or null. */
export function initExitStatus(output: string): number | null {
  const m = new RegExp(`${INIT_END_MARK} status=(\\d+)`).exec(output);
  return m === null ? null : Number(m[1]);
}

/** A compact account of a boot for assertion messages. */
export function describeBoot(r: BootResult, tailLines = 60): string {
  const tail = lines(r.output).slice(-tailLines).join('\n');
  return [
    `exit=${r.exitCode} signal=${r.signal} timedOut=${r.timedOut} ${r.durationMs} ms`,
    `--- serial (last ${tailLines} lines) ---`,
    tail,
    '--- qemu stderr ---',
    r.stderr.trim(),
  ].join('\n');
}
