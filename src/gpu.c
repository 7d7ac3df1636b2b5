/* GPU memory: what a pointer is, copies in any direction, pinned bounce buffers, and the
 * choice between RMA straight on device memory and staging through host memory.
 *
 * Built with CUDA when the toolkit is found (MPIXFER_HAVE_CUDA); the runtime is linked
 * statically, so a machine without a GPU or a driver loads the library fine and VRAM calls
 * answer MPIXFER_ERR_UNSUPPORTED. MPIXFER_GPU_EMULATE=1 (tests only) makes every pointer
 * passed as VRAM count as memory of device 0 and copies plain memmove: it lets the staged
 * protocol run end to end on machines without a GPU. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

#ifdef MPIXFER_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif
#if defined(OPEN_MPI) && OPEN_MPI
#include <mpi-ext.h>
#endif

static pthread_once_t gpu_once = PTHREAD_ONCE_INIT;
static int gpu_devices;   /* usable devices, 0 when none */
static bool gpu_emulated; /* MPIXFER_GPU_EMULATE */
static const char *gpu_why = "mpixfer was built without CUDA";

static void gpu_init(void)
{
    const char *emu = getenv("MPIXFER_GPU_EMULATE");

    if (emu != NULL && *emu != '\0' && strcmp(emu, "0") != 0) {
        gpu_emulated = true;
        gpu_devices = 1;
        LOG_WARN("MPIXFER_GPU_EMULATE is set: VRAM is emulated with host memory (tests only)");
        return;
    }
#ifdef MPIXFER_HAVE_CUDA
    {
        int n = 0;
        cudaError_t e = cudaGetDeviceCount(&n);
        if (e != cudaSuccess) {
            gpu_why = cudaGetErrorString(e);
            /* Clears the sticky error so later runtime calls are not poisoned. */
            (void)cudaGetLastError();
            n = 0;
        } else if (n == 0) {
            gpu_why = "no CUDA device";
        }
        gpu_devices = n;
    }
#endif
}

bool mpixfer__gpu_available(void)
{
    pthread_once(&gpu_once, gpu_init);
    return gpu_devices > 0;
}

bool mpixfer__gpu_emulated(void)
{
    pthread_once(&gpu_once, gpu_init);
    return gpu_emulated;
}

const char *mpixfer__gpu_unavailable_reason(void)
{
    pthread_once(&gpu_once, gpu_init);
    return gpu_devices > 0 ? "available" : gpu_why;
}

mpixfer_status_t mpixfer__gpu_check_desc(mpixfer_mem_type_t type, const mpixfer_mem_desc_t *d)
{
    if (!mpixfer__gpu_available() || gpu_emulated) {
        if (type == MPIXFER_MEM_VRAM && d->device_id >= (uint32_t)gpu_devices)
            MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "device %u does not exist", d->device_id);
        return MPIXFER_OK;
    }
#ifdef MPIXFER_HAVE_CUDA
    {
        struct cudaPointerAttributes attr;
        cudaError_t e = cudaPointerGetAttributes(&attr, (const void *)d->addr);
        bool on_device;

        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            /* Older runtimes fail on unknown host pointers: that is host memory. */
            on_device = false;
        } else {
            on_device = attr.type == cudaMemoryTypeDevice;
        }
        if (type == MPIXFER_MEM_VRAM) {
            if (!on_device)
                MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "%#lx is not device memory but was passed "
                              "as VRAM", (unsigned long)d->addr);
            if ((uint32_t)attr.device != d->device_id)
                MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG,
                              "%#lx is memory of device %d, the descriptor says %u",
                              (unsigned long)d->addr, attr.device, d->device_id);
            /* The end must be in the same allocation's device too. */
            if (d->len > 1) {
                struct cudaPointerAttributes end;
                e = cudaPointerGetAttributes(&end, (const void *)(d->addr + d->len - 1));
                if (e != cudaSuccess || end.type != cudaMemoryTypeDevice ||
                    end.device != attr.device) {
                    (void)cudaGetLastError();
                    MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG,
                                  "[%#lx, +%zu) runs past device memory",
                                  (unsigned long)d->addr, d->len);
                }
            }
        } else if (on_device) {
            MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG,
                          "%#lx is memory of device %d but was passed as DRAM",
                          (unsigned long)d->addr, attr.device);
        }
    }
#endif
    return MPIXFER_OK;
}

mpixfer_status_t mpixfer__gpu_copy(void *dst, const void *src, size_t len)
{
    if (len == 0)
        return MPIXFER_OK;
    if (gpu_emulated || gpu_devices == 0) {
        memmove(dst, src, len);
        return MPIXFER_OK;
    }
#ifdef MPIXFER_HAVE_CUDA
    {
        /* Unified addressing: the runtime tells the direction from the pointers. */
        cudaError_t e = cudaMemcpy(dst, src, len, cudaMemcpyDefault);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            LOG_ERROR("cudaMemcpy of %zu bytes failed: %s", len, cudaGetErrorString(e));
            return MPIXFER_ERR_IO;
        }
    }
#endif
    return MPIXFER_OK;
}

void *mpixfer__gpu_host_alloc(size_t len)
{
#ifdef MPIXFER_HAVE_CUDA
    if (gpu_devices > 0 && !gpu_emulated) {
        void *p = NULL;
        /* Pinned: device copies from it run at full speed and asynchronously. */
        if (cudaMallocHost(&p, len) == cudaSuccess)
            return p;
        (void)cudaGetLastError();
        return NULL;
    }
#endif
    return malloc(len);
}

void mpixfer__gpu_host_free(void *p)
{
    if (p == NULL)
        return;
#ifdef MPIXFER_HAVE_CUDA
    if (gpu_devices > 0 && !gpu_emulated) {
        cudaFreeHost(p);
        return;
    }
#endif
    free(p);
}

bool mpixfer__mpi_gpu_aware(void)
{
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
    return MPIX_Query_cuda_support() == 1;
#elif defined(MPIX_GPU_SUPPORT_CUDA)
    int yes = 0;
    return MPIX_GPU_query_support(MPIX_GPU_SUPPORT_CUDA, &yes) == MPI_SUCCESS && yes;
#else
    return false;
#endif
}

mpixfer_gpu_path_t mpixfer__gpu_choose_path(void)
{
    const char *force = getenv("MPIXFER_GPU_PATH");

    if (!mpixfer__gpu_available())
        return MPIXFER_GPU_PATH_NONE;
    if (force != NULL && *force != '\0') {
        if (strcasecmp(force, "direct") == 0)
            return MPIXFER_GPU_PATH_DIRECT;
        if (strcasecmp(force, "staged") == 0)
            return MPIXFER_GPU_PATH_STAGED;
        LOG_WARN("MPIXFER_GPU_PATH=%s not understood (direct|staged); choosing by MPI", force);
    }
    return mpixfer__mpi_gpu_aware() ? MPIXFER_GPU_PATH_DIRECT : MPIXFER_GPU_PATH_STAGED;
}

const char *mpixfer_gpu_path_name(mpixfer_gpu_path_t path)
{
    switch (path) {
    case MPIXFER_GPU_PATH_NONE:
        return "none";
    case MPIXFER_GPU_PATH_DIRECT:
        return "direct";
    case MPIXFER_GPU_PATH_STAGED:
        return "staged";
    }
    return "unknown";
}

mpixfer_gpu_path_t mpixfer_context_gpu_path(const mpixfer_context_t *ctx)
{
    return ctx ? ctx->gpu_path : MPIXFER_GPU_PATH_NONE;
}
