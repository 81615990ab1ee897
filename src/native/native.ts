/**
 * Typed loader for the nvgrace_native addon (binding/*.c).
 *
 * The addon provides only the syscalls Node lacks: AF_UNIX sockets with
 * SCM_RIGHTS fd passing, memfd/mmap, eventfd, ioctl, an fd watcher bound to
 * Node's libuv loop, and copies through mappings that survive a SIGBUS. Every
 * failed syscall throws an Error carrying `.code` (errno name), `.errno`
 * (positive errno), `.syscall` and, where a path was involved, `.path`;
 * EAGAIN on non-blocking I/O is returned as -1 instead.
 *
 * The .node file is resolved relative to this module, which lives two levels
 * below the repository root both as src/native/native.ts (vitest) and as
 * dist/native/native.js (compiled).
 */
import { constants as bufferConstants } from 'node:buffer';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** Error thrown for a failed syscall. */
export interface SyscallError extends Error {
  /** errno name, e.g. 'ENOENT'. */
  code: string;
  /** Positive errno number. */
  errno: number;
  /** Name of the failing call, e.g. 'bind', 'recvmsg', 'uv_poll_start'. */
  syscall: string;
  /** Filesystem path involved, when there was one. */
  path?: string;
}

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/**
 * Callback of a Poller. `status` is 0, or a negative errno (e.g. -EBADF) in
 * which case libuv has already stopped the watcher. `events` is a mask of
 * READABLE | WRITABLE | DISCONNECT. `this` is the Poller.
 */
export type PollCallback = (this: Poller, status: number, events: number) => void;

/** fd watcher on Node's event loop (uv_poll_t). */
export interface Poller {
  /**
   * Starts (or changes) watching for `events` (READABLE | WRITABLE |
   * DISCONNECT; 0 is the same as stop()). A started poller keeps itself and
   * its callback alive, and keeps the event loop alive unless unref()'d.
   * Throws ERR_POLLER_CLOSED after close().
   */
  start(events: number): void;
  /** Stops watching. No-op when stopped or closed. */
  stop(): void;
  /** Stops for good and releases the libuv handle; idempotent. Does NOT close the fd. */
  close(): void;
  /** Lets the event loop exit while this poller is started. */
  unref(): void;
  /** Undoes unref() (the default). */
  ref(): void;
}

export interface NativeBinding {
  // --- sockets -------------------------------------------------------------
  /**
   * socket(AF_UNIX, SOCK_STREAM | NONBLOCK | CLOEXEC) + bind + listen. The
   * socket file is created with exactly `mode` (never wider, at no point).
   * A path starting with '\0' binds in the abstract namespace (mode unused).
   * Does not unlink anything: an existing path fails with EADDRINUSE.
   */
  listenUnix(path: string, backlog: number, mode: number): number;
  /** Blocking connect, then the fd is switched to non-blocking. */
  connectUnix(path: string): number;
  /** accept4(NONBLOCK | CLOEXEC); -1 when no connection is pending. */
  accept(listenFd: number): number;
  /** SO_PEERCRED of a connected AF_UNIX socket. */
  peerCred(fd: number): PeerCred;
  /** Connected AF_UNIX SOCK_STREAM pair, both non-blocking and close-on-exec. */
  socketPair(): [number, number];
  /**
   * recvmsg() into buf[offset, offset + length) (length >= 1), accepting up
   * to MAX_FDS SCM_RIGHTS fds (received close-on-exec). Returns bytes read, 0 at
   * EOF, -1 on EAGAIN. fdsOut[0] = number of fds received, stored in
   * fdsOut[1..]; fdsOut[0] = -1 if fds were lost (control data truncated, or
   * more fds than fdsOut.length - 1): every fd that did arrive has then been
   * closed. Allocates no JS objects.
   */
  recvMsg(fd: number, buf: Uint8Array, offset: number, length: number, fdsOut: Int32Array): number;
  /**
   * One sendmsg(MSG_NOSIGNAL) of buf[offset, offset + length) with up to MAX_FDS
   * fds as SCM_RIGHTS (needs length >= 1 when fds are given). Returns bytes
   * sent (may be partial; fds go with the first byte), or -1 on EAGAIN.
   * Allocates no JS objects when fds is null.
   */
  sendMsg(fd: number, buf: Uint8Array, offset: number, length: number, fds: readonly number[] | null): number;
  /**
   * Whether the peer of a connected socket has closed it, or shut down its
   * writing (reading will come to EOF), or the socket has an error: a
   * zero-timeout poll() for POLLHUP, POLLRDHUP and POLLERR. Reads nothing.
   */
  peerHungUp(fd: number): boolean;

  // --- fds -----------------------------------------------------------------
  /** close(); EINTR is ignored (the fd is gone anyway on Linux), EBADF throws. */
  closeFd(fd: number): void;
  /** eventfd(initval, flags | EFD_CLOEXEC). */
  eventfd(initval: number, flags: number): number;
  /**
   * Adds `value` (0 .. 2^53-1) to the counter. Returns 0, or -1 if a
   * non-blocking eventfd would overflow (EAGAIN).
   */
  eventfdWrite(fd: number, value: number): number;
  /**
   * Adds 1 to someone else's eventfd without ever blocking for long: 0 when
   * done, -1 when the counter is full (also for a blocking eventfd, whose write
   * is cut short after about 10 ms by a timer signal). The fd's flags are not
   * changed.
   */
  eventfdSignal(fd: number): number;
  /**
   * Reads and resets someone else's eventfd without ever blocking for long:
   * the counter, or -1 when there is nothing to read (also for a blocking
   * eventfd, whose read is cut short after about 10 ms).
   */
  eventfdTryRead(fd: number): number;
  /** Reads and resets (or, with EFD_SEMAPHORE, decrements) the counter; -1 on EAGAIN. */
  eventfdRead(fd: number): number;
  /** Number of open fds of this process (the fd used for counting excluded). */
  fdCount(): number;
  /**
   * ioctl(fd, request, arg): a buffer argument is passed as a pointer to its
   * bytes (the kernel may read and write them; the buffer must be as large as
   * the request expects), a number as an integer argument. Returns the ioctl's
   * non-negative result.
   */
  ioctl(fd: number, request: number, arg: ArrayBufferView | ArrayBuffer | number): number;

  /**
   * pidfd_open(pid): an fd (close-on-exec) that a Poller sees READABLE once
   * the process has exited. ESRCH when there is no such process.
   */
  pidfdOpen(pid: number): number;

  // --- memory --------------------------------------------------------------
  /** memfd_create(name, flags | MFD_CLOEXEC). */
  memfdCreate(name: string, flags: number): number;
  /** fcntl(F_ADD_SEALS): e.g. F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL on a memfd made with MFD_ALLOW_SEALING. */
  memfdAddSeals(fd: number, seals: number): void;
  /**
   * mmap() as an external ArrayBuffer (fd -1 with MAP_ANONYMOUS). length 0
   * throws EINVAL. A length above MAX_MAPPING_LENGTH (4 GiB on Node 20) throws
   * RangeError ERR_BUFFER_TOO_LARGE: map windows using `offset` instead.
   * Unmapped by munmap() or, failing that, when the ArrayBuffer is collected.
   */
  mmap(fd: number, length: number, prot: number, flags: number, offset: number): ArrayBuffer;
  /**
   * Detaches the ArrayBuffer (byteLength becomes 0 everywhere), then unmaps.
   * EINVAL for an ArrayBuffer that is not a live mapping from mmap().
   */
  munmap(ab: ArrayBuffer): void;
  /**
   * memset(byte) over [offset, offset + length) under the SIGBUS guard:
   * returns 0, or EFAULT when a page of the range could not be had (a mapped
   * file truncated under us; huge pages the pool cannot supply) or EIO for a
   * hardware memory error; the bytes before the fault are written. RangeError
   * when out of bounds.
   */
  fillMemory(ab: ArrayBuffer | ArrayBufferView, offset: number, length: number, byte: number): number;
  /**
   * memmove of `count` bytes from src[srcOffset..] to dst[dstOffset..] under
   * the SIGBUS guard: 0, or EFAULT / EIO as for fillMemory (part of the range
   * may have been copied). Allocates nothing; RangeError when out of bounds.
   * The guard is one SIGBUS handler per process, installed when the addon
   * loads: it turns a fault inside the guarded ranges of the thread that
   * armed it into this return value, and passes every other SIGBUS on to the
   * handler installed before it (or the default action). A SIGBUS handler
   * installed later (e.g. process.on('SIGBUS')) would replace it.
   */
  copyMemory(dst: ArrayBuffer | ArrayBufferView, dstOffset: number, src: ArrayBuffer | ArrayBufferView, srcOffset: number, count: number): number;
  /** fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE). */
  fallocatePunchHole(fd: number, offset: number, length: number): void;
  pageSize(): number;
  /**
   * mmap() whose address is returned as a number, for the kernel rather than
   * for JavaScript (the host IOMMU's DMA maps take a process address). No
   * ArrayBuffer, so no 4 GiB cap; undo with munmapAddress().
   */
  mmapAddress(fd: number, length: number, prot: number, flags: number, offset: number): number;
  munmapAddress(address: number, length: number): void;

  // --- NUMA (numa.c) ------------------------------------------------------------
  /**
   * mbind() over ab[offset, offset + length) of a mapping (offset page aligned).
   * On a MAP_SHARED mapping of shmem (memfd, tmpfs) this sets the shared policy
   * of the file range, which every mapping of the file allocates by; on
   * hugetlbfs it only governs this mapping.
   */
  mbind(ab: ArrayBuffer, offset: number, length: number, mode: number, nodes: readonly number[], flags: number): void;
  /** get_mempolicy(MPOL_F_ADDR): the policy governing the page at ab + offset. */
  getMempolicy(ab: ArrayBuffer, offset: number): MemPolicy;
  /**
   * out[i] = NUMA node of the page at ab + offset + i * stride, or a negative
   * errno (-ENOENT: not present in this mapping). Faults nothing in.
   */
  pageNodes(ab: ArrayBuffer, offset: number, stride: number, out: Int32Array): void;
  /** madvise(MADV_POPULATE_WRITE or _READ): fault the range in now, by the mapping's policy. */
  populate(ab: ArrayBuffer, offset: number, length: number, write: boolean): void;

  // --- event loop ----------------------------------------------------------
  /**
   * Watches fd on Node's libuv loop (the fd is made non-blocking). Throws
   * EEXIST if the fd is already watched by another Poller or Node handle,
   * EPERM for fds epoll cannot watch (regular files, memfds).
   */
  createPoller(fd: number, callback: PollCallback): Poller;

  // --- service manager (binding/notify.c) -----------------------------------
  /**
   * Sends `message` as one AF_UNIX datagram to a NOTIFY_SOCKET address: "/path",
   * or "@name" for the abstract namespace (anything else throws EAFNOSUPPORT).
   */
  notifySend(address: string, message: string): void;
  /** A bound, non-blocking datagram socket at such an address; read it with recvMsg. */
  notifyListen(address: string): number;
  /**
   * Takes over an inherited listening socket (socket activation): throws unless
   * it is a listening AF_UNIX stream socket, then makes it non-blocking and
   * close-on-exec. Returns its address ("/path", "@name", or "" if unnamed).
   */
  adoptListener(fd: number): string;

  // --- constants -----------------------------------------------------------
  /** fds one recvMsg takes and one sendMsg carries (NV_MAX_FDS). */
  readonly MAX_FDS: number;
  readonly READABLE: number;
  readonly WRITABLE: number;
  readonly DISCONNECT: number;
  readonly MFD_ALLOW_SEALING: number;
  readonly F_SEAL_SEAL: number;
  readonly F_SEAL_SHRINK: number;
  readonly F_SEAL_GROW: number;
  readonly MFD_HUGETLB: number;
  readonly MFD_HUGE_2MB: number;
  readonly MFD_HUGE_1GB: number;
  readonly PROT_READ: number;
  readonly PROT_WRITE: number;
  readonly MAP_SHARED: number;
  readonly MAP_PRIVATE: number;
  readonly MAP_ANONYMOUS: number;
  readonly MAP_NORESERVE: number;
  readonly MAP_POPULATE: number;
  readonly EFD_NONBLOCK: number;
  readonly EFD_SEMAPHORE: number;
  readonly MPOL_DEFAULT: number;
  readonly MPOL_PREFERRED: number;
  readonly MPOL_BIND: number;
  readonly MPOL_INTERLEAVE: number;
  readonly MPOL_LOCAL: number;
  readonly MPOL_MF_STRICT: number;
  readonly MPOL_MF_MOVE: number;
}

/** A memory policy as get_mempolicy reports it. */
export interface MemPolicy {
  /** MPOL_DEFAULT, MPOL_BIND, ... */
  mode: number;
  /** Mode flags (MPOL_F_STATIC_NODES, ...). */
  flags: number;
  nodes: number[];
}

export const NATIVE_BINDING_PATH = fileURLToPath(
  new URL('../../build/Release/nvgrace_native.node', import.meta.url),
);

function load(): NativeBinding {
  if (!existsSync(NATIVE_BINDING_PATH)) {
    throw new Error('native binding not built: run `npm install` (or `npx node-gyp rebuild`)');
  }
  const require = createRequire(import.meta.url);
  try {
    return require(NATIVE_BINDING_PATH) as NativeBinding;
  } catch (cause) {
    throw new Error(
      `native binding ${NATIVE_BINDING_PATH} failed to load; rebuild it with \`npm install\` (or \`npx node-gyp rebuild\`)`,
      { cause },
    );
  }
}

/** The loaded addon. */
export const native: NativeBinding = load();

/**
 * Largest mapping mmap() can return as one ArrayBuffer in this runtime
 * (buffer.constants.MAX_LENGTH: 4 GiB on Node 20).
 */
export const MAX_MAPPING_LENGTH: number = bufferConstants.MAX_LENGTH;

export const {
  READABLE,
  WRITABLE,
  DISCONNECT,
  MFD_ALLOW_SEALING,
  MFD_HUGETLB,
  MFD_HUGE_2MB,
  MFD_HUGE_1GB,
  PROT_READ,
  PROT_WRITE,
  MAP_SHARED,
  MAP_PRIVATE,
  MAP_ANONYMOUS,
  MAP_NORESERVE,
  MAP_POPULATE,
  EFD_NONBLOCK,
  EFD_SEMAPHORE,
} = native;

/** Narrows an unknown thrown value to a SyscallError, optionally of one errno name. */
export function isSyscallError(e: unknown, code?: string): e is SyscallError {
  return (
    e instanceof Error &&
    typeof (e as Partial<SyscallError>).errno === 'number' &&
    typeof (e as Partial<SyscallError>).syscall === 'string' &&
    (code === undefined || (e as Partial<SyscallError>).code === code)
  );
}
