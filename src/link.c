/* Links: agents of separately launched processes (each its own MPI world) reach each other
 * without MPI, over an authenticated TCP stream for control and, for the bytes, the
 * initiator's own cross-memory copies on one host or UCX's UCP RMA (link_data.c).
 *
 * Why not MPI: between separate jobs Open MPI 4.1.4 needs ompi-server, moved 0.034 GB/s
 * and hung in 13 % of connects (PMIx); MPICH's ch4:ucx has no ports at all.
 *
 * Why our own listener and not a ucp_listener: the listener is the front door of every
 * registered byte. Ours reads at most ~300 bytes from a stranger, runs the HMAC handshake
 * of handshake.c, and only then creates any state, sends a descriptor, a remote key or an
 * address. A UCX listener would parse a stranger's bytes in UCX's wire protocol first.
 *
 * One link is one TCP connection from an agent (the client) to one remote agent (the
 * server) whose secret it holds; control messages on it pass only between those two
 * names. The server keeps serving after the client goes; the client learns of a dead or
 * refusing peer from the stream (EOF, reset), and fails its requests at once.
 *
 * Every socket is non-blocking and driven by one thread per context (the link thread),
 * which sleeps in poll() when there is nothing to do, never spins, and calls no MPI. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "wire.h"

/* Handshakes in progress at once; a new connection beyond this evicts the oldest. */
#define HS_MAX_PENDING 256
/* An authenticated peer's frame is at most this plus the sync-message limit. */
#define FRAME_MAX_BASE ((size_t)64 << 20)
#define FRAME_HEADER 5

enum {
    LF_WELCOME = 1,  /* server -> client: pid, cookie address, cookie, boot id */
    LF_DESC_REQ = 2, /* client -> server: flags (bit 0: UCX: worker address, rkeys) */
    LF_DESC_REP = 3, /* server -> client: descriptor [+ UCX section] */
    LF_CTRL = 4,     /* a control message (notify.c's wire form) */
    LF_DESC_NAK = 5  /* server -> client: the agent is gone */
};

enum { HS_WAIT_HELLO, HS_WAIT_AUTH };

/* A connection that has not proven anything yet. Fixed size: no allocation per byte. */
typedef struct hs_conn {
    int fd;
    int state;
    bool known; /* the agent asked for exists (else the challenge is random) */
    unsigned char buf[MPIXFER__HS_MAX];
    size_t len, need;
    unsigned char key[MPIXFER__KEY_LEN];
    unsigned char nonce_c[MPIXFER__HS_NONCE], nonce_s[MPIXFER__HS_NONCE];
    char name[MPIXFER__NAME_MAX + 1];
    int64_t deadline_ns;
    struct hs_conn *next;
} hs_conn_t;

struct mpixfer__links {
    int listen_fd;
    int wake_fd;    /* eventfd: new sockets, output waiting */
    char addr[128]; /* "ip:port" in connection info and descriptors */
    hs_conn_t *hs;
    unsigned nhs;
    pthread_t thread;
    bool thread_running;
    atomic_bool stop;
    unsigned char cookie[16]; /* read by a same-host peer to prove cross-memory copies work */
    unsigned char boot_id[16];
    int64_t last_refusal_log_ns;
    unsigned long refusals_unlogged;
};

struct mpixfer__learned {
    char *name;
    mpixfer__link_t *link;
    struct mpixfer__learned *next;
};

static void link_fail(mpixfer_context_t *ctx, mpixfer__link_t *l, mpixfer_status_t why);
static void wake(mpixfer_context_t *ctx);

static int64_t auth_timeout_ns(void)
{
    static int64_t v;
    if (v == 0) {
        const char *s = getenv("MPIXFER_LINK_AUTH_TIMEOUT_MS");
        long ms = s && *s ? strtol(s, NULL, 10) : 2000;
        v = (ms > 0 ? ms : 2000) * 1000000LL;
    }
    return v;
}

/* Refusals: counted always, logged at most once a second (a flood must not flood logs). */
static void refuse(mpixfer_context_t *ctx, const char *why)
{
    int64_t now = mpixfer__now_ns();
    struct mpixfer__links *lk = ctx->lk;

    ctx->stats.links_refused++;
    if (now - lk->last_refusal_log_ns >= 1000000000LL) {
        LOG_WARN("link listener %s: refused a connection (%s)%s", lk->addr, why,
                 lk->refusals_unlogged ? "; more refusals since the last report" : "");
        lk->last_refusal_log_ns = now;
        lk->refusals_unlogged = 0;
    } else {
        lk->refusals_unlogged++;
    }
}

static void read_boot_id(unsigned char out[16])
{
    char s[64] = {0};
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");

    memset(out, 0, 16);
    if (f == NULL)
        return;
    if (fgets(s, sizeof s, f) != NULL) {
        size_t j = 0;
        for (size_t i = 0; s[i] && j < 32; i++) {
            int v = (s[i] >= '0' && s[i] <= '9')   ? s[i] - '0'
                    : (s[i] >= 'a' && s[i] <= 'f') ? s[i] - 'a' + 10
                                                   : -1;
            if (v < 0)
                continue;
            out[j / 2] = (unsigned char)(out[j / 2] << 4 | v);
            j++;
        }
    }
    fclose(f);
}

/* -------------------------------------------------------------- set-up */

static void *link_main(void *arg);

/* The link machinery of @p ctx: the thread, and the listener unless @p listen is false.
 * Lock held. */
static mpixfer_status_t links_start(mpixfer_context_t *ctx)
{
    struct mpixfer__links *lk;

    if (ctx->lk != NULL)
        return MPIXFER_OK;
    lk = calloc(1, sizeof(*lk));
    if (lk == NULL)
        return MPIXFER_ERR_NO_MEMORY;
    lk->listen_fd = -1;
    lk->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (lk->wake_fd < 0 || mpixfer__random(lk->cookie, sizeof lk->cookie) != MPIXFER_OK) {
        if (lk->wake_fd >= 0)
            close(lk->wake_fd);
        free(lk);
        MPIXFER__FAIL(MPIXFER_ERR_IO, "cannot create the link thread's eventfd: %s",
                      strerror(errno));
    }
    read_boot_id(lk->boot_id);
    ctx->lk = lk;
    atomic_store(&lk->stop, false);
    if (pthread_create(&lk->thread, NULL, link_main, ctx) != 0) {
        close(lk->wake_fd);
        free(lk);
        ctx->lk = NULL;
        MPIXFER__FAIL(MPIXFER_ERR_NO_MEMORY, "could not start the link thread");
    }
    lk->thread_running = true;
    return MPIXFER_OK;
}

/* The IPv4 address of @p host, or false. */
static bool resolve4(const char *host, struct in_addr *out)
{
    struct addrinfo hints = {0}, *res = NULL;

    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL)
        return false;
    *out = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
    freeaddrinfo(res);
    return true;
}

mpixfer_status_t mpixfer__listen_ensure(mpixfer_context_t *ctx)
{
    struct mpixfer__links *lk;
    const char *host = getenv("MPIXFER_LISTEN_HOST");
    const char *mode = getenv("MPIXFER_LINK");
    char hostname[256];
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    struct in_addr adv;
    int fd;
    mpixfer_status_t st;

    if (mode != NULL && strcmp(mode, "none") == 0)
        return MPIXFER_ERR_UNSUPPORTED;
    if ((st = links_start(ctx)) != MPIXFER_OK)
        return st;
    lk = ctx->lk;
    if (lk->listen_fd >= 0)
        return MPIXFER_OK;
    if (gethostname(hostname, sizeof(hostname) - 1) != 0)
        strcpy(hostname, "localhost");
    hostname[sizeof(hostname) - 1] = '\0';
    if (host == NULL || *host == '\0')
        host = hostname;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    if (!resolve4(host, &a.sin_addr))
        MPIXFER__FAIL(MPIXFER_ERR_UNREACHABLE,
                      "cannot resolve the link listen host '%s' to an IPv4 address (set "
                      "MPIXFER_LISTEN_HOST)",
                      host);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        MPIXFER__FAIL(MPIXFER_ERR_IO, "cannot listen for links on %s: %s", host, strerror(e));
    }
    /* Bound to every interface (asked for with 0.0.0.0): advertise the host name's. */
    adv = a.sin_addr;
    if (adv.s_addr == htonl(INADDR_ANY) && !resolve4(hostname, &adv))
        adv.s_addr = htonl(INADDR_LOOPBACK);
    snprintf(lk->addr, sizeof lk->addr, "%s:%u", inet_ntoa(adv), (unsigned)ntohs(a.sin_port));
    lk->listen_fd = fd;
    wake(ctx);
    LOG_INFO("listening for links on %s", lk->addr);
    return MPIXFER_OK;
}

const char *mpixfer__listen_addr(const mpixfer_context_t *ctx)
{
    return ctx->lk != NULL && ctx->lk->listen_fd >= 0 ? ctx->lk->addr : NULL;
}

static void wake(mpixfer_context_t *ctx)
{
    uint64_t one = 1;
    if (ctx->lk != NULL && write(ctx->lk->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        LOG_DEBUG("waking the link thread failed: %s", strerror(errno));
}

/* ------------------------------------------------------------- output */

static void obufs_free(mpixfer__obuf_t **head, mpixfer__obuf_t **tail)
{
    while (*head != NULL) {
        mpixfer__obuf_t *o = *head;
        *head = o->next;
        free(o->buf);
        free(o);
    }
    *tail = NULL;
}

/* Write what is queued; false when the peer is gone. */
static bool flush_out(mpixfer_context_t *ctx, mpixfer__link_t *l)
{
    (void)ctx;
    while (l->out_head != NULL) {
        mpixfer__obuf_t *o = l->out_head;
        ssize_t n = send(l->fd, o->buf + o->off, o->n - o->off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return true;
            return false;
        }
        o->off += (size_t)n;
        if (o->off < o->n)
            return true;
        l->out_head = o->next;
        if (l->out_head == NULL)
            l->out_tail = NULL;
        free(o->buf);
        free(o);
    }
    return true;
}

/* Queue @p buf (owned from now on) on @p l: held until the handshake ends when @p hold. */
static mpixfer_status_t queue_buf(mpixfer_context_t *ctx, mpixfer__link_t *l, unsigned char *buf,
                                  size_t n, bool hold)
{
    mpixfer__obuf_t *o = malloc(sizeof(*o));

    if (o == NULL) {
        free(buf);
        return MPIXFER_ERR_NO_MEMORY;
    }
    *o = (mpixfer__obuf_t){buf, n, 0, NULL};
    if (hold) {
        if (l->held_tail)
            l->held_tail->next = o;
        else
            l->held_head = o;
        l->held_tail = o;
        return MPIXFER_OK;
    }
    if (l->out_tail)
        l->out_tail->next = o;
    else
        l->out_head = o;
    l->out_tail = o;
    if (l->fd >= 0 && l->state != MPIXFER__LINK_CONNECTING) {
        if (!flush_out(ctx, l)) {
            link_fail(ctx, l, MPIXFER_ERR_UNREACHABLE);
            return MPIXFER_ERR_UNREACHABLE;
        }
    }
    if (l->out_head != NULL)
        wake(ctx); /* the thread waits for the socket to drain */
    return MPIXFER_OK;
}

static mpixfer_status_t send_frame(mpixfer_context_t *ctx, mpixfer__link_t *l, int type,
                                   const void *p1, size_t n1, const void *p2, size_t n2)
{
    size_t n = FRAME_HEADER + n1 + n2;
    unsigned char *b = malloc(n);

    if (b == NULL)
        return MPIXFER_ERR_NO_MEMORY;
    mpixfer__put32(b, (uint32_t)(n - 4));
    b[4] = (unsigned char)type;
    if (n1)
        memcpy(b + FRAME_HEADER, p1, n1);
    if (n2)
        memcpy(b + FRAME_HEADER + n1, p2, n2);
    return queue_buf(ctx, l, b, n, false);
}

mpixfer_status_t mpixfer__link_post(mpixfer_context_t *ctx, mpixfer__link_t *l, unsigned char *buf,
                                    size_t n)
{
    unsigned char *b;

    if (l->closed) {
        free(buf);
        MPIXFER__FAIL(l->err != MPIXFER_OK ? l->err : MPIXFER_ERR_UNREACHABLE,
                      "the link to '%s' is closed", l->peer_name);
    }
    if (n > UINT32_MAX - FRAME_HEADER) {
        free(buf);
        return MPIXFER_ERR_TOO_LARGE;
    }
    /* One allocation for header and message (messages are small). */
    b = malloc(FRAME_HEADER + n);
    if (b == NULL) {
        free(buf);
        return MPIXFER_ERR_NO_MEMORY;
    }
    mpixfer__put32(b, (uint32_t)(n + 1));
    b[4] = LF_CTRL;
    memcpy(b + FRAME_HEADER, buf, n);
    free(buf);
    /* Until the peer has accepted us nothing but the handshake may cross: keep it. */
    return queue_buf(ctx, l, b, FRAME_HEADER + n, l->state != MPIXFER__LINK_READY);
}

/* -------------------------------------------------------------- routes */

static void forget_routes(mpixfer_context_t *ctx, mpixfer__link_t *link)
{
    for (struct mpixfer__learned **pp = &ctx->learned; *pp != NULL;) {
        struct mpixfer__learned *e = *pp;
        if (e->link == link) {
            *pp = e->next;
            free(e->name);
            free(e);
        } else {
            pp = &e->next;
        }
    }
}

void mpixfer__route_learn(mpixfer_context_t *ctx, const char *name, mpixfer__link_t *link)
{
    struct mpixfer__learned *e;

    for (e = ctx->learned; e != NULL; e = e->next)
        if (strcmp(e->name, name) == 0) {
            e->link = link;
            return;
        }
    e = calloc(1, sizeof(*e));
    if (e == NULL || (e->name = strdup(name)) == NULL) {
        free(e);
        return; /* only a lost shortcut: the agent can still be loaded explicitly */
    }
    e->link = link;
    e->next = ctx->learned;
    ctx->learned = e;
}

mpixfer__link_t *mpixfer__route_lookup(mpixfer_context_t *ctx, const char *name)
{
    for (struct mpixfer__learned *e = ctx->learned; e != NULL; e = e->next)
        if (strcmp(e->name, name) == 0 && !e->link->closed)
            return e->link;
    return NULL;
}

/* ------------------------------------------------------------- closing */

static void link_free(mpixfer__link_t *l)
{
    obufs_free(&l->out_head, &l->out_tail);
    obufs_free(&l->held_head, &l->held_tail);
    free(l->in);
    free(l->local_name);
    free(l->peer_name);
    free(l);
}

static void link_unlist(mpixfer_context_t *ctx, mpixfer__link_t *l)
{
    for (mpixfer__link_t **pp = &ctx->links; *pp != NULL; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            return;
        }
}

/* The peer is gone, refused us, or we are leaving: nothing more crosses @p l. */
static void link_fail(mpixfer_context_t *ctx, mpixfer__link_t *l, mpixfer_status_t why)
{
    if (l->closed)
        return;
    l->closed = true;
    l->err = why;
    if (l->fd >= 0) {
        close(l->fd);
        l->fd = -1;
    }
    obufs_free(&l->out_head, &l->out_tail);
    obufs_free(&l->held_head, &l->held_tail);
    forget_routes(ctx, l);
    mpixfer__link_data_fail(ctx, l, why);
    /* Requests still waiting on the link can never be answered. Chunks we sent may still
     * be read by a peer that is only slow (our stream stays readable to it after we close
     * it), so they count as written until they expire; a peer whose stream broke
     * (UNREACHABLE) has exited or discarded them. */
    for (mpixfer_request_t *x = ctx->pending_head; x != NULL; x = x->next_pending)
        if (x->target.link == l && x->staged != NULL) {
            if (x->staged->err == MPIXFER_OK)
                x->staged->err = why;
            mpixfer__staged_abandon(ctx, x, why != MPIXFER_ERR_UNREACHABLE);
        }
    for (mpixfer_agent_t *a = ctx->agents; a != NULL; a = a->next)
        for (mpixfer__remote_t *r = a->remotes; r != NULL; r = r->next)
            if (r->link == l) {
                r->loaded = false;
                r->pending = false;
            }
    if (why == MPIXFER_ERR_DENIED)
        LOG_WARN("link from '%s' to '%s' at %s: access denied (the key in the connection info "
                 "or descriptor is not the agent's)",
                 l->local_name, l->peer_name, l->peer_addr);
    else if (!l->server)
        LOG_INFO("link from '%s' to '%s' closed: %s", l->local_name, l->peer_name,
                 mpixfer_strerror(why));
}

/* What we said before leaving still reaches the peer (a last sync message): write it out,
 * bounded, and end our direction of the stream before closing. */
static void link_drain(mpixfer_context_t *ctx, mpixfer__link_t *l)
{
    int64_t deadline = mpixfer__now_ns() + 1000 * 1000000LL;
    char sink[256];

    if (l->closed || l->state != MPIXFER__LINK_READY)
        return;
    while (l->out_head != NULL && mpixfer__now_ns() < deadline) {
        struct pollfd p = {l->fd, POLLOUT, 0};
        if (!flush_out(ctx, l))
            return;
        if (l->out_head != NULL)
            poll(&p, 1, 10);
    }
    shutdown(l->fd, SHUT_WR);
    /* Unread input at close would make the kernel reset the connection. */
    while (recv(l->fd, sink, sizeof sink, MSG_DONTWAIT) > 0)
        ;
}

void mpixfer__link_release(mpixfer_context_t *ctx, mpixfer__link_t *l)
{
    if (l->refs > 0)
        l->refs--;
    if (l->refs > 0)
        return;
    link_drain(ctx, l);
    link_fail(ctx, l, MPIXFER_ERR_CANCELED);
    link_unlist(ctx, l);
    mpixfer__link_data_free(ctx, l);
    link_free(l);
}

void mpixfer__links_close_all(mpixfer_context_t *ctx)
{
    struct mpixfer__links *lk = ctx->lk;
    pthread_t t;

    if (lk == NULL)
        return;
    /* The thread takes the lock: stop it outside. */
    atomic_store(&lk->stop, true);
    wake(ctx);
    t = lk->thread;
    if (lk->thread_running) {
        lk->thread_running = false;
        mpixfer__unlock(ctx);
        pthread_join(t, NULL);
        mpixfer__lock(ctx);
    }
    while (ctx->links != NULL) {
        mpixfer__link_t *l = ctx->links;
        link_drain(ctx, l);
        link_fail(ctx, l, MPIXFER_ERR_CANCELED);
        ctx->links = l->next;
        /* Remotes still naming a client link: they are being destroyed with the context. */
        for (mpixfer_agent_t *a = ctx->agents; a != NULL; a = a->next)
            for (mpixfer__remote_t *r = a->remotes; r != NULL; r = r->next)
                if (r->link == l)
                    r->link = NULL;
        mpixfer__link_data_free(ctx, l);
        link_free(l);
    }
    while (lk->hs != NULL) {
        hs_conn_t *h = lk->hs;
        lk->hs = h->next;
        close(h->fd);
        free(h);
    }
    if (lk->listen_fd >= 0)
        close(lk->listen_fd);
    close(lk->wake_fd);
    mpixfer__link_data_fini(ctx);
    free(lk);
    ctx->lk = NULL;
}

/* ------------------------------------------------------------ connecting */

static mpixfer__link_t *link_new(mpixfer_context_t *ctx, int fd, bool server, const char *local,
                                 const char *peer)
{
    mpixfer__link_t *l = calloc(1, sizeof(*l));

    if (l == NULL)
        return NULL;
    l->fd = fd;
    l->server = server;
    l->local_name = strdup(local);
    l->peer_name = strdup(peer);
    if (l->local_name == NULL || l->peer_name == NULL) {
        free(l->local_name);
        free(l->peer_name);
        free(l);
        return NULL;
    }
    l->next = ctx->links;
    ctx->links = l;
    return l;
}

mpixfer_status_t mpixfer__link_connect(mpixfer_context_t *ctx, mpixfer_agent_t *agent,
                                       const char *peer_name, const char *addr,
                                       const unsigned char key[MPIXFER__KEY_LEN],
                                       uint64_t peer_world, mpixfer__link_t **link_p)
{
    char host[128];
    const char *colon = strrchr(addr, ':');
    struct sockaddr_in sa = {0};
    unsigned char hello[MPIXFER__HS_MAX];
    mpixfer__link_t *l;
    unsigned long port;
    char *end;
    mpixfer_status_t st;
    int fd, one = 1;

    if (colon == NULL || (size_t)(colon - addr) >= sizeof host)
        MPIXFER__FAIL(MPIXFER_ERR_BAD_DESC, "link address '%.64s' is not <ip>:<port>", addr);
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    port = strtoul(colon + 1, &end, 10);
    sa.sin_family = AF_INET;
    if (*end != '\0' || port == 0 || port > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        MPIXFER__FAIL(MPIXFER_ERR_BAD_DESC, "link address '%.64s' is not <ip>:<port>", addr);
    sa.sin_port = htons((uint16_t)port);
    if ((st = links_start(ctx)) != MPIXFER_OK)
        return st;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        MPIXFER__FAIL(MPIXFER_ERR_IO, "socket: %s", strerror(errno));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        MPIXFER__FAIL(MPIXFER_ERR_UNREACHABLE, "cannot connect to '%s' at %s: %s", peer_name, addr,
                      strerror(e));
    }
    l = link_new(ctx, fd, false, agent->name, peer_name);
    if (l == NULL) {
        close(fd);
        return MPIXFER_ERR_NO_MEMORY;
    }
    snprintf(l->peer_addr, sizeof l->peer_addr, "%s", addr);
    memcpy(l->key, key, MPIXFER__KEY_LEN);
    l->peer_world = peer_world;
    l->refs = 1;
    l->state = MPIXFER__LINK_CONNECTING;
    l->deadline_ns = mpixfer__now_ns() + (int64_t)ctx->params.stall_timeout_ms * 1000000;
    if ((st = mpixfer__random(l->nonce_c, sizeof l->nonce_c)) != MPIXFER_OK) {
        mpixfer__link_release(ctx, l);
        return st;
    }
    size_t n = mpixfer__hs_hello_encode(l->nonce_c, peer_name, hello);
    unsigned char *b = malloc(n);
    if (b == NULL) {
        mpixfer__link_release(ctx, l);
        return MPIXFER_ERR_NO_MEMORY;
    }
    memcpy(b, hello, n);
    queue_buf(ctx, l, b, n, false); /* leaves once connected */
    wake(ctx);
    *link_p = l;
    return MPIXFER_OK;
}

/* --------------------------------------------------------- listener side */

static void hs_close(struct mpixfer__links *lk, hs_conn_t **pp)
{
    hs_conn_t *h = *pp;
    *pp = h->next;
    close(h->fd);
    free(h);
    lk->nhs--;
}

static void accept_new(mpixfer_context_t *ctx)
{
    struct mpixfer__links *lk = ctx->lk;

    for (int i = 0; i < 64 && lk->listen_fd >= 0; i++) {
        int fd = accept4(lk->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK), one = 1;
        hs_conn_t *h;

        if (fd < 0)
            return;
        if (lk->nhs >= HS_MAX_PENDING) {
            /* The oldest handshake (the list's tail) makes room. */
            hs_conn_t **pp = &lk->hs;
            while ((*pp)->next != NULL)
                pp = &(*pp)->next;
            hs_close(lk, pp);
            refuse(ctx, "too many handshakes at once");
        }
        h = calloc(1, sizeof(*h));
        if (h == NULL) {
            close(fd);
            refuse(ctx, "out of memory");
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        h->fd = fd;
        h->state = HS_WAIT_HELLO;
        h->need = MPIXFER__HS_HELLO_FIXED;
        h->deadline_ns = mpixfer__now_ns() + auth_timeout_ns();
        h->next = lk->hs;
        lk->hs = h;
        lk->nhs++;
    }
}

/* Read into h->buf up to h->need bytes; -1: the peer closed or failed. */
static int hs_read(hs_conn_t *h)
{
    while (h->len < h->need) {
        ssize_t n = recv(h->fd, h->buf + h->len, h->need - h->len, MSG_DONTWAIT);
        if (n == 0)
            return -1;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
        h->len += (size_t)n;
    }
    return 1;
}

/* A handshake step: 0 go on, 1 done (now a link), -1 refused. */
static int hs_advance(mpixfer_context_t *ctx, hs_conn_t *h)
{
    for (;;) {
        int rc = hs_read(h);
        mpixfer_status_t st;

        if (rc < 0) {
            refuse(ctx, h->state == HS_WAIT_HELLO ? "closed before its hello"
                                                  : "closed before its proof");
            return -1;
        }
        if (rc == 0)
            return 0;
        if (h->state == HS_WAIT_HELLO) {
            mpixfer__hello_t hello;
            unsigned char chal[MPIXFER__HS_NONCE + MPIXFER__HS_MAC];
            mpixfer_agent_t *a;

            st = mpixfer__hs_hello_parse(h->buf, h->len, &h->need, &hello);
            if (st == MPIXFER_IN_PROGRESS)
                continue; /* the name follows */
            if (st != MPIXFER_OK) {
                refuse(ctx, "not a mpixfer hello");
                return -1;
            }
            memcpy(h->nonce_c, hello.nonce, sizeof h->nonce_c);
            snprintf(h->name, sizeof h->name, "%s", hello.name);
            a = mpixfer__find_local_agent(ctx, hello.name);
            h->known = a != NULL && a->reachable;
            if (h->known)
                memcpy(h->key, a->key, MPIXFER__KEY_LEN);
            else if (mpixfer__random(h->key, sizeof h->key) != MPIXFER_OK)
                return -1;
            if (mpixfer__random(h->nonce_s, sizeof h->nonce_s) != MPIXFER_OK)
                return -1;
            memcpy(chal, h->nonce_s, MPIXFER__HS_NONCE);
            mpixfer__hs_mac_server(h->key, h->nonce_c, h->nonce_s, h->name,
                                   chal + MPIXFER__HS_NONCE);
            /* 64 bytes into an empty socket buffer: a short write means a broken peer. */
            if (send(h->fd, chal, sizeof chal, MSG_NOSIGNAL | MSG_DONTWAIT) !=
                (ssize_t)sizeof chal) {
                refuse(ctx, "cannot send the challenge");
                return -1;
            }
            h->state = HS_WAIT_AUTH;
            h->len = 0;
            h->need = MPIXFER__HS_AUTH_FIXED;
            continue;
        }
        {
            mpixfer__auth_t auth;
            unsigned char mac[MPIXFER__HS_MAC];

            st = mpixfer__hs_auth_parse(h->buf, h->len, &h->need, &auth);
            if (st == MPIXFER_IN_PROGRESS)
                continue;
            if (st != MPIXFER_OK) {
                refuse(ctx, "malformed proof");
                return -1;
            }
            mpixfer__hs_mac_client(h->key, h->nonce_c, h->nonce_s, h->name, auth.ident, auth.name,
                                   mac);
            if (!mpixfer__hs_mac_equal(mac, auth.mac) || !h->known) {
                refuse(ctx, "wrong key");
                return -1;
            }
            {
                mpixfer__link_t *l = link_new(ctx, h->fd, true, h->name, auth.name);
                unsigned char w[4 + 8 + 16 + 16];
                if (l == NULL)
                    return -1;
                h->fd = -1; /* the link owns it now */
                l->state = MPIXFER__LINK_READY;
                l->peer_world = auth.world;
                l->peer_rank = auth.rank;
                l->peer_pid = auth.pid;
                snprintf(l->peer_addr, sizeof l->peer_addr, "(accepted)");
                ctx->stats.links_accepted++;
                mpixfer__route_learn(ctx, auth.name, l);
                mpixfer__put32(w, (uint32_t)getpid());
                mpixfer__put64(w + 4, (uint64_t)(uintptr_t)ctx->lk->cookie);
                memcpy(w + 12, ctx->lk->cookie, 16);
                memcpy(w + 28, ctx->lk->boot_id, 16);
                send_frame(ctx, l, LF_WELCOME, w, sizeof w, NULL, 0);
                LOG_INFO("agent '%s' accepted a link from '%s' (world %016llx)", h->name, auth.name,
                         (unsigned long long)auth.world);
            }
            return 1;
        }
    }
}

static void hs_service(mpixfer_context_t *ctx)
{
    struct mpixfer__links *lk = ctx->lk;
    int64_t now = mpixfer__now_ns();

    for (hs_conn_t **pp = &lk->hs; *pp != NULL;) {
        hs_conn_t *h = *pp;
        int rc = hs_advance(ctx, h);
        if (rc == 0 && now > h->deadline_ns) {
            refuse(ctx, "no proof within the handshake timeout");
            rc = -1;
        }
        if (rc != 0) {
            if (h->fd < 0) {
                *pp = h->next;
                free(h);
                lk->nhs--;
            } else {
                hs_close(lk, pp);
            }
            continue;
        }
        pp = &h->next;
    }
}

/* ------------------------------------------------------------ link input */

static void on_frame(mpixfer_context_t *ctx, mpixfer__link_t *l, int type, const unsigned char *p,
                     size_t n)
{
    switch (type) {
    case LF_WELCOME: {
        unsigned char req[4];
        if (l->server || l->state != MPIXFER__LINK_WELCOME || n != 44) {
            link_fail(ctx, l, MPIXFER_ERR_BAD_DESC);
            return;
        }
        l->peer_pid = mpixfer__get32(p);
        l->same_host = memcmp(p + 28, ctx->lk->boot_id, 16) == 0;
        mpixfer__link_data_probe(ctx, l, mpixfer__get64(p + 4), p + 12);
        mpixfer__put32(req, l->cma ? 0 : 1);
        l->state = MPIXFER__LINK_DESC;
        send_frame(ctx, l, LF_DESC_REQ, req, 4, NULL, 0);
        return;
    }
    case LF_DESC_REQ: {
        mpixfer_agent_t *a = mpixfer__find_local_agent(ctx, l->local_name);
        void *blob = NULL, *extra = NULL;
        size_t len = 0, elen = 0;
        unsigned char hdr[4];
        if (!l->server || n != 4) {
            link_fail(ctx, l, MPIXFER_ERR_BAD_DESC);
            return;
        }
        if (a == NULL || mpixfer__desc_encode(a, false, &blob, &len) != MPIXFER_OK ||
            ((mpixfer__get32(p) & 1) &&
             mpixfer__link_data_export(ctx, a, &extra, &elen) != MPIXFER_OK)) {
            free(blob);
            send_frame(ctx, l, LF_DESC_NAK, NULL, 0, NULL, 0);
            return;
        }
        mpixfer__put32(hdr, (uint32_t)len);
        unsigned char *both = malloc(4 + len);
        if (both != NULL) {
            memcpy(both, hdr, 4);
            memcpy(both + 4, blob, len);
            send_frame(ctx, l, LF_DESC_REP, both, 4 + len, extra, elen);
        }
        free(both);
        free(blob);
        free(extra);
        return;
    }
    case LF_DESC_REP:
    case LF_DESC_NAK: {
        mpixfer_agent_t *a;
        mpixfer__remote_t *r;
        mpixfer__desc_t desc;
        size_t dl;
        if (l->server || l->state != MPIXFER__LINK_DESC) {
            link_fail(ctx, l, MPIXFER_ERR_BAD_DESC);
            return;
        }
        if (type == LF_DESC_NAK) {
            LOG_WARN("'%s' is gone from the process its connection info names", l->peer_name);
            link_fail(ctx, l, MPIXFER_ERR_NOT_FOUND);
            return;
        }
        if (n < 4 || (dl = mpixfer__get32(p)) > n - 4 ||
            mpixfer__desc_decode(p + 4, dl, ctx->params.max_desc_regions, &desc) != MPIXFER_OK) {
            link_fail(ctx, l, MPIXFER_ERR_BAD_DESC);
            return;
        }
        if (strcmp(desc.name, l->peer_name) != 0 || desc.world_id != l->peer_world ||
            (!l->cma && mpixfer__link_data_import(ctx, l, p + 4 + dl, n - 4 - dl) != MPIXFER_OK)) {
            mpixfer__desc_fini(&desc);
            link_fail(ctx, l, MPIXFER_ERR_BAD_DESC);
            return;
        }
        l->peer_world = desc.world_id;
        l->peer_rank = desc.rank;
        l->state = MPIXFER__LINK_READY;
        /* What was said before the peer accepted us may go now, in order. */
        if (l->held_head != NULL) {
            if (l->out_tail)
                l->out_tail->next = l->held_head;
            else
                l->out_head = l->held_head;
            l->out_tail = l->held_tail;
            l->held_head = l->held_tail = NULL;
            if (!flush_out(ctx, l)) {
                mpixfer__desc_fini(&desc);
                link_fail(ctx, l, MPIXFER_ERR_UNREACHABLE);
                return;
            }
        }
        a = mpixfer__find_local_agent(ctx, l->local_name);
        r = a ? mpixfer__find_remote(a, l->peer_name) : NULL;
        if (r == NULL || r->link != l) {
            mpixfer__desc_fini(&desc);
            return; /* invalidated meanwhile; the entry that holds l will release it */
        }
        if (r->from_blob) {
            mpixfer__desc_fini(&desc); /* the blob the caller loaded stays what is known */
        } else {
            mpixfer__desc_fini(&r->desc);
            r->desc = desc;
        }
        r->loaded = true;
        r->pending = false;
        LOG_DEBUG("agent '%s' reached '%s' over a link (%s)", a->name, r->name,
                  l->cma ? "cross-memory copies" : "UCX");
        return;
    }
    case LF_CTRL: {
        mpixfer__ctrl_t c;
        if (l->state != MPIXFER__LINK_READY || mpixfer__ctrl_decode(p, n, &c) != MPIXFER_OK ||
            strcmp(c.sender, l->peer_name) != 0 || strcmp(c.receiver, l->local_name) != 0 ||
            c.kind == MPIXFER__CTRL_DESC_REQ || c.kind == MPIXFER__CTRL_DESC_REP ||
            c.kind == MPIXFER__CTRL_DESC_NAK || c.kind == MPIXFER__CTRL_BYE ||
            c.kind == MPIXFER__CTRL_BYE_ACK) {
            /* Only the two agents the handshake named speak on a link. */
            LOG_WARN("link from '%s': a control message outside the link's two agents "
                     "dropped",
                     l->peer_name);
            return;
        }
        mpixfer__ctrl_dispatch(ctx, (mpixfer__route_t){0, l}, &c);
        return;
    }
    default:
        link_fail(ctx, l, MPIXFER_ERR_BAD_DESC);
    }
}

/* The client's challenge step: the server's proof, then ours. */
static void client_chal(mpixfer_context_t *ctx, mpixfer__link_t *l)
{
    unsigned char mac[MPIXFER__HS_MAC], ident[20], auth[MPIXFER__HS_MAX];
    const unsigned char *nonce_s = l->in, *mac_s = l->in + MPIXFER__HS_NONCE;
    size_t n;
    unsigned char *b;

    mpixfer__hs_mac_server(l->key, l->nonce_c, nonce_s, l->peer_name, mac);
    if (!mpixfer__hs_mac_equal(mac, mac_s)) {
        link_fail(ctx, l, MPIXFER_ERR_DENIED);
        return;
    }
    mpixfer__put64(ident, ctx->world_id);
    mpixfer__put32(ident + 8, (uint32_t)ctx->rank);
    mpixfer__put32(ident + 12, (uint32_t)getpid());
    mpixfer__put16(ident + 16, (uint16_t)strlen(l->local_name));
    mpixfer__put16(ident + 18, 0);
    mpixfer__hs_mac_client(l->key, l->nonce_c, nonce_s, l->peer_name, ident, l->local_name, mac);
    n = mpixfer__hs_auth_encode(mac, ctx->world_id, (uint32_t)ctx->rank, (uint32_t)getpid(),
                                l->local_name, auth);
    if ((b = malloc(n)) == NULL) {
        link_fail(ctx, l, MPIXFER_ERR_NO_MEMORY);
        return;
    }
    memcpy(b, auth, n);
    l->state = MPIXFER__LINK_WELCOME;
    queue_buf(ctx, l, b, n, false);
}

static size_t frame_max(const mpixfer_context_t *ctx)
{
    return FRAME_MAX_BASE + ctx->params.max_sync_message;
}

/* Read what has arrived on @p l and act on whole frames. */
static void link_input(mpixfer_context_t *ctx, mpixfer__link_t *l)
{
    for (int rounds = 0; rounds < 64 && !l->closed; rounds++) {
        size_t want;
        ssize_t n;

        if (l->state == MPIXFER__LINK_CHAL) {
            want = MPIXFER__HS_NONCE + MPIXFER__HS_MAC;
        } else if (l->in_len < FRAME_HEADER) {
            want = FRAME_HEADER;
        } else {
            size_t flen = (size_t)mpixfer__get32(l->in) + 4;
            if (flen < FRAME_HEADER || flen > frame_max(ctx)) {
                LOG_WARN("link with '%s': a %zu-byte frame is over the limit", l->peer_name, flen);
                link_fail(ctx, l, MPIXFER_ERR_BAD_DESC);
                return;
            }
            want = flen;
        }
        if (l->in_cap < want) {
            size_t cap = want < 4096 ? 4096 : want;
            unsigned char *p = realloc(l->in, cap);
            if (p == NULL) {
                link_fail(ctx, l, MPIXFER_ERR_NO_MEMORY);
                return;
            }
            l->in = p;
            l->in_cap = cap;
        }
        if (l->in_len < want) {
            n = recv(l->fd, l->in + l->in_len, want - l->in_len, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                /* Closed right after our proof: the server did not accept it. */
                link_fail(ctx, l,
                          l->state == MPIXFER__LINK_WELCOME ? MPIXFER_ERR_DENIED
                                                            : MPIXFER_ERR_UNREACHABLE);
                return;
            }
            if (n < 0)
                return;
            l->in_len += (size_t)n;
            if (l->in_len < want)
                continue;
        }
        if (l->state == MPIXFER__LINK_CHAL) {
            client_chal(ctx, l);
            l->in_len = 0;
            continue;
        }
        if (want == FRAME_HEADER && mpixfer__get32(l->in) + 4 > FRAME_HEADER)
            continue; /* header only so far */
        on_frame(ctx, l, l->in[4], l->in + FRAME_HEADER, want - FRAME_HEADER);
        l->in_len = 0;
        if (l->in_cap > (1u << 20)) {
            free(l->in); /* a large descriptor passed: do not keep its buffer */
            l->in = NULL;
            l->in_cap = 0;
        }
    }
}

static void link_service(mpixfer_context_t *ctx, mpixfer__link_t *l)
{
    if (l->closed)
        return;
    if (l->state == MPIXFER__LINK_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        struct pollfd p = {l->fd, POLLOUT, 0};
        if (poll(&p, 1, 0) <= 0)
            return;
        if (getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
            LOG_WARN("cannot connect to '%s' at %s: %s", l->peer_name, l->peer_addr,
                     strerror(err ? err : errno));
            link_fail(ctx, l, MPIXFER_ERR_UNREACHABLE);
            return;
        }
        l->state = MPIXFER__LINK_CHAL;
    }
    if (!flush_out(ctx, l)) {
        link_fail(ctx, l,
                  l->state == MPIXFER__LINK_WELCOME ? MPIXFER_ERR_DENIED : MPIXFER_ERR_UNREACHABLE);
        return;
    }
    link_input(ctx, l);
    if (!l->closed && l->state != MPIXFER__LINK_READY && mpixfer__now_ns() > l->deadline_ns) {
        LOG_WARN("link to '%s' at %s: no answer within the stall timeout (%u ms)", l->peer_name,
                 l->peer_addr, ctx->params.stall_timeout_ms);
        link_fail(ctx, l, MPIXFER_ERR_TIMEOUT);
    }
}

/* One pass over every socket. Lock held. */
static void links_service(mpixfer_context_t *ctx)
{
    accept_new(ctx);
    hs_service(ctx);
    for (mpixfer__link_t **pp = &ctx->links; *pp != NULL;) {
        mpixfer__link_t *l = *pp;
        link_service(ctx, l);
        /* A server's link lives as long as its peer: once closed nobody holds it. */
        if (l->closed && l->server) {
            *pp = l->next;
            mpixfer__link_data_free(ctx, l);
            link_free(l);
            continue;
        }
        pp = &l->next;
    }
    mpixfer__link_data_progress(ctx);
}

static void *link_main(void *arg)
{
    mpixfer_context_t *ctx = arg;
    struct mpixfer__links *lk = ctx->lk;
    struct pollfd *pf = NULL;
    size_t cap = 0;

    while (!atomic_load(&lk->stop)) {
        size_t n = 0;
        int64_t now = mpixfer__now_ns(), next = now + 200 * 1000000LL;
        int timeout, efd;

        mpixfer__lock(ctx);
        size_t want = 2 + lk->nhs + 1;
        for (mpixfer__link_t *l = ctx->links; l != NULL; l = l->next)
            want++;
        if (want > cap) {
            struct pollfd *p = realloc(pf, want * sizeof(*pf));
            if (p != NULL) {
                pf = p;
                cap = want;
            }
        }
        if (pf != NULL && cap >= want) {
            pf[n++] = (struct pollfd){lk->wake_fd, POLLIN, 0};
            if (lk->listen_fd >= 0)
                pf[n++] = (struct pollfd){lk->listen_fd, POLLIN, 0};
            for (hs_conn_t *h = lk->hs; h != NULL; h = h->next) {
                pf[n++] = (struct pollfd){h->fd, POLLIN, 0};
                if (h->deadline_ns < next)
                    next = h->deadline_ns;
            }
            for (mpixfer__link_t *l = ctx->links; l != NULL; l = l->next) {
                if (l->closed)
                    continue;
                short ev = POLLIN;
                if (l->out_head != NULL || l->state == MPIXFER__LINK_CONNECTING)
                    ev |= POLLOUT;
                pf[n++] = (struct pollfd){l->fd, ev, 0};
                if (l->state != MPIXFER__LINK_READY && l->deadline_ns < next)
                    next = l->deadline_ns;
            }
            if ((efd = mpixfer__link_data_wait_fd(ctx, &next)) >= 0)
                pf[n++] = (struct pollfd){efd, POLLIN, 0};
        }
        mpixfer__unlock(ctx);
        timeout = next <= now ? 0 : (int)((next - now + 999999) / 1000000);
        if (n > 0)
            poll(pf, n, timeout);
        else
            poll(NULL, 0, 10);
        {
            uint64_t v;
            if (read(lk->wake_fd, &v, sizeof v) < 0 && errno != EAGAIN)
                LOG_DEBUG("reading the link eventfd failed: %s", strerror(errno));
        }
        mpixfer__lock(ctx);
        if (!atomic_load(&lk->stop))
            links_service(ctx);
        mpixfer__unlock(ctx);
    }
    free(pf);
    return NULL;
}

void mpixfer__link_fail(mpixfer_context_t *ctx, mpixfer__link_t *l, mpixfer_status_t why)
{
    link_fail(ctx, l, why);
}
