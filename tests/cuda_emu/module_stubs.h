/*
 * The emulated module's context state (module_stubs.cpp): what cuda_backend.cu's init
 * and fini would do for a context, for programs that run qlinear.cu on the emulation.
 */
#ifndef GPTQ_CUDA_EMU_MODULE_STUBS_H
#define GPTQ_CUDA_EMU_MODULE_STUBS_H

#include "cuda_internal.h"

/* Make ctx the one context gptq_cu_state knows, with a stream (non-blocking, as
 * cuda_backend.cu's) and a cuBLAS handle on it in pedantic math mode, on device 0.
 * Returns the state (static storage). */
cu_state *gptq_emu_module_open(gptq_ctx *ctx);

/* Free the state's scratch buffers, handle and stream; gptq_cu_state then fails again. */
void gptq_emu_module_close(void);

#endif /* GPTQ_CUDA_EMU_MODULE_STUBS_H */
