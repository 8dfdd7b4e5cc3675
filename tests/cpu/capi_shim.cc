// C ABI over tq::cpu for the ctypes tests in tests/cpu (the product reaches these kernels through ORT instead).
#include <cstdint>
#include <cstdio>
#include <string>

#include "cpu/tq_cpu.h"

namespace {

struct CTensor {
  const void* data;
  int32_t dtype;  // tq::cpu::DType; -1 = absent
  int32_t ndim;
  int64_t shape[8];
};

tq::cpu::TensorRef in(const CTensor& t) {
  tq::cpu::TensorRef r;
  if (t.dtype < 0) return r;
  r.data = t.data;
  r.dtype = static_cast<tq::cpu::DType>(t.dtype);
  r.shape.assign(t.shape, t.shape + t.ndim);
  return r;
}

tq::cpu::MutableTensorRef out(const CTensor& t) {
  tq::cpu::MutableTensorRef r;
  if (t.dtype < 0) return r;
  r.data = const_cast<void*>(t.data);
  r.dtype = static_cast<tq::cpu::DType>(t.dtype);
  r.shape.assign(t.shape, t.shape + t.ndim);
  return r;
}

// attrs: [P, bits x4, part_sizes x4, qjl, norm_correction]
tq::CodecConfig codec(const int32_t* a) {
  tq::CodecConfig c;
  c.num_parts = a[0];
  for (int p = 0; p < 4; ++p) {
    c.bits[p] = a[1 + p];
    c.part_sizes[p] = a[5 + p];
  }
  c.qjl = a[9];
  c.norm_correction = a[10];
  return c;
}

int finish(const tq::cpu::Status& st, char* err, int err_len) {
  if (st.ok) return 0;
  std::snprintf(err, err_len, "%s", st.message.c_str());
  return 1;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int tq_test_simd_enabled() { return tq::cpu::simd_enabled() ? 1 : 0; }

// cache: [cache_mode, sink_tokens, recent_window]; ins: x, past_cache, rotation, codebook, qjl, past_window,
// past_lengths; outs: present_cache, present_window. shapes_only: fill outs[i].shape/ndim and return.
__attribute__((visibility("default"))) int tq_test_quantize(const int32_t* codec_attrs, const int32_t* cache,
                                                            const CTensor* ins, CTensor* outs, int shapes_only,
                                                            char* err, int err_len) {
  tq::cpu::QuantizeArgs a;
  a.codec = codec(codec_attrs);
  a.cache = {cache[0], cache[1], cache[2]};
  a.x = in(ins[0]);
  a.past_cache = in(ins[1]);
  a.rotation = in(ins[2]);
  a.codebook = in(ins[3]);
  a.qjl_matrix = in(ins[4]);
  a.past_window = in(ins[5]);
  a.past_lengths = in(ins[6]);
  if (shapes_only) {
    tq::cpu::QuantizeShapes s;
    auto st = tq::cpu::quantize_output_shapes(a, &s);
    if (!st.ok) return finish(st, err, err_len);
    outs[0].ndim = static_cast<int32_t>(s.present_cache.size());
    for (size_t i = 0; i < s.present_cache.size(); ++i) outs[0].shape[i] = s.present_cache[i];
    outs[1].ndim = static_cast<int32_t>(s.present_window.size());
    for (size_t i = 0; i < s.present_window.size(); ++i) outs[1].shape[i] = s.present_window[i];
    return 0;
  }
  a.present_cache = out(outs[0]);
  a.present_window = out(outs[1]);
  return finish(tq::cpu::quantize(a), err, err_len);
}

// k_attrs / v_attrs as codec(); cache as above; ins: the 12 op inputs in order.
__attribute__((visibility("default"))) int tq_test_attention(const int32_t* k_attrs, const int32_t* v_attrs,
                                                             const int32_t* cache, float scale, float softcap,
                                                             int threads, const CTensor* ins, CTensor* o,
                                                             char* err, int err_len) {
  tq::cpu::AttentionArgs a;
  a.k_codec = codec(k_attrs);
  a.v_codec = codec(v_attrs);
  a.cache = {cache[0], cache[1], cache[2]};
  a.scale = scale;
  a.softcap = softcap;
  a.num_threads = threads;
  tq::cpu::TensorRef* slots[12] = {&a.q, &a.k_cache, &a.v_cache, &a.mask, &a.k_rotation, &a.k_codebook,
                                   &a.v_rotation, &a.v_codebook, &a.k_qjl_matrix, &a.k_window, &a.v_window,
                                   &a.past_lengths};
  for (int i = 0; i < 12; ++i) *slots[i] = in(ins[i]);
  a.out = out(*o);
  return finish(tq::cpu::attention(a), err, err_len);
}

}  // extern "C"
