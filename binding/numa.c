/*
 * NUMA memory policy and prefaulting for mappings made by mmap(): mbind,
 * get_mempolicy, move_pages (query only) and madvise(MADV_POPULATE_*).
 *
 * The syscalls are called directly through syscall(2): glibc has no wrappers
 * and libnuma would be a run-time dependency for four calls.
 */
#include "nv.h"

#include <errno.h>
#include <linux/mempolicy.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Node masks cover node ids 0..NV_MAX_NODES-1, far more than any machine has. */
#define NV_MAX_NODES 1024
#define MASK_WORDS (NV_MAX_NODES / (8 * sizeof(unsigned long)))
#define WORD_BITS (8 * sizeof(unsigned long))

/* Resolves ab[offset, offset + length) to an address; RangeError when outside. */
static bool mapped_range(napi_env env, napi_value ab, int64_t offset, int64_t length,
                         uint8_t **addr) {
  uint8_t *data;
  size_t size;
  if (!nv_get_bytes(env, ab, "ab", &data, &size)) return false;
  if (!nv_check_range(env, offset, length, size)) return false;
  *addr = data + offset;
  return true;
}

/* mbind(ab, offset, length, mode, nodes, flags): void -- the policy of
 * [offset, offset + length) of a mapping. On a MAP_SHARED mapping of shmem
 * (a memfd or a tmpfs file) it becomes the shared policy of that file range,
 * which every mapping of the file then allocates by. */
static napi_value mbind_js(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  int64_t off, len, mode, flags;
  uint8_t *addr;
  if (!nv_args(env, info, 6, argv, NULL, NULL)) return NULL;
  if (!nv_get_int(env, argv[1], "offset", 0, NV_MAX_SAFE_INT, &off)) return NULL;
  if (!nv_get_int(env, argv[2], "length", 0, NV_MAX_SAFE_INT, &len)) return NULL;
  if (!nv_get_int(env, argv[3], "mode", 0, INT32_MAX, &mode)) return NULL;
  if (!nv_get_int(env, argv[5], "flags", 0, INT32_MAX, &flags)) return NULL;
  if (!mapped_range(env, argv[0], off, len, &addr)) return NULL;

  bool is_array = false;
  if (napi_is_array(env, argv[4], &is_array) != napi_ok || !is_array)
    return nv_throw_type(env, "The \"nodes\" argument must be an array of node ids");
  uint32_t count;
  NV_CALL(env, napi_get_array_length(env, argv[4], &count));
  unsigned long mask[MASK_WORDS];
  memset(mask, 0, sizeof mask);
  for (uint32_t i = 0; i < count; i++) {
    napi_value v;
    int64_t node;
    NV_CALL(env, napi_get_element(env, argv[4], i, &v));
    if (!nv_get_int(env, v, "node", 0, NV_MAX_NODES - 1, &node)) return NULL;
    mask[node / WORD_BITS] |= 1UL << (node % WORD_BITS);
  }
  /* The kernel reads maxnode - 1 bits. */
  if (syscall(SYS_mbind, addr, (unsigned long)len, (int)mode, count > 0 ? mask : NULL,
              count > 0 ? (unsigned long)NV_MAX_NODES + 1 : 0UL, (unsigned)flags) != 0)
    return nv_throw_errno(env, errno, "mbind", NULL);
  return nv_undefined(env);
}

static napi_value nodes_array(napi_env env, const unsigned long *mask) {
  napi_value arr;
  NV_CALL(env, napi_create_array(env, &arr));
  uint32_t n = 0;
  for (int node = 0; node < NV_MAX_NODES; node++) {
    if (!(mask[node / WORD_BITS] & (1UL << (node % WORD_BITS)))) continue;
    napi_value v = nv_number(env, node);
    if (v == NULL) return NULL;
    NV_CALL(env, napi_set_element(env, arr, n++, v));
  }
  return arr;
}

/* getMempolicy(ab, offset): { mode, nodes } -- the policy that governs the
 * page at ab + offset (the shared policy of the file for shmem mappings). */
static napi_value get_mempolicy_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int64_t off;
  uint8_t *addr;
  if (!nv_args(env, info, 2, argv, NULL, NULL)) return NULL;
  if (!nv_get_int(env, argv[1], "offset", 0, NV_MAX_SAFE_INT, &off)) return NULL;
  if (!mapped_range(env, argv[0], off, 1, &addr)) return NULL;
  int mode = 0;
  unsigned long mask[MASK_WORDS];
  memset(mask, 0, sizeof mask);
  if (syscall(SYS_get_mempolicy, &mode, mask, (unsigned long)NV_MAX_NODES + 1, addr,
              (unsigned long)MPOL_F_ADDR) != 0)
    return nv_throw_errno(env, errno, "get_mempolicy", NULL);
  napi_value out, nodes;
  NV_CALL(env, napi_create_object(env, &out));
  /* The mode comes back with its MPOL_F_* mode flags; report them apart. */
  napi_value m = nv_number(env, mode & ~MPOL_MODE_FLAGS);
  napi_value f = nv_number(env, mode & MPOL_MODE_FLAGS);
  if (m == NULL || f == NULL || (nodes = nodes_array(env, mask)) == NULL) return NULL;
  NV_CALL(env, napi_set_named_property(env, out, "mode", m));
  NV_CALL(env, napi_set_named_property(env, out, "flags", f));
  NV_CALL(env, napi_set_named_property(env, out, "nodes", nodes));
  return out;
}

/* pageNodes(ab, offset, stride, out): void -- out[i] = node of the page at
 * ab + offset + i * stride, or a negative errno (-ENOENT: not present in this
 * mapping). Queries only (move_pages with no target nodes): nothing is faulted
 * in or moved. */
static napi_value page_nodes_js(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int64_t off, stride;
  if (!nv_args(env, info, 4, argv, NULL, NULL)) return NULL;
  if (!nv_get_int(env, argv[1], "offset", 0, NV_MAX_SAFE_INT, &off)) return NULL;
  if (!nv_get_int(env, argv[2], "stride", 1, NV_MAX_SAFE_INT, &stride)) return NULL;
  bool is_ta = false;
  napi_typedarray_type type;
  size_t count = 0;
  void *status = NULL;
  if (napi_is_typedarray(env, argv[3], &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, argv[3], &type, &count, &status, NULL, NULL) != napi_ok ||
      type != napi_int32_array)
    return nv_throw_type(env, "The \"out\" argument must be an Int32Array");
  if (count == 0) return nv_undefined(env);
  /* Every page queried, the last one included, must lie inside the mapping. */
  if ((int64_t)(count - 1) > (NV_MAX_SAFE_INT - 1) / stride)
    return nv_throw_range(env, "The span of %zu pages %lld bytes apart is too large", count,
                          (long long)stride);
  uint8_t *base;
  if (!mapped_range(env, argv[0], off, (int64_t)(count - 1) * stride + 1, &base)) return NULL;

  void **pages = malloc(count * sizeof *pages);
  if (pages == NULL) return nv_throw_errno(env, ENOMEM, "malloc", NULL);
  for (size_t i = 0; i < count; i++) pages[i] = base + (int64_t)i * stride;
  long rc = syscall(SYS_move_pages, 0, (unsigned long)count, pages, NULL, (int *)status, 0);
  int err = errno;
  free(pages);
  if (rc != 0) return nv_throw_errno(env, err, "move_pages", NULL);
  return nv_undefined(env);
}

/* populate(ab, offset, length, write): void -- faults the range in now
 * (MADV_POPULATE_WRITE or _READ), allocating by the mapping's policy. An
 * allocation that fails is an error here (ENOMEM, or EFAULT where a fault
 * would have raised SIGBUS) rather than a signal later. */
static napi_value populate_js(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int64_t off, len;
  bool write;
  uint8_t *addr;
  if (!nv_args(env, info, 4, argv, NULL, NULL)) return NULL;
  if (!nv_get_int(env, argv[1], "offset", 0, NV_MAX_SAFE_INT, &off)) return NULL;
  if (!nv_get_int(env, argv[2], "length", 0, NV_MAX_SAFE_INT, &len)) return NULL;
  if (napi_get_value_bool(env, argv[3], &write) != napi_ok)
    return nv_throw_type(env, "The \"write\" argument must be of type boolean");
  if (!mapped_range(env, argv[0], off, len, &addr)) return NULL;
  int rc;
  do {
    rc = madvise(addr, (size_t)len, write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return nv_throw_errno(env, errno, "madvise", NULL);
  return nv_undefined(env);
}

bool nv_init_numa(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      NV_FN("mbind", mbind_js),
      NV_FN("getMempolicy", get_mempolicy_js),
      NV_FN("pageNodes", page_nodes_js),
      NV_FN("populate", populate_js),
  };
  return nv_define_functions(env, exports, props, sizeof props / sizeof props[0]) &&
         nv_define_constant(env, exports, "MPOL_DEFAULT", MPOL_DEFAULT) &&
         nv_define_constant(env, exports, "MPOL_PREFERRED", MPOL_PREFERRED) &&
         nv_define_constant(env, exports, "MPOL_BIND", MPOL_BIND) &&
         nv_define_constant(env, exports, "MPOL_INTERLEAVE", MPOL_INTERLEAVE) &&
         nv_define_constant(env, exports, "MPOL_LOCAL", MPOL_LOCAL) &&
         nv_define_constant(env, exports, "MPOL_MF_STRICT", MPOL_MF_STRICT) &&
         nv_define_constant(env, exports, "MPOL_MF_MOVE", MPOL_MF_MOVE);
}
