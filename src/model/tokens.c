/*
 * gptq_tokens: token sequences for calibration and evaluation.
 *
 * Three sources, told apart by content for GPTQ_TOKENS_AUTO:
 *   - a JSON array of ids (one sequence) or of id arrays (one sequence each): the file
 *     starts, after optional whitespace, with '[' and parses as JSON;
 *   - a safetensors file with an I32 or I64 tensor (1-D: one sequence, 2-D: one per
 *     row), e.g. the input_ids of a reference_logits.safetensors;
 *   - anything else is text whose bytes are the tokens (byte-level vocabularies).
 * A text file that merely starts with '[' but is not JSON is text, so AUTO never
 * refuses a text file; GPTQ_TOKENS_IDS reports why the file is not ids instead.
 *
 * All sequences live in one id array with an offset table, so a sequence is a pointer
 * and a length with no per-sequence allocation.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "gptq/model.h"
#include "gptq/safetensors.h"
#include "internal.h"

struct gptq_tokens {
    int64_t count;  /* sequences */
    int64_t *start; /* [count + 1]: sequence i is ids[start[i] .. start[i+1]) */
    int32_t *ids;   /* [start[count]] */
};

static int tokens_new(gptq_ctx *ctx, int64_t count, int64_t total, gptq_tokens **out)
{
    gptq_tokens *t = gptq__calloc(ctx, sizeof *t, "tokens");
    size_t ids_bytes, start_bytes;

    if (!t)
        return GPTQ_ERR_OUT_OF_MEMORY;
    if (gptq__mul_size(&ids_bytes, total, (int64_t)sizeof(int32_t)) != 0 ||
        gptq__mul_size(&start_bytes, count + 1, (int64_t)sizeof(int64_t)) != 0) {
        gptq__free(t);
        return GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY, "%lld tokens are too many",
                         (long long)total);
    }
    t->count = count;
    t->ids = gptq__alloc(ctx, ids_bytes, "token ids");
    t->start = gptq__alloc(ctx, start_bytes, "sequence offsets");
    if (!t->ids || !t->start) {
        gptq_tokens_free(t);
        return GPTQ_ERR_OUT_OF_MEMORY;
    }
    t->start[0] = 0;
    *out = t;
    return GPTQ_OK;
}

/* ---- sources --------------------------------------------------------------------- */

static int from_bytes(gptq_ctx *ctx, const unsigned char *buf, size_t size, gptq_tokens **out)
{
    gptq_tokens *t;
    GPTQ_TRY(tokens_new(ctx, 1, (int64_t)size, &t));
    for (size_t i = 0; i < size; i++)
        t->ids[i] = buf[i];
    t->start[1] = (int64_t)size;
    *out = t;
    return GPTQ_OK;
}

/* A token id: a JSON integer in [0, INT32_MAX]. `seq` is -1 for a flat list. */
static int json_id(gptq_ctx *ctx, const char *path, const json_t *v, int64_t seq, size_t k,
                   int32_t *id)
{
    json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
    if (x < 0 || x > INT32_MAX) {
        if (seq < 0)
            return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                             "%s: element %zu is not a token id (a non-negative integer "
                             "below 2^31)",
                             path, k);
        return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                         "%s: sequence %lld, element %zu is not a token id (a non-negative "
                         "integer below 2^31)",
                         path, (long long)seq, k);
    }
    *id = (int32_t)x;
    return GPTQ_OK;
}

static int from_json(gptq_ctx *ctx, const char *path, const json_t *root, gptq_tokens **out)
{
    size_t n = json_array_size(root);
    int nested;
    int64_t total = 0;
    gptq_tokens *t;
    int rc = GPTQ_OK;

    if (!json_is_array(root) || n == 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: no token ids (an empty JSON array)", path);
    nested = json_is_array(json_array_get(root, 0));
    /* First pass: shape and sizes, so that the ids land in one allocation. */
    for (size_t s = 0; nested && s < n; s++) {
        const json_t *seq = json_array_get(root, s);
        if (!json_is_array(seq))
            return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                             "%s: element %zu is not an array (a list of sequences must hold "
                             "only arrays of ids)",
                             path, s);
        if (json_array_size(seq) == 0)
            return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: sequence %zu is empty", path, s);
        total += (int64_t)json_array_size(seq);
    }
    if (!nested)
        total = (int64_t)n;
    GPTQ_TRY(tokens_new(ctx, nested ? (int64_t)n : 1, total, &t));
    if (nested) {
        int64_t pos = 0;
        for (size_t s = 0; rc == GPTQ_OK && s < n; s++) {
            const json_t *seq = json_array_get(root, s);
            for (size_t k = 0; rc == GPTQ_OK && k < json_array_size(seq); k++)
                rc = json_id(ctx, path, json_array_get(seq, k), (int64_t)s, k, &t->ids[pos++]);
            t->start[s + 1] = pos;
        }
    } else {
        for (size_t k = 0; rc == GPTQ_OK && k < n; k++)
            rc = json_id(ctx, path, json_array_get(root, k), -1, k, &t->ids[k]);
        t->start[1] = total;
    }
    if (rc != GPTQ_OK) {
        gptq_tokens_free(t);
        return rc;
    }
    *out = t;
    return GPTQ_OK;
}

/* The id tensor: "input_ids" or "ids" if there is one, else the only integer tensor. */
static int pick_tensor(gptq_ctx *ctx, const char *path, const gptq_safetensors *st,
                       gptq_tensor_info *info)
{
    int found = 0;
    if (gptq_safetensors_find(st, "input_ids", info) == GPTQ_OK ||
        gptq_safetensors_find(st, "ids", info) == GPTQ_OK)
        return GPTQ_OK;
    for (int64_t i = 0; i < gptq_safetensors_count(st); i++) {
        gptq_tensor_info cand;
        gptq_safetensors_info(st, i, &cand);
        if (cand.dtype == GPTQ_DTYPE_I32 || cand.dtype == GPTQ_DTYPE_I64) {
            if (found++)
                return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                                 "%s: several integer tensors and none named input_ids or ids",
                                 path);
            *info = cand;
        }
    }
    if (found)
        return GPTQ_OK;
    return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: no I32 or I64 tensor of token ids", path);
}

static int from_safetensors(gptq_ctx *ctx, const char *path, const gptq_safetensors *st,
                            gptq_tokens **out)
{
    gptq_tensor_info info;
    gptq_tokens *t;
    int64_t count, len;
    int rc;

    GPTQ_TRY(pick_tensor(ctx, path, st, &info));
    if (info.dtype != GPTQ_DTYPE_I32 && info.dtype != GPTQ_DTYPE_I64)
        return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                         "%s: tensor '%.200s' has dtype %s; token ids must be I32 or I64", path,
                         info.name, gptq_dtype_name(info.dtype));
    if (info.ndim != 1 && info.ndim != 2)
        return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                         "%s: tensor '%.200s' has %d dimensions; token ids need 1 or 2", path,
                         info.name, (int)info.ndim);
    if (info.numel == 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: tensor '%.200s' is empty", path,
                         info.name);
    count = info.ndim == 2 ? info.shape[0] : 1;
    len = info.ndim == 2 ? info.shape[1] : info.shape[0];
    GPTQ_TRY(tokens_new(ctx, count, info.numel, &t));
    /* The reader converts I64 and refuses values outside int32 (MALFORMED). */
    rc = gptq_safetensors_read_i32(ctx, st, info.name, t->ids, (size_t)info.numel);
    for (int64_t i = 0; rc == GPTQ_OK && i < info.numel; i++)
        if (t->ids[i] < 0)
            rc = GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                           "%s: tensor '%.200s': element %lld is a negative token id (%d)", path,
                           info.name, (long long)i, (int)t->ids[i]);
    if (rc != GPTQ_OK) {
        gptq_tokens_free(t);
        return rc;
    }
    for (int64_t s = 0; s < count; s++)
        t->start[s + 1] = (s + 1) * len;
    *out = t;
    return GPTQ_OK;
}

/* ---- load ------------------------------------------------------------------------ */

static int read_file(gptq_ctx *ctx, const char *path, unsigned char **buf, size_t *size)
{
    struct stat sb;
    FILE *f = fopen(path, "rb");
    int rc = GPTQ_OK;

    *buf = NULL;
    if (!f)
        return GPTQ_FAIL(ctx, errno == ENOENT ? GPTQ_ERR_NOT_FOUND : GPTQ_ERR_IO,
                         "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fileno(f), &sb) != 0)
        rc = GPTQ_FAIL(ctx, GPTQ_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        rc = GPTQ_FAIL(ctx, GPTQ_ERR_IO, "%s: not a regular file", path);
    else if (sb.st_size == 0)
        rc = GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: empty file, no tokens", path);
    else if ((*buf = gptq__alloc(ctx, (size_t)sb.st_size, "token file")) == NULL)
        rc = GPTQ_ERR_OUT_OF_MEMORY;
    else if (fread(*buf, 1, (size_t)sb.st_size, f) != (size_t)sb.st_size)
        rc = GPTQ_FAIL(ctx, GPTQ_ERR_IO, "%s: short read", path);
    fclose(f);
    if (rc != GPTQ_OK) {
        gptq__free(*buf);
        *buf = NULL;
        return rc;
    }
    *size = (size_t)sb.st_size;
    return GPTQ_OK;
}

static int looks_json(const unsigned char *buf, size_t size)
{
    size_t i = 0;
    while (i < size && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r'))
        i++;
    return i < size && buf[i] == '[';
}

/* u64 header length inside the file, header starting with '{': cheap enough to keep
 * AUTO from copying every large text file into a safetensors reader. */
static int looks_safetensors(const unsigned char *buf, size_t size)
{
    uint64_t n = 0;
    if (size < 10)
        return 0;
    for (int b = 7; b >= 0; b--)
        n = n << 8 | buf[b];
    return n >= 2 && n <= size - 8 && buf[8] == '{';
}

int gptq_tokens_load(gptq_ctx *ctx, const char *path, int32_t kind, gptq_tokens **out)
{
    unsigned char *buf;
    size_t size = 0;
    int rc = GPTQ_OK, done = 0; /* done: read as ids, or failed as ids */

    if (!out)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_tokens_load: out is NULL");
    *out = NULL;
    if (!path)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_tokens_load: path is NULL");
    if (kind != GPTQ_TOKENS_AUTO && kind != GPTQ_TOKENS_BYTES && kind != GPTQ_TOKENS_IDS)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_tokens_load: kind %d is not a GPTQ_TOKENS_* value", (int)kind);
    GPTQ_TRY(read_file(ctx, path, &buf, &size));
    if (kind != GPTQ_TOKENS_BYTES && looks_json(buf, size)) {
        json_error_t jerr;
        json_t *root = json_loadb((const char *)buf, size, 0, &jerr);
        if (root) {
            done = 1;
            rc = from_json(ctx, path, root, out);
            json_decref(root);
        } else if (kind == GPTQ_TOKENS_IDS) {
            done = 1;
            rc = GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: line %d, column %d: %s", path,
                           jerr.line, jerr.column, jerr.text);
        }
    } else if (kind == GPTQ_TOKENS_IDS ||
               (kind == GPTQ_TOKENS_AUTO && looks_safetensors(buf, size))) {
        gptq_safetensors *st = NULL;
        /* An AUTO probe that fails means text, not an error: it records nothing. */
        if (gptq_safetensors_open(kind == GPTQ_TOKENS_IDS ? ctx : NULL, path, &st) == GPTQ_OK) {
            done = 1;
            rc = from_safetensors(ctx, path, st, out);
            gptq_safetensors_free(st);
        } else if (kind == GPTQ_TOKENS_IDS) {
            char why[GPTQ_ERRMSG_SIZE];
            snprintf(why, sizeof why, "%s", gptq_ctx_last_error(ctx));
            done = 1;
            rc = GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                           "%s: neither a JSON array of token ids nor a safetensors file (%s)",
                           path, why);
        }
    }
    if (!done)
        rc = from_bytes(ctx, buf, size, out);
    gptq__free(buf);
    return rc;
}

int gptq_tokens_from_ids(gptq_ctx *ctx, const int32_t *ids, int64_t n, gptq_tokens **out)
{
    gptq_tokens *t;

    if (!out)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_tokens_from_ids: out is NULL");
    *out = NULL;
    if (!ids || n < 1)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_tokens_from_ids: need ids and n >= 1 (n is %lld)", (long long)n);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0)
            return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                             "gptq_tokens_from_ids: ids[%lld] = %d is negative", (long long)i,
                             (int)ids[i]);
    GPTQ_TRY(tokens_new(ctx, 1, n, &t));
    memcpy(t->ids, ids, (size_t)n * sizeof *ids);
    t->start[1] = n;
    *out = t;
    return GPTQ_OK;
}

void gptq_tokens_free(gptq_tokens *t)
{
    if (!t)
        return;
    gptq__free(t->ids);
    gptq__free(t->start);
    gptq__free(t);
}

int64_t gptq_tokens_count(const gptq_tokens *t) { return t ? t->count : 0; }

int64_t gptq_tokens_total(const gptq_tokens *t) { return t ? t->start[t->count] : 0; }

const int32_t *gptq_tokens_sequence(const gptq_tokens *t, int64_t i, int64_t *len)
{
    if (!t || i < 0 || i >= t->count) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = t->start[i + 1] - t->start[i];
    return t->ids + t->start[i];
}
