/* memfd, mmap/munmap exposed as external ArrayBuffers, guarded memset, hole punching. */
#include "nv.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Huge page size encodings (<linux/memfd.h>), spelled out to avoid mixing the
 * kernel header with glibc's definitions of the other MFD_ flags. */
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26)
#endif
#ifndef MFD_HUGE_1GB
#define MFD_HUGE_1GB (30U << 26)
#endif

/*
 * Lifetime of a mapping
 * ---------------------
 * mmap() wraps the mapping in an external ArrayBuffer whose finalizer gets an
 * nv_mapping. The ArrayBuffer is also type-tagged and napi_wrap'ed with the
 * same nv_mapping so munmap(ab) can find it.
 *
 *  - explicit munmap(ab): remove the wrap (a second munmap sees EINVAL),
 *    mark UNMAPPED, detach the ArrayBuffer (JS now sees byteLength 0), then
 *    munmap. Node runs the finalizer later; it only frees the nv_mapping.
 *  - never unmapped: when the ArrayBuffer is collected (or the environment is
 *    torn down) the finalizer sees LIVE, munmaps and frees.
 *  - napi_create_external_arraybuffer failure (e.g. Node 20 refuses buffers
 *    over 4 GiB): Node 20 calls the finalizer synchronously on that path, other
 *    versions may not. CREATING tells the finalizer to leave cleanup to mmap().
 */
enum {
  MAPPING_CREATING,       /* inside napi_create_external_arraybuffer */
  MAPPING_EARLY_FINAL,    /* finalizer ran during creation; mmap() frees */
  MAPPING_ORPHANED,       /* creation failed, mmap() unmapped; finalizer (if any) frees */
  MAPPING_LIVE,           /* mapped and owned by the ArrayBuffer */
  MAPPING_UNMAPPED,       /* explicitly unmapped; finalizer frees */
};

typedef struct {
  void *addr;
  size_t len;
  int state;
} nv_mapping;

static const napi_type_tag mapping_tag = {0x6e76677261636531ULL, 0x6d6d61702d746167ULL};

static void mapping_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  nv_mapping *m = hint;
  switch (m->state) {
    case MAPPING_CREATING:
      m->state = MAPPING_EARLY_FINAL;
      return;
    case MAPPING_LIVE:
      munmap(m->addr, m->len);
      break;
    default:
      break;
  }
  free(m);
}

/* memfdCreate(name, flags): number */
/* memfdAddSeals(fd, seals): void -- fcntl(F_ADD_SEALS). The memfd must have
 * been created with MFD_ALLOW_SEALING. */
static napi_value memfd_add_seals(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  int64_t seals;
  if (!nv_args(env, info, 2, argv, NULL, NULL)) return NULL;
  if (!nv_get_fd(env, argv[0], "fd", &fd)) return NULL;
  if (!nv_get_int(env, argv[1], "seals", 0, INT32_MAX, &seals)) return NULL;
  if (fcntl(fd, F_ADD_SEALS, (int)seals) != 0) return nv_throw_errno(env, errno, "fcntl", NULL);
  return nv_undefined(env);
}

static napi_value memfd_create_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int64_t flags;
  if (!nv_args(env, info, 2, argv, NULL, NULL)) return NULL;
  if (!nv_get_int(env, argv[1], "flags", 0, UINT32_MAX, &flags)) return NULL;
  char *name = nv_get_string(env, argv[0], "name", NULL);
  if (name == NULL) return NULL;
  int fd = memfd_create(name, (unsigned)flags | MFD_CLOEXEC);
  int err = errno;
  free(name);
  if (fd < 0) return nv_throw_errno(env, err, "memfd_create", NULL);
  return nv_number(env, fd);
}

/* Replaces Node's ERR_BUFFER_TOO_LARGE from the external ArrayBuffer path by
 * an error that says what to do about it; other exceptions stay as they are. */
static void explain_too_large(napi_env env, size_t len) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) != napi_ok || !pending) {
    nv_napi_failed(env, "napi_create_external_arraybuffer");
    return;
  }
  napi_value exc, code;
  char buf[32] = "";
  napi_get_and_clear_last_exception(env, &exc);
  napi_valuetype t;
  if (napi_typeof(env, exc, &t) == napi_ok && t == napi_object &&
      napi_get_named_property(env, exc, "code", &code) == napi_ok &&
      napi_get_value_string_utf8(env, code, buf, sizeof buf, NULL) == napi_ok &&
      strcmp(buf, "ERR_BUFFER_TOO_LARGE") == 0) {
    napi_value msg, err;
    char text[256];
    snprintf(text, sizeof text,
             "mmap: a mapping of %zu bytes is larger than this runtime allows for an "
             "ArrayBuffer (see buffer.constants.MAX_LENGTH); map smaller windows using the "
             "offset argument",
             len);
    if (napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg) == napi_ok &&
        napi_create_range_error(env, code, msg, &err) == napi_ok) {
      napi_set_named_property(env, err, "cause", exc);
      napi_throw(env, err);
      return;
    }
  }
  napi_throw(env, exc);
}

/* mmap(fd, length, prot, flags, offset): ArrayBuffer */
static napi_value mmap_js(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int64_t fd, len, prot, flags, off;
  if (!nv_args(env, info, 5, argv, NULL, NULL)) return NULL;
  /* fd -1 is allowed for MAP_ANONYMOUS. */
  if (!nv_get_int(env, argv[0], "fd", -1, INT32_MAX, &fd)) return NULL;
  if (!nv_get_int(env, argv[1], "length", 0, NV_MAX_SAFE_INT, &len)) return NULL;
  if (!nv_get_int(env, argv[2], "prot", 0, INT32_MAX, &prot)) return NULL;
  if (!nv_get_int(env, argv[3], "flags", 0, INT32_MAX, &flags)) return NULL;
  if (!nv_get_int(env, argv[4], "offset", 0, NV_MAX_SAFE_INT, &off)) return NULL;
  if (len == 0) return nv_throw_errno(env, EINVAL, "mmap", NULL);

  void *addr = mmap(NULL, (size_t)len, (int)prot, (int)flags, (int)fd, (off_t)off);
  if (addr == MAP_FAILED) return nv_throw_errno(env, errno, "mmap", NULL);

  nv_mapping *m = malloc(sizeof *m);
  if (m == NULL) {
    munmap(addr, (size_t)len);
    return nv_throw_errno(env, ENOMEM, "malloc", NULL);
  }
  m->addr = addr;
  m->len = (size_t)len;
  m->state = MAPPING_CREATING;

  napi_value ab;
  if (napi_create_external_arraybuffer(env, addr, (size_t)len, mapping_finalize, m, &ab) !=
      napi_ok) {
    munmap(addr, (size_t)len);
    if (m->state == MAPPING_EARLY_FINAL)
      free(m);
    else
      m->state = MAPPING_ORPHANED; /* a late finalizer frees it; otherwise a few bytes leak */
    explain_too_large(env, (size_t)len);
    return NULL;
  }
  m->state = MAPPING_LIVE;

  if (napi_type_tag_object(env, ab, &mapping_tag) != napi_ok ||
      napi_wrap(env, ab, m, NULL, NULL, NULL) != napi_ok) {
    /* Cannot be unmapped explicitly: give the memory back now. */
    nv_napi_failed(env, "tagging the mapping");
    m->state = MAPPING_UNMAPPED;
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_detach_arraybuffer(env, ab);
    munmap(addr, (size_t)len);
    napi_throw(env, exc);
    return NULL;
  }
  return ab;
}

/* munmap(ab): void */
static napi_value munmap_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!nv_args(env, info, 1, argv, NULL, NULL)) return NULL;
  bool is_ab = false;
  if (napi_is_arraybuffer(env, argv[0], &is_ab) != napi_ok || !is_ab)
    return nv_throw_type(env, "The \"ab\" argument must be an ArrayBuffer");

  bool tagged = false;
  void *ptr = NULL;
  if (napi_check_object_type_tag(env, argv[0], &mapping_tag, &tagged) != napi_ok || !tagged ||
      napi_unwrap(env, argv[0], &ptr) != napi_ok || ptr == NULL)
    return nv_throw_errno(env, EINVAL, "munmap", NULL); /* not ours, or already unmapped */
  nv_mapping *m = ptr;

  void *data = NULL;
  size_t size = 0;
  NV_CALL(env, napi_get_arraybuffer_info(env, argv[0], &data, &size));
  if (data != m->addr || size != m->len) {
    /* Detached by someone else (e.g. transferred): the memory may be in use
     * elsewhere; its finalizer will unmap it. */
    napi_remove_wrap(env, argv[0], NULL);
    return nv_throw_errno(env, EINVAL, "munmap", NULL);
  }

  void *addr = m->addr;
  size_t len = m->len;
  m->state = MAPPING_UNMAPPED; /* from here on the finalizer only frees */
  if (napi_detach_arraybuffer(env, argv[0]) != napi_ok) {
    m->state = MAPPING_LIVE;
    nv_napi_failed(env, "napi_detach_arraybuffer");
    return NULL;
  }
  /* m may be freed from now on (the finalizer can run once detached). */
  napi_remove_wrap(env, argv[0], NULL);
  if (munmap(addr, len) != 0) return nv_throw_errno(env, errno, "munmap", NULL);
  return nv_undefined(env);
}

/* fillMemory(ab, offset, length, byte): 0, or EFAULT / EIO when a page of the
 * range could not be had (guard.c) */
static napi_value fill_memory(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  uint8_t *data;
  size_t size;
  int64_t off, len, byte;
  if (!nv_args(env, info, 4, argv, NULL, NULL)) return NULL;
  if (!nv_get_bytes(env, argv[0], "ab", &data, &size)) return NULL;
  if (!nv_get_int(env, argv[1], "offset", 0, NV_MAX_SAFE_INT, &off)) return NULL;
  if (!nv_get_int(env, argv[2], "length", 0, NV_MAX_SAFE_INT, &len)) return NULL;
  if (!nv_get_int(env, argv[3], "byte", 0, 255, &byte)) return NULL;
  if (!nv_check_range(env, off, len, size)) return NULL;
  return nv_number(env, nv_guarded_memset(data + off, (int)byte, (size_t)len));
}

/* fallocatePunchHole(fd, offset, length): void */
static napi_value punch_hole(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  int64_t off, len;
  if (!nv_args(env, info, 3, argv, NULL, NULL)) return NULL;
  if (!nv_get_fd(env, argv[0], "fd", &fd)) return NULL;
  if (!nv_get_int(env, argv[1], "offset", 0, NV_MAX_SAFE_INT, &off)) return NULL;
  if (!nv_get_int(env, argv[2], "length", 0, NV_MAX_SAFE_INT, &len)) return NULL;
  int rc;
  do {
    rc = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return nv_throw_errno(env, errno, "fallocate", NULL);
  return nv_undefined(env);
}

/* pageSize(): number */
static napi_value page_size(napi_env env, napi_callback_info info) {
  (void)info;
  return nv_number(env, sysconf(_SC_PAGESIZE));
}

bool nv_init_memory(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      NV_FN("memfdCreate", memfd_create_js),
      NV_FN("memfdAddSeals", memfd_add_seals),
      NV_FN("mmap", mmap_js),
      NV_FN("munmap", munmap_js),
      NV_FN("fillMemory", fill_memory),
      NV_FN("fallocatePunchHole", punch_hole),
      NV_FN("pageSize", page_size),
  };
  return nv_define_functions(env, exports, props, sizeof props / sizeof props[0]) &&
         nv_define_constant(env, exports, "MFD_ALLOW_SEALING", MFD_ALLOW_SEALING) &&
         nv_define_constant(env, exports, "F_SEAL_SEAL", F_SEAL_SEAL) &&
         nv_define_constant(env, exports, "F_SEAL_SHRINK", F_SEAL_SHRINK) &&
         nv_define_constant(env, exports, "F_SEAL_GROW", F_SEAL_GROW) &&
         nv_define_constant(env, exports, "MFD_HUGETLB", MFD_HUGETLB) &&
         nv_define_constant(env, exports, "MFD_HUGE_2MB", MFD_HUGE_2MB) &&
         nv_define_constant(env, exports, "MFD_HUGE_1GB", MFD_HUGE_1GB) &&
         nv_define_constant(env, exports, "PROT_READ", PROT_READ) &&
         nv_define_constant(env, exports, "PROT_WRITE", PROT_WRITE) &&
         nv_define_constant(env, exports, "MAP_SHARED", MAP_SHARED) &&
         nv_define_constant(env, exports, "MAP_PRIVATE", MAP_PRIVATE) &&
         nv_define_constant(env, exports, "MAP_ANONYMOUS", MAP_ANONYMOUS) &&
         nv_define_constant(env, exports, "MAP_NORESERVE", MAP_NORESERVE) &&
         nv_define_constant(env, exports, "MAP_POPULATE", MAP_POPULATE);
}
