/*
 * Everything of a saved checkpoint but its tensors (FORMATS.md section 4): config.json,
 * quantize_config.json, model.safetensors.index.json, copies of the source directory's
 * tokenizer and generation files, and the directory itself, which is written as a
 * temporary sibling and renamed into place once complete (save.c decides what goes in).
 *
 * One quantization dictionary goes into both config.json (`quantization_config`, the
 * only place transformers and EXL2 look) and quantize_config.json (AutoGPTQ, vLLM and
 * TGI look there first). Its keys are the union of what the consumers need (§4.3
 * "libgptq output"): AutoGPTQ's eleven keys, which every reader accepts, plus lm_head,
 * pack_dtype and meta. There is no `format` key: GPTQModel treats it as an alias of
 * checkpoint_format and AutoGPTQ would only log it.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "model.h"

/* ---- writing a JSON document ---------------------------------------------------- */

/* The fewest significant digits (15, 16 or 17) that reproduce every real in `v`.
 * jansson prints every real with one precision, 17 by default, which turns the 1e-05
 * of a config into 1.0000000000000001e-05; Python's json (which wrote the source
 * config) prints the shortest string that reads back to the same double. */
static int real_precision(json_t *v)
{
    int need = 15;
    if (json_is_real(v)) {
        const double x = json_real_value(v);
        char buf[40];
        for (; need < 17; need++) {
            snprintf(buf, sizeof buf, "%.*g", need, x);
            if (strtod(buf, NULL) == x)
                break;
        }
    } else if (json_is_object(v)) {
        const char *key;
        json_t *item;
        json_object_foreach(v, key, item) {
            int p = real_precision(item);
            need = p > need ? p : need;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item) {
            int p = real_precision(item);
            need = p > need ? p : need;
        }
    }
    return need;
}

/* Write `doc` to dir/name with an indent of 2 (transformers and AutoGPTQ do the same),
 * keys sorted when asked, a final newline, and fsync so that the rename of the
 * directory that follows cannot publish an empty file after a crash. */
static int write_json(gptq_ctx *ctx, const char *dir, const char *name, json_t *doc, int sorted)
{
    const size_t flags = JSON_INDENT(2) | JSON_REAL_PRECISION(real_precision(doc)) |
                         (sorted ? JSON_SORT_KEYS : 0);
    char path[4096];
    char *text = json_dumps(doc, flags);
    FILE *f;
    int ok, err;

    if (!text)
        return GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY, "out of memory writing %s", name);
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) {
        free(text);
        return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: path too long", dir);
    }
    f = fopen(path, "wxe");
    if (!f) {
        err = errno;
        free(text);
        return GPTQ_FAIL(ctx, GPTQ_ERR_IO, "%s: cannot create: %s", path, strerror(err));
    }
    ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF && fflush(f) == 0 && fsync(fileno(f)) == 0;
    err = ok ? 0 : errno;
    if (fclose(f) != 0 && ok)
        ok = 0, err = errno;
    free(text); /* json_dumps allocates with jansson's allocator, malloc by default */
    if (!ok)
        return GPTQ_FAIL(ctx, GPTQ_ERR_IO, "%s: cannot write: %s", path, strerror(err));
    return GPTQ_OK;
}

/* ---- config.json and quantize_config.json --------------------------------------- */

/* The quantization parameters of m. m->qcfg is set by gptq_model_quantize; a model
 * opened from a GPTQ checkpoint may only have the parsed keys of its config, the rest
 * being the defaults. */
static void effective_qcfg(const gptq_model *m, gptq_config *q)
{
    if (m->qcfg.struct_size != 0) {
        *q = m->qcfg;
        return;
    }
    gptq_config_init(q);
    q->bits = m->cfg.q_bits;
    q->group_size = m->cfg.q_group_size;
    q->desc_act = m->cfg.q_desc_act;
    q->sym = m->cfg.q_sym;
}

static json_t *quant_dict(const gptq_model *m, int32_t format, int32_t bits)
{
    gptq_config q;
    char quantizer[64];

    effective_qcfg(m, &q);
    snprintf(quantizer, sizeof quantizer, "libgptq:%s", gptq_version());
    /* Insertion order is dump order (jansson >= 2.8). */
    return json_pack("{s:i, s:i, s:b, s:b, s:f, s:b, s:b, s:s, s:s, s:n, s:s, s:b, s:s,"
                     " s:{s:[s], s:f, s:s}}",
                     "bits", (int)bits, "group_size", (int)q.group_size, "desc_act",
                     q.desc_act != 0, "sym", q.sym != 0, "damp_percent", q.damp_percent,
                     "static_groups", q.static_groups != 0, "true_sequential",
                     m->true_sequential != 0, "quant_method", "gptq", "checkpoint_format",
                     format == GPTQ_FORMAT_V2 ? "gptq_v2" : "gptq", "model_name_or_path",
                     "model_file_base_name", "model", "lm_head", 0, "pack_dtype", "int32", "meta",
                     "quantizer", quantizer, "damp_auto_increment", q.damp_auto_increment,
                     "uri", "https://github.com/libgptq/libgptq");
}

/* The true-sequential subsets, as modules_in_block_to_quantize lists them. */
static const int lin_subsets[4][4] = {
    {GPTQ_LIN_Q, GPTQ_LIN_K, GPTQ_LIN_V, -1},
    {GPTQ_LIN_O, -1},
    {GPTQ_LIN_GATE, GPTQ_LIN_UP, -1},
    {GPTQ_LIN_DOWN, -1},
};

/* Add a pattern for a float module to GPTQModel's `dynamic` (vLLM reads it too):
 * "-:REGEX" means "do not quantize a module whose name REGEX matches from its start". */
static int add_skip(json_t *dynamic, const char *layer, const char *name)
{
    char key[160], *o = key;
    o += sprintf(o, "-:model\\.layers\\.%s\\.", layer);
    for (const char *c = name; *c && o < key + sizeof key - 3; c++) {
        if (*c == '.')
            *o++ = '\\';
        *o++ = *c;
    }
    *o = '\0';
    return json_object_set_new(dynamic, key, json_object());
}

/* Linears kept in float (gptq_quantize_options.quantize_odd_shapes, or a checkpoint
 * that had them): name them so that loaders do not expect packed tensors for them.
 * transformers/optimum read modules_in_block_to_quantize (module name suffixes), vLLM
 * and GPTQModel read dynamic. A kind that is float in only some layers cannot be said
 * with the first; those are listed per layer in dynamic only. 0 or -1 (out of memory). */
static int describe_float_linears(const gptq_model *m, json_t *q)
{
    int64_t nfloat[GPTQ_LIN_COUNT] = {0};
    int any = 0, partial = 0, bad = 0;
    json_t *dynamic, *blocks;
    char layer[24];

    for (int64_t i = 0; i < m->cfg.n_layers; i++)
        for (int j = 0; j < GPTQ_LIN_COUNT; j++)
            nfloat[j] += !m->layers[i].lin[j].quantized;
    for (int j = 0; j < GPTQ_LIN_COUNT; j++) {
        any |= nfloat[j] > 0;
        partial |= nfloat[j] > 0 && nfloat[j] < m->cfg.n_layers;
    }
    if (!any)
        return 0;
    dynamic = json_object();
    blocks = partial ? NULL : json_array();
    bad = !dynamic || (!partial && !blocks);
    for (int s = 0; s < 4 && !bad; s++) {
        json_t *sub = json_array();
        bad = !sub;
        for (int c = 0; !bad && lin_subsets[s][c] >= 0; c++) {
            const int j = lin_subsets[s][c];
            if (nfloat[j] == 0)
                bad = json_array_append_new(sub, json_string(gptq__lin_names[j])) != 0;
            else if (nfloat[j] == m->cfg.n_layers)
                bad = add_skip(dynamic, "\\d+", gptq__lin_names[j]) != 0;
            else
                for (int64_t i = 0; i < m->cfg.n_layers && !bad; i++)
                    if (!m->layers[i].lin[j].quantized) {
                        snprintf(layer, sizeof layer, "%lld", (long long)i);
                        bad = add_skip(dynamic, layer, gptq__lin_names[j]) != 0;
                    }
        }
        if (!bad && blocks && json_array_size(sub) > 0)
            bad = json_array_append(blocks, sub) != 0;
        json_decref(sub);
    }
    if (!bad && blocks)
        bad = json_object_set(q, "modules_in_block_to_quantize", blocks) != 0;
    if (!bad)
        bad = json_object_set(q, "dynamic", dynamic) != 0;
    json_decref(blocks);
    json_decref(dynamic);
    return bad ? -1 : 0;
}

int gptq__save_configs(gptq_ctx *ctx, const gptq_model *m, const char *dir, int32_t format,
                       int32_t bits)
{
    json_error_t jerr;
    json_t *config, *qdict = NULL;
    int rc = GPTQ_OK, bad;

    if (!m->cfg.config_text)
        return GPTQ_FAIL(ctx, GPTQ_ERR_INTERNAL, "%s: the model kept no copy of config.json",
                         m->dir);
    config = json_loads(m->cfg.config_text, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(config)) {
        json_decref(config);
        return GPTQ_FAIL(ctx, GPTQ_ERR_MALFORMED, "%s/config.json: line %d: %s", m->dir,
                         jerr.line, config ? "not a JSON object" : jerr.text);
    }
    /* Every tensor the saver writes is float16 or integer. Newer transformers also
     * write `dtype`; keep it consistent where the source has it. */
    bad = json_object_set_new(config, "torch_dtype", json_string("float16"));
    if (json_object_get(config, "dtype"))
        bad |= json_object_set_new(config, "dtype", json_string("float16"));
    if (format == 0) {
        json_object_del(config, "quantization_config"); /* a dequantized GPTQ source */
    } else {
        qdict = quant_dict(m, format, bits);
        bad |= !qdict || describe_float_linears(m, qdict) != 0 ||
               json_object_set(config, "quantization_config", qdict);
    }
    if (bad)
        rc = GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY, "out of memory building config.json");
    if (rc == GPTQ_OK)
        rc = write_json(ctx, dir, "config.json", config, 0);
    if (rc == GPTQ_OK && qdict)
        rc = write_json(ctx, dir, "quantize_config.json", qdict, 0);
    json_decref(qdict);
    json_decref(config);
    return rc;
}

/* ---- model.safetensors.index.json ----------------------------------------------- */

int gptq__save_index(gptq_ctx *ctx, const char *dir, int64_t count, const char *const *names,
                     const char *const *files, uint64_t total_size)
{
    json_t *map = json_object();
    json_t *doc = map ? json_pack("{s:{s:I}, s:O}", "metadata", "total_size",
                                  (json_int_t)total_size, "weight_map", map)
                      : NULL;
    int bad = !doc, rc;

    for (int64_t i = 0; i < count && !bad; i++)
        bad = json_object_set_new(map, names[i], json_string(files[i])) != 0;
    /* Sorted keys and indent 2, as transformers and GPTQModel write the index. */
    rc = bad ? GPTQ_FAIL(ctx, GPTQ_ERR_OUT_OF_MEMORY, "out of memory building the index")
             : write_json(ctx, dir, "model.safetensors.index.json", doc, 1);
    json_decref(doc);
    json_decref(map);
    return rc;
}

/* ---- tokenizer and generation files --------------------------------------------- */

/* What a loader reads besides config.json and the weights: Hugging Face tokenizers
 * (fast and slow), the sentencepiece model, the byte-level BPE files, llama2.c's
 * tokenizer.bin with its vocabulary, and the generation defaults. */
static const char *const aux_files[] = {
    "tokenizer.json",          "tokenizer_config.json", "tokenizer.model",
    "special_tokens_map.json", "generation_config.json", "vocab.json",
    "merges.txt",              "added_tokens.json",     "tokenizer.bin",
    "tokenizer_vocab.json",
};

/* Copy src to dst (which must not exist). 0, or an errno value with *step set. */
static int copy_file(const char *src, const char *dst, int *missing, const char **step)
{
    char buf[1 << 16];
    int in, out, err = 0;
    ssize_t n;

    *missing = 0;
    in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        *missing = errno == ENOENT;
        *step = "cannot open";
        return errno;
    }
    /* 0666 less the umask, the mode any new file gets. */
    out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (out < 0) {
        err = errno;
        *step = "cannot create the copy";
        close(in);
        return err;
    }
    while (!err && (n = read(in, buf, sizeof buf)) != 0) {
        if (n < 0) {
            if (errno != EINTR)
                err = errno, *step = "cannot read";
            continue;
        }
        for (ssize_t done = 0; !err && done < n;) {
            ssize_t w = write(out, buf + done, (size_t)(n - done));
            if (w < 0 && errno != EINTR)
                err = errno, *step = "cannot write the copy";
            else if (w > 0)
                done += w;
        }
    }
    if (!err && fsync(out) != 0)
        err = errno, *step = "cannot flush the copy";
    if (close(out) != 0 && !err)
        err = errno, *step = "cannot close the copy";
    close(in);
    return err;
}

int gptq__save_copy_tokenizer(gptq_ctx *ctx, const gptq_model *m, const char *dir)
{
    char src[4096], dst[4096];
    for (size_t i = 0; i < sizeof aux_files / sizeof aux_files[0]; i++) {
        const char *step = "";
        int missing, err;
        if ((size_t)snprintf(src, sizeof src, "%s/%s", m->dir, aux_files[i]) >= sizeof src ||
            (size_t)snprintf(dst, sizeof dst, "%s/%s", dir, aux_files[i]) >= sizeof dst)
            return GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT, "%s: path too long", dir);
        err = copy_file(src, dst, &missing, &step);
        if (err && missing)
            continue; /* the source simply has no such file */
        if (err)
            return GPTQ_FAIL(ctx, GPTQ_ERR_IO, "copying %s: %s: %s", src, step, strerror(err));
    }
    return GPTQ_OK;
}

/* ---- the directory: written aside, then renamed into place --------------------- */

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    (void)remove(path); /* best effort: keep removing the rest */
    return 0;
}

/* rm -rf, not following symbolic links. */
static void remove_tree(const char *path) { (void)nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* A fresh, unique sibling of `dir` (dir + suffix + 6 random characters) of the same
 * kind as `like_dir` says: a directory, or an empty file. */
static char *make_sibling(gptq_ctx *ctx, const char *dir, const char *suffix, int like_dir)
{
    size_t len = strlen(dir) + strlen(suffix) + 7;
    char *path = gptq__alloc(ctx, len + 1, "directory name");
    int fd;
    if (!path)
        return NULL;
    snprintf(path, len + 1, "%s%sXXXXXX", dir, suffix);
    if (like_dir ? mkdtemp(path) == NULL : (fd = mkstemp(path)) < 0) {
        GPTQ_FAIL(ctx, GPTQ_ERR_IO, "%s: cannot create %s beside it: %s", dir, path,
                  strerror(errno));
        gptq__free(path);
        return NULL;
    }
    if (!like_dir)
        close(fd);
    return path;
}

/* mkdtemp makes 0700 directories; the output should get what mkdir gives, 0777 less
 * the umask. */
static void set_dir_mode(const char *path)
{
    (void)chmod(path, (mode_t)(0777u & ~gptq__umask()));
}

static void sync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/* Move the complete temporary directory `tmp` to `dir`. Without force an existing
 * `dir` is an error; renameat2's RENAME_NOREPLACE makes that check atomic (plain
 * rename() would silently replace an empty directory). With force the old `dir` is
 * renamed aside first and removed only once the new one is in place, so a failure
 * in between puts it back: there is never neither. */
static int publish(gptq_ctx *ctx, const char *tmp, const char *dir, int32_t force)
{
    struct stat st;
    char *old;
    int err;

    sync_dir(tmp);
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_NOREPLACE) == 0)
        return GPTQ_OK;
    err = errno;
    if (err == EINVAL || err == ENOSYS) { /* a file system without RENAME_NOREPLACE */
        if (lstat(dir, &st) == 0)
            err = EEXIST;
        else if (rename(tmp, dir) == 0)
            return GPTQ_OK;
        else
            err = errno;
    }
    if (err != EEXIST && err != ENOTEMPTY)
        return GPTQ_FAIL(ctx, GPTQ_ERR_IO, "%s: cannot rename %s to it: %s", dir, tmp,
                         strerror(err));
    if (!force)
        return GPTQ_FAIL(ctx, GPTQ_ERR_IO, "%s exists; pass force to replace it", dir);
    if (lstat(dir, &st) != 0)
        return GPTQ_FAIL(ctx, GPTQ_ERR_IO, "%s: %s", dir, strerror(errno));
    /* Renaming onto a placeholder of the same kind (empty directory, empty file) is
     * atomic and the placeholder's name is unique. */
    old = make_sibling(ctx, dir, ".old-", S_ISDIR(st.st_mode));
    if (!old)
        return ctx->last_status;
    if (rename(dir, old) != 0) {
        err = errno;
        remove(old);
        gptq__free(old);
        return GPTQ_FAIL(ctx, GPTQ_ERR_IO, "%s: cannot move it aside: %s", dir, strerror(err));
    }
    if (rename(tmp, dir) != 0) {
        err = errno;
        (void)rename(old, dir);
        gptq__free(old);
        return GPTQ_FAIL(ctx, GPTQ_ERR_IO, "%s: cannot rename %s to it: %s", dir, tmp,
                         strerror(err));
    }
    remove_tree(old);
    gptq__free(old);
    return GPTQ_OK;
}

/* A copy of `dir` without trailing slashes: "out/" + ".tmp-XXXXXX" would be inside it. */
static char *clean_dir(gptq_ctx *ctx, const char *dir)
{
    size_t len = strlen(dir);
    char *copy;
    while (len > 1 && dir[len - 1] == '/')
        len--;
    copy = gptq__alloc(ctx, len + 1, "directory name");
    if (copy) {
        memcpy(copy, dir, len);
        copy[len] = '\0';
    }
    return copy;
}

/* 1 if `dir` is the model's directory or one of its ancestors: replacing it would
 * delete the files the model is still reading. (A symbolic link named `dir` is itself
 * replaced, never what it points to, hence lstat.) */
static int holds_model(const char *dir, const char *model_dir)
{
    struct stat sd, sa;
    char *real = realpath(model_dir, NULL), *slash;
    int hit = 0;
    if (real && lstat(dir, &sd) == 0) {
        for (;;) {
            if (stat(real, &sa) == 0 && sa.st_dev == sd.st_dev && sa.st_ino == sd.st_ino) {
                hit = 1;
                break;
            }
            slash = strrchr(real, '/');
            if (!slash || slash == real)
                break;
            *slash = '\0';
        }
    }
    free(real); /* realpath allocates with malloc */
    return hit;
}

int gptq__save_dir_begin(gptq_ctx *ctx, const gptq_model *m, const char *dir_arg, int32_t force,
                         char **tmp)
{
    struct stat st;
    char *dir = clean_dir(ctx, dir_arg);
    int rc = GPTQ_OK;

    *tmp = NULL;
    if (!dir)
        return GPTQ_ERR_OUT_OF_MEMORY;
    /* Fail before any work when the answer is already known; publish() checks again. */
    if (strcmp(dir, "/") == 0 || holds_model(dir, m->dir))
        rc = GPTQ_FAIL(ctx, GPTQ_ERR_INVALID_ARGUMENT,
                       "%s: cannot replace the directory the model is read from (or one "
                       "that contains it)",
                       dir);
    else if (!force && lstat(dir, &st) == 0)
        rc = GPTQ_FAIL(ctx, GPTQ_ERR_IO, "%s exists; pass force to replace it", dir);
    if (rc == GPTQ_OK) {
        *tmp = make_sibling(ctx, dir, ".tmp-", 1);
        rc = *tmp ? GPTQ_OK : ctx->last_status;
    }
    if (rc == GPTQ_OK)
        set_dir_mode(*tmp);
    gptq__free(dir);
    return rc;
}

int gptq__save_dir_end(gptq_ctx *ctx, char *tmp, const char *dir_arg, int32_t force, int rc)
{
    char *dir, *slash;
    if (!tmp)
        return rc;
    dir = rc == GPTQ_OK ? clean_dir(ctx, dir_arg) : NULL;
    if (rc == GPTQ_OK)
        rc = dir ? publish(ctx, tmp, dir, force) : GPTQ_ERR_OUT_OF_MEMORY;
    if (rc == GPTQ_OK) {
        /* Flush the new name too (best effort: the directory is complete by now). */
        slash = strrchr(dir, '/');
        if (slash && slash != dir) {
            *slash = '\0';
            sync_dir(dir);
        } else {
            sync_dir(slash ? "/" : ".");
        }
    } else {
        remove_tree(tmp);
    }
    gptq__free(dir);
    gptq__free(tmp);
    return rc;
}
