/* A request with a sync message: the receiving agent, as soon as it sees the message, finds
 * the data already in its buffer (WRITE), message by message over 20 iterations with fresh
 * patterns; a READ with a sync message delivers it too; requests without a sync message
 * produce no message. Same-process target and next-rank target. */
#include "common.h"

#define LEN (256 * 1024)
#define ITERS 20

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    TST_PAIR_SETUP("st");
    uint8_t *src = tst_alloc(LEN), *dst = tst_alloc(LEN);
    CHECK_OK(tst_register(A, src, LEN));
    CHECK_OK(tst_register(B, dst, LEN));
    uint64_t *dst_all = calloc((size_t)size, 8);
    tst_allgather_u64((uintptr_t)dst, dst_all);
    CHECK_OK(mpixfer_bootstrap(ctx));

    for (int pass = 0; pass < (size > 1 ? 2 : 1); pass++) {
        const char *tname = pass == 0 ? bn : pbn;
        uint64_t tdst = dst_all[pass == 0 ? rank : peer];
        int wrank = pass == 0 ? rank : prev;
        char wname[32];
        tst_name(wname, sizeof wname, "st_A", wrank);
        for (uint32_t it = 0; it < ITERS; it++) {
            uint32_t iter = (uint32_t)pass * 1000 + it;
            /* Vary the length so a message can't be matched with the wrong iteration. */
            size_t len = LEN - (size_t)it * 4096;
            tst_pattern_fill(src, len, (uint32_t)rank, iter, 0);
            char msg[64];
            int ml = snprintf(msg, sizeof msg, "iter=%u from=%s", iter, an);
            msg[ml] = '\0';
            mpixfer_request_t *x = tst_submit1(A, MPIXFER_OP_WRITE,
                                               tname, src, tdst, len, msg, (size_t)ml + 1);
            bool got = false, done = false;
            double deadline = tst_now() + 15.0;
            while (!got || !done) {
                mpixfer_sync_message_t *m = NULL;
                size_t n = 0;
                CHECK_OK(mpixfer_get_notified_sync_messages(B, &m, &n));
                for (size_t i = 0; i < n; i++) {
                    /* The data must be in place the moment the message is visible. */
                    CHECK_PATTERN(dst, len, wrank, iter, 0);
                    char expect[64];
                    snprintf(expect, sizeof expect, "iter=%u from=%s", iter, wname);
                    CHECK_MSG(!got, "second message in iteration %u", iter);
                    CHECK_MSG(strcmp(m[i].agent_name, wname) == 0, "sender %s", m[i].agent_name);
                    CHECK_MSG(m[i].len == strlen(expect) + 1 && strcmp(m[i].data, expect) == 0,
                              "message '%.*s', expected '%s'", (int)m[i].len,
                              (const char *)m[i].data, expect);
                    got = true;
                }
                mpixfer_sync_messages_free(m, n);
                if (!done && mpixfer_request_is_completed(x)) {
                    CHECK_OK(mpixfer_request_status(x));
                    done = true;
                }
                CHECK_MSG(tst_now() < deadline, "iteration %u: message %d, done %d after 15 s",
                          iter, got, done);
            }
            mpixfer_request_free(x);
            tst_barrier_progress(ctx);
        }

        /* READ with a sync message: the message reaches the remote as well. */
        tst_pattern_fill(dst, LEN, (uint32_t)rank, 555, 0);
        tst_barrier_progress(ctx);
        mpixfer_request_t *x = tst_submit1(A, MPIXFER_OP_READ, tname, src, tdst, LEN, "read", 4);
        bool got = false, done = false;
        double deadline = tst_now() + 15.0;
        while (!got || !done) {
            mpixfer_sync_message_t *m = NULL;
            size_t n = 0;
            CHECK_OK(mpixfer_get_notified_sync_messages(B, &m, &n));
            for (size_t i = 0; i < n; i++) {
                CHECK(!got && strcmp(m[i].agent_name, wname) == 0);
                CHECK(m[i].len == 4 && memcmp(m[i].data, "read", 4) == 0);
                got = true;
            }
            mpixfer_sync_messages_free(m, n);
            if (!done && mpixfer_request_is_completed(x))
                done = true;
            CHECK_MSG(tst_now() < deadline, "READ: message %d, done %d after 15 s", got, done);
        }
        CHECK_OK(mpixfer_request_status(x));
        mpixfer_request_free(x);
        CHECK_PATTERN(src, LEN, pass == 0 ? rank : peer, 555, 0);
        tst_barrier_progress(ctx);

        /* Requests without a sync message produce none. */
        for (int i = 0; i < 3; i++) {
            tst_xfer1(A, MPIXFER_OP_WRITE, tname, src, tdst, 4096);
            tst_xfer1(A, MPIXFER_OP_READ, tname, src, tdst, 4096);
        }
        tst_barrier_progress(ctx);
        double until = tst_now() + 0.3;
        while (tst_now() < until) {
            mpixfer_sync_message_t *m = NULL;
            size_t n = 0;
            CHECK_OK(mpixfer_get_notified_sync_messages(B, &m, &n));
            CHECK_MSG(n == 0, "%zu messages from requests without a sync message", n);
            CHECK_OK(mpixfer_get_notified_sync_messages(A, &m, &n));
            CHECK_MSG(n == 0, "%zu messages for the origin agent", n);
            usleep(1000);
        }
        tst_barrier_progress(ctx);
    }

    CHECK_OK(mpixfer_agent_destroy(A));
    CHECK_OK(mpixfer_agent_destroy(B));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(src);
    free(dst);
    free(dst_all);
    return tst_finish("test_sync_transfer");
}
