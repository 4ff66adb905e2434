/*
 * failmalloc: an LD_PRELOAD library that makes grace's own allocations fail
 * now and then, for tests/integration/test_failmalloc.py.
 *
 * It interposes malloc, calloc, realloc, strdup (grace's src/ uses these and
 * free; no posix_memalign, aligned_alloc, strndup or asprintf) and fails a
 * call (NULL, errno ENOMEM) only when all of these hold:
 *
 *  - the immediate caller lies in the executable segments of the main
 *    program: the examples link libgrace.a, so that is grace's code, llhttp,
 *    the generated protobuf code and the example itself (nghttp2 allocates
 *    through grace's nghttp2_mem callbacks in src/http/h2.c: those count).
 *    Allocations made inside libc, libuv, nghttp2's own defaults or
 *    protobuf-c are never failed: their failure is not grace's to handle;
 *  - the file named by GRACE_FAILMALLOC_FILE exists (looked at no more than
 *    every ~5 ms, CLOCK_MONOTONIC_COARSE), so that the program starts
 *    cleanly and a test turns failures on and off again;
 *  - a PRNG seeded by GRACE_FAILMALLOC_SEED says so, with probability
 *    1/GRACE_FAILMALLOC_RATE (default 20).
 *
 * At exit it writes "failmalloc: <n> allocation(s) failed" to stderr, so the
 * test can check that failures really were injected.
 *
 * Without GRACE_FAILMALLOC_FILE nothing ever fails.  Not for sanitizer
 * builds (ASan and TSan own malloc): CMake builds it in plain builds only.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Exported: the symbols that interpose libc's. */
#define FM_EXPORT __attribute__((visibility("default")))

typedef void *(*malloc_fn)(size_t);
typedef void *(*calloc_fn)(size_t, size_t);
typedef void *(*realloc_fn)(void *, size_t);
typedef void (*free_fn)(void *);
typedef char *(*strdup_fn)(const char *);

static malloc_fn real_malloc;
static calloc_fn real_calloc;
static realloc_fn real_realloc;
static free_fn real_free;
static strdup_fn real_strdup;

/* dlsym may calloc (its error buffer) while the functions above are being
 * looked up: those few bytes come from here and are never freed. */
static _Alignas(max_align_t) unsigned char boot_buf[4096];
static size_t boot_used;
static bool resolving;

static bool in_boot(const void *p) {
  return (const unsigned char *)p >= boot_buf &&
         (const unsigned char *)p < boot_buf + sizeof(boot_buf);
}

static void *boot_alloc(size_t n) {
  size_t a = _Alignof(max_align_t);
  n = (n + a - 1) / a * a;
  if (n > sizeof(boot_buf) - boot_used)
    return NULL;
  void *p = boot_buf + boot_used;
  boot_used += n;
  return p; /* static storage: already zero */
}

/* dlsym's object pointer into a function pointer (ISO C has no cast). */
static void next_symbol(void *fnptr, const char *name) {
  void *sym = dlsym(RTLD_NEXT, name);
  memcpy(fnptr, &sym, sizeof(sym));
}

static void resolve(void) {
  if (real_free != NULL || resolving)
    return;
  resolving = true;
  next_symbol(&real_malloc, "malloc");
  next_symbol(&real_calloc, "calloc");
  next_symbol(&real_realloc, "realloc");
  next_symbol(&real_strdup, "strdup");
  next_symbol(&real_free, "free");
  resolving = false;
  if (real_malloc == NULL || real_calloc == NULL || real_realloc == NULL ||
      real_strdup == NULL || real_free == NULL) {
    static const char msg[] = "failmalloc: dlsym(RTLD_NEXT) failed\n";
    (void)!write(2, msg, sizeof(msg) - 1);
    _exit(127);
  }
}

/* Configuration, set by the constructor; until then nothing fails. */
#define MAX_RANGES 16
static uintptr_t range_lo[MAX_RANGES], range_hi[MAX_RANGES];
static int nranges;
static const char *switch_file;
static uint64_t seed;
static uint64_t rate = 20;
static atomic_bool ready;

static atomic_uint_fast64_t draws;     /* PRNG position, shared by threads */
static atomic_uint_fast64_t failures;  /* allocations failed so far */
static atomic_long next_check_ms;      /* when to look at switch_file again */
static atomic_bool switched_on;

static int find_main(struct dl_phdr_info *info, size_t size, void *data) {
  (void)size;
  (void)data;
  /* The first object is the main program. */
  for (int i = 0; i < info->dlpi_phnum && nranges < MAX_RANGES; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
      range_lo[nranges] = info->dlpi_addr + ph->p_vaddr;
      range_hi[nranges] = range_lo[nranges] + ph->p_memsz;
      nranges++;
    }
  }
  return 1;
}

static uint64_t env_u64(const char *name, uint64_t dflt) {
  const char *s = getenv(name);
  if (s == NULL || *s == '\0')
    return dflt;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0') {
    fprintf(stderr, "failmalloc: bad %s=%s\n", name, s);
    _exit(127);
  }
  return v;
}

__attribute__((constructor)) static void failmalloc_init(void) {
  resolve();
  switch_file = getenv("GRACE_FAILMALLOC_FILE");
  if (switch_file != NULL && *switch_file == '\0')
    switch_file = NULL;
  seed = env_u64("GRACE_FAILMALLOC_SEED", 1);
  rate = env_u64("GRACE_FAILMALLOC_RATE", 20);
  if (rate == 0) {
    fprintf(stderr, "failmalloc: GRACE_FAILMALLOC_RATE must be >= 1\n");
    _exit(127);
  }
  dl_iterate_phdr(find_main, NULL);
  atomic_store(&ready, true);
}

__attribute__((destructor)) static void failmalloc_fini(void) {
  if (switch_file == NULL)
    return;
  char buf[96];
  int n = snprintf(buf, sizeof(buf), "failmalloc: %llu allocation(s) failed\n",
                   (unsigned long long)atomic_load(&failures));
  if (n > 0)
    (void)!write(2, buf, (size_t)n);
}

static uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

static bool from_main(const void *caller) {
  uintptr_t a = (uintptr_t)caller;
  for (int i = 0; i < nranges; i++)
    if (a >= range_lo[i] && a < range_hi[i])
      return true;
  return false;
}

static bool is_on(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  long ms = (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  long next = atomic_load_explicit(&next_check_ms, memory_order_relaxed);
  if (ms >= next &&
      atomic_compare_exchange_strong(&next_check_ms, &next, ms + 5))
    atomic_store(&switched_on, access(switch_file, F_OK) == 0);
  return atomic_load_explicit(&switched_on, memory_order_relaxed);
}

/* Whether to fail this allocation, called from |caller|. */
static bool should_fail(const void *caller) {
  if (!atomic_load_explicit(&ready, memory_order_acquire) ||
      switch_file == NULL || !from_main(caller) || !is_on())
    return false;
  uint64_t r = splitmix64(seed * 0x100000001b3ULL +
                          atomic_fetch_add(&draws, 1));
  if (r % rate != 0)
    return false;
  atomic_fetch_add(&failures, 1);
  errno = ENOMEM;
  return true;
}

FM_EXPORT void *malloc(size_t n) {
  if (real_malloc == NULL) {
    if (resolving)
      return boot_alloc(n);
    resolve();
  }
  if (should_fail(__builtin_return_address(0)))
    return NULL;
  return real_malloc(n);
}

FM_EXPORT void *calloc(size_t n, size_t size) {
  if (real_calloc == NULL) {
    if (resolving)
      return size != 0 && n > SIZE_MAX / size ? NULL : boot_alloc(n * size);
    resolve();
  }
  if (should_fail(__builtin_return_address(0)))
    return NULL;
  return real_calloc(n, size);
}

FM_EXPORT void *realloc(void *p, size_t n) {
  if (real_realloc == NULL) {
    if (resolving)
      return p == NULL ? boot_alloc(n) : NULL;
    resolve();
  }
  if (in_boot(p)) { /* never happens in practice: moved to the real heap */
    void *q = real_malloc(n);
    if (q != NULL)
      memcpy(q, p, n < (size_t)(boot_buf + sizeof(boot_buf) -
                                (unsigned char *)p)
                       ? n
                       : (size_t)(boot_buf + sizeof(boot_buf) -
                                  (unsigned char *)p));
    return q;
  }
  /* realloc(p, 0) frees: that is no allocation to fail. */
  if ((p == NULL || n != 0) && should_fail(__builtin_return_address(0)))
    return NULL;
  return real_realloc(p, n);
}

FM_EXPORT char *strdup(const char *s) {
  if (real_strdup == NULL) {
    if (resolving) {
      char *d = boot_alloc(strlen(s) + 1);
      return d != NULL ? strcpy(d, s) : NULL;
    }
    resolve();
  }
  if (should_fail(__builtin_return_address(0)))
    return NULL;
  return real_strdup(s);
}

FM_EXPORT void free(void *p) {
  if (p == NULL || in_boot(p))
    return;
  if (real_free == NULL)
    resolve();
  real_free(p);
}
