import { Command, InvalidArgumentError, Option } from 'commander';
import {
  DEFAULT_NUMA_NODES,
  MAX_NUMA_NODES,
  describeFromFlags,
  numaLayout,
  type DeviceDescription,
} from '../orchestration/description.js';
import { describeFromSocket } from '../orchestration/query.js';
import { QEMU_MACHINES, formatLibvirt, formatShell, hostMachine, qemuArgs, shellComments } from '../orchestration/qemu-args.js';
import { ActivationError, takeListenFd } from '../service/activation.js';
import { envName } from './env-options.js';
import { installUnits } from './install-units.js';
import { parseSize } from './parse.js';
import { deviceFlagValues } from './device-flags.js';

const NAME = 'nvgrace-vfio-user';

/** Serve flags that define the device (describe and qemu-args take them too). */
const DEVICE_FLAGS = ['--aperture-size', '--aperture-base', '--aperture-path', '--aperture-hugepages', '--aperture-numa-node', '--bar0', '--layout', '--vendor-id', '--device-id'];

/** Turns a parser that throws Error into one commander reports as a usage error. */
export function asArgument<T>(parse: (text: string) => T): (text: string) => T {
  return (text) => {
    try {
      return parse(text);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };
}

/**
 * The socket passed by systemd socket activation, if any; a usage error when
 * there is neither that nor --socket.
 */
export function listenFdOrUsageError(cmd: Command, socket: string | undefined): number | null {
  let fd: number | null;
  try {
    fd = takeListenFd();
  } catch (err) {
    if (err instanceof ActivationError) cmd.error(`error: ${err.message}`);
    throw err;
  }
  if (fd === null && socket === undefined) {
    cmd.error("error: required option '--socket <path>' not specified (nor a socket passed by systemd socket activation)");
  }
  return fd;
}

const parseCount = (max: number) =>
  asArgument((v: string) => {
    if (!/^\d+$/.test(v) || Number(v) > max) throw new Error(`"${v}" is not a whole number from 0 to ${max}`);
    return Number(v);
  });

/** The description the flags ask for: of the flags themselves, or of the daemon at --socket. */
async function description(cmd: Command): Promise<DeviceDescription> {
  const o = cmd.opts();
  if (o['firstNode'] === 0) cmd.error('error: --first-node must be 1 or more: node 0 holds the guest RAM');
  if (o['firstNode'] + o['numaNodes'] > MAX_NUMA_NODES) cmd.error(`error: QEMU has at most ${MAX_NUMA_NODES} NUMA nodes`);
  const numa = numaLayout(o['numaNodes'], o['firstNode']);
  const fromFlags = DEVICE_FLAGS.some((f) => {
    const src = cmd.getOptionValueSource(f.slice(2).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase()));
    return src === 'cli' || src === 'env';
  });
  if (o['socket'] !== undefined && !fromFlags) return describeFromSocket(o['socket'], numa);
  return describeFromFlags(
    {
      ...deviceFlagValues(o, cmd),
      socket: o['socket'],
    },
    numa,
  );
}

function withDeviceOptions(cmd: Command, serve: Command): Command {
  cmd.addOption(new Option('--socket <path>', 'the daemon\'s socket; given alone, the running daemon is asked').env(envName('--socket')));
  for (const flag of DEVICE_FLAGS) {
    const opt = serve.options.find((x) => x.long === flag);
    if (opt === undefined) throw new Error(`serve has no ${flag}`);
    cmd.addOption(opt);
  }
  return cmd
    .option('--numa-nodes <n>', 'guest NUMA nodes for the device (one per MIG instance)', parseCount(MAX_NUMA_NODES), DEFAULT_NUMA_NODES)
    .option('--first-node <n>', 'id of the first of them (node 0 holds the guest RAM)', parseCount(MAX_NUMA_NODES), 1);
}

/** describe, qemu-args and install-units. */
export function addServiceCommands(p: Command, serve: Command, out: (line: string) => void): void {
  withDeviceOptions(p.command('describe'), serve)
    .description('print, as JSON, what management software needs to build a VM around the device')
    .addHelpText(
      'after',
      `
With the serve flags (or their NVGRACE_VFIO_USER_* variables) it describes that
configuration; with --socket alone it asks the running daemon, which shows the
BARs but not the memory size or backing (see "unknown" in the output).

Examples:
  ${NAME} describe --aperture-path /dev/mem --aperture-base 0x400000000000 --aperture-size 95G
  ${NAME} describe --socket /run/nvgrace-vfio-user/gpu0.sock --numa-nodes 4
`,
    )
    .action(async (_o, cmd: Command) => {
      out(JSON.stringify(await description(cmd), null, 2));
    });

  withDeviceOptions(p.command('qemu-args'), serve)
    .description('print the QEMU arguments that attach the device with its guest NUMA nodes')
    .option('--id <id>', 'QEMU id of the device', 'gpu0')
    .option('--guest-memory <size>', 'guest RAM on node 0 (a shared memfd)', parseSize, 2 ** 30)
    .option('--device-only', 'leave out the RAM, node 0 and the PCI hole (a second device in the same VM)')
    .addOption(
      new Option('--machine <machine>', 'q35 (qemu-system-x86_64) or virt (qemu-system-aarch64)')
        .choices([...QEMU_MACHINES])
        .default(hostMachine(), `${hostMachine()}: this host's architecture`),
    )
    .option('--firmware <path>', 'virt: UEFI firmware for -bios, which the generic initiators need; "none" to leave it out (default: qemu-efi-aarch64\'s when there are device nodes)')
    .addOption(new Option('--format <format>', 'shell words, a JSON array, or a libvirt <qemu:commandline> block').choices(['shell', 'json', 'libvirt']).default('shell'))
    .addHelpText(
      'after',
      `
Examples:
  ${NAME} qemu-args --socket /run/nvgrace-vfio-user/gpu0.sock
  ${NAME} qemu-args --socket /run/nvgrace-vfio-user/gpu0.sock --format libvirt
  ${NAME} qemu-args --socket /run/nvgrace-vfio-user/gpu0.sock --machine virt

q35 prints the device part (add -machine q35 and the rest); virt prints -machine virt
(with highmem-mmio-size when the BARs need more than the default 512G high PCIe
window), -cpu max and, for the generic initiators, UEFI firmware (-bios; Debian's
package qemu-efi-aarch64): the virt machine hands its ACPI tables to firmware only.
`,
    )
    .action(async (o, cmd: Command) => {
      if (o.socket === undefined) cmd.error("error: required option '--socket <path>' not specified (QEMU needs the daemon's socket)");
      if (o.firmware !== undefined && o.machine !== 'virt') cmd.error('error: --firmware is for --machine virt (q35 boots SeaBIOS, which has ACPI)');
      const d = await description(cmd);
      const opts = {
        id: o.id,
        socket: o.socket,
        guestMemoryBytes: o.guestMemory,
        deviceOnly: o.deviceOnly === true,
        machine: o.machine,
        ...(o.firmware !== undefined ? { firmware: o.firmware === 'none' ? null : o.firmware } : {}),
      };
      let args: string[];
      try {
        args = qemuArgs(d, opts);
      } catch (err) {
        cmd.error(`error: ${(err as Error).message}`);
      }
      if (o.format === 'json') out(JSON.stringify(args));
      else if (o.format === 'libvirt') out(formatLibvirt(d, opts).trimEnd());
      else out(formatShell(args, shellComments(d, opts)).trimEnd());
    });

  p.command('install-units')
    .description('install the systemd units and the example flags file')
    .option('--prefix <dir>', 'install under this root (a staging folder when packaging)', '/')
    .addHelpText(
      'after',
      `
Then:
  cp /etc/nvgrace-vfio-user/example.env /etc/nvgrace-vfio-user/gpu0.env   # and edit
  systemctl daemon-reload
  systemctl enable --now nvgrace-vfio-user@gpu0.socket
`,
    )
    .action((o) => {
      const r = installUnits({ prefix: o.prefix });
      for (const f of r.files) out(`installed ${f}`);
      out(r.execStart);
      for (const w of r.warnings) process.stderr.write(`${NAME}: warning: ${w}\n`);
    });
}
