/*
 * gptq_model_eval: perplexity as the references' llama_eval computes it (IST-DASLab
 * llama.py; FORMATS.md section 5.4). One sequence is cut into floor(N / seqlen)
 * non-overlapping windows (the tail is dropped); several sequences are one window each,
 * cut to seqlen. Every window starts at position 0 with no BOS added, and the NLL of
 * its tokens 1..len-1 given their prefix is averaged over all predicted tokens.
 *
 * The work is layer-major, as the references' sequential loops are: the hidden states
 * of a group of windows stay in memory while every decoder layer is loaded once, run
 * over the group and dropped again, so a model larger than memory is evaluated with
 * one layer resident at a time. Inside a group, windows of one length form a batch that
 * layer_forward runs with one SGEMM per linear over many sequences. Windows of
 * different lengths (several sequences) are sorted longest first and padded with zero
 * rows up to the longest of their batch: attention is causal and everything else is
 * per row, so padding after a window never changes its own rows, and only its own
 * positions are scored.
 *
 * On a backend with device_forward (the GPU) the same plan runs with the group's hidden
 * states in the backend's memory (run_group_dev, through forward_dev.c): the layers,
 * the final norm and lm_head run there and only the logits come back for the
 * log-softmax. When those buffers do not fit, the log says so and the host path runs.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"

/* Hidden states of a group of windows, kept across layers: with layer_forward's own
 * bounded scratch (64 MiB), about 512 MiB of activations. */
#define EVAL_STATE_BYTES ((int64_t)448 << 20)

typedef struct eval_window {
    const int32_t *ids;
    int64_t len;
    int64_t order;   /* position in the input, for a deterministic sort */
} eval_window;

typedef struct eval_batch {
    int64_t first, count; /* windows [first, first + count) of the sorted list */
    int64_t seqlen;       /* padded length: the longest window of the batch */
    int64_t row;          /* first row of the batch in the group's hidden states */
    int64_t group;
} eval_batch;

static int by_length_desc(const void *a, const void *b)
{
    const eval_window *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Windows of the protocol, their ids checked against the vocabulary. */
static int make_windows(gptq_ctx *ctx, const gptq_model *m, const gptq_tokens *text,
                        int64_t seqlen, eval_window **out, int64_t *count)
{
    const char *fn = "gptq_model_eval";
    const int64_t nseq = gptq_tokens_count(text);
    int64_t nwin = 0, len0 = 0;
    eval_window *w;

    *out = NULL;
    *count = 0;
    if (nseq < 1)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: no token sequences", fn);
    if (nseq == 1) {
        (void)gptq_tokens_sequence(text, 0, &len0);
        nwin = len0 / seqlen;
        if (nwin < 1)
            return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                             "%s: the text has %lld tokens, fewer than one window of %lld", fn,
                             (long long)len0, (long long)seqlen);
    } else {
        nwin = nseq;
    }
    w = gptq__calloc(ctx, (size_t)nwin * sizeof *w, "evaluation windows");
    if (!w)
        return GPTQ_ERR_OUT_OF_MEMORY;

    for (int64_t k = 0, used = 0; k < nwin; k++) {
        int64_t len, seq = nseq == 1 ? 0 : k, off = nseq == 1 ? k * seqlen : 0;
        const int32_t *ids = gptq_tokens_sequence(text, seq, &len);
        len = nseq == 1 ? seqlen : len < seqlen ? len : seqlen;
        /* A sequence of fewer than two tokens predicts nothing: leave it out. */
        if (!ids || len < 2)
            continue;
        for (int64_t t = 0; t < len; t++) {
            const int32_t id = ids[off + t];
            if (id < 0 || id >= m->cfg.vocab) {
                gptq__free(w);
                return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                                 "%s: token id %d at position %lld of sequence %lld is outside "
                                 "the vocabulary (vocab_size %lld)",
                                 fn, (int)id, (long long)(off + t), (long long)seq,
                                 (long long)m->cfg.vocab);
            }
        }
        w[used].ids = ids + off;
        w[used].len = len;
        w[used].order = k;
        *count = ++used;
    }
    if (*count == 0) {
        gptq__free(w);
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "%s: no sequence has two tokens or more", fn);
    }
    qsort(w, (size_t)*count, sizeof *w, by_length_desc);
    *out = w;
    return GPTQ_OK;
}

/* Split the sorted windows into batches of one padded length - windows of at least 7/8
 * of the batch's longest, so that padding wastes at most an eighth - and the batches
 * into groups whose hidden states fit in `state_rows` rows (or one window). Returns
 * the number of batches; *max_rows is the largest group. */
static int64_t plan(const eval_window *w, int64_t nwin, int64_t state_rows, eval_batch *b,
                    int64_t *max_rows)
{
    int64_t nb = 0, group = 0, rows = 0;

    *max_rows = 0;
    for (int64_t i = 0; i < nwin;) {
        const int64_t T = w[i].len;
        int64_t cnt = 1;
        if (rows > 0 && rows + T > state_rows) {
            group++;
            rows = 0;
        }
        while (i + cnt < nwin && w[i + cnt].len * 8 >= T * 7 && rows + (cnt + 1) * T <= state_rows)
            cnt++;
        b[nb] = (eval_batch){.first = i, .count = cnt, .seqlen = T, .row = rows, .group = group};
        nb++;
        rows += cnt * T;
        i += cnt;
        *max_rows = rows > *max_rows ? rows : *max_rows;
    }
    return nb;
}

/* Run batches [b0, b1) (one group) through embedding, every layer and the head. */
static int run_group(gptq_ctx *ctx, gptq_model *m, const eval_window *w, const eval_batch *b,
                     int64_t b0, int64_t b1, float *h, double *nll, int64_t *count)
{
    const int64_t hid = m->cfg.hidden;
    int rc = GPTQ_OK;

    for (int64_t k = b0; k < b1; k++)
        for (int64_t i = 0; i < b[k].count; i++) {
            const eval_window *win = &w[b[k].first + i];
            float *hw = h + (b[k].row + i * b[k].seqlen) * hid;
            GPTQ_TRY(gptq__embed(ctx, m, win->ids, win->len, hw));
            memset(hw + win->len * hid, 0,
                   (size_t)((b[k].seqlen - win->len) * hid) * sizeof(float));
        }

    for (int64_t l = 0; l < m->cfg.n_layers && rc == GPTQ_OK; l++) {
        GPTQ_TRY(gptq__layer_load(ctx, m, l));
        for (int64_t k = b0; k < b1 && rc == GPTQ_OK; k++)
            rc = gptq__layer_forward(ctx, m, &m->layers[l], h + b[k].row * hid, b[k].count,
                                     b[k].seqlen, NULL, NULL, GPTQ_CAP_COUNT);
        /* A model quantized in memory keeps its packed layers; a float one holds one
         * layer's weights at a time. */
        if (!m->quantized)
            gptq__layer_unload(m, l);
    }
    if (rc != GPTQ_OK)
        return rc;

    for (int64_t k = b0; k < b1; k++)
        for (int64_t i = 0; i < b[k].count; i++) {
            const eval_window *win = &w[b[k].first + i];
            float *hw = h + (b[k].row + i * b[k].seqlen) * hid;
            GPTQ_TRY(gptq__head_nll(ctx, m, hw, win->ids, 1, win->len, nll, count));
        }
    return GPTQ_OK;
}

/* ---- on a backend with device_forward (the GPU) ------------------------------------ */

/* Tokens per call of the device layer (whole windows; one window at least). */
#define DEV_BATCH_BYTES ((int64_t)64 << 20)

typedef struct dev_eval {
    gptq__dev *d;
    float *h;           /* a group's hidden states [max_rows, hidden] (a buffer) */
    float *stash;       /* [sub_tokens, stash width] (a buffer) */
    float *tmp;         /* host: one window's embeddings [max_len, hidden] */
    int64_t sub_tokens; /* tokens per device call */
} dev_eval;

static void dev_eval_close(gptq_ctx *ctx, dev_eval *e)
{
    ctx->backend->buf_free(ctx, e->h);
    ctx->backend->buf_free(ctx, e->stash);
    gptq__dev_close(e->d);
    gptq__free(e->tmp);
    memset(e, 0, sizeof *e);
}

/* The buffers, or a note in the log and the host path (the caller's last error as it
 * was) when they do not fit. */
static int dev_eval_open(gptq_ctx *ctx, const gptq_model *m, int64_t max_rows, int64_t max_len,
                         dev_eval *e)
{
    const gptq__model_config *c = &m->cfg;
    const int64_t qd = c->n_heads * c->head_dim, sw = qd > c->inter ? qd : c->inter;
    gptq__err_state before;
    int rc = GPTQ_ERR_OUT_OF_MEMORY;

    memset(e, 0, sizeof *e);
    gptq__err_save(ctx, &before);
    e->sub_tokens = DEV_BATCH_BYTES / (c->hidden * (int64_t)sizeof(float));
    e->sub_tokens = e->sub_tokens < max_len ? max_len : e->sub_tokens;
    e->h = gptq__buf_alloc(ctx, sizeof(float) * (size_t)(max_rows * c->hidden), "hidden states");
    e->stash = e->h ? gptq__buf_alloc(ctx, sizeof(float) * (size_t)(e->sub_tokens * sw),
                                      "stage activations")
                    : NULL;
    e->tmp = e->stash ? gptq__alloc(ctx, sizeof(float) * (size_t)(max_len * c->hidden),
                                    "window embeddings")
                      : NULL;
    if (e->tmp)
        rc = gptq__dev_open(ctx, m, e->sub_tokens, max_len, 0, &e->d);
    if (rc == GPTQ_OK)
        return GPTQ_OK;
    gptq__log(ctx, GPTQ_LOG_WARN,
              "evaluation: the hidden states do not fit the %s backend's memory (%s); the "
              "layers run on the host",
              ctx->backend->name, ctx->last_error);
    dev_eval_close(ctx, e);
    gptq__err_restore(ctx, &before);
    return rc;
}

/* run_group with the hidden states in the backend's memory: the embeddings go up once,
 * each layer's float weights once (packed ones run through their GPU handles), and only
 * the logits come back, a chunk at a time. */
static int run_group_dev(gptq_ctx *ctx, gptq_model *m, dev_eval *e, const eval_window *w,
                         const eval_batch *b, int64_t b0, int64_t b1, double *nll, int64_t *count)
{
    const int64_t hid = m->cfg.hidden;
    int rc = GPTQ_OK;

    for (int64_t k = b0; k < b1; k++)
        for (int64_t i = 0; i < b[k].count; i++) {
            const eval_window *win = &w[b[k].first + i];
            GPTQ_TRY(gptq__embed(ctx, m, win->ids, win->len, e->tmp));
            memset(e->tmp + win->len * hid, 0,
                   (size_t)((b[k].seqlen - win->len) * hid) * sizeof(float));
            GPTQ_TRY(ctx->backend->upload(ctx, e->h + (b[k].row + i * b[k].seqlen) * hid, e->tmp,
                                          (size_t)(b[k].seqlen * hid) * sizeof(float)));
        }
    for (int64_t l = 0; l < m->cfg.n_layers && rc == GPTQ_OK; l++) {
        GPTQ_TRY(gptq__layer_load(ctx, m, l));
        rc = gptq__dev_load_layer(e->d, &m->layers[l]);
        for (int64_t k = b0; k < b1 && rc == GPTQ_OK; k++) {
            const int64_t T = b[k].seqlen, per = e->sub_tokens / T < 1 ? 1 : e->sub_tokens / T;
            for (int64_t i0 = 0; i0 < b[k].count && rc == GPTQ_OK; i0 += per) {
                const int64_t ns = b[k].count - i0 < per ? b[k].count - i0 : per;
                float *h = e->h + (b[k].row + i0 * T) * hid;
                /* The whole layer: stages 1-4 (stage 0 only feeds a capture). */
                for (int32_t st = 1; st <= 4 && rc == GPTQ_OK; st++)
                    rc = gptq__dev_stage(e->d, st, h, e->stash, ns, T, NULL, NULL);
            }
        }
        if (!m->quantized)
            gptq__layer_unload(m, l);
    }
    for (int64_t k = b0; k < b1 && rc == GPTQ_OK; k++)
        for (int64_t i = 0; i < b[k].count && rc == GPTQ_OK; i++) {
            const eval_window *win = &w[b[k].first + i];
            rc = gptq__dev_head_nll(e->d, m, e->h + (b[k].row + i * b[k].seqlen) * hid, win->ids,
                                    win->len, nll, count);
        }
    return rc;
}

int gptq_model_eval(gptq_ctx *ctx, gptq_model *m, const gptq_tokens *text, int64_t seqlen,
                    gptq_eval_result *out)
{
    const char *fn = "gptq_model_eval";
    const double t0 = gptq__now();
    eval_window *w = NULL;
    eval_batch *b = NULL;
    float *h = NULL;
    dev_eval dev;
    int on_dev;
    int64_t nwin = 0, nb, max_rows, count = 0;
    double nll = 0.0;
    int rc;

    if (!m || !text || !out)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn,
                         !m ? "model" : !text ? "text" : "out");
    if (out->struct_size < sizeof *out)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "%s: out->struct_size is %u, expected %zu: set it to "
                         "sizeof(gptq_eval_result)",
                         fn, (unsigned)out->struct_size, sizeof *out);
    if (seqlen < 2)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: seqlen = %lld (must be >= 2)", fn,
                         (long long)seqlen);
    GPTQ_TRY(make_windows(ctx, m, text, seqlen, &w, &nwin));

    b = gptq__alloc(ctx, (size_t)nwin * sizeof *b, "evaluation batches");
    if (!b) {
        gptq__free(w);
        return GPTQ_ERR_OUT_OF_MEMORY;
    }
    nb = plan(w, nwin, EVAL_STATE_BYTES / (m->cfg.hidden * (int64_t)sizeof(float)), b,
              &max_rows);
    /* On a device_forward backend the whole forward runs there when it fits. */
    on_dev = ctx->backend->device_forward &&
             dev_eval_open(ctx, m, max_rows, w[0].len, &dev) == GPTQ_OK;
    h = on_dev ? NULL
               : gptq__alloc(ctx, (size_t)(max_rows * m->cfg.hidden) * sizeof(float),
                             "evaluation hidden states");
    rc = h || on_dev ? GPTQ_OK : GPTQ_ERR_OUT_OF_MEMORY;
    for (int64_t k0 = 0; k0 < nb && rc == GPTQ_OK;) {
        int64_t k1 = k0 + 1;
        while (k1 < nb && b[k1].group == b[k0].group)
            k1++;
        rc = on_dev ? run_group_dev(ctx, m, &dev, w, b, k0, k1, &nll, &count)
                    : run_group(ctx, m, w, b, k0, k1, h, &nll, &count);
        k0 = k1;
    }
    if (on_dev)
        dev_eval_close(ctx, &dev);
    gptq__free(h);
    gptq__free(b);
    gptq__free(w);
    gptq__scratch_release(ctx);
    if (rc != GPTQ_OK)
        return rc;
    if (!isfinite(nll))
        return GPTQ_FAIL(ctx, GPTQ_ERR_NUMERIC, "%s: the summed NLL is not finite", fn);

    out->nll = nll / (double)count;
    out->ppl = exp(out->nll);
    out->tokens = count;
    out->windows = nwin;
    out->seconds = gptq__now() - t0;
    return GPTQ_OK;
}
