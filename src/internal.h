/* Internal types shared by the library's source files. Not installed. */
#ifndef MPIXFER_INTERNAL_H
#define MPIXFER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "log.h"
#include "mpixfer.h"

#define MPIXFER__NAME_MAX 255
/* An agent's link secret: 128 bits (link.c, handshake.c). */
#define MPIXFER__KEY_LEN 16
/* Control messages use one tag so MPI's non-overtaking rule orders each sender's stream. */
#define MPIXFER__CTRL_TAG 0x6d78
#define MPIXFER__DEFAULT_MAX_SYNC ((size_t)1 << 20)
#define MPIXFER__DEFAULT_MAX_REGIONS ((size_t)1 << 20)
/* Requests with more descriptors than this are issued by progress instead of by submit. */
#define MPIXFER__INLINE_DESCS 64
/* peer_path bit: RMA to that rank is complete when MPI_Put/MPI_Get return (probed at
 * context creation: Open MPI's osc/rdma over single-copy shared memory). Its transfers end
 * with MPI_Put/MPI_Get and are flushed at once, instead of ending with MPI_Rput/MPI_Rget
 * that progress tests so that no wait blocks in a flush the target must serve. */
#define MPIXFER__PATH_SYNC_RMA 0x80
#define MPIXFER__PATH(ctx, r) ((mpixfer_data_path_t)((ctx)->peer_path[r] & 0x7f))

/* Transfers finished inside submit (whose wait then returns at once) poll the control
 * channel only every this many times (see mpixfer_submit_transfer). */
#define MPIXFER__CTRL_POLL_EVERY 16
/* MPI counts are int: one RMA op moves at most this much. */
#define MPIXFER__MAX_OP_BYTES ((size_t)1 << 30)

/* ---------------------------------------------------------------- regions */

/* One registration of an agent. Heap-allocated so requests can pin it by pointer. */
typedef struct mpixfer__region {
    uintptr_t addr;
    size_t len;
    mpixfer_mem_type_t type;
    uint32_t device;
    unsigned pins; /* in-flight requests of the owning agent that use it */
    bool attached; /* holds a reference in the window's attach set */
} mpixfer__region_t;

/* A region as carried in a descriptor. */
typedef struct {
    uint64_t addr;
    uint64_t len;
    uint32_t type;
    uint32_t device;
} mpixfer__wire_region_t;

/* A decoded agent descriptor. Regions sorted by (addr, len, type, device), no duplicates. */
typedef struct {
    uint64_t world_id;
    uint32_t rank;
    /* Before the name: every transfer searches the regions (see mpixfer__remote_t). */
    size_t nregions;
    mpixfer__wire_region_t *regions;
    char name[MPIXFER__NAME_MAX + 1];
    bool has_link; /* version 2 with a link section: reachable from other processes */
    unsigned char key[MPIXFER__KEY_LEN];
    char link_addr[64]; /* "<ipv4>:<port>" */
} mpixfer__desc_t;

/* ---------------------------------------------------------------- links */
#define MPIXFER__HS_MAGIC "MPXL"
#define MPIXFER__HS_VERSION 1
#define MPIXFER__HS_NONCE 32
#define MPIXFER__HS_MAC 32
#define MPIXFER__HS_HELLO_FIXED 40
#define MPIXFER__HS_AUTH_FIXED 52
#define MPIXFER__HS_MAX (MPIXFER__HS_AUTH_FIXED + MPIXFER__NAME_MAX)

typedef struct {
    unsigned char nonce[MPIXFER__HS_NONCE];
    char name[MPIXFER__NAME_MAX + 1];
} mpixfer__hello_t;

typedef struct {
    unsigned char mac[MPIXFER__HS_MAC];
    unsigned char ident[20]; /* world, rank, pid, name length, reserved: covered by mac */
    uint64_t world;
    uint32_t rank, pid;
    char name[MPIXFER__NAME_MAX + 1];
} mpixfer__auth_t;

typedef struct mpixfer__obuf {
    unsigned char *buf;
    size_t n, off;
    struct mpixfer__obuf *next;
} mpixfer__obuf_t;

typedef enum {
    MPIXFER__LINK_CONNECTING, /* client: TCP connect in progress (HELLO queued) */
    MPIXFER__LINK_CHAL,       /* client: waiting for the server's challenge and proof */
    MPIXFER__LINK_WELCOME,    /* client: our proof sent, waiting to be accepted */
    MPIXFER__LINK_DESC,       /* client: accepted, waiting for the descriptor */
    MPIXFER__LINK_READY
} mpixfer__link_state_t;

/* A TCP connection between one agent of ours and one agent of another process, after (or
 * during) the handshake of handshake.c. See link.c. */
typedef struct mpixfer__link {
    int fd;
    mpixfer__link_state_t state;
    bool server;    /* accepted by our listener */
    bool closed;    /* nothing crosses any more; err says why */
    bool cma;       /* bytes move by process_vm_writev/readv */
    bool same_host; /* same kernel boot (UCX error mode NONE) */
    mpixfer_status_t err;
    uint64_t peer_world;
    uint32_t peer_rank, peer_pid;
    unsigned refs; /* client links: remote-agent entries using it */
    char *local_name, *peer_name;
    char peer_addr[128];
    unsigned char key[MPIXFER__KEY_LEN];
    unsigned char nonce_c[MPIXFER__HS_NONCE];
    int64_t deadline_ns; /* client: the handshake must end by then */
    unsigned char *in;
    size_t in_len, in_cap;
    mpixfer__obuf_t *out_head, *out_tail;   /* to write */
    mpixfer__obuf_t *held_head, *held_tail; /* control said before the handshake ended */
    struct mpixfer__link_ucx *ucx;          /* UCX endpoint and remote keys, or NULL */
    struct mpixfer__link *next;
} mpixfer__link_t;

/* Where a control message goes: a rank of the context's communicator, or a link. */
typedef struct {
    int rank;
    mpixfer__link_t *link;
} mpixfer__route_t;

/* A remote agent as an agent knows it. */
/* What a transfer reads (the list walk, rank, link, the desc's region array) fills the
 * first cache line; the desc's name comes after it. */
typedef struct mpixfer__remote {
    char *name;
    struct mpixfer__remote *next;
    mpixfer__link_t *link; /* another process: reached over this link (holds a reference) */
    int rank;
    bool loaded;    /* desc valid and the remote usable */
    bool pending;   /* a descriptor request or a link handshake is outstanding */
    bool from_blob; /* desc came from a blob the caller loaded (a link keeps it) */
    mpixfer__desc_t desc;
} mpixfer__remote_t;

/* A received sync message. */
typedef struct mpixfer__msg {
    char *sender;
    void *data;
    size_t len;
    struct mpixfer__msg *next;
} mpixfer__msg_t;

/* A contiguous attached range of the dynamic window (page-rounded union of registrations). */
typedef struct {
    uintptr_t base;
    size_t len;
    size_t refs;
} mpixfer__attach_t;

/* An MPI_Isend still in flight with the buffer it owns. */
typedef struct mpixfer__send {
    MPI_Request req;
    void *buf;
    bool pinned; /* from mpixfer__gpu_host_alloc */
    struct mpixfer__send *next;
} mpixfer__send_t;

/* A chunk of a staged transfer awaiting its answer. */
typedef struct {
    uint64_t seq;
    uintptr_t local;
    size_t len;
    bool busy;
} mpixfer__chunk_t;

/* Staged GPU transfer: pairs split into chunks that travel as control messages; the
 * target copies them into (or out of) its memory and answers each one. */
typedef struct {
    uint64_t id;
    mpixfer_op_t op;
    mpixfer_mem_type_t ltype, rtype;
    mpixfer_mem_desc_t *local, *remote; /* copies of the request's lists */
    size_t npairs;
    size_t pair, off; /* next chunk to post */
    uint64_t next_seq;
    int64_t last_heard_ns; /* submit, or the last answer: the stall clock */
    unsigned inflight;
    mpixfer__chunk_t *chunks; /* pipeline depth entries */
    mpixfer_status_t err;
    /* WRITE chunks carry their expiry (CLOCK_REALTIME): the latest one posted. Chunks
     * given up on (no answer will count) are harmless only once it has passed. */
    int64_t expires_max_rt;
    bool abandoned;
} mpixfer__staged_t;

/* An agent's counters (telemetry.c, the hooks below). Every update holds the context's
 * lock, which submit and completion hold anyway: plain increments, no atomics. What one
 * request updates comes first, on one cache line; the histograms' counts are derived
 * (post: requests; transfer: succeeded + failed), so each records one bucket and a sum. */
typedef struct {
    uint64_t requests, succeeded, failed, bytes_sent, bytes_received;
    uint64_t post_sum_ns, xfer_sum_ns, sync_sent;
    uint64_t post[MPIXFER_HIST_BUCKETS], xfer[MPIXFER_HIST_BUCKETS];
    uint64_t failures[MPIXFER_STATUS_SLOTS];
    uint64_t sync_received, submit_errors;
} mpixfer__tel_t;

struct mpixfer_agent {
    /* What every transfer reads first, together. */
    mpixfer_context_t *ctx;
    mpixfer__remote_t *remotes;
    mpixfer__region_t **regions; /* sorted by (addr, len, type, device) */
    size_t nregions, cap_regions;
    char *name;
    mpixfer_agent_config_t cfg;
    bool wants_thread;
    bool reachable; /* may be reached by links: its key is in its descriptor and info */
    unsigned char key[MPIXFER__KEY_LEN]; /* the link capability (getrandom at creation) */
    mpixfer__msg_t *inbox_head, *inbox_tail;
    struct mpixfer_agent *next;
    mpixfer__tel_t tel; /* telemetry.c */
};

typedef struct mpixfer__path mpixfer__path_t; /* a data path's operations (below) */

struct mpixfer_request {
    mpixfer_context_t *ctx;
    mpixfer_agent_t *agent; /* NULL once complete: a complete request touches nothing */
    _Atomic int state;      /* mpixfer_state_t */
    _Atomic int status;     /* mpixfer_status_t */
    mpixfer__route_t target;
    const mpixfer__path_t *path; /* how its bytes move */
    /* Points at name_inline when the name fits (the usual case), at the caller's string
     * while submit runs (name_borrowed), or at its own allocation. */
    char *remote_name;
    void *sync;
    size_t sync_len;
    bool has_sync;
    bool name_borrowed;
    /* Regions this request uses, one entry each time the descriptors move to another
     * region: usually one or two, so they start in pins_inline and only a request that
     * hops between many regions allocates (no allocation per descriptor either way). */
    mpixfer__region_t **pins;
    size_t npins, cap_pins;
    mpixfer__region_t *pins_inline[4];
    bool orphaned;             /* freed by the user while in flight: progress frees it */
    mpixfer__staged_t *staged; /* NULL for RMA transfers */
    /* Large RMA requests are issued by progress, not by submit, so posting stays cheap;
     * these are copies of the validated lists until then. */
    mpixfer_mem_desc_t *dsrc, *ddst;
    size_t dcount, dcap; /* dcap: pairs the buffer at dsrc holds (ddst = dsrc + dcount) */
    mpixfer_op_t op;
    bool device;
    bool mpi_issued; /* some op went through MPI: completion needs a flush */
    /* The request of the last MPI op (MPI_Rput/MPI_Rget): progress tests it and flushes
     * only once it is done, so no wait ever blocks on a peer that does not progress. */
    MPI_Request mpi_done;
    bool issuing; /* a waiting thread issues the deferred lists without the lock */
    bool on_link; /* moved over a link: lop (UCX) or done in submit (copies) */
    struct mpixfer__link_op *lop;
    mpixfer_status_t link_err;
    mpixfer_status_t issue_err;
    /* Stopping (mpixfer_request_cancel, a deadline): progress asks the path to stop x
     * instead of testing it; by stop_by_ns the path must give up. */
    bool stopping;
    bool stop_gave_up;         /* the path abandoned x at stop_by_ns */
    mpixfer_status_t stop_why; /* CANCELED, or TIMEOUT for a deadline */
    int64_t deadline_ns;       /* 0: none (mpixfer__now_ns clock) */
    int64_t stop_by_ns;
    struct mpixfer_request *next_pending;
    /* Telemetry: when submit began, the bytes of its pairs, and whether its post time was
     * recorded (when it was queued; one finished in submit records it on completion). */
    int64_t t0_ns;
    uint64_t bytes;
    bool tel_posted;
    char name_inline[48]; /* last: a request finished in submit never writes it */
};

typedef struct mpixfer__arena mpixfer__arena_t;

struct mpixfer_context {
    /* What every transfer reads or writes (submit, wait) comes first, on three cache lines
     * of a 64-byte aligned allocation: once a large copy has evicted the caches each line
     * touched is one trip to memory (~80 ns here), and a 1 MiB transfer lasts only ~60 us
     * (bench: the contiguous target). Line 0. */
    _Alignas(64) pthread_mutex_t lock; /* recursive; guards the mutable state and every MPI
                                        * call */
    mpixfer_request_t *pending_head, *pending_tail;
    int rank;
    /* MPIXFER_ISSUE: which transfers move their bytes without the context lock.
     * 0 "locked": none; 1 "auto" (default): those made only of copies into node peers'
     * arenas (no MPI call); 2 "unlocked": also MPI RMA at MPI_THREAD_MULTIPLE. */
    int issue_mode;
    /* Line 1. */
    mpixfer_stats_t stats;
    MPI_Win win;
    /* Line 2 (params runs into line 3; max_sync_message, the one read per request, not). */
    /* Per rank: MPIXFER_DATA_PATH_RMA or _MESSAGES (never AUTO), read through
     * MPIXFER__PATH, plus MPIXFER__PATH_SYNC_RMA; NULL on one process. */
    uint8_t *peer_path;
    mpixfer__arena_t *arena; /* NULL without an arena */
    mpixfer_gpu_path_t gpu_path;
    unsigned ctrl_skipped; /* submits that finished a request without polling control */
    bool has_win;
    mpixfer_context_params_t params;

    MPI_Comm comm;
    int size;
    int thread_level;
    uint64_t world_id;
    uint64_t next_request_id;

    mpixfer_agent_t *agents;
    mpixfer__attach_t *attach;
    size_t nattach, cap_attach;
    /* The list buffer of the last queued request, kept for the next: steady posting of
     * 40,000-descriptor requests then allocates nothing. (A fresh 1.3 MB malloc each time
     * cost 5 ms instead of 0.3 once glibc had trimmed its heap: page faults.) */
    mpixfer_mem_desc_t *spare_lists;
    size_t spare_cap;
    mpixfer__send_t *sends;

    mpixfer__link_t *links;
    struct mpixfer__learned *learned; /* agent name -> link, from messages over links */
    struct mpixfer__links *lk;        /* listener and link thread; NULL until needed */
    struct mpixfer__ucx *ucx;         /* UCX context and worker; NULL until a link needs it */

    pthread_t thread;
    bool thread_running;
    unsigned thread_users;
    atomic_uint thread_gen;
};

/* ----------------------------------------------------------- context.c */
void mpixfer__lock(mpixfer_context_t *ctx);
void mpixfer__unlock(mpixfer_context_t *ctx);
mpixfer_agent_t *mpixfer__find_local_agent(mpixfer_context_t *ctx, const char *name);
bool mpixfer__name_valid(const char *name);

/* ---------------------------------------------------------- registry.c */
/* Attach [addr, addr+len) (page-rounded, merged, reference-counted) to the window. */
/* @p nrefs registrations lie in [addr, addr+len); each is removed on its own later. */
mpixfer_status_t mpixfer__registry_add(mpixfer_context_t *ctx, uintptr_t addr, size_t len,
                                       size_t nrefs);
void mpixfer__registry_remove(mpixfer_context_t *ctx, uintptr_t addr, size_t len);
void mpixfer__registry_clear(mpixfer_context_t *ctx);

/* ------------------------------------------------------------- agent.c */
/* Find the registration of @p agent holding [addr, addr+len): OK, NOT_FOUND (start in no
 * region) or OUT_OF_RANGE (starts in one, runs past its end). */
mpixfer_status_t mpixfer__agent_find_region(const mpixfer_agent_t *agent, mpixfer_mem_type_t type,
                                            const mpixfer_mem_desc_t *d,
                                            mpixfer__region_t **region_p);
mpixfer__remote_t *mpixfer__find_remote(const mpixfer_agent_t *agent, const char *name);
/* Why @p r can never be reached over its link (DENIED, UNREACHABLE, ...), or OK: no link,
 * a live one, or one we closed ourselves (CANCELED: the remote may be loaded again). */
static inline mpixfer_status_t mpixfer__remote_link_err(const mpixfer__remote_t *r)
{
    return r->link != NULL && r->link->closed && r->link->err != MPIXFER_ERR_CANCELED
               ? r->link->err
               : MPIXFER_OK;
}
void mpixfer__agent_store_desc(mpixfer_agent_t *agent, mpixfer__desc_t *desc,
                               mpixfer__link_t *link);
mpixfer_status_t mpixfer__check_mem_type(mpixfer_mem_type_t type);

/* -------------------------------------------------------------- desc.c */
/* @p with_link: add the link section (listener address, key) when the agent has one. */
mpixfer_status_t mpixfer__desc_encode(const mpixfer_agent_t *agent, bool with_link, void **blob_p,
                                      size_t *len_p);
/* Untrusted bytes: everything is checked. On success @p out owns its regions array. */
mpixfer_status_t mpixfer__desc_decode(const void *blob, size_t len, size_t max_regions,
                                      mpixfer__desc_t *out);
void mpixfer__desc_fini(mpixfer__desc_t *desc);
/* Lookup in decoded regions: OK, NOT_FOUND or OUT_OF_RANGE as mpixfer__agent_find_region. */
mpixfer_status_t mpixfer__desc_find(const mpixfer__desc_t *desc, mpixfer_mem_type_t type,
                                    const mpixfer_mem_desc_t *d);
/* @p addr NULL: version 1 (the agent's own job only); else version 3 with the link
 * listener's address and the agent's key. */
mpixfer_status_t mpixfer__conninfo_format(uint64_t world_id, int rank, const char *addr,
                                          const unsigned char *key, const char *name,
                                          char **info_p);
/* *addr_p: a malloc'd "<ip>:<port>", or NULL (version 1); key_p filled when it is set. */
mpixfer_status_t mpixfer__conninfo_parse(const char *info, uint64_t *world_id_p, int *rank_p,
                                         char **addr_p, unsigned char key_p[MPIXFER__KEY_LEN],
                                         char name[MPIXFER__NAME_MAX + 1]);

/* ------------------------------------------------------------ notify.c */
typedef enum {
    MPIXFER__CTRL_SYNC = 1,     /* sync message: payload = user bytes */
    MPIXFER__CTRL_DESC_REQ = 2, /* "send me your descriptor" */
    MPIXFER__CTRL_DESC_REP = 3, /* payload = descriptor */
    MPIXFER__CTRL_DESC_NAK = 4, /* no such agent here */
    MPIXFER__CTRL_XWRITE = 5,   /* staged chunk to copy into the receiver's memory */
    MPIXFER__CTRL_XACK = 6,     /* answer to XWRITE */
    MPIXFER__CTRL_XREAD = 7,    /* ask for a chunk of the receiver's memory */
    MPIXFER__CTRL_XDATA = 8,    /* answer to XREAD, with the bytes */
    MPIXFER__CTRL_BYE = 9,      /* over a link: I am disconnecting */
    MPIXFER__CTRL_BYE_ACK = 10  /* over a link: so am I */
} mpixfer__ctrl_kind_t;

typedef struct {
    mpixfer__ctrl_kind_t kind;
    char sender[MPIXFER__NAME_MAX + 1];
    char receiver[MPIXFER__NAME_MAX + 1];
    const void *payload;
    size_t payload_len;
} mpixfer__ctrl_t;

/* Untrusted bytes from the wire: everything checked; payload points into @p buf. */
mpixfer_status_t mpixfer__ctrl_decode(const void *buf, size_t len, mpixfer__ctrl_t *out);
/* A control message buffer with room for @p len payload bytes at *payload_p, to fill and
 * then hand to mpixfer__ctrl_post. Pinned when @p pinned (device copies into it). */
mpixfer_status_t mpixfer__ctrl_alloc(mpixfer__ctrl_kind_t kind, const char *sender,
                                     const char *receiver, size_t len, bool pinned,
                                     unsigned char **buf_p, size_t *n_p, void **payload_p);
/* Isend a buffer from mpixfer__ctrl_alloc over @p to; takes ownership. Lock held. */
mpixfer_status_t mpixfer__ctrl_post(mpixfer_context_t *ctx, mpixfer__route_t to, unsigned char *buf,
                                    size_t n, bool pinned);
/* Send a control message; to this process it is dispatched directly. Lock held. */
mpixfer_status_t mpixfer__ctrl_send(mpixfer_context_t *ctx, mpixfer__route_t to,
                                    mpixfer__ctrl_kind_t kind, const char *sender,
                                    const char *receiver, const void *payload, size_t len);
static inline mpixfer__route_t mpixfer__rank_route(int rank)
{
    mpixfer__route_t r = {rank, NULL};
    return r;
}
static inline bool mpixfer__route_eq(mpixfer__route_t a, mpixfer__route_t b)
{
    return a.link == b.link && (a.link != NULL || a.rank == b.rank);
}
/* Handle one decoded control message from @p src. Lock held. */
void mpixfer__ctrl_dispatch(mpixfer_context_t *ctx, mpixfer__route_t src, const mpixfer__ctrl_t *c);
/* Receive and dispatch what has arrived; returns the number handled. Lock held. */
int mpixfer__ctrl_poll(mpixfer_context_t *ctx);
/* Complete finished Isends; returns how many are still in flight. Lock held. */
size_t mpixfer__sends_test(mpixfer_context_t *ctx);
void mpixfer__inbox_clear(mpixfer_agent_t *agent);

/* ------------------------------------------------------------ arena.c */
/* Collective over the context's communicator. */
mpixfer_status_t mpixfer__arena_create(mpixfer_context_t *ctx, size_t size);
/* Collective over the node; the caller has detached the segment already. */
void mpixfer__arena_destroy(mpixfer_context_t *ctx);
/* Our mapping of [addr, addr+len) in @p rank's arena, or NULL (not there, other node). */
void *mpixfer__arena_map(const mpixfer_context_t *ctx, int rank, uintptr_t addr, size_t len);

/* -------------------------------------------------------------- rma.c */
/* Issue the puts/gets of validated pairs to @p rank: copies for this process and for a
 * node peer's arena, MPI_Put/MPI_Get otherwise; *mpi_ops_p counts the latter (0: the
 * transfer is complete on return). Adds what it did to @p counts (not to ctx->stats), and
 * touches nothing of the context that changes after creation: a caller at
 * MPI_THREAD_MULTIPLE may run it without the lock for another process's memory. */
mpixfer_status_t mpixfer__rma_issue(mpixfer_context_t *ctx, mpixfer_op_t op, int rank,
                                    const mpixfer_mem_desc_t *src, const mpixfer_mem_desc_t *dst,
                                    size_t count, bool device, size_t *mpi_ops_p,
                                    MPI_Request *done_p, mpixfer_stats_t *counts);
mpixfer_status_t mpixfer__rma_flush(mpixfer_context_t *ctx, int rank);

/* --------------------------------------------------------------- gpu.c */
bool mpixfer__gpu_available(void);
bool mpixfer__gpu_emulated(void);
const char *mpixfer__gpu_unavailable_reason(void);
/* VRAM: device memory of d->device_id over the whole range; DRAM: not device memory. */
mpixfer_status_t mpixfer__gpu_check_desc(mpixfer_mem_type_t type, const mpixfer_mem_desc_t *d);
/* Copy in any direction between host and device memory (synchronous). */
mpixfer_status_t mpixfer__gpu_copy(void *dst, const void *src, size_t len);
/* For every rank of the context, its rank in @p node (a split of ctx->comm), or
 * MPI_UNDEFINED; *node_rank_p (ctx->size entries) is the caller's to free. Local. */
mpixfer_status_t mpixfer__node_ranks(const mpixfer_context_t *ctx, MPI_Comm node,
                                     int **node_rank_p);

/* ---------------------------------------------------------- data paths
 *
 * How one request moves its bytes, chosen once per request at submit from its peer and
 * memory kinds (request.c, choose_path), so that the paths sit side by side and a new one
 * is a new table in a file of its own:
 *   rma     (rma.c)       agents of this process, node peers' arenas, MPI RMA;
 *   staged  (staging.c)   chunks by messages: VRAM without a CUDA-aware MPI, peers the
 *                         context reaches by messages, VRAM over a link;
 *   link    (link_data.c) host memory of another process's agent over a link.
 * Every hook runs with the context lock held (some drop it while they copy, saying so). */
struct mpixfer__path {
    const char *name;
    /* Starts validated request x. OK: x is under way, or finished already (*done_p set,
     * its status in *st_p); an error: nothing of x is in flight. */
    mpixfer_status_t (*start)(mpixfer_context_t *ctx, mpixfer_request_t *x,
                              const mpixfer_transfer_request_t *req, bool *done_p,
                              mpixfer_status_t *st_p);
    /* Optional: issues what start deferred. Progress calls it for every queued request
     * before it tests any, so one flush per target completes them all. */
    void (*issue)(mpixfer_context_t *ctx, mpixfer_request_t *x);
    /* Optional: a thread waiting on x may move x's bytes itself (without the lock). */
    void (*wait_issue)(mpixfer_context_t *ctx, mpixfer_request_t *x);
    /* One look at queued x: true once it has ended, its status in *st_p, and *flush_p when
     * the target's MPI_Win_flush must still complete it. */
    bool (*test)(mpixfer_context_t *ctx, mpixfer_request_t *x, int *work, mpixfer_status_t *st_p,
                 bool *flush_p);
    /* Stopping x (x->stopping): issue nothing more, drop what is not under way, and say
     * true once no byte of x can move any more (*flush_p as for test). With give_up (the
     * stall timeout passed) it must make x quiescent locally now, abandoning what a peer
     * never completed, and return true. */
    bool (*stop)(mpixfer_context_t *ctx, mpixfer_request_t *x, bool give_up, bool *flush_p);
};

extern const mpixfer__path_t mpixfer__path_rma, mpixfer__path_staged, mpixfer__path_link;

/* --------------------------------------------------------------- copy.c */
/* Host memory to host memory, ranges may overlap; fastest form for large ranges. */
void mpixfer__host_copy(void *dst, const void *src, size_t len);

/* A host copy when @p device is false (both sides host memory), else mpixfer__gpu_copy. */
static inline mpixfer_status_t mpixfer__copy(void *dst, const void *src, size_t len, bool device)
{
    if (!device) {
        mpixfer__host_copy(dst, src, len);
        return MPIXFER_OK;
    }
    return mpixfer__gpu_copy(dst, src, len);
}
void *mpixfer__gpu_host_alloc(size_t len);
void mpixfer__gpu_host_free(void *p);
bool mpixfer__mpi_gpu_aware(void);
mpixfer_gpu_path_t mpixfer__gpu_choose_path(void);

/* ----------------------------------------------------------- staging.c */
/* Plan a staged transfer for request @p x. Lock held. */
mpixfer_status_t mpixfer__staged_start(mpixfer_context_t *ctx, mpixfer_request_t *x,
                                       const mpixfer_transfer_request_t *req);
/* Post chunks up to the pipeline depth; true when every chunk is answered. Lock held. */
bool mpixfer__staged_advance(mpixfer_context_t *ctx, mpixfer_request_t *x, int *work);
/* Stops awaiting answers to x's chunks out (their answers are dropped from now on). */
void mpixfer__staged_abandon(mpixfer_context_t *ctx, mpixfer_request_t *x, bool may_land);
void mpixfer__staged_free(mpixfer__staged_t *s);
/* Handlers for the staged control messages (from dispatch; @p agent NULL when the
 * receiver does not exist, which refuses the chunk). Lock held. */
void mpixfer__staged_on_message(mpixfer_context_t *ctx, mpixfer__route_t src,
                                mpixfer_agent_t *agent, const mpixfer__ctrl_t *c);

/* --------------------------------------------------------- handshake.c */
mpixfer_status_t mpixfer__random(void *buf, size_t len);
size_t mpixfer__hs_hello_encode(const unsigned char nonce_c[MPIXFER__HS_NONCE], const char *name,
                                unsigned char *out);
/* Untrusted bytes: OK, IN_PROGRESS (*need_p bytes are needed) or BAD_DESC. */
mpixfer_status_t mpixfer__hs_hello_parse(const void *buf, size_t len, size_t *need_p,
                                         mpixfer__hello_t *out);
size_t mpixfer__hs_auth_encode(const unsigned char mac[MPIXFER__HS_MAC], uint64_t world,
                               uint32_t rank, uint32_t pid, const char *name, unsigned char *out);
mpixfer_status_t mpixfer__hs_auth_parse(const void *buf, size_t len, size_t *need_p,
                                        mpixfer__auth_t *out);
void mpixfer__hs_mac_server(const unsigned char key[MPIXFER__KEY_LEN],
                            const unsigned char nonce_c[MPIXFER__HS_NONCE],
                            const unsigned char nonce_s[MPIXFER__HS_NONCE], const char *name,
                            unsigned char mac[MPIXFER__HS_MAC]);
void mpixfer__hs_mac_client(const unsigned char key[MPIXFER__KEY_LEN],
                            const unsigned char nonce_c[MPIXFER__HS_NONCE],
                            const unsigned char nonce_s[MPIXFER__HS_NONCE], const char *name,
                            const unsigned char ident[20], const char *client,
                            unsigned char mac[MPIXFER__HS_MAC]);
/* Constant time. */
bool mpixfer__hs_mac_equal(const unsigned char a[MPIXFER__HS_MAC],
                           const unsigned char b[MPIXFER__HS_MAC]);

/* -------------------------------------------------------------- link.c */
/* The listener (and the link thread); UNSUPPORTED with MPIXFER_LINK=none. Lock held. */
mpixfer_status_t mpixfer__listen_ensure(mpixfer_context_t *ctx);
/* "<ip>:<port>" of the listener, or NULL. */
const char *mpixfer__listen_addr(const mpixfer_context_t *ctx);
/* A new link from @p agent to @p peer_name at @p addr holding its @p key; the handshake
 * runs in the link thread. A reference for the caller. Lock held. */
mpixfer_status_t mpixfer__link_connect(mpixfer_context_t *ctx, mpixfer_agent_t *agent,
                                       const char *peer_name, const char *addr,
                                       const unsigned char key[MPIXFER__KEY_LEN],
                                       uint64_t peer_world, mpixfer__link_t **link_p);
/* Drop a reference; the last closes the connection. Lock held. */
void mpixfer__link_release(mpixfer_context_t *ctx, mpixfer__link_t *link);
/* Send a control message buffer (from mpixfer__ctrl_alloc, owned from now on). Lock held. */
mpixfer_status_t mpixfer__link_post(mpixfer_context_t *ctx, mpixfer__link_t *l, unsigned char *buf,
                                    size_t n);
void mpixfer__link_fail(mpixfer_context_t *ctx, mpixfer__link_t *l, mpixfer_status_t why);
/* Close everything, stop the link thread (context destruction). Lock held. */
void mpixfer__links_close_all(mpixfer_context_t *ctx);
void mpixfer__route_learn(mpixfer_context_t *ctx, const char *name, mpixfer__link_t *link);
mpixfer__link_t *mpixfer__route_lookup(mpixfer_context_t *ctx, const char *name);

/* --------------------------------------------------------- link_data.c */
void mpixfer__link_data_probe(mpixfer_context_t *ctx, mpixfer__link_t *l, uint64_t cookie_addr,
                              const unsigned char cookie[16]);
mpixfer_status_t mpixfer__link_data_export(mpixfer_context_t *ctx, const mpixfer_agent_t *a,
                                           void **buf_p, size_t *len_p);
mpixfer_status_t mpixfer__link_data_import(mpixfer_context_t *ctx, mpixfer__link_t *l,
                                           const unsigned char *p, size_t n);
void mpixfer__link_data_fail(mpixfer_context_t *ctx, mpixfer__link_t *l, mpixfer_status_t why);
void mpixfer__link_data_free(mpixfer_context_t *ctx, mpixfer__link_t *l);
void mpixfer__link_data_fini(mpixfer_context_t *ctx);
void mpixfer__link_data_progress(mpixfer_context_t *ctx);
int mpixfer__link_data_wait_fd(mpixfer_context_t *ctx, int64_t *next_ns);
/* Start request @p x over @p l: done on return unless x->lop is set. Lock held. */
mpixfer_status_t mpixfer__link_submit(mpixfer_context_t *ctx, mpixfer_request_t *x,
                                      mpixfer__link_t *l, const mpixfer_transfer_request_t *req);
bool mpixfer__link_req_test(mpixfer_context_t *ctx, mpixfer_request_t *x, mpixfer_status_t *st_p);

/* ----------------------------------------------------------- request.c */
int64_t mpixfer__now_ns(void);
/* CLOCK_REALTIME in ns: what two processes (two hosts with synchronized clocks) agree on. */
int64_t mpixfer__realtime_ns(void);
/* Complete pending requests (flush, then sync message). Lock held. Returns work done. */
int mpixfer__requests_progress(mpixfer_context_t *ctx, const mpixfer_agent_t *only);

/* --------------------------------------------------------- telemetry.c */
/* The bucket of a duration in an mpixfer_histogram_t (see MPIXFER_HIST_BUCKET_NS). */
static inline unsigned mpixfer__tel_bucket(int64_t ns)
{
    uint64_t d = ns > 0 ? (uint64_t)ns : 0;
    unsigned b;

    if (d <= MPIXFER_HIST_BUCKET_NS(0))
        return 0;
    b = (unsigned)(64 - __builtin_clzll(d - 1)) - 8; /* ceil(log2 d) - 8 */
    return b < MPIXFER_HIST_BUCKETS - 1 ? b : MPIXFER_HIST_BUCKETS - 1;
}

/* The hooks: lock held in each. Submit accepted x (begun at @p t0_ns, @p bytes long). */
static inline void mpixfer__tel_submitted(mpixfer_agent_t *a, mpixfer_request_t *x, int64_t t0_ns,
                                          uint64_t bytes)
{
    a->tel.requests++;
    x->t0_ns = t0_ns;
    x->bytes = bytes;
}

/* Submit queued x (progress finishes it): its post time ends now. */
static inline void mpixfer__tel_queued(mpixfer_agent_t *a, mpixfer_request_t *x)
{
    int64_t d = mpixfer__now_ns() - x->t0_ns;

    a->tel.post[mpixfer__tel_bucket(d)]++;
    a->tel.post_sum_ns += (uint64_t)d;
    x->tel_posted = true;
}

/* x reaches its final state with @p st, its sync message (if any) sent when st is OK. */
static inline void mpixfer__tel_complete(mpixfer_request_t *x, mpixfer_status_t st)
{
    mpixfer_agent_t *a = x->agent;
    int64_t d;
    unsigned b;

    if (a == NULL)
        return;
    d = mpixfer__now_ns() - x->t0_ns;
    b = mpixfer__tel_bucket(d);
    if (!x->tel_posted) { /* finished inside submit: that was its post time too */
        a->tel.post[b]++;
        a->tel.post_sum_ns += (uint64_t)d;
    }
    a->tel.xfer[b]++;
    a->tel.xfer_sum_ns += (uint64_t)d;
    if (st == MPIXFER_OK) {
        a->tel.succeeded++;
        if (x->op == MPIXFER_OP_WRITE)
            a->tel.bytes_sent += x->bytes;
        else
            a->tel.bytes_received += x->bytes;
        a->tel.sync_sent += x->has_sync;
    } else {
        a->tel.failed++;
        a->tel.failures[st < 0 && st > -MPIXFER_STATUS_SLOTS ? -st : 0]++;
    }
}

/* A submit that returned @p st != OK. Takes the lock. */
void mpixfer__tel_submit_error(mpixfer_agent_t *a, mpixfer_status_t st);

/* ---------------------------------------------------------- progress.c */
/* One pass: control messages, sends, requests. Lock held. Returns work done. */
int mpixfer__progress_locked(mpixfer_context_t *ctx);
mpixfer_status_t mpixfer__thread_acquire(mpixfer_context_t *ctx);
/* Stops the thread when the last user goes; call WITHOUT the lock. */
void mpixfer__thread_release(mpixfer_context_t *ctx);
void mpixfer__thread_stop(mpixfer_context_t *ctx);

#endif
