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
 * Every row is independent (each has its own parameters and its own error), so the
 * kernel works on tiles of LANES rows held transposed (t[j][lane]): each step is
 * then one operation across LANES rows, which compilers turn into SIMD, and every
 * lane performs exactly the reference's sequence of float32 operations (the build
 * disables FMA contraction: the reference rounds err * U before subtracting it).
 * Tiles are split over threads; the hot function is compiled for AVX-512, AVX2 and
 * baseline x86-64 and chosen at load time.
 */
#include <math.h>
#include <string.h>

#include "backend.h"
#include "quantizer.h"

#define LANES 16
#define MAX_BLOCK 512


/* Group parameters for column c of rows [r, r + nl): set scale[]/zero[] lanes. */
static void tile_params(const gptq_block_args *a, int64_t r, int nl, int64_t c, float *scale,
                        float *zero)
{
    const int64_t R = a->rows, C = a->cols;
    const int32_t gs = a->group_size;

    if (gs == -1) {
        for (int l = 0; l < nl; l++) {
            scale[l] = a->row_scale[r + l];
            zero[l] = a->row_zero[r + l];
        }
        return;
    }
    if (a->static_groups) {
        const int64_t g = a->perm[c] / gs;
        for (int l = 0; l < nl; l++) {
            scale[l] = a->scales[g * R + r + l];
            zero[l] = a->zeros[g * R + r + l];
        }
        return;
    }
    if (c % gs == 0) {
        /* The group starts here: parameters from the block-level W (which holds the
         * updates of earlier blocks only), truncated at the last column. */
        const int64_t g = c / gs, end = c + gs < C ? c + gs : C;
        for (int l = 0; l < nl; l++)
            gptq__find_params(a->w + (r + l) * C + c, end - c, a->maxq, a->sym,
                              &a->scales[g * R + r + l], &a->zeros[g * R + r + l]);
    }
    for (int l = 0; l < nl; l++) {
        scale[l] = a->scales[(c / gs) * R + r + l];
        zero[l] = a->zeros[(c / gs) * R + r + l];
    }
}

/* One column step for a full tile: quantize lane values, compute errors, apply the
 * rank-1 update to the rest of the block. Returns nothing; writes q/code/err. */
GPTQ_MULTIVERSION
static void tile_column(float (*t)[LANES], int64_t i, int64_t bw, const float *urow,
                        const float *scale, const float *zero, float maxq, float *qv,
                        int32_t *code, float *e, float *loss)
{
    const float d = urow[i];
    const float d2 = d * d;
    for (int l = 0; l < LANES; l++) {
        float w = t[i][l];
        float q = rintf(w / scale[l]) + zero[l];
        q = q < 0.0f ? 0.0f : q;
        q = q > maxq ? maxq : q;
        code[l] = (int32_t)q;
        qv[l] = scale[l] * (q - zero[l]);
    }
    for (int l = 0; l < LANES; l++) {
        float diff = t[i][l] - qv[l];
        float lo = (diff * diff) / d2;
        e[l] = diff / d;
        loss[l] = lo / 2.0f;
    }
    for (int64_t j = i; j < bw; j++) {
        const float u = urow[j];
        for (int l = 0; l < LANES; l++) {
            float p = e[l] * u;
            t[j][l] = t[j][l] - p;
        }
    }
}

/* RTN variant of the column step: no U. */
GPTQ_MULTIVERSION
static void tile_column_rtn(float (*t)[LANES], int64_t i, const float *scale, const float *zero,
                            float maxq, float *qv, int32_t *code)
{
    for (int l = 0; l < LANES; l++) {
        float q = rintf(t[i][l] / scale[l]) + zero[l];
        q = q < 0.0f ? 0.0f : q;
        q = q > maxq ? maxq : q;
        code[l] = (int32_t)q;
        qv[l] = scale[l] * (q - zero[l]);
    }
}

static void block_tile(const gptq_block_args *a, int64_t r, int nl)
{
    const int64_t C = a->cols, R = a->rows, i1 = a->i1, bw = a->i2 - a->i1;
    /* 64-byte alignment: each row of t is one AVX-512 vector, and a vector that
     * straddles two cache lines defeats store-to-load forwarding in the update loop. */
    _Alignas(64) float t[MAX_BLOCK][LANES];
    _Alignas(64) float qt[MAX_BLOCK][LANES];
    _Alignas(64) int32_t ct[MAX_BLOCK][LANES];
    _Alignas(64) float scale[LANES], zero[LANES], e[LANES], loss[LANES];
    double row_loss[LANES] = {0};

    /* Transposed copy of W1; unused lanes hold 0 with scale 1 (harmless, discarded). */
    if (nl == LANES) {
        const float *w0 = a->w + r * C + i1;
        for (int64_t j = 0; j < bw; j++)
            for (int l = 0; l < LANES; l++)
                t[j][l] = w0[l * C + j];
    } else {
        for (int64_t j = 0; j < bw; j++)
            for (int l = 0; l < LANES; l++)
                t[j][l] = l < nl ? a->w[(r + l) * C + i1 + j] : 0.0f;
    }
    for (int l = 0; l < LANES; l++) {
        scale[l] = 1.0f;
        zero[l] = 0.0f;
    }
    for (int64_t i = 0; i < bw; i++) {
        const int64_t c = i1 + i;
        tile_params(a, r, nl, c, scale, zero);
        if (a->u) {
            tile_column(t, i, bw, a->u + c * C + i1, scale, zero, (float)a->maxq, qt[i], ct[i],
                        e, loss);
            for (int l = 0; l < nl; l++)
                row_loss[l] += (double)loss[l];
            memcpy(a->err + i * R + r, e, (size_t)nl * sizeof(float));
        } else {
            tile_column_rtn(t, i, scale, zero, (float)a->maxq, qt[i], ct[i]);
        }
    }
    /* Results row by row, at the original column of each processing column. */
    for (int l = 0; l < nl; l++) {
        float *qrow = a->q + (r + l) * C;
        int32_t *crow = a->codes + (r + l) * C;
        for (int64_t i = 0; i < bw; i++) {
            const int64_t col = a->perm[i1 + i];
            qrow[col] = qt[i][l];
            crow[col] = ct[i][l];
        }
    }
    if (a->row_loss)
        for (int l = 0; l < nl; l++)
            a->row_loss[r + l] += row_loss[l];
}

static void block_tiles(void *arg, int64_t t0, int64_t t1)
{
    const gptq_block_args *a = arg;
    for (int64_t t = t0; t < t1; t++) {
        int64_t r = t * LANES;
        int nl = a->rows - r < LANES ? (int)(a->rows - r) : LANES;
        block_tile(a, r, nl);
    }
}

int gptq__quantize_block_host(gptq_ctx *ctx, const gptq_block_args *args)
{
    if (args->i2 - args->i1 > MAX_BLOCK)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED, "block_size %lld is above the maximum %d",
                         (long long)(args->i2 - args->i1), MAX_BLOCK);
    gptq__parallel_for(args->threads > 0 ? args->threads : ctx->threads,
                       (args->rows + LANES - 1) / LANES, 2, block_tiles, (void *)args);
    return GPTQ_OK;
}
