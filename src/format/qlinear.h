/*
 * Prepared quantized linear layers (gptq_qlinear, public API in gptq/gptq.h): the
 * layout the CPU kernels read, shared by the repacker (src/format/qlinear.c) and the
 * kernels (src/cpu/qlinear_*.c). Never installed.
 *
 * Layout. Output rows are cut into tiles of 16 (the last one padded with zero rows).
 * Input columns are reordered once, at creation, so that every group's columns are
 * adjacent (a stable sort by g_idx: the identity without act-order, exllama's
 * make_sequential with it); each run of one group's columns is a "segment", padded
 * with zero codes to a whole number of blocks. A block is `kb` columns of a tile:
 *
 *   2, 4, 8 bits  kb = 32 / bits columns, one word per row: word[l] holds row l's codes
 *                 of the block's columns, column m at bits [bits*m, bits*m + bits).
 *                 16 words = one 512-bit load = 16 rows x kb columns. With the identity
 *                 order these are exactly the checkpoint's qweight words.
 *   3 bits        kb = 32 columns in 48 words (no padding bits): words [0, 16) hold the
 *                 low two bits of columns 0..15 of rows 0..15 (column m at bits 2m),
 *                 words [16, 32) those of columns 16..31, words [32, 48) the high bit
 *                 of all 32 columns, at bit gptq__ql_hi_bit(m): columns 0..7 at bits
 *                 0..7, 16..23 at 8..15, 8..15 at 16..23, 24..31 at 24..31, so that
 *                 the high bits of columns m and m + 8, whose low bits lie 16 apart
 *                 in their word, also lie 16 apart (one shift aligns both).
 *
 * Per tile and segment the group's 16 scales stay IEEE float16 (widened exactly in the
 * kernel) and the 16 true zero points are bytes: 48 bytes per tile-segment, 4.7 % of a
 * 4-bit g128 tile's codes, where float32 scale and -scale*zero would add 12.5 %.
 *
 * What a kernel computes, for every tile row r, batch row b and segment s (group g):
 *
 *     dot   = sum_{k in s} x'[b, k] * code[r, k]          (float32)
 *     y    += scale[g, r] * (dot - zero[g, r] * xsum[b, s])
 *
 * with x' the input in the reordered, padded column order (padding reads 0) and
 * xsum[b, s] the float32 sum of x' over the segment: the zero point is folded out of
 * the inner loop, which then only decodes a code and multiplies-adds it.
 */
#ifndef GPTQ_FORMAT_QLINEAR_H
#define GPTQ_FORMAT_QLINEAR_H

#include "internal.h"

#define GPTQ__QL_ROWS 16 /* output rows per tile */

struct gptq_qlinear {
    int32_t bits;
    int32_t kernel;           /* GPTQ_QLINEAR_KERNEL_*, as set (AUTO by default) */
    int64_t out_features;     /* R */
    int64_t in_features;      /* C */
    int64_t ngroups;
    int64_t ntiles;           /* ceil(R / 16) */
    int32_t kb;               /* columns per block */
    int32_t wpb;              /* words per row per block: 1, or 3 for 3 bits */
    int64_t nblk;             /* blocks per tile */
    int64_t cp;               /* padded columns, nblk * kb */
    int64_t nseg;             /* segments */
    int64_t *seg_blk;         /* [nseg + 1]: first block of each segment */
    int32_t *seg_group;       /* [nseg]: the segment's group */
    int32_t *colmap;          /* [cp]: source column of each padded column, -1 for padding;
                               * NULL when the order is the identity and cp == C */
    uint32_t *codes;          /* [ntiles][nblk][wpb * 16] */
    uint16_t *scales;         /* [ntiles][nseg][16] float16 bit patterns */
    uint8_t *zeros;           /* [ntiles][nseg][16] true zero points */
    float *bias;              /* [ntiles * 16] (zero padded) or NULL */
    /* The GPU copy of a handle created with a CUDA context (NULL otherwise): the table
     * of the backend that made it (its ql_* slots), its opaque copy, the device. This
     * struct is read by libgptq-cuda.so: its layout is covered by GPTQ_BACKEND_ABI. */
    const struct gptq_backend *dev_backend;
    void *dev;
    int32_t device;
};

/* gptq_qlinear_create without the GPU copy, whatever ctx's backend: a handle that lives
 * on the host only (gptq_dequant_matmul, documented to run on the host). */
int gptq__qlinear_create_host(gptq_ctx *ctx, const gptq_packed *w, const float *bias,
                              gptq_qlinear **out);

/* One forward call as the kernels see it. Rows of x and y are `batch` apart by ldx and
 * R; y is written (not accumulated) for the real rows of the tiles a kernel is given,
 * bias included. */
typedef struct gptq__ql_args {
    const gptq_qlinear *ql;
    const float *x;           /* [batch][ldx], padded column order, cp columns read */
    int64_t ldx;
    const float *xsum;        /* [batch][nseg] */
    int64_t batch;
    float *y;                 /* [batch][R] */
} gptq__ql_args;

/* A kernel: tiles [t0, t1) for every batch row. */
typedef void (*gptq__ql_kernel_fn)(const gptq__ql_args *a, int64_t t0, int64_t t1);

void gptq__ql_tiles_portable(const gptq__ql_args *a, int64_t t0, int64_t t1);
void gptq__ql_tiles_avx2(const gptq__ql_args *a, int64_t t0, int64_t t1);
void gptq__ql_tiles_avx512(const gptq__ql_args *a, int64_t t0, int64_t t1);

/* Dequantize tile t exactly as the reference does, w = scale * (code - zero) in
 * float32, transposed: row r = 16 t + l of W goes to dst[j * ldd + l] for every
 * original column j (through colmap), for the first nr (<= 16) rows of the tile. */
typedef void (*gptq__ql_dequant_fn)(const gptq_qlinear *ql, int64_t t, float *dst, int64_t ldd,
                                    int nr);

void gptq__ql_dequant_portable(const gptq_qlinear *ql, int64_t t, float *dst, int64_t ldd, int nr);
void gptq__ql_dequant_avx2(const gptq_qlinear *ql, int64_t t, float *dst, int64_t ldd, int nr);
void gptq__ql_dequant_avx512(const gptq_qlinear *ql, int64_t t, float *dst, int64_t ldd, int nr);

/* 1 if this CPU (and its OS) runs the AVX2 (avx2, fma, f16c) or AVX-512 (avx512f)
 * kernels. */
int gptq__ql_cpu_has_avx2(void);
int gptq__ql_cpu_has_avx512(void);

/* Bit of a 3-bit block's high-bit word that holds column m's high bit (m < 32). */
static inline int32_t gptq__ql_hi_bit(int32_t m)
{
    return (m & 7) | (m & 8) << 1 | (m & 16) >> 1;
}

/* The scale and zero point of tile t, segment s, as pointers to 16 entries. */
static inline const uint16_t *gptq__ql_seg_scales(const gptq_qlinear *ql, int64_t t, int64_t s)
{
    return ql->scales + (t * ql->nseg + s) * GPTQ__QL_ROWS;
}

static inline const uint8_t *gptq__ql_seg_zeros(const gptq_qlinear *ql, int64_t t, int64_t s)
{
    return ql->zeros + (t * ql->nseg + s) * GPTQ__QL_ROWS;
}

/* The first code word of tile t. */
static inline const uint32_t *gptq__ql_tile_codes(const gptq_qlinear *ql, int64_t t)
{
    return ql->codes + t * ql->nblk * ql->wpb * GPTQ__QL_ROWS;
}

#endif /* GPTQ_FORMAT_QLINEAR_H */
