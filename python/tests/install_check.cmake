# py_install: install the build into a scratch prefix, then run install_check.py with only
# that prefix's package on the path (the build tree's is not on PYTHONPATH there).
#   cmake -DBUILD_DIR=... -DPREFIX=... -DPY_DIR=... -DPYTHON=... -DCHECK=... -P this
foreach(_v BUILD_DIR PREFIX PY_DIR PYTHON CHECK)
    if(NOT DEFINED ${_v})
        message(FATAL_ERROR "install_check.cmake: -D${_v}= is required")
    endif()
endforeach()
file(REMOVE_RECURSE "${PREFIX}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}"
                OUTPUT_QUIET RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "cmake --install ${BUILD_DIR} --prefix ${PREFIX} failed (${_rc})")
endif()
set(ENV{PYTHONPATH} "${PREFIX}/${PY_DIR}")
set(ENV{MPIXFER_INSTALL_PREFIX} "${PREFIX}")
execute_process(COMMAND "${PYTHON}" "${CHECK}" RESULT_VARIABLE _rc)
file(REMOVE_RECURSE "${PREFIX}")
if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "install_check.py failed (${_rc})")
endif()
