/*
 * gptq_model: open and validate a model directory, keep the small tensors resident,
 * and load / unload one decoder layer's big ones.
 *
 * Everything a later step could trip over is checked at open (every expected tensor's
 * presence, dtype and shape, for every layer), so a bad checkpoint fails in
 * milliseconds instead of after an hour of quantizing the layers before the bad one.
 * Tensors stay memory-mapped; resident are the embedding, the final norm, lm_head (once
 * the head is first used: quantization never needs it)
 * (unless tied) and all RMSNorm gains. A layer's linears are read (and converted to
 * float32) by gptq__layer_load and dropped by gptq__layer_unload; packed GPTQ tensors,
 * being a fraction of that size, stay once read.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "model.h"

const char *const gptq__lin_names[GPTQ_LIN_COUNT] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};

#define NAME_MAX_LEN 256

/* nn.Linear shapes [out, in] of the Llama-family decoder layer. */
static void lin_dims(const gptq__model_config *c, int j, int64_t *out, int64_t *in)
{
    int64_t q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
    switch (j) {
    case GPTQ_LIN_Q: *out = q; *in = c->hidden; break;
    case GPTQ_LIN_K:
    case GPTQ_LIN_V: *out = kv; *in = c->hidden; break;
    case GPTQ_LIN_O: *out = c->hidden; *in = q; break;
    case GPTQ_LIN_DOWN: *out = c->hidden; *in = c->inter; break;
    default: *out = c->inter; *in = c->hidden; break; /* gate, up */
    }
}

static int lin_has_bias(const gptq__model_config *c, int j)
{
    if (j <= GPTQ_LIN_V)
        return c->qkv_bias;
    return j == GPTQ_LIN_O ? c->o_bias : c->mlp_bias;
}

/* "model.layers.<i>.<module>.<suffix>" (names are short; the buffer is ample). */
static const char *tname(char *buf, int64_t layer, int j, const char *suffix)
{
    snprintf(buf, NAME_MAX_LEN, "model.layers.%lld.%s.%s", (long long)layer, gptq__lin_names[j],
             suffix);
    return buf;
}

/* Shapes of a GPTQ linear's tensors (FORMATS.md section 3.1). */
typedef struct packed_dims {
    int64_t ng, qweight[2], qzeros[2], scales[2], g_idx[1];
} packed_dims;

static void get_packed_dims(const gptq__model_config *c, int64_t out, int64_t in,
                            packed_dims *d)
{
    d->ng = gptq_num_groups(in, c->q_group_size);
    /* bits were validated with the config and the sizes are capped there, so this
     * cannot fail. */
    (void)gptq_packed_shape(c->q_bits, out, in, d->ng, d->qweight, d->qzeros);
    d->scales[0] = d->ng;
    d->scales[1] = out;
    d->g_idx[0] = in;
}

/* A GPTQ checkpoint may leave a module unquantized (P.weight instead of P.qweight). */
static int stored_packed(const gptq_model *m, int64_t layer, int j)
{
    char name[NAME_MAX_LEN];
    return m->cfg.quantized && gptq__weights_has(m->src, tname(name, layer, j, "qweight"), NULL);
}

/* ---- validation at open ---------------------------------------------------------- */

static int check_linear(gptq_ctx *ctx, const gptq_model *m, int64_t layer, int j)
{
    const gptq__weights *w = m->src;
    char name[NAME_MAX_LEN];
    int64_t out, in, wshape[2], bshape[1];

    lin_dims(&m->cfg, j, &out, &in);
    if (stored_packed(m, layer, j)) {
        packed_dims d;
        get_packed_dims(&m->cfg, out, in, &d);
        GPTQ_TRY(gptq__weights_read_raw(ctx, w, tname(name, layer, j, "qweight"), GPTQ_DTYPE_I32,
                                        2, d.qweight, NULL));
        GPTQ_TRY(gptq__weights_read_raw(ctx, w, tname(name, layer, j, "qzeros"), GPTQ_DTYPE_I32,
                                        2, d.qzeros, NULL));
        GPTQ_TRY(gptq__weights_read_raw(ctx, w, tname(name, layer, j, "scales"), GPTQ_DTYPE_F16,
                                        2, d.scales, NULL));
        GPTQ_TRY(gptq__weights_read_raw(ctx, w, tname(name, layer, j, "g_idx"), GPTQ_DTYPE_I32,
                                        1, d.g_idx, NULL));
    } else {
        char qname[NAME_MAX_LEN];
        tname(name, layer, j, "weight");
        tname(qname, layer, j, "qweight");
        /* Say why when the tensors are there but config.json does not announce them. */
        if (!gptq__weights_has(w, name, NULL) && gptq__weights_has(w, qname, NULL))
            return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_FOUND,
                             "%s: no tensor '%s' but a '%s': a GPTQ checkpoint needs "
                             "quantization_config in config.json or a quantize_config.json",
                             gptq__weights_file_of(w, qname), name, qname);
        wshape[0] = out;
        wshape[1] = in;
        GPTQ_TRY(gptq__weights_read_f32(ctx, w, name, 2, wshape, NULL));
    }
    bshape[0] = out;
    if (lin_has_bias(&m->cfg, j))
        GPTQ_TRY(gptq__weights_read_f32(ctx, w, tname(name, layer, j, "bias"), 1, bshape, NULL));
    return GPTQ_OK;
}

static int check_all(gptq_ctx *ctx, const gptq_model *m)
{
    const gptq__model_config *c = &m->cfg;
    int64_t vh[2] = {c->vocab, c->hidden}, h[1] = {c->hidden};
    char name[NAME_MAX_LEN];

    GPTQ_TRY(gptq__weights_read_f32(ctx, m->src, "model.embed_tokens.weight", 2, vh, NULL));
    GPTQ_TRY(gptq__weights_read_f32(ctx, m->src, "model.norm.weight", 1, h, NULL));
    /* Tied: the head is the embedding, whether or not a copy is stored (AutoGPTQ's
     * saver stores one, transformers drops it). */
    if (!c->tie_embeddings)
        GPTQ_TRY(gptq__weights_read_f32(ctx, m->src, "lm_head.weight", 2, vh, NULL));
    for (int64_t i = 0; i < c->n_layers; i++) {
        snprintf(name, sizeof name, "model.layers.%lld.input_layernorm.weight", (long long)i);
        GPTQ_TRY(gptq__weights_read_f32(ctx, m->src, name, 1, h, NULL));
        snprintf(name, sizeof name, "model.layers.%lld.post_attention_layernorm.weight",
                 (long long)i);
        GPTQ_TRY(gptq__weights_read_f32(ctx, m->src, name, 1, h, NULL));
        for (int j = 0; j < GPTQ_LIN_COUNT; j++)
            GPTQ_TRY(check_linear(ctx, m, i, j));
    }
    return GPTQ_OK;
}

/* ---- reading --------------------------------------------------------------------- */

/* Allocate rows x cols floats and read tensor `name` (of that shape, or [rows] when
 * cols is 0) into them. */
static int read_new(gptq_ctx *ctx, const gptq_model *m, const char *name, int64_t rows,
                    int64_t cols, float **dst)
{
    int64_t shape[2] = {rows, cols};
    size_t bytes;
    int rc;

    if (gptq__mul3_size(&bytes, rows, cols ? cols : 1, (int64_t)sizeof(float)) != 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY, "tensor '%s' is too large", name);
    *dst = gptq__alloc(ctx, bytes, name);
    if (!*dst)
        return GPTQ_ERR_OUT_OF_MEMORY;
    rc = gptq__weights_read_f32(ctx, m->src, name, cols ? 2 : 1, shape, *dst);
    if (rc != GPTQ_OK) {
        gptq__free(*dst);
        *dst = NULL;
    }
    return rc;
}

static void *alloc_n(gptq_ctx *ctx, const int64_t *shape, int32_t ndim, size_t elem,
                     const char *what)
{
    size_t bytes;
    if (gptq__mul3_size(&bytes, shape[0], ndim > 1 ? shape[1] : 1, (int64_t)elem) != 0) {
        GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY, "%s is too large", what);
        return NULL;
    }
    return gptq__alloc(ctx, bytes, what);
}

/* Read a checkpoint's packed tensors into l->packed (owned buffers). */
static int load_packed(gptq_ctx *ctx, const gptq_model *m, int64_t layer, int j, gptq__linear *l)
{
    const gptq__model_config *c = &m->cfg;
    gptq_packed *p = &l->packed;
    char name[NAME_MAX_LEN];
    packed_dims d;
    int rc = GPTQ_ERR_OUT_OF_MEMORY;

    get_packed_dims(c, l->out, l->in, &d);
    memset(p, 0, sizeof *p);
    p->qweight = alloc_n(ctx, d.qweight, 2, sizeof(int32_t), "qweight");
    p->qzeros = alloc_n(ctx, d.qzeros, 2, sizeof(int32_t), "qzeros");
    p->scales = alloc_n(ctx, d.scales, 2, sizeof(uint16_t), "scales");
    p->g_idx = alloc_n(ctx, d.g_idx, 1, sizeof(int32_t), "g_idx");
    if (!p->qweight || !p->qzeros || !p->scales || !p->g_idx)
        goto fail;
    rc = gptq__weights_read_raw(ctx, m->src, tname(name, layer, j, "qweight"), GPTQ_DTYPE_I32, 2,
                                d.qweight, p->qweight);
    if (rc == GPTQ_OK)
        rc = gptq__weights_read_raw(ctx, m->src, tname(name, layer, j, "qzeros"), GPTQ_DTYPE_I32,
                                    2, d.qzeros, p->qzeros);
    if (rc == GPTQ_OK)
        rc = gptq__weights_read_raw(ctx, m->src, tname(name, layer, j, "scales"), GPTQ_DTYPE_F16,
                                    2, d.scales, p->scales);
    if (rc == GPTQ_OK)
        rc = gptq__weights_read_raw(ctx, m->src, tname(name, layer, j, "g_idx"), GPTQ_DTYPE_I32,
                                    1, d.g_idx, p->g_idx);
    /* Checked here once rather than by every kernel that indexes scales with it. */
    for (int64_t k = 0; rc == GPTQ_OK && k < l->in; k++)
        if (p->g_idx[k] < 0 || p->g_idx[k] >= d.ng)
            rc = GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                           "%s: tensor '%s': column %lld is in group %d, outside [0, %lld)",
                           gptq__weights_file_of(m->src, name), name, (long long)k,
                           (int)p->g_idx[k], (long long)d.ng);
    if (rc != GPTQ_OK)
        goto fail;
    p->bits = c->q_bits;
    p->format = c->q_format;
    p->out_features = l->out;
    p->in_features = l->in;
    p->ngroups = d.ng;
    l->group_size = c->q_group_size;
    l->quantized = 1;
    return GPTQ_OK;
fail:
    gptq__free(p->qweight);
    gptq__free(p->qzeros);
    gptq__free(p->scales);
    gptq__free(p->g_idx);
    memset(p, 0, sizeof *p);
    return rc;
}

static int load_linear(gptq_ctx *ctx, const gptq_model *m, int64_t layer, int j, gptq__linear *l)
{
    char name[NAME_MAX_LEN];

    /* Linears quantized in memory (or read packed before) keep their packed tensors. */
    if (!(l->quantized && l->packed.qweight)) {
        if (stored_packed(m, layer, j))
            GPTQ_TRY(load_packed(ctx, m, layer, j, l));
        else if (!l->w)
            GPTQ_TRY(read_new(ctx, m, tname(name, layer, j, "weight"), l->out, l->in, &l->w));
    }
    if (lin_has_bias(&m->cfg, j) && !l->bias)
        GPTQ_TRY(read_new(ctx, m, tname(name, layer, j, "bias"), l->out, 0, &l->bias));
    /* Packed weights are repacked once for the fast kernels (with the bias), and kept
     * as long as the packed tensors are. */
    if (l->quantized && !l->ql)
        GPTQ_TRY(gptq_qlinear_create(ctx, &l->packed, l->bias, &l->ql));
    return GPTQ_OK;
}

int gptq__layer_load(gptq_ctx *ctx, gptq_model *m, int64_t i)
{
    gptq__layer *L;

    if (!m || i < 0 || i >= m->cfg.n_layers)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq__layer_load: no layer %lld",
                         (long long)i);
    L = &m->layers[i];
    for (int j = 0; j < GPTQ_LIN_COUNT; j++) {
        int rc = load_linear(ctx, m, i, j, &L->lin[j]);
        if (rc != GPTQ_OK) {
            gptq__layer_unload(m, i);
            return rc;
        }
    }
    L->loaded = 1;
    return GPTQ_OK;
}

/* Float weights go; packed tensors and their biases stay (they are the model now). */
void gptq__layer_unload(gptq_model *m, int64_t i)
{
    if (!m || !m->layers || i < 0 || i >= m->cfg.n_layers)
        return;
    for (int j = 0; j < GPTQ_LIN_COUNT; j++) {
        gptq__linear *l = &m->layers[i].lin[j];
        gptq__free(l->w);
        l->w = NULL;
        if (!l->quantized) {
            gptq__free(l->bias);
            l->bias = NULL;
        }
    }
    m->layers[i].loaded = 0;
}

/* Free every buffer of a linear and mark it unquantized; its shape (out, in) stays, so
 * gptq__layer_load can read it again from the checkpoint. */
void gptq__linear_clear(gptq__linear *l)
{
    if (!l)
        return;
    gptq__free(l->w);
    gptq__free(l->bias);
    gptq__free(l->packed.qweight);
    gptq__free(l->packed.qzeros);
    gptq__free(l->packed.scales);
    gptq__free(l->packed.g_idx);
    gptq_qlinear_free(l->ql);
    l->w = NULL;
    l->bias = NULL;
    l->ql = NULL;
    memset(&l->packed, 0, sizeof l->packed);
    l->quantized = 0;
    l->group_size = 0;
}

int gptq__head_load(gptq_ctx *ctx, gptq_model *m)
{
    if (m->cfg.tie_embeddings || m->lm_head)
        return GPTQ_OK;
    return read_new(ctx, m, "lm_head.weight", m->cfg.vocab, m->cfg.hidden, &m->lm_head);
}

/* ---- open / free ----------------------------------------------------------------- */

static int load_resident(gptq_ctx *ctx, gptq_model *m)
{
    const gptq__model_config *c = &m->cfg;
    char name[NAME_MAX_LEN];

    GPTQ_TRY(read_new(ctx, m, "model.embed_tokens.weight", c->vocab, c->hidden, &m->embed));
    GPTQ_TRY(read_new(ctx, m, "model.norm.weight", c->hidden, 0, &m->norm));
    m->layers = gptq__calloc(ctx, (size_t)c->n_layers * sizeof *m->layers, "decoder layers");
    if (!m->layers)
        return GPTQ_ERR_OUT_OF_MEMORY;
    for (int64_t i = 0; i < c->n_layers; i++) {
        gptq__layer *L = &m->layers[i];
        for (int j = 0; j < GPTQ_LIN_COUNT; j++)
            lin_dims(c, j, &L->lin[j].out, &L->lin[j].in);
        snprintf(name, sizeof name, "model.layers.%lld.input_layernorm.weight", (long long)i);
        GPTQ_TRY(read_new(ctx, m, name, c->hidden, 0, &L->input_norm));
        snprintf(name, sizeof name, "model.layers.%lld.post_attention_layernorm.weight",
                 (long long)i);
        GPTQ_TRY(read_new(ctx, m, name, c->hidden, 0, &L->post_norm));
    }
    return GPTQ_OK;
}

int gptq_model_open(gptq_ctx *ctx, const char *dir, gptq_model **out)
{
    struct stat sb;
    gptq_model *m;
    int rc;

    if (!out)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_model_open: out is NULL");
    *out = NULL;
    if (!dir)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_model_open: dir is NULL");
    if (stat(dir, &sb) != 0)
        return GPTQ_FAIL(ctx, errno == ENOENT ? GPTQ_ERR_NOT_FOUND : GPTQ_ERR_IO,
                         "%s: cannot open the model directory: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_FOUND, "%s: not a directory", dir);
    m = gptq__calloc(ctx, sizeof *m, "model");
    if (!m)
        return GPTQ_ERR_OUT_OF_MEMORY;
    m->dir = gptq__alloc(ctx, strlen(dir) + 1, "model directory name");
    if (!m->dir) {
        gptq__free(m);
        return GPTQ_ERR_OUT_OF_MEMORY;
    }
    strcpy(m->dir, dir);
    rc = gptq__config_load(ctx, dir, &m->cfg);
    if (rc == GPTQ_OK)
        rc = gptq__weights_open(ctx, dir, &m->src);
    if (rc == GPTQ_OK)
        rc = check_all(ctx, m);
    if (rc == GPTQ_OK)
        rc = load_resident(ctx, m);
    if (rc != GPTQ_OK) {
        gptq_model_free(m);
        return rc;
    }
    m->quantized = m->cfg.quantized;
    gptq_config_init(&m->qcfg);
    if (m->cfg.quantized) {
        m->qcfg.bits = m->cfg.q_bits;
        m->qcfg.group_size = m->cfg.q_group_size;
        m->qcfg.sym = m->cfg.q_sym;
        m->qcfg.desc_act = m->cfg.q_desc_act;
    }
    m->true_sequential = 1;
    *out = m;
    return GPTQ_OK;
}

void gptq_model_free(gptq_model *m)
{
    if (!m)
        return;
    if (m->layers) {
        for (int64_t i = 0; i < m->cfg.n_layers; i++) {
            for (int j = 0; j < GPTQ_LIN_COUNT; j++)
                gptq__linear_clear(&m->layers[i].lin[j]);
            gptq__free(m->layers[i].input_norm);
            gptq__free(m->layers[i].post_norm);
        }
        gptq__free(m->layers);
    }
    gptq__free(m->embed);
    gptq__free(m->norm);
    gptq__free(m->lm_head);
    gptq__weights_free(m->src);
    gptq__config_free(&m->cfg);
    gptq__free(m->dir);
    gptq__free(m);
}

/* ---- getters --------------------------------------------------------------------- */

const char *gptq_model_architecture(const gptq_model *m) { return m ? m->cfg.arch_name : NULL; }
int64_t gptq_model_num_layers(const gptq_model *m) { return m ? m->cfg.n_layers : 0; }
int64_t gptq_model_hidden_size(const gptq_model *m) { return m ? m->cfg.hidden : 0; }
int64_t gptq_model_vocab_size(const gptq_model *m) { return m ? m->cfg.vocab : 0; }
int32_t gptq_model_is_quantized(const gptq_model *m) { return m ? m->quantized : 0; }
