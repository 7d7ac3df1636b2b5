/*
 * The on-node arena: mpixfer_mem_alloc/mpixfer_mem_free (bad sizes, exhaustion, foreign and
 * double frees, freeing registered memory), mpixfer_mem_window (bad input, no arena, plain
 * MPI_Put into a peer's block through it), then transfers arena<->arena (shared-memory
 * copies), foreign->arena, arena->foreign and foreign->foreign (dynamic window), WRITE and
 * READ, 64 scattered 16 KiB blocks per request, every byte checked, and the sync message
 * arriving only after the data. Last, 4 threads at once move their own slices between our
 * arena and the peer's (copies without the context lock), inline and queued requests.
 */
#include <pthread.h>

#include "common.h"

#define ARENA (8u << 20)
#define BLK (16u << 10)
#define NBLK 64
#define POOL (NBLK * BLK)

static void shuffle(int *p, int n, uint32_t seed)
{
    for (int i = 0; i < n; i++)
        p[i] = i;
    for (int i = n - 1; i > 0; i--) {
        seed = seed * 1664525u + 1013904223u;
        int j = (int)(seed % (uint32_t)(i + 1));
        int t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

static void alloc_errors(mpixfer_context_t *ctx)
{
    void *p = NULL, *q = NULL;
    CHECK_STATUS(mpixfer_mem_alloc(ctx, 0, &p), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_mem_alloc(ctx, 64, NULL), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_mem_alloc(NULL, 64, &p), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_mem_alloc(ctx, ARENA + 1, &p), MPIXFER_ERR_NO_MEMORY);
    CHECK_STATUS(mpixfer_mem_alloc(ctx, SIZE_MAX, &p), MPIXFER_ERR_NO_MEMORY);
    CHECK(p == NULL);

    /* Exhaustion: 1 MiB blocks until the arena is full, then the next one fails. */
    void *blocks[16];
    int n = 0;
    while (n < 16 && mpixfer_mem_alloc(ctx, 1u << 20, &blocks[n]) == MPIXFER_OK) {
        CHECK(((uintptr_t)blocks[n] & 255) == 0);
        memset(blocks[n], n, 1u << 20); /* the memory is really there */
        n++;
    }
    CHECK(n == (int)(ARENA >> 20));
    CHECK_STATUS(mpixfer_mem_alloc(ctx, 1, &p), MPIXFER_ERR_NO_MEMORY);
    for (int i = 0; i < n; i++)
        CHECK(((uint8_t *)blocks[i])[12345] == (uint8_t)i); /* no two blocks overlap */
    /* Free in an order that needs coalescing on both sides, then the whole arena again. */
    for (int i = 1; i < n; i += 2)
        CHECK_OK(mpixfer_mem_free(ctx, blocks[i]));
    for (int i = 0; i < n; i += 2)
        CHECK_OK(mpixfer_mem_free(ctx, blocks[i]));
    CHECK_OK(mpixfer_mem_alloc(ctx, ARENA, &p));
    CHECK_OK(mpixfer_mem_free(ctx, p));

    /* Bad frees. */
    int on_stack = 0;
    CHECK_STATUS(mpixfer_mem_free(ctx, &on_stack), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_mem_free(ctx, NULL), MPIXFER_ERR_INVALID_ARG);
    CHECK_OK(mpixfer_mem_alloc(ctx, 1000, &p));
    CHECK_STATUS(mpixfer_mem_free(ctx, (uint8_t *)p + 8), MPIXFER_ERR_NOT_FOUND);
    CHECK_OK(mpixfer_mem_free(ctx, p));
    CHECK_STATUS(mpixfer_mem_free(ctx, p), MPIXFER_ERR_NOT_FOUND);

    /* Registered memory cannot go back. */
    mpixfer_agent_t *a = tst_agent(ctx, NULL);
    CHECK_OK(mpixfer_mem_alloc(ctx, 4096, &q));
    CHECK_OK(tst_register(a, q, 4096));
    CHECK_STATUS(mpixfer_mem_free(ctx, q), MPIXFER_ERR_BUSY);
    CHECK_OK(tst_deregister(a, q, 4096));
    CHECK_OK(mpixfer_mem_free(ctx, q));
    CHECK_OK(mpixfer_agent_destroy(a));
}

/* ---- several threads at once into the peer's arena */
#define NTHREADS 4
#define SLICE (POOL / NTHREADS)

typedef struct {
    mpixfer_agent_t *agent;
    const char *remote;
    uint8_t *local, *back; /* our arena slice, our foreign slice (READ target) */
    uint64_t remote_addr;  /* our slice of the peer's arena */
    int id, rank;
} slice_job_t;

static void slice_xfer(slice_job_t *j, mpixfer_op_t op, uint8_t *buf, size_t nblk)
{
    size_t blk = SLICE / nblk;
    mpixfer_mem_desc_t s[128], d[128];
    for (size_t i = 0; i < nblk; i++) {
        s[i] = tst_desc(buf + i * blk, blk);
        d[i] = tst_desc((void *)(uintptr_t)(j->remote_addr + (nblk - 1 - i) * blk), blk);
    }
    mpixfer_transfer_request_t r;
    memset(&r, 0, sizeof r);
    r.op = op;
    r.src = tst_descs(MPIXFER_MEM_DRAM, s, nblk);
    r.dst = tst_descs(MPIXFER_MEM_DRAM, d, nblk);
    r.remote_name = j->remote;
    mpixfer_request_t *x = NULL;
    CHECK_OK(mpixfer_submit_transfer(j->agent, &r, &x));
    TST_WAIT_OK(x);
}

static void *slice_worker(void *arg)
{
    slice_job_t *j = arg;
    for (uint32_t it = 0; it < 40; it++) {
        /* 128 blocks: queued, issued by the waiting thread; 16 blocks: issued by submit. */
        size_t nblk = it % 2 ? 16 : 128;
        uint32_t tag = 5000 + (uint32_t)j->id * 100 + it;
        tst_pattern_fill(j->local, SLICE, (uint32_t)j->rank, tag, 0);
        memset(j->back, 0, SLICE);
        slice_xfer(j, MPIXFER_OP_WRITE, j->local, nblk);
        slice_xfer(j, MPIXFER_OP_READ, j->back, nblk);
        CHECK_PATTERN(j->back, SLICE, (uint32_t)j->rank, tag, 0);
    }
    return NULL;
}

static void threaded_slices(mpixfer_context_t *ctx, mpixfer_agent_t *as, const char *remote,
                            uint8_t *arena_src, uint8_t *foreign_src, uint64_t peer_arena_dst,
                            int rank)
{
    pthread_t th[NTHREADS];
    slice_job_t jobs[NTHREADS];
    for (int t = 0; t < NTHREADS; t++) {
        jobs[t] = (slice_job_t){as,
                                remote,
                                arena_src + (size_t)t * SLICE,
                                foreign_src + (size_t)t * SLICE,
                                peer_arena_dst + (uint64_t)t * SLICE,
                                t,
                                rank};
        CHECK(pthread_create(&th[t], NULL, slice_worker, &jobs[t]) == 0);
    }
    for (int t = 0; t < NTHREADS; t++)
        CHECK(pthread_join(th[t], NULL) == 0);
    tst_barrier_progress(ctx);
}

/* Plain MPI on the arena's own window (mpixfer_mem_window): every rank puts a pattern into
 * its peer's arena block through MPI_Put, at the displacement the owner computed from its
 * segment base, and checks what its own block received. */
static void raw_mpi_on_arena(mpixfer_context_t *ctx, uint8_t *mine, int peer, int prev)
{
    enum { N = 8192 };
    int size = tst_size();
    MPI_Win w = MPI_WIN_NULL;
    MPI_Group gw, gn;
    MPI_Aint qsize = 0;
    int qunit = 0, me_node = -1, peer_node = -1, rank = tst_rank();
    void *base = NULL;
    uint8_t *src = tst_alloc(N);

    CHECK_OK(mpixfer_mem_window(ctx, &w));
    CHECK(w != MPI_WIN_NULL);
    CHECK_MPI(MPI_Win_get_group(w, &gn));
    CHECK_MPI(MPI_Comm_group(MPI_COMM_WORLD, &gw));
    CHECK_MPI(MPI_Group_translate_ranks(gw, 1, &rank, gn, &me_node));
    CHECK_MPI(MPI_Group_translate_ranks(gw, 1, &peer, gn, &peer_node));
    MPI_Group_free(&gw);
    MPI_Group_free(&gn);
    CHECK(me_node != MPI_UNDEFINED && peer_node != MPI_UNDEFINED); /* one node here */
    CHECK_MPI(MPI_Win_shared_query(w, me_node, &qsize, &qunit, &base));
    CHECK(qunit == 1 && mine >= (uint8_t *)base &&
          mine + N <= (uint8_t *)base + qsize); /* the block lies in our segment */
    uint64_t disp = (uint64_t)(mine - (uint8_t *)base), *disps = calloc((size_t)size, 8);
    tst_allgather_u64(disp, disps);

    memset(mine, 0, N);
    tst_pattern_fill(src, N, (uint32_t)rank, 555, 0);
    tst_barrier_progress(ctx);
    CHECK_MPI(MPI_Win_lock_all(0, w));
    CHECK_MPI(MPI_Put(src, N, MPI_BYTE, peer_node, (MPI_Aint)disps[peer], N, MPI_BYTE, w));
    CHECK_MPI(MPI_Win_flush(peer_node, w));
    CHECK_MPI(MPI_Win_unlock_all(w));
    tst_barrier_progress(ctx);
    CHECK_PATTERN(mine, N, prev, 555, 0);
    free(disps);
    free(src);
}

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    int rank = tst_rank(), size = tst_size();
    int peer = (rank + 1) % size, prev = (rank + size - 1) % size;

    /* A context without an arena refuses to allocate. */
    {
        mpixfer_context_t *plain = NULL;
        void *p = NULL;
        CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &plain));
        CHECK_STATUS(mpixfer_mem_alloc(plain, 64, &p), MPIXFER_ERR_UNSUPPORTED);
        CHECK_STATUS(mpixfer_mem_free(plain, &p), MPIXFER_ERR_INVALID_ARG);
        MPI_Win w = MPI_WIN_NULL;
        CHECK_STATUS(mpixfer_mem_window(plain, &w), MPIXFER_ERR_UNSUPPORTED);
        CHECK(w == MPI_WIN_NULL); /* untouched on failure */
        CHECK_STATUS(mpixfer_mem_window(NULL, &w), MPIXFER_ERR_INVALID_ARG);
        CHECK_STATUS(mpixfer_mem_window(plain, NULL), MPIXFER_ERR_INVALID_ARG);
        CHECK_OK(mpixfer_context_destroy(plain));
    }

    mpixfer_context_params_t params = MPIXFER_CONTEXT_PARAMS_INIT;
    params.arena_size = ARENA;
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create_with_params(MPI_COMM_WORLD, &params, &ctx));
    alloc_errors(ctx);

    /* Two agents per rank (so one rank still has a peer): "src" and "dst". */
    char sn[32], dn[32], pdn[32];
    tst_name(sn, sizeof sn, "arena_src", rank);
    tst_name(dn, sizeof dn, "arena_dst", rank);
    tst_name(pdn, sizeof pdn, "arena_dst", peer);
    mpixfer_agent_t *as = tst_agent(ctx, sn), *ad = tst_agent(ctx, dn);
    uint8_t *pool[2][2]; /* [role: 0 src, 1 dst][kind: 0 arena, 1 foreign] */
    for (int role = 0; role < 2; role++) {
        void *p = NULL;
        CHECK_OK(mpixfer_mem_alloc(ctx, POOL, &p));
        pool[role][0] = p;
        pool[role][1] = tst_alloc(POOL);
        for (int k = 0; k < 2; k++)
            CHECK_OK(tst_register(role ? ad : as, pool[role][k], POOL));
    }
    uint64_t *dst_addr[2];
    for (int k = 0; k < 2; k++) {
        dst_addr[k] = calloc((size_t)size, 8);
        tst_allgather_u64((uintptr_t)pool[1][k], dst_addr[k]);
    }
    CHECK_OK(mpixfer_bootstrap(ctx));
    raw_mpi_on_arena(ctx, pool[1][0], peer, prev);

    int perm[NBLK];
    uint32_t iter = 0;
    for (int sk = 0; sk < 2; sk++)
        for (int dk = 0; dk < 2; dk++)
            for (int op = 0; op < 2; op++, iter++) {
                bool write = op == 0;
                shuffle(perm, NBLK, 77u + iter);
                mpixfer_mem_desc_t s[NBLK], d[NBLK];
                for (int i = 0; i < NBLK; i++) {
                    s[i] = tst_desc(pool[0][sk] + (size_t)i * BLK, BLK);
                    d[i].addr = (uintptr_t)(dst_addr[dk][peer] + (uint64_t)perm[i] * BLK);
                    d[i].len = BLK;
                    d[i].device_id = 0;
                }
                tst_pattern_fill(pool[0][sk], POOL, (uint32_t)rank, iter, 0);
                tst_pattern_fill(pool[1][dk], POOL, (uint32_t)rank, 100 + iter, 0);
                tst_barrier_progress(ctx);
                mpixfer_transfer_request_t r;
                memset(&r, 0, sizeof r);
                r.op = write ? MPIXFER_OP_WRITE : MPIXFER_OP_READ;
                r.src = tst_descs(MPIXFER_MEM_DRAM, s, NBLK);
                r.dst = tst_descs(MPIXFER_MEM_DRAM, d, NBLK);
                r.remote_name = pdn;
                r.sync_message = "x";
                r.sync_message_len = 1;
                mpixfer_request_t *x = NULL;
                mpixfer_stats_t before, after;
                CHECK_OK(mpixfer_context_stats(ctx, &before));
                CHECK_OK(mpixfer_submit_transfer(as, &r, &x));
                TST_WAIT_OK(x);
                CHECK_OK(mpixfer_context_stats(ctx, &after));
                CHECK(after.requests == before.requests + 1);
                CHECK(after.bytes == before.bytes + (uint64_t)NBLK * BLK);
                if (size > 1 && dk == 0) {
                    /* Into a node peer's arena: shared-memory copies, no MPI operation. */
                    CHECK(after.shm_copies > before.shm_copies);
                    CHECK(after.rma_ops == before.rma_ops);
                } else if (size > 1) {
                    /* Foreign memory of another process: the dynamic window. */
                    CHECK(after.rma_ops > before.rma_ops);
                    CHECK(after.shm_copies == before.shm_copies);
                } else {
                    CHECK(after.local_copies > before.local_copies);
                }
                /* The target: the message means the data is there. */
                double deadline = tst_now() + 30.0;
                size_t got = 0;
                while (got == 0) {
                    mpixfer_sync_message_t *m = NULL;
                    CHECK_MSG(tst_now() < deadline, "no sync message after 30 s");
                    CHECK_OK(mpixfer_get_notified_sync_messages(ad, &m, &got));
                    if (got) {
                        CHECK(got == 1 && m[0].len == 1);
                        if (write)
                            for (int i = 0; i < NBLK; i++) {
                                /* prev's block i landed in our slot perm_prev[i]; we know
                                 * prev used the same permutation. */
                                CHECK_PATTERN(pool[1][dk] + (size_t)perm[i] * BLK, BLK, prev,
                                              iter, (size_t)i * BLK);
                            }
                    }
                    mpixfer_sync_messages_free(m, got);
                }
                if (!write)
                    for (int i = 0; i < NBLK; i++)
                        CHECK_PATTERN(pool[0][sk] + (size_t)i * BLK, BLK, peer, 100 + iter,
                                      (size_t)perm[i] * BLK);
                tst_barrier_progress(ctx);
                if (!write) /* READ leaves the remote alone */
                    CHECK_PATTERN(pool[1][dk], POOL, rank, 100 + iter, 0);
                tst_barrier_progress(ctx);
            }

    /* The peer's threads write into our arena meanwhile: our agents stay until all are
     * done (threaded_slices ends with a barrier that keeps progress going). */
    threaded_slices(ctx, as, pdn, pool[0][0], pool[0][1], dst_addr[0][peer], rank);

    CHECK_OK(mpixfer_agent_destroy(as));
    CHECK_OK(mpixfer_agent_destroy(ad));
    for (int role = 0; role < 2; role++) {
        CHECK_OK(mpixfer_mem_free(ctx, pool[role][0]));
        free(pool[role][1]);
    }
    CHECK_OK(mpixfer_context_destroy(ctx));
    for (int k = 0; k < 2; k++)
        free(dst_addr[k]);
    return tst_finish("test_arena");
}
