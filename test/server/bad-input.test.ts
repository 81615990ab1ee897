// Every kind of bad input the issue lists, sent over a raw socket: each gets an
// error reply with a fitting errno, or (where the stream cannot be framed) the
// connection is closed; the daemon leaks no fd and then serves a normal session.
import fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../src/client/client.js';
import { native } from '../../src/native/native.js';
import { DEFAULT_LIMITS } from '../../src/transport/connection.js';
import {
  Command,
  DmaMapFlag,
  DmaUnmapFlag,
  Errno,
  Flag,
  HEADER_SIZE,
  IrqIndex,
  IrqSetFlag,
  Limits,
  MsgType,
  RegionIndex,
  Size,
} from '../../src/wire/constants.js';
import { decodeVersion } from '../../src/wire/parser.js';
import {
  encodeDeviceGetInfo,
  encodeDmaMap,
  encodeDmaUnmap,
  encodeIndexQuery,
  encodeRegionRead,
  encodeRegionWrite,
  encodeSetIrqs,
  encodeVersion,
  encodeWriteMulti,
  writeU32,
  writeU64,
} from '../../src/wire/serializer.js';
import { startTestDaemon, until, type TestDaemon } from '../helpers/daemon.js';
import { RawPeer, errnoOf, rawMessage } from '../helpers/raw-peer.js';
import { LONG_TEST_MS } from '../helpers/patience.js';

/** DMA maps are in host pages (qemu-user's QEMU_PAGESIZE included). */
const PAGE = native.pageSize();
const MiB = 1024 * 1024;
const BAR2 = RegionIndex.BAR2;
const BAR2_SIZE = 128 * MiB;
const STALL_MS = 300;
const MAX_CLIENT_FDS = 24;
const { EINVAL, ENOSYS, EOPNOTSUPP, EEXIST, ENOSPC, ERANGE, EMFILE, ENOTSUP } = Errno;

function memfd(size: number): number {
  const fd = native.memfdCreate('guest-ram', 0);
  fs.ftruncateSync(fd, size);
  return fd;
}

/** A DMA_MAP request with every field as given (argsz included). */
function dmaMapRaw(f: { argsz?: number; flags?: number; offset?: number; address: number; size: number }): Buffer {
  const m = encodeDmaMap(9, f.flags ?? DmaMapFlag.READ | DmaMapFlag.WRITE, f.offset ?? 0, f.address, f.size);
  if (f.argsz !== undefined) writeU32(m, HEADER_SIZE, f.argsz);
  return m;
}

describe('bad input over a raw socket', () => {
  let d: TestDaemon;
  let peer: RawPeer;
  let baseFds: number;

  beforeEach(async () => {
    d = startTestDaemon({ limits: { ...DEFAULT_LIMITS, stallTimeoutMs: STALL_MS }, maxClientFds: MAX_CLIENT_FDS });
    baseFds = native.fdCount();
    peer = RawPeer.connect(d.socket);
    await until(() => d.running.daemon.client !== null, 'client attached');
  });

  afterEach(async () => {
    peer.close();
    try {
      await until(() => d.running.daemon.client === null, 'client gone');
      // The daemon holds none of the client's fds, and serves the next client normally.
      expect(native.fdCount()).toBe(baseFds);
      expect(d.running.daemon.device.clientFds.held).toBe(0);
      const c = VfioUserClient.connect(d.socket);
      await c.negotiate();
      expect((await c.regionRead(RegionIndex.CONFIG, 0, 4)).readUInt32LE(0)).toBe(0x234210de);
      await c.regionWrite(BAR2, 0x10, Buffer.from([1, 2, 3, 4]));
      expect([...(await c.regionRead(BAR2, 0x10, 4))]).toEqual([1, 2, 3, 4]);
      c.close();
      await until(() => d.running.daemon.client === null, 'normal client gone');
      expect(native.fdCount()).toBe(baseFds);
    } finally {
      d.stop();
    }
  });

  const expectErrno = async (msg: Buffer, errno: number, fds: number[] | null = null) => {
    const r = await peer.request(msg, fds);
    expect(r.header.command).toBe(msg.readUInt16LE(2));
    expect(r.header.id).toBe(msg.readUInt16LE(0));
    expect(errnoOf(r)).toBe(errno);
    return r;
  };

  describe('order and message type', () => {
    it('refuses every command before VERSION, then negotiates', async () => {
      await expectErrno(encodeDeviceGetInfo(3), EINVAL);
      await expectErrno(encodeRegionRead(4, BAR2, 0, 4), EINVAL);
      await expectErrno(dmaMapRaw({ address: 0, size: PAGE }), EINVAL);
      await peer.negotiate();
      expect(errnoOf(await peer.request(encodeDeviceGetInfo(5)))).toBe(0);
    });

    it('refuses a second VERSION, and closes after an unsupported major version', async () => {
      await peer.negotiate();
      await expectErrno(encodeVersion(2, MsgType.COMMAND, 0, 0, null), EINVAL);
      const other = RawPeer.connect(d.socket); // refused: the device has a client
      await other.closed();
      peer.close();
      await until(() => d.running.daemon.client === null, 'first gone');
      peer = RawPeer.connect(d.socket);
      await expectErrno(encodeVersion(3, MsgType.COMMAND, 1, 0, null), ENOTSUP);
      await peer.closed();
    });

    it('refuses VERSION with bad capabilities', async () => {
      const bad = (json: string) => {
        const body = Buffer.concat([Buffer.from([0, 0, 0, 0]), Buffer.from(json + '\0')]);
        return rawMessage(Command.VERSION, body);
      };
      // Only sizes above the host page: the client cannot map our pages.
      await expectErrno(bad(`{"capabilities":{"pgsizes":${2 * native.pageSize()}}}`), EINVAL);
      await expectErrno(bad('{"capabilities":{"pgsizes":0}}'), EINVAL);
      await expectErrno(bad('{"capabilities":{"max_msg_fds":-1}}'), EINVAL);
      await expectErrno(bad('{"capabilities":[]}'), EINVAL);
      await expectErrno(bad('not json'), EINVAL);
      await expectErrno(rawMessage(Command.VERSION, Buffer.from([0, 0, 0, 0, 0x7b])), EINVAL); // no NUL
      await expectErrno(rawMessage(Command.VERSION, Buffer.from([0, 0])), EINVAL); // too short
      await peer.negotiate();
    });

    it('refuses reply-typed messages and unknown header flags from the client', async () => {
      await peer.negotiate();
      for (const flags of [MsgType.REPLY, MsgType.REPLY | Flag.ERROR, 2, 0xf, 0x40, 0x80000000]) {
        const msg = encodeDeviceGetInfo(11);
        writeU32(msg, 8, flags);
        await expectErrno(msg, EINVAL);
      }
      // a posted message that is refused gets no reply; the next one is answered in order
      const posted = encodeDeviceGetInfo(12);
      writeU32(posted, 8, Flag.NO_REPLY | MsgType.REPLY);
      await peer.send(posted);
      const r = await peer.request(encodeDeviceGetInfo(13));
      expect(r.header.id).toBe(13);
      expect(errnoOf(r)).toBe(0);
    });

    it('answers unknown, unsupported and server-to-client commands with errors', async () => {
      await peer.negotiate();
      await expectErrno(rawMessage(0), ENOSYS);
      await expectErrno(rawMessage(99), ENOSYS);
      await expectErrno(rawMessage(0xffff), ENOSYS);
      await expectErrno(rawMessage(Command.DIRTY_PAGES, Buffer.alloc(16)), EOPNOTSUPP);
      await expectErrno(rawMessage(Command.MIG_DATA_READ, Buffer.alloc(16)), EOPNOTSUPP);
      await expectErrno(rawMessage(Command.DMA_READ, Buffer.alloc(16)), EINVAL);
      await expectErrno(rawMessage(Command.DMA_WRITE, Buffer.alloc(20)), EINVAL);
      await expectErrno(rawMessage(Command.DEVICE_RESET, Buffer.alloc(4)), EINVAL);
    });
  });

  describe('framing', () => {
    it('closes a connection whose header announces 1 GiB, without allocating it', async () => {
      await peer.negotiate();
      const before = process.memoryUsage().arrayBuffers;
      await peer.send(rawMessage(Command.REGION_WRITE, Buffer.alloc(16), { size: 1024 * MiB }));
      await peer.closed();
      expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(16 * MiB);
    });

    it.each([0, 8, 15, 0xffffffff, DEFAULT_LIMITS.maxMessageSize + 1])('closes a connection whose header size is %d', async (size) => {
      await peer.negotiate();
      await peer.send(rawMessage(Command.DEVICE_GET_INFO, Buffer.alloc(16), { size }));
      await peer.closed();
    });

    it('takes a message of exactly the maximum size (and refuses its count)', async () => {
      await peer.negotiate();
      const body = Buffer.alloc(DEFAULT_LIMITS.maxMessageSize - HEADER_SIZE);
      writeU64(body, 0, 0);
      writeU32(body, 8, BAR2);
      writeU32(body, 12, body.length - Size.REGION_ACCESS);
      await expectErrno(rawMessage(Command.REGION_WRITE, body), EINVAL);
      expect(errnoOf(await peer.request(encodeDeviceGetInfo(2)))).toBe(0);
    });

    it('drops a client that stalls mid-header or mid-body, and serves others meanwhile', async () => {
      await peer.negotiate();
      const t0 = Date.now();
      await peer.send(encodeDeviceGetInfo(1).subarray(0, 10));
      // a second client is refused at once (one client per device), not held up
      const other = RawPeer.connect(d.socket);
      await other.closed(STALL_MS / 2);
      await peer.closed(STALL_MS * 10);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(STALL_MS - 20);
      await until(() => d.running.daemon.client === null, 'stalled client dropped');
      peer = RawPeer.connect(d.socket);
      await peer.negotiate();
      const w = encodeRegionWrite(2, BAR2, 0, Buffer.alloc(64));
      await peer.send(w.subarray(0, HEADER_SIZE + 8)); // header whole, body half
      await peer.closed(STALL_MS * 10);
    });
  });

  describe('payload fields', () => {
    beforeEach(() => peer.negotiate());

    it('checks argsz and payload sizes', async () => {
      await expectErrno(dmaMapRaw({ argsz: 31, address: 0, size: PAGE }), EINVAL);
      await expectErrno(dmaMapRaw({ argsz: 0xffffffff, address: 0, size: PAGE }), EINVAL);
      await expectErrno(rawMessage(Command.DMA_MAP, Buffer.alloc(24)), EINVAL);
      const unmap = encodeDmaUnmap(1, 0, 0, PAGE);
      writeU32(unmap, HEADER_SIZE, 16);
      await expectErrno(unmap, EINVAL);
      await expectErrno(rawMessage(Command.DMA_UNMAP, Buffer.alloc(32)), EINVAL); // a dirty bitmap
      const info = encodeDeviceGetInfo(1);
      writeU32(info, HEADER_SIZE, 8);
      await expectErrno(info, EINVAL);
      await expectErrno(rawMessage(Command.DEVICE_GET_INFO, Buffer.alloc(4)), EINVAL);
      await expectErrno(encodeIndexQuery(1, Command.DEVICE_GET_REGION_INFO, 16, BAR2, Size.REGION_INFO), EINVAL);
      await expectErrno(encodeIndexQuery(1, Command.DEVICE_GET_REGION_INFO, 32, BAR2, 8), EINVAL);
      await expectErrno(encodeIndexQuery(1, Command.DEVICE_GET_IRQ_INFO, 8, 0, Size.IRQ_INFO), EINVAL);
      await expectErrno(encodeIndexQuery(1, Command.DEVICE_GET_REGION_IO_FDS, 8, 0, Size.REGION_IO_FDS), EINVAL);
      const irqs = encodeSetIrqs(1, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, IrqIndex.MSIX, 0, 1);
      writeU32(irqs, HEADER_SIZE, 12);
      await expectErrno(irqs, EINVAL);
      await expectErrno(rawMessage(Command.DEVICE_SET_IRQS, Buffer.alloc(12)), EINVAL);
      await expectErrno(rawMessage(Command.REGION_READ, Buffer.alloc(8)), EINVAL);
    });

    it('checks region and IRQ indexes', async () => {
      for (const index of [9, 100, 0xffffffff]) {
        await expectErrno(encodeIndexQuery(1, Command.DEVICE_GET_REGION_INFO, 32, index, Size.REGION_INFO), EINVAL);
        await expectErrno(encodeIndexQuery(1, Command.DEVICE_GET_REGION_IO_FDS, 16, index, Size.REGION_IO_FDS), EINVAL);
        await expectErrno(encodeRegionRead(1, index, 0, 4), EINVAL);
        await expectErrno(encodeRegionWrite(1, index, 0, Buffer.alloc(4)), EINVAL);
      }
      for (const absent of [RegionIndex.BAR1, RegionIndex.BAR4, RegionIndex.ROM, RegionIndex.VGA]) {
        await expectErrno(encodeRegionRead(1, absent, 0, 4), EINVAL);
      }
      for (const index of [5, 6, 0xffffffff]) {
        await expectErrno(encodeIndexQuery(1, Command.DEVICE_GET_IRQ_INFO, 16, index, Size.IRQ_INFO), EINVAL);
        await expectErrno(encodeSetIrqs(1, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, index, 0, 1), EINVAL);
      }
    });

    it('checks offset + count against the region, with no overflow', async () => {
      await expectErrno(encodeRegionRead(1, BAR2, BAR2_SIZE, 1), EINVAL);
      await expectErrno(encodeRegionRead(1, BAR2, BAR2_SIZE - 4, 8), EINVAL);
      await expectErrno(encodeRegionRead(1, BAR2, 2 ** 53 - 8, 16), EINVAL);
      await expectErrno(encodeRegionWrite(1, RegionIndex.CONFIG, 4095, Buffer.alloc(2)), EINVAL);
      await expectErrno(encodeRegionRead(1, RegionIndex.BAR0, 16 * MiB, 4), EINVAL);
      const huge = encodeRegionRead(1, BAR2, 0, 4);
      writeU32(huge, HEADER_SIZE, 0xfffffff0);
      writeU32(huge, HEADER_SIZE + 4, 0xffffffff); // offset 2^64 - 16: beyond 2^53
      await expectErrno(huge, ERANGE);
      // the last bytes of the BAR are fine
      expect(errnoOf(await peer.request(encodeRegionRead(1, BAR2, BAR2_SIZE - 8, 8)))).toBe(0);
    });

    it('checks count against max_data_xfer_size and is not 0', async () => {
      await expectErrno(encodeRegionRead(1, BAR2, 0, Limits.MAX_DATA_XFER_SIZE + 1), EINVAL);
      await expectErrno(encodeRegionRead(1, BAR2, 0, 0), EINVAL);
      await expectErrno(encodeRegionWrite(1, BAR2, 0, Buffer.alloc(0)), EINVAL);
      const r = await peer.request(encodeRegionRead(1, BAR2, 0, Limits.MAX_DATA_XFER_SIZE));
      expect(errnoOf(r)).toBe(0);
      expect(r.payload.length).toBe(Size.REGION_ACCESS + Limits.MAX_DATA_XFER_SIZE);
    });

    it("checks a write's body length against its count, posted or not", async () => {
      const short = encodeRegionWrite(1, BAR2, 0x100, Buffer.from([1, 2, 3, 4]));
      writeU32(short, HEADER_SIZE + 12, 8);
      await expectErrno(short, EINVAL);
      const long = encodeRegionWrite(1, BAR2, 0x100, Buffer.from([1, 2, 3, 4, 5, 6, 7, 8]));
      writeU32(long, HEADER_SIZE + 12, 4);
      await expectErrno(long, EINVAL);
      const read = encodeRegionRead(1, BAR2, 0x100, 4);
      await expectErrno(withSize(Buffer.concat([read, Buffer.alloc(4)])), EINVAL); // a read carrying data
      // posted: no reply, nothing written, and the stream stays in step
      const posted = encodeRegionWrite(1, BAR2, 0x100, Buffer.from([9, 9, 9, 9]), true);
      writeU32(posted, HEADER_SIZE + 12, 2);
      await peer.send(posted);
      const r = await peer.request(encodeRegionRead(44, BAR2, 0x100, 4));
      expect(r.header.id).toBe(44);
      expect([...r.payload.subarray(Size.REGION_ACCESS)]).toEqual([0, 0, 0, 0]);
    });

    it('drops a bad REGION_WRITE_MULTI batch whole', async () => {
      const batch = encodeWriteMulti(1, [
        { region: BAR2, offset: 0x200, data: Buffer.from([7]) },
        { region: BAR2, offset: BAR2_SIZE, data: Buffer.from([7]) },
      ]);
      await peer.send(batch);
      const zero = encodeWriteMulti(1, []);
      await peer.send(zero);
      const r = await peer.request(encodeRegionRead(45, BAR2, 0x200, 1));
      expect(r.header.id).toBe(45);
      expect(r.payload[Size.REGION_ACCESS]).toBe(0);
    });

    it('checks SET_IRQS action/data combinations and start/count ranges', async () => {
      const efd = native.eventfd(0, native.EFD_NONBLOCK);
      const T = IrqSetFlag.ACTION_TRIGGER;
      const cases: [number, number, number, number, number[] | null, Uint8Array | null][] = [
        [IrqSetFlag.DATA_NONE | IrqSetFlag.DATA_BOOL | T, IrqIndex.MSIX, 0, 1, null, new Uint8Array([1])],
        [IrqSetFlag.DATA_NONE | T | IrqSetFlag.ACTION_MASK, IrqIndex.INTX, 0, 1, null, null],
        [T, IrqIndex.MSIX, 0, 1, null, null], // no data type
        [IrqSetFlag.DATA_NONE, IrqIndex.MSIX, 0, 1, null, null], // no action
        [IrqSetFlag.DATA_NONE | T | 0x40, IrqIndex.MSIX, 0, 1, null, null], // unknown flag
        [IrqSetFlag.DATA_NONE | T, IrqIndex.MSIX, 16, 1, null, null], // start beyond
        [IrqSetFlag.DATA_NONE | T, IrqIndex.MSIX, 15, 2, null, null], // range beyond
        [IrqSetFlag.DATA_NONE | T, IrqIndex.MSIX, 0xffffffff, 2, null, null], // start + count overflows u32
        [IrqSetFlag.DATA_NONE | T, IrqIndex.MSI, 1, 1, null, null], // MSI has one vector
        [IrqSetFlag.DATA_BOOL | T, IrqIndex.MSIX, 0, 4, null, new Uint8Array([1, 1])], // too few bools
        [IrqSetFlag.DATA_EVENTFD | T, IrqIndex.MSIX, 0, 0, [efd], null], // count 0 with an fd
        [IrqSetFlag.DATA_BOOL | T, IrqIndex.MSIX, 1, 0, null, null], // count 0 that is not a disable
        [IrqSetFlag.DATA_NONE | T, IrqIndex.MSIX, 0, 1, [efd], null], // fd without DATA_EVENTFD
        [IrqSetFlag.DATA_EVENTFD | T, IrqIndex.MSIX, 0, 2, [efd], null], // fd count != count
        [IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_MASK, IrqIndex.MSIX, 0, 1, null, null], // MSI-X not maskable
        [IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_MASK, IrqIndex.INTX, 0, 1, [efd], null], // mask eventfd
      ];
      for (const [flags, index, start, count, fds, bools] of cases) {
        await expectErrno(encodeSetIrqs(1, flags, index, start, count, bools), EINVAL, fds);
      }
      native.closeFd(efd);
      expect(d.running.daemon.device.interrupts.heldFds).toBe(0);
    });

    it('accepts only eventfds as interrupt fds', async () => {
      const mfd = memfd(PAGE);
      const devNull = fs.openSync('/dev/null', 'r+');
      const [a, b] = native.socketPair();
      for (const fd of [mfd, devNull, a]) {
        await expectErrno(encodeSetIrqs(1, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, IrqIndex.MSIX, 0, 1), EINVAL, [fd]);
      }
      [mfd, devNull, a, b].forEach((fd) => native.closeFd(fd));
      expect(d.running.daemon.device.interrupts.heldFds).toBe(0);
    });

    it('never blocks on a client eventfd whose counter is full, even a blocking one', async () => {
      const efd = native.eventfd(0, 0); // blocking
      const max = Buffer.alloc(8);
      max.writeBigUInt64LE(0xfffffffffffffffen);
      fs.writeSync(efd, max);
      const trig = IrqSetFlag.ACTION_TRIGGER;
      expect(errnoOf(await peer.request(encodeSetIrqs(1, IrqSetFlag.DATA_EVENTFD | trig, IrqIndex.MSIX, 0, 1), [efd]))).toBe(0);
      for (let i = 0; i < 3; i++) {
        expect(errnoOf(await peer.request(encodeSetIrqs(2, IrqSetFlag.DATA_NONE | trig, IrqIndex.MSIX, 0, 1)))).toBe(0);
      }
      expect(native.eventfdRead(efd)).toBe(Number(0xfffffffffffffffen));
      native.closeFd(efd);
    });
  });

  describe('fds against what the command takes', () => {
    beforeEach(() => peer.negotiate());

    it('closes stray fds that came with commands that take none', async () => {
      const mfd = memfd(PAGE);
      const efd = native.eventfd(0, 0);
      const held = native.fdCount();
      expect(errnoOf(await peer.request(encodeRegionRead(1, BAR2, 0, 4), [mfd, efd]))).toBe(0);
      expect(errnoOf(await peer.request(encodeDeviceGetInfo(2), [mfd]))).toBe(0);
      expect(errnoOf(await peer.request(rawMessage(99), [efd]))).toBe(ENOSYS);
      expect(native.fdCount()).toBe(held);
      native.closeFd(mfd);
      native.closeFd(efd);
    });

    it('refuses DMA_MAP with two fds and closes both', async () => {
      const a = memfd(PAGE);
      const b = memfd(PAGE);
      const held = native.fdCount();
      await expectErrno(dmaMapRaw({ address: 0, size: PAGE }), EINVAL, [a, b].map((x) => x));
      expect(native.fdCount()).toBe(held);
      native.closeFd(a);
      native.closeFd(b);
    });

    it('answers a message that brings more than 16 fds with EINVAL, then closes the connection and every fd', async () => {
      const fds = Array.from({ length: 17 }, () => native.eventfd(0, 0));
      const held = native.fdCount();
      const msg = encodeSetIrqs(5, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, IrqIndex.MSIX, 0, 16);
      // 16 with the header, one more with the body: still one message
      await peer.send(msg.subarray(0, HEADER_SIZE), fds.slice(0, 16));
      await peer.send(msg.subarray(HEADER_SIZE), fds.slice(16));
      const r = await peer.next();
      expect([r.header.id, r.header.command, errnoOf(r)]).toEqual([5, Command.DEVICE_SET_IRQS, EINVAL]);
      await peer.closed();
      await until(() => d.running.daemon.client === null, 'client dropped');
      expect(native.fdCount()).toBe(held - 2); // only the two ends of the socket went
      fds.forEach((fd) => native.closeFd(fd));
    });
  });

  describe('DMA_MAP', () => {
    beforeEach(() => peer.negotiate());

    it('refuses size 0, unaligned ranges, unknown flags, an offset without an fd, and overflow', async () => {
      await expectErrno(dmaMapRaw({ address: 0x100000, size: 0 }), EINVAL);
      await expectErrno(dmaMapRaw({ address: 0x100001, size: PAGE }), EINVAL);
      await expectErrno(dmaMapRaw({ address: 0x100000, size: PAGE + 1 }), EINVAL);
      await expectErrno(dmaMapRaw({ address: 0x100000, size: PAGE, flags: 4 }), EINVAL);
      await expectErrno(dmaMapRaw({ address: 0x100000, size: PAGE, offset: PAGE }), EINVAL);
      await expectErrno(dmaMapRaw({ address: 2 ** 53 - PAGE, size: 2 * PAGE }), EINVAL);
      const top = dmaMapRaw({ address: 0, size: PAGE });
      writeU32(top, HEADER_SIZE + 20, 0xffffffff); // address >= 2^63
      await expectErrno(top, ERANGE);
      expect(d.running.daemon.device.dma.count).toBe(0);
    });

    it('refuses fds that are not memory files or are too small, and unaligned file offsets', async () => {
      const small = memfd(2 * PAGE);
      await expectErrno(dmaMapRaw({ address: 0x100000, size: 4 * PAGE }), EINVAL, [small]);
      await expectErrno(dmaMapRaw({ address: 0x100000, size: 2 * PAGE, offset: PAGE }), EINVAL, [small]);
      await expectErrno(dmaMapRaw({ address: 0x100000, size: PAGE, offset: 100 }), EINVAL, [small]);
      const devNull = fs.openSync('/dev/null', 'r+');
      const efd = native.eventfd(0, 0);
      const [a, b] = native.socketPair();
      for (const fd of [devNull, efd, a]) await expectErrno(dmaMapRaw({ address: 0x100000, size: PAGE }), EINVAL, [fd]);
      [small, devNull, efd, a, b].forEach((fd) => native.closeFd(fd));
      expect(d.running.daemon.device.dma.count).toBe(0);
    });

    it('refuses overlapping maps with EEXIST and unmapping what is not mapped with ENOENT', async () => {
      const at = 0x200000;
      const size = 16 * PAGE;
      expect(errnoOf(await peer.request(dmaMapRaw({ address: at, size })))).toBe(0);
      await expectErrno(dmaMapRaw({ address: at, size: PAGE }), EEXIST);
      await expectErrno(dmaMapRaw({ address: at - PAGE, size: 2 * PAGE }), EEXIST);
      await expectErrno(dmaMapRaw({ address: at + size - PAGE, size: 2 * PAGE }), EEXIST);
      await expectErrno(dmaMapRaw({ address: 0x100000, size: 0x200000 }), EEXIST);
      await expectErrno(encodeDmaUnmap(1, 0, at, PAGE), Errno.ENOENT);
      await expectErrno(encodeDmaUnmap(1, DmaUnmapFlag.ALL, at, size), EINVAL);
      await expectErrno(encodeDmaUnmap(1, DmaUnmapFlag.GET_DIRTY_PAGE_INFO, at, size), EOPNOTSUPP);
      await expectErrno(encodeDmaUnmap(1, 8, at, size), EINVAL);
      expect(errnoOf(await peer.request(dmaMapRaw({ address: at + size, size: PAGE })))).toBe(0); // adjacent is fine
      expect(d.running.daemon.device.dma.count).toBe(2);
    });
  });

  describe('resource limits', () => {
    it('enforces exactly the DMA map limit it advertises', async () => {
      const r = await peer.request(encodeVersion(1, MsgType.COMMAND, 0, 0, { names: [], maxDmaMaps: 65535 }));
      const advertised = decodeVersion(r.payload, 0, r.payload.length).capabilities!.maxDmaMaps!;
      expect(advertised).toBe(d.running.daemon.device.dma.maxMaps);
      // pipelined: send a batch, then read its replies
      const batch = 4096;
      for (let i = 0; i < advertised; i += batch) {
        const n = Math.min(batch, advertised - i);
        const msgs = Buffer.concat(Array.from({ length: n }, (_, k) => dmaMapRaw({ address: (i + k) * PAGE, size: PAGE })));
        await peer.send(msgs);
        for (let k = 0; k < n; k++) expect(errnoOf(await peer.next())).toBe(0);
      }
      expect(d.running.daemon.device.dma.count).toBe(advertised);
      await expectErrno(dmaMapRaw({ address: advertised * PAGE, size: PAGE }), ENOSPC);
      expect(errnoOf(await peer.request(encodeDmaUnmap(1, DmaUnmapFlag.ALL, 0, 0)))).toBe(0);
      expect(d.running.daemon.device.dma.count).toBe(0);
    }, LONG_TEST_MS);

    it('caps the fds a client makes the daemon hold (DMA maps and eventfds together) with EMFILE', async () => {
      await peer.negotiate();
      const ram = memfd(64 * PAGE);
      for (let i = 0; i < MAX_CLIENT_FDS - 4; i++) {
        expect(errnoOf(await peer.request(dmaMapRaw({ address: i * PAGE, size: PAGE, offset: i * PAGE }), [ram]))).toBe(0);
      }
      const efds = Array.from({ length: 5 }, () => native.eventfd(0, native.EFD_NONBLOCK));
      const assign = (start: number, fds: number[]) =>
        peer.request(encodeSetIrqs(1, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, IrqIndex.MSIX, start, fds.length), fds);
      expect(errnoOf(await assign(0, efds.slice(0, 4)))).toBe(0);
      expect(d.running.daemon.device.clientFds.held).toBe(MAX_CLIENT_FDS);
      // one more fd of either kind is refused, and the refused fd is not kept
      const before = native.fdCount();
      await expectErrno(dmaMapRaw({ address: 0x1000000, size: PAGE }), EMFILE, [ram]);
      expect(errnoOf(await assign(4, efds.slice(4, 5)))).toBe(EMFILE);
      expect(native.fdCount()).toBe(before);
      // replacing an assigned eventfd does not grow what is held
      expect(errnoOf(await assign(0, efds.slice(4, 5)))).toBe(0);
      // releasing makes room again
      expect(errnoOf(await peer.request(encodeDmaUnmap(1, 0, 0, PAGE)))).toBe(0);
      expect(errnoOf(await assign(5, efds.slice(0, 1)))).toBe(0);
      expect(d.running.daemon.device.clientFds.held).toBe(MAX_CLIENT_FDS);
      await expectErrno(dmaMapRaw({ address: 0, size: PAGE }), EMFILE, [ram]);
      [ram, ...efds].forEach((fd) => native.closeFd(fd));
    });
  });
});

/** A REGION_READ with 4 bytes of data after it: the header size counts them. */
function withSize(msg: Buffer): Buffer {
  msg.writeUInt32LE(msg.length, 4);
  return msg;
}
