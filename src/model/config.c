/*
 * config.json (and quantize_config.json) -> gptq__model_config.
 *
 * Keys and defaults follow the transformers configuration classes of the three
 * supported architectures (LlamaConfig, MistralConfig, Qwen2Config): a key that is
 * absent or null takes the class default. Only what the Llama-family forward pass
 * needs is read; everything else is kept verbatim in config_text for the writer.
 *
 * Every message starts with the file and names the key, so a user can fix the file.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "model.h"

/* Caps far above any released checkpoint; they keep every product of two sizes (a
 * tensor's element count) well inside int64 and size_t for hostile configs. */
#define CFG_MAX_DIM ((int64_t)1 << 24)
#define CFG_MAX_LAYERS ((int64_t)1 << 16)
#define CFG_MAX_FILE ((long)64 << 20)

/* A JSON file read whole: `text` (NUL-terminated, owned) and its parsed tree. A file
 * that does not exist gives NOT_FOUND, or GPTQ_OK with *root NULL when `optional`. */
static int load_json(gptq_ctx *ctx, const char *dir, const char *file, int optional,
                     char **text_out, json_t **root)
{
    char path[4096];
    json_error_t jerr;
    FILE *f;
    char *text = NULL;
    long size = -1;
    int rc = GPTQ_OK;

    *root = NULL;
    if (text_out)
        *text_out = NULL;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, file) >= sizeof path)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: path too long", file);
    f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT && optional)
            return GPTQ_OK;
        return GPTQ_FAIL(ctx, errno == ENOENT ? GPTQ_ERR_NOT_FOUND : GPTQ_ERR_IO,
                         "%s: cannot open: %s", path, strerror(errno));
    }
    if (fseek(f, 0, SEEK_END) == 0)
        size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0)
        rc = GPTQ_FAIL(ctx, GPTQ_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    else if (size > CFG_MAX_FILE) /* a config is a few kB; refuse to slurp a huge file */
        rc = GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: %ld bytes is too large for a config file",
                       file, size);
    else if ((text = gptq__alloc(ctx, (size_t)size + 1, file)) == NULL)
        rc = GPTQ_ERR_OUT_OF_MEMORY;
    else if (fread(text, 1, (size_t)size, f) != (size_t)size)
        rc = GPTQ_FAIL(ctx, GPTQ_ERR_IO, "%s: short read", path);
    fclose(f);
    if (rc != GPTQ_OK) {
        gptq__free(text);
        return rc;
    }
    text[size] = '\0';
    /* The text is parsed from memory (not json_load_file) because config.json's text is
     * kept for the writer; duplicate keys are rejected as the safetensors header is. */
    *root = json_loadb(text, (size_t)size, JSON_REJECT_DUPLICATES, &jerr);
    if (!*root) {
        gptq__free(text);
        return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: line %d, column %d: %s", file, jerr.line,
                         jerr.column, jerr.text);
    }
    if (!json_is_object(*root)) {
        json_decref(*root);
        *root = NULL;
        gptq__free(text);
        return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: the top level is not a JSON object", file);
    }
    if (text_out)
        *text_out = text;
    else
        gptq__free(text);
    return GPTQ_OK;
}

/* ---- typed keys: absent or null gives the default -------------------------------- */

static int get_int(gptq_ctx *ctx, const char *file, const json_t *obj, const char *key,
                   int required, int64_t def, int64_t lo, int64_t hi, int64_t *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required)
            return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: %s is missing", file, key);
        *out = def;
        return GPTQ_OK;
    }
    if (!json_is_integer(v))
        return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: %s must be %s", file, key,
                         lo > 0 ? "a positive integer" : "an integer");
    *out = json_integer_value(v);
    if (*out < lo)
        return lo > 0 ? GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                                  "%s: %s must be a positive integer (it is %lld)", file, key,
                                  (long long)*out)
                      : GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: %s must be at least %lld", file,
                                  key, (long long)lo);
    if (*out > hi)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED, "%s: %s = %lld is larger than %lld", file,
                         key, (long long)*out, (long long)hi);
    return GPTQ_OK;
}

/* A positive finite number (JSON integer or real). */
static int get_pos_number(gptq_ctx *ctx, const char *file, const json_t *obj, const char *key,
                          int required, double def, double *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required)
            return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: %s is missing", file, key);
        *out = def;
        return GPTQ_OK;
    }
    if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) <= 0.0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: %s must be a positive number", file, key);
    *out = json_number_value(v);
    return GPTQ_OK;
}

static int get_bool(gptq_ctx *ctx, const char *file, const json_t *obj, const char *key,
                    int32_t def, int32_t *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return GPTQ_OK;
    }
    if (!json_is_boolean(v))
        return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: %s must be true or false", file, key);
    *out = json_is_true(v);
    return GPTQ_OK;
}

/* A string value or NULL (absent or null); a value of another type is MALFORMED. */
static int get_str(gptq_ctx *ctx, const char *file, const json_t *obj, const char *key,
                   const char **out)
{
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return GPTQ_OK;
    if (!json_is_string(v))
        return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: %s must be a string", file, key);
    *out = json_string_value(v);
    return GPTQ_OK;
}

/* ---- sections -------------------------------------------------------------------- */

static const struct {
    const char *cls, *model_type;
    int32_t arch;
} ARCHS[] = {
    {"LlamaForCausalLM", "llama", GPTQ_ARCH_LLAMA},
    {"MistralForCausalLM", "mistral", GPTQ_ARCH_MISTRAL},
    {"Qwen2ForCausalLM", "qwen2", GPTQ_ARCH_QWEN2},
};

/* architectures[0] decides; model_type only stands in when there is no architectures
 * list (a *ForSequenceClassification model of type llama is not a causal LM). */
static int parse_arch(gptq_ctx *ctx, const json_t *root, gptq__model_config *cfg)
{
    const json_t *archs = json_object_get(root, "architectures");
    const char *name = NULL, *type = NULL;

    if (archs && !json_is_null(archs)) {
        if (!json_is_array(archs) || json_array_size(archs) == 0 ||
            !json_is_string(json_array_get(archs, 0)))
            return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                             "config.json: architectures must be a non-empty list of strings");
        name = json_string_value(json_array_get(archs, 0));
    } else {
        GPTQ_TRY(get_str(ctx, "config.json", root, "model_type", &type));
        if (!type)
            return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                             "config.json: neither architectures nor model_type is given");
    }
    for (size_t i = 0; i < sizeof ARCHS / sizeof ARCHS[0]; i++) {
        if ((name && strcmp(name, ARCHS[i].cls) == 0) ||
            (type && strcmp(type, ARCHS[i].model_type) == 0)) {
            cfg->arch = ARCHS[i].arch;
            snprintf(cfg->arch_name, sizeof cfg->arch_name, "%s", ARCHS[i].cls);
            return GPTQ_OK;
        }
    }
    return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                     "config.json: unknown %s '%.100s' (LlamaForCausalLM, MistralForCausalLM "
                     "and Qwen2ForCausalLM are supported)",
                     name ? "architecture" : "model_type", name ? name : type);
}

static int parse_sizes(gptq_ctx *ctx, const json_t *root, gptq__model_config *cfg)
{
    const char *f = "config.json";
    int64_t head_dim;

    GPTQ_TRY(get_int(ctx, f, root, "vocab_size", 1, 0, 1, CFG_MAX_DIM, &cfg->vocab));
    GPTQ_TRY(get_int(ctx, f, root, "hidden_size", 1, 0, 1, CFG_MAX_DIM, &cfg->hidden));
    GPTQ_TRY(get_int(ctx, f, root, "intermediate_size", 1, 0, 1, CFG_MAX_DIM, &cfg->inter));
    GPTQ_TRY(get_int(ctx, f, root, "num_hidden_layers", 1, 0, 1, CFG_MAX_LAYERS, &cfg->n_layers));
    GPTQ_TRY(get_int(ctx, f, root, "num_attention_heads", 1, 0, 1, CFG_MAX_DIM, &cfg->n_heads));
    GPTQ_TRY(get_int(ctx, f, root, "num_key_value_heads", 0, cfg->n_heads, 1, CFG_MAX_DIM,
                     &cfg->n_kv_heads));
    GPTQ_TRY(get_int(ctx, f, root, "head_dim", 0, 0, 1, CFG_MAX_DIM, &head_dim));
    GPTQ_TRY(get_int(ctx, f, root, "max_position_embeddings", 1, 0, 1, INT32_MAX, &cfg->max_pos));
    if (head_dim == 0) {
        if (cfg->hidden % cfg->n_heads != 0)
            return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                             "config.json: hidden_size %lld is not divisible by "
                             "num_attention_heads %lld (and head_dim is not given)",
                             (long long)cfg->hidden, (long long)cfg->n_heads);
        head_dim = cfg->hidden / cfg->n_heads;
    }
    cfg->head_dim = head_dim;
    if (cfg->n_heads % cfg->n_kv_heads != 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                         "config.json: num_attention_heads %lld is not a multiple of "
                         "num_key_value_heads %lld",
                         (long long)cfg->n_heads, (long long)cfg->n_kv_heads);
    if (cfg->n_heads * cfg->head_dim > CFG_MAX_DIM)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "config.json: num_attention_heads x head_dim = %lld is too large",
                         (long long)(cfg->n_heads * cfg->head_dim));
    /* rotate_half pairs element j with j + head_dim/2. */
    if (cfg->head_dim % 2 != 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "config.json: head_dim %lld is odd; rotary embeddings need it even",
                         (long long)cfg->head_dim);
    GPTQ_TRY(get_pos_number(ctx, f, root, "rms_norm_eps", 0, 1e-6, &cfg->rms_eps));
    GPTQ_TRY(get_pos_number(ctx, f, root, "rope_theta", 0, 10000.0, &cfg->rope_theta));
    GPTQ_TRY(get_bool(ctx, f, root, "tie_word_embeddings", 0, &cfg->tie_embeddings));
    /* Biases as the modeling code builds the Linears: Llama reads attention_bias (all
     * four attention projections) and mlp_bias; Mistral has none; Qwen2 always has q/k/v
     * biases and no others, whatever the config says. */
    if (cfg->arch == GPTQ_ARCH_LLAMA) {
        int32_t attn_bias;
        GPTQ_TRY(get_bool(ctx, f, root, "attention_bias", 0, &attn_bias));
        GPTQ_TRY(get_bool(ctx, f, root, "mlp_bias", 0, &cfg->mlp_bias));
        cfg->qkv_bias = cfg->o_bias = attn_bias;
    } else if (cfg->arch == GPTQ_ARCH_QWEN2) {
        cfg->qkv_bias = 1;
    }
    return GPTQ_OK;
}

/* rope_scaling: newer transformers write "rope_type", older ones "type". */
static int parse_rope(gptq_ctx *ctx, const json_t *root, gptq__model_config *cfg)
{
    const char *f = "config.json: rope_scaling";
    const json_t *rs = json_object_get(root, "rope_scaling");
    const char *type = NULL;
    double omax;

    cfg->rope_type = GPTQ_ROPE_NONE;
    if (!rs || json_is_null(rs))
        return GPTQ_OK;
    if (!json_is_object(rs))
        return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "config.json: rope_scaling must be an object");
    GPTQ_TRY(get_str(ctx, f, rs, "rope_type", &type));
    if (!type)
        GPTQ_TRY(get_str(ctx, f, rs, "type", &type));
    if (!type)
        return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "config.json: rope_scaling has no rope_type");
    if (strcmp(type, "default") == 0)
        return GPTQ_OK;
    if (strcmp(type, "linear") == 0) {
        cfg->rope_type = GPTQ_ROPE_LINEAR;
        return get_pos_number(ctx, f, rs, "factor", 1, 0.0, &cfg->rope_factor);
    }
    if (strcmp(type, "llama3") == 0) {
        cfg->rope_type = GPTQ_ROPE_LLAMA3;
        GPTQ_TRY(get_pos_number(ctx, f, rs, "factor", 1, 0.0, &cfg->rope_factor));
        GPTQ_TRY(get_pos_number(ctx, f, rs, "low_freq_factor", 1, 0.0,
                                &cfg->rope_low_freq_factor));
        GPTQ_TRY(get_pos_number(ctx, f, rs, "high_freq_factor", 1, 0.0,
                                &cfg->rope_high_freq_factor));
        GPTQ_TRY(get_pos_number(ctx, f, rs, "original_max_position_embeddings", 1, 0.0, &omax));
        /* Llama 3.1's wavelength interpolation divides by high - low. */
        if (cfg->rope_high_freq_factor <= cfg->rope_low_freq_factor)
            return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                             "config.json: rope_scaling high_freq_factor must exceed "
                             "low_freq_factor");
        if (omax != floor(omax) || omax > INT32_MAX)
            return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                             "config.json: rope_scaling original_max_position_embeddings must "
                             "be a positive integer");
        cfg->rope_original_max_pos = (int64_t)omax;
        return GPTQ_OK;
    }
    return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                     "config.json: rope_scaling type '%.64s' is not supported (linear and "
                     "llama3 are)",
                     type);
}

/* The GPTQ options of a checkpoint. `file` is "config.json: quantization_config" or
 * "quantize_config.json". AutoGPTQ before 0.7 wrote no quant_method into its own file;
 * GPTQModel spells the keys method/format besides quant_method/checkpoint_format. */
static int parse_quant(gptq_ctx *ctx, const char *file, const json_t *q, int method_required,
                       gptq__model_config *cfg)
{
    const char *method = NULL, *format = NULL;
    int32_t marlin = 0;
    int64_t bits, gs;

    GPTQ_TRY(get_str(ctx, file, q, "quant_method", &method));
    if (!method)
        GPTQ_TRY(get_str(ctx, file, q, "method", &method));
    if (!method && method_required)
        return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: quant_method is missing", file);
    if (method && strcmp(method, "gptq") != 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "%s: quant_method '%.64s' is not supported (only gptq is)", file, method);
    GPTQ_TRY(get_str(ctx, file, q, "checkpoint_format", &format));
    if (!format)
        GPTQ_TRY(get_str(ctx, file, q, "format", &format));
    GPTQ_TRY(get_bool(ctx, file, q, "is_marlin_format", 0, &marlin));
    if (marlin)
        format = "marlin";
    if (!format || strcmp(format, "gptq") == 0)
        cfg->q_format = GPTQ_FORMAT_V1;
    else if (strcmp(format, "gptq_v2") == 0)
        cfg->q_format = GPTQ_FORMAT_V2;
    else
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "%s: checkpoint_format '%.64s' is not supported (gptq and gptq_v2 are)",
                         file, format);
    GPTQ_TRY(get_int(ctx, file, q, "bits", 1, 0, INT32_MIN, INT32_MAX, &bits));
    if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "%s: bits = %lld is not supported (2, 3, 4 or 8)", file, (long long)bits);
    GPTQ_TRY(get_int(ctx, file, q, "group_size", 0, -1, INT32_MIN, INT32_MAX, &gs));
    if (gs != -1 && gs < 1)
        return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                         "%s: group_size must be -1 or positive (it is %lld)", file,
                         (long long)gs);
    /* desc_act is informative when loading: g_idx says which group each column is in. */
    GPTQ_TRY(get_bool(ctx, file, q, "desc_act", 0, &cfg->q_desc_act));
    GPTQ_TRY(get_bool(ctx, file, q, "sym", 1, &cfg->q_sym));
    cfg->quantized = 1;
    cfg->q_bits = (int32_t)bits;
    cfg->q_group_size = (int32_t)gs;
    return GPTQ_OK;
}

/* transformers reads config.json's quantization_config only, so it wins; a separate
 * quantize_config.json (AutoGPTQ's own file) is the fallback. */
static int load_quant(gptq_ctx *ctx, const char *dir, const json_t *root, gptq__model_config *cfg)
{
    const json_t *q = json_object_get(root, "quantization_config");
    json_t *qroot = NULL;
    int rc;

    if (q && !json_is_null(q)) {
        if (!json_is_object(q))
            return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                             "config.json: quantization_config must be an object");
        return parse_quant(ctx, "config.json: quantization_config", q, 1, cfg);
    }
    GPTQ_TRY(load_json(ctx, dir, "quantize_config.json", 1, NULL, &qroot));
    if (!qroot)
        return GPTQ_OK;
    rc = parse_quant(ctx, "quantize_config.json", qroot, 0, cfg);
    json_decref(qroot);
    return rc;
}

int gptq__config_load(gptq_ctx *ctx, const char *dir, gptq__model_config *cfg)
{
    json_t *root = NULL;
    char *text = NULL;
    int rc;

    if (!dir || !cfg)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq__config_load: NULL argument");
    memset(cfg, 0, sizeof *cfg);
    GPTQ_TRY(load_json(ctx, dir, "config.json", 0, &text, &root));
    rc = parse_arch(ctx, root, cfg);
    if (rc == GPTQ_OK)
        rc = parse_sizes(ctx, root, cfg);
    if (rc == GPTQ_OK)
        rc = parse_rope(ctx, root, cfg);
    if (rc == GPTQ_OK)
        rc = load_quant(ctx, dir, root, cfg);
    json_decref(root);
    if (rc != GPTQ_OK) {
        gptq__free(text);
        memset(cfg, 0, sizeof *cfg);
        return rc;
    }
    cfg->config_text = text;
    return GPTQ_OK;
}

void gptq__config_free(gptq__model_config *cfg)
{
    if (!cfg)
        return;
    gptq__free(cfg->config_text);
    cfg->config_text = NULL;
}
