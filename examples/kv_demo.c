/*
 * mpixfer-kv-demo: disaggregated prefill/decode in miniature.
 *
 * Rank 0 ("prefill") owns a KV pool full of computed blocks; rank 1 ("decode") owns an
 * empty pool of the same shape. Decode asks for N block ids with a sync message; prefill
 * answers with ONE WRITE request of layers x N x {K,V} descriptors, carrying the sync
 * message "done <N>", which the library delivers only once the data is in place. Decode
 * then checks every byte and reports back.
 *
 *   mpiexec -n 2 mpixfer-kv-demo [--layers 4 --blocks 64 --block-tokens 16 --heads 8
 *                                 --head-dim 128 --dtype-bytes 2 --request 16 --seed 42]
 *
 * With one process both agents live in rank 0 and the library copies directly.
 *
 * Two-job mode: the prefill and decode sides are separately launched jobs of one process
 * each, connected by connection info over a link (no ompi-server, no MPI dynamic
 * processes; scripts/demo --two-jobs does it all):
 *
 *   mpiexec -n 1 mpixfer-kv-demo --serve DIR     (prefill)
 *   mpiexec -n 1 mpixfer-kv-demo --connect DIR   (decode)
 *
 * Prefill's agent listens (use_listen_thread) and writes its connection info and pool
 * address to DIR/prefill.info; decode loads prefill by that info. The protocol stays the
 * same: prefill WRITEs the blocks in one request of layers x N x {K,V} descriptors with the
 * sync message "done <N>". A WRITE needs its target loaded, and prefill never loaded
 * decode, so decode listens too and sends its own connection info in the request
 * ("conn=..."); prefill loads decode by it before writing. Between jobs the bytes travel
 * two-sided (the library's staged protocol), since Open MPI 4.1 cannot create an RMA window
 * across jobs. Teardown is ordered so that only one side closes a link at a time: after
 * the verdict prefill invalidates decode (closing the link it opened) and says "released";
 * decode answers "exit", then closes the link it opened by destroying its agent.
 */
#define _GNU_SOURCE /* getopt_long */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpixfer.h"
#include <mpixfer/topology.h>

#define PREFILL "prefill"
#define DECODE "decode"
#define EMPTY_BYTE 0xEE /* what decode's pool holds before the transfer */
#define INFO_FILE "prefill.info" /* two-job mode: what --serve writes in DIR */

static int g_rank = 0;

/* Reports a failed mpixfer call with its text; the caller decides how to unwind. */
static bool xf_ok(mpixfer_status_t st, const char *what)
{
    if (st == MPIXFER_OK)
        return true;
    fprintf(stderr, "kv-demo[rank %d]: %s failed: %s (%s)\n", g_rank, what,
            mpixfer_strerror(st), mpixfer_status_name(st));
    return false;
}
#define XF(call) xf_ok((call), #call)

/* ----------------------------------------------------------------- config */

typedef struct {
    long layers, blocks, tokens, heads, head_dim, dtype, request;
    uint64_t seed;
    double timeout_s;
    const char *serve_dir;   /* --serve DIR: this job is the prefill side */
    const char *connect_dir; /* --connect DIR: this job is the decode side */
    bool stats;              /* --stats: print the counters (Prometheus text) at the end */
} cfg_t;

static void usage(FILE *f)
{
    fprintf(f, "usage: mpiexec -n 2 mpixfer-kv-demo [options]   (or -n 1: both in one process)\n"
               "       mpiexec -n 1 mpixfer-kv-demo --serve DIR [options]\n"
               "       mpiexec -n 1 mpixfer-kv-demo --connect DIR "
               "[options]\n"
               "  --layers L        layers (default 4)\n"
               "  --blocks B        KV blocks per layer in each pool (default 64)\n"
               "  --block-tokens T  tokens per block (default 16)\n"
               "  --heads H         KV heads (default 8)\n"
               "  --head-dim D      head dimension (default 128)\n"
               "  --dtype-bytes N   bytes per element (default 2)\n"
               "  --request N       block ids decode asks for (default 16, <= B)\n"
               "  --seed S          picks the block ids (default 42)\n"
               "  --timeout S       seconds to wait for a message (default 60)\n"
               "  --serve DIR       two-job mode: be the prefill job; writes DIR/" INFO_FILE "\n"
               "  --connect DIR     two-job mode: be the decode job; reads DIR/" INFO_FILE "\n"
               "  --stats           at the end, print the library's counters of each process\n"
               "                    (context and agents) in the Prometheus text format\n"
               "  --help\n");
}

static bool parse_pos(const char *s, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v <= 0)
        return false;
    *out = v;
    return true;
}

/* 0: run; 1: --help; 2: bad usage (already reported). */
static int parse_cfg(int argc, char **argv, cfg_t *c)
{
    static const struct option lo[] = {
        {"layers", required_argument, NULL, 'l'}, {"blocks", required_argument, NULL, 'b'},
        {"block-tokens", required_argument, NULL, 't'}, {"heads", required_argument, NULL, 'H'},
        {"head-dim", required_argument, NULL, 'd'}, {"dtype-bytes", required_argument, NULL, 'y'},
        {"request", required_argument, NULL, 'r'}, {"seed", required_argument, NULL, 's'},
        {"timeout", required_argument, NULL, 'T'}, {"help", no_argument, NULL, 'h'},
        {"serve", required_argument, NULL, 'S'}, {"connect", required_argument, NULL, 'C'},
        {"stats", no_argument, NULL, 'P'}, {NULL, 0, NULL, 0}};
    *c = (cfg_t){4, 64, 16, 8, 128, 2, 16, 42, 60.0, NULL, NULL, false};
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        bool ok;
        long v = 0;
        switch (ch) {
        case 'l': ok = parse_pos(optarg, &c->layers); break;
        case 'b': ok = parse_pos(optarg, &c->blocks); break;
        case 't': ok = parse_pos(optarg, &c->tokens); break;
        case 'H': ok = parse_pos(optarg, &c->heads); break;
        case 'd': ok = parse_pos(optarg, &c->head_dim); break;
        case 'y': ok = parse_pos(optarg, &c->dtype); break;
        case 'r': ok = parse_pos(optarg, &c->request); break;
        case 's': ok = parse_pos(optarg, &v); c->seed = (uint64_t)v; break;
        case 'T': ok = parse_pos(optarg, &v); c->timeout_s = (double)v; break;
        case 'S': ok = *optarg != '\0'; c->serve_dir = optarg; break;
        case 'C': ok = *optarg != '\0'; c->connect_dir = optarg; break;
        case 'P': ok = true; c->stats = true; break;
        case 'h': return 1;
        default: ok = false; break;
        }
        if (!ok) {
            if (g_rank == 0)
                fprintf(stderr, "kv-demo: bad option or value: %s\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc || c->request > c->blocks || (c->serve_dir && c->connect_dir)) {
        if (g_rank == 0)
            fprintf(stderr, "kv-demo: %s\n",
                    optind < argc           ? "unexpected argument"
                    : c->request > c->blocks ? "--request must be <= --blocks"
                                             : "--serve and --connect are two different jobs");
        return 2;
    }
    /* Pool size must fit size_t (and one descriptor count an int-sized loop). */
    double pool = (double)c->layers * (double)c->blocks * 2.0 * (double)c->tokens *
                  (double)c->heads * (double)c->head_dim * (double)c->dtype;
    if (pool > (double)(SIZE_MAX / 4) || (double)c->layers * (double)c->request * 2 > INT_MAX) {
        if (g_rank == 0)
            fprintf(stderr, "kv-demo: pool too large\n");
        return 2;
    }
    return 0;
}

/* ------------------------------------------------------------------ stats */

/* --stats: this process's counters (the context's and its agents'), as a /metrics endpoint
 * would serve them. */
static bool print_stats(mpixfer_context_t *ctx, const char *who)
{
    char *text = NULL;
    size_t len = 0;

    if (!XF(mpixfer_stats_prometheus(ctx, &text, &len)))
        return false;
    printf("# ---- %s (rank %d): mpixfer_stats_prometheus\n", who, g_rank);
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    mpixfer_free(text);
    return true;
}

/* ------------------------------------------------------------------- pool */

typedef struct {
    const cfg_t *c;
    size_t block_bytes; /* one K or V block: T*H*D*dtype */
    size_t pool_bytes;  /* layers x blocks x 2 blocks */
} shape_t;

/* Where (layer, block, kv) lives in a pool: layer-major, then block, then K/V. */
static size_t kv_offset(const shape_t *s, long layer, long block, int kv)
{
    return (((size_t)layer * (size_t)s->c->blocks + (size_t)block) * 2 + (size_t)kv) *
           s->block_bytes;
}

static inline uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* The "computed" KV content: byte `off` of (layer, block, kv), identical on both sides. */
static inline unsigned char kv_byte(long layer, long block, int kv, size_t off)
{
    uint64_t key = ((uint64_t)layer << 40) ^ ((uint64_t)block << 8) ^ (uint64_t)kv;
    uint64_t w = mix64(mix64(key) ^ (uint64_t)(off / 8));
    return (unsigned char)(w >> (8 * (off % 8)));
}

static void fill_block(unsigned char *p, size_t n, long layer, long block, int kv)
{
    for (size_t i = 0; i < n; i++)
        p[i] = kv_byte(layer, block, kv, i);
}

/* Number of bytes in p[0..n) that differ from (layer, block, kv)'s content. */
static size_t check_block(const unsigned char *p, size_t n, long layer, long block, int kv,
                          size_t *first_bad)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] != kv_byte(layer, block, kv, i) && bad++ == 0)
            *first_bad = i;
    return bad;
}

/* ----------------------------------------------------------------- a side */

typedef struct {
    mpixfer_agent_t *agent;
    unsigned char *pool;
    mpixfer_mem_desc_t reg;
    bool registered;
} side_t;

/* @p listen: two-job mode; the agent listens for the other job and has its own progress
 * thread (the staged protocol between jobs needs the target's help while it waits). */
static bool side_open(mpixfer_context_t *ctx, const shape_t *s, const char *name, bool listen,
                      side_t *sd)
{
    memset(sd, 0, sizeof *sd);
    void *p = NULL;
    if (posix_memalign(&p, 4096, s->pool_bytes) != 0) {
        fprintf(stderr, "kv-demo[rank %d]: cannot allocate %zu bytes\n", g_rank, s->pool_bytes);
        return false;
    }
    sd->pool = p;
    memset(sd->pool, EMPTY_BYTE, s->pool_bytes);
    mpixfer_agent_config_t cfg = MPIXFER_AGENT_CONFIG_INIT;
    cfg.name = name;
    cfg.use_listen_thread = listen;
    cfg.use_progress_thread = listen;
    if (!XF(mpixfer_agent_create(ctx, &cfg, &sd->agent)))
        return false;
    /* One registration for the whole pool, as a serving engine registers its KV pool. */
    sd->reg = (mpixfer_mem_desc_t){(uintptr_t)sd->pool, s->pool_bytes, 0};
    mpixfer_mem_descs_t regs = {MPIXFER_MEM_DRAM, &sd->reg, 1};
    if (!XF(mpixfer_register_memory(sd->agent, &regs)))
        return false;
    sd->registered = true;
    return true;
}

static bool side_close(side_t *sd)
{
    bool ok = true;
    if (sd->registered) {
        mpixfer_mem_descs_t regs = {MPIXFER_MEM_DRAM, &sd->reg, 1};
        ok = XF(mpixfer_deregister_memory(sd->agent, &regs)) && ok;
    }
    if (sd->agent)
        ok = XF(mpixfer_agent_destroy(sd->agent)) && ok;
    free(sd->pool);
    memset(sd, 0, sizeof *sd);
    return ok;
}

/*
 * Wait for a sync message from @p from; returns it as a malloc'd NUL-terminated string
 * (NULL on error or timeout). Messages from other senders are reported and dropped.
 */
static char *wait_message(mpixfer_agent_t *agent, const char *from, double timeout_s)
{
    double deadline = MPI_Wtime() + timeout_s;
    while (MPI_Wtime() < deadline) {
        mpixfer_sync_message_t *msgs = NULL;
        size_t n = 0;
        if (!XF(mpixfer_get_notified_sync_messages(agent, &msgs, &n)))
            return NULL;
        char *got = NULL;
        for (size_t i = 0; i < n; i++) {
            if (!got && strcmp(msgs[i].agent_name, from) == 0) {
                got = malloc(msgs[i].len + 1);
                if (got) {
                    memcpy(got, msgs[i].data, msgs[i].len);
                    got[msgs[i].len] = '\0';
                }
            } else {
                fprintf(stderr, "kv-demo[rank %d]: %s: ignoring a message from %s\n", g_rank,
                        mpixfer_agent_name(agent), msgs[i].agent_name);
            }
        }
        mpixfer_sync_messages_free(msgs, n);
        if (got)
            return got;
    }
    fprintf(stderr, "kv-demo[rank %d]: %s: no message from %s within %.0f s\n", g_rank,
            mpixfer_agent_name(agent), from, timeout_s);
    return NULL;
}

/* --------------------------------------------------------------- decode */

typedef struct {
    long *ids;         /* requested block ids; slot i of every layer receives ids[i] */
    double t_req;      /* when the request left */
    bool verdict_sent; /* decode_finish() told prefill what it found */
} decode_state_t;

/* Pick N distinct block ids (partial Fisher-Yates, xorshift64*) and ask prefill for them.
 * @p conn: decode's connection info in two-job mode (prefill loads decode by it), else NULL. */
static bool decode_request(const shape_t *s, side_t *dec, decode_state_t *ds, const char *conn)
{
    const cfg_t *c = s->c;
    long *all = malloc((size_t)c->blocks * sizeof *all);
    ds->ids = malloc((size_t)c->request * sizeof *ds->ids);
    /* "kv-request pool=0x... block_bytes=... [conn=INFO ]ids=a,b,c": ~21 bytes per id */
    size_t cap = 256 + (conn ? strlen(conn) : 0) + (size_t)c->request * 22;
    char *msg = malloc(cap);
    if (!all || !ds->ids || !msg) {
        free(all);
        free(msg);
        fprintf(stderr, "kv-demo: out of memory\n");
        return false;
    }
    for (long i = 0; i < c->blocks; i++)
        all[i] = i;
    uint64_t x = c->seed ? c->seed : 1;
    for (long i = 0; i < c->request; i++) {
        x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
        long j = i + (long)((x * 0x2545F4914F6CDD1DULL) % (uint64_t)(c->blocks - i));
        long t = all[i];
        all[i] = all[j];
        all[j] = t;
        ds->ids[i] = all[i];
    }
    free(all);

    /* The decode side says where to write, as a real request carries its cache slots. */
    int len = snprintf(msg, cap, "kv-request pool=0x%" PRIxPTR " block_bytes=%zu %s%s%sids=",
                       (uintptr_t)dec->pool, s->block_bytes, conn ? "conn=" : "",
                       conn ? conn : "", conn ? " " : "");
    for (long i = 0; i < c->request; i++)
        len += snprintf(msg + len, cap - (size_t)len, "%s%ld", i ? "," : "", ds->ids[i]);

    printf("decode: requesting %ld of %ld blocks:", c->request, c->blocks);
    for (long i = 0; i < c->request && i < 16; i++)
        printf(" %ld", ds->ids[i]);
    printf("%s\n", c->request > 16 ? " ..." : "");
    fflush(stdout);

    ds->t_req = MPI_Wtime();
    bool ok = XF(mpixfer_notify_sync_message(dec->agent, PREFILL, msg, (size_t)len));
    free(msg);
    return ok;
}

/* Wait for "done N", check every received block (and that nothing else was touched). */
static bool decode_finish(const shape_t *s, side_t *dec, decode_state_t *ds)
{
    const cfg_t *c = s->c;
    char *done = wait_message(dec->agent, PREFILL, c->timeout_s);
    double t_done = MPI_Wtime();
    if (!done)
        return false;
    char expect[64];
    snprintf(expect, sizeof expect, "done %ld", c->request);
    if (strcmp(done, expect) != 0) {
        fprintf(stderr, "decode: unexpected reply \"%s\" (wanted \"%s\")\n", done, expect);
        free(done);
        return false;
    }
    free(done);

    size_t nblocks = 0, nbytes = 0, bad_total = 0;
    for (long l = 0; l < c->layers; l++)
        for (long slot = 0; slot < c->blocks; slot++)
            for (int kv = 0; kv < 2; kv++) {
                const unsigned char *p = dec->pool + kv_offset(s, l, slot, kv);
                size_t first = 0, bad = 0;
                if (slot < c->request) {
                    bad = check_block(p, s->block_bytes, l, ds->ids[slot], kv, &first);
                    nblocks++;
                    nbytes += s->block_bytes;
                } else { /* slots nobody asked for must still be empty */
                    for (size_t i = 0; i < s->block_bytes; i++)
                        if (p[i] != EMPTY_BYTE && bad++ == 0)
                            first = i;
                }
                if (bad && bad_total < 10)
                    fprintf(stderr,
                            "decode: MISMATCH layer %ld slot %ld (%s block %ld) %s: %zu bad "
                            "bytes, first at offset %zu\n",
                            l, slot, slot < c->request ? "holds" : "unused",
                            slot < c->request ? ds->ids[slot] : -1L, kv ? "V" : "K", bad,
                            first);
                bad_total += bad;
            }

    double secs = t_done - ds->t_req;
    if (bad_total == 0)
        printf("decode: verified: %zu blocks, %zu bytes, OK\n", nblocks, nbytes);
    else
        printf("decode: verified: %zu blocks, %zu bytes, FAILED (%zu bad bytes)\n", nblocks,
               nbytes, bad_total);
    printf("decode: %zu bytes received in %.3f ms from request to \"done\" (%.3f GB/s)\n",
           nbytes, secs * 1e3, secs > 0 ? (double)nbytes / secs / 1e9 : 0.0);
    fflush(stdout);

    const char *verdict = bad_total == 0 ? "verified OK" : "verified FAIL";
    bool sent = XF(mpixfer_notify_sync_message(dec->agent, PREFILL, verdict, strlen(verdict)));
    ds->verdict_sent = sent;
    return sent && bad_total == 0;
}

/* -------------------------------------------------------------- prefill */

/* Parse "kv-request pool=0x.. block_bytes=.. [conn=INFO ]ids=a,b,..": fills pool, ids
 * (malloc'd) and, when the request carries one, conn (malloc'd; else NULL). */
static bool parse_request(const char *msg, const shape_t *s, uintptr_t *pool, long **ids_p,
                          long *n_p, char **conn_p)
{
    uintmax_t addr = 0;
    size_t bb = 0;
    int pos = 0;
    const char *q = NULL, *sp = NULL;
    *conn_p = NULL;
    if (sscanf(msg, "kv-request pool=0x%jx block_bytes=%zu %n", &addr, &bb, &pos) != 2 ||
        pos == 0 ||
        (strncmp(q = msg + pos, "conn=", 5) == 0 && (sp = strchr(q + 5, ' ')) == NULL) ||
        strncmp(sp ? sp + 1 : q, "ids=", 4) != 0) {
        fprintf(stderr, "prefill: malformed request \"%.80s\"\n", msg);
        return false;
    }
    if (sp) {
        *conn_p = strndup(q + 5, (size_t)(sp - (q + 5)));
        if (!*conn_p)
            return false;
        q = sp + 1;
    }
    pos = (int)(q + 4 - msg); /* the id list */
    if (bb != s->block_bytes) {
        fprintf(stderr, "prefill: decode uses %zu-byte blocks, we use %zu (same flags on both "
                        "sides?)\n", bb, s->block_bytes);
        free(*conn_p);
        *conn_p = NULL;
        return false;
    }
    long *ids = malloc((size_t)s->c->blocks * sizeof *ids);
    if (!ids) {
        free(*conn_p);
        *conn_p = NULL;
        return false;
    }
    long n = 0;
    const char *p = msg + pos;
    while (*p) {
        char *end = NULL;
        errno = 0;
        long v = strtol(p, &end, 10);
        /* decode's pool has as many slots as ours has blocks, so n <= blocks */
        if (errno || end == p || v < 0 || v >= s->c->blocks || n == s->c->blocks ||
            (*end != ',' && *end != '\0')) {
            fprintf(stderr, "prefill: bad block id list at \"%.20s\"\n", p);
            free(ids);
            free(*conn_p);
            *conn_p = NULL;
            return false;
        }
        ids[n++] = v;
        p = *end ? end + 1 : end;
    }
    if (n == 0) {
        fprintf(stderr, "prefill: empty block id list\n");
        free(ids);
        free(*conn_p);
        *conn_p = NULL;
        return false;
    }
    *pool = (uintptr_t)addr;
    *ids_p = ids;
    *n_p = n;
    return true;
}

/* Wait for decode's request, then WRITE the blocks in one request with "done <n>". */
static bool prefill_serve(const shape_t *s, side_t *pre)
{
    const cfg_t *c = s->c;
    char *req = wait_message(pre->agent, DECODE, c->timeout_s);
    if (!req)
        return false;
    uintptr_t dst_pool = 0;
    long *ids = NULL, n = 0;
    char *conn = NULL;
    bool ok = parse_request(req, s, &dst_pool, &ids, &n, &conn);
    free(req);
    if (!ok)
        return false;

    size_t count = (size_t)c->layers * (size_t)n * 2;
    mpixfer_mem_desc_t *src = calloc(count, sizeof *src);
    mpixfer_mem_desc_t *dst = calloc(count, sizeof *dst);
    mpixfer_request_t *x = NULL;
    if (!src || !dst) {
        fprintf(stderr, "prefill: out of memory\n");
        ok = false;
        goto out;
    }
    size_t k = 0;
    for (long l = 0; l < c->layers; l++)
        for (long slot = 0; slot < n; slot++)
            for (int kv = 0; kv < 2; kv++, k++) {
                src[k] = (mpixfer_mem_desc_t){
                    (uintptr_t)pre->pool + kv_offset(s, l, ids[slot], kv), s->block_bytes, 0};
                dst[k] = (mpixfer_mem_desc_t){dst_pool + kv_offset(s, l, slot, kv),
                                              s->block_bytes, 0};
            }

    mpixfer_mem_descs_t dsts = {MPIXFER_MEM_DRAM, dst, count};
    if (conn) {
        /* Two-job mode: decode is in another job and we never loaded it; its request
         * carries its connection info. Loading is asynchronous: poll until its descriptor
         * (advertising the slots) has arrived. */
        printf("prefill: loading decode by its connection info\n");
        fflush(stdout);
        if (!XF(mpixfer_load_remote_agent_by_connection(pre->agent, DECODE, conn))) {
            ok = false;
            goto out;
        }
        double deadline = MPI_Wtime() + c->timeout_s;
        while (!mpixfer_check_remote_descs(pre->agent, DECODE, &dsts) &&
               MPI_Wtime() < deadline)
            usleep(1000);
    }
    /* Refuse early (with a clear reason) if decode's slots are not memory it advertised. */
    if (!mpixfer_check_remote_descs(pre->agent, DECODE, &dsts)) {
        fprintf(stderr, "prefill: decode's slots at 0x%" PRIxPTR " are not advertised memory\n",
                dst_pool);
        ok = false;
        goto out;
    }

    char done[64];
    int dlen = snprintf(done, sizeof done, "done %ld", n);
    mpixfer_transfer_request_t tr = {
        .op = MPIXFER_OP_WRITE,
        .src = {MPIXFER_MEM_DRAM, src, count},
        .dst = dsts,
        .remote_name = DECODE,
        .sync_message = done, /* delivered only after the blocks are in decode's pool */
        .sync_message_len = (size_t)dlen,
    };
    double t0 = MPI_Wtime();
    if (!XF(mpixfer_submit_transfer(pre->agent, &tr, &x))) {
        ok = false;
        goto out;
    }
    mpixfer_state_t st = mpixfer_request_wait(x, -1);
    double secs = MPI_Wtime() - t0;
    if (st != MPIXFER_STATE_SUCCESS) {
        mpixfer_status_t why = mpixfer_request_status(x);
        fprintf(stderr, "prefill: transfer ended in %s: %s (%s)\n",
                st == MPIXFER_STATE_FAILURE ? "FAILURE" : "IN_PROGRESS", mpixfer_strerror(why),
                mpixfer_status_name(why));
        ok = false;
        goto out;
    }
    size_t bytes = count * s->block_bytes;
    printf("prefill: wrote %ld block ids x %ld layers x K/V = %zu descriptors, %zu bytes in "
           "%.3f ms (%.3f GB/s)%s\n",
           n, c->layers, count, bytes, secs * 1e3, secs > 0 ? (double)bytes / secs / 1e9 : 0.0,
           conn ? ", to another job" : "");
    fflush(stdout);
out:
    mpixfer_request_free(x);
    free(src);
    free(dst);
    free(ids);
    free(conn);
    return ok;
}

/* Prefill keeps serving its library until decode reports the verdict. @p heard (may be
 * NULL): set when a verdict arrived, good or bad. */
static bool prefill_wait_verdict(const shape_t *s, side_t *pre, bool *heard)
{
    char *v = wait_message(pre->agent, DECODE, s->c->timeout_s);
    if (heard)
        *heard = v != NULL;
    if (!v)
        return false;
    bool ok = strcmp(v, "verified OK") == 0;
    printf("prefill: decode says \"%s\"\n", v);
    fflush(stdout);
    free(v);
    return ok;
}

/* ------------------------------------------------------------- two jobs */

/* The "computed" cache of the prefill side. */
static void fill_pool(const shape_t *s, side_t *pre)
{
    for (long l = 0; l < s->c->layers; l++)
        for (long b = 0; b < s->c->blocks; b++)
            for (int kv = 0; kv < 2; kv++)
                fill_block(pre->pool + kv_offset(s, l, b, kv), s->block_bytes, l, b, kv);
}

/* Write DIR/prefill.info atomically (a temporary file, then rename): the other job polls
 * for the file and must never read half of it. */
static bool write_info(const char *dir, const char *text)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", dir, INFO_FILE);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "prefill: cannot create %s: %s\n", tmp, strerror(errno));
        return false;
    }
    bool ok = fputs(text, f) >= 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        fprintf(stderr, "prefill: cannot write %s: %s\n", path, strerror(errno));
        unlink(tmp);
        return false;
    }
    return true;
}

/* Wait up to @p timeout_s for DIR/prefill.info and parse it: the connection info (malloc'd),
 * then "pool=0x<addr>" and "pool_bytes=<n>". */
static bool read_info(const char *dir, double timeout_s, char **info_p, uintptr_t *pool_p,
                      size_t *bytes_p)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, INFO_FILE);
    double deadline = MPI_Wtime() + timeout_s;
    FILE *f;
    while ((f = fopen(path, "r")) == NULL) {
        if (errno != ENOENT || MPI_Wtime() >= deadline) {
            fprintf(stderr, "decode: cannot read %s%s: %s\n", path,
                    errno == ENOENT ? " (is the prefill job running?)" : "", strerror(errno));
            return false;
        }
        usleep(50 * 1000);
    }
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *info = malloc(n + 1);
    uintmax_t addr = 0;
    size_t bytes = 0;
    if (!info || sscanf(buf, "%s pool=0x%jx pool_bytes=%zu", info, &addr, &bytes) != 3) {
        fprintf(stderr, "decode: %s is malformed\n", path);
        free(info);
        return false;
    }
    *info_p = info;
    *pool_p = (uintptr_t)addr;
    *bytes_p = bytes;
    return true;
}

/* --serve DIR: the prefill job. */
static bool serve_job(const shape_t *s, mpixfer_context_t *ctx)
{
    const cfg_t *c = s->c;
    side_t pre;
    char *info = NULL, text[8192], path[4096];
    bool wrote = false, heard = false;

    bool ok = side_open(ctx, s, PREFILL, true, &pre);
    if (ok)
        fill_pool(s, &pre);
    ok = ok && XF(mpixfer_get_local_connection_info(pre.agent, &info));
    if (ok && strncmp(info, "mpixfer:3:", 10) != 0) {
        fprintf(stderr, "prefill: connection info \"%s\" carries no address: the agent could "
                        "not listen (see the library's warning)\n", info);
        ok = false;
    }
    if (ok) {
        int len = snprintf(text, sizeof text, "%s\npool=0x%" PRIxPTR "\npool_bytes=%zu\n", info,
                           (uintptr_t)pre.pool, s->pool_bytes);
        ok = len > 0 && (size_t)len < sizeof text && write_info(c->serve_dir, text);
        wrote = ok;
    }
    if (ok) {
        printf("prefill: listening; connection info %s written to %s/%s\n", info,
               c->serve_dir, INFO_FILE);
        fflush(stdout);
    }
    ok = ok && prefill_serve(s, &pre);
    ok = ok && prefill_wait_verdict(s, &pre, &heard);
    if (heard) {
        /* Close the link we opened to decode while decode waits (its progress thread
         * answers the BYE), then let decode close the one it opened to us. */
        bool rel = XF(mpixfer_invalidate_remote_agent(pre.agent, DECODE));
        rel = rel && XF(mpixfer_notify_sync_message(pre.agent, DECODE, "released", 8));
        char *m = rel ? wait_message(pre.agent, DECODE, c->timeout_s) : NULL;
        if (m) {
            printf("prefill: decode says \"%s\"\n", m);
            fflush(stdout);
        }
        ok = m && strcmp(m, "exit") == 0 && ok;
        free(m);
    }
    if (wrote) {
        snprintf(path, sizeof path, "%s/%s", c->serve_dir, INFO_FILE);
        unlink(path); /* a later decode job must not find a dead prefill's address */
    }
    mpixfer_free(info);
    if (c->stats)
        ok = print_stats(ctx, "prefill") && ok;
    return side_close(&pre) && ok;
}

/* --connect DIR: the decode job. */
static bool connect_job(const shape_t *s, mpixfer_context_t *ctx)
{
    const cfg_t *c = s->c;
    side_t dec;
    decode_state_t ds = {0};
    char *info = NULL, *mine = NULL;
    uintptr_t raddr = 0;
    size_t rbytes = 0;

    bool ok = side_open(ctx, s, DECODE, true, &dec);
    ok = ok && read_info(c->connect_dir, c->timeout_s, &info, &raddr, &rbytes);
    if (ok && rbytes != s->pool_bytes) {
        fprintf(stderr, "decode: prefill's pool is %zu bytes, ours %zu (same shape options in "
                        "both jobs?)\n", rbytes, s->pool_bytes);
        ok = false;
    }
    double t0 = MPI_Wtime();
    ok = ok && XF(mpixfer_load_remote_agent_by_connection(dec.agent, PREFILL, info));
    if (ok) {
        /* Asynchronous: the descriptor arrives over the new link; poll until it does. */
        mpixfer_mem_desc_t whole = {raddr, rbytes, 0};
        mpixfer_mem_descs_t d = {MPIXFER_MEM_DRAM, &whole, 1};
        double deadline = t0 + c->timeout_s;
        while (!(ok = mpixfer_check_remote_descs(dec.agent, PREFILL, &d)) &&
               MPI_Wtime() < deadline)
            usleep(1000);
        if (ok)
            printf("decode: loaded prefill (another job) by connection info in %.1f ms\n",
                   (MPI_Wtime() - t0) * 1e3);
        else
            fprintf(stderr, "decode: prefill's descriptor did not arrive within %.0f s\n",
                    c->timeout_s);
        fflush(stdout);
    }
    /* Prefill has not loaded us: our connection info rides in the request. */
    ok = ok && XF(mpixfer_get_local_connection_info(dec.agent, &mine));
    ok = ok && decode_request(s, &dec, &ds, mine) && decode_finish(s, &dec, &ds);
    if (ds.verdict_sent) {
        char *m = wait_message(dec.agent, PREFILL, c->timeout_s);
        bool rel = m && strcmp(m, "released") == 0;
        free(m);
        if (rel && XF(mpixfer_notify_sync_message(dec.agent, PREFILL, "exit", 4)))
            printf("decode: told prefill to exit\n");
        else
            ok = false;
        fflush(stdout);
    }
    if (c->stats)
        ok = print_stats(ctx, "decode") && ok;
    /* Destroying the agent releases the link to prefill (BYE, BYE_ACK, disconnect). */
    ok = side_close(&dec) && ok;
    free(ds.ids);
    free(info);
    mpixfer_free(mine);
    return ok;
}

/* Two-job mode, after MPI_Init_thread: one process per job. */
static bool two_jobs_run(const shape_t *s, int size, int provided)
{
    const cfg_t *c = s->c;
    const bool serve = c->serve_dir != NULL;
    if (size != 1) {
        if (g_rank == 0)
            fprintf(stderr, "kv-demo: --serve and --connect run one process per job "
                            "(mpiexec -n 1), not %d\n", size);
        return false;
    }
    if (provided < MPI_THREAD_MULTIPLE) {
        fprintf(stderr, "kv-demo: two-job mode needs MPI_THREAD_MULTIPLE (the listen and "
                        "progress threads); MPI provides level %d\n", provided);
        return false;
    }
    printf("kv-demo: two-job mode, %s job; pool %ld layers x %ld blocks x K/V x %zu bytes = "
           "%zu bytes\n", serve ? "prefill" : "decode", c->layers, c->blocks, s->block_bytes,
           s->pool_bytes);
    fflush(stdout);
    mpixfer_context_t *ctx = NULL;
    if (!XF(mpixfer_context_create(MPI_COMM_WORLD, &ctx)))
        return false;
    bool ok = serve ? serve_job(s, ctx) : connect_job(s, ctx);
    ok = XF(mpixfer_context_destroy(ctx)) && ok;
    printf("kv-demo: %s job %s\n", serve ? "prefill" : "decode", ok ? "OK" : "FAILED");
    return ok;
}

/* Two-job mode needs MPI_THREAD_MULTIPLE, so it is recognised before MPI_Init (parse_cfg
 * runs after it, with the rank known, and checks the options properly). */
static bool wants_two_jobs(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if ((strncmp(argv[i], "--serve", 7) == 0 && (argv[i][7] == '\0' || argv[i][7] == '=')) ||
            (strncmp(argv[i], "--connect", 9) == 0 && (argv[i][9] == '\0' || argv[i][9] == '=')))
            return true;
    return false;
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    /* Affinity before MPI_Init: UCX reads UCX_NET_DEVICES when MPI starts, and the binding
     * should hold before any thread exists. */
    mpixfer_affinity_t aff;
    char aff_line[2048];
    mpixfer_status_t aff_st = mpixfer_affinity_apply(-1, &aff);
    if (aff_st == MPIXFER_OK)
        (void)mpixfer_affinity_describe(&aff, aff_line, sizeof aff_line); /* may truncate */
    else
        snprintf(aff_line, sizeof aff_line, "not applied: %s", mpixfer_status_name(aff_st));

    int provided = MPI_THREAD_SINGLE;
    if (wants_two_jobs(argc, argv))
        MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    else
        MPI_Init(&argc, &argv);
    int size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    cfg_t c;
    int prc = parse_cfg(argc, argv, &c);
    if (prc) {
        if (g_rank == 0)
            usage(prc == 1 ? stdout : stderr);
        MPI_Finalize();
        return prc == 1 ? 0 : 2;
    }
    printf("[rank %d] affinity: %s\n", g_rank, aff_line);
    fflush(stdout);
    shape_t s = {&c, 0, 0};
    s.block_bytes = (size_t)c.tokens * (size_t)c.heads * (size_t)c.head_dim * (size_t)c.dtype;
    s.pool_bytes = (size_t)c.layers * (size_t)c.blocks * 2 * s.block_bytes;

    if (c.serve_dir || c.connect_dir) {
        bool two_ok = two_jobs_run(&s, size, provided);
        MPI_Finalize();
        return two_ok ? 0 : 1;
    }

    /* Roles: one process plays both; otherwise rank 0 prefill, rank 1 decode. */
    const bool is_prefill = g_rank == 0;
    const bool is_decode = size == 1 || g_rank == 1;
    if (g_rank == 0)
        printf("kv-demo: %d process%s; pool %ld layers x %ld blocks x K/V x %zu bytes = %zu "
               "bytes per side\n",
               size, size == 1 ? "" : "es", c.layers, c.blocks, s.block_bytes, s.pool_bytes);

    bool ok = true;
    mpixfer_context_t *ctx = NULL;
    side_t pre = {0}, dec = {0};
    decode_state_t ds = {0};

    if (!XF(mpixfer_context_create(MPI_COMM_WORLD, &ctx)))
        MPI_Abort(MPI_COMM_WORLD, 1); /* collective: nobody can go on without it */

    if (is_prefill) {
        ok = side_open(ctx, &s, PREFILL, false, &pre) && ok;
        if (ok)
            fill_pool(&s, &pre);
    }
    if (is_decode)
        ok = side_open(ctx, &s, DECODE, false, &dec) && ok;

    /* Agree before the collective bootstrap, so a failed setup cannot leave a rank waiting. */
    int mine = ok, all = 0;
    MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    ok = all && XF(mpixfer_bootstrap(ctx));

    if (ok && size == 1) {
        ok = decode_request(&s, &dec, &ds, NULL) && prefill_serve(&s, &pre);
        ok = ok && decode_finish(&s, &dec, &ds);
        ok = prefill_wait_verdict(&s, &pre, NULL) && ok;
    } else if (ok && is_prefill) {
        ok = prefill_serve(&s, &pre) && prefill_wait_verdict(&s, &pre, NULL);
    } else if (ok && is_decode) {
        ok = decode_request(&s, &dec, &ds, NULL) && decode_finish(&s, &dec, &ds);
    }

    /* In rank order, so the processes' texts do not interleave. */
    for (int r = 0; c.stats && r < size; r++) {
        if (r == g_rank)
            ok = print_stats(ctx, size == 1 ? "prefill and decode" : is_prefill ? "prefill"
                                                                                : "decode") &&
                 ok;
        MPI_Barrier(MPI_COMM_WORLD);
    }
    /* Tear down in the same order everywhere: agents, then the collective destroy. */
    if (is_decode)
        ok = side_close(&dec) && ok;
    if (is_prefill)
        ok = side_close(&pre) && ok;
    free(ds.ids);
    ok = XF(mpixfer_context_destroy(ctx)) && ok;

    mine = ok;
    MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (g_rank == 0)
        printf("kv-demo: %s\n", all ? "OK" : "FAILED");
    MPI_Finalize();
    return all ? 0 : 1;
}
