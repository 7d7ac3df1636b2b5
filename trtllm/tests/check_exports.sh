#!/bin/sh
# The wrapper exports exactly the two extern "C" factories TensorRT-LLM looks up with dlsym(),
# and needs no TensorRT-LLM library (no DT_NEEDED libtensorrt_llm*).
# Usage: check_exports.sh path/to/libtensorrt_llm_mpixfer_wrapper.so
set -eu
lib="$1"
command -v nm >/dev/null 2>&1 || { echo "nm not found: skipped"; exit 77; }
got="$(nm -D --defined-only "$lib" | awk '{print $NF}' | sort)"
want="$(printf '%s\n' createMpixferLoopbackAgent createMpixferTransferAgent)"
if [ "$got" != "$want" ]; then
    echo "exported symbols of $lib:" >&2
    echo "$got" >&2
    echo "expected exactly:" >&2
    echo "$want" >&2
    exit 1
fi
if command -v readelf >/dev/null 2>&1; then
    if readelf -d "$lib" | grep NEEDED | grep -q 'tensorrt_llm'; then
        echo "$lib needs a TensorRT-LLM library:" >&2
        readelf -d "$lib" | grep NEEDED >&2
        exit 1
    fi
fi
echo "exports: $(echo "$got" | tr '\n' ' ')"
