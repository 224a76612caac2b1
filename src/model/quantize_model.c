/*
 * gptq_model_quantize: sequential GPTQ over a whole model, as the references'
 * llama_sequential (IST-DASLab llama.py; AutoGPTQ BaseGPTQForCausalLM.quantize) does
 * (FORMATS.md section 5):
 *
 *   inputs of layer 0 = embeddings of the calibration samples
 *   for each decoder layer:
 *     for each true-sequential subset [q,k,v] -> [o] -> [gate,up] -> [down]:
 *       run the layer on every sample (earlier subsets already quantized) up to the
 *       subset's input, accumulating one Hessian for it (one add_batch per sample:
 *       q/k/v share one, gate/up share one)
 *       quantize each linear of the subset; later passes use its dequantized weights
 *     run the whole quantized layer: its outputs are the next layer's inputs
 *
 * The references re-run the layer from its input for every subset. Here the layer runs
 * in stages (gptq__layer_stage) that keep the activation the next stage needs, so each
 * part of the layer is computed once, with the same values; when that activation does
 * not fit STASH_BYTES, the layer is re-run per subset as the references do.
 *
 * The running layer uses the float32 Q of its quantized linears (the references use
 * the layer's weight, Q cast to the model dtype: float32 here). Once a layer is done its
 * linears keep only the packed tensors, which evaluation and saving read. On any
 * failure or cancellation every layer is put back to its float weights (which are
 * re-read from the memory-mapped files), so the model is left unquantized.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"

/* One calibration sample: `len` token ids (a window of the calibration text or one of
 * its sequences). Samples of equal length are run together. */
typedef struct sample {
    const int32_t *ids;
    int64_t len;
} sample;

typedef struct pipeline {
    gptq_ctx *ctx;
    gptq_model *m;
    const gptq_quantize_options *o;
    sample *samples;
    int64_t nsamples;
    float *inps;          /* [sum of lengths, hidden]: inputs of the current layer */
    float *work;          /* scratch of the same size as the largest batch */
    float *stash;         /* [sum of lengths, stash_width]: attention output, later
                           * silu(gate) * up, between the stages of a layer (NULL: the
                           * layer is re-run for each subset instead; on the device
                           * without true-sequential: [max_batch_tokens, stash_width]) */
    int64_t stash_width;
    int64_t max_batch_tokens;
    gptq_hessian *hs[GPTQ_CAP_COUNT]; /* the Hessian each capture point feeds, or NULL */
    int32_t step, num_steps;
    int32_t odd_shapes;   /* quantize_odd_shapes as read from the caller's struct */
    double t_start;
    /* On a backend with device_forward (the GPU): inps, work and stash are buf_alloc
     * buffers, the layer runs through `dev` and the Hessians accumulate there while
     * cap_on[point] is set; NULL: host memory and gptq__layer_forward / _stage. */
    gptq__dev *dev;
    int32_t cap_on[GPTQ_CAP_COUNT];
} pipeline;

/* The options' size before quantize_odd_shapes was appended. */
#define QOPTS_FIRST_SIZE \
    (offsetof(gptq_quantize_options, progress_user) + sizeof(void *))

/* Whether linear l is quantized: its shape must fit the packing every loader reads
 * (AutoGPTQ drops the tail of a dimension that is not a multiple of 32 and GPTQModel
 * refuses it, FORMATS.md section 3.2) unless the caller asked for padded packing. */
static int to_quantize(const pipeline *p, const gptq__linear *l)
{
    return p->odd_shapes || (l->out % 32 == 0 && l->in % 32 == 0);
}

/* Bound on the hidden states of one forward batch; the forward pass's own scratch
 * (attention scores, MLP activations) scales with it. */
#define BATCH_BYTES ((size_t)64 << 20)
/* Bound on the stage activations kept across a layer's passes (see run_stage). */
#define STASH_BYTES ((double)((size_t)4 << 30))

static int build_samples(pipeline *p, const gptq_tokens *calib)
{
    const gptq_quantize_options *o = p->o;
    const int64_t nseq = gptq_tokens_count(calib);
    const int64_t vocab = p->m->cfg.vocab;

    if (nseq == 1) {
        int64_t n;
        const int32_t *ids = gptq_tokens_sequence(calib, 0, &n);
        gptq__pyrandom r;
        if (n < o->seqlen + 2)
            return GPTQ_FAIL(p->ctx, GPTQ_ERR_INVALID_ARGUMENT,
                             "calibration data has %lld tokens; windows of %lld need at least %lld",
                             (long long)n, (long long)o->seqlen, (long long)(o->seqlen + 2));
        p->nsamples = o->nsamples;
        p->samples = gptq__alloc(p->ctx, sizeof(sample) * (size_t)p->nsamples, "samples");
        if (!p->samples)
            return GPTQ_ERR_OUT_OF_MEMORY;
        /* random.seed(seed); i = random.randint(0, N - seqlen - 1) per window. */
        gptq__pyrandom_seed(&r, o->seed);
        for (int64_t s = 0; s < p->nsamples; s++) {
            int64_t i = gptq__pyrandom_randint(&r, 0, n - o->seqlen - 1);
            p->samples[s].ids = ids + i;
            p->samples[s].len = o->seqlen;
        }
    } else {
        p->nsamples = nseq < o->nsamples ? nseq : o->nsamples;
        p->samples = gptq__alloc(p->ctx, sizeof(sample) * (size_t)p->nsamples, "samples");
        if (!p->samples)
            return GPTQ_ERR_OUT_OF_MEMORY;
        for (int64_t s = 0; s < p->nsamples; s++) {
            int64_t n;
            p->samples[s].ids = gptq_tokens_sequence(calib, s, &n);
            p->samples[s].len = n < o->seqlen ? n : o->seqlen;
        }
    }
    for (int64_t s = 0; s < p->nsamples; s++) {
        if (p->samples[s].len < 1)
            return GPTQ_FAIL(p->ctx, GPTQ_ERR_INVALID_ARGUMENT, "calibration sequence %lld is empty",
                             (long long)s);
        for (int64_t t = 0; t < p->samples[s].len; t++)
            if (p->samples[s].ids[t] < 0 || p->samples[s].ids[t] >= vocab)
                return GPTQ_FAIL(p->ctx, GPTQ_ERR_INVALID_ARGUMENT,
                                 "calibration sample %lld: token id %d at position %lld is outside "
                                 "the vocabulary of %lld",
                                 (long long)s, (int)p->samples[s].ids[t], (long long)t,
                                 (long long)vocab);
    }
    return GPTQ_OK;
}

/* Consecutive samples of equal length run as one batch, within max_batch_tokens. */
static int64_t batch_end(const pipeline *p, int64_t s0)
{
    int64_t s1 = s0 + 1, tokens = p->samples[s0].len;
    while (s1 < p->nsamples && p->samples[s1].len == p->samples[s0].len &&
           tokens + p->samples[s1].len <= p->max_batch_tokens) {
        tokens += p->samples[s1].len;
        s1++;
    }
    return s1;
}

/* Subsets of the true-sequential order and the capture point each one reads. */
static const struct {
    int32_t point;
    int32_t lins[3];
    int32_t count;
} subsets[4] = {
    {GPTQ_CAP_ATTN_IN, {GPTQ_LIN_Q, GPTQ_LIN_K, GPTQ_LIN_V}, 3},
    {GPTQ_CAP_O_IN, {GPTQ_LIN_O, 0, 0}, 1},
    {GPTQ_CAP_MLP_IN, {GPTQ_LIN_GATE, GPTQ_LIN_UP, 0}, 2},
    {GPTQ_CAP_DOWN_IN, {GPTQ_LIN_DOWN, 0, 0}, 1},
};

/* Capture callback: every sequence of the batch is one add_batch call. */
static int on_capture(void *user, int32_t point, const float *x, int64_t nseq, int64_t seqlen,
                      int64_t width)
{
    pipeline *p = user;
    if (point < 0 || point >= GPTQ_CAP_COUNT)
        return GPTQ_OK;
    if (p->dev)
        return p->cap_on[point] ? gptq__dev_hessian_add(p->dev, point, x, nseq, seqlen) : GPTQ_OK;
    if (!p->hs[point])
        return GPTQ_OK;
    for (int64_t s = 0; s < nseq; s++)
        GPTQ_TRY(gptq_hessian_add(p->ctx, p->hs[point], x + s * seqlen * width, 1, seqlen));
    return GPTQ_OK;
}

/* Run the current layer over all samples. capture = 1: on a copy of the inputs, up to
 * `point` (GPTQ_CAP_COUNT: the whole layer), feeding the Hessians in p->hs. capture = 0:
 * the whole layer, its outputs written over the inputs. */
static int run_layer(pipeline *p, const gptq__layer *L, int capture, int32_t point)
{
    const int64_t hidden = p->m->cfg.hidden;
    int64_t off = 0;
    for (int64_t s0 = 0; s0 < p->nsamples;) {
        const int64_t s1 = batch_end(p, s0), len = p->samples[s0].len, n = s1 - s0;
        float *h = p->inps + off * hidden;
        if (capture) {
            memcpy(p->work, h, sizeof(float) * (size_t)(n * len * hidden));
            h = p->work;
        }
        GPTQ_TRY(gptq__layer_forward(p->ctx, p->m, L, h, n, len, capture ? on_capture : NULL, p,
                                     capture ? point : GPTQ_CAP_COUNT));
        off += n * len;
        s0 = s1;
    }
    return GPTQ_OK;
}

/* One stage of the current layer over all samples (true-sequential with a stash, and
 * every pass on the device). */
static int run_stage(pipeline *p, const gptq__layer *L, int32_t stage)
{
    const int64_t hidden = p->m->cfg.hidden;
    int64_t off = 0;
    for (int64_t s0 = 0; s0 < p->nsamples;) {
        const int64_t s1 = batch_end(p, s0), len = p->samples[s0].len, n = s1 - s0;
        float *h = p->inps + off * hidden, *stash = p->stash + off * p->stash_width;
        GPTQ_TRY(p->dev ? gptq__dev_stage(p->dev, stage, h, stash, n, len, on_capture, p)
                        : gptq__layer_stage(p->ctx, p->m, L, stage, h, stash, n, len, on_capture,
                                            p));
        off += n * len;
        s0 = s1;
    }
    return GPTQ_OK;
}

/* On the device without true-sequential, batch by batch: stages first..last of one
 * batch, then of the next, so that the stash holds one batch. copy: on a copy of the
 * batch's inputs (the capture pass: stages 0..3 with every capture point feeding its
 * Hessian, as gptq__layer_forward's captures on the host), else in place (the quantized
 * layer's outputs: stages 1..4). */
static int dev_batch_major(pipeline *p, int32_t first, int32_t last, int copy)
{
    const int64_t hidden = p->m->cfg.hidden;
    int64_t off = 0;
    int rc = GPTQ_OK;

    for (int64_t s0 = 0; s0 < p->nsamples && rc == GPTQ_OK;) {
        const int64_t s1 = batch_end(p, s0), len = p->samples[s0].len, n = s1 - s0;
        float *h = p->inps + off * hidden;
        if (copy) {
            rc = p->ctx->backend->upload(p->ctx, p->work, h,
                                         sizeof(float) * (size_t)(n * len * hidden));
            h = p->work;
        }
        for (int32_t stage = first; stage <= last && rc == GPTQ_OK; stage++)
            rc = gptq__dev_stage(p->dev, stage, h, p->stash, n, len, on_capture, p);
        off += n * len;
        s0 = s1;
    }
    return rc;
}

static int report(pipeline *p, int64_t layer, const char *module, const gptq_result *r,
                  double seconds)
{
    gptq_progress pr;
    if (!p->o->progress)
        return GPTQ_OK;
    memset(&pr, 0, sizeof pr);
    pr.struct_size = (uint32_t)sizeof pr;
    pr.layer = (int32_t)layer;
    pr.num_layers = (int32_t)p->m->cfg.n_layers;
    pr.module = module;
    pr.step = p->step;
    pr.num_steps = p->num_steps;
    pr.loss = r ? gptq_result_loss(r) : 0.0;
    pr.damp_percent = r ? gptq_result_damp_percent(r) : 0.0;
    pr.seconds = seconds;
    pr.elapsed = gptq__now() - p->t_start;
    if (p->o->progress(p->o->progress_user, &pr) != 0)
        return GPTQ_FAIL(p->ctx, GPTQ_ERR_CANCELLED, "quantization cancelled by the progress "
                                                     "callback at layer %lld %s",
                         (long long)layer, module);
    return GPTQ_OK;
}

/* Quantize linear j of layer L with Hessian h: packed tensors into `packed` (owned);
 * L->lin[j].w becomes the float32 Q for the rest of this layer's passes. */
static int quantize_linear(pipeline *p, int64_t layer, gptq__layer *L, int j,
                           const gptq_hessian *h, gptq_packed *packed)
{
    gptq__linear *l = &L->lin[j];
    gptq_result *r = NULL;
    int64_t qw[2], qz[2];
    char name[96];
    double t0 = gptq__now();
    int rc;

    snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)layer, gptq__lin_names[j]);
    rc = gptq_layer_quantize(p->ctx, l->w, l->out, l->in, h, &p->o->config, &r);
    if (rc != GPTQ_OK) {
        /* Keep the library's message, name the module in front of it. */
        char msg[GPTQ_ERRMSG_SIZE];
        snprintf(msg, sizeof msg, "%s", gptq_ctx_last_error(p->ctx));
        return GPTQ_FAIL(p->ctx, rc, "%s: %s", name, msg);
    }
    memset(packed, 0, sizeof *packed);
    packed->bits = p->o->config.bits;
    packed->format = GPTQ_FORMAT_V2;
    packed->out_features = l->out;
    packed->in_features = l->in;
    packed->ngroups = gptq_result_ngroups(r);
    rc = gptq_packed_shape(packed->bits, l->out, l->in, packed->ngroups, qw, qz);
    if (rc == GPTQ_OK) {
        packed->qweight = gptq__alloc(p->ctx, sizeof(int32_t) * (size_t)(qw[0] * qw[1]), "qweight");
        packed->qzeros = gptq__alloc(p->ctx, sizeof(int32_t) * (size_t)(qz[0] * qz[1]), "qzeros");
        packed->scales = gptq__alloc(p->ctx, sizeof(uint16_t) * (size_t)(packed->ngroups * l->out),
                                     "scales");
        packed->g_idx = gptq__alloc(p->ctx, sizeof(int32_t) * (size_t)l->in, "g_idx");
        rc = packed->qweight && packed->qzeros && packed->scales && packed->g_idx
                 ? gptq_pack_result(p->ctx, r, GPTQ_PACK_CLEAN, packed)
                 : GPTQ_ERR_OUT_OF_MEMORY;
    }
    if (rc == GPTQ_OK)
        memcpy(l->w, gptq_result_q(r), sizeof(float) * (size_t)(l->out * l->in));
    p->step++;
    if (rc == GPTQ_OK)
        rc = report(p, layer, gptq__lin_names[j], r, gptq__now() - t0);
    gptq_result_free(r);
    return rc;
}

static void free_packed(gptq_packed *pk)
{
    gptq__free(pk->qweight);
    gptq__free(pk->qzeros);
    gptq__free(pk->scales);
    gptq__free(pk->g_idx);
    memset(pk, 0, sizeof *pk);
}

static int64_t point_width(const gptq_model *m, int32_t point)
{
    if (point == GPTQ_CAP_DOWN_IN)
        return m->cfg.inter;
    if (point == GPTQ_CAP_O_IN)
        return m->cfg.n_heads * m->cfg.head_dim;
    return m->cfg.hidden;
}

/* quantize_layer on the host: the Hessians, the layer's passes and its activations in
 * host memory. */
static int host_quantize_layer(pipeline *p, int64_t i, gptq__layer *L, gptq_packed *packed)
{
    const int ts = p->o->true_sequential;
    int rc = GPTQ_OK;

    /* Without true-sequential, all four Hessians come from one pass with the original
     * weights; with it, one pass per subset, each seeing the subsets before it
     * quantized. */
    for (int s = 0; rc == GPTQ_OK && s < 4; s++)
        rc = gptq_hessian_create(p->ctx, point_width(p->m, subsets[s].point), &p->hs[s]);
    if (rc == GPTQ_OK && !ts)
        rc = run_layer(p, L, 1, GPTQ_CAP_COUNT);
    for (int s = 0; rc == GPTQ_OK && s < 4; s++) {
        if (ts && p->stash) {
            rc = run_stage(p, L, s); /* stage s ends at subset s's input */
        } else if (ts) {
            gptq_hessian *keep = p->hs[s];
            gptq_hessian *saved[GPTQ_CAP_COUNT];
            memcpy(saved, p->hs, sizeof saved);
            memset(p->hs, 0, sizeof p->hs);
            p->hs[subsets[s].point] = keep;
            rc = run_layer(p, L, 1, subsets[s].point);
            memcpy(p->hs, saved, sizeof saved);
        }
        for (int c = 0; rc == GPTQ_OK && c < subsets[s].count; c++) {
            const int j = subsets[s].lins[c];
            if (to_quantize(p, &L->lin[j]))
                rc = quantize_linear(p, i, L, j, p->hs[s], &packed[j]);
        }
    }
    for (int s = 0; s < 4; s++) {
        gptq_hessian_free(p->hs[s]);
        p->hs[s] = NULL;
    }
    if (rc == GPTQ_OK)
        rc = ts && p->stash ? run_stage(p, L, 4)                /* the next layer's inputs */
                            : run_layer(p, L, 0, GPTQ_CAP_COUNT);
    return rc;
}

/* quantize_layer on the device: Hessians accumulate there and come to the host once,
 * for the quantizer; each quantized Q goes back up for the passes after it. */
static int dev_quantize_layer(pipeline *p, int64_t i, gptq__layer *L, gptq_packed *packed)
{
    const int ts = p->o->true_sequential;
    int rc = gptq__dev_load_layer(p->dev, L);
    int any[4] = {0}; /* a subset whose linears all stay float needs no Hessian */

    for (int s = 0; s < 4; s++)
        for (int c = 0; c < subsets[s].count; c++)
            any[s] |= to_quantize(p, &L->lin[subsets[s].lins[c]]);
    gptq__dev_hessians_reset(p->dev);
    if (rc == GPTQ_OK && !ts) {
        for (int s = 0; s < 4; s++)
            p->cap_on[subsets[s].point] = any[s];
        rc = dev_batch_major(p, 0, 3, 1);
        memset(p->cap_on, 0, sizeof p->cap_on);
    }
    for (int s = 0; rc == GPTQ_OK && s < 4; s++) {
        const int32_t point = subsets[s].point;
        if (ts) { /* stage s ends at subset s's input */
            p->cap_on[point] = any[s];
            rc = run_stage(p, L, s);
            p->cap_on[point] = 0;
        }
        if (rc == GPTQ_OK && any[s])
            rc = gptq__dev_hessian_take(p->dev, point, &p->hs[s]);
        for (int c = 0; rc == GPTQ_OK && c < subsets[s].count; c++) {
            const int j = subsets[s].lins[c];
            if (!to_quantize(p, &L->lin[j]))
                continue;
            rc = quantize_linear(p, i, L, j, p->hs[s], &packed[j]);
            if (rc == GPTQ_OK)
                rc = gptq__dev_load_linear(p->dev, L, j);
        }
        gptq_hessian_free(p->hs[s]);
        p->hs[s] = NULL;
    }
    /* The next layer's inputs: with true-sequential the stash already holds silu(gate) *
     * up of the quantized gate and up; without, the quantized layer runs whole. */
    if (rc == GPTQ_OK)
        rc = ts ? run_stage(p, L, 4) : dev_batch_major(p, 1, 4, 0);
    return rc;
}

static int quantize_layer(pipeline *p, int64_t i)
{
    gptq_model *m = p->m;
    gptq__layer *L = &m->layers[i];
    gptq_packed packed[GPTQ_LIN_COUNT];
    int rc;

    memset(packed, 0, sizeof packed);
    memset(p->hs, 0, sizeof p->hs);
    rc = gptq__layer_load(p->ctx, m, i);
    if (rc == GPTQ_OK)
        rc = p->dev ? dev_quantize_layer(p, i, L, packed) : host_quantize_layer(p, i, L, packed);
    if (rc == GPTQ_OK)
        rc = report(p, i, "", NULL, 0.0);
    if (rc != GPTQ_OK) {
        for (int j = 0; j < GPTQ_LIN_COUNT; j++)
            free_packed(&packed[j]);
        return rc;
    }
    /* The layer is done: its quantized linears keep only their packed tensors; the
     * others are read again from the model's files when needed. */
    for (int j = 0; j < GPTQ_LIN_COUNT; j++) {
        gptq__linear *l = &L->lin[j];
        if (!packed[j].qweight)
            continue;
        gptq__free(l->w);
        l->w = NULL;
        l->packed = packed[j];
        l->quantized = 1;
        l->group_size = p->o->config.group_size;
    }
    gptq__layer_unload(m, i);
    return GPTQ_OK;
}

/* Back to the float checkpoint: drop every packed tensor made so far. */
static void restore_float(gptq_model *m)
{
    for (int64_t i = 0; i < m->cfg.n_layers; i++) {
        for (int j = 0; j < GPTQ_LIN_COUNT; j++) {
            gptq__linear *l = &m->layers[i].lin[j];
            if (l->quantized) {
                free_packed(&l->packed);
                gptq_qlinear_free(l->ql);
                l->ql = NULL;
                l->quantized = 0;
            }
        }
        gptq__layer_unload(m, i);
    }
}

/* The activations in host memory: inps, work, and the stash when true-sequential
 * and it fits STASH_BYTES (else each subset re-runs the layer). */
static int open_host(pipeline *p, int64_t total)
{
    gptq_ctx *ctx = p->ctx;
    const int64_t hidden = p->m->cfg.hidden;
    gptq__err_state before;

    p->inps = gptq__alloc(ctx, sizeof(float) * (size_t)(total * hidden), "calibration activations");
    p->work = p->inps ? gptq__alloc(ctx, sizeof(float) * (size_t)(p->max_batch_tokens * hidden),
                                    "activation scratch")
                      : NULL;
    if (!p->work)
        return GPTQ_ERR_OUT_OF_MEMORY;
    gptq__err_save(ctx, &before);
    if (p->o->true_sequential &&
        (double)total * (double)p->stash_width * sizeof(float) <= (double)STASH_BYTES)
        p->stash = gptq__alloc(ctx, sizeof(float) * (size_t)(total * p->stash_width),
                               "stage activations");
    if (!p->stash) /* optional: fall back quietly */
        gptq__err_restore(ctx, &before);
    return GPTQ_OK;
}

static void close_activations(pipeline *p)
{
    if (p->dev) {
        const gptq_backend *be = p->ctx->backend;
        be->buf_free(p->ctx, p->inps);
        be->buf_free(p->ctx, p->work);
        be->buf_free(p->ctx, p->stash);
        gptq__dev_close(p->dev);
    } else {
        gptq__free(p->inps);
        gptq__free(p->work);
        gptq__free(p->stash);
    }
    p->inps = p->work = p->stash = NULL;
    p->dev = NULL;
}

/* The activations in the backend's memory (device_forward): inps, stash and work
 * (for the capture pass without true-sequential) as buffers, and the layer's device
 * state. When they do not fit, the host pipeline runs instead (its GEMMs and
 * quantization still on the backend), with a note in the log. */
static int open_device(pipeline *p, int64_t total, int64_t max_len)
{
    gptq_ctx *ctx = p->ctx;
    const gptq_backend *be = ctx->backend;
    const int64_t hidden = p->m->cfg.hidden;
    const int64_t stashed = p->o->true_sequential ? total : p->max_batch_tokens;
    const double gib =
        ((double)total * hidden + (double)stashed * p->stash_width) * sizeof(float) / 1073741824.0;
    gptq__err_state before;
    int rc = GPTQ_ERR_OUT_OF_MEMORY;

    gptq__err_save(ctx, &before);
    p->inps = gptq__buf_alloc(ctx, sizeof(float) * (size_t)(total * hidden),
                              "the calibration activations");
    /* The stage activations: of every token with true-sequential (each stage runs over
     * all batches before the next), else of one batch (dev_batch_major). */
    p->stash = p->inps ? gptq__buf_alloc(ctx,
                                         sizeof(float) * (size_t)((p->o->true_sequential
                                                                       ? total
                                                                       : p->max_batch_tokens) *
                                                                  p->stash_width),
                                         "the stage activations")
                       : NULL;
    p->work = p->stash ? gptq__buf_alloc(ctx,
                                         sizeof(float) * (size_t)(p->max_batch_tokens * hidden),
                                         "an activation copy")
                       : NULL;
    if (p->work)
        rc = gptq__dev_open(ctx, p->m, p->max_batch_tokens, max_len, 1, &p->dev);
    if (rc == GPTQ_OK) {
        gptq__log(ctx, GPTQ_LOG_INFO,
                  "calibration activations on the %s backend (%.2f GiB), layers run there",
                  be->name, gib);
        return GPTQ_OK;
    }
    gptq__log(ctx, GPTQ_LOG_WARN,
              "the calibration activations (%.2f GiB) do not fit the %s backend's memory (%s); "
              "they stay in host memory",
              gib, be->name, ctx->last_error);
    be->buf_free(ctx, p->inps);
    be->buf_free(ctx, p->stash);
    be->buf_free(ctx, p->work);
    p->inps = p->stash = p->work = NULL;
    gptq__err_restore(ctx, &before);
    return rc;
}

/* Sample s's embeddings into inps at token offset off (through a host copy when inps is
 * a device buffer). */
static int embed_sample(pipeline *p, int64_t s, int64_t off)
{
    const int64_t hidden = p->m->cfg.hidden, len = p->samples[s].len;
    float *tmp;
    int rc;

    if (!p->dev)
        return gptq__embed(p->ctx, p->m, p->samples[s].ids, len, p->inps + off * hidden);
    tmp = gptq__alloc(p->ctx, sizeof(float) * (size_t)(len * hidden), "embeddings");
    if (!tmp)
        return GPTQ_ERR_OUT_OF_MEMORY;
    rc = gptq__embed(p->ctx, p->m, p->samples[s].ids, len, tmp);
    if (rc == GPTQ_OK)
        rc = p->ctx->backend->upload(p->ctx, p->inps + off * hidden, tmp,
                                     sizeof(float) * (size_t)(len * hidden));
    gptq__free(tmp);
    return rc;
}

void gptq_quantize_options_init(gptq_quantize_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->struct_size = (uint32_t)sizeof *o;
    gptq_config_init(&o->config);
    o->nsamples = 128;
    o->seqlen = 2048;
    o->seed = 0;
    o->true_sequential = 1;
}

int gptq_model_quantize(gptq_ctx *ctx, gptq_model *m, const gptq_tokens *calib,
                        const gptq_quantize_options *opts)
{
    gptq_quantize_options defaults;
    pipeline p;
    int64_t total = 0, max_len = 0;
    int rc;

    if (!ctx)
        return GPTQ_ERR_INVALID_ARGUMENT;
    if (!m || !calib)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_model_quantize: NULL argument");
    if (!opts) {
        gptq_quantize_options_init(&defaults);
        opts = &defaults;
    }
    if (opts->struct_size < QOPTS_FIRST_SIZE)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_quantize_options.struct_size is too small; call "
                         "gptq_quantize_options_init()");
    if (m->quantized)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED, "%s: the model is already quantized", m->dir);
    if (opts->nsamples < 1 || opts->seqlen < 1)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "nsamples and seqlen must be >= 1");
    GPTQ_TRY(gptq_config_validate(ctx, &opts->config));

    memset(&p, 0, sizeof p);
    p.ctx = ctx;
    p.m = m;
    p.o = opts;
    p.odd_shapes = opts->struct_size >= offsetof(gptq_quantize_options, quantize_odd_shapes) +
                                            sizeof opts->quantize_odd_shapes
                       ? opts->quantize_odd_shapes != 0
                       : 0;
    p.t_start = gptq__now();
    for (int j = 0; j < GPTQ_LIN_COUNT; j++) {
        const gptq__linear *l = &m->layers[0].lin[j];
        if (to_quantize(&p, l))
            p.num_steps += (int32_t)m->cfg.n_layers;
        else
            gptq__log(ctx, GPTQ_LOG_WARN,
                      "%s (%lld x %lld): in/out features not multiples of 32, kept in float "
                      "in every layer (quantize_odd_shapes quantizes it with padded packing "
                      "that only libgptq reads)",
                      gptq__lin_names[j], (long long)l->out, (long long)l->in);
    }
    rc = build_samples(&p, calib);
    for (int64_t s = 0; rc == GPTQ_OK && s < p.nsamples; s++) {
        total += p.samples[s].len;
        max_len = p.samples[s].len > max_len ? p.samples[s].len : max_len;
    }
    if (rc == GPTQ_OK) {
        const int64_t qd = m->cfg.n_heads * m->cfg.head_dim;
        p.max_batch_tokens = (int64_t)(BATCH_BYTES / (sizeof(float) * (size_t)m->cfg.hidden));
        if (p.max_batch_tokens < max_len)
            p.max_batch_tokens = max_len;
        p.stash_width = qd > m->cfg.inter ? qd : m->cfg.inter;
        if (!ctx->backend->device_forward || open_device(&p, total, max_len) != GPTQ_OK)
            rc = open_host(&p, total);
    }
    for (int64_t s = 0, off = 0; rc == GPTQ_OK && s < p.nsamples; off += p.samples[s].len, s++)
        rc = embed_sample(&p, s, off);
    for (int64_t i = 0; rc == GPTQ_OK && i < m->cfg.n_layers; i++)
        rc = quantize_layer(&p, i);
    gptq__free(p.samples);
    close_activations(&p);
    gptq__scratch_release(ctx);
    if (rc != GPTQ_OK) {
        restore_float(m);
        return rc;
    }
    m->quantized = 1;
    m->qcfg = opts->config;
    m->true_sequential = opts->true_sequential;
    return GPTQ_OK;
}
