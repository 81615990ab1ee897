// describe reports what the backing is (kind, NUMA node, page size, cacheable) without
// opening, creating or allocating anything.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { previewBacking } from '../../src/backends/backing-preview.js';
import { describeFromFlags, numaLayout } from '../../src/orchestration/description.js';
import { runCli } from '../helpers/cli.js';
import { native } from '../../src/native/native.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const flags = { apertureBase: 0, bar0: { kind: 'emulated' as const }, vendorId: 0x10de };

describe('backing facts without opening the backing', () => {
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-sysfs-'));
    // /dev/zero's numbers (1:5) as a 4 GiB device-dax with 1 GiB alignment on node 1
    const dev = path.join(root, 'devices/platform/hmem.0/dax0.0');
    fs.mkdirSync(dev, { recursive: true });
    fs.mkdirSync(path.join(root, 'bus/dax'), { recursive: true });
    fs.mkdirSync(path.join(root, 'dev/char'), { recursive: true });
    fs.writeFileSync(path.join(dev, 'size'), `${4 * GiB}\n`);
    fs.writeFileSync(path.join(dev, 'align'), `${GiB}\n`);
    fs.writeFileSync(path.join(dev, 'target_node'), '1\n');
    fs.symlinkSync(path.join(root, 'bus/dax'), path.join(dev, 'subsystem'));
    fs.symlinkSync(dev, path.join(root, 'dev/char/1:5'));
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('previews every kind of backing', () => {
    expect(previewBacking({ base: 0 })).toEqual({
      facts: { kind: 'memfd', path: null, numaNode: null, pageSize: native.pageSize(), cacheable: true },
      exists: true,
      size: 96 * MiB,
    });
    expect(previewBacking({ base: 0, size: GiB, hugePageSize: 2 * MiB, numaNode: 0 }).facts).toEqual({
      kind: 'memfd-hugetlb',
      path: null,
      numaNode: 0,
      pageSize: 2 * MiB,
      cacheable: true,
    });
    expect(previewBacking({ base: GiB, path: '/dev/zero', sysfsRoot: root })).toEqual({
      facts: { kind: 'device-dax', path: '/dev/zero', numaNode: 1, pageSize: GiB, cacheable: true },
      exists: true,
      size: 3 * GiB, // the rest of the device after the base
    });
    expect(previewBacking({ base: 0, path: '/dev/zero' }).facts.cacheable).toBeNull();
    const missing = path.join(root, 'not-yet');
    expect(previewBacking({ base: 0, path: missing })).toMatchObject({ exists: false, facts: { kind: 'file', pageSize: native.pageSize() } });
    expect(fs.existsSync(missing)).toBe(false);
  });

  it('describe sizes a device-dax from sysfs and reports its node and alignment', () => {
    const d = describeFromFlags({ ...flags, aperturePath: '/dev/zero', sysfsRoot: root }, numaLayout(8, 1));
    expect(d.coherentMemory).toMatchObject({
      memoryBytes: 4 * GiB,
      barBytes: 4 * GiB,
      backing: { kind: 'device-dax', path: '/dev/zero', base: 0, numaNode: 1, pageSize: GiB, cacheable: true },
    });
  });

  it('describe on the command line reports huge pages bound to a node', async () => {
    const r = await runCli(['describe', '--aperture-hugepages', '2M', '--aperture-numa-node', '0', '--aperture-size', '1G']);
    expect(r.code, r.stderr).toBe(0);
    const d = JSON.parse(r.stdout);
    expect(d.coherentMemory.backing).toEqual({ kind: 'memfd-hugetlb', path: null, base: 0, numaNode: 0, pageSize: 2 * MiB, cacheable: true });
    expect(d.coherentMemory.memoryBytes).toBe(GiB);
  });
});
