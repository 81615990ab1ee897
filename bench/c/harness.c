/*
 * bench-harness: the measured side of `npm run bench`. Each subcommand drives the
 * daemon over its socket and the floor (the same client code against a C peer, or
 * plain memcpy/memset), alternating the two in blocks within every run, and prints
 * one JSON object.
 *
 *   rtt     --socket S --iters N --runs K --target REGION:OFFSET:COUNT ... [--pid DAEMON] [--depth D]
 *           [--cpu N]: the client, the floor peer and the daemon all on CPU N (also for
 *           posted, multi and dma), so that both sides run in the same placement
 *   posted  --socket S --msgs N --runs K --region R --offset O
 *   multi   --socket S --msgs N --entries E --runs K --region R --offset O
 *   dma     --socket S --pairs N --runs K
 *   mapped  --socket S --path P --bytes B --runs K
 *   memset  --path P --bytes B --runs K [--entries WINDOW_BYTES]
 *   startup --socket S --reads N -- COMMAND ARGS...   (one run)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client.h"
#include "floor.h"
#include "proto.h"

#define MAX_TARGETS 8
/* How long to wait for a daemon's socket: a hang guard, not a measure (a daemon takes
 * 0.25 s to listen on a host, 5 s and more under user-mode emulation). */
#define CONNECT_TIMEOUT_MS 120000

static long depth = 1; /* requests in flight per round trip (--depth, a diagnostic) */
static long daemon_pid = 0; /* --pid: also report the daemon's CPU time per request */
static int floor_first = 0; /* --floor-first 1: time the floor before the daemon in each run */
static int pin_cpu = -1;    /* --cpu N: run the client, the floor peer and the daemon (--pid) on CPU N */

/* Pins every thread of `pid` (0: this process) to CPU `cpu`. */
static void pin(long pid, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (pid == 0) {
    if (sched_setaffinity(0, sizeof set, &set) != 0) die("sched_setaffinity: %s", strerror(errno));
    return;
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/%ld/task", pid);
  DIR *d = opendir(path);
  if (!d) die("opendir %s: %s", path, strerror(errno));
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (e->d_name[0] == '.') continue;
    if (sched_setaffinity((pid_t)atol(e->d_name), sizeof set, &set) != 0 && errno != ESRCH)
      die("sched_setaffinity %s: %s", e->d_name, strerror(errno));
  }
  closedir(d);
}

/* Nanoseconds the main thread of `pid` has run (schedstat), or 0 when unknown. */
static uint64_t cpu_ns(long pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%ld/schedstat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  unsigned long long ns = 0;
  if (fscanf(f, "%llu", &ns) != 1) ns = 0;
  fclose(f);
  return ns;
}

typedef struct {
  const char *socket, *path;
  long iters, runs, msgs, entries, pairs, reads;
  long long bytes;
  uint32_t region;
  uint64_t offset;
  int ntargets;
  uint32_t t_region[MAX_TARGETS], t_count[MAX_TARGETS];
  uint64_t t_offset[MAX_TARGETS];
  char **command;
} options;

static void parse(int argc, char **argv, options *o) {
  memset(o, 0, sizeof *o);
  o->runs = 5;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) {
      o->command = argv + i + 1;
      return;
    }
    if (i + 1 >= argc) die("%s needs a value", a);
    const char *v = argv[++i];
    if (!strcmp(a, "--socket")) o->socket = v;
    else if (!strcmp(a, "--path")) o->path = v;
    else if (!strcmp(a, "--iters")) o->iters = atol(v);
    else if (!strcmp(a, "--runs")) o->runs = atol(v);
    else if (!strcmp(a, "--msgs")) o->msgs = atol(v);
    else if (!strcmp(a, "--entries")) o->entries = atol(v);
    else if (!strcmp(a, "--pairs")) o->pairs = atol(v);
    else if (!strcmp(a, "--reads")) o->reads = atol(v);
    else if (!strcmp(a, "--pid")) daemon_pid = atol(v);
    else if (!strcmp(a, "--floor-first")) floor_first = atoi(v);
    else if (!strcmp(a, "--cpu")) pin_cpu = atoi(v);
    else if (!strcmp(a, "--wait")) {
      if (!strcmp(v, "poll")) poll_before_recv = 1;
      else if (!strcmp(v, "block")) poll_before_recv = 0;
      else die("--wait poll|block, not %s", v);
    }
    else if (!strcmp(a, "--depth")) {
      depth = atol(v);
      if (depth < 1 || depth > 64) die("--depth must be 1..64");
    }
    else if (!strcmp(a, "--bytes")) o->bytes = atoll(v);
    else if (!strcmp(a, "--region")) o->region = (uint32_t)strtoul(v, NULL, 0);
    else if (!strcmp(a, "--offset")) o->offset = strtoull(v, NULL, 0);
    else if (!strcmp(a, "--target")) {
      if (o->ntargets == MAX_TARGETS) die("too many targets");
      unsigned long r, c;
      unsigned long long off;
      if (sscanf(v, "%lu:%lli:%lu", &r, &off, &c) != 3) die("bad target %s", v);
      o->t_region[o->ntargets] = (uint32_t)r;
      o->t_offset[o->ntargets] = off;
      o->t_count[o->ntargets] = (uint32_t)c;
      o->ntargets++;
    } else die("unknown option %s", a);
  }
}

static void print_series(const char *name, const double *v, long n, int last) {
  printf("\"%s\":[", name);
  for (long i = 0; i < n; i++) printf("%s%.6g", i ? "," : "", v[i]);
  printf("]%s", last ? "" : ",");
}

static void check_reply(const uint8_t *rep, const char *what) {
  if (!(get32(rep + 8) & F_REPLY) || (get32(rep + 8) & F_ERROR)) die("%s: error reply, errno %u", what, get32(rep + 12));
}

/* Each run alternates daemon and floor in this many blocks, so that other work
 * on the machine falls on both alike. */
#define BLOCKS 10

static long block_of(long total, long b) { return total / BLOCKS + (b < total % BLOCKS); }

/* Whether the daemon goes first in block b of a run. */
static int daemon_first(long b) { return (b + floor_first) % 2 == 0; }

/* ---- trapped round trip ------------------------------------------------- */

typedef struct {
  double mean, p50, p99; /* ns per request */
} rtt_stats;

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/* `rounds` round trips of `depth` copies of `req` answered by `replen` bytes each;
 * every round trip is timed into lat[]. Returns the wall time. */
static uint64_t round_trips(int fd, const uint8_t *req, size_t reqlen, size_t replen, long rounds, uint32_t *lat) {
  static uint8_t reqs[64 * (HDR + ACCESS)], rep[64 * (HDR + ACCESS + 4096)];
  for (long k = 0; k < depth; k++) memcpy(reqs + k * reqlen, req, reqlen);
  uint64_t start = now_ns(), t = start;
  for (long i = 0; i < rounds; i++) {
    write_all(fd, reqs, reqlen * (size_t)depth);
    read_exact(fd, rep, replen * (size_t)depth);
    check_reply(rep, "round trip");
    uint64_t u = now_ns(), d = u - t;
    if (lat) lat[i] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
    t = u;
  }
  return t - start;
}

/* The median is what a request costs, robust to the odd one delayed by other
 * work on the machine; the mean and p99 are kept too. */
static rtt_stats latency_stats(uint32_t *lat, long rounds, uint64_t wall) {
  rtt_stats s = {.mean = (double)wall / (double)(rounds * depth)};
  qsort(lat, (size_t)rounds, sizeof *lat, cmp_u32);
  s.p50 = (double)lat[rounds / 2] / (double)depth;
  s.p99 = (double)lat[rounds * 99 / 100] / (double)depth;
  return s;
}

static void cmd_rtt(options *o) {
  if (!o->socket || o->iters <= 0 || o->ntargets == 0) die("rtt needs --socket, --iters and --target");
  int fd = client_connect(o->socket, CONNECT_TIMEOUT_MS);
  client_negotiate(fd);
  floor_peer fl;
  floor_start(&fl);
  size_t cells = (size_t)(o->runs * o->ntargets);
  double *d = calloc(cells, sizeof *d), *f = calloc(cells, sizeof *f);
  double *dm = calloc(cells, sizeof *dm), *fm = calloc(cells, sizeof *fm);
  double *d99 = calloc(cells, sizeof *d99), *f99 = calloc(cells, sizeof *f99);
  double *dc = calloc(cells, sizeof *dc), *fc = calloc(cells, sizeof *fc);
  double *cd = calloc(cells, sizeof *cd), *cf = calloc(cells, sizeof *cf); /* the client's own CPU */
  long rounds = (o->iters + depth - 1) / depth;
  uint32_t *latd = malloc((size_t)rounds * sizeof *latd), *latf = malloc((size_t)rounds * sizeof *latf);
  if (!d || !f || !latd || !latf) die("out of memory");
  uint8_t req[HDR + ACCESS];
  for (int t = 0; t < o->ntargets; t++) {
    if (o->t_count[t] > 4096) die("rtt count above 4096");
    size_t len = msg_region_read(req, 7, o->t_region[t], o->t_offset[t], o->t_count[t]);
    size_t rl = HDR + ACCESS + o->t_count[t];
    round_trips(fd, req, len, rl, rounds / 5 + 1, NULL); /* warm up both sides */
    round_trips(fl.fd, req, len, rl, rounds / 5 + 1, NULL);
  }
  for (long r = 0; r < o->runs; r++) {
    for (int t = 0; t < o->ntargets; t++) {
      size_t len = msg_region_read(req, 7, o->t_region[t], o->t_offset[t], o->t_count[t]);
      size_t rl = HDR + ACCESS + o->t_count[t];
      long k = t * o->runs + r, nd = 0, nf = 0;
      uint64_t walld = 0, wallf = 0, cpud = 0, cpuf = 0, clid = 0, clif = 0;
      for (long b = 0; b < BLOCKS; b++) {
        long n = block_of(rounds, b);
        for (int pass = 0; pass < 2; pass++) {
          int daemon = (pass == 0) == daemon_first(b);
          long pid = daemon ? daemon_pid : (long)fl.pid;
          uint64_t c0 = cpu_ns(pid), s0 = cpu_ns(getpid());
          uint64_t w = round_trips(daemon ? fd : fl.fd, req, len, rl, n, daemon ? latd + nd : latf + nf);
          uint64_t c1 = cpu_ns(pid), s1 = cpu_ns(getpid());
          if (daemon) walld += w, cpud += c1 - c0, clid += s1 - s0, nd += n;
          else wallf += w, cpuf += c1 - c0, clif += s1 - s0, nf += n;
        }
      }
      rtt_stats ds = latency_stats(latd, nd, walld), fs = latency_stats(latf, nf, wallf);
      d[k] = ds.p50, dm[k] = ds.mean, d99[k] = ds.p99;
      f[k] = fs.p50, fm[k] = fs.mean, f99[k] = fs.p99;
      dc[k] = (double)cpud / (double)(nd * depth), fc[k] = (double)cpuf / (double)(nf * depth);
      cd[k] = (double)clid / (double)(nd * depth), cf[k] = (double)clif / (double)(nf * depth);
    }
  }
  printf("{\"targets\":[");
  for (int t = 0; t < o->ntargets; t++) {
    printf("%s{\"region\":%u,\"offset\":%llu,\"count\":%u,", t ? "," : "", o->t_region[t],
           (unsigned long long)o->t_offset[t], o->t_count[t]);
    print_series("daemon_ns", d + t * o->runs, o->runs, 0);
    print_series("daemon_mean_ns", dm + t * o->runs, o->runs, 0);
    print_series("daemon_p99_ns", d99 + t * o->runs, o->runs, 0);
    if (daemon_pid) {
      print_series("daemon_cpu_ns", dc + t * o->runs, o->runs, 0);
      print_series("floor_cpu_ns", fc + t * o->runs, o->runs, 0);
      print_series("client_cpu_with_daemon_ns", cd + t * o->runs, o->runs, 0);
      print_series("client_cpu_with_floor_ns", cf + t * o->runs, o->runs, 0);
    }
    print_series("floor_mean_ns", fm + t * o->runs, o->runs, 0);
    print_series("floor_p99_ns", f99 + t * o->runs, o->runs, 0);
    print_series("floor_ns", f + t * o->runs, o->runs, 1);
    printf("}");
  }
  printf("]}\n");
  floor_stop(&fl);
  close(fd);
}

/* ---- posted writes ------------------------------------------------------ */

#define BATCH 512

/* Sends `batches` copies of `batch`, then one read to wait until all were processed.
 * Returns nanoseconds. */
static uint64_t stream(int fd, const uint8_t *batch, size_t len, long batches) {
  uint8_t req[HDR + ACCESS], rep[HDR + ACCESS + 4];
  size_t rl = msg_region_read(req, 9, 7, 0, 4);
  uint64_t t0 = now_ns();
  for (long i = 0; i < batches; i++) write_all(fd, batch, len);
  write_all(fd, req, rl);
  read_exact(fd, rep, sizeof rep);
  check_reply(rep, "sync read after posted writes");
  return now_ns() - t0;
}

static void cmd_stream(options *o, int multi) {
  if (!o->socket || o->msgs <= 0) die("posted/multi need --socket and --msgs");
  long per = multi ? (o->entries > 0 ? o->entries : 200) : 1;
  uint8_t *batch = malloc((size_t)BATCH * (HDR + 8 + 24 * (size_t)per));
  size_t len = 0;
  for (int i = 0; i < BATCH; i++) {
    if (multi) {
      len += msg_write_multi(batch + len, (uint16_t)i, o->region, o->offset, (uint32_t)per);
    } else {
      uint32_t v = 0xa5a50000u + (uint32_t)i;
      len += msg_region_write(batch + len, (uint16_t)i, o->region, o->offset + 4u * (i % 64), 4, &v, 1);
    }
  }
  long batches = (o->msgs + BATCH - 1) / BATCH;
  if (batches < BLOCKS) batches = BLOCKS;
  int fd = client_connect(o->socket, CONNECT_TIMEOUT_MS);
  client_negotiate(fd);
  floor_peer fl;
  floor_start(&fl);
  stream(fd, batch, len, batches / 5 + 1);
  stream(fl.fd, batch, len, batches / 5 + 1);
  double *d = calloc((size_t)o->runs, sizeof *d), *f = calloc((size_t)o->runs, sizeof *f);
  for (long r = 0; r < o->runs; r++) {
    uint64_t td = 0, tf = 0;
    for (long b = 0; b < BLOCKS; b++) {
      long n = block_of(batches, b);
      if (daemon_first(b)) td += stream(fd, batch, len, n), tf += stream(fl.fd, batch, len, n);
      else tf += stream(fl.fd, batch, len, n), td += stream(fd, batch, len, n);
    }
    double writes = (double)batches * BATCH * (double)per;
    d[r] = writes / ((double)td / 1e9);
    f[r] = writes / ((double)tf / 1e9);
  }
  printf("{\"writes_per_message\":%ld,", per);
  print_series("daemon_per_s", d, o->runs, 0);
  print_series("floor_per_s", f, o->runs, 1);
  printf("}\n");
  floor_stop(&fl);
  close(fd);
}

/* ---- DMA map churn ------------------------------------------------------ */

/* `pairs` DMA_MAP (with `memfd`) + DMA_UNMAP round trips; returns nanoseconds. */
static uint64_t dma_pairs(int fd, int memfd, long pairs, size_t map_size) {
  uint8_t map[HDR + 32], unmap[HDR + 24], rep[HDR + 24];
  uint64_t t0 = now_ns();
  for (long i = 0; i < pairs; i++) {
    uint64_t addr = 0x100000000ull + (uint64_t)(i % 64) * map_size;
    size_t ml = msg_dma_map(map, 3, addr, map_size, 0);
    send_with_fd(fd, map, ml, memfd);
    read_exact(fd, rep, HDR);
    check_reply(rep, "DMA_MAP");
    size_t ul = msg_dma_unmap(unmap, 4, addr, map_size);
    write_all(fd, unmap, ul);
    read_exact(fd, rep, HDR + 24);
    check_reply(rep, "DMA_UNMAP");
  }
  return now_ns() - t0;
}

static void cmd_dma(options *o) {
  if (!o->socket || o->pairs <= 0) die("dma needs --socket and --pairs");
  const size_t map_size = 2u << 20;
  int memfd = memfd_create("bench-guest-ram", MFD_CLOEXEC);
  if (memfd < 0 || ftruncate(memfd, (off_t)map_size) != 0) die("memfd: %s", strerror(errno));
  int fd = client_connect(o->socket, CONNECT_TIMEOUT_MS);
  client_negotiate(fd);
  floor_peer fl;
  floor_start(&fl);
  dma_pairs(fd, memfd, o->pairs / 5 + 1, map_size);
  dma_pairs(fl.fd, memfd, o->pairs / 5 + 1, map_size);
  long pairs = o->pairs < BLOCKS ? BLOCKS : o->pairs;
  double *d = calloc((size_t)o->runs, sizeof *d), *f = calloc((size_t)o->runs, sizeof *f);
  for (long r = 0; r < o->runs; r++) {
    uint64_t td = 0, tf = 0;
    for (long b = 0; b < BLOCKS; b++) {
      long n = block_of(pairs, b);
      if (daemon_first(b)) td += dma_pairs(fd, memfd, n, map_size), tf += dma_pairs(fl.fd, memfd, n, map_size);
      else tf += dma_pairs(fl.fd, memfd, n, map_size), td += dma_pairs(fd, memfd, n, map_size);
    }
    d[r] = (double)pairs / ((double)td / 1e9);
    f[r] = (double)pairs / ((double)tf / 1e9);
  }
  printf("{");
  print_series("daemon_per_s", d, o->runs, 0);
  print_series("floor_per_s", f, o->runs, 1);
  printf("}\n");
  floor_stop(&fl);
  close(fd);
  close(memfd);
}

/* ---- mapped bandwidth --------------------------------------------------- */

static uint64_t copy_ns(void *dst, const void *src, size_t n) {
  uint64_t t0 = now_ns();
  memcpy(dst, src, n);
  __asm__ volatile("" ::: "memory");
  return now_ns() - t0;
}

static void cmd_mapped(options *o) {
  if (!o->socket || !o->path || o->bytes <= 0) die("mapped needs --socket, --path and --bytes");
  int fd = client_connect(o->socket, CONNECT_TIMEOUT_MS);
  client_negotiate(fd);
  region_info bar2;
  client_region_info(fd, 2, &bar2);
  if (bar2.fd < 0 || bar2.nareas == 0) die("BAR2 is not mappable");
  size_t n = (size_t)o->bytes;
  if (bar2.area_size[0] < n) n = bar2.area_size[0];
  /* As QEMU does: the area, at the region's offset in the fd the daemon handed out. */
  uint8_t *via = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, bar2.fd, (off_t)(bar2.offset + bar2.area_offset[0]));
  int direct_fd = open(o->path, O_RDWR | O_CLOEXEC);
  if (direct_fd < 0) die("open %s: %s", o->path, strerror(errno));
  uint8_t *direct = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, direct_fd, (off_t)(bar2.offset + bar2.area_offset[0]));
  uint8_t *buf = aligned_alloc(4096, n);
  if (via == MAP_FAILED || direct == MAP_FAILED || !buf) die("mmap: %s", strerror(errno));
  memset(buf, 0x3c, n);
  /* fault every page in through both mappings before timing */
  memcpy(via, buf, n);
  memcpy(buf, direct, n);
  memcpy(buf, via, n);
  memcpy(direct, buf, n);
  double *rd = calloc((size_t)o->runs, sizeof *rd), *rf = calloc((size_t)o->runs, sizeof *rf);
  double *wd = calloc((size_t)o->runs, sizeof *wd), *wf = calloc((size_t)o->runs, sizeof *wf);
  for (long r = 0; r < o->runs; r++) {
    uint64_t trd = 0, trf = 0, twd = 0, twf = 0;
    for (long b = 0; b < BLOCKS; b++) {
      size_t at = n / BLOCKS * (size_t)b, len = b == BLOCKS - 1 ? n - at : n / BLOCKS;
      if (daemon_first(b + r)) {
        trd += copy_ns(buf + at, via + at, len), trf += copy_ns(buf + at, direct + at, len);
        twd += copy_ns(via + at, buf + at, len), twf += copy_ns(direct + at, buf + at, len);
      } else {
        trf += copy_ns(buf + at, direct + at, len), trd += copy_ns(buf + at, via + at, len);
        twf += copy_ns(direct + at, buf + at, len), twd += copy_ns(via + at, buf + at, len);
      }
    }
    rd[r] = (double)n / (double)trd, rf[r] = (double)n / (double)trf; /* bytes per ns = GB/s */
    wd[r] = (double)n / (double)twd, wf[r] = (double)n / (double)twf;
  }
  printf("{\"bytes\":%zu,", n);
  print_series("read_daemon_gbps", rd, o->runs, 0);
  print_series("read_floor_gbps", rf, o->runs, 0);
  print_series("write_daemon_gbps", wd, o->runs, 0);
  print_series("write_floor_gbps", wf, o->runs, 1);
  printf("}\n");
  close(fd);
}

/* ---- memset floors of the scrub ---------------------------------------- */

/* Zeroes [offset, offset + n) of fd window by window, each mapped (MAP_POPULATE)
 * and unmapped again: what any scrubber of this memory has to do. GB/s. */
static double memset_windows(int fd, uint64_t offset, size_t n, size_t window) {
  uint64_t t0 = now_ns();
  for (size_t done = 0; done < n; done += window) {
    size_t len = n - done < window ? n - done : window;
    uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, (off_t)(offset + done));
    if (p == MAP_FAILED) die("mmap: %s", strerror(errno));
    memset(p, 0, len);
    __asm__ volatile("" ::: "memory");
    munmap(p, len);
  }
  return (double)n / (double)(now_ns() - t0);
}

/* Writes a buffer far larger than the caches: the scrub it is compared with finds its
 * page tables (2 MiB per GiB of 4 KiB pages) cold, long after its last pass, so the
 * floor's must not be left in the cache by the write just before it. */
static void evict_caches(void) {
  static uint8_t *junk;
  static uint8_t byte;
  const size_t n = 256u << 20;
  if (!junk && !(junk = malloc(n))) die("out of memory");
  memset(junk, ++byte, n);
  __asm__ volatile("" ::: "memory");
}

static void cmd_memset(options *o) {
  if (!o->path || o->bytes <= 0) die("memset needs --path and --bytes");
  int fd = open(o->path, O_RDWR | O_CLOEXEC);
  if (fd < 0) die("open %s: %s", o->path, strerror(errno));
  size_t n = (size_t)o->bytes;
  size_t window = o->entries > 0 ? (size_t)o->entries : n; /* --entries doubles as the window size */
  uint8_t *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)o->offset);
  if (p == MAP_FAILED) die("mmap: %s", strerror(errno));
  memset(p, 0x77, n); /* populated, as a tenant leaves it, and mapped */
  double *f = calloc((size_t)o->runs, sizeof *f), *w = calloc((size_t)o->runs, sizeof *w);
  for (long r = 0; r < o->runs; r++) {
    evict_caches();
    uint64_t t0 = now_ns();
    memset(p, 0, n);
    __asm__ volatile("" ::: "memory");
    f[r] = (double)n / (double)(now_ns() - t0);
    w[r] = memset_windows(fd, o->offset, n, window);
  }
  memset(p, 0x77, n); /* and left written, for the scrub that comes next */
  printf("{\"bytes\":%zu,\"window\":%zu,", n, window);
  print_series("in_place_gbps", f, o->runs, 0);
  print_series("windowed_gbps", w, o->runs, 1);
  printf("}\n");
  munmap(p, n);
  close(fd);
}

/* ---- start-up and footprint --------------------------------------------- */

static long status_kb(pid_t pid, const char *field) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) die("open %s: %s", path, strerror(errno));
  long kb = -1;
  size_t fl = strlen(field);
  while (fgets(line, sizeof line, f))
    if (strncmp(line, field, fl) == 0 && line[fl] == ':') kb = atol(line + fl + 1);
  fclose(f);
  return kb;
}

static void cmd_startup(options *o) {
  if (!o->socket || !o->command || !o->command[0]) die("startup needs --socket and -- COMMAND");
  unlink(o->socket);
  uint64_t t0 = now_ns();
  pid_t pid = fork();
  if (pid < 0) die("fork: %s", strerror(errno));
  if (pid == 0) {
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    execvp(o->command[0], o->command);
    _exit(127);
  }
  int fd = client_connect(o->socket, CONNECT_TIMEOUT_MS);
  client_negotiate(fd);
  double ready_ms = (double)(now_ns() - t0) / 1e6;
  long rss_ready = status_kb(pid, "VmRSS");
  uint8_t req[HDR + ACCESS], rep[HDR + ACCESS + 4];
  size_t len = msg_region_read(req, 5, 7, 0, 4);
  for (long i = 0; i < o->reads; i++) {
    write_all(fd, req, len);
    read_exact(fd, rep, sizeof rep);
    check_reply(rep, "read after start-up");
  }
  long rss = status_kb(pid, "VmRSS"), hwm = status_kb(pid, "VmHWM");
  close(fd);
  kill(pid, SIGTERM);
  int st;
  waitpid(pid, &st, 0);
  printf("{\"ready_ms\":%.4f,\"rss_ready_kb\":%ld,\"rss_kb\":%ld,\"hwm_kb\":%ld}\n", ready_ms, rss_ready, rss, hwm);
}

int main(int argc, char **argv) {
  if (argc < 2) die("usage: bench-harness rtt|posted|multi|dma|mapped|memset|startup [options]");
  signal(SIGPIPE, SIG_IGN);
  options o;
  parse(argc, argv, &o);
  if (o.runs <= 0) die("--runs must be positive");
  if (pin_cpu >= 0) { /* before the floor peer is forked: it inherits the affinity */
    pin(0, pin_cpu);
    if (daemon_pid) pin(daemon_pid, pin_cpu);
  }
  const char *c = argv[1];
  if (!strcmp(c, "rtt")) cmd_rtt(&o);
  else if (!strcmp(c, "posted")) cmd_stream(&o, 0);
  else if (!strcmp(c, "multi")) cmd_stream(&o, 1);
  else if (!strcmp(c, "dma")) cmd_dma(&o);
  else if (!strcmp(c, "mapped")) cmd_mapped(&o);
  else if (!strcmp(c, "memset")) cmd_memset(&o);
  else if (!strcmp(c, "startup")) cmd_startup(&o);
  else die("unknown subcommand %s", c);
  return 0;
}
