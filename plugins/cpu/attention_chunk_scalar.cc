// Portable TQAttention inner loop (see attention_chunk.h), plus the score finishing and online-softmax steps
// that the AVX2 kernel shares.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/attention_chunk.h"
#include "cpu/float16.h"

namespace tq::cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline float load_half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return half_to_float(h);
}

// yhat (rotated domain, float32) of one row: gamma_p * c_p[code_i].
void decode_row(const CodecDecode& c, const uint8_t* row, float* out) {
  for (int p = 0; p < c.num_parts; ++p) {
    const PartDecode& part = c.parts[p];
    const float gamma = load_half(row + part.norm_offset);
    for (int i = 0; i < part.dim; ++i) {
      uint32_t code = 0;
      int shift = 0;
      for (int s = 0; s < part.seg_count; ++s) {
        const int w = part.seg_width[s];
        const int bit = i * w;
        const uint32_t field = (row[part.seg_offset[s] + (bit >> 3)] >> (bit & 7)) & ((1u << w) - 1u);
        code |= field << shift;
        shift += w;
      }
      out[part.coord_offset + i] = gamma * part.centroids[code];
    }
  }
}

// sum_p rho_p * sum_{i in I_p} sq_i * (2 * bit_i - 1), with sq already scaled by sqrt(pi/2) / d_p.
float qjl_term(const CodecDecode& c, const uint8_t* row, const float* sq) {
  const uint8_t* bits = row + c.qjl_offset;
  float total = 0.0f;
  for (int p = 0; p < c.num_parts; ++p) {
    const PartDecode& part = c.parts[p];
    float acc = 0.0f;
    for (int i = part.coord_offset; i < part.coord_offset + part.dim; ++i)
      acc += ((bits[i >> 3] >> (i & 7)) & 1u) ? sq[i] : -sq[i];
    total += load_half(row + part.rnorm_offset) * acc;
  }
  return total;
}

}  // namespace

void finish_scores(const ChunkArgs& a, int64_t t0, int n, float* s) {
  for (int r = 0; r < a.rows; ++r) {
    float* sr = s + r * n;
    if (a.softcap > 0.0f) {
      for (int j = 0; j < n; ++j) sr[j] = a.softcap * std::tanh(sr[j] / a.softcap);
    }
    switch (a.mask_kind) {
      case kMaskFloat32: {
        const float* m = static_cast<const float*>(a.mask[r]) + t0;
        for (int j = 0; j < n; ++j) sr[j] += m[j];
        break;
      }
      case kMaskFloat16: {
        const uint16_t* m = static_cast<const uint16_t*>(a.mask[r]) + t0;
        for (int j = 0; j < n; ++j) sr[j] += half_to_float(m[j]);
        break;
      }
      case kMaskBool: {
        const uint8_t* m = static_cast<const uint8_t*>(a.mask[r]) + t0;
        for (int j = 0; j < n; ++j)
          if (!m[j]) sr[j] = kNegInf;
        break;
      }
      default:
        break;
    }
  }
}

bool softmax_block(const ChunkArgs& a, int n, float* s, int dim) {
  bool any = false;
  for (int r = 0; r < a.rows; ++r) {
    float* sr = s + r * n;
    float block_max = kNegInf;
    for (int j = 0; j < n; ++j) block_max = std::max(block_max, sr[j]);
    const float m_new = std::max(a.m[r], block_max);
    if (m_new == kNegInf) {
      std::fill(sr, sr + n, 0.0f);
      continue;
    }
    any = true;
    const float alpha = a.m[r] == kNegInf ? 0.0f : std::exp(a.m[r] - m_new);
    float sum = 0.0f;
    for (int j = 0; j < n; ++j) {
      sr[j] = std::exp(sr[j] - m_new);
      sum += sr[j];
    }
    if (alpha != 1.0f) {
      float* acc = a.acc[r];
      for (int i = 0; i < dim; ++i) acc[i] *= alpha;
    }
    a.l[r] = a.l[r] * alpha + sum;
    a.m[r] = m_new;
  }
  return any;
}

void attention_chunk_scalar(const ChunkArgs& a) {
  const int D = a.k.dim;
  float yhat[1024];  // D <= 1024 is checked by the caller
  float s[kTileRows * kBlockTokens];
  for (int64_t j0 = 0; j0 < a.count; j0 += kBlockTokens) {
    const int n = static_cast<int>(std::min<int64_t>(kBlockTokens, a.count - j0));
    for (int j = 0; j < n; ++j) {
      const uint8_t* row = a.k_rows + (j0 + j) * a.k.row_bytes;
      decode_row(a.k, row, yhat);
      for (int r = 0; r < a.rows; ++r) {
        float dot = 0.0f;
        for (int i = 0; i < D; ++i) dot += a.qr[r][i] * yhat[i];
        if (a.k.qjl_offset >= 0) dot += qjl_term(a.k, row, a.sq[r]);
        s[r * n + j] = dot;
      }
    }
    finish_scores(a, a.first_token + j0, n, s);
    if (!softmax_block(a, n, s, D)) continue;
    for (int j = 0; j < n; ++j) {
      decode_row(a.v, a.v_rows + (j0 + j) * a.v.row_bytes, yhat);
      for (int r = 0; r < a.rows; ++r) {
        const float p = s[r * n + j];
        if (p == 0.0f) continue;
        float* acc = a.acc[r];
        for (int i = 0; i < D; ++i) acc[i] += p * yhat[i];
      }
    }
  }
}

}  // namespace tq::cpu
