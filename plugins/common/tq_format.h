// C++ mirror of docs/format.md (format_version 1): constants, codec parameters and the row layout.
// Header-only, host and device. No ORT, TensorRT or CUDA runtime types. tests/codec/test_format_spec.py checks
// these numbers against the spec and the NumPy reference codec.
#pragma once

#include <cstdint>
#include <cstdio>

#if defined(__CUDACC__)
#define TQ_HD __host__ __device__
#else
#define TQ_HD
#endif

namespace tq {

constexpr int kFormatVersion = 1;
constexpr int kMaxParts = 4;
constexpr int kMinBits = 1;
constexpr int kMaxBits = 8;
constexpr int kCodebookStride = 256;  // codebook tensor is float32 [P, 256]
constexpr int kChannelMultiple = 16;  // every part size and D are multiples of this
constexpr const char* kDomain = "tqexport";
constexpr const char* kQuantizeOp = "TQQuantize";
constexpr const char* kAttentionOp = "TQAttention";
constexpr const char* kPluginVersion = "1";
constexpr const char* kPluginNamespace = "tqexport";

enum CacheMode : int { kConcat = 0, kBuffer = 1 };
enum RotationKind : int { kDense = 0, kHadamard = 1 };

// Codec parameters of one cache (K or V of one layer), section 2 of docs/format.md.
struct CodecConfig {
  int head_dim = 0;
  int num_parts = 0;
  int part_sizes[kMaxParts] = {0, 0, 0, 0};
  int bits[kMaxParts] = {0, 0, 0, 0};
  int qjl = 0;
  int norm_correction = 0;
  int rotation_kind = kHadamard;
};

// Byte offsets inside one compressed row, section 4.
struct RowLayout {
  int row_bytes = 0;
  int mse_bits[kMaxParts] = {0, 0, 0, 0};
  int part_offset[kMaxParts] = {0, 0, 0, 0};  // o_p: first rotated coordinate of part p
  int code_offset[kMaxParts] = {0, 0, 0, 0};  // first byte of part p's segments
  int qjl_offset = -1;                        // section B, -1 without QJL
  int norm_offset = 0;                        // section C: P float16
  int rnorm_offset = -1;                      // section D: P float16, -1 without QJL
};

// Segment widths of an m-bit code, widest first (section 4). Returns the count (1..3).
TQ_HD inline int segment_widths(int m, int out[3]) {
  int n = 0;
  for (int w = 8; w >= 1; w >>= 1) {
    if (m & w) out[n++] = w;
  }
  return n;
}

// Validates cfg; on failure writes a message into err (if non-null) and returns false.
inline bool validate(const CodecConfig& cfg, char* err, int err_len) {
  auto fail = [&](const char* what, int value, const char* rule) {
    if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "%s=%d: %s", what, value, rule);
    return false;
  };
  if (cfg.num_parts < 1 || cfg.num_parts > kMaxParts)
    return fail("number of parts", cfg.num_parts, "must be 1..4 (len(bits) == len(part_sizes))");
  if (cfg.qjl != 0 && cfg.qjl != 1) return fail("qjl", cfg.qjl, "must be 0 or 1");
  if (cfg.norm_correction != 0 && cfg.norm_correction != 1)
    return fail("norm_correction", cfg.norm_correction, "must be 0 or 1");
  if (cfg.head_dim <= 0 || cfg.head_dim % kChannelMultiple != 0)
    return fail("head_dim", cfg.head_dim, "must be a positive multiple of 16");
  int sum = 0;
  for (int p = 0; p < cfg.num_parts; ++p) {
    if (cfg.part_sizes[p] <= 0 || cfg.part_sizes[p] % kChannelMultiple != 0)
      return fail("part_sizes[p]", cfg.part_sizes[p], "must be a positive multiple of 16");
    if (cfg.bits[p] < kMinBits || cfg.bits[p] > kMaxBits) return fail("bits[p]", cfg.bits[p], "must be in 1..8");
    if (cfg.bits[p] - cfg.qjl < 1) return fail("bits[p]", cfg.bits[p], "must be >= 2 when qjl=1");
    sum += cfg.part_sizes[p];
  }
  if (sum != cfg.head_dim) return fail("sum(part_sizes)", sum, "must equal the head dim D");
  return true;
}

// Fills the row layout of a valid cfg (call validate first).
TQ_HD inline RowLayout row_layout(const CodecConfig& cfg) {
  RowLayout l;
  int off = 0;
  int coord = 0;
  for (int p = 0; p < cfg.num_parts; ++p) {
    l.mse_bits[p] = cfg.bits[p] - cfg.qjl;
    l.part_offset[p] = coord;
    l.code_offset[p] = off;
    off += l.mse_bits[p] * cfg.part_sizes[p] / 8;
    coord += cfg.part_sizes[p];
  }
  if (cfg.qjl) {
    l.qjl_offset = off;
    off += cfg.head_dim / 8;
  }
  l.norm_offset = off;
  off += 2 * cfg.num_parts;
  if (cfg.qjl) {
    l.rnorm_offset = off;
    off += 2 * cfg.num_parts;
  }
  l.row_bytes = off;
  return l;
}

// Where logical token t of a sequence with T tokens lives (section 7).
enum TokenHome : int { kInWindow = 0, kInCompressed = 1 };
struct TokenPlace {
  int home;
  int64_t index;  // window slot or compressed row
};
TQ_HD inline TokenPlace token_place(int64_t t, int64_t total, int sink_tokens, int recent_window) {
  if (t < sink_tokens) return {kInWindow, t};
  if (recent_window > 0 && t >= total - recent_window)
    return {kInWindow, sink_tokens + (t - sink_tokens) % recent_window};
  return {kInCompressed, t - sink_tokens};
}

// Number of window rows stored for a sequence of T tokens (concat mode: Wd = min(T, W)).
TQ_HD inline int64_t window_rows(int64_t total, int sink_tokens, int recent_window) {
  const int64_t w = static_cast<int64_t>(sink_tokens) + recent_window;
  return total < w ? total : w;
}

}  // namespace tq
