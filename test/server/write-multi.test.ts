// REGION_WRITE_MULTI both ways: posted (NO_REPLY, as QEMU sends it) gets no
// reply; without NO_REPLY the reply carries wr_cnt, or an error for a bad batch.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Command, Errno, Flag, MsgType, RegionIndex, Size } from '../../src/wire/constants.js';
import { readU64 } from '../../src/wire/parser.js';
import { encodeRegionRead, encodeWriteMulti, type MultiWrite } from '../../src/wire/serializer.js';
import { startTestDaemon, until, type TestDaemon } from '../helpers/daemon.js';
import { RawPeer, errnoOf } from '../helpers/raw-peer.js';

const BAR2 = RegionIndex.BAR2;

describe('REGION_WRITE_MULTI', () => {
  let d: TestDaemon;
  let peer: RawPeer;

  beforeEach(async () => {
    d = startTestDaemon();
    peer = RawPeer.connect(d.socket);
    await until(() => d.running.daemon.client !== null, 'client attached');
    await peer.negotiate(); // QEMU's capabilities: write_multiple true
  });

  afterEach(() => {
    peer.close();
    d.stop();
  });

  const writes = (base: number, values: number[]): MultiWrite[] =>
    values.map((v, i) => ({ region: BAR2, offset: base + 8 * i, data: Buffer.from([v, v, v]) }));

  async function readBack(id: number, offset: number, count: number): Promise<number[]> {
    const r = await peer.request(encodeRegionRead(id, BAR2, offset, count));
    expect(r.header.id).toBe(id);
    return [...r.payload.subarray(Size.REGION_ACCESS)];
  }

  it('without NO_REPLY: one reply with wr_cnt, and the writes done', async () => {
    const r = await peer.request(encodeWriteMulti(21, writes(0x300, [5, 6, 7]), false));
    expect(r.header).toMatchObject({ id: 21, command: Command.REGION_WRITE_MULTI, flags: MsgType.REPLY, size: 16 + Size.WRITE_MULTI_COUNT });
    expect(r.payload.length).toBe(Size.WRITE_MULTI_COUNT);
    expect(readU64(r.payload, 0, 'wr_cnt')).toBe(3);
    expect(await readBack(22, 0x300, 19)).toEqual([5, 5, 5, 0, 0, 0, 0, 0, 6, 6, 6, 0, 0, 0, 0, 0, 7, 7, 7]);
  });

  it('with NO_REPLY: no reply; the next reply is the next request\'s', async () => {
    await peer.send(encodeWriteMulti(23, writes(0x400, [9, 8])));
    expect(await readBack(24, 0x400, 11)).toEqual([9, 9, 9, 0, 0, 0, 0, 0, 8, 8, 8]);
    expect(peer.pending).toBe(0);
  });

  it('a bad batch without NO_REPLY gets an error reply and writes nothing', async () => {
    const bad = [...writes(0x500, [4]), { region: BAR2, offset: 2 ** 40, data: Buffer.from([1]) }];
    const r = await peer.request(encodeWriteMulti(25, bad, false));
    expect(r.header).toMatchObject({ id: 25, command: Command.REGION_WRITE_MULTI, flags: MsgType.REPLY | Flag.ERROR });
    expect(errnoOf(r)).toBe(Errno.EINVAL);
    expect(await readBack(26, 0x500, 1)).toEqual([0]);
  });
});
