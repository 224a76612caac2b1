/*
 * GPTQ's in-block column loop on the host (IST-DASLab gptq.py `fasterquant`, the body
 * of `for i in range(count)`), fused: for each column c of the block [i1, i2), in
 * processing order,
 *
 *     new group parameters at a group start (from the block-level W, not W1)
 *     q     = dequant(quant(W1[:, i]))
 *     loss += (w - q)^2 / d^2 / 2,       d = U[c, c]
 *     err   = (w - q) / d
 *     W1[:, i:] -= err * U[c, i1 + i:]   (rank-1 update, including column i itself)
 *
 * Every row is independent (each row has its own parameters and its own error), so
 * rows are split over threads; within a row the arithmetic is exactly the
 * reference's sequence of float32 operations (the build disables FMA contraction:
 * the reference rounds the product err * U before subtracting it).
 */
#include <string.h>

#include "backend.h"
#include "quantizer.h"

typedef struct block_job {
    const gptq_block_args *a;
} block_job;

/* Parameters for column c of row r: returns them through *scale / *zero. */
static void column_params(const gptq_block_args *a, int64_t r, int64_t c, float *scale,
                          float *zero)
{
    const int64_t R = a->rows, C = a->cols;
    const int32_t gs = a->group_size;

    if (gs == -1) {
        *scale = a->row_scale[r];
        *zero = a->row_zero[r];
        return;
    }
    if (a->static_groups) {
        int64_t g = a->perm[c] / gs;
        *scale = a->scales[g * R + r];
        *zero = a->zeros[g * R + r];
        return;
    }
    if (c % gs == 0) {
        /* The group starts here: parameters from the block-level W (which holds the
         * updates of earlier blocks only), truncated at the last column. */
        int64_t g = c / gs;
        int64_t end = c + gs < C ? c + gs : C;
        gptq__find_params(a->w + r * C + c, end - c, a->maxq, a->sym, &a->scales[g * R + r],
                          &a->zeros[g * R + r]);
    }
    *scale = a->scales[(c / gs) * R + r];
    *zero = a->zeros[(c / gs) * R + r];
}

static void block_rows(void *arg, int64_t r0, int64_t r1)
{
    const gptq_block_args *a = ((block_job *)arg)->a;
    const int64_t C = a->cols, i1 = a->i1, bw = a->i2 - a->i1;
    float w1[512];
    float *row_buf = bw <= 512 ? w1 : NULL;

    for (int64_t r = r0; r < r1; r++) {
        float *wr = row_buf;
        float *q_out = a->q + r * C + i1;
        int32_t *code_out = a->codes + r * C + i1;
        float *err = a->err ? a->err + r * bw : NULL;
        double loss = 0.0;

        memcpy(wr, a->w + r * C + i1, (size_t)bw * sizeof(float));
        for (int64_t i = 0; i < bw; i++) {
            const int64_t c = i1 + i;
            float scale, zero, code, qv, w = wr[i];

            column_params(a, r, c, &scale, &zero);
            code = gptq__quant_code(w, scale, zero, a->maxq);
            qv = gptq__dequant(code, scale, zero);
            q_out[i] = qv;
            code_out[i] = (int32_t)code;
            if (!a->u)
                continue; /* round-to-nearest: no error feedback */
            {
                const float *urow = a->u + c * C + i1; /* U[c, i1:i2] */
                const float d = urow[i];
                const float diff = w - qv;
                const float l = (diff * diff) / (d * d);
                const float e = diff / d;
                loss += (double)(l / 2.0f);
                for (int64_t j = i; j < bw; j++) {
                    float p = e * urow[j];
                    wr[j] = wr[j] - p;
                }
                err[i] = e;
            }
        }
        if (a->row_loss)
            a->row_loss[r] += loss;
    }
}

int gptq__quantize_block_host(gptq_ctx *ctx, const gptq_block_args *args)
{
    block_job job = {args};
    if (args->i2 - args->i1 > 512)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED, "block_size %lld is above the maximum 512",
                         (long long)(args->i2 - args->i1));
    /* ~bw^2/2 multiply-adds per row: a few rows per thread are already worth it. */
    gptq__parallel_for(ctx->threads, args->rows, 16, block_rows, &job);
    return GPTQ_OK;
}
