#include "trt/common/tq_trt_common.h"

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <utility>

namespace tq::trt {

using nvinfer1::DataType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;

namespace {
std::atomic<nvinfer1::ILoggerFinder*> g_finder{nullptr};

const char* severity_name(nvinfer1::ILogger::Severity s) {
  switch (s) {
    case nvinfer1::ILogger::Severity::kINTERNAL_ERROR: return "INTERNAL_ERROR";
    case nvinfer1::ILogger::Severity::kERROR: return "ERROR";
    case nvinfer1::ILogger::Severity::kWARNING: return "WARNING";
    case nvinfer1::ILogger::Severity::kINFO: return "INFO";
    default: return "VERBOSE";
  }
}

const char* field_type_name(PluginFieldType t) {
  switch (t) {
    case PluginFieldType::kFLOAT16: return "kFLOAT16";
    case PluginFieldType::kFLOAT32: return "kFLOAT32";
    case PluginFieldType::kFLOAT64: return "kFLOAT64";
    case PluginFieldType::kINT8: return "kINT8";
    case PluginFieldType::kINT16: return "kINT16";
    case PluginFieldType::kINT32: return "kINT32";
    case PluginFieldType::kINT64: return "kINT64";
    case PluginFieldType::kCHAR: return "kCHAR";
    case PluginFieldType::kDIMS: return "kDIMS";
    default: return "other";
  }
}

bool read_integer(const PluginField& f, int i, int64_t* out) {
  switch (f.type) {
    case PluginFieldType::kINT8: *out = static_cast<const int8_t*>(f.data)[i]; return true;
    case PluginFieldType::kINT16: *out = static_cast<const int16_t*>(f.data)[i]; return true;
    case PluginFieldType::kINT32: *out = static_cast<const int32_t*>(f.data)[i]; return true;
    case PluginFieldType::kINT64: *out = static_cast<const int64_t*>(f.data)[i]; return true;
    default: return false;
  }
}
}  // namespace

void set_logger_finder(nvinfer1::ILoggerFinder* finder) noexcept { g_finder.store(finder); }

void log(nvinfer1::ILogger::Severity severity, const std::string& message) noexcept {
  nvinfer1::ILoggerFinder* finder = g_finder.load();
  nvinfer1::ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
  if (logger != nullptr) {
    logger->log(severity, message.c_str());
  } else {
    std::fprintf(stderr, "[tqexport_trt %s] %s\n", severity_name(severity), message.c_str());
  }
}

void caught_error(const char* where, const std::exception& e) noexcept {
  try {
    log_error(std::string(where) + ": " + e.what());
  } catch (...) {
  }
}

// --------------------------------------------------------------------------------------------- FieldReader
FieldReader::FieldReader(const char* op, const PluginFieldCollection* fc, const std::vector<std::string>& known)
    : op_(op), fc_(fc) {
  if (fc == nullptr) throw PluginError(op_ + ": PluginFieldCollection is null");
  if (fc->nbFields < 0 || (fc->nbFields > 0 && fc->fields == nullptr))
    throw PluginError(op_ + ": PluginFieldCollection has " + std::to_string(fc->nbFields) + " fields but no data");
  for (int i = 0; i < fc->nbFields; ++i) {
    const PluginField& f = fc->fields[i];
    if (f.name == nullptr) throw PluginError(op_ + ": field " + std::to_string(i) + " has no name");
    const std::string name = f.name;
    bool is_known = false;
    for (const auto& k : known) is_known = is_known || (k == name);
    if (!is_known) {
      if (name != "plugin_version" && name != "plugin_namespace")
        log_warning(op_ + ": ignoring unknown field '" + name + "'");
      continue;
    }
    for (int j = 0; j < i; ++j) {
      if (fc->fields[j].name != nullptr && name == fc->fields[j].name)
        throw PluginError(op_ + ": field '" + name + "' given twice");
    }
    if (f.length > 0 && f.data == nullptr) throw PluginError(op_ + ": field '" + name + "' has no data");
  }
}

const PluginField* FieldReader::find(const char* name) const {
  for (int i = 0; i < fc_->nbFields; ++i) {
    if (std::strcmp(fc_->fields[i].name, name) == 0) return &fc_->fields[i];
  }
  return nullptr;
}

bool FieldReader::has(const char* name) const { return find(name) != nullptr; }

void FieldReader::fail(const char* name, const std::string& why) const {
  throw PluginError(op_ + ": attribute '" + name + "' " + why);
}

int FieldReader::get_int(const char* name, int fallback, int lo, int hi, bool required) const {
  const PluginField* f = find(name);
  if (f == nullptr) {
    if (required) fail(name, "is required");
    return fallback;
  }
  int64_t v = 0;
  if (!read_integer(*f, 0, &v)) fail(name, std::string("has type ") + field_type_name(f->type) + ", expected kINT32");
  if (f->length != 1) fail(name, "has length " + std::to_string(f->length) + ", expected a scalar (length 1)");
  if (v < lo || v > hi)
    fail(name, "= " + std::to_string(v) + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return static_cast<int>(v);
}

std::vector<int> FieldReader::get_ints(const char* name, int max_len, int lo, int hi) const {
  const PluginField* f = find(name);
  if (f == nullptr) fail(name, "is required");
  int64_t probe = 0;
  if (f->length > 0 && !read_integer(*f, 0, &probe))
    fail(name, std::string("has type ") + field_type_name(f->type) + ", expected kINT32");
  if (f->length < 1 || f->length > max_len)
    fail(name, "has " + std::to_string(f->length) + " entries, expected 1.." + std::to_string(max_len));
  std::vector<int> out;
  for (int i = 0; i < f->length; ++i) {
    int64_t v = 0;
    read_integer(*f, i, &v);
    if (v < lo || v > hi)
      fail(name, "[" + std::to_string(i) + "] = " + std::to_string(v) + " is out of range [" + std::to_string(lo) +
                     ", " + std::to_string(hi) + "]");
    out.push_back(static_cast<int>(v));
  }
  return out;
}

float FieldReader::get_float(const char* name, float fallback, bool required) const {
  const PluginField* f = find(name);
  if (f == nullptr) {
    if (required) fail(name, "is required");
    return fallback;
  }
  if (f->length != 1) fail(name, "has length " + std::to_string(f->length) + ", expected a scalar (length 1)");
  double v = 0.0;
  if (f->type == PluginFieldType::kFLOAT32) {
    v = *static_cast<const float*>(f->data);
  } else if (f->type == PluginFieldType::kFLOAT64) {
    v = *static_cast<const double*>(f->data);
  } else {
    fail(name, std::string("has type ") + field_type_name(f->type) + ", expected kFLOAT32");
  }
  if (!std::isfinite(v)) fail(name, "is not finite");
  return static_cast<float>(v);
}

// --------------------------------------------------------------------------------------------- FieldWriter
void FieldWriter::reset() {
  entries_.clear();
  fields_.clear();
}

void FieldWriter::add_int(const char* name, int value) { add_ints(name, &value, 1); }

void FieldWriter::add_ints(const char* name, const int* values, int count) {
  Entry e;
  e.name = name;
  e.type = PluginFieldType::kINT32;
  e.ints.assign(values, values + count);
  entries_.push_back(std::move(e));
}

void FieldWriter::add_float(const char* name, float value) {
  Entry e;
  e.name = name;
  e.type = PluginFieldType::kFLOAT32;
  e.f = value;
  entries_.push_back(std::move(e));
}

const PluginFieldCollection* FieldWriter::collection() {
  fields_.clear();
  for (const Entry& e : entries_) {
    if (e.type == PluginFieldType::kFLOAT32) {
      fields_.emplace_back(e.name.c_str(), &e.f, PluginFieldType::kFLOAT32, 1);
    } else {
      fields_.emplace_back(e.name.c_str(), e.ints.data(), PluginFieldType::kINT32, static_cast<int32_t>(e.ints.size()));
    }
  }
  fc_.nbFields = static_cast<int32_t>(fields_.size());
  fc_.fields = fields_.data();
  return &fc_;
}

PluginCreatorBase::PluginCreatorBase(const char* name, std::vector<PluginField> fields)
    : name_(name), fields_(std::move(fields)) {
  fc_.nbFields = static_cast<int32_t>(fields_.size());
  fc_.fields = fields_.data();
}

CodecConfig read_codec(const FieldReader& r, const char* op, const std::string& prefix, bool with_qjl,
                       bool with_norm_correction) {
  const std::string bits_name = prefix + "bits";
  const std::string parts_name = prefix + "part_sizes";
  const std::vector<int> bits = r.get_ints(bits_name.c_str(), kMaxParts, kMinBits, kMaxBits);
  const std::vector<int> parts = r.get_ints(parts_name.c_str(), kMaxParts, 1, 1 << 20);
  if (bits.size() != parts.size())
    throw PluginError(std::string(op) + ": attributes '" + bits_name + "' (" + std::to_string(bits.size()) +
                      " entries) and '" + parts_name + "' (" + std::to_string(parts.size()) +
                      " entries) must have the same length");
  CodecConfig c;
  c.num_parts = static_cast<int>(bits.size());
  c.head_dim = 0;
  for (int p = 0; p < c.num_parts; ++p) {
    c.bits[p] = bits[p];
    c.part_sizes[p] = parts[p];
    c.head_dim += parts[p];
  }
  if (with_qjl) c.qjl = r.get_int((prefix + "qjl").c_str(), 0, 0, 1);
  if (with_norm_correction) c.norm_correction = r.get_int("norm_correction", 0, 0, 1);
  char err[256];
  if (!validate(c, err, sizeof(err)))
    throw PluginError(std::string(op) + ": " + prefix + "codec: " + err);
  return c;
}

void read_cache_fields(const FieldReader& r, const char* op, int* cache_mode, int* sink_tokens, int* recent_window) {
  *cache_mode = r.get_int("cache_mode", kConcat, kConcat, kBuffer);
  *sink_tokens = r.get_int("sink_tokens", 0, 0, kMaxTokens);
  *recent_window = r.get_int("recent_window", 0, 0, kMaxTokens);
  r.get_int("format_version", kFormatVersion, kFormatVersion, kFormatVersion);
  if (static_cast<int64_t>(*sink_tokens) + *recent_window > kMaxTokens)
    throw PluginError(std::string(op) + ": sink_tokens + recent_window is too large");
}

int read_hadamard_promise(const FieldReader& r, const char* op, const char* name, const CodecConfig& codec) {
  const int promise = r.get_int(name, 0, 0, 1);
  const int d = codec.head_dim;
  if (promise != 0 && (codec.num_parts != 1 || d <= 0 || (d & (d - 1)) != 0))
    throw PluginError(std::string(op) + ": attribute '" + name + "' = 1 promises a Sylvester-Hadamard rotation, " +
                      "which needs one part and D a power of two (got " + std::to_string(codec.num_parts) +
                      " parts, D = " + std::to_string(d) + ")");
  return promise;
}

void write_cache_fields(FieldWriter& w, int cache_mode, int sink_tokens, int recent_window) {
  w.add_int("cache_mode", cache_mode);
  w.add_int("sink_tokens", sink_tokens);
  w.add_int("recent_window", recent_window);
  w.add_int("format_version", kFormatVersion);
}

// --------------------------------------------------------------------------------------------- types
bool is_float_io(DataType t) { return t == DataType::kFLOAT || t == DataType::kHALF; }
bool is_byte_io(DataType t) { return t == DataType::kINT8 || t == DataType::kUINT8; }
kernels::DType kernel_dtype(DataType t) {
  return t == DataType::kHALF ? kernels::DType::kFloat16 : kernels::DType::kFloat32;
}

const char* dtype_name(DataType t) {
  switch (t) {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kINT8: return "int8";
    case DataType::kUINT8: return "uint8";
    case DataType::kINT32: return "int32";
    case DataType::kINT64: return "int64";
    case DataType::kBOOL: return "bool";
    case DataType::kBF16: return "bfloat16";
    default: return "other";
  }
}

// --------------------------------------------------------------------------------------------- shapes
int64_t volume(const nvinfer1::Dims& d) {
  if (d.nbDims < 0) return -1;
  int64_t v = 1;
  for (int i = 0; i < d.nbDims; ++i) {
    if (d.d[i] < 0) return -1;
    v *= d.d[i];
  }
  return v;
}

std::string dims_str(const nvinfer1::Dims& d) {
  std::ostringstream s;
  s << "[";
  for (int i = 0; i < d.nbDims; ++i) s << (i ? ", " : "") << d.d[i];
  s << "]";
  return s.str();
}

std::vector<nvinfer1::PluginTensorDesc> tensor_descs(const nvinfer1::DynamicPluginTensorDesc* in, int32_t count,
                                                     bool use_max) {
  std::vector<nvinfer1::PluginTensorDesc> descs;
  for (int i = 0; i < count; ++i) {
    descs.push_back(in[i].desc);
    if (use_max) descs.back().dims = in[i].max;
  }
  return descs;
}

void ShapeCheck::rank(const nvinfer1::Dims& d, int rank, const char* what) {
  if (d.nbDims != rank)
    fail(std::string(what) + " has shape " + dims_str(d) + ", expected rank " + std::to_string(rank));
}

void ShapeCheck::dim(const nvinfer1::Dims& d, int axis, int64_t expected, const char* what, const char* rule) {
  if (axis >= d.nbDims || d.d[axis] < 0 || expected < 0) return;
  if (d.d[axis] != expected)
    fail(std::string(what) + " has shape " + dims_str(d) + ": dim " + std::to_string(axis) + " must be " +
         std::to_string(expected) + " (" + rule + ")");
}

void ShapeCheck::dim_in(const nvinfer1::Dims& d, int axis, int64_t a, int64_t b, const char* what,
                        const char* rule) {
  if (axis >= d.nbDims || d.d[axis] < 0 || a < 0 || b < 0) return;
  if (d.d[axis] != a && d.d[axis] != b)
    fail(std::string(what) + " has shape " + dims_str(d) + ": dim " + std::to_string(axis) + " must be " +
         std::to_string(a) + " or " + std::to_string(b) + " (" + rule + ")");
}

void ShapeCheck::fail(const std::string& message) { errors_.push_back(message); }

int ShapeCheck::report(const char* phase) const {
  for (const auto& e : errors_) log_error(op_ + " " + phase + ": " + e);
  return errors_.empty() ? 0 : -1;
}

}  // namespace tq::trt
