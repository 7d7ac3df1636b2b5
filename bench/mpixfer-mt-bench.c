/*
 * mpixfer-mt-bench: requests from several threads of one process at once.
 *
 *   mpiexec -n 2 --bind-to none mpixfer-mt-bench [--threads 1,2,4] [--block 1M] [--batch 1]
 *                                 [--seconds 0.5] [--mem foreign|arena|both]
 *
 * Rank 0 runs T threads; each WRITEs requests of <batch> blocks of <block> bytes from its own
 * buffer into its own region of rank 1, submit + wait, for the given time; the run reports
 * the aggregate GB/s per T. Rank 1 only drives progress. After each run every thread WRITEs
 * a pattern of its own and READs it back into a second buffer: the bytes are checked.
 *
 * MPIXFER_ISSUE=locked|auto|unlocked picks which transfers the library issues without its
 * context lock (default auto: copies into node peers' arenas; unlocked: MPI RMA too), so
 * the same binary measures each: run it once per value and compare.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <mpi.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpixfer.h"

#define MAX_THREADS 16

typedef struct {
    int nthreads[MAX_THREADS];
    int nt;
    size_t block, batch;
    double seconds;
    int mem; /* 1 foreign, 2 arena, 3 both */
} opts_t;

typedef struct {
    mpixfer_agent_t *agent;
    unsigned char *local, *back; /* block*batch bytes each */
    uint64_t remote;             /* this thread's region at rank 1 */
    const opts_t *o;
    double seconds;
    uint64_t bytes;
    int failed;
    int id;
} worker_t;

static void die(const char *what, mpixfer_status_t st)
{
    fprintf(stderr, "mpixfer-mt-bench: %s: %s\n", what, mpixfer_strerror(st));
    MPI_Abort(MPI_COMM_WORLD, 1);
}
#define XF(call, what)                                                                             \
    do {                                                                                           \
        mpixfer_status_t st_ = (call);                                                             \
        if (st_ != MPIXFER_OK)                                                                     \
            die(what, st_);                                                                        \
    } while (0)

static int transfer(worker_t *w, mpixfer_op_t op, unsigned char *buf)
{
    size_t n = w->o->batch, bs = w->o->block;
    mpixfer_mem_desc_t s[64], d[64];
    for (size_t i = 0; i < n; i++) {
        /* Reverse order at the target: no two blocks merge into one op. */
        s[i] = (mpixfer_mem_desc_t){(uintptr_t)(buf + i * bs), bs, 0};
        d[i] = (mpixfer_mem_desc_t){(uintptr_t)(w->remote + (n - 1 - i) * bs), bs, 0};
    }
    mpixfer_transfer_request_t r = {
        .op = op,
        .src = {MPIXFER_MEM_DRAM, s, n},
        .dst = {MPIXFER_MEM_DRAM, d, n},
        .remote_name = "mt_target",
    };
    mpixfer_request_t *x = NULL;
    XF(mpixfer_submit_transfer(w->agent, &r, &x), "submit");
    mpixfer_state_t state = mpixfer_request_wait(x, -1);
    int ok = state == MPIXFER_STATE_SUCCESS;
    mpixfer_request_free(x);
    return ok;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    size_t len = w->o->block * w->o->batch;
    double t0 = MPI_Wtime(), end = t0 + w->o->seconds;

    while (MPI_Wtime() < end) {
        if (!transfer(w, MPIXFER_OP_WRITE, w->local)) {
            w->failed = 1;
            return NULL;
        }
        w->bytes += len;
    }
    w->seconds = MPI_Wtime() - t0;
    /* The check: a pattern of this thread out, and back into a second buffer. */
    for (size_t i = 0; i < len; i++)
        w->local[i] = (unsigned char)(i * 31 + (size_t)w->id * 7 + 1);
    memset(w->back, 0, len);
    if (!transfer(w, MPIXFER_OP_WRITE, w->local) || !transfer(w, MPIXFER_OP_READ, w->back) ||
        memcmp(w->local, w->back, len) != 0)
        w->failed = 1;
    return NULL;
}

static size_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*end == 'K' || *end == 'k')
        v *= 1024;
    else if (*end == 'M' || *end == 'm')
        v *= 1024 * 1024;
    return (size_t)v;
}

int main(int argc, char **argv)
{
    opts_t o = {
        .nthreads = {1, 2, 4}, .nt = 3, .block = 1 << 20, .batch = 1, .seconds = 0.5, .mem = 3};
    int provided, rank, size;
    static const struct option lo[] = {
        {"threads", required_argument, NULL, 't'}, {"block", required_argument, NULL, 'b'},
        {"batch", required_argument, NULL, 'n'},   {"seconds", required_argument, NULL, 's'},
        {"mem", required_argument, NULL, 'm'},     {NULL, 0, NULL, 0}};
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    for (int c; (c = getopt_long(argc, argv, "", lo, NULL)) != -1;) {
        switch (c) {
        case 't': {
            o.nt = 0;
            for (char *t = strtok(optarg, ","); t && o.nt < MAX_THREADS; t = strtok(NULL, ","))
                o.nthreads[o.nt++] = atoi(t);
            break;
        }
        case 'b':
            o.block = parse_size(optarg);
            break;
        case 'n':
            o.batch = (size_t)atoi(optarg);
            break;
        case 's':
            o.seconds = atof(optarg);
            break;
        case 'm':
            o.mem = strcmp(optarg, "foreign") == 0 ? 1 : strcmp(optarg, "arena") == 0 ? 2 : 3;
            break;
        default:
            if (rank == 0)
                fprintf(stderr, "usage: mpiexec -n 2 mpixfer-mt-bench [--threads 1,2,4] "
                                "[--block 1M] [--batch 1..64] [--seconds S] "
                                "[--mem foreign|arena|both]\n");
            MPI_Finalize();
            return 2;
        }
    }
    if (size != 2 || provided != MPI_THREAD_MULTIPLE || o.batch < 1 || o.batch > 64 ||
        o.block == 0) {
        if (rank == 0)
            fprintf(stderr, "mpixfer-mt-bench: needs 2 ranks, MPI_THREAD_MULTIPLE, batch 1..64, "
                            "a block size\n");
        MPI_Finalize();
        return 2;
    }
    int maxt = 1;
    for (int i = 0; i < o.nt; i++) {
        if (o.nthreads[i] < 1 || o.nthreads[i] > MAX_THREADS) {
            if (rank == 0)
                fprintf(stderr, "mpixfer-mt-bench: 1..%d threads\n", MAX_THREADS);
            MPI_Finalize();
            return 2;
        }
        maxt = o.nthreads[i] > maxt ? o.nthreads[i] : maxt;
    }
    size_t len = o.block * o.batch;
    mpixfer_context_params_t params = MPIXFER_CONTEXT_PARAMS_INIT;
    params.arena_size = 2 * (size_t)maxt * len + (1 << 20);
    mpixfer_context_t *ctx;
    XF(mpixfer_context_create_with_params(MPI_COMM_WORLD, &params, &ctx), "context");
    mpixfer_agent_config_t cfg = MPIXFER_AGENT_CONFIG_INIT;
    cfg.name = rank == 0 ? "mt_initiator" : "mt_target";
    cfg.multi_thread = true;
    mpixfer_agent_t *agent;
    XF(mpixfer_agent_create(ctx, &cfg, &agent), "agent");
    cpu_set_t cpus;
    if (rank == 0 && sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) < maxt)
        printf("# note: rank 0 may run on %d CPU(s) only; threads cannot spread (Open MPI binds "
               "each rank to a core: mpiexec --bind-to none)\n",
               CPU_COUNT(&cpus));
    if (rank == 0)
        printf(
            "# mpixfer-mt-bench: %zu x %zu B per request, WRITE, %.2f s per point, MPIXFER_ISSUE "
            "mode %s\n# mem      threads    GB/s  requests\n",
            o.batch, o.block, o.seconds,
            getenv("MPIXFER_ISSUE") ? getenv("MPIXFER_ISSUE") : "auto");

    for (int k = 1; k <= 2; k++) {
        if (!(o.mem & k))
            continue;
        bool arena = k == 2;
        /* Rank 0: local + back per thread; rank 1: one region per thread. */
        size_t need = rank == 0 ? 2 * (size_t)maxt * len : (size_t)maxt * len;
        unsigned char *pool;
        if (arena)
            XF(mpixfer_mem_alloc(ctx, need, (void **)&pool), "mem_alloc");
        else if (posix_memalign((void **)&pool, 4096, need) != 0)
            die("posix_memalign", MPIXFER_ERR_NO_MEMORY);
        memset(pool, rank, need);
        mpixfer_mem_desc_t rd = {(uintptr_t)pool, need, 0};
        mpixfer_mem_descs_t rl = {MPIXFER_MEM_DRAM, &rd, 1};
        XF(mpixfer_register_memory(agent, &rl), "register");
        uint64_t base = (uintptr_t)pool, peer_base = 0;
        MPI_Sendrecv(&base, 1, MPI_UINT64_T, 1 - rank, 0, &peer_base, 1, MPI_UINT64_T, 1 - rank, 0,
                     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        XF(mpixfer_bootstrap(ctx), "bootstrap");

        for (int i = 0; i < o.nt; i++) {
            int t = o.nthreads[i];
            MPI_Barrier(MPI_COMM_WORLD);
            if (rank == 0) {
                worker_t w[MAX_THREADS];
                pthread_t th[MAX_THREADS];
                for (int j = 0; j < t; j++) {
                    w[j] = (worker_t){.agent = agent,
                                      .local = pool + (size_t)j * 2 * len,
                                      .back = pool + ((size_t)j * 2 + 1) * len,
                                      .remote = peer_base + (uint64_t)j * len,
                                      .o = &o,
                                      .id = j};
                    pthread_create(&th[j], NULL, worker_main, &w[j]);
                }
                uint64_t bytes = 0;
                double secs = 0;
                int failed = 0;
                for (int j = 0; j < t; j++) {
                    pthread_join(th[j], NULL);
                    bytes += w[j].bytes;
                    secs = w[j].seconds > secs ? w[j].seconds : secs;
                    failed |= w[j].failed;
                }
                if (failed) {
                    fprintf(stderr, "mpixfer-mt-bench: a transfer failed or its bytes differ\n");
                    MPI_Abort(MPI_COMM_WORLD, 1);
                }
                printf("  %-8s %7d %7.2f %9llu\n", arena ? "arena" : "foreign", t,
                       secs > 0 ? (double)bytes / secs / 1e9 : 0,
                       (unsigned long long)(bytes / len));
            }
            /* The target drives progress until the initiator is done, sleeping in between:
             * on a 2-core machine a spinning target would leave the initiator's threads
             * one core to share (WRITEs to it complete without its help). */
            MPI_Request req;
            int done = 0;
            MPI_Ibarrier(MPI_COMM_WORLD, &req);
            while (!done) {
                XF(mpixfer_progress(ctx), "progress");
                MPI_Test(&req, &done, MPI_STATUS_IGNORE);
                if (rank == 1 && !done)
                    usleep(500);
            }
        }
        XF(mpixfer_deregister_memory(agent, &rl), "deregister");
        XF(mpixfer_bootstrap(ctx), "bootstrap");
        if (arena)
            XF(mpixfer_mem_free(ctx, pool), "mem_free");
        else
            free(pool);
    }
    XF(mpixfer_agent_destroy(agent), "agent_destroy");
    XF(mpixfer_context_destroy(ctx), "context_destroy");
    MPI_Finalize();
    return 0;
}
