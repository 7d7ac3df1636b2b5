/*
 * mpixfer-bench: nixlbench-like sweep of block size x batch size x op, comparing
 * (a) mpixfer (one request of `batch` descriptors, submit + wait),
 * (b) raw MPI on the same kind of window mpixfer uses (dynamic window, lock_all,
 *     MPI_Put/MPI_Get per block, MPI_Win_flush per batch), and
 * (c) a local memcpy of the same blocks,
 * on the same buffers and the same descriptor pattern.
 *
 * Launch: mpiexec -n 2 mpixfer-bench [options]. Even ranks are initiators, the next odd
 * rank is their target; a rank without a partner only takes part in the collectives.
 *
 * Per point every rank goes through the same phases, separated by collectives on
 * MPI_COMM_WORLD, so the target never needs to know how many requests arrive: while the
 * initiator works, the target drives mpixfer_progress() and tests an MPI_Ibarrier that
 * the initiator enters when it is done with the phase.
 */
#define _GNU_SOURCE /* getopt_long, posix_memalign */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mpixfer.h"

#define KIB ((size_t)1024)
#define MIB (KIB * KIB)
#define PAGE 4096
#define MAX_LIST 64

/* ------------------------------------------------------------------ errors */

static int g_rank = 0;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "mpixfer-bench[rank %d]: ", g_rank);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1); /* MPI_Abort does not return, but the compiler cannot know */
}

/* Every mpixfer call goes through this: a failed call aborts the whole job with its text. */
#define XF(call)                                                                           \
    do {                                                                                   \
        mpixfer_status_t st_ = (call);                                                     \
        if (st_ != MPIXFER_OK)                                                             \
            die("%s failed: %s (%s) at %s:%d", #call, mpixfer_strerror(st_),               \
                mpixfer_status_name(st_), __FILE__, __LINE__);                             \
    } while (0)

#define MPICHK(call)                                                                       \
    do {                                                                                   \
        int rc_ = (call);                                                                  \
        if (rc_ != MPI_SUCCESS) {                                                          \
            char es_[MPI_MAX_ERROR_STRING];                                                \
            int el_ = 0;                                                                   \
            MPI_Error_string(rc_, es_, &el_);                                              \
            die("%s failed: %s at %s:%d", #call, es_, __FILE__, __LINE__);                 \
        }                                                                                  \
    } while (0)

/* ----------------------------------------------------------------- options */

typedef struct {
    size_t blocks[MAX_LIST];
    int nblocks;
    size_t batches[MAX_LIST];
    int nbatches;
    bool do_read, do_write;
    long iters;  /* 0: adaptive */
    long warmup; /* -1: adaptive */
    size_t max_bytes;
    bool reverse; /* destination slots in reverse order: no two pairs can be merged */
    const char *json;
} opts_t;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mpiexec -n 2 mpixfer-bench [options]\n"
            "  rank 0 initiates, rank 1 is the target (more ranks: pairs (0,1),(2,3),...)\n"
            "  --block-sizes LIST   block sizes in bytes, comma separated, K/M/G suffixes\n"
            "                       (default 4K,16K,64K,256K,1M,4M,16M,64M)\n"
            "  --batch-sizes LIST   descriptors per request (default 1,16,256,4096);\n"
            "                       capped per block so block*batch <= --max-bytes\n"
            "  --max-bytes N        largest request (default 256M)\n"
            "  --op read|write|both (default both)\n"
            "  --iters N            timed requests per method and point (default adaptive:\n"
            "                       enough to move 256 MiB, at least 20 if that stays\n"
            "                       under 1 GiB, never fewer than 3)\n"
            "  --warmup N           untimed requests before each method (default iters/10,\n"
            "                       2..100)\n"
            "  --pattern contig|reverse  destination slot of block i: i (default) or\n"
            "                       batch-1-i (defeats merging of adjacent pairs)\n"
            "  --json FILE          also write every point and run metadata as JSON\n"
            "  --help\n");
}

/* "64K" -> 65536. Returns false on junk or overflow. */
static bool parse_size(const char *s, size_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || s[0] == '-')
        return false;
    unsigned long long mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1ULL << 10; end++; break;
    case 'm': case 'M': mul = 1ULL << 20; end++; break;
    case 'g': case 'G': mul = 1ULL << 30; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'B' || *end == 'b') /* tolerate KiB / KB */
        end++;
    if (*end == 'B')
        end++;
    if (*end != '\0' || v > ULLONG_MAX / mul)
        return false;
    *out = (size_t)(v * mul);
    return true;
}

static bool parse_list(const char *arg, size_t *vals, int *n)
{
    char buf[1024];
    if (strlen(arg) >= sizeof buf)
        return false;
    strcpy(buf, arg);
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (*n == MAX_LIST || !parse_size(tok, &vals[*n]) || vals[*n] == 0)
            return false;
        (*n)++;
    }
    return *n > 0;
}

static bool parse_long(const char *s, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < 0)
        return false;
    *out = v;
    return true;
}

/* Returns 0 to run, 1 for --help, 2 for a usage error (message already printed). */
static int parse_opts(int argc, char **argv, opts_t *o)
{
    static const struct option longopts[] = {
        {"block-sizes", required_argument, NULL, 'b'},
        {"batch-sizes", required_argument, NULL, 'n'},
        {"max-bytes", required_argument, NULL, 'm'},
        {"op", required_argument, NULL, 'o'},
        {"iters", required_argument, NULL, 'i'},
        {"warmup", required_argument, NULL, 'w'},
        {"pattern", required_argument, NULL, 'p'},
        {"json", required_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};

    memset(o, 0, sizeof *o);
    for (size_t b = 4 * KIB; b <= 64 * MIB; b *= 4) /* powers of 4: 4K .. 64M */
        o->blocks[o->nblocks++] = b;
    const size_t def_batches[] = {1, 16, 256, 4096};
    for (size_t i = 0; i < 4; i++)
        o->batches[o->nbatches++] = def_batches[i];
    o->do_read = o->do_write = true;
    o->warmup = -1;
    o->max_bytes = 256 * MIB;

    opterr = 0; /* we print our own message, once, from rank 0 */
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case 'b': ok = parse_list(optarg, o->blocks, &o->nblocks); break;
        case 'n': ok = parse_list(optarg, o->batches, &o->nbatches); break;
        case 'm': ok = parse_size(optarg, &o->max_bytes) && o->max_bytes > 0; break;
        case 'o':
            o->do_read = !strcmp(optarg, "read") || !strcmp(optarg, "both");
            o->do_write = !strcmp(optarg, "write") || !strcmp(optarg, "both");
            ok = o->do_read || o->do_write;
            break;
        case 'i': ok = parse_long(optarg, &o->iters) && o->iters > 0; break;
        case 'w': ok = parse_long(optarg, &o->warmup); break;
        case 'p':
            ok = !strcmp(optarg, "contig") || !strcmp(optarg, "reverse");
            o->reverse = !strcmp(optarg, "reverse");
            break;
        case 'j': o->json = optarg; break;
        case 'h': return 1;
        default: ok = false; break;
        }
        if (!ok) {
            if (g_rank == 0)
                fprintf(stderr, "mpixfer-bench: bad option or value: %s\n",
                        argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        if (g_rank == 0)
            fprintf(stderr, "mpixfer-bench: unexpected argument: %s\n", argv[optind]);
        return 2;
    }
    for (int i = 0; i < o->nblocks; i++)
        if (o->blocks[i] > INT_MAX) { /* one MPI_Put per block takes an int count */
            if (g_rank == 0)
                fprintf(stderr, "mpixfer-bench: block size %zu exceeds INT_MAX\n",
                        o->blocks[i]);
            return 2;
        }
    return 0;
}

/* ------------------------------------------------------------------ points */

typedef enum { M_MPIXFER = 0, M_RAW = 1, M_MEMCPY = 2, M_COUNT = 3 } method_t;
static const char *const method_name[M_COUNT] = {"mpixfer", "raw-mpi", "memcpy"};

typedef struct {
    double gbps, avg_us, p50_us, p99_us;
    double agg_gbps; /* summed over all pairs */
} result_t;

typedef struct {
    mpixfer_op_t op;
    size_t block, batch;
    long iters, warmup;
    result_t r[M_COUNT];
} point_t;

static long adaptive_iters(size_t bytes)
{
    const size_t target = 256 * MIB;
    long it = (long)((target + bytes - 1) / bytes);
    if (it < 20 && bytes * 20 <= 1024 * MIB)
        it = 20;
    if (it < 3)
        it = 3;
    if (it > 100000)
        it = 100000;
    return it;
}

static long adaptive_warmup(long iters)
{
    long w = iters / 10;
    return w < 2 ? 2 : w > 100 ? 100 : w;
}

/* The sweep: for each op and block, the batch list capped at max_bytes/block, deduplicated. */
static point_t *build_points(const opts_t *o, int *npoints)
{
    point_t *pts = calloc((size_t)(2 * o->nblocks * o->nbatches), sizeof *pts);
    if (!pts)
        die("out of memory");
    int n = 0;
    for (int op = 0; op < 2; op++) {
        if ((op == MPIXFER_OP_READ && !o->do_read) || (op == MPIXFER_OP_WRITE && !o->do_write))
            continue;
        for (int b = 0; b < o->nblocks; b++) {
            size_t block = o->blocks[b];
            if (block > o->max_bytes)
                continue;
            int first = n;
            for (int k = 0; k < o->nbatches; k++) {
                size_t batch = o->batches[k];
                if (batch > o->max_bytes / block)
                    batch = o->max_bytes / block;
                bool dup = false;
                for (int q = first; q < n; q++)
                    dup = dup || pts[q].batch == batch;
                if (dup)
                    continue;
                point_t *p = &pts[n++];
                p->op = (mpixfer_op_t)op;
                p->block = block;
                p->batch = batch;
                p->iters = o->iters ? o->iters : adaptive_iters(block * batch);
                p->warmup = o->warmup >= 0 ? o->warmup : adaptive_warmup(p->iters);
            }
        }
    }
    *npoints = n;
    return pts;
}

/* ----------------------------------------------------------------- pattern */

static inline uint64_t mix64(uint64_t x)
{
    /* splitmix64 finaliser: every word of every point differs with high probability */
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* Word w of the pattern with seed s. */
static inline uint64_t pat_word(uint64_t seed, size_t w)
{
    return mix64(seed * 0x100000001B3ULL + w);
}

/* Fill buf[0..len) with the pattern (a scrambled destination); len rounded up to words. */
static void fill_pattern(unsigned char *buf, size_t len, uint64_t seed)
{
    uint64_t *w = (uint64_t *)(void *)buf;
    size_t nw = (len + 7) / 8;
    for (size_t i = 0; i < nw; i++)
        w[i] = pat_word(seed, i);
}

static inline unsigned char pat_byte(uint64_t seed, size_t off)
{
    uint64_t v = pat_word(seed, off / 8);
    return (unsigned char)(v >> (8 * (off % 8))); /* little-endian byte order as stored */
}

/* Destination slot of source block i. */
static inline size_t slot_of(size_t i, size_t batch, bool reverse)
{
    return reverse ? batch - 1 - i : i;
}

/*
 * Lay out the logical stream (block i = pattern bytes [i*block, (i+1)*block)) with block i
 * at slot slot_of(i): the inverse of what verify_blocks() checks.
 */
static void fill_blocks(unsigned char *buf, size_t block, size_t batch, bool reverse,
                        uint64_t seed)
{
    if (!reverse) { /* slot i = block i: one contiguous stream */
        fill_pattern(buf, block * batch, seed);
        return;
    }
    for (size_t i = 0; i < batch; i++) {
        unsigned char *d = buf + slot_of(i, batch, reverse) * block;
        for (size_t k = 0; k < block; k++)
            d[k] = pat_byte(seed, i * block + k);
    }
}

/*
 * Check that dst slot slot_of(i) holds source block i of the pattern with @p seed.
 * Returns the first bad byte offset in dst, or SIZE_MAX if all is well.
 */
static size_t verify_blocks(const unsigned char *dst, size_t block, size_t batch, bool reverse,
                            uint64_t seed)
{
    for (size_t i = 0; i < batch; i++) {
        const unsigned char *d = dst + slot_of(i, batch, reverse) * block;
        size_t src_off = i * block;
        size_t k = 0;
        if (src_off % 8 == 0) { /* fast path: whole words */
            for (; k + 8 <= block; k += 8) {
                uint64_t v;
                memcpy(&v, d + k, 8);
                if (v != pat_word(seed, (src_off + k) / 8))
                    break;
            }
        }
        for (; k < block; k++)
            if (d[k] != pat_byte(seed, src_off + k))
                return (size_t)(d + k - dst);
    }
    return SIZE_MAX;
}

/* ------------------------------------------------------------------- state */

typedef struct {
    const opts_t *o;
    int rank, size;
    bool initiator;   /* even rank with a partner */
    bool target;      /* odd rank */
    int peer;         /* partner rank, -1 if none */
    mpixfer_context_t *ctx;
    mpixfer_agent_t *agent;
    char peer_name[64];
    unsigned char *buf;   /* the registered buffer: initiator's source / target's dest */
    unsigned char *copy;  /* initiator only: memcpy destination */
    size_t buf_len;
    uint64_t peer_addr;   /* the partner's buf address, for mpixfer descriptors */
    MPI_Aint peer_disp;   /* the same for the raw window */
    MPI_Win win;
    mpixfer_mem_desc_t *src_descs, *dst_descs;
    double *lat;          /* per-request latencies of one method, seconds */
} bench_t;

/* Leave a phase: the initiator when its work is done, the target after serving it. */
static void phase_end(bench_t *b)
{
    MPI_Request req;
    MPICHK(MPI_Ibarrier(MPI_COMM_WORLD, &req));
    int done = 0;
    while (!done) {
        /* keeps the target's library answering (and is harmless on the initiator) */
        XF(mpixfer_progress(b->ctx));
        MPICHK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
    }
}

/* Everyone agrees a check passed; any rank failing aborts the job with its message. */
static void agree(bool ok, const char *what, const point_t *p)
{
    int mine = ok ? 1 : 0, all = 0;
    MPICHK(MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    if (!all) {
        if (!ok || g_rank == 0)
            fprintf(stderr,
                    "mpixfer-bench[rank %d]: VERIFICATION FAILED (%s) op=%s block=%zu "
                    "batch=%zu%s\n",
                    g_rank, what, p->op == MPIXFER_OP_READ ? "read" : "write", p->block,
                    p->batch, ok ? " (on another rank)" : "");
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void summarise(double *lat, long n, double total_s, size_t bytes_per_req, result_t *r)
{
    double sum = 0;
    for (long i = 0; i < n; i++)
        sum += lat[i];
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    r->gbps = total_s > 0 ? (double)bytes_per_req * (double)n / total_s / 1e9 : 0;
    r->avg_us = sum / (double)n * 1e6;
    r->p50_us = lat[(n - 1) / 2] * 1e6;
    long i99 = (long)ceil(0.99 * (double)n) - 1; /* nearest-rank percentile */
    r->p99_us = lat[i99 < 0 ? 0 : i99] * 1e6;
}

/* --------------------------------------------------------------- methods */

/* One mpixfer request of p->batch descriptors; returns its latency in seconds. */
static double mpixfer_once(bench_t *b, const point_t *p)
{
    mpixfer_transfer_request_t req = {
        .op = p->op,
        .src = {MPIXFER_MEM_DRAM, b->src_descs, p->batch},
        .dst = {MPIXFER_MEM_DRAM, b->dst_descs, p->batch},
        .remote_name = b->peer_name,
        .sync_message = NULL,
        .sync_message_len = 0,
    };
    mpixfer_request_t *x = NULL;
    double t0 = MPI_Wtime();
    XF(mpixfer_submit_transfer(b->agent, &req, &x));
    mpixfer_state_t s = mpixfer_request_wait(x, -1);
    double t1 = MPI_Wtime();
    if (s != MPIXFER_STATE_SUCCESS) {
        mpixfer_status_t st = mpixfer_request_status(x);
        die("request wait returned %s: %s (%s)",
            s == MPIXFER_STATE_FAILURE ? "FAILURE" : "IN_PROGRESS", mpixfer_strerror(st),
            mpixfer_status_name(st));
    }
    mpixfer_request_free(x);
    return t1 - t0;
}

/* The same pattern as raw RMA: one Put/Get per block, one flush per batch. */
static double raw_once(bench_t *b, const point_t *p)
{
    const int cnt = (int)p->block;
    double t0 = MPI_Wtime();
    for (size_t i = 0; i < p->batch; i++) {
        void *local = (void *)(uintptr_t)b->src_descs[i].addr;
        MPI_Aint disp = b->peer_disp + (MPI_Aint)(b->dst_descs[i].addr - b->peer_addr);
        if (p->op == MPIXFER_OP_WRITE)
            MPICHK(MPI_Put(local, cnt, MPI_BYTE, b->peer, disp, cnt, MPI_BYTE, b->win));
        else
            MPICHK(MPI_Get(local, cnt, MPI_BYTE, b->peer, disp, cnt, MPI_BYTE, b->win));
    }
    MPICHK(MPI_Win_flush(b->peer, b->win));
    return MPI_Wtime() - t0;
}

/* The local copy of the same blocks: buf block i -> copy slot slot_of(i). */
static double memcpy_once(bench_t *b, const point_t *p)
{
    double t0 = MPI_Wtime();
    for (size_t i = 0; i < p->batch; i++)
        memcpy(b->copy + slot_of(i, p->batch, b->o->reverse) * p->block, b->buf + i * p->block,
               p->block);
    return MPI_Wtime() - t0;
}

typedef double (*once_fn)(bench_t *, const point_t *);

/* Warm up, then time p->iters requests; the initiator fills r. */
static void timed_run(bench_t *b, const point_t *p, once_fn fn, result_t *r)
{
    for (long i = 0; i < p->warmup; i++)
        (void)fn(b, p);
    double t0 = MPI_Wtime();
    for (long i = 0; i < p->iters; i++)
        b->lat[i] = fn(b, p);
    double total = MPI_Wtime() - t0;
    summarise(b->lat, p->iters, total, p->block * p->batch, r);
}

/*
 * One RMA method at one point: the receiving side scrambles its destination, one
 * untimed request moves the pattern, the receiving side verifies it, then the timed run.
 */
static void run_rma_method(bench_t *b, point_t *p, method_t m, uint64_t seed)
{
    const size_t bytes = p->block * p->batch;
    const bool write = p->op == MPIXFER_OP_WRITE;
    /* The side that receives the data: the target for WRITE, the initiator for READ. */
    const bool receiver = write ? b->target : b->initiator;
    once_fn fn = m == M_MPIXFER ? mpixfer_once : raw_once;

    if (receiver) /* a different seed: stale bytes cannot pass verification */
        fill_pattern(b->buf, bytes, seed ^ 0xDEADBEEFCAFEULL);
    if (b->buf) /* publish our local stores to the window before the peer's RMA */
        MPICHK(MPI_Win_sync(b->win));
    MPICHK(MPI_Barrier(MPI_COMM_WORLD));

    if (b->initiator)
        (void)fn(b, p);
    phase_end(b);
    bool ok = true;
    if (receiver) {
        /* our window's public and private copies agree before we read (separate model) */
        MPICHK(MPI_Win_sync(b->win));
        /* the target receives in slot order (WRITE), the initiator in stream order (READ) */
        size_t bad = verify_blocks(b->buf, p->block, p->batch, write && b->o->reverse, seed);
        if (bad != SIZE_MAX) {
            fprintf(stderr,
                    "mpixfer-bench[rank %d]: %s %s: destination byte %zu (slot %zu, "
                    "offset %zu) does not match the source pattern\n",
                    b->rank, method_name[m], write ? "write" : "read", bad, bad / p->block,
                    bad % p->block);
            ok = false;
        }
    }
    agree(ok, method_name[m], p);

    if (b->initiator)
        timed_run(b, p, fn, &p->r[m]);
    phase_end(b);
}

static void run_point(bench_t *b, point_t *p, int idx)
{
    const uint64_t seed = 0x5EED0000ULL + (uint64_t)idx;
    const size_t bytes = p->block * p->batch;
    const bool write = p->op == MPIXFER_OP_WRITE;

    /*
     * The data source holds the pattern. Descriptor i pairs the initiator's block i with
     * the target's slot slot_of(i), so the stream sits in order on the initiator and in
     * slot order on the target, whichever way it flows.
     */
    if (write && b->initiator)
        fill_blocks(b->buf, p->block, p->batch, false, seed);
    else if (!write && b->target)
        fill_blocks(b->buf, p->block, p->batch, b->o->reverse, seed);

    if (b->initiator) {
        for (size_t i = 0; i < p->batch; i++) {
            size_t s = slot_of(i, p->batch, b->o->reverse);
            b->src_descs[i] = (mpixfer_mem_desc_t){(uintptr_t)b->buf + i * p->block, p->block, 0};
            b->dst_descs[i] = (mpixfer_mem_desc_t){(uintptr_t)(b->peer_addr + s * p->block),
                                                   p->block, 0};
        }
    }

    run_rma_method(b, p, M_MPIXFER, seed);
    run_rma_method(b, p, M_RAW, seed);

    /* After both RMA methods the initiator's buf holds the stream in order for either op. */
    if (b->initiator) {
        fill_pattern(b->copy, bytes, seed ^ 0xDEADBEEFCAFEULL);
        (void)memcpy_once(b, p);
        if (verify_blocks(b->copy, p->block, p->batch, b->o->reverse, seed) != SIZE_MAX)
            die("memcpy verification failed (block %zu batch %zu)", p->block, p->batch);
        timed_run(b, p, memcpy_once, &p->r[M_MEMCPY]);
    }

    /* Aggregate bandwidth over all pairs; targets and idle ranks contribute 0. */
    for (int m = 0; m < M_COUNT; m++) {
        double mine = b->initiator ? p->r[m].gbps : 0, sum = 0;
        MPICHK(MPI_Reduce(&mine, &sum, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD));
        p->r[m].agg_gbps = sum;
    }
    MPICHK(MPI_Barrier(MPI_COMM_WORLD));
}

/* ------------------------------------------------------------------ output */

static const char *op_name(mpixfer_op_t op) { return op == MPIXFER_OP_READ ? "READ" : "WRITE"; }

static void fmt_size(size_t v, char *out, size_t n)
{
    if (v >= MIB && v % MIB == 0)
        snprintf(out, n, "%zuM", v / MIB);
    else if (v >= KIB && v % KIB == 0)
        snprintf(out, n, "%zuK", v / KIB);
    else
        snprintf(out, n, "%zu", v);
}

static double ratio(double a, double b) { return b > 0 ? a / b : 0; }

static void print_table(const point_t *pts, int n, int pairs)
{
    printf("%-5s %6s %5s %-8s %9s %10s %10s %10s %8s %8s%s\n", "op", "block", "batch",
           "method", "GB/s", "avg us", "p50 us", "p99 us", "x raw", "x memcpy",
           pairs > 1 ? "   agg GB/s" : "");
    for (int i = 0; i < n; i++) {
        const point_t *p = &pts[i];
        char bs[32];
        fmt_size(p->block, bs, sizeof bs);
        for (int m = 0; m < M_COUNT; m++) {
            const result_t *r = &p->r[m];
            printf("%-5s %6s %5zu %-8s %9.3f %10.2f %10.2f %10.2f", op_name(p->op), bs,
                   p->batch, method_name[m], r->gbps, r->avg_us, r->p50_us, r->p99_us);
            if (m == M_MPIXFER)
                printf(" %8.3f %8.3f", ratio(r->gbps, p->r[M_RAW].gbps),
                       ratio(r->gbps, p->r[M_MEMCPY].gbps));
            else
                printf(" %8s %8s", "", "");
            if (pairs > 1)
                printf(" %10.3f", r->agg_gbps);
            printf("\n");
        }
    }
    fflush(stdout);
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(f, "\\%c", *c);
        else if (*c == '\n')
            fputs("\\n", f);
        else if (*c < 0x20)
            fprintf(f, "\\u%04x", *c);
        else
            fputc(*c, f);
    }
    fputc('"', f);
}

static void write_json(const char *path, const point_t *pts, int n, const bench_t *b)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "mpixfer-bench: cannot write %s: %s\n", path, strerror(errno));
        return;
    }
    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(lib, &len);
    while (len > 0 && (lib[len - 1] == '\n' || lib[len - 1] == '\0'))
        lib[--len] = '\0';
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tm);

    fprintf(f, "{\n  \"meta\": {\n    \"mpi_library\": ");
    json_string(f, lib);
    fprintf(f, ",\n    \"mpixfer_version\": ");
    json_string(f, mpixfer_version());
    fprintf(f, ",\n    \"ranks\": %d,\n    \"pairs\": %d,\n    \"date\": \"%s\",\n", b->size,
            b->size / 2, date);
    fprintf(f, "    \"pattern\": \"%s\",\n    \"max_bytes\": %zu\n  },\n  \"results\": [",
            b->o->reverse ? "reverse" : "contig", b->o->max_bytes);
    bool first = true;
    for (int i = 0; i < n; i++) {
        const point_t *p = &pts[i];
        for (int m = 0; m < M_COUNT; m++) {
            const result_t *r = &p->r[m];
            fprintf(f,
                    "%s\n    {\"op\": \"%s\", \"block\": %zu, \"batch\": %zu, "
                    "\"method\": \"%s\", \"iters\": %ld, \"gbps\": %.6f, \"avg_us\": %.3f, "
                    "\"p50_us\": %.3f, \"p99_us\": %.3f, \"agg_gbps\": %.6f, "
                    "\"ratio_raw\": %.6f, \"ratio_memcpy\": %.6f}",
                    first ? "" : ",", op_name(p->op), p->block, p->batch, method_name[m],
                    p->iters, r->gbps, r->avg_us, r->p50_us, r->p99_us, r->agg_gbps,
                    ratio(r->gbps, p->r[M_RAW].gbps), ratio(r->gbps, p->r[M_MEMCPY].gbps));
            first = false;
        }
    }
    fprintf(f, "\n  ]\n}\n");
    if (fclose(f) != 0)
        fprintf(stderr, "mpixfer-bench: error writing %s\n", path);
}

/* ------------------------------------------------------------------- main */

static unsigned char *alloc_touched(size_t len)
{
    void *p = NULL;
    int rc = posix_memalign(&p, PAGE, len);
    if (rc != 0)
        die("posix_memalign(%zu): %s", len, strerror(rc));
    memset(p, 0, len); /* fault the pages in now, not inside a timed request */
    return p;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    int size = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    /* So our own MPI calls report errors instead of aborting without a message. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);

    opts_t o;
    int prc = parse_opts(argc, argv, &o);
    if (prc != 0) {
        if (g_rank == 0)
            usage(prc == 1 ? stdout : stderr);
        MPI_Finalize();
        return prc == 1 ? 0 : 2;
    }
    if (size < 2) {
        if (g_rank == 0)
            fprintf(stderr, "mpixfer-bench: needs at least 2 ranks (mpiexec -n 2)\n");
        MPI_Finalize();
        return 2;
    }

    int npoints = 0;
    point_t *pts = build_points(&o, &npoints);
    if (npoints == 0)
        die("nothing to measure (every block size exceeds --max-bytes?)");
    size_t max_req = 0;
    long max_iters = 0;
    for (int i = 0; i < npoints; i++) {
        if (pts[i].block * pts[i].batch > max_req)
            max_req = pts[i].block * pts[i].batch;
        if (pts[i].iters > max_iters)
            max_iters = pts[i].iters;
    }

    bench_t b = {0};
    b.o = &o;
    b.rank = g_rank;
    b.size = size;
    b.initiator = g_rank % 2 == 0 && g_rank + 1 < size;
    b.target = g_rank % 2 == 1;
    b.peer = b.initiator ? g_rank + 1 : b.target ? g_rank - 1 : -1;
    /* Rounded up to whole pages (and so to whole pattern words). */
    b.buf_len = (max_req + PAGE - 1) / PAGE * PAGE;

    if (b.peer >= 0)
        b.buf = alloc_touched(b.buf_len);
    if (b.initiator) {
        b.copy = alloc_touched(b.buf_len);
        size_t maxbatch = 0;
        for (int i = 0; i < npoints; i++)
            maxbatch = pts[i].batch > maxbatch ? pts[i].batch : maxbatch;
        b.src_descs = calloc(maxbatch, sizeof *b.src_descs);
        b.dst_descs = calloc(maxbatch, sizeof *b.dst_descs);
        b.lat = calloc((size_t)max_iters, sizeof *b.lat);
        if (!b.src_descs || !b.dst_descs || !b.lat)
            die("out of memory");
    }

    /* mpixfer: one context, one agent per rank, the buffer registered once. */
    XF(mpixfer_context_create(MPI_COMM_WORLD, &b.ctx));
    char name[64];
    snprintf(name, sizeof name, "bench-%d", g_rank);
    if (b.peer >= 0)
        snprintf(b.peer_name, sizeof b.peer_name, "bench-%d", b.peer);
    mpixfer_agent_config_t cfg = MPIXFER_AGENT_CONFIG_INIT;
    cfg.name = name;
    XF(mpixfer_agent_create(b.ctx, &cfg, &b.agent));
    mpixfer_mem_desc_t reg = {(uintptr_t)b.buf, b.buf_len, 0};
    mpixfer_mem_descs_t regs = {MPIXFER_MEM_DRAM, &reg, 1};
    if (b.peer >= 0)
        XF(mpixfer_register_memory(b.agent, &regs));
    XF(mpixfer_bootstrap(b.ctx));

    /* Descriptors are opaque, so the buffer addresses travel separately. */
    uint64_t my_addr = (uint64_t)(uintptr_t)b.buf;
    uint64_t *addrs = calloc((size_t)size, sizeof *addrs);
    MPI_Aint my_disp = 0, *disps = calloc((size_t)size, sizeof *disps);
    if (!addrs || !disps)
        die("out of memory");
    MPICHK(MPI_Get_address(b.buf ? (void *)b.buf : (void *)&my_addr, &my_disp));
    MPICHK(MPI_Allgather(&my_addr, 1, MPI_UINT64_T, addrs, 1, MPI_UINT64_T, MPI_COMM_WORLD));
    MPICHK(MPI_Allgather(&my_disp, 1, MPI_AINT, disps, 1, MPI_AINT, MPI_COMM_WORLD));
    if (b.peer >= 0) {
        b.peer_addr = addrs[b.peer];
        b.peer_disp = disps[b.peer];
    }
    free(addrs);
    free(disps);

    if (b.initiator) {
        mpixfer_mem_desc_t probe = {(uintptr_t)b.peer_addr, b.buf_len, 0};
        mpixfer_mem_descs_t probes = {MPIXFER_MEM_DRAM, &probe, 1};
        if (!mpixfer_check_remote_descs(b.agent, b.peer_name, &probes))
            die("after bootstrap, %s does not advertise its %zu-byte buffer at 0x%" PRIx64,
                b.peer_name, b.buf_len, b.peer_addr);
    }

    /* Raw MPI: the same window kind mpixfer uses, on the same buffers. */
    MPICHK(MPI_Win_create_dynamic(MPI_INFO_NULL, MPI_COMM_WORLD, &b.win));
    MPICHK(MPI_Win_set_errhandler(b.win, MPI_ERRORS_RETURN));
    if (b.buf)
        MPICHK(MPI_Win_attach(b.win, b.buf, (MPI_Aint)b.buf_len));
    MPICHK(MPI_Win_lock_all(0, b.win));

    if (g_rank == 0) {
        char lib[MPI_MAX_LIBRARY_VERSION_STRING];
        int len = 0;
        MPI_Get_library_version(lib, &len);
        char *nl = strchr(lib, '\n');
        if (nl)
            *nl = '\0';
        printf("# mpixfer-bench: mpixfer %s, %d ranks (%d pairs), %s, pattern %s\n",
               mpixfer_version(), size, size / 2, lib, o.reverse ? "reverse" : "contig");
        fflush(stdout);
    }
    MPICHK(MPI_Barrier(MPI_COMM_WORLD));

    for (int i = 0; i < npoints; i++) {
        if (g_rank == 0) {
            char bs[32];
            fmt_size(pts[i].block, bs, sizeof bs);
            fprintf(stderr, "[%d/%d] %s %s %zu\n", i + 1, npoints, op_name(pts[i].op), bs,
                    pts[i].batch);
        }
        run_point(&b, &pts[i], i);
    }

    if (g_rank == 0) {
        print_table(pts, npoints, size / 2);
        if (o.json)
            write_json(o.json, pts, npoints, &b);
    }

    MPICHK(MPI_Win_unlock_all(b.win));
    if (b.buf)
        MPICHK(MPI_Win_detach(b.win, b.buf));
    MPICHK(MPI_Win_free(&b.win));
    if (b.peer >= 0)
        XF(mpixfer_deregister_memory(b.agent, &regs));
    XF(mpixfer_agent_destroy(b.agent));
    XF(mpixfer_context_destroy(b.ctx));

    free(b.buf);
    free(b.copy);
    free(b.src_descs);
    free(b.dst_descs);
    free(b.lat);
    free(pts);
    MPI_Finalize();
    return 0;
}
