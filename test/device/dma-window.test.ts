import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { dmaFileOps } from '../../src/backends/client-memory.js';
import { DMA_WINDOW, DmaMapTable, type DmaFileOps } from '../../src/device/dma-maps.js';
import { MAX_MAPPING_LENGTH, native } from '../../src/native/native.js';
import { DmaMapFlag } from '../../src/wire/constants.js';

const GiB = 1024 ** 3;
const PAGE = 4096;
const RW = DmaMapFlag.READ | DmaMapFlag.WRITE;

describe('DMA maps larger than one ArrayBuffer', () => {
  const fds: number[] = [];
  afterEach(() => fds.splice(0).forEach((fd) => native.closeFd(fd)));

  it('reaches every byte of a 5 GiB map through 1 GiB windows', () => {
    expect(5 * GiB).toBeGreaterThan(MAX_MAPPING_LENGTH); // the case Node 20 cannot map whole
    const size = 5 * GiB;
    const fd = native.memfdCreate('big-guest-ram', 0);
    fds.push(fd);
    fs.ftruncateSync(fd, size); // sparse
    const table = new DmaMapTable(dmaFileOps, 16, PAGE);
    const base = 0x1_0000_0000;
    table.add(base, size, RW, fd, 0);
    const probe = (at: number, bytes: number[]) => {
      table.view(base + at, bytes.length, true).set(bytes);
      const back = Buffer.alloc(bytes.length);
      fs.readSync(fd, back, 0, bytes.length, at);
      expect([...back], `at 0x${at.toString(16)}`).toEqual(bytes);
      expect([...table.view(base + at, bytes.length, false)]).toEqual(bytes);
    };
    probe(0, [1, 2, 3]);
    probe(4 * GiB + 0x1234, [4, 5, 6, 7]); // beyond 4 GiB
    probe(4 * GiB - 4, [8, 9, 10, 11, 12, 13, 14, 15]); // across the 4 GiB line
    probe(size - 8, [16, 17, 18, 19, 20, 21, 22, 23]); // the last bytes
    probe(2 * GiB - 2, [24, 25, 26, 27]); // across a window step
    expect(table.list()[0]!.memory!.byteLength).toBeLessThanOrEqual(DMA_WINDOW);
    table.clear();
    expect(table.heldFds).toBe(0);
    fds.pop(); // closed by the table
  });

  it('maps small maps whole, once, and windows big ones with one live mapping each', () => {
    const maps: { offset: number; size: number }[] = [];
    const unmapped: ArrayBuffer[] = [];
    const ops: DmaFileOps = {
      check() {},
      map(_fd, offset, size) {
        maps.push({ offset, size });
        return new ArrayBuffer(size);
      },
      unmap(m) {
        unmapped.push(m);
      },
      close() {},
    };
    const win = 64 * PAGE;
    const table = new DmaMapTable(ops, 16, PAGE, null, undefined, win);
    table.add(0, 8 * PAGE, RW, 100, 0);
    table.view(0, 4, false);
    table.view(7 * PAGE, 4, false);
    expect(maps).toEqual([{ offset: 0, size: 8 * PAGE }]);

    table.add(0x100000, 1024 * PAGE, RW, 101, 2 * PAGE);
    table.view(0x100000 + 100 * PAGE, 8, true);
    // window starts on a step (a quarter window) at or below the access, at file offset + start
    expect(maps[1]).toEqual({ offset: 2 * PAGE + 96 * PAGE, size: win });
    table.view(0x100000 + 110 * PAGE, 8, true); // inside: no new mapping
    expect(maps).toHaveLength(2);
    table.view(0x100000 + 1023 * PAGE, 8, true); // the tail: a short window, the old one unmapped
    expect(maps[2]).toEqual({ offset: 2 * PAGE + 1008 * PAGE, size: 16 * PAGE });
    expect(unmapped).toHaveLength(1);
    expect(() => table.view(0x100000, win, false)).toThrow(/larger than a window/);
  });
});
