/* Agents with use_progress_thread: requests complete while the owner only reads
 * mpixfer_request_status() (which does not drive progress) and sleeps; sync messages from a
 * request arrive with the data in place; notify traffic arrives while the receiver's main
 * thread sleeps outside the library. Needs MPI_THREAD_MULTIPLE (exit 77 otherwise). */
#include "common.h"

#define LEN (512 * 1024)
#define NMSG 50

static void poll_status_ok(mpixfer_request_t *x)
{
    double deadline = tst_now() + 15.0;
    mpixfer_status_t st;
    while ((st = mpixfer_request_status(x)) == MPIXFER_IN_PROGRESS) {
        CHECK_MSG(tst_now() < deadline, "request still in progress after 15 s of sleeping");
        usleep(1000);
    }
    CHECK_STATUS(st, MPIXFER_OK);
    CHECK(mpixfer_request_wait(x, 0) == MPIXFER_STATE_SUCCESS);
    mpixfer_request_free(x);
}

int main(int argc, char **argv)
{
    int provided = tst_init_multiple(&argc, &argv);
    tst_require_multiple(provided);
    int rank = tst_rank(), size = tst_size();
    int peer = (rank + 1) % size, prev = (rank + size - 1) % size;
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &ctx));
    char an[32], bn[32], pbn[32], pan[32];
    tst_name(an, sizeof an, "pt_A", rank);
    tst_name(bn, sizeof bn, "pt_B", rank);
    tst_name(pbn, sizeof pbn, "pt_B", peer);
    tst_name(pan, sizeof pan, "pt_A", prev);
    mpixfer_agent_t *A = tst_agent_ex(ctx, an, true, false, false);
    mpixfer_agent_t *B = tst_agent_ex(ctx, bn, true, false, false);
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
        const char *wname = pass == 0 ? an : pan;
        for (uint32_t it = 0; it < 5; it++) {
            uint32_t iter = (uint32_t)pass * 100 + it;
            /* WRITE, completion observed by status polling only. */
            tst_pattern_fill(src, LEN, (uint32_t)rank, iter, 0);
            poll_status_ok(tst_submit1(A, MPIXFER_OP_WRITE, tname, src, tdst, LEN, NULL, 0));
            tst_barrier_sleep();
            CHECK_PATTERN(dst, LEN, wrank, iter, 0);
            tst_barrier_sleep();
            /* READ likewise. */
            tst_pattern_fill(dst, LEN, (uint32_t)rank, 500 + iter, 0);
            memset(src, 0, LEN);
            tst_barrier_sleep();
            poll_status_ok(tst_submit1(A, MPIXFER_OP_READ, tname, src, tdst, LEN, NULL, 0));
            CHECK_PATTERN(src, LEN, pass == 0 ? rank : peer, 500 + iter, 0);
            tst_barrier_sleep();
        }

        /* A WRITE with a sync message; the receiver looks only after a sleep and then must
         * find message and data. */
        tst_pattern_fill(src, LEN, (uint32_t)rank, 900 + (uint32_t)pass, 0);
        poll_status_ok(tst_submit1(A, MPIXFER_OP_WRITE, tname, src, tdst, LEN, "pt-done", 7));
        /* Plain notifications, numbered. */
        for (int i = 0; i < NMSG; i++) {
            uint32_t v = (uint32_t)i;
            CHECK_OK(mpixfer_notify_sync_message(A, tname, &v, sizeof v));
        }
        tst_barrier_sleep();
        int got = 0;
        bool have_done = false;
        double deadline = tst_now() + 15.0;
        while (!have_done || got < NMSG) {
            mpixfer_sync_message_t *m = NULL;
            size_t n = 0;
            CHECK_OK(mpixfer_get_notified_sync_messages(B, &m, &n));
            for (size_t i = 0; i < n; i++) {
                CHECK_MSG(strcmp(m[i].agent_name, wname) == 0, "sender %s", m[i].agent_name);
                if (m[i].len == 7 && memcmp(m[i].data, "pt-done", 7) == 0) {
                    CHECK(!have_done);
                    CHECK_PATTERN(dst, LEN, wrank, 900 + (uint32_t)pass, 0);
                    have_done = true;
                } else {
                    uint32_t v;
                    CHECK(m[i].len == sizeof v);
                    memcpy(&v, m[i].data, sizeof v);
                    CHECK_MSG(v == (uint32_t)got, "message %u, expected %d", v, got);
                    got++;
                }
            }
            mpixfer_sync_messages_free(m, n);
            CHECK_MSG(tst_now() < deadline, "got %d/%d messages, done-message %d", got, NMSG,
                      have_done);
            usleep(2000);
        }
        tst_barrier_sleep();
    }

    CHECK_OK(mpixfer_agent_destroy(A));
    CHECK_OK(mpixfer_agent_destroy(B));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(src);
    free(dst);
    free(dst_all);
    return tst_finish("test_progress_thread");
}
