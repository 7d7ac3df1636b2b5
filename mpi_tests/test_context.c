/* Contexts: argument errors, rank/size/world id, several contexts at once, sub- and
 * self-communicators, intercommunicator refused, create_with_params, progress. */
#include "common.h"

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    int rank = tst_rank(), size = tst_size();
    mpixfer_context_t *ctx = NULL, *ctx2 = NULL;

    /* Argument errors (before anything collective happens). */
    mpixfer_context_t *untouched = (mpixfer_context_t *)(uintptr_t)0x1;
    CHECK_STATUS(mpixfer_context_create(MPI_COMM_NULL, &untouched), MPIXFER_ERR_INVALID_ARG);
    CHECK(untouched == (mpixfer_context_t *)(uintptr_t)0x1); /* set only on success */
    CHECK_STATUS(mpixfer_context_create(MPI_COMM_WORLD, NULL), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_context_create_with_params(MPI_COMM_NULL, NULL, &untouched),
                 MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_context_destroy(NULL), MPIXFER_ERR_INVALID_ARG);
    CHECK(mpixfer_context_rank(NULL) == -1);
    CHECK(mpixfer_context_size(NULL) == -1);
    CHECK_STATUS(mpixfer_progress(NULL), MPIXFER_ERR_INVALID_ARG);

    /* A plain context over MPI_COMM_WORLD. */
    CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &ctx));
    CHECK(ctx != NULL);
    CHECK(mpixfer_context_rank(ctx) == rank);
    CHECK(mpixfer_context_size(ctx) == size);
    uint64_t wid = mpixfer_context_world_id(ctx);
    uint64_t *wids = calloc((size_t)size, sizeof *wids);
    tst_allgather_u64(wid, wids);
    for (int i = 0; i < size; i++)
        CHECK_MSG(wids[i] == wid, "rank %d world id %016" PRIx64 " != %016" PRIx64, i, wids[i],
                  wid);
    CHECK_OK(mpixfer_progress(ctx));

    /* A second context at the same time, with params; it gets its own world id. */
    mpixfer_context_params_t params = MPIXFER_CONTEXT_PARAMS_INIT;
    params.max_sync_message = 4096;
    CHECK_OK(mpixfer_context_create_with_params(MPI_COMM_WORLD, &params, &ctx2));
    CHECK(ctx2 != NULL && ctx2 != ctx);
    CHECK(mpixfer_context_size(ctx2) == size);
    CHECK_MSG(mpixfer_context_world_id(ctx2) != wid, "two contexts share world id %016" PRIx64,
              wid);
    /* The dup'd communicator: application traffic on MPI_COMM_WORLD is not disturbed. */
    int token = rank * 7 + 3, sum = 0;
    CHECK_MPI(MPI_Allreduce(&token, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    CHECK(sum == 7 * size * (size - 1) / 2 + 3 * size);
    CHECK_OK(mpixfer_progress(ctx2));
    CHECK_OK(mpixfer_context_destroy(ctx2));
    CHECK_OK(mpixfer_context_destroy(ctx));

    /* NULL params are the defaults. */
    ctx = NULL;
    CHECK_OK(mpixfer_context_create_with_params(MPI_COMM_WORLD, NULL, &ctx));
    CHECK_OK(mpixfer_context_destroy(ctx));

    /* Create/destroy repeatedly (leaks of communicators or windows would show up). */
    for (int i = 0; i < 10; i++) {
        ctx = NULL;
        CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &ctx));
        mpixfer_agent_t *a = NULL;
        CHECK_OK(mpixfer_agent_create(ctx, NULL, &a));
        CHECK_OK(mpixfer_agent_destroy(a));
        CHECK_OK(mpixfer_context_destroy(ctx));
    }

    /* A context over MPI_COMM_SELF (one process; no window). */
    ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_SELF, &ctx));
    CHECK(mpixfer_context_rank(ctx) == 0 && mpixfer_context_size(ctx) == 1);
    CHECK_OK(mpixfer_context_destroy(ctx));

    /* A context over a sub-communicator. */
    MPI_Comm half;
    CHECK_MPI(MPI_Comm_split(MPI_COMM_WORLD, rank % 2, rank, &half));
    int hrank, hsize;
    MPI_Comm_rank(half, &hrank);
    MPI_Comm_size(half, &hsize);
    /* One half at a time: Open MPI 4.1's osc/rdma names its shared-memory file after the
     * communicator id, which disjoint communicators from one split share, so windows created
     * concurrently on both halves collide (open-mpi/ompi#9492, fixed in 5.0 by #9495). */
    for (int h = 0; h < 2; h++) {
        if (rank % 2 == h) {
            ctx = NULL;
            CHECK_OK(mpixfer_context_create(half, &ctx));
            CHECK(mpixfer_context_rank(ctx) == hrank && mpixfer_context_size(ctx) == hsize);
            CHECK_OK(mpixfer_context_destroy(ctx));
        }
        MPI_Barrier(MPI_COMM_WORLD);
    }

    /* An intercommunicator is refused. */
    if (size >= 2) {
        MPI_Comm inter;
        int remote_leader = (rank % 2 == 0) ? 1 : 0;
        CHECK_MPI(MPI_Intercomm_create(half, 0, MPI_COMM_WORLD, remote_leader, 99, &inter));
        ctx = (mpixfer_context_t *)(uintptr_t)0x1;
        CHECK_STATUS(mpixfer_context_create(inter, &ctx), MPIXFER_ERR_UNSUPPORTED);
        CHECK(ctx == (mpixfer_context_t *)(uintptr_t)0x1);
        MPI_Comm_free(&inter);
    }
    MPI_Comm_free(&half);
    free(wids);
    return tst_finish("test_context");
}
