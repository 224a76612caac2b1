/*
 * The Hessian accumulator, H = 2/n * sum_s X_s^T X_s, exactly as the reference
 * `add_batch` (IST-DASLab gptq.py; AutoGPTQ identical) builds it:
 *
 *     H *= fl32(n / (n + t));  n += t;  X = fl32(sqrt(2 / n)) * X;  H += X^T X
 *
 * with t the number of sequences in the call (samples are sequences, not rows). The
 * two factors are computed in double and rounded once to float32, then multiplied in
 * float32, as torch does with a Python float and a float32 tensor. X^T X goes through
 * the backend's SYRK (the summation order is the BLAS's, as in the reference).
 */
#include <math.h>
#include <string.h>

#include "backend.h"

struct gptq_hessian {
    int64_t in;
    int64_t nsamples;
    float *h;           /* [in, in], both triangles */
};

/* Rows of X scaled per SYRK call: bounds the scratch copy to ~32 MB. */
#define HESSIAN_CHUNK_BYTES ((size_t)32 << 20)

static int new_hessian(gptq_ctx *ctx, int64_t in, gptq_hessian **out)
{
    size_t bytes;
    gptq_hessian *h;

    if (!out)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_hessian_create: out is NULL");
    *out = NULL;
    if (in < 1)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_hessian_create: in_features must be >= 1, got %lld", (long long)in);
    if (gptq__mul3_size(&bytes, in, in, sizeof(float)) != 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY, "Hessian of %lld features is too large",
                         (long long)in);
    h = gptq__calloc(ctx, sizeof *h, "Hessian");
    if (!h)
        return GPTQ_ERR_OUT_OF_MEMORY;
    h->in = in;
    h->h = gptq__calloc(ctx, bytes, "Hessian matrix");
    if (!h->h) {
        gptq__free(h);
        return GPTQ_ERR_OUT_OF_MEMORY;
    }
    *out = h;
    return GPTQ_OK;
}

int gptq_hessian_create(gptq_ctx *ctx, int64_t in_features, gptq_hessian **out)
{
    return new_hessian(ctx, in_features, out);
}

int gptq_hessian_create_from(gptq_ctx *ctx, int64_t in_features, const float *h, int64_t nsamples,
                             gptq_hessian **out)
{
    size_t n;
    if (!h)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_hessian_create_from: h is NULL");
    if (nsamples < 1)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_hessian_create_from: nsamples must be >= 1, got %lld",
                         (long long)nsamples);
    GPTQ_TRY(new_hessian(ctx, in_features, out));
    n = (size_t)in_features * (size_t)in_features;
    if (!gptq__all_finite(h, n)) {
        gptq_hessian_free(*out);
        *out = NULL;
        return GPTQ_FAIL(ctx, GPTQ_ERR_NUMERIC, "Hessian contains NaN or Inf");
    }
    memcpy((*out)->h, h, n * sizeof(float));
    (*out)->nsamples = nsamples;
    return GPTQ_OK;
}

void gptq_hessian_free(gptq_hessian *h)
{
    if (!h)
        return;
    gptq__free(h->h);
    gptq__free(h);
}

int64_t gptq_hessian_in_features(const gptq_hessian *h) { return h ? h->in : 0; }

int64_t gptq_hessian_nsamples(const gptq_hessian *h) { return h ? h->nsamples : 0; }

const float *gptq__hessian_data(const gptq_hessian *h) { return h->h; }

int64_t gptq__hessian_chunk_rows(int64_t in)
{
    const int64_t rows = (int64_t)(HESSIAN_CHUNK_BYTES / ((size_t)(in > 0 ? in : 1) * sizeof(float)));
    return rows < 1 ? 1 : rows;
}

int gptq__hessian_accumulate(gptq_ctx *ctx, int64_t in, float *h, int64_t *count,
                             const float *x, int64_t nsamples, int64_t seqlen, float *xs,
                             int host_rows)
{
    const gptq_backend *be = ctx->backend;
    const int64_t rows = nsamples * seqlen, n_new = *count + nsamples;
    const int64_t chunk = gptq__hessian_chunk_rows(in) < rows ? gptq__hessian_chunk_rows(in) : rows;
    const float keep = (float)((double)*count / (double)n_new);
    const float scale = (float)sqrt(2.0 / (double)n_new);
    int rc = GPTQ_OK;

    /* H *= keep happens as SYRK's beta on the first chunk (beta scaling is an exact
     * float32 multiply per element, the same operation as torch's in-place mul). */
    for (int64_t r0 = 0; r0 < rows && rc == GPTQ_OK; r0 += chunk) {
        const int64_t nr = rows - r0 < chunk ? rows - r0 : chunk;
        const float *src = x + r0 * in;
        if (be->scale && !host_rows) {
            rc = be->scale(ctx, xs, src, scale, nr * in);
        } else {
            for (int64_t i = 0; i < nr * in; i++)
                xs[i] = scale * src[i];
        }
        if (rc == GPTQ_OK)
            rc = be->syrk(ctx, in, nr, xs, r0 == 0 ? keep : 1.0f, h);
    }
    if (rc == GPTQ_OK)
        *count = n_new;
    return rc;
}

int gptq_hessian_add(gptq_ctx *ctx, gptq_hessian *h, const float *x, int64_t nsamples,
                     int64_t seqlen)
{
    size_t total;
    int64_t chunk;
    float *xs;

    if (!ctx || !h || !x)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_hessian_add: NULL argument");
    if (nsamples < 1 || seqlen < 1)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_hessian_add: nsamples and seqlen must be >= 1 (got %lld, %lld)",
                         (long long)nsamples, (long long)seqlen);
    if (gptq__mul3_size(&total, nsamples, seqlen, h->in) != 0 || nsamples > INT64_MAX - h->nsamples)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_hessian_add: batch too large");
    /* Check first so that a bad batch leaves H unchanged. */
    if (!gptq__all_finite(x, total))
        return GPTQ_FAIL(ctx, GPTQ_ERR_NUMERIC,
                         "gptq_hessian_add: calibration input contains NaN or Inf");
    /* The context's scratch: the pipeline's four Hessians per layer share one buffer,
     * faulted in once per run instead of once per Hessian. */
    chunk = gptq__hessian_chunk_rows(h->in);
    chunk = chunk < nsamples * seqlen ? chunk : nsamples * seqlen;
    xs = gptq__scratch(ctx, GPTQ_SCRATCH_HESSIAN, (size_t)chunk * (size_t)h->in * sizeof(float),
                       "scaled calibration rows");
    if (!xs)
        return GPTQ_ERR_OUT_OF_MEMORY;
    return gptq__hessian_accumulate(ctx, h->in, h->h, &h->nsamples, x, nsamples, seqlen, xs, 1);
}

int gptq__hessian_fill(gptq_ctx *ctx, gptq_hessian *h, const float *buf, int64_t nsamples)
{
    const size_t n = (size_t)h->in * (size_t)h->in;
    GPTQ_TRY(ctx->backend->download(ctx, h->h, buf, n * sizeof(float)));
    if (!gptq__all_finite(h->h, n))
        return GPTQ_FAIL(ctx, GPTQ_ERR_NUMERIC,
                         "Hessian contains NaN or Inf (non-finite calibration activations)");
    h->nsamples = nsamples;
    return GPTQ_OK;
}

int gptq_hessian_merge(gptq_ctx *ctx, gptq_hessian *dst, const gptq_hessian *src)
{
    float a, b;
    size_t n;
    int64_t total;

    if (!ctx || !dst || !src)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_hessian_merge: NULL argument");
    if (dst->in != src->in)
        return GPTQ_FAIL(ctx, GPTQ_ERR_SHAPE,
                         "gptq_hessian_merge: in_features differ (%lld vs %lld)",
                         (long long)dst->in, (long long)src->in);
    if (src->nsamples == 0)
        return GPTQ_OK;
    if (src->nsamples > INT64_MAX - dst->nsamples)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_hessian_merge: sample count overflow");
    total = dst->nsamples + src->nsamples;
    /* Each H is (2/n_i) * S_i; the merged one is (2/N) * (S_1 + S_2). */
    a = (float)((double)dst->nsamples / (double)total);
    b = (float)((double)src->nsamples / (double)total);
    n = (size_t)dst->in * (size_t)dst->in;
    for (size_t i = 0; i < n; i++)
        dst->h[i] = a * dst->h[i] + b * src->h[i];
    dst->nsamples = total;
    return GPTQ_OK;
}

int gptq_hessian_read(gptq_ctx *ctx, const gptq_hessian *h, float *dst, size_t count)
{
    size_t n;
    if (!h || !dst)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_hessian_read: NULL argument");
    n = (size_t)h->in * (size_t)h->in;
    if (count < n)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_hessian_read: dst holds %zu floats, H needs %zu", count, n);
    memcpy(dst, h->h, n * sizeof(float));
    return GPTQ_OK;
}
