/*
 * A stand-in for libgptq-cuda.so used to test the module loader on machines without a
 * GPU. STUB_MODE (environment) picks its behaviour:
 *   "abi"     the table claims another backend ABI version
 *   "nodev"   init() fails with GPTQ_ERR_DEVICE through the host's fail()
 *   "ok"      init() succeeds; the table borrows nothing else (the test only creates
 *             and frees a context)
 *   "math"    init() fails with GPTQ_ERR_DEVICE and a message that reports the math
 *             mode read through the host's math() (tests/test_tf32.c)
 * Built twice: once exporting the entry point, once without it (STUB_NO_ENTRY).
 */
#include <stdlib.h>
#include <string.h>

#include "backend.h"

static const gptq_host_services *host;

static int stub_init(gptq_ctx *ctx, void **state)
{
    const char *mode = getenv("STUB_MODE");
    *state = NULL;
    if (mode && strcmp(mode, "nodev") == 0)
        return host->fail(ctx, GPTQ_ERR_DEVICE, "stub: no CUDA device (device %d requested)",
                          (int)host->device(ctx));
    if (mode && strcmp(mode, "math") == 0)
        return host->fail(ctx, GPTQ_ERR_DEVICE, "stub: math mode %d", (int)host->math(ctx));
    return GPTQ_OK;
}

static void stub_fini(void *state) { (void)state; }

static gptq_backend table = {
    .abi_version = GPTQ_BACKEND_ABI,
    .name = "stub",
    .init = stub_init,
    .fini = stub_fini,
};

#ifndef STUB_NO_ENTRY
__attribute__((visibility("default"))) const gptq_backend *
gptq_cuda_backend_v1(const gptq_host_services *h);

const gptq_backend *gptq_cuda_backend_v1(const gptq_host_services *h)
{
    const char *mode = getenv("STUB_MODE");
    host = h;
    table.abi_version = (mode && strcmp(mode, "abi") == 0) ? GPTQ_BACKEND_ABI + 100 : GPTQ_BACKEND_ABI;
    return &table;
}
#else
__attribute__((visibility("default"))) int gptq_stub_placeholder(void);
int gptq_stub_placeholder(void) { return 0; }
#endif
