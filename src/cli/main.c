/*
 * `gptq`: the command-line front end of libgptq. This file only dispatches to the
 * subcommands (cmd_*.c) and answers --help and --version.
 *
 * Adding a subcommand: one cmd_<name>.c with an entry `int gptq_cli_<name>_main(int
 * argc, char **argv)` (argv[0] is the subcommand's name) and one row in `commands`.
 */
#include <stdio.h>
#include <string.h>

#include <gptq/gptq.h>

#include "cli.h"

typedef struct command {
    const char *name;
    const char *summary;
    int (*main)(int argc, char **argv);
    void (*usage)(FILE *f);
} command;

static const command commands[] = {
    {"quantize", "quantize a Hugging Face Llama-family model into a GPTQ checkpoint",
     gptq_cli_quantize_main, gptq_cli_quantize_usage},
    {"eval", "perplexity of a model (float or GPTQ) on a text or token file",
     gptq_cli_eval_main, gptq_cli_eval_usage},
    {"dequantize", "write a GPTQ checkpoint back as a float16 checkpoint",
     gptq_cli_dequantize_main, gptq_cli_dequantize_usage},
    {"generate", "continue a prompt with a model (float or GPTQ), tokens/s at the end",
     gptq_cli_generate_main, gptq_cli_generate_usage},
    {"layer", "quantize one linear layer stored in a safetensors file", gptq_cli_layer_main,
     gptq_cli_layer_usage},
    {"bench", "time the fused dequantize-matmul against OpenBLAS and memory bandwidth",
     gptq_cli_bench_main, gptq_cli_bench_usage},
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    size_t i;

    fputs("Usage: gptq COMMAND [options]\n"
          "       gptq --help | --version\n"
          "\n"
          "GPTQ post-training quantization (libgptq).\n"
          "\n"
          "Commands:\n",
          f);
    for (i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].summary);
    fputs("  help CMD    show the help of a command\n"
          "\n"
          "Run 'gptq COMMAND --help' for a command's options.\n"
          "Exit status: 0 success, 1 failure, 2 bad usage.\n",
          f);
}

/* The header this program was built with and the library it runs with can differ
 * (a newer libgptq.so.0 under an older binary); show both so bug reports say which.
 * Backends are not probed here: opening the CUDA module initialises the driver,
 * which is slow and can fail in ways --version should not depend on. */
static void version(FILE *f)
{
    fprintf(f, "gptq %s (libgptq %s)\n", GPTQ_VERSION_STRING, gptq_version());
}

static const command *find_command(const char *name)
{
    size_t i;

    for (i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static int help(int argc, char **argv)
{
    const command *cmd;

    if (argc < 2) {
        usage(stdout);
        return GPTQ_CLI_EXIT_OK;
    }
    cmd = find_command(argv[1]);
    if (cmd == NULL) {
        gptq_cli_error("help: unknown command '%s'", argv[1]);
        return GPTQ_CLI_EXIT_USAGE;
    }
    cmd->usage(stdout);
    return GPTQ_CLI_EXIT_OK;
}

int main(int argc, char **argv)
{
    const command *cmd;
    const char *arg;

    if (argc < 2) {
        usage(stderr);
        return GPTQ_CLI_EXIT_USAGE;
    }
    arg = argv[1];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
        usage(stdout);
        return GPTQ_CLI_EXIT_OK;
    }
    if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
        version(stdout);
        return GPTQ_CLI_EXIT_OK;
    }
    if (strcmp(arg, "help") == 0)
        return help(argc - 1, argv + 1);

    cmd = find_command(arg);
    if (cmd == NULL) {
        if (arg[0] == '-')
            gptq_cli_error("unknown option '%s'", arg);
        else
            gptq_cli_error("unknown command '%s'", arg);
        fputs("Try 'gptq --help'.\n", stderr);
        return GPTQ_CLI_EXIT_USAGE;
    }
    return cmd->main(argc - 1, argv + 1);
}
