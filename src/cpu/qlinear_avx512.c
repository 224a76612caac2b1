/*
 * The AVX-512 gptq_qlinear kernel (AVX512F + AVX512BW), selected at run time: this
 * file is compiled for the baseline target and only its functions carry
 * __attribute__((target)), so the library still loads on CPUs without AVX-512.
 *
 * One 512-bit load holds a block: 16 output rows x kb columns (128 4-bit codes). One
 * shift and two table lookups give two columns of the 16 rows' codes as floats (see
 * lookup_lo/lookup_hi), and one FMA per batch row (x[b, k + m] broadcast from memory)
 * accumulates each: about 2.4 instructions per 16 weights at batch 1 and 4 bits. Up to
 * 8 batch rows share each decoded column; with fewer rows, each row uses several
 * accumulators (by column) so that at least 8 FMA chains are in flight. At a
 * segment's end the zero point is applied once: y += scale * (dot - zero * xsum).
 *
 * Explicit FMAs (the project's -ffp-contract=off only stops the compiler from fusing
 * on its own): each accumulation rounds once, the portable kernel twice, so the two
 * differ in the last bits; both are within the bound given in docs/architecture.md.
 */
#include <immintrin.h>

#include "format/qlinear.h"

#define L GPTQ__QL_ROWS
/* Software prefetch distance, 2 KiB ahead of the block being decoded: measured 5-10 %
 * faster than the hardware prefetchers alone when the weights come from memory. A
 * prefetch past the end of the codes is harmless (it never faults). */
#define PREFETCH_WORDS 512
#define CHUNK 8
#define TARGET __attribute__((target("avx512f,avx512bw,avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline)) TARGET

int gptq__ql_cpu_has_avx512(void)
{
    __builtin_cpu_init();
    /* libgcc also checks that the OS saves the ZMM state (XCR0). */
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx2");
}

/* Keep a loaded block in a register: without this the compiler folds the load into
 * every shift that reads it, and a block costs kb loads instead of one (the load ports
 * were the bottleneck). */
#define IN_REGISTER(v) __asm__("" : "+v"(v))

/* Decoding without int->float conversions: vpermps looks up each 32-bit lane's value
 * in a 16-entry float table by the low 4 bits of its index and ignores the rest, and
 * vpermw (masked to the upper 16-bit half of every lane, the lower half zeroed) looks
 * up the upper half by bits 16..20 of the lane in a 32-entry table of bfloat16
 * patterns, which with a zero lower half are the float32 values. So one shifted copy of
 * a block gives two columns: the one at bits 0..3 and the one at bits 16..19 (columns
 * m and m + kb/2). Entries are i & maxq, so bits above a code are ignored. */
static const uint16_t bf16_ints[16] = {0x0000, 0x3F80, 0x4000, 0x4040, 0x4080, 0x40A0,
                                       0x40C0, 0x40E0, 0x4100, 0x4110, 0x4120, 0x4130,
                                       0x4140, 0x4150, 0x4160, 0x4170}; /* bf16(i) */

INLINE __m512 lookup_lo(__m512i idx, __m512 table)
{
    return _mm512_permutexvar_ps(idx, table);
}

INLINE __m512 lookup_hi(__m512i idx, __m512i table16)
{
    return _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAAAAAAu, idx, table16));
}

/* Shift right by n bits (n may be 0 or negative: a left shift). */
INLINE __m512i shift(__m512i v, const int n)
{
    return n > 0   ? _mm512_srli_epi32(v, (unsigned)n)
           : n < 0 ? _mm512_slli_epi32(v, (unsigned)-n)
                   : v;
}

/* The 3-bit index of columns (c, c + 8) from a low-bit word shifted to put column c's
 * low bits at bits 0..1 and a high-bit word shifted to put its high bit at bit 2:
 * (h & 0x00040004) | (l & ~0x00040004), ternary-logic 0xD8 ("C ? B : A"). */
INLINE __m512i merge3(__m512i l, __m512i h)
{
    return _mm512_ternarylogic_epi32(l, h, _mm512_set1_epi32(0x00040004), 0xD8);
}

/* Tile t for batch rows [b0, b0 + MC). MC and BITS are constants after inlining. */
INLINE void tile_chunk(const gptq__ql_args *a, int64_t t, int64_t b0, const int MC,
                       const int BITS)
{
    const gptq_qlinear *ql = a->ql;
    const int KB = BITS == 3 ? 32 : 32 / BITS;
    const int W = BITS == 3 ? 3 * L : L;
    /* Accumulators per batch row, so that at least 8 FMA chains are in flight (FMA
     * latency 4 cycles x 2 FMA pipes): each chain then takes kb/NACC FMAs per block. */
    const int NACC = MC == 1 ? 8 : MC == 2 ? 4 : MC <= 7 ? 2 : 1;
    const int64_t ldx = a->ldx, R = ql->out_features;
    const uint32_t *tile = gptq__ql_tile_codes(ql, t);
    const float *x = a->x + b0 * ldx;
    /* entry i: i & maxq, as float32 (16 entries) and as bfloat16 (32 entries) */
    const int maxq = (1 << BITS) - 1;
    const __m512 table = _mm512_permutexvar_ps(
        _mm512_and_si512(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(maxq)),
        _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    const __m512i table16 = _mm512_permutexvar_epi16(
        _mm512_and_si512(_mm512_setr_epi32(0x00010000, 0x00030002, 0x00050004, 0x00070006,
                                           0x00090008, 0x000B000A, 0x000D000C, 0x000F000E,
                                           0x00110010, 0x00130012, 0x00150014, 0x00170016,
                                           0x00190018, 0x001B001A, 0x001D001C, 0x001F001E),
                         _mm512_set1_epi16((short)(maxq & 15))),
        _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)bf16_ints)));
    __m512 yv[CHUNK], acc[CHUNK][8];

    for (int b = 0; b < MC; b++)
        yv[b] = _mm512_setzero_ps();
    for (int64_t s = 0; s < ql->nseg; s++) {
        const uint32_t *blk = tile + ql->seg_blk[s] * W;
        const uint32_t *end = tile + ql->seg_blk[s + 1] * W;
        const float *xk = x + ql->seg_blk[s] * KB;
        __m512 sc, zp;

        for (int b = 0; b < MC; b++)
            for (int n = 0; n < NACC; n++)
                acc[b][n] = _mm512_setzero_ps();
        for (; blk < end; blk += W, xk += KB) {
            _mm_prefetch((const char *)(blk + PREFETCH_WORDS), _MM_HINT_T0);
            if (BITS == 3) {
                __m512i lo0 = _mm512_load_si512(blk), lo1 = _mm512_load_si512(blk + L);
                __m512i hi = _mm512_load_si512(blk + 2 * L);
                IN_REGISTER(lo0);
                IN_REGISTER(lo1);
                IN_REGISTER(hi);
#pragma GCC unroll 16
                for (int i = 0; i < 16; i++) {
                    /* columns c and c + 8: c = i for i < 8, c = i + 8 (16..23) after */
                    const int m = i % 8, c = i < 8 ? i : i + 8;
                    const __m512i idx = merge3(shift(i < 8 ? lo0 : lo1, 2 * m),
                                               shift(hi, i < 8 ? m - 2 : m + 6));
                    const __m512 qa = lookup_lo(idx, table), qb = lookup_hi(idx, table16);
#pragma GCC unroll 8
                    for (int b = 0; b < MC; b++) {
                        acc[b][c % NACC] = _mm512_fmadd_ps(qa, _mm512_set1_ps(xk[b * ldx + c]),
                                                           acc[b][c % NACC]);
                        acc[b][(c + 8) % NACC] = _mm512_fmadd_ps(
                            qb, _mm512_set1_ps(xk[b * ldx + c + 8]), acc[b][(c + 8) % NACC]);
                    }
                }
            } else if (BITS == 8) {
                __m512i v = _mm512_load_si512(blk);
                IN_REGISTER(v);
#pragma GCC unroll 4
                for (int m = 0; m < 4; m++) {
                    __m512i c = shift(v, 8 * m);
                    if (m != 3)
                        c = _mm512_and_si512(c, _mm512_set1_epi32(0xFF));
                    const __m512 q = _mm512_cvtepi32_ps(c);
#pragma GCC unroll 8
                    for (int b = 0; b < MC; b++)
                        acc[b][m % NACC] = _mm512_fmadd_ps(q, _mm512_set1_ps(xk[b * ldx + m]),
                                                           acc[b][m % NACC]);
                }
            } else {
                __m512i v = _mm512_load_si512(blk);
                IN_REGISTER(v);
#pragma GCC unroll 8
                for (int m = 0; m < KB / 2; m++) {
                    /* columns m (bits 0..) and m + KB/2 (bits 16..) */
                    const __m512i idx = shift(v, BITS * m);
                    const __m512 qa = lookup_lo(idx, table), qb = lookup_hi(idx, table16);
#pragma GCC unroll 8
                    for (int b = 0; b < MC; b++) {
                        acc[b][m % NACC] = _mm512_fmadd_ps(qa, _mm512_set1_ps(xk[b * ldx + m]),
                                                           acc[b][m % NACC]);
                        acc[b][(m + KB / 2) % NACC] =
                            _mm512_fmadd_ps(qb, _mm512_set1_ps(xk[b * ldx + m + KB / 2]),
                                            acc[b][(m + KB / 2) % NACC]);
                    }
                }
            }
        }
        sc = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)gptq__ql_seg_scales(ql, t, s)));
        zp = _mm512_cvtepi32_ps(
            _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)gptq__ql_seg_zeros(ql, t, s))));
        for (int b = 0; b < MC; b++) {
            __m512 dot = acc[b][0];
            for (int n = 1; n < NACC; n++)
                dot = _mm512_add_ps(dot, acc[b][n]);
            dot = _mm512_fnmadd_ps(zp, _mm512_set1_ps(a->xsum[(b0 + b) * ql->nseg + s]), dot);
            yv[b] = _mm512_fmadd_ps(sc, dot, yv[b]);
        }
    }
    {
        const int64_t nr = R - t * L < L ? R - t * L : L;
        const __mmask16 mask = (__mmask16)((1u << nr) - 1u);
        for (int b = 0; b < MC; b++) {
            __m512 v = yv[b];
            float *dst = a->y + (b0 + b) * R + t * L;
            if (ql->bias)
                v = _mm512_add_ps(v, _mm512_loadu_ps(ql->bias + t * L));
            if (nr == L)
                _mm512_storeu_ps(dst, v);
            else
                _mm512_mask_storeu_ps(dst, mask, v);
        }
    }
}

#define CHUNK_CASES(BITS)                                        \
    case 1: tile_chunk(a, t, b0, 1, BITS); break;                \
    case 2: tile_chunk(a, t, b0, 2, BITS); break;                \
    case 3: tile_chunk(a, t, b0, 3, BITS); break;                \
    case 4: tile_chunk(a, t, b0, 4, BITS); break;                \
    case 5: tile_chunk(a, t, b0, 5, BITS); break;                \
    case 6: tile_chunk(a, t, b0, 6, BITS); break;                \
    case 7: tile_chunk(a, t, b0, 7, BITS); break;                \
    default: tile_chunk(a, t, b0, 8, BITS); break;

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

void gptq__ql_tiles_avx512(const gptq__ql_args *a, int64_t t0, int64_t t1)
{
    switch (a->ql->bits) {
    case 2: tiles_2(a, t0, t1); break;
    case 3: tiles_3(a, t0, t1); break;
    case 4: tiles_4(a, t0, t1); break;
    default: tiles_8(a, t0, t1); break;
    }
}

/* Column m of a block as floats, one lane per tile row (the dequantizing path: one
 * column at a time, so the simple decoders suffice). */
INLINE __m512 column(const uint32_t *blk, __m512 table, const int BITS, const int m)
{
    if (BITS == 3) {
        const __m512i idx = merge3(shift(_mm512_load_si512(blk + (m / 16) * L), 2 * (m % 16)),
                                   shift(_mm512_load_si512(blk + 2 * L), gptq__ql_hi_bit(m) - 2));
        return lookup_lo(idx, table);
    }
    if (BITS == 8)
        return _mm512_cvtepi32_ps(
            _mm512_and_si512(shift(_mm512_load_si512(blk), 8 * m), _mm512_set1_epi32(0xFF)));
    return lookup_lo(shift(_mm512_load_si512(blk), BITS * m), table);
}

INLINE void dequant_tile(const gptq_qlinear *ql, int64_t t, float *dst, int64_t ldd, int nr,
                         const int BITS)
{
    const int KB = BITS == 3 ? 32 : 32 / BITS;
    const int W = BITS == 3 ? 3 * L : L;
    const __mmask16 mask = (__mmask16)((1u << nr) - 1u);
    const uint32_t *tile = gptq__ql_tile_codes(ql, t);
    const __m512 table = _mm512_permutexvar_ps(
        _mm512_and_si512(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32((1 << BITS) - 1)),
        _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));

    for (int64_t s = 0; s < ql->nseg; s++) {
        const __m512 sc = _mm512_cvtph_ps(
            _mm256_loadu_si256((const __m256i *)gptq__ql_seg_scales(ql, t, s)));
        const __m512 zp = _mm512_cvtepi32_ps(
            _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)gptq__ql_seg_zeros(ql, t, s))));
        for (int64_t k = ql->seg_blk[s]; k < ql->seg_blk[s + 1]; k++) {
            const uint32_t *blk = tile + k * W;
#pragma GCC unroll 32
            for (int m = 0; m < KB; m++) {
                const int64_t kk = k * KB + m;
                const int64_t j = ql->colmap ? ql->colmap[kk] : kk;
                /* scale * (code - zero), each rounded as the reference rounds it */
                const __m512 w = _mm512_mul_ps(sc, _mm512_sub_ps(column(blk, table, BITS, m), zp));
                if (j >= 0)
                    _mm512_mask_storeu_ps(dst + j * ldd, mask, w);
            }
        }
    }
}

TARGET void gptq__ql_dequant_avx512(const gptq_qlinear *ql, int64_t t, float *dst, int64_t ldd,
                                    int nr)
{
    switch (ql->bits) {
    case 2: dequant_tile(ql, t, dst, ldd, nr, 2); break;
    case 3: dequant_tile(ql, t, dst, ldd, nr, 3); break;
    case 4: dequant_tile(ql, t, dst, ldd, nr, 4); break;
    default: dequant_tile(ql, t, dst, ldd, nr, 8); break;
    }
}
