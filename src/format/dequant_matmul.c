/*
 * gptq_dequant_matmul: y = x * Wq^T (+ bias) straight from checkpoint tensors, as a
 * one-shot use of a prepared layer (src/format/qlinear.c): the tensors are repacked
 * into a temporary gptq_qlinear, multiplied, and the handle freed. With W's rows as
 * output channels (FORMATS.md section 3.1):
 *
 *     y[b, r] = sum_j x[b, j] * scale[g_idx[j], r] * (code[r, j] - zero[g_idx[j], r])
 *
 * where scale is the float16 scale widened to float32, and zero is the stored field
 * (v2) or (stored + 1) mod 2^bits (v1, as AutoGPTQ's qlinear_cuda_old torch path and
 * the reference checker read it).
 *
 * Repacking is one pass over the packed words (a copy for 2/4/8 bits without
 * act-order). One-shot, this was still faster than the float-unpacking kernel this
 * function had before, at every batch measured (docs/benchmarks.md), but most of its
 * time is the repacking and the fresh buffers' page faults: callers that multiply the
 * same layer repeatedly should keep a gptq_qlinear instead.
 */
#include "format.h"
#include "qlinear.h"

int gptq_dequant_matmul(gptq_ctx *ctx, const gptq_packed *w, const float *x, int64_t batch,
                        const float *bias, float *y)
{
    const char *fn = "gptq_dequant_matmul";
    gptq_qlinear *ql = NULL;
    int rc;

    /* The cheap argument checks first, so that a bad call costs no repacking. */
    if (!x || !y)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, x ? "y" : "x");
    if (batch < 1)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: batch = %lld (must be >= 1)", fn,
                         (long long)batch);
    GPTQ_TRY(gptq__packed_check(ctx, w, fn));
    GPTQ_TRY(gptq__qlinear_create_host(ctx, w, bias, &ql)); /* on the host, as documented */
    rc = gptq_qlinear_forward(ctx, ql, x, batch, y);
    gptq_qlinear_free(ql);
    return rc;
}
