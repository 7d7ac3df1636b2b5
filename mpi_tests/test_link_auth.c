/*
 * Links admit only holders of the agent's key (driven by test_link_auth.sh; every mode is
 * its own one-process job, launched separately, so each is its own MPI world).
 *
 *   test_link_auth serve DIR      agent "srv" listens, registers BUF bytes holding pattern
 *                                 (0, 1), writes DIR/srv.info (connection info, buffer
 *                                 address, pid), then serves: "check N" -> verifies the
 *                                 buffer's second half holds pattern (1, N), answers
 *                                 "ok N" or "bad N"; a message from "intruder" fails the
 *                                 test; "bye" ends it. Writes DIR/srv.out: resident memory
 *                                 before and after (KiB), links accepted and refused.
 *   test_link_auth wrongkey DIR   as "intruder", loads srv with one hex digit of key= flipped:
 *                                 for 5 s never usable, its WRITE fails (DENIED where known),
 *                                 its notify fails or never arrives; prints the refusal
 *                                 latency; then, as "intruder" still, loads with the right key
 *                                 but is told apart by name: it only READs and checks bytes.
 *   test_link_auth client DIR S [GO STOP]
 *                                 as "legit": for S seconds, WRITE 64 scattered 16 KiB blocks
 *                                 into srv's second half with "check N", wait for "ok N",
 *                                 READ the first half back and check it; prints GB/s of the
 *                                 WRITEs and READs ("rate <GB/s>"). With GO and STOP (file
 *                                 names in DIR): once srv is usable it writes GO, and it
 *                                 goes on past S seconds until STOP exists (at most 100 s),
 *                                 so the window measured holds all of what ran in between.
 *   test_link_auth bye DIR        tells srv to exit.
 */
#include "common.h"

#include <sys/stat.h>

#define BUF (8u << 20)
#define HALF (BUF / 2)
#define BLOCK (16u << 10)
#define NBLK 64

static long rss_kib(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    CHECK(f != NULL);
    CHECK(fscanf(f, "%ld %ld", &pages, &rss) == 2);
    fclose(f);
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Next message on @p a within @p timeout_s, or false. */
static bool next_message(mpixfer_agent_t *a, char *out, size_t cap, char *from, size_t fcap,
                         double timeout_s)
{
    double deadline = tst_now() + timeout_s;
    static mpixfer_sync_message_t *q;
    static size_t qn, qi;
    for (;;) {
        if (qi < qn) {
            snprintf(out, cap, "%.*s", (int)q[qi].len, (const char *)q[qi].data);
            snprintf(from, fcap, "%s", q[qi].agent_name);
            if (++qi == qn) {
                mpixfer_sync_messages_free(q, qn);
                q = NULL;
                qn = qi = 0;
            }
            return true;
        }
        CHECK_OK(mpixfer_get_notified_sync_messages(a, &q, &qn));
        qi = 0;
        if (qn > 0)
            continue;
        if (tst_now() >= deadline)
            return false;
        tst_sleep_ms(1);
    }
}

static int serve(const char *dir)
{
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_SELF, &ctx));
    mpixfer_agent_t *a = tst_agent_ex(ctx, "srv", true, true, true);
    uint8_t *buf = tst_alloc(BUF);
    tst_pattern_fill(buf, BUF, 0, 1, 0);
    CHECK_OK(tst_register(a, buf, BUF));
    char *info = NULL;
    CHECK_OK(mpixfer_get_local_connection_info(a, &info));
    char text[4096], path[4096];
    snprintf(text, sizeof text, "%s\n%llu\n%ld\n", info, (unsigned long long)(uintptr_t)buf,
             (long)getpid());
    mpixfer_free(info);
    long rss0 = rss_kib();
    snprintf(path, sizeof path, "%s/srv.info", dir);
    tst_write_file(path, text);

    for (;;) {
        char msg[64], from[300];
        CHECK_MSG(next_message(a, msg, sizeof msg, from, sizeof from, 600.0), "no bye");
        CHECK_MSG(strcmp(from, "intruder") != 0 || strncmp(msg, "read-only", 9) == 0,
                  "a message from the agent with the wrong key arrived: '%s'", msg);
        if (strcmp(msg, "bye") == 0)
            break;
        unsigned iter = 0;
        if (sscanf(msg, "check %u", &iter) != 1)
            continue;
        /* 64 blocks at every other 16 KiB of the second half. */
        bool ok = true;
        for (unsigned b = 0; b < NBLK && ok; b++) {
            size_t off = HALF + (size_t)b * 2 * BLOCK;
            ok = tst_pattern_find_mismatch(buf + off, BLOCK, 1, iter, off) == (size_t)-1;
        }
        ok = ok && tst_pattern_find_mismatch(buf, HALF, 0, 1, 0) == (size_t)-1;
        snprintf(msg, sizeof msg, "%s %u", ok ? "ok" : "bad", iter);
        CHECK_OK(mpixfer_notify_sync_message(a, from, msg, strlen(msg)));
    }
    mpixfer_stats_t st;
    CHECK_OK(mpixfer_context_stats(ctx, &st));
    long rss1 = rss_kib();
    snprintf(text, sizeof text,
             "rss_before_kib %ld\nrss_after_kib %ld\naccepted %llu\nrefused %llu\n", rss0, rss1,
             (unsigned long long)st.links_accepted, (unsigned long long)st.links_refused);
    snprintf(path, sizeof path, "%s/srv.out", dir);
    tst_write_file(path, text);
    printf("%s", text);
    CHECK_OK(mpixfer_agent_destroy(a));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(buf);
    return tst_finish("test_link_auth serve");
}

typedef struct {
    char info[4096];
    uint64_t addr;
} srv_t;

static srv_t read_srv(const char *dir)
{
    srv_t s;
    char path[4096];
    long pid;
    snprintf(path, sizeof path, "%s/srv.info", dir);
    char *text = tst_read_file(path, 60.0);
    unsigned long long addr = 0;
    CHECK(sscanf(text, "%4095s %llu %ld", s.info, &addr, &pid) == 3);
    s.addr = addr;
    return s;
}

static void wait_usable(mpixfer_agent_t *a, uint64_t addr)
{
    double deadline = tst_now() + 30.0;
    while (!tst_check_remote(a, "srv", addr, BUF))
        CHECK_MSG(tst_now() < deadline, "srv not usable in 30 s");
}

static int wrongkey(const char *dir)
{
    srv_t s = read_srv(dir);
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_SELF, &ctx));
    mpixfer_agent_t *a = tst_agent_ex(ctx, "intruder", true, true, false);
    uint8_t *buf = tst_alloc(BUF);
    CHECK_OK(tst_register(a, buf, BUF));

    char bad[4096];
    snprintf(bad, sizeof bad, "%s", s.info);
    char *k = strstr(bad, "key=");
    CHECK(k != NULL);
    k[4 + 7] = k[4 + 7] == '0' ? '1' : '0'; /* one hex digit of the key */
    double t0 = tst_now();
    CHECK_OK(mpixfer_load_remote_agent_by_connection(a, "srv", bad));
    /* Said before the link is up: held, and dropped when the peer refuses us. */
    mpixfer_status_t est = mpixfer_notify_sync_message(a, "srv", "early", 5);
    /* OK (held until the handshake ends), or DENIED if the refusal came first. */
    CHECK_MSG(est == MPIXFER_OK || est == MPIXFER_ERR_DENIED, "notify gave %s",
              mpixfer_status_name(est));
    double refused_at = -1;
    while (tst_now() - t0 < 5.0) {
        CHECK_MSG(!tst_check_remote(a, "srv", s.addr, 64), "a wrong key made srv usable");
        mpixfer_request_t *x = NULL;
        mpixfer_status_t st = mpixfer_submit_transfer(
            a,
            &(mpixfer_transfer_request_t){
                .op = MPIXFER_OP_WRITE,
                .src = tst_descs(MPIXFER_MEM_DRAM, &(mpixfer_mem_desc_t){(uintptr_t)buf, 64, 0}, 1),
                .dst =
                    tst_descs(MPIXFER_MEM_DRAM, &(mpixfer_mem_desc_t){(uintptr_t)s.addr, 64, 0}, 1),
                .remote_name = "srv"},
            &x);
        CHECK_MSG(st != MPIXFER_OK, "a WRITE with a wrong key was accepted");
        CHECK_MSG(st == MPIXFER_ERR_DENIED || st == MPIXFER_ERR_NOT_FOUND, "WRITE gave %s",
                  mpixfer_status_name(st));
        if (st == MPIXFER_ERR_DENIED && refused_at < 0)
            refused_at = tst_now() - t0;
        /* The load's status says the same: under way until the refusal, then DENIED. */
        mpixfer_status_t rs = mpixfer_remote_status(a, "srv");
        CHECK_MSG(rs == (refused_at < 0 ? MPIXFER_IN_PROGRESS : MPIXFER_ERR_DENIED) ||
                      (refused_at < 0 && rs == MPIXFER_ERR_DENIED),
                  "remote status %s after WRITE gave %s", mpixfer_status_name(rs),
                  mpixfer_status_name(st));
        st = mpixfer_notify_sync_message(a, "srv", "late", 4);
        CHECK_MSG(st == MPIXFER_OK || st == MPIXFER_ERR_DENIED, "notify gave %s",
                  mpixfer_status_name(st));
        tst_sleep_ms(50);
    }
    CHECK_MSG(refused_at >= 0, "the library never said DENIED");
    CHECK_STATUS(mpixfer_remote_status(a, "srv"), MPIXFER_ERR_DENIED);
    CHECK_STATUS(mpixfer_remote_status(a, "nobody"), MPIXFER_ERR_NOT_FOUND);
    CHECK_STATUS(mpixfer_remote_status(NULL, "srv"), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_remote_status(a, NULL), MPIXFER_ERR_INVALID_ARG);
    printf("refusal latency: %.2f ms (load by connection info to DENIED)\n", refused_at * 1e3);

    /* The right key: reads work (bytes checked); "intruder" writes nothing. */
    CHECK_OK(mpixfer_load_remote_agent_by_connection(a, "srv", s.info));
    wait_usable(a, s.addr);
    CHECK_STATUS(mpixfer_remote_status(a, "srv"), MPIXFER_OK);
    memset(buf, 0, HALF);
    tst_xfer1(a, MPIXFER_OP_READ, "srv", buf, s.addr, HALF);
    CHECK_PATTERN(buf, HALF, 0, 1, 0);
    CHECK_OK(mpixfer_notify_sync_message(a, "srv", "read-only done", 14));
    CHECK_OK(mpixfer_agent_destroy(a));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(buf);
    return tst_finish("test_link_auth wrongkey");
}

static bool file_exists(const char *dir, const char *name)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0;
}

static int client(const char *dir, double seconds, const char *go, const char *stop)
{
    srv_t s = read_srv(dir);
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_SELF, &ctx));
    mpixfer_agent_t *a = tst_agent_ex(ctx, "legit", true, true, false);
    uint8_t *buf = tst_alloc(BUF);
    CHECK_OK(tst_register(a, buf, BUF));
    CHECK_OK(mpixfer_load_remote_agent_by_connection(a, "srv", s.info));
    wait_usable(a, s.addr);
    if (go != NULL) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, go);
        tst_write_file(path, "go\n");
    }

    mpixfer_mem_desc_t src[NBLK], dst[NBLK];
    double busy = 0, t_start = tst_now(), t_end = t_start + seconds;
    uint64_t bytes = 0;
    unsigned iter = 0;
    while (tst_now() < t_end || iter < 3 || (stop != NULL && !file_exists(dir, stop))) {
        CHECK_MSG(tst_now() < t_start + 100.0, "%s never appeared in 100 s", stop);
        iter++;
        for (unsigned b = 0; b < NBLK; b++) {
            size_t off = HALF + (size_t)b * 2 * BLOCK;
            tst_pattern_fill(buf + off, BLOCK, 1, iter, off);
            src[b] = tst_desc(buf + off, BLOCK);
            dst[b] = (mpixfer_mem_desc_t){(uintptr_t)s.addr + off, BLOCK, 0};
        }
        char msg[64], from[300];
        snprintf(msg, sizeof msg, "check %u", iter);
        mpixfer_transfer_request_t r = {.op = MPIXFER_OP_WRITE,
                                        .src = tst_descs(MPIXFER_MEM_DRAM, src, NBLK),
                                        .dst = tst_descs(MPIXFER_MEM_DRAM, dst, NBLK),
                                        .remote_name = "srv",
                                        .sync_message = msg,
                                        .sync_message_len = strlen(msg)};
        mpixfer_request_t *x = NULL;
        double t0 = tst_now();
        CHECK_OK(mpixfer_submit_transfer(a, &r, &x));
        TST_WAIT_OK(x);
        busy += tst_now() - t0;
        bytes += (uint64_t)NBLK * BLOCK;
        CHECK_MSG(next_message(a, msg, sizeof msg, from, sizeof from, 30.0), "no answer");
        char want[64];
        snprintf(want, sizeof want, "ok %u", iter);
        CHECK_MSG(strcmp(msg, want) == 0 && strcmp(from, "srv") == 0, "srv said '%s'", msg);
        memset(buf, 0, HALF);
        t0 = tst_now();
        tst_xfer1(a, MPIXFER_OP_READ, "srv", buf, s.addr, HALF);
        busy += tst_now() - t0;
        bytes += HALF;
        CHECK_PATTERN(buf, HALF, 0, 1, 0);
    }
    printf("rate %.3f GB/s (%u rounds in %.1f s, every byte checked)\n", (double)bytes / busy / 1e9,
           iter, tst_now() - t_start);
    CHECK_OK(mpixfer_agent_destroy(a));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(buf);
    return tst_finish("test_link_auth client");
}

static int bye(const char *dir)
{
    srv_t s = read_srv(dir);
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_SELF, &ctx));
    mpixfer_agent_t *a = tst_agent_ex(ctx, "closer", false, false, false);
    CHECK_OK(mpixfer_load_remote_agent_by_connection(a, "srv", s.info));
    mpixfer_mem_descs_t none = tst_descs(MPIXFER_MEM_DRAM, NULL, 0);
    double deadline = tst_now() + 30.0;
    while (!mpixfer_check_remote_descs(a, "srv", &none))
        CHECK_MSG(tst_now() < deadline, "srv not usable in 30 s");
    CHECK_OK(mpixfer_notify_sync_message(a, "srv", "bye", 3));
    CHECK_OK(mpixfer_agent_destroy(a));
    CHECK_OK(mpixfer_context_destroy(ctx));
    return tst_finish("test_link_auth bye");
}

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    CHECK_MSG(argc >= 3, "usage: test_link_auth serve|wrongkey|client|bye DIR [seconds [go stop]]");
    if (strcmp(argv[1], "serve") == 0)
        return serve(argv[2]);
    if (strcmp(argv[1], "wrongkey") == 0)
        return wrongkey(argv[2]);
    if (strcmp(argv[1], "client") == 0)
        return client(argv[2], argc > 3 ? atof(argv[3]) : 2.0, argc > 5 ? argv[4] : NULL,
                      argc > 5 ? argv[5] : NULL);
    return bye(argv[2]);
}
