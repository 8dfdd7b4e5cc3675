#include "ort/op_contract.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "ort/constant_inputs.h"

namespace tq::ort {
namespace {

// ---------------------------------------------------------------- attribute helpers

bool TryInt(const OrtKernelInfo* info, const char* name, int64_t* out) {
  OrtStatus* status = Ort::GetApi().KernelInfoGetAttribute_int64(info, name, out);
  if (status == nullptr) return true;
  Ort::GetApi().ReleaseStatus(status);
  return false;
}

bool TryFloat(const OrtKernelInfo* info, const char* name, float* out) {
  OrtStatus* status = Ort::GetApi().KernelInfoGetAttribute_float(info, name, out);
  if (status == nullptr) return true;
  Ort::GetApi().ReleaseStatus(status);
  return false;
}

bool TryInts(const OrtKernelInfo* info, const char* name, std::vector<int64_t>* out) {
  size_t size = 0;
  OrtStatus* status = Ort::GetApi().KernelInfoGetAttributeArray_int64(info, name, nullptr, &size);
  if (status != nullptr) {
    Ort::GetApi().ReleaseStatus(status);
    return false;
  }
  out->assign(size, 0);
  if (size == 0) return true;
  status = Ort::GetApi().KernelInfoGetAttributeArray_int64(info, name, out->data(), &size);
  if (status != nullptr) {
    Ort::GetApi().ReleaseStatus(status);
    return false;
  }
  return true;
}

std::string IntsString(const std::vector<int64_t>& v) { return ShapeString(v); }

// Reads an int attribute with a default and a [lo, hi] range.
Ort::Status IntAttr(const char* op, const OrtKernelInfo* info, const char* name, int64_t fallback, int64_t lo,
                    int64_t hi, int* out) {
  int64_t v = fallback;
  TryInt(info, name, &v);
  if (v < lo || v > hi) {
    std::ostringstream m;
    m << op << ": attribute '" << name << "'=" << v << " is out of range [" << lo << ", " << hi << "]";
    return Fail(m.str());
  }
  *out = static_cast<int>(v);
  return Ort::Status{nullptr};
}

// Reads and validates one codec's attributes (docs/format.md section 2). prefix is "" or "k_"/"v_".
Ort::Status CodecAttrs(const char* op, const OrtKernelInfo* info, const std::string& prefix, bool allow_qjl,
                       bool read_extras, CodecConfig* cfg) {
  std::vector<int64_t> bits, parts;
  const std::string bits_name = prefix + "bits", parts_name = prefix + "part_sizes";
  if (!TryInts(info, bits_name.c_str(), &bits))
    return Fail(std::string(op) + ": required attribute '" + bits_name + "' (ints) is missing");
  if (!TryInts(info, parts_name.c_str(), &parts))
    return Fail(std::string(op) + ": required attribute '" + parts_name + "' (ints) is missing");
  if (bits.size() != parts.size() || bits.empty() || bits.size() > static_cast<size_t>(kMaxParts)) {
    std::ostringstream m;
    m << op << ": attributes '" << bits_name << "'=" << IntsString(bits) << " and '" << parts_name
      << "'=" << IntsString(parts) << " must have the same length, 1.." << kMaxParts;
    return Fail(m.str());
  }
  int64_t head_dim = 0;
  for (size_t p = 0; p < bits.size(); ++p) {
    if (bits[p] < kMinBits || bits[p] > kMaxBits) {
      std::ostringstream m;
      m << op << ": attribute '" << bits_name << "'=" << IntsString(bits) << ": bits[" << p << "]=" << bits[p]
        << " is out of range [" << kMinBits << ", " << kMaxBits << "]";
      return Fail(m.str());
    }
    if (parts[p] <= 0 || parts[p] % kChannelMultiple != 0 || parts[p] > (1 << 16)) {
      std::ostringstream m;
      m << op << ": attribute '" << parts_name << "'=" << IntsString(parts) << ": part_sizes[" << p
        << "]=" << parts[p] << " must be a positive multiple of " << kChannelMultiple;
      return Fail(m.str());
    }
    cfg->bits[p] = static_cast<int>(bits[p]);
    cfg->part_sizes[p] = static_cast<int>(parts[p]);
    head_dim += parts[p];
  }
  cfg->num_parts = static_cast<int>(bits.size());
  cfg->head_dim = static_cast<int>(head_dim);
  const std::string qjl_name = prefix + "qjl";
  int qjl = 0;
  if (allow_qjl) {
    if (auto s = IntAttr(op, info, qjl_name.c_str(), 0, 0, 1, &qjl); !s.IsOK()) return s;
  }
  cfg->qjl = qjl;
  if (read_extras) {
    if (auto s = IntAttr(op, info, "norm_correction", 0, 0, 1, &cfg->norm_correction); !s.IsOK()) return s;
    if (auto s = IntAttr(op, info, "rotation_kind", kHadamard, 0, 1, &cfg->rotation_kind); !s.IsOK()) return s;
  }
  char err[160] = {0};
  if (!validate(*cfg, err, sizeof(err))) {
    std::ostringstream m;
    m << op << ": attributes '" << bits_name << "'=" << IntsString(bits) << ", '" << parts_name
      << "'=" << IntsString(parts) << (allow_qjl ? ", '" + qjl_name + "'=" + std::to_string(qjl) : "")
      << " are invalid: " << err;
    return Fail(m.str());
  }
  return Ort::Status{nullptr};
}

Ort::Status CacheAttrs(const char* op, const OrtKernelInfo* info, int* cache_mode, int* sink, int* recent) {
  int version = 0;
  if (auto s = IntAttr(op, info, "format_version", kFormatVersion, kFormatVersion, kFormatVersion, &version);
      !s.IsOK())
    return s;
  if (auto s = IntAttr(op, info, "cache_mode", kConcat, kConcat, kBuffer, cache_mode); !s.IsOK()) return s;
  if (auto s = IntAttr(op, info, "sink_tokens", 0, 0, 1 << 24, sink); !s.IsOK()) return s;
  if (auto s = IntAttr(op, info, "recent_window", 0, 0, 1 << 24, recent); !s.IsOK()) return s;
  return Ort::Status{nullptr};
}

// A constant-Hadamard promise attribute (docs/format.md 8.3): 0 or 1, and when 1 it must hold here, where ORT
// shows the op its constant inputs: input `rotation` a constant Sylvester-Hadamard rotation and, if `table` >= 0,
// that input a constant too. A promise that does not hold refuses the node (a TensorRT plugin would trust it).
Ort::Status PromiseAttr(const char* op, const OrtKernelInfo* info, const char* name, int rotation,
                        const char* rotation_name, int table, const char* table_name, int* out) {
  if (auto s = IntAttr(op, info, name, 0, 0, 1, out); !s.IsOK()) return s;
  if (*out == 0) return Ort::Status{nullptr};
  const std::string head = std::string(op) + ": attribute '" + name + "' = 1 promises that input " +
                           std::to_string(rotation) + " '" + rotation_name + "' is a constant Sylvester-Hadamard " +
                           "rotation (docs/format.md 8.3), but ";
  const char* why = "";
  if (!ConstantHadamardRotation(info, static_cast<size_t>(rotation), &why)) return Fail(head + why);
  if (table >= 0 && !ConstantInput(info, static_cast<size_t>(table)))
    return Fail(head + "input " + std::to_string(table) + " '" + table_name + "' is not a constant initializer");
  return Ort::Status{nullptr};
}

// ---------------------------------------------------------------- input helpers

std::string What(const char* op, const TensorArg& t) {
  std::ostringstream m;
  m << op << ": input '" << t.name << "' (" << t.index << ")";
  return m.str();
}

Ort::Status Require(const char* op, const TensorArg& t, const char* why) {
  if (t.present) return Ort::Status{nullptr};
  return Fail(What(op, t) + " is required " + why + " but absent");
}

Ort::Status CheckType(const char* op, const TensorArg& t, ONNXTensorElementDataType type) {
  if (t.type == type) return Ort::Status{nullptr};
  return Fail(What(op, t) + ": dtype " + DtypeName(t.type) + ", expected " + DtypeName(type));
}

// Checks rank and every expected dim (-1: any). layout names the dims, e.g. "[B, Hkv, S, D]".
Ort::Status CheckShape(const char* op, const TensorArg& t, const std::vector<int64_t>& expected,
                       const char* layout) {
  bool ok = t.shape.size() == expected.size();
  for (size_t i = 0; ok && i < expected.size(); ++i) ok = expected[i] < 0 || expected[i] == t.shape[i];
  if (ok) return Ort::Status{nullptr};
  std::ostringstream m;
  m << What(op, t) << ": shape " << ShapeString(t.shape) << ", expected " << layout << " = " << ShapeString(expected)
    << " (-1: any)";
  return Fail(m.str());
}

Ort::Status CheckRotation(const char* op, const TensorArg& t, int64_t kv_heads, int64_t head_dim,
                          int64_t* rotation_heads) {
  if (auto s = CheckType(op, t, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT); !s.IsOK()) return s;
  if (auto s = CheckShape(op, t, {-1, head_dim, head_dim}, "[Hr, D, D]"); !s.IsOK()) return s;
  if (t.shape[0] != 1 && t.shape[0] != kv_heads) {
    std::ostringstream m;
    m << What(op, t) << ": shape " << ShapeString(t.shape) << ": Hr=" << t.shape[0] << " must be 1 or Hkv=" << kv_heads;
    return Fail(m.str());
  }
  *rotation_heads = t.shape[0];
  return Ort::Status{nullptr};
}

Ort::Status CheckCodebook(const char* op, const TensorArg& t, const CodecConfig& cfg) {
  if (auto s = CheckType(op, t, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT); !s.IsOK()) return s;
  return CheckShape(op, t, {cfg.num_parts, kCodebookStride}, "[P, 256]");
}

Ort::Status CheckHeadDim(const char* op, const TensorArg& t, int64_t head_dim, const char* parts_name,
                         const CodecConfig& cfg) {
  if (head_dim == cfg.head_dim) return Ort::Status{nullptr};
  std::ostringstream m;
  m << What(op, t) << ": head dim D=" << head_dim << " (shape " << ShapeString(t.shape) << ") but sum('"
    << parts_name << "')=" << cfg.head_dim;
  return Fail(m.str());
}

Ort::Status CheckRowBytes(const char* op, const TensorArg& t, const CodecConfig& cfg, const char* prefix) {
  const int64_t row_bytes = row_layout(cfg).row_bytes;
  if (t.shape[3] == row_bytes) return Ort::Status{nullptr};
  std::ostringstream m;
  m << What(op, t) << ": last dim (row_bytes) is " << t.shape[3] << " (shape " << ShapeString(t.shape) << ") but '"
    << prefix << "bits'/'" << prefix << "part_sizes'/'" << prefix << "qjl' give row_bytes=" << row_bytes;
  return Fail(m.str());
}

// Buffer mode: tokens [Ns, T_b - Rw) are compressed; their rows must fit the capacity.
Ort::Status CheckCapacity(const char* op, const TensorArg& cache, const int64_t* past_lengths, int64_t batch,
                          int64_t new_tokens, int window, int64_t capacity) {
  for (int64_t b = 0; b < batch; ++b) {
    if (past_lengths[b] < 0) {
      std::ostringstream m;
      m << op << ": input 'past_lengths': past_lengths[" << b << "]=" << past_lengths[b] << " is negative";
      return Fail(m.str());
    }
    const int64_t total = past_lengths[b] + new_tokens;
    const int64_t rows = std::max<int64_t>(0, total - window);
    if (rows > capacity) {
      std::ostringstream m;
      m << op << ": buffer overflow: sequence " << b << " has past_lengths=" << past_lengths[b] << " + S=" << new_tokens
        << " tokens, needing " << rows << " compressed rows, but input '" << cache.name << "' has capacity "
        << capacity << " (shape " << ShapeString(cache.shape) << ")";
      return Fail(m.str());
    }
  }
  return Ort::Status{nullptr};
}

Ort::Status CheckPastLengths(const char* op, const TensorArg& t, int64_t batch) {
  if (auto s = Require(op, t, "when cache_mode=1 (buffer)"); !s.IsOK()) return s;
  if (auto s = CheckType(op, t, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64); !s.IsOK()) return s;
  return CheckShape(op, t, {batch}, "[B]");
}

}  // namespace

// ---------------------------------------------------------------- shared helpers

Ort::Status Fail(const std::string& message) { return Ort::Status(message.c_str(), ORT_INVALID_ARGUMENT); }

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::ostringstream m;
  m << "[";
  for (size_t i = 0; i < shape.size(); ++i) m << (i ? ", " : "") << shape[i];
  m << "]";
  return m.str();
}

const char* DtypeName(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED: return "undefined";
    default: return "other";
  }
}

Ort::Status ReadInput(const Ort::KernelContext& ctx, int index, const char* name, TensorArg* out) {
  out->name = name;
  out->index = index;
  out->present = false;
  if (static_cast<size_t>(index) >= ctx.GetInputCount()) return Ort::Status{nullptr};
  Ort::ConstValue value = ctx.GetInput(static_cast<size_t>(index));
  if (static_cast<const OrtValue*>(value) == nullptr) return Ort::Status{nullptr};
  if (!value.IsTensor()) return Fail(std::string("input '") + name + "' is not a tensor");
  auto info = value.GetTensorTypeAndShapeInfo();
  out->present = true;
  out->type = info.GetElementType();
  out->shape = info.GetShape();
  out->data = value.GetTensorRawData();
  return Ort::Status{nullptr};
}

// ---------------------------------------------------------------- TQQuantize

Ort::Status ReadQuantizeAttrs(const OrtKernelInfo* info, QuantizeAttrs* attrs) {
  const char* op = kQuantizeOp;
  if (auto s = CodecAttrs(op, info, "", /*allow_qjl=*/true, /*read_extras=*/true, &attrs->codec); !s.IsOK()) return s;
  if (auto s = PromiseAttr(op, info, "constant_hadamard", kQRotation, "rotation", kQCodebook, "codebook",
                           &attrs->constant_hadamard);
      !s.IsOK())
    return s;
  return CacheAttrs(op, info, &attrs->cache_mode, &attrs->sink_tokens, &attrs->recent_window);
}

Ort::Status CheckQuantizeInputs(const QuantizeAttrs& attrs, ONNXTensorElementDataType x_type,
                                const TensorArg* in, const int64_t* host_past_lengths, QuantizeShapes* sh) {
  const char* op = kQuantizeOp;
  const TensorArg& x = in[kQX];
  if (auto s = CheckType(op, x, x_type); !s.IsOK()) return s;
  if (auto s = CheckShape(op, x, {-1, -1, -1, -1}, "[B, Hkv, S, D]"); !s.IsOK()) return s;
  sh->batch = x.dim(0);
  sh->kv_heads = x.dim(1);
  sh->new_tokens = x.dim(2);
  sh->head_dim = x.dim(3);
  if (sh->batch < 1 || sh->kv_heads < 1 || sh->new_tokens < 1)
    return Fail(What(op, x) + ": shape " + ShapeString(x.shape) + ": B, Hkv and S must be >= 1");
  if (auto s = CheckHeadDim(op, x, sh->head_dim, "part_sizes", attrs.codec); !s.IsOK()) return s;

  const TensorArg& cache = in[kQPastCache];
  if (auto s = CheckType(op, cache, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8); !s.IsOK()) return s;
  if (auto s = CheckShape(op, cache, {sh->batch, sh->kv_heads, -1, -1}, "[B, Hkv, Tc, row_bytes]"); !s.IsOK())
    return s;
  if (auto s = CheckRowBytes(op, cache, attrs.codec, ""); !s.IsOK()) return s;
  sh->row_bytes = cache.dim(3);
  sh->past_rows = cache.dim(2);

  if (auto s = CheckRotation(op, in[kQRotation], sh->kv_heads, sh->head_dim, &sh->rotation_heads); !s.IsOK())
    return s;
  if (auto s = CheckCodebook(op, in[kQCodebook], attrs.codec); !s.IsOK()) return s;
  if (attrs.codec.qjl) {
    const TensorArg& sq = in[kQQjlMatrix];
    if (auto s = Require(op, sq, "when qjl=1"); !s.IsOK()) return s;
    if (auto s = CheckType(op, sq, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT); !s.IsOK()) return s;
    if (auto s = CheckShape(op, sq, {sh->head_dim, sh->head_dim}, "[D, D]"); !s.IsOK()) return s;
  }

  const int window = attrs.window();
  sh->past_window_rows = 0;
  if (window > 0) {
    const TensorArg& pw = in[kQPastWindow];
    if (auto s = Require(op, pw, "when sink_tokens + recent_window > 0"); !s.IsOK()) return s;
    if (auto s = CheckType(op, pw, x_type); !s.IsOK()) return s;
    const int64_t wd = attrs.cache_mode == kBuffer ? window : -1;
    if (auto s = CheckShape(op, pw, {sh->batch, sh->kv_heads, wd, sh->head_dim}, "[B, Hkv, Wd, D]"); !s.IsOK())
      return s;
    sh->past_window_rows = pw.dim(2);
    if (attrs.cache_mode == kConcat && sh->past_window_rows > window) {
      std::ostringstream m;
      m << What(op, pw) << ": Wd=" << sh->past_window_rows << " exceeds W = sink_tokens + recent_window = " << window;
      return Fail(m.str());
    }
  }

  if (attrs.cache_mode == kConcat) {
    // T_old = Tc + Wd, and Wd == min(T_old, W): a short window means nothing was compressed yet.
    if (window > 0 && sh->past_window_rows < window && sh->past_rows != 0) {
      std::ostringstream m;
      m << op << ": input 'past_cache' has Tc=" << sh->past_rows << " compressed rows but input 'past_window' holds "
        << "only Wd=" << sh->past_window_rows << " < W=" << window << " rows (concat mode needs Wd == min(T, W))";
      return Fail(m.str());
    }
    sh->past_total = sh->past_rows + sh->past_window_rows;
    sh->present_total = sh->past_total + sh->new_tokens;
    sh->present_window_rows = window_rows(sh->present_total, attrs.sink_tokens, attrs.recent_window);
    sh->present_rows = sh->present_total - sh->present_window_rows;
  } else {
    const TensorArg& lengths = in[kQPastLengths];
    if (auto s = CheckPastLengths(op, lengths, sh->batch); !s.IsOK()) return s;
    if (host_past_lengths != nullptr) {
      if (auto s = CheckCapacity(op, cache, host_past_lengths, sh->batch, sh->new_tokens, window, sh->past_rows);
          !s.IsOK())
        return s;
    }
    sh->present_rows = sh->past_rows;
    sh->present_window_rows = window;
  }
  return Ort::Status{nullptr};
}

Ort::Status ReadQuantizeNode(const Ort::KernelContext& ctx, const QuantizeAttrs& attrs,
                             ONNXTensorElementDataType x_type, TensorArg* in, const int64_t** host_past_lengths,
                             QuantizeShapes* sh) {
  for (int i = 0; i < kQNumInputs; ++i) {
    if (auto s = ReadInput(ctx, i, kQuantizeInputNames[i], &in[i]); !s.IsOK()) return s;
  }
  const TensorArg& lengths = in[kQPastLengths];
  *host_past_lengths =
      attrs.cache_mode == kBuffer && lengths.present ? static_cast<const int64_t*>(lengths.data) : nullptr;
  if (auto s = CheckQuantizeInputs(attrs, x_type, in, *host_past_lengths, sh); !s.IsOK()) return s;
  if (attrs.window() > 0 && ctx.GetOutputCount() < 2)
    return Fail(std::string(kQuantizeOp) +
                ": output 'present_window' (1) is required when sink_tokens + recent_window > 0");
  return Ort::Status{nullptr};
}

// ---------------------------------------------------------------- TQAttention

Ort::Status ReadAttentionAttrs(const OrtKernelInfo* info, AttentionAttrs* attrs) {
  const char* op = kAttentionOp;
  if (auto s = CodecAttrs(op, info, "k_", /*allow_qjl=*/true, /*read_extras=*/false, &attrs->k_codec); !s.IsOK())
    return s;
  if (auto s = CodecAttrs(op, info, "v_", /*allow_qjl=*/false, /*read_extras=*/false, &attrs->v_codec); !s.IsOK())
    return s;
  if (attrs->k_codec.head_dim != attrs->v_codec.head_dim) {
    std::ostringstream m;
    m << op << ": sum('k_part_sizes')=" << attrs->k_codec.head_dim << " != sum('v_part_sizes')="
      << attrs->v_codec.head_dim << " (K and V share the head dim D)";
    return Fail(m.str());
  }
  if (!TryFloat(info, "scale", &attrs->scale))
    return Fail(std::string(op) + ": required attribute 'scale' (float) is missing");
  if (!(attrs->scale > 0.0f) || !std::isfinite(attrs->scale))
    return Fail(std::string(op) + ": attribute 'scale'=" + std::to_string(attrs->scale) + " must be finite and > 0");
  attrs->softcap = 0.0f;
  TryFloat(info, "softcap", &attrs->softcap);
  if (!(attrs->softcap >= 0.0f) || !std::isfinite(attrs->softcap))
    return Fail(std::string(op) + ": attribute 'softcap'=" + std::to_string(attrs->softcap) +
                " must be finite and >= 0 (0 = off)");
  if (auto s = PromiseAttr(op, info, "k_constant_hadamard", kAKRotation, "k_rotation", -1, "",
                           &attrs->k_constant_hadamard);
      !s.IsOK())
    return s;
  if (auto s = PromiseAttr(op, info, "v_constant_hadamard", kAVRotation, "v_rotation", -1, "",
                           &attrs->v_constant_hadamard);
      !s.IsOK())
    return s;
  return CacheAttrs(op, info, &attrs->cache_mode, &attrs->sink_tokens, &attrs->recent_window);
}

Ort::Status CheckAttentionInputs(const AttentionAttrs& attrs, ONNXTensorElementDataType q_type,
                                 const TensorArg* in, const int64_t* host_past_lengths, AttentionShapes* sh) {
  const char* op = kAttentionOp;
  const TensorArg& q = in[kAQ];
  if (auto s = CheckType(op, q, q_type); !s.IsOK()) return s;
  if (auto s = CheckShape(op, q, {-1, -1, -1, -1}, "[B, Hq, S, D]"); !s.IsOK()) return s;
  sh->batch = q.dim(0);
  sh->q_heads = q.dim(1);
  sh->new_tokens = q.dim(2);
  sh->head_dim = q.dim(3);
  if (sh->batch < 1 || sh->q_heads < 1 || sh->new_tokens < 1)
    return Fail(What(op, q) + ": shape " + ShapeString(q.shape) + ": B, Hq and S must be >= 1");
  if (auto s = CheckHeadDim(op, q, sh->head_dim, "k_part_sizes", attrs.k_codec); !s.IsOK()) return s;

  const TensorArg& kc = in[kAKCache];
  const TensorArg& vc = in[kAVCache];
  if (auto s = CheckType(op, kc, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8); !s.IsOK()) return s;
  if (auto s = CheckShape(op, kc, {sh->batch, -1, -1, -1}, "[B, Hkv, Tc, k_row_bytes]"); !s.IsOK()) return s;
  sh->kv_heads = kc.dim(1);
  sh->cache_rows = kc.dim(2);
  if (sh->kv_heads < 1 || sh->q_heads % sh->kv_heads != 0) {
    std::ostringstream m;
    m << op << ": query heads Hq=" << sh->q_heads << " (input 'q' shape " << ShapeString(q.shape)
      << ") is not a multiple of kv heads Hkv=" << sh->kv_heads << " (input 'k_cache' shape " << ShapeString(kc.shape)
      << ")";
    return Fail(m.str());
  }
  if (auto s = CheckRowBytes(op, kc, attrs.k_codec, "k_"); !s.IsOK()) return s;
  if (auto s = CheckType(op, vc, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8); !s.IsOK()) return s;
  if (auto s = CheckShape(op, vc, {sh->batch, sh->kv_heads, sh->cache_rows, -1}, "[B, Hkv, Tc, v_row_bytes]");
      !s.IsOK())
    return s;
  if (auto s = CheckRowBytes(op, vc, attrs.v_codec, "v_"); !s.IsOK()) return s;
  sh->k_row_bytes = kc.dim(3);
  sh->v_row_bytes = vc.dim(3);

  const TensorArg& mask = in[kAMask];
  if (mask.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT && mask.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 &&
      mask.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL)
    return Fail(What(op, mask) + ": dtype " + DtypeName(mask.type) + ", expected float32, float16 or bool");
  if (auto s = CheckShape(op, mask, {-1, -1, sh->new_tokens, -1}, "[Bm, Hm, S, Tm]"); !s.IsOK()) return s;
  if ((mask.dim(0) != 1 && mask.dim(0) != sh->batch) || (mask.dim(1) != 1 && mask.dim(1) != sh->q_heads)) {
    std::ostringstream m;
    m << What(op, mask) << ": shape " << ShapeString(mask.shape) << ": Bm must be 1 or B=" << sh->batch
      << " and Hm must be 1 or Hq=" << sh->q_heads;
    return Fail(m.str());
  }
  sh->mask_type = mask.type;
  sh->mask_batch = mask.dim(0);
  sh->mask_heads = mask.dim(1);
  sh->mask_tokens = mask.dim(3);

  if (auto s = CheckRotation(op, in[kAKRotation], sh->kv_heads, sh->head_dim, &sh->k_rotation_heads); !s.IsOK())
    return s;
  if (auto s = CheckCodebook(op, in[kAKCodebook], attrs.k_codec); !s.IsOK()) return s;
  if (auto s = CheckRotation(op, in[kAVRotation], sh->kv_heads, sh->head_dim, &sh->v_rotation_heads); !s.IsOK())
    return s;
  if (auto s = CheckCodebook(op, in[kAVCodebook], attrs.v_codec); !s.IsOK()) return s;
  if (attrs.k_codec.qjl) {
    const TensorArg& sq = in[kAKQjlMatrix];
    if (auto s = Require(op, sq, "when k_qjl=1"); !s.IsOK()) return s;
    if (auto s = CheckType(op, sq, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT); !s.IsOK()) return s;
    if (auto s = CheckShape(op, sq, {sh->head_dim, sh->head_dim}, "[D, D]"); !s.IsOK()) return s;
  }

  const int window = attrs.window();
  sh->window_rows = 0;
  if (window > 0) {
    for (int idx : {kAKWindow, kAVWindow}) {
      const TensorArg& w = in[idx];
      if (auto s = Require(op, w, "when sink_tokens + recent_window > 0"); !s.IsOK()) return s;
      if (auto s = CheckType(op, w, q_type); !s.IsOK()) return s;
      const int64_t wd = idx == kAKWindow ? -1 : in[kAKWindow].dim(2);
      if (auto s = CheckShape(op, w, {sh->batch, sh->kv_heads, wd, sh->head_dim}, "[B, Hkv, Wd, D]"); !s.IsOK())
        return s;
    }
    sh->window_rows = in[kAKWindow].dim(2);
  }

  if (attrs.cache_mode == kConcat) {
    const int64_t total = sh->mask_tokens;
    const int64_t expected_wd = window_rows(total, attrs.sink_tokens, attrs.recent_window);
    if (sh->cache_rows + sh->window_rows != total || sh->window_rows != expected_wd) {
      std::ostringstream m;
      m << op << ": concat mode needs Tc + Wd == T and Wd == min(T, W): input 'mask' gives T=Tm=" << total
        << ", input 'k_cache' Tc=" << sh->cache_rows << ", window Wd=" << sh->window_rows << " (expected "
        << expected_wd << " with W=" << window << ")";
      return Fail(m.str());
    }
    if (sh->new_tokens > total) {
      std::ostringstream m;
      m << op << ": S=" << sh->new_tokens << " new tokens exceed the T=" << total << " tokens of the sequence";
      return Fail(m.str());
    }
  } else {
    const TensorArg& lengths = in[kAPastLengths];
    if (auto s = CheckPastLengths(op, lengths, sh->batch); !s.IsOK()) return s;
    if (window > 0 && sh->window_rows != window) {
      std::ostringstream m;
      m << op << ": buffer mode needs windows of Wd = W = " << window << " rows, got " << sh->window_rows;
      return Fail(m.str());
    }
    if (host_past_lengths != nullptr) {
      if (auto s = CheckCapacity(op, kc, host_past_lengths, sh->batch, sh->new_tokens, window, sh->cache_rows);
          !s.IsOK())
        return s;
      for (int64_t b = 0; b < sh->batch; ++b) {
        const int64_t total = host_past_lengths[b] + sh->new_tokens;
        if (total > sh->mask_tokens) {
          std::ostringstream m;
          m << op << ": input 'mask' shape " << ShapeString(mask.shape) << ": Tm=" << sh->mask_tokens
            << " < T_b=" << total << " of sequence " << b << " (past_lengths=" << host_past_lengths[b]
            << " + S=" << sh->new_tokens << ")";
          return Fail(m.str());
        }
      }
    }
  }
  return Ort::Status{nullptr};
}

Ort::Status ReadAttentionNode(const Ort::KernelContext& ctx, const AttentionAttrs& attrs,
                              ONNXTensorElementDataType q_type, TensorArg* in, const int64_t** host_past_lengths,
                              AttentionShapes* sh) {
  for (int i = 0; i < kANumInputs; ++i) {
    if (auto s = ReadInput(ctx, i, kAttentionInputNames[i], &in[i]); !s.IsOK()) return s;
  }
  const TensorArg& lengths = in[kAPastLengths];
  *host_past_lengths =
      attrs.cache_mode == kBuffer && lengths.present ? static_cast<const int64_t*>(lengths.data) : nullptr;
  return CheckAttentionInputs(attrs, q_type, in, *host_past_lengths, sh);
}

}  // namespace tq::ort
