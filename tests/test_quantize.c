/*
 * gptq_layer_quantize beyond the reference cases: configuration checks, bad input,
 * non-positive-definite Hessians and the damping retry, RTN, result invariants,
 * contexts used from several threads at once.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gptq/gptq.h"

static gptq_ctx *ctx;

static void setup(void) { cr_assert_eq(gptq_ctx_create(NULL, &ctx, NULL, 0), GPTQ_OK); }
static void teardown(void) { gptq_ctx_free(ctx); }

TestSuite(quantize, .init = setup, .fini = teardown);

static float frand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xFFFF) / 65536.0f - 0.5f;
}

/* A layer W[R, C] and a well-conditioned Hessian from random X. */
static void make_layer(int64_t R, int64_t C, unsigned seed, float **w, gptq_hessian **h)
{
    int64_t rows = 4 * C;
    float *x = malloc(sizeof(float) * (size_t)(rows * C));
    *w = malloc(sizeof(float) * (size_t)(R * C));
    for (int64_t i = 0; i < R * C; i++)
        (*w)[i] = 0.1f * frand(&seed);
    for (int64_t i = 0; i < rows * C; i++)
        x[i] = frand(&seed);
    cr_assert_eq(gptq_hessian_create(ctx, C, h), GPTQ_OK);
    cr_assert_eq(gptq_hessian_add(ctx, *h, x, 4, C), GPTQ_OK);
    free(x);
}

Test(quantize, config_validation)
{
    gptq_config c;
    gptq_config_init(&c);
    cr_assert_eq(gptq_config_validate(ctx, &c), GPTQ_OK);
    c.bits = 5;
    cr_assert_eq(gptq_config_validate(ctx, &c), GPTQ_ERR_NOT_SUPPORTED);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "bits = 5") != NULL);
    gptq_config_init(&c);
    c.group_size = 0;
    cr_assert_eq(gptq_config_validate(ctx, &c), GPTQ_ERR_NOT_SUPPORTED);
    gptq_config_init(&c);
    c.damp_percent = 1.5;
    cr_assert_eq(gptq_config_validate(ctx, &c), GPTQ_ERR_INVALID_ARGUMENT);
    gptq_config_init(&c);
    c.block_size = 0;
    cr_assert_eq(gptq_config_validate(ctx, &c), GPTQ_ERR_INVALID_ARGUMENT);
    gptq_config_init(&c);
    c.struct_size = 4;
    cr_assert_eq(gptq_config_validate(ctx, &c), GPTQ_ERR_INVALID_ARGUMENT);
    gptq_config_init(&c);
    c.rtn = 1;
    c.desc_act = 1;
    cr_assert_eq(gptq_config_validate(ctx, &c), GPTQ_ERR_NOT_SUPPORTED);
    cr_assert_eq(gptq_num_groups(100, 32), 4);
    cr_assert_eq(gptq_num_groups(100, -1), 1);
    cr_assert_eq(gptq_num_groups(100, 0), -1);
}

Test(quantize, bad_input)
{
    float *w;
    gptq_hessian *h, *h2;
    gptq_result *r = (gptq_result *)1;
    gptq_config c;

    make_layer(8, 64, 1, &w, &h);
    gptq_config_init(&c);
    cr_assert_eq(gptq_layer_quantize(ctx, NULL, 8, 64, h, &c, &r), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_null(r);
    cr_assert_eq(gptq_layer_quantize(ctx, w, 8, 64, h, &c, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gptq_layer_quantize(ctx, w, 0, 64, h, &c, &r), GPTQ_ERR_SHAPE);
    /* The Hessian's width must be in_features. */
    cr_assert_eq(gptq_layer_quantize(ctx, w, 16, 32, h, &c, &r), GPTQ_ERR_SHAPE);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "input features") != NULL, "%s",
              gptq_ctx_last_error(ctx));
    cr_assert_eq(gptq_layer_quantize(ctx, w, 8, 64, NULL, &c, &r), GPTQ_ERR_INVALID_ARGUMENT);
    /* A Hessian without samples. */
    gptq_hessian_create(ctx, 64, &h2);
    cr_assert_eq(gptq_layer_quantize(ctx, w, 8, 64, h2, &c, &r), GPTQ_ERR_INVALID_ARGUMENT);
    gptq_hessian_free(h2);
    /* NaN and Inf in W. */
    w[17] = NAN;
    cr_assert_eq(gptq_layer_quantize(ctx, w, 8, 64, h, &c, &r), GPTQ_ERR_NUMERIC);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "NaN or Inf") != NULL);
    w[17] = -INFINITY;
    cr_assert_eq(gptq_layer_quantize(ctx, w, 8, 64, h, &c, &r), GPTQ_ERR_NUMERIC);
    w[17] = 0.0f;
    c.bits = 7;
    cr_assert_eq(gptq_layer_quantize(ctx, w, 8, 64, h, &c, &r), GPTQ_ERR_NOT_SUPPORTED);
    cr_assert_null(r);
    gptq_hessian_free(h);
    free(w);
}

Test(quantize, not_positive_definite_retries_then_fails)
{
    const int64_t C = 32, R = 4;
    float *hm = calloc((size_t)(C * C), sizeof(float)), *w = calloc((size_t)(R * C), sizeof(float));
    gptq_hessian *h;
    gptq_result *r;
    gptq_config c;

    for (int64_t i = 0; i < R * C; i++)
        w[i] = (float)((i * 7) % 13) - 6.0f;
    /* Indefinite: a negative eigenvalue of size 0.5 against mean diagonal ~1. Damping of
     * 0.01..0.99 x mean never makes it positive definite. */
    for (int64_t i = 0; i < C; i++)
        hm[i * C + i] = 1.0f;
    hm[0] = -3.0f;
    cr_assert_eq(gptq_hessian_create_from(ctx, C, hm, 1, &h), GPTQ_OK);
    gptq_config_init(&c);
    c.group_size = -1;
    cr_assert_eq(gptq_layer_quantize(ctx, w, R, C, h, &c, &r), GPTQ_ERR_NOT_POSITIVE_DEFINITE);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "not positive definite") != NULL, "%s",
              gptq_ctx_last_error(ctx));
    gptq_hessian_free(h);

    /* Slightly indefinite: fails at 1%, succeeds after increments; the damp used is
     * reported. mean(diag) = (31 - 0.05)/32; needs damp > 0.05 -> damp_percent >= 6%. */
    hm[0] = -0.05f;
    cr_assert_eq(gptq_hessian_create_from(ctx, C, hm, 1, &h), GPTQ_OK);
    cr_assert_eq(gptq_layer_quantize(ctx, w, R, C, h, &c, &r), GPTQ_OK, "%s",
                 gptq_ctx_last_error(ctx));
    cr_assert_gt(gptq_result_damp_percent(r), 0.05);
    cr_assert_lt(gptq_result_damp_percent(r), 0.08);
    cr_assert_gt(gptq_result_damp(r), 0.05);
    gptq_result_free(r);
    /* Without auto increment: the error at once. */
    c.damp_auto_increment = 0.0;
    cr_assert_eq(gptq_layer_quantize(ctx, w, R, C, h, &c, &r), GPTQ_ERR_NOT_POSITIVE_DEFINITE);
    gptq_hessian_free(h);
    free(hm);
    free(w);
}

/* Invariants every result satisfies, whatever the options. */
static void check_invariants(const gptq_result *r, const gptq_config *c, int64_t R, int64_t C)
{
    const int32_t maxq = (1 << c->bits) - 1;
    const int64_t ng = gptq_result_ngroups(r);
    const int32_t *codes = gptq_result_codes(r), *zeros = gptq_result_zeros(r);
    const int32_t *g = gptq_result_g_idx(r), *perm = gptq_result_perm(r);
    const float *q = gptq_result_q(r), *s = gptq_result_scales(r);
    char *seen = calloc((size_t)C, 1);

    cr_assert_eq(ng, gptq_num_groups(C, c->group_size));
    for (int64_t j = 0; j < C; j++) {
        cr_assert(g[j] >= 0 && g[j] < ng);
        cr_assert(perm[j] >= 0 && perm[j] < C && !seen[perm[j]], "perm is a permutation");
        seen[perm[j]] = 1;
    }
    for (int64_t k = 0; k < ng * R; k++) {
        cr_assert(s[k] > 0 && isfinite(s[k]));
        cr_assert(zeros[k] >= 0 && zeros[k] <= maxq);
        if (c->sym)
            cr_assert_eq(zeros[k], (maxq + 1) / 2);
    }
    for (int64_t rr = 0; rr < R; rr++)
        for (int64_t j = 0; j < C; j++) {
            int32_t v = codes[rr * C + j];
            int64_t gi = g[j] * R + rr;
            cr_assert(v >= 0 && v <= maxq);
            cr_assert_eq(q[rr * C + j], s[gi] * ((float)v - (float)zeros[gi]),
                         "Q = scale * (code - zero)");
        }
    free(seen);
}

Test(quantize, every_option_combination)
{
    const int64_t R = 40, C = 100; /* C not a multiple of 32 nor of the group size */
    float *w;
    gptq_hessian *h;
    const int bits[] = {2, 3, 4, 8};
    const int groups[] = {-1, 32, 128};

    make_layer(R, C, 5, &w, &h);
    for (int b = 0; b < 4; b++)
        for (int gi = 0; gi < 3; gi++)
            for (int flags = 0; flags < 16; flags++) {
                gptq_config c;
                gptq_result *r;
                gptq_config_init(&c);
                c.bits = bits[b];
                c.group_size = groups[gi];
                c.sym = flags & 1;
                c.desc_act = (flags >> 1) & 1;
                c.static_groups = (flags >> 2) & 1;
                c.rtn = (flags >> 3) & 1;
                if (c.rtn && c.desc_act)
                    continue;
                cr_assert_eq(gptq_layer_quantize(ctx, w, R, C, h, &c, &r), GPTQ_OK, "%s",
                             gptq_ctx_last_error(ctx));
                check_invariants(r, &c, R, C);
                if (c.rtn)
                    cr_assert_eq(gptq_result_loss(r), 0.0);
                else
                    cr_assert_gt(gptq_result_loss(r), 0.0);
                gptq_result_free(r);
            }
    gptq_hessian_free(h);
    free(w);
}

/* GPTQ must beat round-to-nearest on the loss it minimises, tr(D H D^T). */
Test(quantize, gptq_beats_rtn)
{
    const int64_t R = 32, C = 128;
    float *w, *hm = malloc(sizeof(float) * C * C);
    gptq_hessian *h;
    double loss[2];

    make_layer(R, C, 9, &w, &h);
    gptq_hessian_read(ctx, h, hm, (size_t)(C * C));
    for (int rtn = 0; rtn < 2; rtn++) {
        gptq_config c;
        gptq_result *r;
        const float *q;
        double l = 0;
        gptq_config_init(&c);
        c.bits = 3;
        c.rtn = rtn;
        cr_assert_eq(gptq_layer_quantize(ctx, w, R, C, rtn ? NULL : h, &c, &r), GPTQ_OK);
        q = gptq_result_q(r);
        for (int64_t rr = 0; rr < R; rr++)
            for (int64_t i = 0; i < C; i++)
                for (int64_t j = 0; j < C; j++)
                    l += ((double)q[rr * C + i] - w[rr * C + i]) * hm[i * C + j] *
                         ((double)q[rr * C + j] - w[rr * C + j]);
        loss[rtn] = l;
        gptq_result_free(r);
    }
    cr_assert_lt(loss[0], 0.9 * loss[1], "GPTQ %g vs RTN %g", loss[0], loss[1]);
    gptq_hessian_free(h);
    free(w);
    free(hm);
}

Test(quantize, dead_columns_quantize_to_zero)
{
    const int64_t R = 8, C = 64;
    float *w;
    float *hm = malloc(sizeof(float) * C * C);
    gptq_hessian *h, *h2;
    gptq_result *r;
    gptq_config c;

    make_layer(R, C, 3, &w, &h);
    gptq_hessian_read(ctx, h, hm, (size_t)(C * C));
    for (int64_t j = 0; j < C; j++)
        hm[5 * C + j] = hm[j * C + 5] = 0.0f; /* input channel 5 never fires */
    gptq_hessian_create_from(ctx, C, hm, 1, &h2);
    gptq_config_init(&c);
    c.desc_act = 1;
    c.group_size = 16;
    cr_assert_eq(gptq_layer_quantize(ctx, w, R, C, h2, &c, &r), GPTQ_OK);
    cr_assert_eq(gptq_result_dead_columns(r), 1);
    for (int64_t rr = 0; rr < R; rr++)
        cr_assert_eq(gptq_result_q(r)[rr * C + 5], 0.0f);
    gptq_result_free(r);
    gptq_hessian_free(h);
    gptq_hessian_free(h2);
    free(w);
    free(hm);
}

/* Separate contexts share nothing and can run at once. */
typedef struct job {
    const float *w;
    const float *hm;
    int64_t R, C;
    int32_t *codes;
    int rc;
} job;

static void *worker(void *p)
{
    job *j = p;
    gptq_ctx *c;
    gptq_hessian *h;
    gptq_result *r;
    gptq_ctx_options o;
    gptq_ctx_options_init(&o);
    j->rc = gptq_ctx_create(&o, &c, NULL, 0);
    if (j->rc)
        return NULL;
    j->rc = gptq_hessian_create_from(c, j->C, j->hm, 1, &h);
    if (!j->rc)
        j->rc = gptq_layer_quantize(c, j->w, j->R, j->C, h, NULL, &r);
    if (!j->rc) {
        memcpy(j->codes, gptq_result_codes(r), sizeof(int32_t) * (size_t)(j->R * j->C));
        gptq_result_free(r);
    }
    gptq_hessian_free(h);
    gptq_ctx_free(c);
    return NULL;
}

Test(quantize, contexts_in_parallel_threads)
{
    const int64_t R = 64, C = 256;
    float *w, *hm = malloc(sizeof(float) * C * C);
    gptq_hessian *h;
    pthread_t t[4];
    job jobs[4];

    make_layer(R, C, 11, &w, &h);
    gptq_hessian_read(ctx, h, hm, (size_t)(C * C));
    for (int i = 0; i < 4; i++) {
        jobs[i] = (job){w, hm, R, C, malloc(sizeof(int32_t) * R * C), -1};
        pthread_create(&t[i], NULL, worker, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(jobs[i].rc, GPTQ_OK);
    }
    for (int i = 1; i < 4; i++)
        cr_assert_arr_eq(jobs[i].codes, jobs[0].codes, sizeof(int32_t) * R * C);
    for (int i = 0; i < 4; i++)
        free(jobs[i].codes);
    gptq_hessian_free(h);
    free(w);
    free(hm);
}

Test(quantize, context_errors_and_backends)
{
    gptq_ctx_options o;
    gptq_ctx *c = (gptq_ctx *)1;
    char err[256];

    cr_assert_str_eq(gptq_version(), GPTQ_VERSION_STRING);
    cr_assert_eq(gptq_version_number(), GPTQ_VERSION_NUMBER);
    cr_assert_str_eq(gptq_status_str(GPTQ_ERR_NOT_POSITIVE_DEFINITE), "Hessian not positive definite");
    cr_assert_str_eq(gptq_strerror(12345), "unknown status");
    cr_assert_eq(gptq_ctx_backend(ctx), GPTQ_BACKEND_CPU);
    cr_assert_str_eq(gptq_ctx_last_error(ctx), "");

    gptq_ctx_options_init(&o);
    o.backend = 9;
    cr_assert_eq(gptq_ctx_create(&o, &c, err, sizeof err), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_null(c);
    cr_assert(strstr(err, "unknown backend") != NULL);
    /* No CUDA module in this build: a clear error for "cuda", a CPU fallback for "auto". */
    gptq_ctx_options_init(&o);
    o.backend = GPTQ_BACKEND_CUDA;
    setenv("GPTQ_CUDA_MODULE_PATH", "/nonexistent/libgptq-cuda.so.0", 1);
    cr_assert_eq(gptq_ctx_create(&o, &c, err, sizeof err), GPTQ_ERR_NOT_SUPPORTED);
    cr_assert(strstr(err, "CUDA backend not available") != NULL, "%s", err);
    cr_assert_eq(gptq_backend_available(GPTQ_BACKEND_CUDA, err, sizeof err), 0);
    o.backend = GPTQ_BACKEND_AUTO;
    cr_assert_eq(gptq_ctx_create(&o, &c, err, sizeof err), GPTQ_OK);
    cr_assert_eq(gptq_ctx_backend(c), GPTQ_BACKEND_CPU);
    gptq_ctx_free(c);
    unsetenv("GPTQ_CUDA_MODULE_PATH");
    gptq_ctx_free(NULL);
}
