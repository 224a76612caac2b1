/*
 * AutoGPTQ-exact packing (GPTQ_PACK_AUTOGPTQ): the bytes AutoGPTQ 0.8 writes for a
 * float16 model, reproduced from auto_gptq/nn_modules/qlinear/qlinear_cuda.py
 * `QuantLinear.pack` (FORMATS.md sections 3.2-3.4). Only byte-identity tests and users
 * who must reproduce an AutoGPTQ checkpoint need it; the default packer packs GPTQ's
 * own integer codes (pack.c).
 *
 * What AutoGPTQ does that a clean packer does not:
 *   1. It does not pack GPTQ's codes. It re-derives them from the float16 weight that
 *      GPTQ wrote back into the layer:
 *          scale_zeros = zeros * scales                       (float32 x float32)
 *          intweight   = round((W16 + scale_zeros[g]) / scales16[g]).to(int32)
 *      W16 + scale_zeros promotes to float32 and the division is a true float32
 *      division by the float16 scale. Where fl16(scale) is subnormal the quotient drifts
 *      and codes can leave [0, maxq]; nothing clamps them.
 *   2. The int32 codes become uint32 (`numpy().astype(np.uint32)`) and are OR-ed into
 *      the word shifted left by their field position, in uint32 arithmetic: a negative
 *      or too large code spills into the higher fields of the same word, and bits
 *      shifted past bit 31 are dropped.
 *   3. v1 zero points are computed as float32 (zero - 1) and converted to uint32 the
 *      same way, so a zero point of 0 becomes -1.0 -> 0xFFFFFFFF on x86-64 and, once
 *      shifted and OR-ed, sets its own field and every higher field of that word.
 *   4. For 3 bits the loop packs 10 values per word and splits values 10 and 21 of
 *      every 32 by hand: `<< 30` / `<< 31` into the lower word (high bits dropped), then
 *      `(v >> 2) & 1` / `(v >> 1) & 3` into the next one, so the straddling part never
 *      spills further.
 *   5. Word counts are in // 32 * bits and out // 32 * bits: AutoGPTQ silently drops
 *      tail elements, which is why the caller requires multiples of 32.
 */
#include <math.h>

#include "format.h"

/* numpy's float -> uint32 cast as it behaves on x86-64 for the values AutoGPTQ feeds
 * it (integral, |v| < 2^31): through a signed 64-bit conversion, so -1.0 gives
 * 0xFFFFFFFF. Written with well-defined C conversions (the direct cast of a negative
 * float to an unsigned type is undefined behaviour). */
static uint32_t np_float_to_u32(float v)
{
    return (uint32_t)(int64_t)v;
}

/* torch's float32 -> int32 `.to(torch.int)` followed by `.astype(np.uint32)`. NaN and
 * values outside the int32 range (possible only with a float16 scale of 0 or a huge Q)
 * give x86's "integer indefinite" 0x80000000 as cvttss2si/cvttps2dq do. */
static uint32_t torch_float_to_i32_bits(float v)
{
    if (!(v >= -2147483648.0f && v < 2147483648.0f))
        return 0x80000000u;
    return (uint32_t)(int32_t)v;
}

/* AutoGPTQ's re-derived code for one weight (point 1 above). */
static uint32_t ag_code(float q, float scale, int32_t zero)
{
    float w16 = gptq__f16_to_f32(gptq__f32_to_f16(q));
    float s16 = gptq__f16_to_f32(gptq__f32_to_f16(scale));
    float scale_zero = (float)zero * scale;
    float sum = w16 + scale_zero;
    return torch_float_to_i32_bits(rintf(sum / s16));
}

/* Pack 32 values into `bits` words exactly as the body of AutoGPTQ's `while row <
 * qweight.shape[0]` loop does (the qzeros loop is the same along the other axis). */
static void ag_pack32(const uint32_t *v, int32_t bits, uint32_t *out)
{
    if (bits != 3) {
        const int32_t per = 32 / bits;
        for (int32_t k = 0; k < bits; k++) {
            uint32_t w = 0;
            for (int32_t m = 0; m < per; m++)
                w |= v[k * per + m] << (bits * m);
            out[k] = w;
        }
        return;
    }
    {
        uint32_t w0 = 0, w1 = 0, w2 = 0;
        for (int32_t e = 0; e < 10; e++)
            w0 |= v[e] << (3 * e);
        w0 |= v[10] << 30;
        w1 |= (v[10] >> 2) & 1u;
        for (int32_t e = 0; e < 10; e++)
            w1 |= v[11 + e] << (3 * e + 1);
        w1 |= v[21] << 31;
        w2 |= (v[21] >> 1) & 3u;
        for (int32_t e = 0; e < 10; e++)
            w2 |= v[22 + e] << (3 * e + 2);
        out[0] = w0;
        out[1] = w1;
        out[2] = w2;
    }
}

void gptq__pack_autogptq(const gptq_unpacked *src, gptq_packed *dst)
{
    const int32_t bits = src->bits;
    const int64_t R = src->out_features, C = src->in_features, ng = src->ngroups;
    const int64_t nzw = R / 32 * bits; /* qzeros words per group row */
    uint32_t *qweight = (uint32_t *)dst->qweight;
    uint32_t *qzeros = (uint32_t *)dst->qzeros;
    uint32_t v[32], words[8];

    /* qweight[w, r]: 32 input columns of output row r at a time. */
    for (int64_t r = 0; r < R; r++) {
        const float *qrow = src->q + r * C;
        for (int64_t j0 = 0; j0 < C; j0 += 32) {
            for (int32_t e = 0; e < 32; e++) {
                int64_t g = src->g_idx[j0 + e];
                v[e] = ag_code(qrow[j0 + e], src->scales[g * R + r], src->zeros[g * R + r]);
            }
            ag_pack32(v, bits, words);
            for (int32_t k = 0; k < bits; k++)
                qweight[(j0 / 32 * bits + k) * R + r] = words[k];
        }
    }

    /* qzeros[g, k]: `zeros -= 1` on the float32 zeros, then astype(np.uint32). */
    for (int64_t g = 0; g < ng; g++) {
        for (int64_t r0 = 0; r0 < R; r0 += 32) {
            for (int32_t e = 0; e < 32; e++)
                v[e] = np_float_to_u32((float)src->zeros[g * R + r0 + e] - 1.0f);
            ag_pack32(v, bits, words);
            for (int32_t k = 0; k < bits; k++)
                qzeros[g * nzw + r0 / 32 * bits + k] = words[k];
        }
    }
}
