/* invalidate_remote_agent: unknown name and double invalidation are NOT_FOUND; afterwards
 * submit is NOT_FOUND and check_remote_descs false while other remotes still work; reloading
 * (blob or bootstrap) makes it work again; a transfer in flight when its remote is
 * invalidated still ends (SUCCESS or FAILURE, never hangs). */
#include "common.h"

#define LEN (128 * 1024)

static mpixfer_status_t try_write(mpixfer_agent_t *a, const char *remote, void *src,
                                  uint64_t dst, size_t len)
{
    mpixfer_mem_desc_t s = tst_desc(src, len), d = tst_desc((void *)(uintptr_t)dst, len);
    mpixfer_transfer_request_t r;
    memset(&r, 0, sizeof r);
    r.op = MPIXFER_OP_WRITE;
    r.src = tst_descs(MPIXFER_MEM_DRAM, &s, 1);
    r.dst = tst_descs(MPIXFER_MEM_DRAM, &d, 1);
    r.remote_name = remote;
    mpixfer_request_t *x = NULL;
    mpixfer_status_t st = mpixfer_submit_transfer(a, &r, &x);
    if (st == MPIXFER_OK)
        TST_WAIT_OK(x);
    return st;
}

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    TST_PAIR_SETUP("inv");
    uint8_t *src = tst_alloc(LEN), *dst = tst_alloc(LEN);
    CHECK_OK(tst_register(A, src, LEN));
    CHECK_OK(tst_register(B, dst, LEN));
    uint64_t *dst_all = calloc((size_t)size, 8);
    tst_allgather_u64((uintptr_t)dst, dst_all);

    CHECK_STATUS(mpixfer_invalidate_remote_agent(A, "inv_nobody"), MPIXFER_ERR_NOT_FOUND);
    CHECK_STATUS(mpixfer_invalidate_remote_agent(A, pbn), MPIXFER_ERR_NOT_FOUND); /* not loaded */
    CHECK_STATUS(mpixfer_invalidate_remote_agent(NULL, pbn), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_invalidate_remote_agent(A, NULL), MPIXFER_ERR_INVALID_ARG);
    CHECK_OK(mpixfer_bootstrap(ctx));

    for (int pass = 0; pass < (size > 1 ? 2 : 1); pass++) {
        const char *tname = pass == 0 ? bn : pbn;
        const char *other = pass == 0 ? pbn : bn;
        uint64_t tdst = dst_all[pass == 0 ? rank : peer];
        uint64_t odst = dst_all[pass == 0 ? peer : rank];
        int wrank = pass == 0 ? rank : prev;
        uint32_t iter = 10u * (uint32_t)pass;

        tst_pattern_fill(src, LEN, (uint32_t)rank, iter, 0);
        CHECK_OK(try_write(A, tname, src, tdst, LEN));
        tst_barrier_progress(ctx);
        CHECK_PATTERN(dst, LEN, wrank, iter, 0);
        tst_barrier_progress(ctx);

        CHECK_OK(mpixfer_invalidate_remote_agent(A, tname));
        CHECK_STATUS(mpixfer_invalidate_remote_agent(A, tname), MPIXFER_ERR_NOT_FOUND);
        CHECK(!tst_check_remote(A, tname, tdst, LEN));
        tst_pattern_fill(src, LEN, (uint32_t)rank, iter + 1, 0);
        CHECK_STATUS(try_write(A, tname, src, tdst, LEN), MPIXFER_ERR_NOT_FOUND);
        if (size > 1) { /* the other remote is unaffected */
            CHECK(tst_check_remote(A, other, odst, LEN));
        }
        tst_barrier_progress(ctx);
        CHECK_PATTERN(dst, LEN, wrank, iter, 0); /* nothing written after the invalidation */
        tst_barrier_progress(ctx);

        /* Reload by blob: works again. */
        tst_gathered_t g = tst_allgather_desc(B);
        tst_load_from(A, tname, &g, pass == 0 ? rank : peer);
        tst_gathered_free(&g);
        CHECK(tst_check_remote(A, tname, tdst, LEN));
        CHECK_OK(try_write(A, tname, src, tdst, LEN));
        tst_barrier_progress(ctx);
        CHECK_PATTERN(dst, LEN, wrank, iter + 1, 0);
        tst_barrier_progress(ctx);

        /* Invalidate, then reload by bootstrap. */
        CHECK_OK(mpixfer_invalidate_remote_agent(A, tname));
        CHECK_OK(mpixfer_bootstrap(ctx));
        tst_pattern_fill(src, LEN, (uint32_t)rank, iter + 2, 0);
        CHECK_OK(try_write(A, tname, src, tdst, LEN));
        tst_barrier_progress(ctx);
        CHECK_PATTERN(dst, LEN, wrank, iter + 2, 0);
        tst_barrier_progress(ctx);

        /* Invalidate while a transfer is in flight: it still ends. */
        mpixfer_request_t *x = tst_submit1(A, MPIXFER_OP_WRITE, tname, src, tdst, LEN, NULL, 0);
        CHECK_OK(mpixfer_invalidate_remote_agent(A, tname));
        mpixfer_state_t s = mpixfer_request_wait(x, 15000);
        CHECK_MSG(s == MPIXFER_STATE_SUCCESS || s == MPIXFER_STATE_FAILURE,
                  "in-flight request after invalidate: state %d", (int)s);
        if (s == MPIXFER_STATE_SUCCESS)
            CHECK_OK(mpixfer_request_status(x));
        else
            CHECK(mpixfer_request_status(x) < 0);
        mpixfer_request_free(x);
        CHECK_OK(mpixfer_bootstrap(ctx));
        tst_barrier_progress(ctx);
    }

    CHECK_OK(mpixfer_agent_destroy(A));
    CHECK_OK(mpixfer_agent_destroy(B));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(src);
    free(dst);
    free(dst_all);
    return tst_finish("test_invalidate");
}
