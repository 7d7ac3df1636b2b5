/* Links to separately launched MPI jobs: an MPI port, a thread that accepts on it, and
 * connections made from connection info that carries a port.
 *
 * Disaggregated serving starts prefill and decode as separate jobs; one MPI world for all
 * is what deprecated TensorRT-LLM's old MPI path. A listening agent's context listens on a
 * TCP port and puts "tcp:<host>:<port>" in its connection info; a process of another job
 * connects to it and both call MPI_Comm_join on the socket. Each side then holds an
 * intercommunicator to one process of the other job. Control messages and data travel over
 * it two-sided (data with the staged protocol of staging.c): Open MPI 4.1 fails
 * MPI_Win_create_dynamic over the TCP path between jobs (MPI_ERR_WIN, measured here).
 *
 * Teardown: the side that drops its last use sends BYE and waits (bounded) for BYE_ACK,
 * the other side answers and both call MPI_Comm_disconnect. A peer that does not answer
 * (its job exited) gets MPI_Comm_free instead: local, so we never hang on a dead job.
 *
 * Open MPI 4.1 needs a running ompi-server and `--ompi-server file:URI` on every mpirun for
 * MPI_Comm_join between jobs, as for connect/accept (scripts/ompi-server starts one). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

#define BYE_WAIT_MS 5000

static int join_fd(int fd, MPI_Comm *inter);
static int dial(const char *addr);

struct mpixfer__learned {
    char *name;
    mpixfer__link_t *link;
    struct mpixfer__learned *next;
};

static mpixfer__link_t *link_new(mpixfer_context_t *ctx, MPI_Comm comm, const char *port,
                                 uint64_t peer_world)
{
    mpixfer__link_t *l = calloc(1, sizeof(*l));

    if (l == NULL)
        return NULL;
    if (port != NULL && (l->port = strdup(port)) == NULL) {
        free(l);
        return NULL;
    }
    l->comm = comm;
    l->peer_world = peer_world;
    MPI_Comm_set_errhandler(l->comm, MPI_ERRORS_RETURN);
    l->next = ctx->links;
    ctx->links = l;
    return l;
}

mpixfer_status_t mpixfer__link_connect(mpixfer_context_t *ctx, const char *port,
                                       uint64_t peer_world, mpixfer__link_t **link_p)
{
    MPI_Comm inter;
    mpixfer__link_t *l;
    int rc, fd;

    for (l = ctx->links; l != NULL; l = l->next)
        if (!l->closed && l->port != NULL && strcmp(l->port, port) == 0) {
            l->refs++;
            *link_p = l;
            return MPIXFER_OK;
        }
    if (ctx->thread_level < MPI_THREAD_MULTIPLE)
        LOG_INFO("connecting to another job without MPI_THREAD_MULTIPLE: only this "
                 "thread's calls will progress the link");
    fd = dial(port);
    if (fd < 0) {
        LOG_WARN("cannot reach '%s' of world %016llx: %s", port, (unsigned long long)peer_world,
                 strerror(errno));
        return MPIXFER_ERR_UNREACHABLE;
    }
    rc = join_fd(fd, &inter);
    if (rc != MPI_SUCCESS) {
        MPIXFER__MPI_ERR("MPI_Comm_join", rc);
        LOG_WARN("cannot join '%s' of world %016llx; with Open MPI both jobs need "
                 "--ompi-server file:URI of one running ompi-server (scripts/ompi-server)",
                 port, (unsigned long long)peer_world);
        return MPIXFER_ERR_UNREACHABLE;
    }
    l = link_new(ctx, inter, port, peer_world);
    if (l == NULL) {
        MPI_Comm_disconnect(&inter);
        return MPIXFER_ERR_NO_MEMORY;
    }
    l->refs = 1;
    LOG_INFO("connected to world %016llx through port '%s'", (unsigned long long)peer_world,
             port);
    *link_p = l;
    return MPIXFER_OK;
}

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

/* Requests still waiting on a closed link can never be answered. */
static void fail_requests(mpixfer_context_t *ctx, mpixfer__link_t *link)
{
    for (mpixfer_request_t *x = ctx->pending_head; x != NULL; x = x->next_pending)
        if (x->target.link == link && x->staged != NULL) {
            if (x->staged->err == MPIXFER_OK)
                x->staged->err = MPIXFER_ERR_UNREACHABLE;
            x->staged->inflight = 0;
        }
}

static void link_close(mpixfer_context_t *ctx, mpixfer__link_t *link, bool clean)
{
    int rc;

    if (link->closed)
        return;
    /* Sends still in flight on it stay valid requests after the communicator goes; the
     * send list frees their buffers as they complete. */
    link->closed = true;
    fail_requests(ctx, link);
    forget_routes(ctx, link);
    if (clean) {
        rc = MPI_Comm_disconnect(&link->comm);
        if (rc != MPI_SUCCESS)
            MPIXFER__MPI_ERR("MPI_Comm_disconnect", rc);
    } else {
        /* The peer is gone or silent: a local free cannot hang on it. */
        MPI_Comm_free(&link->comm);
    }
    LOG_INFO("link to world %016llx closed%s", (unsigned long long)link->peer_world,
             clean ? "" : " without the peer");
}

void mpixfer__link_on_bye(mpixfer_context_t *ctx, mpixfer__link_t *link, bool ack)
{
    if (link->closed)
        return;
    if (!ack) {
        /* The peer is leaving: agree, then both disconnect. */
        mpixfer__ctrl_send(ctx, (mpixfer__route_t){0, link}, MPIXFER__CTRL_BYE_ACK, "-", "-",
                           NULL, 0);
        mpixfer__sends_test(ctx);
    }
    /* Our remotes over it are stale now. */
    for (mpixfer_agent_t *a = ctx->agents; a != NULL; a = a->next)
        for (mpixfer__remote_t *r = a->remotes; r != NULL; r = r->next)
            if (r->link == link) {
                r->loaded = false;
                r->pending = false;
            }
    link_close(ctx, link, true);
}

void mpixfer__link_release(mpixfer_context_t *ctx, mpixfer__link_t *link)
{
    int64_t deadline;

    if (link->refs > 0)
        link->refs--;
    if (link->refs > 0 || link->closed || link->port == NULL)
        return; /* accepted links are closed by their connecting side (or the context) */
    if (mpixfer__ctrl_send(ctx, (mpixfer__route_t){0, link}, MPIXFER__CTRL_BYE, "-", "-", NULL,
                           0) != MPIXFER_OK) {
        link_close(ctx, link, false);
        return;
    }
    deadline = mpixfer__now_ns() + (int64_t)BYE_WAIT_MS * 1000000;
    while (!link->closed && mpixfer__now_ns() < deadline) {
        /* Every link, not just this one: the peer may be closing its own link to us at
         * the same moment and waits for our answer on that one. */
        mpixfer__links_poll(ctx);
        mpixfer__sends_test(ctx);
        if (!link->closed)
            sched_yield();
    }
    if (!link->closed) {
        LOG_WARN("the other job did not answer BYE in %d ms; dropping the link", BYE_WAIT_MS);
        link_close(ctx, link, false);
    }
}

int mpixfer__links_poll(mpixfer_context_t *ctx)
{
    int work = 0;
    for (mpixfer__link_t *l = ctx->links; l != NULL; l = l->next)
        if (!l->closed)
            work += mpixfer__ctrl_poll_comm(ctx, l->comm, l);
    return work;
}

void mpixfer__links_close_all(mpixfer_context_t *ctx)
{
    for (mpixfer__link_t *l = ctx->links; l != NULL; l = l->next)
        if (!l->closed) {
            l->refs = 1;
            if (l->port == NULL)
                l->port = strdup("(accepted)"); /* lets release run the BYE exchange */
            mpixfer__link_release(ctx, l);
        }
    while (ctx->links != NULL) {
        mpixfer__link_t *l = ctx->links;
        ctx->links = l->next;
        free(l->port);
        free(l);
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

/* ------------------------------------------------------------ accepting
 *
 * A thread blocked in MPI_Comm_accept stalls every communicator creation of the process
 * in Open MPI 4.1 (MPI_Comm_dup, window creation: the context-id allocation waits for it;
 * measured here). So the thread waits on a TCP socket instead, outside MPI, and only
 * calls MPI_Comm_join once a peer has connected, which the peer matches at once. */

static int join_fd(int fd, MPI_Comm *inter)
{
    int rc = MPI_Comm_join(fd, inter);
    close(fd);
    return rc;
}

static void *accept_main(void *arg)
{
    mpixfer_context_t *ctx = arg;

    while (!atomic_load(&ctx->accept_stop)) {
        struct pollfd p = {ctx->listen_fd, POLLIN, 0};
        MPI_Comm inter;
        int fd, rc;

        if (poll(&p, 1, 100) <= 0)
            continue;
        fd = accept4(ctx->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        rc = join_fd(fd, &inter);
        if (rc != MPI_SUCCESS) {
            MPIXFER__MPI_ERR("MPI_Comm_join", rc);
            continue;
        }
        mpixfer__lock(ctx);
        if (link_new(ctx, inter, NULL, 0) == NULL) {
            LOG_ERROR("out of memory accepting a connection; dropping it");
            MPI_Comm_free(&inter);
        } else {
            LOG_INFO("accepted a connection from another job");
        }
        mpixfer__unlock(ctx);
    }
    return NULL;
}

/* Lock held. */
mpixfer_status_t mpixfer__listen_acquire(mpixfer_context_t *ctx)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    const char *host = getenv("MPIXFER_LISTEN_HOST");
    char hostname[256];
    int fd;

    if (ctx->listen_users++ > 0)
        return MPIXFER_OK;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        LOG_WARN("cannot listen on TCP (%s): agents of other jobs cannot connect to this one",
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        /* Listening within the job still works through the progress thread. */
        return MPIXFER_OK;
    }
    if (host == NULL || *host == '\0') {
        if (gethostname(hostname, sizeof(hostname) - 1) != 0)
            strcpy(hostname, "127.0.0.1");
        hostname[sizeof(hostname) - 1] = '\0';
        host = hostname;
    }
    snprintf(ctx->port, sizeof(ctx->port), "tcp:%s:%u", host, (unsigned)ntohs(a.sin_port));
    ctx->listen_fd = fd;
    ctx->has_port = true;
    atomic_store(&ctx->accept_stop, false);
    if (pthread_create(&ctx->accept_thread, NULL, accept_main, ctx) != 0) {
        close(fd);
        ctx->has_port = false;
        ctx->listen_users--;
        LOG_ERROR("could not start the accept thread");
        return MPIXFER_ERR_NO_MEMORY;
    }
    ctx->accept_running = true;
    LOG_INFO("listening for other jobs on %s", ctx->port);
    return MPIXFER_OK;
}

void mpixfer__listen_release(mpixfer_context_t *ctx)
{
    pthread_t t;

    mpixfer__lock(ctx);
    if (ctx->listen_users > 0)
        ctx->listen_users--;
    if (ctx->listen_users > 0 || !ctx->accept_running) {
        mpixfer__unlock(ctx);
        return;
    }
    ctx->accept_running = false;
    ctx->has_port = false;
    t = ctx->accept_thread;
    atomic_store(&ctx->accept_stop, true);
    mpixfer__unlock(ctx);
    pthread_join(t, NULL);
    close(ctx->listen_fd);
}

/* "tcp:<host>:<port>" -> a connected socket, or -1. */
static int dial(const char *addr)
{
    char host[256];
    const char *colon;
    struct addrinfo hints, *res = NULL;
    int fd = -1;

    if (strncmp(addr, "tcp:", 4) != 0 || (colon = strrchr(addr + 4, ':')) == NULL ||
        (size_t)(colon - (addr + 4)) >= sizeof(host))
        return -1;
    memcpy(host, addr + 4, (size_t)(colon - (addr + 4)));
    host[colon - (addr + 4)] = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
        return -1;
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}
