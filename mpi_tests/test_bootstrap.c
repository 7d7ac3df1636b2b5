/* mpixfer_bootstrap: every agent (of every rank and of the same process) loads every other
 * one; re-bootstrap refreshes registrations and picks up new agents; duplicate names across
 * ranks make every rank fail with MPIXFER_ERR_EXISTS; ranks without agents are fine. */
#include "common.h"

#define K 2 /* agents per rank */
#define BUF (8 * 1024)

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    int rank = tst_rank(), size = tst_size(), n = size * K;
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &ctx));
    CHECK_STATUS(mpixfer_bootstrap(NULL), MPIXFER_ERR_INVALID_ARG);

    mpixfer_agent_t *ag[K];
    uint8_t *buf[K], *buf2[K], *rd = tst_alloc(BUF);
    char names[64][32];
    CHECK(n <= 64);
    for (int g = 0; g < n; g++)
        snprintf(names[g], sizeof names[g], "bs_%d_%d", g / K, g % K);
    for (int k = 0; k < K; k++) {
        int g = rank * K + k;
        ag[k] = tst_agent(ctx, names[g]);
        buf[k] = tst_alloc(BUF);
        buf2[k] = tst_alloc(BUF);
        tst_pattern_fill(buf[k], BUF, (uint32_t)g, 1, 0);
        CHECK_OK(tst_register(ag[k], buf[k], BUF));
        CHECK_OK(tst_register(ag[k], rd, BUF)); /* same buffer in two agents */
    }
    uint64_t addr[K], *all = calloc((size_t)n, sizeof *all), *all2 = calloc((size_t)n, sizeof *all2);
    for (int k = 0; k < K; k++)
        addr[k] = (uintptr_t)buf[k];
    CHECK_MPI(MPI_Allgather(addr, K, MPI_UINT64_T, all, K, MPI_UINT64_T, MPI_COMM_WORLD));
    for (int k = 0; k < K; k++)
        addr[k] = (uintptr_t)buf2[k];
    CHECK_MPI(MPI_Allgather(addr, K, MPI_UINT64_T, all2, K, MPI_UINT64_T, MPI_COMM_WORLD));

    /* Before bootstrap nobody knows anybody. */
    for (int k = 0; k < K; k++)
        for (int g = 0; g < n; g++)
            CHECK(!tst_check_remote(ag[k], names[g], all[g], BUF));

    CHECK_OK(mpixfer_bootstrap(ctx));
    for (int k = 0; k < K; k++) {
        int me = rank * K + k;
        for (int g = 0; g < n; g++) {
            if (g == me)
                continue;
            CHECK_MSG(tst_check_remote(ag[k], names[g], all[g], BUF), "%s does not know %s",
                      names[me], names[g]);
            CHECK(!tst_check_remote(ag[k], names[g], all2[g], BUF)); /* not registered yet */
            /* Read each other agent's buffer and verify. */
            memset(rd, 0, BUF);
            tst_xfer1(ag[k], MPIXFER_OP_READ, names[g], rd, all[g], BUF);
            CHECK_PATTERN(rd, BUF, g, 1, 0);
        }
    }
    tst_barrier_progress(ctx);

    /* Register more memory and add an agent; a second bootstrap refreshes everyone. */
    for (int k = 0; k < K; k++) {
        tst_pattern_fill(buf2[k], BUF, (uint32_t)(rank * K + k), 2, 0);
        CHECK_OK(tst_register(ag[k], buf2[k], BUF));
    }
    char late[32];
    snprintf(late, sizeof late, "bs_late_%d", rank);
    mpixfer_agent_t *lt = tst_agent(ctx, late);
    tst_barrier_progress(ctx);
    CHECK_OK(mpixfer_bootstrap(ctx));
    for (int k = 0; k < K; k++) {
        int me = rank * K + k;
        for (int g = 0; g < n; g++) {
            if (g == me)
                continue;
            CHECK(tst_check_remote(ag[k], names[g], all[g], BUF));
            CHECK_MSG(tst_check_remote(ag[k], names[g], all2[g], BUF),
                      "%s did not see %s's new registration after re-bootstrap", names[me],
                      names[g]);
            memset(rd, 0, BUF);
            tst_xfer1(ag[k], MPIXFER_OP_READ, names[g], rd, all2[g], BUF);
            CHECK_PATTERN(rd, BUF, g, 2, 0);
        }
        for (int r = 0; r < size; r++) {
            char ln[32];
            snprintf(ln, sizeof ln, "bs_late_%d", r);
            /* The late agent registered nothing: loaded, but no range is inside its memory. */
            CHECK(!tst_check_remote(ag[k], ln, all[0], 1));
        }
    }
    /* The late agent knows everybody. */
    for (int g = 0; g < n; g++)
        CHECK_MSG(tst_check_remote(lt, names[g], all[g], BUF), "%s does not know %s", late,
                  names[g]);
    tst_barrier_progress(ctx);

    /* Duplicate names across ranks: every rank gets EXISTS. */
    if (size >= 2) {
        mpixfer_context_t *c2 = NULL;
        CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &c2));
        char own[32];
        snprintf(own, sizeof own, "bs_own_%d", rank);
        mpixfer_agent_t *o = tst_agent(c2, own);
        mpixfer_agent_t *d = tst_agent(c2, "bs_duplicate");
        CHECK_STATUS(mpixfer_bootstrap(c2), MPIXFER_ERR_EXISTS);
        /* Remove the duplicates except on rank 0: bootstrap works again. */
        if (rank != 0)
            CHECK_OK(mpixfer_agent_destroy(d));
        CHECK_OK(mpixfer_bootstrap(c2));
        if (rank != 0) {
            char zero[32];
            snprintf(zero, sizeof zero, "bs_own_%d", 0);
            CHECK_OK(mpixfer_invalidate_remote_agent(o, zero)); /* loaded by the bootstrap */
            CHECK_OK(mpixfer_invalidate_remote_agent(o, "bs_duplicate"));
        } else {
            CHECK_OK(mpixfer_agent_destroy(d));
        }
        CHECK_OK(mpixfer_agent_destroy(o));
        CHECK_OK(mpixfer_context_destroy(c2));
    }

    /* Ranks without agents take part in a bootstrap. */
    mpixfer_context_t *c3 = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &c3));
    mpixfer_agent_t *only = NULL;
    if (rank == 0)
        only = tst_agent(c3, "bs_only_agent");
    CHECK_OK(mpixfer_bootstrap(c3));
    CHECK_OK(mpixfer_bootstrap(c3));
    if (only)
        CHECK_OK(mpixfer_agent_destroy(only));
    CHECK_OK(mpixfer_context_destroy(c3));

    CHECK_OK(mpixfer_agent_destroy(lt));
    for (int k = 0; k < K; k++)
        CHECK_OK(mpixfer_agent_destroy(ag[k]));
    CHECK_OK(mpixfer_context_destroy(ctx));
    for (int k = 0; k < K; k++) {
        free(buf[k]);
        free(buf2[k]);
    }
    free(rd);
    free(all);
    free(all2);
    return tst_finish("test_bootstrap");
}
