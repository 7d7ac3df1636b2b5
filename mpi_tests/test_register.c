/* register/deregister: argument errors, unsupported types, EXISTS, all-or-nothing, the same
 * buffer in two agents, overlapping ranges, exact-match deregistration, deregistered memory
 * no longer advertised, and 100 adjacent slices of one buffer (merged attach) that are all
 * transferable, locally and across ranks. */
#include "common.h"

#define NSLICE 100
#define SLICE 3000 /* not a page multiple: slices share pages */

static mpixfer_status_t reg_list(mpixfer_agent_t *a, mpixfer_mem_type_t t,
                                 const mpixfer_mem_desc_t *d, size_t n)
{
    mpixfer_mem_descs_t l = tst_descs(t, d, n);
    return mpixfer_register_memory(a, &l);
}

static mpixfer_status_t dereg_list(mpixfer_agent_t *a, mpixfer_mem_type_t t,
                                   const mpixfer_mem_desc_t *d, size_t n)
{
    mpixfer_mem_descs_t l = tst_descs(t, d, n);
    return mpixfer_deregister_memory(a, &l);
}

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    TST_PAIR_SETUP("reg");

    const size_t len = 64 * 1024;
    uint8_t *buf = tst_alloc(len), *other = tst_alloc(len);
    mpixfer_mem_desc_t d = tst_desc(buf, len), dd[2];
    mpixfer_mem_descs_t l = tst_descs(MPIXFER_MEM_DRAM, &d, 1);

    /* ---- argument errors */
    CHECK_STATUS(mpixfer_register_memory(NULL, &l), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_register_memory(A, NULL), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(reg_list(A, MPIXFER_MEM_DRAM, &d, 0), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(reg_list(A, MPIXFER_MEM_DRAM, NULL, 1), MPIXFER_ERR_INVALID_ARG);
    mpixfer_mem_desc_t bad = tst_desc(buf, 0);
    CHECK_STATUS(reg_list(A, MPIXFER_MEM_DRAM, &bad, 1), MPIXFER_ERR_INVALID_ARG);
    bad = tst_desc(NULL, 16);
    CHECK_STATUS(reg_list(A, MPIXFER_MEM_DRAM, &bad, 1), MPIXFER_ERR_INVALID_ARG);
    bad.addr = UINTPTR_MAX - 15;
    bad.len = 64;
    CHECK_STATUS(reg_list(A, MPIXFER_MEM_DRAM, &bad, 1), MPIXFER_ERR_INVALID_ARG);
    bad.addr = 4096;
    bad.len = SIZE_MAX;
    CHECK_STATUS(reg_list(A, MPIXFER_MEM_DRAM, &bad, 1), MPIXFER_ERR_INVALID_ARG);
    if (tst_vram_unsupported(ctx))
        CHECK_STATUS(reg_list(A, MPIXFER_MEM_VRAM, &d, 1), MPIXFER_ERR_UNSUPPORTED);
    CHECK_STATUS(reg_list(A, MPIXFER_MEM_BLK, &d, 1), MPIXFER_ERR_UNSUPPORTED);
    CHECK_STATUS(reg_list(A, MPIXFER_MEM_OBJ, &d, 1), MPIXFER_ERR_UNSUPPORTED);
    CHECK_STATUS(reg_list(A, MPIXFER_MEM_FILE, &d, 1), MPIXFER_ERR_UNSUPPORTED);
    CHECK_STATUS(reg_list(A, (mpixfer_mem_type_t)99, &d, 1), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(dereg_list(A, MPIXFER_MEM_DRAM, &d, 1), MPIXFER_ERR_NOT_FOUND); /* none failed half-way */

    /* ---- EXISTS, same buffer in two agents, overlapping ranges */
    CHECK_OK(mpixfer_register_memory(A, &l));
    CHECK_STATUS(mpixfer_register_memory(A, &l), MPIXFER_ERR_EXISTS);
    CHECK_OK(mpixfer_register_memory(B, &l));
    mpixfer_mem_desc_t ov1 = tst_desc(buf + 4096, 8192), ov2 = tst_desc(buf + 100, 50);
    mpixfer_mem_desc_t ov3 = tst_desc(buf + len / 2, len / 2);
    CHECK_OK(reg_list(A, MPIXFER_MEM_DRAM, &ov1, 1));
    CHECK_OK(reg_list(A, MPIXFER_MEM_DRAM, &ov2, 1));
    CHECK_OK(reg_list(A, MPIXFER_MEM_DRAM, &ov3, 1));
    CHECK_STATUS(reg_list(A, MPIXFER_MEM_DRAM, &ov2, 1), MPIXFER_ERR_EXISTS);

    /* ---- all or nothing */
    dd[0] = tst_desc(other, 4096);
    dd[1] = tst_desc(other + 8192, 0);
    CHECK_STATUS(reg_list(A, MPIXFER_MEM_DRAM, dd, 2), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(dereg_list(A, MPIXFER_MEM_DRAM, dd, 1), MPIXFER_ERR_NOT_FOUND);
    dd[1] = ov1; /* already registered */
    CHECK_STATUS(reg_list(A, MPIXFER_MEM_DRAM, dd, 2), MPIXFER_ERR_EXISTS);
    CHECK_STATUS(dereg_list(A, MPIXFER_MEM_DRAM, dd, 1), MPIXFER_ERR_NOT_FOUND);
    CHECK_OK(reg_list(A, MPIXFER_MEM_DRAM, dd, 1)); /* other[0..4096) alone works */

    /* ---- deregistration must match exactly; all or nothing */
    CHECK_STATUS(mpixfer_deregister_memory(NULL, &l), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_deregister_memory(A, NULL), MPIXFER_ERR_INVALID_ARG);
    mpixfer_mem_desc_t sub = tst_desc(buf, len - 1);
    CHECK_STATUS(dereg_list(A, MPIXFER_MEM_DRAM, &sub, 1), MPIXFER_ERR_NOT_FOUND);
    sub = tst_desc(buf + 1, len - 1);
    CHECK_STATUS(dereg_list(A, MPIXFER_MEM_DRAM, &sub, 1), MPIXFER_ERR_NOT_FOUND);
    sub = tst_desc(other + 4096, 4096);
    dd[0] = ov1;
    dd[1] = sub; /* not registered */
    CHECK_STATUS(dereg_list(A, MPIXFER_MEM_DRAM, dd, 2), MPIXFER_ERR_NOT_FOUND);
    CHECK_OK(dereg_list(A, MPIXFER_MEM_DRAM, &ov1, 1)); /* still there: nothing was removed */
    CHECK_STATUS(dereg_list(A, MPIXFER_MEM_DRAM, &ov1, 1), MPIXFER_ERR_NOT_FOUND);
    CHECK_STATUS(reg_list(A, MPIXFER_MEM_DRAM, &ov2, 1), MPIXFER_ERR_EXISTS); /* others intact */
    CHECK_OK(dereg_list(A, MPIXFER_MEM_DRAM, &ov2, 1));
    CHECK_OK(dereg_list(A, MPIXFER_MEM_DRAM, &ov3, 1));
    dd[0] = tst_desc(other, 4096);
    CHECK_OK(dereg_list(A, MPIXFER_MEM_DRAM, dd, 1));
    /* B's registration of the same buffer is independent of A's. */
    CHECK_OK(mpixfer_deregister_memory(A, &l));
    CHECK_STATUS(mpixfer_deregister_memory(A, &l), MPIXFER_ERR_NOT_FOUND);
    CHECK_STATUS(mpixfer_register_memory(B, &l), MPIXFER_ERR_EXISTS);
    CHECK_OK(mpixfer_deregister_memory(B, &l));
    /* Register again after deregistering. */
    CHECK_OK(mpixfer_register_memory(A, &l));

    /* ---- 100 adjacent slices of one buffer, registered one by one in B */
    uint8_t *big = tst_alloc(NSLICE * SLICE);
    mpixfer_mem_desc_t sl[NSLICE], src_d[NSLICE];
    for (int i = 0; i < NSLICE; i++) {
        sl[i] = tst_desc(big + (size_t)i * SLICE, SLICE);
        CHECK_OK(reg_list(B, MPIXFER_MEM_DRAM, &sl[i], 1));
    }
    /* A's source for them: its registered 64 KiB buffer is too small; use its own big one. */
    uint8_t *asrc = tst_alloc(NSLICE * SLICE);
    CHECK_OK(tst_register(A, asrc, NSLICE * SLICE));
    for (int i = 0; i < NSLICE; i++)
        src_d[NSLICE - 1 - i] = tst_desc(asrc + (size_t)i * SLICE, SLICE); /* reversed pairing */

    uint64_t big_all_self = (uintptr_t)big, *big_all = calloc((size_t)size, sizeof *big_all);
    uint64_t buf_all_self = (uintptr_t)buf, *buf_all = calloc((size_t)size, sizeof *buf_all);
    tst_allgather_u64(big_all_self, big_all);
    tst_allgather_u64(buf_all_self, buf_all);
    CHECK_OK(mpixfer_bootstrap(ctx));

    /* Targets: our own B (same process), then the next rank's B (if there is another rank). */
    for (int pass = 0; pass < (size > 1 ? 2 : 1); pass++) {
        const char *tname = pass == 0 ? bn : pbn;
        int trank = pass == 0 ? rank : peer;
        int wrank = pass == 0 ? rank : prev; /* who writes into our B in this pass */
        mpixfer_mem_desc_t dst_d[NSLICE];
        for (int i = 0; i < NSLICE; i++) {
            dst_d[i] = tst_desc((void *)(uintptr_t)(big_all[trank] + (uint64_t)i * SLICE), SLICE);
            CHECK(tst_check_remote(A, tname, dst_d[i].addr, SLICE));
        }
        /* A range spanning two registered slices lies in no single advertised region. */
        CHECK(!tst_check_remote(A, tname, big_all[trank] + SLICE / 2, SLICE));
        for (int it = 0; it < 3; it++) {
            uint32_t iter = (uint32_t)(pass * 10 + it);
            /* WRITE every slice in one request (pairs reversed). */
            tst_pattern_fill(asrc, NSLICE * SLICE, (uint32_t)rank, iter, 0);
            mpixfer_transfer_request_t r;
            memset(&r, 0, sizeof r);
            r.op = MPIXFER_OP_WRITE;
            r.src = tst_descs(MPIXFER_MEM_DRAM, src_d, NSLICE);
            r.dst = tst_descs(MPIXFER_MEM_DRAM, dst_d, NSLICE);
            r.remote_name = tname;
            mpixfer_request_t *x = NULL;
            CHECK_OK(mpixfer_submit_transfer(A, &r, &x));
            TST_WAIT_OK(x);
            tst_barrier_progress(ctx);
            /* Our B slice i came from the writer's asrc slice NSLICE-1-i. */
            for (int i = 0; i < NSLICE; i++)
                CHECK_PATTERN(big + (size_t)i * SLICE, SLICE, wrank, iter,
                              (size_t)(NSLICE - 1 - i) * SLICE);
            tst_barrier_progress(ctx);
            /* READ every slice back: owner refills with its own pattern first. */
            tst_pattern_fill(big, NSLICE * SLICE, (uint32_t)rank, iter + 100, 0);
            memset(asrc, 0, NSLICE * SLICE);
            tst_barrier_progress(ctx);
            r.op = MPIXFER_OP_READ;
            x = NULL;
            CHECK_OK(mpixfer_submit_transfer(A, &r, &x));
            TST_WAIT_OK(x);
            for (int i = 0; i < NSLICE; i++)
                CHECK_PATTERN(asrc + (size_t)(NSLICE - 1 - i) * SLICE, SLICE, trank, iter + 100,
                              (size_t)i * SLICE);
            tst_barrier_progress(ctx);
        }
    }

    /* ---- deregistered memory is no longer advertised (after the peer reloads us) */
    CHECK_OK(dereg_list(B, MPIXFER_MEM_DRAM, &sl[7], 1));
    CHECK_STATUS(dereg_list(B, MPIXFER_MEM_DRAM, &sl[7], 1), MPIXFER_ERR_NOT_FOUND);
    CHECK_OK(mpixfer_deregister_memory(A, &l));
    tst_barrier_progress(ctx);
    CHECK_OK(mpixfer_bootstrap(ctx));
    CHECK(!tst_check_remote(A, pbn, big_all[peer] + 7 * SLICE, SLICE));
    CHECK(tst_check_remote(A, pbn, big_all[peer] + 8 * SLICE, SLICE));
    CHECK(!tst_check_remote(B, an, buf_all[rank], len)); /* A's buffer no longer advertised */
    {
        mpixfer_mem_desc_t s1 = tst_desc(buf, SLICE), d1 = sl[8];
        d1.addr = (uintptr_t)(big_all[peer] + 8 * SLICE);
        mpixfer_transfer_request_t r;
        memset(&r, 0, sizeof r);
        r.op = MPIXFER_OP_WRITE;
        r.src = tst_descs(MPIXFER_MEM_DRAM, &s1, 1);
        r.dst = tst_descs(MPIXFER_MEM_DRAM, &d1, 1);
        r.remote_name = pbn;
        mpixfer_request_t *x = (mpixfer_request_t *)(uintptr_t)0x1;
        CHECK_STATUS(mpixfer_submit_transfer(A, &r, &x), MPIXFER_ERR_NOT_FOUND);
        CHECK(x == (mpixfer_request_t *)(uintptr_t)0x1);
    }
    tst_barrier_progress(ctx);

    /* ---- 10,000 adjacent 4 KiB KV blocks: one window attachment, one call or 10,000 */
    {
        enum { NKV = 10000, KV = 4096 };
        uint8_t *kv = tst_alloc((size_t)NKV * KV);
        mpixfer_mem_desc_t *kd = calloc(NKV, sizeof *kd);
        CHECK(kd != NULL);
        for (int i = 0; i < NKV; i++)
            kd[i] = tst_desc(kv + (size_t)i * KV, KV);
        mpixfer_stats_t s0, s1;
        CHECK_OK(mpixfer_context_stats(ctx, &s0));
        CHECK_OK(reg_list(B, MPIXFER_MEM_DRAM, kd, NKV));
        CHECK_OK(mpixfer_context_stats(ctx, &s1));
        /* At most one more (none where the pool touches a range attached already); a
         * one-process context has no window at all. */
        CHECK_MSG(s1.window_attachments <= s0.window_attachments + 1,
                  "10,000 adjacent registrations took %llu window attachments",
                  (unsigned long long)(s1.window_attachments - s0.window_attachments));
        if (size == 1)
            CHECK(s1.window_attachments == 0);
        mpixfer_mem_descs_t all = tst_descs(MPIXFER_MEM_DRAM, kd, NKV);
        CHECK_OK(mpixfer_deregister_memory(B, &all));
        CHECK_OK(mpixfer_context_stats(ctx, &s1));
        CHECK(s1.window_attachments == s0.window_attachments);
        for (int i = 0; i < NKV; i++)
            CHECK_OK(reg_list(B, MPIXFER_MEM_DRAM, &kd[i], 1));
        CHECK_OK(mpixfer_context_stats(ctx, &s1));
        CHECK(s1.window_attachments <= s0.window_attachments + 1);
        /* Half of them go; the rest keep the pool attached; then the rest go too. */
        for (int i = 0; i < NKV; i += 2)
            CHECK_OK(mpixfer_deregister_memory(B, &(mpixfer_mem_descs_t){MPIXFER_MEM_DRAM,
                                                                         &kd[i], 1}));
        CHECK_OK(mpixfer_context_stats(ctx, &s1));
        /* A merged range stays attached while any of its registrations is left. */
        CHECK(s1.window_attachments <= s0.window_attachments + 1);
        for (int i = 1; i < NKV; i += 2)
            CHECK_OK(mpixfer_deregister_memory(B, &(mpixfer_mem_descs_t){MPIXFER_MEM_DRAM,
                                                                         &kd[i], 1}));
        CHECK_OK(mpixfer_context_stats(ctx, &s1));
        CHECK(s1.window_attachments == s0.window_attachments);
        free(kd);
        free(kv);
    }

    CHECK_OK(mpixfer_agent_destroy(A));
    CHECK_OK(mpixfer_agent_destroy(B));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(buf);
    free(other);
    free(big);
    free(asrc);
    free(big_all);
    free(buf_all);
    return tst_finish("test_register");
}
