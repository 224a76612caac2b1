/*
 * The CUDA backend (src/cuda, libgptq-cuda.so.0).
 *
 * Without a GPU: the real module, loaded through GPTQ_CUDA_MODULE_PATH, must refuse
 * backend "cuda" with GPTQ_ERR_DEVICE and a clear message, and "auto" must fall back to
 * the CPU and log why. Every test that needs a GPU reports itself SKIPPED, with the
 * reason, when no CUDA context can be created: never passed.
 *
 * With a GPU: each primitive of the table against the CPU backend's (the in-block
 * kernel bit for bit on identical inputs), then every public reference case through
 * the CUDA backend with the CPU's pass rule, printing how the GPU and CPU results
 * compare.
 */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "gptq/model.h"
#include "core/quantizer.h"
#include "model/model.h"
#include "qlayer.h"
#include "refcase.h"
#include "testrng.h"

/* ---- contexts ------------------------------------------------------------------------ */

/* Point the loader at the module this build made, if it made one. */
static int use_built_module(void)
{
#ifdef GPTQ_CUDA_MODULE_FILE
    setenv("GPTQ_CUDA_MODULE_PATH", GPTQ_CUDA_MODULE_FILE, 1);
    return 1;
#else
    return 0;
#endif
}

typedef struct log_buf {
    char text[2048];
} log_buf;

static void log_to_buf(void *user, int32_t level, const char *msg)
{
    log_buf *b = user;
    size_t n = strlen(b->text);
    (void)level;
    snprintf(b->text + n, sizeof b->text - n, "%s\n", msg);
}

static int create(int32_t backend, int32_t device, log_buf *log, gptq_ctx **ctx, char *err,
                  size_t n)
{
    gptq_ctx_options o;
    gptq_ctx_options_init(&o);
    o.backend = backend;
    o.device = device;
    if (log) {
        log->text[0] = '\0';
        o.log = log_to_buf;
        o.log_user = log;
        o.log_level = GPTQ_LOG_INFO;
    }
    return gptq_ctx_create(&o, ctx, err, n);
}

/* A context on the CUDA backend, or the test is skipped with the reason. */
static gptq_ctx *cuda_ctx_or_skip(void)
{
    gptq_ctx *ctx = NULL;
    char err[512] = "";
    int rc;

    use_built_module();
    rc = create(GPTQ_BACKEND_CUDA, 0, NULL, &ctx, err, sizeof err);
    if (rc == GPTQ_ERR_DEVICE || rc == GPTQ_ERR_NOT_SUPPORTED)
        cr_skip_test("no usable CUDA backend (%s): %s", gptq_status_str(rc), err);
    cr_assert_eq(rc, GPTQ_OK, "CUDA context: %s", err);
    cr_assert_eq(gptq_ctx_backend(ctx), GPTQ_BACKEND_CUDA);
    return ctx;
}

static gptq_ctx *cpu_ctx(void)
{
    gptq_ctx *ctx = NULL;
    cr_assert_eq(create(GPTQ_BACKEND_CPU, 0, NULL, &ctx, NULL, 0), GPTQ_OK);
    return ctx;
}

/* Criterion lists skipped tests only with --verbose; ctest runs without it, so say here
 * which tests did not run and why. */
ReportHook(POST_TEST)(struct criterion_test_stats *stats)
{
    if (stats->test_status == CR_STATUS_SKIPPED)
        printf("[SKIP] %s::%s: %s\n", stats->test->category, stats->test->name,
               stats->message ? stats->message : "");
    fflush(stdout);
}

/* ---- the module without a GPU ---------------------------------------------------------- */

Test(cuda, module_refuses_without_device)
{
    gptq_ctx *ctx = NULL;
    char err[512] = "";
    log_buf log;
    int32_t device = 0;
    int rc;

    if (!use_built_module())
        cr_skip_test("libgptq-cuda.so was not built (GPTQ_CUDA=OFF or no CUDA Toolkit)");
    rc = create(GPTQ_BACKEND_CUDA, 0, NULL, &ctx, err, sizeof err);
    printf("cuda backend, device 0: %s%s%s\n", gptq_status_str(rc), *err ? ": " : "", err);
    if (rc == GPTQ_OK) {
        /* A GPU is here: ask for an ordinal no machine has instead. */
        cr_assert_eq(gptq_ctx_backend(ctx), GPTQ_BACKEND_CUDA);
        gptq_ctx_free(ctx);
        ctx = NULL;
        device = 9999;
        rc = create(GPTQ_BACKEND_CUDA, device, NULL, &ctx, err, sizeof err);
        cr_assert_eq(rc, GPTQ_ERR_DEVICE, "device 9999: %s", err);
        cr_assert(strstr(err, "CUDA backend: device 9999 requested") != NULL, "%s", err);
    } else {
        cr_assert_eq(rc, GPTQ_ERR_DEVICE,
                     "the built module must load and report the missing GPU, got %s: %s",
                     gptq_status_str(rc), err);
        cr_assert(strstr(err, "CUDA backend: no usable GPU") != NULL, "%s", err);
    }
    cr_assert_null(ctx);

    /* auto: the CPU, and the reason in the log. */
    rc = create(GPTQ_BACKEND_AUTO, device, &log, &ctx, err, sizeof err);
    cr_assert_eq(rc, GPTQ_OK, "%s", err);
    cr_assert_eq(gptq_ctx_backend(ctx), GPTQ_BACKEND_CPU);
    printf("auto: %s", log.text);
    cr_assert(strstr(log.text, "backend auto: CUDA not usable (CUDA backend: ") != NULL, "%s",
              log.text);
    cr_assert(strstr(log.text, "using the CPU") != NULL, "%s", log.text);
    gptq_ctx_free(ctx);

    if (device == 0) { /* no GPU at all */
        cr_assert_eq(gptq_backend_available(GPTQ_BACKEND_CUDA, err, sizeof err), 0);
        cr_assert(strstr(err, "CUDA backend: ") != NULL, "%s", err);
    }
    unsetenv("GPTQ_CUDA_MODULE_PATH");
}

/* ---- primitives against the CPU backend ------------------------------------------------ */

static float frand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
}

static float *rand_buf(size_t n, unsigned seed)
{
    float *p = malloc(n * sizeof *p);
    cr_assert_not_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = frand(&seed);
    return p;
}

static double max_rel_diff(const float *a, const float *b, size_t n)
{
    double m = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs((double)b[i]));
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return scale > 0.0 ? m / scale : m;
}

Test(cuda, gemm_matches_cpu)
{
    gptq_ctx *g = cuda_ctx_or_skip(), *c = cpu_ctx();
    const int64_t m = 67, n = 45, k = 129, ld = 150;
    float *a = rand_buf((size_t)(k * ld), 1), *b = rand_buf((size_t)(k * ld), 2);
    float *c0 = rand_buf((size_t)(m * ld), 3);
    float *cg = malloc((size_t)(m * ld) * sizeof(float));
    float *cc = malloc((size_t)(m * ld) * sizeof(float));

    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            double d;
            memcpy(cg, c0, (size_t)(m * ld) * sizeof(float));
            memcpy(cc, c0, (size_t)(m * ld) * sizeof(float));
            /* Sub-matrices with a leading dimension wider than the rows, as the core's
             * lazy update W[:, i2:] -= E U[i1:i2, i2:] passes them. */
            cr_assert_eq(g->backend->gemm(g, ta, tb, m, n, k, -1.0f, a + 3, ld, b + 5, ld, 1.0f,
                                          cg + 7, ld),
                         GPTQ_OK, "%s", gptq_ctx_last_error(g));
            cr_assert_eq(c->backend->gemm(c, ta, tb, m, n, k, -1.0f, a + 3, ld, b + 5, ld, 1.0f,
                                          cc + 7, ld),
                         GPTQ_OK);
            d = max_rel_diff(cg, cc, (size_t)(m * ld));
            printf("gemm trans_a=%d trans_b=%d: max relative difference GPU vs CPU %.3g\n", ta, tb,
                   d);
            cr_expect_lt(d, 1e-4, "gemm %d %d", ta, tb);
            /* Outside the m x n window nothing moved. */
            for (int64_t i = 0; i < m; i++)
                for (int64_t j = 0; j < ld; j++)
                    if (j < 7 || j >= 7 + n)
                        cr_assert_eq(cg[i * ld + j], c0[i * ld + j]);
        }
    free(a), free(b), free(c0), free(cg), free(cc);
    gptq_ctx_free(g), gptq_ctx_free(c);
}

Test(cuda, syrk_matches_cpu)
{
    gptq_ctx *g = cuda_ctx_or_skip(), *c = cpu_ctx();
    const int64_t n = 97, rows = 300;
    float *x = rand_buf((size_t)(rows * n), 4), *h0 = rand_buf((size_t)(n * n), 5);
    float *hg = malloc((size_t)(n * n) * sizeof(float));
    float *hc = malloc((size_t)(n * n) * sizeof(float));

    for (int pass = 0; pass < 2; pass++) {
        float beta = pass ? 0.75f : 0.0f;
        double d;
        /* A symmetric h to start from (beta 0: the hessian's first call). */
        for (int64_t i = 0; i < n * n; i++)
            hg[i] = hc[i] = h0[i] + h0[(i % n) * n + i / n];
        cr_assert_eq(g->backend->syrk(g, n, rows, x, beta, hg), GPTQ_OK, "%s",
                     gptq_ctx_last_error(g));
        cr_assert_eq(c->backend->syrk(c, n, rows, x, beta, hc), GPTQ_OK);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++)
                cr_assert_eq(hg[i * n + j], hg[j * n + i], "not symmetric at %lld,%lld",
                             (long long)i, (long long)j);
        d = max_rel_diff(hg, hc, (size_t)(n * n));
        printf("syrk beta=%g: max relative difference GPU vs CPU %.3g\n", (double)beta, d);
        cr_expect_lt(d, 1e-4);
    }
    free(x), free(h0), free(hg), free(hc);
    gptq_ctx_free(g), gptq_ctx_free(c);
}

/* Operands in device buffers (buf_alloc/upload/download) are used in place. */
Test(cuda, device_buffers_in_place)
{
    gptq_ctx *g = cuda_ctx_or_skip(), *c = cpu_ctx();
    const gptq_backend *be = g->backend;
    const int64_t m = 33, n = 70, k = 51;
    const size_t na = (size_t)(m * k), nb = (size_t)(k * n), nc = (size_t)(m * n);
    float *a = rand_buf(na, 11), *b = rand_buf(nb, 12), *cg = rand_buf(nc, 13);
    float *cc = malloc(nc * sizeof(float)), *hg = malloc((size_t)(n * n) * sizeof(float));
    float *hc = calloc((size_t)(n * n), sizeof(float));
    float *da = be->buf_alloc(g, na * sizeof(float)), *db = be->buf_alloc(g, nb * sizeof(float));
    float *dc = be->buf_alloc(g, nc * sizeof(float));
    float *dh = be->buf_alloc(g, (size_t)(n * n) * sizeof(float));
    double d;

    cr_assert(da && db && dc && dh, "%s", gptq_ctx_last_error(g));
    memcpy(cc, cg, nc * sizeof(float));
    cr_assert_eq(be->upload(g, da, a, na * sizeof(float)), GPTQ_OK);
    cr_assert_eq(be->upload(g, db, b, nb * sizeof(float)), GPTQ_OK);
    cr_assert_eq(be->upload(g, dc, cg, nc * sizeof(float)), GPTQ_OK);
    cr_assert_eq(be->gemm(g, 0, 0, m, n, k, 0.5f, da, k, db, n, -1.0f, dc, n), GPTQ_OK, "%s",
                 gptq_ctx_last_error(g));
    cr_assert_eq(be->download(g, cg, dc, nc * sizeof(float)), GPTQ_OK);
    cr_assert_eq(c->backend->gemm(c, 0, 0, m, n, k, 0.5f, a, k, b, n, -1.0f, cc, n), GPTQ_OK);
    d = max_rel_diff(cg, cc, nc);
    printf("gemm on device buffers: max relative difference GPU vs CPU %.3g\n", d);
    cr_expect_lt(d, 1e-4);

    /* syrk of b ([k, n]) into a device h, beta 0. */
    cr_assert_eq(be->syrk(g, n, k, db, 0.0f, dh), GPTQ_OK, "%s", gptq_ctx_last_error(g));
    cr_assert_eq(be->download(g, hg, dh, (size_t)(n * n) * sizeof(float)), GPTQ_OK);
    cr_assert_eq(c->backend->syrk(c, n, k, b, 0.0f, hc), GPTQ_OK);
    d = max_rel_diff(hg, hc, (size_t)(n * n));
    printf("syrk on device buffers: max relative difference GPU vs CPU %.3g\n", d);
    cr_expect_lt(d, 1e-4);

    be->buf_free(g, da), be->buf_free(g, db), be->buf_free(g, dc), be->buf_free(g, dh);
    free(a), free(b), free(cg), free(cc), free(hg), free(hc);
    gptq_ctx_free(g), gptq_ctx_free(c);
}

/* A symmetric positive definite n x n matrix: X^T X / rows + I. */
static float *spd(int64_t n, unsigned seed)
{
    const int64_t rows = 2 * n;
    float *x = rand_buf((size_t)(rows * n), seed), *a = calloc((size_t)(n * n), sizeof(float));
    cr_assert_not_null(a);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0.0;
            for (int64_t r = 0; r < rows; r++)
                s += (double)x[r * n + i] * x[r * n + j];
            a[i * n + j] = (float)(s / (double)rows) + (i == j ? 1.0f : 0.0f);
        }
    free(x);
    return a;
}

typedef int (*factor_fn)(gptq_ctx *, int, int64_t, float *, int64_t *);

static void factor_case(gptq_ctx *g, gptq_ctx *c, const char *name, int slot, int lower,
                        const float *a, int64_t n)
{
    const gptq_backend *bg = g->backend, *bc = c->backend;
    factor_fn fg = slot == 0 ? bg->potrf : slot == 1 ? bg->potri : bg->trtri;
    factor_fn fc = slot == 0 ? bc->potrf : slot == 1 ? bc->potri : bc->trtri;
    float *ag = malloc((size_t)(n * n) * sizeof(float));
    float *ac = malloc((size_t)(n * n) * sizeof(float));
    int64_t ig = -1, ic = -1;
    double d = 0.0, scale = 0.0;

    memcpy(ag, a, (size_t)(n * n) * sizeof(float));
    memcpy(ac, a, (size_t)(n * n) * sizeof(float));
    cr_assert_eq(fg(g, lower, n, ag, &ig), GPTQ_OK, "%s: %s", name, gptq_ctx_last_error(g));
    cr_assert_eq(fc(c, lower, n, ac, &ic), GPTQ_OK);
    cr_assert_eq(ig, 0);
    /* Compare the triangle the routine writes (column-major `lower`). */
    for (int64_t col = 0; col < n; col++)
        for (int64_t row = 0; row < n; row++)
            if (lower ? row >= col : row <= col) {
                d = fmax(d, fabs((double)ag[col * n + row] - ac[col * n + row]));
                scale = fmax(scale, fabs((double)ac[col * n + row]));
            }
    printf("%s lower=%d: max relative difference GPU vs CPU %.3g\n", name, lower, d / scale);
    cr_expect_lt(d / scale, 1e-4, "%s lower=%d", name, lower);
    free(ag), free(ac);
}

Test(cuda, cholesky_family_matches_cpu)
{
    gptq_ctx *g = cuda_ctx_or_skip(), *c = cpu_ctx();
    const int64_t n = 150;
    float *a = spd(n, 6), *l = malloc((size_t)(n * n) * sizeof(float)), *bad;
    int64_t info = 0;

    for (int lower = 0; lower < 2; lower++) {
        factor_case(g, c, "potrf", 0, lower, a, n);
        /* potri and trtri start from a Cholesky factor (the CPU's). */
        memcpy(l, a, (size_t)(n * n) * sizeof(float));
        cr_assert_eq(c->backend->potrf(c, lower, n, l, &info), GPTQ_OK);
        factor_case(g, c, "potri", 1, lower, l, n);
        factor_case(g, c, "trtri", 2, lower, l, n);
    }
    /* Not positive definite: LAPACK's info, NOT_POSITIVE_DEFINITE, and no message (the
     * core retries with more damping). */
    bad = spd(n, 7);
    bad[40 * n + 40] = -5.0f;
    cr_assert_eq(g->backend->potrf(g, 1, n, bad, &info), GPTQ_ERR_NOT_POSITIVE_DEFINITE);
    cr_assert_eq(info, 41);
    cr_assert_str_eq(gptq_ctx_last_error(g), "");
    free(a), free(l), free(bad);
    gptq_ctx_free(g), gptq_ctx_free(c);
}

/* The fused in-block loop: identical inputs must give identical bits. */
typedef struct block_case {
    int bits, sym, group_size, static_groups, rtn;
    int64_t i1, i2;
} block_case;

static void block_run(gptq_ctx *ctx, const block_case *bc, int64_t R, int64_t C, const float *w,
                      const float *u, const int32_t *perm, float *scales, float *zeros,
                      float *q, int32_t *codes, float *err, double *loss)
{
    gptq_block_args a;
    float *rs = malloc((size_t)R * sizeof(float)), *rz = malloc((size_t)R * sizeof(float));
    memset(&a, 0, sizeof a);
    a.rows = R;
    a.cols = C;
    a.i1 = bc->i1;
    a.i2 = bc->i2;
    a.maxq = (1 << bc->bits) - 1;
    a.sym = bc->sym;
    a.group_size = bc->group_size;
    a.static_groups = bc->static_groups;
    for (int64_t r = 0; r < R; r++)
        gptq__find_params(w + r * C, C, a.maxq, a.sym, &rs[r], &rz[r]);
    if (bc->group_size != -1 && bc->static_groups)
        for (int64_t g = 0; g * bc->group_size < C; g++)
            for (int64_t r = 0; r < R; r++) {
                int64_t c0 = g * bc->group_size;
                int64_t n = c0 + bc->group_size < C ? bc->group_size : C - c0;
                gptq__find_params(w + r * C + c0, n, a.maxq, a.sym, &scales[g * R + r],
                                  &zeros[g * R + r]);
            }
    a.w = w;
    a.u = bc->rtn ? NULL : u;
    a.perm = perm;
    a.row_scale = rs;
    a.row_zero = rz;
    a.scales = scales;
    a.zeros = zeros;
    a.q = q;
    a.codes = codes;
    a.err = err;
    a.row_loss = loss;
    cr_assert_eq(ctx->backend->quantize_block(ctx, &a), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    free(rs), free(rz);
}

Test(cuda, quantize_block_bit_exact)
{
    static const block_case cases[] = {
        {4, 0, -1, 0, 0, 0, 128},  {4, 1, -1, 0, 0, 128, 256}, {2, 0, 32, 0, 0, 40, 168},
        {3, 1, 32, 0, 0, 256, 300}, {8, 0, 48, 1, 0, 0, 128},  {4, 0, 200, 0, 0, 128, 256},
        {4, 1, 64, 0, 1, 64, 192},  {4, 0, -1, 0, 0, 0, 300},
    };
    gptq_ctx *g = cuda_ctx_or_skip(), *c = cpu_ctx();
    const int64_t R = 77, C = 300;
    float *w = rand_buf((size_t)(R * C), 8), *u = rand_buf((size_t)(C * C), 9);
    int32_t *perm = malloc((size_t)C * sizeof(int32_t));
    unsigned s = 10;

    /* U: upper triangular, a diagonal well away from 0, small off-diagonal terms. */
    for (int64_t i = 0; i < C; i++)
        for (int64_t j = 0; j < C; j++)
            u[i * C + j] = j < i ? 0.0f : j == i ? 1.0f + 0.5f * u[i * C + j] : 0.1f * u[i * C + j];
    /* A permutation (act-order shape): shuffled. */
    for (int64_t i = 0; i < C; i++)
        perm[i] = (int32_t)i;
    for (int64_t i = C - 1; i > 0; i--) {
        int64_t j = (int64_t)((frand(&s) + 1.0f) * 0.5f * (float)i);
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const block_case *bc = &cases[k];
        const int64_t ng = bc->group_size == -1 ? 1 : (C + bc->group_size - 1) / bc->group_size;
        const size_t rc = (size_t)(R * C), gr = (size_t)(ng * R), er = (size_t)(R * C);
        float *sg = calloc(gr, 4), *zg = calloc(gr, 4), *sc = calloc(gr, 4), *zc = calloc(gr, 4);
        float *qg = calloc(rc, 4), *qc = calloc(rc, 4), *eg = calloc(er, 4), *ec = calloc(er, 4);
        int32_t *cg = calloc(rc, 4), *cc = calloc(rc, 4);
        double *lg = calloc((size_t)R, 8), *lc = calloc((size_t)R, 8);
        int64_t same = 0;

        /* A group that began before i1 was parameterised by an earlier block. */
        if (bc->group_size != -1 && !bc->static_groups && bc->i1 % bc->group_size) {
            int64_t g0 = bc->i1 / bc->group_size, c0 = g0 * bc->group_size;
            for (int64_t r = 0; r < R; r++)
                gptq__find_params(w + r * C + c0, bc->group_size, (1 << bc->bits) - 1, bc->sym,
                                  &sg[g0 * R + r], &zg[g0 * R + r]);
            memcpy(sc, sg, gr * 4);
            memcpy(zc, zg, gr * 4);
        }
        block_run(g, bc, R, C, w, u, perm, sg, zg, qg, cg, eg, lg);
        block_run(c, bc, R, C, w, u, perm, sc, zc, qc, cc, ec, lc);
        for (size_t i = 0; i < rc; i++)
            same += cg[i] == cc[i];
        printf("quantize_block bits=%d sym=%d gs=%d static=%d rtn=%d [%lld,%lld): codes equal "
               "%lld/%zu\n",
               bc->bits, bc->sym, bc->group_size, bc->static_groups, bc->rtn, (long long)bc->i1,
               (long long)bc->i2, (long long)same, rc);
        cr_expect_arr_eq(cg, cc, rc * 4, "codes differ (case %zu)", k);
        cr_expect_arr_eq(qg, qc, rc * 4, "q differs (case %zu)", k);
        cr_expect_arr_eq(sg, sc, gr * 4, "scales differ (case %zu)", k);
        cr_expect_arr_eq(zg, zc, gr * 4, "zeros differ (case %zu)", k);
        if (!bc->rtn) {
            cr_expect_arr_eq(eg, ec, (size_t)((bc->i2 - bc->i1) * R) * 4, "err differs (case %zu)",
                             k);
            cr_expect_arr_eq(lg, lc, (size_t)R * 8, "loss differs (case %zu)", k);
        }
        free(sg), free(zg), free(sc), free(zc), free(qg), free(qc), free(eg), free(ec);
        free(cg), free(cc), free(lg), free(lc);
    }
    free(w), free(u), free(perm);
    gptq_ctx_free(g), gptq_ctx_free(c);
}

/* ---- the reference cases through the CUDA backend ------------------------------------- */

static gptq_result *quantize_case(gptq_ctx *ctx, const refcase *rc, int use_x, int inverse)
{
    gptq_hessian *h = NULL;
    gptq_result *res = NULL;
    gptq_config cfg;
    cr_assert_eq(refcase_hessian(ctx, rc, use_x, &h), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    refcase_config(rc, &cfg);
    cfg.inverse = inverse;
    cr_assert_eq(gptq_layer_quantize(ctx, rc->W, rc->out, rc->in, h, &cfg, &res), GPTQ_OK,
                 "%s (%s): %s", rc->name, gptq_backend_name(gptq_ctx_backend(ctx)),
                 gptq_ctx_last_error(ctx));
    gptq_hessian_free(h);
    return res;
}

static void all_cases(int use_x, int inverse)
{
    gptq_ctx *g = cuda_ctx_or_skip(), *c = cpu_ctx();
    int n;
    char **list = refcase_list(&n);

    cr_assert_geq(n, 12, "reference cases missing from " GPTQ_TEST_DATA);
    for (int i = 0; i < n; i++) {
        refcase rc;
        gptq_result *rg, *rcpu;
        judge j;
        int64_t same = 0, total;

        cr_assert_eq(refcase_load(list[i], &rc), 0, "cannot load %s", list[i]);
        rg = quantize_case(g, &rc, use_x, inverse);
        rcpu = quantize_case(c, &rc, use_x, inverse);
        j = refcase_judge(&rc, gptq_result_codes(rg), gptq_result_q(rg), gptq_result_scales(rg),
                          gptq_result_zeros(rg));
        total = rc.out * rc.in;
        for (int64_t k = 0; k < total; k++)
            same += gptq_result_codes(rg)[k] == gptq_result_codes(rcpu)[k];
        printf("cuda %-43s H=%s U=%s codes_equal=%.6f loss_ratio=%.5f params_equal=%.6f %s | "
               "vs cpu: codes %.6f loss %.6f\n",
               rc.name, use_x ? "X" : "case", inverse ? "ref" : "fast", j.codes_equal,
               j.loss_ratio, j.params_equal, j.pass ? "PASS" : "FAIL",
               (double)same / (double)total,
               gptq_result_loss(rcpu) > 0.0 ? gptq_result_loss(rg) / gptq_result_loss(rcpu) : 1.0);
        cr_expect(j.pass, "%s (H from %s, inverse %d): codes_equal %.6f (min %.3f) loss_ratio "
                          "%.5f params_equal %.6f",
                  rc.name, use_x ? "X" : "case", inverse, j.codes_equal, j.min_codes_equal,
                  j.loss_ratio, j.params_equal);
        cr_expect_arr_eq(gptq_result_g_idx(rg), rc.g_idx, sizeof(int32_t) * (size_t)rc.in,
                         "%s: g_idx differs", rc.name);
        gptq_result_free(rg);
        gptq_result_free(rcpu);
        refcase_free(&rc);
    }
    refcase_list_free(list, n);
    gptq_ctx_free(g);
    gptq_ctx_free(c);
}

Test(cuda, reference_cases_fast_inverse) { all_cases(0, GPTQ_INVERSE_FAST); }
Test(cuda, reference_cases_reference_inverse) { all_cases(0, GPTQ_INVERSE_REFERENCE); }
Test(cuda, reference_cases_hessian_from_x) { all_cases(1, GPTQ_INVERSE_FAST); }

/* ---- prepared quantized linears on the GPU (src/cuda/qlinear*.cu) ---------------------- */

static const int32_t gpu_kernels[] = {GPTQ_QLINEAR_KERNEL_CUDA_GEMV, GPTQ_QLINEAR_KERNEL_CUDA_MMA,
                                      GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS, GPTQ_QLINEAR_KERNEL_AUTO};

/* Every GPU kernel against the float64 reference within its stated bound; prints the
 * largest error as a share of the bound. MMA must refuse exactly the layers it cannot
 * run (mma_ok 0) and run the others. */
static void gpu_layer(gptq_ctx *g, const qlayer *L, int mma_ok, const char *what, uint64_t seed)
{
    static const int64_t batches[] = {1, 3, 8, 9, 17, 64, 100};
    const int64_t R = L->R, C = L->C;
    gptq_qlinear *ql[2] = {NULL, NULL};
    double worst[4] = {0, 0, 0, 0};

    for (int b = 0; b < 2; b++)
        cr_assert_eq(gptq_qlinear_create(g, &L->p, b ? L->bias : NULL, &ql[b]), GPTQ_OK, "%s: %s",
                     what, gptq_ctx_last_error(g));
    for (size_t n = 0; n < sizeof batches / sizeof batches[0]; n++) {
        const int64_t batch = batches[n];
        const int with_bias = (int)(n % 2);
        float *x = malloc((size_t)(batch * C) * sizeof(float));
        float *y = malloc((size_t)(batch * R) * sizeof(float));
        double *ref = malloc((size_t)(batch * R) * sizeof(double));
        double *tg = malloc((size_t)(batch * R) * sizeof(double));
        double *th = malloc((size_t)(batch * R) * sizeof(double));
        cr_assert(x && y && ref && tg && th);
        for (int64_t i = 0; i < batch * C; i++)
            x[i] = rng_uniform(&seed);
        qlayer_reference(L, x, batch, with_bias, QLAYER_BOUND_GEMV, ref, tg);
        qlayer_reference(L, x, batch, with_bias, QLAYER_BOUND_F16, ref, th);
        for (size_t k = 0; k < 4; k++) {
            const int32_t kern = gpu_kernels[k];
            int rc = gptq_qlinear_set_kernel(g, ql[with_bias], kern);
            char msg[256];
            if (kern == GPTQ_QLINEAR_KERNEL_CUDA_MMA && !mma_ok) {
                cr_assert_eq(rc, GPTQ_ERR_NOT_SUPPORTED, "%s: MMA accepted an ineligible layer",
                             what);
                cr_assert(strstr(gptq_ctx_last_error(g), "MMA kernel:") != NULL, "%s",
                          gptq_ctx_last_error(g));
                continue;
            }
            cr_assert_eq(rc, GPTQ_OK, "%s kernel %s: %s", what, gptq_qlinear_kernel_name(kern),
                         gptq_ctx_last_error(g));
            snprintf(msg, sizeof msg, "%s batch %lld bias %d kernel %s", what, (long long)batch,
                     with_bias, gptq_qlinear_kernel_name(kern));
            for (int64_t i = 0; i < batch * R; i++)
                y[i] = NAN;
            cr_assert_eq(gptq_qlinear_forward(g, ql[with_bias], x, batch, y), GPTQ_OK, "%s: %s",
                         msg, gptq_ctx_last_error(g));
            for (int64_t i = 0; i < batch * R; i++) {
                /* AUTO may take either family: the larger bound. */
                const double tol = kern == GPTQ_QLINEAR_KERNEL_CUDA_GEMV ? tg[i]
                                   : kern == GPTQ_QLINEAR_KERNEL_AUTO    ? fmax(tg[i], th[i])
                                                                         : th[i];
                const double e = fabs((double)y[i] - ref[i]);
                cr_assert(e <= tol, "%s: y[%lld] = %.9g, expected %.9g +- %.3g", msg,
                          (long long)i, (double)y[i], ref[i], tol);
                if (tol > 0)
                    worst[k] = fmax(worst[k], e / tol);
            }
        }
        free(x), free(y), free(ref), free(tg), free(th);
    }
    printf("%s: largest error / bound: gemv %.3f mma %s%.3f cublas %.3f auto %.3f\n", what,
           worst[0], mma_ok ? "" : "(refused) ", worst[1], worst[2], worst[3]);
    gptq_qlinear_free(ql[0]);
    gptq_qlinear_free(ql[1]);
}

Test(cuda, qlinear_kernels_match_reference)
{
    static const int32_t bits[] = {2, 3, 4, 8};
    static const int32_t gss[] = {-1, 128, 40};
    gptq_ctx *g = cuda_ctx_or_skip(), *c = cpu_ctx();
    uint64_t seed = 1234;

    for (size_t b = 0; b < 4; b++)
        for (size_t gi = 0; gi < 3; gi++)
            for (int act = 0; act <= 1; act++)
                for (int shape = 0; shape < 2; shape++) {
                    /* 128 x 512: MMA-eligible for 4/8 bits with whole-16 group runs;
                     * 200 x 392: rows not a multiple of 64, columns not of 32. */
                    const int64_t R = shape ? 200 : 128, C = shape ? 392 : 512;
                    const int mma_ok = !shape && (bits[b] == 4 || bits[b] == 8) && gss[gi] != 40;
                    qlayer L;
                    char what[128];
                    qlayer_make(c, &L, bits[b], GPTQ_FORMAT_V1 + act, R, C, gss[gi], act,
                                (int)(gi % 2), seed++);
                    snprintf(what, sizeof what, "%lldx%lld b%d gs%d act%d", (long long)R,
                             (long long)C, bits[b], gss[gi], act);
                    gpu_layer(g, &L, mma_ok, what, seed++);
                    qlayer_free(&L);
                }
    gptq_ctx_free(g), gptq_ctx_free(c);
}

/* Device-resident operands of every dtype give what the host path gives. */
Test(cuda, qlinear_forward_device)
{
    gptq_ctx *g = cuda_ctx_or_skip(), *c = cpu_ctx();
    const gptq_backend *be = g->backend;
    const int64_t R = 192, C = 256, batch = 5;
    qlayer L;
    gptq_qlinear *ql = NULL;
    float *x = malloc((size_t)(batch * C) * sizeof(float));
    float *yh = malloc((size_t)(batch * R) * sizeof(float));
    float *yd = malloc((size_t)(batch * R) * sizeof(float));
    uint16_t *x16 = malloc((size_t)(batch * C) * 2), *xb16 = malloc((size_t)(batch * C) * 2);
    uint16_t *y16 = malloc((size_t)(batch * R) * 2);
    void *dx = be->buf_alloc(g, (size_t)(batch * C) * 4), *dy = be->buf_alloc(g, (size_t)(batch * R) * 4);
    uint64_t seed = 77;

    cr_assert(x && yh && yd && x16 && xb16 && y16 && dx && dy, "%s", gptq_ctx_last_error(g));
    qlayer_make(c, &L, 4, GPTQ_FORMAT_V1, R, C, 128, 1, 0, 5);
    cr_assert_eq(gptq_qlinear_create(g, &L.p, L.bias, &ql), GPTQ_OK, "%s", gptq_ctx_last_error(g));
    /* Multiples of 1/64 in [-1, 1]: exact in float16 and bfloat16. */
    for (int64_t i = 0; i < batch * C; i++) {
        uint32_t u;
        x[i] = (float)((int)(rng_next(&seed) % 129) - 64) / 64.0f;
        x16[i] = gptq_fp32_to_fp16(x[i]);
        memcpy(&u, &x[i], 4);
        xb16[i] = (uint16_t)(u >> 16);
    }
    for (size_t k = 0; k < 4; k++) {
        const int32_t kern = gpu_kernels[k];
        cr_assert_eq(gptq_qlinear_set_kernel(g, ql, kern), GPTQ_OK, "%s", gptq_ctx_last_error(g));
        cr_assert_eq(gptq_qlinear_forward(g, ql, x, batch, yh), GPTQ_OK, "%s",
                     gptq_ctx_last_error(g));
        for (int32_t dt = GPTQ_QLINEAR_DTYPE_F32; dt <= GPTQ_QLINEAR_DTYPE_BF16; dt++) {
            const void *src = dt == GPTQ_QLINEAR_DTYPE_F32 ? (const void *)x
                              : dt == GPTQ_QLINEAR_DTYPE_F16 ? (const void *)x16
                                                             : (const void *)xb16;
            const size_t xs = dt == GPTQ_QLINEAR_DTYPE_F32 ? 4 : 2;
            cr_assert_eq(be->upload(g, dx, src, (size_t)(batch * C) * xs), GPTQ_OK);
            /* float32 out: the very bits of the host path */
            cr_assert_eq(gptq_qlinear_forward_device(g, ql, dx, dt, batch, dy,
                                                     GPTQ_QLINEAR_DTYPE_F32),
                         GPTQ_OK, "%s", gptq_ctx_last_error(g));
            cr_assert_eq(gptq_ctx_synchronize(g), GPTQ_OK, "%s", gptq_ctx_last_error(g));
            cr_assert_eq(be->download(g, yd, dy, (size_t)(batch * R) * 4), GPTQ_OK);
            cr_assert(memcmp(yd, yh, (size_t)(batch * R) * 4) == 0, "kernel %s dtype %d",
                      gptq_qlinear_kernel_name(kern), dt);
            /* float16 out: the float32 result rounded once */
            cr_assert_eq(gptq_qlinear_forward_device(g, ql, dx, dt, batch, dy,
                                                     GPTQ_QLINEAR_DTYPE_F16),
                         GPTQ_OK, "%s", gptq_ctx_last_error(g));
            cr_assert_eq(gptq_ctx_synchronize(g), GPTQ_OK);
            cr_assert_eq(be->download(g, y16, dy, (size_t)(batch * R) * 2), GPTQ_OK);
            for (int64_t i = 0; i < batch * R; i++)
                cr_assert_eq(y16[i], gptq_fp32_to_fp16(yh[i]), "kernel %s dtype %d y[%lld]",
                             gptq_qlinear_kernel_name(kern), dt, (long long)i);
        }
    }
    /* Refusals: host memory, bad dtypes, batch 0. */
    cr_expect_eq(gptq_qlinear_forward_device(g, ql, x, GPTQ_QLINEAR_DTYPE_F32, batch, dy,
                                             GPTQ_QLINEAR_DTYPE_F32),
                 GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(gptq_ctx_last_error(g), "x is not device") != NULL, "%s",
              gptq_ctx_last_error(g));
    cr_expect_eq(gptq_qlinear_forward_device(g, ql, dx, 7, batch, dy, GPTQ_QLINEAR_DTYPE_F32),
                 GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect_eq(gptq_qlinear_forward_device(g, ql, dx, GPTQ_QLINEAR_DTYPE_F32, batch, dy,
                                             GPTQ_QLINEAR_DTYPE_BF16),
                 GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect_eq(gptq_qlinear_forward_device(g, ql, dx, GPTQ_QLINEAR_DTYPE_F32, 0, dy,
                                             GPTQ_QLINEAR_DTYPE_F32),
                 GPTQ_ERR_INVALID_ARGUMENT);
    gptq_qlinear_free(ql);
    qlayer_free(&L);
    be->buf_free(g, dx), be->buf_free(g, dy);
    free(x), free(yh), free(yd), free(x16), free(xb16), free(y16);
    gptq_ctx_free(g), gptq_ctx_free(c);
}

/* A GPU handle with the wrong context, a CPU kernel forced on it, MMA on 3 bits. */
Test(cuda, qlinear_gpu_handle_rules)
{
    gptq_ctx *g = cuda_ctx_or_skip(), *c = cpu_ctx();
    const int64_t R = 64, C = 128;
    qlayer L;
    gptq_qlinear *ql = NULL, *q3 = NULL;
    float x[128], yg[64], yc[64];
    uint64_t seed = 9;

    for (int i = 0; i < C; i++)
        x[i] = rng_uniform(&seed);
    qlayer_make(c, &L, 4, GPTQ_FORMAT_V1, R, C, 32, 0, 1, 6);
    cr_assert_eq(gptq_qlinear_create(g, &L.p, L.bias, &ql), GPTQ_OK, "%s", gptq_ctx_last_error(g));
    cr_expect_eq(gptq_qlinear_forward(NULL, ql, x, 1, yg), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect_eq(gptq_qlinear_forward(c, ql, x, 1, yg), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(gptq_ctx_last_error(c), "pass a CUDA context") != NULL, "%s",
              gptq_ctx_last_error(c));
    /* A CPU kernel runs on the host from the host layout, with any context. */
    cr_assert_eq(gptq_qlinear_set_kernel(g, ql, GPTQ_QLINEAR_KERNEL_PORTABLE), GPTQ_OK);
    cr_assert_eq(gptq_qlinear_forward(c, ql, x, 1, yc), GPTQ_OK, "%s", gptq_ctx_last_error(c));
    cr_assert_eq(gptq_qlinear_set_kernel(g, ql, GPTQ_QLINEAR_KERNEL_CUDA_GEMV), GPTQ_OK);
    cr_assert_eq(gptq_qlinear_forward(g, ql, x, 1, yg), GPTQ_OK, "%s", gptq_ctx_last_error(g));
    cr_expect_lt(max_rel_diff(yg, yc, (size_t)R), 1e-5);
    qlayer_free(&L);
    qlayer_make(c, &L, 3, GPTQ_FORMAT_V1, R, C, 32, 0, 1, 7);
    cr_assert_eq(gptq_qlinear_create(g, &L.p, NULL, &q3), GPTQ_OK, "%s", gptq_ctx_last_error(g));
    cr_expect_eq(gptq_qlinear_set_kernel(g, q3, GPTQ_QLINEAR_KERNEL_CUDA_MMA),
                 GPTQ_ERR_NOT_SUPPORTED);
    cr_expect(strstr(gptq_ctx_last_error(g), "4- and 8-bit") != NULL, "%s", gptq_ctx_last_error(g));
    cr_expect_eq(gptq_qlinear_kernel(q3), GPTQ_QLINEAR_KERNEL_AUTO);
    gptq_qlinear_free(ql), gptq_qlinear_free(q3);
    qlayer_free(&L);
    gptq_ctx_free(g), gptq_ctx_free(c);
}

/* The benchmark entry point runs and reports plausible figures (not a timing test). */
Test(cuda, qlinear_bench_device)
{
    gptq_ctx *g = cuda_ctx_or_skip(), *c = cpu_ctx();
    qlayer L;
    gptq_qlinear *ql = NULL;
    double bw = 0, s = 0, s16 = 0;
    int32_t k = -1;

    qlayer_make(c, &L, 4, GPTQ_FORMAT_V1, 1024, 1024, 128, 0, 1, 8);
    cr_assert_eq(gptq_qlinear_create(g, &L.p, NULL, &ql), GPTQ_OK, "%s", gptq_ctx_last_error(g));
    cr_assert_eq(gptq_ctx_device_bandwidth(g, &bw), GPTQ_OK, "%s", gptq_ctx_last_error(g));
    cr_expect_gt(bw, 1e11);
    for (int64_t batch = 1; batch <= 64; batch *= 8) {
        cr_assert_eq(gptq_qlinear_bench_device(g, ql, batch, 20, &k, &s, &s16), GPTQ_OK, "%s",
                     gptq_ctx_last_error(g));
        printf("bench 1024x1024 4-bit g128 batch %lld: %s %.2f us, fp16 cuBLAS %.2f us\n",
               (long long)batch, gptq_qlinear_kernel_name(k), s * 1e6, s16 * 1e6);
        cr_expect(s > 0 && s16 > 0);
        cr_expect(k >= GPTQ_QLINEAR_KERNEL_CUDA_GEMV && k <= GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS);
    }
    gptq_qlinear_free(ql);
    qlayer_free(&L);
    gptq_ctx_free(g), gptq_ctx_free(c);
}

/* ---- the bundled model end to end on the GPU ------------------------------------------- */

#define TINY GPTQ_TEST_MODELS "/tiny-llama-bytes"

/* Quantize (4-bit g128) and evaluate the bundled model on ctx; returns the perplexity
 * and leaves the model in *out for generation. */
static double tiny_quantized_ppl(gptq_ctx *ctx, gptq_model **out)
{
    gptq_model *m = NULL;
    gptq_tokens *calib = NULL, *text = NULL;
    gptq_quantize_options o;
    gptq_eval_result er = {.struct_size = sizeof er};

    cr_assert_eq(gptq_model_open(ctx, TINY, &m), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    cr_assert_eq(gptq_tokens_load(ctx, TINY "/calib.txt", GPTQ_TOKENS_BYTES, &calib), GPTQ_OK);
    cr_assert_eq(gptq_tokens_load(ctx, TINY "/eval.txt", GPTQ_TOKENS_BYTES, &text), GPTQ_OK);
    gptq_quantize_options_init(&o);
    o.nsamples = 32;
    o.seqlen = 256;
    cr_assert_eq(gptq_model_quantize(ctx, m, calib, &o), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    cr_assert_eq(gptq_model_eval(ctx, m, text, 256, &er), GPTQ_OK, "%s",
                 gptq_ctx_last_error(ctx));
    gptq_tokens_free(calib);
    gptq_tokens_free(text);
    *out = m;
    return er.ppl;
}

/* GPU quantization, GPU prepared linears in evaluation and generation: the perplexity
 * within 1 % of the CPU's, and greedy text that starts as the CPU's does. */
Test(cuda, tiny_model_quantize_eval_generate)
{
    gptq_ctx *g = cuda_ctx_or_skip(), *c = cpu_ctx();
    gptq_model *mg = NULL, *mc = NULL;
    gptq_generate_options go;
    gptq_generate_result rg = {.struct_size = sizeof rg}, rc = {.struct_size = sizeof rc};
    const char *prompt = "And God said, Let there be light";
    int32_t ids[64], outg[64], outc[64];
    const int64_t n = (int64_t)strlen(prompt);
    double pg = tiny_quantized_ppl(g, &mg), pc = tiny_quantized_ppl(c, &mc);
    int same = 0;

    printf("tiny-llama-bytes 4-bit g128: perplexity GPU %.4f, CPU %.4f (ratio %.5f)\n", pg, pc,
           pg / pc);
    cr_expect(fabs(pg / pc - 1.0) < 0.01, "GPU %.4f vs CPU %.4f", pg, pc);
    for (int64_t i = 0; i < n; i++)
        ids[i] = (unsigned char)prompt[i];
    gptq_generate_options_init(&go);
    go.max_tokens = 64;
    cr_assert_eq(gptq_model_generate(g, mg, ids, n, &go, outg, 64, &rg), GPTQ_OK, "%s",
                 gptq_ctx_last_error(g));
    cr_assert_eq(gptq_model_generate(c, mc, ids, n, &go, outc, 64, &rc), GPTQ_OK, "%s",
                 gptq_ctx_last_error(c));
    cr_assert_eq(rg.new_tokens, 64);
    while (same < 64 && outg[same] == outc[same])
        same++;
    printf("greedy, GPU: ");
    for (int i = 0; i < 64; i++)
        putchar(outg[i]);
    printf("\n(the first %d of 64 tokens as on the CPU; %.0f tokens/s)\n", same,
           rg.new_tokens / rg.decode_seconds);
    /* Both quantizations sum in another order, so the texts may part, but not at once. */
    cr_expect_geq(same, 8, "GPU and CPU text part after %d tokens", same);
    gptq_model_free(mg), gptq_model_free(mc);
    gptq_ctx_free(g), gptq_ctx_free(c);
}

/* ---- the pipeline with its activations on the GPU (device_forward) -------------------- */

#define STORIES GPTQ_TEST_MODELS "/stories260K"

/* Fraction of the packed words of the quantized linears of a and b that are equal. */
static double packed_agreement(const gptq_model *a, const gptq_model *b)
{
    int64_t same = 0, total = 0;
    for (int64_t i = 0; i < a->cfg.n_layers; i++)
        for (int j = 0; j < GPTQ_LIN_COUNT; j++) {
            const gptq_packed *pa = &a->layers[i].lin[j].packed, *pb = &b->layers[i].lin[j].packed;
            int64_t qw[2], qz[2];
            if (!a->layers[i].lin[j].quantized ||
                gptq_packed_shape(pa->bits, pa->out_features, pa->in_features, pa->ngroups, qw,
                                  qz) != GPTQ_OK)
                continue;
            for (int64_t k = 0; k < qw[0] * qw[1]; k++)
                same += pa->qweight[k] == pb->qweight[k];
            total += qw[0] * qw[1];
        }
    return total ? (double)same / (double)total : 0.0;
}

/* stories260K (grouped-query attention, tied embeddings, an MLP kept float) quantized on
 * the GPU runs its layers there (the log says so), and lands within 1 % of the CPU's
 * perplexity; the share of equal packed words is reported. */
Test(cuda, stories260k_device_pipeline)
{
    gptq_ctx *g = NULL, *c = cpu_ctx();
    gptq_model *mg = NULL, *mc = NULL;
    gptq_tokens *calib = NULL, *text = NULL;
    gptq_quantize_options o;
    gptq_eval_result eg = {.struct_size = sizeof eg}, ec = {.struct_size = sizeof ec};
    log_buf log;
    char err[512] = "";
    int rc;

    use_built_module();
    rc = create(GPTQ_BACKEND_CUDA, 0, &log, &g, err, sizeof err);
    if (rc == GPTQ_ERR_DEVICE || rc == GPTQ_ERR_NOT_SUPPORTED)
        cr_skip_test("no usable CUDA backend (%s): %s", gptq_status_str(rc), err);
    cr_assert_eq(rc, GPTQ_OK, "CUDA context: %s", err);
    cr_assert_eq(gptq_tokens_load(c, STORIES "/calib_ids.json", GPTQ_TOKENS_IDS, &calib), GPTQ_OK);
    cr_assert_eq(gptq_tokens_load(c, STORIES "/eval_ids.json", GPTQ_TOKENS_IDS, &text), GPTQ_OK);
    gptq_quantize_options_init(&o);
    o.nsamples = 64;
    o.seqlen = 256;
    o.config.bits = 4;
    o.config.group_size = 32;
    o.config.desc_act = 1;
    cr_assert_eq(gptq_model_open(g, STORIES, &mg), GPTQ_OK, "%s", gptq_ctx_last_error(g));
    cr_assert_eq(gptq_model_open(c, STORIES, &mc), GPTQ_OK, "%s", gptq_ctx_last_error(c));
    cr_assert_eq(gptq_model_quantize(g, mg, calib, &o), GPTQ_OK, "%s", gptq_ctx_last_error(g));
    cr_expect(strstr(log.text, "layers run there") != NULL, "the GPU pipeline did not run: %s",
              log.text);
    cr_assert_eq(gptq_model_quantize(c, mc, calib, &o), GPTQ_OK, "%s", gptq_ctx_last_error(c));
    cr_assert_eq(gptq_model_eval(g, mg, text, 256, &eg), GPTQ_OK, "%s", gptq_ctx_last_error(g));
    cr_assert_eq(gptq_model_eval(c, mc, text, 256, &ec), GPTQ_OK, "%s", gptq_ctx_last_error(c));
    printf("stories260K 4-bit g32 act-order: ppl GPU %.4f, CPU %.4f (ratio %.5f); packed words "
           "equal: %.4f\n",
           eg.ppl, ec.ppl, eg.ppl / ec.ppl, packed_agreement(mg, mc));
    cr_expect(fabs(eg.ppl / ec.ppl - 1.0) < 0.01, "GPU %.4f vs CPU %.4f", eg.ppl, ec.ppl);
    gptq_tokens_free(calib);
    gptq_tokens_free(text);
    gptq_model_free(mg);
    gptq_model_free(mc);
    gptq_ctx_free(g);
    gptq_ctx_free(c);
}
