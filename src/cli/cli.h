/*
 * The `gptq` command: declarations shared by its files.
 *
 * The command is a client of the public API only (gptq/gptq.h, gptq/safetensors.h,
 * gptq/model.h); it never includes src/internal.h, so everything it does a user program
 * can do too.
 *
 * Exit status, for every subcommand: 0 success, 1 failure (bad input file, library
 * error, I/O), 2 bad usage (unknown flag, missing argument, malformed number).
 */
#ifndef GPTQ_CLI_H
#define GPTQ_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <gptq/gptq.h>
#include <gptq/model.h>

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
    int32_t device;    /* GPU ordinal for the CUDA backend, default 0 */
    int32_t threads;   /* 0 = all cores */
    int32_t math;      /* GPTQ_MATH_FP32 (default) or GPTQ_MATH_TF32 (--tf32) */
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

/* ---- whole-model commands: quantize, eval, dequantize, generate (gptq/model.h) ----- */

void gptq_cli_quantize_usage(FILE *f);
void gptq_cli_eval_usage(FILE *f);
void gptq_cli_dequantize_usage(FILE *f);
void gptq_cli_generate_usage(FILE *f);

/* `gptq quantize|eval|dequantize ...`: return the process exit status. */
int gptq_cli_quantize_main(int argc, char **argv);
int gptq_cli_eval_main(int argc, char **argv);
int gptq_cli_dequantize_main(int argc, char **argv);
int gptq_cli_generate_main(int argc, char **argv);

/* `gptq bench matmul ...` (cmd_bench.c): returns the process exit status. */
void gptq_cli_bench_usage(FILE *f);
int gptq_cli_bench_main(int argc, char **argv);

/* What the three model commands share (defined in cmd_eval.c).
 *
 * Option parsing: getopt_long with abbreviations refused ("--nsamp" is not
 * "--nsamples"), so every model command is as strict as `gptq layer`. Returns the
 * option's value as getopt_long does, -1 at the end, or '?' after printing
 * "gptq: CMD: unknown option / needs a value" on stderr. */
struct option;
int gptq_cli_getopt(int argc, char **argv, const char *shortopts,
                    const struct option *longopts, const char *cmd);

/* A context for a model command: backend, GPU ordinal, threads, math mode (GPTQ_MATH_*:
 * --tf32 of `gptq quantize`); library warnings printed on stderr
 * unless quiet, after erasing `bar`'s progress bar (bar may be NULL). Prints
 * "gptq: WHAT: message" and returns -1 on failure. */
struct gptq_cli_progress;
int gptq_cli_model_ctx(int32_t backend, int32_t device, int32_t threads, int32_t math,
                       int quiet, const char *what, struct gptq_cli_progress *bar,
                       gptq_ctx **out);

/* "cpu" | "cuda" | "auto" -> GPTQ_BACKEND_*; "auto" | "bytes" | "ids" -> GPTQ_TOKENS_*.
 * Return 0, or -1 for an unknown name. */
int gptq_cli_parse_backend(const char *s, int32_t *out);
int gptq_cli_parse_tokens_kind(const char *s, int32_t *out);

/* A non-negative count ("--nsamples 128"): strict, fits int64. */
int gptq_cli_parse_i64(const char *s, int64_t *out);

/* gptq_tokens_load() with the failure printed as "gptq: PATH: message". 0 or -1. */
int gptq_cli_load_tokens(gptq_ctx *ctx, const char *path, int32_t kind, gptq_tokens **out);

/* Before any work: refuse an output directory that exists (unless force) or that is
 * the input directory itself (force would delete the model being read). Prints
 * "gptq: OUT: ..." and returns -1; 0 if the output may be written. */
int gptq_cli_check_output(const char *input_dir, const char *output_dir, int force);

/* Monotonic wall clock in seconds. */
double gptq_cli_now(void);

/* A JSON string literal: quotes, backslashes and control bytes escaped. */
void gptq_cli_json_string(FILE *f, const char *s);

/* A JSON number, shortest round-trip form; NaN and Inf (which JSON lacks, and which
 * a diverged model's perplexity can be) as null. */
void gptq_cli_json_number(FILE *f, double v);

/* Shortest "%.*g" text of v that reads back as the same double (layer_output.c). */
void gptq_cli_format_double(char *buf, size_t size, double v);

/* Progress of `gptq quantize` (progress.c): the gptq_progress_fn callback draws a
 * one-line bar on `bar` (stderr on a terminal; NULL for none), prints one summary line
 * per decoder layer on `summary` (NULL for none) and records every module's loss, damp
 * and time for the JSON report. It asks the library to stop once SIGINT was seen. */
typedef struct gptq_cli_module_stat {
    int32_t layer;     /* 0-based, as in the tensor names */
    char name[64];     /* "self_attn.q_proj" */
    double loss;
    double damp_percent;
    double seconds;
} gptq_cli_module_stat;

typedef struct gptq_cli_progress {
    FILE *bar;
    FILE *summary;
    int32_t num_layers;
    gptq_cli_module_stat *mods; /* every module done, in order */
    size_t nmods, cap;
    double *layer_seconds;      /* [num_layers]: wall time of each layer */
    double layer_start;         /* `elapsed` when the current layer began */
    size_t layer_first;         /* index in mods of the current layer's first module */
    int drawn;                  /* characters of the bar on screen, 0 if none */
    int failed;                 /* out of memory while recording: stop */
} gptq_cli_progress;

/* Returns 0, or -1 (out of memory, message printed). */
int gptq_cli_progress_init(gptq_cli_progress *p, int32_t num_layers, FILE *bar,
                           FILE *summary);
void gptq_cli_progress_free(gptq_cli_progress *p);
/* The callback; `user` is a gptq_cli_progress. */
int gptq_cli_progress_fn(void *user, const gptq_progress *pr);
/* The records as a JSON array: [{"layer": 0, "seconds": S, "modules": {"self_attn.q_proj":
 * {"loss": L, "damp_percent": D, "seconds": S}, ...}}, ...]. */
void gptq_cli_progress_json(FILE *f, const gptq_cli_progress *p);
/* Draw a free-form status ("evaluating ...") in the bar's place; NULL erases the bar.
 * Does nothing without a bar. */
void gptq_cli_progress_status(gptq_cli_progress *p, const char *text);

/* SIGINT: the first one sets a flag (and says on a terminal that the command is
 * stopping); the handler is installed with SA_RESETHAND, so a second one ends the
 * process as usual. A SIGINT ignored on entry stays ignored. Install returns 0 or -1. */
int gptq_cli_sigint_install(void);
void gptq_cli_sigint_restore(void);
int gptq_cli_interrupted(void);

/* The part of `s` after its last `sep`, without a trailing `suffix`, into buf
 * ("dir/p01.safetensors", '/', ".safetensors" -> "p01"). */
void gptq_cli_stem(const char *s, char sep, const char *suffix, char *buf, size_t size);

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
