// Shared glue of the tqexport TensorRT plugins: logging through TensorRT's logger, attribute (PluginField)
// parsing with type and range checks, serialization storage, dtype mapping and shape checks.
// No kernels here: the plugins call only plugins/kernels/tq_kernels.h.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/tq_format.h"
#include "kernels/tq_kernels.h"

namespace tq::trt {

// ------------------------------------------------------------------------------------------------- logging
// setLoggerFinder (plugins/trt/register.cpp) stores TensorRT's finder; without one, messages go to stderr.
void set_logger_finder(nvinfer1::ILoggerFinder* finder) noexcept;
void log(nvinfer1::ILogger::Severity severity, const std::string& message) noexcept;
inline void log_error(const std::string& message) noexcept { log(nvinfer1::ILogger::Severity::kERROR, message); }
inline void log_warning(const std::string& message) noexcept {
  log(nvinfer1::ILogger::Severity::kWARNING, message);
}

// Thrown inside plugin code and turned into a logged error + failure return at every entry point.
class PluginError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Logs a caught exception as "<where>: <what>" (entry points call this from their catch blocks).
void caught_error(const char* where, const std::exception& e) noexcept;

// ------------------------------------------------------------------------------------------------- fields
// Reads a PluginFieldCollection: each known name at most once, types checked, unknown names warned about
// (plugin_version / plugin_namespace, which the ONNX parser consumes, are ignored silently).
class FieldReader {
 public:
  FieldReader(const char* op, const nvinfer1::PluginFieldCollection* fc, const std::vector<std::string>& known);
  bool has(const char* name) const;
  // Integer scalar in [lo, hi] (kINT8/16/32/64 accepted, length 1); `fallback` when absent and not required.
  int get_int(const char* name, int fallback, int lo, int hi, bool required = false) const;
  // Integer list of length 1..max_len with every entry in [lo, hi]; required.
  std::vector<int> get_ints(const char* name, int max_len, int lo, int hi) const;
  // Finite float scalar (kFLOAT16 not accepted; kFLOAT32/kFLOAT64, length 1).
  float get_float(const char* name, float fallback, bool required = false) const;

 private:
  const nvinfer1::PluginField* find(const char* name) const;
  [[noreturn]] void fail(const char* name, const std::string& why) const;
  std::string op_;
  const nvinfer1::PluginFieldCollection* fc_;
};

// Owns the values behind a PluginFieldCollection returned by getFieldsToSerialize (stable until next reset).
class FieldWriter {
 public:
  void reset();
  void add_int(const char* name, int value);
  void add_ints(const char* name, const int* values, int count);
  void add_float(const char* name, float value);
  const nvinfer1::PluginFieldCollection* collection();

 private:
  struct Entry {
    std::string name;
    nvinfer1::PluginFieldType type;
    std::vector<int32_t> ints;
    float f = 0.0f;
  };
  std::vector<Entry> entries_;
  std::vector<nvinfer1::PluginField> fields_;
  nvinfer1::PluginFieldCollection fc_{};
};

// The IPluginCreatorV3One half every tqexport creator shares: its op name, version kPluginVersion, namespace
// kPluginNamespace and the getFieldNames() list (names and types only). A plugin's creator adds createPlugin.
class PluginCreatorBase : public nvinfer1::IPluginCreatorV3One {
 public:
  PluginCreatorBase(const char* name, std::vector<nvinfer1::PluginField> fields);
  PluginCreatorBase(const PluginCreatorBase&) = delete;  // fc_ points into fields_
  PluginCreatorBase& operator=(const PluginCreatorBase&) = delete;
  const char* getPluginName() const noexcept override { return name_; }
  const char* getPluginVersion() const noexcept override { return kPluginVersion; }
  const char* getPluginNamespace() const noexcept override { return kPluginNamespace; }
  const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override { return &fc_; }

 private:
  const char* name_;
  std::vector<nvinfer1::PluginField> fields_;
  nvinfer1::PluginFieldCollection fc_{};
};

// Codec parameters from `<prefix>bits`, `<prefix>part_sizes` (and `<prefix>qjl` when with_qjl), validated with
// tq::validate against head_dim = sum(part_sizes). Throws PluginError naming the attribute.
CodecConfig read_codec(const FieldReader& r, const char* op, const std::string& prefix, bool with_qjl,
                       bool with_norm_correction);

// Cache fields of both ops: cache_mode, sink_tokens, recent_window (each in [0, kMaxTokens], and so their sum)
// and format_version (must be kFormatVersion). Throws PluginError naming the attribute.
constexpr int kMaxTokens = 1 << 30;
void read_cache_fields(const FieldReader& r, const char* op, int* cache_mode, int* sink_tokens, int* recent_window);
// Writes the same four fields, in that order, for getFieldsToSerialize.
void write_cache_fields(FieldWriter& w, int cache_mode, int sink_tokens, int recent_window);

// A constant-Hadamard promise field (docs/format.md 8.3: constant_hadamard, k_/v_constant_hadamard), 0 or 1. A
// promise the codec makes impossible (more than one part, D not a power of two: such an R is never
// Sylvester-Hadamard) is refused rather than passed on. Throws PluginError naming the attribute.
int read_hadamard_promise(const FieldReader& r, const char* op, const char* name, const CodecConfig& codec);

// ------------------------------------------------------------------------------------------------- types
bool is_float_io(nvinfer1::DataType t);   // kFLOAT or kHALF: the activation dtypes of the contract
bool is_byte_io(nvinfer1::DataType t);    // kINT8 or kUINT8: compressed cache bytes
kernels::DType kernel_dtype(nvinfer1::DataType t);
const char* dtype_name(nvinfer1::DataType t);

// ------------------------------------------------------------------------------------------------- shapes
int64_t volume(const nvinfer1::Dims& d);  // product of dims (-1 if any dim is unknown)
std::string dims_str(const nvinfer1::Dims& d);

// Shape checks that pass when either side is unknown (-1): configurePlugin sees wildcards, onShapeChange does not.
class ShapeCheck {
 public:
  ShapeCheck(const char* op) : op_(op) {}
  void rank(const nvinfer1::Dims& d, int rank, const char* what);
  void dim(const nvinfer1::Dims& d, int axis, int64_t expected, const char* what, const char* rule);
  void dim_in(const nvinfer1::Dims& d, int axis, int64_t a, int64_t b, const char* what, const char* rule);
  void fail(const std::string& message);
  bool ok() const { return errors_.empty(); }
  // Logs every problem found; returns 0 when there was none, else -1.
  int report(const char* phase) const;

 private:
  std::string op_;
  std::vector<std::string> errors_;
};

// The PluginTensorDescs of `in` (configurePlugin, getWorkspaceSize), with each `max` dims when use_max.
std::vector<nvinfer1::PluginTensorDesc> tensor_descs(const nvinfer1::DynamicPluginTensorDesc* in, int32_t count,
                                                     bool use_max);

// An optional input is present when it was passed and has at least one element (docs/format.md section 8).
inline bool present(const nvinfer1::PluginTensorDesc* in, int nb_inputs, int index) {
  return index < nb_inputs && volume(in[index].dims) > 0;
}

constexpr size_t kWorkspaceAlign = 256;
inline size_t align_up(size_t n) { return (n + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign; }

}  // namespace tq::trt
