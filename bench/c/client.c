/* Blocking vfio-user client used on the measured side of the bench. */
#define _GNU_SOURCE
#include "client.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "proto.h"

int client_connect(const char *path, int timeout_ms) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) die("socket path too long: %s", path);
  strcpy(sa.sun_path, path);
  uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ull;
  for (;;) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) return fd;
    int err = errno;
    close(fd);
    if ((err != ENOENT && err != ECONNREFUSED) || now_ns() > deadline) die("connect %s: %s", path, strerror(err));
    usleep(200);
  }
}

void client_negotiate(int fd) {
  static const char caps[] =
      "{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1048576,\"pgsizes\":4096,"
      "\"max_dma_maps\":65535,\"write_multiple\":true}}";
  uint8_t buf[512];
  size_t size = HDR + 4 + sizeof caps; /* sizeof includes the NUL the protocol wants */
  put_hdr(buf, 1, CMD_VERSION, (uint32_t)size, 0);
  put16(buf + HDR, 0);
  put16(buf + HDR + 2, 0);
  memcpy(buf + HDR + 4, caps, sizeof caps);
  write_all(fd, buf, size);
  int rfd;
  read_message(fd, buf, sizeof buf, &rfd);
  if (rfd >= 0) close(rfd);
  if (get32(buf + 8) & F_ERROR) die("VERSION refused: errno %u", get32(buf + 12));
}

void client_region_info(int fd, uint32_t index, region_info *out) {
  uint32_t argsz = 32;
  uint8_t buf[1024];
  for (int attempt = 0; attempt < 3; attempt++) {
    put_hdr(buf, 2, CMD_REGION_INFO, HDR + 32, 0);
    memset(buf + HDR, 0, 32);
    put32(buf + HDR, argsz);
    put32(buf + HDR + 8, index);
    write_all(fd, buf, HDR + 32);
    int rfd;
    size_t size = read_message(fd, buf, sizeof buf, &rfd);
    if (get32(buf + 8) & F_ERROR) die("region info %u refused: errno %u", index, get32(buf + 12));
    const uint8_t *p = buf + HDR;
    uint32_t need = get32(p);
    if (need > argsz) {
      if (rfd >= 0) close(rfd);
      argsz = need;
      continue;
    }
    memset(out, 0, sizeof *out);
    out->flags = get32(p + 4);
    out->size = get64(p + 16);
    out->offset = get64(p + 24);
    out->fd = rfd;
    uint32_t cap = get32(p + 12);
    if (cap != 0 && cap + 16 <= size - HDR && get16(p + cap) == 1) {
      uint32_t n = get32(p + cap + 8);
      for (uint32_t i = 0; i < n && i < 8 && cap + 16 + 16 * (i + 1) <= size - HDR; i++) {
        out->area_offset[i] = get64(p + cap + 16 + 16 * i);
        out->area_size[i] = get64(p + cap + 24 + 16 * i);
        out->nareas = i + 1;
      }
    } else if (rfd >= 0) {
      out->nareas = 1;
      out->area_offset[0] = 0;
      out->area_size[0] = out->size;
    }
    return;
  }
  die("region info %u: server keeps growing argsz", index);
}
