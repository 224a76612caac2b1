/*
 * What the test programs of tests/cuda_emu share (defined in test_qlinear_emu.cpp):
 * counters and EXPECT, random layers (tests/support/qlayer.h, made and packed by the
 * public API) with their handles, the exact product with the bounds gptq.h states next
 * to gptq_qlinear_forward (qlayer's reference), and comparison.
 */
#ifndef GPTQ_CUDA_EMU_TEST_H
#define GPTQ_CUDA_EMU_TEST_H

#include <stdint.h>
#include <stdio.h>

#include "cuda_internal.h"
#include "qlayer.h"

extern int failures, checks;

#define EXPECT(cond, ...)                                                                  \
    do {                                                                                   \
        checks++;                                                                          \
        if (!(cond)) {                                                                     \
            failures++;                                                                    \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
        }                                                                                  \
    } while (0)

/* A random layer of tests/support/qlayer.h (zero points random, 0 and maxq included;
 * packed CLEAN as v1 or v2) and two handles on it (no bias, bias), made on ctx (a CPU
 * context). */
struct layer : qlayer {
    gptq_qlinear *ql[2];
};

void *xmalloc(size_t n);
int layer_make(gptq_ctx *ctx, layer *L, int32_t bits, int32_t fmt, int64_t R, int64_t C,
               int32_t gs, int act, uint64_t seed);
void layer_free(layer *L);

/* The bounds: the CPU kernels', CUDA_GEMV's, CUDA_MMA's (which CUDA_CUBLAS shares:
 * BOUND_CUBLAS is qlayer's F16 bound as BOUND_MMA is, its worst ratio kept apart). */
enum { BOUND_CPU, BOUND_GEMV, BOUND_MMA, BOUND_CUBLAS };

/* ref = x W^T (+ bias) in float64 and the bound of every output for `kind`:
 * qlayer_try_reference with the matching QLAYER_BOUND_. */
void reference(const layer *L, const float *x, int64_t batch, int bias, int kind, double *ref,
               double *tol);
/* One more float16 rounding of the result. */
void widen_for_half(const double *ref, double *tol, int64_t n);
/* The largest error / bound seen per kind. */
extern double worst_seen[4];
/* y (float32, or float16 bits when half) against ref within tol; one line per failure. */
void compare(int kind, const char *what, const void *y, int half, const double *ref,
             const double *tol, int64_t batch, int64_t R);
/* x[n] uniform in [-1, 1), exactly representable in dtype, and its encoding. */
void make_x(int64_t n, int32_t dtype, uint64_t *seed, float *x, void *enc);
const char *dtype_name(int32_t d);
/* The CPU kernel on the same input, against the same exact product. */
void check_cpu(gptq_ctx *ctx, const layer *L, int bias, const float *x, int64_t batch,
               const char *what);

/* test_qlinear_module_emu.cpp: src/cuda/qlinear.cu through its entry points. */
void test_module(gptq_ctx *ctx);
/* test_quant_block_emu.cpp: src/cuda/quant_block.cu against the CPU backend's kernel. */
void test_quant_block(gptq_ctx *ctx);
/* test_model_ops_emu.cpp: src/cuda/model_ops.cu against the model's host operations. */
void test_model_ops(gptq_ctx *ctx);

#endif /* GPTQ_CUDA_EMU_TEST_H */
