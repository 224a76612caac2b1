/*
 * The `gptq` command: declarations shared by its files.
 *
 * The command is a client of the public API only (gptq/gptq.h, gptq/safetensors.h);
 * it never includes src/internal.h, so everything it does a user program can do too.
 *
 * Exit status, for every subcommand: 0 success, 1 failure (bad input file, library
 * error, I/O), 2 bad usage (unknown flag, missing argument, malformed number).
 */
#ifndef GPTQ_CLI_H
#define GPTQ_CLI_H

#include <stdint.h>
#include <stdio.h>

#define GPTQ_CLI_EXIT_OK 0
#define GPTQ_CLI_EXIT_FAIL 1
#define GPTQ_CLI_EXIT_USAGE 2

/* Everything `gptq layer` can be told on its command line. A `has_*` flag records
 * whether the option was given, because options override the input file's
 * `__metadata__`, which in turn overrides gptq_config_init(). */
typedef struct gptq_cli_layer_args {
    const char *input;
    const char *output;

    int has_bits, has_group_size, has_sym, has_desc_act, has_static_groups;
    int has_damp, has_block_size;
    int32_t bits;
    int32_t group_size;
    int32_t sym;
    int32_t desc_act;
    int32_t static_groups;
    double damp_percent;
    int32_t block_size;

    int32_t rtn;
    int32_t format;    /* GPTQ_FORMAT_V1 (default) or GPTQ_FORMAT_V2 */
    int32_t pack_mode; /* GPTQ_PACK_*, default GPTQ_PACK_CLEAN */
    int32_t backend;   /* GPTQ_BACKEND_*, default GPTQ_BACKEND_CPU */
    int32_t threads;   /* 0 = all cores */
    int json;
    int quiet;
    int help;
} gptq_cli_layer_args;

/* Strict number parsing: the whole string must be the number (no trailing text, no
 * empty string), in range. Return 0 on success, -1 otherwise (out untouched). */
int gptq_cli_parse_i32(const char *s, int32_t *out);
int gptq_cli_parse_double(const char *s, double *out);
/* "true"/"false" as the reference cases and Python write them ("True", "1", "0" are
 * accepted too). */
int gptq_cli_parse_bool(const char *s, int32_t *out);

/* Names used on the command line and in output metadata. */
const char *gptq_cli_pack_name(int32_t mode);
const char *gptq_cli_format_name(int32_t format); /* "gptq" or "gptq_v2" */

/* Parse argv of `gptq layer` (argv[0] is "layer"). Returns GPTQ_CLI_EXIT_OK or
 * GPTQ_CLI_EXIT_USAGE after printing the problem on stderr. */
int gptq_cli_layer_parse(int argc, char **argv, gptq_cli_layer_args *args);

void gptq_cli_layer_usage(FILE *f);

/* `gptq layer ...`: returns the process exit status. */
int gptq_cli_layer_main(int argc, char **argv);

/* Print "gptq: <fmt...>\n" on stderr. */
void gptq_cli_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* Print a library message about `file` as "gptq: FILE: MESSAGE". The library's
 * messages often name the file already ("FILE: header length ..."); then the prefix
 * is not repeated. */
void gptq_cli_lib_error(const char *file, const char *message);

#endif /* GPTQ_CLI_H */
