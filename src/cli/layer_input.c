/*
 * `gptq layer`: reading a case file: the configuration from `__metadata__`, the
 * weight W, and the Hessian, either stored (H) or accumulated from calibration
 * inputs (X).
 *
 * Every problem is reported as "gptq: FILE: what" and turned into exit status 1;
 * nothing here trusts the file beyond what the safetensors reader has validated.
 */
#include <stdlib.h>
#include <string.h>

#include <gptq/gptq.h>
#include <gptq/safetensors.h>

#include "cli.h"
#include "layer.h"

/* Read an integer metadata value into *dst when the key is present. */
static int meta_i32(const gptq_safetensors *st, const char *path, const char *key,
                    int32_t *dst, int *present)
{
    const char *v = gptq_safetensors_metadata(st, key);

    if (present != NULL)
        *present = v != NULL;
    if (v == NULL)
        return 0;
    if (gptq_cli_parse_i32(v, dst) != 0) {
        gptq_cli_error("%s: metadata '%s' is not an integer: '%s'", path, key, v);
        return -1;
    }
    return 0;
}

static int meta_bool(const gptq_safetensors *st, const char *path, const char *key,
                     int32_t *dst)
{
    const char *v = gptq_safetensors_metadata(st, key);

    if (v == NULL)
        return 0;
    if (gptq_cli_parse_bool(v, dst) != 0) {
        gptq_cli_error("%s: metadata '%s' is not true or false: '%s'", path, key, v);
        return -1;
    }
    return 0;
}

int gptq_cli_layer_config(const gptq_safetensors *st, const gptq_cli_layer_args *a,
                          gptq_config *cfg)
{
    const char *path = a->input;
    const char *damp;

    /* Three layers, lowest first: library defaults, the file's metadata (the
     * reference cases carry their configuration there, under AutoGPTQ's names),
     * then the command line. A key the command line overrides is not even parsed,
     * so a flag is also the way round a malformed value in a file. */
    gptq_config_init(cfg);
    if ((!a->has_bits && meta_i32(st, path, "bits", &cfg->bits, NULL) != 0) ||
        (!a->has_group_size &&
         meta_i32(st, path, "group_size", &cfg->group_size, NULL) != 0) ||
        (!a->has_sym && meta_bool(st, path, "sym", &cfg->sym) != 0) ||
        (!a->has_desc_act && meta_bool(st, path, "desc_act", &cfg->desc_act) != 0) ||
        (!a->has_static_groups &&
         meta_bool(st, path, "static_groups", &cfg->static_groups) != 0) ||
        (!a->has_block_size && meta_i32(st, path, "blocksize", &cfg->block_size, NULL) != 0))
        return -1;
    damp = a->has_damp ? NULL : gptq_safetensors_metadata(st, "damp_percent");
    if (damp != NULL && gptq_cli_parse_double(damp, &cfg->damp_percent) != 0) {
        gptq_cli_error("%s: metadata 'damp_percent' is not a number: '%s'", path, damp);
        return -1;
    }

    if (a->has_bits)
        cfg->bits = a->bits;
    if (a->has_group_size)
        cfg->group_size = a->group_size;
    if (a->has_sym)
        cfg->sym = a->sym;
    if (a->has_desc_act)
        cfg->desc_act = a->desc_act;
    if (a->has_static_groups)
        cfg->static_groups = a->static_groups;
    if (a->has_damp)
        cfg->damp_percent = a->damp_percent;
    if (a->has_block_size)
        cfg->block_size = a->block_size;
    cfg->rtn = a->rtn;
    /* Act-order sorts columns by diag(H), which RTN does not have. A case file's
     * desc_act describes how *it* was quantized, so --rtn drops it; only an explicit
     * --act-order --rtn reaches the library, which explains why it is refused. */
    if (a->rtn && !a->has_desc_act)
        cfg->desc_act = 0;
    return 0;
}

/* Look up a 2-D tensor; *found says whether it exists. Shape problems are errors. */
static int find_matrix(const gptq_safetensors *st, const char *path, const char *name,
                       gptq_tensor_info *info, int *found)
{
    *found = 0;
    if (gptq_safetensors_find(st, name, info) != GPTQ_OK)
        return 0;
    *found = 1;
    if (info->ndim != 2) {
        gptq_cli_error("%s: tensor '%s' has %d dimensions, expected 2", path, name,
                       (int)info->ndim);
        return -1;
    }
    if (info->shape[0] < 1 || info->shape[1] < 1) {
        gptq_cli_error("%s: tensor '%s' is empty ([%lld, %lld])", path, name,
                       (long long)info->shape[0], (long long)info->shape[1]);
        return -1;
    }
    return 0;
}

/* Allocate and fill a float32 copy of a tensor (the reader converts F16/BF16/F64). */
static float *read_f32(gptq_ctx *ctx, const gptq_safetensors *st, const char *path,
                       const gptq_tensor_info *info)
{
    float *buf;
    size_t n = (size_t)info->numel;

    if ((int64_t)n != info->numel || n > SIZE_MAX / sizeof(float)) {
        gptq_cli_error("%s: tensor '%s' is too large", path, info->name);
        return NULL;
    }
    buf = malloc(n * sizeof(float));
    if (buf == NULL) {
        gptq_cli_error("%s: out of memory reading tensor '%s'", path, info->name);
        return NULL;
    }
    if (gptq_safetensors_read_f32(ctx, st, info->name, buf, n) != GPTQ_OK) {
        gptq_cli_lib_error(path, gptq_ctx_last_error(ctx));
        free(buf);
        return NULL;
    }
    return buf;
}

int gptq_cli_layer_read_w(gptq_ctx *ctx, const gptq_safetensors *st, const char *path,
                          float **w, int64_t *out_features, int64_t *in_features)
{
    gptq_tensor_info info;
    int found;

    if (find_matrix(st, path, "W", &info, &found) != 0)
        return -1;
    if (!found) {
        gptq_cli_error("%s: no tensor 'W'", path);
        return -1;
    }
    *w = read_f32(ctx, st, path, &info);
    if (*w == NULL)
        return -1;
    *out_features = info.shape[0];
    *in_features = info.shape[1];
    return 0;
}

/* How X's rows split into sequences. The reference cases say it in metadata
 * (nsamples sequences of seqlen rows); without it X is one sample, which is what
 * gptq_hessian_add documents for a flat [tokens, in] matrix. */
static int sequence_split(const gptq_safetensors *st, const char *path, int64_t rows,
                          int64_t *nseq, int64_t *seqlen)
{
    int32_t ns = 0, sl = 0;
    int has_ns, has_sl;

    if (meta_i32(st, path, "nsamples", &ns, &has_ns) != 0 ||
        meta_i32(st, path, "seqlen", &sl, &has_sl) != 0)
        return -1;
    if ((has_ns && ns < 1) || (has_sl && sl < 1)) {
        gptq_cli_error("%s: metadata nsamples and seqlen must be positive", path);
        return -1;
    }
    if (has_ns && has_sl) {
        *nseq = ns;
        *seqlen = sl;
    } else if (has_ns) {
        *nseq = ns;
        *seqlen = rows / ns;
    } else if (has_sl) {
        *seqlen = sl;
        *nseq = rows / sl;
    } else {
        *nseq = 1;
        *seqlen = rows;
    }
    if (*nseq < 1 || *seqlen < 1 || *nseq * *seqlen != rows) {
        gptq_cli_error("%s: X has %lld rows, which is not nsamples x seqlen "
                       "(metadata nsamples=%s seqlen=%s)",
                       path, (long long)rows,
                       has_ns ? gptq_safetensors_metadata(st, "nsamples") : "-",
                       has_sl ? gptq_safetensors_metadata(st, "seqlen") : "-");
        return -1;
    }
    return 0;
}

static int hessian_from_x(gptq_ctx *ctx, const gptq_safetensors *st, const char *path,
                          const gptq_tensor_info *xi, int64_t in_features,
                          gptq_hessian **out)
{
    int64_t nseq, seqlen, s;
    gptq_hessian *h = NULL;
    float *x;

    if (xi->shape[1] != in_features) {
        gptq_cli_error("%s: X has shape [%lld, %lld], expected [rows, %lld] (W's columns)",
                       path, (long long)xi->shape[0], (long long)xi->shape[1],
                       (long long)in_features);
        return -1;
    }
    if (sequence_split(st, path, xi->shape[0], &nseq, &seqlen) != 0)
        return -1;
    x = read_f32(ctx, st, path, xi);
    if (x == NULL)
        return -1;
    if (gptq_hessian_create(ctx, in_features, &h) != GPTQ_OK)
        goto fail;
    /* One call per sequence, as the references call add_batch: the running
     * rescaling H *= n/(n+1) then rounds exactly as theirs does. */
    for (s = 0; s < nseq; s++) {
        if (gptq_hessian_add(ctx, h, x + s * seqlen * in_features, 1, seqlen) != GPTQ_OK)
            goto fail;
    }
    free(x);
    *out = h;
    return 0;
fail:
    gptq_cli_lib_error(path, gptq_ctx_last_error(ctx));
    gptq_hessian_free(h);
    free(x);
    return -1;
}

int gptq_cli_layer_read_hessian(gptq_ctx *ctx, const gptq_safetensors *st, const char *path,
                                int64_t in_features, gptq_hessian **out)
{
    gptq_tensor_info hi, xi;
    int has_h, has_x;
    int32_t nsamples = 1;
    float *hbuf;
    int rc;

    *out = NULL;
    if (find_matrix(st, path, "H", &hi, &has_h) != 0 ||
        find_matrix(st, path, "X", &xi, &has_x) != 0)
        return -1;
    if (!has_h && !has_x) {
        gptq_cli_error("%s: no tensor 'H' or 'X' (one is needed unless --rtn)", path);
        return -1;
    }
    if (!has_h)
        return hessian_from_x(ctx, st, path, &xi, in_features, out);

    /* A stored H wins over X: it is exactly what the reference quantized with,
     * while re-accumulating X is only equal up to float32 rounding. */
    if (hi.shape[0] != in_features || hi.shape[1] != in_features) {
        gptq_cli_error("%s: H has shape [%lld, %lld], expected [%lld, %lld] (W's columns)",
                       path, (long long)hi.shape[0], (long long)hi.shape[1],
                       (long long)in_features, (long long)in_features);
        return -1;
    }
    if (meta_i32(st, path, "nsamples", &nsamples, NULL) != 0)
        return -1;
    if (nsamples < 1) {
        gptq_cli_error("%s: metadata nsamples must be positive", path);
        return -1;
    }
    hbuf = read_f32(ctx, st, path, &hi);
    if (hbuf == NULL)
        return -1;
    rc = gptq_hessian_create_from(ctx, in_features, hbuf, nsamples, out);
    free(hbuf);
    if (rc != GPTQ_OK) {
        gptq_cli_lib_error(path, gptq_ctx_last_error(ctx));
        return -1;
    }
    return 0;
}
