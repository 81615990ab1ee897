import fs from 'node:fs';
import path from 'node:path';
import { EMULATED_BAR0_SIZE } from '../backends/bar0-emulated.js';
import type { ApertureKind } from '../backends/aperture.js';
import { MIN_FILE_BAR0_SIZE, openFileBar0 } from '../backends/bar0-file.js';
import { parseBdf, pciDeviceDir } from '../backends/vfio/pci-address.js';
import { nextPowerOfTwo } from '../common/arith.js';
import { previewBacking, type BackingPreview } from '../backends/backing-preview.js';
import type { Bar0Spec } from '../backends/bar0-spec.js';
import { DEFAULT_IDENTITY } from '../device/gpu-device.js';
import { LAYOUTS, planLayout, type LayoutName } from '../device/layout.js';
import { PCI_CLASS_3D_CONTROLLER } from '../device/pci.js';

/** What management software needs to know about one device to build a VM around it. */
export interface DeviceDescription {
  /** Where the facts come from: the daemon's flags, or a running daemon asked over its socket. */
  source: 'flags' | 'socket';
  socket: string | null;
  device: {
    vendorId: string;
    deviceId: string;
    subsystemVendorId: string;
    subsystemId: string;
    classCode: string;
    /** Product name for the known Grace Hopper / Blackwell IDs, else null. */
    name: string | null;
  };
  /** The BAR that carries the cache-coherent memory the guest uses (BAR2, or BAR4 in the gh and gb layouts). */
  coherentMemory: {
    bar: number;
    barBytes: number;
    /** Bytes of real memory at the start of the BAR; null when it cannot be learned. */
    memoryBytes: number | null;
    /** barBytes - memoryBytes: reads as ~0, writes dropped. */
    paddingBytes: number | null;
    /** How the memory is spread over the BARs (see serve --layout). */
    layout: LayoutName;
    /** All of the coherent memory, the reserved part (gh's BAR2) included. */
    totalMemoryBytes: number | null;
    /**
     * kind, path and base as given; numaNode, pageSize (what the client maps in) and
     * cacheable (how the host maps it; null: cannot tell) as serve would find them.
     */
    backing: {
      kind: ApertureKind | 'missing-file';
      path: string | null;
      base: number;
      numaNode: number | null;
      pageSize: number;
      cacheable: boolean | null;
    } | null;
  };
  bars: {
    index: number;
    bytes: number;
    is64bit: boolean;
    prefetchable: boolean;
    /** reserved-memory: the gh layout's BAR2, memory the guest driver keeps for itself. */
    role: 'registers' | 'coherent-memory' | 'reserved-memory' | 'other';
  }[];
  guestNuma: NumaLayout;
  /** 64-bit PCI window the VM needs for this device's BARs (q35 pci-hole64-size). */
  pciHole64Bytes: number;
  /** Facts that could not be learned from this source, and why. */
  unknown: string[];
}

export interface NumaLayout {
  /** Node holding the guest's RAM and vCPUs. */
  ramNode: number;
  /** Memory-less nodes tied to the device, one ACPI Generic Initiator each. */
  deviceNodes: number[];
  why: string;
}

/** Grace Hopper/Blackwell device IDs (vendor 0x10de). */
const PRODUCT_NAMES: Record<number, string> = {
  0x2342: 'GH200 120GB',
  0x2345: 'GH200 480GB',
  0x2348: 'GH200',
  0x2941: 'GB200',
  0x31c2: 'GB300',
};

/** MIG splits a Hopper GPU into at most 8 instances; each wants a NUMA node of its own. */
export const DEFAULT_NUMA_NODES = 8;
/** QEMU's largest NUMA node count (MAX_NODES). */
export const MAX_NUMA_NODES = 128;
/** QEMU's q35 default pci-hole64-size; never ask for less. */
export const Q35_DEFAULT_HOLE64 = 32 * 2 ** 30;
const GiB = 2 ** 30;

export const hexId = (n: number, width = 4): string => '0x' + n.toString(16).padStart(width, '0');

export function numaLayout(nodes: number, firstNode: number): NumaLayout {
  return {
    ramNode: 0,
    deviceNodes: Array.from({ length: nodes }, (_, i) => firstNode + i),
    why:
      'one memory-less NUMA node per MIG GPU instance (up to 8), each tied to the device by an ' +
      'ACPI Generic Initiator: a guest driver that onlines the coherent memory puts it there, and ' +
      'the nodes have to exist from boot',
  };
}

/**
 * A window the firmware can place every 64-bit BAR in, each aligned to its
 * size: twice the largest (the window starts only 1 GiB aligned) plus the
 * rest, in whole GiB, and never below QEMU's default.
 */
export function pciHole64For(barSizes: number[]): number {
  const sorted = [...barSizes].sort((a, b) => b - a);
  const need = 2 * (sorted[0] ?? 0) + sorted.slice(1).reduce((n, s) => n + s, 0);
  return Math.max(Q35_DEFAULT_HOLE64, Math.ceil(need / GiB) * GiB);
}

/** What the device is made of, as `serve` and `describe` take it. */
export interface DeviceFlags {
  /** Default 96 MiB; for a device-dax, the rest of the device after the base. */
  apertureSize?: number | undefined;
  apertureBase: number;
  aperturePath?: string | undefined;
  /** Huge page size in bytes (2 MiB or 1 GiB). */
  apertureHugePages?: number | undefined;
  apertureNumaNode?: number | undefined;
  /** For tests: where sysfs is. */
  sysfsRoot?: string | undefined;
  bar0: Bar0Spec;
  /** Which BARs hold the memory; default `bar2`. */
  layout?: LayoutName | undefined;
  vendorId: number;
  /** Default: the layout's (0x2342 for bar2 and gh, 0x2941 for gb). */
  deviceId?: number | undefined;
  socket?: string | undefined;
}

/**
 * The device the daemon would serve with these flags, without starting it.
 * The aperture backing is only looked at (a missing file is not created); a
 * file BAR0 is opened to learn its size, as serve does.
 */
export function describeFromFlags(f: DeviceFlags, numa: NumaLayout): DeviceDescription {
  const unknown: string[] = [];
  const bar0Bytes = bar0Size(f.bar0, unknown);
  const backing = previewBacking({
    size: f.apertureSize,
    base: f.apertureBase,
    path: f.aperturePath,
    hugePageSize: f.apertureHugePages,
    numaNode: f.apertureNumaNode,
    sysfsRoot: f.sysfsRoot,
  });
  const apertureSize = backing.size;
  const layout = planLayout(f.layout ?? 'bar2', apertureSize);
  const usable = layout.bars.find((b) => b.role !== 'resmem')!;
  const deviceId = f.deviceId ?? LAYOUTS[layout.name].defaultDeviceId;
  const id = DEFAULT_IDENTITY;
  return {
    source: 'flags',
    socket: f.socket ?? null,
    device: {
      vendorId: hexId(f.vendorId),
      deviceId: hexId(deviceId),
      subsystemVendorId: hexId(id.subsystemVendorId),
      subsystemId: hexId(id.subsystemId),
      classCode: hexId(PCI_CLASS_3D_CONTROLLER << 8, 6),
      name: productName(f.vendorId, deviceId),
    },
    coherentMemory: {
      bar: usable.bar,
      barBytes: usable.barSize,
      memoryBytes: usable.length,
      paddingBytes: usable.barSize - usable.length,
      layout: layout.name,
      totalMemoryBytes: apertureSize,
      backing: backingOf(backing, f.apertureBase, unknown),
    },
    bars: [
      { index: 0, bytes: bar0Bytes, is64bit: true, prefetchable: false, role: 'registers' as const },
      ...layout.bars.map((b) => ({
        index: b.bar,
        bytes: b.barSize,
        is64bit: true,
        prefetchable: true,
        role: b.role === 'resmem' ? ('reserved-memory' as const) : ('coherent-memory' as const),
      })),
    ].sort((a, b) => a.index - b.index),
    guestNuma: numa,
    pciHole64Bytes: pciHole64For([bar0Bytes, ...layout.bars.map((b) => b.barSize)]),
    unknown,
  };
}

export function productName(vendorId: number, deviceId: number): string | null {
  return vendorId === 0x10de ? (PRODUCT_NAMES[deviceId] ?? null) : null;
}

/** BAR0's size as serve would present it; for a passed-through device, the host BAR's. */
function bar0Size(spec: Bar0Spec, unknown: string[]): number {
  switch (spec.kind) {
    case 'emulated':
      return EMULATED_BAR0_SIZE;
    case 'file':
      return fileBar0Size(spec.path);
    case 'sysfs':
      return Math.max(MIN_FILE_BAR0_SIZE, nextPowerOfTwo(fs.statSync(resource0(spec.bdf)).size));
    case 'vfio': {
      unknown.push('--bar0 vfio: the device shows the host function\'s identity and BARs; ask the running daemon (--socket) for them');
      const bdf = parseBdf(spec.target);
      return bdf ? fs.statSync(resource0(bdf)).size : 0;
    }
  }
}

function resource0(text: string): string {
  const bdf = parseBdf(text);
  if (!bdf) throw new Error(`"${text}" is not a PCI address like 0000:01:00.0`);
  return path.join(pciDeviceDir(bdf), 'resource0');
}

function fileBar0Size(path: string): number {
  const src = openFileBar0(path);
  try {
    return src.barSize;
  } finally {
    src.close();
  }
}

function backingOf(b: BackingPreview, base: number, unknown: string[]): NonNullable<DeviceDescription['coherentMemory']['backing']> {
  const { kind, path, numaNode, pageSize, cacheable } = b.facts;
  if (!b.exists) unknown.push(`${path} does not exist yet: serve creates it as a sparse regular file`);
  return { kind: b.exists ? kind : 'missing-file', path, base, numaNode, pageSize, cacheable };
}
