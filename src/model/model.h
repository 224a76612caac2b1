/*
 * Internal model representation shared by the files of src/model.
 *
 *   config.c    config.json -> gptq__model_config (+ quantization_config)
 *   weights.c   the directory's safetensors files (single or sharded), tensor lookup,
 *               F32/F16/BF16 -> float32, GPTQ tensors -> gptq_packed
 *   model.c     gptq_model_open/free, getters, loading/unloading one decoder layer
 *   tokens.c    gptq_tokens (bytes, JSON ids, safetensors ids)
 *   forward.c   the Llama-family forward pass (embedding, RMSNorm, RoPE, causal GQA
 *               attention, SwiGLU, final norm, lm_head, NLL) over batches of sequences
 *   forward_dev.c  the pipeline's layer stages on a backend's buffers (device_forward)
 *   attention.c RoPE tables (default, linear, llama3) and causal GQA attention for it
 *   eval.c      gptq_model_eval
 *   pyrandom.c  CPython's random (MT19937, randint) for the references' window sampling
 *   quantize_model.c  gptq_model_quantize: the sequential pipeline
 *   save.c      gptq_model_save, gptq_model_save_dequantized
 *   save_config.c  their JSON files, tokenizer copies and output-directory protocol
 */
#ifndef GPTQ_MODEL_INTERNAL_H
#define GPTQ_MODEL_INTERNAL_H

#include "gptq/model.h"
#include "gptq/safetensors.h"
#include "internal.h"

#define GPTQ_ARCH_LLAMA 1
#define GPTQ_ARCH_MISTRAL 2
#define GPTQ_ARCH_QWEN2 3

#define GPTQ_ROPE_NONE 0
#define GPTQ_ROPE_LINEAR 1
#define GPTQ_ROPE_LLAMA3 2

typedef struct gptq__model_config {
    int32_t arch;               /* GPTQ_ARCH_* */
    char arch_name[64];         /* "LlamaForCausalLM" ... */
    int64_t vocab, hidden, inter, n_layers, n_heads, n_kv_heads, head_dim, max_pos;
    double rms_eps, rope_theta;
    int32_t rope_type;          /* GPTQ_ROPE_* */
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int64_t rope_original_max_pos;
    int32_t tie_embeddings;
    int32_t qkv_bias;           /* Qwen2: q/k/v have biases */
    int32_t o_bias, mlp_bias;   /* attention_bias (Llama: all four), mlp_bias */
    /* A GPTQ checkpoint (config.json quantization_config or quantize_config.json). */
    int32_t quantized;
    int32_t q_bits, q_group_size, q_desc_act, q_sym, q_format; /* q_format GPTQ_FORMAT_* */
    char *config_text;          /* config.json as read, to re-emit with changes (owned) */
} gptq__model_config;

/* Parse config.json (and quantize_config.json if present) in `dir`. */
int gptq__config_load(gptq_ctx *ctx, const char *dir, gptq__model_config *cfg);
void gptq__config_free(gptq__model_config *cfg);

/* ---- weights ---- */

typedef struct gptq__weights gptq__weights;

int gptq__weights_open(gptq_ctx *ctx, const char *dir, gptq__weights **out);
void gptq__weights_free(gptq__weights *w);
/* 1 if the tensor exists (fills info when not NULL). */
int gptq__weights_has(const gptq__weights *w, const char *name, gptq_tensor_info *info);
/* Copy a tensor as float32 (F32, F16, BF16), checking its shape (ndim entries). The
 * message names the file and tensor. Errors: NOT_FOUND, SHAPE, NOT_SUPPORTED. */
int gptq__weights_read_f32(gptq_ctx *ctx, const gptq__weights *w, const char *name,
                           int32_t ndim, const int64_t *shape, float *dst);
/* Copy a raw tensor of the given dtype and shape (I32 qweight/qzeros/g_idx, F16 scales). */
int gptq__weights_read_raw(gptq_ctx *ctx, const gptq__weights *w, const char *name,
                           int32_t dtype, int32_t ndim, const int64_t *shape, void *dst);
/* Names of tensors that are not in `names_seen` are not errors; for error messages:
 * the file holding a tensor. */
const char *gptq__weights_file_of(const gptq__weights *w, const char *name);
/* Every tensor name, for the writer (count, i-th name). */
int64_t gptq__weights_count(const gptq__weights *w);
const char *gptq__weights_name(const gptq__weights *w, int64_t i);

/* ---- decoder layers ---- */

enum {
    GPTQ_LIN_Q = 0,
    GPTQ_LIN_K,
    GPTQ_LIN_V,
    GPTQ_LIN_O,
    GPTQ_LIN_GATE,
    GPTQ_LIN_UP,
    GPTQ_LIN_DOWN,
    GPTQ_LIN_COUNT
};

/* "self_attn.q_proj" ... in GPTQ_LIN_* order. */
extern const char *const gptq__lin_names[GPTQ_LIN_COUNT];

typedef struct gptq__linear {
    int64_t out, in;
    float *w;             /* [out, in] float32 (owned); NULL when quantized or unloaded */
    float *bias;          /* [out] float32 (owned) or NULL */
    int32_t quantized;    /* 1: `packed` holds the weights */
    gptq_packed packed;   /* owned buffers when quantized */
    int32_t group_size;   /* of the packed weights */
    gptq_qlinear *ql;     /* packed + bias prepared for the fast kernels (owned), made by
                           * gptq__layer_load; NULL: gptq_dequant_matmul */
} gptq__linear;

typedef struct gptq__layer {
    gptq__linear lin[GPTQ_LIN_COUNT];
    float *input_norm;    /* [hidden] */
    float *post_norm;     /* [hidden] */
    int32_t loaded;       /* float weights / packed tensors resident */
} gptq__layer;

struct gptq_model {
    gptq__model_config cfg;
    char *dir;
    gptq__weights *src;   /* the directory's tensors (memory-mapped) */
    float *embed;         /* [vocab, hidden] */
    float *norm;          /* [hidden] */
    float *lm_head;       /* [vocab, hidden]; NULL when tied (use embed) */
    gptq__layer *layers;  /* [n_layers] */
    int32_t quantized;    /* a GPTQ model: its linears are packed, but for those kept
                           * float (see gptq_quantize_options.quantize_odd_shapes) */
    gptq_config qcfg;     /* the configuration they were quantized with */
    int32_t true_sequential;
};

/* Make layer i resident: float32 weights (a float checkpoint) or packed tensors (a GPTQ
 * checkpoint, or linears quantized in memory, which stay resident once made). */
int gptq__layer_load(gptq_ctx *ctx, gptq_model *m, int64_t i);
/* Drop layer i's float weights (packed ones stay). */
void gptq__layer_unload(gptq_model *m, int64_t i);
void gptq__linear_clear(gptq__linear *l);

/* ---- forward pass ---- */

/* Capture points inside a decoder layer: the inputs of the linears. */
enum {
    GPTQ_CAP_ATTN_IN = 0, /* normed hidden state: input of q, k, v */
    GPTQ_CAP_O_IN,        /* attention output before o_proj */
    GPTQ_CAP_MLP_IN,      /* normed hidden state: input of gate, up */
    GPTQ_CAP_DOWN_IN,     /* silu(gate) * up: input of down */
    GPTQ_CAP_COUNT
};

/* Called with the input of a group of linears for a batch of sequences: x is
 * [nseq * seqlen, width], sequence s in rows [s*seqlen, (s+1)*seqlen). Return a status;
 * non-OK stops the forward pass. */
typedef int (*gptq__capture_fn)(void *user, int32_t point, const float *x, int64_t nseq,
                                int64_t seqlen, int64_t width);

/* Run decoder layer `L` (resident) in place on hidden states h [nseq * seqlen, hidden]
 * of nseq sequences of seqlen tokens each (positions 0..seqlen-1). `stop_after`: run
 * up to and including the capture point with that index and return (GPTQ_CAP_COUNT =
 * the whole layer; h is then the layer's output). `capture` may be NULL. */
int gptq__layer_forward(gptq_ctx *ctx, const gptq_model *m, const gptq__layer *L, float *h,
                        int64_t nseq, int64_t seqlen, gptq__capture_fn capture, void *user,
                        int32_t stop_after);

/* The same layer in five stages, for the GPTQ pipeline, which quantizes between them and
 * so computes every part of the layer once (the references re-run the whole layer for
 * each true-sequential subset; the values are the same):
 *   0: capture ATTN_IN (normed h)
 *   1: attention output with q/k/v as they are now -> stash [n, q width]; capture O_IN
 *   2: h += o(stash); capture MLP_IN (normed h)
 *   3: silu(gate) * up -> stash [n, intermediate]; capture DOWN_IN
 *   4: h += down(stash): h is the layer's output
 * h [nseq * seqlen, hidden] is the residual stream, updated in stages 2 and 4. */
int gptq__layer_stage(gptq_ctx *ctx, const gptq_model *m, const gptq__layer *L, int32_t stage,
                      float *h, float *stash, int64_t nseq, int64_t seqlen,
                      gptq__capture_fn capture, void *user);

/* y[n, out] = x[n, in] * W^T + b for a resident linear (float: SGEMM; quantized: its
 * prepared weights, gptq_qlinear_forward). */
int gptq__linear_apply(gptq_ctx *ctx, const gptq__linear *l, const float *x, int64_t n, float *y);

/* The element-wise passes of the layer on host memory, on ctx's threads (the host
 * versions of the backend's rms_norm, silu_mul and add slots). */
void gptq__rms_norm(const gptq_ctx *ctx, const float *x, const float *w, int64_t n,
                    int64_t width, float eps, float *y);
void gptq__silu_mul(const gptq_ctx *ctx, float *g, const float *u, int64_t n, int64_t width);
void gptq__add_into(const gptq_ctx *ctx, float *y, const float *x, int64_t n, int64_t width);
/* y[r][o] += b[o] for n rows of width (the host version of the add_bias slot). */
void gptq__add_bias(float *y, const float *b, int64_t n, int64_t width);

/* y[n, out] = x[n, in] W[out, in]^T through the backend's gemm (operands as it takes
 * them), in float32 whatever the context's math mode. */
int gptq__gemm_fp32(gptq_ctx *ctx, const float *x, int64_t n, int64_t in, const float *w,
                    int64_t out, float *y);

/* ---- the pipeline's layer on the backend's buffers (forward_dev.c) ---- */

/* Device copies of the running layer's weights, the RoPE tables, the stage activations
 * [max_tokens] and one Hessian per capture point, all in buf_alloc buffers. */
typedef struct gptq__dev gptq__dev;

/* For model m, batches of at most max_tokens tokens, sequences of at most max_seqlen;
 * with the four Hessians (the pipeline) or without (evaluation). */
int gptq__dev_open(gptq_ctx *ctx, const gptq_model *m, int64_t max_tokens, int64_t max_seqlen,
                   int32_t hessians, gptq__dev **out);
void gptq__dev_close(gptq__dev *d);
/* Upload layer L's float weights, biases and norms (L resident; a packed linear runs
 * through its prepared handle, which must exist), or one linear's weights again (its Q
 * once quantized). */
int gptq__dev_load_layer(gptq__dev *d, const gptq__layer *L);
int gptq__dev_load_linear(gptq__dev *d, const gptq__layer *L, int32_t j);
/* gptq__layer_stage on buffers: h, stash and what `capture` receives are buf_alloc
 * buffers, the weights those last loaded. */
int gptq__dev_stage(gptq__dev *d, int32_t stage, float *h, float *stash, int64_t nseq,
                    int64_t seqlen, gptq__capture_fn capture, void *user);
/* The Hessian of capture point `point`: forget every sample (reset), add each of nseq
 * sequences of x (a buffer, [nseq * seqlen][width]) as one sample, copy it into a new
 * host gptq_hessian (take). */
void gptq__dev_hessians_reset(gptq__dev *d);
int gptq__dev_hessian_add(gptq__dev *d, int32_t point, const float *x, int64_t nseq,
                          int64_t seqlen);
int gptq__dev_hessian_take(gptq__dev *d, int32_t point, gptq_hessian **out);
/* gptq__head_nll for one window of len tokens whose hidden states h (a buffer, [len,
 * hidden], overwritten) are on the backend: final norm and lm_head there, the
 * log-softmax of each chunk of logits on the host. */
int gptq__dev_head_nll(gptq__dev *d, gptq_model *m, float *h, const int32_t *ids, int64_t len,
                       double *nll_sum, int64_t *count);

/* h[n, hidden] = embed[ids] */
int gptq__embed(gptq_ctx *ctx, const gptq_model *m, const int32_t *ids, int64_t n, float *h);

/* Final norm + lm_head + log-softmax: the summed NLL of tokens 1..len-1 of each of the
 * nseq sequences (ids [nseq * seqlen]) given hidden states h [nseq * seqlen, hidden]
 * (h is overwritten). *nll_sum accumulates in double; *count the predicted tokens. */
int gptq__head_nll(gptq_ctx *ctx, gptq_model *m, float *h, const int32_t *ids,
                   int64_t nseq, int64_t seqlen, double *nll_sum, int64_t *count);

/* The NLL part of head_nll: rows row0 .. row0 + nr - 1 of a window batch (ids of the
 * whole batch, sequences of seqlen) given their logits [nr, vocab]; scratch holds nr
 * doubles; *nll_sum accumulates in row order. Rows per logits chunk, and the output
 * projection's weights (lm_head or the tied embedding), for a head run elsewhere. */
void gptq__nll_sum(const gptq_ctx *ctx, const float *logits, const int32_t *ids, int64_t row0,
                   int64_t nr, int64_t seqlen, int64_t vocab, double *scratch, double *nll_sum);
int gptq__head_chunk_rows(int64_t vocab);
const float *gptq__head_weights(const gptq_model *m);

/* Final norm + lm_head: logits [n, vocab] (for tests against reference logits). */
int gptq__head_logits(gptq_ctx *ctx, gptq_model *m, float *h, int64_t n, float *logits);
/* Read lm_head (float32) if the model has its own and it is not resident yet: the head
 * functions above call it, so a pipeline that never reaches the head never holds it. */
int gptq__head_load(gptq_ctx *ctx, gptq_model *m);

/* Inside layer_forward (attention.c): RoPE in place on q [n, n_heads * head_dim] and
 * k [n, n_kv_heads * head_dim], n = nseq * seqlen; causal GQA attention of q, k, v
 * into out [n, n_heads * head_dim]. */
int gptq__rope_apply(gptq_ctx *ctx, const gptq__model_config *c, float *q, float *k,
                     int64_t nseq, int64_t seqlen);
/* The RoPE tables of positions pos0 .. pos0 + seqlen - 1: cs, sn [seqlen][head_dim / 2]. */
int gptq__rope_tables(gptq_ctx *ctx, const gptq__model_config *c, int64_t seqlen, int64_t pos0,
                      float *cs, float *sn);
/* RoPE with such tables in place on x [n][heads * head_dim], row r at table row
 * r % seqlen (the host version of the backend's rope slot). */
void gptq__rope_rows(gptq_ctx *ctx, float *x, const float *cs, const float *sn, int64_t n,
                     int64_t seqlen, int64_t heads, int64_t head_dim);
int gptq__attention(gptq_ctx *ctx, const gptq__model_config *c, const float *q, const float *k,
                    const float *v, int64_t nseq, int64_t seqlen, float *out);
/* For generation: RoPE at positions pos0 .. pos0 + n - 1 of one sequence; attention of
 * n new queries (positions pos0 ..) over a KV cache kc/vc [pos0 + n, n_kv_heads *
 * head_dim] that already holds their own keys and values. */
int gptq__rope_apply_at(gptq_ctx *ctx, const gptq__model_config *c, float *q, float *k,
                        int64_t n, int64_t pos0);
int gptq__attention_cached(gptq_ctx *ctx, const gptq__model_config *c, const float *q,
                           const float *kc, const float *vc, int64_t n, int64_t pos0,
                           float *out);

/* Decoder layer L on n new tokens of one sequence at positions pos0 .. pos0 + n - 1,
 * in place on h [n, hidden]; their keys and values are written into rows pos0 .. of the
 * layer's cache kc/vc [capacity, n_kv_heads * head_dim] and attention reads rows
 * 0 .. pos0 + n - 1 of it. */
int gptq__layer_decode(gptq_ctx *ctx, const gptq_model *m, const gptq__layer *L, float *h,
                       int64_t n, int64_t pos0, float *kc, float *vc);

/* ---- CPython random (pyrandom.c) ---- */

typedef struct gptq__pyrandom {
    uint32_t mt[624];
    int32_t index;
} gptq__pyrandom;

/* random.seed(seed) for a non-negative integer seed. */
void gptq__pyrandom_seed(gptq__pyrandom *r, uint64_t seed);
/* random.randint(a, b), a <= b, b - a < 2^32. */
int64_t gptq__pyrandom_randint(gptq__pyrandom *r, int64_t a, int64_t b);

/* ---- saving (save.c; the small files in save_config.c) ---- */

/* config.json in `dir`: m's config with torch_dtype "float16" and, for format
 * GPTQ_FORMAT_V1 or _V2, quantization_config for `bits`-bit weights, then
 * quantize_config.json with the same dictionary; format 0 (a float16 checkpoint) drops
 * quantization_config and writes no quantize_config.json. */
int gptq__save_configs(gptq_ctx *ctx, const gptq_model *m, const char *dir, int32_t format,
                       int32_t bits);
/* model.safetensors.index.json: tensor names[i] is stored in files[i]. */
int gptq__save_index(gptq_ctx *ctx, const char *dir, int64_t count, const char *const *names,
                     const char *const *files, uint64_t total_size);
/* Copy the tokenizer and generation files that m->dir has into `dir`. */
int gptq__save_copy_tokenizer(gptq_ctx *ctx, const gptq_model *m, const char *dir);
/* The output directory protocol: begin checks `dir` (exists without force, or is or
 * holds the model's own directory) and makes an empty temporary directory *tmp beside it; end,
 * given the status of writing into it, renames it to `dir` (replacing an old one only
 * with force) or removes it, frees tmp and returns the final status. */
int gptq__save_dir_begin(gptq_ctx *ctx, const gptq_model *m, const char *dir, int32_t force,
                         char **tmp);
int gptq__save_dir_end(gptq_ctx *ctx, char *tmp, const char *dir, int32_t force, int status);

#endif /* GPTQ_MODEL_INTERNAL_H */
