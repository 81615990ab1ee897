/* The floor peer: a C process that frames vfio-user messages and answers each one
 * that wants a reply with a reply of the right size, and does nothing else. */
#ifndef BENCH_FLOOR_H
#define BENCH_FLOOR_H

#include <sys/types.h>

typedef struct {
  int fd;    /* our end of the socket pair */
  pid_t pid; /* the peer process */
} floor_peer;

void floor_start(floor_peer *p);
void floor_stop(floor_peer *p);

#endif
