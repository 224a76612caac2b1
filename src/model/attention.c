/*
 * Rotary position embeddings and causal grouped-query attention, float32, as Hugging
 * Face transformers computes them (modeling_llama.py, modeling_rope_utils.py):
 *
 *     inv_freq[j] = 1 / theta^(2j / head_dim)           _compute_default_rope_parameters
 *     llama3: wavelength-based smoothing of inv_freq    _compute_llama3_parameters
 *     linear: positions / factor                        LlamaLinearScalingRotaryEmbedding
 *     angle = position * inv_freq[j] (float32), cos/sin of it, the same for j and
 *     j + head_dim/2 (emb = cat(freqs, freqs))          LlamaRotaryEmbedding.forward
 *     x' = x * cos + rotate_half(x) * sin               apply_rotary_pos_emb
 *     p = softmax(q k^T / sqrt(head_dim) + mask), o = p v   LlamaAttention.forward (eager)
 *
 * The softmax's exp is core/simd.h's 16-lane one (within ~1 ulp, as torch's own
 * vectorised exp), the rest float32 in the order written.
 *
 * Query head h reads key/value head h / (n_heads / n_kv_heads) (repeat_kv). Attention
 * runs per (sequence, head) on the context's threads; each task only touches keys
 * j <= i for query i, so padding rows appended after a sequence never change it.
 */
#include <math.h>
#include <string.h>

#include "core/simd.h"
#include "model.h"

static int32_t ctx_threads(const gptq_ctx *ctx)
{
    return ctx && ctx->threads > 0 ? ctx->threads : 1;
}

/* ---- RoPE ------------------------------------------------------------------------- */

/* inv_freq in float32 exactly as HF builds it: 1.0 / (base ** (arange(0, dim, 2)
 * .float() / dim)) - an int64 arange made float32, divided by dim in float32, the
 * float32 power of the base, a float32 reciprocal - then, for rope_type llama3, the
 * float32 tensor arithmetic of _compute_llama3_parameters (its Python scalars meet
 * float32 tensors, so they are rounded to float32 first). */
static void rope_inv_freq(const gptq__model_config *c, float *inv)
{
    const int64_t d = c->head_dim, half = d / 2;

    for (int64_t j = 0; j < half; j++)
        inv[j] = 1.0f / powf((float)c->rope_theta, (float)(2 * j) / (float)d);
    if (c->rope_type != GPTQ_ROPE_LLAMA3)
        return;

    const double old_len = (double)c->rope_original_max_pos;
    const float factor = (float)c->rope_factor;
    const float low = (float)c->rope_low_freq_factor;
    const float span = (float)(c->rope_high_freq_factor - c->rope_low_freq_factor);
    const float low_wavelen = (float)(old_len / c->rope_low_freq_factor);
    const float high_wavelen = (float)(old_len / c->rope_high_freq_factor);
    const float two_pi = (float)6.283185307179586;

    for (int64_t j = 0; j < half; j++) {
        const float wavelen = two_pi / inv[j];
        /* Long wavelengths are divided by factor, short ones kept. */
        float f = wavelen > low_wavelen ? inv[j] / factor : inv[j];
        /* Medium ones interpolate between the two with a smooth factor. */
        if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
            const float s = ((float)old_len / wavelen - low) / span;
            f = (1.0f - s) * f / factor + s * f;
        }
        inv[j] = f;
    }
}

typedef struct rope_job {
    float *x;          /* [n, heads * head_dim] */
    int64_t heads, head_dim, seqlen;
    const float *cos;  /* [seqlen, head_dim / 2] */
    const float *sin;
} rope_job;

/* q * cos + rotate_half(q) * sin with rotate_half(x) = cat(-x2, x1): pair j of a
 * head is (x[j], x[j + half]). */
static void rope_rows(void *arg, int64_t r0, int64_t r1)
{
    const rope_job *jb = arg;
    const int64_t d = jb->head_dim, half = d / 2;

    for (int64_t r = r0; r < r1; r++) {
        const float *cs = jb->cos + (r % jb->seqlen) * half;
        const float *sn = jb->sin + (r % jb->seqlen) * half;
        for (int64_t hd = 0; hd < jb->heads; hd++) {
            float *x = jb->x + (r * jb->heads + hd) * d;
            for (int64_t j = 0; j < half; j++) {
                const float a = x[j], b = x[j + half];
                x[j] = a * cs[j] + (-b) * sn[j];
                x[j + half] = b * cs[j] + a * sn[j];
            }
        }
    }
}

int gptq__rope_tables(gptq_ctx *ctx, const gptq__model_config *c, int64_t seqlen, int64_t pos0,
                      float *cs, float *sn)
{
    const int64_t half = c->head_dim / 2;
    float *inv = gptq__alloc(ctx, (size_t)half * sizeof(float), "RoPE frequencies");

    if (!inv)
        return GPTQ_ERR_OUT_OF_MEMORY;
    rope_inv_freq(c, inv);
    for (int64_t p = 0; p < seqlen; p++) {
        /* position_ids.float() (/ factor for linear scaling), times inv_freq in float32;
         * cos and sin of that float32 angle, rounded once. */
        float pos = (float)(pos0 + p);
        if (c->rope_type == GPTQ_ROPE_LINEAR)
            pos = pos / (float)c->rope_factor;
        for (int64_t j = 0; j < half; j++) {
            const float angle = pos * inv[j];
            cs[p * half + j] = (float)cos((double)angle);
            sn[p * half + j] = (float)sin((double)angle);
        }
    }
    gptq__free(inv);
    return GPTQ_OK;
}

void gptq__rope_rows(gptq_ctx *ctx, float *x, const float *cs, const float *sn, int64_t n,
                     int64_t seqlen, int64_t heads, int64_t head_dim)
{
    rope_job jb = {.x = x, .heads = heads, .head_dim = head_dim, .seqlen = seqlen, .cos = cs,
                   .sin = sn};
    gptq__parallel_for(ctx_threads(ctx), n, 256, rope_rows, &jb);
}

/* Positions pos0 .. pos0 + seqlen - 1 for each of nseq sequences. */
static int rope_at(gptq_ctx *ctx, const gptq__model_config *c, float *q, float *k,
                   int64_t nseq, int64_t seqlen, int64_t pos0)
{
    const int64_t half = c->head_dim / 2, n = nseq * seqlen;
    float *cs = gptq__alloc(ctx, (size_t)(half * 2 * seqlen) * sizeof(float), "RoPE tables");
    float *sn = cs + half * seqlen;
    int rc;

    if (!cs)
        return GPTQ_ERR_OUT_OF_MEMORY;
    rc = gptq__rope_tables(ctx, c, seqlen, pos0, cs, sn);
    if (rc == GPTQ_OK) {
        gptq__rope_rows(ctx, q, cs, sn, n, seqlen, c->n_heads, c->head_dim);
        gptq__rope_rows(ctx, k, cs, sn, n, seqlen, c->n_kv_heads, c->head_dim);
    }
    gptq__free(cs);
    return rc;
}

int gptq__rope_apply(gptq_ctx *ctx, const gptq__model_config *c, float *q, float *k,
                     int64_t nseq, int64_t seqlen)
{
    return rope_at(ctx, c, q, k, nseq, seqlen, 0);
}

int gptq__rope_apply_at(gptq_ctx *ctx, const gptq__model_config *c, float *q, float *k,
                        int64_t n, int64_t pos0)
{
    return rope_at(ctx, c, q, k, 1, n, pos0);
}

/* ---- attention -------------------------------------------------------------------- */

/* Queries per block and keys/channels per vector in the attention kernels: a block's
 * accumulators (4 x 16 floats) stay in registers (4 zmm with AVX-512, 8 ymm with AVX2). */
#define QB 4
#define VW GPTQ_VW

typedef struct attn_job {
    const float *q, *k, *v;  /* [n, n_heads * d], [n, n_kv * d], [n, n_kv * d] */
    float *out;              /* [n, n_heads * d] */
    int64_t seqlen, heads, kv_heads, d;
    int64_t tp, dp;          /* seqlen and d rounded up to a multiple of VW */
    int64_t ntasks, parts;   /* tasks (sequence, head) split into `parts` ranges */
    float *scratch;          /* per part: K^T [d, tp], V [seqlen, dp], scores [QB, tp] */
    float sqrt_d;
} attn_job;

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* VW floats as one vector (core/simd.h). Plain float arrays get vectorised across the
 * summation axis instead, with shuffles several times slower. */
typedef gptq_vecw vecw;
#define LOADW(v, p) GPTQ_LOADW(v, p)

/* The softmax's numerators: row[j] = exp(row[j] - mx) for j <= last, and their sum in
 * double, in order. Whole vectors: row must hold round_up(last + 1, VW) floats, and the
 * lanes past `last` get values the caller ignores or overwrites. */
static inline double exp_shifted(float *row, int64_t last, float mx)
{
    double sum = 0.0;
    for (int64_t j = 0; j <= last; j += VW) {
        vecw x;
        LOADW(x, row + j);
        x = x - mx;
        memcpy(row + j, &x, sizeof x);
        gptq__exp16(row + j, row + j);
    }
    for (int64_t j = 0; j <= last; j++)
        sum += (double)row[j];
    return sum;
}

/* Scores of queries q[b] (b < QB) against keys [0, jn): s[b][j] = sum_c q[b][c] K[j][c],
 * summed over c in order, VW keys at a time. */
GPTQ_MULTIVERSION
static void scores_block(const float *const q[QB], const float *kt, int64_t tp, int64_t d,
                         int64_t jn, float *s)
{
    for (int64_t j0 = 0; j0 < jn; j0 += VW) {
        vecw acc[QB] = {{0.0f}};
        for (int64_t c = 0; c < d; c++) {
            vecw k;
            LOADW(k, kt + c * tp + j0);
            for (int b = 0; b < QB; b++)
                acc[b] += q[b][c] * k;
        }
        for (int b = 0; b < QB; b++)
            memcpy(s + b * tp + j0, &acc[b], sizeof acc[b]);
    }
}

/* o[b][c] = sum_j p[b][j] V[j][c] for j < jn, summed over j in order, VW channels at a
 * time; V has dp (padded) channels per row. */
GPTQ_MULTIVERSION
static void values_block(const float *p, int64_t tp, const float *vp, int64_t dp, int64_t jn,
                         float *o, int64_t ow, int64_t d, int nb)
{
    for (int64_t c0 = 0; c0 < dp; c0 += VW) {
        vecw acc[QB] = {{0.0f}};
        float tmp[VW];
        for (int64_t j = 0; j < jn; j++) {
            vecw v;
            LOADW(v, vp + j * dp + c0);
            for (int b = 0; b < QB; b++)
                acc[b] += p[b * tp + j] * v;
        }
        for (int b = 0; b < nb; b++) {
            memcpy(tmp, &acc[b], sizeof acc[b]);
            for (int l = 0; l < VW && c0 + l < d; l++)
                o[b * ow + c0 + l] = tmp[l];
        }
    }
}

/* One (sequence, head), QB queries at a time. K is transposed and V copied into padded
 * scratch so that both products run over contiguous, vector-aligned axes. (Multiversioned
 * for its scaling and normalising loops, which the compiler vectorises.) */
GPTQ_MULTIVERSION
static void attend(const attn_job *jb, int64_t task, float *kt)
{
    const int64_t T = jb->seqlen, d = jb->d, tp = jb->tp, dp = jb->dp;
    const int64_t s = task / jb->heads, hd = task % jb->heads;
    const int64_t kvh = hd / (jb->heads / jb->kv_heads);
    const int64_t qw = jb->heads * d, kw = jb->kv_heads * d;
    const float *Q = jb->q + s * T * qw + hd * d;
    const float *K = jb->k + s * T * kw + kvh * d;
    const float *V = jb->v + s * T * kw + kvh * d;
    float *O = jb->out + s * T * qw + hd * d;
    float *vp = kt + d * tp, *sc = vp + T * dp;

    memset(kt, 0, (size_t)(d * tp) * sizeof(float));
    memset(vp, 0, (size_t)(T * dp) * sizeof(float));
    for (int64_t j = 0; j < T; j++)
        for (int64_t c = 0; c < d; c++) {
            kt[c * tp + j] = K[j * kw + c];
            vp[j * dp + c] = V[j * kw + c];
        }

    for (int64_t i0 = 0; i0 < T; i0 += QB) {
        const int nb = T - i0 < QB ? (int)(T - i0) : QB;
        const int64_t jn = i0 + nb; /* keys 0..i0+nb-1 */
        const float *qrows[QB];
        /* A short last block repeats its last query in the unused lanes. */
        for (int b = 0; b < QB; b++)
            qrows[b] = Q + (i0 + (b < nb ? b : nb - 1)) * qw;
        scores_block(qrows, kt, tp, d, jn, sc);
        for (int b = 0; b < QB; b++) {
            float *row = sc + b * tp;
            const int64_t last = i0 + (b < nb ? b : nb - 1);
            float mx = -INFINITY, inv_sum;
            double sum;
            /* matmul(q, k^T) / math.sqrt(head_dim) plus the causal mask, then softmax in
             * float32 with the maximum subtracted: masked keys (j > i) weigh exp(-inf) = 0. */
            for (int64_t j = 0; j <= last; j += VW) { /* whole vectors: row has tp */
                vecw x;
                LOADW(x, row + j);
                x = x / jb->sqrt_d;
                memcpy(row + j, &x, sizeof x);
            }
            for (int64_t j = 0; j <= last; j++)
                mx = row[j] > mx ? row[j] : mx;
            sum = exp_shifted(row, last, mx); /* lanes past `last` are zeroed below */
            inv_sum = (float)(1.0 / sum);
            for (int64_t j = 0; j <= last; j++)
                row[j] = row[j] * inv_sum;
            for (int64_t j = last + 1; j < round_up(jn, VW); j++)
                row[j] = 0.0f;
        }
        values_block(sc, tp, vp, dp, jn, O + i0 * qw, qw, d, nb);
    }
}

static void attn_parts(void *arg, int64_t p0, int64_t p1)
{
    const attn_job *jb = arg;
    const int64_t per = jb->d * jb->tp + jb->seqlen * jb->dp + QB * jb->tp;

    for (int64_t p = p0; p < p1; p++) {
        const int64_t t0 = p * jb->ntasks / jb->parts, t1 = (p + 1) * jb->ntasks / jb->parts;
        for (int64_t t = t0; t < t1; t++)
            attend(jb, t, jb->scratch + p * per);
    }
}

int gptq__attention(gptq_ctx *ctx, const gptq__model_config *c, const float *q, const float *k,
                    const float *v, int64_t nseq, int64_t seqlen, float *out)
{
    attn_job jb;
    size_t bytes;

    jb.q = q;
    jb.k = k;
    jb.v = v;
    jb.out = out;
    jb.seqlen = seqlen;
    jb.heads = c->n_heads;
    jb.kv_heads = c->n_kv_heads;
    jb.d = c->head_dim;
    jb.tp = round_up(seqlen, VW);
    jb.dp = round_up(c->head_dim, VW);
    jb.ntasks = nseq * c->n_heads;
    jb.parts = ctx_threads(ctx) < jb.ntasks ? ctx_threads(ctx) : jb.ntasks;
    /* math.sqrt(head_dim) meets a float32 tensor: it is rounded to float32. */
    jb.sqrt_d = (float)sqrt((double)c->head_dim);
    if (gptq__mul3_size(&bytes, jb.parts, (jb.d + QB) * jb.tp + seqlen * jb.dp,
                        sizeof(float)) != 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY, "attention over %lld tokens is too large",
                         (long long)seqlen);
    jb.scratch = gptq__alloc(ctx, bytes, "attention scratch");
    if (!jb.scratch)
        return GPTQ_ERR_OUT_OF_MEMORY;
    gptq__parallel_for((int32_t)jb.parts, jb.parts, 1, attn_parts, &jb);
    gptq__free(jb.scratch);
    return GPTQ_OK;
}

/* ---- attention over a KV cache (generation) ---------------------------------------- */

typedef struct cached_job {
    const float *q;          /* [n, heads * d] */
    const float *kc, *vc;    /* [pos0 + n, kv_heads * d] */
    float *out;              /* [n, heads * d] */
    int64_t n, pos0, heads, kv_heads, d;
    float sqrt_d;
    float *scores;           /* per head: [pos0 + n] */
} cached_job;

/* Heads [h0, h1) for every new query: the same arithmetic as attend() (scores summed
 * over channels in order, / sqrt(d), max-subtracted softmax with the sum in double,
 * then p v summed over keys in order), so a cached step gives the values a full pass
 * gives, up to the BLAS's rounding of the linears around it. */
static void cached_heads(void *arg, int64_t h0, int64_t h1)
{
    const cached_job *jb = arg;
    const int64_t d = jb->d, qw = jb->heads * d, kw = jb->kv_heads * d;

    for (int64_t hd = h0; hd < h1; hd++) {
        const int64_t kvh = hd / (jb->heads / jb->kv_heads);
        float *s = jb->scores + hd * round_up(jb->pos0 + jb->n, VW);
        for (int64_t i = 0; i < jb->n; i++) {
            const float *q = jb->q + i * qw + hd * d;
            const int64_t last = jb->pos0 + i;
            float mx = -INFINITY, inv_sum;
            double sum;
            float *o = jb->out + i * qw + hd * d;
            for (int64_t j = 0; j <= last; j++) {
                const float *kr = jb->kc + j * kw + kvh * d;
                float acc = 0.0f;
                for (int64_t c = 0; c < d; c++)
                    acc += q[c] * kr[c];
                s[j] = acc / jb->sqrt_d;
                mx = s[j] > mx ? s[j] : mx;
            }
            sum = exp_shifted(s, last, mx); /* s is padded to whole vectors */
            inv_sum = (float)(1.0 / sum);
            for (int64_t c = 0; c < d; c++)
                o[c] = 0.0f;
            for (int64_t j = 0; j <= last; j++) {
                const float p = s[j] * inv_sum;
                const float *vr = jb->vc + j * kw + kvh * d;
                for (int64_t c = 0; c < d; c++)
                    o[c] += p * vr[c];
            }
        }
    }
}

int gptq__attention_cached(gptq_ctx *ctx, const gptq__model_config *c, const float *q,
                           const float *kc, const float *vc, int64_t n, int64_t pos0,
                           float *out)
{
    cached_job jb = {.q = q, .kc = kc, .vc = vc, .out = out, .n = n, .pos0 = pos0,
                     .heads = c->n_heads, .kv_heads = c->n_kv_heads, .d = c->head_dim,
                     .sqrt_d = (float)sqrt((double)c->head_dim)};
    size_t bytes;

    if (gptq__mul3_size(&bytes, c->n_heads, round_up(pos0 + n, VW), sizeof(float)) != 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY, "attention over %lld tokens is too large",
                         (long long)(pos0 + n));
    jb.scores = gptq__calloc(ctx, bytes, "attention scores"); /* padding lanes: 0 */
    if (!jb.scores)
        return GPTQ_ERR_OUT_OF_MEMORY;
    /* Heads per thread: enough keys x queries to be worth a thread. */
    gptq__parallel_for(ctx_threads(ctx), c->n_heads,
                       (pos0 + n) * n * c->head_dim >= 65536 ? 1 : c->n_heads,
                       cached_heads, &jb);
    gptq__free(jb.scores);
    return GPTQ_OK;
}
