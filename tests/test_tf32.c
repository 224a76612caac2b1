/*
 * GPTQ_MATH_TF32 (gptq_ctx_options.math): option validation and older callers, the
 * host service that hands the mode to a backend module, the CPU backend's emulation
 * (operands rounded to TF32, round to nearest even, sums in float32), and its effect
 * on the public reference cases.
 */
#include <cblas.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "refcase.h"

static gptq_ctx *make_ctx(int32_t math, int32_t threads)
{
    gptq_ctx_options o;
    gptq_ctx *ctx = NULL;
    char err[256];
    gptq_ctx_options_init(&o);
    o.math = math;
    o.threads = threads;
    cr_assert_eq(gptq_ctx_create(&o, &ctx, err, sizeof err), GPTQ_OK, "%s", err);
    return ctx;
}

/* ---- options ------------------------------------------------------------------------ */

Test(tf32_options, default_is_fp32)
{
    gptq_ctx_options o;
    gptq_ctx *ctx;
    memset(&o, 0x5a, sizeof o);
    gptq_ctx_options_init(&o);
    cr_assert_eq(o.math, GPTQ_MATH_FP32);
    cr_assert_eq(gptq_ctx_create(NULL, &ctx, NULL, 0), GPTQ_OK);
    cr_assert_eq(ctx->opts.math, GPTQ_MATH_FP32);
    gptq_ctx_free(ctx);
}

Test(tf32_options, bad_values_refused)
{
    const int32_t bad[] = {-1, 2, 77};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gptq_ctx_options o;
        gptq_ctx *ctx = (gptq_ctx *)&o; /* must come back NULL */
        char err[256];
        gptq_ctx_options_init(&o);
        o.math = bad[i];
        cr_assert_eq(gptq_ctx_create(&o, &ctx, err, sizeof err), GPTQ_ERR_INVALID_ARGUMENT);
        cr_assert_null(ctx);
        cr_assert(strstr(err, "math mode") != NULL, "%s", err);
    }
}

Test(tf32_options, tf32_accepted)
{
    gptq_ctx *ctx = make_ctx(GPTQ_MATH_TF32, 0);
    cr_assert_eq(ctx->opts.math, GPTQ_MATH_TF32);
    gptq_ctx_free(ctx);
}

/* A caller built against the first layout passes a struct_size that ends before
 * `math` (on LP64 the member sits in that layout's tail padding, so the value is
 * offsetof(math) only for packed or 32-bit callers; the rule is the same): whatever
 * lies past its struct is not read, and it gets FP32. Smaller than the first layout
 * is refused. */
Test(tf32_options, older_struct_size_gets_fp32)
{
    gptq_ctx_options o;
    gptq_ctx *ctx = NULL;
    char err[256];

    gptq_ctx_options_init(&o);
    o.math = 7; /* garbage beyond the old struct: must be ignored */
    o.threads = 2;
    o.struct_size = (uint32_t)offsetof(gptq_ctx_options, math);
    cr_assert_eq(gptq_ctx_create(&o, &ctx, err, sizeof err), GPTQ_OK, "%s", err);
    cr_assert_eq(ctx->opts.math, GPTQ_MATH_FP32);
    cr_assert_eq(ctx->threads, 2, "the members the old struct has are still read");
    gptq_ctx_free(ctx);

    o.math = GPTQ_MATH_TF32;
    cr_assert_eq(gptq_ctx_create(&o, &ctx, err, sizeof err), GPTQ_OK, "%s", err);
    cr_assert_eq(ctx->opts.math, GPTQ_MATH_FP32);
    gptq_ctx_free(ctx);

    o.struct_size = (uint32_t)offsetof(gptq_ctx_options, log_level);
    cr_assert_eq(gptq_ctx_create(&o, &ctx, err, sizeof err), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(err, "struct_size") != NULL, "%s", err);
}

/* A module reads the mode through the host services (GPTQ_BACKEND_ABI 3): the stub
 * module's "math" mode fails init with the value it read. */
Test(tf32_options, host_service_reports_mode)
{
    char path[4096];
    gptq_ctx_options o;
    gptq_ctx *ctx = NULL;
    char err[256];

    snprintf(path, sizeof path, "%s/../gptq_stub_module.so", GPTQ_TEST_TMP);
    if (access(path, R_OK) != 0)
        cr_skip_test("stub module not built at %s", path);
    setenv("GPTQ_CUDA_MODULE_PATH", path, 1);
    setenv("STUB_MODE", "math", 1);
    for (int32_t m = GPTQ_MATH_FP32; m <= GPTQ_MATH_TF32; m++) {
        char want[64];
        gptq_ctx_options_init(&o);
        o.backend = GPTQ_BACKEND_CUDA;
        o.math = m;
        cr_assert_eq(gptq_ctx_create(&o, &ctx, err, sizeof err), GPTQ_ERR_DEVICE, "%s", err);
        snprintf(want, sizeof want, "stub: math mode %d", (int)m);
        cr_assert(strstr(err, want) != NULL, "%s (want %s)", err, want);
    }
    unsetenv("STUB_MODE");
    unsetenv("GPTQ_CUDA_MODULE_PATH");
}

/* ---- the CPU emulation ---------------------------------------------------------------- */

/* Hand-rounded reference, written differently from the backend's bit trick: scale the
 * value so that its 10 mantissa bits are the integer part, round that with the
 * default (nearest, ties to even) mode in double, scale back. */
static float ref_tf32(float f)
{
    int e;
    if (f == 0.0f || !isfinite(f))
        return f;
    (void)frexp((double)f, &e); /* f = m 2^e, 0.5 <= |m| < 1: leading bit 2^(e-1) */
    if (e - 1 < -126)
        e = -125; /* subnormal: the ulp stays 2^-136 for TF32 (2^-149 << 13) */
    return (float)ldexp(nearbyint(ldexp((double)f, 10 - (e - 1))), (e - 1) - 10);
}

Test(tf32_emulation, rounding_rule)
{
    /* 1 + 2^-11 is halfway between 1 and 1 + 2^-10: to even (1). 1 + 3 2^-11 is
     * halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even): up. Just past a tie: up. */
    cr_assert_eq(ref_tf32(1.0f + 0x1p-11f), 1.0f);
    cr_assert_eq(ref_tf32(1.0f + 3 * 0x1p-11f), 1.0f + 0x1p-9f);
    cr_assert_eq(ref_tf32(1.0f + 0x1p-11f + 0x1p-23f), 1.0f + 0x1p-10f);
    cr_assert_eq(ref_tf32(-(1.0f + 3 * 0x1p-11f)), -(1.0f + 0x1p-9f));
}

static float *random_mat(int64_t n, unsigned seed)
{
    float *x = malloc(sizeof(float) * (size_t)n);
    srand(seed);
    for (int64_t i = 0; i < n; i++) {
        /* Values with bits below TF32's 10: a random 24-bit mantissa, exponents spread. */
        float m = 1.0f + (float)(rand() & 0x7fffff) * 0x1p-23f;
        x[i] = ldexpf(rand() & 1 ? -m : m, rand() % 7 - 3);
    }
    /* and a few exact ties */
    x[0] = 1.0f + 0x1p-11f;
    x[1] = 1.0f + 3 * 0x1p-11f;
    return x;
}

/* Exact case: operands whose TF32 roundings are small multiples of 2^-10, so every
 * product and sum is exact in float32 and the expected result is known exactly. */
Test(tf32_emulation, gemm_exact_small)
{
    gptq_ctx *t = make_ctx(GPTQ_MATH_TF32, 1), *f = make_ctx(GPTQ_MATH_FP32, 1);
    /* a [2, 3], b [3, 2]; each entry = k 2^-10 plus bits TF32 drops */
    float a[6], b[6], ct[4], cf[4];
    double want[4];
    for (int i = 0; i < 6; i++) {
        a[i] = (float)(1024 + 37 * i) * 0x1p-10f + 0x1p-17f * (float)(i + 1);
        b[i] = (float)(1024 + 91 * i) * 0x1p-10f - 0x1p-16f;
    }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            want[i * 2 + j] = 0.0;
            for (int k = 0; k < 3; k++)
                want[i * 2 + j] += (double)ref_tf32(a[i * 3 + k]) * ref_tf32(b[k * 2 + j]);
        }
    cr_assert_eq(t->backend->gemm(t, 0, 0, 2, 2, 3, 1.0f, a, 3, b, 2, 0.0f, ct, 2), GPTQ_OK);
    cr_assert_eq(f->backend->gemm(f, 0, 0, 2, 2, 3, 1.0f, a, 3, b, 2, 0.0f, cf, 2), GPTQ_OK);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq((double)ct[i], want[i], "c[%d] = %.9g, want %.9g", i, ct[i], want[i]);
        cr_assert_neq(ct[i], cf[i], "c[%d]: FP32 gave the TF32 value", i);
    }
    gptq_ctx_free(t);
    gptq_ctx_free(f);
}

/* Every transpose combination on sub-matrices with leading dimensions larger than the
 * rows: the TF32 result equals OpenBLAS on hand-rounded packed copies, bit for bit,
 * and differs from the FP32 result. Entries of c outside the sub-matrix are untouched. */
Test(tf32_emulation, gemm_submatrices)
{
    const int64_t m = 37, n = 29, k = 45, pad = 7;
    gptq_ctx *t = make_ctx(GPTQ_MATH_TF32, 1), *f = make_ctx(GPTQ_MATH_FP32, 1);
    float *big_a = random_mat((k + pad) * (k + pad), 11);
    float *big_b = random_mat((k + pad) * (k + pad), 12);
    for (int ta = 0; ta <= 1; ta++)
        for (int tb = 0; tb <= 1; tb++) {
            int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
            int64_t lda = ac + pad, ldb = bc + pad, ldc = n + pad;
            const float *a = big_a + 3, *b = big_b + 5; /* not at a row start */
            float *ra = malloc(sizeof(float) * (size_t)(ar * ac));
            float *rb = malloc(sizeof(float) * (size_t)(br * bc));
            float *ct = malloc(sizeof(float) * (size_t)(m * ldc));
            float *cf = malloc(sizeof(float) * (size_t)(m * ldc));
            float *cr = malloc(sizeof(float) * (size_t)(m * ldc));
            int64_t differ = 0;
            for (int64_t i = 0; i < ar; i++)
                for (int64_t j = 0; j < ac; j++)
                    ra[i * ac + j] = ref_tf32(a[i * lda + j]);
            for (int64_t i = 0; i < br; i++)
                for (int64_t j = 0; j < bc; j++)
                    rb[i * bc + j] = ref_tf32(b[i * ldb + j]);
            for (int64_t i = 0; i < m * ldc; i++)
                ct[i] = cf[i] = cr[i] = 0.25f * (float)(i % 13);
            cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                        tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, -1.0f, ra, (int)ac,
                        rb, (int)bc, 1.0f, cr, (int)ldc);
            cr_assert_eq(t->backend->gemm(t, ta, tb, m, n, k, -1.0f, a, lda, b, ldb, 1.0f, ct, ldc),
                         GPTQ_OK);
            cr_assert_eq(f->backend->gemm(f, ta, tb, m, n, k, -1.0f, a, lda, b, ldb, 1.0f, cf, ldc),
                         GPTQ_OK);
            for (int64_t i = 0; i < m; i++)
                for (int64_t j = 0; j < ldc; j++) {
                    float want = j < n ? cr[i * ldc + j] : 0.25f * (float)((i * ldc + j) % 13);
                    cr_assert_eq(ct[i * ldc + j], want,
                                 "trans %d%d: c[%lld][%lld] = %.9g, want %.9g", ta, tb,
                                 (long long)i, (long long)j, ct[i * ldc + j], want);
                    differ += ct[i * ldc + j] != cf[i * ldc + j];
                }
            cr_assert_gt(differ, m * n / 2, "trans %d%d: only %lld of %lld differ from FP32", ta,
                         tb, (long long)differ, (long long)(m * n));
            free(ra);
            free(rb);
            free(ct);
            free(cf);
            free(cr);
        }
    free(big_a);
    free(big_b);
    gptq_ctx_free(t);
    gptq_ctx_free(f);
}

Test(tf32_emulation, syrk)
{
    const int64_t n = 33, rows = 70;
    gptq_ctx *t = make_ctx(GPTQ_MATH_TF32, 1), *f = make_ctx(GPTQ_MATH_FP32, 1);
    float *x = random_mat(rows * n, 21), *xr = malloc(sizeof(float) * (size_t)(rows * n));
    float *x0 = random_mat(rows * n, 21);
    float *ht = malloc(sizeof(float) * (size_t)(n * n));
    float *hf = malloc(sizeof(float) * (size_t)(n * n));
    float *hr = malloc(sizeof(float) * (size_t)(n * n));
    int64_t differ = 0;

    for (int64_t i = 0; i < rows * n; i++)
        xr[i] = ref_tf32(x[i]);
    for (int64_t i = 0; i < n * n; i++)
        ht[i] = hf[i] = hr[i] = 0.5f;
    cr_assert_eq(t->backend->syrk(t, n, rows, x, 0.75f, ht), GPTQ_OK);
    cr_assert_eq(f->backend->syrk(f, n, rows, x, 0.75f, hf), GPTQ_OK);
    /* The reference: the FP32 path (itself a SYRK plus mirror) on the rounded rows. */
    cr_assert_eq(f->backend->syrk(f, n, rows, xr, 0.75f, hr), GPTQ_OK);
    for (int64_t i = 0; i < n * n; i++) {
        cr_assert_eq(ht[i], hr[i], "h[%lld] = %.9g, want %.9g", (long long)i, ht[i], hr[i]);
        differ += ht[i] != hf[i];
    }
    cr_assert_gt(differ, n * n / 2, "only %lld of %lld differ from FP32", (long long)differ,
                 (long long)(n * n));
    cr_assert_eq(memcmp(x, x0, sizeof(float) * (size_t)(rows * n)), 0, "x was modified");
    free(x);
    free(x0);
    free(xr);
    free(ht);
    free(hf);
    free(hr);
    gptq_ctx_free(t);
    gptq_ctx_free(f);
}

/* ---- the reference cases under TF32 ------------------------------------------------------ */

typedef struct outcome {
    judge j;
    double codes_vs_fp32; /* fraction of codes equal to the FP32 run's */
    double loss;          /* gptq_result_loss */
} outcome;

static void quantize(const refcase *rc, int32_t math, int use_x, gptq_result **res)
{
    gptq_ctx *ctx = make_ctx(math, 0);
    gptq_hessian *h = NULL;
    gptq_config cfg;
    cr_assert_eq(refcase_hessian(ctx, rc, use_x, &h), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    refcase_config(rc, &cfg);
    cr_assert_eq(gptq_layer_quantize(ctx, rc->W, rc->out, rc->in, h, &cfg, res), GPTQ_OK, "%s: %s",
                 rc->name, gptq_ctx_last_error(ctx));
    gptq_hessian_free(h);
    gptq_ctx_free(ctx);
}

static outcome run_case(const refcase *rc, int use_x)
{
    gptq_result *r32, *rtf;
    outcome o;
    int64_t same = 0, n = rc->out * rc->in;

    quantize(rc, GPTQ_MATH_FP32, use_x, &r32);
    quantize(rc, GPTQ_MATH_TF32, use_x, &rtf);
    o.j = refcase_judge(rc, gptq_result_codes(rtf), gptq_result_q(rtf), gptq_result_scales(rtf),
                        gptq_result_zeros(rtf));
    for (int64_t i = 0; i < n; i++)
        same += gptq_result_codes(rtf)[i] == gptq_result_codes(r32)[i];
    o.codes_vs_fp32 = (double)same / (double)n;
    o.loss = gptq_result_loss(rtf) / gptq_result_loss(r32);
    gptq_result_free(r32);
    gptq_result_free(rtf);
    return o;
}

/* With the case's H only the lazy block GEMM sees TF32; with H from X the Hessian
 * does too.
 *
 * TF32 does NOT pass the README's rule (tests/test_reference.c) on every case: its
 * codes_equal >= min(0.999, floor) part fails. Measured with this emulation (OpenBLAS
 * 0.3.21, 2 vCPUs; docs/benchmarks.md, "TF32 mode"): codes_equal 0.99745..1 with the
 * case's H (2 of 12 cases fail the rule: p10 0.99878, p11 0.99745), 0.98767..1 with H
 * from X (6 of 12 fail: lowest p11 0.98767, p06 0.99487). The FP32 run gives the
 * references' codes on these cases, so every differing code is TF32's doing. The other
 * two parts hold unchanged: loss_ratio <= 1.00024, params_equal 1.
 * So this test keeps loss_ratio <= 1.01 and params_equal >= 0.999 exactly as the rule
 * says, and pins codes_equal at >= 0.98, below the lowest measured value, so a change
 * in the emulation that moves codes further shows here. It prints whether each case
 * passes the full rule. */
#define TF32_MIN_CODES_EQUAL 0.98

static void all_cases(int use_x)
{
    int n, full = 0;
    char **list = refcase_list(&n);
    cr_assert_geq(n, 12, "reference cases missing from " GPTQ_TEST_DATA);
    for (int i = 0; i < n; i++) {
        refcase rc;
        outcome o;
        cr_assert_eq(refcase_load(list[i], &rc), 0, "cannot load %s", list[i]);
        o = run_case(&rc, use_x);
        full += o.j.pass;
        printf("TF32 %-46s H=%s codes_equal=%.6f loss_ratio=%.5f params_equal=%.6f "
               "codes_vs_fp32=%.6f loss_tf32/fp32=%.6f rule:%s\n",
               rc.name, use_x ? "X" : "case", o.j.codes_equal, o.j.loss_ratio, o.j.params_equal,
               o.codes_vs_fp32, o.loss, o.j.pass ? "PASS" : "FAIL(codes)");
        cr_expect_leq(o.j.loss_ratio, 1.01, "%s (TF32, H from %s): loss_ratio %.5f", rc.name,
                      use_x ? "X" : "case", o.j.loss_ratio);
        cr_expect_geq(o.j.params_equal, 0.999, "%s (TF32, H from %s): params_equal %.6f",
                      rc.name, use_x ? "X" : "case", o.j.params_equal);
        cr_expect_geq(o.j.codes_equal, TF32_MIN_CODES_EQUAL,
                      "%s (TF32, H from %s): codes_equal %.6f, below the measured bound %.2f",
                      rc.name, use_x ? "X" : "case", o.j.codes_equal, TF32_MIN_CODES_EQUAL);
        refcase_free(&rc);
    }
    printf("TF32 H=%s: %d of %d cases pass the full reference rule\n", use_x ? "X" : "case",
           full, n);
    refcase_list_free(list, n);
}

Test(tf32_reference, case_hessian, .timeout = 600) { all_cases(0); }
Test(tf32_reference, hessian_from_x, .timeout = 600) { all_cases(1); }
