/*
 * Links between two "hosts": every mode is its own one-process job, started by
 * test_link_netns.sh in one of two network namespaces joined only by a veth pair, so the
 * link's bytes travel by UCX over TCP on that pair.
 *
 *   test_link_netns serve DIR NAME   agent NAME listens, registers BUF bytes of pattern
 *                                    (NAME[0], 1), writes DIR/NAME.info (connection info,
 *                                    address, blob in hex, pid) and serves: on "check N" it
 *                                    verifies every byte of BUF (the slots of round N now
 *                                    hold the client's pattern, the others what they held)
 *                                    and answers "ok N" or "bad N ..." to the sender, whom
 *                                    it never loaded; "bye" ends it.
 *   test_link_netns client DIR       ROUNDS times: load "a" (by connection info, every other
 *                                    round by blob), WRITE 1024 scattered 16 KiB slots with
 *                                    sync message "check N", wait for "ok N", READ 1024
 *                                    other scattered slots (every byte checked), invalidate.
 *                                    Then 1024 x 16 KiB WRITE and READ bandwidth, the
 *                                    context's stats (link_ops > 0, link_copies == 0), and
 *                                    DIR/client.bytes (bytes written and read) for the
 *                                    script's veth counters; "bye" to "a".
 *   test_link_netns victim DIR       loads "a" (info) and "b" (blob), WRITEs to "a" requests of
 *                                    1024 scattered 16 KiB slots until one fails (the script kills
 *                                    "a"): FAILURE with UNREACHABLE or TIMEOUT within the
 *                                    stall timeout; then "b" still serves (scattered READ
 *                                    checked, a sync message answered), "bye" to "b".
 */
#include "common.h"

#define BUF (32u << 20)
#define SLOT (16u << 10)
#define NSLOTS (BUF / SLOT) /* 2048 */
#define NX 1024             /* slots per request */
#define ROUNDS 4
#define CLIENT 'c'

typedef struct {
    char info[1024];
    uint64_t addr;
    uint8_t blob[4096];
    size_t blob_len;
    long pid;
} peer_t;

/* A permutation of the slots, the same in every process for (round, salt). */
static void perm(uint32_t *p, unsigned round, unsigned salt)
{
    uint64_t s = tst_mix64(((uint64_t)round << 8) ^ salt ^ 0xA11CEull);
    for (uint32_t i = 0; i < NSLOTS; i++)
        p[i] = i;
    for (uint32_t i = NSLOTS - 1; i > 0; i--) {
        s = tst_mix64(s);
        uint32_t j = (uint32_t)(s % (i + 1)), t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

/* What slot @p k of the server's buffer holds: 0 its own pattern, else the client's round. */
static void fill_slot(uint8_t *dst, uint32_t k, uint32_t owner, uint32_t server)
{
    if (owner == 0)
        tst_pattern_fill(dst, SLOT, server, 1, (size_t)k * SLOT);
    else
        tst_pattern_fill(dst, SLOT, CLIENT, owner, (size_t)k * SLOT);
}

static size_t slot_mismatch(const uint8_t *src, uint32_t k, uint32_t owner, uint32_t server)
{
    return owner == 0 ? tst_pattern_find_mismatch(src, SLOT, server, 1, (size_t)k * SLOT)
                      : tst_pattern_find_mismatch(src, SLOT, CLIENT, owner, (size_t)k * SLOT);
}

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
    CHECK(sscanf(buf, "%1023s %llu %8199s %ld", p.info, &addr, hex, &p.pid) == 4);
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

static bool next_message(mpixfer_agent_t *a, char *out, size_t cap, char *from, size_t fcap,
                         double timeout_s)
{
    double deadline = tst_now() + timeout_s;
    for (;;) {
        mpixfer_sync_message_t *m = NULL;
        size_t n = 0;
        CHECK_OK(mpixfer_get_notified_sync_messages(a, &m, &n));
        if (n > 0) {
            CHECK_MSG(n == 1, "%zu messages at once", n);
            snprintf(out, cap, "%.*s", (int)m[0].len, (const char *)m[0].data);
            if (from != NULL)
                snprintf(from, fcap, "%s", m[0].agent_name);
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
    uint32_t me = (uint32_t)name[0];
    uint8_t *buf = tst_alloc(BUF);
    tst_pattern_fill(buf, BUF, me, 1, 0);
    CHECK_OK(tst_register(a, buf, BUF));
    char *info = NULL;
    void *blob = NULL;
    size_t blen = 0;
    CHECK_OK(mpixfer_get_local_connection_info(a, &info));
    CHECK_MSG(strncmp(info, "mpixfer:3:", 10) == 0 && strstr(info, ":key=") != NULL,
              "a listening agent's info carries an address and a key: %s", info);
    CHECK_OK(mpixfer_get_local_agent_desc(a, &blob, &blen));
    CHECK(blen <= 4096);
    static char text[16384];
    int off = snprintf(text, sizeof text, "%s\n%llu\n", info, (unsigned long long)(uintptr_t)buf);
    for (size_t i = 0; i < blen; i++)
        off += snprintf(text + off, sizeof text - (size_t)off, "%02x", ((uint8_t *)blob)[i]);
    snprintf(text + off, sizeof text - (size_t)off, "\n%ld\n", (long)getpid());
    printf("%s: %s\n", name, info);
    mpixfer_free(info);
    mpixfer_free(blob);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.info", dir, name);
    tst_write_file(path, text);

    static uint32_t owner[NSLOTS], p[NSLOTS];
    unsigned checks = 0;
    for (;;) {
        char msg[64], from[300], reply[128];
        CHECK_MSG(next_message(a, msg, sizeof msg, from, sizeof from, 300.0),
                  "%s: no message in 300 s", name);
        if (strcmp(msg, "bye") == 0)
            break;
        unsigned n;
        if (sscanf(msg, "check %u", &n) == 1) {
            /* The WRITE's sync message: its bytes are in place. */
            perm(p, n, 1);
            for (uint32_t i = 0; i < NX; i++)
                owner[p[i]] = n;
            snprintf(reply, sizeof reply, "ok %u", n);
            for (uint32_t k = 0; k < NSLOTS; k++) {
                size_t bad = slot_mismatch(buf + (size_t)k * SLOT, k, owner[k], me);
                if (bad != SIZE_MAX) {
                    snprintf(reply, sizeof reply, "bad %u: slot %u byte %zu (owner %u)", n, k, bad,
                             owner[k]);
                    break;
                }
            }
            checks++;
        } else if (sscanf(msg, "ping %u", &n) == 1) {
            snprintf(reply, sizeof reply, "pong %u", n);
        } else {
            snprintf(reply, sizeof reply, "unexpected '%s'", msg);
        }
        /* The sender was never loaded here: the reply goes back over its link. */
        CHECK_OK(mpixfer_notify_sync_message(a, from, reply, strlen(reply)));
    }
    printf("%s: %u rounds checked, every byte of %u MiB each\n", name, checks, BUF >> 20);
    CHECK_OK(mpixfer_agent_destroy(a));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(buf);
    return tst_finish("test_link_netns serve");
}

static void wait_usable(mpixfer_agent_t *a, const char *name, uint64_t addr)
{
    double deadline = tst_now() + 30.0;
    while (!tst_check_remote(a, name, addr, BUF))
        CHECK_MSG(tst_now() < deadline, "%s not usable in 30 s", name);
}

/* NX scattered slots: local slots lp[], remote slots rp[]. */
static mpixfer_request_t *submit_slots(mpixfer_agent_t *c, mpixfer_op_t op, const char *remote,
                                       uint8_t *lbuf, uint64_t raddr, const uint32_t *lp,
                                       const uint32_t *rp, const char *msg)
{
    static mpixfer_mem_desc_t s[NX], d[NX];
    for (uint32_t i = 0; i < NX; i++) {
        s[i] = tst_desc(lbuf + (size_t)lp[i] * SLOT, SLOT);
        d[i].addr = (uintptr_t)(raddr + (uint64_t)rp[i] * SLOT);
        d[i].len = SLOT;
        d[i].device_id = 0;
    }
    mpixfer_transfer_request_t r;
    memset(&r, 0, sizeof r);
    r.op = op;
    r.src = tst_descs(MPIXFER_MEM_DRAM, s, NX);
    r.dst = tst_descs(MPIXFER_MEM_DRAM, d, NX);
    r.remote_name = remote;
    r.sync_message = msg;
    r.sync_message_len = msg ? strlen(msg) : 0;
    mpixfer_request_t *x = NULL;
    CHECK_OK(mpixfer_submit_transfer(c, &r, &x));
    return x;
}

static void xfer_slots(mpixfer_agent_t *c, mpixfer_op_t op, const char *remote, uint8_t *lbuf,
                       uint64_t raddr, const uint32_t *lp, const uint32_t *rp, const char *msg)
{
    mpixfer_request_t *x = submit_slots(c, op, remote, lbuf, raddr, lp, rp, msg);
    TST_WAIT_OK(x);
}

static void write_bytes_file(const char *dir, uint64_t w, uint64_t r)
{
    char path[4096], text[128];
    snprintf(path, sizeof path, "%s/client.bytes", dir);
    snprintf(text, sizeof text, "%llu %llu\n", (unsigned long long)w, (unsigned long long)r);
    tst_write_file(path, text);
}

static int client(const char *dir)
{
    peer_t pa = read_peer(dir, "a");
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_SELF, &ctx));
    mpixfer_agent_t *c = tst_agent_ex(ctx, "c", true, true, false);
    uint8_t *buf = tst_alloc(BUF);
    CHECK_OK(tst_register(c, buf, BUF));
    static uint32_t owner[NSLOTS], lp[NSLOTS], rp[NSLOTS];
    uint64_t wbytes = 0, rbytes = 0;
    char msg[160], want[64];

    for (unsigned n = 1; n <= ROUNDS; n++) {
        const char *how = n % 2 ? "connection info" : "blob";
        double t0 = tst_now();
        if (n % 2)
            CHECK_OK(mpixfer_load_remote_agent_by_connection(c, "a", pa.info));
        else
            CHECK_OK(mpixfer_load_remote_agent(c, "a", pa.blob, pa.blob_len));
        /* Queued before the link is up, delivered once it is. */
        snprintf(msg, sizeof msg, "ping %u", n);
        CHECK_OK(mpixfer_notify_sync_message(c, "a", msg, strlen(msg)));
        wait_usable(c, "a", pa.addr);
        double t_up = tst_now() - t0;
        CHECK(!tst_check_remote(c, "a", pa.addr, BUF + 1));
        CHECK_MSG(next_message(c, msg, sizeof msg, NULL, 0, 30.0), "no pong %u", n);
        snprintf(want, sizeof want, "pong %u", n);
        CHECK_MSG(strcmp(msg, want) == 0, "got '%s', want '%s'", msg, want);

        /* WRITE: local slots lp[0..NX) to remote slots rp[0..NX), sync message "check n". */
        perm(rp, n, 1);
        perm(lp, n, 2);
        for (uint32_t i = 0; i < NX; i++)
            fill_slot(buf + (size_t)lp[i] * SLOT, rp[i], n, 'a');
        snprintf(msg, sizeof msg, "check %u", n);
        xfer_slots(c, MPIXFER_OP_WRITE, "a", buf, pa.addr, lp, rp, msg);
        wbytes += (uint64_t)NX * SLOT;
        for (uint32_t i = 0; i < NX; i++)
            owner[rp[i]] = n;
        CHECK_MSG(next_message(c, msg, sizeof msg, NULL, 0, 30.0), "no answer to check %u", n);
        snprintf(want, sizeof want, "ok %u", n);
        CHECK_MSG(strcmp(msg, want) == 0, "server: '%s'", msg);

        /* READ other scattered slots (some just written, some older) into other local slots. */
        perm(rp, n, 3);
        perm(lp, n, 4);
        memset(buf, 0, BUF);
        xfer_slots(c, MPIXFER_OP_READ, "a", buf, pa.addr, lp, rp, NULL);
        rbytes += (uint64_t)NX * SLOT;
        for (uint32_t i = 0; i < NX; i++) {
            size_t bad = slot_mismatch(buf + (size_t)lp[i] * SLOT, rp[i], owner[rp[i]], 'a');
            CHECK_MSG(bad == SIZE_MAX, "round %u: READ slot %u (remote %u, owner %u) byte %zu", n,
                      lp[i], rp[i], owner[rp[i]], bad);
        }
        /* Slots the READ did not touch stay untouched. */
        static uint8_t touched[NSLOTS];
        memset(touched, 0, sizeof touched);
        for (uint32_t i = 0; i < NX; i++)
            touched[lp[i]] = 1;
        for (uint32_t k = 0; k < NSLOTS; k++)
            if (!touched[k])
                for (size_t j = 0; j < SLOT; j++)
                    CHECK_MSG(buf[(size_t)k * SLOT + j] == 0, "round %u: slot %u was written", n,
                              k);
        printf("round %u (%s): usable after %.1f ms; 1024 x 16 KiB WRITE and READ checked\n", n,
               how, t_up * 1e3);
        CHECK_OK(mpixfer_invalidate_remote_agent(c, "a"));
    }

    /* Bandwidth: 1024 x 16 KiB scattered, ITERS requests each way (bytes not checked). */
    CHECK_OK(mpixfer_load_remote_agent_by_connection(c, "a", pa.info));
    wait_usable(c, "a", pa.addr);
    const unsigned iters = 16;
    double gbps[2];
    for (int w = 0; w < 2; w++) {
        mpixfer_op_t op = w == 0 ? MPIXFER_OP_WRITE : MPIXFER_OP_READ;
        perm(rp, 100, 5);
        perm(lp, 100, 6);
        xfer_slots(c, op, "a", buf, pa.addr, lp, rp, NULL); /* warm-up */
        double t0 = tst_now();
        for (unsigned i = 0; i < iters; i++)
            xfer_slots(c, op, "a", buf, pa.addr, lp, rp, NULL);
        double dt = tst_now() - t0;
        gbps[w] = (double)iters * NX * SLOT / dt / 1e9;
        if (w == 0)
            wbytes += (uint64_t)(iters + 1) * NX * SLOT;
        else
            rbytes += (uint64_t)(iters + 1) * NX * SLOT;
    }
    printf("bandwidth over the link (1024 x 16 KiB scattered, %u requests each): WRITE %.2f "
           "GB/s, READ %.2f GB/s\n",
           iters, gbps[0], gbps[1]);

    mpixfer_stats_t st;
    CHECK_OK(mpixfer_context_stats(ctx, &st));
    printf("stats: requests %llu, link_ops %llu, link_copies %llu, bytes %llu\n",
           (unsigned long long)st.requests, (unsigned long long)st.link_ops,
           (unsigned long long)st.link_copies, (unsigned long long)st.bytes);
    CHECK_MSG(st.link_ops >= (uint64_t)ROUNDS * 2 * NX / 2,
              "the link moved its bytes by UCX (link_ops %llu)", (unsigned long long)st.link_ops);
    CHECK_MSG(st.link_copies == 0, "no cross-memory copies between the namespaces' jobs (%llu)",
              (unsigned long long)st.link_copies);
    CHECK(st.rma_ops == 0 && st.shm_copies == 0);
    write_bytes_file(dir, wbytes, rbytes);

    CHECK_OK(mpixfer_notify_sync_message(c, "a", "bye", 3));
    CHECK_OK(mpixfer_agent_destroy(c));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(buf);
    return tst_finish("test_link_netns client");
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
    static uint32_t lp[NSLOTS], rp[NSLOTS];
    perm(rp, 7, 1);
    perm(lp, 7, 2);
    /* One request before the kill must succeed. */
    xfer_slots(c, MPIXFER_OP_WRITE, "a", buf, pa.addr, lp, rp, NULL);
    char path[4096];
    snprintf(path, sizeof path, "%s/victim.ready", dir);
    tst_write_file(path, "ready\n"); /* the script kills "a" now */
    const char *st_env = getenv("MPIXFER_STALL_TIMEOUT_MS");
    double stall_s = (st_env ? atof(st_env) : 60000.0) / 1e3;
    unsigned ok = 1;
    double deadline = tst_now() + 60.0;
    for (;;) {
        mpixfer_request_t *x = NULL;
        static mpixfer_mem_desc_t s[NX], d[NX];
        for (uint32_t i = 0; i < NX; i++) {
            s[i] = tst_desc(buf + (size_t)lp[i] * SLOT, SLOT);
            d[i] = tst_desc((void *)(uintptr_t)(pa.addr + (uint64_t)rp[i] * SLOT), SLOT);
        }
        mpixfer_transfer_request_t r;
        memset(&r, 0, sizeof r);
        r.op = MPIXFER_OP_WRITE;
        r.src = tst_descs(MPIXFER_MEM_DRAM, s, NX);
        r.dst = tst_descs(MPIXFER_MEM_DRAM, d, NX);
        r.remote_name = "a";
        mpixfer_status_t st = mpixfer_submit_transfer(c, &r, &x);
        if (st != MPIXFER_OK) {
            printf("after %u WRITEs: submit refused with %s\n", ok, mpixfer_status_name(st));
            CHECK(st == MPIXFER_ERR_UNREACHABLE || st == MPIXFER_ERR_NOT_FOUND);
            break;
        }
        double t0 = tst_now();
        mpixfer_state_t s_ = mpixfer_request_wait(x, (int)(stall_s * 1e3) + 15000);
        double dt = tst_now() - t0;
        CHECK_MSG(s_ != MPIXFER_STATE_IN_PROGRESS,
                  "a request to the killed peer still in progress %.1f s after its wait began", dt);
        if (s_ != MPIXFER_STATE_SUCCESS) {
            mpixfer_status_t why = mpixfer_request_status(x);
            printf("after %u WRITEs: FAILURE (%s) %.1f ms after the wait began (stall timeout "
                   "%.0f ms)\n",
                   ok, mpixfer_status_name(why), dt * 1e3, stall_s * 1e3);
            CHECK(why == MPIXFER_ERR_UNREACHABLE || why == MPIXFER_ERR_TIMEOUT);
            CHECK_MSG(dt <= stall_s + 2.0, "FAILURE only after %.1f s", dt);
            mpixfer_request_free(x);
            break;
        }
        mpixfer_request_free(x);
        ok++;
        CHECK_MSG(tst_now() < deadline, "the killed peer never made a transfer fail");
    }
    /* The survivor keeps serving its other peer: scattered READ checked, a ping answered. */
    memset(buf, 0, BUF);
    xfer_slots(c, MPIXFER_OP_READ, "b", buf, pb.addr, lp, rp, NULL);
    for (uint32_t i = 0; i < NX; i++)
        CHECK_PATTERN(buf + (size_t)lp[i] * SLOT, SLOT, 'b', 1, (size_t)rp[i] * SLOT);
    CHECK_OK(mpixfer_notify_sync_message(c, "b", "ping 9", 6));
    char msg[64];
    CHECK_MSG(next_message(c, msg, sizeof msg, NULL, 0, 30.0), "b did not answer");
    CHECK_MSG(strcmp(msg, "pong 9") == 0, "b answered '%s'", msg);
    CHECK_OK(mpixfer_notify_sync_message(c, "b", "bye", 3));
    CHECK_OK(mpixfer_invalidate_remote_agent(c, "a"));
    CHECK_OK(mpixfer_agent_destroy(c));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(buf);
    return tst_finish("test_link_netns victim");
}

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    CHECK_MSG(argc >= 3, "usage: test_link_netns serve DIR NAME | client DIR | victim DIR");
    if (strcmp(argv[1], "serve") == 0 && argc == 4)
        return serve(argv[2], argv[3]);
    if (strcmp(argv[1], "client") == 0)
        return client(argv[2]);
    CHECK(strcmp(argv[1], "victim") == 0);
    return victim(argv[2]);
}
