/*
 * A host emulation of the parts of CUDA that libgptq's kernels use, so that the text of
 * a .cu file compiles as C++ (g++) and its kernels run on the CPU (tests/cuda_emu).
 * Generic: nothing here knows a particular kernel.
 *
 * Model. A launch runs the grid's blocks one after another; a block's threads are
 * fibers (ucontext) of one OS thread, switched only at barriers, so `__shared__`
 * variables (macro: `static`) and the dynamic shared memory are per block by
 * construction. threadIdx/blockIdx/blockDim/gridDim name the running fiber's values.
 * Barriers: __syncthreads (all threads of the block), __syncwarp and every warp-level
 * operation (the 32 lanes of a warp). A barrier that cannot complete is reported as a
 * deadlock and aborts.
 *
 * Stand-ins for inline PTX, called by a kernel's leaf functions under GPTQ_CUDA_EMU:
 *   gptq_emu_cp_async_cg_16 / _commit_group / _wait_group: cp.async with the latest
 *     completion the PTX ISA allows (copies happen only when a wait_group retires their
 *     group), so a read before the wait sees stale shared memory;
 *   gptq_emu_mma_m16n8k16_row_col_f32_f16_f16_f32: mma.sync with the fragment layouts of
 *     the PTX ISA (9.7.13.4.8 "Matrix Fragments for mma.m16n8k16 with floating point
 *     type"): every lane deposits its A/B fragments, a warp barrier, each lane computes
 *     its own four D elements (products exact, summed in float32 in k order onto C).
 * __half arithmetic rounds to nearest even exactly (computed in double, which holds
 * every fp16 sum and product exactly, then rounded once).
 *
 * The launch syntax `k<<<g, b, smem, s>>>(args)` is rewritten by cu2cpp.py into
 * gptq_emu_launch(k, g, b, smem, s)(args).
 *
 * Runtime. Device memory is tracked (cudaPointerGetAttributes, pointer checks on launch
 * arguments and copies: st().check_ptrs); work is done when enqueued, except on a stream
 * being captured, where it is recorded and replayed by cudaGraphLaunch; events read a
 * virtual clock. cuBLAS is in cublas_emu.h.
 */
#ifndef GPTQ_CUDA_EMU_H
#define GPTQ_CUDA_EMU_H

#ifndef GPTQ_CUDA_EMU
#define GPTQ_CUDA_EMU 1
#endif

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <cmath>
#include <deque>
#include <functional>
#include <map>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

/* ---- keywords ------------------------------------------------------------------ */

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__ static
#define __restrict__ __restrict

/* ---- vector types -------------------------------------------------------------- */

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(8) float2 { float x, y; };
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline float2 make_float2(float x, float y) { return {x, y}; }

/* ---- float16 ------------------------------------------------------------------- */

struct __half { uint16_t x_; };
struct alignas(4) __half2 { __half x, y; };

/* Round a double to the nearest float16 (ties to even), subnormals and overflow
 * included. Exact for every value that is itself a sum or product of two float16s
 * computed in double. */
inline uint16_t gptq_emu_d2h(double v)
{
    uint16_t sign = std::signbit(v) ? 0x8000 : 0;
    double a = std::fabs(v);
    if (std::isnan(v))
        return 0x7e00;
    if (a >= 65520.0)
        return sign | 0x7c00;
    int e;
    std::frexp(a, &e); /* a = f 2^e, f in [0.5, 1) */
    int ex = e - 1;    /* a in [2^ex, 2^(ex+1)) */
    if (ex < -14)
        ex = -14;       /* subnormal spacing 2^-24 */
    double ulp = std::ldexp(1.0, ex - 10);
    double m = a / ulp; /* exact: a power of two scale */
    double r = std::nearbyint(m); /* default rounding mode: to nearest even */
    uint32_t mi = (uint32_t)r;    /* < 2048 (or == 2048 after rounding up) */
    if (a < std::ldexp(1.0, -14))
        return sign | (uint16_t)mi; /* subnormal (mi may reach 1024 = smallest normal) */
    if (mi == 2048) {
        mi = 1024;
        ex++;
    }
    if (ex > 15)
        return sign | 0x7c00;
    return sign | (uint16_t)((ex + 15) << 10 | (mi - 1024));
}

inline double gptq_emu_h2d(uint16_t h)
{
    const int e = h >> 10 & 31, f = h & 1023;
    double v;
    if (e == 31)
        v = f ? NAN : INFINITY;
    else if (e == 0)
        v = std::ldexp((double)f, -24);
    else
        v = std::ldexp((double)(1024 + f), e - 25);
    return h & 0x8000 ? -v : v;
}

inline __half gptq_emu_mkh(double v) { return __half{gptq_emu_d2h(v)}; }
inline float __half2float(__half h) { return (float)gptq_emu_h2d(h.x_); }
inline __half __float2half(float f) { return gptq_emu_mkh(f); }
inline __half __float2half_rn(float f) { return gptq_emu_mkh(f); }
inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
inline unsigned short __half_as_ushort(__half h) { return h.x_; }
inline __half2 __halves2half2(__half a, __half b) { return {a, b}; }
inline __half2 __floats2half2_rn(float a, float b) { return {__float2half_rn(a), __float2half_rn(b)}; }
inline __half2 __float2half2_rn(float a) { return {__float2half_rn(a), __float2half_rn(a)}; }
inline __half2 __half2half2(__half a) { return {a, a}; }
inline __half2 __low2half2(__half2 a) { return {a.x, a.x}; }
inline __half2 __high2half2(__half2 a) { return {a.y, a.y}; }
inline __half __low2half(__half2 a) { return a.x; }
inline __half __high2half(__half2 a) { return a.y; }
inline float2 __half22float2(__half2 a) { return {__half2float(a.x), __half2float(a.y)}; }
#define GPTQ_EMU_H(op) (gptq_emu_mkh(gptq_emu_h2d(a.x_) op gptq_emu_h2d(b.x_)))
inline __half __hadd(__half a, __half b) { return GPTQ_EMU_H(+); }
inline __half __hsub(__half a, __half b) { return GPTQ_EMU_H(-); }
inline __half __hmul(__half a, __half b) { return GPTQ_EMU_H(*); }
#undef GPTQ_EMU_H
/* fma: a*b is exact in double; the sum with c is then rounded twice at worst in
 * extreme exponent spreads (not reached by dequantization arithmetic). */
inline __half __hfma(__half a, __half b, __half c)
{
    return gptq_emu_mkh(gptq_emu_h2d(a.x_) * gptq_emu_h2d(b.x_) + gptq_emu_h2d(c.x_));
}
inline __half2 __hadd2(__half2 a, __half2 b) { return {__hadd(a.x, b.x), __hadd(a.y, b.y)}; }
inline __half2 __hsub2(__half2 a, __half2 b) { return {__hsub(a.x, b.x), __hsub(a.y, b.y)}; }
inline __half2 __hmul2(__half2 a, __half2 b) { return {__hmul(a.x, b.x), __hmul(a.y, b.y)}; }
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c)
{
    return {__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)};
}

/* ---- bfloat16 ------------------------------------------------------------------ */

struct __nv_bfloat16 { uint16_t x_; };
/* Widening is exact: a bfloat16 is the high half of a float32. */
inline float __bfloat162float(__nv_bfloat16 h)
{
    const uint32_t u = (uint32_t)h.x_ << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- float32 intrinsics -------------------------------------------------------- */

/* Built with -ffp-contract=off, so a + b, a * b and a / b round once (IEEE), as the _rn
 * intrinsics do; fmaf rounds the fused product-sum once. */
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __uint_as_float(unsigned u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
inline unsigned __float_as_uint(float f)
{
    unsigned u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* ---- runtime types ------------------------------------------------------------- */

typedef int cudaError_t;
enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidPitchValue = 12,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorIllegalState = 401,
    cudaErrorNotReady = 600,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchFailure = 719,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureImplicit = 906
};
typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t;
typedef struct CUgraph_st *cudaGraph_t;
typedef struct CUgraphExec_st *cudaGraphExec_t;
#define cudaStreamDefault 0x0
#define cudaStreamNonBlocking 0x1
#define cudaEventDefault 0x0
#define cudaEventDisableTiming 0x2
enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2
};
enum cudaStreamCaptureStatus {
    cudaStreamCaptureStatusNone = 0,
    cudaStreamCaptureStatusActive = 1,
    cudaStreamCaptureStatusInvalidated = 2
};
enum cudaMemoryType {
    cudaMemoryTypeUnregistered = 0,
    cudaMemoryTypeHost = 1,
    cudaMemoryTypeDevice = 2,
    cudaMemoryTypeManaged = 3
};
struct cudaPointerAttributes {
    enum cudaMemoryType type;
    int device;
    void *devicePointer;
    void *hostPointer;
};
#define cudaMemAttachGlobal 0x1
/* library_types.h (what cuBLAS and cuSOLVER take): the types used here. */
typedef enum cudaDataType_t {
    CUDA_R_32F = 0,
    CUDA_R_64F = 1,
    CUDA_R_16F = 2,
    CUDA_R_8I = 3,
    CUDA_R_16BF = 14
} cudaDataType;
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
};
enum cudaDeviceAttr {
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrMemoryClockRate = 36,
    cudaDevAttrGlobalMemoryBusWidth = 37,
    cudaDevAttrL2CacheSize = 38,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

/* Streams, events and graphs. Work is done when it is enqueued (every stream is always
 * idle), except on a stream that is being captured: there it is recorded, and replayed
 * in order each time a graph instantiated from the capture is launched. */
struct CUstream_st {
    unsigned flags;
    int capture; /* cudaStreamCaptureStatus */
    cudaStreamCaptureMode mode;
    std::vector<std::function<void()>> ops; /* recorded while capturing */
};
struct CUevent_st {
    unsigned flags;
    bool recorded;
    double t_ns;
};
struct CUgraph_st {
    std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
    std::vector<std::function<void()>> ops;
};

namespace gptq_emu {

/* A cudaMalloc'd (or managed, or pinned host) range. */
struct alloc {
    size_t n;
    cudaMemoryType type;
};

struct copy_op {
    void *dst;
    const void *src;
    size_t n;
};

struct fiber {
    ucontext_t uc;
    dim3 tid;
    unsigned lin;
    bool done;
    const unsigned *wait_on; /* a barrier generation this fiber waits to change */
    unsigned wait_gen;
    std::deque<std::vector<copy_op>> groups; /* committed cp.async groups */
    std::vector<copy_op> open;               /* not yet committed */
};

struct warp_slot {
    uint32_t a[32][4];
    uint32_t b[32][2];
    uint64_t v[32];
    unsigned count, gen;
};

struct state {
    /* the block being run */
    std::vector<fiber> f;
    std::vector<warp_slot> warps;
    ucontext_t sched;
    unsigned nthreads = 0, count = 0, gen = 0;
    fiber *cur = nullptr;
    dim3 bidx, bdim, gdim;
    unsigned char *smem = nullptr;
    std::function<void()> body;
    std::vector<char *> stacks;
    /* the runtime */
    cudaError_t sticky = cudaSuccess;
    int nsm = 4;            /* what cudaDeviceGetAttribute reports */
    int occupancy = 2;      /* what cudaOccupancyMaxActiveBlocksPerMultiprocessor reports */
    size_t smem_optin = 227 * 1024;
    std::map<const void *, int> max_dyn_smem; /* cudaFuncSetAttribute */
    long launches = 0, blocks = 0;
    /* what cudaDeviceGetAttribute reports beyond the above (an H100 SXM's values) */
    int mem_clock_khz = 2619000, bus_bits = 5120, l2_bytes = 50 * 1024 * 1024;
    int cc_major = 9, cc_minor = 0;
    int ndevices = 1, device = 0;
    /* device memory: every live allocation by base address; cudaMemGetInfo's total */
    std::map<uintptr_t, alloc> mem;
    size_t mem_live = 0, mem_total = (size_t)80 << 30;
    /* Pointer checks: a launch's pointer arguments (not pointers inside struct
     * arguments) and the device side of copies and memsets must be device or managed
     * memory; a violation is a fault (below). */
    bool check_ptrs = true;
    /* Faults (what would be an illegal address on a GPU): reported on stderr, counted,
     * and returned by the next synchronisation or cudaGetLastError. */
    long faults = 0;
    cudaError_t pending_fault = cudaSuccess;
    /* streams, capture, graphs, events */
    std::vector<CUstream_st *> streams;
    bool refuse_capture = false; /* cudaStreamBeginCapture fails, as on a runtime that cannot */
    long graph_launches = 0, captures_invalidated = 0;
    double clock_ns = 0;         /* the virtual clock events read: 1 us per operation */
    bool log_launches = false;   /* record the kernel of every launch run in launch_log */
    std::vector<const void *> launch_log;
    ~state()
    {
        for (char *p : stacks)
            free(p);
    }
};

inline state &st()
{
    static state s;
    return s;
}

constexpr size_t stack_bytes = 128 * 1024;

[[noreturn]] inline void die(const char *what)
{
    fprintf(stderr, "cuda_emu: %s (block %u,%u,%u thread %u)\n", what, st().bidx.x, st().bidx.y,
            st().bidx.z, st().cur ? st().cur->lin : 0u);
    abort();
}

inline void yield_wait(const unsigned *gen_word, unsigned gen)
{
    fiber *me = st().cur;
    me->wait_on = gen_word;
    me->wait_gen = gen;
    swapcontext(&me->uc, &st().sched);
    me->wait_on = nullptr;
}

inline void block_barrier()
{
    state &S = st();
    const unsigned g = S.gen;
    if (++S.count == S.nthreads) {
        S.count = 0;
        S.gen++;
        return;
    }
    yield_wait(&S.gen, g);
}

inline void warp_barrier()
{
    state &S = st();
    const unsigned w = S.cur->lin / 32;
    const unsigned n = S.nthreads - 32 * w < 32 ? S.nthreads - 32 * w : 32;
    warp_slot &W = S.warps[w];
    const unsigned g = W.gen;
    if (++W.count == n) {
        W.count = 0;
        W.gen++;
        return;
    }
    yield_wait(&W.gen, g);
}

inline void fiber_main()
{
    st().body();
    st().cur->done = true;
    st().cur->groups.clear(); /* copies never waited for are dropped */
    st().cur->open.clear();
}

/* Every failing runtime call also sets the error cudaGetLastError returns. */
inline cudaError_t ret(cudaError_t e)
{
    if (e != cudaSuccess)
        st().sticky = e;
    return e;
}

inline void fault(const char *what)
{
    fprintf(stderr, "cuda_emu: fault (an illegal address on a GPU): %s\n", what);
    st().faults++;
    st().sticky = st().pending_fault = cudaErrorIllegalAddress;
}

/* The allocation holding p (p may be one past its end), or NULL. */
inline const alloc *find(const void *p, uintptr_t *base = nullptr)
{
    state &S = st();
    auto it = S.mem.upper_bound((uintptr_t)p);
    if (!p || it == S.mem.begin())
        return nullptr;
    --it;
    if ((uintptr_t)p > it->first + it->second.n)
        return nullptr;
    if (base)
        *base = it->first;
    return &it->second;
}

/* [p, p + n) lies in device or managed memory. */
inline bool is_device(const void *p, size_t n = 0)
{
    uintptr_t base;
    const alloc *a = find(p, &base);
    return a && (a->type == cudaMemoryTypeDevice || a->type == cudaMemoryTypeManaged) &&
           (uintptr_t)p + n <= base + a->n;
}

/* A call that is unsafe during a capture that is not relaxed (cudaMalloc, cudaFree,
 * synchronous copies, device synchronisation): it invalidates that capture and fails. */
inline cudaError_t unsafe_in_capture()
{
    cudaError_t e = cudaSuccess;
    for (CUstream_st *s : st().streams)
        if (s->capture == cudaStreamCaptureStatusActive && s->mode != cudaStreamCaptureModeRelaxed) {
            s->capture = cudaStreamCaptureStatusInvalidated;
            st().captures_invalidated++;
            e = cudaErrorStreamCaptureUnsupported;
        }
    return ret(e);
}

/* Do one operation now, advancing the virtual clock unless it is an event record. */
inline void execute(const std::function<void()> &op, bool timed = true)
{
    op();
    if (timed)
        st().clock_ns += 1000.0;
}

/* Enqueue op on s: recorded while s is captured, else done now. Work on the legacy
 * stream (NULL) while a blocking stream is captured would depend on it implicitly:
 * that capture is invalidated and the call fails. */
inline cudaError_t enqueue(cudaStream_t s, std::function<void()> op, bool timed = true)
{
    if (s && s->capture == cudaStreamCaptureStatusActive) {
        s->ops.push_back([op, timed] { execute(op, timed); });
        return cudaSuccess;
    }
    if (s && s->capture == cudaStreamCaptureStatusInvalidated)
        return ret(cudaErrorStreamCaptureInvalidated);
    if (!s)
        for (CUstream_st *c : st().streams)
            if (c->capture == cudaStreamCaptureStatusActive && !(c->flags & cudaStreamNonBlocking)) {
                c->capture = cudaStreamCaptureStatusInvalidated;
                st().captures_invalidated++;
                return ret(cudaErrorStreamCaptureImplicit);
            }
    execute(op, timed);
    return cudaSuccess;
}

/* A launch's configuration as the runtime checks it when the launch is made. */
inline bool config_ok(const void *kern, dim3 g, dim3 b, size_t smem)
{
    state &S = st();
    const unsigned n = b.x * b.y * b.z;
    auto it = S.max_dyn_smem.find(kern);
    const size_t allowed = it != S.max_dyn_smem.end() ? (size_t)it->second : 48 * 1024;
    return !(n == 0 || n > 1024 || g.x == 0 || g.y == 0 || g.z == 0 || g.y > 65535 ||
             g.z > 65535 || smem > (allowed > 48 * 1024 ? allowed : 48 * 1024));
}

/* Run a launch: every block in turn, its threads as fibers. */
inline void run(const void *kern, dim3 g, dim3 b, size_t smem, std::function<void()> body)
{
    state &S = st();
    const unsigned n = b.x * b.y * b.z;
    auto it = S.max_dyn_smem.find(kern);
    const size_t allowed = it != S.max_dyn_smem.end() ? (size_t)it->second : 48 * 1024;
    if (n == 0 || n > 1024 || g.x == 0 || g.y == 0 || g.z == 0 || g.y > 65535 || g.z > 65535 ||
        smem > (allowed > 48 * 1024 ? allowed : 48 * 1024)) {
        S.sticky = cudaErrorInvalidConfiguration;
        return;
    }
    S.launches++;
    if (S.log_launches)
        S.launch_log.push_back(kern);
    S.body = std::move(body);
    S.gdim = g;
    S.bdim = b;
    S.nthreads = n;
    S.f.assign(n, fiber());
    S.warps.assign((n + 31) / 32, warp_slot());
    while (S.stacks.size() < n)
        S.stacks.push_back((char *)malloc(stack_bytes));
    void *sm = nullptr;
    if (posix_memalign(&sm, 128, smem ? smem : 1) != 0) /* exact: ASan sees overruns */
        die("out of host memory for shared memory");
    S.smem = (unsigned char *)sm;
    for (unsigned z = 0; z < g.z; z++)
        for (unsigned y = 0; y < g.y; y++)
            for (unsigned x = 0; x < g.x; x++) {
                S.bidx = dim3(x, y, z);
                S.count = 0;
                S.blocks++;
                memset(S.smem, 0xff, smem); /* uninitialised shared memory reads as NaN */
                for (unsigned i = 0; i < n; i++) {
                    fiber &f = S.f[i];
                    f.lin = i;
                    f.tid = dim3(i % b.x, i / b.x % b.y, i / (b.x * b.y));
                    f.done = false;
                    f.wait_on = nullptr;
                    getcontext(&f.uc);
                    f.uc.uc_stack.ss_sp = S.stacks[i];
                    f.uc.uc_stack.ss_size = stack_bytes;
                    f.uc.uc_link = &S.sched;
                    makecontext(&f.uc, fiber_main, 0);
                }
                for (unsigned alive = n; alive > 0;) {
                    bool ran = false;
                    alive = 0;
                    for (unsigned i = 0; i < n; i++) {
                        fiber &f = S.f[i];
                        if (f.done || (f.wait_on && *f.wait_on == f.wait_gen))
                            continue;
                        S.cur = &f;
                        swapcontext(&S.sched, &f.uc);
                        ran = true;
                    }
                    for (unsigned i = 0; i < n; i++)
                        alive += !S.f[i].done;
                    if (alive && !ran)
                        die("deadlock: a barrier that not every thread reaches");
                }
                S.cur = nullptr;
            }
    free(S.smem);
    S.smem = nullptr;
}

} /* namespace gptq_emu */

/* ---- device built-ins ---------------------------------------------------------- */

#define threadIdx (gptq_emu::st().cur->tid)
#define blockIdx (gptq_emu::st().bidx)
#define blockDim (gptq_emu::st().bdim)
#define gridDim (gptq_emu::st().gdim)
#define warpSize 32

inline void __syncthreads() { gptq_emu::block_barrier(); }
inline void __syncwarp(unsigned = 0xffffffffu) { gptq_emu::warp_barrier(); }
inline void __threadfence() {}
inline void __threadfence_block() {}
template <class T> inline T __ldg(const T *p) { return *p; }
template <class T> inline T __ldcg(const T *p) { return *p; }
template <class T> inline T __ldcs(const T *p) { return *p; }
template <class T> inline void __stcs(T *p, T v) { *p = v; }
/* One OS thread runs every fiber and switches only at barriers: read-modify-write is atomic. */
template <class T> inline T atomicAdd(T *p, T v)
{
    T old = *p;
    *p = old + v;
    return old;
}
template <class T> inline T atomicExch(T *p, T v)
{
    T old = *p;
    *p = v;
    return old;
}
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s)
{
    const uint64_t v = (uint64_t)y << 32 | x;
    unsigned r = 0;
    for (int i = 0; i < 4; i++)
        r |= (unsigned)(v >> 8 * (s >> 4 * i & 7) & 0xff) << 8 * i;
    return r;
}
inline void *gptq_emu_dynamic_smem() { return gptq_emu::st().smem; }

/* Warp shuffles: every lane deposits its value, a barrier, each reads its source lane. */
template <class T> inline T gptq_emu_shfl(T v, int src_of_lane_fn(int, int), int arg, int width)
{
    gptq_emu::state &S = gptq_emu::st();
    const unsigned lane = S.cur->lin % 32;
    gptq_emu::warp_slot &W = S.warps[S.cur->lin / 32];
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    memcpy(&W.v[lane], &v, sizeof v);
    gptq_emu::warp_barrier();
    const int base = (int)lane / width * width;
    int src = src_of_lane_fn((int)lane - base, arg);
    src = src < 0 || src >= width ? (int)lane - base : src;
    T r;
    memcpy(&r, &W.v[base + src], sizeof r);
    gptq_emu::warp_barrier();
    return r;
}
inline int gptq_emu_src_xor(int l, int m) { return l ^ m; }
inline int gptq_emu_src_idx(int, int s) { return s; }
inline int gptq_emu_src_down(int l, int d) { return l + d; }
inline int gptq_emu_src_up(int l, int d) { return l - d; }
template <class T> inline T __shfl_xor_sync(unsigned, T v, int m, int w = 32)
{
    return gptq_emu_shfl(v, gptq_emu_src_xor, m, w);
}
template <class T> inline T __shfl_sync(unsigned, T v, int s, int w = 32)
{
    return gptq_emu_shfl(v, gptq_emu_src_idx, s % w, w);
}
template <class T> inline T __shfl_down_sync(unsigned, T v, unsigned d, int w = 32)
{
    return gptq_emu_shfl(v, gptq_emu_src_down, (int)d, w);
}
template <class T> inline T __shfl_up_sync(unsigned, T v, unsigned d, int w = 32)
{
    return gptq_emu_shfl(v, gptq_emu_src_up, (int)d, w);
}

/* ---- stand-ins for PTX --------------------------------------------------------- */

inline void gptq_emu_cp_async_cg_16(void *dst, const void *src)
{
    if ((uintptr_t)dst % 16 || (uintptr_t)src % 16)
        gptq_emu::die("cp.async: address not 16-byte aligned");
    gptq_emu::st().cur->open.push_back({dst, src, 16});
}
inline void gptq_emu_cp_async_commit_group()
{
    gptq_emu::fiber &f = *gptq_emu::st().cur;
    f.groups.push_back(std::move(f.open));
    f.open.clear();
}
inline void gptq_emu_cp_async_wait_group(int n)
{
    gptq_emu::fiber &f = *gptq_emu::st().cur;
    while ((int)f.groups.size() > n) {
        for (const gptq_emu::copy_op &c : f.groups.front())
            memcpy(c.dst, c.src, c.n);
        f.groups.pop_front();
    }
}

/* mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 (PTX ISA 9.7.13.4.8):
 *   A (16x16): a[r] holds two f16, lower half first; row = groupID + 8 (r & 1),
 *     col = 2 threadID_in_group + (half) + 8 (r >> 1);
 *   B (16x8):  b[r]: row (k) = 2 threadID_in_group + (half) + 8 r, col = groupID;
 *   C, D (16x8 f32): c[i]: row = groupID + 8 (i >> 1), col = 2 threadID_in_group + (i & 1);
 * groupID = lane / 4, threadID_in_group = lane % 4. d may alias c. */
inline void gptq_emu_mma_m16n8k16_row_col_f32_f16_f16_f32(float *d, const uint32_t *a,
                                                          const uint32_t *b, const float *c)
{
    gptq_emu::state &S = gptq_emu::st();
    const unsigned lane = S.cur->lin % 32;
    gptq_emu::warp_slot &W = S.warps[S.cur->lin / 32];
    const float cc[4] = {c[0], c[1], c[2], c[3]};
    memcpy(W.a[lane], a, sizeof W.a[lane]);
    memcpy(W.b[lane], b, sizeof W.b[lane]);
    gptq_emu::warp_barrier();
    const int gid = (int)lane / 4, tig = (int)lane % 4;
    for (int i = 0; i < 4; i++) {
        const int row = gid + 8 * (i >> 1), col = 2 * tig + (i & 1);
        float s = cc[i];
        for (int k = 0; k < 16; k++) {
            const uint32_t aw = W.a[(row % 8) * 4 + k % 8 / 2][row / 8 + 2 * (k / 8)];
            const uint32_t bw = W.b[col * 4 + k % 8 / 2][k / 8];
            const uint16_t ah = (uint16_t)(aw >> 16 * (k & 1)), bh = (uint16_t)(bw >> 16 * (k & 1));
            s += (float)(gptq_emu_h2d(ah) * gptq_emu_h2d(bh)); /* exact in float */
        }
        d[i] = s;
    }
    gptq_emu::warp_barrier();
}

/* ---- host runtime -------------------------------------------------------------- */

inline const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidPitchValue: return "cudaErrorInvalidPitchValue";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
    default: return "cudaErrorEmulated";
    }
}
inline const char *cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }
inline cudaError_t cudaGetLastError()
{
    cudaError_t e = gptq_emu::st().sticky;
    gptq_emu::st().sticky = cudaSuccess;
    return e;
}
inline cudaError_t cudaPeekAtLastError() { return gptq_emu::st().sticky; }

/* ---- memory ---- */

namespace gptq_emu {
/* Exactly n bytes (256-byte aligned, as cudaMalloc's), so that AddressSanitizer sees a
 * kernel that reads past a buffer; registered as `type`. Fresh memory reads as 0xff. */
inline cudaError_t allocate(void **p, size_t n, cudaMemoryType type)
{
    if (!p)
        return ret(cudaErrorInvalidValue);
    cudaError_t e = unsafe_in_capture();
    if (e != cudaSuccess)
        return e;
    if (n > st().mem_total - (st().mem_live < st().mem_total ? st().mem_live : st().mem_total) ||
        posix_memalign(p, 256, n ? n : 1) != 0) {
        *p = nullptr;
        return ret(cudaErrorMemoryAllocation);
    }
    memset(*p, 0xff, n);
    st().mem[(uintptr_t)*p] = alloc{n, type};
    st().mem_live += n;
    return cudaSuccess;
}
inline cudaError_t release(void *p, bool host)
{
    cudaError_t e = unsafe_in_capture();
    if (e != cudaSuccess || !p)
        return e;
    auto it = st().mem.find((uintptr_t)p);
    if (it == st().mem.end() || (it->second.type == cudaMemoryTypeHost) != host)
        return ret(cudaErrorInvalidValue);
    st().mem_live -= it->second.n;
    st().mem.erase(it);
    free(p);
    return cudaSuccess;
}
/* The device side(s) of a copy of n bytes of `kind` (with check_ptrs). */
inline bool copy_ok(void *d, const void *s, size_t n, cudaMemcpyKind k)
{
    if (!st().check_ptrs)
        return true;
    const bool dd = k == cudaMemcpyHostToDevice || k == cudaMemcpyDeviceToDevice;
    const bool sd = k == cudaMemcpyDeviceToHost || k == cudaMemcpyDeviceToDevice;
    return (!dd || is_device(d, n)) && (!sd || is_device(s, n));
}
} /* namespace gptq_emu */

inline cudaError_t cudaMalloc(void **p, size_t n)
{
    return gptq_emu::allocate(p, n, cudaMemoryTypeDevice);
}
template <class T> inline cudaError_t cudaMalloc(T **p, size_t n)
{
    return cudaMalloc((void **)p, n);
}
inline cudaError_t cudaMallocManaged(void **p, size_t n, unsigned = cudaMemAttachGlobal)
{
    return gptq_emu::allocate(p, n, cudaMemoryTypeManaged);
}
inline cudaError_t cudaMallocHost(void **p, size_t n)
{
    return gptq_emu::allocate(p, n, cudaMemoryTypeHost);
}
inline cudaError_t cudaFree(void *p) { return gptq_emu::release(p, false); }
inline cudaError_t cudaFreeHost(void *p) { return gptq_emu::release(p, true); }
inline cudaError_t cudaMemGetInfo(size_t *freeb, size_t *total)
{
    const gptq_emu::state &S = gptq_emu::st();
    *total = S.mem_total;
    *freeb = S.mem_live < S.mem_total ? S.mem_total - S.mem_live : 0;
    return cudaSuccess;
}
/* Since CUDA 11: success for any pointer, host memory the runtime does not know being
 * cudaMemoryTypeUnregistered. */
inline cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *a, const void *p)
{
    if (!a)
        return gptq_emu::ret(cudaErrorInvalidValue);
    const gptq_emu::alloc *m = gptq_emu::find(p);
    memset(a, 0, sizeof *a);
    a->type = m ? m->type : cudaMemoryTypeUnregistered;
    a->device = m ? 0 : -2;
    a->devicePointer = m && m->type != cudaMemoryTypeHost ? (void *)p : nullptr;
    a->hostPointer = !m || m->type != cudaMemoryTypeDevice ? (void *)p : nullptr;
    return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k,
                                   cudaStream_t stream = nullptr)
{
    if (!gptq_emu::copy_ok(d, s, n, k))
        return gptq_emu::ret(cudaErrorInvalidValue);
    return gptq_emu::enqueue(stream, [=] { memcpy(d, s, n); });
}
inline cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind k)
{
    cudaError_t e = gptq_emu::unsafe_in_capture();
    return e != cudaSuccess ? e : cudaMemcpyAsync(d, s, n, k, nullptr);
}
/* height rows of width bytes, rows dpitch and spitch bytes apart; the device side(s) of
 * `kind` must hold the whole pitched span (with check_ptrs). */
inline cudaError_t cudaMemcpy2DAsync(void *d, size_t dpitch, const void *s, size_t spitch,
                                     size_t width, size_t height, cudaMemcpyKind k,
                                     cudaStream_t stream = nullptr)
{
    if (width > dpitch || width > spitch)
        return gptq_emu::ret(cudaErrorInvalidPitchValue);
    if (width == 0 || height == 0)
        return cudaSuccess;
    const size_t dspan = (height - 1) * dpitch + width, sspan = (height - 1) * spitch + width;
    const bool dd = k == cudaMemcpyHostToDevice || k == cudaMemcpyDeviceToDevice;
    const bool sd = k == cudaMemcpyDeviceToHost || k == cudaMemcpyDeviceToDevice;
    if (gptq_emu::st().check_ptrs &&
        ((dd && !gptq_emu::is_device(d, dspan)) || (sd && !gptq_emu::is_device(s, sspan))))
        return gptq_emu::ret(cudaErrorInvalidValue);
    return gptq_emu::enqueue(stream, [=] {
        for (size_t r = 0; r < height; r++)
            memcpy((char *)d + r * dpitch, (const char *)s + r * spitch, width);
    });
}
inline cudaError_t cudaMemcpy2D(void *d, size_t dpitch, const void *s, size_t spitch,
                                size_t width, size_t height, cudaMemcpyKind k)
{
    cudaError_t e = gptq_emu::unsafe_in_capture();
    return e != cudaSuccess ? e : cudaMemcpy2DAsync(d, dpitch, s, spitch, width, height, k, nullptr);
}
inline cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t stream = nullptr)
{
    if (gptq_emu::st().check_ptrs && !gptq_emu::is_device(d, n))
        return gptq_emu::ret(cudaErrorInvalidValue);
    return gptq_emu::enqueue(stream, [=] { memset(d, v, n); });
}
inline cudaError_t cudaMemset(void *d, int v, size_t n)
{
    cudaError_t e = gptq_emu::unsafe_in_capture();
    return e != cudaSuccess ? e : cudaMemsetAsync(d, v, n, nullptr);
}

/* ---- devices ---- */

inline cudaError_t cudaGetDeviceCount(int *n)
{
    *n = gptq_emu::st().ndevices;
    return gptq_emu::ret(*n > 0 ? cudaSuccess : cudaErrorNoDevice);
}
inline cudaError_t cudaGetDevice(int *d)
{
    *d = gptq_emu::st().device;
    return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int d)
{
    if (d < 0 || d >= gptq_emu::st().ndevices)
        return gptq_emu::ret(cudaErrorInvalidDevice);
    gptq_emu::st().device = d;
    return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int dev)
{
    const gptq_emu::state &S = gptq_emu::st();
    if (dev < 0 || dev >= S.ndevices)
        return gptq_emu::ret(cudaErrorInvalidDevice);
    switch (a) {
    case cudaDevAttrMultiProcessorCount: *v = S.nsm; break;
    case cudaDevAttrMemoryClockRate: *v = S.mem_clock_khz; break;
    case cudaDevAttrGlobalMemoryBusWidth: *v = S.bus_bits; break;
    case cudaDevAttrL2CacheSize: *v = S.l2_bytes; break;
    case cudaDevAttrComputeCapabilityMajor: *v = S.cc_major; break;
    case cudaDevAttrComputeCapabilityMinor: *v = S.cc_minor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = (int)S.smem_optin; break;
    default: return gptq_emu::ret(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}
template <class F> inline cudaError_t cudaFuncSetAttribute(F *k, cudaFuncAttribute a, int v)
{
    if (a == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (v < 0 || (size_t)v > gptq_emu::st().smem_optin)
            return gptq_emu::ret(cudaErrorInvalidValue);
        gptq_emu::st().max_dyn_smem[(const void *)k] = v;
    }
    return cudaSuccess;
}
/* The set occupancy, or 0 blocks when the dynamic shared memory asked for is more than the
 * kernel may have (48 KiB unless raised with cudaFuncSetAttribute first), as the runtime
 * answers. */
template <class F>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, F *k, int, size_t smem)
{
    const gptq_emu::state &S = gptq_emu::st();
    auto it = S.max_dyn_smem.find((const void *)k);
    const size_t allowed = it != S.max_dyn_smem.end() ? (size_t)it->second : 48 * 1024;
    *n = smem > allowed ? 0 : S.occupancy;
    return cudaSuccess;
}

/* ---- streams, synchronisation, capture and graphs ---- */

inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
    *s = new CUstream_st{flags, cudaStreamCaptureStatusNone, cudaStreamCaptureModeGlobal, {}};
    gptq_emu::st().streams.push_back(*s);
    return cudaSuccess;
}
inline cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }
inline cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    std::vector<CUstream_st *> &v = gptq_emu::st().streams;
    for (size_t i = 0; i < v.size(); i++)
        if (v[i] == s) {
            v.erase(v.begin() + (long)i);
            delete s;
            return cudaSuccess;
        }
    return gptq_emu::ret(cudaErrorInvalidResourceHandle);
}
/* Work is done when enqueued: a synchronisation returns a pending fault, or fails on a
 * stream being captured (which invalidates the capture). */
inline cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    gptq_emu::state &S = gptq_emu::st();
    if (s && s->capture == cudaStreamCaptureStatusActive) {
        s->capture = cudaStreamCaptureStatusInvalidated;
        S.captures_invalidated++;
        return gptq_emu::ret(cudaErrorStreamCaptureUnsupported);
    }
    if (!s) {
        cudaError_t e = gptq_emu::unsafe_in_capture();
        if (e != cudaSuccess)
            return e;
    }
    cudaError_t e = S.pending_fault;
    S.pending_fault = cudaSuccess;
    return gptq_emu::ret(e);
}
inline cudaError_t cudaDeviceSynchronize() { return cudaStreamSynchronize(nullptr); }
inline cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus *c)
{
    *c = s ? (cudaStreamCaptureStatus)s->capture : cudaStreamCaptureStatusNone;
    return cudaSuccess;
}
inline cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode)
{
    if (gptq_emu::st().refuse_capture || !s)
        return gptq_emu::ret(cudaErrorStreamCaptureUnsupported);
    if (s->capture != cudaStreamCaptureStatusNone)
        return gptq_emu::ret(cudaErrorIllegalState);
    s->capture = cudaStreamCaptureStatusActive;
    s->mode = mode;
    s->ops.clear();
    return cudaSuccess;
}
inline cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
    *g = nullptr;
    if (!s || s->capture == cudaStreamCaptureStatusNone)
        return gptq_emu::ret(cudaErrorIllegalState);
    const bool ok = s->capture == cudaStreamCaptureStatusActive;
    s->capture = cudaStreamCaptureStatusNone;
    if (ok)
        *g = new CUgraph_st{std::move(s->ops)};
    s->ops.clear();
    return ok ? cudaSuccess : gptq_emu::ret(cudaErrorStreamCaptureInvalidated);
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long = 0)
{
    if (!x || !g)
        return gptq_emu::ret(cudaErrorInvalidValue);
    *x = new CUgraphExec_st{g->ops};
    return cudaSuccess;
}
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s)
{
    if (!x)
        return gptq_emu::ret(cudaErrorInvalidValue);
    gptq_emu::st().graph_launches++;
    const std::vector<std::function<void()>> ops = x->ops;
    return gptq_emu::enqueue(s, [ops] {
        for (const std::function<void()> &op : ops)
            op();
    }, false);
}
inline cudaError_t cudaGraphDestroy(cudaGraph_t g)
{
    delete g;
    return cudaSuccess;
}
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x)
{
    delete x;
    return cudaSuccess;
}

/* ---- events (read the virtual clock: 1 us per operation done) ---- */

inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags)
{
    *e = new CUevent_st{flags, false, 0.0};
    return cudaSuccess;
}
inline cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }
inline cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    delete e;
    return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = nullptr)
{
    if (!e)
        return gptq_emu::ret(cudaErrorInvalidResourceHandle);
    return gptq_emu::enqueue(s, [e] {
        e->recorded = true;
        e->t_ns = gptq_emu::st().clock_ns;
    }, false);
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    if (!e)
        return gptq_emu::ret(cudaErrorInvalidResourceHandle);
    const cudaError_t f = gptq_emu::st().pending_fault;
    gptq_emu::st().pending_fault = cudaSuccess;
    return gptq_emu::ret(f);
}
inline cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    if (!a || !b || !a->recorded || !b->recorded || (a->flags & cudaEventDisableTiming) ||
        (b->flags & cudaEventDisableTiming))
        return gptq_emu::ret(cudaErrorInvalidResourceHandle);
    *ms = (float)((b->t_ns - a->t_ns) * 1e-6);
    return cudaSuccess;
}

/* ---- launches ---- */

namespace gptq_emu {
template <class T> inline bool arg_ok(const void *kern, const T &v, int i)
{
    if constexpr (std::is_pointer<T>::value) {
        if (st().check_ptrs && v && !is_device((const void *)v)) {
            char what[160];
            snprintf(what, sizeof what, "launch of kernel %p: pointer argument %d (%p) is not "
                     "device memory", kern, i, (const void *)v);
            fault(what);
            return false;
        }
    }
    return true;
}
template <class Tup, size_t... I>
inline bool args_ok(const void *kern, const Tup &t, std::index_sequence<I...>)
{
    return (true && ... && arg_ok(kern, std::get<I>(t), (int)I));
}
} /* namespace gptq_emu */

/* k<<<g, b, smem, s>>>(args) after cu2cpp.py: gptq_emu_launch(k, g, b, smem, s)(args). The
 * configuration and the pointer arguments are checked when the launch is made; the
 * kernel runs when the stream gets to it (now, or at each replay of a captured graph). */
template <class... P>
inline auto gptq_emu_launch(void (*k)(P...), dim3 g, dim3 b, size_t smem = 0, cudaStream_t s = nullptr)
{
    return [=](P... args) { /* converted as a call converts them (NULL included) */
        const std::tuple<std::decay_t<P>...> t(args...);
        if (!gptq_emu::config_ok((const void *)k, g, b, smem)) {
            gptq_emu::st().sticky = cudaErrorInvalidConfiguration;
            return;
        }
        if (!gptq_emu::args_ok((const void *)k, t, std::index_sequence_for<P...>{}))
            return;
        gptq_emu::enqueue(s, [k, g, b, smem, t] {
            gptq_emu::run((const void *)k, g, b, smem, [&] { std::apply(k, t); });
        });
    };
}

#endif /* GPTQ_CUDA_EMU_H */
