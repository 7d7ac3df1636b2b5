/* Connection info: format "mpixfer:1:<16 hex world id>:<rank>:<name>", errors (garbage,
 * other version, name mismatch, other world), and asynchronous loading: infos exchanged with
 * MPI_Allgather, load, poll check_remote_descs (10 s deadline) while every rank keeps calling
 * mpixfer_progress so the remote answers; then a transfer proves the loaded descriptor works.
 * Same-process and next-rank remotes. */
#include "common.h"

#define INFO_MAX 512
#define LEN (64 * 1024)

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    TST_PAIR_SETUP("ci");
    uint8_t *src = tst_alloc(LEN), *dst = tst_alloc(LEN);
    CHECK_OK(tst_register(A, src, LEN));
    CHECK_OK(tst_register(B, dst, LEN));
    uint64_t *dst_all = calloc((size_t)size, 8);
    tst_allgather_u64((uintptr_t)dst, dst_all);

    /* ---- format */
    char *info = NULL;
    CHECK_STATUS(mpixfer_get_local_connection_info(NULL, &info), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_get_local_connection_info(B, NULL), MPIXFER_ERR_INVALID_ARG);
    CHECK_OK(mpixfer_get_local_connection_info(B, &info));
    CHECK(info != NULL && strlen(info) < INFO_MAX);
    char expect[INFO_MAX];
    /* Version 3: reachable by links too, "...:<ip>:<port>:key=<32 lower hex>:<name>". */
    snprintf(expect, sizeof expect, "mpixfer:3:%016" PRIx64 ":%d:", mpixfer_context_world_id(ctx),
             rank);
    CHECK_MSG(strncmp(info, expect, strlen(expect)) == 0, "connection info '%s', expected '%s...'",
              info, expect);
    {
        const char *k = strstr(info, ":key=");
        CHECK_MSG(k != NULL, "no key= in '%s'", info);
        CHECK(strspn(k + 5, "0123456789abcdef") == 32 && k[37] == ':');
        CHECK(strcmp(k + 38, bn) == 0);
    }

    char *infos = calloc((size_t)size, INFO_MAX);
    char myinfo[INFO_MAX] = {0};
    snprintf(myinfo, sizeof myinfo, "%s", info);
    CHECK_MPI(MPI_Allgather(myinfo, INFO_MAX, MPI_CHAR, infos, INFO_MAX, MPI_CHAR, MPI_COMM_WORLD));
    const char *pinfo = infos + (size_t)peer * INFO_MAX;

    /* ---- errors */
    const char *garbage[] = {"",
                             "garbage",
                             "mpixfer:",
                             "mpixfer:1:",
                             "mpixfer:2:0000000000000001:0:ci_B0",
                             "mpixfer:1:zzzzzzzzzzzzzzzz:0:ci_B0",
                             "mpixfer:1:0000000000000001:notarank:ci_B0",
                             "mpixfer:1:0000000000000001:0",
                             "nixl:1:0000000000000001:0:ci_B0"};
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
        mpixfer_status_t st = mpixfer_load_remote_agent_by_connection(A, "ci_B0", garbage[i]);
        CHECK_MSG(st == MPIXFER_ERR_BAD_DESC, "info '%s' gave %s", garbage[i],
                  mpixfer_status_name(st));
    }
    CHECK_STATUS(mpixfer_load_remote_agent_by_connection(A, "ci_wrong_name", pinfo),
                 MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_load_remote_agent_by_connection(A, pbn, NULL), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_load_remote_agent_by_connection(NULL, pbn, pinfo), MPIXFER_ERR_INVALID_ARG);
    {
        /* other world without a link (version 1): nothing reaches it */
        char other[INFO_MAX];
        snprintf(other, sizeof other, "mpixfer:1:%016" PRIx64 ":%d:%s",
                 mpixfer_context_world_id(ctx) ^ 1, peer, pbn);
        CHECK_STATUS(mpixfer_load_remote_agent_by_connection(A, pbn, other),
                     MPIXFER_ERR_UNREACHABLE);
    }
    {
        /* another context's agent */
        mpixfer_context_t *c2 = NULL;
        CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &c2));
        char on[32];
        tst_name(on, sizeof on, "ci_O", rank);
        mpixfer_agent_t *O = tst_agent(c2, on);
        char *oinfo = NULL;
        CHECK_OK(mpixfer_get_local_connection_info(O, &oinfo));
        /* Another context is another world: reached over a link, asynchronously. */
        CHECK_OK(mpixfer_load_remote_agent_by_connection(A, on, oinfo));
        mpixfer_mem_descs_t none = tst_descs(MPIXFER_MEM_DRAM, NULL, 0);
        double deadline = tst_now() + 20.0;
        while (!mpixfer_check_remote_descs(A, on, &none))
            CHECK_MSG(tst_now() < deadline, "another context's agent not usable in 20 s");
        CHECK_OK(mpixfer_invalidate_remote_agent(A, on));
        mpixfer_free(oinfo);
        CHECK_OK(mpixfer_agent_destroy(O));
        CHECK_OK(mpixfer_context_destroy(c2));
    }
    {
        /* rank outside the communicator */
        char bad[INFO_MAX];
        snprintf(bad, sizeof bad, "mpixfer:1:%016" PRIx64 ":%d:%s", mpixfer_context_world_id(ctx),
                 size + 7, pbn);
        mpixfer_status_t st = mpixfer_load_remote_agent_by_connection(A, pbn, bad);
        CHECK_MSG(st == MPIXFER_ERR_BAD_DESC || st == MPIXFER_ERR_UNREACHABLE,
                  "rank %d of %d gave %s", size + 7, size, mpixfer_status_name(st));
        /* loading oneself by connection */
        char *own = NULL;
        CHECK_OK(mpixfer_get_local_connection_info(A, &own));
        CHECK_STATUS(mpixfer_load_remote_agent_by_connection(A, an, own), MPIXFER_ERR_INVALID_ARG);
        mpixfer_free(own);
    }
    CHECK(!tst_check_remote(A, pbn, dst_all[peer], LEN));

    /* ---- an agent the remote process does not have: accepted (asynchronous), never loads */
    {
        char ghost[INFO_MAX];
        snprintf(ghost, sizeof ghost, "mpixfer:1:%016" PRIx64 ":%d:ci_ghost", 
                 mpixfer_context_world_id(ctx), peer);
        CHECK_OK(mpixfer_load_remote_agent_by_connection(A, "ci_ghost", ghost));
        double until = tst_now() + 0.3;
        while (tst_now() < until) {
            CHECK(!tst_check_remote(A, "ci_ghost", dst_all[peer], 1));
            usleep(1000);
        }
        mpixfer_request_t *x = (mpixfer_request_t *)(uintptr_t)0x1;
        mpixfer_mem_desc_t s1 = tst_desc(src, 16), d1 = tst_desc((void *)(uintptr_t)dst_all[peer], 16);
        mpixfer_transfer_request_t r;
        memset(&r, 0, sizeof r);
        r.op = MPIXFER_OP_WRITE;
        r.src = tst_descs(MPIXFER_MEM_DRAM, &s1, 1);
        r.dst = tst_descs(MPIXFER_MEM_DRAM, &d1, 1);
        r.remote_name = "ci_ghost";
        CHECK_STATUS(mpixfer_submit_transfer(A, &r, &x), MPIXFER_ERR_NOT_FOUND);
        tst_barrier_progress(ctx);
    }

    /* ---- asynchronous load of our own B and of the next rank's B */
    for (int round = 0; round < 2; round++) {
        const char *tname = round == 0 ? bn : pbn;
        const char *tinfo = round == 0 ? info : pinfo;
        uint64_t tdst = dst_all[round == 0 ? rank : peer];
        int wrank = round == 0 ? rank : prev;
        CHECK_OK(mpixfer_load_remote_agent_by_connection(A, tname, tinfo));
        double deadline = tst_now() + 10.0;
        while (!tst_check_remote(A, tname, tdst, LEN)) {
            CHECK_MSG(tst_now() < deadline, "descriptor of %s not loaded within 10 s", tname);
            usleep(200);
        }
        tst_barrier_progress(ctx); /* keep answering the others */
        /* Only the advertised region is accepted. */
        CHECK(!tst_check_remote(A, tname, tdst, LEN + 1));
        uint32_t iter = (uint32_t)round;
        tst_pattern_fill(src, LEN, (uint32_t)rank, iter, 0);
        tst_xfer1(A, MPIXFER_OP_WRITE, tname, src, tdst, LEN);
        tst_barrier_progress(ctx);
        CHECK_PATTERN(dst, LEN, wrank, iter, 0);
        tst_barrier_progress(ctx);
        /* Loading again by connection replaces the entry; still usable. */
        CHECK_OK(mpixfer_load_remote_agent_by_connection(A, tname, tinfo));
        deadline = tst_now() + 10.0;
        while (!tst_check_remote(A, tname, tdst, LEN)) {
            CHECK_MSG(tst_now() < deadline, "reload of %s not done within 10 s", tname);
            usleep(200);
        }
        tst_barrier_progress(ctx);
    }

    mpixfer_free(info);
    free(infos);
    CHECK_OK(mpixfer_agent_destroy(A));
    CHECK_OK(mpixfer_agent_destroy(B));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(src);
    free(dst);
    free(dst_all);
    return tst_finish("test_conninfo");
}
