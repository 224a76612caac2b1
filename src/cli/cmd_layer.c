/*
 * `gptq layer`: quantize the one linear layer stored in a safetensors file.
 *
 *   parse flags -> context -> open CASE -> configuration -> W -> Hessian (H or X)
 *   -> gptq_layer_quantize -> pack + write RESULT -> summary line or JSON
 *
 * Output is written last, through the writer's temporary-file-and-rename, so a run
 * that fails anywhere leaves an existing RESULT untouched.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <gptq/gptq.h>
#include <gptq/safetensors.h>

#include "cli.h"
#include "layer.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Library warnings (for example a damp_percent raised after a failed Cholesky) are
 * worth seeing; errors are not logged here because every failing call's message is
 * printed from gptq_ctx_last_error() where it is handled. */
static void log_to_stderr(void *user, int32_t level, const char *msg)
{
    (void)user;
    if (level == GPTQ_LOG_WARN)
        fprintf(stderr, "gptq: warning: %s\n", msg);
}

static void print_json(FILE *f, const gptq_cli_layer_args *a, const gptq_result *r,
                       const gptq_config *cfg, const gptq_cli_layer_run *run)
{
    char loss[40], damp[40], damp_cfg[40], secs[40], hsecs[40];

    /* JSON has no NaN/Inf; the library refuses non-finite results, so the values
     * printed here are always finite. */
    gptq_cli_format_double(loss, sizeof loss, gptq_result_loss(r));
    gptq_cli_format_double(damp, sizeof damp, gptq_result_damp_percent(r));
    gptq_cli_format_double(damp_cfg, sizeof damp_cfg, cfg->damp_percent);
    gptq_cli_format_double(secs, sizeof secs, run->seconds);
    gptq_cli_format_double(hsecs, sizeof hsecs, run->hessian_seconds);
    fputs("{\"case\": ", f);
    gptq_cli_json_string(f, run->case_name);
    fputs(", \"input\": ", f);
    gptq_cli_json_string(f, a->input);
    fputs(", \"output\": ", f);
    gptq_cli_json_string(f, a->output);
    fprintf(f,
            ", \"out_features\": %lld, \"in_features\": %lld, \"ngroups\": %lld"
            ", \"codes_shape\": [%lld, %lld]"
            ", \"bits\": %d, \"group_size\": %d, \"sym\": %s, \"desc_act\": %s"
            ", \"static_groups\": %s, \"rtn\": %s, \"blocksize\": %d"
            ", \"checkpoint_format\": \"%s\", \"pack_mode\": \"%s\""
            ", \"loss\": %s, \"damp_percent\": %s, \"damp_percent_configured\": %s"
            ", \"dead_columns\": %lld, \"seconds\": %s, \"hessian_seconds\": %s"
            ", \"backend\": \"%s\", \"math\": \"%s\", \"libgptq_version\": ",
            (long long)gptq_result_out_features(r), (long long)gptq_result_in_features(r),
            (long long)gptq_result_ngroups(r), (long long)gptq_result_out_features(r),
            (long long)gptq_result_in_features(r), (int)cfg->bits, (int)cfg->group_size,
            cfg->sym ? "true" : "false", cfg->desc_act ? "true" : "false",
            cfg->static_groups ? "true" : "false", cfg->rtn ? "true" : "false",
            (int)cfg->block_size, gptq_cli_format_name(a->format),
            gptq_cli_pack_name(a->pack_mode), loss, damp, damp_cfg,
            (long long)gptq_result_dead_columns(r), secs, hsecs,
            gptq_backend_name(run->backend), a->math == GPTQ_MATH_TF32 ? "tf32" : "fp32");
    gptq_cli_json_string(f, gptq_version());
    fputs("}\n", f);
}

static void print_summary(FILE *f, const gptq_cli_layer_args *a, const gptq_result *r,
                          const gptq_config *cfg, const gptq_cli_layer_run *run)
{
    fprintf(f, "%s: %lldx%lld %d-bit g%d %s%s%s%s%s  loss=%.3e damp=%.4f time=%.3fs -> %s\n",
            run->case_name, (long long)gptq_result_out_features(r),
            (long long)gptq_result_in_features(r), (int)cfg->bits, (int)cfg->group_size,
            cfg->sym ? "sym" : "asym", cfg->desc_act ? " act" : "",
            cfg->static_groups ? " static" : "", cfg->rtn ? " rtn" : "",
            a->math == GPTQ_MATH_TF32 ? " tf32" : "",
            gptq_result_loss(r), gptq_result_damp_percent(r), run->seconds, a->output);
}

static int create_ctx(const gptq_cli_layer_args *a, gptq_ctx **ctx)
{
    gptq_ctx_options opts;
    char errbuf[512];

    gptq_ctx_options_init(&opts);
    opts.backend = a->backend;
    opts.device = a->device;
    opts.threads = a->threads;
    opts.math = a->math;
    if (!a->quiet) {
        opts.log = log_to_stderr;
        opts.log_level = GPTQ_LOG_WARN;
    }
    errbuf[0] = '\0';
    if (gptq_ctx_create(&opts, ctx, errbuf, sizeof errbuf) != GPTQ_OK) {
        gptq_cli_lib_error(a->input,
                           errbuf[0] != '\0' ? errbuf : "cannot create a context");
        return -1;
    }
    return 0;
}

/* Everything between opening the input and writing the output, with the resources
 * it owns, so the exit path frees them in one place. */
typedef struct layer_job {
    gptq_ctx *ctx;
    gptq_safetensors *st;
    float *w;
    gptq_hessian *h;
    gptq_result *r;
} layer_job;

static int run_layer(const gptq_cli_layer_args *a, layer_job *job, gptq_config *cfg,
                     gptq_cli_layer_run *run)
{
    int64_t out_f = 0, in_f = 0;
    double t0;

    if (gptq_safetensors_open(job->ctx, a->input, &job->st) != GPTQ_OK) {
        gptq_cli_lib_error(a->input, gptq_ctx_last_error(job->ctx));
        return -1;
    }
    if (gptq_cli_layer_config(job->st, a, cfg) != 0)
        return -1;
    if (gptq_config_validate(job->ctx, cfg) != GPTQ_OK) {
        gptq_cli_lib_error(a->input, gptq_ctx_last_error(job->ctx));
        return -1;
    }
    if (gptq_cli_layer_read_w(job->ctx, job->st, a->input, &job->w, &out_f, &in_f) != 0)
        return -1;

    /* RTN rounds each weight on its own: no Hessian, so H and X are not even read. */
    t0 = now_seconds();
    if (!cfg->rtn &&
        gptq_cli_layer_read_hessian(job->ctx, job->st, a->input, in_f, &job->h) != 0)
        return -1;
    run->hessian_seconds = cfg->rtn ? 0.0 : now_seconds() - t0;

    t0 = now_seconds();
    if (gptq_layer_quantize(job->ctx, job->w, out_f, in_f, job->h, cfg, &job->r) != GPTQ_OK) {
        gptq_cli_lib_error(a->input, gptq_ctx_last_error(job->ctx));
        return -1;
    }
    run->seconds = now_seconds() - t0;
    run->backend = gptq_ctx_backend(job->ctx);
    return gptq_cli_layer_write(job->ctx, a, job->r, run);
}

int gptq_cli_layer_main(int argc, char **argv)
{
    gptq_cli_layer_args a;
    gptq_cli_layer_run run;
    gptq_config cfg;
    layer_job job;
    char name[256];
    int rc;

    rc = gptq_cli_layer_parse(argc, argv, &a);
    if (rc != GPTQ_CLI_EXIT_OK) {
        fputs("Try 'gptq layer --help'.\n", stderr);
        return rc;
    }
    if (a.help) {
        gptq_cli_layer_usage(stdout);
        return GPTQ_CLI_EXIT_OK;
    }

    memset(&job, 0, sizeof job);
    memset(&run, 0, sizeof run);
    gptq_cli_stem(a.input, '/', ".safetensors", name, sizeof name);
    run.case_name = name;
    if (create_ctx(&a, &job.ctx) != 0)
        return GPTQ_CLI_EXIT_FAIL;

    rc = run_layer(&a, &job, &cfg, &run) == 0 ? GPTQ_CLI_EXIT_OK : GPTQ_CLI_EXIT_FAIL;
    if (rc == GPTQ_CLI_EXIT_OK && !a.quiet) {
        if (a.json)
            print_json(stdout, &a, job.r, &cfg, &run);
        else
            print_summary(stdout, &a, job.r, &cfg, &run);
        if (fflush(stdout) != 0) {
            gptq_cli_error("writing to standard output failed");
            rc = GPTQ_CLI_EXIT_FAIL;
        }
    }

    gptq_result_free(job.r);
    gptq_hessian_free(job.h);
    free(job.w);
    gptq_safetensors_free(job.st);
    gptq_ctx_free(job.ctx);
    return rc;
}
