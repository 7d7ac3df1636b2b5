/* Transfer requests: validate everything, issue, then flush and notify on completion. */
#define _GNU_SOURCE
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static mpixfer_status_t check_list(const mpixfer_mem_descs_t *l, const char *which)
{
    mpixfer_status_t st;

    if (l->count == 0 || l->descs == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "%s list is empty (count %zu, descs %p)", which,
                      l->count, (const void *)l->descs);
    st = mpixfer__check_mem_type(l->type);
    if (st != MPIXFER_OK)
        return st;
    return MPIXFER_OK;
}

static void unpin(mpixfer_request_t *x)
{
    for (size_t i = 0; i < x->npins; i++)
        x->pins[i]->pins--;
    if (x->pins != x->pins_inline)
        free(x->pins);
    x->pins = NULL;
    x->npins = x->cap_pins = 0;
}

static void request_release(mpixfer_request_t *x)
{
    mpixfer__staged_free(x->staged);
    free(x->dsrc);
    if (x->pins != x->pins_inline)
        free(x->pins);
    if (!x->name_borrowed && x->remote_name != x->name_inline)
        free(x->remote_name);
    free(x->sync);
    free(x);
}

/* Moves a request to its final state: sends the sync message after success, drops pins. */
static void complete(mpixfer_context_t *ctx, mpixfer_request_t *x, mpixfer_status_t st)
{
    if (st == MPIXFER_OK && x->has_sync) {
        st = mpixfer__ctrl_send(ctx, x->target, MPIXFER__CTRL_SYNC, x->agent->name, x->remote_name,
                                x->sync, x->sync_len);
        if (st != MPIXFER_OK)
            LOG_ERROR("transfer to '%s' done but its sync message failed: %s", x->remote_name,
                      mpixfer_strerror(st));
    }
    mpixfer__tel_complete(x, st);
    unpin(x);
    x->agent = NULL;
    atomic_store(&x->status, st);
    atomic_store(&x->state, st == MPIXFER_OK ? MPIXFER_STATE_SUCCESS : MPIXFER_STATE_FAILURE);
}

/* From now on x is stopped rather than tested; by stop_by_ns its path gives up. */
static void begin_stop(mpixfer_context_t *ctx, mpixfer_request_t *x, mpixfer_status_t why)
{
    x->stopping = true;
    x->stop_why = why;
    x->stop_by_ns =
        mpixfer__now_ns() + (int64_t)ctx->params.stall_timeout_ms * 1000000 + 50 * 1000000LL;
}

/* One look at queued x: a deadline that passed starts its stop; a stopping x is asked
 * whether it is quiescent, any other one tested. */
static void check_deadline(mpixfer_context_t *ctx, mpixfer_request_t *x, int64_t *now)
{
    if (x->deadline_ns == 0 || x->stopping)
        return;
    if (*now == 0)
        *now = mpixfer__now_ns();
    if (*now >= x->deadline_ns) {
        LOG_WARN("transfer to '%s' passed its deadline; stopping it", x->remote_name);
        begin_stop(ctx, x, MPIXFER_ERR_TIMEOUT);
    }
}

static bool request_ended(mpixfer_context_t *ctx, mpixfer_request_t *x, int64_t *now, int *work,
                          mpixfer_status_t *st_p, bool *flush_p)
{
    check_deadline(ctx, x, now);
    if (!x->stopping)
        return x->path->test(ctx, x, work, st_p, flush_p);
    if (*now == 0)
        *now = mpixfer__now_ns();
    if (!x->path->stop(ctx, x, *now >= x->stop_by_ns, flush_p))
        return false;
    *st_p = x->stop_gave_up ? MPIXFER_ERR_TIMEOUT : x->stop_why;
    return true;
}

int mpixfer__requests_progress(mpixfer_context_t *ctx, const mpixfer_agent_t *only)
{
    int flushed[16], nflushed = 0, done = 0;
    int64_t now = 0; /* read once per pass, only when a deadline or a stop needs it */
    mpixfer_request_t **pp = &ctx->pending_head, *prev = NULL;

    /* Everything deferred is issued before any flush, so one flush per target covers
     * every request. */
    for (mpixfer_request_t *x = ctx->pending_head; x != NULL; x = x->next_pending) {
        if (x->path->issue == NULL || (only != NULL && x->agent != only))
            continue;
        check_deadline(ctx, x, &now); /* one past its deadline starts nothing more */
        if (!x->stopping)
            x->path->issue(ctx, x);
    }

    while (*pp != NULL) {
        mpixfer_request_t *x = *pp;
        mpixfer_status_t st = MPIXFER_OK;
        bool flush = false;

        if ((only != NULL && x->agent != only) ||
            !request_ended(ctx, x, &now, &done, &st, &flush)) {
            prev = x;
            pp = &x->next_pending;
            continue;
        }
        /* One flush per target completes every request to it issued so far. */
        for (int i = 0; i < nflushed && flush; i++)
            flush = flushed[i] != x->target.rank;
        if (flush) {
            mpixfer_status_t fst = mpixfer__rma_flush(ctx, x->target.rank);
            if (fst == MPIXFER_OK && nflushed < 16)
                flushed[nflushed++] = x->target.rank;
            if (st == MPIXFER_OK)
                st = fst;
        }
        *pp = x->next_pending;
        if (ctx->pending_tail == x)
            ctx->pending_tail = prev;
        /* Read before completing: once the state is final the owner may free x at once
         * without the lock (mpixfer_request_free), unless it already orphaned it. */
        bool orphaned = x->orphaned;
        complete(ctx, x, st);
        if (orphaned)
            request_release(x);
        done++;
    }
    return done;
}

static void enqueue(mpixfer_context_t *ctx, mpixfer_request_t *x)
{
    if (x->name_borrowed) {
        /* The caller's string lives only as long as submit: keep our own copy. */
        strcpy(x->name_inline, x->remote_name);
        x->remote_name = x->name_inline;
        x->name_borrowed = false;
    }
    if (ctx->pending_tail)
        ctx->pending_tail->next_pending = x;
    else
        ctx->pending_head = x;
    ctx->pending_tail = x;
}

static mpixfer_status_t grow_pins(mpixfer_request_t *x)
{
    size_t cap = 2 * x->cap_pins;
    mpixfer__region_t **p =
        x->pins == x->pins_inline ? malloc(cap * sizeof(*p)) : realloc(x->pins, cap * sizeof(*p));
    if (p == NULL)
        return MPIXFER_ERR_NO_MEMORY;
    if (x->pins == x->pins_inline)
        memcpy(p, x->pins_inline, x->npins * sizeof(*p));
    x->pins = p;
    x->cap_pins = cap;
    return MPIXFER_OK;
}

/* Validates one side's descriptors; pins local regions into x->pins. */
static mpixfer_status_t validate(mpixfer_agent_t *agent, const mpixfer_transfer_request_t *req,
                                 mpixfer__remote_t *r, mpixfer_agent_t *local_target,
                                 mpixfer_request_t *x)
{
    const mpixfer_mem_desc_t *s = req->src.descs, *d = req->dst.descs;
    mpixfer__region_t *last = NULL;
    size_t n = req->src.count;
    mpixfer_status_t st;

    x->pins = x->pins_inline;
    x->cap_pins = sizeof x->pins_inline / sizeof x->pins_inline[0];
    for (size_t i = 0; i < n; i++) {
        mpixfer__region_t *reg = NULL;

        if (s[i].len != d[i].len)
            MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "pair %zu: src length %zu != dst length %zu", i,
                          s[i].len, d[i].len);
        if (s[i].len == 0 || s[i].addr + s[i].len < s[i].addr || d[i].addr + d[i].len < d[i].addr)
            MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "pair %zu is empty or wraps", i);
        /* The last region found usually holds the next block too. */
        if (last != NULL && s[i].addr >= last->addr &&
            s[i].addr + s[i].len <= last->addr + last->len)
            reg = last;
        else {
            st = mpixfer__agent_find_region(agent, req->src.type, &s[i], &reg);
            if (st != MPIXFER_OK)
                MPIXFER__FAIL(st, "src %zu [%#lx, +%zu) is %s agent '%s' registered", i,
                              (unsigned long)s[i].addr, s[i].len,
                              st == MPIXFER_ERR_NOT_FOUND ? "in no region" : "past the region",
                              agent->name);
        }
        if (reg != last) {
            if (x->npins == x->cap_pins && (st = grow_pins(x)) != MPIXFER_OK)
                return st;
            x->pins[x->npins++] = reg;
        }
        last = reg;

        st = mpixfer__desc_find(&r->desc, req->dst.type, &d[i]);
        if (st == MPIXFER_OK && local_target != NULL) {
            mpixfer__region_t *treg;
            /* Same process: the target's live registrations must hold it too. */
            st = mpixfer__agent_find_region(local_target, req->dst.type, &d[i], &treg);
        }
        if (st != MPIXFER_OK)
            MPIXFER__FAIL(st, "dst %zu [%#lx, +%zu) is %s '%s' advertised", i,
                          (unsigned long)d[i].addr, d[i].len,
                          st == MPIXFER_ERR_NOT_FOUND ? "in no region" : "past the region",
                          r->name);
    }
    return MPIXFER_OK;
}

/* Which path moves a validated request's bytes. */
static const mpixfer__path_t *choose_path(const mpixfer_context_t *ctx, const mpixfer__remote_t *r,
                                          const mpixfer_agent_t *local_target,
                                          const mpixfer_transfer_request_t *req, bool device)
{
    /* Another process's agent over a link: host memory by the link's own path, VRAM
     * staged through host memory over the link's messages. */
    if (r->link != NULL)
        return device ? &mpixfer__path_staged : &mpixfer__path_link;
    /* Peers on other nodes that the context reaches by messages. */
    if (local_target == NULL && ctx->peer_path != NULL &&
        MPIXFER__PATH(ctx, r->rank) == MPIXFER_DATA_PATH_MESSAGES)
        return &mpixfer__path_staged;
    /* VRAM without a CUDA-aware MPI. */
    if (device && ctx->gpu_path == MPIXFER_GPU_PATH_STAGED && local_target == NULL)
        return &mpixfer__path_staged;
    (void)req;
    return &mpixfer__path_rma;
}

static mpixfer_status_t submit(mpixfer_agent_t *agent, const mpixfer_transfer_request_t *req,
                               mpixfer_request_t **xfer_p)
{
    mpixfer_context_t *ctx;
    mpixfer__remote_t *r;
    mpixfer_agent_t *local_target = NULL;
    mpixfer_request_t *x;
    mpixfer_status_t st;
    int64_t t0_ns;
    uint64_t bytes = 0;

    if (agent == NULL || req == NULL || xfer_p == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "agent, req or xfer_p is NULL");
    ctx = agent->ctx;
    /* After a large transfer every line below is cold and each would be fetched in turn:
     * start them together (about 0.2 us of a 1 MiB transfer, measured). Only addresses
     * known without the lock: the agent's lists may change under another thread. */
    __builtin_prefetch(req->remote_name);
    __builtin_prefetch(req->src.descs);
    __builtin_prefetch(req->dst.descs);
    __builtin_prefetch(&ctx->lock);
    __builtin_prefetch(&ctx->stats);
    __builtin_prefetch(&ctx->peer_path);
    __builtin_prefetch(&agent->tel);
    t0_ns = mpixfer__now_ns(); /* telemetry: post and transfer time */
    if (req->op != MPIXFER_OP_READ && req->op != MPIXFER_OP_WRITE)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "op %d is neither READ nor WRITE", (int)req->op);
    if (req->remote_name == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "remote_name is NULL");
    if (req->sync_message == NULL && req->sync_message_len > 0)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "sync_message is NULL with a length");
    if (req->sync_message_len > ctx->params.max_sync_message)
        MPIXFER__FAIL(MPIXFER_ERR_TOO_LARGE, "sync message of %zu bytes exceeds the limit %zu",
                      req->sync_message_len, ctx->params.max_sync_message);
    if ((st = check_list(&req->src, "src")) != MPIXFER_OK ||
        (st = check_list(&req->dst, "dst")) != MPIXFER_OK)
        return st;
    if (req->src.count != req->dst.count)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "src has %zu descriptors, dst %zu", req->src.count,
                      req->dst.count);

    /* Not calloc: glibc's calloc bypasses the per-thread cache and took 0.5 us here once a
     * large transfer had cooled the caches; malloc reuses the request just freed. */
    x = malloc(sizeof(*x));
    if (x == NULL)
        return MPIXFER_ERR_NO_MEMORY;
    memset(x, 0, offsetof(mpixfer_request_t, name_inline));
    x->ctx = ctx;
    x->mpi_done = MPI_REQUEST_NULL;
    atomic_init(&x->state, MPIXFER_STATE_IN_PROGRESS);
    atomic_init(&x->status, MPIXFER_IN_PROGRESS);
    x->has_sync = req->sync_message != NULL;
    {
        /* A name that fits inline is copied only if the request outlives this call
         * (enqueue): most finish here, and each line written costs after a large copy. */
        size_t nlen = strlen(req->remote_name);
        if (nlen < sizeof x->name_inline) {
            x->remote_name = (char *)req->remote_name;
            x->name_borrowed = true;
        } else if ((x->remote_name = malloc(nlen + 1)) != NULL) {
            memcpy(x->remote_name, req->remote_name, nlen + 1);
        } else {
            st = MPIXFER_ERR_NO_MEMORY;
            goto err_x;
        }
    }
    if (x->has_sync) {
        x->sync = malloc(req->sync_message_len ? req->sync_message_len : 1);
        if (x->sync == NULL) {
            st = MPIXFER_ERR_NO_MEMORY;
            goto err_x;
        }
        memcpy(x->sync, req->sync_message, req->sync_message_len);
        x->sync_len = req->sync_message_len;
    }

    mpixfer__lock(ctx);
    r = mpixfer__find_remote(agent, req->remote_name);
    if (r != NULL && (st = mpixfer__remote_link_err(r)) != MPIXFER_OK) {
        LOG_WARN("agent '%s' cannot reach '%s': its link failed (%s)", agent->name,
                 req->remote_name, mpixfer_status_name(st));
        goto err_locked;
    }
    if (r == NULL || !r->loaded) {
        LOG_WARN("agent '%s' has not loaded '%s'%s", agent->name, req->remote_name,
                 r != NULL && r->pending ? " (its link is still connecting)" : "");
        st = MPIXFER_ERR_NOT_FOUND;
        goto err_locked;
    }
    if (r->link == NULL && r->rank == ctx->rank) {
        local_target = mpixfer__find_local_agent(ctx, r->name);
        if (local_target == NULL) {
            LOG_WARN("agent '%s' no longer exists in this process", r->name);
            st = MPIXFER_ERR_NOT_FOUND;
            goto err_locked;
        }
    }
    st = validate(agent, req, r, local_target, x);
    if (st != MPIXFER_OK)
        goto err_locked;
    for (size_t i = 0; i < x->npins; i++)
        x->pins[i]->pins++;
    x->agent = agent;
    x->target = (mpixfer__route_t){r->rank, r->link};
    ctx->stats.requests++;
    for (size_t i = 0; i < req->src.count; i++)
        bytes += req->src.descs[i].len;
    ctx->stats.bytes += bytes;

    x->op = req->op;
    x->device = req->src.type == MPIXFER_MEM_VRAM || req->dst.type == MPIXFER_MEM_VRAM;
    if (req->deadline_ms != 0)
        x->deadline_ns =
            t0_ns + (req->deadline_ms > INT64_MAX / 2000000 ? INT64_MAX / 2
                                                            : (int64_t)req->deadline_ms * 1000000);
    x->path = choose_path(ctx, r, local_target, req, x->device);
    {
        bool done = false;
        mpixfer_status_t fst = MPIXFER_OK;

        st = x->path->start(ctx, x, req, &done, &fst);
        if (st != MPIXFER_OK) {
            unpin(x);
            goto err_locked;
        }
        mpixfer__tel_submitted(agent, x, t0_ns, bytes);
        if (done) {
            complete(ctx, x, fst);
            if (x->name_borrowed)
                x->remote_name = (char *)""; /* the caller's string is not ours to keep */
            /* The wait that follows returns at once: poll the control channel here every
             * CTRL_POLL_EVERY-th time, so a caller that only submits and waits still
             * answers its peers (their staged transfers, descriptor requests). */
            if (++ctx->ctrl_skipped >= MPIXFER__CTRL_POLL_EVERY)
                mpixfer__progress_locked(ctx);
            mpixfer__unlock(ctx);
            *xfer_p = x;
            return MPIXFER_OK;
        }
    }
    mpixfer__tel_queued(agent, x);
    enqueue(ctx, x);
    mpixfer__unlock(ctx);
    *xfer_p = x;
    return MPIXFER_OK;

err_locked:
    mpixfer__unlock(ctx);
err_x:
    request_release(x);
    return st;
}

mpixfer_status_t mpixfer_submit_transfer(mpixfer_agent_t *agent,
                                         const mpixfer_transfer_request_t *req,
                                         mpixfer_request_t **xfer_p)
{
    mpixfer_status_t st = submit(agent, req, xfer_p);

    if (st != MPIXFER_OK && agent != NULL)
        mpixfer__tel_submit_error(agent, st);
    return st;
}

bool mpixfer_request_is_completed(mpixfer_request_t *xfer)
{
    return mpixfer_request_wait(xfer, 0) != MPIXFER_STATE_IN_PROGRESS;
}

int64_t mpixfer__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t mpixfer__realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

mpixfer_state_t mpixfer_request_wait(mpixfer_request_t *xfer, int64_t timeout_ms)
{
    int64_t deadline;
    mpixfer_context_t *ctx;

    if (xfer == NULL) {
        LOG_WARN("request is NULL");
        return MPIXFER_STATE_FAILURE;
    }
    if (atomic_load(&xfer->state) != MPIXFER_STATE_IN_PROGRESS)
        return (mpixfer_state_t)atomic_load(&xfer->state);
    ctx = xfer->ctx;
    deadline = timeout_ms > 0 ? mpixfer__now_ns() + timeout_ms * 1000000 : 0;
    for (;;) {
        mpixfer__lock(ctx);
        /* Our own request may move its bytes here (the RMA path's copies into arenas). */
        if (xfer->path != NULL && xfer->path->wait_issue != NULL &&
            atomic_load(&xfer->state) == MPIXFER_STATE_IN_PROGRESS &&
            (xfer->deadline_ns == 0 || mpixfer__now_ns() < xfer->deadline_ns))
            xfer->path->wait_issue(ctx, xfer);
        mpixfer__progress_locked(ctx);
        mpixfer__unlock(ctx);
        if (atomic_load(&xfer->state) != MPIXFER_STATE_IN_PROGRESS)
            return (mpixfer_state_t)atomic_load(&xfer->state);
        if (timeout_ms == 0 || (timeout_ms > 0 && mpixfer__now_ns() >= deadline))
            return MPIXFER_STATE_IN_PROGRESS;
        sched_yield();
    }
}

mpixfer_status_t mpixfer_request_cancel(mpixfer_request_t *xfer)
{
    mpixfer_context_t *ctx;

    if (xfer == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "request is NULL");
    if (atomic_load(&xfer->state) != MPIXFER_STATE_IN_PROGRESS)
        return MPIXFER_OK;
    ctx = xfer->ctx;
    mpixfer__lock(ctx);
    /* Completion happens under the lock: checked again here, it cannot race. No progress
     * first, so nothing more of it is issued. */
    if (atomic_load(&xfer->state) == MPIXFER_STATE_IN_PROGRESS && !xfer->stopping)
        begin_stop(ctx, xfer, MPIXFER_ERR_CANCELED);
    for (;;) {
        if (atomic_load(&xfer->state) != MPIXFER_STATE_IN_PROGRESS)
            break;
        mpixfer__progress_locked(ctx);
        if (atomic_load(&xfer->state) != MPIXFER_STATE_IN_PROGRESS)
            break;
        mpixfer__unlock(ctx);
        sched_yield();
        mpixfer__lock(ctx);
    }
    mpixfer__unlock(ctx);
    return xfer->stop_gave_up ? MPIXFER_ERR_TIMEOUT : MPIXFER_OK;
}

mpixfer_status_t mpixfer_request_status(const mpixfer_request_t *xfer)
{
    if (xfer == NULL)
        return MPIXFER_ERR_INVALID_ARG;
    return (mpixfer_status_t)atomic_load(&((mpixfer_request_t *)xfer)->status);
}

void mpixfer_request_free(mpixfer_request_t *xfer)
{
    mpixfer_context_t *ctx;

    if (xfer == NULL)
        return;
    if (atomic_load(&xfer->state) != MPIXFER_STATE_IN_PROGRESS) {
        request_release(xfer);
        return;
    }
    ctx = xfer->ctx;
    mpixfer__lock(ctx);
    /* Completion happens under the lock, so this check cannot race it. */
    if (atomic_load(&xfer->state) == MPIXFER_STATE_IN_PROGRESS) {
        xfer->orphaned = true;
        mpixfer__unlock(ctx);
        return;
    }
    mpixfer__unlock(ctx);
    request_release(xfer);
}
