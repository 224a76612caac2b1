/*
 * The core's resident block loop (src/core/quantize.c, make_resident), which backends
 * with resident_layer (the GPU) use: W, U and the block errors in buf_alloc buffers for
 * the whole loop, uploaded once. Run here on the CPU backend's own primitives with
 * resident_layer switched on (a copy of its table whose buffers are counted), it must give
 * bit for bit what the ordinary loop gives, on every public reference case, and free
 * every buffer it took.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "refcase.h"

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
