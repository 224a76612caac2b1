/*
 * safetensors writer: collect tensors by reference, then write them in one go.
 *
 * The file is written to a temporary beside the destination (mkstemp, same directory
 * so that rename() cannot cross file systems), flushed to disk with fsync, then
 * renamed over the destination. rename() is atomic on POSIX file systems, so a reader
 * sees either the old file or the complete new one, and a failure at any step leaves
 * the destination untouched and removes the temporary.
 *
 * Layout follows the reference writer (FORMATS.md §7.4): `__metadata__` first, tensors
 * by descending element size then name, compact JSON padded with spaces so the data
 * starts at a multiple of 8; every tensor is then naturally aligned in the file.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "gptq/safetensors.h"
#include "internal.h"

/* Kept equal to the reader's limits so that everything written can be read back. */
#define ST_MAX_HEADER 100000000u
#define ST_MAX_TENSORS (1 << 20)
#define ST_MAX_NAME 4096

typedef struct st_item {
    char *name;
    int32_t dtype;
    int32_t ndim;
    int64_t shape[GPTQ_ST_MAX_DIMS];
    const void *data; /* the caller's, valid until write() returns */
    size_t nbytes;
} st_item;

struct gptq_safetensors_writer {
    st_item *items;
    size_t count, cap;
    char **meta_keys, **meta_values; /* in the order first set */
    size_t meta_count, meta_cap;
    json_t *names; /* the set of tensor names, for O(1) duplicate checks */
};

/* ---- building ------------------------------------------------------------------- */

/* Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF), the same
 * rule the reader's JSON parser applies, so a name the writer accepts reads back. */
static int utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p, len, cp;
        if (c < 0x80) {
            p++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            len = 2, cp = c & 0x1F;
        else if (c >= 0xE0 && c <= 0xEF)
            len = 3, cp = c & 0x0F;
        else if (c >= 0xF0 && c <= 0xF4)
            len = 4, cp = c & 0x07;
        else
            return 0;
        for (unsigned k = 1; k < len; k++) {
            if ((p[k] & 0xC0) != 0x80) /* also stops at the terminating NUL */
                return 0;
            cp = cp << 6 | (p[k] & 0x3F);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        p += len;
    }
    return 1;
}

static char *dup_str(gptq_ctx *ctx, const char *s)
{
    size_t len = strlen(s);
    char *copy = gptq__alloc(ctx, len + 1, "safetensors writer string");
    if (copy)
        memcpy(copy, s, len + 1);
    return copy;
}

/* A copy of `count` elements of `elem` bytes in a new block of `cap` elements; the
 * caller frees the old block. (Not realloc: gptq__alloc memory is posix_memalign'd.) */
static void *grown_copy(gptq_ctx *ctx, const void *arr, size_t count, size_t cap, size_t elem)
{
    void *p = gptq__alloc(ctx, cap * elem, "safetensors writer table");
    if (p && count > 0)
        memcpy(p, arr, count * elem);
    return p;
}

int gptq_safetensors_writer_create(gptq_ctx *ctx, gptq_safetensors_writer **out)
{
    gptq_safetensors_writer *w;
    if (!out)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_safetensors_writer_create: out is NULL");
    *out = NULL;
    w = gptq__calloc(ctx, sizeof *w, "safetensors writer");
    if (!w)
        return GPTQ_ERR_OUT_OF_MEMORY;
    w->names = json_object();
    if (!w->names) {
        gptq__free(w);
        return GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY,
                         "out of memory creating a safetensors writer");
    }
    *out = w;
    return GPTQ_OK;
}

void gptq_safetensors_writer_free(gptq_safetensors_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->count; i++)
        gptq__free(w->items[i].name);
    for (size_t i = 0; i < w->meta_count; i++) {
        gptq__free(w->meta_keys[i]);
        gptq__free(w->meta_values[i]);
    }
    gptq__free(w->items);
    gptq__free(w->meta_keys);
    gptq__free(w->meta_values);
    json_decref(w->names);
    gptq__free(w);
}

int gptq_safetensors_writer_add(gptq_ctx *ctx, gptq_safetensors_writer *w, const char *name,
                                int32_t dtype, int32_t ndim, const int64_t *shape,
                                const void *data, size_t nbytes)
{
    const char *fn = "gptq_safetensors_writer_add";
    uint64_t numel = 1, bits = (uint64_t)gptq_dtype_bits(dtype);
    st_item *it;

    if (!w || !name || (ndim > 0 && !shape) || (!data && nbytes > 0))
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: w, name, shape or data is NULL", fn);
    if (name[0] == '\0' || strcmp(name, "__metadata__") == 0 || strlen(name) > ST_MAX_NAME ||
        !utf8_valid(name))
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "%s: invalid tensor name '%.200s' (empty, reserved, over %d bytes or "
                         "not UTF-8)",
                         fn, name, ST_MAX_NAME);
    if (json_object_get(w->names, name))
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: duplicate tensor name '%.200s'", fn,
                         name);
    if (w->count >= ST_MAX_TENSORS)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: more than %d tensors", fn,
                         ST_MAX_TENSORS);
    if (bits == 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: tensor '%.200s': unknown dtype %d",
                         fn, name, (int)dtype);
    if (ndim < 0 || ndim > GPTQ_ST_MAX_DIMS)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "%s: tensor '%.200s': ndim %d is outside 0..%d", fn, name, (int)ndim,
                         GPTQ_ST_MAX_DIMS);
    /* The same checked products the reader does, so the reader accepts the result. */
    for (int32_t d = 0; d < ndim; d++) {
        if (shape[d] < 0 || (shape[d] != 0 && numel > (uint64_t)INT64_MAX / (uint64_t)shape[d]))
            return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                             "%s: tensor '%.200s': shape[%d] = %lld is negative or overflows", fn,
                             name, (int)d, (long long)shape[d]);
        numel *= (uint64_t)shape[d];
    }
    if (numel > UINT64_MAX / bits || (numel * bits) % 8 != 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "%s: tensor '%.200s': %llu %s elements do not fill whole bytes", fn, name,
                         (unsigned long long)numel, gptq_dtype_name(dtype));
    if (numel * bits / 8 != (uint64_t)nbytes)
        return GPTQ_FAIL(ctx, GPTQ_ERR_SHAPE,
                         "%s: tensor '%.200s': %zu bytes given but %llu %s elements need %llu",
                         fn, name, nbytes, (unsigned long long)numel, gptq_dtype_name(dtype),
                         (unsigned long long)(numel * bits / 8));

    if (w->count == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        st_item *items = grown_copy(ctx, w->items, w->count, cap, sizeof *items);
        if (!items)
            return GPTQ_ERR_OUT_OF_MEMORY;
        gptq__free(w->items);
        w->items = items;
        w->cap = cap;
    }
    it = &w->items[w->count];
    memset(it, 0, sizeof *it);
    it->name = dup_str(ctx, name);
    if (!it->name)
        return GPTQ_ERR_OUT_OF_MEMORY;
    if (json_object_set_new(w->names, name, json_null()) != 0) {
        gptq__free(it->name);
        return GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    it->dtype = dtype;
    it->ndim = ndim;
    for (int32_t d = 0; d < ndim; d++)
        it->shape[d] = shape[d];
    it->data = data;
    it->nbytes = nbytes;
    w->count++;
    return GPTQ_OK;
}

int gptq_safetensors_writer_set_metadata(gptq_ctx *ctx, gptq_safetensors_writer *w,
                                         const char *key, const char *value)
{
    const char *fn = "gptq_safetensors_writer_set_metadata";
    char *v;

    if (!w || !key || !value)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: w, key or value is NULL", fn);
    if (!utf8_valid(key) || !utf8_valid(value))
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "%s: key '%.200s' or its value is not valid UTF-8", fn, key);
    v = dup_str(ctx, value);
    if (!v)
        return GPTQ_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; i < w->meta_count; i++) {
        if (strcmp(w->meta_keys[i], key) == 0) {
            gptq__free(w->meta_values[i]);
            w->meta_values[i] = v;
            return GPTQ_OK;
        }
    }
    if (w->meta_count == w->meta_cap) {
        size_t cap = w->meta_cap ? 2 * w->meta_cap : 16;
        char **keys = grown_copy(ctx, w->meta_keys, w->meta_count, cap, sizeof *keys);
        char **values = grown_copy(ctx, w->meta_values, w->meta_count, cap, sizeof *values);
        if (!keys || !values) {
            gptq__free(keys);
            gptq__free(values);
            gptq__free(v);
            return GPTQ_ERR_OUT_OF_MEMORY;
        }
        gptq__free(w->meta_keys);
        gptq__free(w->meta_values);
        w->meta_keys = keys;
        w->meta_values = values;
        w->meta_cap = cap;
    }
    w->meta_keys[w->meta_count] = dup_str(ctx, key);
    if (!w->meta_keys[w->meta_count]) {
        gptq__free(v);
        return GPTQ_ERR_OUT_OF_MEMORY;
    }
    w->meta_values[w->meta_count++] = v;
    return GPTQ_OK;
}

/* ---- writing ---------------------------------------------------------------------- */

/* Descending element size, then name: the reference writer's order, which puts every
 * tensor at an offset that is a multiple of its element size. */
static int cmp_layout(const void *pa, const void *pb)
{
    const st_item *a = *(const st_item *const *)pa, *b = *(const st_item *const *)pb;
    int32_t ba = gptq_dtype_bits(a->dtype), bb = gptq_dtype_bits(b->dtype);
    if (ba != bb)
        return ba > bb ? -1 : 1;
    return strcmp(a->name, b->name);
}

/* The header object in file order; NULL when jansson runs out of memory. Insertion
 * order is dump order in jansson >= 2.8 (JSON_PRESERVE_ORDER says so explicitly). */
static json_t *build_header(const gptq_safetensors_writer *w, st_item *const *order)
{
    json_t *root = json_object(), *meta = json_object();
    int bad = !root || !meta;
    uint64_t offset = 0;
    int has_format = 0;

    for (size_t i = 0; i < w->meta_count; i++)
        has_format |= strcmp(w->meta_keys[i], "format") == 0;
    /* Checkpoints carry "format": "pt" (FORMATS.md §4.4) unless the caller says otherwise. */
    if (!bad && !has_format)
        bad |= json_object_set_new(meta, "format", json_string("pt"));
    for (size_t i = 0; i < w->meta_count && !bad; i++)
        bad |= json_object_set_new(meta, w->meta_keys[i], json_string(w->meta_values[i]));
    if (!bad)
        bad |= json_object_set_new(root, "__metadata__", meta);
    else
        json_decref(meta);
    for (size_t i = 0; i < w->count && !bad; i++) {
        const st_item *it = order[i];
        json_t *entry = json_object(), *shape = json_array();
        bad |= !entry || !shape;
        for (int32_t d = 0; d < it->ndim && !bad; d++)
            bad |= json_array_append_new(shape, json_integer(it->shape[d]));
        bad |= json_object_set_new(entry, "dtype", json_string(gptq_dtype_name(it->dtype)));
        bad |= json_object_set_new(entry, "shape", shape);
        bad |= json_object_set_new(entry, "data_offsets",
                                   json_pack("[II]", (json_int_t)offset,
                                             (json_int_t)(offset + it->nbytes)));
        bad |= json_object_set_new(root, it->name, entry);
        offset += it->nbytes;
    }
    if (bad) {
        json_decref(root);
        return NULL;
    }
    return root;
}

/* Write all of buf, resuming after short writes and signals. 0 or an errno value. */
static int write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* mkstemp creates files with mode 0600; a checkpoint should get the mode any other
 * new file gets, 0666 less the umask. */
static mode_t new_file_mode(void)
{
    return (mode_t)(0666u & ~gptq__umask());
}

/* After the rename, flush the directory entry too, so that a crash right after a
 * successful return cannot lose the new name. Best effort: the file is complete and
 * in place by now, so a failure here is not reported. */
static void sync_parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    int fd;

    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) < sizeof dir)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else
        return;
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/* Header then tensors into fd. 0 or an errno value. */
static int write_contents(int fd, const gptq_safetensors_writer *w, st_item *const *order,
                          const uint8_t *head, size_t head_len)
{
    int err = write_all(fd, head, head_len);
    for (size_t i = 0; i < w->count && !err; i++)
        err = write_all(fd, order[i]->data, order[i]->nbytes);
    if (!err && fsync(fd) != 0)
        err = errno;
    return err;
}

int gptq_safetensors_writer_write(gptq_ctx *ctx, gptq_safetensors_writer *w, const char *path)
{
    st_item **order = NULL;
    json_t *header = NULL;
    char *json = NULL, *tmp = NULL;
    uint8_t *head = NULL;
    size_t json_len = 0, n, tmp_len;
    int fd = -1, err = 0, rc = GPTQ_OK;
    const char *step = "";

    if (!w || !path || !path[0])
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_safetensors_writer_write: w or path is NULL or empty");
    /* The strings alone are a lower bound on the header size (escaping only adds), so
     * a hopeless header is refused before a copy of it is built. */
    for (size_t i = 0; i < w->meta_count; i++)
        json_len += strlen(w->meta_keys[i]) + strlen(w->meta_values[i]);
    for (size_t i = 0; i < w->count; i++)
        json_len += strlen(w->items[i].name);
    if (json_len > ST_MAX_HEADER)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "%s: the header would be over %zu bytes, over the %u that readers "
                         "accept",
                         path, json_len, ST_MAX_HEADER);
    order = gptq__alloc(ctx, w->count * sizeof *order, "safetensors writer order");
    if (!order)
        return GPTQ_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; i < w->count; i++)
        order[i] = &w->items[i];
    qsort(order, w->count, sizeof *order, cmp_layout);

    header = build_header(w, order);
    json = header ? json_dumps(header, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (!json) {
        rc = GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY, "%s: out of memory building the header", path);
        goto done;
    }
    /* N includes the space padding that puts the data at a multiple of 8. */
    json_len = strlen(json);
    n = (json_len + 7) & ~(size_t)7;
    if (n > ST_MAX_HEADER) {
        rc = GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                       "%s: the header would be %zu bytes, over the %u that readers accept",
                       path, n, ST_MAX_HEADER);
        goto done;
    }
    head = gptq__alloc(ctx, 8 + n, "safetensors header");
    tmp_len = strlen(path) + sizeof ".tmp-XXXXXX";
    tmp = gptq__alloc(ctx, tmp_len, "safetensors temporary name");
    if (!head || !tmp) {
        rc = GPTQ_ERR_OUT_OF_MEMORY;
        goto done;
    }
    for (int b = 0; b < 8; b++)
        head[b] = (uint8_t)((uint64_t)n >> (8 * b));
    memcpy(head + 8, json, json_len);
    memset(head + 8 + json_len, ' ', n - json_len);

    /* The temporary sits beside `path`, so rename() stays within one file system. */
    snprintf(tmp, tmp_len, "%s.tmp-XXXXXX", path);
    fd = mkstemp(tmp);
    if (fd < 0) {
        err = errno;
        step = "cannot create a temporary file beside it";
        tmp[0] = '\0'; /* nothing to remove */
        goto io_error;
    }
    if (fchmod(fd, new_file_mode()) != 0) {
        err = errno;
        step = "cannot set the mode of the temporary file";
        goto io_error;
    }
    err = write_contents(fd, w, order, head, 8 + n);
    if (err) {
        step = "cannot write the temporary file";
        goto io_error;
    }
    if (close(fd) != 0) {
        fd = -1;
        err = errno;
        step = "cannot close the temporary file";
        goto io_error;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        err = errno;
        step = "cannot rename the temporary file over it";
        goto io_error;
    }
    sync_parent_dir(path);
    goto done;

io_error:
    rc = GPTQ_FAIL(ctx, GPTQ_ERR_IO, "%s: %s: %s", path, step, strerror(err));
    if (fd >= 0)
        close(fd);
    if (tmp && tmp[0])
        unlink(tmp);
done:
    gptq__free(order);
    gptq__free(head);
    gptq__free(tmp);
    free(json); /* json_dumps allocates with jansson's allocator, malloc by default */
    json_decref(header);
    return rc;
}
