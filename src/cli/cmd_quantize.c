/*
 * `gptq quantize`: a Hugging Face Llama-family model in, a GPTQ checkpoint out.
 *
 *   parse flags -> refuse an existing output (before any work) -> context -> open
 *   MODEL_DIR -> load calibration (and --eval) tokens -> [perplexity before]
 *   -> gptq_model_quantize (progress bar, per-layer lines, SIGINT cancels)
 *   -> gptq_model_save -> [perplexity after] -> summary or JSON
 *
 * The checkpoint is saved before the "after" evaluation, so a failure there does not
 * throw away a finished quantization. Cancelling (Ctrl-C) during quantization writes
 * nothing: the library unwinds and the model is left as it was.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <gptq/gptq.h>
#include <gptq/model.h>

#include "cli.h"

void gptq_cli_quantize_usage(FILE *f)
{
    fputs(
        "Usage: gptq quantize MODEL_DIR -o OUT_DIR --calib FILE [options]\n"
        "\n"
        "Quantize every decoder-layer linear (q, k, v, o, gate, up, down) of a Hugging\n"
        "Face Llama, Mistral or Qwen2 model with GPTQ, layer by layer on calibration\n"
        "data, and write a GPTQ checkpoint (safetensors, config.json with\n"
        "quantization_config, quantize_config.json) that transformers, vLLM, TGI,\n"
        "AutoGPTQ and GPTQModel load.\n"
        "\n"
        "Calibration:\n"
        "  --calib FILE          calibration text or token ids (required)\n"
        "  --calib-format F      auto (default: JSON or safetensors ids, else bytes),\n"
        "                        bytes (the file's bytes are the tokens) or ids\n"
        "  --nsamples N          samples (default 128): windows drawn from one sequence\n"
        "                        as the references do, or the first N sequences\n"
        "  --seqlen N            tokens per sample (default 2048)\n"
        "  --seed N              window sampling seed, Python's random.seed (default 0)\n"
        "\n"
        "Quantization:\n"
        "  --bits N              2, 3, 4 (default) or 8\n"
        "  --group-size N        columns per group (default 128), -1 for one per row\n"
        "  --sym | --asym        symmetric (default) or asymmetric zero points\n"
        "  --act-order           columns by descending diag(H) (desc_act)\n"
        "  --static-groups       fix group parameters before GPTQ runs\n"
        "  --damp F              damp_percent, 0 < F < 1 (default 0.01)\n"
        "  --block-size N        lazy-batch block width (default 128)\n"
        "  --no-true-sequential  one Hessian pass per layer instead of\n"
        "                        [q,k,v] -> o -> [gate,up] -> down\n"
        "  --rtn                 plain round-to-nearest (calibration is still run)\n"
        "  --quantize-odd-shapes also quantize linears whose in/out features are not\n"
        "                        multiples of 32 (padded packing: only libgptq loads\n"
        "                        it); by default they stay float16 and are listed in\n"
        "                        quantization_config so other loaders keep them float\n"
        "\n"
        "Output:\n"
        "  -o, --output DIR      output directory (written beside it, then renamed)\n"
        "  --format F            gptq (v1, default) or gptq_v2\n"
        "  --pack MODE           clean (default), autogptq or gptqmodel (v1 words)\n"
        "  --max-shard-size S    split model.safetensors above S (default 4GB; units\n"
        "                        B, KB, MB, GB, TB, all powers of 1024)\n"
        "  --force               replace an existing OUT_DIR\n"
        "\n"
        "Evaluation:\n"
        "  --eval FILE           perplexity on FILE before and after quantization\n"
        "  --eval-format F       auto (default), bytes or ids\n"
        "  --eval-seqlen N       window length (default: --seqlen)\n"
        "\n"
        "Running:\n"
        "  --backend B           cpu (default), cuda or auto\n"
        "  --device N            GPU ordinal for cuda/auto (default 0)\n"
        "  --threads N           worker threads, 0 = all cores (default)\n"
        "  --tf32                Hessian and block-update products with TF32 operands\n"
        "                        (10 mantissa bits, float32 sums): tensor cores with\n"
        "                        cuda; emulated, slower, on the CPU (preview); changes\n"
        "                        about 1-2 % of codes (docs/benchmarks.md)\n"
        "  --json                print one JSON object at the end instead of the text\n"
        "  -q, --quiet           print nothing on success (no progress bar either)\n"
        "  -h, --help            show this help\n"
        "\n"
        "On a terminal a progress bar is drawn on stderr. One line per decoder layer\n"
        "gives each module's GPTQ loss, the damp used and the layer's time. Ctrl-C\n"
        "stops at the next module and writes nothing.\n"
        "Exit status: 0 success, 1 failure (or cancelled), 2 bad usage.\n",
        f);
}

typedef struct quantize_args {
    const char *model, *output, *calib, *eval;
    int32_t calib_kind, eval_kind;
    int64_t eval_seqlen; /* 0: --seqlen */
    gptq_quantize_options q;
    gptq_save_options s;
    int32_t backend, device, threads;
    int32_t math; /* GPTQ_MATH_*: --tf32 */
    int force, quiet, json, help;
} quantize_args;

enum {
    Q_CALIB = 256, Q_CALIB_FORMAT, Q_NSAMPLES, Q_SEQLEN, Q_SEED, Q_BITS, Q_GROUP_SIZE,
    Q_ACT_ORDER, Q_STATIC_GROUPS, Q_SYM, Q_ASYM, Q_DAMP, Q_BLOCK_SIZE, Q_NO_TRUE_SEQ,
    Q_FORMAT, Q_PACK, Q_RTN, Q_THREADS, Q_BACKEND, Q_DEVICE, Q_MAX_SHARD, Q_FORCE, Q_JSON, Q_EVAL,
    Q_EVAL_FORMAT, Q_EVAL_SEQLEN, Q_ODD_SHAPES, Q_TF32
};

static const struct option quantize_opts[] = {
    {"output", required_argument, NULL, 'o'},
    {"calib", required_argument, NULL, Q_CALIB},
    {"calib-format", required_argument, NULL, Q_CALIB_FORMAT},
    {"nsamples", required_argument, NULL, Q_NSAMPLES},
    {"seqlen", required_argument, NULL, Q_SEQLEN},
    {"seed", required_argument, NULL, Q_SEED},
    {"bits", required_argument, NULL, Q_BITS},
    {"group-size", required_argument, NULL, Q_GROUP_SIZE},
    {"act-order", no_argument, NULL, Q_ACT_ORDER},
    {"desc-act", no_argument, NULL, Q_ACT_ORDER},
    {"static-groups", no_argument, NULL, Q_STATIC_GROUPS},
    {"sym", no_argument, NULL, Q_SYM},
    {"asym", no_argument, NULL, Q_ASYM},
    {"damp", required_argument, NULL, Q_DAMP},
    {"block-size", required_argument, NULL, Q_BLOCK_SIZE},
    {"no-true-sequential", no_argument, NULL, Q_NO_TRUE_SEQ},
    {"format", required_argument, NULL, Q_FORMAT},
    {"pack", required_argument, NULL, Q_PACK},
    {"rtn", no_argument, NULL, Q_RTN},
    {"quantize-odd-shapes", no_argument, NULL, Q_ODD_SHAPES},
    {"threads", required_argument, NULL, Q_THREADS},
    {"backend", required_argument, NULL, Q_BACKEND},
    {"device", required_argument, NULL, Q_DEVICE},
    {"tf32", no_argument, NULL, Q_TF32},
    {"max-shard-size", required_argument, NULL, Q_MAX_SHARD},
    {"force", no_argument, NULL, Q_FORCE},
    {"quiet", no_argument, NULL, 'q'},
    {"json", no_argument, NULL, Q_JSON},
    {"eval", required_argument, NULL, Q_EVAL},
    {"eval-format", required_argument, NULL, Q_EVAL_FORMAT},
    {"eval-seqlen", required_argument, NULL, Q_EVAL_SEQLEN},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* "4GB", "500MB", "1.5GiB", "1024" (bytes): a decimal number and an optional unit,
 * every unit a power of 1024 (as transformers' max_shard_size reads "GB" loosely). */
static int parse_size(const char *s, int64_t *out)
{
    static const struct {
        const char *unit;
        double mult;
    } units[] = {
        {"", 1.0},           {"b", 1.0},
        {"k", 1024.0},       {"kb", 1024.0},       {"kib", 1024.0},
        {"m", 1048576.0},    {"mb", 1048576.0},    {"mib", 1048576.0},
        {"g", 1073741824.0}, {"gb", 1073741824.0}, {"gib", 1073741824.0},
        {"t", 1099511627776.0}, {"tb", 1099511627776.0}, {"tib", 1099511627776.0},
    };
    const char *p = s;
    char num[64];
    double v;
    size_t i, n;

    while ((*p >= '0' && *p <= '9') || *p == '.')
        p++;
    n = (size_t)(p - s);
    if (n == 0 || n >= sizeof num || s[0] == '.')
        return -1;
    memcpy(num, s, n);
    num[n] = '\0';
    if (gptq_cli_parse_double(num, &v) != 0)
        return -1;
    for (i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(p, units[i].unit) == 0) {
            v *= units[i].mult;
            if (!(v >= 1.0) || v > 9.0e18)
                return -1;
            *out = (int64_t)v;
            return 0;
        }
    }
    return -1;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    unsigned long long v;

    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = (uint64_t)v;
    return 0;
}

static int bad(const char *opt, const char *v, const char *want)
{
    gptq_cli_error("quantize: --%s: invalid value '%s' (%s)", opt, v, want);
    return GPTQ_CLI_EXIT_USAGE;
}

/* One option. Ranges obvious from the flag alone are usage errors here; combinations
 * (--rtn with --act-order, ...) are left to gptq_config_validate(). */
static int apply(quantize_args *a, int c, const char *v)
{
    gptq_config *cfg = &a->q.config;

    switch (c) {
    case 'o':
        if (*v == '\0')
            return bad("output", v, "a directory");
        a->output = v;
        break;
    case Q_CALIB:
        if (*v == '\0')
            return bad("calib", v, "a file");
        a->calib = v;
        break;
    case Q_EVAL:
        if (*v == '\0')
            return bad("eval", v, "a file");
        a->eval = v;
        break;
    case Q_CALIB_FORMAT:
        if (gptq_cli_parse_tokens_kind(v, &a->calib_kind) != 0)
            return bad("calib-format", v, "auto, bytes or ids");
        break;
    case Q_EVAL_FORMAT:
        if (gptq_cli_parse_tokens_kind(v, &a->eval_kind) != 0)
            return bad("eval-format", v, "auto, bytes or ids");
        break;
    case Q_NSAMPLES:
        if (gptq_cli_parse_i64(v, &a->q.nsamples) != 0 || a->q.nsamples < 1)
            return bad("nsamples", v, "a positive integer");
        break;
    case Q_SEQLEN:
        if (gptq_cli_parse_i64(v, &a->q.seqlen) != 0 || a->q.seqlen < 1)
            return bad("seqlen", v, "a positive integer");
        break;
    case Q_EVAL_SEQLEN:
        if (gptq_cli_parse_i64(v, &a->eval_seqlen) != 0 || a->eval_seqlen < 2)
            return bad("eval-seqlen", v, "an integer >= 2");
        break;
    case Q_SEED:
        if (parse_u64(v, &a->q.seed) != 0)
            return bad("seed", v, "a non-negative integer");
        break;
    case Q_BITS:
        if (gptq_cli_parse_i32(v, &cfg->bits) != 0 ||
            (cfg->bits != 2 && cfg->bits != 3 && cfg->bits != 4 && cfg->bits != 8))
            return bad("bits", v, "2, 3, 4 or 8");
        break;
    case Q_GROUP_SIZE:
        if (gptq_cli_parse_i32(v, &cfg->group_size) != 0 ||
            (cfg->group_size != -1 && cfg->group_size < 1))
            return bad("group-size", v, "-1 or a positive integer");
        break;
    case Q_DAMP:
        if (gptq_cli_parse_double(v, &cfg->damp_percent) != 0 || !(cfg->damp_percent > 0.0) ||
            !(cfg->damp_percent < 1.0))
            return bad("damp", v, "a number between 0 and 1, exclusive");
        break;
    case Q_BLOCK_SIZE:
        if (gptq_cli_parse_i32(v, &cfg->block_size) != 0 || cfg->block_size < 1)
            return bad("block-size", v, "a positive integer");
        break;
    case Q_FORMAT:
        if (strcmp(v, "gptq") == 0 || strcmp(v, "v1") == 0)
            a->s.format = GPTQ_FORMAT_V1;
        else if (strcmp(v, "gptq_v2") == 0 || strcmp(v, "v2") == 0)
            a->s.format = GPTQ_FORMAT_V2;
        else
            return bad("format", v, "gptq or gptq_v2");
        break;
    case Q_PACK:
        if (strcmp(v, "clean") == 0)
            a->s.pack_mode = GPTQ_PACK_CLEAN;
        else if (strcmp(v, "autogptq") == 0)
            a->s.pack_mode = GPTQ_PACK_AUTOGPTQ;
        else if (strcmp(v, "gptqmodel") == 0)
            a->s.pack_mode = GPTQ_PACK_GPTQMODEL;
        else
            return bad("pack", v, "clean, autogptq or gptqmodel");
        break;
    case Q_MAX_SHARD:
        if (parse_size(v, &a->s.max_shard_bytes) != 0)
            return bad("max-shard-size", v, "a size such as 4GB, 500MB or 1048576");
        break;
    case Q_BACKEND:
        if (gptq_cli_parse_backend(v, &a->backend) != 0)
            return bad("backend", v, "cpu, cuda or auto");
        break;
    case Q_DEVICE:
        if (gptq_cli_parse_i32(v, &a->device) != 0 || a->device < 0)
            return bad("device", v, "a non-negative integer");
        break;
    case Q_THREADS:
        if (gptq_cli_parse_i32(v, &a->threads) != 0 || a->threads < 0)
            return bad("threads", v, "a non-negative integer");
        break;
    case Q_ACT_ORDER: cfg->desc_act = 1; break;
    case Q_STATIC_GROUPS: cfg->static_groups = 1; break;
    case Q_SYM: cfg->sym = 1; break;
    case Q_ASYM: cfg->sym = 0; break;
    case Q_NO_TRUE_SEQ: a->q.true_sequential = 0; break;
    case Q_RTN: cfg->rtn = 1; break;
    case Q_ODD_SHAPES: a->q.quantize_odd_shapes = 1; break;
    case Q_TF32: a->math = GPTQ_MATH_TF32; break;
    case Q_FORCE: a->force = 1; break;
    case Q_JSON: a->json = 1; break;
    case 'q': a->quiet = 1; break;
    case 'h': a->help = 1; break;
    default: return GPTQ_CLI_EXIT_USAGE;
    }
    return GPTQ_CLI_EXIT_OK;
}

static int parse(int argc, char **argv, quantize_args *a)
{
    int c, rc;

    memset(a, 0, sizeof *a);
    gptq_quantize_options_init(&a->q);
    gptq_save_options_init(&a->s);
    a->backend = GPTQ_BACKEND_CPU;
    a->calib_kind = a->eval_kind = GPTQ_TOKENS_AUTO;
    while ((c = gptq_cli_getopt(argc, argv, ":o:qh", quantize_opts, "quantize")) != -1) {
        if (c == '?')
            return GPTQ_CLI_EXIT_USAGE;
        rc = apply(a, c, optarg);
        if (rc != GPTQ_CLI_EXIT_OK)
            return rc;
    }
    if (a->help)
        return GPTQ_CLI_EXIT_OK;
    if (optind >= argc) {
        gptq_cli_error("quantize: no model directory given");
        return GPTQ_CLI_EXIT_USAGE;
    }
    if (optind + 1 < argc) {
        gptq_cli_error("quantize: unexpected argument '%s' (one model directory only)",
                       argv[optind + 1]);
        return GPTQ_CLI_EXIT_USAGE;
    }
    a->model = argv[optind];
    if (a->output == NULL) {
        gptq_cli_error("quantize: no output directory given (-o OUT_DIR)");
        return GPTQ_CLI_EXIT_USAGE;
    }
    if (a->calib == NULL) {
        gptq_cli_error("quantize: no calibration data given (--calib FILE)");
        return GPTQ_CLI_EXIT_USAGE;
    }
    if (a->eval == NULL && a->eval_seqlen != 0) {
        gptq_cli_error("quantize: --eval-seqlen needs --eval FILE");
        return GPTQ_CLI_EXIT_USAGE;
    }
    /* AutoGPTQ's bytes exist only in its own (v1) layout. */
    if (a->s.pack_mode == GPTQ_PACK_AUTOGPTQ && a->s.format == GPTQ_FORMAT_V2) {
        gptq_cli_error("quantize: --pack autogptq writes the gptq (v1) layout only");
        return GPTQ_CLI_EXIT_USAGE;
    }
    if (a->eval_seqlen == 0)
        a->eval_seqlen = a->q.seqlen < 2 ? 2 : a->q.seqlen;
    return GPTQ_CLI_EXIT_OK;
}

/* ---- running ----------------------------------------------------------------------- */

/* What the run owns, freed in one place. */
typedef struct quantize_job {
    gptq_ctx *ctx;
    gptq_model *m;
    gptq_tokens *calib, *eval;
    gptq_cli_progress progress;
    gptq_eval_result before, after;
    double seconds;   /* gptq_model_quantize */
    double t_start;   /* the whole command */
    int cancelled;    /* reported as "gptq: cancelled" */
} quantize_job;

static int evaluate(const quantize_args *a, quantize_job *job, gptq_eval_result *r,
                    const char *which)
{
    char status[160];

    memset(r, 0, sizeof *r);
    r->struct_size = (uint32_t)sizeof *r;
    snprintf(status, sizeof status, "evaluating the %s model (seqlen %lld) ...", which,
             (long long)a->eval_seqlen);
    gptq_cli_progress_status(&job->progress, status);
    if (gptq_model_eval(job->ctx, job->m, job->eval, a->eval_seqlen, r) != GPTQ_OK) {
        gptq_cli_progress_status(&job->progress, NULL);
        gptq_cli_lib_error(a->eval, gptq_ctx_last_error(job->ctx));
        return -1;
    }
    gptq_cli_progress_status(&job->progress, NULL);
    return 0;
}

static int run(const quantize_args *a, quantize_job *job)
{
    gptq_quantize_options q = a->q;
    char status[96];
    double t0;
    int rc;

    if (gptq_config_validate(job->ctx, &q.config) != GPTQ_OK) {
        gptq_cli_lib_error("quantize", gptq_ctx_last_error(job->ctx));
        return -1;
    }
    if (gptq_model_open(job->ctx, a->model, &job->m) != GPTQ_OK) {
        gptq_cli_lib_error(a->model, gptq_ctx_last_error(job->ctx));
        return -1;
    }
    if (gptq_cli_load_tokens(job->ctx, a->calib, a->calib_kind, &job->calib) != 0)
        return -1;
    if (a->eval != NULL &&
        gptq_cli_load_tokens(job->ctx, a->eval, a->eval_kind, &job->eval) != 0)
        return -1;
    if (gptq_cli_progress_init(&job->progress, (int32_t)gptq_model_num_layers(job->m),
                               !a->quiet && isatty(STDERR_FILENO) ? stderr : NULL,
                               !a->quiet && !a->json ? stdout : NULL) != 0)
        return -1;

    if (job->eval != NULL && evaluate(a, job, &job->before, "float") != 0)
        return -1;
    if (gptq_cli_interrupted()) {
        job->cancelled = 1;
        return -1;
    }

    q.progress = gptq_cli_progress_fn;
    q.progress_user = &job->progress;
    snprintf(status, sizeof status, "layer 1/%lld  calibrating ...",
             (long long)gptq_model_num_layers(job->m));
    gptq_cli_progress_status(&job->progress, status);
    t0 = gptq_cli_now();
    rc = gptq_model_quantize(job->ctx, job->m, job->calib, &q);
    job->seconds = gptq_cli_now() - t0;
    gptq_cli_progress_status(&job->progress, NULL);
    if (rc == GPTQ_ERR_CANCELLED || (rc == GPTQ_OK && gptq_cli_interrupted())) {
        job->cancelled = !job->progress.failed; /* out of memory was already said */
        return -1;
    }
    if (rc != GPTQ_OK) {
        gptq_cli_lib_error(a->model, gptq_ctx_last_error(job->ctx));
        return -1;
    }

    if (gptq_model_save(job->ctx, job->m, a->output, &a->s) != GPTQ_OK) {
        gptq_cli_lib_error(a->output, gptq_ctx_last_error(job->ctx));
        return -1;
    }
    if (job->eval != NULL) {
        /* A Ctrl-C during saving could not stop it; honour it now. */
        if (gptq_cli_interrupted()) {
            gptq_cli_error("cancelled (after %s was written)", a->output);
            return -1;
        }
        if (evaluate(a, job, &job->after, "quantized") != 0)
            return -1;
    }
    return 0;
}

/* ---- reporting --------------------------------------------------------------------- */

static void print_text(FILE *f, const quantize_args *a, const quantize_job *job)
{
    const gptq_config *c = &a->q.config;

    fprintf(f, "quantized %lld layers in %.1fs: %d-bit g%d %s%s%s%s%s -> %s (%s)\n",
            (long long)gptq_model_num_layers(job->m), job->seconds, (int)c->bits,
            (int)c->group_size, c->sym ? "sym" : "asym", c->desc_act ? " act-order" : "",
            c->static_groups ? " static-groups" : "", c->rtn ? " rtn" : "",
            a->math == GPTQ_MATH_TF32 ? " tf32" : "", a->output,
            gptq_cli_format_name(a->s.format));
    if (job->eval != NULL)
        fprintf(f, "ppl before %.6f after %.6f (%+.2f%%; %s: %lld windows of %lld; "
                   "%.1fs + %.1fs)\n",
                job->before.ppl, job->after.ppl,
                100.0 * (job->after.ppl / job->before.ppl - 1.0), a->eval,
                (long long)job->after.windows, (long long)a->eval_seqlen,
                job->before.seconds, job->after.seconds);
}

static void print_json(FILE *f, const quantize_args *a, const quantize_job *job)
{
    const gptq_config *c = &a->q.config;

    fputs("{\"model\": ", f);
    gptq_cli_json_string(f, a->model);
    fputs(", \"output\": ", f);
    gptq_cli_json_string(f, a->output);
    fputs(", \"calib\": ", f);
    gptq_cli_json_string(f, a->calib);
    fprintf(f,
            ", \"bits\": %d, \"group_size\": %d, \"desc_act\": %s, \"sym\": %s"
            ", \"static_groups\": %s, \"rtn\": %s, \"true_sequential\": %s"
            ", \"block_size\": %d, \"damp_percent\": ",
            (int)c->bits, (int)c->group_size, c->desc_act ? "true" : "false",
            c->sym ? "true" : "false", c->static_groups ? "true" : "false",
            c->rtn ? "true" : "false", a->q.true_sequential ? "true" : "false",
            (int)c->block_size);
    gptq_cli_json_number(f, c->damp_percent);
    fprintf(f,
            ", \"nsamples\": %lld, \"seqlen\": %lld, \"seed\": %llu, \"format\": \"%s\""
            ", \"pack\": \"%s\", \"backend\": \"%s\", \"math\": \"%s\", \"seconds\": ",
            (long long)a->q.nsamples, (long long)a->q.seqlen, (unsigned long long)a->q.seed,
            gptq_cli_format_name(a->s.format), gptq_cli_pack_name(a->s.pack_mode),
            gptq_backend_name(gptq_ctx_backend(job->ctx)),
            a->math == GPTQ_MATH_TF32 ? "tf32" : "fp32");
    gptq_cli_json_number(f, job->seconds);
    fputs(", \"total_seconds\": ", f);
    gptq_cli_json_number(f, gptq_cli_now() - job->t_start);
    fputs(", \"layers\": ", f);
    gptq_cli_progress_json(f, &job->progress);
    if (job->eval != NULL) {
        fputs(", \"eval\": ", f);
        gptq_cli_json_string(f, a->eval);
        fprintf(f, ", \"eval_seqlen\": %lld, \"eval_windows\": %lld, \"eval_tokens\": %lld",
                (long long)a->eval_seqlen, (long long)job->after.windows,
                (long long)job->after.tokens);
        fputs(", \"ppl_before\": ", f);
        gptq_cli_json_number(f, job->before.ppl);
        fputs(", \"ppl_after\": ", f);
        gptq_cli_json_number(f, job->after.ppl);
        fputs(", \"nll_before\": ", f);
        gptq_cli_json_number(f, job->before.nll);
        fputs(", \"nll_after\": ", f);
        gptq_cli_json_number(f, job->after.nll);
        fputs(", \"eval_seconds_before\": ", f);
        gptq_cli_json_number(f, job->before.seconds);
        fputs(", \"eval_seconds_after\": ", f);
        gptq_cli_json_number(f, job->after.seconds);
    }
    fputs("}\n", f);
}

int gptq_cli_quantize_main(int argc, char **argv)
{
    quantize_args a;
    quantize_job job;
    int rc;

    rc = parse(argc, argv, &a);
    if (rc != GPTQ_CLI_EXIT_OK) {
        fputs("Try 'gptq quantize --help'.\n", stderr);
        return rc;
    }
    if (a.help) {
        gptq_cli_quantize_usage(stdout);
        return GPTQ_CLI_EXIT_OK;
    }
    /* Refuse an existing output now, not after an hour of quantization. */
    a.s.force = a.force;
    if (gptq_cli_check_output(a.model, a.output, a.force) != 0)
        return GPTQ_CLI_EXIT_FAIL;

    memset(&job, 0, sizeof job);
    job.t_start = gptq_cli_now();
    if (gptq_cli_model_ctx(a.backend, a.device, a.threads, a.math, a.quiet, a.model,
                           &job.progress, &job.ctx) != 0)
        return GPTQ_CLI_EXIT_FAIL;
    if (gptq_cli_sigint_install() != 0)
        gptq_cli_error("warning: cannot catch Ctrl-C; it will stop without cleaning up");

    rc = run(&a, &job) == 0 ? GPTQ_CLI_EXIT_OK : GPTQ_CLI_EXIT_FAIL;
    gptq_cli_sigint_restore();
    if (job.cancelled)
        gptq_cli_error("cancelled");
    if (rc == GPTQ_CLI_EXIT_OK && !a.quiet) {
        if (a.json)
            print_json(stdout, &a, &job);
        else
            print_text(stdout, &a, &job);
        if (fflush(stdout) != 0) {
            gptq_cli_error("writing to standard output failed");
            rc = GPTQ_CLI_EXIT_FAIL;
        }
    }

    gptq_cli_progress_free(&job.progress);
    gptq_tokens_free(job.eval);
    gptq_tokens_free(job.calib);
    gptq_model_free(job.m);
    gptq_ctx_free(job.ctx);
    return rc;
}
