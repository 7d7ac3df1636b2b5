/*
 * Stress: every rank runs one agent (multi_thread; odd ranks also with a progress thread)
 * driven by NT worker threads and the main thread, for a bounded time (default 15 s; set
 * MPIXFER_STRESS_SECONDS or pass the seconds as argv[1] for a longer run; the seed is
 * MPIXFER_STRESS_SEED or argv[2]).
 *
 * Workers pick a random peer and one of:
 *   W  WRITE of 1..16 (sometimes up to 256) random blocks (random sizes and offsets, sometimes contiguous so the
 *      library coalesces them) into the worker's own slot of the peer's pool, with a sync
 *      message listing every block's offset, length and 64-bit hash. The peer's main thread
 *      hashes its memory when the message arrives, must find every block in place, and
 *      answers with an ACK message; the slot is not written again before that ACK.
 *   V  WRITE without a sync message into the slot, then READ it back and compare.
 *   R  READ of random blocks of the peer's read-only area (a known pattern), checked.
 *   N  a sync message alone: random length 0..1024, its hash in its header.
 * Messages carry a sequence number per stream (sender rank, sender thread, receiver); the
 * receiver checks that each stream's numbers only grow (a gap only where a transfer failed
 * and its message was never sent), and at the end, after exchanging what was sent, that
 * every message arrived exactly once.
 *
 * The main thread drains the inbox and, every ~150 ms, invalidates a random peer, checks
 * that submits to it fail with NOT_FOUND, that check_remote_descs is false and notify is
 * NOT_FOUND, then loads it again (alternately from its descriptor blob and by connection
 * info). Workers that meet NOT_FOUND while a peer is invalidated count a refusal.
 *
 * Totals (transfers, bytes verified, messages) are printed by rank 0 at the end.
 */
#include "common.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#define NT 4                 /* worker threads per rank */
#define MAXR 64              /* ranks at most */
#define SLOT (64 * 1024)     /* one worker's slot in a peer's pool */
#define RO_LEN (256 * 1024)  /* read-only pattern area */
#define MAXB 256             /* blocks per transfer at most (usually <= 16) */
#define RO_ITER 7u
#define MAGIC 0x53545253u    /* "STRS" */

enum { T_W = 1, T_N = 2, T_A = 3 };

typedef struct {
    uint32_t magic;
    uint8_t type;
    uint8_t thread; /* sender thread; NT for the main thread */
    uint16_t nblk;
    uint32_t rank; /* sender rank */
    uint32_t len;  /* N: payload bytes after the header */
    uint64_t seq;  /* per stream */
    uint64_t hash; /* N: of the payload; A: the acked W's seq */
    uint32_t acked_thread; /* A: whose slot */
    uint32_t pad;
} hdr_t;

typedef struct {
    uint32_t off, len;
    uint64_t hash;
} blk_t;

/* ------------------------------------------------------------------ state */

static int g_rank, g_size;
static mpixfer_agent_t *g_agent;
static mpixfer_context_t *g_ctx;
static uint8_t *g_pool;  /* incoming slots: [sender rank][thread] */
static uint8_t *g_local; /* per worker: src SLOT, back SLOT; then the main thread's scratch */
static uint8_t *g_ro;
static uint64_t g_pool_addr[MAXR], g_ro_addr[MAXR];
static char g_names[MAXR][32];
static tst_gathered_t g_blobs, g_infos;
static double g_deadline;

/* Invalidation generation per peer: odd while the main thread has it invalidated. */
static atomic_uint g_gen[MAXR];
/* Outstanding W per (thread, peer): 0 free, else its seq + 1. */
static _Atomic uint64_t g_busy[NT][MAXR];

/* Sender side: next seq and messages that left, per (thread or main, receiver). */
static uint64_t g_next_seq[NT + 1][MAXR];
static uint64_t g_sent[NT + 1][MAXR];
/* Receiver side (main thread only): last seq and count per (sender, sender thread). */
static uint64_t g_last_seq[MAXR][NT + 1];
static uint64_t g_recv[MAXR][NT + 1];
static bool g_seen[MAXR][NT + 1];

static atomic_ullong g_transfers, g_bytes_verified, g_refused, g_failed_inflight;
static atomic_ullong g_msgs_recv;
static uint64_t g_cycles;

/* ----------------------------------------------------------------- helpers */

static uint64_t hash64(const uint8_t *p, size_t n)
{
    uint64_t h = 0x243F6A8885A308D3ull ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = tst_mix64(h ^ w);
    }
    uint64_t w = 0;
    for (size_t k = 0; i < n; i++, k++)
        w |= (uint64_t)p[i] << (8 * k);
    return tst_mix64(h ^ w ^ 0xA5);
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

static size_t rnd_below(uint64_t *s, size_t n) { return n ? (size_t)(rnd(s) % n) : 0; }

static void fill_random(uint64_t *s, uint8_t *p, size_t n)
{
    uint64_t seed = rnd(s);
    for (size_t i = 0; i < n; i += 8) {
        uint64_t w = tst_mix64(seed + i);
        memcpy(p + i, &w, n - i < 8 ? n - i : 8);
    }
}

static int peer_of(const char *name)
{
    int r = -1;
    CHECK(sscanf(name, "st%d", &r) == 1 && r >= 0 && r < g_size);
    return r;
}

/* NOT_FOUND is expected iff the peer was invalidated at some point of the call. */
static bool refused_ok(mpixfer_status_t st, int d, unsigned g1)
{
    unsigned g2 = atomic_load(&g_gen[d]);
    return st == MPIXFER_ERR_NOT_FOUND && ((g1 & 1u) || g1 != g2);
}

/* Wait for a request, by blocking wait or by polling. */
static mpixfer_state_t finish(mpixfer_request_t *x, uint64_t *s)
{
    mpixfer_state_t st;
    if (rnd(s) & 1) {
        st = mpixfer_request_wait(x, 30000);
    } else {
        double end = tst_now() + 30.0;
        while (!mpixfer_request_is_completed(x) && tst_now() < end)
            usleep(20);
        st = mpixfer_request_wait(x, 0);
    }
    CHECK_MSG(st != MPIXFER_STATE_IN_PROGRESS, "rank %d: request not done after 30 s", g_rank);
    return st;
}

/* 1..MAXB blocks inside [0, area): sorted, disjoint; contiguous when @p contig. */
static size_t make_blocks(uint64_t *s, size_t area, bool contig, uint32_t *off, uint32_t *len)
{
    size_t n = 1 + rnd_below(s, 16);
    if (rnd_below(s, 8) == 0)
        n = 1;
    else if (rnd_below(s, 16) == 0) /* past the library's inline limit (64): issued later */
        n = 65 + rnd_below(s, MAXB - 64);
    size_t seg = area / n;
    if (contig) {
        size_t base = rnd_below(s, area / 2), each = 1 + rnd_below(s, (area - base) / n);
        for (size_t i = 0; i < n; i++) {
            off[i] = (uint32_t)(base + i * each);
            len[i] = (uint32_t)each;
        }
        return n;
    }
    for (size_t i = 0; i < n; i++) {
        size_t l = 1 + rnd_below(s, rnd_below(s, 4) == 0 ? seg : seg / 8 + 1);
        if (l > seg)
            l = seg;
        off[i] = (uint32_t)(i * seg + rnd_below(s, seg - l + 1));
        len[i] = (uint32_t)l;
    }
    return n;
}

static void shuffle(uint64_t *s, size_t *perm, size_t n)
{
    for (size_t i = 0; i < n; i++)
        perm[i] = i;
    for (size_t i = n; i > 1; i--) {
        size_t j = rnd_below(s, i), t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}

static mpixfer_status_t submit(mpixfer_op_t op, int d, const mpixfer_mem_desc_t *src,
                               const mpixfer_mem_desc_t *dst, size_t n, const void *msg,
                               size_t msg_len, mpixfer_request_t **x)
{
    mpixfer_transfer_request_t r;
    memset(&r, 0, sizeof r);
    r.op = op;
    r.src = tst_descs(MPIXFER_MEM_DRAM, src, n);
    r.dst = tst_descs(MPIXFER_MEM_DRAM, dst, n);
    r.remote_name = g_names[d];
    r.sync_message = msg;
    r.sync_message_len = msg_len;
    *x = NULL;
    return mpixfer_submit_transfer(g_agent, &r, x);
}

/* One transfer without a message: true when it succeeded. A submit refused, or a transfer
 * failed in flight, is allowed (and counted) only while d is being invalidated. */
static bool transfer_once(uint64_t *rng, const char *what, mpixfer_op_t op, int d,
                          const mpixfer_mem_desc_t *src, const mpixfer_mem_desc_t *dst, size_t n)
{
    unsigned g1 = atomic_load(&g_gen[d]);
    mpixfer_request_t *x;
    mpixfer_status_t st = submit(op, d, src, dst, n, NULL, 0, &x);
    if (st != MPIXFER_OK) {
        CHECK_MSG(refused_ok(st, d, g1), "%s submit to rank %d: %s", what, d,
                  mpixfer_status_name(st));
        atomic_fetch_add(&g_refused, 1);
        return false;
    }
    bool ok = finish(x, rng) == MPIXFER_STATE_SUCCESS;
    if (ok) {
        atomic_fetch_add(&g_transfers, 1);
    } else {
        CHECK_MSG(atomic_load(&g_gen[d]) != g1, "%s with rank %d failed: %s", what, d,
                  mpixfer_status_name(mpixfer_request_status(x)));
        atomic_fetch_add(&g_failed_inflight, 1);
    }
    mpixfer_request_free(x);
    return ok;
}

/* ----------------------------------------------------------------- workers */

typedef struct {
    int t;
    uint64_t rng;
    uint64_t ops[4];
} worker_t;

/* W: blocks into our slot at d with a hashed sync message. */
static void op_w(worker_t *w, int d)
{
    uint8_t *src = g_local + (size_t)w->t * 2 * SLOT;
    uint32_t off[MAXB], len[MAXB];
    size_t perm[MAXB];
    bool contig = rnd_below(&w->rng, 4) == 0;
    size_t n = make_blocks(&w->rng, SLOT, contig, off, len);
    unsigned char msg[sizeof(hdr_t) + MAXB * sizeof(blk_t)];
    hdr_t h;
    mpixfer_mem_desc_t s[MAXB], dd[MAXB];
    uint64_t slot = g_pool_addr[d] + ((uint64_t)g_rank * NT + (uint64_t)w->t) * SLOT;

    /* Local blocks at other positions (and in another order unless contiguous). */
    shuffle(&w->rng, perm, n);
    fill_random(&w->rng, src, SLOT);
    memset(&h, 0, sizeof h);
    h.magic = MAGIC;
    h.type = T_W;
    h.thread = (uint8_t)w->t;
    h.nblk = (uint16_t)n;
    h.rank = (uint32_t)g_rank;
    h.seq = g_next_seq[w->t][d];
    for (size_t i = 0; i < n; i++) {
        size_t li = contig ? i : perm[i];
        blk_t b = {off[i], len[i], hash64(src + off[li], len[i])};
        s[i] = tst_desc(src + off[li], len[i]);
        dd[i] = tst_desc((void *)(uintptr_t)(slot + off[i]), len[i]);
        memcpy(msg + sizeof h + i * sizeof b, &b, sizeof b);
    }
    memcpy(msg, &h, sizeof h);

    unsigned g1 = atomic_load(&g_gen[d]);
    atomic_store(&g_busy[w->t][d], h.seq + 1); /* before: the ACK may beat our return */
    mpixfer_request_t *x;
    mpixfer_status_t st = submit(MPIXFER_OP_WRITE, d, s, dd, n, msg,
                                 sizeof h + n * sizeof(blk_t), &x);
    if (st != MPIXFER_OK) {
        atomic_store(&g_busy[w->t][d], 0);
        CHECK_MSG(refused_ok(st, d, g1), "W submit to rank %d: %s", d, mpixfer_status_name(st));
        atomic_fetch_add(&g_refused, 1);
        return;
    }
    g_next_seq[w->t][d]++;
    if (finish(x, &w->rng) == MPIXFER_STATE_SUCCESS) {
        g_sent[w->t][d]++;
        atomic_fetch_add(&g_transfers, 1);
    } else {
        /* Only a transfer in flight while its peer was invalidated may fail. */
        CHECK_MSG(atomic_load(&g_gen[d]) != g1, "W to rank %d failed: %s", d,
                  mpixfer_status_name(mpixfer_request_status(x)));
        atomic_store(&g_busy[w->t][d], 0);
        atomic_fetch_add(&g_failed_inflight, 1);
    }
    mpixfer_request_free(x);
}

/* V: WRITE without a message into our slot at d, READ back, compare. */
static void op_v(worker_t *w, int d)
{
    uint8_t *src = g_local + (size_t)w->t * 2 * SLOT, *back = src + SLOT;
    uint32_t off[MAXB], len[MAXB];
    mpixfer_mem_desc_t s[MAXB], dd[MAXB], b[MAXB];
    size_t n = make_blocks(&w->rng, SLOT, rnd_below(&w->rng, 4) == 0, off, len);
    uint64_t slot = g_pool_addr[d] + ((uint64_t)g_rank * NT + (uint64_t)w->t) * SLOT;

    fill_random(&w->rng, src, SLOT);
    memset(back, 0, SLOT);
    for (size_t i = 0; i < n; i++) {
        s[i] = tst_desc(src + off[i], len[i]);
        b[i] = tst_desc(back + off[i], len[i]);
        dd[i] = tst_desc((void *)(uintptr_t)(slot + off[i]), len[i]);
    }
    for (int pass = 0; pass < 2; pass++)
        if (!transfer_once(&w->rng, pass ? "V read" : "V write",
                           pass ? MPIXFER_OP_READ : MPIXFER_OP_WRITE, d, pass ? b : s, dd, n))
            return;
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK_MSG(memcmp(src + off[i], back + off[i], len[i]) == 0,
                  "V: block %zu [%u, +%u) read back from rank %d differs", i, off[i], len[i], d);
        bytes += len[i];
    }
    atomic_fetch_add(&g_bytes_verified, bytes);
}

/* R: READ random blocks of d's read-only pattern area. */
static void op_r(worker_t *w, int d)
{
    uint8_t *back = g_local + (size_t)w->t * 2 * SLOT + SLOT;
    uint32_t off[MAXB], len[MAXB], roff[MAXB];
    size_t perm[MAXB];
    mpixfer_mem_desc_t b[MAXB], dd[MAXB];
    bool contig = rnd_below(&w->rng, 4) == 0;
    size_t n = make_blocks(&w->rng, SLOT, contig, off, len);
    size_t base = rnd_below(&w->rng, RO_LEN / SLOT) * SLOT;
    CHECK(n >= 1); /* make_blocks promises it; tells the compiler b and dd get filled */

    size_t seg = SLOT / n;
    shuffle(&w->rng, perm, n);
    for (size_t i = 0; i < n; i++) {
        /* Remote blocks: unless contiguous, block i moves to segment perm[i]. */
        roff[i] = (uint32_t)(base + (contig ? off[i] : perm[i] * seg + (off[i] - i * seg)));
        b[i] = tst_desc(back + off[i], len[i]);
        dd[i] = tst_desc((void *)(uintptr_t)(g_ro_addr[d] + roff[i]), len[i]);
    }
    memset(back, 0, SLOT);
    if (!transfer_once(&w->rng, "R", MPIXFER_OP_READ, d, b, dd, n))
        return;
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK_PATTERN(back + off[i], len[i], d, RO_ITER, roff[i]);
        bytes += len[i];
    }
    atomic_fetch_add(&g_bytes_verified, bytes);
}

/* N: a sync message alone. */
static void op_n(worker_t *w, int d)
{
    unsigned char msg[sizeof(hdr_t) + 1024];
    hdr_t h;
    size_t len = rnd_below(&w->rng, 1025);
    fill_random(&w->rng, msg + sizeof h, len);
    memset(&h, 0, sizeof h);
    h.magic = MAGIC;
    h.type = T_N;
    h.thread = (uint8_t)w->t;
    h.rank = (uint32_t)g_rank;
    h.len = (uint32_t)len;
    h.seq = g_next_seq[w->t][d];
    h.hash = hash64(msg + sizeof h, len);
    memcpy(msg, &h, sizeof h);
    unsigned g1 = atomic_load(&g_gen[d]);
    mpixfer_status_t st = mpixfer_notify_sync_message(g_agent, g_names[d], msg, sizeof h + len);
    if (st != MPIXFER_OK) {
        CHECK_MSG(refused_ok(st, d, g1), "notify to rank %d: %s", d, mpixfer_status_name(st));
        atomic_fetch_add(&g_refused, 1);
        return;
    }
    g_next_seq[w->t][d]++;
    g_sent[w->t][d]++;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    while (tst_now() < g_deadline) {
        int d = (int)rnd_below(&w->rng, (size_t)g_size - 1);
        if (d >= g_rank)
            d++;
        size_t pick = rnd_below(&w->rng, 100);
        if (pick < 40 && atomic_load(&g_busy[w->t][d]) == 0) {
            op_w(w, d);
            w->ops[0]++;
        } else if (pick < 55 && atomic_load(&g_busy[w->t][d]) == 0) {
            op_v(w, d);
            w->ops[1]++;
        } else if (pick < 85) {
            op_r(w, d);
            w->ops[2]++;
        } else {
            op_n(w, d);
            w->ops[3]++;
        }
        if (rnd_below(&w->rng, 4) == 0)
            sched_yield();
    }
    return NULL;
}

/* ------------------------------------------------------------- main thread */

static uint64_t g_acks_sent[MAXR];

static void handle(const mpixfer_sync_message_t *m)
{
    hdr_t h;
    int s = peer_of(m->agent_name);
    CHECK_MSG(m->len >= sizeof h, "message of %zu bytes from %s", m->len, m->agent_name);
    memcpy(&h, m->data, sizeof h);
    CHECK(h.magic == MAGIC && h.rank == (uint32_t)s && h.thread <= NT);
    /* In order per stream: sequence numbers only grow. */
    CHECK_MSG(!g_seen[s][h.thread] || h.seq > g_last_seq[s][h.thread],
              "stream (rank %d, thread %u) -> rank %d: seq %llu after %llu", s, h.thread,
              g_rank, (unsigned long long)h.seq, (unsigned long long)g_last_seq[s][h.thread]);
    g_seen[s][h.thread] = true;
    g_last_seq[s][h.thread] = h.seq;
    g_recv[s][h.thread]++;
    atomic_fetch_add(&g_msgs_recv, 1);

    if (h.type == T_W) {
        const uint8_t *slot = g_pool + ((size_t)s * NT + h.thread) * SLOT;
        size_t bytes = 0;
        CHECK(h.thread < NT && h.nblk >= 1 && h.nblk <= MAXB &&
              m->len == sizeof h + h.nblk * sizeof(blk_t));
        for (size_t i = 0; i < h.nblk; i++) {
            blk_t b;
            memcpy(&b, (const uint8_t *)m->data + sizeof h + i * sizeof b, sizeof b);
            CHECK(b.off + (size_t)b.len <= SLOT);
            CHECK_MSG(hash64(slot + b.off, b.len) == b.hash,
                      "W seq %llu from rank %d thread %u: block %zu [%u, +%u) is not in place "
                      "when its sync message arrived", (unsigned long long)h.seq, s, h.thread,
                      i, b.off, b.len);
            bytes += b.len;
        }
        atomic_fetch_add(&g_bytes_verified, bytes);
        hdr_t a;
        memset(&a, 0, sizeof a);
        a.magic = MAGIC;
        a.type = T_A;
        a.thread = NT;
        a.rank = (uint32_t)g_rank;
        a.seq = g_next_seq[NT][s]++;
        a.hash = h.seq;
        a.acked_thread = h.thread;
        CHECK_OK(mpixfer_notify_sync_message(g_agent, g_names[s], &a, sizeof a));
        g_sent[NT][s]++;
        g_acks_sent[s]++;
    } else if (h.type == T_N) {
        CHECK(m->len == sizeof h + h.len);
        CHECK_MSG(hash64((const uint8_t *)m->data + sizeof h, h.len) == h.hash,
                  "N seq %llu from rank %d: payload corrupted", (unsigned long long)h.seq, s);
    } else {
        CHECK(h.type == T_A && h.thread == NT && h.acked_thread < NT && m->len == sizeof h);
        uint64_t want = h.hash + 1, busy = atomic_load(&g_busy[h.acked_thread][s]);
        CHECK_MSG(busy == want, "ACK of W seq %llu (thread %u) from rank %d, outstanding %llu",
                  (unsigned long long)h.hash, h.acked_thread, s,
                  (unsigned long long)busy - 1);
        atomic_store(&g_busy[h.acked_thread][s], 0);
    }
}

static size_t drain(void)
{
    mpixfer_sync_message_t *m = NULL;
    size_t n = 0;
    CHECK_OK(mpixfer_get_notified_sync_messages(g_agent, &m, &n));
    for (size_t i = 0; i < n; i++)
        handle(&m[i]);
    mpixfer_sync_messages_free(m, n);
    return n;
}

/* Invalidate a random peer, check it is refused, load it again. */
static void cycle(uint64_t *rng)
{
    int d = (int)rnd_below(rng, (size_t)g_size - 1);
    if (d >= g_rank)
        d++;
    uint8_t *scratch = g_local + (size_t)NT * 2 * SLOT;
    atomic_fetch_add(&g_gen[d], 1); /* odd: invalid */
    CHECK_OK(mpixfer_invalidate_remote_agent(g_agent, g_names[d]));
    CHECK_STATUS(mpixfer_invalidate_remote_agent(g_agent, g_names[d]), MPIXFER_ERR_NOT_FOUND);
    /* A READ (harmless if it went through) into our scratch. */
    mpixfer_mem_desc_t s = tst_desc(scratch, 64), dd = tst_desc((void *)(uintptr_t)g_ro_addr[d], 64);
    mpixfer_request_t *x;
    CHECK_STATUS(submit(MPIXFER_OP_READ, d, &s, &dd, 1, NULL, 0, &x), MPIXFER_ERR_NOT_FOUND);
    CHECK(x == NULL);
    CHECK(!tst_check_remote(g_agent, g_names[d], g_ro_addr[d], 64));
    CHECK_STATUS(mpixfer_notify_sync_message(g_agent, g_names[d], "x", 1), MPIXFER_ERR_NOT_FOUND);
    if (g_cycles % 2 == 0) {
        tst_load_from(g_agent, g_names[d], &g_blobs, d);
    } else {
        size_t len;
        const char *info = tst_gathered_at(&g_infos, d, &len);
        char buf[512];
        CHECK(len < sizeof buf);
        memcpy(buf, info, len);
        buf[len] = '\0';
        CHECK_OK(mpixfer_load_remote_agent_by_connection(g_agent, g_names[d], buf));
        double end = tst_now() + 30.0;
        while (!tst_check_remote(g_agent, g_names[d], g_ro_addr[d], RO_LEN)) {
            CHECK_MSG(tst_now() < end, "descriptor of rank %d not loaded by connection in 30 s",
                      d);
            drain();
            usleep(100);
        }
    }
    CHECK(tst_check_remote(g_agent, g_names[d], g_pool_addr[d], (size_t)g_size * NT * SLOT));
    atomic_fetch_add(&g_gen[d], 1); /* even: valid */
    g_cycles++;
}

/* Drain the inbox until g_recv reaches @p want for every (sender, thread) in @p threads. */
static void drain_until(const uint64_t *want, int t0, int t1, const char *what)
{
    double end = tst_now() + 60.0;
    for (;;) {
        bool done = true;
        for (int s = 0; s < g_size && done; s++)
            for (int t = t0; t < t1 && done; t++)
                done = g_recv[s][t] >= want[s * (NT + 1) + t];
        if (done)
            break;
        if (drain() == 0)
            usleep(100);
        CHECK_MSG(tst_now() < end, "%s: messages missing after 60 s", what);
    }
    for (int s = 0; s < g_size; s++)
        for (int t = t0; t < t1; t++)
            CHECK_MSG(g_recv[s][t] == want[s * (NT + 1) + t],
                      "%s: %llu messages from (rank %d, thread %d), %llu sent", what,
                      (unsigned long long)g_recv[s][t], s, t,
                      (unsigned long long)want[s * (NT + 1) + t]);
}

/* Exchange g_sent[t0..t1) (what I sent to each rank) into want[sender][thread] while
 * draining. */
static void exchange(uint64_t *want)
{
    uint64_t *out = calloc((size_t)g_size * (NT + 1), 8);
    CHECK(out != NULL);
    for (int d = 0; d < g_size; d++)
        for (int t = 0; t <= NT; t++)
            out[d * (NT + 1) + t] = g_sent[t][d];
    MPI_Request r;
    int done = 0;
    CHECK_MPI(MPI_Ialltoall(out, NT + 1, MPI_UINT64_T, want, NT + 1, MPI_UINT64_T,
                            MPI_COMM_WORLD, &r));
    while (!done) {
        drain();
        CHECK_MPI(MPI_Test(&r, &done, MPI_STATUS_IGNORE));
        if (!done)
            usleep(100);
    }
    free(out);
}

int main(int argc, char **argv)
{
    int provided = tst_init_multiple(&argc, &argv);
    tst_require_multiple(provided);
    g_rank = tst_rank();
    g_size = tst_size();
    if (g_size < 2)
        tst_skip("test_stress needs at least 2 ranks");
    CHECK(g_size <= MAXR);
    double seconds = 15.0;
    uint64_t seed = 12345;
    const char *e = getenv("MPIXFER_STRESS_SECONDS");
    if (argc > 1)
        e = argv[1];
    if (e != NULL)
        seconds = atof(e);
    CHECK(seconds > 0);
    e = getenv("MPIXFER_STRESS_SEED");
    if (argc > 2)
        e = argv[2];
    if (e != NULL)
        seed = strtoull(e, NULL, 0);
    TST_LOG("test_stress: %d ranks x %d threads, %.0f s, seed %llu\n", g_size, NT, seconds,
            (unsigned long long)seed);

    CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &g_ctx));
    char me[32];
    for (int r = 0; r < g_size; r++)
        tst_name(g_names[r], sizeof g_names[r], "st", r);
    snprintf(me, sizeof me, "%s", g_names[g_rank]);
    g_agent = tst_agent_ex(g_ctx, me, g_rank % 2 == 1, true, false);

    g_pool = tst_alloc((size_t)g_size * NT * SLOT);
    g_local = tst_alloc((size_t)NT * 2 * SLOT + 4096);
    g_ro = tst_alloc(RO_LEN);
    tst_pattern_fill(g_ro, RO_LEN, (uint32_t)g_rank, RO_ITER, 0);
    CHECK_OK(tst_register(g_agent, g_pool, (size_t)g_size * NT * SLOT));
    CHECK_OK(tst_register(g_agent, g_local, (size_t)NT * 2 * SLOT + 4096));
    CHECK_OK(tst_register(g_agent, g_ro, RO_LEN));
    tst_allgather_u64((uintptr_t)g_pool, g_pool_addr);
    tst_allgather_u64((uintptr_t)g_ro, g_ro_addr);
    g_blobs = tst_allgather_desc(g_agent);
    char *info = NULL;
    CHECK_OK(mpixfer_get_local_connection_info(g_agent, &info));
    g_infos = tst_allgather_bytes(info, strlen(info));
    mpixfer_free(info);
    CHECK_OK(mpixfer_bootstrap(g_ctx));
    tst_barrier_progress(g_ctx);

    double t_start = tst_now();
    g_deadline = t_start + seconds;
    worker_t w[NT];
    pthread_t th[NT];
    for (int t = 0; t < NT; t++) {
        memset(&w[t], 0, sizeof w[t]);
        w[t].t = t;
        w[t].rng = tst_mix64(seed ^ ((uint64_t)g_rank << 8) ^ (uint64_t)t) | 1;
        CHECK(pthread_create(&th[t], NULL, worker_main, &w[t]) == 0);
    }
    uint64_t mrng = tst_mix64(seed ^ ((uint64_t)g_rank << 8) ^ 0xFF) | 1;
    double next_cycle = tst_now() + 0.1 + 0.05 * g_rank;
    while (tst_now() < g_deadline) {
        size_t n = drain();
        if (tst_now() >= next_cycle) {
            cycle(&mrng);
            next_cycle = tst_now() + 0.15;
        }
        if (n == 0)
            usleep(200);
    }
    for (int t = 0; t < NT; t++)
        CHECK(pthread_join(th[t], NULL) == 0);
    double t_run = tst_now() - t_start;

    /* Every W and N sent reaches its receiver; then every ACK. */
    uint64_t *want = calloc((size_t)g_size * (NT + 1), 8);
    CHECK(want != NULL);
    exchange(want);
    drain_until(want, 0, NT, "W/N messages");
    exchange(want); /* again: now with every ACK counted */
    drain_until(want, 0, NT + 1, "ACK messages");
    for (int t = 0; t < NT; t++)
        for (int d = 0; d < g_size; d++)
            CHECK_MSG(atomic_load(&g_busy[t][d]) == 0, "thread %d: W to rank %d never acked", t,
                      d);
    free(want);
    tst_barrier_progress(g_ctx);
    /* Our read-only area was never written. */
    CHECK_PATTERN(g_ro, RO_LEN, g_rank, RO_ITER, 0);

    uint64_t mine[10] = {atomic_load(&g_transfers), atomic_load(&g_bytes_verified),
                         atomic_load(&g_msgs_recv), atomic_load(&g_refused),
                         atomic_load(&g_failed_inflight), g_cycles, 0, 0, 0, 0};
    for (int t = 0; t < NT; t++)
        for (int k = 0; k < 4; k++)
            mine[6 + k] += w[t].ops[k];
    uint64_t tot[10];
    CHECK_MPI(MPI_Reduce(mine, tot, 10, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD));
    TST_LOG("test_stress totals: %llu transfers, %llu bytes verified, %llu messages "
            "(all accounted for, in order) in %.1f s\n"
            "  ops W %llu, V %llu, R %llu, N %llu; %llu invalidate/reload cycles, %llu "
            "submits/notifies refused while invalidated, %llu in-flight failures\n",
            (unsigned long long)tot[0], (unsigned long long)tot[1], (unsigned long long)tot[2],
            t_run, (unsigned long long)tot[6], (unsigned long long)tot[7],
            (unsigned long long)tot[8], (unsigned long long)tot[9], (unsigned long long)tot[5],
            (unsigned long long)tot[3], (unsigned long long)tot[4]);

    tst_gathered_free(&g_blobs);
    tst_gathered_free(&g_infos);
    CHECK_OK(mpixfer_agent_destroy(g_agent));
    CHECK_OK(mpixfer_context_destroy(g_ctx));
    free(g_pool);
    free(g_local);
    free(g_ro);
    return tst_finish("test_stress");
}
