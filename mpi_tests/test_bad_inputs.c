/* Table-driven bad inputs: each row performs one call with a bad argument and names the
 * status it must return. Every row is printed as "ok" or "FAIL"; any mismatch fails the
 * test. Afterwards the registered buffers are unchanged and a good transfer still works. */
#include "common.h"

#define LEN (16 * 1024)

typedef struct {
    mpixfer_context_t *ctx;
    mpixfer_agent_t *A, *B;
    char an[32], bn[32];
    uint8_t *src, *dst, *unreg;
    void *blob_b; /* B's descriptor */
    size_t blob_b_len;
    uint8_t scratch[4096];
} fx_t;

typedef mpixfer_status_t (*row_fn)(fx_t *);
typedef struct {
    const char *what;
    row_fn fn;
    mpixfer_status_t expected;
} row_t;

static mpixfer_status_t submit(fx_t *f, mpixfer_op_t op, const char *remote, uintptr_t s, size_t sl,
                               uintptr_t d, size_t dl, const void *msg, size_t ml,
                               mpixfer_mem_type_t stype)
{
    mpixfer_mem_desc_t sd = {s, sl, 0}, dd = {d, dl, 0};
    mpixfer_transfer_request_t r;
    memset(&r, 0, sizeof r);
    r.op = op;
    r.src = tst_descs(stype, &sd, 1);
    r.dst = tst_descs(MPIXFER_MEM_DRAM, &dd, 1);
    r.remote_name = remote;
    r.sync_message = msg;
    r.sync_message_len = ml;
    mpixfer_request_t *x = NULL;
    mpixfer_status_t st = mpixfer_submit_transfer(f->A, &r, &x);
    if (st == MPIXFER_OK) /* unexpected success: don't leak or leave it running */
        TST_WAIT_OK(x);
    return st;
}
#define U(p) ((uintptr_t)(p))

static mpixfer_status_t reg(fx_t *f, mpixfer_mem_type_t t, uintptr_t addr, size_t len, size_t count)
{
    mpixfer_mem_desc_t d = {addr, len, 0};
    mpixfer_mem_descs_t l = tst_descs(t, &d, count);
    return mpixfer_register_memory(f->A, &l);
}

/* ---- rows */
static mpixfer_status_t r_ctx_null_comm(fx_t *f)
{
    mpixfer_context_t *c = NULL;
    (void)f;
    return mpixfer_context_create(MPI_COMM_NULL, &c);
}
static mpixfer_status_t r_ctx_null_out(fx_t *f) { (void)f; return mpixfer_context_create(MPI_COMM_WORLD, NULL); }
static mpixfer_status_t r_ctx_destroy_null(fx_t *f) { (void)f; return mpixfer_context_destroy(NULL); }
static mpixfer_status_t r_bootstrap_null(fx_t *f) { (void)f; return mpixfer_bootstrap(NULL); }
static mpixfer_status_t r_progress_null(fx_t *f) { (void)f; return mpixfer_progress(NULL); }
static mpixfer_status_t r_agent_empty_name(fx_t *f)
{
    mpixfer_agent_config_t c = MPIXFER_AGENT_CONFIG_INIT;
    mpixfer_agent_t *a = NULL;
    c.name = "";
    return mpixfer_agent_create(f->ctx, &c, &a);
}
static mpixfer_status_t r_agent_long_name(fx_t *f)
{
    char n[300];
    memset(n, 'x', sizeof n);
    n[299] = '\0';
    mpixfer_agent_config_t c = MPIXFER_AGENT_CONFIG_INIT;
    mpixfer_agent_t *a = NULL;
    c.name = n;
    return mpixfer_agent_create(f->ctx, &c, &a);
}
static mpixfer_status_t r_agent_dup(fx_t *f)
{
    mpixfer_agent_config_t c = MPIXFER_AGENT_CONFIG_INIT;
    mpixfer_agent_t *a = NULL;
    c.name = f->an;
    return mpixfer_agent_create(f->ctx, &c, &a);
}
static mpixfer_status_t r_agent_null_ctx(fx_t *f)
{
    mpixfer_agent_t *a = NULL;
    (void)f;
    return mpixfer_agent_create(NULL, NULL, &a);
}
static mpixfer_status_t r_agent_destroy_null(fx_t *f) { (void)f; return mpixfer_agent_destroy(NULL); }
static mpixfer_status_t r_reg_null_agent(fx_t *f)
{
    mpixfer_mem_desc_t d = tst_desc(f->unreg, 64);
    mpixfer_mem_descs_t l = tst_descs(MPIXFER_MEM_DRAM, &d, 1);
    return mpixfer_register_memory(NULL, &l);
}
static mpixfer_status_t r_reg_null_descs(fx_t *f) { return mpixfer_register_memory(f->A, NULL); }
static mpixfer_status_t r_reg_count0(fx_t *f) { return reg(f, MPIXFER_MEM_DRAM, U(f->unreg), 64, 0); }
static mpixfer_status_t r_reg_len0(fx_t *f) { return reg(f, MPIXFER_MEM_DRAM, U(f->unreg), 0, 1); }
static mpixfer_status_t r_reg_addr0(fx_t *f) { return reg(f, MPIXFER_MEM_DRAM, 0, 64, 1); }
static mpixfer_status_t r_reg_wrap(fx_t *f) { return reg(f, MPIXFER_MEM_DRAM, UINTPTR_MAX - 31, 64, 1); }
static mpixfer_status_t r_reg_vram(fx_t *f) { return reg(f, MPIXFER_MEM_VRAM, U(f->unreg), 64, 1); }
static mpixfer_status_t r_reg_file(fx_t *f) { return reg(f, MPIXFER_MEM_FILE, U(f->unreg), 64, 1); }
static mpixfer_status_t r_reg_type99(fx_t *f) { return reg(f, (mpixfer_mem_type_t)99, U(f->unreg), 64, 1); }
static mpixfer_status_t r_reg_dup(fx_t *f) { return reg(f, MPIXFER_MEM_DRAM, U(f->src), LEN, 1); }
static mpixfer_status_t r_dereg_unknown(fx_t *f) { return tst_deregister(f->A, f->unreg, 64); }
static mpixfer_status_t r_dereg_partial(fx_t *f) { return tst_deregister(f->A, f->src, LEN / 2); }
static mpixfer_status_t r_desc_null_out(fx_t *f)
{
    size_t l;
    return mpixfer_get_local_agent_desc(f->A, NULL, &l);
}
static mpixfer_status_t r_load_null_blob(fx_t *f) { return mpixfer_load_remote_agent(f->A, f->bn, NULL, 10); }
static mpixfer_status_t r_load_len0(fx_t *f) { return mpixfer_load_remote_agent(f->A, f->bn, f->blob_b, 0); }
static mpixfer_status_t r_load_name_mismatch(fx_t *f)
{
    return mpixfer_load_remote_agent(f->A, "bad_not_b", f->blob_b, f->blob_b_len);
}
static mpixfer_status_t r_load_truncated(fx_t *f)
{
    return mpixfer_load_remote_agent(f->A, f->bn, f->blob_b, f->blob_b_len - 1);
}
static mpixfer_status_t r_load_bad_magic(fx_t *f)
{
    memcpy(f->scratch, f->blob_b, f->blob_b_len);
    f->scratch[0] ^= 0xFF;
    return mpixfer_load_remote_agent(f->A, f->bn, f->scratch, f->blob_b_len);
}
static mpixfer_status_t r_load_bad_version(fx_t *f)
{
    memcpy(f->scratch, f->blob_b, f->blob_b_len);
    f->scratch[4] = 9;
    f->scratch[5] = 0;
    return mpixfer_load_remote_agent(f->A, f->bn, f->scratch, f->blob_b_len);
}
static mpixfer_status_t r_load_other_world(fx_t *f)
{
    /* Without its link section (a version-1-like blob): another world it cannot reach. A
     * blob that keeps it would be reached over a link instead (test_link_auth). */
    const uint8_t *b = f->scratch;
    size_t core;
    memcpy(f->scratch, f->blob_b, f->blob_b_len);
    core = 32 + (size_t)(b[20] | b[21] << 8) +
           24 * (size_t)((uint32_t)b[24] | (uint32_t)b[25] << 8 | (uint32_t)b[26] << 16 |
                         (uint32_t)b[27] << 24);
    f->scratch[6] = 0;
    f->scratch[8] ^= 0x5A;
    return mpixfer_load_remote_agent(f->A, f->bn, f->scratch, core);
}
static mpixfer_status_t r_load_trailing(fx_t *f)
{
    memcpy(f->scratch, f->blob_b, f->blob_b_len);
    f->scratch[f->blob_b_len] = 0;
    return mpixfer_load_remote_agent(f->A, f->bn, f->scratch, f->blob_b_len + 1);
}
static mpixfer_status_t r_load_self(fx_t *f)
{
    void *b = NULL;
    size_t l = 0;
    CHECK_OK(mpixfer_get_local_agent_desc(f->A, &b, &l));
    mpixfer_status_t st = mpixfer_load_remote_agent(f->A, f->an, b, l);
    mpixfer_free(b);
    return st;
}
static mpixfer_status_t r_conn_garbage(fx_t *f) { return mpixfer_load_remote_agent_by_connection(f->A, f->bn, "not-a-connection-info"); }
static mpixfer_status_t r_conn_name_mismatch(fx_t *f)
{
    char *info = NULL;
    CHECK_OK(mpixfer_get_local_connection_info(f->B, &info));
    mpixfer_status_t st = mpixfer_load_remote_agent_by_connection(f->A, "bad_not_b", info);
    mpixfer_free(info);
    return st;
}
static mpixfer_status_t r_invalidate_unknown(fx_t *f) { return mpixfer_invalidate_remote_agent(f->A, "bad_nobody"); }
static mpixfer_status_t r_sub_unknown_remote(fx_t *f)
{
    return submit(f, MPIXFER_OP_WRITE, "bad_nobody", U(f->src), 64, U(f->dst), 64, NULL, 0, MPIXFER_MEM_DRAM);
}
static mpixfer_status_t r_sub_null_remote(fx_t *f)
{
    return submit(f, MPIXFER_OP_WRITE, NULL, U(f->src), 64, U(f->dst), 64, NULL, 0, MPIXFER_MEM_DRAM);
}
static mpixfer_status_t r_sub_len_mismatch(fx_t *f)
{
    return submit(f, MPIXFER_OP_WRITE, f->bn, U(f->src), 64, U(f->dst), 65, NULL, 0, MPIXFER_MEM_DRAM);
}
static mpixfer_status_t r_sub_len0(fx_t *f)
{
    return submit(f, MPIXFER_OP_WRITE, f->bn, U(f->src), 0, U(f->dst), 0, NULL, 0, MPIXFER_MEM_DRAM);
}
static mpixfer_status_t r_sub_op7(fx_t *f)
{
    return submit(f, (mpixfer_op_t)7, f->bn, U(f->src), 64, U(f->dst), 64, NULL, 0, MPIXFER_MEM_DRAM);
}
static mpixfer_status_t r_sub_src_unreg(fx_t *f)
{
    return submit(f, MPIXFER_OP_WRITE, f->bn, U(f->unreg), 64, U(f->dst), 64, NULL, 0, MPIXFER_MEM_DRAM);
}
static mpixfer_status_t r_sub_src_past_end(fx_t *f)
{
    return submit(f, MPIXFER_OP_READ, f->bn, U(f->src + LEN - 32), 64, U(f->dst), 64, NULL, 0, MPIXFER_MEM_DRAM);
}
static mpixfer_status_t r_sub_dst_unknown(fx_t *f)
{
    return submit(f, MPIXFER_OP_WRITE, f->bn, U(f->src), 64, U(f->unreg), 64, NULL, 0, MPIXFER_MEM_DRAM);
}
static mpixfer_status_t r_sub_dst_past_end(fx_t *f)
{
    return submit(f, MPIXFER_OP_WRITE, f->bn, U(f->src), 64, U(f->dst + LEN - 1), 64, NULL, 0, MPIXFER_MEM_DRAM);
}
static mpixfer_status_t r_sub_vram(fx_t *f)
{
    return submit(f, MPIXFER_OP_WRITE, f->bn, U(f->src), 64, U(f->dst), 64, NULL, 0, MPIXFER_MEM_VRAM);
}
static mpixfer_status_t r_sub_file(fx_t *f)
{
    return submit(f, MPIXFER_OP_WRITE, f->bn, U(f->src), 64, U(f->dst), 64, NULL, 0, MPIXFER_MEM_FILE);
}
static mpixfer_status_t r_sub_msg_too_large(fx_t *f)
{
    static uint8_t big[(1 << 20) + 1];
    return submit(f, MPIXFER_OP_WRITE, f->bn, U(f->src), 64, U(f->dst), 64, big, sizeof big, MPIXFER_MEM_DRAM);
}
static mpixfer_status_t r_sub_null_agent(fx_t *f)
{
    mpixfer_request_t *x = NULL;
    mpixfer_transfer_request_t r;
    memset(&r, 0, sizeof r);
    r.remote_name = f->bn;
    return mpixfer_submit_transfer(NULL, &r, &x);
}
static mpixfer_status_t r_sub_null_req(fx_t *f)
{
    mpixfer_request_t *x = NULL;
    return mpixfer_submit_transfer(f->A, NULL, &x);
}
static mpixfer_status_t r_notify_unknown(fx_t *f) { return mpixfer_notify_sync_message(f->A, "bad_nobody", "x", 1); }
static mpixfer_status_t r_notify_null_msg(fx_t *f) { return mpixfer_notify_sync_message(f->A, f->bn, NULL, 3); }
static mpixfer_status_t r_notify_too_large(fx_t *f)
{
    static uint8_t big[(1 << 20) + 1];
    return mpixfer_notify_sync_message(f->A, f->bn, big, sizeof big);
}
static mpixfer_status_t r_inbox_null(fx_t *f)
{
    size_t n;
    return mpixfer_get_notified_sync_messages(f->A, NULL, &n);
}

static mpixfer_status_t r_path_null_ctx(fx_t *f)
{
    mpixfer_data_path_t p;
    (void)f;
    return mpixfer_context_data_path(NULL, 0, &p);
}
static mpixfer_status_t r_path_null_out(fx_t *f) { return mpixfer_context_data_path(f->ctx, 0, NULL); }
static mpixfer_status_t r_path_rank_neg(fx_t *f)
{
    mpixfer_data_path_t p;
    return mpixfer_context_data_path(f->ctx, -1, &p);
}
static mpixfer_status_t r_path_rank_size(fx_t *f)
{
    mpixfer_data_path_t p;
    return mpixfer_context_data_path(f->ctx, tst_size(), &p);
}

static const row_t rows[] = {
    {"context_data_path(NULL ctx)", r_path_null_ctx, MPIXFER_ERR_INVALID_ARG},
    {"context_data_path(path_p NULL)", r_path_null_out, MPIXFER_ERR_INVALID_ARG},
    {"context_data_path rank -1", r_path_rank_neg, MPIXFER_ERR_INVALID_ARG},
    {"context_data_path rank == size", r_path_rank_size, MPIXFER_ERR_INVALID_ARG},
    {"context_create(MPI_COMM_NULL)", r_ctx_null_comm, MPIXFER_ERR_INVALID_ARG},
    {"context_create(ctx_p NULL)", r_ctx_null_out, MPIXFER_ERR_INVALID_ARG},
    {"context_destroy(NULL)", r_ctx_destroy_null, MPIXFER_ERR_INVALID_ARG},
    {"bootstrap(NULL)", r_bootstrap_null, MPIXFER_ERR_INVALID_ARG},
    {"progress(NULL)", r_progress_null, MPIXFER_ERR_INVALID_ARG},
    {"agent_create name \"\"", r_agent_empty_name, MPIXFER_ERR_INVALID_ARG},
    {"agent_create name of 299 bytes", r_agent_long_name, MPIXFER_ERR_INVALID_ARG},
    {"agent_create duplicate name", r_agent_dup, MPIXFER_ERR_EXISTS},
    {"agent_create(NULL ctx)", r_agent_null_ctx, MPIXFER_ERR_INVALID_ARG},
    {"agent_destroy(NULL)", r_agent_destroy_null, MPIXFER_ERR_INVALID_ARG},
    {"register(NULL agent)", r_reg_null_agent, MPIXFER_ERR_INVALID_ARG},
    {"register(NULL descs)", r_reg_null_descs, MPIXFER_ERR_INVALID_ARG},
    {"register count 0", r_reg_count0, MPIXFER_ERR_INVALID_ARG},
    {"register len 0", r_reg_len0, MPIXFER_ERR_INVALID_ARG},
    {"register addr 0", r_reg_addr0, MPIXFER_ERR_INVALID_ARG},
    {"register addr+len wraps", r_reg_wrap, MPIXFER_ERR_INVALID_ARG},
    {"register VRAM", r_reg_vram, MPIXFER_ERR_UNSUPPORTED},
    {"register FILE", r_reg_file, MPIXFER_ERR_UNSUPPORTED},
    {"register type 99", r_reg_type99, MPIXFER_ERR_INVALID_ARG},
    {"register same range twice", r_reg_dup, MPIXFER_ERR_EXISTS},
    {"deregister unregistered", r_dereg_unknown, MPIXFER_ERR_NOT_FOUND},
    {"deregister half of a registration", r_dereg_partial, MPIXFER_ERR_NOT_FOUND},
    {"get_local_agent_desc(blob_p NULL)", r_desc_null_out, MPIXFER_ERR_INVALID_ARG},
    {"load_remote_agent NULL blob", r_load_null_blob, MPIXFER_ERR_INVALID_ARG},
    {"load_remote_agent len 0", r_load_len0, MPIXFER_ERR_INVALID_ARG},
    {"load_remote_agent name mismatch", r_load_name_mismatch, MPIXFER_ERR_INVALID_ARG},
    {"load_remote_agent truncated by 1", r_load_truncated, MPIXFER_ERR_BAD_DESC},
    {"load_remote_agent bad magic", r_load_bad_magic, MPIXFER_ERR_BAD_DESC},
    {"load_remote_agent version 9", r_load_bad_version, MPIXFER_ERR_BAD_DESC},
    {"load_remote_agent other world id", r_load_other_world, MPIXFER_ERR_UNREACHABLE},
    {"load_remote_agent trailing byte", r_load_trailing, MPIXFER_ERR_BAD_DESC},
    {"load_remote_agent own blob", r_load_self, MPIXFER_ERR_INVALID_ARG},
    {"load_by_connection garbage", r_conn_garbage, MPIXFER_ERR_BAD_DESC},
    {"load_by_connection name mismatch", r_conn_name_mismatch, MPIXFER_ERR_INVALID_ARG},
    {"invalidate unknown", r_invalidate_unknown, MPIXFER_ERR_NOT_FOUND},
    {"submit NULL agent", r_sub_null_agent, MPIXFER_ERR_INVALID_ARG},
    {"submit NULL request", r_sub_null_req, MPIXFER_ERR_INVALID_ARG},
    {"submit unknown remote", r_sub_unknown_remote, MPIXFER_ERR_NOT_FOUND},
    {"submit NULL remote name", r_sub_null_remote, MPIXFER_ERR_INVALID_ARG},
    {"submit pair length mismatch", r_sub_len_mismatch, MPIXFER_ERR_INVALID_ARG},
    {"submit zero-length pair", r_sub_len0, MPIXFER_ERR_INVALID_ARG},
    {"submit op 7", r_sub_op7, MPIXFER_ERR_INVALID_ARG},
    {"submit src unregistered", r_sub_src_unreg, MPIXFER_ERR_NOT_FOUND},
    {"submit src past its region", r_sub_src_past_end, MPIXFER_ERR_OUT_OF_RANGE},
    {"submit dst not advertised", r_sub_dst_unknown, MPIXFER_ERR_NOT_FOUND},
    {"submit dst past its region", r_sub_dst_past_end, MPIXFER_ERR_OUT_OF_RANGE},
    {"submit src VRAM", r_sub_vram, MPIXFER_ERR_UNSUPPORTED},
    {"submit src FILE", r_sub_file, MPIXFER_ERR_UNSUPPORTED},
    {"submit sync message 1 MiB + 1", r_sub_msg_too_large, MPIXFER_ERR_TOO_LARGE},
    {"notify unknown remote", r_notify_unknown, MPIXFER_ERR_NOT_FOUND},
    {"notify NULL message, len 3", r_notify_null_msg, MPIXFER_ERR_INVALID_ARG},
    {"notify 1 MiB + 1", r_notify_too_large, MPIXFER_ERR_TOO_LARGE},
    {"get_notified_sync_messages(msgs_p NULL)", r_inbox_null, MPIXFER_ERR_INVALID_ARG},
};

int main(int argc, char **argv)
{
    tst_init_multiple(&argc, &argv);
    int rank = tst_rank(), size = tst_size(), peer = (rank + 1) % size, prev = (rank + size - 1) % size;
    static fx_t f;
    CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &f.ctx));
    tst_name(f.an, sizeof f.an, "bad_A", rank);
    tst_name(f.bn, sizeof f.bn, "bad_B", rank);
    f.A = tst_agent(f.ctx, f.an);
    f.B = tst_agent(f.ctx, f.bn);
    f.src = tst_alloc(LEN);
    f.dst = tst_alloc(LEN);
    f.unreg = tst_alloc(LEN);
    CHECK_OK(tst_register(f.A, f.src, LEN));
    CHECK_OK(tst_register(f.B, f.dst, LEN));
    tst_pattern_fill(f.src, LEN, (uint32_t)rank, 1, 0);
    tst_pattern_fill(f.dst, LEN, (uint32_t)rank, 2, 0);
    tst_pattern_fill(f.unreg, LEN, (uint32_t)rank, 3, 0);
    CHECK_OK(mpixfer_get_local_agent_desc(f.B, &f.blob_b, &f.blob_b_len));
    CHECK(f.blob_b_len + 1 <= sizeof f.scratch);
    tst_load_local(f.A, f.B);

    size_t nrows = sizeof rows / sizeof rows[0], bad = 0;
    CHECK(nrows >= 25);
    for (size_t i = 0; i < nrows; i++) {
        if (getenv("MPIXFER_MAX_SYNC_MESSAGE") && rows[i].expected == MPIXFER_ERR_TOO_LARGE)
            continue;
        if (strstr(rows[i].what, "VRAM") && !tst_vram_unsupported(f.ctx)) {
            if (rank == 0)
                printf("skip %2zu %s (this context has a GPU path)\n", i, rows[i].what);
            continue;
        }
        mpixfer_status_t st = rows[i].fn(&f);
        if (st == rows[i].expected) {
            if (rank == 0)
                printf("ok   %2zu %s -> %s\n", i, rows[i].what, mpixfer_status_name(st));
        } else {
            bad++;
            printf("FAIL %2zu %s -> %s, expected %s [rank %d]\n", i, rows[i].what,
                   mpixfer_status_name(st), mpixfer_status_name(rows[i].expected), rank);
        }
        CHECK_PATTERN(f.src, LEN, rank, 1, 0);
        CHECK_PATTERN(f.dst, LEN, rank, 2, 0);
        CHECK_PATTERN(f.unreg, LEN, rank, 3, 0);
    }
    fflush(stdout);
    unsigned long lbad = (unsigned long)bad, gbad = 0;
    CHECK_MPI(MPI_Allreduce(&lbad, &gbad, 1, MPI_UNSIGNED_LONG, MPI_SUM, MPI_COMM_WORLD));
    CHECK_MSG(gbad == 0, "%lu table rows failed (all ranks)", gbad);

    /* A good transfer still works: local, then next rank after a bootstrap. */
    uint64_t *dst_all = calloc((size_t)size, 8);
    tst_allgather_u64((uintptr_t)f.dst, dst_all);
    tst_xfer1(f.A, MPIXFER_OP_READ, f.bn, f.src, U(f.dst), LEN);
    CHECK_PATTERN(f.src, LEN, rank, 2, 0);
    tst_pattern_fill(f.src, LEN, (uint32_t)rank, 4, 0);
    CHECK_OK(mpixfer_bootstrap(f.ctx));
    char pbn[32];
    tst_name(pbn, sizeof pbn, "bad_B", peer);
    tst_xfer1(f.A, MPIXFER_OP_WRITE, pbn, f.src, dst_all[peer], LEN);
    tst_barrier_progress(f.ctx);
    CHECK_PATTERN(f.dst, LEN, prev, 4, 0);
    CHECK_PATTERN(f.unreg, LEN, rank, 3, 0);

    mpixfer_free(f.blob_b);
    CHECK_OK(mpixfer_agent_destroy(f.A));
    CHECK_OK(mpixfer_agent_destroy(f.B));
    CHECK_OK(mpixfer_context_destroy(f.ctx));
    free(f.src);
    free(f.dst);
    free(f.unreg);
    free(dst_all);
    return tst_finish("test_bad_inputs");
}
