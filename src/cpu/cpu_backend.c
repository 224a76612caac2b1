/*
 * The CPU backend: OpenBLAS (CBLAS) for SYRK/GEMM, LAPACKE for the Cholesky family,
 * the core's host kernel for the in-block loop (row-parallel over ctx->threads).
 *
 * LAPACK is called through the column-major *_work entry points on our row-major
 * buffers: for the symmetric/triangular matrices the core passes, row-major storage
 * is the column-major storage of the transpose, and the core accounts for that. The
 * *_work variants neither allocate nor transpose (the row-major LAPACKE wrappers copy
 * the whole matrix twice).
 */
#include <cblas.h>
#include <lapacke.h>
#include <string.h>

#include "backend.h"

/* OpenBLAS's thread count is process-wide; we only touch it when asked (threads > 0). */
extern void openblas_set_num_threads(int num_threads);

static int cpu_init(gptq_ctx *ctx, void **state)
{
    *state = NULL;
    if (ctx->opts.threads > 0)
        openblas_set_num_threads(ctx->opts.threads);
    return GPTQ_OK;
}

static void cpu_fini(void *state) { (void)state; }

static void *cpu_buf_alloc(gptq_ctx *ctx, size_t bytes) { return gptq__alloc(ctx, bytes, "buffer"); }

static void cpu_buf_free(gptq_ctx *ctx, void *p) { gptq__free(p); }

static int cpu_copy(gptq_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    if (bytes)
        memmove(dst, src, bytes);
    return GPTQ_OK;
}

static int blas_dims_ok(gptq_ctx *ctx, int64_t a, int64_t b, int64_t c)
{
    /* CBLAS takes int dimensions. */
    if (a > INT32_MAX || b > INT32_MAX || c > INT32_MAX)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "matrix dimension above 2^31-1 is not supported by the CPU BLAS");
    return GPTQ_OK;
}

static int cpu_syrk(gptq_ctx *ctx, int64_t n, int64_t rows, const float *x, float beta, float *h)
{
    GPTQ_TRY(blas_dims_ok(ctx, n, rows, 1));
    /* Row-major x [rows, n]: h = beta*h + x^T x on the upper triangle, then mirror so
     * both triangles hold bit-identical values. */
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)n, (int)rows, 1.0f, x, (int)n, beta, h,
                (int)n);
    /* Tiled mirror: a plain double loop walks one side with a stride of n floats. */
    for (int64_t ib = 0; ib < n; ib += 32)
        for (int64_t jb = 0; jb <= ib; jb += 32)
            for (int64_t i = ib; i < ib + 32 && i < n; i++)
                for (int64_t j = jb; j < jb + 32 && j < i; j++)
                    h[i * n + j] = h[j * n + i];
    return GPTQ_OK;
}

static int cpu_gemm(gptq_ctx *ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                    float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                    float beta, float *c, int64_t ldc)
{
    GPTQ_TRY(blas_dims_ok(ctx, m, n, k));
    GPTQ_TRY(blas_dims_ok(ctx, lda, ldb, ldc));
    if (m == 0 || n == 0)
        return GPTQ_OK;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, a, (int)lda, b,
                (int)ldb, beta, c, (int)ldc);
    return GPTQ_OK;
}

/* Map LAPACK's info: > 0 is a numerical failure the core may retry (no message), < 0 a
 * bad argument, i.e. a bug in the caller. */
static int lapack_status(gptq_ctx *ctx, const char *routine, lapack_int info)
{
    if (info == 0)
        return GPTQ_OK;
    if (info > 0)
        return GPTQ_ERR_NOT_POSITIVE_DEFINITE;
    return GPTQ_FAIL(ctx, GPTQ_ERR_INTERNAL, "LAPACK %s rejected argument %d", routine, (int)-info);
}

static int cpu_potrf(gptq_ctx *ctx, int lower, int64_t n, float *a, int64_t *info)
{
    lapack_int i;
    GPTQ_TRY(blas_dims_ok(ctx, n, 1, 1));
    i = LAPACKE_spotrf_work(LAPACK_COL_MAJOR, lower ? 'L' : 'U', (lapack_int)n, a, (lapack_int)n);
    *info = i;
    return lapack_status(ctx, "spotrf", i);
}

static int cpu_potri(gptq_ctx *ctx, int lower, int64_t n, float *a, int64_t *info)
{
    lapack_int i;
    GPTQ_TRY(blas_dims_ok(ctx, n, 1, 1));
    i = LAPACKE_spotri_work(LAPACK_COL_MAJOR, lower ? 'L' : 'U', (lapack_int)n, a, (lapack_int)n);
    *info = i;
    return lapack_status(ctx, "spotri", i);
}

static int cpu_trtri(gptq_ctx *ctx, int lower, int64_t n, float *a, int64_t *info)
{
    lapack_int i;
    GPTQ_TRY(blas_dims_ok(ctx, n, 1, 1));
    i = LAPACKE_strtri_work(LAPACK_COL_MAJOR, lower ? 'L' : 'U', 'N', (lapack_int)n, a,
                            (lapack_int)n);
    *info = i;
    return lapack_status(ctx, "strtri", i);
}

static const gptq_backend cpu_backend = {
    .abi_version = GPTQ_BACKEND_ABI,
    .name = "cpu",
    .init = cpu_init,
    .fini = cpu_fini,
    .buf_alloc = cpu_buf_alloc,
    .buf_free = cpu_buf_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .syrk = cpu_syrk,
    .gemm = cpu_gemm,
    .potrf = cpu_potrf,
    .potri = cpu_potri,
    .trtri = cpu_trtri,
    .quantize_block = gptq__quantize_block_host,
    .overlap_block_gemm = 1,
};

const gptq_backend *gptq__cpu_backend(void) { return &cpu_backend; }
