// User-mode emulation gaps: what qemu-user (`npm run test:arm64`) does not implement.
// A test skips for one only when this process really runs under qemu-user AND the probe
// shows the gap; on a real host of any architecture nothing here skips anything. The
// list of such tests is in the test guide.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { native } from '../../src/native/native.js';

/**
 * The kernel's architecture from /proc/sys/kernel/arch, which qemu-user passes through
 * (uname it answers with the emulated machine); '' on kernels before 6.1, which lack the
 * file (no emulated run uses one).
 */
function kernelArch(): string {
  try {
    return fs.readFileSync('/proc/sys/kernel/arch', 'utf8').trim();
  } catch {
    return '';
  }
}

/**
 * "qemu-user: aarch64 program on an x86_64 kernel" when the kernel's architecture is not
 * the one uname reports to this program; null otherwise.
 */
export function userModeEmulation(): string | null {
  const kernel = kernelArch();
  const program = os.machine();
  return kernel !== '' && kernel !== program ? `qemu-user: ${program} program on an ${kernel} kernel` : null;
}

/**
 * A probe that runs at most once, and only under qemu-user: `probe(emu)` returns the gap
 * (a sentence that starts with `emu`) or null. On a real host the answer is null, unprobed.
 */
function probedGap(probe: (emu: string) => string | null): () => string | null {
  let gap: string | null | undefined;
  return () => {
    if (gap === undefined) {
      const emu = userModeEmulation();
      gap = emu === null ? null : probe(emu);
    }
    return gap;
  };
}

/** The errno of a native call's failure, or a rethrow when it is not one. */
function errnoOf(err: unknown): string {
  const code = (err as { code?: string }).code;
  if (code === undefined) throw err;
  return code;
}

/**
 * Non-null (the reason) when NUMA policy calls are missing under qemu-user: it answers
 * get_mempolicy, mbind and move_pages with ENOSYS.
 */
export const numaCallsGap = probedGap((emu) => {
  const map = native.mmap(-1, native.pageSize(), native.PROT_READ | native.PROT_WRITE, native.MAP_PRIVATE | native.MAP_ANONYMOUS, 0);
  try {
    native.getMempolicy(map, 0);
    return null;
  } catch (err) {
    if (errnoOf(err) === 'ENOSYS') return `${emu}: get_mempolicy, mbind and move_pages answer ENOSYS`;
    throw err;
  } finally {
    native.munmap(map);
  }
});

/**
 * Non-null under qemu-user: its recvmsg converts control messages itself and does not
 * report MSG_CTRUNC when more fds arrive than the program's control buffer holds.
 */
export function msgCtruncGap(): string | null {
  const emu = userModeEmulation();
  return emu === null ? null : `${emu}: recvmsg does not report MSG_CTRUNC`;
}

/**
 * Non-null when /proc/self/smaps says `reported` bytes for a mapping the kernel backs
 * with larger pages, and this is qemu-user: it writes that file itself (7.2 gives
 * KernelPageSize 4 kB for every mapping).
 */
export function smapsPageSizeGap(reported: number, expected: number): string | null {
  const emu = userModeEmulation();
  return emu !== null && reported !== expected ? `${emu}: its /proc/self/smaps gives KernelPageSize ${reported / 1024} kB for ${expected / 1024} kB pages` : null;
}

/**
 * The kernel's page size when this process's page is emulated above it, else null. Only
 * x86-64 kernels are known here (always 4 KiB); under qemu-user, /proc/self/smaps is
 * written by the emulator, so it cannot say.
 */
function emulatedAboveKernelPage(): number | null {
  const kernel = kernelArch() === 'x86_64' ? 4096 : null;
  return kernel !== null && native.pageSize() > kernel ? kernel : null;
}

/**
 * Non-null under a qemu-user that cannot be relied on to map hugetlb memory. qemu-user
 * 7.2 emulating a page above the kernel's (the 16 KiB run) reserves an address of its
 * own choosing, aligned only to its page, and maps the file there with MAP_FIXED; the
 * kernel refuses that with EINVAL unless the address happens to fall on a huge page
 * boundary, which depends on the process's address-space history (seen with strace). So
 * a fresh daemon fails where a long-running test worker may succeed: the gap is decided by
 * the page sizes, not by one lucky mapping. Any other emulator is probed with one 2 MiB
 * mapping: EINVAL is the gap; a real kernel says ENOMEM without a free huge page.
 */
export const hugetlbMmapGap = probedGap((emu) => {
  const kernelPage = emulatedAboveKernelPage();
  if (kernelPage !== null) {
    return `${emu}: with ${native.pageSize() / 1024} KiB pages emulated on ${kernelPage / 1024} KiB, it maps hugetlb memory at addresses not aligned to the huge page (EINVAL)`;
  }
  const size = 2 * 1024 * 1024;
  const fd = native.memfdCreate('nvgrace-hugetlb-probe', (native.MFD_HUGETLB | native.MFD_HUGE_2MB) >>> 0);
  try {
    fs.ftruncateSync(fd, size);
    native.munmap(native.mmap(fd, size, native.PROT_READ | native.PROT_WRITE, native.MAP_SHARED, 0));
    return null;
  } catch (err) {
    return errnoOf(err) === 'EINVAL' ? `${emu}: mmap of hugetlb memory answers EINVAL` : null;
  } finally {
    native.closeFd(fd);
  }
});

/**
 * Non-null under a qemu-user that maps no part of a file past its end (7.2 with
 * QEMU_PAGESIZE above the real page, the 16 KiB run: it shortens a file mapping to the
 * file's st_size rounded up to the kernel's 4 KiB page). So a mapping wholly past the end
 * is EINVAL, a character device such as /dev/zero (st_size 0) cannot be mapped, and the
 * rest of a file's last 16 KiB page is not mapped at all (SIGSEGV). A real kernel maps
 * all of it: the rest of the last page reads as zeros, and an access past it faults.
 */
export const mmapPastEofGap = probedGap((emu) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-eof-probe-'));
  const fd = fs.openSync(path.join(dir, 'empty'), 'w+');
  try {
    native.munmap(native.mmap(fd, native.pageSize(), native.PROT_READ, native.MAP_SHARED, 0));
    return null;
  } catch (err) {
    return errnoOf(err) === 'EINVAL' ? `${emu}: mmap of a file wholly past its end answers EINVAL` : null;
  } finally {
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * Non-null under a qemu-user whose own bookkeeping grows with the size of a mapping,
 * touched or not (7.2, the 16 KiB run: about 6 MiB of resident memory per GiB of a
 * MAP_NORESERVE memfd mapping, 6 GB for 1 TiB). Probed with 1 GiB.
 */
export const noreserveRssGap = probedGap((emu) => {
  const GiB = 2 ** 30;
  const rss = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]) * 1024;
  const fd = native.memfdCreate('nvgrace-noreserve-probe', 0);
  try {
    fs.ftruncateSync(fd, GiB);
    const before = rss();
    const map = native.mmap(fd, GiB, native.PROT_READ | native.PROT_WRITE, native.MAP_SHARED | native.MAP_NORESERVE, 0);
    const grown = rss() - before;
    native.munmap(map);
    return grown > 1024 * 1024 ? `${emu}: an untouched 1 GiB MAP_NORESERVE mapping costs ${(grown / 1024 / 1024).toFixed(1)} MiB of resident memory` : null;
  } finally {
    native.closeFd(fd);
  }
});

let unknownIoctl: string | undefined;
/**
 * The errno this process gets for an ioctl its file does not know: ENOTTY from a real
 * kernel; qemu-user 7.2 (the 16 KiB run) answers ENOSYS for any ioctl it cannot
 * translate, before the kernel sees it. Under qemu-user, `request` (one such ioctl) is
 * tried on /dev/null to see which.
 */
export function unknownIoctlErrno(request: number): string {
  if (unknownIoctl !== undefined) return unknownIoctl;
  if (userModeEmulation() === null) return (unknownIoctl = 'ENOTTY');
  const fd = fs.openSync('/dev/null', 'r');
  try {
    native.ioctl(fd, request, 0);
    throw new Error(`ioctl 0x${request.toString(16)} on /dev/null succeeded`);
  } catch (err) {
    unknownIoctl = errnoOf(err);
  } finally {
    fs.closeSync(fd);
  }
  return unknownIoctl;
}
