// Includes the ORT C++ API in manual-init mode: RegisterCustomOps hands us the OrtApi of the loading runtime.
#pragma once

#ifndef ORT_API_MANUAL_INIT
#define ORT_API_MANUAL_INIT
#endif
#include <onnxruntime_cxx_api.h>
