/* pidfd: an fd that refers to a process and becomes readable when it exits. */
#include "nv.h"

#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/* pidfdOpen(pid): number -- close-on-exec by definition (pidfd_open always sets it). */
static napi_value pidfd_open_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int64_t pid;
  if (!nv_args(env, info, 1, argv, NULL, NULL)) return NULL;
  if (!nv_get_int(env, argv[0], "pid", 1, INT32_MAX, &pid)) return NULL;
  long fd = syscall(SYS_pidfd_open, (pid_t)pid, 0u);
  if (fd < 0) return nv_throw_errno(env, errno, "pidfd_open", NULL);
  return nv_number(env, fd);
}

bool nv_init_pidfd(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {NV_FN("pidfdOpen", pidfd_open_js)};
  return nv_define_functions(env, exports, props, sizeof props / sizeof props[0]);
}
