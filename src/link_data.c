/* The bytes of a link's transfers: cross-memory copies on one host, UCX UCP RMA otherwise.
 *
 * Same host (measured here, 2 processes, 1024 x 16 KiB): process_vm_writev/readv with one
 * call per 1024 blocks moves 7 GB/s with no work by the target, and the call returning
 * is remote completion. UCX 1.13's shared-memory transports cannot register malloc'd
 * memory, so its RMA there is emulated by the target's CPU (two copies). So a link uses
 * cross-memory copies when the peer proves they work: its WELCOME names a 16-byte random
 * cookie in its memory, which we must read back through process_vm_readv (same kernel,
 * same user, ptrace permitted: otherwise, or with MPIXFER_LINK_COPY=ucx, UCX).
 *
 * UCX: one UCP context and worker per mpixfer context, created when a link first needs
 * them; a server maps the merged ranges of an agent's regions once, when a peer first asks,
 * and sends the packed remote keys in the descriptor reply. WRITE/READ are ucp_put_nbx/
 * ucp_get_nbx per pair, then ucp_ep_flush_nbx: SUCCESS (and the sync message) only after
 * the flush, which is remote completion. Same-host peers use UCP_ERR_HANDLING_MODE_NONE,
 * the only mode in which UCX 1.13 offers its shared-memory transports; liveness then
 * comes from the TCP stream and the stall timeout. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include "internal.h"
#include "wire.h"

#define IOV_BATCH 1024

typedef struct {
    uint64_t base, len;
    ucp_rkey_h rkey;
} rkey_ent_t;

struct mpixfer__link_ucx {
    ucp_ep_h ep;
    rkey_ent_t *rkeys; /* sorted by base */
    size_t nrkeys;
    bool failed; /* the error handler ran */
};

typedef struct {
    uintptr_t base;
    size_t len;
    ucp_mem_h memh;
    void *packed;
    size_t packed_len;
} map_ent_t;

struct mpixfer__ucx {
    ucp_context_h uctx;
    ucp_worker_h worker;
    int efd; /* -1: no wakeup support, the thread polls every millisecond while busy */
    ucp_address_t *addr;
    size_t addr_len;
    map_ent_t *maps;
    size_t nmaps, cap_maps;
    unsigned busy;                    /* operations in flight */
    struct ep_closing *closing;       /* endpoints whose close goes on */
    struct mpixfer__link_op *orphans; /* given up on by their requests, UCX may still end */
};

/* An endpoint closed by flushing (same host: no forced close there) until UCX ends the
 * close: the keys of the peer stay valid while its operations may still run. */
struct ep_closing {
    ucs_status_ptr_t req;
    rkey_ent_t *rkeys;
    size_t nrkeys;
    struct ep_closing *next;
};

struct mpixfer__link_op {
    struct mpixfer__link_op *next; /* in orphans */
    mpixfer__link_t *link;
    bool done;
    ucs_status_t status;
    mpixfer_status_t err; /* a put/get failed while issuing */
    int64_t start_ns;
};

static int copy_mode(void)
{
    static int mode = -1; /* 0 auto, 1 cma, 2 ucx */
    if (mode < 0) {
        const char *s = getenv("MPIXFER_LINK_COPY");
        mode = s && strcmp(s, "ucx") == 0 ? 2 : s && strcmp(s, "cma") == 0 ? 1 : 0;
    }
    return mode;
}

/* ------------------------------------------------------------------- UCX */

static mpixfer_status_t ucx_ensure(mpixfer_context_t *ctx)
{
    struct mpixfer__ucx *u;
    ucp_config_t *cfg;
    ucp_params_t p = {0};
    ucp_worker_params_t wp = {0};
    ucs_status_t s;

    if (ctx->ucx != NULL)
        return MPIXFER_OK;
    u = calloc(1, sizeof(*u));
    if (u == NULL)
        return MPIXFER_ERR_NO_MEMORY;
    u->efd = -1;
    if ((s = ucp_config_read(NULL, NULL, &cfg)) != UCS_OK)
        goto err;
    p.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
    p.features = UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP;
    p.mt_workers_shared = 0;
    s = ucp_init(&p, cfg, &u->uctx);
    if (s != UCS_OK) {
        p.features = UCP_FEATURE_RMA; /* the thread then polls while operations run */
        s = ucp_init(&p, cfg, &u->uctx);
    }
    ucp_config_release(cfg);
    if (s != UCS_OK)
        goto err;
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SERIALIZED; /* every call is under the context lock */
    if ((s = ucp_worker_create(u->uctx, &wp, &u->worker)) != UCS_OK)
        goto err_ctx;
    if ((s = ucp_worker_get_address(u->worker, &u->addr, &u->addr_len)) != UCS_OK)
        goto err_worker;
    if ((p.features & UCP_FEATURE_WAKEUP) && ucp_worker_get_efd(u->worker, &u->efd) != UCS_OK)
        u->efd = -1;
    ctx->ucx = u;
    LOG_INFO("UCX %s ready for links (%zu-byte worker address)", ucp_get_version_string(),
             u->addr_len);
    return MPIXFER_OK;
err_worker:
    ucp_worker_destroy(u->worker);
err_ctx:
    ucp_cleanup(u->uctx);
err:
    free(u);
    MPIXFER__FAIL(MPIXFER_ERR_UNSUPPORTED, "UCX could not be set up for links: %s",
                  ucs_status_string(s));
}

static void rkeys_destroy(rkey_ent_t *k, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ucp_rkey_destroy(k[i].rkey);
    free(k);
}

/* Frees the orphaned operations UCX has ended; all of them with @p all (the worker is
 * gone: a flush callback that never ran never will). */
static void orphans_reap(struct mpixfer__ucx *u, bool all)
{
    for (struct mpixfer__link_op **pp = &u->orphans; *pp != NULL;) {
        struct mpixfer__link_op *op = *pp;
        if (!all && !op->done) {
            pp = &op->next;
            continue;
        }
        *pp = op->next;
        free(op);
    }
}

/* Ends the closes UCX has finished; all of them with @p all (the worker goes next). */
static void closing_reap(struct mpixfer__ucx *u, bool all)
{
    for (struct ep_closing **pp = &u->closing; *pp != NULL;) {
        struct ep_closing *c = *pp;
        if (!all && ucp_request_check_status(c->req) == UCS_INPROGRESS) {
            pp = &c->next;
            continue;
        }
        *pp = c->next;
        ucp_request_free(c->req);
        rkeys_destroy(c->rkeys, c->nrkeys);
        free(c);
    }
}

void mpixfer__link_data_fini(mpixfer_context_t *ctx)
{
    struct mpixfer__ucx *u = ctx->ucx;

    if (u == NULL)
        return;
    closing_reap(u, true);
    for (size_t i = 0; i < u->nmaps; i++) {
        ucp_rkey_buffer_release(u->maps[i].packed);
        ucp_mem_unmap(u->uctx, u->maps[i].memh);
    }
    free(u->maps);
    ucp_worker_release_address(u->worker, u->addr);
    ucp_worker_destroy(u->worker);
    orphans_reap(u, true);
    ucp_cleanup(u->uctx);
    free(u);
    ctx->ucx = NULL;
}

/* A mapping covering [b, e), made now if none does. */
static map_ent_t *map_range(struct mpixfer__ucx *u, uintptr_t b, uintptr_t e)
{
    ucp_mem_map_params_t mp = {0};
    map_ent_t m = {0};

    for (size_t i = 0; i < u->nmaps; i++)
        if (u->maps[i].base <= b && u->maps[i].base + u->maps[i].len >= e)
            return &u->maps[i];
    if (u->nmaps == u->cap_maps) {
        size_t cap = u->cap_maps ? 2 * u->cap_maps : 16;
        map_ent_t *p = realloc(u->maps, cap * sizeof(*p));
        if (p == NULL)
            return NULL;
        u->maps = p;
        u->cap_maps = cap;
    }
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    mp.address = (void *)b;
    mp.length = e - b;
    if (ucp_mem_map(u->uctx, &mp, &m.memh) != UCS_OK)
        return NULL;
    if (ucp_rkey_pack(u->uctx, m.memh, &m.packed, &m.packed_len) != UCS_OK) {
        ucp_mem_unmap(u->uctx, m.memh);
        return NULL;
    }
    m.base = b;
    m.len = e - b;
    u->maps[u->nmaps] = m;
    return &u->maps[u->nmaps++];
}

/* The UCX section of a descriptor reply: worker address, then per merged range of the
 * agent's regions its base, length and packed remote key. */
mpixfer_status_t mpixfer__link_data_export(mpixfer_context_t *ctx, const mpixfer_agent_t *a,
                                           void **buf_p, size_t *len_p)
{
    struct mpixfer__ucx *u;
    map_ent_t **used = NULL;
    size_t nused = 0, len, i;
    unsigned char *b, *p;
    mpixfer_status_t st;

    if ((st = ucx_ensure(ctx)) != MPIXFER_OK)
        return st;
    u = ctx->ucx;
    if (a->nregions > 0 && (used = malloc(a->nregions * sizeof(*used))) == NULL)
        return MPIXFER_ERR_NO_MEMORY;
    /* Regions are sorted by address: runs that overlap or touch are mapped as one. */
    for (i = 0; i < a->nregions;) {
        uintptr_t rb = a->regions[i]->addr, re = rb + a->regions[i]->len;
        size_t j = i + 1;
        for (; j < a->nregions && a->regions[j]->addr <= re; j++)
            if (a->regions[j]->addr + a->regions[j]->len > re)
                re = a->regions[j]->addr + a->regions[j]->len;
        if (a->regions[i]->type == MPIXFER_MEM_DRAM) {
            map_ent_t *m = map_range(u, rb, re);
            if (m == NULL) {
                free(used);
                MPIXFER__FAIL(MPIXFER_ERR_UNSUPPORTED, "ucp_mem_map of [%#lx, +%zu) failed",
                              (unsigned long)rb, (size_t)(re - rb));
            }
            if (nused == 0 || used[nused - 1] != m)
                used[nused++] = m;
        }
        i = j;
    }
    len = 4 + u->addr_len + 4;
    for (i = 0; i < nused; i++)
        len += 20 + used[i]->packed_len;
    if ((b = malloc(len)) == NULL) {
        free(used);
        return MPIXFER_ERR_NO_MEMORY;
    }
    mpixfer__put32(b, (uint32_t)u->addr_len);
    memcpy(b + 4, u->addr, u->addr_len);
    p = b + 4 + u->addr_len;
    mpixfer__put32(p, (uint32_t)nused);
    p += 4;
    for (i = 0; i < nused; i++) {
        mpixfer__put64(p, used[i]->base);
        mpixfer__put64(p + 8, used[i]->len);
        mpixfer__put32(p + 16, (uint32_t)used[i]->packed_len);
        memcpy(p + 20, used[i]->packed, used[i]->packed_len);
        p += 20 + used[i]->packed_len;
    }
    free(used);
    *buf_p = b;
    *len_p = len;
    return MPIXFER_OK;
}

static void ep_error(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    mpixfer__link_t *l = arg;
    (void)ep;
    LOG_WARN("UCX reports the link to '%s' failed: %s", l->peer_name, ucs_status_string(status));
    if (l->ucx != NULL)
        l->ucx->failed = true;
}

static int rkey_cmp(const void *a, const void *b)
{
    const rkey_ent_t *x = a, *y = b;
    return x->base < y->base ? -1 : x->base > y->base;
}

/* The peer's UCX section (from mpixfer__link_data_export): an endpoint and its keys. */
mpixfer_status_t mpixfer__link_data_import(mpixfer_context_t *ctx, mpixfer__link_t *l,
                                           const unsigned char *p, size_t n)
{
    struct mpixfer__link_ucx *lu;
    ucp_ep_params_t ep = {0};
    size_t alen, nr, off;
    mpixfer_status_t st;
    ucs_status_t s;

    if (n < 8 || (alen = mpixfer__get32(p)) > n - 8)
        return MPIXFER_ERR_BAD_DESC;
    nr = mpixfer__get32(p + 4 + alen);
    off = 8 + alen;
    if (nr > (n - off) / 20)
        return MPIXFER_ERR_BAD_DESC;
    if ((st = ucx_ensure(ctx)) != MPIXFER_OK)
        return st;
    if ((lu = calloc(1, sizeof(*lu))) == NULL ||
        (nr > 0 && (lu->rkeys = calloc(nr, sizeof(*lu->rkeys))) == NULL)) {
        free(lu);
        return MPIXFER_ERR_NO_MEMORY;
    }
    l->ucx = lu;
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                    UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.address = (const ucp_address_t *)(p + 4);
    ep.err_mode = l->same_host ? UCP_ERR_HANDLING_MODE_NONE : UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb = ep_error;
    ep.err_handler.arg = l;
    /* UCX parses the address: it came over the authenticated stream. */
    if ((s = ucp_ep_create(ctx->ucx->worker, &ep, &lu->ep)) != UCS_OK) {
        lu->ep = NULL;
        MPIXFER__FAIL(MPIXFER_ERR_UNREACHABLE, "ucp_ep_create to '%s': %s", l->peer_name,
                      ucs_status_string(s));
    }
    for (size_t i = 0; i < nr; i++) {
        size_t kl;
        if (n - off < 20 || (kl = mpixfer__get32(p + off + 16)) > n - off - 20)
            return MPIXFER_ERR_BAD_DESC;
        lu->rkeys[i].base = mpixfer__get64(p + off);
        lu->rkeys[i].len = mpixfer__get64(p + off + 8);
        if (ucp_ep_rkey_unpack(lu->ep, p + off + 20, &lu->rkeys[i].rkey) != UCS_OK)
            return MPIXFER_ERR_BAD_DESC;
        lu->nrkeys++;
        off += 20 + kl;
    }
    qsort(lu->rkeys, lu->nrkeys, sizeof(*lu->rkeys), rkey_cmp);
    return MPIXFER_OK;
}

void mpixfer__link_data_free(mpixfer_context_t *ctx, mpixfer__link_t *l)
{
    struct mpixfer__link_ucx *lu = l->ucx;
    ucs_status_ptr_t r = NULL;

    if (lu == NULL)
        return;
    if (lu->ep != NULL) {
        /* Forced where UCX allows it (peer error handling): it cancels what UCX holds and
         * completes locally. UCX refuses it (UCS_ERR_INVALID_PARAM) for an endpoint without
         * it (same host): such an endpoint used to stay open, and its error handler, whose
         * argument is l, ran after l was freed (ASan, test_link_netns_ucx). There the close
         * flushes, and goes on after we return. Once UCX accepts a close it calls the
         * error handler no more. */
        ucp_request_param_t prm = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                                   .flags = l->same_host ? 0 : UCP_EP_CLOSE_FLAG_FORCE};
        int64_t deadline = mpixfer__now_ns() + 100 * 1000000LL;
        r = ucp_ep_close_nbx(lu->ep, &prm);
        if (UCS_PTR_IS_ERR(r)) /* closed all the same: one that failed says so */
            LOG_DEBUG("closing the UCX endpoint to '%s': %s", l->peer_name,
                      ucs_status_string(UCS_PTR_STATUS(r)));
        while (!l->same_host && UCS_PTR_IS_PTR(r) &&
               ucp_request_check_status(r) == UCS_INPROGRESS && mpixfer__now_ns() < deadline)
            ucp_worker_progress(ctx->ucx->worker);
    }
    struct ep_closing *c = NULL;
    if (UCS_PTR_IS_PTR(r) && ucp_request_check_status(r) == UCS_INPROGRESS &&
        (c = malloc(sizeof(*c))) != NULL) {
        *c = (struct ep_closing){r, lu->rkeys, lu->nrkeys, ctx->ucx->closing};
        ctx->ucx->closing = c;
    } else {
        if (UCS_PTR_IS_PTR(r))
            ucp_request_free(r); /* released by UCX when the close ends */
        rkeys_destroy(lu->rkeys, lu->nrkeys);
    }
    free(lu);
    l->ucx = NULL;
}

void mpixfer__link_data_progress(mpixfer_context_t *ctx)
{
    if (ctx->ucx == NULL)
        return;
    while (ucp_worker_progress(ctx->ucx->worker) != 0)
        ;
    closing_reap(ctx->ucx, false);
    orphans_reap(ctx->ucx, false);
    for (mpixfer__link_t *l = ctx->links; l != NULL; l = l->next)
        if (!l->closed && l->ucx != NULL && l->ucx->failed)
            mpixfer__link_fail(ctx, l, MPIXFER_ERR_UNREACHABLE);
}

int mpixfer__link_data_wait_fd(mpixfer_context_t *ctx, int64_t *next_ns)
{
    struct mpixfer__ucx *u = ctx->ucx;

    if (u == NULL)
        return -1;
    if (u->efd >= 0) {
        ucs_status_t s = ucp_worker_arm(u->worker);
        if (s == UCS_OK)
            return u->efd;
        /* Events pending: progress at once. Not "now": the caller's clock reading is
         * older, so now rounded up to a whole millisecond of poll() per wakeup (1.1 ms for
         * every emulated put of a same-host UCX link). */
        *next_ns = 0;
        return -1;
    }
    /* No wakeup: poll the worker every millisecond (a peer's emulated RMA needs us). */
    if (*next_ns > mpixfer__now_ns() + 1000000)
        *next_ns = mpixfer__now_ns() + 1000000;
    return -1;
}

/* ------------------------------------------------------------------- CMA */

void mpixfer__link_data_probe(mpixfer_context_t *ctx, mpixfer__link_t *l, uint64_t cookie_addr,
                              const unsigned char cookie[16])
{
    unsigned char got[16];
    struct iovec lv = {got, sizeof got}, rv = {(void *)(uintptr_t)cookie_addr, sizeof got};

    (void)ctx;
    l->cma = false;
    if (copy_mode() == 2)
        return;
    if (process_vm_readv((pid_t)l->peer_pid, &lv, 1, &rv, 1, 0) == (ssize_t)sizeof got &&
        memcmp(got, cookie, sizeof got) == 0)
        l->cma = true;
    else if (copy_mode() == 1)
        LOG_WARN("MPIXFER_LINK_COPY=cma, but cross-memory copies to '%s' (pid %u) do not work "
                 "(%s); using UCX",
                 l->peer_name, l->peer_pid, strerror(errno));
}

/* Every byte of the pairs, by as few system calls as the iovec limit allows. */
static mpixfer_status_t cma_move(mpixfer__link_t *l, mpixfer_op_t op, const mpixfer_mem_desc_t *src,
                                 const mpixfer_mem_desc_t *dst, size_t count)
{
    struct iovec lv[IOV_BATCH], rv[IOV_BATCH];
    size_t i = 0, off = 0;

    while (i < count) {
        size_t k = 0, j = i, o = off;
        ssize_t n;

        for (; j < count && k < IOV_BATCH; j++, k++, o = 0) {
            lv[k] = (struct iovec){(void *)(src[j].addr + o), src[j].len - o};
            rv[k] = (struct iovec){(void *)(dst[j].addr + o), dst[j].len - o};
        }
        n = op == MPIXFER_OP_WRITE ? process_vm_writev((pid_t)l->peer_pid, lv, k, rv, k, 0)
                                   : process_vm_readv((pid_t)l->peer_pid, lv, k, rv, k, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            MPIXFER__FAIL(e == ESRCH ? MPIXFER_ERR_UNREACHABLE : MPIXFER_ERR_IO,
                          "cross-memory %s with '%s' failed: %s",
                          op == MPIXFER_OP_WRITE ? "write" : "read", l->peer_name, strerror(e));
        }
        for (size_t left = (size_t)n; left > 0;) {
            size_t rem = src[i].len - off;
            if (left >= rem) {
                left -= rem;
                i++;
                off = 0;
            } else {
                off += left;
                left = 0;
            }
        }
    }
    return MPIXFER_OK;
}

/* ------------------------------------------------------------ requests */

static const rkey_ent_t *find_rkey(const struct mpixfer__link_ucx *lu, uint64_t addr, uint64_t len)
{
    size_t lo = 0, hi = lu->nrkeys;

    while (lo < hi) { /* last entry with base <= addr */
        size_t mid = lo + (hi - lo) / 2;
        if (lu->rkeys[mid].base <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return NULL;
    const rkey_ent_t *e = &lu->rkeys[lo - 1];
    return addr + len <= e->base + e->len ? e : NULL;
}

/* Statuses by which UCX says the peer (or the way to it) is gone, not that we erred:
 * an endpoint whose keepalive timed out fails every later put at once. */
static bool ucs_peer_gone(ucs_status_t s)
{
    return s == UCS_ERR_ENDPOINT_TIMEOUT || s == UCS_ERR_CONNECTION_RESET ||
           s == UCS_ERR_UNREACHABLE || s == UCS_ERR_NOT_CONNECTED || s == UCS_ERR_CANCELED ||
           s == UCS_ERR_REJECTED || s == UCS_ERR_TIMED_OUT;
}

static void flush_done(void *request, ucs_status_t status, void *user_data)
{
    struct mpixfer__link_op *op = user_data;

    op->done = true;
    op->status = status;
    ucp_request_free(request);
}

/* x gives up on its operation: UCX may still end it, and call flush_done, so an
 * operation not done yet waits among the orphans until it is (or the worker goes). */
static void op_orphan(mpixfer_context_t *ctx, mpixfer_request_t *x)
{
    struct mpixfer__link_op *op = x->lop;

    x->lop = NULL;
    if (op->done) {
        free(op);
        return;
    }
    op->next = ctx->ucx->orphans;
    ctx->ucx->orphans = op;
}

mpixfer_status_t mpixfer__link_submit(mpixfer_context_t *ctx, mpixfer_request_t *x,
                                      mpixfer__link_t *l, const mpixfer_transfer_request_t *req)
{
    const mpixfer_mem_desc_t *s = req->src.descs, *d = req->dst.descs;
    size_t n = req->src.count;
    struct mpixfer__link_op *op;
    ucp_request_param_t prm = {0};
    ucs_status_ptr_t r;

    x->on_link = true;
    if (l->cma) {
        mpixfer_status_t st = cma_move(l, req->op, s, d, n);
        ctx->stats.link_copies += n;
        if (st == MPIXFER_ERR_UNREACHABLE)
            mpixfer__link_fail(ctx, l, st);
        return st;
    }
    if (l->ucx == NULL || l->ucx->ep == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_UNREACHABLE, "the link to '%s' has no UCX endpoint",
                      l->peer_name);
    if (l->ucx->failed) {
        /* UCX's error handler ran, the link thread has not failed the link yet. */
        mpixfer__link_fail(ctx, l, MPIXFER_ERR_UNREACHABLE);
        MPIXFER__FAIL(MPIXFER_ERR_UNREACHABLE, "UCX reported the link to '%s' failed",
                      l->peer_name);
    }
    for (size_t i = 0; i < n; i++)
        if (find_rkey(l->ucx, d[i].addr, d[i].len) == NULL)
            MPIXFER__FAIL(MPIXFER_ERR_OUT_OF_RANGE,
                          "dst %zu [%#lx, +%zu) is in no range '%s' mapped for UCX", i,
                          (unsigned long)d[i].addr, d[i].len, l->peer_name);
    if ((op = calloc(1, sizeof(*op))) == NULL)
        return MPIXFER_ERR_NO_MEMORY;
    op->link = l;
    op->start_ns = mpixfer__now_ns();
    for (size_t i = 0; i < n && op->err == MPIXFER_OK; i++) {
        const rkey_ent_t *k = find_rkey(l->ucx, d[i].addr, d[i].len);
        r = req->op == MPIXFER_OP_WRITE
                ? ucp_put_nbx(l->ucx->ep, (void *)s[i].addr, s[i].len, d[i].addr, k->rkey, &prm)
                : ucp_get_nbx(l->ucx->ep, (void *)s[i].addr, s[i].len, d[i].addr, k->rkey, &prm);
        if (UCS_PTR_IS_ERR(r)) {
            LOG_ERROR("UCX %s to '%s' failed: %s", req->op == MPIXFER_OP_WRITE ? "put" : "get",
                      l->peer_name, ucs_status_string(UCS_PTR_STATUS(r)));
            /* What was issued still completes before the end. A peer that is gone fails
             * the link on the next progress (its other requests with it). */
            bool gone = ucs_peer_gone(UCS_PTR_STATUS(r));
            op->err = gone ? MPIXFER_ERR_UNREACHABLE : MPIXFER_ERR_IO;
            l->ucx->failed |= gone;
        } else if (r != NULL) {
            ucp_request_free(r); /* the flush below waits for it */
        }
    }
    ctx->stats.link_ops += n;
    prm.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    prm.cb.send = flush_done;
    prm.user_data = op;
    r = ucp_ep_flush_nbx(l->ucx->ep, &prm);
    if (r == NULL) {
        op->done = true;
    } else if (UCS_PTR_IS_ERR(r)) {
        op->done = true;
        op->status = UCS_PTR_STATUS(r);
    }
    x->lop = op;
    return MPIXFER_OK;
}

/* Gives up on x's UCX operations: the link fails (its other requests with it) and its
 * endpoint is closed. With peer error handling by force, which cancels what UCX still
 * holds, so no late get reply is copied into our memory; on the same host by flushing in
 * the background, where an emulated get may still land. Puts already on their way may
 * still land at a peer that resumes: the callers say so (MPIXFER_ERR_TIMEOUT). */
static void abandon(mpixfer_context_t *ctx, mpixfer_request_t *x)
{
    mpixfer__link_t *l = x->lop->link;

    op_orphan(ctx, x);
    mpixfer__link_fail(ctx, l, MPIXFER_ERR_TIMEOUT);
    mpixfer__link_data_free(ctx, l);
}

bool mpixfer__link_req_test(mpixfer_context_t *ctx, mpixfer_request_t *x, mpixfer_status_t *st_p)
{
    struct mpixfer__link_op *op = x->lop;

    if (op == NULL) {
        *st_p = x->link_err; /* given up: the link failed */
        return true;
    }
    if (!op->done && ctx->ucx != NULL)
        ucp_worker_progress(ctx->ucx->worker);
    if (op->done) {
        *st_p = op->err != MPIXFER_OK  ? op->err
                : op->status != UCS_OK ? MPIXFER_ERR_UNREACHABLE
                                       : MPIXFER_OK;
        free(op);
        x->lop = NULL;
        return true;
    }
    if (mpixfer__now_ns() - op->start_ns > (int64_t)ctx->params.stall_timeout_ms * 1000000) {
        LOG_WARN("transfer to '%s' over a link: no remote completion within the stall timeout "
                 "(%u ms)",
                 x->remote_name, ctx->params.stall_timeout_ms);
        abandon(ctx, x);
        *st_p = MPIXFER_ERR_TIMEOUT;
        return true;
    }
    return false;
}

void mpixfer__link_data_fail(mpixfer_context_t *ctx, mpixfer__link_t *l, mpixfer_status_t why)
{
    for (mpixfer_request_t *x = ctx->pending_head; x != NULL; x = x->next_pending)
        if (x->lop != NULL && x->lop->link == l) {
            op_orphan(ctx, x);
            x->link_err = why;
        }
}

/* ------------------------------------------------------------------ the path */

static mpixfer_status_t link_path_start(mpixfer_context_t *ctx, mpixfer_request_t *x,
                                        const mpixfer_transfer_request_t *req, bool *done_p,
                                        mpixfer_status_t *st_p)
{
    mpixfer_status_t st = mpixfer__link_submit(ctx, x, x->target.link, req);

    if (st == MPIXFER_OK && x->lop == NULL) {
        /* Cross-memory copies: the bytes are in place now. */
        *done_p = true;
        *st_p = MPIXFER_OK;
    }
    return st;
}

static bool link_path_test(mpixfer_context_t *ctx, mpixfer_request_t *x, int *work,
                           mpixfer_status_t *st_p, bool *flush_p)
{
    (void)work;
    *flush_p = false; /* remote completion came from UCX's flush */
    return mpixfer__link_req_test(ctx, x, st_p);
}

/* Cross-memory copies end inside submit; UCX operations were all issued there, so a stop
 * awaits their remote completion (the flush), or abandons them at give_up. */
static bool link_path_stop(mpixfer_context_t *ctx, mpixfer_request_t *x, bool give_up,
                           bool *flush_p)
{
    struct mpixfer__link_op *op = x->lop;

    *flush_p = false;
    if (op == NULL)
        return true;
    if (!op->done && ctx->ucx != NULL)
        ucp_worker_progress(ctx->ucx->worker);
    if (op->done) {
        free(op);
        x->lop = NULL;
        return true;
    }
    if (!give_up)
        return false;
    LOG_WARN("transfer to '%s' over a link: cancel found no remote completion within the "
             "stall timeout (%u ms); link abandoned",
             x->remote_name, ctx->params.stall_timeout_ms);
    abandon(ctx, x);
    x->stop_gave_up = true;
    return true;
}

const mpixfer__path_t mpixfer__path_link = {
    .name = "link",
    .start = link_path_start,
    .test = link_path_test,
    .stop = link_path_stop,
};
