/*
 * Tensor-core dequantize-matmul for prepared 4- and 8-bit linears: y = x' Wq^T + bias
 * at batch 1..64, float16 activations, float32 accumulation (mma.sync m16n8k16). The
 * layout, the kernel and the eligibility rules: docs/cuda-mma-layout.md.
 *
 * The weights are repacked at prepare time so that one 16-byte load per lane and
 * k-slice gives a warp the B fragments of a 16 x 64 weight tile (Marlin's idea, FORMATS.md
 * section 6.4, with our own nibble order); codes become float16 in registers by OR-ing
 * them into the mantissa of 1024.0 (0x6400), then w = (v - (1024 + zero)) * scale: the
 * subtraction is exact, so w is fl16(scale * (code - zero)), one rounding.
 *
 * Block: 8 warps, 64 output rows, K cut into stages of 128 columns (one 16-column
 * k-slice per warp) streamed through a 4-stage cp.async ring; the warps' partial sums
 * are added in shared memory in a fixed tree, and split-K blocks reduce through the
 * workspace in split order by whichever block arrives last (deterministic).
 *
 * The inline PTX sits in small leaf functions; with GPTQ_CUDA_EMU defined they call the
 * host emulation of tests/cuda_emu instead, which runs this file's text on the CPU.
 */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qlinear_mma.h"

#define MMA_THREADS 256
#define MMA_WARPS 8
#define MMA_N 64       /* output rows per block */
#define MMA_KS 16      /* columns per k-slice (the mma's k) */
#define MMA_SLICES 8   /* k-slices per stage, one per warp */
#define MMA_STAGES 4   /* cp.async ring depth */
#define MMA_XPITCH 136 /* halves per x row in shared memory: 128 + 8 (no bank conflicts) */
#define MMA_MAX_MT 4   /* m16 tiles: batch <= 64 */
#define MMA_MAX_SPLITS 16

struct gptq_cu_mma {
    int32_t bits;
    int64_t R, cp;     /* out_features, padded columns */
    int32_t ks;        /* k-slices: cp / 16 */
    int32_t nst;       /* stages: ceil(ks / 8) */
    int32_t ntn;       /* n-tiles: R / 64 */
    int32_t splits;    /* split-K factor of the grid */
    int32_t max_mt;    /* m16 tiles per launch whose shared memory this device allows */
    int64_t nseg;
    uint4 *codes;      /* [ntn][ks][32 lanes][bits words] */
    __half *scales;    /* [nseg][R], rows permuted within each 64 */
    __half *zb;        /* [nseg][R] 1024 + zero, same order */
    int32_t *slice_seg; /* [ks] segment of each k-slice */
};

/* ---- leaf functions: the PTX, or the emulation's stand-ins ----------------------- */

__device__ __forceinline__ uint8_t *mma_smem()
{
#ifdef GPTQ_CUDA_EMU
    return (uint8_t *)gptq_emu_dynamic_smem();
#else
    extern __shared__ uint4 mma_smem_[];
    return (uint8_t *)mma_smem_;
#endif
}

/* 16 bytes global -> shared, asynchronous, bypassing L1 (weights are read once). */
__device__ __forceinline__ void cp_async16(void *dst, const void *src)
{
#ifdef GPTQ_CUDA_EMU
    gptq_emu_cp_async_cg_16(dst, src);
#else
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src));
#endif
}

__device__ __forceinline__ void cp_async_commit()
{
#ifdef GPTQ_CUDA_EMU
    gptq_emu_cp_async_commit_group();
#else
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}

/* Wait until at most n of this thread's committed groups are still in flight. */
template <int n> __device__ __forceinline__ void cp_async_wait()
{
#ifdef GPTQ_CUDA_EMU
    gptq_emu_cp_async_wait_group(n);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(n));
#endif
}

/* d = a b + d, A 16x16 row-major f16, B 16x8 column-major f16, C/D 16x8 f32 (PTX ISA,
 * "Matrix Fragments for mma.m16n8k16 with floating point type"). */
__device__ __forceinline__ void mma_16816(float d[4], const uint32_t a[4], const uint32_t b[2])
{
#ifdef GPTQ_CUDA_EMU
    gptq_emu_mma_m16n8k16_row_col_f32_f16_f16_f32(d, a, b, d);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

/* ---- the kernel ---------------------------------------------------------------- */

__device__ __forceinline__ __half2 as_h2(uint32_t u)
{
    __half2 h;
    memcpy(&h, &u, sizeof h);
    return h;
}

__device__ __forceinline__ uint32_t as_u32(__half2 h)
{
    uint32_t u;
    memcpy(&u, &h, sizeof u);
    return u;
}

/* fl16(scale * (v - zb)) for a pair of codes already in 1024.0's mantissa. */
__device__ __forceinline__ uint32_t dq(uint32_t v, __half2 zb, __half2 s)
{
    return as_u32(__hmul2(__hsub2(as_h2(v), zb), s));
}

template <int BITS> struct mma_shape {
    static constexpr int WPL = BITS == 4 ? 4 : 8;              /* words per lane per slice */
    static constexpr int W_STAGE = MMA_SLICES * 32 * WPL;      /* words per stage */
};

/* Shared memory: MMA_STAGES x (weights, x tile), reused at the end for the warp tree. */
static constexpr size_t mma_smem_bytes(int bits, int mt)
{
    return (size_t)MMA_STAGES * ((size_t)MMA_SLICES * 32 * (bits == 4 ? 4 : 8) * 4 +
                                 (size_t)mt * 16 * MMA_XPITCH * 2);
}
static_assert(mma_smem_bytes(4, 1) >= 4 * 1 * 8 * 32 * 16, "warp tree must fit");
static_assert(mma_smem_bytes(4, 4) >= 4 * 4 * 8 * 32 * 16, "warp tree must fit");

/* Grid (R / 64, splits). Block (nt, sp) computes rows [64 nt, 64 nt + 64) over the
 * stages [sp nst / splits, (sp + 1) nst / splits). */
template <int BITS, int MT>
__global__ void __launch_bounds__(MMA_THREADS)
mma_kernel(const uint4 *__restrict__ codes, const __half *__restrict__ scales,
           const __half *__restrict__ zbs, const int32_t *__restrict__ slice_seg,
           const __half *__restrict__ x, int64_t ldx, int batch, int64_t R, int ks_total,
           int nst, float *__restrict__ ws, unsigned *counters, void *y, int y_half,
           const float *__restrict__ bias)
{
    constexpr int WPL = mma_shape<BITS>::WPL;
    constexpr int W_STAGE = mma_shape<BITS>::W_STAGE;
    constexpr int X_STAGE = MT * 16 * MMA_XPITCH;
    uint8_t *smem = mma_smem();
    uint32_t *sw = (uint32_t *)smem;
    __half *sx = (__half *)(smem + (size_t)MMA_STAGES * W_STAGE * 4);
    const int tid = (int)threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, q = lane % 4;
    const int nt = (int)blockIdx.x, sp = (int)blockIdx.y, splits = (int)gridDim.y;
    const int st0 = (int)((int64_t)sp * nst / splits);
    const int nstages = (int)((int64_t)(sp + 1) * nst / splits) - st0;
    const int nrow = MT * 16;

    /* Rows past the batch stay zero in every stage (they are never loaded). */
    for (int i = tid; i < MMA_STAGES * (nrow - batch) * (MMA_XPITCH / 8); i += MMA_THREADS) {
        const int per = (nrow - batch) * (MMA_XPITCH / 8);
        const int st = i / per, r = batch + i % per / (MMA_XPITCH / 8), c = i % (MMA_XPITCH / 8);
        *(uint4 *)(sx + st * X_STAGE + r * MMA_XPITCH + c * 8) = make_uint4(0, 0, 0, 0);
    }

    auto load_stage = [&](int st, int buf) {
        const int ks0 = st * MMA_SLICES;
        const int nsl = ks_total - ks0 < MMA_SLICES ? ks_total - ks0 : MMA_SLICES;
        const uint4 *src = codes + ((int64_t)nt * ks_total + ks0) * 32 * WPL / 4;
        uint4 *dst = (uint4 *)(sw + buf * W_STAGE);
        for (int i = tid; i < nsl * 8 * WPL; i += MMA_THREADS)
            cp_async16(dst + i, src + i);
        const int chunks = nsl * 2; /* 16-byte chunks per x row */
        for (int i = tid; i < batch * chunks; i += MMA_THREADS) {
            const int r = i / chunks, c = i % chunks;
            cp_async16(sx + buf * X_STAGE + r * MMA_XPITCH + c * 8,
                       x + r * ldx + (int64_t)ks0 * MMA_KS + c * 8);
        }
    };

    float acc[MT][8][4];
    #pragma unroll
    for (int m = 0; m < MT; m++)
        #pragma unroll
        for (int j = 0; j < 8; j++)
            #pragma unroll
            for (int e = 0; e < 4; e++)
                acc[m][j][e] = 0.0f;

    for (int i = 0; i < MMA_STAGES - 1; i++) {
        if (i < nstages)
            load_stage(st0 + i, i);
        cp_async_commit();
    }
    for (int i = 0; i < nstages; i++) {
        cp_async_wait<MMA_STAGES - 2>(); /* stage i has landed (for this thread) */
        __syncthreads();                 /* ... for all; buffer (i - 1) % STAGES is free */
        if (i + MMA_STAGES - 1 < nstages)
            load_stage(st0 + i + MMA_STAGES - 1, (i + MMA_STAGES - 1) % MMA_STAGES);
        cp_async_commit();

        const int ks = (st0 + i) * MMA_SLICES + warp;
        if (ks >= ks_total)
            continue;
        const int buf = i % MMA_STAGES;
        const int64_t so = (int64_t)slice_seg[ks] * R + (int64_t)nt * MMA_N + g * 8;
        union {
            uint4 v;
            __half2 h[4];
        } s8, z8;
        s8.v = __ldg((const uint4 *)(scales + so));
        z8.v = __ldg((const uint4 *)(zbs + so));
        uint32_t wq[WPL];
        #pragma unroll
        for (int v = 0; v < WPL / 4; v++) {
            const uint4 t = *(const uint4 *)(sw + buf * W_STAGE + (warp * 32 + lane) * WPL + 4 * v);
            wq[4 * v] = t.x;
            wq[4 * v + 1] = t.y;
            wq[4 * v + 2] = t.z;
            wq[4 * v + 3] = t.w;
        }
        /* B fragments of the 8 n8-tiles: reg 0 = k (2q, 2q+1), reg 1 = k (2q+8, 2q+9),
         * column n = 8 j + g. */
        uint32_t bf[8][2];
        #pragma unroll
        for (int j = 0; j < 8; j++) {
            const __half2 s = j % 2 ? __high2half2(s8.h[j / 2]) : __low2half2(s8.h[j / 2]);
            const __half2 z = j % 2 ? __high2half2(z8.h[j / 2]) : __low2half2(z8.h[j / 2]);
            if (BITS == 4) {
                /* word j/2 holds tiles 2w, 2w+1: nibble p + 4 is p's k + 1. */
                const uint32_t w = wq[j / 2] >> (8 * (j % 2));
                bf[j][0] = dq((w & 0x000f000fu) | 0x64006400u, z, s);
                bf[j][1] = dq(((w >> 4) & 0x000f000fu) | 0x64006400u, z, s);
            } else {
                bf[j][0] = dq(__byte_perm(wq[j], 0x64646464u, 0x4140), z, s);
                bf[j][1] = dq(__byte_perm(wq[j], 0x64646464u, 0x4342), z, s);
            }
        }
        const __half *xs = sx + buf * X_STAGE + warp * MMA_KS + 2 * q;
        #pragma unroll
        for (int m = 0; m < MT; m++) {
            const __half *r0 = xs + (m * 16 + g) * MMA_XPITCH, *r1 = r0 + 8 * MMA_XPITCH;
            uint32_t a[4];
            a[0] = *(const uint32_t *)r0;
            a[1] = *(const uint32_t *)r1;
            a[2] = *(const uint32_t *)(r0 + 8);
            a[3] = *(const uint32_t *)(r1 + 8);
            #pragma unroll
            for (int j = 0; j < 8; j++)
                mma_16816(acc[m][j], a, bf[j]);
        }
    }
    cp_async_wait<0>();
    __syncthreads();

    /* Warps 4..7 into 0..3, 2..3 into 0..1, 1 into 0: a fixed order. */
    float4 *red = (float4 *)smem;
    for (int h = MMA_WARPS / 2; h >= 1; h /= 2) {
        if (warp >= h && warp < 2 * h)
            #pragma unroll
            for (int m = 0; m < MT; m++)
                #pragma unroll
                for (int j = 0; j < 8; j++)
                    red[(((warp - h) * MT + m) * 8 + j) * 32 + lane] =
                        make_float4(acc[m][j][0], acc[m][j][1], acc[m][j][2], acc[m][j][3]);
        __syncthreads();
        if (warp < h)
            #pragma unroll
            for (int m = 0; m < MT; m++)
                #pragma unroll
                for (int j = 0; j < 8; j++) {
                    const float4 t = red[((warp * MT + m) * 8 + j) * 32 + lane];
                    acc[m][j][0] += t.x;
                    acc[m][j][1] += t.y;
                    acc[m][j][2] += t.z;
                    acc[m][j][3] += t.w;
                }
        __syncthreads();
    }

    const int64_t n0 = (int64_t)nt * MMA_N;
    if (warp == 0)
        #pragma unroll
        for (int m = 0; m < MT; m++)
            #pragma unroll
            for (int j = 0; j < 8; j++)
                #pragma unroll
                for (int hh = 0; hh < 2; hh++) {
                    /* D fragment: c0, c1 = row g, columns 2q, 2q+1; c2, c3 = row g + 8. */
                    const int row = m * 16 + g + 8 * hh, col = 8 * j + 2 * q;
                    float v0 = acc[m][j][2 * hh], v1 = acc[m][j][2 * hh + 1];
                    if (row >= batch)
                        continue;
                    if (splits > 1) {
                        float *p = ws + (((int64_t)sp * gridDim.x + nt) * batch + row) * MMA_N + col;
                        *(float2 *)p = make_float2(v0, v1);
                        continue;
                    }
                    if (bias) {
                        v0 += bias[n0 + col];
                        v1 += bias[n0 + col + 1];
                    }
                    if (y_half)
                        *(__half2 *)((__half *)y + row * R + n0 + col) = __floats2half2_rn(v0, v1);
                    else
                        *(float2 *)((float *)y + row * R + n0 + col) = make_float2(v0, v1);
                }
    if (splits == 1)
        return;

    /* Split-K: the last block of this n-tile to arrive adds the partials in split order.
     * The flag lives in the dynamic shared memory (free again after the warp tree), so
     * that the kernel has no static shared memory to subtract from the device's limit. */
    int *last = (int *)smem;
    if (warp == 0)
        __threadfence();
    __syncthreads();
    if (tid == 0)
        *last = atomicAdd(counters + nt, 1u) == (unsigned)splits - 1;
    __syncthreads();
    if (!*last)
        return;
    __threadfence();
    for (int e = tid; e < batch * MMA_N; e += MMA_THREADS) {
        const int row = e / MMA_N, col = e % MMA_N;
        float v = 0.0f;
        for (int s = 0; s < splits; s++)
            v += __ldcg(ws + (((int64_t)s * gridDim.x + nt) * batch + row) * MMA_N + col);
        if (bias)
            v += bias[n0 + col];
        if (y_half)
            ((__half *)y)[row * R + n0 + col] = __float2half_rn(v);
        else
            ((float *)y)[row * R + n0 + col] = v;
    }
    if (tid == 0)
        counters[nt] = 0;
}

/* ---- host side ----------------------------------------------------------------- */

typedef void (*mma_kernel_fn)(const uint4 *, const __half *, const __half *, const int32_t *,
                              const __half *, int64_t, int, int64_t, int, int, float *,
                              unsigned *, void *, int, const float *);

static mma_kernel_fn kernel_for(int bits, int mt)
{
    static const mma_kernel_fn k4[MMA_MAX_MT] = {mma_kernel<4, 1>, mma_kernel<4, 2>,
                                                 mma_kernel<4, 3>, mma_kernel<4, 4>};
    static const mma_kernel_fn k8[MMA_MAX_MT] = {mma_kernel<8, 1>, mma_kernel<8, 2>,
                                                 mma_kernel<8, 3>, mma_kernel<8, 4>};
    return bits == 4 ? k4[mt - 1] : k8[mt - 1];
}

static float half_bits_to_float(uint16_t h)
{
    const uint32_t e = h >> 10 & 31, f = h & 1023;
    float v = e == 0 ? (float)f * (1.0f / 16777216.0f) : (float)(1024 + f) * ldexpf(1.0f, (int)e - 25);
    return h & 0x8000 ? -v : v;
}

const char *gptq_cu_mma_unsupported(const gptq_qlinear *ql)
{
    if (!ql)
        return "MMA kernel: no layer";
    if (ql->bits != 4 && ql->bits != 8)
        return "MMA kernel: only 4- and 8-bit weights";
    if (ql->out_features % MMA_N != 0)
        return "MMA kernel: out_features must be a multiple of 64";
    if (ql->cp / MMA_KS > INT_MAX / 2 || ql->out_features / MMA_N > INT_MAX)
        return "MMA kernel: layer too large";
    for (int64_t s = 0; s < ql->nseg; s++)
        if ((ql->seg_blk[s + 1] - ql->seg_blk[s]) * ql->kb % MMA_KS != 0)
            return "MMA kernel: every group's run of columns (after act-order reordering and "
                   "padding) must be a multiple of 16 columns";
    /* The kernel forms fl16(scale * (code - zero)): refuse what would overflow. */
    const int32_t maxq = (1 << ql->bits) - 1;
    for (int64_t i = 0; i < ql->ntiles * ql->nseg * GPTQ__QL_ROWS; i++) {
        const float s = fabsf(half_bits_to_float(ql->scales[i]));
        const int32_t z = ql->zeros[i], d = z > maxq - z ? z : maxq - z;
        if ((ql->scales[i] & 0x7c00) == 0x7c00 || s * (float)d > 65504.0f)
            return "MMA kernel: a scale times (code - zero) overflows float16";
    }
    return NULL;
}

/* Where code (n, kk) of a 64 x 16 tile goes: word index within the tile (lane-major)
 * and bit shift. docs/cuda-mma-layout.md, "Codes". */
static void code_place(int bits, int n, int kk, int *word, int *shift)
{
    const int j = n / 8, g = n % 8, q = kk % 8 / 2, odd = kk % 2, hi = kk / 8;
    const int lane = 4 * g + q;
    if (bits == 4) {
        *word = lane * 4 + j / 2;
        *shift = 4 * (2 * (j % 2) + hi + 4 * odd);
    } else {
        *word = lane * 8 + j;
        *shift = 8 * (2 * hi + odd);
    }
}

void gptq_cu_mma_release(gptq_cu_mma *m)
{
    if (!m)
        return;
    cudaFree(m->codes);
    cudaFree(m->scales);
    cudaFree(m->zb);
    cudaFree(m->slice_seg);
    free(m);
}

size_t gptq_cu_mma_workspace(const gptq_cu_mma *m, int64_t batch)
{
    if (!m || m->splits <= 1 || batch < 1)
        return 0;
    return (size_t)m->splits * (size_t)batch * (size_t)m->R * sizeof(float);
}

#define MMA_TRY(call)                                           \
    do {                                                        \
        cudaError_t e_ = (call);                                \
        if (e_ != cudaSuccess) {                                \
            status = gptq_cu_fail(ctx, e_, #call);              \
            goto done;                                          \
        }                                                       \
    } while (0)

int gptq_cu_mma_prepare(gptq_ctx *ctx, cudaStream_t s, const gptq_qlinear *ql, gptq_cu_mma **out)
{
    const char *why = gptq_cu_mma_unsupported(ql);
    gptq_cu_mma *m = NULL;
    uint32_t *hc = NULL;
    uint16_t *hs = NULL, *hz = NULL;
    int32_t *hseg = NULL;
    int status = GPTQ_OK, dev = 0, nsm = 0, bps = 0, optin = 0;
    size_t ncw, nsc;

    if (!out)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_INVALID_ARGUMENT, "CUDA backend: MMA prepare: NULL");
    *out = NULL;
    if (why)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_NOT_SUPPORTED, "CUDA backend: %s", why);
    m = (gptq_cu_mma *)calloc(1, sizeof *m);
    if (!m)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_OUT_OF_MEMORY, "CUDA backend: MMA prepare: no memory");
    m->bits = ql->bits;
    m->R = ql->out_features;
    m->cp = ql->cp;
    m->ks = (int32_t)(ql->cp / MMA_KS);
    m->nst = (m->ks + MMA_SLICES - 1) / MMA_SLICES;
    m->ntn = (int32_t)(m->R / MMA_N);
    m->nseg = ql->nseg;

    /* Codes: decode the host blocks (kb columns x 16 rows, word l = row l) and place
     * every code at its fragment position. */
    ncw = (size_t)m->R * (size_t)m->cp * (size_t)m->bits / 32;
    nsc = (size_t)m->nseg * (size_t)m->R;
    hc = (uint32_t *)calloc(ncw, sizeof *hc);
    hs = (uint16_t *)malloc(nsc * sizeof *hs);
    hz = (uint16_t *)malloc(nsc * sizeof *hz);
    hseg = (int32_t *)malloc((size_t)(m->ks > 0 ? m->ks : 1) * sizeof *hseg);
    if (!hc || !hs || !hz || !hseg) {
        status = gptq_cu_host->fail(ctx, GPTQ_ERR_OUT_OF_MEMORY, "CUDA backend: MMA prepare: no memory");
        goto done;
    }
    {
        const int wpl = m->bits == 4 ? 4 : 8, mask = (1 << m->bits) - 1;
        for (int64_t t = 0; t < ql->ntiles; t++) {
            const uint32_t *tc = gptq__ql_tile_codes(ql, t);
            for (int64_t k = 0; k < m->cp; k++) {
                const uint32_t *blk = tc + (k / ql->kb) * GPTQ__QL_ROWS;
                const int sh = (int)(k % ql->kb) * m->bits;
                for (int l = 0; l < GPTQ__QL_ROWS; l++) {
                    const int64_t r = t * GPTQ__QL_ROWS + l;
                    const uint32_t code = blk[l] >> sh & (uint32_t)mask;
                    int word, shift;
                    code_place(m->bits, (int)(r % MMA_N), (int)(k % MMA_KS), &word, &shift);
                    hc[((r / MMA_N) * m->ks + k / MMA_KS) * 32 * wpl + word] |= code << shift;
                }
            }
        }
        for (int64_t s2 = 0; s2 < m->nseg; s2++) {
            for (int64_t r = 0; r < m->R; r++) {
                const int64_t t = r / GPTQ__QL_ROWS, l = r % GPTQ__QL_ROWS;
                const int64_t n = r % MMA_N, pos = s2 * m->R + r - n + n % 8 * 8 + n / 8;
                hs[pos] = gptq__ql_seg_scales(ql, t, s2)[l];
                hz[pos] = (uint16_t)(0x6400 | gptq__ql_seg_zeros(ql, t, s2)[l]);
            }
            for (int64_t b = ql->seg_blk[s2]; b < ql->seg_blk[s2 + 1]; b += MMA_KS / ql->kb)
                hseg[b * ql->kb / MMA_KS] = (int32_t)s2;
        }
    }

    MMA_TRY(cudaGetDevice(&dev));
    MMA_TRY(cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev));
    MMA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    /* The m16 tiles a launch may take: 8 bits at 4 tiles needs 100 KiB, more than the
     * 99 KiB of sm_86/sm_89, where forward then runs 64 rows as 48 + 16. Before the
     * occupancy query: past 48 KiB (8 bits, any batch) it counts 0 blocks for a kernel
     * not yet allowed that much shared memory. */
    for (int mt = 1; mt <= MMA_MAX_MT && mma_smem_bytes(m->bits, mt) <= (size_t)optin; mt++) {
        if (mma_smem_bytes(m->bits, mt) > 48 * 1024)
            MMA_TRY(cudaFuncSetAttribute(kernel_for(m->bits, mt),
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)mma_smem_bytes(m->bits, mt)));
        m->max_mt = mt;
    }
    if (m->max_mt == 0) {
        status = gptq_cu_host->fail(ctx, GPTQ_ERR_NOT_SUPPORTED,
                                    "CUDA backend: MMA kernel: the device allows %d bytes of "
                                    "shared memory per block, the kernel needs %zu",
                                    optin, mma_smem_bytes(m->bits, 1));
        goto done;
    }
    MMA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&bps, kernel_for(m->bits, 1), MMA_THREADS,
                                                          mma_smem_bytes(m->bits, 1)));
    {
        /* One wave of resident blocks (no tail), each with at least two stages of K. */
        int sp = nsm * (bps > 0 ? bps : 1) / m->ntn;
        if (sp > m->nst / 2)
            sp = m->nst / 2;
        if (sp > MMA_MAX_SPLITS)
            sp = MMA_MAX_SPLITS;
        m->splits = sp < 1 ? 1 : sp;
    }
    MMA_TRY(cudaMalloc((void **)&m->codes, ncw * sizeof *hc));
    MMA_TRY(cudaMalloc((void **)&m->scales, nsc * sizeof *hs));
    MMA_TRY(cudaMalloc((void **)&m->zb, nsc * sizeof *hz));
    MMA_TRY(cudaMalloc((void **)&m->slice_seg, (size_t)m->ks * sizeof *hseg));
    MMA_TRY(cudaMemcpyAsync(m->codes, hc, ncw * sizeof *hc, cudaMemcpyHostToDevice, s));
    MMA_TRY(cudaMemcpyAsync(m->scales, hs, nsc * sizeof *hs, cudaMemcpyHostToDevice, s));
    MMA_TRY(cudaMemcpyAsync(m->zb, hz, nsc * sizeof *hz, cudaMemcpyHostToDevice, s));
    MMA_TRY(cudaMemcpyAsync(m->slice_seg, hseg, (size_t)m->ks * sizeof *hseg,
                            cudaMemcpyHostToDevice, s));
    MMA_TRY(cudaStreamSynchronize(s));
done:
    free(hc);
    free(hs);
    free(hz);
    free(hseg);
    if (status != GPTQ_OK)
        gptq_cu_mma_release(m);
    else
        *out = m;
    return status;
}

size_t gptq_cu_mma_counters(const gptq_cu_mma *m)
{
    return m && m->splits > 1 ? (size_t)m->ntn : 0;
}

int gptq_cu_mma_forward(gptq_ctx *ctx, cudaStream_t s, const gptq_cu_mma *m, const __half *xp,
                        int64_t ldx, int64_t batch, void *y, int y_half, const float *bias,
                        void *ws, unsigned *counters)
{
    if (!m || !xp || !y || batch < 1 || batch > 16 * MMA_MAX_MT)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                                  "CUDA backend: MMA forward: NULL argument or batch outside 1..64");
    if (ldx < m->cp || ldx % 8 != 0 || (uintptr_t)xp % 16 != 0 || (uintptr_t)y % 8 != 0)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                                  "CUDA backend: MMA forward: x must be 16-byte aligned with a "
                                  "row stride that is a multiple of 8 and >= %lld, y 8-byte aligned",
                                  (long long)m->cp);
    if (m->splits > 1 && (!ws || !counters))
        return gptq_cu_host->fail(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                                  "CUDA backend: MMA forward: workspace or counters missing");
    /* Launches of at most max_mt m16 tiles, in order on s: each leaves the split-K
     * counters at 0 and is done with ws before the next starts. */
    const dim3 grid((unsigned)m->ntn, (unsigned)m->splits), block(MMA_THREADS);
    const size_t ysize = y_half ? sizeof(__half) : sizeof(float);
    for (int64_t b0 = 0; b0 < batch; b0 += 16 * m->max_mt) {
        const int nb = (int)(batch - b0 < 16 * m->max_mt ? batch - b0 : 16 * m->max_mt);
        const int mt = (nb + 15) / 16;
        const mma_kernel_fn kern = kernel_for(m->bits, mt);
        void *yb = (char *)y + (size_t)b0 * (size_t)m->R * ysize;
        kern<<<grid, block, mma_smem_bytes(m->bits, mt), s>>>(m->codes, m->scales, m->zb, m->slice_seg, xp + b0 * ldx, ldx, nb, m->R, m->ks, m->nst, (float *)ws, counters, yb, y_half, bias);
        CU_TRY(ctx, cudaGetLastError());
    }
    return GPTQ_OK;
}
