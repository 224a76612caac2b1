/*
 * Contexts, status codes, version and the per-context last error.
 *
 * A context owns everything that other libraries keep in globals: the backend, its
 * state, the thread count, the log sink and the last error. Nothing here is static
 * and mutable, so separate contexts can be used from separate threads at once.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"

const char *gptq_version(void) { return GPTQ_VERSION_STRING; }

uint32_t gptq_version_number(void) { return GPTQ_VERSION_NUMBER; }

const char *gptq_status_str(int status)
{
    switch (status) {
    case GPTQ_OK: return "success";
    case GPTQ_ERR_INVALID_ARGUMENT: return "invalid argument";
    case GPTQ_ERR_OUT_OF_MEMORY: return "out of memory";
    case GPTQ_ERR_NOT_SUPPORTED: return "not supported";
    case GPTQ_ERR_NOT_POSITIVE_DEFINITE: return "Hessian not positive definite";
    case GPTQ_ERR_NUMERIC: return "non-finite value (NaN or Inf)";
    case GPTQ_ERR_IO: return "input/output error";
    case GPTQ_ERR_MALFORMED: return "malformed file or tensor";
    case GPTQ_ERR_SHAPE: return "shape mismatch";
    case GPTQ_ERR_DEVICE: return "device error";
    case GPTQ_ERR_CANCELLED: return "cancelled";
    case GPTQ_ERR_INTERNAL: return "internal error";
    case GPTQ_ERR_NOT_FOUND: return "not found";
    default: return "unknown status";
    }
}

const char *gptq_strerror(int status) { return gptq_status_str(status); }

const char *gptq_backend_name(int32_t backend)
{
    switch (backend) {
    case GPTQ_BACKEND_AUTO: return "auto";
    case GPTQ_BACKEND_CPU: return "cpu";
    case GPTQ_BACKEND_CUDA: return "cuda";
    default: return "unknown";
    }
}

int gptq__fail(gptq_ctx *ctx, int status, const char *fmt, ...)
{
    if (ctx) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->last_error, sizeof ctx->last_error, fmt, ap);
        va_end(ap);
        ctx->last_status = status;
        gptq__log(ctx, GPTQ_LOG_DEBUG, "error %d: %s", status, ctx->last_error);
    }
    return status;
}

void gptq__log(const gptq_ctx *ctx, int32_t level, const char *fmt, ...)
{
    char line[GPTQ_ERRMSG_SIZE];
    va_list ap;

    if (!ctx || !ctx->opts.log || level > ctx->opts.log_level)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    ctx->opts.log(ctx->opts.log_user, level, line);
}

void gptq_ctx_options_init(gptq_ctx_options *opts)
{
    if (!opts)
        return;
    memset(opts, 0, sizeof *opts);
    opts->struct_size = (uint32_t)sizeof *opts;
    opts->backend = GPTQ_BACKEND_CPU;
    opts->threads = 0;
    opts->device = 0;
    opts->log_level = GPTQ_LOG_WARN;
    opts->math = GPTQ_MATH_FP32;
}

/* The size of the first published layout (up to log_level): the smallest struct_size
 * accepted. Members after it are read only when the caller's struct_size covers them. */
#define CTX_OPTIONS_FIRST_SIZE (offsetof(gptq_ctx_options, log_level) + sizeof(int32_t))

static void put_err(char *buf, size_t size, const char *msg)
{
    if (buf && size)
        snprintf(buf, size, "%s", msg);
}

/* Bring up the chosen backend on ctx; `why` receives the reason on failure. */
static int start_backend(gptq_ctx *ctx, char *why, size_t why_size)
{
    int want = ctx->opts.backend;

    if (want == GPTQ_BACKEND_CUDA || want == GPTQ_BACKEND_AUTO) {
        const gptq_backend *table = NULL;
        void *module = NULL;
        char reason[GPTQ_ERRMSG_SIZE] = "";
        int rc = gptq__cuda_backend_open(&module, &table, reason, sizeof reason);
        if (rc == GPTQ_OK) {
            ctx->backend = table;
            ctx->cuda_module = module;
            rc = table->init(ctx, &ctx->backend_state);
            if (rc == GPTQ_OK) {
                ctx->backend_id = GPTQ_BACKEND_CUDA;
                return GPTQ_OK;
            }
            snprintf(reason, sizeof reason, "%s", ctx->last_error);
            ctx->backend = NULL;
        }
        if (want == GPTQ_BACKEND_CUDA) {
            put_err(why, why_size, reason);
            return rc;
        }
        gptq__log(ctx, GPTQ_LOG_INFO, "backend auto: CUDA not usable (%s); using the CPU", reason);
    }
    ctx->backend = gptq__cpu_backend();
    ctx->backend_id = GPTQ_BACKEND_CPU;
    if (ctx->backend->init(ctx, &ctx->backend_state) != GPTQ_OK) {
        put_err(why, why_size, ctx->last_error);
        return ctx->last_status ? ctx->last_status : GPTQ_ERR_INTERNAL;
    }
    return GPTQ_OK;
}

int gptq_ctx_create(const gptq_ctx_options *opts, gptq_ctx **out, char *errbuf, size_t errbuf_size)
{
    gptq_ctx_options defaults, given;
    gptq_ctx *ctx;
    char why[GPTQ_ERRMSG_SIZE];
    int rc;

    put_err(errbuf, errbuf_size, "");
    if (!out) {
        put_err(errbuf, errbuf_size, "gptq_ctx_create: out is NULL");
        return GPTQ_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    if (!opts) {
        gptq_ctx_options_init(&defaults);
        opts = &defaults;
    }
    if (opts->struct_size < CTX_OPTIONS_FIRST_SIZE) {
        put_err(errbuf, errbuf_size,
                "gptq_ctx_create: options.struct_size is too small; call gptq_ctx_options_init()");
        return GPTQ_ERR_INVALID_ARGUMENT;
    }
    /* A caller built against an older header has a shorter struct: read only its
     * bytes, over the defaults (so members it lacks are theirs), and nothing past
     * ours from a newer one. */
    gptq_ctx_options_init(&given);
    memcpy(&given, opts, opts->struct_size < sizeof given ? opts->struct_size : sizeof given);
    given.struct_size = (uint32_t)sizeof given;
    opts = &given;
    if (opts->backend < GPTQ_BACKEND_AUTO || opts->backend > GPTQ_BACKEND_CUDA) {
        snprintf(why, sizeof why, "gptq_ctx_create: unknown backend %d", (int)opts->backend);
        put_err(errbuf, errbuf_size, why);
        return GPTQ_ERR_INVALID_ARGUMENT;
    }
    if (opts->threads < 0 || opts->device < 0) {
        put_err(errbuf, errbuf_size, "gptq_ctx_create: threads and device must be >= 0");
        return GPTQ_ERR_INVALID_ARGUMENT;
    }
    if (opts->math != GPTQ_MATH_FP32 && opts->math != GPTQ_MATH_TF32) {
        snprintf(why, sizeof why,
                 "gptq_ctx_create: unknown math mode %d (GPTQ_MATH_FP32 0 or GPTQ_MATH_TF32 1)",
                 (int)opts->math);
        put_err(errbuf, errbuf_size, why);
        return GPTQ_ERR_INVALID_ARGUMENT;
    }
    ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        put_err(errbuf, errbuf_size, "gptq_ctx_create: out of memory");
        return GPTQ_ERR_OUT_OF_MEMORY;
    }
    ctx->opts = *opts;
    if (opts->threads > 0) {
        ctx->threads = opts->threads;
    } else {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        ctx->threads = n > 0 ? (int32_t)(n > 256 ? 256 : n) : 1;
    }
    why[0] = '\0';
    rc = start_backend(ctx, why, sizeof why);
    if (rc != GPTQ_OK) {
        put_err(errbuf, errbuf_size, why);
        gptq_ctx_free(ctx);
        return rc;
    }
    ctx->last_status = GPTQ_OK;
    ctx->last_error[0] = '\0';
    *out = ctx;
    return GPTQ_OK;
}

void gptq_ctx_free(gptq_ctx *ctx)
{
    if (!ctx)
        return;
    if (ctx->backend && ctx->backend->fini)
        ctx->backend->fini(ctx->backend_state);
    if (ctx->cuda_module)
        gptq__cuda_backend_close(ctx->cuda_module);
    gptq__scratch_release(ctx);
    free(ctx);
}

const char *gptq_ctx_last_error(const gptq_ctx *ctx)
{
    if (!ctx)
        return "no context (gptq_ctx_create failed or was not called)";
    return ctx->last_error;
}

int gptq_ctx_last_status(const gptq_ctx *ctx) { return ctx ? ctx->last_status : GPTQ_ERR_INVALID_ARGUMENT; }

int32_t gptq_ctx_backend(const gptq_ctx *ctx) { return ctx ? ctx->backend_id : GPTQ_BACKEND_CPU; }

int gptq_backend_available(int32_t backend, char *why, size_t why_size)
{
    put_err(why, why_size, "");
    if (backend == GPTQ_BACKEND_CPU || backend == GPTQ_BACKEND_AUTO)
        return 1;
    if (backend == GPTQ_BACKEND_CUDA) {
        gptq_ctx_options o;
        gptq_ctx *ctx = NULL;
        gptq_ctx_options_init(&o);
        o.backend = GPTQ_BACKEND_CUDA;
        if (gptq_ctx_create(&o, &ctx, why, why_size) != GPTQ_OK)
            return 0;
        gptq_ctx_free(ctx);
        return 1;
    }
    put_err(why, why_size, "unknown backend");
    return 0;
}

int gptq_ctx_synchronize(gptq_ctx *ctx)
{
    if (!ctx || !ctx->backend || !ctx->backend->synchronize)
        return GPTQ_OK; /* the CPU backend finishes every call before returning */
    return ctx->backend->synchronize(ctx);
}

int gptq_ctx_device_bandwidth(gptq_ctx *ctx, double *bytes_per_second)
{
    if (!ctx || !bytes_per_second)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_ctx_device_bandwidth: %s is NULL",
                         !ctx ? "ctx" : "bytes_per_second");
    *bytes_per_second = 0.0;
    if (!ctx->backend->device_bandwidth)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "gptq_ctx_device_bandwidth: the %s backend has no device",
                         ctx->backend->name);
    return ctx->backend->device_bandwidth(ctx, bytes_per_second);
}
