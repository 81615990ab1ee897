/* AF_UNIX stream sockets and SCM_RIGHTS message I/O. */
#include "nv.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Control buffer big enough for one SCM_RIGHTS message of NV_MAX_FDS fds,
 * aligned for struct cmsghdr. */
typedef union {
  struct cmsghdr align;
  char buf[CMSG_SPACE(sizeof(int) * NV_MAX_FDS)];
} nv_cmsg_buf;

static void close_all(const int *fds, int n) {
  for (int i = 0; i < n; i++) close(fds[i]);
}

/* Fills a sockaddr_un from a JS string. A leading NUL selects the Linux
 * abstract namespace. Returns the malloc'ed path (for error messages) or NULL
 * with an exception pending. */
static char *unix_addr(napi_env env, napi_value v, const char *syscall, struct sockaddr_un *sa,
                       socklen_t *salen, bool *abstract) {
  size_t len;
  char *path = nv_get_string(env, v, "path", &len);
  if (path == NULL) return NULL;
  if (len == 0) {
    free(path);
    nv_throw_type(env, "The \"path\" argument must be a non-empty string");
    return NULL;
  }
  *abstract = path[0] == '\0';
  if (!*abstract && strlen(path) != len) {
    free(path);
    nv_throw_type(env, "The \"path\" argument must not contain NUL bytes");
    return NULL;
  }
  /* A filesystem path needs room for its terminating NUL. */
  if (len > sizeof sa->sun_path - (*abstract ? 0 : 1)) {
    nv_throw_errno(env, ENAMETOOLONG, syscall, *abstract ? NULL : path);
    free(path);
    return NULL;
  }
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  memcpy(sa->sun_path, path, len);
  *salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (*abstract ? 0 : 1));
  return path;
}

/* listenUnix(path, backlog, mode): number */
static napi_value listen_unix(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int64_t backlog, mode;
  if (!nv_args(env, info, 3, argv, NULL, NULL)) return NULL;
  if (!nv_get_int(env, argv[1], "backlog", 0, INT32_MAX, &backlog)) return NULL;
  if (!nv_get_int(env, argv[2], "mode", 0, 0777, &mode)) return NULL;

  struct sockaddr_un sa;
  socklen_t salen;
  bool abstract;
  char *path = unix_addr(env, argv[0], "bind", &sa, &salen, &abstract);
  if (path == NULL) return NULL;
  const char *shown = abstract ? NULL : path;

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    nv_throw_errno(env, errno, "socket", NULL);
    free(path);
    return NULL;
  }

  int rc, err;
  if (abstract) {
    rc = bind(fd, (struct sockaddr *)&sa, salen);
    err = errno;
  } else {
    /* Linux creates the socket file with the socket inode's mode masked by
     * the umask, so fchmod() before bind() means the file never exists with
     * more than `mode`, without touching the process-wide umask (which libuv
     * threadpool threads share). If fchmod on the socket is refused, fall
     * back to a temporary umask. chmod() afterwards widens the file to exactly
     * `mode` when the umask removed bits. */
    bool use_umask = fchmod(fd, (mode_t)mode) != 0;
    mode_t old = 0;
    if (use_umask) old = umask((mode_t)(~mode & 0777));
    rc = bind(fd, (struct sockaddr *)&sa, salen);
    err = errno;
    if (use_umask) umask(old);
    if (rc == 0 && chmod(path, (mode_t)mode) != 0) {
      err = errno;
      close(fd);
      nv_throw_errno(env, err, "chmod", path);
      free(path);
      return NULL;
    }
  }
  if (rc != 0) {
    close(fd);
    nv_throw_errno(env, err, "bind", shown);
    free(path);
    return NULL;
  }
  if (listen(fd, (int)backlog) != 0) {
    err = errno;
    close(fd);
    nv_throw_errno(env, err, "listen", shown);
    free(path);
    return NULL;
  }
  free(path);
  return nv_number(env, fd);
}

/* Waits for a blocking connect() interrupted by a signal to finish. */
static int finish_interrupted_connect(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLOUT};
  for (;;) {
    int n = poll(&p, 1, -1);
    if (n > 0) break;
    if (n < 0 && errno != EINTR) return errno;
  }
  int soerr = 0;
  socklen_t len = sizeof soerr;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) return errno;
  return soerr;
}

/* connectUnix(path): number -- blocking connect, then non-blocking fd. */
static napi_value connect_unix(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!nv_args(env, info, 1, argv, NULL, NULL)) return NULL;
  struct sockaddr_un sa;
  socklen_t salen;
  bool abstract;
  char *path = unix_addr(env, argv[0], "connect", &sa, &salen, &abstract);
  if (path == NULL) return NULL;
  const char *shown = abstract ? NULL : path;

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    nv_throw_errno(env, errno, "socket", NULL);
    free(path);
    return NULL;
  }
  int err = 0;
  if (connect(fd, (struct sockaddr *)&sa, salen) != 0) {
    err = errno;
    if (err == EINTR) err = finish_interrupted_connect(fd);
  }
  if (err != 0) {
    close(fd);
    nv_throw_errno(env, err, "connect", shown);
    free(path);
    return NULL;
  }
  free(path);
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
    err = errno;
    close(fd);
    return nv_throw_errno(env, err, "fcntl", NULL);
  }
  return nv_number(env, fd);
}

/* accept(listenFd): number, -1 when no connection is pending. */
static napi_value accept_conn(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int lfd;
  if (!nv_args(env, info, 1, argv, NULL, NULL)) return NULL;
  if (!nv_get_fd(env, argv[0], "listenFd", &lfd)) return NULL;
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) return nv_number(env, fd);
    /* ECONNABORTED: the peer gave up before we got to it; try the next one. */
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return nv_number(env, -1);
    return nv_throw_errno(env, errno, "accept4", NULL);
  }
}

/* peerCred(fd): { pid, uid, gid } */
static napi_value peer_cred(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!nv_args(env, info, 1, argv, NULL, NULL)) return NULL;
  if (!nv_get_fd(env, argv[0], "fd", &fd)) return NULL;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    return nv_throw_errno(env, errno, "getsockopt", NULL);
  napi_value obj, pid, uid, gid;
  NV_CALL(env, napi_create_object(env, &obj));
  NV_CALL(env, napi_create_int64(env, cred.pid, &pid));
  NV_CALL(env, napi_create_int64(env, cred.uid, &uid));
  NV_CALL(env, napi_create_int64(env, cred.gid, &gid));
  NV_CALL(env, napi_set_named_property(env, obj, "pid", pid));
  NV_CALL(env, napi_set_named_property(env, obj, "uid", uid));
  NV_CALL(env, napi_set_named_property(env, obj, "gid", gid));
  return obj;
}

/* socketPair(): [number, number] */
static napi_value socket_pair(napi_env env, napi_callback_info info) {
  (void)info;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
    return nv_throw_errno(env, errno, "socketpair", NULL);
  napi_value arr, a, b;
  if (napi_create_array_with_length(env, 2, &arr) != napi_ok ||
      napi_create_int32(env, sv[0], &a) != napi_ok ||
      napi_create_int32(env, sv[1], &b) != napi_ok ||
      napi_set_element(env, arr, 0, a) != napi_ok || napi_set_element(env, arr, 1, b) != napi_ok) {
    close_all(sv, 2);
    nv_napi_failed(env, "socketPair result");
    return NULL;
  }
  return arr;
}

/* The fd, offset and length arguments (0, 2, 3) that recvMsg and sendMsg share. */
static bool get_fd_range(napi_env env, napi_value *argv, int *fd, int64_t *off, int64_t *len, int64_t min_len) {
  return nv_get_fd(env, argv[0], "fd", fd) &&
         nv_get_int(env, argv[2], "offset", 0, NV_MAX_SAFE_INT, off) &&
         nv_get_int(env, argv[3], "length", min_len, NV_MAX_SAFE_INT, len);
}

/* A message of the one buffer iov points at, and no control data yet. */
static void one_buffer_msg(struct msghdr *msg, struct iovec *iov) {
  memset(msg, 0, sizeof *msg);
  msg->msg_iov = iov;
  msg->msg_iovlen = 1;
}

/* recvMsg(fd, buf, offset, length, fdsOut: Int32Array): number
 * Hot path: no JS allocations on success. fdsOut[0] = number of fds received
 * (stored in fdsOut[1..]), or -1 if fds were lost (control data truncated or
 * more fds than fdsOut has room for); in that case every fd that did arrive
 * has been closed. */
static napi_value recv_msg(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int fd;
  int64_t off, len;
  uint8_t *data;
  size_t size;
  if (!nv_args(env, info, 5, argv, NULL, NULL)) return NULL;
  if (!get_fd_range(env, argv, &fd, &off, &len, 1)) return NULL;
  if (!nv_get_bytes(env, argv[1], "buf", &data, &size)) return NULL;
  if (!nv_check_range(env, off, len, size)) return NULL;

  bool is_ta = false;
  napi_typedarray_type type;
  size_t slots = 0;
  void *fds_ptr = NULL;
  if (napi_is_typedarray(env, argv[4], &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, argv[4], &type, &slots, &fds_ptr, NULL, NULL) != napi_ok ||
      type != napi_int32_array)
    return nv_throw_type(env, "The \"fdsOut\" argument must be an Int32Array");
  if (slots < 1) return nv_throw_range(env, "\"fdsOut\" must have at least one element");
  int32_t *fds_out = fds_ptr;

  nv_cmsg_buf ctl;
  struct iovec iov = {.iov_base = data + off, .iov_len = (size_t)len};
  struct msghdr msg;
  one_buffer_msg(&msg, &iov);
  msg.msg_control = ctl.buf;
  msg.msg_controllen = sizeof ctl.buf;

  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  fds_out[0] = 0;
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return nv_number(env, -1);
    return nv_throw_errno(env, errno, "recvmsg", NULL);
  }

  int got[NV_MAX_FDS];
  int ngot = 0;
  bool lost = (msg.msg_flags & MSG_CTRUNC) != 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char *p = CMSG_DATA(c);
    for (size_t i = 0; i < count; i++) {
      int rfd;
      memcpy(&rfd, p + i * sizeof(int), sizeof rfd);
      if (ngot < NV_MAX_FDS) {
        got[ngot++] = rfd;
      } else { /* cannot happen with our control buffer size, but never leak */
        close(rfd);
        lost = true;
      }
    }
  }
  if (lost || (size_t)ngot > slots - 1) {
    close_all(got, ngot);
    fds_out[0] = -1;
  } else {
    for (int i = 0; i < ngot; i++) fds_out[i + 1] = got[i];
    fds_out[0] = ngot;
  }
  return nv_number(env, n);
}

/* sendMsg(fd, buf, offset, length, fds: number[] | null): number
 * Hot path: no JS allocations when fds is null. */
static napi_value send_msg(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int fd;
  int64_t off, len;
  uint8_t *data;
  size_t size;
  if (!nv_args(env, info, 5, argv, NULL, NULL)) return NULL;
  if (!get_fd_range(env, argv, &fd, &off, &len, 0)) return NULL;

  /* Read fds before taking buf's data pointer: array element access can run
   * JS (accessors), which could detach or unmap buf. */
  int fds[NV_MAX_FDS];
  uint32_t nfds = 0;
  if (!nv_is_nullish(env, argv[4])) {
    bool is_array = false;
    if (napi_is_array(env, argv[4], &is_array) != napi_ok || !is_array)
      return nv_throw_type(env, "The \"fds\" argument must be an array of fds or null");
    NV_CALL(env, napi_get_array_length(env, argv[4], &nfds));
    if (nfds > NV_MAX_FDS)
      return nv_throw_range(env, "At most %d fds can be sent in one message, got %u",
                            NV_MAX_FDS, nfds);
    for (uint32_t i = 0; i < nfds; i++) {
      napi_value el;
      NV_CALL(env, napi_get_element(env, argv[4], i, &el));
      if (!nv_get_fd(env, el, "fds[i]", &fds[i])) return NULL;
    }
    if (nfds > 0 && len == 0)
      return nv_throw_range(env, "Passing fds needs at least one byte of data");
  }
  if (!nv_get_bytes(env, argv[1], "buf", &data, &size)) return NULL;
  if (!nv_check_range(env, off, len, size)) return NULL;

  nv_cmsg_buf ctl;
  struct iovec iov = {.iov_base = data + off, .iov_len = (size_t)len};
  struct msghdr msg;
  one_buffer_msg(&msg, &iov);
  if (nfds > 0) {
    memset(&ctl, 0, sizeof ctl);
    msg.msg_control = ctl.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }

  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return nv_number(env, -1);
    return nv_throw_errno(env, errno, "sendmsg", NULL);
  }
  return nv_number(env, n);
}

/* peerHungUp(fd): boolean -- the peer has closed its end, or at least shut
 * down writing (so a read will come to EOF), or the socket has an error. Never
 * blocks and reads nothing. */
static napi_value peer_hung_up(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!nv_args(env, info, 1, argv, NULL, NULL)) return NULL;
  if (!nv_get_fd(env, argv[0], "fd", &fd)) return NULL;
  struct pollfd p = {.fd = fd, .events = POLLRDHUP};
  int n;
  do {
    n = poll(&p, 1, 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return nv_throw_errno(env, errno, "poll", NULL);
  if (p.revents & POLLNVAL) return nv_throw_errno(env, EBADF, "poll", NULL);
  napi_value out;
  NV_CALL(env, napi_get_boolean(env, (p.revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0, &out));
  return out;
}

bool nv_init_socket(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      NV_FN("listenUnix", listen_unix), NV_FN("connectUnix", connect_unix),
      NV_FN("accept", accept_conn),     NV_FN("peerCred", peer_cred),
      NV_FN("socketPair", socket_pair), NV_FN("recvMsg", recv_msg),
      NV_FN("sendMsg", send_msg),       NV_FN("peerHungUp", peer_hung_up),
  };
  /* the TypeScript side checks its Limits.MAX_MSG_FDS against this */
  return nv_define_functions(env, exports, props, sizeof props / sizeof props[0]) &&
         nv_define_constant(env, exports, "MAX_FDS", NV_MAX_FDS);
}
