import { describe, expect, it } from 'vitest';
import type { MemoryBacking } from '../../src/device/memory-bar.js';
import { MemoryBar } from '../../src/device/memory-bar.js';
import { MemorySlice, sliceMemory } from '../../src/device/memory-slice.js';

function bufferMemory(size: number, fdOffset: number): MemoryBacking & { buf: Buffer } {
  const buf = Buffer.alloc(size);
  return {
    buf,
    size,
    fd: 7,
    fdOffset,
    read: (o, dst, d, n) => void buf.copy(dst, d, o, o + n),
    write: (o, src, s, n) => void Buffer.from(src.buffer, src.byteOffset + s, n).copy(buf, o),
  };
}

describe('MemorySlice', () => {
  it('is a window of the parent: same fd, later file offset, shifted accesses', () => {
    const parent = bufferMemory(64, 4096);
    const s = new MemorySlice(parent, 16, 32);
    expect([s.fd, s.fdOffset, s.size]).toEqual([7, 4096 + 16, 32]);
    s.write(2, Uint8Array.of(0xaa, 0xbb), 0, 2);
    expect([...parent.buf.subarray(18, 20)]).toEqual([0xaa, 0xbb]);
    parent.buf[47] = 0x42;
    const out = new Uint8Array(1);
    s.read(31, out, 0, 1);
    expect(out[0]).toBe(0x42);
  });

  it('refuses a window outside the parent', () => {
    const parent = bufferMemory(64, 0);
    expect(() => new MemorySlice(parent, 32, 33)).toThrow(/outside memory of 64 bytes/);
    expect(() => new MemorySlice(parent, -1, 4)).toThrow();
    expect(() => new MemorySlice(parent, 0, 0)).toThrow();
  });

  it('sliceMemory hands back the parent for the whole of it', () => {
    const parent = bufferMemory(64, 0);
    expect(sliceMemory(parent, 0, 64)).toBe(parent);
    expect(sliceMemory(parent, 0, 32)).toBeInstanceOf(MemorySlice);
  });

  it('keeps the parent\'s mapping granularity, so a slice of huge pages maps in huge pages', () => {
    const MiB = 1024 * 1024;
    const parent = { ...bufferMemory(16, 0), size: 64 * MiB, mapGranularity: 2 * MiB };
    const s = new MemorySlice(parent, 8 * MiB, 9 * MiB);
    expect(s.mapGranularity).toBe(2 * MiB);
    expect(new MemoryBar(2, 16 * MiB, s, 4096).mmap).toEqual({ fd: 7, fdOffset: 8 * MiB, areas: [{ offset: 0, size: 8 * MiB }] });
    // a slice starting off a huge page cannot be mapped at all: it is served trapped
    expect(new MemoryBar(2, 16 * MiB, new MemorySlice(parent, MiB, 9 * MiB), 4096).mmap).toBeNull();
  });
});
