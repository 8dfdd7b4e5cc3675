#include "trt/tq_attention/tq_attention_plugin.h"

#include <sstream>

namespace tq::trt {

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;

namespace {
constexpr const char* kOp = "TQAttention";
const std::vector<std::string> kFieldNames = {"k_bits", "k_part_sizes", "k_qjl",       "v_bits",
                                              "v_part_sizes", "scale",   "softcap",     "cache_mode",
                                              "sink_tokens",  "recent_window", "format_version",
                                              "k_constant_hadamard", "v_constant_hadamard"};
}  // namespace

AttentionAttrs parse_attention_fields(const PluginFieldCollection* fc) {
  FieldReader r(kOp, fc, kFieldNames);
  AttentionAttrs a;
  a.k_codec = read_codec(r, kOp, "k_", /*with_qjl=*/true, /*with_norm_correction=*/false);
  a.v_codec = read_codec(r, kOp, "v_", /*with_qjl=*/false, /*with_norm_correction=*/false);
  if (a.k_codec.head_dim != a.v_codec.head_dim)
    throw PluginError(std::string(kOp) + ": sum(k_part_sizes) = " + std::to_string(a.k_codec.head_dim) +
                      " and sum(v_part_sizes) = " + std::to_string(a.v_codec.head_dim) + " must both equal D");
  if (!kernels::attention_head_dim_supported(a.k_codec.head_dim))
    throw PluginError(std::string(kOp) + ": head dim D = " + std::to_string(a.k_codec.head_dim) +
                      " has no compiled attention kernel");
  a.scale = r.get_float("scale", 0.0f, /*required=*/true);
  if (!(a.scale > 0.0f)) throw PluginError(std::string(kOp) + ": attribute 'scale' = " + std::to_string(a.scale) +
                                           " must be > 0");
  a.softcap = r.get_float("softcap", 0.0f);
  if (a.softcap < 0.0f)
    throw PluginError(std::string(kOp) + ": attribute 'softcap' = " + std::to_string(a.softcap) +
                      " must be >= 0 (0 = off)");
  read_cache_fields(r, kOp, &a.cache_mode, &a.sink_tokens, &a.recent_window);
  a.k_constant_hadamard = read_hadamard_promise(r, kOp, "k_constant_hadamard", a.k_codec);
  a.v_constant_hadamard = read_hadamard_promise(r, kOp, "v_constant_hadamard", a.v_codec);
  return a;
}

// ------------------------------------------------------------------------------------------------- plugin
TQAttentionPlugin::TQAttentionPlugin(const AttentionAttrs& attrs)
    : attrs_(attrs), k_layout_(row_layout(attrs.k_codec)), v_layout_(row_layout(attrs.v_codec)) {}

TQAttentionPlugin::TQAttentionPlugin(const TQAttentionPlugin& other)
    : nvinfer1::IPluginV3(other),
      nvinfer1::IPluginV3OneCore(other),
      nvinfer1::IPluginV3OneBuild(other),
      nvinfer1::IPluginV3OneRuntime(other),
      attrs_(other.attrs_),
      k_layout_(other.k_layout_),
      v_layout_(other.v_layout_),
      nb_inputs_(other.nb_inputs_) {}

nvinfer1::IPluginCapability* TQAttentionPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

nvinfer1::IPluginV3* TQAttentionPlugin::clone() noexcept {
  try {
    return new TQAttentionPlugin(*this);
  } catch (const std::exception& e) {
    caught_error("TQAttention::clone", e);
  }
  return nullptr;
}

const char* TQAttentionPlugin::getPluginName() const noexcept { return kAttentionOp; }
const char* TQAttentionPlugin::getPluginVersion() const noexcept { return kPluginVersion; }
const char* TQAttentionPlugin::getPluginNamespace() const noexcept { return kPluginNamespace; }

int32_t TQAttentionPlugin::getNbOutputs() const noexcept { return 1; }

int32_t TQAttentionPlugin::getOutputDataTypes(DataType* output_types, int32_t nb_outputs, const DataType* input_types,
                                              int32_t nb_inputs) const noexcept {
  if (output_types == nullptr || input_types == nullptr || nb_inputs < kVCodebook + 1 || nb_outputs != 1) {
    log_error(std::string(kOp) + " getOutputDataTypes: expected 8..12 inputs and 1 output, got " +
              std::to_string(nb_inputs) + " and " + std::to_string(nb_outputs));
    return -1;
  }
  output_types[0] = input_types[kQ];
  return 0;
}

int32_t TQAttentionPlugin::getOutputShapes(const DimsExprs* inputs, int32_t nb_inputs, const DimsExprs*, int32_t,
                                           DimsExprs* outputs, int32_t nb_outputs, nvinfer1::IExprBuilder&) noexcept {
  if (inputs == nullptr || outputs == nullptr || nb_inputs < kVCodebook + 1 || nb_outputs != 1 ||
      inputs[kQ].nbDims != 4) {
    log_error(std::string(kOp) + " getOutputShapes: expected 8..12 inputs with q of rank 4 and 1 output");
    return -1;
  }
  outputs[0] = inputs[kQ];  // [B, Hq, S, D]
  return 0;
}

bool TQAttentionPlugin::supportsFormatCombination(int32_t pos, const DynamicPluginTensorDesc* io, int32_t nb_inputs,
                                                  int32_t nb_outputs) noexcept {
  if (io == nullptr || pos < 0 || pos >= nb_inputs + nb_outputs) return false;
  const PluginTensorDesc& d = io[pos].desc;
  if (d.format != nvinfer1::TensorFormat::kLINEAR) return false;
  if (pos >= nb_inputs) return d.type == io[kQ].desc.type;
  switch (pos) {
    case kQ: return is_float_io(d.type);
    case kKCache:
    case kVCache: return is_byte_io(d.type);
    case kMask: return is_float_io(d.type) || d.type == DataType::kBOOL;
    case kKRotation:
    case kKCodebook:
    case kVRotation:
    case kVCodebook:
    case kKQjlMatrix: return d.type == DataType::kFLOAT;
    case kKWindow:
    case kVWindow: return d.type == io[kQ].desc.type;
    case kPastLengths: return d.type == DataType::kINT64;
    default: return false;
  }
}

int TQAttentionPlugin::check_shapes(const PluginTensorDesc* in, int32_t nb_inputs, const char* phase) const {
  ShapeCheck c(kOp);
  const int w = attrs_.window();
  const int d = attrs_.k_codec.head_dim;
  if (nb_inputs < kVCodebook + 1 || nb_inputs > kNumInputs) {
    c.fail("expected 8..12 inputs, got " + std::to_string(nb_inputs));
    return c.report(phase);
  }
  if (attrs_.k_codec.qjl && nb_inputs <= kKQjlMatrix) c.fail("k_qjl = 1 needs input 8 k_qjl_matrix");
  if (w > 0 && nb_inputs <= kVWindow) c.fail("sink_tokens + recent_window > 0 needs inputs 9 k_window, 10 v_window");
  if (attrs_.cache_mode == kBuffer && nb_inputs <= kPastLengths)
    c.fail("cache_mode = buffer needs input 11 past_lengths");
  if (!c.ok()) return c.report(phase);
  const Dims& q = in[kQ].dims;
  c.rank(q, 4, "input 0 q");
  c.dim(q, 3, d, "input 0 q", "head dim D = sum(k_part_sizes)");
  const int64_t b = q.nbDims > 0 ? q.d[0] : -1;
  const int64_t hq = q.nbDims > 1 ? q.d[1] : -1;
  const int64_t s = q.nbDims > 2 ? q.d[2] : -1;
  const Dims& kc = in[kKCache].dims;
  const Dims& vc = in[kVCache].dims;
  c.rank(kc, 4, "input 1 k_cache");
  c.rank(vc, 4, "input 2 v_cache");
  const int64_t hkv = kc.nbDims > 1 ? kc.d[1] : -1;
  const int64_t tc = kc.nbDims > 2 ? kc.d[2] : -1;
  c.dim(kc, 0, b, "input 1 k_cache", "B of q");
  c.dim(kc, 3, k_layout_.row_bytes, "input 1 k_cache", "row_bytes of the K codec");
  c.dim(vc, 0, b, "input 2 v_cache", "B of q");
  c.dim(vc, 1, hkv, "input 2 v_cache", "Hkv of k_cache");
  c.dim(vc, 2, tc, "input 2 v_cache", "Tc of k_cache");
  c.dim(vc, 3, v_layout_.row_bytes, "input 2 v_cache", "row_bytes of the V codec");
  if (hq > 0 && hkv > 0 && hq % hkv != 0)
    c.fail("Hq = " + std::to_string(hq) + " (q dim 1) is not a multiple of Hkv = " + std::to_string(hkv));
  const Dims& mask = in[kMask].dims;
  c.rank(mask, 4, "input 3 mask");
  c.dim_in(mask, 0, 1, b, "input 3 mask", "Bm in {1, B}");
  c.dim_in(mask, 1, 1, hq, "input 3 mask", "Hm in {1, Hq}");
  c.dim(mask, 2, s, "input 3 mask", "S of q");
  const char* rot_names[2] = {"input 4 k_rotation", "input 6 v_rotation"};
  const char* cb_names[2] = {"input 5 k_codebook", "input 7 v_codebook"};
  const int parts[2] = {attrs_.k_codec.num_parts, attrs_.v_codec.num_parts};
  for (int i = 0; i < 2; ++i) {
    const Dims& rot = in[kKRotation + 2 * i].dims;
    c.rank(rot, 3, rot_names[i]);
    c.dim_in(rot, 0, 1, hkv, rot_names[i], "Hr in {1, Hkv}");
    c.dim(rot, 1, d, rot_names[i], "D");
    c.dim(rot, 2, d, rot_names[i], "D");
    const Dims& cb = in[kKCodebook + 2 * i].dims;
    c.rank(cb, 2, cb_names[i]);
    c.dim(cb, 0, parts[i], cb_names[i], "P = len(part_sizes)");
    c.dim(cb, 1, kCodebookStride, cb_names[i], "256 centroids per part");
  }
  if (attrs_.k_codec.qjl) {
    c.rank(in[kKQjlMatrix].dims, 2, "input 8 k_qjl_matrix");
    c.dim(in[kKQjlMatrix].dims, 0, d, "input 8 k_qjl_matrix", "D (k_qjl = 1)");
    c.dim(in[kKQjlMatrix].dims, 1, d, "input 8 k_qjl_matrix", "D (k_qjl = 1)");
  }
  int64_t wd = 0;
  if (w > 0) {
    const char* names[2] = {"input 9 k_window", "input 10 v_window"};
    for (int i = 0; i < 2; ++i) {
      const Dims& win = in[kKWindow + i].dims;
      c.rank(win, 4, names[i]);
      c.dim(win, 0, b, names[i], "B of q");
      c.dim(win, 1, hkv, names[i], "Hkv of k_cache");
      c.dim(win, 3, d, names[i], "D");
      if (attrs_.cache_mode == kBuffer) c.dim(win, 2, w, names[i], "W = sink_tokens + recent_window");
    }
    c.dim(in[kVWindow].dims, 2, in[kKWindow].dims.nbDims > 2 ? in[kKWindow].dims.d[2] : -1, names[1],
          "Wd of k_window");
    wd = in[kKWindow].dims.nbDims > 2 ? in[kKWindow].dims.d[2] : -1;
  }
  if (attrs_.cache_mode == kBuffer) {
    c.rank(in[kPastLengths].dims, 1, "input 11 past_lengths");
    c.dim(in[kPastLengths].dims, 0, b, "input 11 past_lengths", "B of q");
  } else if (mask.nbDims == 4 && mask.d[3] >= 0 && tc >= 0 && wd >= 0) {
    const int64_t t = mask.d[3];
    const int64_t expect_wd = t < w ? t : w;
    if (tc + wd != t || wd != expect_wd)
      c.fail("concat mode needs Tc + Wd == T (mask dim 3) and Wd == min(T, W): got Tc = " + std::to_string(tc) +
             ", Wd = " + std::to_string(wd) + ", T = " + std::to_string(t) + ", W = " + std::to_string(w));
  }
  return c.report(phase);
}

int32_t TQAttentionPlugin::configurePlugin(const DynamicPluginTensorDesc* in, int32_t nb_inputs,
                                           const DynamicPluginTensorDesc*, int32_t nb_outputs) noexcept {
  try {
    if (in == nullptr || nb_outputs != 1) {
      log_error(std::string(kOp) + " configurePlugin: expected 1 output");
      return -1;
    }
    const std::vector<PluginTensorDesc> descs = tensor_descs(in, nb_inputs, /*use_max=*/false);
    nb_inputs_ = nb_inputs;
    return check_shapes(descs.data(), nb_inputs, "configurePlugin");
  } catch (const std::exception& e) {
    caught_error("TQAttention configurePlugin", e);
  }
  return -1;
}

kernels::AttentionParams TQAttentionPlugin::make_params(const PluginTensorDesc* in, int32_t nb_inputs,
                                                        const void* const* inputs, void* const* outputs) const {
  kernels::AttentionParams p;
  const auto ptr = [&](int i) -> const void* { return inputs != nullptr && i < nb_inputs ? inputs[i] : nullptr; };
  p.k_codec = attrs_.k_codec;
  p.v_codec = attrs_.v_codec;
  p.dtype = kernel_dtype(in[kQ].type);
  p.batch = static_cast<int>(in[kQ].dims.d[0]);
  p.q_heads = static_cast<int>(in[kQ].dims.d[1]);
  p.new_tokens = static_cast<int>(in[kQ].dims.d[2]);
  p.kv_heads = static_cast<int>(in[kKCache].dims.d[1]);
  p.q = ptr(kQ);
  p.k_cache = static_cast<const uint8_t*>(ptr(kKCache));
  p.v_cache = static_cast<const uint8_t*>(ptr(kVCache));
  p.cache_rows = in[kKCache].dims.d[2];
  const PluginTensorDesc& mask = in[kMask];
  p.mask = ptr(kMask);
  p.mask_type = mask.type == DataType::kBOOL   ? kernels::MaskType::kBool
                : mask.type == DataType::kHALF ? kernels::MaskType::kFloat16
                                               : kernels::MaskType::kFloat32;
  p.mask_batch = static_cast<int>(mask.dims.d[0]);
  p.mask_heads = static_cast<int>(mask.dims.d[1]);
  p.mask_tokens = mask.dims.d[3];
  p.k_rotation = static_cast<const float*>(ptr(kKRotation));
  p.k_rotation_heads = static_cast<int>(in[kKRotation].dims.d[0]);
  p.k_codebook = static_cast<const float*>(ptr(kKCodebook));
  p.v_rotation = static_cast<const float*>(ptr(kVRotation));
  p.v_rotation_heads = static_cast<int>(in[kVRotation].dims.d[0]);
  p.v_codebook = static_cast<const float*>(ptr(kVCodebook));
  p.k_qjl_matrix = attrs_.k_codec.qjl ? static_cast<const float*>(ptr(kKQjlMatrix)) : nullptr;
  if (attrs_.window() > 0) {
    p.k_window = ptr(kKWindow);
    p.v_window = ptr(kVWindow);
    p.window_rows = in[kKWindow].dims.d[2];
  }
  if (attrs_.cache_mode == kBuffer) p.past_lengths = static_cast<const int64_t*>(ptr(kPastLengths));
  p.scale = attrs_.scale;
  p.softcap = attrs_.softcap;
  p.cache_mode = attrs_.cache_mode;
  p.sink_tokens = attrs_.sink_tokens;
  p.recent_window = attrs_.recent_window;
  p.k_rotation_hadamard = attrs_.k_constant_hadamard;
  p.v_rotation_hadamard = attrs_.v_constant_hadamard;
  p.out = outputs != nullptr ? outputs[0] : nullptr;
  return p;
}

size_t TQAttentionPlugin::getWorkspaceSize(const DynamicPluginTensorDesc* inputs, int32_t nb_inputs,
                                           const DynamicPluginTensorDesc*, int32_t) const noexcept {
  try {
    const std::vector<PluginTensorDesc> descs = tensor_descs(inputs, nb_inputs, /*use_max=*/true);
    const kernels::AttentionParams p = make_params(descs.data(), nb_inputs, nullptr, nullptr);
    return align_up(kernels::attention_workspace_bytes_max(p));  // any runtime shape up to the max
  } catch (const std::exception& e) {
    caught_error("TQAttention getWorkspaceSize", e);
  }
  return 0;
}

const char* TQAttentionPlugin::getMetadataString() noexcept {
  try {
    std::ostringstream s;
    s << kOp << " D=" << attrs_.k_codec.head_dim << " k_row_bytes=" << k_layout_.row_bytes
      << " v_row_bytes=" << v_layout_.row_bytes << " k_qjl=" << attrs_.k_codec.qjl << " scale=" << attrs_.scale
      << " softcap=" << attrs_.softcap << " cache_mode=" << (attrs_.cache_mode == kBuffer ? "buffer" : "concat")
      << " W=" << attrs_.window();
    metadata_ = s.str();
    return metadata_.c_str();
  } catch (...) {
    return nullptr;
  }
}

int32_t TQAttentionPlugin::onShapeChange(const PluginTensorDesc* in, int32_t nb_inputs, const PluginTensorDesc*,
                                         int32_t nb_outputs) noexcept {
  try {
    if (in == nullptr || nb_outputs != 1) return -1;
    nb_inputs_ = nb_inputs;
    return check_shapes(in, nb_inputs, "onShapeChange");
  } catch (const std::exception& e) {
    caught_error("TQAttention onShapeChange", e);
  }
  return -1;
}

int32_t TQAttentionPlugin::enqueue(const PluginTensorDesc* input_desc, const PluginTensorDesc*,
                                   const void* const* inputs, void* const* outputs, void* workspace,
                                   cudaStream_t stream) noexcept {
  try {
    if (input_desc == nullptr || inputs == nullptr || outputs == nullptr || nb_inputs_ < kVCodebook + 1) {
      log_error(std::string(kOp) + " enqueue: called before onShapeChange or with null arguments");
      return -1;
    }
    const kernels::AttentionParams p = make_params(input_desc, nb_inputs_, inputs, outputs);
    if (volume(input_desc[kQ].dims) == 0) return 0;  // empty output
    const cudaError_t err = kernels::launch_attention(p, workspace, stream);
    if (err != cudaSuccess) {
      log_error(std::string(kOp) + " enqueue: launch_attention failed: " + cudaGetErrorName(err) + ": " +
                kernels::last_error_message());
      return -1;
    }
    return 0;
  } catch (const std::exception& e) {
    caught_error("TQAttention enqueue", e);
  }
  return -1;
}

nvinfer1::IPluginV3* TQAttentionPlugin::attachToContext(nvinfer1::IPluginResourceContext*) noexcept {
  return clone();
}

const PluginFieldCollection* TQAttentionPlugin::getFieldsToSerialize() noexcept {
  try {
    serialized_.reset();
    serialized_.add_ints("k_bits", attrs_.k_codec.bits, attrs_.k_codec.num_parts);
    serialized_.add_ints("k_part_sizes", attrs_.k_codec.part_sizes, attrs_.k_codec.num_parts);
    serialized_.add_int("k_qjl", attrs_.k_codec.qjl);
    serialized_.add_ints("v_bits", attrs_.v_codec.bits, attrs_.v_codec.num_parts);
    serialized_.add_ints("v_part_sizes", attrs_.v_codec.part_sizes, attrs_.v_codec.num_parts);
    serialized_.add_float("scale", attrs_.scale);
    serialized_.add_float("softcap", attrs_.softcap);
    write_cache_fields(serialized_, attrs_.cache_mode, attrs_.sink_tokens, attrs_.recent_window);
    serialized_.add_int("k_constant_hadamard", attrs_.k_constant_hadamard);
    serialized_.add_int("v_constant_hadamard", attrs_.v_constant_hadamard);
    return serialized_.collection();
  } catch (const std::exception& e) {
    caught_error("TQAttention getFieldsToSerialize", e);
  }
  return nullptr;
}

// ------------------------------------------------------------------------------------------------- creator
namespace {
constexpr PluginFieldType kI32 = PluginFieldType::kINT32;
constexpr PluginFieldType kF32 = PluginFieldType::kFLOAT32;
}  // namespace

TQAttentionPluginCreator::TQAttentionPluginCreator()
    : PluginCreatorBase(
          kAttentionOp,
          {PluginField("k_bits", nullptr, kI32, kMaxParts), PluginField("k_part_sizes", nullptr, kI32, kMaxParts),
           PluginField("k_qjl", nullptr, kI32, 1), PluginField("v_bits", nullptr, kI32, kMaxParts),
           PluginField("v_part_sizes", nullptr, kI32, kMaxParts), PluginField("scale", nullptr, kF32, 1),
           PluginField("softcap", nullptr, kF32, 1), PluginField("cache_mode", nullptr, kI32, 1),
           PluginField("sink_tokens", nullptr, kI32, 1), PluginField("recent_window", nullptr, kI32, 1),
           PluginField("format_version", nullptr, kI32, 1), PluginField("k_constant_hadamard", nullptr, kI32, 1),
           PluginField("v_constant_hadamard", nullptr, kI32, 1)}) {}

nvinfer1::IPluginV3* TQAttentionPluginCreator::createPlugin(const char* name, const PluginFieldCollection* fc,
                                                           nvinfer1::TensorRTPhase) noexcept {
  try {
    return new TQAttentionPlugin(parse_attention_fields(fc));
  } catch (const std::exception& e) {
    caught_error((std::string("TQAttention createPlugin '") + (name ? name : "") + "'").c_str(), e);
  }
  return nullptr;
}

}  // namespace tq::trt
