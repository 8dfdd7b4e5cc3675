# Locates TensorRT's headers (NvInfer.h) for the tqexport_trt plugin library. Order:
#   1. TENSORRT_ROOT (cache variable or environment): <root>/include;
#   2. system headers (/usr/include, /usr/include/<arch>-linux-gnu, /usr/local/tensorrt/include);
#   3. scripts/fetch_trt_headers.sh: the headers of TensorRT 10.14 shipped by PyPI kernel-lens==2.0.1.
# Sets TRT_INCLUDE_DIR. Headers are all the plugin library needs at build time: it is loaded into a process that
# already has libnvinfer, so its TensorRT symbols stay undefined until then.

set(TENSORRT_ROOT "$ENV{TENSORRT_ROOT}" CACHE PATH "TensorRT install root (optional)")

set(_tq_trt_hints)
if(TENSORRT_ROOT)
  list(APPEND _tq_trt_hints "${TENSORRT_ROOT}/include")
endif()
find_path(TRT_INCLUDE_DIR NvInfer.h
          HINTS ${_tq_trt_hints}
          PATHS /usr/include /usr/include/${CMAKE_LIBRARY_ARCHITECTURE} /usr/local/tensorrt/include
          DOC "Folder holding NvInfer.h")

if(NOT TRT_INCLUDE_DIR)
  set(_tq_fetch "${CMAKE_CURRENT_LIST_DIR}/../../scripts/fetch_trt_headers.sh")
  message(STATUS "TensorRT headers: none found, running scripts/fetch_trt_headers.sh")
  execute_process(COMMAND bash "${_tq_fetch}"
                  OUTPUT_VARIABLE _tq_out ERROR_VARIABLE _tq_err RESULT_VARIABLE _tq_rc
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _tq_rc EQUAL 0)
    message(FATAL_ERROR "TensorRT headers: fetch_trt_headers.sh failed (${_tq_rc}):\n${_tq_err}\n"
                        "Set TENSORRT_ROOT to a TensorRT install or turn TQ_WITH_TRT off.")
  endif()
  string(REGEX REPLACE ".*\n" "" _tq_last_line "${_tq_out}")
  set(TRT_INCLUDE_DIR "${_tq_last_line}" CACHE PATH "Folder holding NvInfer.h" FORCE)
endif()

file(STRINGS "${TRT_INCLUDE_DIR}/NvInferVersion.h" _tq_trt_major REGEX "define (NV_TENSORRT_MAJOR|TRT_MAJOR_ENTERPRISE) [0-9]+")
message(STATUS "TensorRT headers: ${TRT_INCLUDE_DIR} (${_tq_trt_major})")
