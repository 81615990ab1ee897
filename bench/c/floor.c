/* Floor peer over a socketpair between two processes: the cost of the socket alone. */
#define _GNU_SOURCE
#include "floor.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto.h"

#define FLOOR_BUF (4u << 20)

static void serve(int fd) {
  uint8_t *buf = malloc(FLOOR_BUF);
  uint8_t *reply = calloc(1, HDR + ACCESS + 65536);
  if (!buf || !reply) die("floor: out of memory");
  size_t have = 0;
  for (;;) {
    /* recvmsg with room for fds, as any vfio-user server must receive */
    union {
      struct cmsghdr align;
      char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    } ctl;
    struct iovec iov = {.iov_base = buf + have, .iov_len = FLOOR_BUF - have};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
    wait_readable(fd);
    ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("floor recvmsg: %s", strerror(errno));
    }
    if (n == 0) _exit(0);
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      for (int i = 0; i < count; i++) {
        int rfd;
        memcpy(&rfd, CMSG_DATA(c) + i * sizeof(int), sizeof rfd);
        close(rfd);
      }
    }
    have += (size_t)n;
    size_t at = 0;
    while (have - at >= HDR) {
      uint32_t size = get32(buf + at + 4);
      if (size < HDR || size > FLOOR_BUF) die("floor: bad message size %u", size);
      if (have - at < size) break;
      size_t rs = reply_size(buf + at);
      if (rs > HDR + ACCESS + 65536) die("floor: reply of %zu bytes", rs);
      if (rs > 0) {
        put_hdr(reply, get16(buf + at), get16(buf + at + 2), (uint32_t)rs, F_REPLY);
        write_all(fd, reply, rs);
      }
      at += size;
    }
    memmove(buf, buf + at, have - at);
    have -= at;
  }
}

void floor_start(floor_peer *p) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair: %s", strerror(errno));
  pid_t pid = fork();
  if (pid < 0) die("fork: %s", strerror(errno));
  if (pid == 0) {
    close(sv[0]);
    serve(sv[1]);
  }
  close(sv[1]);
  p->fd = sv[0];
  p->pid = pid;
}

void floor_stop(floor_peer *p) {
  close(p->fd);
  waitpid(p->pid, NULL, 0);
}
