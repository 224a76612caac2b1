/*
 * The GPTQ pipeline's decoder layer on the backend's buffers (backend.h,
 * device_forward): the five stages of gptq__layer_stage (forward.c) with the hidden
 * states, the stage activations, the running layer's float weights and the four
 * Hessians in buf_alloc buffers. On a GPU the calibration activations then never leave
 * it: per layer the weights go up once (and each quantized Q once more) and each Hessian
 * comes down once, for the quantizer.
 *
 * Every operation goes to the backend's slot (gemm, syrk, rms_norm, silu_mul, add,
 * scale, add_bias, rope, attention), or to the model's host version when the slot is
 * NULL, which is right only for host buffers: the CPU's own table behind the flag
 * (tests/test_resident.c), where this path must quantize bit for bit like the host one.
 */
#include <string.h>

#include "backend.h"
#include "format/qlinear.h"
#include "model.h"

struct gptq__dev {
    gptq_ctx *ctx;
    const gptq__model_config *c;
    int64_t out[GPTQ_LIN_COUNT], in[GPTQ_LIN_COUNT];
    float *w[GPTQ_LIN_COUNT];     /* [out, in]: the running layer's float weights (Q once
                                   * quantized in the pipeline), allocated when first needed */
    float *b[GPTQ_LIN_COUNT];     /* [out] bias, allocated at the first layer that has one */
    int32_t has_bias[GPTQ_LIN_COUNT];
    const gptq_qlinear *ql[GPTQ_LIN_COUNT]; /* a packed linear's prepared handle, or NULL */
    float *head, *final_norm;     /* evaluation: lm_head (or the tied embedding), model.norm */
    float *logits;                /* evaluation: [head_chunk][vocab] */
    float *norm[2];               /* input_layernorm, post_attention_layernorm [hidden] */
    float *cs, *sn;               /* RoPE tables [max_seqlen][head_dim / 2] */
    float *act;                   /* stage activations [max_tokens][act_width] */
    float *xs;                    /* the Hessians' scaled rows */
    float *hess[GPTQ_CAP_COUNT];  /* [width][width] per capture point */
    int64_t count[GPTQ_CAP_COUNT];
    int64_t width[GPTQ_CAP_COUNT];
    int64_t max_tokens, max_seqlen, act_width;
};

static void *dev_alloc(gptq__dev *d, int64_t floats, const char *what)
{
    return gptq__buf_alloc(d->ctx, (size_t)floats * sizeof(float), what);
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

void gptq__dev_close(gptq__dev *d)
{
    gptq_ctx *ctx;
    if (!d)
        return;
    ctx = d->ctx;
    for (int j = 0; j < GPTQ_LIN_COUNT; j++) {
        ctx->backend->buf_free(ctx, d->w[j]);
        ctx->backend->buf_free(ctx, d->b[j]);
    }
    for (int i = 0; i < 2; i++)
        ctx->backend->buf_free(ctx, d->norm[i]);
    for (int i = 0; i < GPTQ_CAP_COUNT; i++)
        ctx->backend->buf_free(ctx, d->hess[i]);
    ctx->backend->buf_free(ctx, d->cs);
    ctx->backend->buf_free(ctx, d->sn);
    ctx->backend->buf_free(ctx, d->act);
    ctx->backend->buf_free(ctx, d->xs);
    ctx->backend->buf_free(ctx, d->head);
    ctx->backend->buf_free(ctx, d->final_norm);
    ctx->backend->buf_free(ctx, d->logits);
    gptq__free(d);
}

int gptq__dev_open(gptq_ctx *ctx, const gptq_model *m, int64_t max_tokens, int64_t max_seqlen,
                   int32_t hessians, gptq__dev **out)
{
    const gptq__model_config *c = &m->cfg;
    const int64_t hid = c->hidden, inter = c->inter, half = c->head_dim / 2;
    const int64_t qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    int64_t xs_floats = 0;
    float *tab = NULL;
    gptq__dev *d;
    int rc = GPTQ_OK;

    *out = NULL;
    d = gptq__calloc(ctx, sizeof *d, "device layer");
    if (!d)
        return GPTQ_ERR_OUT_OF_MEMORY;
    d->ctx = ctx;
    d->c = c;
    d->max_tokens = max_tokens;
    d->max_seqlen = max_seqlen;
    /* gptq__layer_stage's scratch: the normed states, then q, k, v or up. */
    d->act_width = hid + max64(qd + 2 * kvd, inter);
    for (int j = 0; j < GPTQ_LIN_COUNT; j++) {
        d->out[j] = m->layers[0].lin[j].out;
        d->in[j] = m->layers[0].lin[j].in;
    }
    d->width[GPTQ_CAP_ATTN_IN] = hid;
    d->width[GPTQ_CAP_O_IN] = qd;
    d->width[GPTQ_CAP_MLP_IN] = hid;
    d->width[GPTQ_CAP_DOWN_IN] = inter;
    for (int i = 0; hessians && rc == GPTQ_OK && i < GPTQ_CAP_COUNT; i++) {
        const int64_t w = d->width[i], chunk = gptq__hessian_chunk_rows(w);
        xs_floats = max64(xs_floats, (chunk < max_seqlen ? chunk : max_seqlen) * w);
        if (!(d->hess[i] = dev_alloc(d, w * w, "a Hessian")))
            rc = GPTQ_ERR_OUT_OF_MEMORY;
    }
    if (rc == GPTQ_OK && (!(d->norm[0] = dev_alloc(d, hid, "the norms")) ||
                          !(d->norm[1] = dev_alloc(d, hid, "the norms")) ||
                          !(d->cs = dev_alloc(d, max_seqlen * half, "the RoPE tables")) ||
                          !(d->sn = dev_alloc(d, max_seqlen * half, "the RoPE tables")) ||
                          !(d->act = dev_alloc(d, max_tokens * d->act_width, "activations")) ||
                          (hessians && !(d->xs = dev_alloc(d, xs_floats, "scaled calibration rows")))))
        rc = GPTQ_ERR_OUT_OF_MEMORY;
    if (rc == GPTQ_OK) {
        tab = gptq__alloc(ctx, sizeof(float) * (size_t)(2 * max_seqlen * half), "RoPE tables");
        rc = tab ? gptq__rope_tables(ctx, c, max_seqlen, 0, tab, tab + max_seqlen * half)
                 : GPTQ_ERR_OUT_OF_MEMORY;
    }
    if (rc == GPTQ_OK)
        rc = ctx->backend->upload(ctx, d->cs, tab, sizeof(float) * (size_t)(max_seqlen * half));
    if (rc == GPTQ_OK)
        rc = ctx->backend->upload(ctx, d->sn, tab + max_seqlen * half,
                                  sizeof(float) * (size_t)(max_seqlen * half));
    gptq__free(tab);
    if (rc != GPTQ_OK) {
        gptq__dev_close(d);
        return rc;
    }
    *out = d;
    return GPTQ_OK;
}

int gptq__dev_load_linear(gptq__dev *d, const gptq__layer *L, int32_t j)
{
    gptq_ctx *ctx = d->ctx;
    const gptq__linear *l = &L->lin[j];

    d->ql[j] = NULL;
    d->has_bias[j] = 0;
    if (l->out != d->out[j] || l->in != d->in[j])
        return GPTQ_FAIL(ctx, GPTQ_ERR_SHAPE, "%s is %lld x %lld, layer 0's is %lld x %lld",
                         gptq__lin_names[j], (long long)l->out, (long long)l->in,
                         (long long)d->out[j], (long long)d->in[j]);
    if (l->quantized) { /* its prepared handle, bias included, runs where it lives */
        if (!l->ql)
            return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                             "%s: a packed linear without a prepared handle", gptq__lin_names[j]);
        d->ql[j] = l->ql;
        return GPTQ_OK;
    }
    if (!l->w)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INTERNAL, "dev_load_linear: %s is not loaded",
                         gptq__lin_names[j]);
    if (!d->w[j] && !(d->w[j] = dev_alloc(d, l->out * l->in, gptq__lin_names[j])))
        return GPTQ_ERR_OUT_OF_MEMORY;
    GPTQ_TRY(ctx->backend->upload(ctx, d->w[j], l->w, sizeof(float) * (size_t)(l->out * l->in)));
    d->has_bias[j] = l->bias != NULL;
    if (!l->bias)
        return GPTQ_OK;
    if (!d->b[j] && !(d->b[j] = dev_alloc(d, l->out, "a bias")))
        return GPTQ_ERR_OUT_OF_MEMORY;
    return ctx->backend->upload(ctx, d->b[j], l->bias, sizeof(float) * (size_t)l->out);
}

int gptq__dev_load_layer(gptq__dev *d, const gptq__layer *L)
{
    const size_t nb = sizeof(float) * (size_t)d->c->hidden;
    for (int32_t j = 0; j < GPTQ_LIN_COUNT; j++)
        GPTQ_TRY(gptq__dev_load_linear(d, L, j));
    GPTQ_TRY(d->ctx->backend->upload(d->ctx, d->norm[0], L->input_norm, nb));
    return d->ctx->backend->upload(d->ctx, d->norm[1], L->post_norm, nb);
}

/* ---- the operations: the backend's slot, or the host version ------------------------ */

/* RMSNorm of n rows of the hidden size with weight w (a buffer). */
static int op_rms(gptq__dev *d, const float *x, const float *w, int64_t n, float *y)
{
    const gptq_backend *be = d->ctx->backend;
    const float eps = (float)d->c->rms_eps;
    if (be->rms_norm)
        return be->rms_norm(d->ctx, x, w, n, d->c->hidden, eps, y);
    gptq__rms_norm(d->ctx, x, w, n, d->c->hidden, eps, y);
    return GPTQ_OK;
}

static int op_add(gptq__dev *d, float *y, const float *x, int64_t n, int64_t width)
{
    if (d->ctx->backend->add)
        return d->ctx->backend->add(d->ctx, y, x, n * width);
    gptq__add_into(d->ctx, y, x, n, width);
    return GPTQ_OK;
}

static int op_silu(gptq__dev *d, float *g, const float *u, int64_t n, int64_t width)
{
    if (d->ctx->backend->silu_mul)
        return d->ctx->backend->silu_mul(d->ctx, g, u, n, width);
    gptq__silu_mul(d->ctx, g, u, n, width);
    return GPTQ_OK;
}

static int op_rope(gptq__dev *d, float *x, int64_t n, int64_t seqlen, int64_t heads)
{
    const gptq_backend *be = d->ctx->backend;
    if (be->rope)
        return be->rope(d->ctx, x, d->cs, d->sn, n, seqlen, heads, d->c->head_dim);
    gptq__rope_rows(d->ctx, x, d->cs, d->sn, n, seqlen, heads, d->c->head_dim);
    return GPTQ_OK;
}

static int op_attention(gptq__dev *d, const float *q, const float *k, const float *v,
                        int64_t nseq, int64_t seqlen, float *out)
{
    const gptq__model_config *c = d->c;
    if (d->ctx->backend->attention)
        return d->ctx->backend->attention(d->ctx, q, k, v, nseq, seqlen, c->n_heads,
                                          c->n_kv_heads, c->head_dim, out);
    return gptq__attention(d->ctx, c, q, k, v, nseq, seqlen, out);
}

/* y[n, out] = x[n, in] W^T + b, float32 whatever the context's math mode. */
static int op_linear(gptq__dev *d, int32_t j, const float *x, int64_t n, float *y)
{
    const gptq_backend *be = d->ctx->backend;
    const int64_t out = d->out[j];
    const gptq_qlinear *ql = d->ql[j];

    if (ql) /* a GPU handle on device buffers; a host one (the CPU's table) on host memory */
        return ql->dev ? gptq_qlinear_forward_device(d->ctx, ql, x, GPTQ_QLINEAR_DTYPE_F32, n, y,
                                                     GPTQ_QLINEAR_DTYPE_F32)
                       : gptq_qlinear_forward(d->ctx, ql, x, n, y);
    GPTQ_TRY(gptq__gemm_fp32(d->ctx, x, n, d->in[j], d->w[j], out, y));
    if (!d->has_bias[j])
        return GPTQ_OK;
    if (be->add_bias)
        return be->add_bias(d->ctx, y, d->b[j], n, out);
    gptq__add_bias(y, d->b[j], n, out);
    return GPTQ_OK;
}

/* ---- the stages ------------------------------------------------------------------ */

int gptq__dev_stage(gptq__dev *d, int32_t stage, float *h, float *stash, int64_t nseq,
                    int64_t seqlen, gptq__capture_fn capture, void *user)
{
    const gptq__model_config *c = d->c;
    const int64_t n = nseq * seqlen, hid = c->hidden, inter = c->inter;
    const int64_t qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    float *xn = d->act, *extra = d->act + n * hid;
    int32_t point = -1;
    float *cap = xn;
    int64_t width = hid;
    int rc;

    if (stage < 0 || stage > 4 || !h || !stash || nseq < 1 || seqlen < 1 || n > d->max_tokens ||
        seqlen > d->max_seqlen)
        return GPTQ_FAIL(d->ctx, GPTQ_ERR_INTERNAL,
                         "dev_stage: bad arguments (stage %d, %lld x %lld tokens)", (int)stage,
                         (long long)nseq, (long long)seqlen);
    switch (stage) {
    case 0: /* -> the input of q, k, v */
        GPTQ_TRY(op_rms(d, h, d->norm[0], n, xn));
        point = GPTQ_CAP_ATTN_IN;
        break;
    case 1: { /* -> the attention output, kept in stash [n, qd] */
        float *q = extra, *k = q + n * qd, *v = k + n * kvd;
        GPTQ_TRY(op_rms(d, h, d->norm[0], n, xn));
        GPTQ_TRY(op_linear(d, GPTQ_LIN_Q, xn, n, q));
        GPTQ_TRY(op_linear(d, GPTQ_LIN_K, xn, n, k));
        GPTQ_TRY(op_linear(d, GPTQ_LIN_V, xn, n, v));
        GPTQ_TRY(op_rope(d, q, n, seqlen, c->n_heads));
        GPTQ_TRY(op_rope(d, k, n, seqlen, c->n_kv_heads));
        GPTQ_TRY(op_attention(d, q, k, v, nseq, seqlen, stash));
        point = GPTQ_CAP_O_IN;
        cap = stash;
        width = qd;
        break;
    }
    case 2: /* residual += o(attention); -> the input of gate, up */
        GPTQ_TRY(op_linear(d, GPTQ_LIN_O, stash, n, xn));
        GPTQ_TRY(op_add(d, h, xn, n, hid));
        GPTQ_TRY(op_rms(d, h, d->norm[1], n, xn));
        point = GPTQ_CAP_MLP_IN;
        break;
    case 3: /* -> silu(gate) * up, kept in stash [n, inter] */
        GPTQ_TRY(op_rms(d, h, d->norm[1], n, xn));
        GPTQ_TRY(op_linear(d, GPTQ_LIN_GATE, xn, n, stash));
        GPTQ_TRY(op_linear(d, GPTQ_LIN_UP, xn, n, extra));
        GPTQ_TRY(op_silu(d, stash, extra, n, inter));
        point = GPTQ_CAP_DOWN_IN;
        cap = stash;
        width = inter;
        break;
    default: /* residual += down(stash): the layer's output */
        GPTQ_TRY(op_linear(d, GPTQ_LIN_DOWN, stash, n, xn));
        return op_add(d, h, xn, n, hid);
    }
    rc = capture ? capture(user, point, cap, nseq, seqlen, width) : GPTQ_OK;
    return rc > 0 ? GPTQ_ERR_INTERNAL : rc;
}

/* ---- the Hessians ---------------------------------------------------------------- */

void gptq__dev_hessians_reset(gptq__dev *d)
{
    memset(d->count, 0, sizeof d->count);
}

int gptq__dev_hessian_add(gptq__dev *d, int32_t point, const float *x, int64_t nseq,
                          int64_t seqlen)
{
    const int64_t w = d->width[point];
    /* Every sequence is one sample (one add_batch call), as the host pipeline adds them. */
    for (int64_t s = 0; s < nseq; s++)
        GPTQ_TRY(gptq__hessian_accumulate(d->ctx, w, d->hess[point], &d->count[point],
                                          x + s * seqlen * w, 1, seqlen, d->xs, 0));
    return GPTQ_OK;
}

int gptq__dev_hessian_take(gptq__dev *d, int32_t point, gptq_hessian **out)
{
    int rc;
    *out = NULL;
    if (d->count[point] < 1)
        return GPTQ_FAIL(d->ctx, GPTQ_ERR_INTERNAL, "dev_hessian_take: no samples at point %d",
                         (int)point);
    GPTQ_TRY(gptq_hessian_create(d->ctx, d->width[point], out));
    rc = gptq__hessian_fill(d->ctx, *out, d->hess[point], d->count[point]);
    if (rc != GPTQ_OK) {
        gptq_hessian_free(*out);
        *out = NULL;
    }
    return rc;
}

/* ---- evaluation's head ------------------------------------------------------------ */

int gptq__dev_head_nll(gptq__dev *d, gptq_model *m, float *h, const int32_t *ids, int64_t len,
                       double *nll_sum, int64_t *count)
{
    gptq_ctx *ctx = d->ctx;
    const gptq_backend *be = ctx->backend;
    const int64_t vocab = m->cfg.vocab, hid = m->cfg.hidden;
    const int64_t chunk = gptq__head_chunk_rows(vocab) < len ? gptq__head_chunk_rows(vocab) : len;
    float *logits;
    double *scratch;
    int rc = GPTQ_OK;

    if (!d->head) { /* the final norm and the output projection, once per evaluation */
        GPTQ_TRY(gptq__head_load(ctx, m));
        if (!(d->head = dev_alloc(d, vocab * hid, "the output projection")) ||
            !(d->final_norm = dev_alloc(d, hid, "the final norm")) ||
            !(d->logits = dev_alloc(d, (int64_t)gptq__head_chunk_rows(vocab) * vocab, "logits")))
            return GPTQ_ERR_OUT_OF_MEMORY;
        GPTQ_TRY(be->upload(ctx, d->head, gptq__head_weights(m),
                            sizeof(float) * (size_t)(vocab * hid)));
        GPTQ_TRY(be->upload(ctx, d->final_norm, m->norm, sizeof(float) * (size_t)hid));
    }
    /* The host's logits chunk is the context's head scratch, as gptq__head_nll's: kept
     * across the windows of an evaluation. */
    logits = gptq__scratch(ctx, GPTQ_SCRATCH_HEAD, sizeof(float) * (size_t)(chunk * vocab),
                           "logits");
    scratch = logits ? gptq__alloc(ctx, sizeof(double) * (size_t)chunk, "row losses") : NULL;
    if (!scratch)
        return GPTQ_ERR_OUT_OF_MEMORY;
    /* LlamaModel.forward ends with self.norm; the logits come to the host per chunk for
     * the log-softmax (gptq__head_nll's arithmetic). */
    rc = op_rms(d, h, d->final_norm, len, h);
    for (int64_t r0 = 0; r0 < len && rc == GPTQ_OK; r0 += chunk) {
        const int64_t nr = len - r0 < chunk ? len - r0 : chunk;
        rc = gptq__gemm_fp32(ctx, h + r0 * hid, nr, hid, d->head, vocab, d->logits);
        if (rc == GPTQ_OK)
            rc = be->download(ctx, logits, d->logits, sizeof(float) * (size_t)(nr * vocab));
        if (rc == GPTQ_OK)
            gptq__nll_sum(ctx, logits, ids, r0, nr, len, vocab, scratch, nll_sum);
    }
    if (rc == GPTQ_OK)
        *count += len - 1;
    gptq__free(scratch);
    return rc;
}
