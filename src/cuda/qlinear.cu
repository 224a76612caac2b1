/*
 * Prepared quantized linears on the GPU: the ql_* slots of src/backend.h, called by
 * src/format/qlinear.c for handles created with a CUDA context.
 *
 *   ql_prepare   uploads the host layout as it is (one cudaMalloc), plus the segment of
 *                every block (blk_seg) and, when the layer is eligible, the tensor-core
 *                layout of qlinear_mma.cu;
 *   ql_forward   resolves the kernel (AUTO: by batch size, below) and runs it: the fused
 *                GEMV (qlinear_gemv.cu), the MMA kernel (x gathered into the padded
 *                column order as float16 first), or dequantization to a float16 [R][C]
 *                matrix followed by cublasGemmEx; host operands are staged;
 *   ql_bench     times a kernel and a dense float16 cublasGemmEx on rotating weight
 *                copies (so weights come from device memory, not L2), in a CUDA graph.
 *
 * AUTO (provisional thresholds, to be set from measurements on a GPU): GEMV up to
 * GV_AUTO_MAX rows; MMA up to MMA_AUTO_MAX rows when the layer is eligible (GEMV up to
 * 2 * GV_AUTO_MAX when it is not); cuBLAS beyond.
 *
 * Every forward pass is enqueued on the context's stream; with host operands the call
 * then waits for the copy back.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "qlinear_dev.h"
#include "qlinear_mma.h"

#define GV_AUTO_MAX 8
#define MMA_AUTO_MAX 256
#define MMA_CHUNK 64 /* the MMA kernel's largest batch per launch */


/* ---- device copies ---------------------------------------------------------------- */

static size_t round256(size_t n) { return (n + 255) / 256 * 256; }

static void release_copy(gptq_cu_ql *d)
{
    if (!d)
        return;
    cudaSetDevice(d->device);
    gptq_cu_mma_release((gptq_cu_mma *)d->mma);
    cudaFree(d->base);
    free(d);
}

/* One device copy of ql on st's device; with_mma 0 leaves the MMA layout out. */
static int upload(gptq_ctx *ctx, cu_state *st, const gptq_qlinear *ql, int with_mma,
                  gptq_cu_ql **out)
{
    const size_t ncodes = (size_t)(ql->ntiles * ql->nblk * ql->wpb * GPTQ__QL_ROWS);
    const size_t nparam = (size_t)(ql->ntiles * ql->nseg * GPTQ__QL_ROWS);
    const size_t o_codes = 0, o_scales = o_codes + round256(ncodes * 4);
    const size_t o_zeros = o_scales + round256(nparam * 2);
    const size_t o_seg = o_zeros + round256(nparam);
    const size_t o_col = o_seg + round256((size_t)ql->nblk * 4);
    const size_t o_bias = o_col + (ql->colmap ? round256((size_t)ql->cp * 4) : 0);
    const size_t total = o_bias + (ql->bias ? round256((size_t)ql->ntiles * GPTQ__QL_ROWS * 4) : 0);
    int32_t *seg = NULL;
    gptq_cu_ql *d;
    char *b;
    int status = GPTQ_OK;
    cudaError_t e;

    *out = NULL;
    d = (gptq_cu_ql *)calloc(1, sizeof *d);
    seg = (int32_t *)malloc((size_t)(ql->nblk > 0 ? ql->nblk : 1) * sizeof *seg);
    if (!d || !seg) {
        free(d);
        free(seg);
        return gptq_cu_host->fail(ctx, GPTQ_ERR_OUT_OF_MEMORY,
                                  "CUDA backend: out of host memory preparing a linear");
    }
    for (int64_t s = 0; s < ql->nseg; s++)
        for (int64_t k = ql->seg_blk[s]; k < ql->seg_blk[s + 1]; k++)
            seg[k] = (int32_t)s;
    d->device = st->device;
    d->bits = ql->bits;
    d->kb = ql->kb;
    d->wpb = ql->wpb;
    d->R = ql->out_features;
    d->C = ql->in_features;
    d->ntiles = ql->ntiles;
    d->nblk = ql->nblk;
    d->cp = ql->cp;
    d->nseg = ql->nseg;
    d->bytes = total;
    e = cudaDeviceGetAttribute(&d->sms, cudaDevAttrMultiProcessorCount, st->device);
    if (e == cudaSuccess)
        e = cudaMalloc(&d->base, total);
    if (e != cudaSuccess) {
        status = gptq_cu_fail(ctx, e, e == cudaErrorMemoryAllocation ? "cudaMalloc (prepared linear)"
                                                                     : "cudaDeviceGetAttribute");
        goto done;
    }
    b = (char *)d->base;
    d->codes = (const uint32_t *)(b + o_codes);
    d->scales = (const uint16_t *)(b + o_scales);
    d->zeros = (const uint8_t *)(b + o_zeros);
    d->blk_seg = (const int32_t *)(b + o_seg);
    d->colmap = ql->colmap ? (const int32_t *)(b + o_col) : NULL;
    d->bias = ql->bias ? (const float *)(b + o_bias) : NULL;
    e = cudaMemcpyAsync(b + o_codes, ql->codes, ncodes * 4, cudaMemcpyHostToDevice, st->stream);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(b + o_scales, ql->scales, nparam * 2, cudaMemcpyHostToDevice,
                            st->stream);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(b + o_zeros, ql->zeros, nparam, cudaMemcpyHostToDevice, st->stream);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(b + o_seg, seg, (size_t)ql->nblk * 4, cudaMemcpyHostToDevice,
                            st->stream);
    if (e == cudaSuccess && ql->colmap)
        e = cudaMemcpyAsync(b + o_col, ql->colmap, (size_t)ql->cp * 4, cudaMemcpyHostToDevice,
                            st->stream);
    if (e == cudaSuccess && ql->bias)
        e = cudaMemcpyAsync(b + o_bias, ql->bias, (size_t)ql->ntiles * GPTQ__QL_ROWS * 4,
                            cudaMemcpyHostToDevice, st->stream);
    /* seg is freed below: wait for the copies that read host memory. */
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(st->stream);
    if (e != cudaSuccess) {
        status = gptq_cu_fail(ctx, e, "cudaMemcpyAsync (uploading a prepared linear)");
        goto done;
    }
    d->mma_why = gptq_cu_mma_unsupported(ql);
    if (with_mma && !d->mma_why)
        status = gptq_cu_mma_prepare(ctx, st->stream, ql, (gptq_cu_mma **)&d->mma);
done:
    free(seg);
    if (status != GPTQ_OK)
        release_copy(d);
    else
        *out = d;
    return status;
}

int gptq_cu_ql_prepare(gptq_ctx *ctx, const gptq_qlinear *ql, void **dev)
{
    int status = GPTQ_OK;
    cu_state *st = gptq_cu_state(ctx, &status);
    gptq_cu_ql *d = NULL;

    *dev = NULL;
    if (!st)
        return status;
    status = upload(ctx, st, ql, 1, &d);
    *dev = d;
    return status;
}

void gptq_cu_ql_release(void *dev) { release_copy((gptq_cu_ql *)dev); }

int gptq_cu_ql_kernel_check(gptq_ctx *ctx, const void *dev, int32_t kernel)
{
    const gptq_cu_ql *d = (const gptq_cu_ql *)dev;
    if (kernel == GPTQ_QLINEAR_KERNEL_CUDA_MMA && !d->mma)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_NOT_SUPPORTED, "CUDA backend: %s",
                                  d->mma_why ? d->mma_why : "MMA kernel: not prepared");
    if (kernel == GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS && (d->R > INT_MAX || d->C > INT_MAX))
        return gptq_cu_host->fail(ctx, GPTQ_ERR_NOT_SUPPORTED,
                                  "CUDA backend: %lld x %lld exceeds cuBLAS's int dimensions",
                                  (long long)d->R, (long long)d->C);
    return GPTQ_OK;
}

static int32_t resolve(const gptq_cu_ql *d, int32_t kernel, int64_t batch)
{
    if (kernel != GPTQ_QLINEAR_KERNEL_AUTO)
        return kernel;
    if (batch <= GV_AUTO_MAX)
        return GPTQ_QLINEAR_KERNEL_CUDA_GEMV;
    if (d->mma && batch <= MMA_AUTO_MAX)
        return GPTQ_QLINEAR_KERNEL_CUDA_MMA;
    if (!d->mma && batch <= 2 * GV_AUTO_MAX)
        return GPTQ_QLINEAR_KERNEL_CUDA_GEMV;
    return GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS;
}

/* ---- small kernels: input gather, dequantization, epilogue -------------------------- */

/* xh[b][k] = fl16(x[b][colmap[k]]) for k < ncol (0 for padding, -1), rows ldo apart;
 * colmap NULL: the identity. */
__global__ void gather_half(const void *x, int32_t dtype, int64_t C, const int32_t *colmap,
                            int64_t ncol, int64_t ldo, int64_t batch, __half *xh)
{
    const int64_t n = batch * ldo;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t b = i / ldo, k = i - b * ldo;
        float v = 0.0f;
        if (k < ncol) {
            const int64_t j = colmap ? (int64_t)colmap[k] : k;
            if (j >= 0)
                v = gptq_cu_load_x(x, dtype, b * C + j);
        }
        xh[i] = __float2half_rn(v);
    }
}

/* w[r][j] = fl16(scale * (code - zero)) in the original column order j = colmap[k]: the
 * reference dequantization (exact in float32: an 11-bit scale times an integer below
 * 2^8), rounded once to float16. One thread per (row, block). */
__global__ void dequant_half(const gptq_cu_ql d, __half *w)
{
    const int64_t n = d.R * d.nblk;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / d.nblk, blk = i - r * d.nblk;
        const int64_t t = r / GPTQ__QL_ROWS, l = r % GPTQ__QL_ROWS;
        const int64_t seg = d.blk_seg[blk];
        const int64_t po = (t * d.nseg + seg) * GPTQ__QL_ROWS + l;
        const float scale = __half2float(__ushort_as_half(d.scales[po]));
        const int zero = d.zeros[po];
        const uint32_t *wd = d.codes + (t * d.nblk + blk) * d.wpb * GPTQ__QL_ROWS;
        for (int m = 0; m < d.kb; m++) {
            const int64_t k = blk * d.kb + m;
            const int64_t j = d.colmap ? (int64_t)d.colmap[k] : k;
            uint32_t c;
            if (j < 0 || j >= d.C)
                continue;
            if (d.bits == 3) {
                /* words [0,16): low bits of columns 0..15, [16,32): 16..31, [32,48): the
                 * high bits at gptq__ql_hi_bit(m) (src/format/qlinear.h). */
                const int hb = (m & 7) | (m & 8) << 1 | (m & 16) >> 1;
                c = (wd[(m >> 4) * GPTQ__QL_ROWS + l] >> (2 * (m & 15))) & 3u;
                c |= ((wd[2 * GPTQ__QL_ROWS + l] >> hb) & 1u) << 2;
            } else {
                c = (wd[l] >> (d.bits * m)) & ((1u << d.bits) - 1u);
            }
            w[r * d.C + j] = __float2half_rn(__fmul_rn(scale, (float)((int)c - zero)));
        }
    }
}

/* y[b][r] = acc[b][r] + bias[r], as float32 or float16. */
__global__ void epilogue(const float *acc, const float *bias, int64_t R, int64_t n, void *y,
                         int y_half)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float v = bias ? __fadd_rn(acc[i], bias[i % R]) : acc[i];
        if (y_half)
            ((__half *)y)[i] = __float2half_rn(v);
        else
            ((float *)y)[i] = v;
    }
}

static unsigned grid_for(int64_t n, int sms)
{
    int64_t g = (n + 255) / 256, cap = (int64_t)(sms > 0 ? sms : 1) * 16;
    return (unsigned)(g < 1 ? 1 : g > cap ? cap : g);
}

/* ---- the three paths (device operands, enqueued on st's stream) ---------------------- */

static int run_mma(cu_state *st, const gptq_cu_ql *d, const void *x, int32_t x_dtype,
                   int64_t batch, void *y, int y_half)
{
    gptq_ctx *ctx = st->ctx;
    const gptq_cu_mma *m = (const gptq_cu_mma *)d->mma;
    const int64_t ldx = (d->cp + 7) / 8 * 8;
    const size_t ysize = y_half ? 2 : 4;
    const size_t wsb = gptq_cu_mma_workspace(m, batch < MMA_CHUNK ? batch : MMA_CHUNK);
    int status = GPTQ_OK;
    __half *xh;
    void *ws = NULL;
    unsigned *cnt = NULL;

    xh = (__half *)gptq_cu_scratch(st, CU_SLOT_QL_X, (size_t)(batch * ldx) * 2, &status);
    if (!xh)
        return status;
    if (wsb && !(ws = gptq_cu_scratch(st, CU_SLOT_QL_WS, wsb, &status)))
        return status;
    if (gptq_cu_mma_counters(m) && !(cnt = gptq_cu_ql_counters(st, gptq_cu_mma_counters(m), &status)))
        return status;
    gather_half<<<grid_for(batch * ldx, d->sms), 256, 0, st->stream>>>(
        x, x_dtype, d->C, d->colmap, d->cp, ldx, batch, xh);
    CU_TRY(ctx, cudaGetLastError());
    for (int64_t b0 = 0; b0 < batch; b0 += MMA_CHUNK) {
        const int64_t nb = batch - b0 < MMA_CHUNK ? batch - b0 : MMA_CHUNK;
        int rc = gptq_cu_mma_forward(ctx, st->stream, m, xh + b0 * ldx, ldx, nb,
                                     (char *)y + (size_t)(b0 * d->R) * ysize, y_half, d->bias,
                                     ws, cnt);
        if (rc != GPTQ_OK)
            return rc;
    }
    return GPTQ_OK;
}

static int run_cublas(cu_state *st, const gptq_cu_ql *d, const void *x, int32_t x_dtype,
                      int64_t batch, void *y, int y_half)
{
    gptq_ctx *ctx = st->ctx;
    const float one = 1.0f, zero = 0.0f;
    const int direct = !y_half && !d->bias; /* GEMM writes y itself */
    int status = GPTQ_OK;
    cublasStatus_t bs;
    __half *xh, *w;
    float *acc;

    if (d->R > INT_MAX || d->C > INT_MAX || batch > INT_MAX)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_NOT_SUPPORTED,
                                  "CUDA backend: %lld x %lld (batch %lld) exceeds cuBLAS's int "
                                  "dimensions",
                                  (long long)d->R, (long long)d->C, (long long)batch);
    xh = (__half *)gptq_cu_scratch(st, CU_SLOT_QL_X, (size_t)(batch * d->C) * 2, &status);
    if (!xh)
        return status;
    w = (__half *)gptq_cu_scratch(st, CU_SLOT_QL_W, (size_t)(d->R * d->C) * 2, &status);
    if (!w)
        return status;
    acc = direct ? (float *)y
                 : (float *)gptq_cu_scratch(st, CU_SLOT_QL_Y, (size_t)(batch * d->R) * 4, &status);
    if (!acc)
        return status;
    gather_half<<<grid_for(batch * d->C, d->sms), 256, 0, st->stream>>>(
        x, x_dtype, d->C, NULL, d->C, d->C, batch, xh);
    CU_TRY(ctx, cudaGetLastError());
    dequant_half<<<grid_for(d->R * d->nblk, d->sms), 256, 0, st->stream>>>(*d, w);
    CU_TRY(ctx, cudaGetLastError());
    /* Column-major view: acc^T [R x batch] = W^T^T ... i.e. op(A) = W (stored C x R
     * column-major, transposed), B = x^T (C x batch). float16 products are exact in
     * float32 and summed in float32 (COMPUTE_32F); the context's handle is in pedantic
     * mode for the quantizer's float32 GEMMs, which would keep this product off the
     * tensor cores, so default math is set for this call only. */
    CU_BLAS_TRY(ctx, cublasSetMathMode(st->blas, CUBLAS_DEFAULT_MATH));
    bs = cublasGemmEx(st->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)d->R, (int)batch, (int)d->C, &one,
                      w, CUDA_R_16F, (int)d->C, xh, CUDA_R_16F, (int)d->C, &zero, acc,
                      CUDA_R_32F, (int)d->R, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    cublasSetMathMode(st->blas, CUBLAS_PEDANTIC_MATH);
    if (bs != CUBLAS_STATUS_SUCCESS)
        return gptq_cu_blas_fail(ctx, bs, "cublasGemmEx (dequantized float16 weights)");
    if (!direct) {
        epilogue<<<grid_for(batch * d->R, d->sms), 256, 0, st->stream>>>(acc, d->bias, d->R,
                                                                        batch * d->R, y, y_half);
        CU_TRY(ctx, cudaGetLastError());
    }
    return GPTQ_OK;
}

static int run(cu_state *st, const gptq_cu_ql *d, int32_t kernel, const void *x,
               int32_t x_dtype, int64_t batch, void *y, int y_half)
{
    switch (kernel) {
    case GPTQ_QLINEAR_KERNEL_CUDA_GEMV: return gptq_cu_ql_gemv(st, d, x, x_dtype, batch, y, y_half);
    case GPTQ_QLINEAR_KERNEL_CUDA_MMA:
        if (!d->mma)
            return gptq_cu_host->fail(st->ctx, GPTQ_ERR_NOT_SUPPORTED, "CUDA backend: %s",
                                      d->mma_why ? d->mma_why : "MMA kernel: not prepared");
        return run_mma(st, d, x, x_dtype, batch, y, y_half);
    case GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS: return run_cublas(st, d, x, x_dtype, batch, y, y_half);
    default:
        return gptq_cu_host->fail(st->ctx, GPTQ_ERR_NOT_SUPPORTED,
                                  "CUDA backend: kernel %d is not a GPU kernel", (int)kernel);
    }
}

int gptq_cu_ql_forward(gptq_ctx *ctx, const gptq_qlinear *ql, const void *dev, int32_t kernel,
                       const void *x, int32_t x_dtype, int64_t batch, void *y, int32_t y_dtype,
                       int32_t device_pointers)
{
    const gptq_cu_ql *d = (const gptq_cu_ql *)dev;
    const size_t xsize = x_dtype == GPTQ_QLINEAR_DTYPE_F32 ? 4 : 2;
    const size_t ysize = y_dtype == GPTQ_QLINEAR_DTYPE_F16 ? 2 : 4;
    const int y_half = y_dtype == GPTQ_QLINEAR_DTYPE_F16;
    int status = GPTQ_OK;
    cu_state *st = gptq_cu_state(ctx, &status);
    const void *xd = x;
    void *yd = y;
    size_t xbytes, ybytes;

    (void)ql;
    if (!st)
        return status;
    if (st->device != d->device)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                                  "CUDA backend: the handle lives on device %d, the context on "
                                  "device %d",
                                  d->device, st->device);
    if ((uint64_t)batch > SIZE_MAX / 4 / (uint64_t)(d->C > d->R ? d->C : d->R))
        return gptq_cu_host->fail(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                                  "CUDA backend: batch %lld is too large", (long long)batch);
    xbytes = (size_t)batch * (size_t)d->C * xsize;
    ybytes = (size_t)batch * (size_t)d->R * ysize;
    kernel = resolve(d, kernel, batch);
    if (device_pointers) {
        if (!gptq_cu_pointer_on(x, d->device) || !gptq_cu_pointer_on(y, d->device))
            return gptq_cu_host->fail(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                                      "gptq_qlinear_forward_device: %s is not device or managed "
                                      "memory of CUDA device %d",
                                      !gptq_cu_pointer_on(x, d->device) ? "x" : "y", d->device);
        return run(st, d, kernel, x, x_dtype, batch, y, y_half);
    }
    /* Host operands: stage them (one buffer each, kept by the context). */
    xd = gptq_cu_scratch(st, CU_SLOT_QL_IN, xbytes, &status);
    if (!xd)
        return status;
    yd = gptq_cu_scratch(st, CU_SLOT_QL_OUT, ybytes, &status);
    if (!yd)
        return status;
    CU_TRY(ctx, cudaMemcpyAsync((void *)xd, x, xbytes, cudaMemcpyHostToDevice, st->stream));
    status = run(st, d, kernel, xd, x_dtype, batch, yd, y_half);
    if (status != GPTQ_OK) {
        cudaStreamSynchronize(st->stream); /* x's staging copy reads host memory */
        return status;
    }
    CU_TRY(ctx, cudaMemcpyAsync(y, yd, ybytes, cudaMemcpyDeviceToHost, st->stream));
    return gptq_cu_synchronize(ctx);
}

int gptq_cu_synchronize(gptq_ctx *ctx)
{
    int status = GPTQ_OK;
    cu_state *st = gptq_cu_state(ctx, &status);
    if (!st)
        return status;
    CU_TRY(ctx, cudaStreamSynchronize(st->stream));
    return GPTQ_OK;
}

int gptq_cu_device_bandwidth(gptq_ctx *ctx, double *bytes_per_second)
{
    int status = GPTQ_OK, khz = 0, bus_bits = 0;
    cu_state *st = gptq_cu_state(ctx, &status);
    if (!st)
        return status;
    CU_TRY(ctx, cudaDeviceGetAttribute(&khz, cudaDevAttrMemoryClockRate, st->device));
    CU_TRY(ctx, cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, st->device));
    *bytes_per_second = 2.0 * (double)khz * 1e3 * (double)bus_bits / 8.0;
    return GPTQ_OK;
}

/* ---- benchmark -------------------------------------------------------------------------- */

typedef struct bench_state {
    cu_state *st;
    int32_t kernel;
    int64_t batch, R, C;
    gptq_cu_ql **copies; /* the quantized path's weight copies */
    __half **dense;      /* the float16 baseline's weight copies */
    int ncopies;
    __half *x, *y;
} bench_state;

/* Call i of a timed sequence: the kernel on copy i % n, or the dense GEMM. */
static int bench_call(bench_state *b, int dense, int i)
{
    if (!dense)
        return run(b->st, b->copies[i % b->ncopies], b->kernel, b->x, GPTQ_QLINEAR_DTYPE_F16,
                   b->batch, b->y, 1);
    {
        const float one = 1.0f, zero = 0.0f;
        cublasStatus_t s = cublasGemmEx(b->st->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)b->R,
                                        (int)b->batch, (int)b->C, &one, b->dense[i % b->ncopies],
                                        CUDA_R_16F, (int)b->C, b->x, CUDA_R_16F, (int)b->C, &zero,
                                        b->y, CUDA_R_16F, (int)b->R, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT);
        return s == CUBLAS_STATUS_SUCCESS ? GPTQ_OK
                                          : gptq_cu_blas_fail(b->st->ctx, s, "cublasGemmEx (float16 baseline)");
    }
}

/* Seconds per call of `iters` calls, captured in a graph when capture works. */
static int bench_time(bench_state *b, int dense, int32_t iters, double *seconds)
{
    gptq_ctx *ctx = b->st->ctx;
    cudaStream_t s = b->st->stream;
    cudaEvent_t e0 = NULL, e1 = NULL;
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    float ms = 0.0f;
    int status = GPTQ_OK, captured = 0;

    /* Warm-up: every copy once (grows the scratch buffers outside the capture). */
    for (int i = 0; i < b->ncopies && status == GPTQ_OK; i++)
        status = bench_call(b, dense, i);
    if (status != GPTQ_OK)
        return status;
    CU_TRY(ctx, cudaStreamSynchronize(s));
    if (cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess) {
        int rc = GPTQ_OK;
        for (int32_t i = 0; i < iters && rc == GPTQ_OK; i++)
            rc = bench_call(b, dense, i);
        if (cudaStreamEndCapture(s, &graph) == cudaSuccess && rc == GPTQ_OK &&
            cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess)
            captured = 1;
    }
    cudaGetLastError(); /* a refused capture: time the calls one by one */
    if (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess) {
        status = gptq_cu_fail(ctx, cudaGetLastError(), "cudaEventCreate");
        goto done;
    }
    if (captured && cudaGraphLaunch(exec, s) != cudaSuccess) /* untimed first launch */
        captured = 0;
    cudaEventRecord(e0, s);
    if (captured) {
        cudaGraphLaunch(exec, s);
    } else {
        for (int32_t i = 0; i < iters && status == GPTQ_OK; i++)
            status = bench_call(b, dense, i);
    }
    cudaEventRecord(e1, s);
    {
        cudaError_t e = cudaEventSynchronize(e1);
        if (e == cudaSuccess)
            e = cudaEventElapsedTime(&ms, e0, e1);
        if (e != cudaSuccess && status == GPTQ_OK)
            status = gptq_cu_fail(ctx, e, "cudaEventSynchronize (benchmark)");
    }
    *seconds = (double)ms * 1e-3 / iters;
done:
    if (exec)
        cudaGraphExecDestroy(exec);
    if (graph)
        cudaGraphDestroy(graph);
    if (e0)
        cudaEventDestroy(e0);
    if (e1)
        cudaEventDestroy(e1);
    return status;
}

/* Copies of `bytes` each so that all of them together exceed twice the L2 cache. */
static int copies_for(cu_state *st, size_t bytes)
{
    int l2 = 0;
    size_t freeb = 0, totalb = 0;
    int64_t n;
    cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, st->device);
    n = (int64_t)(2 * (size_t)(l2 > 0 ? l2 : 0) / (bytes ? bytes : 1)) + 1;
    if (cudaMemGetInfo(&freeb, &totalb) == cudaSuccess && n * (int64_t)bytes > (int64_t)(freeb / 2))
        n = (int64_t)(freeb / 2 / (bytes ? bytes : 1));
    cudaGetLastError();
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

int gptq_cu_ql_bench(gptq_ctx *ctx, const gptq_qlinear *ql, const void *dev, int32_t kernel,
                     int64_t batch, int32_t iters, int32_t *resolved, double *seconds,
                     double *fp16_seconds)
{
    const gptq_cu_ql *d = (const gptq_cu_ql *)dev;
    int status = GPTQ_OK;
    cu_state *st = gptq_cu_state(ctx, &status);
    bench_state b;
    int want_mma, n;
    size_t per_copy;

    if (!st)
        return status;
    memset(&b, 0, sizeof b);
    b.st = st;
    b.batch = batch;
    b.R = d->R;
    b.C = d->C;
    b.kernel = resolve(d, kernel, batch);
    if (resolved)
        *resolved = b.kernel;
    if (b.kernel == GPTQ_QLINEAR_KERNEL_CUDA_MMA && !d->mma)
        return gptq_cu_ql_kernel_check(ctx, dev, b.kernel);
    if (d->R > INT_MAX || d->C > INT_MAX || batch > INT_MAX)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_NOT_SUPPORTED,
                                  "CUDA backend: benchmark dimensions exceed int");
    want_mma = b.kernel == GPTQ_QLINEAR_KERNEL_CUDA_MMA;
    /* Random float16 input in [-1, 1) and room for the output. */
    {
        const size_t nx = (size_t)(batch * d->C);
        __half *hx = (__half *)malloc(nx * sizeof *hx);
        uint64_t s = 0x9E3779B97F4A7C15ull;
        cudaError_t e;
        if (!hx)
            return gptq_cu_host->fail(ctx, GPTQ_ERR_OUT_OF_MEMORY, "CUDA backend: benchmark input");
        for (size_t i = 0; i < nx; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            hx[i] = __float2half_rn((float)(int32_t)(s >> 40 & 0xFFFFFF) / 8388608.0f - 1.0f);
        }
        e = cudaMalloc((void **)&b.x, nx * sizeof *hx);
        if (e == cudaSuccess)
            e = cudaMalloc((void **)&b.y, (size_t)(batch * d->R) * 2);
        if (e == cudaSuccess)
            e = cudaMemcpy(b.x, hx, nx * sizeof *hx, cudaMemcpyHostToDevice);
        free(hx);
        if (e != cudaSuccess) {
            status = gptq_cu_fail(ctx, e, "cudaMalloc/cudaMemcpy (benchmark input)");
            goto done;
        }
    }
    /* The quantized weights: fresh copies of the handle (with the MMA layout only when
     * that kernel runs). */
    per_copy = d->bytes;
    if (want_mma)
        per_copy += (size_t)(d->R * d->cp) * (size_t)d->bits / 8;
    n = copies_for(st, per_copy);
    b.copies = (gptq_cu_ql **)calloc((size_t)n, sizeof *b.copies);
    if (!b.copies) {
        status = gptq_cu_host->fail(ctx, GPTQ_ERR_OUT_OF_MEMORY, "CUDA backend: benchmark");
        goto done;
    }
    for (b.ncopies = 0; b.ncopies < n; b.ncopies++)
        if ((status = upload(ctx, st, ql, want_mma, &b.copies[b.ncopies])) != GPTQ_OK)
            goto done;
    status = bench_time(&b, 0, iters, seconds);
    for (int i = 0; i < b.ncopies; i++)
        release_copy(b.copies[i]);
    free(b.copies);
    b.copies = NULL;
    b.ncopies = 0;
    if (status != GPTQ_OK || !fp16_seconds)
        goto done;
    /* The dense float16 baseline: copies of the dequantized weights. */
    {
        const size_t wb = (size_t)(d->R * d->C) * 2;
        int nd = copies_for(st, wb);
        b.dense = (__half **)calloc((size_t)nd, sizeof *b.dense);
        if (!b.dense) {
            status = gptq_cu_host->fail(ctx, GPTQ_ERR_OUT_OF_MEMORY, "CUDA backend: benchmark");
            goto done;
        }
        for (b.ncopies = 0; b.ncopies < nd; b.ncopies++) {
            cudaError_t e = cudaMalloc((void **)&b.dense[b.ncopies], wb);
            if (e != cudaSuccess) {
                status = gptq_cu_fail(ctx, e, "cudaMalloc (float16 baseline weights)");
                goto done;
            }
            dequant_half<<<grid_for(d->R * d->nblk, d->sms), 256, 0, st->stream>>>(
                *d, b.dense[b.ncopies]);
            if ((e = cudaGetLastError()) != cudaSuccess) {
                b.ncopies++;
                status = gptq_cu_fail(ctx, e, "dequant_half (float16 baseline weights)");
                goto done;
            }
        }
        if (cublasSetMathMode(st->blas, CUBLAS_DEFAULT_MATH) != CUBLAS_STATUS_SUCCESS) {
            status = gptq_cu_host->fail(ctx, GPTQ_ERR_DEVICE, "CUDA backend: cublasSetMathMode");
            goto done;
        }
        status = bench_time(&b, 1, iters, fp16_seconds);
        cublasSetMathMode(st->blas, CUBLAS_PEDANTIC_MATH);
    }
done:
    cudaStreamSynchronize(st->stream);
    if (b.copies)
        for (int i = 0; i < b.ncopies; i++)
            release_copy(b.copies[i]);
    if (b.dense)
        for (int i = 0; i < b.ncopies; i++)
            cudaFree(b.dense[i]);
    free(b.copies);
    free(b.dense);
    cudaSetDevice(st->device);
    cudaFree(b.x);
    cudaFree(b.y);
    return status;
}
