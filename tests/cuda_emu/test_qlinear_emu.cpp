/*
 * The qlinear kernels of the CUDA module, run on the host emulation of CUDA
 * (tests/cuda_emu/README.md): the text of src/cuda/qlinear_gemv.cu and qlinear_mma.cu,
 * turned into C++ by cu2cpp.py, on real handles made with the public API (CPU context,
 * random layers packed by the library). Every output is checked against the exact
 * product (float64, from the unpacked codes) within the bound gptq.h states for the
 * kernel next to gptq_qlinear_forward:
 *
 *   CUDA_GEMV  (2 n + 64 ns + 4) 2^-24 (sum_j |x_j| s_j (q_j + z_j) + |bias|)
 *   CUDA_MMA   (2^-10 + (n + 4) 2^-23) (sum_j |x_j w_j| + |bias|) + 2^-24 sum_j (|x_j| + |w_j|)
 *
 * (n input columns, ns groups present), plus one float16 rounding of the result for
 * float16 outputs; the CPU kernel's gptq_qlinear_forward is checked against the same
 * product with its own bound, so the three agree. Covered: GEMV at 2/3/4/8 bits, MMA at
 * 4/8 bits; groups -1, 32, 128, 48 (and 40, which MMA refuses); act-order; v1 and v2;
 * the batch sizes and shapes of the launch logic (GEMV per 8 rows, K slices with one and
 * several row groups; MMA m16 tiles, split-K, a partial last stage); float32, float16
 * and bfloat16 inputs; float32 and float16 outputs; bias or none; the MMA refusals.
 *
 * Exit status 0 when every comparison holds; each failure prints the case, the worst
 * output and its error against the bound.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qlinear_dev.h"
#include "qlinear_mma.h"
#include "emu_test.h"
#include "testrng.h"

int failures, checks;

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* qlayer_try_make (sym = 0) and the two handles. */
int layer_make(gptq_ctx *ctx, layer *L, int32_t bits, int32_t fmt, int64_t R, int64_t C,
               int32_t gs, int act, uint64_t seed)
{
    const char *why = "";

    L->ql[0] = L->ql[1] = NULL;
    if (qlayer_try_make(ctx, L, bits, fmt, R, C, gs, act, 0, seed, &why) != GPTQ_OK) {
        fprintf(stderr, "layer: %s\n", why);
        return -1;
    }
    if (gptq_qlinear_create(ctx, &L->p, NULL, &L->ql[0]) != GPTQ_OK ||
        gptq_qlinear_create(ctx, &L->p, L->bias, &L->ql[1]) != GPTQ_OK) {
        fprintf(stderr, "layer: %s\n", gptq_ctx_last_error(ctx));
        return -1;
    }
    return 0;
}

void layer_free(layer *L)
{
    gptq_qlinear_free(L->ql[0]);
    gptq_qlinear_free(L->ql[1]);
    qlayer_free(L);
}

/* ---- the exact product and the bounds ---------------------------------------------- */

/* qlayer's exact product and bound; CUDA_CUBLAS shares CUDA_MMA's. */
void reference(const layer *L, const float *x, int64_t batch, int bias, int kind, double *ref,
               double *tol)
{
    const int bound = kind == BOUND_CPU    ? QLAYER_BOUND_CPU
                      : kind == BOUND_GEMV ? QLAYER_BOUND_GEMV
                                           : QLAYER_BOUND_F16;
    const char *why = "";
    if (qlayer_try_reference(L, x, batch, bias, bound, ref, tol, &why) != GPTQ_OK) {
        fprintf(stderr, "%s\n", why);
        exit(2);
    }
}

/* One more float16 rounding of the result (relative 2^-11, half a subnormal step). */
void widen_for_half(const double *ref, double *tol, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        tol[i] += 0x1p-11 * (fabs(ref[i]) + tol[i]) + 0x1p-25;
}

/* The largest error / bound seen per kind, printed at the end: how much room is left. */
double worst_seen[4];

/* y (float32, or float16 bits when half) against ref within tol; one line per failure. */
void compare(int kind, const char *what, const void *y, int half, const double *ref,
                    const double *tol, int64_t batch, int64_t R)
{
    double worst = -1.0;
    int64_t wi = 0;
    for (int64_t i = 0; i < batch * R; i++) {
        const double v = half ? (double)gptq_fp16_to_fp32(((const uint16_t *)y)[i])
                              : (double)((const float *)y)[i];
        const double e = fabs(v - ref[i]);
        const double ratio = isnan(e) ? INFINITY : tol[i] > 0 ? e / tol[i] : e > 0 ? INFINITY : 0;
        if (ratio > worst) {
            worst = ratio;
            wi = i;
        }
    }
    if (worst > worst_seen[kind])
        worst_seen[kind] = worst;
    const double v = half ? (double)gptq_fp16_to_fp32(((const uint16_t *)y)[wi])
                          : (double)((const float *)y)[wi];
    EXPECT(worst <= 1.0, "%s: y[%lld][%lld] = %.9g, exact %.9g: error %.3g > bound %.3g", what,
           (long long)(wi / R), (long long)(wi % R), v, ref[wi], fabs(v - ref[wi]), tol[wi]);
}

/* ---- inputs ---------------------------------------------------------------------------- */

/* x[batch][C] uniform in [-1, 1), made exactly representable in `dtype` (so that every
 * kernel and the reference see the same values), and its encoding in that dtype. */
void make_x(int64_t n, int32_t dtype, uint64_t *seed, float *x, void *enc)
{
    for (int64_t i = 0; i < n; i++) {
        float v = rng_uniform(seed);
        if (dtype == GPTQ_QLINEAR_DTYPE_F16) {
            const uint16_t h = gptq_fp32_to_fp16(v);
            ((uint16_t *)enc)[i] = h;
            v = gptq_fp16_to_fp32(h);
        } else if (dtype == GPTQ_QLINEAR_DTYPE_BF16) {
            uint32_t u;
            memcpy(&u, &v, sizeof u);
            u &= 0xffff0000u;
            memcpy(&v, &u, sizeof v);
            ((uint16_t *)enc)[i] = (uint16_t)(u >> 16);
        } else {
            ((float *)enc)[i] = v;
        }
        x[i] = v;
    }
}

const char *dtype_name(int32_t d)
{
    return d == GPTQ_QLINEAR_DTYPE_F16 ? "f16" : d == GPTQ_QLINEAR_DTYPE_BF16 ? "bf16" : "f32";
}

/* The CPU kernel on the same input, against the same exact product. */
void check_cpu(gptq_ctx *ctx, const layer *L, int bias, const float *x, int64_t batch,
                      const char *what)
{
    const int64_t n = batch * L->R;
    float *y = (float *)xmalloc((size_t)n * sizeof(float));
    double *ref = (double *)xmalloc((size_t)n * sizeof(double));
    double *tol = (double *)xmalloc((size_t)n * sizeof(double));
    char msg[256];

    snprintf(msg, sizeof msg, "%s [cpu]", what);
    reference(L, x, batch, bias, BOUND_CPU, ref, tol);
    EXPECT(gptq_qlinear_forward(ctx, L->ql[bias], x, batch, y) == GPTQ_OK, "%s: %s", msg,
           gptq_ctx_last_error(ctx));
    compare(BOUND_CPU, msg, y, 0, ref, tol, batch, L->R);
    free(y);
    free(ref);
    free(tol);
}

/* ---- GEMV -------------------------------------------------------------------------------- */

/* The device view of a host handle: the host arrays in place, blk_seg from seg_blk. */
static gptq_cu_ql gemv_view(const gptq_qlinear *ql, int sms, int32_t *blk_seg)
{
    gptq_cu_ql d;
    memset(&d, 0, sizeof d);
    for (int64_t s = 0; s < ql->nseg; s++)
        for (int64_t b = ql->seg_blk[s]; b < ql->seg_blk[s + 1]; b++)
            blk_seg[b] = (int32_t)s;
    d.sms = sms;
    d.bits = ql->bits;
    d.kb = ql->kb;
    d.wpb = ql->wpb;
    d.R = ql->out_features;
    d.C = ql->in_features;
    d.ntiles = ql->ntiles;
    d.nblk = ql->nblk;
    d.cp = ql->cp;
    d.nseg = ql->nseg;
    d.codes = ql->codes;
    d.scales = ql->scales;
    d.zeros = ql->zeros;
    d.blk_seg = blk_seg;
    d.colmap = ql->colmap;
    d.bias = ql->bias;
    d.mma_why = "not prepared";
    /* The kernel's vector loads: 16-byte code groups, 8-byte scale and 4-byte zero quads
     * (the emulation would not fault on a misaligned one). */
    EXPECT((uintptr_t)d.codes % 16 == 0 && (uintptr_t)d.scales % 8 == 0 &&
               (uintptr_t)d.zeros % 4 == 0,
           "handle arrays misaligned for the GEMV kernel");
    return d;
}

static int ksplit_seen, kwhole_seen;

static void gemv_case(gptq_ctx *ctx, cu_state *st, const layer *L, int sms, int64_t batch,
                      int32_t x_dtype, int y_half, int bias, uint64_t *seed)
{
    const gptq_qlinear *ql = L->ql[bias];
    const int64_t R = L->R, C = L->C, n = batch * R;
    int32_t *blk_seg = (int32_t *)xmalloc((size_t)ql->nblk * sizeof(int32_t));
    const gptq_cu_ql d = gemv_view(ql, sms, blk_seg);
    float *x = (float *)xmalloc((size_t)(batch * C) * sizeof(float));
    void *xe = xmalloc((size_t)(batch * C) * sizeof(float));
    void *y = xmalloc((size_t)n * sizeof(float));
    double *ref = (double *)xmalloc((size_t)n * sizeof(double));
    double *tol = (double *)xmalloc((size_t)n * sizeof(double));
    const long blocks0 = gptq_emu::st().blocks;
    char what[256];
    int rc;

    snprintf(what, sizeof what,
             "gemv %lldx%lld b%d gs%d act%d v%d sms%d batch %lld x %s y %s bias %d",
             (long long)R, (long long)C, L->bits, L->gs, L->act, L->p.format, sms, (long long)batch,
             dtype_name(x_dtype), y_half ? "f16" : "f32", bias);
    make_x(batch * C, x_dtype, seed, x, xe);
    memset(y, 0xff, (size_t)n * (y_half ? 2 : 4)); /* NaN in both widths */
    reference(L, x, batch, bias, BOUND_GEMV, ref, tol);
    if (y_half)
        widen_for_half(ref, tol, n);
    rc = gptq_cu_ql_gemv(st, &d, xe, x_dtype, batch, y, y_half);
    EXPECT(rc == GPTQ_OK, "%s: status %d: %s", what, rc, gptq_ctx_last_error(ctx));
    EXPECT(cudaGetLastError() == cudaSuccess, "%s: a launch failed", what);
    compare(BOUND_GEMV, what, y, y_half, ref, tol, batch, R);
    check_cpu(ctx, L, bias, x, batch, what);

    /* K slices leave their arrival counters at 0 for the next launch. */
    if (gptq_emu::st().blocks - blocks0 > ((d.ntiles + 7) / 8) * ((batch + 7) / 8)) {
        const unsigned *cnt = (const unsigned *)st->slot[CU_SLOT_QL_CNT];
        const size_t nc = (size_t)((d.ntiles + 7) / 8);
        ksplit_seen++;
        EXPECT(cnt && st->slot_bytes[CU_SLOT_QL_CNT] >= nc * sizeof(unsigned),
               "%s: K slices without counters", what);
        for (size_t i = 0; cnt && i < nc; i++)
            EXPECT(cnt[i] == 0, "%s: counter %zu left at %u", what, i, cnt[i]);
    } else {
        kwhole_seen++;
    }
    free(blk_seg);
    free(x);
    free(xe);
    free(y);
    free(ref);
    free(tol);
}

static void test_gemv(gptq_ctx *ctx, cu_state *st)
{
    static const int32_t bits[] = {2, 3, 4, 8};
    static const int32_t gss[] = {-1, 32, 128, 48, 40};
    static const int64_t batches[] = {1, 2, 3, 5, 8, 9, 17};
    /* Shapes: 37 = 2 * 16 + 5 rows (one row group, a partial tile) with 4 SMs: K slices;
     * 149 rows (two row groups) with 4 SMs: K slices over both; 261 rows (three row
     * groups) with 1 SM: whole K. 203 columns: no multiple of any block. */
    static const struct {
        int64_t R;
        int sms;
    } shapes[] = {{37, 4}, {149, 4}, {261, 1}};
    uint64_t seed = 1;
    unsigned k = 0, nl = 0; /* cases, layers */

    for (size_t b = 0; b < sizeof bits / sizeof bits[0]; b++)
        for (size_t g = 0; g < sizeof gss / sizeof gss[0]; g++)
            for (int act = 0; act <= 1; act++) {
                const size_t sh = (b + g + (size_t)act) % 3;
                layer L;
                if (layer_make(ctx, &L, bits[b], GPTQ_FORMAT_V1 + (int32_t)(nl++ % 2),
                               shapes[sh].R, 203, gss[g], act, seed++) != 0) {
                    EXPECT(0, "layer b%d gs%d act%d", bits[b], gss[g], act);
                    continue;
                }
                for (int c = 0; c < 2; c++, k++)
                    gemv_case(ctx, st, &L, shapes[sh].sms, batches[k % 7], (int32_t)(k % 3),
                              (int)(k / 3 % 2), (int)(k / 2 % 2), &seed);
                layer_free(&L);
            }

    /* 65 row groups with K slices: more arrival counters than the slot held so far (256
     * bytes), so it grows, and the stand-in allocator hands back the same address. */
    {
        layer L;
        if (layer_make(ctx, &L, 2, GPTQ_FORMAT_V2, 64 * 128 + 5, 256, 32, 1, seed++) != 0) {
            EXPECT(0, "layer 8197x256");
        } else {
            const size_t before = st->slot_bytes[CU_SLOT_QL_CNT];
            gemv_case(ctx, st, &L, 100, 1, GPTQ_QLINEAR_DTYPE_F32, 0, 1, &seed);
            EXPECT(st->slot_bytes[CU_SLOT_QL_CNT] > before, "the counter slot did not grow");
            layer_free(&L);
        }
    }
    EXPECT(ksplit_seen > 0 && kwhole_seen > 0, "GEMV paths: %d with K slices, %d without",
           ksplit_seen, kwhole_seen);
}

/* ---- MMA ---------------------------------------------------------------------------------- */

static int split_seen, whole_seen;

static void mma_case(gptq_ctx *ctx, const layer *L, const gptq_cu_mma *m, int64_t batch,
                     int y_half, int bias, uint64_t *seed, const char *lw)
{
    const gptq_qlinear *ql = L->ql[bias];
    const int64_t R = L->R, C = L->C, cp = ql->cp, ldx = (cp + 7) / 8 * 8, n = batch * R;
    const size_t wsb = gptq_cu_mma_workspace(m, batch);
    float *x = (float *)xmalloc((size_t)(batch * C) * sizeof(float));
    uint16_t *xh = (uint16_t *)xmalloc((size_t)(batch * C) * sizeof(uint16_t));
    uint16_t *xp = NULL;
    void *y = NULL, *ws = NULL;
    unsigned *cnt = NULL;
    const size_t ncnt = gptq_cu_mma_counters(m);
    double *ref = (double *)xmalloc((size_t)n * sizeof(double));
    double *tol = (double *)xmalloc((size_t)n * sizeof(double));
    char what[256];

    snprintf(what, sizeof what, "%s batch %lld y %s bias %d splits %s", lw, (long long)batch,
             y_half ? "f16" : "f32", bias, wsb ? ">1" : "1");
    make_x(batch * C, GPTQ_QLINEAR_DTYPE_F16, seed, x, xh);
    /* xp: the padded column order, device memory (16-byte aligned), padding 0. */
    if (cudaMalloc((void **)&xp, (size_t)(batch * ldx) * 2) != cudaSuccess ||
        cudaMalloc(&y, (size_t)n * 4) != cudaSuccess ||
        (wsb && cudaMalloc(&ws, wsb) != cudaSuccess) ||
        (ncnt && (cudaMalloc((void **)&cnt, ncnt * sizeof(unsigned)) != cudaSuccess ||
                  cudaMemset(cnt, 0, ncnt * sizeof(unsigned)) != cudaSuccess))) {
        EXPECT(0, "%s: cudaMalloc", what);
        return;
    }
    for (int64_t b = 0; b < batch; b++)
        for (int64_t kk = 0; kk < ldx; kk++) {
            const int64_t j = kk >= cp ? -1 : ql->colmap ? ql->colmap[kk] : kk;
            xp[b * ldx + kk] = j >= 0 ? xh[b * C + j] : 0;
        }
    reference(L, x, batch, bias, BOUND_MMA, ref, tol);
    if (y_half)
        widen_for_half(ref, tol, n);
    /* Twice: split-K must leave its arrival counters ready for the next launch. */
    for (int rep = 0; rep < (wsb ? 2 : 1); rep++) {
        int rc;
        memset(y, 0xff, (size_t)n * 4);
        rc = gptq_cu_mma_forward(ctx, nullptr, m, (const __half *)xp, ldx, batch, y, y_half,
                                 bias ? ql->bias : NULL, ws, cnt);
        EXPECT(rc == GPTQ_OK, "%s: status %d: %s", what, rc, gptq_ctx_last_error(ctx));
        EXPECT(cudaGetLastError() == cudaSuccess, "%s: a launch failed", what);
        compare(BOUND_MMA, what, y, y_half, ref, tol, batch, R);
    }
    for (size_t i = 0; i < ncnt; i++)
        EXPECT(cnt[i] == 0, "%s: arrival counter %zu left at %u", what, i, cnt[i]);
    check_cpu(ctx, L, bias, x, batch, what);
    if (wsb)
        split_seen++;
    else
        whole_seen++;
    cudaFree(xp);
    cudaFree(y);
    cudaFree(ws);
    cudaFree(cnt);
    free(x);
    free(xh);
    free(ref);
    free(tol);
}

static void test_mma(gptq_ctx *ctx)
{
    static const int32_t bits[] = {4, 8};
    static const int32_t gss[] = {-1, 32, 128, 48};
    static const int64_t batches[] = {1, 16, 17, 33, 64};
    uint64_t seed = 1000;
    unsigned k = 0, nl = 0; /* cases, layers */

    /* 528 columns = 33 k-slices: five stages, the last holding one slice; 4 SMs x 2
     * blocks give 2 splits at 64 or 128 rows, 1 SM x 1 block none. */
    for (size_t b = 0; b < 2; b++)
        for (size_t g = 0; g < 4; g++)
            for (int act = 0; act <= 1; act++) {
                const int64_t R = (g + (size_t)act) % 2 ? 128 : 64;
                const int wide = (int)((b + g) % 2);
                gptq_cu_mma *m = NULL;
                char lw[160];
                layer L;
                if (layer_make(ctx, &L, bits[b], GPTQ_FORMAT_V2 - (int32_t)(nl++ % 2), R, 528,
                               gss[g], act, seed++) != 0) {
                    EXPECT(0, "layer b%d gs%d act%d", bits[b], gss[g], act);
                    continue;
                }
                snprintf(lw, sizeof lw, "mma %lldx528 b%d gs%d act%d v%d", (long long)R,
                         bits[b], gss[g], act, L.p.format);
                gptq_emu::st().nsm = wide ? 4 : 1;
                gptq_emu::st().occupancy = wide ? 2 : 1;
                EXPECT(gptq_cu_mma_unsupported(L.ql[0]) == NULL, "%s: refused: %s", lw,
                       gptq_cu_mma_unsupported(L.ql[0]));
                if (gptq_cu_mma_prepare(ctx, nullptr, L.ql[0], &m) != GPTQ_OK) {
                    EXPECT(0, "%s: prepare: %s", lw, gptq_ctx_last_error(ctx));
                    layer_free(&L);
                    continue;
                }
                for (int c = 0; c < 2; c++, k++)
                    mma_case(ctx, &L, m, batches[k % 5], (int)(k / 5 % 2), (int)(k / 2 % 2),
                             &seed, lw);
                gptq_cu_mma_release(m);
                layer_free(&L);
            }
    gptq_emu::st().nsm = 4;
    gptq_emu::st().occupancy = 2;
    EXPECT(split_seen > 0 && whole_seen > 0, "MMA paths: %d split-K, %d whole", split_seen,
           whole_seen);
}

/* The split-K factor follows the occupancy the device reports: one SM holding two blocks
 * gives a 64-row layer two splits, at both bit widths (the 8-bit kernel needs more than
 * 48 KiB of shared memory, which the occupancy query only grants once the kernel is
 * allowed it). Run before any other MMA preparation: the allowance, once set, stays. */
static void test_mma_occupancy(gptq_ctx *ctx)
{
    uint64_t seed = 500;
    for (int32_t bits = 4; bits <= 8; bits += 4) {
        gptq_cu_mma *m = NULL;
        layer L;
        gptq_emu::st().nsm = 1;
        gptq_emu::st().occupancy = 2;
        if (layer_make(ctx, &L, bits, GPTQ_FORMAT_V2, 64, 528, 128, 0, seed++) != 0 ||
            gptq_cu_mma_prepare(ctx, nullptr, L.ql[0], &m) != GPTQ_OK) {
            EXPECT(0, "occupancy layer: %s", gptq_ctx_last_error(ctx));
            continue;
        }
        EXPECT(gptq_cu_mma_workspace(m, 1) > 0, "%d bits: 1 SM x 2 blocks gave no split-K",
               bits);
        gptq_cu_mma_release(m);
        layer_free(&L);
    }
    gptq_emu::st().nsm = 4;
    gptq_emu::st().occupancy = 2;
}

/* A device with 99 KiB of shared memory per block (sm_86, sm_89): the 8-bit kernel at
 * four m16 tiles needs 100 KiB, so 49..64 rows take two launches. */
static void test_mma_small_smem(gptq_ctx *ctx)
{
    static const int64_t batches[] = {64, 49, 48};
    uint64_t seed = 600;
    gptq_cu_mma *m = NULL;
    layer L;

    gptq_emu::st().smem_optin = 99 * 1024;
    if (layer_make(ctx, &L, 8, GPTQ_FORMAT_V1, 64, 528, 48, 1, seed++) != 0 ||
        gptq_cu_mma_prepare(ctx, nullptr, L.ql[0], &m) != GPTQ_OK) {
        EXPECT(0, "99 KiB device: %s", gptq_ctx_last_error(ctx));
    } else {
        for (int i = 0; i < 3; i++) {
            const long l0 = gptq_emu::st().launches;
            mma_case(ctx, &L, m, batches[i], i == 1, i != 1, &seed,
                     "mma 64x528 b8 gs48 act1 v1 on a 99 KiB device");
            EXPECT(gptq_emu::st().launches - l0 == (batches[i] > 48 ? 2 : 1) *
                                                      (gptq_cu_mma_workspace(m, 1) ? 2 : 1),
                   "batch %lld: %ld launches", (long long)batches[i],
                   gptq_emu::st().launches - l0);
        }
        gptq_cu_mma_release(m);
        layer_free(&L);
    }
    gptq_emu::st().smem_optin = 227 * 1024;
}

/* Layers the MMA kernel must refuse, and forward arguments it must refuse. */
static void test_mma_refusals(gptq_ctx *ctx)
{
    static const struct {
        int32_t bits, gs;
        int64_t R, C;
        const char *why;
    } bad[] = {{2, 32, 64, 256, "2 bits"},
               {3, 32, 64, 256, "3 bits"},
               {4, 32, 80, 256, "80 rows"},
               {8, 128, 37, 256, "37 rows"},
               {4, 40, 64, 240, "runs of 40 columns"},
               {4, -1, 64, 200, "one run of 200 columns"}};
    uint64_t seed = 7;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gptq_cu_mma *m = (gptq_cu_mma *)&seed; /* must be reset to NULL */
        layer L;
        if (layer_make(ctx, &L, bad[i].bits, GPTQ_FORMAT_V2, bad[i].R, bad[i].C, bad[i].gs, 0,
                       seed++) != 0) {
            EXPECT(0, "layer %s", bad[i].why);
            continue;
        }
        EXPECT(gptq_cu_mma_unsupported(L.ql[0]) != NULL, "%s: accepted", bad[i].why);
        EXPECT(gptq_cu_mma_prepare(ctx, nullptr, L.ql[0], &m) == GPTQ_ERR_NOT_SUPPORTED &&
                   m == NULL,
               "%s: prepare did not refuse", bad[i].why);
        layer_free(&L);
    }

    /* Forward: batch outside 1..64, a row stride that is not a multiple of 8, x not
     * 16-byte aligned. */
    {
        layer L;
        gptq_cu_mma *m = NULL;
        uint16_t *xp = NULL;
        float *y = NULL;
        if (layer_make(ctx, &L, 4, GPTQ_FORMAT_V2, 64, 256, 128, 0, seed++) != 0 ||
            gptq_cu_mma_prepare(ctx, nullptr, L.ql[0], &m) != GPTQ_OK ||
            cudaMalloc((void **)&xp, 65 * 264 * 2) != cudaSuccess ||
            cudaMalloc((void **)&y, 65 * 64 * 4) != cudaSuccess) {
            EXPECT(0, "refusals layer: %s", gptq_ctx_last_error(ctx));
            return;
        }
        EXPECT(gptq_cu_mma_forward(ctx, nullptr, m, (const __half *)xp, 256, 0, y, 0, NULL,
                                   NULL, NULL) == GPTQ_ERR_INVALID_ARGUMENT, "batch 0 accepted");
        EXPECT(gptq_cu_mma_forward(ctx, nullptr, m, (const __half *)xp, 256, 65, y, 0, NULL,
                                   NULL, NULL) == GPTQ_ERR_INVALID_ARGUMENT, "batch 65 accepted");
        EXPECT(gptq_cu_mma_forward(ctx, nullptr, m, (const __half *)xp, 260, 1, y, 0, NULL,
                                   NULL, NULL) == GPTQ_ERR_INVALID_ARGUMENT, "ldx 260 accepted");
        EXPECT(gptq_cu_mma_forward(ctx, nullptr, m, (const __half *)xp, 248, 1, y, 0, NULL,
                                   NULL, NULL) == GPTQ_ERR_INVALID_ARGUMENT, "ldx < cp accepted");
        EXPECT(gptq_cu_mma_forward(ctx, nullptr, m, (const __half *)(xp + 4), 256, 1, y, 0,
                                   NULL, NULL, NULL) == GPTQ_ERR_INVALID_ARGUMENT,
               "misaligned x accepted");
        gptq_cu_mma_release(m);
        cudaFree(xp);
        cudaFree(y);
        layer_free(&L);
    }
}

/* test_cuda_emu [kernels|module]: the kernel files (ctest cuda_emu), qlinear.cu through
 * the module's entry points (ctest cuda_emu_module), or both. */
int main(int argc, char **argv)
{
    gptq_ctx_options o;
    gptq_ctx *ctx = NULL;
    cu_state st;
    const char *part = argc > 1 ? argv[1] : "all";
    const bool kernels = !strcmp(part, "all") || !strcmp(part, "kernels");
    const bool module = !strcmp(part, "all") || !strcmp(part, "module");
    const bool quant_block = !strcmp(part, "all") || !strcmp(part, "quant_block");
    const bool model_ops = !strcmp(part, "all") || !strcmp(part, "model_ops");

    if (!kernels && !module && !quant_block && !model_ops) {
        fprintf(stderr, "usage: test_cuda_emu [kernels|module|quant_block|model_ops]\n");
        return 2;
    }

    gptq_ctx_options_init(&o);
    o.threads = 1;
    if (gptq_ctx_create(&o, &ctx, NULL, 0) != GPTQ_OK) {
        fprintf(stderr, "no context\n");
        return 2;
    }
    memset(&st, 0, sizeof st);
    st.ctx = ctx;

    if (kernels) {
        /* These cases hand the kernels host arrays (the GEMV's view of a host handle,
         * the MMA's bias): no pointer checks. */
        gptq_emu::st().check_ptrs = false;
        test_mma_occupancy(ctx);
        test_gemv(ctx, &st);
        test_mma(ctx);
        test_mma_small_smem(ctx);
        test_mma_refusals(ctx);
        gptq_emu::st().check_ptrs = true;
    }
    if (module)
        test_module(ctx);
    if (quant_block)
        test_quant_block(ctx);
    if (model_ops)
        test_model_ops(ctx);

    for (int i = 0; i < CU_SLOTS; i++)
        cudaFree(st.slot[i]);
    gptq_ctx_free(ctx);
    printf("cuda_emu: %d checks, %d failed; %ld launches, %ld blocks emulated; largest "
           "error / bound: cpu %.3f, gemv %.3f, mma %.3f, cublas %.3f\n",
           checks, failures, gptq_emu::st().launches, gptq_emu::st().blocks,
           worst_seen[BOUND_CPU], worst_seen[BOUND_GEMV], worst_seen[BOUND_MMA],
           worst_seen[BOUND_CUBLAS]);
    return failures ? 1 : 0;
}
