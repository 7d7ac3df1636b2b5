/* TensorRT-LLM transfer-agent backend over mpixfer: libtensorrt_llm_mpixfer_wrapper.so.
 *
 * TensorRT-LLM's makeTransferAgent("mpixfer", &config) would dlopen() this library and call
 * createMpixferTransferAgent (createMpixferLoopbackAgent for makeLoopbackAgent). Each
 * BaseTransferAgent is one mpixfer agent; every call maps to the public C API of mpixfer.h.
 *
 * MPI and the context are the adapter's business, since TensorRT-LLM knows neither:
 *  - MPI: where the process has not started MPI (TensorRT-LLM's unit tests: every agent in one
 *    process, no mpirun), the first agent starts it with MPI_Init_thread(MPI_THREAD_MULTIPLE)
 *    and an atexit handler finalises it after destroying the context. Where the application
 *    started MPI the adapter is a guest: it never finalises, and destroys its context at the
 *    start of the application's MPI_Finalize (a delete callback of an MPI_COMM_SELF
 *    attribute, which MPI runs first thing in MPI_Finalize).
 *  - Context: one for the whole process, shared by all its agents, over MPI_COMM_SELF by
 *    default (agents of other processes are reached through connection info, by links), or
 *    over MPI_COMM_WORLD with MPIXFER_TRTLLM_COMM=world (one mpirun for every instance):
 *    then the first agent creation is collective over MPI_COMM_WORLD.
 *
 * Errors throw std::runtime_error whose text names the mpixfer status and the reason.
 * Nothing of libtensorrt_llm is used: the header's inline code only, never MemoryDesc's
 * serialisers or DynLibLoader, whose bodies live in that library. */
#include <mpi.h>
#include <mpixfer.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tensorrt_llm/executor/transferAgent.h"

namespace kv = tensorrt_llm::executor::kv_cache;

namespace {

/* ------------------------------------------------------------------------------ errors */

std::string statusText(mpixfer_status_t st)
{
    return std::string(mpixfer_status_name(st)) + " (" + mpixfer_strerror(st) + ")";
}

[[noreturn]] void throwStatus(mpixfer_status_t st, std::string const &what)
{
    throw std::runtime_error("mpixfer: " + what + ": " + statusText(st));
}

void check(mpixfer_status_t st, std::string const &what)
{
    if (st != MPIXFER_OK)
        throwStatus(st, what);
}

void logWarn(std::string const &msg)
{
    std::fprintf(stderr, "mpixfer trtllm: %s\n", msg.c_str());
}

/* How long loadRemoteAgent waits for a remote to become usable: the library's stall
 * timeout (MPIXFER_STALL_TIMEOUT_MS, default 60 s), read the way the library reads it. */
std::chrono::milliseconds loadTimeout()
{
    char const *s = std::getenv("MPIXFER_STALL_TIMEOUT_MS");
    unsigned long long ms = 60000;
    if (s != nullptr && *s != '\0') {
        char *end = nullptr;
        unsigned long long v = std::strtoull(s, &end, 10);
        if (end != s && *end == '\0' && v > 0)
            ms = v;
    }
    return std::chrono::milliseconds(ms);
}

/* --------------------------------------------------------------------- conversions */

mpixfer_mem_type_t memType(kv::MemoryType t)
{
    switch (t) {
    case kv::MemoryType::kDRAM:
        return MPIXFER_MEM_DRAM;
    case kv::MemoryType::kVRAM:
        return MPIXFER_MEM_VRAM;
    case kv::MemoryType::kBLK:
        return MPIXFER_MEM_BLK;
    case kv::MemoryType::kOBJ:
        return MPIXFER_MEM_OBJ;
    case kv::MemoryType::kFILE:
        return MPIXFER_MEM_FILE;
    }
    throwStatus(MPIXFER_ERR_UNSUPPORTED,
                "memory type " + std::to_string(static_cast<int>(t)) + " is not known");
}

/* A MemoryDescs as the C structs; the vector owns the entries the view points at. */
struct CDescs {
    std::vector<mpixfer_mem_desc_t> entries;
    mpixfer_mem_descs_t view{};

    explicit CDescs(kv::MemoryDescs const &d)
    {
        auto const &in = d.getDescs();
        entries.reserve(in.size());
        for (auto const &m : in)
            entries.push_back(mpixfer_mem_desc_t{m.getAddr(), m.getLen(), m.getDeviceId()});
        view.type = memType(d.getType());
        view.descs = entries.empty() ? nullptr : entries.data();
        view.count = entries.size();
    }
};

/* ------------------------------------------------------------------ process runtime */

/* The process's context. Agents, loopback-free, and transfer statuses hold it by shared_ptr;
 * close() (at exit or at the application's MPI_Finalize) destroys the mpixfer context even
 * while some still do, after which they turn into no-ops or throw. */
class Runtime {
  public:
    Runtime(mpixfer_context_t *ctx, std::string comm) : mCtx{ctx}, mComm{std::move(comm)}
    {
    }

    Runtime(Runtime const &) = delete;
    Runtime &operator=(Runtime const &) = delete;

    ~Runtime()
    {
        close();
    }

    [[nodiscard]] mpixfer_context_t *ctx() const noexcept
    {
        return mCtx;
    }

    [[nodiscard]] bool alive() const noexcept
    {
        return mAlive.load(std::memory_order_acquire);
    }

    [[nodiscard]] std::string const &comm() const noexcept
    {
        return mComm;
    }

    /* Held while destroying an agent or the context, so the two never overlap. */
    std::mutex &lifecycle() noexcept
    {
        return mLife;
    }

    void ensureAlive(std::string const &what) const
    {
        if (!alive())
            throwStatus(MPIXFER_ERR_INVALID_ARG,
                        what + ": the process's mpixfer context is closed (MPI finalized)");
    }

    void close() noexcept
    {
        std::lock_guard<std::mutex> lk(mLife);
        if (!mAlive.exchange(false))
            return;
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (finalized) {
            logWarn("MPI was finalized before the mpixfer context; not destroying it");
            return;
        }
        mpixfer_status_t st = mpixfer_context_destroy(mCtx);
        if (st != MPIXFER_OK)
            logWarn("mpixfer_context_destroy: " + statusText(st));
        mCtx = nullptr;
    }

  private:
    mpixfer_context_t *mCtx;
    std::string mComm;
    std::atomic<bool> mAlive{true};
    std::mutex mLife;
};

struct ProcessState {
    std::mutex mu;
    std::shared_ptr<Runtime> runtime;
    bool ownsMpi = false;
    bool atexitRegistered = false;
    bool selfHookSet = false;
};

/* Never destroyed: it is used from the atexit handler and MPI_Finalize, after static
 * destructors may have run. */
ProcessState &processState()
{
    static ProcessState *s = new ProcessState;
    return *s;
}

void closeRuntime() noexcept
{
    std::shared_ptr<Runtime> rt;
    {
        auto &ps = processState();
        std::lock_guard<std::mutex> lk(ps.mu);
        rt = std::move(ps.runtime);
        ps.runtime.reset();
        ps.selfHookSet = false;
    }
    if (rt)
        rt->close();
}

/* The delete callback of our MPI_COMM_SELF attribute: MPI_Finalize runs it first thing, while
 * MPI still works, so the context goes before MPI does (guest or not). */
int onCommSelfDelete(MPI_Comm, int, void *, void *)
{
    closeRuntime();
    return MPI_SUCCESS;
}

void atExit()
{
    closeRuntime();
    bool owns = false;
    {
        auto &ps = processState();
        std::lock_guard<std::mutex> lk(ps.mu);
        owns = ps.ownsMpi;
        ps.ownsMpi = false;
    }
    if (owns) {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized)
            MPI_Finalize();
    }
}

std::shared_ptr<Runtime> acquireRuntime()
{
    auto &ps = processState();
    std::lock_guard<std::mutex> lk(ps.mu);
    if (ps.runtime)
        return ps.runtime;

    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (finalized)
        throwStatus(MPIXFER_ERR_INVALID_ARG,
                    "cannot create an agent: MPI has already been finalized in this process");
    if (!initialized) {
        int provided = MPI_THREAD_SINGLE;
        if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
            throwStatus(MPIXFER_ERR_MPI, "MPI_Init_thread(MPI_THREAD_MULTIPLE) failed");
        ps.ownsMpi = true;
        if (provided < MPI_THREAD_MULTIPLE)
            logWarn("MPI provides thread level " + std::to_string(provided) +
                    ", not MPI_THREAD_MULTIPLE: agents with threads will be refused");
    }
    if (!ps.atexitRegistered) {
        if (std::atexit(atExit) != 0)
            logWarn("atexit failed: the context is destroyed only at MPI_Finalize");
        ps.atexitRegistered = true;
    }
    if (!ps.selfHookSet) {
        int keyval = MPI_KEYVAL_INVALID;
        if (MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, onCommSelfDelete, &keyval, nullptr) ==
                MPI_SUCCESS &&
            MPI_Comm_set_attr(MPI_COMM_SELF, keyval, nullptr) == MPI_SUCCESS) {
            MPI_Comm_free_keyval(&keyval); /* the attribute keeps it until it is deleted */
            ps.selfHookSet = true;
        } else {
            logWarn("cannot hook MPI_Finalize (MPI_COMM_SELF attribute)");
        }
    }

    char const *env = std::getenv("MPIXFER_TRTLLM_COMM");
    std::string which = env != nullptr && *env != '\0' ? env : "self";
    MPI_Comm comm;
    if (which == "self") {
        comm = MPI_COMM_SELF;
    } else if (which == "world") {
        comm = MPI_COMM_WORLD; /* collective: every process creates its first agent */
    } else {
        throwStatus(MPIXFER_ERR_INVALID_ARG,
                    "MPIXFER_TRTLLM_COMM='" + which + "' (use 'self' or 'world')");
    }
    mpixfer_context_t *ctx = nullptr;
    check(mpixfer_context_create(comm, &ctx), "mpixfer_context_create over MPI_COMM_" +
                                                  std::string(which == "world" ? "WORLD" : "SELF"));
    ps.runtime = std::make_shared<Runtime>(ctx, which);
    return ps.runtime;
}

/* ------------------------------------------------------------------ transfer status */

class MpixferTransferStatus final : public kv::TransferStatus {
  public:
    MpixferTransferStatus(std::shared_ptr<Runtime> rt, mpixfer_request_t *req, std::string remote)
        : mRt{std::move(rt)}, mReq{req}, mRemote{std::move(remote)}
    {
    }

    MpixferTransferStatus(MpixferTransferStatus const &) = delete;
    MpixferTransferStatus &operator=(MpixferTransferStatus const &) = delete;

    ~MpixferTransferStatus() override
    {
        /* A request still in flight completes in the background (the library's rule);
         * after the context is closed every request has ended, so freeing is local. */
        mpixfer_request_free(mReq);
    }

    [[nodiscard]] bool isCompleted() const override
    {
        if (!mRt->alive())
            return true;
        return mpixfer_request_is_completed(mReq);
    }

    kv::TransferState wait(int64_t timeout_ms) const override
    {
        mpixfer_state_t s;
        if (mRt->alive()) {
            s = mpixfer_request_wait(mReq, timeout_ms);
        } else {
            mpixfer_status_t st = mpixfer_request_status(mReq);
            s = st == MPIXFER_OK ? MPIXFER_STATE_SUCCESS : MPIXFER_STATE_FAILURE;
        }
        switch (s) {
        case MPIXFER_STATE_SUCCESS:
            return kv::TransferState::kSUCCESS;
        case MPIXFER_STATE_IN_PROGRESS:
            return kv::TransferState::kIN_PROGRESS;
        case MPIXFER_STATE_FAILURE:
            break;
        }
        if (!mLogged.exchange(true)) {
            mpixfer_status_t st = mpixfer_request_status(mReq);
            logWarn("transfer to '" + mRemote + "' failed: " +
                    (st == MPIXFER_IN_PROGRESS ? std::string("context closed while in flight")
                                               : statusText(st)));
        }
        return kv::TransferState::kFAILURE;
    }

  private:
    std::shared_ptr<Runtime> mRt;
    mpixfer_request_t *mReq;
    std::string mRemote;
    mutable std::atomic<bool> mLogged{false};
};

/* --------------------------------------------------------------------------- agent */

class MpixferTransferAgent final : public kv::BaseTransferAgent {
  public:
    explicit MpixferTransferAgent(kv::BaseAgentConfig const *config)
        : mRt{acquireRuntime()}, mLoadTimeout{loadTimeout()}
    {
        mpixfer_agent_config_t cfg = MPIXFER_AGENT_CONFIG_INIT;
        if (config != nullptr) {
            cfg.name = config->mName.empty() ? nullptr : config->mName.c_str();
            cfg.use_progress_thread = config->useProgThread;
            cfg.multi_thread = config->multiThread;
            cfg.use_listen_thread = config->useListenThread;
            cfg.num_workers = config->numWorkers;
        }
        std::string label = config != nullptr && !config->mName.empty()
                                ? "'" + config->mName + "'"
                                : std::string("(generated name)");
        check(mpixfer_agent_create(mRt->ctx(), &cfg, &mAgent),
              "creating agent " + label + " in the " + mRt->comm() + " context");
        mName = mpixfer_agent_name(mAgent);
    }

    MpixferTransferAgent(MpixferTransferAgent const &) = delete;
    MpixferTransferAgent &operator=(MpixferTransferAgent const &) = delete;

    ~MpixferTransferAgent() override
    {
        std::lock_guard<std::mutex> lk(mRt->lifecycle());
        if (!mRt->alive())
            return; /* the context's destruction destroyed this agent too */
        mpixfer_status_t st = mpixfer_agent_destroy(mAgent);
        if (st != MPIXFER_OK)
            logWarn("destroying agent '" + mName + "': " + statusText(st));
    }

    void registerMemory(kv::RegisterDescs const &descs) override
    {
        mRt->ensureAlive("registerMemory");
        CDescs d{descs};
        if (d.view.count == 0)
            return;
        check(mpixfer_register_memory(mAgent, &d.view), what("registerMemory"));
    }

    void deregisterMemory(kv::RegisterDescs const &descs) override
    {
        mRt->ensureAlive("deregisterMemory");
        CDescs d{descs};
        if (d.view.count == 0)
            return;
        check(mpixfer_deregister_memory(mAgent, &d.view), what("deregisterMemory"));
    }

    void loadRemoteAgent(std::string const &name, kv::AgentDesc const &agentDesc) override
    {
        mRt->ensureAlive("loadRemoteAgent");
        std::string const &blob = agentDesc.getBackendAgentDesc();
        check(mpixfer_load_remote_agent(mAgent, name.c_str(), blob.data(), blob.size()),
              what("loadRemoteAgent('" + name + "', AgentDesc of " + std::to_string(blob.size()) +
                   " bytes)"));
        /* A descriptor of another job may need a link first (asynchronous). */
        waitUsable(name, "AgentDesc");
    }

    void loadRemoteAgent(std::string const &name, kv::ConnectionInfoType const &info) override
    {
        mRt->ensureAlive("loadRemoteAgent");
        check(mpixfer_load_remote_agent_by_connection(mAgent, name.c_str(), info.c_str()),
              what("loadRemoteAgent('" + name + "', connection info '" + info + "')"));
        /* As NIXL's wrapper does: return once the remote is usable, so a submit or notify
         * straight after works without polling checkRemoteDescs. */
        waitUsable(name, "connection info");
    }

    void invalidateRemoteAgent(std::string const &name) override
    {
        mRt->ensureAlive("invalidateRemoteAgent");
        mpixfer_status_t st = mpixfer_invalidate_remote_agent(mAgent, name.c_str());
        if (st == MPIXFER_ERR_NOT_FOUND)
            return; /* not loaded (or already invalidated): nothing to forget */
        check(st, what("invalidateRemoteAgent('" + name + "')"));
    }

    kv::AgentDesc getLocalAgentDesc() override
    {
        mRt->ensureAlive("getLocalAgentDesc");
        void *blob = nullptr;
        size_t len = 0;
        check(mpixfer_get_local_agent_desc(mAgent, &blob, &len), what("getLocalAgentDesc"));
        std::string s;
        try {
            s.assign(static_cast<char const *>(blob), len);
        } catch (...) {
            mpixfer_free(blob);
            throw;
        }
        mpixfer_free(blob);
        return kv::AgentDesc{std::move(s)};
    }

    kv::ConnectionInfoType getLocalConnectionInfo() override
    {
        mRt->ensureAlive("getLocalConnectionInfo");
        char *info = nullptr;
        check(mpixfer_get_local_connection_info(mAgent, &info), what("getLocalConnectionInfo"));
        std::string s;
        try {
            s = info;
        } catch (...) {
            mpixfer_free(info);
            throw;
        }
        mpixfer_free(info);
        return s;
    }

    [[nodiscard]] std::unique_ptr<kv::TransferStatus>
    submitTransferRequests(kv::TransferRequest const &request) override
    {
        mRt->ensureAlive("submitTransferRequests");
        CDescs src{request.getSrcDescs()};
        CDescs dst{request.getDstDescs()};
        std::optional<kv::SyncMessage> msg = request.getSyncMessage();
        std::string const &remote = request.getRemoteName();

        mpixfer_transfer_request_t req{};
        req.op = request.getOp() == kv::TransferOp::kREAD ? MPIXFER_OP_READ : MPIXFER_OP_WRITE;
        req.src = src.view;
        req.dst = dst.view;
        req.remote_name = remote.c_str();
        if (msg.has_value()) {
            req.sync_message = msg->data();
            req.sync_message_len = msg->size();
        }
        mpixfer_request_t *xfer = nullptr;
        check(mpixfer_submit_transfer(mAgent, &req, &xfer),
              what(std::string(req.op == MPIXFER_OP_READ ? "READ" : "WRITE") + " of " +
                   std::to_string(src.view.count) + " descriptors " +
                   (req.op == MPIXFER_OP_READ ? "from" : "to") + " '" + remote + "'"));
        try {
            return std::make_unique<MpixferTransferStatus>(mRt, xfer, remote);
        } catch (...) {
            mpixfer_request_free(xfer);
            throw;
        }
    }

    void notifySyncMessage(std::string const &name, kv::SyncMessage const &msg) override
    {
        mRt->ensureAlive("notifySyncMessage");
        check(
            mpixfer_notify_sync_message(mAgent, name.c_str(), msg.data(), msg.size()),
            what("notifySyncMessage to '" + name + "' (" + std::to_string(msg.size()) + " bytes)"));
    }

    std::unordered_map<std::string, std::vector<kv::SyncMessage>> getNotifiedSyncMessages() override
    {
        mRt->ensureAlive("getNotifiedSyncMessages");
        mpixfer_sync_message_t *msgs = nullptr;
        size_t count = 0;
        check(mpixfer_get_notified_sync_messages(mAgent, &msgs, &count),
              what("getNotifiedSyncMessages"));
        std::unordered_map<std::string, std::vector<kv::SyncMessage>> out;
        try {
            for (size_t i = 0; i < count; i++)
                out[msgs[i].agent_name].emplace_back(static_cast<char const *>(msgs[i].data),
                                                     msgs[i].len);
        } catch (...) {
            mpixfer_sync_messages_free(msgs, count);
            throw;
        }
        mpixfer_sync_messages_free(msgs, count);
        return out;
    }

    bool checkRemoteDescs(std::string const &name, kv::MemoryDescs const &memoryDescs) override
    {
        mRt->ensureAlive("checkRemoteDescs");
        CDescs d{memoryDescs};
        return mpixfer_check_remote_descs(mAgent, name.c_str(), &d.view);
    }

  private:
    [[nodiscard]] std::string what(std::string const &call) const
    {
        return call + " of agent '" + mName + "'";
    }

    /* Polls until @p name is loaded (its descriptor arrived, its link is up). A load that
     * can never complete (a refused key, a gone peer) throws its reason at once; one still
     * under way when the stall timeout passes is forgotten and MPIXFER_ERR_TIMEOUT thrown.
     * The remote answers from its own progress (threads or calls). */
    void waitUsable(std::string const &name, char const *how)
    {
        auto const start = std::chrono::steady_clock::now();
        for (unsigned spins = 0;; spins++) {
            mpixfer_status_t st = mpixfer_remote_status(mAgent, name.c_str());
            if (st == MPIXFER_OK)
                return;
            /* NOT_FOUND (its process has no such agent, for now) keeps the documented
             * behaviour: TIMEOUT once the stall timeout has passed. */
            if (st != MPIXFER_IN_PROGRESS && st != MPIXFER_ERR_NOT_FOUND) {
                (void)mpixfer_invalidate_remote_agent(mAgent, name.c_str());
                throwStatus(st, what("loadRemoteAgent('" + name + "', " + how + ")") +
                                    ": the remote cannot be loaded");
            }
            auto waited = std::chrono::steady_clock::now() - start;
            if (waited >= mLoadTimeout) {
                (void)mpixfer_invalidate_remote_agent(mAgent, name.c_str());
                throwStatus(MPIXFER_ERR_TIMEOUT,
                            what("loadRemoteAgent('" + name + "', " + how + ")") +
                                ": the remote was not usable after " +
                                std::to_string(mLoadTimeout.count()) +
                                " ms (MPIXFER_STALL_TIMEOUT_MS)" +
                                (st == MPIXFER_ERR_NOT_FOUND
                                     ? "; its process answered that it has no such agent"
                                     : ""));
            }
            (void)mpixfer_progress(mRt->ctx());
            if (spins < 64)
                std::this_thread::yield();
            else
                std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
    }

    std::shared_ptr<Runtime> mRt;
    std::chrono::milliseconds mLoadTimeout;
    mpixfer_agent_t *mAgent = nullptr;
    std::string mName;
};

/* ------------------------------------------------------------------------- loopback */

class MpixferLoopbackAgent final : public kv::BaseLoopbackAgent {
  public:
    explicit MpixferLoopbackAgent(kv::BaseAgentConfig const *config)
    {
        mpixfer_agent_config_t cfg = MPIXFER_AGENT_CONFIG_INIT;
        if (config != nullptr) {
            mName = config->mName;
            cfg.name = config->mName.empty() ? nullptr : config->mName.c_str();
            cfg.use_progress_thread = config->useProgThread;
            cfg.multi_thread = config->multiThread;
            cfg.use_listen_thread = config->useListenThread;
            cfg.num_workers = config->numWorkers;
        }
        check(mpixfer_loopback_create(&cfg, &mLb), "creating loopback agent '" + mName + "'");
    }

    MpixferLoopbackAgent(MpixferLoopbackAgent const &) = delete;
    MpixferLoopbackAgent &operator=(MpixferLoopbackAgent const &) = delete;

    ~MpixferLoopbackAgent() override
    {
        mpixfer_status_t st = mpixfer_loopback_destroy(mLb);
        if (st != MPIXFER_OK)
            logWarn("destroying loopback agent '" + mName + "': " + statusText(st));
    }

    void executeLoopbackRequest(kv::MemoryDescs const &memoryDescs, kv::FileDescs const &fileDescs,
                                bool isOffload) override
    {
        CDescs mem{memoryDescs};
        std::vector<mpixfer_file_desc_t> files;
        files.reserve(fileDescs.getDescs().size());
        for (auto const &f : fileDescs.getDescs())
            files.push_back(mpixfer_file_desc_t{static_cast<int>(f.getFd()), f.getLen(), 0});
        check(mpixfer_loopback_execute(mLb, &mem.view, files.empty() ? nullptr : files.data(),
                                       files.size(), isOffload),
              std::string("executeLoopbackRequest (") + (isOffload ? "offload" : "load") + " of " +
                  std::to_string(mem.view.count) + " descriptors) of loopback agent '" + mName +
                  "'");
    }

  private:
    mpixfer_loopback_t *mLb = nullptr;
    std::string mName;
};

} // namespace

/* ------------------------------------------------------------------------ factories */

/* extern "C" for dlsym(), returning C++ types as TensorRT-LLM declares them. */
#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wreturn-type-c-linkage"
#endif

extern "C" __attribute__((visibility("default"))) std::unique_ptr<kv::BaseTransferAgent>
createMpixferTransferAgent(kv::BaseAgentConfig const *config)
{
    return std::make_unique<MpixferTransferAgent>(config);
}

extern "C" __attribute__((visibility("default"))) std::shared_ptr<kv::BaseLoopbackAgent>
createMpixferLoopbackAgent(kv::BaseAgentConfig const *config)
{
    return std::make_shared<MpixferLoopbackAgent>(config);
}

#if defined(__clang__)
#pragma clang diagnostic pop
#endif
