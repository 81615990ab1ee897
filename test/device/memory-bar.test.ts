import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryBar } from '../../src/device/memory-bar.js';
import { alignDown, alignUp } from '../../src/common/arith.js';
import { subtractArea } from '../../src/device/region.js';
import { FakeMemory } from './fakes.js';

const PAGE = 4096;
const MiB = 1024 * 1024;

/** 10000 bytes of patterned memory behind a 16 KiB BAR. */
function small() {
  const memory = new FakeMemory(10000, 42).pattern();
  const bar = new MemoryBar(2, 16384, memory, PAGE);
  return { memory, bar };
}

function read(bar: MemoryBar, offset: number, count: number): number[] {
  const dst = new Uint8Array(count + 2).fill(0x5a);
  bar.read(offset, dst, 1, count);
  // Nothing outside [dstOffset, dstOffset+count) is touched.
  expect(dst[0]).toBe(0x5a);
  expect(dst[count + 1]).toBe(0x5a);
  return [...dst.subarray(1, count + 1)];
}

function write(bar: MemoryBar, offset: number, bytes: number[]): void {
  const src = Uint8Array.from([0xee, ...bytes, 0xee]);
  bar.write(offset, src, 1, bytes.length);
}

const ones = (n: number) => new Array<number>(n).fill(0xff);

describe('MemoryBar reads', () => {
  it('inside memory return the backing bytes', () => {
    const { memory, bar } = small();
    expect(read(bar, 0, 8)).toEqual(memory.peek(0, 8));
    expect(read(bar, 4093, 6)).toEqual(memory.peek(4093, 6));
    expect(read(bar, 9992, 8)).toEqual(memory.peek(9992, 8));
    expect(read(bar, 9999, 1)).toEqual(memory.peek(9999, 1));
  });

  it.each([1, 2, 4, 8])('in the padding return all ones at width %i without touching the backing', (width) => {
    const { memory, bar } = small();
    for (const offset of [10000, 10000 + width, 12288, 16384 - width]) {
      expect(read(bar, offset, width)).toEqual(ones(width));
    }
    expect(memory.reads).toEqual([]);
  });

  it('straddling the end of memory return the real bytes, then all ones', () => {
    const { memory, bar } = small();
    expect(read(bar, 9996, 8)).toEqual([...memory.peek(9996, 4), ...ones(4)]);
    expect(read(bar, 9999, 2)).toEqual([...memory.peek(9999, 1), 0xff]);
    expect(memory.reads).toEqual([
      { offset: 9996, count: 4 },
      { offset: 9999, count: 1 },
    ]);
  });

  it('a large read over the whole BAR', () => {
    const { memory, bar } = small();
    expect(read(bar, 0, 16384)).toEqual([...memory.peek(0, 10000), ...ones(6384)]);
  });

  it('with no memory at all everything is padding', () => {
    const bar = new MemoryBar(2, 4096, new FakeMemory(0), PAGE);
    expect(read(bar, 0, 8)).toEqual(ones(8));
    expect(bar.mmap).toBeNull();
  });
});

describe('MemoryBar writes', () => {
  it('inside memory reach the backing and are not counted', () => {
    const { memory, bar } = small();
    write(bar, 9992, [1, 2, 3, 4, 5, 6, 7, 8]);
    expect(memory.peek(9992, 8)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(read(bar, 9992, 8)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(bar.padding).toEqual({ droppedWrites: 0, droppedBytes: 0 });
  });

  it.each([1, 2, 4, 8])('in the padding are dropped and counted at width %i', (width) => {
    const { memory, bar } = small();
    write(bar, 10000, ones(width).map(() => 0));
    write(bar, 16384 - width, ones(width).map(() => 0x11));
    expect(memory.writes).toEqual([]);
    expect(bar.padding).toEqual({ droppedWrites: 2, droppedBytes: 2 * width });
    // Still all ones afterwards.
    expect(read(bar, 10000, width)).toEqual(ones(width));
    expect(read(bar, 16384 - width, width)).toEqual(ones(width));
  });

  it('straddling the end write only the real part and count the rest', () => {
    const { memory, bar } = small();
    const before = memory.peek(9990, 10);
    write(bar, 9997, [0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8]);
    expect(memory.writes).toEqual([{ offset: 9997, count: 3 }]);
    expect(memory.peek(9990, 10)).toEqual([...before.slice(0, 7), 0xa1, 0xa2, 0xa3]);
    expect(bar.padding).toEqual({ droppedWrites: 1, droppedBytes: 5 });
    expect(read(bar, 9997, 8)).toEqual([0xa1, 0xa2, 0xa3, ...ones(5)]);
  });
});

describe('MemoryBar mmap areas', () => {
  it('cover the whole pages of memory only', () => {
    const { bar } = small();
    expect(bar.mmap).toEqual({ fd: 42, fdOffset: 0, areas: [{ offset: 0, size: 8192 }] });
  });

  it('pass the fd offset of the backing', () => {
    const bar = new MemoryBar(2, 16384, new FakeMemory(16384, 7, 0x20000), PAGE);
    expect(bar.mmap).toEqual({ fd: 7, fdOffset: 0x20000, areas: [{ offset: 0, size: 16384 }] });
  });

  it('96 MiB + 100 bytes in a 128 MiB BAR: 96 MiB mappable', () => {
    const bar = new MemoryBar(2, 128 * MiB, new FakeMemory(96 * MiB + 100), PAGE);
    expect(bar.mmap?.areas).toEqual([{ offset: 0, size: 96 * MiB }]);
  });

  it('none when memory is less than one page', () => {
    expect(new MemoryBar(2, 4096, new FakeMemory(4095), PAGE).mmap).toBeNull();
    expect(new MemoryBar(2, 4096, new FakeMemory(4096), PAGE).mmap?.areas).toEqual([{ offset: 0, size: 4096 }]);
  });

  it('none when the backing fd offset is not page aligned', () => {
    expect(new MemoryBar(2, 16384, new FakeMemory(16384, 7, 100), PAGE).mmap).toBeNull();
  });

  it('a trapped window at the end is cut out', () => {
    const bar = new MemoryBar(0, 64 * 1024, new FakeMemory(64 * 1024), PAGE, [0xc000, 0x10000]);
    expect(bar.mmap?.areas).toEqual([{ offset: 0, size: 0xc000 }]);
  });

  it('a trapped window in the middle splits the area, rounded out to pages', () => {
    const bar = new MemoryBar(0, 64 * 1024, new FakeMemory(64 * 1024), PAGE, [0x4100, 0x4200]);
    expect(bar.mmap?.areas).toEqual([
      { offset: 0, size: 0x4000 },
      { offset: 0x5000, size: 0xb000 },
    ]);
  });

  it('a trapped window beyond the mappable memory changes nothing', () => {
    const bar = new MemoryBar(2, 16384, new FakeMemory(10000), PAGE, [12288, 16384]);
    expect(bar.mmap?.areas).toEqual([{ offset: 0, size: 8192 }]);
  });

  it('a trapped window over all the memory leaves nothing to map', () => {
    const bar = new MemoryBar(0, 64 * 1024, new FakeMemory(64 * 1024), PAGE, [0, 64 * 1024]);
    expect(bar.mmap).toBeNull();
  });

  it('accesses in the trapped window still reach the memory', () => {
    const memory = new FakeMemory(64 * 1024).pattern();
    const bar = new MemoryBar(0, 64 * 1024, memory, PAGE, [0xc000, 0x10000]);
    expect(read(bar, 0xc000, 4)).toEqual(memory.peek(0xc000, 4));
    write(bar, 0xfffc, [1, 2, 3, 4]);
    expect(memory.peek(0xfffc, 4)).toEqual([1, 2, 3, 4]);
  });
});

describe('MemoryBar construction', () => {
  it('refuses memory larger than the BAR', () => {
    expect(() => new MemoryBar(2, 4096, new FakeMemory(4097), PAGE)).toThrow(/exceeds/);
  });

  it('states its index and size and is read-write', () => {
    const { bar } = small();
    expect(bar.index).toBe(2);
    expect(bar.size).toBe(16384);
    expect(bar.readable && bar.writable).toBe(true);
  });
});

describe('MemoryBar against a model', () => {
  it('reads and writes anywhere in the BAR behave like memory followed by all-ones padding', () => {
    const memSize = 5000;
    const barSize = 8192;
    const op = fc
      .record({ offset: fc.nat({ max: barSize - 1 }), count: fc.integer({ min: 1, max: 64 }), write: fc.boolean(), value: fc.nat({ max: 255 }) })
      .map((o) => ({ ...o, count: Math.min(o.count, barSize - o.offset) }));
    fc.assert(
      fc.property(fc.array(op, { maxLength: 20 }), (ops) => {
        const memory = new FakeMemory(memSize);
        const bar = new MemoryBar(2, barSize, memory, PAGE);
        const model = new Uint8Array(memSize);
        let droppedWrites = 0;
        let droppedBytes = 0;
        for (const o of ops) {
          if (o.write) {
            const data = new Uint8Array(o.count).fill(o.value);
            bar.write(o.offset, data, 0, o.count);
            const real = Math.max(0, Math.min(o.count, memSize - o.offset));
            model.fill(o.value, o.offset, o.offset + real);
            if (real < o.count) {
              droppedWrites++;
              droppedBytes += o.count - real;
            }
          } else {
            const dst = new Uint8Array(o.count);
            bar.read(o.offset, dst, 0, o.count);
            const expected = Array.from({ length: o.count }, (_, i) => (o.offset + i < memSize ? model[o.offset + i]! : 0xff));
            expect([...dst]).toEqual(expected);
          }
        }
        expect(bar.padding).toEqual({ droppedWrites, droppedBytes });
      }),
      { numRuns: 300 },
    );
  });
});

describe('region helpers', () => {
  it('alignDown / alignUp', () => {
    expect(alignDown(10000, 4096)).toBe(8192);
    expect(alignDown(8192, 4096)).toBe(8192);
    expect(alignUp(10000, 4096)).toBe(12288);
    expect(alignUp(8192, 4096)).toBe(8192);
    expect(alignUp(2 ** 40 + 1, 4096)).toBe(2 ** 40 + 4096);
  });

  it('subtractArea keeps, trims, splits and removes', () => {
    const a = [{ offset: 0x1000, size: 0x4000 }];
    expect(subtractArea(a, 0x6000, 0x7000)).toEqual(a);
    expect(subtractArea(a, 0x0, 0x1000)).toEqual(a);
    expect(subtractArea(a, 0x5000, 0x6000)).toEqual(a);
    expect(subtractArea(a, 0x0, 0x2000)).toEqual([{ offset: 0x2000, size: 0x3000 }]);
    expect(subtractArea(a, 0x4000, 0x9000)).toEqual([{ offset: 0x1000, size: 0x3000 }]);
    expect(subtractArea(a, 0x2000, 0x3000)).toEqual([
      { offset: 0x1000, size: 0x1000 },
      { offset: 0x3000, size: 0x2000 },
    ]);
    expect(subtractArea(a, 0x0, 0x9000)).toEqual([]);
  });
});
