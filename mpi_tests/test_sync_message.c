/* Sync messages: binary-safe bodies (NUL, 0xFF), empty messages, a receiver that loaded
 * nobody, same-process delivery without loading, errors (unknown remote, NULL body, too
 * large, NULL arguments), draining semantics, and ordering: two senders per rank send 100
 * numbered messages to every receiver; each sender's sequence must arrive complete and in
 * order. */
#include "common.h"

#define NSEQ 100
#define KS 2 /* senders per rank */

typedef struct {
    mpixfer_sync_message_t *v;
    size_t n, cap;
} inbox_t;

/* Poll @p a until it has received at least @p want messages in total (deadline 15 s). */
static void collect(mpixfer_context_t *ctx, mpixfer_agent_t *a, inbox_t *box, size_t want)
{
    double deadline = tst_now() + 15.0;
    while (box->n < want) {
        mpixfer_sync_message_t *m = NULL;
        size_t n = 12345;
        CHECK_OK(mpixfer_get_notified_sync_messages(a, &m, &n));
        CHECK(n != 12345);
        CHECK((n == 0) == (m == NULL));
        if (n) {
            if (box->n + n > box->cap) {
                box->cap = (box->n + n) * 2;
                box->v = realloc(box->v, box->cap * sizeof *box->v);
                CHECK(box->v);
            }
            for (size_t i = 0; i < n; i++) {
                mpixfer_sync_message_t *d = &box->v[box->n + i];
                d->agent_name = strdup(m[i].agent_name);
                d->len = m[i].len;
                d->data = malloc(m[i].len + 1);
                CHECK(d->agent_name && d->data);
                memcpy(d->data, m[i].data, m[i].len);
                /* The library NUL-terminates beyond len. */
                CHECK(((const char *)m[i].data)[m[i].len] == '\0');
            }
            box->n += n;
            mpixfer_sync_messages_free(m, n);
        } else {
            CHECK_OK(mpixfer_progress(ctx));
        }
        CHECK_MSG(tst_now() < deadline, "only %zu of %zu messages after 15 s", box->n, want);
    }
}

static void inbox_clear(inbox_t *box)
{
    for (size_t i = 0; i < box->n; i++) {
        free(box->v[i].agent_name);
        free(box->v[i].data);
    }
    box->n = 0;
}

static void expect_empty(mpixfer_agent_t *a)
{
    mpixfer_sync_message_t *m = (mpixfer_sync_message_t *)(uintptr_t)0x1;
    size_t n = 99;
    CHECK_OK(mpixfer_get_notified_sync_messages(a, &m, &n));
    CHECK_MSG(n == 0, "%zu unexpected messages", n);
    CHECK(m == NULL);
}

/* Message i of sender g: u32 seq, u32 sender, then (i % 23) bytes of pattern incl. 0 and 0xFF. */
static size_t make_msg(uint8_t *buf, int g, int i)
{
    uint32_t seq = (uint32_t)i, snd = (uint32_t)g;
    memcpy(buf, &seq, 4);
    memcpy(buf + 4, &snd, 4);
    size_t extra = (size_t)(i % 23);
    tst_pattern_fill(buf + 8, extra, snd, seq, 0);
    if (extra > 2) {
        buf[8] = 0;
        buf[9] = 0xFF;
    }
    return 8 + extra;
}

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    int rank = tst_rank(), size = tst_size();
    int peer = (rank + 1) % size, prev = (rank + size - 1) % size;
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &ctx));
    char rn[32], prn[32], sn[KS][32], psn[32];
    tst_name(rn, sizeof rn, "msg_R", rank);
    tst_name(prn, sizeof prn, "msg_R", peer);
    for (int k = 0; k < KS; k++)
        snprintf(sn[k], sizeof sn[k], "msg_S%d_%d", rank, k);
    snprintf(psn, sizeof psn, "msg_S%d_0", prev);
    mpixfer_agent_t *R = tst_agent(ctx, rn), *S[KS];
    for (int k = 0; k < KS; k++)
        S[k] = tst_agent(ctx, sn[k]);
    inbox_t box = {0};

    /* ---- argument errors */
    const char body[] = "x";
    CHECK_STATUS(mpixfer_notify_sync_message(NULL, rn, body, 1), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_notify_sync_message(S[0], NULL, body, 1), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_notify_sync_message(S[0], "msg_nobody", body, 1), MPIXFER_ERR_NOT_FOUND);
    CHECK_STATUS(mpixfer_notify_sync_message(S[0], rn, NULL, 5), MPIXFER_ERR_INVALID_ARG);
    {
        mpixfer_sync_message_t *m = NULL;
        size_t n = 0;
        CHECK_STATUS(mpixfer_get_notified_sync_messages(NULL, &m, &n), MPIXFER_ERR_INVALID_ARG);
        CHECK_STATUS(mpixfer_get_notified_sync_messages(R, NULL, &n), MPIXFER_ERR_INVALID_ARG);
        CHECK_STATUS(mpixfer_get_notified_sync_messages(R, &m, NULL), MPIXFER_ERR_INVALID_ARG);
    }
    mpixfer_sync_messages_free(NULL, 0);
    expect_empty(R);

    /* ---- R loads nobody; S0 learns the next rank's R from its blob and sends to it. */
    tst_gathered_t g = tst_allgather_desc(R);
    tst_load_from(S[0], prn, &g, peer);
    tst_gathered_free(&g);
    const uint8_t bin[] = {0x00, 0xFF, 'a', 0x00, 0x00, 0xFE, 0x80, 0x00};
    CHECK_OK(mpixfer_notify_sync_message(S[0], prn, bin, sizeof bin));
    CHECK_OK(mpixfer_notify_sync_message(S[0], prn, bin, 0)); /* empty */
    CHECK_OK(mpixfer_notify_sync_message(S[0], prn, bin + 1, 1));
    collect(ctx, R, &box, 3);
    CHECK(box.n == 3);
    for (int i = 0; i < 3; i++)
        CHECK_MSG(strcmp(box.v[i].agent_name, psn) == 0, "sender '%s', expected '%s'",
                  box.v[i].agent_name, psn);
    CHECK(box.v[0].len == sizeof bin && memcmp(box.v[0].data, bin, sizeof bin) == 0);
    CHECK(box.v[1].len == 0);
    CHECK(box.v[2].len == 1 && ((uint8_t *)box.v[2].data)[0] == 0xFF);
    inbox_clear(&box);
    expect_empty(R); /* drained */
    tst_barrier_progress(ctx);

    /* ---- same process, nothing loaded: S1 -> R */
    CHECK_OK(mpixfer_notify_sync_message(S[1], rn, "local", 5));
    collect(ctx, R, &box, 1);
    CHECK(box.n == 1 && strcmp(box.v[0].agent_name, sn[1]) == 0);
    CHECK(box.v[0].len == 5 && memcmp(box.v[0].data, "local", 5) == 0);
    inbox_clear(&box);
    expect_empty(R);

    /* ---- size limit: default 1 MiB unless the environment overrides it */
    if (getenv("MPIXFER_MAX_SYNC_MESSAGE") == NULL) {
        size_t big = (size_t)1 << 20;
        uint8_t *b = malloc(big + 1);
        CHECK(b);
        tst_pattern_fill(b, big + 1, (uint32_t)rank, 77, 0);
        CHECK_STATUS(mpixfer_notify_sync_message(S[0], prn, b, big + 1), MPIXFER_ERR_TOO_LARGE);
        CHECK_STATUS(mpixfer_notify_sync_message(S[1], rn, b, big + 1), MPIXFER_ERR_TOO_LARGE);
        CHECK_OK(mpixfer_notify_sync_message(S[1], rn, b, big));
        collect(ctx, R, &box, 1);
        CHECK(box.n == 1 && box.v[0].len == big);
        CHECK_PATTERN(box.v[0].data, big, rank, 77, 0);
        inbox_clear(&box);
        free(b);
    }
    tst_barrier_progress(ctx);
    expect_empty(R);

    /* ---- ordering: every sender sends NSEQ numbered messages to every receiver */
    CHECK_OK(mpixfer_bootstrap(ctx));
    int nsend = size * KS;
    uint8_t mbuf[64];
    for (int i = 0; i < NSEQ; i++)
        for (int r = 0; r < size; r++) {
            char to[32];
            tst_name(to, sizeof to, "msg_R", (rank + r) % size);
            for (int k = 0; k < KS; k++) {
                size_t l = make_msg(mbuf, rank * KS + k, i);
                CHECK_OK(mpixfer_notify_sync_message(S[k], to, mbuf, l));
            }
        }
    collect(ctx, R, &box, (size_t)nsend * NSEQ);
    CHECK(box.n == (size_t)nsend * NSEQ);
    int *next = calloc((size_t)nsend, sizeof *next);
    for (size_t j = 0; j < box.n; j++) {
        const mpixfer_sync_message_t *m = &box.v[j];
        int sr = -1, sk = -1;
        CHECK_MSG(sscanf(m->agent_name, "msg_S%d_%d", &sr, &sk) == 2, "sender %s", m->agent_name);
        CHECK(sr >= 0 && sr < size && sk >= 0 && sk < KS);
        int gs = sr * KS + sk;
        CHECK(m->len >= 8);
        uint32_t seq, snd;
        memcpy(&seq, m->data, 4);
        memcpy(&snd, (uint8_t *)m->data + 4, 4);
        CHECK(snd == (uint32_t)gs);
        CHECK_MSG(seq == (uint32_t)next[gs], "from %s: got message %u, expected %d",
                  m->agent_name, seq, next[gs]);
        size_t l = make_msg(mbuf, gs, (int)seq);
        CHECK(m->len == l && memcmp(m->data, mbuf, l) == 0);
        next[gs]++;
    }
    for (int s = 0; s < nsend; s++)
        CHECK(next[s] == NSEQ);
    free(next);
    inbox_clear(&box);
    tst_barrier_progress(ctx);
    expect_empty(R);
    for (int k = 0; k < KS; k++)
        expect_empty(S[k]);

    for (int k = 0; k < KS; k++)
        CHECK_OK(mpixfer_agent_destroy(S[k]));
    CHECK_OK(mpixfer_agent_destroy(R));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(box.v);
    return tst_finish("test_sync_message");
}
