/*
 * bench_layer: time gptq_layer_quantize on one realistic layer.
 *
 *   bench_layer [--out R] [--in C] [--bits B] [--group-size G] [--act-order]
 *               [--rows N] [--reps K] [--threads T] [--inverse fast|reference]
 *               [--backend cpu|cuda] [--device N]
 *
 * W is heavy-tailed (Student-t-like) with lognormal row and column scales; X has
 * low-rank correlated structure, lognormal channel scales and a few outlier channels,
 * so H is a realistic, ill-conditioned Hessian. H is built from N rows of X (one
 * sample per 512 rows) and its time is reported separately: the figure of merit is
 * the quantization of one layer given H, as the Python references' fasterquant.
 * The share of time spent in BLAS/LAPACK calls (SYRK, GEMM, Cholesky, triangular
 * inverse) is measured by timing every backend call (the core's profile counters).
 * blas_share is the share of the wall time the calling thread spends inside BLAS/LAPACK
 * calls (the in-block loop of the next block overlaps the big GEMM on a helper thread).
 * The last line is machine-readable: first (cold) run, median and best of the reps:
 *   bench_layer out=4096 in=4096 bits=4 group=128 act=0 threads=2 first=1.6 median=1.1
 *               seconds=1.05 blas_share=0.89
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "gptq/gptq.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static double urand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return ((rng_state >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double nrand(void) { return sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand()); }

/* Student-t with 5 degrees of freedom. */
static double trand(void)
{
    double chi = 0.0;
    for (int i = 0; i < 5; i++) {
        double z = nrand();
        chi += z * z;
    }
    return nrand() / sqrt(chi / 5.0);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void make_w(float *w, int64_t R, int64_t C)
{
    float *cs = malloc(sizeof(float) * (size_t)C);
    for (int64_t j = 0; j < C; j++)
        cs[j] = (float)exp(0.3 * nrand());
    for (int64_t r = 0; r < R; r++) {
        float rs = (float)exp(0.3 * nrand());
        for (int64_t j = 0; j < C; j++)
            w[r * C + j] = (float)(0.02 * trand()) * rs * cs[j];
    }
    free(cs);
}

/* X = Z F + noise, scaled per channel; a few outlier channels. */
static void make_x(float *x, int64_t N, int64_t C)
{
    enum { K = 32 };
    float *f = malloc(sizeof(float) * K * (size_t)C), *sc = malloc(sizeof(float) * (size_t)C);
    for (int64_t i = 0; i < K * C; i++)
        f[i] = (float)nrand();
    for (int64_t j = 0; j < C; j++)
        sc[j] = (float)exp(0.5 * nrand()) * (j % 997 == 3 ? 10.0f : 1.0f);
    for (int64_t n = 0; n < N; n++) {
        float z[K];
        for (int k = 0; k < K; k++)
            z[k] = (float)nrand();
        for (int64_t j = 0; j < C; j++) {
            float v = 0.5f * (float)trand();
            for (int k = 0; k < K; k++)
                v += 0.3f * z[k] * f[k * C + j];
            x[n * C + j] = v * sc[j];
        }
    }
    free(f);
    free(sc);
}

int main(int argc, char **argv)
{
    int64_t R = 4096, C = 4096, rows = 8192;
    int bits = 4, gs = 128, act = 0, reps = 3, threads = 0, inverse = GPTQ_INVERSE_FAST;
    int backend = GPTQ_BACKEND_CPU, device = 0;
    gptq_ctx_options o;
    gptq_ctx *ctx;
    gptq_hessian *h;
    gptq_config cfg;
    char err[256];
    float *w, *x;
    double t0, th, best = 1e30, blas_best = 0, first = 0, times[64];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "0";
        if (!strcmp(a, "--out")) R = atoll(v), i++;
        else if (!strcmp(a, "--in")) C = atoll(v), i++;
        else if (!strcmp(a, "--bits")) bits = atoi(v), i++;
        else if (!strcmp(a, "--group-size")) gs = atoi(v), i++;
        else if (!strcmp(a, "--rows")) rows = atoll(v), i++;
        else if (!strcmp(a, "--reps")) reps = atoi(v), i++;
        else if (!strcmp(a, "--threads")) threads = atoi(v), i++;
        else if (!strcmp(a, "--act-order")) act = 1;
        else if (!strcmp(a, "--inverse")) inverse = !strcmp(v, "reference"), i++;
        else if (!strcmp(a, "--backend") && (!strcmp(v, "cpu") || !strcmp(v, "cuda")))
            backend = !strcmp(v, "cuda") ? GPTQ_BACKEND_CUDA : GPTQ_BACKEND_CPU, i++;
        else if (!strcmp(a, "--device")) device = atoi(v), i++;
        else {
            fprintf(stderr, "usage: bench_layer [--out R] [--in C] [--bits B] [--group-size G] "
                            "[--act-order] [--rows N] [--reps K] [--threads T] "
                            "[--inverse fast|reference] [--backend cpu|cuda] [--device N]\n");
            return 2;
        }
    }
    gptq_ctx_options_init(&o);
    o.threads = threads;
    o.backend = backend;
    o.device = device;
    if (gptq_ctx_create(&o, &ctx, err, sizeof err) != GPTQ_OK) {
        fprintf(stderr, "bench_layer: %s\n", err);
        return 1;
    }
    w = malloc(sizeof(float) * (size_t)(R * C));
    x = malloc(sizeof(float) * (size_t)(rows * C));
    if (!w || !x) {
        fprintf(stderr, "bench_layer: out of memory\n");
        return 1;
    }
    make_w(w, R, C);
    make_x(x, rows, C);
    gptq_hessian_create(ctx, C, &h);
    t0 = now();
    for (int64_t r0 = 0; r0 < rows; r0 += 512) {
        int64_t n = rows - r0 < 512 ? rows - r0 : 512;
        if (gptq_hessian_add(ctx, h, x + r0 * C, 1, n) != GPTQ_OK) {
            fprintf(stderr, "bench_layer: %s\n", gptq_ctx_last_error(ctx));
            return 1;
        }
    }
    th = now() - t0;
    free(x);

    gptq_config_init(&cfg);
    cfg.bits = bits;
    cfg.group_size = gs;
    cfg.desc_act = act;
    cfg.inverse = inverse;
    for (int rep = 0; rep < reps; rep++) {
        gptq_result *res;
        double t;
        memset(&ctx->prof, 0, sizeof ctx->prof);
        t0 = now();
        if (gptq_layer_quantize(ctx, w, R, C, h, &cfg, &res) != GPTQ_OK) {
            fprintf(stderr, "bench_layer: %s\n", gptq_ctx_last_error(ctx));
            return 1;
        }
        t = now() - t0;
        printf("rep %d: %.3f s (blas %.3f s: gemm %.3f, factor %.3f; block loop %.3f s) loss %.4g\n",
               rep, t, ctx->prof.blas_s, ctx->prof.gemm_s, ctx->prof.factor_s, ctx->prof.block_s,
               gptq_result_loss(res));
        if (rep < 64)
            times[rep] = t;
        if (rep == 0)
            first = t;
        if (t < best) {
            best = t;
            blas_best = ctx->prof.blas_s;
        }
        gptq_result_free(res);
    }
    printf("hessian: %lld rows in %.3f s (%.1f GFLOP/s)\n", (long long)rows, th,
           (double)rows * (double)C * (double)(C + 1) / th * 1e-9);
    {
        int n = reps < 64 ? reps : 64;
        for (int i = 1; i < n; i++) /* insertion sort for the median */
            for (int j = i; j > 0 && times[j] < times[j - 1]; j--) {
                double tt = times[j];
                times[j] = times[j - 1];
                times[j - 1] = tt;
            }
        printf("bench_layer out=%lld in=%lld bits=%d group=%d act=%d threads=%d first=%.3f "
               "median=%.3f seconds=%.3f blas_share=%.2f\n",
               (long long)R, (long long)C, bits, gs, act, (int)ctx->threads, first, times[n / 2],
               best, blas_best / best);
    }
    gptq_hessian_free(h);
    gptq_ctx_free(ctx);
    free(w);
    return 0;
}
