/*
 * libgptq - whole models: Hugging Face Llama-family checkpoints in, GPTQ checkpoints out.
 *
 * A gptq_model is a Hugging Face model directory (config.json + model.safetensors, or
 * shards with model.safetensors.index.json) of architecture LlamaForCausalLM,
 * MistralForCausalLM or Qwen2ForCausalLM, with float32, float16 or bfloat16 tensors -
 * or a GPTQ checkpoint of one (checkpoint_format "gptq" or "gptq_v2"). Tensors are
 * memory-mapped; a decoder layer's float weights are resident only while that layer is
 * worked on.
 *
 *   gptq_model_open      open and validate a directory
 *   gptq_model_quantize  sequential GPTQ over calibration data, layer by layer, as the
 *                        references' llama_sequential does (true-sequential subsets
 *                        [q,k,v] -> o -> [gate,up] -> down, the outputs of quantized
 *                        modules feeding the later ones)
 *   gptq_model_save      write a GPTQ checkpoint that AutoGPTQ, GPTQModel, transformers,
 *                        vLLM and TGI load (or, for a quantized model, a float16 copy with
 *                        gptq_model_save_dequantized)
 *   gptq_model_eval      perplexity: non-overlapping windows, no BOS added, mean NLL over
 *                        positions 1..len-1 of every window
 *
 * Token data comes through gptq_tokens: text read as bytes (the byte-level tokenizer of
 * byte models), or pre-tokenized ids (a JSON array of ids, a JSON array of id arrays -
 * one sequence each - or a safetensors file with an I32/I64 tensor).
 *
 * Same conventions as gptq.h: status codes, per-context last error, one thread per
 * context at a time, versioned option structs with _init functions.
 */
#ifndef GPTQ_MODEL_H
#define GPTQ_MODEL_H

#include "gptq/gptq.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- token data ------------------------------------------------------------------ */

typedef struct gptq_tokens gptq_tokens;

#define GPTQ_TOKENS_AUTO 0  /* by content: JSON ids, safetensors ids, else text as bytes */
#define GPTQ_TOKENS_BYTES 1 /* the file's bytes are the tokens (byte-level vocabularies) */
#define GPTQ_TOKENS_IDS 2   /* JSON array of ids / of id arrays, or safetensors I32/I64 */

/* Load token data from a file. A flat list (text, a JSON array of ids, a 1-D tensor)
 * is one sequence; a JSON array of arrays or a 2-D tensor is one sequence per entry.
 * Errors: NOT_FOUND, IO, MALFORMED (bad JSON, non-integer or negative ids, empty). */
GPTQ_API int gptq_tokens_load(gptq_ctx *ctx, const char *path, int32_t kind, gptq_tokens **out);

/* One sequence from memory (ids copied). */
GPTQ_API int gptq_tokens_from_ids(gptq_ctx *ctx, const int32_t *ids, int64_t n,
                                  gptq_tokens **out);

GPTQ_API void gptq_tokens_free(gptq_tokens *t);
/* Number of sequences, and sequence i (its length in *len; pointer valid until free). */
GPTQ_API int64_t gptq_tokens_count(const gptq_tokens *t);
GPTQ_API const int32_t *gptq_tokens_sequence(const gptq_tokens *t, int64_t i, int64_t *len);
/* Total number of tokens over all sequences. */
GPTQ_API int64_t gptq_tokens_total(const gptq_tokens *t);

/* ---- the model ------------------------------------------------------------------- */

typedef struct gptq_model gptq_model;

/* Open a model directory. Validates config.json (architecture, sizes, rope_scaling of
 * type linear or llama3), the weight files and every tensor's name, dtype and shape.
 * Errors: NOT_FOUND (directory, config.json, a shard), MALFORMED (config, index,
 * tensor file), SHAPE (a tensor's shape disagrees with config.json), NOT_SUPPORTED
 * (architecture, dtype, rope_scaling type, GPTQ options), OUT_OF_MEMORY. */
GPTQ_API int gptq_model_open(gptq_ctx *ctx, const char *dir, gptq_model **out);
GPTQ_API void gptq_model_free(gptq_model *m);

/* "LlamaForCausalLM", "MistralForCausalLM" or "Qwen2ForCausalLM". */
GPTQ_API const char *gptq_model_architecture(const gptq_model *m);
GPTQ_API int64_t gptq_model_num_layers(const gptq_model *m);
GPTQ_API int64_t gptq_model_hidden_size(const gptq_model *m);
GPTQ_API int64_t gptq_model_vocab_size(const gptq_model *m);
/* 1 if the decoder linears are GPTQ-quantized (a GPTQ checkpoint, or after
 * gptq_model_quantize), else 0. */
GPTQ_API int32_t gptq_model_is_quantized(const gptq_model *m);

/* ---- quantization ---------------------------------------------------------------- */

/* What a progress callback sees, once per quantized module and once per layer end. */
typedef struct gptq_progress {
    uint32_t struct_size;
    int32_t layer;        /* 0-based decoder layer */
    int32_t num_layers;
    const char *module;   /* e.g. "self_attn.q_proj"; "" at a layer's end */
    int32_t step;         /* modules done so far, over all layers */
    int32_t num_steps;    /* total modules to quantize */
    double loss;          /* GPTQ loss of this module (see gptq_result_loss) */
    double damp_percent;  /* damp actually used for this module */
    double seconds;       /* time spent on this module */
    double elapsed;       /* seconds since gptq_model_quantize started */
} gptq_progress;

/* Return 0 to go on, non-zero to cancel (gptq_model_quantize then returns
 * GPTQ_ERR_CANCELLED and the model is left unquantized). */
typedef int (*gptq_progress_fn)(void *user, const gptq_progress *p);

typedef struct gptq_quantize_options {
    uint32_t struct_size;
    gptq_config config;      /* per-layer options (bits, group_size, desc_act, ...) */
    int64_t nsamples;        /* calibration samples, default 128 */
    int64_t seqlen;          /* tokens per sample, default 2048 */
    uint64_t seed;           /* window sampling, default 0 */
    int32_t true_sequential; /* 1 (default): [q,k,v] -> o -> [gate,up] -> down */
    gptq_progress_fn progress;
    void *progress_user;
    /* Appended after the first layout: a caller's shorter struct reads it as 0. A linear whose in or
     * out features are not multiples of 32 cannot be packed in the layout AutoGPTQ,
     * GPTQModel and transformers read (they drop or refuse the tail). 0 (default): such
     * linears stay float, are saved as float16 and are listed in quantization_config
     * (modules_in_block_to_quantize, dynamic) so loaders keep them float; 1: quantize
     * them anyway, saved with padded packing that only libgptq reads back. */
    int32_t quantize_odd_shapes;
} gptq_quantize_options;

GPTQ_API void gptq_quantize_options_init(gptq_quantize_options *o);

/* Quantize every decoder-layer linear (q, k, v, o, gate, up, down) with GPTQ (but see
 * quantize_odd_shapes).
 * Calibration: with one sequence in `calib`, `nsamples` windows of `seqlen` tokens at
 * offsets drawn as the references do (Python's random.seed(seed), then
 * random.randint(0, N - seqlen - 1) per window, reproduced exactly); with several
 * sequences, each of the first `nsamples` sequences (cut to `seqlen`) is one sample.
 * Embeddings, norms and lm_head stay as they are.
 * Errors: as gptq_layer_quantize, plus INVALID_ARGUMENT (calibration shorter than one
 * window, token ids >= vocab), NOT_SUPPORTED (already quantized), CANCELLED. */
GPTQ_API int gptq_model_quantize(gptq_ctx *ctx, gptq_model *m, const gptq_tokens *calib,
                                 const gptq_quantize_options *opts);

/* ---- saving ---------------------------------------------------------------------- */

typedef struct gptq_save_options {
    uint32_t struct_size;
    int32_t format;          /* GPTQ_FORMAT_V1 ("gptq", default) or GPTQ_FORMAT_V2 */
    int32_t pack_mode;       /* GPTQ_PACK_CLEAN (default) ... */
    int64_t max_shard_bytes; /* split model.safetensors above this; default 4 GiB */
    int32_t force;           /* 1: replace an existing output directory */
} gptq_save_options;

GPTQ_API void gptq_save_options_init(gptq_save_options *o);

/* Write the model to `dir`: safetensors (sharded above max_shard_bytes, with
 * model.safetensors.index.json), config.json with quantization_config,
 * quantize_config.json, and the tokenizer files of the source directory. Unquantized
 * tensors are stored as float16, as the references do. Written into a temporary
 * directory beside `dir`, then renamed; an existing `dir` is replaced only with force.
 * Errors: INVALID_ARGUMENT (not quantized), IO, NOT_SUPPORTED, OUT_OF_MEMORY. */
GPTQ_API int gptq_model_save(gptq_ctx *ctx, gptq_model *m, const char *dir,
                             const gptq_save_options *opts);

/* Write a quantized model back as a float16 Hugging Face checkpoint (every linear
 * dequantized, no quantization_config). Same temporary-then-rename rule. */
GPTQ_API int gptq_model_save_dequantized(gptq_ctx *ctx, gptq_model *m, const char *dir,
                                         int32_t force);

/* ---- evaluation ------------------------------------------------------------------ */

typedef struct gptq_eval_result {
    uint32_t struct_size;
    double nll;          /* mean negative log-likelihood (nats per token) */
    double ppl;          /* exp(nll) */
    int64_t tokens;      /* predicted tokens */
    int64_t windows;     /* sequences evaluated */
    double seconds;
} gptq_eval_result;

/* Perplexity. With one sequence in `text`: floor(N / seqlen) non-overlapping windows of
 * seqlen tokens (the tail is dropped); with several sequences: each one, cut to seqlen.
 * Every window runs from position 0 with no BOS added; the NLL of tokens 1..len-1 given
 * their prefix is averaged over all predicted tokens (the references' llama_eval).
 * Quantized linears run through their prepared handles (gptq_qlinear_forward: on the
 * GPU when the layers were loaded with a CUDA context).
 * Errors: INVALID_ARGUMENT (seqlen < 2, text shorter than one window, ids >= vocab). */
GPTQ_API int gptq_model_eval(gptq_ctx *ctx, gptq_model *m, const gptq_tokens *text,
                             int64_t seqlen, gptq_eval_result *out);

/* ---- generation ------------------------------------------------------------------ */

/* Called with each new token as soon as it is chosen; return non-zero to stop. */
typedef int (*gptq_token_fn)(void *user, int32_t token);

typedef struct gptq_generate_options {
    uint32_t struct_size;
    int64_t max_tokens;     /* new tokens at most (default 128) */
    double temperature;     /* 0 (default): greedy, the most likely token (the lowest id
                             * on a tie); > 0: drawn from softmax(logits / temperature) */
    int32_t top_k;          /* with temperature > 0: draw among the k most likely only
                             * (0, the default: all) */
    uint64_t seed;          /* of the draws (default 0): same seed, same text */
    int32_t stop_at_eos;    /* 1 (default): stop after config.json's eos_token_id */
    gptq_token_fn on_token; /* may be NULL */
    void *user;
} gptq_generate_options;

GPTQ_API void gptq_generate_options_init(gptq_generate_options *o);

typedef struct gptq_generate_result {
    uint32_t struct_size;   /* set by the caller: sizeof(gptq_generate_result) */
    int64_t prompt_tokens;
    int64_t new_tokens;
    double prefill_seconds; /* the prompt, in one pass */
    double decode_seconds;  /* the new tokens, one pass each (the first one's included) */
} gptq_generate_result;

/* Continue `prompt` (n_prompt >= 1 token ids) with up to max_tokens new tokens, using a
 * key/value cache: the prompt runs in one pass, then one pass per new token. Float and
 * quantized models alike (quantized linears through the library's dequantizing matmul).
 * The new tokens go to out[0 .. ) (at most out_cap of them; out may be NULL with
 * out_cap 0 when on_token collects them) and their count to result->new_tokens.
 * Positions are limited to config.json's max_position_embeddings.
 * Errors: INVALID_ARGUMENT (ids >= vocab, prompt + max_tokens past the positions, bad
 * options), OUT_OF_MEMORY. A stop asked by on_token is not an error. */
GPTQ_API int gptq_model_generate(gptq_ctx *ctx, gptq_model *m, const int32_t *prompt,
                                 int64_t n_prompt, const gptq_generate_options *opts,
                                 int32_t *out, int64_t out_cap, gptq_generate_result *result);

#ifdef __cplusplus
}
#endif

#endif /* GPTQ_MODEL_H */
