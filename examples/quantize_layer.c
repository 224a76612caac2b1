/*
 * Quantize one linear layer with libgptq and run it.
 *
 * The whole life of a GPTQ layer in one program:
 *   1. accumulate the Hessian H = 2/n * sum X^T X from calibration inputs,
 *   2. quantize W (4-bit, groups of 128 columns) with GPTQ,
 *   3. pack the result into the AutoGPTQ "gptq" v1 checkpoint layout,
 *   4. multiply an input with the packed weights (gptq_dequant_matmul) and check the
 *      answer against x * Q^T computed from the dequantized weights.
 *
 * Random data comes from a fixed-seed linear congruential generator so every run
 * (and every platform) sees the same numbers. Exit status 0 when the check passes.
 *
 * Build: cc quantize_layer.c $(pkg-config --cflags --libs gptq)
 */
#include <stdio.h>
#include <stdlib.h>

#include <gptq/gptq.h>

#define OUT_FEATURES 256
#define IN_FEATURES 512
#define NSAMPLES 16 /* calibration sequences */
#define SEQLEN 32   /* rows per sequence */
#define BATCH 4     /* rows of the test input */

/* Numerical Recipes' 32-bit LCG; the top 24 bits give a float in [-1, 1). */
static uint32_t lcg_state = 12345u;

static float uniform(void)
{
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return (float)(lcg_state >> 8) / 8388608.0f - 1.0f;
}

static void fill(float *a, size_t n, float scale)
{
    size_t i;
    for (i = 0; i < n; i++)
        a[i] = scale * uniform();
}

static double absd(double v)
{
    return v < 0 ? -v : v;
}

/* Compare y (from the packed weights) with x * Q^T computed in double. The packed
 * checkpoint stores float16 scales while Q uses the float32 ones, so each product may
 * differ by a relative 2^-11 (half an ulp of float16), plus float32 summation error;
 * the bound below is that, taken over the sum of |x_j * Q_rj|. Returns the worst
 * error and sets *ok. */
static double check_matmul(const float *x, const float *q, const float *y, int *ok)
{
    double worst = 0.0;
    int b, r, j;

    *ok = 1;
    for (b = 0; b < BATCH; b++) {
        for (r = 0; r < OUT_FEATURES; r++) {
            double ref = 0.0, mag = 0.0, err;
            for (j = 0; j < IN_FEATURES; j++) {
                double t = (double)x[b * IN_FEATURES + j] * q[(size_t)r * IN_FEATURES + j];
                ref += t;
                mag += absd(t);
            }
            err = absd(y[b * OUT_FEATURES + r] - ref);
            if (err > worst)
                worst = err;
            if (err > mag * (1.0 / 2048.0 + IN_FEATURES * 1.2e-7) + 1e-6)
                *ok = 0;
        }
    }
    return worst;
}

static int fail(gptq_ctx *ctx, const char *what)
{
    fprintf(stderr, "quantize_layer: %s: %s\n", what, gptq_ctx_last_error(ctx));
    return 1;
}

int main(void)
{
    gptq_ctx *ctx = NULL;
    gptq_hessian *h = NULL;
    gptq_result *res = NULL;
    gptq_config cfg;
    gptq_packed packed;
    int64_t qw_shape[2], qz_shape[2], ng;
    float *w, *calib, *x, *y;
    char errbuf[256];
    double max_err;
    int ok = 0, rc = 1;

    w = malloc(sizeof(float) * OUT_FEATURES * IN_FEATURES);
    calib = malloc(sizeof(float) * NSAMPLES * SEQLEN * IN_FEATURES);
    x = malloc(sizeof(float) * BATCH * IN_FEATURES);
    y = malloc(sizeof(float) * BATCH * OUT_FEATURES);
    packed.qweight = NULL;
    packed.qzeros = NULL;
    packed.scales = NULL;
    packed.g_idx = NULL;
    if (w == NULL || calib == NULL || x == NULL || y == NULL) {
        fprintf(stderr, "quantize_layer: out of memory\n");
        goto done;
    }
    fill(w, (size_t)OUT_FEATURES * IN_FEATURES, 0.05f);
    fill(calib, (size_t)NSAMPLES * SEQLEN * IN_FEATURES, 1.0f);
    fill(x, (size_t)BATCH * IN_FEATURES, 1.0f);

    /* A context holds the backend, threads and the last error message. */
    if (gptq_ctx_create(NULL, &ctx, errbuf, sizeof errbuf) != GPTQ_OK) {
        fprintf(stderr, "quantize_layer: %s\n", errbuf);
        goto done;
    }

    /* 1. Hessian from NSAMPLES sequences of SEQLEN rows. */
    if (gptq_hessian_create(ctx, IN_FEATURES, &h) != GPTQ_OK ||
        gptq_hessian_add(ctx, h, calib, NSAMPLES, SEQLEN) != GPTQ_OK) {
        rc = fail(ctx, "hessian");
        goto done;
    }

    /* 2. GPTQ at 4 bits, one scale and zero point per 128 input columns. */
    gptq_config_init(&cfg);
    cfg.bits = 4;
    cfg.group_size = 128;
    if (gptq_layer_quantize(ctx, w, OUT_FEATURES, IN_FEATURES, h, &cfg, &res) != GPTQ_OK) {
        rc = fail(ctx, "quantize");
        goto done;
    }

    /* 3. Pack into the v1 checkpoint tensors; the caller owns the buffers. */
    ng = gptq_result_ngroups(res);
    if (gptq_packed_shape(cfg.bits, OUT_FEATURES, IN_FEATURES, ng, qw_shape, qz_shape) !=
        GPTQ_OK) {
        rc = fail(ctx, "packed shape");
        goto done;
    }
    packed.bits = cfg.bits;
    packed.format = GPTQ_FORMAT_V1;
    packed.out_features = OUT_FEATURES;
    packed.in_features = IN_FEATURES;
    packed.ngroups = ng;
    packed.qweight = malloc(sizeof(int32_t) * (size_t)(qw_shape[0] * qw_shape[1]));
    packed.qzeros = malloc(sizeof(int32_t) * (size_t)(qz_shape[0] * qz_shape[1]));
    packed.scales = malloc(sizeof(uint16_t) * (size_t)(ng * OUT_FEATURES));
    packed.g_idx = malloc(sizeof(int32_t) * IN_FEATURES);
    if (packed.qweight == NULL || packed.qzeros == NULL || packed.scales == NULL ||
        packed.g_idx == NULL) {
        fprintf(stderr, "quantize_layer: out of memory\n");
        goto done;
    }
    if (gptq_pack_result(ctx, res, GPTQ_PACK_CLEAN, &packed) != GPTQ_OK) {
        rc = fail(ctx, "pack");
        goto done;
    }

    /* 4. y = x * Wq^T straight from the packed tensors. */
    if (gptq_dequant_matmul(ctx, &packed, x, BATCH, NULL, y) != GPTQ_OK) {
        rc = fail(ctx, "dequant_matmul");
        goto done;
    }
    max_err = check_matmul(x, gptq_result_q(res), y, &ok);

    printf("layer %dx%d, %d-bit, group size %d, %lld groups\n", OUT_FEATURES, IN_FEATURES,
           (int)cfg.bits, (int)cfg.group_size, (long long)ng);
    printf("GPTQ loss: %.6g\n", gptq_result_loss(res));
    printf("dequant_matmul vs x*Q^T: max abs error %.3g (%s)\n", max_err,
           ok ? "ok" : "TOO LARGE");
    rc = ok ? 0 : 1;

done:
    free(packed.qweight);
    free(packed.qzeros);
    free(packed.scales);
    free(packed.g_idx);
    gptq_result_free(res);
    gptq_hessian_free(h);
    gptq_ctx_free(ctx);
    free(w);
    free(calib);
    free(x);
    free(y);
    return rc;
}
