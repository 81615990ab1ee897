// Runs inside an arm64 guest whose kernel has 16 KiB pages, against the daemon running in
// the same guest: our own vfio-user client (from the compiled dist/) checks what a page size
// other than 4 KiB changes.
//
//   node pagesize-check.mjs LABEL:SOCKET:MEMORY:GRANULE[:FILE] ...
//
// One daemon per argument. SOCKET: a running daemon's (`serve` started by the guest), or
// `here`: this process starts the daemon itself (startDaemon, what `serve` runs) with the
// aperture MEMORY bytes, on FILE when given, on huge pages when GRANULE is larger than the
// host page; each Node start costs tens of seconds in a TCG guest, so one process serves
// the rest. MEMORY: bytes of aperture behind BAR2; GRANULE: the unit the daemon must map it
// in (the host page, or the huge page); FILE: the aperture file, when the backing is one.
// Checks: VERSION's pgsizes is the host page; BAR2's fd offset and every mmap area are in
// whole granules, each area maps (the kernel refuses a misaligned offset) and shows the bytes
// a trapped read of the same BAR offset shows; the trailing partial granule is served
// trapped from the same backing (written through the daemon, seen through the fd and the
// file); the padding reads ~0 and drops writes; DMA maps are taken at the host page size and
// refused below it.
// Every check prints `PGCHECK <label>-<name> PASS|FAIL <details>`; the last line is
// `PGCHECK DONE pass=N fail=M`, and the exit status is 0 only when nothing failed.
import fs from 'node:fs';
import { parseBar0Spec } from '../../dist/cli/parse.js';
import { startDaemon } from '../../dist/cli/serve.js';
import { RequestError, VfioUserClient } from '../../dist/client/client.js';
import { native } from '../../dist/native/native.js';
import { RegionFlag } from '../../dist/wire/constants.js';

const REGION_BAR2 = 2;
const DMA_READ = 1;
const DMA_WRITE = 2;
const EINVAL = 22;
const RW = native.PROT_READ | native.PROT_WRITE;

let pass = 0;
let fail = 0;
let label = '';
function check(name, ok, details = '') {
  if (ok) pass++;
  else fail++;
  console.log(`PGCHECK ${label}-${name} ${ok ? 'PASS' : 'FAIL'} ${details}`);
}
const hex = (n) => `0x${n.toString(16)}`;
const alignDown = (n, a) => n - (n % a);
const word = (v) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
};

async function refused(what) {
  try {
    await what();
    return 'accepted';
  } catch (err) {
    return err instanceof RequestError ? `errno ${err.errno}` : String(err);
  }
}

const page = native.pageSize();

async function checkDaemon(socket, mem, granule, file) {
  const c = VfioUserClient.connect(socket);
  try {
    // Proposes 4096 as QEMU does; the reply states the page the daemon maps and takes DMA in.
    const version = await c.negotiate();
    check('pgsizes', version.capabilities?.pgsizes === page, `pgsizes=${version.capabilities?.pgsizes} page=${page}`);

    const { info, fd } = await c.regionInfo(REGION_BAR2);
    // No sparse capability: the whole region maps.
    const areas = info.sparseAreas ?? (info.flags & RegionFlag.MMAP ? [{ offset: 0, size: info.size }] : []);
    const mappable = alignDown(mem, granule);
    check('fd', fd !== null, `fd=${fd}`);
    check('fd-offset', info.offset % granule === 0, `offset=${hex(info.offset)} granule=${hex(granule)}`);
    check(
      'areas-whole-granules',
      areas.length > 0 && areas.every((a) => a.offset % granule === 0 && a.size % granule === 0),
      areas.map((a) => `${hex(a.offset)}+${hex(a.size)}`).join(' '),
    );
    const end = areas.reduce((n, a) => Math.max(n, a.offset + a.size), 0);
    check('areas-end', end === mappable, `areas end at ${hex(end)}; memory ${hex(mem)} in whole granules is ${hex(mappable)}`);

    // Each area maps where the region info says, and shows what the daemon serves at the same BAR offset.
    for (const [i, a] of areas.entries()) {
      let map = null;
      try {
        map = native.mmap(fd, a.size, RW, native.MAP_SHARED, info.offset + a.offset);
      } catch (err) {
        check(`area${i}-mmap`, false, `${hex(a.offset)}+${hex(a.size)}: ${err.message}`);
        continue;
      }
      const view = new DataView(map);
      const at = a.size - granule + 12; // in the area's last granule
      view.setUint32(at, 0x5eed0000 + i, true);
      const trapped = (await c.regionRead(REGION_BAR2, a.offset + at, 4)).readUInt32LE(0);
      check(`area${i}-same-bytes`, trapped === 0x5eed0000 + i, `BAR2@${hex(a.offset + at)} mapped=${hex(0x5eed0000 + i)} trapped=${hex(trapped)}`);
      native.munmap(map);
    }

    // The trailing partial granule: no area, served trapped from the same backing.
    if (mappable < mem) {
      const off = mem - 8 - ((mem - 8) % 4);
      await c.regionWrite(REGION_BAR2, off, word(0x7a11face));
      const back = (await c.regionRead(REGION_BAR2, off, 4)).readUInt32LE(0);
      check('tail-trapped', back === 0x7a11face, `BAR2@${hex(off)} read back ${hex(back)}`);
      const map = native.mmap(fd, granule, RW, native.MAP_SHARED, info.offset + mappable);
      const seen = new DataView(map).getUint32(off - mappable, true);
      native.munmap(map);
      check('tail-same-backing', seen === 0x7a11face, `the fd's granule at ${hex(mappable)} holds ${hex(seen)}`);
      if (file !== undefined) {
        const b = Buffer.alloc(4);
        const f = fs.openSync(file, 'r');
        fs.readSync(f, b, 0, 4, off);
        fs.closeSync(f);
        check('tail-in-file', b.readUInt32LE(0) === 0x7a11face, `${file}@${hex(off)} holds ${hex(b.readUInt32LE(0))}`);
      }
    } else {
      check('no-tail', mem % granule === 0, `memory ${hex(mem)} is whole granules`);
    }

    // The padding: ~0 at its start and at the BAR's end, writes dropped.
    if (mem === info.size) check('no-padding', true, `memory fills the ${hex(info.size)} BAR`);
    for (const off of mem === info.size ? [] : [alignDown(mem + 7, 8), info.size - 8]) {
      const before = await c.regionRead(REGION_BAR2, off, 8);
      await c.regionWrite(REGION_BAR2, off, Buffer.alloc(8));
      const after = await c.regionRead(REGION_BAR2, off, 8);
      check(`padding@${hex(off)}`, before.every((x) => x === 0xff) && after.every((x) => x === 0xff), `read ${before.toString('hex')}, after a write of zeros ${after.toString('hex')}`);
    }

    // DMA: a host page is the unit; 4 KiB pieces are refused on a 16 KiB kernel.
    const dmaFd = native.memfdCreate('pgcheck-dma', 0);
    fs.ftruncateSync(dmaFd, 4 * page);
    try {
      const base = 64 * page;
      check('dma-map-page', (await refused(() => c.dmaMap(base, page, DMA_READ | DMA_WRITE, dmaFd, 0))) === 'accepted', `${hex(base)}+${hex(page)}`);
      const small = await refused(() => c.dmaMap(base + 4 * page, 4096, DMA_READ | DMA_WRITE, dmaFd, page));
      check('dma-map-4k-refused', page === 4096 || small === `errno ${EINVAL}`, `4 KiB map: ${small}`);
      const skew = await refused(() => c.dmaMap(base + 8 * page + 4096, page, DMA_READ | DMA_WRITE, dmaFd, 0));
      check('dma-map-misaligned-refused', page === 4096 || skew === `errno ${EINVAL}`, `address ${hex(base + 8 * page + 4096)}: ${skew}`);
      check('dma-unmap-page', (await refused(() => c.dmaUnmap(base, page))) === 'accepted');
    } finally {
      native.closeFd(dmaFd);
    }
  } catch (err) {
    check('error', false, err.stack ?? String(err));
  } finally {
    c.close();
  }
}

const specs = process.argv.slice(2).map((spec) => {
  const [name, socket, memText, granText, file] = spec.split(':');
  return { name, socket, mem: Number(memText), granule: Number(granText), file: file || undefined };
});
const running = [];
for (const s of specs.filter((x) => x.socket === 'here')) {
  s.socket = `/tmp/${s.name}-here.sock`;
  const r = startDaemon({
    socket: s.socket,
    socketMode: 0o600,
    apertureSize: s.mem,
    apertureBase: 0,
    aperturePath: s.file,
    apertureHugePages: s.granule > page ? s.granule : undefined,
    bar0: parseBar0Spec('emulated'),
    vendorId: 0x10de,
    logLevel: 'error',
  });
  running.push(r);
  await r.ready;
}
for (const s of specs) {
  label = s.name;
  await checkDaemon(s.socket, s.mem, s.granule, s.file);
}
for (const r of running) r.stop();
console.log(`PGCHECK DONE pass=${pass} fail=${fail}`);
process.exit(fail === 0 ? 0 : 1);
