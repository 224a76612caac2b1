/*
 * The paths the core and the model take for a backend that keeps data on a device (the
 * GPU), run here on the CPU backend's own primitives behind a copy of its table with
 * the flags switched on (buffers and calls counted):
 *  - resident_layer (src/core/quantize.c, make_resident): W, U and the block errors in
 *    buf_alloc buffers for the whole block loop, uploaded once; it must give bit for
 *    bit what the ordinary loop gives, on every public reference case, and free every
 *    buffer it took;
 *  - offload_forward_gemm (src/model/forward.c, sgemm_nt): the model's large float
 *    GEMMs through the backend's gemm, in float32 whatever the context's math mode.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "gptq/model.h"
#include "model/model.h"
#include "refcase.h"

#define TINY GPTQ_TEST_MODELS "/tiny-llama-bytes"

static gptq_backend resident_cpu;
static const gptq_backend *plain_cpu;
static int live_buffers, uploads;

static void *counting_alloc(gptq_ctx *ctx, size_t bytes)
{
    void *p = plain_cpu->buf_alloc(ctx, bytes);
    live_buffers += p != NULL;
    return p;
}

static void counting_free(gptq_ctx *ctx, void *p)
{
    live_buffers -= p != NULL;
    plain_cpu->buf_free(ctx, p);
}

static int counting_upload(gptq_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    uploads++;
    return plain_cpu->upload(ctx, dst, src, bytes);
}

/* A CPU context whose backend table is the resident copy. */
static gptq_ctx *resident_ctx(void)
{
    gptq_ctx *ctx = NULL;
    cr_assert_eq(gptq_ctx_create(NULL, &ctx, NULL, 0), GPTQ_OK);
    plain_cpu = ctx->backend;
    resident_cpu = *plain_cpu;
    resident_cpu.resident_layer = 1;
    resident_cpu.buf_alloc = counting_alloc;
    resident_cpu.buf_free = counting_free;
    resident_cpu.upload = counting_upload;
    ctx->backend = &resident_cpu;
    return ctx;
}

static gptq_result *quantize(gptq_ctx *ctx, const refcase *rc, int inverse)
{
    gptq_hessian *h = NULL;
    gptq_result *res = NULL;
    gptq_config cfg;

    cr_assert_eq(refcase_hessian(ctx, rc, 0, &h), 0, "%s", rc->name);
    refcase_config(rc, &cfg);
    cfg.inverse = inverse;
    cr_assert_eq(gptq_layer_quantize(ctx, rc->W, rc->out, rc->in, h, &cfg, &res), GPTQ_OK,
                 "%s: %s", rc->name, gptq_ctx_last_error(ctx));
    gptq_hessian_free(h);
    return res;
}

static void same_result(const gptq_result *a, const gptq_result *b, const refcase *rc)
{
    const size_t n = (size_t)(rc->out * rc->in);
    cr_assert_arr_eq(gptq_result_codes(a), gptq_result_codes(b), n * sizeof(int32_t), "%s codes",
                     rc->name);
    cr_assert_arr_eq(gptq_result_q(a), gptq_result_q(b), n * sizeof(float), "%s q", rc->name);
    cr_assert_arr_eq(gptq_result_scales(a), gptq_result_scales(b),
                     (size_t)(rc->ng * rc->out) * sizeof(float), "%s scales", rc->name);
    cr_assert_eq(gptq_result_loss(a), gptq_result_loss(b), "%s loss", rc->name);
}

Test(resident, matches_the_host_loop_on_every_reference_case)
{
    gptq_ctx *res_ctx = resident_ctx(), *host_ctx = NULL;
    int n;
    char **list = refcase_list(&n);

    cr_assert_eq(gptq_ctx_create(NULL, &host_ctx, NULL, 0), GPTQ_OK);
    cr_assert_geq(n, 12, "reference cases missing from " GPTQ_TEST_DATA);
    for (int i = 0; i < n; i++) {
        for (int inverse = GPTQ_INVERSE_FAST; inverse <= GPTQ_INVERSE_REFERENCE; inverse++) {
            refcase rc;
            gptq_result *a, *b;
            cr_assert_eq(refcase_load(list[i], &rc), 0, "cannot load %s", list[i]);
            uploads = 0;
            a = quantize(res_ctx, &rc, inverse);
            cr_expect_eq(live_buffers, 0, "%s: buffers left", rc.name);
            cr_expect_eq(uploads, 2, "%s: W and U uploaded once each (got %d)", rc.name, uploads);
            b = quantize(host_ctx, &rc, inverse);
            same_result(a, b, &rc);
            gptq_result_free(a);
            gptq_result_free(b);
            refcase_free(&rc);
        }
    }
    refcase_list_free(list, n);
    gptq_ctx_free(res_ctx);
    gptq_ctx_free(host_ctx);
}

/* RTN has no loop to keep resident: no buffers are taken. */
Test(resident, rtn_takes_no_buffers)
{
    gptq_ctx *ctx = resident_ctx();
    const int64_t R = 8, C = 32;
    float w[8 * 32];
    gptq_config cfg;
    gptq_result *res = NULL;

    for (int i = 0; i < R * C; i++)
        w[i] = (float)((i * 37) % 17) / 17.0f - 0.5f;
    gptq_config_init(&cfg);
    cfg.rtn = 1;
    cfg.group_size = 16;
    uploads = 0;
    cr_assert_eq(gptq_layer_quantize(ctx, w, R, C, NULL, &cfg, &res), GPTQ_OK, "%s",
                 gptq_ctx_last_error(ctx));
    cr_expect_eq(uploads, 0);
    cr_expect_eq(live_buffers, 0);
    gptq_result_free(res);
    gptq_ctx_free(ctx);
}

/* ---- offload_forward_gemm: the model's large float GEMMs through the backend's gemm ---- */

static int gemm_calls;

static int counting_gemm(gptq_ctx *ctx, int ta, int tb, int64_t m, int64_t n, int64_t k,
                         float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                         float beta, float *c, int64_t ldc)
{
    gemm_calls++;
    cr_assert_eq(ctx->opts.math, GPTQ_MATH_FP32, "the forward's GEMMs stay float32");
    return plain_cpu->gemm(ctx, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* The bundled model evaluated with its big GEMMs handed to the backend gives the
 * perplexity of the host's own row-split SGEMMs (up to summation order), and a context
 * in TF32 mode still multiplies in float32 there. */
Test(resident, offloaded_forward_gemm_matches)
{
    gptq_ctx *off = resident_ctx(), *host = NULL;
    gptq_model *m1 = NULL, *m2 = NULL;
    gptq_tokens *text = NULL;
    gptq_eval_result e1 = {.struct_size = sizeof e1}, e2 = {.struct_size = sizeof e2};

    resident_cpu.offload_forward_gemm = 1;
    resident_cpu.gemm = counting_gemm;
    off->opts.math = GPTQ_MATH_TF32; /* must not leak into the forward's GEMMs */
    cr_assert_eq(gptq_ctx_create(NULL, &host, NULL, 0), GPTQ_OK);
    cr_assert_eq(gptq_model_open(off, TINY, &m1), GPTQ_OK, "%s", gptq_ctx_last_error(off));
    cr_assert_eq(gptq_model_open(host, TINY, &m2), GPTQ_OK);
    cr_assert_eq(gptq_tokens_load(host, TINY "/eval.txt", GPTQ_TOKENS_BYTES, &text), GPTQ_OK);
    gemm_calls = 0;
    cr_assert_eq(gptq_model_eval(off, m1, text, 256, &e1), GPTQ_OK, "%s",
                 gptq_ctx_last_error(off));
    cr_assert_eq(gptq_model_eval(host, m2, text, 256, &e2), GPTQ_OK);
    printf("offloaded forward GEMMs: %d calls, ppl %.6f (host %.6f)\n", gemm_calls, e1.ppl,
           e2.ppl);
    cr_expect_gt(gemm_calls, 0);
    cr_expect_eq(off->opts.math, GPTQ_MATH_TF32, "the context's mode is restored");
    cr_expect_lt(fabs(e1.ppl / e2.ppl - 1.0), 1e-5, "%.8f vs %.8f", e1.ppl, e2.ppl);
    gptq_tokens_free(text);
    gptq_model_free(m1);
    gptq_model_free(m2);
    gptq_ctx_free(off);
    gptq_ctx_free(host);
}

/* ---- device_forward: the pipeline's activations, layer and Hessians in buffers ----- */

static int downloads;

static int counting_download(gptq_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    downloads++;
    return plain_cpu->download(ctx, dst, src, bytes);
}

/* Quantize `dir` with 4-bit g32 (act-order when asked), true-sequential or not, on ctx. */
static gptq_model *quantize_model(gptq_ctx *ctx, const char *dir, const gptq_tokens *calib,
                                  int ts, int act)
{
    gptq_model *m = NULL;
    gptq_quantize_options o;

    cr_assert_eq(gptq_model_open(ctx, dir, &m), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    gptq_quantize_options_init(&o);
    o.nsamples = 12;
    o.seqlen = 96;
    o.true_sequential = ts;
    o.config.bits = 4;
    o.config.group_size = 32;
    o.config.desc_act = act;
    cr_assert_eq(gptq_model_quantize(ctx, m, calib, &o), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    return m;
}

static int same_packed(const gptq_packed *a, const gptq_packed *b)
{
    int64_t qw[2], qz[2];
    if (a->ngroups != b->ngroups ||
        gptq_packed_shape(a->bits, a->out_features, a->in_features, a->ngroups, qw, qz) != GPTQ_OK)
        return 0;
    return !memcmp(a->qweight, b->qweight, sizeof(int32_t) * (size_t)(qw[0] * qw[1])) &&
           !memcmp(a->qzeros, b->qzeros, sizeof(int32_t) * (size_t)(qz[0] * qz[1])) &&
           !memcmp(a->scales, b->scales, sizeof(uint16_t) * (size_t)(a->ngroups * a->out_features)) &&
           !memcmp(a->g_idx, b->g_idx, sizeof(int32_t) * (size_t)a->in_features);
}

/* The pipeline run through src/model/forward_dev.c (on the CPU's primitives behind the
 * flag, every slot NULL: the host operations on buf_alloc'd host memory) packs every
 * linear bit for bit as the host pipeline does, with and without true-sequential, on the
 * bundled model and on stories260K (grouped-query attention, tied embeddings, MLP kept
 * float); the activations never come back to the host (downloads: one per Hessian), and
 * every buffer is freed. */
/* Perplexity of m on ctx in windows of 128: over the first 24 windows of a text of one
 * sequence, or over every sequence of a set (windows of different lengths, padded). */
static double eval_ppl(gptq_ctx *ctx, gptq_model *m, const gptq_tokens *text)
{
    gptq_eval_result e = {.struct_size = sizeof e};
    gptq_tokens *part = NULL;

    if (gptq_tokens_count(text) == 1) {
        int64_t n;
        const int32_t *ids = gptq_tokens_sequence(text, 0, &n);
        cr_assert_eq(gptq_tokens_from_ids(ctx, ids, n < 24 * 128 ? n : 24 * 128, &part), GPTQ_OK);
    }
    cr_assert_eq(gptq_model_eval(ctx, m, part ? part : text, 128, &e), GPTQ_OK, "%s",
                 gptq_ctx_last_error(ctx));
    gptq_tokens_free(part);
    return e.ppl;
}

static void device_forward_case(const char *dir, const char *calib_path, int32_t kind, int ts,
                                int act, const char *eval_path)
{
    gptq_ctx *dev = resident_ctx(), *host = NULL;
    gptq_tokens *calib = NULL;
    gptq_model *a, *b;
    int64_t layers, quantized = 0, hessians = 0;

    resident_cpu.device_forward = 1;
    resident_cpu.download = counting_download;
    cr_assert_eq(gptq_ctx_create(NULL, &host, NULL, 0), GPTQ_OK);
    cr_assert_eq(gptq_tokens_load(host, calib_path, kind, &calib), GPTQ_OK, "%s",
                 gptq_ctx_last_error(host));
    downloads = 0;
    a = quantize_model(dev, dir, calib, ts, act);
    cr_expect_eq(live_buffers, 0, "%s: buffers left", dir);
    b = quantize_model(host, dir, calib, ts, act);
    layers = a->cfg.n_layers;
    for (int64_t i = 0; i < layers; i++) {
        for (int j = 0; j < GPTQ_LIN_COUNT; j++) {
            const gptq__linear *la = &a->layers[i].lin[j], *lb = &b->layers[i].lin[j];
            cr_assert_eq(la->quantized, lb->quantized, "%s layer %lld %s", dir, (long long)i,
                         gptq__lin_names[j]);
            if (!la->quantized)
                continue;
            quantized++;
            cr_expect(same_packed(&la->packed, &lb->packed), "%s (ts %d act %d) layer %lld %s "
                      "differs", dir, ts, act, (long long)i, gptq__lin_names[j]);
        }
    }
    /* One download per Hessian of a subset with a quantized linear (the resident block
     * loop downloads nothing). */
    for (int s = 0; s < 4; s++) {
        static const int first[4] = {GPTQ_LIN_Q, GPTQ_LIN_O, GPTQ_LIN_GATE, GPTQ_LIN_DOWN};
        hessians += a->layers[0].lin[first[s]].quantized;
    }
    printf("device_forward %s ts %d act %d: %lld linears packed alike, %d downloads\n", dir, ts,
           act, (long long)quantized, downloads);
    cr_expect_gt(quantized, 0);
    cr_expect_eq(downloads, hessians * layers, "%s: %d downloads, one per Hessian expected (%lld)",
                 dir, downloads, (long long)(hessians * layers));
    if (eval_path) { /* evaluation through forward_dev.c: the host's perplexity */
        gptq_tokens *text = NULL;
        double pa, pb;
        cr_assert_eq(gptq_tokens_load(host, eval_path, kind, &text), GPTQ_OK);
        pa = eval_ppl(dev, a, text);
        pb = eval_ppl(host, b, text);
        printf("  evaluated: ppl %.9f on buffers, %.9f on the host\n", pa, pb);
        cr_expect_eq(pa, pb, "%.9f vs %.9f", pa, pb);
        cr_expect_eq(live_buffers, 0, "%s: evaluation left buffers", dir);
        gptq_tokens_free(text);
    }
    gptq_model_free(a);
    gptq_model_free(b);
    gptq_tokens_free(calib);
    gptq_ctx_free(dev);
    gptq_ctx_free(host);
}

Test(resident, device_forward_tiny_true_sequential)
{
    device_forward_case(TINY, TINY "/calib.txt", GPTQ_TOKENS_BYTES, 1, 0, TINY "/eval.txt");
}

Test(resident, device_forward_tiny_one_pass_act_order)
{
    device_forward_case(TINY, TINY "/calib.txt", GPTQ_TOKENS_BYTES, 0, 1, NULL);
}

Test(resident, device_forward_stories260k)
{
    device_forward_case(GPTQ_TEST_MODELS "/stories260K", GPTQ_TEST_MODELS "/stories260K/calib_ids.json",
                        GPTQ_TOKENS_IDS, 1, 0, GPTQ_TEST_MODELS "/stories260K/eval_ids.json");
}

/* A float model evaluated through forward_dev.c (weights uploaded per layer, the head on
 * the buffers) gives the host's perplexity. */
Test(resident, device_forward_float_eval)
{
    gptq_ctx *dev = resident_ctx(), *host = NULL;
    gptq_model *a = NULL, *b = NULL;
    gptq_tokens *text = NULL;
    double pa, pb;

    resident_cpu.device_forward = 1;
    cr_assert_eq(gptq_ctx_create(NULL, &host, NULL, 0), GPTQ_OK);
    cr_assert_eq(gptq_model_open(dev, TINY, &a), GPTQ_OK, "%s", gptq_ctx_last_error(dev));
    cr_assert_eq(gptq_model_open(host, TINY, &b), GPTQ_OK);
    cr_assert_eq(gptq_tokens_load(host, TINY "/eval.txt", GPTQ_TOKENS_BYTES, &text), GPTQ_OK);
    pa = eval_ppl(dev, a, text);
    pb = eval_ppl(host, b, text);
    printf("float tiny-llama-bytes: ppl %.9f on buffers, %.9f on the host\n", pa, pb);
    cr_expect_eq(pa, pb, "%.9f vs %.9f", pa, pb);
    cr_expect_eq(live_buffers, 0);
    gptq_tokens_free(text);
    gptq_model_free(a);
    gptq_model_free(b);
    gptq_ctx_free(dev);
    gptq_ctx_free(host);
}

/* The next buffer refused (the activations of the pipeline or of the evaluation, the
 * first they ask for): they say so and run on the host with the same results. */
static int refuse_next;

static void *refusing_alloc(gptq_ctx *ctx, size_t bytes)
{
    if (refuse_next) {
        refuse_next = 0;
        return NULL;
    }
    return counting_alloc(ctx, bytes);
}

static char log_text[4096];

static void keep_log(void *user, int32_t level, const char *msg)
{
    size_t n = strlen(log_text);
    (void)user;
    (void)level;
    snprintf(log_text + n, sizeof log_text - n, "%s\n", msg);
}

Test(resident, device_forward_falls_back_when_memory_is_short)
{
    gptq_ctx *dev = resident_ctx(), *host = NULL;
    gptq_tokens *calib = NULL;
    gptq_model *a, *b;
    double pa, pb;

    resident_cpu.device_forward = 1;
    resident_cpu.buf_alloc = refusing_alloc;
    dev->opts.log = keep_log;
    dev->opts.log_level = GPTQ_LOG_WARN;
    log_text[0] = '\0';
    cr_assert_eq(gptq_ctx_create(NULL, &host, NULL, 0), GPTQ_OK);
    cr_assert_eq(gptq_tokens_load(host, TINY "/calib.txt", GPTQ_TOKENS_BYTES, &calib), GPTQ_OK);
    refuse_next = 1;
    a = quantize_model(dev, TINY, calib, 1, 0);
    b = quantize_model(host, TINY, calib, 1, 0);
    cr_expect(strstr(log_text, "do not fit") != NULL, "no note in the log: %s", log_text);
    for (int64_t i = 0; i < a->cfg.n_layers; i++)
        for (int j = 0; j < GPTQ_LIN_COUNT; j++)
            cr_expect(same_packed(&a->layers[i].lin[j].packed, &b->layers[i].lin[j].packed),
                      "layer %lld %s", (long long)i, gptq__lin_names[j]);
    log_text[0] = '\0';
    refuse_next = 1;
    pa = eval_ppl(dev, a, calib);
    pb = eval_ppl(host, b, calib);
    cr_expect(strstr(log_text, "do not fit") != NULL, "no note in the log: %s", log_text);
    cr_expect_eq(pa, pb, "%.9f vs %.9f", pa, pb);
    cr_expect_eq(live_buffers, 0);
    gptq_model_free(a);
    gptq_model_free(b);
    gptq_tokens_free(calib);
    gptq_ctx_free(dev);
    gptq_ctx_free(host);
}

Test(resident, device_forward_stories260k_one_pass)
{
    device_forward_case(GPTQ_TEST_MODELS "/stories260K", GPTQ_TEST_MODELS "/stories260K/calib_ids.json",
                        GPTQ_TOKENS_IDS, 0, 1, NULL);
}
