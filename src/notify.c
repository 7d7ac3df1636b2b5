/* Control channel (sync messages, descriptor requests) and the inbox.
 *
 * Wire form, little-endian: magic "MXCM" (4), kind u8, reserved u8 (0),
 * sender_len u16, receiver_len u16, reserved u16 (0), payload_len u32, then the sender
 * name, the receiver name and the payload. Received with MPI_Improbe/MPI_Mrecv so no
 * buffer is pre-posted and any size fits. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "wire.h"

#define CTRL_MAGIC "MXCM"
#define CTRL_HEADER 16





mpixfer_status_t mpixfer__ctrl_alloc(mpixfer__ctrl_kind_t kind, const char *sender,
                                     const char *receiver, size_t len, bool pinned,
                                     unsigned char **buf_p, size_t *n_p, void **payload_p)
{
    size_t sl = strlen(sender), rl = strlen(receiver), n;
    unsigned char *b;

    if (len > INT32_MAX - CTRL_HEADER - 2 * MPIXFER__NAME_MAX)
        return MPIXFER_ERR_TOO_LARGE;
    n = CTRL_HEADER + sl + rl + len;
    b = pinned ? mpixfer__gpu_host_alloc(n) : malloc(n);
    if (b == NULL)
        return MPIXFER_ERR_NO_MEMORY;
    memcpy(b, CTRL_MAGIC, 4);
    b[4] = (unsigned char)kind;
    b[5] = 0;
    mpixfer__put16(b + 6, (uint16_t)sl);
    mpixfer__put16(b + 8, (uint16_t)rl);
    mpixfer__put16(b + 10, 0);
    mpixfer__put32(b + 12, (uint32_t)len);
    memcpy(b + CTRL_HEADER, sender, sl);
    memcpy(b + CTRL_HEADER + sl, receiver, rl);
    *payload_p = b + CTRL_HEADER + sl + rl;
    *buf_p = b;
    *n_p = n;
    return MPIXFER_OK;
}

mpixfer_status_t mpixfer__ctrl_decode(const void *buf, size_t len, mpixfer__ctrl_t *out)
{
    const unsigned char *b = buf;
    size_t sl, rl, pl;

    if (buf == NULL || len < CTRL_HEADER || memcmp(b, CTRL_MAGIC, 4) != 0 || b[5] != 0 ||
        mpixfer__get16(b + 10) != 0)
        return MPIXFER_ERR_BAD_DESC;
    if (b[4] < MPIXFER__CTRL_SYNC || b[4] > MPIXFER__CTRL_BYE_ACK)
        return MPIXFER_ERR_BAD_DESC;
    sl = mpixfer__get16(b + 6);
    rl = mpixfer__get16(b + 8);
    pl = mpixfer__get32(b + 12);
    if (sl < 1 || sl > MPIXFER__NAME_MAX || rl < 1 || rl > MPIXFER__NAME_MAX)
        return MPIXFER_ERR_BAD_DESC;
    if (len - CTRL_HEADER != sl + rl + pl)
        return MPIXFER_ERR_BAD_DESC;
    if (memchr(b + CTRL_HEADER, '\0', sl + rl) != NULL)
        return MPIXFER_ERR_BAD_DESC;
    out->kind = (mpixfer__ctrl_kind_t)b[4];
    memcpy(out->sender, b + CTRL_HEADER, sl);
    out->sender[sl] = '\0';
    memcpy(out->receiver, b + CTRL_HEADER + sl, rl);
    out->receiver[rl] = '\0';
    out->payload = b + CTRL_HEADER + sl + rl;
    out->payload_len = pl;
    return MPIXFER_OK;
}

static void inbox_push(mpixfer_agent_t *agent, const char *sender, const void *data, size_t len)
{
    mpixfer__msg_t *m = calloc(1, sizeof(*m));

    if (m == NULL || (m->sender = strdup(sender)) == NULL || (m->data = malloc(len + 1)) == NULL) {
        if (m)
            free(m->sender);
        free(m);
        LOG_ERROR("out of memory: sync message from '%s' to '%s' lost", sender, agent->name);
        return;
    }
    if (len)
        memcpy(m->data, data, len);
    ((char *)m->data)[len] = '\0';
    m->len = len;
    if (agent->inbox_tail)
        agent->inbox_tail->next = m;
    else
        agent->inbox_head = m;
    agent->inbox_tail = m;
    agent->tel.sync_received++;
}

void mpixfer__inbox_clear(mpixfer_agent_t *agent)
{
    while (agent->inbox_head) {
        mpixfer__msg_t *m = agent->inbox_head;
        agent->inbox_head = m->next;
        free(m->sender);
        free(m->data);
        free(m);
    }
    agent->inbox_tail = NULL;
}

static void on_desc_reply(mpixfer_context_t *ctx, mpixfer__route_t src, mpixfer_agent_t *agent,
                          const mpixfer__ctrl_t *c)
{
    mpixfer__remote_t *r = mpixfer__find_remote(agent, c->sender);
    mpixfer__desc_t desc;
    uint64_t world = src.link ? src.link->peer_world : ctx->world_id;

    if (r == NULL || !r->pending || !mpixfer__route_eq((mpixfer__route_t){r->rank, r->link}, src)) {
        LOG_DEBUG("unrequested descriptor of '%s' for '%s' dropped", c->sender, agent->name);
        return;
    }
    if (c->kind == MPIXFER__CTRL_DESC_NAK) {
        LOG_WARN("%s %d has no agent '%s' (asked by '%s')", src.link ? "the linked job" : "rank",
                 src.rank, c->sender, agent->name);
        r->pending = false;
        return;
    }
    if (mpixfer__desc_decode(c->payload, c->payload_len, ctx->params.max_desc_regions, &desc) !=
        MPIXFER_OK)
        return;
    if (desc.world_id != world || (src.link == NULL && desc.rank != (uint32_t)src.rank) ||
        strcmp(desc.name, c->sender) != 0) {
        LOG_WARN("descriptor reply from rank %d does not describe '%s' of the world it came from",
                 src.rank, c->sender);
        mpixfer__desc_fini(&desc);
        return;
    }
    /* The entry keeps the reference on its link it already holds. */
    mpixfer__agent_store_desc(agent, &desc, r->link);
}

#define dispatch mpixfer__ctrl_dispatch

/* Handle one control message from @p src (which may be this process). Over a link, the
 * link checked that sender and receiver are the two agents its handshake named. */
void mpixfer__ctrl_dispatch(mpixfer_context_t *ctx, mpixfer__route_t src, const mpixfer__ctrl_t *c)
{
    mpixfer_agent_t *agent;

    agent = mpixfer__find_local_agent(ctx, c->receiver);
    if (agent == NULL) {
        LOG_WARN("control message (kind %d) from '%s' (rank %d) for unknown agent '%s' dropped",
                 (int)c->kind, c->sender, src.rank, c->receiver);
        if (c->kind == MPIXFER__CTRL_DESC_REQ)
            mpixfer__ctrl_send(ctx, src, MPIXFER__CTRL_DESC_NAK, c->receiver, c->sender, NULL, 0);
        /* A staged chunk gets its refusal now rather than a stall timeout later. */
        if (c->kind == MPIXFER__CTRL_XWRITE || c->kind == MPIXFER__CTRL_XREAD)
            mpixfer__staged_on_message(ctx, src, NULL, c);
        return;
    }
    switch (c->kind) {
    case MPIXFER__CTRL_SYNC:
        inbox_push(agent, c->sender, c->payload, c->payload_len);
        break;
    case MPIXFER__CTRL_DESC_REQ: {
        void *blob;
        size_t len;
        if (mpixfer__desc_encode(agent, false, &blob, &len) != MPIXFER_OK) {
            mpixfer__ctrl_send(ctx, src, MPIXFER__CTRL_DESC_NAK, agent->name, c->sender, NULL, 0);
            return;
        }
        mpixfer__ctrl_send(ctx, src, MPIXFER__CTRL_DESC_REP, agent->name, c->sender, blob, len);
        free(blob);
        break;
    }
    case MPIXFER__CTRL_DESC_REP:
    case MPIXFER__CTRL_DESC_NAK:
        on_desc_reply(ctx, src, agent, c);
        break;
    case MPIXFER__CTRL_XWRITE:
    case MPIXFER__CTRL_XACK:
    case MPIXFER__CTRL_XREAD:
    case MPIXFER__CTRL_XDATA:
        mpixfer__staged_on_message(ctx, src, agent, c);
        break;
    case MPIXFER__CTRL_BYE:
    case MPIXFER__CTRL_BYE_ACK:
        LOG_WARN("link message from rank %d outside a link dropped", src.rank);
        break;
    }
}

mpixfer_status_t mpixfer__ctrl_send(mpixfer_context_t *ctx, mpixfer__route_t to,
                                    mpixfer__ctrl_kind_t kind, const char *sender,
                                    const char *receiver, const void *payload, size_t len)
{
    unsigned char *buf;
    size_t n;
    void *dst;
    mpixfer_status_t st;

    if (to.link == NULL && to.rank == ctx->rank) {
        mpixfer__ctrl_t c = {.kind = kind, .payload = payload, .payload_len = len};
        /* Names were validated where they entered the library. */
        strncpy(c.sender, sender, MPIXFER__NAME_MAX);
        strncpy(c.receiver, receiver, MPIXFER__NAME_MAX);
        dispatch(ctx, to, &c);
        return MPIXFER_OK;
    }
    st = mpixfer__ctrl_alloc(kind, sender, receiver, len, false, &buf, &n, &dst);
    if (st != MPIXFER_OK)
        return st;
    if (len)
        memcpy(dst, payload, len);
    return mpixfer__ctrl_post(ctx, to, buf, n, false);
}

static void send_buf_free(void *buf, bool pinned)
{
    if (pinned)
        mpixfer__gpu_host_free(buf);
    else
        free(buf);
}

mpixfer_status_t mpixfer__ctrl_post(mpixfer_context_t *ctx, mpixfer__route_t to,
                                    unsigned char *buf, size_t n, bool pinned)
{
    mpixfer__send_t *s;
    int rc;

    if (to.link != NULL) {
        if (pinned) {
            /* Links write from ordinary memory. */
            unsigned char *b = malloc(n);
            if (b == NULL) {
                send_buf_free(buf, pinned);
                return MPIXFER_ERR_NO_MEMORY;
            }
            memcpy(b, buf, n);
            send_buf_free(buf, pinned);
            buf = b;
        }
        return mpixfer__link_post(ctx, to.link, buf, n);
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        send_buf_free(buf, pinned);
        return MPIXFER_ERR_NO_MEMORY;
    }
    rc = MPI_Isend(buf, (int)n, MPI_BYTE, to.rank, MPIXFER__CTRL_TAG, ctx->comm, &s->req);
    if (rc != MPI_SUCCESS) {
        send_buf_free(buf, pinned);
        free(s);
        return MPIXFER__MPI_ERR("MPI_Isend", rc);
    }
    s->buf = buf;
    s->pinned = pinned;
    s->next = ctx->sends;
    ctx->sends = s;
    return MPIXFER_OK;
}

size_t mpixfer__sends_test(mpixfer_context_t *ctx)
{
    size_t left = 0;

    for (mpixfer__send_t **pp = &ctx->sends; *pp != NULL;) {
        mpixfer__send_t *s = *pp;
        int done = 0;
        int rc = MPI_Test(&s->req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) {
            MPIXFER__MPI_ERR("MPI_Test (control send)", rc);
            done = 1;
        }
        if (done) {
            *pp = s->next;
            send_buf_free(s->buf, s->pinned);
            free(s);
        } else {
            left++;
            pp = &s->next;
        }
    }
    return left;
}

static int poll_comm(mpixfer_context_t *ctx, MPI_Comm comm);

/* Links are served by the link thread (link.c), not here. */
int mpixfer__ctrl_poll(mpixfer_context_t *ctx)
{
    return ctx->size > 1 ? poll_comm(ctx, ctx->comm) : 0;
}

static int poll_comm(mpixfer_context_t *ctx, MPI_Comm comm)
{
    int handled = 0;

    /* Bounded so one busy sender cannot starve request completion. */
    while (handled < 64) {
        MPI_Message msg;
        MPI_Status status;
        int flag = 0, count = 0, rc;
        unsigned char *buf;
        mpixfer__ctrl_t c;

        rc = MPI_Improbe(MPI_ANY_SOURCE, MPIXFER__CTRL_TAG, comm, &flag, &msg, &status);
        if (rc != MPI_SUCCESS) {
            MPIXFER__MPI_ERR("MPI_Improbe", rc);
            break;
        }
        if (!flag)
            break;
        MPI_Get_count(&status, MPI_BYTE, &count);
        buf = malloc(count > 0 ? (size_t)count : 1);
        if (buf == NULL) {
            /* The message must still leave the queue; receive it into nothing. */
            unsigned char dummy;
            LOG_ERROR("out of memory receiving a %d-byte control message; dropped", count);
            MPI_Mrecv(&dummy, 0, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
            handled++;
            continue;
        }
        rc = MPI_Mrecv(buf, count, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
        handled++;
        if (rc != MPI_SUCCESS) {
            MPIXFER__MPI_ERR("MPI_Mrecv", rc);
            free(buf);
            continue;
        }
        if (mpixfer__ctrl_decode(buf, (size_t)count, &c) != MPIXFER_OK)
            LOG_WARN("malformed %d-byte control message from rank %d dropped", count,
                     status.MPI_SOURCE);
        else
            dispatch(ctx, (mpixfer__route_t){status.MPI_SOURCE, NULL}, &c);
        free(buf);
    }
    return handled;
}

/* ---------------------------------------------------------------- public */

/* Where @p name lives: loaded by this agent, an agent of this process, loaded by another
 * agent of this process, or an agent of another job that spoke to us over a link. */
static bool find_route(mpixfer_context_t *ctx, mpixfer_agent_t *agent, const char *name,
                       mpixfer__route_t *to)
{
    mpixfer__remote_t *r = mpixfer__find_remote(agent, name);
    mpixfer__link_t *l;

    /* A remote whose link failed is a route too: posting on it says why (DENIED...). */
    if (r != NULL && (r->loaded || r->pending || (r->link != NULL && r->link->closed))) {
        *to = (mpixfer__route_t){r->rank, r->link};
        return true;
    }
    if (mpixfer__find_local_agent(ctx, name) != NULL) {
        *to = mpixfer__rank_route(ctx->rank);
        return true;
    }
    for (mpixfer_agent_t *a = ctx->agents; a != NULL; a = a->next)
        if ((r = mpixfer__find_remote(a, name)) != NULL && (r->loaded || r->pending)) {
            *to = (mpixfer__route_t){r->rank, r->link};
            return true;
        }
    if ((l = mpixfer__route_lookup(ctx, name)) != NULL) {
        *to = (mpixfer__route_t){0, l};
        return true;
    }
    return false;
}

mpixfer_status_t mpixfer_notify_sync_message(mpixfer_agent_t *agent, const char *remote_name,
                                             const void *msg, size_t len)
{
    mpixfer_context_t *ctx;
    mpixfer__route_t to;
    mpixfer_status_t st;

    if (agent == NULL || remote_name == NULL || (msg == NULL && len > 0))
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "agent or remote_name is NULL, or msg is NULL "
                                               "with a length");
    ctx = agent->ctx;
    if (len > ctx->params.max_sync_message)
        MPIXFER__FAIL(MPIXFER_ERR_TOO_LARGE,
                      "sync message of %zu bytes exceeds the limit of %zu "
                      "(MPIXFER_MAX_SYNC_MESSAGE)",
                      len, ctx->params.max_sync_message);
    if (!mpixfer__name_valid(remote_name))
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "remote name must be 1..%d bytes",
                      MPIXFER__NAME_MAX);

    mpixfer__lock(ctx);
    if (!find_route(ctx, agent, remote_name, &to)) {
        mpixfer__unlock(ctx);
        MPIXFER__FAIL(MPIXFER_ERR_NOT_FOUND,
                      "agent '%s' does not know '%s' (load it or bootstrap first)", agent->name,
                      remote_name);
    }
    st = mpixfer__ctrl_send(ctx, to, MPIXFER__CTRL_SYNC, agent->name, remote_name, msg, len);
    if (st == MPIXFER_OK)
        agent->tel.sync_sent++;
    mpixfer__progress_locked(ctx);
    mpixfer__unlock(ctx);
    return st;
}

mpixfer_status_t mpixfer_get_notified_sync_messages(mpixfer_agent_t *agent,
                                                    mpixfer_sync_message_t **msgs_p,
                                                    size_t *count_p)
{
    mpixfer_context_t *ctx;
    mpixfer_sync_message_t *out;
    size_t n = 0, i = 0;

    if (agent == NULL || msgs_p == NULL || count_p == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "agent, msgs_p or count_p is NULL");
    ctx = agent->ctx;
    mpixfer__lock(ctx);
    mpixfer__progress_locked(ctx);
    for (mpixfer__msg_t *m = agent->inbox_head; m != NULL; m = m->next)
        n++;
    if (n == 0) {
        mpixfer__unlock(ctx);
        *msgs_p = NULL;
        *count_p = 0;
        return MPIXFER_OK;
    }
    out = calloc(n, sizeof(*out));
    if (out == NULL) {
        mpixfer__unlock(ctx);
        return MPIXFER_ERR_NO_MEMORY; /* the inbox is kept for the next call */
    }
    while (agent->inbox_head) {
        mpixfer__msg_t *m = agent->inbox_head;
        agent->inbox_head = m->next;
        out[i].agent_name = m->sender;
        out[i].data = m->data;
        out[i].len = m->len;
        i++;
        free(m);
    }
    agent->inbox_tail = NULL;
    mpixfer__unlock(ctx);
    *msgs_p = out;
    *count_p = n;
    return MPIXFER_OK;
}

void mpixfer_sync_messages_free(mpixfer_sync_message_t *msgs, size_t count)
{
    if (msgs == NULL)
        return;
    for (size_t i = 0; i < count; i++) {
        free(msgs[i].agent_name);
        free(msgs[i].data);
    }
    free(msgs);
}
