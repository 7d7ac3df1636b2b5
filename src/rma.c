/* One-sided data movement: MPI_Put / MPI_Get on the dynamic window, or a direct copy when
 * the target lives in this process. */
#include <stdatomic.h>
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
