/*
 * Two separately launched jobs (driven by run_twojobs.sh, one ompi-server between them).
 *
 *   test_twojobs serve DIR    job A: each rank's agent "A<rank>" listens (use_listen_thread),
 *                             registers 1 MiB filled with its pattern, writes its connection
 *                             info and buffer address to DIR/A<rank>, then serves: on
 *                             "check N" it verifies that the second half holds the client's
 *                             iteration-N pattern and answers "ok N" (or "bad N") to the
 *                             sender, whom it never loaded; "bye" ends it.
 *   test_twojobs connect DIR  job B: rank r loads A<r> by connection info, WRITEs its pattern
 *                             into A's second half with sync message "check N", waits for
 *                             "ok N", READs A's first half and checks it, invalidates A,
 *                             connects again and repeats; then "bye".
 */
#include "common.h"

#define LEN (1u << 20)
#define HALF (LEN / 2)
#define ROUNDS 2

/* Wait for one message on @p a; returns it in @p out (NUL-terminated), sender in @p from. */
static void wait_message(mpixfer_agent_t *a, char *out, size_t cap, char *from, size_t fcap,
                         double timeout_s)
{
    double deadline = tst_now() + timeout_s;
    for (;;) {
        mpixfer_sync_message_t *m = NULL;
        size_t n = 0;
        CHECK_OK(mpixfer_get_notified_sync_messages(a, &m, &n));
        if (n > 0) {
            CHECK_MSG(n == 1, "expected one message, got %zu", n);
            snprintf(out, cap, "%.*s", (int)m[0].len, (const char *)m[0].data);
            snprintf(from, fcap, "%s", m[0].agent_name);
            mpixfer_sync_messages_free(m, n);
            return;
        }
        CHECK_MSG(tst_now() < deadline, "no message in %.0f s", timeout_s);
        tst_sleep_ms(1);
    }
}

static int serve(const char *dir)
{
    int rank = tst_rank();
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &ctx));
    char name[32];
    tst_name(name, sizeof name, "A", rank);
    mpixfer_agent_t *a = tst_agent_ex(ctx, name, true, true, true);
    uint8_t *buf = tst_alloc(LEN);
    tst_pattern_fill(buf, LEN, (uint32_t)rank, 7, 0);
    CHECK_OK(tst_register(a, buf, LEN));
    char *info = NULL;
    CHECK_OK(mpixfer_get_local_connection_info(a, &info));
    CHECK_MSG(strncmp(info, "mpixfer:3:", 10) == 0 && strstr(info, ":key=") != NULL,
              "a listening agent's info carries an address and a key: %s", info);
    char text[4096], path[4096];
    snprintf(text, sizeof text, "%s\n%llu\n", info, (unsigned long long)(uintptr_t)buf);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    tst_write_file(path, text);
    mpixfer_free(info);

    int checks = 0;
    for (;;) {
        char msg[64], from[300];
        wait_message(a, msg, sizeof msg, from, sizeof from, 120.0);
        if (strcmp(msg, "bye") == 0)
            break;
        unsigned iter = 0;
        CHECK_MSG(sscanf(msg, "check %u", &iter) == 1, "unexpected message '%s'", msg);
        int client = -1;
        CHECK(sscanf(from, "B%d", &client) == 1);
        size_t bad = tst_pattern_find_mismatch(buf + HALF, HALF, (uint32_t)client, 100 + iter,
                                               0);
        bool ok = bad == (size_t)-1 || bad >= HALF;
        /* The first half is what the client READs: it must still be ours. */
        size_t bad0 = tst_pattern_find_mismatch(buf, HALF, (uint32_t)rank, 7, 0);
        ok = ok && (bad0 == (size_t)-1 || bad0 >= HALF);
        snprintf(msg, sizeof msg, "%s %u", ok ? "ok" : "bad", iter);
        /* The sender was never loaded here: the reply goes back over its link. */
        CHECK_OK(mpixfer_notify_sync_message(a, from, msg, strlen(msg)));
        checks++;
    }
    CHECK(checks == ROUNDS);
    tst_barrier_progress(ctx);
    CHECK_OK(mpixfer_agent_destroy(a));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(buf);
    return tst_finish("test_twojobs serve");
}

static int connect_to(const char *dir)
{
    int rank = tst_rank();
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &ctx));
    char name[32], aname[32], path[4096];
    tst_name(name, sizeof name, "B", rank);
    tst_name(aname, sizeof aname, "A", rank);
    mpixfer_agent_t *b = tst_agent_ex(ctx, name, true, true, false);
    uint8_t *buf = tst_alloc(LEN);
    CHECK_OK(tst_register(b, buf, LEN));
    snprintf(path, sizeof path, "%s/%s", dir, aname);
    char *text = tst_read_file(path, 60.0);
    char info[4096];
    unsigned long long raddr = 0;
    CHECK(sscanf(text, "%4095s %llu", info, &raddr) == 2);

    for (unsigned iter = 1; iter <= ROUNDS; iter++) {
        /* Connect (again, after the invalidation of the previous round). */
        CHECK_OK(mpixfer_load_remote_agent_by_connection(b, aname, info));
        double deadline = tst_now() + 30.0;
        while (!tst_check_remote(b, aname, raddr, LEN))
            CHECK_MSG(tst_now() < deadline, "descriptor of %s not loaded in 30 s", aname);
        CHECK(!tst_check_remote(b, aname, raddr, LEN + 1));

        /* WRITE our pattern into A's second half, with a sync message. */
        tst_pattern_fill(buf, LEN, (uint32_t)rank, 100 + iter, 0);
        char msg[64], from[300];
        snprintf(msg, sizeof msg, "check %u", iter);
        mpixfer_request_t *x = tst_submit1(b, MPIXFER_OP_WRITE, aname, buf, raddr + HALF, HALF,
                                           msg, strlen(msg));
        TST_WAIT_OK(x);
        wait_message(b, msg, sizeof msg, from, sizeof from, 60.0);
        CHECK(strcmp(from, aname) == 0);
        char want[64];
        snprintf(want, sizeof want, "ok %u", iter);
        CHECK_MSG(strcmp(msg, want) == 0, "server answered '%s'", msg);

        /* READ A's first half into ours (odd offsets, two descriptors). */
        memset(buf, 0, LEN);
        mpixfer_mem_desc_t s[2] = {tst_desc(buf + 3, 1000), tst_desc(buf + 5000, HALF - 5000)};
        mpixfer_mem_desc_t d[2] = {{(uintptr_t)raddr + 3, 1000, 0},
                                   {(uintptr_t)raddr + 5000, HALF - 5000, 0}};
        mpixfer_transfer_request_t r;
        memset(&r, 0, sizeof r);
        r.op = MPIXFER_OP_READ;
        r.src = tst_descs(MPIXFER_MEM_DRAM, s, 2);
        r.dst = tst_descs(MPIXFER_MEM_DRAM, d, 2);
        r.remote_name = aname;
        CHECK_OK(mpixfer_submit_transfer(b, &r, &x));
        TST_WAIT_OK(x);
        CHECK_PATTERN(buf + 3, 1000, rank, 7, 3);
        CHECK_PATTERN(buf + 5000, HALF - 5000, rank, 7, 5000);

        /* Out of range on the remote: refused before anything moves. */
        mpixfer_mem_desc_t bs = tst_desc(buf, 64), bd = {(uintptr_t)raddr + LEN - 32, 64, 0};
        r.src = tst_descs(MPIXFER_MEM_DRAM, &bs, 1);
        r.dst = tst_descs(MPIXFER_MEM_DRAM, &bd, 1);
        x = NULL;
        CHECK_STATUS(mpixfer_submit_transfer(b, &r, &x), MPIXFER_ERR_OUT_OF_RANGE);

        /* Tear the connection down; transfers to A now fail until we connect again. */
        CHECK_OK(mpixfer_invalidate_remote_agent(b, aname));
        r.src = tst_descs(MPIXFER_MEM_DRAM, s, 1);
        r.dst = tst_descs(MPIXFER_MEM_DRAM, d, 1);
        CHECK_STATUS(mpixfer_submit_transfer(b, &r, &x), MPIXFER_ERR_NOT_FOUND);
    }
    /* A "bye" needs a connection: one last time. */
    CHECK_OK(mpixfer_load_remote_agent_by_connection(b, aname, info));
    double deadline = tst_now() + 30.0;
    while (!tst_check_remote(b, aname, raddr, LEN))
        CHECK_MSG(tst_now() < deadline, "descriptor of %s not loaded in 30 s", aname);
    CHECK_OK(mpixfer_notify_sync_message(b, aname, "bye", 3));
    tst_barrier_progress(ctx);
    CHECK_OK(mpixfer_agent_destroy(b));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(buf);
    return tst_finish("test_twojobs connect");
}

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    CHECK_MSG(argc == 3, "usage: test_twojobs serve|connect DIR");
    if (strcmp(argv[1], "serve") == 0)
        return serve(argv[2]);
    return connect_to(argv[2]);
}
