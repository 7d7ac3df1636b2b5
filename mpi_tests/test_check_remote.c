/* mpixfer_check_remote_descs: unknown name, exact region, sub-ranges, one byte past the end,
 * start at the end, several descs (all in / one out), wrong memory type, wrong device, a
 * range spanning two regions, empty list, after invalidate and after reload. Same-process
 * and next-rank remotes. */
#include "common.h"

static bool chk(mpixfer_agent_t *a, const char *name, mpixfer_mem_type_t t,
                const mpixfer_mem_desc_t *d, size_t n)
{
    mpixfer_mem_descs_t l = tst_descs(t, d, n);
    return mpixfer_check_remote_descs(a, name, &l);
}

static mpixfer_mem_desc_t D(uint64_t addr, size_t len)
{
    return tst_desc((const void *)(uintptr_t)addr, len);
}

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    int rank = tst_rank(), size = tst_size(), peer = (rank + 1) % size;
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &ctx));
    char an[32], bn[32], pbn[32];
    tst_name(an, sizeof an, "chk_A", rank);
    tst_name(bn, sizeof bn, "chk_B", rank);
    tst_name(pbn, sizeof pbn, "chk_B", peer);
    mpixfer_agent_t *A = tst_agent(ctx, an), *B = tst_agent(ctx, bn);
    const size_t len = 16 * 1024;
    /* Two regions back to back inside one allocation, plus a separate one. */
    uint8_t *two = tst_alloc(2 * len), *sep = tst_alloc(len);
    CHECK_OK(tst_register(B, two, len));
    CHECK_OK(tst_register(B, two + len, len));
    CHECK_OK(tst_register(B, sep, len));
    uint64_t mine[2] = {(uintptr_t)two, (uintptr_t)sep}, *all = calloc((size_t)size * 2, 8);
    CHECK_MPI(MPI_Allgather(mine, 2, MPI_UINT64_T, all, 2, MPI_UINT64_T, MPI_COMM_WORLD));
    CHECK_OK(mpixfer_bootstrap(ctx));

    for (int pass = 0; pass < 2; pass++) {
        const char *name = pass == 0 ? bn : pbn;
        int owner = pass == 0 ? rank : peer;
        uint64_t t = all[owner * 2], s = all[owner * 2 + 1];
        mpixfer_mem_desc_t d[4];
        CHECK(!chk(A, "chk_nobody", MPIXFER_MEM_DRAM, (d[0] = D(t, len), d), 1));
        CHECK(chk(A, name, MPIXFER_MEM_DRAM, (d[0] = D(t, len), d), 1));
        CHECK(chk(A, name, MPIXFER_MEM_DRAM, (d[0] = D(t + len, len), d), 1));
        CHECK(chk(A, name, MPIXFER_MEM_DRAM, (d[0] = D(s, len), d), 1));
        CHECK(chk(A, name, MPIXFER_MEM_DRAM, (d[0] = D(s + 1, len - 2), d), 1));
        CHECK(chk(A, name, MPIXFER_MEM_DRAM, (d[0] = D(s + len - 1, 1), d), 1));
        CHECK(!chk(A, name, MPIXFER_MEM_DRAM, (d[0] = D(s + 1, len), d), 1)); /* 1 byte past */
        CHECK(!chk(A, name, MPIXFER_MEM_DRAM, (d[0] = D(s, len + 1), d), 1));
        CHECK(!chk(A, name, MPIXFER_MEM_DRAM, (d[0] = D(s + len, 1), d), 1)); /* at the end */
        CHECK(!chk(A, name, MPIXFER_MEM_DRAM, (d[0] = D(s - 1, 2), d), 1));
        CHECK(!chk(A, name, MPIXFER_MEM_DRAM, (d[0] = D(t + len / 2, len), d), 1)); /* spans two */
        d[0] = D(t, 100);
        d[1] = D(t + len + 5, 100);
        d[2] = D(s + 7, 1000);
        CHECK(chk(A, name, MPIXFER_MEM_DRAM, d, 3));
        d[3] = D(s + len - 10, 11);
        CHECK(!chk(A, name, MPIXFER_MEM_DRAM, d, 4)); /* one of four outside */
        CHECK(!chk(A, name, MPIXFER_MEM_VRAM, d, 3)); /* other memory type */
        /* (device_id is only meaningful for VRAM; the library ignores it for DRAM) */
        d[0] = D(t, 0);
        (void)chk(A, name, MPIXFER_MEM_DRAM, d, 1); /* zero length: either answer, no crash */
        CHECK(!mpixfer_check_remote_descs(NULL, name, NULL));
        CHECK(!mpixfer_check_remote_descs(A, NULL, NULL));
    }
    /* Invalidate, then reload by blob. */
    CHECK_OK(mpixfer_invalidate_remote_agent(A, pbn));
    CHECK(!tst_check_remote(A, pbn, all[peer * 2], len));
    if (size > 1)
        CHECK(tst_check_remote(A, bn, all[rank * 2], len));
    tst_gathered_t g = tst_allgather_desc(B);
    tst_load_from(A, pbn, &g, peer);
    CHECK(tst_check_remote(A, pbn, all[peer * 2], len));
    tst_gathered_free(&g);
    tst_barrier_progress(ctx);

    CHECK_OK(mpixfer_agent_destroy(A));
    CHECK_OK(mpixfer_agent_destroy(B));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(two);
    free(sep);
    free(all);
    return tst_finish("test_check_remote");
}
