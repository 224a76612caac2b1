/*
 * libgptq - safetensors reader and writer.
 *
 * The container used by Hugging Face checkpoints and by libgptq's own files:
 *   [u64 little-endian N][N bytes of JSON header][byte buffer]
 * The header maps tensor names to {"dtype", "shape", "data_offsets"} and may hold a
 * "__metadata__" object of string -> string.
 *
 * The reader memory-maps the file and validates every rule of the reference reader
 * (huggingface/safetensors) before any tensor is handed out: header length <= 100 MB
 * and inside the file, well-formed UTF-8 JSON object (jansson, duplicates rejected),
 * known dtypes, non-negative integer shapes, shape x element size == byte length with
 * overflow checks, offsets that tile the buffer exactly (contiguous, non-overlapping,
 * starting at 0, ending at the end of the file), `__metadata__` string -> string.
 * Tensor data is not assumed to be aligned; the typed readers copy.
 *
 * The writer collects tensors (by reference) and metadata, then writes a temporary
 * file in the destination's directory and renames it over the destination, so an
 * existing file is never left half-written. Headers are compact JSON padded with
 * spaces to a multiple of 8 bytes; `__metadata__` comes first and always contains
 * "format": "pt" unless the caller sets another value.
 *
 * Thread safety as in gptq.h: one object, one thread at a time. A reader is
 * read-only after open and may be shared by threads that only call the const getters.
 */
#ifndef GPTQ_SAFETENSORS_H
#define GPTQ_SAFETENSORS_H

#include "gptq/gptq.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element types (safetensors dtype names in comments). Values are pinned. */
typedef enum gptq_dtype {
    GPTQ_DTYPE_UNKNOWN = 0,
    GPTQ_DTYPE_BOOL = 1,   /* "BOOL" */
    GPTQ_DTYPE_U8 = 2,     /* "U8" */
    GPTQ_DTYPE_I8 = 3,     /* "I8" */
    GPTQ_DTYPE_I16 = 4,    /* "I16" */
    GPTQ_DTYPE_U16 = 5,    /* "U16" */
    GPTQ_DTYPE_F16 = 6,    /* "F16" */
    GPTQ_DTYPE_BF16 = 7,   /* "BF16" */
    GPTQ_DTYPE_I32 = 8,    /* "I32" */
    GPTQ_DTYPE_U32 = 9,    /* "U32" */
    GPTQ_DTYPE_F32 = 10,   /* "F32" */
    GPTQ_DTYPE_F64 = 11,   /* "F64" */
    GPTQ_DTYPE_I64 = 12,   /* "I64" */
    GPTQ_DTYPE_U64 = 13,   /* "U64" */
    GPTQ_DTYPE_F8_E5M2 = 14,
    GPTQ_DTYPE_F8_E4M3 = 15,
    GPTQ_DTYPE_F8_E8M0 = 16,
    GPTQ_DTYPE_F8_E4M3FNUZ = 17,
    GPTQ_DTYPE_F8_E5M2FNUZ = 18,
    GPTQ_DTYPE_C64 = 19,
    GPTQ_DTYPE_F4 = 20,
    GPTQ_DTYPE_F6_E2M3 = 21,
    GPTQ_DTYPE_F6_E3M2 = 22
} gptq_dtype;

/* The safetensors name of a dtype ("F32"...), or NULL for an unknown value. */
GPTQ_API const char *gptq_dtype_name(int32_t dtype);
/* Size of one element in bits (4, 6, 8, 16, 32 or 64), 0 for an unknown value. */
GPTQ_API int32_t gptq_dtype_bits(int32_t dtype);
/* The dtype with this exact (case-sensitive) name, GPTQ_DTYPE_UNKNOWN if none. */
GPTQ_API int32_t gptq_dtype_from_name(const char *name);

#define GPTQ_ST_MAX_DIMS 8

/* Description of one tensor; pointers stay valid while the reader is open. */
typedef struct gptq_tensor_info {
    const char *name;
    int32_t dtype;                    /* gptq_dtype */
    int32_t ndim;                     /* 0 (scalar) .. GPTQ_ST_MAX_DIMS */
    int64_t shape[GPTQ_ST_MAX_DIMS];
    int64_t numel;                    /* product of shape (1 for a scalar) */
    const void *data;                 /* into the mapping; NOT necessarily aligned */
    size_t nbytes;
} gptq_tensor_info;

/* ---- reader ------------------------------------------------------------------- */

typedef struct gptq_safetensors gptq_safetensors;

/* Open and validate a file (memory-mapped, read-only). Besides the format's rules the
 * reader caps a file at 2^20 tensors and names at 4096 bytes (MALFORMED past them).
 * Errors: INVALID_ARGUMENT, NOT_FOUND (no such file), IO (also: not a regular file),
 * MALFORMED (any rule broken; the message names the file and the rule),
 * NOT_SUPPORTED (a valid tensor with more than GPTQ_ST_MAX_DIMS dimensions),
 * OUT_OF_MEMORY. On failure *out is NULL.
 * The file must not be truncated while it is open (a mapped page past the new end
 * raises SIGBUS, as with any memory-mapped reader). */
GPTQ_API int gptq_safetensors_open(gptq_ctx *ctx, const char *path, gptq_safetensors **out);

/* Validate a file image held in memory. The bytes are copied, so `data` may be freed
 * once this returns. Messages name the source "<memory>". Same errors. */
GPTQ_API int gptq_safetensors_open_memory(gptq_ctx *ctx, const void *data, size_t size,
                                          gptq_safetensors **out);

GPTQ_API void gptq_safetensors_free(gptq_safetensors *st);

/* Number of tensors (the metadata object is not a tensor); 0 for st NULL. */
GPTQ_API int64_t gptq_safetensors_count(const gptq_safetensors *st);

/* Tensor i, 0 <= i < count, in data order. Errors: INVALID_ARGUMENT. */
GPTQ_API int gptq_safetensors_info(const gptq_safetensors *st, int64_t i, gptq_tensor_info *info);

/* Look a tensor up by name. Errors: NOT_FOUND (no message is recorded: absence is a
 * normal answer), INVALID_ARGUMENT. */
GPTQ_API int gptq_safetensors_find(const gptq_safetensors *st, const char *name,
                                   gptq_tensor_info *info);

/* Metadata: number of keys, key/value i in file order (key or value may be NULL when
 * not wanted; INVALID_ARGUMENT when i is out of range), and lookup by key (NULL when
 * absent). Strings stay valid while the reader is open. */
GPTQ_API int64_t gptq_safetensors_metadata_count(const gptq_safetensors *st);
GPTQ_API int gptq_safetensors_metadata_at(const gptq_safetensors *st, int64_t i,
                                          const char **key, const char **value);
GPTQ_API const char *gptq_safetensors_metadata(const gptq_safetensors *st, const char *key);

/* Copy tensor `name` into dst as float32, converting F32, F16, BF16 and F64 (F64 is
 * rounded). `count` is the capacity of dst in elements and must equal numel.
 * Errors: INVALID_ARGUMENT (NULL st or name, NULL dst with count > 0), NOT_FOUND,
 * SHAPE (count differs), NOT_SUPPORTED (another dtype). */
GPTQ_API int gptq_safetensors_read_f32(gptq_ctx *ctx, const gptq_safetensors *st,
                                       const char *name, float *dst, size_t count);

/* Copy tensor `name` into dst as int32, converting I8, U8, I16, U16, I32, U32, I64,
 * U64 and BOOL; a value outside the int32 range (U32 above 2^31-1 excepted: it is
 * reinterpreted bit for bit, as packed words are) is MALFORMED, and so is a BOOL byte
 * other than 0 or 1; dst is then partly written. Same other errors. */
GPTQ_API int gptq_safetensors_read_i32(gptq_ctx *ctx, const gptq_safetensors *st,
                                       const char *name, int32_t *dst, size_t count);

/* ---- writer ------------------------------------------------------------------- */

typedef struct gptq_safetensors_writer gptq_safetensors_writer;

GPTQ_API int gptq_safetensors_writer_create(gptq_ctx *ctx, gptq_safetensors_writer **out);
GPTQ_API void gptq_safetensors_writer_free(gptq_safetensors_writer *w);

/* Add a tensor. The name and shape are copied; `data` (nbytes, must equal numel x
 * element size) is only referenced and must stay valid until write() returns.
 * Errors: INVALID_ARGUMENT (duplicate or empty name, "__metadata__", a name that is
 * not UTF-8 or is over 4096 bytes, bad dtype or shape, a sub-byte dtype whose total is
 * not whole bytes, more than 2^20 tensors), SHAPE (nbytes does not match),
 * OUT_OF_MEMORY. */
GPTQ_API int gptq_safetensors_writer_add(gptq_ctx *ctx, gptq_safetensors_writer *w,
                                         const char *name, int32_t dtype, int32_t ndim,
                                         const int64_t *shape, const void *data,
                                         size_t nbytes);

/* Set a metadata entry (copied; a second call with the same key replaces the value and
 * keeps its position). Keys and values must be UTF-8.
 * Errors: INVALID_ARGUMENT, OUT_OF_MEMORY. */
GPTQ_API int gptq_safetensors_writer_set_metadata(gptq_ctx *ctx, gptq_safetensors_writer *w,
                                                  const char *key, const char *value);

/* Write everything to `path`: a temporary file beside it, flushed, then renamed over
 * `path`. On failure the temporary is removed and an existing `path` is untouched.
 * Tensors are laid out in descending dtype size, then name (every tensor naturally
 * aligned), as the reference writer does. The new file gets mode 0666 less the umask.
 * If `path` is a symbolic link, the link itself is replaced. The writer is unchanged
 * and may be written again.
 * Errors: IO (with errno text), INVALID_ARGUMENT (also: a header over 100,000,000
 * bytes), OUT_OF_MEMORY. */
GPTQ_API int gptq_safetensors_writer_write(gptq_ctx *ctx, gptq_safetensors_writer *w,
                                           const char *path);

#ifdef __cplusplus
}
#endif

#endif /* GPTQ_SAFETENSORS_H */
