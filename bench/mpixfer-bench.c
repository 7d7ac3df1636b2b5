/*
 * mpixfer-bench: in one run, mpixfer against raw MPI RMA on the same kind of window and
 * against a plain copy of the same blocks, READ and WRITE, over
 *   - a contiguous sweep (one block of 4 KiB .. 64 MiB per request),
 *   - scattered batches (1 .. 4096 blocks of 4 .. 256 KiB, slots in random order on both
 *     sides, so no two pairs can be merged),
 *   - a post-time point (40,000 scattered 4 KiB blocks: how long submit alone takes),
 *   - a latency point (one 8-byte block),
 * on two kinds of host memory (--mem):
 *   foreign  posix_memalign'd memory registered in the agent (mpixfer's dynamic window).
 *            raw-mpi: MPI_Win_create_dynamic + MPI_Win_attach, MPI_Put/MPI_Get per block,
 *            MPI_Win_flush per batch. memcpy: a local copy of the same blocks.
 *   arena    mpixfer_mem_alloc() memory (MPI_Win_allocate_shared inside the library).
 *            raw-mpi: the same per-block Put/Get + flush on that very window
 *            (mpixfer_mem_window), on the same blocks. memcpy: copies straight into (out
 *            of) the peer's block through the mapping MPI_Win_shared_query gives. (With
 *            a window of its own the bench compared copies of different pages: the
 *            1 MiB ratio then moved 0.89-1.07 from run to run with the pages' placement.)
 * and, with --src-mem/--dst-mem vram, on GPU memory (cudaMalloc, or host memory under
 * MPIXFER_GPU_EMULATE=1) with cudaMemcpy of the same blocks as the reference.
 *
 * Every point reports GB/s (bytes moved / wall time of all timed requests), the average,
 * median and 99th percentile latency of one request (submit + wait), and the average post
 * time (mpixfer_submit_transfer alone; the Put/Get loop before the flush for raw MPI).
 * A "targets" section at the end prints the ratios issue 4 asks for; they are reported,
 * never a reason to fail.
 *
 * Launch: mpiexec -n 2 mpixfer-bench [options]. Even ranks are initiators, the next odd
 * rank is their target; a rank without a partner only takes part in the collectives.
 * Per point and method every rank goes through the same phases, separated by collectives
 * on MPI_COMM_WORLD, so the target never needs to know how many requests arrive: while
 * the initiator works, the target drives mpixfer_progress() and tests an MPI_Ibarrier
 * that the initiator enters when it is done with the phase.
 *
 * --link adds the link path (issue 13) beside the in-job one: each rank of a pair also
 * creates a context of its own on MPI_COMM_SELF, so the two share no communicator, as two
 * separately launched jobs would not; they swap descriptor blobs over MPI_COMM_WORLD (the
 * side channel a server would have) and load each other. Method "link" then moves the same
 * registered blocks as the in-job "mpixfer", in the same rounds, so the ratio of the two
 * is measured under the same load.
 */
#define _GNU_SOURCE /* getopt_long, posix_memalign, gethostname */

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
#include <unistd.h>

#ifdef MPIXFER_BENCH_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "mpixfer.h"

#define KIB ((size_t)1024)
#define MIB (KIB * KIB)
#define PAGE 4096
#define MAX_LIST 64
#define MAX_ITERS 20000

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

#ifdef MPIXFER_BENCH_HAVE_CUDA
#define CUCHK(call)                                                                        \
    do {                                                                                   \
        cudaError_t ce_ = (call);                                                          \
        if (ce_ != cudaSuccess)                                                            \
            die("%s failed: %s at %s:%d", #call, cudaGetErrorString(ce_), __FILE__,        \
                __LINE__);                                                                 \
    } while (0)
#endif

/* ----------------------------------------------------------------- options */

typedef enum { PAT_CONTIG = 0, PAT_SCATTERED = 1, PAT_REVERSE = 2, PAT_SUITE = 3 } pattern_t;
static const char *const pattern_name[] = {"contig", "scattered", "reverse", "suite"};

/* Memory kinds: the two host kinds of --mem, and "xpu" for --src-mem/--dst-mem with VRAM. */
typedef enum { MEM_FOREIGN = 0, MEM_ARENA = 1, MEM_XPU = 2, MEM_COUNT = 3 } memkind_t;

typedef struct {
    size_t blocks[MAX_LIST];
    int nblocks;
    bool blocks_set;
    size_t batches[MAX_LIST];
    int nbatches;
    bool batches_set;
    bool do_read, do_write;
    long iters;    /* 0: adaptive */
    long warmup;   /* -1: adaptive */
    double budget; /* adaptive: seconds of timed requests per method and point */
    size_t max_bytes;
    bool max_bytes_set;
    pattern_t pattern; /* PAT_SUITE: the default sweep */
    bool pattern_set;
    bool quick;
    bool link;       /* --link: the link path beside the in-job one */
    long link_loads; /* fresh loads of the load-until-usable point; 0: default */
    bool mem[MEM_COUNT];
    size_t arena_size; /* 0: twice the largest pool */
    bool src_vram, dst_vram;
    size_t post_batch; /* descriptors of the post-time point */
    uint64_t seed;
    const char *json;
    const char *prometheus;
} opts_t;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mpiexec -n 2 mpixfer-bench [options]\n"
            "  rank 0 initiates, rank 1 is the target (more ranks: pairs (0,1),(2,3),...)\n"
            "\n"
            "  Default: the whole suite in one run, on foreign and arena memory, READ and\n"
            "  WRITE: contiguous blocks 4K,64K,1M,16M,64M (batch 1); scattered blocks\n"
            "  4K,16K,64K,256K x batches 1,64,1024,4096 (capped by --max-bytes); a post-time\n"
            "  point of 40000 scattered 4K blocks; an 8-byte latency point; then the targets.\n"
            "\n"
            "  --pattern contig|scattered|reverse\n"
            "                       run one grid (block sizes x batch sizes) with that\n"
            "                       layout instead of the suite. contig: slot i on both\n"
            "                       sides; reverse: destination slot batch-1-i; scattered:\n"
            "                       a random permutation of the slots on both sides.\n"
            "                       Grid defaults: contig 4K..64M x 1, otherwise\n"
            "                       4K,16K,64K,256K x 1,64,1024,4096.\n"
            "  --link               also run the link path: each rank on a context of its\n"
            "                       own (MPI_COMM_SELF), the pair joined by descriptor\n"
            "                       blob; method \"link\" beside the in-job \"mpixfer\" on\n"
            "                       foreign memory, the ratio link / in-job and issue 13's\n"
            "                       targets. Suite: 1024 x 16K scattered, 1M and 16M\n"
            "                       contiguous, 8-byte latency, load by blob until usable.\n"
            "                       MPIXFER_LINK_COPY=ucx forces UCX RMA instead of\n"
            "                       cross-memory copies; the mover that ran is printed.\n"
            "  --link-loads N       fresh loads (invalidate + load) timed until usable\n"
            "                       (default 50; 5 with --quick)\n"
            "  --block-sizes LIST   block sizes in bytes, K/M/G suffixes (implies a grid;\n"
            "                       contig unless --pattern says otherwise)\n"
            "  --batch-sizes LIST   descriptors per request (implies a grid); capped per\n"
            "                       block so block*batch <= --max-bytes\n"
            "  --max-bytes N        largest request of the sweeps (default 64M)\n"
            "  --post-batch N       descriptors of the suite's post-time point, 4K each\n"
            "                       (default 40000; not capped by --max-bytes; measured\n"
            "                       for WRITE, or READ when only READ runs)\n"
            "  --op read|write|both (default both)\n"
            "  --mem foreign|arena|both  host memory kind (default both)\n"
            "  --arena-size N       bytes of arena per process (default twice the pool)\n"
            "  --src-mem vram|dram  initiator memory; --dst-mem vram|dram: target memory.\n"
            "                       With vram on either side only that combination runs,\n"
            "                       against cudaMemcpy (D2D, D2H, H2D) of the same blocks.\n"
            "                       No GPU: prints \"no GPU: skipping VRAM\" and exits 0;\n"
            "                       MPIXFER_GPU_EMULATE=1 runs it on host memory.\n"
            "  --iters N            timed requests per method and point (default adaptive:\n"
            "                       as many as fit in --budget, 10 .. 20000)\n"
            "  --warmup N           untimed requests before each method (default: at least\n"
            "                       1, for a tenth of the budget, at most 100)\n"
            "  --budget SECONDS     adaptive timing budget per method and point (default 0.2;\n"
            "                       with 0.05 the 16 MiB points got ~20 requests and their\n"
            "                       medians moved by 10-30 %% from run to run here)\n"
            "                       The timed requests of the methods of a point run\n"
            "                       interleaved in rounds, so load changes hit all alike.\n"
            "  --quick              a seconds-long suite (for tests): small sizes, 3 iters\n"
            "  --seed N             seed of the scattered permutations (default 1)\n"
            "  --json FILE          also write metadata, every point and the targets as JSON\n"
            "                       (scripts/plot FILE out.png draws it)\n"
            "  --prometheus FILE    at the end, write the library's counters (context and\n"
            "                       agent, mpixfer_stats_prometheus) to FILE (rank 0) and\n"
            "                       FILE.<rank> (the other ranks)\n"
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

static bool parse_memtype(const char *s, bool *vram)
{
    if (!strcmp(s, "vram") || !strcmp(s, "VRAM"))
        *vram = true;
    else if (!strcmp(s, "dram") || !strcmp(s, "DRAM"))
        *vram = false;
    else
        return false;
    return true;
}

static void set_list(size_t *dst, int *n, const size_t *src, int count)
{
    for (int i = 0; i < count; i++)
        dst[i] = src[i];
    *n = count;
}

/* Returns 0 to run, 1 for --help, 2 for a usage error (message already printed). */
static int parse_opts(int argc, char **argv, opts_t *o)
{
    static const struct option longopts[] = {
        {"block-sizes", required_argument, NULL, 'b'},
        {"batch-sizes", required_argument, NULL, 'n'},
        {"max-bytes", required_argument, NULL, 'm'},
        {"post-batch", required_argument, NULL, 'P'},
        {"op", required_argument, NULL, 'o'},
        {"mem", required_argument, NULL, 'M'},
        {"arena-size", required_argument, NULL, 'A'},
        {"src-mem", required_argument, NULL, 'S'},
        {"dst-mem", required_argument, NULL, 'D'},
        {"iters", required_argument, NULL, 'i'},
        {"warmup", required_argument, NULL, 'w'},
        {"budget", required_argument, NULL, 'B'},
        {"pattern", required_argument, NULL, 'p'},
        {"link", no_argument, NULL, 'L'},
        {"link-loads", required_argument, NULL, 'K'},
        {"quick", no_argument, NULL, 'q'},
        {"seed", required_argument, NULL, 's'},
        {"json", required_argument, NULL, 'j'},
        {"prometheus", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};

    memset(o, 0, sizeof *o);
    o->do_read = o->do_write = true;
    o->warmup = -1;
    o->budget = 0.2;
    o->max_bytes = 64 * MIB;
    o->pattern = PAT_SUITE;
    o->mem[MEM_FOREIGN] = o->mem[MEM_ARENA] = true;
    o->post_batch = 40000;
    o->seed = 1;

    opterr = 0; /* we print our own message, once, from rank 0 */
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        bool ok = true;
        long l = 0;
        switch (c) {
        case 'b': ok = parse_list(optarg, o->blocks, &o->nblocks); o->blocks_set = true; break;
        case 'n':
            ok = parse_list(optarg, o->batches, &o->nbatches);
            o->batches_set = true;
            break;
        case 'm':
            ok = parse_size(optarg, &o->max_bytes) && o->max_bytes > 0;
            o->max_bytes_set = true;
            break;
        case 'P': ok = parse_size(optarg, &o->post_batch) && o->post_batch > 0; break;
        case 'o':
            o->do_read = !strcmp(optarg, "read") || !strcmp(optarg, "both");
            o->do_write = !strcmp(optarg, "write") || !strcmp(optarg, "both");
            ok = o->do_read || o->do_write;
            break;
        case 'M':
            o->mem[MEM_FOREIGN] = !strcmp(optarg, "foreign") || !strcmp(optarg, "both");
            o->mem[MEM_ARENA] = !strcmp(optarg, "arena") || !strcmp(optarg, "both");
            ok = o->mem[MEM_FOREIGN] || o->mem[MEM_ARENA];
            break;
        case 'A': ok = parse_size(optarg, &o->arena_size) && o->arena_size > 0; break;
        case 'S': ok = parse_memtype(optarg, &o->src_vram); break;
        case 'D': ok = parse_memtype(optarg, &o->dst_vram); break;
        case 'i': ok = parse_long(optarg, &o->iters) && o->iters > 0; break;
        case 'w': ok = parse_long(optarg, &o->warmup); break;
        case 'B': {
            char *end = NULL;
            errno = 0;
            o->budget = strtod(optarg, &end);
            ok = !errno && end != optarg && *end == '\0' && o->budget > 0 && o->budget < 3600;
            break;
        }
        case 'p':
            if (!strcmp(optarg, "contig"))
                o->pattern = PAT_CONTIG;
            else if (!strcmp(optarg, "scattered"))
                o->pattern = PAT_SCATTERED;
            else if (!strcmp(optarg, "reverse"))
                o->pattern = PAT_REVERSE;
            else
                ok = false;
            o->pattern_set = true;
            break;
        case 'L': o->link = true; break;
        case 'K': ok = parse_long(optarg, &o->link_loads) && o->link_loads > 0; break;
        case 'q': o->quick = true; break;
        case 's': ok = parse_long(optarg, &l); o->seed = (uint64_t)l; break;
        case 'j': o->json = optarg; break;
        case 'T': o->prometheus = optarg; break;
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
    /* A block or batch list without --pattern: the grid, contiguous (the old behaviour). */
    if (o->pattern == PAT_SUITE && (o->blocks_set || o->batches_set))
        o->pattern = PAT_CONTIG;
    if (o->quick) {
        if (!o->max_bytes_set)
            o->max_bytes = 4 * MIB;
        if (o->post_batch == 40000)
            o->post_batch = 1000;
        if (o->iters == 0)
            o->iters = 3;
        if (o->warmup < 0)
            o->warmup = 1;
    }
    if (o->link) {
        if (o->src_vram || o->dst_vram) {
            if (g_rank == 0)
                fprintf(stderr, "mpixfer-bench: --link runs on host memory only\n");
            return 2;
        }
        /* The link's targets compare against the in-job path on registered memory. */
        o->mem[MEM_FOREIGN] = true;
        o->mem[MEM_ARENA] = false;
        if (o->link_loads == 0)
            o->link_loads = o->quick ? 5 : 50;
    }
    /* VRAM on either side: that combination is the run. */
    if (o->src_vram || o->dst_vram) {
        o->mem[MEM_FOREIGN] = o->mem[MEM_ARENA] = false;
        o->mem[MEM_XPU] = true;
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

/* M_HIDX: the same puts/gets as M_RAW, as one MPI_Put/MPI_Get of two hindexed datatypes
 * built per request (batches only): the derived-datatype variant the issue asked to try. */
/* M_LINK: mpixfer again, from the rank's own MPI_COMM_SELF context over a link (--link). */
typedef enum {
    M_MPIXFER = 0,
    M_RAW = 1,
    M_COPY = 2,
    M_HIDX = 3,
    M_LINK = 4,
    M_COUNT = 5
} method_t;

typedef struct {
    bool valid;
    long iters;
    double gbps, avg_us, p50_us, p99_us, post_us;
    double gbps_p50, post_p50_us; /* from the median request: robust on a busy machine */
    double agg_gbps; /* summed over all pairs */
} result_t;

typedef struct {
    mpixfer_op_t op;
    memkind_t mem;
    pattern_t pattern;
    size_t block, batch;
    size_t batch_nominal; /* the batch asked for, before the --max-bytes cap */
    const char *tag; /* "contig", "scattered", "post", "latency" or "grid" */
    result_t r[M_COUNT];
    /* Paired estimate of mpixfer / raw: the median over rounds of the ratio of the two
     * methods' median requests in the same round (rounds interleave the methods), so a
     * drift of the machine's speed between rounds cancels. NAN without both methods or
     * with fewer than 3 rounds. */
    double paired;
    double link_paired; /* the same for link / in-job mpixfer (--link) */
} point_t;

typedef struct {
    point_t *v;
    int n, cap;
} points_t;

static void add_point(points_t *ps, mpixfer_op_t op, memkind_t mem, pattern_t pat,
                      size_t block, size_t batch, size_t nominal, const char *tag)
{
    for (int q = 0; q < ps->n; q++) { /* the same point twice (capped batches): once */
        const point_t *p = &ps->v[q];
        if (p->op == op && p->mem == mem && p->pattern == pat && p->block == block &&
            p->batch == batch)
            return;
    }
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? 2 * ps->cap : 64;
        ps->v = realloc(ps->v, (size_t)ps->cap * sizeof *ps->v);
        if (!ps->v)
            die("out of memory");
    }
    point_t *p = &ps->v[ps->n++];
    memset(p, 0, sizeof *p);
    p->op = op;
    p->mem = mem;
    p->pattern = pat;
    p->block = block;
    p->batch = batch;
    p->batch_nominal = nominal;
    p->tag = tag;
}

static void add_grid(points_t *ps, const opts_t *o, mpixfer_op_t op, memkind_t mem,
                     pattern_t pat, const size_t *blocks, int nblocks, const size_t *batches,
                     int nbatches, const char *tag)
{
    for (int b = 0; b < nblocks; b++) {
        size_t block = blocks[b];
        if (block > o->max_bytes)
            continue;
        for (int k = 0; k < nbatches; k++) {
            size_t batch = batches[k];
            if (batch > o->max_bytes / block)
                batch = o->max_bytes / block;
            add_point(ps, op, mem, pat, block, batch, batches[k], tag);
        }
    }
}

static points_t build_points(opts_t *o)
{
    static const size_t contig_blocks[] = {4 * KIB, 64 * KIB, MIB, 16 * MIB, 64 * MIB};
    static const size_t scat_blocks[] = {4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB};
    static const size_t scat_batches[] = {1, 64, 1024, 4096};
    static const size_t quick_contig[] = {4 * KIB, 64 * KIB, MIB};
    static const size_t quick_scat_blocks[] = {4 * KIB, 16 * KIB};
    static const size_t quick_scat_batches[] = {1, 64};
    static const size_t one = 1;
    static const size_t link_contig[] = {MIB, 16 * MIB};
    static const size_t link_scat_block = 16 * KIB, link_scat_batch = 1024;
    points_t ps = {0};

    if (o->pattern != PAT_SUITE) { /* the grid defaults, where no list was given */
        if (!o->blocks_set) {
            if (o->pattern == PAT_CONTIG)
                set_list(o->blocks, &o->nblocks, contig_blocks, 5);
            else
                set_list(o->blocks, &o->nblocks, scat_blocks, 4);
        }
        if (!o->batches_set) {
            if (o->pattern == PAT_CONTIG && !o->blocks_set)
                set_list(o->batches, &o->nbatches, &one, 1);
            else
                set_list(o->batches, &o->nbatches, scat_batches, 4);
        }
    }
    for (int mem = 0; mem < MEM_COUNT; mem++) {
        if (!o->mem[mem])
            continue;
        for (int op = MPIXFER_OP_WRITE; op >= MPIXFER_OP_READ; op--) {
            if ((op == MPIXFER_OP_READ && !o->do_read) ||
                (op == MPIXFER_OP_WRITE && !o->do_write))
                continue;
            if (o->pattern != PAT_SUITE) {
                add_grid(&ps, o, (mpixfer_op_t)op, (memkind_t)mem, o->pattern, o->blocks,
                         o->nblocks, o->batches, o->nbatches, "grid");
                continue;
            }
            if (o->link) { /* the points issue 13's link targets name; quick: small ones */
                add_grid(&ps, o, (mpixfer_op_t)op, (memkind_t)mem, PAT_CONTIG,
                         o->quick ? quick_contig : link_contig, o->quick ? 3 : 2, &one, 1,
                         "contig");
                add_grid(&ps, o, (mpixfer_op_t)op, (memkind_t)mem, PAT_SCATTERED,
                         o->quick ? quick_scat_blocks : &link_scat_block, o->quick ? 2 : 1,
                         o->quick ? quick_scat_batches : &link_scat_batch, o->quick ? 2 : 1,
                         "scattered");
                add_point(&ps, (mpixfer_op_t)op, (memkind_t)mem, PAT_CONTIG, 8, 1, 1,
                          "latency");
                continue;
            }
            add_grid(&ps, o, (mpixfer_op_t)op, (memkind_t)mem, PAT_CONTIG,
                     o->quick ? quick_contig : contig_blocks, o->quick ? 3 : 5, &one, 1,
                     "contig");
            add_grid(&ps, o, (mpixfer_op_t)op, (memkind_t)mem, PAT_SCATTERED,
                     o->quick ? quick_scat_blocks : scat_blocks, o->quick ? 2 : 4,
                     o->quick ? quick_scat_batches : scat_batches, o->quick ? 2 : 4,
                     "scattered");
            /* Post time: one op is enough (WRITE, the target's; READ when alone). */
            if (op == MPIXFER_OP_WRITE || !o->do_write)
                add_point(&ps, (mpixfer_op_t)op, (memkind_t)mem, PAT_SCATTERED, 4 * KIB,
                          o->post_batch, o->post_batch, "post");
            add_point(&ps, (mpixfer_op_t)op, (memkind_t)mem, PAT_CONTIG, 8, 1, 1, "latency");
        }
    }
    return ps;
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

static inline unsigned char pat_byte(uint64_t seed, size_t off)
{
    uint64_t v = pat_word(seed, off / 8);
    return (unsigned char)(v >> (8 * (off % 8))); /* little-endian byte order as stored */
}

/* Fill buf[0..len) with the stream; len rounded up to words (buffers are page-rounded). */
static void fill_stream(unsigned char *buf, size_t len, uint64_t seed)
{
    uint64_t *w = (uint64_t *)(void *)buf;
    size_t nw = (len + 7) / 8;
    for (size_t i = 0; i < nw; i++)
        w[i] = pat_word(seed, i);
}

/* Lay out the stream (block i = bytes [i*block, (i+1)*block)) with block i at slots[i]
 * (NULL: slot i). */
static void fill_blocks(unsigned char *buf, size_t block, size_t batch, const size_t *slots,
                        uint64_t seed)
{
    if (slots == NULL) {
        fill_stream(buf, block * batch, seed);
        return;
    }
    for (size_t i = 0; i < batch; i++) {
        unsigned char *d = buf + slots[i] * block;
        size_t off = i * block, k = 0;
        if (off % 8 == 0)
            for (; k + 8 <= block; k += 8) {
                uint64_t v = pat_word(seed, (off + k) / 8);
                memcpy(d + k, &v, 8);
            }
        for (; k < block; k++)
            d[k] = pat_byte(seed, off + k);
    }
}

/* Check that slots[i] holds stream block i. Returns the first bad byte offset, or
 * SIZE_MAX if all is well. */
static size_t verify_blocks(const unsigned char *buf, size_t block, size_t batch,
                            const size_t *slots, uint64_t seed)
{
    for (size_t i = 0; i < batch; i++) {
        const unsigned char *d = buf + (slots ? slots[i] : i) * block;
        size_t off = i * block, k = 0;
        if (off % 8 == 0)
            for (; k + 8 <= block; k += 8) {
                uint64_t v;
                memcpy(&v, d + k, 8);
                if (v != pat_word(seed, (off + k) / 8))
                    break;
            }
        for (; k < block; k++)
            if (d[k] != pat_byte(seed, off + k))
                return (size_t)(d + k - buf);
    }
    return SIZE_MAX;
}

/* A random permutation of [0, n) from a seed (the same on every rank). */
static void permute(size_t *v, size_t n, uint64_t seed)
{
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++)
        v[i] = i;
    for (size_t i = n; i > 1; i--) {
        s = mix64(s);
        size_t j = (size_t)(s % i);
        size_t t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* ------------------------------------------------------------------ buffers */

/* One buffer of the bench: host or device memory, and which pattern it holds now. */
typedef struct {
    unsigned char *p;
    size_t len;
    bool dev;     /* real device memory: filled and checked through the scratch buffer */
    uint64_t tag; /* the seed of the stream it holds in its layout; 0: unknown */
} mbuf_t;

static unsigned char *alloc_touched(size_t len)
{
    void *p = NULL;
    int rc = posix_memalign(&p, PAGE, len);
    if (rc != 0)
        die("posix_memalign(%zu): %s", len, strerror(rc));
    memset(p, 0, len); /* fault the pages in now, not inside a timed request */
    return p;
}

/* ------------------------------------------------------------------- state */

typedef struct {
    const opts_t *o;
    int rank, size;
    bool initiator; /* even rank with a partner */
    bool target;    /* odd rank */
    int peer;       /* partner rank, -1 if none */
    mpixfer_context_t *ctx;
    mpixfer_agent_t *agent;
    char peer_name[64];
    size_t pool; /* bytes of every buffer: the largest request, page-rounded */
    bool has_mem[MEM_COUNT];

    /* foreign: registered in the agent and attached to dwin */
    mbuf_t fbuf, fcopy; /* fcopy: initiator only, the memcpy reference's other side */
    uint64_t f_peer_addr;
    MPI_Aint f_peer_disp;
    MPI_Win dwin; /* dynamic window for raw MPI on foreign (and host xpu) memory */
    bool has_dwin;

    /* arena: mpixfer_mem_alloc memory, moved by mpixfer, by raw MPI on the arena's own
     * window and by memcpy through the shared mapping: the same blocks for all three */
    mbuf_t abuf;
    uint64_t a_peer_addr;
    MPI_Aint a_peer_sdisp; /* the partner's block in its segment of swin */
    size_t arena_size;
    MPI_Comm node_comm;
    MPI_Win swin; /* the arena's window: the context owns it, the bench holds an epoch */
    bool has_swin;
    int s_peer; /* the partner's rank in swin's group */
    unsigned char *s_peer_map; /* the partner's block, mapped here */

    /* xpu: --src-mem/--dst-mem */
    mbuf_t xbuf, xcopy; /* xbuf: src kind on the initiator, dst kind on the target */
    uint64_t x_peer_addr;
    MPI_Aint x_peer_disp;
    uint32_t x_dev, x_peer_dev;
    bool x_raw;       /* raw MPI can reach the xpu buffers (host memory or CUDA-aware MPI) */
    bool gpu_real;    /* cudaMalloc'd device memory */
    bool gpu_emulated;
    const char *copy_kind[2]; /* per op: "D2D", "D2H", "H2D", "H2H" */

    unsigned char *scratch; /* host copy of device buffers for fill and verify */

    size_t *islot, *tslot; /* slots of the current point; NULL: identity */
    size_t *islot_v, *tslot_v;
    mpixfer_mem_desc_t *src_descs, *dst_descs;
    struct run *run[M_COUNT]; /* initiator: how each method moves the current point */

    /* --link: this rank's MPI_COMM_SELF context, its agent (fbuf registered), the peer's */
    mpixfer_context_t *link_ctx;
    mpixfer_agent_t *link_agent;
    char link_peer_name[64];
    void *link_peer_blob;
    size_t link_peer_blob_len;
    struct {
        double first_ms;      /* the first load until usable (sets up the link machinery) */
        double p50_ms, p99_ms; /* fresh loads: invalidate, load, poll until usable */
        long n;
        mpixfer_stats_t stats; /* the link context's counters after the points */
    } link;
    struct {
        int count;                    /* 0: not measured */
        double reg_one_ms, dereg_one_ms; /* one call with every region */
        double reg_each_ms, dereg_each_ms; /* one call per region */
        long attach_one, attach_each; /* window attachments the registrations added */
    } reg;
} bench_t;

typedef struct run run_t;
/* Each returns the latency of one request in seconds and its post time in *post. */
typedef double (*once_fn)(bench_t *, const point_t *, const run_t *, double *post);

/* One method at the current point, on the initiator. */
struct run {
    once_fn fn;
    unsigned char **lptr;
    uintptr_t *rptr; /* raw: displacement; copy: pointer */
    MPI_Win win;     /* raw */
    int target;      /* raw: the partner's rank in win */
    MPI_Aint *ldisp, *rdisp; /* hindexed: displacements, rebuilt per request */
    mpixfer_agent_t *agent;  /* mpixfer, link: who submits, to whom */
    const char *remote;
    mpixfer_mem_type_t src_type, dst_type; /* mpixfer */
    double *lat, *post; /* per timed request, seconds */
    long n;             /* timed requests so far */
    double total;       /* their wall time */
};

static const char *mem_label(const bench_t *b, memkind_t m)
{
    if (m == MEM_FOREIGN)
        return "foreign";
    if (m == MEM_ARENA)
        return "arena";
    if (b->o->src_vram)
        return b->o->dst_vram ? "vram-vram" : "vram-dram";
    return b->o->dst_vram ? "dram-vram" : "dram-dram";
}

static const char *method_label(const bench_t *b, const point_t *p, method_t m)
{
    static const char *const names[M_COUNT] = {"mpixfer", "raw-mpi", "memcpy", "hindexed",
                                               "link"};
    if (m == M_COPY && p->mem == MEM_XPU)
        return "cudaMemcpy";
    (void)b;
    return names[m];
}

static void buf_fill(bench_t *b, mbuf_t *m, size_t block, size_t batch, const size_t *slots,
                     uint64_t seed)
{
    if (m->tag == seed)
        return; /* already holds this stream in this layout */
    size_t bytes = block * batch;
    if (!m->dev) {
        fill_blocks(m->p, block, batch, slots, seed);
    } else {
#ifdef MPIXFER_BENCH_HAVE_CUDA
        fill_blocks(b->scratch, block, batch, slots, seed);
        CUCHK(cudaMemcpy(m->p, b->scratch, (bytes + 7) / 8 * 8, cudaMemcpyHostToDevice));
#endif
    }
    (void)b;
    (void)bytes;
    m->tag = seed;
}

/* Overwrite the bytes a point will receive, so stale data cannot pass verification. */
static void buf_scramble(mbuf_t *m, size_t bytes, int salt)
{
    int v = 0xA5 ^ (salt * 0x3B);
    if (!m->dev)
        memset(m->p, v & 0xFF, bytes);
#ifdef MPIXFER_BENCH_HAVE_CUDA
    else
        CUCHK(cudaMemset(m->p, v & 0xFF, bytes));
#endif
    m->tag = 0;
}

static size_t buf_verify(bench_t *b, mbuf_t *m, size_t block, size_t batch,
                         const size_t *slots, uint64_t seed)
{
    const unsigned char *h = m->p;
#ifdef MPIXFER_BENCH_HAVE_CUDA
    if (m->dev) {
        CUCHK(cudaMemcpy(b->scratch, m->p, block * batch, cudaMemcpyDeviceToHost));
        h = b->scratch;
    }
#endif
    (void)b;
    return verify_blocks(h, block, batch, slots, seed);
}

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
                    "batch=%zu pattern=%s%s\n",
                    g_rank, what, p->op == MPIXFER_OP_READ ? "read" : "write", p->block,
                    p->batch, pattern_name[p->pattern], ok ? " (on another rank)" : "");
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void summarise(double *lat, double *post, long n, double total_s,
                      size_t bytes_per_req, result_t *r)
{
    double sum = 0, psum = 0;
    for (long i = 0; i < n; i++) {
        sum += lat[i];
        psum += post[i];
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    r->valid = true;
    r->gbps = total_s > 0 ? (double)bytes_per_req * (double)n / total_s / 1e9 : 0;
    r->avg_us = sum / (double)n * 1e6;
    r->post_us = psum / (double)n * 1e6;
    r->p50_us = lat[(n - 1) / 2] * 1e6;
    r->gbps_p50 = lat[(n - 1) / 2] > 0 ? (double)bytes_per_req / lat[(n - 1) / 2] / 1e9 : 0;
    qsort(post, (size_t)n, sizeof *post, cmp_double);
    r->post_p50_us = post[(n - 1) / 2] * 1e6;
    long i99 = (long)ceil(0.99 * (double)n) - 1; /* nearest-rank percentile */
    r->p99_us = lat[i99 < 0 ? 0 : i99] * 1e6;
}

/* --------------------------------------------------------------- methods */

/* One mpixfer request of p->batch descriptors. */
static double mpixfer_once(bench_t *b, const point_t *p, const run_t *u, double *post)
{
    mpixfer_transfer_request_t req = {
        .op = p->op,
        .src = {u->src_type, b->src_descs, p->batch},
        .dst = {u->dst_type, b->dst_descs, p->batch},
        .remote_name = u->remote,
        .sync_message = NULL,
        .sync_message_len = 0,
    };
    mpixfer_request_t *x = NULL;
    double t0 = MPI_Wtime();
    XF(mpixfer_submit_transfer(u->agent, &req, &x));
    double t1 = MPI_Wtime();
    mpixfer_state_t s = mpixfer_request_wait(x, -1);
    double t2 = MPI_Wtime();
    if (s != MPIXFER_STATE_SUCCESS) {
        mpixfer_status_t st = mpixfer_request_status(x);
        die("request wait returned %s: %s (%s)",
            s == MPIXFER_STATE_FAILURE ? "FAILURE" : "IN_PROGRESS", mpixfer_strerror(st),
            mpixfer_status_name(st));
    }
    mpixfer_request_free(x);
    *post = t1 - t0;
    return t2 - t0;
}

/* The same pattern as raw RMA: one Put/Get per block, one flush per batch. */
static double raw_once(bench_t *b, const point_t *p, const run_t *u, double *post)
{
    (void)b;
    const int cnt = (int)p->block;
    const MPI_Win win = u->win;
    const int target = u->target;
    double t0 = MPI_Wtime();
    if (p->op == MPIXFER_OP_WRITE)
        for (size_t i = 0; i < p->batch; i++)
            MPICHK(MPI_Put(u->lptr[i], cnt, MPI_BYTE, target, (MPI_Aint)u->rptr[i], cnt,
                           MPI_BYTE, win));
    else
        for (size_t i = 0; i < p->batch; i++)
            MPICHK(MPI_Get(u->lptr[i], cnt, MPI_BYTE, target, (MPI_Aint)u->rptr[i], cnt,
                           MPI_BYTE, win));
    double t1 = MPI_Wtime();
    MPICHK(MPI_Win_flush(target, win));
    double t2 = MPI_Wtime();
    *post = t1 - t0;
    return t2 - t0;
}

/*
 * Registration cost (rank 0, local): count adjacent 4 KiB regions of one pool, the layout
 * of a KV-cache pool, registered and deregistered by one call with every descriptor, then
 * by one call per region, with a spare agent; and the window attachments each way added.
 */
static void bench_registration(bench_t *b, int count)
{
    const size_t blk = 4096;
    unsigned char *pool = alloc_touched((size_t)count * blk);
    mpixfer_mem_desc_t *d = calloc((size_t)count, sizeof *d);
    mpixfer_agent_t *a = NULL;
    mpixfer_agent_config_t cfg = MPIXFER_AGENT_CONFIG_INIT;
    mpixfer_stats_t s0, s1;
    if (!d)
        die("out of memory");
    cfg.name = "bench-registration";
    XF(mpixfer_agent_create(b->ctx, &cfg, &a));
    for (int i = 0; i < count; i++)
        d[i] = (mpixfer_mem_desc_t){(uintptr_t)(pool + (size_t)i * blk), blk, 0};

    mpixfer_mem_descs_t all = {MPIXFER_MEM_DRAM, d, (size_t)count};
    XF(mpixfer_context_stats(b->ctx, &s0));
    double t0 = MPI_Wtime();
    XF(mpixfer_register_memory(a, &all));
    double t1 = MPI_Wtime();
    XF(mpixfer_context_stats(b->ctx, &s1));
    XF(mpixfer_deregister_memory(a, &all));
    double t2 = MPI_Wtime();
    b->reg.reg_one_ms = (t1 - t0) * 1e3;
    b->reg.dereg_one_ms = (t2 - t1) * 1e3;
    b->reg.attach_one = (long)s1.window_attachments - (long)s0.window_attachments;

    t0 = MPI_Wtime();
    for (int i = 0; i < count; i++) {
        mpixfer_mem_descs_t one = {MPIXFER_MEM_DRAM, &d[i], 1};
        XF(mpixfer_register_memory(a, &one));
    }
    t1 = MPI_Wtime();
    XF(mpixfer_context_stats(b->ctx, &s1));
    for (int i = 0; i < count; i++) {
        mpixfer_mem_descs_t one = {MPIXFER_MEM_DRAM, &d[i], 1};
        XF(mpixfer_deregister_memory(a, &one));
    }
    t2 = MPI_Wtime();
    b->reg.reg_each_ms = (t1 - t0) * 1e3;
    b->reg.dereg_each_ms = (t2 - t1) * 1e3;
    b->reg.attach_each = (long)s1.window_attachments - (long)s0.window_attachments;
    b->reg.count = count;
    XF(mpixfer_agent_destroy(a));
    free(d);
    free(pool);
}

static void print_registration(const bench_t *b)
{
    if (b->reg.count == 0)
        return;
    printf("\n# registration (rank 0): %d adjacent 4 KiB regions of one pool\n", b->reg.count);
    printf("  one call with all:  register %8.2f ms, deregister %8.2f ms, window attachments "
           "added %ld\n",
           b->reg.reg_one_ms, b->reg.dereg_one_ms, b->reg.attach_one);
    printf("  one call each:      register %8.2f ms, deregister %8.2f ms, window attachments "
           "added %ld\n",
           b->reg.reg_each_ms, b->reg.dereg_each_ms, b->reg.attach_each);
}

/* The raw pattern as one op: origin and target hindexed types built for this request (a
 * library would have to build them per request too), one Put/Get, one flush. */
static double hidx_once(bench_t *b, const point_t *p, const run_t *u, double *post)
{
    (void)b;
    const int n = (int)p->batch, cnt = (int)p->block;
    MPI_Datatype lt, rt;
    double t0 = MPI_Wtime();
    /* The target displacement is the lowest block (osc/rdma looks the displacement itself up
     * among the attached regions), the type's displacements are relative to it. */
    MPI_Aint base = (MPI_Aint)u->rptr[0];
    for (int i = 1; i < n; i++)
        if ((MPI_Aint)u->rptr[i] < base)
            base = (MPI_Aint)u->rptr[i];
    for (int i = 0; i < n; i++) {
        u->ldisp[i] = (MPI_Aint)(uintptr_t)u->lptr[i];
        u->rdisp[i] = (MPI_Aint)u->rptr[i] - base;
    }
    MPICHK(MPI_Type_create_hindexed_block(n, cnt, u->ldisp, MPI_BYTE, &lt));
    MPICHK(MPI_Type_create_hindexed_block(n, cnt, u->rdisp, MPI_BYTE, &rt));
    MPICHK(MPI_Type_commit(&lt));
    MPICHK(MPI_Type_commit(&rt));
    if (p->op == MPIXFER_OP_WRITE)
        MPICHK(MPI_Put(MPI_BOTTOM, 1, lt, u->target, base, 1, rt, u->win));
    else
        MPICHK(MPI_Get(MPI_BOTTOM, 1, lt, u->target, base, 1, rt, u->win));
    MPICHK(MPI_Type_free(&lt));
    MPICHK(MPI_Type_free(&rt));
    double t1 = MPI_Wtime();
    MPICHK(MPI_Win_flush(u->target, u->win));
    double t2 = MPI_Wtime();
    *post = t1 - t0;
    return t2 - t0;
}

/* The copy reference: memcpy of the same blocks (locally, or through the peer's mapping). */
static double memcpy_once(bench_t *b, const point_t *p, const run_t *u, double *post)
{
    (void)b;
    const size_t n = p->block;
    double t0 = MPI_Wtime();
    if (p->op == MPIXFER_OP_WRITE)
        for (size_t i = 0; i < p->batch; i++)
            memcpy((void *)u->rptr[i], u->lptr[i], n);
    else
        for (size_t i = 0; i < p->batch; i++)
            memcpy(u->lptr[i], (const void *)u->rptr[i], n);
    double t = MPI_Wtime() - t0;
    *post = t;
    return t;
}

#ifdef MPIXFER_BENCH_HAVE_CUDA
/* cudaMemcpy of the same blocks between the src kind and the dst kind. */
static double cudacopy_once(bench_t *b, const point_t *p, const run_t *u, double *post)
{
    (void)b;
    const size_t n = p->block;
    double t0 = MPI_Wtime();
    if (p->op == MPIXFER_OP_WRITE)
        for (size_t i = 0; i < p->batch; i++)
            CUCHK(cudaMemcpy((void *)u->rptr[i], u->lptr[i], n, cudaMemcpyDefault));
    else
        for (size_t i = 0; i < p->batch; i++)
            CUCHK(cudaMemcpy(u->lptr[i], (const void *)u->rptr[i], n, cudaMemcpyDefault));
    CUCHK(cudaDeviceSynchronize()); /* device-to-device copies may return early */
    double t = MPI_Wtime() - t0;
    *post = t;
    return t;
}
#endif

/*
 * The buffers of one method: @p local on the initiator (slot layout islot), @p remote on
 * its owner (slot layout tslot): the target, or the initiator itself for a local copy.
 * NULL where this rank holds no such buffer.
 */
static void method_buffers(bench_t *b, memkind_t mem, method_t m, mbuf_t **local,
                           mbuf_t **remote)
{
    *local = *remote = NULL;
    bool remote_is_self = m == M_COPY && mem != MEM_ARENA;
    mbuf_t *l = NULL, *r = NULL;
    switch (mem) {
    case MEM_FOREIGN:
        l = &b->fbuf;
        r = m == M_COPY ? &b->fcopy : &b->fbuf;
        break;
    case MEM_ARENA:
        l = &b->abuf;
        r = l;
        break;
    default:
        l = &b->xbuf;
        r = m == M_COPY ? &b->xcopy : &b->xbuf;
        break;
    }
    if (b->initiator) {
        *local = l;
        if (remote_is_self)
            *remote = r;
    } else if (b->target && !remote_is_self) {
        *remote = r;
    }
}

/* Initiator: the descriptor lists or pointer lists of method m at point p, into its run. */
static void method_setup(bench_t *b, const point_t *p, method_t m)
{
    const size_t bs = p->block;
    const size_t *is = b->islot, *ts = b->tslot;
    run_t *u = b->run[m];
    u->n = 0;
    u->total = 0;
    switch (m) {
    case M_MPIXFER:
    case M_LINK: {
        unsigned char *l = p->mem == MEM_FOREIGN ? b->fbuf.p
                           : p->mem == MEM_ARENA ? b->abuf.p
                                                 : b->xbuf.p;
        uint64_t r = p->mem == MEM_FOREIGN ? b->f_peer_addr
                     : p->mem == MEM_ARENA ? b->a_peer_addr
                                           : b->x_peer_addr;
        bool lv = p->mem == MEM_XPU && b->o->src_vram, rv = p->mem == MEM_XPU && b->o->dst_vram;
        uint32_t ldev = lv ? b->x_dev : 0, rdev = rv ? b->x_peer_dev : 0;
        u->src_type = lv ? MPIXFER_MEM_VRAM : MPIXFER_MEM_DRAM;
        u->dst_type = rv ? MPIXFER_MEM_VRAM : MPIXFER_MEM_DRAM;
        for (size_t i = 0; i < p->batch; i++) {
            b->src_descs[i] =
                (mpixfer_mem_desc_t){(uintptr_t)(l + (is ? is[i] : i) * bs), bs, ldev};
            b->dst_descs[i] =
                (mpixfer_mem_desc_t){(uintptr_t)(r + (ts ? ts[i] : i) * bs), bs, rdev};
        }
        u->fn = mpixfer_once;
        u->agent = m == M_LINK ? b->link_agent : b->agent;
        u->remote = m == M_LINK ? b->link_peer_name : b->peer_name;
        return;
    }
    case M_RAW:
    case M_HIDX: {
        unsigned char *l;
        MPI_Aint base;
        if (p->mem == MEM_ARENA) {
            l = b->abuf.p;
            base = b->a_peer_sdisp; /* displacement unit 1 from the peer's segment base */
            u->win = b->swin;
            u->target = b->s_peer;
        } else {
            l = p->mem == MEM_FOREIGN ? b->fbuf.p : b->xbuf.p;
            base = p->mem == MEM_FOREIGN ? b->f_peer_disp : b->x_peer_disp;
            u->win = b->dwin;
            u->target = b->peer;
        }
        for (size_t i = 0; i < p->batch; i++) {
            u->lptr[i] = l + (is ? is[i] : i) * bs;
            u->rptr[i] = (uintptr_t)(base + (MPI_Aint)((ts ? ts[i] : i) * bs));
        }
        u->fn = m == M_HIDX ? hidx_once : raw_once;
        return;
    }
    default: {
        unsigned char *l = p->mem == MEM_FOREIGN ? b->fbuf.p
                           : p->mem == MEM_ARENA ? b->abuf.p
                                                 : b->xbuf.p;
        unsigned char *r = p->mem == MEM_FOREIGN ? b->fcopy.p
                           : p->mem == MEM_ARENA ? b->s_peer_map
                                                 : b->xcopy.p;
        for (size_t i = 0; i < p->batch; i++) {
            u->lptr[i] = l + (is ? is[i] : i) * bs;
            u->rptr[i] = (uintptr_t)(r + (ts ? ts[i] : i) * bs);
        }
        u->fn = memcpy_once;
#ifdef MPIXFER_BENCH_HAVE_CUDA
        if (p->mem == MEM_XPU && b->gpu_real)
            u->fn = cudacopy_once;
#endif
        return;
    }
    }
}

/* Make local stores visible to the peer's RMA / loads (and theirs to ours). */
static void sync_windows(bench_t *b)
{
    if (b->has_dwin)
        MPICHK(MPI_Win_sync(b->dwin));
    if (b->has_swin)
        MPICHK(MPI_Win_sync(b->swin));
}

static bool method_runs(const bench_t *b, const point_t *p, method_t m)
{
    /* Alike on every rank (each active method is checked collectively). */
    if (m == M_HIDX && (p->batch < 2 || p->mem == MEM_XPU || b->o->link))
        return false; /* with --link: not what is compared, and it costs the rounds time */
    if (m == M_LINK)
        return b->o->link && p->mem == MEM_FOREIGN;
    return !(p->mem == MEM_XPU && m == M_RAW && !b->x_raw);
}

/*
 * Check one method at one point: the data source holds the stream, the receiving side is
 * scrambled, one request moves the stream, the receiver verifies it.
 */
static void verify_method(bench_t *b, point_t *p, method_t m, uint64_t seed)
{
    const bool write = p->op == MPIXFER_OP_WRITE;
    const size_t bytes = p->block * p->batch;
    mbuf_t *local, *remote;
    method_buffers(b, p->mem, m, &local, &remote);

    /* WRITE: local -> remote; READ: remote -> local. */
    mbuf_t *src = write ? local : remote, *dst = write ? remote : local;
    const size_t *src_slots = write ? b->islot : b->tslot;
    const size_t *dst_slots = write ? b->tslot : b->islot;
    if (src)
        buf_fill(b, src, p->block, p->batch, src_slots, seed);
    if (dst)
        buf_scramble(dst, bytes, (int)m);
    if (b->initiator)
        method_setup(b, p, m);
    sync_windows(b);
    MPICHK(MPI_Barrier(MPI_COMM_WORLD));

    double dummy;
    if (b->initiator)
        (void)b->run[m]->fn(b, p, b->run[m], &dummy);
    phase_end(b);
    bool ok = true;
    if (dst) {
        sync_windows(b);
        size_t bad = buf_verify(b, dst, p->block, p->batch, dst_slots, seed);
        if (bad != SIZE_MAX) {
            fprintf(stderr,
                    "mpixfer-bench[rank %d]: %s %s %s: destination byte %zu (slot %zu, "
                    "offset %zu) does not match the source pattern\n",
                    b->rank, mem_label(b, p->mem), method_label(b, p, m),
                    write ? "write" : "read", bad, bad / p->block, bad % p->block);
            ok = false;
        }
        dst->tag = seed; /* it holds the stream now */
    }
    agree(ok, method_label(b, p, m), p);
}

/* Run n timed requests of one method. */
static void timed_requests(bench_t *b, const point_t *p, run_t *u, long n)
{
    double t0 = MPI_Wtime();
    for (long i = 0; i < n; i++, u->n++)
        u->lat[u->n] = u->fn(b, p, u, &u->post[u->n]);
    u->total += MPI_Wtime() - t0;
}

/* Method a's bandwidth over method ref's, paired by rounds: the median over rounds of the
 * ratio of their median requests in the same round (see point_t.paired). NAN with fewer
 * than 3 rounds. */
static double paired_ratio(const bench_t *b, const long *iters, long rounds, method_t a,
                           method_t ref)
{
    double ratios[10], tmp_a[MAX_ITERS / 2 + 1], tmp_r[MAX_ITERS / 2 + 1];
    int nr = 0;
    if (rounds < 3)
        return NAN;
    for (long r = 0; r < rounds && nr < 10; r++) {
        long as = iters[a] * r / rounds, an = iters[a] * (r + 1) / rounds - as;
        long rs = iters[ref] * r / rounds, rn = iters[ref] * (r + 1) / rounds - rs;
        if (an < 1 || rn < 1 || an > MAX_ITERS / 2 || rn > MAX_ITERS / 2)
            continue;
        memcpy(tmp_a, b->run[a]->lat + as, (size_t)an * sizeof *tmp_a);
        memcpy(tmp_r, b->run[ref]->lat + rs, (size_t)rn * sizeof *tmp_r);
        qsort(tmp_a, (size_t)an, sizeof *tmp_a, cmp_double);
        qsort(tmp_r, (size_t)rn, sizeof *tmp_r, cmp_double);
        if (tmp_a[(an - 1) / 2] > 0)
            ratios[nr++] = tmp_r[(rn - 1) / 2] / tmp_a[(an - 1) / 2];
    }
    if (nr < 3)
        return NAN;
    qsort(ratios, (size_t)nr, sizeof *ratios, cmp_double);
    return ratios[(nr - 1) / 2];
}

/*
 * Initiator: warm every method up (and size its run from the warm-up when adaptive), then
 * the timed requests in rounds, every method in each round, so that a change of load on
 * the machine hits every method alike.
 */
static void timed_methods(bench_t *b, point_t *p, const bool *active)
{
    const opts_t *o = b->o;
    long iters[M_COUNT] = {0}, most = 0;
    double dummy;

    for (int m = 0; m < M_COUNT; m++) {
        if (!active[m])
            continue;
        run_t *u = b->run[m];
        long w = 0, wmin = o->warmup >= 0 ? o->warmup : 1;
        double t0 = MPI_Wtime(), el = 0;
        /* Fixed warm-up when asked; else at least 1 (the checked request before warmed
         * up too), for a tenth of the budget, at most 100. */
        while (w < wmin || (o->warmup < 0 && el < o->budget / 10 && w < 100) ||
               (w == 0 && !o->iters)) {
            (void)u->fn(b, p, u, &dummy);
            w++;
            el = MPI_Wtime() - t0;
        }
        if (o->iters) {
            iters[m] = o->iters;
        } else {
            double est = el / (double)w, want = est > 0 ? o->budget / est : MAX_ITERS;
            /* At least 10: a median of fewer requests of tens of ms moves by 10-20 % on a
             * busy 2-core machine, and the targets compare such medians. */
            iters[m] = want < 10 ? 10 : want > MAX_ITERS ? MAX_ITERS : (long)want;
        }
        if (iters[m] > most)
            most = iters[m];
    }
    /* Fine interleaving: a slow drift of the machine's speed hits every method alike. */
    long rounds = most < 10 ? most : 10;
    /* The order rotates from round to round: each method follows each other one equally
     * often, so none always runs on the caches another just cooled or warmed (with a fixed
     * order mpixfer always ran right after the memcpy reference had swept the caches). */
    for (long r = 0; r < rounds; r++)
        for (int k = 0; k < M_COUNT; k++) {
            int m = (int)((k + r) % M_COUNT);
            if (!active[m])
                continue;
            long n = iters[m] * (r + 1) / rounds - iters[m] * r / rounds;
            timed_requests(b, p, b->run[m], n);
        }
    p->paired = active[M_MPIXFER] && active[M_RAW]
                    ? paired_ratio(b, iters, rounds, M_MPIXFER, M_RAW)
                    : NAN;
    p->link_paired = active[M_LINK] && active[M_MPIXFER]
                         ? paired_ratio(b, iters, rounds, M_LINK, M_MPIXFER)
                         : NAN;
    for (int m = 0; m < M_COUNT; m++) {
        if (!active[m])
            continue;
        run_t *u = b->run[m];
        summarise(u->lat, u->post, u->n, u->total, p->block * p->batch, &p->r[m]);
        p->r[m].iters = u->n;
    }
}

static void run_point(bench_t *b, point_t *p, int idx)
{
    const uint64_t seed = 0x5EED0000ULL + (uint64_t)idx;
    bool active[M_COUNT];

    /* Slots: pair i joins initiator slot islot[i] and target slot tslot[i]. */
    b->islot = b->tslot = NULL;
    if (b->islot_v == NULL) {
        /* a rank without a partner: collectives only */
    } else if (p->pattern == PAT_SCATTERED) {
        permute(b->islot_v, p->batch, mix64(b->o->seed * 7919 + (uint64_t)idx * 2));
        permute(b->tslot_v, p->batch, mix64(b->o->seed * 7919 + (uint64_t)idx * 2 + 1));
        b->islot = b->islot_v;
        b->tslot = b->tslot_v;
    } else if (p->pattern == PAT_REVERSE) {
        for (size_t i = 0; i < p->batch; i++)
            b->tslot_v[i] = p->batch - 1 - i;
        b->tslot = b->tslot_v;
    }

    /* Every method moves the right bytes to the right places, one after the other... */
    for (int m = 0; m < M_COUNT; m++) {
        active[m] = method_runs(b, p, (method_t)m);
        if (active[m])
            verify_method(b, p, (method_t)m, seed);
    }
    /* ...then all are timed together (the target serves until the initiator is done). */
    MPICHK(MPI_Barrier(MPI_COMM_WORLD));
    if (b->initiator)
        timed_methods(b, p, active);
    phase_end(b);

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

static void print_table(const bench_t *b, const point_t *pts, int n, int pairs)
{
    printf("# GB/s: bytes of all timed requests / their wall time; p50 GB/s: from the median\n"
           "# request; post us: average time of the post (submit, or the Put/Get loop);\n"
           "# x raw, x copy: mpixfer's (and the link's) p50 GB/s over raw MPI's and the copy's\n");
    printf("%-5s %-9s %-9s %6s %5s %-10s %9s %9s %10s %10s %10s %10s %7s %7s%s\n", "op", "mem",
           "pattern", "block", "batch", "method", "GB/s", "p50 GB/s", "avg us", "p50 us",
           "p99 us", "post us", "x raw", "x copy", pairs > 1 ? "   agg GB/s" : "");
    for (int i = 0; i < n; i++) {
        const point_t *p = &pts[i];
        char bs[32];
        fmt_size(p->block, bs, sizeof bs);
        for (int m = 0; m < M_COUNT; m++) {
            const result_t *r = &p->r[m];
            if (!r->valid)
                continue;
            printf("%-5s %-9s %-9s %6s %5zu %-10s %9.3f %9.3f %10.2f %10.2f %10.2f %10.2f",
                   op_name(p->op), mem_label(b, p->mem), pattern_name[p->pattern], bs,
                   p->batch, method_label(b, p, (method_t)m), r->gbps, r->gbps_p50, r->avg_us,
                   r->p50_us, r->p99_us, r->post_us);
            if (m == M_MPIXFER || m == M_LINK) {
                if (p->r[M_RAW].valid)
                    printf(" %7.3f", ratio(r->gbps_p50, p->r[M_RAW].gbps_p50));
                else
                    printf(" %7s", "-");
                printf(" %7.3f", ratio(r->gbps_p50, p->r[M_COPY].gbps_p50));
            } else {
                printf(" %7s %7s", "", "");
            }
            if (pairs > 1)
                printf(" %10.3f", r->agg_gbps);
            printf("\n");
        }
    }
    fflush(stdout);
}

/* --------------------------------------------------------------- targets */

typedef struct {
    const char *key;
    const char *what;
    const char *unit; /* "x" for ratios, else "us", "ms", "GB/s" */
    bool ge;          /* value >= threshold passes; else value <= threshold */
    double threshold;
    bool measured;
    double value;
    char detail[200];
} target_t;

#define NTARGETS 6

static const point_t *find_point(const point_t *pts, int n, mpixfer_op_t op, memkind_t mem,
                                 pattern_t pat, size_t block, size_t batch)
{
    for (int i = 0; i < n; i++)
        if (pts[i].op == op && pts[i].mem == mem && pts[i].pattern == pat &&
            pts[i].block == block && pts[i].batch == batch)
            return &pts[i];
    return NULL;
}

static void eval_targets(const bench_t *b, const point_t *pts, int n, target_t *t)
{
    memset(t, 0, NTARGETS * sizeof *t);
    /* contiguous >= 1 MiB: worst mpixfer/raw over ops and blocks, per memory kind */
    for (int k = 0; k < 2; k++) {
        memkind_t mem = k == 0 ? MEM_FOREIGN : MEM_ARENA;
        t[k].key = k == 0 ? "contig_ge_1MiB_foreign" : "contig_ge_1MiB_arena";
        t[k].what = k == 0 ? "contiguous >= 1 MiB, foreign: mpixfer / raw MPI (dynamic window)"
                           : "contiguous >= 1 MiB, arena: mpixfer / raw MPI (shared window)";
        t[k].unit = "x";
        t[k].ge = true;
        t[k].threshold = 0.95;
        double worst_paired = NAN;
        for (int i = 0; i < n; i++) {
            const point_t *p = &pts[i];
            if (p->mem != mem || p->pattern != PAT_CONTIG || p->batch != 1 || p->block < MIB ||
                !p->r[M_MPIXFER].valid || !p->r[M_RAW].valid)
                continue;
            if (!isnan(p->paired) && !(p->paired >= worst_paired))
                worst_paired = p->paired;
            double v = ratio(p->r[M_MPIXFER].gbps_p50, p->r[M_RAW].gbps_p50);
            if (!t[k].measured || v < t[k].value) {
                char bs[32];
                fmt_size(p->block, bs, sizeof bs);
                t[k].value = v;
                snprintf(t[k].detail, sizeof t[k].detail,
                         "worst: %s %s, p50 %.2f vs %.2f GB/s; mean %.2f vs %.2f",
                         op_name(p->op), bs, p->r[M_MPIXFER].gbps_p50, p->r[M_RAW].gbps_p50,
                         p->r[M_MPIXFER].gbps, p->r[M_RAW].gbps);
            }
            t[k].measured = true;
        }
        /* The same points by paired rounds (see point_t.paired), reported beside. */
        size_t used = strlen(t[k].detail);
        if (t[k].measured && !isnan(worst_paired) && used < sizeof t[k].detail)
            snprintf(t[k].detail + used, sizeof t[k].detail - used,
                     "; worst paired per-round ratio %.3f", worst_paired);
    }
    /* 4096 scattered 16 KiB blocks, WRITE */
    const point_t *p = find_point(pts, n, MPIXFER_OP_WRITE, MEM_FOREIGN, PAT_SCATTERED, 16 * KIB, 4096);
    t[2] = (target_t){.key = "scattered_16KiB_x4096_foreign",
                      .what = "4096 scattered 16 KiB WRITE, foreign: mpixfer / raw per-op puts",
                      .unit = "x", .ge = true, .threshold = 0.95};
    if (p && p->r[M_MPIXFER].valid && p->r[M_RAW].valid) {
        t[2].measured = true;
        t[2].value = ratio(p->r[M_MPIXFER].gbps_p50, p->r[M_RAW].gbps_p50);
        snprintf(t[2].detail, sizeof t[2].detail, "p50 %.2f vs %.2f GB/s; mean %.2f vs %.2f",
                 p->r[M_MPIXFER].gbps_p50, p->r[M_RAW].gbps_p50, p->r[M_MPIXFER].gbps,
                 p->r[M_RAW].gbps);
    }
    p = find_point(pts, n, MPIXFER_OP_WRITE, MEM_ARENA, PAT_SCATTERED, 16 * KIB, 4096);
    t[3] = (target_t){.key = "scattered_16KiB_x4096_arena",
                      .what = "4096 scattered 16 KiB WRITE, arena: mpixfer / memcpy (shared mapping)",
                      .unit = "x", .ge = true, .threshold = 0.8};
    if (p && p->r[M_MPIXFER].valid && p->r[M_COPY].valid) {
        t[3].measured = true;
        t[3].value = ratio(p->r[M_MPIXFER].gbps_p50, p->r[M_COPY].gbps_p50);
        snprintf(t[3].detail, sizeof t[3].detail,
                 "p50 %.2f vs %.2f GB/s; mean %.2f vs %.2f; raw MPI p50 %.2f",
                 p->r[M_MPIXFER].gbps_p50, p->r[M_COPY].gbps_p50, p->r[M_MPIXFER].gbps,
                 p->r[M_COPY].gbps, p->r[M_RAW].gbps_p50);
    }
    /* one 8-byte descriptor: median submit+wait minus median put+flush */
    p = find_point(pts, n, MPIXFER_OP_WRITE, MEM_FOREIGN, PAT_CONTIG, 8, 1);
    t[4] = (target_t){.key = "latency_8B_foreign",
                      .what = "8-byte WRITE, foreign: mpixfer submit+wait - raw put+flush (p50)",
                      .unit = "us", .ge = false, .threshold = 2.0};
    if (p && p->r[M_MPIXFER].valid && p->r[M_RAW].valid) {
        t[4].measured = true;
        t[4].value = p->r[M_MPIXFER].p50_us - p->r[M_RAW].p50_us;
        snprintf(t[4].detail, sizeof t[4].detail,
                 "p50 %.2f vs %.2f us; avg %.2f vs %.2f us", p->r[M_MPIXFER].p50_us,
                 p->r[M_RAW].p50_us, p->r[M_MPIXFER].avg_us, p->r[M_RAW].avg_us);
    }
    /* 40000 descriptors posted */
    p = find_point(pts, n, MPIXFER_OP_WRITE, MEM_FOREIGN, PAT_SCATTERED, 4 * KIB, 40000);
    t[5] = (target_t){.key = "post_40000_foreign",
                      .what = "40000 scattered 4 KiB WRITE, foreign: submit time (p50)",
                      .unit = "us", .ge = false, .threshold = 5000.0};
    if (p && p->r[M_MPIXFER].valid) {
        t[5].measured = true;
        t[5].value = p->r[M_MPIXFER].post_p50_us;
        const point_t *pa =
            find_point(pts, n, MPIXFER_OP_WRITE, MEM_ARENA, PAT_SCATTERED, 4 * KIB, 40000);
        int len = snprintf(t[5].detail, sizeof t[5].detail,
                           "avg %.0f us; submit+wait p50 %.0f us; raw put loop p50 %.0f us",
                           p->r[M_MPIXFER].post_us, p->r[M_MPIXFER].p50_us,
                           p->r[M_RAW].post_p50_us);
        if (pa && pa->r[M_MPIXFER].valid && len > 0 && (size_t)len < sizeof t[5].detail)
            snprintf(t[5].detail + len, sizeof t[5].detail - (size_t)len,
                     "; arena submit p50 %.0f us", pa->r[M_MPIXFER].post_p50_us);
    }
    (void)b;
}

static bool target_pass(const target_t *t)
{
    return t->measured && (t->ge ? t->value >= t->threshold : t->value <= t->threshold);
}

static void print_targets(const target_t *t)
{
    printf("\n# targets (issue 4; reported, never a failure of the run; ratios of median-request "
           "bandwidth)\n");
    for (int i = 0; i < NTARGETS; i++) {
        if (!t[i].measured) {
            printf("  %-70s   not measured in this run\n", t[i].what);
            continue;
        }
        if (t[i].unit[0] == 'x')
            printf("  %-70s %8.3f  (target %s %.2f)  %s  [%s]\n", t[i].what, t[i].value,
                   t[i].ge ? ">=" : "<=", t[i].threshold, target_pass(&t[i]) ? "PASS" : "MISS",
                   t[i].detail);
        else
            printf("  %-70s %8.2f us (target %s %.0f us)  %s  [%s]\n", t[i].what, t[i].value,
                   t[i].ge ? ">=" : "<=", t[i].threshold, target_pass(&t[i]) ? "PASS" : "MISS",
                   t[i].detail);
    }
    fflush(stdout);
}

/* ------------------------------------------------------------------ JSON */

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

static void json_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.6g", v);
    else
        fputs("null", f);
}

/* The members of a "targets" object, each on its own line after @p indent. The unit is
 * "ratio" for ratios, else the target's own ("us", "ms", "GB/s"). */
static void json_targets(FILE *f, const target_t *t, int n, const char *indent)
{
    for (int i = 0; i < n; i++) {
        fprintf(f, "%s\n%s\"%s\": {\"description\": ", i ? "," : "", indent, t[i].key);
        json_string(f, t[i].what);
        fprintf(f, ", \"measured\": %s, \"value\": ", t[i].measured ? "true" : "false");
        if (t[i].measured)
            json_num(f, t[i].value);
        else
            fputs("null", f);
        fprintf(f, ", \"unit\": \"%s\", \"cmp\": \"%s\", \"threshold\": ",
                t[i].unit[0] == 'x' ? "ratio" : t[i].unit, t[i].ge ? ">=" : "<=");
        json_num(f, t[i].threshold);
        fprintf(f, ", \"pass\": %s, \"detail\": ",
                t[i].measured ? (target_pass(&t[i]) ? "true" : "false") : "null");
        json_string(f, t[i].detail);
        fputc('}', f);
    }
}

static void json_link(FILE *f, const bench_t *b, const point_t *pts, int n);

static void write_json(const char *path, const point_t *pts, int n, const bench_t *b,
                       const target_t *t, int argc, char **argv, const char *gpu_path)
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
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0)
        strcpy(host, "unknown");
    const opts_t *o = b->o;

    fprintf(f, "{\n  \"meta\": {\n    \"mpi_library\": ");
    json_string(f, lib);
    fprintf(f, ",\n    \"mpixfer_version\": ");
    json_string(f, mpixfer_version());
    fprintf(f, ",\n    \"ranks\": %d,\n    \"pairs\": %d,\n    \"date\": \"%s\",\n    \"host\": ",
            b->size, b->size / 2, date);
    json_string(f, host);
    fprintf(f, ",\n    \"gpu_path\": ");
    json_string(f, gpu_path);
    fprintf(f, ",\n    \"gpu_emulated\": %s,\n    \"command\": \"", b->gpu_emulated ? "true" : "false");
    for (int i = 0; i < argc; i++) {
        if (i)
            fputc(' ', f);
        for (const char *c = argv[i]; *c; c++)
            if (*c == '"' || *c == '\\')
                fprintf(f, "\\%c", *c);
            else if ((unsigned char)*c >= 0x20)
                fputc(*c, f);
    }
    fprintf(f, "\",\n    \"options\": {\"pattern\": \"%s\", \"quick\": %s, \"op\": \"%s\", "
               "\"mem\": [",
            pattern_name[o->pattern], o->quick ? "true" : "false",
            o->do_read && o->do_write ? "both" : o->do_read ? "read" : "write");
    bool first = true;
    for (int m = 0; m < MEM_COUNT; m++)
        if (b->has_mem[m]) {
            fprintf(f, "%s\"%s\"", first ? "" : ", ", mem_label(b, (memkind_t)m));
            first = false;
        }
    fprintf(f, "], \"src_mem\": \"%s\", \"dst_mem\": \"%s\", \"max_bytes\": %zu, "
               "\"arena_size\": %zu, \"post_batch\": %zu, \"iters\": %ld, \"warmup\": %ld, "
               "\"budget_s\": %g, \"seed\": %" PRIu64 "}\n  },\n  \"results\": [",
            o->src_vram ? "vram" : "dram", o->dst_vram ? "vram" : "dram", o->max_bytes,
            b->arena_size, o->post_batch, o->iters, o->warmup, o->budget, o->seed);
    first = true;
    for (int i = 0; i < n; i++) {
        const point_t *p = &pts[i];
        for (int m = 0; m < M_COUNT; m++) {
            const result_t *r = &p->r[m];
            if (!r->valid)
                continue;
            fprintf(f,
                    "%s\n    {\"op\": \"%s\", \"mem\": \"%s\", \"pattern\": \"%s\", "
                    "\"set\": \"%s\", \"block\": %zu, \"batch\": %zu, \"batch_nominal\": %zu, "
                    "\"method\": \"%s\", ",
                    first ? "" : ",", op_name(p->op), mem_label(b, p->mem),
                    pattern_name[p->pattern], p->tag, p->block, p->batch, p->batch_nominal,
                    method_label(b, p, (method_t)m));
            if (m == M_COPY && p->mem == MEM_XPU)
                fprintf(f, "\"copy\": \"%s\", ", b->copy_kind[p->op]);
            fprintf(f, "\"iters\": %ld, \"gbps\": ", r->iters);
            json_num(f, r->gbps);
            fprintf(f, ", \"avg_us\": ");
            json_num(f, r->avg_us);
            fprintf(f, ", \"p50_us\": ");
            json_num(f, r->p50_us);
            fprintf(f, ", \"p99_us\": ");
            json_num(f, r->p99_us);
            fprintf(f, ", \"post_us\": ");
            json_num(f, r->post_us);
            fprintf(f, ", \"post_p50_us\": ");
            json_num(f, r->post_p50_us);
            fprintf(f, ", \"gbps_p50\": ");
            json_num(f, r->gbps_p50);
            fprintf(f, ", \"agg_gbps\": ");
            json_num(f, r->agg_gbps);
            fprintf(f, "}");
            first = false;
        }
    }
    fprintf(f, "\n  ],\n  \"targets\": {");
    json_targets(f, t, NTARGETS, "    ");
    fprintf(f, "\n  }");
    if (b->reg.count > 0) {
        fprintf(f, ",\n  \"registration\": {\"regions\": %d, \"region_bytes\": 4096, "
                   "\"one_call\": {\"register_ms\": ", b->reg.count);
        json_num(f, b->reg.reg_one_ms);
        fprintf(f, ", \"deregister_ms\": ");
        json_num(f, b->reg.dereg_one_ms);
        fprintf(f, ", \"window_attachments\": %ld}, \"one_call_each\": {\"register_ms\": ",
                b->reg.attach_one);
        json_num(f, b->reg.reg_each_ms);
        fprintf(f, ", \"deregister_ms\": ");
        json_num(f, b->reg.dereg_each_ms);
        fprintf(f, ", \"window_attachments\": %ld}}", b->reg.attach_each);
    }
    json_link(f, b, pts, n);
    fprintf(f, "\n}\n");
    if (fclose(f) != 0)
        fprintf(stderr, "mpixfer-bench: error writing %s\n", path);
}

/* ------------------------------------------------------------------- setup */

/* VRAM: is there a device (or emulation)? Decides for every rank alike. Returns false to
 * skip. */
static bool gpu_probe(bench_t *b)
{
    const char *emu = getenv("MPIXFER_GPU_EMULATE");
    int ok = 0;
    b->gpu_emulated = emu != NULL && *emu != '\0' && strcmp(emu, "0") != 0;
    if (b->gpu_emulated) {
        ok = 1;
    } else {
#ifdef MPIXFER_BENCH_HAVE_CUDA
        int n = 0;
        if (cudaGetDeviceCount(&n) == cudaSuccess && n > 0) {
            ok = 1;
            b->gpu_real = true;
            /* one device per process of a node, round robin */
            MPI_Comm nc;
            int lr = 0;
            MPICHK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &nc));
            MPI_Comm_rank(nc, &lr);
            MPI_Comm_free(&nc);
            b->x_dev = (uint32_t)(lr % n);
            CUCHK(cudaSetDevice((int)b->x_dev));
        } else {
            (void)cudaGetLastError();
        }
#endif
    }
    int all = 0;
    MPICHK(MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    if (!all)
        b->gpu_real = false;
    return all != 0;
}

static void xpu_alloc(bench_t *b, mbuf_t *m, bool vram, size_t len)
{
    m->len = len;
    m->tag = 0;
    m->dev = vram && b->gpu_real;
    if (!m->dev) {
        m->p = alloc_touched(len);
        return;
    }
#ifdef MPIXFER_BENCH_HAVE_CUDA
    void *p = NULL;
    CUCHK(cudaMalloc(&p, len));
    CUCHK(cudaMemset(p, 0, len));
    m->p = p;
#endif
}

static void xpu_free(mbuf_t *m)
{
    if (!m->p)
        return;
#ifdef MPIXFER_BENCH_HAVE_CUDA
    if (m->dev) {
        cudaFree(m->p);
        m->p = NULL;
        return;
    }
#endif
    free(m->p);
    m->p = NULL;
}

static void check_advertised(bench_t *b, uint64_t addr, mpixfer_mem_type_t type, uint32_t dev,
                             const char *what)
{
    mpixfer_mem_desc_t probe = {(uintptr_t)addr, b->pool, dev};
    mpixfer_mem_descs_t probes = {type, &probe, 1};
    if (!mpixfer_check_remote_descs(b->agent, b->peer_name, &probes))
        die("after bootstrap, %s does not advertise its %zu-byte %s buffer at 0x%" PRIx64,
            b->peer_name, b->pool, what, addr);
}

/* The arena kind needs every pair on one node (the shared window); false: skip it. */
static bool arena_pairs_on_node(bench_t *b)
{
    MPICHK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL,
                               &b->node_comm));
    MPI_Group gw, gn;
    MPICHK(MPI_Comm_group(MPI_COMM_WORLD, &gw));
    MPICHK(MPI_Comm_group(b->node_comm, &gn));
    int peer = b->peer >= 0 ? b->peer : b->rank, np = MPI_UNDEFINED;
    MPICHK(MPI_Group_translate_ranks(gw, 1, &peer, gn, &np));
    MPI_Group_free(&gw);
    MPI_Group_free(&gn);
    int ok = np != MPI_UNDEFINED, all = 0;
    MPICHK(MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    return all != 0;
}

/* ------------------------------------------------------------------- link */

/* Poll until the peer's whole foreign buffer is usable over the link; ms since @p t0. */
static double link_wait_usable(bench_t *b, double t0)
{
    mpixfer_mem_desc_t probe = {(uintptr_t)b->f_peer_addr, b->pool, 0};
    mpixfer_mem_descs_t probes = {MPIXFER_MEM_DRAM, &probe, 1};
    /* A short sleep between polls: a spinning poller here took the core the peer's link
     * thread needed to answer the handshake (2 cores, 2 ranks). */
    const struct timespec pause = {0, 20000};
    while (!mpixfer_check_remote_descs(b->link_agent, b->link_peer_name, &probes)) {
        if (MPI_Wtime() - t0 > 30)
            die("%s did not become usable over the link within 30 s", b->link_peer_name);
        nanosleep(&pause, NULL);
    }
    return (MPI_Wtime() - t0) * 1e3;
}

/*
 * Both ranks of a pair: a context on MPI_COMM_SELF with an agent that registers the same
 * foreign buffer as the in-job agent, the descriptor blobs swapped over MPI_COMM_WORLD
 * (the side channel), each loading the other and waiting until it is usable. Ranks without
 * a partner take no part.
 */
static void link_setup(bench_t *b)
{
    mpixfer_agent_config_t cfg = MPIXFER_AGENT_CONFIG_INIT;
    mpixfer_mem_desc_t reg = {(uintptr_t)b->fbuf.p, b->pool, 0};
    mpixfer_mem_descs_t regs = {MPIXFER_MEM_DRAM, &reg, 1};
    char name[64];
    void *blob = NULL;
    size_t len = 0;
    unsigned long long mine, theirs = 0;

    if (b->peer < 0)
        return;
    XF(mpixfer_context_create(MPI_COMM_SELF, &b->link_ctx));
    snprintf(name, sizeof name, "link-%d", b->rank);
    snprintf(b->link_peer_name, sizeof b->link_peer_name, "link-%d", b->peer);
    cfg.name = name;
    XF(mpixfer_agent_create(b->link_ctx, &cfg, &b->link_agent));
    XF(mpixfer_register_memory(b->link_agent, &regs));
    XF(mpixfer_get_local_agent_desc(b->link_agent, &blob, &len));
    mine = len;
    MPICHK(MPI_Sendrecv(&mine, 1, MPI_UNSIGNED_LONG_LONG, b->peer, 71, &theirs, 1,
                        MPI_UNSIGNED_LONG_LONG, b->peer, 71, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    if (len > INT_MAX || theirs == 0 || theirs > INT_MAX)
        die("descriptor blobs of %zu and %llu bytes", len, theirs);
    b->link_peer_blob = malloc((size_t)theirs);
    if (b->link_peer_blob == NULL)
        die("out of memory");
    b->link_peer_blob_len = (size_t)theirs;
    MPICHK(MPI_Sendrecv(blob, (int)len, MPI_BYTE, b->peer, 72, b->link_peer_blob, (int)theirs,
                        MPI_BYTE, b->peer, 72, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    mpixfer_free(blob);
    double t0 = MPI_Wtime();
    XF(mpixfer_load_remote_agent(b->link_agent, b->link_peer_name, b->link_peer_blob,
                                 b->link_peer_blob_len));
    b->link.first_ms = link_wait_usable(b, t0);
}

/*
 * Initiator: n fresh loads of the peer's blob (invalidate, then load and poll until
 * usable), each timed from the load; the target serves meanwhile. The link is usable
 * afterwards, as before.
 */
static void link_loads(bench_t *b)
{
    MPICHK(MPI_Barrier(MPI_COMM_WORLD));
    if (b->initiator) {
        long n = b->o->link_loads;
        double *ms = calloc((size_t)n, sizeof *ms);
        if (ms == NULL)
            die("out of memory");
        for (long i = 0; i < n; i++) {
            XF(mpixfer_invalidate_remote_agent(b->link_agent, b->link_peer_name));
            double t0 = MPI_Wtime();
            XF(mpixfer_load_remote_agent(b->link_agent, b->link_peer_name, b->link_peer_blob,
                                         b->link_peer_blob_len));
            ms[i] = link_wait_usable(b, t0);
        }
        qsort(ms, (size_t)n, sizeof *ms, cmp_double);
        long i99 = (long)ceil(0.99 * (double)n) - 1; /* nearest rank */
        b->link.p50_ms = ms[(n - 1) / 2];
        b->link.p99_ms = ms[i99 < 0 ? 0 : i99];
        b->link.n = n;
        free(ms);
    }
    phase_end(b);
}

static void link_teardown(bench_t *b)
{
    mpixfer_mem_desc_t reg = {(uintptr_t)b->fbuf.p, b->pool, 0};
    mpixfer_mem_descs_t regs = {MPIXFER_MEM_DRAM, &reg, 1};

    if (b->link_ctx == NULL)
        return;
    XF(mpixfer_deregister_memory(b->link_agent, &regs));
    XF(mpixfer_agent_destroy(b->link_agent));
    XF(mpixfer_context_destroy(b->link_ctx));
    free(b->link_peer_blob);
    b->link_ctx = NULL;
}

/* Which link data mover ran, from the initiator's counters. */
static const char *link_mover(const mpixfer_stats_t *s)
{
    if (s->link_copies > 0 && s->link_ops > 0)
        return "cma+ucx";
    if (s->link_copies > 0)
        return "cma";
    return s->link_ops > 0 ? "ucx" : "none";
}

#define NLINK_TARGETS 10

/* Issue 13's link targets: every one the link against the in-job path of this run. */
static void eval_link_targets(const bench_t *b, const point_t *pts, int n, target_t *t)
{
    static const struct {
        const char *key, *what, *unit;
        mpixfer_op_t op;
        pattern_t pat;
        size_t block, batch;
        bool ge;
        double threshold;
    } def[NLINK_TARGETS - 1] = {
        {"link_scattered_16KiB_x1024_write_ratio", "link 1024 x 16 KiB scattered WRITE / in-job",
         "x", MPIXFER_OP_WRITE, PAT_SCATTERED, 16 * KIB, 1024, true, 0.9},
        {"link_scattered_16KiB_x1024_write_gbps", "link 1024 x 16 KiB scattered WRITE", "GB/s",
         MPIXFER_OP_WRITE, PAT_SCATTERED, 16 * KIB, 1024, true, 3.0},
        {"link_scattered_16KiB_x1024_read_ratio", "link 1024 x 16 KiB scattered READ / in-job",
         "x", MPIXFER_OP_READ, PAT_SCATTERED, 16 * KIB, 1024, true, 0.9},
        {"link_scattered_16KiB_x1024_read_gbps", "link 1024 x 16 KiB scattered READ", "GB/s",
         MPIXFER_OP_READ, PAT_SCATTERED, 16 * KIB, 1024, true, 3.0},
        {"link_contig_1MiB_write_ratio", "link contiguous 1 MiB WRITE / in-job", "x",
         MPIXFER_OP_WRITE, PAT_CONTIG, MIB, 1, true, 0.9},
        {"link_contig_1MiB_read_ratio", "link contiguous 1 MiB READ / in-job", "x",
         MPIXFER_OP_READ, PAT_CONTIG, MIB, 1, true, 0.9},
        {"link_contig_16MiB_write_ratio", "link contiguous 16 MiB WRITE / in-job", "x",
         MPIXFER_OP_WRITE, PAT_CONTIG, 16 * MIB, 1, true, 0.9},
        {"link_contig_16MiB_read_ratio", "link contiguous 16 MiB READ / in-job", "x",
         MPIXFER_OP_READ, PAT_CONTIG, 16 * MIB, 1, true, 0.9},
        {"link_latency_8B_write_ratio", "link 8-byte WRITE latency (p50) / in-job", "x",
         MPIXFER_OP_WRITE, PAT_CONTIG, 8, 1, false, 2.0},
    };
    memset(t, 0, NLINK_TARGETS * sizeof *t);
    for (int k = 0; k < NLINK_TARGETS - 1; k++) {
        t[k] = (target_t){.key = def[k].key, .what = def[k].what, .unit = def[k].unit,
                          .ge = def[k].ge, .threshold = def[k].threshold};
        const point_t *p =
            find_point(pts, n, def[k].op, MEM_FOREIGN, def[k].pat, def[k].block, def[k].batch);
        if (p == NULL || !p->r[M_LINK].valid || !p->r[M_MPIXFER].valid)
            continue;
        const result_t *l = &p->r[M_LINK], *j = &p->r[M_MPIXFER];
        t[k].measured = true;
        if (def[k].block == 8) {
            t[k].value = ratio(l->p50_us, j->p50_us);
            snprintf(t[k].detail, sizeof t[k].detail, "p50 %.2f vs %.2f us; avg %.2f vs %.2f us",
                     l->p50_us, j->p50_us, l->avg_us, j->avg_us);
            continue;
        }
        t[k].value = def[k].unit[0] == 'x' ? ratio(l->gbps_p50, j->gbps_p50) : l->gbps_p50;
        snprintf(t[k].detail, sizeof t[k].detail,
                 "p50 %.2f vs %.2f GB/s in-job; mean %.2f vs %.2f; paired per-round ratio %.3f",
                 l->gbps_p50, j->gbps_p50, l->gbps, j->gbps, p->link_paired);
    }
    target_t *u = &t[NLINK_TARGETS - 1];
    *u = (target_t){.key = "link_load_usable_p50_ms",
                    .what = "link: load by blob until usable, p50",
                    .unit = "ms",
                    .ge = false,
                    .threshold = 20.0};
    if (b->link.n > 0) {
        u->measured = true;
        u->value = b->link.p50_ms;
        snprintf(u->detail, sizeof u->detail, "%ld fresh loads: p99 %.2f ms; first load %.2f ms",
                 b->link.n, b->link.p99_ms, b->link.first_ms);
    }
}

static void print_link(const bench_t *b, const point_t *pts, int n)
{
    const mpixfer_stats_t *s = &b->link.stats;
    const char *env = getenv("MPIXFER_LINK_COPY");
    target_t t[NLINK_TARGETS];

    printf("\n# link (issue 13): each rank's own context on MPI_COMM_SELF, joined by "
           "descriptor blob; data mover %s (link_copies %" PRIu64 ", link_ops %" PRIu64
           "; MPIXFER_LINK_COPY=%s)\n",
           link_mover(s), s->link_copies, s->link_ops, env ? env : "(unset: auto)");
    printf("%-5s %-9s %6s %5s %11s %11s %8s %8s %10s %10s\n", "op", "pattern", "block", "batch",
           "link GB/s", "in-job GB/s", "x in-job", "paired", "link p50us", "in-job p50us");
    for (int i = 0; i < n; i++) {
        const point_t *p = &pts[i];
        const result_t *l = &p->r[M_LINK], *j = &p->r[M_MPIXFER];
        char bs[32];
        if (!l->valid || !j->valid)
            continue;
        fmt_size(p->block, bs, sizeof bs);
        printf("%-5s %-9s %6s %5zu %11.3f %11.3f %8.3f %8.3f %10.2f %10.2f\n", op_name(p->op),
               pattern_name[p->pattern], bs, p->batch, l->gbps_p50, j->gbps_p50,
               ratio(l->gbps_p50, j->gbps_p50), p->link_paired, l->p50_us, j->p50_us);
    }
    eval_link_targets(b, pts, n, t);
    printf("\n# link targets (issue 13; reported, never a failure of the run; p50 GB/s)\n");
    for (int i = 0; i < NLINK_TARGETS; i++) {
        if (!t[i].measured) {
            printf("  %-50s   not measured in this run\n", t[i].what);
            continue;
        }
        printf("  %-50s %8.3f %-4s (target %s %.2f%s%s)  %s  [%s]\n", t[i].what, t[i].value,
               t[i].unit[0] == 'x' ? "" : t[i].unit, t[i].ge ? ">=" : "<=", t[i].threshold,
               t[i].unit[0] == 'x' ? "" : " ", t[i].unit[0] == 'x' ? "" : t[i].unit,
               target_pass(&t[i]) ? "PASS" : "MISS", t[i].detail);
    }
    fflush(stdout);
}

static void json_link(FILE *f, const bench_t *b, const point_t *pts, int n)
{
    const mpixfer_stats_t *s = &b->link.stats;
    const char *env = getenv("MPIXFER_LINK_COPY");
    target_t t[NLINK_TARGETS];

    if (!b->o->link)
        return;
    eval_link_targets(b, pts, n, t);
    fprintf(f, ",\n  \"link\": {\"mover\": \"%s\", \"link_copy_env\": ", link_mover(s));
    json_string(f, env ? env : "");
    fprintf(f, ", \"link_copies\": %" PRIu64 ", \"link_ops\": %" PRIu64 ", \"load_usable_ms\": "
               "{\"loads\": %ld, \"p50\": ",
            s->link_copies, s->link_ops, b->link.n);
    json_num(f, b->link.p50_ms);
    fprintf(f, ", \"p99\": ");
    json_num(f, b->link.p99_ms);
    fprintf(f, ", \"first\": ");
    json_num(f, b->link.first_ms);
    fprintf(f, "},\n    \"points\": [");
    bool first = true;
    for (int i = 0; i < n; i++) {
        const point_t *p = &pts[i];
        const result_t *l = &p->r[M_LINK], *j = &p->r[M_MPIXFER];
        if (!l->valid || !j->valid)
            continue;
        fprintf(f,
                "%s\n      {\"op\": \"%s\", \"pattern\": \"%s\", \"block\": %zu, \"batch\": %zu, "
                "\"link_gbps_p50\": ",
                first ? "" : ",", op_name(p->op), pattern_name[p->pattern], p->block, p->batch);
        json_num(f, l->gbps_p50);
        fprintf(f, ", \"injob_gbps_p50\": ");
        json_num(f, j->gbps_p50);
        fprintf(f, ", \"ratio\": ");
        json_num(f, ratio(l->gbps_p50, j->gbps_p50));
        fprintf(f, ", \"paired\": ");
        json_num(f, p->link_paired);
        fprintf(f, ", \"link_p50_us\": ");
        json_num(f, l->p50_us);
        fprintf(f, ", \"injob_p50_us\": ");
        json_num(f, j->p50_us);
        fprintf(f, "}");
        first = false;
    }
    fprintf(f, "\n    ],\n    \"targets\": {");
    json_targets(f, t, NLINK_TARGETS, "      ");
    fprintf(f, "\n    }\n  }");
}

/* ------------------------------------------------------------------- main */

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

    bench_t b = {0};
    b.o = &o;
    b.rank = g_rank;
    b.size = size;
    b.initiator = g_rank % 2 == 0 && g_rank + 1 < size;
    b.target = g_rank % 2 == 1;
    b.peer = b.initiator ? g_rank + 1 : b.target ? g_rank - 1 : -1;
    b.node_comm = MPI_COMM_NULL;
    b.copy_kind[MPIXFER_OP_WRITE] = o.src_vram ? (o.dst_vram ? "D2D" : "D2H")
                                               : (o.dst_vram ? "H2D" : "H2H");
    b.copy_kind[MPIXFER_OP_READ] = o.dst_vram ? (o.src_vram ? "D2D" : "D2H")
                                              : (o.src_vram ? "H2D" : "H2H");

    if (o.mem[MEM_XPU] && !gpu_probe(&b)) {
        if (g_rank == 0)
            printf("no GPU: skipping VRAM (set MPIXFER_GPU_EMULATE=1 to run the VRAM path on "
                   "host memory)\n");
        MPI_Finalize();
        return 0;
    }
    if (o.mem[MEM_ARENA] && !arena_pairs_on_node(&b)) {
        if (g_rank == 0)
            fprintf(stderr, "mpixfer-bench: a pair spans nodes: skipping --mem arena\n");
        o.mem[MEM_ARENA] = false;
        if (!o.mem[MEM_FOREIGN]) {
            MPI_Finalize();
            return 0;
        }
    }
    for (int m = 0; m < MEM_COUNT; m++)
        b.has_mem[m] = o.mem[m];

    points_t ps = build_points(&o);
    point_t *pts = ps.v;
    int npoints = ps.n;
    if (npoints == 0)
        die("nothing to measure (every block size exceeds --max-bytes?)");
    size_t max_req = 0, maxbatch = 0;
    for (int i = 0; i < npoints; i++) {
        if (pts[i].block * pts[i].batch > max_req)
            max_req = pts[i].block * pts[i].batch;
        if (pts[i].batch > maxbatch)
            maxbatch = pts[i].batch;
    }
    /* Rounded up to whole pages (and so to whole pattern words). */
    b.pool = (max_req + PAGE - 1) / PAGE * PAGE;
    const bool have_peer = b.peer >= 0;

    /* mpixfer: one context (with an arena when asked), one agent per rank. */
    mpixfer_context_params_t params = MPIXFER_CONTEXT_PARAMS_INIT;
    if (o.mem[MEM_ARENA]) {
        b.arena_size = o.arena_size ? o.arena_size : 2 * b.pool;
        if (b.arena_size < b.pool + PAGE)
            die("--arena-size %zu is too small for a %zu-byte pool", b.arena_size, b.pool);
        params.arena_size = b.arena_size;
    }
    XF(mpixfer_context_create_with_params(MPI_COMM_WORLD, &params, &b.ctx));
    mpixfer_gpu_path_t gpath = mpixfer_context_gpu_path(b.ctx);
    const char *gpath_name = mpixfer_gpu_path_name(gpath);
    if (o.mem[MEM_XPU] && gpath == MPIXFER_GPU_PATH_NONE) {
        if (g_rank == 0)
            printf("no GPU: skipping VRAM (mpixfer reports GPU path 'none')\n");
        XF(mpixfer_context_destroy(b.ctx));
        MPI_Finalize();
        return 0;
    }
    char name[64];
    snprintf(name, sizeof name, "bench-%d", g_rank);
    if (have_peer)
        snprintf(b.peer_name, sizeof b.peer_name, "bench-%d", b.peer);
    mpixfer_agent_config_t cfg = MPIXFER_AGENT_CONFIG_INIT;
    cfg.name = name;
    XF(mpixfer_agent_create(b.ctx, &cfg, &b.agent));

    /* Buffers, registrations. */
    mpixfer_mem_desc_t freg = {0}, areg = {0}, xreg = {0};
    mpixfer_mem_descs_t fregs = {MPIXFER_MEM_DRAM, &freg, 1}, aregs = {MPIXFER_MEM_DRAM, &areg, 1};
    mpixfer_mem_descs_t xregs = {MPIXFER_MEM_DRAM, &xreg, 1};
    bool local_vram = b.initiator ? o.src_vram : o.dst_vram;
    if (have_peer && o.mem[MEM_FOREIGN]) {
        b.fbuf = (mbuf_t){alloc_touched(b.pool), b.pool, false, 0};
        if (b.initiator)
            b.fcopy = (mbuf_t){alloc_touched(b.pool), b.pool, false, 0};
        freg = (mpixfer_mem_desc_t){(uintptr_t)b.fbuf.p, b.pool, 0};
        XF(mpixfer_register_memory(b.agent, &fregs));
    }
    if (have_peer && o.mem[MEM_ARENA]) {
        void *p = NULL;
        XF(mpixfer_mem_alloc(b.ctx, b.pool, &p));
        memset(p, 0, b.pool);
        b.abuf = (mbuf_t){p, b.pool, false, 0};
        areg = (mpixfer_mem_desc_t){(uintptr_t)p, b.pool, 0};
        XF(mpixfer_register_memory(b.agent, &aregs));
    }
    if (have_peer && o.mem[MEM_XPU]) {
        xpu_alloc(&b, &b.xbuf, local_vram, b.pool);
        if (b.initiator)
            xpu_alloc(&b, &b.xcopy, o.dst_vram, b.pool);
        xregs.type = local_vram ? MPIXFER_MEM_VRAM : MPIXFER_MEM_DRAM;
        xreg = (mpixfer_mem_desc_t){(uintptr_t)b.xbuf.p, b.pool, local_vram ? b.x_dev : 0};
        XF(mpixfer_register_memory(b.agent, &xregs));
        if (b.xbuf.dev || b.xcopy.dev)
            b.scratch = alloc_touched(b.pool);
    }
    XF(mpixfer_bootstrap(b.ctx));

    /* Descriptors are opaque, so addresses travel separately:
     * foreign addr, arena addr, xpu addr, xpu device. */
    uint64_t mine[4] = {(uint64_t)(uintptr_t)b.fbuf.p, (uint64_t)(uintptr_t)b.abuf.p,
                        (uint64_t)(uintptr_t)b.xbuf.p, b.x_dev};
    uint64_t *all = calloc((size_t)size * 4, sizeof *all);
    MPI_Aint mydisp[2] = {0, 0}, *disps = calloc((size_t)size * 2, sizeof *disps);
    if (!all || !disps)
        die("out of memory");
    if (b.fbuf.p)
        MPICHK(MPI_Get_address(b.fbuf.p, &mydisp[0]));
    if (b.xbuf.p)
        MPICHK(MPI_Get_address(b.xbuf.p, &mydisp[1]));
    MPICHK(MPI_Allgather(mine, 4, MPI_UINT64_T, all, 4, MPI_UINT64_T, MPI_COMM_WORLD));
    MPICHK(MPI_Allgather(mydisp, 2, MPI_AINT, disps, 2, MPI_AINT, MPI_COMM_WORLD));
    if (have_peer) {
        b.f_peer_addr = all[4 * b.peer + 0];
        b.a_peer_addr = all[4 * b.peer + 1];
        b.x_peer_addr = all[4 * b.peer + 2];
        b.x_peer_dev = (uint32_t)all[4 * b.peer + 3];
        b.f_peer_disp = disps[2 * b.peer + 0];
        b.x_peer_disp = disps[2 * b.peer + 1];
    }
    free(all);
    free(disps);

    if (b.initiator) {
        if (o.mem[MEM_FOREIGN])
            check_advertised(&b, b.f_peer_addr, MPIXFER_MEM_DRAM, 0, "foreign");
        if (o.mem[MEM_ARENA])
            check_advertised(&b, b.a_peer_addr, MPIXFER_MEM_DRAM, 0, "arena");
        if (o.mem[MEM_XPU])
            check_advertised(&b, b.x_peer_addr, o.dst_vram ? MPIXFER_MEM_VRAM : MPIXFER_MEM_DRAM,
                             o.dst_vram ? b.x_peer_dev : 0, "xpu");
    }
    if (o.link)
        link_setup(&b);

    /* Raw MPI on foreign (and xpu) memory: the window kind mpixfer uses, same buffers.
     * Device memory only where MPI can take it (direct path = CUDA-aware MPI). */
    if (o.mem[MEM_XPU])
        b.x_raw = !b.gpu_real || gpath == MPIXFER_GPU_PATH_DIRECT;
    if (o.mem[MEM_FOREIGN] || (o.mem[MEM_XPU] && b.x_raw)) {
        MPICHK(MPI_Win_create_dynamic(MPI_INFO_NULL, MPI_COMM_WORLD, &b.dwin));
        MPICHK(MPI_Win_set_errhandler(b.dwin, MPI_ERRORS_RETURN));
        if (b.fbuf.p)
            MPICHK(MPI_Win_attach(b.dwin, b.fbuf.p, (MPI_Aint)b.pool));
        if (b.xbuf.p && b.x_raw)
            MPICHK(MPI_Win_attach(b.dwin, b.xbuf.p, (MPI_Aint)b.pool));
        MPICHK(MPI_Win_lock_all(0, b.dwin));
        b.has_dwin = true;
    }
    /* Raw MPI and memcpy on the arena's blocks themselves, through its own window. */
    if (o.mem[MEM_ARENA]) {
        MPI_Group gw, gs;
        int me_s = MPI_UNDEFINED, partner = have_peer ? b.peer : b.rank;
        XF(mpixfer_mem_window(b.ctx, &b.swin));
        b.has_swin = true;
        MPICHK(MPI_Win_get_group(b.swin, &gs));
        MPICHK(MPI_Comm_group(MPI_COMM_WORLD, &gw));
        MPICHK(MPI_Group_translate_ranks(gw, 1, &b.rank, gs, &me_s));
        MPICHK(MPI_Group_translate_ranks(gw, 1, &partner, gs, &b.s_peer));
        MPI_Group_free(&gw);
        MPI_Group_free(&gs);
        if (me_s == MPI_UNDEFINED || b.s_peer == MPI_UNDEFINED)
            die("the arena's window does not hold this pair");
        MPI_Aint qsize = 0, sdisp = 0, *sdisps = calloc((size_t)size, sizeof *sdisps);
        int qdisp = 0;
        void *qp = NULL;
        if (sdisps == NULL)
            die("out of memory");
        if (have_peer) {
            MPICHK(MPI_Win_shared_query(b.swin, me_s, &qsize, &qdisp, &qp));
            sdisp = (MPI_Aint)((unsigned char *)b.abuf.p - (unsigned char *)qp);
        }
        MPICHK(MPI_Allgather(&sdisp, 1, MPI_AINT, sdisps, 1, MPI_AINT, MPI_COMM_WORLD));
        if (have_peer) {
            b.a_peer_sdisp = sdisps[b.peer];
            MPICHK(MPI_Win_shared_query(b.swin, b.s_peer, &qsize, &qdisp, &qp));
            if (qdisp != 1 || qsize < b.a_peer_sdisp + (MPI_Aint)b.pool)
                die("the partner's arena segment (%zu bytes) does not hold its block",
                    (size_t)qsize);
            b.s_peer_map = (unsigned char *)qp + b.a_peer_sdisp;
        }
        free(sdisps);
        MPICHK(MPI_Win_lock_all(MPI_MODE_NOCHECK, b.swin));
    }

    if (b.initiator || b.target) {
        b.islot_v = calloc(maxbatch, sizeof *b.islot_v);
        b.tslot_v = calloc(maxbatch, sizeof *b.tslot_v);
        if (!b.islot_v || !b.tslot_v)
            die("out of memory");
    }
    if (b.initiator) {
        b.src_descs = calloc(maxbatch, sizeof *b.src_descs);
        b.dst_descs = calloc(maxbatch, sizeof *b.dst_descs);
        if (!b.src_descs || !b.dst_descs)
            die("out of memory");
        size_t maxiters = o.iters > MAX_ITERS ? (size_t)o.iters : MAX_ITERS;
        for (int m = 0; m < M_COUNT; m++) {
            run_t *u = calloc(1, sizeof *u);
            if (!u)
                die("out of memory");
            u->lptr = calloc(maxbatch, sizeof *u->lptr);
            u->rptr = calloc(maxbatch, sizeof *u->rptr);
            u->ldisp = calloc(maxbatch, sizeof *u->ldisp);
            u->rdisp = calloc(maxbatch, sizeof *u->rdisp);
            u->lat = calloc(maxiters, sizeof *u->lat);
            u->post = calloc(maxiters, sizeof *u->post);
            if (!u->lptr || !u->rptr || !u->ldisp || !u->rdisp || !u->lat || !u->post)
                die("out of memory");
            b.run[m] = u;
        }
    }

    if (g_rank == 0) {
        char lib[MPI_MAX_LIBRARY_VERSION_STRING];
        int len = 0;
        MPI_Get_library_version(lib, &len);
        char *nl = strchr(lib, '\n');
        if (nl)
            *nl = '\0';
        printf("# mpixfer-bench: mpixfer %s, %d ranks (%d pairs), %s\n", mpixfer_version(),
               size, size / 2, lib);
        printf("# pattern %s, mem", pattern_name[o.pattern]);
        for (int m = 0; m < MEM_COUNT; m++)
            if (o.mem[m])
                printf(" %s", mem_label(&b, (memkind_t)m));
        printf(", pool %zu bytes, arena %zu bytes, %d points\n", b.pool, b.arena_size,
               npoints);
        printf("# GPU path: %s", gpath_name);
        if (o.mem[MEM_XPU])
            printf(" (src %s, dst %s%s; reference cudaMemcpy WRITE %s, READ %s%s%s)",
                   o.src_vram ? "vram" : "dram", o.dst_vram ? "vram" : "dram",
                   b.gpu_emulated ? ", VRAM emulated with host memory" : "",
                   b.copy_kind[MPIXFER_OP_WRITE], b.copy_kind[MPIXFER_OP_READ],
                   b.gpu_emulated ? " = memcpy" : "",
                   b.x_raw ? "" : "; raw MPI skipped: MPI is not CUDA-aware");
        printf("\n");
        fflush(stdout);
    }
    MPICHK(MPI_Barrier(MPI_COMM_WORLD));

    for (int i = 0; i < npoints; i++) {
        if (g_rank == 0) {
            char bs[32];
            fmt_size(pts[i].block, bs, sizeof bs);
            fprintf(stderr, "[%d/%d] %s %s %s %s x %zu\n", i + 1, npoints, op_name(pts[i].op),
                    mem_label(&b, pts[i].mem), pattern_name[pts[i].pattern], bs, pts[i].batch);
        }
        run_point(&b, &pts[i], i);
    }

    if (o.link) {
        link_loads(&b);
        if (b.link_ctx != NULL)
            XF(mpixfer_context_stats(b.link_ctx, &b.link.stats));
        /* The byte checks passed; they prove something only if the link moved the bytes,
         * by the mover asked for. */
        const char *lc = getenv("MPIXFER_LINK_COPY");
        if (b.initiator && b.link.stats.link_copies + b.link.stats.link_ops == 0)
            die("the link method moved nothing over a link (link_copies = link_ops = 0)");
        if (b.initiator && lc != NULL && strcmp(lc, "ucx") == 0 && b.link.stats.link_copies > 0)
            die("MPIXFER_LINK_COPY=ucx, but %" PRIu64 " pairs moved by cross-memory copies",
                b.link.stats.link_copies);
    }

    /* Registration cost: in the suite only (10,000 regions; 1,000 with --quick). */
    if (g_rank == 0 && o.pattern == PAT_SUITE)
        bench_registration(&b, o.quick ? 1000 : 10000);

    if (g_rank == 0) {
        target_t t[NTARGETS];
        print_table(&b, pts, npoints, size / 2);
        print_registration(&b);
        eval_targets(&b, pts, npoints, t);
        print_targets(t);
        if (o.link)
            print_link(&b, pts, npoints);
        if (o.json)
            write_json(o.json, pts, npoints, &b, t, argc, argv, gpath_name);
    }

    if (b.has_swin) /* the context frees the window */
        MPICHK(MPI_Win_unlock_all(b.swin));
    if (b.has_dwin) {
        MPICHK(MPI_Win_unlock_all(b.dwin));
        if (b.fbuf.p)
            MPICHK(MPI_Win_detach(b.dwin, b.fbuf.p));
        if (b.xbuf.p && b.x_raw)
            MPICHK(MPI_Win_detach(b.dwin, b.xbuf.p));
        MPICHK(MPI_Win_free(&b.dwin));
    }
    if (o.prometheus) {
        char *text = NULL, path[4096];
        size_t len = 0;
        FILE *f;
        if (b.rank == 0)
            snprintf(path, sizeof path, "%s", o.prometheus);
        else
            snprintf(path, sizeof path, "%s.%d", o.prometheus, b.rank);
        XF(mpixfer_stats_prometheus(b.ctx, &text, &len));
        if ((f = fopen(path, "w")) == NULL || fwrite(text, 1, len, f) != len || fclose(f) != 0)
            die("--prometheus: cannot write %s: %s", path, strerror(errno));
        mpixfer_free(text);
    }
    if (o.link) {
        MPICHK(MPI_Barrier(MPI_COMM_WORLD)); /* neither side is still using the link */
        link_teardown(&b);
    }
    if (b.fbuf.p)
        XF(mpixfer_deregister_memory(b.agent, &fregs));
    if (b.abuf.p)
        XF(mpixfer_deregister_memory(b.agent, &aregs));
    if (b.xbuf.p)
        XF(mpixfer_deregister_memory(b.agent, &xregs));
    XF(mpixfer_agent_destroy(b.agent));
    if (b.abuf.p)
        XF(mpixfer_mem_free(b.ctx, b.abuf.p));
    XF(mpixfer_context_destroy(b.ctx));
    if (b.node_comm != MPI_COMM_NULL)
        MPI_Comm_free(&b.node_comm);

    free(b.fbuf.p);
    free(b.fcopy.p);
    xpu_free(&b.xbuf);
    xpu_free(&b.xcopy);
    free(b.scratch);
    free(b.islot_v);
    free(b.tslot_v);
    free(b.src_descs);
    free(b.dst_descs);
    for (int m = 0; m < M_COUNT; m++)
        if (b.run[m]) {
            free(b.run[m]->lptr);
            free(b.run[m]->rptr);
            free(b.run[m]->ldisp);
            free(b.run[m]->rdisp);
            free(b.run[m]->lat);
            free(b.run[m]->post);
            free(b.run[m]);
        }
    free(pts);
    MPI_Finalize();
    return 0;
}
