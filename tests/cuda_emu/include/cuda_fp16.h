/* Emulation stand-in for <cuda_fp16.h> (tests/cuda_emu/cuda_emu.h). */
#include "../cuda_emu.h"
