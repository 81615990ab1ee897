// Runs inside the kernel-memory guest (kernel-mem-guest.test.ts): a vfio-user client
// (ours, from dist/) maps BAR2 of running daemons as QEMU does (each sparse-mmap area of
// the region fd, at the region's offset) and checks it against the real kernel's view
// of the same memory.
//
//   node kernel-mem-check.mjs dax SOCKET DEVICE BASE     a device-dax, also mapped directly
//   node kernel-mem-check.mjs dax-scrubbed SOCKET DEVICE BASE   the next client, after a scrub
//   node kernel-mem-check.mjs dax1g SOCKET DEVICE          1 GiB alignment, a trapped tail
//   node kernel-mem-check.mjs mem SOCKET PHYS            /dev/mem, also mapped directly
//   node kernel-mem-check.mjs numa SOCKET DAEMON-PID NODE   NUMA-bound memory (memfd or huge pages)
//
// Several scenarios may follow each other on one command line (one Node start).
// Every check prints `KCHECK <name> PASS|FAIL <details>`, facts print `KINFO <name> ...`;
// the exit status is 0 only when nothing failed.
import fs from 'node:fs';
import { VfioUserClient } from '../../dist/client/client.js';
import { native } from '../../dist/native/native.js';

const REGION_BAR2 = 2;
const REGION_FLAG_MMAP = 4;
const RW = native.PROT_READ | native.PROT_WRITE;
let failed = 0;

function check(name, ok, details = '') {
  if (!ok) failed++;
  console.log(`KCHECK ${name} ${ok ? 'PASS' : 'FAIL'} ${details}`);
}
const info = (name, text) => console.log(`KINFO ${name} ${text}`);
const hex = (n) => `0x${n.toString(16)}`;
const pattern = (len, seed) => Buffer.from(Array.from({ length: len }, (_, i) => (i * 13 + seed) & 0xff));
const bytes = (ab, at, len) => Buffer.from(ab, at, len);

/** BAR2 as QEMU maps it: every sparse area of the region fd. Returns the areas and the memory they cover from offset 0. */
async function mapBar2(c) {
  const { info: region, fd } = await c.regionInfo(REGION_BAR2);
  // without a sparse-mmap capability a mappable region is mapped whole
  const areas = region.sparseAreas ?? ((region.flags & REGION_FLAG_MMAP) !== 0 ? [{ offset: 0, size: region.size }] : []);
  if (fd === null || areas.length === 0) throw new Error(`BAR2 has no fd or nothing to map (fd ${fd}, flags ${region.flags})`);
  const maps = areas.map((a) => ({ ...a, map: native.mmap(fd, a.size, RW, native.MAP_SHARED, region.offset + a.offset) }));
  native.closeFd(fd);
  let mapped = 0;
  for (const a of maps) if (a.offset === mapped) mapped += a.size;
  return { region, maps, mapped, at: (off) => maps.find((a) => off >= a.offset && off < a.offset + a.size) };
}

function unmapBar2(bar) {
  for (const a of bar.maps) native.munmap(a.map);
}

async function connect(socket) {
  const c = VfioUserClient.connect(socket);
  await c.negotiate();
  return c;
}

/** The memory's end: the first offset whose trapped read is all ones, past the mapped part. */
async function paddingChecks(prefix, c, memEnd, barSize) {
  const ones = Buffer.alloc(8, 0xff);
  check(`${prefix}-padding-read`, (await c.regionRead(REGION_BAR2, memEnd, 8)).equals(ones) && (await c.regionRead(REGION_BAR2, barSize - 8, 8)).equals(ones), `at ${hex(memEnd)} and ${hex(barSize - 8)}`);
  await c.regionWrite(REGION_BAR2, memEnd + 64, pattern(8, 1));
  check(`${prefix}-padding-write-dropped`, (await c.regionRead(REGION_BAR2, memEnd + 64, 8)).equals(ones), `wrote at ${hex(memEnd + 64)}`);
}

/**
 * The same memory seen two ways: `direct` is the kernel's own device mapped by this
 * process, `bar` the client's BAR2 mapping. Bytes written on each side show on the
 * other, and the daemon's trapped path agrees with both.
 */
async function sameMemory(prefix, c, bar, direct, directBase) {
  const mem = bar.mapped;
  let ok = true;
  const where = [];
  for (const off of [0, 4096, Math.floor(mem / 2 / 4096) * 4096 + 24, mem - 16]) {
    const p = pattern(16, off & 0xff);
    bytes(direct, directBase + off, 16).set(p);
    const a = bar.at(off);
    const seen = bytes(a.map, off - a.offset, 16);
    if (!seen.equals(p)) {
      ok = false;
      where.push(`${hex(off)}: ${seen.toString('hex')}`);
    }
  }
  check(`${prefix}-direct-write-seen-in-bar`, ok, where.join(' ') || `4 places up to ${hex(mem - 16)}`);
  const q = pattern(32, 0x77);
  const a0 = bar.at(8192);
  bytes(a0.map, 8192 - a0.offset, 32).set(q);
  check(`${prefix}-bar-write-seen-directly`, bytes(direct, directBase + 8192, 32).equals(q), bytes(direct, directBase + 8192, 8).toString('hex'));
  // trapped accesses inside the memory go through the daemon's own access to the backing
  check(`${prefix}-trapped-read-agrees`, (await c.regionRead(REGION_BAR2, 8192, 32)).equals(q));
  const r = pattern(8, 0x31);
  await c.regionWrite(REGION_BAR2, mem - 16, r);
  check(`${prefix}-trapped-write-seen-directly`, bytes(direct, directBase + mem - 16, 8).equals(r));
}

async function daxScenario(socket, device, baseText) {
  const base = Number(baseText);
  const name = device.replace(/^\/dev\//, '');
  const sys = `/sys/bus/dax/devices/${name}`;
  const size = Number(fs.readFileSync(`${sys}/size`, 'utf8'));
  const align = Number(fs.readFileSync(`${sys}/align`, 'utf8'));
  const fd = fs.openSync(device, 'r+');
  const direct = native.mmap(fd, size, RW, native.MAP_SHARED, 0);
  // a sentinel just below the base: the daemon's memory must start after it
  bytes(direct, base - 8, 8).set(pattern(8, 0xee));
  const c = await connect(socket);
  const bar = await mapBar2(c);
  const memEnd = bar.mapped;
  info('dax', `device=${device} size=${size} align=${align} base=${hex(base)} bar2=${hex(bar.region.size)} region-offset=${hex(bar.region.offset)} areas=${bar.maps.map((a) => `${hex(a.offset)}+${hex(a.size)}`).join(',')}`);
  check('dax-memory-is-rest-of-device', memEnd === size - base, `mapped ${hex(memEnd)}, device ${hex(size)} - base ${hex(base)}`);
  check('dax-bar-is-power-of-two', bar.region.size >= memEnd && (bar.region.size & (bar.region.size - 1)) === 0, hex(bar.region.size));
  check('dax-areas-aligned', bar.region.offset === base && bar.maps.every((a) => (bar.region.offset + a.offset) % align === 0 && a.size % align === 0), `offset ${hex(bar.region.offset)}`);
  await sameMemory('dax', c, bar, direct, base);
  await paddingChecks('dax', c, memEnd, bar.region.size);
  check('dax-below-base-untouched', bytes(direct, base - 8, 8).equals(pattern(8, 0xee)));
  unmapBar2(bar);
  c.close();
  native.munmap(direct);
  fs.closeSync(fd);
}

/** Run as a second process once the first has exited: --scrub on-release zeroed the memory before letting it in. */
async function daxScrubbedScenario(socket, device, baseText) {
  const base = Number(baseText);
  const c = await connect(socket);
  const bar = await mapBar2(c);
  const fd = fs.openSync(device, 'r+');
  const direct = native.mmap(fd, base + bar.mapped, RW, native.MAP_SHARED, 0);
  const zero = Buffer.alloc(16);
  const places = [0, 8192, bar.mapped - 16];
  const left = places.filter((off) => !bytes(bar.maps[0].map, off, 16).equals(zero) || !bytes(direct, base + off, 16).equals(zero));
  check('dax-scrubbed-for-next-client', left.length === 0, left.length ? `not zero at ${left.map(hex).join(',')}` : `zero at ${places.map(hex).join(',')}`);
  check('dax-scrub-spared-below-base', bytes(direct, base - 8, 8).equals(pattern(8, 0xee)));
  native.munmap(direct);
  fs.closeSync(fd);
  unmapBar2(bar);
  c.close();
}

/**
 * A device-dax of 1 GiB alignment serving 1 GiB + 4 MiB: QEMU maps one 1 GiB page, the
 * last 4 MiB are trapped and served through the daemon's own 1 GiB window of the device.
 */
async function daxTailScenario(socket, device) {
  const GiB = 1024 * 1024 * 1024;
  const name = device.replace(/^\/dev\//, '');
  const align = Number(fs.readFileSync(`/sys/bus/dax/devices/${name}/align`, 'utf8'));
  const c = await connect(socket);
  const bar = await mapBar2(c);
  const memSize = bar.mapped + 4 * 1024 * 1024;
  info('dax1g', `device=${device} align=${align} bar2=${hex(bar.region.size)} region-offset=${hex(bar.region.offset)} areas=${bar.maps.map((a) => `${hex(a.offset)}+${hex(a.size)}`).join(',')}`);
  check('dax1g-one-page-mapped', align === GiB && bar.maps.length === 1 && bar.mapped === GiB && bar.region.size === 2 * GiB, `align ${hex(align)}, mapped ${hex(bar.mapped)}, BAR ${hex(bar.region.size)}`);
  const fd = fs.openSync(device, 'r+');
  const direct = native.mmap(fd, 2 * GiB, RW, native.MAP_SHARED, 0);
  const p = pattern(16, 0x42);
  bytes(direct, GiB - 16, 16).set(p);
  check('dax1g-direct-write-seen-in-bar', bytes(bar.maps[0].map, GiB - 16, 16).equals(p));
  const q = pattern(16, 0x43);
  bytes(direct, GiB + 64, 16).set(q);
  check('dax1g-trapped-tail-read', (await c.regionRead(REGION_BAR2, GiB + 64, 16)).equals(q));
  const r = pattern(16, 0x44);
  await c.regionWrite(REGION_BAR2, memSize - 16, r);
  check('dax1g-trapped-tail-write', bytes(direct, memSize - 16, 16).equals(r));
  await paddingChecks('dax1g', c, memSize, bar.region.size);
  check('dax1g-device-past-memory-untouched', bytes(direct, memSize + 64, 8).equals(Buffer.alloc(8)));
  native.munmap(direct);
  fs.closeSync(fd);
  unmapBar2(bar);
  c.close();
}

async function memScenario(socket, physText) {
  const phys = Number(physText);
  const c = await connect(socket);
  const bar = await mapBar2(c);
  const fd = fs.openSync('/dev/mem', 'r+');
  const direct = native.mmap(fd, bar.mapped, RW, native.MAP_SHARED, phys);
  info('mem', `phys=${hex(phys)} bar2=${hex(bar.region.size)} region-offset=${hex(bar.region.offset)} mapped=${hex(bar.mapped)}`);
  check('mem-region-offset-is-phys', bar.region.offset === phys, hex(bar.region.offset));
  await sameMemory('mem', c, bar, direct, 0);
  await paddingChecks('mem', c, bar.mapped, bar.region.size);
  // how x86 maps it: PAT's record of the range while both mappings are alive
  try {
    const pat = fs.readFileSync('/sys/kernel/debug/x86/pat_memtype_list', 'utf8').split('\n');
    const mine = pat.filter((l) => l.includes(`0x${phys.toString(16).padStart(16, '0')}`) || l.includes(`0x${phys.toString(16)}-`));
    info('mem-pat', mine.length ? mine.join(' | ') : `no PAT entry for ${hex(phys)} (${pat.length} entries)`);
  } catch (err) {
    info('mem-pat', `unreadable: ${err.message}`);
  }
  native.munmap(direct);
  fs.closeSync(fd);
  unmapBar2(bar);
  c.close();
}

/** numa_maps lines of a process for the aperture's memfd. */
function numaMaps(pid) {
  return fs.readFileSync(`/proc/${pid}/numa_maps`, 'utf8').split('\n').filter((l) => l.includes('nvgrace-aperture'));
}
/** Pages per node in a numa_maps line (N0=12 N1=3 → {0: 12, 1: 3}). */
function nodeCounts(line) {
  const out = {};
  for (const m of line.matchAll(/ N(\d+)=(\d+)/g)) out[m[1]] = Number(m[2]);
  return out;
}

async function numaScenario(prefix, socket, daemonPid, nodeText) {
  const node = Number(nodeText);
  // shmem keeps the binding with the file (a shared policy, shown in every mapping);
  // hugetlbfs keeps none: its pages were placed at start, and the mappings show "default"
  const policyOk = (l) => (prefix === 'huge' ? / default /.test(l) : l.includes(` bind:${node} `));
  const c = await connect(socket);
  const bar = await mapBar2(c);
  // every page faulted in by this client, as a guest touching its BAR would
  for (const a of bar.maps) native.fillMemory(a.map, 0, a.size, 0x5a);
  const page = Number((numaMaps('self')[0] ?? '').match(/kernelpagesize_kB=(\d+)/)?.[1] ?? 4) * 1024;
  const pages = bar.mapped / page;
  const where = {};
  for (const a of bar.maps) {
    const status = new Int32Array(a.size / page);
    native.pageNodes(a.map, 0, page, status);
    for (const s of status) where[s] = (where[s] ?? 0) + 1;
  }
  check(`${prefix}-client-pages-on-node`, Object.keys(where).length === 1 && where[node] === pages, `${pages} pages of ${page / 1024} KiB: ${JSON.stringify(where)}`);
  const mine = numaMaps('self');
  for (const l of mine) info(`${prefix}-client-numa-maps`, l);
  const counts = mine.map(nodeCounts);
  check(
    `${prefix}-client-numa-maps`,
    mine.length > 0 && mine.every(policyOk) && counts.every((n) => Object.keys(n).every((k) => Number(k) === node)) && counts.reduce((s, n) => s + (n[node] ?? 0), 0) === pages,
    `${mine.length} mapping(s), N${node} total ${counts.reduce((s, n) => s + (n[node] ?? 0), 0)} of ${pages}`,
  );
  // a trapped access makes the daemon map the memory too (it keeps that window)
  check(`${prefix}-trapped-read`, (await c.regionRead(REGION_BAR2, 0, 8)).equals(Buffer.alloc(8, 0x5a)));
  const theirs = numaMaps(daemonPid);
  for (const l of theirs) info(`${prefix}-daemon-numa-maps`, l);
  const tc = theirs.map(nodeCounts);
  check(
    `${prefix}-daemon-numa-maps`,
    theirs.length > 0 && theirs.every(policyOk) && tc.every((n) => Object.keys(n).every((k) => Number(k) === node)) && tc.some((n) => (n[node] ?? 0) > 0),
    `${theirs.length} mapping(s)`,
  );
  unmapBar2(bar);
  c.close();
}

const args = process.argv.slice(2);
try {
  while (args.length > 0) {
    const kind = args.shift();
    if (kind === 'dax') await daxScenario(args.shift(), args.shift(), args.shift());
    else if (kind === 'dax1g') await daxTailScenario(args.shift(), args.shift());
    else if (kind === 'dax-scrubbed') await daxScrubbedScenario(args.shift(), args.shift(), args.shift());
    else if (kind === 'mem') await memScenario(args.shift(), args.shift());
    else if (kind === 'numa' || kind === 'huge') await numaScenario(kind, args.shift(), args.shift(), args.shift());
    else throw new Error(`unknown scenario ${kind}`);
  }
} catch (err) {
  check('no-exception', false, err.stack?.replace(/\n\s*/g, ' | ') ?? String(err));
}
console.log(`KCHECK DONE failed=${failed}`);
process.exit(failed === 0 ? 0 : 1);
