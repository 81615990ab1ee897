import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../src/client/client.js';
import { native } from '../../src/native/native.js';
import { describeFromFlags, numaLayout, pciHole64For, type DeviceDescription } from '../../src/orchestration/description.js';
import { describeFromSocket } from '../../src/orchestration/query.js';
import { RegionIndex } from '../../src/wire/constants.js';
import { CLI, runCli } from '../helpers/cli.js';
import { startTestDaemon, until, type TestDaemon } from '../helpers/daemon.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const flags = { apertureSize: 95 * GiB, apertureBase: 0x4000_0000_0000, bar0: { kind: 'emulated' as const }, vendorId: 0x10de, deviceId: 0x2345 };

describe('describe from flags', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-describe-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('gives identity, the coherent-memory BAR, sizes, backing and the NUMA layout', () => {
    const d = describeFromFlags({ ...flags, aperturePath: '/dev/zero' }, numaLayout(8, 1));
    expect(d.source).toBe('flags');
    expect(d.device).toMatchObject({ vendorId: '0x10de', deviceId: '0x2345', name: 'GH200 480GB', classCode: '0x030200' });
    expect(d.coherentMemory).toEqual({
      bar: 2,
      barBytes: 128 * GiB,
      memoryBytes: 95 * GiB,
      paddingBytes: 33 * GiB,
      layout: 'bar2',
      totalMemoryBytes: 95 * GiB,
      backing: { kind: 'char-device', path: '/dev/zero', base: 0x4000_0000_0000, numaNode: null, pageSize: native.pageSize(), cacheable: null },
    });
    expect(d.bars.map((b) => [b.index, b.bytes, b.role])).toEqual([
      [0, 16 * MiB, 'registers'],
      [2, 128 * GiB, 'coherent-memory'],
    ]);
    expect(d.guestNuma.ramNode).toBe(0);
    expect(d.guestNuma.deviceNodes).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(d.pciHole64Bytes).toBe(257 * GiB);
    expect(d.unknown).toEqual([]);
  });

  it('sizes a file BAR0 as serve does and does not create a missing aperture file', () => {
    const regs = path.join(dir, 'resource0');
    fs.writeFileSync(regs, Buffer.alloc(100 * 1024));
    const missing = path.join(dir, 'aperture');
    const d = describeFromFlags({ ...flags, apertureSize: 3 * MiB, bar0: { kind: 'file', path: regs }, aperturePath: missing }, numaLayout(2, 5));
    expect(d.bars[0]!.bytes).toBe(128 * 1024);
    expect(d.coherentMemory.backing?.kind).toBe('missing-file');
    expect(fs.existsSync(missing)).toBe(false);
    expect(d.unknown[0]).toMatch(/does not exist yet/);
    expect(d.guestNuma.deviceNodes).toEqual([5, 6]);
    expect(describeFromFlags(flags, numaLayout(0, 1)).coherentMemory.backing?.kind).toBe('memfd');
  });

  it('asks for a 64-bit hole twice the largest BAR plus the rest, never below QEMU\'s 32 GiB', () => {
    expect(pciHole64For([16 * MiB, 128 * MiB])).toBe(32 * GiB);
    expect(pciHole64For([16 * MiB, 128 * GiB])).toBe(257 * GiB);
    expect(pciHole64For([16 * MiB, 512 * GiB])).toBe(1025 * GiB);
  });
});

describe('describe from a running daemon', () => {
  let d: TestDaemon | null = null;
  afterEach(() => {
    d?.stop();
    d = null;
  });

  it('reads identity and BARs over vfio-user and says what it cannot learn', async () => {
    d = startTestDaemon();
    const got = await describeFromSocket(d.socket, numaLayout(8, 1));
    const fromFlags: DeviceDescription = describeFromFlags({ ...flags, deviceId: 0x2342, apertureSize: d.apertureSize }, numaLayout(8, 1));
    expect(got.source).toBe('socket');
    expect(got.device).toEqual(fromFlags.device);
    expect(got.bars).toEqual(fromFlags.bars);
    expect(got.coherentMemory).toEqual({ bar: 2, barBytes: 128 * MiB, memoryBytes: null, paddingBytes: null, layout: 'bar2', totalMemoryBytes: null, backing: null });
    expect(got.pciHole64Bytes).toBe(fromFlags.pciHole64Bytes);
    expect(got.unknown.join('\n')).toMatch(/memoryBytes/);
    expect(got.unknown.join('\n')).toMatch(/backing/);
  });

  it('finds the usable memory at BAR4 and the reserved part at BAR2 in the gh layout', async () => {
    d = startTestDaemon({ layout: 'gh', apertureSize: 2 * GiB, aperturePath: undefined });
    const got = await describeFromSocket(d.socket, numaLayout(8, 1));
    const fromFlags = describeFromFlags({ ...flags, deviceId: undefined, layout: 'gh', apertureSize: 2 * GiB }, numaLayout(8, 1));
    expect(got.bars).toEqual(fromFlags.bars);
    expect(got.bars.map((b) => [b.index, b.role])).toEqual([
      [0, 'registers'],
      [2, 'reserved-memory'],
      [4, 'coherent-memory'],
    ]);
    expect(got.coherentMemory).toMatchObject({ bar: 4, layout: 'gh', barBytes: 1 * GiB });
    expect(fromFlags.coherentMemory).toMatchObject({ bar: 4, layout: 'gh', memoryBytes: 1 * GiB, totalMemoryBytes: 2 * GiB });
    expect(got.device.deviceId).toBe('0x2342');
  });

  it('leaves the device as it found it: no scrub after describe, one after a client that got a mapping', async () => {
    d = startTestDaemon({ scrub: 'on-release' });
    const daemon = d.running.daemon;
    const marker = Buffer.from('tenant data');
    const fd = fs.openSync(d.aperturePath, 'r+');
    fs.writeSync(fd, marker, 0, marker.length, 0x1000);
    fs.closeSync(fd);

    await describeFromSocket(d.socket, numaLayout(8, 1));
    await until(() => daemon.client === null, 'describe to leave');
    expect(daemon.scrubProgress).toBeNull();
    await daemon.whenScrubbed();
    expect(fs.readFileSync(d.aperturePath).subarray(0x1000, 0x1000 + marker.length)).toEqual(marker);

    // a client that is handed the memory's fd could have written it: scrubbed
    const c = VfioUserClient.connect(d.socket);
    await c.negotiate();
    const { fd: mfd } = await c.regionInfo(RegionIndex.BAR2);
    expect(mfd).not.toBeNull();
    native.closeFd(mfd!);
    c.close();
    await until(() => daemon.client === null, 'the client to leave');
    await until(() => fs.readFileSync(d!.aperturePath).subarray(0x1000, 0x1000 + marker.length).equals(Buffer.alloc(marker.length)), 'the scrub');
  });

  it('explains a refusal when a VM holds the device', async () => {
    d = startTestDaemon();
    const vm = VfioUserClient.connect(d.socket);
    await vm.negotiate();
    await expect(describeFromSocket(d.socket, numaLayout(8, 1))).rejects.toThrow(/one client at a time/);
    vm.close();
  });
});

describe('describe and qemu-args on the command line', () => {
  let d: TestDaemon | null = null;
  afterEach(() => {
    d?.stop();
    d = null;
  });

  it('describe --socket asks the daemon; with device flags it describes the flags', async () => {
    d = startTestDaemon();
    // The daemon runs in this process: run the CLI in a child so both make progress.
    const asked = await runCli(['describe', '--socket', d.socket, '--numa-nodes', '4']);
    expect(asked.code).toBe(0);
    const a = JSON.parse(asked.stdout) as DeviceDescription;
    expect(a.source).toBe('socket');
    expect(a.guestNuma.deviceNodes).toEqual([1, 2, 3, 4]);
    const flagged = await runCli(['describe', '--socket', d.socket, '--aperture-size', '95G']);
    expect((JSON.parse(flagged.stdout) as DeviceDescription).coherentMemory.memoryBytes).toBe(95 * GiB);
  });

  it('qemu-args prints the RAM, nodes, device, initiators and hole, in three formats', async () => {
    const socket = '/run/nvgrace-vfio-user/gpu0.sock';
    // q35 named: the default is the host's architecture (virt on arm64, qemu-args.test.ts)
    const common = ['qemu-args', '--machine', 'q35', '--socket', socket, '--aperture-size', '95G', '--numa-nodes', '2', '--guest-memory', '4G'];
    const json = await runCli([...common, '--format', 'json']);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual([
      '-m', '4G',
      '-object', 'memory-backend-memfd,id=mem0,size=4G,share=on',
      '-numa', 'node,nodeid=0,memdev=mem0',
      '-numa', 'node,nodeid=1',
      '-numa', 'node,nodeid=2',
      '-device', `{"driver":"vfio-user-pci","id":"gpu0","socket":{"type":"unix","path":"${socket}"}}`,
      '-object', 'acpi-generic-initiator,id=gi1,pci-dev=gpu0,node=1',
      '-object', 'acpi-generic-initiator,id=gi2,pci-dev=gpu0,node=2',
      '-global', 'q35-pcihost.pci-hole64-size=257G',
    ]);

    const shell = await runCli(common);
    expect(shell.stdout).toContain(`-device '{"driver":"vfio-user-pci","id":"gpu0","socket":{"type":"unix","path":"${socket}"}}' \\\n`);
    expect(shell.stdout.trim().split(' \\\n')).toHaveLength(9);

    const xml = await runCli([...common, '--format', 'libvirt']);
    expect(xml.stdout).toContain('<qemu:commandline>');
    expect(xml.stdout).toContain(`<qemu:arg value='acpi-generic-initiator,id=gi2,pci-dev=gpu0,node=2'/>`);
    expect(xml.stdout).toContain("<pcihole64 unit='KiB'>269484032</pcihole64>");
    expect(xml.stdout).not.toContain("value='-m'"); // libvirt makes the RAM itself
    expect(xml.stdout).toContain("<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>");
  });

  it('qemu-args needs --socket and a valid id', async () => {
    expect((await runCli(['qemu-args', '--aperture-size', '1G'])).code).toBe(2);
    const bad = await runCli(['qemu-args', '--socket', '/x.sock', '--aperture-size', '1G', '--id', '0bad']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/not a QEMU id/);
    expect((await runCli(['qemu-args', '--socket', '/x.sock', '--first-node', '0'])).code).toBe(2);
  });

  it('takes the flags from NVGRACE_VFIO_USER_* variables, the command line winning', () => {
    const run = (args: string[]) =>
      JSON.parse(spawnSync(process.execPath, [CLI, 'describe', ...args], { encoding: 'utf8', env: { ...process.env, NVGRACE_VFIO_USER_APERTURE_SIZE: '1G', NVGRACE_VFIO_USER_DEVICE_ID: '2348' } }).stdout) as DeviceDescription;
    expect(run([]).coherentMemory.memoryBytes).toBe(GiB);
    expect(run([]).device.name).toBe('GH200');
    expect(run(['--aperture-size', '2G']).coherentMemory.memoryBytes).toBe(2 * GiB);
  });
});
