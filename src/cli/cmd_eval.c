/*
 * `gptq eval`: perplexity of a model (float or GPTQ) on a text or token file, and the
 * pieces every whole-model command shares (option parsing, context, token files,
 * output directory checks, JSON strings).
 *
 *   parse flags -> context -> open MODEL_DIR -> load TEXT -> gptq_model_eval -> print
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <gptq/gptq.h>
#include <gptq/model.h>

#include "cli.h"

/* ---- shared by the model commands -------------------------------------------------- */

double gptq_cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void gptq_cli_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

void gptq_cli_json_number(FILE *f, double v)
{
    char buf[40];

    if (!isfinite(v)) {
        fputs("null", f);
        return;
    }
    gptq_cli_format_double(buf, sizeof buf, v);
    fputs(buf, f);
}

int gptq_cli_parse_i64(const char *s, int64_t *out)
{
    char *end = NULL;
    long long v;

    if (s == NULL || *s < '0' || *s > '9') /* no blank, no sign */
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0)
        return -1;
    *out = (int64_t)v;
    return 0;
}

int gptq_cli_parse_backend(const char *s, int32_t *out)
{
    if (strcmp(s, "cpu") == 0)
        *out = GPTQ_BACKEND_CPU;
    else if (strcmp(s, "cuda") == 0)
        *out = GPTQ_BACKEND_CUDA;
    else if (strcmp(s, "auto") == 0)
        *out = GPTQ_BACKEND_AUTO;
    else
        return -1;
    return 0;
}

int gptq_cli_parse_tokens_kind(const char *s, int32_t *out)
{
    if (strcmp(s, "auto") == 0)
        *out = GPTQ_TOKENS_AUTO;
    else if (strcmp(s, "bytes") == 0)
        *out = GPTQ_TOKENS_BYTES;
    else if (strcmp(s, "ids") == 0)
        *out = GPTQ_TOKENS_IDS;
    else
        return -1;
    return 0;
}

/* getopt_long accepts any unambiguous prefix of a long option; `gptq layer` does not,
 * and a typo such as "--seq 256" silently meaning --seqlen is worse than an error.
 * The token getopt_long just consumed is argv[optind - 1], or argv[optind - 2] when
 * the value was the next argument. */
static int exact_long(char **argv, const struct option *o)
{
    const char *tok = argv[optind - 1];
    size_t n = strlen(o->name);

    if (o->has_arg == required_argument && optarg == argv[optind - 1] && optind >= 2)
        tok = argv[optind - 2];
    return strncmp(tok, "--", 2) == 0 && strncmp(tok + 2, o->name, n) == 0 &&
           (tok[2 + n] == '\0' || tok[2 + n] == '=');
}

int gptq_cli_getopt(int argc, char **argv, const char *shortopts,
                    const struct option *longopts, const char *cmd)
{
    int idx = -1, c;

    opterr = 0; /* our messages, in our format */
    c = getopt_long(argc, argv, shortopts, longopts, &idx);
    if (c == ':') {
        gptq_cli_error("%s: option '%s' needs a value", cmd, argv[optind - 1]);
        return '?';
    }
    if (c == '?') {
        const char *tok = argv[optind - 1];
        const char *eq = strchr(tok, '=');
        size_t i;

        if (strncmp(tok, "--", 2) != 0) {
            gptq_cli_error("%s: unknown option '-%c'", cmd, optopt > 0 && optopt < 128
                                                                ? optopt : '?');
            return '?';
        }
        /* "--json=1": a known flag given a value. */
        for (i = 0; eq != NULL && longopts[i].name != NULL; i++) {
            if (longopts[i].has_arg == no_argument &&
                strlen(longopts[i].name) == (size_t)(eq - tok - 2) &&
                strncmp(tok + 2, longopts[i].name, (size_t)(eq - tok - 2)) == 0) {
                gptq_cli_error("%s: option '--%s' takes no value", cmd, longopts[i].name);
                return '?';
            }
        }
        gptq_cli_error("%s: unknown option '%s'", cmd, tok);
        return '?';
    }
    if (idx >= 0 && !exact_long(argv, &longopts[idx])) {
        gptq_cli_error("%s: unknown option '%s' (did you mean '--%s'?)", cmd,
                       argv[optind - 1 - (optarg == argv[optind - 1] && optind >= 2)],
                       longopts[idx].name);
        return '?';
    }
    return c;
}

/* Library warnings (a damp raised after a failed Cholesky) are worth seeing; errors
 * are printed where each failing call is handled. */
static void log_to_stderr(void *user, int32_t level, const char *msg)
{
    if (level != GPTQ_LOG_WARN)
        return;
    if (user != NULL)
        gptq_cli_progress_status(user, NULL); /* the bar is redrawn at the next step */
    fprintf(stderr, "gptq: warning: %s\n", msg);
}

int gptq_cli_model_ctx(int32_t backend, int32_t device, int32_t threads, int32_t math,
                       int quiet, const char *what, struct gptq_cli_progress *bar,
                       gptq_ctx **out)
{
    gptq_ctx_options opts;
    char errbuf[512];

    gptq_ctx_options_init(&opts);
    opts.backend = backend;
    opts.device = device;
    opts.threads = threads;
    opts.math = math;
    if (!quiet) {
        opts.log = log_to_stderr;
        opts.log_user = bar;
        opts.log_level = GPTQ_LOG_WARN;
    }
    errbuf[0] = '\0';
    if (gptq_ctx_create(&opts, out, errbuf, sizeof errbuf) != GPTQ_OK) {
        gptq_cli_lib_error(what, errbuf[0] != '\0' ? errbuf : "cannot create a context");
        return -1;
    }
    return 0;
}

int gptq_cli_load_tokens(gptq_ctx *ctx, const char *path, int32_t kind, gptq_tokens **out)
{
    if (gptq_tokens_load(ctx, path, kind, out) != GPTQ_OK) {
        gptq_cli_lib_error(path, gptq_ctx_last_error(ctx));
        return -1;
    }
    return 0;
}

int gptq_cli_check_output(const char *input_dir, const char *output_dir, int force)
{
    struct stat in, out;

    if (stat(output_dir, &out) != 0)
        return 0; /* does not exist (or cannot be seen): the library will tell */
    if (stat(input_dir, &in) == 0 && in.st_dev == out.st_dev && in.st_ino == out.st_ino) {
        gptq_cli_error("%s: the output directory is the input directory", output_dir);
        return -1;
    }
    if (!force) {
        gptq_cli_error("%s: already exists (use --force to replace it)", output_dir);
        return -1;
    }
    return 0;
}

/* ---- gptq eval --------------------------------------------------------------------- */

void gptq_cli_eval_usage(FILE *f)
{
    fputs("Usage: gptq eval MODEL_DIR --text FILE [options]\n"
          "\n"
          "Perplexity of a model (a float Hugging Face checkpoint or a GPTQ one) on FILE:\n"
          "one sequence is cut into non-overlapping windows of --seqlen tokens (the tail\n"
          "is dropped); a file of several sequences (a JSON array of id arrays) is one\n"
          "window per sequence, cut to --seqlen. No BOS is added; the mean NLL of tokens\n"
          "1..len-1 of every window given their prefix is reported (the references'\n"
          "llama_eval).\n"
          "\n"
          "Options:\n"
          "  --text FILE           text or token ids to evaluate on\n"
          "  --text-format F       auto (default: JSON or safetensors ids, else bytes),\n"
          "                        bytes (the file's bytes are the tokens) or ids\n"
          "  --seqlen N            window length in tokens (default 2048)\n"
          "  --backend B           cpu (default), cuda or auto\n"
          "  --device N            GPU ordinal for cuda/auto (default 0)\n"
          "  --threads N           worker threads, 0 = all cores (default)\n"
          "  --json                print one JSON object instead of the summary line\n"
          "  -h, --help            show this help\n"
          "\n"
          "Prints: ppl P  nll N  tokens T  windows W  S s\n"
          "Exit status: 0 success, 1 failure, 2 bad usage.\n",
          f);
}

typedef struct eval_args {
    const char *model;
    const char *text;
    int32_t text_kind;
    int64_t seqlen;
    int32_t backend;
    int32_t device;
    int32_t threads;
    int json;
    int help;
} eval_args;

enum { E_TEXT = 256, E_TEXT_FORMAT, E_SEQLEN, E_BACKEND, E_DEVICE, E_THREADS, E_JSON };

static const struct option eval_opts[] = {
    {"text", required_argument, NULL, E_TEXT},
    {"text-format", required_argument, NULL, E_TEXT_FORMAT},
    {"seqlen", required_argument, NULL, E_SEQLEN},
    {"backend", required_argument, NULL, E_BACKEND},
    {"device", required_argument, NULL, E_DEVICE},
    {"threads", required_argument, NULL, E_THREADS},
    {"json", no_argument, NULL, E_JSON},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int eval_bad(const char *opt, const char *v, const char *want)
{
    gptq_cli_error("eval: --%s: invalid value '%s' (%s)", opt, v, want);
    return GPTQ_CLI_EXIT_USAGE;
}

static int eval_parse(int argc, char **argv, eval_args *a)
{
    int c;

    memset(a, 0, sizeof *a);
    a->seqlen = 2048;
    a->backend = GPTQ_BACKEND_CPU;
    a->text_kind = GPTQ_TOKENS_AUTO;
    while ((c = gptq_cli_getopt(argc, argv, ":h", eval_opts, "eval")) != -1) {
        switch (c) {
        case E_TEXT:
            if (*optarg == '\0')
                return eval_bad("text", optarg, "a file");
            a->text = optarg;
            break;
        case E_TEXT_FORMAT:
            if (gptq_cli_parse_tokens_kind(optarg, &a->text_kind) != 0)
                return eval_bad("text-format", optarg, "auto, bytes or ids");
            break;
        case E_SEQLEN:
            if (gptq_cli_parse_i64(optarg, &a->seqlen) != 0 || a->seqlen < 2)
                return eval_bad("seqlen", optarg, "an integer >= 2");
            break;
        case E_BACKEND:
            if (gptq_cli_parse_backend(optarg, &a->backend) != 0)
                return eval_bad("backend", optarg, "cpu, cuda or auto");
            break;
        case E_DEVICE:
            if (gptq_cli_parse_i32(optarg, &a->device) != 0 || a->device < 0)
                return eval_bad("device", optarg, "a non-negative integer");
            break;
        case E_THREADS:
            if (gptq_cli_parse_i32(optarg, &a->threads) != 0 || a->threads < 0)
                return eval_bad("threads", optarg, "a non-negative integer");
            break;
        case E_JSON: a->json = 1; break;
        case 'h': a->help = 1; break;
        default: return GPTQ_CLI_EXIT_USAGE;
        }
    }
    if (a->help)
        return GPTQ_CLI_EXIT_OK;
    if (optind >= argc) {
        gptq_cli_error("eval: no model directory given");
        return GPTQ_CLI_EXIT_USAGE;
    }
    if (optind + 1 < argc) {
        gptq_cli_error("eval: unexpected argument '%s' (one model directory only)",
                       argv[optind + 1]);
        return GPTQ_CLI_EXIT_USAGE;
    }
    a->model = argv[optind];
    if (a->text == NULL) {
        gptq_cli_error("eval: no evaluation data given (--text FILE)");
        return GPTQ_CLI_EXIT_USAGE;
    }
    return GPTQ_CLI_EXIT_OK;
}

static void eval_print_json(FILE *f, const eval_args *a, const gptq_eval_result *r)
{
    fputs("{\"model\": ", f);
    gptq_cli_json_string(f, a->model);
    fputs(", \"text\": ", f);
    gptq_cli_json_string(f, a->text);
    fprintf(f, ", \"seqlen\": %lld, \"ppl\": ", (long long)a->seqlen);
    gptq_cli_json_number(f, r->ppl);
    fputs(", \"nll\": ", f);
    gptq_cli_json_number(f, r->nll);
    fprintf(f, ", \"tokens\": %lld, \"windows\": %lld, \"seconds\": ", (long long)r->tokens,
            (long long)r->windows);
    gptq_cli_json_number(f, r->seconds);
    fputs("}\n", f);
}

int gptq_cli_eval_main(int argc, char **argv)
{
    eval_args a;
    gptq_ctx *ctx = NULL;
    gptq_model *m = NULL;
    gptq_tokens *text = NULL;
    gptq_eval_result r;
    int rc;

    rc = eval_parse(argc, argv, &a);
    if (rc != GPTQ_CLI_EXIT_OK) {
        fputs("Try 'gptq eval --help'.\n", stderr);
        return rc;
    }
    if (a.help) {
        gptq_cli_eval_usage(stdout);
        return GPTQ_CLI_EXIT_OK;
    }
    if (gptq_cli_model_ctx(a.backend, a.device, a.threads, GPTQ_MATH_FP32, 0, a.model, NULL,
                           &ctx) != 0)
        return GPTQ_CLI_EXIT_FAIL;

    rc = GPTQ_CLI_EXIT_FAIL;
    memset(&r, 0, sizeof r);
    r.struct_size = (uint32_t)sizeof r;
    if (gptq_model_open(ctx, a.model, &m) != GPTQ_OK) {
        gptq_cli_lib_error(a.model, gptq_ctx_last_error(ctx));
    } else if (gptq_cli_load_tokens(ctx, a.text, a.text_kind, &text) == 0) {
        if (gptq_model_eval(ctx, m, text, a.seqlen, &r) != GPTQ_OK)
            gptq_cli_lib_error(a.model, gptq_ctx_last_error(ctx));
        else
            rc = GPTQ_CLI_EXIT_OK;
    }
    if (rc == GPTQ_CLI_EXIT_OK) {
        if (a.json)
            eval_print_json(stdout, &a, &r);
        else
            printf("ppl %.6f  nll %.6f  tokens %lld  windows %lld  %.1fs\n", r.ppl, r.nll,
                   (long long)r.tokens, (long long)r.windows, r.seconds);
        if (fflush(stdout) != 0) {
            gptq_cli_error("writing to standard output failed");
            rc = GPTQ_CLI_EXIT_FAIL;
        }
    }
    gptq_tokens_free(text);
    gptq_model_free(m);
    gptq_ctx_free(ctx);
    return rc;
}
