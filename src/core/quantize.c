/*
 * gptq_layer_quantize: GPTQ for one linear layer (Frantar et al., ICLR 2023, Alg. 1),
 * step by step as IST-DASLab gptq.py `fasterquant` and AutoGPTQ compute it
 * (FORMATS.md section 1.2):
 *
 *   1. row parameters from the original W (used when group_size = -1)
 *   2. dead columns (H[i,i] == 0): H[i,i] = 1, W[:, i] = 0
 *   3. static groups: parameters of every original-order group, from W after step 2
 *   4. act-order: stable descending sort of diag(H); permute W's columns, H's axes
 *   5. damping: H += fl32(damp_percent) * mean(diag(H)) * I
 *   6. U = upper Cholesky factor of H^-1 (retrying with more damping on failure)
 *   7. blocks of block_size columns: the fused in-block loop (backend), then the lazy
 *      update W[:, i2:] -= Err * U[i1:i2, i2:] (backend GEMM)
 *   8. un-permute, g_idx, parameters per group
 *
 * Only the heavy primitives go through the backend table; the ordering and
 * bookkeeping live here once for every backend.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "quantizer.h"
#include "result.h"

typedef struct work {
    gptq_ctx *ctx;
    const gptq_backend *be;
    gptq_config cfg;
    int64_t R, C, ng;
    int32_t maxq;
    float *w;         /* [R, C] working W, processing order */
    float *h;         /* [C, C] H after dead-column fixing and permutation */
    float *u;         /* [C, C] U, row-major upper */
    float *err;       /* [block, R] */
    float *err2;      /* [block, R], the second buffer when blocks overlap the GEMM */
    float *row_scale; /* [R] */
    float *row_zero;  /* [R] */
    float *scales;    /* [ng, R] */
    float *zeros;     /* [ng, R] */
    int32_t *perm;    /* [C] */
    double *row_loss; /* [R] */
    /* Backends with resident_layer: W, U and the block errors in backend buffers (device
     * memory) for the whole block loop, uploaded once; NULL otherwise. */
    float *dw, *du, *derr;
} work;

static void work_free(work *k)
{
    if (k->dw)
        k->be->buf_free(k->ctx, k->dw);
    if (k->du)
        k->be->buf_free(k->ctx, k->du);
    if (k->derr)
        k->be->buf_free(k->ctx, k->derr);
    gptq__free(k->w);
    gptq__free(k->h);
    gptq__free(k->u);
    gptq__free(k->err);
    gptq__free(k->err2);
    gptq__free(k->row_scale);
    gptq__free(k->row_zero);
    gptq__free(k->scales);
    gptq__free(k->zeros);
    gptq__free(k->perm);
    gptq__free(k->row_loss);
}

/* Sort key for act-order: descending diag(H), ties by index (a stable sort; the
 * references' torch.argsort is not stable, but ties only occur among dead columns,
 * whose order changes neither codes nor g_idx). */
typedef struct diag_key {
    float d;
    int32_t i;
} diag_key;

static int cmp_desc(const void *pa, const void *pb)
{
    const diag_key *a = pa, *b = pb;
    if (a->d > b->d)
        return -1;
    if (a->d < b->d)
        return 1;
    return (a->i > b->i) - (a->i < b->i);
}

/* Step 4: perm and the permuted copies of W (columns) and H (both axes). */
static int apply_act_order(work *k)
{
    const int64_t R = k->R, C = k->C;
    diag_key *keys = gptq__alloc(k->ctx, (size_t)C * sizeof *keys, "act-order keys");
    float *tmp;
    if (!keys)
        return GPTQ_ERR_OUT_OF_MEMORY;
    for (int64_t i = 0; i < C; i++) {
        keys[i].d = k->h[i * C + i];
        keys[i].i = (int32_t)i;
    }
    qsort(keys, (size_t)C, sizeof *keys, cmp_desc);
    for (int64_t i = 0; i < C; i++)
        k->perm[i] = keys[i].i;
    gptq__free(keys);

    /* W: row by row through one row of scratch (stays in cache). */
    tmp = gptq__alloc(k->ctx, (size_t)C * sizeof(float), "act-order scratch");
    if (!tmp)
        return GPTQ_ERR_OUT_OF_MEMORY;
    for (int64_t r = 0; r < R; r++) {
        float *row = k->w + r * C;
        for (int64_t j = 0; j < C; j++)
            tmp[j] = row[k->perm[j]];
        memcpy(row, tmp, (size_t)C * sizeof(float));
    }
    gptq__free(tmp);
    /* H: both axes, into the (still unused) U buffer, which then becomes H. */
    for (int64_t i = 0; i < C; i++) {
        const float *src = k->h + (size_t)k->perm[i] * (size_t)C;
        float *dst = k->u + (size_t)i * (size_t)C;
        for (int64_t j = 0; j < C; j++)
            dst[j] = src[k->perm[j]];
    }
    tmp = k->h;
    k->h = k->u;
    k->u = tmp;
    return GPTQ_OK;
}

/* a[i][j] = a[j][i] for j > i, then zero the strict lower triangle: moves a
 * column-major upper factor (the row-major lower triangle) into row-major upper
 * position. Tiled so both sides stay in cache (a plain double loop walks one side
 * with a stride of C floats). */
static void lower_to_upper(float *a, int64_t C)
{
    enum { T = 32 };
    for (int64_t ib = 0; ib < C; ib += T)
        for (int64_t jb = ib; jb < C; jb += T) {
            int64_t ie = ib + T < C ? ib + T : C, je = jb + T < C ? jb + T : C;
            for (int64_t i = ib; i < ie; i++)
                for (int64_t j = (jb > i + 1 ? jb : i + 1); j < je; j++) {
                    a[i * C + j] = a[j * C + i];
                    a[j * C + i] = 0.0f;
                }
        }
}

/* a[i][j] = a[j][i] for j < i: copies the row-major upper triangle into the lower. */
static void mirror_upper(float *a, int64_t C)
{
    enum { T = 32 };
    for (int64_t ib = 0; ib < C; ib += T)
        for (int64_t jb = 0; jb <= ib; jb += T) {
            int64_t ie = ib + T < C ? ib + T : C, je = jb + T < C ? jb + T : C;
            for (int64_t i = ib; i < ie; i++)
                for (int64_t j = jb; j < je && j < i; j++)
                    a[i * C + j] = a[j * C + i];
        }
}

/* Step 6 for one damping value: U into k->u, or NOT_POSITIVE_DEFINITE (no message). */
static int factor_once(work *k, float damp)
{
    const int64_t C = k->C;
    const size_t n2 = (size_t)C * (size_t)C;
    float *a = k->u;
    int64_t info = 0;

    if (k->cfg.inverse == GPTQ_INVERSE_REFERENCE) {
        /* The references: L = chol(H); Hinv = cholesky_inverse(L); U = chol(Hinv, upper).
         * H is symmetric, so the row-major buffer is also its column-major storage. */
        memcpy(a, k->h, n2 * sizeof(float));
        for (int64_t i = 0; i < C; i++)
            a[i * C + i] += damp;
        GPTQ_TRY(k->be->potrf(k->ctx, 1, C, a, &info));
        GPTQ_TRY(k->be->potri(k->ctx, 1, C, a, &info));
        /* potri filled the column-major lower triangle = row-major upper; mirror it. */
        mirror_upper(a, C);
        GPTQ_TRY(k->be->potrf(k->ctx, 0, C, a, &info));
        /* Column-major upper U lives in the row-major lower triangle: transpose. */
        lower_to_upper(a, C);
        return GPTQ_OK;
    }
    /* Fast path: with J the exchange matrix, chol(J H J) = L' gives H = V V^T for the
     * upper V = J L' J, so U = V^-1 = J L'^-1 J satisfies U^T U = H^-1. Reversing a
     * symmetric row-major matrix is reversing its element array. */
    for (size_t i = 0; i < n2; i++)
        a[i] = k->h[n2 - 1 - i];
    for (int64_t i = 0; i < C; i++)
        a[i * C + i] += damp;
    GPTQ_TRY(k->be->potrf(k->ctx, 1, C, a, &info));
    GPTQ_TRY(k->be->trtri(k->ctx, 1, C, a, &info));
    /* Linv(p, q) sits at a[q*C + p] (column-major, p >= q). U(i, j) = Linv(C-1-i, C-1-j)
     * = a[n2 - 1 - (j*C + i)]: reverse the array, then transpose. */
    for (size_t i = 0; i < n2 / 2; i++) {
        float t = a[i];
        a[i] = a[n2 - 1 - i];
        a[n2 - 1 - i] = t;
    }
    lower_to_upper(a, C);
    return GPTQ_OK;
}

/* Steps 5-6 with GPTQModel's damp_auto_increment retry loop. */
static int factor(work *k, gptq_result *res)
{
    const int64_t C = k->C;
    double sum = 0.0, pct = k->cfg.damp_percent;
    float mean;
    int rc;

    /* torch.mean of the float32 diagonal: its cascaded sum is far more accurate than a
     * naive float loop; a double sum rounded once matches it in practice. */
    for (int64_t i = 0; i < C; i++)
        sum += k->h[i * C + i];
    mean = (float)(sum / (double)C);
    for (;;) {
        float damp = (float)pct * mean;
        double t0 = gptq__now();
        rc = factor_once(k, damp);
        k->ctx->prof.factor_s += gptq__now() - t0;
        k->ctx->prof.blas_s += gptq__now() - t0;
        if (rc == GPTQ_OK) {
            res->damp_percent = pct;
            res->damp = damp;
            if (pct != k->cfg.damp_percent)
                gptq__log(k->ctx, GPTQ_LOG_WARN,
                          "Cholesky failed at damp_percent %g; succeeded at %g",
                          k->cfg.damp_percent, pct);
            return GPTQ_OK;
        }
        if (rc != GPTQ_ERR_NOT_POSITIVE_DEFINITE)
            return rc;
        if (k->cfg.damp_auto_increment <= 0.0 || pct + k->cfg.damp_auto_increment >= 1.0)
            break;
        pct += k->cfg.damp_auto_increment;
    }
    return GPTQ_FAIL(k->ctx, GPTQ_ERR_NOT_POSITIVE_DEFINITE,
                     "Hessian is not positive definite: Cholesky failed with damp_percent from "
                     "%g up to %g (mean diag(H) = %g); use more calibration samples or a larger "
                     "damp_percent",
                     k->cfg.damp_percent, pct, (double)mean);
}

static int alloc_work(work *k)
{
    const int64_t R = k->R, C = k->C;
    size_t rc_, cc, ngr;
    if (gptq__mul_size(&rc_, R, C) || gptq__mul_size(&cc, C, C) || gptq__mul_size(&ngr, k->ng, R) ||
        rc_ > SIZE_MAX / 8 || cc > SIZE_MAX / 8)
        return GPTQ_FAIL(k->ctx, GPTQ_ERR_OUT_OF_MEMORY, "layer %lld x %lld is too large",
                         (long long)R, (long long)C);
    k->w = gptq__alloc(k->ctx, rc_ * sizeof(float), "W");
    k->row_scale = k->w ? gptq__alloc(k->ctx, (size_t)R * sizeof(float), "scales") : NULL;
    k->row_zero = k->row_scale ? gptq__alloc(k->ctx, (size_t)R * sizeof(float), "zeros") : NULL;
    k->scales = k->row_zero ? gptq__calloc(k->ctx, ngr * sizeof(float), "scales") : NULL;
    k->zeros = k->scales ? gptq__calloc(k->ctx, ngr * sizeof(float), "zeros") : NULL;
    k->perm = k->zeros ? gptq__alloc(k->ctx, (size_t)C * sizeof(int32_t), "perm") : NULL;
    k->row_loss = k->perm ? gptq__calloc(k->ctx, (size_t)R * sizeof(double), "loss") : NULL;
    if (!k->row_loss)
        return GPTQ_ERR_OUT_OF_MEMORY;
    if (!k->cfg.rtn) {
        k->h = gptq__alloc(k->ctx, cc * sizeof(float), "H");
        k->u = k->h ? gptq__alloc(k->ctx, cc * sizeof(float), "U") : NULL;
        k->err = k->u ? gptq__alloc(k->ctx, (size_t)R * (size_t)k->cfg.block_size * sizeof(float),
                                    "block errors")
                      : NULL;
        if (!k->err)
            return GPTQ_ERR_OUT_OF_MEMORY;
        /* Optional: without it the blocks simply do not overlap the GEMM. */
        k->err2 = gptq__alloc(k->ctx, (size_t)R * (size_t)k->cfg.block_size * sizeof(float),
                              "block errors");
    }
    return GPTQ_OK;
}

/* Steps 1-4: everything before damping. Returns the dead-column count. */
static int64_t prepare(work *k, const float *w, const gptq_hessian *hessian)
{
    const int64_t R = k->R, C = k->C;
    const int32_t gs = k->cfg.group_size;
    int64_t dead = 0;

    memcpy(k->w, w, (size_t)R * (size_t)C * sizeof(float));
    for (int64_t i = 0; i < C; i++)
        k->perm[i] = (int32_t)i;
    /* 1. Row parameters on the original W, before dead columns are zeroed. */
    for (int64_t r = 0; r < R; r++)
        gptq__find_params(k->w + r * C, C, k->maxq, k->cfg.sym, &k->row_scale[r], &k->row_zero[r]);
    if (k->cfg.rtn)
        return 0;
    /* 2. Dead columns. */
    memcpy(k->h, gptq__hessian_data(hessian), (size_t)C * (size_t)C * sizeof(float));
    for (int64_t i = 0; i < C; i++) {
        if (k->h[i * C + i] == 0.0f) {
            k->h[i * C + i] = 1.0f;
            for (int64_t r = 0; r < R; r++)
                k->w[r * C + i] = 0.0f;
            dead++;
        }
    }
    /* 3. Static groups: original column order, no error feedback. */
    if (gs != -1 && k->cfg.static_groups)
        for (int64_t g = 0; g < k->ng; g++) {
            int64_t c0 = g * gs, c1 = c0 + gs < C ? c0 + gs : C;
            for (int64_t r = 0; r < R; r++)
                gptq__find_params(k->w + r * C + c0, c1 - c0, k->maxq, k->cfg.sym,
                                  &k->scales[g * R + r], &k->zeros[g * R + r]);
        }
    return dead;
}

/* Step 7: the block loop.
 *
 * After block b, the next block only needs its own columns updated. So the update
 * W[:, i2:] -= E_b U[i1:i2, i2:] is split: first the next block's columns (small),
 * then the in-block loop of block b+1 starts on a helper thread while this thread
 * applies the rest of block b's update (the big GEMM) to the columns after it. The
 * two touch disjoint columns, E is double-buffered, and every value is computed by
 * the same operations as without the overlap. Not done when a group could reach
 * past the next block (its parameters would read columns still being updated), nor
 * when the backend does not allow it. */
typedef struct block_job {
    gptq_ctx *ctx;
    const gptq_backend *be;
    gptq_block_args a;
    int rc;
    double seconds;
} block_job;

static void *block_job_main(void *p)
{
    block_job *j = p;
    double t0 = gptq__now();
    j->rc = j->be->quantize_block(j->ctx, &j->a);
    j->seconds = gptq__now() - t0;
    return NULL;
}

/* The arrays the block loop works on: the backend's buffers when resident. */
static float *loop_w(const work *k) { return k->dw ? k->dw : k->w; }
static const float *loop_u(const work *k) { return k->du ? k->du : k->u; }

static int timed_gemm(work *k, int64_t i1, int64_t i2, int64_t c0, int64_t c1, const float *err)
{
    double t0 = gptq__now();
    int rc = GPTQ_OK;
    if (c1 > c0)
        rc = k->be->gemm(k->ctx, 1, 0, k->R, c1 - c0, i2 - i1, -1.0f, err, k->R,
                         loop_u(k) + i1 * k->C + c0, k->C, 1.0f, loop_w(k) + c0, k->C);
    k->ctx->prof.gemm_s += gptq__now() - t0;
    k->ctx->prof.blas_s += gptq__now() - t0;
    return rc;
}

/* Backends with resident_layer (the GPU): W and U go to backend buffers once and the
 * block errors are kept there, so the block loop moves only each block's results
 * (q, codes, group parameters) back; every primitive then works on them in place. */
static int make_resident(work *k)
{
    const gptq_backend *be = k->be;
    const size_t wb = (size_t)k->R * (size_t)k->C * sizeof(float);
    const size_t ub = (size_t)k->C * (size_t)k->C * sizeof(float);
    const size_t eb = (size_t)k->R * (size_t)k->cfg.block_size * sizeof(float);

    if (!be->resident_layer || k->cfg.rtn)
        return GPTQ_OK;
    k->dw = gptq__buf_alloc(k->ctx, wb, "the layer's W");
    k->du = k->dw ? gptq__buf_alloc(k->ctx, ub, "the layer's U") : NULL;
    k->derr = k->du ? gptq__buf_alloc(k->ctx, eb, "the block errors") : NULL;
    if (!k->derr)
        return GPTQ_ERR_OUT_OF_MEMORY;
    GPTQ_TRY(be->upload(k->ctx, k->dw, k->w, wb));
    return be->upload(k->ctx, k->du, k->u, ub);
}

static int run_blocks(work *k, gptq_result *res)
{
    const int64_t R = k->R, C = k->C, B = k->cfg.block_size;
    const int32_t gs = k->cfg.group_size;
    block_job job;
    gptq_block_args *a = &job.a;
    /* Two error buffers when blocks overlap the GEMM; otherwise (no second buffer, or
     * the resident loop) one serves every block. */
    float *err[2] = {k->derr ? k->derr : k->err, k->derr || !k->err2 ? NULL : k->err2};
    int overlap = k->be->overlap_block_gemm && !k->cfg.rtn && err[1] && k->ctx->threads > 1 &&
                  (gs == -1 || k->cfg.static_groups || B % gs == 0);

    if (!err[1])
        err[1] = err[0];

    memset(&job, 0, sizeof job);
    job.ctx = k->ctx;
    job.be = k->be;
    a->rows = R;
    a->cols = C;
    a->maxq = k->maxq;
    a->sym = k->cfg.sym;
    a->group_size = gs;
    a->static_groups = k->cfg.rtn ? 0 : k->cfg.static_groups;
    a->w = loop_w(k);
    a->u = k->cfg.rtn ? NULL : loop_u(k);
    a->perm = k->perm;
    a->row_scale = k->row_scale;
    a->row_zero = k->row_zero;
    a->scales = k->scales;
    a->zeros = k->zeros;
    a->q = res->q;
    a->codes = res->codes;
    a->row_loss = k->row_loss;
    /* While the GEMM runs on every core, the in-block loop gets the cores minus one. */
    a->threads = overlap ? k->ctx->threads - 1 : 0;

    for (int64_t i1 = 0, b = 0; i1 < C; i1 += B, b++) {
        const int64_t i2 = i1 + B < C ? i1 + B : C, i3 = i2 + B < C ? i2 + B : C;
        pthread_t tid;
        int started = 0;

        if (b == 0 || !overlap) {
            a->i1 = i1;
            a->i2 = i2;
            a->err = err[b & 1];
            block_job_main(&job);
            k->ctx->prof.block_s += job.seconds;
            GPTQ_TRY(job.rc);
        }
        if (k->cfg.rtn || i2 >= C)
            continue;
        if (!overlap) {
            GPTQ_TRY(timed_gemm(k, i1, i2, i2, C, err[b & 1]));
            continue;
        }
        GPTQ_TRY(timed_gemm(k, i1, i2, i2, i3, err[b & 1]));
        a->i1 = i2;
        a->i2 = i3;
        a->err = err[(b + 1) & 1];
        started = pthread_create(&tid, NULL, block_job_main, &job) == 0;
        {
            int rc = timed_gemm(k, i1, i2, i3, C, err[b & 1]);
            if (started)
                pthread_join(tid, NULL);
            else
                block_job_main(&job);
            k->ctx->prof.block_s += job.seconds;
            GPTQ_TRY(rc);
            GPTQ_TRY(job.rc);
        }
    }
    return GPTQ_OK;
}

/* Step 8: results in original column order. */
static int finish(work *k, gptq_result *res)
{
    const int64_t R = k->R, C = k->C, ng = k->ng;
    const int32_t gs = k->cfg.group_size;
    double loss = 0.0;

    if (gs == -1) {
        memcpy(k->scales, k->row_scale, (size_t)R * sizeof(float));
        memcpy(k->zeros, k->row_zero, (size_t)R * sizeof(float));
    }
    for (int64_t i = 0; i < ng * R; i++) {
        if (!isfinite(k->scales[i]) || k->scales[i] == 0.0f)
            return GPTQ_FAIL(k->ctx, GPTQ_ERR_NUMERIC,
                             "quantizer scale of group %lld, row %lld is %g: the weights are too "
                             "small (subnormal) or too large to quantize",
                             (long long)(i / R), (long long)(i % R), (double)k->scales[i]);
        res->scales[i] = k->scales[i];
        res->zeros[i] = (int32_t)k->zeros[i];
    }
    for (int64_t r = 0; r < R; r++)
        loss += k->row_loss[r];
    if (!gptq__all_finite(res->q, (size_t)R * (size_t)C))
        return GPTQ_FAIL(k->ctx, GPTQ_ERR_NUMERIC,
                         "quantized weights are not finite (overflow in the error propagation)");
    memcpy(res->perm, k->perm, (size_t)C * sizeof(int32_t));
    for (int64_t j = 0; j < C; j++)
        res->g_idx[j] = gs == -1 ? 0 : (int32_t)(j / gs);
    if (gs != -1 && k->cfg.desc_act && !k->cfg.static_groups)
        for (int64_t kk = 0; kk < C; kk++)
            res->g_idx[k->perm[kk]] = (int32_t)(kk / gs);
    res->loss = k->cfg.rtn ? 0.0 : loss;
    return GPTQ_OK;
}

static int check_args(gptq_ctx *ctx, const float *w, int64_t R, int64_t C,
                      const gptq_hessian *hessian, const gptq_config *cfg, gptq_result **out)
{
    size_t n;
    if (!ctx)
        return GPTQ_ERR_INVALID_ARGUMENT;
    if (!out)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_layer_quantize: out is NULL");
    *out = NULL;
    if (!w)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_layer_quantize: W is NULL");
    if (R < 1 || C < 1 || R > INT32_MAX || C > INT32_MAX)
        return GPTQ_FAIL(ctx, GPTQ_ERR_SHAPE,
                         "gptq_layer_quantize: W is %lld x %lld; both dimensions must be in "
                         "[1, 2^31-1]",
                         (long long)R, (long long)C);
    GPTQ_TRY(gptq_config_validate(ctx, cfg));
    if (!cfg->rtn) {
        if (!hessian)
            return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                             "gptq_layer_quantize: a Hessian is required unless rtn is set");
        if (gptq_hessian_in_features(hessian) != C)
            return GPTQ_FAIL(ctx, GPTQ_ERR_SHAPE,
                             "gptq_layer_quantize: W has %lld input features but the Hessian %lld",
                             (long long)C, (long long)gptq_hessian_in_features(hessian));
        if (gptq_hessian_nsamples(hessian) < 1)
            return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                             "gptq_layer_quantize: the Hessian has no samples yet");
    }
    if (gptq__mul_size(&n, R, C) != 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_SHAPE, "gptq_layer_quantize: W is too large");
    if (!gptq__all_finite(w, n))
        return GPTQ_FAIL(ctx, GPTQ_ERR_NUMERIC, "gptq_layer_quantize: W contains NaN or Inf");
    return GPTQ_OK;
}

int gptq_layer_quantize(gptq_ctx *ctx, const float *w, int64_t out_features, int64_t in_features,
                        const gptq_hessian *hessian, const gptq_config *cfg, gptq_result **out)
{
    gptq_config defaults;
    gptq_result *res = NULL;
    work k;
    int rc;

    if (!cfg) {
        gptq_config_init(&defaults);
        cfg = &defaults;
    }
    GPTQ_TRY(check_args(ctx, w, out_features, in_features, hessian, cfg, out));

    memset(&k, 0, sizeof k);
    k.ctx = ctx;
    k.be = ctx->backend;
    k.cfg = *cfg;
    k.R = out_features;
    k.C = in_features;
    k.ng = gptq_num_groups(in_features, cfg->group_size);
    k.maxq = (1 << cfg->bits) - 1;

    rc = alloc_work(&k);
    if (rc == GPTQ_OK)
        rc = gptq__result_new(ctx, &k.cfg, k.R, k.C, k.ng, &res);
    if (rc == GPTQ_OK) {
        res->dead_columns = prepare(&k, w, hessian);
        if (!k.cfg.rtn && k.cfg.desc_act)
            rc = apply_act_order(&k);
        if (rc == GPTQ_OK && !k.cfg.rtn)
            rc = factor(&k, res);
        if (rc == GPTQ_OK)
            rc = make_resident(&k);
        if (rc == GPTQ_OK)
            rc = run_blocks(&k, res);
        if (rc == GPTQ_OK)
            rc = finish(&k, res);
    }
    work_free(&k);
    if (rc != GPTQ_OK) {
        gptq_result_free(res);
        return rc;
    }
    *out = res;
    return GPTQ_OK;
}
