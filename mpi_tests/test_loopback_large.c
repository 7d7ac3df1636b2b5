/*
 * Loopback agents with a large file (no MPI): 256 MiB as 4096 pairs of 64 KiB, memory
 * blocks in order and file blocks in a random permutation, then one 256 MiB pair.
 *
 *   test_loopback_large dram    DRAM, pread/pwrite
 *   test_loopback_large vram    VRAM with MPIXFER_GPU_EMULATE=1 (the staged path); exits 77
 *                               without the variable
 *
 * The expected bytes are a pattern kept in a second 256 MiB buffer and compared with
 * memcmp (fast enough under the sanitizers too). For an agent without workers and one
 * with a pool of 4 threads:
 * 1. offload the scattered pairs; check every byte of the file with the test's own reads;
 * 2. clear the memory, load it back, check every byte;
 * 3. load again with a different mapping (memory block i <- file block perm[N-1-i]) and
 *    check every byte against where each block came from;
 * 4. one 256 MiB pair both ways (the pool cuts it into 8 MiB pieces), checked.
 * (Under ThreadSanitizer the total is 64 MiB: see NBLOCKS.)
 * Timings are printed; the test is sized for seconds on two cores.
 */
#include "test_loopback_common.h"

#define BLOCK ((size_t)64 << 10)
#if defined(__SANITIZE_THREAD__)
/* ThreadSanitizer makes every touch of fresh memory (its shadow included) so slow that
 * 256 MiB takes minutes; a quarter keeps the same shape: scattered, many pieces. */
#define NBLOCKS 1024
#else
#define NBLOCKS 4096
#endif
#define TOTAL (BLOCK * NBLOCKS)

static double gbps(size_t bytes, double s)
{
    return s > 0 ? (double)bytes / s / 1e9 : 0.0;
}

/* Every byte of @p got equals @p want; memcmp first (fast, also under sanitizers), the
 * pattern search only to report where a mismatch is. */
#define CHECK_SAME(got, want, len, iter, off)                                                      \
    do {                                                                                           \
        if (memcmp((got), (want), (len)) != 0)                                                     \
            CHECK_PATTERN((got), (len), 21, (iter), (off));                                        \
    } while (0)

static void run(mpixfer_mem_type_t type, bool multi, uint8_t *mem, const uint8_t *ref, size_t *perm,
                uint32_t iter)
{
    const char *name = multi ? "4 workers" : "no workers";
    mpixfer_loopback_t *lb = lb_create(multi, 4);
    mpixfer_mem_desc_t *d = calloc(NBLOCKS, sizeof *d);
    mpixfer_file_desc_t *f = calloc(NBLOCKS, sizeof *f);
    uint8_t *chk = tst_alloc(BLOCK);
    int fd = lb_tmpfile();
    double t;
    CHECK(d && f);

    /* 1. Offload, scattered. */
    memcpy(mem, ref, TOTAL);
    for (size_t i = 0; i < NBLOCKS; i++) {
        d[i] = tst_desc(mem + i * BLOCK, BLOCK);
        f[i] = lb_file(fd, BLOCK, (uint64_t)perm[i] * BLOCK);
    }
    mpixfer_mem_descs_t l = tst_descs(type, d, NBLOCKS);
    t = tst_now();
    CHECK_OK(mpixfer_loopback_execute(lb, &l, f, NBLOCKS, true));
    t = tst_now() - t;
    printf("[%s] offload %d x %zu KiB scattered: %.3f s, %.2f GB/s\n", name, NBLOCKS, BLOCK >> 10,
           t, gbps(TOTAL, t));
    CHECK(lb_file_size(fd) == (off_t)TOTAL);
    for (size_t i = 0; i < NBLOCKS; i++) {
        lb_read_all(fd, chk, BLOCK, (uint64_t)perm[i] * BLOCK);
        CHECK_SAME(chk, ref + i * BLOCK, BLOCK, iter, i * BLOCK);
    }

    /* 2. Load back into cleared memory. */
    memset(mem, 0, TOTAL);
    t = tst_now();
    CHECK_OK(mpixfer_loopback_execute(lb, &l, f, NBLOCKS, false));
    t = tst_now() - t;
    printf("[%s] load    %d x %zu KiB scattered: %.3f s, %.2f GB/s\n", name, NBLOCKS, BLOCK >> 10,
           t, gbps(TOTAL, t));
    CHECK_SAME(mem, ref, TOTAL, iter, 0);

    /* 3. Another mapping: memory block i <- file block perm[N-1-i], which holds the data of
     *    memory block N-1-i from step 1. */
    memset(mem, 0, TOTAL);
    for (size_t i = 0; i < NBLOCKS; i++)
        f[i] = lb_file(fd, BLOCK, (uint64_t)perm[NBLOCKS - 1 - i] * BLOCK);
    CHECK_OK(mpixfer_loopback_execute(lb, &l, f, NBLOCKS, false));
    for (size_t i = 0; i < NBLOCKS; i++)
        CHECK_SAME(mem + i * BLOCK, ref + (NBLOCKS - 1 - i) * BLOCK, BLOCK, iter,
                   (NBLOCKS - 1 - i) * BLOCK);

    /* 4. One pair of 256 MiB. */
    close(fd);
    fd = lb_tmpfile();
    memcpy(mem, ref, TOTAL);
    mpixfer_mem_desc_t one = tst_desc(mem, TOTAL);
    mpixfer_file_desc_t fone = lb_file(fd, TOTAL, 4096);
    mpixfer_mem_descs_t lone = tst_descs(type, &one, 1);
    t = tst_now();
    CHECK_OK(mpixfer_loopback_execute(lb, &lone, &fone, 1, true));
    t = tst_now() - t;
    printf("[%s] offload 1 x %zu MiB: %.3f s, %.2f GB/s\n", name, TOTAL >> 20, t, gbps(TOTAL, t));
    for (size_t i = 0; i < NBLOCKS; i++) {
        lb_read_all(fd, chk, BLOCK, 4096 + i * BLOCK);
        CHECK_SAME(chk, ref + i * BLOCK, BLOCK, iter, i * BLOCK);
    }
    memset(mem, 0, TOTAL);
    t = tst_now();
    CHECK_OK(mpixfer_loopback_execute(lb, &lone, &fone, 1, false));
    t = tst_now() - t;
    printf("[%s] load    1 x %zu MiB: %.3f s, %.2f GB/s\n", name, TOTAL >> 20, t, gbps(TOTAL, t));
    CHECK_SAME(mem, ref, TOTAL, iter, 0);
    if (type == MPIXFER_MEM_VRAM)
        CHECK(mpixfer_loopback_last_path(lb) == MPIXFER_LOOPBACK_PATH_STAGED);

    close(fd);
    free(chk);
    free(d);
    free(f);
    CHECK_OK(mpixfer_loopback_destroy(lb));
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *mode = argc > 1 ? argv[1] : "dram";
    mpixfer_mem_type_t type = MPIXFER_MEM_DRAM;

    if (strcmp(mode, "vram") == 0) {
        const char *emu = getenv("MPIXFER_GPU_EMULATE");
        if (emu == NULL || strcmp(emu, "1") != 0) {
            printf("SKIP: the vram mode needs MPIXFER_GPU_EMULATE=1\n");
            return TST_SKIP_CODE;
        }
        type = MPIXFER_MEM_VRAM;
    } else {
        CHECK_MSG(strcmp(mode, "dram") == 0, "mode must be 'dram' or 'vram', not '%s'", mode);
    }

    uint8_t *mem = tst_alloc(TOTAL);
    uint8_t *ref = tst_alloc(TOTAL);
    size_t *perm = calloc(NBLOCKS, sizeof *perm);
    CHECK(perm != NULL);
    lb_permutation(perm, NBLOCKS, 0xC0FFEE);
    double t0 = tst_now();
    tst_pattern_fill(ref, TOTAL, 21, 0, 0);
    run(type, false, mem, ref, perm, 0);
    tst_pattern_fill(ref, TOTAL, 21, 1, 0);
    run(type, true, mem, ref, perm, 1);
    free(ref);
    free(perm);
    free(mem);
    printf("PASS test_loopback_large (%s, %zu MiB, %.1f s)\n", mode, TOTAL >> 20, tst_now() - t0);
    return 0;
}
