// TensorRT IPluginV3 plugin TQQuantize (version "1", namespace "tqexport"): appends new K or V to the compressed
// cache, docs/format.md section 8.1. The class and its creator share this file pair; the CUDA work is
// tq::kernels::launch_quantize (plugins/kernels/tq_kernels.h).
//
// Inputs (zero-element tensor = absent optional input): 0 x float32/float16 [B, Hkv, S, D], 1 past_cache int8
// (or uint8) [B, Hkv, Tc, row_bytes], 2 rotation float32 [Hr, D, D], 3 codebook float32 [P, 256], 4 qjl_matrix
// float32 [D, D], 5 past_window dtype(x) [B, Hkv, Wd, D], 6 past_lengths int64 [B]. Trailing optional inputs may
// be left out entirely.
// Outputs: 0 present_cache (dtype of input 1), 1 present_window (dtype of x, only when W > 0).
// Buffer mode aliases output 0 to input 1 and output 1 to input 5 (IPluginV3OneBuildV2::getAliasedInput).
#pragma once

#include <string>
#include <vector>

#include "trt/common/tq_trt_common.h"

namespace tq::trt {

struct QuantizeAttrs {
  CodecConfig codec;  // head_dim = sum(part_sizes)
  int cache_mode = kConcat;
  int sink_tokens = 0;
  int recent_window = 0;
  // docs/format.md 8.3: rotation and codebook are constants and rotation is Sylvester-Hadamard (the converter's
  // promise, verified by tqexport build); passed to the launcher as rotation_hadamard and constant_tables.
  int constant_hadamard = 0;
  int window() const { return sink_tokens + recent_window; }
};

// Parses and validates the creator fields (names = ONNX attribute names). Throws PluginError.
QuantizeAttrs parse_quantize_fields(const nvinfer1::PluginFieldCollection* fc);

class TQQuantizePlugin : public nvinfer1::IPluginV3,
                         public nvinfer1::IPluginV3OneCore,
                         public nvinfer1::IPluginV3OneBuildV2,
                         public nvinfer1::IPluginV3OneRuntime {
 public:
  enum Input : int { kX = 0, kPastCache, kRotation, kCodebook, kQjlMatrix, kPastWindow, kPastLengths, kNumInputs };

  explicit TQQuantizePlugin(const QuantizeAttrs& attrs);
  TQQuantizePlugin(const TQQuantizePlugin& other);
  TQQuantizePlugin& operator=(const TQQuantizePlugin&) = delete;
  ~TQQuantizePlugin() override = default;

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
  nvinfer1::IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  const char* getPluginName() const noexcept override;
  const char* getPluginVersion() const noexcept override;
  const char* getPluginNamespace() const noexcept override;

  // IPluginV3OneBuild(V2)
  int32_t getNbOutputs() const noexcept override;
  int32_t getOutputDataTypes(nvinfer1::DataType* output_types, int32_t nb_outputs,
                             const nvinfer1::DataType* input_types, int32_t nb_inputs) const noexcept override;
  int32_t getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nb_inputs,
                          const nvinfer1::DimsExprs* shape_inputs, int32_t nb_shape_inputs,
                          nvinfer1::DimsExprs* outputs, int32_t nb_outputs,
                          nvinfer1::IExprBuilder& expr_builder) noexcept override;
  bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* in_out, int32_t nb_inputs,
                                 int32_t nb_outputs) noexcept override;
  int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_inputs,
                          const nvinfer1::DynamicPluginTensorDesc* out, int32_t nb_outputs) noexcept override;
  size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nb_inputs,
                          const nvinfer1::DynamicPluginTensorDesc* outputs, int32_t nb_outputs) const noexcept override;
  int32_t getAliasedInput(int32_t output_index) noexcept override;
  const char* getMetadataString() noexcept override;

  // IPluginV3OneRuntime
  int32_t onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nb_inputs, const nvinfer1::PluginTensorDesc* out,
                        int32_t nb_outputs) noexcept override;
  int32_t enqueue(const nvinfer1::PluginTensorDesc* input_desc, const nvinfer1::PluginTensorDesc* output_desc,
                  const void* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  const nvinfer1::PluginFieldCollection* getFieldsToSerialize() noexcept override;

  const QuantizeAttrs& attrs() const { return attrs_; }

 private:
  // Shape checks shared by configurePlugin (dims may be -1) and onShapeChange (concrete dims).
  int check_shapes(const nvinfer1::PluginTensorDesc* in, int32_t nb_inputs, const char* phase) const;
  // Params for the kernel launcher; pointers null when `inputs` is null (workspace sizing).
  kernels::QuantizeParams make_params(const nvinfer1::PluginTensorDesc* in, int32_t nb_inputs,
                                      const void* const* inputs, void* const* outputs) const;

  QuantizeAttrs attrs_;
  RowLayout layout_;
  int32_t nb_inputs_ = 0;  // from configurePlugin / onShapeChange: enqueue is not told
  FieldWriter serialized_;
  std::string metadata_;
};

class TQQuantizePluginCreator : public PluginCreatorBase {
 public:
  TQQuantizePluginCreator();
  nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
};

}  // namespace tq::trt
