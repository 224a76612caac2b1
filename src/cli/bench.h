/*
 * `gptq bench matmul`: what its two halves share. cmd_bench.c parses the options, makes
 * the random layer and runs the CPU benchmark; cmd_bench_gpu.c runs the same layer on
 * the GPU (--backend cuda, or auto with a usable GPU). Every function prints its own
 * error ("gptq: bench: why").
 */
#ifndef GPTQ_CLI_BENCH_H
#define GPTQ_CLI_BENCH_H

#include <stdint.h>

#include <gptq/gptq.h>

/* The parsed options of `gptq bench matmul` (see gptq_cli_bench_usage). */
typedef struct gptq_cli_bench_args {
    int64_t out, in, batch, stream_mb;
    int32_t bits, group_size, threads, backend, device, kernel, reps;
    int act_order, warm, help;
} gptq_cli_bench_args;

/* Dimensions beyond what either benchmark allocates on the host (the layer's codes are
 * R x C int32 before packing). Says so and returns 1, else returns 0. */
int gptq_cli_bench_too_large(const gptq_cli_bench_args *a);

/* Random codes, zero points and float16 scales for a's shape, packed as a v1 checkpoint
 * into p (its buffers malloc'ed; gptq_cli_bench_free_packed them even on failure); wf
 * (NULL for none) gets the float32 dequantized weights, out x in. 0 or -1. */
int gptq_cli_bench_make_layer(gptq_ctx *ctx, const gptq_cli_bench_args *a, gptq_packed *p,
                              float *wf);
void gptq_cli_bench_free_packed(gptq_packed *p);

/* The benchmark on ctx's GPU (cmd_bench_gpu.c): prints its lines and returns the exit
 * status. */
int gptq_cli_bench_run_cuda(const gptq_cli_bench_args *a, gptq_ctx *ctx);

#endif /* GPTQ_CLI_BENCH_H */
