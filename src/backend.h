/*
 * The backend interface: a versioned vtable of primitives.
 *
 * The GPTQ algorithm (Hessian scaling, dead columns, ordering, groups, damping,
 * blocked error propagation) is written once, in src/core/, against this table.
 * Each backend fills one `static const gptq_backend` with designated initialisers:
 *
 *   src/cpu/   OpenBLAS (CBLAS) + LAPACKE, linked into libgptq.so;
 *   src/cuda/  cuBLAS + cuSOLVER + kernels, built as its own module libgptq-cuda.so,
 *              opened with dlopen() only when a context asks for it (see
 *              src/core/backend_load.c and src/cuda/README.md), so libgptq.so loads and
 *              runs on machines without a CUDA driver.
 *
 * Conventions: matrices are row-major float32; `n`/`ld*` are element counts. Pointers
 * handed to the primitives were obtained from buf_alloc() (for the CPU backend that is
 * host memory). Every primitive returns a gptq_status and, on failure, records the
 * vendor status (LAPACK info, cudaError, cublasStatus...) in the context message.
 * A slot may be NULL when the core has a fallback (stated per slot).
 */
#ifndef GPTQ_BACKEND_H
#define GPTQ_BACKEND_H

#include "internal.h"

/* Bumped whenever the layout of gptq_backend or gptq_block_args changes, or that of
 * struct gptq_qlinear (src/format/qlinear.h), which the module reads through the ql_*
 * slots; a module built for another version is refused at load time.
 * 2: the ql_* slots, synchronize and device_bandwidth.
 * 3: gptq_host_services.math (the layout of the services table counts too) and
 *    gptq_backend.resident_layer.
 * 4: gptq_backend.offload_forward_gemm.
 * 5: device_forward and the model-op slots (rms_norm ... attention). */
#define GPTQ_BACKEND_ABI 5

/* Name of the symbol libgptq-cuda.so exports:
 *     const gptq_backend *NAME(const gptq_host_services *host);
 * The module keeps `host` (static storage in libgptq) and reaches the context's error
 * state and settings only through it, never through the layout of struct gptq_ctx. */
#define GPTQ_CUDA_ENTRY "gptq_cuda_backend_v1"
#define GPTQ_CUDA_MODULE "libgptq-cuda.so.0"

/* What libgptq offers a run-time loaded backend module. */
typedef struct gptq_host_services {
    uint32_t abi_version; /* GPTQ_BACKEND_ABI */
    /* Record a failure on ctx (printf-style) and return status: gptq__fail. */
    int (*fail)(gptq_ctx *ctx, int status, const char *fmt, ...);
    /* Log through the context's sink: gptq__log. */
    void (*log)(const gptq_ctx *ctx, int32_t level, const char *fmt, ...);
    /* The context's resolved thread count and requested device ordinal. */
    int32_t (*threads)(const gptq_ctx *ctx);
    int32_t (*device)(const gptq_ctx *ctx);
    /* The context's gptq_ctx_options.math (GPTQ_MATH_FP32 or GPTQ_MATH_TF32), which
     * syrk and gemm honour (include/gptq/gptq.h says what TF32 changes). */
    int32_t (*math)(const gptq_ctx *ctx);
} gptq_host_services;

/* The services table handed to modules (src/core/backend_load.c). */
const gptq_host_services *gptq__host_services(void);

/* Arguments of the in-block column loop (GPTQ's inner loop over columns [i1, i2)).
 * All column indices are in processing order (columns already permuted). */
typedef struct gptq_block_args {
    int64_t rows;          /* R */
    int64_t cols;          /* C */
    int64_t i1, i2;        /* the block [i1, i2) */
    int32_t maxq;          /* 2^bits - 1 */
    int32_t sym;
    int32_t group_size;    /* -1 or > 0 */
    int32_t static_groups;
    const float *w;        /* [R, C] block-level W (updates of earlier blocks applied);
                            * read-only here: the in-block updates go to a private copy */
    const float *u;        /* [C, C] upper Cholesky factor of H^-1; NULL = RTN (no
                            * error feedback, no loss) */
    const int32_t *perm;   /* [C] processing order (static groups look up perm[c]/gs) */
    const float *row_scale; /* [R] P_row (group_size -1) */
    const float *row_zero;  /* [R] */
    float *scales;         /* [ng, R] group parameters: written at each group start for
                            * non-static groups; read for static groups */
    float *zeros;          /* [ng, R] (float32: the quantizer keeps zeros as floats) */
    float *q;              /* [R, C] out: dequantized values in ORIGINAL column order:
                            * processing column c is written at perm[c] */
    int32_t *codes;        /* [R, C] out: integer codes, original column order */
    float *err;            /* [i2 - i1, R] out: scaled errors E, transposed (row i of err
                            * is column i1 + i of E), for the cross-block GEMM */
    double *row_loss;      /* [R] in/out: loss accumulated per row (sum of fl32 losses/2) */
    int32_t threads;       /* host threads to use; 0 = the context's */
} gptq_block_args;

typedef struct gptq_backend {
    uint32_t abi_version;  /* GPTQ_BACKEND_ABI */
    const char *name;      /* "cpu", "cuda" */

    /* Lifetime. init() may fail with DEVICE (no GPU) and a message. */
    int (*init)(gptq_ctx *ctx, void **state);
    void (*fini)(void *state);

    /* Memory. buf_alloc returns NULL on failure (the core reports OUT_OF_MEMORY).
     * upload/download copy between host memory and buffers, or from one buffer to
     * another; for the CPU they are memcpy. */
    void *(*buf_alloc)(gptq_ctx *ctx, size_t bytes);
    void (*buf_free)(gptq_ctx *ctx, void *p);
    int (*upload)(gptq_ctx *ctx, void *dst, const void *src, size_t bytes);
    int (*download)(gptq_ctx *ctx, void *dst, const void *src, size_t bytes);

    /* h[n, n] = beta * h + x^T x, x [rows, n]; both triangles of h are written (the
     * result is exactly symmetric). syrk and gemm: with the context's math mode
     * GPTQ_MATH_TF32 the products read x (a, b) rounded to TF32; h and c stay float32. */
    int (*syrk)(gptq_ctx *ctx, int64_t n, int64_t rows, const float *x, float beta, float *h);

    /* c[m, n] = alpha * op(a) op(b) + beta * c; op transposes when trans_* is 1. */
    int (*gemm)(gptq_ctx *ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                float beta, float *c, int64_t ldc);

    /* LAPACK-style factorisations of an n x n matrix `a` in COLUMN-major storage (for
     * the symmetric inputs the core passes, the row-major matrix itself). `lower`
     * selects the triangle. *info receives LAPACK's info (> 0: the leading minor of
     * that order is not positive definite); such a failure returns
     * GPTQ_ERR_NOT_POSITIVE_DEFINITE *without* setting a message, so the core can
     * retry quietly. */
    int (*potrf)(gptq_ctx *ctx, int lower, int64_t n, float *a, int64_t *info);
    int (*potri)(gptq_ctx *ctx, int lower, int64_t n, float *a, int64_t *info);
    int (*trtri)(gptq_ctx *ctx, int lower, int64_t n, float *a, int64_t *info);

    /* The in-block column loop, fused: quantize every column of [i1, i2), spread its
     * error over the rest of the block, write q/codes/err/loss and the group
     * parameters. Rows are independent, so a backend may split them over threads or
     * GPU blocks. NULL: the core's host implementation (gptq__quantize_block_host). */
    int (*quantize_block)(gptq_ctx *ctx, const gptq_block_args *args);

    /* 1 if quantize_block may run on a second host thread while the first calls gemm
     * on other columns of the same buffers (the core then overlaps them). */
    int32_t overlap_block_gemm;
    /* 1 if the core should keep a layer's W, U and block errors in buf_alloc buffers for
     * the whole block loop (uploaded once; gemm and quantize_block then take them in
     * place: quantize_block's w, u and err are such buffers, its q, codes, scales, zeros
     * and row_loss stay host memory). 0: host arrays throughout (the CPU). */
    int32_t resident_layer;
    /* 1 if the model's forward pass should hand its large float GEMMs (calibration and
     * evaluation batches) to this backend's gemm, which stages host operands; 0: they
     * run on the host's OpenBLAS (the CPU). */
    int32_t offload_forward_gemm;

    /* ---- prepared quantized linears (gptq_qlinear, src/format/qlinear.c) ----------
     * All NULL in the CPU table: a handle made with a CPU context stays on the host.
     * The module reads struct gptq_qlinear (src/format/qlinear.h) directly, so its
     * layout is part of GPTQ_BACKEND_ABI. `dev` is the backend's device copy of one
     * handle; it is only read after ql_prepare, so contexts on the same device may use
     * it (each on its own stream). */

    /* Upload ql's host layout (and any kernel-specific layout) to ctx's device;
     * synchronous. *dev receives the copy (NULL on failure, with the message set). */
    int (*ql_prepare)(gptq_ctx *ctx, const struct gptq_qlinear *ql, void **dev);
    /* Free a device copy (no context: the copy knows its device). NULL is fine. */
    void (*ql_release)(void *dev);
    /* GPTQ_OK if `kernel` (a GPU kernel or AUTO) can run this layer, else
     * NOT_SUPPORTED with the reason recorded on ctx. */
    int (*ql_kernel_check)(gptq_ctx *ctx, const void *dev, int32_t kernel);
    /* y[batch][R] = x[batch][C] * Wq^T + bias with `kernel` (a GPU kernel or AUTO,
     * resolved per call). x_dtype/y_dtype: GPTQ_QLINEAR_DTYPE_*. device_pointers 0:
     * x and y are host memory, staged, and the call returns with y written; 1: device
     * memory of ctx's device (checked), the work is enqueued on ctx's stream. */
    int (*ql_forward)(gptq_ctx *ctx, const struct gptq_qlinear *ql, const void *dev,
                      int32_t kernel, const void *x, int32_t x_dtype, int64_t batch, void *y,
                      int32_t y_dtype, int32_t device_pointers);
    /* gptq_qlinear_bench_device (include/gptq/gptq.h) for this handle and kernel. */
    int (*ql_bench)(gptq_ctx *ctx, const struct gptq_qlinear *ql, const void *dev,
                    int32_t kernel, int64_t batch, int32_t iters, int32_t *resolved,
                    double *seconds, double *fp16_seconds);
    /* Wait for ctx's stream; an asynchronous failure becomes DEVICE with a message. */
    int (*synchronize)(gptq_ctx *ctx);
    /* Theoretical memory bandwidth of ctx's device, bytes per second. */
    int (*device_bandwidth)(gptq_ctx *ctx, double *bytes_per_second);

    /* ---- the model's layers on the backend's buffers (src/model/forward_dev.c) -------
     * device_forward 1: the GPTQ pipeline keeps the calibration activations, the
     * running layer's weights and the Hessians in buf_alloc buffers and runs the layer
     * there through gemm, syrk and the slots below (every pointer they get is such a
     * buffer). The work may be queued on the context's stream; download and
     * synchronize wait for it. Each slot may be NULL: the model's host version runs
     * instead, which is only right when buffers are host memory (the CPU's table leaves
     * them all NULL and device_forward 0). Arithmetic: as the host versions say in
     * src/model/forward.c and attention.c, up to the order of sums. */
    int32_t device_forward;
    /* y[n][width] = w * (x * rsqrt(mean(x^2) + eps)) per row (LlamaRMSNorm); y may be x. */
    int (*rms_norm)(gptq_ctx *ctx, const float *x, const float *w, int64_t n, int64_t width,
                    float eps, float *y);
    /* g = silu(g) * u over n rows of width (LlamaMLP's act_fn(gate) * up). */
    int (*silu_mul)(gptq_ctx *ctx, float *g, const float *u, int64_t n, int64_t width);
    /* y += x over count floats (the residual connections). */
    int (*add)(gptq_ctx *ctx, float *y, const float *x, int64_t count);
    /* y = s * x over count floats (y may be x): the Hessian's scaled rows. */
    int (*scale)(gptq_ctx *ctx, float *y, const float *x, float s, int64_t count);
    /* y[r][o] += b[o] for n rows of width outputs (F.linear's bias). */
    int (*add_bias)(gptq_ctx *ctx, float *y, const float *b, int64_t n, int64_t width);
    /* RoPE in place on x [n][heads * head_dim], row r at position r % seqlen: pair
     * (j, j + head_dim/2) of each head turned by cs/sn [seqlen][head_dim / 2]. */
    int (*rope)(gptq_ctx *ctx, float *x, const float *cs, const float *sn, int64_t n,
                int64_t seqlen, int64_t heads, int64_t head_dim);
    /* Causal grouped-query attention of nseq sequences of seqlen tokens: q, out
     * [n][heads * head_dim], k, v [n][kv_heads * head_dim]; query head h reads kv head
     * h / (heads / kv_heads); scores / sqrt(head_dim) (rounded to float32), softmax with
     * the maximum subtracted. */
    int (*attention)(gptq_ctx *ctx, const float *q, const float *k, const float *v,
                     int64_t nseq, int64_t seqlen, int64_t heads, int64_t kv_heads,
                     int64_t head_dim, float *out);
} gptq_backend;

/* The CPU backend's table (src/cpu/cpu_backend.c). */
const gptq_backend *gptq__cpu_backend(void);

/* The core's host implementation of the in-block loop (src/core/quant_block.c),
 * row-parallel over ctx->threads. */
int gptq__quantize_block_host(gptq_ctx *ctx, const gptq_block_args *args);

/* Open libgptq-cuda.so and fetch its table (src/core/backend_load.c). On failure a
 * message is written to errbuf and NOT_SUPPORTED (no module) or DEVICE returned. */
int gptq__cuda_backend_open(void **module, const gptq_backend **table, char *errbuf,
                            size_t errbuf_size);
void gptq__cuda_backend_close(void *module);

#endif /* GPTQ_BACKEND_H */
