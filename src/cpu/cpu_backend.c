/*
 * The CPU backend: OpenBLAS (CBLAS) for SYRK/GEMM, LAPACKE for the Cholesky family,
 * the core's host kernel for the in-block loop (row-parallel over ctx->threads).
 *
 * LAPACK is called through the column-major *_work entry points on our row-major
 * buffers: for the symmetric/triangular matrices the core passes, row-major storage
 * is the column-major storage of the transpose, and the core accounts for that. The
 * *_work variants neither allocate nor transpose (the row-major LAPACKE wrappers copy
 * the whole matrix twice).
 *
 * GPTQ_MATH_TF32 (include/gptq/gptq.h) is emulated: SYRK and GEMM run on copies of
 * their operands rounded to TF32, and OpenBLAS sums the products in float32 as before.
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

/* ---- TF32 emulation -------------------------------------------------------------- */

/* float32 -> TF32 (1 sign, 8 exponent, 10 mantissa bits), returned as a float32 whose
 * low 13 mantissa bits are zero. Round to nearest, ties to even, because cuBLAS does
 * not say how its TF32 mode rounds: its documentation of cublasMath_t and cublas_api.h
 * (CUDA 13.0) only say CUBLAS_TF32_TENSOR_OP_MATH allows "accelerating single precision
 * routines using TF32 tensor cores" and CUBLAS_COMPUTE_32F_FAST_TF32 "down-converting
 * inputs to TF32"; framework notes disagree (TensorFlow: inputs "rounded" to 10 bits;
 * PyTorch: "only the first 10 bits of the input mantissa are read"). So we take IEEE's
 * default mode; a GPU may differ in the last TF32 bit of some operands. Subnormals round
 * the same way; a value that rounds past the largest TF32 becomes Inf, as IEEE rounding
 * does; NaN/Inf pass unchanged (the core has already refused non-finite input). */
static float tf32_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7f800000u) != 0x7f800000u) {
        /* half a TF32 ulp less one, plus the kept last bit: exact ties go to even */
        u += 0x0fffu + ((u >> 13) & 1u);
        u &= ~0x1fffu;
    }
    memcpy(&f, &u, sizeof f);
    return f;
}

/* A rounded, packed copy (leading dimension `cols`) of the rows x cols sub-matrix at
 * `src` with leading dimension `ld`; NULL with OUT_OF_MEMORY recorded on failure. */
static float *tf32_copy(gptq_ctx *ctx, const float *src, int64_t rows, int64_t cols, int64_t ld,
                        const char *what)
{
    size_t bytes;
    float *dst;

    if (gptq__mul3_size(&bytes, rows, cols, (int64_t)sizeof(float)) != 0) {
        GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY, "TF32 emulation: %s is too large", what);
        return NULL;
    }
    dst = gptq__alloc(ctx, bytes ? bytes : sizeof(float), what);
    if (!dst)
        return NULL;
    for (int64_t i = 0; i < rows; i++) {
        const float *s = src + (size_t)i * (size_t)ld;
        float *d = dst + (size_t)i * (size_t)cols;
        for (int64_t j = 0; j < cols; j++)
            d[j] = tf32_round(s[j]);
    }
    return dst;
}

static int cpu_tf32(const gptq_ctx *ctx) { return ctx->opts.math == GPTQ_MATH_TF32; }

/* ---- SYRK, GEMM -------------------------------------------------------------------- */

static int cpu_syrk(gptq_ctx *ctx, int64_t n, int64_t rows, const float *x, float beta, float *h)
{
    float *xr = NULL;

    GPTQ_TRY(blas_dims_ok(ctx, n, rows, 1));
    if (cpu_tf32(ctx) && n > 0 && rows > 0) {
        xr = tf32_copy(ctx, x, rows, n, n, "TF32 copy of the calibration rows");
        if (!xr)
            return GPTQ_ERR_OUT_OF_MEMORY;
        x = xr;
    }
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
    gptq__free(xr);
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
    if (cpu_tf32(ctx) && k > 0) {
        /* Stored shapes: a is k x m when transposed, else m x k; b likewise k x n or
         * n x k. The packed copies get leading dimensions of their column counts. */
        int64_t ar = trans_a ? k : m, ac = trans_a ? m : k;
        int64_t br = trans_b ? n : k, bc = trans_b ? k : n;
        float *ra = tf32_copy(ctx, a, ar, ac, lda, "TF32 copy of a GEMM operand");
        float *rb = ra ? tf32_copy(ctx, b, br, bc, ldb, "TF32 copy of a GEMM operand") : NULL;
        if (rb)
            cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                        trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, ra,
                        (int)ac, rb, (int)bc, beta, c, (int)ldc);
        gptq__free(ra);
        gptq__free(rb);
        return rb ? GPTQ_OK : GPTQ_ERR_OUT_OF_MEMORY;
    }
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
