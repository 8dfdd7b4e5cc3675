// The one registration point of the tqexport TensorRT plugin library (libtqexport_trt.so).
// TensorRT 10 loads a plugin library (IPluginRegistry::loadLibrary, trtexec --staticPlugins/--dynamicPlugins)
// through these C entry points; nothing else is exported.
//   getCreators:       the IPluginCreatorV3One creators (TQQuantize, TQAttention; version "1", namespace "tqexport").
//   getPluginCreators: the legacy IPluginCreator (V2) list, which is empty: our plugins are V3 only.
//   setLoggerFinder:   TensorRT's logger for the plugins' error messages.
#include <NvInferRuntime.h>

#include "trt/common/tq_trt_common.h"
#include "trt/tq_attention/tq_attention_plugin.h"
#include "trt/tq_quantize/tq_quantize_plugin.h"

#define TQ_TRT_EXPORT extern "C" __attribute__((visibility("default")))

namespace {
nvinfer1::IPluginCreatorInterface* const* creators(int32_t& count) noexcept {
  static tq::trt::TQQuantizePluginCreator quantize;
  static tq::trt::TQAttentionPluginCreator attention;
  static nvinfer1::IPluginCreatorInterface* const list[] = {&quantize, &attention};
  count = static_cast<int32_t>(sizeof(list) / sizeof(list[0]));
  return list;
}
}  // namespace

TQ_TRT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept { tq::trt::set_logger_finder(finder); }

TQ_TRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) noexcept {
  return creators(nbCreators);
}

TQ_TRT_EXPORT nvinfer1::IPluginCreator* const* getPluginCreators(int32_t& nbCreators) noexcept {
  static nvinfer1::IPluginCreator* const none[] = {nullptr};
  nbCreators = 0;
  return none;
}
