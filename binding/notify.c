/* The service manager's side channels Node cannot reach: sd_notify datagrams
 * (AF_UNIX SOCK_DGRAM, filesystem or abstract address) and the listening
 * socket systemd hands over on socket activation. */
#include "nv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* NOTIFY_SOCKET syntax: "/path" for a filesystem socket, "@name" for the
 * abstract namespace. Returns false with an exception pending. */
static bool notify_addr(napi_env env, napi_value v, const char *syscall, struct sockaddr_un *sa,
                        socklen_t *salen) {
  size_t len;
  char *text = nv_get_string(env, v, "address", &len);
  if (text == NULL) return false;
  bool ok = false;
  if (len < 2 || (text[0] != '/' && text[0] != '@') || strlen(text) != len) {
    nv_throw_errno(env, EAFNOSUPPORT, syscall, text);
  } else if (len > sizeof sa->sun_path - (text[0] == '/' ? 1 : 0)) {
    nv_throw_errno(env, ENAMETOOLONG, syscall, text);
  } else {
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, text, len);
    /* An abstract address is exactly its bytes, no terminating NUL. */
    if (text[0] == '@') sa->sun_path[0] = '\0';
    *salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (text[0] == '/' ? 1 : 0));
    ok = true;
  }
  free(text);
  return ok;
}

/* notifySend(address, message: string): void -- one datagram, like
 * sd_notify(): a fresh socket per message, so nothing stays open between
 * watchdog pings. */
static napi_value notify_send(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!nv_args(env, info, 2, argv, NULL, NULL)) return NULL;
  struct sockaddr_un sa;
  socklen_t salen;
  if (!notify_addr(env, argv[0], "sendto", &sa, &salen)) return NULL;
  size_t len;
  char *msg = nv_get_string(env, argv[1], "message", &len);
  if (msg == NULL) return NULL;

  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    free(msg);
    return nv_throw_errno(env, errno, "socket", NULL);
  }
  ssize_t n;
  do {
    n = sendto(fd, msg, len, MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
  } while (n < 0 && errno == EINTR);
  int err = errno;
  close(fd);
  free(msg);
  if (n < 0) return nv_throw_errno(env, err, "sendto", NULL);
  if ((size_t)n != len) return nv_throw_errno(env, EMSGSIZE, "sendto", NULL);
  return nv_undefined(env);
}

/* notifyListen(address): number -- a bound, non-blocking datagram socket that
 * receives what notifySend sends (the service manager's end, for tests and
 * supervisors). Read it with recvMsg. */
static napi_value notify_listen(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!nv_args(env, info, 1, argv, NULL, NULL)) return NULL;
  struct sockaddr_un sa;
  socklen_t salen;
  if (!notify_addr(env, argv[0], "bind", &sa, &salen)) return NULL;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return nv_throw_errno(env, errno, "socket", NULL);
  if (bind(fd, (struct sockaddr *)&sa, salen) != 0) {
    int err = errno;
    close(fd);
    return nv_throw_errno(env, err, "bind", sa.sun_path[0] == '/' ? sa.sun_path : NULL);
  }
  return nv_number(env, fd);
}

/* adoptListener(fd): string -- checks that an inherited fd is a listening
 * AF_UNIX stream socket, makes it non-blocking and close-on-exec (systemd
 * passes it with neither), and returns its address: a path, "@name" for an
 * abstract one, "" when unnamed. */
static napi_value adopt_listener(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!nv_args(env, info, 1, argv, NULL, NULL)) return NULL;
  if (!nv_get_fd(env, argv[0], "fd", &fd)) return NULL;

  int domain = 0, type = 0, listening = 0;
  socklen_t len = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0)
    return nv_throw_errno(env, errno, "getsockopt", NULL);
  len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
    return nv_throw_errno(env, errno, "getsockopt", NULL);
  len = sizeof listening;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0)
    return nv_throw_errno(env, errno, "getsockopt", NULL);
  if (domain != AF_UNIX) return nv_throw_errno(env, EAFNOSUPPORT, "adoptListener", NULL);
  if (type != SOCK_STREAM) return nv_throw_errno(env, EPROTOTYPE, "adoptListener", NULL);
  if (!listening) return nv_throw_errno(env, EINVAL, "adoptListener", NULL);

  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) return nv_throw_errno(env, errno, "fcntl", NULL);
  int fdfl = fcntl(fd, F_GETFD);
  if (fdfl < 0 || fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) != 0) return nv_throw_errno(env, errno, "fcntl", NULL);

  struct sockaddr_un sa;
  socklen_t salen = sizeof sa;
  memset(&sa, 0, sizeof sa);
  if (getsockname(fd, (struct sockaddr *)&sa, &salen) != 0)
    return nv_throw_errno(env, errno, "getsockname", NULL);
  size_t n = salen > offsetof(struct sockaddr_un, sun_path) ? salen - offsetof(struct sockaddr_un, sun_path) : 0;
  char name[sizeof sa.sun_path + 1];
  if (n > 0 && sa.sun_path[0] == '\0') {
    name[0] = '@';
    memcpy(name + 1, sa.sun_path + 1, n - 1);
    name[n] = '\0';
  } else {
    memcpy(name, sa.sun_path, n);
    name[n] = '\0';
    n = strlen(name);
  }
  napi_value r;
  NV_CALL(env, napi_create_string_utf8(env, name, n, &r));
  return r;
}

bool nv_init_notify(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      NV_FN("notifySend", notify_send),
      NV_FN("notifyListen", notify_listen),
      NV_FN("adoptListener", adopt_listener),
  };
  return nv_define_functions(env, exports, props, sizeof props / sizeof props[0]);
}
