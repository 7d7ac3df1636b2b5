/* Connection-info loading answered by the remote's own thread while the remote's main thread
 * never calls the library (it sleeps, testing an MPI_Ibarrier): once with a listen thread
 * (use_listen_thread) and once with a progress thread (use_progress_thread). Ranks pair up
 * (0-1, 2-3) and swap roles; with 1 rank both agents live in the same process. Needs
 * MPI_THREAD_MULTIPLE (exit 77 otherwise). */
#include "common.h"

#define INFO_MAX 512
#define LEN (32 * 1024)

int main(int argc, char **argv)
{
    int provided = tst_init_multiple(&argc, &argv);
    tst_require_multiple(provided);
    int rank = tst_rank(), size = tst_size();
    if (size > 1 && size % 2 != 0)
        tst_skip("needs 1 or an even number of ranks");
    int partner = size == 1 ? 0 : (rank ^ 1);
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &ctx));

    for (int variant = 0; variant < 2; variant++) {
        bool listen = variant == 0;
        char qn[32], rn[32], prn[32];
        snprintf(qn, sizeof qn, "cit_Q%d_%d", variant, rank);
        snprintf(rn, sizeof rn, "cit_R%d_%d", variant, rank);
        snprintf(prn, sizeof prn, "cit_R%d_%d", variant, partner);
        mpixfer_agent_t *Q = tst_agent(ctx, qn);
        mpixfer_agent_t *R = tst_agent_ex(ctx, rn, !listen, false, listen);
        uint8_t *rbuf = tst_alloc(LEN), *qbuf = tst_alloc(LEN);
        CHECK_OK(tst_register(R, rbuf, LEN));
        CHECK_OK(tst_register(Q, qbuf, LEN));
        tst_pattern_fill(rbuf, LEN, (uint32_t)rank, (uint32_t)variant, 0);
        uint64_t *addrs = calloc((size_t)size, 8);
        tst_allgather_u64((uintptr_t)rbuf, addrs);
        char *info = NULL, *infos = calloc((size_t)size, INFO_MAX), mine[INFO_MAX] = {0};
        CHECK_OK(mpixfer_get_local_connection_info(R, &info));
        snprintf(mine, sizeof mine, "%s", info);
        mpixfer_free(info);
        CHECK_MPI(MPI_Allgather(mine, INFO_MAX, MPI_CHAR, infos, INFO_MAX, MPI_CHAR, MPI_COMM_WORLD));

        for (int phase = 0; phase < 2; phase++) {
            bool requester = size == 1 || (rank % 2) == phase;
            if (requester) {
                CHECK_OK(mpixfer_load_remote_agent_by_connection(Q, prn,
                                                                 infos + (size_t)partner * INFO_MAX));
                double deadline = tst_now() + 10.0;
                while (!tst_check_remote(Q, prn, addrs[partner], LEN)) {
                    CHECK_MSG(tst_now() < deadline,
                              "%s thread of %s did not answer within 10 s",
                              listen ? "listen" : "progress", prn);
                    usleep(500);
                }
                /* The descriptor is usable: read the partner's buffer (passive target). */
                tst_xfer1(Q, MPIXFER_OP_READ, prn, qbuf, addrs[partner], LEN);
                CHECK_PATTERN(qbuf, LEN, partner, variant, 0);
                tst_barrier_sleep();
            } else {
                /* The responder's main thread stays out of the library. */
                tst_barrier_sleep();
            }
        }
        tst_barrier_progress(ctx);
        CHECK_OK(mpixfer_agent_destroy(R));
        CHECK_OK(mpixfer_agent_destroy(Q));
        free(rbuf);
        free(qbuf);
        free(addrs);
        free(infos);
    }
    CHECK_OK(mpixfer_context_destroy(ctx));
    return tst_finish("test_conninfo_threads");
}
