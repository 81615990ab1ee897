import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { native } from '../../src/native/native.js';
import { ProcessWatch } from '../../src/server/process-watch.js';
import { isCloexec } from './helpers.js';

describe('pidfd', () => {
  it('opens a close-on-exec pidfd that becomes readable when the process exits', async () => {
    const child = spawn('sleep', ['30']);
    const fd = native.pidfdOpen(child.pid!);
    expect(isCloexec(fd)).toBe(true);
    let fired = 0;
    const p = native.createPoller(fd, () => fired++);
    p.start(native.READABLE);
    await new Promise((r) => setTimeout(r, 50));
    expect(fired).toBe(0);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    await new Promise((r) => setTimeout(r, 20));
    expect(fired).toBeGreaterThan(0);
    p.close();
    native.closeFd(fd);
  });

  it('throws ESRCH for a process that does not exist', () => {
    expect(() => native.pidfdOpen(0x3fffffff)).toThrow(expect.objectContaining({ code: 'ESRCH' }));
  });

  it('ProcessWatch: resolves true on exit, false on timeout or close, and closes its fd', async () => {
    const fds = native.fdCount();
    const child = spawn('sleep', ['30']);
    const w = ProcessWatch.open(child.pid!);
    if (w instanceof Error) throw w;
    expect(await w.whenExited(30)).toBe(false);
    const exited = w.whenExited(5000);
    child.kill('SIGKILL');
    expect(await exited).toBe(true);
    expect(w.exited).toBe(true);
    await new Promise((r) => setTimeout(r, 20));
    expect(native.fdCount()).toBe(fds);
    const other = spawn('sleep', ['30']);
    const w2 = ProcessWatch.open(other.pid!) as ProcessWatch;
    const pending = w2.whenExited(5000);
    w2.close();
    expect(await pending).toBe(false);
    other.kill('SIGKILL');
    await new Promise((r) => other.once('exit', r));
    expect(ProcessWatch.open(0x3fffffff)).toBeInstanceOf(Error);
  });
});
