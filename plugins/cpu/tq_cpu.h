// CPU kernels of the two tqexport ops (docs/format.md sections 5-8): TQQuantize and TQAttention.
// Plain C++17: raw pointers and shapes in, outputs preallocated by the caller, a Status out. No ORT, TensorRT or
// CUDA types; the ORT glue (plugins/ort/cpu_ops.cc) maps its tensors onto TensorRef and calls these functions.
//
// Every function validates every shape, dtype, attribute and index it reads (past_lengths, buffer capacity,
// window sizes) and returns a Status naming the input, the value seen and the value allowed. Nothing aborts.
//
// Letters as in docs/format.md: B batch, Hq / Hkv query / kv heads, S new tokens, T total tokens, D head dim,
// Tc compressed rows, Wd window rows, Ns sink tokens, Rw recent window, W = Ns + Rw.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/tq_format.h"

namespace tq::cpu {

struct Status {
  bool ok = true;
  std::string message;
  static Status Ok() { return {}; }
  static Status Error(std::string msg) { return {false, std::move(msg)}; }
};

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBool = 2, kUInt8 = 3, kInt64 = 4 };
const char* dtype_name(DType t);

// A read-only tensor: data == nullptr (or a zero-element shape where the spec allows it) means "absent" for the
// optional inputs. float16 data is IEEE binary16 stored as uint16; bool is one byte per element (0 / 1).
struct TensorRef {
  const void* data = nullptr;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  bool present() const;           // data != nullptr and every dim > 0
  int64_t numel() const;
};

// A caller-allocated output tensor. It may alias the matching past tensor (buffer mode, TensorRT aliasing) when
// data pointers and shapes are equal; partial overlap is rejected.
struct MutableTensorRef {
  void* data = nullptr;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  int64_t numel() const;
};

// Cache placement attributes shared by both ops (section 7).
struct CacheAttrs {
  int cache_mode = kConcat;  // tq::CacheMode
  int sink_tokens = 0;       // Ns
  int recent_window = 0;     // Rw
};

// ---------------------------------------------------------------------------------------------- TQQuantize (8.1)
struct QuantizeArgs {
  CodecConfig codec;       // bits, part_sizes, qjl, norm_correction, rotation_kind; head_dim = D
  CacheAttrs cache;
  int format_version = kFormatVersion;
  TensorRef x;             // float32/float16 [B, Hkv, S, D]
  TensorRef past_cache;    // uint8 [B, Hkv, Tc, row_bytes]   (concat: Tc may be 0; data may then be null)
  TensorRef rotation;      // float32 [Hr, D, D], Hr in {1, Hkv}
  TensorRef codebook;      // float32 [P, 256]
  TensorRef qjl_matrix;    // float32 [D, D], required iff qjl = 1
  TensorRef past_window;   // dtype of x [B, Hkv, Wd, D], required iff W > 0 (concat: Wd may be 0)
  TensorRef past_lengths;  // int64 [B], required iff buffer mode
  MutableTensorRef present_cache;   // uint8 [B, Hkv, Tc', row_bytes]
  MutableTensorRef present_window;  // dtype of x [B, Hkv, Wd', D]; ignored (may be empty) when W == 0
};

struct QuantizeShapes {
  std::vector<int64_t> present_cache;   // [B, Hkv, Tc', row_bytes]
  std::vector<int64_t> present_window;  // [B, Hkv, Wd', D]; empty when W == 0
};

// Validates the inputs of args (outputs are not read) and computes the output shapes.
Status quantize_output_shapes(const QuantizeArgs& args, QuantizeShapes* shapes);

// Runs TQQuantize; the outputs must have the shapes quantize_output_shapes returns.
Status quantize(const QuantizeArgs& args);

// Pure shape helpers (concat mode, section 7): rows stored for a sequence of T logical tokens. A step that appends
// S tokens to T_old tokens has Tc' = concat_compressed_rows(T_old + S, ...), Wd' = concat_window_rows(T_old + S, ...),
// where T_old = Tc + Wd of the past tensors.
int64_t concat_compressed_rows(int64_t total_tokens, int sink_tokens, int recent_window);  // T - min(T, W)
int64_t concat_window_rows(int64_t total_tokens, int sink_tokens, int recent_window);      // min(T, W)

// --------------------------------------------------------------------------------------------- TQAttention (8.2)
struct AttentionArgs {
  CodecConfig k_codec;     // k_bits, k_part_sizes, k_qjl (norm_correction / rotation_kind do not affect decode)
  CodecConfig v_codec;     // v_bits, v_part_sizes (qjl must be 0)
  CacheAttrs cache;
  int format_version = kFormatVersion;
  float scale = 1.0f;
  float softcap = 0.0f;    // 0 = off
  TensorRef q;             // float32/float16 [B, Hq, S, D]
  TensorRef k_cache;       // uint8 [B, Hkv, Tc, k_row_bytes]
  TensorRef v_cache;       // uint8 [B, Hkv, Tc, v_row_bytes]
  TensorRef mask;          // float32/float16 additive or bool [Bm, Hm, S, Tm]
  TensorRef k_rotation;    // float32 [Hr, D, D]
  TensorRef k_codebook;    // float32 [Pk, 256]
  TensorRef v_rotation;    // float32 [Hr, D, D]
  TensorRef v_codebook;    // float32 [Pv, 256]
  TensorRef k_qjl_matrix;  // float32 [D, D], required iff k_qjl = 1
  TensorRef k_window;      // dtype of q [B, Hkv, Wd, D], required iff W > 0
  TensorRef v_window;      // same
  TensorRef past_lengths;  // int64 [B], required iff buffer mode
  MutableTensorRef out;    // dtype of q [B, Hq, S, D]
  int num_threads = 0;     // 0: env TQEXPORT_CPU_THREADS, else std::thread::hardware_concurrency()
};

// Validates the inputs of args (the output is not read). Output shape = q's shape.
Status attention_validate(const AttentionArgs& args);

// Runs TQAttention.
Status attention(const AttentionArgs& args);

// Threads the kernels use when num_threads == 0 (env TQEXPORT_CPU_THREADS, else hardware concurrency, >= 1).
int default_num_threads();

// Whether the AVX2+FMA+F16C kernels are in use on this CPU (runtime check; env TQEXPORT_CPU_SIMD=0 disables).
bool simd_enabled();

}  // namespace tq::cpu
