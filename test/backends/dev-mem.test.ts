import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkDevMemRange, devMemCacheable, DEV_MEM_PROBE_STRIDE, iomemNameAt, readIomem, type DevMemProbe } from '../../src/backends/dev-mem.js';

// The real kernel's answers are seen in test/guest/kernel-mem-guest.test.ts; here the
// probe is a stand-in that refuses the pages a fake System RAM covers.
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

function refusing(ramStart: number, ramEnd: number, seen: number[] = []): DevMemProbe {
  return (_fd, at) => {
    seen.push(at);
    if (at >= ramStart && at < ramEnd) throw Object.assign(new Error('mmap: EPERM'), { errno: -1, code: 'EPERM', syscall: 'mmap' });
  };
}

const IOMEM = `00000000-00000fff : Reserved
00001000-0009fbff : System RAM
00100000-1fffffff : System RAM
  01000000-01ffffff : Kernel code
20000000-20ffffff : Reserved
21000000-3ffdffff : System RAM
`;

describe('/dev/mem range check', () => {
  it('probes the first page, one per 128 MiB and the last page, and accepts a range the kernel allows', () => {
    const seen: number[] = [];
    checkDevMemRange('/dev/mem', 3, 4 * GiB, GiB + 4096 + 100, 4096, refusing(0, 0, seen), () => []);
    expect(seen[0]).toBe(4 * GiB);
    expect(seen.at(-1)).toBe(5 * GiB + 4096);
    expect(seen).toHaveLength(GiB / DEV_MEM_PROBE_STRIDE + 2);
    const one: number[] = [];
    checkDevMemRange('/dev/mem', 3, 0x20000000, 4096, 4096, refusing(0, 0, one), () => []);
    expect(one).toEqual([0x20000000]);
  });

  it('refuses System RAM anywhere in the range in one line that names what is there and the better backings', () => {
    const iomem = () => {
      const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'iomem-')), 'iomem');
      fs.writeFileSync(f, IOMEM);
      return readIomem(f);
    };
    // RAM in the middle of the range, between the first and last page
    let msg = '';
    try {
      checkDevMemRange('/dev/mem', 3, 0x20000000 - 256 * MiB, 512 * MiB, 4096, refusing(0x10000000, 0x20000000), iomem);
    } catch (err) {
      msg = (err as Error).message;
    }
    expect(msg).not.toContain('\n');
    expect(msg).toMatch(/^aperture \/dev\/mem: the kernel refuses to map physical address 0x10000000 \(STRICT_DEVMEM: System RAM in \/proc\/iomem\)/);
    for (const better of ['--aperture-path /dev/daxX.Y', '--aperture-numa-node N']) expect(msg).toContain(better);
    // without CAP_SYS_ADMIN /proc/iomem has no addresses: the line says what it may be
    expect(() => checkDevMemRange('/dev/mem', 3, 0x10000000, 4096, 4096, refusing(0x10000000, 0x20000000), () => [])).toThrow(
      /STRICT_DEVMEM: System RAM, or a range a driver holds\)/,
    );
  });

  it('reads /proc/iomem only when it shows addresses', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iomem-'));
    fs.writeFileSync(path.join(dir, 'hidden'), IOMEM.replace(/[0-9a-f]{8}-[0-9a-f]{8}/g, '00000000-00000000'));
    fs.writeFileSync(path.join(dir, 'shown'), IOMEM);
    expect(readIomem(path.join(dir, 'hidden'))).toEqual([]);
    expect(readIomem(path.join(dir, 'missing'))).toEqual([]);
    const entries = readIomem(path.join(dir, 'shown'));
    expect(iomemNameAt(entries, 0x20000000)).toBe('Reserved');
    expect(iomemNameAt(entries, 0x01800000)).toBe('System RAM');
    expect(iomemNameAt(entries, 0x50000000)).toBeNull();
  });

  it('passes on errors other than a refusal', () => {
    const boom: DevMemProbe = () => {
      throw Object.assign(new Error('mmap: ENOMEM'), { errno: -12, code: 'ENOMEM', syscall: 'mmap' });
    };
    expect(() => checkDevMemRange('/dev/mem', 3, 0, 4096, 4096, boom, () => [])).toThrow(/ENOMEM/);
  });

  it('says /dev/mem is uncached on arm64 and cannot tell on x86 (PAT write-back, MTRRs decide)', () => {
    expect(devMemCacheable('arm64')).toBe(false);
    expect(devMemCacheable('x64')).toBeNull();
  });
});
