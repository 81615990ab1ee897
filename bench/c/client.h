/* A minimal blocking vfio-user client: enough to set up a session the way QEMU does. */
#ifndef BENCH_CLIENT_H
#define BENCH_CLIENT_H

#include <stdint.h>

typedef struct {
  uint32_t flags;
  uint64_t size;
  uint64_t offset; /* file offset of the region in the fd */
  int fd;          /* -1 when the region cannot be mapped */
  uint32_t nareas;
  uint64_t area_offset[8];
  uint64_t area_size[8];
} region_info;

/* Connects (retrying until timeout_ms while the socket is not there yet); returns the fd. */
int client_connect(const char *path, int timeout_ms);
/* VERSION with the capabilities QEMU proposes. */
void client_negotiate(int fd);
/* DEVICE_GET_REGION_INFO as QEMU asks: 32 bytes first, again with the size stated. */
void client_region_info(int fd, uint32_t index, region_info *out);

#endif
