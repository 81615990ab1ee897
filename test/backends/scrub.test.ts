import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openAperture, type Aperture } from '../../src/backends/aperture.js';
import { scrubAperture } from '../../src/backends/scrub.js';

describe('scrubAperture', () => {
  let dir: string;
  let ap: Aperture | null = null;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-scrub-'));
  });
  afterEach(() => {
    ap?.close();
    ap = null;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('zeroes exactly the memory of a file backing, leaving bytes outside it alone', async () => {
    const file = path.join(dir, 'ap');
    const base = 4096;
    const size = 600 * 1024 * 1024 + 123; // several windows and a ragged end
    const total = base + size + 4096;
    fs.writeFileSync(file, Buffer.alloc(0));
    fs.truncateSync(file, total);
    const fd = fs.openSync(file, 'r+');
    const marks = [0, base - 1, base, base + 1000, base + 300 * 1024 * 1024, base + size - 1, base + size, total - 1];
    for (const m of marks) fs.writeSync(fd, Buffer.from([0xab]), 0, 1, m);
    fs.closeSync(fd);
    ap = openAperture({ size, base, path: file, pageSize: 4096 });
    const seen: number[] = [];
    expect(await scrubAperture(ap, (p) => seen.push(p.done))).toBe('done');
    expect(seen.at(-1)).toBe(size);
    expect(seen.length).toBeGreaterThan(1);
    const rfd = fs.openSync(file, 'r');
    const one = Buffer.alloc(1);
    const at = (o: number) => (fs.readSync(rfd, one, 0, 1, o), one[0]);
    expect(at(0)).toBe(0xab);
    expect(at(base - 1)).toBe(0xab);
    expect(at(base)).toBe(0);
    expect(at(base + 1000)).toBe(0);
    expect(at(base + 300 * 1024 * 1024)).toBe(0);
    expect(at(base + size - 1)).toBe(0);
    expect(at(base + size)).toBe(0xab);
    expect(at(total - 1)).toBe(0xab);
    fs.closeSync(rfd);
  });

  it('zeroes a memfd and stops early when asked', async () => {
    ap = openAperture({ size: 1024 * 1024 * 1024, base: 0, pageSize: 4096 });
    ap.memory.write(5, Buffer.from([1, 2, 3]), 0, 3);
    let calls = 0;
    expect(await scrubAperture(ap, () => calls++, () => calls >= 1)).toBe('stopped');
    expect(calls).toBe(1);
    const out = Buffer.alloc(3);
    ap.memory.read(5, out, 0, 3);
    expect([...out]).toEqual([0, 0, 0]); // the first window was done
  });
});
