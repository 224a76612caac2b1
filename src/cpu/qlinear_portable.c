/*
 * The portable gptq_qlinear kernel: plain C11 on the layout of src/format/qlinear.h,
 * for CPUs without AVX2 and as the reference the SIMD kernels are tested against.
 * Every row of a tile is a lane of a 16-wide loop the compiler may vectorise with the
 * baseline instruction set; products and sums are rounded separately (the project
 * compiles with -ffp-contract=off), one accumulator per lane, columns in order.
 *
 * Batch rows are handled CHUNK at a time, so one decode of a block's codes serves
 * CHUNK rows of x, and a tile's codes are re-read from cache, not memory, by the next
 * chunk.
 */
#include "format/qlinear.h"

#define L GPTQ__QL_ROWS
#define CHUNK 4

/* Codes of column m of a block as floats, one per tile row. */
static inline void decode_col(const uint32_t *blk, int32_t bits, int32_t m, float q[L])
{
    if (bits == 3) {
        const uint32_t *lo = blk + (m / 16) * L;
        const int32_t sh = 2 * (m % 16), hb = gptq__ql_hi_bit(m);
        for (int l = 0; l < L; l++)
            q[l] = (float)(((lo[l] >> sh) & 3u) | ((blk[2 * L + l] >> hb) & 1u) << 2);
    } else {
        const uint32_t mask = (1u << bits) - 1u;
        const int32_t sh = bits * m;
        for (int l = 0; l < L; l++)
            q[l] = (float)((blk[l] >> sh) & mask);
    }
}

static inline void tile_chunk(const gptq__ql_args *a, int64_t t, int64_t b0, int64_t nb,
                              int32_t bits)
{
    const gptq_qlinear *ql = a->ql;
    const uint32_t *tile = gptq__ql_tile_codes(ql, t);
    const int64_t words = (int64_t)ql->wpb * L, R = ql->out_features;
    float yacc[CHUNK][L], acc[CHUNK][L], q[L];

    for (int64_t b = 0; b < nb; b++)
        for (int l = 0; l < L; l++)
            yacc[b][l] = 0.0f;
    for (int64_t s = 0; s < ql->nseg; s++) {
        const uint16_t *sc = gptq__ql_seg_scales(ql, t, s);
        const uint8_t *zp = gptq__ql_seg_zeros(ql, t, s);
        for (int64_t b = 0; b < nb; b++)
            for (int l = 0; l < L; l++)
                acc[b][l] = 0.0f;
        for (int64_t k = ql->seg_blk[s]; k < ql->seg_blk[s + 1]; k++) {
            const uint32_t *blk = tile + k * words;
            for (int32_t m = 0; m < ql->kb; m++) {
                decode_col(blk, bits, m, q);
                for (int64_t b = 0; b < nb; b++) {
                    const float xv = a->x[(b0 + b) * a->ldx + k * ql->kb + m];
                    for (int l = 0; l < L; l++)
                        acc[b][l] += xv * q[l];
                }
            }
        }
        for (int64_t b = 0; b < nb; b++) {
            const float xs = a->xsum[(b0 + b) * ql->nseg + s];
            for (int l = 0; l < L; l++) {
                const float centred = acc[b][l] - (float)zp[l] * xs;
                yacc[b][l] += gptq__f16_to_f32(sc[l]) * centred;
            }
        }
    }
    for (int64_t b = 0; b < nb; b++)
        for (int l = 0; l < L && t * L + l < R; l++)
            a->y[(b0 + b) * R + t * L + l] =
                ql->bias ? yacc[b][l] + ql->bias[t * L + l] : yacc[b][l];
}

static void tiles_bits(const gptq__ql_args *a, int64_t t0, int64_t t1, int32_t bits)
{
    for (int64_t t = t0; t < t1; t++)
        for (int64_t b0 = 0; b0 < a->batch; b0 += CHUNK)
            tile_chunk(a, t, b0, a->batch - b0 < CHUNK ? a->batch - b0 : CHUNK, bits);
}

void gptq__ql_tiles_portable(const gptq__ql_args *a, int64_t t0, int64_t t1)
{
    /* Constant bit widths let the compiler unroll the decoding. */
    switch (a->ql->bits) {
    case 2: tiles_bits(a, t0, t1, 2); break;
    case 3: tiles_bits(a, t0, t1, 3); break;
    case 4: tiles_bits(a, t0, t1, 4); break;
    default: tiles_bits(a, t0, t1, 8); break;
    }
}

static void dequant_bits(const gptq_qlinear *ql, int64_t t, float *dst, int64_t ldd, int nr,
                         int32_t bits)
{
    const uint32_t *tile = gptq__ql_tile_codes(ql, t);
    const int64_t words = (int64_t)ql->wpb * L;
    float q[L];

    for (int64_t s = 0; s < ql->nseg; s++) {
        const uint16_t *sc = gptq__ql_seg_scales(ql, t, s);
        const uint8_t *zp = gptq__ql_seg_zeros(ql, t, s);
        float scale[L], zero[L];
        for (int l = 0; l < L; l++) {
            scale[l] = gptq__f16_to_f32(sc[l]);
            zero[l] = (float)zp[l];
        }
        for (int64_t k = ql->seg_blk[s]; k < ql->seg_blk[s + 1]; k++)
            for (int32_t m = 0; m < ql->kb; m++) {
                const int64_t kk = k * ql->kb + m;
                const int64_t j = ql->colmap ? ql->colmap[kk] : kk;
                if (j < 0)
                    continue;
                decode_col(tile + k * words, bits, m, q);
                for (int l = 0; l < nr; l++)
                    dst[j * ldd + l] = scale[l] * (q[l] - zero[l]);
            }
    }
}

void gptq__ql_dequant_portable(const gptq_qlinear *ql, int64_t t, float *dst, int64_t ldd, int nr)
{
    switch (ql->bits) {
    case 2: dequant_bits(ql, t, dst, ldd, nr, 2); break;
    case 3: dequant_bits(ql, t, dst, ldd, nr, 3); break;
    case 4: dequant_bits(ql, t, dst, ldd, nr, 4); break;
    default: dequant_bits(ql, t, dst, ldd, nr, 8); break;
    }
}
