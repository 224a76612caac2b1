/*
 * Declarations shared by the files of the CUDA backend module (libgptq-cuda.so.0).
 * Compiled as CUDA C++ by nvcc; the interface it implements is src/backend.h.
 */
#ifndef GPTQ_CUDA_INTERNAL_H
#define GPTQ_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

extern "C" {
#include "backend.h"
}

/* Device scratch buffers of one context, grown on demand and kept until fini. A
 * primitive called with host pointers (what the core passes today) stages its operands
 * through them; pointers already in device memory are used in place. */
enum {
    CU_SLOT_A,      /* gemm a, syrk x, the factorised matrix */
    CU_SLOT_B,      /* gemm b */
    CU_SLOT_C,      /* gemm c, syrk h */
    CU_SLOT_SOLVER, /* cuSOLVER workspace */
    CU_SLOT_W,      /* quantize_block: the block's columns of W */
    CU_SLOT_U,      /* quantize_block: U[i1:i2, i1:i2] */
    CU_SLOT_SMALL,  /* quantize_block: perm, row parameters */
    CU_SLOT_GROUPS, /* quantize_block: scales and zeros of the groups it touches */
    CU_SLOT_Q,      /* quantize_block: q and codes, compact [R, bw] */
    CU_SLOT_ERR,    /* quantize_block: err [bw, R] and the per-row loss */
    CU_SLOT_QL_IN,  /* qlinear forward from host memory: x staged */
    CU_SLOT_QL_OUT, /* qlinear forward from host memory: y staged */
    CU_SLOT_QL_X,   /* qlinear: x as float16 (padded order for MMA, original for cuBLAS) */
    CU_SLOT_QL_WS,  /* qlinear: GEMV K-slice partial sums, MMA workspace */
    CU_SLOT_QL_CNT, /* qlinear: GEMV per-block arrival counters (kept zero between calls) */
    CU_SLOT_QL_W,   /* qlinear cuBLAS path: dequantized float16 weights [R][C] */
    CU_SLOT_QL_Y,   /* qlinear cuBLAS path: float32 product before the bias */
    CU_SLOT_ATTN,   /* model_ops attention: the scores of a chunk of (sequence, head) pairs */
    CU_SLOTS
};

typedef struct cu_state {
    gptq_ctx *ctx;
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    cusolverDnHandle_t solver;
    int *d_info; /* cuSOLVER's devInfo */
    void *slot[CU_SLOTS];
    size_t slot_bytes[CU_SLOTS];
    struct cu_state *next; /* the module's list of live contexts (cuda_backend.cu) */
} cu_state;

/* The host services libgptq handed to the entry point. */
extern const gptq_host_services *gptq_cu_host;

/* The state of ctx with its device made current, or NULL after recording a failure. */
cu_state *gptq_cu_state(gptq_ctx *ctx, int *status);

/* Failures as libgptq statuses with a message naming the call and the vendor code. */
int gptq_cu_fail(gptq_ctx *ctx, cudaError_t e, const char *call);

/* Return gptq_cu_fail's status from the enclosing function when a CUDA runtime call
 * fails. */
#define CU_TRY(ctx, call)                                  \
    do {                                                   \
        cudaError_t cu_e_ = (call);                        \
        if (cu_e_ != cudaSuccess)                          \
            return gptq_cu_fail((ctx), cu_e_, #call);      \
    } while (0)

/* cuBLAS failures the same way (allocation failures as OUT_OF_MEMORY), and the early
 * return on one. */
static inline int gptq_cu_blas_fail(gptq_ctx *ctx, cublasStatus_t s, const char *call)
{
    int status = s == CUBLAS_STATUS_ALLOC_FAILED ? GPTQ_ERR_OUT_OF_MEMORY : GPTQ_ERR_DEVICE;
    return gptq_cu_host->fail(ctx, status, "CUDA backend: %s failed: %s (%d): %s", call,
                              cublasGetStatusName(s), (int)s, cublasGetStatusString(s));
}

#define CU_BLAS_TRY(ctx, call)                                   \
    do {                                                         \
        cublasStatus_t cu_s_ = (call);                           \
        if (cu_s_ != CUBLAS_STATUS_SUCCESS)                      \
            return gptq_cu_blas_fail((ctx), cu_s_, #call);       \
    } while (0)

/* A scratch buffer of at least `bytes` (NULL after recording a failure). */
void *gptq_cu_scratch(cu_state *st, int slot, size_t bytes, int *status);

/* 1 if p is managed memory, or device memory of CUDA device `device` (any device when
 * device < 0); 0 for host memory and NULL. */
static inline int gptq_cu_pointer_on(const void *p, int device)
{
    cudaPointerAttributes a;
    if (!p || cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return (a.type == cudaMemoryTypeDevice && (device < 0 || a.device == device)) ||
           a.type == cudaMemoryTypeManaged;
}

/* 1 if p is memory the device can address directly (device or managed). */
static inline int gptq_cu_is_device(const void *p) { return gptq_cu_pointer_on(p, -1); }

/* The fused in-block column loop (quant_block.cu). */
int gptq_cu_quantize_block(gptq_ctx *ctx, const gptq_block_args *args);

/* Prepared quantized linears on the GPU (qlinear.cu): the ql_* slots of backend.h, and
 * synchronize / device_bandwidth. */
int gptq_cu_ql_prepare(gptq_ctx *ctx, const gptq_qlinear *ql, void **dev);
void gptq_cu_ql_release(void *dev);
int gptq_cu_ql_kernel_check(gptq_ctx *ctx, const void *dev, int32_t kernel);
int gptq_cu_ql_forward(gptq_ctx *ctx, const gptq_qlinear *ql, const void *dev, int32_t kernel,
                       const void *x, int32_t x_dtype, int64_t batch, void *y, int32_t y_dtype,
                       int32_t device_pointers);
int gptq_cu_ql_bench(gptq_ctx *ctx, const gptq_qlinear *ql, const void *dev, int32_t kernel,
                     int64_t batch, int32_t iters, int32_t *resolved, double *seconds,
                     double *fp16_seconds);
int gptq_cu_synchronize(gptq_ctx *ctx);
int gptq_cu_device_bandwidth(gptq_ctx *ctx, double *bytes_per_second);

/* The model's layer operations on device buffers (model_ops.cu): the rms_norm ...
 * attention slots of backend.h. */
int gptq_cu_rms_norm(gptq_ctx *ctx, const float *x, const float *w, int64_t n, int64_t width,
                     float eps, float *y);
int gptq_cu_silu_mul(gptq_ctx *ctx, float *g, const float *u, int64_t n, int64_t width);
int gptq_cu_add(gptq_ctx *ctx, float *y, const float *x, int64_t count);
int gptq_cu_scale(gptq_ctx *ctx, float *y, const float *x, float s, int64_t count);
int gptq_cu_add_bias(gptq_ctx *ctx, float *y, const float *b, int64_t n, int64_t width);
int gptq_cu_rope(gptq_ctx *ctx, float *x, const float *cs, const float *sn, int64_t n,
                 int64_t seqlen, int64_t heads, int64_t head_dim);
int gptq_cu_attention(gptq_ctx *ctx, const float *q, const float *k, const float *v,
                      int64_t nseq, int64_t seqlen, int64_t heads, int64_t kv_heads,
                      int64_t head_dim, float *out);

#endif /* GPTQ_CUDA_INTERNAL_H */
