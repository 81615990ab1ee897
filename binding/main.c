/* Module entry point: per-environment state and registration of every part. */
#include "nv.h"

#include <stdlib.h>

static void state_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  nv_state *st = data;
  nv_poll_forget_all(st);
  if (st->poller_ctor != NULL) napi_delete_reference(env, st->poller_ctor);
  free(st);
}

nv_state *nv_get_state(napi_env env) {
  void *data = NULL;
  if (napi_get_instance_data(env, &data) != napi_ok || data == NULL) {
    nv_throw_code(env, "ERR_NAPI", "nvgrace_native: module state missing");
    return NULL;
  }
  return data;
}

/* The addon can be loaded by several environments (worker threads); each gets
 * its own state through napi instance data. */
static napi_value init(napi_env env, napi_value exports) {
  nv_state *st = calloc(1, sizeof *st);
  if (st == NULL) {
    nv_throw_code(env, "ENOMEM", "nvgrace_native: out of memory");
    return NULL;
  }
  if (napi_set_instance_data(env, st, state_finalize, NULL) != napi_ok) {
    free(st);
    nv_napi_failed(env, "napi_set_instance_data");
    return NULL;
  }
  if (!nv_init_socket(env, exports) || !nv_init_memory(env, exports) ||
      !nv_init_fd(env, exports) || !nv_init_poll(env, exports) ||
      !nv_init_notify(env, exports) || !nv_init_numa(env, exports) ||
      !nv_init_vfio(env, exports) || !nv_init_pidfd(env, exports) ||
      !nv_init_guard(env, exports))
    return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
