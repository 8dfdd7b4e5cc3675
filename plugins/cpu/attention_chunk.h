// The inner loop of TQAttention on the CPU: one run of consecutive compressed rows of one kv head against a
// tile of up to kTileRows query rows of its GQA group. Scores come straight from the packed codes in the rotated
// domain (docs/format.md section 6); values accumulate in the rotated domain; float32 online softmax.
// Two implementations with the same contract: scalar (attention_chunk_scalar.cc) and AVX2+FMA+F16C
// (attention_chunk_avx2.cc, chosen at run time). Plain structs only, so the AVX2 unit shares no inline code.
#pragma once

#include <cstdint>

namespace tq::cpu {

constexpr int kTileRows = 4;     // query rows decoded against one token's codes at a time
constexpr int kBlockTokens = 32;  // tokens per online-softmax block

enum MaskKind : int { kMaskNone = 0, kMaskFloat32 = 1, kMaskFloat16 = 2, kMaskBool = 3 };

// One part of a codec, as byte offsets inside a row (section 4).
struct PartDecode {
  int mse_bits = 0;     // m_p
  int coord_offset = 0; // o_p
  int dim = 0;          // d_p
  int seg_count = 0;
  int seg_width[3] = {0, 0, 0};
  int seg_offset[3] = {0, 0, 0};  // byte offset of each segment from the row start
  int norm_offset = 0;            // float16 gamma_p
  int rnorm_offset = -1;          // float16 rho_p, -1 without QJL
  const float* centroids = nullptr;  // codebook row p (256 floats)
};

struct CodecDecode {
  int dim = 0;
  int row_bytes = 0;
  int num_parts = 0;
  int qjl_offset = -1;  // sign bits, -1 without QJL
  PartDecode parts[4];
};

struct ChunkArgs {
  const uint8_t* k_rows = nullptr;  // row 0 of the run; rows are k.row_bytes apart
  const uint8_t* v_rows = nullptr;
  int64_t count = 0;                // rows in the run
  int64_t first_token = 0;          // logical token index of row 0 (for the mask)
  CodecDecode k;
  CodecDecode v;
  int rows = 0;                     // query rows in the tile, 1..kTileRows
  const float* qr[kTileRows] = {};  // scale * R_k q, [D]
  const float* sq[kTileRows] = {};  // (Sq qr)_i * sqrt(pi/2) / d_p, [D]; null without QJL
  const void* mask[kTileRows] = {}; // mask row: element t is token t; null = no mask
  int mask_kind = kMaskNone;
  float softcap = 0.0f;
  // Online-softmax state, read and updated: running max, running sum, rotated-domain value accumulator [D].
  float* m = nullptr;
  float* l = nullptr;
  float* acc[kTileRows] = {};
};

void attention_chunk_scalar(const ChunkArgs& a);
#if defined(__x86_64__) || defined(_M_X64)
void attention_chunk_avx2(const ChunkArgs& a);
bool cpu_has_avx2_fma_f16c();
#endif

// Applies softcap and mask to raw scores s[r * n + j] of n tokens starting at token t0 (shared by both kernels).
void finish_scores(const ChunkArgs& a, int64_t t0, int n, float* s);
// Online softmax over a block: turns scores into weights p (in place), rescales acc and updates m, l.
// Returns false when every weight of every row is 0 (the block can be skipped).
bool softmax_block(const ChunkArgs& a, int n, float* s, int dim);

}  // namespace tq::cpu
