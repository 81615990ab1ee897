import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { inspect } from './inspect.js';
import { parseAddress, parseBar0Spec, parseCount, parseGid, parseHugePages, parseMode, parseNumaNode, parsePciId, parseSeconds, parseSize, parseUid } from './parse.js';
import { READY_WAIT_MODES } from '../device/readiness.js';
import { SCRUB_MODES } from '../device/memory-scrub.js';
import { LAYOUT_NAMES, LayoutError } from '../device/layout.js';
import { DEFAULT_APERTURE_SIZE } from '../backends/aperture.js';
import { DEFAULT_MAX_CLIENT_FDS } from '../server/fd-limits.js';
import { DEFAULT_NEGOTIATE_TIMEOUT_MS, DEFAULT_TENANT_EXIT_TIMEOUT_MS, serve, type ServeOptions } from './serve.js';
import { deviceFlagValues } from './device-flags.js';
import { optionsFromEnv } from './env-options.js';
import { addServiceCommands, asArgument, listenFdOrUsageError } from './service-commands.js';
import { parseListenAddress } from '../service/metrics-http.js';

const NAME = 'nvgrace-vfio-user';

const BAR0_HELP =
  'BAR0 registers: "emulated"; "file:PATH" (the bytes of a file); ' +
  '"sysfs:BDF" (resource0 of a host device bound to no driver: registers only, no DMA, no interrupts); ' +
  '"vfio:BDF" or "vfio:/dev/vfio/devices/vfioN" (a host device bound to vfio-pci, passed through: its config space, BARs, DMA through the host IOMMU, interrupts, reset)';

const SERVE_EXAMPLES = `
Examples:
  # embedded default: 96 MiB of anonymous shared memory at BAR2 (a 128 MiB BAR)
  ${NAME} serve --socket /run/nvgrace-vfio-user/gpu0.sock

  # a Grace Hopper host, GPU memory as a device-dax (cacheable; size and alignment from sysfs)
  ${NAME} serve --socket /run/nvgrace-vfio-user/gpu0.sock --aperture-path /dev/dax0.0

  # GPU memory onlined as NUMA node 1: 1 GiB huge pages bound there (cacheable)
  ${NAME} serve --socket /run/nvgrace-vfio-user/gpu0.sock \\
      --aperture-numa-node 1 --aperture-hugepages 1G --aperture-size 95G

  # the raw physical range through /dev/mem (uncached on arm64: prefer the above)
  ${NAME} serve --socket /run/nvgrace-vfio-user/gpu0.sock \\
      --aperture-path /dev/mem --aperture-base 0x400000000000 --aperture-size 95G

  # the mainline Grace Hopper layout for NVIDIA's stock guest driver: usemem at BAR4, resmem at BAR2
  ${NAME} serve --socket /tmp/gpu.sock --layout gh --aperture-size 96G

  # pass a host GPU bound to vfio-pci through, with the coherent memory at BAR2
  ${NAME} serve --socket /run/nvgrace-vfio-user/gpu0.sock --bar0 vfio:0009:01:00.0 \\
      --aperture-path /dev/mem --aperture-base 0x400000000000 --aperture-size 95G

  # a file in /dev/shm that survives daemon restarts, and BAR0 from a sysfs resource
  ${NAME} serve --socket /tmp/gpu.sock --aperture-path /dev/shm/gpu0 --aperture-size 1G \\
      --bar0 file:/sys/bus/pci/devices/0009:01:00.0/resource0

Then attach QEMU (10.1 or later):
  qemu-system-x86_64 -machine q35,memory-backend=mem0 -m 1G \\
    -object memory-backend-memfd,id=mem0,size=1G,share=on \\
    -device '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"/run/nvgrace-vfio-user/gpu0.sock"}}'
`;

function program(out: (line: string) => void): Command {
  const p = new Command(NAME)
    .description('vfio-user device server presenting cache-coherent GPU memory as a PCI BAR')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s), writeOut: (s) => process.stdout.write(s) })
    .showHelpAfterError(false);
  const serveCmd = addServeCommand(p);
  addInspectCommand(p, out);
  addServiceCommands(p, serveCmd, out);
  return p;
}

/** `serve` and its flags; the exit code is left in the program's `exitCode` option. */
function addServeCommand(p: Command): Command {
  return optionsFromEnv(p.command('serve'))
    .description('serve the device on a UNIX socket until SIGTERM or SIGINT')
    .option('--socket <path>', 'UNIX socket to listen on (not needed when systemd passes one)')
    .option('--socket-mode <mode>', 'permissions of the socket file (octal)', parseMode, 0o600)
    .option('--socket-group <group>', 'group owning the socket file (name or gid)', parseGid)
    .option('--allow-uid <uid>', 'only this peer uid may attach (name or uid; repeatable)', (v: string, prev: number[]) => [...prev, parseUid(v)], [] as number[])
    .option('--max-client-fds <n>', `client fds (DMA maps, eventfds) the daemon holds at once; more are refused with EMFILE (default ${DEFAULT_MAX_CLIENT_FDS}, lowered to fit RLIMIT_NOFILE)`, (v: string) => parseCount(v))
    .option('--tenant-exit-timeout <seconds>', 'a new client waits this long for the previous client\'s process to exit (it may still map the aperture), else it is refused; 0: no waiting', (v: string) => parseCount(v, 0), DEFAULT_TENANT_EXIT_TIMEOUT_MS / 1000)
    .option('--negotiate-timeout <seconds>', 'a client that has not finished VERSION this long after connecting is dropped (an idle client that has is never dropped); 0: no limit', (v: string) => parseCount(v, 0), DEFAULT_NEGOTIATE_TIMEOUT_MS / 1000)
    .addOption(new Option('--scrub <when>', 'zero the aperture memory so the next tenant cannot read it').choices(SCRUB_MODES).default('never'))
    .option('--aperture-size <size>', 'bytes of coherent memory (K, M, G, T suffixes); each memory BAR is its part rounded up to a power of two (a device-dax without it: the rest of the device)', parseSize, DEFAULT_APERTURE_SIZE)
    .option('--aperture-base <addr>', 'host physical base of the memory: the offset into the backing', parseAddress, 0)
    .option('--aperture-path <path>', 'backing: /dev/daxX.Y, a hugetlbfs, /dev/shm or regular file, or /dev/mem (default: anonymous shared memory)')
    .option('--aperture-hugepages <size>', 'back the memory with huge pages of a size the host offers (/sys/kernel/mm/hugepages): 2M, 1G; on arm64 also 64K, 32M, 512M, 16G (anonymous memory, or a hugetlbfs file)', parseHugePages)
    .option('--aperture-numa-node <node>', 'bind the memory strictly to this NUMA node (anonymous memory or hugetlbfs); never falls back', parseNumaNode)
    .addOption(new Option('--bar0 <source>', BAR0_HELP).default('emulated').argParser((v) => {
      try {
        return parseBar0Spec(v);
      } catch (err) {
        throw new InvalidArgumentError((err as Error).message);
      }
    }))
    .addOption(new Option('--layout <layout>', 'memory BARs: bar2 (all at BAR2), gh (Grace Hopper: usemem BAR4, resmem BAR2), gb (Grace Blackwell: all at BAR4)').choices(LAYOUT_NAMES).default('bar2'))
    .option('--vendor-id <id>', 'PCI vendor ID (hex; with vfio: the host device\'s own is shown)', parsePciId, 0x10de)
    .option('--device-id <id>', 'PCI device ID (hex); default 2342 (bar2, gh) or 2941 (gb)', parsePciId)
    .addOption(new Option('--ready-wait <when>', 'at start and after each reset, poll a passed-through GPU\'s BAR0 0x1498 and 0x200BC until both read 0xFF (auto: NVIDIA devices only)').choices(READY_WAIT_MODES).default('auto'))
    .option('--ready-timeout <seconds>', 'give up the readiness wait after this long', parseSeconds, 30)
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'))
    .option('--metrics-listen <[host:]port>', 'serve Prometheus metrics at http://HOST:PORT/metrics (a bare port is loopback only)', asArgument(parseListenAddress))
    .addHelpText('after', SERVE_EXAMPLES)
    .action(async (o, cmd: Command) => {
      let code: number;
      try {
        code = await serve(serveOptions(o, cmd));
      } catch (err) {
        // a size the layout cannot split is a usage error, refused before anything is created
        if (err instanceof LayoutError) cmd.error(`error: ${err.message} (--aperture-size)`, { exitCode: 2, code: 'nvgrace.layout' });
        throw err;
      }
      p.setOptionValue('exitCode', code);
    });
}

/** The parsed flags of `serve` as the daemon takes them. */
function serveOptions(o: Record<string, any>, cmd: Command): ServeOptions {
  const listenFd = listenFdOrUsageError(cmd, o['socket']);
  return {
    socket: o['socket'],
    listenFd: listenFd ?? undefined,
    metricsListen: o['metricsListen'],
    socketMode: o['socketMode'],
    socketGroup: o['socketGroup'],
    allowUids: o['allowUid'],
    scrub: o['scrub'],
    maxClientFds: o['maxClientFds'],
    tenantExitTimeoutMs: o['tenantExitTimeout'] * 1000,
    negotiateTimeoutMs: o['negotiateTimeout'] * 1000,
    ...deviceFlagValues(o, cmd),
    logLevel: o['logLevel'],
    readyWait: o['readyWait'],
    readyTimeoutMs: o['readyTimeout'] * 1000,
  };
}

function addInspectCommand(p: Command, out: (line: string) => void): void {
  p.command('inspect')
    .description('connect to a running daemon as a vfio-user client and print its device')
    .requiredOption('--socket <path>', 'the daemon\'s UNIX socket')
    .addHelpText('after', `\nExample:\n  ${NAME} inspect --socket /run/nvgrace-vfio-user/gpu0.sock\n`)
    .action(async (o) => {
      p.setOptionValue('exitCode', await inspect(o.socket, out));
    });
}

export async function main(argv: string[], out: (line: string) => void = (l) => process.stdout.write(l + '\n')): Promise<number> {
  const p = program(out);
  try {
    await p.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version exit 0; every usage error is one line on stderr and exit 2
      return err.exitCode === 0 ? 0 : 2;
    }
    process.stderr.write(`${NAME}: ${(err as Error).message}\n`);
    return 1;
  }
  return (p.getOptionValue('exitCode') as number | undefined) ?? 0;
}
