/*
 * `test_cuda_emu quant_block`, ctest cuda_emu_quant_block: src/cuda/quant_block.cu's
 * gptq_cu_quantize_block on the host emulation against the CPU backend's quantize_block
 * (src/core/quant_block.c, through a CPU context's table), bit for bit: q and codes (the
 * whole [R, C] arrays, so columns outside the block must stay untouched), err, scales and
 * zeros (the whole arrays), row_loss. Random W, an upper-triangular U with a positive
 * diagonal, identity or shuffled perm, bits 2/3/4/8, sym/asym, group_size -1/32/48/128,
 * static groups, RTN (u NULL), blocks of 1..300 columns not aligned to groups, 5/33/77
 * rows. Every case runs twice on the GPU side: with host w/u/err (staged through the
 * module's scratch) and with w, u, err in device memory (used in place: err is read back
 * from the device; w must be left as it was).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "emu_test.h"
#include "internal.h"
#include "module_stubs.h"
#include "testrng.h"

namespace {

struct qb_case {
    int32_t bits, sym, gs, static_groups, rtn, shuffle;
    int64_t R, C, i1, i2;
};

/* Everything one side (CPU or emulated GPU) writes, from the same initial contents. */
struct qb_out {
    std::vector<float> scales, zeros, q, err;
    std::vector<int32_t> codes;
    std::vector<double> loss;
};

int64_t rnd(uint64_t *s, int64_t n) { return (int64_t)(rng_next(s) % (uint64_t)n); }

/* Bitwise equality of two arrays; the first difference reported. */
template <class T>
bool same(const std::vector<T> &a, const std::vector<T> &b, const char *what, const char *desc)
{
    if (a.size() != b.size() || (a.size() && memcmp(a.data(), b.data(), a.size() * sizeof(T)))) {
        size_t i = 0;
        while (i < a.size() && i < b.size() && !memcmp(&a[i], &b[i], sizeof(T)))
            i++;
        fprintf(stderr, "  %s: %s differs at %zu of %zu (cpu %.9g, cuda %.9g)\n", desc, what, i,
                a.size(), i < a.size() ? (double)a[i] : NAN, i < b.size() ? (double)b[i] : NAN);
        return false;
    }
    return true;
}

void run_case(gptq_ctx *ctx, const qb_case &k, uint64_t seed)
{
    const int64_t R = k.R, C = k.C, bw = k.i2 - k.i1;
    const int32_t maxq = (1 << k.bits) - 1, gs = k.gs;
    const int64_t ng = gs == -1 ? 1 : (C + gs - 1) / gs;
    uint64_t s = seed;
    std::vector<float> w((size_t)(R * C)), u((size_t)(C * C), 0.0f), rs((size_t)R), rz((size_t)R);
    std::vector<int32_t> perm((size_t)C);
    qb_out init, out[3]; /* CPU, GPU staged, GPU in place */
    char desc[200];

    snprintf(desc, sizeof desc,
             "bits %d %s gs %d%s%s perm %s R %lld C %lld block [%lld, %lld) seed %llu", k.bits,
             k.sym ? "sym" : "asym", gs, k.static_groups ? " static" : "", k.rtn ? " rtn" : "",
             k.shuffle ? "shuffled" : "identity", (long long)R, (long long)C, (long long)k.i1,
             (long long)k.i2, (unsigned long long)seed);

    for (auto &x : w)
        x = rng_uniform(&s) * 2.0f;
    for (int64_t i = 0; i < C; i++) {
        u[(size_t)(i * C + i)] = 1.0f + 0.5f * rng_uniform(&s); /* [0.5, 1.5) */
        for (int64_t j = i + 1; j < C; j++)
            u[(size_t)(i * C + j)] = 0.1f * rng_uniform(&s);
    }
    for (int64_t i = 0; i < C; i++)
        perm[(size_t)i] = (int32_t)i;
    if (k.shuffle)
        for (int64_t i = C - 1; i > 0; i--)
            std::swap(perm[(size_t)i], perm[(size_t)rnd(&s, i + 1)]);
    /* Quantizer parameters of a plausible size (codes spread over [0, maxq]). */
    auto param = [&](float *sc, float *z) {
        *sc = 4.0f / (float)maxq * (1.0f + 0.4f * rng_uniform(&s));
        *z = k.sym ? (float)((maxq + 1) / 2) : (float)rnd(&s, maxq + 1);
    };
    for (int64_t r = 0; r < R; r++)
        param(&rs[(size_t)r], &rz[(size_t)r]);
    init.scales.resize((size_t)(ng * R));
    init.zeros.resize((size_t)(ng * R));
    for (int64_t i = 0; i < ng * R; i++)
        param(&init.scales[(size_t)i], &init.zeros[(size_t)i]);
    init.q.resize((size_t)(R * C));
    init.codes.resize((size_t)(R * C));
    for (int64_t i = 0; i < R * C; i++) {
        init.q[(size_t)i] = -1234.5f;
        init.codes[(size_t)i] = -7;
    }
    init.err.assign((size_t)(bw * R), 777.0f);
    init.loss.resize((size_t)R);
    for (auto &x : init.loss)
        x = 10.0 + rng_uniform(&s);

    for (int side = 0; side < 3; side++) {
        qb_out &o = out[side];
        gptq_block_args a;
        float *dw = NULL, *du = NULL, *derr = NULL;
        int rc;

        o = init;
        memset(&a, 0, sizeof a);
        a.rows = R;
        a.cols = C;
        a.i1 = k.i1;
        a.i2 = k.i2;
        a.maxq = maxq;
        a.sym = k.sym;
        a.group_size = gs;
        a.static_groups = k.static_groups;
        a.w = w.data();
        a.u = k.rtn ? NULL : u.data();
        a.perm = perm.data();
        a.row_scale = rs.data();
        a.row_zero = rz.data();
        a.scales = o.scales.data();
        a.zeros = o.zeros.data();
        a.q = o.q.data();
        a.codes = o.codes.data();
        a.err = o.err.data();
        a.row_loss = o.loss.data();
        a.threads = 1;
        if (side == 2) {
            EXPECT(cudaMalloc(&dw, w.size() * 4) == cudaSuccess &&
                       cudaMemcpy(dw, w.data(), w.size() * 4, cudaMemcpyHostToDevice) ==
                           cudaSuccess,
                   "%s: device w", desc);
            a.w = dw;
            if (!k.rtn) {
                EXPECT(cudaMalloc(&du, u.size() * 4) == cudaSuccess &&
                           cudaMemcpy(du, u.data(), u.size() * 4, cudaMemcpyHostToDevice) ==
                               cudaSuccess &&
                           cudaMalloc(&derr, o.err.size() * 4) == cudaSuccess &&
                           cudaMemcpy(derr, o.err.data(), o.err.size() * 4,
                                      cudaMemcpyHostToDevice) == cudaSuccess,
                       "%s: device u, err", desc);
                a.u = du;
                a.err = derr;
            }
        }
        rc = side == 0 ? ctx->backend->quantize_block(ctx, &a) : gptq_cu_quantize_block(ctx, &a);
        EXPECT(rc == GPTQ_OK, "%s: side %d: status %d: %s", desc, side, rc,
               gptq_ctx_last_error(ctx));
        EXPECT(cudaGetLastError() == cudaSuccess && gptq_emu::st().faults == 0,
               "%s: side %d: emulation fault", desc, side);
        if (side == 2) {
            std::vector<float> back(w.size());
            if (derr)
                EXPECT(cudaMemcpy(o.err.data(), derr, o.err.size() * 4, cudaMemcpyDeviceToHost) ==
                           cudaSuccess,
                       "%s: err back", desc);
            EXPECT(cudaMemcpy(back.data(), dw, w.size() * 4, cudaMemcpyDeviceToHost) ==
                               cudaSuccess &&
                           !memcmp(back.data(), w.data(), w.size() * 4),
                   "%s: device w modified", desc);
            cudaFree(dw);
            cudaFree(du);
            cudaFree(derr);
        }
    }
    for (int side = 1; side < 3; side++) {
        char d2[240];
        snprintf(d2, sizeof d2, "%s, %s", desc, side == 1 ? "host operands" : "device operands");
        EXPECT(same(out[0].q, out[side].q, "q", d2), "%s: q", d2);
        EXPECT(same(out[0].codes, out[side].codes, "codes", d2), "%s: codes", d2);
        EXPECT(same(out[0].err, out[side].err, "err", d2), "%s: err", d2);
        EXPECT(same(out[0].scales, out[side].scales, "scales", d2), "%s: scales", d2);
        EXPECT(same(out[0].zeros, out[side].zeros, "zeros", d2), "%s: zeros", d2);
        EXPECT(same(out[0].loss, out[side].loss, "row_loss", d2), "%s: row_loss", d2);
    }
    /* The CPU side did write the block (a case that compares untouched arrays proves
     * nothing). */
    EXPECT(out[0].codes != init.codes && (k.rtn || out[0].err != init.err), "%s: no output",
           desc);
}

} /* namespace */

void test_quant_block(gptq_ctx *ctx)
{
    static const int32_t bits[] = {2, 3, 4, 8};
    static const int32_t groups[] = {-1, 32, 48, 128};
    static const int64_t rows[] = {5, 33, 77};
    static const int64_t widths[] = {1, 2, 7, 31, 33, 47, 64, 97, 129, 200, 255, 300};
    const long faults0 = gptq_emu::st().faults;
    uint64_t s = 0x5eed0b10c4ull;
    int n = 0;

    gptq_emu_module_open(ctx);
    /* Every bits x sym x group x mode (dynamic groups, static groups, RTN; static only
     * with groups), with rows, width, block start and perm drawn. */
    for (int32_t b : bits)
        for (int sym = 0; sym < 2; sym++)
            for (int32_t gs : groups)
                for (int mode = 0; mode < 3; mode++) {
                    if (mode == 1 && gs == -1)
                        continue;
                    qb_case k;
                    k.bits = b;
                    k.sym = sym;
                    k.gs = gs;
                    k.static_groups = mode == 1;
                    k.rtn = mode == 2;
                    k.shuffle = (int)rnd(&s, 2);
                    k.R = rows[n % 3];
                    const int64_t bw = widths[(size_t)n % (sizeof widths / sizeof *widths)];
                    /* A block start that is no multiple of the group (mostly), and C with
                     * room after the block (or none: the last block). */
                    k.i1 = rnd(&s, 90);
                    if (gs > 0 && k.i1 % gs == 0 && n % 4)
                        k.i1++;
                    k.i2 = k.i1 + bw;
                    k.C = k.i2 + (n % 3 == 0 ? 0 : rnd(&s, 150));
                    run_case(ctx, k, 1000 + (uint64_t)n);
                    n++;
                }
    gptq_emu_module_close();
    EXPECT(gptq_emu::st().faults == faults0, "emulation faults during quant_block");
    printf("cuda_emu quant_block: %d cases (each: cpu, cuda with host operands, cuda with "
           "device operands)\n",
           n);
}
