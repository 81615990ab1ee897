// The backings that are right on real hardware, each serving a real guest: one QEMU
// with three vfio-user-pci devices, backed by anonymous 2 MiB huge pages, by shared
// memory bound to NUMA node 0, and by a hugetlbfs file bound to node 0. While the
// guest runs, QEMU's own mappings are read from /proc: huge pages and the binding
// must hold there, in the client, not only in the daemon.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { devMajorMinor } from '../../src/backends/device-dax.js';
import { native } from '../../src/native/native.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { mountHugetlbfs, requireReservation, reserveHugePages, type HugePageReservation } from '../helpers/hugepages.js';
import { fillPattern, findPatternMismatch, nvgraceBarCheckArgs, shellQuote } from './bar-check.js';
import { bootGuest, describeBoot, parseBarCheckDone, parseChecks } from './boot.js';
import { buildInitramfs } from './initramfs.js';
import { useQemu } from './qemu-fixture.js';

const MiB = 1024 * 1024;
const RW = native.PROT_READ | native.PROT_WRITE;
const qemu = useQemu();
const SNAPSHOT_MARK = 'HOST-SNAPSHOT-NOW';

interface Backed {
  name: string;
  daemon: TestDaemon;
  memSize: number;
  bar2Size: number;
  /** PCI slot in the guest. */
  slot: number;
}

/** The host's own mapping of an aperture's memory (what a host-side tool would use), in whole pages of the backing. */
function hostView(d: TestDaemon, length: number): { bytes: Buffer; map: ArrayBuffer } {
  const mem = d.running.aperture.memory;
  const page = d.running.aperture.facts.pageSize;
  const map = native.mmap(mem.fd, Math.ceil(length / page) * page, RW, native.MAP_SHARED, mem.fdOffset);
  return { bytes: Buffer.from(map), map };
}

/** "dev inode" of an fd as /proc/PID/maps prints them. */
function mapsId(fd: number): string {
  const st = fs.fstatSync(fd);
  const [maj, min] = devMajorMinor(st.dev);
  return `${maj.toString(16).padStart(2, '0')}:${min.toString(16).padStart(2, '0')} ${st.ino}`;
}

interface ClientMapping {
  start: string;
  kernelPageSize: number;
  numaMaps: string;
}

/** QEMU's mappings of a file (by dev and inode), with their page size and NUMA policy line. */
function clientMappings(pid: number, id: string): ClientMapping[] {
  const smaps = fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/);
  const numa = fs.readFileSync(`/proc/${pid}/numa_maps`, 'utf8').split('\n');
  const out: ClientMapping[] = [];
  for (const block of smaps) {
    const head = block.split('\n')[0]!.split(/\s+/);
    if (`${head[3]} ${head[4]}` !== id) continue;
    const start = head[0]!.split('-')[0]!;
    out.push({
      start,
      kernelPageSize: Number(/KernelPageSize:\s+(\d+) kB/.exec(block)?.[1]) * 1024,
      numaMaps: numa.find((l) => l.startsWith(`${start} `)) ?? '',
    });
  }
  return out;
}

describe('a guest on the cacheable backings', () => {
  let pool: HugePageReservation | string | null = null;
  // 25 pages for 49 MiB, 10 for 20 MiB, and a few spare
  beforeAll(async () => {
    pool = await reserveHugePages(2 * MiB, 40);
  });
  afterAll(async () => {
    if (typeof pool === 'object') await pool?.release();
  });
  const cleanup: (() => void)[] = [];
  afterEach(() => {
    // every step runs even when one fails: a mount or a daemon left behind outlives the test
    const errors: unknown[] = [];
    for (const f of cleanup.splice(0).reverse()) {
      try {
        f();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length > 0) throw errors[0];
  });

  it('serves huge pages and NUMA-bound memory that QEMU maps as such', async (ctx) => {
    const q = qemu.require(ctx);
    requireReservation(pool, ctx);
    const mnt = mountHugetlbfs(2 * MiB);
    cleanup.push(() => mnt.unmount());
    const start = (o: Parameters<typeof startTestDaemon>[0]) => {
      const d = startTestDaemon(o);
      cleanup.push(() => d.stop());
      return d;
    };
    const devices: Backed[] = [
      {
        // not a whole number of huge pages: the last MiB is trapped and served through the daemon's mapping
        name: 'hugepages',
        daemon: start({ aperturePath: undefined, apertureHugePages: 2 * MiB, apertureSize: 49 * MiB }),
        memSize: 49 * MiB,
        bar2Size: 64 * MiB,
        slot: 5,
      },
      {
        name: 'numa-shmem',
        daemon: start({ aperturePath: undefined, apertureNumaNode: 0, apertureSize: 24 * MiB + 4096 }),
        memSize: 24 * MiB + 4096,
        bar2Size: 32 * MiB,
        slot: 6,
      },
      {
        name: 'numa-hugetlbfs',
        daemon: start({ aperturePath: path.join(mnt.dir, 'gpu2'), apertureNumaNode: 0, apertureSize: 20 * MiB }),
        memSize: 20 * MiB,
        bar2Size: 32 * MiB,
        slot: 7,
      },
    ];
    expect(devices.map((d) => d.daemon.running.aperture.facts)).toEqual([
      { kind: 'memfd-hugetlb', path: null, numaNode: null, pageSize: 2 * MiB, cacheable: true },
      { kind: 'memfd', path: null, numaNode: 0, pageSize: 4096, cacheable: true },
      { kind: 'hugetlbfs', path: path.join(mnt.dir, 'gpu2'), numaNode: 0, pageSize: 2 * MiB, cacheable: true },
    ]);

    // host bytes before boot, through the host's own mappings: the head and the very end of memory
    const views = devices.map((d) => {
      const v = hostView(d.daemon, d.memSize);
      cleanup.push(() => native.munmap(v.map));
      v.bytes.writeUInt32LE(0xdeadbeef, 0x1000);
      fillPattern(v.bytes, 1 * MiB, 1 * MiB, 0xabc + d.slot);
      v.bytes.writeUInt32LE(0x600dcafe + d.slot, d.memSize - 4);
      return v;
    });

    const script = devices
      .map((d) => {
        const args = nvgraceBarCheckArgs({
          memSize: d.memSize,
          bar2Size: d.bar2Size,
          expect: [
            [0x1000, 0xdeadbeef],
            [d.memSize - 4, 0x600dcafe + d.slot],
          ],
          write: [
            [0x2000, 0xcafef00d],
            [d.memSize - 8, 0x5a5a5a00 + d.slot],
          ],
          extra: ['--bdf', `0000:00:${d.slot.toString(16).padStart(2, '0')}.0`, '--expect-fill', `1M:1M:${0xabc + d.slot}`, '--write-fill', `8M:2M:${0x77 + d.slot}`],
        });
        return `echo "=== ${d.name} ==="\nbar-check ${shellQuote(args)}\necho "bar-check ${d.name} exit=$?"`;
      })
      .join('\n');
    // the guest holds still after its checks so the host can read QEMU's mappings, pages touched
    const initrd = await buildInitramfs({ initCommands: `${script}\necho ${SNAPSHOT_MARK}\nsleep 3` });

    const ids = devices.map((d) => mapsId(d.daemon.running.aperture.memory.fd));
    let seen: ClientMapping[][] | null = null;
    let snapshotError = '';
    let serial = '';
    const onOutput = (chunk: string) => {
      serial += chunk;
      if (seen !== null || snapshotError !== '' || !serial.includes(SNAPSHOT_MARK)) return;
      const pid = devices[0]!.daemon.running.daemon.client?.peer?.pid;
      try {
        if (pid === undefined) throw new Error('no client pid');
        seen = ids.map((id) => clientMappings(pid, id));
      } catch (err) {
        snapshotError = String(err);
      }
    };

    const extraArgs = devices.flatMap((d) => [
      '-device',
      JSON.stringify({ driver: 'vfio-user-pci', id: d.name, addr: `0x${d.slot.toString(16)}`, socket: { type: 'unix', path: d.daemon.socket } }),
    ]);
    const r = await bootGuest({ qemu: q, initrd, extraArgs, timeoutMs: 240_000, onOutput });
    const why = describeBoot(r, 150);
    console.info(`guest boot (three backings): ${r.durationMs} ms`);
    expect(r.timedOut, why).toBe(false);

    const sections = r.output.split(/=== (\S+) ===/);
    for (const d of devices) {
      const idx = sections.indexOf(d.name);
      expect(idx, why).toBeGreaterThan(0);
      const out = sections[idx + 1]!;
      const checks = parseChecks(out);
      expect(checks.filter((c) => !c.pass).map((c) => `${d.name}: ${c.name} ${c.details}`), why).toEqual([]);
      const names = checks.map((c) => c.name);
      for (const must of ['bar2-size', 'bar2-flags', `expect32@0x1000`, `expect32@${'0x' + (d.memSize - 4).toString(16)}`, 'expect-fill@0x100000+0x100000', 'write32@0x2000', 'write-fill@0x800000+0x200000']) {
        expect(names, `${d.name}\n${why}`).toContain(must);
      }
      expect(names.filter((n) => n.startsWith('padding-read')).length, why).toBeGreaterThanOrEqual(12);
      expect(parseBarCheckDone(out)?.fail, why).toBe(0);
      expect(out, why).toContain(`bar-check ${d.name} exit=0`);
    }

    // what the guest left, seen by the host
    devices.forEach((d, i) => {
      const bytes = views[i]!.bytes;
      expect(bytes.readUInt32LE(0x2000), d.name).toBe(0xcafef00d);
      expect(bytes.readUInt32LE(d.memSize - 8), d.name).toBe(0x5a5a5a00 + d.slot);
      expect(findPatternMismatch(bytes, 8 * MiB, 2 * MiB, 0x77 + d.slot), d.name).toBe(-1);
      expect(d.daemon.running.daemon.device.aperture.padding.droppedWrites, d.name).toBeGreaterThan(0);
    });

    // QEMU's own mappings, as the kernel reports them after the guest used them
    expect(snapshotError, why).toBe('');
    expect(seen, `QEMU's mappings were not read\n${why}`).not.toBeNull();
    const [huge, shmem, hugefile] = seen! as ClientMapping[][];
    for (const [name, maps] of [['hugepages', huge], ['numa-shmem', shmem], ['numa-hugetlbfs', hugefile]] as const) {
      expect(maps!.length, `QEMU has no mapping of the ${name} backing`).toBeGreaterThan(0);
      // pages in QEMU's mapping, all on node 0 and none elsewhere
      expect(maps!.some((m) => / N0=\d+/.test(m.numaMaps)), `${name}: ${JSON.stringify(maps)}`).toBe(true);
      for (const m of maps!) expect(m.numaMaps, name).not.toMatch(/ N[1-9]\d*=/);
    }
    for (const m of [...huge!, ...hugefile!]) expect(m.kernelPageSize, `QEMU maps huge page backings with 2 MiB pages: ${m.numaMaps}`).toBe(2 * MiB);
    // shared memory: the policy the daemon set on the file governs QEMU's mapping
    for (const m of shmem!) expect(m.numaMaps, 'QEMU\'s mapping of the NUMA-bound memfd').toMatch(/ bind:0 /);

    // the pages the guest wrote through QEMU are on node 0 (queried through the host's mapping)
    for (const i of [1, 2]) {
      const map = views[i]!.map;
      const bytes = views[i]!.bytes;
      const probe = [0x2000, 8 * MiB, 9 * MiB, devices[i]!.memSize - 8];
      let touched = 0;
      for (const at of probe) touched += bytes[at]!; // maps the page into this mapping so it can be queried
      expect(touched).toBeGreaterThan(0);
      const status = new Int32Array(1);
      for (const at of probe) {
        native.pageNodes(map, at - (at % 4096), 4096, status);
        expect(status[0], `${devices[i]!.name} page at 0x${at.toString(16)}`).toBe(0);
      }
    }
  }, 400_000);
});
