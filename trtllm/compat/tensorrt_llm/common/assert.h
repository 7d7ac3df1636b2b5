/* Stand-in for TensorRT-LLM's tensorrt_llm/common/assert.h, used only where
 * MPIXFER_TRTLLM_INCLUDE_DIR has none (the header in ../shared/trtllm/include does not ship it).
 *
 * TensorRT-LLM's transferAgent.h needs two macros from it, defined here the same way:
 * TLLM_CHECK_WITH_INFO(cond, fmt, ...) and TLLM_THROW(fmt, ...), both throwing
 * tensorrt_llm::common::TllmException, a std::runtime_error. The format is printf-style or
 * a std::string (transferAgent.h passes both). Header-only: nothing here needs a library. */
#pragma once

#include <cstdarg>
#include <cstddef>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace tensorrt_llm::common {

class TllmException : public std::runtime_error {
  public:
    TllmException(char const *file, std::size_t line, std::string const &msg)
        : std::runtime_error(msg + " (" + file + ":" + std::to_string(line) + ")")
    {
    }
};

inline std::string fmtstr(std::string const &s)
{
    return s;
}

__attribute__((format(printf, 1, 2))) inline std::string fmtstr(char const *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    int n = std::vsnprintf(nullptr, 0, fmt, ap);
    va_end(ap);
    std::string out;
    if (n > 0) {
        out.resize(static_cast<std::size_t>(n) + 1);
        std::vsnprintf(&out[0], out.size(), fmt, ap2);
        out.resize(static_cast<std::size_t>(n));
    }
    va_end(ap2);
    return out;
}

} // namespace tensorrt_llm::common

#define TLLM_THROW(...)                                                                            \
    throw ::tensorrt_llm::common::TllmException(__FILE__, __LINE__,                                \
                                                ::tensorrt_llm::common::fmtstr(__VA_ARGS__))

#define TLLM_CHECK_WITH_INFO(cond, ...)                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            TLLM_THROW(__VA_ARGS__);                                                               \
    } while (0)

#define TLLM_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            TLLM_THROW("%s", "TensorRT-LLM check failed: " #cond);                                 \
    } while (0)
