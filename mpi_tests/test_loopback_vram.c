/*
 * Loopback agents on VRAM (no MPI). Two modes:
 *   test_loopback_vram emulated   MPIXFER_GPU_EMULATE=1: "device" memory is host memory, so
 *                                 the staged path (bounce buffers, chunking) runs on any
 *                                 machine. Exits 77 without the variable.
 *   test_loopback_vram cuda       cudaMalloc'd memory on device 0. Exits 77 when built
 *                                 without the CUDA toolkit or without a device (after
 *                                 checking that VRAM is then MPIXFER_ERR_UNSUPPORTED).
 *
 * Every case runs on an agent without workers and on one with a pool of 4 threads:
 * 1. TensorRT-LLM's cases: file of 100 bytes of 10s -> VRAM of 1s, then equal; VRAM of 1s ->
 *    new file, read back. The path reported is "staged" (the files are not O_DIRECT).
 * 2. Pair lengths around the 8 MiB bounce buffer (1, 4097, 8 MiB - 1, 8 MiB, 8 MiB + 1,
 *    20 MiB + 3) at scattered file offsets, and 256 pairs of 4 KiB in reverse file order.
 * 3. Wrong memory: bad device id; on a real GPU a host pointer as VRAM and a device pointer
 *    as DRAM. Short file and read-only fd give MPIXFER_ERR_IO.
 * 4. A DRAM request leaves the reported VRAM path alone.
 * 5. An O_DIRECT file (the staged path's bounce buffers are aligned for it). On a real GPU
 *    the path is "gds" when GPUDirect Storage serves it and "staged" otherwise (both pass;
 *    the path is printed); emulated it is always "staged".
 */
#include "test_loopback_common.h"

#ifdef MPIXFER_TEST_HAVE_CUDA
#include <cuda_runtime_api.h>
#define CU(call) CHECK_MSG((call) == cudaSuccess, "%s failed", #call)
#endif

static bool emulated;

static void *dev_alloc(size_t len)
{
    if (emulated)
        return tst_alloc(len);
#ifdef MPIXFER_TEST_HAVE_CUDA
    void *p = NULL;
    CU(cudaMalloc(&p, len));
    CU(cudaMemset(p, 0, len));
    return p;
#else
    CHECK(!"unreachable");
    return NULL;
#endif
}

static void dev_free(void *p)
{
    if (emulated) {
        free(p);
        return;
    }
#ifdef MPIXFER_TEST_HAVE_CUDA
    CU(cudaFree(p));
#endif
}

static void to_dev(void *dev, const void *host, size_t len)
{
    if (emulated) {
        memcpy(dev, host, len);
        return;
    }
#ifdef MPIXFER_TEST_HAVE_CUDA
    CU(cudaMemcpy(dev, host, len, cudaMemcpyHostToDevice));
#endif
}

static void to_host(void *host, const void *dev, size_t len)
{
    if (emulated) {
        memcpy(host, dev, len);
        return;
    }
#ifdef MPIXFER_TEST_HAVE_CUDA
    CU(cudaMemcpy(host, dev, len, cudaMemcpyDeviceToHost));
#endif
}

static void dev_fill(void *dev, size_t len, uint8_t v)
{
    uint8_t *h = tst_alloc(len);
    memset(h, v, len);
    to_dev(dev, h, len);
    free(h);
}

static mpixfer_mem_descs_t vram(const mpixfer_mem_desc_t *d, size_t n)
{
    return tst_descs(MPIXFER_MEM_VRAM, d, n);
}

static void expect_staged(mpixfer_loopback_t *lb)
{
    mpixfer_loopback_path_t p = mpixfer_loopback_last_path(lb);
    CHECK_MSG(p == MPIXFER_LOOPBACK_PATH_STAGED, "path is %s", mpixfer_loopback_path_name(p));
}

/* ------------------------------------------------------------------ 1. TRT */

static void case_trt(mpixfer_loopback_t *lb)
{
    uint8_t host[100];
    void *dev = dev_alloc(100);
    int fd = lb_tmpfile();
    mpixfer_mem_desc_t d = tst_desc(dev, 100);
    mpixfer_mem_descs_t l = vram(&d, 1);
    mpixfer_file_desc_t f = lb_file(fd, 100, 0);

    memset(host, 10, sizeof host);
    lb_write_all(fd, host, sizeof host, 0);
    dev_fill(dev, 100, 1);
    CHECK_OK(mpixfer_loopback_execute(lb, &l, &f, 1, false));
    expect_staged(lb);
    memset(host, 0, sizeof host);
    to_host(host, dev, 100);
    CHECK(lb_all_equal(host, 100, 10));
    close(fd);

    fd = lb_tmpfile();
    f.fd = fd;
    dev_fill(dev, 100, 1);
    CHECK_OK(mpixfer_loopback_execute(lb, &l, &f, 1, true));
    expect_staged(lb);
    CHECK(lb_file_size(fd) == 100);
    memset(host, 0, sizeof host);
    lb_read_all(fd, host, 100, 0);
    CHECK(lb_all_equal(host, 100, 1));
    close(fd);
    dev_free(dev);
}

/* ------------------------------------------------------- 2. chunk boundaries */

#define MIB ((size_t)1 << 20)

static void case_boundaries(mpixfer_loopback_t *lb, uint32_t iter)
{
    const size_t lens[] = {1, 4097, 8 * MIB - 1, 8 * MIB, 8 * MIB + 1, 20 * MIB + 3};
    enum { N = sizeof lens / sizeof lens[0] };
    size_t moff[N], total = 0;
    uint64_t foff[N], fend = 0;
    mpixfer_mem_desc_t d[N];
    mpixfer_file_desc_t f[N];
    int fd = lb_tmpfile();

    for (size_t i = 0; i < N; i++) {
        moff[i] = total;
        total += lens[i] + 3; /* odd gaps: unaligned device addresses */
    }
    /* File order reversed, with odd gaps. */
    for (size_t k = N; k-- > 0;) {
        foff[k] = fend + 5;
        fend = foff[k] + lens[k];
    }
    uint8_t *host = tst_alloc(total);
    uint8_t *dev = dev_alloc(total);
    tst_pattern_fill(host, total, 11, iter, 0);
    to_dev(dev, host, total);
    for (size_t i = 0; i < N; i++) {
        d[i] = tst_desc(dev + moff[i], lens[i]);
        f[i] = lb_file(fd, lens[i], foff[i]);
    }
    mpixfer_mem_descs_t l = vram(d, N);
    CHECK_OK(mpixfer_loopback_execute(lb, &l, f, N, true));
    expect_staged(lb);
    uint8_t *chk = tst_alloc(21 * MIB);
    for (size_t i = 0; i < N; i++) {
        lb_read_all(fd, chk, lens[i], foff[i]);
        CHECK_PATTERN(chk, lens[i], 11, iter, moff[i]);
    }
    free(chk);

    dev_fill(dev, total, 0);
    CHECK_OK(mpixfer_loopback_execute(lb, &l, f, N, false));
    memset(host, 0, total);
    to_host(host, dev, total);
    for (size_t i = 0; i < N; i++)
        CHECK_PATTERN(host + moff[i], lens[i], 11, iter, moff[i]);

    dev_free(dev);
    free(host);
    close(fd);
}

static void case_many(mpixfer_loopback_t *lb)
{
    enum { N = 256, B = 4096 };
    mpixfer_mem_desc_t d[N];
    mpixfer_file_desc_t f[N];
    int fd = lb_tmpfile();
    uint8_t *host = tst_alloc((size_t)N * B);
    uint8_t *dev = dev_alloc((size_t)N * B);

    tst_pattern_fill(host, (size_t)N * B, 12, 0, 0);
    to_dev(dev, host, (size_t)N * B);
    for (size_t i = 0; i < N; i++) {
        d[i] = tst_desc(dev + i * B, B);
        f[i] = lb_file(fd, B, (uint64_t)(N - 1 - i) * B);
    }
    mpixfer_mem_descs_t l = vram(d, N);
    CHECK_OK(mpixfer_loopback_execute(lb, &l, f, N, true));
    dev_fill(dev, (size_t)N * B, 0);
    CHECK_OK(mpixfer_loopback_execute(lb, &l, f, N, false));
    memset(host, 0, (size_t)N * B);
    to_host(host, dev, (size_t)N * B);
    CHECK_PATTERN(host, (size_t)N * B, 12, 0, 0);
    dev_free(dev);
    free(host);
    close(fd);
}

/* ------------------------------------------------------------- 3. errors */

static void case_errors(mpixfer_loopback_t *lb)
{
    char path[PATH_MAX];
    void *dev = dev_alloc(200);
    mpixfer_mem_desc_t d = tst_desc(dev, 200);
    mpixfer_mem_descs_t l = vram(&d, 1);
    int fd = lb_tmpfile_named(path, sizeof path);
    int ro = open(path, O_RDONLY);
    CHECK(ro >= 0);
    CHECK(unlink(path) == 0);
    mpixfer_file_desc_t f = lb_file(ro, 200, 0);

    /* Read-only fd for offload; nothing written. */
    CHECK_STATUS(mpixfer_loopback_execute(lb, &l, &f, 1, true), MPIXFER_ERR_IO);
    CHECK(lb_file_size(fd) == 0);
    /* Short file. */
    uint8_t tens[100];
    memset(tens, 10, sizeof tens);
    lb_write_all(fd, tens, sizeof tens, 0);
    f.fd = fd;
    CHECK_STATUS(mpixfer_loopback_execute(lb, &l, &f, 1, false), MPIXFER_ERR_IO);
    /* Bad device id. */
    d.device_id = 7;
    CHECK_STATUS(mpixfer_loopback_execute(lb, &l, &f, 1, true), MPIXFER_ERR_INVALID_ARG);
    d.device_id = 0;
    if (!emulated) {
        /* Host memory as VRAM, device memory as DRAM. */
        uint8_t host[200];
        mpixfer_mem_desc_t hd = tst_desc(host, 200);
        mpixfer_mem_descs_t hl = vram(&hd, 1);
        CHECK_STATUS(mpixfer_loopback_execute(lb, &hl, &f, 1, true), MPIXFER_ERR_INVALID_ARG);
        mpixfer_mem_descs_t dl = tst_descs(MPIXFER_MEM_DRAM, &d, 1);
        CHECK_STATUS(mpixfer_loopback_execute(lb, &dl, &f, 1, true), MPIXFER_ERR_INVALID_ARG);
    }
    close(ro);
    close(fd);
    dev_free(dev);
}

/* A DRAM request does not change the VRAM path the agent reports. */
static void case_dram_keeps_path(mpixfer_loopback_t *lb)
{
    uint8_t mem[64];
    int fd = lb_tmpfile();
    mpixfer_mem_desc_t d = tst_desc(mem, sizeof mem);
    mpixfer_mem_descs_t l = tst_descs(MPIXFER_MEM_DRAM, &d, 1);
    mpixfer_file_desc_t f = lb_file(fd, sizeof mem, 0);
    memset(mem, 4, sizeof mem);
    CHECK_OK(mpixfer_loopback_execute(lb, &l, &f, 1, true));
    expect_staged(lb);
    close(fd);
}

/* ------------------------------------------------------------- 5. O_DIRECT */

static void case_direct(mpixfer_loopback_t *lb)
{
    char path[PATH_MAX];
    size_t len = 4 * MIB;
    int fd0 = lb_tmpfile_named(path, sizeof path);
    int fd = open(path, O_RDWR | O_DIRECT);
    CHECK(unlink(path) == 0);
    close(fd0);
    if (fd < 0) {
        printf("O_DIRECT not supported in the temporary directory: case skipped\n");
        return;
    }
    uint8_t *host = tst_alloc(len);
    uint8_t *dev = dev_alloc(len);
    tst_pattern_fill(host, len, 13, 0, 0);
    to_dev(dev, host, len);
    mpixfer_mem_desc_t d[2] = {tst_desc(dev, len / 2), tst_desc(dev + len / 2, len / 2)};
    mpixfer_file_desc_t f[2] = {lb_file(fd, len / 2, len / 2), lb_file(fd, len / 2, 0)};
    mpixfer_mem_descs_t l = vram(d, 2);
    CHECK_OK(mpixfer_loopback_execute(lb, &l, f, 2, true));
    printf("O_DIRECT offload path: %s\n",
           mpixfer_loopback_path_name(mpixfer_loopback_last_path(lb)));
    if (emulated)
        expect_staged(lb); /* never GDS on host memory */
    dev_fill(dev, len, 0);
    CHECK_OK(mpixfer_loopback_execute(lb, &l, f, 2, false));
    printf("O_DIRECT load path: %s\n", mpixfer_loopback_path_name(mpixfer_loopback_last_path(lb)));
    memset(host, 0, len);
    to_host(host, dev, len);
    CHECK_PATTERN(host, len, 13, 0, 0);
    dev_free(dev);
    free(host);
    close(fd);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *mode = argc > 1 ? argv[1] : "cuda";
    const char *emu = getenv("MPIXFER_GPU_EMULATE");

    if (strcmp(mode, "emulated") == 0) {
        if (emu == NULL || strcmp(emu, "1") != 0) {
            printf("SKIP: the emulated mode needs MPIXFER_GPU_EMULATE=1\n");
            return TST_SKIP_CODE;
        }
        emulated = true;
    } else {
        CHECK_MSG(strcmp(mode, "cuda") == 0, "mode must be 'emulated' or 'cuda', not '%s'", mode);
        if (emu != NULL && *emu != '\0' && strcmp(emu, "0") != 0) {
            printf("SKIP: the cuda mode must run without MPIXFER_GPU_EMULATE\n");
            return TST_SKIP_CODE;
        }
#ifndef MPIXFER_TEST_HAVE_CUDA
        printf("SKIP: built without the CUDA toolkit\n");
        return TST_SKIP_CODE;
#else
        int n = 0;
        if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
            /* Without a device, VRAM must be refused as unsupported, before any I/O. */
            mpixfer_loopback_t *lb = lb_create(false, 1);
            int fd = lb_tmpfile();
            mpixfer_mem_desc_t d = tst_desc((void *)(uintptr_t)0x1000, 100);
            mpixfer_mem_descs_t l = vram(&d, 1);
            mpixfer_file_desc_t f = lb_file(fd, 100, 0);
            CHECK_STATUS(mpixfer_loopback_execute(lb, &l, &f, 1, true), MPIXFER_ERR_UNSUPPORTED);
            CHECK(lb_file_size(fd) == 0);
            close(fd);
            CHECK_OK(mpixfer_loopback_destroy(lb));
            printf("SKIP: no CUDA device (VRAM correctly refused as unsupported)\n");
            return TST_SKIP_CODE;
        }
        CU(cudaSetDevice(0));
#endif
    }

    for (int m = 0; m < 2; m++) {
        bool multi = m == 1;
        const char *name = multi ? "4 workers" : "no workers";
        mpixfer_loopback_t *lb = lb_create(multi, 4);
        CHECK(mpixfer_loopback_last_path(lb) == MPIXFER_LOOPBACK_PATH_POSIX);
        case_trt(lb);
        printf("[%s, %s] TensorRT-LLM cases: ok (path %s)\n", mode, name,
               mpixfer_loopback_path_name(mpixfer_loopback_last_path(lb)));
        for (uint32_t it = 0; it < 2; it++)
            case_boundaries(lb, it);
        case_many(lb);
        printf("[%s, %s] bounce-buffer boundaries, 256 pairs: ok\n", mode, name);
        printf("[%s, %s] errors (the library logs them; expected):\n", mode, name);
        case_errors(lb);
        case_dram_keeps_path(lb);
        printf("[%s, %s] errors: ok\n", mode, name);
        case_direct(lb);
        CHECK_OK(mpixfer_loopback_destroy(lb));
    }
    printf("PASS test_loopback_vram (%s)\n", mode);
    return 0;
}
