/*
 * Shared declarations for the nvgrace_native addon.
 *
 * Layout (one job per file):
 *   util.c    errors and argument conversion
 *   socket.c  AF_UNIX sockets, SCM_RIGHTS message I/O
 *   memory.c  memfd, mmap/munmap as external ArrayBuffers, fill, hole punching
 *   guard.c   copies and fills that survive a SIGBUS (a truncated file mapping)
 *   fd.c      close, eventfd, ioctl, fd counting
 *   poll.c    libuv uv_poll_t based fd watcher ("Poller")
 *   notify.c  sd_notify datagrams, sockets passed by socket activation
 *   numa.c    NUMA memory policy (mbind, get_mempolicy, move_pages) and prefaulting
 *   vfio.c    mappings handed to the kernel by address (host IOMMU DMA)
 *   pidfd.c   pidfd_open: an fd that tells when a process exits
 *   main.c    module registration, constants, per-environment state
 */
#ifndef NV_H
#define NV_H

#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest integer a JS number represents exactly (Number.MAX_SAFE_INTEGER). */
#define NV_MAX_SAFE_INT ((int64_t)9007199254740991LL)

/* Maximum number of fds carried by one SCM_RIGHTS message, both directions. */
#define NV_MAX_FDS 16

/* ---- per-environment state (main.c) ------------------------------------ */

struct nv_poller;

typedef struct nv_state {
  napi_ref poller_ctor;      /* Poller class constructor (poll.c) */
  struct nv_poller *pollers; /* pollers not yet closed, to refuse a second one per fd */
} nv_state;

nv_state *nv_get_state(napi_env env);
/* Called when the state is freed: forgets the pollers that are still open. */
void nv_poll_forget_all(nv_state *st);

/* ---- errors (util.c) ----------------------------------------------------
 * All nv_throw_* functions leave a pending JS exception and return NULL so a
 * callback can simply `return nv_throw_...(...)`.
 */

/* Error with .code = errno name, .errno = err (positive), .syscall, and .path
 * when path != NULL. Message: "<syscall>[ <path>]: <strerror(err)>". */
napi_value nv_throw_errno(napi_env env, int err, const char *syscall, const char *path);
napi_value nv_throw_type(napi_env env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
napi_value nv_throw_range(napi_env env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
napi_value nv_throw_code(napi_env env, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Makes sure an exception is pending after a failed napi_* call. */
void nv_napi_failed(napi_env env, const char *what);

/* Evaluates a napi call; on failure ensures an exception and returns `ret`. */
#define NV_CHECK(env, call, ret)                                               \
  do {                                                                         \
    if ((call) != napi_ok) {                                                   \
      nv_napi_failed((env), #call);                                            \
      return ret;                                                              \
    }                                                                          \
  } while (0)

#define NV_CALL(env, call) NV_CHECK(env, call, NULL)

/* ---- argument conversion (util.c) ---------------------------------------
 * Each returns true on success; on failure a TypeError/RangeError is pending.
 */

/* Fetches exactly `n` arguments (missing ones are undefined). this_arg may be NULL. */
bool nv_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv,
             napi_value *this_arg, void **data);
bool nv_get_int(napi_env env, napi_value v, const char *name, int64_t min, int64_t max,
                int64_t *out);
bool nv_get_fd(napi_env env, napi_value v, const char *name, int *out);
/* UTF-8 copy of a string argument, malloc'ed and NUL terminated; *len excludes the NUL. */
char *nv_get_string(napi_env env, napi_value v, const char *name, size_t *len);
/* Raw bytes of an ArrayBuffer or any ArrayBufferView (TypedArray, DataView, Buffer). */
bool nv_get_bytes(napi_env env, napi_value v, const char *name, uint8_t **data, size_t *len);
/* Validates [offset, offset + length) inside a buffer of `size` bytes. */
bool nv_check_range(napi_env env, int64_t offset, int64_t length, size_t size);
bool nv_is_nullish(napi_env env, napi_value v);

napi_value nv_number(napi_env env, int64_t v);
napi_value nv_undefined(napi_env env);

/* ---- module parts: each defines its functions on `exports` ---------------- */
bool nv_init_socket(napi_env env, napi_value exports);
bool nv_init_memory(napi_env env, napi_value exports);
bool nv_init_fd(napi_env env, napi_value exports);
bool nv_init_poll(napi_env env, napi_value exports);
bool nv_init_notify(napi_env env, napi_value exports);
bool nv_init_numa(napi_env env, napi_value exports);
bool nv_init_vfio(napi_env env, napi_value exports);
bool nv_init_pidfd(napi_env env, napi_value exports);
bool nv_init_guard(napi_env env, napi_value exports);

/* memset under the SIGBUS guard (guard.c): 0, or EFAULT / EIO when a page of
 * [dst, dst + n) could not be had. */
int nv_guarded_memset(void *dst, int byte, size_t n);

bool nv_define_constant(napi_env env, napi_value exports, const char *name, int64_t value);
bool nv_define_functions(napi_env env, napi_value exports, const napi_property_descriptor *props,
                         size_t count);
#define NV_FN(name, cb)                                                        \
  { (name), NULL, (cb), NULL, NULL, NULL, napi_enumerable, NULL }

#endif /* NV_H */
