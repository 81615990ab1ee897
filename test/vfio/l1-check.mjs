// Runs inside the nested test's L1 guest: a vfio-user client (ours, from the
// compiled dist/) checks QEMU's edu device through the daemon, which passes edu
// through from the guest's vfio-pci.
//
//   node l1-check.mjs vfio SOCKET    full pass-through: registers, zero-copy BAR0,
//                                    DMA through the IOMMU, MSI, reset, reconnect
//   node l1-check.mjs sysfs SOCKET   --bar0 sysfs: registers only
//
// Every check prints `L1CHECK <name> PASS|FAIL <details>`; the last line is
// `L1CHECK DONE pass=N fail=M`, and the exit status is 0 only when nothing failed.
import fs from 'node:fs';
import { VfioUserClient } from '../../dist/client/client.js';
import { native } from '../../dist/native/native.js';

const [mode, socket] = process.argv.slice(2);
const MiB = 1024 * 1024;
const REGION_BAR0 = 0;
const REGION_BAR2 = 2;
const REGION_CONFIG = 7;
const IRQ_MSI = 1;
const EDU = { ID: 0x00, LIVENESS: 0x04, FACTORIAL: 0x08, STATUS: 0x20, IRQ_STATUS: 0x24, IRQ_ACK: 0x64, DMA_SRC: 0x80, DMA_DST: 0x88, DMA_COUNT: 0x90, DMA_CMD: 0x98, BUFFER: 0x40000 };
// edu's DMA mask is 28 bits: the IOVA must be below 256 MiB.
const IOVA = 0x100000;
const DMA_SIZE = 2 * MiB;
const DMA_READ = 1;
const DMA_WRITE = 2;
const IRQ_SET = { DATA_EVENTFD: 1 << 2, ACTION_TRIGGER: 1 << 5 };

let pass = 0;
let fail = 0;
function check(name, ok, details = '') {
  if (ok) pass++;
  else fail++;
  console.log(`L1CHECK ${name} ${ok ? 'PASS' : 'FAIL'} ${details}`);
}
const hex = (n) => `0x${(n >>> 0).toString(16)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function read32(c, region, offset) {
  return (await c.regionRead(region, offset, 4)).readUInt32LE(0);
}
async function write32(c, region, offset, value) {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0);
  await c.regionWrite(region, offset, b);
}

async function connect() {
  const c = VfioUserClient.connect(socket);
  await c.negotiate();
  return c;
}

/** Runs one edu DMA and waits for the engine to go idle (edu starts it on a 100 ms timer). */
async function eduDma(c, src, dst, count, toRam) {
  await write32(c, REGION_BAR0, EDU.DMA_SRC, src);
  await write32(c, REGION_BAR0, EDU.DMA_DST, dst);
  await write32(c, REGION_BAR0, EDU.DMA_COUNT, count);
  await write32(c, REGION_BAR0, EDU.DMA_CMD, 1 | (toRam ? 2 : 0));
  for (let i = 0; i < 200; i++) {
    if (((await read32(c, REGION_BAR0, EDU.DMA_CMD)) & 1) === 0) return true;
    await sleep(50);
  }
  return false;
}

function pattern(len, seed) {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (i * 7 + seed) & 0xff;
  return b;
}

function memfd(size) {
  const fd = native.memfdCreate('l1-check', 0);
  fs.ftruncateSync(fd, size);
  return fd;
}
function readFd(fd, offset, len) {
  const b = Buffer.alloc(len);
  fs.readSync(fd, b, 0, len, offset);
  return b;
}

async function registers(c) {
  check('id-register', (await read32(c, REGION_BAR0, EDU.ID)) === 0x010000ed, hex(await read32(c, REGION_BAR0, EDU.ID)));
  await write32(c, REGION_BAR0, EDU.LIVENESS, 0x12345678);
  const inv = await read32(c, REGION_BAR0, EDU.LIVENESS);
  check('liveness-inverse', inv === (~0x12345678 >>> 0), hex(inv));
}

async function vfioChecks() {
  const c = await connect();
  const dev = await c.deviceInfo();
  check('device-info', (dev.flags & 2) !== 0 && (dev.flags & 1) !== 0, `flags=${hex(dev.flags)} regions=${dev.numRegions} irqs=${dev.numIrqs}`);

  // Config space is edu's own, with the aperture's BAR2 laid over it.
  const cfgInfo = (await c.regionInfo(REGION_CONFIG)).info;
  const cfg = await c.regionRead(REGION_CONFIG, 0, cfgInfo.size);
  check('config-identity', cfg.readUInt16LE(0) === 0x1234 && cfg.readUInt16LE(2) === 0x11e8, `${hex(cfg.readUInt16LE(0))}:${hex(cfg.readUInt16LE(2))} size=${cfgInfo.size}`);
  check('config-bar0-type', (cfg.readUInt32LE(0x10) & 0xf) === 0, `BAR0 register ${hex(cfg.readUInt32LE(0x10))} (32-bit memory)`);
  check('config-bar2-aperture', (cfg.readUInt32LE(0x18) & 0xf) === 0xc, `BAR2 register ${hex(cfg.readUInt32LE(0x18))}`);
  // As a guest driver would: memory decoding and bus mastering on (edu's DMA and MSI need the latter).
  const cmd = Buffer.alloc(2);
  cmd.writeUInt16LE(cfg.readUInt16LE(0x04) | 0x6);
  await c.regionWrite(REGION_CONFIG, 0x04, cmd);
  const cmdNow = (await c.regionRead(REGION_CONFIG, 0x04, 2)).readUInt16LE(0);
  check('config-command', (cmdNow & 0x6) === 0x6, `command ${hex(cmdNow)}`);
  let msiCap = 0;
  for (let at = cfg[0x34] & 0xfc, hops = 0; at !== 0 && hops < 48; at = cfg[at + 1] & 0xfc, hops++) if (cfg[at] === 0x05) msiCap = at;
  check('config-msi-capability', msiCap !== 0, `MSI capability at ${hex(msiCap)}`);

  // BAR0 is handed over zero copy: the host's device fd, mapped by the client.
  const { info: bar0, fd: bar0Fd } = await c.regionInfo(REGION_BAR0);
  check('bar0-region', bar0.size === MiB && (bar0.flags & 4) !== 0 && bar0Fd !== null, `size=${hex(bar0.size)} flags=${hex(bar0.flags)} fd=${bar0Fd}`);
  if (bar0Fd !== null) {
    const map = native.mmap(bar0Fd, bar0.size, native.PROT_READ | native.PROT_WRITE, native.MAP_SHARED, bar0.offset);
    // 32-bit loads and stores (edu ignores narrower ones): a Uint32Array, not a DataView, which moves bytes.
    const regs = new Uint32Array(map);
    check('bar0-mmap-id', regs[EDU.ID / 4] === 0x010000ed, hex(regs[EDU.ID / 4]));
    regs[EDU.LIVENESS / 4] = 0x0f0f0f0f;
    check('bar0-mmap-liveness', (await read32(c, REGION_BAR0, EDU.LIVENESS)) === 0xf0f0f0f0, 'written through the mapping, read back through the daemon');
    native.munmap(map);
    native.closeFd(bar0Fd);
  }
  const bar2 = (await c.regionInfo(REGION_BAR2)).info;
  check('bar2-region', bar2.size === MiB, `aperture BAR2 size=${hex(bar2.size)}`);

  await registers(c);

  // DMA: client memory mapped at IOVA; RAM -> edu's buffer -> RAM again, a page further.
  const mem = memfd(DMA_SIZE);
  const data = pattern(4096, 0x5a);
  fs.writeSync(mem, data, 0, data.length, 0);
  await c.dmaMap(IOVA, DMA_SIZE, DMA_READ | DMA_WRITE, mem, 0);
  const toEdu = await eduDma(c, IOVA, EDU.BUFFER, 4096, false);
  const toRam = await eduDma(c, EDU.BUFFER, IOVA + 0x1000, 4096, true);
  const back = readFd(mem, 0x1000, 4096);
  check('dma-roundtrip', toEdu && toRam && back.equals(data), `engine idle ${toEdu}/${toRam}, first bytes ${back.subarray(0, 8).toString('hex')}`);

  // MSI: eventfd through SET_IRQS, MSI enabled in config as QEMU would, factorial with its interrupt.
  const efd = native.eventfd(0, native.EFD_NONBLOCK);
  if (msiCap !== 0) {
    const ctl = Buffer.alloc(2);
    ctl.writeUInt16LE(cfg.readUInt16LE(msiCap + 2) | 1);
    await c.regionWrite(REGION_CONFIG, msiCap + 2, ctl);
  }
  await c.setIrqs(IRQ_SET.DATA_EVENTFD | IRQ_SET.ACTION_TRIGGER, IRQ_MSI, 0, 1, [efd]);
  await write32(c, REGION_BAR0, EDU.STATUS, 0x80);
  await write32(c, REGION_BAR0, EDU.FACTORIAL, 5);
  let signalled = -1;
  for (let i = 0; i < 200 && signalled < 0; i++) {
    signalled = native.eventfdRead(efd);
    if (signalled < 0) await sleep(50);
  }
  const fact = await read32(c, REGION_BAR0, EDU.FACTORIAL);
  check('msi-on-factorial', signalled > 0 && fact === 120, `eventfd=${signalled} factorial=${fact}`);
  await write32(c, REGION_BAR0, EDU.IRQ_ACK, 1);

  // Reset: the host function resets, the emulated BAR2 register is cleared, the device still answers.
  const mask = Buffer.alloc(4, 0xff);
  await c.regionWrite(REGION_CONFIG, 0x18, mask);
  const sized = await read32(c, REGION_CONFIG, 0x18);
  await write32(c, REGION_CONFIG, 0x18, 0xa0000000);
  const based = await read32(c, REGION_CONFIG, 0x18);
  const t0 = Date.now();
  await c.reset();
  const resetMs = Date.now() - t0;
  const cleared = await read32(c, REGION_CONFIG, 0x18);
  const idAfter = await read32(c, REGION_BAR0, EDU.ID);
  check('reset', sized === 0xfff0000c && based === 0xa000000c && cleared === 0xc && idAfter === 0x010000ed, `BAR2 sized ${hex(sized)} based ${hex(based)} after reset ${hex(cleared)}; id ${hex(idAfter)}; ${resetMs} ms`);

  // DMA_UNMAP takes the memory out of the IOMMU: edu's writes there go nowhere.
  await c.dmaUnmap(IOVA, DMA_SIZE);
  const sent = await eduDma(c, EDU.BUFFER, IOVA + 0x2000, 4096, true);
  const untouched = readFd(mem, 0x2000, 4096);
  check('dma-unmap-blocks', sent && untouched.every((b) => b === 0), `engine idle ${sent}, bytes ${untouched.subarray(0, 8).toString('hex')}`);
  await c.dmaMap(IOVA, DMA_SIZE, DMA_READ | DMA_WRITE, mem, 0);
  c.close();
  await sleep(200);

  // A new client: the old one's map left the IOMMU when it went, so the same IOVA maps again.
  const c2 = await connect();
  const mem2 = memfd(DMA_SIZE);
  let remapped = true;
  try {
    await c2.dmaMap(IOVA, DMA_SIZE, DMA_READ | DMA_WRITE, mem2, 0);
  } catch (err) {
    remapped = false;
    console.log(`remap failed: ${err.message}`);
  }
  const fresh = pattern(4096, 0x33);
  fs.writeSync(mem2, fresh, 0, fresh.length, 0);
  const ok2 = remapped && (await eduDma(c2, IOVA, EDU.BUFFER, 4096, false)) && (await eduDma(c2, EDU.BUFFER, IOVA + 0x3000, 4096, true));
  check('reconnect-remaps', ok2 && readFd(mem2, 0x3000, 4096).equals(fresh), `remapped ${remapped}`);
  c2.close();
}

async function sysfsChecks() {
  const c = await connect();
  await registers(c);
  c.close();
}

try {
  if (mode === 'vfio') await vfioChecks();
  else if (mode === 'sysfs') await sysfsChecks();
  else throw new Error(`unknown mode ${mode}`);
} catch (err) {
  check('exception', false, err?.stack ?? String(err));
}
console.log(`L1CHECK DONE pass=${pass} fail=${fail}`);
process.exit(fail === 0 && pass > 0 ? 0 : 1);
