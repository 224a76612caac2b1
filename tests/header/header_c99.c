/*
 * Header test (C): the public headers must compile on their own as strict C99 with
 * -Wall -Wextra -pedantic -Werror (and as C11), the way a consumer or a binding
 * generator sees them. Compile-only; .ci/run builds it against the installed headers.
 */
#include <gptq/gptq.h>
#include <gptq/safetensors.h>
#include <gptq/gptq.h> /* include guards: a second include is harmless */

/* The fixed-width ABI rule: option structs start with a uint32_t struct_size. */
typedef char gptq_header_check_ctx_options[
    sizeof(((gptq_ctx_options *)0)->struct_size) == 4 ? 1 : -1];
typedef char gptq_header_check_config[sizeof(((gptq_config *)0)->struct_size) == 4 ? 1 : -1];
typedef char gptq_header_check_version[GPTQ_VERSION_NUMBER >= 0 ? 1 : -1];

int gptq_header_test_c(void);

/* Use every kind of declaration once so that a typo in a prototype shows up. */
int gptq_header_test_c(void)
{
    gptq_ctx_options opts;
    gptq_config cfg;
    gptq_unpacked unpacked;
    gptq_packed packed;
    gptq_tensor_info info;
    gptq_ctx *ctx = NULL;
    gptq_hessian *h = NULL;
    gptq_result *r = NULL;
    gptq_safetensors *st = NULL;
    gptq_safetensors_writer *w = NULL;
    gptq_log_fn log = NULL;
    const char *version = GPTQ_VERSION_STRING;
    int (*quantize)(gptq_ctx *, const float *, int64_t, int64_t, const gptq_hessian *,
                    const gptq_config *, gptq_result **) = gptq_layer_quantize;
    int status = GPTQ_OK;

    (void)unpacked;
    (void)packed;
    (void)info;
    (void)h;
    (void)r;
    (void)st;
    (void)w;
    (void)log;
    (void)version;
    (void)quantize;
    gptq_ctx_options_init(&opts);
    gptq_config_init(&cfg);
    opts.backend = GPTQ_BACKEND_CPU;
    cfg.bits = 4;
    if (gptq_ctx_create(&opts, &ctx, NULL, 0) != GPTQ_OK)
        status = GPTQ_ERR_INTERNAL;
    gptq_ctx_free(ctx);
    return status + GPTQ_DTYPE_F32 + GPTQ_PACK_CLEAN + GPTQ_FORMAT_V1 + GPTQ_LOG_WARN +
           GPTQ_ST_MAX_DIMS;
}
