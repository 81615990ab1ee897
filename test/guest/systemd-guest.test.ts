// The units under a real systemd: a Debian trixie guest with systemd as PID 1 (booted from
// an ext4 image, see provision-systemd-root.sh) gets the project installed the README's
// way (`install-units` from a checkout in /opt) and checks socket activation, the unit's
// hardening, the status lines, the watchdog, stop, the journal and the /dev/mem drop-in
// (systemd-guest.sh, which prints SDCHECK lines).
import { beforeAll, describe, expect, it } from 'vitest';
import { bootGuest, describeBoot } from './boot.js';
import { useQemu } from './qemu-fixture.js';
import { PROVISION_TIMEOUT_MS } from './qemu-fixture.js';
import { buildPayloadDisk, ensureSystemdRoot, guestFile, type SystemdRoot } from './systemd-root.js';

const qemu = useQemu();

/** The physical range the guest kernel reserves (memmap=) for the /dev/mem backing: below 1 GiB of RAM. */
const DEVMEM_BASE = 0x38000000;
const DEVMEM_SIZE = 4 * 2 ** 20;
/** The shipped unit's WatchdogSec is 30 s; the guest's drop-in shortens it. */
const WATCHDOG_SEC = 8;

/** Every check the guest script must have passed. */
const REQUIRED = [
  'install-units', 'install-execstart', 'socket-enable', 'socket-listening', 'socket-mode-group', 'service-not-started',
  'inspect-served', 'activated', 'hardening-capabilities', 'hardening-no-new-privs', 'hardening-seccomp',
  'hardening-read-only-root', 'hardening-private-tmp', 'hardening-device-policy',
  'status-attached', 'status-waiting', 'journal-client-pid-uid', 'journal-json-lines',
  'memory-written', 'stop-exit', 'stop-stopping', 'stop-socket-kept', 'reactivated',
  'watchdog-restart', 'watchdog-journal', 'watchdog-same-memory',
  'devmem-refused', 'devmem-refused-one-line', 'devmem-refused-status',
  'devmem-serves-read', 'devmem-serves-write', 'devmem-backing',
  'sysfs-refused', 'sysfs-refused-one-line', 'sysfs-refused-status', 'sysfs-enabled-serves', 'sysfs-serves-registers',
];

describe('systemd guest: the shipped units under a real systemd', () => {
  let root: SystemdRoot | null = null;
  let provisionMs = 0;
  let failure = '';
  beforeAll(async () => {
    const started = Date.now();
    if (process.getuid?.() !== 0 && process.env.CI !== 'true') {
      failure = 'the systemd root is built with debootstrap and chroot: run as root';
      return;
    }
    root = await ensureSystemdRoot();
    provisionMs = Date.now() - started;
  }, PROVISION_TIMEOUT_MS);

  it('socket activation, hardening, status, watchdog, stop, journal, the /dev/mem drop-in', async (ctx) => {
    const q = qemu.require(ctx);
    if (root === null) {
      console.warn(`\n!!! SKIPPING systemd guest test: ${failure}\n`);
      ctx.skip(failure);
      return;
    }
    const built = Date.now();
    const disk = buildPayloadDisk({
      'run.sh': guestFile('systemd-guest.sh'),
      'client.mjs': guestFile('systemd-client.mjs'),
      'params.sh': `DEVMEM_BASE=${DEVMEM_BASE}\nDEVMEM_SIZE=${DEVMEM_SIZE}\nWATCHDOG_SEC=${WATCHDOG_SEC}\n`,
    });
    const buildMs = Date.now() - built;
    try {
      const r = await bootGuest({
        qemu: { ...q, kernel: root.kernel },
        initrd: root.initrd,
        memoryMiB: 1024,
        // minutes on a busy two-core machine (each Node start in the guest takes seconds under TCG)
        timeoutMs: 1_500_000,
        appendArgs: [`memmap=${DEVMEM_SIZE}$0x${DEVMEM_BASE.toString(16)}`],
        extraArgs: [
          '-cpu', 'max',
          // two vCPUs: the daemon and a client start side by side (each Node start takes seconds under TCG)
          '-smp', '2',
          // snapshot=on: the guest's writes go to a temporary overlay, the cached image stays as built
          '-drive', `file=${root.image},format=raw,if=virtio,snapshot=on`,
          '-drive', `file=${disk.path},format=raw,if=virtio,readonly=on`,
          // registers for --bar0 sysfs: (the vfio.conf drop-in)
          '-device', 'edu',
        ],
      });
      const why = describeBoot(r, 200);
      console.info(
        `systemd guest: provisioning check ${provisionMs} ms, payload disk ${(disk.bytes / 2 ** 20).toFixed(0)} MiB built in ${buildMs} ms, guest ran ${r.durationMs} ms; ` +
          (/SDINFO boot (.*)/.exec(r.output)?.[1] ?? 'no boot line'),
      );
      if (process.env.NVGRACE_SYSTEMD_DUMP) console.info(r.output);
      expect(r.timedOut, why).toBe(false);
      const checks = [...r.output.matchAll(/^SDCHECK (\S+) (PASS|FAIL) ?(.*)$/gm)].map((m) => ({ name: m[1]!, pass: m[2] === 'PASS', details: m[3]!.trim() }));
      const failed = checks.filter((c) => !c.pass).map((c) => `${c.name}: ${c.details}`);
      expect(failed, why).toEqual([]);
      const names = checks.map((c) => c.name);
      for (const must of REQUIRED) expect(names, why).toContain(must);
      expect(r.output, why).toMatch(/^SDCHECK DONE/m);
      expect(r.output, why).toMatch(/NVGRACE-GUEST END status=0/);
    } finally {
      disk.remove();
    }
  }, 1_600_000);
});
