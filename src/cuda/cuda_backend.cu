/*
 * The CUDA backend: cuBLAS for SYRK/GEMM, cuSOLVER for the Cholesky family, a fused
 * kernel for the in-block loop (quant_block.cu). One stream, one cuBLAS and one
 * cuSOLVER handle per context, all on the context's device (gptq_ctx_options.device).
 *
 * Operands: the core hands every primitive host memory today (it never calls
 * buf_alloc), so each primitive stages what it reads into device scratch, runs, and
 * copies back what it wrote; an operand already in device memory (buf_alloc) is used in
 * place. Every primitive ends with the stream synchronised, so the host may read the
 * results at once.
 *
 * Numerics: float32 throughout, cuBLAS in CUBLAS_PEDANTIC_MATH (no TF32, no reduced
 * precision reductions). SYRK/GEMM/Cholesky sum in another order than OpenBLAS/LAPACK,
 * as a different thread count does on the CPU; the quantizer kernel is bit exact.
 * Exception, on request: a context created with GPTQ_MATH_TF32 runs SYRK and GEMM in
 * CUBLAS_TF32_TENSOR_OP_MATH (tf32_begin/tf32_end), every other call stays pedantic.
 *
 * State: the vtable's primitives receive the context but not the state init() made, and
 * the host services offer no way to fetch it; so the module keeps a list of its live
 * contexts (ctx -> state) under a mutex. That list is its only mutable global.
 */
#include <pthread.h>
#include <stdlib.h>

#include "cuda_internal.h"

const gptq_host_services *gptq_cu_host;

static pthread_mutex_t states_lock = PTHREAD_MUTEX_INITIALIZER;
static cu_state *states;

/* ---- errors ------------------------------------------------------------------------ */

int gptq_cu_fail(gptq_ctx *ctx, cudaError_t e, const char *call)
{
    int status = e == cudaErrorMemoryAllocation ? GPTQ_ERR_OUT_OF_MEMORY : GPTQ_ERR_DEVICE;
    return gptq_cu_host->fail(ctx, status, "CUDA backend: %s failed: %s (%d): %s", call,
                              cudaGetErrorName(e), (int)e, cudaGetErrorString(e));
}

static int solver_fail(gptq_ctx *ctx, cusolverStatus_t s, const char *call)
{
    int status = s == CUSOLVER_STATUS_ALLOC_FAILED ? GPTQ_ERR_OUT_OF_MEMORY : GPTQ_ERR_DEVICE;
    return gptq_cu_host->fail(ctx, status, "CUDA backend: %s failed: cusolverStatus_t %d", call,
                              (int)s);
}

#define SOLVER_TRY(ctx, call)                              \
    do {                                                   \
        cusolverStatus_t cu_s_ = (call);                   \
        if (cu_s_ != CUSOLVER_STATUS_SUCCESS)              \
            return solver_fail((ctx), cu_s_, #call);       \
    } while (0)

/* ---- lifetime and the context list -------------------------------------------------- */

cu_state *gptq_cu_state(gptq_ctx *ctx, int *status)
{
    cu_state *st;
    cudaError_t e;

    pthread_mutex_lock(&states_lock);
    for (st = states; st && st->ctx != ctx; st = st->next)
        ;
    pthread_mutex_unlock(&states_lock);
    if (!st) {
        *status = gptq_cu_host->fail(ctx, GPTQ_ERR_INTERNAL,
                                     "CUDA backend: called on a context it did not initialise");
        return NULL;
    }
    /* Contexts on different devices may share a host thread: select ours each time. */
    e = cudaSetDevice(st->device);
    if (e != cudaSuccess) {
        *status = gptq_cu_fail(ctx, e, "cudaSetDevice");
        return NULL;
    }
    return st;
}

static void release(cu_state *st)
{
    cudaSetDevice(st->device);
    if (st->stream)
        cudaStreamSynchronize(st->stream);
    for (int i = 0; i < CU_SLOTS; i++)
        cudaFree(st->slot[i]);
    cudaFree(st->d_info);
    if (st->solver)
        cusolverDnDestroy(st->solver);
    if (st->blas)
        cublasDestroy(st->blas);
    if (st->stream)
        cudaStreamDestroy(st->stream);
    free(st);
}

/* Everything init() sets up after the device check; a failure leaves `st` for release. */
static int open_handles(gptq_ctx *ctx, cu_state *st)
{
    CU_TRY(ctx, cudaSetDevice(st->device));
    CU_TRY(ctx, cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking));
    CU_BLAS_TRY(ctx, cublasCreate(&st->blas));
    CU_BLAS_TRY(ctx, cublasSetStream(st->blas, st->stream));
    /* float32 as the CPU backend: no TF32 tensor cores, no reduced-precision sums. */
    CU_BLAS_TRY(ctx, cublasSetMathMode(st->blas, CUBLAS_PEDANTIC_MATH));
    SOLVER_TRY(ctx, cusolverDnCreate(&st->solver));
    SOLVER_TRY(ctx, cusolverDnSetStream(st->solver, st->stream));
    CU_TRY(ctx, cudaMalloc((void **)&st->d_info, sizeof(int)));
    return GPTQ_OK;
}

static int cu_init(gptq_ctx *ctx, void **state)
{
    const int32_t dev = gptq_cu_host->device(ctx);
    int count = 0, major = 0, minor = 0;
    cudaError_t e;
    cu_state *st;
    int rc;

    *state = NULL;
    e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_DEVICE,
                                  "CUDA backend: no usable GPU: cudaGetDeviceCount failed: %s "
                                  "(%d): %s",
                                  cudaGetErrorName(e), (int)e, cudaGetErrorString(e));
    if (count < 1)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_DEVICE,
                                  "CUDA backend: no usable GPU: the CUDA runtime reports no "
                                  "device");
    if (dev < 0 || dev >= count)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_DEVICE,
                                  "CUDA backend: device %d requested, but there %s %d CUDA "
                                  "device%s (0..%d)",
                                  (int)dev, count == 1 ? "is" : "are", count,
                                  count == 1 ? "" : "s", count - 1);
    /* The module carries code for sm_80 and later only (CMAKE_CUDA_ARCHITECTURES). */
    e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    if (e == cudaSuccess)
        e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    if (e != cudaSuccess)
        return gptq_cu_fail(ctx, e, "cudaDeviceGetAttribute(compute capability)");
    if (major < 8)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_DEVICE,
                                  "CUDA backend: device %d has compute capability %d.%d; the "
                                  "module needs 8.0 or later (Ampere, Ada, Hopper)",
                                  (int)dev, major, minor);
    st = (cu_state *)calloc(1, sizeof *st);
    if (!st)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_OUT_OF_MEMORY,
                                  "CUDA backend: out of host memory for the context state");
    st->ctx = ctx;
    st->device = dev;
    rc = open_handles(ctx, st);
    if (rc != GPTQ_OK) {
        release(st);
        return rc;
    }
    pthread_mutex_lock(&states_lock);
    st->next = states;
    states = st;
    pthread_mutex_unlock(&states_lock);
    *state = st;
    return GPTQ_OK;
}

static void cu_fini(void *state)
{
    cu_state *st = (cu_state *)state, **p;
    if (!st)
        return;
    pthread_mutex_lock(&states_lock);
    for (p = &states; *p && *p != st; p = &(*p)->next)
        ;
    if (*p)
        *p = st->next;
    pthread_mutex_unlock(&states_lock);
    release(st);
}

/* ---- memory ----------------------------------------------------------------------------- */

void *gptq_cu_scratch(cu_state *st, int slot, size_t bytes, int *status)
{
    cudaError_t e;
    size_t want;

    if (bytes <= st->slot_bytes[slot] && st->slot[slot])
        return st->slot[slot];
    /* Grow by half again, so a sequence of slowly growing requests reallocates rarely.
     * Work queued on the stream may still read the old buffer (the forward passes of
     * qlinear.cu return before their kernels finish): wait for it before the free. */
    want = bytes + bytes / 2;
    if (want < 256)
        want = 256;
    if (st->slot[slot]) {
        e = cudaStreamSynchronize(st->stream);
        if (e != cudaSuccess) {
            *status = gptq_cu_fail(st->ctx, e, "cudaStreamSynchronize (before growing scratch)");
            return NULL;
        }
    }
    cudaFree(st->slot[slot]);
    st->slot[slot] = NULL;
    st->slot_bytes[slot] = 0;
    e = cudaMalloc(&st->slot[slot], want);
    if (e != cudaSuccess) {
        st->slot[slot] = NULL;
        cudaGetLastError(); /* reset the runtime's last-error state */
        *status = gptq_cu_host->fail(st->ctx, GPTQ_ERR_OUT_OF_MEMORY,
                                     "CUDA backend: cudaMalloc of %zu bytes of scratch failed: "
                                     "%s",
                                     want, cudaGetErrorString(e));
        return NULL;
    }
    st->slot_bytes[slot] = want;
    return st->slot[slot];
}

static void *cu_buf_alloc(gptq_ctx *ctx, size_t bytes)
{
    int status;
    void *p = NULL;
    cudaError_t e;
    if (!gptq_cu_state(ctx, &status))
        return NULL;
    e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        cudaGetLastError();
        gptq_cu_host->fail(ctx, GPTQ_ERR_OUT_OF_MEMORY,
                           "CUDA backend: cudaMalloc of %zu bytes failed: %s", bytes,
                           cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cu_buf_free(gptq_ctx *ctx, void *p)
{
    int status;
    if (p && gptq_cu_state(ctx, &status))
        cudaFree(p);
}

static int cu_copy(gptq_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    int status;
    cu_state *st = gptq_cu_state(ctx, &status);
    if (!st)
        return status;
    if (!bytes)
        return GPTQ_OK;
    /* cudaMemcpyDefault: the runtime tells host from device memory (unified addressing). */
    CU_TRY(ctx, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, st->stream));
    CU_TRY(ctx, cudaStreamSynchronize(st->stream));
    return GPTQ_OK;
}

/* ---- staging ------------------------------------------------------------------------ */

/* A row-major float matrix operand: rows x cols at `host` with leading dimension ld. */
typedef struct operand {
    float *dev;   /* where the device reads/writes it */
    int64_t ld;   /* leading dimension there */
    int staged;   /* 1: dev is scratch, copy back to the caller's memory if written */
} operand;

static int stage(cu_state *st, int slot, const float *p, int64_t rows, int64_t cols, int64_t ld,
                 int copy_in, operand *op)
{
    int status = GPTQ_OK;
    if (gptq_cu_is_device(p)) {
        op->dev = (float *)p;
        op->ld = ld;
        op->staged = 0;
        return GPTQ_OK;
    }
    op->ld = cols > 0 ? cols : 1;
    op->staged = 1;
    op->dev = (float *)gptq_cu_scratch(st, slot, (size_t)(rows * op->ld) * sizeof(float), &status);
    if (!op->dev)
        return status;
    if (copy_in && rows > 0 && cols > 0)
        CU_TRY(st->ctx, cudaMemcpy2DAsync(op->dev, (size_t)op->ld * sizeof(float), p,
                                          (size_t)ld * sizeof(float), (size_t)cols * sizeof(float),
                                          (size_t)rows, cudaMemcpyHostToDevice, st->stream));
    return GPTQ_OK;
}

/* Copy a written operand back (if staged) and wait for the stream. */
static int unstage(cu_state *st, float *p, int64_t rows, int64_t cols, int64_t ld,
                   const operand *op)
{
    if (op && op->staged && rows > 0 && cols > 0)
        CU_TRY(st->ctx, cudaMemcpy2DAsync(p, (size_t)ld * sizeof(float), op->dev,
                                          (size_t)op->ld * sizeof(float),
                                          (size_t)cols * sizeof(float), (size_t)rows,
                                          cudaMemcpyDeviceToHost, st->stream));
    CU_TRY(st->ctx, cudaStreamSynchronize(st->stream));
    return GPTQ_OK;
}

static int dims_ok(gptq_ctx *ctx, int64_t a, int64_t b, int64_t c)
{
    /* The cuBLAS/cuSOLVER entry points used here take int dimensions. */
    if (a > INT32_MAX || b > INT32_MAX || c > INT32_MAX)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_NOT_SUPPORTED,
                                  "CUDA backend: matrix dimension above 2^31-1 is not supported");
    return GPTQ_OK;
}

/* ---- SYRK, GEMM ----------------------------------------------------------------------- */

/* GPTQ_MATH_TF32 (include/gptq/gptq.h): the handle's math mode is switched for one SYRK
 * or GEMM and put back to CUBLAS_PEDANTIC_MATH right after, even when the call failed,
 * so the Cholesky family and the next context's call never see TF32. The mode is read
 * by cuBLAS when the call is enqueued, so no stream synchronisation is needed. */
static int tf32_begin(gptq_ctx *ctx, cu_state *st, int *on)
{
    *on = gptq_cu_host->math(ctx) == GPTQ_MATH_TF32;
    if (*on)
        CU_BLAS_TRY(ctx, cublasSetMathMode(st->blas, CUBLAS_TF32_TENSOR_OP_MATH));
    return GPTQ_OK;
}

/* Restore the pedantic mode; `rc` is the status of the call in between, kept if it failed. */
static int tf32_end(gptq_ctx *ctx, cu_state *st, int on, int rc)
{
    cublasStatus_t s;
    if (!on)
        return rc;
    s = cublasSetMathMode(st->blas, CUBLAS_PEDANTIC_MATH);
    if (rc == GPTQ_OK && s != CUBLAS_STATUS_SUCCESS)
        return gptq_cu_blas_fail(ctx, s, "cublasSetMathMode(CUBLAS_PEDANTIC_MATH)");
    return rc;
}

/* h[i][j] = h[j][i] for i > j (row-major): copy the upper triangle into the lower one,
 * through a 32 x 32 shared tile so both the reads and the writes are coalesced. */
__global__ void mirror_upper_kernel(float *h, int64_t n)
{
    __shared__ float tile[32][33];
    const int64_t bi = blockIdx.y, bj = blockIdx.x; /* destination tile (rows bi, cols bj) */
    if (bj > bi)
        return;
    for (int k = threadIdx.y; k < 32; k += blockDim.y) {
        int64_t r = bj * 32 + k, c = bi * 32 + threadIdx.x; /* source: the transposed tile */
        if (r < n && c < n)
            tile[k][threadIdx.x] = h[r * n + c];
    }
    __syncthreads();
    for (int k = threadIdx.y; k < 32; k += blockDim.y) {
        int64_t r = bi * 32 + k, c = bj * 32 + threadIdx.x;
        if (r < n && c < n && c < r)
            h[r * n + c] = tile[threadIdx.x][k];
    }
}

static int cu_syrk(gptq_ctx *ctx, int64_t n, int64_t rows, const float *x, float beta, float *h)
{
    const float one = 1.0f;
    int status, tf32;
    cu_state *st = gptq_cu_state(ctx, &status);
    operand ox, oh;
    int64_t tiles;

    if (!st)
        return status;
    GPTQ_TRY(dims_ok(ctx, n, rows, 1));
    if (n == 0)
        return GPTQ_OK;
    GPTQ_TRY(stage(st, CU_SLOT_A, x, rows, n, n, 1, &ox));
    /* beta == 0: cuBLAS does not read h (as BLAS), so there is nothing to upload. */
    GPTQ_TRY(stage(st, CU_SLOT_C, h, n, n, n, beta != 0.0f, &oh));
    /* Row-major x [rows, n] is the column-major n x rows matrix A = x^T, so A A^T = x^T x.
     * The column-major lower triangle is the row-major upper one the CPU computes. */
    GPTQ_TRY(tf32_begin(ctx, st, &tf32));
    status = GPTQ_OK;
    {
        cublasStatus_t s = cublasSsyrk(st->blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, (int)n,
                                       (int)rows, &one, ox.dev, (int)ox.ld, &beta, oh.dev,
                                       (int)oh.ld);
        if (s != CUBLAS_STATUS_SUCCESS)
            status = gptq_cu_blas_fail(ctx, s, "cublasSsyrk");
    }
    GPTQ_TRY(tf32_end(ctx, st, tf32, status));
    tiles = (n + 31) / 32;
    if (tiles > 65535)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_NOT_SUPPORTED,
                                  "CUDA backend: syrk: n = %lld is too large", (long long)n);
    mirror_upper_kernel<<<dim3((unsigned)tiles, (unsigned)tiles), dim3(32, 8), 0, st->stream>>>(
        oh.dev, n);
    CU_TRY(ctx, cudaGetLastError());
    return unstage(st, h, n, n, n, &oh);
}

static int cu_gemm(gptq_ctx *ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                   float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                   float beta, float *c, int64_t ldc)
{
    int status, tf32;
    cu_state *st = gptq_cu_state(ctx, &status);
    operand oa, ob, oc;

    if (!st)
        return status;
    GPTQ_TRY(dims_ok(ctx, m, n, k));
    GPTQ_TRY(dims_ok(ctx, lda, ldb, ldc));
    if (m == 0 || n == 0)
        return GPTQ_OK;
    GPTQ_TRY(stage(st, CU_SLOT_A, a, trans_a ? k : m, trans_a ? m : k, lda, 1, &oa));
    GPTQ_TRY(stage(st, CU_SLOT_B, b, trans_b ? n : k, trans_b ? k : n, ldb, 1, &ob));
    GPTQ_TRY(stage(st, CU_SLOT_C, c, m, n, ldc, beta != 0.0f, &oc));
    /* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the same buffers
     * with the operands swapped and the same transpose flags. */
    GPTQ_TRY(tf32_begin(ctx, st, &tf32));
    status = GPTQ_OK;
    {
        cublasStatus_t s = cublasSgemm(st->blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                       trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, (int)n, (int)m, (int)k,
                                       &alpha, ob.dev, (int)ob.ld, oa.dev, (int)oa.ld, &beta,
                                       oc.dev, (int)oc.ld);
        if (s != CUBLAS_STATUS_SUCCESS)
            status = gptq_cu_blas_fail(ctx, s, "cublasSgemm");
    }
    GPTQ_TRY(tf32_end(ctx, st, tf32, status));
    return unstage(st, c, m, n, ldc, &oc);
}

/* ---- Cholesky family (column-major, LAPACK info) ---------------------------------------- */

typedef enum { F_POTRF, F_POTRI, F_TRTRI } factor_kind;

static const char *const factor_names[] = {"cusolverDnSpotrf", "cusolverDnSpotri",
                                           "cusolverDnXtrtri"};

/* Queue the routine on the (staged) matrix; workspace from the solver slot. */
static int enqueue_factor(cu_state *st, factor_kind kind, cublasFillMode_t uplo, int n, float *a,
                          void **host_work)
{
    gptq_ctx *ctx = st->ctx;
    int status = GPTQ_OK, lwork = 0;
    float *work;

    if (kind == F_TRTRI) {
        size_t dev_bytes = 0, host_bytes = 0;
        void *dwork;
        SOLVER_TRY(ctx, cusolverDnXtrtri_bufferSize(st->solver, uplo, CUBLAS_DIAG_NON_UNIT, n,
                                                    CUDA_R_32F, a, n, &dev_bytes, &host_bytes));
        dwork = gptq_cu_scratch(st, CU_SLOT_SOLVER, dev_bytes, &status);
        if (!dwork)
            return status;
        if (host_bytes) {
            *host_work = malloc(host_bytes);
            if (!*host_work)
                return gptq_cu_host->fail(ctx, GPTQ_ERR_OUT_OF_MEMORY,
                                          "CUDA backend: out of host memory for trtri");
        }
        SOLVER_TRY(ctx, cusolverDnXtrtri(st->solver, uplo, CUBLAS_DIAG_NON_UNIT, n, CUDA_R_32F, a,
                                         n, dwork, dev_bytes, *host_work, host_bytes, st->d_info));
        return GPTQ_OK;
    }
    if (kind == F_POTRF)
        SOLVER_TRY(ctx, cusolverDnSpotrf_bufferSize(st->solver, uplo, n, a, n, &lwork));
    else
        SOLVER_TRY(ctx, cusolverDnSpotri_bufferSize(st->solver, uplo, n, a, n, &lwork));
    work = (float *)gptq_cu_scratch(st, CU_SLOT_SOLVER, (size_t)(lwork > 0 ? lwork : 1) *
                                                            sizeof(float), &status);
    if (!work)
        return status;
    if (kind == F_POTRF)
        SOLVER_TRY(ctx, cusolverDnSpotrf(st->solver, uplo, n, a, n, work, lwork, st->d_info));
    else
        SOLVER_TRY(ctx, cusolverDnSpotri(st->solver, uplo, n, a, n, work, lwork, st->d_info));
    return GPTQ_OK;
}

static int run_factor(gptq_ctx *ctx, factor_kind kind, int lower, int64_t n, float *a,
                      int64_t *info)
{
    int status, dinfo = 0, rc;
    cu_state *st = gptq_cu_state(ctx, &status);
    void *host_work = NULL;
    operand oa;

    *info = 0;
    if (!st)
        return status;
    GPTQ_TRY(dims_ok(ctx, n, 1, 1));
    if (n == 0)
        return GPTQ_OK;
    /* The matrix is dense n x n either way; staging copies it as it lies. */
    GPTQ_TRY(stage(st, CU_SLOT_A, a, n, n, n, 1, &oa));
    rc = enqueue_factor(st, kind, lower ? CUBLAS_FILL_MODE_LOWER : CUBLAS_FILL_MODE_UPPER, (int)n,
                        oa.dev, &host_work);
    if (rc == GPTQ_OK) {
        cudaError_t e = cudaMemcpyAsync(&dinfo, st->d_info, sizeof dinfo, cudaMemcpyDeviceToHost,
                                        st->stream);
        rc = e == cudaSuccess ? unstage(st, a, n, n, n, &oa)
                              : gptq_cu_fail(ctx, e, "cudaMemcpyAsync(devInfo)");
    }
    free(host_work);
    GPTQ_TRY(rc);
    *info = dinfo;
    if (dinfo > 0) /* not positive definite / singular: the core retries, no message */
        return GPTQ_ERR_NOT_POSITIVE_DEFINITE;
    if (dinfo < 0)
        return gptq_cu_host->fail(ctx, GPTQ_ERR_INTERNAL, "CUDA backend: %s rejected argument %d",
                                  factor_names[kind], -dinfo);
    return GPTQ_OK;
}

static int cu_potrf(gptq_ctx *ctx, int lower, int64_t n, float *a, int64_t *info)
{
    return run_factor(ctx, F_POTRF, lower, n, a, info);
}

static int cu_potri(gptq_ctx *ctx, int lower, int64_t n, float *a, int64_t *info)
{
    return run_factor(ctx, F_POTRI, lower, n, a, info);
}

static int cu_trtri(gptq_ctx *ctx, int lower, int64_t n, float *a, int64_t *info)
{
    return run_factor(ctx, F_TRTRI, lower, n, a, info);
}

/* ---- the table ------------------------------------------------------------------------- */

static const gptq_backend cuda_backend = {
    .abi_version = GPTQ_BACKEND_ABI,
    .name = "cuda",
    .init = cu_init,
    .fini = cu_fini,
    .buf_alloc = cu_buf_alloc,
    .buf_free = cu_buf_free,
    .upload = cu_copy,
    .download = cu_copy,
    .syrk = cu_syrk,
    .gemm = cu_gemm,
    .potrf = cu_potrf,
    .potri = cu_potri,
    .trtri = cu_trtri,
    .quantize_block = gptq_cu_quantize_block,
    /* One stream per context: the core must not run a block beside a GEMM. */
    .overlap_block_gemm = 0,
    /* W, U and the block errors stay on the device for a layer's block loop. */
    .resident_layer = 1,
    /* The calibration forward's GEMMs (up to tens of TFLOP per layer) on the GPU. */
    .offload_forward_gemm = 1,
    .ql_prepare = gptq_cu_ql_prepare,
    .ql_release = gptq_cu_ql_release,
    .ql_kernel_check = gptq_cu_ql_kernel_check,
    .ql_forward = gptq_cu_ql_forward,
    .ql_bench = gptq_cu_ql_bench,
    .synchronize = gptq_cu_synchronize,
    .device_bandwidth = gptq_cu_device_bandwidth,
    /* The pipeline's activations, layer weights and Hessians on the device. */
    .device_forward = 1,
    .rms_norm = gptq_cu_rms_norm,
    .silu_mul = gptq_cu_silu_mul,
    .add = gptq_cu_add,
    .scale = gptq_cu_scale,
    .add_bias = gptq_cu_add_bias,
    .rope = gptq_cu_rope,
    .attention = gptq_cu_attention,
};

extern "C" __attribute__((visibility("default"))) const gptq_backend *
gptq_cuda_backend_v1(const gptq_host_services *host)
{
    if (!host || host->abi_version != GPTQ_BACKEND_ABI)
        return NULL;
    gptq_cu_host = host;
    return &cuda_backend;
}
