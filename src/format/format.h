/*
 * Shared pieces of src/format (never installed): the bit stream of the GPTQ
 * checkpoint layout and the checks every consumer of packed tensors runs.
 *
 * The layout (FORMATS.md section 3.2; AutoGPTQ qlinear_cuda.py `pack`): along the
 * packed axis the int32 words form one little-endian bit stream, word k holding stream
 * bits [32k, 32k + 32), element j at bits [bits*j, bits*j + bits), least significant
 * bit first. For 2/4/8 bits no element crosses a word; for 3 bits elements 10 and 21
 * of every 32 do, low bits in the lower word. A stream of n elements takes
 * ceil(n * bits / 32) words, the unused high bits of the last word are zero.
 *
 * qweight packs along the input axis, so the stream of output row r is column r of a
 * row-major [words, R] matrix: consecutive words are `stride` = R elements apart. The
 * reader and writer below therefore take a stride.
 */
#ifndef GPTQ_FORMAT_FORMAT_H
#define GPTQ_FORMAT_FORMAT_H

#include "internal.h"

/* Sequential writer: put() the elements in order, then flush(). Every word of the
 * stream is written exactly once (no need to clear the destination first). */
typedef struct gptq__bitwriter {
    uint32_t *word;   /* next word to write */
    int64_t stride;   /* elements between consecutive words */
    uint64_t acc;     /* pending bits, LSB first */
    int32_t nacc;     /* number of pending bits, < 32 between calls */
    int32_t bits;
} gptq__bitwriter;

static inline void gptq__bitwriter_init(gptq__bitwriter *bw, uint32_t *first, int64_t stride,
                                        int32_t bits)
{
    bw->word = first;
    bw->stride = stride;
    bw->acc = 0;
    bw->nacc = 0;
    bw->bits = bits;
}

/* `v` must already be masked to `bits` bits. */
static inline void gptq__bitwriter_put(gptq__bitwriter *bw, uint32_t v)
{
    bw->acc |= (uint64_t)v << bw->nacc;
    bw->nacc += bw->bits;
    if (bw->nacc >= 32) {
        *bw->word = (uint32_t)bw->acc;
        bw->word += bw->stride;
        bw->acc >>= 32;
        bw->nacc -= 32;
    }
}

/* Write the last, partly filled word (zero padded), if any. */
static inline void gptq__bitwriter_flush(gptq__bitwriter *bw)
{
    if (bw->nacc > 0) {
        *bw->word = (uint32_t)bw->acc;
        bw->acc = 0;
        bw->nacc = 0;
    }
}

/* Sequential reader; it reads a word only when the next element needs it, so reading
 * n elements touches exactly ceil(n * bits / 32) words. */
typedef struct gptq__bitreader {
    const uint32_t *word;
    int64_t stride;
    uint64_t acc;
    int32_t nacc;
    int32_t bits;
    uint32_t mask;
} gptq__bitreader;

static inline void gptq__bitreader_init(gptq__bitreader *br, const uint32_t *first,
                                        int64_t stride, int32_t bits)
{
    br->word = first;
    br->stride = stride;
    br->acc = 0;
    br->nacc = 0;
    br->bits = bits;
    br->mask = (1u << bits) - 1u;
}

static inline uint32_t gptq__bitreader_get(gptq__bitreader *br)
{
    uint32_t v;
    if (br->nacc < br->bits) {
        br->acc |= (uint64_t)*br->word << br->nacc;
        br->word += br->stride;
        br->nacc += 32;
    }
    v = (uint32_t)br->acc & br->mask;
    br->acc >>= br->bits;
    br->nacc -= br->bits;
    return v;
}

/* 1 for the bit widths of the "gptq" family (2, 3, 4, 8), else 0. */
static inline int gptq__bits_supported(int32_t bits)
{
    return bits == 2 || bits == 3 || bits == 4 || bits == 8;
}

/* Words that hold n elements of `bits` bits (n >= 0, no overflow for n < 2^58). */
static inline int64_t gptq__packed_words(int64_t n, int32_t bits)
{
    return (n * bits + 31) / 32;
}

/* Thread count to use for a context that may be NULL. */
static inline int32_t gptq__ctx_threads(const gptq_ctx *ctx)
{
    return ctx && ctx->threads > 0 ? ctx->threads : 1;
}

/* Check a packed layer before it is read (pack.c): non-NULL buffers, supported bits,
 * a known format, positive dimensions whose packed sizes fit in memory, and g_idx
 * values in [0, ng) (MALFORMED otherwise: a checkpoint is untrusted input). `fn` names
 * the calling API function in messages. */
int gptq__packed_check(gptq_ctx *ctx, const gptq_packed *p, const char *fn);

/* AutoGPTQ-exact packing of qweight and v1 qzeros (pack_autogptq.c). The caller has
 * checked the arguments: bits 2/3/4/8, R and C multiples of 32, v1, src->q set, zeros
 * in range. Writes dst->qweight and dst->qzeros only. */
void gptq__pack_autogptq(const gptq_unpacked *src, gptq_packed *dst);

#endif /* GPTQ_FORMAT_FORMAT_H */
