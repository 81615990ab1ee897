import type { DeviceDescription } from './description.js';

export interface QemuArgsOptions {
  /** QEMU id of the -device; the generic initiators point at it. */
  id: string;
  /** The daemon's socket, as QEMU will open it. */
  socket: string;
  /** Guest RAM in bytes, on node 0, from a shared memfd (vfio-user DMA needs its fd). */
  guestMemoryBytes: number;
  /** Only the device, its nodes and initiators: for a second device in a VM that has the rest. */
  deviceOnly?: boolean;
}

/** A QEMU id: a letter, then letters, digits, '-', '.', '_'. */
export function isQemuId(id: string): boolean {
  return /^[A-Za-z][A-Za-z0-9_.-]*$/.test(id);
}

/** The RAM part, which libvirt builds from the domain XML instead. */
function ramArgs(d: DeviceDescription, o: QemuArgsOptions): string[] {
  const size = sizeArg(o.guestMemoryBytes);
  return [
    '-m', size,
    '-object', `memory-backend-memfd,id=mem${d.guestNuma.ramNode},size=${size},share=on`,
    '-numa', `node,nodeid=${d.guestNuma.ramNode},memdev=mem${d.guestNuma.ramNode}`,
  ];
}

/** The device part: memory-less nodes, the device, one initiator per node, the 64-bit window. */
function deviceArgs(d: DeviceDescription, o: QemuArgsOptions): string[] {
  const args: string[] = [];
  for (const node of d.guestNuma.deviceNodes) args.push('-numa', `node,nodeid=${node}`);
  args.push('-device', JSON.stringify({ driver: 'vfio-user-pci', id: o.id, socket: { type: 'unix', path: o.socket } }));
  for (const node of d.guestNuma.deviceNodes) {
    args.push('-object', `acpi-generic-initiator,id=gi${node},pci-dev=${o.id},node=${node}`);
  }
  if (!o.deviceOnly) args.push('-global', `q35-pcihost.pci-hole64-size=${sizeArg(d.pciHole64Bytes)}`);
  return args;
}

/**
 * The QEMU arguments that attach the device with its NUMA nodes: guest RAM as
 * a shared memfd on node 0, one memory-less node per MIG instance, the
 * vfio-user-pci device, an acpi-generic-initiator tying each node to it, and a
 * 64-bit PCI hole its BARs fit in. Add -machine q35, -smp, disks, etc.
 */
export function qemuArgs(d: DeviceDescription, o: QemuArgsOptions): string[] {
  if (!isQemuId(o.id)) throw new Error(`"${o.id}" is not a QEMU id (a letter, then letters, digits, - . _)`);
  return [...(o.deviceOnly ? [] : ramArgs(d, o)), ...deviceArgs(d, o)];
}

/** QEMU size syntax: the largest binary unit that divides the size. */
export function sizeArg(bytes: number): string {
  for (const [unit, div] of [['T', 2 ** 40], ['G', 2 ** 30], ['M', 2 ** 20], ['K', 2 ** 10]] as const) {
    if (bytes % div === 0) return `${bytes / div}${unit}`;
  }
  return String(bytes);
}

const SAFE = /^[A-Za-z0-9_@%+=:,./-]+$/;
const shellQuote = (a: string): string => (SAFE.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);

/** One option and its value per line, continued with backslashes, ready to paste. */
export function formatShell(args: string[]): string {
  const lines: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const next = args[i + 1];
    if (a.startsWith('-') && next !== undefined && !next.startsWith('-')) {
      lines.push(`${shellQuote(a)} ${shellQuote(next)}`);
      i++;
    } else {
      lines.push(shellQuote(a));
    }
  }
  return lines.join(' \\\n') + '\n';
}

const xmlAttr = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;');

/**
 * The device part as a libvirt <qemu:commandline> block. libvirt writes -m,
 * the RAM backend and node 0 itself, from the domain XML shown in the comment;
 * repeating them here would clash with what it generates.
 */
export function formatLibvirt(d: DeviceDescription, o: QemuArgsOptions): string {
  const mib = Math.ceil(o.guestMemoryBytes / 2 ** 20);
  const hole = Math.ceil(d.pciHole64Bytes / 1024);
  const args = deviceArgs(d, { ...o, deviceOnly: true });
  return [
    `<!-- nvgrace-vfio-user: device ${o.id}, socket ${o.socket}.`,
    `     The <domain> element needs xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'.`,
    `     Guest RAM must be shared memfd, on NUMA node ${d.guestNuma.ramNode} with every vCPU:`,
    `       <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>`,
    `       <cpu><numa><cell id='${d.guestNuma.ramNode}' cpus='0-N' memory='${mib}' unit='MiB'/></numa></cpu>`,
    `     and the 64-bit PCI hole large enough for the device's BARs:`,
    `       <controller type='pci' model='pcie-root'><pcihole64 unit='KiB'>${hole}</pcihole64></controller> -->`,
    '<qemu:commandline>',
    ...args.map((a) => `  <qemu:arg value='${xmlAttr(a)}'/>`),
    '</qemu:commandline>',
    '',
  ].join('\n');
}
