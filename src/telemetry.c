/* Telemetry: agents' counters (updated by the hooks in internal.h) read out as a struct or,
 * with the context's, as Prometheus text. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Every status must have its slot in mpixfer_agent_stats_t::failures. */
#define MPIXFER_TEL_SLOT_CHECK_(name, value, msg)                                                  \
    _Static_assert((value) > -MPIXFER_STATUS_SLOTS, #name " has no slot in failures[]");
MPIXFER_STATUS_LIST(MPIXFER_TEL_SLOT_CHECK_)
#undef MPIXFER_TEL_SLOT_CHECK_

void mpixfer__tel_submit_error(mpixfer_agent_t *a, mpixfer_status_t st)
{
    (void)st;
    mpixfer__lock(a->ctx);
    a->tel.submit_errors++;
    mpixfer__unlock(a->ctx);
}

static void hist_fill(mpixfer_histogram_t *h, const uint64_t *buckets, uint64_t sum_ns)
{
    h->count = 0;
    for (unsigned i = 0; i < MPIXFER_HIST_BUCKETS; i++) {
        h->buckets[i] = buckets[i];
        h->count += buckets[i];
    }
    h->sum_ns = sum_ns;
}

/* Lock held. */
static void snapshot(const mpixfer_agent_t *a, mpixfer_agent_stats_t *s)
{
    const mpixfer__tel_t *t = &a->tel;

    memset(s, 0, sizeof *s);
    s->requests = t->requests;
    s->requests_succeeded = t->succeeded;
    s->requests_failed = t->failed;
    memcpy(s->failures, t->failures, sizeof s->failures);
    s->submit_errors = t->submit_errors;
    s->bytes_sent = t->bytes_sent;
    s->bytes_received = t->bytes_received;
    s->sync_messages_sent = t->sync_sent;
    s->sync_messages_received = t->sync_received;
    hist_fill(&s->post_time, t->post, t->post_sum_ns);
    hist_fill(&s->transfer_time, t->xfer, t->xfer_sum_ns);
}

mpixfer_status_t mpixfer_agent_stats(mpixfer_agent_t *agent, mpixfer_agent_stats_t *stats_p)
{
    mpixfer_agent_stats_t s;

    if (agent == NULL || stats_p == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "agent or stats_p is NULL");
    mpixfer__lock(agent->ctx);
    snapshot(agent, &s);
    mpixfer__unlock(agent->ctx);
    *stats_p = s;
    return MPIXFER_OK;
}

/* ------------------------------------------------------------- Prometheus */

/* One agent as the text shows it: its name and counters, copied under the lock so the
 * formatting runs without it. */
typedef struct {
    char name[MPIXFER__NAME_MAX + 1];
    mpixfer_agent_stats_t s;
} agent_snap_t;

/* Seconds from ns, exactly and without the locale's decimal point: "0.000000256". */
static void put_seconds(FILE *f, uint64_t ns)
{
    char frac[16];
    int n = snprintf(frac, sizeof frac, "%09llu", (unsigned long long)(ns % 1000000000u));

    while (n > 1 && frac[n - 1] == '0')
        frac[--n] = '\0';
    fprintf(f, "%llu.%s", (unsigned long long)(ns / 1000000000u), frac);
}

/* A label value: backslash, double quote and newline escaped (text format 0.0.4). */
static void put_label(FILE *f, const char *v)
{
    for (; *v != '\0'; v++) {
        if (*v == '\\')
            fputs("\\\\", f);
        else if (*v == '"')
            fputs("\\\"", f);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void agent_sample(FILE *f, const char *name, const char *agent, uint64_t v)
{
    fprintf(f, "%s{agent=\"", name);
    put_label(f, agent);
    fprintf(f, "\"} %llu\n", (unsigned long long)v);
}

typedef struct {
    const char *name, *help;
    size_t off; /* of the uint64_t in mpixfer_agent_stats_t */
} agent_counter_t;

static const agent_counter_t agent_counters[] = {
    {"mpixfer_agent_requests_total", "Transfers this agent submitted successfully.",
     offsetof(mpixfer_agent_stats_t, requests)},
    {"mpixfer_agent_requests_succeeded_total", "Transfers of this agent that ended in SUCCESS.",
     offsetof(mpixfer_agent_stats_t, requests_succeeded)},
    {"mpixfer_agent_requests_failed_total", "Transfers of this agent that ended in FAILURE.",
     offsetof(mpixfer_agent_stats_t, requests_failed)},
    {"mpixfer_agent_submit_errors_total", "Submits of this agent that returned an error.",
     offsetof(mpixfer_agent_stats_t, submit_errors)},
    {"mpixfer_agent_bytes_sent_total", "Bytes of this agent's WRITEs that ended in SUCCESS.",
     offsetof(mpixfer_agent_stats_t, bytes_sent)},
    {"mpixfer_agent_bytes_received_total", "Bytes of this agent's READs that ended in SUCCESS.",
     offsetof(mpixfer_agent_stats_t, bytes_received)},
    {"mpixfer_agent_sync_messages_sent_total", "Sync messages this agent sent.",
     offsetof(mpixfer_agent_stats_t, sync_messages_sent)},
    {"mpixfer_agent_sync_messages_received_total", "Sync messages put in this agent's inbox.",
     offsetof(mpixfer_agent_stats_t, sync_messages_received)},
};

static void put_histogram(FILE *f, const char *name, const char *help, const agent_snap_t *a,
                          size_t n, size_t off)
{
    family(f, name, "histogram", help);
    for (size_t k = 0; k < n; k++) {
        const mpixfer_histogram_t *h = (const void *)((const char *)&a[k].s + off);
        uint64_t cum = 0;

        for (unsigned i = 0; i < MPIXFER_HIST_BUCKETS; i++) {
            cum += h->buckets[i];
            fprintf(f, "%s_bucket{agent=\"", name);
            put_label(f, a[k].name);
            fputs("\",le=\"", f);
            if (i + 1 < MPIXFER_HIST_BUCKETS)
                put_seconds(f, MPIXFER_HIST_BUCKET_NS(i));
            else
                fputs("+Inf", f);
            fprintf(f, "\"} %llu\n", (unsigned long long)cum);
        }
        fprintf(f, "%s_sum{agent=\"", name);
        put_label(f, a[k].name);
        fputs("\"} ", f);
        put_seconds(f, h->sum_ns);
        fputc('\n', f);
        fprintf(f, "%s_count{agent=\"", name);
        put_label(f, a[k].name);
        fprintf(f, "\"} %llu\n", (unsigned long long)h->count);
    }
}

static void put_text(FILE *f, int rank, const mpixfer_stats_t *cs, const agent_snap_t *a, size_t n)
{
    static const struct {
        const char *name, *type, *help;
        size_t off;
    } ctx_metrics[] = {
        {"mpixfer_requests_total", "counter", "Transfers submitted in this context.",
         offsetof(mpixfer_stats_t, requests)},
        {"mpixfer_bytes_total", "counter", "Bytes of the transfers submitted in this context.",
         offsetof(mpixfer_stats_t, bytes)},
        {"mpixfer_rma_ops_total", "counter", "MPI_Put/MPI_Get calls on the dynamic window.",
         offsetof(mpixfer_stats_t, rma_ops)},
        {"mpixfer_shm_copies_total", "counter", "Copies into or out of a node peer's arena.",
         offsetof(mpixfer_stats_t, shm_copies)},
        {"mpixfer_local_copies_total", "counter", "Copies between agents of this process.",
         offsetof(mpixfer_stats_t, local_copies)},
        {"mpixfer_staged_chunks_total", "counter", "Chunks sent by the staged protocol.",
         offsetof(mpixfer_stats_t, staged_chunks)},
        {"mpixfer_window_attachments", "gauge", "Ranges attached to the dynamic window now.",
         offsetof(mpixfer_stats_t, window_attachments)},
        {"mpixfer_links_accepted_total", "counter", "Link connections accepted.",
         offsetof(mpixfer_stats_t, links_accepted)},
        {"mpixfer_links_refused_total", "counter", "Link connections refused.",
         offsetof(mpixfer_stats_t, links_refused)},
        {"mpixfer_link_copies_total", "counter", "Pairs moved over links by cross-memory copies.",
         offsetof(mpixfer_stats_t, link_copies)},
        {"mpixfer_link_ops_total", "counter", "UCX RMA operations of link transfers.",
         offsetof(mpixfer_stats_t, link_ops)},
    };

    for (size_t i = 0; i < sizeof ctx_metrics / sizeof ctx_metrics[0]; i++) {
        family(f, ctx_metrics[i].name, ctx_metrics[i].type, ctx_metrics[i].help);
        fprintf(f, "%s{rank=\"%d\"} %llu\n", ctx_metrics[i].name, rank,
                (unsigned long long)*(const uint64_t *)((const char *)cs + ctx_metrics[i].off));
    }
    for (size_t i = 0; i < sizeof agent_counters / sizeof agent_counters[0]; i++) {
        family(f, agent_counters[i].name, "counter", agent_counters[i].help);
        for (size_t k = 0; k < n; k++)
            agent_sample(f, agent_counters[i].name, a[k].name,
                         *(const uint64_t *)((const char *)&a[k].s + agent_counters[i].off));
    }
    family(f, "mpixfer_agent_failures_total", "counter",
           "Transfers of this agent that ended in FAILURE, by status.");
    for (size_t k = 0; k < n; k++) {
#define MPIXFER_TEL_FAILURE_(sname, value, msg)                                                    \
    if ((value) < 0) {                                                                             \
        fputs("mpixfer_agent_failures_total{agent=\"", f);                                         \
        put_label(f, a[k].name);                                                                   \
        fprintf(f, "\",status=\"%s\"} %llu\n", #sname,                                             \
                (unsigned long long)a[k].s.failures[-(value)]);                                    \
    }
        MPIXFER_STATUS_LIST(MPIXFER_TEL_FAILURE_)
#undef MPIXFER_TEL_FAILURE_
        if (a[k].s.failures[0] > 0) {
            fputs("mpixfer_agent_failures_total{agent=\"", f);
            put_label(f, a[k].name);
            fprintf(f, "\",status=\"MPIXFER_UNKNOWN\"} %llu\n",
                    (unsigned long long)a[k].s.failures[0]);
        }
    }
    put_histogram(f, "mpixfer_agent_post_time_seconds",
                  "Time inside mpixfer_submit_transfer per request.", a, n,
                  offsetof(mpixfer_agent_stats_t, post_time));
    put_histogram(f, "mpixfer_agent_transfer_time_seconds",
                  "Time from submit to SUCCESS or FAILURE per request.", a, n,
                  offsetof(mpixfer_agent_stats_t, transfer_time));
}

mpixfer_status_t mpixfer_stats_prometheus(mpixfer_context_t *ctx, char **text_p, size_t *len_p)
{
    mpixfer_stats_t cs;
    agent_snap_t *a = NULL;
    size_t n = 0, k = 0, len = 0;
    char *text = NULL;
    FILE *f;
    mpixfer_status_t st;

    if (ctx == NULL || text_p == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "ctx or text_p is NULL");
    /* One snapshot of the context and its agents (whose list changes only under the lock:
     * create, destroy), then the formatting without holding up transfers. The lock is
     * recursive: mpixfer_context_stats takes it again. */
    mpixfer__lock(ctx);
    st = mpixfer_context_stats(ctx, &cs);
    if (st != MPIXFER_OK) {
        mpixfer__unlock(ctx);
        return st;
    }
    for (mpixfer_agent_t *ag = ctx->agents; ag != NULL; ag = ag->next)
        n++;
    if (n > 0 && (a = malloc(n * sizeof *a)) == NULL) {
        mpixfer__unlock(ctx);
        st = MPIXFER_ERR_NO_MEMORY;
        goto out;
    }
    for (mpixfer_agent_t *ag = ctx->agents; ag != NULL; ag = ag->next, k++) {
        snprintf(a[k].name, sizeof a[k].name, "%s", ag->name);
        snapshot(ag, &a[k].s);
    }
    mpixfer__unlock(ctx);

    f = open_memstream(&text, &len);
    if (f == NULL) {
        st = MPIXFER_ERR_NO_MEMORY;
        goto out;
    }
    put_text(f, ctx->rank, &cs, a, n);
    if (ferror(f)) {
        fclose(f);
        st = MPIXFER_ERR_NO_MEMORY;
        goto out;
    }
    if (fclose(f) != 0) {
        st = MPIXFER_ERR_NO_MEMORY;
        goto out;
    }
    *text_p = text;
    text = NULL;
    if (len_p != NULL)
        *len_p = len;
out:
    if (st != MPIXFER_OK)
        LOG_ERROR("out of memory writing the Prometheus text of %zu agents", n);
    free(text);
    free(a);
    return st;
}
