# shellcheck shell=bash
# Shared by scripts/build, scripts/test and scripts/demo; source it, don't run it.
# Sets MPIXFER_ROOT, and helpers that agree on build directories and MPI launch flags.

MPIXFER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The environment Open MPI wants on this machine (root in CI, 2 cores); harmless otherwise.
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

# mpixfer_build_dir [VARIANT] -> build, build-asan, build-tsan, build-fuzz, build-mpich,
# build-mpich-asan, ... VARIANT is a sanitizer (address, thread) or fuzz (the clang build of
# the libFuzzer targets).
mpixfer_build_dir() {
    local san="${1:-}" dir="build"
    if [[ -n "${MPIXFER_BUILD_DIR:-}" ]]; then
        # The clang fuzz build never shares a folder with the main (gcc) one.
        if [[ "$san" == fuzz ]]; then
            echo "${MPIXFER_BUILD_DIR%/}-fuzz"
        else
            echo "$MPIXFER_BUILD_DIR"
        fi
        return
    fi
    if [[ "${MPIXFER_MPI:-openmpi}" != openmpi ]]; then
        dir+="-${MPIXFER_MPI}"
    fi
    case "$san" in
    "") ;;
    address) dir+="-asan" ;;
    thread) dir+="-tsan" ;;
    fuzz) dir+="-fuzz" ;;
    *)
        echo "unknown sanitizer '$san' (use address or thread)" >&2
        return 2
        ;;
    esac
    echo "$MPIXFER_ROOT/$dir"
}

# The cmake -D flags that select the MPI implementation named by MPIXFER_MPI. Explicit for
# both: with Open MPI and MPICH installed side by side, /usr/bin/mpicc and mpiexec are
# alternatives (symlinks) that may point at either, so each build names its own wrapper and
# launcher (mpicc.openmpi / mpiexec.openmpi, mpicc.mpich / mpiexec.mpich).
mpixfer_mpi_cmake_flags() {
    case "${MPIXFER_MPI:-openmpi}" in
    mpich)
        echo "-DMPI_C_COMPILER=$(command -v mpicc.mpich || echo mpicc.mpich)" \
            "-DMPIEXEC_EXECUTABLE=$(command -v mpiexec.mpich || echo mpiexec.mpich)"
        ;;
    *)
        if command -v mpicc.openmpi >/dev/null 2>&1; then
            echo "-DMPI_C_COMPILER=$(command -v mpicc.openmpi)" \
                "-DMPIEXEC_EXECUTABLE=$(command -v mpiexec.openmpi || echo mpiexec.openmpi)"
        fi
        ;;
    esac
}

# mpixfer_check_build_mpi BUILD_DIR: FindMPI keeps what it found in the cache even when
# MPI_C_COMPILER changes, so a build folder configured against another MPI (or before the
# wrappers were named explicitly, through a /usr/bin/mpicc that now points elsewhere) is
# configured afresh: its CMakeCache.txt is removed when its MPI_C_COMPILER is not the one
# mpixfer_mpi_cmake_flags names.
mpixfer_check_build_mpi() {
    local dir="$1" want cached
    [[ -f "$dir/CMakeCache.txt" ]] || return 0
    want="$(mpixfer_mpi_cmake_flags | tr ' ' '\n' | sed -n 's/^-DMPI_C_COMPILER=//p')"
    [[ -n "$want" ]] || return 0
    cached="$(sed -n 's/^MPI_C_COMPILER:[A-Z]*=//p' "$dir/CMakeCache.txt")"
    if [[ "$cached" != "$want" ]]; then
        echo "build: $dir was configured with MPI_C_COMPILER='$cached', not '$want';" \
            "configuring it afresh" >&2
        rm -f "$dir/CMakeCache.txt"
    fi
}

# The mpiexec command (as words) for MPIXFER_MPI.
mpixfer_mpiexec() {
    case "${MPIXFER_MPI:-openmpi}" in
    mpich) echo "$(command -v mpiexec.mpich || echo mpiexec.mpich)" ;;
    *) echo "$(command -v mpiexec.openmpi || echo mpiexec) --oversubscribe" ;;
    esac
}

# True when clang can build libFuzzer targets with ASan and UBSan here (Debian: clang and
# libclang-rt-dev).
mpixfer_have_libfuzzer() {
    command -v clang >/dev/null 2>&1 || return 1
    local tmp rc
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/mpixfer-fuzzcheck.XXXXXX")"
    printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
        >"$tmp/t.c"
    clang -fsanitize=fuzzer,address,undefined -o "$tmp/t" "$tmp/t.c" >/dev/null 2>&1
    rc=$?
    rm -rf "$tmp"
    return $rc
}

# Sanitizer runtime options, with suppression files from scripts/sanitizers/ when present
# (asan.supp, ubsan.supp, lsan.supp, tsan.supp). Values already in the environment win.
mpixfer_sanitizer_env() {
    local supp="$MPIXFER_ROOT/scripts/sanitizers"
    local asan="abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=0"
    local ubsan="print_stacktrace=1:halt_on_error=1"
    local lsan="fast_unwind_on_malloc=0:print_suppressions=0"
    local tsan="halt_on_error=1:second_deadlock_stack=1"
    [[ -f "$supp/asan.supp" ]] && asan+=":suppressions=$supp/asan.supp"
    [[ -f "$supp/ubsan.supp" ]] && ubsan+=":suppressions=$supp/ubsan.supp"
    [[ -f "$supp/lsan.supp" ]] && lsan+=":suppressions=$supp/lsan.supp"
    [[ -f "$supp/tsan.supp" ]] && tsan+=":suppressions=$supp/tsan.supp"
    export ASAN_OPTIONS="${ASAN_OPTIONS:-$asan}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-$ubsan}"
    export LSAN_OPTIONS="${LSAN_OPTIONS:-$lsan}"
    export TSAN_OPTIONS="${TSAN_OPTIONS:-$tsan}"
    # Keep Open MPI's plugins loaded at exit so leak stacks through them resolve. Open MPI
    # 5 has this parameter; 4.1 (Debian 12) ignores it, so stacks through plugins it has
    # unloaded show as "<unknown module>" or a wrong module (see sanitizers/lsan.supp).
    export OMPI_MCA_mca_base_component_disable_dlclose=1
}
