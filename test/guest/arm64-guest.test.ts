// arm64 guests, as Grace hosts run them: qemu-system-aarch64 -machine virt (TCG) with
// Debian's arm64 kernels, 4 KiB pages and 16 KiB pages, attached to daemons on this host.
// Each boot carries one device per layout (bar2, gh, gb) and one of a real GH200 size
// (95 GiB aperture, BAR2 128 GiB, sparse), and checks each from inside as the x86 layout
// test does. The 16 KiB boot is started with what `qemu-args --machine virt` prints for a
// GH200 480GB (BAR2 512 GiB, more than virt's default window): UEFI firmware, a grown high
// PCIe window, memfd RAM, and NUMA nodes that reach the guest through generic initiators.
import fs from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { planLayout, type MemoryBarLayout } from '../../src/device/layout.js';
import { runCli } from '../helpers/cli.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { bootGuest, describeBoot, initExitStatus, parseChecks } from './boot.js';
import { buildInitramfs } from './initramfs.js';
import { expectGuestSaw, expectHostSaw, hex, hostWrites, layoutScript, runOutput, seenBars, type LayoutCase } from './layout-checks.js';
import { useQemu } from './qemu-fixture.js';
import { vfioUserDevice } from './vfio-user-device.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const qemu = useQemu('aarch64');

/** virt's default high PCIe MMIO window: [512 GiB, 1 TiB). */
const HIGH_WINDOW = 512n * BigInt(GiB);

interface Device extends LayoutCase {
  tag: string;
}

// Distinct device IDs: bar-check finds each device by its ID.
const DEVICES: Device[] = [
  { tag: 'bar2', layout: 'bar2', label: '96 MiB', memory: 96 * MiB, deviceId: 0x2348, bars: { 0: 16 * MiB, 1: 0, 2: 128 * MiB, 3: 0, 4: 0, 5: 0 } },
  // usemem 1.5 GiB at BAR4, resmem 1.25 GiB + 1000 at BAR2 (a partial last page, served trapped)
  { tag: 'gh', layout: 'gh', label: '2.75 GiB + 1000 bytes', memory: 2816 * MiB + 1000, deviceId: 0x2345, bars: { 0: 16 * MiB, 1: 0, 2: 2048 * MiB, 3: 0, 4: 2048 * MiB, 5: 0 } },
  { tag: 'gb', layout: 'gb', label: '160 MiB', memory: 160 * MiB, deviceId: 0x2941, bars: { 0: 16 * MiB, 1: 0, 2: 0, 3: 0, 4: 256 * MiB, 5: 0 } },
  // GH200 120GB: 95 GiB of HBM3 behind a 128 GiB BAR2
  { tag: 'gh200', layout: 'bar2', label: '95 GiB, sparse', memory: 95 * GiB, deviceId: 0x2342, bars: { 0: 16 * MiB, 1: 0, 2: 128 * GiB, 3: 0, 4: 0, 5: 0 }, window: 2 * MiB },
];

interface Attached {
  dev: Device;
  parts: MemoryBarLayout[];
  file: string;
  daemon: TestDaemon;
}

describe('arm64 virt guests (4K and 16K page kernels) see every layout', () => {
  const attached: Attached[] = [];
  const extra: TestDaemon[] = [];
  afterEach(() => {
    for (const a of attached.splice(0)) {
      a.daemon.stop();
      fs.rmSync(a.file, { force: true });
    }
    for (const d of extra.splice(0)) d.stop();
  });

  /** One daemon per device, its aperture a sparse file in /dev/shm holding the host's marks. */
  function attachAll(): Attached[] {
    for (const dev of DEVICES) {
      const file = `/dev/shm/nvgrace-arm64-${dev.tag}-${process.pid}-${Date.now()}`;
      const daemon = startTestDaemon({ layout: dev.layout, apertureSize: dev.memory, aperturePath: file, deviceId: dev.deviceId });
      const parts = planLayout(dev.layout, dev.memory).bars;
      attached.push({ dev, parts, file, daemon });
      hostWrites(file, parts);
    }
    return attached;
  }

  function script(devs: Attached[], head: string[]): string {
    return [
      ...head,
      'echo "PAGESIZE $(grep -m1 KernelPageSize /proc/self/smaps)"',
      ...devs.map((a) => `echo "UPTIME $(cut -d' ' -f1 /proc/uptime) ${a.dev.tag}"\n${layoutScript(a.dev, a.parts, a.dev.tag)}`),
      'echo "UPTIME $(cut -d\' \' -f1 /proc/uptime) end"',
    ].join('\n');
  }

  function expectAll(output: string, devs: Attached[], why: string): void {
    // guest seconds since boot as each device's checks begin: where a slow boot spends its time
    console.info([...output.matchAll(/UPTIME (\S+) (\S+)/g)].map((m) => `${m[2]}@${m[1]}s`).join(' '));
    for (const a of devs) {
      expectGuestSaw(output, a.dev, a.parts, a.dev.tag, why);
      expectHostSaw(a.file, a.dev, a.parts, a.daemon);
    }
    // the 128 GiB BAR sits aligned in virt's high PCIe window
    const big = seenBars(output, 'gh200', devs.find((a) => a.dev.tag === 'gh200')!.parts).find((b) => b.bar === 2)!;
    expect(big.start % BigInt(128 * GiB), why).toBe(0n);
    expect(big.start >= HIGH_WINDOW, `BAR2 at ${hex(Number(big.start))}\n${why}`).toBe(true);
  }

  it('4 KiB pages: bar2, gh, gb and a 95 GiB aperture, direct kernel boot', { timeout: 300_000 }, async (ctx) => {
    const q = qemu.require(ctx);
    const devs = attachAll();
    const initrd = await buildInitramfs({ arch: 'aarch64', initCommands: script(devs, []) });
    const r = await bootGuest({
      qemu: q,
      pageSize: '4k',
      initrd,
      memoryMiB: 512,
      extraArgs: devs.flatMap((a, i) => vfioUserDevice(a.daemon.socket, `gpu${i}`)),
      timeoutMs: 240_000,
    });
    const why = describeBoot(r, 150);
    console.info(`arm64 guest boot (4K pages, 4 devices): ${r.durationMs} ms`);
    expect(r.timedOut, why).toBe(false);
    expect(initExitStatus(r.output), why).not.toBeNull();
    expect(r.output, why).toMatch(/PAGESIZE KernelPageSize: +4 kB/);
    expectAll(r.output, devs, why);
  });

  it('16 KiB pages, booted with `qemu-args --machine virt`: UEFI, a 1T window for a 512 GiB BAR, NUMA nodes', { timeout: 300_000 }, async (ctx) => {
    const q = qemu.require(ctx);
    const devs = attachAll();
    // A GH200 480GB: 480 GiB behind a 512 GiB BAR2, which virt's default 512 GiB window cannot hold.
    const big = startTestDaemon({ apertureSize: 480 * GiB, aperturePath: `/dev/shm/nvgrace-arm64-480g-${process.pid}-${Date.now()}`, deviceId: 0x2346 });
    extra.push(big);
    const firmware = join(q.root ?? '/', 'usr/share/qemu-efi-aarch64/QEMU_EFI.fd');
    const gen = await runCli(['qemu-args', '--machine', 'virt', '--socket', big.socket, '--id', 'big', '--format', 'json', '--guest-memory', '768M', '--numa-nodes', '2', '--firmware', firmware]);
    expect(gen.code, gen.stderr).toBe(0);
    const args = JSON.parse(gen.stdout) as string[];
    expect(args.slice(0, 2)).toEqual(['-machine', 'virt,highmem-mmio-size=1T']);
    expect(args).toContain('acpi-generic-initiator,id=gi2,pci-dev=big,node=2');

    const initrd = await buildInitramfs({
      arch: 'aarch64',
      initCommands: script(devs, [
        'echo "NUMA-NODES $(ls -d /sys/devices/system/node/node[0-9]* | wc -l)"',
        'for n in /sys/devices/system/node/node[0-9]*; do echo "NODE $(basename $n) $(grep -o "MemTotal: *[0-9]* kB" $n/meminfo)"; done',
        'echo "RUN big mem-bar 2 BEGIN"',
        `bar-check --device 0x2346 --bar-size 0:16M --bar-size 2:${hex(512 * GiB)} --bar-flags 2:mem64,prefetch`,
        'echo "RUN big mem-bar 2 END"',
      ]),
    });
    const r = await bootGuest({
      qemu: q,
      pageSize: '16k',
      initrd,
      ownMemory: true,
      extraArgs: [...args, ...devs.flatMap((a, i) => vfioUserDevice(a.daemon.socket, `gpu${i}`))],
      timeoutMs: 240_000,
    });
    const why = describeBoot(r, 150);
    console.info(`arm64 guest boot (16K pages, UEFI, qemu-args, 5 devices): ${r.durationMs} ms`);
    expect(r.timedOut, why).toBe(false);
    expect(initExitStatus(r.output), why).not.toBeNull();
    expect(r.output, why).toMatch(/PAGESIZE KernelPageSize: +16 kB/);
    // node 0 holds the RAM; the two device nodes exist, through their generic initiators, and hold none
    expect(r.output, why).toContain('NUMA-NODES 3');
    expect(r.output, why).toMatch(/NODE node0 MemTotal: *[1-9]\d* kB/);
    for (const n of [1, 2]) expect(r.output, why).toMatch(new RegExp(`NODE node${n} MemTotal: *0 kB`));
    // the 512 GiB BAR was placed, which takes the grown window
    const bigRun = runOutput(r.output, 'big', 2);
    expect(bigRun, why).toMatch(/DEVICE \S+ 10de:2346/);
    expect(parseChecks(bigRun).filter((c) => !c.pass), why).toEqual([]);
    expect(parseChecks(bigRun).map((c) => c.name), why).toEqual(['enable', 'bar0-size', 'bar2-size', 'bar2-flags']);
    expectAll(r.output, devs, why);
  });
});
