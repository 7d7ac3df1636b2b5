/*
 * Shared helpers of the mpixfer test suite.
 *
 * Include this header first in every test (it defines _GNU_SOURCE before any system header).
 *
 * Assertions follow the hwloc style: a failed CHECK prints file:line, the expression and the
 * rank, then calls MPI_Abort (tests may abort; the library never does).
 * A test that cannot run in the current situation calls tst_skip(), which exits with 77
 * (registered as SKIP_RETURN_CODE in CMake).
 */
#ifndef MPIXFER_TESTS_COMMON_H
#define MPIXFER_TESTS_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <mpi.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mpixfer.h"

#define TST_SKIP_CODE 77

/* ------------------------------------------------------------------ failing */

static inline int tst_rank(void)
{
    int init = 0, fin = 0, rank = -1;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin)
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return rank;
}

static inline int tst_size(void)
{
    int init = 0, fin = 0, size = -1;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin)
        MPI_Comm_size(MPI_COMM_WORLD, &size);
    return size;
}

static inline void tst_die(void)
{
    int init = 0, fin = 0;
    fflush(stdout);
    fflush(stderr);
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin)
        MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        if (!(expr)) {                                                                             \
            fprintf(stderr, "%s:%d: [rank %d] CHECK failed: %s\n", __FILE__, __LINE__,             \
                    tst_rank(), #expr);                                                            \
            tst_die();                                                                             \
        }                                                                                          \
    } while (0)

/* CHECK with an explanation (printf format). */
#define CHECK_MSG(expr, ...)                                                                       \
    do {                                                                                           \
        if (!(expr)) {                                                                             \
            fprintf(stderr, "%s:%d: [rank %d] CHECK failed: %s: ", __FILE__, __LINE__,             \
                    tst_rank(), #expr);                                                            \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            tst_die();                                                                             \
        }                                                                                          \
    } while (0)

#define CHECK_STATUS(expr, expected)                                                               \
    do {                                                                                           \
        mpixfer_status_t tst_st_ = (expr);                                                         \
        mpixfer_status_t tst_ex_ = (expected);                                                     \
        if (tst_st_ != tst_ex_) {                                                                  \
            fprintf(stderr, "%s:%d: [rank %d] %s returned %s (%d), expected %s (%d)\n",            \
                    __FILE__, __LINE__, tst_rank(), #expr, mpixfer_status_name(tst_st_),           \
                    (int)tst_st_, mpixfer_status_name(tst_ex_), (int)tst_ex_);                     \
            tst_die();                                                                             \
        }                                                                                          \
    } while (0)

#define CHECK_OK(expr) CHECK_STATUS((expr), MPIXFER_OK)

#define CHECK_MPI(expr) CHECK((expr) == MPI_SUCCESS)

/* ------------------------------------------------------------ init / finish */

/* MPI_Init_thread asking for MPI_THREAD_MULTIPLE; returns the level provided. */
static inline int tst_init_multiple(int *argc, char ***argv)
{
    int provided = MPI_THREAD_SINGLE;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "MPI_Init_thread failed\n");
        exit(1);
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    return provided;
}

/* Every rank must call it (the decision to skip has to be collective). */
static inline void tst_skip(const char *why)
{
    if (tst_rank() <= 0)
        printf("SKIP: %s\n", why);
    fflush(stdout);
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Finalize();
    exit(TST_SKIP_CODE);
}

static inline void tst_require_multiple(int provided)
{
    if (provided < MPI_THREAD_MULTIPLE)
        tst_skip("MPI does not provide MPI_THREAD_MULTIPLE");
}

/* Finish a passing test: barrier, message from rank 0, MPI_Finalize. Returns 0. */
static inline int tst_finish(const char *test)
{
    MPI_Barrier(MPI_COMM_WORLD);
    if (tst_rank() == 0)
        printf("PASS %s (%d ranks)\n", test, tst_size());
    fflush(stdout);
    MPI_Finalize();
    return 0;
}

#define TST_LOG(...)                                                                               \
    do {                                                                                           \
        if (tst_rank() <= 0) {                                                                     \
            printf(__VA_ARGS__);                                                                   \
            fflush(stdout);                                                                        \
        }                                                                                          \
    } while (0)

/* ------------------------------------------------------------------- timing */

static inline double tst_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline void tst_sleep_ms(unsigned ms) { usleep(ms * 1000u); }

/* ----------------------------------------------------------------- patterns */

/* splitmix64 finaliser. */
static inline uint64_t tst_mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static inline uint64_t tst_seed(uint32_t rank, uint32_t iter)
{
    return tst_mix64(((uint64_t)rank << 32) ^ (uint64_t)iter ^ 0x5151A5A5C3C3ull);
}

/* The byte expected at logical offset @p off of the pattern (rank, iter). */
static inline uint8_t tst_pattern_byte(uint32_t rank, uint32_t iter, size_t off)
{
    uint64_t w = tst_mix64(tst_seed(rank, iter) ^ (uint64_t)(off >> 3));
    return (uint8_t)(w >> (8 * (off & 7)));
}

/* Fill @p len bytes at @p buf with the pattern (rank, iter) starting at logical offset @p off. */
static inline void tst_pattern_fill(void *buf, size_t len, uint32_t rank, uint32_t iter, size_t off)
{
    uint8_t *p = (uint8_t *)buf;
    uint64_t seed = tst_seed(rank, iter);
    size_t i = 0;
    while (i < len) {
        size_t o = off + i;
        uint64_t w = tst_mix64(seed ^ (uint64_t)(o >> 3));
        for (size_t b = o & 7; b < 8 && i < len; b++, i++)
            p[i] = (uint8_t)(w >> (8 * b));
    }
}

/* Index of the first byte that differs from the pattern, or SIZE_MAX if all match. */
static inline size_t tst_pattern_find_mismatch(const void *buf, size_t len, uint32_t rank,
                                               uint32_t iter, size_t off)
{
    const uint8_t *p = (const uint8_t *)buf;
    uint64_t seed = tst_seed(rank, iter);
    size_t i = 0;
    while (i < len) {
        size_t o = off + i;
        uint64_t w = tst_mix64(seed ^ (uint64_t)(o >> 3));
        for (size_t b = o & 7; b < 8 && i < len; b++, i++)
            if (p[i] != (uint8_t)(w >> (8 * b)))
                return i;
    }
    return SIZE_MAX;
}

/* Assert that @p buf holds the pattern (rank, iter) from logical offset @p off. */
#define CHECK_PATTERN(buf, len, prank, piter, poff)                                                \
    do {                                                                                           \
        const uint8_t *tst_b_ = (const uint8_t *)(buf);                                            \
        size_t tst_l_ = (len), tst_o_ = (poff);                                                    \
        uint32_t tst_r_ = (uint32_t)(prank), tst_i_ = (uint32_t)(piter);                           \
        size_t tst_m_ = tst_pattern_find_mismatch(tst_b_, tst_l_, tst_r_, tst_i_, tst_o_);         \
        if (tst_m_ != SIZE_MAX) {                                                                  \
            fprintf(stderr,                                                                        \
                    "%s:%d: [rank %d] data mismatch in %s (len %zu, pattern rank %u iter %u "      \
                    "off %zu): byte %zu is 0x%02x, expected 0x%02x\n",                             \
                    __FILE__, __LINE__, tst_rank(), #buf, tst_l_, tst_r_, tst_i_, tst_o_,          \
                    tst_m_, tst_b_[tst_m_], tst_pattern_byte(tst_r_, tst_i_, tst_o_ + tst_m_));    \
            tst_die();                                                                             \
        }                                                                                          \
    } while (0)

/* ------------------------------------------------------------------ memory */

/* Page-aligned, zeroed allocation (aborts on failure). */
static inline void *tst_alloc(size_t len)
{
    void *p = NULL;
    CHECK(posix_memalign(&p, 4096, len ? len : 1) == 0);
    memset(p, 0, len);
    return p;
}

static inline mpixfer_mem_desc_t tst_desc(const void *addr, size_t len)
{
    mpixfer_mem_desc_t d;
    d.addr = (uintptr_t)addr;
    d.len = len;
    d.device_id = 0;
    return d;
}

static inline mpixfer_mem_descs_t tst_descs(mpixfer_mem_type_t type, const mpixfer_mem_desc_t *d,
                                            size_t count)
{
    mpixfer_mem_descs_t l;
    l.type = type;
    l.descs = d;
    l.count = count;
    return l;
}

static inline mpixfer_status_t tst_register(mpixfer_agent_t *a, const void *addr, size_t len)
{
    mpixfer_mem_desc_t d = tst_desc(addr, len);
    mpixfer_mem_descs_t l = tst_descs(MPIXFER_MEM_DRAM, &d, 1);
    return mpixfer_register_memory(a, &l);
}

static inline mpixfer_status_t tst_deregister(mpixfer_agent_t *a, const void *addr, size_t len)
{
    mpixfer_mem_desc_t d = tst_desc(addr, len);
    mpixfer_mem_descs_t l = tst_descs(MPIXFER_MEM_DRAM, &d, 1);
    return mpixfer_deregister_memory(a, &l);
}

/* check_remote_descs of one DRAM range given by its remote address. */
static inline bool tst_check_remote(mpixfer_agent_t *a, const char *name, uint64_t addr, size_t len)
{
    mpixfer_mem_desc_t d;
    d.addr = (uintptr_t)addr;
    d.len = len;
    d.device_id = 0;
    mpixfer_mem_descs_t l = tst_descs(MPIXFER_MEM_DRAM, &d, 1);
    return mpixfer_check_remote_descs(a, name, &l);
}

/* True when this build/machine has no GPU path: VRAM descriptors are MPIXFER_ERR_UNSUPPORTED.
 * With a GPU (or MPIXFER_GPU_EMULATE) VRAM rules differ and VRAM assertions are skipped. */
static inline bool tst_vram_unsupported(const mpixfer_context_t *ctx)
{
    return mpixfer_context_gpu_path(ctx) == MPIXFER_GPU_PATH_NONE;
}

/* ----------------------------------------------------------------- agents */

static inline mpixfer_agent_t *tst_agent_ex(mpixfer_context_t *ctx, const char *name,
                                            bool progress_thread, bool multi_thread,
                                            bool listen_thread)
{
    mpixfer_agent_config_t cfg = MPIXFER_AGENT_CONFIG_INIT;
    mpixfer_agent_t *a = NULL;
    cfg.name = name;
    cfg.use_progress_thread = progress_thread;
    cfg.multi_thread = multi_thread;
    cfg.use_listen_thread = listen_thread;
    CHECK_OK(mpixfer_agent_create(ctx, &cfg, &a));
    CHECK(a != NULL);
    if (name != NULL) /* NULL: a generated name */
        CHECK(strcmp(mpixfer_agent_name(a), name) == 0);
    return a;
}

static inline mpixfer_agent_t *tst_agent(mpixfer_context_t *ctx, const char *name)
{
    return tst_agent_ex(ctx, name, false, false, false);
}

/* "<prefix><rank>" into a static-size buffer. */
static inline void tst_name(char *buf, size_t cap, const char *prefix, int rank)
{
    snprintf(buf, cap, "%s%d", prefix, rank);
}

/*
 * The set-up most tests share, declared in the caller's scope: rank, size, peer (next
 * rank), prev, a context on MPI_COMM_WORLD, agents A = "<prefix>_A<rank>" and
 * B = "<prefix>_B<rank>" with their names an and bn, and pbn, the name of the peer's B.
 */
#define TST_PAIR_SETUP(prefix)                                                                     \
    int rank = tst_rank(), size = tst_size();                                                      \
    int peer = (rank + 1) % size, prev = (rank + size - 1) % size;                                 \
    mpixfer_context_t *ctx = NULL;                                                                 \
    CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &ctx));                                        \
    char an[32], bn[32], pbn[32];                                                                  \
    tst_name(an, sizeof an, prefix "_A", rank);                                                    \
    tst_name(bn, sizeof bn, prefix "_B", rank);                                                    \
    tst_name(pbn, sizeof pbn, prefix "_B", peer);                                                  \
    mpixfer_agent_t *A = tst_agent(ctx, an), *B = tst_agent(ctx, bn);                              \
    (void)prev

/* ----------------------------------------------------------------- transfers */

/* Submit a one-pair transfer (aborts unless the submit succeeds). */
static inline mpixfer_request_t *tst_submit1(mpixfer_agent_t *a, mpixfer_op_t op, const char *remote,
                                             const void *local, uint64_t remote_addr, size_t len,
                                             const void *msg, size_t msg_len)
{
    mpixfer_mem_desc_t s = tst_desc(local, len);
    mpixfer_mem_desc_t d;
    d.addr = (uintptr_t)remote_addr;
    d.len = len;
    d.device_id = 0;
    mpixfer_transfer_request_t r;
    memset(&r, 0, sizeof r);
    r.op = op;
    r.src = tst_descs(MPIXFER_MEM_DRAM, &s, 1);
    r.dst = tst_descs(MPIXFER_MEM_DRAM, &d, 1);
    r.remote_name = remote;
    r.sync_message = msg;
    r.sync_message_len = msg_len;
    mpixfer_request_t *x = NULL;
    CHECK_OK(mpixfer_submit_transfer(a, &r, &x));
    CHECK(x != NULL);
    return x;
}

/* Wait (at most 30 s) for SUCCESS, check the status, free the request. */
#define TST_WAIT_OK(x)                                                                             \
    do {                                                                                           \
        mpixfer_request_t *tst_x_ = (x);                                                           \
        mpixfer_state_t tst_s_ = mpixfer_request_wait(tst_x_, 30000);                              \
        if (tst_s_ != MPIXFER_STATE_SUCCESS) {                                                     \
            fprintf(stderr, "%s:%d: [rank %d] request %s ended in state %d, status %s\n",          \
                    __FILE__, __LINE__, tst_rank(), #x, (int)tst_s_,                               \
                    mpixfer_status_name(mpixfer_request_status(tst_x_)));                          \
            tst_die();                                                                             \
        }                                                                                          \
        CHECK_OK(mpixfer_request_status(tst_x_));                                                  \
        CHECK(mpixfer_request_is_completed(tst_x_));                                               \
        mpixfer_request_free(tst_x_);                                                              \
    } while (0)

static inline void tst_xfer1(mpixfer_agent_t *a, mpixfer_op_t op, const char *remote,
                             const void *local, uint64_t remote_addr, size_t len)
{
    mpixfer_request_t *x = tst_submit1(a, op, remote, local, remote_addr, len, NULL, 0);
    TST_WAIT_OK(x);
}

/* --------------------------------------------------------------- MPI helpers */

/*
 * Barrier that keeps driving the library's progress while waiting, so a peer that needs us
 * to answer (descriptor requests, messages, emulated RMA) is never starved.
 */
static inline void tst_barrier_progress(mpixfer_context_t *ctx)
{
    MPI_Request r;
    int done = 0;
    double deadline = tst_now() + 60.0;
    CHECK_MPI(MPI_Ibarrier(MPI_COMM_WORLD, &r));
    while (!done) {
        if (ctx)
            CHECK_OK(mpixfer_progress(ctx));
        CHECK_MPI(MPI_Test(&r, &done, MPI_STATUS_IGNORE));
        if (!done) {
            CHECK_MSG(tst_now() < deadline, "barrier did not complete within 60 s");
            usleep(100);
        }
    }
}

/* Barrier that sleeps between MPI_Test calls and never calls the library. */
static inline void tst_barrier_sleep(void)
{
    MPI_Request r;
    int done = 0;
    double deadline = tst_now() + 60.0;
    CHECK_MPI(MPI_Ibarrier(MPI_COMM_WORLD, &r));
    while (!done) {
        CHECK_MPI(MPI_Test(&r, &done, MPI_STATUS_IGNORE));
        if (!done) {
            CHECK_MSG(tst_now() < deadline, "barrier did not complete within 60 s");
            usleep(1000);
        }
    }
}

/* Allgather one uint64 per rank into @p out (size entries). */
static inline void tst_allgather_u64(uint64_t mine, uint64_t *out)
{
    CHECK_MPI(MPI_Allgather(&mine, 1, MPI_UINT64_T, out, 1, MPI_UINT64_T, MPI_COMM_WORLD));
}

/* A variable-size byte string of every rank, gathered with MPI_Allgatherv. */
typedef struct {
    int n;
    char *data;
    int *lens;
    int *displs;
} tst_gathered_t;

static inline tst_gathered_t tst_allgather_bytes(const void *mine, size_t len)
{
    tst_gathered_t g;
    int size = tst_size(), mylen = (int)len, total = 0;
    CHECK(len < (size_t)1 << 30);
    g.n = size;
    g.lens = (int *)calloc((size_t)size, sizeof(int));
    g.displs = (int *)calloc((size_t)size, sizeof(int));
    CHECK(g.lens && g.displs);
    CHECK_MPI(MPI_Allgather(&mylen, 1, MPI_INT, g.lens, 1, MPI_INT, MPI_COMM_WORLD));
    for (int i = 0; i < size; i++) {
        g.displs[i] = total;
        total += g.lens[i];
    }
    g.data = (char *)malloc((size_t)total + 1);
    CHECK(g.data);
    CHECK_MPI(MPI_Allgatherv(mine, mylen, MPI_BYTE, g.data, g.lens, g.displs, MPI_BYTE,
                             MPI_COMM_WORLD));
    return g;
}

static inline const void *tst_gathered_at(const tst_gathered_t *g, int rank, size_t *len)
{
    *len = (size_t)g->lens[rank];
    return g->data + g->displs[rank];
}

static inline void tst_gathered_free(tst_gathered_t *g)
{
    free(g->data);
    free(g->lens);
    free(g->displs);
    memset(g, 0, sizeof *g);
}

/* Fetch agent @p a's descriptor blob and allgather it; rank i's blob at tst_gathered_at(g, i). */
static inline tst_gathered_t tst_allgather_desc(mpixfer_agent_t *a)
{
    void *blob = NULL;
    size_t len = 0;
    CHECK_OK(mpixfer_get_local_agent_desc(a, &blob, &len));
    CHECK(blob != NULL && len > 0);
    tst_gathered_t g = tst_allgather_bytes(blob, len);
    mpixfer_free(blob);
    return g;
}

/* Load the blob of rank @p rank (agent @p name) from @p g into @p a. */
static inline void tst_load_from(mpixfer_agent_t *a, const char *name, const tst_gathered_t *g,
                                 int rank)
{
    size_t len;
    const void *blob = tst_gathered_at(g, rank, &len);
    CHECK_OK(mpixfer_load_remote_agent(a, name, blob, len));
}

/* Load the local descriptor of @p from into @p into (same process). */
static inline void tst_load_local(mpixfer_agent_t *into, mpixfer_agent_t *from)
{
    void *blob = NULL;
    size_t len = 0;
    CHECK_OK(mpixfer_get_local_agent_desc(from, &blob, &len));
    CHECK_OK(mpixfer_load_remote_agent(into, mpixfer_agent_name(from), blob, len));
    mpixfer_free(blob);
}

/* ------------------------------------------------------- files between jobs */

/* Write @p text to @p path atomically (a temporary file, then rename): a job that polls for
 * the file never sees half of it. */
static inline void tst_write_file(const char *path, const char *text)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    CHECK(f != NULL);
    fputs(text, f);
    CHECK(fclose(f) == 0);
    CHECK(rename(tmp, path) == 0);
}

/* Wait up to @p timeout_s for @p path; its text (up to 4 KiB) in a static buffer. */
static inline char *tst_read_file(const char *path, double timeout_s)
{
    double deadline = tst_now() + timeout_s;
    for (;;) {
        FILE *f = fopen(path, "r");
        if (f != NULL) {
            static char buf[4096];
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[n] = '\0';
            return buf;
        }
        CHECK_MSG(tst_now() < deadline, "%s did not appear in %.0f s", path, timeout_s);
        tst_sleep_ms(20);
    }
}

#endif /* MPIXFER_TESTS_COMMON_H */
