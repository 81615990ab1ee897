// The daemon on a 16 KiB page kernel, as on a Grace host with a non-4K kernel: an arm64
// virt guest (TCG) boots Debian's arm64-16k kernel with the arm64 Node and an aarch64 build
// of the project in its initramfs (both from the arm64 root, test/arm64/arm64-root.ts). In
// the guest the daemon serves memfd, file and huge-page (2M, 32M, 1G: the 16K kernel's
// sizes) apertures, and our own client (test/guest/pagesize-check.mjs) checks each: pgsizes,
// BAR2's mmap areas and fd offset in whole 16 KiB pages (or huge pages), the trailing partial
// page served trapped from the same backing, ~0 padding, dropped writes, DMA maps at 16 KiB.
import { afterEach, describe, expect, it } from 'vitest';
import { arm64NodeLibraries, ensureArm64Build, resolveInRoot } from '../arm64/arm64-root.js';
import { bootGuest, describeBoot, initExitStatus } from './boot.js';
import { GUEST_PROJECT_DIR, buildNodeInitramfs, externalizedBuiltins, type NodeInitramfs } from './node-initramfs.js';
import { useQemu } from './qemu-fixture.js';

const qemu = useQemu('aarch64');
const KiB = 1024;
const MiB = 2 ** 20;
const GiB = 2 ** 30;
const PAGE = 16 * KiB;

interface Backing {
  label: string;
  /** Started by the guest with `serve` and these flags; otherwise by the checking process itself. */
  cli?: string[];
  memory: number;
  /** The unit the daemon maps the memory in (a huge page size starts it on huge pages). */
  granule: number;
  file?: string;
}

// A trailing partial page wherever the backing allows one; 1 GiB exactly (a second 1 GiB page
// would double the guest's RAM). Each Node start costs tens of seconds in the TCG guest: one
// daemon runs as `serve` (its flags parsed as an operator's: --aperture-hugepages 32M), the
// checking process starts the others itself with startDaemon, what `serve` runs.
const BACKINGS: Backing[] = [
  { label: 'memfd', memory: 64 * MiB + 1000, granule: PAGE },
  { label: 'file', memory: 64 * MiB + 1000, granule: PAGE, file: '/tmp/aperture' },
  { label: 'huge2m', memory: 64 * MiB + 1000, granule: 2 * MiB },
  { label: 'huge32m', cli: ['--aperture-hugepages', '32M'], memory: 64 * MiB + 1000, granule: 32 * MiB },
  { label: 'huge1g', memory: 1 * GiB, granule: 1 * GiB },
];
// Reserved at boot, while memory is not yet fragmented: 33 + 3 + 1 pages.
const HUGEPAGES = ['hugepagesz=1G', 'hugepages=1', 'hugepagesz=32M', 'hugepages=3', 'hugepagesz=2M', 'hugepages=33'];

/** The guest's script: the `serve` daemons and the checking process start together. */
function guestScript(): string {
  const serve = `node ${GUEST_PROJECT_DIR}/bin/nvgrace-vfio-user.js serve`;
  const cli = BACKINGS.filter((b) => b.cli !== undefined);
  const lines = [
    'up() { cut -d" " -f1 /proc/uptime; }',
    'echo "PG16K page=$(grep -m1 KernelPageSize /proc/self/smaps | tr -s " ")"',
    'for h in /sys/kernel/mm/hugepages/*; do echo "PG16K pool $(basename $h) free=$(cat $h/free_hugepages)"; done',
    'echo "PG16K start=$(up)"',
  ];
  for (const b of cli) {
    lines.push(`${serve} --socket /tmp/${b.label}.sock --aperture-size ${b.memory} ${b.cli!.join(' ')} 2>/tmp/${b.label}.log &`);
    lines.push(`echo $! > /tmp/${b.label}.pid`);
  }
  const specs = BACKINGS.map((b) => [b.label, b.cli ? `/tmp/${b.label}.sock` : 'here', b.memory, b.granule, ...(b.file ? [b.file] : [])].join(':'));
  lines.push(
    // A daemon that fails to start is reported with its log instead of waited for.
    `for b in ${cli.map((b) => b.label).join(' ')}; do`,
    '  i=0; while [ ! -S /tmp/$b.sock ] && kill -0 $(cat /tmp/$b.pid) 2>/dev/null && [ $i -lt 1200 ]; do sleep 0.25; i=$((i+1)); done',
    '  [ -S /tmp/$b.sock ] || { echo "PG16K daemon $b did not start"; sed "s/^/PG16K $b-log: /" /tmp/$b.log; }',
    'done',
    'echo "PG16K listening=$(up)"',
    `node ${GUEST_PROJECT_DIR}/test/guest/pagesize-check.mjs ${specs.join(' ')}`,
    'echo "PG16K check-exit=$?"',
    'echo "PG16K checked=$(up)"',
    `for b in ${cli.map((b) => b.label).join(' ')}; do kill -TERM $(cat /tmp/$b.pid); wait $(cat /tmp/$b.pid); echo "PG16K daemon-exit $b=$?"; done`,
  );
  return lines.join('\n');
}

describe('the daemon in an arm64 guest with 16 KiB pages', () => {
  let image: NodeInitramfs | null = null;
  afterEach(() => {
    image?.remove();
    image = null;
  });

  it('memfd, file and 2M/32M/1G huge pages: pgsizes, areas in whole pages, the trapped tail, padding, DMA at 16 KiB', { timeout: 30 * 60_000 }, async (ctx) => {
    const q = qemu.require(ctx);
    // The aarch64 build: cached in the arm64 root (minutes under emulation the first time).
    const build = ensureArm64Build();
    const libraries = arm64NodeLibraries(build.root).map((l) => ({ guestPath: l.inRoot, hostPath: l.host }));
    const libnode = libraries.find((l) => /\/libnode\.so/.test(l.guestPath));
    const files = libnode ? externalizedBuiltins(libnode.hostPath, (p) => resolveInRoot(build.root.root, p)) : [];
    image = buildNodeInitramfs({
      arch: 'aarch64',
      initCommands: guestScript,
      node: { binary: build.root.node, libraries, files },
      projectDir: build.dir,
      checkoutFiles: ['test/guest/pagesize-check.mjs'],
    });
    const r = await bootGuest({
      qemu: q,
      pageSize: '16k',
      initrd: image.path,
      // node, the project and the image itself, plus 1 GiB + 96 MiB + 66 MiB of huge pages
      memoryMiB: 2560,
      appendArgs: HUGEPAGES,
      timeoutMs: 20 * 60_000,
    });
    const why = describeBoot(r, 200);
    const say = (key: string): string | null => new RegExp(`PG16K ${key}=(\\S*)`).exec(r.output)?.[1] ?? null;
    console.info(
      `arm64 16K guest: ${(image.bytes / MiB).toFixed(0)} MiB image, boot ${r.durationMs} ms; guest uptime: daemons started ${say('start')} s, listening ${say('listening')} s, checked ${say('checked')} s`,
    );
    expect(r.timedOut, why).toBe(false);
    expect(initExitStatus(r.output), why).not.toBeNull();
    expect(r.output, why).toMatch(/PG16K page=KernelPageSize: 16 kB/);
    // the 16K kernel's huge page sizes, reserved at boot
    for (const size of ['2048kB', '32768kB', '1048576kB']) expect(r.output, why).toMatch(new RegExp(`PG16K pool hugepages-${size} free=[1-9]`));

    const lines = r.output.split(/\r?\n/).filter((l) => l.includes('PGCHECK '));
    const failed = lines.filter((l) => / FAIL /.test(l));
    expect(failed, why).toEqual([]);
    expect(say('check-exit'), why).toBe('0');
    for (const b of BACKINGS) {
      const got = (name: string) => lines.some((l) => l.includes(`PGCHECK ${b.label}-${name} PASS`));
      for (const name of ['pgsizes', 'fd-offset', 'areas-whole-granules', 'areas-end', 'area0-same-bytes', 'dma-map-page', 'dma-map-4k-refused', 'dma-map-misaligned-refused']) {
        expect(got(name), `${b.label}: ${name}\n${why}`).toBe(true);
      }
      const padding = lines.filter((l) => l.includes(`PGCHECK ${b.label}-padding@`) && / PASS /.test(l));
      // a power-of-two memory fills its BAR: no padding
      if (!Number.isInteger(Math.log2(b.memory))) expect(padding, `${b.label} padding\n${why}`).toHaveLength(2);
      else expect(got('no-padding'), `${b.label}: memory fills its BAR\n${why}`).toBe(true);
      if (b.memory % b.granule !== 0) {
        for (const name of ['tail-trapped', 'tail-same-backing', ...(b.file ? ['tail-in-file'] : [])]) expect(got(name), `${b.label}: ${name}\n${why}`).toBe(true);
      }
      if (b.cli) expect(r.output, why).toContain(`PG16K daemon-exit ${b.label}=0`);
    }
    expect(r.output, why).toMatch(/PGCHECK DONE pass=\d+ fail=0/);
  });
});
