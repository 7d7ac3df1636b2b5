/* Agents: names, registrations, the table of remote agents, metadata calls. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "range_find.h"

static atomic_uint name_counter;

mpixfer_status_t mpixfer__check_mem_type(mpixfer_mem_type_t type)
{
    switch (type) {
    case MPIXFER_MEM_DRAM:
        return MPIXFER_OK;
    case MPIXFER_MEM_VRAM:
        if (mpixfer__gpu_available())
            return MPIXFER_OK;
        MPIXFER__FAIL(MPIXFER_ERR_UNSUPPORTED, "VRAM is not available: %s",
                      mpixfer__gpu_unavailable_reason());
    case MPIXFER_MEM_BLK:
    case MPIXFER_MEM_OBJ:
    case MPIXFER_MEM_FILE:
        MPIXFER__FAIL(MPIXFER_ERR_UNSUPPORTED, "memory type %d is not supported by this build",
                      (int)type);
    }
    MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "memory type %d is not a mpixfer_mem_type_t",
                  (int)type);
}

mpixfer_status_t mpixfer_agent_create(mpixfer_context_t *ctx, const mpixfer_agent_config_t *cfg,
                                      mpixfer_agent_t **agent_p)
{
    static const mpixfer_agent_config_t dflt = MPIXFER_AGENT_CONFIG_INIT;
    mpixfer_agent_t *a;
    char gen[MPIXFER__NAME_MAX + 1];
    const char *name;
    mpixfer_status_t st;

    if (ctx == NULL || agent_p == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "ctx or agent_p is NULL");
    if (cfg == NULL)
        cfg = &dflt;
    name = cfg->name;
    if (name == NULL) {
        char host[64] = "host";
        gethostname(host, sizeof(host) - 1);
        host[sizeof(host) - 1] = '\0';
        snprintf(gen, sizeof(gen), "%s_%ld_%u", host, (long)getpid(),
                 atomic_fetch_add(&name_counter, 1));
        name = gen;
    }
    if (!mpixfer__name_valid(name))
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "agent name must be 1..%d bytes",
                      MPIXFER__NAME_MAX);
    if ((cfg->use_progress_thread || cfg->multi_thread || cfg->use_listen_thread) &&
        ctx->thread_level < MPI_THREAD_MULTIPLE)
        MPIXFER__FAIL(MPIXFER_ERR_THREAD,
                      "agent '%s' asks for threads but MPI provides thread level %d, not "
                      "MPI_THREAD_MULTIPLE; initialise MPI with MPI_Init_thread",
                      name, ctx->thread_level);

    a = calloc(1, sizeof(*a));
    if (a == NULL)
        return MPIXFER_ERR_NO_MEMORY;
    a->ctx = ctx;
    a->cfg = *cfg;
    {
        const char *lm = getenv("MPIXFER_LINK");
        a->reachable = !(lm != NULL && strcmp(lm, "none") == 0);
    }
    if (a->reachable && (st = mpixfer__random(a->key, sizeof a->key)) != MPIXFER_OK) {
        free(a);
        return st;
    }
    a->name = strdup(name);
    a->cfg.name = a->name;
    if (a->name == NULL) {
        st = MPIXFER_ERR_NO_MEMORY;
        goto err_agent;
    }

    mpixfer__lock(ctx);
    if (mpixfer__find_local_agent(ctx, a->name) != NULL) {
        mpixfer__unlock(ctx);
        LOG_WARN("an agent named '%s' already exists in this process", a->name);
        st = MPIXFER_ERR_EXISTS;
        goto err_name;
    }
    a->wants_thread = cfg->use_progress_thread || cfg->use_listen_thread;
    if (a->wants_thread) {
        st = mpixfer__thread_acquire(ctx);
        if (st != MPIXFER_OK) {
            mpixfer__unlock(ctx);
            goto err_name;
        }
    }
    if (cfg->use_listen_thread && a->reachable &&
        mpixfer__listen_ensure(ctx) != MPIXFER_OK)
        LOG_WARN("agent '%s': no link listener, so only agents of this job can reach it",
                 a->name);
    a->next = ctx->agents;
    ctx->agents = a;
    mpixfer__unlock(ctx);
    LOG_INFO("agent '%s' created%s", a->name, a->wants_thread ? " with a progress thread" : "");
    *agent_p = a;
    return MPIXFER_OK;

err_name:
    free(a->name);
err_agent:
    free(a);
    return st;
}

/* Lock held. */
static void remote_free(mpixfer_context_t *ctx, mpixfer__remote_t *r)
{
    if (r->link != NULL)
        mpixfer__link_release(ctx, r->link);
    mpixfer__desc_fini(&r->desc);
    free(r->name);
    free(r);
}

mpixfer_status_t mpixfer_agent_destroy(mpixfer_agent_t *agent)
{
    mpixfer_context_t *ctx;
    bool release_thread;

    if (agent == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "agent is NULL");
    ctx = agent->ctx;

    mpixfer__lock(ctx);
    /* Requests in flight use our registrations: finish them before those go. */
    for (;;) {
        bool mine = false;
        for (mpixfer_request_t *x = ctx->pending_head; x != NULL && !mine; x = x->next_pending)
            mine = x->agent == agent;
        if (!mine)
            break;
        mpixfer__progress_locked(ctx);
    }
    for (mpixfer_agent_t **pp = &ctx->agents; *pp != NULL; pp = &(*pp)->next)
        if (*pp == agent) {
            *pp = agent->next;
            break;
        }
    for (size_t i = 0; i < agent->nregions; i++) {
        if (agent->regions[i]->attached)
            mpixfer__registry_remove(ctx, agent->regions[i]->addr, agent->regions[i]->len);
        free(agent->regions[i]);
    }
    free(agent->regions);
    while (agent->remotes != NULL) {
        mpixfer__remote_t *r = agent->remotes;
        agent->remotes = r->next;
        remote_free(ctx, r);
    }
    mpixfer__inbox_clear(agent);
    release_thread = agent->wants_thread;
    mpixfer__unlock(ctx);

    if (release_thread)
        mpixfer__thread_release(ctx);
    LOG_INFO("agent '%s' destroyed", agent->name);
    free(agent->name);
    free(agent);
    return MPIXFER_OK;
}

const char *mpixfer_agent_name(const mpixfer_agent_t *agent)
{
    return agent ? agent->name : NULL;
}

/* ---------------------------------------------------------------- memory */

static int region_cmp(const mpixfer__region_t *a, const mpixfer__region_t *b)
{
    return MPIXFER__RANGE_CMP(a, b);
}

static int region_ptr_cmp(const void *a, const void *b)
{
    return region_cmp(*(mpixfer__region_t *const *)a, *(mpixfer__region_t *const *)b);
}

/* Index of the exact registration @p key, or -1. */
static long find_exact(const mpixfer_agent_t *agent, const mpixfer__region_t *key)
{
    size_t lo = 0, hi = agent->nregions;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = region_cmp(agent->regions[mid], key);
        if (c == 0)
            return (long)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

static mpixfer_status_t check_descs(const mpixfer_mem_descs_t *descs)
{
    mpixfer_status_t st;

    if (descs == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "descs is NULL");
    if (descs->count == 0 || descs->descs == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "empty descriptor list (count %zu, descs %p)",
                      descs->count, (const void *)descs->descs);
    st = mpixfer__check_mem_type(descs->type);
    if (st != MPIXFER_OK)
        return st;
    for (size_t i = 0; i < descs->count; i++) {
        const mpixfer_mem_desc_t *d = &descs->descs[i];
        if (d->len == 0 || d->addr == 0 || d->addr + d->len < d->addr)
            MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG,
                          "descriptor %zu [%#lx, +%zu) is empty, NULL or wraps", i,
                          (unsigned long)d->addr, d->len);
        st = mpixfer__gpu_check_desc(descs->type, d);
        if (st != MPIXFER_OK)
            return st;
    }
    return MPIXFER_OK;
}

mpixfer_status_t mpixfer_register_memory(mpixfer_agent_t *agent, const mpixfer_mem_descs_t *descs)
{
    mpixfer_context_t *ctx;
    mpixfer__region_t **fresh;
    mpixfer_status_t st;
    size_t n, added = 0;

    if (agent == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "agent is NULL");
    st = check_descs(descs);
    if (st != MPIXFER_OK)
        return st;
    ctx = agent->ctx;
    n = descs->count;

    fresh = calloc(n, sizeof(*fresh));
    if (fresh == NULL)
        return MPIXFER_ERR_NO_MEMORY;
    for (size_t i = 0; i < n; i++) {
        fresh[i] = malloc(sizeof(**fresh));
        if (fresh[i] == NULL) {
            st = MPIXFER_ERR_NO_MEMORY;
            goto err_fresh;
        }
        *fresh[i] = (mpixfer__region_t){descs->descs[i].addr, descs->descs[i].len, descs->type,
                                        descs->type == MPIXFER_MEM_VRAM ? descs->descs[i].device_id
                                                                        : 0,
                                        0, false};
    }
    qsort(fresh, n, sizeof(*fresh), region_ptr_cmp);
    for (size_t i = 1; i < n; i++)
        if (region_cmp(fresh[i - 1], fresh[i]) == 0) {
            LOG_WARN("[%#lx, +%zu) appears twice in one registration",
                     (unsigned long)fresh[i]->addr, fresh[i]->len);
            st = MPIXFER_ERR_EXISTS;
            goto err_fresh;
        }

    mpixfer__lock(ctx);
    for (size_t i = 0; i < n; i++)
        if (find_exact(agent, fresh[i]) >= 0) {
            mpixfer__unlock(ctx);
            LOG_WARN("agent '%s' already registered [%#lx, +%zu)", agent->name,
                     (unsigned long)fresh[i]->addr, fresh[i]->len);
            st = MPIXFER_ERR_EXISTS;
            goto err_fresh;
        }
    if (agent->nregions + n > agent->cap_regions) {
        size_t ncap = agent->cap_regions ? agent->cap_regions : 16;
        mpixfer__region_t **nr;
        while (ncap < agent->nregions + n)
            ncap *= 2;
        nr = realloc(agent->regions, ncap * sizeof(*nr));
        if (nr == NULL) {
            mpixfer__unlock(ctx);
            st = MPIXFER_ERR_NO_MEMORY;
            goto err_fresh;
        }
        agent->regions = nr;
        agent->cap_regions = ncap;
    }
    /* The sorted batch is attached as spans of touching pages: a pool carved into 10,000
     * blocks is one attach call, not 10,000 detach/attach rounds. */
    for (added = 0; added < n;) {
        size_t j, cnt = 0, ps = (size_t)sysconf(_SC_PAGESIZE);
        uintptr_t b = 0, e = 0;
        for (j = added; j < n; j++) {
            mpixfer__region_t *r = fresh[j];
            /* Staged VRAM is reached through the target's copies, never by RMA. */
            if (r->type == MPIXFER_MEM_VRAM && ctx->gpu_path != MPIXFER_GPU_PATH_DIRECT)
                continue;
            if (cnt > 0 && (r->addr & ~(ps - 1)) > ((e + ps - 1) & ~(ps - 1)))
                break;
            if (cnt++ == 0)
                b = r->addr;
            if (r->addr + r->len > e)
                e = r->addr + r->len;
        }
        if (cnt > 0) {
            st = mpixfer__registry_add(ctx, b, e - b, cnt);
            if (st != MPIXFER_OK)
                break;
            for (size_t k = added; k < j; k++)
                fresh[k]->attached = !(fresh[k]->type == MPIXFER_MEM_VRAM &&
                                       ctx->gpu_path != MPIXFER_GPU_PATH_DIRECT);
        }
        added = j;
    }
    if (st != MPIXFER_OK) {
        for (size_t k = 0; k < n; k++)
            if (fresh[k]->attached)
                mpixfer__registry_remove(ctx, fresh[k]->addr, fresh[k]->len);
        mpixfer__unlock(ctx);
        goto err_fresh;
    }
    /* Merge the sorted batch into the sorted list from the back, in place. */
    {
        size_t i = agent->nregions, j = n, k = agent->nregions + n;
        while (j > 0) {
            if (i > 0 && region_cmp(agent->regions[i - 1], fresh[j - 1]) > 0)
                agent->regions[--k] = agent->regions[--i];
            else
                agent->regions[--k] = fresh[--j];
        }
        agent->nregions += n;
    }
    mpixfer__unlock(ctx);
    free(fresh);
    LOG_DEBUG("agent '%s' registered %zu regions (%zu in all)", agent->name, n, agent->nregions);
    return MPIXFER_OK;

err_fresh:
    for (size_t i = 0; i < n; i++)
        free(fresh[i]);
    free(fresh);
    return st;
}

static int long_cmp(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

mpixfer_status_t mpixfer_deregister_memory(mpixfer_agent_t *agent,
                                           const mpixfer_mem_descs_t *descs)
{
    mpixfer_context_t *ctx;
    mpixfer_status_t st = MPIXFER_OK;
    long *idx;
    size_t n, w = 0;

    if (agent == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "agent is NULL");
    st = check_descs(descs);
    if (st != MPIXFER_OK)
        return st;
    ctx = agent->ctx;
    n = descs->count;
    idx = malloc(n * sizeof(*idx));
    if (idx == NULL)
        return MPIXFER_ERR_NO_MEMORY;

    mpixfer__lock(ctx);
    /* No progress here on purpose: a request stays in flight (and its memory busy) until
     * wait, a poll or the progress thread has seen it complete. */
    for (size_t i = 0; i < n; i++) {
        const mpixfer_mem_desc_t *d = &descs->descs[i];
        mpixfer__region_t key = {d->addr, d->len, descs->type,
                                 descs->type == MPIXFER_MEM_VRAM ? d->device_id : 0, 0, false};
        idx[i] = find_exact(agent, &key);
        if (idx[i] < 0) {
            LOG_WARN("agent '%s' has no registration [%#lx, +%zu)", agent->name,
                     (unsigned long)d->addr, d->len);
            st = MPIXFER_ERR_NOT_FOUND;
            goto out;
        }
        if (agent->regions[idx[i]]->pins > 0) {
            LOG_WARN("agent '%s': [%#lx, +%zu) is in use by %u transfer(s)", agent->name,
                     (unsigned long)d->addr, d->len, agent->regions[idx[i]]->pins);
            st = MPIXFER_ERR_BUSY;
            goto out;
        }
    }
    /* A range named twice would be freed twice: sorted indices make that one pass. */
    qsort(idx, n, sizeof(*idx), long_cmp);
    for (size_t i = 1; i < n; i++)
        if (idx[i - 1] == idx[i]) {
            LOG_WARN("[%#lx, +%zu) appears twice in one deregistration",
                     (unsigned long)agent->regions[idx[i]]->addr, agent->regions[idx[i]]->len);
            st = MPIXFER_ERR_NOT_FOUND;
            goto out;
        }
    for (size_t i = 0; i < n; i++) {
        mpixfer__region_t *r = agent->regions[idx[i]];
        if (r->attached)
            mpixfer__registry_remove(ctx, r->addr, r->len);
        free(r);
        agent->regions[idx[i]] = NULL;
    }
    for (size_t i = 0; i < agent->nregions; i++)
        if (agent->regions[i] != NULL)
            agent->regions[w++] = agent->regions[i];
    agent->nregions = w;
out:
    mpixfer__unlock(ctx);
    free(idx);
    return st;
}

#define AGENT_REGION_AT(agent, i) ((agent)->regions[i])
#define AGENT_NREGIONS(agent) ((agent)->nregions)
MPIXFER__DEFINE_RANGE_FIND(find_registered, const mpixfer_agent_t, AGENT_REGION_AT,
                           AGENT_NREGIONS)

mpixfer_status_t mpixfer__agent_find_region(const mpixfer_agent_t *agent, mpixfer_mem_type_t type,
                                            const mpixfer_mem_desc_t *d,
                                            mpixfer__region_t **region_p)
{
    size_t i;
    mpixfer_status_t st = find_registered(agent, type, d, &i);

    if (st == MPIXFER_OK)
        *region_p = agent->regions[i];
    return st;
}

/* -------------------------------------------------------------- remotes */

mpixfer__remote_t *mpixfer__find_remote(const mpixfer_agent_t *agent, const char *name)
{
    for (mpixfer__remote_t *r = agent->remotes; r != NULL; r = r->next)
        if (strcmp(r->name, name) == 0)
            return r;
    return NULL;
}

/* Takes ownership of desc->regions and of a reference on @p link. */
void mpixfer__agent_store_desc(mpixfer_agent_t *agent, mpixfer__desc_t *desc,
                               mpixfer__link_t *link)
{
    mpixfer__remote_t *r = mpixfer__find_remote(agent, desc->name);

    if (r == NULL) {
        r = calloc(1, sizeof(*r));
        if (r == NULL || (r->name = strdup(desc->name)) == NULL) {
            free(r);
            mpixfer__desc_fini(desc);
            if (link != NULL)
                mpixfer__link_release(agent->ctx, link);
            LOG_ERROR("out of memory storing remote agent '%s'", desc->name);
            return;
        }
        r->next = agent->remotes;
        agent->remotes = r;
    } else {
        mpixfer__desc_fini(&r->desc);
    }
    r->desc = *desc;
    if (r->link != NULL && r->link != link)
        mpixfer__link_release(agent->ctx, r->link);
    r->link = link;
    r->rank = link ? 0 : (int)desc->rank;
    r->loaded = true;
    r->pending = false;
    LOG_DEBUG("agent '%s' loaded '%s' (rank %d, %zu regions)", agent->name, r->name, r->rank,
              r->desc.nregions);
}

mpixfer_status_t mpixfer_get_local_agent_desc(mpixfer_agent_t *agent, void **blob_p,
                                              size_t *len_p)
{
    void *blob;
    size_t len;
    mpixfer_status_t st;

    if (agent == NULL || blob_p == NULL || len_p == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "agent, blob_p or len_p is NULL");
    mpixfer__lock(agent->ctx);
    /* A descriptor asked for may travel to another process: it carries the link. */
    if (agent->reachable)
        mpixfer__listen_ensure(agent->ctx);
    st = mpixfer__desc_encode(agent, true, &blob, &len);
    mpixfer__unlock(agent->ctx);
    if (st != MPIXFER_OK)
        return st;
    *blob_p = blob;
    *len_p = len;
    return MPIXFER_OK;
}

/* The entry for @p name, made (not loaded) if there is none; NULL: out of memory. Lock
 * held. */
static mpixfer__remote_t *remote_entry(mpixfer_agent_t *agent, const char *name)
{
    mpixfer__remote_t *r = mpixfer__find_remote(agent, name);

    if (r != NULL)
        return r;
    r = calloc(1, sizeof(*r));
    if (r == NULL || (r->name = strdup(name)) == NULL) {
        free(r);
        return NULL;
    }
    r->next = agent->remotes;
    agent->remotes = r;
    return r;
}

/* An agent of another process: a new link to it, usable once its handshake ends.
 * @p desc (from a blob) is kept as what the caller loaded; NULL asks the peer for it. */
static mpixfer_status_t load_linked(mpixfer_agent_t *agent, const char *name, const char *addr,
                                    const unsigned char key[MPIXFER__KEY_LEN], uint64_t world,
                                    mpixfer__desc_t *desc)
{
    mpixfer_context_t *ctx = agent->ctx;
    mpixfer__remote_t *r;
    mpixfer__link_t *link;
    mpixfer_status_t st;

    mpixfer__lock(ctx);
    if ((r = remote_entry(agent, name)) == NULL) {
        st = MPIXFER_ERR_NO_MEMORY;
        goto out;
    }
    st = mpixfer__link_connect(ctx, agent, name, addr, key, world, &link);
    if (st != MPIXFER_OK)
        goto out;
    /* A reload replaces the old link (and what it knew). */
    if (r->link != NULL)
        mpixfer__link_release(ctx, r->link);
    mpixfer__desc_fini(&r->desc);
    if (desc != NULL) {
        r->desc = *desc;
        desc->regions = NULL;
        desc->nregions = 0;
    }
    r->from_blob = desc != NULL;
    r->link = link;
    r->rank = 0;
    r->loaded = false;
    r->pending = true;
out:
    mpixfer__unlock(ctx);
    if (desc != NULL)
        mpixfer__desc_fini(desc);
    return st;
}

mpixfer_status_t mpixfer_load_remote_agent(mpixfer_agent_t *agent, const char *name,
                                           const void *blob, size_t len)
{
    mpixfer__desc_t desc;
    mpixfer_status_t st;
    mpixfer_context_t *ctx;

    if (agent == NULL || name == NULL || blob == NULL || len == 0)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "agent, name or blob is NULL, or len is 0");
    ctx = agent->ctx;
    st = mpixfer__desc_decode(blob, len, ctx->params.max_desc_regions, &desc);
    if (st != MPIXFER_OK)
        return st;
    if (desc.world_id != ctx->world_id) {
        if (!desc.has_link) {
            LOG_WARN("descriptor of '%s' is from MPI world %016llx, this context is %016llx, "
                     "and carries no link (that agent's process has no listener)",
                     desc.name, (unsigned long long)desc.world_id,
                     (unsigned long long)ctx->world_id);
            st = MPIXFER_ERR_UNREACHABLE;
            goto err;
        }
        if (strcmp(desc.name, name) != 0) {
            LOG_WARN("descriptor is of agent '%s', not '%s'", desc.name, name);
            st = MPIXFER_ERR_INVALID_ARG;
            goto err;
        }
        return load_linked(agent, name, desc.link_addr, desc.key, desc.world_id, &desc);
    }
    if (desc.rank >= (uint32_t)ctx->size) {
        LOG_WARN("descriptor of '%s' names rank %u of a %d-process context", desc.name,
                 desc.rank, ctx->size);
        st = MPIXFER_ERR_BAD_DESC;
        goto err;
    }
    if (strcmp(desc.name, name) != 0) {
        LOG_WARN("descriptor is of agent '%s', not '%s'", desc.name, name);
        st = MPIXFER_ERR_INVALID_ARG;
        goto err;
    }
    if (strcmp(desc.name, agent->name) == 0 && desc.rank == (uint32_t)ctx->rank) {
        LOG_WARN("agent '%s' cannot load itself", name);
        st = MPIXFER_ERR_INVALID_ARG;
        goto err;
    }
    mpixfer__lock(ctx);
    mpixfer__agent_store_desc(agent, &desc, NULL);
    mpixfer__unlock(ctx);
    return MPIXFER_OK;
err:
    mpixfer__desc_fini(&desc);
    return st;
}

mpixfer_status_t mpixfer_get_local_connection_info(mpixfer_agent_t *agent, char **info_p)
{
    mpixfer_context_t *ctx;
    mpixfer_status_t st;

    if (agent == NULL || info_p == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "agent or info_p is NULL");
    ctx = agent->ctx;
    mpixfer__lock(ctx);
    /* The info may travel to another process: it carries the listener and the key. */
    if (agent->reachable)
        mpixfer__listen_ensure(ctx);
    st = mpixfer__conninfo_format(ctx->world_id, ctx->rank,
                                  agent->reachable ? mpixfer__listen_addr(ctx) : NULL, agent->key,
                                  agent->name, info_p);
    mpixfer__unlock(ctx);
    return st;
}

mpixfer_status_t mpixfer_load_remote_agent_by_connection(mpixfer_agent_t *agent, const char *name,
                                                         const char *info)
{
    mpixfer_context_t *ctx;
    char rname[MPIXFER__NAME_MAX + 1];
    unsigned char key[MPIXFER__KEY_LEN];
    uint64_t wid;
    int rank;
    char *addr = NULL;
    mpixfer__remote_t *r;
    mpixfer_status_t st;

    if (agent == NULL || name == NULL || info == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "agent, name or info is NULL");
    ctx = agent->ctx;
    st = mpixfer__conninfo_parse(info, &wid, &rank, &addr, key, rname);
    if (st != MPIXFER_OK)
        return st;
    if (strcmp(rname, name) != 0) {
        free(addr);
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "connection info is of agent '%s', not '%s'",
                      rname, name);
    }
    if (wid != ctx->world_id) {
        if (addr == NULL)
            MPIXFER__FAIL(MPIXFER_ERR_UNREACHABLE,
                          "connection info of '%s' is from MPI world %016llx, this context is "
                          "%016llx, and it carries no link (its process has no listener)",
                          rname, (unsigned long long)wid, (unsigned long long)ctx->world_id);
        st = load_linked(agent, name, addr, key, wid, NULL);
        free(addr);
        return st;
    }
    /* Same world: the communicator reaches it, no key needed. */
    free(addr);
    if (rank >= ctx->size)
        MPIXFER__FAIL(MPIXFER_ERR_BAD_DESC, "connection info names rank %d of %d", rank,
                      ctx->size);
    if (rank == ctx->rank && strcmp(rname, agent->name) == 0)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "agent '%s' cannot load itself", name);

    mpixfer__lock(ctx);
    if ((r = remote_entry(agent, name)) == NULL) {
        mpixfer__unlock(ctx);
        return MPIXFER_ERR_NO_MEMORY;
    }
    if (r->link != NULL)
        mpixfer__link_release(ctx, r->link);
    r->link = NULL;
    r->from_blob = false;
    r->rank = rank;
    r->pending = true;
    st = mpixfer__ctrl_send(ctx, (mpixfer__route_t){r->rank, NULL}, MPIXFER__CTRL_DESC_REQ,
                            agent->name, name, NULL, 0);
    if (st != MPIXFER_OK)
        r->pending = false;
    mpixfer__unlock(ctx);
    return st;
}

mpixfer_status_t mpixfer_invalidate_remote_agent(mpixfer_agent_t *agent, const char *name)
{
    mpixfer_context_t *ctx;

    if (agent == NULL || name == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "agent or name is NULL");
    ctx = agent->ctx;
    mpixfer__lock(ctx);
    for (mpixfer__remote_t **pp = &agent->remotes; *pp != NULL; pp = &(*pp)->next)
        if (strcmp((*pp)->name, name) == 0) {
            mpixfer__remote_t *r = *pp;
            *pp = r->next;
            remote_free(ctx, r);
            mpixfer__unlock(ctx);
            LOG_DEBUG("agent '%s' invalidated '%s'", agent->name, name);
            return MPIXFER_OK;
        }
    mpixfer__unlock(ctx);
    MPIXFER__FAIL(MPIXFER_ERR_NOT_FOUND, "agent '%s' has not loaded '%s'", agent->name, name);
}

bool mpixfer_check_remote_descs(mpixfer_agent_t *agent, const char *name,
                                const mpixfer_mem_descs_t *descs)
{
    mpixfer_context_t *ctx;
    mpixfer__remote_t *r;
    bool ok = false;

    if (agent == NULL || name == NULL || descs == NULL ||
        (descs->count > 0 && descs->descs == NULL))
        return false;
    ctx = agent->ctx;
    mpixfer__lock(ctx);
    mpixfer__progress_locked(ctx);
    r = mpixfer__find_remote(agent, name);
    if (r != NULL && r->loaded) {
        ok = true;
        for (size_t i = 0; i < descs->count && ok; i++) {
            const mpixfer_mem_desc_t *d = &descs->descs[i];
            ok = d->len > 0 && d->addr + d->len > d->addr &&
                 mpixfer__desc_find(&r->desc, descs->type, d) == MPIXFER_OK;
        }
    }
    mpixfer__unlock(ctx);
    return ok;
}

mpixfer_status_t mpixfer_remote_status(mpixfer_agent_t *agent, const char *name)
{
    mpixfer_context_t *ctx;
    mpixfer__remote_t *r;
    mpixfer_status_t st;

    if (agent == NULL || name == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "agent or name is NULL");
    ctx = agent->ctx;
    mpixfer__lock(ctx);
    mpixfer__progress_locked(ctx);
    r = mpixfer__find_remote(agent, name);
    /* As submit sees it: a failed link's reason first. */
    st = r == NULL ? MPIXFER_ERR_NOT_FOUND : mpixfer__remote_link_err(r);
    if (st == MPIXFER_OK)
        st = r->loaded ? MPIXFER_OK : r->pending ? MPIXFER_IN_PROGRESS : MPIXFER_ERR_NOT_FOUND;
    mpixfer__unlock(ctx);
    return st;
}

void mpixfer_free(void *p)
{
    free(p);
}
