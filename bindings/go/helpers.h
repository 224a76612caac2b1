/*
 * C helpers of the Go binding. cgo forbids Go memory that holds Go pointers from being
 * passed to C, so the structs that point at caller buffers (gptq_packed,
 * gptq_unpacked) are built here, on the C side, from buffers passed one by one. The
 * progress trampoline lives here too: a file with //export may not define C functions
 * in its preamble.
 */
#ifndef GPTQ_GO_HELPERS_H
#define GPTQ_GO_HELPERS_H

#include <stdint.h>

#include <gptq/gptq.h>
#include <gptq/model.h>

int gptq_go_pack_result(gptq_ctx *ctx, const gptq_result *r, int32_t mode, int32_t bits,
                        int32_t format, int64_t out, int64_t in, int64_t ngroups,
                        int32_t *qweight, int32_t *qzeros, uint16_t *scales, int32_t *g_idx);

int gptq_go_pack(gptq_ctx *ctx, int32_t mode, int32_t bits, int32_t format, int64_t out,
                 int64_t in, int64_t ngroups, int32_t *codes, float *scales, int32_t *zeros,
                 int32_t *g_idx, int32_t *qweight, int32_t *qzeros, uint16_t *scales16,
                 int32_t *g_idx_out);

int gptq_go_unpack(gptq_ctx *ctx, int32_t mode, int32_t bits, int32_t format, int64_t out,
                   int64_t in, int64_t ngroups, int32_t *qweight, int32_t *qzeros,
                   uint16_t *scales16, int32_t *g_idx, int32_t *codes, float *scales,
                   int32_t *zeros, int32_t *g_idx_out);

int gptq_go_dequant_matmul(gptq_ctx *ctx, int32_t bits, int32_t format, int64_t out,
                           int64_t in, int64_t ngroups, int32_t *qweight, int32_t *qzeros,
                           uint16_t *scales16, int32_t *g_idx, const float *x, int64_t batch,
                           const float *bias, float *y);

/* Point opts at the Go log sink; `handle` is a runtime/cgo.Handle. */
void gptq_go_set_log(gptq_ctx_options *opts, uintptr_t handle, int32_t level);

/* Point opts at the Go progress callback; `handle` is a runtime/cgo.Handle. */
void gptq_go_set_progress(gptq_quantize_options *opts, uintptr_t handle);

#endif
