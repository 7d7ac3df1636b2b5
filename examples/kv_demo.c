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

#include "mpixfer.h"

#define PREFILL "prefill"
#define DECODE "decode"
#define EMPTY_BYTE 0xEE /* what decode's pool holds before the transfer */

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
} cfg_t;

static void usage(FILE *f)
{
    fprintf(f, "usage: mpiexec -n 2 mpixfer-kv-demo [options]   (or -n 1: both in one process)\n"
               "  --layers L        layers (default 4)\n"
               "  --blocks B        KV blocks per layer in each pool (default 64)\n"
               "  --block-tokens T  tokens per block (default 16)\n"
               "  --heads H         KV heads (default 8)\n"
               "  --head-dim D      head dimension (default 128)\n"
               "  --dtype-bytes N   bytes per element (default 2)\n"
               "  --request N       block ids decode asks for (default 16, <= B)\n"
               "  --seed S          picks the block ids (default 42)\n"
               "  --timeout S       seconds to wait for a message (default 60)\n"
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
        {NULL, 0, NULL, 0}};
    *c = (cfg_t){4, 64, 16, 8, 128, 2, 16, 42, 60.0};
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
        case 'h': return 1;
        default: ok = false; break;
        }
        if (!ok) {
            if (g_rank == 0)
                fprintf(stderr, "kv-demo: bad option or value: %s\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc || c->request > c->blocks) {
        if (g_rank == 0)
            fprintf(stderr, "kv-demo: %s\n", optind < argc ? "unexpected argument"
                                                          : "--request must be <= --blocks");
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

static bool side_open(mpixfer_context_t *ctx, const shape_t *s, const char *name, side_t *sd)
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
    long *ids;    /* requested block ids; slot i of every layer receives ids[i] */
    double t_req; /* when the request left */
} decode_state_t;

/* Pick N distinct block ids (partial Fisher-Yates, xorshift64*) and ask prefill for them. */
static bool decode_request(const shape_t *s, side_t *dec, decode_state_t *ds)
{
    const cfg_t *c = s->c;
    long *all = malloc((size_t)c->blocks * sizeof *all);
    ds->ids = malloc((size_t)c->request * sizeof *ds->ids);
    /* "kv-request pool=0x... block_bytes=... ids=a,b,c": at most ~21 bytes per id */
    size_t cap = 256 + (size_t)c->request * 22;
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
    int len = snprintf(msg, cap, "kv-request pool=0x%" PRIxPTR " block_bytes=%zu ids=",
                       (uintptr_t)dec->pool, s->block_bytes);
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
    return sent && bad_total == 0;
}

/* -------------------------------------------------------------- prefill */

/* Parse "kv-request pool=0x.. block_bytes=.. ids=a,b,..": fills pool and ids (malloc'd). */
static bool parse_request(const char *msg, const shape_t *s, uintptr_t *pool, long **ids_p,
                          long *n_p)
{
    uintmax_t addr = 0;
    size_t bb = 0;
    int pos = 0;
    if (sscanf(msg, "kv-request pool=0x%jx block_bytes=%zu ids=%n", &addr, &bb, &pos) != 2 ||
        pos == 0) {
        fprintf(stderr, "prefill: malformed request \"%.80s\"\n", msg);
        return false;
    }
    if (bb != s->block_bytes) {
        fprintf(stderr, "prefill: decode uses %zu-byte blocks, we use %zu (same flags on both "
                        "sides?)\n", bb, s->block_bytes);
        return false;
    }
    long *ids = malloc((size_t)s->c->blocks * sizeof *ids);
    if (!ids)
        return false;
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
            return false;
        }
        ids[n++] = v;
        p = *end ? end + 1 : end;
    }
    if (n == 0) {
        fprintf(stderr, "prefill: empty block id list\n");
        free(ids);
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
    bool ok = parse_request(req, s, &dst_pool, &ids, &n);
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
           "%.3f ms (%.3f GB/s)\n",
           n, c->layers, count, bytes, secs * 1e3, secs > 0 ? (double)bytes / secs / 1e9 : 0.0);
    fflush(stdout);
out:
    mpixfer_request_free(x);
    free(src);
    free(dst);
    free(ids);
    return ok;
}

/* Prefill keeps serving its library until decode reports the verdict. */
static bool prefill_wait_verdict(const shape_t *s, side_t *pre)
{
    char *v = wait_message(pre->agent, DECODE, s->c->timeout_s);
    if (!v)
        return false;
    bool ok = strcmp(v, "verified OK") == 0;
    printf("prefill: decode says \"%s\"\n", v);
    fflush(stdout);
    free(v);
    return ok;
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
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
    shape_t s = {&c, 0, 0};
    s.block_bytes = (size_t)c.tokens * (size_t)c.heads * (size_t)c.head_dim * (size_t)c.dtype;
    s.pool_bytes = (size_t)c.layers * (size_t)c.blocks * 2 * s.block_bytes;

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
        ok = side_open(ctx, &s, PREFILL, &pre) && ok;
        if (ok) /* the "computed" cache */
            for (long l = 0; l < c.layers; l++)
                for (long b = 0; b < c.blocks; b++)
                    for (int kv = 0; kv < 2; kv++)
                        fill_block(pre.pool + kv_offset(&s, l, b, kv), s.block_bytes, l, b, kv);
    }
    if (is_decode)
        ok = side_open(ctx, &s, DECODE, &dec) && ok;

    /* Agree before the collective bootstrap, so a failed setup cannot leave a rank waiting. */
    int mine = ok, all = 0;
    MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    ok = all && XF(mpixfer_bootstrap(ctx));

    if (ok && size == 1) {
        ok = decode_request(&s, &dec, &ds) && prefill_serve(&s, &pre);
        ok = ok && decode_finish(&s, &dec, &ds);
        ok = prefill_wait_verdict(&s, &pre) && ok;
    } else if (ok && is_prefill) {
        ok = prefill_serve(&s, &pre) && prefill_wait_verdict(&s, &pre);
    } else if (ok && is_decode) {
        ok = decode_request(&s, &dec, &ds) && decode_finish(&s, &dec, &ds);
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
