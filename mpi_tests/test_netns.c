/*
 * Two hosts (network namespaces joined by a veth pair, started by test_netns.sh): a 2-rank
 * job over TCP. Rank 0 initiates, rank 1 is the target.
 *
 * 1. Both ranks in the library: WRITE and READ of scattered blocks, every byte checked.
 * 2. The target computes for 3 s without any MPI or library call while rank 0 WRITEs to it
 *    (with a sync message):
 *      argv[1] == "on":  the target agent has a progress thread, so the transfer completes
 *                        while the target computes;
 *      argv[1] == "off": no progress thread; wait with a timeout returns IN_PROGRESS (and
 *                        returns in about that time), and the transfer completes once the
 *                        target is back in the library.
 *    Either way the target finds the bytes in place when the sync message arrives.
 */
#include "common.h"

#define NBLK 16
#define BLK (64 * 1024)
#define LEN (NBLK * BLK)
#define COMPUTE_S 3.0

/* Busy "compute" that makes no MPI or library call. */
static volatile uint64_t g_sink;
static void compute(double seconds)
{
    double end = tst_now() + seconds;
    uint64_t x = 1;
    while (tst_now() < end)
        for (int i = 0; i < 100000; i++)
            x = tst_mix64(x);
    g_sink = x;
}

static void submit_blocks(mpixfer_agent_t *a, mpixfer_op_t op, uint8_t *local, uint64_t remote,
                          const void *msg, size_t msg_len, mpixfer_request_t **x)
{
    mpixfer_mem_desc_t s[NBLK], d[NBLK];
    /* Remote blocks in reverse order, so no two pairs coalesce into one op. */
    for (int i = 0; i < NBLK; i++) {
        s[i] = tst_desc(local + (size_t)i * BLK, BLK);
        d[i] = tst_desc((void *)(uintptr_t)(remote + (uint64_t)(NBLK - 1 - i) * BLK), BLK);
    }
    mpixfer_transfer_request_t r;
    memset(&r, 0, sizeof r);
    r.op = op;
    r.src = tst_descs(MPIXFER_MEM_DRAM, s, NBLK);
    r.dst = tst_descs(MPIXFER_MEM_DRAM, d, NBLK);
    r.remote_name = "ns_T";
    r.sync_message = msg;
    r.sync_message_len = msg_len;
    CHECK_OK(mpixfer_submit_transfer(a, &r, x));
}

/* Check that remote block NBLK-1-i holds local block i's pattern (iter, offset i*BLK). */
static void check_reversed(const uint8_t *buf, uint32_t prank, uint32_t iter)
{
    for (int i = 0; i < NBLK; i++)
        CHECK_PATTERN(buf + (size_t)(NBLK - 1 - i) * BLK, BLK, prank, iter, (size_t)i * BLK);
}

/* Target: wait (in the library) for one sync message from ns_I and check its text. */
static void expect_msg(mpixfer_agent_t *t, const char *text)
{
    double deadline = tst_now() + 30.0;
    for (;;) {
        mpixfer_sync_message_t *m = NULL;
        size_t n = 0;
        CHECK_OK(mpixfer_get_notified_sync_messages(t, &m, &n));
        if (n > 0) {
            CHECK(n == 1);
            CHECK(strcmp(m[0].agent_name, "ns_I") == 0);
            CHECK_MSG(m[0].len == strlen(text) && memcmp(m[0].data, text, m[0].len) == 0,
                      "message '%s', expected '%s'", (char *)m[0].data, text);
            mpixfer_sync_messages_free(m, n);
            return;
        }
        CHECK_MSG(tst_now() < deadline, "no sync message '%s' within 30 s", text);
        usleep(200);
    }
}

int main(int argc, char **argv)
{
    bool thread_on = argc > 1 && strcmp(argv[1], "on") == 0;
    int provided = MPI_THREAD_SINGLE;
    /* Open MPI's osc/pt2pt refuses windows under MPI_THREAD_MULTIPLE: ask for it only when
     * a progress thread needs it. */
    if (thread_on) {
        provided = tst_init_multiple(&argc, &argv);
    } else {
        CHECK(MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided) == MPI_SUCCESS);
        setvbuf(stdout, NULL, _IOLBF, 0);
    }
    int rank = tst_rank(), size = tst_size();
    char host[256] = "";
    gethostname(host, sizeof host - 1);

    CHECK_MSG(size == 2, "test_netns runs on exactly 2 ranks, not %d", size);
    if (thread_on)
        tst_require_multiple(provided);
    printf("rank %d: host %s, thread level %d, progress thread %s\n", rank, host, provided,
           thread_on ? "on" : "off");

    mpixfer_context_t *ctx = NULL;
    mpixfer_status_t st = mpixfer_context_create(MPI_COMM_WORLD, &ctx);
    CHECK_MSG(st == MPIXFER_OK, "context creation (the RMA window over TCP) failed: %s",
              mpixfer_status_name(st));
    /* UCX_TLS=tcp,self (test_netns.sh): the peer on the other "host" is reached by
     * messages, unless MPIXFER_DATA_PATH says otherwise. */
    mpixfer_data_path_t path = MPIXFER_DATA_PATH_AUTO, want = MPIXFER_DATA_PATH_MESSAGES;
    const char *env_path = getenv("MPIXFER_DATA_PATH");
    if (env_path != NULL && strcmp(env_path, "rma") == 0)
        want = MPIXFER_DATA_PATH_RMA;
    CHECK_OK(mpixfer_context_data_path(ctx, 1 - rank, &path));
    CHECK_MSG(path == want, "data path to rank %d is %d, expected %d", 1 - rank, (int)path,
              (int)want);
    CHECK_OK(mpixfer_context_data_path(ctx, rank, &path));
    CHECK(path == MPIXFER_DATA_PATH_RMA);
    CHECK(mpixfer_context_data_path(ctx, 2, &path) == MPIXFER_ERR_INVALID_ARG);
    CHECK(mpixfer_context_data_path(ctx, -1, &path) == MPIXFER_ERR_INVALID_ARG);
    printf("rank %d: data path to rank %d: %s\n", rank, 1 - rank,
           want == MPIXFER_DATA_PATH_RMA ? "rma" : "messages");
    mpixfer_agent_t *a = rank == 0 ? tst_agent(ctx, "ns_I")
                                   : tst_agent_ex(ctx, "ns_T", thread_on, false, false);
    uint8_t *buf = tst_alloc(LEN), *back = tst_alloc(LEN);
    CHECK_OK(tst_register(a, buf, LEN));
    CHECK_OK(tst_register(a, back, LEN));
    uint64_t addrs[2];
    tst_allgather_u64((uintptr_t)buf, addrs);
    CHECK_OK(mpixfer_bootstrap(ctx));

    /* 1. Both sides in the library. */
    if (rank == 0) {
        mpixfer_request_t *x = NULL;
        tst_pattern_fill(buf, LEN, 0, 1, 0);
        double t0 = tst_now();
        submit_blocks(a, MPIXFER_OP_WRITE, buf, addrs[1], "w1", 2, &x);
        double t1 = tst_now();
        TST_WAIT_OK(x);
        double t2 = tst_now();
        submit_blocks(a, MPIXFER_OP_READ, back, addrs[1], NULL, 0, &x);
        TST_WAIT_OK(x);
        printf("rank 0: phase 1: write submit %.3f s, wait %.3f s, read %.3f s\n", t1 - t0,
               t2 - t1, tst_now() - t2);
        CHECK_PATTERN(back, LEN, 0, 1, 0);
    } else {
        expect_msg(a, "w1");
        check_reversed(buf, 0, 1);
    }
    tst_barrier_progress(ctx);

    /* 2. The target computes without calling MPI. */
    if (rank == 0) {
        mpixfer_request_t *x = NULL;
        tst_pattern_fill(buf, LEN, 0, 2, 0);
        CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD)); /* the target starts computing now */
        usleep(200 * 1000);
        double t0 = tst_now();
        submit_blocks(a, MPIXFER_OP_WRITE, buf, addrs[1], "w2", 2, &x);
        double t_submit = tst_now() - t0;
        mpixfer_state_t s = mpixfer_request_wait(x, thread_on ? 2000 : 1000);
        double t_wait = tst_now() - t0;
        printf("rank 0: submit %.3f s, wait(%d ms) -> state %d after %.3f s\n", t_submit,
               thread_on ? 2000 : 1000, (int)s, t_wait);
        if (thread_on) {
            CHECK_MSG(s == MPIXFER_STATE_SUCCESS,
                      "with the target's progress thread the transfer did not complete in 2 s "
                      "(state %d, status %s)",
                      (int)s, mpixfer_status_name(mpixfer_request_status(x)));
            /* Submitted 0.2 s into the target's compute: done well before it ends. */
            CHECK_MSG(t_wait < COMPUTE_S - 0.5, "completed only after %.3f s", t_wait);
        } else {
            CHECK_MSG(t_submit < 0.5, "submit blocked for %.3f s on a target that is not in "
                      "MPI (it should return at once)", t_submit);
            CHECK_MSG(s == MPIXFER_STATE_IN_PROGRESS,
                      "without the target's progress the transfer ended (state %d, status %s) "
                      "while the target computed",
                      (int)s, mpixfer_status_name(mpixfer_request_status(x)));
            CHECK_MSG(t_wait < 1.5, "wait(1000 ms) returned only after %.3f s", t_wait);
            s = mpixfer_request_wait(x, 20000);
            CHECK_MSG(s == MPIXFER_STATE_SUCCESS, "state %d, status %s", (int)s,
                      mpixfer_status_name(mpixfer_request_status(x)));
            printf("rank 0: completed after %.3f s\n", tst_now() - t0);
        }
        CHECK_OK(mpixfer_request_status(x));
        mpixfer_request_free(x);
        submit_blocks(a, MPIXFER_OP_READ, back, addrs[1], NULL, 0, &x);
        TST_WAIT_OK(x);
        CHECK_PATTERN(back, LEN, 0, 2, 0);
    } else {
        CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
        compute(COMPUTE_S);
        expect_msg(a, "w2");
        check_reversed(buf, 0, 2);
    }
    tst_barrier_progress(ctx);

    CHECK_OK(mpixfer_agent_destroy(a));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(buf);
    free(back);
    return tst_finish(thread_on ? "test_netns (progress thread on)"
                                : "test_netns (progress thread off)");
}
