/*
 * The fused dequantize GEMV of prepared quantized linears (GPTQ_QLINEAR_KERNEL_CUDA_GEMV):
 * reads the host layout of src/format/qlinear.h directly, every bit width (2, 3, 4, 8),
 * any group size and act-order, and computes what the CPU kernels compute,
 *
 *     y[b, r] = sum over runs p of scale[r, p] * (dot[b, r, p] - zero[r, p] * xsum[b, p])
 *
 * in float32, where a run is the columns of one segment (group) that one thread reads
 * within one K slice (the CPU folds per whole segment; the sum is the same, the rounding
 * differs: see the bound in gptq.h).
 *
 * Launch: grid (ceil(ntiles / 8), ksplit), 256 threads. A thread block owns 8 tiles (one
 * warp per tile: 128 output rows) and one K slice of `sb` blocks (sb * kb <= 1024
 * columns). It gathers its slice of x (through colmap, widened to float32, padding 0) for
 * up to 8 batch rows into shared memory, with the float32 sum of every block's kb values.
 * In a warp, lane = 4 * j + q reads rows 4q..4q+3 of blocks j, j + 8, j + 16, ... of its
 * tile: one 128-bit load per block (three for 3 bits: both low-bit planes and the high-bit
 * plane), so a warp reads 8 consecutive blocks, 512 contiguous bytes, per step, four
 * steps' loads issued before their arithmetic. Codes become floats exactly by the
 * exponent trick (2^23 | code, minus 2^23), one FMA per weight and batch row into the
 * run's dot; at a segment change the run is folded with its scale and zero (loaded
 * then, 8 + 4 bytes). The 8 lanes sharing rows reduce with shuffles in a fixed order.
 *
 * K slices: a layer with few tiles is cut into slices so that the grid covers every SM
 * twice. Each block then writes its partial rows to a float32 workspace and the last
 * block of a row group to arrive (an atomic counter per row group) adds the slices in
 * slice order, adds the bias and writes y: deterministic, one launch, and the counter is
 * reset to 0 for the next launch.
 *
 * Rounding: __fmaf_rn/__fadd_rn explicitly (the module builds with --fmad=false).
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string.h>

#include "qlinear_dev.h"

#define GV_TPB 8          /* tiles per thread block, one warp each */
#define GV_THREADS 256
#define GV_MAX_COLS 1024  /* columns of x per K slice held in shared memory */
#define GV_MAX_NB 8       /* batch rows per launch */

typedef struct gv_args {
    const uint32_t *codes;
    const uint16_t *scales;
    const uint8_t *zeros;
    const int32_t *blk_seg;
    const int32_t *colmap;
    const float *bias;
    const void *x;
    void *y;
    float *part;           /* [ksplit][NB][ntiles * 16] when ksplit > 1 */
    unsigned *cnt;         /* [gridDim.x] arrival counters, 0 between launches */
    int64_t R, C, ntiles, nblk, nseg;
    int32_t x_dtype, y_half;
    int32_t nb;            /* batch rows of this launch (<= NB) */
    int32_t sb;            /* blocks per K slice, a multiple of 8 */
    int32_t ksplit;
} gv_args;

/* The dynamic shared memory; under GPTQ_CUDA_EMU the host emulation's (tests/cuda_emu),
 * which cannot declare `extern __shared__`. */
static __device__ __forceinline__ float *gv_smem()
{
#ifdef GPTQ_CUDA_EMU
    return (float *)gptq_emu_dynamic_smem();
#else
    extern __shared__ float4 gv_smem_[];
    return (float *)gv_smem_;
#endif
}

static __device__ __forceinline__ uint32_t comp(const uint4 &v, int r)
{
    return r == 0 ? v.x : r == 1 ? v.y : r == 2 ? v.z : v.w;
}

/* An integer below 2^23 as a float, exactly: 2^23 + c has c as its mantissa. */
static __device__ __forceinline__ float code_f(uint32_t c)
{
    return __fsub_rn(__uint_as_float(0x4B000000u | c), 8388608.0f);
}

/* Code of column m (< KB) of one row of a block, from the row's WPB words. */
template <int BITS>
static __device__ __forceinline__ uint32_t code_at(const uint32_t *w, int m)
{
    if (BITS == 3) {
        const uint32_t lo = (w[m >> 4] >> (2 * (m & 15))) & 3u;
        const int hb = (m & 7) | (m & 8) << 1 | (m & 16) >> 1; /* gptq__ql_hi_bit */
        return lo | ((w[2] >> hb) & 1u) << 2;
    }
    return (w[0] >> (BITS * m)) & ((1u << BITS) - 1u);
}

/* Fold a finished run of segment `seg` into the lane's four rows:
 * acc += scale * (dot - zero * xsum), the scale and zero loaded now (8 + 4 bytes). */
template <int NB>
static __device__ __forceinline__ void fold_run(const gv_args &a, int64_t t, int seg, int q,
                                                const float (&dot)[4][NB], const float (&xr)[NB],
                                                float (&acc)[4][NB])
{
    const int64_t o = (t * a.nseg + seg) * 16 + 4 * q;
    const uint2 s2 = __ldg((const uint2 *)(a.scales + o));
    const uint32_t z4 = __ldg((const uint32_t *)(a.zeros + o));
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const uint32_t sb16 = (r < 2 ? s2.x : s2.y) >> (16 * (r & 1));
        const float sc = __half2float(__ushort_as_half((unsigned short)sb16));
        const float z = code_f((z4 >> (8 * r)) & 255u);
#pragma unroll
        for (int b = 0; b < NB; b++)
            acc[r][b] = __fmaf_rn(sc, __fmaf_rn(-z, xr[b], dot[r][b]), acc[r][b]);
    }
}

template <int BITS, int NB>
__global__ void __launch_bounds__(GV_THREADS) gemv_kernel(gv_args a)
{
    constexpr int KB = BITS == 3 ? 32 : 32 / BITS;
    constexpr int WPB = BITS == 3 ? 3 : 1;
    constexpr int U = BITS == 3 ? 2 : 4; /* blocks whose loads are issued together */
    __shared__ int is_last;
    float *xs = gv_smem();               /* [NB][sb * KB] */
    const int scols = a.sb * KB;
    float *xb = xs + NB * scols;          /* [NB][sb] block sums */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int q = lane & 3, j0 = lane >> 2;
    const int64_t t = (int64_t)blockIdx.x * GV_TPB + warp;
    const int64_t blk0 = (int64_t)blockIdx.y * a.sb;
    const int64_t blk1 = blk0 + a.sb < a.nblk ? blk0 + a.sb : a.nblk;
    const int nbl = (int)(blk1 - blk0), ncols = nbl * KB;
    float acc[4][NB];

    /* x of this slice in the padded column order, widened; padding and rows >= nb: 0. */
    for (int i = threadIdx.x; i < NB * scols; i += GV_THREADS) {
        const int b = i / scols, c = i - b * scols;
        float v = 0.0f;
        if (b < a.nb && c < ncols) {
            const int64_t k = blk0 * KB + c;
            const int64_t jc = a.colmap ? (int64_t)__ldg(a.colmap + k) : k;
            if (jc >= 0)
                v = gptq_cu_load_x(a.x, a.x_dtype, b * a.C + jc);
        }
        xs[i] = v;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < NB * nbl; i += GV_THREADS) {
        const int b = i / nbl, jb = i - b * nbl;
        const float *p = xs + b * scols + jb * KB;
        float s = 0.0f;
        for (int m = 0; m < KB; m++)
            s = __fadd_rn(s, p[m]);
        xb[b * a.sb + jb] = s;
    }
    __syncthreads();

#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
        for (int b = 0; b < NB; b++)
            acc[r][b] = 0.0f;

    if (t < a.ntiles) {
        const uint4 *tc = (const uint4 *)(a.codes + t * a.nblk * WPB * 16);
        float dot[4][NB], xr[NB];
        int cur = -1;

        for (int64_t base = blk0 + j0; base < blk1; base += 8 * U) {
            uint4 w[U][WPB];
            int sg[U];
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int64_t blk = base + 8 * u;
                sg[u] = -1;
                if (blk < blk1) {
                    sg[u] = __ldg(a.blk_seg + blk);
#pragma unroll
                    for (int p = 0; p < WPB; p++)
                        w[u][p] = __ldg(tc + blk * WPB * 4 + p * 4 + q);
                }
            }
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int jb = (int)(base + 8 * u - blk0);
                if (sg[u] < 0)
                    continue;
                if (sg[u] != cur) {
                    if (cur >= 0)
                        fold_run<NB>(a, t, cur, q, dot, xr, acc);
                    cur = sg[u];
#pragma unroll
                    for (int b = 0; b < NB; b++) {
                        xr[b] = 0.0f;
#pragma unroll
                        for (int r = 0; r < 4; r++)
                            dot[r][b] = 0.0f;
                    }
                }
#pragma unroll
                for (int b = 0; b < NB; b++)
                    xr[b] = __fadd_rn(xr[b], xb[b * a.sb + jb]);
#pragma unroll
                for (int m4 = 0; m4 < KB; m4 += 4) {
                    float4 xv[NB];
#pragma unroll
                    for (int b = 0; b < NB; b++)
                        xv[b] = *(const float4 *)(xs + b * scols + jb * KB + m4);
#pragma unroll
                    for (int r = 0; r < 4; r++) {
                        uint32_t wr[WPB];
#pragma unroll
                        for (int p = 0; p < WPB; p++)
                            wr[p] = comp(w[u][p], r);
#pragma unroll
                        for (int mm = 0; mm < 4; mm++) {
                            const float c = code_f(code_at<BITS>(wr, m4 + mm));
#pragma unroll
                            for (int b = 0; b < NB; b++) {
                                const float xvv = mm == 0   ? xv[b].x
                                                  : mm == 1 ? xv[b].y
                                                  : mm == 2 ? xv[b].z
                                                            : xv[b].w;
                                dot[r][b] = __fmaf_rn(xvv, c, dot[r][b]);
                            }
                        }
                    }
                }
            }
        }
        if (cur >= 0)
            fold_run<NB>(a, t, cur, q, dot, xr, acc);
    }

    /* Lanes q, q + 4, ..., q + 28 hold the same rows: a fixed butterfly sums them. */
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
        for (int b = 0; b < NB; b++) {
            float v = acc[r][b];
            v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 4));
            v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 8));
            v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 16));
            acc[r][b] = v;
        }

    if (a.ksplit == 1) {
        if (t < a.ntiles && j0 == 0)
#pragma unroll
            for (int r = 0; r < 4; r++) {
                const int64_t row = t * 16 + 4 * q + r;
                if (row >= a.R)
                    continue;
                /* Up to NB with a test, not up to a.nb: a constant index keeps acc in
                 * registers (a run-time one would put the whole array in local memory). */
#pragma unroll
                for (int b = 0; b < NB; b++) {
                    if (b >= a.nb)
                        continue;
                    const float v = a.bias ? __fadd_rn(acc[r][b], a.bias[row]) : acc[r][b];
                    if (a.y_half)
                        ((__half *)a.y)[b * a.R + row] = __float2half_rn(v);
                    else
                        ((float *)a.y)[b * a.R + row] = v;
                }
            }
        return;
    }

    /* K slices: publish this slice's rows; the last block of the row group sums them. */
    {
        const int64_t rp = a.ntiles * 16;
        if (t < a.ntiles && j0 == 0)
#pragma unroll
            for (int r = 0; r < 4; r++)
#pragma unroll
                for (int b = 0; b < NB; b++)
                    a.part[((int64_t)blockIdx.y * NB + b) * rp + t * 16 + 4 * q + r] = acc[r][b];
        __threadfence();
        __syncthreads();
        if (threadIdx.x == 0)
            is_last = atomicAdd(a.cnt + blockIdx.x, 1u) == (unsigned)(a.ksplit - 1);
        __syncthreads();
        if (!is_last)
            return;
        __threadfence();
        for (int i = threadIdx.x; i < NB * GV_TPB * 16; i += GV_THREADS) {
            const int b = i / (GV_TPB * 16);
            const int64_t row = (int64_t)blockIdx.x * GV_TPB * 16 + (i - b * GV_TPB * 16);
            float v = 0.0f;
            if (b >= a.nb || row >= a.R)
                continue;
            for (int s = 0; s < a.ksplit; s++)
                v = __fadd_rn(v, __ldcg(a.part + ((int64_t)s * NB + b) * rp + row));
            if (a.bias)
                v = __fadd_rn(v, a.bias[row]);
            if (a.y_half)
                ((__half *)a.y)[b * a.R + row] = __float2half_rn(v);
            else
                ((float *)a.y)[b * a.R + row] = v;
        }
        if (threadIdx.x == 0)
            a.cnt[blockIdx.x] = 0u;
    }
}

/* ---- the launcher -------------------------------------------------------------------- */

typedef void (*gv_kernel)(gv_args);

template <int BITS>
static gv_kernel pick_nb(int nb)
{
    return nb <= 1 ? gemv_kernel<BITS, 1> : nb <= 2 ? gemv_kernel<BITS, 2>
                                          : nb <= 4 ? gemv_kernel<BITS, 4>
                                                    : gemv_kernel<BITS, 8>;
}

static gv_kernel pick(int bits, int nb)
{
    switch (bits) {
    case 2: return pick_nb<2>(nb);
    case 3: return pick_nb<3>(nb);
    case 4: return pick_nb<4>(nb);
    default: return pick_nb<8>(nb);
    }
}

static int nb_class(int64_t nb) { return nb <= 1 ? 1 : nb <= 2 ? 2 : nb <= 4 ? 4 : 8; }

unsigned *gptq_cu_ql_counters(cu_state *st, size_t n, int *status)
{
    const size_t old_bytes = st->slot_bytes[CU_SLOT_QL_CNT];
    unsigned *c = (unsigned *)gptq_cu_scratch(st, CU_SLOT_QL_CNT, n * sizeof(unsigned), status);
    cudaError_t e;

    /* A new buffer starts at 0; the kernels leave it at 0. New means grown: the pointer
     * alone does not tell, cudaMalloc may return the address just freed. */
    if (c && st->slot_bytes[CU_SLOT_QL_CNT] != old_bytes &&
        (e = cudaMemsetAsync(c, 0, st->slot_bytes[CU_SLOT_QL_CNT], st->stream)) != cudaSuccess) {
        *status = gptq_cu_fail(st->ctx, e, "cudaMemsetAsync (arrival counters)");
        return NULL;
    }
    return c;
}

int gptq_cu_ql_gemv(cu_state *st, const gptq_cu_ql *d, const void *x, int32_t x_dtype,
                    int64_t batch, void *y, int y_half)
{
    gptq_ctx *ctx = st->ctx;
    const int64_t gx = (d->ntiles + GV_TPB - 1) / GV_TPB;
    const size_t xsize = x_dtype == GPTQ_QLINEAR_DTYPE_F32 ? 4 : 2, ysize = y_half ? 2 : 4;
    int64_t sb = GV_MAX_COLS / d->kb, ksplit;
    int status = GPTQ_OK;
    gv_args a;

    /* Slices: halve them while the grid covers the SMs less than twice (down to 8 blocks
     * per slice: one step per lane). */
    while (sb > 8 && gx * ((d->nblk + sb - 1) / sb) < 2 * (int64_t)d->sms)
        sb /= 2;
    ksplit = (d->nblk + sb - 1) / sb;
    while (ksplit > 65535) { /* gridDim.y: a very wide layer takes longer slices */
        sb *= 2;
        ksplit = (d->nblk + sb - 1) / sb;
    }
    if (gx > 0x7FFFFFFF || sb * d->kb > GV_MAX_COLS)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_NOT_SUPPORTED,
                                  "CUDA backend: %lld x %lld is too large for the GEMV kernel",
                                  (long long)d->R, (long long)d->C);
    memset(&a, 0, sizeof a);
    a.codes = d->codes;
    a.scales = d->scales;
    a.zeros = d->zeros;
    a.blk_seg = d->blk_seg;
    a.colmap = d->colmap;
    a.bias = d->bias;
    a.R = d->R;
    a.C = d->C;
    a.ntiles = d->ntiles;
    a.nblk = d->nblk;
    a.nseg = d->nseg;
    a.x_dtype = x_dtype;
    a.y_half = y_half;
    a.sb = (int32_t)sb;
    a.ksplit = (int32_t)ksplit;
    if (ksplit > 1) {
        const size_t part = (size_t)ksplit * GV_MAX_NB * (size_t)(d->ntiles * 16) * sizeof(float);
        a.part = (float *)gptq_cu_scratch(st, CU_SLOT_QL_WS, part, &status);
        if (!a.part)
            return status;
        a.cnt = gptq_cu_ql_counters(st, (size_t)gx, &status);
        if (!a.cnt)
            return status;
    }
    for (int64_t b0 = 0; b0 < batch; b0 += GV_MAX_NB) {
        const int64_t nb = batch - b0 < GV_MAX_NB ? batch - b0 : GV_MAX_NB;
        const int nbc = nb_class(nb);
        const size_t shm = (size_t)nbc * (size_t)(sb * d->kb + sb) * sizeof(float);
        gv_kernel k = pick(d->bits, nbc);
        a.x = (const char *)x + (size_t)b0 * (size_t)d->C * xsize;
        a.y = (char *)y + (size_t)b0 * (size_t)d->R * ysize;
        a.nb = (int32_t)nb;
        k<<<dim3((unsigned)gx, (unsigned)ksplit), GV_THREADS, shm, st->stream>>>(a);
        CU_TRY(ctx, cudaGetLastError());
    }
    return GPTQ_OK;
}
