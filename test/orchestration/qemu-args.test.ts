// qemu-args for both machines: q35 (x86-64 hosts) and virt (aarch64 hosts, as on Grace).
import { describe, expect, it } from 'vitest';
import { describeFromFlags, numaLayout } from '../../src/orchestration/description.js';
import {
  AARCH64_UEFI_FIRMWARE,
  VIRT_DEFAULT_HIGH_MMIO,
  formatLibvirt,
  formatShell,
  hostMachine,
  qemuArgs,
  shellComments,
  virtHighMmioFor,
} from '../../src/orchestration/qemu-args.js';
import { runCli } from '../helpers/cli.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const TiB = 2 ** 40;
const socket = '/run/nvgrace-vfio-user/gpu0.sock';
const deviceJson = `{"driver":"vfio-user-pci","id":"gpu0","socket":{"type":"unix","path":"${socket}"}}`;
const flags = { apertureBase: 0, bar0: { kind: 'emulated' as const }, vendorId: 0x10de };
const describeSize = (size: number, nodes = 2, layout?: 'bar2' | 'gh' | 'gb') =>
  describeFromFlags({ ...flags, apertureSize: size, layout }, numaLayout(nodes, 1));
const opts = { id: 'gpu0', socket, guestMemoryBytes: 4 * GiB };

describe('the machine', () => {
  it('defaults to the host architecture: virt on aarch64, q35 elsewhere', () => {
    expect(hostMachine('arm64')).toBe('virt');
    expect(hostMachine('x64')).toBe('q35');
    expect(hostMachine()).toBe(process.arch === 'arm64' ? 'virt' : 'q35');
  });
});

describe('virt: the high PCIe MMIO window', () => {
  it('keeps the default 512 GiB while the BARs fit, and grows to the next power of two past it', () => {
    expect(virtHighMmioFor([16 * MiB, 128 * MiB])).toBe(VIRT_DEFAULT_HIGH_MMIO);
    expect(virtHighMmioFor([16 * MiB, 128 * GiB])).toBe(512 * GiB); // GH200 120GB: 95 GiB aperture, BAR2 128 GiB
    expect(virtHighMmioFor([16 * MiB, 256 * GiB, 256 * GiB])).toBe(1 * TiB); // 16 MiB over
    expect(virtHighMmioFor([16 * MiB, 512 * GiB])).toBe(1 * TiB); // GH200 480GB: BAR2 512 GiB
    expect(virtHighMmioFor([16 * MiB, 1 * TiB, 512 * GiB])).toBe(2 * TiB);
  });
});

describe('qemuArgs for virt', () => {
  it('a 95 GiB aperture: -machine virt with its default window, -cpu max, UEFI, memfd RAM, nodes, device, initiators', () => {
    const d = describeSize(95 * GiB);
    expect(qemuArgs(d, { ...opts, machine: 'virt' })).toEqual([
      '-machine', 'virt',
      '-cpu', 'max',
      '-bios', AARCH64_UEFI_FIRMWARE,
      '-m', '4G',
      '-object', 'memory-backend-memfd,id=mem0,size=4G,share=on',
      '-numa', 'node,nodeid=0,memdev=mem0',
      '-numa', 'node,nodeid=1',
      '-numa', 'node,nodeid=2',
      '-device', deviceJson,
      '-object', 'acpi-generic-initiator,id=gi1,pci-dev=gpu0,node=1',
      '-object', 'acpi-generic-initiator,id=gi2,pci-dev=gpu0,node=2',
    ]);
  });

  it('a 480 GiB aperture (BAR2 512 GiB): highmem-mmio-size=1T, and no q35 hole', () => {
    const args = qemuArgs(describeSize(480 * GiB), { ...opts, machine: 'virt' });
    expect(args.slice(0, 2)).toEqual(['-machine', 'virt,highmem-mmio-size=1T']);
    expect(args.join(' ')).not.toContain('pci-hole64');
  });

  it('gh layout: both memory BARs count towards the window', () => {
    // 700 GiB: BAR4 (usemem) and BAR2 (resmem) add up past 512 GiB
    const d = describeSize(700 * GiB, 1, 'gh');
    const sum = d.bars.reduce((n, b) => n + b.bytes, 0);
    expect(sum).toBeGreaterThan(VIRT_DEFAULT_HIGH_MMIO);
    expect(qemuArgs(d, { ...opts, machine: 'virt' })[1]).toBe(`virt,highmem-mmio-size=${sum > TiB ? '2T' : '1T'}`);
  });

  it('no firmware when there are no device nodes, or when asked for none; another when given', () => {
    expect(qemuArgs(describeSize(96 * MiB, 0), { ...opts, machine: 'virt' })).not.toContain('-bios');
    expect(qemuArgs(describeSize(96 * MiB), { ...opts, machine: 'virt', firmware: null })).not.toContain('-bios');
    const args = qemuArgs(describeSize(96 * MiB), { ...opts, machine: 'virt', firmware: '/fw/AAVMF.fd' });
    expect(args[args.indexOf('-bios') + 1]).toBe('/fw/AAVMF.fd');
  });

  it('--device-only: only the nodes, the device and the initiators', () => {
    const args = qemuArgs(describeSize(480 * GiB), { ...opts, machine: 'virt', deviceOnly: true });
    expect(args).toEqual([
      '-numa', 'node,nodeid=1',
      '-numa', 'node,nodeid=2',
      '-device', deviceJson,
      '-object', 'acpi-generic-initiator,id=gi1,pci-dev=gpu0,node=1',
      '-object', 'acpi-generic-initiator,id=gi2,pci-dev=gpu0,node=2',
    ]);
  });

  it('the shell format names qemu-system-aarch64 and says what the firmware is for', () => {
    const d = describeSize(95 * GiB);
    const o = { ...opts, machine: 'virt' as const };
    const text = formatShell(qemuArgs(d, o), shellComments(d, o));
    expect(text.split('\n')[0]).toMatch(/^# qemu-system-aarch64/);
    expect(text).toMatch(/# -bios: the generic initiators reach the guest in ACPI, which virt gives to UEFI firmware only.*qemu-efi-aarch64/);
    expect(text).toContain('-machine virt \\\n-cpu max \\\n');
    const noFw = shellComments(d, { ...o, firmware: null });
    expect(noFw.join('\n')).toMatch(/without it the device's NUMA nodes do not exist/);
    expect(shellComments(d, { ...opts, machine: 'q35' })).toEqual([]);
  });

  it('the libvirt format asks for UEFI and grows the window through a merged -machine', () => {
    const big = formatLibvirt(describeSize(480 * GiB), { ...opts, machine: 'virt' });
    expect(big).toContain("<os firmware='efi'><type arch='aarch64' machine='virt'>hvm</type></os>");
    expect(big).toContain("<qemu:arg value='-machine'/>\n  <qemu:arg value='highmem-mmio-size=1T'/>");
    expect(big).not.toContain('pcihole64');
    const small = formatLibvirt(describeSize(95 * GiB), { ...opts, machine: 'virt' });
    expect(small).not.toContain('highmem-mmio-size');
    expect(small).toContain('default 512G high PCIe window');
  });
});

describe('qemu-args --machine on the command line', () => {
  const common = ['qemu-args', '--socket', socket, '--aperture-size', '480G', '--numa-nodes', '1', '--guest-memory', '2G'];

  it('--machine virt prints the aarch64 command; q35 the x86 one', async () => {
    const virt = await runCli([...common, '--machine', 'virt', '--format', 'json']);
    expect(virt.code, virt.stderr).toBe(0);
    expect((JSON.parse(virt.stdout) as string[]).slice(0, 6)).toEqual(['-machine', 'virt,highmem-mmio-size=1T', '-cpu', 'max', '-bios', AARCH64_UEFI_FIRMWARE]);
    const q35 = await runCli([...common, '--machine', 'q35', '--format', 'json']);
    const q35Args = JSON.parse(q35.stdout) as string[];
    expect(q35Args).not.toContain('-machine');
    expect(q35Args.at(-1)).toBe('q35-pcihost.pci-hole64-size=1025G');
    const shell = await runCli([...common, '--machine', 'virt', '--firmware', 'none']);
    expect(shell.stdout).toMatch(/^# qemu-system-aarch64/);
    expect(shell.stdout).not.toContain('-bios');
  });

  it('the default is the host architecture', async () => {
    const r = await runCli([...common, '--format', 'json']);
    expect((JSON.parse(r.stdout) as string[]).includes('-machine')).toBe(process.arch === 'arm64');
  });

  it('refuses an unknown machine, and --firmware without virt', async () => {
    const bad = await runCli([...common, '--machine', 'pc']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--machine.*pc.*Allowed choices are q35, virt/);
    const fw = await runCli([...common, '--machine', 'q35', '--firmware', '/x.fd']);
    expect(fw.code).toBe(2);
    expect(fw.stderr).toMatch(/--firmware is for --machine virt/);
  });
});
