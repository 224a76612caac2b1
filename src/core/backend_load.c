/*
 * Run-time loading of the CUDA backend module (libgptq-cuda.so.0).
 *
 * libgptq.so never links against CUDA: it opens the module with dlopen() only when a
 * context asks for backend "cuda" or "auto", so the library loads and works on
 * machines without a driver. The module exports one function, GPTQ_CUDA_ENTRY, that
 * takes libgptq's host services and returns its vtable; the table's abi_version must
 * equal GPTQ_BACKEND_ABI.
 *
 * Where the module is looked for: GPTQ_CUDA_MODULE_PATH in the environment (a full
 * path; tests use it), else the directory libgptq.so itself was loaded from (so a
 * private install prefix works without LD_LIBRARY_PATH), else the dynamic loader's
 * search path.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

typedef const gptq_backend *(*entry_fn)(const gptq_host_services *host);

static int32_t host_threads(const gptq_ctx *ctx) { return ctx->threads; }
static int32_t host_device(const gptq_ctx *ctx) { return ctx->opts.device; }
static int32_t host_math(const gptq_ctx *ctx) { return ctx->opts.math; }

static const gptq_host_services host_services = {
    .abi_version = GPTQ_BACKEND_ABI,
    .fail = gptq__fail,
    .log = gptq__log,
    .threads = host_threads,
    .device = host_device,
    .math = host_math,
};

const gptq_host_services *gptq__host_services(void) { return &host_services; }

/* dlopen the module beside this library, if libgptq's own path is known. */
static void *open_beside_self(void)
{
    Dl_info info;
    char path[4096];
    const char *slash;
    size_t dir;

    if (!dladdr((const void *)&host_services, &info) || !info.dli_fname)
        return NULL;
    slash = strrchr(info.dli_fname, '/');
    if (!slash)
        return NULL;
    dir = (size_t)(slash - info.dli_fname) + 1;
    if (dir + sizeof GPTQ_CUDA_MODULE > sizeof path)
        return NULL;
    memcpy(path, info.dli_fname, dir);
    memcpy(path + dir, GPTQ_CUDA_MODULE, sizeof GPTQ_CUDA_MODULE);
    return dlopen(path, RTLD_NOW | RTLD_LOCAL);
}

int gptq__cuda_backend_open(void **module, const gptq_backend **table, char *errbuf,
                            size_t errbuf_size)
{
    const char *path = getenv("GPTQ_CUDA_MODULE_PATH");
    void *handle;
    entry_fn entry;
    const gptq_backend *t;

    *module = NULL;
    *table = NULL;
    if (path && *path) {
        handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    } else {
        path = GPTQ_CUDA_MODULE;
        handle = open_beside_self();
        if (!handle)
            handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    }
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
    t = entry(&host_services);
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
