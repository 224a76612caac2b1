/*
 * src/cuda/qlinear.cu on the host emulation of CUDA (tests/cuda_emu/README.md), through
 * the module's entry points (gptq_cu_ql_prepare, _forward, _kernel_check, _bench,
 * gptq_cu_synchronize, gptq_cu_device_bandwidth) with handles made by the public API on
 * a CPU context, the module's context state from module_stubs.cpp (a stream and a cuBLAS
 * handle in pedantic mode) and cuBLAS from cublas_emu.h. Pointer checks are on: every
 * launch's pointer arguments, copies' device sides and cuBLAS's operands must be device
 * memory, so a host operand that is not staged is a fault.
 *
 * Covered: upload (the device copy byte for byte, blk_seg, the MMA layout when eligible);
 * every kernel (CUDA_GEMV, CUDA_MMA, CUDA_CUBLAS, AUTO) at 2/3/4/8 bits (MMA 4/8), with and
 * without act-order, groups -1/128/48, batch 1, 9 and 70 (two MMA chunks), bias or none,
 * x float32/float16/bfloat16, y float32/float16, host operands (staged) and device
 * operands; each output within gptq.h's bound for the kernel that ran (CUDA_CUBLAS: the
 * MMA bound), the kernel that ran told by its launches (cuBLAS: a GEMM; MMA: the gather
 * kernel and no GEMM; GEMV: neither); cuBLAS called in default math with the handle back
 * in pedantic math; device operands that are host memory refused; kernel_check refusing
 * MMA on ineligible layers with the reason; AUTO's choice by batch through the
 * benchmark's *resolved; the benchmark with graph capture and with capture refused,
 * several weight copies, no leaks.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emu_test.h"
#include "module_stubs.h"
#include "qlinear_dev.h"
#include "qlinear_mma.h"
#include "testrng.h"

/* qlinear.cu's input gather: the MMA and cuBLAS paths launch it, the GEMV path does not. */
__global__ void gather_half(const void *x, int32_t dtype, int64_t C, const int32_t *colmap,
                            int64_t ncol, int64_t ldo, int64_t batch, __half *xh);

static const char *kname(int32_t k)
{
    switch (k) {
    case GPTQ_QLINEAR_KERNEL_AUTO: return "auto";
    case GPTQ_QLINEAR_KERNEL_CUDA_GEMV: return "cuda_gemv";
    case GPTQ_QLINEAR_KERNEL_CUDA_MMA: return "cuda_mma";
    case GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS: return "cuda_cublas";
    default: return "other";
    }
}

/* AUTO as gptq.h documents it. */
static int32_t expected_kernel(int32_t k, int64_t batch, bool mma_ok)
{
    if (k != GPTQ_QLINEAR_KERNEL_AUTO)
        return k;
    if (batch <= 8)
        return GPTQ_QLINEAR_KERNEL_CUDA_GEMV;
    if (mma_ok && batch <= 256)
        return GPTQ_QLINEAR_KERNEL_CUDA_MMA;
    if (!mma_ok && batch <= 16)
        return GPTQ_QLINEAR_KERNEL_CUDA_GEMV;
    return GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS;
}

/* The kernel that ran since (gemms0, log0), from what it launched. */
static int32_t observed_kernel(const cu_state *st, long gemms0, size_t log0)
{
    const std::vector<const void *> &log = gptq_emu::st().launch_log;
    if (st->blas->gemms > gemms0)
        return GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS;
    for (size_t i = log0; i < log.size(); i++)
        if (log[i] == (const void *)gather_half)
            return GPTQ_QLINEAR_KERNEL_CUDA_MMA;
    return GPTQ_QLINEAR_KERNEL_CUDA_GEMV;
}

/* Live device allocations that are not the context's scratch buffers. */
static long live_allocations(const cu_state *st)
{
    long n = (long)gptq_emu::st().mem.size();
    for (int i = 0; i < CU_SLOTS; i++)
        n -= st->slot[i] != NULL;
    return n;
}

/* ---- upload ----------------------------------------------------------------------------- */

static void check_upload(const layer *L, int bias, const void *dev, const char *lw)
{
    const gptq_qlinear *ql = L->ql[bias];
    const gptq_cu_ql *d = (const gptq_cu_ql *)dev;
    const size_t ncodes = (size_t)(ql->ntiles * ql->nblk * ql->wpb * GPTQ__QL_ROWS);
    const size_t nparam = (size_t)(ql->ntiles * ql->nseg * GPTQ__QL_ROWS);
    bool seg_ok = true;

    EXPECT(d && d->bits == ql->bits && d->kb == ql->kb && d->wpb == ql->wpb &&
               d->R == ql->out_features && d->C == ql->in_features && d->ntiles == ql->ntiles &&
               d->nblk == ql->nblk && d->cp == ql->cp && d->nseg == ql->nseg && d->device == 0 &&
               d->sms == gptq_emu::st().nsm,
           "%s: device copy's dimensions", lw);
    if (!d)
        return;
    EXPECT(gptq_emu::is_device(d->base, d->bytes), "%s: base is not a device allocation", lw);
    EXPECT(gptq_emu::is_device(d->codes, ncodes * 4) && !memcmp(d->codes, ql->codes, ncodes * 4),
           "%s: codes", lw);
    EXPECT(gptq_emu::is_device(d->scales, nparam * 2) &&
               !memcmp(d->scales, ql->scales, nparam * 2),
           "%s: scales", lw);
    EXPECT(gptq_emu::is_device(d->zeros, nparam) && !memcmp(d->zeros, ql->zeros, nparam),
           "%s: zeros", lw);
    EXPECT(!ql->colmap == !d->colmap, "%s: colmap presence", lw);
    if (ql->colmap && d->colmap)
        EXPECT(gptq_emu::is_device(d->colmap, (size_t)ql->cp * 4) &&
                   !memcmp(d->colmap, ql->colmap, (size_t)ql->cp * 4),
               "%s: colmap", lw);
    EXPECT(!ql->bias == !d->bias, "%s: bias presence", lw);
    if (ql->bias && d->bias)
        EXPECT(gptq_emu::is_device(d->bias, (size_t)ql->ntiles * 64) &&
                   !memcmp(d->bias, ql->bias, (size_t)ql->ntiles * 64),
               "%s: bias", lw);
    EXPECT(gptq_emu::is_device(d->blk_seg, (size_t)ql->nblk * 4), "%s: blk_seg", lw);
    for (int64_t s = 0; s < ql->nseg; s++)
        for (int64_t b = ql->seg_blk[s]; b < ql->seg_blk[s + 1]; b++)
            seg_ok = seg_ok && d->blk_seg[b] == s;
    EXPECT(seg_ok, "%s: blk_seg differs from seg_blk", lw);
    /* The MMA layout exactly when the layer is eligible, else the reason. */
    const char *why = gptq_cu_mma_unsupported(ql);
    EXPECT(!why == !!d->mma && (why ? d->mma_why && !strcmp(d->mma_why, why) : !d->mma_why),
           "%s: mma %p, why %s (expected %s)", lw, d->mma, d->mma_why ? d->mma_why : "-",
           why ? why : "-");
}

/* ---- forward ------------------------------------------------------------------------------ */

struct fwd {
    int32_t kernel;
    int64_t batch;
    int bias;
    int32_t x_dtype, y_dtype;
    int device_pointers;
};

static int kernel_runs[8];

static void forward_case(gptq_ctx *ctx, cu_state *st, const layer *L, void *const devs[2],
                         const fwd &f, bool mma_ok, uint64_t *seed)
{
    const gptq_qlinear *ql = L->ql[f.bias];
    const int64_t R = L->R, C = L->C, n = f.batch * R;
    const int y_half = f.y_dtype == GPTQ_QLINEAR_DTYPE_F16;
    const size_t xs = f.x_dtype == GPTQ_QLINEAR_DTYPE_F32 ? 4 : 2, ys = y_half ? 2 : 4;
    const int32_t want = expected_kernel(f.kernel, f.batch, mma_ok);
    const int kind = want == GPTQ_QLINEAR_KERNEL_CUDA_GEMV  ? BOUND_GEMV
                     : want == GPTQ_QLINEAR_KERNEL_CUDA_MMA ? BOUND_MMA
                                                            : BOUND_CUBLAS;
    float *x = (float *)xmalloc((size_t)(f.batch * C) * sizeof(float));
    void *xe = xmalloc((size_t)(f.batch * C) * sizeof(float));
    void *y = xmalloc((size_t)n * sizeof(float));
    double *ref = (double *)xmalloc((size_t)n * sizeof(double));
    double *tol = (double *)xmalloc((size_t)n * sizeof(double));
    const long gemms0 = st->blas->gemms, faults0 = gptq_emu::st().faults;
    const size_t log0 = gptq_emu::st().launch_log.size();
    char what[256];
    int rc;

    snprintf(what, sizeof what,
             "%s %lldx%lld b%d gs%d act%d v%d batch %lld x %s y %s bias %d %s operands",
             kname(f.kernel), (long long)R, (long long)C, L->bits, L->gs, L->act, L->p.format,
             (long long)f.batch, dtype_name(f.x_dtype), y_half ? "f16" : "f32", f.bias,
             f.device_pointers ? "device" : "host");
    make_x(f.batch * C, f.x_dtype, seed, x, xe);
    reference(L, x, f.batch, f.bias, kind, ref, tol);
    if (y_half)
        widen_for_half(ref, tol, n);
    memset(y, 0xff, (size_t)n * ys);
    if (f.device_pointers) {
        void *xd = NULL, *yd = NULL;
        if (cudaMalloc(&xd, (size_t)(f.batch * C) * xs) != cudaSuccess ||
            cudaMalloc(&yd, (size_t)n * ys) != cudaSuccess ||
            cudaMemcpy(xd, xe, (size_t)(f.batch * C) * xs, cudaMemcpyHostToDevice) != cudaSuccess) {
            EXPECT(0, "%s: device operands", what);
            return;
        }
        rc = gptq_cu_ql_forward(ctx, ql, devs[f.bias], f.kernel, xd, f.x_dtype, f.batch, yd,
                                f.y_dtype, 1);
        EXPECT(rc == GPTQ_OK, "%s: status %d: %s", what, rc, gptq_ctx_last_error(ctx));
        EXPECT(gptq_cu_synchronize(ctx) == GPTQ_OK, "%s: synchronize: %s", what,
               gptq_ctx_last_error(ctx));
        EXPECT(cudaMemcpy(y, yd, (size_t)n * ys, cudaMemcpyDeviceToHost) == cudaSuccess,
               "%s: copy back", what);
        cudaFree(xd);
        cudaFree(yd);
    } else {
        rc = gptq_cu_ql_forward(ctx, ql, devs[f.bias], f.kernel, xe, f.x_dtype, f.batch, y,
                                f.y_dtype, 0);
        EXPECT(rc == GPTQ_OK, "%s: status %d: %s", what, rc, gptq_ctx_last_error(ctx));
    }
    EXPECT(cudaGetLastError() == cudaSuccess, "%s: a CUDA call failed", what);
    EXPECT(gptq_emu::st().faults == faults0, "%s: %ld emulator fault(s)", what,
           gptq_emu::st().faults - faults0);
    const int32_t ran = observed_kernel(st, gemms0, log0);
    EXPECT(ran == want, "%s: ran %s, expected %s", what, kname(ran), kname(want));
    kernel_runs[ran]++;
    if (ran == GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS)
        EXPECT(st->blas->gemm_math == CUBLAS_DEFAULT_MATH && st->blas->math == CUBLAS_PEDANTIC_MATH,
               "%s: cuBLAS math mode %d during the GEMM, %d after", what, (int)st->blas->gemm_math,
               (int)st->blas->math);
    compare(kind, what, y, y_half, ref, tol, f.batch, R);
    free(x);
    free(xe);
    free(y);
    free(ref);
    free(tol);
}

/* Refusals of one prepared handle: MMA on an ineligible layer (kernel_check and forward,
 * with the reason), device operands in host memory. */
static void refusals(gptq_ctx *ctx, const layer *L, void *dev, const char *lw)
{
    const gptq_qlinear *ql = L->ql[0];
    const char *why = gptq_cu_mma_unsupported(ql);
    const int64_t C = L->C, R = L->R;
    float *xh = (float *)xmalloc((size_t)C * 4), *yh = (float *)xmalloc((size_t)R * 4);
    void *xd = NULL, *yd = NULL;
    int rc;

    EXPECT(gptq_cu_ql_kernel_check(ctx, dev, GPTQ_QLINEAR_KERNEL_CUDA_GEMV) == GPTQ_OK &&
               gptq_cu_ql_kernel_check(ctx, dev, GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS) == GPTQ_OK,
           "%s: kernel_check refused GEMV or cuBLAS: %s", lw, gptq_ctx_last_error(ctx));
    rc = gptq_cu_ql_kernel_check(ctx, dev, GPTQ_QLINEAR_KERNEL_CUDA_MMA);
    if (why) {
        EXPECT(rc == GPTQ_ERR_NOT_SUPPORTED && strstr(gptq_ctx_last_error(ctx), why),
               "%s: kernel_check(MMA): %d: %s (expected the reason: %s)", lw, rc,
               gptq_ctx_last_error(ctx), why);
        for (int i = 0; i < C; i++)
            xh[i] = 0.5f;
        rc = gptq_cu_ql_forward(ctx, ql, dev, GPTQ_QLINEAR_KERNEL_CUDA_MMA, xh,
                                GPTQ_QLINEAR_DTYPE_F32, 1, yh, GPTQ_QLINEAR_DTYPE_F32, 0);
        EXPECT(rc == GPTQ_ERR_NOT_SUPPORTED && strstr(gptq_ctx_last_error(ctx), why),
               "%s: forward(MMA): %d: %s", lw, rc, gptq_ctx_last_error(ctx));
    } else {
        EXPECT(rc == GPTQ_OK, "%s: kernel_check(MMA) on an eligible layer: %s", lw,
               gptq_ctx_last_error(ctx));
    }
    /* Device operands: x, then y, in host memory; then managed memory, accepted. */
    if (cudaMalloc(&xd, (size_t)C * 4) != cudaSuccess || cudaMalloc(&yd, (size_t)R * 4) != cudaSuccess) {
        EXPECT(0, "%s: cudaMalloc", lw);
        return;
    }
    cudaMemset(xd, 0, (size_t)C * 4);
    rc = gptq_cu_ql_forward(ctx, ql, dev, GPTQ_QLINEAR_KERNEL_CUDA_GEMV, xh,
                            GPTQ_QLINEAR_DTYPE_F32, 1, yd, GPTQ_QLINEAR_DTYPE_F32, 1);
    EXPECT(rc == GPTQ_ERR_INVALID_ARGUMENT && strstr(gptq_ctx_last_error(ctx), "x is not device"),
           "%s: host x as a device operand: %d: %s", lw, rc, gptq_ctx_last_error(ctx));
    rc = gptq_cu_ql_forward(ctx, ql, dev, GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS, xd,
                            GPTQ_QLINEAR_DTYPE_F32, 1, yh, GPTQ_QLINEAR_DTYPE_F32, 1);
    EXPECT(rc == GPTQ_ERR_INVALID_ARGUMENT && strstr(gptq_ctx_last_error(ctx), "y is not device"),
           "%s: host y as a device operand: %d: %s", lw, rc, gptq_ctx_last_error(ctx));
    cudaFree(yd);
    yd = NULL;
    if (cudaMallocManaged(&yd, (size_t)R * 4) == cudaSuccess) {
        rc = gptq_cu_ql_forward(ctx, ql, dev, GPTQ_QLINEAR_KERNEL_CUDA_GEMV, xd,
                                GPTQ_QLINEAR_DTYPE_F32, 1, yd, GPTQ_QLINEAR_DTYPE_F32, 1);
        EXPECT(rc == GPTQ_OK && gptq_cu_synchronize(ctx) == GPTQ_OK && ((float *)yd)[0] == 0.0f,
               "%s: managed y: %d: %s", lw, rc, gptq_ctx_last_error(ctx));
    }
    cudaFree(xd);
    cudaFree(yd);
    free(xh);
    free(yh);
}

static void test_forward(gptq_ctx *ctx, cu_state *st)
{
    static const int32_t bits[] = {2, 3, 4, 8};
    static const int32_t gss[] = {-1, 128, 48};
    static const int32_t kernels[] = {GPTQ_QLINEAR_KERNEL_CUDA_GEMV, GPTQ_QLINEAR_KERNEL_CUDA_MMA,
                                      GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS, GPTQ_QLINEAR_KERNEL_AUTO};
    static const int64_t batches[] = {1, 9, 70};
    uint64_t seed = 2000;
    unsigned k = 0, nl = 0;
    int eligible = 0, ineligible = 0;

    for (size_t b = 0; b < 4; b++)
        for (size_t g = 0; g < 3; g++)
            for (int act = 0; act <= 1; act++) {
                /* 4 and 8 bits: 64 x 256, eligible for MMA; 2 and 3 bits: a partial tile
                 * and columns that fill no block (colmap with padding). */
                const bool wide = bits[b] >= 4;
                const int64_t R = wide ? 64 : 37 + 16 * (int64_t)act, C = wide ? 256 : 203;
                void *devs[2] = {NULL, NULL};
                char lw[160];
                layer L;
                if (layer_make(ctx, &L, bits[b], GPTQ_FORMAT_V1 + (int32_t)(nl++ % 2), R, C,
                               gss[g], act, seed++) != 0) {
                    EXPECT(0, "layer b%d gs%d act%d", bits[b], gss[g], act);
                    continue;
                }
                snprintf(lw, sizeof lw, "%lldx%lld b%d gs%d act%d v%d", (long long)R,
                         (long long)C, bits[b], gss[g], act, L.p.format);
                for (int bias = 0; bias < 2; bias++) {
                    const int rc = gptq_cu_ql_prepare(ctx, L.ql[bias], &devs[bias]);
                    EXPECT(rc == GPTQ_OK, "%s: prepare: %s", lw, gptq_ctx_last_error(ctx));
                    check_upload(&L, bias, devs[bias], lw);
                }
                if (!devs[0] || !devs[1]) {
                    gptq_cu_ql_release(devs[0]);
                    gptq_cu_ql_release(devs[1]);
                    layer_free(&L);
                    continue;
                }
                const bool mma_ok = ((const gptq_cu_ql *)devs[0])->mma != NULL;
                EXPECT(mma_ok == wide, "%s: MMA eligibility %d", lw, (int)mma_ok);
                (mma_ok ? eligible : ineligible)++;
                refusals(ctx, &L, devs[0], lw);
                for (size_t ki = 0; ki < 4; ki++)
                    for (size_t bi = 0; bi < 3; bi++) {
                        /* The expensive emulated paths (GEMV and MMA over 70 rows) on every
                         * other layer. */
                        if (batches[bi] == 70 && kernels[ki] != GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS &&
                            (nl + ki) % 2)
                            continue;
                        if (kernels[ki] == GPTQ_QLINEAR_KERNEL_CUDA_MMA && !mma_ok)
                            continue;
                        fwd f;
                        f.kernel = kernels[ki];
                        f.batch = batches[bi];
                        f.bias = (int)(k % 2);
                        f.x_dtype = (int32_t)(k / 2 % 3);
                        f.y_dtype = (int32_t)(k / 6 % 2);
                        f.device_pointers = (int)((k + k / 12) % 2);
                        k++;
                        forward_case(ctx, st, &L, devs, f, mma_ok, &seed);
                    }
                gptq_cu_ql_release(devs[0]);
                gptq_cu_ql_release(devs[1]);
                layer_free(&L);
            }

    /* A 4-bit layer the MMA kernel refuses (runs of 40 columns): AUTO at 9..16 rows takes
     * the GEMV, beyond it cuBLAS. */
    {
        layer L;
        void *devs[2] = {NULL, NULL};
        if (layer_make(ctx, &L, 4, GPTQ_FORMAT_V2, 64, 240, 40, 1, seed++) != 0 ||
            gptq_cu_ql_prepare(ctx, L.ql[0], &devs[0]) != GPTQ_OK ||
            gptq_cu_ql_prepare(ctx, L.ql[1], &devs[1]) != GPTQ_OK) {
            EXPECT(0, "4-bit gs40 layer: %s", gptq_ctx_last_error(ctx));
        } else {
            ineligible++;
            check_upload(&L, 1, devs[1], "64x240 b4 gs40 act1");
            refusals(ctx, &L, devs[0], "64x240 b4 gs40 act1");
            static const int64_t bs[] = {9, 16, 17};
            for (int i = 0; i < 3; i++, k++) {
                fwd f = {GPTQ_QLINEAR_KERNEL_AUTO, bs[i], i % 2, (int32_t)(i % 3), i == 2, i % 2};
                forward_case(ctx, st, &L, devs, f, false, &seed);
            }
        }
        gptq_cu_ql_release(devs[0]);
        gptq_cu_ql_release(devs[1]);
        layer_free(&L);
    }
    EXPECT(eligible > 0 && ineligible > 0 && kernel_runs[GPTQ_QLINEAR_KERNEL_CUDA_GEMV] > 0 &&
               kernel_runs[GPTQ_QLINEAR_KERNEL_CUDA_MMA] > 0 &&
               kernel_runs[GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS] > 0,
           "coverage: %d eligible, %d ineligible layers; runs: gemv %d, mma %d, cublas %d",
           eligible, ineligible, kernel_runs[GPTQ_QLINEAR_KERNEL_CUDA_GEMV],
           kernel_runs[GPTQ_QLINEAR_KERNEL_CUDA_MMA], kernel_runs[GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS]);
}

/* ---- benchmark ----------------------------------------------------------------------------- */

static void bench_case(gptq_ctx *ctx, cu_state *st, const layer *L, void *dev, int32_t kernel,
                       int64_t batch, bool fp16, int32_t want, int want_status, const char *lw)
{
    gptq_emu::state &S = gptq_emu::st();
    const long graphs0 = S.graph_launches, inval0 = S.captures_invalidated, faults0 = S.faults;
    const long live0 = live_allocations(st);
    const long gemms0 = st->blas->gemms;
    int32_t resolved = -1;
    double sec = -1.0, fsec = -1.0;
    int rc;

    rc = gptq_cu_ql_bench(ctx, L->ql[0], dev, kernel, batch, 2, &resolved, &sec,
                          fp16 ? &fsec : NULL);
    EXPECT(resolved == want, "%s: bench %s batch %lld resolved %s, expected %s", lw,
           kname(kernel), (long long)batch, kname(resolved), kname(want));
    EXPECT(rc == want_status, "%s: bench %s batch %lld: status %d: %s", lw, kname(kernel),
           (long long)batch, rc, gptq_ctx_last_error(ctx));
    EXPECT(live_allocations(st) == live0, "%s: bench leaked %ld device allocation(s)", lw,
           live_allocations(st) - live0);
    EXPECT(S.faults == faults0 && S.captures_invalidated == inval0,
           "%s: bench: %ld fault(s), %ld capture(s) invalidated", lw, S.faults - faults0,
           S.captures_invalidated - inval0);
    if (rc != GPTQ_OK)
        return;
    EXPECT(sec > 0.0 && (!fp16 || fsec > 0.0), "%s: bench times %g, %g", lw, sec, fsec);
    /* Captured: an untimed and a timed launch of each graph; refused: none. */
    EXPECT(S.graph_launches - graphs0 == (S.refuse_capture ? 0 : fp16 ? 4 : 2),
           "%s: %ld graph launches (capture %s)", lw, S.graph_launches - graphs0,
           S.refuse_capture ? "refused" : "allowed");
    EXPECT(st->blas->math == CUBLAS_PEDANTIC_MATH, "%s: bench left math mode %d", lw,
           (int)st->blas->math);
    if (fp16)
        EXPECT(st->blas->gemms > gemms0 && st->blas->gemm_math == CUBLAS_DEFAULT_MATH,
               "%s: the float16 baseline's GEMMs", lw);
}

static void test_bench(gptq_ctx *ctx, cu_state *st)
{
    const int32_t AUTO = GPTQ_QLINEAR_KERNEL_AUTO, GEMV = GPTQ_QLINEAR_KERNEL_CUDA_GEMV,
                  MMA = GPTQ_QLINEAR_KERNEL_CUDA_MMA, CUBLAS = GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS;
    layer E, N;
    void *de = NULL, *dn = NULL;
    uint64_t seed = 3000;

    if (layer_make(ctx, &E, 4, GPTQ_FORMAT_V2, 64, 128, 64, 0, seed++) != 0 ||
        layer_make(ctx, &N, 3, GPTQ_FORMAT_V1, 37, 96, 32, 1, seed++) != 0 ||
        gptq_cu_ql_prepare(ctx, E.ql[0], &de) != GPTQ_OK ||
        gptq_cu_ql_prepare(ctx, N.ql[0], &dn) != GPTQ_OK) {
        EXPECT(0, "bench layers: %s", gptq_ctx_last_error(ctx));
        return;
    }
    EXPECT(((const gptq_cu_ql *)de)->mma && !((const gptq_cu_ql *)dn)->mma,
           "bench layers: eligibility");
    /* One weight copy (no L2), except where said. */
    gptq_emu::st().l2_bytes = 0;
    bench_case(ctx, st, &E, de, AUTO, 1, false, GEMV, GPTQ_OK, "eligible");
    bench_case(ctx, st, &E, de, AUTO, 8, false, GEMV, GPTQ_OK, "eligible");
    bench_case(ctx, st, &E, de, AUTO, 9, false, MMA, GPTQ_OK, "eligible");
    bench_case(ctx, st, &E, de, AUTO, 256, false, MMA, GPTQ_OK, "eligible");
    bench_case(ctx, st, &E, de, AUTO, 257, false, CUBLAS, GPTQ_OK, "eligible");
    bench_case(ctx, st, &N, dn, AUTO, 8, false, GEMV, GPTQ_OK, "ineligible");
    bench_case(ctx, st, &N, dn, AUTO, 16, false, GEMV, GPTQ_OK, "ineligible");
    bench_case(ctx, st, &N, dn, AUTO, 17, false, CUBLAS, GPTQ_OK, "ineligible");
    bench_case(ctx, st, &N, dn, MMA, 9, false, MMA, GPTQ_ERR_NOT_SUPPORTED, "ineligible");
    /* Forced kernels with the float16 baseline; three weight copies (2 L2 / copy + 1). */
    gptq_emu::st().l2_bytes = (int)(((const gptq_cu_ql *)de)->bytes +
                                    (size_t)(64 * ((const gptq_cu_ql *)de)->cp) * 4 / 8);
    bench_case(ctx, st, &E, de, MMA, 3, true, MMA, GPTQ_OK, "eligible, 3 copies");
    gptq_emu::st().l2_bytes = 0;
    bench_case(ctx, st, &E, de, GEMV, 20, true, GEMV, GPTQ_OK, "eligible");
    bench_case(ctx, st, &N, dn, CUBLAS, 2, true, CUBLAS, GPTQ_OK, "ineligible");
    /* A runtime that refuses capture: the calls are timed one by one. */
    gptq_emu::st().refuse_capture = true;
    bench_case(ctx, st, &N, dn, AUTO, 3, true, GEMV, GPTQ_OK, "ineligible, no capture");
    bench_case(ctx, st, &E, de, CUBLAS, 5, false, CUBLAS, GPTQ_OK, "eligible, no capture");
    gptq_emu::st().refuse_capture = false;
    gptq_emu::st().l2_bytes = 50 * 1024 * 1024;
    gptq_cu_ql_release(de);
    gptq_cu_ql_release(dn);
    layer_free(&E);
    layer_free(&N);
}

/* ---- the cuBLAS stand-in itself ---------------------------------------------------------- */

/* cublasGemmEx in every transpose combination on padded leading dimensions, float16 A/B
 * (small integers: every sum exact) into float32 C with beta 0 and into float16 C with
 * beta 1, against the column-major definition; the argument checks. */
static void test_gemm_standin(cu_state *st)
{
    const int m = 5, n = 3, k = 7, lda = 9, ldb = 8, ldc = 6;
    uint16_t *A, *B;
    float *C;
    uint16_t *Ch;
    const float one = 1.0f, zero = 0.0f;
    if (cudaMalloc(&A, (size_t)lda * 9 * 2) != cudaSuccess ||
        cudaMalloc(&B, (size_t)ldb * 9 * 2) != cudaSuccess ||
        cudaMalloc(&C, (size_t)ldc * n * 4) != cudaSuccess ||
        cudaMalloc(&Ch, (size_t)ldc * n * 2) != cudaSuccess) {
        EXPECT(0, "gemm stand-in: cudaMalloc");
        return;
    }
    for (int i = 0; i < lda * 9; i++)
        A[i] = gptq_emu_d2h((double)(i % 7 - 3));
    for (int i = 0; i < ldb * 9; i++)
        B[i] = gptq_emu_d2h((double)(i % 5 - 2));
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            const cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                    ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
            bool ok = true;
            for (int i = 0; i < ldc * n; i++)
                Ch[i] = gptq_emu_d2h(1.0);
            EXPECT(cublasGemmEx(st->blas, oa, ob, m, n, k, &one, A, CUDA_R_16F, lda, B, CUDA_R_16F,
                                ldb, &zero, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS &&
                       cublasGemmEx(st->blas, oa, ob, m, n, k, &one, A, CUDA_R_16F, lda, B,
                                    CUDA_R_16F, ldb, &one, Ch, CUDA_R_16F, ldc,
                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS,
                   "gemm stand-in %d%d: status", ta, tb);
            for (int j = 0; j < n; j++)
                for (int i = 0; i < m; i++) {
                    double r = 0.0;
                    for (int p = 0; p < k; p++)
                        r += gptq_emu_h2d(A[ta ? p + i * lda : i + p * lda]) *
                             gptq_emu_h2d(B[tb ? j + p * ldb : p + j * ldb]);
                    ok = ok && C[i + j * ldc] == r && gptq_emu_h2d(Ch[i + j * ldc]) == r + 1.0;
                }
            EXPECT(ok, "gemm stand-in transa %d transb %d: wrong product", ta, tb);
        }
    EXPECT(cublasGemmEx(st->blas, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, A, CUDA_R_16F, m - 1, B,
                        CUDA_R_16F, ldb, &zero, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE &&
               cublasGemmEx(st->blas, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, A, CUDA_R_16F, lda,
                            B, CUDA_R_16F, ldb, &zero, C, CUDA_R_8I, ldc, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_NOT_SUPPORTED,
           "gemm stand-in: argument checks");
    cudaFree(A);
    cudaFree(B);
    cudaFree(C);
    cudaFree(Ch);
}

/* ---- the rest ----------------------------------------------------------------------------- */

static void test_misc(gptq_ctx *ctx)
{
    double bw = 0.0;
    gptq_ctx_options o;
    gptq_ctx *other = NULL;
    layer L;
    void *dev = NULL;
    float x[64], y[16];

    EXPECT(gptq_cu_device_bandwidth(ctx, &bw) == GPTQ_OK &&
               bw == 2.0 * gptq_emu::st().mem_clock_khz * 1e3 * gptq_emu::st().bus_bits / 8.0,
           "device bandwidth %g", bw);
    /* A context the module did not initialise. */
    gptq_ctx_options_init(&o);
    o.threads = 1;
    if (gptq_ctx_create(&o, &other, NULL, 0) != GPTQ_OK ||
        layer_make(ctx, &L, 4, GPTQ_FORMAT_V2, 16, 64, -1, 0, 77) != 0 ||
        gptq_cu_ql_prepare(ctx, L.ql[0], &dev) != GPTQ_OK) {
        EXPECT(0, "misc: %s", gptq_ctx_last_error(ctx));
        return;
    }
    memset(x, 0, sizeof x);
    EXPECT(gptq_cu_ql_forward(other, L.ql[0], dev, GPTQ_QLINEAR_KERNEL_CUDA_GEMV, x,
                              GPTQ_QLINEAR_DTYPE_F32, 1, y, GPTQ_QLINEAR_DTYPE_F32,
                              0) == GPTQ_ERR_INTERNAL,
           "forward on an unknown context");
    void *none = &L;
    EXPECT(gptq_cu_ql_prepare(other, L.ql[0], &none) == GPTQ_ERR_INTERNAL && none == NULL,
           "prepare on an unknown context");
    gptq_cu_ql_release(dev);
    layer_free(&L);
    gptq_ctx_free(other);
}

void test_module(gptq_ctx *ctx)
{
    cu_state *st = gptq_emu_module_open(ctx);
    const long live0 = (long)gptq_emu::st().mem.size();

    gptq_emu::st().check_ptrs = true;
    gptq_emu::st().log_launches = true;
    gptq_emu::st().nsm = 4;
    gptq_emu::st().occupancy = 2;
    test_gemm_standin(st);
    test_forward(ctx, st);
    test_bench(ctx, st);
    test_misc(ctx);
    gptq_emu_module_close();
    EXPECT((long)gptq_emu::st().mem.size() == live0, "%ld device allocation(s) leaked",
           (long)gptq_emu::st().mem.size() - live0);
    EXPECT(gptq_emu::st().faults == 0, "%ld emulator fault(s)", gptq_emu::st().faults);
    gptq_emu::st().log_launches = false;
    gptq_emu::st().launch_log.clear();
}
