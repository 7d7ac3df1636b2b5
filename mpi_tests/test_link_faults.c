/*
 * Links: reconnect cycles and a peer killed mid-transfer (driven by test_link_faults.sh;
 * every mode is its own one-process job).
 *
 *   test_link_faults serve DIR NAME   agent NAME listens, registers BUF bytes of pattern
 *                                     (NAME[0], 1), writes DIR/NAME.info (connection info,
 *                                     address, blob in hex) and serves until "bye" or killed.
 *   test_link_faults cycles DIR       100 times: load "a" (by connection info, every other
 *                                     time by blob), wait until usable, READ 4 KiB at a
 *                                     moving offset (bytes checked), sync messages both ways,
 *                                     invalidate; then "bye" to "a".
 *   test_link_faults victim DIR       loads "a" and "b", WRITEs 32 MiB to "a" in a loop until
 *                                     one fails (the script kills "a"): that one must end in
 *                                     FAILURE with a named status within the stall timeout;
 *                                     then "b" still serves (READ checked), "bye" to "b".
 */
#include "common.h"

#define BUF (32u << 20)

typedef struct {
    char info[1024];
    uint64_t addr;
    uint8_t blob[4096];
    size_t blob_len;
} peer_t;

static peer_t read_peer(const char *dir, const char *name)
{
    static char buf[16384];
    char path[4096], hex[8200];
    peer_t p;
    unsigned long long addr;
    double deadline = tst_now() + 60.0;
    FILE *f;
    snprintf(path, sizeof path, "%s/%s.info", dir, name);
    while ((f = fopen(path, "r")) == NULL) {
        CHECK_MSG(tst_now() < deadline, "%s did not appear", path);
        tst_sleep_ms(20);
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    CHECK(sscanf(buf, "%1023s %llu %8199s", p.info, &addr, hex) == 3);
    p.addr = addr;
    p.blob_len = strlen(hex) / 2;
    CHECK(p.blob_len <= sizeof p.blob);
    for (size_t i = 0; i < p.blob_len; i++) {
        unsigned v;
        CHECK(sscanf(hex + 2 * i, "%2x", &v) == 1);
        p.blob[i] = (uint8_t)v;
    }
    return p;
}

static bool next_message(mpixfer_agent_t *a, char *out, size_t cap, double timeout_s)
{
    double deadline = tst_now() + timeout_s;
    for (;;) {
        mpixfer_sync_message_t *m = NULL;
        size_t n = 0;
        CHECK_OK(mpixfer_get_notified_sync_messages(a, &m, &n));
        if (n > 0) {
            CHECK_MSG(n == 1, "%zu messages at once", n);
            snprintf(out, cap, "%.*s", (int)m[0].len, (const char *)m[0].data);
            mpixfer_sync_messages_free(m, n);
            return true;
        }
        if (tst_now() >= deadline)
            return false;
        tst_sleep_ms(1);
    }
}

static int serve(const char *dir, const char *name)
{
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_SELF, &ctx));
    mpixfer_agent_t *a = tst_agent_ex(ctx, name, true, true, true);
    uint8_t *buf = tst_alloc(BUF);
    tst_pattern_fill(buf, BUF, (uint32_t)name[0], 1, 0);
    CHECK_OK(tst_register(a, buf, BUF));
    char *info = NULL;
    void *blob = NULL;
    size_t blen = 0;
    CHECK_OK(mpixfer_get_local_connection_info(a, &info));
    CHECK_OK(mpixfer_get_local_agent_desc(a, &blob, &blen));
    CHECK(blen <= 4096);
    static char text[16384];
    int off = snprintf(text, sizeof text, "%s\n%llu\n", info, (unsigned long long)(uintptr_t)buf);
    for (size_t i = 0; i < blen; i++)
        off += snprintf(text + off, sizeof text - (size_t)off, "%02x", ((uint8_t *)blob)[i]);
    snprintf(text + off, sizeof text - (size_t)off, "\n");
    mpixfer_free(info);
    mpixfer_free(blob);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.info", dir, name);
    tst_write_file(path, text);
    for (;;) {
        char msg[64];
        mpixfer_sync_message_t *m = NULL;
        size_t n = 0;
        CHECK(next_message(a, msg, sizeof msg, 600.0));
        if (strcmp(msg, "bye") == 0)
            break;
        /* "ping N" from "c": answer "pong N" to the sender, never loaded here. */
        unsigned k;
        if (sscanf(msg, "ping %u", &k) == 1) {
            char reply[64];
            snprintf(reply, sizeof reply, "pong %u", k);
            CHECK_OK(mpixfer_notify_sync_message(a, "c", reply, strlen(reply)));
        }
        (void)m;
        (void)n;
    }
    CHECK_OK(mpixfer_agent_destroy(a));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(buf);
    return tst_finish("test_link_faults serve");
}

static void wait_usable(mpixfer_agent_t *a, const char *name, uint64_t addr)
{
    double deadline = tst_now() + 30.0;
    while (!tst_check_remote(a, name, addr, BUF))
        CHECK_MSG(tst_now() < deadline, "%s not usable in 30 s", name);
}

static int cycles(const char *dir)
{
    peer_t p = read_peer(dir, "a");
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_SELF, &ctx));
    mpixfer_agent_t *c = tst_agent_ex(ctx, "c", true, true, false);
    uint8_t *buf = tst_alloc(1 << 20);
    CHECK_OK(tst_register(c, buf, 1 << 20));
    double t0 = tst_now();
    for (unsigned i = 0; i < 100; i++) {
        if (i % 2 == 0)
            CHECK_OK(mpixfer_load_remote_agent_by_connection(c, "a", p.info));
        else
            CHECK_OK(mpixfer_load_remote_agent(c, "a", p.blob, p.blob_len));
        char msg[64], want[64];
        snprintf(msg, sizeof msg, "ping %u", i);
        /* Sent before the link is up: queued, delivered in order once it is. */
        CHECK_OK(mpixfer_notify_sync_message(c, "a", msg, strlen(msg)));
        wait_usable(c, "a", p.addr);
        size_t off = (size_t)i * 4096 * 7 % (BUF - 4096);
        memset(buf, 0, 4096);
        tst_xfer1(c, MPIXFER_OP_READ, "a", buf, p.addr + off, 4096);
        CHECK_PATTERN(buf, 4096, 'a', 1, off);
        CHECK_MSG(next_message(c, msg, sizeof msg, 30.0), "no pong %u", i);
        snprintf(want, sizeof want, "pong %u", i);
        CHECK_MSG(strcmp(msg, want) == 0, "got '%s', want '%s'", msg, want);
        CHECK_OK(mpixfer_invalidate_remote_agent(c, "a"));
        mpixfer_request_t *x = NULL;
        CHECK_STATUS(mpixfer_submit_transfer(
                         c,
                         &(mpixfer_transfer_request_t){
                             .op = MPIXFER_OP_READ,
                             .src = tst_descs(MPIXFER_MEM_DRAM,
                                              &(mpixfer_mem_desc_t){(uintptr_t)buf, 64, 0}, 1),
                             .dst = tst_descs(MPIXFER_MEM_DRAM,
                                              &(mpixfer_mem_desc_t){(uintptr_t)p.addr, 64, 0}, 1),
                             .remote_name = "a"},
                         &x),
                     MPIXFER_ERR_NOT_FOUND);
    }
    printf("100 load/transfer/invalidate cycles in %.2f s (%.2f ms each)\n", tst_now() - t0,
           (tst_now() - t0) * 10.0);
    CHECK_OK(mpixfer_load_remote_agent_by_connection(c, "a", p.info));
    wait_usable(c, "a", p.addr);
    CHECK_OK(mpixfer_notify_sync_message(c, "a", "bye", 3));
    CHECK_OK(mpixfer_agent_destroy(c));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(buf);
    return tst_finish("test_link_faults cycles");
}

static int victim(const char *dir)
{
    peer_t pa = read_peer(dir, "a"), pb = read_peer(dir, "b");
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_SELF, &ctx));
    mpixfer_agent_t *c = tst_agent_ex(ctx, "v", true, true, false);
    uint8_t *buf = tst_alloc(BUF);
    CHECK_OK(tst_register(c, buf, BUF));
    CHECK_OK(mpixfer_load_remote_agent_by_connection(c, "a", pa.info));
    CHECK_OK(mpixfer_load_remote_agent(c, "b", pb.blob, pb.blob_len));
    wait_usable(c, "a", pa.addr);
    wait_usable(c, "b", pb.addr);
    char path[4096];
    snprintf(path, sizeof path, "%s/victim.ready", dir);
    tst_write_file(path, "ready\n"); /* the script kills "a" now */
    unsigned ok = 0;
    double deadline = tst_now() + 60.0;
    for (;;) {
        mpixfer_request_t *x = NULL;
        mpixfer_status_t st = mpixfer_submit_transfer(
            c,
            &(mpixfer_transfer_request_t){
                .op = MPIXFER_OP_WRITE,
                .src =
                    tst_descs(MPIXFER_MEM_DRAM, &(mpixfer_mem_desc_t){(uintptr_t)buf, BUF, 0}, 1),
                .dst = tst_descs(MPIXFER_MEM_DRAM,
                                 &(mpixfer_mem_desc_t){(uintptr_t)pa.addr, BUF, 0}, 1),
                .remote_name = "a"},
            &x);
        if (st != MPIXFER_OK) {
            printf("after %u WRITEs: submit refused with %s\n", ok, mpixfer_status_name(st));
            CHECK(st == MPIXFER_ERR_UNREACHABLE || st == MPIXFER_ERR_NOT_FOUND);
            break;
        }
        double t0 = tst_now();
        mpixfer_state_t s = mpixfer_request_wait(x, -1);
        if (s != MPIXFER_STATE_SUCCESS) {
            mpixfer_status_t why = mpixfer_request_status(x);
            printf("after %u WRITEs: FAILURE (%s) %.1f ms after the wait began\n", ok,
                   mpixfer_status_name(why), (tst_now() - t0) * 1e3);
            CHECK(why == MPIXFER_ERR_UNREACHABLE || why == MPIXFER_ERR_TIMEOUT);
            mpixfer_request_free(x);
            break;
        }
        mpixfer_request_free(x);
        ok++;
        CHECK_MSG(tst_now() < deadline, "the killed peer never made a transfer fail");
    }
    /* The survivor keeps serving its other peer. */
    memset(buf, 0, 1 << 20);
    tst_xfer1(c, MPIXFER_OP_READ, "b", buf, pb.addr, 1 << 20);
    CHECK_PATTERN(buf, 1 << 20, 'b', 1, 0);
    CHECK_OK(mpixfer_notify_sync_message(c, "b", "bye", 3));
    CHECK_OK(mpixfer_invalidate_remote_agent(c, "a"));
    CHECK_OK(mpixfer_agent_destroy(c));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(buf);
    return tst_finish("test_link_faults victim");
}

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    CHECK_MSG(argc >= 3, "usage: test_link_faults serve DIR NAME | cycles DIR | victim DIR");
    if (strcmp(argv[1], "serve") == 0 && argc == 4)
        return serve(argv[2], argv[3]);
    if (strcmp(argv[1], "cycles") == 0)
        return cycles(argv[2]);
    return victim(argv[2]);
}
