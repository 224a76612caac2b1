/*
 * libgptq - GPTQ post-training quantization as a C library.
 *
 * This is the one stable public header. Bindings (ctypes/cffi, bindgen, cgo) read it.
 * Optional parts have their own headers beside it (gptq/safetensors.h).
 *
 * Conventions used by every function in this header
 * -------------------------------------------------
 * - Fallible functions return `int`: GPTQ_OK (0) on success, a negative `gptq_status`
 *   value on failure. The values are pinned forever; new ones are only appended.
 * - Functions that take a `gptq_ctx *` record a human-readable description of a failure
 *   (what went wrong, which tensor or file, which value) in that context; read it with
 *   gptq_ctx_last_error(). A successful call does not clear it.
 * - Objects are opaque handles made by `gptq_<object>_create()` and released by
 *   `gptq_<object>_free()`; every `_free` accepts NULL.
 * - Matrices are dense, row-major (C order), float32 unless stated otherwise.
 *   W has shape [out_features, in_features] (the nn.Linear layout, y = x * W^T + b).
 * - Buffers passed in by the caller stay the caller's. Pointers returned by getters
 *   point into the object and stay valid until the object is freed.
 * - Option structs begin with `struct_size`; fill them with their `_init()` function
 *   first, then change fields. Fields are only ever appended, so a program built
 *   against an older header keeps working with a newer library.
 * - The library never prints, never exits and never aborts on bad input.
 *
 * Thread safety
 * -------------
 * A context and everything created with it may be used by one thread at a time.
 * Separate contexts share no mutable state and may be used from separate threads at
 * once. There is no global mutable state, with one documented exception: the CPU
 * backend's BLAS (OpenBLAS) keeps a process-wide thread pool (see gptq_ctx_options).
 */
#ifndef GPTQ_GPTQ_H
#define GPTQ_GPTQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------
 * Visibility and version
 * ------------------------------------------------------------------------------- */

/* GPTQ_API marks every exported function. Symbols are hidden by default when the
 * library is built (GPTQ_BUILDING is defined by its build only). */
#if defined(_WIN32)
#  if defined(GPTQ_BUILDING)
#    define GPTQ_API __declspec(dllexport)
#  else
#    define GPTQ_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__) && __GNUC__ >= 4
#  define GPTQ_API __attribute__((visibility("default")))
#else
#  define GPTQ_API
#endif

/* The version of this header. CMake reads these three lines; keep their shape. */
#define GPTQ_VERSION_MAJOR 0
#define GPTQ_VERSION_MINOR 1
#define GPTQ_VERSION_PATCH 0

#define GPTQ_VERSION_NUMBER \
    (GPTQ_VERSION_MAJOR * 10000 + GPTQ_VERSION_MINOR * 100 + GPTQ_VERSION_PATCH)
#define GPTQ_STRINGIFY_(x) #x
#define GPTQ_STRINGIFY(x) GPTQ_STRINGIFY_(x)
#define GPTQ_VERSION_STRING                                                      \
    GPTQ_STRINGIFY(GPTQ_VERSION_MAJOR) "." GPTQ_STRINGIFY(GPTQ_VERSION_MINOR) "." \
    GPTQ_STRINGIFY(GPTQ_VERSION_PATCH)

/* The version of the library actually loaded, e.g. "0.1.0". Static storage. */
GPTQ_API const char *gptq_version(void);

/* The same as a number, MAJOR*10000 + MINOR*100 + PATCH (compare with
 * GPTQ_VERSION_NUMBER to detect a header/library mismatch). */
GPTQ_API uint32_t gptq_version_number(void);

/* ---------------------------------------------------------------------------------
 * Status codes
 * ------------------------------------------------------------------------------- */

typedef enum gptq_status {
    GPTQ_OK = 0,
    GPTQ_ERR_INVALID_ARGUMENT = -1,   /* NULL where a value is needed, out-of-range option */
    GPTQ_ERR_OUT_OF_MEMORY = -2,      /* an allocation failed (host or device) */
    GPTQ_ERR_NOT_SUPPORTED = -3,      /* valid but unsupported: bits, layout, backend... */
    GPTQ_ERR_NOT_POSITIVE_DEFINITE = -4, /* Cholesky failed even after damping retries */
    GPTQ_ERR_NUMERIC = -5,            /* NaN or Inf in an input, or a result overflowed */
    GPTQ_ERR_IO = -6,                 /* open/read/write/rename failed */
    GPTQ_ERR_MALFORMED = -7,          /* a file or tensor does not follow its format */
    GPTQ_ERR_SHAPE = -8,              /* dimensions do not agree */
    GPTQ_ERR_DEVICE = -9,             /* no GPU, no driver, or a device-side failure */
    GPTQ_ERR_CANCELLED = -10,         /* a progress callback asked to stop */
    GPTQ_ERR_INTERNAL = -11,          /* a library bug: please report it */
    GPTQ_ERR_NOT_FOUND = -12          /* a named tensor, key or file does not exist */
} gptq_status;

/* Static English text for a status code ("invalid argument", ...). Never NULL; an
 * unknown code gives "unknown status". */
GPTQ_API const char *gptq_status_str(int status);

/* The same function under the name house style gives it; kept for bindings that
 * look for `*_strerror`. */
GPTQ_API const char *gptq_strerror(int status);

/* ---------------------------------------------------------------------------------
 * Context
 * ------------------------------------------------------------------------------- */

/* Backends. A CPU-only build exports the same functions; asking for CUDA where it is
 * absent returns GPTQ_ERR_NOT_SUPPORTED or GPTQ_ERR_DEVICE with a message. */
#define GPTQ_BACKEND_AUTO 0 /* CUDA if libgptq-cuda.so and a GPU are usable, else CPU */
#define GPTQ_BACKEND_CPU 1  /* OpenBLAS + LAPACKE, threads */
#define GPTQ_BACKEND_CUDA 2 /* libgptq-cuda.so, opened at run time with dlopen */

/* Log levels passed to gptq_log_fn. */
#define GPTQ_LOG_ERROR 0
#define GPTQ_LOG_WARN 1
#define GPTQ_LOG_INFO 2
#define GPTQ_LOG_DEBUG 3

/* A log sink. `msg` is one line without a trailing newline, valid during the call. */
typedef void (*gptq_log_fn)(void *user, int32_t level, const char *msg);

/* Matrix-product precision (gptq_ctx_options.math).
 *
 * GPTQ_MATH_FP32 (default): every product and sum in float32.
 *
 * GPTQ_MATH_TF32: the backend's two large matrix products, the SYRK that accumulates
 * the Hessian (gptq_hessian_add) and the GEMM of the lazy block updates inside
 * gptq_layer_quantize, take their float32 operands rounded to TF32 (8 exponent bits,
 * 10 explicit mantissa bits) and sum the products in float32. The Cholesky
 * factorisation and inverse, the in-block quantizer loop, the model forward pass and
 * everything else stay float32.
 *  - CUDA backend: those calls run with cublasSetMathMode(CUBLAS_TF32_TENSOR_OP_MATH),
 *    i.e. on the tensor cores of sm_80 and later (cuBLAS may still pick a float32
 *    kernel for a given shape); the mode goes back to CUBLAS_PEDANTIC_MATH after each.
 *  - CPU backend: an emulation for previewing the effect without a GPU: the operands
 *    are rounded (to nearest, ties to even) into copies before OpenBLAS runs. cuBLAS
 *    does not document how its TF32 mode rounds, so a GPU may differ from the
 *    emulation in the last TF32 bit of some operands. Slower than GPTQ_MATH_FP32
 *    (one extra copy of the operands per call), never faster.
 * The results differ from float32 in more than the last bits: docs/benchmarks.md
 * ("TF32 mode") gives the measured effect on the reference cases and a small model. */
#define GPTQ_MATH_FP32 0
#define GPTQ_MATH_TF32 1

typedef struct gptq_ctx_options {
    uint32_t struct_size; /* set by gptq_ctx_options_init() */
    int32_t backend;      /* GPTQ_BACKEND_*, default GPTQ_BACKEND_CPU */
    int32_t threads;      /* worker threads for the library's own loops; 0 = all cores.
                           * With the CPU backend a value > 0 is also passed to
                           * OpenBLAS, whose thread pool is process-wide: the last
                           * context created with threads > 0 sets it for all. */
    int32_t device;       /* GPU ordinal for the CUDA backend, default 0 */
    gptq_log_fn log;      /* optional; NULL = silent (the default) */
    void *log_user;       /* passed back to `log` */
    int32_t log_level;    /* messages above this level are dropped; default GPTQ_LOG_WARN */
    /* Appended after the first layout (on LP64 it fills what was tail padding, which
     * gptq_ctx_options_init has always zeroed). A caller whose struct_size ends before
     * it gets GPTQ_MATH_FP32. */
    int32_t math;         /* GPTQ_MATH_FP32 (default) or GPTQ_MATH_TF32: see above */
} gptq_ctx_options;

typedef struct gptq_ctx gptq_ctx;

/* Fill `opts` with the defaults (backend CPU, threads 0 = all cores, device 0, no log,
 * math GPTQ_MATH_FP32). */
GPTQ_API void gptq_ctx_options_init(gptq_ctx_options *opts);

/* Create a context. `opts` may be NULL for the defaults.
 * Errors: GPTQ_ERR_INVALID_ARGUMENT (out NULL, bad struct_size, backend or math),
 *         GPTQ_ERR_OUT_OF_MEMORY, GPTQ_ERR_NOT_SUPPORTED (backend CUDA without
 *         libgptq-cuda.so), GPTQ_ERR_DEVICE (backend CUDA without a usable GPU).
 * On failure *out is NULL; there is no context to read a message from, so pass
 * `errbuf` (may be NULL) of `errbuf_size` bytes to receive the message. */
GPTQ_API int gptq_ctx_create(const gptq_ctx_options *opts, gptq_ctx **out, char *errbuf,
                             size_t errbuf_size);

/* Release a context. Objects created with it must be freed first. NULL is fine. */
GPTQ_API void gptq_ctx_free(gptq_ctx *ctx);

/* The message of the last failure on this context, "" if none. Valid until the next
 * call on the context. Never NULL (for ctx NULL: a static text). */
GPTQ_API const char *gptq_ctx_last_error(const gptq_ctx *ctx);

/* The status code of the last failure on this context, GPTQ_OK if none. */
GPTQ_API int gptq_ctx_last_status(const gptq_ctx *ctx);

/* The backend in use (GPTQ_BACKEND_CPU or GPTQ_BACKEND_CUDA; never AUTO). */
GPTQ_API int32_t gptq_ctx_backend(const gptq_ctx *ctx);

/* Name of a backend id: "auto", "cpu", "cuda", or "unknown". Static storage. */
GPTQ_API const char *gptq_backend_name(int32_t backend);

/* Whether a backend can be used in this process: 1 yes, 0 no. For CUDA this opens
 * libgptq-cuda.so and asks it for a device; on 0, `why` (may be NULL) of `why_size`
 * bytes receives the reason. */
GPTQ_API int gptq_backend_available(int32_t backend, char *why, size_t why_size);

/* ---------------------------------------------------------------------------------
 * Hessian accumulator: H = 2/n * sum over samples of X_s^T X_s
 * ------------------------------------------------------------------------------- */

typedef struct gptq_hessian gptq_hessian;

/* A zeroed accumulator for `in_features` input channels (n = 0).
 * Errors: INVALID_ARGUMENT (in_features < 1 or out NULL), OUT_OF_MEMORY. */
GPTQ_API int gptq_hessian_create(gptq_ctx *ctx, int64_t in_features, gptq_hessian **out);

/* An accumulator that starts from a given H (`h`, [in_features, in_features],
 * symmetric, copied) standing for `nsamples` samples (>= 1; it only matters when more
 * rows are added or accumulators are merged).
 * Errors: INVALID_ARGUMENT, NUMERIC (NaN/Inf in h), OUT_OF_MEMORY. */
GPTQ_API int gptq_hessian_create_from(gptq_ctx *ctx, int64_t in_features, const float *h,
                                      int64_t nsamples, gptq_hessian **out);

GPTQ_API void gptq_hessian_free(gptq_hessian *h);

/* Add `nsamples` sequences of `seqlen` rows each: `x` is [nsamples * seqlen,
 * in_features], sequence s in rows [s*seqlen, (s+1)*seqlen). Exactly as the reference
 * `add_batch` of IST-DASLab/AutoGPTQ with an input of shape [nsamples, seqlen, in]:
 *     H *= fl32(n / (n + nsamples));  n += nsamples;
 *     H += (fl32(sqrt(2 / n)) * X)^T (fl32(sqrt(2 / n)) * X)      (float32)
 * so samples are counted as sequences, not rows. A flat [tokens, in] matrix is one
 * sample: nsamples = 1, seqlen = tokens. The references call this once per sequence.
 * Errors: INVALID_ARGUMENT, NUMERIC (NaN/Inf in x; h is left unchanged),
 *         OUT_OF_MEMORY. */
GPTQ_API int gptq_hessian_add(gptq_ctx *ctx, gptq_hessian *h, const float *x,
                              int64_t nsamples, int64_t seqlen);

/* Merge `src` into `dst` (same in_features): afterwards dst stands for the samples of
 * both, H = fl32(n1/(n1+n2)) * H1 + fl32(n2/(n1+n2)) * H2. Equal, up to float32
 * rounding, to one accumulator that saw every row. src is unchanged.
 * Errors: INVALID_ARGUMENT, SHAPE (in_features differ). */
GPTQ_API int gptq_hessian_merge(gptq_ctx *ctx, gptq_hessian *dst, const gptq_hessian *src);

/* The number of input features. */
GPTQ_API int64_t gptq_hessian_in_features(const gptq_hessian *h);

/* The number of samples accumulated so far (n). */
GPTQ_API int64_t gptq_hessian_nsamples(const gptq_hessian *h);

/* Copy H out into `dst` ([in_features, in_features], row-major, symmetric). `count`
 * is the number of floats dst holds and must be >= in_features^2.
 * Errors: INVALID_ARGUMENT. */
GPTQ_API int gptq_hessian_read(gptq_ctx *ctx, const gptq_hessian *h, float *dst, size_t count);

/* ---------------------------------------------------------------------------------
 * Quantization configuration
 * ------------------------------------------------------------------------------- */

typedef struct gptq_config {
    uint32_t struct_size;         /* set by gptq_config_init() */
    int32_t bits;                 /* 2, 3, 4 or 8; default 4 */
    int32_t group_size;           /* -1 (one group per row) or > 0; default 128 */
    int32_t sym;                  /* 1 symmetric (default), 0 asymmetric */
    int32_t desc_act;             /* 1 act-order: columns by descending diag(H); default 0 */
    int32_t static_groups;        /* 1 group parameters fixed before GPTQ runs; default 0 */
    int32_t block_size;           /* lazy-batch block width; default 128 */
    int32_t rtn;                  /* 1 plain round-to-nearest, no Hessian needed; default 0 */
    double damp_percent;          /* 0 < x < 1, fraction of mean(diag(H)); default 0.01 */
    double damp_auto_increment;   /* added to damp_percent after a failed Cholesky, retried
                                   * while damp < 1; 0 = no retry; default 0.01 */
    int32_t inverse;              /* how U (upper Cholesky factor of H^-1) is computed:
                                   * GPTQ_INVERSE_FAST (default) or GPTQ_INVERSE_REFERENCE */
} gptq_config;

/* GPTQ_INVERSE_REFERENCE runs the references' three factorisations (Cholesky of H,
 * inverse from it, Cholesky of the inverse: about 4/3 n^3 flops). GPTQ_INVERSE_FAST
 * computes the same U from one Cholesky of H with rows and columns reversed and one
 * triangular inverse (2/3 n^3 flops): U = J inv(chol(J H J)) J, J the exchange matrix.
 * The two agree to float32 rounding. */
#define GPTQ_INVERSE_FAST 0
#define GPTQ_INVERSE_REFERENCE 1

/* Fill `cfg` with the defaults above. */
GPTQ_API void gptq_config_init(gptq_config *cfg);

/* Check a configuration without quantizing; INVALID_ARGUMENT or NOT_SUPPORTED with a
 * message naming the field. `ctx` receives the message (may be NULL). */
GPTQ_API int gptq_config_validate(gptq_ctx *ctx, const gptq_config *cfg);

/* Number of groups for `in_features` columns: 1 if group_size == -1, else
 * ceil(in_features / group_size). Returns -1 for invalid arguments. */
GPTQ_API int64_t gptq_num_groups(int64_t in_features, int32_t group_size);

/* ---------------------------------------------------------------------------------
 * Layer quantization
 * ------------------------------------------------------------------------------- */

typedef struct gptq_result gptq_result;

/* Quantize one linear layer with GPTQ (Frantar et al., 2023), reproducing the
 * reference implementations (IST-DASLab gptq.py `fasterquant`, AutoGPTQ) step by
 * step: row parameters, dead columns, static groups, act-order (stable descending
 * sort of diag(H)), damping, the upper Cholesky factor of H^-1, lazy blocks, group
 * parameters from the block-level W, a float32 quantizer with round-half-to-even.
 *
 *   w        [out_features, in_features] float32, not modified.
 *   hessian  accumulated over this layer's inputs (in_features must match); may be
 *            NULL only with cfg->rtn = 1. Not modified.
 *   cfg      NULL for the defaults.
 *   out      receives a new result; free it with gptq_result_free().
 *
 * When the Cholesky factorisation fails, damp_percent is raised by
 * damp_auto_increment and the factorisation retried while damp < 1 (as GPTQModel's
 * damp_auto_increment does); the damp used is in the result.
 * Errors: INVALID_ARGUMENT (NULL, bad config), NOT_SUPPORTED (bits, group size),
 *   SHAPE (in_features of the Hessian), NUMERIC (NaN/Inf in w or H, or a non-finite
 *   result), NOT_POSITIVE_DEFINITE (after every retry), OUT_OF_MEMORY, DEVICE. */
GPTQ_API int gptq_layer_quantize(gptq_ctx *ctx, const float *w, int64_t out_features,
                                 int64_t in_features, const gptq_hessian *hessian,
                                 const gptq_config *cfg, gptq_result **out);

GPTQ_API void gptq_result_free(gptq_result *r);

GPTQ_API int64_t gptq_result_out_features(const gptq_result *r);
GPTQ_API int64_t gptq_result_in_features(const gptq_result *r);
/* Number of groups ng (1 for group_size -1). */
GPTQ_API int64_t gptq_result_ngroups(const gptq_result *r);
/* The configuration used (copied into *cfg; struct_size must be set). */
GPTQ_API int gptq_result_config(const gptq_result *r, gptq_config *cfg);

/* Integer codes in [0, 2^bits - 1], [out_features, in_features], original column
 * order (also with act-order). */
GPTQ_API const int32_t *gptq_result_codes(const gptq_result *r);
/* float32 scales, [ngroups, out_features]: scale of group g, output row r at
 * [g * out_features + r]. */
GPTQ_API const float *gptq_result_scales(const gptq_result *r);
/* True integer zero points (not the v1 "zero - 1"), [ngroups, out_features]. */
GPTQ_API const int32_t *gptq_result_zeros(const gptq_result *r);
/* Group of every input column, [in_features]. */
GPTQ_API const int32_t *gptq_result_g_idx(const gptq_result *r);
/* Processing order, [in_features]: column perm[k] was quantized k-th. The identity
 * without act-order. */
GPTQ_API const int32_t *gptq_result_perm(const gptq_result *r);
/* Dequantized weights, [out_features, in_features] float32, original column order:
 * Q[r, j] = scales[g_idx[j], r] * (codes[r, j] - zeros[g_idx[j], r]). */
GPTQ_API const float *gptq_result_q(const gptq_result *r);
/* GPTQ's loss: the float32 sum of its Losses, as IST-DASLab's fasterquant prints it
 * (AutoGPTQ logs it divided by the number of samples). 0 for RTN. */
GPTQ_API double gptq_result_loss(const gptq_result *r);
/* The damp_percent actually used (>= the configured one after retries); 0 for RTN. */
GPTQ_API double gptq_result_damp_percent(const gptq_result *r);
/* The absolute damping added to the diagonal (damp_percent * mean(diag(H))). */
GPTQ_API double gptq_result_damp(const gptq_result *r);
/* Number of dead input columns (H[i,i] == 0) found. */
GPTQ_API int64_t gptq_result_dead_columns(const gptq_result *r);

/* ---------------------------------------------------------------------------------
 * Packing: AutoGPTQ "gptq" (v1) and GPTQModel "gptq_v2" checkpoint tensors
 * ------------------------------------------------------------------------------- */

/* Checkpoint formats: the stored zero point is zero - 1 in v1, the zero itself in v2. */
#define GPTQ_FORMAT_V1 1 /* checkpoint_format "gptq" */
#define GPTQ_FORMAT_V2 2 /* checkpoint_format "gptq_v2" */

/* Packing modes.
 * CLEAN     packs the integer codes as they are; a v1 zero point of 0 is stored as
 *           (0 - 1) mod 2^bits in its own field only. The default for checkpoints.
 *           Any in/out features (the last word of a stream is zero padded).
 * AUTOGPTQ  byte-identical to AutoGPTQ 0.8 (qlinear_cuda pack of a float16 model):
 *           codes re-derived as rint((fl16(Q) + zero*scale) / fl16(scale)) in float32,
 *           without clamping (values outside [0, maxq] spill into the higher fields of
 *           their word), and a v1 zero point of 0 written as 0xFFFFFFFF OR-ed into the
 *           word (its field and every higher field of that word read 2^bits - 1).
 *           Needs `q`, ignores `codes`; in/out features must be multiples of 32
 *           (AutoGPTQ silently drops tails). v1 only. For byte-identity tests and
 *           reproducing AutoGPTQ checkpoints; the codes equal GPTQ's except where
 *           fl16(scale) is subnormal.
 * GPTQMODEL v1 zero points as GPTQModel writes them: v2 words minus 0x11111111 (4-bit;
 *           0x55555555 2-bit, 0x01010101 8-bit) per word, borrowing across fields;
 *           3-bit per field (same as CLEAN). A last word that holds fewer fields is
 *           computed modulo 2^(its used bits), so its padding stays zero. Codes and
 *           v2 zero points as CLEAN.
 * Readers disagree on a stored v1 field of 2^bits - 1 (zero point 0); only zero
 * points >= 1 are portable in v1 (use v2 for asymmetric layers where that matters). */
#define GPTQ_PACK_CLEAN 0
#define GPTQ_PACK_AUTOGPTQ 1
#define GPTQ_PACK_GPTQMODEL 2

/* A layer's quantized tensors, unpacked. Used as input of gptq_pack() and output of
 * gptq_unpack(). All pointers are the caller's. */
typedef struct gptq_unpacked {
    int32_t bits;
    int32_t group_size;      /* informative; g_idx decides */
    int64_t out_features;    /* R */
    int64_t in_features;     /* C */
    int64_t ngroups;         /* ng */
    int32_t *codes;          /* [R, C], values in [0, 2^bits - 1]; not read by
                              * GPTQ_PACK_AUTOGPTQ (may be NULL there) */
    float *scales;           /* [ng, R] float32 */
    int32_t *zeros;          /* [ng, R] true zero points in [0, 2^bits - 1] */
    int32_t *g_idx;          /* [C], values in [0, ng) */
    float *q;                /* [R, C] dequantized weights; only read by GPTQ_PACK_AUTOGPTQ,
                              * may be NULL otherwise; not written by gptq_unpack() */
} gptq_unpacked;

/* A layer's checkpoint tensors. All pointers are the caller's; size them with
 * gptq_packed_shape(). */
typedef struct gptq_packed {
    int32_t bits;
    int32_t format;          /* GPTQ_FORMAT_V1 or GPTQ_FORMAT_V2 */
    int64_t out_features;    /* R */
    int64_t in_features;     /* C */
    int64_t ngroups;         /* ng */
    int32_t *qweight;        /* [ceil(C*bits/32), R] codes packed along the input axis */
    int32_t *qzeros;         /* [ng, ceil(R*bits/32)] zero points packed along the output axis */
    uint16_t *scales;        /* [ng, R] IEEE float16 bit patterns */
    int32_t *g_idx;          /* [C] */
} gptq_packed;

/* Shapes of the packed tensors: qweight [ceil(C*bits/32), R] and qzeros
 * [ng, ceil(R*bits/32)]. Along the packed axis the int32 words form one
 * little-endian bit stream, element j at bits [bits*j, bits*j + bits), least
 * significant bit first (3-bit elements 10 and 21 of every 32 straddle two words,
 * low bits in the lower word); the word count is rounded up.
 * Errors: INVALID_ARGUMENT (NULL, a dimension < 1 or > 2^40), NOT_SUPPORTED (bits). */
GPTQ_API int gptq_packed_shape(int32_t bits, int64_t out_features, int64_t in_features,
                               int64_t ngroups, int64_t qweight_shape[2],
                               int64_t qzeros_shape[2]);

/* Pack `src` into `dst` (whose bits, format, dimensions and buffers the caller sets;
 * bits and dimensions must equal src's). `mode` is a GPTQ_PACK_* value. scales
 * become fl16(scale) (round to nearest even), g_idx is copied. Everything is checked
 * before anything is written, so dst is untouched on failure. `ctx` may be NULL (no
 * message, one thread).
 * Errors: INVALID_ARGUMENT (NULL buffer, unknown mode or format, bits differ, a code
 *   or zero point outside [0, 2^bits - 1], g_idx outside [0, ng), AUTOGPTQ without q),
 *   SHAPE (dimensions differ), NOT_SUPPORTED (bits; AUTOGPTQ mode with v2 or
 *   dimensions not multiples of 32), NUMERIC (a scale that is not finite or that
 *   overflows float16, i.e. >= 65520 before rounding; NaN/Inf in q for AUTOGPTQ). */
GPTQ_API int gptq_pack(gptq_ctx *ctx, const gptq_unpacked *src, int32_t mode, gptq_packed *dst);

/* Pack a result directly (codes, scales, zeros, g_idx and Q of `r`), as gptq_pack. */
GPTQ_API int gptq_pack_result(gptq_ctx *ctx, const gptq_result *r, int32_t mode,
                              gptq_packed *dst);

/* Unpack checkpoint tensors into codes, float32 scales (exact widening of float16),
 * true zero points and g_idx. v1 zero points are read as (stored + 1) mod 2^bits; for
 * GPTQModel-written v1 words pass GPTQ_PACK_GPTQMODEL as `mode` to undo its per-word
 * subtraction exactly (CLEAN and AUTOGPTQ read per field, so an AutoGPTQ all-ones
 * field reads as zero point 0). dst's bits and dimensions must equal src's (they size
 * its buffers); dst->q and dst->group_size are not touched. `ctx` may be NULL.
 * Errors: INVALID_ARGUMENT (NULL buffer, unknown mode or format), SHAPE (dst differs),
 *   NOT_SUPPORTED (bits), MALFORMED (g_idx outside [0, ng)). */
GPTQ_API int gptq_unpack(gptq_ctx *ctx, const gptq_packed *src, int32_t mode, gptq_unpacked *dst);

/* y[batch, R] = x[batch, C] * Wq^T (+ bias[R] if bias is not NULL), with Wq
 * dequantized on the fly from the packed tensors: Wq[r, j] = scale[g_idx[j], r] *
 * (code[r, j] - zero[g_idx[j], r]) in float32, scale being the float16 scale widened
 * and zero the stored field (v2) or (stored + 1) mod 2^bits (v1). Any batch >= 1,
 * v1 or v2 zero points, 2/3/4/8 bits, any g_idx (act-order), any in/out features.
 * Accumulates in float32; the result does not depend on the thread count. Runs on the
 * host with ctx's threads (`ctx` may be NULL: one thread). One-shot: it prepares a
 * temporary gptq_qlinear (below) and so has that function's error bound; in particular
 * the zero point is folded out of the sum, so a row whose codes all equal its zero point
 * gives a rounding-sized value rather than exactly 0. To multiply by the same weights
 * more than once, prepare them with gptq_qlinear_create.
 * Errors: INVALID_ARGUMENT (NULL, batch < 1, bad format or dimensions), NOT_SUPPORTED
 *   (bits), MALFORMED (g_idx outside [0, ng)), OUT_OF_MEMORY. */
GPTQ_API int gptq_dequant_matmul(gptq_ctx *ctx, const gptq_packed *w, const float *x,
                                 int64_t batch, const float *bias, float *y);

/* ---------------------------------------------------------------------------------
 * float16 helpers (IEEE binary16, round to nearest even), for callers and bindings
 * ------------------------------------------------------------------------------- */

GPTQ_API uint16_t gptq_fp32_to_fp16(float f);
GPTQ_API float gptq_fp16_to_fp32(uint16_t h);

/* ---------------------------------------------------------------------------------
 * Prepared quantized linear layers: fast fused dequantize-matmul
 * ------------------------------------------------------------------------------- */

/* A layer's packed tensors (v1 or v2, 2/3/4/8 bits, any g_idx) repacked once into the
 * layout the CPU kernels read fastest, plus an optional bias. With act-order the input
 * columns are reordered once, at creation, so that each group's columns are adjacent
 * (as exllama does); the forward pass permutes the input instead of looking up a group
 * per column. The handle does not keep pointers into the gptq_packed: its buffers may
 * be freed after creation. A forward pass only reads the handle, so one handle may be
 * used by several threads at once, each with its own context. */
typedef struct gptq_qlinear gptq_qlinear;

/* Kernels. AUTO (the default) takes the widest SIMD kernel this CPU has (AVX-512,
 * AVX2) for every batch size; without either, the portable kernel below 32 rows and
 * dequantize-then-SGEMM from 32 rows on. The others force one path for
 * every batch size (for tests and benchmarks); the environment variable
 * GPTQ_QLINEAR_KERNEL=auto|portable|avx2|avx512|sgemm|cuda_gemv|cuda_mma|cuda_cublas
 * sets the kernel of handles when they are created (an unknown or unavailable name, or
 * a CUDA kernel for a handle made on a CPU context, is ignored with a warning on the
 * context's log).
 *
 * On the GPU (a handle created with a CUDA context, see gptq_qlinear_create), AUTO
 * takes, per call: CUDA_GEMV up to 8 batch rows; CUDA_MMA from 9 to 256 rows when the
 * layer is eligible (in chunks of 64 rows), CUDA_GEMV up to 16 rows when it is not;
 * CUDA_CUBLAS beyond. These thresholds are provisional: they were chosen before the
 * kernels ran on a GPU and will be set from measurements (docs/benchmarks.md). */
#define GPTQ_QLINEAR_KERNEL_AUTO 0
#define GPTQ_QLINEAR_KERNEL_PORTABLE 1 /* plain C, any CPU */
#define GPTQ_QLINEAR_KERNEL_AVX2 2     /* x86-64 AVX2 + FMA + F16C */
#define GPTQ_QLINEAR_KERNEL_AVX512 3   /* x86-64 AVX512F + AVX512BW */
#define GPTQ_QLINEAR_KERNEL_SGEMM 4    /* dequantize tiles to float32, then BLAS SGEMM */
/* GPU kernels (CUDA backend; a handle created with a CUDA context). */
#define GPTQ_QLINEAR_KERNEL_CUDA_GEMV 5 /* fused dequantize GEMV in float32: every bit
                                         * width, group size, act-order, v1/v2; meant
                                         * for 1 to 8 batch rows (any batch works) */
#define GPTQ_QLINEAR_KERNEL_CUDA_MMA 6  /* tensor cores, float16 inputs and weights,
                                         * float32 sums ("Marlin-class"); 4- and 8-bit
                                         * layers whose shape it supports, else
                                         * GPTQ_ERR_NOT_SUPPORTED with the reason */
#define GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS 7 /* dequantize to float16 on the device, then
                                           * cuBLAS GEMM (float16 inputs, float32
                                           * compute); any batch */

/* Element types of gptq_qlinear_forward_device's x and y. (Not the safetensors dtypes
 * of gptq/safetensors.h, whose GPTQ_DTYPE_* names are taken.) */
#define GPTQ_QLINEAR_DTYPE_F32 0  /* IEEE float32 */
#define GPTQ_QLINEAR_DTYPE_F16 1  /* IEEE float16 (binary16) */
#define GPTQ_QLINEAR_DTYPE_BF16 2 /* bfloat16 (inputs only) */

/* Prepare `w` (checked as gptq_dequant_matmul checks it) with `bias` ([out_features]
 * float32, copied; NULL for none). Uses ctx's threads to repack.
 *
 * Placement. With a CPU context (or ctx NULL) the handle lives on the host, as it
 * always did. With a CUDA context the handle keeps the host layout AND a copy on that
 * context's GPU (uploaded here, synchronously; with the tensor-core layout as well
 * when the layer is eligible for CUDA_MMA): its forward passes then run on that GPU
 * and take a CUDA context on the same device (another context: INVALID_ARGUMENT),
 * unless a CPU kernel is forced with gptq_qlinear_set_kernel, which runs on the host.
 * Several CUDA contexts on the same device may use one GPU handle.
 * Errors: INVALID_ARGUMENT (NULL, bad format or dimensions), NOT_SUPPORTED (bits),
 *   MALFORMED (g_idx outside [0, ng)), OUT_OF_MEMORY (host or GPU), DEVICE (a CUDA
 *   failure, with the call named in the message). */
GPTQ_API int gptq_qlinear_create(gptq_ctx *ctx, const gptq_packed *w, const float *bias,
                                 gptq_qlinear **out);

/* Release the handle and its GPU copy, if any. Like every object, free it before the
 * context it was created with. NULL is fine. */
GPTQ_API void gptq_qlinear_free(gptq_qlinear *ql);

/* y[batch, out] = x[batch, in] * Wq^T + bias, row-major, with Wq the reference
 * dequantization of gptq_dequant_matmul. Runs on ctx's threads (ctx may be NULL: one
 * thread); the result does not depend on the thread count. The fused kernels fold the
 * zero point out of the inner loop and accumulate in float32 (explicit FMAs in the SIMD
 * kernels): per output, |y - y_exact| <= (n + 2 ns + 4) * 2^-24 * (sum_j |x_j| *
 * scale_j * (code_j + zero_j) + |bias|), n = in_features, ns = number of groups; the
 * SGEMM path dequantizes exactly as the reference does. NaN or Inf in x propagate to
 * the outputs they touch; they are not an error.
 * On a GPU handle, x and y are host memory: x is copied to the device, the product
 * computed there and y copied back before the call returns. The GPU kernels' bounds:
 * CUDA_GEMV folds the zero point out per run of columns a thread reads (not per whole
 * group) and sums in another order: |y - y_exact| <= (2 n + 64 ns + 4) * 2^-24 *
 * (sum_j |x_j| * scale_j * (code_j + zero_j) + |bias|). CUDA_MMA and CUDA_CUBLAS round
 * x and the reference weight w_j to float16 (relative 2^-11 each) before float32 sums:
 * |y - y_exact| <= (2^-10 + (n + 4) * 2^-23) * (sum_j |x_j * w_j| + |bias|) + 2^-24 *
 * sum_j (|x_j| + |w_j|) (the last term covers float16 subnormals), for |x_j| and |w_j|
 * within float16's range (65504; beyond it they become infinite).
 * Errors: INVALID_ARGUMENT (NULL, batch < 1 or too large for memory; a GPU handle with
 *   a context that is not a CUDA context on its device), OUT_OF_MEMORY, NOT_SUPPORTED
 *   (the SGEMM path with dimensions beyond the BLAS's int; CUDA_MMA on a layer it does
 *   not support), DEVICE (a CUDA or cuBLAS failure). */
GPTQ_API int gptq_qlinear_forward(gptq_ctx *ctx, const gptq_qlinear *ql, const float *x,
                                  int64_t batch, float *y);

/* The same with IEEE float16 or bfloat16 inputs (bit patterns), widened exactly to
 * float32 first; y is float32. */
GPTQ_API int gptq_qlinear_forward_f16(gptq_ctx *ctx, const gptq_qlinear *ql, const uint16_t *x,
                                      int64_t batch, float *y);
GPTQ_API int gptq_qlinear_forward_bf16(gptq_ctx *ctx, const gptq_qlinear *ql,
                                       const uint16_t *x, int64_t batch, float *y);

/* Dimensions and bit width (0 for NULL). */
GPTQ_API int64_t gptq_qlinear_in_features(const gptq_qlinear *ql);
GPTQ_API int64_t gptq_qlinear_out_features(const gptq_qlinear *ql);
GPTQ_API int32_t gptq_qlinear_bits(const gptq_qlinear *ql);

/* Bytes of the prepared weights a fused forward pass reads once per call: codes,
 * float16 scales, byte zero points and bias (0 for NULL). */
GPTQ_API uint64_t gptq_qlinear_weight_bytes(const gptq_qlinear *ql);

/* Force a kernel (GPTQ_QLINEAR_KERNEL_*) for this handle's later forward passes. A CPU
 * kernel on a GPU handle runs on the host (from the handle's host layout).
 * Errors: INVALID_ARGUMENT (NULL, unknown kernel), NOT_SUPPORTED (this CPU lacks it; a
 *   CUDA kernel on a handle created with a CPU context; CUDA_MMA on a layer it does not
 *   support), each with the reason in the context's message. */
GPTQ_API int gptq_qlinear_set_kernel(gptq_ctx *ctx, gptq_qlinear *ql, int32_t kernel);

/* The kernel set on the handle (AUTO unless forced; -1 for NULL). */
GPTQ_API int32_t gptq_qlinear_kernel(const gptq_qlinear *ql);

/* Whether a kernel can run in this process: 1 yes, 0 no (AUTO, PORTABLE and SGEMM:
 * always 1; AVX2/AVX512: this CPU has them; the CUDA kernels: 1 iff
 * gptq_backend_available(GPTQ_BACKEND_CUDA) says yes, which opens the CUDA module and
 * a device each time it is asked. CUDA_MMA may still refuse a given layer). */
GPTQ_API int gptq_qlinear_kernel_available(int32_t kernel);

/* "auto", "portable", "avx2", "avx512", "sgemm", "cuda_gemv", "cuda_mma", "cuda_cublas"
 * or "unknown". Static storage. */
GPTQ_API const char *gptq_qlinear_kernel_name(int32_t kernel);

/* y = x * Wq^T + bias on the GPU with device-resident operands: x [batch, in] of type
 * x_dtype (GPTQ_QLINEAR_DTYPE_F32, _F16 or _BF16), y [batch, out] of type y_dtype
 * (F32 or F16), both row-major and contiguous, in device (cudaMalloc) or managed memory
 * of the handle's GPU. `ctx` is a CUDA context on that GPU; the work is enqueued on
 * ctx's stream and the call returns before it completes: call gptq_ctx_synchronize
 * (or synchronise with that stream) before reading y, and keep x and y alive until
 * then. The kernel is the handle's (AUTO resolved per call as described above; a CPU
 * kernel forced on the handle is refused). F16 output is rounded once from the float32
 * result (bias included). Failures of the enqueued work show up in a later call on the
 * context, at the latest gptq_ctx_synchronize.
 * Errors: INVALID_ARGUMENT (NULL, batch < 1, an unknown or unsupported dtype, x or y
 *   host memory or memory of another GPU, ctx not a CUDA context on the handle's GPU),
 *   NOT_SUPPORTED (a CPU context or a handle created with one; a CPU kernel forced on
 *   the handle; CUDA_MMA on a layer it does not support), OUT_OF_MEMORY, DEVICE. */
GPTQ_API int gptq_qlinear_forward_device(gptq_ctx *ctx, const gptq_qlinear *ql, const void *x,
                                         int32_t x_dtype, int64_t batch, void *y,
                                         int32_t y_dtype);

/* Wait until the work enqueued on ctx's stream has finished. On a CPU context (or
 * NULL) it returns GPTQ_OK at once. Errors: DEVICE (an asynchronous failure of earlier
 * work, with the CUDA message). */
GPTQ_API int gptq_ctx_synchronize(gptq_ctx *ctx);

/* The theoretical memory bandwidth of ctx's GPU in bytes per second: the memory clock
 * times the bus width times 2 (double data rate), from the CUDA device attributes.
 * Errors: INVALID_ARGUMENT (NULL), NOT_SUPPORTED (a CPU context), DEVICE. */
GPTQ_API int gptq_ctx_device_bandwidth(gptq_ctx *ctx, double *bytes_per_second);

/* Benchmark support (gptq bench matmul --backend cuda): time `iters` (>= 1) calls of
 * gptq_qlinear_forward_device on `batch` rows of device-resident random float16 input
 * with float16 output, after one warm-up call per weight copy. Weights: the calls
 * rotate over copies of the handle's device data (made for the benchmark and freed
 * before it returns) totalling at least twice the GPU's L2 cache, so that every call
 * reads its weights from device memory, not from L2. The calls are captured in one CUDA
 * graph (so that host launch overhead is not measured) and *seconds receives the
 * graph's time, measured with CUDA events, divided by iters (where capture is refused,
 * the calls are enqueued one by one and timed the same way). *kernel (may be NULL)
 * receives the kernel used, AUTO resolved for this batch. *fp16_seconds (may be NULL):
 * the same for cublasGemmEx on a dense float16 [out, in] weight (float16 x and y,
 * float32 compute, CUBLAS_COMPUTE_32F, default math mode), rotating over copies the
 * same way. Synchronous.
 * Errors: as gptq_qlinear_forward_device, and INVALID_ARGUMENT (iters < 1, NULL
 *   seconds). */
GPTQ_API int gptq_qlinear_bench_device(gptq_ctx *ctx, const gptq_qlinear *ql, int64_t batch,
                                       int32_t iters, int32_t *kernel, double *seconds,
                                       double *fp16_seconds);

#ifdef __cplusplus
}
#endif

#endif /* GPTQ_GPTQ_H */
