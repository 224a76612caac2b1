/*
 * libFuzzer harness for the safetensors reader: any byte string goes through
 * gptq_safetensors_open_memory, and whatever opens is walked with every getter and
 * typed reader, so a header that validates but lies about its data shows up here.
 *
 * Build: cmake -DGPTQ_BUILD_FUZZ=ON -DCMAKE_C_COMPILER=clang; run (fuzz/corpus is
 * git-ignored: start it from any small .safetensors files, e.g. the writer tests'):
 *   mkdir -p fuzz/corpus/safetensors
 *   ./fuzz_safetensors -max_total_time=60 -max_len=4096 -dict=fuzz/safetensors.dict \
 *       fuzz/corpus/safetensors
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gptq/gptq.h"
#include "gptq/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reading is bounded by the input size times a small factor (a BOOL becomes an int32),
 * so converting every tensor cannot run out of memory; skip the rest anyway. */
#define MAX_ELEMENTS ((size_t)1 << 22)

static volatile uint8_t sink;

static void walk(gptq_ctx *ctx, const gptq_safetensors *st)
{
    gptq_tensor_info info, again;
    const char *key, *value;

    for (int64_t i = 0; i < gptq_safetensors_metadata_count(st); i++) {
        if (gptq_safetensors_metadata_at(st, i, &key, &value) != GPTQ_OK ||
            gptq_safetensors_metadata(st, key) == NULL)
            abort();
        (void)strlen(value);
    }
    for (int64_t i = 0; i < gptq_safetensors_count(st); i++) {
        size_t n;
        void *buf;
        if (gptq_safetensors_info(st, i, &info) != GPTQ_OK ||
            gptq_safetensors_find(st, info.name, &again) != GPTQ_OK || again.data != info.data)
            abort();
        /* Touch every byte the reader says belongs to the tensor, for ASan to check. */
        for (size_t b = 0; b < info.nbytes; b++)
            sink ^= ((const uint8_t *)info.data)[b];
        n = (size_t)info.numel;
        if (n > MAX_ELEMENTS)
            continue;
        buf = malloc(n * sizeof(float) + 1);
        if (!buf)
            continue;
        (void)gptq_safetensors_read_f32(ctx, st, info.name, buf, n);
        (void)gptq_safetensors_read_i32(ctx, st, info.name, buf, n);
        free(buf);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static gptq_ctx *ctx;
    gptq_safetensors *st = NULL;

    /* One context for the whole run: creating one per input would only fuzz start-up. */
    if (!ctx && gptq_ctx_create(NULL, &ctx, NULL, 0) != GPTQ_OK)
        abort();
    if (gptq_safetensors_open_memory(ctx, data, size, &st) == GPTQ_OK) {
        walk(ctx, st);
        gptq_safetensors_free(st);
    } else if (st != NULL || gptq_ctx_last_error(ctx)[0] == '\0') {
        abort(); /* a failure must leave *out NULL and say why */
    }
    return 0;
}
