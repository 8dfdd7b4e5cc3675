// TQQuantize on the CPU: docs/format.md sections 4 (row layout), 5 (quantize arithmetic, bit-exact contract) and
// 7 (concat / buffer placement, sinks and the recent window).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cpu/checks.h"
#include "cpu/float16.h"
#include "cpu/threadpool.h"
#include "cpu/tq_cpu.h"

namespace tq::cpu {
namespace {

constexpr const char* kOp = "TQQuantize";

// Everything the per-vector arithmetic needs, resolved once per call.
struct Quantizer {
  CodecConfig cfg;
  RowLayout layout;
  int64_t dim = 0;
  const float* rotation = nullptr;  // [Hr, D, D]
  int64_t rotation_heads = 1;
  const float* codebook = nullptr;  // [P, 256]
  const float* qjl = nullptr;       // [D, D] or null
  std::vector<double> boundaries[kMaxParts];  // beta_1 .. beta_{2^m - 1}, float64 from the float32 centroids

  void init() {
    for (int p = 0; p < cfg.num_parts; ++p) {
      const int levels = 1 << layout.mse_bits[p];
      boundaries[p].resize(levels - 1);
      const float* c = codebook + p * kCodebookStride;
      for (int j = 1; j < levels; ++j)
        boundaries[p][j - 1] = (static_cast<double>(c[j - 1]) + static_cast<double>(c[j])) / 2.0;
    }
  }

  // x: float64 [D] in the original domain of kv head h; writes one row of layout.row_bytes bytes.
  // scratch: 3 * D doubles.
  void encode(const double* x, int64_t head, uint8_t* row, double* scratch) const {
    const int64_t D = dim;
    double* y = scratch;
    double* r = scratch + D;
    double* z = scratch + 2 * D;
    const float* R = rotation + (rotation_heads == 1 ? 0 : head) * D * D;
    for (int64_t i = 0; i < D; ++i) {  // step 1: y = R x in float64
      const float* Ri = R + i * D;
      double acc = 0.0;
      for (int64_t j = 0; j < D; ++j) acc += static_cast<double>(Ri[j]) * x[j];
      y[i] = acc;
    }
    std::memset(row, 0, static_cast<size_t>(layout.row_bytes));
    uint16_t* norms = reinterpret_cast<uint16_t*>(row + layout.norm_offset);  // row_bytes is even, offsets even
    for (int p = 0; p < cfg.num_parts; ++p) {
      const int64_t o = layout.part_offset[p];
      const int64_t d = cfg.part_sizes[p];
      const int m = layout.mse_bits[p];
      const float* c = codebook + p * kCodebookStride;
      const std::vector<double>& beta = boundaries[p];
      double sq = 0.0;  // step 2
      for (int64_t i = 0; i < d; ++i) sq += y[o + i] * y[o + i];
      const double n = std::sqrt(sq);
      int widths[3];
      const int nseg = segment_widths(m, widths);
      double csq = 0.0;
      for (int64_t i = 0; i < d; ++i) {
        const double u = n == 0.0 ? 0.0 : y[o + i] / n;
        const int code = static_cast<int>(std::lower_bound(beta.begin(), beta.end(), u) - beta.begin());
        const double ci = static_cast<double>(c[code]);
        csq += ci * ci;
        r[o + i] = static_cast<double>(code);  // keep the code until the norms are known
        uint8_t* seg = row + layout.code_offset[p];
        int shift = 0;
        for (int s = 0; s < nseg; ++s) {  // section 4 segments, widest first
          const int w = widths[s];
          const uint32_t field = (static_cast<uint32_t>(code) >> shift) & ((1u << w) - 1u);
          const int64_t bit = i * w;
          seg[bit >> 3] |= static_cast<uint8_t>(field << (bit & 7));
          seg += d * w / 8;
          shift += w;
        }
      }
      double gamma = n;  // step 3
      if (cfg.norm_correction) gamma = n == 0.0 ? 0.0 : n / std::sqrt(csq);
      const uint16_t g16 = double_to_half_saturate(gamma);
      std::memcpy(norms + p, &g16, 2);
      if (cfg.qjl) {  // step 4, residual against the float16 norm
        const double g = static_cast<double>(half_to_float(g16));
        for (int64_t i = 0; i < d; ++i) {
          const int code = static_cast<int>(r[o + i]);
          r[o + i] = y[o + i] - g * static_cast<double>(c[code]);
        }
      }
    }
    if (!cfg.qjl) return;
    uint16_t* rnorms = reinterpret_cast<uint16_t*>(row + layout.rnorm_offset);
    for (int p = 0; p < cfg.num_parts; ++p) {
      const int64_t o = layout.part_offset[p];
      double sq = 0.0;
      for (int64_t i = 0; i < cfg.part_sizes[p]; ++i) sq += r[o + i] * r[o + i];
      const uint16_t rho = double_to_half_saturate(std::sqrt(sq));
      std::memcpy(rnorms + p, &rho, 2);
    }
    uint8_t* signs = row + layout.qjl_offset;
    for (int64_t i = 0; i < D; ++i) {
      const float* Si = qjl + i * D;
      double acc = 0.0;
      for (int64_t j = 0; j < D; ++j) acc += static_cast<double>(Si[j]) * r[j];
      z[i] = acc;
      if (acc > 0.0) signs[i >> 3] |= static_cast<uint8_t>(1u << (i & 7));
    }
  }
};

bool is_present_or_empty(const TensorRef& t) { return !t.shape.empty(); }

struct Plan {
  int64_t B = 0, H = 0, S = 0, D = 0, R = 0;  // R = row_bytes
  int64_t tc_past = 0, tc_present = 0;
  int64_t wd_past = 0, wd_present = 0;
  int64_t window = 0;  // W
};

Status plan_quantize(const QuantizeArgs& a, CodecConfig* cfg_out, Plan* plan) {
  Status st = check_cache_attrs(kOp, a.cache, a.format_version);
  if (!st.ok) return st;
  if (a.x.shape.size() != 4)
    return Status::Error(std::string(kOp) + ": input 'x' has shape " + shape_str(a.x.shape) +
                         ", expected [B, Hkv, S, D]");
  Plan p;
  p.B = a.x.shape[0];
  p.H = a.x.shape[1];
  p.S = a.x.shape[2];
  p.D = a.x.shape[3];
  st = check_tensor(kOp, "x", a.x, {DType::kFloat32, DType::kFloat16}, {-1, -1, -1, -1});
  if (!st.ok) return st;
  CodecConfig cfg = a.codec;
  if (cfg.head_dim != 0 && cfg.head_dim != p.D)
    return Status::Error(std::string(kOp) + ": codec head_dim=" + std::to_string(cfg.head_dim) +
                         " but input 'x' has D=" + std::to_string(p.D));
  cfg.head_dim = static_cast<int>(p.D);
  st = check_codec(kOp, "", cfg);
  if (!st.ok) return st;
  const RowLayout layout = row_layout(cfg);
  p.R = layout.row_bytes;
  st = check_tensor(kOp, "past_cache", a.past_cache, {DType::kUInt8}, {p.B, p.H, -1, p.R});
  if (!st.ok) return st;
  p.tc_past = a.past_cache.shape[2];
  if (a.rotation.shape.size() == 3 && a.rotation.shape[0] != 1 && a.rotation.shape[0] != p.H)
    return Status::Error(std::string(kOp) + ": input 'rotation' has Hr=" + std::to_string(a.rotation.shape[0]) +
                         ", expected 1 or Hkv=" + std::to_string(p.H));
  st = check_tensor(kOp, "rotation", a.rotation, {DType::kFloat32}, {-1, p.D, p.D});
  if (!st.ok) return st;
  st = check_tensor(kOp, "codebook", a.codebook, {DType::kFloat32}, {cfg.num_parts, kCodebookStride});
  if (!st.ok) return st;
  if (cfg.qjl) {
    if (!a.qjl_matrix.present())
      return Status::Error(std::string(kOp) + ": input 'qjl_matrix' is required when qjl=1");
    st = check_tensor(kOp, "qjl_matrix", a.qjl_matrix, {DType::kFloat32}, {p.D, p.D});
    if (!st.ok) return st;
  }
  const int Ns = a.cache.sink_tokens;
  const int Rw = a.cache.recent_window;
  p.window = static_cast<int64_t>(Ns) + Rw;
  if (p.window > 0) {
    if (!is_present_or_empty(a.past_window))
      return Status::Error(std::string(kOp) + ": input 'past_window' is required when sink_tokens + recent_window=" +
                           std::to_string(p.window) + " > 0");
    st = check_tensor(kOp, "past_window", a.past_window, {a.x.dtype}, {p.B, p.H, -1, p.D});
    if (!st.ok) return st;
    p.wd_past = a.past_window.shape[2];
  }
  if (a.cache.cache_mode == kConcat) {
    if (p.wd_past > p.window || (p.wd_past < p.window && p.tc_past != 0))
      return Status::Error(std::string(kOp) + ": past_window has Wd=" + std::to_string(p.wd_past) +
                           " rows and past_cache Tc=" + std::to_string(p.tc_past) +
                           " rows; concat mode needs Wd == min(T, W) with W=" + std::to_string(p.window));
    const int64_t t_new = p.tc_past + p.wd_past + p.S;
    p.tc_present = concat_compressed_rows(t_new, Ns, Rw);
    p.wd_present = concat_window_rows(t_new, Ns, Rw);
  } else {
    if (p.window > 0 && p.wd_past != p.window)
      return Status::Error(std::string(kOp) + ": past_window has Wd=" + std::to_string(p.wd_past) +
                           " rows; buffer mode needs Wd == W=" + std::to_string(p.window));
    if (!a.past_lengths.present())
      return Status::Error(std::string(kOp) + ": input 'past_lengths' is required when cache_mode=1 (buffer)");
    st = check_tensor(kOp, "past_lengths", a.past_lengths, {DType::kInt64}, {p.B});
    if (!st.ok) return st;
    const auto* lengths = static_cast<const int64_t*>(a.past_lengths.data);
    for (int64_t b = 0; b < p.B; ++b) {
      const int64_t L = lengths[b];
      if (L < 0)
        return Status::Error(std::string(kOp) + ": past_lengths[" + std::to_string(b) + "]=" + std::to_string(L) +
                             " is negative");
      const int64_t hi = L + p.S - Rw;  // tokens [lo, hi) get compressed
      const int64_t lo = std::max<int64_t>(Ns, L - Rw);
      if (hi > lo && hi - Ns > p.tc_past)
        return Status::Error(std::string(kOp) + ": buffer overflow: sequence " + std::to_string(b) +
                             " with past_lengths=" + std::to_string(L) + " and S=" + std::to_string(p.S) +
                             " needs compressed row " + std::to_string(hi - Ns - 1) + " but the capacity is " +
                             std::to_string(p.tc_past) + " rows");
    }
    p.tc_present = p.tc_past;
    p.wd_present = p.wd_past;
  }
  *cfg_out = cfg;
  *plan = p;
  return Status::Ok();
}

void load_vector(const void* base, DType dtype, int64_t index, int64_t D, double* out) {
  if (dtype == DType::kFloat32) {
    const float* v = static_cast<const float*>(base) + index * D;
    for (int64_t i = 0; i < D; ++i) out[i] = static_cast<double>(v[i]);
  } else {
    const uint16_t* v = static_cast<const uint16_t*>(base) + index * D;
    for (int64_t i = 0; i < D; ++i) out[i] = static_cast<double>(half_to_float(v[i]));
  }
}

}  // namespace

Status quantize_output_shapes(const QuantizeArgs& args, QuantizeShapes* shapes) {
  CodecConfig cfg;
  Plan p;
  Status st = plan_quantize(args, &cfg, &p);
  if (!st.ok) return st;
  shapes->present_cache = {p.B, p.H, p.tc_present, p.R};
  shapes->present_window.clear();
  if (p.window > 0) shapes->present_window = {p.B, p.H, p.wd_present, p.D};
  return Status::Ok();
}

Status quantize(const QuantizeArgs& a) {
  CodecConfig cfg;
  Plan p;
  Status st = plan_quantize(a, &cfg, &p);
  if (!st.ok) return st;
  st = check_output(kOp, "present_cache", a.present_cache, DType::kUInt8, {p.B, p.H, p.tc_present, p.R});
  if (!st.ok) return st;
  const int64_t esize = dtype_size(a.x.dtype);
  if (p.window > 0) {
    st = check_output(kOp, "present_window", a.present_window, a.x.dtype, {p.B, p.H, p.wd_present, p.D});
    if (!st.ok) return st;
    if (partially_overlaps(a.present_window.data, a.present_window.numel() * esize, a.past_window.data,
                           a.past_window.numel() * esize))
      return Status::Error(std::string(kOp) + ": present_window partially overlaps past_window");
  }
  if (partially_overlaps(a.present_cache.data, a.present_cache.numel(), a.past_cache.data, a.past_cache.numel()))
    return Status::Error(std::string(kOp) + ": present_cache partially overlaps past_cache");

  Quantizer qz;
  qz.cfg = cfg;
  qz.layout = row_layout(cfg);
  qz.dim = p.D;
  qz.rotation = static_cast<const float*>(a.rotation.data);
  qz.rotation_heads = a.rotation.shape[0];
  qz.codebook = static_cast<const float*>(a.codebook.data);
  qz.qjl = cfg.qjl ? static_cast<const float*>(a.qjl_matrix.data) : nullptr;
  qz.init();

  const int Ns = a.cache.sink_tokens;
  const int Rw = a.cache.recent_window;
  const bool buffer = a.cache.cache_mode == kBuffer;
  const auto* lengths = buffer ? static_cast<const int64_t*>(a.past_lengths.data) : nullptr;
  const auto* past_cache = static_cast<const uint8_t*>(a.past_cache.data);
  auto* present_cache = static_cast<uint8_t*>(a.present_cache.data);
  const auto* past_window = static_cast<const uint8_t*>(a.past_window.data);
  auto* present_window = static_cast<uint8_t*>(a.present_window.data);
  const int64_t row_bytes = p.R;
  const int64_t vec_bytes = p.D * esize;
  const int threads = default_num_threads();
  const int64_t pairs = p.B * p.H;
  std::vector<double> scratch(static_cast<size_t>(std::max(threads, 1)) * 4 * p.D);

  parallel_for(pairs, threads, [&](int64_t pair, int worker) {
    const int64_t b = pair / p.H;
    const int64_t h = pair % p.H;
    double* xs = scratch.data() + static_cast<size_t>(worker) * 4 * p.D;
    const int64_t t_old = buffer ? lengths[b] : p.tc_past + p.wd_past;
    const int64_t t_new = t_old + p.S;
    const uint8_t* pc = past_cache ? past_cache + pair * p.tc_past * row_bytes : nullptr;
    uint8_t* nc = present_cache + pair * p.tc_present * row_bytes;
    const uint8_t* pw = past_window ? past_window + pair * p.wd_past * vec_bytes : nullptr;
    uint8_t* nw = present_window ? present_window + pair * p.wd_present * vec_bytes : nullptr;
    // 1. compress the tokens that leave the window (or never enter it), reading the past window before any write.
    if (pc != nullptr && pc != nc) std::memcpy(nc, pc, static_cast<size_t>(p.tc_past * row_bytes));
    const int64_t lo = std::max<int64_t>(Ns, Rw > 0 ? t_old - Rw : t_old);
    const int64_t hi = t_new - Rw;
    const void* x_bh = static_cast<const uint8_t*>(a.x.data) + pair * p.S * vec_bytes;
    for (int64_t t = lo; t < hi; ++t) {
      if (t >= t_old) {
        load_vector(x_bh, a.x.dtype, t - t_old, p.D, xs + 3 * p.D);
      } else {  // still in the past recent ring
        const int64_t slot = Ns + (t - Ns) % Rw;
        load_vector(pw, a.x.dtype, slot, p.D, xs + 3 * p.D);
      }
      qz.encode(xs + 3 * p.D, h, nc + (t - Ns) * row_bytes, xs);
    }
    if (p.window == 0) return;
    // 2. the window: retained tokens keep their slot; new window tokens overwrite theirs.
    if (pw != nullptr && pw != nw) std::memcpy(nw, pw, static_cast<size_t>(p.wd_past * vec_bytes));
    for (int64_t t = t_old; t < t_new; ++t) {
      const TokenPlace place = token_place(t, t_new, Ns, Rw);
      if (place.home != kInWindow) continue;
      std::memcpy(nw + place.index * vec_bytes, static_cast<const uint8_t*>(x_bh) + (t - t_old) * vec_bytes,
                  static_cast<size_t>(vec_bytes));
    }
  });
  return Status::Ok();
}

}  // namespace tq::cpu
