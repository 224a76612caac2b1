/*
 * bench_stream: memory bandwidth of this machine, STREAM-style (McCalpin's four
 * kernels: copy a = b, scale a = q*b, add a = b + c, triad a = b + q*c), on arrays far
 * larger than the last-level cache, split over threads.
 *
 *   bench_stream [--mb N] [--threads T] [--reps K]
 *
 * --mb is the size of each of the three float arrays in MiB (default 512, i.e. 1.5 GiB
 * in all, about 48 times this machine's 32 MiB L3). Every thread owns one contiguous
 * slice of every array and first-touches it, so the pages sit where that thread runs.
 * Bytes are counted as STREAM counts them (copy and scale: 2 arrays, add and triad: 3;
 * no write-allocate traffic). A fifth kernel, read (a sum over one array), is the
 * ceiling of a read-only stream such as a matrix-vector product's weights. Each kernel
 * is timed K times; the best is reported, as STREAM does, with the median beside it
 * because this VM's neighbours are noisy.
 *
 * The last line is machine-readable:
 *   bench_stream threads=2 mb=512 copy=.. scale=.. add=.. triad=.. read=.. (GB/s, best)
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { K_COPY, K_SCALE, K_ADD, K_TRIAD, K_READ, K_COUNT };
static const char *const kernel_names[K_COUNT] = {"copy", "scale", "add", "triad", "read"};
static const int kernel_arrays[K_COUNT] = {2, 2, 3, 3, 1};

typedef struct stream_arrays {
    float *a, *b, *c;
    size_t n;
    int threads;
} stream_arrays;

typedef struct stream_job {
    const stream_arrays *s;
    int kernel; /* K_* or -1 for the first-touch initialisation */
    size_t begin, end;
    float sum;  /* K_READ's result, kept so the loads are not optimised away */
} stream_job;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *run_slice(void *p)
{
    stream_job *j = p;
    float *restrict a = j->s->a, *restrict b = j->s->b, *restrict c = j->s->c;
    const float q = 3.0f;

    switch (j->kernel) {
    case K_COPY:
        for (size_t i = j->begin; i < j->end; i++)
            a[i] = b[i];
        break;
    case K_SCALE:
        for (size_t i = j->begin; i < j->end; i++)
            a[i] = q * b[i];
        break;
    case K_ADD:
        for (size_t i = j->begin; i < j->end; i++)
            a[i] = b[i] + c[i];
        break;
    case K_TRIAD:
        for (size_t i = j->begin; i < j->end; i++)
            a[i] = b[i] + q * c[i];
        break;
    case K_READ: {
        /* 16 partial sums, so the loop vectorises without reassociation flags */
        float acc[16] = {0};
        size_t i = j->begin;
        for (; i + 16 <= j->end; i += 16)
            for (int l = 0; l < 16; l++)
                acc[l] += b[i + l];
        for (int l = 1; l < 16; l++)
            acc[0] += acc[l];
        for (; i < j->end; i++)
            acc[0] += b[i];
        j->sum = acc[0];
        break;
    }
    default:
        for (size_t i = j->begin; i < j->end; i++) {
            a[i] = 0.0f;
            b[i] = 1.0f;
            c[i] = 2.0f;
        }
    }
    return NULL;
}

/* One pass of `kernel` over the arrays on s->threads threads; seconds. */
static double run(const stream_arrays *s, int kernel)
{
    pthread_t tid[64];
    stream_job jobs[64];
    const size_t chunk = (s->n + (size_t)s->threads - 1) / (size_t)s->threads;
    double t0 = now();

    for (int t = 0; t < s->threads; t++) {
        jobs[t].s = s;
        jobs[t].kernel = kernel;
        jobs[t].begin = (size_t)t * chunk < s->n ? (size_t)t * chunk : s->n;
        jobs[t].end = (size_t)(t + 1) * chunk < s->n ? (size_t)(t + 1) * chunk : s->n;
    }
    for (int t = 1; t < s->threads; t++)
        if (pthread_create(&tid[t], NULL, run_slice, &jobs[t]) != 0) {
            fprintf(stderr, "bench_stream: pthread_create failed\n");
            exit(1);
        }
    run_slice(&jobs[0]);
    for (int t = 1; t < s->threads; t++)
        pthread_join(tid[t], NULL);
    return now() - t0;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int main(int argc, char **argv)
{
    size_t mb = 512;
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN), reps = 10;
    stream_arrays s;
    double best[K_COUNT], med[K_COUNT], times[64];

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mb") == 0 && i + 1 < argc)
            mb = (size_t)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_stream [--mb N] [--threads T] [--reps K]\n");
            return 2;
        }
    }
    if (mb < 1 || threads < 1 || threads > 64 || reps < 1 || reps > 64) {
        fprintf(stderr, "bench_stream: need --mb >= 1, 1 <= --threads <= 64, 1 <= --reps <= 64\n");
        return 2;
    }
    s.n = mb * ((size_t)1 << 20) / sizeof(float);
    s.threads = threads;
    if (posix_memalign((void **)&s.a, 2u << 20, s.n * sizeof(float)) != 0 ||
        posix_memalign((void **)&s.b, 2u << 20, s.n * sizeof(float)) != 0 ||
        posix_memalign((void **)&s.c, 2u << 20, s.n * sizeof(float)) != 0) {
        fprintf(stderr, "bench_stream: out of memory for 3 x %zu MiB\n", mb);
        return 1;
    }
    run(&s, -1);
    for (int k = 0; k < K_COUNT; k++) {
        const double bytes = (double)kernel_arrays[k] * (double)s.n * sizeof(float);
        for (int r = 0; r < reps; r++)
            times[r] = run(&s, k);
        qsort(times, (size_t)reps, sizeof times[0], cmp_double);
        best[k] = bytes / times[0] * 1e-9;
        med[k] = bytes / times[reps / 2] * 1e-9;
        printf("%-6s best %7.2f GB/s  median %7.2f GB/s\n", kernel_names[k], best[k], med[k]);
    }
    printf("bench_stream threads=%d mb=%zu copy=%.2f scale=%.2f add=%.2f triad=%.2f read=%.2f\n",
           threads, mb, best[K_COPY], best[K_SCALE], best[K_ADD], best[K_TRIAD], best[K_READ]);
    free(s.a);
    free(s.b);
    free(s.c);
    return 0;
}
