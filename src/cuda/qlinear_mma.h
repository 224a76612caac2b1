/*
 * Tensor-core dequantize-matmul for prepared 4- and 8-bit linears (qlinear_mma.cu).
 * The device layout, the kernel and the eligibility rules are described in
 * docs/cuda-mma-layout.md. Internal to the CUDA module.
 *
 * Usage: gptq_cu_mma_unsupported(ql) == NULL, then gptq_cu_mma_prepare once per layer,
 * then per call a workspace of gptq_cu_mma_workspace(m, batch) bytes, at least
 * gptq_cu_mma_counters(m) zeroed split-K arrival counters, and gptq_cu_mma_forward. The
 * handle is only read: calls on several streams may share it, each stream with its own
 * workspace and counters (the kernel leaves the counters at zero, so one buffer serves
 * every call on its stream).
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

/* Split-K arrival counters gptq_cu_mma_forward needs (0: none). */
size_t gptq_cu_mma_counters(const gptq_cu_mma *m);

/* y[b][r] = sum_k xp[b][k] * Wq[r][k'] + bias[r], b < batch (1..64; the caller splits
 * larger batches), xp the input in ql's padded column order (ql->cp float16 columns,
 * rows ldx apart, padding columns 0); y float32 (y_half 0) or float16 (1), rows
 * out_features apart; bias device float32 or NULL; ws device workspace of
 * gptq_cu_mma_workspace bytes; counters device unsigned[gptq_cu_mma_counters(m)], zero
 * on entry and again on completion. Enqueued on s. Returns a gptq status (failures recorded
 * through gptq_cu_host->fail, see cuda_internal.h: gptq_cu_fail, CU_TRY). */
int gptq_cu_mma_forward(gptq_ctx *ctx, cudaStream_t s, const gptq_cu_mma *m, const __half *xp,
                        int64_t ldx, int64_t batch, void *y, int y_half, const float *bias,
                        void *ws, unsigned *counters);

#endif /* GPTQ_CUDA_QLINEAR_MMA_H */
