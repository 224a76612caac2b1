/*
 * Test support: random prepared-linear layers (codes, zero points, float16-exact
 * scales, g_idx with optional act-order shuffle, packed as v1 or v2) and their float64
 * reference product with the error bound of each kernel family, as include/gptq/gptq.h
 * states them next to gptq_qlinear_forward. Shared by test_qlinear.c (CPU kernels),
 * test_cuda.c (GPU kernels) and the C++ CUDA emulation tests (tests/cuda_emu).
 *
 * qlayer_make.c holds the part without Criterion (qlayer_try_make, qlayer_free,
 * qlayer_try_reference: a status and a message on failure); qlayer.c the asserting
 * wrappers for the Criterion tests (qlayer_make, qlayer_reference, qlayer_check).
 */
#ifndef GPTQ_TEST_QLAYER_H
#define GPTQ_TEST_QLAYER_H

#include <stdint.h>

#include "gptq/gptq.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qlayer {
    int32_t bits, gs;               /* gs: the group size asked for, -1 for one group */
    int act;                        /* g_idx shuffled */
    int64_t R, C, ng;
    int32_t *codes, *zeros, *g_idx; /* [R*C], [ng*R], [C] */
    float *scales;                  /* [ng*R], float16-exact */
    float *bias;                    /* [R] */
    gptq_packed p;                  /* the same, packed CLEAN */
} qlayer;

/* R x C, `bits`, groups of gs columns (-1: one), act: g_idx shuffled, sym: zero points
 * 2^(bits-1) (else random, with 0 and maxq present), format GPTQ_FORMAT_V1/V2. GPTQ_OK,
 * or the failing status with *why set (L's arrays then freed and NULL). */
int qlayer_try_make(gptq_ctx *ctx, qlayer *L, int32_t bits, int32_t format, int64_t R,
                    int64_t C, int32_t gs, int act, int sym, uint64_t seed, const char **why);
/* The same, asserting success (Criterion tests). */
void qlayer_make(gptq_ctx *ctx, qlayer *L, int32_t bits, int32_t format, int64_t R, int64_t C,
                 int32_t gs, int act, int sym, uint64_t seed);
void qlayer_free(qlayer *L);

/* Which bound qlayer_reference puts in tol (n = C, ns = groups present):
 *   CPU:  (n + 2 ns + 4) 2^-24 (sum |x| s (q + z) + |bias|)
 *   GEMV: (2 n + 64 ns + 4) 2^-24 (sum |x| s (q + z) + |bias|)
 *   F16:  (2^-10 + (n + 4) 2^-23) (sum |x w| + |bias|) + 2^-24 sum (|x| + |w|),
 *         w = s (q - z): CUDA_MMA and CUDA_CUBLAS (x and w rounded to float16). */
enum { QLAYER_BOUND_CPU, QLAYER_BOUND_GEMV, QLAYER_BOUND_F16 };

/* ref[b*R + r] = (x W^T + bias)[b, r] in float64 (bias only when with_bias), tol the
 * chosen bound. GPTQ_OK, or GPTQ_ERR_OUT_OF_MEMORY with *why set. */
int qlayer_try_reference(const qlayer *L, const float *x, int64_t batch, int with_bias,
                         int bound, double *ref, double *tol, const char **why);
/* The same, asserting success (Criterion tests). */
void qlayer_reference(const qlayer *L, const float *x, int64_t batch, int with_bias, int bound,
                      double *ref, double *tol);

/* Assert |y - ref| <= tol for n outputs; `what` names the case in the message. */
void qlayer_check(const double *ref, const double *tol, const float *y, int64_t n,
                  const char *what);

#ifdef __cplusplus
}
#endif

#endif /* GPTQ_TEST_QLAYER_H */
