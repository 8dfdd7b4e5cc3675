// TQAttention on CUDA (docs/format.md sections 6-8), decode (S == 1) and prefill chunks (S > 1).
//
// Decode (S == 1, the common codecs) runs the decode kernel of attention_decode.cuh, then the reduce kernel
// unless it wrote the output itself (one split) or its splits merged in a thread-block cluster (2..8 splits,
// one wave, a promised Hadamard R_v, sm_90+: AttnArgs::cluster_merge); where the launcher chooses
// (choose_prerotate_mode), tq_prerotate_q_kernel rotates the query rows once ahead of the decode kernel instead
// of every decode block. Everything else
// (prefill chunks, QJL keys, multi-part codecs, G > 8 at some widths) runs the general path, stream-ordered kernels:
//   0. tq_rotation_form_kernel: whether each head of R_k and R_v is Sylvester-Hadamard, checked once per call;
//      for prefill chunks (a short past, or 256+ tokens), tq_mask_tiles_kernel: which 64-token cache tiles each
//      mask row sees, and which it sees whole (the mask adds exactly 0 to every token: no mask values read).
//   1. tq_rotate_q_kernel: qr = scale * R_k q (and scale * Sq qr with QJL), float32 math, stored float16 (rows
//      the split kernel rotates itself, Hadamard R_k without QJL, are skipped).
//      Prefill chunks whose G S query rows take many split-kernel blocks per kv head: tq_decode_cache_kernel
//      decodes the cache once into float16 scratch (what each block would otherwise decode for itself).
//   2. tq_attention_split_kernel: flash-decoding over the compressed cache. One block serves 16-128 query rows
//      (of the G heads x S queries) of one kv head for one split of the sequence; with G S <= 128 the cache is
//      read once per kv head.
//      Tiles of 64 compressed rows are copied global->shared with 16-byte cp.async (rows are only 2-byte aligned:
//      the copy covers the tile's aligned byte range; the unaligned head is skipped when decoding and the tail past
//      the tensor is zero-filled, never read), decoded to float16 through per-part lookup tables (pairs of codes
//      -> half2, times gamma), then Q K^T and P V run on tensor cores (mma.m16n8k16, float32 accumulation) with a
//      float32 online softmax, all in the rotated domain. Over the decoded cache the blocks copy float16 tiles
//      instead, bit-identical; without QJL or soft-cap that is the KV16 instance (no decode code in its loop, q
//      fragments in registers, three stages with one barrier per tile where they fit). The QJL term is an extra
//      D columns of K (signs times rho sqrt(pi/2)/d_p) against Sq qr. Window tokens (sinks and the recent ring)
//      are exact: extra blocks do them in float32 on CUDA cores, in the original domain. Tiles no row of a warp
//      sees (tile bits) are skipped; with one split, no window and a Hadamard R_v the block writes the output
//      itself.
//   3. tq_attention_reduce_rows_kernel (general path, one warp per row; not launched where the split kernel
//      wrote every row under a promised Hadamard R_v) or, after the decode kernel as a programmatic dependent
//      launch on sm_90+, tq_attention_reduce_warp_kernel (a promised Hadamard R_v, <= 32
//      partials per row: one warp per row) or tq_attention_reduce_kernel (one block per row; its R_v check
//      overlaps the decode kernel): merges the splits, un-rotates once (x = R_v^T y) and adds the window part.
//   The decode kernel itself, where its grid has at most one block per SM and no rotation kernel precedes it, is a
//   programmatic dependent of the stream's previous kernel and waits for it first (AttnArgs::decode_waits).
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "kernels/launch_errors.h"
#include "kernels/tq_device.cuh"
#include "kernels/tq_kernels.h"

namespace tq::kernels {
namespace {

constexpr int kThreads = 128;
constexpr int kTileTokens = 64;
constexpr int kMaxSplits = 256;
constexpr int kMaxWindowSplits = 64;
constexpr int kClusterMergeMax = 8;  // splits merged in one cluster (the portable cluster size)
constexpr int kWindowChunk = 128;
constexpr int kRotateRows = 16;
// Query rows per tq_prerotate_q_kernel block (D = 256: 4, so that its 1024 threads fit in the register file).
__host__ __device__ constexpr int prerotate_rows(int d) { return d == 256 ? 4 : 8; }
constexpr int kDecodeCacheThreads = 256;
constexpr float kNegInf = -INFINITY;
constexpr float kLog2eF = 1.4426950408889634f;

// Timing experiments on the split kernel only (bench/gpu_harness/split_skip.sh; results are wrong when set): bit 1
// replaces each mask value by 0 (no loads; the tile bits still skip hidden tiles), bit 2 skips the P V products,
// bit 4 the Q K^T products. 0 in every real build.
#ifndef TQ_EXP_SPLIT_SKIP
#define TQ_EXP_SPLIT_SKIP 0
#endif
constexpr int kExpSplitSkip = TQ_EXP_SPLIT_SKIP;

struct AttnArgs {
  AttentionParams p;
  RowLayout klay;
  RowLayout vlay;
  int group;            // G
  int rows;             // G * S query rows per kv head
  int kd;               // K columns: D, or 2D with QJL
  int nsplit;           // compressed-cache splits
  int nwin;             // window splits
  int nsp;              // nsplit + nwin
  int64_t split_tokens; // compressed rows per split (multiple of kTileTokens)
  int win_chunk;
  int window;           // W
  // shared memory carve (bytes)
  int off_k, off_v, off_raw, raw_k_bytes, raw_stage_bytes, off_tab_k, off_tab_v, smem_bytes;
  // fast decode kernel (attention_decode.cuh): 0 = generic split kernel, else its stage layout
  int fast;
  int fast_warps;       // warps per block (4, or 8 with G <= 8): a block tile is 32 tokens per warp
  int fast_k_bytes, fast_stage_bytes;
  int fast_out;         // decode kernel writes the output itself (one split, no window): no reduce kernel
  int prerotated;       // decode kernel: q rotated ahead into qbuf by tq_prerotate_q_kernel (it waits for that grid)
  int prerotate_trigger;  // tq_prerotate_q_kernel lets its dependent (the decode kernel) launch at its start
  int decode_waits;     // decode kernel launched as a programmatic dependent of whatever precedes it on the stream:
                        // it waits (griddepcontrol.wait) before reading anything (launch_attention, "early")
  int q_hadamard;       // decode kernel: rotate q by a butterfly from R_k's row 0 (p.k_rotation_hadamard promised)
  int k_promised;       // p.k_rotation_hadamard, unless TQ_Q_HADAMARD=0: no device check of R_k's structure
  int v_promised;       // p.v_rotation_hadamard, unless TQ_V_HADAMARD=0: no device check of R_v's structure
  int cluster_merge;    // decode kernel launched with its nsp splits of a (b, kv head) as one cluster: they merge
                        // through distributed shared memory (cluster_merge_pushed), no reduce kernel
  int push_off;         // cluster_merge: byte offset of the push region (mbarrier, slots) in the decode kernel's
                        // shared memory, after everything else
  // workspace
  __half* qbuf;         // [B*Hq*S][kd]
  float* part_o;        // [B*Hq*S][nsp][D]
  float2* part_ml;      // [B*Hq*S][nsp] (max, sum)
  int* rot_form;        // general path: [2 Hkv], 1 where R_k head h ([h]) / R_v head h ([Hkv + h]) is Hadamard
  int split_q;          // general path, no QJL: the split kernel rotates its own q rows when R_k is Hadamard
  uint32_t* vis;        // prefill chunks: [Bm Hm S][vis_words] bit k: mask row sees a token of cache tile k; or null
  uint32_t* full;       // with vis: [Bm Hm S][vis_words] bit k: the mask adds exactly 0 to every token of tile k
                        // (all 64 inside the mask), so the split kernel reads none of its values
  int vis_words;        // ceil(tiles / 32)
  int64_t vis_tiles;    // ceil(cache_rows / kTileTokens)
  int split_out;        // general path, one split, no window: the split kernel writes the output when R_v is Hadamard
  // Prefill chunks with many row blocks per kv head: the cache decoded once into float16 (tq_decode_cache_kernel),
  // [B Hkv][cache_rows][kd] and [B Hkv][cache_rows][D]; null: every split-kernel block decodes its own tiles.
  __half* k16;
  __half* v16;
  int kv_stage_bytes;   // split kernel with k16: bytes between its stages of K and V float16 tiles
  int kv_stages;        // split kernel with k16: 3 where they fit (the KV16 instance rings through them), else 2
};

__device__ __forceinline__ int64_t pmod(int64_t a, int64_t m) {
  int64_t r = a % m;
  return r < 0 ? r + m : r;
}

__device__ __forceinline__ int part_of(const CodecConfig& cfg, const RowLayout& lay, int i) {
  int p = 0;
  while (p + 1 < cfg.num_parts && i >= lay.part_offset[p + 1]) ++p;
  return p;
}

__device__ __forceinline__ float mask_add(const AttentionParams& p, int64_t off) {
  switch (p.mask_type) {
    case MaskType::kFloat16:
      return __half2float(static_cast<const __half*>(p.mask)[off]);
    case MaskType::kBool:
      return static_cast<const uint8_t*>(p.mask)[off] ? 0.0f : kNegInf;
    default:
      return static_cast<const float*>(p.mask)[off];
  }
}

__device__ __forceinline__ int64_t total_tokens(const AttentionParams& p, int b) {
  return p.cache_mode == kBuffer ? p.past_lengths[b] + p.new_tokens : p.mask_tokens;
}

// Compressed cache rows of sequence b: its tokens less the window's W, clamped to [0, cache_rows].
__device__ __forceinline__ int64_t compressed_rows(const AttnArgs& a, int b) {
  const int64_t n = total_tokens(a.p, b) - a.window;
  return n < 0 ? 0 : (n > a.p.cache_rows ? a.p.cache_rows : n);
}

// Logical token stored in window slot j of a sequence of `total` tokens, or -1 (section 7).
__device__ __forceinline__ int64_t window_token(int64_t j, int64_t total, int ns, int rw) {
  if (j < ns) return j < total ? j : -1;
  if (rw <= 0) return -1;
  const int64_t base = total - rw;
  const int64_t t = base + pmod(j - ns - (base - ns), rw);
  return (t >= ns && t < total) ? t : -1;
}

// Mask offset of query row r (local to kv head g) at token 0, or -1 for a padding row.
__device__ __forceinline__ int64_t mask_row(const AttnArgs& a, int b, int g, int r) {
  if (r >= a.rows) return -1;
  const AttentionParams& p = a.p;
  const int j = r / p.new_tokens;
  const int s = r % p.new_tokens;
  const int h = g * a.group + j;
  const int bm = p.mask_batch == 1 ? 0 : b;
  const int hm = p.mask_heads == 1 ? 0 : h;
  return ((static_cast<int64_t>(bm) * p.mask_heads + hm) * p.new_tokens + s) * p.mask_tokens;
}

__device__ __forceinline__ int64_t global_row(const AttnArgs& a, int b, int g, int r) {
  const AttentionParams& p = a.p;
  const int j = r / p.new_tokens;
  const int s = r % p.new_tokens;
  const int h = g * a.group + j;
  return (static_cast<int64_t>(b) * p.q_heads + h) * p.new_tokens + s;
}

// ------------------------------------------------------------------------------------------------ decoding
// Lookup table of one part. m <= 4: index = for each segment (width w, shift sh) the 2w bits of a coordinate
// pair at bits [2 sh, 2 sh + 2w) -> half2(c[code0], c[code1]). m >= 5: index = code -> half(c[code]).
__device__ void build_table(const float* codebook, int m, uint32_t* tab) {
  int widths[3];
  const int nseg = segment_widths(m, widths);
  const int entries = m <= 4 ? (1 << (2 * m)) : (1 << m);
  for (int idx = threadIdx.x; idx < entries; idx += blockDim.x) {
    if (m <= 4) {
      int code0 = 0, code1 = 0, sh = 0;
      for (int s = 0; s < nseg; ++s) {
        const int w = widths[s];
        const int pb = (idx >> (2 * sh)) & ((1 << (2 * w)) - 1);
        code0 |= (pb & ((1 << w) - 1)) << sh;
        code1 |= (pb >> w) << sh;
        sh += w;
      }
      tab[idx] = dev::pack_half2(codebook[code0], codebook[code1]);
    } else {
      tab[idx] = __half_as_ushort(__float2half_rn(codebook[idx]));
    }
  }
}

// 16 * W bits of one segment for 16 consecutive coordinates, from 2-byte aligned shared memory.
template <int W>
struct SegBits {
  uint32_t w[(W + 1) / 2];
};
template <int W>
__device__ __forceinline__ SegBits<W> load_seg(const uint8_t* ptr) {
  const uint16_t* h = reinterpret_cast<const uint16_t*>(ptr);
  SegBits<W> s;
  if constexpr (W == 1) {
    s.w[0] = h[0];
  } else {
#pragma unroll
    for (int k = 0; k < W / 2; ++k) s.w[k] = static_cast<uint32_t>(h[2 * k]) | (static_cast<uint32_t>(h[2 * k + 1]) << 16);
  }
  return s;
}

template <int W, int SH, int M>
__device__ __forceinline__ void add_segment(const uint8_t* part_codes, int dp, int group, uint32_t (&idx)[8]) {
  if constexpr ((M & W) != 0) {
    const SegBits<W> s = load_seg<W>(part_codes + dp * SH / 8 + group * 2 * W);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const int bit = 2 * k * W;
      const uint32_t word = s.w[bit / 32];
      if constexpr (M <= 4) {
        idx[k] |= ((word >> (bit % 32)) & ((1u << (2 * W)) - 1)) << (2 * SH);
      } else {
        idx[k] |= ((word >> (bit % 32)) & ((1u << W) - 1)) << SH;                  // coordinate 2k
        idx[k] |= ((word >> (bit % 32 + W)) & ((1u << W) - 1)) << (SH + 16);       // coordinate 2k + 1
      }
    }
  }
}

// Decodes coordinates [16 group, 16 group + 16) of one part into 8 half2 words scaled by gamma.
template <int M>
__device__ __forceinline__ void decode_group(const uint8_t* part_codes, int dp, int group, const uint32_t* tab,
                                             uint32_t gamma2, uint32_t (&out)[8]) {
  uint32_t idx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  // Segments widest first; shift = sum of the widths before.
  add_segment<8, (M & ~15), M>(part_codes, dp, group, idx);
  add_segment<4, (M & ~7), M>(part_codes, dp, group, idx);
  add_segment<2, (M & ~3), M>(part_codes, dp, group, idx);
  add_segment<1, (M & ~1), M>(part_codes, dp, group, idx);
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    uint32_t pair;
    if constexpr (M <= 4) {
      pair = tab[idx[k]];
    } else {
      pair = (tab[idx[k] & 0xffffu] & 0xffffu) | (tab[idx[k] >> 16] << 16);
    }
    out[k] = dev::hmul2_u32(pair, gamma2);
  }
}

__device__ __forceinline__ void decode_codes(int m, const uint8_t* part_codes, int dp, int group, const uint32_t* tab,
                                             uint32_t gamma2, uint32_t (&out)[8]) {
  switch (m) {
    case 1: decode_group<1>(part_codes, dp, group, tab, gamma2, out); break;
    case 2: decode_group<2>(part_codes, dp, group, tab, gamma2, out); break;
    case 3: decode_group<3>(part_codes, dp, group, tab, gamma2, out); break;
    case 4: decode_group<4>(part_codes, dp, group, tab, gamma2, out); break;
    case 5: decode_group<5>(part_codes, dp, group, tab, gamma2, out); break;
    case 6: decode_group<6>(part_codes, dp, group, tab, gamma2, out); break;
    case 7: decode_group<7>(part_codes, dp, group, tab, gamma2, out); break;
    default: decode_group<8>(part_codes, dp, group, tab, gamma2, out); break;
  }
}

// Chunk k of a copy that may reach past the allocation's end: the bytes before alloc_end, zero-filled after.
__device__ __forceinline__ void cp_async_chunk_bounded(uint8_t* dst, const uint8_t* aligned, const uint8_t* cache,
                                                       const uint8_t* alloc_end, int k) {
  const uint8_t* src = aligned + 16 * k;
  const int64_t left = alloc_end - src;
  const int bytes = left >= 16 ? 16 : (left > 0 ? static_cast<int>(left) : 0);
  dev::cp_async_16(dst + 16 * k, bytes > 0 ? src : cache, bytes);
}

// Copies compressed rows [row0, row0 + n) of one (b, kv head) slice into shared memory with 16-byte cp.async.
// Returns the byte offset of row0 inside dst (the slice is only 2-byte aligned). WARP: the lanes of one warp copy
// (the decode kernel's warp-private stages); else the block's threads.
template <bool WARP = false>
__device__ __forceinline__ int load_raw_tile(uint8_t* dst, const uint8_t* cache, int64_t slice_row0, int64_t n,
                                             int rb, const uint8_t* alloc_end) {
  const uint8_t* start = cache + slice_row0 * rb;
  const uintptr_t addr = reinterpret_cast<uintptr_t>(start);
  const uint8_t* aligned = start - (addr & 15);
  const int head = static_cast<int>(addr & 15);
  if constexpr (WARP) {  // (chunks from the unsigned head: the code the warp-private stages were measured with)
    const int chunks = static_cast<int>(((addr & 15) + n * rb + 15) / 16);
#pragma unroll 1
    for (int k = threadIdx.x % 32; k < chunks; k += 32) cp_async_chunk_bounded(dst, aligned, cache, alloc_end, k);
  } else {
    const int chunks = static_cast<int>((head + n * rb + 15) / 16);
    for (int k = threadIdx.x; k < chunks; k += blockDim.x) cp_async_chunk_bounded(dst, aligned, cache, alloc_end, k);
  }
  return head;
}

// One thread's decode item in the split kernel: a group of 16 coordinates of K codes (kind 0), K QJL signs
// (kind 1) or V codes (kind 2), where its bytes sit in a compressed row and where it goes in the float16 tile.
struct DecodeItem {
  int kind = 0;
  int phase = 0;         // first token of a tile this thread decodes (then every phases-th)
  int row_bytes = 0;
  int norm_offset = 0;   // gamma (kinds 0, 2) or rho (kind 1) of the item's part
  int code_offset = 0;   // the part's first segment byte (kinds 0, 2) or the group's 16 sign bits (kind 1)
  int bits = 0;
  int part_size = 0;
  int group = 0;         // 16-coordinate group inside the part
  float qjl_factor = 0.0f;  // sqrt(pi/2) / d_p
  const uint32_t* table = nullptr;
  __half* dst = nullptr;    // the item's column in row 0 of the tile
  int dst_stride = 0;
};

// The decode item of the 16 code coordinates starting at coord of a K or V row (kind 0; the caller sets kind 2
// for V): its part's norm, segment bytes, width and lookup table, and its column in the float16 tile.
__device__ __forceinline__ DecodeItem code_item(const CodecConfig& cfg, const RowLayout& lay, int coord,
                                                int row_bytes, const uint32_t* tables, __half* tile, int stride) {
  const int pp = part_of(cfg, lay, coord);
  DecodeItem item;
  item.row_bytes = row_bytes;
  item.norm_offset = lay.norm_offset + 2 * pp;
  item.code_offset = lay.code_offset[pp];
  item.bits = lay.mse_bits[pp];
  item.part_size = cfg.part_sizes[pp];
  item.group = (coord - lay.part_offset[pp]) / 16;
  item.table = tables + pp * 256;
  item.dst = tile + coord;
  item.dst_stride = stride;
  return item;
}

// Thread tid's decode item of a tile (of nthreads threads; items <= 48, so nthreads >= 96 gives phases >= 2):
// K code groups first, then K QJL sign groups, then V code groups of one token; the thread decodes its item for
// tokens phase, phase + phases, ... (phase >= phases: idle). kdst / vdst: row 0 of the float16 K / V tile.
__device__ __forceinline__ DecodeItem tile_item(const AttnArgs& a, int tid, int nthreads, const uint32_t* tab_k,
                                                const uint32_t* tab_v, __half* kdst, int kstride, __half* vdst,
                                                int vstride, int& phases) {
  const CodecConfig& kc = a.p.k_codec;
  const int d = kc.head_dim;
  const int kgroups = d / 16;
  const int kitems = kgroups * (kc.qjl ? 2 : 1);
  const int items = kitems + kgroups;
  phases = nthreads / items;
  DecodeItem dc;
  const int it = tid % items;
  if (it < kgroups) {  // K codes
    dc = code_item(kc, a.klay, it * 16, a.klay.row_bytes, tab_k, kdst, kstride);
  } else if (it < kitems) {  // K QJL signs of group grp: rho of its part, 16 sign bits
    const int grp = it - kgroups;
    const int pp = part_of(kc, a.klay, grp * 16);
    dc.kind = 1;
    dc.row_bytes = a.klay.row_bytes;
    dc.norm_offset = a.klay.rnorm_offset + 2 * pp;
    dc.code_offset = a.klay.qjl_offset + 2 * grp;
    dc.qjl_factor = 1.2533141373155001f / static_cast<float>(kc.part_sizes[pp]);
    dc.dst = kdst + d + grp * 16;
    dc.dst_stride = kstride;
  } else {  // V codes
    dc = code_item(a.p.v_codec, a.vlay, (it - kitems) * 16, a.vlay.row_bytes, tab_v, vdst, vstride);
    dc.kind = 2;
  }
  dc.phase = tid / items;
  return dc;
}

// Decodes item dc of tokens dc.phase, dc.phase + phases, ... < end of a compressed tile whose K rows start at
// kraw and V rows at vraw into float16, gamma applied; tokens >= nt_valid are written as zeros.
__device__ __forceinline__ void decode_tile_item(const DecodeItem& dc, const uint8_t* kraw, const uint8_t* vraw,
                                                 int phases, int nt_valid, int end) {
  const uint8_t* rbase = dc.kind == 2 ? vraw : kraw;
  for (int i = dc.phase; i < end; i += phases) {
    uint32_t out[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (i < nt_valid) {
      const uint8_t* row = rbase + i * dc.row_bytes;
      if (dc.kind != 1) {  // K or V codes
        const uint16_t gbits = *reinterpret_cast<const uint16_t*>(row + dc.norm_offset);
        const uint32_t gamma2 = static_cast<uint32_t>(gbits) | (static_cast<uint32_t>(gbits) << 16);
        decode_codes(dc.bits, row + dc.code_offset, dc.part_size, dc.group, dc.table, gamma2, out);
      } else {  // K QJL signs: (2 bit - 1) * rho_p * sqrt(pi/2) / d_p
        const float rho = dev::half_bits_to_float(*reinterpret_cast<const uint16_t*>(row + dc.norm_offset));
        const float sc = rho * dc.qjl_factor;
        const uint32_t sc2 = dev::pack_half2(sc, sc);
        const uint32_t bits = *reinterpret_cast<const uint16_t*>(row + dc.code_offset);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          const uint32_t b0 = (bits >> (2 * k)) & 1u;
          const uint32_t b1 = (bits >> (2 * k + 1)) & 1u;
          const uint32_t sgn = 0xBC00BC00u ^ ((b0 << 15) | (b1 << 31));
          out[k] = dev::hmul2_u32(sgn, sc2);
        }
      }
    }
    uint4* d4 = reinterpret_cast<uint4*>(dc.dst + static_cast<int64_t>(i) * dc.dst_stride);
    d4[0] = make_uint4(out[0], out[1], out[2], out[3]);
    d4[1] = make_uint4(out[4], out[5], out[6], out[7]);
  }
}

// Additive mask values of one warp's score fragment in a tile: rows at mask offsets mr0 / mr1 (-1: a padding row),
// NT 8-column tiles whose first column is token t0, this thread's columns dc = 8 n + {0, 1}; -inf where dc >= lim
// (past the tile's valid tokens or past the mask). Every load independent, at a constant offset of one row pointer.
template <int NT, MaskType MT>
__device__ __forceinline__ void load_mask_tile(const void* mask, int64_t mr0, int64_t mr1, int64_t t0, int lim,
                                               float (&m)[NT][4]) {
  using Elem = std::conditional_t<MT == MaskType::kFloat16, __half,
                                  std::conditional_t<MT == MaskType::kBool, uint8_t, float>>;
  const Elem* base = static_cast<const Elem*>(mask);
  const Elem* rows[2] = {mr0 >= 0 ? base + mr0 + t0 : nullptr, mr1 >= 0 ? base + mr1 + t0 : nullptr};
#pragma unroll
  for (int n = 0; n < NT; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int dc = n * 8 + (e & 1);
      const Elem* r = rows[e >> 1];
      float v = kNegInf;
      if (r != nullptr && dc < lim) {
        if constexpr ((kExpSplitSkip & 1) != 0) {
          v = 0.0f;
        } else if constexpr (MT == MaskType::kFloat16) {
          v = __half2float(r[dc]);
        } else if constexpr (MT == MaskType::kBool) {
          v = r[dc] ? 0.0f : kNegInf;
        } else {
          v = r[dc];
        }
      }
      m[n][e] = v;
    }
  }
}

// --------------------------------------------------------------------------------------- window (exact)
// NWARPS: warps per block (4; the decode kernel's 8-warp blocks pass 8).
template <int D, int NWARPS = kThreads / 32>
__device__ void window_block(const AttnArgs& a, int b, int g, int rowblock, int rows_per_block, int wsplit) {
  const AttentionParams& p = a.p;
  constexpr int kPerLane = (D + 31) / 32;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t total = total_tokens(p, b);
  const int64_t j0 = static_cast<int64_t>(wsplit) * a.win_chunk;
  const int64_t j1 = min(static_cast<int64_t>(j0 + a.win_chunk), p.window_rows);
  const int64_t bg = static_cast<int64_t>(b) * p.kv_heads + g;
  const int split = a.nsplit + wsplit;
  for (int rl = warp; rl < rows_per_block; rl += NWARPS) {
    const int r = rowblock * rows_per_block + rl;
    if (r >= a.rows) break;
    const int64_t grow = global_row(a, b, g, r);
    const int64_t mrow = mask_row(a, b, g, r);
    float q[kPerLane], o[kPerLane];
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int i = lane + 32 * k;
      q[k] = i < D ? dev::load_as_float(p.q, p.dtype, grow * D + i) * p.scale : 0.0f;
      o[k] = 0.0f;
    }
    float m_run = kNegInf, l_run = 0.0f;
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t t = window_token(j, total, p.sink_tokens, p.recent_window);
      if (t < 0 || t >= p.mask_tokens) continue;
      const int64_t base = (bg * p.window_rows + j) * D;
      float dot = 0.0f;
#pragma unroll
      for (int k = 0; k < kPerLane; ++k) {
        const int i = lane + 32 * k;
        if (i < D) dot += q[k] * dev::load_as_float(p.k_window, p.dtype, base + i);
      }
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
      float sc = dot;
      if (p.softcap > 0.0f) sc = p.softcap * tanhf(sc / p.softcap);
      sc += mask_add(p, mrow + t);
      if (sc == kNegInf || sc != sc) continue;
      const float m_new = fmaxf(m_run, sc);
      const float alpha = __expf(m_run - m_new);
      const float pr = __expf(sc - m_new);
      l_run = l_run * alpha + pr;
#pragma unroll
      for (int k = 0; k < kPerLane; ++k) {
        const int i = lane + 32 * k;
        const float v = i < D ? dev::load_as_float(p.v_window, p.dtype, base + i) : 0.0f;
        o[k] = o[k] * alpha + pr * v;
      }
      m_run = m_new;
    }
    float* po = a.part_o + (grow * a.nsp + split) * D;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int i = lane + 32 * k;
      if (i < D) po[i] = o[k];
    }
    if (lane == 0) a.part_ml[grow * a.nsp + split] = make_float2(m_run, l_run);
  }
}

// ------------------------------------------------------------------------------------ Hadamard q rows
// One warp's query row through a Sylvester-Hadamard R_k: dst[N lane + e] = float16(scale * (H (R[0] .* q))) for
// global query row grow (lane holds coordinates N lane .. N lane + N - 1, r0 its entries of R's first row;
// dev::warp_fwht), zeros for grow < 0. The split kernel, the rotate kernel and the decode kernel (hadamard_q_rows)
// rotate through here.
template <int N>
__device__ __forceinline__ void hadamard_q_row(const void* q, DType dtype, float scale, const float (&r0)[N],
                                               int64_t grow, int lane, __half* dst) {
  float v[N];
  if (grow >= 0) {
#pragma unroll
    for (int e = 0; e < N; ++e) v[e] = r0[e] * dev::load_as_float(q, dtype, grow * (32 * N) + N * lane + e);
    dev::warp_fwht<N>(v, lane);
  } else {
#pragma unroll
    for (int e = 0; e < N; ++e) v[e] = 0.0f;
  }
#pragma unroll
  for (int e = 0; e < N; ++e) dst[N * lane + e] = __float2half_rn(v[e] * scale);
}

// This lane's N entries of R's first row (coordinates N lane .. N lane + N - 1).
template <int N>
__device__ __forceinline__ void load_hadamard_row0(const float* rot, int lane, float (&r0)[N]) {
#pragma unroll
  for (int e = 0; e < N; ++e) r0[e] = __ldg(rot + N * lane + e);
}

// One split's partial (this lane's N coordinates) times its weight f into the cache sum y (split < nsplit) or the
// window sum w; a weight of 0 adds 0, whatever the partial holds (partials of weight 0 may be garbage). Both warp
// reduces (decode and general path) add through here, in split order.
template <int N>
__device__ __forceinline__ void add_weighted_partial(const float (&raw)[N], float f, bool cache_split, float (&y)[N],
                                                     float (&w)[N]) {
#pragma unroll
  for (int e = 0; e < N; ++e) {
    const float v = f != 0.0f ? raw[e] * f : 0.0f;
    if (cache_split) {
      y[e] += v;
    } else {
      w[e] += v;
    }
  }
}

// ------------------------------------------------------------------------------------ fast decode path
#include "kernels/attention_decode.cuh"

// ------------------------------------------------------------------------------------ split-kernel prologue/epilogue
// A Sylvester-Hadamard R_k (rot_form), no QJL: the split kernel rotates its own query rows [row0, row0 + rb) into
// shared memory qs (zeros past the last row), one warp per row.
template <int D>
__device__ __forceinline__ void split_rotate_q(const AttnArgs& a, const float* rot, int b, int g, int row0, int rb,
                                               int nwarps, __half* qs, int qstride) {
  constexpr int N = D / 32;
  const int lane = threadIdx.x % 32;
  float r0[N];
  load_hadamard_row0<N>(rot, lane, r0);
  for (int rl = threadIdx.x / 32; rl < rb; rl += nwarps) {
    const int r = row0 + rl;
    hadamard_q_row<N>(a.p.q, a.p.dtype, a.p.scale, r0, r < a.rows ? global_row(a, b, g, r) : -1, lane,
                      qs + rl * qstride);
  }
}

// A Sylvester-Hadamard R_v (rot_form), one split, no window: the warp's 16 rows are whole, so the warp writes
// out = R_v[0] .* H (o / l) itself, bit for bit what the reduce kernel computes from this split's partials (one
// split: weight exactly 1; the same lane layout, butterflies and rounding), so a plan with the reduce kernel (more
// splits, as a buffer-mode cache's capacity gives) and one without agree exactly. Row by row through buf (D floats
// of shared memory per warp): the quad holding the row writes its fragment columns, every lane reads its N.
template <int DT>
__device__ __forceinline__ void split_write_out(const AttnArgs& a, const float* rot, int b, int g, int row0,
                                                const float (&o)[DT][4], const float (&l)[2], float* buf) {
  const AttentionParams& p = a.p;
  constexpr int D = DT * 8;
  constexpr int N = D / 32;
  const int lane = threadIdx.x % 32;
  const int q4 = lane % 4;
  float rv[N];  // this lane's entries of R_v's first row, loaded once (per row they were a global-load stall)
#pragma unroll
  for (int e = 0; e < N; ++e) rv[e] = __ldg(rot + N * lane + e);
#pragma unroll
  for (int h = 0; h < 2; ++h) {  // fragment half: compile-time, so o stays in registers
#pragma unroll 1
    for (int r8 = 0; r8 < 8; ++r8) {
      if (lane / 4 == r8) {
#pragma unroll
        for (int i = 0; i < DT; ++i) {
          buf[8 * i + 2 * q4] = o[i][2 * h];
          buf[8 * i + 2 * q4 + 1] = o[i][2 * h + 1];
        }
      }
      __syncwarp();
      const float lr = __shfl_sync(0xffffffffu, l[h], r8 * 4);
      float y[N];
#pragma unroll
      for (int e = 0; e < N; ++e) y[e] = 0.0f + buf[N * lane + e];  // the reduce kernel's 0 + 1 * partial
      __syncwarp();
      const int r = row0 + 8 * h + r8;
      if (r >= a.rows) continue;  // uniform
      dev::warp_fwht<N>(y, lane);
      const int64_t base = global_row(a, b, g, r) * D + N * lane;
      const float w = 0.0f;  // no window part
      float out[N];
#pragma unroll
      for (int e = 0; e < N; ++e) out[e] = lr > 0.0f ? (rv[e] * y[e] + w) / lr : 0.0f;
      dev::store_row_from_float<N>(p.out, p.dtype, base, out);
    }
  }
}

// ------------------------------------------------------------------------------------ compressed splits
// Rows [t0, t0 + kTileTokens) of a float16 [rows][W] matrix into a shared-memory tile of row stride W + 8 with
// 16-byte cp.async, NT threads; rows >= n are zero-filled (their source clamped to row t0, never read). Each
// thread copies the same column of rows r, r + NT / (W / 8), ...: one base address, immediate offsets.
template <int W, int NT>
__device__ __forceinline__ void copy_tile16(__half* dst, const __half* src, int64_t t0, int64_t n) {
  constexpr int kChunks = W / 8;             // 16-byte chunks per row
  constexpr int kRowsPerPass = NT / kChunks;
  static_assert(NT % kChunks == 0 && kTileTokens % kRowsPerPass == 0, "whole copy passes");
  const int r = threadIdx.x / kChunks;
  const int c = threadIdx.x % kChunks;
  const __half* row0 = src + t0 * W;
  const __half* s = row0 + r * W + c * 8;
  __half* d = dst + r * (W + 8) + c * 8;
  if (n >= kTileTokens) {  // a whole tile (all but a split's last): no per-copy address or size
#pragma unroll
    for (int i = 0; i < kTileTokens / kRowsPerPass; ++i)
      dev::cp_async_16(d + i * kRowsPerPass * (W + 8), s + i * kRowsPerPass * W, 16);
    return;
  }
#pragma unroll 1
  for (int i = 0; i < kTileTokens / kRowsPerPass; ++i) {
    const bool ok = r + i * kRowsPerPass < n;
    dev::cp_async_16(d + i * kRowsPerPass * (W + 8), ok ? s + i * kRowsPerPass * W : row0, ok ? 16 : 0);
  }
}

// Narrows [c0, c1) to the tiles from the first to the last that any of rows [row0, row0 + rb) sees (tile bits);
// c1 = c0 where it sees none. Every thread returns the same range. range: two ints of shared memory that nothing
// else uses before the call returns (three barriers; no static shared memory, so the launcher's dynamic budget
// stays the whole opt-in size).
template <int NT>
__device__ __forceinline__ void block_visible_tiles(const AttnArgs& a, int b, int g, int row0, int rb, int64_t& c0,
                                                    int64_t& c1, int* range) {
  if (threadIdx.x == 0) {
    range[0] = INT_MAX;
    range[1] = -1;
  }
  const int t_first = static_cast<int>(c0 / kTileTokens);
  const int t_last = static_cast<int>((c1 - 1) / kTileTokens);
  const int w_first = t_first / 32;
  const int words = t_last / 32 - w_first + 1;
  int lo = INT_MAX, hi = -1;
  // One (row, word) item per thread and round: independent loads.
#pragma unroll 4
  for (int item = threadIdx.x; item < rb * words; item += NT) {
    const int rl = item / words;
    const int w = w_first + item % words;
    const int64_t mrow = mask_row(a, b, g, row0 + rl);
    if (mrow < 0 || a.p.mask_tokens <= 0) continue;
    uint32_t x = a.vis[(mrow / a.p.mask_tokens) * a.vis_words + w];
    if (w == t_first / 32) x &= ~0u << (t_first % 32);
    if (w == t_last / 32) x &= ~0u >> (31 - t_last % 32);
    if (x != 0u) {
      lo = min(lo, w * 32 + __ffs(static_cast<int>(x)) - 1);
      hi = max(hi, w * 32 + 31 - __clz(static_cast<int>(x)));
    }
  }
  lo = __reduce_min_sync(0xffffffffu, lo);
  hi = __reduce_max_sync(0xffffffffu, hi);
  __syncthreads();  // range initialized
  if (threadIdx.x % 32 == 0) {
    atomicMin(&range[0], lo);
    atomicMax(&range[1], hi);
  }
  __syncthreads();
  lo = range[0];
  hi = range[1];
  __syncthreads();  // every thread has read the range: the caller may reuse its shared memory
  if (hi < 0) {
    c1 = c0;
  } else {
    c0 = max(c0, static_cast<int64_t>(lo) * kTileTokens);
    c1 = min(c1, static_cast<int64_t>(hi + 1) * kTileTokens);
  }
}

// Threads of the split kernel: 4 warps, or 8 for 128-row blocks (WM = 8, prefill chunks).
constexpr int split_threads(int wm) { return wm == 8 ? 2 * kThreads : kThreads; }

// KV16: an instance for a.k16 without QJL columns (a.kd == D), without soft-cap, and WM >= 4: its tile loop carries
// no decode or soft-cap code and K's width is a compile-time constant (a smaller, fully unrolled loop body: the
// general instance's misses the instruction cache, bench/NOTES.md "Prefill v4").
template <int D, int WM, bool KV16>
__global__ void __launch_bounds__(split_threads(WM)) tq_attention_split_kernel(const AttnArgs a) {
  constexpr int WN = WM >= 4 ? 1 : 4 / WM;  // warps along tokens
  constexpr int NT = 32 * WM * WN;          // threads
  constexpr int RB = 16 * WM;               // query rows per block
  constexpr int NW = kTileTokens / WN;   // tokens per warp per tile
  constexpr int NTILES = NW / 8;
  constexpr int DT = D / 8;
  const AttentionParams& p = a.p;
  const int split = blockIdx.x;
  // Last row blocks first: in a causal chunk they see the most tiles, so the long blocks start in the first wave.
  const int rowblock = static_cast<int>(gridDim.y) - 1 - static_cast<int>(blockIdx.y);
  const int b = blockIdx.z / p.kv_heads;
  const int g = blockIdx.z % p.kv_heads;

  if (split >= a.nsplit) {
    window_block<D, NT / 32>(a, b, g, rowblock, RB, split - a.nsplit);
    return;
  }

  extern __shared__ __align__(16) char smem[];
  __half* qs = reinterpret_cast<__half*>(smem);
  __half* ks = reinterpret_cast<__half*>(smem + a.off_k);
  __half* vs = reinterpret_cast<__half*>(smem + a.off_v);
  uint8_t* raw = reinterpret_cast<uint8_t*>(smem + a.off_raw);
  uint32_t* tab_k = reinterpret_cast<uint32_t*>(smem + a.off_tab_k);
  uint32_t* tab_v = reinterpret_cast<uint32_t*>(smem + a.off_tab_v);
  const int kd = KV16 ? D : a.kd;  // the KV16 instance takes no QJL columns: K's width is D there
  const int qstride = kd + 8;
  const int kstride = kd + 8;
  constexpr int vstride = D + 8;
  // a.k16: the cache comes decoded (tq_decode_cache_kernel); float16 tiles stream in, two stages of K and V.
  const bool kv16 = KV16 || a.k16 != nullptr;
  const int kv_stage = a.kv_stage_bytes / 2;  // halves between the stages' K (and V) tiles; 0 without a.k16

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int wm = warp / WN;
  const int wn = warp % WN;

  const int64_t n_valid = compressed_rows(a, b);
  int64_t c0 = static_cast<int64_t>(split) * a.split_tokens;
  int64_t c1 = min(c0 + a.split_tokens, n_valid);
  const int64_t bg = static_cast<int64_t>(b) * p.kv_heads + g;

  if (c0 >= c1) {
    for (int rl = threadIdx.x; rl < RB; rl += NT) {
      const int r = rowblock * RB + rl;
      if (r < a.rows) a.part_ml[global_row(a, b, g, r) * a.nsp + split] = make_float2(kNegInf, 0.0f);
    }
    return;
  }
  // With tile bits, the loop runs over the tiles some row of the block sees only (a causal chunk without a past:
  // about half of them); every warp skipped the others anyway, so the result is bit for bit the same.
  if (a.vis != nullptr) block_visible_tiles<NT>(a, b, g, rowblock * RB, RB, c0, c1, reinterpret_cast<int*>(smem));

  const CodecConfig& kc = p.k_codec;
  const CodecConfig& vc = p.v_codec;
  const int krb = a.klay.row_bytes;
  const int vrb = a.vlay.row_bytes;
  const uint8_t* kslice = p.k_cache + bg * p.cache_rows * krb;
  const uint8_t* vslice = p.v_cache + bg * p.cache_rows * vrb;
  const int64_t all_rows = static_cast<int64_t>(p.batch) * p.kv_heads * p.cache_rows;
  const uint8_t* kend = p.k_cache + all_rows * krb;
  const uint8_t* vend = p.v_cache + all_rows * vrb;

  // Tokens [t0, t0 + kTileTokens) of the decoded cache into stage st (rows >= n zero-filled).
  const __half* k16 = kv16 ? a.k16 + bg * p.cache_rows * kd : nullptr;
  const __half* v16 = kv16 ? a.v16 + bg * p.cache_rows * D : nullptr;
  // K and V apart: V's row width D is a compile-time constant (its index math shifts); one shared loop with a
  // run-time width measured ~1% slower on an H100. Where K's width is D too (no QJL columns) both copies take
  // copy_tile16: this thread's row and column are the same in every pass, so each 16-byte copy is one address
  // plus an immediate (the general loop's per-copy 64-bit index math was ~28 instructions per copy).
  auto load_tile16 = [&](int st, int64_t t0, int64_t n) {
    if (kd == D) {  // no QJL columns: K's width is a compile-time constant too (uniform branch)
      copy_tile16<D, NT>(ks + st * kv_stage, k16, t0, n);
    } else {
      const int kc8 = kd / 8;
      for (int idx = threadIdx.x; idx < kTileTokens * kc8; idx += NT) {
        const int r = idx / kc8;
        const int c = idx % kc8;
        const __half* src = k16 + (t0 + (r < n ? r : 0)) * kd + c * 8;
        dev::cp_async_16(ks + st * kv_stage + r * kstride + c * 8, src, r < n ? 16 : 0);
      }
    }
    copy_tile16<D, NT>(vs + st * kv_stage, v16, t0, n);
  };
  // First tile in flight while the tables and queries are set up.
  int heads[2][2];
  {
    const int64_t n = min(static_cast<int64_t>(kTileTokens), c1 - c0);
    if (kv16) {
      load_tile16(0, c0, n);
    } else {
      heads[0][0] = load_raw_tile(raw, kslice, c0, n, krb, kend);
      heads[0][1] = load_raw_tile(raw + a.raw_k_bytes, vslice, c0, n, vrb, vend);
    }
    dev::cp_async_commit();
  }
  if (!kv16) {
    for (int pp = 0; pp < kc.num_parts; ++pp)
      build_table(p.k_codebook + pp * 256, a.klay.mse_bits[pp], tab_k + pp * 256);
    for (int pp = 0; pp < vc.num_parts; ++pp)
      build_table(p.v_codebook + pp * 256, a.vlay.mse_bits[pp], tab_v + pp * 256);
  }
  const int krh = p.k_rotation_heads == 1 ? 0 : g;
  if (a.split_q && a.rot_form[krh] != 0) {  // uniform: rotate this block's q rows here (rotate kernel skipped them)
    split_rotate_q<D>(a, p.k_rotation + static_cast<int64_t>(krh) * D * D, b, g, rowblock * RB, RB, NT / 32, qs,
                      qstride);
  } else {
    for (int idx = threadIdx.x; idx < RB * (kd / 8); idx += NT) {
      const int rl = idx / (kd / 8);
      const int c8 = idx % (kd / 8);
      const int r = rowblock * RB + rl;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (r < a.rows) v = *reinterpret_cast<const uint4*>(a.qbuf + global_row(a, b, g, r) * kd + c8 * 8);
      *reinterpret_cast<uint4*>(qs + rl * qstride + c8 * 8) = v;
    }
  }

  // Per-thread rows of the mma fragments: rl0 = wm*16 + lane/4 and rl0 + 8.
  const int rl0 = wm * 16 + lane / 4;
  const int64_t mrow0 = mask_row(a, b, g, rowblock * RB + rl0);
  const int64_t mrow1 = mask_row(a, b, g, rowblock * RB + rl0 + 8);

  // This thread's mask values of a tile (its score fragment's positions), loaded a tile ahead where registers
  // allow (D <= 128; at D = 256 the output fragments leave no room) so their latency hides behind a whole tile.
  constexpr bool kPrefetchMask = D <= 128;
  float madd[NTILES][4];
  const int mcol0 = wn * NW + (lane % 4) * 2;
  // Mask rows of this thread's two fragment rows (indices into the tile bits).
  const int64_t vrow0 = mrow0 >= 0 && p.mask_tokens > 0 ? mrow0 / p.mask_tokens : -1;
  const int64_t vrow1 = mrow1 >= 0 && p.mask_tokens > 0 ? mrow1 / p.mask_tokens : -1;
  bool madd_plain = false;  // warp-uniform: madd is all zeros (not even filled in)
  auto fetch_mask = [&](int64_t tile0, int tile_valid) {
    // Tiles the warp's rows see whole (a.full): the mask adds exactly 0, only the tile's end is hidden.
    if (a.full != nullptr) {
      const int64_t tile = tile0 / kTileTokens;
      const uint32_t bit = 1u << (tile % 32);
      const bool whole = (vrow0 < 0 || (a.full[vrow0 * a.vis_words + tile / 32] & bit) != 0u) &&
                         (vrow1 < 0 || (a.full[vrow1 * a.vis_words + tile / 32] & bit) != 0u);
      if (__all_sync(0xffffffffu, whole)) {
        // Whole and every token valid: no mask values at all (padding rows too: their outputs are never written).
        // Not at D = 256, where the second score path made ptxas spill.
        madd_plain = D <= 128 && tile_valid == kTileTokens;
        if (madd_plain) return;
        const int lim = tile_valid - mcol0;
#pragma unroll
        for (int n = 0; n < NTILES; ++n) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const bool row_ok = (e >> 1) == 0 ? mrow0 >= 0 : mrow1 >= 0;
            madd[n][e] = row_ok && n * 8 + (e & 1) < lim ? 0.0f : kNegInf;
          }
        }
        return;
      }
    }
    madd_plain = false;
    const int64_t t0 = tile0 + mcol0 + p.sink_tokens;
    const int lim = static_cast<int>(max(static_cast<int64_t>(-1), min(static_cast<int64_t>(tile_valid - mcol0),
                                                                        p.mask_tokens - t0)));
    switch (p.mask_type) {
      case MaskType::kFloat16: load_mask_tile<NTILES, MaskType::kFloat16>(p.mask, mrow0, mrow1, t0, lim, madd); break;
      case MaskType::kBool: load_mask_tile<NTILES, MaskType::kBool>(p.mask, mrow0, mrow1, t0, lim, madd); break;
      default: load_mask_tile<NTILES, MaskType::kFloat32>(p.mask, mrow0, mrow1, t0, lim, madd); break;
    }
  };
  if constexpr (kPrefetchMask) fetch_mask(c0, static_cast<int>(min(static_cast<int64_t>(kTileTokens), c1 - c0)));
  // The cached visibility bit word.
  int64_t vis_word = -1;
  uint32_t vis_bits[2] = {0u, 0u};
  // The next tile's mask values (D <= 128), unless the cached tile bits already say this warp will skip it.
  auto prefetch_next_mask = [&](int64_t tile0) {
    const int64_t next = tile0 / kTileTokens + 1;
    bool next_vis = true;
    if (a.vis != nullptr && next / 32 == vis_word)
      next_vis = __any_sync(0xffffffffu, ((vis_bits[0] | vis_bits[1]) >> (next % 32)) & 1u);
    if (next_vis && tile0 + kTileTokens < c1)
      fetch_mask(tile0 + kTileTokens,
                 static_cast<int>(min(static_cast<int64_t>(kTileTokens), c1 - tile0 - kTileTokens)));
  };

  float oacc[DT][4];
#pragma unroll
  for (int i = 0; i < DT; ++i) oacc[i][0] = oacc[i][1] = oacc[i][2] = oacc[i][3] = 0.0f;
  float m_run[2] = {kNegInf, kNegInf};
  float l_run[2] = {0.0f, 0.0f};

  // This thread's decode item (tile_item); unused where the cache comes decoded (a.k16).
  static_assert(NT >= 96, "at least two tokens per item round");
  int phases = 0;
  const DecodeItem dc = tile_item(a, threadIdx.x, NT, tab_k, tab_v, ks, kstride, vs, vstride, phases);
  // KV16 with three stages (a.kv_stages): tiles it + 1 and it + 2 stream while tile it is computed, and the
  // barrier at the top of an iteration is the only one (the stage it refills was read an iteration ago).
  const bool ring3 = KV16 && a.kv_stages == 3;
  if (ring3) {
    const int64_t t1 = c0 + kTileTokens;
    if (t1 < c1) load_tile16(1, t1, min(static_cast<int64_t>(kTileTokens), c1 - t1));
    dev::cp_async_commit();
  }
  // KV16 at D <= 128: this warp's q fragments stay in registers for the whole loop (no ldmatrix of q per tile).
  constexpr bool kQReg = KV16 && D <= 128;
  uint32_t qf[kQReg ? D / 16 : 1][4];
  if constexpr (kQReg) {
    __syncthreads();  // q rows in shared memory
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      dev::ldmatrix_x4(qf[kk], qs + (wm * 16 + lane % 16) * qstride + kk * 16 + (lane / 16) * 8);
  }
  int stage = 0;
  for (int64_t ct = c0; ct < c1; ct += kTileTokens) {
    const int nt_valid = static_cast<int>(min(static_cast<int64_t>(kTileTokens), c1 - ct));
    // ring3: the groups committed hold tiles up to it + 1, so tile it has landed once at most one is pending.
    if (!ring3 && ct + kTileTokens < c1) {
      const int64_t n = min(static_cast<int64_t>(kTileTokens), c1 - ct - kTileTokens);
      if (kv16) {
        load_tile16(stage ^ 1, ct + kTileTokens, n);
      } else {
        uint8_t* dst = raw + (stage ^ 1) * a.raw_stage_bytes;
        heads[stage ^ 1][0] = load_raw_tile(dst, kslice, ct + kTileTokens, n, krb, kend);
        heads[stage ^ 1][1] = load_raw_tile(dst + a.raw_k_bytes, vslice, ct + kTileTokens, n, vrb, vend);
      }
    }
    if (!ring3) dev::cp_async_commit();
    dev::cp_async_wait<1>();
    // Does the mask let this warp's rows see any token of the tile (tile bits of tq_mask_tiles_kernel; without
    // them, yes)? A warp that sees none skips the tile's products; a block none of whose warps sees it skips the
    // decode too (a causal prefill chunk without a past hides about half of its tiles).
    bool warp_vis = true;
    if (a.vis != nullptr) {
      const int64_t tile = ct / kTileTokens;
      if (tile / 32 != vis_word) {
        vis_word = tile / 32;
        vis_bits[0] = vrow0 >= 0 ? a.vis[vrow0 * a.vis_words + vis_word] : 0u;
        vis_bits[1] = vrow1 >= 0 ? a.vis[vrow1 * a.vis_words + vis_word] : 0u;
      }
      warp_vis = __any_sync(0xffffffffu, ((vis_bits[0] | vis_bits[1]) >> (tile % 32)) & 1u);
    }
    const bool block_vis = __syncthreads_or(warp_vis) != 0;
    if (ring3) {  // every warp is past the previous iteration: its stage takes tile it + 2
      const int64_t t2 = ct + 2 * kTileTokens;
      if (t2 < c1) load_tile16(stage == 0 ? 2 : stage - 1, t2, min(static_cast<int64_t>(kTileTokens), c1 - t2));
      dev::cp_async_commit();
    }

    // Decode the tile into float16 K (and QJL columns) and V, gamma applied; rows past the end are zeros. Each
    // thread keeps one item (dc, set up before the loop) and decodes it for tokens phase, phase + phases, ...
    if (block_vis && !kv16 && dc.phase < phases) {
      const uint8_t* sraw = raw + stage * a.raw_stage_bytes;
      decode_tile_item(dc, sraw + heads[stage][0], sraw + a.raw_k_bytes + heads[stage][1], phases, nt_valid,
                       kTileTokens);
    }
    if (block_vis && !kv16) __syncthreads();  // uniform (float16 tiles: the barrier above already covers them)

    if (warp_vis) {  // uniform per warp
      const __half* kst = ks + stage * kv_stage;
      const __half* vst = vs + stage * kv_stage;
      // S = Q K^T for this warp's 16 rows and NW tokens.
      float sacc[NTILES][4];
#pragma unroll
      for (int n = 0; n < NTILES; ++n) sacc[n][0] = sacc[n][1] = sacc[n][2] = sacc[n][3] = 0.0f;
#pragma unroll(KV16 ? D / 16 : 1)
      for (int kk = 0; kk < ((kExpSplitSkip & 4) != 0 ? 0 : kd / 16); ++kk) {
        uint32_t af[4];
        if constexpr (kQReg) {
          af[0] = qf[kk][0];
          af[1] = qf[kk][1];
          af[2] = qf[kk][2];
          af[3] = qf[kk][3];
        } else {
          dev::ldmatrix_x4(af, qs + (wm * 16 + lane % 16) * qstride + kk * 16 + (lane / 16) * 8);
        }
#pragma unroll
        for (int n2 = 0; n2 < NTILES / 2; ++n2) {
          uint32_t bf[4];
          dev::ldmatrix_x4(bf, kst + (wn * NW + n2 * 16 + lane % 8 + (lane / 16) * 8) * kstride + kk * 16 +
                                   ((lane / 8) % 2) * 8);
          dev::mma_16816(sacc[2 * n2], af, bf[0], bf[1]);
          dev::mma_16816(sacc[2 * n2 + 1], af, bf[2], bf[3]);
        }
      }
      // Soft-cap, mask, validity; online softmax (rows rl0 and rl0 + 8). The mask values were loaded ahead (the
      // previous tile, or just above for D = 256), all independent: loaded one by one after each score's branches
      // they were the kernel's longest stall (bench/NOTES.md "Prefill v2").
      if constexpr (!kPrefetchMask) fetch_mask(ct, nt_valid);
#pragma unroll
      for (int n = 0; n < NTILES; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float sc = sacc[n][e];
          if (!KV16 && p.softcap > 0.0f) sc = p.softcap * tanhf(sc / p.softcap);  // KV16: no soft-cap
          // -inf where excluded; NaN (an infinite score against -inf, or a NaN score) -> -inf (fmaxf drops NaN)
          sacc[n][e] = fmaxf(madd_plain ? sc : sc + madd[n][e], kNegInf);
        }
      }
      // Row maxima as a tree (max is exact in any order; a chain of NW / 4 dependent FMNMX before was on the
      // loop's critical path).
      float tile_max[2];
      {
        float mx[NTILES][2];
#pragma unroll
        for (int n = 0; n < NTILES; ++n) {
          mx[n][0] = fmaxf(sacc[n][0], sacc[n][1]);
          mx[n][1] = fmaxf(sacc[n][2], sacc[n][3]);
        }
#pragma unroll
        for (int w = NTILES / 2; w >= 1; w /= 2) {
#pragma unroll
          for (int n = 0; n < w; ++n) {
            mx[n][0] = fmaxf(mx[n][0], mx[n + w][0]);
            mx[n][1] = fmaxf(mx[n][1], mx[n + w][1]);
          }
        }
        tile_max[0] = mx[0][0];
        tile_max[1] = mx[0][1];
      }
      if constexpr (kPrefetchMask) prefetch_next_mask(ct);  // registers of madd are free: a whole tile ahead
      float alpha[2], m_use[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 1));
        tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 2));
        const float m_new = fmaxf(m_run[h], tile_max[h]);
        m_use[h] = m_new == kNegInf ? 0.0f : m_new;
        alpha[h] = exp2_ftz((m_run[h] - m_use[h]) * kLog2eF);  // exactly 1 where the max did not move
        m_run[h] = m_new;
        l_run[h] *= alpha[h];
      }
      if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {  // warp-uniform: skip a no-op rescale
#pragma unroll
        for (int i = 0; i < DT; ++i) {
          oacc[i][0] *= alpha[0];
          oacc[i][1] *= alpha[0];
          oacc[i][2] *= alpha[1];
          oacc[i][3] *= alpha[1];
        }
      }
      const float ml[2] = {m_use[0] * kLog2eF, m_use[1] * kLog2eF};
      {
        // Row sums as a tree, then one add to l_run (a chain of NW / 4 dependent FADDs before).
        float ps[NTILES][2];
#pragma unroll
        for (int n = 0; n < NTILES; ++n) {
#pragma unroll
          for (int e = 0; e < 4; ++e) sacc[n][e] = exp2_ftz(fmaf(sacc[n][e], kLog2eF, -ml[e >> 1]));
          ps[n][0] = sacc[n][0] + sacc[n][1];
          ps[n][1] = sacc[n][2] + sacc[n][3];
        }
#pragma unroll
        for (int w = NTILES / 2; w >= 1; w /= 2) {
#pragma unroll
          for (int n = 0; n < w; ++n) {
            ps[n][0] += ps[n + w][0];
            ps[n][1] += ps[n + w][1];
          }
        }
        l_run[0] += ps[0][0];
        l_run[1] += ps[0][1];
      }
      // O += P V.
#pragma unroll
      for (int k2 = 0; k2 < ((kExpSplitSkip & 2) != 0 ? 0 : NW / 16); ++k2) {
        uint32_t af[4];
        af[0] = dev::pack_half2(sacc[2 * k2][0], sacc[2 * k2][1]);
        af[1] = dev::pack_half2(sacc[2 * k2][2], sacc[2 * k2][3]);
        af[2] = dev::pack_half2(sacc[2 * k2 + 1][0], sacc[2 * k2 + 1][1]);
        af[3] = dev::pack_half2(sacc[2 * k2 + 1][2], sacc[2 * k2 + 1][3]);
#pragma unroll
        for (int d2 = 0; d2 < D / 16; ++d2) {
          uint32_t bf[4];
          dev::ldmatrix_x4_trans(bf, vst + (wn * NW + k2 * 16 + lane % 8 + ((lane / 8) % 2) * 8) * vstride + d2 * 16 +
                                         (lane / 16) * 8);
          dev::mma_16816(oacc[2 * d2], af, bf[0], bf[1]);
          dev::mma_16816(oacc[2 * d2 + 1], af, bf[2], bf[3]);
        }
      }
    } else if constexpr (kPrefetchMask) {
      prefetch_next_mask(ct);
    }
    if (ring3) {
      stage = stage == 2 ? 0 : stage + 1;
    } else {
      __syncthreads();
      stage ^= 1;
    }
  }
  dev::cp_async_wait<0>();
  if (ring3) __syncthreads();  // the epilogue below reuses the tile space: every warp is done with its last tile

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 1);
    l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 2);
  }
  if constexpr (WN == 1) {
    const int vrh = p.v_rotation_heads == 1 ? 0 : g;
    if (a.split_out && a.rot_form[p.kv_heads + vrh] != 0) {  // uniform: the output itself, no reduce kernel
      float* buf = reinterpret_cast<float*>(smem + a.off_k) + (threadIdx.x / 32) * D;  // tile space is free
      split_write_out<DT>(a, p.v_rotation + static_cast<int64_t>(vrh) * D * D, b, g, rowblock * RB + wm * 16, oacc,
                          l_run, buf);
      return;
    }
    // Each warp holds whole rows: its fragments go straight to the partials (what the merge below computes for
    // one warp, bit for bit: weight exp(0) = 1, zeros for a row that saw nothing).
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = rowblock * RB + rl0 + 8 * h;
      if (r >= a.rows) continue;
      const int64_t grow = global_row(a, b, g, r);
      float* po = a.part_o + (grow * a.nsp + split) * D + (lane % 4) * 2;
      const bool seen = m_run[h] != kNegInf;
#pragma unroll
      for (int i = 0; i < DT; ++i)
        *reinterpret_cast<float2*>(po + i * 8) =
            seen ? make_float2(oacc[i][2 * h], oacc[i][2 * h + 1]) : make_float2(0.0f, 0.0f);
      if (lane % 4 == 0) a.part_ml[grow * a.nsp + split] = make_float2(m_run[h], seen ? l_run[h] : 0.0f);
    }
    return;
  }
  // Merge the WN warps of each row group through shared memory (the K/V tile space is free now).
  float* cb_o = reinterpret_cast<float*>(smem + a.off_k);  // [WN][RB][D]
  float* cb_m = cb_o + WN * RB * D;                         // [WN][RB]
  float* cb_l = cb_m + WN * RB;
#pragma unroll
  for (int i = 0; i < DT; ++i) {
    const int col = i * 8 + (lane % 4) * 2;
    float* r0 = cb_o + (wn * RB + rl0) * D + col;
    float* r1 = cb_o + (wn * RB + rl0 + 8) * D + col;
    r0[0] = oacc[i][0];
    r0[1] = oacc[i][1];
    r1[0] = oacc[i][2];
    r1[1] = oacc[i][3];
  }
  if (lane % 4 == 0) {
    cb_m[wn * RB + rl0] = m_run[0];
    cb_m[wn * RB + rl0 + 8] = m_run[1];
    cb_l[wn * RB + rl0] = l_run[0];
    cb_l[wn * RB + rl0 + 8] = l_run[1];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < RB * D; idx += NT) {
    const int rl = idx / D;
    const int d = idx % D;
    const int r = rowblock * RB + rl;
    if (r >= a.rows) continue;
    float mx = kNegInf;
#pragma unroll
    for (int w = 0; w < WN; ++w) mx = fmaxf(mx, cb_m[w * RB + rl]);
    float o = 0.0f, l = 0.0f;
    if (mx != kNegInf) {
#pragma unroll
      for (int w = 0; w < WN; ++w) {
        const float f = __expf(cb_m[w * RB + rl] - mx);
        o += f * cb_o[(w * RB + rl) * D + d];
        l += f * cb_l[w * RB + rl];
      }
    }
    const int64_t grow = global_row(a, b, g, r);
    a.part_o[(grow * a.nsp + split) * D + d] = o;
    if (d == 0) a.part_ml[grow * a.nsp + split] = make_float2(mx, l);
  }
}

// Prefill chunks with many row blocks per kv head (a.k16): decodes compressed rows [0, n_valid) of each
// (b, kv head) once into float16, exactly what the split kernel's own tile decode writes into shared memory (same
// items, same tables), so a split kernel that copies these tiles computes the same output bit for bit. Grid:
// (64-token tiles, 1, B Hkv); shared memory: one compressed K and V tile, then the K and V lookup tables.
__global__ void __launch_bounds__(kDecodeCacheThreads) tq_decode_cache_kernel(const AttnArgs a) {
  const AttentionParams& p = a.p;
  const int b = blockIdx.z / p.kv_heads;
  const int g = blockIdx.z % p.kv_heads;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kTileTokens;
  const int64_t n_valid = compressed_rows(a, b);
  if (t0 >= n_valid) return;
  const int n = static_cast<int>(min(static_cast<int64_t>(kTileTokens), n_valid - t0));
  const int64_t bg = static_cast<int64_t>(b) * p.kv_heads + g;

  extern __shared__ __align__(16) char smem[];
  uint8_t* raw = reinterpret_cast<uint8_t*>(smem);
  uint32_t* tab_k = reinterpret_cast<uint32_t*>(smem + a.raw_stage_bytes);
  uint32_t* tab_v = tab_k + p.k_codec.num_parts * 256;
  const int64_t all_rows = static_cast<int64_t>(p.batch) * p.kv_heads * p.cache_rows;
  const int khead = load_raw_tile(raw, p.k_cache + bg * p.cache_rows * a.klay.row_bytes, t0, n, a.klay.row_bytes,
                                  p.k_cache + all_rows * a.klay.row_bytes);
  const int vhead = load_raw_tile(raw + a.raw_k_bytes, p.v_cache + bg * p.cache_rows * a.vlay.row_bytes, t0, n,
                                  a.vlay.row_bytes, p.v_cache + all_rows * a.vlay.row_bytes);
  dev::cp_async_commit();
  for (int pp = 0; pp < p.k_codec.num_parts; ++pp)
    build_table(p.k_codebook + pp * 256, a.klay.mse_bits[pp], tab_k + pp * 256);
  for (int pp = 0; pp < p.v_codec.num_parts; ++pp)
    build_table(p.v_codebook + pp * 256, a.vlay.mse_bits[pp], tab_v + pp * 256);
  dev::cp_async_wait<0>();
  __syncthreads();
  const int d = p.k_codec.head_dim;
  int phases = 0;
  const DecodeItem dc = tile_item(a, threadIdx.x, kDecodeCacheThreads, tab_k, tab_v,
                                  a.k16 + (bg * p.cache_rows + t0) * a.kd, a.kd, a.v16 + (bg * p.cache_rows + t0) * d,
                                  d, phases);
  if (dc.phase < phases) decode_tile_item(dc, raw + khead, raw + a.raw_k_bytes + vhead, phases, n, n);
}

// ------------------------------------------------------------------------------------------ rotate q
// Global query row of row idx of rotation head rhead (rows of one head are consecutive), or -1 past the end.
__device__ __forceinline__ int64_t rotate_global_row(const AttnArgs& a, int rhead, int64_t idx) {
  const AttentionParams& p = a.p;
  if (p.k_rotation_heads == 1) return idx < static_cast<int64_t>(p.batch) * p.q_heads * p.new_tokens ? idx : -1;
  const int64_t per_b = static_cast<int64_t>(a.group) * p.new_tokens;
  if (idx >= static_cast<int64_t>(p.batch) * per_b) return -1;
  const int64_t b = idx / per_b;
  const int64_t rem = idx % per_b;
  const int64_t h = static_cast<int64_t>(rhead) * a.group + rem / p.new_tokens;
  return (b * p.q_heads + h) * p.new_tokens + rem % p.new_tokens;
}

// A Sylvester-Hadamard R_k (rot_form): qr = H (R[0] .* q) into qbuf (hadamard_q_row), kRotateRows rows per block.
template <int N>
__device__ __forceinline__ void rotate_q_hadamard(const AttnArgs& a, const float* rot, int rhead, int64_t first) {
  const int lane = threadIdx.x % 32;
  float r0[N];
  load_hadamard_row0<N>(rot, lane, r0);
  for (int r = threadIdx.x / 32; r < kRotateRows; r += kThreads / 32) {
    const int64_t gr = rotate_global_row(a, rhead, first + r);
    if (gr < 0) break;
    hadamard_q_row<N>(a.p.q, a.p.dtype, a.p.scale, r0, gr, lane, a.qbuf + gr * a.kd);
  }
}

// qbuf[row] = float16(scale * R_k q) and, with QJL, float16(scale * Sq R_k q). Rows of one rotation head per block.
// Without QJL and with a Sylvester-Hadamard R_k (rot_form, checked once per call) a butterfly transform, else the
// dense product.
__global__ void __launch_bounds__(kThreads) tq_rotate_q_kernel(const AttnArgs a) {
  const AttentionParams& p = a.p;
  const int d = p.k_codec.head_dim;
  const int qstride = d + 4;  // 16-byte aligned rows
  extern __shared__ __align__(16) char smem[];
  float* qsm = reinterpret_cast<float*>(smem);  // [kRotateRows][d+4]
  float* rsm = qsm + kRotateRows * qstride;     // [kRotateRows][d+4] qr
  const int rhead = blockIdx.y;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kRotateRows;
  if (!p.k_codec.qjl && a.rot_form[rhead] != 0) {  // uniform per block
    if (a.split_q) return;                           // the split kernel rotates its own rows
    const float* rot = p.k_rotation + static_cast<int64_t>(rhead) * d * d;
    switch (d) {
      case 64: rotate_q_hadamard<2>(a, rot, rhead, first); break;
      case 128: rotate_q_hadamard<4>(a, rot, rhead, first); break;
      default: rotate_q_hadamard<8>(a, rot, rhead, first); break;
    }
    return;
  }
  int64_t grows[kRotateRows];
#pragma unroll
  for (int i = 0; i < kRotateRows; ++i) grows[i] = rotate_global_row(a, rhead, first + i);
  for (int idx = threadIdx.x; idx < kRotateRows * d; idx += kThreads) {
    const int i = idx / d;
    const int k = idx % d;
    int64_t gr = -1;
#pragma unroll
    for (int r = 0; r < kRotateRows; ++r)
      if (r == i) gr = grows[r];
    qsm[i * qstride + k] = gr >= 0 ? dev::load_as_float(p.q, p.dtype, gr * d + k) : 0.0f;
  }
  const float* mats[2] = {p.k_rotation + static_cast<int64_t>(rhead) * d * d, p.k_qjl_matrix};
  const int passes = p.k_codec.qjl ? 2 : 1;
  __syncthreads();
  for (int pass = 0; pass < passes; ++pass) {
    const float* m = mats[pass];
    const float* in = pass == 0 ? qsm : rsm;
    // Thread = output coordinate i, all kRotateRows rows at once (independent accumulators); the thread reads
    // its matrix row straight from global memory (16-byte loads, all in flight), the queries from shared memory.
    const bool vec = (reinterpret_cast<uintptr_t>(m) & 15) == 0;
    for (int i0 = 0; i0 < d; i0 += kThreads) {
      const int i = i0 + static_cast<int>(threadIdx.x);
      if (i >= d) continue;
      const float* mrow = m + static_cast<int64_t>(i) * d;
      float acc[kRotateRows];
#pragma unroll
      for (int r = 0; r < kRotateRows; ++r) acc[r] = 0.0f;
      for (int c0 = 0; c0 < d; c0 += 32) {  // d is a multiple of 16: 32 or a tail of 16
        const int nk = d - c0 >= 32 ? 8 : 4;
        float4 rv[8];
        if (vec) {
#pragma unroll
          for (int k = 0; k < 8; ++k)
            rv[k] = k < nk ? __ldg(reinterpret_cast<const float4*>(mrow + c0) + k) : make_float4(0, 0, 0, 0);
        } else {
#pragma unroll
          for (int k = 0; k < 8; ++k)
            rv[k] = k < nk ? make_float4(mrow[c0 + 4 * k], mrow[c0 + 4 * k + 1], mrow[c0 + 4 * k + 2],
                                         mrow[c0 + 4 * k + 3])
                           : make_float4(0, 0, 0, 0);
        }
#pragma unroll
        for (int r = 0; r < kRotateRows; ++r) {
#pragma unroll
          for (int k = 0; k < 8; ++k) {
            if (k >= nk) break;
            const float4 v = *reinterpret_cast<const float4*>(in + r * qstride + c0 + 4 * k);
            acc[r] = fmaf(rv[k].x, v.x, fmaf(rv[k].y, v.y, fmaf(rv[k].z, v.z, fmaf(rv[k].w, v.w, acc[r]))));
          }
        }
      }
#pragma unroll
      for (int r = 0; r < kRotateRows; ++r) {
        if (pass == 0) rsm[r * qstride + i] = acc[r];
        if (grows[r] >= 0) a.qbuf[grows[r] * a.kd + pass * d + i] = __float2half_rn(acc[r] * p.scale);
      }
    }
    __syncthreads();
  }
}

// The decode kernel's q rotation, ahead of it (a.prerotated): qbuf[row] = float16(scale * R_k q) for
// prerotate_rows(D) rows of one rotation head per block. Column chunks: thread t computes output coordinate t % D
// over columns [C (t / D), C (t / D) + C) of every row (all its R_k loads of a round in flight at once), and the
// chunks' partial sums meet in shared memory, in chunk order (another float32 order than the in-kernel rotation:
// results differ from mode kRotateInKernel's in the last bits). Inside the decode kernel the same product cost
// each block a dependent chain of four rounds of R_k loads (bench/NOTES.md "q rotation ahead"), repeated by every
// split of a kv head.
constexpr int prerotate_chunks(int d) { return d == 64 ? 2 : 4; }
constexpr int prerotate_threads(int d) { return d * prerotate_chunks(d); }

template <int D>
__global__ void __launch_bounds__(prerotate_threads(D)) tq_prerotate_q_kernel(const AttnArgs a) {
  constexpr int NC = prerotate_chunks(D);
  constexpr int C = D / NC;  // 32 columns (D 64, 128) or 64 (D 256: two rounds of 8 float4)
  constexpr int R = prerotate_rows(D);
  // The decode kernel (a programmatic dependent launch after this one) may start its prologue now; its pdl_wait
  // waits for this grid before it reads qbuf. (Without the trigger it launches as this grid's blocks exit.)
  if (a.prerotate_trigger) dev::pdl_trigger();
  const AttentionParams& p = a.p;
  __shared__ __align__(16) float qs[R][D];
  __shared__ float part[NC][R][D];
  const int rhead = blockIdx.y;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * R;
  const int i = threadIdx.x % D;
  const int c = threadIdx.x / D;
  const float* rrow = p.k_rotation + (static_cast<int64_t>(p.k_rotation_heads == 1 ? 0 : rhead) * D + i) * D + c * C;
  const bool vec = (reinterpret_cast<uintptr_t>(p.k_rotation) & 15) == 0;
  auto load_round = [&](int c0, float4 (&rv)[8]) {
#pragma unroll
    for (int k = 0; k < 8; ++k)
      rv[k] = vec ? __ldg(reinterpret_cast<const float4*>(rrow + c0) + k)
                  : make_float4(rrow[c0 + 4 * k], rrow[c0 + 4 * k + 1], rrow[c0 + 4 * k + 2], rrow[c0 + 4 * k + 3]);
  };
  float4 rv[8];
  load_round(0, rv);  // in flight with the q loads below
  for (int idx = threadIdx.x; idx < R * D; idx += blockDim.x) {
    const int64_t gr = rotate_global_row(a, rhead, first + idx / D);
    qs[idx / D][idx % D] = gr >= 0 ? dev::load_as_float(p.q, p.dtype, gr * D + idx % D) : 0.0f;
  }
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  __syncthreads();
#pragma unroll
  for (int c0 = 0; c0 < C; c0 += 32) {
    if (c0 > 0) load_round(c0, rv);
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const float4 v = *reinterpret_cast<const float4*>(&qs[r][c * C + c0 + 4 * k]);
        acc[r] = fmaf(rv[k].x, v.x, fmaf(rv[k].y, v.y, fmaf(rv[k].z, v.z, fmaf(rv[k].w, v.w, acc[r]))));
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) part[c][r][i] = acc[r];
  __syncthreads();
  for (int idx = threadIdx.x; idx < R * D; idx += blockDim.x) {
    const int64_t gr = rotate_global_row(a, rhead, first + idx / D);
    if (gr < 0) continue;
    float sum = part[0][idx / D][idx % D];
#pragma unroll
    for (int cc = 1; cc < NC; ++cc) sum += part[cc][idx / D][idx % D];
    a.qbuf[gr * D + idx % D] = __float2half_rn(sum * p.scale);
  }
}

// ------------------------------------------------------------------------------------------ reduce
// This thread's share of the full Sylvester-Hadamard check of R_v (dev::hadamard_mismatch) for head dim d.
__device__ __forceinline__ uint32_t reduce_rotation_mismatch(const float* rot, int d) {
  switch (d) {
    case 64: return dev::hadamard_mismatch<64, kThreads, 8>(rot, threadIdx.x);
    case 128: return dev::hadamard_mismatch<128, kThreads, 16>(rot, threadIdx.x);
    case 256: return dev::hadamard_mismatch<256, kThreads, 16>(rot, threadIdx.x);
    default: return 1u;
  }
}

// One warp: out[base + i] = (R_v[0][i] (H y)_i + owin[i]) / l for i < d = 32 N (lane holds i = N lane + e;
// r0[e] = R_v[0][N lane + e], loaded by the caller ahead of time).
template <int N>
__device__ __forceinline__ void reduce_hadamard(const AttentionParams& p, const float (&r0)[8], const float* y,
                                                const float* owin, float l, int64_t base) {
  const int lane = threadIdx.x % 32;
  float v[N];
#pragma unroll
  for (int e = 0; e < N; ++e) v[e] = y[N * lane + e];
  dev::warp_fwht<N>(v, lane);
#pragma unroll
  for (int e = 0; e < N; ++e) {
    const int i = N * lane + e;
    const float out = l > 0.0f ? (r0[e] * v[e] + owin[i]) / l : 0.0f;
    dev::store_from_float(p.out, p.dtype, base + i, out);
  }
}

// The reduce kernel's dense un-rotation, out[i] = (sum_k R[k][i] y[k] + owin[i]) / l for a 16-byte aligned R of
// any structure. Thread t sums the rows k = t / (D/4) + STEP it of its column quad 4 (t % (D/4)) with float4
// loads in rounds of 8, all independent (the latency of R's loads is the cost: one column per thread with scalar
// loads left ptxas to keep 3-11 in flight, bench/NOTES.md "Small T, second pass"); the STEP partial sums of a
// column meet in part[STEP][D] (STEP * D = 4 * kThreads floats). Every thread of the block calls it.
template <int D>
__device__ __forceinline__ void reduce_dense(const AttentionParams& p, const float* rot, const float* y,
                                             const float* owin, float* part, float l, int64_t base) {
  constexpr int kQuads = D / 4;
  constexpr int kStep = kThreads / kQuads;  // rows summed in parallel per column
  constexpr int kIters = D / kStep;         // float4 loads per thread: 8 / 32 / 128
  static_assert(kThreads % kQuads == 0 && kIters % 8 == 0, "whole rounds of 8 loads");
  const int jq = threadIdx.x % kQuads;
  const int k0 = threadIdx.x / kQuads;
  const float4* r4 = reinterpret_cast<const float4*>(rot) + jq;
  float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 1
  for (int it0 = 0; it0 < kIters; it0 += 8) {
    float4 r[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) r[u] = __ldg(r4 + static_cast<int64_t>(k0 + kStep * (it0 + u)) * kQuads);
#pragma unroll
    for (int u = 0; u < 8; ++u) {
      const float yk = y[k0 + kStep * (it0 + u)];
      acc.x = fmaf(r[u].x, yk, acc.x);
      acc.y = fmaf(r[u].y, yk, acc.y);
      acc.z = fmaf(r[u].z, yk, acc.z);
      acc.w = fmaf(r[u].w, yk, acc.w);
    }
  }
  reinterpret_cast<float4*>(part + k0 * D)[jq] = acc;
  __syncthreads();
  for (int i = threadIdx.x; i < D; i += kThreads) {
    float sum = 0.0f;
#pragma unroll
    for (int s = 0; s < kStep; ++s) sum += part[s * D + i];
    dev::store_from_float(p.out, p.dtype, base + i, l > 0.0f ? (sum + owin[i]) / l : 0.0f);
  }
}

__global__ void __launch_bounds__(kThreads) tq_attention_reduce_kernel(const AttnArgs a) {
  dev::stamp(2048 + blockIdx.x, 0);
  const AttentionParams& p = a.p;
  const int d = p.k_codec.head_dim;
  __shared__ float weight[kMaxSplits + kMaxWindowSplits];
  __shared__ float orot[256];
  __shared__ float owin[256];
  __shared__ float total_l;
  const int64_t grow = blockIdx.x;
  const int h = static_cast<int>((grow / p.new_tokens) % p.q_heads);
  const int g = h / a.group;
  const float2* ml = a.part_ml + grow * a.nsp;
  const int rh = p.v_rotation_heads == 1 ? 0 : g;
  const float* rot = p.v_rotation + static_cast<int64_t>(rh) * d * d;
  // The Sylvester-Hadamard check of R_v (row 0, where a dense R fails, then the full matrix), on every launch
  // unless the caller promised it (AttnArgs::v_promised). It reads only R_v, so it runs before pdl_wait: launched
  // as a programmatic dependent of the decode kernel (launch_attention), it overlaps that kernel; launched
  // plainly, pdl_wait returns at once.
  bool v_hadamard = a.v_promised != 0;
  if (!v_hadamard) {  // uniform branch
    uint32_t bad = 0;
    for (int j = threadIdx.x; j < d; j += kThreads) bad |= dev::hadamard_row0_mismatch(rot, rot[0], rot[j]);
    v_hadamard = __syncthreads_or(bad) == 0;
    if (v_hadamard) v_hadamard = __syncthreads_or(reduce_rotation_mismatch(rot, d)) == 0;  // uniform branch
  }
  // Warp 0's R_v[0] entries for the butterfly epilogue (reduce_hadamard), loaded before the wait so their latency
  // is not on the path after the decode grid ends.
  float r0[8] = {};
  if (v_hadamard && threadIdx.x < 32) {
    const int n = d / 32;
#pragma unroll
    for (int e = 0; e < 8; ++e) r0[e] = e < n ? __ldg(rot + n * threadIdx.x + e) : 0.0f;
  }
  dev::pdl_wait();  // the partials below are the previous grid's output
  dev::pdl_trigger();  // a decode kernel launched next may start (it waits for this grid: AttnArgs::decode_waits)
  dev::stamp(2048 + blockIdx.x, 1);
  // This thread's partials of the first kPre splits, loaded now, alongside warp 0's (max, sum) loads below, so
  // that the weighted sum after the barrier does not wait for another round of loads (columns i = threadIdx.x +
  // kThreads c, d <= 2 kThreads). Partials of weight 0 may hold garbage: selected away below.
  constexpr int kPre = 8;
  const float* po = a.part_o + grow * a.nsp * d;
  float pre[2][kPre];
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    const int i = threadIdx.x + kThreads * c;
#pragma unroll
    for (int sp = 0; sp < kPre; ++sp)
      pre[c][sp] = i < d && sp < a.nsp ? po[static_cast<int64_t>(sp) * d + i] : 0.0f;
  }
  if (threadIdx.x < 32) {
    float mx = kNegInf;
    for (int sp = threadIdx.x; sp < a.nsp; sp += 32) {
      const float2 v = ml[sp];
      if (v.y > 0.0f) mx = fmaxf(mx, v.x);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    float l = 0.0f;
    for (int sp = threadIdx.x; sp < a.nsp; sp += 32) {
      const float2 v = ml[sp];
      const float w = (v.y > 0.0f && mx != kNegInf) ? __expf(v.x - mx) : 0.0f;
      weight[sp] = w;
      l += w * v.y;
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
    if (threadIdx.x == 0) total_l = l;
  }
  __syncthreads();  // weight and total_l
  dev::stamp(2048 + blockIdx.x, 2);
  static_assert(2 * kThreads >= 256, "two columns per thread cover d <= 256");
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    const int i = threadIdx.x + kThreads * c;
    if (i >= d) break;
    // Independent loads (no data-dependent branch around them); partials of weight 0 may hold garbage: select.
    float r = 0.0f, w = 0.0f;
    auto add = [&](int sp, float raw) {  // split sp's weighted partial into the cache (r) or window (w) sum
      const float f = weight[sp];
      const float v = f != 0.0f ? raw * f : 0.0f;
      if (sp < a.nsplit) {
        r += v;
      } else {
        w += v;
      }
    };
#pragma unroll
    for (int sp = 0; sp < kPre; ++sp) {
      if (sp >= a.nsp) break;
      add(sp, pre[c][sp]);
    }
    // The other splits in batches of kPre independent loads, summed in the same order. (A plain `unroll 4` loop
    // here, after the preloaded splits, measured 9-27% slower at B=1 T >= 4K on an H100: bench/NOTES.md
    // "Promised R_v and quantize R".)
    for (int sp0 = kPre; sp0 < a.nsp; sp0 += kPre) {
      float raw[kPre];
#pragma unroll
      for (int j = 0; j < kPre; ++j)
        raw[j] = sp0 + j < a.nsp ? po[static_cast<int64_t>(sp0 + j) * d + i] : 0.0f;
#pragma unroll
      for (int j = 0; j < kPre; ++j) {
        if (sp0 + j >= a.nsp) break;
        add(sp0 + j, raw[j]);
      }
    }
    orot[i] = r;
    owin[i] = w;
  }
  __syncthreads();  // orot and owin complete
  const float l = total_l;
  // A Sylvester-Hadamard R_v: x = R_v[0] .* (H orot), one warp's butterfly transform (reduce_hadamard). Any other
  // R: dense below.
  if (v_hadamard) {
    if (threadIdx.x < 32) {
      switch (d) {
        case 64: reduce_hadamard<2>(p, r0, orot, owin, l, grow * d); break;
        case 128: reduce_hadamard<4>(p, r0, orot, owin, l, grow * d); break;
        default: reduce_hadamard<8>(p, r0, orot, owin, l, grow * d); break;
      }
      dev::stamp(2048 + blockIdx.x, 3);
    }
    return;
  }
  if ((reinterpret_cast<uintptr_t>(rot) & 15) == 0) {
    __shared__ __align__(16) float part[4 * kThreads];
    switch (d) {
      case 64: reduce_dense<64>(p, rot, orot, owin, part, l, grow * d); break;
      case 128: reduce_dense<128>(p, rot, orot, owin, part, l, grow * d); break;
      default: reduce_dense<256>(p, rot, orot, owin, part, l, grow * d); break;
    }
    return;
  }
  for (int i = threadIdx.x; i < d; i += kThreads) {  // a misaligned R: one column per thread, scalar loads
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 4
    for (int k = 0; k < d; k += 4) {  // d is a multiple of 16
#pragma unroll
      for (int u = 0; u < 4; ++u) acc[u] = fmaf(rot[static_cast<int64_t>(k + u) * d + i], orot[k + u], acc[u]);
    }
    const float sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    const float out = l > 0.0f ? (sum + owin[i]) / l : 0.0f;
    dev::store_from_float(p.out, p.dtype, grow * d + i, out);
  }
}

// The decode path's reduce for a promised Hadamard R_v (AttnArgs::v_promised) and at most 32 partials per row:
// one warp per query row, lane holding output coordinates N lane .. N lane + N - 1, no shared memory and no block
// barrier. tq_attention_reduce_kernel spends two barriers and two shared-memory round trips on each row after
// the decode grid ends (~1.8 us of B=1 T=1K's chain on an H100, bench/NOTES.md "Warp reduce"); here the row's
// partials arrive in one round of loads and the weights move by shuffles. Same weights, split order and
// arithmetic as that kernel's Hadamard branch (warp 0's max and sum, then each column's weighted sum in split
// order, then reduce_hadamard), so the outputs are bit-identical. Block: kThreads / 32 rows.
template <int N>
__global__ void __launch_bounds__(kThreads) tq_attention_reduce_warp_kernel(const AttnArgs a) {
  constexpr int D = 32 * N;
  constexpr int kPre = 8;  // splits whose partials load before the (max, sum) shuffles
  const AttentionParams& p = a.p;
  const int lane = threadIdx.x % 32;
  const int64_t rows_all = static_cast<int64_t>(p.batch) * p.q_heads * p.new_tokens;
  const int64_t grow = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  if (grow >= rows_all) return;  // whole warps
  dev::stamp(2048 + blockIdx.x, 0);
  const int h = static_cast<int>((grow / p.new_tokens) % p.q_heads);
  const float* rot = p.v_rotation + static_cast<int64_t>(p.v_rotation_heads == 1 ? 0 : h / a.group) * D * D;
  float r0[N];
  load_hadamard_row0<N>(rot, lane, r0);  // before the wait: R_v is not the previous grid's output
  dev::pdl_wait();                       // the partials below are
  dev::pdl_trigger();  // a decode kernel launched next may start (it waits for this grid: AttnArgs::decode_waits)
  dev::stamp(2048 + blockIdx.x, 1);
  const int nsp = a.nsp;
  const float2* ml = a.part_ml + grow * nsp;
  const float* po = a.part_o + grow * nsp * D + N * lane;
  auto load = [&](int sp, float (&raw)[N]) {  // split sp's partial of this lane's coordinates (0 past nsp)
#pragma unroll
    for (int e = 0; e < N; e += 2) {
      const float2 v = sp < nsp ? *reinterpret_cast<const float2*>(po + static_cast<int64_t>(sp) * D + e)
                                : make_float2(0.0f, 0.0f);
      raw[e] = v.x;
      raw[e + 1] = v.y;
    }
  };
  float pre[kPre][N];
#pragma unroll
  for (int sp = 0; sp < kPre; ++sp) load(sp, pre[sp]);
  const float2 mine = lane < nsp ? ml[lane] : make_float2(kNegInf, 0.0f);
  float mx = mine.y > 0.0f ? mine.x : kNegInf;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  const float weight = (lane < nsp && mine.y > 0.0f && mx != kNegInf) ? __expf(mine.x - mx) : 0.0f;
  float l = 0.0f;
  if (lane < nsp) l += weight * mine.y;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
  dev::stamp(2048 + blockIdx.x, 2);
  float y[N], w[N];
#pragma unroll
  for (int e = 0; e < N; ++e) y[e] = w[e] = 0.0f;
  auto add = [&](int sp, const float (&raw)[N]) {  // split sp's weighted partial into the cache (y) or window (w) sum
    add_weighted_partial<N>(raw, __shfl_sync(0xffffffffu, weight, sp), sp < a.nsplit, y, w);
  };
#pragma unroll
  for (int sp = 0; sp < kPre; ++sp) {
    if (sp >= nsp) break;
    add(sp, pre[sp]);
  }
  for (int sp0 = kPre; sp0 < nsp; sp0 += kPre) {  // the rest in batches of kPre independent loads
    float raw[kPre][N];
#pragma unroll
    for (int j = 0; j < kPre; ++j) load(sp0 + j, raw[j]);
#pragma unroll
    for (int j = 0; j < kPre; ++j) {
      if (sp0 + j >= nsp) break;
      add(sp0 + j, raw[j]);
    }
  }
  dev::warp_fwht<N>(y, lane);
  const int64_t base = grow * D + N * lane;
#pragma unroll
  for (int e = 0; e < N; ++e) {
    const float out = l > 0.0f ? (r0[e] * y[e] + w[e]) / l : 0.0f;
    dev::store_from_float(p.out, p.dtype, base + e, out);
  }
  dev::stamp(2048 + blockIdx.x, 3);
}

// ------------------------------------------------------------------------------------------ general path
// rot_form[h] = 1 when R_k head h is Sylvester-Hadamard (the same check as the reduce kernel's), rot_form[Hkv + h]
// likewise for R_v: checked once per call, so the rotate and reduce kernels of the general path (many blocks of a
// few rows each in a prefill chunk) need not each read all of R; a matrix the caller promised Hadamard
// (AttnArgs::k_promised / v_promised) is not read. Block (head, matrix: 0 = R_k, 1 = R_v).
__global__ void __launch_bounds__(kThreads) tq_rotation_form_kernel(const AttnArgs a) {
  const AttentionParams& p = a.p;
  const int d = p.k_codec.head_dim;
  const bool is_v = blockIdx.y == 1;
  const int head = blockIdx.x;
  if (head >= (is_v ? p.v_rotation_heads : p.k_rotation_heads)) return;  // uniform per block
  const float* rot = (is_v ? p.v_rotation : p.k_rotation) + static_cast<int64_t>(head) * d * d;
  if (is_v ? a.v_promised : a.k_promised) {  // uniform per block: the caller checked it on the host
    if (threadIdx.x == 0) a.rot_form[(is_v ? p.kv_heads : 0) + head] = 1;
    return;
  }
  uint32_t bad = 0;
  for (int j = threadIdx.x; j < d; j += kThreads) bad |= dev::hadamard_row0_mismatch(rot, rot[0], rot[j]);
  bool hadamard = __syncthreads_or(bad) == 0;
  if (hadamard) hadamard = __syncthreads_or(reduce_rotation_mismatch(rot, d)) == 0;  // uniform branch
  if (threadIdx.x == 0) a.rot_form[(is_v ? p.kv_heads : 0) + head] = hadamard ? 1 : 0;
}

// Prefill chunks: bit k of vis[row][k / 32] says whether mask row `row` (of Bm Hm S) lets any token of cache
// tile k (mask tokens [64 k + Ns, 64 k + 64 + Ns) inside the mask) through: value > -inf (float; NaN counts as
// hidden, as the split kernel drops it) or true (bool). Bit k of full[row][k / 32]: every one of the tile's 64
// tokens lies inside the mask and adds exactly 0 (float +-0, bool true), so the split kernel can take 0 for all of
// them without reading the mask (bit for bit what the loads give). One warp per (row, word of 32 tiles),
// coalesced reads.
template <MaskType MT>
__device__ __forceinline__ bool mask_visible(const void* mask, int64_t off) {
  if constexpr (MT == MaskType::kFloat16) {
    return __half2float(static_cast<const __half*>(mask)[off]) > kNegInf;
  } else if constexpr (MT == MaskType::kBool) {
    return static_cast<const uint8_t*>(mask)[off] != 0;
  } else {
    return static_cast<const float*>(mask)[off] > kNegInf;
  }
}

template <MaskType MT>
__device__ __forceinline__ bool mask_adds_zero(const void* mask, int64_t off) {
  if constexpr (MT == MaskType::kFloat16) {
    return __half2float(static_cast<const __half*>(mask)[off]) == 0.0f;
  } else if constexpr (MT == MaskType::kBool) {
    return static_cast<const uint8_t*>(mask)[off] != 0;
  } else {
    return static_cast<const float*>(mask)[off] == 0.0f;
  }
}

// One warp per (mask row, word of 32 tiles): short independent chains, so the pass stays cheap even for a few
// mask rows over a long cache.
template <MaskType MT>
__device__ __forceinline__ void mask_tiles_word(const AttnArgs& a, int64_t row, int w) {
  const AttentionParams& p = a.p;
  const int lane = threadIdx.x % 32;
  const int64_t base = row * p.mask_tokens;
  uint32_t word = 0, full_word = 0;
  const int64_t t_word = static_cast<int64_t>(w) * 32 * kTileTokens + p.sink_tokens;
#pragma unroll 16
  for (int i = 0; i < 32 * kTileTokens / 32; ++i) {  // 32 consecutive tokens per step, 2 steps per tile
    const int64_t t = t_word + static_cast<int64_t>(i) * 32 + lane;
    const bool inside = t < p.mask_tokens;
    const bool vis = inside && mask_visible<MT>(p.mask, base + t);
    const bool zero = inside && mask_adds_zero<MT>(p.mask, base + t);
    if (__ballot_sync(0xffffffffu, vis) != 0u) word |= 1u << (i / 2);
    const bool all_zero = __all_sync(0xffffffffu, zero);
    if (i % 2 == 0) {
      if (all_zero) full_word |= 1u << (i / 2);
    } else if (!all_zero) {
      full_word &= ~(1u << (i / 2));
    }
  }
  if (lane == 0) {
    a.vis[row * a.vis_words + w] = word;
    a.full[row * a.vis_words + w] = full_word;
  }
}

__global__ void __launch_bounds__(kThreads) tq_mask_tiles_kernel(const AttnArgs a) {
  const AttentionParams& p = a.p;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  const int64_t row = item / a.vis_words;
  const int w = static_cast<int>(item % a.vis_words);
  if (row >= static_cast<int64_t>(p.mask_batch) * p.mask_heads * p.new_tokens) return;  // whole warps
  switch (p.mask_type) {
    case MaskType::kFloat16: mask_tiles_word<MaskType::kFloat16>(a, row, w); break;
    case MaskType::kBool: mask_tiles_word<MaskType::kBool>(a, row, w); break;
    default: mask_tiles_word<MaskType::kFloat32>(a, row, w); break;
  }
}

// General-path reduce, one warp per query row (lane holds coordinates N lane .. N lane + N - 1): merges the
// splits, un-rotates (x = R_v^T y: R_v[0] .* (H y) for a Hadamard R_v per rot_form, else the dense product with
// y_k shuffled from its lane) and adds the window part. Same weights and split order as the decode path's
// reduce kernel.
template <int N>
__device__ __forceinline__ void reduce_row_warp(const AttnArgs& a, int64_t grow) {
  const AttentionParams& p = a.p;
  constexpr int D = 32 * N;
  const int lane = threadIdx.x % 32;
  const int h = static_cast<int>((grow / p.new_tokens) % p.q_heads);
  const int rh = p.v_rotation_heads == 1 ? 0 : h / a.group;
  if (a.split_out && a.rot_form[p.kv_heads + rh] != 0) return;  // the split kernel wrote this row
  const float* rot = p.v_rotation + static_cast<int64_t>(rh) * D * D;
  const float2* ml = a.part_ml + grow * a.nsp;
  float mx = kNegInf;
  for (int sp = lane; sp < a.nsp; sp += 32) {
    const float2 v = ml[sp];
    if (v.y > 0.0f) mx = fmaxf(mx, v.x);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  float y[N], w[N];
#pragma unroll
  for (int e = 0; e < N; ++e) y[e] = w[e] = 0.0f;
  float l = 0.0f;
  const float* po = a.part_o + grow * a.nsp * D + N * lane;
  for (int sp = 0; sp < a.nsp; ++sp) {
    const float2 v = ml[sp];
    const float f = (v.y > 0.0f && mx != kNegInf) ? __expf(v.x - mx) : 0.0f;
    l += f * v.y;
    float raw[N];
    if constexpr (N % 4 == 0) {
#pragma unroll
      for (int e = 0; e < N; e += 4) {
        const float4 r4 = *reinterpret_cast<const float4*>(po + static_cast<int64_t>(sp) * D + e);
        raw[e] = r4.x;
        raw[e + 1] = r4.y;
        raw[e + 2] = r4.z;
        raw[e + 3] = r4.w;
      }
    } else {
#pragma unroll
      for (int e = 0; e < N; ++e) raw[e] = po[static_cast<int64_t>(sp) * D + e];
    }
    add_weighted_partial<N>(raw, f, sp < a.nsplit, y, w);
  }
  const int64_t base = grow * D + N * lane;
  if (a.rot_form[p.kv_heads + rh] != 0) {
    dev::warp_fwht<N>(y, lane);
#pragma unroll
    for (int e = 0; e < N; ++e) {
      const float out = l > 0.0f ? (__ldg(rot + N * lane + e) * y[e] + w[e]) / l : 0.0f;
      dev::store_from_float(p.out, p.dtype, base + e, out);
    }
    return;
  }
  float acc[N];
#pragma unroll
  for (int e = 0; e < N; ++e) acc[e] = 0.0f;
  for (int src = 0; src < 32; ++src) {
#pragma unroll
    for (int u = 0; u < N; ++u) {
      const float yk = __shfl_sync(0xffffffffu, y[u], src);
      const float* rrow = rot + static_cast<int64_t>(N * src + u) * D + N * lane;
#pragma unroll
      for (int e = 0; e < N; ++e) acc[e] = fmaf(__ldg(rrow + e), yk, acc[e]);
    }
  }
#pragma unroll
  for (int e = 0; e < N; ++e) dev::store_from_float(p.out, p.dtype, base + e, l > 0.0f ? (acc[e] + w[e]) / l : 0.0f);
}

__global__ void __launch_bounds__(kThreads) tq_attention_reduce_rows_kernel(const AttnArgs a, int64_t rows_all) {
  const int64_t grow = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  if (grow >= rows_all) return;  // whole warps
  switch (a.p.k_codec.head_dim) {
    case 64: reduce_row_warp<2>(a, grow); break;
    case 128: reduce_row_warp<4>(a, grow); break;
    default: reduce_row_warp<8>(a, grow); break;
  }
}

// ------------------------------------------------------------------------------------------ host
struct Plan {
  AttnArgs args;
  int wm = 1;
  int rowblocks = 1;
  size_t qbuf_bytes = 0, part_o_bytes = 0, part_ml_bytes = 0, rot_form_bytes = 0, vis_bytes = 0, kv16_bytes = 0;
  size_t rotate_smem = 0;
  bool prerotate_dependent = false;  // the decode kernel a programmatic dependent of tq_prerotate_q_kernel
};

size_t align256(size_t v) { return (v + 255) & ~static_cast<size_t>(255); }

// The workspace a plan carves, in launch_attention's order: q, partials, (max, sum), R forms, tile bits, the
// decoded cache.
size_t plan_workspace_bytes(const Plan& plan) {
  return plan.qbuf_bytes + plan.part_o_bytes + plan.part_ml_bytes + plan.rot_form_bytes + plan.vis_bytes +
         plan.kv16_bytes;
}

// Blocks of the decode kernel resident on the whole device at once (one "wave").
int fast_blocks_per_sm(FastKernel kernel, int threads, int smem_bytes) {
  int per_sm = 0;
  if (prepare_launch(reinterpret_cast<const void*>(kernel), threads, smem_bytes, &per_sm) != cudaSuccess ||
      per_sm <= 0) {
    cudaGetLastError();  // a failed query only degrades the split choice
    per_sm = 2;
  }
  return per_sm;
}

// Splits of `tiles` tiles over bh (batch x kv head) rows of blocks: least estimated time, in units of one
// block's time per tile when it has an SM to itself. A block costs its tiles plus kBlockCost (prologue, pipeline
// fill, merge: a latency chain). The busiest SM runs k = ceil(blocks / SMs) blocks at once (blocks are not split
// across SMs, so 1.2 blocks per SM on average still means 2 on some), getting through
// 1 + (kFullRate - 1) sqrt((k - 1) / (per_sm - 1)) tiles per unit: most of the gain of sharing an SM comes with
// the second block. More blocks than fit run in whole waves; more than one split adds the reduce kernel. Fitted
// to `python3 bench/gpu_harness/smallt_sweep.py` on an H100 (4-bit, B 1..32, T 1K..128K, every split count,
// reduce kernel as a programmatic dependent launch; bench/NOTES.md "Small T, second pass"): the earlier model
// (average blocks per SM, rate linear in k, kBlockCost 6.5, kReduceCost 3.5, kFullRate 1.7) was off by 2x in the
// split count at mid T (B=8 T=4K: 2 splits 57.6 us, 4 splits 50.9; B=4 T=16K: 16 splits 85.6, 8 splits 78.4).
// Ties -> fewer splits.
int64_t choose_fast_splits(int64_t tiles, int64_t bh, int per_sm, int sms) {
  constexpr double kBlockCost = 3.0;
  constexpr double kReduceCost = 2.0;
  constexpr double kFullRate = 1.3;
  int64_t best = 1;
  double best_cost = 1e300;
  const int64_t max_ns = std::min<int64_t>(tiles, kMaxSplits);
  for (int64_t ns = 1; ns <= max_ns; ++ns) {
    const int64_t per = (tiles + ns - 1) / ns;
    if ((tiles + per - 1) / per != ns) continue;  // same tiles per split as a smaller count
    const int64_t blocks = bh * ns;
    const double block_time = static_cast<double>(per) + kBlockCost;
    double time = 0.0;
    if (blocks <= static_cast<int64_t>(sms) * per_sm) {
      const int64_t k = (blocks + sms - 1) / sms;  // blocks on the busiest SM
      const double share = per_sm > 1 ? static_cast<double>(k - 1) / (per_sm - 1) : 0.0;
      time = static_cast<double>(k) * block_time / (1.0 + (kFullRate - 1.0) * std::sqrt(share));
    } else {  // whole waves of full SMs (a partial last wave costs a whole one)
      const int64_t slots = static_cast<int64_t>(sms) * per_sm;
      time = static_cast<double>((blocks + slots - 1) / slots) * block_time * per_sm / kFullRate;
    }
    const double cost = time + (ns > 1 ? kReduceCost : 0.0);
    if (cost < best_cost - 1e-9) {
      best_cost = cost;
      best = ns;
    }
  }
  return best;
}

// Tuning override for tests and benches: TQ_DECODE_WARPS = 4 or 8 pins the decode kernel's warps per block (8 is
// ignored with G > 8). Unset or anything else: the launcher's choice (choose_eight_warps).
int forced_fast_warps() {
  const char* v = std::getenv("TQ_DECODE_WARPS");
  if (v == nullptr) return 0;
  const int w = std::atoi(v);
  return w == kFastWarps || w == 2 * kFastWarps ? w : 0;
}

// 8 warps instead of 4 when the 4-warp plan is two splits whose blocks already fill the SMs (2 * bh > SMs) and
// each split is short (<= 16 tiles): the same warps per SM in half the blocks, no reduce kernel. Measured on an
// H100 (bench/NOTES.md "small T", same call): B=32 T=4K 150.9 -> 146.6 us (4-bit), 132.9 -> 124.1 us (3-bit).
// Not taken where the SMs are not full: at B=8 T=1K the 8-warp single split lost (32.0 -> 41.1 us) because the
// decode kernel's own un-rotation (fast_out: one thread per column, 32 dependent rounds of R loads) costs more
// than the reduce kernel it saves; nor with a window (its splits keep the reduce kernel) or long splits (B=32
// T=32K: no gain in the warps x splits sweep).
bool choose_eight_warps(int64_t tiles, int64_t splits, int64_t bh, int sms, bool window) {
  if (splits != 2 || window) return false;
  const int64_t per = (tiles + 1) / 2;
  return per <= 16 && 2 * bh > sms;
}

// The reduce kernel follows the decode kernel as a programmatic dependent launch on sm_90 and later: its R_v
// check overlaps the decode kernel and the launch gap between the two goes (bench/NOTES.md "Small T, second
// pass": B=1 T=1K 20.4 -> 18.5 us on an H100). Not the decode kernel after the kernel before it: its blocks,
// resident early and waiting, made B=32 T=1K 51 -> 65 us. Tuning override for benches and tests:
// TQ_DECODE_PDL=0 launches the reduce kernel plainly (same results, an A/B in one build).
bool dependent_launch_enabled() {
  if (compute_capability_major() < 9) return false;
  const char* v = std::getenv("TQ_DECODE_PDL");
  return v == nullptr || std::atoi(v) != 0;
}

// Launches kernel(a) with the programmatic-stream-serialization attribute when `dependent` (a runtime that
// refuses it gets the launch without it) and, with cluster > 0, as clusters of `cluster` blocks along x (the
// decode kernel's splits of a (b, kv head): AttnArgs::cluster_merge; an error then means no launch, and the caller
// launches again without clusters).
template <typename Kernel>
cudaError_t launch_maybe_dependent(Kernel kernel, dim3 grid, int threads, int smem, cudaStream_t stream,
                                   bool dependent, const AttnArgs& a, unsigned cluster = 0) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(threads);
  cfg.dynamicSmemBytes = static_cast<size_t>(smem);
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (cluster > 0) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = cluster;
    attr[n].val.clusterDim.y = 1;
    attr[n].val.clusterDim.z = 1;
    ++n;
  }
  if (dependent) {  // last, so that the retry below drops only this one
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, a);
  if (e != cudaSuccess && dependent) {
    cudaGetLastError();
    cfg.numAttrs = n - 1;
    e = cudaLaunchKernelEx(&cfg, kernel, a);
  }
  return e;
}

int max_block_smem();

// Whether the split kernel's KV16 instance serves a plan with the decoded cache: no QJL columns (K's width is D),
// no soft-cap, and 64 or more rows per block (WM >= 4). The launcher, the stage layout and the decoded-cache rule
// all ask this one question.
bool split_kv16_instance(const AttnArgs& a, int wm) {
  return a.kd == a.p.k_codec.head_dim && !(a.p.softcap > 0.0f) && wm >= 4;
}

// The split kernel's shared memory for rb-row blocks with wn warps along the tokens: query rows, then one K and
// one V float16 tile and two stages of compressed tiles and the lookup tables, or (kv16: the cache comes decoded)
// two or three stages of K and V float16 tiles. The warp merge at the end reuses the tile space. Sets a's offsets,
// kv_stages and smem_bytes and returns the size.
int split_smem_layout(AttnArgs& a, int rb, int wn, bool kv16) {
  const int d = a.p.k_codec.head_dim;
  const size_t k_tile = align256(static_cast<size_t>(kTileTokens) * (a.kd + 8) * 2);
  const size_t v_tile = align256(static_cast<size_t>(kTileTokens) * (d + 8) * 2);
  size_t off = align256(static_cast<size_t>(rb) * (a.kd + 8) * 2);
  const size_t tiles0 = off;
  a.off_k = static_cast<int>(off);
  a.off_v = static_cast<int>(off + k_tile);
  a.kv_stage_bytes = kv16 ? static_cast<int>(k_tile + v_tile) : 0;
  // Three float16 stages for the KV16 instance (no QJL, no soft-cap, 64 or more rows per block) where the
  // block's shared memory takes them (not D = 256 with 128 rows), else two.
  const bool kv16_instance = kv16 && split_kv16_instance(a, rb / 16);
  a.kv_stages = kv16_instance && off + 3 * (k_tile + v_tile) <= static_cast<size_t>(max_block_smem()) ? 3 : 2;
  off += (kv16 ? a.kv_stages : 1) * (k_tile + v_tile);
  a.off_raw = static_cast<int>(off);
  a.raw_k_bytes = static_cast<int>(align256(static_cast<size_t>(kTileTokens) * a.klay.row_bytes + 32));
  a.raw_stage_bytes =
      a.raw_k_bytes + static_cast<int>(align256(static_cast<size_t>(kTileTokens) * a.vlay.row_bytes + 32));
  if (!kv16) off += 2 * static_cast<size_t>(a.raw_stage_bytes);
  a.off_tab_k = static_cast<int>(off);
  if (!kv16) off += static_cast<size_t>(a.p.k_codec.num_parts) * 256 * 4;
  a.off_tab_v = static_cast<int>(off);
  if (!kv16) off += static_cast<size_t>(a.p.v_codec.num_parts) * 256 * 4;
  const size_t merge = wn > 1 ? static_cast<size_t>(wn) * rb * (d + 2) * 4 : 0;  // [WN][RB][D] + m, l
  off = std::max(off, tiles0 + merge);
  a.smem_bytes = static_cast<int>(off);
  return a.smem_bytes;
}

// Shared memory of tq_decode_cache_kernel: one compressed K and V tile (split_smem_layout's raw stage), the tables.
size_t decode_cache_smem(const AttnArgs& a) {
  return static_cast<size_t>(a.raw_stage_bytes) +
         static_cast<size_t>(a.p.k_codec.num_parts + a.p.v_codec.num_parts) * 256 * 4;
}

// The decoded-cache scratch of prefill chunks is used up to this size (else each block decodes its own tiles, as
// before): 256 MiB holds B Hkv T = 512K rows of D = 128 (no QJL), e.g. 8 kv heads x 64K tokens.
constexpr size_t kMaxDecodedCacheBytes = size_t{256} << 20;
constexpr int kDecodedCacheMinRowBlocks = 8;
constexpr int64_t kDecodedCacheMinRows = 1024;
// With the KV16 split instance (no QJL, no soft-cap, WM >= 4): two row blocks per kv head, any cache length.
constexpr int kDecodedCacheMinRowBlocksKV16 = 2;

size_t decoded_cache_bytes(const AttentionParams& p, int kd) {
  return align256(static_cast<size_t>(p.batch) * p.kv_heads * static_cast<size_t>(p.cache_rows) *
                  (static_cast<size_t>(kd) + p.k_codec.head_dim) * 2);
}

// TQ_KV16=0 / 1: never / always (where it fits) decode the cache once for a prefill chunk; -1 when unset.
int forced_decoded_cache() {
  const char* v = std::getenv("TQ_KV16");
  if (v == nullptr) return -1;
  return std::atoi(v) != 0 ? 1 : 0;
}

// Opt-in shared memory per block of the current device (227 KB on H100, 163 KB on Orin).
int max_block_smem() {
  int device = 0, bytes = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess || bytes <= 0) {
    cudaGetLastError();
    return 48 * 1024;
  }
  return bytes;
}

// TQ_MASK_TILES=0 / 1: never / always compute the prefill tile bits (A/B timing and tests); -1 when unset.
int forced_mask_tiles() {
  const char* v = std::getenv("TQ_MASK_TILES");
  if (v == nullptr) return -1;
  return std::atoi(v) != 0 ? 1 : 0;
}

bool split_fusion_enabled() {
  const char* v = std::getenv("TQ_SPLIT_FUSE");
  return v == nullptr || std::atoi(v) != 0;
}

// How the decode kernel gets its rotated queries (AttnArgs::prerotated, prerotate_trigger).
enum PrerotateMode : int {
  kRotateInKernel = 0,  // the decode kernel rotates its own rows (every split of a kv head again)
  kPrerotateEarly = 1,  // tq_prerotate_q_kernel ahead; the decode kernel its dependent, launched at its start
  kPrerotateAtExit = 2, // the same, the decode kernel launched as the rotation kernel's blocks exit
  kPrerotatePlain = 3,  // tq_prerotate_q_kernel, then the decode kernel as a plain launch
};

// tq_prerotate_q_kernel's grid: rotation heads (1, or one R_k per kv head) x blocks of prerotate_rows(D) rows.
dim3 prerotate_grid(const AttentionParams& p, int group) {
  const bool per_head = p.k_rotation_heads != 1;
  const int64_t rows = static_cast<int64_t>(p.batch) * (per_head ? group : p.q_heads);
  const int per_block = prerotate_rows(p.k_codec.head_dim);
  return dim3(static_cast<unsigned>((rows + per_block - 1) / per_block), per_head ? p.kv_heads : 1);
}

int64_t prerotate_blocks(const AttentionParams& p, int group) {
  const dim3 g = prerotate_grid(p, group);
  return static_cast<int64_t>(g.x) * g.y;
}

// TQ_PREROTATE=0..3 forces a PrerotateMode (A/B timing; modes 1-3 give identical results, mode 0 differs in the
// last bits: another summation order); -1 when unset.
int forced_prerotate_mode() {
  const char* v = std::getenv("TQ_PREROTATE");
  if (v == nullptr) return -1;
  const int m = std::atoi(v);
  return m >= 0 && m <= 3 ? m : -1;
}

// TQ_Q_HADAMARD=0 ignores AttentionParams::k_rotation_hadamard (A/B timing: the dense q rotation's paths),
// TQ_V_HADAMARD=0 ignores v_rotation_hadamard (the device checks of R_v's structure run as without a promise).
// TQ_DECODE_EARLY=0 launches the decode kernel plainly where it would be a programmatic dependent that waits first.
// TQ_REDUCE_WARP=0 keeps the block-per-row reduce kernel where the warp-per-row one would run (A/B, tests).
bool env_flag_on(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr || std::atoi(v) != 0;
}
bool promised_hadamard_enabled() { return env_flag_on("TQ_Q_HADAMARD"); }
bool promised_v_hadamard_enabled() { return env_flag_on("TQ_V_HADAMARD"); }

// The launcher's choice, measured on an H100 (bench/NOTES.md "q rotation ahead").
// Early dependent launch where the rotation grid is tiny (<= 4 blocks: B=1 at Hq <= 32, or Hq <= 16 at D = 256)
// and the decode grid, counting two block slots per rotation block (512 or 1024 threads), fits one wave with a
// slot free on every SM (D = 256, whose decode blocks run 1-2 per SM: fits one wave): B=1 -11..-19% at D=128
// T <= 32K, -7..-12% at D=64, -3..-12% at D=256. Where those fail it cost +8..+35% (B >= 8: the decode blocks'
// prologue loads queue ahead of the rotation's; 3-bit B=1 T=128K: the rotation's blocks pushed decode blocks into
// a second wave). Otherwise a plain launch after it at D=128 (B=8/32 T=1K -1..-5%, long T -1..-4%), but the
// rotation stays inside the decode kernel at D=64 and 256 (a plain launch at T=1K: +3..+6% at D=64, where a
// 64-wide rotation is cheap; +2..+8% at D=256 for B=1/8 and Gemma-2's B=32).
int choose_prerotate_mode(int d, int64_t rotation_blocks, int64_t decode_blocks, int blocks_per_sm, int sms) {
  const bool tiny_rotation = rotation_blocks <= 4;
  const int64_t slots = static_cast<int64_t>(d == 256 ? blocks_per_sm : blocks_per_sm - 1) * sms;
  const bool fits = decode_blocks + 2 * rotation_blocks <= slots;
  if (tiny_rotation && fits) return kPrerotateEarly;
  return d == 128 ? kPrerotatePlain : kRotateInKernel;
}

// TQ_SPLIT_WM = 1, 2, 4 or 8 forces the split kernel's rows per block (16 WM), for A/B timing and tests.
int forced_split_wm() {
  const char* v = std::getenv("TQ_SPLIT_WM");
  if (v == nullptr) return 0;
  const int w = std::atoi(v);
  return w == 1 || w == 2 || w == 4 || w == 8 ? w : 0;
}

// TQ_SPLIT_WARPS_PER_SM: the general path's split target in warps per SM, 4..16 (A/B timing; default 8, what
// its blocks of 200-250 registers reach; at most 16, which attention_workspace_bytes_max's partials bound assumes).
int split_target_warps() {
  const char* v = std::getenv("TQ_SPLIT_WARPS_PER_SM");
  const int w = v == nullptr ? 0 : std::atoi(v);
  return w >= 4 && w <= 16 ? w : 8;
}

// sizing_only: the workspace size is wanted before the device pointers exist (ORT before past_lengths is on the
// device, TensorRT getWorkspaceSize): the plan depends on shapes alone, so the pointer checks are skipped.
cudaError_t make_plan(const AttentionParams& p, Plan* plan, bool sizing_only = false) {
  char err[256];
  if (!validate(p.k_codec, err, sizeof(err))) return invalid("TQAttention: K codec: %s", err);
  if (!validate(p.v_codec, err, sizeof(err))) return invalid("TQAttention: V codec: %s", err);
  const int d = p.k_codec.head_dim;
  if (p.v_codec.head_dim != d)
    return invalid("TQAttention: V head_dim=%d: must equal K head_dim=%d", p.v_codec.head_dim, d);
  if (p.v_codec.qjl) return invalid("TQAttention: v_qjl=1: values never use QJL");
  if (!attention_head_dim_supported(d))
    return invalid("TQAttention: head_dim=%d: the CUDA kernel is compiled for 64, 128 and 256", d);
  if (p.batch < 0 || p.kv_heads <= 0 || p.q_heads <= 0 || p.new_tokens <= 0)
    return invalid("TQAttention: batch=%d q_heads=%d kv_heads=%d new_tokens=%d: must be >= 0, > 0, > 0, > 0",
                   p.batch, p.q_heads, p.kv_heads, p.new_tokens);
  if (p.q_heads % p.kv_heads != 0)
    return invalid("TQAttention: q_heads=%d: must be a multiple of kv_heads=%d", p.q_heads, p.kv_heads);
  if (static_cast<int64_t>(p.batch) * p.kv_heads > 65535)
    return invalid("TQAttention: batch * kv_heads=%lld: the CUDA grid allows at most 65535",
                   static_cast<long long>(p.batch) * p.kv_heads);
  if (p.k_rotation_heads != 1 && p.k_rotation_heads != p.kv_heads)
    return invalid("TQAttention: k_rotation heads=%d: must be 1 or Hkv=%d", p.k_rotation_heads, p.kv_heads);
  if (p.v_rotation_heads != 1 && p.v_rotation_heads != p.kv_heads)
    return invalid("TQAttention: v_rotation heads=%d: must be 1 or Hkv=%d", p.v_rotation_heads, p.kv_heads);
  if (p.mask_batch != 1 && p.mask_batch != p.batch)
    return invalid("TQAttention: mask batch=%d: must be 1 or B=%d", p.mask_batch, p.batch);
  if (p.mask_heads != 1 && p.mask_heads != p.q_heads)
    return invalid("TQAttention: mask heads=%d: must be 1 or Hq=%d", p.mask_heads, p.q_heads);
  if (!sizing_only && p.k_codec.qjl && p.k_qjl_matrix == nullptr)
    return invalid("TQAttention: k_qjl=1 needs k_qjl_matrix");
  const int w = p.sink_tokens + p.recent_window;
  if (p.sink_tokens < 0 || p.recent_window < 0)
    return invalid("TQAttention: sink_tokens=%d recent_window=%d: must be >= 0", p.sink_tokens, p.recent_window);
  if (!sizing_only && w > 0 && p.window_rows > 0 && (p.k_window == nullptr || p.v_window == nullptr))
    return invalid("TQAttention: W=%d > 0 needs k_window and v_window", w);
  if (p.cache_mode == kConcat) {
    const int64_t wd = std::min<int64_t>(p.mask_tokens, w);
    if (p.cache_rows + (w > 0 ? p.window_rows : 0) != p.mask_tokens)
      return invalid("TQAttention: concat mode: Tc=%lld + Wd=%lld must equal the mask's last dim Tm=%lld",
                     static_cast<long long>(p.cache_rows), static_cast<long long>(p.window_rows),
                     static_cast<long long>(p.mask_tokens));
    if (w > 0 && p.window_rows != wd)
      return invalid("TQAttention: concat mode: window rows=%lld must equal min(T, W)=%lld",
                     static_cast<long long>(p.window_rows), static_cast<long long>(wd));
  } else if (p.cache_mode == kBuffer) {
    if (!sizing_only && p.past_lengths == nullptr)
      return invalid("TQAttention: cache_mode=1 (buffer) needs past_lengths");
    if (w > 0 && p.window_rows != w)
      return invalid("TQAttention: buffer mode: window rows=%lld must equal W=%d", static_cast<long long>(p.window_rows),
                     w);
  } else {
    return invalid("TQAttention: cache_mode=%d: must be 0 (concat) or 1 (buffer)", p.cache_mode);
  }
  const uintptr_t cache_bits = reinterpret_cast<uintptr_t>(p.k_cache) | reinterpret_cast<uintptr_t>(p.v_cache);
  if (!sizing_only && p.cache_rows > 0 && (cache_bits & 15))
    return invalid("TQAttention: k_cache and v_cache must be 16-byte aligned");

  AttnArgs& a = plan->args;
  a = AttnArgs{};
  a.p = p;
  a.klay = row_layout(p.k_codec);
  a.vlay = row_layout(p.v_codec);
  a.group = p.q_heads / p.kv_heads;
  a.rows = a.group * p.new_tokens;
  a.kd = d * (p.k_codec.qjl ? 2 : 1);
  a.window = w;
  // Query rows per split-kernel block: 16 WM. 128-row blocks (8 warps) halve the decode work per row of a long
  // prefill chunk; they need their shared memory (not at D = 256 with QJL).
  plan->wm = a.rows <= 16 ? 1 : (a.rows <= 32 ? 2 : (a.rows <= 64 ? 4 : 8));
  if (const int forced = forced_split_wm(); forced > 0) plan->wm = forced;
  if (plan->wm == 8 && split_smem_layout(a, 128, 1, false) > max_block_smem()) plan->wm = 4;
  const int rb = 16 * plan->wm;
  plan->rowblocks = (a.rows + rb - 1) / rb;
  if (plan->rowblocks > 65535) return invalid("TQAttention: G * S=%d query rows per kv head: too many", a.rows);

  a.fast = fast_decode_eligible(p, a.klay, a.vlay, a.rows) ? 1 : 0;
  a.fast_warps = kFastWarps;
  const int64_t base = static_cast<int64_t>(p.batch) * p.kv_heads * plan->rowblocks;
  const int forced_warps = a.fast ? forced_fast_warps() : 0;
  if (forced_warps > 0 && fast_warps_ok(forced_warps, a.rows, d, a.vlay.mse_bits[0])) a.fast_warps = forced_warps;
  int64_t tiles = (p.cache_rows + kFastTile - 1) / kFastTile;  // 4-warp tiles
  int64_t nsplit = 0;
  if (p.force_splits > 0) {
    nsplit = p.force_splits;
  } else if (a.fast) {
    fast_smem_layout(a);
    const int sms = multiprocessor_count();
    const int64_t tw = (p.cache_rows + 32 * a.fast_warps - 1) / (32 * a.fast_warps);  // tiles at these warps
    nsplit = choose_fast_splits(std::max<int64_t>(tw, 1), std::max<int64_t>(base, 1),
                                fast_blocks_per_sm(fast_kernel(a), 32 * a.fast_warps, a.smem_bytes), sms);
    if (forced_warps == 0 && fast_warps_ok(2 * kFastWarps, a.rows, d, a.vlay.mse_bits[0]) &&
        choose_eight_warps(std::max<int64_t>(tiles, 1), nsplit, std::max<int64_t>(base, 1), sms,
                           w > 0 && p.window_rows > 0)) {
      a.fast_warps = 2 * kFastWarps;
      nsplit = 1;
    }
  } else {
    // Enough blocks for 8 warps per SM (split_target_warps), what the split kernel's registers allow: 2 blocks
    // of 4 warps, or 1 of 8 (WM = 8). More splits than that only add partials and the reduce kernel (measured
    // with a target of 16 warps: 6-35% slower for chunks of 1K tokens or fewer, bench/NOTES.md "Prefill v4"):
    // a 2K-token prefill chunk (Hq 32, Hkv 8, 512 blocks of 128 rows) stays one split, so the split kernel
    // writes the output itself.
    const int64_t per_sm = std::max(1, split_target_warps() / (plan->wm == 8 ? 8 : 4));
    const int64_t target = per_sm * multiprocessor_count();
    nsplit = (target + std::max<int64_t>(base, 1) - 1) / std::max<int64_t>(base, 1);
  }
  const int tile_tokens = a.fast ? 32 * a.fast_warps : kTileTokens;
  tiles = (p.cache_rows + tile_tokens - 1) / tile_tokens;
  nsplit = std::max<int64_t>(1, std::min<int64_t>({nsplit, std::max<int64_t>(tiles, 1), kMaxSplits}));
  const int64_t tiles_per_split = std::max<int64_t>(1, (tiles + nsplit - 1) / nsplit);
  a.split_tokens = tiles_per_split * tile_tokens;
  a.nsplit = static_cast<int>(std::max<int64_t>(1, (tiles + tiles_per_split - 1) / tiles_per_split));
  const int64_t wd = w > 0 ? p.window_rows : 0;
  a.nwin = wd > 0 ? static_cast<int>(std::min<int64_t>((wd + kWindowChunk - 1) / kWindowChunk, kMaxWindowSplits)) : 0;
  a.win_chunk = a.nwin > 0 ? static_cast<int>((wd + a.nwin - 1) / a.nwin) : 0;
  a.nsp = a.nsplit + a.nwin;
  a.fast_out = a.fast && a.nsp == 1 ? 1 : 0;
  // General path: the split kernel rotates q itself and, with one split, no window and whole rows per warp
  // (WM >= 4), writes the output itself, where R_k / R_v are Hadamard (rot_form; the rotate and reduce kernels
  // skip those rows). TQ_SPLIT_FUSE=0 turns both off (A/B timing).
  const bool fuse = split_fusion_enabled();
  a.split_q = !a.fast && fuse && !p.k_codec.qjl ? 1 : 0;
  const bool out_aligned = (reinterpret_cast<uintptr_t>(p.out) & 7) == 0;  // half2 / float2 stores
  a.split_out = !a.fast && fuse && a.nsp == 1 && plan->wm >= 4 && out_aligned ? 1 : 0;

  // Prefill chunks whose query rows take several row blocks per kv head: decode the cache once into float16
  // (tq_decode_cache_kernel) instead of once per row block, where the scratch is at most kMaxDecodedCacheBytes
  // and two stages of float16 tiles fit the block's shared memory. Measured on an H100 (bench/NOTES.md
  // "Prefill v3"): with the general instance 5-16% faster with 8 or more row blocks and a cache of 1K tokens or
  // more, slower (+5..18%) with 2 row blocks or a 256-token cache; with the KV16 instance (no QJL, no soft-cap,
  // WM >= 4; "Prefill v4") faster from 2 row blocks and a 256-token cache on. TQ_KV16=0/1 forces it off / on
  // (where it fits).
  const int wn = plan->wm >= 4 ? 1 : 4 / plan->wm;
  const int forced_kv16 = forced_decoded_cache();
  const bool kv16_instance = split_kv16_instance(a, plan->wm);
  const bool want_kv16 = forced_kv16 >= 0 ? forced_kv16 == 1
                         : kv16_instance  ? plan->rowblocks >= kDecodedCacheMinRowBlocksKV16
                                          : plan->rowblocks >= kDecodedCacheMinRowBlocks &&
                                                p.cache_rows >= kDecodedCacheMinRows;
  const size_t kv16_bytes = decoded_cache_bytes(p, a.kd);
  if (!a.fast && want_kv16 && p.cache_rows > 0 && kv16_bytes <= kMaxDecodedCacheBytes &&
      split_smem_layout(a, rb, wn, true) <= max_block_smem())
    plan->kv16_bytes = kv16_bytes;
  split_smem_layout(a, rb, wn, plan->kv16_bytes > 0);
  a.k_promised = p.k_rotation_hadamard != 0 && promised_hadamard_enabled() ? 1 : 0;
  a.v_promised = p.v_rotation_hadamard != 0 && promised_v_hadamard_enabled() ? 1 : 0;
  if (a.fast) {
    fast_smem_layout(a);
    // A promised Hadamard R_k: the decode kernel's butterfly reads D floats of R_k, so no rotation kernel ahead.
    a.q_hadamard = a.k_promised;
    int mode = forced_prerotate_mode();
    if (mode < 0 && a.q_hadamard) mode = kRotateInKernel;
    if (mode < 0) {
      const int64_t decode_blocks = static_cast<int64_t>(a.nsp) * p.batch * p.kv_heads;
      mode = choose_prerotate_mode(d, prerotate_blocks(p, a.group), decode_blocks,
                                   fast_blocks_per_sm(fast_kernel(a), 32 * a.fast_warps, a.smem_bytes),
                                   multiprocessor_count());
    }
    a.prerotated = mode != kRotateInKernel ? 1 : 0;
    a.prerotate_trigger = mode == kPrerotateEarly ? 1 : 0;
    plan->prerotate_dependent = mode == kPrerotateEarly || mode == kPrerotateAtExit;
    // Without a rotation kernel ahead and with at most one decode block per SM, the decode kernel itself is a
    // programmatic dependent of the stream's previous kernel and waits at its top for that grid (and everything
    // before it) to complete: the launch latency between the two overlaps the previous kernel's tail. The reduce
    // kernels let their dependents launch once their own wait returns, TQQuantize's kernels at their start; any
    // other previous kernel simply completes first, as with a plain launch. Measured on an H100 (bench/NOTES.md
    // "Early decode launch"): -1.5..-5% at T <= 4K for B = 1 and 8; with more blocks than SMs (B = 32 T = 1K,
    // one 8-warp split) +22%: the next grid's blocks took the slots the running one freed, unevenly.
    // TQ_DECODE_EARLY=0: off.
    const int64_t decode_blocks = static_cast<int64_t>(a.nsp) * p.batch * p.kv_heads;
    a.decode_waits = !a.prerotated && decode_blocks <= multiprocessor_count() && dependent_launch_enabled() &&
                             env_flag_on("TQ_DECODE_EARLY")
                         ? 1
                         : 0;
    // Two to kClusterMergeMax splits, no window, a promised Hadamard R_v, sm_90+, one wave of decode blocks: the
    // splits of a (b, kv head) form one thread-block cluster and merge through distributed shared memory, so the
    // call is one kernel (bench/NOTES.md "Cluster merge"). Each block gets a push region (push_bytes) after its
    // other shared memory. TQ_DECODE_CLUSTER=0: off (the warp reduce kernel; outputs equal up to float32
    // rounding).
    const int push = a.nsp >= 1 ? push_bytes(a.rows, a.nsp, d) : 0;
    const int push_off = (a.smem_bytes + 15) / 16 * 16;
    a.cluster_merge = !a.fast_out && a.v_promised && a.nwin == 0 && a.nsp >= 2 && a.nsp <= kClusterMergeMax &&
                              decode_blocks <= multiprocessor_count() && compute_capability_major() >= 9 &&
                              push_off + push <= max_block_smem() && env_flag_on("TQ_DECODE_CLUSTER")
                          ? 1
                          : 0;
    if (a.cluster_merge) {
      a.push_off = push_off;
      a.smem_bytes = push_off + push;
    }
  }

  const size_t rows_all = static_cast<size_t>(p.batch) * p.q_heads * p.new_tokens;
  plan->qbuf_bytes = align256(rows_all * a.kd * 2);
  plan->part_o_bytes = align256(rows_all * a.nsp * d * 4);
  plan->part_ml_bytes = align256(rows_all * a.nsp * 8);
  plan->rot_form_bytes = align256(static_cast<size_t>(2) * p.kv_heads * 4);
  // Tile bits for prefill chunks on the general path (two words per 32 cache tiles per mask row: any token
  // visible, every token adding exactly 0). The split kernel skips the tiles a warp sees nothing of, and reads no
  // mask values for the tiles its rows see whole (with a causal mask, all but the chunk's diagonal). Taken for
  // S >= 16 where a causal mask hides a quarter or more of the tiles (a past no longer than the chunk), and for
  // every chunk of 256 or more tokens; a 64-token chunk over a long past measured 4% slower with them (the
  // pass's launch and latency). bench/NOTES.md "Prefill v2" (visibility bits alone), "Prefill v4" (both).
  // TQ_MASK_TILES=0/1 forces them off/on.
  a.vis_tiles = (p.cache_rows + kTileTokens - 1) / kTileTokens;
  a.vis_words = static_cast<int>((a.vis_tiles + 31) / 32);
  const int forced_vis = forced_mask_tiles();
  const bool want_vis = forced_vis >= 0 ? forced_vis == 1 : p.cache_rows <= 2LL * p.new_tokens || p.new_tokens >= 256;
  if (!a.fast && p.new_tokens >= 16 && a.vis_tiles > 0 && want_vis)
    plan->vis_bytes =
        align256(static_cast<size_t>(2) * p.mask_batch * p.mask_heads * p.new_tokens * a.vis_words * 4);
  plan->rotate_smem = static_cast<size_t>(2 * kRotateRows) * (d + 4) * 4;
  return cudaSuccess;
}

template <int D, int WM>
cudaError_t launch_split(const Plan& plan, cudaStream_t stream) {
  const AttnArgs& a = plan.args;
  auto kernel = tq_attention_split_kernel<D, WM, false>;
  if constexpr (WM >= 4) {
    if (a.k16 != nullptr && split_kv16_instance(a, WM)) kernel = tq_attention_split_kernel<D, WM, true>;
  }
  const int threads = split_threads(WM);
  cudaError_t e = prepare_launch(reinterpret_cast<const void*>(kernel), threads, a.smem_bytes, nullptr);
  if (e != cudaSuccess) return cuda_failed(e, "TQAttention: shared memory attribute of the split kernel");
  const dim3 grid(a.nsp, plan.rowblocks, a.p.batch * a.p.kv_heads);
  kernel<<<grid, threads, a.smem_bytes, stream>>>(a);
  e = cudaGetLastError();
  return e == cudaSuccess ? e : cuda_failed(e, "TQAttention: tq_attention_split_kernel launch");
}

template <int D>
cudaError_t launch_split_d(const Plan& plan, cudaStream_t stream) {
  switch (plan.wm) {
    case 1: return launch_split<D, 1>(plan, stream);
    case 2: return launch_split<D, 2>(plan, stream);
    case 4: return launch_split<D, 4>(plan, stream);
    default: return launch_split<D, 8>(plan, stream);
  }
}

}  // namespace

bool attention_head_dim_supported(int head_dim) { return head_dim == 64 || head_dim == 128 || head_dim == 256; }

size_t attention_workspace_bytes(const AttentionParams& p) {
  Plan plan;
  if (make_plan(p, &plan, /*sizing_only=*/true) != cudaSuccess) return 0;
  return plan_workspace_bytes(plan);
}

// An upper bound of attention_workspace_bytes over every shape up to p's (batch, new_tokens, cache_rows,
// mask_tokens, window_rows each <= p's; the rest equal), for a workspace sized once at maximum shapes (TensorRT).
// The exact size is not monotone: a smaller shape has fewer blocks, so it may take more splits. Split rows bound:
// general path, nsplit <= target / base + 1 with base = B Hkv ceil(G S / RB), so rows * nsplit <= rows + target
// RB, and target RB <= 4 SMs 64 (target = 4 SMs up to RB = 64, 2 SMs at RB = 128; 4 SMs 128 is used); the decode
// kernel (S == 1) at most kMaxSplits splits of B Hq rows; windows add rows * nwin; the prefill tile bits; the
// decoded cache (no larger than at the maximum shapes and kMaxDecodedCacheBytes) wherever a smaller chunk could
// take kDecodedCacheMinRowBlocksKV16 row blocks (the KV16 instance's rule, the loosest), or TQ_KV16=1 forces it.
size_t attention_workspace_bytes_max(const AttentionParams& p) {
  Plan plan;
  if (make_plan(p, &plan, /*sizing_only=*/true) != cudaSuccess) return 0;
  const AttnArgs& a = plan.args;
  const size_t d = static_cast<size_t>(p.k_codec.head_dim);
  const size_t rows_all = static_cast<size_t>(p.batch) * p.q_heads * p.new_tokens;
  const size_t decode_rows = static_cast<size_t>(p.batch) * p.q_heads;
  const size_t nwin = static_cast<size_t>(a.nwin);
  const size_t general = rows_all * (1 + nwin) + static_cast<size_t>(4) * multiprocessor_count() * 128;
  const size_t decode = decode_rows * (kMaxSplits + nwin);
  const size_t part_rows = std::max({rows_all * a.nsp, general, decode});
  // Tile bits: whenever a smaller shape could take them (their choice depends on the past's length).
  const size_t vis = p.new_tokens >= 16 ? align256(static_cast<size_t>(2) * p.mask_batch * p.mask_heads *
                                                   p.new_tokens * static_cast<size_t>(a.vis_words) * 4)
                                        : 0;
  const int forced_kv16 = forced_decoded_cache();
  // Rows per block are at least 16 min(WM, 4): WM = 8 falls back to 4 where its shared memory does not fit.
  const int min_rb = 16 * std::min(forced_split_wm() > 0 ? forced_split_wm() : 4, 4);
  const bool kv16_possible =
      forced_kv16 >= 0 ? forced_kv16 == 1 : a.rows > (kDecodedCacheMinRowBlocksKV16 - 1) * min_rb;
  const size_t kv16 =
      kv16_possible && p.new_tokens >= 2 ? std::min(decoded_cache_bytes(p, a.kd), kMaxDecodedCacheBytes) : 0;
  return plan.qbuf_bytes + align256(part_rows * d * 4) + align256(part_rows * 8) + plan.rot_form_bytes +
         std::max(plan.vis_bytes, vis) + std::max(plan.kv16_bytes, kv16);
}

cudaError_t launch_attention(const AttentionParams& p, void* workspace, cudaStream_t stream) {
  clear_error();
  Plan plan;
  cudaError_t e = make_plan(p, &plan);
  if (e != cudaSuccess) return e;
  if (p.batch == 0) return cudaSuccess;
  if (workspace == nullptr || (reinterpret_cast<uintptr_t>(workspace) & 255))
    return invalid("TQAttention: workspace must be non-null and 256-byte aligned (%zu bytes)",
                   plan_workspace_bytes(plan));
  AttnArgs& a = plan.args;
  char* ws = static_cast<char*>(workspace);
  a.qbuf = reinterpret_cast<__half*>(ws);
  a.part_o = reinterpret_cast<float*>(ws + plan.qbuf_bytes);
  a.part_ml = reinterpret_cast<float2*>(ws + plan.qbuf_bytes + plan.part_o_bytes);
  a.rot_form = reinterpret_cast<int*>(ws + plan.qbuf_bytes + plan.part_o_bytes + plan.part_ml_bytes);
  const size_t vis_at = plan.qbuf_bytes + plan.part_o_bytes + plan.part_ml_bytes + plan.rot_form_bytes;
  a.vis = plan.vis_bytes > 0 ? reinterpret_cast<uint32_t*>(ws + vis_at) : nullptr;
  a.full = a.vis != nullptr ? a.vis + static_cast<size_t>(p.mask_batch) * p.mask_heads * p.new_tokens * a.vis_words
                            : nullptr;
  a.k16 = plan.kv16_bytes > 0 ? reinterpret_cast<__half*>(ws + vis_at + plan.vis_bytes) : nullptr;
  a.v16 = a.k16 != nullptr ? a.k16 + static_cast<size_t>(p.batch) * p.kv_heads * p.cache_rows * a.kd : nullptr;
  const int d = p.k_codec.head_dim;

  // 1. Rotate q (the decode kernel rotates its own rows), after the one check of R_k's and R_v's structure.
  if (!a.fast) {
    const dim3 form_grid(std::max(p.k_rotation_heads, p.v_rotation_heads), 2);
    tq_rotation_form_kernel<<<form_grid, kThreads, 0, stream>>>(a);
    e = cudaGetLastError();
    if (e != cudaSuccess) return cuda_failed(e, "TQAttention: tq_rotation_form_kernel launch");
    if (a.vis != nullptr) {
      const int64_t mask_items = static_cast<int64_t>(p.mask_batch) * p.mask_heads * p.new_tokens * a.vis_words;
      const int64_t blocks = (mask_items + kThreads / 32 - 1) / (kThreads / 32);
      if (blocks > 0x7fffffffLL) return invalid("TQAttention: too many mask rows");
      tq_mask_tiles_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a);
      e = cudaGetLastError();
      if (e != cudaSuccess) return cuda_failed(e, "TQAttention: tq_mask_tiles_kernel launch");
    }
    const bool per_head = p.k_rotation_heads != 1;
    const int64_t rows_in_head = per_head ? static_cast<int64_t>(p.batch) * a.group * p.new_tokens
                                          : static_cast<int64_t>(p.batch) * p.q_heads * p.new_tokens;
    const int64_t blocks = (rows_in_head + kRotateRows - 1) / kRotateRows;
    if (blocks > 0x7fffffffLL) return invalid("TQAttention: too many query rows");
    e = prepare_launch(reinterpret_cast<const void*>(tq_rotate_q_kernel), kThreads,
                       static_cast<int>(plan.rotate_smem), nullptr);
    if (e != cudaSuccess) return cuda_failed(e, "TQAttention: shared memory attribute of tq_rotate_q_kernel");
    const dim3 grid(static_cast<unsigned>(blocks), per_head ? p.kv_heads : 1);
    tq_rotate_q_kernel<<<grid, kThreads, plan.rotate_smem, stream>>>(a);
    e = cudaGetLastError();
    if (e != cudaSuccess) return cuda_failed(e, "TQAttention: tq_rotate_q_kernel launch");
  }
  // 1b. Prefill chunks over several row blocks: the cache decoded once into float16 for the split kernel.
  if (a.k16 != nullptr) {
    const int64_t tiles = (p.cache_rows + kTileTokens - 1) / kTileTokens;
    if (tiles > 0x7fffffffLL) return invalid("TQAttention: too many cache rows");
    const int smem = static_cast<int>(decode_cache_smem(a));
    e = prepare_launch(reinterpret_cast<const void*>(tq_decode_cache_kernel), kDecodeCacheThreads, smem, nullptr);
    if (e != cudaSuccess) return cuda_failed(e, "TQAttention: shared memory attribute of tq_decode_cache_kernel");
    const dim3 grid(static_cast<unsigned>(tiles), 1, p.batch * p.kv_heads);
    tq_decode_cache_kernel<<<grid, kDecodeCacheThreads, smem, stream>>>(a);
    e = cudaGetLastError();
    if (e != cudaSuccess) return cuda_failed(e, "TQAttention: tq_decode_cache_kernel launch");
  }
  // 1c. The decode kernel's q rotation ahead of it; the decode kernel follows as its programmatic dependent
  // (kPrerotateEarly, kPrerotateAtExit on sm_90+) or plainly.
  if (a.prerotated) {
    const dim3 grid = prerotate_grid(p, a.group);
    switch (d) {
      case 64: tq_prerotate_q_kernel<64><<<grid, prerotate_threads(64), 0, stream>>>(a); break;
      case 128: tq_prerotate_q_kernel<128><<<grid, prerotate_threads(128), 0, stream>>>(a); break;
      default: tq_prerotate_q_kernel<256><<<grid, prerotate_threads(256), 0, stream>>>(a); break;
    }
    e = cudaGetLastError();
    if (e != cudaSuccess) return cuda_failed(e, "TQAttention: tq_prerotate_q_kernel launch");
  }
  // 2. Splits.
  if (a.fast) {
    const FastKernel kernel = fast_kernel(a);
    e = prepare_launch(reinterpret_cast<const void*>(kernel), a.fast_warps * 32, a.smem_bytes, nullptr);
    if (e != cudaSuccess) return cuda_failed(e, "TQAttention: shared memory attribute of the decode kernel");
    const dim3 grid(a.nsp, 1, p.batch * p.kv_heads);
    const bool dependent = (plan.prerotate_dependent || a.decode_waits) && dependent_launch_enabled();
    if (a.cluster_merge) {
      e = launch_maybe_dependent(kernel, grid, a.fast_warps * 32, a.smem_bytes, stream, dependent, a,
                                 static_cast<unsigned>(a.nsp));
      if (e == cudaSuccess) return cudaSuccess;  // the clusters wrote the output
      cudaGetLastError();  // not launched (a runtime without clusters): the plain launch and the reduce kernel
      a.cluster_merge = 0;
    }
    e = launch_maybe_dependent(kernel, grid, a.fast_warps * 32, a.smem_bytes, stream, dependent, a);
    if (e != cudaSuccess) return cuda_failed(e, "TQAttention: tq_attention_decode_kernel launch");
  } else {
    switch (d) {
      case 64: e = launch_split_d<64>(plan, stream); break;
      case 128: e = launch_split_d<128>(plan, stream); break;
      default: e = launch_split_d<256>(plan, stream); break;
    }
    if (e != cudaSuccess) return e;
  }
  // 3. Reduce and un-rotate (unless the decode kernel wrote the output). After the decode kernel (which calls
  // dev::pdl_trigger first) it is a programmatic dependent launch on sm_90+ (dependent_launch_enabled).
  if (a.fast_out) return cudaSuccess;
  const int64_t rows_all = static_cast<int64_t>(p.batch) * p.q_heads * p.new_tokens;
  if (rows_all > 0x7fffffffLL) return invalid("TQAttention: too many query rows");
  if (!a.fast) {
    // The split kernel wrote every row itself (one split, no window, R_v promised Hadamard): nothing to reduce.
    if (a.split_out && a.v_promised) return cudaSuccess;
    const int64_t blocks = (rows_all + kThreads / 32 - 1) / (kThreads / 32);
    tq_attention_reduce_rows_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a, rows_all);
    e = cudaGetLastError();
    return e == cudaSuccess ? e : cuda_failed(e, "TQAttention: tq_attention_reduce_rows_kernel launch");
  }
  if (a.v_promised && a.nsp <= 32 && env_flag_on("TQ_REDUCE_WARP")) {  // one warp per row (bit-identical)
    const dim3 grid(static_cast<unsigned>((rows_all + kThreads / 32 - 1) / (kThreads / 32)));
    switch (d) {
      case 64: e = launch_maybe_dependent(tq_attention_reduce_warp_kernel<2>, grid, kThreads, 0, stream,
                                          dependent_launch_enabled(), a); break;
      case 128: e = launch_maybe_dependent(tq_attention_reduce_warp_kernel<4>, grid, kThreads, 0, stream,
                                           dependent_launch_enabled(), a); break;
      default: e = launch_maybe_dependent(tq_attention_reduce_warp_kernel<8>, grid, kThreads, 0, stream,
                                          dependent_launch_enabled(), a); break;
    }
    return e == cudaSuccess ? e : cuda_failed(e, "TQAttention: tq_attention_reduce_warp_kernel launch");
  }
  e = launch_maybe_dependent(tq_attention_reduce_kernel, dim3(static_cast<unsigned>(rows_all)), kThreads, 0, stream,
                             dependent_launch_enabled(), a);
  return e == cudaSuccess ? e : cuda_failed(e, "TQAttention: tq_attention_reduce_kernel launch");
}

}  // namespace tq::kernels

#if TQ_STAMPS
// Timing builds only: copy (and clear) the stamps of dev::stamp (tq_device.cuh). n = number of 64-bit words.
extern "C" __attribute__((visibility("default"))) int tq_stamps_read(unsigned long long* host, int n, int clear) {
  return tq::kernels::dev::read_stamps(host, n, clear);
}
#endif
