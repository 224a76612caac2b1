/*
 * Packing and unpacking of the "gptq" (v1) and "gptq_v2" checkpoint tensors
 * (FORMATS.md section 3; AutoGPTQ qlinear_cuda.py `pack`, GPTQModel
 * `pack_original` / `convert_gptq_v2_to_v1_format_module`).
 *
 *   qweight [ceil(C*bits/32), R]   codes[r, j] along the input axis, one stream per r
 *   qzeros  [ng, ceil(R*bits/32)]  stored zero points along the output axis
 *   scales  [ng, R]                fl16(float32 scale), round to nearest even
 *   g_idx   [C]                    copied
 *
 * The stored zero point is zero - 1 in v1 and the zero itself in v2. A v1 zero of 0
 * has no representation; the three packing modes write it the way each producer does
 * (CLEAN: (0 - 1) mod 2^bits in its own field; GPTQMODEL: whole-word subtraction with
 * borrow; AUTOGPTQ: see pack_autogptq.c). Readers here decode a v1 field as
 * (stored + 1) mod 2^bits, as the reference checker does.
 *
 * GPTQMODEL's word arithmetic is defined on the valid bits of a word: when R*bits is
 * not a multiple of 32 the last word holds fewer fields, and it is computed modulo
 * 2^(its valid bits) so the padding stays zero and unpacking stays the exact inverse.
 * (GPTQModel itself requires R % 32 == 0, where this is plain uint32 wrap-around.)
 */
#include <math.h>
#include <string.h>

#include "format.h"

/* Dimensions beyond this are rejected, which keeps every size product in int64. */
#define MAX_DIM ((int64_t)1 << 40)

static int mode_valid(int32_t mode)
{
    return mode == GPTQ_PACK_CLEAN || mode == GPTQ_PACK_AUTOGPTQ || mode == GPTQ_PACK_GPTQMODEL;
}

static int check_dims(gptq_ctx *ctx, const char *fn, int32_t bits, int64_t R, int64_t C,
                      int64_t ng)
{
    size_t n;
    if (!gptq__bits_supported(bits))
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED, "%s: bits = %d (supported: 2, 3, 4, 8)",
                         fn, bits);
    if (R < 1 || C < 1 || ng < 1 || R > MAX_DIM || C > MAX_DIM || ng > MAX_DIM)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "%s: out_features = %lld, in_features = %lld, ngroups = %lld "
                         "(each must be in [1, 2^40])",
                         fn, (long long)R, (long long)C, (long long)ng);
    if (gptq__mul3_size(&n, R, C, sizeof(int32_t)) != 0 ||
        gptq__mul3_size(&n, ng, R, sizeof(float)) != 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: %lld x %lld does not fit in memory",
                         fn, (long long)R, (long long)C);
    return GPTQ_OK;
}

int gptq_packed_shape(int32_t bits, int64_t out_features, int64_t in_features, int64_t ngroups,
                      int64_t qweight_shape[2], int64_t qzeros_shape[2])
{
    if (!qweight_shape || !qzeros_shape)
        return GPTQ_ERR_INVALID_ARGUMENT;
    GPTQ_TRY(check_dims(NULL, "gptq_packed_shape", bits, out_features, in_features, ngroups));
    qweight_shape[0] = gptq__packed_words(in_features, bits);
    qweight_shape[1] = out_features;
    qzeros_shape[0] = ngroups;
    qzeros_shape[1] = gptq__packed_words(out_features, bits);
    return GPTQ_OK;
}

int gptq__packed_check(gptq_ctx *ctx, const gptq_packed *p, const char *fn)
{
    if (!p)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: packed tensors are NULL", fn);
    GPTQ_TRY(check_dims(ctx, fn, p->bits, p->out_features, p->in_features, p->ngroups));
    if (p->format != GPTQ_FORMAT_V1 && p->format != GPTQ_FORMAT_V2)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "%s: format = %d (expected GPTQ_FORMAT_V1 or GPTQ_FORMAT_V2)", fn,
                         p->format);
    if (!p->qweight || !p->qzeros || !p->scales || !p->g_idx)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "%s: a packed buffer is NULL (qweight %s, qzeros %s, scales %s, g_idx %s)",
                         fn, p->qweight ? "set" : "NULL", p->qzeros ? "set" : "NULL",
                         p->scales ? "set" : "NULL", p->g_idx ? "set" : "NULL");
    for (int64_t j = 0; j < p->in_features; j++)
        if (p->g_idx[j] < 0 || p->g_idx[j] >= p->ngroups)
            return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: g_idx[%lld] = %d is outside [0, %lld)",
                             fn, (long long)j, p->g_idx[j], (long long)p->ngroups);
    return GPTQ_OK;
}

/* ---- validation of the unpacked input --------------------------------------- */

/* Index of the first value outside [0, maxq], or -1. The first loop has no early exit
 * so it vectorises; the search only runs when something is wrong. */
static int64_t first_out_of_range(const int32_t *v, int64_t n, int32_t maxq)
{
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad |= (uint32_t)v[i] > (uint32_t)maxq;
    if (!bad)
        return -1;
    for (int64_t i = 0; i < n; i++)
        if ((uint32_t)v[i] > (uint32_t)maxq)
            return i;
    return -1;
}

static int check_unpacked(gptq_ctx *ctx, const gptq_unpacked *src, int32_t mode)
{
    const int64_t R = src->out_features, C = src->in_features, ng = src->ngroups;
    const int32_t maxq = (1 << src->bits) - 1;
    int64_t i;

    if (!src->scales || !src->zeros || !src->g_idx || (mode != GPTQ_PACK_AUTOGPTQ && !src->codes))
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_pack: a source buffer is NULL (codes %s, scales %s, zeros %s, "
                         "g_idx %s)",
                         src->codes ? "set" : "NULL", src->scales ? "set" : "NULL",
                         src->zeros ? "set" : "NULL", src->g_idx ? "set" : "NULL");
    for (int64_t j = 0; j < C; j++)
        if (src->g_idx[j] < 0 || src->g_idx[j] >= ng)
            return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                             "gptq_pack: g_idx[%lld] = %d is outside [0, %lld)", (long long)j,
                             src->g_idx[j], (long long)ng);
    if (mode != GPTQ_PACK_AUTOGPTQ && (i = first_out_of_range(src->codes, R * C, maxq)) >= 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_pack: codes[%lld, %lld] = %d is outside [0, %d] for %d bits",
                         (long long)(i / C), (long long)(i % C), src->codes[i], maxq, src->bits);
    if ((i = first_out_of_range(src->zeros, ng * R, maxq)) >= 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_pack: zeros[%lld, %lld] = %d is outside [0, %d] for %d bits",
                         (long long)(i / R), (long long)(i % R), src->zeros[i], maxq, src->bits);
    for (i = 0; i < ng * R; i++) {
        /* fl16 of a finite float is infinite exactly when it overflows (>= 65520). */
        uint16_t h = gptq__f32_to_f16(src->scales[i]);
        if ((h & 0x7C00u) == 0x7C00u)
            return GPTQ_FAIL(ctx, GPTQ_ERR_NUMERIC,
                             "gptq_pack: scales[%lld, %lld] = %g is %s", (long long)(i / R),
                             (long long)(i % R), (double)src->scales[i],
                             isfinite(src->scales[i]) ? "too large for float16 (max 65504)"
                                                      : "not finite");
    }
    if (mode == GPTQ_PACK_AUTOGPTQ) {
        if (!src->q)
            return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                             "gptq_pack: GPTQ_PACK_AUTOGPTQ re-derives codes from q, which is NULL");
        if (!gptq__all_finite(src->q, (size_t)(R * C)))
            return GPTQ_FAIL(ctx, GPTQ_ERR_NUMERIC, "gptq_pack: q holds NaN or Inf");
    }
    return GPTQ_OK;
}

/* ---- qweight ---------------------------------------------------------------- */

typedef struct codes_job {
    int32_t *codes;         /* [R, C] */
    uint32_t *qweight;      /* [words, R] */
    int64_t R, C;
    int32_t bits;
} codes_job;

static void pack_codes_rows(void *arg, int64_t r0, int64_t r1)
{
    const codes_job *jb = arg;
    for (int64_t r = r0; r < r1; r++) {
        const int32_t *row = jb->codes + r * jb->C;
        gptq__bitwriter bw;
        gptq__bitwriter_init(&bw, jb->qweight + r, jb->R, jb->bits);
        for (int64_t j = 0; j < jb->C; j++)
            gptq__bitwriter_put(&bw, (uint32_t)row[j]);
        gptq__bitwriter_flush(&bw);
    }
}

static void unpack_codes_rows(void *arg, int64_t r0, int64_t r1)
{
    const codes_job *jb = arg;
    for (int64_t r = r0; r < r1; r++) {
        int32_t *row = jb->codes + r * jb->C;
        gptq__bitreader br;
        gptq__bitreader_init(&br, jb->qweight + r, jb->R, jb->bits);
        for (int64_t j = 0; j < jb->C; j++)
            row[j] = (int32_t)gptq__bitreader_get(&br);
    }
}

/* Rows per thread so that a thread has at least ~64k elements to move. */
static int64_t rows_per_thread(int64_t C) { return C >= 65536 ? 1 : 65536 / C; }

/* ---- qzeros ----------------------------------------------------------------- */

/* GPTQModel's per-word v1 constant: 1 in every field (0x11111111 for 4 bits). */
static uint32_t gm_word_constant(int32_t bits)
{
    return bits == 2 ? 0x55555555u : bits == 4 ? 0x11111111u : 0x01010101u;
}

/* Mask of the bits of word k that hold fields of an R-element stream. */
static uint32_t valid_mask(int64_t k, int64_t R, int32_t bits)
{
    int64_t n = R * bits - 32 * k;
    return n >= 32 ? 0xFFFFFFFFu : (1u << n) - 1u;
}

static void pack_zeros(const gptq_unpacked *src, int32_t mode, gptq_packed *dst)
{
    const int32_t bits = src->bits, maxq = (1 << bits) - 1;
    const int64_t R = src->out_features, nzw = gptq__packed_words(R, bits);
    const int v1 = dst->format == GPTQ_FORMAT_V1;
    const int per_word = v1 && mode == GPTQ_PACK_GPTQMODEL && bits != 3;

    for (int64_t g = 0; g < src->ngroups; g++) {
        const int32_t *z = src->zeros + g * R;
        uint32_t *words = (uint32_t *)dst->qzeros + g * nzw;
        gptq__bitwriter bw;
        gptq__bitwriter_init(&bw, words, 1, bits);
        /* GPTQModel packs v2 and converts per word; everything else (and GPTQModel's
         * 3-bit path, _shift_gptq_qzeros) stores (zero - 1) mod 2^bits per field. */
        for (int64_t r = 0; r < R; r++)
            gptq__bitwriter_put(&bw, (uint32_t)(v1 && !per_word ? (z[r] - 1) & maxq : z[r]));
        gptq__bitwriter_flush(&bw);
        if (per_word) {
            const uint32_t c = gm_word_constant(bits);
            for (int64_t k = 0; k < nzw; k++) {
                uint32_t m = valid_mask(k, R, bits);
                words[k] = (words[k] - (c & m)) & m;
            }
        }
    }
}

static void unpack_zeros(const gptq_packed *src, int32_t mode, int32_t *zeros)
{
    const int32_t bits = src->bits, maxq = (1 << bits) - 1;
    const int64_t R = src->out_features, nzw = gptq__packed_words(R, bits);
    const int v1 = src->format == GPTQ_FORMAT_V1;
    const int per_word = v1 && mode == GPTQ_PACK_GPTQMODEL && bits != 3;
    const uint32_t c = gm_word_constant(bits);

    for (int64_t g = 0; g < src->ngroups; g++) {
        const uint32_t *words = (const uint32_t *)src->qzeros + g * nzw;
        int32_t *z = zeros + g * R;
        if (per_word) {
            /* Add GPTQModel's constant back to the whole word (exact inverse of its
             * subtraction, borrows included), then read the fields as v2. */
            const int32_t per = 32 / bits;
            for (int64_t k = 0; k < nzw; k++) {
                uint32_t m = valid_mask(k, R, bits);
                uint32_t w = (words[k] + (c & m)) & m;
                for (int32_t e = 0; e < per && k * per + e < R; e++)
                    z[k * per + e] = (int32_t)((w >> (bits * e)) & (uint32_t)maxq);
            }
            continue;
        }
        gptq__bitreader br;
        gptq__bitreader_init(&br, words, 1, bits);
        for (int64_t r = 0; r < R; r++) {
            uint32_t s = gptq__bitreader_get(&br);
            z[r] = (int32_t)(v1 ? (s + 1u) & (uint32_t)maxq : s);
        }
    }
}

/* ---- public entry points ---------------------------------------------------- */

int gptq_pack(gptq_ctx *ctx, const gptq_unpacked *src, int32_t mode, gptq_packed *dst)
{
    int64_t R, C, ng;

    if (!src || !dst)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_pack: %s is NULL",
                         src ? "dst" : "src");
    if (!mode_valid(mode))
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_pack: mode = %d (expected a GPTQ_PACK_* value)", mode);
    R = src->out_features;
    C = src->in_features;
    ng = src->ngroups;
    GPTQ_TRY(check_dims(ctx, "gptq_pack", src->bits, R, C, ng));
    if (dst->bits != src->bits)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_pack: dst bits = %d, src bits = %d",
                         dst->bits, src->bits);
    if (dst->out_features != R || dst->in_features != C || dst->ngroups != ng)
        return GPTQ_FAIL(ctx, GPTQ_ERR_SHAPE,
                         "gptq_pack: dst is %lld x %lld with %lld groups, src %lld x %lld with "
                         "%lld groups",
                         (long long)dst->out_features, (long long)dst->in_features,
                         (long long)dst->ngroups, (long long)R, (long long)C, (long long)ng);
    if (dst->format != GPTQ_FORMAT_V1 && dst->format != GPTQ_FORMAT_V2)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_pack: dst format = %d (expected GPTQ_FORMAT_V1 or _V2)", dst->format);
    if (!dst->qweight || !dst->qzeros || !dst->scales || !dst->g_idx)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_pack: a dst buffer is NULL");
    if (mode == GPTQ_PACK_AUTOGPTQ) {
        /* AutoGPTQ writes v1 only and silently truncates tails (in // 32 * bits rows),
         * so its bytes are only defined for multiples of 32. */
        if (dst->format != GPTQ_FORMAT_V1)
            return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                             "gptq_pack: GPTQ_PACK_AUTOGPTQ writes v1 (\"gptq\") only");
        if (R % 32 != 0 || C % 32 != 0)
            return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                             "gptq_pack: GPTQ_PACK_AUTOGPTQ needs in/out features that are "
                             "multiples of 32 (got %lld x %lld); AutoGPTQ would drop the tail",
                             (long long)R, (long long)C);
    }
    /* Everything is checked before anything is written. */
    GPTQ_TRY(check_unpacked(ctx, src, mode));

    for (int64_t i = 0; i < ng * R; i++)
        dst->scales[i] = gptq__f32_to_f16(src->scales[i]);
    memcpy(dst->g_idx, src->g_idx, (size_t)C * sizeof(int32_t));
    if (mode == GPTQ_PACK_AUTOGPTQ) {
        gptq__pack_autogptq(src, dst);
        return GPTQ_OK;
    }
    {
        codes_job jb = {src->codes, (uint32_t *)dst->qweight, R, C, src->bits};
        gptq__parallel_for(gptq__ctx_threads(ctx), R, rows_per_thread(C), pack_codes_rows, &jb);
    }
    pack_zeros(src, mode, dst);
    return GPTQ_OK;
}

int gptq_pack_result(gptq_ctx *ctx, const gptq_result *r, int32_t mode, gptq_packed *dst)
{
    gptq_config cfg;
    gptq_unpacked u;

    if (!r)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_pack_result: result is NULL");
    gptq_config_init(&cfg);
    if (gptq_result_config(r, &cfg) != GPTQ_OK)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_pack_result: cannot read the result's configuration");
    /* The result's buffers are read only; gptq_unpacked has non-const pointers because
     * gptq_unpack writes through the same struct. */
    u.bits = cfg.bits;
    u.group_size = cfg.group_size;
    u.out_features = gptq_result_out_features(r);
    u.in_features = gptq_result_in_features(r);
    u.ngroups = gptq_result_ngroups(r);
    u.codes = (int32_t *)gptq_result_codes(r);
    u.scales = (float *)gptq_result_scales(r);
    u.zeros = (int32_t *)gptq_result_zeros(r);
    u.g_idx = (int32_t *)gptq_result_g_idx(r);
    u.q = (float *)gptq_result_q(r);
    return gptq_pack(ctx, &u, mode, dst);
}

int gptq_unpack(gptq_ctx *ctx, const gptq_packed *src, int32_t mode, gptq_unpacked *dst)
{
    int64_t R, C, ng;

    GPTQ_TRY(gptq__packed_check(ctx, src, "gptq_unpack"));
    if (!mode_valid(mode))
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_unpack: mode = %d (expected a GPTQ_PACK_* value)", mode);
    if (!dst)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_unpack: dst is NULL");
    R = src->out_features;
    C = src->in_features;
    ng = src->ngroups;
    if (dst->bits != src->bits || dst->out_features != R || dst->in_features != C ||
        dst->ngroups != ng)
        return GPTQ_FAIL(ctx, GPTQ_ERR_SHAPE,
                         "gptq_unpack: dst is %d-bit %lld x %lld with %lld groups, src %d-bit "
                         "%lld x %lld with %lld groups",
                         dst->bits, (long long)dst->out_features, (long long)dst->in_features,
                         (long long)dst->ngroups, src->bits, (long long)R, (long long)C,
                         (long long)ng);
    if (!dst->codes || !dst->scales || !dst->zeros || !dst->g_idx)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_unpack: a dst buffer (codes, scales, zeros, g_idx) is NULL");

    {
        codes_job jb = {dst->codes, (uint32_t *)src->qweight, R, C, src->bits};
        gptq__parallel_for(gptq__ctx_threads(ctx), R, rows_per_thread(C), unpack_codes_rows, &jb);
    }
    for (int64_t i = 0; i < ng * R; i++)
        dst->scales[i] = gptq__f16_to_f32(src->scales[i]);
    unpack_zeros(src, mode, dst->zeros);
    memcpy(dst->g_idx, src->g_idx, (size_t)C * sizeof(int32_t));
    return GPTQ_OK;
}
