/*
 * Loopback agents on DRAM (no MPI): memory <-> files with pread/pwrite.
 *
 * Every case runs on an agent without workers and on one with a pool of 4 threads.
 * 1. TensorRT-LLM's cases: a file of 100 bytes of 10s loaded into memory of 1s, then equal;
 *    memory of 1s offloaded into a new file, read back.
 * 2. Many pairs of odd lengths at scattered offsets in two files, and one 40 MiB pair that
 *    the pool cuts into pieces; the files are checked with the test's own preads, then the
 *    memory after loading them back.
 * 3. Bad input, refused before anything moves: NULLs, no pairs, count and length
 *    mismatches, zero length, negative fd, NULL address, offset overflow, memory types.
 * 4. I/O errors (MPIXFER_ERR_IO): read-only fd for offload (nothing written), write-only fd
 *    for load, a closed fd, a short file, a load past the end, a pipe, a directory, and a
 *    write cut short by RLIMIT_FSIZE (short write, retried, then EFBIG). The agent still
 *    works afterwards.
 * 5. Four threads calling execute on one agent at once.
 */
#include "test_loopback_common.h"

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

static const char *cfg_name(bool multi)
{
    return multi ? "4 workers" : "no workers";
}

static mpixfer_mem_descs_t dram(const mpixfer_mem_desc_t *d, size_t n)
{
    return tst_descs(MPIXFER_MEM_DRAM, d, n);
}

/* ------------------------------------------------------------------ 1. TRT */

static void case_trt(mpixfer_loopback_t *lb)
{
    uint8_t mem[100], back[100];
    int fd = lb_tmpfile();

    /* File of 10s -> memory of 1s. */
    memset(back, 10, sizeof back);
    lb_write_all(fd, back, sizeof back, 0);
    memset(mem, 1, sizeof mem);
    mpixfer_mem_desc_t d = tst_desc(mem, sizeof mem);
    mpixfer_mem_descs_t l = dram(&d, 1);
    mpixfer_file_desc_t f = lb_file(fd, sizeof mem, 0);
    CHECK_OK(mpixfer_loopback_execute(lb, &l, &f, 1, false));
    CHECK(memcmp(mem, back, sizeof mem) == 0);
    close(fd);

    /* Memory of 1s -> new file, read back. */
    fd = lb_tmpfile();
    memset(mem, 1, sizeof mem);
    CHECK_OK(mpixfer_loopback_execute(lb, &l, &f, 1, true));
    CHECK(lb_file_size(fd) == (off_t)sizeof mem);
    memset(back, 0, sizeof back);
    lb_read_all(fd, back, sizeof back, 0);
    CHECK(lb_all_equal(back, sizeof back, 1));
    close(fd);
    CHECK(mpixfer_loopback_last_path(lb) == MPIXFER_LOOPBACK_PATH_POSIX);
}

/* ------------------------------------------------------------ 2. many pairs */

#define NPAIRS 97
#define BIGPAIR ((size_t)40 << 20)

static void case_scatter(mpixfer_loopback_t *lb, uint32_t iter)
{
    size_t lens[NPAIRS + 1], moff[NPAIRS + 1], perm[NPAIRS + 1];
    uint64_t foff[NPAIRS + 1];
    int fdv[NPAIRS + 1], fds[2] = {lb_tmpfile(), lb_tmpfile()};
    mpixfer_mem_desc_t d[NPAIRS + 1];
    mpixfer_file_desc_t f[NPAIRS + 1];
    size_t total = 0, n = NPAIRS + 1;
    uint64_t end[2] = {0, 0};

    /* Odd lengths from 1 byte to ~12 KiB, then one pair big enough to be split. */
    for (size_t i = 0; i < NPAIRS; i++)
        lens[i] = 1 + (size_t)(tst_mix64(i * 31 + iter) % 12289);
    lens[NPAIRS] = BIGPAIR + 12345;
    for (size_t i = 0; i < n; i++) {
        moff[i] = total;
        total += lens[i];
    }
    uint8_t *mem = tst_alloc(total);
    tst_pattern_fill(mem, total, 7, iter, 0);

    /* File extents: pairs alternate between two files, laid out in a shuffled order with
     * gaps, so neither memory order nor file order is sequential. */
    lb_permutation(perm, n, 99 + iter);
    for (size_t k = 0; k < n; k++) {
        size_t i = perm[k];
        int which = (int)(i & 1);
        fdv[i] = fds[which];
        foff[i] = end[which] + (tst_mix64(i) % 777);
        end[which] = foff[i] + lens[i];
    }
    for (size_t i = 0; i < n; i++) {
        d[i] = tst_desc(mem + moff[i], lens[i]);
        f[i] = lb_file(fdv[i], lens[i], foff[i]);
    }
    mpixfer_mem_descs_t l = dram(d, n);
    CHECK_OK(mpixfer_loopback_execute(lb, &l, f, n, true));

    /* The files, by the test's own reads. */
    uint8_t *chk = tst_alloc(BIGPAIR + 12345);
    for (size_t i = 0; i < n; i++) {
        lb_read_all(fdv[i], chk, lens[i], foff[i]);
        CHECK_PATTERN(chk, lens[i], 7, iter, moff[i]);
    }
    free(chk);

    /* Back into cleared memory. */
    memset(mem, 0, total);
    CHECK_OK(mpixfer_loopback_execute(lb, &l, f, n, false));
    CHECK_PATTERN(mem, total, 7, iter, 0);

    free(mem);
    close(fds[0]);
    close(fds[1]);
}

/* ------------------------------------------------------------- 3. bad input */

static void case_bad_input(mpixfer_loopback_t *lb)
{
    uint8_t mem[64];
    int fd = lb_tmpfile();
    mpixfer_mem_desc_t d[2] = {tst_desc(mem, 32), tst_desc(mem + 32, 32)};
    mpixfer_file_desc_t f[2] = {lb_file(fd, 32, 0), lb_file(fd, 32, 32)};
    mpixfer_mem_descs_t l = dram(d, 2);

    memset(mem, 5, sizeof mem);
    CHECK_STATUS(mpixfer_loopback_execute(NULL, &l, f, 2, true), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_loopback_execute(lb, NULL, f, 2, true), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_loopback_execute(lb, &l, NULL, 2, true), MPIXFER_ERR_INVALID_ARG);
    /* No pairs, and counts that differ. */
    mpixfer_mem_descs_t empty = dram(d, 0);
    CHECK_STATUS(mpixfer_loopback_execute(lb, &empty, f, 0, true), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_loopback_execute(lb, &l, f, 1, true), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_loopback_execute(lb, &l, f, 3, false), MPIXFER_ERR_INVALID_ARG);
    mpixfer_mem_descs_t nodescs = dram(NULL, 2);
    CHECK_STATUS(mpixfer_loopback_execute(lb, &nodescs, f, 2, true), MPIXFER_ERR_INVALID_ARG);

    /* Per-pair faults, each in the second pair so the first one would be valid. */
    mpixfer_mem_desc_t bd[2];
    mpixfer_file_desc_t bf[2];
    mpixfer_mem_descs_t bl = dram(bd, 2);
#define RESET()                                                                                    \
    do {                                                                                           \
        memcpy(bd, d, sizeof d);                                                                   \
        memcpy(bf, f, sizeof f);                                                                   \
    } while (0)
    RESET();
    bf[1].len = 31; /* lengths disagree */
    CHECK_STATUS(mpixfer_loopback_execute(lb, &bl, bf, 2, true), MPIXFER_ERR_INVALID_ARG);
    RESET();
    bd[1].len = 0;
    bf[1].len = 0;
    CHECK_STATUS(mpixfer_loopback_execute(lb, &bl, bf, 2, true), MPIXFER_ERR_INVALID_ARG);
    RESET();
    bf[1].fd = -1;
    CHECK_STATUS(mpixfer_loopback_execute(lb, &bl, bf, 2, false), MPIXFER_ERR_INVALID_ARG);
    RESET();
    bd[1].addr = 0;
    CHECK_STATUS(mpixfer_loopback_execute(lb, &bl, bf, 2, true), MPIXFER_ERR_INVALID_ARG);
    RESET();
    bd[1].addr = UINTPTR_MAX - 8; /* wraps */
    CHECK_STATUS(mpixfer_loopback_execute(lb, &bl, bf, 2, true), MPIXFER_ERR_INVALID_ARG);
    RESET();
    bf[1].offset = UINT64_MAX - 16; /* past the largest off_t */
    CHECK_STATUS(mpixfer_loopback_execute(lb, &bl, bf, 2, true), MPIXFER_ERR_INVALID_ARG);
    RESET();
    bf[1].offset = (uint64_t)INT64_MAX - 16; /* offset + len overflows off_t */
    CHECK_STATUS(mpixfer_loopback_execute(lb, &bl, bf, 2, true), MPIXFER_ERR_INVALID_ARG);
#undef RESET

    /* Memory types: BLK, OBJ, FILE unsupported; a value outside the enum is invalid. */
    mpixfer_mem_type_t unsup[] = {MPIXFER_MEM_BLK, MPIXFER_MEM_OBJ, MPIXFER_MEM_FILE};
    for (size_t i = 0; i < 3; i++) {
        mpixfer_mem_descs_t t = tst_descs(unsup[i], d, 2);
        CHECK_STATUS(mpixfer_loopback_execute(lb, &t, f, 2, true), MPIXFER_ERR_UNSUPPORTED);
    }
    mpixfer_mem_descs_t t = tst_descs((mpixfer_mem_type_t)99, d, 2);
    CHECK_STATUS(mpixfer_loopback_execute(lb, &t, f, 2, true), MPIXFER_ERR_INVALID_ARG);
    /* VRAM: unsupported without a GPU; with one (or emulated) a host pointer is refused. */
    mpixfer_mem_descs_t v = tst_descs(MPIXFER_MEM_VRAM, d, 2);
    mpixfer_status_t vs = mpixfer_loopback_execute(lb, &v, f, 2, true);
    const char *emu = getenv("MPIXFER_GPU_EMULATE");
    if (emu == NULL || strcmp(emu, "1") != 0)
        CHECK_MSG(vs == MPIXFER_ERR_UNSUPPORTED || vs == MPIXFER_ERR_INVALID_ARG,
                  "host memory as VRAM gave %s", mpixfer_status_name(vs));

    /* Nothing above wrote a byte. */
    CHECK(lb_file_size(fd) == 0);
    close(fd);
}

/* --------------------------------------------------------------- 4. I/O errors */

static void case_io_errors(mpixfer_loopback_t *lb)
{
    char path[PATH_MAX];
    uint8_t mem[200];
    mpixfer_mem_desc_t d = tst_desc(mem, sizeof mem);
    mpixfer_mem_descs_t l = dram(&d, 1);
    mpixfer_file_desc_t f;

    memset(mem, 3, sizeof mem);

    /* Read-only fd for offload: refused, and the file stays empty. */
    int rw = lb_tmpfile_named(path, sizeof path);
    int ro = open(path, O_RDONLY);
    int wo = open(path, O_WRONLY);
    CHECK(ro >= 0 && wo >= 0);
    CHECK(unlink(path) == 0);
    f = lb_file(ro, sizeof mem, 0);
    CHECK_STATUS(mpixfer_loopback_execute(lb, &l, &f, 1, true), MPIXFER_ERR_IO);
    CHECK(lb_file_size(rw) == 0);
    /* ... even when it comes after a writable pair: all pairs are checked first. */
    {
        mpixfer_mem_desc_t d2[2] = {tst_desc(mem, 100), tst_desc(mem + 100, 100)};
        mpixfer_file_desc_t f2[2] = {lb_file(rw, 100, 0), lb_file(ro, 100, 100)};
        mpixfer_mem_descs_t l2 = dram(d2, 2);
        CHECK_STATUS(mpixfer_loopback_execute(lb, &l2, f2, 2, true), MPIXFER_ERR_IO);
        CHECK(lb_file_size(rw) == 0);
    }
    /* Write-only fd for load. */
    lb_write_all(rw, mem, sizeof mem, 0);
    f = lb_file(wo, sizeof mem, 0);
    CHECK_STATUS(mpixfer_loopback_execute(lb, &l, &f, 1, false), MPIXFER_ERR_IO);
    /* The same fds in the right direction work. */
    f = lb_file(wo, sizeof mem, 0);
    CHECK_OK(mpixfer_loopback_execute(lb, &l, &f, 1, true));
    f = lb_file(ro, sizeof mem, 0);
    CHECK_OK(mpixfer_loopback_execute(lb, &l, &f, 1, false));
    close(ro);
    close(wo);

    /* A closed fd. */
    int closed = dup(rw);
    CHECK(closed >= 0);
    close(closed);
    f = lb_file(closed, sizeof mem, 0);
    CHECK_STATUS(mpixfer_loopback_execute(lb, &l, &f, 1, true), MPIXFER_ERR_IO);
    CHECK_STATUS(mpixfer_loopback_execute(lb, &l, &f, 1, false), MPIXFER_ERR_IO);
    close(rw);

    /* Short file: 100 bytes, loading 200; and a load starting past the end. */
    int sf = lb_tmpfile();
    uint8_t tens[100];
    memset(tens, 10, sizeof tens);
    lb_write_all(sf, tens, sizeof tens, 0);
    f = lb_file(sf, sizeof mem, 0);
    CHECK_STATUS(mpixfer_loopback_execute(lb, &l, &f, 1, false), MPIXFER_ERR_IO);
    f = lb_file(sf, sizeof mem, 4096);
    CHECK_STATUS(mpixfer_loopback_execute(lb, &l, &f, 1, false), MPIXFER_ERR_IO);
    /* Many pairs where one in the middle runs past the end: the whole request fails. */
    {
        enum { N = 40 };
        mpixfer_mem_desc_t dn[N];
        mpixfer_file_desc_t fn[N];
        uint8_t *buf = tst_alloc(N * 10);
        for (size_t i = 0; i < N; i++) {
            dn[i] = tst_desc(buf + i * 10, 10);
            fn[i] = lb_file(sf, 10, i == 17 ? 95 : (i * 10) % 90);
        }
        mpixfer_mem_descs_t ln = dram(dn, N);
        CHECK_STATUS(mpixfer_loopback_execute(lb, &ln, fn, N, false), MPIXFER_ERR_IO);
        free(buf);
    }
    close(sf);

    /* A pipe: the fd allows the direction, but pread/pwrite answer ESPIPE. */
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    f = lb_file(pfd[1], sizeof mem, 0);
    CHECK_STATUS(mpixfer_loopback_execute(lb, &l, &f, 1, true), MPIXFER_ERR_IO);
    f = lb_file(pfd[0], sizeof mem, 0);
    CHECK_STATUS(mpixfer_loopback_execute(lb, &l, &f, 1, false), MPIXFER_ERR_IO);
    close(pfd[0]);
    close(pfd[1]);

    /* A directory: pread answers EISDIR. */
    int dfd = open("/", O_RDONLY | O_DIRECTORY);
    CHECK(dfd >= 0);
    f = lb_file(dfd, sizeof mem, 0);
    CHECK_STATUS(mpixfer_loopback_execute(lb, &l, &f, 1, false), MPIXFER_ERR_IO);
    close(dfd);

    /* RLIMIT_FSIZE: pwrite stops short at the limit, the retry fails with EFBIG. */
    {
        struct rlimit old, lim;
        size_t big = (size_t)3 << 20;
        uint8_t *buf = tst_alloc(big);
        int lf = lb_tmpfile();
        CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
        signal(SIGXFSZ, SIG_IGN);
        lim = old;
        lim.rlim_cur = (rlim_t)1 << 20;
        if (old.rlim_cur == RLIM_INFINITY || old.rlim_cur > lim.rlim_cur) {
            CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
            mpixfer_mem_desc_t bd = tst_desc(buf, big);
            mpixfer_mem_descs_t bl = dram(&bd, 1);
            f = lb_file(lf, big, 0);
            CHECK_STATUS(mpixfer_loopback_execute(lb, &bl, &f, 1, true), MPIXFER_ERR_IO);
            CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
            CHECK(lb_file_size(lf) == (off_t)1 << 20);
        }
        signal(SIGXFSZ, SIG_DFL);
        close(lf);
        free(buf);
    }

    /* Still usable after all that. */
    case_trt(lb);
}

/* ------------------------------------------------------------ 5. concurrency */

#define CT_THREADS 4
#define CT_ITERS 20
#define CT_BLOCKS 16
#define CT_BLOCK 8192

typedef struct {
    mpixfer_loopback_t *lb;
    uint32_t id;
} ct_arg_t;

static void *ct_main(void *p)
{
    ct_arg_t *a = p;
    size_t total = CT_BLOCKS * CT_BLOCK;
    uint8_t *mem = tst_alloc(total);
    int fd = lb_tmpfile();
    mpixfer_mem_desc_t d[CT_BLOCKS];
    mpixfer_file_desc_t f[CT_BLOCKS];

    for (uint32_t it = 0; it < CT_ITERS; it++) {
        tst_pattern_fill(mem, total, a->id, it, 0);
        for (size_t i = 0; i < CT_BLOCKS; i++) {
            d[i] = tst_desc(mem + i * CT_BLOCK, CT_BLOCK);
            /* Reverse order in the file. */
            f[i] = lb_file(fd, CT_BLOCK, (CT_BLOCKS - 1 - i) * CT_BLOCK);
        }
        mpixfer_mem_descs_t l = dram(d, CT_BLOCKS);
        CHECK_OK(mpixfer_loopback_execute(a->lb, &l, f, CT_BLOCKS, true));
        memset(mem, 0, total);
        CHECK_OK(mpixfer_loopback_execute(a->lb, &l, f, CT_BLOCKS, false));
        CHECK_PATTERN(mem, total, a->id, it, 0);
    }
    close(fd);
    free(mem);
    return NULL;
}

static void case_concurrent(mpixfer_loopback_t *lb)
{
    pthread_t th[CT_THREADS];
    ct_arg_t args[CT_THREADS];
    for (uint32_t i = 0; i < CT_THREADS; i++) {
        args[i].lb = lb;
        args[i].id = 100 + i;
        CHECK(pthread_create(&th[i], NULL, ct_main, &args[i]) == 0);
    }
    for (uint32_t i = 0; i < CT_THREADS; i++)
        CHECK(pthread_join(th[i], NULL) == 0);
}

/* ------------------------------------------------------------------- misc */

static void case_api(void)
{
    mpixfer_agent_config_t cfg = MPIXFER_AGENT_CONFIG_INIT;
    mpixfer_loopback_t *lb = NULL;

    CHECK_STATUS(mpixfer_loopback_create(NULL, NULL), MPIXFER_ERR_INVALID_ARG);
    cfg.multi_thread = true;
    cfg.num_workers = 100000;
    CHECK_STATUS(mpixfer_loopback_create(&cfg, &lb), MPIXFER_ERR_INVALID_ARG);
    CHECK(lb == NULL);
    /* Defaults (NULL config), and num_workers without multi_thread: no pool. */
    CHECK_OK(mpixfer_loopback_create(NULL, &lb));
    CHECK(mpixfer_loopback_last_path(lb) == MPIXFER_LOOPBACK_PATH_POSIX);
    CHECK_OK(mpixfer_loopback_destroy(lb));
    cfg.multi_thread = false;
    cfg.num_workers = 8;
    lb = NULL;
    CHECK_OK(mpixfer_loopback_create(&cfg, &lb));
    case_trt(lb);
    CHECK_OK(mpixfer_loopback_destroy(lb));
    CHECK_OK(mpixfer_loopback_destroy(NULL));
    CHECK(mpixfer_loopback_last_path(NULL) == MPIXFER_LOOPBACK_PATH_POSIX);

    CHECK(strcmp(mpixfer_loopback_path_name(MPIXFER_LOOPBACK_PATH_POSIX), "posix") == 0);
    CHECK(strcmp(mpixfer_loopback_path_name(MPIXFER_LOOPBACK_PATH_STAGED), "staged") == 0);
    CHECK(strcmp(mpixfer_loopback_path_name(MPIXFER_LOOPBACK_PATH_GDS), "gds") == 0);
    CHECK(strcmp(mpixfer_loopback_path_name((mpixfer_loopback_path_t)42), "unknown") == 0);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    case_api();
    printf("api: ok\n");
    for (int m = 0; m < 2; m++) {
        bool multi = m == 1;
        mpixfer_loopback_t *lb = lb_create(multi, 4);
        case_trt(lb);
        printf("[%s] TensorRT-LLM cases: ok\n", cfg_name(multi));
        for (uint32_t it = 0; it < 2; it++)
            case_scatter(lb, it);
        printf("[%s] scattered pairs + 40 MiB pair: ok\n", cfg_name(multi));
        case_bad_input(lb);
        printf("[%s] bad input: ok\n", cfg_name(multi));
        printf("[%s] I/O errors (the library logs them; expected):\n", cfg_name(multi));
        case_io_errors(lb);
        printf("[%s] I/O errors: ok\n", cfg_name(multi));
        case_concurrent(lb);
        printf("[%s] %d threads on one agent: ok\n", cfg_name(multi), CT_THREADS);
        CHECK_OK(mpixfer_loopback_destroy(lb));
    }
    printf("PASS test_loopback\n");
    return 0;
}
