/* submit_transfer validation: every error is reported before any byte moves (the local
 * source and the destination buffers are verified unchanged after each failure), the request
 * pointer is left alone, and a good transfer still works afterwards. Uses a context with
 * max_sync_message = 64 for the TOO_LARGE rule. Against the same-process agent and the next
 * rank's agent. */
#include "common.h"

#define LEN (64 * 1024)
#define SENTINEL ((mpixfer_request_t *)(uintptr_t)0x1)

static mpixfer_context_t *ctx;
static mpixfer_agent_t *A, *B;
static uint8_t *src, *dst, *unreg;
static int rank;

static void check_untouched(void)
{
    CHECK_PATTERN(src, LEN, rank, 1, 0);
    CHECK_PATTERN(dst, LEN, rank, 2, 0);
}

static void expect_fail(int line, mpixfer_agent_t *a, const mpixfer_transfer_request_t *r,
                        mpixfer_status_t expected)
{
    mpixfer_request_t *x = SENTINEL;
    mpixfer_status_t st = mpixfer_submit_transfer(a, r, &x);
    if (st != expected) {
        fprintf(stderr, "%s:%d: [rank %d] submit (op %d to %s) returned %s, expected %s\n",
                __FILE__, line, rank, r ? (int)r->op : -1,
                r && r->remote_name ? r->remote_name : "(null)", mpixfer_status_name(st),
                mpixfer_status_name(expected));
        tst_die();
    }
    CHECK_MSG(x == SENTINEL, "line %d: xfer_p written on failure", line);
    check_untouched();
}
#define EXPECT_FAIL(a, r, e) expect_fail(__LINE__, (a), (r), (e))

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    rank = tst_rank();
    int size = tst_size(), peer = (rank + 1) % size, prev = (rank + size - 1) % size;
    mpixfer_context_params_t params = MPIXFER_CONTEXT_PARAMS_INIT;
    params.max_sync_message = 64;
    CHECK_OK(mpixfer_context_create_with_params(MPI_COMM_WORLD, &params, &ctx));
    char an[32], bn[32], pbn[32];
    tst_name(an, sizeof an, "sub_A", rank);
    tst_name(bn, sizeof bn, "sub_B", rank);
    tst_name(pbn, sizeof pbn, "sub_B", peer);
    A = tst_agent(ctx, an);
    B = tst_agent(ctx, bn);
    src = tst_alloc(LEN);
    dst = tst_alloc(LEN);
    unreg = tst_alloc(LEN);
    CHECK_OK(tst_register(A, src, LEN));
    CHECK_OK(tst_register(B, dst, LEN));
    tst_pattern_fill(src, LEN, (uint32_t)rank, 1, 0);
    tst_pattern_fill(dst, LEN, (uint32_t)rank, 2, 0);
    uint64_t *dst_all = calloc((size_t)size, 8);
    tst_allgather_u64((uintptr_t)dst, dst_all);
    CHECK_OK(mpixfer_bootstrap(ctx));

    char msg[128];
    memset(msg, 'm', sizeof msg);
    for (int pass = 0; pass < (size > 1 ? 2 : 1); pass++) {
        const char *tname = pass == 0 ? bn : pbn;
        uint64_t tdst = dst_all[pass == 0 ? rank : peer];
        for (int op = 0; op < 2; op++) {
            mpixfer_mem_desc_t s[2], d[2];
            mpixfer_transfer_request_t r, good;
            memset(&good, 0, sizeof good);
            s[0] = tst_desc(src, 4096);
            s[1] = tst_desc(src + 8192, 4096);
            d[0] = tst_desc((void *)(uintptr_t)tdst, 4096);
            d[1] = tst_desc((void *)(uintptr_t)(tdst + 8192), 4096);
            good.op = op == 0 ? MPIXFER_OP_WRITE : MPIXFER_OP_READ;
            good.src = tst_descs(MPIXFER_MEM_DRAM, s, 2);
            good.dst = tst_descs(MPIXFER_MEM_DRAM, d, 2);
            good.remote_name = tname;
            mpixfer_request_t *x = SENTINEL;

            /* NULL arguments */
            CHECK_STATUS(mpixfer_submit_transfer(NULL, &good, &x), MPIXFER_ERR_INVALID_ARG);
            CHECK_STATUS(mpixfer_submit_transfer(A, NULL, &x), MPIXFER_ERR_INVALID_ARG);
            CHECK_STATUS(mpixfer_submit_transfer(A, &good, NULL), MPIXFER_ERR_INVALID_ARG);
            CHECK(x == SENTINEL);
            check_untouched();
            /* counts */
            r = good;
            r.dst.count = 1;
            EXPECT_FAIL(A, &r, MPIXFER_ERR_INVALID_ARG);
            r = good;
            r.src.count = 0;
            r.dst.count = 0;
            EXPECT_FAIL(A, &r, MPIXFER_ERR_INVALID_ARG);
            r = good;
            r.src.descs = NULL;
            EXPECT_FAIL(A, &r, MPIXFER_ERR_INVALID_ARG);
            /* lengths */
            r = good;
            s[1].len = 4095;
            EXPECT_FAIL(A, &r, MPIXFER_ERR_INVALID_ARG);
            s[1].len = 0;
            d[1].len = 0;
            EXPECT_FAIL(A, &r, MPIXFER_ERR_INVALID_ARG);
            s[1].len = d[1].len = 4096;
            /* op, names */
            r = good;
            r.op = (mpixfer_op_t)7;
            EXPECT_FAIL(A, &r, MPIXFER_ERR_INVALID_ARG);
            r = good;
            r.remote_name = NULL;
            EXPECT_FAIL(A, &r, MPIXFER_ERR_INVALID_ARG);
            r.remote_name = "sub_nobody";
            EXPECT_FAIL(A, &r, MPIXFER_ERR_NOT_FOUND);
            /* src not registered / running past its region (second pair; first is good) */
            r = good;
            s[1] = tst_desc(unreg, 4096);
            EXPECT_FAIL(A, &r, MPIXFER_ERR_NOT_FOUND);
            s[1] = tst_desc(src + LEN - 100, 4096);
            EXPECT_FAIL(A, &r, MPIXFER_ERR_OUT_OF_RANGE);
            s[1] = tst_desc(src + LEN - 4095, 4096); /* one byte past the end */
            EXPECT_FAIL(A, &r, MPIXFER_ERR_OUT_OF_RANGE);
            s[1] = tst_desc(src + 8192, 4096);
            /* dst not advertised / running past its region */
            d[1] = tst_desc((void *)(uintptr_t)0x1000, 4096);
            EXPECT_FAIL(A, &r, MPIXFER_ERR_NOT_FOUND);
            d[1] = tst_desc((void *)(uintptr_t)(tdst + LEN - 1), 4096);
            EXPECT_FAIL(A, &r, MPIXFER_ERR_OUT_OF_RANGE);
            d[1] = tst_desc((void *)(uintptr_t)(tdst + LEN - 4095), 4096); /* one byte past */
            EXPECT_FAIL(A, &r, MPIXFER_ERR_OUT_OF_RANGE);
            d[1] = tst_desc((void *)(uintptr_t)(tdst + LEN), 4096); /* starts at the end */
            EXPECT_FAIL(A, &r, MPIXFER_ERR_NOT_FOUND);
            d[1] = tst_desc((void *)(uintptr_t)(tdst + 8192), 4096);
            /* memory type */
            r = good;
            r.src.type = MPIXFER_MEM_VRAM;
            if (tst_vram_unsupported(ctx))
                EXPECT_FAIL(A, &r, MPIXFER_ERR_UNSUPPORTED);
            r.src.type = MPIXFER_MEM_FILE;
            EXPECT_FAIL(A, &r, MPIXFER_ERR_UNSUPPORTED);
            /* sync message: 65 bytes > 64 */
            r = good;
            r.sync_message = msg;
            r.sync_message_len = 65;
            EXPECT_FAIL(A, &r, MPIXFER_ERR_TOO_LARGE);
            r.sync_message_len = sizeof msg;
            EXPECT_FAIL(A, &r, MPIXFER_ERR_TOO_LARGE);
            r.sync_message = NULL;
            r.sync_message_len = 8;
            EXPECT_FAIL(A, &r, MPIXFER_ERR_INVALID_ARG);
            /* invalidated remote */
            CHECK_OK(mpixfer_invalidate_remote_agent(A, tname));
            EXPECT_FAIL(A, &good, MPIXFER_ERR_NOT_FOUND);
            CHECK_OK(mpixfer_bootstrap(ctx)); /* collective: all ranks are in the same step */
        }
    }
    /* Nobody wrote into our buffer. */
    tst_barrier_progress(ctx);
    check_untouched();
    tst_barrier_progress(ctx);

    /* A good WRITE with a 64-byte (maximum) sync message still works, per target. */
    for (int pass = 0; pass < (size > 1 ? 2 : 1); pass++) {
        const char *tname = pass == 0 ? bn : pbn;
        uint64_t tdst = dst_all[pass == 0 ? rank : peer];
        int wrank = pass == 0 ? rank : prev;
        char wname[32];
        tst_name(wname, sizeof wname, "sub_A", wrank);
        uint32_t iter = 10u + (uint32_t)pass;
        tst_pattern_fill(src, LEN, (uint32_t)rank, iter, 0);
        tst_barrier_progress(ctx);
        snprintf(msg, sizeof msg, "pass %d from %s", pass, an);
        mpixfer_request_t *x = tst_submit1(A, MPIXFER_OP_WRITE, tname, src, tdst, LEN, msg, 64);
        bool have_msg = false, done = false;
        double deadline = tst_now() + 15.0;
        while (!have_msg || !done) {
            mpixfer_sync_message_t *m = NULL;
            size_t n = 0;
            CHECK_OK(mpixfer_get_notified_sync_messages(B, &m, &n));
            for (size_t i = 0; i < n; i++) {
                char expect[128];
                memset(expect, 'm', sizeof expect);
                snprintf(expect, sizeof expect, "pass %d from %s", pass, wname);
                CHECK(!have_msg);
                CHECK_MSG(strcmp(m[i].agent_name, wname) == 0, "message from %s", m[i].agent_name);
                CHECK(m[i].len == 64 && memcmp(m[i].data, expect, strlen(expect) + 1) == 0);
                CHECK_PATTERN(dst, LEN, wrank, iter, 0);
                have_msg = true;
            }
            mpixfer_sync_messages_free(m, n);
            if (!done && mpixfer_request_is_completed(x)) {
                CHECK_OK(mpixfer_request_status(x));
                done = true;
            }
            CHECK_MSG(tst_now() < deadline, "no message/completion in 15 s (msg %d done %d)",
                      have_msg, done);
        }
        mpixfer_request_free(x);
        tst_barrier_progress(ctx);
    }

    CHECK_OK(mpixfer_agent_destroy(A));
    CHECK_OK(mpixfer_agent_destroy(B));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(src);
    free(dst);
    free(unreg);
    free(dst_all);
    return tst_finish("test_submit_errors");
}
