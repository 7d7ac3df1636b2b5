/* Several agents per process: 3 per rank, bootstrap, then all-to-all WRITE (every agent writes
 * its own slot in every other agent's inbox buffer) and all-to-all READ (every agent reads
 * every other agent's source buffer), all requests in flight at once; every byte checked. */
#include "common.h"

#define K 3
#define SLOT (16 * 1024)

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    int rank = tst_rank(), size = tst_size(), n = size * K;
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &ctx));
    mpixfer_agent_t *ag[K];
    uint8_t *inbox[K], *srcb[K], *readb[K];
    char (*names)[32] = calloc((size_t)n, 32);
    for (int g = 0; g < n; g++)
        snprintf(names[g], 32, "ma_%d_%d", g / K, g % K);
    for (int k = 0; k < K; k++) {
        ag[k] = tst_agent(ctx, names[rank * K + k]);
        inbox[k] = tst_alloc((size_t)n * SLOT);
        srcb[k] = tst_alloc(SLOT);
        readb[k] = tst_alloc((size_t)n * SLOT);
        CHECK_OK(tst_register(ag[k], inbox[k], (size_t)n * SLOT));
        CHECK_OK(tst_register(ag[k], srcb[k], SLOT));
        CHECK_OK(tst_register(ag[k], readb[k], (size_t)n * SLOT));
    }
    uint64_t mine[2 * K], *all = calloc((size_t)n * 2, 8);
    for (int k = 0; k < K; k++) {
        mine[2 * k] = (uintptr_t)inbox[k];
        mine[2 * k + 1] = (uintptr_t)srcb[k];
    }
    CHECK_MPI(MPI_Allgather(mine, 2 * K, MPI_UINT64_T, all, 2 * K, MPI_UINT64_T, MPI_COMM_WORLD));
    CHECK_OK(mpixfer_bootstrap(ctx));
    mpixfer_request_t **xs = calloc((size_t)K * (size_t)n, sizeof *xs);

    for (uint32_t it = 0; it < 3; it++) {
        /* ---- WRITE all-to-all: agent g writes srcb into slot g of every other agent */
        for (int k = 0; k < K; k++) {
            int me = rank * K + k;
            tst_pattern_fill(srcb[k], SLOT, (uint32_t)me, it, 0);
            tst_pattern_fill(inbox[k], (size_t)n * SLOT, (uint32_t)me, 100 + it, 0);
        }
        tst_barrier_progress(ctx);
        size_t nx = 0;
        for (int k = 0; k < K; k++) {
            int me = rank * K + k;
            for (int j = 1; j < n; j++) {
                int g = (me + j) % n;
                xs[nx++] = tst_submit1(ag[k], MPIXFER_OP_WRITE, names[g], srcb[k],
                                       all[2 * g] + (uint64_t)me * SLOT, SLOT, NULL, 0);
            }
        }
        for (size_t i = 0; i < nx; i++)
            TST_WAIT_OK(xs[i]);
        tst_barrier_progress(ctx);
        for (int k = 0; k < K; k++) {
            int me = rank * K + k;
            for (int g = 0; g < n; g++) {
                if (g == me)
                    CHECK_PATTERN(inbox[k] + (size_t)g * SLOT, SLOT, me, 100 + it, (size_t)g * SLOT);
                else
                    CHECK_PATTERN(inbox[k] + (size_t)g * SLOT, SLOT, g, it, 0);
            }
        }
        tst_barrier_progress(ctx);

        /* ---- READ all-to-all: agent g reads every other agent's srcb into its slot */
        for (int k = 0; k < K; k++) {
            int me = rank * K + k;
            tst_pattern_fill(srcb[k], SLOT, (uint32_t)me, 200 + it, 0);
            memset(readb[k], 0, (size_t)n * SLOT);
        }
        tst_barrier_progress(ctx);
        nx = 0;
        for (int k = 0; k < K; k++) {
            int me = rank * K + k;
            for (int j = 1; j < n; j++) {
                int g = (me + j) % n;
                xs[nx++] = tst_submit1(ag[k], MPIXFER_OP_READ, names[g], readb[k] + (size_t)g * SLOT,
                                       all[2 * g + 1], SLOT, NULL, 0);
            }
        }
        for (size_t i = nx; i-- > 0;) /* wait in reverse order */
            TST_WAIT_OK(xs[i]);
        for (int k = 0; k < K; k++) {
            int me = rank * K + k;
            for (int g = 0; g < n; g++)
                if (g != me)
                    CHECK_PATTERN(readb[k] + (size_t)g * SLOT, SLOT, g, 200 + it, 0);
        }
        tst_barrier_progress(ctx);
    }

    for (int k = 0; k < K; k++) {
        CHECK_OK(mpixfer_agent_destroy(ag[k]));
        free(inbox[k]);
        free(srcb[k]);
        free(readb[k]);
    }
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(xs);
    free(all);
    free(names);
    return tst_finish("test_multi_agent");
}
