/*
 * Internal declarations shared by every part of libgptq (never installed).
 *
 * Dependencies point one way: cli -> public API -> core -> backend interface <- cpu/, cuda/.
 * Everything here is hidden (the library is built with -fvisibility=hidden).
 */
#ifndef GPTQ_INTERNAL_H
#define GPTQ_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

#include "gptq/gptq.h"

struct gptq_backend;

#define GPTQ_ERRMSG_SIZE 512

struct gptq_ctx {
    gptq_ctx_options opts;
    int32_t backend_id;                  /* GPTQ_BACKEND_CPU or _CUDA */
    const struct gptq_backend *backend;  /* the backend's vtable */
    void *backend_state;                 /* owned by the backend */
    void *cuda_module;                   /* dlopen handle of libgptq-cuda.so, or NULL */
    int32_t threads;                     /* resolved thread count (>= 1) */
    int last_status;
    char last_error[GPTQ_ERRMSG_SIZE];
    /* Seconds spent in backend calls by the last operations (bench/ reads these). */
    struct {
        double blas_s, gemm_s, factor_s, block_s;
    } prof;
    /* Scratch kept between calls (gptq__scratch): big activation buffers that a forward
     * pass would otherwise allocate, fault in and zero once per layer and batch. */
    struct {
        void *p;
        size_t bytes;
    } scratch[3];
};

/* The scratch slots; a slot serves one caller at a time. */
enum { GPTQ_SCRATCH_LAYER = 0, GPTQ_SCRATCH_HEAD = 1, GPTQ_SCRATCH_HESSIAN = 2 };

/* A buffer of at least `bytes` from the context's slot, kept (and grown) across calls
 * until gptq__scratch_release; NULL with OUT_OF_MEMORY recorded on failure. Do not
 * gptq__free it. */
void *gptq__scratch(gptq_ctx *ctx, int slot, size_t bytes, const char *what);
/* Free every slot (at the end of a whole-model operation, and in gptq_ctx_free). */
void gptq__scratch_release(gptq_ctx *ctx);

/* Several copies of a hot loop, one per x86-64 level, picked at load time (GCC ifunc):
 * for element-wise float code whose rounding does not depend on the vector width. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__)
#define GPTQ_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define GPTQ_MULTIVERSION
#endif

/* Tell the kernel that the bytes [data, data + n) of a tensor of `st` will not be read
 * again soon: for a memory-mapped file, its whole pages leave the process's resident set
 * (they stay in the page cache; a later read faults them back in, unchanged). Does
 * nothing for an image held in memory. */
struct gptq_safetensors;
void gptq__safetensors_release(const struct gptq_safetensors *st, const void *data, size_t n);

/* The process's umask (new files get 0666 & ~umask, directories 0777 & ~umask). */
unsigned gptq__umask(void);

/* Monotonic clock in seconds. */
double gptq__now(void);

/* Record a failure on `ctx` (may be NULL) and return `status`. printf-style message. */
int gptq__fail(gptq_ctx *ctx, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* One macro sets code and message together at the failure site. */
#define GPTQ_FAIL(ctx, status, ...) gptq__fail((ctx), (status), __VA_ARGS__)

/* Evaluate a call returning a status; return it on failure (message already set). */
#define GPTQ_TRY(expr)              \
    do {                            \
        int gptq__rc = (expr);      \
        if (gptq__rc != GPTQ_OK)    \
            return gptq__rc;        \
    } while (0)

/* Log through the context's sink, if any and if the level passes. */
void gptq__log(const gptq_ctx *ctx, int32_t level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Overflow-checked size arithmetic: 0 on success, -1 on overflow or negative input. */
int gptq__mul_size(size_t *out, int64_t a, int64_t b);
int gptq__mul3_size(size_t *out, int64_t a, int64_t b, int64_t c);

/* Allocation that sets OUT_OF_MEMORY on ctx when it fails. Memory is 64-byte aligned;
 * free with gptq__free(). `what` names the buffer in the message. */
void *gptq__alloc(gptq_ctx *ctx, size_t bytes, const char *what);
void *gptq__calloc(gptq_ctx *ctx, size_t bytes, const char *what);
void gptq__free(void *p);

/* 1 if every value is finite. */
int gptq__all_finite(const float *x, size_t n);

/* Run fn(arg, begin, end) over [0, n) split into at most `threads` contiguous ranges
 * (the same ranges whatever threads run them), the calling thread taking the first,
 * the others on the process-wide worker pool (src/core/util.c), or on fresh threads
 * when the pool is busy with another call. Serial when n is small or threads == 1. */
typedef void (*gptq__range_fn)(void *arg, int64_t begin, int64_t end);
void gptq__parallel_for(int32_t threads, int64_t n, int64_t min_per_thread, gptq__range_fn fn,
                        void *arg);

/* float16 conversion (round to nearest even), shared by format/ and io/. */
uint16_t gptq__f32_to_f16(float f);
float gptq__f16_to_f32(uint16_t h);
/* bfloat16 -> float32 (exact). */
float gptq__bf16_to_f32(uint16_t h);

/* The context's error state, kept across a step that may fail without failing the call
 * (an optional buffer, a fallback): save before, restore after such a failure, so that
 * the caller's last error stays what it was (a successful call does not change it). */
typedef struct gptq__err_state {
    int status;
    char msg[GPTQ_ERRMSG_SIZE];
} gptq__err_state;
void gptq__err_save(const gptq_ctx *ctx, gptq__err_state *s);
void gptq__err_restore(gptq_ctx *ctx, const gptq__err_state *s);

/* ctx->backend->buf_alloc with a message on failure: the backend's (CUDA names its
 * error), else "out of <backend> memory for <what> (<bytes> bytes)". NULL on failure. */
void *gptq__buf_alloc(gptq_ctx *ctx, size_t bytes, const char *what);

/* The accumulated H of a Hessian ([in, in], both triangles), for the core. */
const float *gptq__hessian_data(const gptq_hessian *h);

/* add_batch on an H held anywhere the backend can compute (a host array for the CPU, a
 * buf_alloc buffer on a device): *count samples so far, `nsamples` sequences of `seqlen`
 * rows of x [nsamples * seqlen][in] added, through xs, a scratch of the same kind with
 * room for gptq__hessian_chunk_rows(in) rows (x is scaled into it in such chunks, by the
 * backend's scale slot unless host_rows says x and xs are host memory; the SYRK runs per
 * chunk). No finiteness check: gptq_hessian_add makes it on host data,
 * gptq__hessian_fill on the result. */
int gptq__hessian_accumulate(gptq_ctx *ctx, int64_t in, float *h, int64_t *count,
                             const float *x, int64_t nsamples, int64_t seqlen, float *xs,
                             int host_rows);
int64_t gptq__hessian_chunk_rows(int64_t in);
/* Replace h's matrix with the in x in floats of `buf` (a backend buffer, downloaded) and
 * its sample count with nsamples; NUMERIC if H holds NaN or Inf. */
int gptq__hessian_fill(gptq_ctx *ctx, gptq_hessian *h, const float *buf, int64_t nsamples);

#endif /* GPTQ_INTERNAL_H */
