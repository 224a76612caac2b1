/*
 * gptq_model_save and gptq_model_save_dequantized: a model's tensors as safetensors
 * files in a new directory (FORMATS.md sections 3.1, 3.5 and 4.4).
 *
 *   plan     one item per output tensor: its name, dtype and shape and where its bytes
 *            come from (a source tensor, a quantized linear's packed tensors, or their
 *            dequantization). Items are sorted embed, layers in order, norm, lm_head and
 *            cut greedily into shards of at most max_shard_bytes.
 *   write    one shard at a time: the bytes are produced (float16 conversion, v1/v2
 *            re-packing of qzeros, dequantization) into buffers that live until that
 *            shard's file is written, so at most one shard is held beside the model.
 *   publish  all files go into a temporary directory beside `dir`, which is renamed
 *            into place at the end: `dir` is either what it was or the complete new
 *            checkpoint, never half of one.
 *
 * The JSON files, the tokenizer copies and the directory protocol are in save_config.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

#define DEFAULT_MAX_SHARD ((int64_t)4 << 30) /* GPTQModel's "4GB", 1024-based */

/* Where an item's bytes come from. */
enum { FROM_SOURCE, FROM_QWEIGHT, FROM_QZEROS, FROM_SCALES, FROM_GIDX, FROM_DEQUANT };

typedef struct save_item {
    char *name;          /* output tensor name (owned) */
    int32_t from;        /* FROM_* */
    const char *src;     /* FROM_SOURCE: the source tensor's name */
    const gptq__linear *lin; /* the other kinds */
    int32_t dtype, ndim;
    int64_t shape[GPTQ_ST_MAX_DIMS];
    size_t nbytes;
    int32_t rank;        /* sort key: 0 embed, 1 decoder layers, 2 norm, 3 lm_head, 4 other */
    int64_t layer;       /* sort key within rank 1 */
    int64_t shard;
    void *buf;           /* bytes produced for the current shard (owned), or NULL */
} save_item;

typedef struct save_plan {
    gptq_ctx *ctx;
    gptq_model *m;
    int32_t format;      /* GPTQ_FORMAT_V1/V2, or 0 for a float16 (dequantized) checkpoint */
    int32_t pack_mode;
    int32_t bits;        /* of every quantized linear */
    int64_t max_shard;
    save_item *items;
    int64_t count, cap, nshards;
    uint64_t total;
    uint8_t *loaded_here; /* [n_layers]: layers this save made resident */
} save_plan;

void gptq_save_options_init(gptq_save_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->struct_size = (uint32_t)sizeof *o;
    o->format = GPTQ_FORMAT_V1;
    o->pack_mode = GPTQ_PACK_CLEAN;
    o->max_shard_bytes = DEFAULT_MAX_SHARD;
}

/* ---- plan ----------------------------------------------------------------------- */

/* Layer index of "model.layers.<i>.<rest>" (rest in *rest), or -1 for other names. */
static int64_t layer_of(const gptq_model *m, const char *name, const char **rest)
{
    static const char prefix[] = "model.layers.";
    int64_t i = 0;
    const char *p = name + sizeof prefix - 1;
    if (strncmp(name, prefix, sizeof prefix - 1) != 0 || *p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++)
        if ((i = i * 10 + (*p - '0')) >= m->cfg.n_layers)
            return -1;
    if (*p != '.')
        return -1;
    *rest = p + 1;
    return i;
}

/* 1 if `name` is a weight tensor of a quantized linear, float (`weight`) or GPTQ
 * (qweight, qzeros, scales, g_idx): the saver writes its own for those. Biases stay. */
static int replaced_by_linear(const gptq_model *m, const char *name)
{
    static const char *const suffixes[] = {"weight", "qweight", "qzeros", "scales", "g_idx"};
    const char *rest;
    int64_t i = layer_of(m, name, &rest);
    if (i < 0)
        return 0;
    for (int j = 0; j < GPTQ_LIN_COUNT; j++) {
        size_t n = strlen(gptq__lin_names[j]);
        if (strncmp(rest, gptq__lin_names[j], n) != 0 || rest[n] != '.')
            continue;
        if (!m->layers[i].lin[j].quantized)
            return 0;
        for (size_t s = 0; s < sizeof suffixes / sizeof suffixes[0]; s++)
            if (strcmp(rest + n + 1, suffixes[s]) == 0)
                return 1;
    }
    return 0;
}

static save_item *plan_add(save_plan *p, const char *name, int32_t from, int32_t dtype,
                           int32_t ndim, const int64_t *shape, const gptq__linear *lin)
{
    save_item *it;
    const char *rest;
    uint64_t numel = 1;
    size_t len = strlen(name);

    if (p->count == p->cap) {
        int64_t cap = p->cap ? 2 * p->cap : 64;
        save_item *items = gptq__alloc(p->ctx, sizeof *items * (size_t)cap, "save plan");
        if (!items)
            return NULL;
        if (p->count)
            memcpy(items, p->items, sizeof *items * (size_t)p->count);
        gptq__free(p->items);
        p->items = items;
        p->cap = cap;
    }
    it = &p->items[p->count];
    memset(it, 0, sizeof *it);
    it->name = gptq__alloc(p->ctx, len + 1, "tensor name");
    if (!it->name)
        return NULL;
    memcpy(it->name, name, len + 1);
    p->count++;
    it->from = from;
    it->lin = lin;
    it->dtype = dtype;
    it->ndim = ndim;
    for (int32_t d = 0; d < ndim; d++)
        numel *= (uint64_t)(it->shape[d] = shape[d]);
    it->nbytes = (size_t)(numel * (uint64_t)gptq_dtype_bits(dtype) / 8);
    it->layer = layer_of(p->m, name, &rest);
    if (strncmp(name, "model.embed_tokens.", 19) == 0)
        it->rank = 0;
    else if (it->layer >= 0)
        it->rank = 1;
    else if (strncmp(name, "model.norm.", 11) == 0)
        it->rank = 2;
    else if (strncmp(name, "lm_head.", 8) == 0)
        it->rank = 3;
    else
        it->rank = 4;
    return it;
}

static int is_float(int32_t dtype)
{
    return dtype == GPTQ_DTYPE_F32 || dtype == GPTQ_DTYPE_F16 || dtype == GPTQ_DTYPE_BF16;
}

/* The source's tensors that are kept: float ones become F16 (the references' load
 * dtype for everything outside the quantized linears), others keep their bytes. */
static int plan_source(save_plan *p)
{
    const gptq_model *m = p->m;
    const int64_t n = gptq__weights_count(m->src);
    for (int64_t t = 0; t < n; t++) {
        const char *name = gptq__weights_name(m->src, t);
        gptq_tensor_info info;
        save_item *it;
        /* A tied lm_head is the embedding; transformers re-ties it at load (§3.5). */
        if (m->cfg.tie_embeddings && strcmp(name, "lm_head.weight") == 0)
            continue;
        if (replaced_by_linear(m, name))
            continue;
        if (!gptq__weights_has(m->src, name, &info))
            return GPTQ_FAIL(p->ctx, GPTQ_ERR_INTERNAL, "%s: tensor %s is listed but not found",
                             m->dir, name);
        it = plan_add(p, name, FROM_SOURCE, is_float(info.dtype) ? GPTQ_DTYPE_F16 : info.dtype,
                      info.ndim, info.shape, NULL);
        if (!it)
            return GPTQ_ERR_OUT_OF_MEMORY;
        it->src = name;
        if (!is_float(info.dtype))
            it->nbytes = info.nbytes;
    }
    return GPTQ_OK;
}

/* Items of a quantized linear: P.qweight, P.qzeros, P.scales, P.g_idx (§3.1), or its
 * dequantized P.weight. */
static int plan_linear(save_plan *p, int64_t i, int j)
{
    const gptq__linear *l = &p->m->layers[i].lin[j];
    const gptq_packed *pk = &l->packed;
    char prefix[96], name[128];
    int64_t qw[2], qz[2], sc[2] = {pk->ngroups, pk->out_features}, gi[1] = {pk->in_features};
    const int64_t w[2] = {l->out, l->in};
    const struct {
        const char *suffix;
        int32_t from, dtype;
        const int64_t *shape;
        int32_t ndim;
    } parts[4] = {{"qweight", FROM_QWEIGHT, GPTQ_DTYPE_I32, qw, 2},
                  {"qzeros", FROM_QZEROS, GPTQ_DTYPE_I32, qz, 2},
                  {"scales", FROM_SCALES, GPTQ_DTYPE_F16, sc, 2},
                  {"g_idx", FROM_GIDX, GPTQ_DTYPE_I32, gi, 1}};

    snprintf(prefix, sizeof prefix, "model.layers.%lld.%s", (long long)i, gptq__lin_names[j]);
    if (!pk->qweight || !pk->qzeros || !pk->scales || !pk->g_idx ||
        pk->out_features != l->out || pk->in_features != l->in)
        return GPTQ_FAIL(p->ctx, GPTQ_ERR_INTERNAL, "%s: packed tensors missing or not %lld x %lld",
                         prefix, (long long)l->out, (long long)l->in);
    if (p->bits == 0)
        p->bits = pk->bits;
    if (pk->bits != p->bits)
        return GPTQ_FAIL(p->ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "%s: %d-bit, but other linears are %d-bit: one quantize_config.json "
                         "cannot describe both",
                         prefix, (int)pk->bits, (int)p->bits);
    GPTQ_TRY(gptq_packed_shape(pk->bits, l->out, l->in, pk->ngroups, qw, qz));
    if (p->format && (l->out % 32 || l->in % 32))
        gptq__log(p->ctx, GPTQ_LOG_WARN,
                  "%s: %lld x %lld is written with padded packing; AutoGPTQ, GPTQModel and "
                  "transformers expect in and out features that are multiples of 32",
                  prefix, (long long)l->out, (long long)l->in);
    if (!p->format) {
        snprintf(name, sizeof name, "%s.weight", prefix);
        return plan_add(p, name, FROM_DEQUANT, GPTQ_DTYPE_F16, 2, w, l) ? GPTQ_OK
                                                                        : GPTQ_ERR_OUT_OF_MEMORY;
    }
    for (int k = 0; k < 4; k++) {
        snprintf(name, sizeof name, "%s.%s", prefix, parts[k].suffix);
        if (!plan_add(p, name, parts[k].from, parts[k].dtype, parts[k].ndim, parts[k].shape, l))
            return GPTQ_ERR_OUT_OF_MEMORY;
    }
    return GPTQ_OK;
}

/* Embed, decoder layers in order, norm, lm_head, others; by name within each. */
static int cmp_items(const void *pa, const void *pb)
{
    const save_item *a = pa, *b = pb;
    if (a->rank != b->rank)
        return a->rank < b->rank ? -1 : 1;
    if (a->layer != b->layer)
        return a->layer < b->layer ? -1 : 1;
    return strcmp(a->name, b->name);
}

/* Greedy filling in order (GPTQModel's streaming_state_dict_to_shards): a tensor that
 * does not fit in the current shard starts the next one, so a tensor larger than the
 * limit ends up alone in its own shard. */
static void plan_shards(save_plan *p)
{
    uint64_t used = 0;
    int64_t shard = 0;
    p->total = 0;
    for (int64_t k = 0; k < p->count; k++)
        p->total += p->items[k].nbytes;
    for (int64_t k = 0; k < p->count; k++) {
        save_item *it = &p->items[k];
        if (p->total > (uint64_t)p->max_shard && k > 0 &&
            used + it->nbytes > (uint64_t)p->max_shard) {
            shard++;
            used = 0;
        }
        it->shard = shard;
        used += it->nbytes;
    }
    p->nshards = shard + 1;
}

static int plan_build(save_plan *p)
{
    gptq_model *m = p->m;
    /* A GPTQ checkpoint's packed tensors are resident only while their layer is. */
    for (int64_t i = 0; i < m->cfg.n_layers; i++) {
        if (m->cfg.quantized && !m->layers[i].loaded) {
            GPTQ_TRY(gptq__layer_load(p->ctx, m, i));
            p->loaded_here[i] = 1;
        }
    }
    GPTQ_TRY(plan_source(p));
    for (int64_t i = 0; i < m->cfg.n_layers; i++)
        for (int j = 0; j < GPTQ_LIN_COUNT; j++)
            if (m->layers[i].lin[j].quantized)
                GPTQ_TRY(plan_linear(p, i, j));
    qsort(p->items, (size_t)p->count, sizeof *p->items, cmp_items);
    plan_shards(p);
    return GPTQ_OK;
}

/* ---- producing the bytes -------------------------------------------------------- */

static void unpacked_free(gptq_unpacked *u)
{
    gptq__free(u->codes);
    gptq__free(u->scales);
    gptq__free(u->zeros);
    gptq__free(u->g_idx);
    memset(u, 0, sizeof *u);
}

/* Codes, float32 scales, true zero points and g_idx of a linear. v1 zero points are
 * read per field, (stored + 1) mod 2^bits: exact for what gptq_model_quantize and
 * CLEAN packing make; the per-word borrow of GPTQModel-written words is not undone. */
static int unpack_linear(gptq_ctx *ctx, const gptq__linear *l, gptq_unpacked *u)
{
    const gptq_packed *pk = &l->packed;
    const size_t rcn = (size_t)(l->out * l->in), gr = (size_t)(pk->ngroups * l->out);
    int rc;
    memset(u, 0, sizeof *u);
    u->bits = pk->bits;
    u->group_size = l->group_size;
    u->out_features = l->out;
    u->in_features = l->in;
    u->ngroups = pk->ngroups;
    u->codes = gptq__alloc(ctx, rcn * sizeof(int32_t), "codes");
    u->scales = gptq__alloc(ctx, gr * sizeof(float), "scales");
    u->zeros = gptq__alloc(ctx, gr * sizeof(int32_t), "zero points");
    u->g_idx = gptq__alloc(ctx, (size_t)l->in * sizeof(int32_t), "g_idx");
    rc = u->codes && u->scales && u->zeros && u->g_idx ? gptq_unpack(ctx, pk, GPTQ_PACK_CLEAN, u)
                                                         : GPTQ_ERR_OUT_OF_MEMORY;
    if (rc != GPTQ_OK)
        unpacked_free(u);
    return rc;
}

/* qzeros in the requested format. Only qzeros differ between v1 and v2 (codes, scales
 * and g_idx are packed the same in both; gptq.h), so the other three tensors are
 * written from the resident ones as they are. */
static int repack_qzeros(save_plan *p, save_item *it)
{
    const gptq__linear *l = it->lin;
    gptq_unpacked u;
    gptq_packed dst;
    int64_t qw[2], qz[2];
    int rc = unpack_linear(p->ctx, l, &u);

    memset(&dst, 0, sizeof dst);
    if (rc == GPTQ_OK)
        rc = gptq_packed_shape(u.bits, l->out, l->in, u.ngroups, qw, qz);
    if (rc == GPTQ_OK) {
        dst.bits = u.bits;
        dst.format = p->format;
        dst.out_features = l->out;
        dst.in_features = l->in;
        dst.ngroups = u.ngroups;
        dst.qweight = gptq__alloc(p->ctx, (size_t)(qw[0] * qw[1]) * sizeof(int32_t), "qweight");
        dst.qzeros = gptq__alloc(p->ctx, it->nbytes, "qzeros");
        dst.scales = gptq__alloc(p->ctx, (size_t)(u.ngroups * l->out) * sizeof(uint16_t), "scales");
        dst.g_idx = gptq__alloc(p->ctx, (size_t)l->in * sizeof(int32_t), "g_idx");
        rc = dst.qweight && dst.qzeros && dst.scales && dst.g_idx
                 ? gptq_pack(p->ctx, &u, p->pack_mode, &dst)
                 : GPTQ_ERR_OUT_OF_MEMORY;
    }
    if (rc == GPTQ_OK) {
        it->buf = dst.qzeros;
        dst.qzeros = NULL;
    }
    unpacked_free(&u);
    gptq__free(dst.qweight);
    gptq__free(dst.qzeros);
    gptq__free(dst.scales);
    gptq__free(dst.g_idx);
    return rc;
}

/* W[r, j] = scale[g_idx[j], r] * (code[r, j] - zero[g_idx[j], r]) in float32, the
 * weights gptq_dequant_matmul computes with, then rounded to float16. */
static int dequantize(save_plan *p, save_item *it)
{
    const gptq__linear *l = it->lin;
    const int64_t R = l->out, C = l->in;
    gptq_unpacked u;
    uint16_t *w;

    GPTQ_TRY(unpack_linear(p->ctx, l, &u));
    w = gptq__alloc(p->ctx, it->nbytes, "dequantized weight");
    if (!w) {
        unpacked_free(&u);
        return GPTQ_ERR_OUT_OF_MEMORY;
    }
    for (int64_t r = 0; r < R; r++) {
        for (int64_t j = 0; j < C; j++) {
            const int64_t g = (int64_t)u.g_idx[j] * R + r;
            const float q = u.scales[g] * (float)(u.codes[r * C + j] - u.zeros[g]);
            w[r * C + j] = gptq__f32_to_f16(q);
        }
    }
    unpacked_free(&u);
    it->buf = w;
    return GPTQ_OK;
}

/* A source tensor as float16 (or its own bytes when it already is, or is not float). */
static int convert_source(save_plan *p, save_item *it, const void **data)
{
    gptq_tensor_info info;
    float *f;
    uint16_t *h;
    int64_t overflow = 0;
    int rc;

    if (!gptq__weights_has(p->m->src, it->src, &info))
        return GPTQ_FAIL(p->ctx, GPTQ_ERR_INTERNAL, "tensor %s disappeared", it->src);
    if (info.dtype == it->dtype) {
        *data = info.data; /* memory-mapped; the writer copies it out unaligned-safe */
        return GPTQ_OK;
    }
    f = gptq__alloc(p->ctx, (size_t)info.numel * sizeof(float), it->name);
    h = gptq__alloc(p->ctx, it->nbytes, it->name);
    rc = f && h ? gptq__weights_read_f32(p->ctx, p->m->src, it->src, info.ndim, info.shape, f)
                : GPTQ_ERR_OUT_OF_MEMORY;
    for (int64_t k = 0; rc == GPTQ_OK && k < info.numel; k++) {
        h[k] = gptq__f32_to_f16(f[k]);
        overflow += (h[k] & 0x7C00) == 0x7C00 && (f[k] - f[k]) == 0.0f; /* finite -> inf */
    }
    gptq__free(f);
    if (rc != GPTQ_OK) {
        gptq__free(h);
        return rc;
    }
    if (overflow)
        gptq__log(p->ctx, GPTQ_LOG_WARN, "%s: %lld values overflow float16 (|x| > 65504)",
                  it->name, (long long)overflow);
    it->buf = h;
    *data = h;
    return GPTQ_OK;
}

static int produce(save_plan *p, save_item *it, const void **data)
{
    const gptq_packed *pk = it->lin ? &it->lin->packed : NULL;
    switch (it->from) {
    case FROM_SOURCE:
        return convert_source(p, it, data);
    case FROM_QWEIGHT:
        *data = pk->qweight;
        return GPTQ_OK;
    case FROM_SCALES:
        *data = pk->scales;
        return GPTQ_OK;
    case FROM_GIDX:
        *data = pk->g_idx;
        return GPTQ_OK;
    case FROM_QZEROS:
        if (pk->format == p->format) {
            *data = pk->qzeros;
            return GPTQ_OK;
        }
        GPTQ_TRY(repack_qzeros(p, it));
        break;
    default:
        GPTQ_TRY(dequantize(p, it));
        break;
    }
    *data = it->buf;
    return GPTQ_OK;
}

/* ---- writing -------------------------------------------------------------------- */

static void shard_name(const save_plan *p, int64_t s, char *out, size_t size)
{
    if (p->nshards == 1)
        snprintf(out, size, "model.safetensors");
    else
        snprintf(out, size, "model-%05lld-of-%05lld.safetensors", (long long)(s + 1),
                 (long long)p->nshards);
}

/* Write items [k0, k1) (one shard) to dir/file. */
static int write_shard(save_plan *p, const char *dir, int64_t k0, int64_t k1, const char *file)
{
    gptq_safetensors_writer *w = NULL;
    char path[4096];
    int rc = gptq_safetensors_writer_create(p->ctx, &w);

    for (int64_t k = k0; rc == GPTQ_OK && k < k1; k++) {
        save_item *it = &p->items[k];
        const void *data = NULL;
        rc = produce(p, it, &data);
        if (rc == GPTQ_OK)
            rc = gptq_safetensors_writer_add(p->ctx, w, it->name, it->dtype, it->ndim, it->shape,
                                             data, it->nbytes);
    }
    if (rc == GPTQ_OK && (size_t)snprintf(path, sizeof path, "%s/%s", dir, file) >= sizeof path)
        rc = GPTQ_FAIL(p->ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: path too long", dir);
    if (rc == GPTQ_OK)
        rc = gptq_safetensors_writer_write(p->ctx, w, path);
    gptq_safetensors_writer_free(w);
    for (int64_t k = k0; k < k1; k++) {
        gptq__free(p->items[k].buf);
        p->items[k].buf = NULL;
    }
    return rc;
}

/* Everything of the checkpoint into `dir` (the temporary directory). */
static int write_all(save_plan *p, const char *dir)
{
    const char **names = NULL, **files = NULL;
    char *file_names = NULL;
    const size_t fname_size = 64;
    int rc = GPTQ_OK;

    if (p->nshards > 1) {
        names = gptq__alloc(p->ctx, sizeof *names * (size_t)p->count, "index");
        files = gptq__alloc(p->ctx, sizeof *files * (size_t)p->count, "index");
        file_names = gptq__alloc(p->ctx, fname_size * (size_t)p->nshards, "shard names");
        if (!names || !files || !file_names)
            rc = GPTQ_ERR_OUT_OF_MEMORY;
    }
    for (int64_t k0 = 0, s = 0; rc == GPTQ_OK && k0 < p->count; s++) {
        char one[64], *fname = file_names ? file_names + (size_t)s * fname_size : one;
        int64_t k1 = k0;
        while (k1 < p->count && p->items[k1].shard == s)
            k1++;
        shard_name(p, s, fname, fname_size);
        for (int64_t k = k0; names && k < k1; k++) {
            names[k] = p->items[k].name;
            files[k] = fname;
        }
        rc = write_shard(p, dir, k0, k1, fname);
        k0 = k1;
    }
    if (rc == GPTQ_OK && p->nshards > 1)
        rc = gptq__save_index(p->ctx, dir, p->count, names, files, p->total);
    if (rc == GPTQ_OK)
        rc = gptq__save_configs(p->ctx, p->m, dir, p->format, p->bits);
    if (rc == GPTQ_OK)
        rc = gptq__save_copy_tokenizer(p->ctx, p->m, dir);
    gptq__free(names);
    gptq__free(files);
    gptq__free(file_names);
    return rc;
}

/* The plan, then every file into a temporary directory that replaces `dir` at the end. */
static int save_dir(save_plan *p, const char *dir, int32_t force)
{
    gptq_ctx *ctx = p->ctx;
    gptq_model *m = p->m;
    char *tmp = NULL;
    int rc = gptq__save_dir_begin(ctx, m, dir, force, &tmp);

    if (rc == GPTQ_OK) {
        p->loaded_here = gptq__calloc(ctx, (size_t)m->cfg.n_layers + 1, "layer flags");
        rc = p->loaded_here ? plan_build(p) : GPTQ_ERR_OUT_OF_MEMORY;
    }
    for (int64_t k = 0; rc == GPTQ_OK && k < p->count; k++)
        if (p->pack_mode == GPTQ_PACK_AUTOGPTQ && p->items[k].from == FROM_QZEROS &&
            p->items[k].lin->packed.format != p->format)
            rc = GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                           "%s: AutoGPTQ-exact packing re-derives codes from GPTQ's float "
                           "weights, which a quantized model no longer has; use "
                           "GPTQ_PACK_CLEAN or GPTQ_PACK_GPTQMODEL",
                           p->items[k].name);
    if (p->format && p->bits == 0)
        p->bits = m->qcfg.bits; /* no linear is quantized: the config is all there is */
    if (rc == GPTQ_OK)
        rc = write_all(p, tmp);
    rc = gptq__save_dir_end(ctx, tmp, dir, force, rc);
    for (int64_t i = 0; p->loaded_here && i < m->cfg.n_layers; i++)
        if (p->loaded_here[i])
            gptq__layer_unload(m, i);
    for (int64_t k = 0; k < p->count; k++) {
        gptq__free(p->items[k].name);
        gptq__free(p->items[k].buf);
    }
    gptq__free(p->items);
    gptq__free(p->loaded_here);
    return rc;
}

/* ---- public functions ----------------------------------------------------------- */

int gptq_model_save(gptq_ctx *ctx, gptq_model *m, const char *dir, const gptq_save_options *opts)
{
    gptq_save_options defaults;
    save_plan p;

    if (!ctx)
        return GPTQ_ERR_INVALID_ARGUMENT;
    if (!m || !dir || !dir[0])
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_model_save: m or dir is NULL");
    if (!opts) {
        gptq_save_options_init(&defaults);
        opts = &defaults;
    }
    if (opts->struct_size < sizeof *opts)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_save_options.struct_size is too small; call "
                         "gptq_save_options_init()");
    if ((opts->format != GPTQ_FORMAT_V1 && opts->format != GPTQ_FORMAT_V2) ||
        opts->pack_mode < GPTQ_PACK_CLEAN || opts->pack_mode > GPTQ_PACK_GPTQMODEL ||
        opts->max_shard_bytes < 1)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "save options: format %d, pack_mode %d or max_shard_bytes %lld is invalid",
                         (int)opts->format, (int)opts->pack_mode, (long long)opts->max_shard_bytes);
    if (opts->pack_mode == GPTQ_PACK_AUTOGPTQ && opts->format != GPTQ_FORMAT_V1)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED, "AutoGPTQ-exact packing writes v1 only");
    if (!m->quantized)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "model is not quantized");
    memset(&p, 0, sizeof p);
    p.ctx = ctx;
    p.m = m;
    p.format = opts->format;
    p.pack_mode = opts->pack_mode;
    p.max_shard = opts->max_shard_bytes;
    return save_dir(&p, dir, opts->force);
}

int gptq_model_save_dequantized(gptq_ctx *ctx, gptq_model *m, const char *dir, int32_t force)
{
    save_plan p;

    if (!ctx)
        return GPTQ_ERR_INVALID_ARGUMENT;
    if (!m || !dir || !dir[0])
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_model_save_dequantized: m or dir is NULL");
    memset(&p, 0, sizeof p);
    p.ctx = ctx;
    p.m = m;
    p.format = 0;
    p.pack_mode = GPTQ_PACK_CLEAN;
    p.max_shard = DEFAULT_MAX_SHARD;
    return save_dir(&p, dir, force);
}
