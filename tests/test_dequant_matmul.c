/*
 * Tests of gptq_dequant_matmul (src/format/dequant_matmul.c, a one-shot gptq_qlinear):
 * against a naive dequantize-then-matmul in double over every bit width, v1/v2, group
 * sizes, act-order g_idx, batch sizes and odd shapes, within the error bound
 * gptq_qlinear_forward states; thread-count invariance; the reference cases'
 * dequantized weights Q (exact: with x = I every output is one weight); argument checks.
 */
#include <criterion/criterion.h>
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gptq/gptq.h"
#include "gptq/safetensors.h"
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

/* A layer with its packed tensors; `w16` is the dequantized weight with float16 scales
 * (what dequant_matmul must use), in double. */
typedef struct layer {
    gptq_unpacked u;
    gptq_packed p;
    double *w16; /* [R, C] */
} layer;

static void layer_alloc(layer *L, int32_t bits, int32_t format, int64_t R, int64_t C, int64_t ng)
{
    int64_t qw[2], qz[2];
    memset(L, 0, sizeof *L);
    L->u.bits = L->p.bits = bits;
    L->u.out_features = L->p.out_features = R;
    L->u.in_features = L->p.in_features = C;
    L->u.ngroups = L->p.ngroups = ng;
    L->p.format = format;
    L->u.codes = malloc((size_t)(R * C) * sizeof(int32_t));
    L->u.scales = malloc((size_t)(ng * R) * sizeof(float));
    L->u.zeros = malloc((size_t)(ng * R) * sizeof(int32_t));
    L->u.g_idx = malloc((size_t)C * sizeof(int32_t));
    cr_assert_eq(gptq_packed_shape(bits, R, C, ng, qw, qz), GPTQ_OK);
    L->p.qweight = malloc((size_t)(qw[0] * qw[1]) * sizeof(int32_t));
    L->p.qzeros = malloc((size_t)(qz[0] * qz[1]) * sizeof(int32_t));
    L->p.scales = malloc((size_t)(ng * R) * sizeof(uint16_t));
    L->p.g_idx = malloc((size_t)C * sizeof(int32_t));
    L->w16 = malloc((size_t)(R * C) * sizeof(double));
    cr_assert(L->u.codes && L->u.scales && L->u.zeros && L->u.g_idx && L->p.qweight &&
              L->p.qzeros && L->p.scales && L->p.g_idx && L->w16);
}

/* Pack (CLEAN) and compute w16 from the unpacked side. */
static void layer_pack(gptq_ctx *ctx, layer *L)
{
    const int64_t R = L->u.out_features, C = L->u.in_features;
    cr_assert_eq(gptq_pack(ctx, &L->u, GPTQ_PACK_CLEAN, &L->p), GPTQ_OK, "%s",
                 gptq_ctx_last_error(ctx));
    for (int64_t r = 0; r < R; r++)
        for (int64_t j = 0; j < C; j++) {
            int64_t g = L->u.g_idx[j];
            double s = gptq_fp16_to_fp32(gptq_fp32_to_fp16(L->u.scales[g * R + r]));
            L->w16[r * C + j] = s * (L->u.codes[r * C + j] - L->u.zeros[g * R + r]);
        }
}

static void layer_free(layer *L)
{
    free(L->u.codes);
    free(L->u.scales);
    free(L->u.zeros);
    free(L->u.g_idx);
    free(L->u.q);
    free(L->p.qweight);
    free(L->p.qzeros);
    free(L->p.scales);
    free(L->p.g_idx);
    free(L->w16);
}

static void layer_random(gptq_ctx *ctx, layer *L, int32_t bits, int32_t format, int64_t R,
                         int64_t C, int32_t gs, int act, uint64_t seed)
{
    const int64_t ng = gs < 0 ? 1 : (C + gs - 1) / gs;
    const int32_t maxq = (1 << bits) - 1;
    layer_alloc(L, bits, format, R, C, ng);
    L->u.group_size = gs;
    for (int64_t i = 0; i < R * C; i++)
        L->u.codes[i] = (int32_t)(rng_next(&seed) % (uint64_t)(maxq + 1));
    for (int64_t i = 0; i < ng * R; i++) {
        L->u.zeros[i] = (int32_t)(rng_next(&seed) % (uint64_t)(maxq + 1));
        L->u.scales[i] = 0.01f + 0.05f * fabsf(rng_uniform(&seed));
    }
    L->u.zeros[0] = 0; /* v1's awkward value and the top of the range */
    L->u.zeros[ng * R - 1] = maxq;
    for (int64_t j = 0; j < C; j++)
        L->u.g_idx[j] = gs < 0 ? 0 : (int32_t)(j / gs);
    if (act)
        for (int64_t j = C - 1; j > 0; j--) {
            int64_t k = (int64_t)(rng_next(&seed) % (uint64_t)(j + 1));
            int32_t t = L->u.g_idx[j];
            L->u.g_idx[j] = L->u.g_idx[k];
            L->u.g_idx[k] = t;
        }
    layer_pack(ctx, L);
}

/* The error bound gptq_qlinear_forward states for output row r of input row xb:
 * (C + 2 ng + 4) * 2^-24 * (sum_j |x_j| s_j (code_j + zero_j) + |bias|). The fused
 * kernels fold the zero point out of the inner loop, so the error scales with
 * code + zero rather than |code - zero| (a row whose codes all equal the zero point
 * gives a rounding-sized result, not an exact 0). */
static double bound(const layer *L, const float *xb, int64_t r, const float *bias)
{
    const int64_t R = L->u.out_features, C = L->u.in_features;
    double mag = bias ? fabs(bias[r]) : 0.0;
    for (int64_t j = 0; j < C; j++) {
        const int64_t g = L->u.g_idx[j];
        const double s = gptq_fp16_to_fp32(gptq_fp32_to_fp16(L->u.scales[g * R + r]));
        mag += fabs((double)xb[j]) * s * (L->u.codes[r * C + j] + L->u.zeros[g * R + r]);
    }
    return (double)(C + 2 * L->u.ngroups + 4) * 0x1p-24 * mag;
}

/* y against x * w16^T + bias in double, within the stated bound. */
static void check_against_naive(const layer *L, const float *x, int64_t batch, const float *bias,
                                const float *y, const char *what)
{
    const int64_t R = L->u.out_features, C = L->u.in_features;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t r = 0; r < R; r++) {
            double ref = bias ? bias[r] : 0.0;
            for (int64_t j = 0; j < C; j++)
                ref += (double)x[b * C + j] * L->w16[r * C + j];
            cr_assert(fabs(y[b * R + r] - ref) <= bound(L, x + b * C, r, bias),
                      "%s: y[%lld, %lld] = %.9g, expected %.9g", what, (long long)b,
                      (long long)r, (double)y[b * R + r], ref);
        }
}

Test(dequant_matmul, matches_naive_everywhere)
{
    static const int32_t bits[] = {2, 3, 4, 8};
    static const int32_t gss[] = {-1, 32, 128};
    static const int64_t batches[] = {1, 3, 17};
    static const struct { int64_t R, C; } shapes[] = {{40, 172}, {33, 1100}};
    gptq_ctx *ctx = new_ctx(3);
    uint64_t seed = 1234;

    for (size_t s = 0; s < 2; s++)
        for (size_t b = 0; b < 4; b++)
            for (int32_t fmt = GPTQ_FORMAT_V1; fmt <= GPTQ_FORMAT_V2; fmt++)
                for (size_t g = 0; g < 3; g++)
                    for (int act = 0; act <= 1; act++) {
                        const int64_t R = shapes[s].R, C = shapes[s].C;
                        layer L;
                        char what[128];
                        layer_random(ctx, &L, bits[b], fmt, R, C, gss[g], act, seed++);
                        for (size_t n = 0; n < 3; n++) {
                            const int64_t batch = batches[n];
                            float *x = malloc((size_t)(batch * C) * sizeof(float));
                            float *y = malloc((size_t)(batch * R) * sizeof(float));
                            float *bias = malloc((size_t)R * sizeof(float));
                            for (int64_t i = 0; i < batch * C; i++)
                                x[i] = rng_uniform(&seed);
                            for (int64_t i = 0; i < R; i++)
                                bias[i] = rng_uniform(&seed);
                            snprintf(what, sizeof what, "%lldx%lld b%d v%d gs%d act%d batch%lld",
                                     (long long)R, (long long)C, bits[b], fmt, gss[g], act,
                                     (long long)batch);
                            cr_assert_eq(gptq_dequant_matmul(ctx, &L.p, x, batch,
                                                             n == 1 ? NULL : bias, y),
                                         GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
                            check_against_naive(&L, x, batch, n == 1 ? NULL : bias, y, what);
                            free(x);
                            free(y);
                            free(bias);
                        }
                        layer_free(&L);
                    }
    gptq_ctx_free(ctx);
}

Test(dequant_matmul, thread_count_does_not_change_results)
{
    gptq_ctx *c1 = new_ctx(1), *c4 = new_ctx(4);
    layer L;
    const int64_t R = 203, C = 1500, batch = 5;
    float *x = malloc((size_t)(batch * C) * sizeof(float));
    float *y1 = malloc((size_t)(batch * R) * sizeof(float));
    float *y4 = malloc((size_t)(batch * R) * sizeof(float));
    uint64_t seed = 99;

    layer_random(c1, &L, 3, GPTQ_FORMAT_V1, R, C, 64, 1, 7);
    for (int64_t i = 0; i < batch * C; i++)
        x[i] = rng_uniform(&seed);
    cr_assert_eq(gptq_dequant_matmul(c1, &L.p, x, batch, NULL, y1), GPTQ_OK);
    cr_assert_eq(gptq_dequant_matmul(c4, &L.p, x, batch, NULL, y4), GPTQ_OK);
    cr_expect_eq(memcmp(y1, y4, (size_t)(batch * R) * sizeof(float)), 0);
    check_against_naive(&L, x, batch, NULL, y1, "threads");
    /* a NULL context runs on the calling thread */
    cr_assert_eq(gptq_dequant_matmul(NULL, &L.p, x, batch, NULL, y4), GPTQ_OK);
    cr_expect_eq(memcmp(y1, y4, (size_t)(batch * R) * sizeof(float)), 0);
    layer_free(&L);
    free(x);
    free(y1);
    free(y4);
    gptq_ctx_free(c1);
    gptq_ctx_free(c4);
}

Test(dequant_matmul, rejects_bad_arguments)
{
    gptq_ctx *ctx = new_ctx(1);
    layer L;
    float x[64], y[32];

    memset(x, 0, sizeof x);
    layer_random(ctx, &L, 4, GPTQ_FORMAT_V1, 32, 64, 32, 0, 5);
    cr_expect_eq(gptq_dequant_matmul(ctx, NULL, x, 1, NULL, y), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect_eq(gptq_dequant_matmul(ctx, &L.p, NULL, 1, NULL, y), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(gptq_ctx_last_error(ctx), "x is NULL") != NULL);
    cr_expect_eq(gptq_dequant_matmul(ctx, &L.p, x, 1, NULL, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect_eq(gptq_dequant_matmul(ctx, &L.p, x, 0, NULL, y), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(gptq_ctx_last_error(ctx), "batch = 0") != NULL);
    L.p.bits = 5;
    cr_expect_eq(gptq_dequant_matmul(ctx, &L.p, x, 1, NULL, y), GPTQ_ERR_NOT_SUPPORTED);
    L.p.bits = 4;
    L.p.format = 0;
    cr_expect_eq(gptq_dequant_matmul(ctx, &L.p, x, 1, NULL, y), GPTQ_ERR_INVALID_ARGUMENT);
    L.p.format = GPTQ_FORMAT_V2;
    L.p.g_idx[17] = 2;
    cr_expect_eq(gptq_dequant_matmul(ctx, &L.p, x, 1, NULL, y), GPTQ_ERR_MALFORMED);
    cr_expect(strstr(gptq_ctx_last_error(ctx), "g_idx[17] = 2") != NULL);
    L.p.g_idx[17] = 0;
    {
        int32_t *qw = L.p.qweight;
        L.p.qweight = NULL;
        cr_expect_eq(gptq_dequant_matmul(ctx, &L.p, x, 1, NULL, y), GPTQ_ERR_INVALID_ARGUMENT);
        L.p.qweight = qw;
    }
    L.p.in_features = 0;
    cr_expect_eq(gptq_dequant_matmul(ctx, &L.p, x, 1, NULL, y), GPTQ_ERR_INVALID_ARGUMENT);
    L.p.in_features = 64;
    cr_expect_eq(gptq_dequant_matmul(ctx, &L.p, x, 1, NULL, y), GPTQ_OK);
    layer_free(&L);
    gptq_ctx_free(ctx);
}

/* ---- the reference cases ------------------------------------------------------------ */

static int64_t meta_int(const gptq_safetensors *st, const char *key)
{
    const char *v = gptq_safetensors_metadata(st, key);
    cr_assert(v != NULL, "metadata %s missing", key);
    return strtoll(v, NULL, 10);
}

static void read_into(gptq_ctx *ctx, const gptq_safetensors *st, const char *name, void *dst,
                      size_t count, int is_float)
{
    int rc = is_float ? gptq_safetensors_read_f32(ctx, st, name, dst, count)
                      : gptq_safetensors_read_i32(ctx, st, name, dst, count);
    cr_assert_eq(rc, GPTQ_OK, "%s: %s", name, gptq_ctx_last_error(ctx));
}

/* Pack the case's codes cleanly (zero points of 0 survive in v1 that way), then:
 *  - x = I: every y[j, r] is exactly fl16(scale) * (code - zero), and within the float16
 *    rounding of the scale of the reference Q;
 *  - random x: y within the stated bound of x * Q16^T (double) and within 2^-11 (the float16
 *    rounding of the scales) of x * Q^T in norm. */
static void check_case(gptq_ctx *ctx, const char *path)
{
    const char *name = strrchr(path, '/') + 1;
    gptq_safetensors *st = NULL;
    gptq_tensor_info ti;
    layer L;
    uint64_t seed = 3;

    cr_assert_eq(gptq_safetensors_open(ctx, path, &st), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    const int32_t bits = (int32_t)meta_int(st, "bits");
    const int64_t R = meta_int(st, "out_features"), C = meta_int(st, "in_features");
    const int64_t ng = meta_int(st, "ngroups");
    layer_alloc(&L, bits, GPTQ_FORMAT_V1, R, C, ng);
    read_into(ctx, st, "scales_f32", L.u.scales, (size_t)(ng * R), 1);
    read_into(ctx, st, "zeros", L.u.zeros, (size_t)(ng * R), 0);
    read_into(ctx, st, "g_idx", L.u.g_idx, (size_t)C, 0);
    if (gptq_safetensors_find(st, "codes", &ti) == GPTQ_OK) {
        read_into(ctx, st, "codes", L.u.codes, (size_t)(R * C), 0);
    } else { /* compact case: codes = unpacked qweight */
        gptq_unpacked tmp = L.u;
        read_into(ctx, st, "qweight", L.p.qweight, (size_t)((C * bits / 32) * R), 0);
        read_into(ctx, st, "qzeros", L.p.qzeros, (size_t)(ng * (R * bits / 32)), 0);
        memcpy(L.p.g_idx, L.u.g_idx, (size_t)C * sizeof(int32_t));
        memset(L.p.scales, 0, (size_t)(ng * R) * sizeof(uint16_t));
        tmp.scales = malloc((size_t)(ng * R) * sizeof(float));
        tmp.zeros = malloc((size_t)(ng * R) * sizeof(int32_t));
        tmp.g_idx = malloc((size_t)C * sizeof(int32_t));
        cr_assert_eq(gptq_unpack(ctx, &L.p, GPTQ_PACK_CLEAN, &tmp), GPTQ_OK);
        free(tmp.scales);
        free(tmp.zeros);
        free(tmp.g_idx);
    }
    L.u.q = malloc((size_t)(R * C) * sizeof(float));
    if (gptq_safetensors_find(st, "Q", &ti) == GPTQ_OK) {
        read_into(ctx, st, "Q", L.u.q, (size_t)(R * C), 1);
    } else {
        for (int64_t r = 0; r < R; r++)
            for (int64_t j = 0; j < C; j++) {
                int64_t g = L.u.g_idx[j];
                L.u.q[r * C + j] =
                    L.u.scales[g * R + r] * (float)(L.u.codes[r * C + j] - L.u.zeros[g * R + r]);
            }
    }
    layer_pack(ctx, &L);

    {
        float *x = calloc((size_t)(C * C), sizeof(float));
        float *y = malloc((size_t)(C * R) * sizeof(float));
        for (int64_t j = 0; j < C; j++)
            x[j * C + j] = 1.0f;
        cr_assert_eq(gptq_dequant_matmul(ctx, &L.p, x, C, NULL, y), GPTQ_OK);
        for (int64_t r = 0; r < R; r++)
            for (int64_t j = 0; j < C; j++) {
                int64_t g = L.u.g_idx[j];
                float s = L.u.scales[g * R + r];
                float s16 = gptq_fp16_to_fp32(gptq_fp32_to_fp16(s));
                int32_t d = L.u.codes[r * C + j] - L.u.zeros[g * R + r];
                float q = L.u.q[r * C + j];
                float got = y[j * R + r];
                double tol = fmax(0x1p-11 * fabs(s), 0x1p-25) * abs(d) + 0x1p-23 * fabs(q);
                cr_assert_eq(got, s16 * (float)d, "%s: W[%lld, %lld]", name, (long long)r,
                             (long long)j);
                cr_assert(fabs((double)got - q) <= tol, "%s: W[%lld, %lld] = %g, Q = %g", name,
                          (long long)r, (long long)j, (double)got, (double)q);
            }
        free(x);
        free(y);
    }
    {
        const int64_t batch = 7;
        float *x = malloc((size_t)(batch * C) * sizeof(float));
        float *y = malloc((size_t)(batch * R) * sizeof(float));
        double err2 = 0.0, ref2 = 0.0;
        for (int64_t i = 0; i < batch * C; i++)
            x[i] = rng_uniform(&seed);
        cr_assert_eq(gptq_dequant_matmul(ctx, &L.p, x, batch, NULL, y), GPTQ_OK);
        for (int64_t b = 0; b < batch; b++)
            for (int64_t r = 0; r < R; r++) {
                double ref16 = 0.0, refq = 0.0;
                for (int64_t j = 0; j < C; j++) {
                    ref16 += (double)x[b * C + j] * L.w16[r * C + j];
                    refq += (double)x[b * C + j] * L.u.q[r * C + j];
                }
                cr_assert(fabs(y[b * R + r] - ref16) <= bound(&L, x + b * C, r, NULL),
                          "%s: y[%lld, %lld]", name, (long long)b, (long long)r);
                err2 += (y[b * R + r] - refq) * (y[b * R + r] - refq);
                ref2 += refq * refq;
            }
        cr_assert(sqrt(err2) <= 0x1p-11 * sqrt(ref2), "%s: |y - xQ^T| / |xQ^T| = %g", name,
                  sqrt(err2 / ref2));
        free(x);
        free(y);
    }
    layer_free(&L);
    gptq_safetensors_free(st);
}

Test(dequant_matmul, reference_cases)
{
    gptq_ctx *ctx = new_ctx(2);
    glob_t gl;
    cr_assert_eq(glob(GPTQ_TEST_DATA "/gptq-reference/p*.safetensors", 0, NULL, &gl), 0,
                 "no reference cases under " GPTQ_TEST_DATA);
    cr_expect_geq(gl.gl_pathc, 12);
    for (size_t i = 0; i < gl.gl_pathc; i++)
        check_case(ctx, gl.gl_pathv[i]);
    globfree(&gl);
    gptq_ctx_free(ctx);
}
