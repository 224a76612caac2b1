/*
 * GPTQ's in-block column loop on the GPU, fused into one kernel per block: the device
 * twin of the core's host kernel (src/core/quant_block.c, which cites gptq.py). For each
 * column c of the block [i1, i2), in processing order:
 *
 *     new group parameters at a group start (from the block-level W, not W1)
 *     q     = dequant(quant(W1[:, i]))
 *     loss += (w - q)^2 / d^2 / 2,       d = U[c, c]
 *     err   = (w - q) / d
 *     W1[:, i:] -= err * U[c, i1 + i:]
 *
 * Rows are independent. A thread block owns a tile of TILE_ROWS rows and keeps their
 * block of W1 in shared memory, transposed (t[j][lane], padded against bank conflicts).
 * Per column, warp 0 quantizes (one lane per row) while the U row is loaded to shared
 * memory; then all warps apply the rank-1 update, split over the remaining columns.
 *
 * Bit-exactness with the CPU: every lane performs the host kernel's float32 operations
 * in the same order, each rounded on its own. The _rn intrinsics are never contracted
 * into fused multiply-adds (whatever -fmad says) and divide exactly; rintf rounds half
 * to even, as torch.round. Codes then match the CPU bit for bit where the inputs (W and
 * U) match; U itself comes from cuSOLVER and may differ from LAPACK's in the last bits.
 */
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

#define TILE_ROWS 32   /* rows per thread block: one per lane of warp 0 */
#define TILE_WARPS 8   /* warps sharing the rank-1 update */
#define TILE_PAD 33    /* row pitch of the shared W1 tile, in floats */
#define MAX_BLOCK 512  /* as the host kernel */

/* What the kernel reads and writes, all in device memory. */
typedef struct qb_args {
    int64_t rows, cols, i1;
    int32_t bw, maxq, sym, group_size, static_groups;
    const float *w;        /* W(r, c) at w[r * w_ld + c - w_c0] (block-level W) */
    int64_t w_ld, w_c0;
    const float *u;        /* U(i1 + i, i1 + j) at u[i * u_ld + j]; NULL = RTN */
    int64_t u_ld;
    const int32_t *perm;   /* perm[i1 + i] at perm[i] */
    const float *row_scale, *row_zero;
    float *scales, *zeros; /* group g, row r at [(g - g0) * rows + r] */
    int64_t g0;
    float *q;              /* [rows, bw], column i of the block at [r * bw + i] */
    int32_t *codes;        /* [rows, bw] */
    float *err;            /* [bw, rows] */
    double *loss;          /* [rows]: this block's loss per row */
} qb_args;

/* gptq__find_params (src/core/quantizer.h) for one row of the device. */
__device__ static void find_params(const float *x, int64_t n, int32_t maxq, int sym,
                                   float *scale, float *zero)
{
    float xmin = 0.0f, xmax = 0.0f;
    for (int64_t j = 0; j < n; j++) {
        xmin = x[j] < xmin ? x[j] : xmin;
        xmax = x[j] > xmax ? x[j] : xmax;
    }
    if (sym) {
        float a = fabsf(xmin);
        xmax = a > xmax ? a : xmax;
        if (xmin < 0.0f)
            xmin = -xmax;
    }
    if (xmin == 0.0f && xmax == 0.0f) {
        xmin = -1.0f;
        xmax = 1.0f;
    }
    *scale = __fdiv_rn(__fsub_rn(xmax, xmin), (float)maxq);
    if (sym)
        *zero = __fdiv_rn((float)(maxq + 1), 2.0f);
    else
        *zero = rintf(__fdiv_rn(-xmin, *scale));
}

/* Dynamic shared memory of one thread block for a block of bw columns. */
static size_t smem_bytes(int64_t bw)
{
    return (size_t)bw * TILE_PAD * sizeof(float) /* t */
           + (size_t)bw * sizeof(float)          /* U row */
           + TILE_ROWS * sizeof(float)           /* errors of the column */
           + (size_t)bw * TILE_ROWS;             /* codes (bits <= 8) */
}

__global__ void __launch_bounds__(TILE_ROWS * TILE_WARPS) quant_block_kernel(qb_args a)
{
    extern __shared__ float smem[];
    const int bw = a.bw, lane = threadIdx.x, warp = threadIdx.y;
    const int tid = warp * TILE_ROWS + lane, nthreads = TILE_ROWS * TILE_WARPS;
    const int64_t r0 = (int64_t)blockIdx.x * TILE_ROWS, R = a.rows, C = a.cols;
    const int nl = R - r0 < TILE_ROWS ? (int)(R - r0) : TILE_ROWS;
    const int64_t r = r0 + lane; /* warp 0's row */
    const int32_t gs = a.group_size;
    const float maxq = (float)a.maxq;
    float *t = smem;                   /* [bw][TILE_PAD] */
    float *us = t + bw * TILE_PAD;     /* [bw] */
    float *es = us + bw;               /* [TILE_ROWS] */
    unsigned char *cs = (unsigned char *)(es + TILE_ROWS); /* [bw][TILE_ROWS] */
    float scale = 1.0f, zero = 0.0f;
    double loss = 0.0;

    /* The tile's block of W1, transposed; unused lanes hold 0 (discarded). */
    for (int k = tid; k < TILE_ROWS * bw; k += nthreads) {
        int l = k / bw, j = k % bw;
        t[j * TILE_PAD + l] = l < nl ? a.w[(r0 + l) * a.w_ld + a.i1 + j - a.w_c0] : 0.0f;
    }
    if (warp == 0 && lane < nl && gs == -1) {
        scale = a.row_scale[r];
        zero = a.row_zero[r];
    }
    __syncthreads();

    for (int i = 0; i < bw; i++) {
        const int64_t c = a.i1 + i;
        if (a.u)
            for (int j = i + tid; j < bw; j += nthreads)
                us[j] = a.u[i * a.u_ld + j];
        if (warp == 0) {
            float e = 0.0f, qv = 0.0f, q = 0.0f;
            if (lane < nl) {
                const float w = t[i * TILE_PAD + lane];
                if (gs != -1) {
                    int64_t g;
                    if (a.static_groups) {
                        g = a.perm[i] / gs;
                    } else {
                        g = c / gs;
                        if (c % gs == 0) {
                            const int64_t end = c + gs < C ? c + gs : C;
                            find_params(a.w + r * a.w_ld + c - a.w_c0, end - c, a.maxq, a.sym,
                                        &a.scales[(g - a.g0) * R + r],
                                        &a.zeros[(g - a.g0) * R + r]);
                        }
                    }
                    scale = a.scales[(g - a.g0) * R + r];
                    zero = a.zeros[(g - a.g0) * R + r];
                }
                q = __fadd_rn(rintf(__fdiv_rn(w, scale)), zero);
                q = q < 0.0f ? 0.0f : q;
                q = q > maxq ? maxq : q;
                qv = __fmul_rn(scale, __fsub_rn(q, zero));
                if (a.u) {
                    const float d = a.u[i * a.u_ld + i];
                    const float d2 = __fmul_rn(d, d);
                    const float diff = __fsub_rn(w, qv);
                    const float lo = __fdiv_rn(__fmul_rn(diff, diff), d2);
                    e = __fdiv_rn(diff, d);
                    loss += (double)__fdiv_rn(lo, 2.0f);
                    a.err[i * R + r] = e;
                }
            }
            es[lane] = e;
            /* Column i of W1 is never read again: it keeps the dequantized value. */
            t[i * TILE_PAD + lane] = qv;
            cs[i * TILE_ROWS + lane] = (unsigned char)(int32_t)q;
        }
        __syncthreads();
        if (a.u)
            for (int j = i + 1 + warp; j < bw; j += TILE_WARPS)
                t[j * TILE_PAD + lane] =
                    __fsub_rn(t[j * TILE_PAD + lane], __fmul_rn(es[lane], us[j]));
        __syncthreads();
    }

    /* Results row by row (consecutive threads, consecutive columns). */
    for (int k = tid; k < nl * bw; k += nthreads) {
        int l = k / bw, j = k % bw;
        a.q[(r0 + l) * bw + j] = t[j * TILE_PAD + l];
        a.codes[(r0 + l) * bw + j] = cs[j * TILE_ROWS + l];
    }
    if (warp == 0 && lane < nl && a.u)
        a.loss[r] = loss;
}

/* ---- host side: stage the block's inputs, launch, bring the results back ------------- */

/* Host -> device copy of rows x cols elements with a host leading dimension. */
static int put2d(cu_state *st, void *dst, const void *src, int64_t rows, int64_t cols,
                 int64_t src_ld, size_t elem)
{
    if (rows > 0 && cols > 0)
        CU_TRY(st->ctx, cudaMemcpy2DAsync(dst, (size_t)cols * elem, src, (size_t)src_ld * elem,
                                          (size_t)cols * elem, (size_t)rows,
                                          cudaMemcpyHostToDevice, st->stream));
    return GPTQ_OK;
}

static int put(cu_state *st, void *dst, const void *src, size_t bytes)
{
    if (bytes)
        CU_TRY(st->ctx, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, st->stream));
    return GPTQ_OK;
}

static int get(cu_state *st, void *dst, const void *src, size_t bytes)
{
    if (bytes)
        CU_TRY(st->ctx, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, st->stream));
    return GPTQ_OK;
}

/* Carve `n` bytes (rounded up to 256) off a scratch buffer. */
static void *carve(char **p, size_t n)
{
    void *r = *p;
    *p += (n + 255) / 256 * 256;
    return r;
}

static size_t round256(size_t n) { return (n + 255) / 256 * 256; }

int gptq_cu_quantize_block(gptq_ctx *ctx, const gptq_block_args *args)
{
    const int64_t R = args->rows, C = args->cols, i1 = args->i1, bw = args->i2 - args->i1;
    const int32_t gs = args->group_size;
    int status = GPTQ_OK;
    cu_state *st = gptq_cu_state(ctx, &status);
    qb_args k;
    int64_t wc1 = args->i2, g1 = 0;
    int w_dev, u_dev, err_dev;
    size_t shared;
    char *p;
    float *qh;
    int32_t *ch;
    double *loss;

    if (!st)
        return status;
    if (bw < 1 || bw > MAX_BLOCK)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_NOT_SUPPORTED,
                                  "CUDA backend: block_size %lld is outside [1, %d]",
                                  (long long)bw, MAX_BLOCK);
    if (args->maxq > 255)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_NOT_SUPPORTED,
                                  "CUDA backend: more than 8 bits per code is not supported");
    /* w, u and err may be device buffers (the core's resident block loop), used in
     * place; the other arrays are host memory, as the core keeps them. */
    w_dev = gptq_cu_is_device(args->w);
    u_dev = args->u && gptq_cu_is_device(args->u);
    err_dev = args->u && gptq_cu_is_device(args->err);
    if (gptq_cu_is_device(args->q) || gptq_cu_is_device(args->codes) ||
        gptq_cu_is_device(args->perm))
        return gptq_cu_host->fail(ctx, GPTQ_ERR_NOT_SUPPORTED,
                                  "CUDA backend: quantize_block writes q and codes to host "
                                  "memory and reads perm from it; device arrays there are not "
                                  "supported");
    if (R / TILE_ROWS >= INT32_MAX)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_NOT_SUPPORTED, "CUDA backend: too many rows");

    memset(&k, 0, sizeof k);
    k.rows = R;
    k.cols = C;
    k.i1 = i1;
    k.bw = (int32_t)bw;
    k.maxq = args->maxq;
    k.sym = args->sym;
    k.group_size = gs;
    k.static_groups = args->static_groups;

    /* Groups this block touches: their rows [g0, g1] of scales/zeros travel. Non-static
     * groups starting in the block also read W up to their end (past i2 when the group
     * is wider than what is left of the block). */
    if (gs != -1 && args->static_groups) {
        k.g0 = INT64_MAX;
        for (int64_t c = i1; c < args->i2; c++) {
            int64_t g = args->perm[c] / gs;
            k.g0 = g < k.g0 ? g : k.g0;
            g1 = g > g1 ? g : g1;
        }
    } else if (gs != -1) {
        int64_t last_start = (args->i2 - 1) / gs * gs;
        k.g0 = i1 / gs;
        g1 = (args->i2 - 1) / gs;
        if (last_start >= i1 && last_start + gs > wc1)
            wc1 = last_start + gs < C ? last_start + gs : C;
    }

    /* Inputs: one scratch buffer per kind, carved; device operands in place. */
    if (w_dev) {
        k.w = args->w;
        k.w_ld = C;
        k.w_c0 = 0;
    } else {
        p = (char *)gptq_cu_scratch(st, CU_SLOT_W, (size_t)R * (size_t)(wc1 - i1) * sizeof(float),
                                    &status);
        if (!p)
            return status;
        k.w = (const float *)p;
        k.w_ld = wc1 - i1;
        k.w_c0 = i1;
        GPTQ_TRY(put2d(st, p, args->w + i1, R, wc1 - i1, C, sizeof(float)));
    }
    if (u_dev) {
        k.u = args->u + i1 * C + i1;
        k.u_ld = C;
    } else if (args->u) {
        float *u = (float *)gptq_cu_scratch(st, CU_SLOT_U, (size_t)(bw * bw) * sizeof(float),
                                            &status);
        if (!u)
            return status;
        GPTQ_TRY(put2d(st, u, args->u + i1 * C + i1, bw, bw, C, sizeof(float)));
        k.u = u;
        k.u_ld = bw;
    }
    p = (char *)gptq_cu_scratch(st, CU_SLOT_SMALL,
                                round256((size_t)bw * 4) + 2 * round256((size_t)R * 4), &status);
    if (!p)
        return status;
    k.perm = (const int32_t *)carve(&p, (size_t)bw * 4);
    GPTQ_TRY(put(st, (void *)k.perm, args->perm + i1, (size_t)bw * sizeof(int32_t)));
    if (gs == -1) {
        k.row_scale = (const float *)carve(&p, (size_t)R * 4);
        k.row_zero = (const float *)carve(&p, (size_t)R * 4);
        GPTQ_TRY(put(st, (void *)k.row_scale, args->row_scale, (size_t)R * sizeof(float)));
        GPTQ_TRY(put(st, (void *)k.row_zero, args->row_zero, (size_t)R * sizeof(float)));
    } else {
        size_t ng = (size_t)(g1 - k.g0 + 1);
        p = (char *)gptq_cu_scratch(st, CU_SLOT_GROUPS, 2 * round256(ng * (size_t)R * 4),
                                    &status);
        if (!p)
            return status;
        k.scales = (float *)carve(&p, ng * (size_t)R * 4);
        k.zeros = (float *)carve(&p, ng * (size_t)R * 4);
        GPTQ_TRY(put(st, k.scales, args->scales + k.g0 * R, ng * (size_t)R * sizeof(float)));
        GPTQ_TRY(put(st, k.zeros, args->zeros + k.g0 * R, ng * (size_t)R * sizeof(float)));
    }
    /* Outputs. */
    p = (char *)gptq_cu_scratch(st, CU_SLOT_Q, 2 * round256((size_t)(R * bw) * 4), &status);
    if (!p)
        return status;
    k.q = (float *)carve(&p, (size_t)(R * bw) * 4);
    k.codes = (int32_t *)carve(&p, (size_t)(R * bw) * 4);
    if (args->u) {
        p = (char *)gptq_cu_scratch(st, CU_SLOT_ERR,
                                    round256((size_t)(R * bw) * 4) + (size_t)R * 8, &status);
        if (!p)
            return status;
        k.err = (float *)carve(&p, (size_t)(R * bw) * 4);
        k.loss = (double *)carve(&p, (size_t)R * 8);
        if (err_dev)
            k.err = args->err; /* same [bw, R] layout */
    }

    shared = smem_bytes(bw);
    if (shared > 48 * 1024)
        CU_TRY(ctx, cudaFuncSetAttribute(quant_block_kernel,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)shared));
    quant_block_kernel<<<(unsigned)((R + TILE_ROWS - 1) / TILE_ROWS), dim3(TILE_ROWS, TILE_WARPS),
                         shared, st->stream>>>(k);
    CU_TRY(ctx, cudaGetLastError());

    /* Results: compact q/codes and the block's loss to host memory, then q/codes are
     * scattered to their original columns. */
    qh = (float *)malloc((size_t)(R * bw) * (sizeof(float) + sizeof(int32_t)) +
                         (size_t)R * sizeof(double));
    if (!qh)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_OUT_OF_MEMORY,
                                  "CUDA backend: out of host memory for the block results");
    ch = (int32_t *)(qh + R * bw);
    loss = (double *)(ch + R * bw);
    status = get(st, qh, k.q, (size_t)(R * bw) * sizeof(float));
    if (status == GPTQ_OK)
        status = get(st, ch, k.codes, (size_t)(R * bw) * sizeof(int32_t));
    if (status == GPTQ_OK && args->u && !err_dev)
        status = get(st, args->err, k.err, (size_t)(R * bw) * sizeof(float));
    if (status == GPTQ_OK && args->u)
        status = get(st, loss, k.loss, (size_t)R * sizeof(double));
    if (status == GPTQ_OK && gs != -1 && !args->static_groups) {
        size_t n = (size_t)(g1 - k.g0 + 1) * (size_t)R * sizeof(float);
        status = get(st, args->scales + k.g0 * R, k.scales, n);
        if (status == GPTQ_OK)
            status = get(st, args->zeros + k.g0 * R, k.zeros, n);
    }
    if (status == GPTQ_OK) {
        cudaError_t e = cudaStreamSynchronize(st->stream);
        if (e != cudaSuccess)
            status = gptq_cu_fail(ctx, e, "cudaStreamSynchronize(quantize_block)");
    }
    if (status == GPTQ_OK) {
        /* As the host kernel: the block's sum per row, added once to the running total. */
        if (args->u && args->row_loss)
            for (int64_t r = 0; r < R; r++)
                args->row_loss[r] += loss[r];
        for (int64_t r = 0; r < R; r++)
            for (int64_t i = 0; i < bw; i++) {
                const int64_t col = args->perm[i1 + i];
                args->q[r * C + col] = qh[r * bw + i];
                args->codes[r * C + col] = ch[r * bw + i];
            }
    }
    free(qh);
    return status;
}
