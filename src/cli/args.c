/*
 * Command-line parsing for `gptq layer`, and the strict number parsers the command
 * also uses for `__metadata__` values.
 *
 * Numbers are parsed with strtol/strtod and rejected unless the whole argument was
 * consumed: "4x", "", " 4" and "1e999" are usage errors, not silently 4 or HUGE_VAL.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <gptq/gptq.h>

#include "cli.h"

void gptq_cli_error(const char *fmt, ...)
{
    va_list ap;
    fputs("gptq: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void gptq_cli_lib_error(const char *file, const char *message)
{
    size_t n = strlen(file);

    if (strncmp(message, file, n) == 0 && message[n] == ':')
        fprintf(stderr, "gptq: %s\n", message);
    else
        fprintf(stderr, "gptq: %s: %s\n", file, message);
}

int gptq_cli_parse_i32(const char *s, int32_t *out)
{
    char *end = NULL;
    long v;

    /* strtol skips leading blanks and accepts a sign; a leading blank would make
     * "--bits ' 4'" legal, which a strict parser should not. */
    if (s == NULL || *s == '\0' || *s == ' ' || *s == '\t')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < INT32_MIN || v > INT32_MAX)
        return -1;
    *out = (int32_t)v;
    return 0;
}

int gptq_cli_parse_double(const char *s, double *out)
{
    char *end = NULL;
    double v;

    if (s == NULL || *s == '\0' || *s == ' ' || *s == '\t')
        return -1;
    errno = 0;
    v = strtod(s, &end);
    /* ERANGE also fires on underflow to a subnormal; a damp that small is still a
     * number the library can judge, so only overflow and non-finite values fail. */
    if (end == s || *end != '\0' || !isfinite(v))
        return -1;
    if (errno == ERANGE && fabs(v) > 1.0)
        return -1;
    *out = v;
    return 0;
}

int gptq_cli_parse_bool(const char *s, int32_t *out)
{
    if (s == NULL)
        return -1;
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "1") == 0) {
        *out = 1;
        return 0;
    }
    if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "0") == 0) {
        *out = 0;
        return 0;
    }
    return -1;
}

const char *gptq_cli_pack_name(int32_t mode)
{
    switch (mode) {
    case GPTQ_PACK_CLEAN: return "clean";
    case GPTQ_PACK_AUTOGPTQ: return "autogptq";
    case GPTQ_PACK_GPTQMODEL: return "gptqmodel";
    default: return "unknown";
    }
}

const char *gptq_cli_format_name(int32_t format)
{
    return format == GPTQ_FORMAT_V2 ? "gptq_v2" : "gptq";
}

void gptq_cli_layer_usage(FILE *f)
{
    fputs(
        "Usage: gptq layer CASE.safetensors -o RESULT.safetensors [options]\n"
        "\n"
        "Quantize one linear layer with GPTQ. CASE holds W (F32 [out, in]) and either\n"
        "H (F32 [in, in]) or calibration inputs X (F32 [rows, in], split into sequences\n"
        "by the nsamples/seqlen metadata). The configuration defaults to CASE's\n"
        "__metadata__ (bits, group_size, sym, desc_act, static_groups, damp_percent,\n"
        "blocksize), then to the library defaults; options override both.\n"
        "\n"
        "Options:\n"
        "  -o, --output PATH     result file (written to a temporary file, then renamed)\n"
        "  --bits N              2, 3, 4 or 8\n"
        "  --group-size N        columns per group, -1 for one group per row\n"
        "  --sym | --asym        symmetric or asymmetric zero points\n"
        "  --act-order           process columns by descending diag(H) (desc_act)\n"
        "  --static-groups       fix group parameters before GPTQ runs\n"
        "  --damp F              damp_percent, 0 < F < 1\n"
        "  --block-size N        lazy-batch block width\n"
        "  --rtn                 plain round-to-nearest (needs neither H nor X)\n"
        "  --format v1|v2        checkpoint zero points: v1 'gptq' (zero - 1, default)\n"
        "                        or v2 'gptq_v2' (zero)\n"
        "  --pack MODE           clean (default), autogptq (AutoGPTQ's exact bytes, v1,\n"
        "                        dimensions multiples of 32) or gptqmodel\n"
        "  --backend B           cpu (default), cuda or auto\n"
        "  --device N            GPU ordinal for cuda/auto (default 0)\n"
        "  --threads N           worker threads, 0 = all cores (default)\n"
        "  --tf32                Hessian and block-update products with TF32 operands\n"
        "                        (10 mantissa bits, float32 sums): tensor cores with\n"
        "                        cuda; emulated, slower, on the CPU (preview)\n"
        "  --json                print one JSON object instead of the summary line\n"
        "  -q, --quiet           print nothing on success\n"
        "  -h, --help            show this help\n"
        "\n"
        "RESULT holds qweight, qzeros, scales (F16) and g_idx in the chosen layout, plus\n"
        "codes and Q [out, in] and zeros [ngroups, out] in original column order, perm\n"
        "with --act-order, and the configuration, loss and timing in __metadata__.\n"
        "Exit status: 0 success, 1 failure, 2 bad usage.\n",
        f);
}

/* Options that take a value. Kept in one table so `--name=value` and `--name value`
 * are handled by the same code. */
enum layer_opt {
    OPT_OUTPUT,
    OPT_BITS,
    OPT_GROUP_SIZE,
    OPT_DAMP,
    OPT_BLOCK_SIZE,
    OPT_FORMAT,
    OPT_PACK,
    OPT_BACKEND,
    OPT_DEVICE,
    OPT_THREADS,
    OPT_NONE
};

static const struct {
    const char *name;
    enum layer_opt id;
} valued_opts[] = {
    {"--output", OPT_OUTPUT},   {"--bits", OPT_BITS},   {"--group-size", OPT_GROUP_SIZE},
    {"--damp", OPT_DAMP},       {"--block-size", OPT_BLOCK_SIZE},
    {"--format", OPT_FORMAT},   {"--pack", OPT_PACK},   {"--backend", OPT_BACKEND},
    {"--device", OPT_DEVICE},   {"--threads", OPT_THREADS},
};

static int bad_value(const char *opt, const char *value, const char *want)
{
    gptq_cli_error("layer: %s: invalid value '%s' (%s)", opt, value, want);
    return GPTQ_CLI_EXIT_USAGE;
}

/* Apply one valued option. Ranges that are obvious from the flag alone are checked
 * here so they count as usage errors; combinations are left to
 * gptq_config_validate(), which knows the rules. */
static int apply_valued(gptq_cli_layer_args *a, enum layer_opt id, const char *opt,
                        const char *v)
{
    switch (id) {
    case OPT_OUTPUT:
        if (*v == '\0')
            return bad_value(opt, v, "a path");
        a->output = v;
        return 0;
    case OPT_BITS:
        if (gptq_cli_parse_i32(v, &a->bits) != 0 ||
            (a->bits != 2 && a->bits != 3 && a->bits != 4 && a->bits != 8))
            return bad_value(opt, v, "2, 3, 4 or 8");
        a->has_bits = 1;
        return 0;
    case OPT_GROUP_SIZE:
        if (gptq_cli_parse_i32(v, &a->group_size) != 0 ||
            (a->group_size != -1 && a->group_size < 1))
            return bad_value(opt, v, "-1 or a positive integer");
        a->has_group_size = 1;
        return 0;
    case OPT_DAMP:
        if (gptq_cli_parse_double(v, &a->damp_percent) != 0 || !(a->damp_percent > 0.0) ||
            !(a->damp_percent < 1.0))
            return bad_value(opt, v, "a number between 0 and 1, exclusive");
        a->has_damp = 1;
        return 0;
    case OPT_BLOCK_SIZE:
        if (gptq_cli_parse_i32(v, &a->block_size) != 0 || a->block_size < 1)
            return bad_value(opt, v, "a positive integer");
        a->has_block_size = 1;
        return 0;
    case OPT_FORMAT:
        if (strcmp(v, "v1") == 0 || strcmp(v, "gptq") == 0)
            a->format = GPTQ_FORMAT_V1;
        else if (strcmp(v, "v2") == 0 || strcmp(v, "gptq_v2") == 0)
            a->format = GPTQ_FORMAT_V2;
        else
            return bad_value(opt, v, "v1 or v2");
        return 0;
    case OPT_PACK:
        if (strcmp(v, "clean") == 0)
            a->pack_mode = GPTQ_PACK_CLEAN;
        else if (strcmp(v, "autogptq") == 0)
            a->pack_mode = GPTQ_PACK_AUTOGPTQ;
        else if (strcmp(v, "gptqmodel") == 0)
            a->pack_mode = GPTQ_PACK_GPTQMODEL;
        else
            return bad_value(opt, v, "clean, autogptq or gptqmodel");
        return 0;
    case OPT_BACKEND:
        if (strcmp(v, "cpu") == 0)
            a->backend = GPTQ_BACKEND_CPU;
        else if (strcmp(v, "cuda") == 0)
            a->backend = GPTQ_BACKEND_CUDA;
        else if (strcmp(v, "auto") == 0)
            a->backend = GPTQ_BACKEND_AUTO;
        else
            return bad_value(opt, v, "cpu, cuda or auto");
        return 0;
    case OPT_DEVICE:
        if (gptq_cli_parse_i32(v, &a->device) != 0 || a->device < 0)
            return bad_value(opt, v, "a non-negative integer");
        return 0;
    case OPT_THREADS:
        if (gptq_cli_parse_i32(v, &a->threads) != 0 || a->threads < 0)
            return bad_value(opt, v, "a non-negative integer");
        return 0;
    case OPT_NONE:
        break;
    }
    return GPTQ_CLI_EXIT_USAGE;
}

/* Options without a value; returns 1 if `arg` was one. */
static int apply_flag(gptq_cli_layer_args *a, const char *arg)
{
    if (strcmp(arg, "--sym") == 0) {
        a->sym = 1;
        a->has_sym = 1;
    } else if (strcmp(arg, "--asym") == 0) {
        a->sym = 0;
        a->has_sym = 1;
    } else if (strcmp(arg, "--act-order") == 0 || strcmp(arg, "--desc-act") == 0) {
        a->desc_act = 1;
        a->has_desc_act = 1;
    } else if (strcmp(arg, "--static-groups") == 0) {
        a->static_groups = 1;
        a->has_static_groups = 1;
    } else if (strcmp(arg, "--rtn") == 0) {
        a->rtn = 1;
    } else if (strcmp(arg, "--tf32") == 0) {
        a->math = GPTQ_MATH_TF32;
    } else if (strcmp(arg, "--json") == 0) {
        a->json = 1;
    } else if (strcmp(arg, "--quiet") == 0 || strcmp(arg, "-q") == 0) {
        a->quiet = 1;
    } else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
        a->help = 1;
    } else {
        return 0;
    }
    return 1;
}

/* Match `arg` against the valued options: "--name" (value in the next argument) or
 * "--name=value". Sets *inline_value for the second form. */
static enum layer_opt match_valued(const char *arg, const char **inline_value)
{
    size_t i;

    *inline_value = NULL;
    if (strcmp(arg, "-o") == 0)
        return OPT_OUTPUT;
    for (i = 0; i < sizeof valued_opts / sizeof valued_opts[0]; i++) {
        size_t n = strlen(valued_opts[i].name);
        if (strncmp(arg, valued_opts[i].name, n) != 0)
            continue;
        if (arg[n] == '\0')
            return valued_opts[i].id;
        if (arg[n] == '=') {
            *inline_value = arg + n + 1;
            return valued_opts[i].id;
        }
    }
    return OPT_NONE;
}

int gptq_cli_layer_parse(int argc, char **argv, gptq_cli_layer_args *a)
{
    int i, only_positional = 0;

    memset(a, 0, sizeof *a);
    a->format = GPTQ_FORMAT_V1;
    a->pack_mode = GPTQ_PACK_CLEAN;
    a->backend = GPTQ_BACKEND_CPU;

    for (i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value;
        enum layer_opt id;
        int rc;

        if (!only_positional && strcmp(arg, "--") == 0) {
            only_positional = 1;
            continue;
        }
        /* "-" alone is a positional (a file literally named "-" is unusual but
         * not ours to forbid); anything else starting with '-' is an option. */
        if (only_positional || arg[0] != '-' || arg[1] == '\0') {
            if (a->input != NULL) {
                gptq_cli_error("layer: unexpected argument '%s' (one input file only)", arg);
                return GPTQ_CLI_EXIT_USAGE;
            }
            a->input = arg;
            continue;
        }
        if (apply_flag(a, arg))
            continue;
        id = match_valued(arg, &value);
        if (id == OPT_NONE) {
            gptq_cli_error("layer: unknown option '%s'", arg);
            return GPTQ_CLI_EXIT_USAGE;
        }
        if (value == NULL) {
            if (i + 1 >= argc) {
                gptq_cli_error("layer: option '%s' needs a value", arg);
                return GPTQ_CLI_EXIT_USAGE;
            }
            value = argv[++i];
        }
        rc = apply_valued(a, id, arg, value);
        if (rc != 0)
            return rc;
    }
    if (a->help)
        return GPTQ_CLI_EXIT_OK;
    if (a->input == NULL) {
        gptq_cli_error("layer: no input file given");
        return GPTQ_CLI_EXIT_USAGE;
    }
    if (a->output == NULL) {
        gptq_cli_error("layer: no output file given (-o RESULT.safetensors)");
        return GPTQ_CLI_EXIT_USAGE;
    }
    /* AutoGPTQ's bytes only exist in its own (v1) layout; the library would refuse
     * this too, but it is a contradiction on the command line, not a failure. */
    if (a->pack_mode == GPTQ_PACK_AUTOGPTQ && a->format == GPTQ_FORMAT_V2) {
        gptq_cli_error("layer: --pack autogptq writes the v1 layout only (not --format v2)");
        return GPTQ_CLI_EXIT_USAGE;
    }
    return GPTQ_CLI_EXIT_OK;
}

void gptq_cli_stem(const char *s, char sep, const char *suffix, char *buf, size_t size)
{
    const char *base = strrchr(s, sep);
    size_t n, k = strlen(suffix);

    base = base != NULL ? base + 1 : s;
    n = strlen(base);
    if (n > k && strcmp(base + n - k, suffix) == 0)
        n -= k;
    if (n >= size)
        n = size - 1;
    memcpy(buf, base, n);
    buf[n] = '\0';
}
