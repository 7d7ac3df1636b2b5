/* "Which region holds [addr, addr + len)?": one search for the agent's own registrations
 * (agent.c, pointers to mpixfer__region_t) and a remote agent's descriptor (desc.c, an array
 * of mpixfer__wire_region_t). A macro rather than a function over a callback: validation
 * runs it for every descriptor of a request (40,000 of them), where an indirect call per
 * probe would cost more than the search. Internal; not installed. */
#ifndef MPIXFER_RANGE_FIND_H
#define MPIXFER_RANGE_FIND_H

/*
 * Defines `static mpixfer_status_t fname(owner_t *o, mpixfer_mem_type_t type,
 * const mpixfer_mem_desc_t *d, size_t *index_p)`: MPIXFER_OK with the index of a region of
 * @p type (and, for VRAM, d->device_id) that holds the whole range; OUT_OF_RANGE when the
 * range starts in such a region but runs past it; NOT_FOUND otherwise. AT(o, i) yields a
 * pointer to region i (fields addr, len, type, device), COUNT(o) their number; regions are
 * sorted by addr and may overlap.
 */
#define MPIXFER__DEFINE_RANGE_FIND(fname, owner_t, AT, COUNT)                                      \
    static mpixfer_status_t fname(owner_t *o, mpixfer_mem_type_t type,                             \
                                  const mpixfer_mem_desc_t *d, size_t *index_p)                    \
    {                                                                                              \
        size_t lo = 0, hi = COUNT(o);                                                              \
        uint64_t a = d->addr, e = (uint64_t)d->addr + d->len;                                      \
        bool starts_inside = false;                                                                \
                                                                                                   \
        /* The last region with addr <= a: candidates lie at or before it. */                      \
        while (lo < hi) {                                                                          \
            size_t mid = lo + (hi - lo) / 2;                                                       \
            if ((uint64_t)AT(o, mid)->addr <= a)                                                   \
                lo = mid + 1;                                                                      \
            else                                                                                   \
                hi = mid;                                                                          \
        }                                                                                          \
        /* Regions may overlap: the nearest one may be too short while an earlier, longer one      \
         * holds the range. The walk is bounded for hostile layouts. */                            \
        for (size_t i = lo; i-- > 0;) {                                                            \
            uint64_t ra = (uint64_t)AT(o, i)->addr, re = ra + (uint64_t)AT(o, i)->len;             \
            if ((uint32_t)AT(o, i)->type != (uint32_t)type ||                                      \
                (type == MPIXFER_MEM_VRAM && AT(o, i)->device != d->device_id))                    \
                continue;                                                                          \
            if (a < re) {                                                                          \
                if (e <= re) {                                                                     \
                    *index_p = i;                                                                  \
                    return MPIXFER_OK;                                                             \
                }                                                                                  \
                starts_inside = true;                                                              \
            }                                                                                      \
            if (lo - i > 4096)                                                                     \
                break;                                                                             \
        }                                                                                          \
        return starts_inside ? MPIXFER_ERR_OUT_OF_RANGE : MPIXFER_ERR_NOT_FOUND;                   \
    }

/* The order of regions, for any struct with fields addr, len, type and device: address,
 * then length, type, device. Sorted registrations and descriptors both use it. */
#define MPIXFER__RANGE_CMP(a, b)                                                                   \
    ((a)->addr != (b)->addr       ? ((a)->addr < (b)->addr ? -1 : 1)                               \
     : (a)->len != (b)->len       ? ((a)->len < (b)->len ? -1 : 1)                                 \
     : (a)->type != (b)->type     ? ((a)->type < (b)->type ? -1 : 1)                               \
     : (a)->device != (b)->device ? ((a)->device < (b)->device ? -1 : 1)                           \
                                  : 0)

#endif
