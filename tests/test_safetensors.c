/*
 * Tests of src/io: the safetensors reader (every rule of FORMATS.md §7.3, each broken
 * alone in a hand-built image), the typed readers, the writer (layout, byte-exact
 * header, never clobbering the destination) and a real reference file.
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "gptq/gptq.h"
#include "gptq/safetensors.h"

#define REF_DIR GPTQ_TEST_DATA "/gptq-reference"

static gptq_ctx *new_ctx(void)
{
    gptq_ctx *ctx = NULL;
    char err[256];
    int rc = gptq_ctx_create(NULL, &ctx, err, sizeof err);
    cr_assert_eq(rc, GPTQ_OK, "gptq_ctx_create: %s", err);
    return ctx;
}

/* A file image: u64 N, the header (N bytes), then `data_len` bytes counting up. The
 * caller frees it. */
static uint8_t *make_image(const char *header, size_t header_len, size_t data_len, size_t *size)
{
    uint8_t *img;
    if (header_len == 0)
        header_len = strlen(header);
    *size = 8 + header_len + data_len;
    img = malloc(*size);
    cr_assert_not_null(img);
    for (int b = 0; b < 8; b++)
        img[b] = (uint8_t)((uint64_t)header_len >> (8 * b));
    memcpy(img + 8, header, header_len);
    for (size_t i = 0; i < data_len; i++)
        img[8 + header_len + i] = (uint8_t)i;
    return img;
}

/* Open an image from memory and expect `status` with `expect` inside the message. */
static void expect_open_fails(const uint8_t *img, size_t size, int status, const char *expect,
                              const char *what)
{
    gptq_ctx *ctx = new_ctx();
    gptq_safetensors *st = (gptq_safetensors *)0x1;
    int rc = gptq_safetensors_open_memory(ctx, img, size, &st);
    cr_assert_eq(rc, status, "%s: status %d (%s), want %d", what, rc, gptq_ctx_last_error(ctx),
                 status);
    cr_assert_null(st, "%s: *out must be NULL on failure", what);
    cr_assert(strncmp(gptq_ctx_last_error(ctx), "<memory>: ", 10) == 0,
              "%s: message must name the source: %s", what, gptq_ctx_last_error(ctx));
    cr_assert(strstr(gptq_ctx_last_error(ctx), expect) != NULL, "%s: message '%s' lacks '%s'",
              what, gptq_ctx_last_error(ctx), expect);
    gptq_ctx_free(ctx);
}

/* ---- header validation, one broken rule per case ----------------------------------- */

typedef struct bad_case {
    const char *what;
    const char *header;
    size_t header_len; /* 0: strlen(header) */
    size_t data_len;
    int status;
    const char *expect;
} bad_case;

#define T_F32_1 "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}"

static bad_case bad_cases[] = {
    {"empty header", "", 0, 0, GPTQ_ERR_MALFORMED, "invalid JSON header"},
    {"invalid JSON", "{\"a\":", 0, 0, GPTQ_ERR_MALFORMED, "invalid JSON header"},
    {"trailing garbage", "{} x", 0, 0, GPTQ_ERR_MALFORMED, "invalid JSON header"},
    {"two values", "{}{}", 0, 0, GPTQ_ERR_MALFORMED, "invalid JSON header"},
    {"NUL after the object", "{}\0 ", 4, 0, GPTQ_ERR_MALFORMED, "invalid JSON header"},
    {"invalid UTF-8", "{\"\xff\":" T_F32_1 "}", 0, 4, GPTQ_ERR_MALFORMED, "invalid JSON header"},
    {"overlong UTF-8", "{\"\xc0\xaf\":" T_F32_1 "}", 0, 4, GPTQ_ERR_MALFORMED,
     "invalid JSON header"},
    {"NUL in a name", "{\"a\\u0000b\":" T_F32_1 "}", 0, 4, GPTQ_ERR_MALFORMED,
     "invalid JSON header"},
    {"not an object (array)", "[]", 0, 0, GPTQ_ERR_MALFORMED, "not a JSON object"},
    {"not an object (string)", "\"x\"", 0, 0, GPTQ_ERR_MALFORMED, "invalid JSON header"},
    {"duplicate key", "{\"a\":" T_F32_1 ",\"a\":" T_F32_1 "}", 0, 4, GPTQ_ERR_MALFORMED,
     "duplicate"},
    {"metadata not an object", "{\"__metadata__\":\"x\"}", 0, 0, GPTQ_ERR_MALFORMED,
     "__metadata__ is not an object"},
    {"metadata value not a string", "{\"__metadata__\":{\"k\":1}}", 0, 0, GPTQ_ERR_MALFORMED,
     "value of 'k' is not a string"},
    {"metadata value null", "{\"__metadata__\":{\"k\":null}}", 0, 0, GPTQ_ERR_MALFORMED,
     "not a string"},
    {"tensor named __metadata__", "{\"__metadata__\":" T_F32_1 "}", 0, 4, GPTQ_ERR_MALFORMED,
     "__metadata__ value of 'shape' is not a string"},
    {"entry not an object", "{\"a\":1}", 0, 0, GPTQ_ERR_MALFORMED, "entry is not an object"},
    {"dtype missing", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4, GPTQ_ERR_MALFORMED,
     "dtype is missing"},
    {"unknown dtype", "{\"a\":{\"dtype\":\"F31\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4,
     GPTQ_ERR_MALFORMED, "unknown dtype 'F31'"},
    {"dtype in lower case", "{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0,
     4, GPTQ_ERR_MALFORMED, "unknown dtype 'f32'"},
    {"shape missing", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 0, 4,
     GPTQ_ERR_MALFORMED, "shape is missing"},
    {"negative shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 0, 4,
     GPTQ_ERR_MALFORMED, "shape[0] is not a non-negative integer"},
    {"float shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1.0],\"data_offsets\":[0,4]}}", 0, 4,
     GPTQ_ERR_MALFORMED, "shape[1] is not a non-negative integer"},
    {"string shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 0, 4,
     GPTQ_ERR_MALFORMED, "shape[0] is not"},
    {"shape above 2^64", "{\"a\":{\"dtype\":\"F32\",\"shape\":[18446744073709551616],"
                         "\"data_offsets\":[0,4]}}",
     0, 4, GPTQ_ERR_MALFORMED, "invalid JSON header"},
    {"too many dimensions", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                            "\"data_offsets\":[0,1]}}",
     0, 1, GPTQ_ERR_NOT_SUPPORTED, "9 dimensions"},
    {"data_offsets missing", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 0, 4, GPTQ_ERR_MALFORMED,
     "data_offsets must be"},
    {"one offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}", 0, 4,
     GPTQ_ERR_MALFORMED, "data_offsets must be"},
    {"three offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,4]}}", 0, 4,
     GPTQ_ERR_MALFORMED, "data_offsets must be"},
    {"negative offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[-4,-4]}}", 0, 0,
     GPTQ_ERR_MALFORMED, "data_offsets must be"},
    {"float offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 0, 4,
     GPTQ_ERR_MALFORMED, "data_offsets must be"},
    {"gap at the start", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 0, 8,
     GPTQ_ERR_MALFORMED, "leave a gap"},
    {"gap between tensors",
     "{\"a\":" T_F32_1 ",\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 0, 12,
     GPTQ_ERR_MALFORMED, "tensor 'b': invalid offset: data_offsets [8, 12] leave a gap"},
    {"overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     0, 8, GPTQ_ERR_MALFORMED, "overlap"},
    {"same range twice", "{\"a\":" T_F32_1 ",\"b\":" T_F32_1 "}", 0, 4, GPTQ_ERR_MALFORMED,
     "overlap"},
    {"end before begin",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}",
     0, 4, GPTQ_ERR_MALFORMED, "end before they begin"},
    {"size mismatch", "{\"x\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,12]}}", 0, 12,
     GPTQ_ERR_MALFORMED, "tensor 'x': data_offsets [0, 12] but shape [2, 3] F32 needs 24 bytes"},
    {"scalar with no bytes", "{\"x\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,0]}}", 0,
     0, GPTQ_ERR_MALFORMED, "needs 8 bytes"},
    {"zero-size tensor with bytes",
     "{\"x\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,4]}}", 0, 4,
     GPTQ_ERR_MALFORMED, "needs 0 bytes"},
    {"element count overflow",
     "{\"x\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0, 0,
     GPTQ_ERR_MALFORMED, "overflows the element count"},
    {"bit count overflow",
     "{\"x\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,0]}}", 0, 0,
     GPTQ_ERR_MALFORMED, "overflows the size in bits"},
    {"sub-byte total", "{\"x\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 0, 2,
     GPTQ_ERR_MALFORMED, "holds 12 bits, not whole bytes"},
    {"sub-byte F6", "{\"x\":{\"dtype\":\"F6_E3M2\",\"shape\":[2,1],\"data_offsets\":[0,2]}}", 0,
     2, GPTQ_ERR_MALFORMED, "holds 12 bits"},
    {"trailing bytes", "{\"a\":" T_F32_1 "}", 0, 5, GPTQ_ERR_MALFORMED, "trailing bytes"},
    {"trailing bytes, no tensors", "{}", 0, 1, GPTQ_ERR_MALFORMED, "trailing bytes"},
    {"incomplete buffer", "{\"a\":" T_F32_1 "}", 0, 3, GPTQ_ERR_MALFORMED, "incomplete buffer"},
};

/* Criterion runs each parameter in a fresh process where the binary may load at another
 * address, so the parameters are indices into the table rather than pointers. */
#define N_BAD (sizeof bad_cases / sizeof bad_cases[0])

ParameterizedTestParameters(safetensors, malformed)
{
    static size_t idx[N_BAD];
    for (size_t i = 0; i < N_BAD; i++)
        idx[i] = i;
    return cr_make_param_array(size_t, idx, N_BAD);
}

ParameterizedTest(size_t *i, safetensors, malformed)
{
    const bad_case *c = &bad_cases[*i];
    size_t size;
    uint8_t *img = make_image(c->header, c->header_len, c->data_len, &size);
    expect_open_fails(img, size, c->status, c->expect, c->what);
    free(img);
}

Test(safetensors, too_small)
{
    static const uint8_t seven[7] = {0};
    expect_open_fails(seven, 0, GPTQ_ERR_MALFORMED, "header too small", "0 bytes");
    expect_open_fails(NULL, 0, GPTQ_ERR_MALFORMED, "header too small", "NULL, 0 bytes");
    expect_open_fails(seven, sizeof seven, GPTQ_ERR_MALFORMED, "header too small", "7 bytes");
}

Test(safetensors, header_length_field)
{
    uint8_t img[16] = {0};
    /* N = 100,000,001: over the limit even though the JSON would be tiny. */
    img[0] = 0x01;
    img[1] = 0xe1;
    img[2] = 0xf5;
    img[3] = 0x05;
    expect_open_fails(img, sizeof img, GPTQ_ERR_MALFORMED, "header too large", "N = 1e8 + 1");
    /* N = 2^64 - 1 would overflow 8 + N. */
    memset(img, 0xff, 8);
    expect_open_fails(img, sizeof img, GPTQ_ERR_MALFORMED, "header too large", "N = 2^64 - 1");
    /* N = 9 with 8 bytes after the length field. */
    memset(img, 0, 8);
    img[0] = 9;
    memcpy(img + 8, "{}      ", 8);
    expect_open_fails(img, sizeof img, GPTQ_ERR_MALFORMED, "invalid header length", "N = 9");
    /* N = 100,000,000 exactly passes the size rule and fails on the file length. */
    img[0] = 0x00;
    img[1] = 0xe1;
    img[2] = 0xf5;
    img[3] = 0x05;
    expect_open_fails(img, sizeof img, GPTQ_ERR_MALFORMED, "invalid header length", "N = 1e8");
}

Test(safetensors, name_too_long)
{
    size_t len = 5000, size;
    char *hdr = malloc(len + 100);
    uint8_t *img;
    hdr[0] = '{';
    hdr[1] = '"';
    memset(hdr + 2, 'n', len);
    strcpy(hdr + 2 + len, "\":" T_F32_1 "}");
    img = make_image(hdr, 0, 4, &size);
    expect_open_fails(img, size, GPTQ_ERR_MALFORMED, "longer than the 4096-byte limit", "name");
    free(img);
    free(hdr);
}

/* ---- headers the reader must accept ------------------------------------------------- */

typedef struct good_case {
    const char *what;
    const char *header;
    size_t data_len;
    int64_t count;
} good_case;

static good_case good_cases[] = {
    {"no tensors", "{}", 0, 0},
    {"only metadata", "{\"__metadata__\":{}}", 0, 0},
    {"leading and trailing whitespace", " \t\r\n{\"a\":" T_F32_1 "} \t\r\n", 4, 1},
    {"padding with spaces", "{\"a\":" T_F32_1 "}        ", 4, 1},
    {"unknown fields ignored",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":[1,{}]}}", 4, 1},
    {"scalar", "{\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]}}", 8, 1},
    {"empty tensors share an offset",
     "{\"z2\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
     "\"a\":" T_F32_1 ",\"z1\":{\"dtype\":\"I64\",\"shape\":[3,0],\"data_offsets\":[4,4]}}",
     4, 3},
    {"F6 whole bytes", "{\"x\":{\"dtype\":\"F6_E2M3\",\"shape\":[4],\"data_offsets\":[0,3]}}", 3,
     1},
    {"F4 whole bytes", "{\"x\":{\"dtype\":\"F4\",\"shape\":[2,3],\"data_offsets\":[0,3]}}", 3, 1},
    {"zero dimension with a huge one",
     "{\"x\":{\"dtype\":\"U8\",\"shape\":[0,9223372036854775807],\"data_offsets\":[0,0]}}", 0, 1},
    {"UTF-8 name", "{\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\":" T_F32_1 "}", 4, 1},
};

#define N_GOOD (sizeof good_cases / sizeof good_cases[0])

ParameterizedTestParameters(safetensors, accepted)
{
    static size_t idx[N_GOOD];
    for (size_t i = 0; i < N_GOOD; i++)
        idx[i] = i;
    return cr_make_param_array(size_t, idx, N_GOOD);
}

ParameterizedTest(size_t *i, safetensors, accepted)
{
    const good_case *c = &good_cases[*i];
    gptq_ctx *ctx = new_ctx();
    gptq_safetensors *st = NULL;
    size_t size;
    uint8_t *img = make_image(c->header, 0, c->data_len, &size);
    int rc = gptq_safetensors_open_memory(ctx, img, size, &st);
    cr_assert_eq(rc, GPTQ_OK, "%s: %s", c->what, gptq_ctx_last_error(ctx));
    cr_assert_eq(gptq_safetensors_count(st), c->count, "%s", c->what);
    gptq_safetensors_free(st);
    free(img);
    gptq_ctx_free(ctx);
}

Test(safetensors, data_order_and_lookup)
{
    const char *hdr = "{\"z2\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                      "\"b\":{\"dtype\":\"U8\",\"shape\":[2,1],\"data_offsets\":[4,6]},"
                      "\"a\":" T_F32_1 ",\"z1\":{\"dtype\":\"I64\",\"shape\":[3,0],"
                      "\"data_offsets\":[4,4]}}";
    const char *want[] = {"a", "z1", "z2", "b"};
    gptq_safetensors *st = NULL;
    gptq_tensor_info info;
    size_t size;
    uint8_t *img = make_image(hdr, 0, 6, &size);

    cr_assert_eq(gptq_safetensors_open_memory(NULL, img, size, &st), GPTQ_OK);
    free(img); /* the reader holds its own copy */
    cr_assert_eq(gptq_safetensors_count(st), 4);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(gptq_safetensors_info(st, i, &info), GPTQ_OK);
        cr_assert_str_eq(info.name, want[i]);
    }
    cr_assert_eq(gptq_safetensors_info(st, 4, &info), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gptq_safetensors_info(st, -1, &info), GPTQ_ERR_INVALID_ARGUMENT);

    cr_assert_eq(gptq_safetensors_find(st, "b", &info), GPTQ_OK);
    cr_assert_eq(info.dtype, GPTQ_DTYPE_U8);
    cr_assert_eq(info.ndim, 2);
    cr_assert_eq(info.shape[0], 2);
    cr_assert_eq(info.numel, 2);
    cr_assert_eq(info.nbytes, 2);
    cr_assert_eq(((const uint8_t *)info.data)[0], 4);
    cr_assert_eq(gptq_safetensors_find(st, "z1", &info), GPTQ_OK);
    cr_assert_eq(info.numel, 0);
    cr_assert_eq(info.nbytes, 0);
    cr_assert_eq(gptq_safetensors_find(st, "c", &info), GPTQ_ERR_NOT_FOUND);
    cr_assert_eq(gptq_safetensors_find(st, "", &info), GPTQ_ERR_NOT_FOUND);
    cr_assert_eq(gptq_safetensors_find(st, NULL, &info), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gptq_safetensors_metadata_count(st), 0);
    cr_assert_null(gptq_safetensors_metadata(st, "format"));
    gptq_safetensors_free(st);
    gptq_safetensors_free(NULL);
}

/* ---- typed readers ------------------------------------------------------------------ */

/* A header whose length is odd puts every tensor at an odd address: the typed readers
 * must copy, not cast. */
Test(safetensors, typed_readers_unaligned)
{
    const char *hdr =
        "{\"f32\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"f16\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[8,12]},"
        "\"bf16\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[12,16]},"
        "\"f64\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[16,24]},"
        "\"u32\":{\"dtype\":\"U32\",\"shape\":[1],\"data_offsets\":[24,28]},"
        "\"i64\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[28,44]},"
        "\"i8\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[44,46]},"
        "\"u16\":{\"dtype\":\"U16\",\"shape\":[1],\"data_offsets\":[46,48]},"
        "\"b\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[48,50]},"
        "\"u64\":{\"dtype\":\"U64\",\"shape\":[1],\"data_offsets\":[50,58]}}  ";
    size_t hlen = strlen(hdr), size;
    uint8_t *img;
    uint8_t *d;
    float f[2], fv[2] = {1.5f, -2.25f};
    double dv = 0.1;
    uint32_t u32 = 0xdeadbeefu;
    int64_t i64[2] = {-2147483648LL, 2147483647LL};
    uint64_t u64 = 2147483647ULL;
    int32_t iv[2];
    gptq_ctx *ctx = new_ctx();
    gptq_safetensors *st = NULL;
    gptq_tensor_info info;

    if (hlen % 2 == 0)
        hlen--; /* drop one padding space: keep N odd */
    img = make_image(hdr, hlen, 58, &size);
    d = img + 8 + hlen;
    memcpy(d, fv, 8);
    memcpy(d + 8, "\x00\x3e\x00\xc0", 4);  /* F16 1.5, -2.0 */
    memcpy(d + 12, "\xc0\x3f\x10\xc0", 4); /* BF16 1.5, -2.25 */
    memcpy(d + 16, &dv, 8);
    memcpy(d + 24, &u32, 4);
    memcpy(d + 28, i64, 16);
    memcpy(d + 44, "\xff\x7f", 2);
    memcpy(d + 46, "\xff\xff", 2);
    memcpy(d + 48, "\x01\x00", 2);
    memcpy(d + 50, &u64, 8);
    cr_assert_eq(gptq_safetensors_open_memory(ctx, img, size, &st), GPTQ_OK, "%s",
                 gptq_ctx_last_error(ctx));
    cr_assert_eq(gptq_safetensors_find(st, "f32", &info), GPTQ_OK);
    cr_assert((uintptr_t)info.data % 2 == 1, "the test wants misaligned data");

    cr_assert_eq(gptq_safetensors_read_f32(ctx, st, "f32", f, 2), GPTQ_OK);
    cr_assert(f[0] == 1.5f && f[1] == -2.25f);
    cr_assert_eq(gptq_safetensors_read_f32(ctx, st, "f16", f, 2), GPTQ_OK);
    cr_assert(f[0] == 1.5f && f[1] == -2.0f, "F16: %g %g", f[0], f[1]);
    cr_assert_eq(gptq_safetensors_read_f32(ctx, st, "bf16", f, 2), GPTQ_OK);
    cr_assert(f[0] == 1.5f && f[1] == -2.25f, "BF16: %g %g", f[0], f[1]);
    cr_assert_eq(gptq_safetensors_read_f32(ctx, st, "f64", f, 1), GPTQ_OK);
    cr_assert(f[0] == 0.1f);

    cr_assert_eq(gptq_safetensors_read_i32(ctx, st, "u32", iv, 1), GPTQ_OK);
    cr_assert_eq((uint32_t)iv[0], 0xdeadbeefu, "U32 is reinterpreted bit for bit");
    cr_assert_eq(gptq_safetensors_read_i32(ctx, st, "i64", iv, 2), GPTQ_OK);
    cr_assert(iv[0] == INT32_MIN && iv[1] == INT32_MAX);
    cr_assert_eq(gptq_safetensors_read_i32(ctx, st, "i8", iv, 2), GPTQ_OK);
    cr_assert(iv[0] == -1 && iv[1] == 127);
    cr_assert_eq(gptq_safetensors_read_i32(ctx, st, "u16", iv, 1), GPTQ_OK);
    cr_assert_eq(iv[0], 65535);
    cr_assert_eq(gptq_safetensors_read_i32(ctx, st, "b", iv, 2), GPTQ_OK);
    cr_assert(iv[0] == 1 && iv[1] == 0);
    cr_assert_eq(gptq_safetensors_read_i32(ctx, st, "u64", iv, 1), GPTQ_OK);
    cr_assert_eq(iv[0], INT32_MAX);

    /* Errors: absent, wrong count, wrong kind, out of range. */
    cr_assert_eq(gptq_safetensors_read_f32(ctx, st, "nope", f, 2), GPTQ_ERR_NOT_FOUND);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "<memory>: no tensor named 'nope'"));
    cr_assert_eq(gptq_safetensors_read_f32(ctx, st, "f32", f, 1), GPTQ_ERR_SHAPE);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "has 2 elements but the destination holds 1"));
    cr_assert_eq(gptq_safetensors_read_f32(ctx, st, "i64", f, 2), GPTQ_ERR_NOT_SUPPORTED);
    cr_assert_eq(gptq_safetensors_read_i32(ctx, st, "f32", iv, 2), GPTQ_ERR_NOT_SUPPORTED);
    cr_assert_eq(gptq_safetensors_read_i32(ctx, st, "i64", NULL, 2), GPTQ_ERR_INVALID_ARGUMENT);
    i64[0] = 2147483648LL;
    memcpy(d + 28, i64, 16);
    gptq_safetensors_free(st);
    cr_assert_eq(gptq_safetensors_open_memory(ctx, img, size, &st), GPTQ_OK);
    cr_assert_eq(gptq_safetensors_read_i32(ctx, st, "i64", iv, 2), GPTQ_ERR_MALFORMED);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "I64 element 0 is out of range for int32"));
    gptq_safetensors_free(st);
    u64 = 0x8000000000000001ULL;
    memcpy(d + 50, &u64, 8);
    memcpy(d + 48, "\x02", 1);
    cr_assert_eq(gptq_safetensors_open_memory(ctx, img, size, &st), GPTQ_OK);
    cr_assert_eq(gptq_safetensors_read_i32(ctx, st, "u64", iv, 1), GPTQ_ERR_MALFORMED);
    cr_assert_eq(gptq_safetensors_read_i32(ctx, st, "b", iv, 2), GPTQ_ERR_MALFORMED);
    gptq_safetensors_free(st);
    free(img);
    gptq_ctx_free(ctx);
}

Test(safetensors, dtype_table)
{
    for (int32_t t = GPTQ_DTYPE_BOOL; t <= GPTQ_DTYPE_F6_E3M2; t++) {
        const char *name = gptq_dtype_name(t);
        cr_assert_not_null(name, "dtype %d", t);
        cr_assert_eq(gptq_dtype_from_name(name), t, "%s", name);
        cr_assert(gptq_dtype_bits(t) > 0);
    }
    cr_assert_eq(gptq_dtype_bits(GPTQ_DTYPE_F4), 4);
    cr_assert_eq(gptq_dtype_bits(GPTQ_DTYPE_F6_E2M3), 6);
    cr_assert_eq(gptq_dtype_bits(GPTQ_DTYPE_BF16), 16);
    cr_assert_eq(gptq_dtype_bits(GPTQ_DTYPE_C64), 64);
    cr_assert_eq(gptq_dtype_from_name("bf16"), GPTQ_DTYPE_UNKNOWN);
    cr_assert_eq(gptq_dtype_from_name("F32 "), GPTQ_DTYPE_UNKNOWN);
    cr_assert_eq(gptq_dtype_from_name(NULL), GPTQ_DTYPE_UNKNOWN);
    cr_assert_null(gptq_dtype_name(GPTQ_DTYPE_UNKNOWN));
    cr_assert_null(gptq_dtype_name(23));
    cr_assert_null(gptq_dtype_name(-1));
    cr_assert_eq(gptq_dtype_bits(23), 0);
}

/* ---- files on disk ------------------------------------------------------------------ */

Test(safetensors, reference_file)
{
    const char *path = REF_DIR "/p01_64x128_b4_gNone_sym.safetensors";
    gptq_ctx *ctx = new_ctx();
    gptq_safetensors *st = NULL;
    gptq_tensor_info info;
    float *w = malloc(64 * 128 * sizeof *w), scales[64], scales_f32[64];
    int32_t codes[64 * 128], qweight[16 * 64];
    const char *key, *value;

    cr_assert_eq(gptq_safetensors_open(ctx, path, &st), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    cr_assert_eq(gptq_safetensors_count(st), 11);
    cr_assert_eq(gptq_safetensors_find(st, "W", &info), GPTQ_OK);
    cr_assert_eq(info.dtype, GPTQ_DTYPE_F32);
    cr_assert_eq(info.ndim, 2);
    cr_assert(info.shape[0] == 64 && info.shape[1] == 128);
    cr_assert_eq(info.numel, 64 * 128);
    cr_assert_eq(info.nbytes, 64 * 128 * 4);
    cr_assert_str_eq(gptq_safetensors_metadata(st, "bits"), "4");
    cr_assert_str_eq(gptq_safetensors_metadata(st, "format"), "gptq-reference-case/1");
    cr_assert(gptq_safetensors_metadata_count(st) > 10);
    cr_assert_eq(gptq_safetensors_metadata_at(st, 0, &key, &value), GPTQ_OK);
    cr_assert_str_eq(key, "format", "metadata comes in file order");
    cr_assert_eq(gptq_safetensors_metadata_at(st, gptq_safetensors_metadata_count(st), &key,
                                              &value),
                 GPTQ_ERR_INVALID_ARGUMENT);

    /* Values cross-checked with Python's struct module. */
    cr_assert_eq(gptq_safetensors_read_f32(ctx, st, "W", w, 64 * 128), GPTQ_OK);
    cr_assert(w[0] == -0.046417236328125f && w[3] == 0.016815185546875f);
    cr_assert_eq(gptq_safetensors_read_f32(ctx, st, "scales", scales, 64), GPTQ_OK);
    cr_assert(scales[0] == 0.0293731689453125f && scales[3] == 0.012786865234375f);
    cr_assert_eq(gptq_safetensors_read_f32(ctx, st, "scales_f32", scales_f32, 64), GPTQ_OK);
    for (int i = 0; i < 64; i++)
        cr_assert(fabsf(scales[i] - scales_f32[i]) <= scales_f32[i] * 0x1p-10f);
    cr_assert_eq(gptq_safetensors_read_i32(ctx, st, "codes", codes, 64 * 128), GPTQ_OK);
    cr_assert(codes[0] == 6 && codes[3] == 9 && codes[7] == 9);
    cr_assert_eq(gptq_safetensors_read_i32(ctx, st, "qweight", qweight, 16 * 64), GPTQ_OK);
    cr_assert(qweight[0] == -1738041210 && qweight[1] == 2005371017);
    gptq_safetensors_free(st);
    free(w);
    gptq_ctx_free(ctx);
}

/* A scratch directory of its own for each test, emptied first. */
static void fresh_dir(char *dir, size_t size, const char *name)
{
    DIR *d;
    struct dirent *e;
    char path[1024];
    snprintf(dir, size, "%s/st_%s", GPTQ_TEST_TMP, name);
    mkdir(GPTQ_TEST_TMP, 0777);
    mkdir(dir, 0777);
    d = opendir(dir);
    cr_assert_not_null(d, "%s: %s", dir, strerror(errno));
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (remove(path) != 0)
            cr_assert_fail("cannot empty %s: %s", path, strerror(errno));
    }
    closedir(d);
}

/* The number of entries in dir; fails if any of them is a writer's temporary. */
static int count_entries_no_temp(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    cr_assert_not_null(d);
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        cr_assert_null(strstr(e->d_name, ".tmp-"), "temporary left behind: %s", e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static void write_file(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(data, 1, size, f), size);
    cr_assert_eq(fclose(f), 0);
}

/* The whole file, for byte comparisons; the caller frees it. */
static uint8_t *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long len;
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)len + 1);
    cr_assert_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *size = (size_t)len;
    return buf;
}

Test(safetensors, open_errors)
{
    char dir[512], path[600];
    gptq_ctx *ctx = new_ctx();
    gptq_safetensors *st = NULL;

    fresh_dir(dir, sizeof dir, "open_errors");
    snprintf(path, sizeof path, "%s/missing.safetensors", dir);
    cr_assert_eq(gptq_safetensors_open(ctx, path, &st), GPTQ_ERR_NOT_FOUND);
    cr_assert(strncmp(gptq_ctx_last_error(ctx), path, strlen(path)) == 0);
    cr_assert_eq(gptq_safetensors_open(ctx, dir, &st), GPTQ_ERR_IO);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "not a regular file"));
    cr_assert_eq(gptq_safetensors_open(ctx, NULL, &st), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gptq_safetensors_open(ctx, path, NULL), GPTQ_ERR_INVALID_ARGUMENT);

    snprintf(path, sizeof path, "%s/empty.safetensors", dir);
    write_file(path, "", 0);
    cr_assert_eq(gptq_safetensors_open(ctx, path, &st), GPTQ_ERR_MALFORMED);
    cr_assert(strncmp(gptq_ctx_last_error(ctx), path, strlen(path)) == 0);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "header too small"));

    /* A broken file on disk: the message names it, as open_memory's names "<memory>". */
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    {
        const char *hdr = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,12]}}";
        char want[700];
        size_t size;
        uint8_t *img = make_image(hdr, 0, 12, &size);
        write_file(path, img, size);
        free(img);
        cr_assert_eq(gptq_safetensors_open(ctx, path, &st), GPTQ_ERR_MALFORMED);
        snprintf(want, sizeof want,
                 "%s: tensor 'x': data_offsets [0, 12] but shape [2, 3] F32 needs 24 bytes", path);
        cr_assert_str_eq(gptq_ctx_last_error(ctx), want);
    }
    cr_assert_null(st);
    gptq_ctx_free(ctx);
}

/* ---- writer ------------------------------------------------------------------------- */

static gptq_safetensors_writer *new_writer(gptq_ctx *ctx)
{
    gptq_safetensors_writer *w = NULL;
    cr_assert_eq(gptq_safetensors_writer_create(ctx, &w), GPTQ_OK);
    return w;
}

static void add(gptq_ctx *ctx, gptq_safetensors_writer *w, const char *name, int32_t dtype,
                int32_t ndim, const int64_t *shape, const void *data, size_t nbytes)
{
    int rc = gptq_safetensors_writer_add(ctx, w, name, dtype, ndim, shape, data, nbytes);
    cr_assert_eq(rc, GPTQ_OK, "add %s: %s", name, gptq_ctx_last_error(ctx));
}

Test(safetensors, writer_round_trip)
{
    static const float wv[6] = {1, -2, 3.5f, 0, -0.0f, 1e-30f};
    static const uint16_t hv[3] = {0x3c00, 0xc000, 0x7c00};
    static const uint16_t bfv[4] = {0x3f80, 0x4000, 0xbf80, 0x0000};
    static const double dv = -1.25;
    static const int32_t iv[4] = {INT32_MIN, -1, 0, INT32_MAX};
    static const int64_t lv[2] = {-5, 7};
    static const uint8_t f4v = 0x21, boolv[3] = {1, 0, 1};
    const int64_t s23[2] = {2, 3}, s3[1] = {3}, s22[2] = {2, 2}, s4[1] = {4}, s0[1] = {0},
                  s2[1] = {2}, s05[2] = {0, 5};
    const char *quote = "a\"b\\c\n\t\x01 \xc3\xa9 /";
    /* Descending element size, then name; the 4-bit tensor last. */
    const char *order[] = {"d", "l", "e", "i", "w", "bf", "h", "bool", "u", "f4"};
    char dir[512], path[600];
    gptq_ctx *ctx = new_ctx();
    gptq_safetensors_writer *w = new_writer(ctx);
    gptq_safetensors *st = NULL;
    gptq_tensor_info info;
    const char *key, *value;
    const uint8_t *base;
    uint8_t *raw;
    size_t size;
    uint64_t n = 0;
    struct stat sb;

    add(ctx, w, "w", GPTQ_DTYPE_F32, 2, s23, wv, sizeof wv);
    add(ctx, w, "h", GPTQ_DTYPE_F16, 1, s3, hv, sizeof hv);
    add(ctx, w, "bf", GPTQ_DTYPE_BF16, 2, s22, bfv, sizeof bfv);
    add(ctx, w, "d", GPTQ_DTYPE_F64, 0, NULL, &dv, sizeof dv);
    add(ctx, w, "i", GPTQ_DTYPE_I32, 1, s4, iv, sizeof iv);
    add(ctx, w, "u", GPTQ_DTYPE_U8, 1, s0, NULL, 0);
    add(ctx, w, "l", GPTQ_DTYPE_I64, 1, s2, lv, sizeof lv);
    add(ctx, w, "f4", GPTQ_DTYPE_F4, 1, s2, &f4v, 1);
    add(ctx, w, "bool", GPTQ_DTYPE_BOOL, 1, s3, boolv, sizeof boolv);
    add(ctx, w, "e", GPTQ_DTYPE_F32, 2, s05, NULL, 0);
    cr_assert_eq(gptq_safetensors_writer_set_metadata(ctx, w, "bits", "3"), GPTQ_OK);
    cr_assert_eq(gptq_safetensors_writer_set_metadata(ctx, w, "quote", quote), GPTQ_OK);
    cr_assert_eq(gptq_safetensors_writer_set_metadata(ctx, w, "empty", ""), GPTQ_OK);
    cr_assert_eq(gptq_safetensors_writer_set_metadata(ctx, w, "bits", "4"), GPTQ_OK);

    fresh_dir(dir, sizeof dir, "round_trip");
    snprintf(path, sizeof path, "%s/rt.safetensors", dir);
    umask(022);
    cr_assert_eq(gptq_safetensors_writer_write(ctx, w, path), GPTQ_OK, "%s",
                 gptq_ctx_last_error(ctx));
    gptq_safetensors_writer_free(w);
    cr_assert_eq(count_entries_no_temp(dir), 1);
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0644, "mode %o", (unsigned)(sb.st_mode & 0777));

    /* The raw layout: padded header, metadata first, every tensor naturally aligned. */
    raw = read_file(path, &size);
    for (int b = 7; b >= 0; b--)
        n = n << 8 | raw[b];
    cr_assert_eq((8 + n) % 8, 0);
    cr_assert(memcmp(raw + 8, "{\"__metadata__\":{\"format\":\"pt\",\"bits\":\"4\",", 42) == 0,
              "%.60s", (const char *)raw + 8);
    cr_assert(raw[8 + n - 1] == ' ' || raw[8 + n - 1] == '}');

    cr_assert_eq(gptq_safetensors_open(ctx, path, &st), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    cr_assert_eq(gptq_safetensors_count(st), 10);
    cr_assert_eq(gptq_safetensors_info(st, 0, &info), GPTQ_OK);
    base = info.data; /* the first tensor starts the data buffer */
    for (int i = 0; i < 10; i++) {
        int32_t bits;
        cr_assert_eq(gptq_safetensors_info(st, i, &info), GPTQ_OK);
        cr_assert_str_eq(info.name, order[i]);
        bits = gptq_dtype_bits(info.dtype);
        if (bits >= 8)
            cr_assert_eq((size_t)((const uint8_t *)info.data - base) % (size_t)(bits / 8), 0,
                         "%s is not aligned", info.name);
    }
    free(raw);
#define CHECK(name_, dtype_, ndim_, shape_, data_, nbytes_)                                   \
    do {                                                                                      \
        cr_assert_eq(gptq_safetensors_find(st, name_, &info), GPTQ_OK);                       \
        cr_assert_eq(info.dtype, dtype_, "%s", name_);                                        \
        cr_assert_eq(info.ndim, ndim_, "%s", name_);                                          \
        for (int d_ = 0; d_ < (ndim_); d_++)                                                  \
            cr_assert_eq(info.shape[d_], (shape_)[d_], "%s", name_);                          \
        cr_assert_eq(info.nbytes, (size_t)(nbytes_), "%s", name_);                            \
        cr_assert((nbytes_) == 0 || memcmp(info.data, data_, nbytes_) == 0, "%s", name_);     \
    } while (0)
    CHECK("w", GPTQ_DTYPE_F32, 2, s23, wv, sizeof wv);
    CHECK("h", GPTQ_DTYPE_F16, 1, s3, hv, sizeof hv);
    CHECK("bf", GPTQ_DTYPE_BF16, 2, s22, bfv, sizeof bfv);
    CHECK("d", GPTQ_DTYPE_F64, 0, s0, &dv, sizeof dv);
    CHECK("i", GPTQ_DTYPE_I32, 1, s4, iv, sizeof iv);
    CHECK("u", GPTQ_DTYPE_U8, 1, s0, "", 0);
    CHECK("l", GPTQ_DTYPE_I64, 1, s2, lv, sizeof lv);
    CHECK("f4", GPTQ_DTYPE_F4, 1, s2, &f4v, 1);
    CHECK("bool", GPTQ_DTYPE_BOOL, 1, s3, boolv, sizeof boolv);
    CHECK("e", GPTQ_DTYPE_F32, 2, s05, "", 0);
#undef CHECK
    cr_assert_eq(gptq_safetensors_find(st, "d", &info), GPTQ_OK);
    cr_assert_eq(info.numel, 1, "a scalar has one element");

    cr_assert_eq(gptq_safetensors_metadata_count(st), 4);
    cr_assert_eq(gptq_safetensors_metadata_at(st, 0, &key, &value), GPTQ_OK);
    cr_assert(strcmp(key, "format") == 0 && strcmp(value, "pt") == 0);
    cr_assert_str_eq(gptq_safetensors_metadata(st, "bits"), "4", "set twice: the last value");
    cr_assert_str_eq(gptq_safetensors_metadata(st, "quote"), quote);
    cr_assert_str_eq(gptq_safetensors_metadata(st, "empty"), "");
    gptq_safetensors_free(st);
    gptq_ctx_free(ctx);
}

/* The exact bytes of a small file, to pin compact JSON, key order and padding. */
Test(safetensors, writer_golden_bytes)
{
    static const float v[2] = {1.0f, 2.0f};
    const int64_t shape[1] = {2};
    const char *json = "{\"__metadata__\":{\"format\":\"pt\"},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    size_t json_len = strlen(json), n = (json_len + 7) / 8 * 8, size;
    char dir[512], path[600];
    uint8_t want[256];
    gptq_ctx *ctx = new_ctx();
    gptq_safetensors_writer *w = new_writer(ctx);
    uint8_t *raw;

    memset(want, 0, 8);
    want[0] = (uint8_t)n;
    memcpy(want + 8, json, json_len);
    memset(want + 8 + json_len, ' ', n - json_len);
    memcpy(want + 8 + n, v, sizeof v);
    add(ctx, w, "a", GPTQ_DTYPE_F32, 1, shape, v, sizeof v);
    fresh_dir(dir, sizeof dir, "golden");
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    cr_assert_eq(gptq_safetensors_writer_write(ctx, w, path), GPTQ_OK);
    raw = read_file(path, &size);
    cr_assert_eq(size, 8 + n + sizeof v);
    cr_assert(memcmp(raw, want, size) == 0, "got %.*s", (int)n, (const char *)raw + 8);
    free(raw);

    /* A caller's "format" replaces the default, in the caller's position. */
    cr_assert_eq(gptq_safetensors_writer_set_metadata(ctx, w, "x", "1"), GPTQ_OK);
    cr_assert_eq(gptq_safetensors_writer_set_metadata(ctx, w, "format", "gptq"), GPTQ_OK);
    cr_assert_eq(gptq_safetensors_writer_write(ctx, w, path), GPTQ_OK);
    raw = read_file(path, &size);
    cr_assert(memcmp(raw + 8, "{\"__metadata__\":{\"x\":\"1\",\"format\":\"gptq\"},\"a\":", 46) ==
                  0,
              "%.60s", (const char *)raw + 8);
    free(raw);
    gptq_safetensors_writer_free(w);
    gptq_ctx_free(ctx);
}

Test(safetensors, writer_no_tensors)
{
    char dir[512], path[600];
    gptq_ctx *ctx = new_ctx();
    gptq_safetensors_writer *w = new_writer(ctx);
    gptq_safetensors *st = NULL;

    fresh_dir(dir, sizeof dir, "no_tensors");
    snprintf(path, sizeof path, "%s/empty.safetensors", dir);
    cr_assert_eq(gptq_safetensors_writer_write(ctx, w, path), GPTQ_OK);
    cr_assert_eq(gptq_safetensors_open(ctx, path, &st), GPTQ_OK, "%s", gptq_ctx_last_error(ctx));
    cr_assert_eq(gptq_safetensors_count(st), 0);
    cr_assert_str_eq(gptq_safetensors_metadata(st, "format"), "pt");
    gptq_safetensors_free(st);
    gptq_safetensors_writer_free(w);
    gptq_ctx_free(ctx);
}

Test(safetensors, writer_add_errors)
{
    static const float v[6] = {0};
    const int64_t s23[2] = {2, 3}, neg[1] = {-1}, s3[1] = {3},
                  big[2] = {INT64_MAX, 2}, s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    gptq_ctx *ctx = new_ctx();
    gptq_safetensors_writer *w = new_writer(ctx);
    char longname[5000];

    add(ctx, w, "x", GPTQ_DTYPE_F32, 2, s23, v, sizeof v);
#define BAD(status_, name_, dtype_, ndim_, shape_, data_, nbytes_)                           \
    cr_assert_eq(gptq_safetensors_writer_add(ctx, w, name_, dtype_, ndim_, shape_, data_,     \
                                             nbytes_),                                       \
                 status_, "%s", gptq_ctx_last_error(ctx))
    BAD(GPTQ_ERR_INVALID_ARGUMENT, "x", GPTQ_DTYPE_F32, 2, s23, v, sizeof v);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "duplicate tensor name 'x'"));
    BAD(GPTQ_ERR_INVALID_ARGUMENT, "", GPTQ_DTYPE_F32, 2, s23, v, sizeof v);
    BAD(GPTQ_ERR_INVALID_ARGUMENT, "__metadata__", GPTQ_DTYPE_F32, 2, s23, v, sizeof v);
    BAD(GPTQ_ERR_INVALID_ARGUMENT, "bad\xff", GPTQ_DTYPE_F32, 2, s23, v, sizeof v);
    BAD(GPTQ_ERR_INVALID_ARGUMENT, NULL, GPTQ_DTYPE_F32, 2, s23, v, sizeof v);
    BAD(GPTQ_ERR_INVALID_ARGUMENT, "y", 0, 2, s23, v, sizeof v);
    BAD(GPTQ_ERR_INVALID_ARGUMENT, "y", 99, 2, s23, v, sizeof v);
    BAD(GPTQ_ERR_INVALID_ARGUMENT, "y", GPTQ_DTYPE_F32, 9, s9, v, 4);
    BAD(GPTQ_ERR_INVALID_ARGUMENT, "y", GPTQ_DTYPE_F32, -1, s23, v, 4);
    BAD(GPTQ_ERR_INVALID_ARGUMENT, "y", GPTQ_DTYPE_F32, 1, neg, v, 0);
    BAD(GPTQ_ERR_INVALID_ARGUMENT, "y", GPTQ_DTYPE_F32, 2, big, v, 0);
    BAD(GPTQ_ERR_INVALID_ARGUMENT, "y", GPTQ_DTYPE_F4, 1, s3, v, 2);
    BAD(GPTQ_ERR_INVALID_ARGUMENT, "y", GPTQ_DTYPE_F32, 2, NULL, v, sizeof v);
    BAD(GPTQ_ERR_INVALID_ARGUMENT, "y", GPTQ_DTYPE_F32, 2, s23, NULL, sizeof v);
    BAD(GPTQ_ERR_SHAPE, "y", GPTQ_DTYPE_F32, 2, s23, v, sizeof v - 4);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "20 bytes given but 6 F32 elements need 24"));
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    BAD(GPTQ_ERR_INVALID_ARGUMENT, longname, GPTQ_DTYPE_F32, 2, s23, v, sizeof v);
#undef BAD
    cr_assert_eq(gptq_safetensors_writer_set_metadata(ctx, w, "k", NULL),
                 GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gptq_safetensors_writer_set_metadata(ctx, w, "k", "\xc3"),
                 GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gptq_safetensors_writer_set_metadata(ctx, w, "\xed\xa0\x80", "v"),
                 GPTQ_ERR_INVALID_ARGUMENT, "a UTF-16 surrogate is not UTF-8");
    cr_assert_eq(gptq_safetensors_writer_write(ctx, w, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gptq_safetensors_writer_create(ctx, NULL), GPTQ_ERR_INVALID_ARGUMENT);
    gptq_safetensors_writer_free(w);
    gptq_safetensors_writer_free(NULL);
    gptq_ctx_free(ctx);
}

Test(safetensors, writer_header_too_large)
{
    size_t len = 100000000;
    char *big = malloc(len + 1), dir[512], path[600];
    gptq_ctx *ctx = new_ctx();
    gptq_safetensors_writer *w = new_writer(ctx);

    memset(big, 'a', len);
    big[len] = '\0';
    cr_assert_eq(gptq_safetensors_writer_set_metadata(ctx, w, "k", big), GPTQ_OK);
    free(big);
    fresh_dir(dir, sizeof dir, "too_large");
    snprintf(path, sizeof path, "%s/big.safetensors", dir);
    cr_assert_eq(gptq_safetensors_writer_write(ctx, w, path), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "over the 100000000"), "%s",
              gptq_ctx_last_error(ctx));
    cr_assert_eq(count_entries_no_temp(dir), 0);
    gptq_safetensors_writer_free(w);

    /* 17 MB of control characters pass the quick lower bound but escape to 102 MB
     * ("\u0001" each): the exact check after building the JSON refuses them. */
    w = new_writer(ctx);
    len = 17000000;
    big = malloc(len + 1);
    memset(big, 1, len);
    big[len] = '\0';
    cr_assert_eq(gptq_safetensors_writer_set_metadata(ctx, w, "k", big), GPTQ_OK);
    free(big);
    cr_assert_eq(gptq_safetensors_writer_write(ctx, w, path), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "over the 100000000"), "%s",
              gptq_ctx_last_error(ctx));
    cr_assert_eq(count_entries_no_temp(dir), 0);
    gptq_safetensors_writer_free(w);
    gptq_ctx_free(ctx);
}

Test(safetensors, writer_missing_directory)
{
    static const float v[1] = {1};
    const int64_t s1[1] = {1};
    char dir[512], path[600];
    gptq_ctx *ctx = new_ctx();
    gptq_safetensors_writer *w = new_writer(ctx);

    add(ctx, w, "a", GPTQ_DTYPE_F32, 1, s1, v, sizeof v);
    fresh_dir(dir, sizeof dir, "missing_dir");
    snprintf(path, sizeof path, "%s/nope/a.safetensors", dir);
    cr_assert_eq(gptq_safetensors_writer_write(ctx, w, path), GPTQ_ERR_IO);
    cr_assert(strstr(gptq_ctx_last_error(ctx), path), "%s", gptq_ctx_last_error(ctx));
    cr_assert(strstr(gptq_ctx_last_error(ctx), strerror(ENOENT)), "%s", gptq_ctx_last_error(ctx));
    cr_assert_eq(count_entries_no_temp(dir), 0);
    gptq_safetensors_writer_free(w);
    gptq_ctx_free(ctx);
}

/* rename() onto a directory fails after the temporary is complete: the last step. */
Test(safetensors, writer_destination_is_directory)
{
    static const float v[1] = {1};
    const int64_t s1[1] = {1};
    char dir[512], path[600];
    gptq_ctx *ctx = new_ctx();
    gptq_safetensors_writer *w = new_writer(ctx);
    struct stat sb;

    add(ctx, w, "a", GPTQ_DTYPE_F32, 1, s1, v, sizeof v);
    fresh_dir(dir, sizeof dir, "dest_dir");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(mkdir(path, 0777), 0);
    cr_assert_eq(gptq_safetensors_writer_write(ctx, w, path), GPTQ_ERR_IO);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "rename"), "%s", gptq_ctx_last_error(ctx));
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert(S_ISDIR(sb.st_mode));
    cr_assert_eq(count_entries_no_temp(dir), 1);
    rmdir(path);
    gptq_safetensors_writer_free(w);
    gptq_ctx_free(ctx);
}

/* A write that fails half-way (the file size limit stands in for a full disk, and
 * works for root too) leaves the old file byte for byte and no temporary. */
Test(safetensors, writer_failure_keeps_old_file)
{
    static const float small[2] = {1, 2};
    const int64_t s2[1] = {2}, sbig[1] = {1 << 18};
    float *bigv = calloc(1 << 18, sizeof *bigv);
    char dir[512], path[600];
    gptq_ctx *ctx = new_ctx();
    gptq_safetensors_writer *w = new_writer(ctx);
    uint8_t *before, *after;
    size_t before_size, after_size;
    struct rlimit lim;

    fresh_dir(dir, sizeof dir, "keeps_old");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    add(ctx, w, "a", GPTQ_DTYPE_F32, 1, s2, small, sizeof small);
    cr_assert_eq(gptq_safetensors_writer_write(ctx, w, path), GPTQ_OK);
    gptq_safetensors_writer_free(w);
    before = read_file(path, &before_size);

    w = new_writer(ctx);
    add(ctx, w, "big", GPTQ_DTYPE_F32, 1, sbig, bigv, (size_t)(1 << 18) * sizeof *bigv);
    signal(SIGXFSZ, SIG_IGN); /* so write() fails with EFBIG instead of killing us */
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &lim), 0);
    lim.rlim_cur = 65536;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    cr_assert_eq(gptq_safetensors_writer_write(ctx, w, path), GPTQ_ERR_IO);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "cannot write the temporary file"), "%s",
              gptq_ctx_last_error(ctx));
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_FSIZE, &lim);

    after = read_file(path, &after_size);
    cr_assert_eq(after_size, before_size);
    cr_assert(memcmp(before, after, before_size) == 0, "the old file was changed");
    cr_assert_eq(count_entries_no_temp(dir), 1);

    /* Without the limit the same writer replaces the file. */
    cr_assert_eq(gptq_safetensors_writer_write(ctx, w, path), GPTQ_OK, "%s",
                 gptq_ctx_last_error(ctx));
    free(after);
    after = read_file(path, &after_size);
    cr_assert(after_size > (size_t)(1 << 20));
    cr_assert_eq(count_entries_no_temp(dir), 1);
    free(before);
    free(after);
    free(bigv);
    gptq_safetensors_writer_free(w);
    gptq_ctx_free(ctx);
}
