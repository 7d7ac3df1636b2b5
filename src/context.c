/* Context: the dup'd communicator, the window, the lock; bootstrap. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "wire.h"

void mpixfer__lock(mpixfer_context_t *ctx)
{
    pthread_mutex_lock(&ctx->lock);
}

void mpixfer__unlock(mpixfer_context_t *ctx)
{
    pthread_mutex_unlock(&ctx->lock);
}

bool mpixfer__name_valid(const char *name)
{
    size_t n;

    if (name == NULL)
        return false;
    n = strnlen(name, MPIXFER__NAME_MAX + 1);
    return n >= 1 && n <= MPIXFER__NAME_MAX;
}

mpixfer_agent_t *mpixfer__find_local_agent(mpixfer_context_t *ctx, const char *name)
{
    for (mpixfer_agent_t *a = ctx->agents; a != NULL; a = a->next)
        if (strcmp(a->name, name) == 0)
            return a;
    return NULL;
}

static uint64_t random_world_id(void)
{
    uint64_t id = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    struct timespec ts;

    if (fd >= 0) {
        ssize_t n = read(fd, &id, sizeof(id));
        close(fd);
        if (n == (ssize_t)sizeof(id) && id != 0)
            return id;
    }
    /* No /dev/urandom: time and pid still separate worlds started apart. */
    clock_gettime(CLOCK_REALTIME, &ts);
    id = ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 16);
    return id ? id : 1;
}

static size_t env_size(const char *name, size_t dflt)
{
    const char *v = getenv(name);
    char *end = NULL;
    unsigned long long x;

    if (v == NULL || *v == '\0')
        return dflt;
    x = strtoull(v, &end, 0);
    if (end == v || *end != '\0') {
        LOG_WARN("%s=%s is not a number; using %zu", name, v, dflt);
        return dflt;
    }
    return (size_t)x;
}

/* True when UCX_TLS names tcp and nothing but shared-memory and self transports besides:
 * UCX then emulates RMA to other nodes with messages that need the target's progress. */
static bool ucx_tcp_only(void)
{
    static const char *const local_or_tcp[] = {"tcp",  "self", "sm",   "shm", "posix",
                                               "sysv", "cma",  "knem", "xpmem", "mm"};
    const char *tls = getenv("UCX_TLS");
    char buf[256], *save = NULL;
    bool tcp = false;

    /* "^x,y" excludes: whatever remains may be RDMA. */
    if (tls == NULL || tls[0] == '\0' || tls[0] == '^' || strlen(tls) >= sizeof buf)
        return false;
    strcpy(buf, tls);
    for (char *t = strtok_r(buf, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        bool known = false;
        for (size_t i = 0; i < sizeof local_or_tcp / sizeof *local_or_tcp && !known; i++)
            known = strcmp(t, local_or_tcp[i]) == 0;
        if (!known)
            return false;
        tcp = tcp || strcmp(t, "tcp") == 0;
    }
    return tcp;
}

/* The index of the value of environment variable @p var among the three @p names, or
 * @p dflt when it is unset, empty or none of them (then with a warning). */
static int env_choice(const char *var, const char *const names[3], int dflt)
{
    const char *e = getenv(var);

    if (e == NULL || e[0] == '\0')
        return dflt;
    for (int i = 0; i < 3; i++)
        if (strcmp(e, names[i]) == 0)
            return i;
    LOG_WARN("%s='%s' is none of %s, %s, %s; using %s", var, e, names[0], names[1], names[2],
             names[dflt]);
    return dflt;
}

/* MPIXFER_ISSUE=locked|auto|unlocked: the index is the issue_mode (see internal.h). */
static int issue_mode_from_env(void)
{
    static const char *const modes[3] = {"locked", "auto", "unlocked"};
    return env_choice("MPIXFER_ISSUE", modes, 1);
}

/* The params' data path; AUTO there defers to MPIXFER_DATA_PATH=auto|rma|messages (the
 * index is the mpixfer_data_path_t). */
static mpixfer_data_path_t wanted_data_path(mpixfer_data_path_t p)
{
    static const char *const paths[3] = {"auto", "rma", "messages"};
    if (p != MPIXFER_DATA_PATH_AUTO)
        return p;
    return (mpixfer_data_path_t)env_choice("MPIXFER_DATA_PATH", paths, MPIXFER_DATA_PATH_AUTO);
}

mpixfer_status_t mpixfer__node_ranks(const mpixfer_context_t *ctx, MPI_Comm node,
                                     int **node_rank_p)
{
    MPI_Group g_ctx = MPI_GROUP_NULL, g_node = MPI_GROUP_NULL;
    int *all = malloc(sizeof(int) * (size_t)ctx->size);
    int *map = malloc(sizeof(int) * (size_t)ctx->size);
    mpixfer_status_t st = MPIXFER_OK;
    int rc;

    if (all == NULL || map == NULL) {
        st = MPIXFER_ERR_NO_MEMORY;
        goto out;
    }
    for (int r = 0; r < ctx->size; r++)
        all[r] = r;
    MPI_Comm_group(ctx->comm, &g_ctx);
    MPI_Comm_group(node, &g_node);
    rc = MPI_Group_translate_ranks(g_ctx, ctx->size, all, g_node, map);
    if (rc != MPI_SUCCESS) {
        st = MPIXFER__MPI_ERR("MPI_Group_translate_ranks", rc);
        goto out;
    }
    *node_rank_p = map;
    map = NULL;
out:
    if (g_node != MPI_GROUP_NULL)
        MPI_Group_free(&g_node);
    if (g_ctx != MPI_GROUP_NULL)
        MPI_Group_free(&g_ctx);
    free(all);
    free(map);
    return st;
}

/* Collective: every process learns which ranks share its node, then picks per rank.
 * *node_rank_p: each rank's rank on this node (MPI_UNDEFINED elsewhere), for the caller to
 * free. */
static mpixfer_status_t choose_data_paths(mpixfer_context_t *ctx, int **node_rank_p)
{
    mpixfer_data_path_t want = wanted_data_path(ctx->params.data_path);
    MPI_Comm node = MPI_COMM_NULL;
    int *node_rank = NULL, remote = 0, rc;
    mpixfer_status_t st = MPIXFER_OK;

    ctx->peer_path = malloc((size_t)ctx->size);
    if (ctx->peer_path == NULL)
        return MPIXFER_ERR_NO_MEMORY;
    /* Every process splits, whatever it wants, so none waits in the collective alone. */
    rc = MPI_Comm_split_type(ctx->comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    if (rc != MPI_SUCCESS) {
        st = MPIXFER__MPI_ERR("MPI_Comm_split_type", rc);
        goto out;
    }
    if ((st = mpixfer__node_ranks(ctx, node, &node_rank)) != MPIXFER_OK)
        goto out;
    if (want != MPIXFER_DATA_PATH_AUTO) {
        /* Asked for explicitly: every peer, on this node or not. */
        memset(ctx->peer_path, want, (size_t)ctx->size);
        goto count;
    }
    want = ucx_tcp_only() ? MPIXFER_DATA_PATH_MESSAGES : MPIXFER_DATA_PATH_RMA;
    /* This node's processes share memory: RMA there is a copy that needs nobody's help. */
    for (int r = 0; r < ctx->size; r++)
        ctx->peer_path[r] = node_rank[r] != MPI_UNDEFINED ? MPIXFER_DATA_PATH_RMA : want;
count:
    for (int r = 0; r < ctx->size; r++)
        remote += MPIXFER__PATH(ctx, r) == MPIXFER_DATA_PATH_MESSAGES;
    if (remote > 0)
        LOG_INFO("%d of %d ranks are reached by messages (%s)", remote, ctx->size,
                 ctx->params.data_path == MPIXFER_DATA_PATH_MESSAGES ? "the params ask for it"
                 : getenv("MPIXFER_DATA_PATH") != NULL ? "MPIXFER_DATA_PATH"
                                                       : "UCX_TLS has TCP for the network");
    *node_rank_p = node_rank;
    node_rank = NULL;
out:
    if (node != MPI_COMM_NULL)
        MPI_Comm_free(&node);
    free(node_rank);
    return st;
}

/* Whether Open MPI serves the window with osc/rdma, the one component that reports info
 * key "no_locks" (4.1.4: osc/pt2pt and osc/ucx report no key). osc/pt2pt emulates RMA with
 * messages: a small MPI_Rput there is done at once (measured: 8 of 8) while the flush
 * needs the target, so the probe alone would be fooled; Open MPI falls back to it where
 * osc/rdma cannot create the window (unless excluded, as Debian's build does). */
static bool osc_rdma_window(mpixfer_context_t *ctx)
{
    MPI_Info info = MPI_INFO_NULL;
    char value[16];
    int flag = 0;

    if (MPI_Win_get_info(ctx->win, &info) != MPI_SUCCESS || info == MPI_INFO_NULL)
        return false;
    if (MPI_Info_get(info, "no_locks", (int)sizeof value - 1, value, &flag) != MPI_SUCCESS)
        flag = 0;
    MPI_Info_free(&info);
    return flag != 0;
}

/* Whether RMA to @p r is complete when MPI_Rput/MPI_Rget return: four of each to the
 * probe word at @p addr, every one done at its first MPI_Test. Emulated RMA (answered by
 * the target) or a NIC's own RMA are not; a single copy through shared memory (osc/rdma
 * with CMA) is. */
static bool probe_peer(mpixfer_context_t *ctx, int r, uint64_t addr)
{
    uint64_t v = (uint64_t)ctx->rank, back = 0;
    MPI_Aint disp = (MPI_Aint)(addr + 8 * (uint64_t)(ctx->rank % 512));
    bool sync = true;

    for (int i = 0; i < 8; i++) {
        MPI_Request q;
        int flag = 0, rc;
        rc = i % 2 == 0
                 ? MPI_Rput(&v, 8, MPI_BYTE, r, disp, 8, MPI_BYTE, ctx->win, &q)
                 : MPI_Rget(&back, 8, MPI_BYTE, r, disp, 8, MPI_BYTE, ctx->win, &q);
        if (rc != MPI_SUCCESS)
            return false;
        if (MPI_Test(&q, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return false; /* an erroneous request is freed by MPI */
        /* Not done: the target answers; it is in this collective, so this ends. */
        if (!flag && MPI_Wait(&q, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return false;
        sync = sync && flag;
    }
    return MPI_Win_flush(r, ctx->win) == MPI_SUCCESS && sync;
}

/*
 * Collective. Marks the peers whose RMA completes inside the MPI call (MPIXFER__PATH_SYNC_RMA):
 * their transfers then end with MPI_Put/MPI_Get and a flush in submit, not MPI_Rput/MPI_Rget
 * that progress tests, which saved ~1 us of a 1 MiB put here (an MPI request made, tested
 * and freed after the copy had cooled the caches). MPIXFER_RMA_COMPLETION=auto (default):
 * Open MPI's osc/rdma and a peer on this node that passes probe_peer; request: never;
 * flush: every RMA peer (a wait may then block in the flush until a target that emulates
 * RMA calls MPI).
 * Every process makes the same collective calls whatever it decides.
 */
static mpixfer_status_t probe_sync_rma(mpixfer_context_t *ctx, const int *node_rank)
{
    static const char *const modes[3] = {"auto", "request", "flush"};
    const int mode = env_choice("MPIXFER_RMA_COMPLETION", modes, 0);
    const size_t page = 4096;
    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    uint64_t *addr = malloc(sizeof(uint64_t) * (size_t)ctx->size), mine = 0;
    void *word = NULL;
    mpixfer_status_t st = MPIXFER_OK;
    int len = 0, nsync = 0, ok, all_ok = 0, rc;
    bool rdma; /* Open MPI's osc/rdma serves the window: the probe can be trusted */

    /* A page of its own, so the probe's attachment overlaps nothing registered later. */
    if (posix_memalign(&word, page, page) == 0) {
        memset(word, 0, page);
        if (MPI_Win_attach(ctx->win, word, (MPI_Aint)page) == MPI_SUCCESS)
            mine = (uintptr_t)word;
    }
    /* Out of memory anywhere: nobody probes (and nobody waits in a gather for it). */
    ok = addr != NULL;
    rc = MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, ctx->comm);
    if (rc != MPI_SUCCESS) {
        st = MPIXFER__MPI_ERR("MPI_Allreduce", rc);
        goto out;
    }
    if (!all_ok) {
        LOG_WARN("out of memory probing RMA completion: transfers end with MPI_Rput/MPI_Rget");
        goto out;
    }
    rc = MPI_Allgather(&mine, 1, MPI_UINT64_T, addr, 1, MPI_UINT64_T, ctx->comm);
    if (rc != MPI_SUCCESS) {
        st = MPIXFER__MPI_ERR("MPI_Allgather", rc);
        goto out;
    }
    rdma = MPI_Get_library_version(lib, &len) == MPI_SUCCESS &&
           strncmp(lib, "Open MPI", 8) == 0 && osc_rdma_window(ctx);
    for (int r = 0; r < ctx->size; r++) {
        bool sync;
        if (r == ctx->rank || MPIXFER__PATH(ctx, r) != MPIXFER_DATA_PATH_RMA || addr[r] == 0)
            continue;
        if (mode == 2)
            sync = true;
        else if (mode == 1 || !rdma || node_rank[r] == MPI_UNDEFINED)
            sync = false;
        else
            sync = probe_peer(ctx, r, addr[r]);
        if (sync) {
            ctx->peer_path[r] |= MPIXFER__PATH_SYNC_RMA;
            nsync++;
        }
    }
    /* Nobody detaches while another process may still probe it. */
    rc = MPI_Barrier(ctx->comm);
    if (rc != MPI_SUCCESS)
        st = MPIXFER__MPI_ERR("MPI_Barrier", rc);
    LOG_DEBUG("RMA completes inside the call for %d of %d ranks (MPIXFER_RMA_COMPLETION=%s)",
              nsync, ctx->size - 1, modes[mode]);
out:
    if (mine != 0)
        MPI_Win_detach(ctx->win, word);
    free(word);
    free(addr);
    return st;
}

mpixfer_status_t mpixfer_context_create(MPI_Comm comm, mpixfer_context_t **ctx_p)
{
    return mpixfer_context_create_with_params(comm, NULL, ctx_p);
}

mpixfer_status_t mpixfer_context_create_with_params(MPI_Comm comm,
                                                    const mpixfer_context_params_t *params,
                                                    mpixfer_context_t **ctx_p)
{
    mpixfer_context_t *ctx;
    pthread_mutexattr_t attr;
    mpixfer_status_t st;
    int initialized = 0, finalized = 0, inter = 0, rc, *node_rank = NULL;

    if (ctx_p == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "ctx_p is NULL");
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (!initialized || finalized)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG,
                      "MPI is not initialised (or already finalised); mpixfer never calls "
                      "MPI_Init itself");
    if (comm == MPI_COMM_NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "comm is MPI_COMM_NULL");
    rc = MPI_Comm_test_inter(comm, &inter);
    if (rc != MPI_SUCCESS)
        return MPIXFER__MPI_ERR("MPI_Comm_test_inter", rc);
    if (inter)
        MPIXFER__FAIL(MPIXFER_ERR_UNSUPPORTED, "intercommunicators are not supported");

    /* Aligned as its type says: its hot fields fill whole cache lines. */
    if (posix_memalign((void **)&ctx, _Alignof(mpixfer_context_t), sizeof(*ctx)) != 0)
        return MPIXFER_ERR_NO_MEMORY;
    memset(ctx, 0, sizeof(*ctx));
    if (params != NULL)
        ctx->params = *params;
    if (ctx->params.max_sync_message == 0)
        ctx->params.max_sync_message =
            env_size("MPIXFER_MAX_SYNC_MESSAGE", MPIXFER__DEFAULT_MAX_SYNC);
    if (ctx->params.max_desc_regions == 0)
        ctx->params.max_desc_regions = MPIXFER__DEFAULT_MAX_REGIONS;
    if (ctx->params.gpu_chunk_size == 0)
        ctx->params.gpu_chunk_size = env_size("MPIXFER_GPU_CHUNK", (size_t)4 << 20);
    if (ctx->params.gpu_chunk_size == 0 || ctx->params.gpu_chunk_size > ((size_t)1 << 30)) {
        LOG_WARN("GPU chunk size %zu out of range (1 B .. 1 GiB); using 4 MiB",
                 ctx->params.gpu_chunk_size);
        ctx->params.gpu_chunk_size = (size_t)4 << 20;
    }
    if (ctx->params.gpu_pipeline_depth == 0)
        ctx->params.gpu_pipeline_depth = (unsigned)env_size("MPIXFER_GPU_PIPELINE", 4);
    if (ctx->params.gpu_pipeline_depth == 0 || ctx->params.gpu_pipeline_depth > 64)
        ctx->params.gpu_pipeline_depth = 4;
    ctx->gpu_path = mpixfer__gpu_choose_path();
    ctx->issue_mode = issue_mode_from_env();
    if (ctx->params.stall_timeout_ms == 0)
        ctx->params.stall_timeout_ms = (unsigned)env_size("MPIXFER_STALL_TIMEOUT_MS", 60000);
    if (ctx->params.arena_size == 0)
        ctx->params.arena_size = env_size("MPIXFER_ARENA_SIZE", 0);

    pthread_mutexattr_init(&attr);
    /* Recursive: completion callbacks (local delivery) re-enter the library. */
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&ctx->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    atomic_init(&ctx->thread_gen, 0);

    MPI_Query_thread(&ctx->thread_level);

    rc = MPI_Comm_dup(comm, &ctx->comm);
    if (rc != MPI_SUCCESS) {
        st = MPIXFER__MPI_ERR("MPI_Comm_dup", rc);
        goto err_free;
    }
    MPI_Comm_set_errhandler(ctx->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(ctx->comm, &ctx->rank);
    MPI_Comm_size(ctx->comm, &ctx->size);

    if (ctx->rank == 0)
        ctx->world_id = random_world_id();
    rc = MPI_Bcast(&ctx->world_id, 1, MPI_UINT64_T, 0, ctx->comm);
    if (rc != MPI_SUCCESS) {
        st = MPIXFER__MPI_ERR("MPI_Bcast", rc);
        goto err_comm;
    }

    if (ctx->size > 1 && (st = choose_data_paths(ctx, &node_rank)) != MPIXFER_OK)
        goto err_comm;

    /* On one process every agent is local and reached by direct copy; Debian's Open MPI
     * cannot even create a dynamic window there. */
    if (ctx->size > 1) {
        rc = MPI_Win_create_dynamic(MPI_INFO_NULL, ctx->comm, &ctx->win);
        if (rc != MPI_SUCCESS) {
            st = MPIXFER__MPI_ERR("MPI_Win_create_dynamic", rc);
            LOG_ERROR("no one-sided component could create a dynamic window; over TCP "
                      "with Open MPI try --mca osc ucx --mca pml ucx");
            goto err_comm;
        }
        MPI_Win_set_errhandler(ctx->win, MPI_ERRORS_RETURN);
        rc = MPI_Win_lock_all(MPI_MODE_NOCHECK, ctx->win);
        if (rc != MPI_SUCCESS) {
            st = MPIXFER__MPI_ERR("MPI_Win_lock_all", rc);
            goto err_win;
        }
        ctx->has_win = true;
        st = probe_sync_rma(ctx, node_rank);
        if (st != MPIXFER_OK)
            goto err_lock;
    }
    free(node_rank);
    node_rank = NULL;
    if (ctx->params.arena_size > 0) {
        st = mpixfer__arena_create(ctx, ctx->params.arena_size);
        if (st != MPIXFER_OK)
            goto err_lock;
    }

    LOG_INFO("context: rank %d of %d, world id %016llx, thread level %d, window %s, GPU path "
             "%s%s%s",
             ctx->rank, ctx->size, (unsigned long long)ctx->world_id, ctx->thread_level,
             ctx->has_win ? "dynamic" : "none (one process)", mpixfer_gpu_path_name(ctx->gpu_path),
             ctx->gpu_path == MPIXFER_GPU_PATH_NONE ? ": " : "",
             ctx->gpu_path == MPIXFER_GPU_PATH_NONE ? mpixfer__gpu_unavailable_reason() : "");
    *ctx_p = ctx;
    return MPIXFER_OK;

err_lock:
    mpixfer__registry_clear(ctx);
    if (ctx->has_win)
        MPI_Win_unlock_all(ctx->win);
err_win:
    if (ctx->size > 1)
        MPI_Win_free(&ctx->win);
err_comm:
    MPI_Comm_free(&ctx->comm);
err_free:
    pthread_mutex_destroy(&ctx->lock);
    free(node_rank);
    free(ctx->peer_path);
    free(ctx);
    return st;
}

/* Every process keeps receiving until all have finished sending, so no Isend of ours is
 * left unmatched and no peer waits for an answer we would never give. */
static mpixfer_status_t drain_collectively(mpixfer_context_t *ctx)
{
    MPI_Request barrier = MPI_REQUEST_NULL;
    mpixfer_status_t st = MPIXFER_OK;
    int done = 0, rc;

    for (;;) {
        mpixfer__lock(ctx);
        mpixfer__progress_locked(ctx);
        if (barrier == MPI_REQUEST_NULL && ctx->pending_head == NULL &&
            mpixfer__sends_test(ctx) == 0) {
            rc = MPI_Ibarrier(ctx->comm, &barrier);
            if (rc != MPI_SUCCESS) {
                mpixfer__unlock(ctx);
                return MPIXFER__MPI_ERR("MPI_Ibarrier", rc);
            }
        }
        if (barrier != MPI_REQUEST_NULL) {
            rc = MPI_Test(&barrier, &done, MPI_STATUS_IGNORE);
            if (rc != MPI_SUCCESS) {
                st = MPIXFER__MPI_ERR("MPI_Test", rc);
                done = 1;
            }
        }
        mpixfer__unlock(ctx);
        if (done)
            break;
        sched_yield();
    }
    /* Messages that were in flight at the barrier: take them off the queue. */
    mpixfer__lock(ctx);
    while (mpixfer__ctrl_poll(ctx) > 0)
        ;
    mpixfer__unlock(ctx);
    return st;
}

mpixfer_status_t mpixfer_context_destroy(mpixfer_context_t *ctx)
{
    mpixfer_status_t st;
    int rc;

    if (ctx == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "ctx is NULL");

    /* The threads would race the collective calls below. */
    mpixfer__thread_stop(ctx);
    mpixfer__lock(ctx);
    mpixfer__links_close_all(ctx);
    mpixfer__unlock(ctx);
    st = drain_collectively(ctx);

    mpixfer__lock(ctx);
    if (ctx->agents != NULL)
        LOG_WARN("destroying a context with live agents; destroying them");
    mpixfer__unlock(ctx);
    while (ctx->agents != NULL)
        mpixfer_agent_destroy(ctx->agents);

    /* Sends made by agent teardown (none expected) must finish before the comm goes. */
    while (mpixfer__sends_test(ctx) > 0)
        sched_yield();

    if (ctx->has_win) {
        mpixfer__registry_clear(ctx);
        rc = MPI_Win_unlock_all(ctx->win);
        if (rc != MPI_SUCCESS && st == MPIXFER_OK)
            st = MPIXFER__MPI_ERR("MPI_Win_unlock_all", rc);
        rc = MPI_Win_free(&ctx->win);
        if (rc != MPI_SUCCESS && st == MPIXFER_OK)
            st = MPIXFER__MPI_ERR("MPI_Win_free", rc);
    }
    mpixfer__arena_destroy(ctx);
    rc = MPI_Comm_free(&ctx->comm);
    if (rc != MPI_SUCCESS && st == MPIXFER_OK)
        st = MPIXFER__MPI_ERR("MPI_Comm_free", rc);
    free(ctx->attach);
    free(ctx->peer_path);
    free(ctx->spare_lists);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
    return st;
}

mpixfer_status_t mpixfer_context_stats(mpixfer_context_t *ctx, mpixfer_stats_t *stats_p)
{
    if (ctx == NULL || stats_p == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "ctx or stats_p is NULL");
    mpixfer__lock(ctx);
    *stats_p = ctx->stats;
    stats_p->window_attachments = ctx->has_win ? ctx->nattach : 0;
    mpixfer__unlock(ctx);
    return MPIXFER_OK;
}

int mpixfer_context_rank(const mpixfer_context_t *ctx)
{
    return ctx ? ctx->rank : -1;
}

int mpixfer_context_size(const mpixfer_context_t *ctx)
{
    return ctx ? ctx->size : -1;
}

uint64_t mpixfer_context_world_id(const mpixfer_context_t *ctx)
{
    return ctx ? ctx->world_id : 0;
}

/* ------------------------------------------------------------- bootstrap */



/* This process's agents as [u32 count]([u32 len][blob])*. */
static mpixfer_status_t pack_local_agents(mpixfer_context_t *ctx, unsigned char **buf_p,
                                          size_t *len_p)
{
    size_t total = 4, n = 0, off;
    unsigned char *buf;
    void **blobs;
    size_t *lens;
    mpixfer_status_t st = MPIXFER_OK;
    size_t i = 0;

    for (mpixfer_agent_t *a = ctx->agents; a != NULL; a = a->next)
        n++;
    blobs = calloc(n ? n : 1, sizeof(*blobs));
    lens = calloc(n ? n : 1, sizeof(*lens));
    if (blobs == NULL || lens == NULL) {
        st = MPIXFER_ERR_NO_MEMORY;
        goto out;
    }
    for (mpixfer_agent_t *a = ctx->agents; a != NULL; a = a->next, i++) {
        st = mpixfer__desc_encode(a, false, &blobs[i], &lens[i]);
        if (st != MPIXFER_OK)
            goto out;
        total += 4 + lens[i];
    }
    buf = malloc(total);
    if (buf == NULL) {
        st = MPIXFER_ERR_NO_MEMORY;
        goto out;
    }
    mpixfer__put32(buf, (uint32_t)n);
    off = 4;
    for (i = 0; i < n; i++) {
        mpixfer__put32(buf + off, (uint32_t)lens[i]);
        memcpy(buf + off + 4, blobs[i], lens[i]);
        off += 4 + lens[i];
    }
    *buf_p = buf;
    *len_p = total;
out:
    for (i = 0; blobs != NULL && i < n; i++)
        free(blobs[i]);
    free(blobs);
    free(lens);
    return st;
}

static int cmp_desc_name(const void *a, const void *b)
{
    return strcmp(((const mpixfer__desc_t *)a)->name, ((const mpixfer__desc_t *)b)->name);
}

/* Decode every process's packed agents; the same bytes give the same answer everywhere,
 * so every process returns the same status and nobody is left in a collective. */
static mpixfer_status_t unpack_all(mpixfer_context_t *ctx, const unsigned char *all,
                                   const int *counts, const int *displs, mpixfer__desc_t **descs_p,
                                   size_t *ndescs_p)
{
    mpixfer__desc_t *descs = NULL;
    size_t ndescs = 0, cap = 0;
    mpixfer_status_t st = MPIXFER_OK;

    for (int r = 0; r < ctx->size && st == MPIXFER_OK; r++) {
        const unsigned char *p = all + displs[r];
        size_t left = (size_t)counts[r], n;

        if (left < 4) {
            st = MPIXFER_ERR_BAD_DESC;
            break;
        }
        n = mpixfer__get32(p);
        p += 4;
        left -= 4;
        for (size_t i = 0; i < n; i++) {
            size_t len;

            if (left < 4 || (len = mpixfer__get32(p)) > left - 4) {
                st = MPIXFER_ERR_BAD_DESC;
                break;
            }
            if (ndescs == cap) {
                size_t ncap = cap ? 2 * cap : 16;
                mpixfer__desc_t *nd = realloc(descs, ncap * sizeof(*nd));
                if (nd == NULL) {
                    st = MPIXFER_ERR_NO_MEMORY;
                    break;
                }
                descs = nd;
                cap = ncap;
            }
            st = mpixfer__desc_decode(p + 4, len, ctx->params.max_desc_regions, &descs[ndescs]);
            if (st != MPIXFER_OK)
                break;
            ndescs++;
            if (descs[ndescs - 1].rank != (uint32_t)r ||
                descs[ndescs - 1].world_id != ctx->world_id) {
                st = MPIXFER_ERR_BAD_DESC;
                break;
            }
            p += 4 + len;
            left -= 4 + len;
        }
    }
    if (st == MPIXFER_OK && ndescs > 1) {
        qsort(descs, ndescs, sizeof(*descs), cmp_desc_name);
        for (size_t i = 1; i < ndescs; i++)
            if (strcmp(descs[i - 1].name, descs[i].name) == 0) {
                LOG_WARN("bootstrap: agent name '%s' is used by ranks %u and %u", descs[i].name,
                         descs[i - 1].rank, descs[i].rank);
                st = MPIXFER_ERR_EXISTS;
                break;
            }
    }
    if (st != MPIXFER_OK) {
        for (size_t i = 0; i < ndescs; i++)
            mpixfer__desc_fini(&descs[i]);
        free(descs);
        return st;
    }
    *descs_p = descs;
    *ndescs_p = ndescs;
    return MPIXFER_OK;
}

/* Completes a collective while serving the control channel: a peer may wait for our answer
 * to a chunk (messages, staged VRAM) before it enters the same collective. Called and
 * returns with the lock held. */
static int wait_progressing(mpixfer_context_t *ctx, MPI_Request *req)
{
    for (;;) {
        int done = 0, rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS || done)
            return rc;
        mpixfer__progress_locked(ctx);
        mpixfer__unlock(ctx);
        sched_yield();
        mpixfer__lock(ctx);
    }
}

mpixfer_status_t mpixfer_bootstrap(mpixfer_context_t *ctx)
{
    MPI_Request req;
    unsigned char *mine = NULL, *all = NULL;
    size_t mine_len = 0, ndescs = 0;
    int *counts = NULL, *displs = NULL, mylen, rc;
    long long total = 0;
    mpixfer__desc_t *descs = NULL;
    mpixfer_status_t st, local_st;

    if (ctx == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "ctx is NULL");

    mpixfer__lock(ctx);
    /* A local failure must still take part in the collectives: send -1 as our length. */
    local_st = pack_local_agents(ctx, &mine, &mine_len);
    if (local_st == MPIXFER_OK && mine_len > (size_t)INT32_MAX)
        local_st = MPIXFER_ERR_TOO_LARGE;
    mylen = local_st == MPIXFER_OK ? (int)mine_len : -1;

    counts = malloc(sizeof(int) * (size_t)ctx->size);
    displs = malloc(sizeof(int) * (size_t)ctx->size);
    if (counts == NULL || displs == NULL) {
        /* Cannot take part without these; the peers will see MPI errors or hang is
         * impossible to avoid here, so fail loudly. */
        st = MPIXFER_ERR_NO_MEMORY;
        goto out;
    }
    rc = MPI_Iallgather(&mylen, 1, MPI_INT, counts, 1, MPI_INT, ctx->comm, &req);
    if (rc == MPI_SUCCESS)
        rc = wait_progressing(ctx, &req);
    if (rc != MPI_SUCCESS) {
        st = MPIXFER__MPI_ERR("MPI_Iallgather", rc);
        goto out;
    }
    for (int r = 0; r < ctx->size; r++) {
        if (counts[r] < 0) {
            st = local_st != MPIXFER_OK ? local_st : MPIXFER_ERR_NO_MEMORY;
            LOG_WARN("bootstrap: rank %d could not describe its agents", r);
            goto out;
        }
        displs[r] = (int)total;
        total += counts[r];
    }
    if (total > INT32_MAX) {
        st = MPIXFER_ERR_TOO_LARGE;
        LOG_WARN("bootstrap: %lld bytes of descriptors exceed one MPI message", total);
        goto out;
    }
    all = malloc(total ? (size_t)total : 1);
    /* Everybody must have room before anybody receives: agree first, so a failed
     * allocation anywhere fails the bootstrap everywhere instead of overrunning a buffer. */
    {
        int ok = all != NULL, all_ok = 0;
        rc = MPI_Iallreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, ctx->comm, &req);
        if (rc == MPI_SUCCESS)
            rc = wait_progressing(ctx, &req);
        if (rc != MPI_SUCCESS) {
            st = MPIXFER__MPI_ERR("MPI_Iallreduce", rc);
            goto out;
        }
        if (!all_ok) {
            st = MPIXFER_ERR_NO_MEMORY;
            LOG_WARN("bootstrap: a rank has no memory for %lld bytes of descriptors", total);
            goto out;
        }
    }
    rc = MPI_Iallgatherv(mine, mylen, MPI_BYTE, all, counts, displs, MPI_BYTE, ctx->comm, &req);
    if (rc == MPI_SUCCESS)
        rc = wait_progressing(ctx, &req);
    if (rc != MPI_SUCCESS) {
        st = MPIXFER__MPI_ERR("MPI_Iallgatherv", rc);
        goto out;
    }
    st = unpack_all(ctx, all, counts, displs, &descs, &ndescs);
    if (st != MPIXFER_OK)
        goto out;

    for (mpixfer_agent_t *a = ctx->agents; a != NULL; a = a->next)
        for (size_t i = 0; i < ndescs; i++) {
            mpixfer__desc_t copy;

            if (strcmp(descs[i].name, a->name) == 0)
                continue;
            copy = descs[i];
            copy.regions = NULL;
            if (descs[i].nregions) {
                copy.regions = malloc(descs[i].nregions * sizeof(*copy.regions));
                if (copy.regions == NULL) {
                    st = MPIXFER_ERR_NO_MEMORY;
                    goto out;
                }
                memcpy(copy.regions, descs[i].regions,
                       descs[i].nregions * sizeof(*copy.regions));
            }
            mpixfer__agent_store_desc(a, &copy, NULL);
        }
    LOG_INFO("bootstrap: %zu agents in the context", ndescs);
out:
    for (size_t i = 0; i < ndescs; i++)
        mpixfer__desc_fini(&descs[i]);
    free(descs);
    free(all);
    free(mine);
    free(counts);
    free(displs);
    mpixfer__unlock(ctx);
    return st;
}

mpixfer_status_t mpixfer_context_data_path(const mpixfer_context_t *ctx, int rank,
                                           mpixfer_data_path_t *path_p)
{
    if (ctx == NULL || path_p == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "ctx or path_p is NULL");
    if (rank < 0 || rank >= ctx->size)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "rank %d is not in 0..%d", rank, ctx->size - 1);
    /* The peer_path array never changes after creation: no lock needed. */
    *path_p = ctx->peer_path == NULL || rank == ctx->rank
                  ? MPIXFER_DATA_PATH_RMA
                  : MPIXFER__PATH(ctx, rank);
    return MPIXFER_OK;
}
