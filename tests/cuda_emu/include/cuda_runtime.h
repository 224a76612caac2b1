/* Emulation stand-in for <cuda_runtime.h> (tests/cuda_emu/cuda_emu.h). */
#include "../cuda_emu.h"
