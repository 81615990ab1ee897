/*
 * Copies and fills through mappings whose pages can go away under us.
 *
 * A client holds the fd of every BAR it maps and can truncate a file backing
 * (or punch huge pages out of one); the daemon's next load or store through
 * its own mapping of the lost range then raises SIGBUS, whose default action
 * would end the daemon. So every access the daemon makes through such a
 * mapping runs here under a guard: a SIGBUS handler (installed once per
 * process, chaining to whatever handler was there before) checks that the
 * faulting thread has a guard armed and that the fault address lies inside
 * the guarded range, and if so jumps back out of the copy with an error code.
 * Any other SIGBUS goes on to the previous handler, or to the default action.
 *
 * Cost on the normal path: a sigsetjmp that saves no signal mask (a few
 * register stores, no syscall) and two thread-local stores. The mask is only
 * touched after a fault: leaving the handler by siglongjmp keeps SIGBUS
 * blocked, so it is unblocked again there.
 *
 * Only POSIX signal handling (sigaction, SA_SIGINFO, sigsetjmp/siglongjmp)
 * and an initial-exec thread-local (no allocation on first use from a signal
 * handler) are used; the same code runs on x86-64 and aarch64.
 */
#include "nv.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>

typedef struct {
  sigjmp_buf env;
  uintptr_t lo[2], hi[2]; /* guarded byte ranges: [lo, hi) */
  volatile int si_code;   /* set by the handler before it jumps */
} nv_guard;

/* The guard armed on this thread, if any. initial-exec: reading it in the
 * handler is a load relative to the thread pointer, never a call into the
 * dynamic linker (which may allocate). */
static __thread nv_guard *volatile armed __attribute__((tls_model("initial-exec")));

static struct sigaction previous;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static int install_errno;

static bool in_guarded_range(const nv_guard *g, uintptr_t a) {
  return (a >= g->lo[0] && a < g->hi[0]) || (a >= g->lo[1] && a < g->hi[1]);
}

/* A SIGBUS that is not ours: hand it to what was installed before. */
static void chain(int sig, siginfo_t *info, void *uctx) {
  if (previous.sa_flags & SA_SIGINFO) {
    if (previous.sa_sigaction != NULL) {
      previous.sa_sigaction(sig, info, uctx);
      return;
    }
  } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
    previous.sa_handler(sig);
    return;
  }
  /* kill(), sigqueue(), tgkill(); and a memory error found outside any access
   * (action optional), which no instruction will raise again */
  bool sent = info == NULL || info->si_code <= 0;
#ifdef BUS_MCEERR_AO
  if (info != NULL && info->si_code == BUS_MCEERR_AO) sent = true;
#endif
  if (sent && previous.sa_handler == SIG_IGN) return;
  /* The default action. A fault returns to the faulting instruction, which
   * faults again and now ends the process (with a core dump, as it would have
   * without us); a sent signal is raised again, unblocked. */
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, NULL);
  if (sent) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
  }
}

static void on_sigbus(int sig, siginfo_t *info, void *uctx) {
  nv_guard *g = armed;
  if (g != NULL && info != NULL && info->si_code > 0 && in_guarded_range(g, (uintptr_t)info->si_addr)) {
    armed = NULL;
    g->si_code = info->si_code;
    siglongjmp(g->env, 1);
  }
  chain(sig, info, uctx);
}

static void install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGBUS, &sa, &previous) != 0) install_errno = errno;
}

/* The errno a fault is reported as: EIO for a hardware memory error, EFAULT
 * for a page that is not there (a truncated file, a huge page that could not
 * be allocated). */
static int fault_errno(int si_code) {
#ifdef BUS_MCEERR_AR
  if (si_code == BUS_MCEERR_AR || si_code == BUS_MCEERR_AO) return EIO;
#endif
  (void)si_code;
  return EFAULT;
}

/* After the handler jumped here SIGBUS is still blocked (sigsetjmp saved no
 * mask, to keep a syscall off the normal path): unblock it. */
static int after_fault(nv_guard *g) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGBUS);
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);
  return fault_errno(g->si_code);
}

/* The compiler knows memmove and memset: without these fences it may move
 * their loads and stores (a small copy is inlined) to before the guard is
 * armed or after it is disarmed. A signal fence orders them against the
 * handler, which runs on this same thread; no CPU barrier is needed. */
#define ARM(g)                                                                 \
  do {                                                                         \
    armed = (g);                                                               \
    atomic_signal_fence(memory_order_seq_cst);                                 \
  } while (0)
#define DISARM()                                                               \
  do {                                                                         \
    atomic_signal_fence(memory_order_seq_cst);                                 \
    armed = NULL;                                                              \
  } while (0)

/* Kept out of line so the jump target has no live locals to clobber. */
__attribute__((noinline)) static int guarded_memmove(void *dst, const void *src, size_t n) {
  nv_guard g;
  g.lo[0] = (uintptr_t)dst;
  g.hi[0] = (uintptr_t)dst + n;
  g.lo[1] = (uintptr_t)src;
  g.hi[1] = (uintptr_t)src + n;
  if (sigsetjmp(g.env, 0) != 0) return after_fault(&g);
  ARM(&g);
  memmove(dst, src, n);
  DISARM();
  return 0;
}

__attribute__((noinline)) static int guarded_memset(void *dst, int byte, size_t n) {
  nv_guard g;
  g.lo[0] = (uintptr_t)dst;
  g.hi[0] = (uintptr_t)dst + n;
  g.lo[1] = g.hi[1] = 0;
  if (sigsetjmp(g.env, 0) != 0) return after_fault(&g);
  ARM(&g);
  memset(dst, byte, n);
  DISARM();
  return 0;
}

int nv_guarded_memset(void *dst, int byte, size_t n) {
  return n == 0 ? 0 : guarded_memset(dst, byte, n);
}

/* copyMemory(dst, dstOffset, src, srcOffset, count): 0, or EFAULT / EIO when
 * a page of either range could not be had. Allocates nothing. */
static napi_value copy_memory(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  uint8_t *dst, *src;
  size_t dst_size, src_size;
  int64_t dst_off, src_off, count;
  if (!nv_args(env, info, 5, argv, NULL, NULL)) return NULL;
  if (!nv_get_bytes(env, argv[0], "dst", &dst, &dst_size)) return NULL;
  if (!nv_get_int(env, argv[1], "dstOffset", 0, NV_MAX_SAFE_INT, &dst_off)) return NULL;
  if (!nv_get_bytes(env, argv[2], "src", &src, &src_size)) return NULL;
  if (!nv_get_int(env, argv[3], "srcOffset", 0, NV_MAX_SAFE_INT, &src_off)) return NULL;
  if (!nv_get_int(env, argv[4], "count", 0, NV_MAX_SAFE_INT, &count)) return NULL;
  if (!nv_check_range(env, dst_off, count, dst_size) || !nv_check_range(env, src_off, count, src_size))
    return NULL;
  int rc = count == 0 ? 0 : guarded_memmove(dst + dst_off, src + src_off, (size_t)count);
  return nv_number(env, rc);
}

bool nv_init_guard(napi_env env, napi_value exports) {
  pthread_once(&install_once, install);
  if (install_errno != 0) {
    nv_throw_errno(env, install_errno, "sigaction", NULL);
    return false;
  }
  const napi_property_descriptor props[] = {
      NV_FN("copyMemory", copy_memory),
  };
  return nv_define_functions(env, exports, props, sizeof props / sizeof props[0]);
}
