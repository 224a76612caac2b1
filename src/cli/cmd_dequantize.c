/*
 * `gptq dequantize`: a GPTQ checkpoint back to a float16 Hugging Face checkpoint
 * (every quantized linear replaced by scale * (code - zero), no quantization_config),
 * for tools that cannot read GPTQ tensors, or to check a checkpoint: its perplexity
 * equals the GPTQ model's up to float16 rounding of the weights.
 *
 *   parse flags -> refuse an existing output -> context -> open GPTQ_DIR
 *   -> gptq_model_save_dequantized -> one line
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <gptq/gptq.h>
#include <gptq/model.h>

#include "cli.h"

void gptq_cli_dequantize_usage(FILE *f)
{
    fputs("Usage: gptq dequantize GPTQ_DIR -o OUT_DIR [options]\n"
          "\n"
          "Write a GPTQ checkpoint back as a float16 Hugging Face checkpoint: every\n"
          "quantized linear becomes scale * (code - zero), config.json loses its\n"
          "quantization_config; other tensors and the tokenizer files are copied.\n"
          "\n"
          "Options:\n"
          "  -o, --output DIR      output directory (written beside it, then renamed)\n"
          "  --force               replace an existing OUT_DIR\n"
          "  --threads N           worker threads, 0 = all cores (default)\n"
          "  -q, --quiet           print nothing on success\n"
          "  -h, --help            show this help\n"
          "\n"
          "Exit status: 0 success, 1 failure, 2 bad usage.\n",
          f);
}

typedef struct dequantize_args {
    const char *input, *output;
    int32_t threads;
    int force, quiet, help;
} dequantize_args;

enum { D_FORCE = 256, D_THREADS };

static const struct option dequantize_opts[] = {
    {"output", required_argument, NULL, 'o'},
    {"force", no_argument, NULL, D_FORCE},
    {"threads", required_argument, NULL, D_THREADS},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int parse(int argc, char **argv, dequantize_args *a)
{
    int c;

    memset(a, 0, sizeof *a);
    while ((c = gptq_cli_getopt(argc, argv, ":o:qh", dequantize_opts, "dequantize")) != -1) {
        switch (c) {
        case 'o':
            if (*optarg == '\0') {
                gptq_cli_error("dequantize: --output: invalid value '' (a directory)");
                return GPTQ_CLI_EXIT_USAGE;
            }
            a->output = optarg;
            break;
        case D_THREADS:
            if (gptq_cli_parse_i32(optarg, &a->threads) != 0 || a->threads < 0) {
                gptq_cli_error("dequantize: --threads: invalid value '%s' (a non-negative "
                               "integer)",
                               optarg);
                return GPTQ_CLI_EXIT_USAGE;
            }
            break;
        case D_FORCE: a->force = 1; break;
        case 'q': a->quiet = 1; break;
        case 'h': a->help = 1; break;
        default: return GPTQ_CLI_EXIT_USAGE;
        }
    }
    if (a->help)
        return GPTQ_CLI_EXIT_OK;
    if (optind >= argc) {
        gptq_cli_error("dequantize: no GPTQ checkpoint directory given");
        return GPTQ_CLI_EXIT_USAGE;
    }
    if (optind + 1 < argc) {
        gptq_cli_error("dequantize: unexpected argument '%s' (one directory only)",
                       argv[optind + 1]);
        return GPTQ_CLI_EXIT_USAGE;
    }
    a->input = argv[optind];
    if (a->output == NULL) {
        gptq_cli_error("dequantize: no output directory given (-o OUT_DIR)");
        return GPTQ_CLI_EXIT_USAGE;
    }
    return GPTQ_CLI_EXIT_OK;
}

int gptq_cli_dequantize_main(int argc, char **argv)
{
    dequantize_args a;
    gptq_ctx *ctx = NULL;
    gptq_model *m = NULL;
    double t0;
    int rc;

    rc = parse(argc, argv, &a);
    if (rc != GPTQ_CLI_EXIT_OK) {
        fputs("Try 'gptq dequantize --help'.\n", stderr);
        return rc;
    }
    if (a.help) {
        gptq_cli_dequantize_usage(stdout);
        return GPTQ_CLI_EXIT_OK;
    }
    if (gptq_cli_check_output(a.input, a.output, a.force) != 0)
        return GPTQ_CLI_EXIT_FAIL;
    if (gptq_cli_model_ctx(GPTQ_BACKEND_CPU, 0, a.threads, GPTQ_MATH_FP32, a.quiet, a.input, NULL,
                           &ctx) != 0)
        return GPTQ_CLI_EXIT_FAIL;

    rc = GPTQ_CLI_EXIT_FAIL;
    t0 = gptq_cli_now();
    if (gptq_model_open(ctx, a.input, &m) != GPTQ_OK)
        gptq_cli_lib_error(a.input, gptq_ctx_last_error(ctx));
    else if (!gptq_model_is_quantized(m))
        gptq_cli_error("%s: not a GPTQ checkpoint (no quantization_config): nothing to "
                       "dequantize",
                       a.input);
    else if (gptq_model_save_dequantized(ctx, m, a.output, a.force) != GPTQ_OK)
        gptq_cli_lib_error(a.output, gptq_ctx_last_error(ctx));
    else
        rc = GPTQ_CLI_EXIT_OK;

    if (rc == GPTQ_CLI_EXIT_OK && !a.quiet) {
        printf("dequantized %lld layers in %.1fs -> %s (float16)\n",
               (long long)gptq_model_num_layers(m), gptq_cli_now() - t0, a.output);
        if (fflush(stdout) != 0) {
            gptq_cli_error("writing to standard output failed");
            rc = GPTQ_CLI_EXIT_FAIL;
        }
    }
    gptq_model_free(m);
    gptq_ctx_free(ctx);
    return rc;
}
