/* Plain fd operations: close, eventfd, ioctl, counting open fds. */
#include "nv.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

/* closeFd(fd): void. On Linux the fd is released even when close() reports
 * EINTR, so EINTR is not an error (and must not be retried). */
static napi_value close_fd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!nv_args(env, info, 1, argv, NULL, NULL)) return NULL;
  if (!nv_get_fd(env, argv[0], "fd", &fd)) return NULL;
  if (close(fd) != 0 && errno != EINTR) return nv_throw_errno(env, errno, "close", NULL);
  return nv_undefined(env);
}

/* eventfd(initval, flags): number */
static napi_value eventfd_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int64_t initval, flags;
  if (!nv_args(env, info, 2, argv, NULL, NULL)) return NULL;
  if (!nv_get_int(env, argv[0], "initval", 0, UINT32_MAX, &initval)) return NULL;
  if (!nv_get_int(env, argv[1], "flags", 0, INT32_MAX, &flags)) return NULL;
  int fd = eventfd((unsigned)initval, (int)flags | EFD_CLOEXEC);
  if (fd < 0) return nv_throw_errno(env, errno, "eventfd", NULL);
  return nv_number(env, fd);
}

/* eventfdWrite(fd, value): number -- 0, or -1 if a non-blocking eventfd's
 * counter would overflow (EAGAIN). */
static napi_value eventfd_write_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  int64_t value;
  if (!nv_args(env, info, 2, argv, NULL, NULL)) return NULL;
  if (!nv_get_fd(env, argv[0], "fd", &fd)) return NULL;
  if (!nv_get_int(env, argv[1], "value", 0, NV_MAX_SAFE_INT, &value)) return NULL;
  uint64_t v = (uint64_t)value;
  ssize_t n;
  do {
    n = write(fd, &v, sizeof v);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return nv_number(env, -1);
    return nv_throw_errno(env, errno, "write", NULL);
  }
  if (n != (ssize_t)sizeof v) return nv_throw_errno(env, EIO, "write", NULL);
  return nv_number(env, 0);
}

/*
 * Signalling an eventfd that belongs to someone else. A client's eventfd shares
 * its open file description with the client, which may leave it blocking (or
 * clear O_NONBLOCK at any time) and fill the counter: a plain write() would
 * then block the event loop until the client reads, which it never has to.
 * So the write runs under a one-shot per-thread timer whose signal (handler
 * installed without SA_RESTART) makes a blocked write fail with EINTR. The
 * client's file flags are never touched.
 */
#define NV_SIGNAL_TIMEOUT_NS (10 * 1000 * 1000)

static void nv_wake(int sig) { (void)sig; }

static __thread bool wake_ready;
static __thread timer_t wake_timer;

static bool wake_setup(void) {
  if (wake_ready) return true;
  int sig = SIGRTMAX - 5;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = nv_wake;
  sigemptyset(&sa.sa_mask);
  if (sigaction(sig, &sa, NULL) != 0) return false;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  if (pthread_sigmask(SIG_UNBLOCK, &set, NULL) != 0) return false;
  struct sigevent sev;
  memset(&sev, 0, sizeof sev);
  sev.sigev_notify = SIGEV_THREAD_ID;
  sev.sigev_signo = sig;
  sev.sigev_notify_thread_id = (pid_t)syscall(SYS_gettid);
  if (timer_create(CLOCK_MONOTONIC, &sev, &wake_timer) != 0) return false;
  wake_ready = true;
  return true;
}

/* One 8-byte read or write of an eventfd under the timer. Returns 1 when done,
 * 0 when it would block (EAGAIN, or cut short), -1 with errno set on error. */
static int timed_eventfd_io(int fd, uint64_t *value, bool writing) {
  if (!wake_setup()) return -1;
  const struct itimerspec arm = {.it_value = {.tv_sec = 0, .tv_nsec = NV_SIGNAL_TIMEOUT_NS}};
  const struct itimerspec off = {.it_value = {.tv_sec = 0, .tv_nsec = 0}};
  if (timer_settime(wake_timer, 0, &arm, NULL) != 0) return -1;
  ssize_t n = writing ? write(fd, value, sizeof *value) : read(fd, value, sizeof *value);
  int err = errno;
  timer_settime(wake_timer, 0, &off, NULL);
  if (n == (ssize_t)sizeof *value) return 1;
  if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)) return 0;
  errno = n < 0 ? err : EIO;
  return -1;
}

/* eventfdSignal(fd): number -- adds 1 to the counter: 0 when done, -1 when the
 * counter is full (EAGAIN, or a blocking write cut short): the reader has an
 * event pending then anyway. Never blocks for more than about 10 ms. */
static napi_value eventfd_signal_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!nv_args(env, info, 1, argv, NULL, NULL)) return NULL;
  if (!nv_get_fd(env, argv[0], "fd", &fd)) return NULL;
  uint64_t one = 1;
  int r = timed_eventfd_io(fd, &one, true);
  if (r < 0) return nv_throw_errno(env, errno, "write", NULL);
  return nv_number(env, r == 1 ? 0 : -1);
}

/* eventfdTryRead(fd): number -- reads and resets the counter of someone else's
 * eventfd: the value, or -1 when there is nothing to read (also for a blocking
 * eventfd another reader emptied first, cut short after about 10 ms). */
static napi_value eventfd_try_read_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!nv_args(env, info, 1, argv, NULL, NULL)) return NULL;
  if (!nv_get_fd(env, argv[0], "fd", &fd)) return NULL;
  uint64_t v = 0;
  int r = timed_eventfd_io(fd, &v, false);
  if (r < 0) return nv_throw_errno(env, errno, "read", NULL);
  if (r == 0) return nv_number(env, -1);
  napi_value out;
  NV_CALL(env, napi_create_double(env, (double)v, &out));
  return out;
}

/* eventfdRead(fd): number -- the counter value, or -1 on EAGAIN. */
static napi_value eventfd_read_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!nv_args(env, info, 1, argv, NULL, NULL)) return NULL;
  if (!nv_get_fd(env, argv[0], "fd", &fd)) return NULL;
  uint64_t v;
  ssize_t n;
  do {
    n = read(fd, &v, sizeof v);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return nv_number(env, -1);
    return nv_throw_errno(env, errno, "read", NULL);
  }
  if (n != (ssize_t)sizeof v) return nv_throw_errno(env, EIO, "read", NULL);
  napi_value r;
  NV_CALL(env, napi_create_double(env, (double)v, &r));
  return r;
}

/* fdCount(): number of open fds, not counting the one used to count them. */
static napi_value fd_count(napi_env env, napi_callback_info info) {
  (void)info;
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return nv_throw_errno(env, errno, "opendir", "/proc/self/fd");
  int64_t count = 0;
  struct dirent *e;
  errno = 0;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    count++;
  }
  int err = errno;
  closedir(d);
  if (err != 0) return nv_throw_errno(env, err, "readdir", "/proc/self/fd");
  return nv_number(env, count - 1);
}

/* ioctl(fd, request, arg: ArrayBufferView | ArrayBuffer | number): number */
static napi_value ioctl_js(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  int64_t req;
  if (!nv_args(env, info, 3, argv, NULL, NULL)) return NULL;
  if (!nv_get_fd(env, argv[0], "fd", &fd)) return NULL;
  /* Request numbers are 32-bit; accept them signed or unsigned. */
  if (!nv_get_int(env, argv[1], "request", INT32_MIN, UINT32_MAX, &req)) return NULL;
  unsigned long request = (unsigned long)(uint32_t)req;

  napi_valuetype t;
  NV_CALL(env, napi_typeof(env, argv[2], &t));
  int rc;
  if (t == napi_number || t == napi_undefined) {
    int64_t arg = 0;
    if (t == napi_number &&
        !nv_get_int(env, argv[2], "arg", -NV_MAX_SAFE_INT, NV_MAX_SAFE_INT, &arg))
      return NULL;
    rc = ioctl(fd, request, (unsigned long)(long)arg);
  } else {
    uint8_t *data;
    size_t size;
    if (!nv_get_bytes(env, argv[2], "arg", &data, &size)) return NULL;
    rc = ioctl(fd, request, (void *)data);
  }
  if (rc < 0) return nv_throw_errno(env, errno, "ioctl", NULL);
  return nv_number(env, rc);
}

bool nv_init_fd(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      NV_FN("closeFd", close_fd),
      NV_FN("eventfd", eventfd_js),
      NV_FN("eventfdWrite", eventfd_write_js),
      NV_FN("eventfdSignal", eventfd_signal_js),
      NV_FN("eventfdTryRead", eventfd_try_read_js),
      NV_FN("eventfdRead", eventfd_read_js),
      NV_FN("fdCount", fd_count),
      NV_FN("ioctl", ioctl_js),
  };
  return nv_define_functions(env, exports, props, sizeof props / sizeof props[0]) &&
         nv_define_constant(env, exports, "EFD_NONBLOCK", EFD_NONBLOCK) &&
         nv_define_constant(env, exports, "EFD_SEMAPHORE", EFD_SEMAPHORE);
}
