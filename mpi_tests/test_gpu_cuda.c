/*
 * VRAM on a real GPU. Exits 77 (SKIP) when the test was built without CUDA or no device is
 * usable. With 1 rank the two agents share a process (device copies); with 2 ranks the
 * transfer crosses processes on the context's GPU path (direct on CUDA-aware MPI, else
 * staged; MPIXFER_GPU_PATH forces one).
 *
 * 1. TensorRT-LLM's DeviceMemory case: two 100-byte cudaMalloc buffers on device 0, WRITE
 *    then READ, compared after copying back to the host.
 * 2. Wrong kinds: a host pointer as VRAM, a device pointer as DRAM, a wrong device id.
 * 3. Chunk boundaries: pair lengths around the staging chunk (set to 4 KiB), odd offsets
 *    inside the registered region, 256 descriptors in one request, DRAM<->VRAM both ways.
 */
#include "common.h"

#ifndef MPIXFER_TEST_HAVE_CUDA
int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    tst_skip("built without the CUDA toolkit");
    return 77;
}
#else
#include <cuda_runtime_api.h>

#define CU(call) CHECK_MSG((call) == cudaSuccess, "%s failed", #call)
#define CHUNK 4096
#define BIG (1u << 20)

static void fill_dev(void *dev, size_t len, uint32_t rank, uint32_t iter)
{
    uint8_t *h = malloc(len);
    tst_pattern_fill(h, len, rank, iter, 0);
    CU(cudaMemcpy(dev, h, len, cudaMemcpyHostToDevice));
    free(h);
}

static uint8_t *to_host(const void *dev, size_t len)
{
    uint8_t *h = malloc(len);
    CU(cudaMemcpy(h, dev, len, cudaMemcpyDeviceToHost));
    return h;
}

static mpixfer_request_t *submit(mpixfer_agent_t *a, mpixfer_op_t op, const char *remote,
                                 mpixfer_mem_type_t lt, const mpixfer_mem_desc_t *s,
                                 mpixfer_mem_type_t rt, const mpixfer_mem_desc_t *d, size_t n)
{
    mpixfer_transfer_request_t r;
    memset(&r, 0, sizeof r);
    r.op = op;
    r.src = tst_descs(lt, s, n);
    r.dst = tst_descs(rt, d, n);
    r.remote_name = remote;
    mpixfer_request_t *x = NULL;
    CHECK_OK(mpixfer_submit_transfer(a, &r, &x));
    return x;
}

/* Wait while progressing: with 2 ranks the target must answer staged chunks. */
static void wait_ok(mpixfer_request_t *x)
{
    double deadline = tst_now() + 60.0;
    mpixfer_state_t s;
    while ((s = mpixfer_request_wait(x, 10)) == MPIXFER_STATE_IN_PROGRESS)
        CHECK_MSG(tst_now() < deadline, "transfer not done in 60 s");
    CHECK_MSG(s == MPIXFER_STATE_SUCCESS, "transfer failed: %s",
              mpixfer_strerror(mpixfer_request_status(x)));
    mpixfer_request_free(x);
}

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0)
        tst_skip("no usable CUDA device");
    int rank = tst_rank(), size = tst_size();
    CU(cudaSetDevice(0));

    mpixfer_context_params_t params = MPIXFER_CONTEXT_PARAMS_INIT;
    params.gpu_chunk_size = CHUNK;
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create_with_params(MPI_COMM_WORLD, &params, &ctx));
    mpixfer_gpu_path_t path = mpixfer_context_gpu_path(ctx);
    CHECK(path != MPIXFER_GPU_PATH_NONE);
    if (rank == 0)
        printf("GPU path: %s\n", mpixfer_gpu_path_name(path));

    /* Initiator agent "init<rank>", target agent "targ<peer>" (same process with 1 rank). */
    int peer = (rank + 1) % size;
    char in[32], tn[32], ptn[32];
    tst_name(in, sizeof in, "init", rank);
    tst_name(tn, sizeof tn, "targ", rank);
    tst_name(ptn, sizeof ptn, "targ", peer);
    mpixfer_agent_t *ia = tst_agent(ctx, in), *ta = tst_agent(ctx, tn);

    /* ---- 2. wrong kinds */
    void *dev = NULL;
    CU(cudaMalloc(&dev, BIG));
    uint8_t *host = tst_alloc(BIG);
    {
        mpixfer_mem_desc_t h = tst_desc(host, 4096), d = tst_desc(dev, 4096);
        mpixfer_mem_descs_t hv = tst_descs(MPIXFER_MEM_VRAM, &h, 1);
        mpixfer_mem_descs_t dd = tst_descs(MPIXFER_MEM_DRAM, &d, 1);
        CHECK_STATUS(mpixfer_register_memory(ia, &hv), MPIXFER_ERR_INVALID_ARG);
        CHECK_STATUS(mpixfer_register_memory(ia, &dd), MPIXFER_ERR_INVALID_ARG);
        d.device_id = (uint32_t)ndev; /* no such device */
        mpixfer_mem_descs_t wrongdev = tst_descs(MPIXFER_MEM_VRAM, &d, 1);
        CHECK_STATUS(mpixfer_register_memory(ia, &wrongdev), MPIXFER_ERR_INVALID_ARG);
    }

    /* ---- 1. the TensorRT-LLM DeviceMemory case */
    void *src100 = NULL, *dst100 = NULL;
    CU(cudaMalloc(&src100, 100));
    CU(cudaMalloc(&dst100, 100));
    CU(cudaMemset(src100, 1, 100));
    CU(cudaMemset(dst100, 0, 100));
    mpixfer_mem_desc_t s100 = tst_desc(src100, 100), d100 = tst_desc(dst100, 100);
    mpixfer_mem_descs_t rs = tst_descs(MPIXFER_MEM_VRAM, &s100, 1);
    mpixfer_mem_descs_t rd = tst_descs(MPIXFER_MEM_VRAM, &d100, 1);
    CHECK_OK(mpixfer_register_memory(ia, &rs));
    CHECK_OK(mpixfer_register_memory(ta, &rd));
    /* The big buffers for part 3: device on the target side, host on the initiator. */
    mpixfer_mem_desc_t bdev = tst_desc(dev, BIG), bhost = tst_desc(host, BIG);
    mpixfer_mem_descs_t rbd = tst_descs(MPIXFER_MEM_VRAM, &bdev, 1);
    mpixfer_mem_descs_t rbh = tst_descs(MPIXFER_MEM_DRAM, &bhost, 1);
    CHECK_OK(mpixfer_register_memory(ta, &rbd));
    CHECK_OK(mpixfer_register_memory(ia, &rbh));
    void *idev = NULL; /* the initiator's own device buffer, for VRAM->VRAM and VRAM->DRAM */
    CU(cudaMalloc(&idev, BIG));
    mpixfer_mem_desc_t bidev = tst_desc(idev, BIG);
    mpixfer_mem_descs_t rbid = tst_descs(MPIXFER_MEM_VRAM, &bidev, 1);
    CHECK_OK(mpixfer_register_memory(ia, &rbid));

    uint64_t *pdst100 = calloc((size_t)size, 8), *pdev = calloc((size_t)size, 8);
    tst_allgather_u64((uintptr_t)dst100, pdst100);
    tst_allgather_u64((uintptr_t)dev, pdev);
    CHECK_OK(mpixfer_bootstrap(ctx));

    {
        mpixfer_mem_desc_t d = {(uintptr_t)pdst100[peer], 100, 0};
        wait_ok(submit(ia, MPIXFER_OP_WRITE, ptn, MPIXFER_MEM_VRAM, &s100, MPIXFER_MEM_VRAM, &d, 1));
        tst_barrier_progress(ctx);
        uint8_t *h = to_host(dst100, 100);
        for (int i = 0; i < 100; i++)
            CHECK_MSG(h[i] == 1, "dst100[%d] = %d after WRITE", i, h[i]);
        free(h);
        tst_barrier_progress(ctx);
        /* READ back into the source after clearing it. */
        CU(cudaMemset(src100, 0, 100));
        CU(cudaMemset(dst100, 2, 100));
        tst_barrier_progress(ctx);
        wait_ok(submit(ia, MPIXFER_OP_READ, ptn, MPIXFER_MEM_VRAM, &s100, MPIXFER_MEM_VRAM, &d, 1));
        h = to_host(src100, 100);
        for (int i = 0; i < 100; i++)
            CHECK_MSG(h[i] == 2, "src100[%d] = %d after READ", i, h[i]);
        free(h);
        tst_barrier_progress(ctx);
    }

    /* ---- 3. chunk boundaries, offsets, many descriptors, DRAM<->VRAM both ways */
    static const size_t lens[] = {1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 1, 100, 2 * CHUNK};
    enum { NL = sizeof lens / sizeof lens[0], NMANY = 256 };
    for (int combo = 0; combo < 4; combo++) {
        /* combo 0: DRAM->VRAM WRITE, 1: VRAM->VRAM WRITE, 2: VRAM<-VRAM READ, 3: DRAM<-VRAM READ */
        bool write = combo < 2;
        bool ldev = combo == 1 || combo == 2;
        uint8_t *lbase = ldev ? (uint8_t *)idev : host;
        mpixfer_mem_type_t lt = ldev ? MPIXFER_MEM_VRAM : MPIXFER_MEM_DRAM;
        uint32_t iter = 10u + (uint32_t)combo;
        mpixfer_mem_desc_t s[NMANY], d[NMANY];
        size_t loff = 3, roff = 4099, n = 0;
        for (int i = 0; i < NMANY; i++, n++) {
            size_t l = lens[i % NL];
            if (loff + l > BIG || roff + l > BIG)
                break;
            s[i] = tst_desc(lbase + loff, l);
            d[i].addr = (uintptr_t)(pdev[peer] + roff);
            d[i].len = l;
            d[i].device_id = 0;
            loff += l + 5;
            roff += l + 7;
        }
        /* Local side holds our pattern, target side the target's background. */
        if (ldev)
            fill_dev(idev, BIG, (uint32_t)rank, iter);
        else
            tst_pattern_fill(host, BIG, (uint32_t)rank, iter, 0);
        fill_dev(dev, BIG, (uint32_t)rank, 100 + iter);
        tst_barrier_progress(ctx);
        wait_ok(submit(ia, write ? MPIXFER_OP_WRITE : MPIXFER_OP_READ, ptn, lt, s,
                       MPIXFER_MEM_VRAM, d, n));
        tst_barrier_progress(ctx);
        int prev = (rank + size - 1) % size;
        if (write) {
            /* Our target buffer holds prev's pairs at their offsets, background around. */
            uint8_t *h = to_host(dev, BIG);
            size_t lo = 3, ro = 4099, last = 0;
            for (size_t i = 0; i < n; i++) {
                size_t l = lens[i % NL];
                CHECK_PATTERN(h + last, ro - last, rank, 100 + iter, last);
                CHECK_PATTERN(h + ro, l, prev, iter, lo);
                last = ro + l;
                lo += l + 5;
                ro += l + 7;
            }
            CHECK_PATTERN(h + last, BIG - last, rank, 100 + iter, last);
            free(h);
        } else {
            uint8_t *h = ldev ? to_host(idev, BIG) : host;
            size_t lo = 3, ro = 4099;
            for (size_t i = 0; i < n; i++) {
                size_t l = lens[i % NL];
                CHECK_PATTERN(h + lo, l, peer, 100 + iter, ro);
                CHECK_PATTERN(h + lo + l, 5, rank, iter, lo + l);
                lo += l + 5;
                ro += l + 7;
            }
            if (ldev)
                free(h);
        }
        tst_barrier_progress(ctx);
    }

    tst_barrier_progress(ctx);
    CHECK_OK(mpixfer_agent_destroy(ia));
    CHECK_OK(mpixfer_agent_destroy(ta));
    CHECK_OK(mpixfer_context_destroy(ctx));
    CU(cudaFree(src100));
    CU(cudaFree(dst100));
    CU(cudaFree(dev));
    CU(cudaFree(idev));
    free(host);
    free(pdst100);
    free(pdev);
    return tst_finish("test_gpu_cuda");
}
#endif
