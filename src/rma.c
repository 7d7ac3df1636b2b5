/* The RMA data path: MPI_Put / MPI_Get on the dynamic window, a copy into a node peer's
 * mapped arena, or a direct copy when the target lives in this process. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Issues [local, +len) <-> [remote, +len) as MPI ops. With done_p, the last one is
 * request-based (MPI_Rput/MPI_Rget) and *done_p gets its request. */
static int issue_one(mpixfer_context_t *ctx, mpixfer_op_t op, int rank, uintptr_t local,
                     uintptr_t remote, size_t len, MPI_Request *done_p)
{
    /* MPI counts are int: split what a single op cannot carry. */
    while (len > 0) {
        size_t n = len < MPIXFER__MAX_OP_BYTES ? len : MPIXFER__MAX_OP_BYTES;
        bool last = n == len && done_p != NULL;
        int rc;
        /* On a dynamic window the displacement is the target's absolute address. */
        if (op == MPIXFER_OP_WRITE)
            rc = last ? MPI_Rput((const void *)local, (int)n, MPI_BYTE, rank, (MPI_Aint)remote,
                                 (int)n, MPI_BYTE, ctx->win, done_p)
                      : MPI_Put((const void *)local, (int)n, MPI_BYTE, rank, (MPI_Aint)remote,
                                (int)n, MPI_BYTE, ctx->win);
        else
            rc = last ? MPI_Rget((void *)local, (int)n, MPI_BYTE, rank, (MPI_Aint)remote, (int)n,
                                 MPI_BYTE, ctx->win, done_p)
                      : MPI_Get((void *)local, (int)n, MPI_BYTE, rank, (MPI_Aint)remote, (int)n,
                                MPI_BYTE, ctx->win);
        if (rc != MPI_SUCCESS)
            return rc;
        local += n;
        remote += n;
        len -= n;
    }
    return MPI_SUCCESS;
}

/* The MPI op held back by mpixfer__rma_issue until it knows whether it is the last. */
typedef struct {
    uintptr_t local, remote;
    size_t len;
} held_op_t;

static mpixfer_status_t issue_held(mpixfer_context_t *ctx, mpixfer_op_t op, int rank,
                                   const held_op_t *h, MPI_Request *done_p)
{
    int rc = issue_one(ctx, op, rank, h->local, h->remote, h->len, done_p);
    if (rc != MPI_SUCCESS) {
        LOG_ERROR("%s of [%#lx, +%zu) at rank %d failed", op == MPIXFER_OP_WRITE ? "put" : "get",
                  (unsigned long)h->remote, h->len, rank);
        return MPIXFER__MPI_ERR(op == MPIXFER_OP_WRITE ? "MPI_Put" : "MPI_Get", rc);
    }
    return MPIXFER_OK;
}

mpixfer_status_t mpixfer__rma_issue(mpixfer_context_t *ctx, mpixfer_op_t op, int rank,
                                    const mpixfer_mem_desc_t *src, const mpixfer_mem_desc_t *dst,
                                    size_t count, bool device, size_t *mpi_ops_p,
                                    MPI_Request *done_p, mpixfer_stats_t *counts)
{
    size_t i = 0, mpi_ops = 0;
    held_op_t held = {0, 0, 0};
    mpixfer_status_t st;
    /* Where RMA completes inside the call, the last op needs no request to be tested. */
    MPI_Request *last_p = ctx->peer_path != NULL && rank != ctx->rank &&
                                  (ctx->peer_path[rank] & MPIXFER__PATH_SYNC_RMA)
                              ? NULL
                              : done_p;

    *done_p = MPI_REQUEST_NULL;
    while (i < count) {
        uintptr_t s = src[i].addr, d = dst[i].addr;
        size_t len = src[i].len;

        /* Pairs contiguous on both sides become one op: KV blocks of one sequence are
         * often adjacent in both pools. */
        while (i + 1 < count && src[i + 1].addr == s + len && dst[i + 1].addr == d + len)
            len += src[++i].len;
        i++;

        if (rank == ctx->rank) {
            /* Host or device on either side: the copy routine tells them apart. */
            st = op == MPIXFER_OP_WRITE ? mpixfer__copy((void *)d, (const void *)s, len, device)
                                        : mpixfer__copy((void *)s, (const void *)d, len, device);
            if (st != MPIXFER_OK)
                goto out;
            counts->local_copies++;
            continue;
        }
        if (ctx->arena != NULL) {
            /* A node peer's arena is mapped here: copy, no MPI call. */
            void *p = mpixfer__arena_map(ctx, rank, d, len);
            if (p != NULL) {
                if (op == MPIXFER_OP_WRITE)
                    mpixfer__host_copy(p, (const void *)s, len);
                else
                    mpixfer__host_copy((void *)s, p, len);
                counts->shm_copies++;
                continue;
            }
        }
        /* Each op leaves once the next is known, so the last one can carry the request
         * whose completion progress tests without blocking. */
        if (held.len > 0 && (st = issue_held(ctx, op, rank, &held, NULL)) != MPIXFER_OK)
            goto out;
        held = (held_op_t){s, d, len};
        mpi_ops++;
        counts->rma_ops++;
    }
    /* MPI completes an Rput/Rget locally; at remote completion only the flush progress
     * makes once the request is done, which then has nothing left to wait for. */
    if (held.len > 0 && (st = issue_held(ctx, op, rank, &held, last_p)) != MPIXFER_OK) {
        *done_p = MPI_REQUEST_NULL;
        goto out;
    }
    if (mpi_ops < count)
        /* Copies through shared memory must be visible before the sync message that may
         * follow at once; MPI's own calls order themselves. */
        atomic_thread_fence(memory_order_seq_cst);
    st = MPIXFER_OK;
out:
    *mpi_ops_p = mpi_ops;
    return st;
}

mpixfer_status_t mpixfer__rma_flush(mpixfer_context_t *ctx, int rank)
{
    int rc;

    if (rank == ctx->rank || !ctx->has_win)
        return MPIXFER_OK;
    rc = MPI_Win_flush(rank, ctx->win);
    if (rc != MPI_SUCCESS)
        return MPIXFER__MPI_ERR("MPI_Win_flush", rc);
    return MPIXFER_OK;
}

/* ------------------------------------------------------------------ the path
 *
 * Peers of this context reached by RMA: agents of this process (copies), node peers'
 * arenas (copies into the mapped window, no MPI call) and everything else by MPI_Put /
 * MPI_Get on the dynamic window. The choice is per pair (mpixfer__rma_issue), so the three
 * share one path: one request may mix them. */

static void add_counts(mpixfer_context_t *ctx, const mpixfer_stats_t *c)
{
    ctx->stats.local_copies += c->local_copies;
    ctx->stats.shm_copies += c->shm_copies;
    ctx->stats.rma_ops += c->rma_ops;
}

/* Whether the pairs of x may be issued without the context's lock. Copies into node peers'
 * arenas make no MPI call: several threads copy at once. MPI RMA stays under the lock by
 * default: with Open MPI 4.1.4 (osc/rdma) two threads issuing puts at once moved half the
 * bytes of two threads taking turns (mpixfer-mt-bench, 1 MiB WRITEs: 8.7 against 17 GB/s),
 * so concurrent MPI calls are opt-in (MPIXFER_ISSUE=unlocked, at MPI_THREAD_MULTIPLE).
 * Copies into an agent of this process always stay under the lock, which keeps that
 * agent's memory registered meanwhile. */
static bool issue_unlocked_ok(const mpixfer_context_t *ctx, const mpixfer_request_t *x,
                              const mpixfer_mem_desc_t *dst, size_t n)
{
    if (ctx->issue_mode == 0 || x->target.rank == ctx->rank || x->device)
        return false;
    if (ctx->issue_mode == 2 && ctx->thread_level == MPI_THREAD_MULTIPLE)
        return true;
    if (ctx->arena == NULL)
        return false;
    for (size_t i = 0; i < n; i++)
        if (mpixfer__arena_map(ctx, x->target.rank, dst[i].addr, dst[i].len) == NULL)
            return false;
    return true;
}

/* Issues x's deferred lists (with or without the lock); lists_done then lets them go. */
static void issue_lists(mpixfer_context_t *ctx, mpixfer_request_t *x, mpixfer_stats_t *counts)
{
    size_t mpi_ops = 0;

    x->issue_err = mpixfer__rma_issue(ctx, x->op, x->target.rank, x->dsrc, x->ddst, x->dcount,
                                      x->device, &mpi_ops, &x->mpi_done, counts);
    x->mpi_issued = mpi_ops > 0;
}

/* Keeps the larger of x's list buffer and the spare for the next queued request. Lock
 * held. */
static void lists_done(mpixfer_context_t *ctx, mpixfer_request_t *x)
{
    if (ctx->spare_lists == NULL || ctx->spare_cap < x->dcap) {
        free(ctx->spare_lists);
        ctx->spare_lists = x->dsrc;
        ctx->spare_cap = x->dcap;
    } else {
        free(x->dsrc);
    }
    x->dsrc = x->ddst = NULL;
    x->dcap = 0;
}

/* Tests the request of a transfer's last MPI op; true when it is done (or failed: then
 * x->issue_err says how). */
static bool rma_done(mpixfer_request_t *x)
{
    int flag = 0, rc = MPI_Test(&x->mpi_done, &flag, MPI_STATUS_IGNORE);

    if (rc != MPI_SUCCESS) {
        LOG_ERROR("transfer to '%s': testing its last RMA op failed", x->remote_name);
        if (x->issue_err == MPIXFER_OK)
            x->issue_err = MPIXFER__MPI_ERR("MPI_Test", rc);
        x->mpi_done = MPI_REQUEST_NULL;
        return true;
    }
    return flag != 0;
}

static mpixfer_status_t rma_start(mpixfer_context_t *ctx, mpixfer_request_t *x,
                                  const mpixfer_transfer_request_t *req, bool *done_p,
                                  mpixfer_status_t *st_p)
{
    size_t n = req->src.count, mpi_ops = 0;
    mpixfer_stats_t counts = {0};
    mpixfer_status_t st;
    bool unlocked;

    if (n > MPIXFER__INLINE_DESCS) {
        /* Posting tens of thousands of blocks must not wait for their bytes: progress (wait,
         * a poll, the progress thread) issues them. One allocation holds both lists. */
        if (ctx->spare_lists != NULL && ctx->spare_cap >= n) {
            x->dsrc = ctx->spare_lists;
            x->dcap = ctx->spare_cap;
            ctx->spare_lists = NULL;
        } else {
            x->dsrc = malloc(2 * n * sizeof(*x->dsrc));
            x->dcap = n;
        }
        if (x->dsrc == NULL)
            return MPIXFER_ERR_NO_MEMORY;
        x->ddst = x->dsrc + n;
        x->dcount = n;
        memcpy(x->dsrc, req->src.descs, n * sizeof(*x->dsrc));
        memcpy(x->ddst, req->dst.descs, n * sizeof(*x->ddst));
        return MPIXFER_OK;
    }
    /* Copies into node peers' arenas (or any RMA with MPIXFER_ISSUE=unlocked) move without
     * the lock, so threads submitting at once overlap. Nobody else sees x before it is
     * queued, and its pins keep our regions registered meanwhile; the remote may be
     * invalidated meanwhile, so only x's copies are used from here. */
    unlocked = issue_unlocked_ok(ctx, x, req->dst.descs, n);
    if (unlocked)
        mpixfer__unlock(ctx);
    st = mpixfer__rma_issue(ctx, req->op, x->target.rank, req->src.descs, req->dst.descs, n,
                            x->device, &mpi_ops, &x->mpi_done, &counts);
    if (unlocked)
        mpixfer__lock(ctx);
    add_counts(ctx, &counts);
    x->mpi_issued = mpi_ops > 0;
    if (st != MPIXFER_OK) {
        /* Ops issued before the failure must finish before the caller reuses buffers. */
        if (mpi_ops > 0)
            mpixfer__rma_flush(ctx, x->target.rank);
        return st;
    }
    /* Already done (copies, or a last put or get that completed inside the MPI call, as
     * over shared memory): finish here, while what the ops just touched is still in the
     * caches. After a 1 MiB copy has evicted them, finishing later in wait cost ~1 us more
     * (one trip to memory per cache line of MPI's and our state). A transfer still on its
     * way (a NIC's RMA) is finished by progress: wait, a poll or the thread, with one
     * flush per target for all requests done by then. */
    if (!x->mpi_issued || x->mpi_done == MPI_REQUEST_NULL || rma_done(x)) {
        st = x->issue_err;
        if (x->mpi_issued) {
            mpixfer_status_t fst = mpixfer__rma_flush(ctx, x->target.rank);
            if (st == MPIXFER_OK)
                st = fst;
        }
        *st_p = st;
        *done_p = true;
    }
    return MPIXFER_OK;
}

/* All deferred lists are issued before any request is tested, so that one flush per
 * target then completes them all. */
static void rma_issue_deferred(mpixfer_context_t *ctx, mpixfer_request_t *x)
{
    mpixfer_stats_t counts = {0};

    if (x->issuing || x->dsrc == NULL)
        return;
    issue_lists(ctx, x, &counts);
    lists_done(ctx, x);
    add_counts(ctx, &counts);
}

/* A thread waiting on its own queued request issues it without the lock, rather than
 * progress under it, so several waiting threads move their bytes at once. */
static void rma_wait_issue(mpixfer_context_t *ctx, mpixfer_request_t *x)
{
    mpixfer_stats_t counts = {0};

    if (x->issuing || x->dsrc == NULL || x->stopping ||
        !issue_unlocked_ok(ctx, x, x->ddst, x->dcount))
        return;
    x->issuing = true;
    mpixfer__unlock(ctx);
    issue_lists(ctx, x, &counts);
    mpixfer__lock(ctx);
    lists_done(ctx, x);
    x->issuing = false;
    add_counts(ctx, &counts);
}

static bool rma_test(mpixfer_context_t *ctx, mpixfer_request_t *x, int *work,
                     mpixfer_status_t *st_p, bool *flush_p)
{
    (void)ctx;
    (void)work;
    /* A waiting thread issues it, or MPI still moves its bytes. */
    if (x->issuing || (x->mpi_done != MPI_REQUEST_NULL && !rma_done(x)))
        return false;
    *st_p = x->issue_err;
    *flush_p = x->mpi_issued; /* copies only: nothing to flush */
    return true;
}

/* Lists not issued yet are dropped: nothing of them moved. MPI has no way to take back an
 * operation it was given, so those complete (and are flushed) before x ends; a copy under
 * way in a waiting thread (issuing) is never interrupted and is short. A peer that does
 * not complete x's last MPI op by give_up is abandoned: its request released, no flush
 * (which would block on it). */
static bool rma_stop(mpixfer_context_t *ctx, mpixfer_request_t *x, bool give_up, bool *flush_p)
{
    *flush_p = false;
    if (x->issuing)
        return false;
    if (x->dsrc != NULL)
        lists_done(ctx, x);
    if (x->mpi_done != MPI_REQUEST_NULL && !rma_done(x)) {
        if (!give_up)
            return false;
        LOG_WARN("transfer to '%s': its last RMA op did not complete within the stall timeout "
                 "(%u ms); abandoned",
                 x->remote_name, ctx->params.stall_timeout_ms);
        MPI_Request_free(&x->mpi_done);
        x->stop_gave_up = true;
        return true;
    }
    *flush_p = x->mpi_issued;
    return true;
}

const mpixfer__path_t mpixfer__path_rma = {
    .name = "rma",
    .start = rma_start,
    .issue = rma_issue_deferred,
    .wait_issue = rma_wait_issue,
    .test = rma_test,
    .stop = rma_stop,
};
