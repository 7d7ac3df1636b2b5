/* Deregistering memory that an in-flight request of this agent uses: a 64 MiB WRITE (and
 * READ) is submitted and its local buffer deregistered at once. Either the library says
 * MPIXFER_ERR_BUSY (then, after waiting, deregistering again is OK) or it says OK, in which
 * case the request must already have completed. The data is verified each time. */
#include "common.h"

#define BIG ((size_t)64 << 20)

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    TST_PAIR_SETUP("busy");
    uint8_t *src = tst_alloc(BIG), *dst = tst_alloc(BIG);
    CHECK_OK(tst_register(B, dst, BIG));
    uint64_t *dst_all = calloc((size_t)size, 8);
    tst_allgather_u64((uintptr_t)dst, dst_all);
    CHECK_OK(mpixfer_bootstrap(ctx));
    int busy_seen = 0, ok_seen = 0;

    for (int pass = 0; pass < (size > 1 ? 2 : 1); pass++) {
        const char *tname = pass == 0 ? bn : pbn;
        int trank = pass == 0 ? rank : peer, wrank = pass == 0 ? rank : prev;
        uint64_t tdst = dst_all[trank];
        for (int op = 0; op < 2; op++) {
            uint32_t iter = (uint32_t)(pass * 10 + op);
            if (op == 0)
                tst_pattern_fill(src, BIG, (uint32_t)rank, iter, 0);
            else
                tst_pattern_fill(dst, BIG, (uint32_t)rank, iter, 0);
            CHECK_OK(tst_register(A, src, BIG));
            tst_barrier_progress(ctx);
            mpixfer_request_t *x = tst_submit1(A, op == 0 ? MPIXFER_OP_WRITE : MPIXFER_OP_READ,
                                               tname, src, tdst, BIG, NULL, 0);
            mpixfer_status_t st = tst_deregister(A, src, BIG);
            if (st == MPIXFER_ERR_BUSY) {
                busy_seen++;
                CHECK(mpixfer_request_wait(x, 30000) == MPIXFER_STATE_SUCCESS);
                CHECK_OK(mpixfer_request_status(x));
                CHECK_OK(tst_deregister(A, src, BIG));
            } else {
                CHECK_MSG(st == MPIXFER_OK, "deregister returned %s", mpixfer_status_name(st));
                ok_seen++;
                /* OK is only allowed if the request had already completed. */
                CHECK_MSG(mpixfer_request_status(x) == MPIXFER_OK,
                          "deregister OK while the request is %s",
                          mpixfer_status_name(mpixfer_request_status(x)));
                CHECK(mpixfer_request_wait(x, 0) == MPIXFER_STATE_SUCCESS);
            }
            CHECK_STATUS(tst_deregister(A, src, BIG), MPIXFER_ERR_NOT_FOUND);
            mpixfer_request_free(x);
            tst_barrier_progress(ctx);
            if (op == 0)
                CHECK_PATTERN(dst, BIG, wrank, iter, 0);
            else
                CHECK_PATTERN(src, BIG, trank, iter, 0);
            tst_barrier_progress(ctx);
        }
    }
    if (rank == 0)
        printf("deregister during transfer: BUSY %d times, already complete %d times\n",
               busy_seen, ok_seen);

    CHECK_OK(mpixfer_agent_destroy(A));
    CHECK_OK(mpixfer_agent_destroy(B));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(src);
    free(dst);
    free(dst_all);
    return tst_finish("test_deregister_busy");
}
