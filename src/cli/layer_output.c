/*
 * `gptq layer`: writing the result file.
 *
 * The packed checkpoint tensors (qweight, qzeros, scales F16, g_idx) come first in
 * importance: they are what a GPTQ checkpoint holds, in the layout chosen with
 * --format/--pack. Beside them go the unpacked tensors in original column order
 * (codes, zeros, Q, and perm with act-order), which tools/check_result.py and any
 * debugging session want, and the configuration in __metadata__.
 *
 * The safetensors writer writes a temporary file and renames it, so a failure at any
 * point here leaves an existing output file as it was.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gptq/gptq.h>
#include <gptq/safetensors.h>

#include "cli.h"
#include "layer.h"

void gptq_cli_format_double(char *buf, size_t size, double v)
{
    int prec;

    /* 17 significant digits always round-trip; fewer are tried first so that a
     * configured 0.01 is written "0.01", not "0.010000000000000000208". */
    for (prec = 6; prec < 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
    snprintf(buf, size, "%.17g", v);
}

/* The packed tensors' buffers, sized by gptq_packed_shape(). */
typedef struct packed_bufs {
    gptq_packed p;
    int64_t qw_shape[2];
    int64_t qz_shape[2];
} packed_bufs;

static void packed_free(packed_bufs *b)
{
    free(b->p.qweight);
    free(b->p.qzeros);
    free(b->p.scales);
    free(b->p.g_idx);
}

static int pack(gptq_ctx *ctx, const gptq_cli_layer_args *a, const gptq_result *r,
                const gptq_config *cfg, packed_bufs *b)
{
    int64_t out_f = gptq_result_out_features(r), in_f = gptq_result_in_features(r);
    int64_t ng = gptq_result_ngroups(r);

    memset(b, 0, sizeof *b);
    if (gptq_packed_shape(cfg->bits, out_f, in_f, ng, b->qw_shape, b->qz_shape) != GPTQ_OK)
        return -1;
    b->p.bits = cfg->bits;
    b->p.format = a->format;
    b->p.out_features = out_f;
    b->p.in_features = in_f;
    b->p.ngroups = ng;
    /* Sizes are products of dimensions the library has already accepted and
     * allocated itself ([out, in] floats), so they cannot overflow here. */
    b->p.qweight = calloc((size_t)(b->qw_shape[0] * b->qw_shape[1]), sizeof(int32_t));
    b->p.qzeros = calloc((size_t)(b->qz_shape[0] * b->qz_shape[1]), sizeof(int32_t));
    b->p.scales = calloc((size_t)(ng * out_f), sizeof(uint16_t));
    b->p.g_idx = calloc((size_t)in_f, sizeof(int32_t));
    if (b->p.qweight == NULL || b->p.qzeros == NULL || b->p.scales == NULL ||
        b->p.g_idx == NULL) {
        gptq_cli_error("%s: out of memory packing the result", a->output);
        return 1;
    }
    return gptq_pack_result(ctx, r, a->pack_mode, &b->p) == GPTQ_OK ? 0 : -1;
}

static int add_tensor(gptq_ctx *ctx, gptq_safetensors_writer *w, const char *name,
                      int32_t dtype, int64_t d0, int64_t d1, const void *data)
{
    int64_t shape[2] = {d0, d1};
    int32_t ndim = d1 < 0 ? 1 : 2;
    size_t elem = (size_t)gptq_dtype_bits(dtype) / 8;
    size_t nbytes = (size_t)d0 * (ndim == 2 ? (size_t)d1 : 1) * elem;

    return gptq_safetensors_writer_add(ctx, w, name, dtype, ndim, shape, data, nbytes);
}

static int set_meta(gptq_ctx *ctx, gptq_safetensors_writer *w, const char *key,
                    const char *value)
{
    return gptq_safetensors_writer_set_metadata(ctx, w, key, value);
}

static int set_meta_i64(gptq_ctx *ctx, gptq_safetensors_writer *w, const char *key,
                        int64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)v);
    return set_meta(ctx, w, key, buf);
}

static int set_meta_double(gptq_ctx *ctx, gptq_safetensors_writer *w, const char *key,
                           double v)
{
    char buf[40];
    gptq_cli_format_double(buf, sizeof buf, v);
    return set_meta(ctx, w, key, buf);
}

static int set_meta_bool(gptq_ctx *ctx, gptq_safetensors_writer *w, const char *key,
                         int32_t v)
{
    return set_meta(ctx, w, key, v ? "true" : "false");
}

/* Keys follow AutoGPTQ's quantize_config names where one exists (bits, group_size,
 * sym, desc_act, static_groups, damp_percent, checkpoint_format), so the file's
 * metadata can be fed back as the input's configuration. */
static int add_metadata(gptq_ctx *ctx, gptq_safetensors_writer *w,
                        const gptq_cli_layer_args *a, const gptq_result *r,
                        const gptq_config *cfg, const gptq_cli_layer_run *run)
{
    if (set_meta(ctx, w, "quant_method", "gptq") != GPTQ_OK ||
        set_meta_i64(ctx, w, "bits", cfg->bits) != GPTQ_OK ||
        set_meta_i64(ctx, w, "group_size", cfg->group_size) != GPTQ_OK ||
        set_meta_bool(ctx, w, "sym", cfg->sym) != GPTQ_OK ||
        set_meta_bool(ctx, w, "desc_act", cfg->desc_act) != GPTQ_OK ||
        set_meta_bool(ctx, w, "static_groups", cfg->static_groups) != GPTQ_OK ||
        set_meta_double(ctx, w, "damp_percent", cfg->damp_percent) != GPTQ_OK ||
        set_meta_double(ctx, w, "damp_used", gptq_result_damp_percent(r)) != GPTQ_OK ||
        set_meta_double(ctx, w, "damp_abs", gptq_result_damp(r)) != GPTQ_OK ||
        set_meta_i64(ctx, w, "blocksize", cfg->block_size) != GPTQ_OK ||
        set_meta_bool(ctx, w, "rtn", cfg->rtn) != GPTQ_OK ||
        set_meta(ctx, w, "checkpoint_format", gptq_cli_format_name(a->format)) != GPTQ_OK ||
        set_meta(ctx, w, "pack_mode", gptq_cli_pack_name(a->pack_mode)) != GPTQ_OK ||
        set_meta_double(ctx, w, "loss", gptq_result_loss(r)) != GPTQ_OK ||
        set_meta_double(ctx, w, "seconds", run->seconds) != GPTQ_OK ||
        set_meta_double(ctx, w, "hessian_seconds", run->hessian_seconds) != GPTQ_OK ||
        set_meta(ctx, w, "backend", gptq_backend_name(run->backend)) != GPTQ_OK ||
        set_meta(ctx, w, "libgptq_version", gptq_version()) != GPTQ_OK ||
        set_meta_i64(ctx, w, "out_features", gptq_result_out_features(r)) != GPTQ_OK ||
        set_meta_i64(ctx, w, "in_features", gptq_result_in_features(r)) != GPTQ_OK ||
        set_meta_i64(ctx, w, "ngroups", gptq_result_ngroups(r)) != GPTQ_OK ||
        set_meta_i64(ctx, w, "dead_columns", gptq_result_dead_columns(r)) != GPTQ_OK ||
        set_meta(ctx, w, "source", run->case_name) != GPTQ_OK)
        return -1;
    return 0;
}

static int add_tensors(gptq_ctx *ctx, gptq_safetensors_writer *w, const gptq_result *r,
                       const gptq_config *cfg, const packed_bufs *b)
{
    int64_t out_f = gptq_result_out_features(r), in_f = gptq_result_in_features(r);
    int64_t ng = gptq_result_ngroups(r);

    if (add_tensor(ctx, w, "qweight", GPTQ_DTYPE_I32, b->qw_shape[0], b->qw_shape[1],
                   b->p.qweight) != GPTQ_OK ||
        add_tensor(ctx, w, "qzeros", GPTQ_DTYPE_I32, b->qz_shape[0], b->qz_shape[1],
                   b->p.qzeros) != GPTQ_OK ||
        add_tensor(ctx, w, "scales", GPTQ_DTYPE_F16, ng, out_f, b->p.scales) != GPTQ_OK ||
        add_tensor(ctx, w, "g_idx", GPTQ_DTYPE_I32, in_f, -1, b->p.g_idx) != GPTQ_OK ||
        add_tensor(ctx, w, "codes", GPTQ_DTYPE_I32, out_f, in_f, gptq_result_codes(r)) !=
            GPTQ_OK ||
        add_tensor(ctx, w, "zeros", GPTQ_DTYPE_I32, ng, out_f, gptq_result_zeros(r)) !=
            GPTQ_OK ||
        add_tensor(ctx, w, "Q", GPTQ_DTYPE_F32, out_f, in_f, gptq_result_q(r)) != GPTQ_OK)
        return -1;
    /* perm is the identity without act-order; the reference cases omit it then. */
    if (cfg->desc_act &&
        add_tensor(ctx, w, "perm", GPTQ_DTYPE_I32, in_f, -1, gptq_result_perm(r)) != GPTQ_OK)
        return -1;
    return 0;
}

int gptq_cli_layer_write(gptq_ctx *ctx, const gptq_cli_layer_args *a, const gptq_result *r,
                         const gptq_cli_layer_run *run)
{
    gptq_safetensors_writer *w = NULL;
    gptq_config cfg;
    packed_bufs b;
    int rc;

    gptq_config_init(&cfg);
    if (gptq_result_config(r, &cfg) != GPTQ_OK) {
        gptq_cli_lib_error(a->output, gptq_ctx_last_error(ctx));
        return -1;
    }
    rc = pack(ctx, a, r, &cfg, &b);
    if (rc != 0) {
        /* rc > 0: the message is already printed (our own allocation failed). */
        if (rc < 0)
            gptq_cli_lib_error(a->output, gptq_ctx_last_error(ctx));
        packed_free(&b);
        return -1;
    }
    rc = -1;
    if (gptq_safetensors_writer_create(ctx, &w) == GPTQ_OK &&
        add_tensors(ctx, w, r, &cfg, &b) == 0 && add_metadata(ctx, w, a, r, &cfg, run) == 0 &&
        gptq_safetensors_writer_write(ctx, w, a->output) == GPTQ_OK)
        rc = 0;
    if (rc != 0)
        gptq_cli_lib_error(a->output, gptq_ctx_last_error(ctx));
    gptq_safetensors_writer_free(w);
    packed_free(&b);
    return rc;
}
