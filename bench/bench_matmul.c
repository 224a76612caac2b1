/*
 * bench_matmul: every gptq_qlinear kernel on one layer shape and batch, against
 * OpenBLAS on the same weights in float32 (SGEMV at batch 1, SGEMM otherwise) and the
 * one-shot gptq_dequant_matmul.
 *
 *   bench_matmul [--out R] [--in C] [--bits B] [--group-size G] [--batch M]
 *                [--act-order] [--threads T] [--reps K] [--warm]
 *
 * Weights are random codes, zero points and float16 scales packed as a v1 checkpoint.
 * Unless --warm is given, every timed call reads weights that are not in the caches:
 * the calls rotate over enough copies of the prepared layer (and of the float32
 * weights) to exceed 128 MiB, four times this machine's L3, as in a model's forward
 * pass where each layer's weights are read once per token. --warm repeats one copy
 * (its weights may then sit in L3). Times are medians of K calls (after one warm-up
 * call per copy); GB/s counts the bytes a call must move: the prepared weights
 * (codes, float16 scales, zero points), x and y; for BLAS the float32 weights, x and y.
 *
 * One line per kernel, then a machine-readable last line for the auto kernel:
 *   bench_matmul out=4096 in=4096 bits=4 group=128 act=0 batch=1 us=.. gbps=..
 *                blas_us=.. speedup=..
 *
 * CPU kernels only, on a CPU context, by design (it links CBLAS itself). The GPU
 * kernels are measured by `gptq bench matmul --backend cuda`, against cuBLAS float16.
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gptq/gptq.h"

#define COLD_BYTES ((double)(128u << 20))

static uint64_t rng_state = 0x243F6A8885A308D3ull;

static uint64_t rng_next(void) /* xorshift64 */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void *xmalloc(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64) != 0) {
        fprintf(stderr, "bench_matmul: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static void die_on(gptq_ctx *ctx, int rc, const char *what)
{
    if (rc != GPTQ_OK) {
        fprintf(stderr, "bench_matmul: %s: %s\n", what, gptq_ctx_last_error(ctx));
        exit(1);
    }
}

/* A random packed layer (v1, CLEAN) and its float32 dequantization [R, C]. */
static void make_layer(gptq_ctx *ctx, int32_t bits, int64_t R, int64_t C, int32_t gs, int act,
                       gptq_packed *p, float *wf)
{
    const int64_t ng = gptq_num_groups(C, gs);
    const int32_t maxq = (1 << bits) - 1;
    int64_t qw[2], qz[2];
    gptq_unpacked u;

    memset(&u, 0, sizeof u);
    u.bits = bits;
    u.group_size = gs;
    u.out_features = R;
    u.in_features = C;
    u.ngroups = ng;
    u.codes = xmalloc((size_t)(R * C) * sizeof(int32_t));
    u.scales = xmalloc((size_t)(ng * R) * sizeof(float));
    u.zeros = xmalloc((size_t)(ng * R) * sizeof(int32_t));
    u.g_idx = xmalloc((size_t)C * sizeof(int32_t));
    for (int64_t i = 0; i < R * C; i++)
        u.codes[i] = (int32_t)(rng_next() % (uint64_t)(maxq + 1));
    for (int64_t i = 0; i < ng * R; i++) {
        u.zeros[i] = 1 + (int32_t)(rng_next() % (uint64_t)maxq);
        u.scales[i] = gptq_fp16_to_fp32(
            gptq_fp32_to_fp16(0.001f + 0.01f * (float)(rng_next() % 1000) / 1000.0f));
    }
    for (int64_t j = 0; j < C; j++)
        u.g_idx[j] = gs < 0 ? 0 : (int32_t)(j / gs);
    if (act)
        for (int64_t j = C - 1; j > 0; j--) {
            int64_t k = (int64_t)(rng_next() % (uint64_t)(j + 1));
            int32_t t = u.g_idx[j];
            u.g_idx[j] = u.g_idx[k];
            u.g_idx[k] = t;
        }
    die_on(ctx, gptq_packed_shape(bits, R, C, ng, qw, qz), "gptq_packed_shape");
    p->bits = bits;
    p->format = GPTQ_FORMAT_V1;
    p->out_features = R;
    p->in_features = C;
    p->ngroups = ng;
    p->qweight = xmalloc((size_t)(qw[0] * qw[1]) * sizeof(int32_t));
    p->qzeros = xmalloc((size_t)(qz[0] * qz[1]) * sizeof(int32_t));
    p->scales = xmalloc((size_t)(ng * R) * sizeof(uint16_t));
    p->g_idx = xmalloc((size_t)C * sizeof(int32_t));
    die_on(ctx, gptq_pack(ctx, &u, GPTQ_PACK_CLEAN, p), "gptq_pack");
    for (int64_t r = 0; r < R; r++)
        for (int64_t j = 0; j < C; j++) {
            int64_t g = u.g_idx[j];
            wf[r * C + j] = u.scales[g * R + r] * (float)(u.codes[r * C + j] - u.zeros[g * R + r]);
        }
    free(u.codes);
    free(u.scales);
    free(u.zeros);
    free(u.g_idx);
}

int main(int argc, char **argv)
{
    int64_t R = 4096, C = 4096, batch = 1;
    int32_t bits = 4, gs = 128, threads = 0;
    int act = 0, reps = 30, warm = 0;
    gptq_ctx_options o;
    gptq_ctx *ctx = NULL;
    gptq_packed p;
    float *wf, *x, *y;
    gptq_qlinear **ql;
    int ncopies, nf;
    float **wcopies;
    double *times, t0, create_s, best_us = 0.0, blas_us, wbytes;
    static const int32_t kernels[] = {GPTQ_QLINEAR_KERNEL_AUTO, GPTQ_QLINEAR_KERNEL_PORTABLE,
                                      GPTQ_QLINEAR_KERNEL_AVX2, GPTQ_QLINEAR_KERNEL_AVX512,
                                      GPTQ_QLINEAR_KERNEL_SGEMM};

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--out") == 0 && v) R = atoll(argv[++i]);
        else if (strcmp(a, "--in") == 0 && v) C = atoll(argv[++i]);
        else if (strcmp(a, "--bits") == 0 && v) bits = atoi(argv[++i]);
        else if (strcmp(a, "--group-size") == 0 && v) gs = atoi(argv[++i]);
        else if (strcmp(a, "--batch") == 0 && v) batch = atoll(argv[++i]);
        else if (strcmp(a, "--threads") == 0 && v) threads = atoi(argv[++i]);
        else if (strcmp(a, "--reps") == 0 && v) reps = atoi(argv[++i]);
        else if (strcmp(a, "--act-order") == 0) act = 1;
        else if (strcmp(a, "--warm") == 0) warm = 1;
        else {
            fprintf(stderr, "usage: bench_matmul [--out R] [--in C] [--bits B] [--group-size G] "
                            "[--batch M] [--act-order] [--threads T] [--reps K] [--warm]\n");
            return 2;
        }
    }
    if (R < 1 || C < 1 || batch < 1 || reps < 1 || threads < 0) {
        fprintf(stderr, "bench_matmul: dimensions, batch and reps must be >= 1\n");
        return 2;
    }
    gptq_ctx_options_init(&o);
    o.threads = threads;
    if (gptq_ctx_create(&o, &ctx, NULL, 0) != GPTQ_OK) {
        fprintf(stderr, "bench_matmul: no context\n");
        return 1;
    }

    wf = xmalloc((size_t)(R * C) * sizeof(float));
    x = xmalloc((size_t)(batch * C) * sizeof(float));
    y = xmalloc((size_t)(batch * R) * sizeof(float));
    make_layer(ctx, bits, R, C, gs, act, &p, wf);
    for (int64_t i = 0; i < batch * C; i++)
        x[i] = (float)((double)(rng_next() >> 11) * 0x1p-53 * 2.0 - 1.0);

    t0 = now();
    ql = xmalloc(sizeof *ql);
    die_on(ctx, gptq_qlinear_create(ctx, &p, NULL, &ql[0]), "gptq_qlinear_create");
    create_s = now() - t0;
    wbytes = (double)gptq_qlinear_weight_bytes(ql[0]);
    ncopies = warm ? 1 : (int)ceil(COLD_BYTES / wbytes);
    gptq_qlinear_free(ql[0]);
    free(ql);
    ql = xmalloc((size_t)ncopies * sizeof *ql);
    for (int c = 0; c < ncopies; c++)
        die_on(ctx, gptq_qlinear_create(ctx, &p, NULL, &ql[c]), "gptq_qlinear_create");
    times = xmalloc((size_t)reps * sizeof(double));
    printf("layer %lld x %lld, %d-bit, group %d%s, batch %lld, threads %d (0: all cores), %s "
           "weights: %.2f MB prepared (%d copies), create %.1f ms\n",
           (long long)R, (long long)C, bits, gs, act ? ", act-order" : "", (long long)batch,
           threads, warm ? "warm" : "cold", wbytes * 1e-6, ncopies, create_s * 1e3);

    for (size_t k = 0; k < sizeof kernels / sizeof kernels[0]; k++) {
        const double bytes = wbytes + (double)(batch * (C + R)) * sizeof(float);
        if (!gptq_qlinear_kernel_available(kernels[k]))
            continue;
        for (int c = 0; c < ncopies; c++) {
            die_on(ctx, gptq_qlinear_set_kernel(ctx, ql[c], kernels[k]), "set_kernel");
            die_on(ctx, gptq_qlinear_forward(ctx, ql[c], x, batch, y), "forward");
        }
        for (int r = 0; r < reps; r++) {
            const gptq_qlinear *q = ql[(r + 1) % ncopies];
            t0 = now();
            die_on(ctx, gptq_qlinear_forward(ctx, q, x, batch, y), "forward");
            times[r] = now() - t0;
        }
        qsort(times, (size_t)reps, sizeof times[0], cmp_double);
        printf("  %-8s %9.1f us  %7.2f GB/s  (best %.1f us)\n",
               gptq_qlinear_kernel_name(kernels[k]), times[reps / 2] * 1e6,
               bytes / times[reps / 2] * 1e-9, times[0] * 1e6);
        if (kernels[k] == GPTQ_QLINEAR_KERNEL_AUTO)
            best_us = times[reps / 2] * 1e6;
    }

    /* one-shot: gptq_dequant_matmul from the packed tensors */
    for (int r = 0; r < (reps < 5 ? reps : 5); r++) {
        t0 = now();
        die_on(ctx, gptq_dequant_matmul(ctx, &p, x, batch, NULL, y), "dequant_matmul");
        times[r] = now() - t0;
    }
    qsort(times, (size_t)(reps < 5 ? reps : 5), sizeof times[0], cmp_double);
    printf("  %-8s %9.1f us  (gptq_dequant_matmul, one-shot)\n", "oneshot",
           times[(reps < 5 ? reps : 5) / 2] * 1e6);

    /* OpenBLAS on float32 weights, rotating over copies beyond the cache too */
    nf = warm ? 1 : (int)ceil(COLD_BYTES / ((double)(R * C) * sizeof(float)));
    wcopies = xmalloc((size_t)nf * sizeof *wcopies);
    wcopies[0] = wf;
    for (int c = 1; c < nf; c++) {
        wcopies[c] = xmalloc((size_t)(R * C) * sizeof(float));
        memcpy(wcopies[c], wf, (size_t)(R * C) * sizeof(float));
    }
    for (int r = -nf; r < reps; r++) {
        const float *w = wcopies[((r % nf) + nf) % nf];
        t0 = now();
        if (batch == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)R, (int)C, 1.0f, w, (int)C, x, 1, 0.0f,
                        y, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)batch, (int)R, (int)C, 1.0f,
                        x, (int)C, w, (int)C, 0.0f, y, (int)R);
        if (r >= 0)
            times[r] = now() - t0;
    }
    qsort(times, (size_t)reps, sizeof times[0], cmp_double);
    blas_us = times[reps / 2] * 1e6;
    printf("  %-8s %9.1f us  %7.2f GB/s  (OpenBLAS %s, float32 weights)\n", "blas", blas_us,
           ((double)(R * C) + (double)(batch * (C + R))) * sizeof(float) / (blas_us * 1e-6) * 1e-9,
           batch == 1 ? "sgemv" : "sgemm");
    printf("bench_matmul out=%lld in=%lld bits=%d group=%d act=%d batch=%lld us=%.1f gbps=%.2f "
           "blas_us=%.1f speedup=%.2f\n",
           (long long)R, (long long)C, bits, gs, act, (long long)batch, best_us,
           (wbytes + (double)(batch * (C + R)) * sizeof(float)) / (best_us * 1e-6) * 1e-9,
           blas_us, blas_us / best_us);

    for (int c = 0; c < ncopies; c++)
        gptq_qlinear_free(ql[c]);
    for (int c = 1; c < nf; c++)
        free(wcopies[c]);
    free(wcopies);
    free(ql);
    free(times);
    free(wf);
    free(x);
    free(y);
    free(p.qweight);
    free(p.qzeros);
    free(p.scales);
    free(p.g_idx);
    gptq_ctx_free(ctx);
    return 0;
}
