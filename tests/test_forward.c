/*
 * Tests of the forward pass (src/model/forward.c, attention.c) and gptq_model_eval
 * (src/model/eval.c) on the two bundled models:
 *   - logits of embed + every layer + head against reference_logits.safetensors (the
 *     Hugging Face fp32 forward), for tiny-llama-bytes (MHA, untied head) and
 *     stories260K (GQA 8/4, tied embeddings);
 *   - batching: a sequence's rows do not depend on the other sequences of its batch;
 *   - the capture points and stop_after;
 *   - a quantized linear over many rows (gptq_dequant_matmul's SGEMM path);
 *   - RoPE frequencies for rope_scaling linear and llama3 against an independent
 *     double-precision formula;
 *   - the README perplexities, window and token counts;
 *   - bad input.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gptq/model.h"
#include "gptq/safetensors.h"
#include "model/model.h"

#define TINY GPTQ_TEST_MODELS "/tiny-llama-bytes"
#define STORIES GPTQ_TEST_MODELS "/stories260K"
#define REF_LEN 256

static gptq_ctx *new_ctx(void)
{
    gptq_ctx *ctx = NULL;
    cr_assert_eq(gptq_ctx_create(NULL, &ctx, NULL, 0), GPTQ_OK);
    return ctx;
}

static gptq_model *open_model(gptq_ctx *ctx, const char *dir)
{
    gptq_model *m = NULL;
    cr_assert_eq(gptq_model_open(ctx, dir, &m), GPTQ_OK, "%s: %s", dir, gptq_ctx_last_error(ctx));
    return m;
}

/* Embedding and every decoder layer over nseq sequences of seqlen ids, in h. */
static void run_layers(gptq_ctx *ctx, gptq_model *m, const int32_t *ids, int64_t nseq,
                       int64_t seqlen, float *h)
{
    cr_assert_eq(gptq__embed(ctx, m, ids, nseq * seqlen, h), GPTQ_OK);
    for (int64_t l = 0; l < m->cfg.n_layers; l++) {
        cr_assert_eq(gptq__layer_load(ctx, m, l), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
        cr_assert_eq(gptq__layer_forward(ctx, m, &m->layers[l], h, nseq, seqlen, NULL, NULL,
                                         GPTQ_CAP_COUNT),
                     GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
        gptq__layer_unload(m, l);
    }
}

/* The reference window's ids and logits [REF_LEN, vocab]. */
static float *read_reference(gptq_ctx *ctx, const char *dir, int64_t vocab, int32_t *ids)
{
    char path[512];
    gptq_safetensors *st = NULL;
    float *ref = malloc((size_t)(REF_LEN * vocab) * sizeof(float));

    snprintf(path, sizeof path, "%s/reference_logits.safetensors", dir);
    cr_assert_eq(gptq_safetensors_open(ctx, path, &st), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    cr_assert_eq(gptq_safetensors_read_i32(ctx, st, "input_ids", ids, REF_LEN), GPTQ_OK);
    cr_assert_eq(gptq_safetensors_read_f32(ctx, st, "logits", ref, (size_t)(REF_LEN * vocab)),
                 GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    gptq_safetensors_free(st);
    return ref;
}

/* The logits against the reference. Tolerance: float32 everywhere, but our summation
 * orders (SGEMM blocking, attention loops, a double mean in RMSNorm) and our exp
 * (core/simd.h, within ~1 ulp) differ from torch's, and 4-5 layers amplify the rounding
 * a little. Measured max |diff|: 2.1e-5 (tiny-llama-bytes) and 3.0e-5 (stories260K) for
 * logits up to 21.5 in magnitude, ~1e-6 relative; 2e-3 absolute leaves a wide margin
 * while any real error (RoPE convention, GQA mapping, a missing norm weight) is off by
 * 0.1 or more. */
static void check_logits(const char *dir, double tol)
{
    gptq_ctx *ctx = new_ctx();
    gptq_model *m = open_model(ctx, dir);
    const int64_t vocab = m->cfg.vocab;
    int32_t ids[REF_LEN];
    float *ref = read_reference(ctx, dir, vocab, ids);
    float *h = malloc((size_t)(REF_LEN * m->cfg.hidden) * sizeof(float));
    float *logits = malloc((size_t)(REF_LEN * vocab) * sizeof(float));
    double maxdiff = 0.0, maxabs = 0.0;

    run_layers(ctx, m, ids, 1, REF_LEN, h);
    cr_assert_eq(gptq__head_logits(ctx, m, h, REF_LEN, logits), GPTQ_OK);
    for (int64_t i = 0; i < REF_LEN * vocab; i++) {
        maxdiff = fmax(maxdiff, fabs((double)logits[i] - (double)ref[i]));
        maxabs = fmax(maxabs, fabs((double)ref[i]));
    }
    printf("forward %s: max |logit - reference| = %.3g (max |logit| %.3g)\n", dir, maxdiff,
           maxabs);
    cr_expect(maxdiff <= tol, "%s: max logit difference %g > %g", dir, maxdiff, tol);
    free(logits);
    free(h);
    free(ref);
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}

Test(forward, tiny_llama_bytes_matches_reference_logits) { check_logits(TINY, 2e-3); }

Test(forward, stories260K_matches_reference_logits) { check_logits(STORIES, 2e-3); }

/* Two sequences in one batch: each one's logits are those it gets alone. */
Test(forward, batch_rows_are_independent)
{
    gptq_ctx *ctx = new_ctx();
    gptq_model *m = open_model(ctx, STORIES);
    const int64_t T = 64, hid = m->cfg.hidden, vocab = m->cfg.vocab;
    int32_t ids[2 * 64];
    float *h1 = malloc((size_t)(T * hid) * sizeof(float));
    float *h2 = malloc((size_t)(2 * T * hid) * sizeof(float));
    float *l1 = malloc((size_t)(T * vocab) * sizeof(float));
    float *l2 = malloc((size_t)(2 * T * vocab) * sizeof(float));
    double maxdiff = 0.0;

    for (int i = 0; i < 2 * T; i++)
        ids[i] = (int32_t)((i * 37 + 11) % vocab);
    run_layers(ctx, m, ids + T, 1, T, h1);
    run_layers(ctx, m, ids, 2, T, h2);
    cr_assert_eq(gptq__head_logits(ctx, m, h1, T, l1), GPTQ_OK);
    cr_assert_eq(gptq__head_logits(ctx, m, h2, 2 * T, l2), GPTQ_OK);
    for (int64_t i = 0; i < T * vocab; i++)
        maxdiff = fmax(maxdiff, fabs((double)l1[i] - (double)l2[T * vocab + i]));
    /* OpenBLAS picks its kernels by matrix size, so rows of a taller SGEMM may round
     * differently in the last bit: a few 1e-6 on logits of ~20. */
    cr_expect(maxdiff <= 1e-4, "batched vs alone: %g", maxdiff);
    free(l2);
    free(l1);
    free(h2);
    free(h1);
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}

typedef struct cap_log {
    int32_t points[8];
    int64_t widths[8];
    int n;
} cap_log;

static int record(void *user, int32_t point, const float *x, int64_t nseq, int64_t seqlen,
                  int64_t width)
{
    cap_log *lg = user;
    (void)x;
    cr_expect_eq(nseq, 3);
    cr_expect_eq(seqlen, 16);
    if (lg->n < 8) {
        lg->points[lg->n] = point;
        lg->widths[lg->n++] = width;
    }
    return GPTQ_OK;
}

static int refuse(void *user, int32_t point, const float *x, int64_t nseq, int64_t seqlen,
                  int64_t width)
{
    (void)user, (void)x, (void)nseq, (void)seqlen, (void)width;
    return point == GPTQ_CAP_MLP_IN ? GPTQ_ERR_CANCELLED : GPTQ_OK;
}

Test(forward, capture_points_and_stop_after)
{
    gptq_ctx *ctx = new_ctx();
    gptq_model *m = open_model(ctx, STORIES);
    const int64_t n = 3 * 16, hid = m->cfg.hidden;
    int32_t ids[48];
    float *h = malloc((size_t)(n * hid) * sizeof(float));
    cap_log lg = {0};
    const int64_t want[4] = {hid, m->cfg.n_heads * m->cfg.head_dim, hid, m->cfg.inter};

    for (int i = 0; i < 48; i++)
        ids[i] = i + 3;
    cr_assert_eq(gptq__embed(ctx, m, ids, n, h), GPTQ_OK);
    cr_assert_eq(gptq__layer_load(ctx, m, 0), GPTQ_OK);
    cr_assert_eq(gptq__layer_forward(ctx, m, &m->layers[0], h, 3, 16, record, &lg,
                                     GPTQ_CAP_COUNT),
                 GPTQ_OK);
    cr_assert_eq(lg.n, 4);
    for (int i = 0; i < 4; i++) {
        cr_expect_eq(lg.points[i], i);
        cr_expect_eq(lg.widths[i], want[i]);
    }
    lg.n = 0;
    cr_assert_eq(gptq__layer_forward(ctx, m, &m->layers[0], h, 3, 16, record, &lg,
                                     GPTQ_CAP_O_IN),
                 GPTQ_OK);
    cr_expect_eq(lg.n, 2);
    cr_expect_eq(gptq__layer_forward(ctx, m, &m->layers[0], h, 3, 16, refuse, NULL,
                                     GPTQ_CAP_COUNT),
                 GPTQ_ERR_CANCELLED);
    gptq__layer_unload(m, 0);
    free(h);
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}

/* The angle RoPE gives pair j at position p, read back from a rotated unit vector
 * (x[j] = 1: x'[j] = cos, x'[j + half] = sin). */
static void rope_angles(const gptq__model_config *c, int64_t p, double *angle)
{
    const int64_t d = c->head_dim, half = d / 2, T = p + 1;
    float *q = calloc((size_t)(T * d), sizeof(float));
    float *k = calloc((size_t)(T * d), sizeof(float));

    for (int64_t j = 0; j < half; j++) {
        cr_assert_eq(gptq__rope_apply(NULL, c, q, k, 1, T), GPTQ_OK);
        memset(q, 0, (size_t)(T * d) * sizeof(float));
        q[p * d + j] = 1.0f;
        cr_assert_eq(gptq__rope_apply(NULL, c, q, k, 1, T), GPTQ_OK);
        angle[j] = atan2((double)q[p * d + j + half], (double)q[p * d + j]);
    }
    free(k);
    free(q);
}

Test(forward, rope_scaling_frequencies)
{
    /* Llama 3.1's rope_scaling: factor 8, low 1, high 4, original 8192, theta 5e5. */
    gptq__model_config c = {.n_heads = 1, .n_kv_heads = 1, .head_dim = 128,
                            .rope_theta = 500000.0, .rope_type = GPTQ_ROPE_LLAMA3,
                            .rope_factor = 8.0, .rope_low_freq_factor = 1.0,
                            .rope_high_freq_factor = 4.0, .rope_original_max_pos = 8192};
    const int64_t p = 3, half = 64;
    double got[64];

    rope_angles(&c, p, got);
    for (int64_t j = 0; j < half; j++) {
        double inv = 1.0 / pow(500000.0, (double)(2 * j) / 128.0), wl = 2 * M_PI / inv, want;
        if (wl < 8192.0 / 4.0)
            want = inv;
        else if (wl > 8192.0 / 1.0)
            want = inv / 8.0;
        else {
            double s = (8192.0 / wl - 1.0) / (4.0 - 1.0);
            want = (1 - s) * inv / 8.0 + s * inv;
        }
        want = remainder(want * (double)p, 2 * M_PI);
        cr_expect(fabs(got[j] - want) <= 1e-5 * fmax(1.0, fabs(want)), "llama3 j=%lld: %g vs %g",
                  (long long)j, got[j], want);
    }

    c.rope_type = GPTQ_ROPE_LINEAR;
    c.rope_factor = 4.0;
    c.rope_theta = 10000.0;
    rope_angles(&c, p, got);
    for (int64_t j = 0; j < half; j++) {
        double want = remainder((double)p / 4.0 / pow(10000.0, (double)(2 * j) / 128.0), 2 * M_PI);
        cr_expect(fabs(got[j] - want) <= 1e-5, "linear j=%lld: %g vs %g", (long long)j, got[j],
                  want);
    }
}

/* A quantized linear (4-bit, groups of 32, act-order g_idx, bias) over many rows -
 * the batched dequantize-then-SGEMM path of gptq_dequant_matmul - against the same rows
 * one at a time (the tiled dot kernel) and a double-precision reference. */
Test(forward, quantized_linear_large_batch)
{
    gptq_ctx *ctx = new_ctx();
    const int64_t R = 72, C = 160, ng = 5, n = 300;
    gptq_unpacked u = {.bits = 4, .group_size = 32, .out_features = R, .in_features = C,
                       .ngroups = ng};
    gptq__linear l = {.out = R, .in = C, .quantized = 1, .group_size = 32};
    int64_t qw[2], qz[2];
    float *x = malloc((size_t)(n * C) * sizeof(float));
    float *y = malloc((size_t)(n * R) * sizeof(float));
    float *y1 = malloc((size_t)R * sizeof(float));
    uint32_t seed = 7;

    u.codes = malloc((size_t)(R * C) * sizeof(int32_t));
    u.scales = malloc((size_t)(ng * R) * sizeof(float));
    u.zeros = malloc((size_t)(ng * R) * sizeof(int32_t));
    u.g_idx = malloc((size_t)C * sizeof(int32_t));
    l.bias = malloc((size_t)R * sizeof(float));
    for (int64_t i = 0; i < R * C; i++)
        u.codes[i] = (int32_t)((seed = seed * 1103515245u + 12345u) >> 16) % 16;
    for (int64_t i = 0; i < ng * R; i++) {
        u.scales[i] = 0.01f * (float)(1 + i % 7);
        u.zeros[i] = (int32_t)(i % 16);
    }
    for (int64_t j = 0; j < C; j++)
        u.g_idx[j] = (int32_t)((j * 3) % ng); /* act-order: groups interleaved */
    for (int64_t r = 0; r < R; r++)
        l.bias[r] = 0.1f * (float)(r % 5) - 0.2f;
    for (int64_t i = 0; i < n * C; i++)
        x[i] = (float)((seed = seed * 1103515245u + 12345u) >> 16) / 32768.0f - 1.0f;
    cr_assert_eq(gptq_packed_shape(4, R, C, ng, qw, qz), GPTQ_OK);
    l.packed = (gptq_packed){.bits = 4, .format = GPTQ_FORMAT_V2, .out_features = R,
                             .in_features = C, .ngroups = ng};
    l.packed.qweight = malloc((size_t)(qw[0] * qw[1]) * sizeof(int32_t));
    l.packed.qzeros = malloc((size_t)(qz[0] * qz[1]) * sizeof(int32_t));
    l.packed.scales = malloc((size_t)(ng * R) * sizeof(uint16_t));
    l.packed.g_idx = malloc((size_t)C * sizeof(int32_t));
    cr_assert_eq(gptq_pack(ctx, &u, GPTQ_PACK_CLEAN, &l.packed), GPTQ_OK, "%s",
                 gptq_ctx_last_error(ctx));

    cr_assert_eq(gptq__linear_apply(ctx, &l, x, n, y), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    for (int64_t b = 0; b < n; b += 37) {
        cr_assert_eq(gptq__linear_apply(ctx, &l, x + b * C, 1, y1), GPTQ_OK);
        for (int64_t r = 0; r < R; r++) {
            double ref = l.bias[r], mag = fabs((double)l.bias[r]);
            for (int64_t j = 0; j < C; j++) {
                const int64_t g = u.g_idx[j];
                const double w = (double)gptq_fp16_to_fp32(l.packed.scales[g * R + r]) *
                                 (double)(u.codes[r * C + j] - u.zeros[g * R + r]);
                ref += w * (double)x[b * C + j];
                mag += fabs(w * (double)x[b * C + j]);
            }
            /* float32 sums of 160 terms in two different orders */
            cr_expect(fabs((double)y[b * R + r] - ref) <= 1e-6 * mag + 1e-7,
                      "row %lld out %lld: batched %g, reference %g", (long long)b, (long long)r,
                      (double)y[b * R + r], ref);
            cr_expect(fabs((double)y[b * R + r] - (double)y1[r]) <= 1e-6 * mag + 1e-7,
                      "row %lld out %lld: batched %g, alone %g", (long long)b, (long long)r,
                      (double)y[b * R + r], (double)y1[r]);
        }
    }
    free(l.packed.g_idx);
    free(l.packed.scales);
    free(l.packed.qzeros);
    free(l.packed.qweight);
    free(l.bias);
    free(u.g_idx);
    free(u.zeros);
    free(u.scales);
    free(u.codes);
    free(y1);
    free(y);
    free(x);
    gptq_ctx_free(ctx);
}

/* ---- gptq_model_eval -------------------------------------------------------------- */

static gptq_tokens *load_tokens(gptq_ctx *ctx, const char *path, int32_t kind)
{
    gptq_tokens *t = NULL;
    cr_assert_eq(gptq_tokens_load(ctx, path, kind, &t), GPTQ_OK, "%s: %s", path,
                 gptq_ctx_last_error(ctx));
    return t;
}

static void check_eval(const char *dir, const char *file, int32_t kind, double want_ppl,
                       int64_t want_windows, int64_t want_tokens)
{
    char path[512];
    gptq_ctx *ctx = new_ctx();
    gptq_model *m = open_model(ctx, dir);
    gptq_tokens *t;
    gptq_eval_result r;

    snprintf(path, sizeof path, "%s/%s", dir, file);
    t = load_tokens(ctx, path, kind);
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    cr_assert_eq(gptq_model_eval(ctx, m, t, 256, &r), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    printf("eval %s: ppl %.6f (nll %.6f), %lld windows, %lld tokens, %.2f s\n", path, r.ppl,
           r.nll, (long long)r.windows, (long long)r.tokens, r.seconds);
    cr_expect(fabs(r.ppl - want_ppl) <= 1e-4 * want_ppl, "%s: ppl %.6f, README %.6f", path, r.ppl,
              want_ppl);
    cr_expect_eq(r.windows, want_windows);
    cr_expect_eq(r.tokens, want_tokens);
    cr_expect(fabs(r.nll - log(r.ppl)) < 1e-12);
    gptq_tokens_free(t);
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}

Test(eval, tiny_llama_bytes_readme_perplexity)
{
    check_eval(TINY, "eval.txt", GPTQ_TOKENS_BYTES, 3.245078, 774, 774 * 255);
}

Test(eval, stories260K_readme_perplexity)
{
    check_eval(STORIES, "eval_ids.json", GPTQ_TOKENS_IDS, 3.605434, 300, 75468);
}

Test(eval, rejects_bad_input)
{
    gptq_ctx *ctx = new_ctx();
    gptq_model *m = open_model(ctx, TINY);
    int32_t ids[300];
    gptq_tokens *t = NULL, *shorter = NULL;
    gptq_eval_result r;

    for (int i = 0; i < 300; i++)
        ids[i] = 'a' + i % 26;
    ids[270] = 300; /* beyond the 256-byte vocabulary */
    cr_assert_eq(gptq_tokens_from_ids(ctx, ids, 300, &t), GPTQ_OK);
    cr_assert_eq(gptq_tokens_from_ids(ctx, ids, 100, &shorter), GPTQ_OK);
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;

    cr_expect_eq(gptq_model_eval(ctx, m, t, 1, &r), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(gptq_ctx_last_error(ctx), "seqlen") != NULL, "%s", gptq_ctx_last_error(ctx));
    cr_expect_eq(gptq_model_eval(ctx, m, t, 150, &r), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(gptq_ctx_last_error(ctx), "300") != NULL &&
                  strstr(gptq_ctx_last_error(ctx), "270") != NULL,
              "%s", gptq_ctx_last_error(ctx));
    cr_expect_eq(gptq_model_eval(ctx, m, shorter, 256, &r), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(gptq_ctx_last_error(ctx), "fewer than one window") != NULL, "%s",
              gptq_ctx_last_error(ctx));
    /* The bad id is in the dropped tail of one 256-token window: fine. */
    cr_expect_eq(gptq_model_eval(ctx, m, t, 256, &r), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    cr_expect_eq(r.windows, 1);
    cr_expect_eq(r.tokens, 255);
    r.struct_size = 8;
    cr_expect_eq(gptq_model_eval(ctx, m, t, 256, &r), GPTQ_ERR_INVALID_ARGUMENT);
    cr_expect_eq(gptq_model_eval(ctx, m, NULL, 256, &r), GPTQ_ERR_INVALID_ARGUMENT);

    gptq_tokens_free(shorter);
    gptq_tokens_free(t);
    gptq_model_free(m);
    gptq_ctx_free(ctx);
}
