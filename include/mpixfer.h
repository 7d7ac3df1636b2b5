/**
 * @file mpixfer.h
 * @brief mpixfer: a transfer agent that moves registered memory (KV-cache blocks)
 *        between processes over MPI one-sided RMA.
 *
 * The contract follows TensorRT-LLM's transfer-agent interface (BaseTransferAgent):
 * named agents register memory, exchange binary agent descriptors, then WRITE (put)
 * or READ (get) lists of memory descriptors to/from a remote agent, optionally followed
 * by a sync message that is delivered only after the data is in place.
 *
 * Threading: every function may be called from several threads at once; functions that
 * take a context or agent serialise internally. The library never calls MPI_Init or
 * MPI_Finalize; create contexts after MPI_Init and destroy them before MPI_Finalize.
 *
 * Ownership: anything the library returns through a `void **` or `char **` is freed with
 * mpixfer_free(); sync-message arrays with mpixfer_sync_messages_free(); requests with
 * mpixfer_request_free().
 */
#ifndef MPIXFER_H
#define MPIXFER_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Marks the symbols of the public API; everything else is hidden. */
#if defined(MPIXFER_STATIC_DEFINE)
#define MPIXFER_API
#elif defined(__GNUC__)
#define MPIXFER_API __attribute__((visibility("default")))
#else
#define MPIXFER_API
#endif

#define MPIXFER_VERSION_MAJOR 0
#define MPIXFER_VERSION_MINOR 1
#define MPIXFER_VERSION_PATCH 0

/* ------------------------------------------------------------------ status */

/**
 * Every status the library returns: name, value, message.
 * The enum and mpixfer_strerror() are both generated from this list so they cannot drift.
 */
#define MPIXFER_STATUS_LIST(X)                                                         \
    X(MPIXFER_OK, 0, "success")                                                        \
    X(MPIXFER_IN_PROGRESS, 1, "operation in progress")                                 \
    X(MPIXFER_ERR_INVALID_ARG, -1, "invalid argument")                                 \
    X(MPIXFER_ERR_NO_MEMORY, -2, "out of memory")                                      \
    X(MPIXFER_ERR_NOT_FOUND, -3, "not found (unknown agent or unregistered memory)")   \
    X(MPIXFER_ERR_OUT_OF_RANGE, -4, "address range outside registered memory")         \
    X(MPIXFER_ERR_UNSUPPORTED, -5, "unsupported operation or memory type")             \
    X(MPIXFER_ERR_BAD_DESC, -6, "malformed agent descriptor or message")               \
    X(MPIXFER_ERR_EXISTS, -7, "already exists")                                        \
    X(MPIXFER_ERR_BUSY, -8, "resource busy (transfer in flight)")                      \
    X(MPIXFER_ERR_UNREACHABLE, -9, "remote agent unreachable (other MPI world)")       \
    X(MPIXFER_ERR_TOO_LARGE, -10, "too large")                                         \
    X(MPIXFER_ERR_THREAD, -11, "MPI thread level too low for the requested threading") \
    X(MPIXFER_ERR_MPI, -12, "MPI call failed")                                         \
    X(MPIXFER_ERR_IO, -13, "I/O error")                                                \
    X(MPIXFER_ERR_TIMEOUT, -14, "timed out")                                           \
    X(MPIXFER_ERR_CANCELED, -15,                                                       \
      "canceled (mpixfer_request_cancel, or its agent invalidated or destroyed)")       \
    X(MPIXFER_ERR_DENIED, -16,                                                         \
      "access denied: the peer did not prove it holds the agent's connection info or " \
      "descriptor")

/** Status codes: MPIXFER_OK = 0, MPIXFER_IN_PROGRESS = 1, errors negative. */
typedef enum {
#define MPIXFER_STATUS_ENUM_(name, value, msg) name = value,
    MPIXFER_STATUS_LIST(MPIXFER_STATUS_ENUM_)
#undef MPIXFER_STATUS_ENUM_
} mpixfer_status_t;

/**
 * @brief Human-readable text for a status.
 * @param[in] status any value; unknown values give "unknown status".
 * @return a static string; never NULL, never to be freed.
 */
MPIXFER_API const char *mpixfer_strerror(mpixfer_status_t status);

/**
 * @brief The symbolic name of a status ("MPIXFER_ERR_BUSY").
 * @param[in] status any value; unknown values give "MPIXFER_UNKNOWN".
 * @return a static string; never NULL.
 */
MPIXFER_API const char *mpixfer_status_name(mpixfer_status_t status);

/** @brief Library version as "major.minor.patch"; a static string. */
MPIXFER_API const char *mpixfer_version(void);

/* ----------------------------------------------------------------- objects */

/** The set of agents reachable over one MPI communicator (owns the dup'd comm, window). */
typedef struct mpixfer_context mpixfer_context_t;
/** A named endpoint with its own registrations, remote-agent table and inbox. */
typedef struct mpixfer_agent mpixfer_agent_t;
/** One submitted transfer. */
typedef struct mpixfer_request mpixfer_request_t;

/* ----------------------------------------------------------------- context */

/** How a context moves bytes between processes of its communicator. */
typedef enum {
    /** RMA to peers on this node; to peers on other nodes too, unless the environment
     *  says their RMA would run over UCX's TCP transport (UCX_TLS lists only tcp and
     *  shared-memory/self transports): then MESSAGES. The environment variable
     *  MPIXFER_DATA_PATH=auto|rma|messages overrides this default. */
    MPIXFER_DATA_PATH_AUTO = 0,
    /** MPI_Put/MPI_Get on the dynamic window (or the arena) for every peer: completes
     *  without the target's help where the network does RMA itself. */
    MPIXFER_DATA_PATH_RMA = 1,
    /** Chunked two-sided messages (MPI_Isend of at most gpu_chunk_size bytes, answered by
     *  the target) to every other process. Over TCP Open MPI's osc/ucx emulates RMA with
     *  messages anyway and blocks MPI_Put on a dynamic window until the target calls MPI;
     *  with messages submit and wait never block, and the target takes part through its
     *  progress thread or its next call. (AUTO picks it only for peers on other nodes.) */
    MPIXFER_DATA_PATH_MESSAGES = 2,
} mpixfer_data_path_t;

/** Tunables of a context; start from MPIXFER_CONTEXT_PARAMS_INIT. */
typedef struct {
    /** Largest sync message (bytes) accepted by notify or a request; 0 = default (1 MiB).
     *  The environment variable MPIXFER_MAX_SYNC_MESSAGE overrides the default. */
    size_t max_sync_message;
    /** Largest number of regions one agent descriptor may carry on decode; 0 = default
     *  (1 << 20). Bounds what a hostile peer can make us allocate. */
    size_t max_desc_regions;
    /** Staged GPU path: bytes per bounce-buffer chunk; 0 = default (4 MiB), or the
     *  environment variable MPIXFER_GPU_CHUNK. */
    size_t gpu_chunk_size;
    /** Staged GPU path: chunks in flight per request; 0 = default (4), or
     *  MPIXFER_GPU_PIPELINE. */
    unsigned gpu_pipeline_depth;
    /** Bytes of on-node fast memory per process, handed out by mpixfer_mem_alloc(); 0 =
     *  none unless the environment variable MPIXFER_ARENA_SIZE sets it. Created with
     *  MPI_Win_allocate_shared: transfers into a peer's arena on the same node are plain
     *  copies through shared memory, with no MPI call per block. */
    size_t arena_size;
    /** A transfer that needs the target's help (staged VRAM, messages, other jobs) and
     *  has heard nothing for this long ends in FAILURE with MPIXFER_ERR_TIMEOUT instead of
     *  waiting forever; 0 = default (60 s), or MPIXFER_STALL_TIMEOUT_MS. */
    unsigned stall_timeout_ms;
    /** How bytes reach other processes; MPIXFER_DATA_PATH_AUTO (0) by default. */
    mpixfer_data_path_t data_path;
} mpixfer_context_params_t;

/** Defaults for mpixfer_context_params_t. */
#define MPIXFER_CONTEXT_PARAMS_INIT {0, 0, 0, 0, 0, 0, MPIXFER_DATA_PATH_AUTO}

/**
 * @brief Create a context over @p comm. Collective over @p comm.
 *
 * Duplicates @p comm (the library's traffic never matches the application's), sets
 * MPI_ERRORS_RETURN on everything it owns, agrees on a random world id, and creates a
 * dynamic RMA window with a passive-target epoch for the context's life (not on a
 * one-process communicator: agents of one process reach each other by direct copy).
 *
 * @param[in]  comm   an intracommunicator; MPI must be initialised.
 * @param[out] ctx_p  the new context, set only on success; destroy with
 *                    mpixfer_context_destroy().
 * @return MPIXFER_OK; MPIXFER_ERR_INVALID_ARG (NULL, MPI_COMM_NULL, MPI not initialised);
 *         MPIXFER_ERR_UNSUPPORTED (intercommunicator); MPIXFER_ERR_MPI; MPIXFER_ERR_NO_MEMORY.
 */
MPIXFER_API mpixfer_status_t mpixfer_context_create(MPI_Comm comm, mpixfer_context_t **ctx_p);

/**
 * @brief mpixfer_context_create() with explicit tunables. Collective over @p comm.
 * @param[in]  comm    an intracommunicator.
 * @param[in]  params  NULL for defaults.
 * @param[out] ctx_p   the new context, set only on success.
 */
MPIXFER_API mpixfer_status_t mpixfer_context_create_with_params(
    MPI_Comm comm, const mpixfer_context_params_t *params, mpixfer_context_t **ctx_p);

/**
 * @brief Destroy a context. Collective over the context's communicator.
 *
 * Completes in-flight transfers, delivers or drops pending control messages, destroys
 * the agents still alive (with a warning), frees the window and the communicator.
 * @param[in] ctx  the context; NULL is MPIXFER_ERR_INVALID_ARG.
 */
MPIXFER_API mpixfer_status_t mpixfer_context_destroy(mpixfer_context_t *ctx);

/**
 * @brief Every agent of every process loads every other agent's descriptor. Collective.
 *
 * Allgathers the descriptors of all agents alive now. Agent names must be unique in the
 * context: a duplicate makes every process return MPIXFER_ERR_EXISTS. Agents already
 * loaded are refreshed (their registrations as of now).
 * @param[in] ctx  the context.
 */
MPIXFER_API mpixfer_status_t mpixfer_bootstrap(mpixfer_context_t *ctx);

/** @brief Rank of the calling process in the context's communicator (-1 if ctx is NULL). */
MPIXFER_API int mpixfer_context_rank(const mpixfer_context_t *ctx);
/** @brief Size of the context's communicator (-1 if ctx is NULL). */
MPIXFER_API int mpixfer_context_size(const mpixfer_context_t *ctx);
/** @brief The world id agreed at creation; tells this context's descriptors from others. */
MPIXFER_API uint64_t mpixfer_context_world_id(const mpixfer_context_t *ctx);

/** How a context moves VRAM. */
typedef enum {
    /** No usable GPU (or built without CUDA): VRAM calls return MPIXFER_ERR_UNSUPPORTED. */
    MPIXFER_GPU_PATH_NONE = 0,
    /** MPI is CUDA-aware: RMA straight on device memory. */
    MPIXFER_GPU_PATH_DIRECT = 1,
    /** MPI is not CUDA-aware: chunks move through pinned host bounce buffers, and the
     *  target agent takes part (its progress thread or its next library call). */
    MPIXFER_GPU_PATH_STAGED = 2
} mpixfer_gpu_path_t;

/**
 * @brief The GPU path chosen at context creation: direct when MPI reports CUDA support
 *        (MPIX_Query_cuda_support), else staged; MPIXFER_GPU_PATH=direct|staged forces one.
 *        Also logged at info level.
 */
MPIXFER_API mpixfer_gpu_path_t mpixfer_context_gpu_path(const mpixfer_context_t *ctx);

/** @brief "none", "direct" or "staged"; a static string. */
MPIXFER_API const char *mpixfer_gpu_path_name(mpixfer_gpu_path_t path);

/**
 * @brief Allocate from the context's on-node arena (see mpixfer_context_params_t::arena_size).
 *        Local. Register the memory in an agent like any other before transferring.
 *        Transfers whose remote side lies in the arena of a process on the same node take
 *        the shared-memory fast path automatically.
 * @param[in]  len    bytes, > 0; the block is aligned to 256 bytes.
 * @param[out] ptr_p  the block, set only on success.
 * @return MPIXFER_OK; MPIXFER_ERR_INVALID_ARG (len 0, NULL); MPIXFER_ERR_UNSUPPORTED (the
 *         context has no arena); MPIXFER_ERR_NO_MEMORY (arena exhausted).
 */
MPIXFER_API mpixfer_status_t mpixfer_mem_alloc(mpixfer_context_t *ctx, size_t len, void **ptr_p);

/**
 * @brief Return a block to the arena. Local.
 * @return MPIXFER_OK; MPIXFER_ERR_INVALID_ARG (not an arena pointer); MPIXFER_ERR_NOT_FOUND
 *         (not an allocated block, e.g. freed twice); MPIXFER_ERR_BUSY (still registered
 *         in an agent).
 */
MPIXFER_API mpixfer_status_t mpixfer_mem_free(mpixfer_context_t *ctx, void *ptr);

/**
 * @brief The MPI window behind the arena, for callers that also move arena memory with
 *        their own MPI calls (a benchmark's raw MPI on the very same memory). Local.
 *
 * A window from MPI_Win_allocate_shared over the processes of this node (group: see
 * MPI_Win_get_group), displacement unit 1. Each process's segment starts at the base that
 * MPI_Win_shared_query reports for it; the library's blocks lie inside it, so a block's
 * displacement is its address minus its owner's segment base, computed by the owner. The
 * library itself makes no MPI call on this window and holds no epoch on it: the caller
 * opens its own (MPI_Win_lock_all, ...) and closes it before mpixfer_context_destroy().
 * @param[in]  ctx    a context created with an arena.
 * @param[out] win_p  the window, set only on success; the context owns and frees it.
 * @return MPIXFER_OK; MPIXFER_ERR_INVALID_ARG (NULL); MPIXFER_ERR_UNSUPPORTED (no arena).
 */
MPIXFER_API mpixfer_status_t mpixfer_mem_window(mpixfer_context_t *ctx, MPI_Win *win_p);

/**
 * @brief How this context moves bytes to @p rank (see mpixfer_data_path_t). Local.
 * @param[in]  rank    a rank of the context's communicator.
 * @param[out] path_p  MPIXFER_DATA_PATH_RMA or MPIXFER_DATA_PATH_MESSAGES (never AUTO):
 *                     what the context chose at creation. This process itself and a
 *                     one-process context: RMA (direct copies).
 * @return MPIXFER_OK; MPIXFER_ERR_INVALID_ARG (NULL, or @p rank out of range).
 */
MPIXFER_API mpixfer_status_t mpixfer_context_data_path(const mpixfer_context_t *ctx, int rank,
                                                       mpixfer_data_path_t *path_p);

/** How a context's transfers moved, counted since its creation (for tuning and tests). */
typedef struct {
    uint64_t requests;      /**< transfers submitted successfully */
    uint64_t rma_ops;       /**< MPI_Put/MPI_Get calls on the dynamic window */
    uint64_t shm_copies;    /**< copies into/out of a node peer's arena (no MPI call) */
    uint64_t local_copies;  /**< copies between agents of this process */
    uint64_t staged_chunks; /**< chunks sent by the staged protocol (VRAM, other jobs,
                                 peers reached by messages) */
    uint64_t bytes;         /**< bytes of all transfers submitted */
    /** Ranges attached to the dynamic window now (not a counter): registrations that touch
     *  or overlap share one, so 10,000 adjacent KV blocks take 1 of the MPI's few (Open
     *  MPI's osc/rdma allows 64 per process). */
    uint64_t window_attachments;
    /** Links: connections that proved they hold an agent's key (accepted by this
     *  context's listener), and connections refused (garbage, a wrong key, no proof in
     *  time, too many at once). */
    uint64_t links_accepted;
    uint64_t links_refused;
    /** Link transfers: pairs moved by cross-memory copies (same host), and UCX RMA
     *  operations (ucp_put_nbx/ucp_get_nbx). */
    uint64_t link_copies;
    uint64_t link_ops;
} mpixfer_stats_t;

/**
 * @brief The context's transfer counters. Local.
 * @param[out] stats_p  filled on success.
 */
MPIXFER_API mpixfer_status_t mpixfer_context_stats(mpixfer_context_t *ctx,
                                                   mpixfer_stats_t *stats_p);

/* ------------------------------------------------------------------ agents */

/** How an agent is created; start from MPIXFER_AGENT_CONFIG_INIT. */
typedef struct {
    /** Unique name in the context (at most 255 bytes); NULL: "host_pid_counter". Copied. */
    const char *name;
    /** A background thread drives MPI progress, completes requests, receives messages.
     *  Needs MPI_THREAD_MULTIPLE. */
    bool use_progress_thread;
    /** Calls on this agent may come from several threads at once while the application
     *  also calls MPI. Needs MPI_THREAD_MULTIPLE. */
    bool multi_thread;
    /** A background thread answers descriptor requests (connection-info loading) even when
     *  the owner never calls the library. Needs MPI_THREAD_MULTIPLE. */
    bool use_listen_thread;
    /** Worker threads for copies (used by loopback agents); 0 or 1 = none. */
    unsigned num_workers;
} mpixfer_agent_config_t;

/** Defaults: generated name, no threads, one worker. */
#define MPIXFER_AGENT_CONFIG_INIT {NULL, false, false, false, 1}

/**
 * @brief Create an agent. Local (not collective).
 * @param[in]  ctx      the context.
 * @param[in]  cfg      NULL for MPIXFER_AGENT_CONFIG_INIT.
 * @param[out] agent_p  the new agent, set only on success.
 * @return MPIXFER_OK; MPIXFER_ERR_INVALID_ARG (bad name); MPIXFER_ERR_EXISTS (name taken in
 *         this process); MPIXFER_ERR_THREAD (threads requested without MPI_THREAD_MULTIPLE).
 */
MPIXFER_API mpixfer_status_t mpixfer_agent_create(mpixfer_context_t *ctx,
                                                  const mpixfer_agent_config_t *cfg,
                                                  mpixfer_agent_t **agent_p);

/**
 * @brief Destroy an agent: completes its in-flight transfers, deregisters its memory,
 *        drops its inbox. Requests it made stay valid until mpixfer_request_free().
 *        Local. In terms of mpixfer_request_cancel()'s guarantee: when this returns, every
 *        transfer of the agent has ended (SUCCESS, or FAILURE within the stall timeout) and
 *        none moves a byte any more, except what a peer abandoned at the stall timeout may
 *        still complete (MPIXFER_ERR_TIMEOUT, as documented there). Never hangs. To stop
 *        transfers rather than finish them, cancel them first.
 */
MPIXFER_API mpixfer_status_t mpixfer_agent_destroy(mpixfer_agent_t *agent);

/** @brief The agent's name (owned by the agent); NULL if @p agent is NULL. */
MPIXFER_API const char *mpixfer_agent_name(const mpixfer_agent_t *agent);

/* --------------------------------------------------------------- telemetry */

/** Buckets of an mpixfer_histogram_t. */
#define MPIXFER_HIST_BUCKETS 32
/** Upper bound in ns of bucket @p i of an mpixfer_histogram_t, for i < MPIXFER_HIST_BUCKETS - 1:
 *  2^(8 + i) ns, so 256 ns, 512 ns, ..., 2^38 ns (about 275 s); the last bucket has none. */
#define MPIXFER_HIST_BUCKET_NS(i) ((uint64_t)1 << (8 + (i)))
/** Entries of mpixfer_agent_stats_t::failures: one per status value -31 .. 0. */
#define MPIXFER_STATUS_SLOTS 32

/** A latency histogram with fixed log2 buckets. */
typedef struct {
    uint64_t count;  /**< durations recorded (the sum of @c buckets) */
    uint64_t sum_ns; /**< their sum in ns */
    /** Not cumulative: buckets[0] counts durations <= 256 ns, buckets[i] for 0 < i < 31 those
     *  in (MPIXFER_HIST_BUCKET_NS(i-1), MPIXFER_HIST_BUCKET_NS(i)], buckets[31] the longer. */
    uint64_t buckets[MPIXFER_HIST_BUCKETS];
} mpixfer_histogram_t;

/**
 * One agent's counters since its creation, from the agent's own view: it counts the
 * transfers it initiated (submitted with mpixfer_submit_transfer()), not those that other
 * agents made into its memory, and the sync messages it sent and received. Counting is
 * always on (a few plain increments per request under the lock submit and completion hold
 * anyway, plus the clock reads of the two histograms).
 */
typedef struct {
    uint64_t requests;           /**< transfers submitted successfully */
    uint64_t requests_succeeded; /**< of those, ended in SUCCESS */
    uint64_t requests_failed;    /**< ended in FAILURE (in flight: the rest) */
    /** Failed requests by status: failures[-status] for status -31 .. -1 (e.g.
     *  failures[-MPIXFER_ERR_TIMEOUT]); failures[0] counts any other status (none today). */
    uint64_t failures[MPIXFER_STATUS_SLOTS];
    uint64_t submit_errors;          /**< mpixfer_submit_transfer() calls that returned an error */
    uint64_t bytes_sent;             /**< bytes of WRITE requests that ended in SUCCESS */
    uint64_t bytes_received;         /**< bytes of READ requests that ended in SUCCESS */
    uint64_t sync_messages_sent;     /**< by mpixfer_notify_sync_message() and by successful
                                          requests carrying one */
    uint64_t sync_messages_received; /**< put in this agent's inbox */
    /** Time inside mpixfer_submit_transfer() of each request it made, up to the moment the
     *  request was queued or, when finished inside submit, completed. count = requests. */
    mpixfer_histogram_t post_time;
    /** From the start of submit to the final state (SUCCESS or FAILURE), sync message
     *  included. count = requests_succeeded + requests_failed. */
    mpixfer_histogram_t transfer_time;
} mpixfer_agent_stats_t;

/**
 * @brief The agent's counters (see mpixfer_agent_stats_t). Local; a consistent snapshot
 *        (taken under the context's lock, which every update holds).
 * @param[in]  agent    the agent.
 * @param[out] stats_p  filled only on success.
 * @return MPIXFER_OK; MPIXFER_ERR_INVALID_ARG (NULL).
 */
MPIXFER_API mpixfer_status_t mpixfer_agent_stats(mpixfer_agent_t *agent,
                                                 mpixfer_agent_stats_t *stats_p);

/**
 * @brief The context's counters (mpixfer_context_stats()) and those of every agent alive in
 *        it in this process (mpixfer_agent_stats()), in the Prometheus text exposition
 *        format 0.0.4. Local.
 *
 * Metric names start with "mpixfer_" (context: "mpixfer_requests_total{rank="0"}" ...;
 * agents: "mpixfer_agent_requests_total{agent="name"}" ...; failures by status as
 * "mpixfer_agent_failures_total{agent="name",status="MPIXFER_ERR_TIMEOUT"}"; the two
 * histograms as "mpixfer_agent_post_time_seconds" and
 * "mpixfer_agent_transfer_time_seconds" with cumulative _bucket{le="..."} lines ending in
 * le="+Inf", _sum (seconds) and _count). Each family has one HELP and one TYPE line.
 * Agent names are written with backslash, double quote and newline escaped, the rest of
 * their bytes as they are. Agents destroyed before the call are not in it.
 * @param[in]  ctx     the context.
 * @param[out] text_p  NUL-terminated text, set only on success; freed with mpixfer_free().
 * @param[out] len_p   its length without the NUL; may be NULL.
 * @return MPIXFER_OK; MPIXFER_ERR_INVALID_ARG (NULL ctx or text_p); MPIXFER_ERR_NO_MEMORY.
 */
MPIXFER_API mpixfer_status_t mpixfer_stats_prometheus(mpixfer_context_t *ctx, char **text_p,
                                                      size_t *len_p);

/* ------------------------------------------------------------------ memory */

/** Memory kinds of the contract. DRAM always; VRAM when a CUDA device is usable (see
 *  mpixfer_context_gpu_path()); BLK, OBJ and FILE are refused with MPIXFER_ERR_UNSUPPORTED. */
typedef enum {
    MPIXFER_MEM_DRAM = 0,
    MPIXFER_MEM_VRAM = 1,
    MPIXFER_MEM_BLK = 2,
    MPIXFER_MEM_OBJ = 3,
    MPIXFER_MEM_FILE = 4
} mpixfer_mem_type_t;

/** One memory range: address, length, device (GPU ordinal for VRAM; 0 for DRAM). */
typedef struct {
    uintptr_t addr;
    size_t len;
    uint32_t device_id;
} mpixfer_mem_desc_t;

/** A list of memory ranges of one memory type. */
typedef struct {
    mpixfer_mem_type_t type;
    const mpixfer_mem_desc_t *descs;
    size_t count;
} mpixfer_mem_descs_t;

/**
 * @brief Make ranges transferable and advertise them in this agent's descriptor. Local.
 *
 * All or nothing: on error nothing is registered. The same buffer may be registered by
 * several agents; registering the same (addr, len, type, device) twice in one agent is
 * MPIXFER_ERR_EXISTS.
 * @return MPIXFER_OK; MPIXFER_ERR_INVALID_ARG (NULL, zero length, address wrap);
 *         MPIXFER_ERR_UNSUPPORTED (memory type); MPIXFER_ERR_EXISTS; MPIXFER_ERR_MPI
 *         (MPI_Win_attach failed, e.g. the osc_rdma_max_attach limit).
 */
MPIXFER_API mpixfer_status_t mpixfer_register_memory(mpixfer_agent_t *agent,
                                                     const mpixfer_mem_descs_t *descs);

/**
 * @brief Stop advertising ranges registered before. Local. All or nothing.
 * @return MPIXFER_OK; MPIXFER_ERR_NOT_FOUND (not registered exactly so in this agent);
 *         MPIXFER_ERR_BUSY (a transfer of this agent is using it).
 */
MPIXFER_API mpixfer_status_t mpixfer_deregister_memory(mpixfer_agent_t *agent,
                                                       const mpixfer_mem_descs_t *descs);

/* ---------------------------------------------------------------- metadata */

/**
 * @brief This agent's descriptor (binary, may contain NUL) reflecting registrations now.
 *        Unless MPIXFER_LINK=none, it opens the context's link listener (first call) and
 *        carries its address and the agent's link key, so agents of other processes can
 *        load it. Holding the blob is the capability to reach the agent's registered
 *        memory: treat it like a password.
 * @param[out] blob_p  freed with mpixfer_free(); set only on success.
 * @param[out] len_p   its length in bytes.
 */
MPIXFER_API mpixfer_status_t mpixfer_get_local_agent_desc(mpixfer_agent_t *agent, void **blob_p,
                                                          size_t *len_p);

/**
 * @brief Learn a remote agent from its descriptor. Local. Replaces an earlier load.
 *        A descriptor of this context's world is usable at once. One of another world
 *        (another job, another context) is reached over a link: the call returns at once
 *        and mpixfer_check_remote_descs() turns true when the link's handshake is done;
 *        a refused key ends it with MPIXFER_ERR_DENIED (later transfers and sync messages
 *        to the remote fail with it).
 * @param[in] name  must equal the name inside the blob (else MPIXFER_ERR_INVALID_ARG).
 * @return MPIXFER_OK; MPIXFER_ERR_BAD_DESC (malformed, truncated, other version);
 *         MPIXFER_ERR_UNREACHABLE (another world, and the blob carries no link);
 *         MPIXFER_ERR_INVALID_ARG (name mismatch, loading oneself).
 */
MPIXFER_API mpixfer_status_t mpixfer_load_remote_agent(mpixfer_agent_t *agent, const char *name,
                                                       const void *blob, size_t len);

/**
 * @brief A string another agent passes to mpixfer_load_remote_agent_by_connection().
 *        Form: "mpixfer:3:<world id hex>:<rank>:<ipv4>:<port>:key=<32 hex>:<agent name>",
 *        or "mpixfer:1:<world id hex>:<rank>:<agent name>" with MPIXFER_LINK=none (then
 *        only agents of the same world can use it). The key is the agent's link secret:
 *        whoever holds the string can reach the agent's registered memory. Treat it like
 *        a password.
 * @param[out] info_p  freed with mpixfer_free(); set only on success.
 */
MPIXFER_API mpixfer_status_t mpixfer_get_local_connection_info(mpixfer_agent_t *agent,
                                                               char **info_p);

/**
 * @brief Fetch a remote descriptor by connection info. Asynchronous: returns once the
 *        request is sent; poll mpixfer_check_remote_descs() until it returns true. In the
 *        same world the remote answers from its progress (its threads or any call into the
 *        library); another world's agent is reached over a link (its link thread answers),
 *        and a wrong key never makes it usable (MPIXFER_ERR_DENIED for transfers and sync
 *        messages). Sync messages sent meanwhile are queued, not lost.
 * @return MPIXFER_OK; MPIXFER_ERR_BAD_DESC (unparsable info); MPIXFER_ERR_INVALID_ARG
 *         (name differs from the one in @p info); MPIXFER_ERR_UNREACHABLE (other world
 *         and no link in @p info, or its address cannot be connected to).
 */
MPIXFER_API mpixfer_status_t mpixfer_load_remote_agent_by_connection(mpixfer_agent_t *agent,
                                                                     const char *name,
                                                                     const char *info);

/**
 * @brief Forget a remote agent. Later transfers to it fail with MPIXFER_ERR_NOT_FOUND;
 *        transfers already in flight still end (SUCCESS or FAILURE). Local; returns at
 *        once and does not stop them: in-job transfers finish, transfers over a link that
 *        no other loaded remote shares end in FAILURE (MPIXFER_ERR_CANCELED) as the link
 *        closes, and a staged WRITE among them counts as in flight until its chunks expire.
 *        So the buffers of transfers in flight to it are reusable only once each has ended
 *        (wait) or been cancelled (mpixfer_request_cancel()).
 * @return MPIXFER_OK; MPIXFER_ERR_NOT_FOUND.
 */
MPIXFER_API mpixfer_status_t mpixfer_invalidate_remote_agent(mpixfer_agent_t *agent,
                                                             const char *name);

/**
 * @brief True iff @p name is loaded and every desc lies inside one region it advertised
 *        (same memory type and device). Drives progress, so it can be polled.
 */
MPIXFER_API bool mpixfer_check_remote_descs(mpixfer_agent_t *agent, const char *name,
                                            const mpixfer_mem_descs_t *descs);

/**
 * @brief Where loading @p name stands. Local; drives progress once, so it can be polled.
 *        Tells a load that will never complete (a refused key, a gone peer) from one still
 *        under way, which mpixfer_check_remote_descs() cannot.
 * @return MPIXFER_OK: loaded and usable; MPIXFER_IN_PROGRESS: its descriptor or its
 *         link's handshake is still on its way; MPIXFER_ERR_NOT_FOUND: not loaded (never,
 *         invalidated, or its peer refused the descriptor request); else why its link
 *         failed (MPIXFER_ERR_DENIED: the key was refused; MPIXFER_ERR_UNREACHABLE: the peer
 *         is gone or cannot be connected to; MPIXFER_ERR_TIMEOUT, MPIXFER_ERR_BAD_DESC);
 *         MPIXFER_ERR_INVALID_ARG for NULL.
 */
MPIXFER_API mpixfer_status_t mpixfer_remote_status(mpixfer_agent_t *agent, const char *name);

/** @brief Free a blob or string the library returned. NULL is fine. */
MPIXFER_API void mpixfer_free(void *p);

/* --------------------------------------------------------------- transfers */

/** WRITE: local src[i] -> remote dst[i]. READ: remote dst[i] -> local src[i]. */
typedef enum { MPIXFER_OP_READ = 0, MPIXFER_OP_WRITE = 1 } mpixfer_op_t;

/** What wait and polls report. */
typedef enum {
    MPIXFER_STATE_IN_PROGRESS = 0,
    MPIXFER_STATE_SUCCESS = 1,
    MPIXFER_STATE_FAILURE = 2
} mpixfer_state_t;

/** A transfer: pairs src[i] (local) with dst[i] (the remote agent's memory). */
typedef struct {
    mpixfer_op_t op;
    mpixfer_mem_descs_t src;  /**< local memory, registered in the submitting agent */
    mpixfer_mem_descs_t dst;  /**< remote memory, advertised by @c remote_name */
    const char *remote_name;  /**< a loaded remote agent */
    const void *sync_message; /**< optional; delivered after the data is in place */
    size_t sync_message_len;
    /** Milliseconds from submit after which the request is stopped as by
     *  mpixfer_request_cancel() and ends in FAILURE with MPIXFER_ERR_TIMEOUT; 0: none.
     *  Checked by progress (wait, polls, the progress thread), so it fires at the first
     *  progress after it passes. A request finished inside submit never expires. */
    uint64_t deadline_ms;
} mpixfer_transfer_request_t;

/**
 * @brief Validate and start a transfer; returns at once.
 *
 * Nothing moves unless every check passes: counts equal and non-zero, each pair the same
 * non-zero length, each src inside memory this agent registered, each dst inside memory
 * the remote advertised. SUCCESS only after remote completion (MPI_Win_flush); the sync
 * message is sent only after that. A transfer whose bytes are in place when its operations
 * return (copies into a node peer's arena or within the process, RMA that completes inside
 * the MPI call) is finished, sync message included, before submit returns; the others are
 * finished by progress (wait, polls, the progress thread).
 * @param[out] xfer_p  the request, set only on success; free with mpixfer_request_free().
 * @return MPIXFER_OK; MPIXFER_ERR_INVALID_ARG; MPIXFER_ERR_NOT_FOUND (remote not loaded,
 *         or a desc in no registered region); MPIXFER_ERR_OUT_OF_RANGE (a desc runs past
 *         its region); MPIXFER_ERR_UNSUPPORTED (memory type); MPIXFER_ERR_TOO_LARGE (sync
 *         message); MPIXFER_ERR_MPI.
 */
MPIXFER_API mpixfer_status_t mpixfer_submit_transfer(mpixfer_agent_t *agent,
                                                     const mpixfer_transfer_request_t *req,
                                                     mpixfer_request_t **xfer_p);

/** @brief One poll: drives progress unless the request is finished, then true iff SUCCESS
 *         or FAILURE. */
MPIXFER_API bool mpixfer_request_is_completed(mpixfer_request_t *xfer);

/**
 * @brief Wait for a request.
 * @param[in] timeout_ms  < 0 until done; 0 one poll; > 0 at most that long.
 * @return SUCCESS, FAILURE (reason in mpixfer_request_status()), or IN_PROGRESS after the
 *         timeout. FAILURE for a NULL request.
 */
MPIXFER_API mpixfer_state_t mpixfer_request_wait(mpixfer_request_t *xfer, int64_t timeout_ms);

/** @brief MPIXFER_OK after success, MPIXFER_IN_PROGRESS while running, else why it failed. */
MPIXFER_API mpixfer_status_t mpixfer_request_status(const mpixfer_request_t *xfer);

/**
 * @brief Release a request. Local. A request still in flight is not stopped: it completes
 *        in the background (its bytes still move, its sync message is still sent), so its
 *        buffers stay in use until then. To reuse them at once, call
 *        mpixfer_request_cancel() first.
 */
MPIXFER_API void mpixfer_request_free(mpixfer_request_t *xfer);

/**
 * @brief Stop a transfer and return once it has ended. Local; may be called from any
 *        thread, also while another thread waits on the request.
 *
 * A request that had ended keeps its result. One still in flight ends in FAILURE with
 * MPIXFER_ERR_CANCELED (MPIXFER_ERR_TIMEOUT if its deadline stopped it first) and its
 * sync message is never sent; any subset of its bytes may have landed before. When this
 * returns MPIXFER_OK, no byte of the transfer is written to local or remote memory any
 * more, so both sides' buffers may be reused at once. Per path:
 *  - MPI RMA: nothing more is issued; what MPI was given completes (MPI has no way to
 *    take an RMA operation back) and is flushed before the call returns.
 *  - Copies (agents of this process, node peers' arenas, same-host links): a copy is
 *    never interrupted; copies not started are not made.
 *  - Staged and message chunks (VRAM without CUDA-aware MPI, peers reached by
 *    messages): no chunk is posted any more; answers still arriving are dropped, so a
 *    READ is quiescent at once; a WRITE waits for the chunks already sent. Each carries
 *    its expiry (CLOCK_REALTIME at posting + the stall timeout): a target that is only
 *    slow drops it instead of writing it late (hosts' clocks must agree to well within
 *    the stall timeout).
 *  - Links over UCX: the issued operations' remote completion is awaited.
 * Bounded by the context's stall timeout (plus 50 ms): a peer that does not complete
 * what was issued by then is abandoned (UCX endpoint closed, by force across hosts, by a
 * flush that goes on in the background on one host; the link failed; MPI request
 * released) and this returns MPIXFER_ERR_TIMEOUT, the request's status too.
 * Then nothing is guaranteed for what was issued: a peer that has exited writes nothing
 * more, but one that was only stopped and resumes may still complete an RMA or UCX WRITE
 * in its memory and, with UCX 1.13's emulated RMA (no RDMA device), a READ into ours
 * (measured: test_cancel_silent_link). Quarantine such buffers. Never hangs.
 * @return MPIXFER_OK once the request has ended (also when it had ended before);
 *         MPIXFER_ERR_TIMEOUT (abandoned at the stall timeout, as above);
 *         MPIXFER_ERR_INVALID_ARG for NULL.
 */
MPIXFER_API mpixfer_status_t mpixfer_request_cancel(mpixfer_request_t *xfer);

/* ----------------------------------------------------------- sync messages */

/**
 * @brief Send @p msg (any bytes, may be empty) to the agent @p remote_name, which need
 *        not have loaded the sender. The sender must know it (loaded, bootstrap) or it
 *        must live in this process.
 * @return MPIXFER_OK; MPIXFER_ERR_NOT_FOUND; MPIXFER_ERR_TOO_LARGE; MPIXFER_ERR_INVALID_ARG.
 */
MPIXFER_API mpixfer_status_t mpixfer_notify_sync_message(mpixfer_agent_t *agent,
                                                         const char *remote_name, const void *msg,
                                                         size_t len);

/** A received sync message: sender's name and bytes (NUL-terminated beyond len). */
typedef struct {
    char *agent_name;
    void *data;
    size_t len;
} mpixfer_sync_message_t;

/**
 * @brief Drain the inbox: every message received since the last call, in arrival order
 *        (per sender in send order). Drives progress first.
 * @param[out] msgs_p   array freed with mpixfer_sync_messages_free(); NULL when empty.
 * @param[out] count_p  number of messages (0 when empty).
 */
MPIXFER_API mpixfer_status_t mpixfer_get_notified_sync_messages(mpixfer_agent_t *agent,
                                                                mpixfer_sync_message_t **msgs_p,
                                                                size_t *count_p);

/** @brief Free an array from mpixfer_get_notified_sync_messages(). */
MPIXFER_API void mpixfer_sync_messages_free(mpixfer_sync_message_t *msgs, size_t count);

/* ---------------------------------------------------------------- loopback */

/** A loopback agent: moves memory to and from files within one process. No MPI needed. */
typedef struct mpixfer_loopback mpixfer_loopback_t;

/** One file extent: an open file descriptor, a length and an offset in the file. */
typedef struct {
    int fd;
    size_t len;
    uint64_t offset;
} mpixfer_file_desc_t;

/** How mpixfer_loopback_execute() moved VRAM last (DRAM always uses pread/pwrite). */
typedef enum {
    MPIXFER_LOOPBACK_PATH_POSIX = 0,  /**< pread/pwrite on host memory */
    MPIXFER_LOOPBACK_PATH_STAGED = 1, /**< VRAM copied through pinned host buffers */
    MPIXFER_LOOPBACK_PATH_GDS = 2     /**< GPUDirect Storage (cuFile) */
} mpixfer_loopback_path_t;

/**
 * @brief Create a loopback agent. Local; MPI need not be initialised.
 * @param[in]  cfg   NULL for defaults; with @c multi_thread the pairs of one request are
 *                   spread over @c num_workers threads.
 * @param[out] lb_p  the agent, set only on success; destroy with mpixfer_loopback_destroy().
 */
MPIXFER_API mpixfer_status_t mpixfer_loopback_create(const mpixfer_agent_config_t *cfg,
                                                     mpixfer_loopback_t **lb_p);

/**
 * @brief Offload memory[i] to files[i] (is_offload) or load files[i] into memory[i].
 *
 * Counts must match and each pair's lengths agree (MPIXFER_ERR_INVALID_ARG otherwise);
 * short reads and writes are retried until done; a read past the end of a file or any
 * I/O error is MPIXFER_ERR_IO with errno in the log. Blocking: returns when every byte
 * moved or an error ended it; nothing is reported as success in part.
 * @param[in] mem     memory descriptors (DRAM, or VRAM when a GPU is usable).
 * @param[in] files   @p nfiles file extents; the fds stay owned by the caller.
 */
MPIXFER_API mpixfer_status_t mpixfer_loopback_execute(mpixfer_loopback_t *lb,
                                                      const mpixfer_mem_descs_t *mem,
                                                      const mpixfer_file_desc_t *files,
                                                      size_t nfiles, bool is_offload);

/** @brief The path the last VRAM request took (POSIX when none yet). */
MPIXFER_API mpixfer_loopback_path_t mpixfer_loopback_last_path(const mpixfer_loopback_t *lb);

/** @brief "posix", "staged" or "gds"; a static string. */
MPIXFER_API const char *mpixfer_loopback_path_name(mpixfer_loopback_path_t path);

/** @brief Destroy a loopback agent (joins its worker threads). NULL is fine. */
MPIXFER_API mpixfer_status_t mpixfer_loopback_destroy(mpixfer_loopback_t *lb);

/* ---------------------------------------------------------------- progress */

/**
 * @brief Drive progress once: receive control messages, answer descriptor requests,
 *        complete transfers. Any library call does this too; use it when idle.
 */
MPIXFER_API mpixfer_status_t mpixfer_progress(mpixfer_context_t *ctx);

#ifdef __cplusplus
}
#endif

#endif /* MPIXFER_H */
