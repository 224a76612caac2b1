/*
 * Every public reference case (tests/data/gptq-reference) must pass the README's
 * rule: codes_equal >= min(0.999, floor), loss_ratio <= 1.01, params_equal >= 0.999.
 * Checked with the case's H and with H accumulated from X, with both ways of
 * computing U, and with one and three threads.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "refcase.h"

static void run_case(const char *path, int use_x, int inverse, int threads, gptq_result **keep)
{
    refcase rc;
    gptq_ctx_options o;
    gptq_ctx *ctx;
    gptq_hessian *h = NULL;
    gptq_result *res = NULL;
    gptq_config cfg;
    judge j;

    cr_assert_eq(refcase_load(path, &rc), 0, "cannot load %s", path);
    gptq_ctx_options_init(&o);
    o.threads = threads;
    cr_assert_eq(gptq_ctx_create(&o, &ctx, NULL, 0), GPTQ_OK);
    cr_assert_eq(refcase_hessian(ctx, &rc, use_x, &h), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    refcase_config(&rc, &cfg);
    cfg.inverse = inverse;
    cr_assert_eq(gptq_layer_quantize(ctx, rc.W, rc.out, rc.in, h, &cfg, &res), GPTQ_OK, "%s: %s",
                 rc.name, gptq_ctx_last_error(ctx));
    j = refcase_judge(&rc, gptq_result_codes(res), gptq_result_q(res), gptq_result_scales(res),
                      gptq_result_zeros(res));
    printf("%-48s H=%s U=%s codes_equal=%.6f loss_ratio=%.5f params_equal=%.6f %s\n", rc.name,
           use_x ? "X" : "case", inverse ? "ref" : "fast", j.codes_equal, j.loss_ratio,
           j.params_equal, j.pass ? "PASS" : "FAIL");
    cr_expect(j.pass, "%s (H from %s, inverse %d): codes_equal %.6f (min %.3f) loss_ratio %.5f "
                      "params_equal %.6f",
              rc.name, use_x ? "X" : "case", inverse, j.codes_equal, j.min_codes_equal,
              j.loss_ratio, j.params_equal);
    /* g_idx and perm must match the reference exactly (ties only among dead columns,
     * which a stable sort keeps in index order: compare g_idx, not perm). */
    cr_expect_arr_eq(gptq_result_g_idx(res), rc.g_idx, sizeof(int32_t) * (size_t)rc.in,
                     "%s: g_idx differs", rc.name);
    if (keep)
        *keep = res;
    else
        gptq_result_free(res);
    gptq_hessian_free(h);
    gptq_ctx_free(ctx);
    refcase_free(&rc);
}

static void all_cases(int use_x, int inverse)
{
    int n;
    char **list = refcase_list(&n);
    cr_assert_geq(n, 12, "reference cases missing from " GPTQ_TEST_DATA);
    for (int i = 0; i < n; i++)
        run_case(list[i], use_x, inverse, 0, NULL);
    refcase_list_free(list, n);
}

Test(reference, case_hessian_fast_inverse) { all_cases(0, GPTQ_INVERSE_FAST); }
Test(reference, case_hessian_reference_inverse) { all_cases(0, GPTQ_INVERSE_REFERENCE); }
Test(reference, hessian_from_x) { all_cases(1, GPTQ_INVERSE_FAST); }

/* The library's own loops split rows over threads and are exact, but the thread count
 * is also handed to OpenBLAS, whose Cholesky and GEMM may then sum in another order:
 * results can differ in the last bits, never in quality. */
Test(reference, thread_counts_agree)
{
    int n;
    char **list = refcase_list(&n);
    for (int i = 0; i < n; i++) {
        gptq_result *a, *b;
        int64_t R, C, same = 0;
        run_case(list[i], 0, GPTQ_INVERSE_FAST, 1, &a);
        run_case(list[i], 0, GPTQ_INVERSE_FAST, 3, &b);
        R = gptq_result_out_features(a);
        C = gptq_result_in_features(a);
        for (int64_t k = 0; k < R * C; k++)
            same += gptq_result_codes(a)[k] == gptq_result_codes(b)[k];
        cr_expect_geq((double)same / (double)(R * C), 0.999, "%s", list[i]);
        gptq_result_free(a);
        gptq_result_free(b);
    }
    refcase_list_free(list, n);
}
