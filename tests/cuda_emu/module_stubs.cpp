/*
 * What the emulated files of the CUDA module (src/cuda/qlinear.cu, qlinear_gemv.cu,
 * qlinear_mma.cu, quant_block.cu) take from the rest of it (cuda_backend.cu), for programs that run them on the host emulation
 * (tests/cuda_emu/README.md). The declarations are src/cuda/cuda_internal.h's, which
 * compiles unchanged against the stand-in CUDA headers of tests/cuda_emu/include; the
 * definitions follow src/cuda/cuda_backend.cu's, with libgptq's own host services (the
 * program links the library's objects, so failures land in the context's message as
 * they would through the module).
 */
#include "cuda_internal.h"
#include "module_stubs.h"

const gptq_host_services *gptq_cu_host = gptq__host_services();

int gptq_cu_fail(gptq_ctx *ctx, cudaError_t e, const char *call)
{
    int status = e == cudaErrorMemoryAllocation ? GPTQ_ERR_OUT_OF_MEMORY : GPTQ_ERR_DEVICE;
    return gptq_cu_host->fail(ctx, status, "CUDA backend: %s failed: %s (%d): %s", call,
                              cudaGetErrorName(e), (int)e, cudaGetErrorString(e));
}

/* As cuda_backend.cu's (grown by half again, at least 256 bytes), with one thing the real
 * allocator may do made certain: a regrown buffer comes back at the address just freed
 * when that allocation was large enough (buffers are made with 64 KiB of room), holding
 * garbage. A launcher that keeps state in a slot (the GEMV's arrival counters) must not
 * take "same pointer" for "same buffer". */
void *gptq_cu_scratch(cu_state *st, int slot, size_t bytes, int *status)
{
    static std::map<void *, size_t> room;
    size_t want;

    if (bytes <= st->slot_bytes[slot] && st->slot[slot])
        return st->slot[slot];
    want = bytes + bytes / 2;
    if (want < 256)
        want = 256;
    st->slot_bytes[slot] = 0;
    if (st->slot[slot] && room[st->slot[slot]] >= want) {
        memset(st->slot[slot], 0xff, want);
    } else {
        const size_t n = want > 65536 ? want : 65536;
        room.erase(st->slot[slot]);
        cudaFree(st->slot[slot]);
        st->slot[slot] = NULL;
        if (cudaMalloc(&st->slot[slot], n) != cudaSuccess) {
            st->slot[slot] = NULL;
            *status = gptq_cu_host->fail(st->ctx, GPTQ_ERR_OUT_OF_MEMORY,
                                         "CUDA backend: cudaMalloc of %zu bytes of scratch "
                                         "failed", want);
            return NULL;
        }
        room[st->slot[slot]] = n;
    }
    st->slot_bytes[slot] = want;
    return st->slot[slot];
}


/* cuda_backend.cu keeps a list of the contexts it initialised; here there is at most one,
 * opened by the test (gptq_emu_module_open). As the real one: an unknown context is an
 * internal error, and the context's device is made current. */
static cu_state module_state;
static bool module_open;

cu_state *gptq_cu_state(gptq_ctx *ctx, int *status)
{
    cudaError_t e;
    if (!module_open || module_state.ctx != ctx) {
        *status = gptq_cu_host->fail(ctx, GPTQ_ERR_INTERNAL,
                                     "CUDA backend: called on a context it did not initialise");
        return NULL;
    }
    e = cudaSetDevice(module_state.device);
    if (e != cudaSuccess) {
        *status = gptq_cu_fail(ctx, e, "cudaSetDevice");
        return NULL;
    }
    return &module_state;
}

cu_state *gptq_emu_module_open(gptq_ctx *ctx)
{
    if (module_open)
        gptq_emu_module_close();
    memset(&module_state, 0, sizeof module_state);
    module_state.ctx = ctx;
    module_state.device = 0;
    if (cudaStreamCreateWithFlags(&module_state.stream, cudaStreamNonBlocking) != cudaSuccess ||
        cublasCreate(&module_state.blas) != CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(module_state.blas, module_state.stream) != CUBLAS_STATUS_SUCCESS ||
        cublasSetMathMode(module_state.blas, CUBLAS_PEDANTIC_MATH) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "cuda_emu: cannot open the module state\n");
        abort();
    }
    module_open = true;
    return &module_state;
}

void gptq_emu_module_close(void)
{
    if (!module_open)
        return;
    cudaStreamSynchronize(module_state.stream);
    for (int i = 0; i < CU_SLOTS; i++)
        cudaFree(module_state.slot[i]);
    cublasDestroy(module_state.blas);
    cudaStreamDestroy(module_state.stream);
    memset(&module_state, 0, sizeof module_state);
    module_open = false;
}
