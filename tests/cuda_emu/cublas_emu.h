/*
 * A host stand-in for the parts of cuBLAS that libgptq's CUDA module uses, on the CUDA
 * emulation of cuda_emu.h (tests/cuda_emu/README.md): handles with a stream and a math
 * mode, and cublasGemmEx for float16 (or float32) A and B, float32 or float16 C, float32
 * compute, with the column-major semantics cuBLAS documents:
 *
 *   C = alpha op(A) op(B) + beta C,  op(A) m x k, op(B) k x n, C m x n;
 *   op(X) = X (CUBLAS_OP_N) or X^T (CUBLAS_OP_T, CUBLAS_OP_C for real types);
 *   element (i, j) of a column-major matrix with leading dimension ld at [i + j ld];
 *   beta == 0: C is not read.
 *
 * Each sum runs in k order in float32, one fused multiply-add per term (products of
 * float16 values are exact in float32, so this is an exact product added with one
 * rounding); a float16 C is rounded once at the end. Arguments are checked as cuBLAS
 * checks them (CUBLAS_STATUS_INVALID_VALUE for negative sizes or short leading
 * dimensions, NOT_SUPPORTED for other type combinations); A, B and C must lie in device
 * memory over the whole extent the call reads or writes, else it is an emulator fault.
 * The product is enqueued on the handle's stream (recorded when that stream is
 * captured), alpha and beta read at the call (host pointer mode).
 */
#ifndef GPTQ_CUBLAS_EMU_H
#define GPTQ_CUBLAS_EMU_H

#include "cuda_emu.h"

typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_ARCH_MISMATCH = 8,
    CUBLAS_STATUS_MAPPING_ERROR = 11,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_INTERNAL_ERROR = 14,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
    CUBLAS_STATUS_LICENSE_ERROR = 16
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 } cublasOperation_t;
typedef enum {
    CUBLAS_DEFAULT_MATH = 0,
    CUBLAS_TENSOR_OP_MATH = 1,
    CUBLAS_PEDANTIC_MATH = 2,
    CUBLAS_TF32_TENSOR_OP_MATH = 3
} cublasMath_t;
typedef enum {
    CUBLAS_COMPUTE_16F = 64,
    CUBLAS_COMPUTE_16F_PEDANTIC = 65,
    CUBLAS_COMPUTE_32F = 68,
    CUBLAS_COMPUTE_32F_PEDANTIC = 69,
    CUBLAS_COMPUTE_64F = 70,
    CUBLAS_COMPUTE_64F_PEDANTIC = 71,
    CUBLAS_COMPUTE_32I = 72,
    CUBLAS_COMPUTE_32F_FAST_16F = 74,
    CUBLAS_COMPUTE_32F_FAST_16BF = 75,
    CUBLAS_COMPUTE_32F_FAST_TF32 = 77
} cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1, CUBLAS_GEMM_DEFAULT_TENSOR_OP = 99 } cublasGemmAlgo_t;

/* The handle: what a test may inspect after a call. */
struct cublasContext {
    cudaStream_t stream;
    cublasMath_t math;
    long gemms;            /* cublasGemmEx calls accepted */
    cublasMath_t gemm_math; /* the math mode at the latest of them */
};
typedef struct cublasContext *cublasHandle_t;

inline cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    *h = new cublasContext{nullptr, CUBLAS_DEFAULT_MATH, 0, CUBLAS_DEFAULT_MATH};
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasGetStream(cublasHandle_t h, cudaStream_t *s)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    *s = h->stream;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((int)m < 0 || (int)m > CUBLAS_TF32_TENSOR_OP_MATH)
        return CUBLAS_STATUS_INVALID_VALUE;
    h->math = m;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasGetMathMode(cublasHandle_t h, cublasMath_t *m)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    *m = h->math;
    return CUBLAS_STATUS_SUCCESS;
}
inline const char *cublasGetStatusName(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS_UNKNOWN";
    }
}
inline const char *cublasGetStatusString(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    default: return "an internal operation failed";
    }
}

namespace gptq_emu {
inline double blas_load(const void *p, cudaDataType t, size_t i)
{
    if (t == CUDA_R_16F)
        return gptq_emu_h2d(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}
/* A column-major rows x cols matrix with leading dimension ld lies in device memory. */
inline bool blas_extent_ok(const char *name, const void *p, int rows, int cols, int ld, size_t es)
{
    if (rows == 0 || cols == 0 || !st().check_ptrs)
        return true;
    const size_t n = ((size_t)(cols - 1) * (size_t)ld + (size_t)rows) * es;
    if (is_device(p, n))
        return true;
    char what[160];
    snprintf(what, sizeof what, "cublasGemmEx: %s (%p, %d x %d, ld %d) is not device memory "
             "over its extent", name, p, rows, cols, ld);
    fault(what);
    return false;
}
} /* namespace gptq_emu */

inline cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                   int m, int n, int k, const void *alpha, const void *A,
                                   cudaDataType At, int lda, const void *B, cudaDataType Bt,
                                   int ldb, const void *beta, void *C, cudaDataType Ct, int ldc,
                                   cublasComputeType_t ct, cublasGemmAlgo_t)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    const bool half_in = At == CUDA_R_16F && Bt == CUDA_R_16F &&
                         (Ct == CUDA_R_16F || Ct == CUDA_R_32F);
    const bool single = At == CUDA_R_32F && Bt == CUDA_R_32F && Ct == CUDA_R_32F;
    if (!(half_in || single) || (ct != CUBLAS_COMPUTE_32F && ct != CUBLAS_COMPUTE_32F_PEDANTIC))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    const bool opa = ta != CUBLAS_OP_N, opb = tb != CUBLAS_OP_N;
    const int arows = opa ? k : m, acols = opa ? m : k, brows = opb ? n : k, bcols = opb ? k : n;
    if ((int)ta < 0 || (int)ta > 2 || (int)tb < 0 || (int)tb > 2 || m < 0 || n < 0 || k < 0 ||
        lda < (arows > 1 ? arows : 1) || ldb < (brows > 1 ? brows : 1) || ldc < (m > 1 ? m : 1) ||
        !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    h->gemms++;
    h->gemm_math = h->math;
    const float al = *(const float *)alpha, be = *(const float *)beta;
    const size_t ea = At == CUDA_R_16F ? 2 : 4, eb = Bt == CUDA_R_16F ? 2 : 4,
                 ec = Ct == CUDA_R_16F ? 2 : 4;
    if (m == 0 || n == 0)
        return CUBLAS_STATUS_SUCCESS;
    if (!gptq_emu::blas_extent_ok("A", A, arows, acols, lda, ea) ||
        !gptq_emu::blas_extent_ok("B", B, brows, bcols, ldb, eb) ||
        !gptq_emu::blas_extent_ok("C", C, m, n, ldc, ec))
        return CUBLAS_STATUS_SUCCESS; /* the fault shows at the next synchronisation */
    gptq_emu::enqueue(h->stream, [=] {
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float acc = 0.0f;
                for (int p = 0; p < k; p++) {
                    const size_t ia = opa ? (size_t)p + (size_t)i * lda : (size_t)i + (size_t)p * lda;
                    const size_t ib = opb ? (size_t)j + (size_t)p * ldb : (size_t)p + (size_t)j * ldb;
                    acc = std::fma((float)gptq_emu::blas_load(A, At, ia),
                                   (float)gptq_emu::blas_load(B, Bt, ib), acc);
                }
                const size_t ic = (size_t)i + (size_t)j * ldc;
                float v = al == 1.0f ? acc : al * acc;
                if (be != 0.0f)
                    v = v + be * (float)gptq_emu::blas_load(C, Ct, ic);
                if (Ct == CUDA_R_16F)
                    ((uint16_t *)C)[ic] = gptq_emu_d2h(v);
                else
                    ((float *)C)[ic] = v;
            }
    });
    return CUBLAS_STATUS_SUCCESS;
}

#endif /* GPTQ_CUBLAS_EMU_H */
