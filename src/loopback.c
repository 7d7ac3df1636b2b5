/* Loopback agents: move memory to files and back within one process (TensorRT-LLM's
 * executeLoopbackRequest, used to spill KV cache to local storage). No MPI.
 *
 * A request is a list of pairs memory[i] <-> file extent[i]. Everything is checked before
 * the first byte moves (counts, lengths, memory kinds, fd access modes), so a request
 * refused for bad input has touched nothing. During I/O, short reads and writes are
 * retried until done; any failure ends the request with MPIXFER_ERR_IO and the request is
 * never reported as a partial success.
 *
 * Paths:
 *   DRAM          pread/pwrite straight on the caller's memory.
 *   VRAM, GDS     cuFile (GPUDirect Storage) when libcufile loads, its driver opens, the fd
 *                 was opened with O_DIRECT and cuFileHandleRegister accepts it (i.e. the
 *                 file system supports GDS). libcufile is dlopen()ed, so the library still
 *                 loads where GDS is not installed.
 *   VRAM, staged  otherwise: each worker owns a pinned host bounce buffer; offload copies
 *                 device-to-host into it and pwrites, load preads and copies host-to-device.
 *
 * Threads: with cfg->multi_thread and num_workers > 1, the pairs (large ones cut into
 * pieces of at least LB_PIECE bytes) are spread over num_workers threads: the caller plus
 * a pool of num_workers - 1 threads started at create and joined at destroy. Workers take
 * pieces from a shared counter; the first error wins, stops the others from taking more,
 * and is returned once every worker has left the request. Requests on one agent run one
 * at a time (a mutex), so concurrent execute calls are safe and never share a buffer. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "internal.h"

#ifdef MPIXFER_HAVE_CUFILE
#include <cuda_runtime_api.h>
#include <cufile.h>
#include <dlfcn.h>
#endif

/* Multi-worker requests cut pairs longer than 2 * LB_PIECE into pieces of LB_PIECE bytes
 * (the last one takes the rest), so one huge pair keeps every worker busy while a piece
 * stays large enough for the page cache and the device to stream. */
#define LB_PIECE ((size_t)8 << 20)
/* Staged VRAM: bytes per device copy, and so the size of each worker's bounce buffer. */
#define LB_BOUNCE ((size_t)8 << 20)
/* Bounce buffers start on this boundary, so staged I/O works on O_DIRECT fds too (the
 * host allocator need not align: plain malloc without a GPU). */
#define LB_ALIGN ((uintptr_t)4096)
/* One syscall moves at most this much: Linux caps a single read/write at 0x7ffff000. */
#define LB_MAX_IO ((size_t)1 << 30)
/* More threads than this is surely a mistake in the config, not a wish. */
#define LB_MAX_WORKERS 256u
/* Largest off_t, for checking that offset + len stays representable. */
#define LB_OFF_MAX ((uint64_t)(((uint64_t)1 << (sizeof(off_t) * 8 - 1)) - 1))

/* One unit of work: a pair or a slice of one. */
typedef struct {
    uintptr_t addr;
    int fd;
    uint64_t off;
    size_t len;
    size_t pair;   /* index in the request, for the logs */
    size_t handle; /* GDS: index into the job's handles */
} lb_piece_t;

typedef struct {
    lb_piece_t *pieces;
    size_t npieces;
    bool offload;
    bool vram;
    mpixfer_loopback_path_t path;
    const mpixfer_mem_descs_t *mem; /* the caller's list (device ids for GDS) */
    atomic_size_t next;             /* next piece to take */
    _Atomic int err;                /* first error (mpixfer_status_t), MPIXFER_OK while none */
#ifdef MPIXFER_HAVE_CUFILE
    CUfileHandle_t *handles;
    size_t nhandles;
#endif
} lb_job_t;

struct mpixfer_loopback;

/* A thread that does I/O: slot 0 is whichever thread calls execute, the others the pool. */
typedef struct {
    struct mpixfer_loopback *lb;
    pthread_t thread;
    void *bounce;     /* staged VRAM only, page-aligned; allocated on the first VRAM request */
    void *bounce_raw; /* what mpixfer__gpu_host_alloc returned */
} lb_slot_t;

struct mpixfer_loopback {
    unsigned nslots; /* threads that work on one request, the caller included */
    lb_slot_t *slots;
    unsigned started; /* pool threads running (slots 1..started) */

    pthread_mutex_t exec; /* one request at a time */
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t go;    /* pool: a new request (gen changed) or stop */
    pthread_cond_t done;  /* caller: busy reached 0 */
    uint64_t gen;
    unsigned busy; /* pool threads still in the current request */
    bool stop;
    lb_job_t *job;

    _Atomic int last_path; /* mpixfer_loopback_path_t of the last VRAM request */
};

/* ------------------------------------------------------------------ cuFile */

#ifdef MPIXFER_HAVE_CUFILE
/* Two levels so a name the header maps to a versioned symbol (cuFileDriverClose ->
 * cuFileDriverClose_v2) is looked up under the name the header means. */
#define LB_STR2(x) #x
#define LB_STR(x) LB_STR2(x)

static pthread_once_t cufile_once = PTHREAD_ONCE_INIT;
static bool cufile_ok;
static const char *cufile_why = "not tried";
static struct {
    __typeof__(cuFileDriverOpen) *driver_open;
    __typeof__(cuFileHandleRegister) *handle_register;
    __typeof__(cuFileHandleDeregister) *handle_deregister;
    __typeof__(cuFileRead) *read;
    __typeof__(cuFileWrite) *write;
} cufile;

/* Loads libcufile and opens its driver once per process. The driver stays open for the
 * process's life: it is shared by every agent, and libcufile closes it at exit. */
static void cufile_init(void)
{
    const char *env = getenv("MPIXFER_LOOPBACK_GDS");
    void *dl;
    CUfileError_t e;

    if (env != NULL && strcmp(env, "0") == 0) {
        cufile_why = "disabled by MPIXFER_LOOPBACK_GDS=0";
        return;
    }
    dl = dlopen("libcufile.so.0", RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL)
        dl = dlopen("libcufile.so", RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        cufile_why = "libcufile could not be loaded";
        return;
    }
    *(void **)&cufile.driver_open = dlsym(dl, LB_STR(cuFileDriverOpen));
    *(void **)&cufile.handle_register = dlsym(dl, LB_STR(cuFileHandleRegister));
    *(void **)&cufile.handle_deregister = dlsym(dl, LB_STR(cuFileHandleDeregister));
    *(void **)&cufile.read = dlsym(dl, LB_STR(cuFileRead));
    *(void **)&cufile.write = dlsym(dl, LB_STR(cuFileWrite));
    if (!cufile.driver_open || !cufile.handle_register || !cufile.handle_deregister ||
        !cufile.read || !cufile.write) {
        cufile_why = "libcufile lacks a cuFile entry point";
        dlclose(dl);
        return;
    }
    e = cufile.driver_open();
    if (e.err != CU_FILE_SUCCESS) {
        LOG_INFO("cuFileDriverOpen failed (cuFile error %d, CUDA error %d)", (int)e.err,
                 (int)e.cu_err);
        cufile_why = "cuFileDriverOpen failed";
        /* Kept loaded: a half-initialised libcufile may not survive dlclose. */
        return;
    }
    cufile_ok = true;
    cufile_why = "available";
}

static void lb_gds_release(lb_job_t *job)
{
    for (size_t i = 0; i < job->nhandles; i++)
        cufile.handle_deregister(job->handles[i]);
    free(job->handles);
    job->handles = NULL;
    job->nhandles = 0;
}

/* Registers every distinct fd of the job with cuFile. False (and nothing registered) when
 * GDS cannot serve the whole request: then it is staged instead. */
static bool lb_gds_prepare(lb_job_t *job, mpixfer_status_t *err)
{
    int *fds = NULL;
    size_t i;

    *err = MPIXFER_OK;
    if (mpixfer__gpu_emulated()) {
        LOG_DEBUG("GDS not used: VRAM is emulated");
        return false;
    }
    pthread_once(&cufile_once, cufile_init);
    if (!cufile_ok) {
        LOG_DEBUG("GDS not used: %s", cufile_why);
        return false;
    }
    job->handles = calloc(job->npieces, sizeof(*job->handles));
    fds = calloc(job->npieces, sizeof(*fds));
    if (job->handles == NULL || fds == NULL) {
        *err = MPIXFER_ERR_NO_MEMORY;
        goto fail;
    }
    for (i = 0; i < job->npieces; i++) {
        lb_piece_t *p = &job->pieces[i];
        size_t h = job->nhandles;
        /* Pieces of one fd usually come in runs: check the previous one first. */
        if (i > 0 && job->pieces[i - 1].fd == p->fd) {
            p->handle = job->pieces[i - 1].handle;
            continue;
        }
        for (size_t k = 0; k < job->nhandles; k++) {
            if (fds[k] == p->fd) {
                h = k;
                break;
            }
        }
        if (h == job->nhandles) {
            CUfileDescr_t descr;
            CUfileError_t e;
            int fl = fcntl(p->fd, F_GETFL);
            /* Without O_DIRECT cuFile would only run its own POSIX fallback, and bypassing
             * a page cache the caller relies on would be a surprise. */
            if (fl < 0 || !(fl & O_DIRECT)) {
                LOG_INFO("GDS not used: fd %d was not opened with O_DIRECT", p->fd);
                goto fail;
            }
            memset(&descr, 0, sizeof(descr));
            descr.type = CU_FILE_HANDLE_TYPE_OPAQUE_FD;
            descr.handle.fd = p->fd;
            e = cufile.handle_register(&job->handles[h], &descr);
            if (e.err != CU_FILE_SUCCESS) {
                LOG_INFO("GDS not used: cuFileHandleRegister(fd %d) failed (cuFile error %d); "
                         "the file system may not support GPUDirect Storage",
                         p->fd, (int)e.err);
                goto fail;
            }
            fds[h] = p->fd;
            job->nhandles++;
        }
        p->handle = h;
    }
    free(fds);
    return true;

fail:
    free(fds);
    lb_gds_release(job);
    return false;
}

/* One piece through cuFile, retrying short transfers. */
static mpixfer_status_t lb_gds_piece(const lb_job_t *job, const lb_piece_t *p, uint32_t device)
{
    CUfileHandle_t fh = job->handles[p->handle];
    size_t done = 0;
    mpixfer_status_t st = MPIXFER_OK;
    int prev = -1;
    cudaError_t ce;

    /* cuFile works in the calling thread's current device context. The caller's thread is
     * one of the workers: its current device is put back afterwards. */
    if (cudaGetDevice(&prev) != cudaSuccess) {
        (void)cudaGetLastError();
        prev = -1;
    }
    if (prev != (int)device) {
        ce = cudaSetDevice((int)device);
        if (ce != cudaSuccess) {
            (void)cudaGetLastError();
            LOG_ERROR("cudaSetDevice(%u) failed: %s", device, cudaGetErrorString(ce));
            return MPIXFER_ERR_IO;
        }
    }
    while (done < p->len && st == MPIXFER_OK) {
        size_t n = p->len - done < LB_MAX_IO ? p->len - done : LB_MAX_IO;
        ssize_t r;

        if (job->offload)
            r = cufile.write(fh, (const void *)p->addr, n, (off_t)(p->off + done), (off_t)done);
        else
            r = cufile.read(fh, (void *)p->addr, n, (off_t)(p->off + done), (off_t)done);
        if (r < 0) {
            int e = errno;
            if (r == -1 && e == EINTR)
                continue;
            /* -1: errno holds a system error; other negatives are -CU_FILE_* codes. */
            if (r == -1)
                LOG_ERROR("pair %zu: cuFile%s of %zu bytes at offset %llu of fd %d failed: %s",
                          p->pair, job->offload ? "Write" : "Read", n,
                          (unsigned long long)(p->off + done), p->fd, strerror(e));
            else
                LOG_ERROR("pair %zu: cuFile%s of %zu bytes at offset %llu of fd %d failed: "
                          "cuFile error %lld",
                          p->pair, job->offload ? "Write" : "Read", n,
                          (unsigned long long)(p->off + done), p->fd, (long long)-r);
            st = MPIXFER_ERR_IO;
        } else if (r == 0) {
            LOG_ERROR("pair %zu: fd %d %s at offset %llu with %zu of %zu bytes %s", p->pair, p->fd,
                      job->offload ? "took no more bytes" : "ends",
                      (unsigned long long)(p->off + done), done, p->len,
                      job->offload ? "written" : "read");
            st = MPIXFER_ERR_IO;
        } else {
            done += (size_t)r;
        }
    }
    if (prev >= 0 && prev != (int)device)
        (void)cudaSetDevice(prev);
    return st;
}
#endif /* MPIXFER_HAVE_CUFILE */

/* -------------------------------------------------------------- POSIX I/O */

static mpixfer_status_t lb_pwrite_all(const lb_piece_t *p, const void *buf, size_t len,
                                      uint64_t off)
{
    size_t done = 0;

    while (done < len) {
        size_t n = len - done < LB_MAX_IO ? len - done : LB_MAX_IO;
        ssize_t r = pwrite(p->fd, (const char *)buf + done, n, (off_t)(off + done));
        if (r < 0) {
            int e = errno;
            if (e == EINTR)
                continue;
            LOG_ERROR("pair %zu: pwrite of %zu bytes at offset %llu of fd %d failed: %s", p->pair,
                      n, (unsigned long long)(off + done), p->fd, strerror(e));
            return MPIXFER_ERR_IO;
        }
        if (r == 0) {
            /* A regular file never does this; a device that does would loop forever. */
            LOG_ERROR("pair %zu: pwrite at offset %llu of fd %d wrote nothing (%zu bytes left)",
                      p->pair, (unsigned long long)(off + done), p->fd, len - done);
            return MPIXFER_ERR_IO;
        }
        done += (size_t)r;
    }
    return MPIXFER_OK;
}

static mpixfer_status_t lb_pread_all(const lb_piece_t *p, void *buf, size_t len, uint64_t off)
{
    size_t done = 0;

    while (done < len) {
        size_t n = len - done < LB_MAX_IO ? len - done : LB_MAX_IO;
        ssize_t r = pread(p->fd, (char *)buf + done, n, (off_t)(off + done));
        if (r < 0) {
            int e = errno;
            if (e == EINTR)
                continue;
            LOG_ERROR("pair %zu: pread of %zu bytes at offset %llu of fd %d failed: %s", p->pair, n,
                      (unsigned long long)(off + done), p->fd, strerror(e));
            return MPIXFER_ERR_IO;
        }
        if (r == 0) {
            LOG_ERROR("pair %zu: fd %d ends at offset %llu, %zu bytes short of the extent "
                      "[%llu, +%zu)",
                      p->pair, p->fd, (unsigned long long)(off + done), len - done,
                      (unsigned long long)p->off, p->len);
            return MPIXFER_ERR_IO;
        }
        done += (size_t)r;
    }
    return MPIXFER_OK;
}

/* VRAM through the slot's pinned bounce buffer, LB_BOUNCE bytes at a time. */
static mpixfer_status_t lb_staged_piece(const lb_job_t *job, const lb_piece_t *p, void *bounce)
{
    size_t done = 0;
    mpixfer_status_t st = MPIXFER_OK;

    while (done < p->len && st == MPIXFER_OK) {
        size_t n = p->len - done < LB_BOUNCE ? p->len - done : LB_BOUNCE;
        void *dev = (void *)(p->addr + done);

        if (job->offload) {
            st = mpixfer__gpu_copy(bounce, dev, n);
            if (st == MPIXFER_OK)
                st = lb_pwrite_all(p, bounce, n, p->off + done);
        } else {
            st = lb_pread_all(p, bounce, n, p->off + done);
            if (st == MPIXFER_OK)
                st = mpixfer__gpu_copy(dev, bounce, n);
        }
        done += n;
    }
    return st;
}

/* ---------------------------------------------------------------- workers */

static mpixfer_status_t lb_piece(const lb_job_t *job, const lb_piece_t *p, lb_slot_t *slot)
{
    if (!job->vram) {
        if (job->offload)
            return lb_pwrite_all(p, (const void *)p->addr, p->len, p->off);
        return lb_pread_all(p, (void *)p->addr, p->len, p->off);
    }
#ifdef MPIXFER_HAVE_CUFILE
    if (job->path == MPIXFER_LOOPBACK_PATH_GDS)
        return lb_gds_piece(job, p, job->mem->descs[p->pair].device_id);
#endif
    return lb_staged_piece(job, p, slot->bounce);
}

/* Take pieces until none is left or an error was reported. */
static void lb_run(lb_job_t *job, lb_slot_t *slot)
{
    for (;;) {
        size_t i;
        mpixfer_status_t st;

        if (atomic_load(&job->err) != MPIXFER_OK)
            return;
        i = atomic_fetch_add(&job->next, 1);
        if (i >= job->npieces)
            return;
        st = lb_piece(job, &job->pieces[i], slot);
        if (st != MPIXFER_OK) {
            int expected = MPIXFER_OK;
            atomic_compare_exchange_strong(&job->err, &expected, (int)st);
            return;
        }
    }
}

static void *lb_worker(void *arg)
{
    lb_slot_t *slot = arg;
    struct mpixfer_loopback *lb = slot->lb;
    uint64_t seen = 0;

    pthread_mutex_lock(&lb->lock);
    for (;;) {
        lb_job_t *job;

        while (!lb->stop && lb->gen == seen)
            pthread_cond_wait(&lb->go, &lb->lock);
        if (lb->stop)
            break;
        seen = lb->gen;
        job = lb->job;
        pthread_mutex_unlock(&lb->lock);

        lb_run(job, slot);

        pthread_mutex_lock(&lb->lock);
        if (--lb->busy == 0)
            pthread_cond_signal(&lb->done);
    }
    pthread_mutex_unlock(&lb->lock);
    return NULL;
}

/* ----------------------------------------------------------------- public */

static void lb_free(mpixfer_loopback_t *lb)
{
    if (lb->started > 0) {
        pthread_mutex_lock(&lb->lock);
        lb->stop = true;
        pthread_cond_broadcast(&lb->go);
        pthread_mutex_unlock(&lb->lock);
        for (unsigned i = 1; i <= lb->started; i++)
            pthread_join(lb->slots[i].thread, NULL);
    }
    for (unsigned i = 0; i < lb->nslots; i++)
        mpixfer__gpu_host_free(lb->slots[i].bounce_raw);
    free(lb->slots);
    pthread_cond_destroy(&lb->done);
    pthread_cond_destroy(&lb->go);
    pthread_mutex_destroy(&lb->lock);
    pthread_mutex_destroy(&lb->exec);
    free(lb);
}

mpixfer_status_t mpixfer_loopback_create(const mpixfer_agent_config_t *cfg,
                                         mpixfer_loopback_t **lb_p)
{
    static const mpixfer_agent_config_t dflt = MPIXFER_AGENT_CONFIG_INIT;
    mpixfer_loopback_t *lb;
    unsigned nslots = 1;
    int rc;

    if (lb_p == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "lb_p is NULL");
    if (cfg == NULL)
        cfg = &dflt;
    if (cfg->multi_thread && cfg->num_workers > 1)
        nslots = cfg->num_workers;
    if (nslots > LB_MAX_WORKERS)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "num_workers %u is more than %u", nslots,
                      LB_MAX_WORKERS);

    lb = calloc(1, sizeof(*lb));
    if (lb == NULL)
        return MPIXFER_ERR_NO_MEMORY;
    lb->slots = calloc(nslots, sizeof(*lb->slots));
    if (lb->slots == NULL) {
        free(lb);
        return MPIXFER_ERR_NO_MEMORY;
    }
    lb->nslots = nslots;
    for (unsigned i = 0; i < nslots; i++)
        lb->slots[i].lb = lb;
    pthread_mutex_init(&lb->exec, NULL);
    pthread_mutex_init(&lb->lock, NULL);
    pthread_cond_init(&lb->go, NULL);
    pthread_cond_init(&lb->done, NULL);
    atomic_init(&lb->last_path, (int)MPIXFER_LOOPBACK_PATH_POSIX);

    for (unsigned i = 1; i < nslots; i++) {
        rc = pthread_create(&lb->slots[i].thread, NULL, lb_worker, &lb->slots[i]);
        if (rc != 0) {
            LOG_ERROR("starting loopback worker %u of %u failed: %s", i, nslots - 1, strerror(rc));
            lb_free(lb);
            return MPIXFER_ERR_NO_MEMORY;
        }
        lb->started = i;
    }
    LOG_DEBUG("loopback agent with %u I/O thread(s)", nslots);
    *lb_p = lb;
    return MPIXFER_OK;
}

mpixfer_status_t mpixfer_loopback_destroy(mpixfer_loopback_t *lb)
{
    if (lb == NULL)
        return MPIXFER_OK;
    lb_free(lb);
    return MPIXFER_OK;
}

mpixfer_loopback_path_t mpixfer_loopback_last_path(const mpixfer_loopback_t *lb)
{
    if (lb == NULL)
        return MPIXFER_LOOPBACK_PATH_POSIX;
    return (mpixfer_loopback_path_t)atomic_load(&((mpixfer_loopback_t *)lb)->last_path);
}

const char *mpixfer_loopback_path_name(mpixfer_loopback_path_t path)
{
    switch (path) {
    case MPIXFER_LOOPBACK_PATH_POSIX:
        return "posix";
    case MPIXFER_LOOPBACK_PATH_STAGED:
        return "staged";
    case MPIXFER_LOOPBACK_PATH_GDS:
        return "gds";
    }
    return "unknown";
}

/* The fd must allow the direction: checked up front so a read-only fd fails an offload
 * before anything is written, not halfway through. */
static mpixfer_status_t lb_check_fd(size_t i, int fd, bool offload)
{
    int fl = fcntl(fd, F_GETFL);
    int acc;

    if (fl < 0) {
        int e = errno;
        MPIXFER__FAIL(MPIXFER_ERR_IO, "pair %zu: fd %d is not usable: %s", i, fd, strerror(e));
    }
#ifdef O_PATH
    if (fl & O_PATH)
        MPIXFER__FAIL(MPIXFER_ERR_IO, "pair %zu: fd %d was opened with O_PATH: %s", i, fd,
                      strerror(EBADF));
#endif
    acc = fl & O_ACCMODE;
    if (offload && acc == O_RDONLY)
        MPIXFER__FAIL(MPIXFER_ERR_IO, "pair %zu: fd %d is open read-only, offload writes it: %s", i,
                      fd, strerror(EBADF));
    if (!offload && acc == O_WRONLY)
        MPIXFER__FAIL(MPIXFER_ERR_IO, "pair %zu: fd %d is open write-only, load reads it: %s", i,
                      fd, strerror(EBADF));
    return MPIXFER_OK;
}

static mpixfer_status_t lb_validate(const mpixfer_mem_descs_t *mem,
                                    const mpixfer_file_desc_t *files, size_t nfiles,
                                    bool is_offload, size_t *npieces_p, bool split)
{
    mpixfer_status_t st;
    size_t npieces = 0;
    int last_fd = -1;

    if (nfiles == 0)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "loopback request with no file descriptors");
    if (mem->count != nfiles)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "%zu memory descriptors but %zu file descriptors",
                      mem->count, nfiles);
    if (mem->descs == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "mem->descs is NULL");
    st = mpixfer__check_mem_type(mem->type);
    if (st != MPIXFER_OK)
        return st;

    for (size_t i = 0; i < nfiles; i++) {
        const mpixfer_mem_desc_t *d = &mem->descs[i];
        const mpixfer_file_desc_t *f = &files[i];

        if (d->len == 0)
            MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "pair %zu has zero length", i);
        if (d->len != f->len)
            MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG,
                          "pair %zu: memory is %zu bytes but the file extent %zu", i, d->len,
                          f->len);
        if (d->addr == 0)
            MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "pair %zu: memory address is NULL", i);
        if (d->addr + d->len < d->addr)
            MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "pair %zu: [%#lx, +%zu) wraps around", i,
                          (unsigned long)d->addr, d->len);
        if (f->fd < 0)
            MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "pair %zu: fd %d is negative", i, f->fd);
        if (f->offset > LB_OFF_MAX || (uint64_t)f->len > LB_OFF_MAX - f->offset)
            MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG,
                          "pair %zu: file extent [%llu, +%zu) ends past the largest offset", i,
                          (unsigned long long)f->offset, f->len);
        st = mpixfer__gpu_check_desc(mem->type, d);
        if (st != MPIXFER_OK)
            return st;
        /* Runs of one fd are the common case (many blocks in one file): one fcntl each. */
        if (f->fd != last_fd) {
            st = lb_check_fd(i, f->fd, is_offload);
            if (st != MPIXFER_OK)
                return st;
            last_fd = f->fd;
        }
        npieces += (split && d->len > 2 * LB_PIECE) ? d->len / LB_PIECE : 1;
    }
    *npieces_p = npieces;
    return MPIXFER_OK;
}

static void lb_plan(lb_job_t *job, const mpixfer_mem_descs_t *mem, const mpixfer_file_desc_t *files,
                    size_t nfiles, bool split)
{
    size_t k = 0;

    for (size_t i = 0; i < nfiles; i++) {
        const mpixfer_mem_desc_t *d = &mem->descs[i];
        size_t n = (split && d->len > 2 * LB_PIECE) ? d->len / LB_PIECE : 1;
        size_t off = 0;

        for (size_t j = 0; j < n; j++) {
            lb_piece_t *p = &job->pieces[k++];
            p->addr = d->addr + off;
            p->fd = files[i].fd;
            p->off = files[i].offset + off;
            p->len = j + 1 < n ? LB_PIECE : d->len - off;
            p->pair = i;
            p->handle = 0;
            off += p->len;
        }
    }
}

/* Bounce buffers on the first staged request: agents that only move DRAM never pin memory. */
static mpixfer_status_t lb_ensure_bounce(mpixfer_loopback_t *lb)
{
    for (unsigned i = 0; i < lb->nslots; i++) {
        lb_slot_t *s = &lb->slots[i];
        if (s->bounce != NULL)
            continue;
        s->bounce_raw = mpixfer__gpu_host_alloc(LB_BOUNCE + LB_ALIGN);
        if (s->bounce_raw == NULL) {
            LOG_ERROR("allocating a %zu-byte pinned bounce buffer failed", LB_BOUNCE);
            return MPIXFER_ERR_NO_MEMORY;
        }
        s->bounce = (void *)(((uintptr_t)s->bounce_raw + LB_ALIGN - 1) & ~(LB_ALIGN - 1));
    }
    return MPIXFER_OK;
}

mpixfer_status_t mpixfer_loopback_execute(mpixfer_loopback_t *lb, const mpixfer_mem_descs_t *mem,
                                          const mpixfer_file_desc_t *files, size_t nfiles,
                                          bool is_offload)
{
    lb_job_t request;
    lb_job_t *job = &request;
    size_t total = 0;
    bool split;
    mpixfer_status_t st;

    if (lb == NULL || mem == NULL || files == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "lb, mem or files is NULL");
    split = lb->nslots > 1;
    memset(&request, 0, sizeof(request));
    job->mem = mem;
    st = lb_validate(mem, files, nfiles, is_offload, &job->npieces, split);
    if (st != MPIXFER_OK)
        return st;

    job->pieces = calloc(job->npieces, sizeof(*job->pieces));
    if (job->pieces == NULL)
        return MPIXFER_ERR_NO_MEMORY;
    lb_plan(job, mem, files, nfiles, split);
    for (size_t i = 0; i < nfiles; i++)
        total += mem->descs[i].len;
    job->offload = is_offload;
    job->vram = mem->type == MPIXFER_MEM_VRAM;
    job->path = MPIXFER_LOOPBACK_PATH_POSIX;
    atomic_init(&job->next, 0);
    atomic_init(&job->err, (int)MPIXFER_OK);

    pthread_mutex_lock(&lb->exec);
    if (job->vram) {
        job->path = MPIXFER_LOOPBACK_PATH_STAGED;
#ifdef MPIXFER_HAVE_CUFILE
        if (lb_gds_prepare(job, &st))
            job->path = MPIXFER_LOOPBACK_PATH_GDS;
        else if (st != MPIXFER_OK)
            goto unlock;
#endif
        if (job->path == MPIXFER_LOOPBACK_PATH_STAGED) {
            st = lb_ensure_bounce(lb);
            if (st != MPIXFER_OK)
                goto unlock;
        }
        atomic_store(&lb->last_path, (int)job->path);
        LOG_INFO("loopback %s: %zu VRAM pair(s), %zu bytes, path %s",
                 is_offload ? "offload" : "load", nfiles, total,
                 mpixfer_loopback_path_name(job->path));
    } else {
        LOG_DEBUG("loopback %s: %zu DRAM pair(s), %zu bytes, path posix",
                  is_offload ? "offload" : "load", nfiles, total);
    }

    /* Wake the pool only when there is more than one piece to share. */
    if (lb->started > 0 && job->npieces > 1) {
        pthread_mutex_lock(&lb->lock);
        lb->job = job;
        lb->busy = lb->started;
        lb->gen++;
        pthread_cond_broadcast(&lb->go);
        pthread_mutex_unlock(&lb->lock);

        lb_run(job, &lb->slots[0]);

        pthread_mutex_lock(&lb->lock);
        while (lb->busy > 0)
            pthread_cond_wait(&lb->done, &lb->lock);
        lb->job = NULL;
        pthread_mutex_unlock(&lb->lock);
    } else {
        lb_run(job, &lb->slots[0]);
    }
    st = (mpixfer_status_t)atomic_load(&job->err);

#ifdef MPIXFER_HAVE_CUFILE
    if (job->path == MPIXFER_LOOPBACK_PATH_GDS)
        lb_gds_release(job);
#endif
unlock:
    pthread_mutex_unlock(&lb->exec);
    free(job->pieces);
    return st;
}
