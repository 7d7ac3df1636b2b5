/* Staged GPU transfers: for MPIs that cannot touch device memory.
 *
 * A request whose local or remote list is VRAM is cut into chunks of at most
 * gpu_chunk_size bytes. WRITE: the initiator copies a chunk into a pinned message buffer
 * (device-to-host when the source is VRAM) and sends it as XWRITE; the target checks the
 * range against its own registrations, copies it into place (host-to-device for VRAM) and
 * answers XACK. READ: the initiator sends XREAD; the target copies the range out and
 * answers XDATA with the bytes, which the initiator copies into place. Up to
 * gpu_pipeline_depth chunks are in flight per request, so copies on one side overlap MPI
 * traffic and the other side's copies.
 *
 * The request succeeds only when every chunk is answered, so its sync message (sent after
 * success, on the same ordered channel) reaches the target after the bytes are in its
 * memory. The target takes part through its progress: its thread or its next call.
 *
 * A WRITE chunk carries its expiry: CLOCK_REALTIME when it was posted plus the stall
 * timeout. A target that sees it later (it was stopped, or swapped out) drops it and
 * answers MPIXFER_ERR_TIMEOUT: by then the initiator may have failed or cancelled the
 * request and reused the buffers at both ends, so a late write must not happen. The
 * initiator, for its part, treats chunks it gave up on as harmless only once their expiry
 * has passed (plus EXPIRY_MARGIN_NS for a copy started just before it).
 *
 * Payloads (little-endian), after the control header and names:
 *   XWRITE  id u64, seq u64, addr u64, type u32, device u32, expires u64 (ns), bytes...
 *   XACK    id u64, seq u64, status i32, 0 u32
 *   XREAD   id u64, seq u64, addr u64, type u32, device u32, len u64
 *   XDATA   id u64, seq u64, status i32, 0 u32, bytes... */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "wire.h"

#define XW_HDR 40
/* A target that checked a chunk's expiry just before it passed still copies it: at most
 * one chunk's copy (~1 ms for 4 MiB) after the expiry. */
#define EXPIRY_MARGIN_NS (50 * 1000000LL)
#define XA_HDR 24
#define XR_LEN 40

void mpixfer__staged_free(mpixfer__staged_t *s)
{
    if (s == NULL)
        return;
    free(s->local);
    free(s->remote);
    free(s->chunks);
    free(s);
}

mpixfer_status_t mpixfer__staged_start(mpixfer_context_t *ctx, mpixfer_request_t *x,
                                       const mpixfer_transfer_request_t *req)
{
    mpixfer__staged_t *s = calloc(1, sizeof(*s));
    size_t n = req->src.count;

    if (s == NULL)
        return MPIXFER_ERR_NO_MEMORY;
    s->local = malloc(n * sizeof(*s->local));
    s->remote = malloc(n * sizeof(*s->remote));
    s->chunks = calloc(ctx->params.gpu_pipeline_depth, sizeof(*s->chunks));
    if (s->local == NULL || s->remote == NULL || s->chunks == NULL) {
        mpixfer__staged_free(s);
        return MPIXFER_ERR_NO_MEMORY;
    }
    memcpy(s->local, req->src.descs, n * sizeof(*s->local));
    memcpy(s->remote, req->dst.descs, n * sizeof(*s->remote));
    s->npairs = n;
    s->op = req->op;
    s->ltype = req->src.type;
    s->rtype = req->dst.type;
    s->id = ++ctx->next_request_id;
    s->last_heard_ns = mpixfer__now_ns();
    s->err = MPIXFER_OK;
    x->staged = s;
    return MPIXFER_OK;
}

static mpixfer__chunk_t *free_slot(mpixfer_context_t *ctx, mpixfer__staged_t *s)
{
    for (unsigned i = 0; i < ctx->params.gpu_pipeline_depth; i++)
        if (!s->chunks[i].busy)
            return &s->chunks[i];
    return NULL;
}

/* Post one chunk; false when nothing could be posted. */
static bool post_chunk(mpixfer_context_t *ctx, mpixfer_request_t *x)
{
    mpixfer__staged_t *s = x->staged;
    mpixfer__chunk_t *slot;
    const mpixfer_mem_desc_t *l, *r;
    size_t len;
    unsigned char *buf;
    size_t n;
    void *payload;
    mpixfer_status_t st;
    bool write = s->op == MPIXFER_OP_WRITE;
    /* Pinned only where a device copy fills it. */
    bool pinned = write && s->ltype == MPIXFER_MEM_VRAM;

    if (s->pair == s->npairs || s->err != MPIXFER_OK || x->stopping ||
        (slot = free_slot(ctx, s)) == NULL)
        return false;
    l = &s->local[s->pair];
    r = &s->remote[s->pair];
    len = l->len - s->off;
    if (len > ctx->params.gpu_chunk_size)
        len = ctx->params.gpu_chunk_size;

    st = mpixfer__ctrl_alloc(write ? MPIXFER__CTRL_XWRITE : MPIXFER__CTRL_XREAD, x->agent->name,
                             x->remote_name, write ? XW_HDR + len : XR_LEN, pinned, &buf, &n,
                             &payload);
    if (st == MPIXFER_OK) {
        unsigned char *p = payload;
        mpixfer__put64(p, s->id);
        mpixfer__put64(p + 8, s->next_seq);
        mpixfer__put64(p + 16, (uint64_t)(r->addr + s->off));
        mpixfer__put32(p + 24, (uint32_t)s->rtype);
        mpixfer__put32(p + 28, r->device_id);
        if (write) {
            /* A deadline ends the request before the stall timeout would: its chunks
             * expire with it, so the stop it starts finds them harmless at once. */
            int64_t life = (int64_t)ctx->params.stall_timeout_ms * 1000000;
            int64_t left = x->deadline_ns != 0 ? x->deadline_ns - mpixfer__now_ns() : life;
            int64_t exp = mpixfer__realtime_ns() + (left < life ? (left > 0 ? left : 0) : life);
            mpixfer__put64(p + 32, (uint64_t)exp);
            if (exp > s->expires_max_rt)
                s->expires_max_rt = exp;
            /* Device-to-host (or host) copy straight into the pinned message. */
            st = mpixfer__copy(p + XW_HDR, (const void *)(l->addr + s->off), len,
                               s->ltype == MPIXFER_MEM_VRAM);
            if (st != MPIXFER_OK) {
                if (pinned)
                    mpixfer__gpu_host_free(buf);
                else
                    free(buf);
            }
        } else {
            mpixfer__put64(p + 32, (uint64_t)len);
        }
        if (st == MPIXFER_OK)
            st = mpixfer__ctrl_post(ctx, x->target, buf, n, pinned);
    }
    if (st != MPIXFER_OK) {
        s->err = st;
        return false;
    }
    *slot = (mpixfer__chunk_t){s->next_seq++, l->addr + s->off, len, true};
    ctx->stats.staged_chunks++;
    s->inflight++;
    s->off += len;
    if (s->off == l->len) {
        s->pair++;
        s->off = 0;
    }
    return true;
}

/* Whether no chunk given up on can be written any more: its expiry has passed. */
static bool chunks_expired(const mpixfer__staged_t *s)
{
    return s->op == MPIXFER_OP_READ || s->expires_max_rt == 0 ||
           mpixfer__realtime_ns() > s->expires_max_rt + EXPIRY_MARGIN_NS;
}

/* Stops counting on answers to the chunks out: later ones find no chunk (or no request)
 * and are dropped, so nothing is copied into our memory any more. With @p may_land, the
 * chunks out may still reach a slow target until they expire (chunks_expired says when);
 * without, the target can no longer read them (its stream broke). */
void mpixfer__staged_abandon(mpixfer_context_t *ctx, mpixfer_request_t *x, bool may_land)
{
    mpixfer__staged_t *s = x->staged;

    for (unsigned i = 0; i < ctx->params.gpu_pipeline_depth; i++)
        s->chunks[i].busy = false;
    if (s->inflight > 0 && may_land)
        s->abandoned = true;
    s->inflight = 0;
}

bool mpixfer__staged_advance(mpixfer_context_t *ctx, mpixfer_request_t *x, int *work)
{
    mpixfer__staged_t *s = x->staged;

    while (post_chunk(ctx, x))
        (*work)++;
    if (s->abandoned)
        return chunks_expired(s);
    if (s->inflight > 0 && s->err == MPIXFER_OK &&
        mpixfer__now_ns() - s->last_heard_ns > (int64_t)ctx->params.stall_timeout_ms * 1000000) {
        /* The target stopped answering. Its answers will be dropped; its late writes too,
         * once the chunks' expiry has passed, which the request then waits for (the last
         * chunk left about a stall timeout ago, so that is soon). */
        LOG_WARN("request %llu to '%s': no answer for %u ms; failing it", (unsigned long long)s->id,
                 x->remote_name, ctx->params.stall_timeout_ms);
        s->err = MPIXFER_ERR_TIMEOUT;
        mpixfer__staged_abandon(ctx, x, true);
        return chunks_expired(s);
    }
    /* After an error nothing new is posted, but answers to chunks already out are awaited:
     * the target may still be writing into our buffers. */
    return s->inflight == 0 && (s->pair == s->npairs || s->err != MPIXFER_OK);
}

static mpixfer_request_t *find_request(mpixfer_context_t *ctx, uint64_t id)
{
    for (mpixfer_request_t *x = ctx->pending_head; x != NULL; x = x->next_pending)
        if (x->staged != NULL && x->staged->id == id)
            return x;
    return NULL;
}

/* The initiator side: an XACK or XDATA for one of our chunks. */
static void on_answer(mpixfer_context_t *ctx, mpixfer__route_t src, const mpixfer__ctrl_t *c)
{
    const unsigned char *p = c->payload;
    mpixfer_request_t *x;
    mpixfer__chunk_t *slot = NULL;
    uint64_t id, seq;
    int32_t status;
    size_t data_len;

    if (c->payload_len < XA_HDR) {
        LOG_WARN("short staged answer from rank %d dropped", src.rank);
        return;
    }
    id = mpixfer__get64(p);
    seq = mpixfer__get64(p + 8);
    status = (int32_t)mpixfer__get32(p + 16);
    data_len = c->payload_len - XA_HDR;
    x = find_request(ctx, id);
    if (x == NULL || !mpixfer__route_eq(x->target, src)) {
        /* One of ours that ended without it (cancelled, failed): expected. */
        if (id != 0 && id <= ctx->next_request_id)
            LOG_DEBUG("staged answer for ended request %llu from rank %d dropped",
                      (unsigned long long)id, src.rank);
        else
            LOG_WARN("staged answer for unknown request %llu from rank %d dropped",
                     (unsigned long long)id, src.rank);
        return;
    }
    for (unsigned i = 0; i < ctx->params.gpu_pipeline_depth; i++)
        if (x->staged->chunks[i].busy && x->staged->chunks[i].seq == seq)
            slot = &x->staged->chunks[i];
    if (slot == NULL) {
        LOG_WARN("staged answer for unknown chunk %llu of request %llu dropped",
                 (unsigned long long)seq, (unsigned long long)id);
        return;
    }
    if (status != MPIXFER_OK) {
        LOG_WARN("rank %d refused a staged chunk of request %llu: %s", src.rank,
                 (unsigned long long)id, mpixfer_strerror((mpixfer_status_t)status));
        if (x->staged->err == MPIXFER_OK)
            x->staged->err = status < 0 ? (mpixfer_status_t)status : MPIXFER_ERR_BAD_DESC;
    } else if (c->kind == MPIXFER__CTRL_XDATA) {
        if (data_len != slot->len) {
            LOG_WARN("staged chunk of %zu bytes answered with %zu", slot->len, data_len);
            if (x->staged->err == MPIXFER_OK)
                x->staged->err = MPIXFER_ERR_BAD_DESC;
        } else {
            /* Host-to-device (or host) copy into the destination. */
            mpixfer_status_t st = mpixfer__copy((void *)slot->local, p + XA_HDR, data_len,
                                                x->staged->ltype == MPIXFER_MEM_VRAM);
            if (st != MPIXFER_OK && x->staged->err == MPIXFER_OK)
                x->staged->err = st;
        }
    } else if (data_len != 0) {
        if (x->staged->err == MPIXFER_OK)
            x->staged->err = MPIXFER_ERR_BAD_DESC;
    }
    slot->busy = false;
    x->staged->inflight--;
    x->staged->last_heard_ns = mpixfer__now_ns();
}

/* The target side: check the range against the receiving agent's own registrations, so a
 * peer can reach nothing it was not offered, whatever it claims. */
static mpixfer_status_t target_range(mpixfer_agent_t *agent, uint64_t addr, uint64_t len,
                                     uint32_t type, uint32_t device)
{
    mpixfer_mem_desc_t d = {(uintptr_t)addr, (size_t)len, device};
    mpixfer__region_t *r;

    if (len == 0 || addr + len < addr || addr + len > (uint64_t)UINTPTR_MAX ||
        (type != MPIXFER_MEM_DRAM && type != MPIXFER_MEM_VRAM))
        return MPIXFER_ERR_BAD_DESC;
    return mpixfer__agent_find_region(agent, (mpixfer_mem_type_t)type, &d, &r);
}

static void answer(mpixfer_context_t *ctx, mpixfer__route_t src, const mpixfer__ctrl_t *c,
                   mpixfer__ctrl_kind_t kind, uint64_t id, uint64_t seq, mpixfer_status_t status,
                   uint64_t addr, size_t len, bool device)
{
    unsigned char *buf, *p;
    size_t n;
    void *payload;
    bool data = kind == MPIXFER__CTRL_XDATA && status == MPIXFER_OK;
    mpixfer_status_t st;

    st = mpixfer__ctrl_alloc(kind, c->receiver, c->sender, XA_HDR + (data ? len : 0),
                             data && device, &buf, &n, &payload);
    if (st != MPIXFER_OK) {
        LOG_ERROR("cannot answer a staged chunk of '%s': %s", c->sender, mpixfer_strerror(st));
        return;
    }
    p = payload;
    mpixfer__put64(p, id);
    mpixfer__put64(p + 8, seq);
    if (data) {
        status = mpixfer__copy(p + XA_HDR, (const void *)(uintptr_t)addr, len, device);
        if (status != MPIXFER_OK)
            n -= len; /* the answer carries the error instead of bytes */
    }
    mpixfer__put32(p + 16, (uint32_t)(int32_t)status);
    mpixfer__put32(p + 20, 0);
    mpixfer__ctrl_post(ctx, src, buf, n, data && device);
}

void mpixfer__staged_on_message(mpixfer_context_t *ctx, mpixfer__route_t src,
                                mpixfer_agent_t *agent, const mpixfer__ctrl_t *c)
{
    const unsigned char *p = c->payload;
    uint64_t id, seq, addr, len;
    uint32_t type, device;
    mpixfer_status_t st;

    if (c->kind == MPIXFER__CTRL_XACK || c->kind == MPIXFER__CTRL_XDATA) {
        on_answer(ctx, src, c);
        return;
    }
    if ((c->kind == MPIXFER__CTRL_XWRITE && c->payload_len <= XW_HDR) ||
        (c->kind == MPIXFER__CTRL_XREAD && c->payload_len != XR_LEN)) {
        LOG_WARN("malformed staged request from rank %d dropped", src.rank);
        return;
    }
    id = mpixfer__get64(p);
    seq = mpixfer__get64(p + 8);
    addr = mpixfer__get64(p + 16);
    type = mpixfer__get32(p + 24);
    device = mpixfer__get32(p + 28);
    len = c->kind == MPIXFER__CTRL_XWRITE ? c->payload_len - XW_HDR : mpixfer__get64(p + 32);
    if (c->kind == MPIXFER__CTRL_XWRITE &&
        (int64_t)mpixfer__get64(p + 32) < mpixfer__realtime_ns()) {
        /* Its initiator has given up on it by now and may reuse the memory: drop it. */
        LOG_WARN("staged chunk of '%s' (rank %d) for [%#llx, +%llu) arrived after its expiry; "
                 "dropped",
                 c->sender, src.rank, (unsigned long long)addr, (unsigned long long)len);
        answer(ctx, src, c, MPIXFER__CTRL_XACK, id, seq, MPIXFER_ERR_TIMEOUT, 0, 0, false);
        return;
    }

    /* No agent: the receiver named in the message does not exist (any more). */
    st = agent ? target_range(agent, addr, len, type, device) : MPIXFER_ERR_NOT_FOUND;
    if (st != MPIXFER_OK)
        LOG_WARN("'%s' (rank %d) asked for [%#llx, +%llu) of '%s', which it does not hold",
                 c->sender, src.rank, (unsigned long long)addr, (unsigned long long)len,
                 c->receiver);
    else if (c->kind == MPIXFER__CTRL_XREAD && len > INT32_MAX - 1024)
        st = MPIXFER_ERR_TOO_LARGE;
    if (c->kind == MPIXFER__CTRL_XWRITE) {
        if (st == MPIXFER_OK)
            st = mpixfer__copy((void *)(uintptr_t)addr, p + XW_HDR, (size_t)len,
                               type == MPIXFER_MEM_VRAM);
        answer(ctx, src, c, MPIXFER__CTRL_XACK, id, seq, st, 0, 0, false);
    } else {
        answer(ctx, src, c, MPIXFER__CTRL_XDATA, id, seq, st, addr, (size_t)len,
               type == MPIXFER_MEM_VRAM);
    }
}

/* ------------------------------------------------------------------ the path */

static mpixfer_status_t staged_path_start(mpixfer_context_t *ctx, mpixfer_request_t *x,
                                          const mpixfer_transfer_request_t *req, bool *done_p,
                                          mpixfer_status_t *st_p)
{
    int work = 0;
    mpixfer_status_t st = mpixfer__staged_start(ctx, x, req);

    (void)done_p;
    (void)st_p;
    if (st != MPIXFER_OK)
        return st;
    /* The first chunks leave now; the rest follow as answers come back. */
    mpixfer__staged_advance(ctx, x, &work);
    return MPIXFER_OK;
}

static bool staged_path_test(mpixfer_context_t *ctx, mpixfer_request_t *x, int *work,
                             mpixfer_status_t *st_p, bool *flush_p)
{
    if (!mpixfer__staged_advance(ctx, x, work))
        return false;
    *st_p = x->staged->err;
    *flush_p = false; /* nothing went by RMA */
    return true;
}

/* Nothing more is posted. A READ is quiescent at once: its answers are copied only while
 * it is queued. A WRITE waits for the answers to its chunks out, or their expiry; give_up
 * comes a stall timeout after the stop began, when every chunk posted before it has
 * expired, so the staged path never needs to abandon a peer unsafely. */
static bool staged_path_stop(mpixfer_context_t *ctx, mpixfer_request_t *x, bool give_up,
                             bool *flush_p)
{
    mpixfer__staged_t *s = x->staged;

    *flush_p = false;
    /* Chunks already expired (a deadline's, or sent long ago) cannot land any more. */
    if (s->op == MPIXFER_OP_READ || give_up || chunks_expired(s))
        mpixfer__staged_abandon(ctx, x, true);
    if (s->abandoned)
        return chunks_expired(s);
    return s->inflight == 0;
}

const mpixfer__path_t mpixfer__path_staged = {
    .name = "staged",
    .start = staged_path_start,
    .test = staged_path_test,
    .stop = staged_path_stop,
};
