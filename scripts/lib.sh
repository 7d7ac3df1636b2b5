# shellcheck shell=bash
# Shared by scripts/build, scripts/test and scripts/demo; source it, don't run it.
# Sets MPIXFER_ROOT, and helpers that agree on build directories and MPI launch flags.

MPIXFER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The environment Open MPI wants on this machine (root in CI, 2 cores); harmless otherwise.
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

# mpixfer_build_dir [SANITIZER] -> build, build-asan, build-tsan, build-mpich, build-mpich-asan
mpixfer_build_dir() {
    local san="${1:-}" dir="build"
    if [[ -n "${MPIXFER_BUILD_DIR:-}" ]]; then
        echo "$MPIXFER_BUILD_DIR"
        return
    fi
    if [[ "${MPIXFER_MPI:-openmpi}" != openmpi ]]; then
        dir+="-${MPIXFER_MPI}"
    fi
    case "$san" in
    "") ;;
    address) dir+="-asan" ;;
    thread) dir+="-tsan" ;;
    *)
        echo "unknown sanitizer '$san' (use address or thread)" >&2
        return 2
        ;;
    esac
    echo "$MPIXFER_ROOT/$dir"
}

# The cmake -D flags that select the MPI implementation named by MPIXFER_MPI.
mpixfer_mpi_cmake_flags() {
    case "${MPIXFER_MPI:-openmpi}" in
    mpich)
        echo "-DMPI_C_COMPILER=$(command -v mpicc.mpich || echo mpicc.mpich)" \
            "-DMPIEXEC_EXECUTABLE=$(command -v mpiexec.mpich || echo mpiexec.mpich)"
        ;;
    *) ;;
    esac
}

# The mpiexec command (as words) for MPIXFER_MPI.
mpixfer_mpiexec() {
    case "${MPIXFER_MPI:-openmpi}" in
    mpich) echo "mpiexec.mpich" ;;
    *) echo "mpiexec --oversubscribe" ;;
    esac
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
    # Keep Open MPI's plugins loaded at exit so leak stacks through them can be suppressed.
    export OMPI_MCA_mca_base_component_disable_dlclose=1
}
