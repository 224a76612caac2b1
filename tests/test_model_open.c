/*
 * Tests of src/model config.c, weights.c and model.c: opening the two bundled models,
 * and directories built from them with one thing broken (config keys, tensor shape,
 * dtype, presence, truncation, shards, GPTQ tensors), each of which must fail at open
 * with the right status and a message naming the file and the key or tensor.
 */
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "gptq/gptq.h"
#include "gptq/model.h"
#include "gptq/safetensors.h"
#include "model/model.h"

#define TINY GPTQ_TEST_MODELS "/tiny-llama-bytes"
#define STORIES GPTQ_TEST_MODELS "/stories260K"

static gptq_ctx *ctx_new(void)
{
    gptq_ctx *ctx = NULL;
    char err[256];
    cr_assert_eq(gptq_ctx_create(NULL, &ctx, err, sizeof err), GPTQ_OK, "%s", err);
    return ctx;
}

/* ---- building model directories -------------------------------------------------- */

/* Buffers handed to a writer must live until it has written. */
static void *kept[1024];
static int nkept;

static void *scratch(size_t n)
{
    cr_assert_lt(nkept, 1024);
    kept[nkept] = calloc(1, n ? n : 1);
    cr_assert_not_null(kept[nkept]);
    return kept[nkept++];
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* A fresh, empty directory GPTQ_TEST_TMP/open_<name> (static buffer). */
static const char *fresh_dir(const char *name)
{
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s/open_%s", GPTQ_TEST_TMP, name);
    mkdir(GPTQ_TEST_TMP, 0777);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    cr_assert_eq(mkdir(dir, 0777), 0, "mkdir %s", dir);
    return dir;
}

/* config.json of `src` with the top-level keys of the JSON object `patch` set; a value
 * of "__delete__" removes the key. `file` is usually "config.json". */
static void write_config(const char *dir, const char *file, const char *src, const char *patch)
{
    char path[1200];
    json_error_t e;
    json_t *root, *p, *v;
    const char *k;

    snprintf(path, sizeof path, "%s/config.json", src);
    root = json_load_file(path, 0, &e);
    cr_assert_not_null(root, "%s: %s", path, e.text);
    if (patch) {
        p = json_loads(patch, 0, &e);
        cr_assert_not_null(p, "patch: %s", e.text);
        json_object_foreach(p, k, v) {
            if (json_is_string(v) && strcmp(json_string_value(v), "__delete__") == 0)
                json_object_del(root, k);
            else
                json_object_set(root, k, v);
        }
        json_decref(p);
    }
    snprintf(path, sizeof path, "%s/%s", dir, file);
    cr_assert_eq(json_dump_file(root, path, JSON_INDENT(2)), 0);
    json_decref(root);
}

static void add(gptq_safetensors_writer *w, const char *name, int32_t dtype, int32_t ndim,
                const int64_t *shape, const void *data, size_t nbytes)
{
    cr_assert_eq(gptq_safetensors_writer_add(NULL, w, name, dtype, ndim, shape, data, nbytes),
                 GPTQ_OK, "add %s", name);
}

/* Adds tensor `t` of the source model to `w`, changed or not at all. */
typedef void (*tensor_fn)(gptq_safetensors_writer *w, const gptq_tensor_info *t, void *user);

/* <dir>/<file> from the tensors of <src>/model.safetensors passed through `fn` (NULL:
 * copied as they are). */
static void write_weights(const char *dir, const char *file, const char *src, tensor_fn fn,
                          void *user)
{
    char path[1200];
    gptq_safetensors *st;
    gptq_safetensors_writer *w;
    gptq_tensor_info t;

    snprintf(path, sizeof path, "%s/model.safetensors", src);
    cr_assert_eq(gptq_safetensors_open(NULL, path, &st), GPTQ_OK);
    cr_assert_eq(gptq_safetensors_writer_create(NULL, &w), GPTQ_OK);
    for (int64_t i = 0; i < gptq_safetensors_count(st); i++) {
        gptq_safetensors_info(st, i, &t);
        if (fn)
            fn(w, &t, user);
        else
            add(w, t.name, t.dtype, t.ndim, t.shape, t.data, t.nbytes);
    }
    snprintf(path, sizeof path, "%s/%s", dir, file);
    cr_assert_eq(gptq_safetensors_writer_write(NULL, w, path), GPTQ_OK);
    gptq_safetensors_writer_free(w);
    gptq_safetensors_free(st);
    while (nkept > 0)
        free(kept[--nkept]);
}

static const char *build(const char *name, const char *src, const char *patch, tensor_fn fn,
                         void *user)
{
    const char *dir = fresh_dir(name);
    write_config(dir, "config.json", src, patch);
    write_weights(dir, "model.safetensors", src, fn, user);
    return dir;
}

/* Opening `dir` fails with `status` and a message holding `a` and `b` (b may be NULL). */
static void expect_fail(const char *dir, int status, const char *a, const char *b)
{
    gptq_ctx *ctx = ctx_new();
    gptq_model *m = (gptq_model *)0x1;
    int rc = gptq_model_open(ctx, dir, &m);
    const char *msg = gptq_ctx_last_error(ctx);
    cr_assert_eq(rc, status, "status %d (%s), want %d", rc, msg, status);
    cr_assert_null(m);
    cr_assert(strstr(msg, a) != NULL, "message '%s' lacks '%s'", msg, a);
    cr_assert(!b || strstr(msg, b) != NULL, "message '%s' lacks '%s'", msg, b);
    gptq_ctx_free(ctx);
}

static gptq_model *open_ok(gptq_ctx *ctx, const char *dir)
{
    gptq_model *m = NULL;
    int rc = gptq_model_open(ctx, dir, &m);
    cr_assert_eq(rc, GPTQ_OK, "open %s: %s", dir, gptq_ctx_last_error(ctx));
    return m;
}

/* ---- the bundled models ---------------------------------------------------------- */

/* The float32 tensor `name` read straight from the source file (caller frees). */
static float *source_f32(const char *src, const char *name, size_t n)
{
    char path[1200];
    gptq_safetensors *st;
    float *x = malloc(n * sizeof *x);
    snprintf(path, sizeof path, "%s/model.safetensors", src);
    cr_assert_eq(gptq_safetensors_open(NULL, path, &st), GPTQ_OK);
    cr_assert_eq(gptq_safetensors_read_f32(NULL, st, name, x, n), GPTQ_OK, "%s", name);
    gptq_safetensors_free(st);
    return x;
}

Test(model_open, tiny_llama_bytes)
{
    gptq_ctx *ctx = ctx_new();
    gptq_model *m = open_ok(ctx, TINY);
    const gptq__model_config *c = &m->cfg;
    float *up = source_f32(TINY, "model.layers.2.mlp.up_proj.weight", 768 * 256);

    cr_assert_str_eq(gptq_model_architecture(m), "LlamaForCausalLM");
    cr_assert(gptq_model_num_layers(m) == 4 && gptq_model_hidden_size(m) == 256 &&
              gptq_model_vocab_size(m) == 256 && gptq_model_is_quantized(m) == 0);
    cr_assert(c->inter == 768 && c->n_kv_heads == 4 && c->head_dim == 64 && c->max_pos == 512);
    cr_assert(c->rope_type == GPTQ_ROPE_NONE && c->rms_eps == 1e-5 && c->rope_theta == 10000.0);
    cr_assert(c->config_text && strstr(c->config_text, "\"vocab_size\": 256"));
    cr_assert_null(m->lm_head, "lm_head is read when the head is first used");
    cr_assert_eq(gptq__head_load(ctx, m), GPTQ_OK);
    cr_assert_not_null(m->lm_head, "untied: lm_head is its own tensor");
    cr_assert(gptq__all_finite(m->norm, 256) && gptq__all_finite(m->embed, 256 * 256));
    for (int i = 0; i < 4; i++) {
        cr_assert(m->layers[i].input_norm && gptq__all_finite(m->layers[i].post_norm, 256));
        cr_assert(!m->layers[i].loaded && !m->layers[i].lin[GPTQ_LIN_Q].w, "read on demand");
    }
    cr_assert(m->layers[0].lin[GPTQ_LIN_DOWN].out == 256);
    cr_assert(m->layers[0].lin[GPTQ_LIN_DOWN].in == 768);

    cr_assert_eq(gptq__layer_load(ctx, m, 2), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    cr_assert_eq(m->layers[2].loaded, 1);
    for (int j = 0; j < GPTQ_LIN_COUNT; j++) {
        const gptq__linear *l = &m->layers[2].lin[j];
        cr_assert(l->w && !l->bias && !l->quantized, "%s", gptq__lin_names[j]);
    }
    cr_assert_eq(memcmp(up, m->layers[2].lin[GPTQ_LIN_UP].w, 768 * 256 * sizeof(float)), 0);
    gptq__layer_unload(m, 2);
    cr_assert(!m->layers[2].loaded && !m->layers[2].lin[GPTQ_LIN_UP].w);
    cr_assert_not_null(m->layers[2].input_norm, "norms stay resident");
    cr_assert_eq(gptq__layer_load(ctx, m, 4), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gptq__layer_load(ctx, m, -1), GPTQ_ERR_INVALID_ARGUMENT);
    free(up);
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}

Test(model_open, stories260k_gqa_tied)
{
    gptq_ctx *ctx = ctx_new();
    gptq_model *m = open_ok(ctx, STORIES);
    const gptq__model_config *c = &m->cfg;
    float *emb = source_f32(STORIES, "model.embed_tokens.weight", 512 * 64);

    cr_assert_str_eq(gptq_model_architecture(m), "LlamaForCausalLM");
    cr_assert(gptq_model_num_layers(m) == 5 && gptq_model_hidden_size(m) == 64 &&
              gptq_model_vocab_size(m) == 512);
    cr_assert(c->n_heads == 8 && c->n_kv_heads == 4 && c->head_dim == 8 && c->inter == 172);
    cr_assert_eq(c->tie_embeddings, 1);
    cr_assert_eq(gptq__head_load(ctx, m), GPTQ_OK);
    cr_assert_null(m->lm_head, "tied: the head is the embedding");
    cr_assert_eq(memcmp(emb, m->embed, sizeof(float) * 512 * 64), 0);
    cr_assert(m->layers[0].lin[GPTQ_LIN_K].out == 32 && m->layers[0].lin[GPTQ_LIN_K].in == 64);
    cr_assert_eq(gptq__layer_load(ctx, m, 4), GPTQ_OK);
    cr_assert_not_null(m->layers[4].lin[GPTQ_LIN_V].w);
    gptq__layer_unload(m, 4);
    free(emb);
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}

/* ---- broken config.json ---------------------------------------------------------- */

Test(model_open, missing_directory_and_files)
{
    const char *dir;
    gptq_model *m = NULL;

    cr_assert_eq(gptq_model_open(NULL, NULL, &m), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gptq_model_open(NULL, TINY, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    gptq_model_free(NULL);
    cr_assert(!gptq_model_architecture(NULL) && !gptq_model_num_layers(NULL));
    expect_fail(GPTQ_TEST_TMP "/no/such/model", GPTQ_ERR_NOT_FOUND, "no/such/model", NULL);
    expect_fail(TINY "/config.json", GPTQ_ERR_NOT_FOUND, "not a directory", NULL);
    dir = fresh_dir("no_config");
    write_weights(dir, "model.safetensors", STORIES, NULL, NULL);
    expect_fail(dir, GPTQ_ERR_NOT_FOUND, "config.json", NULL);
    dir = fresh_dir("no_weights");
    write_config(dir, "config.json", STORIES, NULL);
    expect_fail(dir, GPTQ_ERR_NOT_FOUND, "model.safetensors", "model.safetensors.index.json");
}

typedef struct config_case {
    const char *patch;
    int status;
    const char *a, *b;
} config_case;

static const config_case config_cases[] = {
    {"{\"architectures\": [\"GPT2LMHeadModel\"]}", GPTQ_ERR_NOT_SUPPORTED,
     "config.json: unknown architecture 'GPT2LMHeadModel'", NULL},
    {"{\"architectures\": \"__delete__\", \"model_type\": \"gpt2\"}", GPTQ_ERR_NOT_SUPPORTED,
     "unknown model_type 'gpt2'", NULL},
    {"{\"architectures\": []}", GPTQ_ERR_MALFORMED, "config.json: architectures", NULL},
    {"{\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0}}", GPTQ_ERR_NOT_SUPPORTED,
     "config.json: rope_scaling type 'yarn'", NULL},
    {"{\"rope_scaling\": {\"rope_type\": \"dynamic\", \"factor\": 2}}", GPTQ_ERR_NOT_SUPPORTED,
     "'dynamic'", NULL},
    {"{\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, \"high_freq_factor\": 4, "
     "\"original_max_position_embeddings\": 8192}}",
     GPTQ_ERR_MALFORMED, "rope_scaling: low_freq_factor is missing", NULL},
    {"{\"rope_scaling\": {\"type\": \"linear\", \"factor\": -1}}", GPTQ_ERR_MALFORMED,
     "factor must be a positive number", NULL},
    {"{\"hidden_size\": 0}", GPTQ_ERR_MALFORMED,
     "config.json: hidden_size must be a positive integer", NULL},
    {"{\"hidden_size\": \"64\"}", GPTQ_ERR_MALFORMED,
     "config.json: hidden_size must be a positive integer", NULL},
    {"{\"vocab_size\": \"__delete__\"}", GPTQ_ERR_MALFORMED, "config.json: vocab_size is missing",
     NULL},
    {"{\"num_key_value_heads\": 3}", GPTQ_ERR_MALFORMED, "num_key_value_heads 3", NULL},
    {"{\"num_attention_heads\": 7}", GPTQ_ERR_MALFORMED, "not divisible", NULL},
    {"{\"tie_word_embeddings\": 1}", GPTQ_ERR_MALFORMED,
     "tie_word_embeddings must be true or false", NULL},
    {"{\"num_hidden_layers\": 100000000}", GPTQ_ERR_NOT_SUPPORTED, "num_hidden_layers", NULL},
    /* A Qwen2 model has q/k/v biases, which this Llama checkpoint lacks. */
    {"{\"architectures\": [\"Qwen2ForCausalLM\"]}", GPTQ_ERR_NOT_FOUND,
     "model.safetensors: no tensor 'model.layers.0.self_attn.q_proj.bias'", NULL},
    {"{\"attention_bias\": true}", GPTQ_ERR_NOT_FOUND, "self_attn.q_proj.bias", NULL},
    /* Untied, but there is no lm_head.weight. */
    {"{\"tie_word_embeddings\": false}", GPTQ_ERR_NOT_FOUND, "no tensor 'lm_head.weight'", NULL},
    {"{\"num_hidden_layers\": 6}", GPTQ_ERR_NOT_FOUND, "model.layers.5.input_layernorm.weight",
     NULL},
    {"{\"intermediate_size\": 171}", GPTQ_ERR_SHAPE,
     "tensor 'model.layers.0.mlp.gate_proj.weight' has shape [172, 64], config.json implies "
     "[171, 64]",
     NULL},
    {"{\"quantization_config\": {\"quant_method\": \"awq\", \"bits\": 4}}", GPTQ_ERR_NOT_SUPPORTED,
     "config.json: quantization_config: quant_method 'awq'", NULL},
    {"{\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4, "
     "\"checkpoint_format\": \"marlin\"}}",
     GPTQ_ERR_NOT_SUPPORTED, "checkpoint_format 'marlin'", NULL},
    {"{\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 5}}", GPTQ_ERR_NOT_SUPPORTED,
     "bits = 5", NULL},
    {"{\"quantization_config\": {\"quant_method\": \"gptq\", \"group_size\": 32}}",
     GPTQ_ERR_MALFORMED, "quantization_config: bits is missing", NULL},
};

Test(model_open, bad_config)
{
    const char *dir = fresh_dir("bad_config");
    char path[1200];
    FILE *f;

    write_weights(dir, "model.safetensors", STORIES, NULL, NULL);
    for (size_t i = 0; i < sizeof config_cases / sizeof config_cases[0]; i++) {
        const config_case *c = &config_cases[i];
        write_config(dir, "config.json", STORIES, c->patch);
        expect_fail(dir, c->status, c->a, c->b);
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    f = fopen(path, "w");
    fputs("{\"architectures\": [\"LlamaForCausalLM\"],\n \"vocab_size\": 512,,}", f);
    fclose(f);
    expect_fail(dir, GPTQ_ERR_MALFORMED, "config.json: line 2", NULL);
}

Test(model_open, accepted_config_variants)
{
    const char *dir = fresh_dir("good_config");
    gptq_ctx *ctx = ctx_new();
    gptq_model *m;

    write_weights(dir, "model.safetensors", STORIES, NULL, NULL);
    write_config(dir, "config.json", STORIES,
                 "{\"architectures\": \"__delete__\", \"model_type\": \"mistral\", "
                 "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}, \"head_dim\": 8, "
                 "\"rms_norm_eps\": \"__delete__\"}");
    m = open_ok(ctx, dir);
    cr_assert_str_eq(gptq_model_architecture(m), "MistralForCausalLM");
    cr_assert_eq(m->cfg.rope_type, GPTQ_ROPE_LINEAR);
    cr_assert_eq(m->cfg.rope_factor, 2.0);
    cr_assert_eq(m->cfg.rms_eps, 1e-6, "the default");
    gptq_model_free(m);

    /* The k/v shapes [32, 64] need 4 kv heads; the default (= heads) implies [64, 64]. */
    write_config(dir, "config.json", STORIES, "{\"num_key_value_heads\": null}");
    expect_fail(dir, GPTQ_ERR_SHAPE, "self_attn.k_proj.weight' has shape [32, 64]", "[64, 64]");

    write_config(dir, "config.json", STORIES,
                 "{\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, "
                 "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
                 "\"original_max_position_embeddings\": 8192}}");
    m = open_ok(ctx, dir);
    cr_assert_eq(m->cfg.rope_type, GPTQ_ROPE_LLAMA3);
    cr_assert_eq(m->cfg.rope_high_freq_factor, 4.0);
    cr_assert_eq(m->cfg.rope_original_max_pos, 8192);
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}

/* ---- broken tensors -------------------------------------------------------------- */

/* One tensor changed: dropped, its last column cut off, or stored as I8 (zeros). */
enum { DROP, CUT, INT8 };
typedef struct edit {
    const char *name;
    int what;
} edit;

static void t_edit(gptq_safetensors_writer *w, const gptq_tensor_info *t, void *user)
{
    const edit *e = user;
    int64_t cut[2] = {t->shape[0], t->shape[1] - 1};
    if (strcmp(t->name, e->name) != 0)
        add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes);
    else if (e->what == CUT)
        add(w, t->name, t->dtype, 2, cut, t->data, (size_t)(cut[0] * cut[1]) * 4);
    else if (e->what == INT8)
        add(w, t->name, GPTQ_DTYPE_I8, t->ndim, t->shape, scratch((size_t)t->numel),
            (size_t)t->numel);
}

/* Every tensor as BF16 (truncated) except the embedding, which becomes F16. */
static void t_half(gptq_safetensors_writer *w, const gptq_tensor_info *t, void *user)
{
    int f16 = strcmp(t->name, "model.embed_tokens.weight") == 0;
    uint16_t *h = scratch((size_t)t->numel * 2);
    for (int64_t i = 0; i < t->numel; i++) {
        float x;
        uint32_t bits;
        memcpy(&x, (const char *)t->data + 4 * i, 4);
        memcpy(&bits, &x, 4);
        h[i] = f16 ? gptq_fp32_to_fp16(x) : (uint16_t)(bits >> 16);
    }
    add(w, t->name, f16 ? GPTQ_DTYPE_F16 : GPTQ_DTYPE_BF16, t->ndim, t->shape, h,
        (size_t)t->numel * 2);
}

Test(model_open, bad_tensors)
{
    const char *dir;
    char path[1200];

    edit up = {"model.layers.0.mlp.up_proj.weight", CUT};
    edit down = {"model.layers.4.mlp.down_proj.weight", DROP};
    edit norm = {"model.norm.weight", DROP};
    edit o = {"model.layers.1.self_attn.o_proj.weight", INT8};

    dir = build("shape", TINY, NULL, t_edit, &up);
    expect_fail(dir, GPTQ_ERR_SHAPE,
                "model.safetensors: tensor 'model.layers.0.mlp.up_proj.weight' has shape "
                "[768, 255], config.json implies [768, 256]",
                NULL);
    dir = build("missing", STORIES, NULL, t_edit, &down);
    expect_fail(dir, GPTQ_ERR_NOT_FOUND,
                "model.safetensors: no tensor 'model.layers.4.mlp.down_proj.weight'", NULL);
    dir = build("missing_norm", STORIES, NULL, t_edit, &norm);
    expect_fail(dir, GPTQ_ERR_NOT_FOUND, "'model.norm.weight'", NULL);
    dir = build("int8", STORIES, NULL, t_edit, &o);
    expect_fail(dir, GPTQ_ERR_NOT_SUPPORTED,
                "model.safetensors: tensor 'model.layers.1.self_attn.o_proj.weight' has dtype "
                "I8; F32, F16 and BF16 are supported",
                NULL);

    /* Truncated: the reader refuses it, naming the file. */
    dir = fresh_dir("truncated");
    write_config(dir, "config.json", STORIES, NULL);
    write_weights(dir, "model.safetensors", STORIES, NULL, NULL);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(truncate(path, 1044992 - 100), 0);
    expect_fail(dir, GPTQ_ERR_MALFORMED, "model.safetensors", NULL);
}

Test(model_open, half_precision_tensors)
{
    const char *dir = build("half", STORIES, NULL, t_half, NULL);
    gptq_ctx *ctx = ctx_new();
    gptq_model *m = open_ok(ctx, dir);
    float *emb = source_f32(STORIES, "model.embed_tokens.weight", 512 * 64);
    float *q = source_f32(STORIES, "model.layers.3.self_attn.q_proj.weight", 64 * 64);

    for (int i = 0; i < 512 * 64; i++)
        cr_assert_eq(m->embed[i], gptq_fp16_to_fp32(gptq_fp32_to_fp16(emb[i])));
    cr_assert_eq(gptq__layer_load(ctx, m, 3), GPTQ_OK);
    for (int i = 0; i < 64 * 64; i++) {
        uint32_t bits;
        float want;
        memcpy(&bits, &q[i], 4);
        bits &= 0xFFFF0000u;
        memcpy(&want, &bits, 4);
        cr_assert_eq(m->layers[3].lin[GPTQ_LIN_Q].w[i], want, "element %d", i);
    }
    free(emb);
    free(q);
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}

/* ---- shards ---------------------------------------------------------------------- */

typedef struct shard_job {
    int shard;        /* 1 or 2 */
    json_t *map;      /* weight_map being built */
    const char *file;
} shard_job;

/* Layers 0-1 in shard 1; layers 2-3, embeddings, norm and head in shard 2. */
static void t_shard(gptq_safetensors_writer *w, const gptq_tensor_info *t, void *user)
{
    shard_job *job = user;
    int first = strncmp(t->name, "model.layers.", 13) == 0 && atoi(t->name + 13) < 2;
    if (first == (job->shard == 1)) {
        add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes);
        json_object_set_new(job->map, t->name, json_string(job->file));
    }
}

static const char *build_sharded(const char *name, json_t **map_out)
{
    const char *dir = fresh_dir(name);
    shard_job a = {1, json_object(), "model-00001-of-00002.safetensors"};
    shard_job b = {2, a.map, "model-00002-of-00002.safetensors"};
    write_config(dir, "config.json", TINY, NULL);
    write_weights(dir, a.file, TINY, t_shard, &a);
    write_weights(dir, b.file, TINY, t_shard, &b);
    *map_out = a.map;
    return dir;
}

static void write_index(const char *dir, json_t *map)
{
    char path[1200];
    json_t *index = json_pack("{s:{s:i},s:O}", "metadata", "total_size", 14168064, "weight_map",
                              map);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    cr_assert_eq(json_dump_file(index, path, JSON_INDENT(2) | JSON_SORT_KEYS), 0);
    json_decref(index);
}

Test(model_open, sharded_equals_single_file)
{
    json_t *map;
    const char *dir = build_sharded("sharded", &map);
    gptq_ctx *ctx = ctx_new();
    gptq_model *one, *two;

    write_index(dir, map);
    one = open_ok(ctx, TINY);
    two = open_ok(ctx, dir);
    cr_assert_eq(gptq__weights_count(two->src), gptq__weights_count(one->src));
    cr_assert_str_eq(gptq__weights_file_of(two->src, "model.layers.1.mlp.up_proj.weight"),
                     "model-00001-of-00002.safetensors");
    cr_assert_str_eq(gptq__weights_file_of(two->src, "lm_head.weight"),
                     "model-00002-of-00002.safetensors");
    cr_assert_null(gptq__weights_file_of(two->src, "no.such.tensor"));
    cr_assert_eq(memcmp(one->embed, two->embed, 256 * 256 * 4), 0);
    cr_assert_eq(gptq__head_load(ctx, one), GPTQ_OK);
    cr_assert_eq(gptq__head_load(ctx, two), GPTQ_OK);
    cr_assert_eq(memcmp(one->lm_head, two->lm_head, 256 * 256 * 4), 0);
    cr_assert_eq(memcmp(one->norm, two->norm, 256 * 4), 0);
    for (int64_t i = 0; i < 4; i++) {
        cr_assert_eq(memcmp(one->layers[i].input_norm, two->layers[i].input_norm, 256 * 4), 0);
        cr_assert_eq(gptq__layer_load(ctx, one, i), GPTQ_OK);
        cr_assert_eq(gptq__layer_load(ctx, two, i), GPTQ_OK);
        for (int j = 0; j < GPTQ_LIN_COUNT; j++) {
            const gptq__linear *a = &one->layers[i].lin[j], *b = &two->layers[i].lin[j];
            cr_assert_eq(memcmp(a->w, b->w, (size_t)(a->out * a->in) * 4), 0, "%d %d", (int)i, j);
        }
        gptq__layer_unload(one, i);
        gptq__layer_unload(two, i);
    }
    gptq_model_free(one);
    gptq_model_free(two);
    gptq_ctx_free(ctx);
    json_decref(map);
}

Test(model_open, bad_index)
{
    json_t *map;
    const char *dir = build_sharded("bad_index", &map);

    json_object_set_new(map, "model.layers.3.mlp.up_proj.weight",
                        json_string("model-00003-of-00003.safetensors"));
    write_index(dir, map);
    expect_fail(dir, GPTQ_ERR_NOT_FOUND, "model-00003-of-00003.safetensors", "does not exist");

    /* Listed in the wrong shard. */
    json_object_set_new(map, "model.layers.3.mlp.up_proj.weight",
                        json_string("model-00001-of-00002.safetensors"));
    write_index(dir, map);
    expect_fail(dir, GPTQ_ERR_MALFORMED, "'model.layers.3.mlp.up_proj.weight'",
                "model-00001-of-00002.safetensors");

    json_object_set_new(map, "model.layers.3.mlp.up_proj.weight", json_string("../x"));
    write_index(dir, map);
    expect_fail(dir, GPTQ_ERR_MALFORMED, "model.safetensors.index.json", "not a file name");
    json_decref(map);
}

/* ---- GPTQ checkpoints ------------------------------------------------------------ */

/* Every decoder linear RTN-quantized (4 bits, groups of 32) and packed as a v1
 * checkpoint, except layer 4's down_proj, which stays float. `user` is a context. With
 * bad_g_idx, layer 1's q_proj names group 2 of 2 for column 5. */
static int bad_g_idx;

static void t_gptq(gptq_safetensors_writer *w, const gptq_tensor_info *t, void *user)
{
    size_t len = strlen(t->name);
    int64_t out = t->shape[0], in = t->shape[1], qw[2], qz[2], sc[2], gi[1] = {in};
    gptq_packed p = {.bits = 4, .format = GPTQ_FORMAT_V1, .out_features = out, .in_features = in};
    gptq_config cfg;
    gptq_result *r;
    char name[256];
    float *x;

    if (strstr(t->name, "_proj.weight") == NULL ||
        strcmp(t->name, "model.layers.4.mlp.down_proj.weight") == 0) {
        add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes);
        return;
    }
    x = scratch(t->nbytes);
    memcpy(x, t->data, t->nbytes);
    gptq_config_init(&cfg);
    cfg.rtn = 1;
    cfg.group_size = 32;
    cr_assert_eq(gptq_layer_quantize(user, x, out, in, NULL, &cfg, &r), GPTQ_OK);
    p.ngroups = gptq_result_ngroups(r);
    cr_assert_eq(gptq_packed_shape(4, out, in, p.ngroups, qw, qz), GPTQ_OK);
    p.qweight = scratch((size_t)(qw[0] * qw[1]) * 4);
    p.qzeros = scratch((size_t)(qz[0] * qz[1]) * 4);
    p.scales = scratch((size_t)(p.ngroups * out) * 2);
    p.g_idx = scratch((size_t)in * 4);
    cr_assert_eq(gptq_pack_result(NULL, r, GPTQ_PACK_CLEAN, &p), GPTQ_OK);
    gptq_result_free(r);
    if (bad_g_idx && strcmp(t->name, "model.layers.1.self_attn.q_proj.weight") == 0)
        p.g_idx[5] = 2;
    sc[0] = p.ngroups;
    sc[1] = out;
    len -= strlen("weight");
#define PNAME(suffix) (snprintf(name, sizeof name, "%.*s%s", (int)len, t->name, suffix), name)
    add(w, PNAME("qweight"), GPTQ_DTYPE_I32, 2, qw, p.qweight, (size_t)(qw[0] * qw[1]) * 4);
    add(w, PNAME("qzeros"), GPTQ_DTYPE_I32, 2, qz, p.qzeros, (size_t)(qz[0] * qz[1]) * 4);
    add(w, PNAME("scales"), GPTQ_DTYPE_F16, 2, sc, p.scales, (size_t)(sc[0] * sc[1]) * 2);
    add(w, PNAME("g_idx"), GPTQ_DTYPE_I32, 1, gi, p.g_idx, (size_t)in * 4);
#undef PNAME
}

#define QCFG "{\"quant_method\": \"gptq\", \"bits\": 4, \"group_size\": 32, \"desc_act\": false, " \
             "\"sym\": true, \"checkpoint_format\": \"gptq\"}"

Test(model_open, gptq_checkpoint)
{
    gptq_ctx *ctx = ctx_new();
    const char *dir = build("gptq", STORIES, "{\"quantization_config\": " QCFG "}", t_gptq, ctx);
    gptq_model *m = open_ok(ctx, dir);
    gptq_safetensors *st;
    char path[1200];
    const gptq__linear *down, *q;
    int32_t *qw = malloc(8 * 172 * 4);
    json_t *qc;

    cr_assert_eq(gptq_model_is_quantized(m), 1);
    cr_assert(m->qcfg.bits == 4 && m->qcfg.group_size == 32 && m->qcfg.sym == 1);
    cr_assert(m->cfg.q_format == GPTQ_FORMAT_V1 && m->cfg.q_desc_act == 0);
    cr_assert_eq(gptq__layer_load(ctx, m, 4), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    down = &m->layers[4].lin[GPTQ_LIN_DOWN];
    cr_assert(down->quantized == 0 && down->w != NULL, "left unquantized: stays float");
    q = &m->layers[4].lin[GPTQ_LIN_GATE];
    cr_assert(q->quantized == 1 && q->w == NULL && q->packed.qweight != NULL);
    cr_assert(q->packed.bits == 4 && q->packed.format == GPTQ_FORMAT_V1 && q->group_size == 32);
    cr_assert(q->packed.ngroups == 2 && q->packed.out_features == 172 &&
              q->packed.in_features == 64);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(gptq_safetensors_open(NULL, path, &st), GPTQ_OK);
    cr_assert_eq(gptq_safetensors_read_i32(NULL, st, "model.layers.4.mlp.gate_proj.qweight", qw,
                                           8 * 172),
                 GPTQ_OK);
    cr_assert_eq(memcmp(qw, q->packed.qweight, 8 * 172 * 4), 0);
    gptq_safetensors_free(st);
    free(qw);
    gptq__layer_unload(m, 4);
    cr_assert_null(down->w);
    cr_assert_not_null(q->packed.qweight, "packed tensors stay resident");
    cr_assert_eq(gptq__layer_load(ctx, m, 4), GPTQ_OK);
    gptq_model_free(m);

    /* The same options from quantize_config.json (AutoGPTQ's own file). */
    write_config(dir, "config.json", STORIES, NULL);
    snprintf(path, sizeof path, "%s/quantize_config.json", dir);
    qc = json_loads(QCFG, 0, NULL);
    cr_assert_eq(json_dump_file(qc, path, 0), 0);
    json_decref(qc);
    m = open_ok(ctx, dir);
    cr_assert_eq(gptq_model_is_quantized(m), 1);
    gptq_model_free(m);

    /* GPTQ tensors without any quantization config. */
    cr_assert_eq(unlink(path), 0);
    expect_fail(dir, GPTQ_ERR_NOT_FOUND, "quantization_config", "q_proj.qweight");

    /* 8-bit tensors would be twice the size of the 4-bit ones stored. */
    write_config(dir, "config.json", STORIES,
                 "{\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 8, "
                 "\"group_size\": 32}}");
    expect_fail(dir, GPTQ_ERR_SHAPE, "model.layers.0.self_attn.q_proj.qweight", "[16, 64]");

    /* g_idx is data, checked when the layer is read. */
    bad_g_idx = 1;
    dir = build("gptq_g_idx", STORIES, "{\"quantization_config\": " QCFG "}", t_gptq, ctx);
    m = open_ok(ctx, dir);
    cr_assert_eq(gptq__layer_load(ctx, m, 0), GPTQ_OK);
    cr_assert_eq(gptq__layer_load(ctx, m, 1), GPTQ_ERR_MALFORMED);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "'model.layers.1.self_attn.q_proj.g_idx': column 5 "
                                               "is in group 2, outside [0, 2)"),
              "%s", gptq_ctx_last_error(ctx));
    cr_assert(!m->layers[1].loaded && !m->layers[1].lin[GPTQ_LIN_Q].packed.qweight);
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}
