import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../src/native/native.js';
import { Listener } from '../../src/transport/listener.js';
import { sleep, waitFor } from '../native/helpers.js';
import { openFileLimit, setOpenFileLimit } from '../helpers/limits.js';

describe('listener out of file descriptors', () => {
  const cleanup: (() => void)[] = [];
  afterEach(() => {
    for (const f of cleanup.splice(0).reverse()) f();
  });

  it('backs off on EMFILE instead of spinning, reports once, and accepts the waiting client later', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-emfile-'));
    cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const errors: Error[] = [];
    const recovered: number[] = [];
    const accepted: number[] = [];
    const l = Listener.open(
      path.join(dir, 's.sock'),
      0o600,
      (fd) => accepted.push(fd),
      (err) => errors.push(err),
      (n) => recovered.push(n),
    );
    cleanup.push(() => l.close());

    // Lower our own soft limit a little above what is open, then use up the rest.
    const before = openFileLimit();
    setOpenFileLimit(native.fdCount() + 32);
    cleanup.push(() => setOpenFileLimit(before.soft));
    const fillers: number[] = [];
    cleanup.push(() => fillers.forEach((fd) => native.closeFd(fd)));
    for (;;) {
      try {
        fillers.push(native.eventfd(0, 0));
      } catch (err) {
        expect((err as { code?: string }).code).toBe('EMFILE');
        break;
      }
    }
    // One free slot: the client's end of the connection takes it; accept() then has none.
    native.closeFd(fillers.pop()!);
    const client = native.connectUnix(path.join(dir, 's.sock'));
    cleanup.push(() => native.closeFd(client));

    await sleep(800);
    expect(accepted).toEqual([]);
    expect(errors).toHaveLength(1);
    expect((errors[0] as { code?: string }).code).toBe('EMFILE');
    // A spinning listener retries thousands of times in this time; ours waits between tries.
    expect(l.acceptFailures).toBeGreaterThanOrEqual(1);
    expect(l.acceptFailures).toBeLessThanOrEqual(8);

    for (const fd of fillers.splice(0)) native.closeFd(fd);
    await waitFor(() => accepted.length === 1, 3000);
    cleanup.push(() => native.closeFd(accepted[0]!));
    expect(recovered).toHaveLength(1);
    expect(recovered[0]).toBeGreaterThanOrEqual(1);
    expect(l.acceptFailures).toBe(0);
  });

  it('stays paused across a back-off when its owner paused it', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-pause-'));
    cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const accepted: number[] = [];
    const l = Listener.open(path.join(dir, 's.sock'), 0o600, (fd) => accepted.push(fd), () => {});
    cleanup.push(() => l.close());
    l.pause();
    const client = native.connectUnix(path.join(dir, 's.sock'));
    cleanup.push(() => native.closeFd(client));
    await sleep(50);
    expect(accepted).toEqual([]);
    l.resume();
    await waitFor(() => accepted.length === 1);
    native.closeFd(accepted[0]!);
  });
});
