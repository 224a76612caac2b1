/*
 * Small shared utilities: checked sizes, aligned allocation, finiteness checks and a
 * fork-join parallel loop. No pool, no global state: threads are started per call,
 * which costs a few tens of microseconds and is only used for loops that run for
 * milliseconds (one GPTQ block, one dequant-matmul).
 */
#include <math.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>

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

void gptq__parallel_for(int32_t threads, int64_t n, int64_t min_per_thread, gptq__range_fn fn,
                        void *arg)
{
    enum { MAX_THREADS = 256 };
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
