/*
 * Header test (C++): the public headers must compile as C++11 with
 * -Wall -Wextra -pedantic -Werror and give C linkage (extern "C"), so that C++
 * programs can include them directly. Compile-only; .ci/run builds it against the
 * installed headers.
 */
#include <gptq/gptq.h>
#include <gptq/safetensors.h>

static_assert(sizeof(gptq_ctx_options().struct_size) == 4, "struct_size is uint32_t");
static_assert(sizeof(gptq_config().struct_size) == 4, "struct_size is uint32_t");
static_assert(GPTQ_VERSION_NUMBER >= 0, "version number");

namespace {

/* extern "C" linkage: these pointer types only match C-linkage declarations on
 * compilers that distinguish them, and the calls must resolve without mangling. */
extern "C" typedef int quantize_fn(gptq_ctx *, const float *, int64_t, int64_t,
                                   const gptq_hessian *, const gptq_config *, gptq_result **);

} // namespace

int gptq_header_test_cpp();

int gptq_header_test_cpp()
{
    gptq_ctx_options opts;
    gptq_config cfg;
    gptq_ctx *ctx = nullptr;
    quantize_fn *quantize = &gptq_layer_quantize;
    const char *version = GPTQ_VERSION_STRING;

    (void)quantize;
    (void)version;
    gptq_ctx_options_init(&opts);
    gptq_config_init(&cfg);
    int status = gptq_ctx_create(&opts, &ctx, nullptr, 0);
    gptq_ctx_free(ctx);
    return status + static_cast<int>(gptq_dtype_bits(GPTQ_DTYPE_F16)) + GPTQ_PACK_CLEAN;
}
