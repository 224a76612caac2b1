/*
 * `gptq bench matmul --backend cuda` (or auto on a machine with a usable GPU): the GPU
 * half of the benchmark. The random layer of cmd_bench.c (bench.h) is prepared on the
 * GPU and timed there by gptq_qlinear_bench_device, against cuBLAS on dense float16
 * weights; the last line is machine-readable:
 *
 *   gbps=<achieved> bw_share=<of the GPU's theoretical bandwidth> speedup_vs_fp16=<x>
 *
 * with gbps counted as on the CPU (prepared weights, x and y over the time of one call),
 * x and y being float16 here. Options parsing, the layer and the CPU benchmark are in
 * cmd_bench.c.
 */
#include <stdint.h>
#include <stdio.h>

#include <gptq/gptq.h>

#include "bench.h"
#include "cli.h"

/* The layer prepared on ctx's GPU, timed by gptq_qlinear_bench_device: `reps` calls over
 * copies of the device weights beyond twice the L2 cache, captured in one CUDA graph and
 * timed with CUDA events (so the figure is the mean time of one call, not a median), and
 * cuBLAS's float16 GEMM on dense [out, in] float16 weights timed the same way.
 *
 * Byte accounting, as the CPU path counts it: the bytes one call must move, i.e. the
 * prepared weights (gptq_qlinear_weight_bytes) plus x [batch, in] and y [batch, out].
 * On the GPU x and y are float16, so they count 2 bytes an element where the CPU path
 * counts 4 for its float32 x and y; the cuBLAS line counts its float16 weights (2 bytes
 * an element) plus the same x and y. bw_share divides gbps by the GPU's theoretical
 * bandwidth (gptq_ctx_device_bandwidth: memory clock x bus width x 2), where the CPU
 * path divides by the best STREAM figure it measured. */
int gptq_cli_bench_run_cuda(const gptq_cli_bench_args *a, gptq_ctx *ctx)
{
    const int64_t R = a->out, C = a->in, M = a->batch;
    gptq_packed p;
    gptq_qlinear *ql = NULL;
    double bw = 0.0, sec = 0.0, f16 = 0.0, wbytes, io_bytes, fbytes, gbps;
    int32_t used = -1;
    int rc = GPTQ_CLI_EXIT_FAIL;

    if (gptq_cli_bench_too_large(a))
        return GPTQ_CLI_EXIT_USAGE;
    if (gptq_ctx_device_bandwidth(ctx, &bw) != GPTQ_OK) {
        gptq_cli_error("bench: %s", gptq_ctx_last_error(ctx));
        return GPTQ_CLI_EXIT_FAIL;
    }
    if (gptq_cli_bench_make_layer(ctx, a, &p, NULL) != 0)
        goto done;
    if (gptq_qlinear_create(ctx, &p, NULL, &ql) != GPTQ_OK) {
        gptq_cli_error("bench: %s", gptq_ctx_last_error(ctx));
        goto done;
    }
    if (gptq_qlinear_set_kernel(ctx, ql, a->kernel) != GPTQ_OK) {
        gptq_cli_error("bench: --kernel %s: %s", gptq_qlinear_kernel_name(a->kernel),
                       gptq_ctx_last_error(ctx));
        goto done;
    }
    wbytes = (double)gptq_qlinear_weight_bytes(ql);
    io_bytes = (double)(M * (C + R)) * sizeof(uint16_t);
    fbytes = (double)(R * C) * sizeof(uint16_t);
    printf("layer %lld x %lld (out x in), %d-bit, group %d%s, batch %lld, kernel %s "
           "(GPU %d, theoretical bandwidth %.2f GB/s)\n",
           (long long)R, (long long)C, a->bits, a->group_size, a->act_order ? ", act-order" : "",
           (long long)M, gptq_qlinear_kernel_name(a->kernel), a->device, bw * 1e-9);
    fflush(stdout);

    if (gptq_qlinear_bench_device(ctx, ql, M, a->reps, &used, &sec, &f16) != GPTQ_OK) {
        gptq_cli_error("bench: %s", gptq_ctx_last_error(ctx));
        goto done;
    }
    if (!(sec > 0.0) || !(f16 > 0.0) || !(bw > 0.0)) {
        gptq_cli_error("bench: the device reported a time or bandwidth that is not positive "
                       "(kernel %g s, cuBLAS %g s, %g B/s)",
                       sec, f16, bw);
        goto done;
    }
    gbps = (wbytes + io_bytes) / sec * 1e-9;
    printf("qlinear   mean %10.1f us  %7.2f GB/s  (%s; %.2f MB prepared weights + %.2f MB x, y "
           "in float16; %d calls, weights from device memory)\n",
           sec * 1e6, gbps, gptq_qlinear_kernel_name(used), wbytes * 1e-6, io_bytes * 1e-6,
           a->reps);
    printf("cublas    mean %10.1f us  %7.2f GB/s  (cublasGemmEx float16, %.2f MB float16 "
           "weights + %.2f MB x, y)\n",
           f16 * 1e6, (fbytes + io_bytes) / f16 * 1e-9, fbytes * 1e-6, io_bytes * 1e-6);
    printf("device    theoretical %.2f GB/s  (memory clock x bus width x 2)\n", bw * 1e-9);
    printf("gbps=%.2f bw_share=%.2f speedup_vs_fp16=%.2f\n", gbps, gbps / (bw * 1e-9), f16 / sec);
    rc = fflush(stdout) == 0 ? GPTQ_CLI_EXIT_OK : GPTQ_CLI_EXIT_FAIL;

done:
    gptq_qlinear_free(ql);
    gptq_cli_bench_free_packed(&p);
    return rc;
}
