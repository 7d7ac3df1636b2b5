/* MPI initialised with plain MPI_Init (Open MPI provides MPI_THREAD_SINGLE): agents asking
 * for a progress thread, multi_thread or a listen thread are refused with MPIXFER_ERR_THREAD;
 * a plain agent still works (a same-process transfer and a message). */
#include "common.h"

static void try_flags(mpixfer_context_t *ctx, int provided, const char *name, bool pt, bool mt,
                      bool lt)
{
    mpixfer_agent_config_t cfg = MPIXFER_AGENT_CONFIG_INIT;
    mpixfer_agent_t *a = (mpixfer_agent_t *)(uintptr_t)0x1;
    cfg.name = name;
    cfg.use_progress_thread = pt;
    cfg.multi_thread = mt;
    cfg.use_listen_thread = lt;
    mpixfer_status_t st = mpixfer_agent_create(ctx, &cfg, &a);
    if (provided < MPI_THREAD_MULTIPLE) {
        CHECK_STATUS(st, MPIXFER_ERR_THREAD);
        CHECK(a == (mpixfer_agent_t *)(uintptr_t)0x1);
    } else {
        CHECK_OK(st);
        CHECK_OK(mpixfer_agent_destroy(a));
    }
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int provided = -1, rank = tst_rank();
    MPI_Query_thread(&provided);
    if (provided >= MPI_THREAD_MULTIPLE)
        TST_LOG("note: plain MPI_Init provided MPI_THREAD_MULTIPLE; ERR_THREAD not checked\n");
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &ctx));
    char n[64];
    snprintf(n, sizeof n, "thr_pt_%d", rank);
    try_flags(ctx, provided, n, true, false, false);
    snprintf(n, sizeof n, "thr_mt_%d", rank);
    try_flags(ctx, provided, n, false, true, false);
    snprintf(n, sizeof n, "thr_lt_%d", rank);
    try_flags(ctx, provided, n, false, false, true);
    snprintf(n, sizeof n, "thr_all_%d", rank);
    try_flags(ctx, provided, n, true, true, true);
    /* A refused name was not taken. */
    snprintf(n, sizeof n, "thr_pt_%d", rank);
    mpixfer_agent_t *a = tst_agent(ctx, n);
    snprintf(n, sizeof n, "thr_peer_%d", rank);
    mpixfer_agent_t *b = tst_agent(ctx, n);

    /* A plain agent works without threads. */
    const size_t len = 64 * 1024;
    uint8_t *src = tst_alloc(len), *dst = tst_alloc(len);
    CHECK_OK(tst_register(a, src, len));
    CHECK_OK(tst_register(b, dst, len));
    tst_load_local(a, b);
    tst_pattern_fill(src, len, (uint32_t)rank, 11, 0);
    const char msg[] = "done";
    mpixfer_request_t *x = tst_submit1(a, MPIXFER_OP_WRITE, mpixfer_agent_name(b), src,
                                       (uintptr_t)dst, len, msg, sizeof msg);
    TST_WAIT_OK(x);
    CHECK_PATTERN(dst, len, rank, 11, 0);
    double deadline = tst_now() + 10.0;
    size_t got = 0;
    while (got == 0) {
        mpixfer_sync_message_t *msgs = NULL;
        size_t cnt = 0;
        CHECK_OK(mpixfer_get_notified_sync_messages(b, &msgs, &cnt));
        if (cnt) {
            CHECK(cnt == 1 && msgs[0].len == sizeof msg && memcmp(msgs[0].data, msg, sizeof msg) == 0);
            mpixfer_sync_messages_free(msgs, cnt);
        }
        got += cnt;
        CHECK_MSG(tst_now() < deadline, "sync message not delivered within 10 s");
    }
    CHECK_OK(mpixfer_agent_destroy(a));
    CHECK_OK(mpixfer_agent_destroy(b));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(src);
    free(dst);
    return tst_finish("test_thread_level");
}
