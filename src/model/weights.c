/*
 * The tensors of a model directory: model.safetensors, or the shards listed by
 * model.safetensors.index.json ({"weight_map": {tensor name: shard file}}), every file
 * memory-mapped by the safetensors reader.
 *
 * transformers looks for model.safetensors first and only then for the index, so a
 * directory that holds both is read as a single file here too. One sorted table maps
 * every tensor name to the file that holds it; lookups are a binary search.
 *
 * Messages name the file relative to the model directory ("model.safetensors: tensor
 * 'X' has shape [768, 255], config.json implies [768, 256]"): the user knows which
 * directory they opened, and long paths would crowd out the tensor name.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "model.h"

#define WT_SINGLE "model.safetensors"
#define WT_INDEX "model.safetensors.index.json"

typedef struct wt_entry {
    const char *name; /* owned by the reader of its file */
    int32_t file;     /* index into files / st */
} wt_entry;

struct gptq__weights {
    const char *source;     /* WT_SINGLE or WT_INDEX, for "no such tensor" messages */
    int32_t nfiles;
    char **files;           /* file names inside the directory (owned) */
    gptq_safetensors **st;  /* one reader per file */
    wt_entry *entries;      /* sorted by name */
    int64_t count;
};

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const wt_entry *)a)->name, ((const wt_entry *)b)->name);
}

static const wt_entry *lookup(const gptq__weights *w, const char *name)
{
    wt_entry probe;
    if (!w || !name)
        return NULL;
    probe.name = name;
    probe.file = 0;
    return bsearch(&probe, w->entries, (size_t)w->count, sizeof *w->entries, cmp_entry);
}

/* Open <dir>/<file> as reader number w->nfiles. */
static int add_file(gptq_ctx *ctx, gptq__weights *w, const char *dir, const char *file)
{
    char path[4096];
    int32_t i = w->nfiles;

    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, file) >= sizeof path)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: path too long", file);
    w->files[i] = gptq__alloc(ctx, strlen(file) + 1, "weight file name");
    if (!w->files[i])
        return GPTQ_ERR_OUT_OF_MEMORY;
    strcpy(w->files[i], file);
    w->nfiles++; /* counted now so that free() releases the name if open fails */
    return gptq_safetensors_open(ctx, path, &w->st[i]);
}

static int alloc_files(gptq_ctx *ctx, gptq__weights *w, size_t nfiles)
{
    w->files = gptq__calloc(ctx, nfiles * sizeof *w->files, "weight file table");
    w->st = gptq__calloc(ctx, nfiles * sizeof *w->st, "weight file table");
    return w->files && w->st ? GPTQ_OK : GPTQ_ERR_OUT_OF_MEMORY;
}

static int alloc_entries(gptq_ctx *ctx, gptq__weights *w, size_t ntensors)
{
    w->entries = gptq__alloc(ctx, (ntensors ? ntensors : 1) * sizeof *w->entries,
                             "tensor table");
    return w->entries ? GPTQ_OK : GPTQ_ERR_OUT_OF_MEMORY;
}

static int open_single(gptq_ctx *ctx, gptq__weights *w, const char *dir)
{
    gptq_tensor_info info;

    w->source = WT_SINGLE;
    GPTQ_TRY(alloc_files(ctx, w, 1));
    GPTQ_TRY(add_file(ctx, w, dir, WT_SINGLE));
    w->count = gptq_safetensors_count(w->st[0]);
    GPTQ_TRY(alloc_entries(ctx, w, (size_t)w->count));
    for (int64_t i = 0; i < w->count; i++) {
        gptq_safetensors_info(w->st[0], i, &info);
        w->entries[i].name = info.name;
        w->entries[i].file = 0;
    }
    return GPTQ_OK;
}

/* A shard must be a plain file name: an index must not reach outside the directory. */
static int valid_shard_name(const char *s)
{
    return s[0] != '\0' && strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int open_sharded(gptq_ctx *ctx, gptq__weights *w, const char *dir, const json_t *root)
{
    const json_t *map = json_object_get(root, "weight_map"), *value;
    const char *name;
    gptq_tensor_info info;

    w->source = WT_INDEX;
    if (!json_is_object(map) || json_object_size(map) == 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                         WT_INDEX ": weight_map must be a non-empty object");
    GPTQ_TRY(alloc_files(ctx, w, json_object_size(map)));
    GPTQ_TRY(alloc_entries(ctx, w, json_object_size(map)));
    json_object_foreach((json_t *)map, name, value) {
        const char *file = json_string_value(value);
        int32_t f = 0;
        int rc;

        if (!file || !valid_shard_name(file))
            return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                             WT_INDEX ": weight_map['%.200s'] is not a file name in the "
                             "model directory",
                             name);
        /* Checkpoints have tens of shards at most; a linear scan is fine. */
        while (f < w->nfiles && strcmp(w->files[f], file) != 0)
            f++;
        if (f == w->nfiles) {
            rc = add_file(ctx, w, dir, file);
            if (rc == GPTQ_ERR_NOT_FOUND)
                return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_FOUND,
                                 WT_INDEX ": shard '%.200s' (holding tensor '%.200s') does not "
                                 "exist",
                                 file, name);
            GPTQ_TRY(rc);
        }
        if (gptq_safetensors_find(w->st[f], name, &info) != GPTQ_OK)
            return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                             WT_INDEX ": tensor '%.200s' is mapped to %.200s, which does not "
                             "hold it",
                             name, file);
        w->entries[w->count].name = info.name;
        w->entries[w->count].file = f;
        w->count++;
    }
    return GPTQ_OK;
}

int gptq__weights_open(gptq_ctx *ctx, const char *dir, gptq__weights **out)
{
    char path[4096];
    struct stat sb;
    gptq__weights *w;
    int rc;

    if (!dir || !out)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq__weights_open: NULL argument");
    *out = NULL;
    if (strlen(dir) + sizeof WT_INDEX + 2 > sizeof path)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%.200s...: path too long", dir);
    w = gptq__calloc(ctx, sizeof *w, "weights");
    if (!w)
        return GPTQ_ERR_OUT_OF_MEMORY;
    snprintf(path, sizeof path, "%s/" WT_SINGLE, dir);
    if (stat(path, &sb) == 0) {
        rc = open_single(ctx, w, dir);
    } else {
        json_error_t jerr;
        json_t *root;
        snprintf(path, sizeof path, "%s/" WT_INDEX, dir);
        if (stat(path, &sb) != 0) {
            gptq__weights_free(w);
            return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_FOUND,
                             "%s: neither " WT_SINGLE " nor " WT_INDEX " exists", dir);
        }
        root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
        if (!root)
            rc = GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, WT_INDEX ": line %d, column %d: %s",
                           jerr.line, jerr.column, jerr.text);
        else
            rc = open_sharded(ctx, w, dir, root);
        json_decref(root);
    }
    if (rc != GPTQ_OK) {
        gptq__weights_free(w);
        return rc;
    }
    qsort(w->entries, (size_t)w->count, sizeof *w->entries, cmp_entry);
    *out = w;
    return GPTQ_OK;
}

void gptq__weights_free(gptq__weights *w)
{
    if (!w)
        return;
    for (int32_t i = 0; i < w->nfiles; i++) {
        gptq_safetensors_free(w->st[i]);
        gptq__free(w->files[i]);
    }
    gptq__free(w->st);
    gptq__free(w->files);
    gptq__free(w->entries);
    gptq__free(w);
}

int gptq__weights_has(const gptq__weights *w, const char *name, gptq_tensor_info *info)
{
    const wt_entry *e = lookup(w, name);
    if (!e)
        return 0;
    if (info)
        gptq_safetensors_find(w->st[e->file], name, info);
    return 1;
}

const char *gptq__weights_file_of(const gptq__weights *w, const char *name)
{
    const wt_entry *e = lookup(w, name);
    return e ? w->files[e->file] : NULL;
}

int64_t gptq__weights_count(const gptq__weights *w) { return w ? w->count : 0; }

const char *gptq__weights_name(const gptq__weights *w, int64_t i)
{
    return w && i >= 0 && i < w->count ? w->entries[i].name : NULL;
}

/* ---- typed reads ----------------------------------------------------------------- */

/* "[768, 256]"; cut short (which only shortens a message) past the buffer. */
static const char *shape_str(char *buf, size_t size, int32_t ndim, const int64_t *shape)
{
    size_t n = (size_t)snprintf(buf, size, "[");
    for (int32_t d = 0; d < ndim && n < size; d++)
        n += (size_t)snprintf(buf + n, size - n, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (n < size)
        snprintf(buf + n, size - n, "]");
    return buf;
}

/* Find `name` and compare its shape with the expected one. The dtype is checked by the
 * caller in between (a dtype message is the more useful one when both are wrong). */
static int find(gptq_ctx *ctx, const gptq__weights *w, const char *name, gptq_tensor_info *info,
                const wt_entry **entry)
{
    const wt_entry *e = lookup(w, name);
    if (!e)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_FOUND, "%s: no tensor '%.200s'",
                         w ? w->source : WT_SINGLE, name ? name : "(null)");
    gptq_safetensors_find(w->st[e->file], name, info);
    *entry = e;
    return GPTQ_OK;
}

static int check_shape(gptq_ctx *ctx, const char *file, const gptq_tensor_info *info,
                       int32_t ndim, const int64_t *shape)
{
    char have[128], want[128];
    int same = info->ndim == ndim;
    for (int32_t d = 0; same && d < ndim; d++)
        same = info->shape[d] == shape[d];
    if (same)
        return GPTQ_OK;
    return GPTQ_FAIL(ctx, GPTQ_ERR_SHAPE,
                     "%s: tensor '%.200s' has shape %s, config.json implies %s", file, info->name,
                     shape_str(have, sizeof have, info->ndim, info->shape),
                     shape_str(want, sizeof want, ndim, shape));
}

/* dst may be NULL: then only the dtype and shape are checked (gptq_model_open
 * validates every tensor this way before reading any). */
int gptq__weights_read_f32(gptq_ctx *ctx, const gptq__weights *w, const char *name,
                           int32_t ndim, const int64_t *shape, float *dst)
{
    gptq_tensor_info info;
    const wt_entry *e = NULL;
    const char *file;

    GPTQ_TRY(find(ctx, w, name, &info, &e));
    file = w->files[e->file];
    if (info.dtype != GPTQ_DTYPE_F32 && info.dtype != GPTQ_DTYPE_F16 &&
        info.dtype != GPTQ_DTYPE_BF16)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "%s: tensor '%.200s' has dtype %s; F32, F16 and BF16 are supported",
                         file, name, gptq_dtype_name(info.dtype));
    GPTQ_TRY(check_shape(ctx, file, &info, ndim, shape));
    if (!dst)
        return GPTQ_OK;
    /* The reader converts with memcpy per element: tensor data need not be aligned.
     * The converted copy is what the model keeps: the mapped bytes leave the resident
     * set, which so holds one layer at a time however large the files are. */
    GPTQ_TRY(gptq_safetensors_read_f32(ctx, w->st[e->file], name, dst, (size_t)info.numel));
    gptq__safetensors_release(w->st[e->file], info.data, info.nbytes);
    return GPTQ_OK;
}

/* As read_f32: dst NULL only checks. I32 also accepts U32 (same bits): producers store
 * packed GPTQ words as either. */
int gptq__weights_read_raw(gptq_ctx *ctx, const gptq__weights *w, const char *name,
                           int32_t dtype, int32_t ndim, const int64_t *shape, void *dst)
{
    gptq_tensor_info info;
    const wt_entry *e = NULL;
    const char *file;

    GPTQ_TRY(find(ctx, w, name, &info, &e));
    file = w->files[e->file];
    if (info.dtype != dtype && !(dtype == GPTQ_DTYPE_I32 && info.dtype == GPTQ_DTYPE_U32))
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "%s: tensor '%.200s' has dtype %s; %s is expected", file, name,
                         gptq_dtype_name(info.dtype), gptq_dtype_name(dtype));
    GPTQ_TRY(check_shape(ctx, file, &info, ndim, shape));
    if (dst && info.nbytes > 0) {
        memcpy(dst, info.data, info.nbytes);
        gptq__safetensors_release(w->st[e->file], info.data, info.nbytes);
    }
    return GPTQ_OK;
}
