/*
 * `gptq generate`: continue a prompt with a float or GPTQ model (key/value cache,
 * greedy or sampled), printing the text as it comes and the speed at the end.
 *
 *   parse flags -> context -> open MODEL_DIR -> prompt ids -> gptq_model_generate
 *   (each token printed by the callback) -> "N tokens in S s (R tokens/s)"
 *
 * Tokens: a byte-level vocabulary (<= 256 ids, the bundled model) reads --prompt as its
 * bytes and prints bytes. Another model takes --prompt-ids; its output is decoded with
 * tokenizer_vocab.json (llama2.c's piece list, as stories260K ships it) when present,
 * else printed as ids. Hugging Face tokenizer.json is not read yet.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <gptq/gptq.h>
#include <gptq/model.h>

#include "cli.h"

void gptq_cli_generate_usage(FILE *f)
{
    fputs("Usage: gptq generate MODEL_DIR (--prompt TEXT | --prompt-ids IDS) [options]\n"
          "\n"
          "Continue a prompt with a model (float or GPTQ): the prompt runs in one pass,\n"
          "then one pass per new token with a key/value cache. The text is printed as it\n"
          "is generated; the speed goes to stderr at the end.\n"
          "\n"
          "Options:\n"
          "  --prompt TEXT         the prompt's bytes are its tokens (byte-level models)\n"
          "  --prompt-ids IDS      token ids, separated by commas or spaces\n"
          "  --max-tokens N        new tokens at most (default 128)\n"
          "  --temperature T       0 (default): greedy; > 0: sample from softmax(logits/T)\n"
          "  --top-k K             sample among the K most likely tokens (default 0: all)\n"
          "  --seed N              sampling seed (default 0)\n"
          "  --ignore-eos          go on past config.json's eos_token_id\n"
          "  --backend B           cpu (default), cuda or auto\n"
          "  --device N            GPU ordinal for cuda/auto (default 0)\n"
          "  --threads N           worker threads, 0 = all cores (default)\n"
          "  --json                print one JSON object (tokens, text, speed) instead\n"
          "  -h, --help            show this help\n"
          "\n"
          "Output decoding: bytes for a vocabulary of at most 256 ids; the pieces of\n"
          "tokenizer_vocab.json when the model directory has one; else the ids.\n"
          "Exit status: 0 success, 1 failure, 2 bad usage.\n",
          f);
}

typedef struct gen_args {
    const char *model, *prompt, *prompt_ids;
    int64_t max_tokens;
    double temperature;
    int32_t top_k, backend, device, threads;
    int64_t seed;
    int ignore_eos, json, help;
} gen_args;

enum { G_PROMPT = 256, G_PROMPT_IDS, G_MAX_TOKENS, G_TEMPERATURE, G_TOP_K, G_SEED,
       G_IGNORE_EOS, G_BACKEND, G_DEVICE, G_THREADS, G_JSON };

static const struct option gen_opts[] = {
    {"prompt", required_argument, NULL, G_PROMPT},
    {"prompt-ids", required_argument, NULL, G_PROMPT_IDS},
    {"max-tokens", required_argument, NULL, G_MAX_TOKENS},
    {"temperature", required_argument, NULL, G_TEMPERATURE},
    {"top-k", required_argument, NULL, G_TOP_K},
    {"seed", required_argument, NULL, G_SEED},
    {"ignore-eos", no_argument, NULL, G_IGNORE_EOS},
    {"backend", required_argument, NULL, G_BACKEND},
    {"device", required_argument, NULL, G_DEVICE},
    {"threads", required_argument, NULL, G_THREADS},
    {"json", no_argument, NULL, G_JSON},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int gen_bad(const char *opt, const char *v, const char *want)
{
    gptq_cli_error("generate: --%s: invalid value '%s' (%s)", opt, v, want);
    return GPTQ_CLI_EXIT_USAGE;
}

static int gen_parse(int argc, char **argv, gen_args *a)
{
    int c;

    memset(a, 0, sizeof *a);
    a->max_tokens = 128;
    a->backend = GPTQ_BACKEND_CPU;
    while ((c = gptq_cli_getopt(argc, argv, ":h", gen_opts, "generate")) != -1) {
        switch (c) {
        case G_PROMPT: a->prompt = optarg; break;
        case G_PROMPT_IDS: a->prompt_ids = optarg; break;
        case G_MAX_TOKENS:
            if (gptq_cli_parse_i64(optarg, &a->max_tokens) != 0)
                return gen_bad("max-tokens", optarg, "a non-negative integer");
            break;
        case G_TEMPERATURE:
            if (gptq_cli_parse_double(optarg, &a->temperature) != 0 || !(a->temperature >= 0))
                return gen_bad("temperature", optarg, "a number >= 0");
            break;
        case G_TOP_K:
            if (gptq_cli_parse_i32(optarg, &a->top_k) != 0 || a->top_k < 0)
                return gen_bad("top-k", optarg, "a non-negative integer");
            break;
        case G_SEED:
            if (gptq_cli_parse_i64(optarg, &a->seed) != 0)
                return gen_bad("seed", optarg, "a non-negative integer");
            break;
        case G_IGNORE_EOS: a->ignore_eos = 1; break;
        case G_BACKEND:
            if (gptq_cli_parse_backend(optarg, &a->backend) != 0)
                return gen_bad("backend", optarg, "cpu, cuda or auto");
            break;
        case G_DEVICE:
            if (gptq_cli_parse_i32(optarg, &a->device) != 0 || a->device < 0)
                return gen_bad("device", optarg, "a non-negative integer");
            break;
        case G_THREADS:
            if (gptq_cli_parse_i32(optarg, &a->threads) != 0 || a->threads < 0)
                return gen_bad("threads", optarg, "a non-negative integer");
            break;
        case G_JSON: a->json = 1; break;
        case 'h': a->help = 1; break;
        default: return GPTQ_CLI_EXIT_USAGE;
        }
    }
    if (a->help)
        return GPTQ_CLI_EXIT_OK;
    if (optind >= argc) {
        gptq_cli_error("generate: no model directory given");
        return GPTQ_CLI_EXIT_USAGE;
    }
    if (optind + 1 < argc) {
        gptq_cli_error("generate: unexpected argument '%s' (one model directory only; "
                       "quote the prompt)", argv[optind + 1]);
        return GPTQ_CLI_EXIT_USAGE;
    }
    a->model = argv[optind];
    if (!a->prompt == !a->prompt_ids) {
        gptq_cli_error("generate: give one of --prompt TEXT and --prompt-ids IDS");
        return GPTQ_CLI_EXIT_USAGE;
    }
    if (a->prompt && a->prompt[0] == '\0') {
        gptq_cli_error("generate: the prompt is empty");
        return GPTQ_CLI_EXIT_USAGE;
    }
    return GPTQ_CLI_EXIT_OK;
}

/* "1, 2 3" -> ids (malloc'ed). -1 on a malformed list. */
static int parse_ids(const char *s, int32_t **out, int64_t *n)
{
    int64_t cap = 16, k = 0;
    int32_t *ids = malloc(sizeof *ids * (size_t)cap);

    while (ids && *s) {
        char *end;
        long v;
        while (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n')
            s++;
        if (!*s)
            break;
        if (*s < '0' || *s > '9')
            break;
        errno = 0;
        v = strtol(s, &end, 10);
        if (errno != 0 || v > INT32_MAX)
            break;
        if (k == cap) {
            int32_t *grown = realloc(ids, sizeof *ids * (size_t)(cap *= 2));
            if (!grown)
                break;
            ids = grown;
        }
        ids[k++] = (int32_t)v;
        s = end;
    }
    if (!ids || *s || k == 0) {
        free(ids);
        return -1;
    }
    *out = ids;
    *n = k;
    return 0;
}

/* How new tokens become text: bytes, llama2.c pieces, or ids. */
typedef struct decoder {
    int bytes;            /* the id is the byte */
    char **pieces;        /* [npieces] or NULL */
    int64_t npieces;
    int32_t bos;
    int after_bos;        /* the previous token was BOS: drop a leading space */
    int first;            /* no id printed yet (for the separator) */
    FILE *f;              /* where text goes (NULL: nowhere, --json) */
    char *text;           /* everything decoded, for --json */
    size_t len, cap;
} decoder;

static void dec_put(decoder *d, const char *s, size_t n)
{
    if (d->f) {
        fwrite(s, 1, n, d->f);
        fflush(d->f);
    }
    if (d->len + n + 1 > d->cap) {
        size_t cap = (d->cap ? d->cap * 2 : 256) + n;
        char *grown = realloc(d->text, cap);
        if (!grown)
            return; /* the JSON text is then cut short; the ids are all there */
        d->text = grown;
        d->cap = cap;
    }
    memcpy(d->text + d->len, s, n);
    d->len += n;
    d->text[d->len] = '\0';
}

static void dec_token(decoder *d, int32_t id)
{
    char buf[24];
    const char *p;
    unsigned byte;

    if (d->bytes) {
        buf[0] = (char)id;
        dec_put(d, buf, 1);
        return;
    }
    if (!d->pieces || id < 0 || id >= d->npieces) {
        int n = snprintf(buf, sizeof buf, "%s%d", d->first ? "" : " ", (int)id);
        d->first = 0;
        dec_put(d, buf, (size_t)n);
        return;
    }
    p = d->pieces[id];
    if (id == d->bos || strcmp(p, "\n</s>\n") == 0) { /* markers, not text */
        d->after_bos = id == d->bos;
        return;
    }
    if (sscanf(p, "<0x%2X>", &byte) == 1 && strlen(p) == 6) {
        buf[0] = (char)byte;
        dec_put(d, buf, 1);
    } else {
        if (d->after_bos && p[0] == ' ')
            p++;
        dec_put(d, p, strlen(p));
    }
    d->after_bos = 0;
}

/* tokenizer_vocab.json in the model directory: {"bos_id": .., "pieces": [{"id", "piece"}]}. */
static void load_pieces(decoder *d, const char *dir)
{
    char path[4096];
    json_t *doc, *pieces;

    d->bos = -1;
    if ((size_t)snprintf(path, sizeof path, "%s/tokenizer_vocab.json", dir) >= sizeof path)
        return;
    doc = json_load_file(path, 0, NULL);
    pieces = json_object_get(doc, "pieces");
    if (json_is_array(pieces) && json_array_size(pieces) > 0) {
        d->npieces = (int64_t)json_array_size(pieces);
        d->pieces = calloc((size_t)d->npieces, sizeof *d->pieces);
        for (int64_t i = 0; d->pieces && i < d->npieces; i++) {
            json_t *e = json_array_get(pieces, (size_t)i);
            json_int_t id = json_integer_value(json_object_get(e, "id"));
            const char *s = json_string_value(json_object_get(e, "piece"));
            if (s && id >= 0 && id < d->npieces && !d->pieces[id])
                d->pieces[id] = strdup(s);
        }
        for (int64_t i = 0; d->pieces && i < d->npieces; i++)
            if (!d->pieces[i])
                d->pieces[i] = strdup("");
        if (json_is_integer(json_object_get(doc, "bos_id")))
            d->bos = (int32_t)json_integer_value(json_object_get(doc, "bos_id"));
    }
    json_decref(doc);
}

static void dec_free(decoder *d)
{
    for (int64_t i = 0; d->pieces && i < d->npieces; i++)
        free(d->pieces[i]);
    free(d->pieces);
    free(d->text);
}

typedef struct gen_job {
    decoder dec;
    int32_t *ids;    /* every new token, for --json */
    int64_t n, cap;
} gen_job;

static int on_token(void *user, int32_t token)
{
    gen_job *j = user;
    if (j->n < j->cap)
        j->ids[j->n++] = token;
    dec_token(&j->dec, token);
    return gptq_cli_interrupted() ? 1 : 0;
}

static void print_json(const gen_args *a, const gen_job *j, const gptq_generate_result *r)
{
    printf("{\"model\": ");
    gptq_cli_json_string(stdout, a->model);
    printf(", \"prompt_tokens\": %lld, \"new_tokens\": %lld, \"tokens\": [",
           (long long)r->prompt_tokens, (long long)r->new_tokens);
    for (int64_t i = 0; i < j->n; i++)
        printf("%s%d", i ? ", " : "", (int)j->ids[i]);
    printf("], \"text\": ");
    if (j->dec.bytes || j->dec.pieces)
        gptq_cli_json_string(stdout, j->dec.text ? j->dec.text : "");
    else
        fputs("null", stdout);
    printf(", \"prefill_seconds\": ");
    gptq_cli_json_number(stdout, r->prefill_seconds);
    printf(", \"decode_seconds\": ");
    gptq_cli_json_number(stdout, r->decode_seconds);
    printf(", \"tokens_per_second\": ");
    gptq_cli_json_number(stdout, r->decode_seconds > 0 ? (double)r->new_tokens / r->decode_seconds
                                                        : 0.0);
    printf("}\n");
}

int gptq_cli_generate_main(int argc, char **argv)
{
    gen_args a;
    gen_job job;
    gptq_ctx *ctx = NULL;
    gptq_model *m = NULL;
    gptq_generate_options o;
    gptq_generate_result r = {.struct_size = sizeof r};
    int32_t *prompt = NULL;
    int64_t np = 0;
    int rc = gen_parse(argc, argv, &a), status = GPTQ_CLI_EXIT_FAIL;

    if (rc != GPTQ_CLI_EXIT_OK || a.help) {
        if (a.help)
            gptq_cli_generate_usage(stdout);
        return rc;
    }
    memset(&job, 0, sizeof job);
    if (gptq_cli_model_ctx(a.backend, a.device, a.threads, GPTQ_MATH_FP32, 0, "generate", NULL,
                           &ctx) != 0)
        return GPTQ_CLI_EXIT_FAIL;
    if (gptq_model_open(ctx, a.model, &m) != GPTQ_OK) {
        gptq_cli_lib_error(a.model, gptq_ctx_last_error(ctx));
        goto done;
    }
    job.dec.bytes = gptq_model_vocab_size(m) <= 256;
    if (a.prompt) {
        if (!job.dec.bytes) {
            gptq_cli_error("generate: %s has %lld token ids, not bytes: give --prompt-ids "
                           "(tokenizer.json is not read yet)",
                           a.model, (long long)gptq_model_vocab_size(m));
            status = GPTQ_CLI_EXIT_USAGE;
            goto done;
        }
        np = (int64_t)strlen(a.prompt);
        prompt = malloc(sizeof *prompt * (size_t)np);
        for (int64_t i = 0; prompt && i < np; i++)
            prompt[i] = (unsigned char)a.prompt[i];
    } else if (parse_ids(a.prompt_ids, &prompt, &np) != 0) {
        status = gen_bad("prompt-ids", a.prompt_ids, "integers separated by commas or spaces");
        goto done;
    }
    if (!prompt) {
        gptq_cli_error("generate: out of memory");
        goto done;
    }
    if (!job.dec.bytes)
        load_pieces(&job.dec, a.model);
    job.dec.first = 1;
    job.dec.f = a.json ? NULL : stdout;
    job.cap = a.max_tokens;
    job.ids = malloc(sizeof *job.ids * (size_t)(job.cap > 0 ? job.cap : 1));
    if (!job.ids) {
        gptq_cli_error("generate: out of memory");
        goto done;
    }
    gptq_generate_options_init(&o);
    o.max_tokens = a.max_tokens;
    o.temperature = a.temperature;
    o.top_k = a.top_k;
    o.seed = (uint64_t)a.seed;
    o.stop_at_eos = !a.ignore_eos;
    o.on_token = on_token;
    o.user = &job;
    gptq_cli_sigint_install();
    /* The continuation reads on from the prompt: print it first (not in --json's text). */
    if (!a.json && job.dec.bytes) {
        fputs(a.prompt, stdout);
    } else if (!a.json && job.dec.pieces) {
        for (int64_t i = 0; i < np; i++)
            dec_token(&job.dec, prompt[i]);
        job.dec.len = 0;
    }
    if (gptq_model_generate(ctx, m, prompt, np, &o, NULL, 0, &r) != GPTQ_OK) {
        if (!a.json)
            putchar('\n');
        gptq_cli_lib_error(a.model, gptq_ctx_last_error(ctx));
        goto done;
    }
    if (a.json) {
        print_json(&a, &job, &r);
    } else {
        putchar('\n');
        fflush(stdout);
        fprintf(stderr, "%lld tokens in %.2fs (%.1f tokens/s); prompt %lld tokens in %.3fs\n",
                (long long)r.new_tokens, r.decode_seconds,
                r.decode_seconds > 0 ? (double)r.new_tokens / r.decode_seconds : 0.0,
                (long long)r.prompt_tokens, r.prefill_seconds);
    }
    status = GPTQ_CLI_EXIT_OK;
done:
    gptq_cli_sigint_restore();
    free(prompt);
    free(job.ids);
    dec_free(&job.dec);
    gptq_model_free(m);
    gptq_ctx_free(ctx);
    return status;
}
