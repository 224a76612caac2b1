/*
 * Tests of src/format: float16 conversion, bit packing (gptq v1 / gptq_v2, the CLEAN,
 * GPTQMODEL and AUTOGPTQ modes), golden words from FORMATS.md section 3.4 and byte
 * identity with AutoGPTQ's checkpoints in tests/data/gptq-reference.
 */
#include <criterion/criterion.h>
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gptq/gptq.h"
#include "gptq/safetensors.h"
#include "internal.h"
#include "testrng.h"

/* ---- helpers -------------------------------------------------------------------- */

static float f32_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* A random layer: codes/zeros uniform in [0, maxq] (both ends forced to occur), scales
 * in (0, 1), g_idx = j / gs or (act_order) a shuffled assignment of groups. */
static gptq_unpacked make_layer(int32_t bits, int64_t R, int64_t C, int32_t gs, int act_order,
                                uint64_t seed)
{
    gptq_unpacked u;
    const int32_t maxq = (1 << bits) - 1;
    const int64_t ng = gs < 0 ? 1 : (C + gs - 1) / gs;

    memset(&u, 0, sizeof u);
    u.bits = bits;
    u.group_size = gs;
    u.out_features = R;
    u.in_features = C;
    u.ngroups = ng;
    u.codes = malloc((size_t)(R * C) * sizeof(int32_t));
    u.scales = malloc((size_t)(ng * R) * sizeof(float));
    u.zeros = malloc((size_t)(ng * R) * sizeof(int32_t));
    u.g_idx = malloc((size_t)C * sizeof(int32_t));
    u.q = malloc((size_t)(R * C) * sizeof(float));
    cr_assert(u.codes && u.scales && u.zeros && u.g_idx && u.q);
    for (int64_t i = 0; i < R * C; i++)
        u.codes[i] = (int32_t)(rng_next(&seed) % (uint64_t)(maxq + 1));
    u.codes[0] = 0;
    u.codes[R * C - 1] = maxq;
    for (int64_t i = 0; i < ng * R; i++) {
        u.zeros[i] = (int32_t)(rng_next(&seed) % (uint64_t)(maxq + 1));
        u.scales[i] = (float)((rng_next(&seed) >> 11) * 0x1p-53) + 1e-3f;
    }
    u.zeros[0] = 0;
    u.zeros[ng * R - 1] = maxq;
    for (int64_t j = 0; j < C; j++)
        u.g_idx[j] = gs < 0 ? 0 : (int32_t)(j / gs);
    if (act_order)
        for (int64_t j = C - 1; j > 0; j--) { /* Fisher-Yates keeps every group's size */
            int64_t k = (int64_t)(rng_next(&seed) % (uint64_t)(j + 1));
            int32_t t = u.g_idx[j];
            u.g_idx[j] = u.g_idx[k];
            u.g_idx[k] = t;
        }
    for (int64_t r = 0; r < R; r++)
        for (int64_t j = 0; j < C; j++) {
            int64_t g = u.g_idx[j];
            u.q[r * C + j] = u.scales[g * R + r] * (float)(u.codes[r * C + j] - u.zeros[g * R + r]);
        }
    return u;
}

static void free_layer(gptq_unpacked *u)
{
    free(u->codes);
    free(u->scales);
    free(u->zeros);
    free(u->g_idx);
    free(u->q);
}

/* Packed buffers sized with gptq_packed_shape(). */
static gptq_packed make_packed(int32_t bits, int32_t format, int64_t R, int64_t C, int64_t ng)
{
    gptq_packed p;
    int64_t qw[2], qz[2];

    cr_assert_eq(gptq_packed_shape(bits, R, C, ng, qw, qz), GPTQ_OK);
    memset(&p, 0, sizeof p);
    p.bits = bits;
    p.format = format;
    p.out_features = R;
    p.in_features = C;
    p.ngroups = ng;
    p.qweight = calloc((size_t)(qw[0] * qw[1]), sizeof(int32_t));
    p.qzeros = calloc((size_t)(qz[0] * qz[1]), sizeof(int32_t));
    p.scales = calloc((size_t)(ng * R), sizeof(uint16_t));
    p.g_idx = calloc((size_t)C, sizeof(int32_t));
    cr_assert(p.qweight && p.qzeros && p.scales && p.g_idx);
    return p;
}

static void free_packed(gptq_packed *p)
{
    free(p->qweight);
    free(p->qzeros);
    free(p->scales);
    free(p->g_idx);
}

/* Element j of a bit stream whose words are `stride` apart, read straight from the
 * definition in FORMATS.md 3.2 (independent of the library's bit reader). */
static uint32_t stream_at(const int32_t *words, int64_t stride, int32_t bits, int64_t j)
{
    int64_t bit = bits * j;
    uint64_t lo = (uint32_t)words[(bit / 32) * stride];
    uint64_t hi = (bit % 32) + bits > 32 ? (uint32_t)words[(bit / 32 + 1) * stride] : 0;
    return (uint32_t)(((lo | hi << 32) >> (bit % 32)) & ((1u << bits) - 1u));
}

static gptq_ctx *new_ctx(int32_t threads)
{
    gptq_ctx_options o;
    gptq_ctx *ctx = NULL;
    gptq_ctx_options_init(&o);
    o.threads = threads;
    cr_assert_eq(gptq_ctx_create(&o, &ctx, NULL, 0), GPTQ_OK);
    return ctx;
}

/* ---- float16 ------------------------------------------------------------------ */

Test(fp16, every_half_round_trips)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = gptq_fp16_to_fp32((uint16_t)h);
        cr_assert_eq(gptq_fp32_to_fp16(f), h, "0x%04x -> %a -> 0x%04x", h, (double)f,
                     gptq_fp32_to_fp16(f));
    }
}

Test(fp16, widening_is_exact)
{
    cr_expect_eq(gptq_fp16_to_fp32(0x3C00), 1.0f);
    cr_expect_eq(gptq_fp16_to_fp32(0xC000), -2.0f);
    cr_expect_eq(gptq_fp16_to_fp32(0x7BFF), 65504.0f);
    cr_expect_eq(gptq_fp16_to_fp32(0x0001), 0x1p-24f);
    cr_expect_eq(gptq_fp16_to_fp32(0x03FF), 1023 * 0x1p-24f);
    cr_expect_eq(gptq_fp16_to_fp32(0x0400), 0x1p-14f);
    cr_expect_eq(bits_of(gptq_fp16_to_fp32(0x8000)), 0x80000000u);
    cr_expect(isinf(gptq_fp16_to_fp32(0x7C00)) && gptq_fp16_to_fp32(0x7C00) > 0);
    cr_expect(isinf(gptq_fp16_to_fp32(0xFC00)) && gptq_fp16_to_fp32(0xFC00) < 0);
    cr_expect(isnan(gptq_fp16_to_fp32(0x7E00)));
}

/* Every midpoint between neighbouring finite halves is exact in float32: it must go to
 * the even neighbour, and one float32 ulp either side to the nearer one. */
Test(fp16, ties_to_even_everywhere)
{
    for (uint32_t h = 0; h < 0x7BFF; h++) {
        float lo = gptq_fp16_to_fp32((uint16_t)h), hi = gptq_fp16_to_fp32((uint16_t)(h + 1));
        float mid = (float)(((double)lo + (double)hi) / 2);
        uint32_t even = (h & 1) ? h + 1 : h;
        cr_assert_eq((double)mid, ((double)lo + (double)hi) / 2);
        cr_assert_eq(gptq_fp32_to_fp16(mid), even, "tie above 0x%04x", h);
        cr_assert_eq(gptq_fp32_to_fp16(nextafterf(mid, 0.0f)), h);
        cr_assert_eq(gptq_fp32_to_fp16(nextafterf(mid, INFINITY)), h + 1);
        cr_assert_eq(gptq_fp32_to_fp16(-mid), even | 0x8000u);
    }
}

Test(fp16, subnormals_overflow_and_nan)
{
    cr_expect_eq(gptq_fp32_to_fp16(0x1p-24f), 0x0001);
    cr_expect_eq(gptq_fp32_to_fp16(0x1p-25f), 0x0000);          /* tie to even 0 */
    cr_expect_eq(gptq_fp32_to_fp16(nextafterf(0x1p-25f, 1.0f)), 0x0001);
    cr_expect_eq(gptq_fp32_to_fp16(0x1.8p-24f), 0x0002);        /* 1.5 ulp -> 2 */
    cr_expect_eq(gptq_fp32_to_fp16(0x1.4p-23f), 0x0002);        /* 2.5 ulp -> 2 */
    cr_expect_eq(gptq_fp32_to_fp16(1023.5f * 0x1p-24f), 0x0400); /* into the normals */
    cr_expect_eq(gptq_fp32_to_fp16(1e-10f), 0x0000);
    cr_expect_eq(gptq_fp32_to_fp16(-1e-10f), 0x8000);
    cr_expect_eq(gptq_fp32_to_fp16(0x1p-149f), 0x0000);          /* float32 subnormal */
    cr_expect_eq(gptq_fp32_to_fp16(6e-5f), 0x03EF);              /* AutoGPTQ's subnormal scales */
    cr_expect_eq(gptq_fp32_to_fp16(65504.0f), 0x7BFF);
    cr_expect_eq(gptq_fp32_to_fp16(nextafterf(65520.0f, 0.0f)), 0x7BFF);
    cr_expect_eq(gptq_fp32_to_fp16(65520.0f), 0x7C00);
    cr_expect_eq(gptq_fp32_to_fp16(1e10f), 0x7C00);
    cr_expect_eq(gptq_fp32_to_fp16(-1e10f), 0xFC00);
    cr_expect_eq(gptq_fp32_to_fp16(-INFINITY), 0xFC00);
    cr_expect_eq(gptq_fp32_to_fp16(1.0f + 0x1p-11f), 0x3C00);    /* tie, even below */
    cr_expect_eq(gptq_fp32_to_fp16(1.0f + 0x3p-11f), 0x3C02);    /* tie, even above */
    cr_expect_eq(gptq_fp32_to_fp16(f32_of(0x7FC00000u)), 0x7E00);
    cr_expect_eq(gptq_fp32_to_fp16(f32_of(0xFF800001u)) & 0xFC00u, 0xFC00u);
    cr_expect_neq(gptq_fp32_to_fp16(f32_of(0x7F800001u)), 0x7C00); /* NaN stays NaN */
}

Test(fp16, bfloat16_widening)
{
    cr_expect_eq(gptq__bf16_to_f32(0x3F80), 1.0f);
    cr_expect_eq(gptq__bf16_to_f32(0xC0A0), -5.0f);
    cr_expect_eq(bits_of(gptq__bf16_to_f32(0x0001)), 0x00010000u);
    cr_expect(isinf(gptq__bf16_to_f32(0x7F80)));
}

/* ---- shapes and round trips ------------------------------------------------------ */

Test(pack, packed_shape)
{
    int64_t qw[2], qz[2];
    cr_assert_eq(gptq_packed_shape(3, 40, 172, 6, qw, qz), GPTQ_OK);
    cr_expect(qw[0] == 17 && qw[1] == 40 && qz[0] == 6 && qz[1] == 4);
    cr_assert_eq(gptq_packed_shape(4, 4096, 11008, 86, qw, qz), GPTQ_OK);
    cr_expect(qw[0] == 1376 && qw[1] == 4096 && qz[0] == 86 && qz[1] == 512);
    cr_assert_eq(gptq_packed_shape(8, 1, 1, 1, qw, qz), GPTQ_OK);
    cr_expect(qw[0] == 1 && qz[1] == 1);
    cr_expect_eq(gptq_packed_shape(5, 32, 32, 1, qw, qz), GPTQ_ERR_NOT_SUPPORTED);
    cr_expect_eq(gptq_packed_shape(4, 0, 32, 1, qw, qz), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect_eq(gptq_packed_shape(4, 32, 32, 1, NULL, qz), GPTQ_ERR_INVALID_ARGUMENT);
}

static void check_round_trip(gptq_ctx *ctx, int32_t bits, int32_t format, int32_t mode,
                             int64_t R, int64_t C, int32_t gs, int act, uint64_t seed)
{
    gptq_unpacked u = make_layer(bits, R, C, gs, act, seed), back;
    gptq_packed p = make_packed(bits, format, R, C, u.ngroups);
    const int64_t ng = u.ngroups;
    const int32_t maxq = (1 << bits) - 1;
    int64_t qw[2], qz[2];

    cr_assert_eq(gptq_pack(ctx, &u, mode, &p), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    gptq_packed_shape(bits, R, C, ng, qw, qz);

    /* The layout itself, read back by the definition, and zero padding in tails. */
    for (int64_t r = 0; r < R; r++) {
        for (int64_t j = 0; j < C; j++)
            cr_assert_eq(stream_at(p.qweight + r, R, bits, j), (uint32_t)u.codes[r * C + j],
                         "bits %d: code [%lld, %lld]", bits, (long long)r, (long long)j);
        if ((C * bits) % 32)
            cr_assert_eq((uint32_t)p.qweight[(qw[0] - 1) * R + r] >> ((C * bits) % 32), 0u);
    }
    for (int64_t g = 0; g < ng; g++) {
        if (mode == GPTQ_PACK_CLEAN || bits == 3 || format == GPTQ_FORMAT_V2)
            for (int64_t r = 0; r < R; r++) {
                uint32_t z = (uint32_t)u.zeros[g * R + r];
                uint32_t want = format == GPTQ_FORMAT_V1 ? (z - 1u) & (uint32_t)maxq : z;
                cr_assert_eq(stream_at(p.qzeros + g * qz[1], 1, bits, r), want);
            }
        if ((R * bits) % 32)
            cr_assert_eq((uint32_t)p.qzeros[g * qz[1] + qz[1] - 1] >> ((R * bits) % 32), 0u);
    }

    back = u;
    back.codes = calloc((size_t)(R * C), sizeof(int32_t));
    back.scales = calloc((size_t)(ng * R), sizeof(float));
    back.zeros = calloc((size_t)(ng * R), sizeof(int32_t));
    back.g_idx = calloc((size_t)C, sizeof(int32_t));
    back.q = NULL;
    cr_assert_eq(gptq_unpack(ctx, &p, mode, &back), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    cr_assert_eq(memcmp(back.codes, u.codes, (size_t)(R * C) * sizeof(int32_t)), 0);
    cr_assert_eq(memcmp(back.g_idx, u.g_idx, (size_t)C * sizeof(int32_t)), 0);
    for (int64_t i = 0; i < ng * R; i++) {
        cr_assert_eq(back.zeros[i], u.zeros[i], "bits %d fmt %d mode %d: zero %lld", bits,
                     format, mode, (long long)i);
        cr_assert_eq(back.scales[i], gptq_fp16_to_fp32(gptq_fp32_to_fp16(u.scales[i])));
        cr_assert_eq(p.scales[i], gptq_fp32_to_fp16(u.scales[i]));
    }
    free(back.codes);
    free(back.scales);
    free(back.zeros);
    free(back.g_idx);
    free_packed(&p);
    free_layer(&u);
}

Test(pack, round_trips_all_bits_formats_modes)
{
    static const struct { int64_t R, C; int32_t gs; int act; } shapes[] = {
        {40, 172, 32, 0}, {40, 100, 32, 0}, {40, 172, 32, 1}, {64, 128, -1, 0},
        {33, 65, 7, 1},   {1, 1, -1, 0},    {96, 256, 128, 1}, {31, 97, 128, 0},
    };
    static const int32_t bits[] = {2, 3, 4, 8};
    gptq_ctx *ctx = new_ctx(3);
    uint64_t seed = 1;

    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (size_t b = 0; b < 4; b++)
            for (int32_t fmt = GPTQ_FORMAT_V1; fmt <= GPTQ_FORMAT_V2; fmt++) {
                check_round_trip(ctx, bits[b], fmt, GPTQ_PACK_CLEAN, shapes[s].R, shapes[s].C,
                                 shapes[s].gs, shapes[s].act, seed++);
                check_round_trip(ctx, bits[b], fmt, GPTQ_PACK_GPTQMODEL, shapes[s].R,
                                 shapes[s].C, shapes[s].gs, shapes[s].act, seed++);
            }
    gptq_ctx_free(ctx);
}

/* GPTQModel's v1 words are its v2 words minus the per-word constant, with borrow. */
Test(pack, gptqmodel_words_are_v2_minus_constant)
{
    static const uint32_t cst[9] = {0, 0, 0x55555555u, 0, 0x11111111u, 0, 0, 0, 0x01010101u};
    for (int32_t bits = 2; bits <= 8; bits *= 2) {
        gptq_unpacked u = make_layer(bits, 64, 64, 32, 0, 77 + (uint64_t)bits);
        gptq_packed v1 = make_packed(bits, GPTQ_FORMAT_V1, 64, 64, u.ngroups);
        gptq_packed v2 = make_packed(bits, GPTQ_FORMAT_V2, 64, 64, u.ngroups);
        u.zeros[1] = 0; /* forces a borrow */
        cr_assert_eq(gptq_pack(NULL, &u, GPTQ_PACK_GPTQMODEL, &v1), GPTQ_OK);
        cr_assert_eq(gptq_pack(NULL, &u, GPTQ_PACK_CLEAN, &v2), GPTQ_OK);
        for (int64_t k = 0; k < u.ngroups * 64 * bits / 32; k++)
            cr_assert_eq((uint32_t)v1.qzeros[k], (uint32_t)v2.qzeros[k] - cst[bits]);
        free_packed(&v1);
        free_packed(&v2);
        free_layer(&u);
    }
}

/* ---- golden words (FORMATS.md 3.4) -------------------------------------------------- */

static void pack_zeros_only(int32_t bits, int32_t format, int32_t mode, const int32_t *zeros,
                            int64_t R, uint32_t *words)
{
    gptq_unpacked u = make_layer(bits, R, 32, -1, 0, 5);
    gptq_packed p = make_packed(bits, format, R, 32, 1);
    memcpy(u.zeros, zeros, (size_t)R * sizeof(int32_t));
    for (int64_t r = 0; r < R; r++) /* keep q consistent for AUTOGPTQ */
        for (int64_t j = 0; j < 32; j++)
            u.q[r * 32 + j] = u.scales[r] * (float)(u.codes[r * 32 + j] - u.zeros[r]);
    cr_assert_eq(gptq_pack(NULL, &u, mode, &p), GPTQ_OK);
    memcpy(words, p.qzeros, (size_t)(R * bits / 32) * sizeof(uint32_t));
    free_packed(&p);
    free_layer(&u);
}

Test(pack, symmetric_zero_words)
{
    static const struct { int32_t bits; uint32_t v1[3], v2[3]; } tab[] = {
        {2, {0x55555555u}, {0xAAAAAAAAu}},
        {3, {0xDB6DB6DBu, 0xB6DB6DB6u, 0x6DB6DB6Du}, {0x24924924u, 0x49249249u, 0x92492492u}},
        {4, {0x77777777u}, {0x88888888u}},
        {8, {0x7F7F7F7Fu}, {0x80808080u}},
    };
    int32_t zeros[32];
    uint32_t w[8];

    for (size_t t = 0; t < 4; t++) {
        const int32_t bits = tab[t].bits, nw = bits;
        for (int r = 0; r < 32; r++)
            zeros[r] = 1 << (bits - 1);
        for (int32_t mode = GPTQ_PACK_CLEAN; mode <= GPTQ_PACK_GPTQMODEL; mode++) {
            pack_zeros_only(bits, GPTQ_FORMAT_V1, mode, zeros, 32, w);
            for (int32_t k = 0; k < nw; k++)
                cr_expect_eq(w[k], tab[t].v1[k % (bits == 3 ? 3 : 1)],
                             "v1 %d-bit mode %d word %d: 0x%08x", bits, mode, k, w[k]);
            if (mode == GPTQ_PACK_AUTOGPTQ)
                continue;
            pack_zeros_only(bits, GPTQ_FORMAT_V2, mode, zeros, 32, w);
            for (int32_t k = 0; k < nw; k++)
                cr_expect_eq(w[k], tab[t].v2[k % (bits == 3 ? 3 : 1)],
                             "v2 %d-bit mode %d word %d: 0x%08x", bits, mode, k, w[k]);
        }
    }
}

/* zeros 8,0,8,8,8,8,8,8: AutoGPTQ 0xFFFFFFF7, GPTQModel 0x777776F7, clean 0x777777F7. */
Test(pack, zero_of_zero_in_v1)
{
    int32_t zeros[32], back[32];
    uint32_t w[4];
    const uint32_t expect[3] = {0x777777F7u, 0xFFFFFFF7u, 0x777776F7u};

    for (int r = 0; r < 32; r++)
        zeros[r] = 8;
    zeros[1] = 0;
    for (int32_t mode = GPTQ_PACK_CLEAN; mode <= GPTQ_PACK_GPTQMODEL; mode++) {
        gptq_packed p = make_packed(4, GPTQ_FORMAT_V1, 32, 32, 1);
        gptq_unpacked u;
        pack_zeros_only(4, GPTQ_FORMAT_V1, mode, zeros, 32, w);
        cr_expect_eq(w[0], expect[mode], "mode %d: 0x%08x", mode, w[0]);
        for (int k = 1; k < 4; k++)
            cr_expect_eq(w[k], 0x77777777u);

        /* Reading back: the producer's own reading recovers the zeros except for
         * AutoGPTQ's all-ones fields, which read as 0 ((15 + 1) mod 16). */
        memcpy(p.qzeros, w, sizeof w);
        memset(&u, 0, sizeof u);
        u.bits = 4;
        u.out_features = 32;
        u.in_features = 32;
        u.ngroups = 1;
        u.codes = calloc(32 * 32, sizeof(int32_t));
        u.scales = calloc(32, sizeof(float));
        u.zeros = back;
        u.g_idx = calloc(32, sizeof(int32_t));
        cr_assert_eq(gptq_unpack(NULL, &p, mode, &u), GPTQ_OK);
        for (int r = 0; r < 32; r++)
            cr_expect_eq(back[r], mode == GPTQ_PACK_AUTOGPTQ && r >= 1 && r < 8 ? 0 : zeros[r],
                         "mode %d row %d", mode, r);
        free(u.codes);
        free(u.scales);
        free(u.g_idx);
        free_packed(&p);
    }
}

/* AutoGPTQ's spill: codes outside [0, maxq] are OR-ed in unmasked. */
Test(pack, autogptq_spill)
{
    gptq_unpacked u = make_layer(4, 32, 32, -1, 0, 9);
    gptq_packed p = make_packed(4, GPTQ_FORMAT_V1, 32, 32, 1);
    for (int r = 0; r < 32; r++) {
        u.scales[r] = 1.0f;
        u.zeros[r] = 8;
        for (int j = 0; j < 32; j++)
            u.q[r * 32 + j] = 0.0f; /* code 8 */
    }
    u.q[0 * 32 + 0] = 8.0f;  /* code 16: field 0 reads 0, bit 4 set */
    u.q[0 * 32 + 1] = -6.0f; /* code 2 at field 1 */
    u.q[0 * 32 + 7] = -9.0f; /* code -1 at field 7: 0xFFFFFFFF << 28 */
    cr_assert_eq(gptq_pack(NULL, &u, GPTQ_PACK_AUTOGPTQ, &p), GPTQ_OK);
    cr_expect_eq((uint32_t)p.qweight[0], 0xF8888830u, "0x%08x", (uint32_t)p.qweight[0]);
    cr_expect_eq((uint32_t)p.qweight[1 * 32 + 0], 0x88888888u);
    cr_expect_eq((uint32_t)p.qweight[0 * 32 + 1], 0x88888888u);
    free_packed(&p);
    free_layer(&u);

    /* 3 bits: the straddling elements 10 and 21 keep only their own bits. */
    u = make_layer(3, 32, 32, -1, 0, 10);
    p = make_packed(3, GPTQ_FORMAT_V1, 32, 32, 1);
    for (int r = 0; r < 32; r++) {
        u.scales[r] = 1.0f;
        u.zeros[r] = 4;
        for (int j = 0; j < 32; j++)
            u.q[r * 32 + j] = -4.0f; /* code 0 */
    }
    u.q[10] = -5.0f; /* code -1 */
    u.q[21] = -5.0f;
    cr_assert_eq(gptq_pack(NULL, &u, GPTQ_PACK_AUTOGPTQ, &p), GPTQ_OK);
    cr_expect_eq((uint32_t)p.qweight[0 * 32], 0xC0000000u);
    cr_expect_eq((uint32_t)p.qweight[1 * 32], 0x80000001u);
    cr_expect_eq((uint32_t)p.qweight[2 * 32], 0x00000003u);
    free_packed(&p);
    free_layer(&u);
}

/* Without zero points of 0 or subnormal scales AutoGPTQ's bytes equal the clean ones. */
Test(pack, autogptq_equals_clean_on_ordinary_layers)
{
    static const int32_t bits[] = {2, 3, 4, 8};
    for (size_t b = 0; b < 4; b++) {
        gptq_unpacked u = make_layer(bits[b], 64, 96, 32, 1, 300 + b);
        gptq_packed a = make_packed(bits[b], GPTQ_FORMAT_V1, 64, 96, u.ngroups);
        gptq_packed c = make_packed(bits[b], GPTQ_FORMAT_V1, 64, 96, u.ngroups);
        int64_t qw[2], qz[2];
        for (int64_t i = 0; i < u.ngroups * 64; i++) {
            u.zeros[i] = u.zeros[i] ? u.zeros[i] : 1;
            /* float16-exact scales, so that fl16(scale) = scale */
            u.scales[i] = gptq_fp16_to_fp32(gptq_fp32_to_fp16(u.scales[i]));
        }
        for (int64_t r = 0; r < 64; r++)
            for (int64_t j = 0; j < 96; j++) {
                int64_t g = u.g_idx[j];
                u.q[r * 96 + j] = u.scales[g * 64 + r] * (float)(u.codes[r * 96 + j] - u.zeros[g * 64 + r]);
            }
        cr_assert_eq(gptq_pack(NULL, &u, GPTQ_PACK_AUTOGPTQ, &a), GPTQ_OK);
        cr_assert_eq(gptq_pack(NULL, &u, GPTQ_PACK_CLEAN, &c), GPTQ_OK);
        gptq_packed_shape(bits[b], 64, 96, u.ngroups, qw, qz);
        cr_expect_eq(memcmp(a.qweight, c.qweight, (size_t)(qw[0] * qw[1]) * 4), 0, "%d bits", bits[b]);
        cr_expect_eq(memcmp(a.qzeros, c.qzeros, (size_t)(qz[0] * qz[1]) * 4), 0, "%d bits", bits[b]);
        free_packed(&a);
        free_packed(&c);
        free_layer(&u);
    }
}

/* ---- argument checking ----------------------------------------------------------- */

Test(pack, rejects_bad_arguments)
{
    gptq_ctx *ctx = new_ctx(1);
    gptq_unpacked u = make_layer(4, 40, 100, 32, 0, 11);
    gptq_packed p = make_packed(4, GPTQ_FORMAT_V1, 40, 100, u.ngroups);

    cr_expect_eq(gptq_pack(ctx, NULL, GPTQ_PACK_CLEAN, &p), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect_eq(gptq_pack(ctx, &u, 7, &p), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect_neq(strlen(gptq_ctx_last_error(ctx)), 0);

    /* AutoGPTQ mode: v1 and multiples of 32 only */
    cr_expect_eq(gptq_pack(ctx, &u, GPTQ_PACK_AUTOGPTQ, &p), GPTQ_ERR_NOT_SUPPORTED);
    cr_expect(strstr(gptq_ctx_last_error(ctx), "multiples of 32") != NULL);

    u.codes[5] = 16;
    cr_expect_eq(gptq_pack(ctx, &u, GPTQ_PACK_CLEAN, &p), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(gptq_ctx_last_error(ctx), "codes[0, 5] = 16") != NULL, "%s",
              gptq_ctx_last_error(ctx));
    u.codes[5] = -1;
    cr_expect_eq(gptq_pack(ctx, &u, GPTQ_PACK_CLEAN, &p), GPTQ_ERR_INVALID_ARGUMENT);
    u.codes[5] = 3;
    u.zeros[3] = 16;
    cr_expect_eq(gptq_pack(ctx, &u, GPTQ_PACK_CLEAN, &p), GPTQ_ERR_INVALID_ARGUMENT);
    u.zeros[3] = 3;
    u.g_idx[7] = (int32_t)u.ngroups;
    cr_expect_eq(gptq_pack(ctx, &u, GPTQ_PACK_CLEAN, &p), GPTQ_ERR_INVALID_ARGUMENT);
    u.g_idx[7] = 0;

    u.scales[2] = NAN;
    cr_expect_eq(gptq_pack(ctx, &u, GPTQ_PACK_CLEAN, &p), GPTQ_ERR_NUMERIC);
    u.scales[2] = INFINITY;
    cr_expect_eq(gptq_pack(ctx, &u, GPTQ_PACK_CLEAN, &p), GPTQ_ERR_NUMERIC);
    u.scales[2] = 65520.0f; /* rounds to float16 infinity */
    cr_expect_eq(gptq_pack(ctx, &u, GPTQ_PACK_CLEAN, &p), GPTQ_ERR_NUMERIC);
    cr_expect(strstr(gptq_ctx_last_error(ctx), "float16") != NULL);
    u.scales[2] = 65519.0f; /* rounds to 65504 */
    cr_expect_eq(gptq_pack(ctx, &u, GPTQ_PACK_CLEAN, &p), GPTQ_OK);

    p.out_features = 41;
    cr_expect_eq(gptq_pack(ctx, &u, GPTQ_PACK_CLEAN, &p), GPTQ_ERR_SHAPE);
    p.out_features = 40;
    p.bits = 3;
    cr_expect_eq(gptq_pack(ctx, &u, GPTQ_PACK_CLEAN, &p), GPTQ_ERR_INVALID_ARGUMENT);
    p.bits = 4;
    p.format = 3;
    cr_expect_eq(gptq_pack(ctx, &u, GPTQ_PACK_CLEAN, &p), GPTQ_ERR_INVALID_ARGUMENT);
    p.format = GPTQ_FORMAT_V1;
    u.bits = 5;
    p.bits = 5;
    cr_expect_eq(gptq_pack(ctx, &u, GPTQ_PACK_CLEAN, &p), GPTQ_ERR_NOT_SUPPORTED);
    u.bits = 4;
    p.bits = 4;

    /* unpack: g_idx from a file is untrusted */
    cr_assert_eq(gptq_pack(ctx, &u, GPTQ_PACK_CLEAN, &p), GPTQ_OK);
    p.g_idx[99] = -1;
    cr_expect_eq(gptq_unpack(ctx, &p, GPTQ_PACK_CLEAN, &u), GPTQ_ERR_MALFORMED);
    cr_expect(strstr(gptq_ctx_last_error(ctx), "g_idx[99] = -1") != NULL);
    p.g_idx[99] = 3;
    u.in_features = 99;
    cr_expect_eq(gptq_unpack(ctx, &p, GPTQ_PACK_CLEAN, &u), GPTQ_ERR_SHAPE);
    u.in_features = 100;
    cr_expect_eq(gptq_unpack(ctx, &p, GPTQ_PACK_CLEAN, NULL), GPTQ_ERR_INVALID_ARGUMENT);

    /* AutoGPTQ mode needs q and v1 */
    free_packed(&p);
    free_layer(&u);
    u = make_layer(4, 32, 64, 32, 0, 12);
    p = make_packed(4, GPTQ_FORMAT_V2, 32, 64, u.ngroups);
    cr_expect_eq(gptq_pack(ctx, &u, GPTQ_PACK_AUTOGPTQ, &p), GPTQ_ERR_NOT_SUPPORTED);
    p.format = GPTQ_FORMAT_V1;
    {
        float *q = u.q;
        u.q = NULL;
        cr_expect_eq(gptq_pack(ctx, &u, GPTQ_PACK_AUTOGPTQ, &p), GPTQ_ERR_INVALID_ARGUMENT);
        u.q = q;
        u.codes[0] = 99; /* codes are not read by AutoGPTQ mode */
        cr_expect_eq(gptq_pack(ctx, &u, GPTQ_PACK_AUTOGPTQ, &p), GPTQ_OK);
        u.q[3] = NAN;
        cr_expect_eq(gptq_pack(ctx, &u, GPTQ_PACK_AUTOGPTQ, &p), GPTQ_ERR_NUMERIC);
    }
    free_packed(&p);
    free_layer(&u);
    gptq_ctx_free(ctx);
}

/* ---- gptq_pack_result -------------------------------------------------------------- */

Test(pack, pack_result_round_trip)
{
    gptq_ctx *ctx = new_ctx(2);
    gptq_config cfg;
    gptq_result *res = NULL;
    const int64_t R = 48, C = 96;
    float *w = malloc((size_t)(R * C) * sizeof(float));
    uint64_t seed = 42;

    for (int64_t i = 0; i < R * C; i++)
        w[i] = (float)((double)(rng_next(&seed) >> 11) * 0x1p-53 - 0.5);
    gptq_config_init(&cfg);
    cfg.bits = 3;
    cfg.group_size = 32;
    cfg.sym = 0;
    cfg.rtn = 1;
    cr_assert_eq(gptq_layer_quantize(ctx, w, R, C, NULL, &cfg, &res), GPTQ_OK, "%s",
                 gptq_ctx_last_error(ctx));
    {
        gptq_packed p = make_packed(3, GPTQ_FORMAT_V2, R, C, gptq_result_ngroups(res));
        gptq_unpacked u;
        cr_assert_eq(gptq_pack_result(ctx, res, GPTQ_PACK_CLEAN, &p), GPTQ_OK, "%s",
                     gptq_ctx_last_error(ctx));
        memset(&u, 0, sizeof u);
        u.bits = 3;
        u.out_features = R;
        u.in_features = C;
        u.ngroups = gptq_result_ngroups(res);
        u.codes = malloc((size_t)(R * C) * sizeof(int32_t));
        u.scales = malloc((size_t)(u.ngroups * R) * sizeof(float));
        u.zeros = malloc((size_t)(u.ngroups * R) * sizeof(int32_t));
        u.g_idx = malloc((size_t)C * sizeof(int32_t));
        cr_assert_eq(gptq_unpack(ctx, &p, GPTQ_PACK_CLEAN, &u), GPTQ_OK);
        cr_expect_eq(memcmp(u.codes, gptq_result_codes(res), (size_t)(R * C) * 4), 0);
        cr_expect_eq(memcmp(u.zeros, gptq_result_zeros(res), (size_t)(u.ngroups * R) * 4), 0);
        cr_expect_eq(memcmp(u.g_idx, gptq_result_g_idx(res), (size_t)C * 4), 0);
        free(u.codes);
        free(u.scales);
        free(u.zeros);
        free(u.g_idx);
        free_packed(&p);
    }
    cr_expect_eq(gptq_pack_result(ctx, NULL, GPTQ_PACK_CLEAN, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    gptq_result_free(res);
    free(w);
    gptq_ctx_free(ctx);
}

/* ---- byte identity with AutoGPTQ on the reference cases ----------------------------- */

static int64_t meta_int(const gptq_safetensors *st, const char *key)
{
    const char *v = gptq_safetensors_metadata(st, key);
    cr_assert(v != NULL, "metadata %s missing", key);
    return strtoll(v, NULL, 10);
}

static void *read_tensor(gptq_ctx *ctx, const gptq_safetensors *st, const char *name,
                         size_t count, int is_float)
{
    void *p = malloc(count * 4);
    int rc = is_float ? gptq_safetensors_read_f32(ctx, st, name, p, count)
                      : gptq_safetensors_read_i32(ctx, st, name, p, count);
    cr_assert_eq(rc, GPTQ_OK, "%s: %s", name, gptq_ctx_last_error(ctx));
    return p;
}

static void check_case(gptq_ctx *ctx, const char *path)
{
    gptq_safetensors *st = NULL;
    gptq_tensor_info ti;
    gptq_unpacked u;
    gptq_packed ag, clean;
    int64_t qw[2], qz[2];
    const char *name = strrchr(path, '/') + 1;

    cr_assert_eq(gptq_safetensors_open(ctx, path, &st), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    memset(&u, 0, sizeof u);
    u.bits = (int32_t)meta_int(st, "bits");
    u.group_size = (int32_t)meta_int(st, "group_size");
    u.out_features = meta_int(st, "out_features");
    u.in_features = meta_int(st, "in_features");
    u.ngroups = meta_int(st, "ngroups");
    const int64_t R = u.out_features, C = u.in_features, ng = u.ngroups;
    cr_assert_eq(gptq_packed_shape(u.bits, R, C, ng, qw, qz), GPTQ_OK);

    int32_t *ref_qweight = read_tensor(ctx, st, "qweight", (size_t)(qw[0] * qw[1]), 0);
    int32_t *ref_qzeros = read_tensor(ctx, st, "qzeros", (size_t)(qz[0] * qz[1]), 0);
    uint16_t *ref_scales = malloc((size_t)(ng * R) * sizeof(uint16_t));
    cr_assert_eq(gptq_safetensors_find(st, "scales", &ti), GPTQ_OK);
    cr_assert(ti.dtype == GPTQ_DTYPE_F16 && ti.nbytes == (size_t)(ng * R) * 2);
    memcpy(ref_scales, ti.data, ti.nbytes);
    u.scales = read_tensor(ctx, st, "scales_f32", (size_t)(ng * R), 1);
    u.zeros = read_tensor(ctx, st, "zeros", (size_t)(ng * R), 0);
    u.g_idx = read_tensor(ctx, st, "g_idx", (size_t)C, 0);

    if (gptq_safetensors_find(st, "codes", &ti) == GPTQ_OK) {
        u.codes = read_tensor(ctx, st, "codes", (size_t)(R * C), 0);
    } else {
        /* compact case: codes are the unpacked qweight (checked at generation) */
        gptq_packed ref = {u.bits, GPTQ_FORMAT_V1, R, C, ng, ref_qweight, ref_qzeros,
                           ref_scales, u.g_idx};
        gptq_unpacked tmp = u;
        tmp.codes = malloc((size_t)(R * C) * sizeof(int32_t));
        tmp.scales = malloc((size_t)(ng * R) * sizeof(float));
        tmp.zeros = malloc((size_t)(ng * R) * sizeof(int32_t));
        tmp.g_idx = malloc((size_t)C * sizeof(int32_t));
        cr_assert_eq(gptq_unpack(ctx, &ref, GPTQ_PACK_AUTOGPTQ, &tmp), GPTQ_OK);
        u.codes = tmp.codes;
        free(tmp.scales);
        free(tmp.zeros);
        free(tmp.g_idx);
    }
    if (gptq_safetensors_find(st, "Q", &ti) == GPTQ_OK) {
        u.q = read_tensor(ctx, st, "Q", (size_t)(R * C), 1);
    } else {
        u.q = malloc((size_t)(R * C) * sizeof(float));
        for (int64_t r = 0; r < R; r++)
            for (int64_t j = 0; j < C; j++) {
                int64_t g = u.g_idx[j];
                u.q[r * C + j] = u.scales[g * R + r] * (float)(u.codes[r * C + j] - u.zeros[g * R + r]);
            }
    }

    /* AutoGPTQ-exact: every byte of qweight, qzeros and scales. */
    ag = make_packed(u.bits, GPTQ_FORMAT_V1, R, C, ng);
    cr_assert_eq(gptq_pack(ctx, &u, GPTQ_PACK_AUTOGPTQ, &ag), GPTQ_OK, "%s: %s", name,
                 gptq_ctx_last_error(ctx));
    for (int64_t i = 0; i < qw[0] * qw[1]; i++)
        cr_assert_eq(ag.qweight[i], ref_qweight[i], "%s: qweight[%lld, %lld] 0x%08x vs 0x%08x",
                     name, (long long)(i / R), (long long)(i % R), (uint32_t)ag.qweight[i],
                     (uint32_t)ref_qweight[i]);
    for (int64_t i = 0; i < qz[0] * qz[1]; i++)
        cr_assert_eq(ag.qzeros[i], ref_qzeros[i], "%s: qzeros[%lld] 0x%08x vs 0x%08x", name,
                     (long long)i, (uint32_t)ag.qzeros[i], (uint32_t)ref_qzeros[i]);
    cr_assert_eq(memcmp(ag.scales, ref_scales, (size_t)(ng * R) * 2), 0, "%s: scales", name);
    cr_assert_eq(memcmp(ag.g_idx, u.g_idx, (size_t)C * 4), 0, "%s: g_idx", name);

    /* Clean: GPTQ's codes come back unchanged, and the qzeros words equal AutoGPTQ's
     * wherever no field of the word is a zero point of 0. */
    clean = make_packed(u.bits, GPTQ_FORMAT_V1, R, C, ng);
    cr_assert_eq(gptq_pack(ctx, &u, GPTQ_PACK_CLEAN, &clean), GPTQ_OK, "%s", name);
    {
        gptq_unpacked back = u;
        back.codes = malloc((size_t)(R * C) * sizeof(int32_t));
        back.scales = malloc((size_t)(ng * R) * sizeof(float));
        back.zeros = malloc((size_t)(ng * R) * sizeof(int32_t));
        back.g_idx = malloc((size_t)C * sizeof(int32_t));
        cr_assert_eq(gptq_unpack(ctx, &clean, GPTQ_PACK_CLEAN, &back), GPTQ_OK);
        cr_assert_eq(memcmp(back.codes, u.codes, (size_t)(R * C) * 4), 0, "%s: codes", name);
        cr_assert_eq(memcmp(back.zeros, u.zeros, (size_t)(ng * R) * 4), 0, "%s: zeros", name);
        free(back.codes);
        free(back.scales);
        free(back.zeros);
        free(back.g_idx);
    }
    for (int64_t g = 0; g < ng; g++)
        for (int64_t k = 0; k < qz[1]; k++) {
            int has_zero = 0;
            for (int64_t r = k * 32 / u.bits; r < R && r * u.bits < (k + 1) * 32; r++)
                has_zero |= u.zeros[g * R + r] == 0;
            /* 3-bit fields straddle: also look at the neighbour words' elements */
            if (u.bits == 3)
                for (int64_t r = (k * 32 / 3) - 1; r <= ((k + 1) * 32 / 3) && r < R; r++)
                    if (r >= 0)
                        has_zero |= u.zeros[g * R + r] == 0;
            if (!has_zero)
                cr_assert_eq(clean.qzeros[g * qz[1] + k], ref_qzeros[g * qz[1] + k],
                             "%s: clean qzeros[%lld, %lld]", name, (long long)g, (long long)k);
        }

    free_packed(&ag);
    free_packed(&clean);
    free(ref_qweight);
    free(ref_qzeros);
    free(ref_scales);
    free_layer(&u);
    gptq_safetensors_free(st);
}

Test(pack, reference_cases_byte_identical)
{
    gptq_ctx *ctx = new_ctx(2);
    glob_t gl;
    cr_assert_eq(glob(GPTQ_TEST_DATA "/gptq-reference/p*.safetensors", 0, NULL, &gl), 0,
                 "no reference cases under " GPTQ_TEST_DATA);
    cr_expect_geq(gl.gl_pathc, 12);
    for (size_t i = 0; i < gl.gl_pathc; i++)
        check_case(ctx, gl.gl_pathv[i]);
    globfree(&gl);
    gptq_ctx_free(ctx);
}
