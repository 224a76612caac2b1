/*
 * Test support, the part without Criterion (qlayer.h): random prepared-linear layers and
 * their float64 reference product with the bounds. Failures come back as a status and a
 * message, so that the C++ CUDA emulation tests (tests/cuda_emu), which do not link
 * Criterion, build this file too; qlayer.c wraps it in assertions for the Criterion
 * tests.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qlayer.h"
#include "testrng.h"

int qlayer_try_make(gptq_ctx *ctx, qlayer *L, int32_t bits, int32_t format, int64_t R,
                    int64_t C, int32_t gs, int act, int sym, uint64_t seed, const char **why)
{
    const int64_t ng = gs < 0 ? 1 : (C + gs - 1) / gs;
    const int32_t maxq = (1 << bits) - 1;
    int64_t qw[2], qz[2];
    gptq_unpacked u;
    int rc;

    memset(L, 0, sizeof *L);
    L->bits = bits;
    L->gs = gs;
    L->act = act;
    L->R = R;
    L->C = C;
    L->ng = ng;
    rc = gptq_packed_shape(bits, R, C, ng, qw, qz);
    if (rc != GPTQ_OK) {
        *why = "qlayer: no packed shape for these dimensions";
        return rc;
    }
    L->codes = malloc((size_t)(R * C) * sizeof(int32_t));
    L->zeros = malloc((size_t)(ng * R) * sizeof(int32_t));
    L->g_idx = malloc((size_t)C * sizeof(int32_t));
    L->scales = malloc((size_t)(ng * R) * sizeof(float));
    L->bias = malloc((size_t)R * sizeof(float));
    L->p.qweight = malloc((size_t)(qw[0] * qw[1]) * sizeof(int32_t));
    L->p.qzeros = malloc((size_t)(qz[0] * qz[1]) * sizeof(int32_t));
    L->p.scales = malloc((size_t)(ng * R) * sizeof(uint16_t));
    L->p.g_idx = malloc((size_t)C * sizeof(int32_t));
    if (!L->codes || !L->zeros || !L->g_idx || !L->scales || !L->bias || !L->p.qweight ||
        !L->p.qzeros || !L->p.scales || !L->p.g_idx) {
        qlayer_free(L);
        *why = "qlayer: out of memory";
        return GPTQ_ERR_OUT_OF_MEMORY;
    }
    for (int64_t i = 0; i < R * C; i++)
        L->codes[i] = (int32_t)(rng_next(&seed) % (uint64_t)(maxq + 1));
    for (int64_t i = 0; i < ng * R; i++) {
        L->zeros[i] = sym ? 1 << (bits - 1) : (int32_t)(rng_next(&seed) % (uint64_t)(maxq + 1));
        L->scales[i] =
            gptq_fp16_to_fp32(gptq_fp32_to_fp16(0.01f + 0.05f * fabsf(rng_uniform(&seed))));
    }
    if (!sym) {
        L->zeros[0] = 0; /* v1's awkward value and the top of the range */
        L->zeros[ng * R - 1] = maxq;
    }
    for (int64_t j = 0; j < C; j++)
        L->g_idx[j] = gs < 0 ? 0 : (int32_t)(j / gs);
    if (act)
        for (int64_t j = C - 1; j > 0; j--) {
            const int64_t k = (int64_t)(rng_next(&seed) % (uint64_t)(j + 1));
            const int32_t t = L->g_idx[j];
            L->g_idx[j] = L->g_idx[k];
            L->g_idx[k] = t;
        }
    for (int64_t r = 0; r < R; r++)
        L->bias[r] = rng_uniform(&seed);

    L->p.bits = bits;
    L->p.format = format;
    L->p.out_features = R;
    L->p.in_features = C;
    L->p.ngroups = ng;
    memset(&u, 0, sizeof u);
    u.bits = bits;
    u.group_size = gs;
    u.out_features = R;
    u.in_features = C;
    u.ngroups = ng;
    u.codes = L->codes;
    u.scales = L->scales;
    u.zeros = L->zeros;
    u.g_idx = L->g_idx;
    rc = gptq_pack(ctx, &u, GPTQ_PACK_CLEAN, &L->p);
    if (rc != GPTQ_OK) {
        *why = gptq_ctx_last_error(ctx);
        qlayer_free(L);
        return rc;
    }
    return GPTQ_OK;
}

void qlayer_free(qlayer *L)
{
    free(L->codes);
    free(L->zeros);
    free(L->g_idx);
    free(L->scales);
    free(L->bias);
    free(L->p.qweight);
    free(L->p.qzeros);
    free(L->p.scales);
    free(L->p.g_idx);
    L->codes = L->zeros = L->g_idx = NULL;
    L->scales = L->bias = NULL;
    L->p.qweight = L->p.qzeros = L->p.g_idx = NULL;
    L->p.scales = NULL;
}

int qlayer_try_reference(const qlayer *L, const float *x, int64_t batch, int with_bias,
                         int bound, double *ref, double *tol, const char **why)
{
    const int64_t R = L->R, C = L->C;
    int64_t ns = 0;
    char *used = calloc((size_t)L->ng, 1);

    if (!used) {
        *why = "qlayer_reference: out of memory";
        return GPTQ_ERR_OUT_OF_MEMORY;
    }
    for (int64_t j = 0; j < C; j++)
        if (!used[L->g_idx[j]]) {
            used[L->g_idx[j]] = 1;
            ns++;
        }
    free(used);
    /* Exact terms: a float32 x times a float16 scale times a small integer. */
    for (int64_t b = 0; b < batch; b++)
        for (int64_t r = 0; r < R; r++) {
            const double bb = with_bias ? L->bias[r] : 0.0;
            double y = bb, mag = fabs(bb), magw = fabs(bb), sum = 0.0;
            for (int64_t j = 0; j < C; j++) {
                const int64_t g = L->g_idx[j];
                const double s = L->scales[g * R + r], xv = x[b * C + j];
                const int32_t q = L->codes[r * C + j], z = L->zeros[g * R + r];
                const double w = s * (q - z);
                y += xv * w;
                mag += fabs(xv) * s * (q + z);
                magw += fabs(xv * w);
                sum += fabs(xv) + fabs(w);
            }
            ref[b * R + r] = y;
            if (bound == QLAYER_BOUND_F16)
                tol[b * R + r] = (0x1p-10 + (double)(C + 4) * 0x1p-23) * magw + 0x1p-24 * sum;
            else if (bound == QLAYER_BOUND_GEMV)
                tol[b * R + r] = (double)(2 * C + 64 * ns + 4) * 0x1p-24 * mag;
            else
                tol[b * R + r] = (double)(C + 2 * ns + 4) * 0x1p-24 * mag;
        }
    return GPTQ_OK;
}
