/* Shared by the libFuzzer targets and the seed generator in fuzz/.
 *
 * The targets link mpixfer_fuzz_static (the library's sources built with coverage, ASan and
 * UBSan), so the internal decoders of src/internal.h are reachable. None of them needs MPI
 * to be initialised: the only MPI call on these paths is MPI_Initialized in the logger. */
#ifndef MPIXFER_FUZZ_COMMON_H
#define MPIXFER_FUZZ_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* An invariant the decoders promise. A failure aborts, which libFuzzer reports as a crash
 * and saves the input as an artifact. */
#define FUZZ_CHECK(expr)                                                                           \
    do {                                                                                           \
        if (!(expr)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #expr);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Encode a descriptor with the library's own encoder. mpixfer__desc_encode reads an agent's
 * name, regions and context (world id, rank), so a zeroed agent and context with just those
 * fields set stand in for real ones; nothing else is touched. */
static inline mpixfer_status_t fuzz_desc_encode(uint64_t world_id, uint32_t rank,
                                                const char *name,
                                                const mpixfer__wire_region_t *regions,
                                                size_t nregions, void **blob_p, size_t *len_p)
{
    mpixfer_context_t ctx;
    mpixfer_agent_t agent;
    mpixfer__region_t *store = NULL, **ptrs = NULL;
    mpixfer_status_t st;

    memset(&ctx, 0, sizeof(ctx));
    memset(&agent, 0, sizeof(agent));
    ctx.world_id = world_id;
    ctx.rank = (int)rank;
    agent.ctx = &ctx;
    agent.name = (char *)name;
    if (nregions > 0) {
        store = calloc(nregions, sizeof(*store));
        ptrs = calloc(nregions, sizeof(*ptrs));
        if (store == NULL || ptrs == NULL) {
            free(store);
            free(ptrs);
            return MPIXFER_ERR_NO_MEMORY;
        }
        for (size_t i = 0; i < nregions; i++) {
            store[i].addr = (uintptr_t)regions[i].addr;
            store[i].len = (size_t)regions[i].len;
            store[i].type = (mpixfer_mem_type_t)regions[i].type;
            store[i].device = regions[i].device;
            ptrs[i] = &store[i];
        }
    }
    agent.regions = ptrs;
    agent.nregions = nregions;
    agent.cap_regions = nregions;
    st = mpixfer__desc_encode(&agent, false, blob_p, len_p);
    free(ptrs);
    free(store);
    return st;
}

#endif
