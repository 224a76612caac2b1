/*
 * Small shared utilities: checked sizes, aligned allocation, finiteness checks and a
 * fork-join parallel loop over a process-wide pool of worker threads.
 *
 * The pool is the library's one piece of global mutable state. Starting a thread costs
 * ~35 us on the machines we measured, as much as streaming 1 MB of weights, and a
 * batch-1 dequant-matmul of a 4096 x 4096 4-bit layer takes ~300 us: fresh threads per
 * call cost it a tenth of its time. So workers are started on first use, kept, and
 * parked on a condition variable after a short spin (SPIN_SECONDS) that catches the
 * next call of a tight sequence (the linears of one generated token). One fork-join
 * runs on the pool at a time; a concurrent or nested call (from another application
 * thread, or from inside a worker) starts its own threads as before, so the pool never
 * deadlocks and never changes a result: every range is computed by exactly one thread
 * whatever thread that is. A child process after fork() starts a new pool; the
 * workers are stopped and joined when the library is unloaded.
 */
#include <math.h>
#include <stdio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>

#include "backend.h"
#include "internal.h"

int gptq__mul_size(size_t *out, int64_t a, int64_t b)
{
    if (a < 0 || b < 0)
        return -1;
    if (a != 0 && (uint64_t)b > SIZE_MAX / (uint64_t)a)
        return -1;
    *out = (size_t)a * (size_t)b;
    return 0;
}

int gptq__mul3_size(size_t *out, int64_t a, int64_t b, int64_t c)
{
    size_t ab;
    if (gptq__mul_size(&ab, a, b) != 0 || c < 0)
        return -1;
    if (ab != 0 && (uint64_t)c > SIZE_MAX / ab)
        return -1;
    *out = ab * (size_t)c;
    return 0;
}

/* Buffers from this size on are aligned to 2 MiB and advised as huge pages. On the
 * virtual machines we measured, first-touch page faults cost ~4 ms per MiB with 4 KiB
 * pages and ~0.1 ms with 2 MiB pages: for a 4096 x 4096 layer that is most of the
 * run time. */
#define HUGE_THRESHOLD ((size_t)4 << 20)
#define HUGE_ALIGN ((size_t)2 << 20)

void *gptq__alloc(gptq_ctx *ctx, size_t bytes, const char *what)
{
    void *p = NULL;
    size_t align = bytes >= HUGE_THRESHOLD ? HUGE_ALIGN : 64;
    size_t rounded = (bytes + align - 1) & ~(align - 1);
    if (rounded < bytes || posix_memalign(&p, align, rounded ? rounded : 64) != 0) {
        GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY, "out of memory allocating %zu bytes for %s", bytes,
                  what);
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    if (align == HUGE_ALIGN)
        (void)madvise(p, rounded, MADV_HUGEPAGE); /* advice only: failure is harmless */
#endif
    return p;
}

void *gptq__calloc(gptq_ctx *ctx, size_t bytes, const char *what)
{
    void *p = gptq__alloc(ctx, bytes, what);
    if (p)
        memset(p, 0, bytes);
    return p;
}

void gptq__free(void *p) { free(p); }

void gptq__err_save(const gptq_ctx *ctx, gptq__err_state *s)
{
    s->status = ctx->last_status;
    memcpy(s->msg, ctx->last_error, sizeof s->msg);
}

void gptq__err_restore(gptq_ctx *ctx, const gptq__err_state *s)
{
    ctx->last_status = s->status;
    memcpy(ctx->last_error, s->msg, sizeof s->msg);
}

void *gptq__buf_alloc(gptq_ctx *ctx, size_t bytes, const char *what)
{
    gptq__err_state before;
    void *p;

    gptq__err_save(ctx, &before);
    ctx->last_status = GPTQ_OK; /* to tell whether the backend records its own message */
    p = ctx->backend->buf_alloc(ctx, bytes);
    if (p)
        gptq__err_restore(ctx, &before);
    else if (ctx->last_status == GPTQ_OK)
        GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY, "out of %s memory for %s (%zu bytes)",
                  ctx->backend->name, what, bytes);
    return p;
}

void *gptq__scratch(gptq_ctx *ctx, int slot, size_t bytes, const char *what)
{
    if (!ctx || slot < 0 || slot >= (int)(sizeof ctx->scratch / sizeof ctx->scratch[0]))
        return gptq__alloc(ctx, bytes, what); /* cannot happen in the library */
    if (ctx->scratch[slot].bytes < bytes) {
        gptq__free(ctx->scratch[slot].p);
        ctx->scratch[slot].bytes = 0;
        ctx->scratch[slot].p = gptq__alloc(ctx, bytes, what);
        if (!ctx->scratch[slot].p)
            return NULL;
        ctx->scratch[slot].bytes = bytes;
    }
    return ctx->scratch[slot].p;
}

void gptq__scratch_release(gptq_ctx *ctx)
{
    if (!ctx)
        return;
    for (size_t i = 0; i < sizeof ctx->scratch / sizeof ctx->scratch[0]; i++) {
        gptq__free(ctx->scratch[i].p);
        ctx->scratch[i].p = NULL;
        ctx->scratch[i].bytes = 0;
    }
}

int gptq__all_finite(const float *x, size_t n)
{
    /* Branch-free accumulation in 16 lanes so the compiler vectorises it; x - x is NaN
     * exactly when x is NaN or infinite, and NaN survives every addition. */
    float acc[16] = {0};
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++)
            acc[l] += x[i + l] - x[i + l];
    for (; i < n; i++)
        acc[0] += x[i] - x[i];
    for (int l = 1; l < 16; l++)
        acc[0] += acc[l];
    return acc[0] == 0.0f;
}

typedef struct range_job {
    gptq__range_fn fn;
    void *arg;
    int64_t begin, end;
} range_job;

static void *range_main(void *p)
{
    range_job *job = p;
    job->fn(job->arg, job->begin, job->end);
    return NULL;
}

/* ---- the worker pool ------------------------------------------------------------- */

#define POOL_MAX 255             /* workers: one fork-join uses at most 256 threads */
#define SPIN_SECONDS 100e-6      /* how long an idle worker (or the waiting caller)
                                  * polls before it sleeps */

/* One worker's mailbox: the caller writes `job`, then bumps `ticket`; the worker runs
 * the job when its ticket moves. A slot is rewritten only after the pool's previous
 * fork-join has finished, so after its worker is done reading it. */
typedef struct pool_slot {
    _Alignas(64) atomic_ullong ticket; /* a cache line per worker */
    range_job job;
} pool_slot;

static struct {
    pthread_mutex_t busy;        /* held by the fork-join using the pool */
    pthread_mutex_t lock;        /* guards the sleeps below */
    pthread_cond_t wake;         /* workers sleep here for their next ticket */
    pthread_cond_t idle;         /* the caller sleeps here for the last worker */
    int32_t sleepers;            /* workers asleep on `wake` (under lock) */
    int32_t caller_asleep;       /* the caller is asleep on `idle` (under lock) */
    int32_t started;             /* workers running (under busy) */
    pthread_t tid[POOL_MAX];
    pool_slot slot[POOL_MAX];
    atomic_int left;             /* workers of the current fork-join not finished */
    atomic_int stop;
} pool = {
    .busy = PTHREAD_MUTEX_INITIALIZER,
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .idle = PTHREAD_COND_INITIALIZER,
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Poll `done(arg)` for up to SPIN_SECONDS; 1 if it became true. */
static int spin_until(int (*done)(void *), void *arg)
{
    double deadline = 0.0;
    for (unsigned i = 1;; i++) {
        if (done(arg))
            return 1;
        cpu_relax();
        if ((i & 255) == 0) {
            const double now = gptq__now();
            if (deadline == 0.0)
                deadline = now + SPIN_SECONDS;
            else if (now > deadline)
                return 0;
        }
    }
}

typedef struct worker_wait {
    pool_slot *slot;
    unsigned long long seen;
} worker_wait;

static int ticket_moved(void *p)
{
    const worker_wait *w = p;
    return atomic_load_explicit(&w->slot->ticket, memory_order_acquire) != w->seen ||
           atomic_load_explicit(&pool.stop, memory_order_acquire);
}

static int job_done(void *unused)
{
    (void)unused;
    return atomic_load_explicit(&pool.left, memory_order_acquire) == 0;
}

static void *worker_main(void *p)
{
    worker_wait w = {p, 0}; /* tickets start at 0 (pool_run) */

    for (;;) {
        if (!spin_until(ticket_moved, &w)) {
            pthread_mutex_lock(&pool.lock);
            pool.sleepers++;
            while (!ticket_moved(&w))
                pthread_cond_wait(&pool.wake, &pool.lock);
            pool.sleepers--;
            pthread_mutex_unlock(&pool.lock);
        }
        if (atomic_load_explicit(&pool.stop, memory_order_acquire))
            return NULL;
        w.seen = atomic_load_explicit(&w.slot->ticket, memory_order_acquire);
        w.slot->job.fn(w.slot->job.arg, w.slot->job.begin, w.slot->job.end);
        if (atomic_fetch_sub_explicit(&pool.left, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pool.lock);
            if (pool.caller_asleep)
                pthread_cond_signal(&pool.idle);
            pthread_mutex_unlock(&pool.lock);
        }
    }
}

/* Wake the workers asleep on `wake` (after tickets moved or the stop was set). */
static void pool_wake(void)
{
    pthread_mutex_lock(&pool.lock);
    if (pool.sleepers > 0)
        pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
}

/* Run jobs[1 .. parts) on the pool and jobs[0] here; 0 if the pool is in use. */
static int pool_run(range_job *jobs, int32_t parts)
{
    int32_t active;

    if (pthread_mutex_trylock(&pool.busy) != 0)
        return 0;
    while (pool.started < parts - 1 && pool.started < POOL_MAX) {
        pool_slot *slot = &pool.slot[pool.started];
        atomic_store_explicit(&slot->ticket, 0, memory_order_relaxed);
        if (pthread_create(&pool.tid[pool.started], NULL, worker_main, slot) != 0)
            break;
        pool.started++;
    }
    active = parts - 1 < pool.started ? parts - 1 : pool.started;
    atomic_store_explicit(&pool.left, active, memory_order_relaxed);
    for (int32_t t = 0; t < active; t++) {
        pool.slot[t].job = jobs[t + 1];
        atomic_fetch_add_explicit(&pool.slot[t].ticket, 1, memory_order_release);
    }
    if (active > 0)
        pool_wake();
    jobs[0].fn(jobs[0].arg, jobs[0].begin, jobs[0].end);
    /* Ranges no worker could be started for run here: the result never depends on
     * whether threads were available. */
    for (int32_t t = active + 1; t < parts; t++)
        jobs[t].fn(jobs[t].arg, jobs[t].begin, jobs[t].end);
    if (active > 0 && !spin_until(job_done, NULL)) {
        pthread_mutex_lock(&pool.lock);
        pool.caller_asleep = 1;
        while (atomic_load_explicit(&pool.left, memory_order_acquire) != 0)
            pthread_cond_wait(&pool.idle, &pool.lock);
        pool.caller_asleep = 0;
        pthread_mutex_unlock(&pool.lock);
    }
    pthread_mutex_unlock(&pool.busy);
    return 1;
}

/* fork() copies no thread: the child starts from an empty pool. */
static void pool_after_fork_child(void)
{
    pthread_mutex_init(&pool.busy, NULL);
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.idle, NULL);
    pool.sleepers = 0;
    pool.caller_asleep = 0;
    pool.started = 0;
}

__attribute__((constructor)) static void pool_init(void)
{
    pthread_atfork(NULL, NULL, pool_after_fork_child);
}

/* Stop and join the workers when libgptq is unloaded (dlclose or exit), so no thread
 * is left running in unmapped code. Skipped if a fork-join is still running. */
__attribute__((destructor)) static void pool_fini(void)
{
    if (pthread_mutex_trylock(&pool.busy) != 0)
        return;
    if (pool.started > 0) {
        atomic_store_explicit(&pool.stop, 1, memory_order_release);
        pool_wake();
        for (int32_t t = 0; t < pool.started; t++)
            pthread_join(pool.tid[t], NULL);
        pool.started = 0;
        atomic_store_explicit(&pool.stop, 0, memory_order_release);
    }
    pthread_mutex_unlock(&pool.busy);
}

void gptq__parallel_for(int32_t threads, int64_t n, int64_t min_per_thread, gptq__range_fn fn,
                        void *arg)
{
    enum { MAX_THREADS = POOL_MAX + 1 };
    pthread_t tid[MAX_THREADS];
    range_job jobs[MAX_THREADS];
    int started[MAX_THREADS];
    int64_t parts, chunk;

    if (n <= 0)
        return;
    if (min_per_thread < 1)
        min_per_thread = 1;
    parts = threads < 1 ? 1 : threads;
    if (parts > MAX_THREADS)
        parts = MAX_THREADS;
    if (parts > n / min_per_thread)
        parts = n / min_per_thread;
    if (parts <= 1) {
        fn(arg, 0, n);
        return;
    }
    chunk = (n + parts - 1) / parts;
    for (int64_t t = 0; t < parts; t++) {
        jobs[t].fn = fn;
        jobs[t].arg = arg;
        jobs[t].begin = t * chunk < n ? t * chunk : n;
        jobs[t].end = (t + 1) * chunk < n ? (t + 1) * chunk : n;
        started[t] = 0;
    }
    if (pool_run(jobs, (int32_t)parts))
        return;
    /* The pool is in use (another application thread, or a call from a worker): fresh
     * threads for this one. */
    for (int64_t t = 1; t < parts; t++)
        started[t] = pthread_create(&tid[t], NULL, range_main, &jobs[t]) == 0;
    fn(arg, jobs[0].begin, jobs[0].end);
    /* A thread that could not be started runs its share here: the result never depends
     * on whether threads were available. */
    for (int64_t t = 1; t < parts; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            fn(arg, jobs[t].begin, jobs[t].end);
    }
}

double gptq__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

unsigned gptq__umask(void)
{
    /* umask() cannot be read without setting it (a process-wide race), so read it from
     * /proc; assume 022 where that is missing. */
    unsigned mask = 022;
    char line[128];
    FILE *f = fopen("/proc/self/status", "re");
    if (f) {
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "Umask: %o", &mask) == 1)
                break;
        fclose(f);
    }
    return mask & 0777u;
}
