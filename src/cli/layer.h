/*
 * `gptq layer`: the steps of the subcommand, one file each (input, output), driven by
 * cmd_layer.c. Every function prints its own error ("gptq: FILE: what") and returns
 * 0 on success, -1 on failure.
 */
#ifndef GPTQ_CLI_LAYER_H
#define GPTQ_CLI_LAYER_H

#include <gptq/gptq.h>
#include <gptq/safetensors.h>

#include "cli.h"

/* What the output metadata and the summary report besides the result itself. */
typedef struct gptq_cli_layer_run {
    const char *case_name;  /* input file name without folder and extension */
    double seconds;         /* gptq_layer_quantize() wall time */
    double hessian_seconds; /* building the Hessian (0 for --rtn) */
    int32_t backend;        /* the backend the context ended up with */
} gptq_cli_layer_run;

/* The configuration: gptq_config_init(), then the file's __metadata__, then flags. */
int gptq_cli_layer_config(const gptq_safetensors *st, const gptq_cli_layer_args *a,
                          gptq_config *cfg);

/* W as a new float32 buffer (free() it) and its shape. */
int gptq_cli_layer_read_w(gptq_ctx *ctx, const gptq_safetensors *st, const char *path,
                          float **w, int64_t *out_features, int64_t *in_features);

/* The Hessian: from H if the file has it, else accumulated from X. */
int gptq_cli_layer_read_hessian(gptq_ctx *ctx, const gptq_safetensors *st, const char *path,
                                int64_t in_features, gptq_hessian **out);

/* Pack the result and write every output tensor and the metadata to a->output. */
int gptq_cli_layer_write(gptq_ctx *ctx, const gptq_cli_layer_args *a, const gptq_result *r,
                         const gptq_cli_layer_run *run);

/* Shortest "%.*g" text of v that reads back as the same double. */
void gptq_cli_format_double(char *buf, size_t size, double v);

#endif /* GPTQ_CLI_LAYER_H */
