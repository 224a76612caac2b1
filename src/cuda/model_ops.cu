/*
 * The model's layer operations on the GPU, for the GPTQ pipeline with its activations
 * resident on the device (backend.h: device_forward; src/model/forward_dev.c): RMSNorm,
 * SiLU * up, residual add, scaling, bias, RoPE and causal grouped-query attention.
 *
 * Every operand is device memory (buf_alloc buffers: the core passes nothing else to
 * these slots); the work is queued on the context's stream and not waited for (the next
 * download or synchronize does). The arithmetic is the host's (src/model/forward.c,
 * attention.c) written with _rn intrinsics so that no product is fused: the same
 * float32 operations in the same order, except that expf is CUDA's (within 2 ulp, the
 * host's within ~1), and sums the host makes in double in order (RMSNorm's mean of
 * squares, the softmax denominator) are tree reductions in double here.
 *
 * Attention runs as three kernels over chunks of (sequence, head) pairs whose scores fit
 * ATTN_SCRATCH_BYTES: scores S = Q K^T / sqrt(d) for the tiles on or below the diagonal,
 * each a sum over channels in order; the softmax per row with the maximum subtracted,
 * zeroing the masked scores up to the end of the row's tile; then O = P V, each output a
 * sum over keys in order. These are the host's sums term for term (its extra terms are
 * the same exact zeros), so only exp and the denominator's summation order differ.
 */
#include <math.h>
#include <stdint.h>

#include "cuda_internal.h"

/* Threads per block of the element-wise kernels, and their grid cap (grid-stride loops). */
#define EW_THREADS 256
#define EW_MAX_BLOCKS 4096
/* Attention: output tile (TILE x TILE, a 16 x 16 block, 4 x 4 per thread) and the depth
 * of one shared-memory step. */
#define TILE 64
#define TK 16
/* Scores of one launch: chunks of (sequence, head) pairs up to this size (a build may
 * set it: the emulated test makes it small so that the chunk loop runs). */
#ifndef ATTN_SCRATCH_BYTES
#define ATTN_SCRATCH_BYTES ((size_t)1 << 30)
#endif

static unsigned ew_blocks(int64_t count)
{
    int64_t b = (count + EW_THREADS - 1) / EW_THREADS;
    return (unsigned)(b < 1 ? 1 : b > EW_MAX_BLOCKS ? EW_MAX_BLOCKS : b);
}

/* ---- element-wise ----------------------------------------------------------------- */

__global__ void add_kernel(float *y, const float *x, int64_t count)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __fadd_rn(y[i], x[i]);
}

__global__ void scale_kernel(float *y, const float *x, float s, int64_t count)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __fmul_rn(s, x[i]);
}

__global__ void bias_kernel(float *y, const float *b, int64_t width, int64_t count)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __fadd_rn(y[i], b[i % width]);
}

/* silu(g) * u = g / (1 + exp(-g)) * u, as the host's silu16. */
__global__ void silu_mul_kernel(float *g, const float *u, int64_t count)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float x = g[i];
        g[i] = __fmul_rn(__fdiv_rn(x, __fadd_rn(1.0f, expf(-x))), u[i]);
    }
}

/* One block per row: the mean of squares in double, rounded once; inv = 1 / sqrt(var +
 * eps) in float32; y = w * (x * inv). y may be x (every read precedes the barrier). */
__global__ void rms_norm_kernel(const float *x, const float *w, int64_t width, float eps,
                                float *y)
{
    __shared__ double part[EW_THREADS / 32];
    __shared__ float inv_s;
    const float *xr = x + blockIdx.x * width;
    float *yr = y + blockIdx.x * width;
    double ss = 0.0;

    for (int64_t j = threadIdx.x; j < width; j += blockDim.x)
        ss += (double)xr[j] * (double)xr[j];
    for (int o = 16; o > 0; o >>= 1)
        ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0)
        part[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (unsigned k = 0; k < blockDim.x / 32; k++)
            t += part[k];
        const float var = (float)(t / (double)width);
        inv_s = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(var, eps)));
    }
    __syncthreads();
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x)
        yr[j] = __fmul_rn(w[j], __fmul_rn(xr[j], inv_s));
}

/* One thread per (row, head, pair j < half): (a, b) = (x[j], x[j + half]) becomes
 * (a cos - b sin, b cos + a sin), each product rounded, as the host's rope_rows. */
__global__ void rope_kernel(float *x, const float *cs, const float *sn, int64_t n,
                            int64_t seqlen, int64_t heads, int64_t head_dim)
{
    const int64_t half = head_dim / 2, count = n * heads * half;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t j = i % half, rh = i / half, r = rh / heads;
        const int64_t t = (r % seqlen) * half + j;
        float *p = x + rh * head_dim;
        const float a = p[j], b = p[j + half], c = cs[t], s = sn[t];
        p[j] = __fadd_rn(__fmul_rn(a, c), __fmul_rn(-b, s));
        p[j + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
    }
}

/* ---- attention ---------------------------------------------------------------------- */

/* Where pair p (of the chunk starting at pair0) reads and writes: sequence s, head h,
 * kv head h / (heads / kv_heads). */
struct attn_geom {
    const float *q, *k, *v;
    float *out;
    float *s;              /* scores of the chunk [pairs][L][L] */
    int64_t L, heads, kv_heads, d, pair0;
    float sqrt_d;
};

__device__ static void pair_at(const attn_geom &g, int64_t p, const float **q, const float **k,
                               const float **v, float **o)
{
    const int64_t pair = g.pair0 + p, s = pair / g.heads, h = pair % g.heads;
    const int64_t kvh = h / (g.heads / g.kv_heads), qw = g.heads * g.d, kw = g.kv_heads * g.d;
    *q = g.q + s * g.L * qw + h * g.d;
    *k = g.k + s * g.L * kw + kvh * g.d;
    *v = g.v + s * g.L * kw + kvh * g.d;
    *o = g.out + s * g.L * qw + h * g.d;
}

/* C[i][j] = sum over t in order of A[i][t] * B(t, j) for a TILE x TILE tile, t < kn;
 * B(t, j) is b[j * ldb + t] (TRANS_B: the keys for the scores) or b[t * ldb + j] (the
 * values). Out-of-range elements load as 0. Each thread keeps 4 x 4 sums, rows ty + 16 a
 * and columns tx + 16 c of the tile. */
template <bool TRANS_B>
__device__ static void tile_product(const float *a, int64_t lda, int64_t m, const float *b,
                                    int64_t ldb, int64_t n, int64_t kn, int64_t i0, int64_t j0,
                                    float acc[4][4])
{
    __shared__ float as[TK][TILE + 1];
    __shared__ float bs[TK][TILE + 1];
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 16 + tx;

    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            acc[r][c] = 0.0f;
    for (int64_t t0 = 0; t0 < kn; t0 += TK) {
        /* 256 threads load TILE x TK = 1024 elements of each operand. */
        for (int e = tid; e < TILE * TK; e += 256) {
            const int row = e / TK, t = e % TK;
            const int64_t gi = i0 + row, gt = t0 + t;
            as[t][row] = gi < m && gt < kn ? a[gi * lda + gt] : 0.0f;
            if (TRANS_B) {
                const int64_t gj = j0 + row;
                bs[t][row] = gj < n && gt < kn ? b[gj * ldb + gt] : 0.0f;
            }
        }
        if (!TRANS_B) {
            for (int e = tid; e < TILE * TK; e += 256) {
                const int t = e / TILE, col = e % TILE;
                const int64_t gt = t0 + t, gj = j0 + col;
                bs[t][col] = gt < kn && gj < n ? b[gt * ldb + gj] : 0.0f;
            }
        }
        __syncthreads();
        /* Past kn both operands were loaded as 0: those terms add exact zeros, and the
         * fixed trip count lets the loop unroll. */
#pragma unroll
        for (int t = 0; t < TK; t++) {
            float av[4], bv[4];
            for (int r = 0; r < 4; r++)
                av[r] = as[t][ty + 16 * r];
            for (int c = 0; c < 4; c++)
                bv[c] = bs[t][tx + 16 * c];
            for (int r = 0; r < 4; r++)
                for (int c = 0; c < 4; c++)
                    acc[r][c] = __fadd_rn(acc[r][c], __fmul_rn(av[r], bv[c]));
        }
        __syncthreads();
    }
}

/* Scores of the tiles on or below the diagonal: S[i][j] = (q_i . k_j) / sqrt(d).
 * grid (L / TILE key tiles, L / TILE query tiles, pairs). */
__global__ void attn_scores_kernel(attn_geom g)
{
    const int64_t j0 = blockIdx.x * (int64_t)TILE, i0 = blockIdx.y * (int64_t)TILE;
    const float *q, *k, *v;
    float *o, *s = g.s + blockIdx.z * g.L * g.L;
    float acc[4][4];

    if (j0 > i0) /* wholly above the diagonal: masked */
        return;
    pair_at(g, blockIdx.z, &q, &k, &v, &o);
    tile_product<true>(q, g.heads * g.d, g.L, k, g.kv_heads * g.d, g.L, g.d, i0, j0, acc);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) {
            const int64_t i = i0 + threadIdx.y + 16 * r, j = j0 + threadIdx.x + 16 * c;
            if (i < g.L && j < g.L)
                s[i * g.L + j] = __fdiv_rn(acc[r][c], g.sqrt_d);
        }
}

/* One block per (row i, pair): p_j = exp(s_j - max) / sum for j <= i, the sum in double,
 * 1 / sum rounded once to float32; 0 for i < j < the end of i's tile (what the values
 * kernel reads). grid (L, pairs). */
__global__ void attn_softmax_kernel(attn_geom g)
{
    __shared__ float red_f[EW_THREADS / 32];
    __shared__ double red_d[EW_THREADS / 32];
    __shared__ float mx_s, inv_s;
    const int64_t i = blockIdx.x, end = (i / TILE + 1) * TILE < g.L ? (i / TILE + 1) * TILE : g.L;
    float *row = g.s + blockIdx.y * g.L * g.L + i * g.L;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float mx = -INFINITY;
    double sum = 0.0;

    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x)
        mx = fmaxf(mx, row[j]);
    for (int o = 16; o > 0; o >>= 1)
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if (lane == 0)
        red_f[warp] = mx;
    __syncthreads();
    if (threadIdx.x == 0) {
        float m = red_f[0];
        for (unsigned w = 1; w < blockDim.x / 32; w++)
            m = fmaxf(m, red_f[w]);
        mx_s = m;
    }
    __syncthreads();
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) {
        const float e = expf(__fsub_rn(row[j], mx_s));
        row[j] = e;
        sum += (double)e;
    }
    for (int o = 16; o > 0; o >>= 1)
        sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0)
        red_d[warp] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (unsigned w = 0; w < blockDim.x / 32; w++)
            t += red_d[w];
        inv_s = (float)(1.0 / t);
    }
    __syncthreads();
    for (int64_t j = threadIdx.x; j < end; j += blockDim.x)
        row[j] = j <= i ? __fmul_rn(row[j], inv_s) : 0.0f;
}

/* O[i][c] = sum over keys j of P[i][j] V[j][c], j up to the end of i's tile.
 * grid (d / TILE channel tiles, L / TILE query tiles, pairs). */
__global__ void attn_values_kernel(attn_geom g)
{
    const int64_t c0 = blockIdx.x * (int64_t)TILE, i0 = blockIdx.y * (int64_t)TILE;
    const int64_t kn = i0 + TILE < g.L ? i0 + TILE : g.L;
    const float *q, *k, *v;
    float *o;
    float acc[4][4];

    pair_at(g, blockIdx.z, &q, &k, &v, &o);
    tile_product<false>(g.s + blockIdx.z * g.L * g.L, g.L, g.L, v, g.kv_heads * g.d, g.d, kn, i0,
                        c0, acc);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) {
            const int64_t i = i0 + threadIdx.y + 16 * r, ch = c0 + threadIdx.x + 16 * c;
            if (i < g.L && ch < g.d)
                o[i * g.heads * g.d + ch] = acc[r][c];
        }
}

/* ---- the slots ------------------------------------------------------------------------ */

/* Queue `kernel` over `count` elements (grid-stride, EW_THREADS per block) on ctx's
 * stream. */
template <class... P, class... A>
static int launch_ew(gptq_ctx *ctx, int64_t count, void (*kernel)(P...), A... args)
{
    int status;
    cu_state *st = gptq_cu_state(ctx, &status);
    if (!st)
        return status;
    if (count < 1)
        return GPTQ_OK;
    kernel<<<ew_blocks(count), EW_THREADS, 0, st->stream>>>(args...);
    CU_TRY(ctx, cudaGetLastError());
    return GPTQ_OK;
}

int gptq_cu_rms_norm(gptq_ctx *ctx, const float *x, const float *w, int64_t n, int64_t width,
                     float eps, float *y)
{
    int status;
    cu_state *st = gptq_cu_state(ctx, &status);
    if (!st)
        return status;
    if (n < 1)
        return GPTQ_OK;
    if (n > INT32_MAX)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_NOT_SUPPORTED, "CUDA backend: rms_norm of %lld rows",
                                  (long long)n);
    rms_norm_kernel<<<(unsigned)n, EW_THREADS, 0, st->stream>>>(x, w, width, eps, y);
    CU_TRY(ctx, cudaGetLastError());
    return GPTQ_OK;
}

int gptq_cu_silu_mul(gptq_ctx *ctx, float *g, const float *u, int64_t n, int64_t width)
{
    return launch_ew(ctx, n * width, silu_mul_kernel, g, u, n * width);
}

int gptq_cu_add(gptq_ctx *ctx, float *y, const float *x, int64_t count)
{
    return launch_ew(ctx, count, add_kernel, y, x, count);
}

int gptq_cu_scale(gptq_ctx *ctx, float *y, const float *x, float s, int64_t count)
{
    return launch_ew(ctx, count, scale_kernel, y, x, s, count);
}

int gptq_cu_add_bias(gptq_ctx *ctx, float *y, const float *b, int64_t n, int64_t width)
{
    return launch_ew(ctx, width < 1 ? 0 : n * width, bias_kernel, y, b, width, n * width);
}

int gptq_cu_rope(gptq_ctx *ctx, float *x, const float *cs, const float *sn, int64_t n,
                 int64_t seqlen, int64_t heads, int64_t head_dim)
{
    if (head_dim < 2 || seqlen < 1)
        return GPTQ_OK;
    return launch_ew(ctx, n * heads * (head_dim / 2), rope_kernel, x, cs, sn, n, seqlen, heads,
                     head_dim);
}

int gptq_cu_attention(gptq_ctx *ctx, const float *q, const float *k, const float *v,
                      int64_t nseq, int64_t seqlen, int64_t heads, int64_t kv_heads,
                      int64_t head_dim, float *out)
{
    int status;
    cu_state *st = gptq_cu_state(ctx, &status);
    const int64_t tiles = (seqlen + TILE - 1) / TILE, pairs = nseq * heads;
    const size_t per_pair = (size_t)seqlen * (size_t)seqlen * sizeof(float);
    int64_t chunk;
    attn_geom g;

    if (!st)
        return status;
    if (nseq < 1 || seqlen < 1)
        return GPTQ_OK;
    if (heads < 1 || kv_heads < 1 || heads % kv_heads != 0 || head_dim < 1)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                                  "CUDA backend: attention with %lld heads, %lld kv heads, "
                                  "head_dim %lld",
                                  (long long)heads, (long long)kv_heads, (long long)head_dim);
    if (tiles > 65535 || seqlen > INT32_MAX / 2)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_NOT_SUPPORTED,
                                  "CUDA backend: attention over %lld tokens", (long long)seqlen);
    /* As many (sequence, head) pairs per launch as fit the scratch (at least one). */
    chunk = (int64_t)(ATTN_SCRATCH_BYTES / per_pair);
    chunk = chunk < 1 ? 1 : chunk > pairs ? pairs : chunk > 65535 ? 65535 : chunk;
    g.q = q;
    g.k = k;
    g.v = v;
    g.out = out;
    g.L = seqlen;
    g.heads = heads;
    g.kv_heads = kv_heads;
    g.d = head_dim;
    /* math.sqrt(head_dim) meets a float32 tensor: rounded to float32. */
    g.sqrt_d = (float)sqrt((double)head_dim);
    g.s = (float *)gptq_cu_scratch(st, CU_SLOT_ATTN, (size_t)chunk * per_pair, &status);
    if (!g.s)
        return status;
    for (int64_t p0 = 0; p0 < pairs; p0 += chunk) {
        const unsigned np = (unsigned)(pairs - p0 < chunk ? pairs - p0 : chunk);
        g.pair0 = p0;
        attn_scores_kernel<<<dim3((unsigned)tiles, (unsigned)tiles, np), dim3(16, 16), 0,
                             st->stream>>>(g);
        CU_TRY(ctx, cudaGetLastError());
        attn_softmax_kernel<<<dim3((unsigned)seqlen, np), EW_THREADS, 0, st->stream>>>(g);
        CU_TRY(ctx, cudaGetLastError());
        attn_values_kernel<<<dim3((unsigned)((head_dim + TILE - 1) / TILE), (unsigned)tiles, np),
                             dim3(16, 16), 0, st->stream>>>(g);
        CU_TRY(ctx, cudaGetLastError());
    }
    return GPTQ_OK;
}
