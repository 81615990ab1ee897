// User-mode emulation gaps: what qemu-user (`npm run test:arm64`) does not implement.
// A test skips for one only when this process really runs under qemu-user AND the probe
// shows the gap; on a real host of any architecture nothing here skips anything. The
// list of such tests is in the test guide.
import fs from 'node:fs';
import os from 'node:os';
import { native } from '../../src/native/native.js';

/**
 * "qemu-user: aarch64 program on an x86_64 kernel" when the kernel's architecture
 * (/proc/sys/kernel/arch, which qemu-user passes through) is not the one uname reports
 * to this program (qemu-user answers uname with the emulated machine); null otherwise.
 */
export function userModeEmulation(): string | null {
  let kernel: string;
  try {
    kernel = fs.readFileSync('/proc/sys/kernel/arch', 'utf8').trim();
  } catch {
    return null; // kernels before 6.1 lack the file; no emulated run uses one
  }
  const program = os.machine();
  return kernel !== '' && kernel !== program ? `qemu-user: ${program} program on an ${kernel} kernel` : null;
}

/**
 * Non-null (the reason) when NUMA policy calls are missing under qemu-user: it answers
 * get_mempolicy, mbind and move_pages with ENOSYS.
 */
export function numaCallsGap(): string | null {
  const emu = userModeEmulation();
  if (emu === null) return null;
  const map = native.mmap(-1, native.pageSize(), native.PROT_READ | native.PROT_WRITE, native.MAP_PRIVATE | native.MAP_ANONYMOUS, 0);
  try {
    native.getMempolicy(map, 0);
    return null;
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOSYS') return `${emu}: get_mempolicy, mbind and move_pages answer ENOSYS`;
    throw err;
  } finally {
    native.munmap(map);
  }
}
