/* Window attachments: a reference-counted set of disjoint, page-rounded ranges.
 *
 * MPI refuses overlapping attachments and caps their number (osc/rdma: 64 by default,
 * osc/ucx: 32), while callers register thousands of KV blocks that touch or overlap.
 * Every registration is rounded out to whole pages and merged with any attached range it
 * overlaps or touches, so a pool carved into blocks costs one attachment. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static uintptr_t page_size(void)
{
    static uintptr_t ps;
    if (ps == 0) {
        long v = sysconf(_SC_PAGESIZE);
        ps = v > 0 ? (uintptr_t)v : 4096;
    }
    return ps;
}

/* First attached range whose end is >= b (ranges are sorted and disjoint). */
static size_t lower_bound(const mpixfer_context_t *ctx, uintptr_t b)
{
    size_t lo = 0, hi = ctx->nattach;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ctx->attach[mid].base + ctx->attach[mid].len < b)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int win_attach(mpixfer_context_t *ctx, uintptr_t base, size_t len)
{
    if (!ctx->has_win)
        return MPI_SUCCESS;
    return MPI_Win_attach(ctx->win, (void *)base, (MPI_Aint)len);
}

static int win_detach(mpixfer_context_t *ctx, uintptr_t base)
{
    if (!ctx->has_win)
        return MPI_SUCCESS;
    return MPI_Win_detach(ctx->win, (void *)base);
}

mpixfer_status_t mpixfer__registry_add(mpixfer_context_t *ctx, uintptr_t addr, size_t len,
                                       size_t nrefs)
{
    uintptr_t ps = page_size();
    uintptr_t b = addr & ~(ps - 1);
    uintptr_t e = (addr + len + ps - 1) & ~(ps - 1);
    size_t first, last, refs = nrefs;
    uintptr_t nb = b, ne = e;
    int rc;

    if (e < addr) /* rounding wrapped past the top of the address space */
        e = UINTPTR_MAX & ~(ps - 1);
    first = lower_bound(ctx, b);
    last = first;
    /* Ranges overlapping or touching [b, e). */
    while (last < ctx->nattach && ctx->attach[last].base <= e)
        last++;

    if (last == first + 1 && ctx->attach[first].base <= b &&
        ctx->attach[first].base + ctx->attach[first].len >= e) {
        ctx->attach[first].refs += nrefs;
        return MPIXFER_OK;
    }

    for (size_t i = first; i < last; i++) {
        if (ctx->attach[i].base < nb)
            nb = ctx->attach[i].base;
        if (ctx->attach[i].base + ctx->attach[i].len > ne)
            ne = ctx->attach[i].base + ctx->attach[i].len;
        refs += ctx->attach[i].refs;
    }

    if (last == first && ctx->nattach == ctx->cap_attach) {
        size_t ncap = ctx->cap_attach ? 2 * ctx->cap_attach : 16;
        mpixfer__attach_t *na = realloc(ctx->attach, ncap * sizeof(*na));
        if (na == NULL)
            return MPIXFER_ERR_NO_MEMORY;
        ctx->attach = na;
        ctx->cap_attach = ncap;
    }

    /* MPI refuses overlapping attachments: the union replaces its parts. A remote access
     * to the parts in this instant fails, so registrations that grow a range in use
     * should happen before peers transfer to it. */
    for (size_t i = first; i < last; i++) {
        rc = win_detach(ctx, ctx->attach[i].base);
        if (rc != MPI_SUCCESS) {
            for (size_t j = first; j < i; j++)
                win_attach(ctx, ctx->attach[j].base, ctx->attach[j].len);
            return MPIXFER__MPI_ERR("MPI_Win_detach", rc);
        }
    }
    rc = win_attach(ctx, nb, ne - nb);
    if (rc != MPI_SUCCESS) {
        mpixfer_status_t st = MPIXFER__MPI_ERR("MPI_Win_attach", rc);
        LOG_ERROR("could not attach [%#lx, +%zu) to the window with %zu ranges attached; "
                  "Open MPI's osc/rdma allows 64 (raise with --mca osc_rdma_max_attach N), "
                  "osc/ucx 32; register fewer, larger buffers",
                  (unsigned long)nb, (size_t)(ne - nb), ctx->nattach - (last - first));
        for (size_t j = first; j < last; j++)
            win_attach(ctx, ctx->attach[j].base, ctx->attach[j].len);
        return st;
    }

    if (last > first) {
        ctx->attach[first] = (mpixfer__attach_t){nb, ne - nb, refs};
        memmove(&ctx->attach[first + 1], &ctx->attach[last],
                (ctx->nattach - last) * sizeof(*ctx->attach));
        ctx->nattach -= last - first - 1;
    } else {
        memmove(&ctx->attach[first + 1], &ctx->attach[first],
                (ctx->nattach - first) * sizeof(*ctx->attach));
        ctx->attach[first] = (mpixfer__attach_t){nb, ne - nb, nrefs};
        ctx->nattach++;
    }
    LOG_DEBUG("attached [%#lx, +%zu), %zu ranges", (unsigned long)nb, (size_t)(ne - nb),
              ctx->nattach);
    return MPIXFER_OK;
}

void mpixfer__registry_remove(mpixfer_context_t *ctx, uintptr_t addr, size_t len)
{
    uintptr_t ps = page_size();
    uintptr_t b = addr & ~(ps - 1);
    size_t i = lower_bound(ctx, b);
    int rc;

    (void)len;
    /* lower_bound may stop at a range that merely touches b from below. */
    while (i < ctx->nattach && ctx->attach[i].base + ctx->attach[i].len <= b)
        i++;
    if (i == ctx->nattach || ctx->attach[i].base > b) {
        LOG_ERROR("internal: no attached range holds %#lx", (unsigned long)addr);
        return;
    }
    if (--ctx->attach[i].refs > 0)
        return;
    rc = win_detach(ctx, ctx->attach[i].base);
    if (rc != MPI_SUCCESS)
        MPIXFER__MPI_ERR("MPI_Win_detach", rc);
    memmove(&ctx->attach[i], &ctx->attach[i + 1], (ctx->nattach - i - 1) * sizeof(*ctx->attach));
    ctx->nattach--;
}

void mpixfer__registry_clear(mpixfer_context_t *ctx)
{
    for (size_t i = 0; i < ctx->nattach; i++)
        win_detach(ctx, ctx->attach[i].base);
    ctx->nattach = 0;
}
