/*
 * The AVX2 gptq_qlinear kernel (AVX2 + FMA + F16C), selected at run time like the
 * AVX-512 one (src/cpu/qlinear_avx512.c, which explains the scheme). A block's 16 rows
 * are two 256-bit halves, rows 0..7 and 8..15, decoded and accumulated side by side;
 * with 16 vector registers, up to 4 batch rows share each decoded column.
 */
#include <immintrin.h>

#include "format/qlinear.h"

#define L GPTQ__QL_ROWS
#define CHUNK 4
#define PREFETCH_WORDS 512 /* 2 KiB ahead, as in the AVX-512 kernel */
#define TARGET __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline)) TARGET

int gptq__ql_cpu_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

INLINE __m256 decode_col(__m256i v, const int bits, const int m)
{
    const int kb = 32 / bits;
    __m256i c = _mm256_srli_epi32(v, bits * m);
    if (m != kb - 1)
        c = _mm256_and_si256(c, _mm256_set1_epi32((1 << bits) - 1));
    return _mm256_cvtepi32_ps(c);
}

INLINE __m256 decode_col3(__m256i lo, __m256i hi, const int m)
{
    const int ml = m % 16, hb = gptq__ql_hi_bit(m);
    __m256i c = _mm256_srli_epi32(lo, 2 * ml);
    __m256i h = hb >= 2 ? _mm256_srli_epi32(hi, hb - 2) : _mm256_slli_epi32(hi, 2 - hb);
    if (ml != 15)
        c = _mm256_and_si256(c, _mm256_set1_epi32(3));
    h = _mm256_and_si256(h, _mm256_set1_epi32(4));
    return _mm256_cvtepi32_ps(_mm256_or_si256(c, h));
}

/* Half `h` (rows 8h..8h+7) of 16 float16 scales / byte zero points. */
INLINE __m256 load_scales(const uint16_t *sc, int h)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sc + 8 * h)));
}

INLINE __m256 load_zeros(const uint8_t *zp, int h)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(zp + 8 * h))));
}

INLINE void tile_chunk(const gptq__ql_args *a, int64_t t, int64_t b0, const int MC,
                       const int BITS)
{
    const gptq_qlinear *ql = a->ql;
    const int KB = BITS == 3 ? 32 : 32 / BITS;
    const int W = BITS == 3 ? 3 * L : L;
    const int NACC = MC == 1 ? 4 : MC == 2 ? 2 : 1;
    const int64_t ldx = a->ldx, R = ql->out_features;
    const uint32_t *tile = gptq__ql_tile_codes(ql, t);
    const float *x = a->x + b0 * ldx;
    __m256 yv[CHUNK][2], acc[CHUNK][4][2];

    for (int b = 0; b < MC; b++)
        yv[b][0] = yv[b][1] = _mm256_setzero_ps();
    for (int64_t s = 0; s < ql->nseg; s++) {
        const uint32_t *blk = tile + ql->seg_blk[s] * W;
        const uint32_t *end = tile + ql->seg_blk[s + 1] * W;
        const float *xk = x + ql->seg_blk[s] * KB;
        const uint16_t *sc = gptq__ql_seg_scales(ql, t, s);
        const uint8_t *zp = gptq__ql_seg_zeros(ql, t, s);

        for (int b = 0; b < MC; b++)
            for (int n = 0; n < NACC; n++)
                acc[b][n][0] = acc[b][n][1] = _mm256_setzero_ps();
        for (; blk < end; blk += W, xk += KB) {
            _mm_prefetch((const char *)(blk + PREFETCH_WORDS), _MM_HINT_T0);
            if (BITS == 3) {
                const __m256i lo00 = _mm256_load_si256((const __m256i *)blk);
                const __m256i lo01 = _mm256_load_si256((const __m256i *)(blk + 8));
                const __m256i lo10 = _mm256_load_si256((const __m256i *)(blk + L));
                const __m256i lo11 = _mm256_load_si256((const __m256i *)(blk + L + 8));
                const __m256i hi0 = _mm256_load_si256((const __m256i *)(blk + 2 * L));
                const __m256i hi1 = _mm256_load_si256((const __m256i *)(blk + 2 * L + 8));
#pragma GCC unroll 32
                for (int m = 0; m < 32; m++) {
                    const __m256 q0 = decode_col3(m < 16 ? lo00 : lo10, hi0, m);
                    const __m256 q1 = decode_col3(m < 16 ? lo01 : lo11, hi1, m);
#pragma GCC unroll 4
                    for (int b = 0; b < MC; b++) {
                        const __m256 xv = _mm256_broadcast_ss(xk + b * ldx + m);
                        acc[b][m % NACC][0] = _mm256_fmadd_ps(q0, xv, acc[b][m % NACC][0]);
                        acc[b][m % NACC][1] = _mm256_fmadd_ps(q1, xv, acc[b][m % NACC][1]);
                    }
                }
            } else {
                const __m256i v0 = _mm256_load_si256((const __m256i *)blk);
                const __m256i v1 = _mm256_load_si256((const __m256i *)(blk + 8));
#pragma GCC unroll 16
                for (int m = 0; m < KB; m++) {
                    const __m256 q0 = decode_col(v0, BITS, m);
                    const __m256 q1 = decode_col(v1, BITS, m);
#pragma GCC unroll 4
                    for (int b = 0; b < MC; b++) {
                        const __m256 xv = _mm256_broadcast_ss(xk + b * ldx + m);
                        acc[b][m % NACC][0] = _mm256_fmadd_ps(q0, xv, acc[b][m % NACC][0]);
                        acc[b][m % NACC][1] = _mm256_fmadd_ps(q1, xv, acc[b][m % NACC][1]);
                    }
                }
            }
        }
        for (int h = 0; h < 2; h++) {
            const __m256 scv = load_scales(sc, h), z = load_zeros(zp, h);
            for (int b = 0; b < MC; b++) {
                __m256 dot = acc[b][0][h];
                for (int n = 1; n < NACC; n++)
                    dot = _mm256_add_ps(dot, acc[b][n][h]);
                dot = _mm256_fnmadd_ps(z, _mm256_set1_ps(a->xsum[(b0 + b) * ql->nseg + s]), dot);
                yv[b][h] = _mm256_fmadd_ps(scv, dot, yv[b][h]);
            }
        }
    }
    {
        const int64_t nr = R - t * L < L ? R - t * L : L;
        for (int b = 0; b < MC; b++) {
            float *dst = a->y + (b0 + b) * R + t * L;
            float tmp[L];
            for (int h = 0; h < 2; h++) {
                __m256 v = yv[b][h];
                if (ql->bias)
                    v = _mm256_add_ps(v, _mm256_loadu_ps(ql->bias + t * L + 8 * h));
                if (nr == L)
                    _mm256_storeu_ps(dst + 8 * h, v);
                else
                    _mm256_storeu_ps(tmp + 8 * h, v);
            }
            for (int64_t l = 0; nr < L && l < nr; l++)
                dst[l] = tmp[l];
        }
    }
}

#define CHUNK_CASES(BITS)                                        \
    case 1: tile_chunk(a, t, b0, 1, BITS); break;                \
    case 2: tile_chunk(a, t, b0, 2, BITS); break;                \
    case 3: tile_chunk(a, t, b0, 3, BITS); break;                \
    default: tile_chunk(a, t, b0, 4, BITS); break;

#define TILES_FN(BITS)                                                               \
    TARGET static void tiles_##BITS(const gptq__ql_args *a, int64_t t0, int64_t t1)  \
    {                                                                                \
        for (int64_t t = t0; t < t1; t++)                                            \
            for (int64_t b0 = 0; b0 < a->batch; b0 += CHUNK) {                       \
                switch (a->batch - b0 < CHUNK ? a->batch - b0 : CHUNK) {             \
                    CHUNK_CASES(BITS)                                                \
                }                                                                    \
            }                                                                        \
    }

TILES_FN(2)
TILES_FN(3)
TILES_FN(4)
TILES_FN(8)

void gptq__ql_tiles_avx2(const gptq__ql_args *a, int64_t t0, int64_t t1)
{
    switch (a->ql->bits) {
    case 2: tiles_2(a, t0, t1); break;
    case 3: tiles_3(a, t0, t1); break;
    case 4: tiles_4(a, t0, t1); break;
    default: tiles_8(a, t0, t1); break;
    }
}

INLINE void dequant_tile(const gptq_qlinear *ql, int64_t t, float *dst, int64_t ldd, int nr,
                         const int BITS)
{
    const int KB = BITS == 3 ? 32 : 32 / BITS;
    const int W = BITS == 3 ? 3 * L : L;
    const uint32_t *tile = gptq__ql_tile_codes(ql, t);
    __m256i mask[2];

    for (int h = 0; h < 2; h++)
        mask[h] = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - 8 * h),
                                     _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int64_t s = 0; s < ql->nseg; s++) {
        const uint16_t *sc = gptq__ql_seg_scales(ql, t, s);
        const uint8_t *zp = gptq__ql_seg_zeros(ql, t, s);
        const __m256 s0 = load_scales(sc, 0), s1 = load_scales(sc, 1);
        const __m256 z0 = load_zeros(zp, 0), z1 = load_zeros(zp, 1);
        for (int64_t k = ql->seg_blk[s]; k < ql->seg_blk[s + 1]; k++) {
            const uint32_t *blk = tile + k * W;
#pragma GCC unroll 32
            for (int m = 0; m < KB; m++) {
                const int64_t kk = k * KB + m;
                const int64_t j = ql->colmap ? ql->colmap[kk] : kk;
                __m256 q0, q1;
                if (BITS == 3) {
                    const uint32_t *lo = blk + (m / 16) * L;
                    q0 = decode_col3(_mm256_load_si256((const __m256i *)lo),
                                     _mm256_load_si256((const __m256i *)(blk + 2 * L)), m);
                    q1 = decode_col3(_mm256_load_si256((const __m256i *)(lo + 8)),
                                     _mm256_load_si256((const __m256i *)(blk + 2 * L + 8)), m);
                } else {
                    q0 = decode_col(_mm256_load_si256((const __m256i *)blk), BITS, m);
                    q1 = decode_col(_mm256_load_si256((const __m256i *)(blk + 8)), BITS, m);
                }
                if (j < 0)
                    continue;
                _mm256_maskstore_ps(dst + j * ldd, mask[0],
                                    _mm256_mul_ps(s0, _mm256_sub_ps(q0, z0)));
                _mm256_maskstore_ps(dst + j * ldd + 8, mask[1],
                                    _mm256_mul_ps(s1, _mm256_sub_ps(q1, z1)));
            }
        }
    }
}

TARGET void gptq__ql_dequant_avx2(const gptq_qlinear *ql, int64_t t, float *dst, int64_t ldd,
                                  int nr)
{
    switch (ql->bits) {
    case 2: dequant_tile(ql, t, dst, ldd, nr, 2); break;
    case 3: dequant_tile(ql, t, dst, ldd, nr, 3); break;
    case 4: dequant_tile(ql, t, dst, ldd, nr, 4); break;
    default: dequant_tile(ql, t, dst, ldd, nr, 8); break;
    }
}
