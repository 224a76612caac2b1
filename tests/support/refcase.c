/*
 * Test support: reference cases and their judge (see refcase.h). Independent of the
 * library's own unpacking so that packing tests do not grade themselves.
 */
#include <cblas.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gptq/safetensors.h"
#include "refcase.h"

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

char **refcase_list(int *n)
{
    const char *dir = GPTQ_TEST_DATA "/gptq-reference";
    DIR *d = opendir(dir);
    struct dirent *e;
    char **list = NULL;
    int count = 0;

    *n = 0;
    if (!d)
        return NULL;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] != 'p' || len < 12 || strcmp(e->d_name + len - 12, ".safetensors") != 0)
            continue;
        list = realloc(list, sizeof(char *) * (size_t)(count + 1));
        list[count] = malloc(strlen(dir) + len + 2);
        sprintf(list[count], "%s/%s", dir, e->d_name);
        count++;
    }
    closedir(d);
    qsort(list, (size_t)count, sizeof(char *), cmp_str);
    *n = count;
    return list;
}

void refcase_list_free(char **list, int n)
{
    for (int i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

void refcase_unpack_axis0(const int32_t *words, int bits, int64_t n, int64_t cols, int32_t *vals)
{
    const uint32_t mask = (1u << bits) - 1u;
    int64_t nwords = (n * bits + 31) / 32;
    for (int64_t j = 0; j < n; j++) {
        int64_t bit = (int64_t)bits * j, w = bit / 32, off = bit % 32;
        for (int64_t c = 0; c < cols; c++) {
            uint64_t lo = (uint32_t)words[w * cols + c];
            uint64_t hi = w + 1 < nwords ? (uint32_t)words[(w + 1) * cols + c] : 0;
            vals[j * cols + c] = (int32_t)(((lo | (hi << 32)) >> off) & mask);
        }
    }
}

static const char *meta(const gptq_safetensors *st, const char *key, const char *def)
{
    const char *v = gptq_safetensors_metadata(st, key);
    return v ? v : def;
}

static void *read_f32(gptq_ctx *ctx, const gptq_safetensors *st, const char *name, int64_t n)
{
    gptq_tensor_info info;
    float *p;
    if (gptq_safetensors_find(st, name, &info) != GPTQ_OK)
        return NULL;
    p = malloc(sizeof(float) * (size_t)n);
    if (gptq_safetensors_read_f32(ctx, st, name, p, (size_t)n) != GPTQ_OK) {
        fprintf(stderr, "read %s: %s\n", name, gptq_ctx_last_error(ctx));
        free(p);
        return NULL;
    }
    return p;
}

static void *read_i32(gptq_ctx *ctx, const gptq_safetensors *st, const char *name, int64_t n)
{
    gptq_tensor_info info;
    int32_t *p;
    if (gptq_safetensors_find(st, name, &info) != GPTQ_OK)
        return NULL;
    p = malloc(sizeof(int32_t) * (size_t)n);
    if (gptq_safetensors_read_i32(ctx, st, name, p, (size_t)n) != GPTQ_OK) {
        fprintf(stderr, "read %s: %s\n", name, gptq_ctx_last_error(ctx));
        free(p);
        return NULL;
    }
    return p;
}

int refcase_load(const char *path, refcase *rc)
{
    gptq_ctx *ctx;
    gptq_safetensors *st;
    gptq_tensor_info info;
    const char *base = strrchr(path, '/');
    int ok = 0;

    memset(rc, 0, sizeof *rc);
    snprintf(rc->name, sizeof rc->name, "%s", base ? base + 1 : path);
    if (gptq_ctx_create(NULL, &ctx, NULL, 0) != GPTQ_OK)
        return -1;
    if (gptq_safetensors_open(ctx, path, &st) != GPTQ_OK) {
        fprintf(stderr, "%s: %s\n", path, gptq_ctx_last_error(ctx));
        gptq_ctx_free(ctx);
        return -1;
    }
    rc->bits = atoi(meta(st, "bits", "0"));
    rc->group_size = atoi(meta(st, "group_size", "0"));
    rc->sym = strcmp(meta(st, "sym", "true"), "true") == 0;
    rc->desc_act = strcmp(meta(st, "desc_act", "false"), "true") == 0;
    rc->static_groups = strcmp(meta(st, "static_groups", "false"), "true") == 0;
    rc->out = atoll(meta(st, "out_features", "0"));
    rc->in = atoll(meta(st, "in_features", "0"));
    rc->ng = atoll(meta(st, "ngroups", "0"));
    rc->nsamples = atoll(meta(st, "nsamples", "1"));
    rc->seqlen = atoll(meta(st, "seqlen", "0"));
    rc->codes_floor = atof(meta(st, "codes_equal_floor", "0.999"));

    rc->W = read_f32(ctx, st, "W", rc->out * rc->in);
    rc->H = read_f32(ctx, st, "H", rc->in * rc->in);
    rc->X = read_f32(ctx, st, "X", rc->nsamples * rc->seqlen * rc->in);
    rc->Q = read_f32(ctx, st, "Q", rc->out * rc->in);
    rc->scales_f32 = read_f32(ctx, st, "scales_f32", rc->ng * rc->out);
    rc->codes = read_i32(ctx, st, "codes", rc->out * rc->in);
    rc->zeros = read_i32(ctx, st, "zeros", rc->ng * rc->out);
    rc->g_idx = read_i32(ctx, st, "g_idx", rc->in);
    rc->perm = read_i32(ctx, st, "perm", rc->in);
    rc->qweight = read_i32(ctx, st, "qweight", rc->in * rc->bits / 32 * rc->out);
    rc->qzeros = read_i32(ctx, st, "qzeros", rc->ng * (rc->out * rc->bits / 32));
    if (gptq_safetensors_find(st, "scales", &info) == GPTQ_OK &&
        info.nbytes == (size_t)(rc->ng * rc->out) * 2) {
        rc->scales16 = malloc(info.nbytes);
        memcpy(rc->scales16, info.data, info.nbytes);
    }
    ok = rc->W && rc->X && rc->scales_f32 && rc->zeros && rc->g_idx && rc->qweight &&
         rc->qzeros && rc->scales16 && rc->bits && rc->out && rc->in && rc->ng;
    if (ok) {
        /* AutoGPTQ's packed codes, and GPTQ's codes / Q where a compact case omits them. */
        int32_t *t = malloc(sizeof(int32_t) * (size_t)(rc->in * rc->out));
        rc->codes_packed = malloc(sizeof(int32_t) * (size_t)(rc->in * rc->out));
        refcase_unpack_axis0(rc->qweight, rc->bits, rc->in, rc->out, t);
        for (int64_t j = 0; j < rc->in; j++)
            for (int64_t r = 0; r < rc->out; r++)
                rc->codes_packed[r * rc->in + j] = t[j * rc->out + r];
        free(t);
        if (!rc->codes) {
            rc->codes = malloc(sizeof(int32_t) * (size_t)(rc->in * rc->out));
            memcpy(rc->codes, rc->codes_packed, sizeof(int32_t) * (size_t)(rc->in * rc->out));
        }
        if (!rc->Q) {
            rc->Q = malloc(sizeof(float) * (size_t)(rc->in * rc->out));
            for (int64_t r = 0; r < rc->out; r++)
                for (int64_t j = 0; j < rc->in; j++) {
                    int64_t g = rc->g_idx[j];
                    rc->Q[r * rc->in + j] =
                        rc->scales_f32[g * rc->out + r] *
                        ((float)rc->codes[r * rc->in + j] - (float)rc->zeros[g * rc->out + r]);
                }
        }
    } else {
        fprintf(stderr, "%s: incomplete reference case\n", path);
    }
    gptq_safetensors_free(st);
    gptq_ctx_free(ctx);
    return ok ? 0 : -1;
}

void refcase_free(refcase *rc)
{
    free(rc->W);
    free(rc->H);
    free(rc->X);
    free(rc->Q);
    free(rc->scales_f32);
    free(rc->scales16);
    free(rc->codes);
    free(rc->codes_packed);
    free(rc->zeros);
    free(rc->g_idx);
    free(rc->perm);
    free(rc->qweight);
    free(rc->qzeros);
    memset(rc, 0, sizeof *rc);
}

int refcase_hessian(gptq_ctx *ctx, const refcase *rc, int use_x, gptq_hessian **out)
{
    int r;
    if (rc->H && !use_x)
        return gptq_hessian_create_from(ctx, rc->in, rc->H, rc->nsamples, out);
    r = gptq_hessian_create(ctx, rc->in, out);
    for (int64_t s = 0; r == GPTQ_OK && s < rc->nsamples; s++)
        r = gptq_hessian_add(ctx, *out, rc->X + s * rc->seqlen * rc->in, 1, rc->seqlen);
    return r;
}

void refcase_config(const refcase *rc, gptq_config *cfg)
{
    gptq_config_init(cfg);
    cfg->bits = rc->bits;
    cfg->group_size = rc->group_size;
    cfg->sym = rc->sym;
    cfg->desc_act = rc->desc_act;
    cfg->static_groups = rc->static_groups;
    cfg->damp_percent = 0.01;
    cfg->block_size = 128;
}

/* tr((Q - W) H (Q - W)^T) in double, H from the case or (compact cases) from X. */
static double layer_loss(const refcase *rc, const float *q, const double *h)
{
    const int64_t R = rc->out, C = rc->in;
    double *d = calloc((size_t)(R * C), sizeof(double));
    double *dh = calloc((size_t)(R * C), sizeof(double));
    double loss = 0.0;
    for (int64_t i = 0; i < R * C; i++)
        d[i] = (double)q[i] - (double)rc->W[i];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)R, (int)C, (int)C, 1.0, d, (int)C,
                h, (int)C, 0.0, dh, (int)C);
    for (int64_t i = 0; i < R * C; i++)
        loss += dh[i] * d[i];
    free(d);
    free(dh);
    return loss;
}

static double *hessian_f64(const refcase *rc)
{
    const int64_t C = rc->in;
    double *h = calloc((size_t)(C * C), sizeof(double));
    if (rc->H) {
        for (int64_t i = 0; i < C * C; i++)
            h[i] = rc->H[i];
        return h;
    }
    {
        int64_t rows = rc->nsamples * rc->seqlen;
        double *x = malloc(sizeof(double) * (size_t)(rows * C));
        for (int64_t i = 0; i < rows * C; i++)
            x[i] = rc->X[i];
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)C, (int)rows,
                    2.0 / (double)rc->nsamples, x, (int)C, 0.0, h, (int)C);
        for (int64_t i = 0; i < C; i++)
            for (int64_t j = 0; j < i; j++)
                h[i * C + j] = h[j * C + i];
        free(x);
    }
    return h;
}

judge refcase_judge(const refcase *rc, const int32_t *codes, const float *q, const float *scales,
                    const int32_t *zeros)
{
    const int64_t R = rc->out, C = rc->in, ng = rc->ng;
    judge j;
    int64_t eq = 0, compared = 0, pe = 0;
    int64_t *first = malloc(sizeof(int64_t) * (size_t)R);
    double *h;

    memset(&j, 0, sizeof j);
    for (int64_t r = 0; r < R; r++) {
        first[r] = C;
        for (int64_t k = 0; k < C; k++) {
            int64_t c = rc->perm ? rc->perm[k] : k;
            int32_t v = codes[r * C + c];
            int same = v == rc->codes[r * C + c] || v == rc->codes_packed[r * C + c];
            if (!same && first[r] == C)
                first[r] = k;
        }
    }
    for (int64_t i = 0; i < R * C; i++)
        eq += codes[i] == rc->codes[i] || codes[i] == rc->codes_packed[i];
    j.codes_equal = (double)eq / (double)(R * C);

    for (int64_t g = 0; g < ng; g++) {
        int64_t gstart = (rc->group_size == -1 || rc->static_groups) ? 0 : g * rc->group_size;
        for (int64_t r = 0; r < R; r++) {
            double sref, sprod, tol;
            if (first[r] < gstart)
                continue;
            compared++;
            sref = gptq_fp16_to_fp32(rc->scales16[g * R + r]);
            sprod = gptq_fp16_to_fp32(gptq_fp32_to_fp16(scales[g * R + r]));
            tol = fmax(fabs(sref) * ldexp(1.0, -10), ldexp(1.0, -24));
            pe += fabs(sprod - sref) <= tol && zeros[g * R + r] == rc->zeros[g * R + r];
        }
    }
    j.params_equal = compared ? (double)pe / (double)compared : 1.0;

    h = hessian_f64(rc);
    {
        double lref = layer_loss(rc, rc->Q, h), lprod = layer_loss(rc, q, h);
        j.loss_ratio = lref > 0 ? lprod / lref : (lprod == 0 ? 1.0 : INFINITY);
    }
    free(h);
    free(first);
    j.min_codes_equal = rc->codes_floor < 0.999 ? rc->codes_floor : 0.999;
    j.pass = j.codes_equal >= j.min_codes_equal && j.loss_ratio <= 1.01 && j.params_equal >= 0.999;
    return j;
}
