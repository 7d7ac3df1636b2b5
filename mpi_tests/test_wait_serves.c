/* A process that only submits and waits on transfers that finish at once still answers
 * its peers. Rank 0 (RMA path) loops over 8-byte WRITEs to rank 1 and makes no other
 * library call; rank 1 (messages path, so every chunk needs rank 0's answer) WRITEs
 * 4 MiB into rank 0 meanwhile. Submit finishes rank 0's requests itself and skips most
 * control polls (they cost ~1 us after a large copy): this checks that it still polls
 * often enough for rank 1's transfer to complete, that the bytes arrive intact, and that
 * the transfer's sync message arrives once. */
#include "common.h"

#define BIG ((size_t)4 << 20)
#define DONE_TAG 4242

int main(int argc, char **argv)
{
    tst_require_multiple(tst_init_multiple(&argc, &argv));
    int rank = tst_rank(), size = tst_size();
    if (size != 2)
        tst_skip("needs exactly 2 ranks");

    /* Rank 1 reaches rank 0 by messages, rank 0 reaches rank 1 by RMA: the choice is
     * each process's own. */
    mpixfer_context_params_t params = MPIXFER_CONTEXT_PARAMS_INIT;
    params.data_path = rank == 0 ? MPIXFER_DATA_PATH_RMA : MPIXFER_DATA_PATH_MESSAGES;
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create_with_params(MPI_COMM_WORLD, &params, &ctx));
    char name[32], peer_name[32];
    tst_name(name, sizeof name, "serve", rank);
    tst_name(peer_name, sizeof peer_name, "serve", 1 - rank);
    mpixfer_agent_t *a = tst_agent(ctx, name);
    uint8_t *buf = tst_alloc(BIG), *small = tst_alloc(4096);
    CHECK_OK(tst_register(a, buf, BIG));
    CHECK_OK(tst_register(a, small, 4096));
    uint64_t bufs[2], smalls[2];
    tst_allgather_u64((uintptr_t)buf, bufs);
    tst_allgather_u64((uintptr_t)small, smalls);
    CHECK_OK(mpixfer_bootstrap(ctx));

    if (rank == 1) {
        tst_pattern_fill(buf, BIG, 1, 7, 0);
        tst_barrier_sleep();
        double t0 = tst_now();
        static const char msg[] = "kv blocks in place";
        mpixfer_request_t *x =
            tst_submit1(a, MPIXFER_OP_WRITE, peer_name, buf, bufs[0], BIG, msg, sizeof msg);
        mpixfer_state_t s = mpixfer_request_wait(x, 30000);
        CHECK_MSG(s == MPIXFER_STATE_SUCCESS,
                  "messages WRITE to a process that only submits and waits: state %d (%s) "
                  "after %.1f s", (int)s, mpixfer_status_name(mpixfer_request_status(x)),
                  tst_now() - t0);
        mpixfer_request_free(x);
        printf("rank 1: 4 MiB by messages completed in %.3f s while rank 0 only waited\n",
               tst_now() - t0);
        int done = 1;
        CHECK_MPI(MPI_Send(&done, 1, MPI_INT, 0, DONE_TAG, MPI_COMM_WORLD));
    } else {
        memset(buf, 0, BIG);
        tst_barrier_sleep();
        double deadline = tst_now() + 40.0;
        long n = 0;
        int arrived = 0;
        while (!arrived) {
            small[0] = (uint8_t)n;
            mpixfer_request_t *x =
                tst_submit1(a, MPIXFER_OP_WRITE, peer_name, small, smalls[1], 8, NULL, 0);
            TST_WAIT_OK(x);
            n++;
            /* Not the library's channel: this moves MPI, never mpixfer's own dispatch. */
            CHECK_MPI(MPI_Iprobe(1, DONE_TAG, MPI_COMM_WORLD, &arrived, MPI_STATUS_IGNORE));
            CHECK_MSG(tst_now() < deadline, "rank 1 did not finish within 40 s (%ld waits)", n);
        }
        int done = 0;
        CHECK_MPI(MPI_Recv(&done, 1, MPI_INT, 1, DONE_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        CHECK_PATTERN(buf, BIG, 1, 7, 0);
        /* The sync message left after the data was in place (and before rank 1's note on
         * another communicator, which MPI need not order with it): collect it. */
        mpixfer_sync_message_t *msgs = NULL;
        size_t count = 0;
        double until = tst_now() + 10.0;
        for (;;) {
            CHECK_OK(mpixfer_get_notified_sync_messages(a, &msgs, &count));
            if (count > 0 || tst_now() > until)
                break;
            tst_sleep_ms(1);
        }
        CHECK_MSG(count == 1, "%zu sync messages", count);
        CHECK(strcmp(msgs[0].agent_name, peer_name) == 0);
        CHECK(msgs[0].len == sizeof "kv blocks in place" &&
              memcmp(msgs[0].data, "kv blocks in place", msgs[0].len) == 0);
        mpixfer_sync_messages_free(msgs, count);
        printf("rank 0: %ld submit+wait pairs before rank 1 was done\n", n);
    }
    tst_barrier_progress(ctx);
    CHECK_OK(tst_deregister(a, buf, BIG));
    CHECK_OK(tst_deregister(a, small, 4096));
    CHECK_OK(mpixfer_agent_destroy(a));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(buf);
    free(small);
    return tst_finish("test_wait_serves");
}
