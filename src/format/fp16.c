/*
 * IEEE binary16 and bfloat16 conversions, done on bit patterns so the result never
 * depends on the compiler, the FPU mode or F16C availability.
 *
 * float32 -> float16 rounds to nearest, ties to even, as torch's `.half()` and numpy's
 * `astype(np.float16)` do (AutoGPTQ writes `scales.half()`, so a checkpoint's scales
 * are fl16(float32 scale)). That covers float16 subnormals (|x| < 2^-14, steps of
 * 2^-24), overflow to infinity (|x| >= 65520, the midpoint between 65504 and 2^16, goes
 * to infinity because 65504's significand is odd), and NaN. NaN payloads are kept as
 * numpy's npy_floatbits_to_halfbits keeps them (top 10 significand bits; a payload that
 * would vanish becomes 1), so every float16 survives float16 -> float32 -> float16
 * unchanged, signalling NaNs included.
 *
 * float16 -> float32 and bfloat16 -> float32 are exact.
 */
#include <string.h>

#include "internal.h"

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t gptq__f32_to_f16(float f)
{
    const uint32_t x = f32_bits(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7FFFFFFFu;

    if (ax >= 0x7F800000u) {
        if (ax == 0x7F800000u)
            return (uint16_t)(sign | 0x7C00u);
        /* NaN: keep the top of the payload (and so the quiet bit); never let it
         * collapse to the infinity pattern. */
        uint16_t payload = (uint16_t)((ax >> 13) & 0x3FFu);
        return (uint16_t)(sign | 0x7C00u | (payload ? payload : 1u));
    }
    /* 0x477FF000 is 65520: at or above it the value rounds to 2^16, past float16. */
    if (ax >= 0x477FF000u)
        return (uint16_t)(sign | 0x7C00u);
    if (ax >= 0x38800000u) {
        /* Normal float16 (>= 2^-14): drop 13 significand bits, rounding to nearest
         * even; a carry out of the significand correctly bumps the exponent. The
         * exponent is rebiased from 127 to 15 by subtracting 112 << 23. */
        uint32_t odd = (ax >> 13) & 1u;
        return (uint16_t)(sign | ((ax + 0x0FFFu + odd - 0x38000000u) >> 13));
    }
    if (ax < 0x33000000u) /* below 2^-25, half the smallest subnormal: rounds to 0 */
        return sign;
    {
        /* Subnormal result: the value is m * 2^(e - 150) with the 24-bit significand
         * m, and a float16 subnormal is k * 2^-24, so k = m >> (126 - e), rounded to
         * nearest even. k may round up to 0x400, which is exactly the smallest normal
         * float16's bit pattern. */
        uint32_t e = ax >> 23; /* 102 .. 112 */
        uint32_t m = (ax & 0x007FFFFFu) | 0x00800000u;
        uint32_t shift = 126u - e; /* 14 .. 24 */
        uint32_t k = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (k & 1u)))
            k++;
        return (uint16_t)(sign | k);
    }
}

float gptq__f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1Fu;
    const uint32_t man = h & 0x3FFu;

    if (exp == 0x1Fu) /* infinity or NaN, payload kept in the top significand bits */
        return f32_from_bits(sign | 0x7F800000u | (man << 13));
    if (exp == 0) {
        /* Zero or subnormal: man * 2^-24 is exact in float32 (a 10-bit integer times a
         * power of two), and normal there. */
        float v = (float)man * 0x1p-24f;
        return f32_from_bits(sign | f32_bits(v));
    }
    return f32_from_bits(sign | ((exp + 112u) << 23) | (man << 13));
}

float gptq__bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

uint16_t gptq_fp32_to_fp16(float f) { return gptq__f32_to_f16(f); }

float gptq_fp16_to_fp32(uint16_t h) { return gptq__f16_to_f32(h); }
