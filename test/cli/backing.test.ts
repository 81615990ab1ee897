// The backing flags as an operator uses them: one clear line for every mistake,
// the backing's facts in the start-up log.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { pageSizeName, supportedHugePageSizes } from '../../src/backends/hugepages.js';
import { nodesWithMemory } from '../../src/backends/numa.js';
import { finished, runCli, spawnCli, waitForLog } from '../helpers/cli.js';
import { poolCounts, requireReservation, reserveHugePages, type HugePageReservation } from '../helpers/hugepages.js';
import { native } from '../../src/native/native.js';
import { hugetlbMmapGap, numaCallsGap } from '../helpers/emulation.js';

const MiB = 1024 * 1024;

function deviceReady(stderr: string): { memory: { backing: Record<string, unknown>; size: string }; bar2: { memory: string; mapped: string } } {
  const line = stderr.split('\n').find((l) => l.includes('"device ready"'));
  if (!line) throw new Error(`no "device ready" in ${stderr}`);
  return JSON.parse(line);
}

describe('backing flags', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-cli-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it.each([
    [['--aperture-hugepages', '3M'], /"3M" is not a huge page size: a power of two from 64K.*2M, 1G; on arm64 also 64K, 32M, 512M, 16G/],
    [['--aperture-hugepages', '32K'], /"32K" is not a huge page size/],
    [['--aperture-hugepages', ''], /not a huge page size/],
    [['--aperture-numa-node', 'one'], /"one" is not a NUMA node number/],
    [['--aperture-numa-node', '-1'], /NUMA node number/],
  ])('rejects %j with one line and exit 2', async (flags, why) => {
    const r = await runCli(['serve', '--socket', path.join(dir, 's.sock'), ...flags]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(why);
  });

  it('refuses a huge page size the host does not offer in one line naming those it does, exit 1', async () => {
    const offered = supportedHugePageSizes('/sys');
    let absent = 64 * 1024;
    while (offered.includes(absent)) absent *= 2;
    const r = await runCli(['serve', '--socket', path.join(dir, 's.sock'), '--aperture-hugepages', `${absent / 1024}K`]);
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`--aperture-hugepages: this host has no ${pageSizeName(absent)} huge pages`);
    expect(lines[0]).toContain(`supported sizes: ${offered.length > 0 ? offered.map(pageSizeName).join(', ') : 'none'})`);
  });

  it('refuses a NUMA node that does not exist in one line, exit 1', async () => {
    const missing = Math.max(0, ...nodesWithMemory('/sys')) + 1;
    const r = await runCli(['serve', '--socket', path.join(dir, 's.sock'), '--aperture-numa-node', String(missing)]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual([
      `nvgrace-vfio-user: --aperture-numa-node: NUMA node ${missing} does not exist on this host (nodes with memory: ${nodesWithMemory('/sys').join(',')}); refusing to fall back to another node`,
    ]);
    expect(fs.existsSync(path.join(dir, 's.sock'))).toBe(false);
  });

  // the refusal comes from mapping the huge pages, which qemu-user 7.2 answers with EINVAL
  it.skipIf(hugetlbMmapGap() !== null)('refuses a huge page pool too small in one line naming the knob, exit 1', async () => {
    const { total } = poolCounts(2 * MiB);
    const r = await runCli(['serve', '--socket', path.join(dir, 's.sock'), '--aperture-hugepages', '2M', '--aperture-size', `${(total + 64) * 2}M`]);
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^nvgrace-vfio-user: huge page pool too small: .*raise \/sys\/kernel\/mm\/hugepages\/hugepages-2048kB\/nr_hugepages/);
  });

  it('logs the default backing\'s facts at start', async () => {
    const daemon = spawnCli(['serve', '--socket', path.join(dir, 's.sock')]);
    await waitForLog(daemon, 'device ready');
    daemon.kill('SIGTERM');
    const done = await finished(daemon);
    const ready = deviceReady(done.stderr);
    expect(ready.memory.backing).toEqual({ kind: 'memfd', path: null, numaNode: null, pageSize: native.pageSize(), cacheable: true });
    expect(ready.memory.size).toBe('96 MiB');
  });

  describe('with huge pages', () => {
    let pool: HugePageReservation | string | null = null;
    beforeAll(async () => {
      pool = await reserveHugePages(2 * MiB, 5);
    });
    afterAll(async () => {
      if (typeof pool === 'object') await pool?.release();
    });

    it.skipIf(numaCallsGap() !== null)('serves a huge page aperture bound to node 0 and maps it in whole huge pages', async (ctx) => {
      requireReservation(pool, ctx);
      const socket = path.join(dir, 's.sock');
      const daemon = spawnCli(['serve', '--socket', socket, '--aperture-hugepages', '2M', '--aperture-numa-node', '0', '--aperture-size', '9M']);
      await waitForLog(daemon, 'device ready');
      const r = await runCli(['inspect', '--socket', socket]);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/region 2 BAR2: size 16 MiB/);
      expect(r.stdout).toMatch(/mmap area 0x0\.\.0x800000 \(8 MiB\)/); // the last MiB is trapped
      daemon.kill('SIGTERM');
      const done = await finished(daemon);
      expect(done.code).toBe(0);
      const ready = deviceReady(done.stderr);
      expect(ready.memory.backing).toEqual({ kind: 'memfd-hugetlb', path: null, numaNode: 0, pageSize: 2 * MiB, cacheable: true });
      expect(ready.bar2.mapped).toBe('8 MiB');
    });
  });
});
