/*
 * safetensors reader: map (or copy) a file image, validate its header, hand out tensors.
 *
 * Nothing is handed out before the whole header has passed every rule the reference
 * reader enforces (huggingface/safetensors `SafeTensors::read_metadata` and
 * `Metadata::validate`, listed in FORMATS.md §7.3) and the stricter ones of our own
 * (duplicate keys, caps on tensor count and name length for fuzz safety). Every
 * failure is GPTQ_ERR_MALFORMED with a message that names the file and the rule.
 *
 * The JSON tree stays alive for the reader's lifetime: tensor names and metadata
 * strings point into it, which saves copying them.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "gptq/safetensors.h"
#include "internal.h"

/* Tensor data is copied with memcpy into host integers and floats, which is only right
 * on a little-endian host (the format is little-endian). */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the safetensors reader assumes a little-endian host"
#endif

#define ST_MAX_HEADER 100000000u  /* the reference reader's limit on N */
#define ST_MAX_TENSORS (1 << 20)  /* ours: far above any checkpoint, bounds the work */
#define ST_MAX_NAME 4096          /* ours: bytes in a tensor name */

typedef struct st_entry {
    const char *name; /* owned by the JSON tree */
    int32_t dtype;
    int32_t ndim;
    int64_t shape[GPTQ_ST_MAX_DIMS];
    uint64_t begin, end; /* relative to the byte buffer, END exclusive */
} st_entry;

struct gptq_safetensors {
    char *label;            /* the path, or "<memory>": every message starts with it */
    const uint8_t *image;   /* the whole file */
    size_t size;
    int mapped;             /* 1: munmap the image, 0: gptq__free it */
    const uint8_t *buffer;  /* image + 8 + N */
    json_t *header;
    st_entry *entries;      /* data order */
    int64_t count;
    const st_entry **by_name; /* sorted by strcmp, for gptq_safetensors_find */
    const char **meta_keys, **meta_values;
    int64_t meta_count;
};

/* ---- validation ----------------------------------------------------------------- */

/* Record a MALFORMED failure as "<file>: [tensor '<name>': ]<detail>". Tensor names are
 * cut so that the detail after them still fits the context's message buffer. */
#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static int bad(gptq_ctx *ctx, const gptq_safetensors *st, const char *tensor, const char *fmt, ...)
{
    char detail[GPTQ_ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (tensor)
        return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: tensor '%.200s': %s", st->label, tensor,
                         detail);
    return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s: %s", st->label, detail);
}

/* "[2, 3] F32" for messages; a long shape is cut, which is fine for a message. */
static const char *shape_str(char *buf, size_t size, const st_entry *e)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int32_t d = 0; d < e->ndim && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", d ? ", " : "",
                                 (long long)e->shape[d]);
    if (used < size)
        snprintf(buf + used, size - used, "] %s", gptq_dtype_name(e->dtype));
    return buf;
}

/* A JSON integer >= 0 (jansson gives floats their own type, so 2.0 is rejected as the
 * reference reader rejects it). */
static int get_uint(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int parse_metadata(gptq_ctx *ctx, gptq_safetensors *st, json_t *meta)
{
    const char *key;
    json_t *value;
    size_t n;

    if (!json_is_object(meta))
        return bad(ctx, st, NULL, "__metadata__ is not an object");
    n = json_object_size(meta);
    st->meta_keys = gptq__alloc(ctx, n * sizeof *st->meta_keys, "safetensors metadata");
    st->meta_values = gptq__alloc(ctx, n * sizeof *st->meta_values, "safetensors metadata");
    if (!st->meta_keys || !st->meta_values)
        return GPTQ_ERR_OUT_OF_MEMORY;
    json_object_foreach(meta, key, value) {
        if (!json_is_string(value))
            return bad(ctx, st, NULL, "__metadata__ value of '%.200s' is not a string", key);
        st->meta_keys[st->meta_count] = key;
        st->meta_values[st->meta_count] = json_string_value(value);
        st->meta_count++;
    }
    return GPTQ_OK;
}

/* One tensor entry, rule 7: known dtype, shape of integers >= 0, two offsets >= 0.
 * Fields other than these three are ignored, as serde ignores them. */
static int parse_entry(gptq_ctx *ctx, const gptq_safetensors *st, const char *name,
                       const json_t *v, st_entry *e)
{
    const json_t *dtype = json_object_get(v, "dtype");
    const json_t *shape = json_object_get(v, "shape");
    const json_t *offsets = json_object_get(v, "data_offsets");
    size_t ndim;

    if (strlen(name) > ST_MAX_NAME)
        return bad(ctx, st, NULL, "tensor name of %zu bytes is longer than the %d-byte limit",
                   strlen(name), ST_MAX_NAME);
    e->name = name;
    if (!json_is_object(v))
        return bad(ctx, st, name, "entry is not an object");
    if (!json_is_string(dtype))
        return bad(ctx, st, name, "dtype is missing or not a string");
    e->dtype = gptq_dtype_from_name(json_string_value(dtype));
    if (e->dtype == GPTQ_DTYPE_UNKNOWN)
        return bad(ctx, st, name, "unknown dtype '%.32s'", json_string_value(dtype));
    if (!json_is_array(shape))
        return bad(ctx, st, name, "shape is missing or not an array");
    ndim = json_array_size(shape);
    if (ndim > GPTQ_ST_MAX_DIMS)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "%s: tensor '%.200s': %zu dimensions, libgptq handles at most %d",
                         st->label, name, ndim, GPTQ_ST_MAX_DIMS);
    e->ndim = (int32_t)ndim;
    for (size_t d = 0; d < ndim; d++) {
        uint64_t dim;
        if (get_uint(json_array_get(shape, d), &dim) != 0)
            return bad(ctx, st, name, "shape[%zu] is not a non-negative integer", d);
        e->shape[d] = (int64_t)dim;
    }
    if (!json_is_array(offsets) || json_array_size(offsets) != 2 ||
        get_uint(json_array_get(offsets, 0), &e->begin) != 0 ||
        get_uint(json_array_get(offsets, 1), &e->end) != 0)
        return bad(ctx, st, name, "data_offsets must be an array of two non-negative integers");
    return GPTQ_OK;
}

/* Data order: (BEGIN, END) as the reference sorts, then name so that two empty
 * tensors at the same offset still come out in a fixed order. */
static int cmp_offsets(const void *pa, const void *pb)
{
    const st_entry *a = pa, *b = pb;
    if (a->begin != b->begin)
        return a->begin < b->begin ? -1 : 1;
    if (a->end != b->end)
        return a->end < b->end ? -1 : 1;
    return strcmp(a->name, b->name);
}

static int cmp_names(const void *pa, const void *pb)
{
    const st_entry *const *a = pa, *const *b = pb;
    return strcmp((*a)->name, (*b)->name);
}

/* Rules 8-10: the tensors tile [0, buffer size) exactly, and each one's byte range is
 * the checked product shape x element size. */
static int check_layout(gptq_ctx *ctx, gptq_safetensors *st, size_t buffer_size)
{
    unsigned long long pos = 0;
    char shape[96];

    qsort(st->entries, (size_t)st->count, sizeof *st->entries, cmp_offsets);
    for (int64_t i = 0; i < st->count; i++) {
        const st_entry *e = &st->entries[i];
        unsigned long long begin = e->begin, end = e->end, numel = 1, bits;

        if (end < begin || begin != pos)
            return bad(ctx, st, e->name,
                       "invalid offset: data_offsets [%llu, %llu] %s (the previous tensor "
                       "ends at %llu)",
                       begin, end,
                       end < begin   ? "end before they begin"
                       : begin > pos ? "leave a gap"
                                     : "overlap another tensor",
                       pos);
        for (int32_t d = 0; d < e->ndim; d++) {
            uint64_t dim = (uint64_t)e->shape[d];
            if (dim != 0 && numel > (uint64_t)INT64_MAX / dim)
                return bad(ctx, st, e->name, "shape %s overflows the element count",
                           shape_str(shape, sizeof shape, e));
            numel *= dim;
        }
        bits = (uint64_t)gptq_dtype_bits(e->dtype);
        if (numel > UINT64_MAX / bits)
            return bad(ctx, st, e->name, "shape %s overflows the size in bits",
                       shape_str(shape, sizeof shape, e));
        bits *= numel;
        if (bits % 8 != 0)
            return bad(ctx, st, e->name, "shape %s holds %llu bits, not whole bytes",
                       shape_str(shape, sizeof shape, e), bits);
        if (end - begin != bits / 8)
            return bad(ctx, st, e->name, "data_offsets [%llu, %llu] but shape %s needs %llu bytes",
                       begin, end, shape_str(shape, sizeof shape, e), bits / 8);
        pos = end;
    }
    /* Rule 10: no missing bytes and no trailing ones (so no polyglot files). */
    if (pos != buffer_size)
        return bad(ctx, st, NULL, "%s: the tensors end at byte %llu of the data buffer, "
                   "which holds %zu bytes",
                   pos > buffer_size ? "incomplete buffer" : "trailing bytes", pos, buffer_size);
    return GPTQ_OK;
}

/* Rules 1-10 on st->image. On failure the caller frees st (which frees the tree). */
static int parse(gptq_ctx *ctx, gptq_safetensors *st)
{
    unsigned long long n = 0;
    json_error_t jerr;
    json_t *meta = NULL, *value;
    const char *key;
    int rc;

    if (st->size < 8)
        return bad(ctx, st, NULL, "header too small: the file has %zu bytes, fewer than the 8 "
                   "of the header length", st->size);
    for (int b = 7; b >= 0; b--)
        n = n << 8 | st->image[b];
    if (n > ST_MAX_HEADER)
        return bad(ctx, st, NULL, "header too large: %llu bytes (the limit is %u)", n,
                   ST_MAX_HEADER);
    if (n > st->size - 8)
        return bad(ctx, st, NULL, "invalid header length: %llu bytes, but only %zu follow the "
                   "length field", n, st->size - 8);

    /* jansson checks UTF-8 (rule 4), accepts surrounding whitespace and nothing else
     * after the value (rule 5), rejects NUL bytes in keys, and with this flag rejects
     * duplicate keys, which serde would silently merge. */
    st->header = json_loadb((const char *)st->image + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!st->header)
        return bad(ctx, st, NULL, "invalid JSON header: %s (header byte %d, line %d, column %d)",
                   jerr.text, jerr.position, jerr.line, jerr.column);
    if (!json_is_object(st->header))
        return bad(ctx, st, NULL, "the header is not a JSON object");
    if (json_object_size(st->header) > ST_MAX_TENSORS)
        return bad(ctx, st, NULL, "%zu tensors, more than the limit of %d",
                   json_object_size(st->header), ST_MAX_TENSORS);

    st->entries = gptq__calloc(ctx, json_object_size(st->header) * sizeof *st->entries,
                               "safetensors tensor table");
    if (!st->entries)
        return GPTQ_ERR_OUT_OF_MEMORY;
    json_object_foreach(st->header, key, value) {
        if (strcmp(key, "__metadata__") == 0) {
            meta = value;
            continue;
        }
        rc = parse_entry(ctx, st, key, value, &st->entries[st->count]);
        if (rc != GPTQ_OK)
            return rc;
        st->count++;
    }
    if (meta) {
        rc = parse_metadata(ctx, st, meta);
        if (rc != GPTQ_OK)
            return rc;
    }
    rc = check_layout(ctx, st, st->size - 8 - (size_t)n);
    if (rc != GPTQ_OK)
        return rc;
    st->buffer = st->image + 8 + n;

    st->by_name = gptq__alloc(ctx, (size_t)st->count * sizeof *st->by_name, "safetensors index");
    if (!st->by_name)
        return GPTQ_ERR_OUT_OF_MEMORY;
    for (int64_t i = 0; i < st->count; i++)
        st->by_name[i] = &st->entries[i];
    qsort(st->by_name, (size_t)st->count, sizeof *st->by_name, cmp_names);
    return GPTQ_OK;
}

/* ---- open / free ------------------------------------------------------------------ */

static gptq_safetensors *reader_new(gptq_ctx *ctx, const char *label)
{
    gptq_safetensors *st = gptq__calloc(ctx, sizeof *st, "safetensors reader");
    if (st)
        st->label = gptq__alloc(ctx, strlen(label) + 1, "safetensors file name");
    if (!st || !st->label) {
        gptq__free(st);
        return NULL;
    }
    strcpy(st->label, label);
    return st;
}

/* Validate a reader whose image is set; hand it out or free it. */
static int finish_open(gptq_ctx *ctx, gptq_safetensors *st, gptq_safetensors **out)
{
    int rc = parse(ctx, st);
    if (rc != GPTQ_OK) {
        gptq_safetensors_free(st);
        return rc;
    }
    *out = st;
    return GPTQ_OK;
}

int gptq_safetensors_open(gptq_ctx *ctx, const char *path, gptq_safetensors **out)
{
    gptq_safetensors *st = NULL;
    struct stat sb;
    void *map;
    int fd, rc = GPTQ_OK;

    if (!out)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_safetensors_open: out is NULL");
    *out = NULL;
    if (!path)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "gptq_safetensors_open: path is NULL");
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return GPTQ_FAIL(ctx, errno == ENOENT ? GPTQ_ERR_NOT_FOUND : GPTQ_ERR_IO,
                         "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, &sb) != 0)
        rc = GPTQ_FAIL(ctx, GPTQ_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode)) /* mmap needs one; say so instead of "no such device" */
        rc = GPTQ_FAIL(ctx, GPTQ_ERR_IO, "%s: not a regular file", path);
    else if ((uintmax_t)sb.st_size > SIZE_MAX)
        rc = GPTQ_FAIL(ctx, GPTQ_ERR_IO, "%s: too large to map", path);
    else if ((st = reader_new(ctx, path)) == NULL)
        rc = GPTQ_ERR_OUT_OF_MEMORY;
    /* A file under 8 bytes is rejected by parse() before the image is read, and mmap
     * refuses a length of 0, so such a file is never mapped. */
    else if ((st->size = (size_t)sb.st_size) >= 8) {
        map = mmap(NULL, st->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            rc = GPTQ_FAIL(ctx, GPTQ_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        } else {
            st->image = map;
            st->mapped = 1;
        }
    }
    close(fd); /* a mapping keeps the file */
    if (rc != GPTQ_OK) {
        gptq_safetensors_free(st);
        return rc;
    }
    return finish_open(ctx, st, out);
}

void gptq__safetensors_release(const gptq_safetensors *st, const void *data, size_t n)
{
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)data, b = a + n;

    if (!st || !st->mapped || !data || page == 0 || (uintptr_t)-1 == page)
        return;
    a = (a + page - 1) / page * page; /* whole pages only */
    b = b / page * page;
    if (b > a)
        (void)madvise((void *)a, b - a, MADV_DONTNEED);
}

int gptq_safetensors_open_memory(gptq_ctx *ctx, const void *data, size_t size,
                                 gptq_safetensors **out)
{
    gptq_safetensors *st;
    uint8_t *copy;

    if (!out)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_safetensors_open_memory: out is NULL");
    *out = NULL;
    if (!data && size > 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                         "gptq_safetensors_open_memory: data is NULL");
    st = reader_new(ctx, "<memory>");
    if (!st)
        return GPTQ_ERR_OUT_OF_MEMORY;
    copy = gptq__alloc(ctx, size, "safetensors image");
    if (!copy) {
        gptq_safetensors_free(st);
        return GPTQ_ERR_OUT_OF_MEMORY;
    }
    if (size > 0)
        memcpy(copy, data, size);
    st->image = copy;
    st->size = size;
    return finish_open(ctx, st, out);
}

void gptq_safetensors_free(gptq_safetensors *st)
{
    if (!st)
        return;
    if (st->mapped)
        munmap((void *)st->image, st->size);
    else
        gptq__free((void *)st->image);
    json_decref(st->header);
    gptq__free(st->entries);
    gptq__free((void *)st->by_name);
    gptq__free((void *)st->meta_keys);
    gptq__free((void *)st->meta_values);
    gptq__free(st->label);
    gptq__free(st);
}

/* ---- getters ---------------------------------------------------------------------- */

int64_t gptq_safetensors_count(const gptq_safetensors *st) { return st ? st->count : 0; }

static void fill_info(const gptq_safetensors *st, const st_entry *e, gptq_tensor_info *info)
{
    memset(info, 0, sizeof *info);
    info->name = e->name;
    info->dtype = e->dtype;
    info->ndim = e->ndim;
    info->numel = 1;
    for (int32_t d = 0; d < e->ndim; d++) {
        info->shape[d] = e->shape[d];
        info->numel *= e->shape[d]; /* cannot overflow: checked at open */
    }
    info->data = st->buffer + e->begin;
    info->nbytes = (size_t)(e->end - e->begin);
}

int gptq_safetensors_info(const gptq_safetensors *st, int64_t i, gptq_tensor_info *info)
{
    if (!st || !info || i < 0 || i >= st->count)
        return GPTQ_ERR_INVALID_ARGUMENT;
    fill_info(st, &st->entries[i], info);
    return GPTQ_OK;
}

int gptq_safetensors_find(const gptq_safetensors *st, const char *name, gptq_tensor_info *info)
{
    st_entry probe;
    const st_entry *key = &probe, *const *hit;

    if (!st || !name || !info)
        return GPTQ_ERR_INVALID_ARGUMENT;
    probe.name = name;
    hit = bsearch(&key, st->by_name, (size_t)st->count, sizeof *st->by_name, cmp_names);
    if (!hit)
        return GPTQ_ERR_NOT_FOUND;
    fill_info(st, *hit, info);
    return GPTQ_OK;
}

int64_t gptq_safetensors_metadata_count(const gptq_safetensors *st)
{
    return st ? st->meta_count : 0;
}

int gptq_safetensors_metadata_at(const gptq_safetensors *st, int64_t i, const char **key,
                                 const char **value)
{
    if (!st || i < 0 || i >= st->meta_count)
        return GPTQ_ERR_INVALID_ARGUMENT;
    if (key)
        *key = st->meta_keys[i];
    if (value)
        *value = st->meta_values[i];
    return GPTQ_OK;
}

const char *gptq_safetensors_metadata(const gptq_safetensors *st, const char *key)
{
    if (!st || !key)
        return NULL;
    for (int64_t i = 0; i < st->meta_count; i++)
        if (strcmp(st->meta_keys[i], key) == 0)
            return st->meta_values[i];
    return NULL;
}

/* ---- typed readers ---------------------------------------------------------------- */

/* Find `name` and check the destination: the shared first half of the typed readers. */
static int typed_lookup(gptq_ctx *ctx, const gptq_safetensors *st, const char *name,
                        const void *dst, size_t count, const char *fn, gptq_tensor_info *info)
{
    if (!st || !name || (!dst && count > 0))
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: st, name or dst is NULL", fn);
    if (gptq_safetensors_find(st, name, info) != GPTQ_OK)
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_FOUND, "%s: no tensor named '%.200s'", st->label,
                         name);
    if ((uint64_t)info->numel != (uint64_t)count)
        return GPTQ_FAIL(ctx, GPTQ_ERR_SHAPE,
                         "%s: tensor '%.200s' has %lld elements but the destination holds %zu",
                         st->label, name, (long long)info->numel, count);
    return GPTQ_OK;
}

int gptq_safetensors_read_f32(gptq_ctx *ctx, const gptq_safetensors *st, const char *name,
                              float *dst, size_t count)
{
    gptq_tensor_info info;
    const uint8_t *src;

    GPTQ_TRY(typed_lookup(ctx, st, name, dst, count, "gptq_safetensors_read_f32", &info));
    src = info.data;
    /* Element by element through memcpy: the format promises no alignment. */
    switch (info.dtype) {
    case GPTQ_DTYPE_F32:
        if (count > 0)
            memcpy(dst, src, count * sizeof *dst);
        return GPTQ_OK;
    case GPTQ_DTYPE_F16:
    case GPTQ_DTYPE_BF16:
        for (size_t i = 0; i < count; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, sizeof h);
            dst[i] = info.dtype == GPTQ_DTYPE_F16 ? gptq__f16_to_f32(h) : gptq__bf16_to_f32(h);
        }
        return GPTQ_OK;
    case GPTQ_DTYPE_F64:
        for (size_t i = 0; i < count; i++) {
            double x;
            memcpy(&x, src + 8 * i, sizeof x);
            dst[i] = (float)x; /* round to nearest; out of range becomes +-Inf */
        }
        return GPTQ_OK;
    default:
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "%s: tensor '%.200s' is %s; read_f32 converts F32, F16, BF16 and F64",
                         st->label, name, gptq_dtype_name(info.dtype));
    }
}

/* Element i of an integer tensor as int64 (U64 above INT64_MAX comes back negative,
 * which the range check below then rejects as it should). */
static int64_t int_at(int32_t dtype, const uint8_t *src, size_t i)
{
    switch (dtype) {
    case GPTQ_DTYPE_BOOL:
    case GPTQ_DTYPE_U8: return src[i];
    case GPTQ_DTYPE_I8: return (int8_t)src[i];
    case GPTQ_DTYPE_I16: { int16_t v; memcpy(&v, src + 2 * i, 2); return v; }
    case GPTQ_DTYPE_U16: { uint16_t v; memcpy(&v, src + 2 * i, 2); return v; }
    case GPTQ_DTYPE_I64: { int64_t v; memcpy(&v, src + 8 * i, 8); return v; }
    default: { uint64_t v; memcpy(&v, src + 8 * i, 8); return v > INT64_MAX ? -1 : (int64_t)v; }
    }
}

int gptq_safetensors_read_i32(gptq_ctx *ctx, const gptq_safetensors *st, const char *name,
                              int32_t *dst, size_t count)
{
    gptq_tensor_info info;
    const uint8_t *src;
    int64_t lo = INT32_MIN, hi = INT32_MAX;

    GPTQ_TRY(typed_lookup(ctx, st, name, dst, count, "gptq_safetensors_read_i32", &info));
    src = info.data;
    switch (info.dtype) {
    case GPTQ_DTYPE_I32:
    case GPTQ_DTYPE_U32:
        /* U32 is copied bit for bit: GPTQ checkpoints store packed words as int32 or
         * uint32 depending on the producer, and both mean the same bits. */
        if (count > 0)
            memcpy(dst, src, count * sizeof *dst);
        return GPTQ_OK;
    case GPTQ_DTYPE_BOOL:
        lo = 0;
        hi = 1;
        break;
    case GPTQ_DTYPE_U64:
        lo = 0; /* int_at maps values above INT64_MAX to -1 */
        break;
    case GPTQ_DTYPE_U8:
    case GPTQ_DTYPE_I8:
    case GPTQ_DTYPE_I16:
    case GPTQ_DTYPE_U16:
    case GPTQ_DTYPE_I64:
        break;
    default:
        return GPTQ_FAIL(ctx, GPTQ_ERR_NOT_SUPPORTED,
                         "%s: tensor '%.200s' is %s; read_i32 converts integers and BOOL",
                         st->label, name, gptq_dtype_name(info.dtype));
    }
    for (size_t i = 0; i < count; i++) {
        int64_t v = int_at(info.dtype, src, i);
        if (v < lo || v > hi)
            return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED,
                             "%s: tensor '%.200s': %s element %zu is out of range for %s",
                             st->label, name, gptq_dtype_name(info.dtype), i,
                             info.dtype == GPTQ_DTYPE_BOOL ? "a BOOL (0 or 1)" : "int32");
        dst[i] = (int32_t)v;
    }
    return GPTQ_OK;
}
