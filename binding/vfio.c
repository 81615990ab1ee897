/* Mappings whose address goes to the kernel rather than to JavaScript: the host
 * IOMMU (VFIO_IOMMU_MAP_DMA, IOMMU_IOAS_MAP) takes a process virtual address.
 * They are not ArrayBuffers, so they have no size cap (Node 20 limits one
 * ArrayBuffer to 4 GiB) and JavaScript never touches their bytes. */
#include "nv.h"

#include <errno.h>
#include <sys/mman.h>

/* The x86-64 and arm64 user address spaces end below 2^53, so an address is an exact JS number. */
#define NV_MAX_ADDRESS ((int64_t)1 << 53)

/* mmapAddress(fd, length, prot, flags, offset): number */
static napi_value mmap_address(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int fd;
  int64_t len, prot, flags, off;
  if (!nv_args(env, info, 5, argv, NULL, NULL)) return NULL;
  if (!nv_get_fd(env, argv[0], "fd", &fd)) return NULL;
  if (!nv_get_int(env, argv[1], "length", 1, NV_MAX_SAFE_INT, &len)) return NULL;
  if (!nv_get_int(env, argv[2], "prot", 0, INT32_MAX, &prot)) return NULL;
  if (!nv_get_int(env, argv[3], "flags", 0, INT32_MAX, &flags)) return NULL;
  if (!nv_get_int(env, argv[4], "offset", 0, NV_MAX_SAFE_INT, &off)) return NULL;
  void *addr = mmap(NULL, (size_t)len, (int)prot, (int)flags, fd, (off_t)off);
  if (addr == MAP_FAILED) return nv_throw_errno(env, errno, "mmap", NULL);
  if ((uintptr_t)addr >= (uintptr_t)NV_MAX_ADDRESS) {
    munmap(addr, (size_t)len);
    return nv_throw_errno(env, ERANGE, "mmap", NULL);
  }
  return nv_number(env, (int64_t)(uintptr_t)addr);
}

/* munmapAddress(address, length): void */
static napi_value munmap_address(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int64_t addr, len;
  if (!nv_args(env, info, 2, argv, NULL, NULL)) return NULL;
  if (!nv_get_int(env, argv[0], "address", 1, NV_MAX_SAFE_INT, &addr)) return NULL;
  if (!nv_get_int(env, argv[1], "length", 1, NV_MAX_SAFE_INT, &len)) return NULL;
  if (munmap((void *)(uintptr_t)addr, (size_t)len) != 0) return nv_throw_errno(env, errno, "munmap", NULL);
  return nv_undefined(env);
}

bool nv_init_vfio(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      NV_FN("mmapAddress", mmap_address),
      NV_FN("munmapAddress", munmap_address),
  };
  return nv_define_functions(env, exports, props, sizeof props / sizeof props[0]);
}
