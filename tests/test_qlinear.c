/*
 * Tests of gptq_qlinear (src/format/qlinear.c, src/cpu/qlinear_*.c): every kernel this
 * CPU runs (portable, AVX2, AVX-512, SGEMM, auto) against the reference dequantization
 * with a float64 matmul, over bits x groups x act-order x sym/asym x v1/v2 x batch and
 * odd shapes, within the bound the header states:
 *
 *     |y - y_ref| <= (C + 2 ns + 4) * 2^-24 * (sum_j |x_j| s_j (q_j + z_j) + |bias|)
 *
 * (C input columns, ns groups present). Kernels missing on this CPU are reported with
 * cr_log_warn and skipped; the rest must also be independent of the thread count, give
 * the same result from float16/bfloat16 inputs as from their float32 widening, and let
 * NaN inputs propagate without touching other batch rows.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gptq/gptq.h"
#include "format/qlinear.h" /* white-box: the dequantizers of the large-batch path */
#include "qlayer.h"
#include "testrng.h"

static gptq_ctx *new_ctx(int32_t threads)
{
    gptq_ctx_options o;
    gptq_ctx *ctx = NULL;
    gptq_ctx_options_init(&o);
    o.threads = threads;
    cr_assert_eq(gptq_ctx_create(&o, &ctx, NULL, 0), GPTQ_OK);
    return ctx;
}

static const int32_t all_kernels[] = {GPTQ_QLINEAR_KERNEL_PORTABLE, GPTQ_QLINEAR_KERNEL_AVX2,
                                      GPTQ_QLINEAR_KERNEL_AVX512, GPTQ_QLINEAR_KERNEL_SGEMM,
                                      GPTQ_QLINEAR_KERNEL_AUTO};
#define NKERNELS (sizeof all_kernels / sizeof all_kernels[0])

/* Every available kernel on one layer for every batch size. */
static void run_layer(gptq_ctx *ctx, const qlayer *L, const char *what, uint64_t seed)
{
    static const int64_t batches[] = {1, 2, 3, 4, 7, 16, 33, 64};
    gptq_qlinear *ql[2] = {NULL, NULL};
    const int64_t R = L->R, C = L->C;

    cr_assert_eq(gptq_qlinear_create(ctx, &L->p, NULL, &ql[0]), GPTQ_OK, "%s: %s", what,
                 gptq_ctx_last_error(ctx));
    cr_assert_eq(gptq_qlinear_create(ctx, &L->p, L->bias, &ql[1]), GPTQ_OK, "%s: %s", what,
                 gptq_ctx_last_error(ctx));
    cr_assert_eq(gptq_qlinear_out_features(ql[0]), R);
    cr_assert_eq(gptq_qlinear_in_features(ql[0]), C);
    cr_assert_eq(gptq_qlinear_bits(ql[0]), L->bits);
    for (size_t n = 0; n < sizeof batches / sizeof batches[0]; n++) {
        const int64_t batch = batches[n];
        const int with_bias = n % 2;
        float *x = malloc((size_t)(batch * C) * sizeof(float));
        float *y = malloc((size_t)(batch * R) * sizeof(float));
        double *ref = malloc((size_t)(batch * R) * sizeof(double));
        double *tol = malloc((size_t)(batch * R) * sizeof(double));
        cr_assert(x && y && ref && tol);
        for (int64_t i = 0; i < batch * C; i++)
            x[i] = rng_uniform(&seed);
        qlayer_reference(L, x, batch, with_bias, QLAYER_BOUND_CPU, ref, tol);
        for (size_t k = 0; k < NKERNELS; k++) {
            char msg[256];
            if (!gptq_qlinear_kernel_available(all_kernels[k]))
                continue;
            cr_assert_eq(gptq_qlinear_set_kernel(ctx, ql[with_bias], all_kernels[k]), GPTQ_OK);
            snprintf(msg, sizeof msg, "%s batch %lld bias %d kernel %s", what, (long long)batch,
                     with_bias, gptq_qlinear_kernel_name(all_kernels[k]));
            for (int64_t i = 0; i < batch * R; i++)
                y[i] = NAN;
            cr_assert_eq(gptq_qlinear_forward(ctx, ql[with_bias], x, batch, y), GPTQ_OK, "%s: %s",
                         msg, gptq_ctx_last_error(ctx));
            qlayer_check(ref, tol, y, batch * R, msg);
        }
        free(x);
        free(y);
        free(ref);
        free(tol);
    }
    gptq_qlinear_free(ql[0]);
    gptq_qlinear_free(ql[1]);
}

Test(qlinear, kernels_on_cpu)
{
    cr_log_info("kernels: portable 1, avx2 %d, avx512 %d",
                gptq_qlinear_kernel_available(GPTQ_QLINEAR_KERNEL_AVX2),
                gptq_qlinear_kernel_available(GPTQ_QLINEAR_KERNEL_AVX512));
    if (!gptq_qlinear_kernel_available(GPTQ_QLINEAR_KERNEL_AVX2))
        cr_log_warn("this CPU has no AVX2: the AVX2 kernel is not tested here");
    if (!gptq_qlinear_kernel_available(GPTQ_QLINEAR_KERNEL_AVX512))
        cr_log_warn("this CPU has no AVX-512: the AVX-512 kernel is not tested here");
    cr_expect_eq(gptq_qlinear_kernel_available(GPTQ_QLINEAR_KERNEL_PORTABLE), 1);
    cr_expect_eq(gptq_qlinear_kernel_available(GPTQ_QLINEAR_KERNEL_SGEMM), 1);
    cr_expect_eq(gptq_qlinear_kernel_available(GPTQ_QLINEAR_KERNEL_AUTO), 1);
    cr_expect_eq(gptq_qlinear_kernel_available(8), 0);
    for (int32_t k = GPTQ_QLINEAR_KERNEL_CUDA_GEMV; k <= GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS; k++)
        cr_expect_eq(gptq_qlinear_kernel_available(k),
                     gptq_backend_available(GPTQ_BACKEND_CUDA, NULL, 0));
    cr_expect_str_eq(gptq_qlinear_kernel_name(GPTQ_QLINEAR_KERNEL_CUDA_GEMV), "cuda_gemv");
    cr_expect_str_eq(gptq_qlinear_kernel_name(GPTQ_QLINEAR_KERNEL_CUDA_MMA), "cuda_mma");
    cr_expect_str_eq(gptq_qlinear_kernel_name(GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS), "cuda_cublas");
    cr_expect_eq(gptq_qlinear_kernel_available(-1), 0);
    cr_expect_str_eq(gptq_qlinear_kernel_name(GPTQ_QLINEAR_KERNEL_AVX512), "avx512");
    cr_expect_str_eq(gptq_qlinear_kernel_name(GPTQ_QLINEAR_KERNEL_PORTABLE), "portable");
    cr_expect_str_eq(gptq_qlinear_kernel_name(42), "unknown");
}

/* bits x group x act-order x sym/asym x v1/v2 on a 40 x 256 layer (40: two tiles, the
 * second partial), every batch, every kernel. */
Test(qlinear, matches_reference_everywhere)
{
    static const int32_t bits[] = {2, 3, 4, 8};
    static const int32_t gss[] = {-1, 32, 128, 100};
    gptq_ctx *ctx = new_ctx(2);
    uint64_t seed = 42;

    for (size_t b = 0; b < 4; b++)
        for (size_t g = 0; g < 4; g++)
            for (int act = 0; act <= 1; act++)
                for (int sym = 0; sym <= 1; sym++)
                    for (int32_t fmt = GPTQ_FORMAT_V1; fmt <= GPTQ_FORMAT_V2; fmt++) {
                        qlayer L;
                        char what[128];
                        qlayer_make(ctx, &L, bits[b], fmt, 40, 256, gss[g], act, sym, seed++);
                        snprintf(what, sizeof what, "40x256 b%d gs%d act%d sym%d v%d", bits[b],
                                 gss[g], act, sym, fmt);
                        run_layer(ctx, &L, what, seed++);
                        qlayer_free(&L);
                    }
    gptq_ctx_free(ctx);
}

/* Shapes that are not multiples of anything: rows below one tile, a single row,
 * columns not a multiple of 32 (the packing allows any), odd groups, act-order. */
Test(qlinear, odd_shapes)
{
    static const struct {
        int64_t R, C;
        int32_t bits, gs;
        int act;
    } cases[] = {
        {1, 64, 4, 32, 0},   {7, 100, 4, 7, 1},   {17, 200, 3, 64, 1}, {33, 1100, 2, 128, 1},
        {15, 37, 8, -1, 0},  {31, 96, 3, 32, 0},  {50, 520, 4, 65, 1}, {16, 33, 2, 11, 0},
        {129, 384, 8, 128, 1}, {3, 9, 3, 4, 1},
    };
    gptq_ctx *ctx = new_ctx(3);
    uint64_t seed = 7;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        qlayer L;
        char what[128];
        qlayer_make(ctx, &L, cases[i].bits, GPTQ_FORMAT_V1 + (int32_t)(i % 2), cases[i].R,
                   cases[i].C, cases[i].gs, cases[i].act, (int)(i % 3 == 0), seed++);
        snprintf(what, sizeof what, "%lldx%lld b%d gs%d act%d", (long long)cases[i].R,
                 (long long)cases[i].C, cases[i].bits, cases[i].gs, cases[i].act);
        run_layer(ctx, &L, what, seed++);
        qlayer_free(&L);
    }
    gptq_ctx_free(ctx);
}

/* A g_idx that skips groups and is not sorted: segments only for the groups present. */
Test(qlinear, sparse_and_unsorted_g_idx)
{
    gptq_ctx *ctx = new_ctx(2);
    qlayer L;

    qlayer_make(ctx, &L, 4, GPTQ_FORMAT_V2, 24, 160, 32, 0, 0, 99);
    for (int64_t j = 0; j < L.C; j++)
        L.g_idx[j] = (int32_t)((j * 7) % 5 == 1 ? 1 : ((j * 7) % 5 == 3 ? 3 : 4));
    memcpy(L.p.g_idx, L.g_idx, (size_t)L.C * sizeof(int32_t));
    /* the codes are packed already; only g_idx changed, so the reference uses it too */
    run_layer(ctx, &L, "sparse g_idx", 5);
    qlayer_free(&L);
    gptq_ctx_free(ctx);
}

Test(qlinear, thread_count_does_not_change_results)
{
    gptq_ctx *c1 = new_ctx(1), *c2 = new_ctx(2), *c5 = new_ctx(5);
    qlayer L;
    const int64_t batch = 5;
    gptq_qlinear *ql;
    uint64_t seed = 3;

    /* Large enough that the fused path really splits its tiles over threads. */
    qlayer_make(c1, &L, 4, GPTQ_FORMAT_V1, 1024, 2048, 128, 1, 0, 11);
    cr_assert_eq(gptq_qlinear_create(c5, &L.p, L.bias, &ql), GPTQ_OK);
    {
        float *x = malloc((size_t)(batch * L.C) * sizeof(float));
        float *y1 = malloc((size_t)(batch * L.R) * sizeof(float));
        float *y2 = malloc((size_t)(batch * L.R) * sizeof(float));
        cr_assert(x && y1 && y2);
        for (int64_t i = 0; i < batch * L.C; i++)
            x[i] = rng_uniform(&seed);
        for (size_t k = 0; k < NKERNELS; k++) {
            if (!gptq_qlinear_kernel_available(all_kernels[k]))
                continue;
            cr_assert_eq(gptq_qlinear_set_kernel(c1, ql, all_kernels[k]), GPTQ_OK);
            cr_assert_eq(gptq_qlinear_forward(c1, ql, x, batch, y1), GPTQ_OK);
            cr_assert_eq(gptq_qlinear_forward(c2, ql, x, batch, y2), GPTQ_OK);
            cr_expect_eq(memcmp(y1, y2, (size_t)(batch * L.R) * sizeof(float)), 0, "%s 1 vs 2",
                         gptq_qlinear_kernel_name(all_kernels[k]));
            cr_assert_eq(gptq_qlinear_forward(c5, ql, x, batch, y2), GPTQ_OK);
            cr_expect_eq(memcmp(y1, y2, (size_t)(batch * L.R) * sizeof(float)), 0, "%s 1 vs 5",
                         gptq_qlinear_kernel_name(all_kernels[k]));
            cr_assert_eq(gptq_qlinear_forward(NULL, ql, x, batch, y2), GPTQ_OK);
            cr_expect_eq(memcmp(y1, y2, (size_t)(batch * L.R) * sizeof(float)), 0,
                         "%s 1 vs NULL ctx", gptq_qlinear_kernel_name(all_kernels[k]));
        }
        free(x);
        free(y1);
        free(y2);
    }
    /* the handle made with 5 threads equals one made with 1 */
    {
        gptq_qlinear *q1;
        float x[2048], ya[1024], yb[1024];
        for (int64_t i = 0; i < 2048; i++)
            x[i] = rng_uniform(&seed);
        cr_assert_eq(gptq_qlinear_create(c1, &L.p, L.bias, &q1), GPTQ_OK);
        cr_assert_eq(gptq_qlinear_set_kernel(c1, ql, GPTQ_QLINEAR_KERNEL_PORTABLE), GPTQ_OK);
        cr_assert_eq(gptq_qlinear_set_kernel(c1, q1, GPTQ_QLINEAR_KERNEL_PORTABLE), GPTQ_OK);
        cr_assert_eq(gptq_qlinear_forward(c1, ql, x, 1, ya), GPTQ_OK);
        cr_assert_eq(gptq_qlinear_forward(c1, q1, x, 1, yb), GPTQ_OK);
        cr_expect_eq(memcmp(ya, yb, sizeof ya), 0);
        cr_expect_eq(gptq_qlinear_weight_bytes(ql), gptq_qlinear_weight_bytes(q1));
        gptq_qlinear_free(q1);
    }
    gptq_qlinear_free(ql);
    qlayer_free(&L);
    gptq_ctx_free(c1);
    gptq_ctx_free(c2);
    gptq_ctx_free(c5);
}

/* float16 / bfloat16 inputs give exactly what their float32 widening gives. */
Test(qlinear, half_precision_inputs)
{
    gptq_ctx *ctx = new_ctx(2);
    qlayer L;
    gptq_qlinear *ql;
    const int64_t batch = 3;
    uint16_t xh[3 * 192], xb[3 * 192];
    float xf[3 * 192], xbf[3 * 192], y1[3 * 48], y2[3 * 48];
    uint64_t seed = 8;

    qlayer_make(ctx, &L, 4, GPTQ_FORMAT_V1, 48, 192, 64, 1, 0, 12);
    cr_assert_eq(gptq_qlinear_create(ctx, &L.p, L.bias, &ql), GPTQ_OK);
    for (int64_t i = 0; i < batch * 192; i++) {
        float v = rng_uniform(&seed) * 3.0f;
        uint32_t bits;
        xh[i] = gptq_fp32_to_fp16(v);
        xf[i] = gptq_fp16_to_fp32(xh[i]);
        memcpy(&bits, &v, sizeof bits);
        xb[i] = (uint16_t)(bits >> 16); /* truncation: any bfloat16 is fine */
        bits = (uint32_t)xb[i] << 16;
        memcpy(&xbf[i], &bits, sizeof bits);
    }
    for (size_t k = 0; k < NKERNELS; k++) {
        if (!gptq_qlinear_kernel_available(all_kernels[k]))
            continue;
        cr_assert_eq(gptq_qlinear_set_kernel(ctx, ql, all_kernels[k]), GPTQ_OK);
        cr_assert_eq(gptq_qlinear_forward(ctx, ql, xf, batch, y1), GPTQ_OK);
        cr_assert_eq(gptq_qlinear_forward_f16(ctx, ql, xh, batch, y2), GPTQ_OK);
        cr_expect_eq(memcmp(y1, y2, sizeof y1), 0, "f16 %s",
                     gptq_qlinear_kernel_name(all_kernels[k]));
        cr_assert_eq(gptq_qlinear_forward(ctx, ql, xbf, batch, y1), GPTQ_OK);
        cr_assert_eq(gptq_qlinear_forward_bf16(ctx, ql, xb, batch, y2), GPTQ_OK);
        cr_expect_eq(memcmp(y1, y2, sizeof y1), 0, "bf16 %s",
                     gptq_qlinear_kernel_name(all_kernels[k]));
    }
    gptq_qlinear_free(ql);
    qlayer_free(&L);
    gptq_ctx_free(ctx);
}

/* NaN in one batch row: that row's outputs are NaN, the other rows are unaffected. */
Test(qlinear, nan_input_propagates)
{
    gptq_ctx *ctx = new_ctx(2);
    qlayer L;
    gptq_qlinear *ql;
    float x[3 * 128], y[3 * 20], yref[3 * 20];
    uint64_t seed = 21;

    qlayer_make(ctx, &L, 4, GPTQ_FORMAT_V2, 20, 128, 32, 1, 0, 13);
    cr_assert_eq(gptq_qlinear_create(ctx, &L.p, L.bias, &ql), GPTQ_OK);
    for (int i = 0; i < 3 * 128; i++)
        x[i] = rng_uniform(&seed);
    for (size_t k = 0; k < NKERNELS; k++) {
        if (!gptq_qlinear_kernel_available(all_kernels[k]))
            continue;
        cr_assert_eq(gptq_qlinear_set_kernel(ctx, ql, all_kernels[k]), GPTQ_OK);
        x[128 + 77] = 1.0f;
        cr_assert_eq(gptq_qlinear_forward(ctx, ql, x, 3, yref), GPTQ_OK);
        x[128 + 77] = NAN;
        cr_assert_eq(gptq_qlinear_forward(ctx, ql, x, 3, y), GPTQ_OK);
        for (int r = 0; r < 20; r++) {
            cr_expect(isnan(y[20 + r]), "%s: y[1, %d] = %g",
                      gptq_qlinear_kernel_name(all_kernels[k]), r, (double)y[20 + r]);
            cr_expect_eq(y[r], yref[r]);
            cr_expect_eq(y[40 + r], yref[40 + r]);
        }
    }
    gptq_qlinear_free(ql);
    qlayer_free(&L);
    gptq_ctx_free(ctx);
}

/* gptq_dequant_matmul gives what a prepared handle gives. */
Test(qlinear, dequant_matmul_agrees)
{
    gptq_ctx *ctx = new_ctx(2);
    qlayer L;
    gptq_qlinear *ql;
    static const int64_t batches[] = {1, 5, 40};
    uint64_t seed = 5;

    qlayer_make(ctx, &L, 3, GPTQ_FORMAT_V1, 70, 320, 64, 1, 0, 14);
    cr_assert_eq(gptq_qlinear_create(ctx, &L.p, L.bias, &ql), GPTQ_OK);
    for (size_t n = 0; n < 3; n++) {
        const int64_t batch = batches[n];
        float *x = malloc((size_t)(batch * L.C) * sizeof(float));
        float *y1 = malloc((size_t)(batch * L.R) * sizeof(float));
        float *y2 = malloc((size_t)(batch * L.R) * sizeof(float));
        cr_assert(x && y1 && y2);
        for (int64_t i = 0; i < batch * L.C; i++)
            x[i] = rng_uniform(&seed);
        cr_assert_eq(gptq_qlinear_forward(ctx, ql, x, batch, y1), GPTQ_OK);
        cr_assert_eq(gptq_dequant_matmul(ctx, &L.p, x, batch, L.bias, y2), GPTQ_OK);
        cr_expect_eq(memcmp(y1, y2, (size_t)(batch * L.R) * sizeof(float)), 0, "batch %lld",
                     (long long)batch);
        free(x);
        free(y1);
        free(y2);
    }
    gptq_qlinear_free(ql);
    qlayer_free(&L);
    gptq_ctx_free(ctx);
}

Test(qlinear, weight_bytes)
{
    gptq_ctx *ctx = new_ctx(1);
    qlayer L;
    gptq_qlinear *ql, *qb;

    /* 2 tiles x 16 rows x (32 blocks x 4 bytes + 2 groups x (2 + 1) bytes) */
    qlayer_make(ctx, &L, 4, GPTQ_FORMAT_V1, 32, 256, 128, 0, 1, 15);
    cr_assert_eq(gptq_qlinear_create(ctx, &L.p, NULL, &ql), GPTQ_OK);
    cr_assert_eq(gptq_qlinear_create(ctx, &L.p, L.bias, &qb), GPTQ_OK);
    cr_expect_eq(gptq_qlinear_weight_bytes(ql), 32u * (32u * 4u + 2u * 3u));
    cr_expect_eq(gptq_qlinear_weight_bytes(qb), 32u * (32u * 4u + 2u * 3u + 4u));
    cr_expect_eq(gptq_qlinear_weight_bytes(NULL), 0u);
    gptq_qlinear_free(ql);
    gptq_qlinear_free(qb);
    qlayer_free(&L);
    gptq_ctx_free(ctx);
}

Test(qlinear, kernel_from_environment)
{
    gptq_ctx *ctx = new_ctx(1);
    qlayer L;
    gptq_qlinear *ql;

    qlayer_make(ctx, &L, 2, GPTQ_FORMAT_V1, 16, 64, 32, 0, 1, 16);
    cr_assert_eq(setenv("GPTQ_QLINEAR_KERNEL", "portable", 1), 0);
    cr_assert_eq(gptq_qlinear_create(ctx, &L.p, NULL, &ql), GPTQ_OK);
    cr_expect_eq(gptq_qlinear_kernel(ql), GPTQ_QLINEAR_KERNEL_PORTABLE);
    gptq_qlinear_free(ql);
    cr_assert_eq(setenv("GPTQ_QLINEAR_KERNEL", "sgemm", 1), 0);
    cr_assert_eq(gptq_qlinear_create(ctx, &L.p, NULL, &ql), GPTQ_OK);
    cr_expect_eq(gptq_qlinear_kernel(ql), GPTQ_QLINEAR_KERNEL_SGEMM);
    gptq_qlinear_free(ql);
    cr_assert_eq(setenv("GPTQ_QLINEAR_KERNEL", "vector9000", 1), 0);
    cr_assert_eq(gptq_qlinear_create(ctx, &L.p, NULL, &ql), GPTQ_OK);
    cr_expect_eq(gptq_qlinear_kernel(ql), GPTQ_QLINEAR_KERNEL_AUTO);
    gptq_qlinear_free(ql);
    cr_assert_eq(unsetenv("GPTQ_QLINEAR_KERNEL"), 0);
    cr_assert_eq(gptq_qlinear_create(ctx, &L.p, NULL, &ql), GPTQ_OK);
    cr_expect_eq(gptq_qlinear_kernel(ql), GPTQ_QLINEAR_KERNEL_AUTO);
    gptq_qlinear_free(ql);
    qlayer_free(&L);
    gptq_ctx_free(ctx);
}

Test(qlinear, rejects_bad_arguments)
{
    gptq_ctx *ctx = new_ctx(1);
    qlayer L;
    gptq_qlinear *ql = NULL, *bad = (gptq_qlinear *)&L;
    float x[64] = {0}, y[32];

    qlayer_make(ctx, &L, 4, GPTQ_FORMAT_V1, 32, 64, 32, 0, 0, 17);
    cr_expect_eq(gptq_qlinear_create(ctx, NULL, NULL, &ql), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect_eq(gptq_qlinear_create(ctx, &L.p, NULL, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(gptq_ctx_last_error(ctx), "out is NULL") != NULL);
    L.p.bits = 5;
    cr_expect_eq(gptq_qlinear_create(ctx, &L.p, NULL, &bad), GPTQ_ERR_NOT_SUPPORTED);
    cr_expect_null(bad, "*out is NULL after a failure");
    L.p.bits = 4;
    L.p.format = 3;
    cr_expect_eq(gptq_qlinear_create(ctx, &L.p, NULL, &ql), GPTQ_ERR_INVALID_ARGUMENT);
    L.p.format = GPTQ_FORMAT_V1;
    L.p.g_idx[9] = 2;
    cr_expect_eq(gptq_qlinear_create(ctx, &L.p, NULL, &ql), GPTQ_ERR_MALFORMED);
    cr_expect(strstr(gptq_ctx_last_error(ctx), "g_idx[9] = 2") != NULL);
    L.p.g_idx[9] = -1;
    cr_expect_eq(gptq_qlinear_create(ctx, &L.p, NULL, &ql), GPTQ_ERR_MALFORMED);
    L.p.g_idx[9] = 0;
    L.p.in_features = -64;
    cr_expect_eq(gptq_qlinear_create(ctx, &L.p, NULL, &ql), GPTQ_ERR_INVALID_ARGUMENT);
    L.p.in_features = 64;
    {
        int32_t *qz = L.p.qzeros;
        L.p.qzeros = NULL;
        cr_expect_eq(gptq_qlinear_create(ctx, &L.p, NULL, &ql), GPTQ_ERR_INVALID_ARGUMENT);
        L.p.qzeros = qz;
    }
    cr_assert_eq(gptq_qlinear_create(ctx, &L.p, NULL, &ql), GPTQ_OK);

    cr_expect_eq(gptq_qlinear_forward(ctx, NULL, x, 1, y), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect_eq(gptq_qlinear_forward(ctx, ql, NULL, 1, y), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(gptq_ctx_last_error(ctx), "x is NULL") != NULL);
    cr_expect_eq(gptq_qlinear_forward(ctx, ql, x, 1, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect_eq(gptq_qlinear_forward(ctx, ql, x, 0, y), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(gptq_ctx_last_error(ctx), "batch = 0") != NULL);
    cr_expect_eq(gptq_qlinear_forward(ctx, ql, x, -3, y), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect_eq(gptq_qlinear_forward_f16(ctx, ql, NULL, 1, y), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect_eq(gptq_qlinear_forward_bf16(ctx, ql, (const uint16_t *)x, 0, y),
                 GPTQ_ERR_INVALID_ARGUMENT);
    /* a batch whose size overflows is refused before anything is allocated */
    cr_expect_eq(gptq_qlinear_forward(ctx, ql, x, INT64_MAX / 8, y), GPTQ_ERR_INVALID_ARGUMENT);

    cr_expect_eq(gptq_qlinear_set_kernel(ctx, NULL, GPTQ_QLINEAR_KERNEL_AUTO),
                 GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect_eq(gptq_qlinear_set_kernel(ctx, ql, 17), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect_eq(gptq_qlinear_set_kernel(ctx, ql, -1), GPTQ_ERR_INVALID_ARGUMENT);
    if (!gptq_qlinear_kernel_available(GPTQ_QLINEAR_KERNEL_AVX512))
        cr_expect_eq(gptq_qlinear_set_kernel(ctx, ql, GPTQ_QLINEAR_KERNEL_AVX512),
                     GPTQ_ERR_NOT_SUPPORTED);
    cr_expect_eq(gptq_qlinear_kernel(ql), GPTQ_QLINEAR_KERNEL_AUTO);
    cr_expect_eq(gptq_qlinear_kernel(NULL), -1);
    cr_expect_eq(gptq_qlinear_in_features(NULL), 0);
    cr_expect_eq(gptq_qlinear_out_features(NULL), 0);
    cr_expect_eq(gptq_qlinear_bits(NULL), 0);
    /* the handle keeps no pointer into the packed tensors */
    memset(L.p.qweight, 0xFF, sizeof(int32_t) * 8 * 32);
    cr_expect_eq(gptq_qlinear_forward(NULL, ql, x, 1, y), GPTQ_OK);
    for (int r = 0; r < 32; r++)
        cr_expect_eq(y[r], 0.0f);
    gptq_qlinear_free(ql);
    gptq_qlinear_free(NULL);
    qlayer_free(&L);
    gptq_ctx_free(ctx);
}

/* The large-batch path's dequantizers (portable, AVX2, AVX-512) against the reference
 * dequantization, bit for bit: w = fl16(scale) * (code - zero) rounded once. */
Test(qlinear, dequantizers_are_exact)
{
    static const struct {
        int32_t bits, gs;
        int act;
    } cases[] = {{2, 32, 0}, {3, 64, 1}, {4, 128, 1}, {8, -1, 0}, {4, 20, 0}, {3, -1, 0}};
    static const struct {
        gptq__ql_dequant_fn fn;
        int32_t kernel;
    } fns[] = {{gptq__ql_dequant_portable, GPTQ_QLINEAR_KERNEL_PORTABLE},
               {gptq__ql_dequant_avx2, GPTQ_QLINEAR_KERNEL_AVX2},
               {gptq__ql_dequant_avx512, GPTQ_QLINEAR_KERNEL_AVX512}};
    gptq_ctx *ctx = new_ctx(1);

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int64_t R = 37, C = 160;
        qlayer L;
        gptq_qlinear *ql;
        float *w = malloc((size_t)(C * R) * sizeof(float));
        cr_assert(w);
        qlayer_make(ctx, &L, cases[i].bits, GPTQ_FORMAT_V1 + (int32_t)(i % 2), R, C, cases[i].gs,
                   cases[i].act, 0, 100 + i);
        cr_assert_eq(gptq_qlinear_create(ctx, &L.p, NULL, &ql), GPTQ_OK);
        for (size_t f = 0; f < 3; f++) {
            if (!gptq_qlinear_kernel_available(fns[f].kernel))
                continue;
            for (int64_t k = 0; k < C * R; k++)
                w[k] = NAN;
            for (int64_t t = 0; t < (R + 15) / 16; t++)
                fns[f].fn(ql, t, w + t * 16, R, R - t * 16 < 16 ? (int)(R - t * 16) : 16);
            for (int64_t r = 0; r < R; r++)
                for (int64_t j = 0; j < C; j++) {
                    const int64_t g = L.g_idx[j];
                    const float ref = L.scales[g * R + r] *
                                      (float)(L.codes[r * C + j] - L.zeros[g * R + r]);
                    cr_assert_eq(w[j * R + r], ref, "bits %d %s: W[%lld, %lld] = %g, not %g",
                                 cases[i].bits, gptq_qlinear_kernel_name(fns[f].kernel),
                                 (long long)r, (long long)j, (double)w[j * R + r], (double)ref);
                }
        }
        gptq_qlinear_free(ql);
        qlayer_free(&L);
        free(w);
    }
    gptq_ctx_free(ctx);
}

/* The GPU entry points with a CPU context or a CPU handle: clear refusals, no crash. */
Test(qlinear, gpu_calls_on_cpu_handles)
{
    gptq_ctx *ctx = new_ctx(1);
    qlayer L;
    gptq_qlinear *ql = NULL;
    float x[64], y[16];
    double bw = 1.0, sec = 0.0;
    int32_t k = -1;

    qlayer_make(ctx, &L, 4, GPTQ_FORMAT_V1, 16, 64, 32, 0, 1, 21);
    cr_assert_eq(gptq_qlinear_create(ctx, &L.p, NULL, &ql), GPTQ_OK);
    for (int i = 0; i < 64; i++)
        x[i] = 0.5f;
    for (int32_t kern = GPTQ_QLINEAR_KERNEL_CUDA_GEMV; kern <= GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS;
         kern++) {
        cr_expect_eq(gptq_qlinear_set_kernel(ctx, ql, kern), GPTQ_ERR_NOT_SUPPORTED);
        cr_expect(strstr(gptq_ctx_last_error(ctx), "CPU context") != NULL, "%s",
                  gptq_ctx_last_error(ctx));
    }
    cr_expect_eq(gptq_qlinear_kernel(ql), GPTQ_QLINEAR_KERNEL_AUTO);
    cr_expect_eq(gptq_qlinear_forward_device(ctx, ql, x, GPTQ_QLINEAR_DTYPE_F32, 1, y,
                                             GPTQ_QLINEAR_DTYPE_F32),
                 GPTQ_ERR_NOT_SUPPORTED);
    cr_expect(strstr(gptq_ctx_last_error(ctx), "CUDA context") != NULL, "%s",
              gptq_ctx_last_error(ctx));
    cr_expect_eq(gptq_qlinear_forward_device(ctx, NULL, x, GPTQ_QLINEAR_DTYPE_F32, 1, y,
                                             GPTQ_QLINEAR_DTYPE_F32),
                 GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect_eq(gptq_qlinear_bench_device(ctx, ql, 1, 10, &k, &sec, NULL),
                 GPTQ_ERR_NOT_SUPPORTED);
    cr_expect_eq(gptq_ctx_synchronize(ctx), GPTQ_OK);
    cr_expect_eq(gptq_ctx_synchronize(NULL), GPTQ_OK);
    cr_expect_eq(gptq_ctx_device_bandwidth(ctx, &bw), GPTQ_ERR_NOT_SUPPORTED);
    cr_expect_eq(bw, 0.0);
    cr_expect_eq(gptq_ctx_device_bandwidth(ctx, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    /* The CPU path is untouched by all of this. */
    cr_expect_eq(gptq_qlinear_forward(ctx, ql, x, 1, y), GPTQ_OK);
    gptq_qlinear_free(ql);
    qlayer_free(&L);
    gptq_ctx_free(ctx);
}
