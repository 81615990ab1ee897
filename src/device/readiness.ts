import { NVIDIA_VENDOR_ID } from './pci.js';

/**
 * Registers the GPU's driver polls before it uses the device (at probe and
 * after a reset): the C2C link and HBM training status, ready at 0xFF.
 */
export const READINESS_REGISTERS = [0x1498, 0x200bc] as const;
export const READY_VALUE = 0xff;

export type ReadyWaitMode = 'auto' | 'on' | 'off';
export const READY_WAIT_MODES: readonly ReadyWaitMode[] = ['auto', 'on', 'off'];

export interface ReadinessOptions {
  /** auto: wait for NVIDIA GPUs (vendor 0x10de) only; on: always; off: never. */
  mode: ReadyWaitMode;
  timeoutMs: number;
  intervalMs: number;
}

export const DEFAULT_READINESS: ReadinessOptions = { mode: 'auto', timeoutMs: 30_000, intervalMs: 1000 };

export class ReadinessTimeout extends Error {
  override readonly name = 'ReadinessTimeout';
  /** ETIMEDOUT: what the client's error reply to DEVICE_RESET carries. */
  readonly errno = 110;
}

/** True when the readiness registers should be polled for a function of this vendor. */
export function readinessApplies(mode: ReadyWaitMode, vendorId: number): boolean {
  return mode === 'on' || (mode === 'auto' && vendorId === NVIDIA_VENDOR_ID);
}

/**
 * Polls the readiness registers as the kernel's nvgrace-gpu driver does: once
 * per interval until both read 0xFF, failing after the timeout. Asynchronous,
 * so the event loop (signals, other timers) keeps running while it waits.
 */
export async function waitReady(
  read32: (offset: number) => number,
  opts: Pick<ReadinessOptions, 'timeoutMs' | 'intervalMs'>,
  sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)),
  now: () => number = Date.now,
): Promise<void> {
  const start = now();
  for (;;) {
    const values = READINESS_REGISTERS.map((reg) => read32(reg));
    if (values.every((v) => v === READY_VALUE)) return;
    if (now() - start >= opts.timeoutMs) {
      const seen = READINESS_REGISTERS.map((reg, i) => `0x${reg.toString(16)}=0x${values[i]!.toString(16)}`).join(' ');
      throw new ReadinessTimeout(
        `device not ready after ${opts.timeoutMs >= 1000 ? `${Math.round(opts.timeoutMs / 1000)} s` : `${opts.timeoutMs} ms`}: readiness registers read ${seen}, want 0x${READY_VALUE.toString(16)} (C2C link, HBM training)`,
      );
    }
    await sleep(opts.intervalMs);
  }
}
