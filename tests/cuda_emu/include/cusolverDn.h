/* Emulation stand-in for <cusolverDn.h>: the handle type only. */
#include "../cuda_emu.h"
typedef struct cusolverDnContext *cusolverDnHandle_t;
