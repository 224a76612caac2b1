/*
 * Tensor-core dequantize-matmul for prepared 4- and 8-bit linears (qlinear_mma.cu).
 * The device layout, the kernel and the eligibility rules are described in
 * docs/cuda-mma-layout.md. Internal to the CUDA module.
 *
 * Usage: gptq_cu_mma_unsupported(ql) == NULL, then gptq_cu_mma_prepare once per layer,
 * then per call a workspace of gptq_cu_mma_workspace(m, batch) bytes and
 * gptq_cu_mma_forward. Forward calls on one gptq_cu_mma must be ordered (one stream, or
 * otherwise serialised): the split-K arrival counters live in the handle.
 *
 * Forward requirements beyond the declaration's comment: xp 16-byte aligned, ldx a
 * multiple of 8 and >= ql->cp, y 8-byte aligned; batch in 1..64.
 */
#ifndef GPTQ_CUDA_QLINEAR_MMA_H
#define GPTQ_CUDA_QLINEAR_MMA_H

#include <cuda_fp16.h>
#include "cuda_internal.h"
extern "C" {
#include "format/qlinear.h"
}

typedef struct gptq_cu_mma gptq_cu_mma;

/* NULL when ql can run on the MMA kernel, else the reason (static text). */
const char *gptq_cu_mma_unsupported(const gptq_qlinear *ql);

/* Build the MMA layout from ql's host layout and upload it (synchronous on s). */
int gptq_cu_mma_prepare(gptq_ctx *ctx, cudaStream_t s, const gptq_qlinear *ql, gptq_cu_mma **out);

void gptq_cu_mma_release(gptq_cu_mma *m);

/* Device workspace bytes gptq_cu_mma_forward needs for `batch` rows (may be 0). */
size_t gptq_cu_mma_workspace(const gptq_cu_mma *m, int64_t batch);

/* y[b][r] = sum_k xp[b][k] * Wq[r][k'] + bias[r], b < batch (1..64; the caller splits
 * larger batches), xp the input in ql's padded column order (ql->cp float16 columns,
 * rows ldx apart, padding columns 0); y float32 (y_half 0) or float16 (1), rows
 * out_features apart; bias device float32 or NULL; ws device workspace of
 * gptq_cu_mma_workspace bytes. Enqueued on s. Returns a gptq status (failures recorded
 * through gptq_cu_host->fail, see cuda_internal.h: gptq_cu_fail, CU_TRY). */
int gptq_cu_mma_forward(gptq_ctx *ctx, cudaStream_t s, const gptq_cu_mma *m, const __half *xp,
                        int64_t ldx, int64_t batch, void *y, int y_half, const float *bias,
                        void *ws);

#endif /* GPTQ_CUDA_QLINEAR_MMA_H */
