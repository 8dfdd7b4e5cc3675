// C entry points over the launcher API for the Python ctypes harness (tests/gpu, bench/*_gpu.py).
// Arguments travel as one int64 array (pointers as integers) plus one double array, in the order of
// bench/gpu_harness/capi.py, so the Python side stays free of C struct layouts.
#include <cstdint>

#include "kernels/tq_kernels.h"

namespace {

tq::CodecConfig codec_at(const int64_t* a, int head_dim, int qjl, int nc) {
  tq::CodecConfig c;
  c.head_dim = head_dim;
  c.num_parts = static_cast<int>(a[0]);
  for (int i = 0; i < 4; ++i) {
    c.part_sizes[i] = static_cast<int>(a[1 + i]);
    c.bits[i] = static_cast<int>(a[5 + i]);
  }
  c.qjl = qjl;
  c.norm_correction = nc;
  return c;
}

template <typename T>
T* ptr(int64_t v) {
  return reinterpret_cast<T*>(static_cast<intptr_t>(v));
}

tq::kernels::QuantizeParams quantize_params(const int64_t* a) {
  tq::kernels::QuantizeParams p;
  p.codec = codec_at(a + 1, static_cast<int>(a[0]), static_cast<int>(a[10]), static_cast<int>(a[11]));
  p.dtype = static_cast<tq::kernels::DType>(a[12]);
  p.batch = static_cast<int>(a[13]);
  p.kv_heads = static_cast<int>(a[14]);
  p.new_tokens = static_cast<int>(a[15]);
  p.x = ptr<const void>(a[16]);
  p.past_cache = ptr<const uint8_t>(a[17]);
  p.past_rows = a[18];
  p.present_cache = ptr<uint8_t>(a[19]);
  p.present_rows = a[20];
  p.rotation = ptr<const float>(a[21]);
  p.rotation_heads = static_cast<int>(a[22]);
  p.codebook = ptr<const float>(a[23]);
  p.qjl_matrix = ptr<const float>(a[24]);
  p.past_window = ptr<const void>(a[25]);
  p.past_window_rows = a[26];
  p.present_window = ptr<void>(a[27]);
  p.present_window_rows = a[28];
  p.past_lengths = ptr<const int64_t>(a[29]);
  p.cache_mode = static_cast<int>(a[30]);
  p.sink_tokens = static_cast<int>(a[31]);
  p.recent_window = static_cast<int>(a[32]);
  p.overflow_flag = ptr<int>(a[33]);
  p.rotation_hadamard = static_cast<int>(a[34]);
  p.constant_tables = static_cast<int>(a[35]);
  return p;
}

tq::kernels::AttentionParams attention_params(const int64_t* a, const double* f) {
  tq::kernels::AttentionParams p;
  p.k_codec = codec_at(a + 1, static_cast<int>(a[0]), static_cast<int>(a[10]), static_cast<int>(a[11]));
  p.v_codec = codec_at(a + 12, static_cast<int>(a[0]), 0, static_cast<int>(a[21]));
  p.dtype = static_cast<tq::kernels::DType>(a[22]);
  p.batch = static_cast<int>(a[23]);
  p.q_heads = static_cast<int>(a[24]);
  p.kv_heads = static_cast<int>(a[25]);
  p.new_tokens = static_cast<int>(a[26]);
  p.q = ptr<const void>(a[27]);
  p.k_cache = ptr<const uint8_t>(a[28]);
  p.v_cache = ptr<const uint8_t>(a[29]);
  p.cache_rows = a[30];
  p.mask = ptr<const void>(a[31]);
  p.mask_type = static_cast<tq::kernels::MaskType>(a[32]);
  p.mask_batch = static_cast<int>(a[33]);
  p.mask_heads = static_cast<int>(a[34]);
  p.mask_tokens = a[35];
  p.k_rotation = ptr<const float>(a[36]);
  p.k_rotation_heads = static_cast<int>(a[37]);
  p.k_codebook = ptr<const float>(a[38]);
  p.v_rotation = ptr<const float>(a[39]);
  p.v_rotation_heads = static_cast<int>(a[40]);
  p.v_codebook = ptr<const float>(a[41]);
  p.k_qjl_matrix = ptr<const float>(a[42]);
  p.k_window = ptr<const void>(a[43]);
  p.v_window = ptr<const void>(a[44]);
  p.window_rows = a[45];
  p.past_lengths = ptr<const int64_t>(a[46]);
  p.cache_mode = static_cast<int>(a[47]);
  p.sink_tokens = static_cast<int>(a[48]);
  p.recent_window = static_cast<int>(a[49]);
  p.out = ptr<void>(a[50]);
  p.force_splits = static_cast<int>(a[51]);
  p.k_rotation_hadamard = static_cast<int>(a[52]);
  p.v_rotation_hadamard = static_cast<int>(a[53]);
  p.scale = static_cast<float>(f[0]);
  p.softcap = static_cast<float>(f[1]);
  return p;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int tqh_quantize(const int64_t* a, void* stream) {
  return static_cast<int>(tq::kernels::launch_quantize(quantize_params(a), nullptr, static_cast<cudaStream_t>(stream)));
}

__attribute__((visibility("default"))) int64_t tqh_attention_workspace(const int64_t* a, const double* f) {
  return static_cast<int64_t>(tq::kernels::attention_workspace_bytes(attention_params(a, f)));
}

__attribute__((visibility("default"))) int64_t tqh_attention_workspace_max(const int64_t* a, const double* f) {
  return static_cast<int64_t>(tq::kernels::attention_workspace_bytes_max(attention_params(a, f)));
}

__attribute__((visibility("default"))) int tqh_attention(const int64_t* a, const double* f, void* workspace,
                                                         void* stream) {
  return static_cast<int>(
      tq::kernels::launch_attention(attention_params(a, f), workspace, static_cast<cudaStream_t>(stream)));
}

// rotation_is_hadamard on a host float32 array [heads, d, d]: 1 or 0.
__attribute__((visibility("default"))) int tqh_rotation_is_hadamard(const float* host_rotation, int heads, int d) {
  return tq::kernels::rotation_is_hadamard(host_rotation, heads, d) ? 1 : 0;
}

__attribute__((visibility("default"))) const char* tqh_last_error() { return tq::kernels::last_error_message(); }

}  // extern "C"
