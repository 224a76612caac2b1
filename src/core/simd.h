/*
 * Portable 16-lane float vectors (GCC/Clang vector extensions) for the forward pass's
 * element-wise kernels. In a GPTQ_MULTIVERSION function (internal.h) a vecw is one zmm
 * register in the AVX-512 copy, two ymm in the AVX2 one and four xmm otherwise; the
 * arithmetic is element-wise, so every copy rounds alike.
 *
 * Vectors are moved with memcpy (GPTQ_LOADW/GPTQ_STOREW) and helpers take pointers: a
 * function returning a vecw by value would have a different ABI in each copy.
 */
#ifndef GPTQ_SIMD_H
#define GPTQ_SIMD_H

#include <stdint.h>
#include <string.h>

#define GPTQ_VW 16

typedef float gptq_vecw __attribute__((vector_size(GPTQ_VW * sizeof(float))));
typedef int32_t gptq_veci __attribute__((vector_size(GPTQ_VW * sizeof(int32_t))));

#define GPTQ_LOADW(v, p) memcpy(&(v), (p), sizeof(gptq_vecw))
#define GPTQ_STOREW(p, v) memcpy((p), &(v), sizeof(gptq_vecw))

/* y[0..15] = exp(x[0..15]) in float32, within about 2 ulp of the exact value (x may
 * alias y). exp(x) = 2^n * exp(r) with n = round(x / ln 2) and r = x - n ln 2 in
 * [-0.347, 0.347] (ln 2 split in two so that n * hi is exact), exp(r) by its Taylor
 * series to r^7 (truncation below 1e-8 relative), 2^n built in the exponent bits.
 * Inputs are clamped to [-87.33, 88.37], where 2^n stays a normal float: exp of less
 * gives FLT_MIN (1.2e-38) instead of a subnormal or 0, of more 2.4e38 instead of up to
 * 3.4e38 or inf; a NaN stays NaN. Good for softmax weights and SiLU, not for a
 * general-purpose exp. */
static inline void gptq__exp16(const float *x, float *y)
{
    const gptq_vecw zero = {0.0f};
    const gptq_vecw lo = zero + -87.33654f, hi = zero + 88.37626f;
    gptq_vecw v, n, r, p;
    gptq_veci below, above, e;

    GPTQ_LOADW(v, x);
    below = v < lo; /* lanes of -1 where true; false for NaN */
    above = v > hi;
    v = (gptq_vecw)(((gptq_veci)v & ~below) | ((gptq_veci)lo & below));
    v = (gptq_vecw)(((gptq_veci)v & ~above) | ((gptq_veci)hi & above));
    n = v * 1.44269504088896341f;
    n = (n + 12582912.0f) - 12582912.0f; /* round to nearest: |n| < 2^22 */
    r = (v - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
    p = r * (1.0f / 5040.0f) + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    e = (__builtin_convertvector(n, gptq_veci) + 127) << 23; /* 2^n, n in [-126, 127] */
    p = p * (gptq_vecw)e;
    GPTQ_STOREW(y, p);
}

#endif /* GPTQ_SIMD_H */
