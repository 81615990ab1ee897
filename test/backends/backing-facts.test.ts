import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { backingWarnings, charDeviceKind, openAperture, type BackingFacts } from '../../src/backends/aperture.js';

// /dev/mem itself is not on every test machine (kernels without CONFIG_DEVMEM),
// so its kind and warning are checked from the device number and the facts.
const makedev = (major: number, minor: number) => (minor & 0xff) + ((major & 0xfff) << 8) + ((minor & ~0xff) << 12);
const devMem: BackingFacts = { kind: 'dev-mem', path: '/dev/mem', numaNode: null, pageSize: 4096, cacheable: false };

describe('backing facts', () => {
  it('knows /dev/mem by its device number, whatever its path', () => {
    expect(charDeviceKind(makedev(1, 1))).toBe('dev-mem');
    expect(charDeviceKind(makedev(1, 5))).toBe('char-device');
    expect(charDeviceKind(makedev(252, 1))).toBe('char-device');
  });

  it('warns in one line on arm64 that /dev/mem is uncached, naming the better backings', () => {
    const w = backingWarnings(devMem, 'arm64');
    expect(w).toHaveLength(1);
    expect(w[0]).not.toContain('\n');
    expect(w[0]).toMatch(/^aperture \/dev\/mem: on arm64 .* uncached Device memory/);
    for (const better of ['--aperture-path /dev/daxX.Y', '--aperture-numa-node N', '--aperture-hugepages']) expect(w[0]).toContain(better);
  });

  it('does not warn elsewhere or about other backings', () => {
    expect(backingWarnings(devMem, 'x64')).toEqual([]);
    for (const kind of ['memfd', 'memfd-hugetlb', 'file', 'hugetlbfs', 'device-dax', 'char-device'] as const) {
      expect(backingWarnings({ ...devMem, kind, cacheable: true }, 'arm64')).toEqual([]);
    }
  });

  it('reports each opened backing with its kind, page size and cacheability', () => {
    const anon = openAperture({ size: 1 << 20, base: 0, pageSize: 4096, arch: 'arm64' });
    try {
      expect(anon.facts).toEqual({ kind: 'memfd', path: null, numaNode: null, pageSize: 4096, cacheable: true });
      expect(anon.warnings).toEqual([]);
    } finally {
      anon.close();
    }
    // some other character device: nobody can say how it maps
    const zero = openAperture({ size: 1 << 20, base: 0, path: '/dev/zero', pageSize: 4096, arch: 'arm64' });
    try {
      expect(zero.facts).toEqual({ kind: 'char-device', path: '/dev/zero', numaNode: null, pageSize: 4096, cacheable: null });
      expect(zero.warnings).toEqual([]);
    } finally {
      zero.close();
    }
  });

  it('never creates a missing device node as a file', () => {
    for (const p of ['/dev/nvgrace-no-such-mem', '/dev/dax99.0']) {
      expect(() => openAperture({ size: 1 << 20, base: 0, path: p, pageSize: 4096 })).toThrow(`aperture ${p} does not exist; a missing device node is not created as a file`);
      expect(fs.existsSync(p)).toBe(false);
    }
  });
});
