/*
 * gptq_model_generate: text generation with a key/value cache.
 *
 *   h = embed(prompt); every layer: gptq__layer_decode(h, n_prompt, pos 0) fills its
 *   cache rows 0 .. n_prompt - 1; logits of the last row -> next token
 *   then per new token t at position p: h = embed(t); every layer decodes one row at p
 *   (writing cache row p, attending to rows 0 .. p); logits -> next token
 *
 * The same layer code as evaluation, so quantized linears run through the library's
 * dequantizing matmul: generation with a GPTQ checkpoint and with its dequantized float
 * copy choose the same tokens (tests/test_generate.c).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "model.h"

void gptq_generate_options_init(gptq_generate_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->struct_size = (uint32_t)sizeof *o;
    o->max_tokens = 128;
    o->temperature = 0.0;
    o->top_k = 0;
    o->seed = 0;
    o->stop_at_eos = 1;
}

/* config.json's eos_token_id: a number or a list of numbers; -1 entries when absent. */
static int64_t read_eos(const gptq_model *m, int32_t *eos, int64_t cap)
{
    json_t *doc = m->cfg.config_text ? json_loads(m->cfg.config_text, 0, NULL) : NULL;
    json_t *v = doc ? json_object_get(doc, "eos_token_id") : NULL;
    int64_t n = 0;

    if (json_is_integer(v)) {
        eos[n++] = (int32_t)json_integer_value(v);
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v) && n < cap; i++)
            if (json_is_integer(json_array_get(v, i)))
                eos[n++] = (int32_t)json_integer_value(json_array_get(v, i));
    }
    json_decref(doc);
    return n;
}

/* splitmix64: a small, well-mixed generator; the draws only need to be reproducible. */
static uint64_t next_u64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct cand {
    float logit;
    int32_t id;
} cand;

static int by_logit_desc(const void *pa, const void *pb)
{
    const cand *a = pa, *b = pb;
    if (a->logit != b->logit)
        return a->logit > b->logit ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* The next token from logits [vocab]. cands: scratch of vocab entries. */
static int32_t choose(const float *logits, int64_t vocab, const gptq_generate_options *o,
                      uint64_t *rng, cand *cands)
{
    int64_t k = vocab, best = 0;
    double total = 0.0, u, acc = 0.0;

    if (o->temperature <= 0.0) {
        for (int64_t i = 1; i < vocab; i++)
            if (logits[i] > logits[best])
                best = i;
        return (int32_t)best;
    }
    for (int64_t i = 0; i < vocab; i++)
        cands[i] = (cand){logits[i], (int32_t)i};
    qsort(cands, (size_t)vocab, sizeof *cands, by_logit_desc);
    if (o->top_k > 0 && o->top_k < vocab)
        k = o->top_k;
    /* softmax(logits / T) over the k best, relative to the largest: no overflow. */
    for (int64_t i = 0; i < k; i++)
        total += exp(((double)cands[i].logit - (double)cands[0].logit) / o->temperature);
    u = (double)(next_u64(rng) >> 11) * (1.0 / 9007199254740992.0) * total;
    for (int64_t i = 0; i < k; i++) {
        acc += exp(((double)cands[i].logit - (double)cands[0].logit) / o->temperature);
        if (u < acc)
            return cands[i].id;
    }
    return cands[k - 1].id;
}

typedef struct gen_state {
    float *kv;      /* per layer: K then V cache, [cap, kvd] each */
    float *h;       /* [n_prompt, hidden] */
    float *logits;  /* [vocab] */
    cand *cands;    /* [vocab] */
    int64_t cap, kvd;
} gen_state;

/* Run `n` tokens at positions pos0 .. through every layer; the logits of the last one. */
static int step(gptq_ctx *ctx, gptq_model *m, gen_state *g, const int32_t *ids, int64_t n,
                int64_t pos0)
{
    const int64_t hid = m->cfg.hidden;

    GPTQ_TRY(gptq__embed(ctx, m, ids, n, g->h));
    for (int64_t l = 0; l < m->cfg.n_layers; l++) {
        float *kc = g->kv + l * 2 * g->cap * g->kvd, *vc = kc + g->cap * g->kvd;
        GPTQ_TRY(gptq__layer_decode(ctx, m, &m->layers[l], g->h, n, pos0, kc, vc));
    }
    return gptq__head_logits(ctx, m, g->h + (n - 1) * hid, 1, g->logits);
}

static int check_args(gptq_ctx *ctx, const gptq_model *m, const int32_t *prompt,
                      int64_t n_prompt, const gptq_generate_options *o, const int32_t *out,
                      int64_t out_cap, const gptq_generate_result *result)
{
    if (!m || !prompt || n_prompt < 1 || !o || out_cap < 0 || (out_cap > 0 && !out))
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_model_generate: NULL argument, empty prompt or bad out_cap");
    if (o->struct_size < sizeof *o)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_generate_options.struct_size is too small; call "
                         "gptq_generate_options_init()");
    if (result && result->struct_size < sizeof *result)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_generate_result.struct_size is %u, expected %zu",
                         (unsigned)result->struct_size, sizeof *result);
    if (o->max_tokens < 0 || o->top_k < 0 || !(o->temperature >= 0.0) ||
        !isfinite(o->temperature))
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "generate: max_tokens and top_k must be >= 0 and temperature a "
                         "finite number >= 0");
    for (int64_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= m->cfg.vocab)
            return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                             "prompt token %lld is %d, outside the vocabulary [0, %lld)",
                             (long long)i, (int)prompt[i], (long long)m->cfg.vocab);
    if (n_prompt + o->max_tokens > m->cfg.max_pos)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "%lld prompt tokens + %lld new ones exceed the model's %lld positions "
                         "(max_position_embeddings)",
                         (long long)n_prompt, (long long)o->max_tokens, (long long)m->cfg.max_pos);
    return GPTQ_OK;
}

int gptq_model_generate(gptq_ctx *ctx, gptq_model *m, const int32_t *prompt, int64_t n_prompt,
                        const gptq_generate_options *opts, int32_t *out, int64_t out_cap,
                        gptq_generate_result *result)
{
    gptq_generate_options defaults;
    gen_state g;
    int32_t eos[16], tok;
    int64_t neos = 0, made = 0, limit;
    uint64_t rng;
    size_t kv_bytes;
    double t0, t1;
    int rc = GPTQ_OK, stop = 0;

    if (!ctx)
        return GPTQ_ERR_INVALID_ARGUMENT;
    if (!opts) {
        gptq_generate_options_init(&defaults);
        opts = &defaults;
    }
    GPTQ_TRY(check_args(ctx, m, prompt, n_prompt, opts, out, out_cap, result));
    limit = opts->max_tokens;
    if (out && out_cap < limit)
        limit = out_cap;
    if (opts->stop_at_eos)
        neos = read_eos(m, eos, 16);
    rng = opts->seed;

    memset(&g, 0, sizeof g);
    g.kvd = m->cfg.n_kv_heads * m->cfg.head_dim;
    g.cap = n_prompt + (limit > 0 ? limit : 1);
    if (gptq__mul3_size(&kv_bytes, m->cfg.n_layers * 2, g.cap * g.kvd, sizeof(float)) != 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY, "the key/value cache is too large");
    g.kv = gptq__alloc(ctx, kv_bytes, "key/value cache");
    g.h = g.kv ? gptq__alloc(ctx, sizeof(float) * (size_t)(n_prompt * m->cfg.hidden),
                             "hidden states")
               : NULL;
    g.logits = g.h ? gptq__alloc(ctx, sizeof(float) * (size_t)m->cfg.vocab, "logits") : NULL;
    g.cands = g.logits ? gptq__alloc(ctx, sizeof(cand) * (size_t)m->cfg.vocab, "candidates")
                       : NULL;
    if (!g.cands)
        rc = GPTQ_ERR_OUT_OF_MEMORY;
    /* Every layer stays resident for the whole generation. */
    for (int64_t l = 0; rc == GPTQ_OK && l < m->cfg.n_layers; l++)
        if (!m->layers[l].loaded)
            rc = gptq__layer_load(ctx, m, l);

    t0 = gptq__now();
    if (rc == GPTQ_OK && limit > 0)
        rc = step(ctx, m, &g, prompt, n_prompt, 0);
    t1 = gptq__now();
    for (int64_t pos = n_prompt; rc == GPTQ_OK && made < limit && !stop; pos++) {
        tok = choose(g.logits, m->cfg.vocab, opts, &rng, g.cands);
        if (out)
            out[made] = tok;
        made++;
        if (opts->on_token && opts->on_token(opts->user, tok) != 0)
            stop = 1;
        for (int64_t e = 0; e < neos; e++)
            stop |= tok == eos[e];
        if (!stop && made < limit)
            rc = step(ctx, m, &g, &tok, 1, pos);
    }
    if (result) {
        result->prompt_tokens = n_prompt;
        result->new_tokens = made;
        result->prefill_seconds = t1 - t0;
        result->decode_seconds = gptq__now() - t1;
    }
    /* A float model holds one layer at a time outside generation, as in evaluation. */
    if (!m->quantized)
        for (int64_t l = 0; l < m->cfg.n_layers; l++)
            gptq__layer_unload(m, l);
    gptq__free(g.kv);
    gptq__free(g.h);
    gptq__free(g.logits);
    gptq__free(g.cands);
    gptq__scratch_release(ctx);
    return rc;
}
