/* multi_thread: 4 pthreads share one agent (multi_thread = true) and concurrently WRITE their
 * own slice of the target's buffer, READ it back and verify, while also checking remote
 * descriptors and polling requests; at the end the target verifies every slice. Same-process
 * and next-rank targets. Needs MPI_THREAD_MULTIPLE (exit 77 otherwise). */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>

#define NT 4
#define SL (256 * 1024)
#define ITERS 10

typedef struct {
    int t;
    mpixfer_agent_t *a;
    const char *tname;
    uint64_t tdst;
    uint8_t *src, *back;
    uint32_t base;
} job_t;

static int g_rank;
static atomic_int g_done;

static void *worker(void *arg)
{
    job_t *j = arg;
    for (uint32_t it = 0; it < ITERS; it++) {
        uint32_t iter = j->base + it * NT + (uint32_t)j->t;
        uint64_t d = j->tdst + (uint64_t)j->t * SL;
        tst_pattern_fill(j->src, SL, (uint32_t)g_rank, iter, (size_t)j->t * SL);
        CHECK(tst_check_remote(j->a, j->tname, d, SL));
        mpixfer_request_t *x = tst_submit1(j->a, MPIXFER_OP_WRITE, j->tname, j->src, d, SL, NULL, 0);
        if (it % 2) { /* poll instead of a blocking wait */
            double deadline = tst_now() + 20.0;
            while (!mpixfer_request_is_completed(x))
                CHECK_MSG(tst_now() < deadline, "thread %d: WRITE not complete after 20 s", j->t);
        }
        TST_WAIT_OK(x);
        memset(j->back, 0, SL);
        x = tst_submit1(j->a, MPIXFER_OP_READ, j->tname, j->back, d, SL, NULL, 0);
        TST_WAIT_OK(x);
        CHECK_PATTERN(j->back, SL, g_rank, iter, (size_t)j->t * SL);
    }
    atomic_fetch_add(&g_done, 1);
    return NULL;
}

int main(int argc, char **argv)
{
    int provided = tst_init_multiple(&argc, &argv);
    tst_require_multiple(provided);
    int rank = tst_rank(), size = tst_size();
    int peer = (rank + 1) % size, prev = (rank + size - 1) % size;
    g_rank = rank;
    mpixfer_context_t *ctx = NULL;
    CHECK_OK(mpixfer_context_create(MPI_COMM_WORLD, &ctx));
    char an[32], bn[32], pbn[32];
    tst_name(an, sizeof an, "mt_A", rank);
    tst_name(bn, sizeof bn, "mt_B", rank);
    tst_name(pbn, sizeof pbn, "mt_B", peer);
    mpixfer_agent_t *A = tst_agent_ex(ctx, an, false, true, false);
    mpixfer_agent_t *B = tst_agent_ex(ctx, bn, false, true, false);
    uint8_t *src = tst_alloc(NT * SL), *back = tst_alloc(NT * SL), *dst = tst_alloc(NT * SL);
    CHECK_OK(tst_register(A, src, NT * SL));
    CHECK_OK(tst_register(A, back, NT * SL));
    CHECK_OK(tst_register(B, dst, NT * SL));
    uint64_t *dst_all = calloc((size_t)size, 8);
    tst_allgather_u64((uintptr_t)dst, dst_all);
    CHECK_OK(mpixfer_bootstrap(ctx));

    for (int pass = 0; pass < (size > 1 ? 2 : 1); pass++) {
        job_t jobs[NT];
        pthread_t th[NT];
        atomic_store(&g_done, 0);
        uint32_t base = (uint32_t)pass * 1000;
        for (int t = 0; t < NT; t++) {
            jobs[t].t = t;
            jobs[t].a = A;
            jobs[t].tname = pass == 0 ? bn : pbn;
            jobs[t].tdst = dst_all[pass == 0 ? rank : peer];
            jobs[t].src = src + (size_t)t * SL;
            jobs[t].back = back + (size_t)t * SL;
            jobs[t].base = base;
            CHECK(pthread_create(&th[t], NULL, worker, &jobs[t]) == 0);
        }
        /* Keep the main thread useful (and a concurrent caller): drive progress. */
        double deadline = tst_now() + 60.0;
        while (atomic_load(&g_done) < NT) {
            CHECK_OK(mpixfer_progress(ctx));
            mpixfer_sync_message_t *m = NULL;
            size_t n = 0;
            CHECK_OK(mpixfer_get_notified_sync_messages(B, &m, &n));
            CHECK(n == 0);
            CHECK_MSG(tst_now() < deadline, "threads not done after 60 s");
            usleep(200);
        }
        for (int t = 0; t < NT; t++)
            CHECK(pthread_join(th[t], NULL) == 0);
        tst_barrier_progress(ctx);
        int wrank = pass == 0 ? rank : prev;
        for (int t = 0; t < NT; t++)
            CHECK_PATTERN(dst + (size_t)t * SL, SL, wrank, base + (ITERS - 1) * NT + (uint32_t)t,
                          (size_t)t * SL);
        tst_barrier_progress(ctx);
    }

    CHECK_OK(mpixfer_agent_destroy(A));
    CHECK_OK(mpixfer_agent_destroy(B));
    CHECK_OK(mpixfer_context_destroy(ctx));
    free(src);
    free(back);
    free(dst);
    free(dst_all);
    return tst_finish("test_multi_thread");
}
