// The operator's path end to end: the daemon started by socket activation
// (flags from the environment), `qemu-args` asked of it, QEMU 11 booted with
// those arguments, metrics read meanwhile. The guest sees the device and one
// NUMA node per generic initiator besides its RAM node. Under CI=true a
// missing QEMU fails; elsewhere it skips unless provisioning is requested.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { finished, runCli } from '../helpers/cli.js';
import { activate, ensureSystemdTools, isListening, metricsPort, scrapeMetrics, untilChild } from '../service/helpers.js';
import { bootGuest, describeBoot, initExitStatus, parseChecks } from './boot.js';
import { buildInitramfs } from './initramfs.js';
import { PROVISION_SCRIPT } from './paths.js';
import { describeQemu, ensureQemu, provisioningRequested, type QemuInstall } from './qemu-env.js';

const NUMA_NODES = 8;

let qemu: QemuInstall | null = null;
let skipReason = '';

beforeAll(async () => {
  const log: string[] = [];
  qemu = await ensureQemu({ log });
  if (qemu !== null) return;
  skipReason = `no QEMU >= 10.1 with vfio-user-pci:\n  ${log.join('\n  ')}\nProvision one with \`sudo ${PROVISION_SCRIPT}\` or set NVGRACE_PROVISION=1.`;
  if (provisioningRequested()) throw new Error(`provisioning ran but ${skipReason}`);
  console.warn(`\n!!! SKIPPING the qemu-args guest test: ${skipReason}\n`);
}, 20 * 60_000);

function requireQemu(ctx: TestContext): QemuInstall {
  if (qemu === null) {
    if (process.env.CI === 'true') throw new Error(skipReason);
    ctx.skip(`SKIPPED (no QEMU): ${skipReason}`);
  }
  return qemu as QemuInstall;
}

describe('socket activation, qemu-args and metrics with a real guest', () => {
  it(`boots with the generated arguments: the device and ${NUMA_NODES} device NUMA nodes`, async (ctx) => {
    const q = requireQemu(ctx);
    ensureSystemdTools();
    console.info(`qemu-args guest test: ${describeQemu(q)}`);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-qemu-args-'));
    const socket = path.join(dir, 'gpu0.sock');
    // As the .socket unit would: the daemon starts on the first connection, its flags from the environment.
    const daemon = activate(socket, [], { NVGRACE_VFIO_USER_APERTURE_SIZE: '96M', NVGRACE_VFIO_USER_METRICS_LISTEN: '0' });
    try {
      await untilChild(() => isListening(socket), 'the socket', daemon);
      // Asked of the daemon, as an orchestrator would before starting the VM: this starts it.
      const gen = await runCli(['qemu-args', '--socket', socket, '--format', 'json', '--guest-memory', '512M', '--numa-nodes', String(NUMA_NODES)]);
      expect(gen.code, gen.stderr).toBe(0);
      const args = JSON.parse(gen.stdout) as string[];
      await untilChild(() => daemon.out.stderr.includes('serving metrics'), 'the metrics endpoint', daemon);
      const port = metricsPort(daemon);

      const initrd = await buildInitramfs({
        initCommands: [
          'echo "NUMA-NODES $(ls -d /sys/devices/system/node/node[0-9]* | wc -l)"',
          'for n in /sys/devices/system/node/node[0-9]*; do echo "NODE $(basename $n) $(grep -o "MemTotal: *[0-9]* kB" $n/meminfo)"; done',
          'bar-check --vendor 0x10de --device 0x2342 --bar-size 2:128M --bar-flags 2:mem64,prefetch',
        ].join('\n'),
      });
      const booting = bootGuest({ qemu: q, initrd, extraArgs: args, ownMemory: true, timeoutMs: 90_000 });
      // While the guest runs, the metrics show QEMU attached with its RAM mapped for DMA.
      let attached: Map<string, number> | null = null;
      let done = false;
      void booting.finally(() => (done = true));
      while (!done && attached === null) {
        const m = await scrapeMetrics(port);
        if (m.get('nvgrace_vfio_user_client_attached') === 1 && (m.get('nvgrace_vfio_user_dma_maps') ?? 0) > 0) attached = m;
        else await new Promise((r) => setTimeout(r, 100));
      }
      const r = await booting;
      const why = describeBoot(r);
      console.info(`guest boot (qemu-args, ${NUMA_NODES} GI nodes): ${r.durationMs} ms`);
      expect(r.exitCode, why).toBe(0);
      expect(initExitStatus(r.output), why).toBe(0);
      expect(r.output, why).toMatch(/DEVICE 0000:00:[0-9a-f]{2}\.0 10de:2342/);
      const checks = new Map(parseChecks(r.output).map((c) => [c.name, c.pass]));
      expect(checks.get('bar2-size'), why).toBe(true);
      expect(checks.get('bar2-flags'), why).toBe(true);
      // node0 holds the RAM; the device's nodes exist and hold none
      expect(r.output, why).toContain(`NUMA-NODES ${NUMA_NODES + 1}`);
      expect(r.output, why).toMatch(/NODE node0 MemTotal: *[1-9]\d* kB/);
      for (let n = 1; n <= NUMA_NODES; n++) expect(r.output, why).toMatch(new RegExp(`NODE node${n} MemTotal: *0 kB`));

      expect(attached, 'metrics never showed QEMU attached with DMA maps').not.toBeNull();
      // QEMU has exited; the daemon sees the EOF on its own schedule
      let after = await scrapeMetrics(port);
      for (let i = 0; i < 100 && after.get('nvgrace_vfio_user_client_attached') !== 0; i++) {
        await new Promise((r) => setTimeout(r, 50));
        after = await scrapeMetrics(port);
      }
      expect(after.get('nvgrace_vfio_user_client_connections_total')).toBe(2); // qemu-args, then QEMU
      expect(after.get('nvgrace_vfio_user_client_attached')).toBe(0);
      expect(after.get('nvgrace_vfio_user_messages_total{command="DMA_MAP"}')).toBeGreaterThan(0);
      expect(after.get('nvgrace_vfio_user_trapped_accesses_total{region="CONFIG",op="read"}')).toBeGreaterThan(0);
      expect(after.get('nvgrace_vfio_user_messages_total{command="DEVICE_RESET"}')).toBeGreaterThan(0);
    } finally {
      daemon.kill('SIGTERM');
      await finished(daemon);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 150_000);
});
