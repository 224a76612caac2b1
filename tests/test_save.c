/*
 * Tests of src/model/save.c and save_config.c: gptq_model_save and
 * gptq_model_save_dequantized.
 *
 * The quantized model is made here, independently of gptq_model_quantize: every linear
 * of a bundled float model is quantized with round-to-nearest through the public layer
 * API and packed into the internal representation the way the pipeline leaves it. The
 * saved files are then checked directly (safetensors reader, jansson) and by opening
 * them again with gptq_model_open.
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

#include "model/model.h"

#define TINY GPTQ_TEST_MODELS "/tiny-llama-bytes"
#define STORIES GPTQ_TEST_MODELS "/stories260K"
#define TMP GPTQ_TEST_TMP "/save"

/* Warnings that name the AutoGPTQ layout's multiple-of-32 rule, from the log. */
static int warn_32;

static void on_log(void *user, int32_t level, const char *msg)
{
    (void)user;
    if (level == GPTQ_LOG_WARN && strstr(msg, "multiples of 32"))
        warn_32++;
}

static gptq_ctx *new_ctx(void)
{
    gptq_ctx_options o;
    gptq_ctx *ctx = NULL;
    char err[256];
    gptq_ctx_options_init(&o);
    o.log = on_log;
    o.threads = 2;
    cr_assert_eq(gptq_ctx_create(&o, &ctx, err, sizeof err), GPTQ_OK, "%s", err);
    return ctx;
}

static int rm_entry(const char *p, const struct stat *s, int t, struct FTW *f)
{
    (void)s, (void)t, (void)f;
    return remove(p);
}

/* A fresh, empty TMP/<name>/ and the path of <name>/<leaf> in `out`. */
static void fresh(const char *name, const char *leaf, char *out, size_t size)
{
    char base[512];
    mkdir(GPTQ_TEST_TMP, 0777);
    mkdir(TMP, 0777);
    snprintf(base, sizeof base, TMP "/%s", name);
    nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    cr_assert_eq(mkdir(base, 0777), 0);
    cr_assert_lt((size_t)snprintf(out, size, "%s/%s", base, leaf), size);
}

static int exists(const char *dir, const char *file)
{
    char p[1024];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, file);
    return stat(p, &st) == 0;
}

static gptq_model *open_model(gptq_ctx *ctx, const char *dir)
{
    gptq_model *m = NULL;
    int rc = gptq_model_open(ctx, dir, &m);
    cr_assert_eq(rc, GPTQ_OK, "open %s: %s", dir, gptq_ctx_last_error(ctx));
    return m;
}

/* Quantize every linear with RTN (4-bit, group 128) and keep only its packed tensors,
 * as gptq_model_quantize leaves a model. */
static void quantize_rtn(gptq_ctx *ctx, gptq_model *m, int32_t sym, int32_t format)
{
    gptq_config cfg;
    gptq_config_init(&cfg);
    cfg.rtn = 1;
    cfg.sym = sym;
    for (int64_t i = 0; i < m->cfg.n_layers; i++) {
        cr_assert_eq(gptq__layer_load(ctx, m, i), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
        for (int j = 0; j < GPTQ_LIN_COUNT; j++) {
            gptq__linear *l = &m->layers[i].lin[j];
            gptq_result *r = NULL;
            gptq_packed pk;
            int64_t qw[2], qz[2];
            cr_assert_eq(gptq_layer_quantize(ctx, l->w, l->out, l->in, NULL, &cfg, &r), GPTQ_OK);
            memset(&pk, 0, sizeof pk);
            pk.bits = cfg.bits;
            pk.format = format;
            pk.out_features = l->out;
            pk.in_features = l->in;
            pk.ngroups = gptq_result_ngroups(r);
            cr_assert_eq(gptq_packed_shape(4, l->out, l->in, pk.ngroups, qw, qz), GPTQ_OK);
            pk.qweight = gptq__alloc(ctx, (size_t)(qw[0] * qw[1]) * 4, "qweight");
            pk.qzeros = gptq__alloc(ctx, (size_t)(qz[0] * qz[1]) * 4, "qzeros");
            pk.scales = gptq__alloc(ctx, (size_t)(pk.ngroups * l->out) * 2, "scales");
            pk.g_idx = gptq__alloc(ctx, (size_t)l->in * 4, "g_idx");
            cr_assert_eq(gptq_pack_result(ctx, r, GPTQ_PACK_CLEAN, &pk), GPTQ_OK);
            gptq_result_free(r);
            gptq__free(l->w);
            l->w = NULL;
            l->packed = pk;
            l->quantized = 1;
            l->group_size = cfg.group_size;
        }
        gptq__layer_unload(m, i);
    }
    m->quantized = 1;
    m->qcfg = cfg;
    m->true_sequential = 1;
}

static int save(gptq_ctx *ctx, gptq_model *m, const char *dir, int32_t format, int64_t shard,
                int32_t force)
{
    gptq_save_options o;
    gptq_save_options_init(&o);
    o.format = format;
    o.force = force;
    if (shard)
        o.max_shard_bytes = shard;
    return gptq_model_save(ctx, m, dir, &o);
}

/* ---- a saved checkpoint: its files, possibly sharded ------------------------------ */

typedef struct ckpt {
    gptq_safetensors *st[64];
    char file[64][64];
    int n;
    json_t *index; /* NULL for one file */
} ckpt;

static int cmp_str(const void *a, const void *b) { return strcmp(a, b); }

static void ckpt_open(gptq_ctx *ctx, const char *dir, ckpt *c)
{
    char path[1024];
    memset(c, 0, sizeof *c);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    c->index = json_load_file(path, 0, NULL);
    if (!c->index) {
        snprintf(c->file[0], sizeof c->file[0], "model.safetensors");
        c->n = 1;
    } else {
        /* The shards are the files the weight map names; they must be numbered 1..n. */
        const char *key;
        json_t *v;
        cr_assert(!exists(dir, "model.safetensors"));
        json_object_foreach(json_object_get(c->index, "weight_map"), key, v) {
            int k = 0;
            while (k < c->n && strcmp(c->file[k], json_string_value(v)) != 0)
                k++;
            if (k == c->n) {
                cr_assert(c->n < 64);
                snprintf(c->file[c->n++], sizeof c->file[0], "%s", json_string_value(v));
            }
        }
        qsort(c->file, (size_t)c->n, sizeof c->file[0], cmp_str);
        for (int k = 0; k < c->n; k++) {
            char want[64];
            snprintf(want, sizeof want, "model-%05d-of-%05d.safetensors", k + 1, c->n);
            cr_assert_str_eq(c->file[k], want);
        }
    }
    for (int k = 0; k < c->n; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, c->file[k]);
        cr_assert_eq(gptq_safetensors_open(ctx, path, &c->st[k]), GPTQ_OK, "%s: %s", path,
                     gptq_ctx_last_error(ctx));
        cr_assert_str_eq(gptq_safetensors_metadata(c->st[k], "format"), "pt");
    }
}

static void ckpt_close(ckpt *c)
{
    for (int k = 0; k < c->n; k++)
        gptq_safetensors_free(c->st[k]);
    json_decref(c->index);
}

/* Tensor `name` (which must exist once), or 0 when absent. */
static int ckpt_find(const ckpt *c, const char *name, gptq_tensor_info *info)
{
    gptq_tensor_info unused;
    int found = 0;
    if (!info)
        info = &unused;
    for (int k = 0; k < c->n; k++) {
        if (gptq_safetensors_find(c->st[k], name, info) == GPTQ_OK) {
            found++;
            if (c->index)
                cr_assert_str_eq(json_string_value(json_object_get(
                                     json_object_get(c->index, "weight_map"), name)),
                                 c->file[k], "%s is in %s", name, c->file[k]);
        }
    }
    cr_assert(found <= 1, "%s is stored %d times", name, found);
    return found;
}

static int64_t ckpt_count(const ckpt *c)
{
    int64_t n = 0;
    for (int k = 0; k < c->n; k++)
        n += gptq_safetensors_count(c->st[k]);
    return n;
}

static void expect_tensor(const ckpt *c, const char *name, int32_t dtype, int64_t d0, int64_t d1,
                          const void *bytes)
{
    gptq_tensor_info t;
    cr_assert(ckpt_find(c, name, &t), "%s missing", name);
    cr_assert_eq(t.dtype, dtype, "%s: dtype %s", name, gptq_dtype_name(t.dtype));
    cr_assert_eq(t.ndim, d1 ? 2 : 1, "%s: ndim %d", name, t.ndim);
    cr_assert(t.shape[0] == d0 && (!d1 || t.shape[1] == d1), "%s: shape [%lld, %lld]", name,
              (long long)t.shape[0], (long long)(t.ndim > 1 ? t.shape[1] : 0));
    if (bytes)
        cr_assert(memcmp(t.data, bytes, t.nbytes) == 0, "%s: bytes differ", name);
}

/* The in-memory packed tensors of every linear are in the checkpoint, byte for byte;
 * qzeros as `zeros_word` everywhere when non-zero (symmetric), else as the model's. */
static void expect_linears(const ckpt *c, const gptq_model *m, uint32_t zeros_word)
{
    for (int64_t i = 0; i < m->cfg.n_layers; i++) {
        for (int j = 0; j < GPTQ_LIN_COUNT; j++) {
            const gptq__linear *l = &m->layers[i].lin[j];
            const gptq_packed *pk = &l->packed;
            int64_t qw[2], qz[2];
            gptq_tensor_info t;
            char p[128], n[160];
            snprintf(p, sizeof p, "model.layers.%lld.%s", (long long)i, gptq__lin_names[j]);
            cr_assert_eq(gptq_packed_shape(4, l->out, l->in, pk->ngroups, qw, qz), GPTQ_OK);
            cr_assert_eq(qw[0], (l->in * 4 + 31) / 32);
            snprintf(n, sizeof n, "%s.qweight", p);
            expect_tensor(c, n, GPTQ_DTYPE_I32, qw[0], l->out, pk->qweight);
            snprintf(n, sizeof n, "%s.scales", p);
            expect_tensor(c, n, GPTQ_DTYPE_F16, pk->ngroups, l->out, pk->scales);
            snprintf(n, sizeof n, "%s.g_idx", p);
            expect_tensor(c, n, GPTQ_DTYPE_I32, l->in, 0, pk->g_idx);
            snprintf(n, sizeof n, "%s.qzeros", p);
            expect_tensor(c, n, GPTQ_DTYPE_I32, pk->ngroups, qz[1], zeros_word ? NULL : pk->qzeros);
            if (zeros_word) {
                cr_assert(ckpt_find(c, n, &t));
                for (int64_t k = 0; k < qz[0] * qz[1]; k++) {
                    /* The last word of a row is zero-padded past R fields. */
                    const int64_t bits = l->out * 4 - 32 * (k % qz[1]);
                    const uint32_t want = bits >= 32 ? zeros_word
                                                     : zeros_word & ((1u << bits) - 1u);
                    uint32_t word;
                    memcpy(&word, (const char *)t.data + 4 * k, 4);
                    cr_assert_eq(word, want, "%s[%lld] = %08x", n, (long long)k, word);
                }
            }
            snprintf(n, sizeof n, "%s.weight", p);
            cr_assert(!ckpt_find(c, n, &t), "%s must not be stored", n);
        }
    }
}

static json_t *load_json(const char *dir, const char *file)
{
    char p[1024];
    json_error_t e;
    json_t *j;
    snprintf(p, sizeof p, "%s/%s", dir, file);
    j = json_load_file(p, JSON_REJECT_DUPLICATES, &e);
    cr_assert_not_null(j, "%s: %s", p, e.text);
    return j;
}

/* ---- the checkpoint ------------------------------------------------------------------ */

Test(save, config_and_tensors)
{
    gptq_ctx *ctx = new_ctx();
    gptq_model *m = open_model(ctx, TINY);
    char dir[512], quantizer[64];
    json_t *config, *qc, *q;
    ckpt c;
    static const char *const keys[] = {
        "bits", "group_size", "desc_act", "sym", "damp_percent", "static_groups",
        "true_sequential", "quant_method", "checkpoint_format", "model_name_or_path",
        "model_file_base_name", "lm_head", "pack_dtype", "meta"};

    quantize_rtn(ctx, m, 1, GPTQ_FORMAT_V2);
    fresh("basic", "out", dir, sizeof dir);
    cr_assert_eq(save(ctx, m, dir, GPTQ_FORMAT_V1, 0, 0), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    cr_assert(exists(dir, "model.safetensors") && !exists(dir, "model.safetensors.index.json"));
    cr_assert(!exists(dir, "README.md") && !exists(dir, "calib.txt"), "only tokenizer files copied");

    config = load_json(dir, "config.json");
    qc = load_json(dir, "quantize_config.json");
    q = json_object_get(config, "quantization_config");
    cr_assert(json_equal(q, qc), "quantize_config.json differs from quantization_config");
    cr_assert_eq(json_object_size(q), sizeof keys / sizeof keys[0]);
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        cr_assert_not_null(json_object_get(q, keys[k]), "missing %s", keys[k]);
    cr_assert_eq(json_integer_value(json_object_get(q, "bits")), 4);
    cr_assert_eq(json_integer_value(json_object_get(q, "group_size")), 128);
    cr_assert(json_is_true(json_object_get(q, "sym")) && json_is_false(json_object_get(q, "desc_act")));
    cr_assert(json_is_true(json_object_get(q, "true_sequential")));
    cr_assert(json_is_false(json_object_get(q, "static_groups")));
    cr_assert(json_is_false(json_object_get(q, "lm_head")));
    cr_assert(json_is_null(json_object_get(q, "model_name_or_path")));
    cr_assert_float_eq(json_real_value(json_object_get(q, "damp_percent")), 0.01, 1e-15);
    cr_assert_str_eq(json_string_value(json_object_get(q, "quant_method")), "gptq");
    cr_assert_str_eq(json_string_value(json_object_get(q, "checkpoint_format")), "gptq");
    cr_assert_str_eq(json_string_value(json_object_get(q, "model_file_base_name")), "model");
    cr_assert_str_eq(json_string_value(json_object_get(q, "pack_dtype")), "int32");
    snprintf(quantizer, sizeof quantizer, "libgptq:%s", gptq_version());
    cr_assert_str_eq(json_string_value(json_array_get(
                         json_object_get(json_object_get(q, "meta"), "quantizer"), 0)),
                     quantizer);
    cr_assert_not_null(json_object_get(json_object_get(q, "meta"), "damp_auto_increment"));
    /* The source config is kept, with the dtype of what is stored now. */
    cr_assert_str_eq(json_string_value(json_object_get(config, "torch_dtype")), "float16");
    cr_assert_eq(json_integer_value(json_object_get(config, "hidden_size")), 256);
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(config, "architectures"), 0)),
                     "LlamaForCausalLM");
    json_decref(config);
    json_decref(qc);

    ckpt_open(ctx, dir, &c);
    /* 4 layers x (7 linears x 4 tensors + 2 norms), embed, norm, lm_head. */
    cr_assert_eq(ckpt_count(&c), 4 * (7 * 4 + 2) + 3);
    expect_linears(&c, m, 0x77777777u); /* symmetric 4-bit v1: zero 8 stored as 7 */
    expect_tensor(&c, "model.embed_tokens.weight", GPTQ_DTYPE_F16, 256, 256, NULL);
    expect_tensor(&c, "lm_head.weight", GPTQ_DTYPE_F16, 256, 256, NULL);
    expect_tensor(&c, "model.norm.weight", GPTQ_DTYPE_F16, 256, 0, NULL);
    expect_tensor(&c, "model.layers.3.post_attention_layernorm.weight", GPTQ_DTYPE_F16, 256, 0,
                  NULL);
    {
        /* Float tensors are fl16 of the float32 source. */
        gptq_tensor_info t;
        float *f = malloc(256 * 256 * sizeof *f);
        cr_assert(ckpt_find(&c, "model.embed_tokens.weight", &t));
        cr_assert_eq(gptq__weights_read_f32(ctx, m->src, "model.embed_tokens.weight", 2, t.shape, f),
                     GPTQ_OK);
        for (int64_t k = 0; k < 256 * 256; k++) {
            uint16_t h;
            memcpy(&h, (const char *)t.data + 2 * k, 2);
            cr_assert_eq(h, gptq_fp32_to_fp16(f[k]), "embed[%lld]", (long long)k);
        }
        free(f);
    }
    ckpt_close(&c);
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}

/* gptq_model_open reads the saved directory back; its packed tensors are ours. */
Test(save, reopen_packed_identical)
{
    gptq_ctx *ctx = new_ctx();
    gptq_model *m = open_model(ctx, TINY), *back;
    char dir[512];

    quantize_rtn(ctx, m, 0, GPTQ_FORMAT_V2);
    fresh("reopen", "v2", dir, sizeof dir);
    cr_assert_eq(save(ctx, m, dir, GPTQ_FORMAT_V2, 0, 0), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    back = open_model(ctx, dir);
    cr_assert_eq(gptq_model_is_quantized(back), 1);
    for (int64_t i = 0; i < m->cfg.n_layers; i++) {
        cr_assert_eq(gptq__layer_load(ctx, back, i), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
        for (int j = 0; j < GPTQ_LIN_COUNT; j++) {
            const gptq_packed *a = &m->layers[i].lin[j].packed, *b = &back->layers[i].lin[j].packed;
            int64_t qw[2], qz[2];
            cr_assert(back->layers[i].lin[j].quantized);
            cr_assert_eq(b->format, GPTQ_FORMAT_V2);
            cr_assert_eq(b->ngroups, a->ngroups);
            gptq_packed_shape(4, a->out_features, a->in_features, a->ngroups, qw, qz);
            cr_assert(memcmp(a->qweight, b->qweight, (size_t)(qw[0] * qw[1]) * 4) == 0);
            cr_assert(memcmp(a->qzeros, b->qzeros, (size_t)(qz[0] * qz[1]) * 4) == 0);
            cr_assert(memcmp(a->scales, b->scales, (size_t)(a->ngroups * a->out_features) * 2) == 0);
            cr_assert(memcmp(a->g_idx, b->g_idx, (size_t)a->in_features * 4) == 0);
        }
        gptq__layer_unload(back, i);
    }
    gptq_model_free(back);
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}

/* Asymmetric zero points (0 among them) survive v1 -> v2 -> v1 through saved files. */
Test(save, v1_v2_v1_round_trip)
{
    gptq_ctx *ctx = new_ctx();
    gptq_model *m = open_model(ctx, TINY), *a, *b;
    char d1[512], d2[512], d3[512];
    ckpt c1, c2, c3;
    json_t *q;

    quantize_rtn(ctx, m, 0, GPTQ_FORMAT_V2);
    fresh("roundtrip", "v1", d1, sizeof d1);
    snprintf(d2, sizeof d2, TMP "/roundtrip/v2");
    snprintf(d3, sizeof d3, TMP "/roundtrip/v1-again");
    cr_assert_eq(save(ctx, m, d1, GPTQ_FORMAT_V1, 0, 0), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    a = open_model(ctx, d1);
    cr_assert_eq(save(ctx, a, d2, GPTQ_FORMAT_V2, 0, 0), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    b = open_model(ctx, d2);
    cr_assert_eq(save(ctx, b, d3, GPTQ_FORMAT_V1, 0, 0), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    q = load_json(d2, "quantize_config.json");
    cr_assert_str_eq(json_string_value(json_object_get(q, "checkpoint_format")), "gptq_v2");
    cr_assert(json_is_false(json_object_get(q, "sym")));
    json_decref(q);

    ckpt_open(ctx, d1, &c1);
    ckpt_open(ctx, d2, &c2);
    ckpt_open(ctx, d3, &c3);
    expect_linears(&c2, m, 0); /* v2 bytes equal the in-memory v2 tensors */
    cr_assert_eq(ckpt_count(&c1), ckpt_count(&c3));
    for (int64_t t = 0; t < ckpt_count(&c1); t++) {
        gptq_tensor_info x, y;
        gptq_safetensors_info(c1.st[0], t, &x);
        cr_assert(ckpt_find(&c3, x.name, &y), "%s", x.name);
        cr_assert(x.nbytes == y.nbytes && memcmp(x.data, y.data, x.nbytes) == 0,
                  "%s differs after v1 -> v2 -> v1", x.name);
    }
    ckpt_close(&c1);
    ckpt_close(&c2);
    ckpt_close(&c3);
    gptq_model_free(b);
    gptq_model_free(a);
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}

/* ---- sharding --------------------------------------------------------------------------- */

/* Greedy shards of at most `limit` bytes unless one tensor is larger, an index that
 * maps every tensor to its file, total_size the sum of the tensor bytes. */
static void check_shards(gptq_ctx *ctx, const char *dir, int64_t limit, const gptq_model *m)
{
    ckpt c;
    uint64_t total = 0;
    json_t *map;

    ckpt_open(ctx, dir, &c);
    cr_assert_not_null(c.index, "no index");
    cr_assert_gt(c.n, 1);
    map = json_object_get(c.index, "weight_map");
    cr_assert_eq((int64_t)json_object_size(map), ckpt_count(&c), "weight_map covers every tensor");
    for (int k = 0; k < c.n; k++) {
        uint64_t bytes = 0;
        int64_t n = gptq_safetensors_count(c.st[k]);
        for (int64_t t = 0; t < n; t++) {
            gptq_tensor_info info;
            gptq_safetensors_info(c.st[k], t, &info);
            cr_assert(ckpt_find(&c, info.name, &info)); /* checks the weight_map entry */
            bytes += info.nbytes;
        }
        cr_assert(bytes <= (uint64_t)limit || n == 1, "%s: %llu bytes in %lld tensors", c.file[k],
                  (unsigned long long)bytes, (long long)n);
        total += bytes;
    }
    cr_assert_eq((uint64_t)json_integer_value(
                     json_object_get(json_object_get(c.index, "metadata"), "total_size")),
                 total);
    /* Stable order: the embedding first, lm_head last. */
    cr_assert_not_null(json_object_get(map, "model.embed_tokens.weight"));
    cr_assert_str_eq(json_string_value(json_object_get(map, "model.embed_tokens.weight")), c.file[0]);
    cr_assert_str_eq(json_string_value(json_object_get(map, "lm_head.weight")), c.file[c.n - 1]);
    expect_linears(&c, m, 0x77777777u);
    ckpt_close(&c);
}

Test(save, sharded)
{
    gptq_ctx *ctx = new_ctx();
    gptq_model *m = open_model(ctx, TINY), *back;
    char dir[512], small[512];

    quantize_rtn(ctx, m, 1, GPTQ_FORMAT_V2);
    fresh("sharded", "1MB", dir, sizeof dir);
    cr_assert_eq(save(ctx, m, dir, GPTQ_FORMAT_V1, 1 << 20, 0), GPTQ_OK, "%s",
                 gptq_ctx_last_error(ctx));
    check_shards(ctx, dir, 1 << 20, m);
    back = open_model(ctx, dir); /* the colleague's loader reads the index */
    cr_assert_eq(gptq_model_is_quantized(back), 1);
    gptq_model_free(back);

    /* Tensors over the limit (the 128 KiB embedding) get a shard of their own. */
    snprintf(small, sizeof small, TMP "/sharded/64KiB");
    cr_assert_eq(save(ctx, m, small, GPTQ_FORMAT_V1, 64 << 10, 0), GPTQ_OK, "%s",
                 gptq_ctx_last_error(ctx));
    check_shards(ctx, small, 64 << 10, m);
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}

/* ---- the directory protocol ---------------------------------------------------------- */

/* No ".tmp-" or ".old-" siblings are left in `parent`. */
static void expect_no_leftovers(const char *parent)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -q -e '\\.tmp-' -e '\\.old-'", parent);
    cr_assert_neq(system(cmd), 0, "temporary directories left in %s", parent);
}

Test(save, existing_directory_needs_force)
{
    gptq_ctx *ctx = new_ctx();
    gptq_model *m = open_model(ctx, TINY);
    char dir[512], marker[600], slash[600];
    FILE *f;

    quantize_rtn(ctx, m, 1, GPTQ_FORMAT_V2);
    fresh("exists", "out", dir, sizeof dir);
    cr_assert_eq(mkdir(dir, 0777), 0);
    snprintf(marker, sizeof marker, "%s/marker", dir);
    f = fopen(marker, "w");
    fputs("old", f);
    fclose(f);

    cr_assert_eq(save(ctx, m, dir, GPTQ_FORMAT_V1, 0, 0), GPTQ_ERR_IO);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "exists; pass force to replace it"), "%s",
              gptq_ctx_last_error(ctx));
    cr_assert(exists(dir, "marker") && !exists(dir, "config.json"), "the directory was touched");
    expect_no_leftovers(TMP "/exists");

    /* A trailing slash names the same directory (not a temporary inside it). */
    snprintf(slash, sizeof slash, "%s/", dir);
    cr_assert_eq(save(ctx, m, slash, GPTQ_FORMAT_V1, 0, 1), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    cr_assert(!exists(dir, "marker") && exists(dir, "config.json") &&
              exists(dir, "model.safetensors"));
    expect_no_leftovers(TMP "/exists");
    expect_no_leftovers(dir);

    /* Force also replaces a complete checkpoint with another one, or a file. */
    cr_assert_eq(save(ctx, m, dir, GPTQ_FORMAT_V2, 0, 1), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    cr_assert(exists(dir, "quantize_config.json"));
    f = fopen(TMP "/exists/file", "w");
    fclose(f);
    cr_assert_eq(save(ctx, m, TMP "/exists/file", GPTQ_FORMAT_V1, 0, 0), GPTQ_ERR_IO);
    cr_assert_eq(save(ctx, m, TMP "/exists/file", GPTQ_FORMAT_V1, 0, 1), GPTQ_OK, "%s",
                 gptq_ctx_last_error(ctx));
    cr_assert(exists(TMP "/exists/file", "model.safetensors"));
    expect_no_leftovers(TMP "/exists");
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}

Test(save, refuses_bad_input)
{
    gptq_ctx *ctx = new_ctx();
    gptq_model *m = open_model(ctx, TINY);
    gptq_save_options o;
    char dir[512];

    fresh("refuse", "out", dir, sizeof dir);
    cr_assert_eq(gptq_model_save(ctx, m, dir, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "model is not quantized"));
    cr_assert_eq(gptq_model_save(NULL, m, dir, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gptq_model_save(ctx, NULL, dir, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gptq_model_save(ctx, m, NULL, NULL), GPTQ_ERR_INVALID_ARGUMENT);

    quantize_rtn(ctx, m, 1, GPTQ_FORMAT_V2);
    gptq_save_options_init(&o);
    o.struct_size = 4;
    cr_assert_eq(gptq_model_save(ctx, m, dir, &o), GPTQ_ERR_INVALID_ARGUMENT);
    gptq_save_options_init(&o);
    o.format = 3;
    cr_assert_eq(gptq_model_save(ctx, m, dir, &o), GPTQ_ERR_INVALID_ARGUMENT);
    gptq_save_options_init(&o);
    o.max_shard_bytes = 0;
    cr_assert_eq(gptq_model_save(ctx, m, dir, &o), GPTQ_ERR_INVALID_ARGUMENT);
    gptq_save_options_init(&o);
    o.pack_mode = GPTQ_PACK_AUTOGPTQ;
    o.format = GPTQ_FORMAT_V2;
    cr_assert_eq(gptq_model_save(ctx, m, dir, &o), GPTQ_ERR_NOT_SUPPORTED);
    /* AutoGPTQ-exact bytes need GPTQ's float Q, which a packed v2 model has lost. */
    o.format = GPTQ_FORMAT_V1;
    cr_assert_eq(gptq_model_save(ctx, m, dir, &o), GPTQ_ERR_NOT_SUPPORTED);
    cr_assert(!exists(dir, ""), "nothing may be created on failure");
    expect_no_leftovers(TMP "/refuse");
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}

/* The directory a model is read from, or one holding it, is never replaced (on a copy
 * of the model, so that a bug here cannot delete the bundled one). */
Test(save, never_replaces_its_source)
{
    gptq_ctx *ctx = new_ctx();
    gptq_model *m;
    char dir[512], parent[600], cmd[2048];

    fresh("source", "models/tiny", dir, sizeof dir);
    snprintf(parent, sizeof parent, TMP "/source/models");
    cr_assert_eq(mkdir(parent, 0777), 0);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", TINY, dir);
    cr_assert_eq(system(cmd), 0);
    m = open_model(ctx, dir);
    quantize_rtn(ctx, m, 1, GPTQ_FORMAT_V2);
    cr_assert_eq(save(ctx, m, dir, GPTQ_FORMAT_V1, 0, 1), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(save(ctx, m, parent, GPTQ_FORMAT_V1, 0, 1), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "the model is read from"), "%s",
              gptq_ctx_last_error(ctx));
    cr_assert(exists(dir, "model.safetensors") && exists(dir, "calib.txt"));
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}

/* ---- stories260K: tied embeddings, GQA, dimensions not multiples of 32 ---------------- */

static int same_file(const char *a, const char *b)
{
    char cmd[2048];
    cr_assert_lt((size_t)snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b), sizeof cmd);
    return system(cmd) == 0;
}

Test(save, tied_embeddings_and_tokenizer)
{
    gptq_ctx *ctx = new_ctx();
    gptq_model *m = open_model(ctx, STORIES), *back;
    char dir[512], a[700], b[700];
    json_t *config;
    ckpt c;

    quantize_rtn(ctx, m, 1, GPTQ_FORMAT_V2);
    fresh("stories", "out", dir, sizeof dir);
    warn_32 = 0;
    cr_assert_eq(save(ctx, m, dir, GPTQ_FORMAT_V1, 0, 0), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    /* gate and up (out 172) and down (in 172) of 5 layers. */
    cr_assert_eq(warn_32, 15, "%d warnings about multiples of 32", warn_32);
    ckpt_open(ctx, dir, &c);
    expect_tensor(&c, "model.embed_tokens.weight", GPTQ_DTYPE_F16, 512, 64, NULL);
    cr_assert(!ckpt_find(&c, "lm_head.weight", NULL), "a tied lm_head is not stored");
    cr_assert_eq(ckpt_count(&c), 5 * (7 * 4 + 2) + 2);
    expect_linears(&c, m, 0x77777777u);
    expect_tensor(&c, "model.layers.0.mlp.down_proj.qweight", GPTQ_DTYPE_I32, (172 * 4 + 31) / 32,
                  64, NULL);
    ckpt_close(&c);
    config = load_json(dir, "config.json");
    cr_assert(json_is_true(json_object_get(config, "tie_word_embeddings")));
    json_decref(config);
    for (int k = 0; k < 2; k++) {
        const char *f = k ? "tokenizer_vocab.json" : "tokenizer.bin";
        snprintf(a, sizeof a, STORIES "/%s", f);
        snprintf(b, sizeof b, "%s/%s", dir, f);
        cr_assert(same_file(a, b), "%s not copied", f);
    }
    cr_assert(!exists(dir, "calib_ids.json") && !exists(dir, "source"));
    back = open_model(ctx, dir);
    cr_assert_eq(gptq_model_is_quantized(back), 1);
    gptq_model_free(back);
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}

/* gptq_model_quantize keeps linears whose shapes the common packing cannot hold
 * (stories260K's gate/up with 172 outputs, down with 172 inputs) in float, and the
 * checkpoint names them for other loaders; saved, they come back float. */
Test(save, odd_shapes_stay_float)
{
    gptq_ctx *ctx = new_ctx();
    gptq_model *m = open_model(ctx, STORIES), *back;
    gptq_tokens *calib = NULL, *text = NULL;
    gptq_quantize_options o;
    gptq_eval_result e1 = {.struct_size = sizeof e1}, e2 = {.struct_size = sizeof e2};
    json_t *config, *q, *blocks, *dynamic;
    char dir[512];
    ckpt c;

    cr_assert_eq(gptq_tokens_load(ctx, STORIES "/calib_ids.json", GPTQ_TOKENS_IDS, &calib), GPTQ_OK);
    cr_assert_eq(gptq_tokens_load(ctx, STORIES "/eval_ids.json", GPTQ_TOKENS_IDS, &text), GPTQ_OK);
    gptq_quantize_options_init(&o);
    o.nsamples = 16;
    o.seqlen = 128;
    o.config.group_size = 32;
    cr_assert_eq(gptq_model_quantize(ctx, m, calib, &o), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    cr_assert_eq(gptq_model_is_quantized(m), 1);
    for (int64_t i = 0; i < m->cfg.n_layers; i++)
        for (int j = 0; j < GPTQ_LIN_COUNT; j++)
            cr_assert_eq(m->layers[i].lin[j].quantized, j < GPTQ_LIN_GATE, "layer %lld %s",
                         (long long)i, gptq__lin_names[j]);
    fresh("odd", "out", dir, sizeof dir);
    warn_32 = 0;
    cr_assert_eq(save(ctx, m, dir, GPTQ_FORMAT_V1, 0, 0), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    cr_assert_eq(warn_32, 0, "nothing is written with padded packing");
    ckpt_open(ctx, dir, &c);
    for (int64_t i = 0; i < m->cfg.n_layers; i++) {
        char name[128];
        snprintf(name, sizeof name, "model.layers.%lld.mlp.gate_proj.weight", (long long)i);
        expect_tensor(&c, name, GPTQ_DTYPE_F16, 172, 64, NULL);
        snprintf(name, sizeof name, "model.layers.%lld.mlp.down_proj.weight", (long long)i);
        expect_tensor(&c, name, GPTQ_DTYPE_F16, 64, 172, NULL);
        snprintf(name, sizeof name, "model.layers.%lld.mlp.up_proj.qweight", (long long)i);
        cr_assert(!ckpt_find(&c, name, NULL), "%s", name);
        snprintf(name, sizeof name, "model.layers.%lld.self_attn.k_proj.qweight", (long long)i);
        expect_tensor(&c, name, GPTQ_DTYPE_I32, 64 * 4 / 32, 32, NULL);
    }
    ckpt_close(&c);

    config = load_json(dir, "config.json");
    q = json_object_get(config, "quantization_config");
    blocks = json_object_get(q, "modules_in_block_to_quantize");
    cr_assert_eq(json_array_size(blocks), 2);
    cr_assert_eq(json_array_size(json_array_get(blocks, 0)), 3);
    cr_assert_str_eq(json_string_value(json_array_get(json_array_get(blocks, 0), 0)),
                     "self_attn.q_proj");
    cr_assert_str_eq(json_string_value(json_array_get(json_array_get(blocks, 1), 0)),
                     "self_attn.o_proj");
    dynamic = json_object_get(q, "dynamic");
    cr_assert_eq(json_object_size(dynamic), 3);
    cr_assert(json_is_object(json_object_get(dynamic, "-:model\\.layers\\.\\d+\\.mlp\\.gate_proj")));
    cr_assert(json_is_object(json_object_get(dynamic, "-:model\\.layers\\.\\d+\\.mlp\\.down_proj")));
    json_decref(config);
    config = load_json(dir, "quantize_config.json");
    cr_assert_eq(json_object_size(json_object_get(config, "dynamic")), 3);
    json_decref(config);

    /* Read back: the same model, the float16-stored float linears aside. */
    back = open_model(ctx, dir);
    cr_assert_eq(gptq_model_is_quantized(back), 1);
    cr_assert_eq(gptq_model_eval(ctx, m, text, 256, &e1), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    cr_assert_eq(gptq_model_eval(ctx, back, text, 256, &e2), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    cr_assert_lt(fabs(e1.ppl / e2.ppl - 1), 1e-3, "ppl %.6f in memory, %.6f saved", e1.ppl, e2.ppl);
    for (int j = 0; j < GPTQ_LIN_COUNT; j++)
        cr_assert_eq(back->layers[0].lin[j].quantized, j < GPTQ_LIN_GATE, "%s", gptq__lin_names[j]);
    gptq_model_free(back);
    gptq_model_free(m);
    gptq_tokens_free(calib);
    gptq_tokens_free(text);
    gptq_ctx_free(ctx);
}

/* ---- dequantized ------------------------------------------------------------------------ */

Test(save, dequantized_float16)
{
    gptq_ctx *ctx = new_ctx();
    gptq_model *m = open_model(ctx, STORIES), *back;
    char dir[512];
    json_t *config;

    quantize_rtn(ctx, m, 0, GPTQ_FORMAT_V2);
    fresh("dequant", "out", dir, sizeof dir);
    cr_assert_eq(gptq_model_save_dequantized(ctx, m, dir, 0), GPTQ_OK, "%s",
                 gptq_ctx_last_error(ctx));
    cr_assert(!exists(dir, "quantize_config.json"));
    config = load_json(dir, "config.json");
    cr_assert_null(json_object_get(config, "quantization_config"));
    cr_assert_str_eq(json_string_value(json_object_get(config, "torch_dtype")), "float16");
    json_decref(config);

    back = open_model(ctx, dir);
    cr_assert_eq(gptq_model_is_quantized(back), 0);
    for (int64_t i = 0; i < m->cfg.n_layers; i++) {
        cr_assert_eq(gptq__layer_load(ctx, back, i), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
        for (int j = 0; j < GPTQ_LIN_COUNT; j++) {
            const gptq__linear *l = &m->layers[i].lin[j], *f = &back->layers[i].lin[j];
            const int64_t R = l->out, C = l->in, ng = l->packed.ngroups;
            gptq_unpacked u = {.bits = 4, .out_features = R, .in_features = C, .ngroups = ng};
            u.codes = malloc(sizeof(int32_t) * (size_t)(R * C));
            u.scales = malloc(sizeof(float) * (size_t)(ng * R));
            u.zeros = malloc(sizeof(int32_t) * (size_t)(ng * R));
            u.g_idx = malloc(sizeof(int32_t) * (size_t)C);
            cr_assert_eq(gptq_unpack(ctx, &l->packed, GPTQ_PACK_CLEAN, &u), GPTQ_OK);
            cr_assert_not_null(f->w);
            for (int64_t r = 0; r < R; r++)
                for (int64_t k = 0; k < C; k++) {
                    const int64_t g = (int64_t)u.g_idx[k] * R + r;
                    const float q = u.scales[g] * (float)(u.codes[r * C + k] - u.zeros[g]);
                    cr_assert_eq(f->w[r * C + k], gptq_fp16_to_fp32(gptq_fp32_to_fp16(q)),
                                 "layer %lld %s [%lld, %lld]", (long long)i, gptq__lin_names[j],
                                 (long long)r, (long long)k);
                }
            free(u.codes);
            free(u.scales);
            free(u.zeros);
            free(u.g_idx);
        }
        gptq__layer_unload(back, i);
    }
    gptq_model_free(back);
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}

/* ---- evaluation through the saved files ------------------------------------------------ */

/* Perplexity over the first 4096 bytes of eval.txt (the whole file takes minutes). */
static double ppl(gptq_ctx *ctx, gptq_model *m)
{
    int32_t ids[4096];
    unsigned char text[4096];
    gptq_tokens *t = NULL;
    gptq_eval_result r = {.struct_size = sizeof r};
    FILE *f = fopen(TINY "/eval.txt", "rb");
    cr_assert(f && fread(text, 1, sizeof text, f) == sizeof text);
    fclose(f);
    for (int k = 0; k < 4096; k++)
        ids[k] = text[k];
    cr_assert_eq(gptq_tokens_from_ids(ctx, ids, 4096, &t), GPTQ_OK);
    cr_assert_eq(gptq_model_eval(ctx, m, t, 128, &r), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    gptq_tokens_free(t);
    return r.ppl;
}

Test(save, eval_after_reopen)
{
    gptq_ctx *ctx = new_ctx();
    gptq_model *m = open_model(ctx, TINY), *a, *b;
    char d1[512], d2[512];
    double p_mem, p_v1, p_v2;

    quantize_rtn(ctx, m, 1, GPTQ_FORMAT_V2);
    p_mem = ppl(ctx, m);
    fresh("eval", "v1", d1, sizeof d1);
    snprintf(d2, sizeof d2, TMP "/eval/v2");
    cr_assert_eq(save(ctx, m, d1, GPTQ_FORMAT_V1, 0, 0), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    cr_assert_eq(save(ctx, m, d2, GPTQ_FORMAT_V2, 1 << 20, 0), GPTQ_OK, "%s",
                 gptq_ctx_last_error(ctx));
    a = open_model(ctx, d1);
    b = open_model(ctx, d2);
    p_v1 = ppl(ctx, a);
    p_v2 = ppl(ctx, b);
    printf("ppl: in memory %.6f, saved v1 %.6f, saved v2 sharded %.6f\n", p_mem, p_v1, p_v2);
    /* The same dequantized weights either way; embeddings, norms and lm_head are float16
     * in the files, float32 in memory, hence the small tolerance there. */
    cr_assert_eq(p_v1, p_v2, "v1 %.9g, v2 sharded %.9g", p_v1, p_v2);
    cr_assert(fabs(p_v1 - p_mem) < 1e-3 * p_mem, "saved %.9g, in memory %.9g", p_v1, p_mem);
    gptq_model_free(b);
    gptq_model_free(a);
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}
