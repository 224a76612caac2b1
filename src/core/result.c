/*
 * The layer result: allocation and the public getters.
 */
#include <string.h>

#include "result.h"

int gptq__result_new(gptq_ctx *ctx, const gptq_config *cfg, int64_t rows, int64_t cols,
                     int64_t ngroups, gptq_result **out)
{
    size_t rc, gr;
    gptq_result *r;

    *out = NULL;
    if (gptq__mul3_size(&rc, rows, cols, 4) || gptq__mul3_size(&gr, ngroups, rows, 4))
        return GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY, "result too large");
    r = gptq__calloc(ctx, sizeof *r, "result");
    if (!r)
        return GPTQ_ERR_OUT_OF_MEMORY;
    r->cfg = *cfg;
    r->rows = rows;
    r->cols = cols;
    r->ngroups = ngroups;
    r->codes = gptq__alloc(ctx, rc, "codes");
    r->q = r->codes ? gptq__alloc(ctx, rc, "Q") : NULL;
    r->scales = r->q ? gptq__alloc(ctx, gr, "scales") : NULL;
    r->zeros = r->scales ? gptq__alloc(ctx, gr, "zeros") : NULL;
    r->g_idx = r->zeros ? gptq__alloc(ctx, (size_t)cols * 4, "g_idx") : NULL;
    r->perm = r->g_idx ? gptq__alloc(ctx, (size_t)cols * 4, "perm") : NULL;
    if (!r->perm) {
        gptq_result_free(r);
        return GPTQ_ERR_OUT_OF_MEMORY;
    }
    *out = r;
    return GPTQ_OK;
}

void gptq_result_free(gptq_result *r)
{
    if (!r)
        return;
    gptq__free(r->codes);
    gptq__free(r->q);
    gptq__free(r->scales);
    gptq__free(r->zeros);
    gptq__free(r->g_idx);
    gptq__free(r->perm);
    gptq__free(r);
}

int64_t gptq_result_out_features(const gptq_result *r) { return r ? r->rows : 0; }
int64_t gptq_result_in_features(const gptq_result *r) { return r ? r->cols : 0; }
int64_t gptq_result_ngroups(const gptq_result *r) { return r ? r->ngroups : 0; }

int gptq_result_config(const gptq_result *r, gptq_config *cfg)
{
    if (!r || !cfg || cfg->struct_size < sizeof *cfg)
        return GPTQ_ERR_INVALID_ARGUMENT;
    *cfg = r->cfg;
    return GPTQ_OK;
}

const int32_t *gptq_result_codes(const gptq_result *r) { return r ? r->codes : NULL; }
const float *gptq_result_scales(const gptq_result *r) { return r ? r->scales : NULL; }
const int32_t *gptq_result_zeros(const gptq_result *r) { return r ? r->zeros : NULL; }
const int32_t *gptq_result_g_idx(const gptq_result *r) { return r ? r->g_idx : NULL; }
const int32_t *gptq_result_perm(const gptq_result *r) { return r ? r->perm : NULL; }
const float *gptq_result_q(const gptq_result *r) { return r ? r->q : NULL; }
double gptq_result_loss(const gptq_result *r) { return r ? r->loss : 0.0; }
double gptq_result_damp_percent(const gptq_result *r) { return r ? r->damp_percent : 0.0; }
double gptq_result_damp(const gptq_result *r) { return r ? r->damp : 0.0; }
int64_t gptq_result_dead_columns(const gptq_result *r) { return r ? r->dead_columns : 0; }
