/*
 * Tests of src/model/tokens.c: text as bytes, JSON ids (flat and nested), safetensors
 * ids, content detection for GPTQ_TOKENS_AUTO, and every way a token file is refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <criterion/criterion.h>

#include "gptq/gptq.h"
#include "gptq/model.h"
#include "gptq/safetensors.h"

#define STORIES GPTQ_TEST_MODELS "/stories260K"
#define TINY GPTQ_TEST_MODELS "/tiny-llama-bytes"

static gptq_ctx *ctx_new(void)
{
    gptq_ctx *ctx = NULL;
    char err[256];
    cr_assert_eq(gptq_ctx_create(NULL, &ctx, err, sizeof err), GPTQ_OK, "%s", err);
    return ctx;
}

/* GPTQ_TEST_TMP/tokens_<name> holding `len` bytes of `text` (static buffer). */
static const char *tmp_file(const char *name, const void *text, size_t len)
{
    static char path[1024];
    FILE *f;
    mkdir(GPTQ_TEST_TMP, 0777);
    snprintf(path, sizeof path, "%s/tokens_%s", GPTQ_TEST_TMP, name);
    f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fwrite(text, 1, len, f), len);
    fclose(f);
    return path;
}

static gptq_tokens *load_ok(gptq_ctx *ctx, const char *path, int32_t kind)
{
    gptq_tokens *t = NULL;
    int rc = gptq_tokens_load(ctx, path, kind, &t);
    cr_assert_eq(rc, GPTQ_OK, "%s: %s", path, gptq_ctx_last_error(ctx));
    return t;
}

static void expect_fail(const char *text, int32_t kind, int status, const char *expect)
{
    gptq_ctx *ctx = ctx_new();
    gptq_tokens *t = (gptq_tokens *)0x1;
    const char *path = tmp_file("bad", text, strlen(text));
    int rc = gptq_tokens_load(ctx, path, kind, &t);
    cr_assert_eq(rc, status, "'%s': status %d (%s), want %d", text, rc, gptq_ctx_last_error(ctx),
                 status);
    cr_assert_null(t);
    cr_assert(strstr(gptq_ctx_last_error(ctx), expect) != NULL, "'%s': message '%s' lacks '%s'",
              text, gptq_ctx_last_error(ctx), expect);
    gptq_ctx_free(ctx);
}

static long file_size(const char *path)
{
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0, "%s", path);
    return (long)sb.st_size;
}

Test(tokens, text_as_bytes)
{
    gptq_ctx *ctx = ctx_new();
    const char *path = STORIES "/calib.txt";
    int32_t kinds[2] = {GPTQ_TOKENS_AUTO, GPTQ_TOKENS_BYTES};
    unsigned char head[64];
    FILE *f = fopen(path, "rb");

    cr_assert_eq(fread(head, 1, sizeof head, f), sizeof head);
    fclose(f);
    for (int k = 0; k < 2; k++) {
        gptq_tokens *t = load_ok(ctx, path, kinds[k]);
        int64_t len = -1;
        const int32_t *ids = gptq_tokens_sequence(t, 0, &len);
        cr_assert_eq(gptq_tokens_count(t), 1);
        cr_assert_eq(gptq_tokens_total(t), file_size(path));
        cr_assert_eq(len, file_size(path));
        for (size_t i = 0; i < sizeof head; i++)
            cr_assert_eq(ids[i], head[i]);
        gptq_tokens_free(t);
    }
    gptq_ctx_free(ctx);
}

Test(tokens, bytes_above_127)
{
    gptq_ctx *ctx = ctx_new();
    const unsigned char text[] = {0xff, 0x00, 0x80, 'a'};
    gptq_tokens *t = load_ok(ctx, tmp_file("high", text, 4), GPTQ_TOKENS_AUTO);
    const int32_t *ids = gptq_tokens_sequence(t, 0, NULL);
    cr_assert(ids[0] == 255 && ids[1] == 0 && ids[2] == 128 && ids[3] == 'a');
    gptq_tokens_free(t);
    gptq_ctx_free(ctx);
}

Test(tokens, eval_ids_json)
{
    static const int32_t first[] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 370};
    gptq_ctx *ctx = ctx_new();
    int32_t kinds[2] = {GPTQ_TOKENS_AUTO, GPTQ_TOKENS_IDS};

    for (int k = 0; k < 2; k++) {
        gptq_tokens *t = load_ok(ctx, STORIES "/eval_ids.json", kinds[k]);
        int64_t sum = 0, len;
        cr_assert_eq(gptq_tokens_count(t), 300);
        cr_assert_eq(gptq_tokens_total(t), 75768);
        for (int64_t s = 0; s < 300; s++) {
            const int32_t *ids = gptq_tokens_sequence(t, s, &len);
            cr_assert(len >= 98 && len <= 256, "story %lld has %lld tokens", (long long)s,
                      (long long)len);
            cr_assert_eq(ids[0], 1, "every story starts with BOS");
            for (int64_t i = 0; i < len; i++)
                cr_assert(ids[i] >= 0 && ids[i] < 512);
            sum += len;
        }
        cr_assert_eq(sum, 75768);
        cr_assert_eq(memcmp(gptq_tokens_sequence(t, 0, NULL), first, sizeof first), 0);
        cr_assert_null(gptq_tokens_sequence(t, 300, &len));
        cr_assert_eq(len, 0);
        cr_assert_null(gptq_tokens_sequence(t, -1, NULL));
        gptq_tokens_free(t);
    }
    gptq_ctx_free(ctx);
}

Test(tokens, flat_json)
{
    gptq_ctx *ctx = ctx_new();
    const char *text = " \n\t[5, 0, 2147483647,\n 7]\n";
    gptq_tokens *t = load_ok(ctx, tmp_file("flat", text, strlen(text)), GPTQ_TOKENS_AUTO);
    int64_t len;
    const int32_t *ids = gptq_tokens_sequence(t, 0, &len);
    cr_assert_eq(gptq_tokens_count(t), 1);
    cr_assert_eq(len, 4);
    cr_assert(ids[0] == 5 && ids[1] == 0 && ids[2] == 2147483647 && ids[3] == 7);
    gptq_tokens_free(t);

    t = load_ok(ctx, tmp_file("nested", "[[3],[4,5]]", 11), GPTQ_TOKENS_IDS);
    cr_assert_eq(gptq_tokens_count(t), 2);
    cr_assert_eq(gptq_tokens_total(t), 3);
    ids = gptq_tokens_sequence(t, 1, &len);
    cr_assert(len == 2 && ids[0] == 4 && ids[1] == 5);
    gptq_tokens_free(t);
    gptq_ctx_free(ctx);
}

Test(tokens, malformed_json)
{
    expect_fail("[1, 2,", GPTQ_TOKENS_IDS, GPTQ_ERR_MALFORMED, "line 1, column");
    expect_fail("[1, -2, 3]", GPTQ_TOKENS_AUTO, GPTQ_ERR_MALFORMED, "element 1 is not a token id");
    expect_fail("[[1, 2], [3, -4]]", GPTQ_TOKENS_AUTO, GPTQ_ERR_MALFORMED,
                "sequence 1, element 1 is not a token id");
    expect_fail("[1, 2.5]", GPTQ_TOKENS_AUTO, GPTQ_ERR_MALFORMED, "element 1");
    expect_fail("[1, \"2\"]", GPTQ_TOKENS_AUTO, GPTQ_ERR_MALFORMED, "element 1");
    expect_fail("[1, 2147483648]", GPTQ_TOKENS_AUTO, GPTQ_ERR_MALFORMED, "element 1");
    expect_fail("[[1, 2], 3]", GPTQ_TOKENS_AUTO, GPTQ_ERR_MALFORMED, "element 1 is not an array");
    expect_fail("[[1], []]", GPTQ_TOKENS_AUTO, GPTQ_ERR_MALFORMED, "sequence 1 is empty");
    expect_fail("[]", GPTQ_TOKENS_AUTO, GPTQ_ERR_MALFORMED, "empty");
    expect_fail("", GPTQ_TOKENS_AUTO, GPTQ_ERR_MALFORMED, "empty");
    expect_fail("", GPTQ_TOKENS_BYTES, GPTQ_ERR_MALFORMED, "empty");
    expect_fail("hello", GPTQ_TOKENS_IDS, GPTQ_ERR_MALFORMED, "neither a JSON array");
}

Test(tokens, auto_falls_back_to_text)
{
    /* Text that starts with '[' but is no JSON is text. */
    gptq_ctx *ctx = ctx_new();
    gptq_tokens *t = load_ok(ctx, tmp_file("bracket", "[1, 2,", 6), GPTQ_TOKENS_AUTO);
    cr_assert_eq(gptq_tokens_count(t), 1);
    cr_assert_eq(gptq_tokens_total(t), 6);
    cr_assert_eq(gptq_tokens_sequence(t, 0, NULL)[0], '[');
    gptq_tokens_free(t);
    /* JSON asked to be read as bytes is bytes. */
    t = load_ok(ctx, tmp_file("json_bytes", "[1]", 3), GPTQ_TOKENS_BYTES);
    cr_assert_eq(gptq_tokens_total(t), 3);
    gptq_tokens_free(t);
    gptq_ctx_free(ctx);
}

Test(tokens, safetensors_ids)
{
    gptq_ctx *ctx = ctx_new();
    gptq_tokens *t = load_ok(ctx, STORIES "/reference_logits.safetensors", GPTQ_TOKENS_AUTO);
    gptq_tokens *eval = load_ok(ctx, STORIES "/eval_ids.json", GPTQ_TOKENS_IDS);
    gptq_safetensors_writer *w;
    int32_t rows[2][3] = {{1, 2, 3}, {4, 5, 6}};
    int64_t shape[2] = {2, 3};
    float f = 1.0f;
    int64_t one = 1;
    char path[1024];

    /* input_ids: the first story of eval_ids.json (I64 [256]). */
    cr_assert_eq(gptq_tokens_count(t), 1);
    cr_assert_eq(gptq_tokens_total(t), 256);
    cr_assert_eq(memcmp(gptq_tokens_sequence(t, 0, NULL), gptq_tokens_sequence(eval, 0, NULL),
                        256 * sizeof(int32_t)),
                 0);
    gptq_tokens_free(t);
    gptq_tokens_free(eval);

    /* A 2-D I32 tensor of another name, beside a float one: one sequence per row. */
    snprintf(path, sizeof path, "%s/tokens_rows.safetensors", GPTQ_TEST_TMP);
    cr_assert_eq(gptq_safetensors_writer_create(ctx, &w), GPTQ_OK);
    cr_assert_eq(gptq_safetensors_writer_add(ctx, w, "batch", GPTQ_DTYPE_I32, 2, shape, rows,
                                             sizeof rows),
                 GPTQ_OK);
    cr_assert_eq(gptq_safetensors_writer_add(ctx, w, "x", GPTQ_DTYPE_F32, 1, &one, &f, 4),
                 GPTQ_OK);
    cr_assert_eq(gptq_safetensors_writer_write(ctx, w, path), GPTQ_OK);
    gptq_safetensors_writer_free(w);
    t = load_ok(ctx, path, GPTQ_TOKENS_IDS);
    cr_assert_eq(gptq_tokens_count(t), 2);
    cr_assert_eq(gptq_tokens_sequence(t, 1, NULL)[2], 6);
    gptq_tokens_free(t);

    /* Only a float tensor: not token ids. */
    rows[0][0] = -1;
    cr_assert_eq(gptq_safetensors_writer_create(ctx, &w), GPTQ_OK);
    cr_assert_eq(gptq_safetensors_writer_add(ctx, w, "input_ids", GPTQ_DTYPE_F32, 1, &one, &f, 4),
                 GPTQ_OK);
    cr_assert_eq(gptq_safetensors_writer_write(ctx, w, path), GPTQ_OK);
    gptq_safetensors_writer_free(w);
    cr_assert_eq(gptq_tokens_load(ctx, path, GPTQ_TOKENS_AUTO, &t), GPTQ_ERR_MALFORMED);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "has dtype F32") != NULL, "%s",
              gptq_ctx_last_error(ctx));

    /* A negative id. */
    cr_assert_eq(gptq_safetensors_writer_create(ctx, &w), GPTQ_OK);
    cr_assert_eq(gptq_safetensors_writer_add(ctx, w, "ids", GPTQ_DTYPE_I32, 2, shape, rows,
                                             sizeof rows),
                 GPTQ_OK);
    cr_assert_eq(gptq_safetensors_writer_write(ctx, w, path), GPTQ_OK);
    gptq_safetensors_writer_free(w);
    cr_assert_eq(gptq_tokens_load(ctx, path, GPTQ_TOKENS_IDS, &t), GPTQ_ERR_MALFORMED);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "negative") != NULL, "%s",
              gptq_ctx_last_error(ctx));
    gptq_ctx_free(ctx);
}

Test(tokens, from_ids_and_arguments)
{
    gptq_ctx *ctx = ctx_new();
    int32_t ids[3] = {7, 8, 9}, neg[2] = {1, -1};
    gptq_tokens *t = NULL;

    cr_assert_eq(gptq_tokens_from_ids(ctx, ids, 3, &t), GPTQ_OK);
    ids[0] = 0; /* copied */
    cr_assert_eq(gptq_tokens_sequence(t, 0, NULL)[0], 7);
    cr_assert_eq(gptq_tokens_total(t), 3);
    gptq_tokens_free(t);
    cr_assert_eq(gptq_tokens_from_ids(ctx, ids, 0, &t), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gptq_tokens_from_ids(ctx, NULL, 3, &t), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gptq_tokens_from_ids(ctx, neg, 2, &t), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(gptq_ctx_last_error(ctx), "ids[1] = -1") != NULL);
    cr_assert_eq(gptq_tokens_load(ctx, GPTQ_TEST_TMP "/no-such-file", GPTQ_TOKENS_AUTO, &t),
                 GPTQ_ERR_NOT_FOUND);
    cr_assert_null(t);
    cr_assert_eq(gptq_tokens_load(ctx, TINY, GPTQ_TOKENS_AUTO, &t), GPTQ_ERR_IO, "a directory");
    cr_assert_eq(gptq_tokens_load(ctx, TINY "/eval.txt", 9, &t), GPTQ_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gptq_tokens_load(ctx, NULL, GPTQ_TOKENS_AUTO, &t), GPTQ_ERR_INVALID_ARGUMENT);
    gptq_tokens_free(NULL);
    cr_assert_eq(gptq_tokens_count(NULL), 0);
    cr_assert_eq(gptq_tokens_total(NULL), 0);
    gptq_ctx_free(ctx);
}
