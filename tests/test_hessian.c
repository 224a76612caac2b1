/*
 * The Hessian accumulator: reference scaling (samples are sequences), merging,
 * read-out, and bad input.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gptq/gptq.h"

static gptq_ctx *ctx;

static void setup(void) { cr_assert_eq(gptq_ctx_create(NULL, &ctx, NULL, 0), GPTQ_OK); }
static void teardown(void) { gptq_ctx_free(ctx); }

TestSuite(hessian, .init = setup, .fini = teardown);

static float *random_x(int64_t rows, int64_t in, unsigned seed)
{
    float *x = malloc(sizeof(float) * (size_t)(rows * in));
    srand(seed);
    for (int64_t i = 0; i < rows * in; i++)
        x[i] = (float)rand() / (float)RAND_MAX - 0.5f + (i % in == 3 ? 4.0f : 0.0f);
    return x;
}

/* H = 2/n sum_s X_s^T X_s in double, n counted in sequences. */
static void expected(const float *x, int64_t nseq, int64_t seqlen, int64_t in, double *h)
{
    memset(h, 0, sizeof(double) * (size_t)(in * in));
    for (int64_t r = 0; r < nseq * seqlen; r++)
        for (int64_t i = 0; i < in; i++)
            for (int64_t j = 0; j < in; j++)
                h[i * in + j] += (double)x[r * in + i] * x[r * in + j];
    for (int64_t i = 0; i < in * in; i++)
        h[i] *= 2.0 / (double)nseq;
}

static void assert_close(const float *a, const double *b, int64_t n, double rel)
{
    double scale = 0;
    for (int64_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(b[i]));
    for (int64_t i = 0; i < n; i++)
        cr_assert_leq(fabs(a[i] - b[i]), rel * scale, "element %lld: %g vs %g", (long long)i,
                      (double)a[i], b[i]);
}

Test(hessian, samples_are_sequences)
{
    const int64_t in = 24, nseq = 5, seqlen = 7;
    float *x = random_x(nseq * seqlen, in, 1), *out = malloc(sizeof(float) * in * in);
    double *want = malloc(sizeof(double) * in * in);
    gptq_hessian *h1, *h2;

    /* One call per sequence (the references' way) ... */
    cr_assert_eq(gptq_hessian_create(ctx, in, &h1), GPTQ_OK);
    for (int64_t s = 0; s < nseq; s++)
        cr_assert_eq(gptq_hessian_add(ctx, h1, x + s * seqlen * in, 1, seqlen), GPTQ_OK);
    cr_assert_eq(gptq_hessian_nsamples(h1), nseq);
    /* ... and one call with all sequences as a batch count the same samples. */
    cr_assert_eq(gptq_hessian_create(ctx, in, &h2), GPTQ_OK);
    cr_assert_eq(gptq_hessian_add(ctx, h2, x, nseq, seqlen), GPTQ_OK);
    cr_assert_eq(gptq_hessian_nsamples(h2), nseq);

    expected(x, nseq, seqlen, in, want);
    cr_assert_eq(gptq_hessian_read(ctx, h1, out, (size_t)(in * in)), GPTQ_OK);
    assert_close(out, want, in * in, 1e-5);
    for (int64_t i = 0; i < in; i++)
        for (int64_t j = 0; j < in; j++)
            cr_assert_eq(out[i * in + j], out[j * in + i], "H must be exactly symmetric");
    cr_assert_eq(gptq_hessian_read(ctx, h2, out, (size_t)(in * in)), GPTQ_OK);
    assert_close(out, want, in * in, 1e-5);

    gptq_hessian_free(h1);
    gptq_hessian_free(h2);
    free(x);
    free(out);
    free(want);
}

Test(hessian, merge_equals_single_accumulation)
{
    const int64_t in = 40, seqlen = 16, n1 = 3, n2 = 6;
    float *x = random_x((n1 + n2) * seqlen, in, 7);
    float *a = malloc(sizeof(float) * in * in), *b = malloc(sizeof(float) * in * in);
    double *bd = malloc(sizeof(double) * in * in);
    gptq_hessian *all, *p1, *p2;

    gptq_hessian_create(ctx, in, &all);
    gptq_hessian_create(ctx, in, &p1);
    gptq_hessian_create(ctx, in, &p2);
    for (int64_t s = 0; s < n1 + n2; s++) {
        const float *xs = x + s * seqlen * in;
        cr_assert_eq(gptq_hessian_add(ctx, all, xs, 1, seqlen), GPTQ_OK);
        cr_assert_eq(gptq_hessian_add(ctx, s < n1 ? p1 : p2, xs, 1, seqlen), GPTQ_OK);
    }
    cr_assert_eq(gptq_hessian_merge(ctx, p1, p2), GPTQ_OK);
    cr_assert_eq(gptq_hessian_nsamples(p1), n1 + n2);
    gptq_hessian_read(ctx, all, a, (size_t)(in * in));
    gptq_hessian_read(ctx, p1, b, (size_t)(in * in));
    for (int64_t i = 0; i < in * in; i++)
        bd[i] = b[i];
    assert_close(a, bd, in * in, 1e-5);

    /* Merging into an empty accumulator copies. */
    {
        gptq_hessian *e;
        gptq_hessian_create(ctx, in, &e);
        cr_assert_eq(gptq_hessian_merge(ctx, e, p2), GPTQ_OK);
        cr_assert_eq(gptq_hessian_nsamples(e), n2);
        gptq_hessian_free(e);
    }
    gptq_hessian_free(all);
    gptq_hessian_free(p1);
    gptq_hessian_free(p2);
    free(x);
    free(a);
    free(b);
    free(bd);
}

Test(hessian, create_from_and_read)
{
    float h[9] = {2, 1, 0, 1, 2, 1, 0, 1, 2}, out[9];
    gptq_hessian *hh;
    cr_assert_eq(gptq_hessian_create_from(ctx, 3, h, 4, &hh), GPTQ_OK);
    cr_assert_eq(gptq_hessian_in_features(hh), 3);
    cr_assert_eq(gptq_hessian_nsamples(hh), 4);
    cr_assert_eq(gptq_hessian_read(ctx, hh, out, 9), GPTQ_OK);
    cr_assert_arr_eq(out, h, sizeof h);
    cr_assert_eq(gptq_hessian_read(ctx, hh, out, 8), GPTQ_ERR_INVALID_ARGUMENT);
    gptq_hessian_free(hh);
}

Test(hessian, bad_input)
{
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, before[4], after[4];
    float hnan[4] = {1, 0, 0, NAN};
    gptq_hessian *h, *h3, *tmp = NULL;

    cr_assert_eq(gptq_hessian_create(ctx, 0, &tmp), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_null(tmp);
    cr_assert_eq(gptq_hessian_create(ctx, 2, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gptq_hessian_create_from(ctx, 2, hnan, 1, &tmp), GPTQ_ERR_NUMERIC);
    cr_assert_null(tmp);
    cr_assert_eq(gptq_hessian_create_from(ctx, 2, x, 0, &tmp), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gptq_hessian_create(ctx, 2, &h), GPTQ_OK);
    cr_assert_eq(gptq_hessian_add(ctx, h, x, 2, 2), GPTQ_OK);
    gptq_hessian_read(ctx, h, before, 4);
    /* NaN/Inf in X: a clear error, H and n unchanged. */
    x[5] = INFINITY;
    cr_assert_eq(gptq_hessian_add(ctx, h, x, 1, 4), GPTQ_ERR_NUMERIC);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "NaN or Inf") != NULL, "%s", gptq_ctx_last_error(ctx));
    cr_assert_eq(gptq_ctx_last_status(ctx), GPTQ_ERR_NUMERIC);
    gptq_hessian_read(ctx, h, after, 4);
    cr_assert_arr_eq(before, after, sizeof before);
    cr_assert_eq(gptq_hessian_nsamples(h), 2);
    cr_assert_eq(gptq_hessian_add(ctx, h, x, 0, 4), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gptq_hessian_add(ctx, h, NULL, 1, 4), GPTQ_ERR_INVALID_ARGUMENT);
    /* Merge of different widths. */
    cr_assert_eq(gptq_hessian_create(ctx, 3, &h3), GPTQ_OK);
    cr_assert_eq(gptq_hessian_merge(ctx, h, h3), GPTQ_ERR_SHAPE);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "in_features differ") != NULL);
    gptq_hessian_free(h3);
    gptq_hessian_free(h);
    gptq_hessian_free(NULL);
}
