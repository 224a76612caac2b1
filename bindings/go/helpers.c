/* C side of the Go binding; see helpers.h. */
#include "helpers.h"

#include "_cgo_export.h"

static gptq_packed packed(int32_t bits, int32_t format, int64_t out, int64_t in,
                          int64_t ngroups, int32_t *qweight, int32_t *qzeros,
                          uint16_t *scales, int32_t *g_idx)
{
    gptq_packed p;

    p.bits = bits;
    p.format = format;
    p.out_features = out;
    p.in_features = in;
    p.ngroups = ngroups;
    p.qweight = qweight;
    p.qzeros = qzeros;
    p.scales = scales;
    p.g_idx = g_idx;
    return p;
}

static gptq_unpacked unpacked(int32_t bits, int64_t out, int64_t in, int64_t ngroups,
                              int32_t *codes, float *scales, int32_t *zeros, int32_t *g_idx)
{
    gptq_unpacked u;

    u.bits = bits;
    u.group_size = -1; /* informative only; g_idx decides */
    u.out_features = out;
    u.in_features = in;
    u.ngroups = ngroups;
    u.codes = codes;
    u.scales = scales;
    u.zeros = zeros;
    u.g_idx = g_idx;
    u.q = NULL;
    return u;
}

int gptq_go_pack_result(gptq_ctx *ctx, const gptq_result *r, int32_t mode, int32_t bits,
                        int32_t format, int64_t out, int64_t in, int64_t ngroups,
                        int32_t *qweight, int32_t *qzeros, uint16_t *scales, int32_t *g_idx)
{
    gptq_packed p = packed(bits, format, out, in, ngroups, qweight, qzeros, scales, g_idx);
    return gptq_pack_result(ctx, r, mode, &p);
}

int gptq_go_pack(gptq_ctx *ctx, int32_t mode, int32_t bits, int32_t format, int64_t out,
                 int64_t in, int64_t ngroups, int32_t *codes, float *scales, int32_t *zeros,
                 int32_t *g_idx, int32_t *qweight, int32_t *qzeros, uint16_t *scales16,
                 int32_t *g_idx_out)
{
    gptq_unpacked u = unpacked(bits, out, in, ngroups, codes, scales, zeros, g_idx);
    gptq_packed p = packed(bits, format, out, in, ngroups, qweight, qzeros, scales16, g_idx_out);
    return gptq_pack(ctx, &u, mode, &p);
}

int gptq_go_unpack(gptq_ctx *ctx, int32_t mode, int32_t bits, int32_t format, int64_t out,
                   int64_t in, int64_t ngroups, int32_t *qweight, int32_t *qzeros,
                   uint16_t *scales16, int32_t *g_idx, int32_t *codes, float *scales,
                   int32_t *zeros, int32_t *g_idx_out)
{
    gptq_packed p = packed(bits, format, out, in, ngroups, qweight, qzeros, scales16, g_idx);
    gptq_unpacked u = unpacked(bits, out, in, ngroups, codes, scales, zeros, g_idx_out);
    return gptq_unpack(ctx, &p, mode, &u);
}

int gptq_go_dequant_matmul(gptq_ctx *ctx, int32_t bits, int32_t format, int64_t out,
                           int64_t in, int64_t ngroups, int32_t *qweight, int32_t *qzeros,
                           uint16_t *scales16, int32_t *g_idx, const float *x, int64_t batch,
                           const float *bias, float *y)
{
    gptq_packed p = packed(bits, format, out, in, ngroups, qweight, qzeros, scales16, g_idx);
    return gptq_dequant_matmul(ctx, &p, x, batch, bias, y);
}

static int progress_trampoline(void *user, const gptq_progress *p)
{
    return gptqGoProgress((uintptr_t)user, (gptq_progress *)p);
}

void gptq_go_set_progress(gptq_quantize_options *opts, uintptr_t handle)
{
    opts->progress = progress_trampoline;
    opts->progress_user = (void *)handle;
}

static void log_trampoline(void *user, int32_t level, const char *msg)
{
    gptqGoLog((uintptr_t)user, level, (char *)msg);
}

void gptq_go_set_log(gptq_ctx_options *opts, uintptr_t handle, int32_t level)
{
    opts->log = log_trampoline;
    opts->log_user = (void *)handle;
    opts->log_level = level;
}
