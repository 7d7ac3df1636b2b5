// mpixfer._mpixfer: the Python binding of mpixfer's public C API (include/mpixfer.h).
//
// Names and meanings follow TensorRT-LLM's transfer-agent binding
// (tensorrt_llm_transfer_agent_binding): MemoryType, TransferOp, TransferState, MemoryDesc,
// MemoryDescs, AgentDesc, TransferRequest, TransferStatus, BaseAgentConfig,
// BaseTransferAgent, make_transfer_agent. What that binding lacks is added: Context (an
// mpi4py communicator), arena buffers, MpixferError carrying the status name, context
// managers, and the hooks the package's Python part builds `await status` on.
//
// Lifetimes. Every Python object that needs a context holds a shared_ptr<Ctx>; all live
// contexts are also kept in g_contexts, in creation order. A context is destroyed by
// Context.close(), by _shutdown() (registered with atexit by the package, so it runs before
// mpi4py finalises MPI), or, when its communicator has one process, as soon as nothing uses
// it any more. Contexts over several processes are never destroyed by garbage collection:
// destroy is collective, and the processes would not agree on when it happens.
//
// The GIL is released around every call that may block or take long: waits, submits,
// collective calls, building descriptor lists from arrays.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <mpi.h>
#include <mpi4py/mpi4py.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

extern "C" {
#include "mpixfer.h"
}

namespace py = pybind11;

namespace {

// ------------------------------------------------------------------------ errors

PyObject *g_error_type = nullptr; // mpixfer.MpixferError (a RuntimeError)

struct Error {
    mpixfer_status_t status;
    std::string what;
};

[[noreturn]] void fail(mpixfer_status_t st, const std::string &what)
{
    throw Error{st, what};
}

void check(mpixfer_status_t st, const char *what)
{
    if (st != MPIXFER_OK)
        fail(st, what);
}

void translate(std::exception_ptr p)
{
    try {
        if (p)
            std::rethrow_exception(p);
    } catch (const Error &e) {
        std::string msg =
            e.what + ": " + mpixfer_status_name(e.status) + " (" + mpixfer_strerror(e.status) + ")";
        PyObject *inst = PyObject_CallFunction(g_error_type, "s", msg.c_str());
        if (inst == nullptr)
            return; // the call set its own error
        PyObject *code = PyLong_FromLong((long)e.status);
        PyObject *name = PyUnicode_FromString(mpixfer_status_name(e.status));
        if (code && name && PyObject_SetAttrString(inst, "status", code) == 0 &&
            PyObject_SetAttrString(inst, "status_name", name) == 0)
            PyErr_SetObject(g_error_type, inst);
        Py_XDECREF(code);
        Py_XDECREF(name);
        Py_DECREF(inst);
    }
}

// ---------------------------------------------------------------------- bytes helpers

// bytes, bytearray, memoryview or any buffer: their bytes; str: UTF-8.
std::string to_bytes(const py::handle &obj, const char *what)
{
    if (PyBytes_Check(obj.ptr())) {
        char *p = nullptr;
        Py_ssize_t n = 0;
        PyBytes_AsStringAndSize(obj.ptr(), &p, &n);
        return std::string(p, (size_t)n);
    }
    if (PyUnicode_Check(obj.ptr())) {
        Py_ssize_t n = 0;
        const char *p = PyUnicode_AsUTF8AndSize(obj.ptr(), &n);
        if (p == nullptr)
            throw py::error_already_set();
        return std::string(p, (size_t)n);
    }
    if (PyObject_CheckBuffer(obj.ptr())) {
        Py_buffer view;
        if (PyObject_GetBuffer(obj.ptr(), &view, PyBUF_SIMPLE) != 0)
            throw py::error_already_set();
        std::string s(static_cast<const char *>(view.buf), (size_t)view.len);
        PyBuffer_Release(&view);
        return s;
    }
    throw py::type_error(std::string(what) + ": expected bytes or str, got " +
                         std::string(py::str(obj.get_type().attr("__name__"))));
}

// ------------------------------------------------------------------- descriptors

struct MemDesc {
    mpixfer_mem_desc_t d;
};

// A MemoryDescs: immutable once built, so requests share it without copying, and a submit
// may read it with the GIL released.
struct Descs {
    mpixfer_mem_type_t type;
    std::vector<mpixfer_mem_desc_t> v;
    mpixfer_mem_descs_t c() const
    {
        return {type, v.data(), v.size()};
    }
};
using DescsP = std::shared_ptr<Descs>;

uint64_t as_u64(const py::handle &h, const char *what)
{
    unsigned long long x = PyLong_AsUnsignedLongLong(h.ptr());
    if (x == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        throw py::value_error(std::string(what) + " must be an integer in [0, 2**64)");
    }
    return (uint64_t)x;
}

// A device id: what MemoryDesc and the tuples of MemoryDescs take.
uint32_t as_device_id(const py::handle &h)
{
    unsigned long long x = PyLong_AsUnsignedLongLong(h.ptr());
    if (x == (unsigned long long)-1 && PyErr_Occurred())
        PyErr_Clear();
    else if (x <= UINT32_MAX)
        return (uint32_t)x;
    throw py::value_error("device_id must be an integer in [0, 2**32)");
}

mpixfer_mem_desc_t desc_from_item(const py::handle &item)
{
    if (py::isinstance<MemDesc>(item))
        return item.cast<const MemDesc &>().d;
    if (!PySequence_Check(item.ptr()))
        throw py::type_error("MemoryDescs: each item is a MemoryDesc or a tuple "
                             "(addr, len, device_id)");
    py::sequence t = py::reinterpret_borrow<py::sequence>(item);
    // (addr, len, device_id); a fourth item (a name, as TensorRT-LLM's RegMemoryDescs
    // carries) is accepted and ignored.
    if (t.size() != 3 && t.size() != 4)
        throw py::value_error("MemoryDescs: a tuple item is (addr, len, device_id)");
    uint32_t dev = as_device_id(t[2]);
    return {(uintptr_t)as_u64(t[0], "addr"), (size_t)as_u64(t[1], "len"), dev};
}

DescsP descs_from_list(mpixfer_mem_type_t type, const py::iterable &items)
{
    auto d = std::make_shared<Descs>();
    d->type = type;
    if (PySequence_Check(items.ptr()))
        d->v.reserve((size_t)PySequence_Size(items.ptr()));
    for (py::handle item : items)
        d->v.push_back(desc_from_item(item));
    return d;
}

using I64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

// An integer array as int64 (uint64 addresses above 2**63 wrap, as the C side expects).
// forcecast alone would also turn floats into addresses: refused.
I64Array int64_array(const py::object &o, const char *what)
{
    py::array a = py::array::ensure(o); // a list becomes an array as NumPy sees it
    if (!a)
        throw py::type_error(std::string("from_arrays: ") + what + " must be an integer array");
    char k = a.dtype().kind();
    if (k != 'i' && k != 'u')
        throw py::type_error(std::string("from_arrays: ") + what +
                             " must be an integer array, not " +
                             py::str(a.dtype()).cast<std::string>());
    return I64Array::ensure(a);
}

// Builds descriptors from arrays without the GIL. @p devs NULL: every one gets @p dev.
DescsP descs_from_arrays(mpixfer_mem_type_t type, const I64Array &addrs, const I64Array &sizes,
                         const I64Array *devs, int64_t dev)
{
    if (addrs.ndim() != 1 || sizes.ndim() != 1 || (devs && devs->ndim() != 1))
        throw py::value_error("from_arrays: the arrays must be one-dimensional");
    size_t n = (size_t)addrs.shape(0);
    if ((size_t)sizes.shape(0) != n || (devs && (size_t)devs->shape(0) != n))
        throw py::value_error("from_arrays: the arrays must have the same length");
    if (!devs && (dev < 0 || dev > (int64_t)UINT32_MAX))
        throw py::value_error("from_arrays_uniform_device: device_id out of range");
    const int64_t *a = addrs.data(), *s = sizes.data();
    const int64_t *dv = devs ? devs->data() : nullptr;
    auto d = std::make_shared<Descs>();
    d->type = type;
    size_t bad = SIZE_MAX;
    {
        py::gil_scoped_release nogil;
        d->v.resize(n);
        mpixfer_mem_desc_t *out = d->v.data();
        for (size_t i = 0; i < n; i++) {
            int64_t di = dv ? dv[i] : dev;
            if (s[i] < 0 || di < 0 || di > (int64_t)UINT32_MAX) {
                bad = i;
                break;
            }
            out[i].addr = (uintptr_t)(uint64_t)a[i]; // addresses above 2**63 arrive negative
            out[i].len = (size_t)s[i];
            out[i].device_id = (uint32_t)di;
        }
    }
    if (bad != SIZE_MAX)
        throw py::value_error(
            "from_arrays: negative size or device_id out of [0, 2**32) at index " +
            std::to_string(bad));
    return d;
}

// --------------------------------------------------------------------- contexts

struct AgentImpl;

struct Ctx {
    mpixfer_context_t *ctx = nullptr; // NULL once destroyed
    bool process_wide = false;
    int size = 1;
    std::set<AgentImpl *> agents; // alive agents (GIL held for every change)
    size_t buffers = 0;           // alive arena blocks
};
using CtxP = std::shared_ptr<Ctx>;

std::vector<CtxP> g_contexts; // every context not destroyed yet, in creation order
CtxP g_default;               // the process-wide context (MPI_COMM_SELF), made on first use
std::mutex g_poll_mu;         // held by the notifier while it polls; by destroy_ctx meanwhile

void destroy_agent(AgentImpl *a);

// Destroys the context and its agents. GIL held on entry; released while MPI runs.
mpixfer_status_t destroy_ctx(const CtxP &c)
{
    if (c->ctx == nullptr)
        return MPIXFER_OK;
    std::set<AgentImpl *> agents;
    agents.swap(c->agents);
    for (AgentImpl *a : agents)
        destroy_agent(a);
    mpixfer_status_t st;
    {
        py::gil_scoped_release nogil;
        std::lock_guard<std::mutex> g(g_poll_mu);
        st = mpixfer_context_destroy(c->ctx);
        c->ctx = nullptr;
    }
    for (auto it = g_contexts.begin(); it != g_contexts.end(); ++it)
        if (*it == c) {
            g_contexts.erase(it);
            break;
        }
    if (g_default == c)
        g_default.reset();
    return st;
}

// Called when a user of a context lets go of it: a one-process context nobody uses any
// more is destroyed now (not collective in effect); the others wait for close() or exit.
void collect_contexts()
{
    for (size_t i = 0; i < g_contexts.size();) {
        CtxP c = g_contexts[i];
        // Users: g_contexts and `c` here.
        if (c.use_count() == 2 && !c->process_wide && c->size == 1 && c->agents.empty() &&
            c->buffers == 0) {
            (void)destroy_ctx(c);
            continue;
        }
        i++;
    }
}

// Keeps a context alive; tells collect_contexts when it lets go.
struct CtxRef {
    CtxP c;
    CtxRef() = default;
    explicit CtxRef(CtxP p) : c(std::move(p))
    {
    }
    CtxRef(const CtxRef &) = default;
    CtxRef &operator=(const CtxRef &) = default;
    ~CtxRef()
    {
        if (c && !c->process_wide && c->size == 1 && c->ctx && Py_IsInitialized()) {
            c.reset();
            collect_contexts();
        }
    }
};

mpixfer_data_path_t parse_data_path(const std::string &s)
{
    if (s == "auto")
        return MPIXFER_DATA_PATH_AUTO;
    if (s == "rma")
        return MPIXFER_DATA_PATH_RMA;
    if (s == "messages")
        return MPIXFER_DATA_PATH_MESSAGES;
    throw py::value_error("data_path must be 'auto', 'rma' or 'messages'");
}

CtxP make_ctx(MPI_Comm comm, const mpixfer_context_params_t &params, bool process_wide)
{
    auto c = std::make_shared<Ctx>();
    mpixfer_status_t st;
    {
        py::gil_scoped_release nogil;
        st = mpixfer_context_create_with_params(comm, &params, &c->ctx);
    }
    check(st, "Context");
    c->size = mpixfer_context_size(c->ctx);
    c->process_wide = process_wide;
    g_contexts.push_back(c);
    return c;
}

CtxP default_ctx()
{
    if (!g_default) {
        mpixfer_context_params_t params = MPIXFER_CONTEXT_PARAMS_INIT;
        g_default = make_ctx(MPI_COMM_SELF, params, true);
    }
    return g_default;
}

void need_open(const CtxP &c)
{
    if (c->ctx == nullptr)
        fail(MPIXFER_ERR_INVALID_ARG, "the context is closed");
}

// The Python Context object.
struct ContextPy {
    CtxRef ref;
};

// An arena block; readable and writable through the buffer protocol.
struct ArenaBuffer {
    CtxRef ref;
    void *ptr = nullptr;
    size_t len = 0;
    ~ArenaBuffer()
    {
        if (ptr && ref.c->ctx)
            (void)mpixfer_mem_free(ref.c->ctx, ptr); // BUSY (still registered): kept until
                                                     // the context goes
        if (ptr)
            ref.c->buffers--;
    }
};

// ------------------------------------------------------------------------ config

struct Config {
    std::string name;
    bool use_prog_thread = true;
    bool multi_thread = false;
    bool use_listen_thread = false;
    bool enable_telemetry = false;
    std::map<std::string, std::string> backend_params;
    unsigned num_workers = 1;
};

// ---------------------------------------------------------------------- requests

struct Request {
    mpixfer_op_t op;
    DescsP src, dst;
    std::string remote_name;
    py::object sync_obj; // what the caller gave (None, str or bytes), returned as is
    bool has_sync = false;
    std::string sync;
    uint64_t deadline_ms = 0; // 0: none
};

struct TransferStatusBase {
    virtual ~TransferStatusBase() = default;
    virtual bool is_completed() = 0;
    virtual mpixfer_state_t wait(int64_t timeout_ms) = 0;
};

struct Status : TransferStatusBase {
    mpixfer_request_t *x = nullptr; // NULL: nothing to move, finished at submit
    CtxRef ref;
    DescsP src, dst; // the library may read queued descriptors after submit
    ~Status() override
    {
        mpixfer_request_free(x);
    }
    bool is_completed() override
    {
        py::gil_scoped_release nogil;
        return x == nullptr || mpixfer_request_is_completed(x);
    }
    mpixfer_state_t wait(int64_t timeout_ms) override
    {
        py::gil_scoped_release nogil;
        return x == nullptr ? MPIXFER_STATE_SUCCESS : mpixfer_request_wait(x, timeout_ms);
    }
    // No GIL needed.
    mpixfer_state_t poll()
    {
        return x == nullptr ? MPIXFER_STATE_SUCCESS : mpixfer_request_wait(x, 0);
    }
    mpixfer_status_t last() const
    {
        return x == nullptr ? MPIXFER_OK : mpixfer_request_status(x);
    }
    mpixfer_status_t cancel()
    {
        py::gil_scoped_release nogil;
        return x == nullptr ? MPIXFER_OK : mpixfer_request_cancel(x);
    }
};
using StatusP = std::shared_ptr<Status>;

// ---------------------------------------------------------------------- notifier
//
// `await status`: the package's __await__ polls once; a request still in flight is handed
// here with its event loop and a future. One background thread polls the handed requests
// (mpixfer_request_wait with timeout 0, which drives progress; under g_poll_mu, so a
// context is never destroyed under it) and completes each future on its loop with
// loop.call_soon_threadsafe. While requests stay in flight it yields, then sleeps with
// growing pauses (at most 1 ms); a new request wakes it. The event loop never polls.

struct Pending {
    StatusP st;
    PyObject *loop; // owned references, touched only with the GIL
    PyObject *fut;
};

class Notifier {
  public:
    void add(StatusP st, py::object loop, py::object fut)
    {
        Pending p{std::move(st), loop.release().ptr(), fut.release().ptr()};
        std::lock_guard<std::mutex> g(mu_);
        incoming_.push_back(std::move(p));
        if (!thread_.joinable()) {
            stop_ = false;
            thread_ = std::thread([this] { run(); });
        }
        cv_.notify_one();
    }

    // GIL held on entry; released while the thread ends.
    void stop()
    {
        {
            std::lock_guard<std::mutex> g(mu_);
            if (!thread_.joinable())
                return;
            stop_ = true;
            cv_.notify_one();
        }
        {
            py::gil_scoped_release nogil;
            thread_.join();
        }
        drop(incoming_);
        drop(active_);
    }

    py::object resolver; // mpixfer._resolve(loop, fut, state), set at import

  private:
    static void drop(std::vector<Pending> &v)
    {
        for (Pending &p : v) {
            Py_XDECREF(p.loop);
            Py_XDECREF(p.fut);
        }
        v.clear();
    }

    void run()
    {
        unsigned idle = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lk(mu_);
                auto woken = [this] { return stop_ || !incoming_.empty(); };
                if (active_.empty())
                    cv_.wait(lk, woken);
                else if (idle > 8)
                    cv_.wait_for(
                        lk,
                        std::chrono::microseconds(std::min(1000u, 10u << std::min(idle - 8, 7u))),
                        woken);
                if (stop_)
                    return;
                if (!incoming_.empty()) {
                    for (Pending &p : incoming_)
                        active_.push_back(std::move(p));
                    incoming_.clear();
                    idle = 0;
                }
            }
            std::vector<std::pair<Pending, mpixfer_state_t>> done;
            {
                std::lock_guard<std::mutex> g(g_poll_mu);
                for (size_t i = 0; i < active_.size();) {
                    mpixfer_state_t s = active_[i].st->poll();
                    if (s != MPIXFER_STATE_IN_PROGRESS) {
                        done.emplace_back(std::move(active_[i]), s);
                        active_[i] = std::move(active_.back());
                        active_.pop_back();
                        continue;
                    }
                    i++;
                }
            }
            if (done.empty()) {
                if (++idle <= 8)
                    std::this_thread::yield();
                continue;
            }
            idle = 0;
            py::gil_scoped_acquire gil;
            for (auto &d : done) {
                try {
                    resolver(py::handle(d.first.loop), py::handle(d.first.fut), py::cast(d.second));
                } catch (py::error_already_set &e) {
                    e.discard_as_unraisable("mpixfer: completing an awaited transfer");
                }
                Py_DECREF(d.first.loop);
                Py_DECREF(d.first.fut);
                d.first.st.reset();
            }
        }
    }

    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<Pending> incoming_, active_;
    bool stop_ = false;
    std::thread thread_;
};

Notifier *g_notifier = nullptr; // never deleted: it may outlive the module's teardown

// ------------------------------------------------------------------------ agents

struct BaseAgent {
    virtual ~BaseAgent() = default;
};

// mpixfer_agent_stats_t as a dict; a histogram as {"count", "sum_ns", "buckets" (not
// cumulative), "bounds_ns" (upper bound of each bucket, None for the last)}.
py::dict agent_stats_dict(const mpixfer_agent_stats_t &s)
{
    auto hist = [](const mpixfer_histogram_t &h) {
        py::dict d;
        py::list buckets, bounds;
        for (unsigned i = 0; i < MPIXFER_HIST_BUCKETS; i++) {
            buckets.append(h.buckets[i]);
            if (i + 1 < MPIXFER_HIST_BUCKETS)
                bounds.append(MPIXFER_HIST_BUCKET_NS(i));
            else
                bounds.append(py::none());
        }
        d["count"] = h.count;
        d["sum_ns"] = h.sum_ns;
        d["buckets"] = buckets;
        d["bounds_ns"] = bounds;
        return d;
    };
    py::dict d, failures;
    d["requests"] = s.requests;
    d["requests_succeeded"] = s.requests_succeeded;
    d["requests_failed"] = s.requests_failed;
    for (int i = 0; i < MPIXFER_STATUS_SLOTS; i++)
        if (s.failures[i] > 0)
            failures[py::str(i == 0 ? "MPIXFER_UNKNOWN"
                                    : mpixfer_status_name((mpixfer_status_t)-i))] = s.failures[i];
    d["failures"] = failures;
    d["submit_errors"] = s.submit_errors;
    d["bytes_sent"] = s.bytes_sent;
    d["bytes_received"] = s.bytes_received;
    d["sync_messages_sent"] = s.sync_messages_sent;
    d["sync_messages_received"] = s.sync_messages_received;
    d["post_time"] = hist(s.post_time);
    d["transfer_time"] = hist(s.transfer_time);
    return d;
}

struct AgentImpl : BaseAgent {
    CtxRef ref;
    mpixfer_agent_t *agent = nullptr; // NULL once destroyed
    std::string name;

    mpixfer_agent_t *get()
    {
        if (agent == nullptr)
            fail(MPIXFER_ERR_INVALID_ARG, "agent '" + name + "' is closed");
        return agent;
    }
    ~AgentImpl() override
    {
        if (agent && ref.c)
            ref.c->agents.erase(this);
        destroy_agent(this);
    }
};

void destroy_agent(AgentImpl *a)
{
    if (a->agent == nullptr)
        return;
    mpixfer_agent_t *ag = a->agent;
    a->agent = nullptr;
    (void)mpixfer_agent_destroy(ag); // completes its transfers first
}

std::unique_ptr<AgentImpl> make_agent(const Config &cfg, const py::object &context)
{
    CtxP c;
    if (context.is_none())
        c = default_ctx();
    else
        c = context.cast<ContextPy &>().ref.c;
    need_open(c);
    mpixfer_agent_config_t ac = MPIXFER_AGENT_CONFIG_INIT;
    ac.name = cfg.name.empty() ? nullptr : cfg.name.c_str();
    ac.use_progress_thread = cfg.use_prog_thread;
    ac.multi_thread = cfg.multi_thread;
    ac.use_listen_thread = cfg.use_listen_thread;
    ac.num_workers = cfg.num_workers;
    auto a = std::make_unique<AgentImpl>();
    mpixfer_status_t st;
    {
        py::gil_scoped_release nogil;
        st = mpixfer_agent_create(c->ctx, &ac, &a->agent);
    }
    check(st, "MpixferTransferAgent");
    a->name = mpixfer_agent_name(a->agent);
    a->ref = CtxRef(c);
    c->agents.insert(a.get());
    return a;
}

// Anything MemoryDescs.from_tensors accepts (NumPy arrays, torch tensors, buffers) or a
// MemoryDescs itself.
DescsP as_descs(const py::object &obj)
{
    if (py::isinstance<Descs>(obj))
        return obj.cast<DescsP>();
    py::object md = py::module_::import("mpixfer").attr("MemoryDescs");
    return md.attr("from_tensors")(obj).cast<DescsP>();
}

struct AgentDesc {
    std::string blob;
};

// serialize(): "MXAD", u32 version 1, u64 length (little-endian), the blob.
py::bytes agent_desc_serialize(const AgentDesc &d)
{
    std::string out("MXAD", 4);
    auto put = [&out](uint64_t v, int n) {
        for (int i = 0; i < n; i++)
            out.push_back((char)((v >> (8 * i)) & 0xFF));
    };
    put(1, 4);
    put(d.blob.size(), 8);
    out += d.blob;
    return py::bytes(out);
}

AgentDesc agent_desc_deserialize(const py::object &data)
{
    std::string s = to_bytes(data, "AgentDesc.deserialize");
    auto get = [&s](size_t off, int n) {
        uint64_t v = 0;
        for (int i = 0; i < n; i++)
            v |= (uint64_t)(unsigned char)s[off + i] << (8 * i);
        return v;
    };
    if (s.size() < 16 || s.compare(0, 4, "MXAD") != 0 || get(4, 4) != 1 ||
        get(8, 8) != s.size() - 16)
        fail(MPIXFER_ERR_BAD_DESC, "AgentDesc.deserialize");
    return AgentDesc{s.substr(16)};
}

// ---------------------------------------------------------------------- loopback

struct FileDesc {
    int fd = -1;
    size_t len = 0;
    uint64_t offset = 0;
    bool owned = false;
    ~FileDesc()
    {
        if (owned && fd >= 0)
            ::close(fd);
    }
};
using FileDescP = std::shared_ptr<FileDesc>;

struct FileDescs {
    std::vector<FileDescP> v;
};

struct BaseLoopback {
    virtual ~BaseLoopback() = default;
};

struct Loopback : BaseLoopback {
    mpixfer_loopback_t *lb = nullptr;
    ~Loopback() override
    {
        (void)mpixfer_loopback_destroy(lb);
    }
};

std::vector<FileDescP> as_files(const py::object &obj)
{
    if (py::isinstance<FileDescs>(obj))
        return obj.cast<FileDescs &>().v;
    std::vector<FileDescP> v;
    for (py::handle item : obj) {
        if (py::isinstance<FileDesc>(item)) {
            v.push_back(item.cast<FileDescP>());
            continue;
        }
        py::sequence t = py::reinterpret_borrow<py::sequence>(item);
        if (t.size() != 2 && t.size() != 3)
            throw py::value_error("a file item is a FileDesc or (fd, len[, offset])");
        auto f = std::make_shared<FileDesc>();
        f->fd = t[0].cast<int>();
        f->len = (size_t)as_u64(t[1], "len");
        f->offset = t.size() == 3 ? as_u64(t[2], "offset") : 0;
        v.push_back(f);
    }
    return v;
}

} // namespace

// ========================================================================= module

PYBIND11_MODULE(_mpixfer, m)
{
    m.doc() = "mpixfer: registered memory between processes over MPI (C API binding)";
    if (import_mpi4py() < 0)
        throw py::error_already_set();

    g_error_type = PyErr_NewExceptionWithDoc(
        "mpixfer.MpixferError",
        "An mpixfer call failed; .status is the status code, .status_name its name "
        "(such as 'MPIXFER_ERR_NOT_FOUND').",
        PyExc_RuntimeError, nullptr);
    if (g_error_type == nullptr)
        throw py::error_already_set();
    m.attr("MpixferError") = py::handle(g_error_type);
    py::register_exception_translator(translate);
    g_notifier = new Notifier();

    m.def("version", &mpixfer_version, "The C library's version, 'major.minor.patch'.");
    m.def(
        "status_name", [](int st) { return mpixfer_status_name((mpixfer_status_t)st); },
        py::arg("status"));
    m.def(
        "strerror", [](int st) { return mpixfer_strerror((mpixfer_status_t)st); },
        py::arg("status"));

    // ------------------------------------------------------------------ enums
    py::enum_<mpixfer_mem_type_t>(m, "MemoryType")
        .value("DRAM", MPIXFER_MEM_DRAM)
        .value("VRAM", MPIXFER_MEM_VRAM)
        .value("BLK", MPIXFER_MEM_BLK)
        .value("OBJ", MPIXFER_MEM_OBJ)
        .value("FILE", MPIXFER_MEM_FILE);
    py::enum_<mpixfer_op_t>(m, "TransferOp")
        .value("READ", MPIXFER_OP_READ)
        .value("WRITE", MPIXFER_OP_WRITE);
    py::enum_<mpixfer_state_t>(m, "TransferState")
        .value("IN_PROGRESS", MPIXFER_STATE_IN_PROGRESS)
        .value("SUCCESS", MPIXFER_STATE_SUCCESS)
        .value("FAILURE", MPIXFER_STATE_FAILURE);

    // ------------------------------------------------------------ descriptors
    py::class_<MemDesc>(m, "MemoryDesc", "One memory range: address, length, device.")
        .def(py::init([](py::handle addr, py::handle len, py::handle device_id) {
                 uint32_t dev = as_device_id(device_id);
                 return MemDesc{{(uintptr_t)as_u64(addr, "addr"), (size_t)as_u64(len, "len"), dev}};
             }),
             py::arg("addr"), py::arg("len"), py::arg("device_id") = 0)
        .def_property_readonly("addr", [](const MemDesc &d) { return (uint64_t)d.d.addr; })
        .def_property_readonly("len", [](const MemDesc &d) { return (uint64_t)d.d.len; })
        .def_property_readonly("device_id", [](const MemDesc &d) { return d.d.device_id; })
        .def("__eq__",
             [](const MemDesc &a, const MemDesc &b) {
                 return a.d.addr == b.d.addr && a.d.len == b.d.len &&
                        a.d.device_id == b.d.device_id;
             })
        .def("__hash__",
             [](const MemDesc &d) {
                 return py::hash(
                     py::make_tuple((uint64_t)d.d.addr, (uint64_t)d.d.len, d.d.device_id));
             })
        .def("__repr__", [](const MemDesc &d) {
            char buf[96];
            snprintf(buf, sizeof buf, "MemoryDesc(addr=0x%jx, len=%zu, device_id=%u)",
                     (uintmax_t)d.d.addr, d.d.len, d.d.device_id);
            return std::string(buf);
        });

    py::class_<Descs, DescsP>(m, "MemoryDescs",
                              "Memory ranges of one memory type; immutable once built.")
        .def(py::init([](mpixfer_mem_type_t type, const py::iterable &descs) {
                 return descs_from_list(type, descs);
             }),
             py::arg("type"), py::arg("descs"))
        .def_static(
            "from_arrays",
            [](mpixfer_mem_type_t type, const py::object &addrs, const py::object &sizes,
               const py::object &device_ids) {
                I64Array d = int64_array(device_ids, "device_ids");
                return descs_from_arrays(type, int64_array(addrs, "addrs"),
                                         int64_array(sizes, "sizes"), &d, 0);
            },
            py::arg("type"), py::arg("addrs"), py::arg("sizes"), py::arg("device_ids"),
            "Descriptors from integer arrays of addresses (int64 or uint64), sizes and device "
            "ids (NumPy arrays, read-only ones too; float arrays are refused with TypeError), "
            "built without the GIL.")
        .def_static(
            "from_arrays_uniform_device",
            [](mpixfer_mem_type_t type, const py::object &addrs, const py::object &sizes,
               int64_t device_id) {
                return descs_from_arrays(type, int64_array(addrs, "addrs"),
                                         int64_array(sizes, "sizes"), nullptr, device_id);
            },
            py::arg("type"), py::arg("addrs"), py::arg("sizes"), py::arg("device_id"),
            "from_arrays with one device id for all.")
        .def_property_readonly("type", [](const Descs &d) { return d.type; })
        .def_property_readonly("descs",
                               [](const Descs &d) {
                                   py::list out(d.v.size());
                                   for (size_t i = 0; i < d.v.size(); i++)
                                       out[i] = py::cast(MemDesc{d.v[i]});
                                   return out;
                               })
        .def("__len__", [](const Descs &d) { return d.v.size(); })
        .def_property_readonly("total_bytes",
                               [](const Descs &d) {
                                   uint64_t t = 0;
                                   for (const auto &x : d.v)
                                       t += x.len;
                                   return t;
                               })
        .def(
            "addrs",
            [](const Descs &d) {
                py::array_t<int64_t> a((py::ssize_t)d.v.size());
                auto *p = a.mutable_data();
                for (size_t i = 0; i < d.v.size(); i++)
                    p[i] = (int64_t)d.v[i].addr;
                return a;
            },
            "The addresses as an int64 NumPy array.")
        .def(
            "sizes",
            [](const Descs &d) {
                py::array_t<int64_t> a((py::ssize_t)d.v.size());
                auto *p = a.mutable_data();
                for (size_t i = 0; i < d.v.size(); i++)
                    p[i] = (int64_t)d.v[i].len;
                return a;
            },
            "The lengths as an int64 NumPy array.")
        .def("__repr__", [](const Descs &d) {
            return "MemoryDescs(" + std::string(py::str(py::cast(d.type))) + ", " +
                   std::to_string(d.v.size()) + " descriptors)";
        });

    py::class_<AgentDesc>(m, "AgentDesc", "An agent's descriptor: opaque, binary-safe bytes.")
        .def(py::init([](const py::object &data) {
                 if (py::isinstance<AgentDesc>(data))
                     return AgentDesc{data.cast<const AgentDesc &>().blob};
                 return AgentDesc{to_bytes(data, "AgentDesc")};
             }),
             py::arg("backend_agent_desc"))
        .def_property_readonly("backend_agent_desc",
                               [](const AgentDesc &d) { return py::bytes(d.blob); })
        .def("__bytes__", [](const AgentDesc &d) { return py::bytes(d.blob); })
        .def("__len__", [](const AgentDesc &d) { return d.blob.size(); })
        .def("__eq__", [](const AgentDesc &a, const AgentDesc &b) { return a.blob == b.blob; })
        .def("serialize", &agent_desc_serialize)
        .def_static("deserialize", &agent_desc_deserialize, py::arg("data"))
        .def("__repr__", [](const AgentDesc &d) {
            return "AgentDesc(" + std::to_string(d.blob.size()) + " bytes)";
        });

    py::class_<Request>(m, "TransferRequest",
                        "READ or WRITE between local src_descs and the remote agent's "
                        "dst_descs, with an optional sync message (str or bytes).")
        .def(py::init([](mpixfer_op_t op, const DescsP &src, const DescsP &dst,
                         const std::string &remote_name, const py::object &sync_message,
                         uint64_t deadline_ms) {
                 if (!src || !dst)
                     throw py::type_error("TransferRequest: src_descs and dst_descs are "
                                          "MemoryDescs");
                 Request r{op, src, dst, remote_name, sync_message, false, {}, deadline_ms};
                 if (!sync_message.is_none()) {
                     r.has_sync = true;
                     r.sync = to_bytes(sync_message, "sync_message");
                 }
                 return r;
             }),
             py::arg("op"), py::arg("src_descs"), py::arg("dst_descs"), py::arg("remote_name"),
             py::arg("sync_message") = py::none(), py::kw_only(), py::arg("deadline_ms") = 0,
             "deadline_ms (mpixfer's own, keyword only): stop the transfer that long after "
             "submit; it then ends in FAILURE with MPIXFER_ERR_TIMEOUT (0: no deadline).")
        .def_property_readonly("deadline_ms", [](const Request &r) { return r.deadline_ms; })
        .def_property_readonly("op", [](const Request &r) { return r.op; })
        .def_property_readonly("src_descs", [](const Request &r) { return r.src; })
        .def_property_readonly("dst_descs", [](const Request &r) { return r.dst; })
        .def_property_readonly("remote_name", [](const Request &r) { return r.remote_name; })
        .def_property_readonly("sync_message", [](const Request &r) { return r.sync_obj; });

    py::class_<TransferStatusBase, std::shared_ptr<TransferStatusBase>>(
        m, "TransferStatus", "A submitted transfer: is_completed(), wait(timeout_ms).")
        .def("is_completed", &TransferStatusBase::is_completed,
             "One poll: True on SUCCESS or FAILURE (GIL released).")
        .def("wait", &TransferStatusBase::wait, py::arg("timeout_ms") = -1,
             "< 0: until done; 0: one poll; > 0: at most that long, then IN_PROGRESS "
             "(GIL released).");

    py::class_<Status, TransferStatusBase, StatusP>(m, "MpixferTransferStatus")
        .def(
            "get_last_status_str", [](const Status &s) { return mpixfer_status_name(s.last()); },
            "The status name: 'MPIXFER_OK' after success, 'MPIXFER_IN_PROGRESS' while "
            "running, else why it failed.")
        .def_property_readonly("status", [](const Status &s) { return (int)s.last(); })
        .def(
            "cancel",
            [](Status &s) {
                mpixfer_status_t st = s.cancel();
                if (st != MPIXFER_OK && st != MPIXFER_ERR_TIMEOUT)
                    check(st, "cancel");
                return st == MPIXFER_OK;
            },
            "Stop the transfer; returns once it has ended (mpixfer_request_cancel). True: no "
            "byte of it moves any more (buffers reusable at once); False: a peer that did "
            "not complete it within the stall timeout was abandoned (MPIXFER_ERR_TIMEOUT). "
            "A transfer that had ended keeps its result; one stopped ends in FAILURE with "
            "MPIXFER_ERR_CANCELED and its sync message is never sent (GIL released).")
        .def("_poll",
             [](Status &s) {
                 py::gil_scoped_release nogil;
                 return s.poll();
             })
        .def("_state",
             [](const Status &s) {
                 // Read only: no progress is driven (the event loop's thread calls this).
                 mpixfer_status_t st = s.last();
                 return st == MPIXFER_IN_PROGRESS ? MPIXFER_STATE_IN_PROGRESS
                        : st == MPIXFER_OK        ? MPIXFER_STATE_SUCCESS
                                                  : MPIXFER_STATE_FAILURE;
             })
        .def("_notify", [](const StatusP &s, py::object loop, py::object fut) {
            g_notifier->add(s, std::move(loop), std::move(fut));
        });

    m.def("_set_resolver", [](py::object fn) { g_notifier->resolver = std::move(fn); });

    // ----------------------------------------------------------------- config
    py::class_<Config>(m, "BaseAgentConfig",
                       "How an agent is created; every field writable. enable_telemetry is "
                       "accepted for compatibility and changes nothing: the counters of "
                       "MpixferTransferAgent.stats() and Context.prometheus() are always on "
                       "(a few increments per request).")
        .def(py::init([](std::string name, bool use_prog_thread, bool multi_thread,
                         bool use_listen_thread, bool enable_telemetry,
                         std::map<std::string, std::string> backend_params, unsigned num_workers) {
                 return Config{std::move(name),   use_prog_thread,  multi_thread,
                               use_listen_thread, enable_telemetry, std::move(backend_params),
                               num_workers};
             }),
             py::arg("name") = "", py::arg("use_prog_thread") = true,
             py::arg("multi_thread") = false, py::arg("use_listen_thread") = false,
             py::arg("enable_telemetry") = false,
             py::arg("backend_params") = std::map<std::string, std::string>{},
             py::arg("num_workers") = 1u)
        .def_readwrite("name", &Config::name)
        .def_readwrite("use_prog_thread", &Config::use_prog_thread)
        .def_readwrite("multi_thread", &Config::multi_thread)
        .def_readwrite("use_listen_thread", &Config::use_listen_thread)
        .def_readwrite("enable_telemetry", &Config::enable_telemetry)
        .def_readwrite("backend_params", &Config::backend_params)
        .def_readwrite("num_workers", &Config::num_workers)
        .def("__repr__", [](const Config &c) {
            return "BaseAgentConfig(name='" + c.name +
                   "', use_prog_thread=" + (c.use_prog_thread ? "True" : "False") +
                   ", multi_thread=" + (c.multi_thread ? "True" : "False") +
                   ", use_listen_thread=" + (c.use_listen_thread ? "True" : "False") + ")";
        });

    // ---------------------------------------------------------------- context
    py::class_<ContextPy>(m, "Context",
                          "One mpixfer context over an mpi4py communicator (collective "
                          "creation and close).")
        .def(
            py::init([](py::object comm, size_t arena_size, size_t max_sync_message,
                        size_t max_desc_regions, size_t gpu_chunk_size, unsigned gpu_pipeline_depth,
                        unsigned stall_timeout_ms, const std::string &data_path) {
                if (!PyObject_TypeCheck(comm.ptr(), &PyMPIComm_Type))
                    throw py::type_error("Context: comm must be an mpi4py communicator");
                MPI_Comm *cp = PyMPIComm_Get(comm.ptr());
                if (cp == nullptr)
                    throw py::error_already_set();
                mpixfer_context_params_t p = MPIXFER_CONTEXT_PARAMS_INIT;
                p.arena_size = arena_size;
                p.max_sync_message = max_sync_message;
                p.max_desc_regions = max_desc_regions;
                p.gpu_chunk_size = gpu_chunk_size;
                p.gpu_pipeline_depth = gpu_pipeline_depth;
                p.stall_timeout_ms = stall_timeout_ms;
                p.data_path = parse_data_path(data_path);
                return ContextPy{CtxRef(make_ctx(*cp, p, false))};
            }),
            py::arg("comm"), py::kw_only(), py::arg("arena_size") = 0,
            py::arg("max_sync_message") = 0, py::arg("max_desc_regions") = 0,
            py::arg("gpu_chunk_size") = 0, py::arg("gpu_pipeline_depth") = 0,
            py::arg("stall_timeout_ms") = 0, py::arg("data_path") = "auto")
        .def(
            "bootstrap",
            [](ContextPy &c) {
                need_open(c.ref.c);
                mpixfer_status_t st;
                {
                    py::gil_scoped_release nogil;
                    st = mpixfer_bootstrap(c.ref.c->ctx);
                }
                check(st, "bootstrap");
            },
            "Collective: every agent of every process loads every other agent.")
        .def("progress",
             [](ContextPy &c) {
                 need_open(c.ref.c);
                 mpixfer_status_t st;
                 {
                     py::gil_scoped_release nogil;
                     st = mpixfer_progress(c.ref.c->ctx);
                 }
                 check(st, "progress");
             })
        .def_property_readonly("rank",
                               [](ContextPy &c) {
                                   need_open(c.ref.c);
                                   return mpixfer_context_rank(c.ref.c->ctx);
                               })
        .def_property_readonly("size",
                               [](ContextPy &c) {
                                   need_open(c.ref.c);
                                   return mpixfer_context_size(c.ref.c->ctx);
                               })
        .def_property_readonly("world_id",
                               [](ContextPy &c) {
                                   need_open(c.ref.c);
                                   return mpixfer_context_world_id(c.ref.c->ctx);
                               })
        .def_property_readonly(
            "gpu_path",
            [](ContextPy &c) {
                need_open(c.ref.c);
                return std::string(mpixfer_gpu_path_name(mpixfer_context_gpu_path(c.ref.c->ctx)));
            })
        .def_property_readonly("closed", [](ContextPy &c) { return c.ref.c->ctx == nullptr; })
        .def_property_readonly("process_wide", [](ContextPy &c) { return c.ref.c->process_wide; })
        .def(
            "data_path",
            [](ContextPy &c, int rank) {
                need_open(c.ref.c);
                mpixfer_data_path_t p;
                check(mpixfer_context_data_path(c.ref.c->ctx, rank, &p), "data_path");
                return std::string(p == MPIXFER_DATA_PATH_MESSAGES ? "messages" : "rma");
            },
            py::arg("rank"), "'rma' or 'messages': how bytes reach that rank.")
        .def(
            "stats",
            [](ContextPy &c) {
                need_open(c.ref.c);
                mpixfer_stats_t s;
                check(mpixfer_context_stats(c.ref.c->ctx, &s), "stats");
                py::dict d;
                d["requests"] = s.requests;
                d["rma_ops"] = s.rma_ops;
                d["shm_copies"] = s.shm_copies;
                d["local_copies"] = s.local_copies;
                d["staged_chunks"] = s.staged_chunks;
                d["bytes"] = s.bytes;
                d["window_attachments"] = s.window_attachments;
                d["links_accepted"] = s.links_accepted;
                d["links_refused"] = s.links_refused;
                d["link_copies"] = s.link_copies;
                d["link_ops"] = s.link_ops;
                return d;
            },
            "The context's counters as a dict.")
        .def(
            "prometheus",
            [](ContextPy &c) {
                need_open(c.ref.c);
                char *text = nullptr;
                size_t len = 0;
                check(mpixfer_stats_prometheus(c.ref.c->ctx, &text, &len), "prometheus");
                std::string out(text, len);
                mpixfer_free(text);
                return out;
            },
            "The context's counters and those of every agent alive in it (this process), in "
            "the Prometheus text exposition format (what a /metrics endpoint serves).")
        .def(
            "mem_alloc",
            [](ContextPy &c, size_t len) {
                need_open(c.ref.c);
                auto b = std::make_unique<ArenaBuffer>();
                check(mpixfer_mem_alloc(c.ref.c->ctx, len, &b->ptr), "mem_alloc");
                b->len = len;
                b->ref = c.ref;
                c.ref.c->buffers++;
                return b;
            },
            py::arg("len"),
            "A block of the on-node arena (Context(..., arena_size=N)) as a writable buffer; "
            "freed when the buffer object and every view of it are gone.")
        .def(
            "close",
            [](ContextPy &c) {
                if (c.ref.c->buffers > 0)
                    fail(MPIXFER_ERR_BUSY, "Context.close: " + std::to_string(c.ref.c->buffers) +
                                               " arena buffers are still alive");
                check(destroy_ctx(c.ref.c), "Context.close");
            },
            "Collective: destroys the context and its agents.")
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](py::object self, py::args) {
            ContextPy &c = self.cast<ContextPy &>();
            if (c.ref.c->ctx && c.ref.c->buffers == 0)
                check(destroy_ctx(c.ref.c), "Context.close");
            return false;
        });

    m.def(
        "default_context", [] { return ContextPy{CtxRef(default_ctx())}; },
        "The process-wide context (MPI_COMM_SELF) that agents created without context= "
        "share.");

    py::class_<ArenaBuffer>(m, "ArenaBuffer", py::buffer_protocol(),
                            "A block of a context's on-node arena.")
        .def_buffer([](ArenaBuffer &b) {
            if (b.ref.c->ctx == nullptr)
                throw py::buffer_error("the arena's context is closed");
            return py::buffer_info(b.ptr, 1, "B", 1, {(py::ssize_t)b.len}, {1}, false);
        })
        .def_property_readonly("addr",
                               [](const ArenaBuffer &b) { return (uint64_t)(uintptr_t)b.ptr; })
        .def("__len__", [](const ArenaBuffer &b) { return b.len; })
        .def(
            "descs",
            [](const ArenaBuffer &b) {
                auto d = std::make_shared<Descs>();
                d->type = MPIXFER_MEM_DRAM;
                d->v.push_back({(uintptr_t)b.ptr, b.len, 0});
                return d;
            },
            "MemoryDescs(DRAM, [(addr, len, 0)]) of the whole block.");

    // ----------------------------------------------------------------- agents
    py::class_<BaseAgent>(m, "BaseTransferAgent",
                          "The transfer-agent interface (TensorRT-LLM's BaseTransferAgent).");

    py::class_<AgentImpl, BaseAgent>(m, "MpixferTransferAgent",
                                     "A named mpixfer agent. Without context=, agents share "
                                     "the process-wide context (MPI_COMM_SELF).")
        .def(py::init([](const Config &cfg, const py::object &context) {
                 return make_agent(cfg, context);
             }),
             py::arg("config"), py::kw_only(), py::arg("context") = py::none())
        .def_property_readonly("name", [](const AgentImpl &a) { return a.name; })
        .def_property_readonly("closed", [](const AgentImpl &a) { return a.agent == nullptr; })
        .def_property_readonly("context", [](const AgentImpl &a) { return ContextPy{a.ref}; })
        .def(
            "register_memory",
            [](AgentImpl &a, const py::object &descs) {
                DescsP d = as_descs(descs);
                mpixfer_mem_descs_t c = d->c();
                mpixfer_status_t st;
                {
                    py::gil_scoped_release nogil;
                    st = mpixfer_register_memory(a.get(), &c);
                }
                check(st, "register_memory");
            },
            py::arg("descs"))
        .def(
            "deregister_memory",
            [](AgentImpl &a, const py::object &descs) {
                DescsP d = as_descs(descs);
                mpixfer_mem_descs_t c = d->c();
                mpixfer_status_t st;
                {
                    py::gil_scoped_release nogil;
                    st = mpixfer_deregister_memory(a.get(), &c);
                }
                check(st, "deregister_memory");
            },
            py::arg("descs"))
        .def(
            "load_remote_agent",
            [](AgentImpl &a, const std::string &name, const py::object &agent_desc) {
                std::string blob = py::isinstance<AgentDesc>(agent_desc)
                                       ? agent_desc.cast<const AgentDesc &>().blob
                                       : to_bytes(agent_desc, "load_remote_agent");
                mpixfer_status_t st;
                {
                    py::gil_scoped_release nogil;
                    st = mpixfer_load_remote_agent(a.get(), name.c_str(), blob.data(), blob.size());
                }
                check(st, "load_remote_agent");
            },
            py::arg("name"), py::arg("agent_desc"))
        .def(
            "load_remote_agent_by_connection",
            [](AgentImpl &a, const std::string &name, const std::string &info) {
                mpixfer_status_t st;
                {
                    py::gil_scoped_release nogil;
                    st = mpixfer_load_remote_agent_by_connection(a.get(), name.c_str(),
                                                                 info.c_str());
                }
                check(st, "load_remote_agent_by_connection");
            },
            py::arg("name"), py::arg("connection_info"),
            "Asynchronous: poll check_remote_descs until it returns True.")
        .def("get_local_agent_desc",
             [](AgentImpl &a) {
                 void *blob = nullptr;
                 size_t len = 0;
                 check(mpixfer_get_local_agent_desc(a.get(), &blob, &len), "get_local_agent_desc");
                 AgentDesc d{std::string(static_cast<const char *>(blob), len)};
                 mpixfer_free(blob);
                 return d;
             })
        .def(
            "stats",
            [](AgentImpl &a) {
                mpixfer_agent_stats_t s;
                check(mpixfer_agent_stats(a.get(), &s), "stats");
                return agent_stats_dict(s);
            },
            "This agent's counters as a dict: requests, requests_succeeded, requests_failed, "
            "failures ({status name: count}, nonzero only), submit_errors, bytes_sent (WRITE), "
            "bytes_received (READ), sync_messages_sent, sync_messages_received, and the "
            "histograms post_time and transfer_time ({count, sum_ns, buckets, bounds_ns}). "
            "Counted from this agent's view: the transfers it initiated.")
        .def("get_local_connection_info",
             [](AgentImpl &a) {
                 char *info = nullptr;
                 check(mpixfer_get_local_connection_info(a.get(), &info),
                       "get_local_connection_info");
                 std::string s(info);
                 mpixfer_free(info);
                 return s;
             })
        .def(
            "invalidate_remote_agent",
            [](AgentImpl &a, const std::string &name) {
                mpixfer_status_t st;
                {
                    py::gil_scoped_release nogil;
                    st = mpixfer_invalidate_remote_agent(a.get(), name.c_str());
                }
                check(st, "invalidate_remote_agent");
            },
            py::arg("name"))
        .def(
            "submit_transfer_requests",
            [](AgentImpl &a, const Request &r) {
                auto s = std::make_shared<Status>();
                s->ref = a.ref;
                s->src = r.src;
                s->dst = r.dst;
                mpixfer_agent_t *ag = a.get();
                mpixfer_status_t st;
                if (r.src->v.empty() && r.dst->v.empty()) {
                    // Nothing to move: done at once; the sync message still goes.
                    py::gil_scoped_release nogil;
                    st = r.has_sync ? mpixfer_notify_sync_message(ag, r.remote_name.c_str(),
                                                                  r.sync.data(), r.sync.size())
                                    : MPIXFER_OK;
                } else {
                    mpixfer_transfer_request_t t{};
                    t.op = r.op;
                    t.src = r.src->c();
                    t.dst = r.dst->c();
                    t.remote_name = r.remote_name.c_str();
                    t.sync_message = r.has_sync ? r.sync.data() : nullptr;
                    t.sync_message_len = r.has_sync ? r.sync.size() : 0;
                    t.deadline_ms = r.deadline_ms;
                    py::gil_scoped_release nogil;
                    st = mpixfer_submit_transfer(ag, &t, &s->x);
                }
                check(st, "submit_transfer_requests");
                return s;
            },
            py::arg("request"))
        .def(
            "notify_sync_message",
            [](AgentImpl &a, const std::string &name, const py::object &message) {
                std::string msg = to_bytes(message, "notify_sync_message");
                mpixfer_status_t st;
                {
                    py::gil_scoped_release nogil;
                    st = mpixfer_notify_sync_message(a.get(), name.c_str(), msg.data(), msg.size());
                }
                check(st, "notify_sync_message");
            },
            py::arg("name"), py::arg("sync_message"))
        .def(
            "get_notified_sync_messages",
            [](AgentImpl &a) {
                mpixfer_sync_message_t *msgs = nullptr;
                size_t n = 0;
                mpixfer_status_t st;
                {
                    py::gil_scoped_release nogil;
                    st = mpixfer_get_notified_sync_messages(a.get(), &msgs, &n);
                }
                check(st, "get_notified_sync_messages");
                py::dict out;
                try {
                    for (size_t i = 0; i < n; i++) {
                        py::str who(msgs[i].agent_name);
                        if (!out.contains(who))
                            out[who] = py::list();
                        py::list(out[who]).append(
                            py::bytes(static_cast<const char *>(msgs[i].data), msgs[i].len));
                    }
                } catch (...) {
                    mpixfer_sync_messages_free(msgs, n);
                    throw;
                }
                mpixfer_sync_messages_free(msgs, n);
                return out;
            },
            "Drain the inbox: {sender name: [bytes, ...]}, each sender's in send order.")
        .def(
            "check_remote_descs",
            [](AgentImpl &a, const std::string &name, const py::object &descs) {
                DescsP d = as_descs(descs);
                mpixfer_mem_descs_t c = d->c();
                mpixfer_agent_t *ag = a.get();
                py::gil_scoped_release nogil;
                return mpixfer_check_remote_descs(ag, name.c_str(), &c);
            },
            py::arg("name"), py::arg("memory_descs"))
        .def(
            "close",
            [](AgentImpl &a) {
                if (a.agent && a.ref.c)
                    a.ref.c->agents.erase(&a);
                mpixfer_agent_t *ag = a.agent;
                a.agent = nullptr;
                if (ag) {
                    mpixfer_status_t st;
                    {
                        py::gil_scoped_release nogil;
                        st = mpixfer_agent_destroy(ag);
                    }
                    check(st, "close");
                }
            },
            "Destroy the agent (completes its transfers first). Also done when the object "
            "goes.")
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](py::object self, py::args) {
            self.attr("close")();
            return false;
        });

    m.def(
        "make_transfer_agent",
        [](const std::string &backend, const Config &cfg, const py::object &context) {
            if (backend != "mpixfer")
                throw py::value_error("Unknown backend name '" + backend +
                                      "' (this module provides 'mpixfer')");
            return make_agent(cfg, context);
        },
        py::arg("backend"), py::arg("config"), py::kw_only(), py::arg("context") = py::none(),
        "make_transfer_agent('mpixfer', config): an MpixferTransferAgent.");

    // --------------------------------------------------------------- loopback
    py::class_<FileDesc, FileDescP>(m, "FileDesc", "A file extent for loopback requests.")
        .def(py::init([](const std::string &filename, int flags, int mode, size_t len) {
                 auto f = std::make_shared<FileDesc>();
                 f->fd = ::open(filename.c_str(), flags, (mode_t)mode);
                 if (f->fd < 0) {
                     PyErr_SetFromErrnoWithFilename(PyExc_OSError, filename.c_str());
                     throw py::error_already_set();
                 }
                 f->owned = true;
                 f->len = len;
                 return f;
             }),
             py::arg("filename"), py::arg("flags"), py::arg("mode"), py::arg("len"),
             "Opens the file (closed when the object goes), offset 0.")
        .def_static(
            "from_fd",
            [](int fd, size_t len, uint64_t offset) {
                auto f = std::make_shared<FileDesc>();
                f->fd = fd;
                f->len = len;
                f->offset = offset;
                return f;
            },
            py::arg("fd"), py::arg("len"), py::arg("offset") = 0,
            "An extent of a file descriptor the caller keeps owning.")
        .def_property_readonly("fd", [](const FileDesc &f) { return f.fd; })
        .def_property_readonly("len", [](const FileDesc &f) { return f.len; })
        .def_property_readonly("offset", [](const FileDesc &f) { return f.offset; });

    py::class_<FileDescs>(m, "FileDescs")
        .def(py::init([](const py::object &descs) { return FileDescs{as_files(descs)}; }),
             py::arg("descs"))
        .def_property_readonly("descs", [](const FileDescs &f) { return f.v; })
        .def("__len__", [](const FileDescs &f) { return f.v.size(); });

    py::class_<BaseLoopback>(m, "BaseLoopbackAgent");
    py::class_<Loopback, BaseLoopback>(m, "MpixferLoopbackAgent",
                                       "Memory to and from files within one process.")
        .def(py::init([](const Config &cfg) {
                 mpixfer_agent_config_t ac = MPIXFER_AGENT_CONFIG_INIT;
                 ac.name = cfg.name.empty() ? nullptr : cfg.name.c_str();
                 ac.multi_thread = cfg.multi_thread;
                 ac.num_workers = cfg.num_workers;
                 auto lb = std::make_unique<Loopback>();
                 check(mpixfer_loopback_create(&ac, &lb->lb), "MpixferLoopbackAgent");
                 return lb;
             }),
             py::arg("config"))
        .def(
            "execute_loopback_request",
            [](Loopback &lb, const py::object &memory_descs, const py::object &file_descs,
               bool is_offload) {
                DescsP d = as_descs(memory_descs);
                std::vector<FileDescP> files = as_files(file_descs);
                std::vector<mpixfer_file_desc_t> fv;
                fv.reserve(files.size());
                for (const auto &f : files)
                    fv.push_back({f->fd, f->len, f->offset});
                mpixfer_mem_descs_t c = d->c();
                mpixfer_status_t st;
                {
                    py::gil_scoped_release nogil;
                    st = mpixfer_loopback_execute(lb.lb, &c, fv.data(), fv.size(), is_offload);
                }
                check(st, "execute_loopback_request");
            },
            py::arg("memory_descs"), py::arg("file_descs"), py::arg("is_offload"),
            "Offload memory[i] to file[i] (is_offload) or load it back; blocking.")
        .def_property_readonly("last_path", [](const Loopback &lb) {
            return std::string(mpixfer_loopback_path_name(mpixfer_loopback_last_path(lb.lb)));
        });

    m.def(
        "make_loopback_agent",
        [](const std::string &backend, const Config &cfg) {
            if (backend != "mpixfer")
                throw py::value_error("Unknown backend name '" + backend + "'");
            mpixfer_agent_config_t ac = MPIXFER_AGENT_CONFIG_INIT;
            ac.name = cfg.name.empty() ? nullptr : cfg.name.c_str();
            ac.multi_thread = cfg.multi_thread;
            ac.num_workers = cfg.num_workers;
            auto lb = std::make_unique<Loopback>();
            check(mpixfer_loopback_create(&ac, &lb->lb), "make_loopback_agent");
            return lb;
        },
        py::arg("backend"), py::arg("config"));

    // ---------------------------------------------------------------- teardown
    m.def(
        "_shutdown",
        [] {
            g_notifier->stop();
            int finalized = 0;
            MPI_Finalized(&finalized);
            std::vector<CtxP> all = g_contexts; // creation order: the same in every process
            for (const CtxP &c : all) {
                if (finalized) {
                    // Too late for MPI: forget the handles (the process is ending).
                    for (AgentImpl *a : c->agents)
                        a->agent = nullptr;
                    c->agents.clear();
                    c->ctx = nullptr;
                } else {
                    (void)destroy_ctx(c);
                }
            }
            g_contexts.clear();
            g_default.reset();
        },
        "Destroys every agent and context; the package runs it at exit, before mpi4py "
        "finalises MPI.");
}
