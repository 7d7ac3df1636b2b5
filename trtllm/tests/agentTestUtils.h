/* Shared by the TensorRT-LLM backend tests: the factories loaded the way TensorRT-LLM's
 * makeTransferAgent / makeLoopbackAgent load a backend (dlopen of the library by its bare
 * name, dlsym of create<Backend>TransferAgent), helpers that poll with a bound, a main that
 * tells CTest "skipped" (77) when every test that ran skipped, and an optional CUDA runtime
 * for the device-memory cases. */
#pragma once

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "tensorrt_llm/executor/transferAgent.h"

#if defined(TRTLLM_TEST_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace mpixfer_trtllm_test {

using namespace tensorrt_llm::executor::kv_cache;

inline constexpr char const *kWrapperLib = "libtensorrt_llm_mpixfer_wrapper.so";

/* makeTransferAgent's loading: dlopen() by the bare library name (the test's RUNPATH names the
 * build folder, as LD_LIBRARY_PATH would for TensorRT-LLM), then dlsym() of the factory. The
 * handle stays open for the process's life, as DynLibLoader keeps it. */
inline void *wrapperSymbol(char const *symbol)
{
    static void *handle = [] {
        void *h = dlopen(kWrapperLib, RTLD_NOW | RTLD_LOCAL);
        if (h == nullptr)
            throw std::runtime_error(std::string("dlopen ") + kWrapperLib + ": " + dlerror());
        return h;
    }();
    void *p = dlsym(handle, symbol);
    if (p == nullptr)
        throw std::runtime_error(std::string(symbol) + " function is not open correctly.");
    return p;
}

inline std::unique_ptr<BaseTransferAgent> makeTransferAgent(BaseAgentConfig const *config)
{
    using CreateFuncType = std::unique_ptr<BaseTransferAgent> (*)(BaseAgentConfig const *);
    auto *func = reinterpret_cast<CreateFuncType>(wrapperSymbol("createMpixferTransferAgent"));
    return func(config);
}

inline std::shared_ptr<BaseLoopbackAgent> makeLoopbackAgent(BaseAgentConfig const *config)
{
    using CreateFuncType = std::shared_ptr<BaseLoopbackAgent> (*)(BaseAgentConfig const *);
    auto *func = reinterpret_cast<CreateFuncType>(wrapperSymbol("createMpixferLoopbackAgent"));
    return func(config);
}

/* TensorRT-LLM's test config: {name, useProgThread, multiThread, useListenThread}. */
inline std::unique_ptr<BaseTransferAgent> makeAgent(std::string const &name,
                                                    bool multiThread = false)
{
    BaseAgentConfig config{name, true, multiThread, true, 0};
    return makeTransferAgent(&config);
}

inline constexpr auto kPollBound = std::chrono::seconds(30);

/* Polls checkRemoteDescs as TensorRT-LLM's tests do, but with a bound so a bug fails. */
inline bool waitRemoteDescs(BaseTransferAgent &agent, std::string const &name,
                            MemoryDescs const &descs)
{
    auto const start = std::chrono::steady_clock::now();
    while (!agent.checkRemoteDescs(name, descs)) {
        if (std::chrono::steady_clock::now() - start > kPollBound)
            return false;
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    return true;
}

using Inbox = std::unordered_map<std::string, std::vector<SyncMessage>>;

/* Drains until something arrived (or the bound passed: empty map). */
inline Inbox waitNotified(BaseTransferAgent &agent)
{
    auto const start = std::chrono::steady_clock::now();
    Inbox notif = agent.getNotifiedSyncMessages();
    while (notif.empty() && std::chrono::steady_clock::now() - start < kPollBound) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
        notif = agent.getNotifiedSyncMessages();
    }
    return notif;
}

inline bool waitCompleted(TransferStatus const &status)
{
    auto const start = std::chrono::steady_clock::now();
    while (!status.isCompleted()) {
        if (std::chrono::steady_clock::now() - start > kPollBound)
            return false;
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    return true;
}

/* The text of the exception @p f throws ("" when it throws none). */
template <typename F> std::string thrownText(F &&f)
{
    try {
        f();
    } catch (std::runtime_error const &e) {
        return e.what();
    }
    return "";
}

/* ------------------------------------------------------------------------------ CUDA */

inline bool haveGpu()
{
#if defined(TRTLLM_TEST_HAVE_CUDA)
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
#else
    return false;
#endif
}

#if defined(TRTLLM_TEST_HAVE_CUDA)
#define TRTLLM_SKIP_WITHOUT_GPU()                                                                  \
    do {                                                                                           \
        if (!::mpixfer_trtllm_test::haveGpu())                                                     \
            GTEST_SKIP() << "no usable CUDA device";                                               \
    } while (0)
#else
#define TRTLLM_SKIP_WITHOUT_GPU() GTEST_SKIP() << "built without the CUDA toolkit"
#endif

/* --------------------------------------------------------------------------- main */

/* 0 when all passed, 77 (CTest's SKIP_RETURN_CODE) when every test that ran skipped. */
inline int exitCode(int rc)
{
    auto const *u = ::testing::UnitTest::GetInstance();
    if (rc == 0 && u->test_to_run_count() > 0 && u->skipped_test_count() == u->test_to_run_count())
        return 77;
    return rc;
}

} // namespace mpixfer_trtllm_test
