// The README's first command, as a user runs it: the daemon on its embedded default
// (96 MiB of anonymous shared memory), QEMU 11 attaching to it, twice in a row.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../src/client/client.js';
import { RegionIndex } from '../../src/wire/constants.js';
import { finished, spawnCli, waitForLog, waitForLogCount } from '../helpers/cli.js';
import { nvgraceBarCheckArgs, patternWord, shellQuote } from './bar-check.js';
import { bootGuest, describeBoot, parseBarCheckDone, parseChecks } from './boot.js';
import { buildInitramfs } from './initramfs.js';
import { useQemu } from './qemu-fixture.js';
import { vfioUserDevice } from './vfio-user-device.js';

const MiB = 1024 * 1024;
const qemu = useQemu();

describe('the embedded default served by the CLI', () => {
  let dir = '';
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('serves two QEMU guests in turn with the memory intact, then stops on SIGTERM', async (ctx) => {
    const q = qemu.require(ctx);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-cli-guest-'));
    const socket = path.join(dir, 'gpu0.sock');
    const daemon = spawnCli(['serve', '--socket', socket]);
    try {
      await waitForLog(daemon, 'device ready');
      const common = { memSize: 96 * MiB, bar2Size: 128 * MiB };

      const first = await buildInitramfs({
        initCommands: `bar-check ${shellQuote(nvgraceBarCheckArgs({ ...common, extra: ['--write-fill', '0x40000:64K:0x5eed'] }))}`,
      });
      const r1 = await bootGuest({ qemu: q, initrd: first, extraArgs: vfioUserDevice(socket) });
      const why1 = describeBoot(r1);
      expect(parseChecks(r1.output).filter((c) => !c.pass), why1).toEqual([]);
      expect(parseBarCheckDone(r1.output)?.pass, why1).toBeGreaterThan(10);
      await waitForLogCount(daemon, 'client disconnected', 1);

      // a new QEMU: the daemon waited for it, and the first guest's bytes are still there
      const second = await buildInitramfs({
        initCommands: `bar-check ${shellQuote(nvgraceBarCheckArgs({ ...common, padding: false, extra: ['--expect-fill', '0x40000:64K:0x5eed'] }))}`,
      });
      const r2 = await bootGuest({ qemu: q, initrd: second, extraArgs: vfioUserDevice(socket) });
      const why2 = describeBoot(r2);
      expect(parseChecks(r2.output).filter((c) => !c.pass), why2).toEqual([]);
      expect(parseChecks(r2.output).map((c) => c.name), why2).toContain('expect-fill@0x40000+0x10000');

      // and the host sees them through the socket (the trapped path, same memory),
      // once the second QEMU has gone (one client at a time)
      await waitForLogCount(daemon, 'client disconnected', 2);
      const client = VfioUserClient.connect(socket);
      try {
        await client.negotiate();
        const got = await client.regionRead(RegionIndex.BAR2, 0x40000, 16);
        for (let i = 0; i < 16; i += 4) expect(got.readUInt32LE(i)).toBe(patternWord(0x40000 + i, 0x5eed));
      } finally {
        client.close();
      }
    } finally {
      daemon.kill('SIGTERM');
      const done = await finished(daemon);
      expect(done.code).toBe(0);
      expect(fs.existsSync(socket)).toBe(false);
    }
  }, 400_000);
});
