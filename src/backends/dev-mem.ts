import fs from 'node:fs';
import { isSyscallError, native } from '../native/native.js';

/**
 * RAM is onlined in memory blocks of at least 128 MiB (x86-64, and arm64 with
 * 4 KiB pages), so one probed page per 128 MiB finds any System RAM in a range.
 */
export const DEV_MEM_PROBE_STRIDE = 128 * 1024 * 1024;

/** Tries to map one page of /dev/mem at a physical address; throws the kernel's error. */
export type DevMemProbe = (fd: number, physAddr: number, pageSize: number) => void;

/**
 * mmap asks the kernel exactly what QEMU's mmap of the same fd will ask
 * (STRICT_DEVMEM's per-page check) without reading or writing the memory;
 * the page tables it fills for one page are dropped at once.
 */
export const mmapProbe: DevMemProbe = (fd, physAddr, pageSize) => {
  const at = native.mmapAddress(fd, pageSize, native.PROT_READ | native.PROT_WRITE, native.MAP_SHARED, physAddr);
  native.munmapAddress(at, pageSize);
};

/**
 * Whether /dev/mem maps a range cacheable. arm64 maps a range outside the kernel's
 * linear map (all that STRICT_DEVMEM lets through) as Device memory: uncached. x86
 * maps it write-back in the PAT (seen in the guest test) unless the fd is O_SYNC, but
 * the MTRRs still decide: uncached for a device's MMIO range, cached for DRAM the
 * kernel was told to leave alone (memmap=SIZE$ADDR). So: no, or cannot tell.
 */
export function devMemCacheable(arch: string): boolean | null {
  return arch === 'arm64' ? false : null;
}

/** One /proc/iomem line: a physical range and what the kernel says it is. */
export interface IomemEntry {
  start: number;
  end: number;
  name: string;
  depth: number;
}

/** /proc/iomem as entries; empty when unreadable or when it hides the addresses (no CAP_SYS_ADMIN). */
export function readIomem(file = '/proc/iomem'): IomemEntry[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: IomemEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\s*)([0-9a-f]+)-([0-9a-f]+) : (.*)$/i.exec(line);
    if (!m) continue;
    out.push({ depth: m[1]!.length / 2, start: Number.parseInt(m[2]!, 16), end: Number.parseInt(m[3]!, 16), name: m[4]!.trim() });
  }
  // without CAP_SYS_ADMIN every range reads 00000000-00000000
  return out.some((e) => e.end !== 0) ? out : [];
}

/** What /proc/iomem says is at a physical address (its top-level entry), or null. */
export function iomemNameAt(entries: readonly IomemEntry[], addr: number): string | null {
  const top = entries.find((e) => e.depth === 0 && e.start <= addr && addr <= e.end);
  return top ? top.name : null;
}

const hex = (n: number) => `0x${n.toString(16)}`;

/**
 * Refuses at start, in one line, a /dev/mem range the kernel will not let a
 * client map (STRICT_DEVMEM: System RAM, or a range a driver holds exclusively).
 * Without this the daemon starts, and QEMU's mmap of BAR2 fails with EPERM.
 * Probes the first and last page and one page per 128 MiB between them.
 */
export function checkDevMemRange(
  path: string,
  fd: number,
  base: number,
  size: number,
  pageSize: number,
  probe: DevMemProbe = mmapProbe,
  iomem: () => IomemEntry[] = readIomem,
): void {
  const last = Math.floor((base + size - 1) / pageSize) * pageSize;
  for (let at = base; ; at = Math.min(at + DEV_MEM_PROBE_STRIDE, last)) {
    try {
      probe(fd, at, pageSize);
    } catch (err) {
      if (isSyscallError(err, 'EPERM')) {
        const name = iomemNameAt(iomem(), at);
        const what = name === null ? 'System RAM, or a range a driver holds' : `${name} in /proc/iomem`;
        throw new Error(
          `aperture ${path}: the kernel refuses to map physical address ${hex(at)} (STRICT_DEVMEM: ${what}); ` +
            `/dev/mem serves only memory the kernel does not manage: for memory the kernel has as a device-dax use --aperture-path /dev/daxX.Y, ` +
            `for memory onlined as NUMA node N use --aperture-numa-node N --aperture-hugepages 1G`,
        );
      }
      if (isSyscallError(err, 'EINVAL')) {
        throw new Error(`aperture ${path}: the kernel refuses to map physical address ${hex(at)} (EINVAL: beyond the physical address range, or a cache type that conflicts with an existing mapping)`);
      }
      throw err;
    }
    if (at >= last) return;
  }
}
