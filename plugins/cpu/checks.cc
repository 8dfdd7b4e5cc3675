#include "cpu/checks.h"

#include <cstdlib>
#include <sstream>
#include <thread>

namespace tq::cpu {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBool: return "bool";
    case DType::kUInt8: return "uint8";
    case DType::kInt64: return "int64";
  }
  return "unknown";
}

bool TensorRef::present() const {
  if (data == nullptr || shape.empty()) return false;
  for (int64_t d : shape)
    if (d <= 0) return false;
  return true;
}

int64_t TensorRef::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t MutableTensorRef::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

namespace {
std::string expected_str(const std::vector<int64_t>& e) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < e.size(); ++i) {
    s << (i ? ", " : "");
    if (e[i] < 0) s << "*"; else s << e[i];
  }
  s << "]";
  return s.str();
}

bool shape_matches(const std::vector<int64_t>& shape, const std::vector<int64_t>& expected) {
  if (shape.size() != expected.size()) return false;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) return false;
    if (expected[i] >= 0 && shape[i] != expected[i]) return false;
  }
  return true;
}
}  // namespace

Status check_tensor(const char* op, const char* name, const TensorRef& t, std::initializer_list<DType> dtypes,
                    const std::vector<int64_t>& expected) {
  bool dtype_ok = false;
  std::string allowed;
  for (DType d : dtypes) {
    dtype_ok = dtype_ok || d == t.dtype;
    allowed += (allowed.empty() ? "" : " or ") + std::string(dtype_name(d));
  }
  if (!dtype_ok)
    return Status::Error(std::string(op) + ": input '" + name + "' has dtype " + dtype_name(t.dtype) +
                         ", expected " + allowed);
  if (!shape_matches(t.shape, expected))
    return Status::Error(std::string(op) + ": input '" + name + "' has shape " + shape_str(t.shape) +
                         ", expected " + expected_str(expected));
  if (t.data == nullptr && t.numel() > 0)
    return Status::Error(std::string(op) + ": input '" + name + "' has shape " + shape_str(t.shape) +
                         " but no data");
  return Status::Ok();
}

Status check_output(const char* op, const char* name, const MutableTensorRef& t, DType dtype,
                    const std::vector<int64_t>& expected) {
  if (t.dtype != dtype)
    return Status::Error(std::string(op) + ": output '" + name + "' has dtype " + dtype_name(t.dtype) +
                         ", expected " + dtype_name(dtype));
  if (!shape_matches(t.shape, expected))
    return Status::Error(std::string(op) + ": output '" + name + "' has shape " + shape_str(t.shape) +
                         ", expected " + expected_str(expected));
  if (t.data == nullptr && t.numel() > 0)
    return Status::Error(std::string(op) + ": output '" + name + "' has shape " + shape_str(t.shape) +
                         " but no buffer");
  return Status::Ok();
}

Status check_codec(const char* op, const char* prefix, const CodecConfig& cfg) {
  char err[256];
  if (!validate(cfg, err, sizeof(err))) return Status::Error(std::string(op) + ": " + prefix + err);
  return Status::Ok();
}

Status check_cache_attrs(const char* op, const CacheAttrs& a, int format_version) {
  auto bad = [&](const char* what, int64_t v, const char* rule) {
    return Status::Error(std::string(op) + ": attribute " + what + "=" + std::to_string(v) + ": " + rule);
  };
  if (format_version != kFormatVersion) return bad("format_version", format_version, "must be 1");
  if (a.cache_mode != kConcat && a.cache_mode != kBuffer)
    return bad("cache_mode", a.cache_mode, "must be 0 (concat) or 1 (buffer)");
  if (a.sink_tokens < 0) return bad("sink_tokens", a.sink_tokens, "must be >= 0");
  if (a.recent_window < 0) return bad("recent_window", a.recent_window, "must be >= 0");
  return Status::Ok();
}

bool partially_overlaps(const void* a, int64_t na, const void* b, int64_t nb) {
  if (a == nullptr || b == nullptr || na <= 0 || nb <= 0) return false;
  const auto pa = reinterpret_cast<uintptr_t>(a);
  const auto pb = reinterpret_cast<uintptr_t>(b);
  if (pa == pb && na == nb) return false;
  return pa < pb + static_cast<uintptr_t>(nb) && pb < pa + static_cast<uintptr_t>(na);
}

int default_num_threads() {
  if (const char* env = std::getenv("TQEXPORT_CPU_THREADS")) {
    const int n = std::atoi(env);
    if (n >= 1) return n;
  }
  const unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

int64_t concat_compressed_rows(int64_t total, int sink_tokens, int recent_window) {
  return total - window_rows(total, sink_tokens, recent_window);
}

int64_t concat_window_rows(int64_t total, int sink_tokens, int recent_window) {
  return window_rows(total, sink_tokens, recent_window);
}

}  // namespace tq::cpu
