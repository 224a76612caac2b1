/*
 * `test_cuda_emu model_ops`, ctest cuda_emu_model_ops: src/cuda/model_ops.cu (the
 * device_forward slots of backend.h) on the host emulation against the model's host
 * versions (src/model/forward.c, attention.c), on device buffers:
 *  - add, scale, add_bias and RoPE: bit for bit (the same float32 operations);
 *  - RMSNorm: within one ulp (the mean of squares is a double sum in another order);
 *  - SiLU * up: within 4 ulp (CUDA's expf against the host's vectorised exp);
 *  - causal GQA attention: within 2e-6 relative to the largest output (exp and the
 *    softmax denominator's order) over sequences that end inside a 64-token tile and
 *    span several, head_dim below, at and above one 64-channel tile, 1, 2 and 4 query
 *    heads per kv head, and a scratch (ATTN_SCRATCH_BYTES, made small for this build)
 *    that holds only a few (sequence, head) pairs, so the chunk loop runs.
 * Each input buffer's contents are checked unchanged where the slot only reads it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "emu_test.h"
#include "module_stubs.h"
#include "testrng.h"

extern "C" {
#include "model/model.h"
}

namespace {

std::vector<float> random_vec(uint64_t *s, size_t n, float lo, float hi)
{
    std::vector<float> v(n);
    for (auto &x : v)
        x = lo + (hi - lo) * (float)((double)(rng_next(s) >> 11) / 9007199254740992.0);
    return v;
}

float *to_device(const std::vector<float> &v)
{
    void *p = NULL;
    cudaMalloc(&p, v.size() * sizeof(float) + 1);
    cudaMemcpy(p, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice);
    return (float *)p;
}

std::vector<float> from_device(const float *p, size_t n)
{
    std::vector<float> v(n);
    cudaMemcpy(v.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost);
    return v;
}

/* Distance in units in the last place of float32 (same sign assumed; 0 when equal). */
int64_t ulps(float a, float b)
{
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    if (ia < 0)
        ia = INT32_MIN - ia;
    if (ib < 0)
        ib = INT32_MIN - ib;
    return ia > ib ? (int64_t)ia - ib : (int64_t)ib - ia;
}

int64_t max_ulps(const std::vector<float> &a, const std::vector<float> &b)
{
    int64_t m = a.size() == b.size() ? 0 : INT64_MAX;
    for (size_t i = 0; i < a.size() && i < b.size(); i++) {
        const int64_t u = ulps(a[i], b[i]);
        m = u > m ? u : m;
    }
    return m;
}

void test_elementwise(gptq_ctx *ctx, uint64_t *s)
{
    const int64_t n = 7, width = 300; /* rows not a multiple of a block, 7 * 300 floats */
    const size_t cnt = (size_t)(n * width);
    std::vector<float> x = random_vec(s, cnt, -3.0f, 3.0f), y = random_vec(s, cnt, -3.0f, 3.0f);
    std::vector<float> w = random_vec(s, (size_t)width, 0.5f, 1.5f);
    float *dx = to_device(x), *dy = to_device(y), *dw = to_device(w);
    std::vector<float> ref, got;

    /* add */
    ref = y;
    gptq__add_into(ctx, ref.data(), x.data(), n, width);
    EXPECT(gptq_cu_add(ctx, dy, dx, (int64_t)cnt) == GPTQ_OK, "add: %s", gptq_ctx_last_error(ctx));
    got = from_device(dy, cnt);
    EXPECT(max_ulps(ref, got) == 0, "add differs (%lld ulp)", (long long)max_ulps(ref, got));
    EXPECT(from_device(dx, cnt) == x, "add wrote its input");

    /* scale, in place and out of place */
    ref.resize(cnt);
    for (size_t i = 0; i < cnt; i++)
        ref[i] = 0.37109375f * x[i];
    EXPECT(gptq_cu_scale(ctx, dy, dx, 0.37109375f, (int64_t)cnt) == GPTQ_OK, "scale");
    EXPECT(from_device(dy, cnt) == ref, "scale differs");
    EXPECT(gptq_cu_scale(ctx, dx, dx, 0.37109375f, (int64_t)cnt) == GPTQ_OK, "scale in place");
    EXPECT(from_device(dx, cnt) == ref, "scale in place differs");
    cudaMemcpy(dx, x.data(), cnt * sizeof(float), cudaMemcpyHostToDevice);

    /* bias */
    cudaMemcpy(dy, y.data(), cnt * sizeof(float), cudaMemcpyHostToDevice);
    ref = y;
    for (int64_t r = 0; r < n; r++)
        for (int64_t o = 0; o < width; o++)
            ref[(size_t)(r * width + o)] += w[(size_t)o];
    EXPECT(gptq_cu_add_bias(ctx, dy, dw, n, width) == GPTQ_OK, "add_bias");
    EXPECT(from_device(dy, cnt) == ref, "add_bias differs");

    /* RMSNorm, out of place and in place */
    ref.resize(cnt);
    gptq__rms_norm(ctx, x.data(), w.data(), n, width, 1e-5f, ref.data());
    EXPECT(gptq_cu_rms_norm(ctx, dx, dw, n, width, 1e-5f, dy) == GPTQ_OK, "rms_norm");
    got = from_device(dy, cnt);
    EXPECT(max_ulps(ref, got) <= 1, "rms_norm: %lld ulp", (long long)max_ulps(ref, got));
    EXPECT(from_device(dx, cnt) == x, "rms_norm wrote its input");
    EXPECT(gptq_cu_rms_norm(ctx, dx, dw, n, width, 1e-5f, dx) == GPTQ_OK, "rms_norm in place");
    got = from_device(dx, cnt);
    EXPECT(max_ulps(ref, got) <= 1, "rms_norm in place: %lld ulp", (long long)max_ulps(ref, got));
    cudaMemcpy(dx, x.data(), cnt * sizeof(float), cudaMemcpyHostToDevice);

    /* SiLU(g) * u: g = x, u = y */
    cudaMemcpy(dy, y.data(), cnt * sizeof(float), cudaMemcpyHostToDevice);
    ref = x;
    gptq__silu_mul(ctx, ref.data(), y.data(), n, width);
    EXPECT(gptq_cu_silu_mul(ctx, dx, dy, n, width) == GPTQ_OK, "silu_mul");
    got = from_device(dx, cnt);
    EXPECT(max_ulps(ref, got) <= 4, "silu_mul: %lld ulp", (long long)max_ulps(ref, got));
    EXPECT(from_device(dy, cnt) == y, "silu_mul wrote u");

    cudaFree(dx);
    cudaFree(dy);
    cudaFree(dw);
}

gptq__model_config config(int64_t heads, int64_t kv_heads, int64_t head_dim)
{
    gptq__model_config c;
    memset(&c, 0, sizeof c);
    c.n_heads = heads;
    c.n_kv_heads = kv_heads;
    c.head_dim = head_dim;
    c.hidden = heads * head_dim;
    c.rope_theta = 10000.0;
    c.rope_type = GPTQ_ROPE_NONE;
    return c;
}

void test_rope(gptq_ctx *ctx, uint64_t *s)
{
    const int64_t nseq = 3, seqlen = 37, heads = 3, d = 20, half = d / 2, n = nseq * seqlen;
    gptq__model_config c = config(heads, 1, d);
    std::vector<float> cs((size_t)(seqlen * half)), sn(cs.size());
    std::vector<float> x = random_vec(s, (size_t)(n * heads * d), -2.0f, 2.0f), ref = x;

    EXPECT(gptq__rope_tables(ctx, &c, seqlen, 0, cs.data(), sn.data()) == GPTQ_OK, "tables");
    gptq__rope_rows(ctx, ref.data(), cs.data(), sn.data(), n, seqlen, heads, d);
    float *dx = to_device(x), *dc = to_device(cs), *ds = to_device(sn);
    EXPECT(gptq_cu_rope(ctx, dx, dc, ds, n, seqlen, heads, d) == GPTQ_OK, "rope");
    EXPECT(from_device(dx, x.size()) == ref, "rope differs (%lld ulp)",
           (long long)max_ulps(ref, from_device(dx, x.size())));
    cudaFree(dx);
    cudaFree(dc);
    cudaFree(ds);
}

void attention_case(gptq_ctx *ctx, uint64_t *s, int64_t nseq, int64_t L, int64_t heads,
                    int64_t kv, int64_t d)
{
    gptq__model_config c = config(heads, kv, d);
    const size_t nq = (size_t)(nseq * L * heads * d), nk = (size_t)(nseq * L * kv * d);
    std::vector<float> q = random_vec(s, nq, -1.5f, 1.5f), k = random_vec(s, nk, -1.5f, 1.5f);
    std::vector<float> v = random_vec(s, nk, -1.0f, 1.0f), ref(nq);
    float *dq = to_device(q), *dk = to_device(k), *dv = to_device(v);
    float *dout = to_device(std::vector<float>(nq, NAN));
    double worst = 0.0, big = 0.0;

    EXPECT(gptq__attention(ctx, &c, q.data(), k.data(), v.data(), nseq, L, ref.data()) == GPTQ_OK,
           "host attention");
    EXPECT(gptq_cu_attention(ctx, dq, dk, dv, nseq, L, heads, kv, d, dout) == GPTQ_OK,
           "attention: %s", gptq_ctx_last_error(ctx));
    std::vector<float> got = from_device(dout, nq);
    for (size_t i = 0; i < nq; i++) {
        big = fabs(ref[i]) > big ? fabs(ref[i]) : big;
        const double e = fabs((double)got[i] - ref[i]);
        worst = e > worst || e != e ? e : worst;
    }
    EXPECT(worst <= 2e-6 * big, "attention nseq %lld L %lld heads %lld/%lld d %lld: error %.3g "
           "of %.3g", (long long)nseq, (long long)L, (long long)heads, (long long)kv, (long long)d,
           worst, big);
    EXPECT(from_device(dq, nq) == q && from_device(dk, nk) == k && from_device(dv, nk) == v,
           "attention wrote an input");
    cudaFree(dq);
    cudaFree(dk);
    cudaFree(dv);
    cudaFree(dout);
}

} // namespace

void test_model_ops(gptq_ctx *ctx)
{
    uint64_t s = 0x6d6f64656c6f7073ull;
    const long faults0 = gptq_emu::st().faults;

    gptq_emu_module_open(ctx);
    test_elementwise(ctx, &s);
    test_rope(ctx, &s);
    attention_case(ctx, &s, 2, 70, 4, 2, 24);  /* a tile and a bit, 2 heads per kv head */
    attention_case(ctx, &s, 1, 130, 2, 2, 72); /* three tiles; two channel tiles */
    attention_case(ctx, &s, 3, 64, 4, 1, 64);  /* exactly one tile; 4 heads per kv head */
    attention_case(ctx, &s, 2, 5, 1, 1, 8);    /* tiny */
    /* Refusals: kv heads that do not divide the heads. */
    EXPECT(gptq_cu_attention(ctx, NULL, NULL, NULL, 1, 4, 3, 2, 8, NULL) ==
               GPTQ_ERR_INVALID_ARGUMENT,
           "3 heads over 2 kv heads accepted");
    gptq_emu_module_close();
    EXPECT(gptq_emu::st().faults == faults0, "emulation faults during model_ops");
    printf("cuda_emu model_ops: element-wise, RoPE, 4 attention shapes\n");
}
