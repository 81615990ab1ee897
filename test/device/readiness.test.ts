import { describe, expect, it } from 'vitest';
import { READINESS_REGISTERS, ReadinessTimeout, readinessApplies, waitReady } from '../../src/device/readiness.js';

/** A clock that only moves when the wait sleeps. */
function fakeTime() {
  let t = 0;
  const sleeps: number[] = [];
  return {
    sleeps,
    now: () => t,
    sleep: async (ms: number) => {
      sleeps.push(ms);
      t += ms;
    },
  };
}

describe('GPU readiness wait', () => {
  it('applies to NVIDIA devices in auto mode, always when on, never when off', () => {
    expect(readinessApplies('auto', 0x10de)).toBe(true);
    expect(readinessApplies('auto', 0x1234)).toBe(false);
    expect(readinessApplies('on', 0x1234)).toBe(true);
    expect(readinessApplies('off', 0x10de)).toBe(false);
  });

  it('polls both registers once a second until both read 0xFF', async () => {
    const clock = fakeTime();
    const reads: number[] = [];
    // the C2C link comes up after 3 s, HBM training after 5 s
    const read32 = (offset: number) => {
      reads.push(offset);
      const up = offset === 0x1498 ? 3000 : 5000;
      return clock.now() >= up ? 0xff : 0;
    };
    await waitReady(read32, { timeoutMs: 30_000, intervalMs: 1000 }, clock.sleep, clock.now);
    expect(clock.sleeps).toEqual([1000, 1000, 1000, 1000, 1000]);
    expect(new Set(reads)).toEqual(new Set(READINESS_REGISTERS));
    expect(reads.length).toBe(12); // six polls of two registers
  });

  it('returns at once when the device is ready', async () => {
    const clock = fakeTime();
    await waitReady(() => 0xff, { timeoutMs: 30_000, intervalMs: 1000 }, clock.sleep, clock.now);
    expect(clock.sleeps).toEqual([]);
  });

  it('gives up after the timeout with the values it saw', async () => {
    const clock = fakeTime();
    const err = await waitReady((o) => (o === 0x1498 ? 0xff : 0x3), { timeoutMs: 30_000, intervalMs: 1000 }, clock.sleep, clock.now).catch((e: Error) => e);
    expect(err).toBeInstanceOf(ReadinessTimeout);
    expect((err as Error).message).toBe(
      'device not ready after 30 s: readiness registers read 0x1498=0xff 0x200bc=0x3, want 0xff (C2C link, HBM training)',
    );
    expect(clock.now()).toBe(30_000);
  });

  it('does not block the event loop while it waits', async () => {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    let ready = false;
    setTimeout(() => (ready = true), 60);
    await waitReady(() => (ready ? 0xff : 0), { timeoutMs: 5000, intervalMs: 10 });
    clearInterval(timer);
    expect(ticks).toBeGreaterThan(5);
  });
});
