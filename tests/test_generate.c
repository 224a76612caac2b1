/*
 * Generation (src/model/generate.c, gptq__layer_decode): the key/value-cache path
 * against the full forward pass, greedy generation with GPTQ weights against the same
 * weights dequantized to float, sampling, and bad arguments.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "model/model.h"

#define TINY GPTQ_TEST_MODELS "/tiny-llama-bytes"
#define STORIES GPTQ_TEST_MODELS "/stories260K"

static gptq_ctx *ctx;

static void setup(void)
{
    gptq_ctx_options o;
    gptq_ctx_options_init(&o);
    cr_assert_eq(gptq_ctx_create(&o, &ctx, NULL, 0), GPTQ_OK);
}

static void teardown(void) { gptq_ctx_free(ctx); }

TestSuite(generate, .init = setup, .fini = teardown);

static gptq_model *open_model(const char *dir)
{
    gptq_model *m = NULL;
    cr_assert_eq(gptq_model_open(ctx, dir, &m), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    return m;
}

/* The first n bytes of the bundled eval.txt as token ids. */
static void text_ids(int32_t *ids, int64_t n)
{
    FILE *f = fopen(TINY "/eval.txt", "rb");
    cr_assert_not_null(f);
    for (int64_t i = 0; i < n; i++)
        ids[i] = fgetc(f);
    fclose(f);
}

/* Logits at every position: the whole sequence in one pass (evaluation's path) and a
 * prompt of 24 tokens followed by one token at a time through the cache. */
static void check_cache(const char *dir, const int32_t *ids, int64_t n)
{
    gptq_model *m = open_model(dir);
    const gptq__model_config *c = &m->cfg;
    const int64_t V = c->vocab, H = c->hidden, kvd = c->n_kv_heads * c->head_dim, p = 24;
    float *full = malloc(sizeof(float) * (size_t)(n * V));
    float *h = malloc(sizeof(float) * (size_t)(n * H));
    float *kv = calloc((size_t)(c->n_layers * 2 * n * kvd), sizeof(float));
    float *logits = malloc(sizeof(float) * (size_t)V);
    double worst = 0.0;

    cr_assert(full && h && kv && logits);
    cr_assert_eq(gptq__embed(ctx, m, ids, n, h), GPTQ_OK);
    for (int64_t l = 0; l < c->n_layers; l++) {
        cr_assert_eq(gptq__layer_load(ctx, m, l), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
        cr_assert_eq(gptq__layer_forward(ctx, m, &m->layers[l], h, 1, n, NULL, NULL,
                                         GPTQ_CAP_COUNT), GPTQ_OK);
    }
    cr_assert_eq(gptq__head_logits(ctx, m, h, n, full), GPTQ_OK);

    for (int64_t pos = 0; pos < n;) {
        const int64_t k = pos == 0 ? p : 1; /* the prompt, then one token per step */
        cr_assert_eq(gptq__embed(ctx, m, ids + pos, k, h), GPTQ_OK);
        for (int64_t l = 0; l < c->n_layers; l++) {
            float *kc = kv + l * 2 * n * kvd;
            cr_assert_eq(gptq__layer_decode(ctx, m, &m->layers[l], h, k, pos, kc, kc + n * kvd),
                         GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
        }
        cr_assert_eq(gptq__head_logits(ctx, m, h + (k - 1) * H, 1, logits), GPTQ_OK);
        for (int64_t v = 0; v < V; v++) {
            const double d = fabs((double)logits[v] - (double)full[(pos + k - 1) * V + v]);
            worst = d > worst ? d : worst;
        }
        pos += k;
    }
    printf("%s: KV-cache logits vs one pass over %lld tokens: max |diff| %.3g\n", dir,
           (long long)n, worst);
    /* The same arithmetic but for the linears' BLAS blocking (other row counts). */
    cr_expect_lt(worst, 1e-4, "max |diff| %.3g", worst);
    free(full);
    free(h);
    free(kv);
    free(logits);
    gptq_model_free(m);
}

Test(generate, cache_matches_full_pass_tiny)
{
    int32_t ids[96];
    text_ids(ids, 96);
    check_cache(TINY, ids, 96);
}

/* Grouped-query attention (8 heads over 4 key/value heads), tied embeddings. */
Test(generate, cache_matches_full_pass_stories)
{
    int32_t ids[64];
    for (int i = 0; i < 64; i++)
        ids[i] = (int32_t)((i * 37 + 1) % 512);
    check_cache(STORIES, ids, 64);
}

typedef struct collected {
    int32_t ids[256];
    int n;
    int stop_after;
} collected;

static int collect(void *user, int32_t token)
{
    collected *c = user;
    c->ids[c->n++] = token;
    return c->stop_after > 0 && c->n >= c->stop_after;
}

/* W = (I W^T)^T through the library's own dequantizing matmul: the float weights that
 * a dequantized copy of the checkpoint holds, exactly. */
static float *dequantized(const gptq__linear *l)
{
    const int64_t R = l->out, C = l->in;
    float *eye = calloc((size_t)(C * C), sizeof(float)), *wt = malloc(sizeof(float) * (size_t)(C * R));
    float *w = gptq__alloc(ctx, sizeof(float) * (size_t)(R * C), "test weights");
    cr_assert(eye && wt && w);
    for (int64_t i = 0; i < C; i++)
        eye[i * C + i] = 1.0f;
    cr_assert_eq(gptq_dequant_matmul(ctx, &l->packed, eye, C, NULL, wt), GPTQ_OK);
    for (int64_t i = 0; i < C; i++)
        for (int64_t r = 0; r < R; r++)
            w[r * C + i] = wt[i * R + r];
    free(eye);
    free(wt);
    return w;
}

Test(generate, quantized_equals_dequantized_float)
{
    gptq_model *q = open_model(TINY), *f = open_model(TINY);
    gptq_tokens *calib = NULL;
    gptq_quantize_options o;
    gptq_generate_options g;
    gptq_generate_result rq = {.struct_size = sizeof rq}, rf = {.struct_size = sizeof rf};
    const char *prompt = "And God said, Let there be light";
    int32_t ids[64], outq[160], outf[160];
    int64_t n = (int64_t)strlen(prompt);

    cr_assert_eq(gptq_tokens_load(ctx, TINY "/calib.txt", GPTQ_TOKENS_BYTES, &calib), GPTQ_OK);
    gptq_quantize_options_init(&o);
    o.nsamples = 16;
    o.seqlen = 128;
    o.config.bits = 3; /* coarse weights: far from the float model's, still exact here */
    cr_assert_eq(gptq_model_quantize(ctx, q, calib, &o), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    for (int64_t i = 0; i < f->cfg.n_layers; i++) {
        cr_assert_eq(gptq__layer_load(ctx, f, i), GPTQ_OK);
        for (int j = 0; j < GPTQ_LIN_COUNT; j++) {
            cr_assert(q->layers[i].lin[j].quantized);
            gptq__free(f->layers[i].lin[j].w);
            f->layers[i].lin[j].w = dequantized(&q->layers[i].lin[j]);
        }
    }
    for (int64_t i = 0; i < n; i++)
        ids[i] = (unsigned char)prompt[i];
    gptq_generate_options_init(&g);
    g.max_tokens = 160;
    cr_assert_eq(gptq_model_generate(ctx, q, ids, n, &g, outq, 160, &rq), GPTQ_OK, "%s",
                 gptq_ctx_last_error(ctx));
    cr_assert_eq(gptq_model_generate(ctx, f, ids, n, &g, outf, 160, &rf), GPTQ_OK, "%s",
                 gptq_ctx_last_error(ctx));
    cr_assert_eq(rq.new_tokens, 160);
    cr_assert_eq(rf.new_tokens, 160);
    cr_assert_eq(rq.prompt_tokens, n);
    for (int i = 0; i < 160; i++)
        cr_assert_eq(outq[i], outf[i], "token %d: %d quantized, %d dequantized", i, outq[i],
                     outf[i]);
    printf("3-bit GPTQ greedy: ");
    for (int i = 0; i < 60; i++)
        putchar(outq[i]);
    printf("... (%.0f tokens/s)\n", rq.new_tokens / rq.decode_seconds);
    gptq_tokens_free(calib);
    gptq_model_free(q);
    gptq_model_free(f);
}

Test(generate, sampling_is_reproducible_and_callback_stops)
{
    gptq_model *m = open_model(TINY);
    gptq_generate_options g;
    gptq_generate_result r = {.struct_size = sizeof r};
    int32_t ids[8] = {'A', 'n', 'd', ' '}, a[64], b[64], c[64];
    collected col = {.stop_after = 10};
    int differ = 0;

    gptq_generate_options_init(&g);
    g.max_tokens = 64;
    g.temperature = 1.0;
    g.top_k = 20;
    g.seed = 7;
    cr_assert_eq(gptq_model_generate(ctx, m, ids, 4, &g, a, 64, NULL), GPTQ_OK);
    cr_assert_eq(gptq_model_generate(ctx, m, ids, 4, &g, b, 64, NULL), GPTQ_OK);
    cr_assert_eq(memcmp(a, b, sizeof a), 0, "same seed, same tokens");
    g.seed = 8;
    cr_assert_eq(gptq_model_generate(ctx, m, ids, 4, &g, c, 64, NULL), GPTQ_OK);
    for (int i = 0; i < 64; i++)
        differ += a[i] != c[i];
    cr_assert_gt(differ, 0, "another seed, other tokens");
    for (int i = 0; i < 64; i++) /* top-k 20 of a byte model trained on ASCII text */
        cr_assert(a[i] >= 0 && a[i] < 128, "token %d", a[i]);

    g.seed = 7;
    g.on_token = collect;
    g.user = &col;
    cr_assert_eq(gptq_model_generate(ctx, m, ids, 4, &g, NULL, 0, &r), GPTQ_OK);
    cr_assert_eq(col.n, 10);
    cr_assert_eq(r.new_tokens, 10, "the callback stopped it");
    cr_assert_eq(memcmp(col.ids, a, sizeof(int32_t) * 10), 0, "callback sees the same tokens");
    gptq_model_free(m);
}

/* tiny-llama-bytes with eos_token_id set (the bundled config has none): a list, as
 * Llama 3's config.json has it. */
static void eos_model(char *dir, size_t size)
{
    char cmd[2048];
    FILE *f;
    cr_assert_lt((size_t)snprintf(dir, size, "%s/gen_eos", GPTQ_TEST_TMP), size);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && ln -s '%s/model.safetensors' '%s/'",
             dir, dir, TINY, dir);
    cr_assert_eq(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "sed 's/\"eos_token_id\": null/\"eos_token_id\": [10, 46]/' "
             "'%s/config.json' > '%s/config.json'", TINY, dir);
    cr_assert_eq(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s/config.json", dir);
    f = fopen(cmd, "r");
    cr_assert_not_null(f);
    fclose(f);
}

Test(generate, stops_at_eos)
{
    gptq_model *m;
    gptq_generate_options g;
    gptq_generate_result r = {.struct_size = sizeof r};
    const char *prompt = "1 In the beginning";
    int32_t ids[32], out[300];
    char dir[512];
    int64_t n = (int64_t)strlen(prompt);

    eos_model(dir, sizeof dir);
    m = open_model(dir);
    for (int64_t i = 0; i < n; i++)
        ids[i] = (unsigned char)prompt[i];
    gptq_generate_options_init(&g);
    g.max_tokens = 300;
    g.temperature = 0.8; /* greedy decoding of this toy loops on "of the LORD" */
    g.seed = 1;
    cr_assert_eq(gptq_model_generate(ctx, m, ids, n, &g, out, 300, &r), GPTQ_OK, "%s",
                 gptq_ctx_last_error(ctx));
    /* A verse ends with '.' or a newline well before 300 bytes. */
    cr_assert_lt(r.new_tokens, 300);
    cr_assert(out[r.new_tokens - 1] == 10 || out[r.new_tokens - 1] == 46);
    for (int64_t i = 0; i + 1 < r.new_tokens; i++)
        cr_assert(out[i] != 10 && out[i] != 46, "token %lld", (long long)i);
    g.stop_at_eos = 0;
    g.max_tokens = 200;
    cr_assert_eq(gptq_model_generate(ctx, m, ids, n, &g, out, 300, &r), GPTQ_OK);
    cr_assert_eq(r.new_tokens, 200);
    gptq_model_free(m);
}

Test(generate, bad_arguments)
{
    gptq_model *m = open_model(TINY);
    gptq_generate_options g;
    int32_t ids[4] = {'a', 'b', 300, 'c'}, out[8];

    gptq_generate_options_init(&g);
    cr_assert_eq(gptq_model_generate(ctx, m, ids, 4, &g, out, 8, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "vocabulary"), "%s", gptq_ctx_last_error(ctx));
    ids[2] = 'x';
    cr_assert_eq(gptq_model_generate(ctx, m, ids, 0, &g, out, 8, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gptq_model_generate(ctx, m, NULL, 4, &g, out, 8, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gptq_model_generate(ctx, m, ids, 4, &g, NULL, 8, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    g.max_tokens = 600; /* max_position_embeddings is 512 */
    cr_assert_eq(gptq_model_generate(ctx, m, ids, 4, &g, NULL, 0, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "max_position_embeddings"), "%s",
              gptq_ctx_last_error(ctx));
    g.max_tokens = 8;
    g.temperature = NAN;
    cr_assert_eq(gptq_model_generate(ctx, m, ids, 4, &g, out, 8, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    g.temperature = 0.0;
    g.struct_size = 4;
    cr_assert_eq(gptq_model_generate(ctx, m, ids, 4, &g, out, 8, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    gptq_generate_options_init(&g);
    g.max_tokens = 0;
    cr_assert_eq(gptq_model_generate(ctx, m, ids, 4, &g, NULL, 0, NULL), GPTQ_OK);
    gptq_model_free(m);
}
