/* Message builders and blocking socket I/O for the bench harness. */
#define _GNU_SOURCE
#include "proto.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "bench-harness: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(1);
}

uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

size_t msg_region_read(uint8_t *b, uint16_t id, uint32_t region, uint64_t offset, uint32_t count) {
  put_hdr(b, id, CMD_REGION_READ, HDR + ACCESS, 0);
  put64(b + HDR, offset);
  put32(b + HDR + 8, region);
  put32(b + HDR + 12, count);
  return HDR + ACCESS;
}

size_t msg_region_write(uint8_t *b, uint16_t id, uint32_t region, uint64_t offset, uint32_t count,
                        const void *data, int no_reply) {
  put_hdr(b, id, CMD_REGION_WRITE, HDR + ACCESS + count, no_reply ? F_NO_REPLY : 0);
  put64(b + HDR, offset);
  put32(b + HDR + 8, region);
  put32(b + HDR + 12, count);
  memcpy(b + HDR + ACCESS, data, count);
  return HDR + ACCESS + count;
}

size_t msg_write_multi(uint8_t *b, uint16_t id, uint32_t region, uint64_t offset, uint32_t n) {
  size_t size = HDR + 8 + (size_t)n * 24;
  put_hdr(b, id, CMD_WRITE_MULTI, (uint32_t)size, F_NO_REPLY);
  put64(b + HDR, n);
  for (uint32_t i = 0; i < n; i++) {
    uint8_t *e = b + HDR + 8 + (size_t)i * 24;
    put64(e, offset + 4ull * i);
    put32(e + 8, region);
    put32(e + 12, 4);
    put64(e + 16, 0x5a5a0000u + i);
  }
  return size;
}

size_t msg_dma_map(uint8_t *b, uint16_t id, uint64_t addr, uint64_t size, uint64_t fd_offset) {
  put_hdr(b, id, CMD_DMA_MAP, HDR + 32, 0);
  put32(b + HDR, 32);
  put32(b + HDR + 4, 3); /* READ | WRITE */
  put64(b + HDR + 8, fd_offset);
  put64(b + HDR + 16, addr);
  put64(b + HDR + 24, size);
  return HDR + 32;
}

size_t msg_dma_unmap(uint8_t *b, uint16_t id, uint64_t addr, uint64_t size) {
  put_hdr(b, id, CMD_DMA_UNMAP, HDR + 24, 0);
  put32(b + HDR, 24);
  put32(b + HDR + 4, 0);
  put64(b + HDR + 8, addr);
  put64(b + HDR + 16, size);
  return HDR + 24;
}

size_t reply_size(const uint8_t *req) {
  if (get32(req + 8) & F_NO_REPLY) return 0;
  switch (get16(req + 2)) {
    case CMD_REGION_READ: return HDR + ACCESS + get32(req + HDR + 12);
    case CMD_REGION_WRITE: return HDR + ACCESS;
    case CMD_DMA_UNMAP: return HDR + 24;
    default: return HDR;
  }
}

void write_all(int fd, const void *buf, size_t len) {
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("send: %s", strerror(errno));
    }
    p += n;
    len -= (size_t)n;
  }
}

int poll_before_recv = 1;

void wait_readable(int fd) {
  if (!poll_before_recv) return;
  struct pollfd p = {.fd = fd, .events = POLLIN};
  while (poll(&p, 1, -1) < 0)
    if (errno != EINTR) die("poll: %s", strerror(errno));
}

void read_exact(int fd, void *buf, size_t len) {
  uint8_t *p = buf;
  while (len > 0) {
    wait_readable(fd);
    ssize_t n = read(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("read: %s", strerror(errno));
    }
    if (n == 0) die("read: peer closed");
    p += n;
    len -= (size_t)n;
  }
}

void send_with_fd(int fd, const void *buf, size_t len, int pass_fd) {
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int))];
  } ctl;
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) die("sendmsg: %s", strerror(errno));
  if ((size_t)n < len) write_all(fd, (const uint8_t *)buf + n, len - (size_t)n);
}

/* recvmsg that keeps the first fd received and closes any others. */
static ssize_t recv_some(int fd, void *buf, size_t len, int *fd_out) {
  wait_readable(fd);
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
  } ctl;
  struct iovec iov = {.iov_base = buf, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) die("recvmsg: %s", strerror(errno));
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    for (int i = 0; i < count; i++) {
      int rfd;
      memcpy(&rfd, CMSG_DATA(c) + i * sizeof(int), sizeof rfd);
      if (*fd_out < 0) *fd_out = rfd;
      else close(rfd);
    }
  }
  return n;
}

size_t read_message(int fd, uint8_t *buf, size_t cap, int *fd_out) {
  *fd_out = -1;
  size_t got = 0;
  while (got < HDR) {
    ssize_t n = recv_some(fd, buf + got, HDR - got, fd_out);
    if (n == 0) die("read_message: peer closed");
    got += (size_t)n;
  }
  size_t size = get32(buf + 4);
  if (size < HDR || size > cap) die("read_message: message of %zu bytes", size);
  while (got < size) {
    ssize_t n = recv_some(fd, buf + got, size - got, fd_out);
    if (n == 0) die("read_message: peer closed");
    got += (size_t)n;
  }
  return size;
}
