#include "trt/tq_quantize/tq_quantize_plugin.h"

#include <cstdlib>
#include <sstream>

namespace tq::trt {

using nvinfer1::DataType;
using nvinfer1::DimensionOperation;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::IDimensionExpr;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;

namespace {
constexpr const char* kOp = "TQQuantize";
const std::vector<std::string> kFieldNames = {"bits",       "part_sizes",  "qjl",           "norm_correction",
                                              "rotation_kind", "cache_mode", "sink_tokens", "recent_window",
                                              "format_version", "constant_hadamard"};

bool check_overflow_enabled() {
  const char* v = std::getenv("TQEXPORT_TRT_CHECK_OVERFLOW");
  return v != nullptr && v[0] != '\0' && v[0] != '0';
}
}  // namespace

QuantizeAttrs parse_quantize_fields(const PluginFieldCollection* fc) {
  FieldReader r(kOp, fc, kFieldNames);
  QuantizeAttrs a;
  a.codec = read_codec(r, kOp, "", /*with_qjl=*/true, /*with_norm_correction=*/true);
  a.codec.rotation_kind = r.get_int("rotation_kind", kHadamard, kDense, kHadamard);
  read_cache_fields(r, kOp, &a.cache_mode, &a.sink_tokens, &a.recent_window);
  a.constant_hadamard = read_hadamard_promise(r, kOp, "constant_hadamard", a.codec);
  return a;
}

// ------------------------------------------------------------------------------------------------- plugin
TQQuantizePlugin::TQQuantizePlugin(const QuantizeAttrs& attrs) : attrs_(attrs), layout_(row_layout(attrs.codec)) {}

TQQuantizePlugin::TQQuantizePlugin(const TQQuantizePlugin& other)
    : nvinfer1::IPluginV3(other),
      nvinfer1::IPluginV3OneCore(other),
      nvinfer1::IPluginV3OneBuildV2(other),
      nvinfer1::IPluginV3OneRuntime(other),
      attrs_(other.attrs_),
      layout_(other.layout_),
      nb_inputs_(other.nb_inputs_) {}

nvinfer1::IPluginCapability* TQQuantizePlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuildV2*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

nvinfer1::IPluginV3* TQQuantizePlugin::clone() noexcept {
  try {
    return new TQQuantizePlugin(*this);
  } catch (const std::exception& e) {
    caught_error("TQQuantize::clone", e);
  }
  return nullptr;
}

const char* TQQuantizePlugin::getPluginName() const noexcept { return kQuantizeOp; }
const char* TQQuantizePlugin::getPluginVersion() const noexcept { return kPluginVersion; }
const char* TQQuantizePlugin::getPluginNamespace() const noexcept { return kPluginNamespace; }

int32_t TQQuantizePlugin::getNbOutputs() const noexcept { return attrs_.window() > 0 ? 2 : 1; }

int32_t TQQuantizePlugin::getOutputDataTypes(DataType* output_types, int32_t nb_outputs, const DataType* input_types,
                                             int32_t nb_inputs) const noexcept {
  if (output_types == nullptr || input_types == nullptr || nb_inputs < kCodebook + 1 ||
      nb_outputs != getNbOutputs()) {
    log_error(std::string(kOp) + " getOutputDataTypes: expected 4..7 inputs and " +
              std::to_string(getNbOutputs()) + " outputs, got " + std::to_string(nb_inputs) + " and " +
              std::to_string(nb_outputs));
    return -1;
  }
  output_types[0] = input_types[kPastCache];
  if (nb_outputs > 1) output_types[1] = input_types[kX];
  return 0;
}

int32_t TQQuantizePlugin::getOutputShapes(const DimsExprs* inputs, int32_t nb_inputs, const DimsExprs*, int32_t,
                                          DimsExprs* outputs, int32_t nb_outputs,
                                          nvinfer1::IExprBuilder& eb) noexcept {
  try {
    const int w = attrs_.window();
    if (inputs == nullptr || outputs == nullptr || nb_inputs < kCodebook + 1 || nb_outputs != getNbOutputs())
      throw PluginError("expected 4..7 inputs and " + std::to_string(getNbOutputs()) + " outputs");
    if (w > 0 && nb_inputs <= kPastWindow)
      throw PluginError("sink_tokens + recent_window = " + std::to_string(w) + " > 0 needs input 5 past_window");
    const DimsExprs& x = inputs[kX];
    const DimsExprs& cache = inputs[kPastCache];
    if (x.nbDims != 4 || cache.nbDims != 4)
      throw PluginError("x and past_cache must have rank 4, got " + std::to_string(x.nbDims) + " and " +
                        std::to_string(cache.nbDims));
    const IDimensionExpr* rows = cache.d[2];
    const IDimensionExpr* window_rows = nullptr;
    if (attrs_.cache_mode == kConcat) {
      if (w == 0) {
        rows = eb.operation(DimensionOperation::kSUM, *cache.d[2], *x.d[2]);  // Tc' = Tc + S
      } else {
        const DimsExprs& win = inputs[kPastWindow];
        if (win.nbDims != 4) throw PluginError("past_window must have rank 4");
        const IDimensionExpr* t_old = eb.operation(DimensionOperation::kSUM, *cache.d[2], *win.d[2]);
        const IDimensionExpr* t_new = eb.operation(DimensionOperation::kSUM, *t_old, *x.d[2]);
        window_rows = eb.operation(DimensionOperation::kMIN, *t_new, *eb.constant(w));  // Wd' = min(T', W)
        rows = eb.operation(DimensionOperation::kSUB, *t_new, *window_rows);           // Tc' = T' - Wd'
      }
    } else if (w > 0) {
      window_rows = inputs[kPastWindow].d[2];  // buffer: W, same as the past window
    }
    if (rows == nullptr || (w > 0 && window_rows == nullptr)) throw PluginError("IExprBuilder returned null");
    outputs[0].nbDims = 4;
    outputs[0].d[0] = x.d[0];
    outputs[0].d[1] = x.d[1];
    outputs[0].d[2] = rows;
    outputs[0].d[3] = eb.constant(layout_.row_bytes);
    if (w > 0) {
      outputs[1].nbDims = 4;
      outputs[1].d[0] = x.d[0];
      outputs[1].d[1] = x.d[1];
      outputs[1].d[2] = window_rows;
      outputs[1].d[3] = x.d[3];
    }
    return 0;
  } catch (const std::exception& e) {
    caught_error("TQQuantize getOutputShapes", e);
  }
  return -1;
}

bool TQQuantizePlugin::supportsFormatCombination(int32_t pos, const DynamicPluginTensorDesc* io, int32_t nb_inputs,
                                                 int32_t nb_outputs) noexcept {
  if (io == nullptr || pos < 0 || pos >= nb_inputs + nb_outputs) return false;
  const PluginTensorDesc& d = io[pos].desc;
  if (d.format != nvinfer1::TensorFormat::kLINEAR) return false;
  if (pos < nb_inputs) {
    switch (pos) {
      case kX: return is_float_io(d.type);
      case kPastCache: return is_byte_io(d.type);
      case kRotation:
      case kCodebook:
      case kQjlMatrix: return d.type == DataType::kFLOAT;
      case kPastWindow: return d.type == io[kX].desc.type;
      case kPastLengths: return d.type == DataType::kINT64;
      default: return false;
    }
  }
  const int out = pos - nb_inputs;
  return out == 0 ? d.type == io[kPastCache].desc.type : d.type == io[kX].desc.type;
}

int TQQuantizePlugin::check_shapes(const PluginTensorDesc* in, int32_t nb_inputs, const char* phase) const {
  ShapeCheck c(kOp);
  const int w = attrs_.window();
  const int d = attrs_.codec.head_dim;
  if (nb_inputs < kCodebook + 1 || nb_inputs > kNumInputs) {
    c.fail("expected 4..7 inputs, got " + std::to_string(nb_inputs));
    return c.report(phase);
  }
  if (attrs_.codec.qjl && nb_inputs <= kQjlMatrix) c.fail("qjl = 1 needs input 4 qjl_matrix");
  if (w > 0 && nb_inputs <= kPastWindow) c.fail("sink_tokens + recent_window > 0 needs input 5 past_window");
  if (attrs_.cache_mode == kBuffer && nb_inputs <= kPastLengths) c.fail("cache_mode = buffer needs input 6 past_lengths");
  if (!c.ok()) return c.report(phase);
  const Dims& x = in[kX].dims;
  c.rank(x, 4, "input 0 x");
  c.dim(x, 3, d, "input 0 x", "head dim D = sum(part_sizes)");
  const int64_t b = x.nbDims > 0 ? x.d[0] : -1;
  const int64_t hkv = x.nbDims > 1 ? x.d[1] : -1;
  const Dims& cache = in[kPastCache].dims;
  c.rank(cache, 4, "input 1 past_cache");
  c.dim(cache, 0, b, "input 1 past_cache", "B of x");
  c.dim(cache, 1, hkv, "input 1 past_cache", "Hkv of x");
  c.dim(cache, 3, layout_.row_bytes, "input 1 past_cache", "row_bytes of the codec");
  const Dims& rot = in[kRotation].dims;
  c.rank(rot, 3, "input 2 rotation");
  c.dim_in(rot, 0, 1, hkv, "input 2 rotation", "Hr in {1, Hkv}");
  c.dim(rot, 1, d, "input 2 rotation", "D");
  c.dim(rot, 2, d, "input 2 rotation", "D");
  const Dims& cb = in[kCodebook].dims;
  c.rank(cb, 2, "input 3 codebook");
  c.dim(cb, 0, attrs_.codec.num_parts, "input 3 codebook", "P = len(part_sizes)");
  c.dim(cb, 1, kCodebookStride, "input 3 codebook", "256 centroids per part");
  if (attrs_.codec.qjl) {
    c.rank(in[kQjlMatrix].dims, 2, "input 4 qjl_matrix");
    c.dim(in[kQjlMatrix].dims, 0, d, "input 4 qjl_matrix", "D (qjl = 1)");
    c.dim(in[kQjlMatrix].dims, 1, d, "input 4 qjl_matrix", "D (qjl = 1)");
  }
  if (w > 0) {
    const Dims& win = in[kPastWindow].dims;
    c.rank(win, 4, "input 5 past_window");
    c.dim(win, 0, b, "input 5 past_window", "B of x");
    c.dim(win, 1, hkv, "input 5 past_window", "Hkv of x");
    c.dim(win, 3, d, "input 5 past_window", "D");
    if (attrs_.cache_mode == kBuffer) c.dim(win, 2, w, "input 5 past_window", "W = sink_tokens + recent_window");
    if (attrs_.cache_mode == kConcat && win.nbDims == 4 && win.d[2] > w)
      c.fail("input 5 past_window has " + std::to_string(win.d[2]) + " rows, more than W = " + std::to_string(w));
  }
  if (attrs_.cache_mode == kBuffer) {
    c.rank(in[kPastLengths].dims, 1, "input 6 past_lengths");
    c.dim(in[kPastLengths].dims, 0, b, "input 6 past_lengths", "B of x");
  }
  return c.report(phase);
}

int32_t TQQuantizePlugin::configurePlugin(const DynamicPluginTensorDesc* in, int32_t nb_inputs,
                                          const DynamicPluginTensorDesc*, int32_t nb_outputs) noexcept {
  try {
    if (in == nullptr || nb_outputs != getNbOutputs()) {
      log_error(std::string(kOp) + " configurePlugin: expected " + std::to_string(getNbOutputs()) + " outputs");
      return -1;
    }
    const std::vector<PluginTensorDesc> descs = tensor_descs(in, nb_inputs, /*use_max=*/false);
    nb_inputs_ = nb_inputs;
    return check_shapes(descs.data(), nb_inputs, "configurePlugin");
  } catch (const std::exception& e) {
    caught_error("TQQuantize configurePlugin", e);
  }
  return -1;
}

kernels::QuantizeParams TQQuantizePlugin::make_params(const PluginTensorDesc* in, int32_t nb_inputs,
                                                      const void* const* inputs, void* const* outputs) const {
  kernels::QuantizeParams p;
  const int w = attrs_.window();
  const auto ptr = [&](int i) -> const void* { return inputs != nullptr && i < nb_inputs ? inputs[i] : nullptr; };
  p.codec = attrs_.codec;
  p.dtype = kernel_dtype(in[kX].type);
  p.batch = static_cast<int>(in[kX].dims.d[0]);
  p.kv_heads = static_cast<int>(in[kX].dims.d[1]);
  p.new_tokens = static_cast<int>(in[kX].dims.d[2]);
  p.x = ptr(kX);
  p.past_cache = static_cast<const uint8_t*>(ptr(kPastCache));
  p.past_rows = in[kPastCache].dims.d[2];
  p.present_cache = outputs != nullptr ? static_cast<uint8_t*>(outputs[0]) : nullptr;
  p.rotation = static_cast<const float*>(ptr(kRotation));
  p.rotation_heads = static_cast<int>(in[kRotation].dims.d[0]);
  p.codebook = static_cast<const float*>(ptr(kCodebook));
  p.qjl_matrix = attrs_.codec.qjl ? static_cast<const float*>(ptr(kQjlMatrix)) : nullptr;
  p.cache_mode = attrs_.cache_mode;
  p.sink_tokens = attrs_.sink_tokens;
  p.recent_window = attrs_.recent_window;
  p.rotation_hadamard = attrs_.constant_hadamard;
  p.constant_tables = attrs_.constant_hadamard;
  int64_t window_old = 0;
  if (w > 0) {
    window_old = in[kPastWindow].dims.d[2];
    p.past_window = ptr(kPastWindow);
    p.past_window_rows = window_old;
    p.present_window = outputs != nullptr ? outputs[1] : nullptr;
  }
  if (attrs_.cache_mode == kConcat) {
    const int64_t t_new = p.past_rows + window_old + p.new_tokens;
    const int64_t wd_new = t_new < w ? t_new : w;
    p.present_rows = t_new - wd_new;
    p.present_window_rows = w > 0 ? wd_new : 0;
  } else {
    p.present_rows = p.past_rows;
    p.present_window_rows = window_old;
    p.past_lengths = static_cast<const int64_t*>(ptr(kPastLengths));
  }
  return p;
}

size_t TQQuantizePlugin::getWorkspaceSize(const DynamicPluginTensorDesc* inputs, int32_t nb_inputs,
                                          const DynamicPluginTensorDesc*, int32_t) const noexcept {
  try {
    const std::vector<PluginTensorDesc> descs = tensor_descs(inputs, nb_inputs, /*use_max=*/true);
    const kernels::QuantizeParams p = make_params(descs.data(), nb_inputs, nullptr, nullptr);
    return kWorkspaceAlign + align_up(kernels::quantize_workspace_bytes(p));
  } catch (const std::exception& e) {
    caught_error("TQQuantize getWorkspaceSize", e);
  }
  return 0;
}

int32_t TQQuantizePlugin::getAliasedInput(int32_t output_index) noexcept {
  if (attrs_.cache_mode != kBuffer) return -1;
  if (output_index == 0) return kPastCache;
  if (output_index == 1 && attrs_.window() > 0) return kPastWindow;
  return -1;
}

const char* TQQuantizePlugin::getMetadataString() noexcept {
  try {
    std::ostringstream s;
    s << kOp << " D=" << attrs_.codec.head_dim << " parts=" << attrs_.codec.num_parts << " bits=[";
    for (int p = 0; p < attrs_.codec.num_parts; ++p) s << (p ? "," : "") << attrs_.codec.bits[p];
    s << "] qjl=" << attrs_.codec.qjl << " row_bytes=" << layout_.row_bytes
      << " cache_mode=" << (attrs_.cache_mode == kBuffer ? "buffer" : "concat") << " W=" << attrs_.window();
    metadata_ = s.str();
    return metadata_.c_str();
  } catch (...) {
    return nullptr;
  }
}

int32_t TQQuantizePlugin::onShapeChange(const PluginTensorDesc* in, int32_t nb_inputs, const PluginTensorDesc*,
                                        int32_t nb_outputs) noexcept {
  try {
    if (in == nullptr || nb_outputs != getNbOutputs()) return -1;
    nb_inputs_ = nb_inputs;
    return check_shapes(in, nb_inputs, "onShapeChange");
  } catch (const std::exception& e) {
    caught_error("TQQuantize onShapeChange", e);
  }
  return -1;
}

int32_t TQQuantizePlugin::enqueue(const PluginTensorDesc* input_desc, const PluginTensorDesc* output_desc,
                                  const void* const* inputs, void* const* outputs, void* workspace,
                                  cudaStream_t stream) noexcept {
  try {
    if (input_desc == nullptr || inputs == nullptr || outputs == nullptr || nb_inputs_ < kCodebook + 1) {
      log_error(std::string(kOp) + " enqueue: called before onShapeChange or with null arguments");
      return -1;
    }
    kernels::QuantizeParams p = make_params(input_desc, nb_inputs_, inputs, outputs);
    if (attrs_.cache_mode == kBuffer) {
      // Not aliased (preview feature off, or TensorRT inserted a copy): carry the past buffers over first, then
      // update in place. With aliasing the pointers are equal and nothing is copied.
      const size_t cache_bytes = static_cast<size_t>(volume(input_desc[kPastCache].dims));
      if (p.present_cache != p.past_cache && cache_bytes > 0) {
        if (cudaMemcpyAsync(p.present_cache, p.past_cache, cache_bytes, cudaMemcpyDeviceToDevice, stream) !=
            cudaSuccess) {
          log_error(std::string(kOp) + " enqueue: copying past_cache to present_cache failed");
          return -1;
        }
        p.past_cache = p.present_cache;
      }
      if (attrs_.window() > 0 && p.present_window != p.past_window) {
        const size_t elem = input_desc[kX].type == DataType::kHALF ? 2 : 4;
        const size_t window_bytes = static_cast<size_t>(volume(input_desc[kPastWindow].dims)) * elem;
        if (window_bytes > 0 &&
            cudaMemcpyAsync(p.present_window, p.past_window, window_bytes, cudaMemcpyDeviceToDevice, stream) !=
                cudaSuccess) {
          log_error(std::string(kOp) + " enqueue: copying past_window to present_window failed");
          return -1;
        }
        p.past_window = p.present_window;
      }
    }
    if (p.batch == 0 || p.kv_heads == 0) return 0;  // empty batch: every tensor is empty
    char* ws = static_cast<char*>(workspace);
    int* overflow = reinterpret_cast<int*>(ws);
    // The flag is read only by the opt-in check below; without it an overflowing row is still skipped (the
    // kernels' bounds), and the memset would be one more operation (a graph node) on every step.
    const bool check_overflow = attrs_.cache_mode == kBuffer && check_overflow_enabled();
    if (check_overflow && ws != nullptr && cudaMemsetAsync(overflow, 0, sizeof(int), stream) == cudaSuccess)
      p.overflow_flag = overflow;
    const cudaError_t err = kernels::launch_quantize(p, ws != nullptr ? ws + kWorkspaceAlign : nullptr, stream);
    if (err != cudaSuccess) {
      log_error(std::string(kOp) + " enqueue: launch_quantize failed: " + cudaGetErrorName(err) + ": " +
                kernels::last_error_message());
      return -1;
    }
    if (p.overflow_flag != nullptr) {
      int flag = 0;
      if (cudaMemcpyAsync(&flag, overflow, sizeof(int), cudaMemcpyDeviceToHost, stream) != cudaSuccess ||
          cudaStreamSynchronize(stream) != cudaSuccess || flag != 0) {
        log_error(std::string(kOp) + " enqueue: buffer overflow: a compressed row would land past capacity " +
                  std::to_string(p.present_rows) + " (row skipped)");
        return -1;
      }
    }
    (void)output_desc;
    return 0;
  } catch (const std::exception& e) {
    caught_error("TQQuantize enqueue", e);
  }
  return -1;
}

nvinfer1::IPluginV3* TQQuantizePlugin::attachToContext(nvinfer1::IPluginResourceContext*) noexcept { return clone(); }

const PluginFieldCollection* TQQuantizePlugin::getFieldsToSerialize() noexcept {
  try {
    serialized_.reset();
    serialized_.add_ints("bits", attrs_.codec.bits, attrs_.codec.num_parts);
    serialized_.add_ints("part_sizes", attrs_.codec.part_sizes, attrs_.codec.num_parts);
    serialized_.add_int("qjl", attrs_.codec.qjl);
    serialized_.add_int("norm_correction", attrs_.codec.norm_correction);
    serialized_.add_int("rotation_kind", attrs_.codec.rotation_kind);
    write_cache_fields(serialized_, attrs_.cache_mode, attrs_.sink_tokens, attrs_.recent_window);
    serialized_.add_int("constant_hadamard", attrs_.constant_hadamard);
    return serialized_.collection();
  } catch (const std::exception& e) {
    caught_error("TQQuantize getFieldsToSerialize", e);
  }
  return nullptr;
}

// ------------------------------------------------------------------------------------------------- creator
namespace {
constexpr PluginFieldType kI32 = PluginFieldType::kINT32;
}  // namespace

TQQuantizePluginCreator::TQQuantizePluginCreator()
    : PluginCreatorBase(
          kQuantizeOp,
          {PluginField("bits", nullptr, kI32, kMaxParts), PluginField("part_sizes", nullptr, kI32, kMaxParts),
           PluginField("qjl", nullptr, kI32, 1), PluginField("norm_correction", nullptr, kI32, 1),
           PluginField("rotation_kind", nullptr, kI32, 1), PluginField("cache_mode", nullptr, kI32, 1),
           PluginField("sink_tokens", nullptr, kI32, 1), PluginField("recent_window", nullptr, kI32, 1),
           PluginField("format_version", nullptr, kI32, 1), PluginField("constant_hadamard", nullptr, kI32, 1)}) {}

nvinfer1::IPluginV3* TQQuantizePluginCreator::createPlugin(const char* name, const PluginFieldCollection* fc,
                                                          nvinfer1::TensorRTPhase) noexcept {
  try {
    return new TQQuantizePlugin(parse_quantize_fields(fc));
  } catch (const std::exception& e) {
    caught_error((std::string("TQQuantize createPlugin '") + (name ? name : "") + "'").c_str(), e);
  }
  return nullptr;
}

}  // namespace tq::trt
