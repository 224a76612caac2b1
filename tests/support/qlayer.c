/*
 * Test support: qlayer.h's asserting wrappers for the Criterion tests, over the
 * Criterion-free layer maker and reference in qlayer_make.c.
 */
#include <criterion/criterion.h>
#include <math.h>

#include "qlayer.h"

void qlayer_make(gptq_ctx *ctx, qlayer *L, int32_t bits, int32_t format, int64_t R, int64_t C,
                 int32_t gs, int act, int sym, uint64_t seed)
{
    const char *why = "";
    const int rc = qlayer_try_make(ctx, L, bits, format, R, C, gs, act, sym, seed, &why);

    cr_assert_eq(rc, GPTQ_OK, "qlayer_make: %s", why);
}

void qlayer_reference(const qlayer *L, const float *x, int64_t batch, int with_bias, int bound,
                      double *ref, double *tol)
{
    const char *why = "";
    const int rc = qlayer_try_reference(L, x, batch, with_bias, bound, ref, tol, &why);

    cr_assert_eq(rc, GPTQ_OK, "%s", why);
}

void qlayer_check(const double *ref, const double *tol, const float *y, int64_t n,
                  const char *what)
{
    for (int64_t i = 0; i < n; i++)
        cr_assert(fabs((double)y[i] - ref[i]) <= tol[i],
                  "%s: y[%lld] = %.9g, expected %.9g +- %.3g", what, (long long)i, (double)y[i],
                  ref[i], tol[i]);
}
