/*
 * Telemetry (issue 16): the counters equal what moved.
 *
 * Agent A of every rank makes a known set of transfers, each byte checked after it: WRITEs
 * and READs of known sizes to B of this process (local copies), to the peer's B (RMA, or
 * messages under MPIXFER_DATA_PATH=messages), into the peer's arena block and, with emulated
 * VRAM (MPIXFER_GPU_EMULATE=1), into the peer's VRAM (the staged path); one request of 100
 * pairs (queued, issued by progress); sync messages with requests and by notify; two
 * submits that fail. Where the peer is reached by the staged path, a known number of
 * requests fail: one into an agent the peer destroyed (MPIXFER_ERR_NOT_FOUND, its sync
 * message never sent) and one into a peer that stopped calling the library
 * (MPIXFER_ERR_TIMEOUT after the stall timeout). Then 4 threads share one multi_thread
 * agent with a progress thread. Every counter of every agent must equal what the test
 * counted, the histograms' counts the requests, their buckets consistent; the Prometheus
 * text is parsed back and every line checked against mpixfer_agent_stats(); bad inputs.
 */
#include <pthread.h>

#include "common.h"

#define REG (128u << 10) /* one region of a buffer */
#define STALL_MS 2000u
#define NTHREADS 4
#define TITERS 150
#define TSLICE (32u << 10)

static double dabs(double x)
{
    return x < 0 ? -x : x;
}

typedef struct {
    uint64_t requests, succeeded, failed, fail[MPIXFER_STATUS_SLOTS], submit_errors;
    uint64_t sent, received, sync_sent, sync_received, submitted_bytes;
} expect_t;

static void expect_add(expect_t *to, const expect_t *e)
{
    to->requests += e->requests;
    to->succeeded += e->succeeded;
    to->failed += e->failed;
    for (int i = 0; i < MPIXFER_STATUS_SLOTS; i++)
        to->fail[i] += e->fail[i];
    to->submit_errors += e->submit_errors;
    to->sent += e->sent;
    to->received += e->received;
    to->sync_sent += e->sync_sent;
    to->sync_received += e->sync_received;
    to->submitted_bytes += e->submitted_bytes;
}

/* One request of n pairs of len bytes: local block i at lbase + i*len, remote block i at
 * rbase + (n-1-i)*len (reversed, so no two pairs merge). Waits for it; counts it in e;
 * its final status must be @p want. */
static void xfer(mpixfer_agent_t *a, expect_t *e, mpixfer_op_t op, const char *remote,
                 mpixfer_mem_type_t rtype, uint8_t *lbase, uint64_t rbase, size_t n, size_t len,
                 const char *sync, mpixfer_status_t want)
{
    mpixfer_mem_desc_t *s = calloc(n, sizeof *s), *d = calloc(n, sizeof *d);
    CHECK(s != NULL && d != NULL);
    for (size_t i = 0; i < n; i++) {
        s[i] = tst_desc(lbase + i * len, len);
        d[i].addr = (uintptr_t)(rbase + (n - 1 - i) * len);
        d[i].len = len;
        d[i].device_id = 0;
    }
    mpixfer_transfer_request_t r;
    memset(&r, 0, sizeof r);
    r.op = op;
    r.src = tst_descs(MPIXFER_MEM_DRAM, s, n);
    r.dst = tst_descs(rtype, d, n);
    r.remote_name = remote;
    r.sync_message = sync;
    r.sync_message_len = sync ? strlen(sync) : 0;
    mpixfer_request_t *x = NULL;
    CHECK_OK(mpixfer_submit_transfer(a, &r, &x));
    mpixfer_state_t st = mpixfer_request_wait(x, 60000);
    CHECK_MSG(st != MPIXFER_STATE_IN_PROGRESS, "request to '%s' not done in 60 s", remote);
    mpixfer_status_t status = mpixfer_request_status(x);
    CHECK_MSG(status == want, "request to '%s' ended with %s, expected %s", remote,
              mpixfer_status_name(status), mpixfer_status_name(want));
    e->requests++;
    e->submitted_bytes += n * len;
    if (st == MPIXFER_STATE_SUCCESS) {
        e->succeeded++;
        if (op == MPIXFER_OP_WRITE)
            e->sent += n * len;
        else
            e->received += n * len;
        e->sync_sent += sync != NULL;
    } else {
        e->failed++;
        e->fail[-status]++;
    }
    mpixfer_request_free(x);
    free(s);
    free(d);
}

/* After a WRITE of contiguous pattern (prank, iter) from xfer's local side. */
static void check_written(const uint8_t *rbase, size_t n, size_t len, int prank, uint32_t iter)
{
    for (size_t i = 0; i < n; i++)
        CHECK_PATTERN(rbase + (n - 1 - i) * len, len, prank, iter, i * len);
}

/* After a READ of a remote side holding contiguous pattern (prank, iter). */
static void check_read(const uint8_t *lbase, size_t n, size_t len, int prank, uint32_t iter)
{
    for (size_t i = 0; i < n; i++)
        CHECK_PATTERN(lbase + i * len, len, prank, iter, (n - 1 - i) * len);
}

/* --------------------------------------------------------------- threads */

typedef struct {
    mpixfer_agent_t *m;
    const char *bname;
    uint8_t *mm, *bm; /* this thread's slices of M's and B's buffers */
    int rank, t;
    expect_t e;
} thr_t;

static void *thr_main(void *p)
{
    thr_t *a = p;
    for (uint32_t it = 0; it < TITERS; it++) {
        uint64_t r = tst_mix64(((uint64_t)a->rank << 40) ^ ((uint64_t)a->t << 20) ^ it);
        mpixfer_op_t op = (r & 1) ? MPIXFER_OP_WRITE : MPIXFER_OP_READ;
        size_t n = it % 10 == 9 ? 80 : 1 + (size_t)((r >> 1) % 3);
        size_t len = n == 80 ? 256 : 1 + (size_t)((r >> 8) % 8192);
        uint32_t iter = 100000u + (uint32_t)a->t * 1000u + it;
        if (op == MPIXFER_OP_WRITE) {
            tst_pattern_fill(a->mm, n * len, (uint32_t)a->rank, iter, 0);
            xfer(a->m, &a->e, op, a->bname, MPIXFER_MEM_DRAM, a->mm, (uintptr_t)a->bm, n, len, NULL,
                 MPIXFER_OK);
            check_written(a->bm, n, len, a->rank, iter);
        } else {
            tst_pattern_fill(a->bm, n * len, (uint32_t)a->rank, iter, 0);
            xfer(a->m, &a->e, op, a->bname, MPIXFER_MEM_DRAM, a->mm, (uintptr_t)a->bm, n, len, NULL,
                 MPIXFER_OK);
            check_read(a->mm, n, len, a->rank, iter);
        }
    }
    return NULL;
}

/* ------------------------------------------------------------ Prometheus */

/* The value of the sample line "<series> <value>"; false when there is none. */
static bool prom_find(const char *text, const char *series, const char **value_p)
{
    size_t n = strlen(series);
    for (const char *l = text; *l != '\0';) {
        const char *e = strchr(l, '\n');
        CHECK_MSG(e != NULL, "the text does not end with a newline");
        if ((size_t)(e - l) > n && strncmp(l, series, n) == 0 && l[n] == ' ') {
            *value_p = l + n + 1;
            return true;
        }
        l = e + 1;
    }
    return false;
}

static uint64_t prom_u64(const char *text, const char *series)
{
    const char *v;
    CHECK_MSG(prom_find(text, series, &v), "no line for %s", series);
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    CHECK_MSG(*end == '\n', "value of %s is not an integer", series);
    return x;
}

static void prom_expect(const char *text, const char *name, const char *label, uint64_t want)
{
    char series[512];
    snprintf(series, sizeof series, "%s{agent=\"%s\"}", name, label);
    uint64_t got = prom_u64(text, series);
    CHECK_MSG(got == want, "%s = %llu, expected %llu", series, (unsigned long long)got,
              (unsigned long long)want);
}

static void prom_histogram(const char *text, const char *name, const char *label,
                           const mpixfer_histogram_t *h)
{
    char prefix[512];
    int np = snprintf(prefix, sizeof prefix, "%s_bucket{agent=\"%s\",le=\"", name, label);
    uint64_t prev = 0;
    int nb = 0;
    double prev_le = 0;
    for (const char *l = text; *l != '\0'; l = strchr(l, '\n') + 1) {
        if (strncmp(l, prefix, (size_t)np) != 0)
            continue;
        const char *q = strchr(l + np, '"');
        CHECK(q != NULL && q[1] == '}' && q[2] == ' ');
        char *end;
        uint64_t v = strtoull(q + 3, &end, 10);
        CHECK(*end == '\n');
        CHECK_MSG(nb < MPIXFER_HIST_BUCKETS, "%s: more than %d buckets", name,
                  MPIXFER_HIST_BUCKETS);
        if (nb == MPIXFER_HIST_BUCKETS - 1) {
            CHECK(strncmp(l + np, "+Inf\"", 5) == 0);
        } else {
            double le = strtod(l + np, &end);
            CHECK(end == q);
            CHECK_MSG(dabs(le - (double)MPIXFER_HIST_BUCKET_NS(nb) * 1e-9) <= 1e-15 * le,
                      "%s: bucket %d has le %.12g", name, nb, le);
            CHECK(le > prev_le);
            prev_le = le;
        }
        CHECK_MSG(v >= prev, "%s: buckets not cumulative at %d", name, nb);
        CHECK_MSG(v - prev == h->buckets[nb], "%s{agent=\"%s\"}: bucket %d holds %llu, stats %llu",
                  name, label, nb, (unsigned long long)(v - prev),
                  (unsigned long long)h->buckets[nb]);
        prev = v;
        nb++;
    }
    CHECK_MSG(nb == MPIXFER_HIST_BUCKETS, "%s{agent=\"%s\"}: %d buckets", name, label, nb);
    CHECK(prev == h->count);
    char series[512];
    snprintf(series, sizeof series, "%s_count{agent=\"%s\"}", name, label);
    CHECK(prom_u64(text, series) == h->count);
    snprintf(series, sizeof series, "%s_sum{agent=\"%s\"}", name, label);
    const char *v;
    CHECK_MSG(prom_find(text, series, &v), "no line for %s", series);
    char *end;
    double sum = strtod(v, &end);
    CHECK(*end == '\n');
    CHECK_MSG(dabs(sum - (double)h->sum_ns * 1e-9) <= 1e-9 * sum + 1e-12,
              "%s = %.9f, stats %llu ns", series, sum, (unsigned long long)h->sum_ns);
}

/* Every agent line against its stats; @p label is the name as the text escapes it. */
static void prom_agent(const char *text, const char *label, const mpixfer_agent_stats_t *s)
{
    prom_expect(text, "mpixfer_agent_requests_total", label, s->requests);
    prom_expect(text, "mpixfer_agent_requests_succeeded_total", label, s->requests_succeeded);
    prom_expect(text, "mpixfer_agent_requests_failed_total", label, s->requests_failed);
    prom_expect(text, "mpixfer_agent_submit_errors_total", label, s->submit_errors);
    prom_expect(text, "mpixfer_agent_bytes_sent_total", label, s->bytes_sent);
    prom_expect(text, "mpixfer_agent_bytes_received_total", label, s->bytes_received);
    prom_expect(text, "mpixfer_agent_sync_messages_sent_total", label, s->sync_messages_sent);
    prom_expect(text, "mpixfer_agent_sync_messages_received_total", label,
                s->sync_messages_received);
    for (int v = -1; v > -MPIXFER_STATUS_SLOTS; v--) {
        const char *sname = mpixfer_status_name((mpixfer_status_t)v);
        char series[512];
        const char *val;
        snprintf(series, sizeof series, "mpixfer_agent_failures_total{agent=\"%s\",status=\"%s\"}",
                 label, sname);
        if (strcmp(sname, "MPIXFER_UNKNOWN") == 0) {
            CHECK(s->failures[-v] == 0);
            continue;
        }
        CHECK_MSG(prom_find(text, series, &val), "no line for %s", series);
        CHECK(prom_u64(text, series) == s->failures[-v]);
    }
    prom_histogram(text, "mpixfer_agent_post_time_seconds", label, &s->post_time);
    prom_histogram(text, "mpixfer_agent_transfer_time_seconds", label, &s->transfer_time);
}

/* Structure: one HELP and one TYPE per family, before its samples; every sample belongs to
 * a family declared so; names start with mpixfer_. */
static void prom_structure(const char *text, size_t len)
{
    char types[64][96];
    int ntypes = 0;
    CHECK(strlen(text) == len && len > 0 && text[len - 1] == '\n');
    for (const char *l = text; *l != '\0'; l = strchr(l, '\n') + 1) {
        const char *e = strchr(l, '\n');
        char line[1024];
        size_t n = (size_t)(e - l);
        CHECK(n < sizeof line);
        memcpy(line, l, n);
        line[n] = '\0';
        if (strncmp(line, "# HELP ", 7) == 0) {
            CHECK(strncmp(line + 7, "mpixfer_", 8) == 0);
            const char *next = e + 1;
            CHECK_MSG(strncmp(next, "# TYPE ", 7) == 0, "HELP without TYPE: %s", line);
            size_t nl = strcspn(line + 7, " ");
            CHECK(strncmp(next + 7, line + 7, nl) == 0 && next[7 + nl] == ' ');
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[96], type[32];
            CHECK(sscanf(line + 7, "%95s %31s", name, type) == 2);
            CHECK(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                  strcmp(type, "histogram") == 0);
            for (int i = 0; i < ntypes; i++)
                CHECK_MSG(strcmp(types[i], name) != 0, "family %s declared twice", name);
            CHECK(ntypes < 64);
            snprintf(types[ntypes++], sizeof types[0], "%s", name);
            continue;
        }
        CHECK_MSG(line[0] != '#', "stray comment: %s", line);
        size_t nn = strcspn(line, "{ ");
        char name[96];
        CHECK(nn < sizeof name);
        memcpy(name, line, nn);
        name[nn] = '\0';
        /* Samples of the family declared last. */
        CHECK(ntypes > 0);
        const char *fam = types[ntypes - 1];
        bool ok = strcmp(name, fam) == 0;
        static const char *const suffix[] = {"_bucket", "_sum", "_count"};
        for (int i = 0; i < 3 && !ok; i++) {
            size_t fl = strlen(fam);
            ok = strncmp(name, fam, fl) == 0 && strcmp(name + fl, suffix[i]) == 0;
        }
        CHECK_MSG(ok, "sample %s outside its family (%s)", name, fam);
    }
    CHECK(ntypes == 11 + 8 + 1 + 2);
}

/* ------------------------------------------------------------------ main */

static void check_stats(const char *who, const mpixfer_agent_stats_t *s, const expect_t *e)
{
    CHECK_MSG(s->requests == e->requests, "%s: requests %llu, expected %llu", who,
              (unsigned long long)s->requests, (unsigned long long)e->requests);
    CHECK_MSG(s->requests_succeeded == e->succeeded, "%s: succeeded %llu, expected %llu", who,
              (unsigned long long)s->requests_succeeded, (unsigned long long)e->succeeded);
    CHECK(s->requests_failed == e->failed);
    for (int i = 0; i < MPIXFER_STATUS_SLOTS; i++)
        CHECK_MSG(s->failures[i] == e->fail[i], "%s: failures[%d] %llu, expected %llu", who, i,
                  (unsigned long long)s->failures[i], (unsigned long long)e->fail[i]);
    CHECK(s->submit_errors == e->submit_errors);
    CHECK_MSG(s->bytes_sent == e->sent, "%s: bytes_sent %llu, expected %llu", who,
              (unsigned long long)s->bytes_sent, (unsigned long long)e->sent);
    CHECK(s->bytes_received == e->received);
    CHECK_MSG(s->sync_messages_sent == e->sync_sent, "%s: sync sent %llu, expected %llu", who,
              (unsigned long long)s->sync_messages_sent, (unsigned long long)e->sync_sent);
    CHECK_MSG(s->sync_messages_received == e->sync_received,
              "%s: sync received %llu, expected %llu", who,
              (unsigned long long)s->sync_messages_received, (unsigned long long)e->sync_received);
    /* Histograms: one post time per request, one transfer time per finished one. */
    CHECK(s->post_time.count == s->requests);
    CHECK(s->transfer_time.count == s->requests_succeeded + s->requests_failed);
    const mpixfer_histogram_t *hs[2] = {&s->post_time, &s->transfer_time};
    for (int k = 0; k < 2; k++) {
        uint64_t c = 0;
        for (int i = 0; i < MPIXFER_HIST_BUCKETS; i++)
            c += hs[k]->buckets[i];
        CHECK(c == hs[k]->count);
        CHECK((hs[k]->count == 0) == (hs[k]->sum_ns == 0));
        /* Every duration lies within its bucket: the sum too. */
        uint64_t lo = 0, hi = 0;
        for (int i = 0; i < MPIXFER_HIST_BUCKETS; i++) {
            lo += hs[k]->buckets[i] * (i == 0 ? 0 : MPIXFER_HIST_BUCKET_NS(i - 1));
            hi += hs[k]->buckets[i] *
                  (i == MPIXFER_HIST_BUCKETS - 1 ? UINT64_C(1) << 50 : MPIXFER_HIST_BUCKET_NS(i));
        }
        CHECK_MSG(hs[k]->sum_ns >= lo && hs[k]->sum_ns <= hi,
                  "%s: sum %llu ns outside [%llu, %llu]", who, (unsigned long long)hs[k]->sum_ns,
                  (unsigned long long)lo, (unsigned long long)hi);
    }
    /* A transfer lasts at least as long as its post. */
    CHECK(s->transfer_time.sum_ns >= s->post_time.sum_ns);
}

int main(int argc, char **argv)
{
    int provided = tst_init_multiple(&argc, &argv);
    double t_start = tst_now();
    int rank = tst_rank(), size = tst_size();
    int peer = (rank + 1) % size, prev = (rank + size - 1) % size;
    mpixfer_context_params_t params = MPIXFER_CONTEXT_PARAMS_INIT;
    params.arena_size = 1u << 20;
    params.stall_timeout_ms = STALL_MS;
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create_with_params(MPI_COMM_WORLD, &params, &ctx));

    char an[32], bn[32], pbn[32], vn[32], pvn[32];
    tst_name(an, sizeof an, "tel_A", rank);
    tst_name(bn, sizeof bn, "tel_B", rank);
    tst_name(pbn, sizeof pbn, "tel_B", peer);
    tst_name(vn, sizeof vn, "tel_V", rank);
    tst_name(pvn, sizeof pvn, "tel_V", peer);
    mpixfer_agent_t *A = tst_agent(ctx, an), *B = tst_agent(ctx, bn), *V = tst_agent(ctx, vn);
    expect_t ea = {0}, eb = {0};

    /* Which way the peer's memory is reached: the staged path (messages to a peer, or VRAM
     * without a CUDA-aware MPI) lets the target refuse, so failures are made there. */
    mpixfer_data_path_t dp = MPIXFER_DATA_PATH_RMA;
    CHECK_OK(mpixfer_context_data_path(ctx, peer, &dp));
    bool vram = mpixfer_context_gpu_path(ctx) != MPIXFER_GPU_PATH_NONE;
    bool staged_dram = size > 1 && dp == MPIXFER_DATA_PATH_MESSAGES;
    bool staged_vram = size > 1 && vram && mpixfer_context_gpu_path(ctx) == MPIXFER_GPU_PATH_STAGED;
    mpixfer_mem_type_t ftype = staged_dram ? MPIXFER_MEM_DRAM : MPIXFER_MEM_VRAM;
    bool failures = staged_dram || staged_vram;
    TST_LOG("telemetry: %d ranks, peer by %s, vram %s, failures %s\n", size,
            dp == MPIXFER_DATA_PATH_MESSAGES ? "messages" : "rma", vram ? "emulated" : "none",
            failures ? "made" : "not made (no staged path)");

    /* A: 2 regions (out, in). B: local in, remote in, out, stall scratch. Arena: remote in,
     * out. VRAM (emulated): remote in, out. V: one region, in the kind failures use. */
    uint8_t *abuf = tst_alloc(2 * REG), *bbuf = tst_alloc(4 * REG), *vbuf = tst_alloc(REG);
    uint8_t *gbuf = vram ? tst_alloc(2 * REG) : NULL;
    void *arena = NULL;
    CHECK_OK(mpixfer_mem_alloc(ctx, 2 * REG, &arena));
    CHECK_OK(tst_register(A, abuf, 2 * REG));
    CHECK_OK(tst_register(B, bbuf, 4 * REG));
    CHECK_OK(tst_register(B, arena, 2 * REG));
    if (vram) {
        mpixfer_mem_desc_t d = tst_desc(gbuf, 2 * REG);
        mpixfer_mem_descs_t l = tst_descs(MPIXFER_MEM_VRAM, &d, 1);
        CHECK_OK(mpixfer_register_memory(B, &l));
    }
    {
        mpixfer_mem_desc_t d = tst_desc(vbuf, REG);
        mpixfer_mem_descs_t l = tst_descs(failures ? ftype : MPIXFER_MEM_DRAM, &d, 1);
        CHECK_OK(mpixfer_register_memory(V, &l));
    }
    uint64_t pb, pa, pg, pv;
    {
        uint64_t *all = calloc((size_t)size, sizeof *all);
        tst_allgather_u64((uintptr_t)bbuf, all);
        pb = all[peer];
        tst_allgather_u64((uintptr_t)arena, all);
        pa = all[peer];
        tst_allgather_u64((uintptr_t)gbuf, all);
        pg = all[peer];
        tst_allgather_u64((uintptr_t)vbuf, all);
        pv = all[peer];
        free(all);
    }
    CHECK_OK(mpixfer_bootstrap(ctx));

    /* Bad inputs: named errors, outputs untouched. */
    {
        mpixfer_agent_stats_t s;
        memset(&s, 0xa5, sizeof s);
        CHECK_STATUS(mpixfer_agent_stats(NULL, &s), MPIXFER_ERR_INVALID_ARG);
        CHECK(s.requests == 0xa5a5a5a5a5a5a5a5ull);
        CHECK_STATUS(mpixfer_agent_stats(A, NULL), MPIXFER_ERR_INVALID_ARG);
        char *t = (char *)&s;
        size_t tl = 7;
        CHECK_STATUS(mpixfer_stats_prometheus(NULL, &t, &tl), MPIXFER_ERR_INVALID_ARG);
        CHECK_STATUS(mpixfer_stats_prometheus(ctx, NULL, &tl), MPIXFER_ERR_INVALID_ARG);
        CHECK(t == (char *)&s && tl == 7);
        /* A fresh agent: all zero. */
        CHECK_OK(mpixfer_agent_stats(A, &s));
        mpixfer_agent_stats_t z;
        memset(&z, 0, sizeof z);
        CHECK(memcmp(&s, &z, sizeof s) == 0);
    }
    /* Two submits that fail count as submit errors, not requests. */
    {
        mpixfer_mem_desc_t d = tst_desc(abuf, 8);
        mpixfer_transfer_request_t r;
        memset(&r, 0, sizeof r);
        r.op = MPIXFER_OP_WRITE;
        r.src = tst_descs(MPIXFER_MEM_DRAM, &d, 1);
        r.dst = tst_descs(MPIXFER_MEM_DRAM, &d, 1);
        r.remote_name = bn;
        CHECK_STATUS(mpixfer_submit_transfer(A, &r, NULL), MPIXFER_ERR_INVALID_ARG);
        mpixfer_request_t *x = NULL;
        r.remote_name = "tel_nobody";
        CHECK_STATUS(mpixfer_submit_transfer(A, &r, &x), MPIXFER_ERR_NOT_FOUND);
        CHECK(x == NULL);
        ea.submit_errors += 2;
    }

    /* Local: A -> B of this process (copies), WRITE and READ, sizes 8 B .. 64 KiB, one
     * request of 100 pairs (queued: issued by progress). */
    static const size_t shapes[][2] = {{1, 8}, {3, 1000}, {100, 512}, {1, 65536}};
    uint32_t iter = 1;
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++, iter += 2) {
        size_t n = shapes[k][0], len = shapes[k][1];
        tst_pattern_fill(abuf, n * len, (uint32_t)rank, iter, 0);
        xfer(A, &ea, MPIXFER_OP_WRITE, bn, MPIXFER_MEM_DRAM, abuf, (uintptr_t)bbuf, n, len,
             k == 1 ? "local write done" : NULL, MPIXFER_OK);
        check_written(bbuf, n, len, rank, iter);
        tst_pattern_fill(bbuf + 2 * REG, n * len, (uint32_t)rank, iter + 1, 0);
        xfer(A, &ea, MPIXFER_OP_READ, bn, MPIXFER_MEM_DRAM, abuf + REG, (uintptr_t)(bbuf + 2 * REG),
             n, len, NULL, MPIXFER_OK);
        check_read(abuf + REG, n, len, rank, iter + 1);
    }
    eb.sync_received += 1;
    CHECK_OK(mpixfer_notify_sync_message(A, bn, "hello B", 7));
    ea.sync_sent++;
    eb.sync_received++;

    /* The peer's B (its own B on one rank): foreign memory, the arena, emulated VRAM.
     * Collective steps: everybody WRITEs into its peer, then checks what its prev wrote;
     * everybody fills its out region, then READs its peer's. */
    struct {
        uint8_t *mine; /* my B's region pair (remote in, out) */
        uint64_t theirs;
        mpixfer_mem_type_t type;
        bool on;
    } kinds[3] = {{bbuf + REG, pb + REG, MPIXFER_MEM_DRAM, true},
                  {arena, pa, MPIXFER_MEM_DRAM, true},
                  {gbuf, pg, MPIXFER_MEM_VRAM, vram}};
    /* bbuf: remote in at REG, out at 2 REG; the others: remote in at 0, out at REG. */
    for (int k = 0; k < 3; k++) {
        if (!kinds[k].on)
            continue;
        uint8_t *in = kinds[k].mine, *out = k == 0 ? bbuf + 2 * REG : kinds[k].mine + REG;
        uint64_t rin = kinds[k].theirs, rout = k == 0 ? pb + 2 * REG : kinds[k].theirs + REG;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++, iter += 2) {
            size_t n = shapes[s][0], len = shapes[s][1];
            tst_pattern_fill(abuf, n * len, (uint32_t)rank, iter, 0);
            tst_pattern_fill(out, n * len, (uint32_t)rank, iter + 1, 0);
            tst_barrier_progress(ctx);
            bool sync = k == 0 && s == 0;
            xfer(A, &ea, MPIXFER_OP_WRITE, pbn, kinds[k].type, abuf, rin, n, len,
                 sync ? "peer write done" : NULL, MPIXFER_OK);
            xfer(A, &ea, MPIXFER_OP_READ, pbn, kinds[k].type, abuf + REG, rout, n, len, NULL,
                 MPIXFER_OK);
            check_read(abuf + REG, n, len, peer, iter + 1);
            tst_barrier_progress(ctx);
            check_written(in, n, len, prev, iter);
            if (sync)
                eb.sync_received++; /* from prev's A */
        }
    }
    CHECK_OK(mpixfer_notify_sync_message(A, pbn, "one", 3));
    CHECK_OK(mpixfer_notify_sync_message(A, pbn, "two", 3));
    ea.sync_sent += 2;
    eb.sync_received += 2;

    /* Failures, on the staged path: a target agent the peer destroyed refuses the chunks
     * (NOT_FOUND, and the request's sync message is not sent); a peer that stops calling
     * the library for longer than the stall timeout (rank 0 into rank 1 only: TIMEOUT). */
    if (failures) {
        CHECK_OK(mpixfer_agent_destroy(V));
        V = NULL;
        tst_barrier_progress(ctx);
        tst_pattern_fill(abuf, 4096, (uint32_t)rank, iter, 0);
        xfer(A, &ea, MPIXFER_OP_WRITE, pvn, ftype, abuf, pv, 2, 2048, "never sent",
             MPIXFER_ERR_NOT_FOUND);
        tst_barrier_progress(ctx);
        for (size_t i = 0; i < REG; i++)
            CHECK(vbuf[i] == 0); /* nothing reached the destroyed agent's memory */
        if (rank == 0) {
            uint64_t dst = staged_dram ? pb + 3 * REG : pg + REG;
            xfer(A, &ea, MPIXFER_OP_WRITE, pbn, ftype, abuf, dst, 1, 4096, NULL,
                 MPIXFER_ERR_TIMEOUT);
        } else if (rank == 1) {
            /* Away from the library: the chunk waits unanswered past the stall timeout. */
            usleep((STALL_MS + 1500) * 1000u);
        }
        tst_barrier_sleep();
        tst_barrier_progress(ctx); /* the late answer reaches rank 0 and is dropped */
    }

    /* Threads: 4 submitters on one multi_thread agent with a progress thread, local B. */
    mpixfer_agent_t *M = NULL;
    expect_t em = {0};
    uint8_t *mm = NULL, *bm = NULL;
    char mn[32];
    tst_name(mn, sizeof mn, "tel_M", rank);
    if (provided >= MPI_THREAD_MULTIPLE) {
        M = tst_agent_ex(ctx, mn, true, true, false);
        mm = tst_alloc(NTHREADS * TSLICE);
        bm = tst_alloc(NTHREADS * TSLICE);
        CHECK_OK(tst_register(M, mm, NTHREADS * TSLICE));
        CHECK_OK(tst_register(B, bm, NTHREADS * TSLICE));
        tst_load_local(M, B);
        pthread_t th[NTHREADS];
        thr_t ta[NTHREADS];
        for (int t = 0; t < NTHREADS; t++) {
            ta[t] = (thr_t){M, bn, mm + t * TSLICE, bm + t * TSLICE, rank, t, {0}};
            CHECK(pthread_create(&th[t], NULL, thr_main, &ta[t]) == 0);
        }
        for (int t = 0; t < NTHREADS; t++) {
            CHECK(pthread_join(th[t], NULL) == 0);
            expect_add(&em, &ta[t].e);
        }
    }

    /* Everything is done; B's inbox gets what was sent to it. */
    tst_barrier_progress(ctx);
    {
        size_t got = 0;
        double deadline = tst_now() + 30.0;
        while (got < eb.sync_received) {
            mpixfer_sync_message_t *msgs = NULL;
            size_t n = 0;
            CHECK_OK(mpixfer_get_notified_sync_messages(B, &msgs, &n));
            for (size_t i = 0; i < n; i++)
                CHECK(strcmp((const char *)msgs[i].data, "never sent") != 0);
            got += n;
            mpixfer_sync_messages_free(msgs, n);
            CHECK_MSG(tst_now() < deadline, "B got %zu of %llu sync messages", got,
                      (unsigned long long)eb.sync_received);
        }
        CHECK(got == eb.sync_received);
    }
    tst_barrier_progress(ctx);

    mpixfer_agent_stats_t sa, sb, sm;
    CHECK_OK(mpixfer_agent_stats(A, &sa));
    CHECK_OK(mpixfer_agent_stats(B, &sb));
    check_stats("A", &sa, &ea);
    check_stats("B", &sb, &eb);
    if (M != NULL) {
        CHECK_OK(mpixfer_agent_stats(M, &sm));
        check_stats("M", &sm, &em);
    }
    if (failures) {
        CHECK(sa.failures[-MPIXFER_ERR_NOT_FOUND] == 1);
        CHECK(sa.failures[-MPIXFER_ERR_TIMEOUT] == (rank == 0 ? 1u : 0u));
    }
    if (rank == 0 && failures) {
        /* The timed-out request lasted the stall timeout: in a bucket above 2^30 ns. */
        uint64_t slow = 0;
        for (int i = 22; i < MPIXFER_HIST_BUCKETS; i++)
            slow += sa.transfer_time.buckets[i];
        CHECK(slow >= 1);
        CHECK(sa.transfer_time.sum_ns >= (uint64_t)STALL_MS * 1000000u);
    }
    /* No duration exceeds the test's run time. */
    {
        uint64_t elapsed = (uint64_t)((tst_now() - t_start) * 1e9);
        for (int i = 1; i < MPIXFER_HIST_BUCKETS; i++)
            if (sa.transfer_time.buckets[i] > 0 || sa.post_time.buckets[i] > 0)
                CHECK_MSG(MPIXFER_HIST_BUCKET_NS(i - 1) < elapsed, "bucket %d above the run time",
                          i);
    }
    mpixfer_stats_t cs;
    CHECK_OK(mpixfer_context_stats(ctx, &cs));
    CHECK(cs.requests == ea.requests + em.requests);
    CHECK(cs.bytes == ea.submitted_bytes + em.submitted_bytes);

    /* The Prometheus text, parsed back; an agent whose name needs escaping. */
    char qn[32];
    snprintf(qn, sizeof qn, "q\"b\\s\nl%d", rank);
    char ql[48];
    snprintf(ql, sizeof ql, "q\\\"b\\\\s\\nl%d", rank);
    mpixfer_agent_t *Q = tst_agent(ctx, qn);
    char *text = NULL;
    size_t tlen = 0;
    CHECK_OK(mpixfer_stats_prometheus(ctx, &text, &tlen));
    CHECK(text != NULL);
    if (rank == 0 && getenv("TEL_PRINT"))
        fputs(text, stdout);
    prom_structure(text, tlen);
    {
        char series[64];
        snprintf(series, sizeof series, "mpixfer_requests_total{rank=\"%d\"}", rank);
        CHECK(prom_u64(text, series) == cs.requests);
        snprintf(series, sizeof series, "mpixfer_bytes_total{rank=\"%d\"}", rank);
        CHECK(prom_u64(text, series) == cs.bytes);
        snprintf(series, sizeof series, "mpixfer_local_copies_total{rank=\"%d\"}", rank);
        CHECK(prom_u64(text, series) == cs.local_copies);
        snprintf(series, sizeof series, "mpixfer_staged_chunks_total{rank=\"%d\"}", rank);
        CHECK(prom_u64(text, series) == cs.staged_chunks);
        snprintf(series, sizeof series, "mpixfer_rma_ops_total{rank=\"%d\"}", rank);
        CHECK(prom_u64(text, series) == cs.rma_ops);
        snprintf(series, sizeof series, "mpixfer_shm_copies_total{rank=\"%d\"}", rank);
        CHECK(prom_u64(text, series) == cs.shm_copies);
    }
    prom_agent(text, an, &sa);
    prom_agent(text, bn, &sb);
    if (M != NULL)
        prom_agent(text, mn, &sm);
    mpixfer_agent_stats_t sq;
    CHECK_OK(mpixfer_agent_stats(Q, &sq));
    CHECK(sq.requests == 0);
    prom_agent(text, ql, &sq);
    {
        /* Destroyed agents are not in it; every live one is. */
        char series[96];
        const char *v;
        snprintf(series, sizeof series, "mpixfer_agent_requests_total{agent=\"%s\"}", vn);
        CHECK(prom_find(text, series, &v) == (V != NULL));
        size_t nagents = 0;
        for (const char *p = text; (p = strstr(p, "\nmpixfer_agent_requests_total{")) != NULL; p++)
            nagents++;
        CHECK(nagents == 3u + (V != NULL) + (M != NULL));
    }
    mpixfer_free(text);

    tst_barrier_progress(ctx);
    CHECK_OK(mpixfer_agent_destroy(Q));
    if (M != NULL)
        CHECK_OK(mpixfer_agent_destroy(M));
    if (V != NULL)
        CHECK_OK(mpixfer_agent_destroy(V));
    CHECK_OK(mpixfer_agent_destroy(A));
    CHECK_OK(mpixfer_agent_destroy(B));
    CHECK_OK(mpixfer_mem_free(ctx, arena));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(abuf);
    free(bbuf);
    free(vbuf);
    free(gbuf);
    free(mm);
    free(bm);
    return tst_finish("test_telemetry");
}
