/* Progress: one pass over control messages, sends and requests; the optional thread.
 *
 * A thread that spins on MPI_Improbe doubles put+flush latency on a 2-core machine and
 * costs ~10x with oversubscribed ranks, so an idle thread backs off: yield a while, then
 * sleep with a growing interval capped at 1 ms. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

int mpixfer__progress_locked(mpixfer_context_t *ctx)
{
    int work = mpixfer__ctrl_poll(ctx);
    ctx->ctrl_skipped = 0;
    if (ctx->sends != NULL)
        mpixfer__sends_test(ctx);
    if (ctx->pending_head != NULL)
        work += mpixfer__requests_progress(ctx, NULL);
    return work;
}

mpixfer_status_t mpixfer_progress(mpixfer_context_t *ctx)
{
    if (ctx == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "ctx is NULL");
    mpixfer__lock(ctx);
    mpixfer__progress_locked(ctx);
    mpixfer__unlock(ctx);
    return MPIXFER_OK;
}

typedef struct {
    mpixfer_context_t *ctx;
    unsigned gen;
} thread_arg_t;

static void *progress_main(void *arg)
{
    thread_arg_t a = *(thread_arg_t *)arg;
    mpixfer_context_t *ctx = a.ctx;
    unsigned idle = 0;

    free(arg);
    /* A generation, not a flag: a thread stopped and a new one started right after must
     * not let the old one run on. */
    while (atomic_load(&ctx->thread_gen) == a.gen) {
        int work;

        mpixfer__lock(ctx);
        work = mpixfer__progress_locked(ctx);
        mpixfer__unlock(ctx);
        if (work > 0) {
            idle = 0;
            continue;
        }
        if (++idle < 64) {
            sched_yield();
        } else {
            unsigned shift = idle - 64 < 7 ? idle - 64 : 7;
            struct timespec ts = {0, (long)(8000u << shift)}; /* 8 us .. 1 ms */
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* Lock held. */
mpixfer_status_t mpixfer__thread_acquire(mpixfer_context_t *ctx)
{
    thread_arg_t *arg;

    if (ctx->thread_users++ > 0 && ctx->thread_running)
        return MPIXFER_OK;
    arg = malloc(sizeof(*arg));
    if (arg != NULL) {
        arg->ctx = ctx;
        arg->gen = atomic_load(&ctx->thread_gen);
    }
    if (arg == NULL || pthread_create(&ctx->thread, NULL, progress_main, arg) != 0) {
        free(arg);
        ctx->thread_users--;
        LOG_ERROR("could not start the progress thread");
        return MPIXFER_ERR_NO_MEMORY;
    }
    ctx->thread_running = true;
    LOG_DEBUG("progress thread started");
    return MPIXFER_OK;
}

/* Without the lock: the thread takes it in its loop, so it is joined outside it. */
static void stop_locked_then_join(mpixfer_context_t *ctx)
{
    pthread_t t = ctx->thread;

    ctx->thread_running = false;
    atomic_fetch_add(&ctx->thread_gen, 1);
    mpixfer__unlock(ctx);
    pthread_join(t, NULL);
    LOG_DEBUG("progress thread stopped");
}

void mpixfer__thread_release(mpixfer_context_t *ctx)
{
    mpixfer__lock(ctx);
    if (ctx->thread_users > 0 && --ctx->thread_users == 0 && ctx->thread_running) {
        stop_locked_then_join(ctx);
        return;
    }
    mpixfer__unlock(ctx);
}

void mpixfer__thread_stop(mpixfer_context_t *ctx)
{
    mpixfer__lock(ctx);
    if (ctx->thread_running) {
        ctx->thread_users = 0;
        stop_locked_then_join(ctx);
        return;
    }
    mpixfer__unlock(ctx);
}
