/*
 * gptq_qlinear: a layer's checkpoint tensors repacked once into the kernels' layout
 * (src/format/qlinear.h), and the forward pass that picks a kernel, prepares the input
 * and splits the output tiles over threads.
 *
 * Creation reorders the input columns by a stable counting sort of g_idx (exllama's
 * make_sequential, FORMATS.md section 6.3): without act-order that is the identity and,
 * for 2/4/8 bits with whole blocks per group, the checkpoint's qweight words already
 * are the blocks (qweight is [words, R], so 16 adjacent words are one block of a tile)
 * and repacking is a copy. Otherwise every row is decoded and its codes placed anew.
 *
 * The SGEMM path (forced, or AUTO from SGEMM_MIN_BATCH rows on a CPU without AVX2)
 * dequantizes row tiles to float32, scale * (code - zero) exactly as the reference
 * does, and multiplies them with SGEMM; OpenBLAS splits SGEMM over rows and columns
 * only, so neither path's result depends on the thread count.
 *
 * GPU handles: a handle created with a CUDA context also gets a device copy from the
 * backend's ql_prepare slot (src/cuda/qlinear.cu); its forward passes go to ql_forward
 * unless a CPU kernel was forced, which runs here on the host layout. This file only
 * routes and checks arguments; kernel choice on the GPU (AUTO) is the module's.
 */
#include <cblas.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "format.h"
#include "qlinear.h"

#define L GPTQ__QL_ROWS
/* Batch from which AUTO dequantizes and calls SGEMM on a CPU without AVX2 (with AVX2
 * or AVX-512 the fused kernels were faster than that path at every batch measured, up
 * to 256 rows, on the machine of docs/benchmarks.md), and the dequantized weights that
 * path holds at a time (16 MiB). */
#define SGEMM_MIN_BATCH 32
#define SGEMM_TILE_FLOATS ((int64_t)4 << 20)
/* Work below which a forward pass stays on one thread: starting one costs ~35 us on
 * the machines measured, the time to stream about 1 MB of weights. */
#define MIN_BYTES_PER_THREAD ((int64_t)1 << 19)
/* Work per chunk of tiles a thread takes at a time (see fused_worker). */
#define CHUNK_BYTES ((int64_t)256 << 10)
/* Inputs per batch block of the fused path (see forward_fused). */
#define X_BLOCK_BYTES ((int64_t)512 << 10)

/* ---- kernels and their names -------------------------------------------------- */

static const char *const kernel_names[] = {"auto",   "portable",  "avx2",     "avx512",
                                           "sgemm",  "cuda_gemv", "cuda_mma", "cuda_cublas"};
#define LAST_KERNEL GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS

static int is_gpu_kernel(int32_t kernel)
{
    return kernel >= GPTQ_QLINEAR_KERNEL_CUDA_GEMV && kernel <= GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS;
}

const char *gptq_qlinear_kernel_name(int32_t kernel)
{
    return kernel >= 0 && kernel <= LAST_KERNEL ? kernel_names[kernel] : "unknown";
}

int gptq_qlinear_kernel_available(int32_t kernel)
{
    switch (kernel) {
    case GPTQ_QLINEAR_KERNEL_AUTO:
    case GPTQ_QLINEAR_KERNEL_PORTABLE:
    case GPTQ_QLINEAR_KERNEL_SGEMM: return 1;
    case GPTQ_QLINEAR_KERNEL_AVX2: return gptq__ql_cpu_has_avx2();
    case GPTQ_QLINEAR_KERNEL_AVX512: return gptq__ql_cpu_has_avx512();
    case GPTQ_QLINEAR_KERNEL_CUDA_GEMV:
    case GPTQ_QLINEAR_KERNEL_CUDA_MMA:
    case GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS: return gptq_backend_available(GPTQ_BACKEND_CUDA, NULL, 0);
    default: return 0;
    }
}

/* The fused kernel AUTO uses: the widest this CPU runs. */
static int32_t best_simd(void)
{
    if (gptq__ql_cpu_has_avx512())
        return GPTQ_QLINEAR_KERNEL_AVX512;
    if (gptq__ql_cpu_has_avx2())
        return GPTQ_QLINEAR_KERNEL_AVX2;
    return GPTQ_QLINEAR_KERNEL_PORTABLE;
}

static gptq__ql_kernel_fn kernel_fn(int32_t kernel)
{
    switch (kernel) {
    case GPTQ_QLINEAR_KERNEL_AVX512: return gptq__ql_tiles_avx512;
    case GPTQ_QLINEAR_KERNEL_AVX2: return gptq__ql_tiles_avx2;
    default: return gptq__ql_tiles_portable;
    }
}

/* GPTQ_QLINEAR_KERNEL from the environment, AUTO when unset or unusable. A GPU kernel
 * is taken for a GPU handle only (whether CUDA_MMA suits the layer shows at the first
 * forward pass, which then fails with the reason). */
static int32_t kernel_from_env(gptq_ctx *ctx, int gpu)
{
    const char *v = getenv("GPTQ_QLINEAR_KERNEL");
    if (!v || !*v)
        return GPTQ_QLINEAR_KERNEL_AUTO;
    for (int32_t k = 0; k <= LAST_KERNEL; k++)
        if (strcmp(v, kernel_names[k]) == 0) {
            if (is_gpu_kernel(k) ? gpu : gptq_qlinear_kernel_available(k))
                return k;
            gptq__log(ctx, GPTQ_LOG_WARN, "GPTQ_QLINEAR_KERNEL=%s: %s; using auto", v,
                      is_gpu_kernel(k) ? "not a handle created with a CUDA context"
                                       : "this CPU lacks it");
            return GPTQ_QLINEAR_KERNEL_AUTO;
        }
    gptq__log(ctx, GPTQ_LOG_WARN,
              "GPTQ_QLINEAR_KERNEL=%s is unknown (auto, portable, avx2, avx512, sgemm, "
              "cuda_gemv, cuda_mma, cuda_cublas); using auto",
              v);
    return GPTQ_QLINEAR_KERNEL_AUTO;
}

/* ---- creation ----------------------------------------------------------------- */

void gptq_qlinear_free(gptq_qlinear *ql)
{
    if (!ql)
        return;
    if (ql->dev && ql->dev_backend && ql->dev_backend->ql_release)
        ql->dev_backend->ql_release(ql->dev);
    gptq__free(ql->seg_blk);
    gptq__free(ql->seg_group);
    gptq__free(ql->colmap);
    gptq__free(ql->codes);
    gptq__free(ql->scales);
    gptq__free(ql->zeros);
    gptq__free(ql->bias);
    gptq__free(ql);
}

/* Segments and the column order: a stable counting sort of g_idx, each group's run
 * padded to whole blocks. colmap stays NULL for the identity without padding. */
static int plan_columns(gptq_ctx *ctx, gptq_qlinear *ql, const int32_t *g_idx)
{
    const int64_t C = ql->in_features, ng = ql->ngroups;
    int64_t *count = gptq__calloc(ctx, (size_t)(ng + 1) * sizeof(int64_t), "qlinear group counts");
    int64_t nseg = 0, nblk = 0, identity = 1;

    if (!count)
        return GPTQ_ERR_OUT_OF_MEMORY;
    for (int64_t j = 0; j < C; j++)
        count[g_idx[j]]++;
    for (int64_t g = 0; g < ng; g++)
        if (count[g] > 0) {
            nseg++;
            nblk += (count[g] + ql->kb - 1) / ql->kb;
        }
    ql->nseg = nseg;
    ql->nblk = nblk;
    ql->cp = nblk * ql->kb;
    ql->seg_blk = gptq__alloc(ctx, (size_t)(nseg + 1) * sizeof(int64_t), "qlinear segments");
    ql->seg_group = gptq__alloc(ctx, (size_t)nseg * sizeof(int32_t), "qlinear segments");
    ql->colmap = gptq__alloc(ctx, (size_t)ql->cp * sizeof(int32_t), "qlinear column map");
    if (!ql->seg_blk || !ql->seg_group || !ql->colmap) {
        gptq__free(count);
        return GPTQ_ERR_OUT_OF_MEMORY;
    }
    /* count[g] becomes the padded column where group g's next column goes. */
    nseg = 0;
    nblk = 0;
    for (int64_t g = 0; g < ng; g++) {
        const int64_t n = count[g];
        if (n == 0)
            continue;
        ql->seg_blk[nseg] = nblk;
        ql->seg_group[nseg++] = (int32_t)g;
        count[g] = nblk * ql->kb;
        nblk += (n + ql->kb - 1) / ql->kb;
        for (int64_t k = count[g] + n; k < nblk * ql->kb; k++)
            ql->colmap[k] = -1;
    }
    ql->seg_blk[nseg] = nblk;
    for (int64_t j = 0; j < C; j++)
        ql->colmap[count[g_idx[j]]++] = (int32_t)j;
    gptq__free(count);
    for (int64_t k = 0; k < ql->cp && identity; k++)
        identity = ql->colmap[k] == k;
    if (identity && ql->cp == C) {
        gptq__free(ql->colmap);
        ql->colmap = NULL;
    }
    return GPTQ_OK;
}

typedef struct repack_job {
    gptq_qlinear *ql;
    const gptq_packed *w;
    int64_t parts;
    uint8_t *scratch; /* [parts][16 * C] decoded codes of a tile */
} repack_job;

/* Codes of one tile through the general path: decode its rows, place every column. */
static void repack_tile_general(gptq_qlinear *ql, const gptq_packed *w, int64_t t, uint8_t *rows)
{
    const int64_t R = ql->out_features, C = ql->in_features;
    uint32_t *dst = ql->codes + t * ql->nblk * ql->wpb * L;

    memset(dst, 0, (size_t)(ql->nblk * ql->wpb * L) * sizeof(uint32_t));
    for (int l = 0; l < L; l++) {
        gptq__bitreader br;
        if (t * L + l >= R)
            break;
        gptq__bitreader_init(&br, (const uint32_t *)w->qweight + t * L + l, R, w->bits);
        for (int64_t j = 0; j < C; j++)
            rows[l * C + j] = (uint8_t)gptq__bitreader_get(&br);
    }
    for (int64_t k = 0; k < ql->cp; k++) {
        const int64_t j = ql->colmap ? ql->colmap[k] : k;
        uint32_t *blk = dst + (k / ql->kb) * ql->wpb * L;
        const int32_t m = (int32_t)(k % ql->kb);
        if (j < 0)
            continue;
        for (int l = 0; l < L && t * L + l < R; l++) {
            const uint32_t q = rows[l * C + j];
            if (ql->bits == 3) {
                blk[(m / 16) * L + l] |= (q & 3u) << (2 * (m % 16));
                blk[2 * L + l] |= (q >> 2) << gptq__ql_hi_bit(m);
            } else {
                blk[l] |= q << (ql->bits * m);
            }
        }
    }
}

static void repack_parts(void *arg, int64_t p0, int64_t p1)
{
    const repack_job *jb = arg;
    gptq_qlinear *ql = jb->ql;
    const int64_t R = ql->out_features, nt = ql->ntiles;
    const int direct = !ql->colmap && ql->bits != 3;

    for (int64_t p = p0; p < p1; p++) {
        const int64_t t0 = nt * p / jb->parts, t1 = nt * (p + 1) / jb->parts;
        for (int64_t t = t0; t < t1; t++) {
            if (direct) {
                /* qweight word k of rows t*16 .. t*16+15 is block k of the tile. */
                uint32_t *dst = ql->codes + t * ql->nblk * L;
                const uint32_t *src = (const uint32_t *)jb->w->qweight + t * L;
                const int64_t nr = R - t * L < L ? R - t * L : L;
                for (int64_t k = 0; k < ql->nblk; k++) {
                    memcpy(dst + k * L, src + k * R, (size_t)nr * sizeof(uint32_t));
                    memset(dst + k * L + nr, 0, (size_t)(L - nr) * sizeof(uint32_t));
                }
            } else {
                repack_tile_general(ql, jb->w, t, jb->scratch + p * L * ql->in_features);
            }
        }
    }
}

/* Scales (float16, copied) and true zero points per tile and segment. */
static void repack_params(gptq_qlinear *ql, const gptq_packed *w, uint8_t *zrow)
{
    const int64_t R = ql->out_features, nzw = gptq__packed_words(R, w->bits);
    const uint32_t maxq = (1u << w->bits) - 1u;

    memset(ql->scales, 0, (size_t)(ql->ntiles * ql->nseg * L) * sizeof(uint16_t));
    memset(ql->zeros, 0, (size_t)(ql->ntiles * ql->nseg * L));
    for (int64_t s = 0; s < ql->nseg; s++) {
        const int64_t g = ql->seg_group[s];
        gptq__bitreader br;
        gptq__bitreader_init(&br, (const uint32_t *)w->qzeros + g * nzw, 1, w->bits);
        for (int64_t r = 0; r < R; r++) {
            uint32_t v = gptq__bitreader_get(&br);
            zrow[r] = (uint8_t)(w->format == GPTQ_FORMAT_V1 ? (v + 1u) & maxq : v);
        }
        for (int64_t r = 0; r < R; r++) {
            const int64_t i = ((r / L) * ql->nseg + s) * L + r % L;
            ql->scales[i] = w->scales[g * R + r];
            ql->zeros[i] = zrow[r];
        }
    }
}

static int create(gptq_ctx *ctx, const gptq_packed *w, const float *bias, int on_device,
                  gptq_qlinear **out)
{
    const char *fn = "gptq_qlinear_create";
    gptq_qlinear *ql;
    size_t ncodes, nparams, nscratch;
    repack_job jb;
    int rc;

    if (!out)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: out is NULL", fn);
    *out = NULL;
    jb.scratch = NULL;
    GPTQ_TRY(gptq__packed_check(ctx, w, fn));
    ql = gptq__calloc(ctx, sizeof *ql, "qlinear");
    if (!ql)
        return GPTQ_ERR_OUT_OF_MEMORY;
    ql->bits = w->bits;
    ql->out_features = w->out_features;
    ql->in_features = w->in_features;
    ql->ngroups = w->ngroups;
    ql->ntiles = (w->out_features + L - 1) / L;
    ql->kb = w->bits == 3 ? 32 : 32 / w->bits;
    ql->wpb = w->bits == 3 ? 3 : 1;
    ql->device = -1;
    rc = plan_columns(ctx, ql, w->g_idx);
    if (rc == GPTQ_OK &&
        (gptq__mul3_size(&ncodes, ql->ntiles * L, ql->nblk * ql->wpb, sizeof(uint32_t)) != 0 ||
         gptq__mul3_size(&nparams, ql->ntiles * L, ql->nseg, sizeof(uint16_t)) != 0))
        rc = GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: %lld x %lld does not fit in memory",
                       fn, (long long)w->out_features, (long long)w->in_features);
    if (rc == GPTQ_OK) {
        ql->codes = gptq__alloc(ctx, ncodes, "qlinear codes");
        ql->scales = ql->codes ? gptq__alloc(ctx, nparams, "qlinear scales") : NULL;
        ql->zeros = ql->scales ? gptq__alloc(ctx, nparams / 2, "qlinear zero points") : NULL;
        if (!ql->zeros)
            rc = GPTQ_ERR_OUT_OF_MEMORY;
    }
    if (rc == GPTQ_OK && bias) {
        ql->bias = gptq__calloc(ctx, (size_t)(ql->ntiles * L) * sizeof(float), "qlinear bias");
        if (ql->bias)
            memcpy(ql->bias, bias, (size_t)ql->out_features * sizeof(float));
        else
            rc = GPTQ_ERR_OUT_OF_MEMORY;
    }
    if (rc == GPTQ_OK) {
        const int direct = !ql->colmap && ql->bits != 3;
        jb.ql = ql;
        jb.w = w;
        jb.parts = gptq__ctx_threads(ctx);
        if (jb.parts > ql->ntiles)
            jb.parts = ql->ntiles;
        if (jb.parts > 256)
            jb.parts = 256;
        /* The scratch holds one tile's decoded rows per part, and a row of zero points. */
        if (gptq__mul3_size(&nscratch, jb.parts, L * ql->in_features, 1) != 0)
            rc = GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                           "%s: %lld input features do not fit in memory", fn,
                           (long long)ql->in_features);
        else if (!(jb.scratch = gptq__alloc(ctx, (direct ? 0 : nscratch) + (size_t)ql->out_features,
                                            "qlinear repacking scratch")))
            rc = GPTQ_ERR_OUT_OF_MEMORY;
    }
    if (rc == GPTQ_OK) {
        const int direct = !ql->colmap && ql->bits != 3;
        gptq__parallel_for((int32_t)jb.parts, jb.parts, 1, repack_parts, &jb);
        repack_params(ql, w, jb.scratch + (direct ? 0 : nscratch));
    }
    gptq__free(jb.scratch);
    /* A CUDA context: the device copy, on its device. */
    if (rc == GPTQ_OK && on_device && ctx && ctx->backend_id == GPTQ_BACKEND_CUDA) {
        if (!ctx->backend->ql_prepare)
            rc = GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                           "%s: the %s backend cannot hold prepared layers", fn,
                           ctx->backend->name);
        else
            rc = ctx->backend->ql_prepare(ctx, ql, &ql->dev);
        if (rc == GPTQ_OK) {
            ql->dev_backend = ctx->backend;
            ql->device = ctx->opts.device;
        }
    }
    if (rc != GPTQ_OK) {
        gptq_qlinear_free(ql);
        return rc;
    }
    ql->kernel = kernel_from_env(ctx, ql->dev != NULL);
    *out = ql;
    return GPTQ_OK;
}

int gptq_qlinear_create(gptq_ctx *ctx, const gptq_packed *w, const float *bias,
                        gptq_qlinear **out)
{
    return create(ctx, w, bias, 1, out);
}

int gptq__qlinear_create_host(gptq_ctx *ctx, const gptq_packed *w, const float *bias,
                              gptq_qlinear **out)
{
    return create(ctx, w, bias, 0, out);
}

/* ---- getters and settings ----------------------------------------------------- */

int64_t gptq_qlinear_in_features(const gptq_qlinear *ql) { return ql ? ql->in_features : 0; }
int64_t gptq_qlinear_out_features(const gptq_qlinear *ql) { return ql ? ql->out_features : 0; }
int32_t gptq_qlinear_bits(const gptq_qlinear *ql) { return ql ? ql->bits : 0; }
int32_t gptq_qlinear_kernel(const gptq_qlinear *ql) { return ql ? ql->kernel : -1; }

uint64_t gptq_qlinear_weight_bytes(const gptq_qlinear *ql)
{
    if (!ql)
        return 0;
    return (uint64_t)ql->ntiles * L *
           ((uint64_t)ql->nblk * (uint64_t)ql->wpb * 4u + (uint64_t)ql->nseg * 3u +
            (ql->bias ? 4u : 0u));
}

int gptq_qlinear_set_kernel(gptq_ctx *ctx, gptq_qlinear *ql, int32_t kernel)
{
    if (!ql)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_qlinear_set_kernel: ql is NULL");
    if (kernel < GPTQ_QLINEAR_KERNEL_AUTO || kernel > LAST_KERNEL)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_qlinear_set_kernel: kernel = %d is not a GPTQ_QLINEAR_KERNEL_*",
                         kernel);
    if (is_gpu_kernel(kernel)) {
        if (!ql->dev)
            return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                             "gptq_qlinear_set_kernel: %s runs on the GPU, but this handle was "
                             "created with a CPU context (create it with a CUDA context)",
                             kernel_names[kernel]);
        GPTQ_TRY(ql->dev_backend->ql_kernel_check(ctx, ql->dev, kernel));
    } else if (!gptq_qlinear_kernel_available(kernel))
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "gptq_qlinear_set_kernel: this CPU cannot run the %s kernel",
                         kernel_names[kernel]);
    ql->kernel = kernel;
    return GPTQ_OK;
}

/* ---- forward ------------------------------------------------------------------ */

enum { IN_F32 = GPTQ_QLINEAR_DTYPE_F32, IN_F16 = GPTQ_QLINEAR_DTYPE_F16,
       IN_BF16 = GPTQ_QLINEAR_DTYPE_BF16 };

static float widen(const void *x, int32_t dtype, int64_t i)
{
    switch (dtype) {
    case IN_F16: return gptq__f16_to_f32(((const uint16_t *)x)[i]);
    case IN_BF16: return gptq__bf16_to_f32(((const uint16_t *)x)[i]);
    default: return ((const float *)x)[i];
    }
}

/* Tiles are handed out in chunks from a shared counter rather than split up front:
 * the calling thread starts at once while a new thread is still starting (~35 us), and
 * a core taken by another process does not hold the call up. Which thread computes a
 * tile does not change the tile's result. */
typedef struct fused_job {
    gptq__ql_args args;
    gptq__ql_kernel_fn fn;
    int64_t chunk;        /* tiles per grab */
    atomic_llong next;    /* first tile not yet taken */
} fused_job;

static void fused_worker(void *arg, int64_t w0, int64_t w1)
{
    fused_job *jb = arg;
    const int64_t nt = jb->args.ql->ntiles;

    (void)w0;
    (void)w1;
    for (;;) {
        const int64_t t0 = (int64_t)atomic_fetch_add_explicit(&jb->next, (long long)jb->chunk,
                                                              memory_order_relaxed);
        if (t0 >= nt)
            break;
        jb->fn(&jb->args, t0, t0 + jb->chunk < nt ? t0 + jb->chunk : nt);
    }
}

static int forward_fused(gptq_ctx *ctx, const gptq_qlinear *ql, const void *x, int32_t dtype,
                         int64_t batch, float *y, int32_t kernel)
{
    const int64_t C = ql->in_features, cp = ql->cp, nseg = ql->nseg;
    const int gather = ql->colmap || dtype != IN_F32;
    size_t nx = 0, ns;
    float *buf;
    fused_job jb, blk;
    int64_t tile_bytes, min_tiles, xrows;

    if ((gather && gptq__mul3_size(&nx, batch, cp, sizeof(float)) != 0) ||
        gptq__mul3_size(&ns, batch, nseg, sizeof(float)) != 0 || nx > SIZE_MAX - ns)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_qlinear_forward: batch %lld does not fit in memory",
                         (long long)batch);
    buf = gptq__alloc(ctx, nx + ns, "qlinear inputs");
    if (!buf)
        return GPTQ_ERR_OUT_OF_MEMORY;
    jb.args.ql = ql;
    jb.args.batch = batch;
    jb.args.y = y;
    if (gather) {
        /* x in the padded column order, padding 0. */
        for (int64_t b = 0; b < batch; b++)
            for (int64_t k = 0; k < cp; k++) {
                const int64_t j = ql->colmap ? ql->colmap[k] : k;
                buf[b * cp + k] = j >= 0 && j < C ? widen(x, dtype, b * C + j) : 0.0f;
            }
        jb.args.x = buf;
        jb.args.ldx = cp;
    } else {
        jb.args.x = x;
        jb.args.ldx = C;
    }
    {
        float *xsum = buf + nx / sizeof(float);
        for (int64_t b = 0; b < batch; b++)
            for (int64_t s = 0; s < nseg; s++) {
                /* four partial sums (segments are whole blocks of >= 4 columns), in a
                 * fixed order */
                const float *xs = jb.args.x + b * jb.args.ldx;
                float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                for (int64_t k = ql->seg_blk[s] * ql->kb; k < ql->seg_blk[s + 1] * ql->kb;
                     k += 4)
                    for (int l = 0; l < 4; l++)
                        part[l] += xs[k + l];
                xsum[b * nseg + s] = (part[0] + part[1]) + (part[2] + part[3]);
            }
        jb.args.xsum = xsum;
    }
    jb.fn = kernel_fn(kernel);
    /* Batch rows go through in blocks whose inputs stay in a core's cache while every
     * tile reads them (about X_BLOCK_BYTES, at least 16 rows); each block re-reads
     * the weights, which costs little next to 16 or more multiply-adds per weight. */
    xrows = X_BLOCK_BYTES / (cp * (int64_t)sizeof(float));
    xrows = xrows < 16 ? 16 : xrows / 8 * 8;
    for (int64_t b0 = 0; b0 < batch; b0 += xrows) {
        const int64_t nb = batch - b0 < xrows ? batch - b0 : xrows;
        int64_t workers;
        blk.args = jb.args;
        blk.fn = jb.fn;
        blk.args.x = jb.args.x + b0 * jb.args.ldx;
        blk.args.xsum = jb.args.xsum + b0 * nseg;
        blk.args.y = y + b0 * ql->out_features;
        blk.args.batch = nb;
        tile_bytes = ql->nblk * ql->wpb * 4 * L;
        tile_bytes += tile_bytes * (nb - 1) / 8; /* 8 more rows cost about one more read */
        min_tiles = MIN_BYTES_PER_THREAD / (tile_bytes > 0 ? tile_bytes : 1) + 1;
        blk.chunk = CHUNK_BYTES / (tile_bytes > 0 ? tile_bytes : 1);
        blk.chunk = blk.chunk < 1 ? 1 : blk.chunk;
        atomic_init(&blk.next, 0);
        workers = ql->ntiles / min_tiles;
        workers = workers < 1 ? 1 : workers;
        gptq__parallel_for(gptq__ctx_threads(ctx), workers, 1, fused_worker, &blk);
    }
    gptq__free(buf);
    return GPTQ_OK;
}

/* The SGEMM path: groups of tiles dequantized, transposed, to W^T[C][rows] (one
 * 16-row column per vector store), then y[:, rows] = x * W^T. */
typedef struct deq_job {
    const gptq_qlinear *ql;
    gptq__ql_dequant_fn fn;
    int64_t t_first, nrows; /* first tile of the group, rows in the group */
    float *wbuf;            /* [C][nrows] */
} deq_job;

static void deq_tiles(void *arg, int64_t t0, int64_t t1)
{
    const deq_job *dj = arg;
    for (int64_t tt = t0; tt < t1; tt++) {
        const int64_t left = dj->nrows - tt * L;
        dj->fn(dj->ql, dj->t_first + tt, dj->wbuf + tt * L, dj->nrows, left < L ? (int)left : L);
    }
}

static gptq__ql_dequant_fn dequant_fn(int32_t simd)
{
    switch (simd) {
    case GPTQ_QLINEAR_KERNEL_AVX512: return gptq__ql_dequant_avx512;
    case GPTQ_QLINEAR_KERNEL_AVX2: return gptq__ql_dequant_avx2;
    default: return gptq__ql_dequant_portable;
    }
}

static int forward_sgemm(gptq_ctx *ctx, const gptq_qlinear *ql, const void *x, int32_t dtype,
                         int64_t batch, float *y)
{
    const int64_t R = ql->out_features, C = ql->in_features;
    int64_t tiles = SGEMM_TILE_FLOATS / (C * L);
    const float *xf = x;
    float *xbuf = NULL, *wbuf;
    deq_job dj;
    size_t nx;

    if (C > INT_MAX || R > INT_MAX)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "gptq_qlinear_forward: %lld x %lld exceeds the BLAS's int dimensions",
                         (long long)R, (long long)C);
    if (dtype != IN_F32) {
        if (gptq__mul3_size(&nx, batch, C, sizeof(float)) != 0)
            return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                             "gptq_qlinear_forward: batch %lld does not fit in memory",
                             (long long)batch);
        xbuf = gptq__alloc(ctx, nx, "qlinear float32 inputs");
        if (!xbuf)
            return GPTQ_ERR_OUT_OF_MEMORY;
        for (int64_t i = 0; i < batch * C; i++)
            xbuf[i] = widen(x, dtype, i);
        xf = xbuf;
    }
    tiles = tiles < 1 ? 1 : tiles > ql->ntiles ? ql->ntiles : tiles;
    wbuf = gptq__alloc(ctx, (size_t)(tiles * L * C) * sizeof(float), "qlinear dequantized tile");
    if (!wbuf) {
        gptq__free(xbuf);
        return GPTQ_ERR_OUT_OF_MEMORY;
    }
    dj.ql = ql;
    dj.fn = dequant_fn(ql->kernel == GPTQ_QLINEAR_KERNEL_PORTABLE ||
                               ql->kernel == GPTQ_QLINEAR_KERNEL_AVX2
                           ? ql->kernel
                           : best_simd());
    dj.wbuf = wbuf;
    for (int64_t t0 = 0; t0 < ql->ntiles; t0 += tiles) {
        const int64_t nt = ql->ntiles - t0 < tiles ? ql->ntiles - t0 : tiles;
        const int64_t r0 = t0 * L, nr = R - r0 < nt * L ? R - r0 : nt * L;
        dj.t_first = t0;
        dj.nrows = nr;
        gptq__parallel_for(gptq__ctx_threads(ctx), nt, 4, deq_tiles, &dj);
        for (int64_t b0 = 0; b0 < batch; b0 += INT_MAX / 2) {
            const int64_t nb = batch - b0 < INT_MAX / 2 ? batch - b0 : INT_MAX / 2;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nb, (int)nr, (int)C, 1.0f,
                        xf + b0 * C, (int)C, wbuf, (int)nr, 0.0f, y + b0 * R + r0, (int)R);
        }
    }
    gptq__free(wbuf);
    gptq__free(xbuf);
    if (ql->bias)
        for (int64_t b = 0; b < batch; b++)
            for (int64_t r = 0; r < R; r++)
                y[b * R + r] += ql->bias[r];
    return GPTQ_OK;
}

/* For a GPU handle's forward pass: ctx must be a CUDA context of the handle's module
 * on its device. */
static int check_gpu_ctx(gptq_ctx *ctx, const gptq_qlinear *ql, const char *fn)
{
    if (!ctx)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "%s: the handle lives on CUDA device %d: pass a CUDA context on that "
                         "device (got none)",
                         fn, (int)ql->device);
    if (ctx->backend_id != GPTQ_BACKEND_CUDA || ctx->backend != ql->dev_backend)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "%s: the handle lives on CUDA device %d: pass a CUDA context on that "
                         "device (got a %s context)",
                         fn, (int)ql->device, ctx->backend ? ctx->backend->name : "CPU");
    if (ctx->opts.device != ql->device)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "%s: the handle lives on CUDA device %d, the context on device %d", fn,
                         (int)ql->device, (int)ctx->opts.device);
    return GPTQ_OK;
}

static int forward(gptq_ctx *ctx, const gptq_qlinear *ql, const void *x, int32_t dtype,
                   int64_t batch, float *y, const char *fn)
{
    int32_t kernel;
    size_t nx, ny;

    if (!ql || !x || !y)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn,
                         !ql ? "ql" : !x ? "x" : "y");
    if (batch < 1)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: batch = %lld (must be >= 1)", fn,
                         (long long)batch);
    if (gptq__mul3_size(&nx, batch, ql->in_features, sizeof(float)) != 0 ||
        gptq__mul3_size(&ny, batch, ql->out_features, sizeof(float)) != 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "%s: batch %lld x %lld inputs does not fit in memory", fn,
                         (long long)batch, (long long)ql->in_features);
    kernel = ql->kernel;
    if (ql->dev && (kernel == GPTQ_QLINEAR_KERNEL_AUTO || is_gpu_kernel(kernel))) {
        GPTQ_TRY(check_gpu_ctx(ctx, ql, fn));
        return ql->dev_backend->ql_forward(ctx, ql, ql->dev, kernel, x, dtype, batch, y,
                                           GPTQ_QLINEAR_DTYPE_F32, 0);
    }
    if (kernel == GPTQ_QLINEAR_KERNEL_AUTO) {
        kernel = best_simd();
        if (kernel == GPTQ_QLINEAR_KERNEL_PORTABLE && batch >= SGEMM_MIN_BATCH)
            kernel = GPTQ_QLINEAR_KERNEL_SGEMM;
    }
    if (kernel == GPTQ_QLINEAR_KERNEL_SGEMM)
        return forward_sgemm(ctx, ql, x, dtype, batch, y);
    return forward_fused(ctx, ql, x, dtype, batch, y, kernel);
}

int gptq_qlinear_forward(gptq_ctx *ctx, const gptq_qlinear *ql, const float *x, int64_t batch,
                         float *y)
{
    return forward(ctx, ql, x, IN_F32, batch, y, "gptq_qlinear_forward");
}

int gptq_qlinear_forward_f16(gptq_ctx *ctx, const gptq_qlinear *ql, const uint16_t *x,
                             int64_t batch, float *y)
{
    return forward(ctx, ql, x, IN_F16, batch, y, "gptq_qlinear_forward_f16");
}

int gptq_qlinear_forward_bf16(gptq_ctx *ctx, const gptq_qlinear *ql, const uint16_t *x,
                              int64_t batch, float *y)
{
    return forward(ctx, ql, x, IN_BF16, batch, y, "gptq_qlinear_forward_bf16");
}

/* ---- the GPU entry points ------------------------------------------------------ */

/* Checks shared by forward_device and bench_device: a GPU handle, a matching CUDA
 * context, a GPU kernel (or AUTO) on the handle. */
static int check_device_call(gptq_ctx *ctx, const gptq_qlinear *ql, int64_t batch,
                             const char *fn)
{
    if (!ql)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: ql is NULL", fn);
    if (!ctx || ctx->backend_id != GPTQ_BACKEND_CUDA)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "%s: needs a CUDA context (this one uses the CPU backend)", fn);
    if (!ql->dev)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "%s: the handle was created with a CPU context and has no GPU copy "
                         "(create it with a CUDA context)",
                         fn);
    if (ql->kernel != GPTQ_QLINEAR_KERNEL_AUTO && !is_gpu_kernel(ql->kernel))
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "%s: the handle's kernel is %s, a CPU kernel; set a CUDA kernel or auto",
                         fn, kernel_names[ql->kernel]);
    if (batch < 1)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: batch = %lld (must be >= 1)", fn,
                         (long long)batch);
    return check_gpu_ctx(ctx, ql, fn);
}

int gptq_qlinear_forward_device(gptq_ctx *ctx, const gptq_qlinear *ql, const void *x,
                                int32_t x_dtype, int64_t batch, void *y, int32_t y_dtype)
{
    const char *fn = "gptq_qlinear_forward_device";

    GPTQ_TRY(check_device_call(ctx, ql, batch, fn));
    if (!x || !y)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, !x ? "x" : "y");
    if (x_dtype != GPTQ_QLINEAR_DTYPE_F32 && x_dtype != GPTQ_QLINEAR_DTYPE_F16 &&
        x_dtype != GPTQ_QLINEAR_DTYPE_BF16)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "%s: x_dtype = %d is not a GPTQ_QLINEAR_DTYPE_* (F32, F16, BF16)", fn,
                         (int)x_dtype);
    if (y_dtype != GPTQ_QLINEAR_DTYPE_F32 && y_dtype != GPTQ_QLINEAR_DTYPE_F16)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "%s: y_dtype = %d must be GPTQ_QLINEAR_DTYPE_F32 or _F16", fn,
                         (int)y_dtype);
    return ql->dev_backend->ql_forward(ctx, ql, ql->dev, ql->kernel, x, x_dtype, batch, y,
                                       y_dtype, 1);
}

int gptq_qlinear_bench_device(gptq_ctx *ctx, const gptq_qlinear *ql, int64_t batch,
                              int32_t iters, int32_t *kernel, double *seconds,
                              double *fp16_seconds)
{
    const char *fn = "gptq_qlinear_bench_device";

    GPTQ_TRY(check_device_call(ctx, ql, batch, fn));
    if (iters < 1 || !seconds)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: %s", fn,
                         !seconds ? "seconds is NULL" : "iters must be >= 1");
    return ql->dev_backend->ql_bench(ctx, ql, ql->dev, ql->kernel, batch, iters, kernel, seconds,
                                     fp16_seconds);
}
