/*
 * The device copy of a prepared quantized linear (gptq_qlinear) and the launchers the
 * files of the module share: qlinear.cu (copies, routing, cuBLAS and MMA paths,
 * benchmark) and qlinear_gemv.cu (the fused GEMV kernel). Never installed.
 *
 * The copy is the host layout of src/format/qlinear.h as it is (codes, float16 scales,
 * byte zero points, colmap, zero-padded bias), plus blk_seg, the segment of every block
 * (the host keeps seg_blk, the first block of every segment), and the tensor-core layout
 * of qlinear_mma.cu when the layer is eligible.
 */
#ifndef GPTQ_CUDA_QLINEAR_DEV_H
#define GPTQ_CUDA_QLINEAR_DEV_H

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_internal.h"

extern "C" {
#include "format/qlinear.h"
}

typedef struct gptq_cu_ql {
    int device;              /* the ordinal the buffers live on */
    int sms;                 /* its multiprocessor count (launch shapes) */
    int32_t bits, kb, wpb;
    int64_t R, C, ntiles, nblk, cp, nseg;
    void *base;              /* one cudaMalloc holding every array below */
    size_t bytes;            /* its size */
    const uint32_t *codes;   /* [ntiles][nblk][wpb * 16] */
    const uint16_t *scales;  /* [ntiles][nseg][16] float16 bits */
    const uint8_t *zeros;    /* [ntiles][nseg][16] */
    const int32_t *blk_seg;  /* [nblk] segment of each block */
    const int32_t *colmap;   /* [cp] or NULL (identity, cp == C) */
    const float *bias;       /* [ntiles * 16] or NULL */
    void *mma;               /* gptq_cu_mma * or NULL */
    const char *mma_why;     /* why not, when mma is NULL (static text) */
} gptq_cu_ql;

/* Element i of an input of type dtype (GPTQ_QLINEAR_DTYPE_*), widened exactly. */
static __device__ __forceinline__ float gptq_cu_load_x(const void *x, int32_t dtype, int64_t i)
{
    if (dtype == GPTQ_QLINEAR_DTYPE_F16)
        return __half2float(((const __half *)x)[i]);
    if (dtype == GPTQ_QLINEAR_DTYPE_BF16)
        return __bfloat162float(((const __nv_bfloat16 *)x)[i]);
    return ((const float *)x)[i];
}

/* y[b][r] (float32, or float16 when y_half) = x[b] . W[r] + bias[r] for the `batch` rows
 * of x (x_dtype GPTQ_QLINEAR_DTYPE_*, rows C apart, original column order): the fused
 * GEMV kernel, any batch (launched per 8 rows). Device pointers; enqueued on st's
 * stream. Scratch: CU_SLOT_QL_WS and CU_SLOT_QL_CNT. */
int gptq_cu_ql_gemv(cu_state *st, const gptq_cu_ql *d, const void *x, int32_t x_dtype,
                    int64_t batch, void *y, int y_half);

/* At least n split-K arrival counters of st's stream, zero (CU_SLOT_QL_CNT: zeroed
 * when the slot grows; the GEMV and MMA kernels leave them at zero). NULL after
 * recording a failure. */
unsigned *gptq_cu_ql_counters(cu_state *st, size_t n, int *status);

#endif /* GPTQ_CUDA_QLINEAR_DEV_H */
