// Message generator for the socket fuzzer: valid vfio-user commands with random
// fields, mutations of them, and plain garbage; each may carry fds of any kind.
import fs from 'node:fs';
import { native } from '../../src/native/native.js';
import { Command, DmaMapFlag, Flag, HEADER_SIZE, IrqSetFlag, MsgType, RegionIndex } from '../../src/wire/constants.js';
import {
  encodeDeviceGetInfo,
  encodeDeviceReset,
  encodeDmaMap,
  encodeDmaUnmap,
  encodeIndexQuery,
  encodeRegionRead,
  encodeRegionWrite,
  encodeSetIrqs,
  encodeVersion,
  encodeWriteMulti,
  writeU32,
  writeHeader,
  writeU64,
} from '../../src/wire/serializer.js';

/** DEVICE_FEATURE (argsz, flags, data), which the daemon does not support: only clients of tests send it. */
export function encodeDeviceFeature(id: number, argsz: number, flags: number, data: Uint8Array = new Uint8Array()): Buffer {
  const buf = Buffer.alloc(HEADER_SIZE + 8 + data.length);
  writeHeader(buf, 0, id, Command.DEVICE_FEATURE, buf.length, MsgType.COMMAND);
  writeU32(buf, HEADER_SIZE, argsz);
  writeU32(buf, HEADER_SIZE + 4, flags);
  buf.set(data, HEADER_SIZE + 8);
  return buf;
}

/** Small, fast, seedable PRNG (mulberry32). */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  u32(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  int(n: number): number {
    return this.u32() % n;
  }
  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
}

/** The host page: DMA maps of whole pages are the ones the server accepts and must then release. */
const PAGE = native.pageSize();
const MiB = 1024 * 1024;
/** Values at the edges of what the daemon checks. */
const EDGES32 = [0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 20, 24, 31, 32, 33, 0xfff, PAGE, 0xffff, 0x10000, MiB, MiB + 1, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
const EDGES64 = [0, PAGE - 1, PAGE, 96 * MiB, 96 * MiB + 1000, 128 * MiB - 8, 128 * MiB, 16 * MiB, 2 ** 32, 2 ** 52, 2 ** 53 - 1, 2 ** 53];

export interface FuzzMessage {
  bytes: Buffer;
  fds: number[];
}

function edge64(r: Rng): number {
  return r.chance(0.7) ? r.pick(EDGES64) + r.pick([0, 0, -1, 1, -PAGE, PAGE]) : r.u32() * 2 ** (r.int(22));
}

function anyIndex(r: Rng, valid: number): number {
  return r.chance(0.85) ? r.int(valid) : r.pick([valid, valid + 1, 100, 0xffff, 0xffffffff]);
}

/** fds of every kind a hostile client might send; the caller closes its copies after sending. */
function makeFds(r: Rng, n: number): number[] {
  const fds: number[] = [];
  for (let i = 0; i < n; i++) {
    switch (r.int(5)) {
      case 0: {
        const fd = native.memfdCreate('fuzz', 0);
        fs.ftruncateSync(fd, r.pick([0, PAGE, 16 * PAGE, MiB]));
        fds.push(fd);
        break;
      }
      case 1:
        fds.push(native.eventfd(0, r.chance(0.5) ? native.EFD_NONBLOCK : 0));
        break;
      case 2:
        fds.push(fs.openSync('/dev/null', 'r+'));
        break;
      case 3: {
        const [a, b] = native.socketPair();
        native.closeFd(b);
        fds.push(a);
        break;
      }
      default: {
        // a full blocking eventfd: signalling it must not block the daemon
        const fd = native.eventfd(0, 0);
        const max = Buffer.alloc(8);
        max.writeBigUInt64LE(0xfffffffffffffffen);
        fs.writeSync(fd, max);
        fds.push(fd);
      }
    }
  }
  return fds;
}

/** A well-formed command with random (often edge) field values. */
export function validMessage(r: Rng): FuzzMessage {
  const id = r.int(0x10000);
  const region = () => (r.chance(0.8) ? r.pick([RegionIndex.BAR0, RegionIndex.BAR2, RegionIndex.CONFIG]) : anyIndex(r, 9));
  const offset = (reg: number) =>
    reg === RegionIndex.CONFIG ? r.int(4200) : reg === RegionIndex.BAR0 ? r.int(16 * MiB + 8) : r.chance(0.5) ? edge64(r) : r.int(128 * MiB);
  const count = () => r.pick([1, 2, 4, 8, r.int(64) + 1, r.int(4096) + 1, MiB, MiB + 1, 0]);
  switch (r.int(13)) {
    case 0:
      return {
        bytes: encodeVersion(id, MsgType.COMMAND, r.chance(0.9) ? 0 : r.int(3), r.int(2), r.chance(0.2) ? null : {
          names: [],
          maxMsgFds: r.pick([0, 1, 16, 253]),
          maxDataXferSize: r.pick([0, 4096, MiB, 2 ** 40]),
          pgsizes: r.pick([4096, PAGE, 2 * PAGE, 0x3000, 0]),
          maxDmaMaps: r.pick([0, 1, 65535]),
          writeMultiple: r.chance(0.5),
        }),
        fds: [],
      };
    case 1: {
      const withFd = r.chance(0.6);
      const size = r.chance(0.7) ? (r.int(16) + 1) * PAGE : edge64(r);
      const address = r.chance(0.7) ? r.int(64) * Math.max(PAGE, 0x10000) : edge64(r);
      const m = encodeDmaMap(id, r.pick([DmaMapFlag.READ, DmaMapFlag.WRITE, 3, 0, 4]), withFd && r.chance(0.7) ? r.int(4) * PAGE : edge64(r) % 2 ** 52, address, Math.max(0, size));
      return { bytes: m, fds: withFd ? makeFds(r, r.chance(0.9) ? 1 : 2) : [] };
    }
    case 2:
      return { bytes: encodeDmaUnmap(id, r.pick([0, 0, 2, 1, 4]), r.int(64) * Math.max(PAGE, 0x10000), (r.int(16) + 1) * PAGE), fds: [] };
    case 3:
      return { bytes: encodeDeviceGetInfo(id), fds: [] };
    case 4:
      return { bytes: encodeIndexQuery(id, Command.DEVICE_GET_REGION_INFO, r.pick([32, 64, 80, 16, 0xffffffff]), anyIndex(r, 9), 32), fds: [] };
    case 5:
      return { bytes: encodeIndexQuery(id, Command.DEVICE_GET_IRQ_INFO, r.pick([16, 8, 0xffff]), anyIndex(r, 5), 16), fds: [] };
    case 6: {
      const data = r.pick([IrqSetFlag.DATA_NONE, IrqSetFlag.DATA_BOOL, IrqSetFlag.DATA_EVENTFD, 0, 3]);
      const action = r.pick([IrqSetFlag.ACTION_MASK, IrqSetFlag.ACTION_UNMASK, IrqSetFlag.ACTION_TRIGGER, 0]);
      const n = r.pick([0, 1, 1, 2, 16, 17]);
      const start = r.chance(0.8) ? r.int(16) : r.pick([0xffffffff, 16, 15]);
      const bools = data === IrqSetFlag.DATA_BOOL ? r.bytes(r.chance(0.8) ? n : r.int(4)) : null;
      const fds = data === IrqSetFlag.DATA_EVENTFD && r.chance(0.8) ? makeFds(r, Math.min(n, 16)) : r.chance(0.05) ? makeFds(r, 1) : [];
      return { bytes: encodeSetIrqs(id, data | action, anyIndex(r, 5), start, n, bools), fds };
    }
    case 7: {
      const reg = region();
      return { bytes: encodeRegionRead(id, reg, offset(reg), count()), fds: [] };
    }
    case 8: {
      const reg = region();
      const n = r.pick([1, 2, 4, 8, r.int(256) + 1]);
      return { bytes: encodeRegionWrite(id, reg, offset(reg), r.bytes(n), r.chance(0.3)), fds: [] };
    }
    case 9: {
      const writes = Array.from({ length: r.int(8) + 1 }, () => {
        const reg = region();
        return { region: reg, offset: offset(reg), data: r.bytes(r.pick([1, 2, 4, 8])) };
      });
      return { bytes: encodeWriteMulti(id, writes), fds: [] };
    }
    case 10:
      return { bytes: encodeDeviceReset(id), fds: [] };
    case 11:
      return { bytes: encodeDeviceFeature(id, r.pick([8, 16, 0]), r.u32(), r.bytes(r.int(16))), fds: [] };
    default:
      return { bytes: encodeIndexQuery(id, Command.DEVICE_GET_REGION_IO_FDS, r.pick([16, 8, 32]), anyIndex(r, 9), 16), fds: [] };
  }
}

/** A valid message with a few of its bytes, fields, or its length changed. */
export function mutatedMessage(r: Rng): FuzzMessage {
  const m = validMessage(r);
  let b = m.bytes;
  for (let k = r.int(3) + 1; k > 0; k--) {
    switch (r.int(7)) {
      case 0: {
        const i = r.int(b.length);
        b[i] = b[i]! ^ (1 << r.int(8));
        break;
      }
      case 1:
        b[r.int(b.length)] = r.u32() & 0xff;
        break;
      case 2: {
        if (b.length < HEADER_SIZE + 4) break;
        const at = HEADER_SIZE + 4 * r.int((b.length - HEADER_SIZE) / 4);
        writeU32(b, at, r.pick(EDGES32));
        break;
      }
      case 3: {
        if (b.length < HEADER_SIZE + 8) break;
        const at = HEADER_SIZE + 4 * r.int((b.length - HEADER_SIZE - 4) / 4);
        writeU64(b, at, Math.max(0, Math.min(2 ** 53, edge64(r))));
        break;
      }
      case 4: {
        // shorter or longer, header size kept honest (the stream stays framed)
        const len = Math.max(HEADER_SIZE, r.chance(0.5) ? b.length - r.int(b.length - HEADER_SIZE + 1) : b.length + r.int(64));
        const nb = Buffer.alloc(len);
        b.copy(nb, 0, 0, Math.min(len, b.length));
        writeU32(nb, 4, len);
        b = nb;
        break;
      }
      case 5:
        writeU32(b, 8, r.pick([MsgType.REPLY, Flag.NO_REPLY, Flag.NO_REPLY | MsgType.REPLY, Flag.ERROR, r.u32()]));
        break;
      default:
        b.writeUInt16LE(r.int(24), 2);
    }
  }
  return { bytes: b, fds: m.fds };
}

/** A header with a random command and flags, and random bytes after it. */
export function randomMessage(r: Rng): FuzzMessage {
  const body = r.bytes(r.int(r.chance(0.9) ? 64 : 4096));
  const b = Buffer.concat([Buffer.alloc(HEADER_SIZE), body]);
  b.writeUInt16LE(r.int(0x10000), 0);
  b.writeUInt16LE(r.chance(0.8) ? r.int(20) : r.int(0x10000), 2);
  writeU32(b, 4, b.length);
  writeU32(b, 8, r.chance(0.7) ? 0 : r.u32());
  writeU32(b, 12, r.u32());
  return { bytes: b, fds: r.chance(0.1) ? makeFds(r, r.int(4) + 1) : [] };
}

/** A message that cannot be framed: its header states a size the daemon must refuse. */
export function unframeable(r: Rng): FuzzMessage {
  const b = Buffer.alloc(HEADER_SIZE + 8);
  b.writeUInt16LE(r.int(20), 2);
  writeU32(b, 4, r.pick([0, 1, 15, 2 * MiB + 1, 1024 * MiB, 0xffffffff]));
  return { bytes: b, fds: r.chance(0.3) ? makeFds(r, r.int(3) + 1) : [] };
}

export function fuzzMessage(r: Rng): FuzzMessage {
  const p = r.int(100);
  if (p < 45) return validMessage(r);
  if (p < 85) return mutatedMessage(r);
  if (p < 99) return randomMessage(r);
  return unframeable(r);
}
