/*
 * The few vfio-user messages the bench harness sends, and blocking socket I/O.
 * Shared by the measured client and the floor peer so both move the same bytes.
 */
#ifndef BENCH_PROTO_H
#define BENCH_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#define HDR 16
#define ACCESS 16 /* offset u64, region u32, count u32 */

enum {
  CMD_VERSION = 1,
  CMD_DMA_MAP = 2,
  CMD_DMA_UNMAP = 3,
  CMD_REGION_INFO = 5,
  CMD_REGION_READ = 9,
  CMD_REGION_WRITE = 10,
  CMD_WRITE_MULTI = 15,
};

#define F_REPLY 0x1
#define F_NO_REPLY 0x10
#define F_ERROR 0x20

#define MAX_FDS 16

static inline void put16(uint8_t *b, uint16_t v) { b[0] = v; b[1] = v >> 8; }
static inline void put32(uint8_t *b, uint32_t v) { for (int i = 0; i < 4; i++) b[i] = v >> (8 * i); }
static inline void put64(uint8_t *b, uint64_t v) { for (int i = 0; i < 8; i++) b[i] = v >> (8 * i); }
static inline uint16_t get16(const uint8_t *b) { return b[0] | (b[1] << 8); }
static inline uint32_t get32(const uint8_t *b) { return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24); }
static inline uint64_t get64(const uint8_t *b) { return get32(b) | ((uint64_t)get32(b + 4) << 32); }

static inline void put_hdr(uint8_t *b, uint16_t id, uint16_t cmd, uint32_t size, uint32_t flags) {
  put16(b, id);
  put16(b + 2, cmd);
  put32(b + 4, size);
  put32(b + 8, flags);
  put32(b + 12, 0);
}

/* REGION_READ request (32 bytes). */
size_t msg_region_read(uint8_t *b, uint16_t id, uint32_t region, uint64_t offset, uint32_t count);
/* REGION_WRITE request of `count` bytes of `data` (32 + count bytes). */
size_t msg_region_write(uint8_t *b, uint16_t id, uint32_t region, uint64_t offset, uint32_t count,
                        const void *data, int no_reply);
/* REGION_WRITE_MULTI of n 4-byte writes at offset, offset + 4, ... (always NO_REPLY). */
size_t msg_write_multi(uint8_t *b, uint16_t id, uint32_t region, uint64_t offset, uint32_t n);
size_t msg_dma_map(uint8_t *b, uint16_t id, uint64_t addr, uint64_t size, uint64_t fd_offset);
size_t msg_dma_unmap(uint8_t *b, uint16_t id, uint64_t addr, uint64_t size);
/* Size of the reply the server sends to a request of `cmd` (0: no reply). */
size_t reply_size(const uint8_t *req);

/* Blocking I/O; each exits the process with a message on failure. */
void write_all(int fd, const void *buf, size_t len);
void read_exact(int fd, void *buf, size_t len);
void send_with_fd(int fd, const void *buf, size_t len, int pass_fd);
/* Reads one whole message (header + body) into buf (cap bytes); returns its size. The
 * first fd received, if any, is stored in *fd_out (else -1). */
size_t read_message(int fd, uint8_t *buf, size_t cap, int *fd_out);
/* 1 (the default): wait for a reply with poll(POLLIN) before recvmsg, as an
 * event-driven client (QEMU) does; 0: block in recvmsg. See wait_readable(). */
extern int poll_before_recv;
/* poll(POLLIN) on fd when poll_before_recv is set. A task blocked in recvmsg on a
 * UNIX stream is also woken each time its peer consumes what it sent (the
 * write-space wake-up carries no event filter for it), finds nothing and sleeps
 * again: a spurious switch per message that an event-driven client never sees,
 * and one that costs a heavier peer more (it is the one preempted). */
void wait_readable(int fd);

void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
uint64_t now_ns(void);

#endif
