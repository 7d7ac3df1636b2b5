/* On-node arena: memory from MPI_Win_allocate_shared, handed out by mpixfer_mem_alloc.
 *
 * Every process of a node maps every other one's segment, so a transfer whose remote range
 * lies in a node peer's arena is a memcpy through shared memory: no MPI call and no system
 * call per block (on a dynamic window each MPI_Put is a CMA system call, which is where
 * 4096 x 16 KiB reaches 3.6 GB/s against memcpy's 13.7 here). The segment is also attached
 * to the dynamic window once, so peers on other nodes reach it by RMA as usual and
 * registrations inside it cost no further attachment. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define ARENA_ALIGN ((size_t)256)

typedef struct {
    size_t off, len;
} span_t;

typedef struct {
    uint64_t base, size;
    unsigned char *map;
} arena_peer_t;

struct mpixfer__arena {
    MPI_Comm node_comm;
    MPI_Win shwin;
    bool has_shwin;
    unsigned char *base; /* this process's segment */
    size_t size;
    span_t *free_spans; /* sorted by offset, coalesced */
    size_t nfree, cap_free;
    span_t *used; /* sorted by offset */
    size_t nused, cap_used;
    /* Per context rank: the segment's address in its owner and our mapping of it (map
     * NULL when the rank is on another node). One struct per rank, not three arrays: every
     * transfer looks its target up here, one cache line instead of three. */
    arena_peer_t *peers;
};

static size_t span_lower(const span_t *v, size_t n, size_t off)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid].off < off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool span_insert(span_t **v, size_t *n, size_t *cap, size_t at, span_t s)
{
    if (*n == *cap) {
        size_t ncap = *cap ? 2 * *cap : 64;
        span_t *nv = realloc(*v, ncap * sizeof(*nv));
        if (nv == NULL)
            return false;
        *v = nv;
        *cap = ncap;
    }
    memmove(&(*v)[at + 1], &(*v)[at], (*n - at) * sizeof(**v));
    (*v)[at] = s;
    (*n)++;
    return true;
}

static void span_erase(span_t *v, size_t *n, size_t at)
{
    memmove(&v[at], &v[at + 1], (*n - at - 1) * sizeof(*v));
    (*n)--;
}

static void arena_free_struct(mpixfer__arena_t *a)
{
    free(a->free_spans);
    free(a->used);
    free(a->peers);
    free(a);
}

mpixfer_status_t mpixfer__arena_create(mpixfer_context_t *ctx, size_t size)
{
    mpixfer__arena_t *a = calloc(1, sizeof(*a));
    MPI_Info info = MPI_INFO_NULL;
    uint64_t mine[3];
    unsigned char *raw = NULL;
    uint64_t *all = NULL;
    int *node_ranks = NULL;
    mpixfer_status_t st = MPIXFER_OK;
    int rc, n = ctx->size;

    size = (size + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
    if (a == NULL)
        return MPIXFER_ERR_NO_MEMORY;
    a->node_comm = MPI_COMM_NULL;
    a->peers = calloc((size_t)n, sizeof(*a->peers));
    all = malloc(3 * sizeof(uint64_t) * (size_t)n);
    if (!a->peers || !all) {
        /* Collective below: the others would wait for us. Out of memory this early is
         * beyond saving the job, but we must not crash; return and let MPI report. */
        st = MPIXFER_ERR_NO_MEMORY;
        goto out;
    }

    rc = MPI_Comm_split_type(ctx->comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &a->node_comm);
    if (rc != MPI_SUCCESS) {
        st = MPIXFER__MPI_ERR("MPI_Comm_split_type", rc);
        goto out;
    }
    MPI_Comm_set_errhandler(a->node_comm, MPI_ERRORS_RETURN);
    /* Segments need not be contiguous across processes: lets MPI place each one on its
     * owner's NUMA node. */
    MPI_Info_create(&info);
    MPI_Info_set(info, "alloc_shared_noncontig", "true");
    /* MPI promises no alignment: take ARENA_ALIGN more and start at the first aligned byte. */
    rc = MPI_Win_allocate_shared((MPI_Aint)(size + ARENA_ALIGN), 1, info, a->node_comm, &raw,
                                 &a->shwin);
    MPI_Info_free(&info);
    if (rc != MPI_SUCCESS) {
        st = MPIXFER__MPI_ERR("MPI_Win_allocate_shared", rc);
        goto out;
    }
    a->has_shwin = true;
    a->base = (unsigned char *)(((uintptr_t)raw + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1));
    a->size = size;
    MPI_Win_set_errhandler(a->shwin, MPI_ERRORS_RETURN);

    mine[0] = (uint64_t)(uintptr_t)a->base;
    mine[1] = size;
    mine[2] = (uint64_t)(a->base - raw);
    rc = MPI_Allgather(mine, 3, MPI_UINT64_T, all, 3, MPI_UINT64_T, ctx->comm);
    if (rc != MPI_SUCCESS) {
        st = MPIXFER__MPI_ERR("MPI_Allgather", rc);
        goto out;
    }
    for (int r = 0; r < n; r++) {
        a->peers[r].base = all[3 * r];
        a->peers[r].size = all[3 * r + 1];
    }
    if ((st = mpixfer__node_ranks(ctx, a->node_comm, &node_ranks)) != MPIXFER_OK)
        goto out;
    for (int r = 0; r < n; r++) {
        MPI_Aint qsize = 0;
        int disp = 0;
        void *p = NULL;

        if (node_ranks[r] == MPI_UNDEFINED)
            continue;
        rc = MPI_Win_shared_query(a->shwin, node_ranks[r], &qsize, &disp, &p);
        if (rc != MPI_SUCCESS) {
            st = MPIXFER__MPI_ERR("MPI_Win_shared_query", rc);
            goto out;
        }
        /* MPI may round a segment up (Open MPI 4.1: to a page with noncontig); the part
         * in use must fit. */
        if ((uint64_t)qsize >= a->peers[r].size + all[3 * r + 2])
            a->peers[r].map = (unsigned char *)p + all[3 * r + 2];
        else
            LOG_WARN("arena of rank %d: MPI maps %zu bytes, %llu needed; it is reached by "
                     "RMA instead of shared memory",
                     r, (size_t)qsize, (unsigned long long)(a->peers[r].size + all[3 * r + 2]));
    }

    a->free_spans = malloc(sizeof(span_t));
    if (a->free_spans == NULL) {
        st = MPIXFER_ERR_NO_MEMORY;
        goto out;
    }
    a->free_spans[0] = (span_t){0, size};
    a->nfree = a->cap_free = 1;
    ctx->arena = a;
    /* One attachment for the whole segment; held until the context goes. */
    if (size > 0 && ctx->has_win) {
        st = mpixfer__registry_add(ctx, (uintptr_t)a->base, size, 1);
        if (st != MPIXFER_OK) {
            ctx->arena = NULL;
            goto out;
        }
    }
    LOG_INFO("arena: %zu bytes at %p, shared with the processes of this node", size,
             (void *)a->base);

out:
    free(all);
    free(node_ranks);
    if (st != MPIXFER_OK) {
        if (a->has_shwin)
            MPI_Win_free(&a->shwin);
        if (a->node_comm != MPI_COMM_NULL)
            MPI_Comm_free(&a->node_comm);
        arena_free_struct(a);
    }
    return st;
}

void mpixfer__arena_destroy(mpixfer_context_t *ctx)
{
    mpixfer__arena_t *a = ctx->arena;
    int rc;

    if (a == NULL)
        return;
    ctx->arena = NULL;
    if (a->nused > 0)
        LOG_WARN("arena: %zu blocks still allocated at context destruction", a->nused);
    /* The dynamic window's attachments were dropped by the caller already. */
    rc = MPI_Win_free(&a->shwin);
    if (rc != MPI_SUCCESS)
        MPIXFER__MPI_ERR("MPI_Win_free (arena)", rc);
    MPI_Comm_free(&a->node_comm);
    arena_free_struct(a);
}

void *mpixfer__arena_map(const mpixfer_context_t *ctx, int rank, uintptr_t addr, size_t len)
{
    const mpixfer__arena_t *a = ctx->arena;
    const arena_peer_t *p;
    uint64_t off;

    if (a == NULL)
        return NULL;
    p = &a->peers[rank];
    if (p->map == NULL || addr < p->base)
        return NULL;
    off = (uint64_t)addr - p->base;
    if (off > p->size || len > p->size - off)
        return NULL;
    return p->map + off;
}


mpixfer_status_t mpixfer_mem_window(mpixfer_context_t *ctx, MPI_Win *win_p)
{
    MPI_Win win = MPI_WIN_NULL;

    if (ctx == NULL || win_p == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "ctx or win_p is NULL");
    mpixfer__lock(ctx);
    if (ctx->arena != NULL && ctx->arena->has_shwin)
        win = ctx->arena->shwin;
    mpixfer__unlock(ctx);
    if (win == MPI_WIN_NULL)
        MPIXFER__FAIL(MPIXFER_ERR_UNSUPPORTED, "the context has no arena (set arena_size in "
                                               "mpixfer_context_params_t or MPIXFER_ARENA_SIZE)");
    *win_p = win;
    return MPIXFER_OK;
}

mpixfer_status_t mpixfer_mem_alloc(mpixfer_context_t *ctx, size_t len, void **ptr_p)
{
    mpixfer__arena_t *a;
    size_t need;

    if (ctx == NULL || ptr_p == NULL || len == 0)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "ctx or ptr_p is NULL, or len is 0");
    if (len > SIZE_MAX - ARENA_ALIGN)
        MPIXFER__FAIL(MPIXFER_ERR_NO_MEMORY, "%zu bytes cannot come from any arena", len);
    need = (len + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
    mpixfer__lock(ctx);
    a = ctx->arena;
    if (a == NULL) {
        mpixfer__unlock(ctx);
        MPIXFER__FAIL(MPIXFER_ERR_UNSUPPORTED, "the context has no arena (set arena_size in "
                                               "mpixfer_context_params_t or MPIXFER_ARENA_SIZE)");
    }
    /* First fit: KV pools are allocated once, in few large pieces. */
    for (size_t i = 0; i < a->nfree; i++) {
        span_t *f = &a->free_spans[i];
        span_t u;
        if (f->len < need)
            continue;
        u = (span_t){f->off, need};
        if (!span_insert(&a->used, &a->nused, &a->cap_used, span_lower(a->used, a->nused, u.off),
                         u)) {
            mpixfer__unlock(ctx);
            return MPIXFER_ERR_NO_MEMORY;
        }
        f->off += need;
        f->len -= need;
        if (f->len == 0)
            span_erase(a->free_spans, &a->nfree, i);
        mpixfer__unlock(ctx);
        *ptr_p = a->base + u.off;
        return MPIXFER_OK;
    }
    mpixfer__unlock(ctx);
    MPIXFER__FAIL(MPIXFER_ERR_NO_MEMORY, "arena exhausted: no free span of %zu bytes in %zu",
                  need, a->size);
}

/* Lock held. True if some agent has a registration overlapping [addr, addr+len). */
static bool registered_anywhere(mpixfer_context_t *ctx, uintptr_t addr, size_t len)
{
    for (mpixfer_agent_t *ag = ctx->agents; ag != NULL; ag = ag->next)
        for (size_t i = 0; i < ag->nregions; i++) {
            const mpixfer__region_t *r = ag->regions[i];
            if (r->addr < addr + len && addr < r->addr + r->len)
                return true;
        }
    return false;
}

mpixfer_status_t mpixfer_mem_free(mpixfer_context_t *ctx, void *ptr)
{
    mpixfer__arena_t *a;
    size_t off, i, at;
    span_t u;

    if (ctx == NULL || ptr == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "ctx or ptr is NULL");
    mpixfer__lock(ctx);
    a = ctx->arena;
    if (a == NULL || (unsigned char *)ptr < a->base || (unsigned char *)ptr >= a->base + a->size) {
        mpixfer__unlock(ctx);
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "%p is not arena memory", ptr);
    }
    off = (size_t)((unsigned char *)ptr - a->base);
    i = span_lower(a->used, a->nused, off);
    if (i == a->nused || a->used[i].off != off) {
        mpixfer__unlock(ctx);
        MPIXFER__FAIL(MPIXFER_ERR_NOT_FOUND, "%p is not an allocated arena block", ptr);
    }
    u = a->used[i];
    if (registered_anywhere(ctx, (uintptr_t)a->base + u.off, u.len)) {
        mpixfer__unlock(ctx);
        MPIXFER__FAIL(MPIXFER_ERR_BUSY, "arena block %p is still registered", ptr);
    }
    span_erase(a->used, &a->nused, i);
    /* Back into the free list, coalesced with its neighbours. */
    at = span_lower(a->free_spans, a->nfree, u.off);
    if (at > 0 && a->free_spans[at - 1].off + a->free_spans[at - 1].len == u.off) {
        a->free_spans[at - 1].len += u.len;
        if (at < a->nfree && u.off + u.len == a->free_spans[at].off) {
            a->free_spans[at - 1].len += a->free_spans[at].len;
            span_erase(a->free_spans, &a->nfree, at);
        }
    } else if (at < a->nfree && u.off + u.len == a->free_spans[at].off) {
        a->free_spans[at].off = u.off;
        a->free_spans[at].len += u.len;
    } else if (!span_insert(&a->free_spans, &a->nfree, &a->cap_free, at, u)) {
        /* Cannot track the span: leak it rather than corrupt the lists. */
        LOG_ERROR("out of memory returning %zu arena bytes; they stay unusable", u.len);
    }
    mpixfer__unlock(ctx);
    return MPIXFER_OK;
}
