/*
 * `gptq bench matmul`: the prepared-layer kernel (gptq_qlinear_forward) on a random
 * layer, against its baselines measured in the same process: OpenBLAS on the same
 * weights in float32 (SGEMV at batch 1, SGEMM above) and this machine's memory
 * bandwidth (STREAM copy and triad, and a read-only sum, on arrays far beyond the
 * last-level cache). The last line is machine-readable:
 *
 *   gbps=<achieved> bw_share=<of measured bandwidth> speedup_vs_sgemv=<x>
 *
 * gbps counts the bytes one call must move (prepared codes, float16 scales, zero
 * points, x and y) over its median time; bw_share divides it by the best of the STREAM
 * figures; speedup_vs_sgemv is the BLAS median over the kernel's median.
 *
 * Unless --warm is given, calls rotate over copies of the layer (and of the float32
 * weights) totalling at least twice the last-level cache (128 MiB at least), so that
 * each call reads its weights from memory as a model's forward pass does, not from the
 * cache (some servers have an L3 of several hundred MiB).
 *
 * OpenBLAS is reached through the process's symbol table (libgptq.so depends on it),
 * so this command still links only libgptq; it says so if the symbols are missing.
 *
 * With --backend cuda (or auto on a machine with a usable GPU) the same random layer is
 * timed on the GPU instead, by cmd_bench_gpu.c; bench.h holds what the two share.
 */
#include <dlfcn.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gptq/gptq.h>

#include "bench.h"
#include "cli.h"

#define COLD_BYTES_MIN ((double)(128u << 20))
#define MAX_STREAM_THREADS 64

void gptq_cli_bench_usage(FILE *f)
{
    fputs("Usage: gptq bench matmul [options]\n"
          "\n"
          "Time the fused dequantize-matmul of a prepared GPTQ layer (random codes and\n"
          "scales) against OpenBLAS on the same weights in float32 (SGEMV at batch 1,\n"
          "SGEMM above) and against this machine's memory bandwidth (STREAM), all in\n"
          "this process. Prints one line per measurement, then\n"
          "  gbps=<achieved> bw_share=<of measured bandwidth> speedup_vs_sgemv=<x>\n"
          "\n"
          "With --backend cuda the layer is prepared on the GPU and timed there (CUDA\n"
          "events over a CUDA graph, weights read from device memory) against cuBLAS on\n"
          "dense float16 weights; x and y are float16 on the device. The last line is\n"
          "  gbps=<achieved> bw_share=<of theoretical bandwidth> speedup_vs_fp16=<x>\n"
          "gbps counts the prepared weights, x and y over one call's time.\n"
          "\n"
          "Options:\n"
          "  --out N               output features (default 4096)\n"
          "  --in K                input features (default 4096)\n"
          "  --bits B              2, 3, 4 or 8 (default 4)\n"
          "  --group-size G        columns per group, -1 for one per row (default 128)\n"
          "  --batch M             input rows per call (default 1)\n"
          "  --act-order           shuffled g_idx, as act-order checkpoints have\n"
          "  --threads N           worker threads, 0 = all cores (default)\n"
          "  --backend B           cpu (default), cuda, or auto (cuda when a GPU is usable)\n"
          "  --device N            GPU ordinal for cuda/auto (default 0)\n"
          "  --kernel NAME         auto (default); cpu: portable, avx2, avx512, sgemm;\n"
          "                        cuda: cuda_gemv, cuda_mma, cuda_cublas\n"
          "  --reps N              timed calls per measurement (default 30; cpu: medians,\n"
          "                        cuda: mean of the N calls)\n"
          "  --warm                reuse one copy of the weights (cache-resident if small;\n"
          "                        cpu only)\n"
          "  --stream-mb N         MiB per STREAM array (default 256; cpu only)\n"
          "  -h, --help            show this help\n"
          "\n"
          "Exit status: 0 success, 1 failure, 2 bad usage.\n",
          f);
}

enum { B_OUT = 256, B_IN, B_BITS, B_GROUP, B_BATCH, B_ACT, B_THREADS, B_BACKEND, B_DEVICE,
       B_KERNEL, B_REPS, B_WARM, B_STREAM };

static const struct option bench_opts[] = {
    {"out", required_argument, NULL, B_OUT},
    {"in", required_argument, NULL, B_IN},
    {"bits", required_argument, NULL, B_BITS},
    {"group-size", required_argument, NULL, B_GROUP},
    {"batch", required_argument, NULL, B_BATCH},
    {"act-order", no_argument, NULL, B_ACT},
    {"threads", required_argument, NULL, B_THREADS},
    {"backend", required_argument, NULL, B_BACKEND},
    {"device", required_argument, NULL, B_DEVICE},
    {"kernel", required_argument, NULL, B_KERNEL},
    {"reps", required_argument, NULL, B_REPS},
    {"warm", no_argument, NULL, B_WARM},
    {"stream-mb", required_argument, NULL, B_STREAM},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int bad_value(const char *opt, const char *value, const char *want)
{
    gptq_cli_error("bench: --%s: invalid value '%s' (%s)", opt, value, want);
    return GPTQ_CLI_EXIT_USAGE;
}

static int is_cuda_kernel(int32_t kernel)
{
    return kernel >= GPTQ_QLINEAR_KERNEL_CUDA_GEMV && kernel <= GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS;
}

/* Options that belong to the other backend than `backend`, the one the run uses, are
 * usage errors. `via_auto`: --backend auto chose it (said in the message). */
static int check_backend_options(const gptq_cli_bench_args *a, int32_t backend, int via_auto)
{
    const char *k = gptq_qlinear_kernel_name(a->kernel);

    if (backend == GPTQ_BACKEND_CUDA && a->kernel != GPTQ_QLINEAR_KERNEL_AUTO &&
        !is_cuda_kernel(a->kernel)) {
        gptq_cli_error("bench matmul: --kernel %s is a CPU kernel, but this run uses the CUDA "
                       "backend%s; on the GPU use auto, cuda_gemv, cuda_mma or cuda_cublas",
                       k, via_auto ? " (--backend auto found a usable GPU)" : "");
        return GPTQ_CLI_EXIT_USAGE;
    }
    if (backend == GPTQ_BACKEND_CPU && is_cuda_kernel(a->kernel)) {
        gptq_cli_error("bench matmul: --kernel %s runs on the GPU, but this run uses the CPU "
                       "backend%s; it needs --backend cuda",
                       k, via_auto ? " (--backend auto found no usable GPU)" : "");
        return GPTQ_CLI_EXIT_USAGE;
    }
    if (backend == GPTQ_BACKEND_CUDA && a->warm) {
        gptq_cli_error("bench matmul: --warm is for the CPU benchmark; with the CUDA backend%s "
                       "every call reads its weights from device memory",
                       via_auto ? " (chosen by --backend auto)" : "");
        return GPTQ_CLI_EXIT_USAGE;
    }
    return GPTQ_CLI_EXIT_OK;
}

static int parse(int argc, char **argv, gptq_cli_bench_args *a)
{
    int c;

    memset(a, 0, sizeof *a);
    a->out = a->in = 4096;
    a->batch = 1;
    a->bits = 4;
    a->group_size = 128;
    a->backend = GPTQ_BACKEND_CPU;
    a->kernel = GPTQ_QLINEAR_KERNEL_AUTO;
    a->reps = 30;
    a->stream_mb = 256;
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        a->help = 1;
        return argc < 2 ? GPTQ_CLI_EXIT_USAGE : GPTQ_CLI_EXIT_OK;
    }
    if (strcmp(argv[1], "matmul") != 0) {
        gptq_cli_error("bench: unknown benchmark '%s' (known: matmul)", argv[1]);
        return GPTQ_CLI_EXIT_USAGE;
    }
    argc--;
    argv++;
    while ((c = gptq_cli_getopt(argc, argv, ":h", bench_opts, "bench matmul")) != -1) {
        switch (c) {
        case B_OUT:
            if (gptq_cli_parse_i64(optarg, &a->out) != 0 || a->out < 1)
                return bad_value("out", optarg, "a positive integer");
            break;
        case B_IN:
            if (gptq_cli_parse_i64(optarg, &a->in) != 0 || a->in < 1)
                return bad_value("in", optarg, "a positive integer");
            break;
        case B_BITS:
            if (gptq_cli_parse_i32(optarg, &a->bits) != 0 ||
                (a->bits != 2 && a->bits != 3 && a->bits != 4 && a->bits != 8))
                return bad_value("bits", optarg, "2, 3, 4 or 8");
            break;
        case B_GROUP:
            if (gptq_cli_parse_i32(optarg, &a->group_size) != 0 ||
                (a->group_size < 1 && a->group_size != -1))
                return bad_value("group-size", optarg, "-1 or a positive integer");
            break;
        case B_BATCH:
            if (gptq_cli_parse_i64(optarg, &a->batch) != 0 || a->batch < 1)
                return bad_value("batch", optarg, "a positive integer");
            break;
        case B_THREADS:
            if (gptq_cli_parse_i32(optarg, &a->threads) != 0 || a->threads < 0)
                return bad_value("threads", optarg, "a non-negative integer");
            break;
        case B_BACKEND:
            if (gptq_cli_parse_backend(optarg, &a->backend) != 0)
                return bad_value("backend", optarg, "cpu, cuda or auto");
            break;
        case B_DEVICE:
            if (gptq_cli_parse_i32(optarg, &a->device) != 0 || a->device < 0)
                return bad_value("device", optarg, "a non-negative integer");
            break;
        case B_KERNEL: {
            int32_t k;
            for (k = 0; k <= GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS; k++)
                if (strcmp(optarg, gptq_qlinear_kernel_name(k)) == 0)
                    break;
            if (k > GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS)
                return bad_value("kernel", optarg,
                                 "auto, portable, avx2, avx512, sgemm, cuda_gemv, cuda_mma or "
                                 "cuda_cublas");
            a->kernel = k;
            break;
        }
        case B_REPS:
            if (gptq_cli_parse_i32(optarg, &a->reps) != 0 || a->reps < 1 || a->reps > 100000)
                return bad_value("reps", optarg, "an integer in [1, 100000]");
            break;
        case B_STREAM:
            if (gptq_cli_parse_i64(optarg, &a->stream_mb) != 0 || a->stream_mb < 1 ||
                a->stream_mb > (1 << 20))
                return bad_value("stream-mb", optarg, "an integer in [1, 1048576]");
            break;
        case B_ACT: a->act_order = 1; break;
        case B_WARM: a->warm = 1; break;
        case 'h': a->help = 1; break;
        default: return GPTQ_CLI_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        gptq_cli_error("bench matmul: unexpected argument '%s'", argv[optind]);
        return GPTQ_CLI_EXIT_USAGE;
    }
    /* --backend auto is checked once the context says which backend it got */
    if (a->backend != GPTQ_BACKEND_AUTO)
        return check_backend_options(a, a->backend, 0);
    return GPTQ_CLI_EXIT_OK;
}

/* ---- small helpers ------------------------------------------------------------ */

/* Bytes of weight copies that leave the caches: twice the largest cache level glibc
 * reports (0 where it cannot tell), and COLD_BYTES_MIN at least. */
static double cold_bytes(void)
{
    double c = 0.0;
#ifdef _SC_LEVEL3_CACHE_SIZE
    const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE), l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    c = 2.0 * (double)(l3 > l2 ? l3 : l2);
#endif
    return c > COLD_BYTES_MIN ? c : COLD_BYTES_MIN;
}

static uint64_t rng_next(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static double median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof t[0], cmp_double);
    return t[n / 2];
}

static void *alloc_or_complain(size_t bytes, const char *what)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) {
        gptq_cli_error("bench: out of memory (%zu bytes for %s)", bytes, what);
        return NULL;
    }
    return p;
}

/* ---- STREAM in-process -------------------------------------------------------- */

enum { S_COPY, S_TRIAD, S_READ, S_COUNT };

typedef struct stream_job {
    float *a, *b, *c;
    size_t begin, end;
    int kernel; /* S_* or -1: first touch */
    float sum;
} stream_job;

static void *stream_slice(void *p)
{
    stream_job *j = p;
    float *restrict a = j->a, *restrict b = j->b, *restrict c = j->c;

    switch (j->kernel) {
    case S_COPY:
        for (size_t i = j->begin; i < j->end; i++)
            a[i] = b[i];
        break;
    case S_TRIAD:
        for (size_t i = j->begin; i < j->end; i++)
            a[i] = b[i] + 3.0f * c[i];
        break;
    case S_READ: {
        float acc[16] = {0};
        size_t i = j->begin;
        for (; i + 16 <= j->end; i += 16)
            for (int l = 0; l < 16; l++)
                acc[l] += b[i + l];
        for (int l = 1; l < 16; l++)
            acc[0] += acc[l];
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

static double stream_pass(stream_job *jobs, int threads, int kernel)
{
    pthread_t tid[MAX_STREAM_THREADS];
    int started[MAX_STREAM_THREADS] = {0};
    double t0 = gptq_cli_now();

    for (int t = 0; t < threads; t++)
        jobs[t].kernel = kernel;
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&tid[t], NULL, stream_slice, &jobs[t]) == 0;
    stream_slice(&jobs[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            stream_slice(&jobs[t]);
    }
    return gptq_cli_now() - t0;
}

/* Best GB/s of copy, triad and read (STREAM's counting: 2, 3 and 1 arrays). */
static int measure_stream(int64_t mb, int threads, double gbs[S_COUNT])
{
    static const int arrays[S_COUNT] = {2, 3, 1};
    const size_t n = (size_t)mb * ((size_t)1 << 20) / sizeof(float);
    stream_job jobs[MAX_STREAM_THREADS];
    float *a = alloc_or_complain(n * sizeof(float), "STREAM");
    float *b = a ? alloc_or_complain(n * sizeof(float), "STREAM") : NULL;
    float *c = b ? alloc_or_complain(n * sizeof(float), "STREAM") : NULL;
    double t[5];

    if (!c) {
        free(a);
        free(b);
        return -1;
    }
    threads = threads < 1 ? 1 : threads > MAX_STREAM_THREADS ? MAX_STREAM_THREADS : threads;
    for (int i = 0; i < threads; i++) {
        jobs[i].a = a;
        jobs[i].b = b;
        jobs[i].c = c;
        jobs[i].begin = n / (size_t)threads * (size_t)i;
        jobs[i].end = i == threads - 1 ? n : n / (size_t)threads * (size_t)(i + 1);
    }
    stream_pass(jobs, threads, -1);
    for (int k = 0; k < S_COUNT; k++) {
        for (int r = 0; r < 5; r++)
            t[r] = stream_pass(jobs, threads, k);
        qsort(t, 5, sizeof t[0], cmp_double);
        gbs[k] = (double)arrays[k] * (double)n * sizeof(float) / t[0] * 1e-9;
    }
    free(a);
    free(b);
    free(c);
    return 0;
}

/* ---- OpenBLAS, found at run time ------------------------------------------------ */

/* CBLAS's constants and the two signatures (int dimensions: OpenBLAS's LP64 build). */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
typedef void (*sgemv_fn)(int, int, int, int, float, const float *, int, const float *, int,
                         float, float *, int);
typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *,
                         int, float, float *, int);

static int find_blas(sgemv_fn *gemv, sgemm_fn *gemm)
{
    void *pv = dlsym(RTLD_DEFAULT, "cblas_sgemv"), *pm = dlsym(RTLD_DEFAULT, "cblas_sgemm");
    if (!pv || !pm)
        return -1;
    /* ISO C has no object-to-function pointer conversion; copying the bits is what
     * POSIX guarantees to work for dlsym. */
    memcpy(gemv, &pv, sizeof *gemv);
    memcpy(gemm, &pm, sizeof *gemm);
    return 0;
}

/* ---- the layer --------------------------------------------------------------------- */

void gptq_cli_bench_free_packed(gptq_packed *p)
{
    free(p->qweight);
    free(p->qzeros);
    free(p->scales);
    free(p->g_idx);
}

/* Random codes, zero points and float16 scales (bench.h); wf gets the float32 dequantized
 * weights for the BLAS baseline. */
int gptq_cli_bench_make_layer(gptq_ctx *ctx, const gptq_cli_bench_args *a, gptq_packed *p,
                              float *wf)
{
    const int64_t R = a->out, C = a->in, ng = gptq_num_groups(C, a->group_size);
    const int32_t maxq = (1 << a->bits) - 1;
    uint64_t seed = 20261125;
    int64_t qw[2], qz[2];
    gptq_unpacked u;
    int rc = -1;

    memset(&u, 0, sizeof u);
    memset(p, 0, sizeof *p);
    if (ng < 1 || gptq_packed_shape(a->bits, R, C, ng, qw, qz) != GPTQ_OK) {
        gptq_cli_error("bench: %lld x %lld with group size %d is not a valid layer",
                       (long long)R, (long long)C, a->group_size);
        return -1;
    }
    u.bits = p->bits = a->bits;
    u.group_size = a->group_size;
    u.out_features = p->out_features = R;
    u.in_features = p->in_features = C;
    u.ngroups = p->ngroups = ng;
    p->format = GPTQ_FORMAT_V1;
    u.codes = alloc_or_complain((size_t)(R * C) * sizeof(int32_t), "codes");
    u.scales = alloc_or_complain((size_t)(ng * R) * sizeof(float), "scales");
    u.zeros = alloc_or_complain((size_t)(ng * R) * sizeof(int32_t), "zero points");
    u.g_idx = alloc_or_complain((size_t)C * sizeof(int32_t), "g_idx");
    p->qweight = alloc_or_complain((size_t)(qw[0] * qw[1]) * sizeof(int32_t), "qweight");
    p->qzeros = alloc_or_complain((size_t)(qz[0] * qz[1]) * sizeof(int32_t), "qzeros");
    p->scales = alloc_or_complain((size_t)(ng * R) * sizeof(uint16_t), "scales");
    p->g_idx = alloc_or_complain((size_t)C * sizeof(int32_t), "g_idx");
    if (u.codes && u.scales && u.zeros && u.g_idx && p->qweight && p->qzeros && p->scales &&
        p->g_idx) {
        for (int64_t i = 0; i < R * C; i++)
            u.codes[i] = (int32_t)(rng_next(&seed) % (uint64_t)(maxq + 1));
        for (int64_t i = 0; i < ng * R; i++) {
            u.zeros[i] = 1 + (int32_t)(rng_next(&seed) % (uint64_t)maxq);
            u.scales[i] = 0.001f + 0.01f * (float)(rng_next(&seed) % 1000u) / 1000.0f;
        }
        for (int64_t j = 0; j < C; j++)
            u.g_idx[j] = a->group_size < 0 ? 0 : (int32_t)(j / a->group_size);
        for (int64_t j = C - 1; a->act_order && j > 0; j--) {
            const int64_t k = (int64_t)(rng_next(&seed) % (uint64_t)(j + 1));
            const int32_t t = u.g_idx[j];
            u.g_idx[j] = u.g_idx[k];
            u.g_idx[k] = t;
        }
        if (gptq_pack(ctx, &u, GPTQ_PACK_CLEAN, p) != GPTQ_OK) {
            gptq_cli_error("bench: %s", gptq_ctx_last_error(ctx));
        } else {
            for (int64_t r = 0; wf && r < R; r++)
                for (int64_t j = 0; j < C; j++) {
                    const int64_t g = u.g_idx[j];
                    const float s = gptq_fp16_to_fp32(p->scales[g * R + r]);
                    wf[r * C + j] = s * (float)(u.codes[r * C + j] - u.zeros[g * R + r]);
                }
            rc = 0;
        }
    }
    free(u.codes);
    free(u.scales);
    free(u.zeros);
    free(u.g_idx);
    return rc;
}

/* ---- the benchmark ---------------------------------------------------------------- */

int gptq_cli_bench_too_large(const gptq_cli_bench_args *a)
{
    const int64_t R = a->out, C = a->in, M = a->batch;

    if (R > 0x7FFFFFFF || C > 0x7FFFFFFF || M > 0x7FFFFFFF || R * C > ((int64_t)1 << 34) ||
        M * (R + C) > ((int64_t)1 << 32)) {
        gptq_cli_error("bench: %lld x %lld at batch %lld is beyond what this benchmark "
                       "allocates",
                       (long long)R, (long long)C, (long long)M);
        return 1;
    }
    return 0;
}

typedef struct bench_state {
    gptq_qlinear **ql;
    int ncopies;
    float **wf; /* float32 weights, nf copies */
    int nf;
    float *x, *y;
    double *times;
} bench_state;

static void state_free(bench_state *s)
{
    for (int c = 0; s->ql && c < s->ncopies; c++)
        gptq_qlinear_free(s->ql[c]);
    for (int c = 0; s->wf && c < s->nf; c++)
        free(s->wf[c]);
    free(s->ql);
    free(s->wf);
    free(s->x);
    free(s->y);
    free(s->times);
}

static int run(const gptq_cli_bench_args *a, gptq_ctx *ctx)
{
    const int64_t R = a->out, C = a->in, M = a->batch;
    bench_state s;
    gptq_packed p;
    sgemv_fn gemv;
    sgemm_fn gemm;
    double wbytes, q_med, q_best, b_med, stream[S_COUNT], bw, io_bytes;
    uint64_t seed = 7;
    int rc = GPTQ_CLI_EXIT_FAIL;

    memset(&s, 0, sizeof s);
    if (find_blas(&gemv, &gemm) != 0) {
        gptq_cli_error("bench: OpenBLAS's cblas_sgemv/cblas_sgemm are not in this process; "
                       "the baseline cannot run");
        return GPTQ_CLI_EXIT_FAIL;
    }
    if (gptq_cli_bench_too_large(a))
        return GPTQ_CLI_EXIT_USAGE;
    s.nf = 1;
    s.wf = calloc(1, sizeof *s.wf);
    s.x = alloc_or_complain((size_t)(M * C) * sizeof(float), "x");
    s.y = alloc_or_complain((size_t)(M * R) * sizeof(float), "y");
    s.times = alloc_or_complain((size_t)a->reps * sizeof(double), "times");
    if (!s.wf || !s.x || !s.y || !s.times ||
        !(s.wf[0] = alloc_or_complain((size_t)(R * C) * sizeof(float), "float32 weights")))
        goto done;
    if (gptq_cli_bench_make_layer(ctx, a, &p, s.wf[0]) != 0)
        goto done_packed;
    for (int64_t i = 0; i < M * C; i++)
        s.x[i] = (float)((double)(rng_next(&seed) >> 11) * 0x1p-52 - 1.0);

    /* the prepared layer, copied until the copies leave the cache */
    s.ql = calloc(1, sizeof *s.ql);
    if (!s.ql || gptq_qlinear_create(ctx, &p, NULL, &s.ql[0]) != GPTQ_OK) {
        gptq_cli_error("bench: %s", s.ql ? gptq_ctx_last_error(ctx) : "out of memory");
        goto done_packed;
    }
    s.ncopies = 1;
    wbytes = (double)gptq_qlinear_weight_bytes(s.ql[0]);
    {
        const int want = a->warm ? 1 : (int)ceil(cold_bytes() / wbytes);
        gptq_qlinear **more = realloc(s.ql, (size_t)want * sizeof *s.ql);
        if (!more)
            goto done_packed;
        s.ql = more;
        for (; s.ncopies < want; s.ncopies++)
            if (gptq_qlinear_create(ctx, &p, NULL, &s.ql[s.ncopies]) != GPTQ_OK) {
                gptq_cli_error("bench: %s", gptq_ctx_last_error(ctx));
                goto done_packed;
            }
    }
    for (int c = 0; c < s.ncopies; c++)
        if (gptq_qlinear_set_kernel(ctx, s.ql[c], a->kernel) != GPTQ_OK) {
            gptq_cli_error("bench: --kernel %s: %s", gptq_qlinear_kernel_name(a->kernel),
                           gptq_ctx_last_error(ctx));
            rc = GPTQ_CLI_EXIT_FAIL;
            goto done_packed;
        }
    printf("layer %lld x %lld (out x in), %d-bit, group %d%s, batch %lld, kernel %s "
           "(avx2 %s, avx512 %s)\n",
           (long long)R, (long long)C, a->bits, a->group_size, a->act_order ? ", act-order" : "",
           (long long)M, gptq_qlinear_kernel_name(a->kernel),
           gptq_qlinear_kernel_available(GPTQ_QLINEAR_KERNEL_AVX2) ? "yes" : "no",
           gptq_qlinear_kernel_available(GPTQ_QLINEAR_KERNEL_AVX512) ? "yes" : "no");
    fflush(stdout);

    /* the kernel: one warm-up call per copy, then reps calls rotating over them */
    io_bytes = (double)(M * (C + R)) * sizeof(float);
    for (int c = 0; c < s.ncopies; c++)
        if (gptq_qlinear_forward(ctx, s.ql[c], s.x, M, s.y) != GPTQ_OK) {
            gptq_cli_error("bench: %s", gptq_ctx_last_error(ctx));
            goto done_packed;
        }
    for (int r = 0; r < a->reps; r++) {
        const double t0 = gptq_cli_now();
        (void)gptq_qlinear_forward(ctx, s.ql[(r + 1) % s.ncopies], s.x, M, s.y);
        s.times[r] = gptq_cli_now() - t0;
    }
    q_med = median(s.times, a->reps);
    q_best = s.times[0];
    printf("qlinear   median %10.1f us  best %10.1f us  %7.2f GB/s  (%.2f MB prepared "
           "weights + %.2f MB x, y; %s, %d cop%s)\n",
           q_med * 1e6, q_best * 1e6, (wbytes + io_bytes) / q_med * 1e-9, wbytes * 1e-6,
           io_bytes * 1e-6, a->warm ? "warm" : "cold", s.ncopies, s.ncopies == 1 ? "y" : "ies");
    fflush(stdout);

    /* OpenBLAS on float32 weights */
    {
        const double fbytes = (double)(R * C) * sizeof(float);
        const int want = a->warm ? 1 : (int)ceil(cold_bytes() / fbytes);
        float **more = realloc(s.wf, (size_t)want * sizeof *s.wf);
        if (!more)
            goto done_packed;
        s.wf = more;
        for (; s.nf < want; s.nf++) {
            s.wf[s.nf] = alloc_or_complain((size_t)(R * C) * sizeof(float), "float32 weights");
            if (!s.wf[s.nf])
                goto done_packed;
            memcpy(s.wf[s.nf], s.wf[0], (size_t)(R * C) * sizeof(float));
        }
        for (int r = -s.nf; r < a->reps; r++) {
            const float *w = s.wf[((r % s.nf) + s.nf) % s.nf];
            const double t0 = gptq_cli_now();
            if (M == 1)
                gemv(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, (int)R, (int)C, 1.0f, w, (int)C, s.x, 1,
                     0.0f, s.y, 1);
            else
                gemm(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS, (int)M, (int)R, (int)C, 1.0f,
                     s.x, (int)C, w, (int)C, 0.0f, s.y, (int)R);
            if (r >= 0)
                s.times[r] = gptq_cli_now() - t0;
        }
        b_med = median(s.times, a->reps);
        printf("openblas  median %10.1f us  best %10.1f us  %7.2f GB/s  (%s, %.2f MB float32 "
               "weights)\n",
               b_med * 1e6, s.times[0] * 1e6, (fbytes + io_bytes) / b_med * 1e-9,
               M == 1 ? "sgemv" : "sgemm", fbytes * 1e-6);
        fflush(stdout);
    }

    if (measure_stream(a->stream_mb,
                       a->threads > 0 ? a->threads : (int)sysconf(_SC_NPROCESSORS_ONLN),
                       stream) != 0)
        goto done_packed;
    bw = stream[S_COPY] > stream[S_TRIAD] ? stream[S_COPY] : stream[S_TRIAD];
    bw = stream[S_READ] > bw ? stream[S_READ] : bw;
    printf("stream    copy %.2f GB/s  triad %.2f GB/s  read %.2f GB/s  (3 x %lld MiB; best "
           "of 5)\n",
           stream[S_COPY], stream[S_TRIAD], stream[S_READ], (long long)a->stream_mb);
    printf("gbps=%.2f bw_share=%.2f speedup_vs_sgemv=%.2f\n", (wbytes + io_bytes) / q_med * 1e-9,
           (wbytes + io_bytes) / q_med * 1e-9 / bw, b_med / q_med);
    rc = fflush(stdout) == 0 ? GPTQ_CLI_EXIT_OK : GPTQ_CLI_EXIT_FAIL;

done_packed:
    gptq_cli_bench_free_packed(&p);
done:
    state_free(&s);
    return rc;
}

int gptq_cli_bench_main(int argc, char **argv)
{
    gptq_cli_bench_args a;
    gptq_ctx *ctx = NULL;
    int32_t backend;
    int rc;

    rc = parse(argc, argv, &a);
    if (a.help && rc == GPTQ_CLI_EXIT_OK) {
        gptq_cli_bench_usage(stdout);
        return GPTQ_CLI_EXIT_OK;
    }
    if (rc != GPTQ_CLI_EXIT_OK) {
        if (a.help)
            gptq_cli_bench_usage(stderr);
        else
            fputs("Try 'gptq bench --help'.\n", stderr);
        return rc;
    }
    /* Without a usable GPU, --backend cuda fails here with the library's reason. */
    if (gptq_cli_model_ctx(a.backend, a.device, a.threads, GPTQ_MATH_FP32, 0,
                           a.backend == GPTQ_BACKEND_CUDA ? "bench: --backend cuda" : "bench",
                           NULL, &ctx) != 0)
        return GPTQ_CLI_EXIT_FAIL;
    backend = gptq_ctx_backend(ctx);
    if (a.backend == GPTQ_BACKEND_AUTO)
        rc = check_backend_options(&a, backend, 1);
    if (rc == GPTQ_CLI_EXIT_OK)
        rc = backend == GPTQ_BACKEND_CUDA ? gptq_cli_bench_run_cuda(&a, ctx) : run(&a, ctx);
    gptq_ctx_free(ctx);
    return rc;
}
