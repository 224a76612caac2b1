/*
 * y = x * Wq^T (+ bias) straight from checkpoint tensors, the host reference for the
 * backends' dequant-matmul kernels and the way tests and the CLI evaluate a packed
 * layer. With W's rows as output channels (FORMATS.md section 3.1):
 *
 *     y[b, r] = sum_j x[b, j] * scale[g_idx[j], r] * (code[r, j] - zero[g_idx[j], r])
 *
 * where scale is the float16 scale widened to float32, and zero is the stored field
 * (v2) or (stored + 1) mod 2^bits (v1, as AutoGPTQ's qlinear_cuda_old torch path and
 * the reference checker read it). Each weight is dequantized as AutoGPTQ's torch
 * paths do, scale * (code - zero) in float32, so with float32 scales equal to float16
 * ones the weights are exactly the dequantized Q of the reference cases.
 *
 * Work is split by tiles of output rows: a tile unpacks TILE_COLS columns of its rows
 * at a time (qweight is [words, R], so the rows of a tile are adjacent words), turns
 * them into float32 weights and dots them with every batch row. Per row only the
 * partial sums of consecutive column tiles are added, so the result does not depend on
 * the thread count. Scales and zero points are decoded once up front, transposed to
 * [R, ng] so that an act-order g_idx jumps around inside one short, cached row.
 *
 * From SGEMM_MIN_BATCH rows on (the model forward pass runs thousands), the unpacking
 * is amortised differently: tiles of output rows are dequantized once into float32
 * weights, with the same per-weight arithmetic as above, and multiplied by SGEMM,
 * several times faster than the dot kernels. OpenBLAS splits SGEMM over rows and
 * columns only, so that result does not depend on the thread count either.
 */
#include <cblas.h>
#include <limits.h>
#include <string.h>

#include "format.h"

#define TILE_ROWS 8
/* A multiple of 32, so every column tile starts on a word boundary for any bit width
 * (32 elements are exactly `bits` words). */
#define TILE_COLS 512
/* Batch from which the dequantize-then-SGEMM path is taken, and the dequantized
 * weights it holds at a time (16 MiB). */
#define SGEMM_MIN_BATCH 32
#define SGEMM_TILE_FLOATS ((int64_t)4 << 20)

typedef struct mm_job {
    const gptq_packed *w;
    const float *x;       /* [batch, C] */
    int64_t batch;
    const float *bias;    /* [R] or NULL */
    float *y;             /* [batch, R] */
    const float *scale_t; /* [R, ng] float32 scales */
    const float *zero_t;  /* [R, ng] zero points as floats (exact: < 256) */
} mm_job;

/* float32 dot product with eight independent partial sums in a fixed order, which the
 * compiler keeps in vector registers (no -ffast-math needed); the n mod 8 tail is
 * summed separately so that no accumulator is indexed at run time. */
static float dot(const float *a, const float *b, int64_t n)
{
    float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    float tail = 0.0f;
    int64_t j = 0;

    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += a[j + l] * b[j + l];
    for (; j < n; j++)
        tail += a[j] * b[j];
    return (((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))) +
           tail;
}

/* Four dot products of `a` with the rows w, w + ld, w + 2 ld, w + 3 ld: each x value
 * is loaded once for four weight rows. Same summation order per row as dot(). */
static void dot4(const float *a, const float *w, int64_t ld, int64_t n, float *out)
{
    float acc[4][8], tail[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    int64_t j = 0;

    for (int k = 0; k < 4; k++)
        for (int l = 0; l < 8; l++)
            acc[k][l] = 0.0f;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < 8; l++)
                acc[k][l] += a[j + l] * w[k * ld + j + l];
    for (; j < n; j++)
        for (int k = 0; k < 4; k++)
            tail[k] += a[j] * w[k * ld + j];
    for (int k = 0; k < 4; k++)
        out[k] = (((acc[k][0] + acc[k][4]) + (acc[k][1] + acc[k][5])) +
                  ((acc[k][2] + acc[k][6]) + (acc[k][3] + acc[k][7]))) +
                 tail[k];
}

/* Codes of one output row for columns [c0, c0 + nc), c0 a multiple of 32, as floats.
 * `col` is the row's first qweight word; consecutive words are `stride` = R apart.
 * For 2/4/8 bits elements never straddle, so a word is split with constant shifts;
 * 3 bits go through the bit reader. */
static inline void decode_aligned(const uint32_t *col, int64_t stride, int32_t bits, int64_t k0,
                                  int64_t nc, float *out)
{
    const int32_t per = 32 / bits;
    const uint32_t mask = (1u << bits) - 1u;

    for (int64_t e0 = 0, k = k0; e0 < nc; e0 += per, k++) {
        const uint32_t word = col[k * stride];
        if (nc - e0 >= per) {
            for (int32_t m = 0; m < per; m++)
                out[e0 + m] = (float)((word >> (bits * m)) & mask);
        } else {
            for (int32_t m = 0; e0 + m < nc; m++)
                out[e0 + m] = (float)((word >> (bits * m)) & mask);
        }
    }
}

static void decode_codes(const uint32_t *col, int64_t stride, int32_t bits, int64_t c0,
                         int64_t nc, float *out)
{
    const int64_t k0 = c0 / 32 * bits; /* first word of the tile */

    /* Constant bit widths let the compiler unroll the word split. */
    switch (bits) {
    case 2: decode_aligned(col, stride, 2, k0, nc, out); return;
    case 4: decode_aligned(col, stride, 4, k0, nc, out); return;
    case 8: decode_aligned(col, stride, 8, k0, nc, out); return;
    default: {
        gptq__bitreader br;
        gptq__bitreader_init(&br, col + k0 * stride, stride, bits);
        for (int64_t j = 0; j < nc; j++)
            out[j] = (float)gptq__bitreader_get(&br);
    }
    }
}

/* Dequantized weights of output row r, columns [c0, c0 + nc): scale * (code - zero)
 * per run of equal g_idx. `run_start`/`run_g` are scratch of TILE_COLS + 1 entries. */
static void dequant_row(const mm_job *jb, int64_t r, int64_t c0, int64_t nc, float *wrow,
                        int32_t *run_start, int32_t *run_g)
{
    const gptq_packed *w = jb->w;
    const int64_t R = w->out_features, ng = w->ngroups;
    const int32_t *g_idx = w->g_idx;
    const float *st = jb->scale_t + r * ng, *zt = jb->zero_t + r * ng;
    int64_t nruns = 0;

    /* Runs of equal g_idx: without act-order a tile has one or a few, and each run
     * dequantizes with one scale and zero point (a vectorisable loop). */
    for (int64_t j = 0; j < nc; j++)
        if (j == 0 || g_idx[c0 + j] != g_idx[c0 + j - 1]) {
            run_start[nruns] = (int32_t)j;
            run_g[nruns++] = g_idx[c0 + j];
        }
    run_start[nruns] = (int32_t)nc;
    decode_codes((const uint32_t *)w->qweight + r, R, w->bits, c0, nc, wrow);
    for (int64_t k = 0; k < nruns; k++) {
        const float s = st[run_g[k]], z = zt[run_g[k]];
        for (int64_t j = run_start[k]; j < run_start[k + 1]; j++)
            wrow[j] = s * (wrow[j] - z);
    }
}

static void mm_tiles(void *arg, int64_t t0, int64_t t1)
{
    const mm_job *jb = arg;
    const gptq_packed *w = jb->w;
    const int64_t R = w->out_features, C = w->in_features;
    float wt[TILE_ROWS * TILE_COLS]; /* 16 KiB: the tile's dequantized weights */
    int32_t run_start[TILE_COLS + 1], run_g[TILE_COLS];

    for (int64_t t = t0; t < t1; t++) {
        const int64_t r0 = t * TILE_ROWS;
        const int64_t nr = R - r0 < TILE_ROWS ? R - r0 : TILE_ROWS;

        for (int64_t b = 0; b < jb->batch; b++)
            for (int64_t i = 0; i < nr; i++)
                jb->y[b * R + r0 + i] = 0.0f;

        for (int64_t c0 = 0; c0 < C; c0 += TILE_COLS) {
            const int64_t nc = C - c0 < TILE_COLS ? C - c0 : TILE_COLS;
            for (int64_t i = 0; i < nr; i++)
                dequant_row(jb, r0 + i, c0, nc, wt + i * TILE_COLS, run_start, run_g);
            for (int64_t b = 0; b < jb->batch; b++) {
                const float *xb = jb->x + b * C + c0;
                float *yb = jb->y + b * R + r0;
                int64_t i = 0;
                for (; i + 4 <= nr; i += 4) {
                    float d[4];
                    dot4(xb, wt + i * TILE_COLS, TILE_COLS, nc, d);
                    for (int k = 0; k < 4; k++)
                        yb[i + k] += d[k];
                }
                for (; i < nr; i++)
                    yb[i] += dot(xb, wt + i * TILE_COLS, nc);
            }
        }
        if (jb->bias)
            for (int64_t b = 0; b < jb->batch; b++)
                for (int64_t i = 0; i < nr; i++)
                    jb->y[b * R + r0 + i] += jb->bias[r0 + i];
    }
}

/* The large-batch path, dequantization step: rows [row0 + r0, row0 + r1) of W into
 * wbuf (row-major, C per row). */
typedef struct deq_job {
    const mm_job *mm;
    int64_t row0;
    float *wbuf;
} deq_job;

static void deq_rows(void *arg, int64_t r0, int64_t r1)
{
    const deq_job *dj = arg;
    const int64_t C = dj->mm->w->in_features;
    int32_t run_start[TILE_COLS + 1], run_g[TILE_COLS];

    for (int64_t r = r0; r < r1; r++)
        for (int64_t c0 = 0; c0 < C; c0 += TILE_COLS)
            dequant_row(dj->mm, dj->row0 + r, c0, C - c0 < TILE_COLS ? C - c0 : TILE_COLS,
                        dj->wbuf + r * C + c0, run_start, run_g);
}

/* y = x * Wq^T for large batches: row tiles of W dequantized once, then SGEMM into the
 * tile's columns of y (ldc = R); the bias is added last, as in mm_tiles. */
static int mm_sgemm(gptq_ctx *ctx, const mm_job *jb)
{
    const int64_t R = jb->w->out_features, C = jb->w->in_features, B = jb->batch;
    int64_t rows = SGEMM_TILE_FLOATS / C;
    float *wbuf;
    deq_job dj;

    if (C > INT_MAX || R > INT_MAX)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "gptq_dequant_matmul: %lld x %lld exceeds the BLAS's int dimensions",
                         (long long)R, (long long)C);
    rows = rows < TILE_ROWS ? TILE_ROWS : rows > R ? R : rows;
    wbuf = gptq__alloc(ctx, (size_t)(rows * C) * sizeof(float), "dequant_matmul weights");
    if (!wbuf)
        return GPTQ_ERR_OUT_OF_MEMORY;
    dj.mm = jb;
    dj.wbuf = wbuf;
    for (int64_t r0 = 0; r0 < R; r0 += rows) {
        const int64_t nr = R - r0 < rows ? R - r0 : rows;
        dj.row0 = r0;
        gptq__parallel_for(gptq__ctx_threads(ctx), nr, TILE_ROWS, deq_rows, &dj);
        for (int64_t b0 = 0; b0 < B; b0 += INT_MAX / 2) {
            const int64_t nb = B - b0 < INT_MAX / 2 ? B - b0 : INT_MAX / 2;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)nr, (int)C, 1.0f,
                        jb->x + b0 * C, (int)C, wbuf, (int)C, 0.0f, jb->y + b0 * R + r0, (int)R);
        }
    }
    gptq__free(wbuf);
    if (jb->bias)
        for (int64_t b = 0; b < B; b++)
            for (int64_t r = 0; r < R; r++)
                jb->y[b * R + r] += jb->bias[r];
    return GPTQ_OK;
}

/* Decode scales and zero points once, transposed to [R, ng]. */
static void decode_params(const gptq_packed *w, float *scale_t, float *zero_t)
{
    const int64_t R = w->out_features, ng = w->ngroups;
    const int64_t nzw = gptq__packed_words(R, w->bits);
    const uint32_t maxq = (1u << w->bits) - 1u;
    const int v1 = w->format == GPTQ_FORMAT_V1;

    for (int64_t g = 0; g < ng; g++) {
        gptq__bitreader br;
        gptq__bitreader_init(&br, (const uint32_t *)w->qzeros + g * nzw, 1, w->bits);
        for (int64_t r = 0; r < R; r++) {
            uint32_t s = gptq__bitreader_get(&br);
            zero_t[r * ng + g] = (float)(v1 ? (s + 1u) & maxq : s);
            scale_t[r * ng + g] = gptq__f16_to_f32(w->scales[g * R + r]);
        }
    }
}

int gptq_dequant_matmul(gptq_ctx *ctx, const gptq_packed *w, const float *x, int64_t batch,
                        const float *bias, float *y)
{
    const char *fn = "gptq_dequant_matmul";
    size_t nparams, nx, ny;
    float *params;
    mm_job jb;
    int64_t ntiles, work, min_tiles;

    GPTQ_TRY(gptq__packed_check(ctx, w, fn));
    if (!x || !y)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, x ? "y" : "x");
    if (batch < 1)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: batch = %lld (must be >= 1)", fn,
                         (long long)batch);
    if (gptq__mul3_size(&nx, batch, w->in_features, sizeof(float)) != 0 ||
        gptq__mul3_size(&ny, batch, w->out_features, sizeof(float)) != 0 ||
        gptq__mul3_size(&nparams, w->out_features, w->ngroups, 2 * sizeof(float)) != 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "%s: batch %lld x %lld inputs does not fit in memory", fn,
                         (long long)batch, (long long)w->in_features);

    params = gptq__alloc(ctx, nparams, "dequant_matmul scales and zero points");
    if (!params)
        return GPTQ_ERR_OUT_OF_MEMORY;
    decode_params(w, params, params + w->out_features * w->ngroups);

    jb.w = w;
    jb.x = x;
    jb.batch = batch;
    jb.bias = bias;
    jb.y = y;
    jb.scale_t = params;
    jb.zero_t = params + w->out_features * w->ngroups;

    if (batch >= SGEMM_MIN_BATCH) {
        int rc = mm_sgemm(ctx, &jb);
        gptq__free(params);
        return rc;
    }

    /* Starting a thread costs tens of microseconds: give each at least ~256k
     * multiply-adds (the unpacking counts like a couple of batch rows). */
    ntiles = (w->out_features + TILE_ROWS - 1) / TILE_ROWS;
    work = TILE_ROWS * w->in_features * (batch < 1024 ? batch + 2 : 1026);
    min_tiles = work >= (1 << 18) ? 1 : (1 << 18) / work;
    gptq__parallel_for(gptq__ctx_threads(ctx), ntiles, min_tiles, mm_tiles, &jb);

    gptq__free(params);
    return GPTQ_OK;
}
