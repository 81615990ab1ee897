// The real-host backings on a real kernel (Debian's cloud kernel, under QEMU TCG), in one
// guest that has all three at once:
// - two emulated NVDIMMs, put in devdax mode through libnvdimm's sysfs: real device-daxes
//   of 2 MiB and 1 GiB alignment;
// - a physical range reserved with memmap=SIZE$ADDR: /dev/mem with STRICT_DEVMEM;
// - two NUMA nodes with memory.
// Inside it the daemon serves each (five daemons at once) and our client maps BAR2 as QEMU
// does, comparing with the kernel's own view of the memory; the operator's mistakes each get
// one line. One boot; one Node start per daemon, one for the mistakes, two for the client.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { bootGuest, describeBoot } from './boot.js';
import { GUEST_PROJECT_DIR, buildNodeInitramfs, modulesDirFor, type NodeInitramfs } from './node-initramfs.js';
import { guestCacheDir } from './paths.js';
import { useQemu } from './qemu-fixture.js';

const qemu = useQemu();

/** libnvdimm with the ACPI NFIT bus QEMU's NVDIMM is on, and device-dax over it (no nd_pmem: the namespace stays unclaimed). */
const MODULES = ['libnvdimm', 'nfit', 'device_dax', 'dax_pmem'];
const MiB = 1024 * 1024;
/** The emulated NVDIMM, on node 1: its memory plus a label area, which stays uninitialised (a label-less namespace, as memmap=!). */
const NVDIMM_BYTES = 258 * MiB;
const LABEL_BYTES = 2 * MiB;
/** A second NVDIMM for a device-dax of 1 GiB alignment: the data starts 1 GiB in, so 2 GiB are left. */
const NVDIMM_1G_BYTES = 3 * 1024 * MiB + LABEL_BYTES;
/** Reserved with memmap=16M$0x20000000: below node 0's end (768 MiB), so inside what would be RAM. 12 MiB of it are served (a 16 MiB BAR2 with padding). */
const RESERVED = { addr: 0x2000_0000, size: 16 * MiB };
/** System RAM on node 0: /dev/mem must be refused there. */
const SYSTEM_RAM = 0x1000_0000;
const DAX_BASE = 0x40_0000;

function guestScript(moduleFiles: string[]): string {
  const cli = `node ${GUEST_PROJECT_DIR}/bin/nvgrace-vfio-user.js serve --log-level warn`;
  return `
say() { echo "KMEM $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
for m in ${moduleFiles.join(' ')}; do
  case $m in
    *.xz) xzcat /lib/modules/$m > /tmp/mod.ko && insmod /tmp/mod.ko || say "insmod-failed $m" ;;
    *) insmod /lib/modules/$m || say "insmod-failed $m" ;;
  esac
done
mount -t debugfs none /sys/kernel/debug
say "nodes-with-memory=$(cat /sys/devices/system/node/has_memory)"
say "iomem-reserved: $(grep -i '${RESERVED.addr.toString(16)}-' /proc/iomem | tr -s ' ')"

# devdax by hand, as ndctl create-namespace -f -e namespaceN.0 -m devdax -a ALIGN does it:
# the region's dax seed gets a uuid, the alignment, where the page structs go and the
# namespace, and dax_pmem takes it; the device-dax has the seed's name
ND=/sys/bus/nd/devices
waitfor() { i=0; while [ ! -e $1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; }
devdax() {
  R=$ND/$1
  waitfor $R/dax_seed
  SEED=$(cat $R/dax_seed)
  NS=$(cd $R && ls -d namespace*.*)
  [ -e $R/$NS/driver ] && echo $NS > $R/$NS/driver/unbind
  cat /proc/sys/kernel/random/uuid > $ND/$SEED/uuid
  echo $2 > $ND/$SEED/align
  echo pmem > $ND/$SEED/mode
  echo $NS > $ND/$SEED/namespace
  echo $SEED > /sys/bus/nd/drivers/dax_pmem/bind
  waitfor /dev/$SEED
  echo $SEED
}
waitfor $ND/region1
for r in $ND/region*; do
  if [ $(cat $r/size) -gt ${1024 * MiB} ]; then DAXG=$(devdax $(basename $r) 1073741824); else DAX=$(devdax $(basename $r) 2097152); fi
done
for d in $DAX $DAXG; do
  say "dax=$d size=$(cat /sys/bus/dax/devices/$d/size) align=$(cat /sys/bus/dax/devices/$d/align) node=$(cat /sys/bus/dax/devices/$d/target_node) dev=$(ls /dev/$d)"
done

# huge pages for the NUMA daemon, on node 1 only
echo 8 > /sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages
say "node1-hugepages=$(cat /sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages)"

T0=$(up)
${cli} --socket /tmp/dax.sock --aperture-path /dev/$DAX --aperture-base ${DAX_BASE} --scrub on-release --log-level info 2>/tmp/dax.log &
DAXPID=$!
${cli} --socket /tmp/mem.sock --aperture-path /dev/mem --aperture-base ${RESERVED.addr} --aperture-size 12M --log-level info 2>/tmp/mem.log &
MEMPID=$!
${cli} --socket /tmp/numa.sock --aperture-numa-node 1 --aperture-size 32M 2>/tmp/numa.log &
NUMAPID=$!
${cli} --socket /tmp/huge.sock --aperture-numa-node 1 --aperture-hugepages 2M --aperture-size 12M 2>/tmp/huge.log &
HUGEPID=$!
${cli} --socket /tmp/dax1g.sock --aperture-path /dev/$DAXG --aperture-size ${1028 * MiB} 2>/tmp/dax1g.log &
DAXGPID=$!

# the operator's mistakes: each one line on stderr and exit 1 (all in one Node process)
node ${GUEST_PROJECT_DIR}/test/guest/kernel-mem-mistakes.mjs \\
  dax-misaligned --log-level warn --aperture-path /dev/$DAX --aperture-base 0x100000 ';' \\
  mem-ram --log-level warn --aperture-path /dev/mem --aperture-base ${SYSTEM_RAM} --aperture-size 16M ';' \\
  numa-short --log-level warn --aperture-numa-node 1 --aperture-size 512M ';' \\
  huge-short --log-level warn --aperture-numa-node 1 --aperture-hugepages 2M --aperture-size 64M 2>/tmp/mistakes.err
awk '/^@@begin /{ n = 0; text = ""; next }
  /^@@end /{ print "KMEM " $2 "-exit=" $3; print "KMEM " $2 "-lines=" n; print "KMEM " $2 "-stderr: " text; next }
  { n++; text = text $0 }' /tmp/mistakes.err

waitsock() { i=0; while [ ! -S $1 ] && kill -0 $2 2>/dev/null && [ $i -lt 480 ]; do sleep 0.25; i=$((i+1)); done; }
waitsock /tmp/dax.sock $DAXPID; waitsock /tmp/mem.sock $MEMPID; waitsock /tmp/numa.sock $NUMAPID; waitsock /tmp/huge.sock $HUGEPID; waitsock /tmp/dax1g.sock $DAXGPID
T1=$(up)
say "meminfo: $(grep -E 'MemTotal|MemAvailable' /proc/meminfo | tr -s ' ' | tr '\n' ' ')"
node ${GUEST_PROJECT_DIR}/test/guest/kernel-mem-check.mjs \\
  dax /tmp/dax.sock /dev/$DAX ${DAX_BASE} \\
  dax1g /tmp/dax1g.sock /dev/$DAXG \\
  mem /tmp/mem.sock ${RESERVED.addr} \\
  numa /tmp/numa.sock $NUMAPID 1 \\
  huge /tmp/huge.sock $HUGEPID 1
say "check-exit=$?"
# a new client process: the daemon zeroes the device-dax once the previous one has exited
node ${GUEST_PROJECT_DIR}/test/guest/kernel-mem-check.mjs dax-scrubbed /tmp/dax.sock /dev/$DAX ${DAX_BASE}
say "scrub-check-exit=$?"
T2=$(up)
say "timing start=$T0 listening=$T1 checked=$T2"
for p in $DAXPID $MEMPID $NUMAPID $HUGEPID $DAXGPID; do kill -TERM $p; done
for p in $DAXPID $MEMPID $NUMAPID $HUGEPID $DAXGPID; do wait $p; say "daemon-exit=$?"; done
for f in dax mem numa huge dax1g; do sed "s/^/KMEM $f-log: /" /tmp/$f.log; done
`;
}

function kmem(output: string, key: string): string | null {
  const m = new RegExp(`KMEM ${key}=(\\S*)`).exec(output);
  return m ? m[1]! : null;
}

describe('kernel memory: device-dax, /dev/mem and NUMA on a real kernel', () => {
  let image: NodeInitramfs | null = null;
  let nvdimm: string | null = null;
  afterEach(() => {
    image?.remove();
    image = null;
    if (nvdimm) for (const f of [nvdimm, `${nvdimm}.1g`]) fs.rmSync(f, { force: true });
    nvdimm = null;
  });

  it('serves a real /dev/daxX.Y, a memmap-reserved /dev/mem range and node-bound memory; refuses the mistakes in one line', async (ctx) => {
    const q = qemu.require(ctx);
    // The config beside the kernel: what this test needs, and whether the nested test could use iommufd.
    const config = path.join(path.dirname(q.kernel), path.basename(q.kernel).replace(/^vmlinuz-/, 'config-'));
    if (fs.existsSync(config)) {
      const text = fs.readFileSync(config, 'utf8');
      for (const opt of ['CONFIG_LIBNVDIMM=m', 'CONFIG_DEV_DAX_PMEM=m', 'CONFIG_STRICT_DEVMEM=y', 'CONFIG_NUMA=y']) expect(text).toContain(opt);
      // a Debian kernel update must not fail CI, but docs/real-devices.md would then be wrong
      if (!text.includes('# CONFIG_IOMMUFD is not set')) {
        console.warn(`\n!!! ${config} has CONFIG_IOMMUFD: run the nested test with vfio:/dev/vfio/devices/vfioN too and update docs/real-devices.md\n`);
      }
    }
    expect(fs.existsSync(path.join(modulesDirFor(q.kernel), 'modules.dep'))).toBe(true);

    const built = Date.now();
    image = buildNodeInitramfs({ initCommands: guestScript, kernel: q.kernel, modules: MODULES });
    const buildMs = Date.now() - built;
    const dir = path.join(guestCacheDir(), 'nested');
    fs.mkdirSync(dir, { recursive: true });
    nvdimm = path.join(dir, `nvdimm-${process.pid}-${Date.now()}.img`);
    fs.writeFileSync(nvdimm, '');
    fs.truncateSync(nvdimm, NVDIMM_BYTES);
    fs.writeFileSync(`${nvdimm}.1g`, '');
    fs.truncateSync(`${nvdimm}.1g`, NVDIMM_1G_BYTES);

    const r = await bootGuest({
      qemu: q,
      initrd: image.path,
      ownMemory: true,
      timeoutMs: 240_000,
      appendArgs: [`memmap=${RESERVED.size / MiB}M$0x${RESERVED.addr.toString(16)}`],
      extraArgs: [
        '-machine', 'nvdimm=on',
        '-smp', '2',
        '-m', '1G,slots=2,maxmem=5G',
        '-object', 'memory-backend-memfd,id=ram0,size=768M,share=on',
        '-object', 'memory-backend-memfd,id=ram1,size=256M,share=on',
        '-numa', 'node,nodeid=0,memdev=ram0,cpus=0-1',
        '-numa', 'node,nodeid=1,memdev=ram1',
        '-object', `memory-backend-file,id=nv0,mem-path=${nvdimm},size=${NVDIMM_BYTES},share=on`,
        '-device', `nvdimm,id=nvdimm0,memdev=nv0,label-size=${LABEL_BYTES},node=1`,
        '-object', `memory-backend-file,id=nv1,mem-path=${nvdimm}.1g,size=${NVDIMM_1G_BYTES},share=on`,
        '-device', `nvdimm,id=nvdimm1,memdev=nv1,label-size=${LABEL_BYTES},node=0`,
      ],
    });
    const why = describeBoot(r, 150);
    const timing = /KMEM timing start=([\d.]+) listening=([\d.]+) checked=([\d.]+)/.exec(r.output);
    console.info(
      `kernel-mem guest test: image ${(image.bytes / MiB).toFixed(0)} MiB built in ${buildMs} ms, guest ran ${r.durationMs} ms` +
        (timing ? `; in the guest: 5 daemons and 4 refusals took ${(Number(timing[2]) - Number(timing[1])).toFixed(1)} s, checks ${(Number(timing[3]) - Number(timing[2])).toFixed(1)} s` : ''),
    );
    if (process.env.NVGRACE_NESTED_DUMP) console.info(r.output);
    expect(r.timedOut, why).toBe(false);
    expect(r.output, why).not.toMatch(/KMEM insmod-failed/);
    expect(kmem(r.output, 'nodes-with-memory'), why).toBe('0-1');
    expect(r.output, why).toMatch(/KMEM iomem-reserved: 20000000-20ffffff : Reserved/);
    expect(r.output, why).toMatch(/KMEM dax=dax\d\.0 size=262144000 align=2097152 node=1 dev=\/dev\/dax\d\.0/);
    expect(r.output, why).toMatch(/KMEM dax=dax\d\.0 size=2147483648 align=1073741824 node=0 dev=\/dev\/dax\d\.0/);
    // the daemon read the device's size, alignment and node from sysfs
    expect(r.output, why).toMatch(/KMEM dax-log: .*"backing":\{"kind":"device-dax","path":"\/dev\/dax\d\.0","numaNode":1,"pageSize":2097152,"cacheable":true\},"base":"0x400000","size":"246 MiB"/);

    const checks = [...r.output.matchAll(/KCHECK (\S+) (PASS|FAIL) ?(.*)/g)].map((m) => ({ name: m[1]!, pass: m[2] === 'PASS', details: m[3]!.trim() }));
    expect(checks.filter((c) => !c.pass).map((c) => `${c.name} ${c.details}`), why).toEqual([]);
    const names = checks.map((c) => c.name);
    for (const scenario of ['dax', 'mem']) {
      for (const c of ['direct-write-seen-in-bar', 'bar-write-seen-directly', 'trapped-read-agrees', 'trapped-write-seen-directly', 'padding-read', 'padding-write-dropped']) {
        expect(names, why).toContain(`${scenario}-${c}`);
      }
    }
    for (const c of ['dax1g-one-page-mapped', 'dax1g-direct-write-seen-in-bar', 'dax1g-trapped-tail-read', 'dax1g-trapped-tail-write', 'dax1g-padding-read', 'dax1g-padding-write-dropped', 'dax1g-device-past-memory-untouched']) {
      expect(names, why).toContain(c);
    }
    for (const c of ['dax-memory-is-rest-of-device', 'dax-areas-aligned', 'dax-below-base-untouched', 'dax-scrubbed-for-next-client', 'dax-scrub-spared-below-base', 'mem-region-offset-is-phys']) expect(names, why).toContain(c);
    for (const scenario of ['numa', 'huge']) {
      for (const c of ['client-pages-on-node', 'client-numa-maps', 'trapped-read', 'daemon-numa-maps']) expect(names, why).toContain(`${scenario}-${c}`);
    }
    // memfd: the node binding is the file's shared policy; hugetlbfs keeps none, the daemon placed the pages
    expect(r.output, why).toMatch(/KINFO numa-client-numa-maps \S+ bind:1 file=\/memfd:nvgrace-aperture.* N1=8192 kernelpagesize_kB=4/);
    expect(r.output, why).toMatch(/KINFO huge-client-numa-maps \S+ default file=\/memfd:nvgrace-aperture.* huge .*N1=6 kernelpagesize_kB=2048/);
    // x86 maps /dev/mem write-back in the PAT (arm64 would map it as Device memory): the daemon cannot tell the MTRRs' say
    expect(r.output, why).toMatch(/KINFO mem-pat PAT: \[mem 0x0000000020000000-0x0000000020c00000\] write-back/);
    expect(r.output, why).toMatch(/KMEM mem-log: .*"backing":\{"kind":"dev-mem","path":"\/dev\/mem","numaNode":null,"pageSize":4096,"cacheable":null\}/);
    expect([...r.output.matchAll(/KCHECK DONE failed=(\d+)/g)].map((m) => m[1]), why).toEqual(['0', '0']);
    expect(kmem(r.output, 'check-exit'), why).toBe('0');
    expect(kmem(r.output, 'scrub-check-exit'), why).toBe('0');

    // each mistake: one line, exit 1, naming the problem and what to do
    for (const m of ['dax-misaligned', 'mem-ram', 'numa-short', 'huge-short']) {
      expect(kmem(r.output, `${m}-exit`), `${m}\n${why}`).toBe('1');
      expect(kmem(r.output, `${m}-lines`), `${m}\n${why}`).toBe('1');
    }
    const stderr = (name: string) => new RegExp(`KMEM ${name}-stderr: (.*)`).exec(r.output)?.[1] ?? '';
    expect(stderr('dax-misaligned'), why).toMatch(/aperture base 0x100000 is not aligned to dax\d\.0's 2 MiB alignment/);
    expect(stderr('mem-ram'), why).toMatch(/the kernel refuses to map physical address 0x10000000 \(STRICT_DEVMEM: System RAM in \/proc\/iomem\).*--aperture-path \/dev\/daxX\.Y.*--aperture-numa-node N/);
    expect(stderr('numa-short'), why).toMatch(/NUMA node 1 has \d+ MiB free; the aperture needs 512 MiB; refusing to fall back to another node/);
    expect(stderr('huge-short'), why).toMatch(/huge page pool too small: the aperture needs 32 pages of 2 MiB on NUMA node 1, .*raise \/sys\/devices\/system\/node\/node1\/hugepages\/hugepages-2048kB\/nr_hugepages/);

    const exits = [...r.output.matchAll(/KMEM daemon-exit=(\d+)/g)].map((m) => m[1]);
    expect(exits, why).toEqual(['0', '0', '0', '0', '0']);
  }, 300_000);
});
