/* Plain fd operations: close, eventfd, ioctl, counting open fds. */
#include "nv.h"

#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

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
      NV_FN("eventfdRead", eventfd_read_js),
      NV_FN("fdCount", fd_count),
      NV_FN("ioctl", ioctl_js),
  };
  return nv_define_functions(env, exports, props, sizeof props / sizeof props[0]) &&
         nv_define_constant(env, exports, "EFD_NONBLOCK", EFD_NONBLOCK) &&
         nv_define_constant(env, exports, "EFD_SEMAPHORE", EFD_SEMAPHORE);
}
