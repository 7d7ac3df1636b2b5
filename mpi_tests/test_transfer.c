/* Transfers: WRITE and READ with several pairs (permuted, different lengths), 1024 small
 * descriptors in one request, bytes next to the written ranges untouched, wait/poll
 * semantics, wait(NULL), freeing a request in flight. Every pass runs against an agent of
 * the same process (direct copy; the only path with 1 rank) and against the next rank. */
#include "common.h"

#define N (1u << 20)
#define NCH 8
#define C (N / NCH)
#define NSMALL 1024
#define SMALL 256

static size_t chunk_len(int i) { return C - 64u * (unsigned)i - (unsigned)i; }
static int perm(int i) { return (i * 3) % NCH; }

static mpixfer_request_t *submit_chunks(mpixfer_agent_t *a, mpixfer_op_t op, const char *remote,
                                        uint8_t *src, uint64_t dst_base)
{
    mpixfer_mem_desc_t s[NCH], d[NCH];
    for (int i = 0; i < NCH; i++) {
        s[i] = tst_desc(src + (size_t)i * C, chunk_len(i));
        d[i] = tst_desc((void *)(uintptr_t)(dst_base + (uint64_t)perm(i) * C), chunk_len(i));
    }
    mpixfer_transfer_request_t r;
    memset(&r, 0, sizeof r);
    r.op = op;
    r.src = tst_descs(MPIXFER_MEM_DRAM, s, NCH);
    r.dst = tst_descs(MPIXFER_MEM_DRAM, d, NCH);
    r.remote_name = remote;
    mpixfer_request_t *x = NULL;
    CHECK_OK(mpixfer_submit_transfer(a, &r, &x));
    CHECK(x != NULL);
    return x;
}

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    TST_PAIR_SETUP("xfer");
    uint8_t *src = tst_alloc(N), *dst = tst_alloc(N);
    CHECK_OK(tst_register(A, src, N));
    CHECK_OK(tst_register(B, dst, N));
    uint64_t *dst_all = calloc((size_t)size, 8);
    tst_allgather_u64((uintptr_t)dst, dst_all);
    CHECK_OK(mpixfer_bootstrap(ctx));

    int npass = size > 1 ? 2 : 1;
    for (int pass = 0; pass < npass; pass++) {
        const char *tname = pass == 0 ? bn : pbn;
        int trank = pass == 0 ? rank : peer; /* whose B we target */
        int wrank = pass == 0 ? rank : prev; /* who targets our B */
        uint64_t tdst = dst_all[trank];
        for (uint32_t it = 0; it < 4; it++) {
            uint32_t iter = (uint32_t)pass * 100 + it;
            /* ---- WRITE: background in dst, pattern in src */
            tst_pattern_fill(dst, N, (uint32_t)rank, 1000 + iter, 0);
            tst_pattern_fill(src, N, (uint32_t)rank, iter, 0);
            tst_barrier_progress(ctx);
            mpixfer_request_t *x = submit_chunks(A, MPIXFER_OP_WRITE, tname, src, tdst);
            TST_WAIT_OK(x);
            tst_barrier_progress(ctx);
            for (int i = 0; i < NCH; i++) {
                uint8_t *dc = dst + (size_t)perm(i) * C;
                size_t l = chunk_len(i);
                CHECK_PATTERN(dc, l, wrank, iter, (size_t)i * C);
                CHECK_PATTERN(dc + l, C - l, rank, 1000 + iter, (size_t)perm(i) * C + l);
            }
            CHECK_PATTERN(src, N, rank, iter, 0); /* the source is not modified */
            tst_barrier_progress(ctx);

            /* ---- READ: owner fills dst, reader's src holds a background */
            tst_pattern_fill(dst, N, (uint32_t)rank, 2000 + iter, 0);
            tst_pattern_fill(src, N, (uint32_t)rank, 3000 + iter, 0);
            tst_barrier_progress(ctx);
            x = submit_chunks(A, MPIXFER_OP_READ, tname, src, tdst);
            TST_WAIT_OK(x);
            for (int i = 0; i < NCH; i++) {
                uint8_t *sc = src + (size_t)i * C;
                size_t l = chunk_len(i);
                CHECK_PATTERN(sc, l, trank, 2000 + iter, (size_t)perm(i) * C);
                CHECK_PATTERN(sc + l, C - l, rank, 3000 + iter, (size_t)i * C + l);
            }
            tst_barrier_progress(ctx);
            CHECK_PATTERN(dst, N, rank, 2000 + iter, 0); /* READ leaves the remote alone */
        }

        /* ---- 1024 small descriptors in one WRITE, then one READ */
        {
            static mpixfer_mem_desc_t s[NSMALL], d[NSMALL];
            uint32_t iter = 4000u + (uint32_t)pass;
            for (int i = 0; i < NSMALL; i++) {
                s[i] = tst_desc(src + (size_t)i * 2 * SMALL, SMALL);
                d[i] = tst_desc((void *)(uintptr_t)(tdst + (uint64_t)((i * 7) % NSMALL) * 2 * SMALL + 64),
                                SMALL);
            }
            tst_pattern_fill(dst, N, (uint32_t)rank, 5000, 0);
            tst_pattern_fill(src, N, (uint32_t)rank, iter, 0);
            tst_barrier_progress(ctx);
            mpixfer_transfer_request_t r;
            memset(&r, 0, sizeof r);
            r.op = MPIXFER_OP_WRITE;
            r.src = tst_descs(MPIXFER_MEM_DRAM, s, NSMALL);
            r.dst = tst_descs(MPIXFER_MEM_DRAM, d, NSMALL);
            r.remote_name = tname;
            mpixfer_request_t *x = NULL;
            CHECK_OK(mpixfer_submit_transfer(A, &r, &x));
            TST_WAIT_OK(x);
            tst_barrier_progress(ctx);
            for (int i = 0; i < NSMALL; i++) {
                size_t off = (size_t)((i * 7) % NSMALL) * 2 * SMALL;
                CHECK_PATTERN(dst + off, 64, rank, 5000, off);
                CHECK_PATTERN(dst + off + 64, SMALL, wrank, iter, (size_t)i * 2 * SMALL);
                CHECK_PATTERN(dst + off + 64 + SMALL, SMALL - 64, rank, 5000, off + 64 + SMALL);
            }
            tst_barrier_progress(ctx);
            memset(src, 0, N);
            r.op = MPIXFER_OP_READ;
            CHECK_OK(mpixfer_submit_transfer(A, &r, &x));
            TST_WAIT_OK(x);
            for (int i = 0; i < NSMALL; i++) {
                size_t off = (size_t)((i * 7) % NSMALL) * 2 * SMALL;
                /* we read back what we wrote there */
                CHECK_PATTERN(src + (size_t)i * 2 * SMALL, SMALL, rank, iter, (size_t)i * 2 * SMALL);
                (void)off;
            }
            tst_barrier_progress(ctx);
        }

        /* ---- pairs contiguous on both sides (the library may merge them into one op),
         * with a gap in the middle and a length-1 pair */
        {
            enum { NC = 12 };
            mpixfer_mem_desc_t s[NC], d[NC];
            size_t so = 1000, doff = 5000;
            for (int i = 0; i < NC; i++) {
                size_t l = i == 5 ? 1 : 777u * (size_t)(i + 1);
                if (i == 8) { /* break contiguity on the remote side only */
                    doff += 64;
                }
                s[i] = tst_desc(src + so, l);
                d[i] = tst_desc((void *)(uintptr_t)(tdst + doff), l);
                so += l;
                doff += l;
            }
            uint32_t iter = 4500u + (uint32_t)pass;
            tst_pattern_fill(dst, N, (uint32_t)rank, 4600, 0);
            tst_pattern_fill(src, N, (uint32_t)rank, iter, 0);
            tst_barrier_progress(ctx);
            mpixfer_transfer_request_t r;
            memset(&r, 0, sizeof r);
            r.op = MPIXFER_OP_WRITE;
            r.src = tst_descs(MPIXFER_MEM_DRAM, s, NC);
            r.dst = tst_descs(MPIXFER_MEM_DRAM, d, NC);
            r.remote_name = tname;
            mpixfer_request_t *x = NULL;
            CHECK_OK(mpixfer_submit_transfer(A, &r, &x));
            TST_WAIT_OK(x);
            tst_barrier_progress(ctx);
            for (int i = 0; i < NC; i++) {
                size_t o = (size_t)(d[i].addr - tdst), so_i = (size_t)((uint8_t *)s[i].addr - src);
                CHECK_PATTERN(dst + o, d[i].len, wrank, iter, so_i);
                if (i == 8)
                    CHECK_PATTERN(dst + o - 64, 64, rank, 4600, o - 64); /* the gap */
            }
            CHECK_PATTERN(dst, 5000, rank, 4600, 0);
            size_t end = (size_t)(d[NC - 1].addr - tdst) + d[NC - 1].len;
            CHECK_PATTERN(dst + end, N - end, rank, 4600, end);
            tst_barrier_progress(ctx);
            /* READ the same pairs back into a cleared source. */
            memset(src, 0, N);
            r.op = MPIXFER_OP_READ;
            CHECK_OK(mpixfer_submit_transfer(A, &r, &x));
            TST_WAIT_OK(x);
            for (int i = 0; i < NC; i++) {
                size_t so_i = (size_t)((uint8_t *)s[i].addr - src);
                CHECK_PATTERN(src + so_i, s[i].len, rank, iter, so_i);
            }
            CHECK(src[999] == 0 && src[so] == 0);
            tst_barrier_progress(ctx);
        }

        /* ---- wait / poll semantics on a whole-buffer WRITE */
        {
            uint32_t iter = 6000u + (uint32_t)pass;
            tst_pattern_fill(src, N, (uint32_t)rank, iter, 0);
            tst_barrier_progress(ctx);
            mpixfer_request_t *x = tst_submit1(A, MPIXFER_OP_WRITE, tname, src, tdst, N, NULL, 0);
            mpixfer_state_t s0 = mpixfer_request_wait(x, 0);
            CHECK(s0 == MPIXFER_STATE_IN_PROGRESS || s0 == MPIXFER_STATE_SUCCESS);
            mpixfer_status_t st = mpixfer_request_status(x);
            CHECK(st == MPIXFER_IN_PROGRESS || st == MPIXFER_OK);
            double deadline = tst_now() + 20.0;
            while (!mpixfer_request_is_completed(x))
                CHECK_MSG(tst_now() < deadline, "request not complete after 20 s of polling");
            CHECK(mpixfer_request_wait(x, -1) == MPIXFER_STATE_SUCCESS);
            CHECK(mpixfer_request_wait(x, 0) == MPIXFER_STATE_SUCCESS);
            CHECK(mpixfer_request_wait(x, 100) == MPIXFER_STATE_SUCCESS);
            CHECK_OK(mpixfer_request_status(x));
            CHECK(mpixfer_request_is_completed(x));
            mpixfer_request_free(x);
            tst_barrier_progress(ctx);
            CHECK_PATTERN(dst, N, wrank, iter, 0);
            tst_barrier_progress(ctx);
        }
    }
    CHECK(mpixfer_request_wait(NULL, 0) == MPIXFER_STATE_FAILURE);
    CHECK(mpixfer_request_wait(NULL, -1) == MPIXFER_STATE_FAILURE);
    CHECK(mpixfer_request_wait(NULL, 50) == MPIXFER_STATE_FAILURE);
    CHECK(!mpixfer_request_is_completed(NULL) || mpixfer_request_is_completed(NULL));

    /* ---- requests freed while in flight complete in the background (checked after the
     * context is destroyed, which completes in-flight transfers). Quarter 0 of our B is
     * written by ourselves, quarter 1 by the previous rank. */
    tst_pattern_fill(dst, N, (uint32_t)rank, 7777, 0);
    tst_pattern_fill(src, N, (uint32_t)rank, 7000, 0);
    tst_barrier_progress(ctx);
    for (int pass = 0; pass < npass; pass++) {
        const char *tname = pass == 0 ? bn : pbn;
        uint64_t tdst = dst_all[pass == 0 ? rank : peer];
        mpixfer_request_t *x = tst_submit1(A, MPIXFER_OP_WRITE, tname, src + (size_t)pass * (N / 4),
                                           tdst + (uint64_t)pass * (N / 4), N / 4, NULL, 0);
        mpixfer_request_free(x);
    }
    /* The bytes went the way the context chose for each peer (the messages variant of this
     * test sets MPIXFER_DATA_PATH=messages): both must really be in use. */
    const char *env_path = getenv("MPIXFER_DATA_PATH");
    bool messages = env_path != NULL && strcmp(env_path, "messages") == 0;
    mpixfer_stats_t stats;
    CHECK_OK(mpixfer_context_stats(ctx, &stats));
    for (int r = 0; r < size; r++) {
        mpixfer_data_path_t path;
        CHECK_OK(mpixfer_context_data_path(ctx, r, &path));
        CHECK_MSG(path == (messages && r != rank ? MPIXFER_DATA_PATH_MESSAGES
                                                 : MPIXFER_DATA_PATH_RMA),
                  "data path to rank %d is %d", r, (int)path);
    }
    if (size > 1 && messages)
        CHECK_MSG(stats.staged_chunks > 0 && stats.rma_ops == 0,
                  "messages path: %llu chunks, %llu RMA ops",
                  (unsigned long long)stats.staged_chunks, (unsigned long long)stats.rma_ops);
    else if (size > 1)
        CHECK_MSG(stats.rma_ops > 0 && stats.staged_chunks == 0,
                  "RMA path: %llu chunks, %llu RMA ops", (unsigned long long)stats.staged_chunks,
                  (unsigned long long)stats.rma_ops);
    /* Every rank has submitted before anyone tears down its target agent; A's destruction
     * completes its in-flight (orphaned) requests before any B detaches its memory. */
    tst_barrier_progress(ctx);
    CHECK_OK(mpixfer_agent_destroy(A));
    tst_barrier_progress(ctx);
    CHECK_OK(mpixfer_agent_destroy(B));
    CHECK_OK(mpixfer_context_destroy(ctx));
    MPI_Barrier(MPI_COMM_WORLD);
    CHECK_PATTERN(dst, N / 4, rank, 7000, 0);
    if (size > 1)
        CHECK_PATTERN(dst + N / 4, N / 4, prev, 7000, N / 4);
    CHECK_PATTERN(dst + N / 2, N / 2, rank, 7777, N / 2);

    free(src);
    free(dst);
    free(dst_all);
    return tst_finish("test_transfer");
}
