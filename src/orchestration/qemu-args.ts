import type { DeviceDescription } from './description.js';

/** q35: qemu-system-x86_64; virt: qemu-system-aarch64 (what Grace hosts run). */
export type QemuMachine = 'q35' | 'virt';
export const QEMU_MACHINES: readonly QemuMachine[] = ['q35', 'virt'];

/** The machine a VM on this host would be: virt on aarch64, else q35. */
export function hostMachine(arch: string = process.arch): QemuMachine {
  return arch === 'arm64' ? 'virt' : 'q35';
}

export const QEMU_PROGRAM: Record<QemuMachine, string> = { q35: 'qemu-system-x86_64', virt: 'qemu-system-aarch64' };

/** The virt machine's high PCIe MMIO window when highmem-mmio-size is not given. */
export const VIRT_DEFAULT_HIGH_MMIO = 512 * 2 ** 30;

/** UEFI for arm64 guests as Debian and Ubuntu install it (package qemu-efi-aarch64). */
export const AARCH64_UEFI_FIRMWARE = '/usr/share/qemu-efi-aarch64/QEMU_EFI.fd';

export interface QemuArgsOptions {
  /** QEMU id of the -device; the generic initiators point at it. */
  id: string;
  /** The daemon's socket, as QEMU will open it. */
  socket: string;
  /** Guest RAM in bytes, on node 0, from a shared memfd (vfio-user DMA needs its fd). */
  guestMemoryBytes: number;
  /** Only the device, its nodes and initiators: for a second device in a VM that has the rest. */
  deviceOnly?: boolean;
  /** Default q35. */
  machine?: QemuMachine;
  /**
   * virt only: UEFI firmware to boot (-bios), which the generic initiators need: the
   * virt machine hands its ACPI tables to firmware only, and a guest booted without
   * any (-kernel alone) gets a device tree, in which the device's nodes do not exist.
   * Default AARCH64_UEFI_FIRMWARE when there are device nodes; null: none.
   */
  firmware?: string | null;
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

/** The device part: memory-less nodes, the device, one initiator per node, the 64-bit window (q35). */
function deviceArgs(d: DeviceDescription, o: QemuArgsOptions): string[] {
  const args: string[] = [];
  for (const node of d.guestNuma.deviceNodes) args.push('-numa', `node,nodeid=${node}`);
  args.push('-device', JSON.stringify({ driver: 'vfio-user-pci', id: o.id, socket: { type: 'unix', path: o.socket } }));
  for (const node of d.guestNuma.deviceNodes) {
    args.push('-object', `acpi-generic-initiator,id=gi${node},pci-dev=${o.id},node=${node}`);
  }
  if (!o.deviceOnly && (o.machine ?? 'q35') === 'q35') {
    args.push('-global', `q35-pcihost.pci-hole64-size=${sizeArg(d.pciHole64Bytes)}`);
  }
  return args;
}

/**
 * The high PCIe MMIO window the virt machine needs for these BARs. QEMU places
 * the window aligned to its (power-of-two) size, so power-of-two BARs placed
 * largest first leave no gaps: their sum, rounded up to a power of two.
 */
export function virtHighMmioFor(barSizes: number[]): number {
  const sum = barSizes.reduce((n, s) => n + s, 0);
  let size = VIRT_DEFAULT_HIGH_MMIO;
  while (size < sum) size *= 2;
  return size;
}

/** virt's machine, CPU and firmware: the window grows past its default only when it must. */
function virtMachineArgs(d: DeviceDescription, o: QemuArgsOptions): string[] {
  const window = virtHighMmioFor(d.bars.map((b) => b.bytes));
  const machine = window > VIRT_DEFAULT_HIGH_MMIO ? `virt,highmem-mmio-size=${sizeArg(window)}` : 'virt';
  const firmware = virtFirmware(d, o);
  return ['-machine', machine, '-cpu', 'max', ...(firmware === null ? [] : ['-bios', firmware])];
}

function virtFirmware(d: DeviceDescription, o: QemuArgsOptions): string | null {
  if (o.firmware !== undefined) return o.firmware;
  return d.guestNuma.deviceNodes.length > 0 ? AARCH64_UEFI_FIRMWARE : null;
}

/**
 * The QEMU arguments that attach the device with its NUMA nodes: guest RAM as
 * a shared memfd on node 0, one memory-less node per MIG instance, the
 * vfio-user-pci device, an acpi-generic-initiator tying each node to it, and
 * room for its BARs. q35: the 64-bit PCI hole (add -machine q35, -smp, disks,
 * etc.). virt: -machine virt (with a high PCIe window grown to fit when the
 * default 512 GiB does not), -cpu max and the UEFI firmware the initiators need.
 */
export function qemuArgs(d: DeviceDescription, o: QemuArgsOptions): string[] {
  if (!isQemuId(o.id)) throw new Error(`"${o.id}" is not a QEMU id (a letter, then letters, digits, - . _)`);
  if (o.deviceOnly) return deviceArgs(d, o);
  const machine = (o.machine ?? 'q35') === 'virt' ? virtMachineArgs(d, o) : [];
  return [...machine, ...ramArgs(d, o), ...deviceArgs(d, o)];
}

/**
 * What the shell format says above virt's arguments: the program, and what the
 * firmware is there for (or what is lost without it). q35 output has none.
 */
export function shellComments(d: DeviceDescription, o: QemuArgsOptions): string[] {
  if ((o.machine ?? 'q35') !== 'virt') return [];
  const lines = [`# ${QEMU_PROGRAM.virt}: add -smp, -accel kvm (or tcg), disks and the rest`];
  if (o.deviceOnly) {
    lines.push("# the VM's -machine virt needs a high PCIe window (highmem-mmio-size) that holds this device's BARs too");
  }
  if (d.guestNuma.deviceNodes.length > 0) {
    const fw = o.deviceOnly ? null : virtFirmware(d, o);
    lines.push(
      fw !== null
        ? `# -bios: the generic initiators reach the guest in ACPI, which virt gives to UEFI firmware only (package qemu-efi-aarch64)`
        : "# the generic initiators reach the guest in ACPI, which virt gives to UEFI firmware only (package qemu-efi-aarch64): without it the device's NUMA nodes do not exist in the guest",
    );
  }
  return lines;
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
export function formatShell(args: string[], comments: string[] = []): string {
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
  return [...comments, ''].join('\n') + lines.join(' \\\n') + '\n';
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
  const virt = (o.machine ?? 'q35') === 'virt';
  const args = deviceArgs(d, { ...o, deviceOnly: true });
  const window = virtHighMmioFor(d.bars.map((b) => b.bytes));
  // QEMU merges every -machine option into one: this adds to the -machine libvirt writes.
  if (virt && !o.deviceOnly && window > VIRT_DEFAULT_HIGH_MMIO) args.unshift('-machine', `highmem-mmio-size=${sizeArg(window)}`);
  const room = virt
    ? [
        `     and UEFI firmware, which the generic initiators need (virt hands its ACPI tables to`,
        `     firmware only; package qemu-efi-aarch64):`,
        `       <os firmware='efi'><type arch='aarch64' machine='virt'>hvm</type></os>`,
        ...(window > VIRT_DEFAULT_HIGH_MMIO
          ? [`     The high PCIe window is grown to ${sizeArg(window)} below (the default 512G is too small). -->`]
          : [`     The device's BARs fit the virt machine's default 512G high PCIe window. -->`]),
      ]
    : [
        `     and the 64-bit PCI hole large enough for the device's BARs:`,
        `       <controller type='pci' model='pcie-root'><pcihole64 unit='KiB'>${Math.ceil(d.pciHole64Bytes / 1024)}</pcihole64></controller> -->`,
      ];
  return [
    `<!-- nvgrace-vfio-user: device ${o.id}, socket ${o.socket}.`,
    `     The <domain> element needs xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'.`,
    `     Guest RAM must be shared memfd, on NUMA node ${d.guestNuma.ramNode} with every vCPU:`,
    `       <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>`,
    `       <cpu><numa><cell id='${d.guestNuma.ramNode}' cpus='0-N' memory='${mib}' unit='MiB'/></numa></cpu>`,
    ...room,
    '<qemu:commandline>',
    ...args.map((a) => `  <qemu:arg value='${xmlAttr(a)}'/>`),
    '</qemu:commandline>',
    '',
  ].join('\n');
}
