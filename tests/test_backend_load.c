/*
 * The run-time loader of the CUDA backend module, without a GPU: a stub module stands
 * in for libgptq-cuda.so (tests/modules/stub_module.c).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "gptq/gptq.h"

static int create(int32_t backend, const char *module, const char *mode, gptq_ctx **ctx,
                  char *err, size_t n)
{
    gptq_ctx_options o;
    gptq_ctx_options_init(&o);
    o.backend = backend;
    o.device = 3;
    setenv("GPTQ_CUDA_MODULE_PATH", module, 1);
    setenv("STUB_MODE", mode, 1);
    return gptq_ctx_create(&o, ctx, err, n);
}

Test(backend_load, missing_module)
{
    gptq_ctx *c = NULL;
    char err[512];
    cr_assert_eq(create(GPTQ_BACKEND_CUDA, "/nonexistent/libgptq-cuda.so.0", "ok", &c, err, sizeof err),
                 GPTQ_ERR_NOT_SUPPORTED);
    cr_assert_null(c);
    cr_assert(strstr(err, "cannot load /nonexistent/libgptq-cuda.so.0") != NULL, "%s", err);
    cr_assert_eq(create(GPTQ_BACKEND_AUTO, "/nonexistent/libgptq-cuda.so.0", "ok", &c, err, sizeof err),
                 GPTQ_OK);
    cr_assert_eq(gptq_ctx_backend(c), GPTQ_BACKEND_CPU);
    gptq_ctx_free(c);
}

Test(backend_load, missing_entry_point)
{
    gptq_ctx *c = NULL;
    char err[512];
    cr_assert_eq(create(GPTQ_BACKEND_CUDA, STUB_NOENTRY_PATH, "ok", &c, err, sizeof err),
                 GPTQ_ERR_NOT_SUPPORTED);
    cr_assert(strstr(err, "has no symbol gptq_cuda_backend_v1") != NULL, "%s", err);
}

Test(backend_load, abi_mismatch)
{
    gptq_ctx *c = NULL;
    char err[512];
    cr_assert_eq(create(GPTQ_BACKEND_CUDA, STUB_MODULE_PATH, "abi", &c, err, sizeof err),
                 GPTQ_ERR_NOT_SUPPORTED);
    cr_assert(strstr(err, "backend ABI") != NULL, "%s", err);
}

Test(backend_load, no_device)
{
    gptq_ctx *c = NULL;
    char err[512];
    cr_assert_eq(create(GPTQ_BACKEND_CUDA, STUB_MODULE_PATH, "nodev", &c, err, sizeof err),
                 GPTQ_ERR_DEVICE);
    cr_assert_null(c);
    cr_assert(strstr(err, "stub: no CUDA device (device 3 requested)") != NULL, "%s", err);
    /* auto falls back to the CPU. */
    cr_assert_eq(create(GPTQ_BACKEND_AUTO, STUB_MODULE_PATH, "nodev", &c, err, sizeof err), GPTQ_OK);
    cr_assert_eq(gptq_ctx_backend(c), GPTQ_BACKEND_CPU);
    gptq_ctx_free(c);
}

Test(backend_load, module_accepted)
{
    gptq_ctx *c = NULL;
    char err[512];
    cr_assert_eq(create(GPTQ_BACKEND_CUDA, STUB_MODULE_PATH, "ok", &c, err, sizeof err), GPTQ_OK,
                 "%s", err);
    cr_assert_eq(gptq_ctx_backend(c), GPTQ_BACKEND_CUDA);
    gptq_ctx_free(c);
}
