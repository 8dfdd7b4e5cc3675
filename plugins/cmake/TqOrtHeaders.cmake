# Locates the ONNX Runtime C/C++ API headers (onnxruntime_c_api.h, onnxruntime_cxx_api.h).
# The PyPI wheel ships none, so when ORT_INCLUDE_DIR is not given (cache variable or environment) we run
# scripts/fetch_ort_headers.sh, which unpacks Debian trixie's libonnxruntime-dev (ORT 1.21, C API 21) into
# ~/.cache/tqexport/ort-headers with a private apt configuration. Sets ORT_INCLUDE_DIR and ORT_HEADER_API_VERSION.

set(ORT_INCLUDE_DIR "$ENV{ORT_INCLUDE_DIR}" CACHE PATH "Folder holding onnxruntime_c_api.h (fetched when empty)")

if(NOT ORT_INCLUDE_DIR)
  set(_tq_fetch "${CMAKE_CURRENT_LIST_DIR}/../../scripts/fetch_ort_headers.sh")
  if(NOT EXISTS "${_tq_fetch}")
    message(FATAL_ERROR "ORT headers: ORT_INCLUDE_DIR is not set and ${_tq_fetch} is missing. "
                        "Pass -DORT_INCLUDE_DIR=<folder with onnxruntime_c_api.h>.")
  endif()
  message(STATUS "ORT headers: ORT_INCLUDE_DIR not given, running scripts/fetch_ort_headers.sh")
  execute_process(COMMAND bash "${_tq_fetch}"
                  OUTPUT_VARIABLE _tq_out ERROR_VARIABLE _tq_err RESULT_VARIABLE _tq_rc
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _tq_rc EQUAL 0)
    message(FATAL_ERROR "ORT headers: fetch_ort_headers.sh failed (${_tq_rc}):\n${_tq_err}\n"
                        "Install libonnxruntime-dev or pass -DORT_INCLUDE_DIR=<folder with onnxruntime_c_api.h>.")
  endif()
  string(REGEX REPLACE ".*\n" "" _tq_last_line "${_tq_out}")
  set(ORT_INCLUDE_DIR "${_tq_last_line}" CACHE PATH "Folder holding onnxruntime_c_api.h (fetched when empty)" FORCE)
endif()

if(NOT EXISTS "${ORT_INCLUDE_DIR}/onnxruntime_c_api.h" OR NOT EXISTS "${ORT_INCLUDE_DIR}/onnxruntime_cxx_api.h")
  message(FATAL_ERROR "ORT headers: ${ORT_INCLUDE_DIR} has no onnxruntime_c_api.h/onnxruntime_cxx_api.h")
endif()

file(STRINGS "${ORT_INCLUDE_DIR}/onnxruntime_c_api.h" _tq_api_line REGEX "^#define ORT_API_VERSION [0-9]+")
string(REGEX REPLACE "^#define ORT_API_VERSION ([0-9]+).*" "\\1" ORT_HEADER_API_VERSION "${_tq_api_line}")
if(ORT_HEADER_API_VERSION LESS 16)
  message(FATAL_ERROR "ORT headers: API version ${ORT_HEADER_API_VERSION} in ${ORT_INCLUDE_DIR} is too old (need >= 16)")
endif()
message(STATUS "ORT headers: ${ORT_INCLUDE_DIR} (C API ${ORT_HEADER_API_VERSION}; loads in onnxruntime >= 1.${ORT_HEADER_API_VERSION})")
