import fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../src/client/client.js';
import { native } from '../../src/native/native.js';
import { RegionIndex } from '../../src/wire/constants.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';

/**
 * The daemon maps the emulated BAR0 and the default (memfd) aperture to serve
 * trapped accesses without a syscall. The client gets the same fds: if it could
 * truncate them, the daemon's next access would be a SIGBUS.
 */
describe('memory the daemon maps and the client holds', () => {
  let d: TestDaemon;
  let client: VfioUserClient;
  const size = 64 * 1024 * 1024 + 2048;

  beforeEach(async () => {
    d = startTestDaemon({ aperturePath: undefined, apertureSize: size });
    client = VfioUserClient.connect(d.socket);
    await client.negotiate();
  });

  afterEach(() => {
    client.close();
    d.stop();
  });

  for (const [name, region, trapped] of [
    ['BAR0', RegionIndex.BAR0, 0x1498],
    ['BAR2', RegionIndex.BAR2, 64 * 1024 * 1024 + 16],
  ] as const) {
    it(`${name}: a client cannot shrink the memory, and trapped accesses keep working`, async () => {
      const { fd } = await client.regionInfo(region);
      expect(fd).not.toBeNull();
      try {
        const before = fs.fstatSync(fd!).size;
        for (const len of [0, 4096, before + 4096]) {
          expect(() => fs.ftruncateSync(fd!, len)).toThrow(expect.objectContaining({ code: 'EPERM' }));
        }
        expect(fs.fstatSync(fd!).size).toBe(before);
        await client.regionWrite(region, trapped, Buffer.from([1, 2, 3, 4]));
        expect([...(await client.regionRead(region, trapped, 4))]).toEqual([1, 2, 3, 4]);
        // the trapped write went to the memory the client maps
        const b = Buffer.alloc(4);
        fs.readSync(fd!, b, 0, 4, trapped);
        expect([...b]).toEqual([1, 2, 3, 4]);
      } finally {
        native.closeFd(fd!);
      }
    });
  }
});
