// TensorRT IPluginV3 plugin TQAttention (version "1", namespace "tqexport"): attention straight from the
// compressed K/V caches, docs/format.md section 8.2. The class and its creator share this file pair; the CUDA
// work is tq::kernels::launch_attention (plugins/kernels/tq_kernels.h).
//
// Inputs (zero-element tensor = absent optional input; trailing optional inputs may be left out):
//   0 q float32/float16 [B, Hq, S, D]; 1 k_cache, 2 v_cache int8 (or uint8) [B, Hkv, Tc, row_bytes];
//   3 mask float32/float16 additive (bool where TensorRT allows it) [Bm, Hm, S, Tm]; 4 k_rotation, 6 v_rotation
//   float32 [Hr, D, D]; 5 k_codebook, 7 v_codebook float32 [P, 256]; 8 k_qjl_matrix float32 [D, D];
//   9 k_window, 10 v_window dtype(q) [B, Hkv, Wd, D]; 11 past_lengths int64 [B].
// Output: 0 dtype(q) [B, Hq, S, D]. Workspace: tq::kernels::attention_workspace_bytes at the profile's max dims.
#pragma once

#include <string>
#include <vector>

#include "trt/common/tq_trt_common.h"

namespace tq::trt {

struct AttentionAttrs {
  CodecConfig k_codec;  // k_bits, k_part_sizes, k_qjl
  CodecConfig v_codec;  // v_bits, v_part_sizes (values never use QJL)
  float scale = 1.0f;
  float softcap = 0.0f;
  int cache_mode = kConcat;
  int sink_tokens = 0;
  int recent_window = 0;
  // docs/format.md 8.3: k_rotation / v_rotation are constant Sylvester-Hadamard rotations (the converter's
  // promises, verified by tqexport build); passed to the launcher as k_rotation_hadamard / v_rotation_hadamard.
  int k_constant_hadamard = 0;
  int v_constant_hadamard = 0;
  int window() const { return sink_tokens + recent_window; }
};

// Parses and validates the creator fields (names = ONNX attribute names). Throws PluginError.
AttentionAttrs parse_attention_fields(const nvinfer1::PluginFieldCollection* fc);

class TQAttentionPlugin : public nvinfer1::IPluginV3,
                          public nvinfer1::IPluginV3OneCore,
                          public nvinfer1::IPluginV3OneBuild,
                          public nvinfer1::IPluginV3OneRuntime {
 public:
  enum Input : int {
    kQ = 0, kKCache, kVCache, kMask, kKRotation, kKCodebook, kVRotation, kVCodebook, kKQjlMatrix, kKWindow,
    kVWindow, kPastLengths, kNumInputs
  };

  explicit TQAttentionPlugin(const AttentionAttrs& attrs);
  TQAttentionPlugin(const TQAttentionPlugin& other);
  TQAttentionPlugin& operator=(const TQAttentionPlugin&) = delete;
  ~TQAttentionPlugin() override = default;

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
  nvinfer1::IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  const char* getPluginName() const noexcept override;
  const char* getPluginVersion() const noexcept override;
  const char* getPluginNamespace() const noexcept override;

  // IPluginV3OneBuild
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
  const char* getMetadataString() noexcept override;

  // IPluginV3OneRuntime
  int32_t onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nb_inputs, const nvinfer1::PluginTensorDesc* out,
                        int32_t nb_outputs) noexcept override;
  int32_t enqueue(const nvinfer1::PluginTensorDesc* input_desc, const nvinfer1::PluginTensorDesc* output_desc,
                  const void* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  const nvinfer1::PluginFieldCollection* getFieldsToSerialize() noexcept override;

  const AttentionAttrs& attrs() const { return attrs_; }

 private:
  int check_shapes(const nvinfer1::PluginTensorDesc* in, int32_t nb_inputs, const char* phase) const;
  kernels::AttentionParams make_params(const nvinfer1::PluginTensorDesc* in, int32_t nb_inputs,
                                       const void* const* inputs, void* const* outputs) const;

  AttentionAttrs attrs_;
  RowLayout k_layout_;
  RowLayout v_layout_;
  int32_t nb_inputs_ = 0;  // from configurePlugin / onShapeChange: enqueue is not told
  FieldWriter serialized_;
  std::string metadata_;
};

class TQAttentionPluginCreator : public PluginCreatorBase {
 public:
  TQAttentionPluginCreator();
  nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
};

}  // namespace tq::trt
