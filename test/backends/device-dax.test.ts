// device-dax cannot be created on this machine: the sysfs side is a fake tree,
// and /dev/zero (a character device that maps) plays the device node.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ApertureError, openAperture } from '../../src/backends/aperture.js';
import { devMajorMinor, findDaxDevice, readDaxDevice } from '../../src/backends/device-dax.js';
import { MemoryBar } from '../../src/device/memory-bar.js';
import { native } from '../../src/native/native.js';
import { mmapPastEofGap } from '../helpers/emulation.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** Writes a sysfs-like tree: files from `attrs`, symlinks from `links` (path → target). */
function tree(root: string, attrs: Record<string, string>, links: Record<string, string> = {}): void {
  for (const [p, text] of Object.entries(attrs)) {
    fs.mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
    fs.writeFileSync(path.join(root, p), text + '\n');
  }
  for (const [p, target] of Object.entries(links)) {
    fs.mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
    fs.symlinkSync(path.join(root, target), path.join(root, p));
  }
}

/** The dax bus model (Linux 5.1+): the device's node number leads to its directory. */
function busModel(root: string, devnum: string, o: { size: number; align?: number; targetNode?: number; regionAlign?: number }): void {
  const dev = 'devices/platform/hmem.0/dax0.0';
  tree(
    root,
    {
      [`${dev}/size`]: String(o.size),
      ...(o.align !== undefined ? { [`${dev}/align`]: String(o.align) } : {}),
      ...(o.targetNode !== undefined ? { [`${dev}/target_node`]: String(o.targetNode), [`${dev}/numa_node`]: '-1' } : {}),
      ...(o.regionAlign !== undefined ? { 'devices/platform/hmem.0/dax_region/align': String(o.regionAlign) } : {}),
      'bus/dax/uevent': '',
    },
    { [`dev/char/${devnum}`]: dev, [`${dev}/subsystem`]: 'bus/dax', 'bus/dax/devices/dax0.0': dev },
  );
}

describe('device-dax facts from sysfs', () => {
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-sysfs-'));
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  const zero = () => fs.statSync('/dev/zero').rdev;

  it('decodes device numbers as the kernel does', () => {
    expect(devMajorMinor(fs.statSync('/dev/null').rdev)).toEqual([1, 3]);
    expect(devMajorMinor(fs.statSync('/dev/zero').rdev)).toEqual([1, 5]);
    // glibc's makedev(0x1234, 0x56789): minor low byte, major, minor high bits, major high bits
    const rdev = 0x89 + (0x234 << 8) + (0x567 << 20) + 0x1 * 2 ** 44;
    expect(devMajorMinor(rdev)).toEqual([0x1234, 0x56789]);
  });

  it('finds a device through /sys/dev/char and reads size, alignment and node', () => {
    busModel(root, '1:5', { size: 16 * GiB, align: 2 * MiB, targetNode: 2 });
    expect(findDaxDevice(root, '/dev/zero', zero())).toEqual({
      name: 'dax0.0',
      dir: fs.realpathSync(path.join(root, 'devices/platform/hmem.0/dax0.0')),
      size: 16 * GiB,
      align: 2 * MiB,
      numaNode: 2,
    });
  });

  it('takes the region alignment when the device has none (kernels before 5.10)', () => {
    busModel(root, '1:5', { size: 4 * GiB, regionAlign: GiB });
    const dax = findDaxDevice(root, '/dev/zero', zero());
    expect(dax?.align).toBe(GiB);
    expect(dax?.numaNode).toBeNull();
  });

  it('finds a device by name in the old class model', () => {
    // no /sys/dev/char entry for its numbers: the node's name leads to /sys/class/dax
    tree(root, {
      'class/dax/dax3.1/size': String(8 * GiB),
      'class/dax/dax3.1/device/dax_region/align': String(2 * MiB),
      'class/dax/dax3.1/numa_node': '1',
      'dev/dax3.1': '',
    });
    expect(findDaxDevice(root, path.join(root, 'dev/dax3.1'), 0)).toMatchObject({ name: 'dax3.1', size: 8 * GiB, align: 2 * MiB, numaNode: 1 });
    // a link to it (as udev makes) resolves to the same name
    fs.symlinkSync(path.join(root, 'dev/dax3.1'), path.join(root, 'gpu-mem'));
    expect(findDaxDevice(root, path.join(root, 'gpu-mem'), 0)?.name).toBe('dax3.1');
  });

  it('says nothing of a character device that is not a dax (subsystem mem)', () => {
    tree(root, { 'devices/virtual/mem/zero/dev': '1:5', 'class/mem/uevent': '' }, { 'dev/char/1:5': 'devices/virtual/mem/zero', 'devices/virtual/mem/zero/subsystem': 'class/mem' });
    expect(findDaxDevice(root, '/dev/zero', zero())).toBeNull();
  });

  it('refuses a dax-named device with no sysfs entry, and unreadable or inconsistent attributes', () => {
    expect(() => findDaxDevice(root, '/dev/dax9.9', zero())).toThrow(/looks like a device-dax but sysfs has no dax9\.9/);
    tree(root, { 'd/dax0.0/size': 'lots' });
    expect(() => readDaxDevice(path.join(root, 'd/dax0.0'))).toThrow(/cannot read its size/);
    tree(root, { 'e/dax0.0/size': String(GiB) });
    expect(() => readDaxDevice(path.join(root, 'e/dax0.0'))).toThrow(/cannot read its alignment/);
    tree(root, { 'f/dax0.0/size': String(GiB), 'f/dax0.0/align': String(3 * MiB) });
    expect(() => readDaxDevice(path.join(root, 'f/dax0.0'))).toThrow(/not a power of two/);
    tree(root, { 'g/dax0.0/size': String(GiB + 4096), 'g/dax0.0/align': String(2 * MiB) });
    expect(() => readDaxDevice(path.join(root, 'g/dax0.0'))).toThrow(/not a multiple of its alignment/);
  });
});

describe('a device-dax aperture', () => {
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-sysfs-'));
    busModel(root, '1:5', { size: 64 * MiB, align: 2 * MiB, targetNode: 0 });
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('takes its size from sysfs, maps at its alignment, and is cacheable', () => {
    const ap = openAperture({ base: 4 * MiB, path: '/dev/zero', pageSize: 4096, sysfsRoot: root });
    try {
      expect(ap.kind).toBe('device-dax');
      expect(ap.facts).toEqual({ kind: 'device-dax', path: '/dev/zero', numaNode: 0, pageSize: 2 * MiB, cacheable: true });
      expect(ap.warnings).toEqual([]);
      expect(ap.memory.size).toBe(60 * MiB); // the rest of the device after the base
      expect(ap.memory.fdOffset).toBe(4 * MiB);
      expect(ap.memory.mapGranularity).toBe(2 * MiB);
    } finally {
      ap.close();
    }
  });

  // qemu-user 7.2 (the 16 KiB run) maps no file past its st_size, and /dev/zero's is 0
  it.skipIf(mmapPastEofGap() !== null)('offers the client whole aligned blocks and traps the rest through its own mapping', () => {
    const size = 10 * MiB + 12345;
    // base 0: a shared mapping of /dev/zero at a non-zero offset faults SIGBUS (a real dax maps anywhere)
    const ap = openAperture({ size, base: 0, path: '/dev/zero', pageSize: native.pageSize(), sysfsRoot: root });
    try {
      const bar = new MemoryBar(2, 16 * MiB, ap.memory, native.pageSize());
      expect(bar.mmap).toEqual({ fd: ap.memory.fd, fdOffset: 0, areas: [{ offset: 0, size: 10 * MiB }] });
      // the trailing partial block is served by the daemon (pread would fail on a real dax)
      const bytes = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
      bar.write(size - 4, bytes, 0, 8); // crosses the end of memory: 4 bytes dropped
      const back = new Uint8Array(8);
      bar.read(size - 4, back, 0, 8);
      expect([...back]).toEqual([1, 2, 3, 4, 0xff, 0xff, 0xff, 0xff]);
      expect(bar.padding.droppedBytes).toBe(4);
    } finally {
      ap.close();
    }
  });

  it('refuses a base off its alignment, a range beyond the device, hugepages and a NUMA node', () => {
    const base = { pageSize: 4096, path: '/dev/zero', sysfsRoot: root };
    expect(() => openAperture({ ...base, base: 1 * MiB })).toThrow(/not aligned to dax0\.0's 2 MiB alignment/);
    expect(() => openAperture({ ...base, base: 64 * MiB })).toThrow(/beyond the end of dax0\.0/);
    expect(() => openAperture({ ...base, base: 2 * MiB, size: 63 * MiB })).toThrow(/dax0\.0 holds 67108864 bytes; base\+size needs 68157440/);
    expect(() => openAperture({ ...base, base: 0, hugePageSize: 2 * MiB })).toThrow(ApertureError);
    expect(() => openAperture({ ...base, base: 0, numaNode: 0 })).toThrow(/does not apply to \/dev\/zero: a device-dax's memory lives where it is \(node 0\)/);
  });
});
