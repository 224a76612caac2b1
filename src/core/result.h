/*
 * The layer result object (opaque in the public API).
 */
#ifndef GPTQ_CORE_RESULT_H
#define GPTQ_CORE_RESULT_H

#include "internal.h"

struct gptq_result {
    gptq_config cfg;
    int64_t rows, cols, ngroups;
    int32_t *codes;  /* [rows, cols] original column order */
    float *scales;   /* [ngroups, rows] */
    int32_t *zeros;  /* [ngroups, rows] */
    int32_t *g_idx;  /* [cols] */
    int32_t *perm;   /* [cols] */
    float *q;        /* [rows, cols] */
    double loss;
    double damp_percent;
    double damp;
    int64_t dead_columns;
};

/* Allocate a result with every array (contents undefined). */
int gptq__result_new(gptq_ctx *ctx, const gptq_config *cfg, int64_t rows, int64_t cols,
                     int64_t ngroups, gptq_result **out);

#endif /* GPTQ_CORE_RESULT_H */
