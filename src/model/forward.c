/*
 * The Llama-family forward pass in float32, over batches of equal-length sequences. It
 * mirrors Hugging Face transformers' modeling_llama.py (Mistral and Qwen2 are the same
 * layer, Qwen2 with q/k/v biases):
 *
 *     LlamaDecoderLayer.forward   h += o(attn(rope(q(n1)), rope(k(n1)), v(n1)))
 *                                 h += down(silu(gate(n2)) * up(n2))
 *                                 with n1 = input_layernorm(h), n2 = post_attention_layernorm(h)
 *     LlamaRMSNorm.forward        weight * (x * rsqrt(mean(x^2) + eps)), in float32
 *     apply_rotary_pos_emb        q * cos + rotate_half(q) * sin, pairs (j, j + head_dim/2)
 *     eager attention             softmax(q k^T / sqrt(head_dim) + causal mask) v
 *
 * Every product and sum is rounded to float32 where the reference rounds (the build
 * uses -ffp-contract=off), so results agree with the reference to float32 summation
 * order. Linears over all nseq * seqlen rows at once go through SGEMM (or
 * their prepared handles, gptq_qlinear_forward, for quantized ones); RoPE tables and causal attention live in
 * attention.c. Element-wise passes run on the context's threads.
 */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "backend.h"
#include "core/simd.h"
#include "format/qlinear.h"
#include "model.h"

/* Logits computed per SGEMM call by the head: bounds the scratch to 64 MiB. */
#define HEAD_CHUNK_FLOATS ((int64_t)16 << 20)
/* Activations of one pure forward call (no captures) are computed through a scratch of
 * at most this size (or one sequence), 64 MiB. */
#define LAYER_SCRATCH_FLOATS ((int64_t)16 << 20)
/* Rows per CBLAS call: its dimensions are int. */
#define BLAS_MAX_ROWS ((int64_t)1 << 30)

static int32_t ctx_threads(const gptq_ctx *ctx)
{
    return ctx && ctx->threads > 0 ? ctx->threads : 1;
}

/* Rows per thread so that each thread gets at least ~64k elements of work. */
static int64_t min_rows(int64_t width)
{
    return width >= 65536 ? 1 : 65536 / (width > 0 ? width : 1);
}

/* ---- element-wise passes ---------------------------------------------------------- */

typedef struct ew_job {
    const float *x;   /* rms_norm input */
    float *y;         /* rms_norm output (may equal x); silu: gate in, result out */
    const float *w;   /* rms_norm weight; silu: up */
    int64_t width;
    float eps;
} ew_job;

/* LlamaRMSNorm.forward: variance = x.pow(2).mean(-1) in float32, x * rsqrt(variance +
 * eps), then weight * that. The mean is accumulated in double and rounded once (torch
 * sums float32 pairwise: both are within an ulp of the exact mean); rsqrt is 1 / sqrt
 * in float32, as ATen's vectorised rsqrt computes it. y may alias x. */
static void rms_rows(void *arg, int64_t r0, int64_t r1)
{
    const ew_job *jb = arg;
    const int64_t d = jb->width;

    for (int64_t r = r0; r < r1; r++) {
        const float *x = jb->x + r * d;
        float *y = jb->y + r * d;
        double ss = 0.0;
        float var, inv;
        for (int64_t j = 0; j < d; j++)
            ss += (double)x[j] * (double)x[j];
        var = (float)(ss / (double)d);
        inv = 1.0f / sqrtf(var + jb->eps);
        for (int64_t j = 0; j < d; j++)
            y[j] = jb->w[j] * (x[j] * inv);
    }
}

static void rms_norm(const gptq_ctx *ctx, const float *x, const float *w, int64_t n,
                     int64_t width, double eps, float *y)
{
    ew_job jb = {.x = x, .y = y, .w = w, .width = width, .eps = (float)eps};
    gptq__parallel_for(ctx_threads(ctx), n, min_rows(width), rms_rows, &jb);
}

/* silu(g) * u for 16 values: g / (1 + exp(-g)) * u. */
static inline void silu16(float *g, const float *u)
{
    gptq_vecw x, e, w;
    GPTQ_LOADW(x, g);
    GPTQ_LOADW(w, u);
    e = -x;
    GPTQ_STOREW(g, e);
    gptq__exp16(g, g);
    GPTQ_LOADW(e, g);
    x = (x / (1.0f + e)) * w;
    GPTQ_STOREW(g, x);
}

/* LlamaMLP.forward's act_fn(gate) * up with act_fn = SiLU, torch's x / (1 + exp(-x))
 * in float32 (exp: core/simd.h's, within ~1 ulp, as torch's vectorised one); the result
 * replaces the gate values. A row's tail goes through a padded copy, so every value is
 * computed the same way. */
GPTQ_MULTIVERSION
static void silu_rows(void *arg, int64_t r0, int64_t r1)
{
    const ew_job *jb = arg;
    const int64_t d = jb->width, body = d / GPTQ_VW * GPTQ_VW;

    for (int64_t r = r0; r < r1; r++) {
        float *g = jb->y + r * d;
        const float *u = jb->w + r * d;
        float tg[GPTQ_VW] = {0.0f}, tu[GPTQ_VW] = {0.0f};
        for (int64_t j = 0; j < body; j += GPTQ_VW)
            silu16(g + j, u + j);
        if (body < d) {
            memcpy(tg, g + body, sizeof(float) * (size_t)(d - body));
            memcpy(tu, u + body, sizeof(float) * (size_t)(d - body));
            silu16(tg, tu);
            memcpy(g + body, tg, sizeof(float) * (size_t)(d - body));
        }
    }
}

static void add_rows(void *arg, int64_t r0, int64_t r1)
{
    const ew_job *jb = arg;
    const int64_t d = jb->width;

    for (int64_t i = r0 * d; i < r1 * d; i++)
        jb->y[i] += jb->x[i];
}

/* y += x over n rows (the residual connections). */
static void add_into(const gptq_ctx *ctx, float *y, const float *x, int64_t n, int64_t width)
{
    ew_job jb = {.x = x, .y = y, .width = width};
    gptq__parallel_for(ctx_threads(ctx), n, min_rows(width), add_rows, &jb);
}

void gptq__rms_norm(const gptq_ctx *ctx, const float *x, const float *w, int64_t n,
                    int64_t width, float eps, float *y)
{
    rms_norm(ctx, x, w, n, width, eps, y);
}

void gptq__silu_mul(const gptq_ctx *ctx, float *g, const float *u, int64_t n, int64_t width)
{
    ew_job jb = {.y = g, .w = u, .width = width};
    gptq__parallel_for(ctx_threads(ctx), n, min_rows(width), silu_rows, &jb);
}

void gptq__add_into(const gptq_ctx *ctx, float *y, const float *x, int64_t n, int64_t width)
{
    add_into(ctx, y, x, n, width);
}

/* ---- linears ---------------------------------------------------------------------- */

/* OpenBLAS's thread count is process-wide (see src/cpu/cpu_backend.c). */
extern int openblas_get_num_threads(void);
extern void openblas_set_num_threads(int num_threads);

typedef struct gemm_job {
    const float *x, *w;
    const gptq_qlinear *ql; /* quantized: the prepared weights instead of w */
    float *y;
    int64_t in, out;
    int64_t rows;           /* gemm_out_slices: the rows of x */
    int failed;             /* a quantized range ran out of memory */
} gemm_job;

static void gemm_rows(void *arg, int64_t r0, int64_t r1)
{
    gemm_job *jb = arg;
    if (jb->ql) { /* one thread per range (NULL context): the ranges are the parallelism */
        if (gptq_qlinear_forward(NULL, jb->ql, jb->x + r0 * jb->in, r1 - r0,
                                 jb->y + r0 * jb->out) != GPTQ_OK)
            jb->failed = 1;
        return;
    }
    for (int64_t r = r0; r < r1; r += BLAS_MAX_ROWS) {
        const int64_t nr = r1 - r < BLAS_MAX_ROWS ? r1 - r : BLAS_MAX_ROWS;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)jb->out, (int)jb->in,
                    1.0f, jb->x + r * jb->in, (int)jb->in, jb->w, (int)jb->in, 0.0f,
                    jb->y + r * jb->out, (int)jb->out);
    }
}

/* Few rows of a float linear (generation: one row per token; short prompts): the
 * outputs are split instead, in fixed slices of OUT_SLICE rows of W whatever the thread
 * count, each slice one single-threaded SGEMV (one row) or SGEMM. */
#define OUT_SLICE 256

static void gemm_out_slices(void *arg, int64_t s0, int64_t s1)
{
    gemm_job *jb = arg;
    const int64_t o0 = s0 * OUT_SLICE, o1 = s1 * OUT_SLICE < jb->out ? s1 * OUT_SLICE : jb->out;

    if (jb->rows == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)(o1 - o0), (int)jb->in, 1.0f,
                    jb->w + o0 * jb->in, (int)jb->in, jb->x, 1, 0.0f, jb->y + o0, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)jb->rows, (int)(o1 - o0),
                    (int)jb->in, 1.0f, jb->x, (int)jb->in, jb->w + o0 * jb->in, (int)jb->in, 0.0f,
                    jb->y + o0, (int)jb->out);
}

/* y[n, out] = x[n, in] * W[out, in]^T through CBLAS (row-major, B transposed), or
 * through a quantized linear's prepared weights (gptq_qlinear_forward).
 *
 * The rows are split over the context's threads, each calling a single-threaded
 * SGEMM, rather than handing one call to OpenBLAS's own threads: between the GEMMs of a
 * forward pass come attention and element-wise passes on our threads, and OpenBLAS's
 * idle workers spin (sched_yield) for a while after every threaded call, taking cores
 * from them (a fifth of the time of a pass on 2 cores). Every row's dot products are the
 * same whatever the split, so the results do not depend on it. A few rows (generation)
 * of a quantized linear go to its kernel whole, which splits the outputs instead; a few
 * rows of a float linear are split by output slices (gemm_out_slices). */
static int rows_split(gptq_ctx *ctx, gemm_job *jb, int64_t n)
{
    const int32_t threads = ctx_threads(ctx);
    int prev;

    if (jb->in > INT_MAX || jb->out > INT_MAX)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "linear of %lld x %lld exceeds the BLAS's int dimensions",
                         (long long)jb->out, (long long)jb->in);
    /* The kernel splits the outputs; a handle on the GPU takes every row in one call
     * (with this context: a GPU handle refuses a NULL one). */
    if (jb->ql && (threads == 1 || n < 2 * 64 || jb->ql->dev))
        return gptq_qlinear_forward(ctx, jb->ql, jb->x, n, jb->y);
    /* Single-threaded OpenBLAS whatever the split, so that the result does not depend on
     * the thread count either. */
    prev = openblas_get_num_threads();
    openblas_set_num_threads(1);
    if (!jb->ql && n < 2 * 64) {
        jb->rows = n;
        gptq__parallel_for(threads, (jb->out + OUT_SLICE - 1) / OUT_SLICE, 4, gemm_out_slices,
                           jb);
    } else {
        gptq__parallel_for(threads, n, 64, gemm_rows, jb);
    }
    openblas_set_num_threads(prev);
    if (jb->failed)
        return GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY,
                         "out of memory in the quantized matmul of %lld rows", (long long)n);
    return GPTQ_OK;
}

/* Float GEMMs of at least this many multiply-adds go to a backend with
 * offload_forward_gemm (the GPU): below it, staging the operands costs more than the
 * host's own SGEMM (generation's single rows never leave the host). */
#define OFFLOAD_MIN_MACS (1LL << 27)

int gptq__gemm_fp32(gptq_ctx *ctx, const float *x, int64_t n, int64_t in, const float *w,
                    int64_t out, float *y)
{
    /* float32 whatever the context's math mode: TF32 is documented for the quantizer's
     * SYRK and GEMM only, and the CPU's forward never rounds to it. */
    const int32_t math = ctx->opts.math;
    int rc;
    ctx->opts.math = GPTQ_MATH_FP32;
    rc = ctx->backend->gemm(ctx, 0, 1, n, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
    ctx->opts.math = math;
    return rc;
}

static int sgemm_nt(gptq_ctx *ctx, const float *x, int64_t n, int64_t in, const float *w,
                    int64_t out, float *y)
{
    gemm_job jb = {.x = x, .w = w, .y = y, .in = in, .out = out};

    if (ctx && ctx->backend->offload_forward_gemm && n * in * out >= OFFLOAD_MIN_MACS)
        return gptq__gemm_fp32(ctx, x, n, in, w, out, y);
    return rows_split(ctx, &jb, n);
}

/* F.linear adds the bias to the product (addmm). */
void gptq__add_bias(float *y, const float *b, int64_t n, int64_t width)
{
    for (int64_t r = 0; r < n; r++)
        for (int64_t o = 0; o < width; o++)
            y[r * width + o] += b[o];
}

int gptq__linear_apply(gptq_ctx *ctx, const gptq__linear *l, const float *x, int64_t n, float *y)
{
    if (!l || !x || !y || n < 1)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INTERNAL, "linear_apply: bad arguments (n = %lld)",
                         (long long)n);
    if (l->quantized && l->ql) { /* the bias is part of the prepared weights */
        gemm_job jb = {.x = x, .ql = l->ql, .y = y, .in = l->in, .out = l->out};
        return rows_split(ctx, &jb, n);
    }
    if (l->quantized)
        return gptq_dequant_matmul(ctx, &l->packed, x, n, l->bias, y);
    if (!l->w)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INTERNAL, "linear_apply: %lld x %lld weights not loaded",
                         (long long)l->out, (long long)l->in);
    GPTQ_TRY(sgemm_nt(ctx, x, n, l->in, l->w, l->out, y));
    if (l->bias)
        gptq__add_bias(y, l->bias, n, l->out);
    return GPTQ_OK;
}

/* ---- decoder layer ---------------------------------------------------------------- */

static int check_linear(gptq_ctx *ctx, const gptq__layer *L, int32_t which, int64_t out,
                        int64_t in)
{
    const gptq__linear *l = &L->lin[which];
    if (l->out != out || l->in != in)
        return GPTQ_FAIL(ctx, GPTQ_ERR_SHAPE, "%s is %lld x %lld, the config says %lld x %lld",
                         gptq__lin_names[which], (long long)l->out, (long long)l->in,
                         (long long)out, (long long)in);
    if (!l->quantized && !l->w)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INTERNAL, "%s: layer not loaded", gptq__lin_names[which]);
    return GPTQ_OK;
}

static int check_layer(gptq_ctx *ctx, const gptq__model_config *c, const gptq__layer *L)
{
    const int64_t qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;

    if (!L->loaded || !L->input_norm || !L->post_norm)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INTERNAL, "layer_forward: layer not loaded");
    if (c->n_heads < 1 || c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads != 0 ||
        c->head_dim < 2 || c->head_dim % 2 != 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "layer_forward: %lld heads, %lld kv heads, head_dim %lld",
                         (long long)c->n_heads, (long long)c->n_kv_heads,
                         (long long)c->head_dim);
    GPTQ_TRY(check_linear(ctx, L, GPTQ_LIN_Q, qd, c->hidden));
    GPTQ_TRY(check_linear(ctx, L, GPTQ_LIN_K, kvd, c->hidden));
    GPTQ_TRY(check_linear(ctx, L, GPTQ_LIN_V, kvd, c->hidden));
    GPTQ_TRY(check_linear(ctx, L, GPTQ_LIN_O, c->hidden, qd));
    GPTQ_TRY(check_linear(ctx, L, GPTQ_LIN_GATE, c->inter, c->hidden));
    GPTQ_TRY(check_linear(ctx, L, GPTQ_LIN_UP, c->inter, c->hidden));
    return check_linear(ctx, L, GPTQ_LIN_DOWN, c->hidden, c->inter);
}

/* Capture, then tell the caller whether to stop here (1), go on (0) or fail (< 0). */
static int capture_at(gptq__capture_fn capture, void *user, int32_t point, int32_t stop_after,
                      const float *x, int64_t nseq, int64_t seqlen, int64_t width)
{
    if (capture) {
        int rc = capture(user, point, x, nseq, seqlen, width);
        if (rc != GPTQ_OK)
            return rc < 0 ? rc : GPTQ_ERR_INTERNAL;
    }
    return stop_after == point ? 1 : 0;
}

/* The layer body once scratch exists: xn [n, hidden] holds normed states and the
 * outputs of o/down; `big` holds q, k, v and the attention output, later gate and up
 * (the attention buffers are dead by then). */
static int layer_body(gptq_ctx *ctx, const gptq_model *m, const gptq__layer *L, float *h,
                      int64_t nseq, int64_t seqlen, gptq__capture_fn capture, void *user,
                      int32_t stop_after, float *xn, float *big)
{
    const gptq__model_config *c = &m->cfg;
    const int64_t n = nseq * seqlen, hid = c->hidden, inter = c->inter;
    const int64_t qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    float *q = big, *k = q + n * qd, *v = k + n * kvd, *att = v + n * kvd;
    float *gate = big, *up = big + n * inter;
    int rc;

    rms_norm(ctx, h, L->input_norm, n, hid, c->rms_eps, xn);
    if ((rc = capture_at(capture, user, GPTQ_CAP_ATTN_IN, stop_after, xn, nseq, seqlen, hid)))
        return rc < 0 ? rc : GPTQ_OK;
    GPTQ_TRY(gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_Q], xn, n, q));
    GPTQ_TRY(gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_K], xn, n, k));
    GPTQ_TRY(gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_V], xn, n, v));
    GPTQ_TRY(gptq__rope_apply(ctx, c, q, k, nseq, seqlen));
    GPTQ_TRY(gptq__attention(ctx, c, q, k, v, nseq, seqlen, att));
    if ((rc = capture_at(capture, user, GPTQ_CAP_O_IN, stop_after, att, nseq, seqlen, qd)))
        return rc < 0 ? rc : GPTQ_OK;
    GPTQ_TRY(gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_O], att, n, xn));
    add_into(ctx, h, xn, n, hid);

    rms_norm(ctx, h, L->post_norm, n, hid, c->rms_eps, xn);
    if ((rc = capture_at(capture, user, GPTQ_CAP_MLP_IN, stop_after, xn, nseq, seqlen, hid)))
        return rc < 0 ? rc : GPTQ_OK;
    GPTQ_TRY(gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_GATE], xn, n, gate));
    GPTQ_TRY(gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_UP], xn, n, up));
    gptq__silu_mul(ctx, gate, up, n, inter);
    if ((rc = capture_at(capture, user, GPTQ_CAP_DOWN_IN, stop_after, gate, nseq, seqlen,
                         inter)))
        return rc < 0 ? rc : GPTQ_OK;
    GPTQ_TRY(gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_DOWN], gate, n, xn));
    add_into(ctx, h, xn, n, hid);
    return GPTQ_OK;
}

int gptq__layer_forward(gptq_ctx *ctx, const gptq_model *m, const gptq__layer *L, float *h,
                        int64_t nseq, int64_t seqlen, gptq__capture_fn capture, void *user,
                        int32_t stop_after)
{
    const gptq__model_config *c;
    int64_t row_floats, sub;
    size_t rows, bytes;
    float *xn;
    int rc = GPTQ_OK;

    if (!m || !L || !h || nseq < 1 || seqlen < 1 || stop_after < 0 ||
        stop_after > GPTQ_CAP_COUNT)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INTERNAL,
                         "layer_forward: bad arguments (nseq %lld, seqlen %lld, stop_after %d)",
                         (long long)nseq, (long long)seqlen, (int)stop_after);
    c = &m->cfg;
    GPTQ_TRY(check_layer(ctx, c, L));
    /* Per row: the normed states, then the larger of q, k, v and the attention output
     * or gate and up. */
    row_floats = 2 * (c->n_heads + c->n_kv_heads) * c->head_dim;
    row_floats = c->hidden + (row_floats > 2 * c->inter ? row_floats : 2 * c->inter);
    /* Captures see the whole batch at once. Without them, whole sequences go through
     * one bounded scratch in turn: the same result, and the scratch pages are touched
     * (and faulted in) once instead of once per row. */
    sub = nseq;
    if (!capture && stop_after == GPTQ_CAP_COUNT) {
        sub = LAYER_SCRATCH_FLOATS / (row_floats * seqlen);
        sub = sub < 1 ? 1 : sub > nseq ? nseq : sub;
    }
    if (gptq__mul_size(&rows, sub, seqlen) != 0 ||
        gptq__mul3_size(&bytes, (int64_t)rows, row_floats, sizeof(float)) != 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY,
                         "layer_forward: %lld sequences of %lld tokens do not fit in memory",
                         (long long)nseq, (long long)seqlen);
    xn = gptq__scratch(ctx, GPTQ_SCRATCH_LAYER, bytes, "layer_forward activations");
    if (!xn)
        return GPTQ_ERR_OUT_OF_MEMORY;
    for (int64_t s0 = 0; s0 < nseq && rc == GPTQ_OK; s0 += sub) {
        const int64_t ns = nseq - s0 < sub ? nseq - s0 : sub;
        rc = layer_body(ctx, m, L, h + s0 * seqlen * c->hidden, ns, seqlen, capture, user,
                        stop_after, xn, xn + ns * seqlen * c->hidden);
    }
    return rc;
}

/* ---- one sequence step by step, with a KV cache (generation) ----------------------- */

int gptq__layer_decode(gptq_ctx *ctx, const gptq_model *m, const gptq__layer *L, float *h,
                       int64_t n, int64_t pos0, float *kc, float *vc)
{
    const gptq__model_config *c;
    int64_t hid, inter, qd, kvd;
    float *xn, *q, *att, *gate, *up;
    size_t floats;
    int rc;

    if (!m || !L || !h || !kc || !vc || n < 1 || pos0 < 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INTERNAL, "layer_decode: bad arguments");
    c = &m->cfg;
    GPTQ_TRY(check_layer(ctx, c, L));
    hid = c->hidden;
    inter = c->inter;
    qd = c->n_heads * c->head_dim;
    kvd = c->n_kv_heads * c->head_dim;
    /* xn [n, hid], then q and the attention output [n, qd] each, or gate and up. */
    floats = (size_t)(n * (hid + (2 * qd > 2 * inter ? 2 * qd : 2 * inter)));
    xn = gptq__scratch(ctx, GPTQ_SCRATCH_LAYER, floats * sizeof(float), "decode activations");
    if (!xn)
        return GPTQ_ERR_OUT_OF_MEMORY;
    q = xn + n * hid;
    att = q + n * qd;
    gate = q;
    up = gate + n * inter;

    rms_norm(ctx, h, L->input_norm, n, hid, c->rms_eps, xn);
    rc = gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_Q], xn, n, q);
    if (rc == GPTQ_OK) /* k and v straight into their cache rows */
        rc = gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_K], xn, n, kc + pos0 * kvd);
    if (rc == GPTQ_OK)
        rc = gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_V], xn, n, vc + pos0 * kvd);
    if (rc == GPTQ_OK)
        rc = gptq__rope_apply_at(ctx, c, q, kc + pos0 * kvd, n, pos0);
    if (rc == GPTQ_OK)
        rc = gptq__attention_cached(ctx, c, q, kc, vc, n, pos0, att);
    if (rc == GPTQ_OK)
        rc = gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_O], att, n, xn);
    if (rc == GPTQ_OK) {
        add_into(ctx, h, xn, n, hid);
        rms_norm(ctx, h, L->post_norm, n, hid, c->rms_eps, xn);
        rc = gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_GATE], xn, n, gate);
    }
    if (rc == GPTQ_OK)
        rc = gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_UP], xn, n, up);
    if (rc == GPTQ_OK) {
        gptq__silu_mul(ctx, gate, up, n, inter);
        rc = gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_DOWN], gate, n, xn);
    }
    if (rc == GPTQ_OK)
        add_into(ctx, h, xn, n, hid);
    return rc;
}

/* ---- the layer in stages, for the GPTQ pipeline ------------------------------------ */

int gptq__layer_stage(gptq_ctx *ctx, const gptq_model *m, const gptq__layer *L, int32_t stage,
                      float *h, float *stash, int64_t nseq, int64_t seqlen,
                      gptq__capture_fn capture, void *user)
{
    const gptq__model_config *c = &m->cfg;
    const int64_t n = nseq * seqlen, hid = c->hidden, inter = c->inter;
    const int64_t qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    int64_t width = hid;
    size_t floats;
    float *xn, *extra = NULL;
    int rc = GPTQ_OK;

    if (stage < 0 || stage > 4 || !h || !stash || nseq < 1 || seqlen < 1)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INTERNAL, "layer_stage: bad arguments (stage %d)",
                         (int)stage);
    GPTQ_TRY(check_layer(ctx, c, L));
    if (stage == 1)
        width = hid + qd + 2 * kvd;
    else if (stage == 3)
        width = hid + inter;
    if (gptq__mul3_size(&floats, n, width, 1) != 0 || floats > SIZE_MAX / sizeof(float))
        return GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY, "layer_stage: batch too large");
    xn = gptq__scratch(ctx, GPTQ_SCRATCH_LAYER, floats * sizeof(float),
                       "layer_stage activations");
    if (!xn)
        return GPTQ_ERR_OUT_OF_MEMORY;
    extra = xn + n * hid;
    switch (stage) {
    case 0: /* -> the input of q, k, v */
        rms_norm(ctx, h, L->input_norm, n, hid, c->rms_eps, xn);
        rc = capture ? capture(user, GPTQ_CAP_ATTN_IN, xn, nseq, seqlen, hid) : GPTQ_OK;
        break;
    case 1: { /* -> the attention output, kept in stash [n, qd] */
        float *q = extra, *k = q + n * qd, *v = k + n * kvd;
        rms_norm(ctx, h, L->input_norm, n, hid, c->rms_eps, xn);
        rc = gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_Q], xn, n, q);
        if (rc == GPTQ_OK)
            rc = gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_K], xn, n, k);
        if (rc == GPTQ_OK)
            rc = gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_V], xn, n, v);
        if (rc == GPTQ_OK)
            rc = gptq__rope_apply(ctx, c, q, k, nseq, seqlen);
        if (rc == GPTQ_OK)
            rc = gptq__attention(ctx, c, q, k, v, nseq, seqlen, stash);
        if (rc == GPTQ_OK && capture)
            rc = capture(user, GPTQ_CAP_O_IN, stash, nseq, seqlen, qd);
        break;
    }
    case 2: /* residual += o(attention); -> the input of gate, up */
        rc = gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_O], stash, n, xn);
        if (rc == GPTQ_OK) {
            add_into(ctx, h, xn, n, hid);
            rms_norm(ctx, h, L->post_norm, n, hid, c->rms_eps, xn);
            rc = capture ? capture(user, GPTQ_CAP_MLP_IN, xn, nseq, seqlen, hid) : GPTQ_OK;
        }
        break;
    case 3: { /* -> silu(gate) * up, kept in stash [n, inter] */
        rms_norm(ctx, h, L->post_norm, n, hid, c->rms_eps, xn);
        rc = gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_GATE], xn, n, stash);
        if (rc == GPTQ_OK)
            rc = gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_UP], xn, n, extra);
        if (rc == GPTQ_OK) {
            gptq__silu_mul(ctx, stash, extra, n, inter);
            rc = capture ? capture(user, GPTQ_CAP_DOWN_IN, stash, nseq, seqlen, inter) : GPTQ_OK;
        }
        break;
    }
    default: /* residual += down(stash): the layer's output */
        rc = gptq__linear_apply(ctx, &L->lin[GPTQ_LIN_DOWN], stash, n, xn);
        if (rc == GPTQ_OK)
            add_into(ctx, h, xn, n, hid);
        break;
    }
    if (rc > 0)
        rc = GPTQ_ERR_INTERNAL;
    return rc;
}

/* ---- embedding and head ----------------------------------------------------------- */

int gptq__embed(gptq_ctx *ctx, const gptq_model *m, const int32_t *ids, int64_t n, float *h)
{
    const int64_t d = m->cfg.hidden;

    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab)
            return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                             "token id %d at position %lld is outside the vocabulary (%lld)",
                             (int)ids[i], (long long)i, (long long)m->cfg.vocab);
        memcpy(h + i * d, m->embed + (int64_t)ids[i] * d, (size_t)d * sizeof(float));
    }
    return GPTQ_OK;
}

/* The output projection: lm_head, or the embedding when the two are tied. */
static const float *head_weights(const gptq_model *m)
{
    return m->lm_head ? m->lm_head : m->embed;
}

int gptq__head_logits(gptq_ctx *ctx, gptq_model *m, float *h, int64_t n, float *logits)
{
    if (!m || !h || !logits || n < 1 || !m->norm)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INTERNAL, "head_logits: bad arguments");
    GPTQ_TRY(gptq__head_load(ctx, m));
    /* LlamaModel.forward ends with self.norm; LlamaForCausalLM then applies lm_head. */
    rms_norm(ctx, h, m->norm, n, m->cfg.hidden, m->cfg.rms_eps, h);
    return sgemm_nt(ctx, h, n, m->cfg.hidden, head_weights(m), m->cfg.vocab, logits);
}

typedef struct nll_job {
    const float *logits;    /* [rows, vocab] of this chunk */
    const int32_t *ids;     /* all ids of the call */
    int64_t row0, seqlen, vocab;
    double *nll;            /* [rows]: NLL of the next token, 0 for last positions */
} nll_job;

/* CrossEntropyLoss of logits[t] against ids[t + 1]: log-softmax with the maximum
 * subtracted (torch's log_softmax), exp in float32 as torch does, the sum of exps and
 * the log in double. */
static void nll_rows(void *arg, int64_t r0, int64_t r1)
{
    const nll_job *jb = arg;

    for (int64_t r = r0; r < r1; r++) {
        const int64_t g = jb->row0 + r;
        const float *l = jb->logits + r * jb->vocab;
        float mx = l[0];
        double sum = 0.0;
        if (g % jb->seqlen == jb->seqlen - 1) {
            jb->nll[r] = 0.0;
            continue;
        }
        for (int64_t j = 1; j < jb->vocab; j++)
            mx = l[j] > mx ? l[j] : mx;
        for (int64_t j = 0; j < jb->vocab; j++)
            sum += (double)expf(l[j] - mx);
        jb->nll[r] = log(sum) - (double)(l[jb->ids[g + 1]] - mx);
    }
}

void gptq__nll_sum(const gptq_ctx *ctx, const float *logits, const int32_t *ids, int64_t row0,
                   int64_t nr, int64_t seqlen, int64_t vocab, double *scratch, double *nll_sum)
{
    nll_job jb = {.logits = logits, .ids = ids, .row0 = row0, .seqlen = seqlen, .vocab = vocab,
                  .nll = scratch};
    gptq__parallel_for(ctx_threads(ctx), nr, min_rows(vocab), nll_rows, &jb);
    /* Summed in row order: the total does not depend on the thread count. */
    for (int64_t r = 0; r < nr; r++)
        *nll_sum += scratch[r];
}

int gptq__head_chunk_rows(int64_t vocab)
{
    const int64_t chunk = HEAD_CHUNK_FLOATS / vocab;
    return (int)(chunk < 1 ? 1 : chunk > INT_MAX ? INT_MAX : chunk);
}

const float *gptq__head_weights(const gptq_model *m) { return head_weights(m); }

int gptq__head_nll(gptq_ctx *ctx, gptq_model *m, float *h, const int32_t *ids,
                   int64_t nseq, int64_t seqlen, double *nll_sum, int64_t *count)
{
    const int64_t vocab = m->cfg.vocab, hid = m->cfg.hidden;
    int64_t n, chunk;
    size_t rows;
    float *logits;
    double *nll;
    int rc = GPTQ_OK;

    if (!h || !ids || !nll_sum || !count || nseq < 1 || seqlen < 1 || !m->norm ||
        gptq__mul_size(&rows, nseq, seqlen) != 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INTERNAL, "head_nll: bad arguments");
    GPTQ_TRY(gptq__head_load(ctx, m));
    n = nseq * seqlen;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                             "token id %d at position %lld is outside the vocabulary (%lld)",
                             (int)ids[i], (long long)i, (long long)vocab);
    chunk = gptq__head_chunk_rows(vocab);
    chunk = chunk > n ? n : chunk;
    logits = gptq__scratch(ctx, GPTQ_SCRATCH_HEAD, (size_t)(chunk * vocab) * sizeof(float),
                           "head_nll logits");
    nll = gptq__alloc(ctx, (size_t)chunk * sizeof(double), "head_nll row losses");
    if (!logits || !nll) {
        gptq__free(nll);
        return GPTQ_ERR_OUT_OF_MEMORY;
    }
    rms_norm(ctx, h, m->norm, n, hid, m->cfg.rms_eps, h);
    for (int64_t r0 = 0; r0 < n && rc == GPTQ_OK; r0 += chunk) {
        const int64_t nr = n - r0 < chunk ? n - r0 : chunk;
        rc = sgemm_nt(ctx, h + r0 * hid, nr, hid, head_weights(m), vocab, logits);
        if (rc == GPTQ_OK)
            gptq__nll_sum(ctx, logits, ids, r0, nr, seqlen, vocab, nll, nll_sum);
    }
    if (rc == GPTQ_OK)
        *count += nseq * (seqlen - 1);
    gptq__free(nll);
    return rc;
}
