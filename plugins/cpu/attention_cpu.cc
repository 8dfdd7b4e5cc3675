// TQAttention on the CPU (docs/format.md section 8.2): validation, query rotation, the parallel sweep over
// (batch, kv head, query tile, token chunk), the exact window tokens, the softmax merge and the un-rotation.
// The compressed-token inner loop lives in attention_chunk_{scalar,avx2}.cc.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cpu/attention_chunk.h"
#include "cpu/checks.h"
#include "cpu/float16.h"
#include "cpu/threadpool.h"
#include "cpu/tq_cpu.h"

namespace tq::cpu {
namespace {

constexpr const char* kOp = "TQAttention";
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int64_t kMaxHeadDim = 1024;
constexpr int64_t kMinChunkRows = 256;
constexpr int64_t kMaxWaveTiles = 512;

std::string num(int64_t v) { return std::to_string(v); }

struct Plan {
  int64_t B = 0, Hq = 0, Hkv = 0, G = 0, S = 0, D = 0;
  int64_t Tc = 0, Wd = 0, Tm = 0, W = 0;
  int64_t Bm = 1, Hm = 1;
  int mask_kind = kMaskNone;
  const int64_t* lengths = nullptr;  // buffer mode
};

// Tokens of sequence b after this step.
int64_t total_tokens(const Plan& p, int64_t b) { return p.lengths ? p.lengths[b] + p.S : p.Tc + p.Wd; }

Status plan_attention(const AttentionArgs& a, CodecConfig* kcfg, CodecConfig* vcfg, Plan* out) {
  Status st = check_cache_attrs(kOp, a.cache, a.format_version);
  if (!st.ok) return st;
  if (!std::isfinite(a.scale))
    return Status::Error(std::string(kOp) + ": attribute scale=" + std::to_string(a.scale) + " must be finite");
  if (!(a.softcap >= 0.0f) || !std::isfinite(a.softcap))
    return Status::Error(std::string(kOp) + ": attribute softcap=" + std::to_string(a.softcap) + " must be >= 0");
  if (a.q.shape.size() != 4)
    return Status::Error(std::string(kOp) + ": input 'q' has shape " + shape_str(a.q.shape) +
                         ", expected [B, Hq, S, D]");
  Plan p;
  p.B = a.q.shape[0];
  p.Hq = a.q.shape[1];
  p.S = a.q.shape[2];
  p.D = a.q.shape[3];
  st = check_tensor(kOp, "q", a.q, {DType::kFloat32, DType::kFloat16}, {-1, -1, -1, -1});
  if (!st.ok) return st;
  if (p.D > kMaxHeadDim)
    return Status::Error(std::string(kOp) + ": head dim D=" + num(p.D) + " is above the supported " +
                         num(kMaxHeadDim));
  CodecConfig kc = a.k_codec, vc = a.v_codec;
  for (CodecConfig* c : {&kc, &vc}) {
    if (c->head_dim != 0 && c->head_dim != p.D)
      return Status::Error(std::string(kOp) + ": codec head_dim=" + num(c->head_dim) + " but q has D=" + num(p.D));
    c->head_dim = static_cast<int>(p.D);
  }
  st = check_codec(kOp, "k_", kc);
  if (!st.ok) return st;
  st = check_codec(kOp, "v_", vc);
  if (!st.ok) return st;
  if (vc.qjl != 0) return Status::Error(std::string(kOp) + ": v codec has qjl=1; values never use QJL");
  const int64_t k_row = row_layout(kc).row_bytes;
  const int64_t v_row = row_layout(vc).row_bytes;
  if (a.k_cache.shape.size() != 4 || a.k_cache.shape[0] != p.B || a.k_cache.shape[1] <= 0)
    return Status::Error(std::string(kOp) + ": input 'k_cache' has shape " + shape_str(a.k_cache.shape) +
                         ", expected [B=" + num(p.B) + ", Hkv, Tc, " + num(k_row) + "]");
  p.Hkv = a.k_cache.shape[1];
  if (p.Hq % p.Hkv != 0)
    return Status::Error(std::string(kOp) + ": Hq=" + num(p.Hq) + " is not a multiple of Hkv=" + num(p.Hkv));
  p.G = p.Hq / p.Hkv;
  st = check_tensor(kOp, "k_cache", a.k_cache, {DType::kUInt8}, {p.B, p.Hkv, -1, k_row});
  if (!st.ok) return st;
  p.Tc = a.k_cache.shape[2];
  st = check_tensor(kOp, "v_cache", a.v_cache, {DType::kUInt8}, {p.B, p.Hkv, p.Tc, v_row});
  if (!st.ok) return st;
  for (const auto& [name, rot] : {std::make_pair("k_rotation", &a.k_rotation), std::make_pair("v_rotation", &a.v_rotation)}) {
    if (rot->shape.size() == 3 && rot->shape[0] != 1 && rot->shape[0] != p.Hkv)
      return Status::Error(std::string(kOp) + ": input '" + name + "' has Hr=" + num(rot->shape[0]) +
                           ", expected 1 or Hkv=" + num(p.Hkv));
    st = check_tensor(kOp, name, *rot, {DType::kFloat32}, {-1, p.D, p.D});
    if (!st.ok) return st;
  }
  st = check_tensor(kOp, "k_codebook", a.k_codebook, {DType::kFloat32}, {kc.num_parts, kCodebookStride});
  if (!st.ok) return st;
  st = check_tensor(kOp, "v_codebook", a.v_codebook, {DType::kFloat32}, {vc.num_parts, kCodebookStride});
  if (!st.ok) return st;
  if (kc.qjl) {
    if (!a.k_qjl_matrix.present())
      return Status::Error(std::string(kOp) + ": input 'k_qjl_matrix' is required when k_qjl=1");
    st = check_tensor(kOp, "k_qjl_matrix", a.k_qjl_matrix, {DType::kFloat32}, {p.D, p.D});
    if (!st.ok) return st;
  }
  if (!a.mask.shape.empty()) {
    st = check_tensor(kOp, "mask", a.mask, {DType::kFloat32, DType::kFloat16, DType::kBool}, {-1, -1, p.S, -1});
    if (!st.ok) return st;
    p.Bm = a.mask.shape[0];
    p.Hm = a.mask.shape[1];
    p.Tm = a.mask.shape[3];
    if ((p.Bm != 1 && p.Bm != p.B) || (p.Hm != 1 && p.Hm != p.Hq))
      return Status::Error(std::string(kOp) + ": input 'mask' has shape " + shape_str(a.mask.shape) +
                           ", expected [1 or B=" + num(p.B) + ", 1 or Hq=" + num(p.Hq) + ", S=" + num(p.S) + ", T]");
    p.mask_kind = a.mask.dtype == DType::kFloat32 ? kMaskFloat32
                  : a.mask.dtype == DType::kFloat16 ? kMaskFloat16 : kMaskBool;
  }
  p.W = static_cast<int64_t>(a.cache.sink_tokens) + a.cache.recent_window;
  if (p.W > 0) {
    if (a.k_window.shape.empty() || a.v_window.shape.empty())
      return Status::Error(std::string(kOp) + ": inputs 'k_window' and 'v_window' are required when "
                           "sink_tokens + recent_window=" + num(p.W) + " > 0");
    st = check_tensor(kOp, "k_window", a.k_window, {a.q.dtype}, {p.B, p.Hkv, -1, p.D});
    if (!st.ok) return st;
    p.Wd = a.k_window.shape[2];
    st = check_tensor(kOp, "v_window", a.v_window, {a.q.dtype}, {p.B, p.Hkv, p.Wd, p.D});
    if (!st.ok) return st;
  }
  if (a.cache.cache_mode == kConcat) {
    const int64_t T = p.Tc + p.Wd;
    if (p.mask_kind != kMaskNone && p.Tm != T)
      return Status::Error(std::string(kOp) + ": concat mode needs Tc + Wd == T (the mask's last dim): Tc=" +
                           num(p.Tc) + ", Wd=" + num(p.Wd) + ", T=" + num(p.Tm));
    if (p.Wd != window_rows(T, a.cache.sink_tokens, a.cache.recent_window))
      return Status::Error(std::string(kOp) + ": concat mode needs Wd == min(T, W): Wd=" + num(p.Wd) +
                           ", T=" + num(T) + ", W=" + num(p.W));
    if (T < p.S)
      return Status::Error(std::string(kOp) + ": T=" + num(T) + " tokens is less than S=" + num(p.S));
  } else {
    if (p.W > 0 && p.Wd != p.W)
      return Status::Error(std::string(kOp) + ": buffer mode needs window rows Wd == W: Wd=" + num(p.Wd) +
                           ", W=" + num(p.W));
    if (!a.past_lengths.present())
      return Status::Error(std::string(kOp) + ": input 'past_lengths' is required when cache_mode=1 (buffer)");
    st = check_tensor(kOp, "past_lengths", a.past_lengths, {DType::kInt64}, {p.B});
    if (!st.ok) return st;
    p.lengths = static_cast<const int64_t*>(a.past_lengths.data);
    for (int64_t b = 0; b < p.B; ++b) {
      const int64_t L = p.lengths[b];
      const int64_t T = L + p.S;
      if (L < 0)
        return Status::Error(std::string(kOp) + ": past_lengths[" + num(b) + "]=" + num(L) + " is negative");
      if (p.mask_kind != kMaskNone && T > p.Tm)
        return Status::Error(std::string(kOp) + ": past_lengths[" + num(b) + "]=" + num(L) + " plus S=" +
                             num(p.S) + " exceeds the mask's T=" + num(p.Tm));
      const int64_t rows = std::max<int64_t>(0, T - p.W);
      if (rows > p.Tc)
        return Status::Error(std::string(kOp) + ": past_lengths[" + num(b) + "]=" + num(L) + " needs " +
                             num(rows) + " compressed rows but the cache capacity is " + num(p.Tc));
    }
  }
  *kcfg = kc;
  *vcfg = vc;
  *out = p;
  return Status::Ok();
}

CodecDecode make_decode(const CodecConfig& cfg, const float* codebook) {
  const RowLayout l = row_layout(cfg);
  CodecDecode c;
  c.dim = cfg.head_dim;
  c.row_bytes = l.row_bytes;
  c.num_parts = cfg.num_parts;
  c.qjl_offset = l.qjl_offset;
  for (int p = 0; p < cfg.num_parts; ++p) {
    PartDecode& d = c.parts[p];
    d.mse_bits = l.mse_bits[p];
    d.coord_offset = l.part_offset[p];
    d.dim = cfg.part_sizes[p];
    d.seg_count = segment_widths(d.mse_bits, d.seg_width);
    int off = l.code_offset[p];
    for (int s = 0; s < d.seg_count; ++s) {
      d.seg_offset[s] = off;
      off += d.dim * d.seg_width[s] / 8;
    }
    d.norm_offset = l.norm_offset + 2 * p;
    d.rnorm_offset = cfg.qjl ? l.rnorm_offset + 2 * p : -1;
    d.centroids = codebook + p * kCodebookStride;
  }
  return c;
}

float load_elem(const void* base, DType dt, int64_t i) {
  if (dt == DType::kFloat32) return static_cast<const float*>(base)[i];
  return half_to_float(static_cast<const uint16_t*>(base)[i]);
}

// Softmax state of one query row.
struct RowState {
  float m;
  float l;
  float* acc;
};

}  // namespace

bool simd_enabled() {
#if defined(__x86_64__) || defined(_M_X64)
  static const bool supported = cpu_has_avx2_fma_f16c();
  const char* env = std::getenv("TQEXPORT_CPU_SIMD");  // read per call so tests can compare both kernels
  return supported && !(env != nullptr && std::strcmp(env, "0") == 0);
#else
  return false;
#endif
}

Status attention_validate(const AttentionArgs& args) {
  CodecConfig kc, vc;
  Plan p;
  return plan_attention(args, &kc, &vc, &p);
}

Status attention(const AttentionArgs& a) {
  CodecConfig kc, vc;
  Plan p;
  Status st = plan_attention(a, &kc, &vc, &p);
  if (!st.ok) return st;
  st = check_output(kOp, "out", a.out, a.q.dtype, {p.B, p.Hq, p.S, p.D});
  if (!st.ok) return st;
  if (a.out.numel() == 0) return Status::Ok();

  const int64_t D = p.D;
  const int Ns = a.cache.sink_tokens;
  const int Rw = a.cache.recent_window;
  const int threads = a.num_threads > 0 ? a.num_threads : default_num_threads();
  [[maybe_unused]] const bool simd = simd_enabled();  // read only on x86
  const CodecDecode kdec = make_decode(kc, static_cast<const float*>(a.k_codebook.data));
  const CodecDecode vdec = make_decode(vc, static_cast<const float*>(a.v_codebook.data));
  const auto* k_rot = static_cast<const float*>(a.k_rotation.data);
  const auto* v_rot = static_cast<const float*>(a.v_rotation.data);
  const int64_t k_hr = a.k_rotation.shape[0], v_hr = a.v_rotation.shape[0];
  const auto* sqm = kc.qjl ? static_cast<const float*>(a.k_qjl_matrix.data) : nullptr;
  const auto* k_cache = static_cast<const uint8_t*>(a.k_cache.data);
  const auto* v_cache = static_cast<const uint8_t*>(a.v_cache.data);

  // Work layout: rows of a (b, g) group are rr = hh * S + s (query head g * G + hh), cut into tiles.
  const int64_t group_rows = p.G * p.S;
  const int64_t tiles_per_group = (group_rows + kTileRows - 1) / kTileRows;
  const int64_t total_tiles = p.B * p.Hkv * tiles_per_group;
  int64_t max_rows = 0;
  for (int64_t b = 0; b < p.B; ++b) {
    const int64_t T = total_tokens(p, b);
    max_rows = std::max(max_rows, p.lengths ? std::max<int64_t>(0, T - p.W) : p.Tc);
  }
  int64_t chunks = 1;
  if (total_tiles < 4 * threads && max_rows > kMinChunkRows) {
    chunks = std::min<int64_t>((4 * threads + total_tiles - 1) / total_tiles,
                               (max_rows + kMinChunkRows - 1) / kMinChunkRows);
  }
  int64_t chunk_len = (max_rows + chunks - 1) / std::max<int64_t>(chunks, 1);
  chunk_len = std::max<int64_t>(kBlockTokens, (chunk_len + kBlockTokens - 1) / kBlockTokens * kBlockTokens);
  const int64_t wave_tiles = std::min(total_tiles, kMaxWaveTiles);
  const int64_t q_stride = 3 * D;             // per row: qw (scale * q), qr, sq
  const int64_t part_stride = 2 + D;          // per row per chunk: m, l, acc[D]
  std::vector<float> qbuf(static_cast<size_t>(wave_tiles * kTileRows * q_stride));
  std::vector<float> partial(static_cast<size_t>(wave_tiles * chunks * kTileRows * part_stride));
  std::vector<double> dscratch(static_cast<size_t>(threads) * 2 * D);
  std::vector<float> fscratch(static_cast<size_t>(threads) * D);
  const double qjl_coef = std::sqrt(std::acos(-1.0) / 2.0);

  struct TileInfo {
    int64_t b, g, rr0;
    int rows;
  };
  auto tile_info = [&](int64_t tile) {
    TileInfo t;
    const int64_t group = tile / tiles_per_group;
    t.b = group / p.Hkv;
    t.g = group % p.Hkv;
    t.rr0 = (tile % tiles_per_group) * kTileRows;
    t.rows = static_cast<int>(std::min<int64_t>(kTileRows, group_rows - t.rr0));
    return t;
  };
  auto row_head = [&](const TileInfo& t, int r) { return t.g * p.G + (t.rr0 + r) / p.S; };
  auto row_query = [&](const TileInfo& t, int r) { return (t.rr0 + r) % p.S; };
  auto mask_row = [&](const TileInfo& t, int r) -> const void* {
    if (p.mask_kind == kMaskNone) return nullptr;
    const int64_t bm = p.Bm == 1 ? 0 : t.b;
    const int64_t hm = p.Hm == 1 ? 0 : row_head(t, r);
    const int64_t off = ((bm * p.Hm + hm) * p.S + row_query(t, r)) * p.Tm;
    return static_cast<const uint8_t*>(a.mask.data) + off * dtype_size(a.mask.dtype);
  };

  for (int64_t wave0 = 0; wave0 < total_tiles; wave0 += wave_tiles) {
    const int64_t ntiles = std::min(wave_tiles, total_tiles - wave0);
    // 1. queries: qw = scale * q; qr = R_k[g] qw (float64 products); sq = Sq qr * sqrt(pi/2) / d_p.
    parallel_for(ntiles, threads, [&](int64_t wt, int worker) {
      const TileInfo t = tile_info(wave0 + wt);
      double* qd = dscratch.data() + worker * 2 * D;
      double* qrd = qd + D;
      const float* R = k_rot + (k_hr == 1 ? 0 : t.g) * D * D;
      for (int r = 0; r < t.rows; ++r) {
        float* qw = qbuf.data() + (wt * kTileRows + r) * q_stride;
        float* qr = qw + D;
        float* sq = qr + D;
        const int64_t qi = ((t.b * p.Hq + row_head(t, r)) * p.S + row_query(t, r)) * D;
        for (int64_t i = 0; i < D; ++i) {
          qd[i] = static_cast<double>(a.scale) * load_elem(a.q.data, a.q.dtype, qi + i);
          qw[i] = static_cast<float>(qd[i]);
        }
        for (int64_t i = 0; i < D; ++i) {
          double acc = 0.0;
          for (int64_t j = 0; j < D; ++j) acc += static_cast<double>(R[i * D + j]) * qd[j];
          qrd[i] = acc;
          qr[i] = static_cast<float>(acc);
        }
        if (sqm != nullptr) {
          for (int part = 0; part < kdec.num_parts; ++part) {
            const PartDecode& pd = kdec.parts[part];
            for (int64_t i = pd.coord_offset; i < pd.coord_offset + pd.dim; ++i) {
              double acc = 0.0;
              for (int64_t j = 0; j < D; ++j) acc += static_cast<double>(sqm[i * D + j]) * qrd[j];
              sq[i] = static_cast<float>(acc * qjl_coef / pd.dim);
            }
          }
        }
      }
    });
    // 2. compressed tokens: one task per (tile, chunk of rows).
    parallel_for(ntiles * chunks, threads, [&](int64_t task, int) {
      const int64_t wt = task / chunks;
      const int64_t c = task % chunks;
      const TileInfo t = tile_info(wave0 + wt);
      const int64_t T = total_tokens(p, t.b);
      const int64_t rows_b = p.lengths ? std::max<int64_t>(0, T - p.W) : p.Tc;
      const int64_t r0 = c * chunk_len;
      const int64_t r1 = std::min(rows_b, r0 + chunk_len);
      ChunkArgs ca;
      ca.k = kdec;
      ca.v = vdec;
      ca.rows = t.rows;
      ca.mask_kind = p.mask_kind;
      ca.softcap = a.softcap;
      float* base = partial.data() + (wt * chunks + c) * kTileRows * part_stride;
      float m[kTileRows], l[kTileRows];
      for (int r = 0; r < t.rows; ++r) {
        m[r] = kNegInf;
        l[r] = 0.0f;
        ca.acc[r] = base + r * part_stride + 2;
        std::fill(ca.acc[r], ca.acc[r] + D, 0.0f);
        const float* qw = qbuf.data() + (wt * kTileRows + r) * q_stride;
        ca.qr[r] = qw + D;
        ca.sq[r] = sqm ? qw + 2 * D : nullptr;
        ca.mask[r] = mask_row(t, r);
      }
      ca.m = m;
      ca.l = l;
      if (r1 > r0) {
        const int64_t group = t.b * p.Hkv + t.g;
        ca.k_rows = k_cache + (group * p.Tc + r0) * kdec.row_bytes;
        ca.v_rows = v_cache + (group * p.Tc + r0) * vdec.row_bytes;
        ca.count = r1 - r0;
        ca.first_token = r0 + Ns;
#if defined(__x86_64__) || defined(_M_X64)
        if (simd) attention_chunk_avx2(ca); else attention_chunk_scalar(ca);
#else
        attention_chunk_scalar(ca);
#endif
      }
      for (int r = 0; r < t.rows; ++r) {
        base[r * part_stride] = m[r];
        base[r * part_stride + 1] = l[r];
      }
    });
    // 3. window tokens (exact), merge of the chunks, un-rotation, output.
    parallel_for(ntiles, threads, [&](int64_t wt, int worker) {
      const TileInfo t = tile_info(wave0 + wt);
      const int64_t T = total_tokens(p, t.b);
      const int64_t group = t.b * p.Hkv + t.g;
      double* rot = dscratch.data() + worker * 2 * D;
      double* outd = rot + D;
      float* accw = fscratch.data() + worker * D;
      const float* Rv = v_rot + (v_hr == 1 ? 0 : t.g) * D * D;
      for (int r = 0; r < t.rows; ++r) {
        const float* qw = qbuf.data() + (wt * kTileRows + r) * q_stride;
        const void* mrow = mask_row(t, r);
        // window tokens: sinks [0, min(Ns, T)) and the recent ring [max(Ns, T - Rw), T)
        float mw = kNegInf, lw = 0.0f;
        std::fill(accw, accw + D, 0.0f);
        auto visit = [&](int64_t tok) {
          const TokenPlace place = token_place(tok, T, Ns, Rw);
          const int64_t base = (group * p.Wd + place.index) * D;
          float s = 0.0f;
          for (int64_t i = 0; i < D; ++i) s += qw[i] * load_elem(a.k_window.data, a.k_window.dtype, base + i);
          if (a.softcap > 0.0f) s = a.softcap * std::tanh(s / a.softcap);
          if (p.mask_kind == kMaskFloat32) s += static_cast<const float*>(mrow)[tok];
          if (p.mask_kind == kMaskFloat16) s += half_to_float(static_cast<const uint16_t*>(mrow)[tok]);
          if (p.mask_kind == kMaskBool && !static_cast<const uint8_t*>(mrow)[tok]) s = kNegInf;
          if (s == kNegInf) return;
          const float m_new = std::max(mw, s);
          const float alpha = mw == kNegInf ? 0.0f : std::exp(mw - m_new);
          const float w = std::exp(s - m_new);
          for (int64_t i = 0; i < D; ++i)
            accw[i] = accw[i] * alpha + w * load_elem(a.v_window.data, a.v_window.dtype, base + i);
          lw = lw * alpha + w;
          mw = m_new;
        };
        if (p.W > 0) {
          for (int64_t tok = 0; tok < std::min<int64_t>(Ns, T); ++tok) visit(tok);
          if (Rw > 0)
            for (int64_t tok = std::max<int64_t>(Ns, T - Rw); tok < T; ++tok) visit(tok);
        }
        // merge
        float M = mw;
        for (int64_t c = 0; c < chunks; ++c)
          M = std::max(M, partial[((wt * chunks + c) * kTileRows + r) * part_stride]);
        const int64_t oi = ((t.b * p.Hq + row_head(t, r)) * p.S + row_query(t, r)) * D;
        double L = 0.0;
        std::fill(rot, rot + D, 0.0);
        std::fill(outd, outd + D, 0.0);
        if (M != kNegInf) {
          for (int64_t c = 0; c < chunks; ++c) {
            const float* pc = partial.data() + ((wt * chunks + c) * kTileRows + r) * part_stride;
            if (pc[0] == kNegInf) continue;
            const double f = std::exp(static_cast<double>(pc[0]) - M);
            L += f * pc[1];
            for (int64_t i = 0; i < D; ++i) rot[i] += f * pc[2 + i];
          }
          if (mw != kNegInf) {
            const double f = std::exp(static_cast<double>(mw) - M);
            L += f * lw;
            for (int64_t i = 0; i < D; ++i) outd[i] = f * accw[i];
          }
          for (int64_t j = 0; j < D; ++j) {  // out += R_v^T rot
            const double rj = rot[j];
            const float* Rj = Rv + j * D;
            for (int64_t i = 0; i < D; ++i) outd[i] += static_cast<double>(Rj[i]) * rj;
          }
        }
        const double inv = L > 0.0 ? 1.0 / L : 0.0;
        if (a.out.dtype == DType::kFloat32) {
          float* o = static_cast<float*>(a.out.data) + oi;
          for (int64_t i = 0; i < D; ++i) o[i] = static_cast<float>(outd[i] * inv);
        } else {
          uint16_t* o = static_cast<uint16_t*>(a.out.data) + oi;
          for (int64_t i = 0; i < D; ++i) o[i] = float_to_half(static_cast<float>(outd[i] * inv));
        }
      }
    });
  }
  return Status::Ok();
}

}  // namespace tq::cpu
