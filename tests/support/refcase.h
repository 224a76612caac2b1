/*
 * Test support: the GPTQ reference cases (tests/data/gptq-reference) and the judge
 * rule of their README (tools/check_result.py), reimplemented in C.
 */
#ifndef GPTQ_TEST_REFCASE_H
#define GPTQ_TEST_REFCASE_H

#include <stdint.h>

#include "gptq/gptq.h"

typedef struct refcase {
    char name[128];
    int bits, group_size, sym, desc_act, static_groups;
    int64_t out, in, ng, nsamples, seqlen;
    double codes_floor;   /* codes_equal_floor from the metadata */
    float *W;             /* [out, in] */
    float *H;             /* [in, in] or NULL (compact cases) */
    float *X;             /* [nsamples*seqlen, in] */
    float *Q;             /* [out, in] (rebuilt when absent) */
    float *scales_f32;    /* [ng, out] */
    uint16_t *scales16;   /* [ng, out] */
    int32_t *codes;       /* [out, in] GPTQ's codes (unpacked from qweight when absent) */
    int32_t *codes_packed;/* [out, in] AutoGPTQ's packed codes */
    int32_t *zeros;       /* [ng, out] */
    int32_t *g_idx;       /* [in] */
    int32_t *perm;        /* [in] or NULL */
    int32_t *qweight;     /* [in*bits/32, out] */
    int32_t *qzeros;      /* [ng, out*bits/32] */
} refcase;

/* Paths of every reference case, sorted; *n receives the count. Free with
 * refcase_list_free. */
char **refcase_list(int *n);
void refcase_list_free(char **list, int n);

/* Load a case; 0 on success (prints the reason and returns -1 otherwise). */
int refcase_load(const char *path, refcase *rc);
void refcase_free(refcase *rc);

/* A Hessian for the case: from H when present (use_x = 0), else (or when use_x = 1)
 * accumulated from X one sequence per call, as the references do. */
int refcase_hessian(gptq_ctx *ctx, const refcase *rc, int use_x, gptq_hessian **out);

/* A configuration matching the case. */
void refcase_config(const refcase *rc, gptq_config *cfg);

typedef struct judge {
    double codes_equal;
    double loss_ratio;
    double params_equal;
    double min_codes_equal;
    int pass;
} judge;

/* The README's rule: codes_equal >= min(0.999, floor), loss_ratio <= 1.01,
 * params_equal >= 0.999. Codes, Q, scales (compared as float16) and zeros come from
 * the given arrays (original column order). */
judge refcase_judge(const refcase *rc, const int32_t *codes, const float *q,
                    const float *scales, const int32_t *zeros);

/* Unpack a v1 bit stream along axis 0 of words[nwords, cols] into vals[n, cols]. */
void refcase_unpack_axis0(const int32_t *words, int bits, int64_t n, int64_t cols, int32_t *vals);

#endif
