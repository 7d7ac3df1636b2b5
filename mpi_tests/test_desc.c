/* Agent descriptors: get_local_agent_desc, blob layout (magic, version, world id, rank),
 * load_remote_agent errors (name mismatch, NULL, every truncation, magic, version, world id,
 * trailing garbage, own blob, blob of another context), reload replaces, transfers after a
 * blob load, locally (same process) and from the next rank. */
#include "common.h"

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

static void check_bad_loads(mpixfer_agent_t *a, const char *name, const uint8_t *blob, size_t len,
                            uint64_t wid, int owner_rank)
{
    /* Layout. */
    CHECK(len >= 20);
    CHECK_MSG(memcmp(blob, "MPXF", 4) == 0, "magic %02x%02x%02x%02x", blob[0], blob[1], blob[2],
              blob[3]);
    CHECK_MSG(rd16(blob + 4) == 2, "version %u", rd16(blob + 4));
    /* Flag bit 0: the link section (key, listener address) of a blob asked for. */
    CHECK_MSG(rd16(blob + 6) == 1, "flags %u", rd16(blob + 6));
    CHECK_MSG(rd64(blob + 8) == wid, "world id %016" PRIx64 " != %016" PRIx64, rd64(blob + 8), wid);
    CHECK_MSG(rd32(blob + 16) == (uint32_t)owner_rank, "rank %u != %d", rd32(blob + 16),
              owner_rank);

    uint8_t *copy = malloc(len + 16);
    CHECK(copy);
    CHECK_STATUS(mpixfer_load_remote_agent(NULL, name, blob, len), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_load_remote_agent(a, NULL, blob, len), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_load_remote_agent(a, "some_other_name", blob, len),
                 MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_load_remote_agent(a, name, NULL, len), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_load_remote_agent(a, name, blob, 0), MPIXFER_ERR_INVALID_ARG);
    for (size_t p = 1; p < len; p++) {
        memcpy(copy, blob, p); /* exact-size copy so an over-read is visible to ASan */
        uint8_t *t = malloc(p);
        CHECK(t);
        memcpy(t, blob, p);
        mpixfer_status_t st = mpixfer_load_remote_agent(a, name, t, p);
        CHECK_MSG(st == MPIXFER_ERR_BAD_DESC, "prefix of %zu/%zu bytes gave %s", p, len,
                  mpixfer_status_name(st));
        free(t);
    }
    memcpy(copy, blob, len);
    copy[0] ^= 0x20;
    CHECK_STATUS(mpixfer_load_remote_agent(a, name, copy, len), MPIXFER_ERR_BAD_DESC);
    memcpy(copy, blob, len);
    copy[4] = 3; /* version 3 */
    CHECK_STATUS(mpixfer_load_remote_agent(a, name, copy, len), MPIXFER_ERR_BAD_DESC);
    memcpy(copy, blob, len);
    copy[5] = 1; /* version 257 */
    CHECK_STATUS(mpixfer_load_remote_agent(a, name, copy, len), MPIXFER_ERR_BAD_DESC);
    memcpy(copy, blob, len);
    copy[6] = 0; /* no link section, but its bytes are there */
    CHECK_STATUS(mpixfer_load_remote_agent(a, name, copy, len), MPIXFER_ERR_BAD_DESC);
    memcpy(copy, blob, len);
    memset(copy + len, 0xA5, 16); /* trailing garbage */
    CHECK_STATUS(mpixfer_load_remote_agent(a, name, copy, len + 1), MPIXFER_ERR_BAD_DESC);
    CHECK_STATUS(mpixfer_load_remote_agent(a, name, copy, len + 16), MPIXFER_ERR_BAD_DESC);
    free(copy);
}

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    int rank = tst_rank(), size = tst_size(), peer = (rank + 1) % size;
    mpixfer_context_t *ctx = NULL, *other_ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &ctx));
    CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &other_ctx));
    uint64_t wid = mpixfer_context_world_id(ctx);
    char an[32], bn[32], pbn[32], on[32];
    tst_name(an, sizeof an, "desc_A", rank);
    tst_name(bn, sizeof bn, "desc_B", rank);
    tst_name(pbn, sizeof pbn, "desc_B", peer);
    tst_name(on, sizeof on, "desc_O", rank);
    mpixfer_agent_t *A = tst_agent(ctx, an), *B = tst_agent(ctx, bn);
    mpixfer_agent_t *O = tst_agent(other_ctx, on);

    const size_t len = 32 * 1024;
    uint8_t *a_buf = tst_alloc(len), *b1 = tst_alloc(len), *b2 = tst_alloc(len), *b3 = tst_alloc(len);
    CHECK_OK(tst_register(A, a_buf, len));
    CHECK_OK(tst_register(B, b1, len));
    CHECK_OK(tst_register(B, b2, len));
    CHECK_OK(tst_register(O, b1, len));
    tst_pattern_fill(b1, len, (uint32_t)rank, 1, 0);
    tst_pattern_fill(b2, len, (uint32_t)rank, 2, 0);
    tst_pattern_fill(b3, len, (uint32_t)rank, 3, 0);
    uint64_t b_addr[3] = {(uintptr_t)b1, (uintptr_t)b2, (uintptr_t)b3};
    uint64_t *all_b = calloc((size_t)size * 3, sizeof *all_b);
    CHECK_MPI(MPI_Allgather(b_addr, 3, MPI_UINT64_T, all_b, 3, MPI_UINT64_T, MPI_COMM_WORLD));

    /* get_local_agent_desc arguments. */
    void *blob = NULL;
    size_t blen = 0;
    CHECK_STATUS(mpixfer_get_local_agent_desc(NULL, &blob, &blen), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_get_local_agent_desc(B, NULL, &blen), MPIXFER_ERR_INVALID_ARG);
    CHECK_STATUS(mpixfer_get_local_agent_desc(B, &blob, NULL), MPIXFER_ERR_INVALID_ARG);
    CHECK(blob == NULL);

    /* Blobs of B: ours, and every rank's. */
    CHECK_OK(mpixfer_get_local_agent_desc(B, &blob, &blen));
    tst_gathered_t g = tst_allgather_desc(B);
    size_t plen;
    const uint8_t *pblob = tst_gathered_at(&g, peer, &plen);

    /* Bad loads of the same-process B and of the peer's B: nothing gets loaded. */
    check_bad_loads(A, bn, blob, blen, wid, rank);
    check_bad_loads(A, pbn, pblob, plen, wid, peer);
    CHECK(!tst_check_remote(A, bn, b_addr[0], len));
    CHECK(!tst_check_remote(A, pbn, all_b[peer * 3], len));

    /* Loading an agent's own blob into itself. */
    void *own = NULL;
    size_t olen = 0;
    CHECK_OK(mpixfer_get_local_agent_desc(A, &own, &olen));
    CHECK_STATUS(mpixfer_load_remote_agent(A, an, own, olen), MPIXFER_ERR_INVALID_ARG);
    mpixfer_free(own);

    /* A blob of another context (other world id) is reached over a link, asynchronously:
     * usable once the link's handshake is done. */
    void *oblob = NULL;
    size_t oblen = 0;
    CHECK_OK(mpixfer_get_local_agent_desc(O, &oblob, &oblen));
    CHECK_OK(mpixfer_load_remote_agent(A, on, oblob, oblen));
    {
        mpixfer_mem_descs_t none = tst_descs(MPIXFER_MEM_DRAM, NULL, 0);
        double deadline = tst_now() + 20.0;
        while (!mpixfer_check_remote_descs(A, on, &none))
            CHECK_MSG(tst_now() < deadline, "another context's agent not usable in 20 s");
        CHECK_OK(mpixfer_invalidate_remote_agent(A, on));
    }
    mpixfer_free(oblob);

    /* Good loads. */
    CHECK_OK(mpixfer_load_remote_agent(A, bn, blob, blen));
    CHECK_OK(mpixfer_load_remote_agent(A, pbn, pblob, plen));
    CHECK(tst_check_remote(A, bn, b_addr[0], len));
    CHECK(tst_check_remote(A, bn, b_addr[1], len));
    CHECK(!tst_check_remote(A, bn, b_addr[2], len));
    CHECK(tst_check_remote(A, pbn, all_b[peer * 3 + 0], len));
    CHECK(tst_check_remote(A, pbn, all_b[peer * 3 + 1], len));
    /* Loading the same blob again is fine. */
    CHECK_OK(mpixfer_load_remote_agent(A, pbn, pblob, plen));
    uint8_t *rd = tst_alloc(len);
    CHECK_OK(tst_register(A, rd, len));
    tst_xfer1(A, MPIXFER_OP_READ, pbn, rd, all_b[peer * 3 + 1], len);
    CHECK_PATTERN(rd, len, peer, 2, 0);
    tst_xfer1(A, MPIXFER_OP_READ, bn, rd, b_addr[0], len);
    CHECK_PATTERN(rd, len, rank, 1, 0);
    mpixfer_free(blob);
    tst_gathered_free(&g);
    tst_barrier_progress(ctx);

    /* B changes its registrations; reloading replaces the old view. */
    CHECK_OK(tst_deregister(B, b1, len));
    CHECK_OK(tst_register(B, b3, len));
    g = tst_allgather_desc(B);
    pblob = tst_gathered_at(&g, peer, &plen);
    /* The old view stays until the reload. */
    CHECK(tst_check_remote(A, pbn, all_b[peer * 3 + 0], len));
    CHECK(!tst_check_remote(A, pbn, all_b[peer * 3 + 2], len));
    CHECK_OK(mpixfer_load_remote_agent(A, pbn, pblob, plen));
    tst_load_local(A, B);
    CHECK(!tst_check_remote(A, pbn, all_b[peer * 3 + 0], len));
    CHECK(tst_check_remote(A, pbn, all_b[peer * 3 + 1], len));
    CHECK(tst_check_remote(A, pbn, all_b[peer * 3 + 2], len));
    CHECK(!tst_check_remote(A, bn, b_addr[0], len));
    CHECK(tst_check_remote(A, bn, b_addr[2], len));
    tst_xfer1(A, MPIXFER_OP_READ, pbn, rd, all_b[peer * 3 + 2], len);
    CHECK_PATTERN(rd, len, peer, 3, 0);
    tst_gathered_free(&g);
    tst_barrier_progress(ctx);

    CHECK_OK(mpixfer_agent_destroy(O));
    CHECK_OK(mpixfer_context_destroy(other_ctx));
    CHECK_OK(mpixfer_agent_destroy(A));
    CHECK_OK(mpixfer_agent_destroy(B));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(a_buf);
    free(b1);
    free(b2);
    free(b3);
    free(rd);
    free(all_b);
    return tst_finish("test_desc");
}
