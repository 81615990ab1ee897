/* Poller: watches an fd with a libuv uv_poll_t on Node's own event loop and
 * calls a JS callback (status, events) when it becomes ready. */
#include "nv.h"

#include <errno.h>
#include <stdlib.h>
#include <uv.h>

#define NV_READABLE 1
#define NV_WRITABLE 2
#define NV_DISCONNECT 4
_Static_assert(NV_READABLE == UV_READABLE && NV_WRITABLE == UV_WRITABLE &&
                   NV_DISCONNECT == UV_DISCONNECT,
               "event bits are passed through to libuv unchanged");
#define NV_ALL_EVENTS (NV_READABLE | NV_WRITABLE | NV_DISCONNECT)

/*
 * Lifetime
 * --------
 * The C struct is shared by the JS wrapper object and the uv handle; it is
 * freed when both are gone: the wrapper's finalizer has run (js_gone) and the
 * handle's close callback has run (handle_closed).
 *
 *  - `callback` is a strong reference from construction until close.
 *  - `self` is the napi_wrap reference to the wrapper: weak, but strong while
 *    the poller is started, so a started poller is never collected out from
 *    under its fd (like a Node handle).
 *  - close() (or finalization of a poller never closed) uv_close()s the
 *    handle, drops the callback and destroys the async context. No callback
 *    runs after close(): uv_close stops the watcher synchronously.
 *  - At environment teardown Node finalizes every wrapper, which closes any
 *    poller still open.
 */
typedef struct nv_poller {
  uv_poll_t handle;
  napi_env env;
  nv_state *st; /* NULL once unlinked from st->pollers */
  struct nv_poller *next, *prev;
  int fd;
  napi_ref self;
  napi_ref callback;
  napi_async_context async;
  bool started;
  bool closing;
  bool handle_closed;
  bool js_gone;
} nv_poller;

static void unlink_poller(nv_poller *p) {
  if (p->st == NULL) return;
  if (p->prev != NULL)
    p->prev->next = p->next;
  else
    p->st->pollers = p->next;
  if (p->next != NULL) p->next->prev = p->prev;
  p->next = p->prev = NULL;
  p->st = NULL;
}

void nv_poll_forget_all(nv_state *st) {
  while (st->pollers != NULL) unlink_poller(st->pollers);
}

static void on_close(uv_handle_t *h) {
  nv_poller *p = h->data;
  p->handle_closed = true;
  if (p->js_gone) free(p);
}

static void set_started(nv_poller *p, bool started) {
  if (p->started == started) return;
  p->started = started;
  if (started)
    napi_reference_ref(p->env, p->self, NULL);
  else
    napi_reference_unref(p->env, p->self, NULL);
}

/* Stops watching and releases everything that belongs to JS. Idempotent. */
static void begin_close(nv_poller *p) {
  if (p->closing) return;
  p->closing = true;
  unlink_poller(p);
  if (p->self != NULL) set_started(p, false);
  uv_close((uv_handle_t *)&p->handle, on_close);
  napi_delete_reference(p->env, p->callback);
  p->callback = NULL;
  napi_async_destroy(p->env, p->async);
  p->async = NULL;
}

static void on_poll(uv_poll_t *h, int status, int events) {
  nv_poller *p = h->data;
  if (p->closing) return;
  napi_env env = p->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;

  napi_value cb = NULL, recv = NULL, argv[2];
  napi_get_reference_value(env, p->callback, &cb);
  napi_get_reference_value(env, p->self, &recv);
  if (recv == NULL) napi_get_undefined(env, &recv);
  /* On error libuv has already stopped the watcher; mirror that so the
   * wrapper can be collected if JS drops it. */
  if (status < 0) set_started(p, false);

  if (cb != NULL && napi_create_int32(env, status, &argv[0]) == napi_ok &&
      napi_create_int32(env, events & NV_ALL_EVENTS, &argv[1]) == napi_ok) {
    /* make_callback runs the callback in the poller's async context and then
     * drains process.nextTick and promise microtasks, like Node's own
     * handles. From here on `p` may be closing (close() called from JS); it is
     * not freed before on_close runs in a later loop phase, but it is not
     * touched again anyway. */
    napi_value result;
    if (napi_make_callback(env, p->async, recv, cb, 2, argv, &result) != napi_ok) {
      bool pending = false;
      if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
        napi_value exc;
        if (napi_get_and_clear_last_exception(env, &exc) == napi_ok)
          napi_fatal_exception(env, exc); /* -> process 'uncaughtException' */
      }
    }
  }
  napi_close_handle_scope(env, scope);
}

static void poller_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  nv_poller *p = data;
  napi_delete_reference(env, p->self);
  p->self = NULL;
  p->started = false;
  p->js_gone = true;
  if (!p->closing)
    begin_close(p); /* frees in on_close */
  else if (p->handle_closed)
    free(p);
}

/* new Poller(fd, callback) -- only reached through createPoller(). */
static napi_value poller_ctor(napi_env env, napi_callback_info info) {
  napi_value argv[2], self, target;
  int fd;
  if (!nv_args(env, info, 2, argv, &self, NULL)) return NULL;
  NV_CALL(env, napi_get_new_target(env, info, &target));
  if (target == NULL) return nv_throw_type(env, "Poller must be constructed with new");
  if (!nv_get_fd(env, argv[0], "fd", &fd)) return NULL;
  napi_valuetype t;
  NV_CALL(env, napi_typeof(env, argv[1], &t));
  if (t != napi_function)
    return nv_throw_type(env, "The \"callback\" argument must be of type function");

  /* Two uv_poll handles on one fd misbehave silently (only one gets events,
   * stopping either unregisters both). libuv refuses a second one only while
   * the first is started, so keep our own registry of open pollers. */
  nv_state *st = nv_get_state(env);
  if (st == NULL) return NULL;
  for (nv_poller *q = st->pollers; q != NULL; q = q->next)
    if (q->fd == fd) return nv_throw_errno(env, EEXIST, "uv_poll_init", NULL);

  uv_loop_t *loop;
  NV_CALL(env, napi_get_uv_event_loop(env, &loop));
  nv_poller *p = calloc(1, sizeof *p);
  if (p == NULL) return nv_throw_errno(env, ENOMEM, "calloc", NULL);
  p->env = env;
  p->fd = fd;
  /* Fails with EEXIST if something else in this loop (e.g. a Node handle)
   * already watches fd, and with EPERM for fds epoll cannot watch (regular
   * files). Sets O_NONBLOCK on the fd. */
  int rc = uv_poll_init(loop, &p->handle, fd);
  if (rc < 0) {
    free(p); /* the handle was not registered with the loop */
    return nv_throw_errno(env, -rc, "uv_poll_init", NULL);
  }
  p->handle.data = p;
  p->st = st;
  p->next = st->pollers;
  if (p->next != NULL) p->next->prev = p;
  st->pollers = p;

  napi_value name;
  if (napi_create_string_utf8(env, "nvgrace:Poller", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &p->async) != napi_ok) {
    nv_napi_failed(env, "napi_async_init");
    p->js_gone = true;
    unlink_poller(p);
    uv_close((uv_handle_t *)&p->handle, on_close);
    return NULL;
  }
  if (napi_create_reference(env, argv[1], 1, &p->callback) != napi_ok) {
    nv_napi_failed(env, "napi_create_reference");
    napi_async_destroy(env, p->async);
    p->js_gone = true;
    unlink_poller(p);
    uv_close((uv_handle_t *)&p->handle, on_close);
    return NULL;
  }
  if (napi_wrap(env, self, p, poller_finalize, NULL, &p->self) != napi_ok) {
    nv_napi_failed(env, "napi_wrap");
    p->js_gone = true;
    begin_close(p);
    return NULL;
  }
  return self;
}

static nv_poller *this_poller(napi_env env, napi_callback_info info, napi_value *argv,
                              size_t argc) {
  napi_value self;
  void *ptr = NULL;
  if (!nv_args(env, info, argc, argv, &self, NULL)) return NULL;
  if (napi_unwrap(env, self, &ptr) != napi_ok || ptr == NULL) {
    nv_throw_type(env, "Illegal invocation: not a Poller");
    return NULL;
  }
  return ptr;
}

/* poller.start(events) */
static napi_value poller_start(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int64_t events;
  nv_poller *p = this_poller(env, info, argv, 1);
  if (p == NULL) return NULL;
  if (p->closing) return nv_throw_code(env, "ERR_POLLER_CLOSED", "Poller is closed");
  if (!nv_get_int(env, argv[0], "events", 0, NV_ALL_EVENTS, &events)) return NULL;
  int rc = uv_poll_start(&p->handle, (int)events, on_poll);
  if (rc < 0) return nv_throw_errno(env, -rc, "uv_poll_start", NULL);
  set_started(p, events != 0); /* libuv treats 0 events as stop */
  return nv_undefined(env);
}

/* poller.stop() -- no-op when stopped or closed. */
static napi_value poller_stop(napi_env env, napi_callback_info info) {
  nv_poller *p = this_poller(env, info, NULL, 0);
  if (p == NULL) return NULL;
  if (!p->closing) {
    uv_poll_stop(&p->handle);
    set_started(p, false);
  }
  return nv_undefined(env);
}

/* poller.close() -- idempotent; does not close the fd. */
static napi_value poller_close(napi_env env, napi_callback_info info) {
  nv_poller *p = this_poller(env, info, NULL, 0);
  if (p == NULL) return NULL;
  begin_close(p);
  return nv_undefined(env);
}

static napi_value poller_ref(napi_env env, napi_callback_info info) {
  nv_poller *p = this_poller(env, info, NULL, 0);
  if (p == NULL) return NULL;
  if (!p->closing) uv_ref((uv_handle_t *)&p->handle);
  return nv_undefined(env);
}

static napi_value poller_unref(napi_env env, napi_callback_info info) {
  nv_poller *p = this_poller(env, info, NULL, 0);
  if (p == NULL) return NULL;
  if (!p->closing) uv_unref((uv_handle_t *)&p->handle);
  return nv_undefined(env);
}

/* createPoller(fd, callback): Poller */
static napi_value create_poller(napi_env env, napi_callback_info info) {
  napi_value argv[2], ctor, obj;
  if (!nv_args(env, info, 2, argv, NULL, NULL)) return NULL;
  nv_state *st = nv_get_state(env);
  if (st == NULL) return NULL;
  NV_CALL(env, napi_get_reference_value(env, st->poller_ctor, &ctor));
  NV_CALL(env, napi_new_instance(env, ctor, 2, argv, &obj));
  return obj;
}

bool nv_init_poll(napi_env env, napi_value exports) {
  const napi_property_descriptor methods[] = {
      NV_FN("start", poller_start), NV_FN("stop", poller_stop), NV_FN("close", poller_close),
      NV_FN("ref", poller_ref),     NV_FN("unref", poller_unref),
  };
  napi_value ctor;
  NV_CHECK(env,
           napi_define_class(env, "Poller", NAPI_AUTO_LENGTH, poller_ctor, NULL,
                             sizeof methods / sizeof methods[0], methods, &ctor),
           false);
  nv_state *st = nv_get_state(env);
  if (st == NULL) return false;
  NV_CHECK(env, napi_create_reference(env, ctor, 1, &st->poller_ctor), false);

  const napi_property_descriptor props[] = {NV_FN("createPoller", create_poller)};
  return nv_define_functions(env, exports, props, 1) &&
         nv_define_constant(env, exports, "READABLE", NV_READABLE) &&
         nv_define_constant(env, exports, "WRITABLE", NV_WRITABLE) &&
         nv_define_constant(env, exports, "DISCONNECT", NV_DISCONNECT);
}
