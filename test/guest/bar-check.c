/*
 * bar-check: runs inside the test guest (static binary in a busybox initramfs) and checks
 * the BARs of one PCI device through sysfs: /sys/bus/pci/devices/<bdf>/{enable,resource,
 * resourceN}. Built on the host with `gcc -static -O2` by test/guest/bar-check.ts.
 *
 * Output, one line each:
 *   PCI <bdf> <vendor>:<device> class=<class>      (--list)
 *   DEVICE <bdf> <vendor>:<device> | DEVICE none ...
 *   BAR <n> start=.. end=.. flags=.. size=.. [mem|io] [mem64] [prefetch]
 *   READ <bar>@<off>/<width> = <value>             (--read, --reg-read)
 *   WRITE <bar>@<off>/<width> = <value>            (--reg-write)
 *   CHECK <name> PASS|FAIL <details>
 *   BAR-CHECK DONE pass=<n> fail=<m>
 * Exit status 0 when no check failed.
 *
 * Operations run in command-line order. See usage() for the options.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define IORESOURCE_IO 0x00000100ULL
#define IORESOURCE_MEM 0x00000200ULL
#define IORESOURCE_PREFETCH 0x00002000ULL
#define IORESOURCE_MEM_64 0x00100000ULL

#define SYSFS_PCI "/sys/bus/pci/devices"
#define MAX_OPS 256
#define NUM_BARS 6

enum op_kind {
  OP_BAR_SIZE,
  OP_BAR_FLAGS,
  OP_READ,
  OP_EXPECT,
  OP_WRITE,
  OP_EXPECT_FILL,
  OP_WRITE_FILL,
  OP_PADDING,
  OP_PADDING_AUTO,
  OP_REG_READ,
  OP_REG_EXPECT,
  OP_REG_WRITE,
};

struct op {
  enum op_kind kind;
  int bar;        /* OP_BAR_SIZE / OP_BAR_FLAGS */
  uint64_t off;   /* offset, or the size for OP_BAR_SIZE */
  uint64_t value; /* value, length for the fills */
  uint32_t seed;
  int width;      /* access width in bits */
  const char *spec; /* OP_BAR_FLAGS */
};

struct bar {
  uint64_t start, end, flags, size;
  volatile uint8_t *map;
  int map_tried;
  int fd; /* windowed: the resource file, kept open */
};

/* --window: a BAR larger than this is mapped a window at a time, around each access. */
#define MAX_WINDOWS 8
struct window {
  int bar;
  uint64_t off, len;
  volatile uint8_t *map;
};
static uint64_t window_size; /* 0: map BARs whole */
static struct window windows[MAX_WINDOWS];
static int next_window;

static struct op ops[MAX_OPS];
static int nops;
static struct bar bars[NUM_BARS];
static char bdf[64];
static int pass_count, fail_count;
static int mem_bar = 2, reg_bar = 0;
static uint64_t mem_size; /* 0: unknown */

/* ------------------------------------------------------------------------- output */

static void check(const char *name, int ok, const char *fmt, ...) {
  va_list ap;
  printf("CHECK %s %s", name, ok ? "PASS" : "FAIL");
  if (fmt && *fmt) {
    putchar(' ');
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
  }
  putchar('\n');
  if (ok)
    pass_count++;
  else
    fail_count++;
}

static int done(void) {
  printf("BAR-CHECK DONE pass=%d fail=%d\n", pass_count, fail_count);
  fflush(stdout);
  return fail_count ? 1 : 0;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: bar-check [options] [operations]\n"
          "device selection:\n"
          "  --bdf DDDD:BB:DD.F     the device (default: first matching --vendor/--device)\n"
          "  --vendor ID            default 0x10de\n"
          "  --device ID            default: any\n"
          "  --list                 print every PCI device first\n"
          "  --mem-bar N            BAR for the memory operations (default 2)\n"
          "  --reg-bar N            BAR for the --reg-* operations (default 0)\n"
          "  --mem-size N           bytes of memory at the start of the memory BAR\n"
          "  --window N             map a BAR larger than N (a power of two, at least a\n"
          "                         page) N-aligned windows at a time, not whole\n"
          "operations, run in order (numbers: C syntax, K/M/G suffixes allowed;\n"
          "W: access width in bits 8|16|32|64, default 32):\n"
          "  --bar-size B:N         BAR B is N bytes\n"
          "  --bar-flags B:LIST     LIST of mem64,mem32,prefetch,noprefetch,mem,io\n"
          "  --read OFF[:W]         print a value of the memory BAR\n"
          "  --expect OFF:VAL[:W]   memory BAR holds VAL at OFF\n"
          "  --write OFF:VAL[:W]    write VAL at OFF, read it back\n"
          "  --expect-fill OFF:LEN:SEED  32-bit words in [OFF,OFF+LEN) hold the pattern\n"
          "  --write-fill OFF:LEN:SEED   write the pattern there, read it back\n"
          "                         pattern word at BAR offset o (o %% 4 == 0):\n"
          "                         (uint32)((o / 4) * 0x9e3779b1 + SEED)\n"
          "  --padding OFF          padding at OFF reads all ones at 8/16/32/64 bits and\n"
          "                         drops writes of each width\n"
          "  --padding-auto         --padding at: mem size (8-aligned), next page, middle\n"
          "                         of the padding, BAR end - 8 (needs --mem-size)\n"
          "  --reg-read OFF[:W]     print a value of the register BAR\n"
          "  --reg-expect OFF:VAL[:W]\n"
          "  --reg-write OFF:VAL[:W]  write only (no read back)\n");
}

/* ------------------------------------------------------------------------- parsing */

static int parse_num(const char *s, const char **end, uint64_t *out) {
  char *e;
  errno = 0;
  unsigned long long v = strtoull(s, &e, 0);
  if (errno || e == s)
    return -1;
  switch (*e) {
  case 'K': v <<= 10; e++; break;
  case 'M': v <<= 20; e++; break;
  case 'G': v <<= 30; e++; break;
  default: break;
  }
  *out = v;
  *end = e;
  return 0;
}

/* Parse "A:B[:C]" into up to `max` numbers; returns how many, or -1. */
static int parse_tuple(const char *s, uint64_t *vals, int max) {
  int n = 0;
  const char *p = s;
  for (;;) {
    if (n == max)
      return -1;
    if (parse_num(p, &p, &vals[n]))
      return -1;
    n++;
    if (*p == '\0')
      return n;
    if (*p != ':')
      return -1;
    p++;
  }
}

static int width_ok(uint64_t w) { return w == 8 || w == 16 || w == 32 || w == 64; }

static void bad_arg(const char *opt, const char *arg) {
  fprintf(stderr, "bar-check: bad argument for %s: '%s'\n", opt, arg ? arg : "");
  usage(stderr);
  exit(2);
}

static struct op *new_op(enum op_kind kind) {
  if (nops == MAX_OPS) {
    fprintf(stderr, "bar-check: too many operations\n");
    exit(2);
  }
  struct op *o = &ops[nops++];
  memset(o, 0, sizeof(*o));
  o->kind = kind;
  o->width = 32;
  return o;
}

/* ------------------------------------------------------------------------- sysfs */

static int read_file(const char *path, char *buf, size_t len) {
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  size_t n = fread(buf, 1, len - 1, f);
  fclose(f);
  buf[n] = '\0';
  while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
    buf[--n] = '\0';
  return 0;
}

static unsigned long read_hex_attr(const char *dev, const char *attr) {
  char path[512], buf[64];
  snprintf(path, sizeof(path), SYSFS_PCI "/%s/%s", dev, attr);
  if (read_file(path, buf, sizeof(buf)))
    return ~0UL;
  return strtoul(buf, NULL, 16);
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Fills bdf with the first device (sorted by address) that matches. */
static int find_device(int list, unsigned long vendor, long device) {
  DIR *d = opendir(SYSFS_PCI);
  char *names[512];
  int n = 0, found = 0;
  struct dirent *e;
  if (!d) {
    printf("ERROR cannot open " SYSFS_PCI ": %s\n", strerror(errno));
    return 0;
  }
  while ((e = readdir(d)) && n < 512)
    if (e->d_name[0] != '.')
      names[n++] = strdup(e->d_name);
  closedir(d);
  qsort(names, n, sizeof(names[0]), cmp_names);
  for (int i = 0; i < n; i++) {
    unsigned long v = read_hex_attr(names[i], "vendor");
    unsigned long dv = read_hex_attr(names[i], "device");
    unsigned long cls = read_hex_attr(names[i], "class");
    if (list)
      printf("PCI %s %04lx:%04lx class=%06lx\n", names[i], v, dv, cls);
    if (!found && v == vendor && (device < 0 || dv == (unsigned long)device)) {
      snprintf(bdf, sizeof(bdf), "%s", names[i]);
      found = 1;
    }
    free(names[i]);
  }
  return found;
}

static int read_resources(void) {
  char path[512];
  snprintf(path, sizeof(path), SYSFS_PCI "/%s/resource", bdf);
  FILE *f = fopen(path, "r");
  if (!f) {
    check("resource-file", 0, "%s: %s", path, strerror(errno));
    return -1;
  }
  for (int i = 0; i < NUM_BARS; i++) {
    unsigned long long s, e, fl;
    if (fscanf(f, "%llx %llx %llx", &s, &e, &fl) != 3)
      break;
    bars[i].start = s;
    bars[i].end = e;
    bars[i].flags = fl;
    bars[i].size = (e > s || (s && e == s)) ? e - s + 1 : 0;
  }
  fclose(f);
  for (int i = 0; i < NUM_BARS; i++) {
    struct bar *b = &bars[i];
    if (!b->size && !b->flags)
      continue;
    printf("BAR %d start=0x%" PRIx64 " end=0x%" PRIx64 " flags=0x%" PRIx64 " size=0x%" PRIx64
           "%s%s%s\n",
           i, b->start, b->end, b->flags, b->size,
           (b->flags & IORESOURCE_IO) ? " io" : (b->flags & IORESOURCE_MEM) ? " mem" : "",
           (b->flags & IORESOURCE_MEM_64) ? " mem64" : "",
           (b->flags & IORESOURCE_PREFETCH) ? " prefetch" : "");
  }
  return 0;
}

static void enable_device(void) {
  char path[512];
  snprintf(path, sizeof(path), SYSFS_PCI "/%s/enable", bdf);
  int fd = open(path, O_WRONLY);
  int ok = fd >= 0 && write(fd, "1", 1) == 1;
  int err = errno;
  if (fd >= 0)
    close(fd);
  if (ok)
    check("enable", 1, "%s", path);
  else
    check("enable", 0, "%s: %s", path, strerror(err));
}

static volatile uint8_t *map_bar(int n) {
  struct bar *b = &bars[n];
  char name[32], path[512];
  if (b->map_tried)
    return b->map;
  b->map_tried = 1;
  snprintf(name, sizeof(name), "mmap-bar%d", n);
  if (!b->size || !(b->flags & IORESOURCE_MEM)) {
    check(name, 0, "BAR %d is not a memory BAR", n);
    return NULL;
  }
  snprintf(path, sizeof(path), SYSFS_PCI "/%s/resource%d", bdf, n);
  int fd = open(path, O_RDWR | O_SYNC);
  if (fd < 0) {
    check(name, 0, "open %s: %s", path, strerror(errno));
    return NULL;
  }
  if (window_size && b->size > window_size) {
    /* Mapping a 128 GiB BAR whole fills 256 MiB of page tables (4 KiB pages): slow under TCG. */
    b->fd = fd;
    check(name, 1, "%s 0x%" PRIx64 " bytes, mapped 0x%" PRIx64 " at a time", path, b->size,
          window_size);
    b->map = (volatile uint8_t *)MAP_FAILED; /* marks "windowed" */
    return b->map;
  }
  long page = sysconf(_SC_PAGESIZE);
  size_t len = (b->size + page - 1) & ~(uint64_t)(page - 1);
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int err = errno;
  close(fd);
  if (p == MAP_FAILED) {
    check(name, 0, "mmap %s (0x%zx bytes): %s", path, len, strerror(err));
    return NULL;
  }
  check(name, 1, "%s 0x%zx bytes", path, len);
  b->map = p;
  return b->map;
}

/* ------------------------------------------------------------------------- access */

static sigjmp_buf fault_jmp;
static volatile sig_atomic_t fault_armed;
static volatile int fault_sig;

static void on_fault(int sig) {
  if (!fault_armed) {
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  fault_sig = sig;
  siglongjmp(fault_jmp, 1);
}

/* Exact-width volatile loads and stores. */
static uint64_t raw_read(volatile uint8_t *base, uint64_t off, int width) {
  switch (width) {
  case 8: return *(volatile uint8_t *)(base + off);
  case 16: return *(volatile uint16_t *)(base + off);
  case 32: return *(volatile uint32_t *)(base + off);
  default: return *(volatile uint64_t *)(base + off);
  }
}

static void raw_write(volatile uint8_t *base, uint64_t off, int width, uint64_t v) {
  switch (width) {
  case 8: *(volatile uint8_t *)(base + off) = (uint8_t)v; break;
  case 16: *(volatile uint16_t *)(base + off) = (uint16_t)v; break;
  case 32: *(volatile uint32_t *)(base + off) = (uint32_t)v; break;
  default: *(volatile uint64_t *)(base + off) = v; break;
  }
}

/* Returns 0, or -1 with fault_sig set when the access raised SIGBUS/SIGSEGV. */
static int guarded_read(volatile uint8_t *base, uint64_t off, int width, uint64_t *out) {
  if (sigsetjmp(fault_jmp, 1)) {
    fault_armed = 0;
    return -1;
  }
  fault_armed = 1;
  *out = raw_read(base, off, width);
  fault_armed = 0;
  return 0;
}

static int guarded_write(volatile uint8_t *base, uint64_t off, int width, uint64_t v) {
  if (sigsetjmp(fault_jmp, 1)) {
    fault_armed = 0;
    return -1;
  }
  fault_armed = 1;
  raw_write(base, off, width, v);
  fault_armed = 0;
  return 0;
}

static uint64_t width_mask(int width) {
  return width == 64 ? ~0ULL : ((1ULL << width) - 1);
}

static uint32_t pattern_word(uint64_t off, uint32_t seed) {
  return (uint32_t)((uint32_t)(off / 4) * 0x9e3779b1u + seed);
}

/*
 * A base such that base + off .. base + off + len is mapped, for a windowed BAR: the
 * window-aligned span holding the range, mapped on first use; the oldest of MAX_WINDOWS
 * is unmapped to make room.
 */
static volatile uint8_t *window_base(const char *name, int bar, uint64_t off, uint64_t len) {
  uint64_t lo = off & ~(window_size - 1);
  uint64_t hi = (off + len + window_size - 1) & ~(window_size - 1);
  if (hi > bars[bar].size)
    hi = bars[bar].size;
  for (int i = 0; i < MAX_WINDOWS; i++) {
    struct window *w = &windows[i];
    if (w->map && w->bar == bar && w->off <= lo && hi <= w->off + w->len)
      return w->map - w->off;
  }
  struct window *w = &windows[next_window];
  next_window = (next_window + 1) % MAX_WINDOWS;
  if (w->map)
    munmap((void *)w->map, w->len);
  w->map = NULL;
  void *p = mmap(NULL, hi - lo, PROT_READ | PROT_WRITE, MAP_SHARED, bars[bar].fd, (off_t)lo);
  if (p == MAP_FAILED) {
    check(name, 0, "mmap BAR %d [0x%" PRIx64 ", 0x%" PRIx64 "): %s", bar, lo, hi,
          strerror(errno));
    return NULL;
  }
  w->bar = bar;
  w->off = lo;
  w->len = hi - lo;
  w->map = p;
  return w->map - w->off;
}

/* Validates an access; on failure reports the check `name` as failed. */
static volatile uint8_t *access_base(const char *name, int bar, uint64_t off, uint64_t len,
                                     int align) {
  volatile uint8_t *base = map_bar(bar);
  if (!base) {
    check(name, 0, "BAR %d is not mapped", bar);
    return NULL;
  }
  if (off % align) {
    check(name, 0, "offset 0x%" PRIx64 " is not %d-byte aligned", off, align);
    return NULL;
  }
  if (len > bars[bar].size || off > bars[bar].size - len) {
    check(name, 0, "[0x%" PRIx64 ", +0x%" PRIx64 ") is outside BAR %d (0x%" PRIx64 " bytes)",
          off, len, bar, bars[bar].size);
    return NULL;
  }
  if (base == (volatile uint8_t *)MAP_FAILED)
    return window_base(name, bar, off, len);
  return base;
}

/* ------------------------------------------------------------------------- operations */

static void op_bar_size(const struct op *o) {
  char name[32];
  snprintf(name, sizeof(name), "bar%d-size", o->bar);
  uint64_t got = bars[o->bar].size;
  check(name, got == o->off, "size=0x%" PRIx64 " expected=0x%" PRIx64, got, o->off);
}

static void op_bar_flags(const struct op *o) {
  char name[32], spec[128], *save = NULL;
  uint64_t fl = bars[o->bar].flags;
  int ok = 1;
  char bad[256] = "";
  snprintf(name, sizeof(name), "bar%d-flags", o->bar);
  snprintf(spec, sizeof(spec), "%s", o->spec);
  for (char *t = strtok_r(spec, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    int good;
    if (!strcmp(t, "mem64"))
      good = (fl & IORESOURCE_MEM) && (fl & IORESOURCE_MEM_64);
    else if (!strcmp(t, "mem32"))
      good = (fl & IORESOURCE_MEM) && !(fl & IORESOURCE_MEM_64);
    else if (!strcmp(t, "prefetch"))
      good = (fl & IORESOURCE_PREFETCH) != 0;
    else if (!strcmp(t, "noprefetch"))
      good = !(fl & IORESOURCE_PREFETCH);
    else if (!strcmp(t, "mem"))
      good = (fl & IORESOURCE_MEM) != 0;
    else if (!strcmp(t, "io"))
      good = (fl & IORESOURCE_IO) != 0;
    else
      good = 0;
    if (!good) {
      ok = 0;
      size_t l = strlen(bad);
      snprintf(bad + l, sizeof(bad) - l, "%s%s", l ? "," : "", t);
    }
  }
  check(name, ok, "flags=0x%" PRIx64 " want=%s%s%s", fl, o->spec, ok ? "" : " not-met=", bad);
}

static void op_read(const struct op *o, int bar, const char *what) {
  char name[64];
  uint64_t v;
  snprintf(name, sizeof(name), "%s%d@0x%" PRIx64, what, o->width, o->off);
  volatile uint8_t *base = access_base(name, bar, o->off, o->width / 8, o->width / 8);
  if (!base)
    return;
  if (guarded_read(base, o->off, o->width, &v))
    check(name, 0, "signal %d on read", fault_sig);
  else
    printf("READ bar%d@0x%" PRIx64 "/%d = 0x%" PRIx64 "\n", bar, o->off, o->width, v);
}

static void op_expect(const struct op *o, int bar, const char *what) {
  char name[64];
  uint64_t v, want = o->value & width_mask(o->width);
  snprintf(name, sizeof(name), "%s%d@0x%" PRIx64, what, o->width, o->off);
  volatile uint8_t *base = access_base(name, bar, o->off, o->width / 8, o->width / 8);
  if (!base)
    return;
  if (guarded_read(base, o->off, o->width, &v))
    check(name, 0, "signal %d on read", fault_sig);
  else
    check(name, v == want, "got=0x%" PRIx64 " expected=0x%" PRIx64, v, want);
}

static void op_write(const struct op *o, int bar, const char *what, int readback) {
  char name[64];
  uint64_t v, val = o->value & width_mask(o->width);
  snprintf(name, sizeof(name), "%s%d@0x%" PRIx64, what, o->width, o->off);
  volatile uint8_t *base = access_base(name, bar, o->off, o->width / 8, o->width / 8);
  if (!base)
    return;
  if (guarded_write(base, o->off, o->width, val)) {
    check(name, 0, "signal %d on write", fault_sig);
    return;
  }
  if (!readback) {
    printf("WRITE bar%d@0x%" PRIx64 "/%d = 0x%" PRIx64 "\n", bar, o->off, o->width, val);
    return;
  }
  if (guarded_read(base, o->off, o->width, &v))
    check(name, 0, "signal %d on read back", fault_sig);
  else
    check(name, v == val, "wrote=0x%" PRIx64 " read-back=0x%" PRIx64, val, v);
}

/* Compares (and first writes, for write-fill) the pattern over [off, off + len). */
static void op_fill(const struct op *o, int write_first) {
  char name[80];
  uint64_t off = o->off, len = o->value;
  static volatile uint64_t cur; /* survives siglongjmp */
  snprintf(name, sizeof(name), "%s@0x%" PRIx64 "+0x%" PRIx64,
           write_first ? "write-fill" : "expect-fill", off, len);
  volatile uint8_t *base = access_base(name, mem_bar, off, len, 4);
  if (!base)
    return;
  if (len % 4) {
    check(name, 0, "length 0x%" PRIx64 " is not a multiple of 4", len);
    return;
  }
  uint64_t mismatches = 0, first_bad = 0;
  uint32_t first_got = 0, first_want = 0;
  cur = off;
  if (sigsetjmp(fault_jmp, 1)) {
    fault_armed = 0;
    check(name, 0, "signal %d at offset 0x%" PRIx64, fault_sig, (uint64_t)cur);
    return;
  }
  fault_armed = 1;
  if (write_first)
    for (cur = off; cur < off + len; cur += 4)
      *(volatile uint32_t *)(base + cur) = pattern_word(cur, o->seed);
  for (cur = off; cur < off + len; cur += 4) {
    uint32_t got = *(volatile uint32_t *)(base + cur);
    uint32_t want = pattern_word(cur, o->seed);
    if (got != want) {
      if (!mismatches) {
        first_bad = cur;
        first_got = got;
        first_want = want;
      }
      mismatches++;
    }
  }
  fault_armed = 0;
  if (mismatches)
    check(name, 0,
          "words=%" PRIu64 " mismatches=%" PRIu64 " first=0x%" PRIx64 " got=0x%08x expected=0x%08x",
          len / 4, mismatches, first_bad, first_got, first_want);
  else
    check(name, 1, "words=%" PRIu64 " seed=0x%08x", len / 4, o->seed);
}

static void op_padding(uint64_t off) {
  static const int widths[] = {8, 16, 32, 64};
  static const uint64_t junk[] = {0xa5, 0x5aa5, 0x12345678, 0x0123456789abcdefULL};
  char name[64];
  uint64_t v;

  if (mem_size && off < mem_size) {
    snprintf(name, sizeof(name), "padding@0x%" PRIx64, off);
    check(name, 0, "offset is inside the memory (mem size 0x%" PRIx64 ")", mem_size);
    return;
  }
  for (int i = 0; i < 4; i++) {
    int w = widths[i];
    snprintf(name, sizeof(name), "padding-read%d@0x%" PRIx64, w, off);
    volatile uint8_t *base = access_base(name, mem_bar, off, 8, 8);
    if (!base)
      return;
    if (guarded_read(base, off, w, &v))
      check(name, 0, "signal %d on read", fault_sig);
    else
      check(name, v == width_mask(w), "got=0x%" PRIx64, v);
  }
  /* Writes of every width are dropped: the whole 8 bytes still read all ones. */
  snprintf(name, sizeof(name), "padding-write@0x%" PRIx64, off);
  volatile uint8_t *base = access_base(name, mem_bar, off, 8, 8);
  if (!base)
    return;
  char bad[256] = "";
  for (int i = 0; i < 4; i++) {
    uint64_t v32, v64;
    if (guarded_write(base, off, widths[i], junk[i]) ||
        guarded_read(base, off, 32, &v32) || guarded_read(base, off, 64, &v64)) {
      check(name, 0, "signal %d after a %d-bit write", fault_sig, widths[i]);
      return;
    }
    if (v32 != 0xffffffffULL || v64 != ~0ULL) {
      size_t l = strlen(bad);
      snprintf(bad + l, sizeof(bad) - l, " after-w%d: r32=0x%" PRIx64 " r64=0x%" PRIx64,
               widths[i], v32, v64);
    }
  }
  check(name, bad[0] == '\0', "%s", bad[0] ? bad + 1 : "w8/w16/w32/w64 dropped");
}

static void op_padding_auto(void) {
  uint64_t bar_size = bars[mem_bar].size;
  uint64_t cand[4];
  int n = 0;
  if (!mem_size) {
    check("padding-auto", 0, "needs --mem-size");
    return;
  }
  if (mem_size >= bar_size) {
    check("padding-auto", 1, "no padding: mem size 0x%" PRIx64 " >= BAR size 0x%" PRIx64,
          mem_size, bar_size);
    return;
  }
  uint64_t first = (mem_size + 7) & ~7ULL;
  uint64_t page = (mem_size + 4095) & ~4095ULL;
  uint64_t mid = (first + (bar_size - first) / 2) & ~7ULL;
  uint64_t last = bar_size - 8;
  uint64_t all[4] = {first, page, mid, last};
  for (int i = 0; i < 4; i++) {
    int dup = all[i] + 8 > bar_size;
    for (int j = 0; j < n; j++)
      dup |= cand[j] == all[i];
    if (!dup)
      cand[n++] = all[i];
  }
  for (int i = 0; i < n; i++)
    op_padding(cand[i]);
}

/* ------------------------------------------------------------------------- main */

int main(int argc, char **argv) {
  unsigned long vendor = 0x10de;
  long device = -1;
  int list = 0;
  const char *want_bdf = NULL;

  setvbuf(stdout, NULL, _IOLBF, 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_fault;
  sigaction(SIGBUS, &sa, NULL);
  sigaction(SIGSEGV, &sa, NULL);

  for (int i = 1; i < argc; i++) {
    const char *opt = argv[i];
    const char *arg = i + 1 < argc ? argv[i + 1] : NULL;
    uint64_t t[3];
    int n;
#define NEED_ARG()                                                                                 \
  do {                                                                                             \
    if (!arg)                                                                                      \
      bad_arg(opt, arg);                                                                           \
    i++;                                                                                           \
  } while (0)
    if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(opt, "--list")) {
      list = 1;
    } else if (!strcmp(opt, "--padding-auto")) {
      new_op(OP_PADDING_AUTO);
    } else if (!strcmp(opt, "--bdf")) {
      NEED_ARG();
      want_bdf = arg;
    } else if (!strcmp(opt, "--vendor") || !strcmp(opt, "--device") ||
               !strcmp(opt, "--mem-bar") || !strcmp(opt, "--reg-bar") ||
               !strcmp(opt, "--mem-size") || !strcmp(opt, "--padding") ||
               !strcmp(opt, "--window")) {
      NEED_ARG();
      if (parse_tuple(arg, t, 1) != 1)
        bad_arg(opt, arg);
      if (!strcmp(opt, "--vendor"))
        vendor = t[0];
      else if (!strcmp(opt, "--device"))
        device = (long)t[0];
      else if (!strcmp(opt, "--mem-size"))
        mem_size = t[0];
      else if (!strcmp(opt, "--padding"))
        new_op(OP_PADDING)->off = t[0];
      else if (!strcmp(opt, "--window")) {
        if (t[0] < (uint64_t)sysconf(_SC_PAGESIZE) || (t[0] & (t[0] - 1)))
          bad_arg(opt, arg);
        window_size = t[0];
      }
      else if (t[0] >= NUM_BARS)
        bad_arg(opt, arg);
      else if (!strcmp(opt, "--mem-bar"))
        mem_bar = (int)t[0];
      else
        reg_bar = (int)t[0];
    } else if (!strcmp(opt, "--bar-size")) {
      NEED_ARG();
      if (parse_tuple(arg, t, 2) != 2 || t[0] >= NUM_BARS)
        bad_arg(opt, arg);
      struct op *o = new_op(OP_BAR_SIZE);
      o->bar = (int)t[0];
      o->off = t[1];
    } else if (!strcmp(opt, "--bar-flags")) {
      NEED_ARG();
      const char *colon = strchr(arg, ':');
      const char *end;
      if (!colon || parse_num(arg, &end, &t[0]) || end != colon || t[0] >= NUM_BARS)
        bad_arg(opt, arg);
      struct op *o = new_op(OP_BAR_FLAGS);
      o->bar = (int)t[0];
      o->spec = colon + 1;
    } else if (!strcmp(opt, "--read") || !strcmp(opt, "--reg-read")) {
      NEED_ARG();
      n = parse_tuple(arg, t, 2);
      if (n < 1 || (n == 2 && !width_ok(t[1])))
        bad_arg(opt, arg);
      struct op *o = new_op(!strcmp(opt, "--read") ? OP_READ : OP_REG_READ);
      o->off = t[0];
      if (n == 2)
        o->width = (int)t[1];
    } else if (!strcmp(opt, "--expect") || !strcmp(opt, "--write") ||
               !strcmp(opt, "--reg-expect") || !strcmp(opt, "--reg-write")) {
      NEED_ARG();
      n = parse_tuple(arg, t, 3);
      if (n < 2 || (n == 3 && !width_ok(t[2])))
        bad_arg(opt, arg);
      enum op_kind k = !strcmp(opt, "--expect")       ? OP_EXPECT
                       : !strcmp(opt, "--write")      ? OP_WRITE
                       : !strcmp(opt, "--reg-expect") ? OP_REG_EXPECT
                                                      : OP_REG_WRITE;
      struct op *o = new_op(k);
      o->off = t[0];
      o->value = t[1];
      if (n == 3)
        o->width = (int)t[2];
    } else if (!strcmp(opt, "--expect-fill") || !strcmp(opt, "--write-fill")) {
      NEED_ARG();
      if (parse_tuple(arg, t, 3) != 3 || t[2] > 0xffffffffULL)
        bad_arg(opt, arg);
      struct op *o = new_op(!strcmp(opt, "--expect-fill") ? OP_EXPECT_FILL : OP_WRITE_FILL);
      o->off = t[0];
      o->value = t[1];
      o->seed = (uint32_t)t[2];
    } else {
      fprintf(stderr, "bar-check: unknown option '%s'\n", opt);
      usage(stderr);
      return 2;
    }
#undef NEED_ARG
  }

  int found;
  if (want_bdf) {
    char path[512];
    struct stat st;
    if (list)
      find_device(1, vendor, device);
    snprintf(bdf, sizeof(bdf), "%s", want_bdf);
    snprintf(path, sizeof(path), SYSFS_PCI "/%s", bdf);
    found = stat(path, &st) == 0;
  } else {
    found = find_device(list, vendor, device);
  }
  if (!found) {
    if (want_bdf)
      printf("DEVICE none bdf=%s\n", want_bdf);
    else if (device < 0)
      printf("DEVICE none vendor=0x%04lx\n", vendor);
    else
      printf("DEVICE none vendor=0x%04lx device=0x%04lx\n", vendor, (unsigned long)device);
    if (nops)
      check("device", 0, "no matching PCI device");
    return done();
  }
  printf("DEVICE %s %04lx:%04lx\n", bdf, read_hex_attr(bdf, "vendor"),
         read_hex_attr(bdf, "device"));
  enable_device();
  if (read_resources())
    return done();

  for (int i = 0; i < nops; i++) {
    const struct op *o = &ops[i];
    switch (o->kind) {
    case OP_BAR_SIZE: op_bar_size(o); break;
    case OP_BAR_FLAGS: op_bar_flags(o); break;
    case OP_READ: op_read(o, mem_bar, "read"); break;
    case OP_EXPECT: op_expect(o, mem_bar, "expect"); break;
    case OP_WRITE: op_write(o, mem_bar, "write", 1); break;
    case OP_EXPECT_FILL: op_fill(o, 0); break;
    case OP_WRITE_FILL: op_fill(o, 1); break;
    case OP_PADDING: op_padding(o->off); break;
    case OP_PADDING_AUTO: op_padding_auto(); break;
    case OP_REG_READ: op_read(o, reg_bar, "reg-read"); break;
    case OP_REG_EXPECT: op_expect(o, reg_bar, "reg-expect"); break;
    case OP_REG_WRITE: op_write(o, reg_bar, "reg-write", 0); break;
    }
  }
  return done();
}
