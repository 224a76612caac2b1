/* Emulation stand-in for <cublas_v2.h>: tests/cuda_emu/cublas_emu.h. */
#include "../cublas_emu.h"
