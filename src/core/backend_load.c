/*
 * Run-time loading of the CUDA backend module (libgptq-cuda.so.0).
 *
 * libgptq.so never links against CUDA: it opens the module with dlopen() only when a
 * context asks for backend "cuda" or "auto", so the library loads and works on
 * machines without a driver. The module exports one function, GPTQ_CUDA_ENTRY, that
 * returns its vtable; the table's abi_version must equal GPTQ_BACKEND_ABI.
 * GPTQ_CUDA_MODULE_PATH in the environment overrides the module's file name (tests).
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"

typedef const gptq_backend *(*entry_fn)(void);

int gptq__cuda_backend_open(void **module, const gptq_backend **table, char *errbuf,
                            size_t errbuf_size)
{
    const char *path = getenv("GPTQ_CUDA_MODULE_PATH");
    void *handle;
    entry_fn entry;
    const gptq_backend *t;

    *module = NULL;
    *table = NULL;
    if (!path || !*path)
        path = GPTQ_CUDA_MODULE;
    handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *e = dlerror();
        snprintf(errbuf, errbuf_size,
                 "CUDA backend not available: cannot load %s (%s); this build of libgptq has "
                 "no CUDA module installed",
                 path, e ? e : "unknown reason");
        return GPTQ_ERR_NOT_SUPPORTED;
    }
    /* POSIX allows converting the object pointer dlsym returns to a function pointer. */
    *(void **)&entry = dlsym(handle, GPTQ_CUDA_ENTRY);
    if (!entry) {
        snprintf(errbuf, errbuf_size, "CUDA backend: %s has no symbol %s", path, GPTQ_CUDA_ENTRY);
        dlclose(handle);
        return GPTQ_ERR_NOT_SUPPORTED;
    }
    t = entry();
    if (!t || t->abi_version != GPTQ_BACKEND_ABI) {
        snprintf(errbuf, errbuf_size,
                 "CUDA backend: %s was built for backend ABI %u, this libgptq needs %u", path,
                 t ? t->abi_version : 0u, (unsigned)GPTQ_BACKEND_ABI);
        dlclose(handle);
        return GPTQ_ERR_NOT_SUPPORTED;
    }
    *module = handle;
    *table = t;
    return GPTQ_OK;
}

void gptq__cuda_backend_close(void *module)
{
    if (module)
        dlclose(module);
}
