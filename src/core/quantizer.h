/*
 * The GPTQ quantizer (IST-DASLab quant.py `Quantizer`, identical in AutoGPTQ), per
 * output row, in float32 exactly as the references compute it. Doing any of this in
 * double changes results (e.g. the zero of an all-zero asymmetric row is 7 in float32
 * and 8 in double), so every intermediate is a float and the library is compiled with
 * -ffp-contract=off. round() is round-half-to-even (rintf in the default rounding
 * mode), and x / scale is a true division.
 */
#ifndef GPTQ_CORE_QUANTIZER_H
#define GPTQ_CORE_QUANTIZER_H

#include <math.h>
#include <stdint.h>

/* find_params over the n values x[0..n) of one row (quant.py find_params with
 * perchannel=True, weight=True). */
static inline void gptq__find_params(const float *x, int64_t n, int32_t maxq, int sym,
                                     float *scale, float *zero)
{
    float xmin = 0.0f, xmax = 0.0f; /* every range contains 0 */
    for (int64_t j = 0; j < n; j++) {
        xmin = x[j] < xmin ? x[j] : xmin;
        xmax = x[j] > xmax ? x[j] : xmax;
    }
    if (sym) {
        float a = fabsf(xmin);
        xmax = a > xmax ? a : xmax;
        if (xmin < 0.0f) /* a row with no negative value keeps xmin = 0 */
            xmin = -xmax;
    }
    if (xmin == 0.0f && xmax == 0.0f) {
        xmin = -1.0f;
        xmax = 1.0f;
    }
    *scale = (xmax - xmin) / (float)maxq;
    if (sym)
        *zero = (float)(maxq + 1) / 2.0f;
    else
        *zero = rintf(-xmin / *scale);
}

/* quantize(): the integer code of w, clamp(round(w / scale) + zero, 0, maxq). */
static inline float gptq__quant_code(float w, float scale, float zero, int32_t maxq)
{
    float q = rintf(w / scale) + zero;
    if (q < 0.0f)
        q = 0.0f;
    if (q > (float)maxq)
        q = (float)maxq;
    return q;
}

/* dequantize(): scale * (q - zero). */
static inline float gptq__dequant(float q, float scale, float zero) { return scale * (q - zero); }

#endif /* GPTQ_CORE_QUANTIZER_H */
