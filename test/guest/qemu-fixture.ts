// One way for every guest test file to get QEMU: provisioned when missing (unless the
// user opted out with NVGRACE_NO_PROVISION=1), and under CI=true never skipped.
import { beforeAll, type TestContext } from 'vitest';
import { PROVISION_SCRIPT } from './paths.js';
import { QEMU_BINARY, describeQemu, ensureQemu, provisioningRequested, type GuestArch, type QemuInstall } from './qemu-env.js';

export const PROVISION_TIMEOUT_MS = 20 * 60_000;

export interface QemuFixture {
  /** The install, or a skip (outside CI, after an explicit opt-out) / failure (in CI). */
  require(ctx: TestContext): QemuInstall;
}

export function useQemu(arch: GuestArch = 'x86_64'): QemuFixture {
  let qemu: QemuInstall | null = null;
  let reason = '';
  const { program, env } = QEMU_BINARY[arch];
  beforeAll(async () => {
    const log: string[] = [];
    qemu = await ensureQemu({ log, arch });
    if (qemu !== null) {
      console.info(`guest tests: ${describeQemu(qemu)}`);
      return;
    }
    reason =
      `no ${program} >= 10.1 with vfio-user-pci (and ${arch} guest kernel) was found:\n  ${log.join('\n  ')}\n` +
      `Provision one with \`${PROVISION_SCRIPT}\` (as root), or point ${env}= at a ${program}.`;
    if (provisioningRequested()) throw new Error(`provisioning ran but ${reason}`);
    console.warn(`\n!!! SKIPPING real-QEMU guest tests (NVGRACE_NO_PROVISION=1): ${reason}\n`);
  }, PROVISION_TIMEOUT_MS);
  return {
    require(ctx) {
      if (qemu === null) {
        if (process.env.CI === 'true') throw new Error(reason);
        ctx.skip(`SKIPPED (no QEMU, NVGRACE_NO_PROVISION=1): ${reason}`);
      }
      return qemu as QemuInstall;
    },
  };
}
