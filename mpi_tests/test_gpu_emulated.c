/*
 * VRAM transfer protocol with emulated device memory (MPIXFER_GPU_EMULATE=1, set by CTest):
 * the library treats the buffers registered as VRAM as device 0 and copies with memmove, so
 * the staged path (chunks, answers, pipeline, sync-after-data, the target's own range
 * checks) and the direct path run end to end without a GPU. The real-GPU test is
 * test_gpu_cuda.c. MPIXFER_GPU_PATH (staged|direct) is set per registered test.
 *
 * Every combination DRAM/VRAM x DRAM/VRAM, WRITE and READ, with pair lengths around the
 * (deliberately tiny) chunk size and offsets inside the regions that differ between the
 * two sides; bytes checked after every transfer, the sync message checked to arrive only when
 * the data is already there, and a forged descriptor refused by the target.
 */
#include "common.h"

#define LEN (64 * 1024)
#define HALF (LEN / 2) /* first half: source/destination slots; second half: target slots */
#define CHUNK 1000
#define NPAIRS 12

static const size_t pair_len[NPAIRS] = {1, 999, 1000, 1001, 2999, 3000, 3001, 17, 4096, 1999, 7, 2000};

/* Offsets of pair i on the local and the remote side (remote order permuted). */
static size_t local_off(int i)
{
    size_t off = 64;
    for (int j = 0; j < i; j++)
        off += pair_len[j] + 13;
    return off;
}

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    int rank = tst_rank(), size = tst_size();
    int peer = (rank + 1) % size, prev = (rank + size - 1) % size;
    const char *forced = getenv("MPIXFER_GPU_PATH");
    mpixfer_context_params_t params = MPIXFER_CONTEXT_PARAMS_INIT;
    params.gpu_chunk_size = CHUNK;
    params.gpu_pipeline_depth = 3;
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create_with_params(MPI_COMM_WORLD, &params, &ctx));
    mpixfer_gpu_path_t path = mpixfer_context_gpu_path(ctx);
    CHECK(forced != NULL);
    CHECK(strcmp(mpixfer_gpu_path_name(path), forced) == 0);

    char me[32], pn[32];
    tst_name(me, sizeof me, "gpu", rank);
    tst_name(pn, sizeof pn, "gpu", peer);
    mpixfer_agent_t *a = tst_agent(ctx, me);
    /* [0] DRAM, [1] "VRAM"; each with a 4 KiB canary past the registered LEN bytes. */
    uint8_t *bufs[2] = {tst_alloc(LEN + 4096), tst_alloc(LEN + 4096)};
    mpixfer_mem_desc_t rd[2] = {tst_desc(bufs[0], LEN), tst_desc(bufs[1], LEN)};
    mpixfer_mem_descs_t dram = tst_descs(MPIXFER_MEM_DRAM, &rd[0], 1);
    mpixfer_mem_descs_t vram = tst_descs(MPIXFER_MEM_VRAM, &rd[1], 1);
    CHECK_OK(mpixfer_register_memory(a, &dram));
    CHECK_OK(mpixfer_register_memory(a, &vram));
    /* A VRAM descriptor naming a device that does not exist. */
    mpixfer_mem_desc_t bad_dev = rd[1];
    bad_dev.device_id = 7;
    mpixfer_mem_descs_t bad = tst_descs(MPIXFER_MEM_VRAM, &bad_dev, 1);
    CHECK_STATUS(mpixfer_register_memory(a, &bad), MPIXFER_ERR_INVALID_ARG);

    uint64_t *addr[2];
    for (int t = 0; t < 2; t++) {
        addr[t] = calloc((size_t)size, 8);
        tst_allgather_u64((uintptr_t)bufs[t], addr[t]);
    }
    CHECK_OK(mpixfer_bootstrap(ctx));

    uint32_t iter = 0;
    for (int lt = 0; lt < 2; lt++)
        for (int rt = 0; rt < 2; rt++)
            for (int op = 0; op < 2; op++, iter++) {
                bool write = op == 0;
                uint8_t *lbuf = bufs[lt];
                mpixfer_mem_desc_t s[NPAIRS], d[NPAIRS];
                /* Pair i: local slot i -> remote slot i shifted by 32 bytes, so local and
                 * remote offsets differ and a mixed-up offset shows in the pattern. */
                for (int i = 0; i < NPAIRS; i++) {
                    s[i] = tst_desc(lbuf + local_off(i), pair_len[i]);
                    d[i].addr = (uintptr_t)(addr[rt][peer] + HALF + local_off(i) + 32);
                    d[i].len = pair_len[i];
                    d[i].device_id = 0;
                }
                /* Every buffer starts with this rank's background. */
                tst_pattern_fill(bufs[0], LEN, (uint32_t)rank, 1000 + iter, 0);
                tst_pattern_fill(bufs[1], LEN, (uint32_t)rank, 2000 + iter, 0);
                tst_barrier_progress(ctx);

                mpixfer_transfer_request_t r;
                memset(&r, 0, sizeof r);
                r.op = write ? MPIXFER_OP_WRITE : MPIXFER_OP_READ;
                r.src = tst_descs(lt ? MPIXFER_MEM_VRAM : MPIXFER_MEM_DRAM, s, NPAIRS);
                r.dst = tst_descs(rt ? MPIXFER_MEM_VRAM : MPIXFER_MEM_DRAM, d, NPAIRS);
                r.remote_name = pn;
                char msg[32];
                snprintf(msg, sizeof msg, "combo %u", iter);
                r.sync_message = msg;
                r.sync_message_len = strlen(msg);
                mpixfer_request_t *x = NULL;
                mpixfer_stats_t before, after;
                CHECK_OK(mpixfer_context_stats(ctx, &before));
                CHECK_OK(mpixfer_submit_transfer(a, &r, &x));

                /* Wait for our request and, as a target, for the previous rank's message:
                 * when it arrives, its bytes must already be in place. */
                bool done = false, got = false;
                double deadline = tst_now() + 30.0;
                uint8_t *tbuf = bufs[rt]; /* the previous rank addresses our rt buffer */
                uint32_t tbg = (rt ? 2000u : 1000u) + iter;
                while (!done || !got) {
                    CHECK_MSG(tst_now() < deadline, "combo %u did not finish in 30 s", iter);
                    if (!done) {
                        mpixfer_state_t st = mpixfer_request_wait(x, 0);
                        CHECK(st != MPIXFER_STATE_FAILURE);
                        done = st == MPIXFER_STATE_SUCCESS;
                    }
                    mpixfer_sync_message_t *m = NULL;
                    size_t n = 0;
                    CHECK_OK(mpixfer_get_notified_sync_messages(a, &m, &n));
                    for (size_t k = 0; k < n; k++) {
                        char from[32];
                        tst_name(from, sizeof from, "gpu", prev);
                        CHECK(strcmp(m[k].agent_name, from) == 0);
                        CHECK(m[k].len == strlen(msg) && memcmp(m[k].data, msg, m[k].len) == 0);
                        CHECK(!got);
                        got = true;
                        if (write) {
                            /* Data before message: prev's source pattern is here now. */
                            uint32_t sbg = (lt ? 2000u : 1000u) + iter;
                            for (int i = 0; i < NPAIRS; i++)
                                CHECK_PATTERN(tbuf + HALF + local_off(i) + 32, pair_len[i], prev,
                                              sbg, local_off(i));
                        }
                    }
                    mpixfer_sync_messages_free(m, n);
                }
                CHECK_OK(mpixfer_request_status(x));
                mpixfer_request_free(x);
                CHECK_OK(mpixfer_context_stats(ctx, &after));
                if (path == MPIXFER_GPU_PATH_STAGED && (lt || rt)) {
                    /* Every byte went by chunks of at most CHUNK bytes, none by RMA. */
                    CHECK(after.staged_chunks - before.staged_chunks >= NPAIRS);
                    CHECK(after.rma_ops == before.rma_ops);
                } else {
                    CHECK(after.rma_ops > before.rma_ops);
                    CHECK(after.staged_chunks == before.staged_chunks);
                }

                if (!write) /* READ: our lbuf slots hold the peer's rt-buffer bytes */
                    for (int i = 0; i < NPAIRS; i++)
                        CHECK_PATTERN(lbuf + local_off(i), pair_len[i], peer,
                                      (rt ? 2000u : 1000u) + iter, HALF + local_off(i) + 32);
                tst_barrier_progress(ctx);
                /* Nothing outside the pairs moved: check gaps of the target buffer. */
                if (write) {
                    size_t first = HALF + local_off(0) + 32;
                    size_t end = HALF + local_off(NPAIRS - 1) + 32 + pair_len[NPAIRS - 1];
                    CHECK_PATTERN(tbuf + HALF, first - HALF, rank, tbg, HALF);
                    for (int i = 0; i + 1 < NPAIRS; i++) {
                        size_t gap = HALF + local_off(i) + 32 + pair_len[i];
                        CHECK_PATTERN(tbuf + gap, 13, rank, tbg, gap);
                    }
                    CHECK_PATTERN(tbuf + end, LEN - end, rank, tbg, end);
                } else {
                    /* READ leaves the remote's slots alone. */
                    CHECK_PATTERN(tbuf + HALF, HALF, rank, tbg, HALF);
                }
                tst_barrier_progress(ctx);
            }

    /* A forged descriptor: the peer's VRAM region advertised 4 KiB longer than it is.
     * The staged target checks its own registrations and refuses; nothing is written. */
    if (size > 1 && path == MPIXFER_GPU_PATH_STAGED) {
        tst_gathered_t g = tst_allgather_desc(a);
        size_t blen = 0;
        const uint8_t *pblob = tst_gathered_at(&g, peer, &blen);
        uint8_t *forged = malloc(blen);
        memcpy(forged, pblob, blen);
        size_t name_len = (size_t)forged[20] | (size_t)forged[21] << 8;
        uint32_t nreg = (uint32_t)forged[24] | (uint32_t)forged[25] << 8;
        bool patched = false;
        for (uint32_t i = 0; i < nreg; i++) {
            uint8_t *e = forged + 32 + name_len + 24 * (size_t)i;
            uint64_t ra = 0;
            for (int b = 7; b >= 0; b--)
                ra = ra << 8 | e[b];
            if (ra == addr[1][peer] && e[16] == MPIXFER_MEM_VRAM) {
                uint64_t l = LEN + 4096;
                for (int b = 0; b < 8; b++)
                    e[8 + b] = (uint8_t)(l >> (8 * b));
                patched = true;
            }
        }
        CHECK(patched);
        CHECK_OK(mpixfer_load_remote_agent(a, pn, forged, blen));
        tst_pattern_fill(bufs[0], LEN, (uint32_t)rank, 9000, 0);
        tst_pattern_fill(bufs[1], LEN + 4096, (uint32_t)rank, 9100, 0);
        tst_barrier_progress(ctx);
        mpixfer_mem_desc_t s = tst_desc(bufs[0], 2048);
        mpixfer_mem_desc_t d = {(uintptr_t)(addr[1][peer] + LEN - 1024), 2048, 0};
        mpixfer_transfer_request_t r;
        memset(&r, 0, sizeof r);
        r.op = MPIXFER_OP_WRITE;
        r.src = tst_descs(MPIXFER_MEM_DRAM, &s, 1);
        r.dst = tst_descs(MPIXFER_MEM_VRAM, &d, 1);
        r.remote_name = pn;
        mpixfer_request_t *x = NULL;
        CHECK_OK(mpixfer_submit_transfer(a, &r, &x)); /* passes our checks: the lie is remote */
        mpixfer_state_t st = MPIXFER_STATE_IN_PROGRESS;
        double deadline = tst_now() + 30.0;
        while (st == MPIXFER_STATE_IN_PROGRESS) {
            CHECK_MSG(tst_now() < deadline, "forged transfer not answered in 30 s");
            st = mpixfer_request_wait(x, 0);
        }
        CHECK(st == MPIXFER_STATE_FAILURE);
        CHECK(mpixfer_request_status(x) != MPIXFER_OK);
        mpixfer_request_free(x);
        tst_barrier_progress(ctx);
        /* The chunk inside the real region may land (the peer did offer it); nothing past
         * the registered end does, and nothing before the addressed range changes. */
        CHECK_PATTERN(bufs[1], LEN - 1024, rank, 9100, 0);
        CHECK_PATTERN(bufs[1] + LEN, 4096, rank, 9100, LEN);
        free(forged);
        tst_gathered_free(&g);
    }

    tst_barrier_progress(ctx);
    CHECK_OK(mpixfer_deregister_memory(a, &vram));
    CHECK_OK(mpixfer_deregister_memory(a, &dram));
    CHECK_OK(mpixfer_agent_destroy(a));
    CHECK_OK(mpixfer_context_destroy(ctx));
    for (int t = 0; t < 2; t++) {
        free(addr[t]);
        free(bufs[t]);
    }
    return tst_finish("test_gpu_emulated");
}
