/* Errors and argument conversion shared by every part of the addon. */
#include "nv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* ---- errors --------------------------------------------------------------- */

/* Writes the symbolic errno name (e.g. "ENOENT") into buf. libuv's table is
 * the one Node itself uses for error codes; glibc covers the rest. */
static void errno_name(int err, char *buf, size_t size) {
  uv_err_name_r(-err, buf, size);
  if (strncmp(buf, "Unknown", 7) != 0) return;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char *name = strerrorname_np(err);
  if (name != NULL) {
    snprintf(buf, size, "%s", name);
    return;
  }
#endif
  snprintf(buf, size, "E%d", err);
}

static bool set_str(napi_env env, napi_value obj, const char *key, const char *val) {
  napi_value v;
  if (napi_create_string_utf8(env, val, NAPI_AUTO_LENGTH, &v) != napi_ok) return false;
  return napi_set_named_property(env, obj, key, v) == napi_ok;
}

napi_value nv_throw_errno(napi_env env, int err, const char *syscall, const char *path) {
  char name[64];
  char msg[512];
  char serr[128];
  errno_name(err, name, sizeof name);
  /* GNU strerror_r may return a static string instead of filling serr. */
  const char *text = strerror_r(err, serr, sizeof serr);
  if (path != NULL)
    snprintf(msg, sizeof msg, "%s %s: %s", syscall, path, text);
  else
    snprintf(msg, sizeof msg, "%s: %s", syscall, text);

  napi_value code, message, error, errnum;
  if (napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message) != napi_ok ||
      napi_create_error(env, code, message, &error) != napi_ok ||
      napi_create_int32(env, err, &errnum) != napi_ok ||
      napi_set_named_property(env, error, "errno", errnum) != napi_ok ||
      !set_str(env, error, "syscall", syscall) ||
      (path != NULL && !set_str(env, error, "path", path))) {
    nv_napi_failed(env, "creating error");
    return NULL;
  }
  napi_throw(env, error);
  return NULL;
}

typedef napi_status (*throw_fn)(napi_env, const char *, const char *);

static napi_value throw_fmt(napi_env env, throw_fn fn, const char *code, const char *fmt,
                            va_list ap) {
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  fn(env, code, msg);
  return NULL;
}

napi_value nv_throw_type(napi_env env, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  throw_fmt(env, napi_throw_type_error, "ERR_INVALID_ARG_TYPE", fmt, ap);
  va_end(ap);
  return NULL;
}

napi_value nv_throw_range(napi_env env, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  throw_fmt(env, napi_throw_range_error, "ERR_OUT_OF_RANGE", fmt, ap);
  va_end(ap);
  return NULL;
}

napi_value nv_throw_code(napi_env env, const char *code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  throw_fmt(env, napi_throw_error, code, fmt, ap);
  va_end(ap);
  return NULL;
}

void nv_napi_failed(napi_env env, const char *what) {
  /* Read the error info first: every napi call, including the pending check,
   * overwrites it. */
  const napi_extended_error_info *info = NULL;
  char detail[256] = "unknown error";
  if (napi_get_last_error_info(env, &info) == napi_ok && info != NULL &&
      info->error_message != NULL)
    snprintf(detail, sizeof detail, "%s", info->error_message);
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return;
  nv_throw_code(env, "ERR_NAPI", "%s failed: %s", what, detail);
}

/* ---- arguments ------------------------------------------------------------ */

bool nv_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv,
             napi_value *this_arg, void **data) {
  size_t argc = n;
  NV_CHECK(env, napi_get_cb_info(env, info, &argc, argv, this_arg, data), false);
  /* napi fills missing arguments with undefined. */
  return true;
}

bool nv_is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return false;
  return t == napi_null || t == napi_undefined;
}

bool nv_get_int(napi_env env, napi_value v, const char *name, int64_t min, int64_t max,
                int64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) {
    nv_throw_type(env, "The \"%s\" argument must be of type number", name);
    return false;
  }
  /* The range test also rejects NaN; it has to come before the cast. */
  if (!(d >= (double)min && d <= (double)max) || (double)(int64_t)d != d) {
    nv_throw_range(env,
                   "The value of \"%s\" is out of range. It must be an integer >= %lld and "
                   "<= %lld. Received %g",
                   name, (long long)min, (long long)max, d);
    return false;
  }
  *out = (int64_t)d;
  return true;
}

bool nv_get_fd(napi_env env, napi_value v, const char *name, int *out) {
  int64_t fd;
  if (!nv_get_int(env, v, name, 0, INT32_MAX, &fd)) return false;
  *out = (int)fd;
  return true;
}

char *nv_get_string(napi_env env, napi_value v, const char *name, size_t *len) {
  size_t n;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok) {
    nv_throw_type(env, "The \"%s\" argument must be of type string", name);
    return NULL;
  }
  char *buf = malloc(n + 1);
  if (buf == NULL) {
    nv_throw_errno(env, ENOMEM, "malloc", NULL);
    return NULL;
  }
  if (napi_get_value_string_utf8(env, v, buf, n + 1, &n) != napi_ok) {
    free(buf);
    nv_napi_failed(env, "napi_get_value_string_utf8");
    return NULL;
  }
  if (len != NULL) *len = n;
  return buf;
}

static size_t element_size(napi_typedarray_type type) {
  switch (type) {
    case napi_int8_array:
    case napi_uint8_array:
    case napi_uint8_clamped_array:
      return 1;
    case napi_int16_array:
    case napi_uint16_array:
      return 2;
    case napi_int32_array:
    case napi_uint32_array:
    case napi_float32_array:
      return 4;
    case napi_float64_array:
    case napi_bigint64_array:
    case napi_biguint64_array:
      return 8;
  }
  return 1;
}

bool nv_get_bytes(napi_env env, napi_value v, const char *name, uint8_t **data, size_t *len) {
  bool is;
  void *ptr = NULL;
  if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
    napi_typedarray_type type;
    size_t count;
    NV_CHECK(env, napi_get_typedarray_info(env, v, &type, &count, &ptr, NULL, NULL), false);
    *data = ptr;
    *len = count * element_size(type);
    return true;
  }
  if (napi_is_dataview(env, v, &is) == napi_ok && is) {
    NV_CHECK(env, napi_get_dataview_info(env, v, len, &ptr, NULL, NULL), false);
    *data = ptr;
    return true;
  }
  if (napi_is_arraybuffer(env, v, &is) == napi_ok && is) {
    NV_CHECK(env, napi_get_arraybuffer_info(env, v, &ptr, len), false);
    *data = ptr;
    return true;
  }
  nv_throw_type(env, "The \"%s\" argument must be an ArrayBuffer or ArrayBufferView", name);
  return false;
}

bool nv_check_range(napi_env env, int64_t offset, int64_t length, size_t size) {
  /* offset and length are already known to be in [0, 2^53). */
  if ((uint64_t)offset > size || (uint64_t)length > size - (uint64_t)offset) {
    nv_throw_range(env,
                   "Range [%lld, %lld + %lld) is outside the buffer bounds (byteLength %zu)",
                   (long long)offset, (long long)offset, (long long)length, size);
    return false;
  }
  return true;
}

napi_value nv_number(napi_env env, int64_t v) {
  napi_value r;
  NV_CALL(env, napi_create_int64(env, v, &r));
  return r;
}

napi_value nv_undefined(napi_env env) {
  napi_value r;
  NV_CALL(env, napi_get_undefined(env, &r));
  return r;
}

bool nv_define_constant(napi_env env, napi_value exports, const char *name, int64_t value) {
  napi_value v;
  NV_CHECK(env, napi_create_int64(env, value, &v), false);
  napi_property_descriptor d = {name, NULL, NULL, NULL, NULL, v, napi_enumerable, NULL};
  NV_CHECK(env, napi_define_properties(env, exports, 1, &d), false);
  return true;
}

bool nv_define_functions(napi_env env, napi_value exports, const napi_property_descriptor *props,
                         size_t count) {
  NV_CHECK(env, napi_define_properties(env, exports, count, props), false);
  return true;
}
