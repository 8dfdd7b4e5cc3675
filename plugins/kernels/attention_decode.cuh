// Fast decode path of TQAttention (S == 1, one part per cache, no QJL, 2..4 MSE bits for K and V; D = 128, D = 64,
// and D = 256 with G <= 8; at D = 64 2/3-bit V needs G <= 8 too: fast_decode_eligible).
// Included by attention.cu inside its anonymous namespace (it shares AttnArgs, window_block, mask_add, ...);
// everything else goes through the generic split kernel there.
//
// Design (bench/NOTES.md, attention v2):
// - Norms are folded out of the inner loops: score_t = gamma_t * <q_rot, c[codes_t]> and the PV operand is
//   p_t * gamma_t, so dequantization is a pure code -> centroid lookup.
// - 4-bit codes with G <= 8 decode through a shared-memory table of code pairs: entry e (one code byte) is
//   half2(c[e & 15], c[e >> 4]), kLutReps copies interleaved by word so a warp's random lookups rarely share a
//   bank; one byte extract + address + 32-bit load gives an mma operand register (K: one token's two
//   coordinates; V: one coordinate of two tokens, from a byte built of both tokens' nibbles).
//   bench/NOTES.md "Pair tables". Where the shared memory allows it the tables sit at a 16 KB boundary of the
//   shared window, so a lookup's address is one LOP3 (mask | base) instead of a mask and an add (alut_layout;
//   bench/NOTES.md "Aligned tables").
// - Otherwise the lookup runs in registers with byte permutes (prmt): the fp16 centroid table is split into a
//   low-byte and a high-byte plane (8 entries = 2 registers per plane); one prmt per plane looks up 4 codes, one
//   or two more interleave the planes into half2. 4-bit codes look up both 8-entry halves and select on bit 3 (a
//   byte mask made by prmt's sign-replicate mode); 3-bit codes merge the 2-bit and 1-bit segments into prmt
//   selectors.
// - Tensor cores for Q K^T and P V (mma.m16n8k16, fp32 accumulation) with the decoded K/V fragments built
//   straight in registers. The order of the D coordinates inside a dot product is free, so each thread decodes a
//   contiguous chunk of a row (K: chunk lane%4 of D/4 coordinates; V: chunk lane/4 of D/8 coordinates) and the
//   query fragments (and the output columns) are permuted to match, once per block. With G <= 8 the products
//   run transposed, S^T = K Q^T and O^T = V^T P^T (decoded K/V as the A operand, the 8 query rows as n), so no
//   mma row is padding (bench/NOTES.md "Long T"); G > 8 keeps Q and P as the A operand (16 rows).
// - Whole tiles of both caches (32 tokens per warp) stream global -> shared with 16-byte cp.async, 3-4 stages
//   deep; each warp owns 32 tokens of a tile and keeps its own online softmax; warps merge once at the end.
//   4 warps per block (128-token tiles); with G <= 8 also 8 warps (256-token tiles), which the launcher takes
//   where one 8-warp split replaces two 4-warp splits that already fill the SMs, and the reduce kernel
//   (choose_eight_warps; bench/NOTES.md "small T"). With a K pair table each warp copies and waits for its own
//   rows only, and the tile loop has no block barrier (fast_warp_pipe; bench/NOTES.md "Warp-private stages").
#pragma once

constexpr int kFastWarps = 4;
constexpr int kFastTile = 128;                // tokens per 4-warp block tile (32 per warp)
constexpr int kFastStages = 4;             // pipeline depth at most (fast_stages)
constexpr int kFastD = 128;
constexpr int kFastRows = 16;                 // query rows per block (G <= 16)
#ifndef TQ_FAST_MIN_BLOCKS
#define TQ_FAST_MIN_BLOCKS 3
#endif
constexpr int kFastMinBlocks = TQ_FAST_MIN_BLOCKS;  // register cap: blocks per SM (bench A/B: 2 or 3)
// With G <= 8 only the upper half of the m16 fragments holds query rows: no registers for the lower half's
// accumulators or query operands, so 4 blocks (16 warps) fit per SM.
#ifndef TQ_FAST_MIN_BLOCKS_HALF
#define TQ_FAST_MIN_BLOCKS_HALF 4
#endif
constexpr int kFastMinBlocksHalf = TQ_FAST_MIN_BLOCKS_HALF;

// 4-bit codes of the G <= 8 instances decode through a shared-memory table of code *pairs*: entry e (a code
// byte, low nibble first) holds half2(c[e & 15], c[e >> 4]), so one 32-bit load decodes two coordinates (a K
// byte of one token, or a V byte built from two tokens' codes at one position). kLutReps copies of the table,
// interleaved by word (word e * kLutReps + lane % kLutReps), keep the lanes of a warp on distinct banks except
// for lanes lane % kLutReps apart. 0 turns the table off (byte-permute lookups in registers, as before).
#ifndef TQ_DECODE_LUT_REPS
#define TQ_DECODE_LUT_REPS 16
#endif
constexpr int kLutReps = TQ_DECODE_LUT_REPS;
static_assert(kLutReps == 0 || kLutReps == 8 || kLutReps == 16 || kLutReps == 32, "table copies: 0, 8, 16 or 32");
__host__ __device__ constexpr bool lut_decode(int m, bool half2) { return kLutReps > 0 && m == 4 && !half2; }
// One table of 32 copies instead of 16 (conflict-free lookups, twice the bytes) where only one side has a
// table: V-only tables (2/3-bit K, 4-bit V) and D = 256. Measured (bench/NOTES.md "One table of 32 copies"):
// K3/V4 -1.6..-4.5% at long T, D = 256 K4/V3 -5%; K4/V3 and K4/V2 at D = 128 lose a pipeline stage to it
// (+1..+4.4%), and D = 64 K4/V3 moves +-1%.
__host__ __device__ constexpr bool solo_lut32(int mk, int mv, bool half2, int d) {
  return kLutReps == 16 && lut_decode(mk, half2) != lut_decode(mv, half2) && (d == 256 || !lut_decode(mk, half2));
}
__host__ __device__ constexpr int fast_lut_bytes(int mk, int mv, bool half2, int d) {
  return solo_lut32(mk, mv, half2, d)
             ? 256 * 4 * 32
             : ((lut_decode(mk, half2) ? 1 : 0) + (lut_decode(mv, half2) ? 1 : 0)) * 256 * 4 * kLutReps;
}

// Shared memory per 4 warps the stages and tables may take: 56 KB (4 blocks per SM); 75 KB (3 blocks) for the
// 4-warp instances with a K pair table, whose tile loop needs more than 128 registers (it spills at 4 blocks).
// D = 256 (4 warps, G <= 8 only) is sized for 2 blocks per SM: twice D = 128's query and accumulator registers.
__host__ __device__ constexpr int fast_block_budget(int mk, bool half2, int nw, int d = kFastD) {
  return d == 256 ? 112 * 1024 : (lut_decode(mk, half2) && nw == kFastWarps ? 75 * 1024 : 56 * 1024);
}

// Warp-private stages (bench/NOTES.md "Warp-private stages"): each warp copies its own 32 rows of every tile
// into its own region of the stage and waits for its own copies only (cp.async groups + __syncwarp), so the tile
// loop has no block barrier and a warp never waits for the block's slowest warp. A warp's region is its 32 rows
// (32 * rb bytes, a multiple of 16 for the even row sizes of every codec) plus 16 bytes for the unaligned head of
// the tile (the same head for every warp's rows); region w starts 16 * w bytes after where it would sit in a
// block-shared piece, which is how the loop finds it. TQ_DECODE_WARP_PIPE=0: one piece copied by the whole block
// and a block barrier per tile (A/B only).
#ifndef TQ_DECODE_WARP_PIPE
#define TQ_DECODE_WARP_PIPE 1
#endif
// Only the instances with a K pair table take them (4-bit K, G <= 8): at long T they measured 2-6% faster, the
// others 1-5% slower (3-bit K) or within the spread.
__host__ __device__ constexpr bool fast_warp_pipe(int mk, bool half2) {
  return TQ_DECODE_WARP_PIPE != 0 && lut_decode(mk, half2);
}

// Bytes of one stage's K (or V) piece of row size rb: warp-private (wp), nw regions (32 rows + 16 bytes of head
// each) and 16 bytes of slack; block-shared, 32 * nw rows, 16 bytes of unaligned head and 16 of slack.
__host__ __device__ constexpr int fast_piece_bytes_rb(int rb, int nw, bool wp) {
  return wp ? nw * (32 * rb + 16) + 16 : (32 * nw * rb + 32 + 15) & ~15;
}
__host__ __device__ constexpr int fast_piece_bytes(int m, int d, int nw, bool wp) {
  return fast_piece_bytes_rb(m * d / 8 + 2, nw, wp);
}
// One 4-warp stage (K and V pieces).
__host__ __device__ constexpr int fast_stage4_bytes(int mk, int mv, int d, bool wp) {
  return fast_piece_bytes(mk, d, 4, wp) + fast_piece_bytes(mv, d, 4, wp);
}

// Pipeline depth: 4 stages when 4 blocks of them fit an SM's shared memory (<= 56 KB each), else 3; with the
// pair tables the most stages that fit next to them in fast_block_budget (at least 2). Host and device both
// take it from here (fast_smem_layout). An 8-warp block's stages are twice as large (2 blocks per SM, one table
// each): lut_bytes_per_4_warps and the budget are per 4 warps.
__host__ __device__ constexpr int fast_stages(int mk, int mv, int lut_bytes_per_4_warps = 0,
                                              int budget = 56 * 1024, int d = kFastD, bool wp = false) {
  return lut_bytes_per_4_warps == 0
             ? (4 * fast_stage4_bytes(mk, mv, d, wp) <= 56 * 1024 ? 4 : 3)
             : (4 * fast_stage4_bytes(mk, mv, d, wp) + lut_bytes_per_4_warps <= budget
                    ? 4
                    : (3 * fast_stage4_bytes(mk, mv, d, wp) + lut_bytes_per_4_warps <= budget ? 3 : 2));
}

// Aligned pair tables (bench/NOTES.md "Aligned tables", "One table of 32 copies"). Both tables share one 32 KB
// region of 256 rows of 128 bytes, row e holding entry e: words 0..15 K's 16 copies and words 16..31 V's, or, when
// the K and V codebooks are equal (the converter's are), 32 copies of the one table, so that a warp's 32 random
// lookups never share a bank (16 copies: lanes 16 apart collide about half the time, and some pair does in
// nearly every load; conflict-free measured 6-9% faster at long T for 4/4). The lookup is the same either way,
// only the lanes' base addresses differ (fill_alut). With the region at a kLutAlign boundary of the shared window, a
// lookup address is ((code byte << 7) & 0x7f80) | (region | V offset | 4 * copy): one LOP3 after the shift, where
// an unaligned table needs a mask and an add (a quarter of the lookup's instructions). The dynamic shared memory
// starts wherever the runtime puts it (0x400 on sm_90: the reserved 1 KB), so the kernel places the tables at the
// first boundary at or after its start and fills the hole below them with whole stage pieces (K0, V0, K1, ... in
// order, while they fit), the rest after the tables. The allocation is the worst case over every start, so the
// layout fits wherever the window begins. 0 stages (alut_stages): the instance keeps the unaligned layout.
// TQ_DECODE_ALIGNED_LUT=0 turns it off everywhere (A/B only).
#ifndef TQ_DECODE_ALIGNED_LUT
#define TQ_DECODE_ALIGNED_LUT 1
#endif
// Mask probe A/B switches (both 1 in every real build): the S^T instances issue the probe's load at the top of
// the tile (1) or where it is used (0); the D = 128 instances without tables scan the split's mask row once
// before the loop (1) or probe every tile (0).
#ifndef TQ_DECODE_EARLY_PROBE
#define TQ_DECODE_EARLY_PROBE 1
#endif
#ifndef TQ_DECODE_SPLIT_PROBE
#define TQ_DECODE_SPLIT_PROBE 1
#endif
constexpr int kLutAlign = 256 * 128;  // the aligned tables' region: 256 rows of 32 words
static_assert(kLutReps != 16 || fast_lut_bytes(4, 4, false, kFastD) == kLutAlign,
              "two 16-copy tables fill the region");

struct AlutLayout {
  int lut;                 // offset of the first table (a kLutAlign boundary of the window)
  int k[kFastStages];      // offsets of each stage's K piece
  int v[kFastStages];      // and V piece
  int end;                 // bytes used
};

// Layout for a window start `hole` bytes below the next kLutAlign boundary.
__host__ __device__ constexpr AlutLayout alut_layout(int hole, int stages, int kb, int vb, int lut_bytes) {
  AlutLayout l{};
  l.lut = hole;
  int below = 0, above = hole + lut_bytes;
  bool fits = true;
  for (int s = 0; s < stages; ++s) {
    for (int kv = 0; kv < 2; ++kv) {
      const int n = kv == 0 ? kb : vb;
      fits = fits && below + n <= hole;
      int& off = kv == 0 ? l.k[s] : l.v[s];
      if (fits) {
        off = below;
        below += n;
      } else {
        off = above;
        above += n;
      }
    }
  }
  l.end = above;
  return l;
}

// Bytes the aligned layout needs at the worst window start (starts are 16-byte aligned). The end grows with the
// hole until one more piece fits below the tables, so the worst hole is the largest (kLutAlign - 16) or one just
// short of a piece boundary (the first j pieces' bytes - 16): at most 2 * stages + 1 candidates.
__host__ __device__ constexpr int alut_worst_bytes(int stages, int kb, int vb, int lut_bytes) {
  int worst = alut_layout(kLutAlign - 16, stages, kb, vb, lut_bytes).end;
  int prefix = 0;
  for (int j = 0; j < 2 * stages; ++j) {
    prefix += j % 2 == 0 ? kb : vb;
    if (prefix - 16 >= kLutAlign) break;
    const int e = alut_layout(prefix - 16, stages, kb, vb, lut_bytes).end;
    worst = e > worst ? e : worst;
  }
  return worst;
}

// Compile-time proof of the layout at every window start (static_assert in the kernel): the tables start at the
// boundary; every piece is 16-byte aligned, lies below the tables or after them, overlaps no other piece and
// ends within the allocation (alut_worst_bytes).
__host__ __device__ constexpr bool alut_layout_ok(int stages, int kb, int vb, int lut_bytes) {
  const int worst = alut_worst_bytes(stages, kb, vb, lut_bytes);
  for (int hole = 0; hole < kLutAlign; hole += 16) {
    const AlutLayout l = alut_layout(hole, stages, kb, vb, lut_bytes);
    if (l.lut != hole || l.end > worst) return false;
    for (int i = 0; i < 2 * stages; ++i) {
      const int oi = i % 2 == 0 ? l.k[i / 2] : l.v[i / 2], ni = i % 2 == 0 ? kb : vb;
      if (oi % 16 != 0 || oi < 0 || oi + ni > l.end) return false;
      if (!(oi + ni <= hole || oi >= hole + lut_bytes)) return false;
      for (int j = 0; j < i; ++j) {
        const int oj = j % 2 == 0 ? l.k[j / 2] : l.v[j / 2], nj = j % 2 == 0 ? kb : vb;
        if (oi < oj + nj && oj < oi + ni) return false;
      }
    }
  }
  return true;
}

// Pipeline depth of an instance with aligned tables: 4-bit K and V (both tables; with one table, 2/3/4-bit
// mixes at D = 64, it measured 3-6% slower at long T), the unaligned layout's depth (fast_stages), when its worst
// case fits the instance's budget (fast_block_budget, per block) and its last K piece holds the q rotation's
// staging ([8][D] float32, then [16][D + 8] float16); else 0 (the instance keeps the unaligned layout, e.g. 4/4
// bits with 8 warps, or D = 256). So the alignment never costs pipeline depth.
__host__ __device__ constexpr int alut_stages(int mk, int mv, bool half2, int nw, int d) {
  if (!TQ_DECODE_ALIGNED_LUT || kLutReps != 16 || half2 || !(lut_decode(mk, half2) && lut_decode(mv, half2)))
    return 0;
  const bool wp = fast_warp_pipe(mk, half2);
  const int kb = fast_piece_bytes(mk, d, nw, wp), vb = fast_piece_bytes(mv, d, nw, wp);
  const int q_bytes = 16 * (d + 8) * 2 > 8 * d * 4 ? 16 * (d + 8) * 2 : 8 * d * 4;
  const int lut = fast_lut_bytes(mk, mv, half2, d);
  const int budget = fast_block_budget(mk, half2, nw, d) * nw / kFastWarps;
  const int s = fast_stages(mk, mv, lut * kFastWarps / nw, fast_block_budget(mk, half2, nw, d), d, wp);
  return kb >= q_bytes && alut_worst_bytes(s, kb, vb, lut) <= budget ? s : 0;
}

// Blocks per SM the register cap is sized for: 4 (G <= 8) or 3 (G > 8) 4-warp blocks, or as many as the shared
// memory of the stages and pair tables admits when that is fewer (228 KB per SM, 1 KB reserved per block), so
// a table instance that smem limits to 3 blocks may use up to 168 registers instead of spilling at 128.
__host__ __device__ constexpr int fast_min_blocks(int mk, int mv, bool half2, int nw, int d) {
  const int by_regs = d == 256 ? 2 : (half2 ? kFastMinBlocks : kFastMinBlocksHalf) * kFastWarps / nw;
  const int lut = fast_lut_bytes(mk, mv, half2, d);
  const bool wp = fast_warp_pipe(mk, half2);
  // (block-shared: the 4-warp estimate scaled, as before the warp-private stages, which keeps those instances'
  // register caps; warp-private: exact)
  const int stage = wp ? fast_piece_bytes(mk, d, nw, wp) + fast_piece_bytes(mv, d, nw, wp)
                       : (kFastTile * ((mk + mv) * d / 8 + 4) + 64) * nw / kFastWarps;
  const int as = alut_stages(mk, mv, half2, nw, d);
  const int smem =
      as > 0 ? alut_worst_bytes(as, fast_piece_bytes(mk, d, nw, wp), fast_piece_bytes(mv, d, nw, wp), lut)
             : fast_stages(mk, mv, lut * kFastWarps / nw, fast_block_budget(mk, half2, nw, d), d, wp) * stage + lut;
  const int by_smem = 228 * 1024 / (smem + 1024);
  return lut == 0 || by_smem >= by_regs ? by_regs : (by_smem < 1 ? 1 : by_smem);
}

// The aligned layout's stage offsets kept opaque to ptxas (bench/NOTES.md "Per-tile address
// rematerialization"); 0 lets it recompute them per tile (A/B only).
#ifndef TQ_DECODE_OPAQUE_LAYOUT
#define TQ_DECODE_OPAQUE_LAYOUT 1
#endif

// Timing experiments only (bench/gpu_harness/build_variant.sh; results are wrong when set): bit 1 skips the mask
// loads, bit 2 the P V decode + mma, bit 4 the Q K decode + mma, bit 8 the q rotation's R_k loads and products
// (q stays unrotated). 0 in every real build.
#ifndef TQ_EXP_SKIP
#define TQ_EXP_SKIP 0
#endif
constexpr int kExpSkip = TQ_EXP_SKIP;

// Additive mask value at o: float16 / float32 as stored, bool as 0 (visible) or -inf.
template <int MASK>
__device__ __forceinline__ float mask_value(const void* mask, int64_t o) {
  if constexpr (MASK == static_cast<int>(MaskType::kFloat16)) {
    return __half2float(static_cast<const __half*>(mask)[o]);
  } else if constexpr (MASK == static_cast<int>(MaskType::kBool)) {
    return static_cast<const uint8_t*>(mask)[o] ? 0.0f : kNegInf;
  } else {
    return static_cast<const float*>(mask)[o];
  }
}

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
  return d;
}

// 2^x with results below 2^-126 flushed to 0 (one MUFU.EX2; __expf's non-ftz ex2 adds a range fix-up).
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Transpose of an 8x8 fp16 matrix held as an mma fragment (lane 4i + j holds row i, columns 2j, 2j + 1).
__device__ __forceinline__ uint32_t movmatrix_trans(uint32_t x) {
  uint32_t d;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(d) : "r"(x));
  return d;
}

template <int M>
constexpr int lut_words() {
  return M == 4 ? 8 : (M == 3 ? 4 : 2);
}

// Byte planes of the fp16 centroid table: words [0, n/4) low bytes of entries 4k..4k+3, then the high bytes.
template <int M>
__device__ __forceinline__ void make_lut(const float* codebook, uint32_t (&t)[lut_words<M>()]) {
  constexpr int kWords = lut_words<M>() / 2;
#pragma unroll
  for (int k = 0; k < kWords; ++k) {
    uint32_t lo = 0, hi = 0;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const uint32_t h = __half_as_ushort(__float2half_rn(codebook[4 * k + e]));
      lo |= (h & 0xffu) << (8 * e);
      hi |= (h >> 8) << (8 * e);
    }
    t[k] = lo;
    t[kWords + k] = hi;
  }
}

// Four lookups: selector nibbles (low 16 bits of sel) are 3-bit indexes; msk (4-bit only) picks entries 8..15.
template <int M>
__device__ __forceinline__ void lut_lookup(const uint32_t (&t)[lut_words<M>()], uint32_t sel, uint32_t msk,
                                           uint32_t& lo, uint32_t& hi) {
  if constexpr (M == 4) {
    const uint32_t l0 = prmt(t[0], t[1], sel), l1 = prmt(t[2], t[3], sel);
    const uint32_t h0 = prmt(t[4], t[5], sel), h1 = prmt(t[6], t[7], sel);
    lo = (l0 & ~msk) | (l1 & msk);
    hi = (h0 & ~msk) | (h1 & msk);
  } else if constexpr (M == 3) {
    lo = prmt(t[0], t[1], sel);
    hi = prmt(t[2], t[3], sel);
  } else {
    lo = prmt(t[0], t[0], sel);
    hi = prmt(t[1], t[1], sel);
  }
}

// A unit is 8 coordinates (4-bit: one word) or 16 (2/3-bit: one 2-bit word and 16 bits of the 1-bit segment).
template <int M>
constexpr int unit_coords() {
  return M == 4 ? 8 : 16;
}

// Position p of a unit's decoded groups -> coordinate inside the unit. 4-bit: identity. 2/3-bit: groups hold
// coordinates {0,2,4,6}, {8,...,14}, {1,...,7}, {9,...,15}.
template <int M>
__host__ __device__ constexpr int unit_coord(int p) {
  if constexpr (M == 4) {
    return p;
  } else {
    return ((p / 4) & 2 ? 1 : 0) + ((p / 4) & 1 ? 8 : 0) + 2 * (p % 4);
  }
}

// 2/3-bit selector words of one unit: s0 = positions 0..7, s1 = positions 8..15 (see unit_coord), 3-bit nibbles.
// w1: the 32-bit word holding the unit's 16 bits of the 1-bit segment in half `half` (0: bits 0..15, 1: 16..31).
// The high bits spread as far as nibble i holding bits 2i, 2i+1 at 4i, 4i+1 (a prmt does the first step), which
// is all the two shifts into bit 4i+2 need.
template <int M>
__device__ __forceinline__ void unit_selectors(uint32_t w2, uint32_t w1, int half, uint32_t& s0,
                                               uint32_t& s1) {
  s0 = w2 & 0x33333333u;
  s1 = (w2 >> 2) & 0x33333333u;
  if constexpr (M == 3) {
    uint32_t x = prmt(w1, 0u, half ? 0x4342u : 0x4140u);  // bytes (b0, 0, b1, 0) of the half
    x = (x | (x << 4)) & 0x0f0f0f0fu;
    x = (x | (x << 2)) & 0x33333333u;
    s0 |= (x << 2) & 0x44444444u;
    s1 |= (x << 1) & 0x44444444u;
  }
}

template <int M>
__device__ __forceinline__ void decode_unit(const uint32_t (&t)[lut_words<M>()], uint32_t w2, uint32_t w1,
                                            uint32_t* lo, uint32_t* hi, int half = 0) {
  if constexpr (M == 4) {
    const uint32_t sel = w2 & 0x77777777u;
    const uint32_t wl = w2 << 4;
    lut_lookup<4>(t, sel, prmt(wl, w2, 0xD9C8u), lo[0], hi[0]);
    lut_lookup<4>(t, sel >> 16, prmt(wl, w2, 0xFBEAu), lo[1], hi[1]);
  } else {
    uint32_t s0, s1;
    unit_selectors<M>(w2, w1, half, s0, s1);
    lut_lookup<M>(t, s0, 0u, lo[0], hi[0]);
    lut_lookup<M>(t, s0 >> 16, 0u, lo[1], hi[1]);
    lut_lookup<M>(t, s1, 0u, lo[2], hi[2]);
    lut_lookup<M>(t, s1 >> 16, 0u, lo[3], hi[3]);
  }
}

// N little-endian words starting `al` (0 or 2) bytes past a 4-byte aligned shared-memory pointer (reads N + 1).
template <int N>
__device__ __forceinline__ void load_words_at(const uint8_t* aligned, int al, uint32_t (&w)[N]) {
  const uint32_t* a = reinterpret_cast<const uint32_t*>(aligned);
  const uint32_t sh = static_cast<uint32_t>(al) * 8;
  uint32_t x[N + 1];
#pragma unroll
  for (int i = 0; i <= N; ++i) x[i] = a[i];
#pragma unroll
  for (int i = 0; i < N; ++i) w[i] = __funnelshift_r(x[i], x[i + 1], sh);
}

// Loads a thread's CS-coordinate chunk of one row: w = code words (2-bit segment for M < 4), w1 = 1-bit segment
// (M == 3). codes: the chunk's first code byte minus al; seg1: its first byte of the 1-bit segment (unshifted).
template <int M, int CS>
struct ChunkWords {
  uint32_t w[M == 4 ? CS / 8 : CS / 16];
  uint32_t w1[(CS + 31) / 32];
};
template <int M, int CS>
__device__ __forceinline__ ChunkWords<M, CS> load_chunk(const uint8_t* codes, const uint8_t* seg1, int al) {
  ChunkWords<M, CS> c;
  load_words_at<M == 4 ? CS / 8 : CS / 16>(codes, al, c.w);
#pragma unroll
  for (int i = 0; i < (CS + 31) / 32; ++i) c.w1[i] = 0u;
  if constexpr (M == 3) {
    if constexpr (CS == 16) {
      c.w1[0] = *reinterpret_cast<const uint16_t*>(seg1);
    } else {
      load_words_at<CS / 32>(seg1 - al, al, c.w1);
    }
  }
  return c;
}

// Selector word of half a 2/3-bit unit: nibble p holds the code of unit coordinate 2p + odd (unit_selectors' s0
// for odd = 0, s1 for 1). w1: the unit's 16 bits of the 1-bit segment in bits 0..15.
template <int M>
__device__ __forceinline__ uint32_t half_unit_selector(uint32_t w2, uint32_t w1, int odd) {
  uint32_t s = (w2 >> (2 * odd)) & 0x33333333u;
  if constexpr (M == 3) {
    uint32_t x = prmt(w1, 0u, 0x4140u);  // bytes (b0, 0, b1, 0)
    x = (x | (x << 4)) & 0x0f0f0f0fu;
    x = (x | (x << 2)) & 0x33333333u;
    s |= (x << (2 - odd)) & 0x44444444u;
  }
  return s;
}

// Decodes a thread's CS-coordinate chunk of one row into CS/4 groups of byte planes.
template <int M, int CS>
__device__ __forceinline__ void decode_chunk_at(const uint32_t (&t)[lut_words<M>()], const uint8_t* codes,
                                                const uint8_t* seg1, int al, uint32_t (&lo)[CS / 4],
                                                uint32_t (&hi)[CS / 4]) {
  const ChunkWords<M, CS> c = load_chunk<M, CS>(codes, seg1, al);
  if constexpr (M == 4) {
#pragma unroll
    for (int u = 0; u < CS / 8; ++u) decode_unit<4>(t, c.w[u], 0u, lo + 2 * u, hi + 2 * u);
  } else {
#pragma unroll
    for (int u = 0; u < CS / 16; ++u) decode_unit<M>(t, c.w[u], c.w1[u / 2], lo + 4 * u, hi + 4 * u, u % 2);
  }
}

// Two tokens' selectors interleaved by bytes: x = nibbles (a_p, a_p+1, b_p, b_p+1, a_p+2, a_p+3, b_p+2, b_p+3).
// One lookup of 4 nibbles gives bytes (A_p, A_p+1, B_p, B_p+1); prmt 0x6240 / 0x7351 makes half2(A_p, B_p) and
// half2(A_p+1, B_p+1): the mma B operand of a token pair, without a separate cross-token interleave.
template <int M>
__device__ __forceinline__ void pair_lookup(const uint32_t (&t)[lut_words<M>()], uint32_t x, uint32_t* out) {
  uint32_t lo[2], hi[2];
  if constexpr (M == 4) {
    decode_unit<4>(t, x, 0u, lo, hi);
  } else {
    lut_lookup<M>(t, x, 0u, lo[0], hi[0]);
    lut_lookup<M>(t, x >> 16, 0u, lo[1], hi[1]);
  }
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    out[2 * j] = prmt(lo[j], hi[j], 0x6240u);
    out[2 * j + 1] = prmt(lo[j], hi[j], 0x7351u);
  }
}

// Byte-interleaved selector words of two tokens' chunks: x[j] covers chunk positions 4j .. 4j+3 (pair_lookup).
template <int M, int CS>
__device__ __forceinline__ void pair_selectors(const ChunkWords<M, CS>& a, const ChunkWords<M, CS>& b,
                                               uint32_t (&x)[CS / 4]) {
  if constexpr (M == 4) {
#pragma unroll
    for (int u = 0; u < CS / 8; ++u) {
      x[2 * u] = prmt(a.w[u], b.w[u], 0x5140u);
      x[2 * u + 1] = prmt(a.w[u], b.w[u], 0x7362u);
    }
  } else {
#pragma unroll
    for (int u = 0; u < CS / 16; ++u) {
      uint32_t a0, a1, b0, b1;
      unit_selectors<M>(a.w[u], a.w1[u / 2], u % 2, a0, a1);
      unit_selectors<M>(b.w[u], b.w1[u / 2], u % 2, b0, b1);
      x[4 * u] = prmt(a0, b0, 0x5140u);
      x[4 * u + 1] = prmt(a0, b0, 0x7362u);
      x[4 * u + 2] = prmt(a1, b1, 0x5140u);
      x[4 * u + 3] = prmt(a1, b1, 0x7362u);
    }
  }
}

// Pair tables (kLutReps > 0): a 32-bit shared-memory load at a 32-bit shared address.
__device__ __forceinline__ uint32_t lds_u32(uint32_t addr) {
  uint32_t v;
  asm("ld.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(addr));
  return v;
}

// Entry of a pair table for code byte k (0..3) of x; base = the table's address + 4 * (lane % kLutReps), entries
// ROW bytes apart (fill_alut's region: 128, its base). ALIGNED (that region at a kLutAlign boundary): the base's
// bits 7..14 are 0, so an OR joins it to the row's offset, in the same LOP3 as the mask.
template <bool ALIGNED = false, int ROW = 4 * kLutReps>
__device__ __forceinline__ uint32_t lut_pair(uint32_t base, uint32_t x, int k) {
  if constexpr (ALIGNED) {
    static_assert(!ALIGNED || (kLutAlign == 0x8000 && ROW == 128), "row offset = code byte << 7");
    const uint32_t sh = k == 0 ? x << 7 : x >> (8 * k - 7);
    return lds_u32((sh & 0x7f80u) | base);
  } else {
    return lds_u32(base + ((x >> (8 * k)) & 0xffu) * ROW);
  }
}

// Fills a pair table (256 entries x REPS copies) from a 4-bit codebook with the float16 rounding of make_lut.
// Each 16-byte store writes 4 copies of one entry: thread i covers copies 4 (i % Q) .. +3 (Q = REPS / 4) of
// entries i / Q + (NT / Q) j. Copies REPS / 2 .. REPS - 1 come from upper_codebook (fill_alut's V half; pass
// the same codebook for one table).
template <int NT, int REPS = kLutReps>
__device__ __forceinline__ void fill_pair_lut(const float* codebook, uint32_t* lut,
                                              const float* upper_codebook = nullptr) {
  constexpr int kQuads = REPS / 4;
  constexpr int kPerThread = 256 * kQuads / NT;
  static_assert(REPS >= 4 && NT % kQuads == 0 && 256 * kQuads % NT == 0, "whole entries per thread");
  const int e0 = threadIdx.x / kQuads;
  const int quad = threadIdx.x % kQuads;
  const float* const cb = quad < kQuads / 2 || upper_codebook == nullptr ? codebook : upper_codebook;
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int e = e0 + (NT / kQuads) * j;
    const uint32_t w = dev::pack_half2(cb[e & 15], cb[e >> 4]);
    reinterpret_cast<uint4*>(lut)[e * kQuads + quad] = make_uint4(w, w, w, w);
  }
}

// Fills the region of both pair tables (kLutAlign bytes at lut, 16-byte aligned; at a kLutAlign boundary for the
// aligned lookup) with both pair tables, row e = 32 words (8 16-byte stores):
// words 0..15 K's entry e and words 16..31 V's, or K's in all 32 when the codebooks' 16 values are bitwise equal
// (every warp finds that out by itself, no barrier). Returns the lanes' base addresses for lut_pair<true>: region
// + 4 * lane for both (32 copies), or region + 4 * (lane % 16) for K and + 64 more for V.
template <int NT>
__device__ __forceinline__ uint2 fill_alut(const float* k_codebook, const float* v_codebook, uint32_t* lut) {
  const int lane = threadIdx.x % 32;
  const bool same =
      __all_sync(0xffffffffu, __float_as_uint(k_codebook[lane % 16]) == __float_as_uint(v_codebook[lane % 16]));
  fill_pair_lut<NT, 32>(k_codebook, lut, same ? k_codebook : v_codebook);
  const uint32_t region = dev::smem_addr(lut);
  return same ? make_uint2(region + 4u * lane, region + 4u * lane)
              : make_uint2(region + 4u * (lane % 16), region + 64u + 4u * (lane % 16));
}

// Coordinate of position p in a chunk.
template <int M>
__host__ __device__ constexpr int chunk_coord(int p) {
  return (p / unit_coords<M>()) * unit_coords<M>() + unit_coord<M>(p % unit_coords<M>());
}

__device__ __forceinline__ uint32_t half2_bits(__half lo, __half hi) {
  return static_cast<uint32_t>(__half_as_ushort(lo)) | (static_cast<uint32_t>(__half_as_ushort(hi)) << 16);
}

// load_raw_tile without per-chunk bounds arithmetic when the whole aligned range lies inside the allocation.
// WARP: copies of this warp's lanes only (warp-private stages, fast_warp_pipe); else of the block's threads.
template <bool WARP = false>
__device__ __forceinline__ void load_tile_fast(uint8_t* dst, const uint8_t* cache, int64_t row0, int64_t n, int rb,
                                               const uint8_t* alloc_end) {
  const uint8_t* start = cache + row0 * rb;
  const int head = static_cast<int>(reinterpret_cast<uintptr_t>(start) & 15);
  const uint8_t* aligned = start - head;
  const int chunks = static_cast<int>((head + n * rb + 15) / 16);
  if (alloc_end - aligned >= static_cast<int64_t>(chunks) * 16) {
    if constexpr (WARP) {
#pragma unroll 1  // (a constant stride: unrolled, these copies bloated the tile loop's code)
      for (int k = threadIdx.x % 32; k < chunks; k += 32) dev::cp_async_16(dst + 16 * k, aligned + 16 * k, 16);
    } else {
      for (int k = threadIdx.x; k < chunks; k += blockDim.x) dev::cp_async_16(dst + 16 * k, aligned + 16 * k, 16);
    }
  } else {
    load_raw_tile<WARP>(dst, cache, row0, n, rb, alloc_end);
  }
}

// Warp w's region of a stage piece with warp-private stages (WARP; fast_warp_pipe): 32 rows of rb bytes plus
// 16 bytes of head each. Block-shared: the piece itself.
template <bool WARP>
__device__ __forceinline__ uint8_t* warp_region(uint8_t* piece_start, int rb, int w) {
  if constexpr (WARP) {
    return piece_start + w * (32 * rb + 16);
  } else {
    return piece_start;
  }
}

// p, but computed out of ptxas's sight: keeps a loop-invariant pointer in registers instead of rematerializing.
__device__ __forceinline__ const uint8_t* opaque_ptr(const uint8_t* p) {
  const uint8_t* q;
  asm("mov.b64 %0, %1;\n" : "=l"(q) : "l"(p));
  return q;
}
__device__ __forceinline__ int opaque_int(int x) {
  int y;
  asm("mov.b32 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}

// One full tile (NT rows of RB bytes) of a split: NT * RB is a multiple of 16, so every tile of the split has
// the same unaligned head and chunk count nck (NT * RB / 16, plus one with a head); each thread issues copies
// k = idx + j * NTHREADS at constant offsets from its own pointers (dst, src: the tile's 16-byte aligned start +
// 16 * idx), no per-chunk index arithmetic. idx: threadIdx.x, or the lane with NTHREADS = 32 (one warp's rows,
// NT = 32). The caller checks that the aligned range lies inside the allocation (else load_tile_fast).
template <int RB, int NT, int NTHREADS>
__device__ __forceinline__ void load_full_tile(uint32_t dst, const uint8_t* src, int nck) {
  constexpr int kChunks = NT * RB / 16;
  static_assert(NT * RB % 16 == 0, "tile bytes a multiple of 16");
  constexpr int kIter = (kChunks + 1 + NTHREADS - 1) / NTHREADS;
  static_assert((kIter - 1) * NTHREADS <= kChunks, "only the last round is partial");
#pragma unroll
  for (int j = 0; j < kIter; ++j) {
    if (j < kIter - 1 || static_cast<int>(NTHREADS == 32 ? threadIdx.x % 32 : threadIdx.x) + j * NTHREADS < nck)
      dev::cp_async_16_at(dst + 16 * NTHREADS * j, src + 16 * NTHREADS * j, 16);
  }
}

// fast_out's un-rotation when R_v is Sylvester-Hadamard (dev::hadamard_row0_mismatch, then dev::hadamard_mismatch
// over the whole matrix, on every launch, unless the caller promised it: `promised`, AttnArgs::v_promised):
// x_r = R_v[0] .* (H o_r) / l_r, one warp per query row r (a butterfly transform in registers and shuffles; output
// row row0 + r: S == 1). Returns false, having written nothing, for any other R_v (the caller's dense loop); the
// return is uniform and each path passes a block barrier after mo/mol were written. Every thread of the block
// calls it. Out of line: inlined into the decode kernel, this code made ptxas move spills into the tile loop
// (bench/NOTES.md "Hadamard un-rotation").
template <int NW, int D>
__device__ __noinline__ bool fast_out_hadamard(const float* rot, const float* mo, const float* mol, int rows,
                                               void* out, DType dtype, int64_t row0, bool promised) {
  constexpr int N = D / 32;  // coordinates per lane
  const int tid = threadIdx.x;
  const int lane = tid % 32;
  const int warp = tid / 32;
  if (promised) {
    __syncthreads();  // mo and mol
  } else {
    const uint32_t bad0 = tid < D ? dev::hadamard_row0_mismatch(rot, __ldg(rot), __ldg(rot + tid)) : 0u;
    if (__syncthreads_or(bad0) != 0) return false;  // a dense R_v stops here
    if (__syncthreads_or(dev::hadamard_mismatch<D, NW * 32, 8>(rot, tid)) != 0) return false;
  }
  float sgn[N];
#pragma unroll
  for (int e = 0; e < N; ++e) sgn[e] = __ldg(rot + N * lane + e);
#pragma unroll 1
  for (int r = warp; r < rows; r += NW) {
    float v[N];
#pragma unroll
    for (int e = 0; e < N; ++e) v[e] = mo[r * D + N * lane + e];
    dev::warp_fwht<N>(v, lane);
    const float l = mol[r];
    const int64_t base = (row0 + r) * D + N * lane;
#pragma unroll
    for (int e = 0; e < N; ++e) dev::store_from_float(out, dtype, base + e, l > 0.0f ? sgn[e] * v[e] / l : 0.0f);
  }
  return true;
}

// Column of the warp merge's buffer (rows of D floats) where the decode kernel stores output column col of row
// row: an XOR of the column's bits 0..3 with its bits 5..6 and the row's bits 1..2. Each store instruction of the
// merge has its lanes on distinct banks (G <= 8; at most 2-way for G > 8, 4-way at D = 256 with G > 8), where the
// plain layout put 16 (D = 128) or 32 lanes on one bank; a row read by consecutive columns stays conflict-free
// (the XOR permutes each aligned group of 32). bench/NOTES.md "Merge swizzle".
__device__ __forceinline__ int merge_col(int row, int col) { return col ^ (((col >> 5) & 3) << 2) ^ ((row >> 1) & 3); }

// Row offsets in this kernel, where S == 1 (fast_decode_eligible): query row r of kv head g is global row
// b Hq + g G + r, and its mask row starts at ((bm Hm + hm) Tm). The same values as global_row and mask_row
// without their divisions by S (a runtime value), which took ~9% of B=1 T=1K's instructions in the epilogue.
__device__ __forceinline__ int64_t decode_row(const AttnArgs& a, int b, int g, int r) {
  return static_cast<int64_t>(b) * a.p.q_heads + g * a.group + r;
}
__device__ __forceinline__ int64_t decode_mask_row(const AttnArgs& a, int b, int g, int r) {
  if (r >= a.rows) return -1;
  const AttentionParams& p = a.p;
  const int bm = p.mask_batch == 1 ? 0 : b;
  const int hm = p.mask_heads == 1 ? 0 : g * a.group + r;
  return (static_cast<int64_t>(bm) * p.mask_heads + hm) * p.mask_tokens;
}

// The split merge through distributed shared memory (AttnArgs::cluster_merge: a promised Hadamard R_v, no window,
// the nsp splits of one (b, kv head) launched as one thread-block cluster, rank = split, one wave of blocks). Query
// row r is reduced by block r % nsp, "its reducer". Each block un-rotates its own partial of each row, one warp per
// row: z = R_v[0] .* (H o) (the butterfly of fast_out_hadamard, without the 1 / l), stages z, max and l as one slot
// per row in its own shared memory, and sends each slot by a bulk copy (the async proxy; no memory fence in the SM)
// into slot (r / nsp) nsp + split of the reducer's inbound slots; the copy completes its bytes on the reducer's
// mbarrier; a row the block reduces itself goes straight into its own inbound slot (a bulk copy to the block itself
// ran, but compute-sanitizer memcheck reports it as outside any remote block). Push region (AttnArgs::push_off):
// the mbarrier, ceil(rows / nsp) nsp inbound slots, rows staging slots (push_bytes). The mbarrier is initialized at
// the kernel's start with the reducer's one arrival, which also announces the bytes to come from the other nsp - 1
// blocks, before a cluster barrier that every block passes before its first copy. Blocks that reduce no row leave
// once their copies have read their staging. A reducer waits for the phase, then each lane reads every split's
// (max, l) (the reduce kernels' weights: exp(max_s - max) for splits with l > 0) and sums its D / 32 coordinates
// over the splits: x = sum_s w_s z_s * (1 / sum_s w_s l_s), one vector store per lane where the output is aligned.
// The un-rotation of a sum became a sum of un-rotated partials, so outputs match the reduce kernel's up to float32
// rounding, not bit for bit. An empty split (`empty`: no compressed rows) sends max -inf, l 0 and z 0 (weight 0).
// No second kernel, no global scratch, no cluster barrier at the end (bench/NOTES.md "Cluster merge"). Output row
// row0 + r. Every thread of the block calls it; unless empty, after a barrier that published the warp merge's
// buffers: cb_o (the warps' partial o, rows w kFastRows + r, columns merge_col), cb_w (their weights exp(m_w - max))
// and cbl (cbl[r] = l, cbl[kFastRows + r] = max). Each row's merged o is summed from them where it is un-rotated
// (in the order of the non-cluster merge), so no merged copy is written and no barrier waits for one.
constexpr int kPushHead = 16;  // bytes before the slots: the mbarrier (8) and padding
__host__ __device__ constexpr int push_stride_floats(int d) { return d + 4; }  // a slot: z (D), max, l, padding
// Inbound slots of a block, then its staging slots.
__host__ __device__ constexpr int push_inbound_slots(int rows, int nsp) { return (rows + nsp - 1) / nsp * nsp; }
__host__ __device__ constexpr int push_bytes(int rows, int nsp, int d) {
  return kPushHead + (push_inbound_slots(rows, nsp) + rows) * push_stride_floats(d) * 4;
}
// Before any block of the cluster pushes (AttnArgs::cluster_merge; every thread of the block calls it): thread 0
// initializes this block's mbarrier, expecting the inbound bytes, then every thread arrives on the cluster barrier
// whose wait (cluster_merge_pushed) precedes the first copy. The decode kernel calls it once its first tiles'
// copies are in flight (an empty split: at once).
template <int D>
__device__ __forceinline__ void cluster_merge_start(uint32_t push_at, int nsp, int rows) {
  if (threadIdx.x == 0) {
    const int mine = blockIdx.x < rows ? (rows - 1 - static_cast<int>(blockIdx.x)) / nsp + 1 : 0;  // rows reduced here
    dev::mbar_init(push_at, 1);
    dev::mbar_arrive_expect_tx(push_at, static_cast<uint32_t>(mine * (nsp - 1) * push_stride_floats(D) * 4));
  }
  dev::cluster_arrive_relaxed();
}
template <int NW, int D>
__device__ __noinline__ void cluster_merge_pushed(const float* rot, const float* cb_o, const float* cb_w,
                                                  const float* cbl, uint8_t* push, bool empty, int nsp, int rows,
                                                  void* out, DType dtype, int64_t row0) {
  constexpr int N = D / 32;  // coordinates per lane
  constexpr int PS = push_stride_floats(D);
  const int rank = blockIdx.x;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const uint32_t push_at = dev::smem_addr(push);
  float* const inbound = reinterpret_cast<float*>(push + kPushHead);
  float* const staging = inbound + push_inbound_slots(rows, nsp) * PS;
  // Row r's slot: staged for its bulk copy, or written straight into this block's inbound slot when this block
  // is r's reducer (no copy to itself).
  auto slot_of = [&](int r) -> float* {
    return r % nsp == rank ? inbound + ((r / nsp) * nsp + rank) * PS : staging + r * PS;
  };
  float r0[N];
  load_hadamard_row0<N>(rot, lane, r0);
  if (empty) {  // max -inf, l 0, and z 0 (the reducer's sum multiplies it by a weight of 0)
    for (int i = threadIdx.x; i < rows * PS; i += blockDim.x) {
      const int r = i / PS, c = i % PS;
      if (c <= D + 1) slot_of(r)[c] = c == D ? kNegInf : 0.0f;
    }
  } else {
#pragma unroll 1
    for (int r = warp; r < rows; r += NW) {
      // The block's merged o of row r (the warps' partials with their weights, in the order of the decode
      // kernel's non-cluster merge), straight from the warp-merge buffer: no merged copy, no barrier for it.
      float v[N];
      const bool seen = cbl[kFastRows + r] != kNegInf;  // a row no warp saw is 0
#pragma unroll
      for (int e = 0; e < N; ++e) {
        float o = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; ++w) {
          const int row = w * kFastRows + r;
          o += cb_w[row] * cb_o[row * D + merge_col(row, N * lane + e)];
        }
        v[e] = seen ? o : 0.0f;
      }
      dev::warp_fwht<N>(v, lane);
      float* const slot = slot_of(r);
#pragma unroll
      for (int e = 0; e < N; ++e) slot[N * lane + e] = r0[e] * v[e];
      if (lane == 0) {
        slot[D] = cbl[kFastRows + r];
        slot[D + 1] = cbl[r];
      }
    }
  }
  dev::fence_proxy_async_smem();  // the staging writes, for the bulk copies
  __syncthreads();                // (and the rows this block reduces, for its own warps)
  dev::cluster_wait();  // every block of the cluster started and initialized its mbarrier (its arrive came first)
  if (threadIdx.x < rows && threadIdx.x % nsp != rank) {
    const int r = threadIdx.x;
    const int to = r % nsp;
    const uint32_t dst = push_at + kPushHead + 4u * static_cast<uint32_t>(((r / nsp) * nsp + rank) * PS);
    dev::bulk_copy_to_cluster(dev::cluster_addr(dst, to), dev::smem_addr(staging + r * PS), PS * 4,
                              dev::cluster_addr(push_at, to));
  }
  dev::stamp(blockIdx.z * gridDim.x + blockIdx.x, 13);
  if (rank >= rows || rank + nsp * warp >= rows) {  // no row here for this warp
    if (threadIdx.x < rows) dev::bulk_wait_read();  // the staging stays until its copy has read it
    return;
  }
  dev::mbar_wait(push_at, 0);
  if (threadIdx.x < rows) dev::bulk_wait_read();
  dev::stamp(blockIdx.z * gridDim.x + blockIdx.x, 14);
  const float* slots = reinterpret_cast<const float*>(push + kPushHead);
#pragma unroll 1
  for (int j = warp; rank + nsp * j < rows; j += NW) {
    const float* row_slots = slots + j * nsp * PS;
    float z[kClusterMergeMax][N];
    float2 ml[kClusterMergeMax];
#pragma unroll
    for (int sp = 0; sp < kClusterMergeMax; ++sp) {
      ml[sp] = sp < nsp ? *reinterpret_cast<const float2*>(row_slots + sp * PS + D) : make_float2(kNegInf, 0.0f);
#pragma unroll
      for (int e = 0; e < N; e += 2) {
        const float2 t = sp < nsp ? *reinterpret_cast<const float2*>(row_slots + sp * PS + N * lane + e)
                                  : make_float2(0.0f, 0.0f);
        z[sp][e] = t.x;
        z[sp][e + 1] = t.y;
      }
    }
    float mx = kNegInf;
#pragma unroll
    for (int sp = 0; sp < kClusterMergeMax; ++sp) mx = ml[sp].y > 0.0f ? fmaxf(mx, ml[sp].x) : mx;
    float l = 0.0f, x[N];
#pragma unroll
    for (int e = 0; e < N; ++e) x[e] = 0.0f;
#pragma unroll
    for (int sp = 0; sp < kClusterMergeMax; ++sp) {
      const float f = (ml[sp].y > 0.0f && mx != kNegInf) ? __expf(ml[sp].x - mx) : 0.0f;
      l += f * ml[sp].y;
#pragma unroll
      for (int e = 0; e < N; ++e) x[e] = fmaf(z[sp][e], f, x[e]);  // every z finite (an empty split's is 0)
    }
    const float inv = l > 0.0f ? __frcp_rn(l) : 0.0f;
#pragma unroll
    for (int e = 0; e < N; ++e) x[e] *= inv;
    dev::store_row_from_float<N>(out, dtype, (row0 + rank + nsp * j) * D + N * lane, x);
  }
}

// The q rotation when the caller promised a Sylvester-Hadamard R_k (AttnArgs::q_hadamard, from
// AttentionParams::k_rotation_hadamard): qh[r] = fp16(scale * H (R_k[0] .* q_r)) for rows r of q from row0 on
// (hadamard_q_row: the general path's butterfly), one warp per row. It reads D floats of R_k instead of D x D
// (bench/NOTES.md "Promised Hadamard R_k"). Out of line, like fast_out_hadamard, so the tile loop's register
// allocation does not move.
template <int NW, int D>
__device__ __noinline__ void hadamard_q_rows(const void* q, DType dtype, const float* rk, int rows, int64_t row0,
                                             float scale, __half* qh) {
  constexpr int N = D / 32;  // coordinates per lane
  const int lane = threadIdx.x % 32;
  float r0[N];
  load_hadamard_row0<N>(rk, lane, r0);
#pragma unroll 1
  for (int r = threadIdx.x / 32; r < rows; r += NW)
    hadamard_q_row<N>(q, dtype, scale, r0, row0 + r, lane, qh + r * (D + 8));
}

// MASK: MaskType as int (the mask load is compiled in); SOFTCAP: scores pass through softcap * tanh(s / softcap);
// HALF2: query rows 8..15 exist (G > 8); NW: warps per block, 4 or (without HALF2) 8, same registers per thread.
template <int MK, int MV, int MASK, bool SOFTCAP, bool HALF2, int NW, int D>
__global__ void __launch_bounds__(NW * 32, fast_min_blocks(MK, MV, HALF2, NW, D))
    tq_attention_decode_kernel(const AttnArgs a) {
  static_assert(NW == kFastWarps || (NW == 2 * kFastWarps && !HALF2), "4 warps, or 8 without HALF2");
  static_assert(D == kFastD || D == 64 || (D == 256 && NW == kFastWarps && !HALF2),
                "D = 128, D = 64, or D = 256 with 4 warps and G <= 8");
  constexpr bool LK = lut_decode(MK, HALF2);        // K codes through a pair table
  constexpr bool LV = lut_decode(MV, HALF2);        // V codes through a pair table
  constexpr int kAlutStages = alut_stages(MK, MV, HALF2, NW, D);
  constexpr bool ALUT = kAlutStages > 0;  // aligned pair tables (alut_layout)
  constexpr bool kWarpPipe = fast_warp_pipe(MK, HALF2);  // warp-private stages (fast_warp_pipe)
  static_assert(!ALUT || alut_layout_ok(kAlutStages, fast_piece_bytes(MK, D, NW, kWarpPipe),
                                        fast_piece_bytes(MV, D, NW, kWarpPipe),
                                        fast_lut_bytes(MK, MV, HALF2, D)),
                "aligned table layout");
  constexpr int kFastStages =  // shadows the maximum
      ALUT ? kAlutStages
           : fast_stages(MK, MV, fast_lut_bytes(MK, MV, HALF2, D) * 4 / NW, fast_block_budget(MK, HALF2, NW, D), D,
                         kWarpPipe);
  constexpr int kFastTile = 32 * NW;                // shadows the 4-warp tile
  constexpr int kFastWarps = NW;                    // shadows the 4-warp block
  constexpr int CSK = D / 4;    // K coordinates per thread per token
  constexpr int CSV = D / 8;    // V coordinates per thread per token (= n-tiles of P V)
  constexpr bool VHALF = CSV < unit_coords<MV>();  // D = 64, 2/3-bit V: half a unit per thread
  static_assert(!VHALF || (2 * CSV == unit_coords<MV>() && !HALF2 && !lut_decode(MV, HALF2)), "half units");
  constexpr int KSTEPS = D / 16;
  // Launched as a programmatic dependent of the stream's previous kernel (AttnArgs::decode_waits): nothing below
  // may read before that grid completes. (The wait comes before the trigger: triggered first, each call's
  // grids let the next call's launch and wait too, a chain of resident waiting grids that took SM slots from
  // the running one, +8..+35% at B >= 8 T = 1K on an H100.)
  if (a.decode_waits) dev::pdl_wait();
  // The reduce kernel (a programmatic dependent launch after this kernel: launch_attention) may start now; it
  // reads only R_v until its pdl_wait, which waits for this grid to complete.
  dev::pdl_trigger();
  const int stamp_block = blockIdx.z * gridDim.x + blockIdx.x;
  dev::stamp(stamp_block, 0);
  const AttentionParams& p = a.p;
  const int split = blockIdx.x;
  const int b = blockIdx.z / p.kv_heads;
  const int g = blockIdx.z % p.kv_heads;
  if (split >= a.nsplit) {
    window_block<D, NW>(a, b, g, 0, kFastRows, split - a.nsplit);
    return;
  }
  extern __shared__ __align__(16) char smem[];
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int qr = lane / 4;  // fragment row group
  const int qc = lane % 4;  // fragment column pair

  const int64_t n_valid = compressed_rows(a, b);
  const int64_t c0 = static_cast<int64_t>(split) * a.split_tokens;
  const int64_t c1 = min(c0 + a.split_tokens, n_valid);
  if (c0 >= c1) {
    if (a.cluster_merge) {  // an empty partial (max -inf, l 0) to each row's reducer
      cluster_merge_start<D>(dev::smem_addr(smem + a.push_off), a.nsp, a.rows);
      const float* rot = p.v_rotation + static_cast<int64_t>(p.v_rotation_heads == 1 ? 0 : g) * D * D;
      cluster_merge_pushed<NW, D>(rot, nullptr, nullptr, nullptr, reinterpret_cast<uint8_t*>(smem + a.push_off),
                                  true, a.nsp, a.rows, p.out, p.dtype, decode_row(a, b, g, 0));
      return;
    }
    for (int r = threadIdx.x; r < a.rows; r += blockDim.x)
      a.part_ml[decode_row(a, b, g, r) * a.nsp + split] = make_float2(kNegInf, 0.0f);
    return;
  }
  dev::stamp(stamp_block, 11);
  const int64_t bg = blockIdx.z;  // b kv_heads + g
  constexpr int KRB = MK * D / 8 + 2;  // a.klay.row_bytes on this path (one part, no QJL: fast_decode_eligible)
  constexpr int VRB = MV * D / 8 + 2;
  const uint8_t* kslice = p.k_cache + bg * p.cache_rows * KRB;
  const uint8_t* vslice = p.v_cache + bg * p.cache_rows * VRB;
  const int64_t all_rows = static_cast<int64_t>(p.batch) * p.kv_heads * p.cache_rows;
  const uint8_t* kend = p.k_cache + all_rows * KRB;
  const uint8_t* vend = p.v_cache + all_rows * VRB;
  const int64_t ntiles = (c1 - c0 + kFastTile - 1) / kFastTile;

  // Stage pieces: back to back (K piece, then V piece, per stage; the tables after the last stage), or with
  // aligned tables wherever alut_layout puts them for this window start.
  AlutLayout lay{};
  if constexpr (ALUT) {
    constexpr int kPieceK = fast_piece_bytes(MK, D, NW, kWarpPipe), kPieceV = fast_piece_bytes(MV, D, NW, kWarpPipe);
    const int hole = static_cast<int>((kLutAlign - dev::smem_addr(smem) % kLutAlign) % kLutAlign);
    lay = alut_layout(hole, kFastStages, kPieceK, kPieceV, fast_lut_bytes(MK, MV, HALF2, D));
#if TQ_DECODE_OPAQUE_LAYOUT
    // Opaque to ptxas, which otherwise recomputed the layout (the hole from the CTA's shared window, the
    // placement) on every tile to save registers: ~30 instructions per tile.
#pragma unroll
    for (int i = 0; i < kFastStages; ++i) {
      lay.k[i] = opaque_int(lay.k[i]);
      lay.v[i] = opaque_int(lay.v[i]);
    }
#endif
  }
  dev::stamp(stamp_block, 12);
  // Offset of stage s's K piece (v = 0) or V piece (v = 1) in the window; the piece itself. The warp-private
  // copies' destinations are computed from the window's shared address (copy_dst; that address is
  // opaque to ptxas, which otherwise recomputed it from the CTA id for every copy of every tile: K4/V3 -1..-6%,
  // 4/4 -0.4..-1.8%). Not for K4/V2 (+2..+4.5% at T <= 32K, registers 167 -> 162) nor for the block-shared copies
  // of the 2/3-bit-K instances (1-8% slower): those keep generic pointers.
  auto piece_off = [&](int s, int v) -> int {
    if constexpr (ALUT) {
      const int* const offs = v ? lay.v : lay.k;
      int o = offs[0];
#pragma unroll
      for (int i = 1; i < kFastStages; ++i) o = s == i ? offs[i] : o;
      return o;
    } else {
      return s * a.fast_stage_bytes + (v ? a.fast_k_bytes : 0);
    }
  };
  auto piece = [&](int s, int v) -> uint8_t* { return reinterpret_cast<uint8_t*>(smem) + piece_off(s, v); };
  constexpr bool kCopyShared = kWarpPipe && MV != 2;
  const uint32_t smem_s = static_cast<uint32_t>(opaque_int(static_cast<int>(dev::smem_addr(smem))));
  // Shared address of a warp-private copy's destination dst (this lane's chunk of stage s's piece v; the same
  // offset as warp_region's, from the opaque window address instead of dst).
  auto copy_dst = [&](int s, int v, const uint8_t* dst) -> uint32_t {
    if constexpr (kCopyShared) {
      return smem_s + static_cast<uint32_t>(piece_off(s, v) + warp * (32 * (v ? VRB : KRB) + 16) + 16 * lane);
    } else {
      return dev::smem_addr(dst);
    }
  };

  const int hk = static_cast<int>(reinterpret_cast<uintptr_t>(kslice + c0 * KRB) & 15);
  const int hv = static_cast<int>(reinterpret_cast<uintptr_t>(vslice + c0 * VRB) & 15);
  // Tile 0's 16-byte aligned starts (tile nt: + nt * tile bytes). Opaque to ptxas, which otherwise recomputed
  // them from the kernel parameters on every tile (~45 uniform-datapath instructions).
  // (Warp-private stages: of this warp's rows in tile 0, which start 32 * warp rows in, with the same head.)
  constexpr int kCopyRows = kWarpPipe ? 32 : kFastTile;  // rows a copy covers
  const int copy_row0 = kWarpPipe ? 32 * warp : 0;
  const uint8_t* ktile0 = opaque_ptr(kWarpPipe ? kslice + (c0 + copy_row0) * KRB - hk : kslice + c0 * KRB - hk);
  const uint8_t* vtile0 = opaque_ptr(kWarpPipe ? vslice + (c0 + copy_row0) * VRB - hv : vslice + c0 * VRB - hv);
  const int kchunks = (hk + kCopyRows * KRB + 15) / 16;  // 16-byte chunks of a full tile's copy
  const int vchunks = (hv + kCopyRows * VRB + 15) / 16;
  // Tiles [0, nfast) are full and their aligned copy ranges lie inside both allocations (load_full_tile).
  int64_t nfast = (c1 - c0) / kFastTile;
  {
    const int64_t kroom = kend - ktile0 - 16 * kchunks, vroom = vend - vtile0 - 16 * vchunks;
    nfast = min(nfast, kroom < 0 ? 0 : kroom / (kFastTile * KRB) + 1);
    nfast = min(nfast, vroom < 0 ? 0 : vroom / (kFastTile * VRB) + 1);
  }

  // Prologue: stages 0 .. kFastStages-2 in flight, full tiles by load_full_tile as in the loop. (A tile's
  // unaligned head is recomputed when it is read.) Warp-private stages (kWarpPipe): each warp copies its own rows
  // into its region of a piece (warp_region); those rows (32 * warp ...) sit 16 * warp bytes after where a
  // block-shared piece has them (the loop's ks, vs). These copies come first: at one or two tiles per block the
  // call's time is the chain from the block's start to tile 0's arrival (bench/NOTES.md "Fused merge and early
  // copies").
#pragma unroll
  for (int s = 0; s < kFastStages - 1; ++s) {
    if (s < ntiles) {
      const int64_t ct = c0 + static_cast<int64_t>(s) * kFastTile + copy_row0;
      const int64_t n = min(static_cast<int64_t>(kCopyRows), c1 - ct);
      if (!kWarpPipe || n > 0) {
        uint8_t* const kdst = warp_region<kWarpPipe>(piece(s, 0), KRB, warp);
        uint8_t* const vdst = warp_region<kWarpPipe>(piece(s, 1), VRB, warp);
        if (!HALF2 && s < nfast) {
          const uint8_t* kt = ktile0 + s * (kFastTile * KRB);
          const uint8_t* vt = vtile0 + s * (kFastTile * VRB);
          if constexpr (kWarpPipe) {
            load_full_tile<KRB, 32, 32>(copy_dst(s, 0, kdst + 16 * lane), kt + 16 * lane, kchunks);
            load_full_tile<VRB, 32, 32>(copy_dst(s, 1, vdst + 16 * lane), vt + 16 * lane, vchunks);
          } else {
            load_full_tile<KRB, kFastTile, NW * 32>(dev::smem_addr(kdst + 16 * threadIdx.x), kt + 16 * threadIdx.x,
                                                         kchunks);
            load_full_tile<VRB, kFastTile, NW * 32>(dev::smem_addr(vdst + 16 * threadIdx.x), vt + 16 * threadIdx.x,
                                                         vchunks);
          }
        } else {
          load_tile_fast<kWarpPipe>(kdst, kslice, ct, n, KRB, kend);
          load_tile_fast<kWarpPipe>(vdst, vslice, ct, n, VRB, vend);
        }
      }
    }
    dev::cp_async_commit();
  }
  dev::stamp(stamp_block, 8);
  if (a.cluster_merge) cluster_merge_start<D>(dev::smem_addr(smem + a.push_off), a.nsp, a.rows);

  uint32_t tk[lut_words<MK>()], tv[lut_words<MV>()];
  make_lut<MK>(p.k_codebook, tk);
  make_lut<MV>(p.v_codebook, tv);
  // Pair tables after the stages, or at the boundary alut_layout chose (the warp merge may overwrite them after
  // the loop); the barrier after the q rotation below (or, rotating here, its first one) orders the fill before
  // every lookup.
  uint32_t* const lut_k = reinterpret_cast<uint32_t*>(smem + (ALUT ? lay.lut : kFastStages * a.fast_stage_bytes));
  uint32_t* const lut_v = lut_k + (LK ? 256 * kLutReps : 0);
  // Both tables (4-bit K and V): one region of 128-byte rows, one table of 32 copies when the codebooks are equal
  // (fill_alut), aligned or not.
  constexpr bool PAIRED = LK && LV && kLutReps == 16;
  static_assert(!ALUT || PAIRED, "the aligned layout holds both tables");
  constexpr bool SOLO32 = solo_lut32(MK, MV, HALF2, D);  // one table (K's or V's) of 32 copies
  constexpr int kRow = PAIRED || SOLO32 ? 128 : 4 * (kLutReps > 0 ? kLutReps : 1);  // bytes between entries
  uint32_t lutk_base, lutv_base;
  if constexpr (PAIRED) {
    const uint2 bases = fill_alut<NW * 32>(p.k_codebook, p.v_codebook, lut_k);
    lutk_base = bases.x;
    lutv_base = bases.y;
  } else if constexpr (SOLO32) {
    fill_pair_lut<NW * 32, 32>(LK ? p.k_codebook : p.v_codebook, lut_k);
    lutk_base = lutv_base = dev::smem_addr(lut_k) + 4u * lane;
  } else {
    if constexpr (LK) fill_pair_lut<NW * 32>(p.k_codebook, lut_k);
    if constexpr (LV) fill_pair_lut<NW * 32>(p.v_codebook, lut_v);
    constexpr int kReps = kLutReps > 0 ? kLutReps : 1;
    const uint32_t lane_word = 4u * static_cast<uint32_t>(lane % kReps);
    lutk_base = dev::smem_addr(lut_k) + lane_word;
    lutv_base = dev::smem_addr(lut_v) + lane_word;
  }

  // q rotation: qh[r][i] = fp16(scale * sum_k R_k[i][k] q[r][k]) for this kv head's rows, staged in stage
  // kFastStages-1 (the prologue leaves it empty and the loop refills it only after its first barrier). Either
  // computed ahead by tq_prerotate_q_kernel (a.prerotated: copied from qbuf after griddepcontrol.wait), by a
  // butterfly transform where the caller promised a Hadamard R_k (a.q_hadamard), or here, in the float32
  // operation order of tq_rotate_q_kernel.
  // Thread t rotates coordinate t (threads D.. with 8 warps or D = 64 repeat 0..D-1 and store nothing), or at
  // D = 256 coordinates t and t + 128.
  constexpr int kRot = D > kFastWarps * 32 ? D / (kFastWarps * 32) : 1;
  static_assert(kRot * kFastWarps * 32 >= D && (kRot == 1 || kRot * kFastWarps * 32 == D), "rotated coordinates");
  constexpr int QH = D + 8;  // fp16 row stride of the rotated queries
  float* qs = reinterpret_cast<float*>(piece(kFastStages - 1, 0));  // [rows][D] float32
  __half* qh = reinterpret_cast<__half*>(qs);                                             // [16][QH] afterwards
  // All-visible split (D = 128 S^T instances without pair tables, one mask row for every query row, >= 16
  // tiles): the block reads the mask over this split's tokens once, here (the loads overlap the q rotation; its
  // last barrier reduces them). When every value is 0, no tile of the split needs the loop's probe (which reads
  // the same values, a warp's 32 per tile). Measured (bench/NOTES.md "Aligned tables"): -2.5..-3.8% for 3-bit
  // at long T, but +2.7% for the pair-table instances, +0.5 us on one-tile splits and, at D = 64, spills moved
  // into the 3/3-bit loop (+2-4% at T = 1K): hence the conditions.
  constexpr bool kSplitScan = D == kFastD && !HALF2 && !LK && !LV && (kExpSkip & 1) == 0 && TQ_DECODE_SPLIT_PROBE;
  int mask_nonzero = 0;
  if constexpr (kSplitScan) {
    if (p.mask_heads == 1 && ntiles >= 16) {
      const int64_t row = decode_mask_row(a, b, g, 0) + p.sink_tokens;
      const int64_t t1 = min(c1, p.mask_tokens - p.sink_tokens);
      for (int64_t t = c0 + threadIdx.x; t < t1; t += blockDim.x)
        mask_nonzero |= mask_value<MASK>(p.mask, row + t) != 0.0f ? 1 : 0;
    } else {
      mask_nonzero = 1;
    }
  } else {
    mask_nonzero = 1;
  }
  dev::stamp(stamp_block, 1);
  if (a.prerotated) {
    // Rotated ahead by tq_prerotate_q_kernel (launch_attention): wait for that grid, then copy its rows.
    dev::pdl_wait();
    for (int idx = threadIdx.x; idx < a.rows * (D / 8); idx += blockDim.x) {
      const int r = idx / (D / 8), c8 = idx % (D / 8);
      *reinterpret_cast<uint4*>(qh + r * QH + 8 * c8) =
          __ldcg(reinterpret_cast<const uint4*>(a.qbuf + decode_row(a, b, g, r) * D) + c8);
    }
  } else if (a.q_hadamard) {
    hadamard_q_rows<NW, D>(p.q, p.dtype, p.k_rotation + static_cast<int64_t>(p.k_rotation_heads == 1 ? 0 : g) * D * D,
                           a.rows, decode_row(a, b, g, 0), p.scale, qh);
  } else {
    for (int idx = threadIdx.x; idx < a.rows * D; idx += blockDim.x)
      qs[idx] = dev::load_as_float(p.q, p.dtype, decode_row(a, b, g, idx / D) * D + idx % D);
    __syncthreads();
    if constexpr (kRot == 1) {  // kept apart from the D = 256 loop: merging them moved ptxas' register allocation
      const int i = threadIdx.x % D;
      const float* rrow = p.k_rotation + (static_cast<int64_t>(p.k_rotation_heads == 1 ? 0 : g) * D + i) * D;
      const bool vec = (reinterpret_cast<uintptr_t>(p.k_rotation) & 15) == 0;
      float acc[kFastRows];
#pragma unroll
      for (int r = 0; r < kFastRows; ++r) acc[r] = 0.0f;
      if constexpr ((kExpSkip & 8) != 0) {
#pragma unroll
        for (int r = 0; r < kFastRows; ++r)
          if (r < a.rows) acc[r] = qs[r * D + i];
      }
#pragma unroll 1
      for (int c0 = 0; c0 < ((kExpSkip & 8) != 0 ? 0 : D); c0 += 32) {
        float4 rv[8];
#pragma unroll
        for (int k = 0; k < 8; ++k)
          rv[k] = vec ? __ldg(reinterpret_cast<const float4*>(rrow + c0) + k)
                      : make_float4(rrow[c0 + 4 * k], rrow[c0 + 4 * k + 1], rrow[c0 + 4 * k + 2], rrow[c0 + 4 * k + 3]);
#pragma unroll
        for (int r = 0; r < kFastRows; ++r) {
          if (r < a.rows) {
#pragma unroll
            for (int k = 0; k < 8; ++k) {
              const float4 v = *reinterpret_cast<const float4*>(qs + r * D + c0 + 4 * k);
              acc[r] = fmaf(rv[k].x, v.x, fmaf(rv[k].y, v.y, fmaf(rv[k].z, v.z, fmaf(rv[k].w, v.w, acc[r]))));
            }
          }
        }
      }
      __syncthreads();
      if (threadIdx.x < D) {
#pragma unroll
        for (int r = 0; r < kFastRows; ++r)
          if (r < a.rows) qh[r * QH + i] = __float2half_rn(acc[r] * p.scale);
      }
    } else {  // D = 256: coordinates t and t + 128, both rows' R loads in one round (8 rounds of 16 float4)
      const bool vec = (reinterpret_cast<uintptr_t>(p.k_rotation) & 15) == 0;
      const float* rrow[kRot];
      float acc[kRot][kFastRows];
#pragma unroll
      for (int j = 0; j < kRot; ++j) {
        const int i = threadIdx.x + kFastWarps * 32 * j;
        rrow[j] = p.k_rotation + (static_cast<int64_t>(p.k_rotation_heads == 1 ? 0 : g) * D + i) * D;
#pragma unroll
        for (int r = 0; r < kFastRows; ++r) acc[j][r] = 0.0f;
      }
      if constexpr ((kExpSkip & 8) != 0) {
#pragma unroll
        for (int j = 0; j < kRot; ++j)
#pragma unroll
          for (int r = 0; r < kFastRows; ++r)
            if (r < a.rows) acc[j][r] = qs[r * D + threadIdx.x + kFastWarps * 32 * j];
      }
#pragma unroll 1
      for (int c0 = 0; c0 < ((kExpSkip & 8) != 0 ? 0 : D); c0 += 32) {
        float4 rv[kRot][8];
#pragma unroll
        for (int j = 0; j < kRot; ++j)
#pragma unroll
          for (int k = 0; k < 8; ++k)
            rv[j][k] = vec ? __ldg(reinterpret_cast<const float4*>(rrow[j] + c0) + k)
                           : make_float4(rrow[j][c0 + 4 * k], rrow[j][c0 + 4 * k + 1], rrow[j][c0 + 4 * k + 2],
                                         rrow[j][c0 + 4 * k + 3]);
#pragma unroll
        for (int r = 0; r < kFastRows; ++r) {
          if (r < a.rows) {
#pragma unroll
            for (int k = 0; k < 8; ++k) {
              const float4 v = *reinterpret_cast<const float4*>(qs + r * D + c0 + 4 * k);
#pragma unroll
              for (int j = 0; j < kRot; ++j)
                acc[j][r] = fmaf(rv[j][k].x, v.x,
                                 fmaf(rv[j][k].y, v.y, fmaf(rv[j][k].z, v.z, fmaf(rv[j][k].w, v.w, acc[j][r]))));
            }
          }
        }
      }
      __syncthreads();
#pragma unroll
      for (int j = 0; j < kRot; ++j) {
        const int i = threadIdx.x + kFastWarps * 32 * j;
#pragma unroll
        for (int r = 0; r < kFastRows; ++r)
          if (r < a.rows) qh[r * QH + i] = __float2half_rn(acc[j][r] * p.scale);
      }
    }
  }
  // The barrier after the rotation. (Without the scan: a plain barrier and a compile-time false, so those
  // instances' loop code is what it was; a runtime flag there cost the pair-table instances 3.5%.)
  bool split_visible = false;
  if constexpr (kSplitScan) {
    split_visible = __syncthreads_or(mask_nonzero) == 0;
  } else {
    __syncthreads();
  }
  (void)split_visible;
  dev::stamp(stamp_block, 2);

  // Query fragments (A operand, rows = query heads), columns permuted to this thread's K chunk order.
  uint32_t qf[KSTEPS][4];
  {
    const int r0 = qr, r1 = qr + 8;
    const __half* q0 = r0 < a.rows ? qh + r0 * QH : nullptr;
    const __half* q1 = HALF2 && r1 < a.rows ? qh + r1 * QH : nullptr;
    const __half zero = __ushort_as_half(0);
#pragma unroll
    for (int kk = 0; kk < KSTEPS; ++kk) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {  // h = 0: logical k 2qc, 2qc+1 (a0/a1); h = 1: 8 + ... (a2/a3)
        const int ca = qc * CSK + chunk_coord<MK>(4 * kk + 2 * h);
        const int cb = qc * CSK + chunk_coord<MK>(4 * kk + 2 * h + 1);
        qf[kk][2 * h] = q0 ? half2_bits(q0[ca], q0[cb]) : half2_bits(zero, zero);
        qf[kk][2 * h + 1] = q1 ? half2_bits(q1[ca], q1[cb]) : half2_bits(zero, zero);
      }
    }
  }
  const int64_t mrow0 = decode_mask_row(a, b, g, qr);
  const int64_t mrow1 = decode_mask_row(a, b, g, qr + 8);
  const int64_t mrow_one = decode_mask_row(a, b, g, 0);  // every query row's mask row when p.mask_heads == 1

  float oacc[CSV][4];
#pragma unroll
  for (int i = 0; i < CSV; ++i) oacc[i][0] = oacc[i][1] = oacc[i][2] = oacc[i][3] = 0.0f;
  // Running max and sum per query row held by this thread: HALF2 rows qr, qr + 8; otherwise (S^T layout) rows
  // 2qc, 2qc + 1.
  float m_run[2] = {kNegInf, kNegInf};
  float l_run[2] = {0.0f, 0.0f};

  // Per-thread shared-memory offsets inside a stage. The unaligned head of a tile (hk, hv) is the same for every
  // tile of this split (128 rows of an even row size are a multiple of 16 bytes), rows alternate between two
  // 2-byte alignments, and every chunk start is a multiple of 4 bytes from its row start, so the word alignment
  // of each load is fixed per thread: K rows 8u + qr share qr's parity, V rows alternate with tk4 & 1.
  const int kal = (hk + 2 * (qr & 1)) & 3;
  const int koff = hk + (32 * warp + qr) * KRB + qc * (CSK * (MK == 4 ? 4 : 2) / 8) - kal;  // codes (2-bit seg)
  const int k1off = hk + (32 * warp + qr) * KRB + D / 4 + qc * (CSK / 8);  // 1-bit segment (unshifted)
  const int val0 = hv & 3;
  const int val1 = (hv + 2) & 3;
  // D = 64 with 2/3-bit V: a V chunk (8 coordinates) is half a 16-coordinate unit; thread qr reads unit qr / 2
  // whole and decodes its even (qr even) or odd coordinates (half_unit_selector; the merge's `col`).
  const int vbyte = VHALF ? (qr / 2) * 4 : qr * (CSV * (MV == 4 ? 4 : 2) / 8);
  const int v1byte = VHALF ? (qr / 2) * 2 : qr * (CSV / 8);
  const int voff = hv + (32 * warp + 2 * qc) * VRB + vbyte;
  const int v1off = hv + (32 * warp + 2 * qc) * VRB + D / 4 + v1byte;
  const int knoff = hk + (32 * warp + 2 * qc) * KRB + KRB - 2;  // gamma of column 2qc (then + col * KRB)
  const int vnoff = hv + (32 * warp + 2 * qc) * VRB + VRB - 2;
  const int knoff_t = hk + (32 * warp + qr) * KRB + KRB - 2;  // S^T layout (G <= 8): gamma of token qr
  const int vnoff_t = hv + (32 * warp + qr) * VRB + VRB - 2;
  // S^T rows 2qc, 2qc + 1
  const int64_t mrow_t[2] = {decode_mask_row(a, b, g, 2 * qc), decode_mask_row(a, b, g, 2 * qc + 1)};
  const bool one_mask_row = p.mask_heads == 1;

  // Warp-private stages: the q staging in stage kFastStages-1 (read above by every warp) is this loop's first
  // refill target, and no barrier inside the loop orders that any more.
  if constexpr (kWarpPipe) __syncthreads();
  int stage = kFastStages - 1;  // it % kFastStages, advanced first thing in the loop (no 64-bit modulo per tile)
  for (int64_t it = 0; it < ntiles; ++it) {
    stage = stage == kFastStages - 1 ? 0 : stage + 1;
    dev::cp_async_wait<kFastStages - 2>();
    if constexpr (kWarpPipe) {
      __syncwarp();  // this warp's copies of tile it are visible to its lanes; its reads of stage ns are done
    } else {
      __syncthreads();
    }
#if TQ_STAMPS
    if (it == 0) dev::stamp(stamp_block, 3);
#endif
    {
      const int64_t nt = it + kFastStages - 1;
      const int ns = stage == 0 ? kFastStages - 1 : stage - 1;  // nt % kFastStages
      if (nt < ntiles && (!kWarpPipe || c0 + nt * kFastTile + copy_row0 < c1)) {
        const int64_t ct = c0 + nt * kFastTile + copy_row0;
        const int64_t n = min(static_cast<int64_t>(kCopyRows), c1 - ct);
        uint8_t* const kdst = warp_region<kWarpPipe>(piece(ns, 0), KRB, warp);
        uint8_t* const vdst = warp_region<kWarpPipe>(piece(ns, 1), VRB, warp);
        if (!HALF2 && nt < nfast) {  // (HALF2 keeps HEAD's copy loop: this one raised its loop's spills)
          const uint8_t* kt = ktile0 + nt * (kFastTile * KRB);  // the copy's 16-byte aligned start
          const uint8_t* vt = vtile0 + nt * (kFastTile * VRB);
          if constexpr (kWarpPipe) {
            load_full_tile<KRB, 32, 32>(copy_dst(ns, 0, kdst + 16 * lane), kt + 16 * lane, kchunks);
            load_full_tile<VRB, 32, 32>(copy_dst(ns, 1, vdst + 16 * lane), vt + 16 * lane, vchunks);
          } else {
            load_full_tile<KRB, kFastTile, NW * 32>(dev::smem_addr(kdst + 16 * threadIdx.x), kt + 16 * threadIdx.x,
                                                         kchunks);
            load_full_tile<VRB, kFastTile, NW * 32>(dev::smem_addr(vdst + 16 * threadIdx.x), vt + 16 * threadIdx.x,
                                                         vchunks);
          }
        } else {  // the last tile of a split, or the end of the allocation
          load_tile_fast<kWarpPipe>(kdst, kslice, ct, n, KRB, kend);
          load_tile_fast<kWarpPipe>(vdst, vslice, ct, n, VRB, vend);
        }
      }
      dev::cp_async_commit();
    }
    const int64_t ct = c0 + it * kFastTile + 32 * warp;  // this warp's first token
    const int nvalid = static_cast<int>(min(static_cast<int64_t>(32), c1 - ct));
    if (nvalid <= 0) continue;  // warp-uniform
    const uint8_t* ks = piece(stage, 0);
    const uint8_t* vs = piece(stage, 1);
    if constexpr (kWarpPipe) {  // this warp's region (warp_region)
      ks += 16 * warp;
      vs += 16 * warp;
    }

    uint32_t pf[4][2];  // P * gamma_V as half2: HALF2 the A operand of P V per n-tile u and row half, else B (P^T)
    if constexpr (HALF2) {
      // S = Q K^T: n-tile u covers tokens 8u..8u+7; this thread decodes token 8u + qr, chunk qc.
      float sacc[4][4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        sacc[u][0] = sacc[u][1] = sacc[u][2] = sacc[u][3] = 0.0f;
        if constexpr ((kExpSkip & 4) != 0) continue;
        uint32_t lo[CSK / 4], hi[CSK / 4];
        decode_chunk_at<MK, CSK>(tk, ks + koff + 8 * u * KRB, ks + k1off + 8 * u * KRB, kal, lo, hi);
#pragma unroll
        for (int kk = 0; kk < KSTEPS; ++kk) {
          dev::mma_16816(sacc[u], qf[kk], prmt(lo[kk], hi[kk], 0x5140u), prmt(lo[kk], hi[kk], 0x7362u));
        }
      }
      // Columns held by this thread: tokens 8u + 2qc + e. gamma_K, soft-cap, mask, validity.
      const int ncols = static_cast<int>(
          min(static_cast<int64_t>(nvalid), max(static_cast<int64_t>(0), p.mask_tokens - p.sink_tokens - ct)));
      float vn[4][2], madd[2][4][2];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int col = 8 * u + 2 * qc + e;
          const float kn = __half2float(*reinterpret_cast<const __half*>(ks + knoff + (8 * u + e) * KRB));
          vn[u][e] = __half2float(*reinterpret_cast<const __half*>(vs + vnoff + (8 * u + e) * VRB));
          sacc[u][e] *= kn;
          if constexpr (HALF2) sacc[u][2 + e] *= kn;
          const bool ok = col < ncols;
          if (!ok) vn[u][e] = 0.0f;  // rows past the end may hold NaN norms
          madd[0][u][e] = ok && mrow0 >= 0 ? 0.0f : kNegInf;
          madd[1][u][e] = HALF2 && ok && mrow1 >= 0 ? 0.0f : kNegInf;
        }
      }
      if constexpr (SOFTCAP) {
#pragma unroll
        for (int u = 0; u < 4; ++u)
#pragma unroll
          for (int i = 0; i < (HALF2 ? 4 : 2); ++i) sacc[u][i] = p.softcap * tanhf(sacc[u][i] / p.softcap);
      }
      if constexpr ((kExpSkip & 1) == 0) {
        const int64_t t0 = ct + 2 * qc + p.sink_tokens;  // token of column 2qc
        auto load = [&](int64_t o) -> float { return mask_value<MASK>(p.mask, o); };
        const bool per_element = true;
        if (per_element) {
#pragma unroll
          for (int u = 0; u < 4; ++u)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int64_t t = t0 + 8 * u + e;
              if (madd[0][u][e] == 0.0f) madd[0][u][e] = load(mrow0 + t);
              if constexpr (HALF2) {
                if (madd[1][u][e] == 0.0f) madd[1][u][e] = one_mask_row ? madd[0][u][e] : load(mrow1 + t);
              }
            }
        }
      }
      float tile_max[2] = {kNegInf, kNegInf};
#pragma unroll
      for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int i = 0; i < (HALF2 ? 4 : 2); ++i) {
          float sc = sacc[u][i] + madd[i >> 1][u][i & 1];
          sc = fmaxf(sc, kNegInf);  // NaN -> -inf (fmaxf returns the other operand), anything else unchanged
          sacc[u][i] = sc;
          tile_max[i >> 1] = fmaxf(tile_max[i >> 1], sc);
        }
      float alpha[2] = {1.0f, 1.0f}, m_use[2] = {0.0f, 0.0f};
#pragma unroll
      for (int h = 0; h < (HALF2 ? 2 : 1); ++h) {
        tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 1));
        tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 2));
        const float m_new = fmaxf(m_run[h], tile_max[h]);
        m_use[h] = m_new == kNegInf ? 0.0f : m_new;
        // 1 when the running max did not move (also for rows past G, whose max stays -inf): the rescale of the
        // accumulators below is skipped unless some row's max moved (before, those rows forced it every tile).
        alpha[h] = m_new == m_run[h] ? 1.0f : __expf(m_run[h] - m_use[h]);
        m_run[h] = m_new;
        l_run[h] *= alpha[h];
      }
      if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {  // the running max moved
#pragma unroll
        for (int i = 0; i < CSV; ++i) {
          oacc[i][0] *= alpha[0];
          oacc[i][1] *= alpha[0];
          oacc[i][2] *= alpha[1];
          oacc[i][3] *= alpha[1];
        }
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const float p0 = __expf(sacc[u][0] - m_use[0]);
        const float p1 = __expf(sacc[u][1] - m_use[0]);
        l_run[0] += p0 + p1;
        pf[u][0] = dev::pack_half2(p0 * vn[u][0], p1 * vn[u][1]);
        pf[u][1] = 0u;
      }
      if constexpr (HALF2) {
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const float p0 = __expf(sacc[u][2] - m_use[1]);
          const float p1 = __expf(sacc[u][3] - m_use[1]);
          l_run[1] += p0 + p1;
          pf[u][1] = dev::pack_half2(p0 * vn[u][0], p1 * vn[u][1]);
        }
      }
    } else {
      // S^T = K Q^T (G <= 8): K as the A operand, m-tile m = tokens 16m .. 16m+15, whose rows qr and qr + 8 are
      // the tokens this thread decodes (chunk qc, the same decode as the HALF2 layout's n-tiles 2m and 2m+1); Q^T
      // as B is the Q fragment's row qr (qf[kk][0], qf[kk][2]). Half the mma count of Q K^T with 16 query rows,
      // and no zero operands. st[m][2h + r] = score of token 16m + 8h + qr, query row 2qc + r.
      auto load = [&](int64_t o) -> float { return mask_value<MASK>(p.mask, o); };
      // Columns of this warp's tile that exist and are inside the mask.
      const int ncols = static_cast<int>(
          min(static_cast<int64_t>(nvalid), max(static_cast<int64_t>(0), p.mask_tokens - p.sink_tokens - ct)));
      // The all-visible probe below (one mask row for every query row): its load is issued here, before the
      // K products, so its latency (a global load in the tile's dependent chain) overlaps them.
      float probe = 0.0f;
      if constexpr ((kExpSkip & 1) == 0 && TQ_DECODE_EARLY_PROBE) {
        if (one_mask_row && !split_visible && lane < ncols) probe = load(mrow_one + ct + p.sink_tokens + lane);
      }
      float st[2][4];
#pragma unroll
      for (int m = 0; m < 2; ++m) {
        st[m][0] = st[m][1] = st[m][2] = st[m][3] = 0.0f;
        if constexpr ((kExpSkip & 4) != 0) continue;
        if constexpr (LK) {
          // Code byte 2h + e of word kk / 2 holds chunk positions 4kk + 2e, +1 (e = 0: a0/a1, e = 1: a2/a3).
          const auto w0 = load_chunk<4, CSK>(ks + koff + 16 * m * KRB, ks + k1off + 16 * m * KRB, kal);
          const auto w1 = load_chunk<4, CSK>(ks + koff + (16 * m + 8) * KRB, ks + k1off + (16 * m + 8) * KRB, kal);
#pragma unroll
          for (int kk = 0; kk < KSTEPS; ++kk) {
            const int h = 2 * (kk % 2);
            const uint32_t ka[4] = {lut_pair<ALUT, kRow>(lutk_base, w0.w[kk / 2], h),
                                    lut_pair<ALUT, kRow>(lutk_base, w1.w[kk / 2], h),
                                    lut_pair<ALUT, kRow>(lutk_base, w0.w[kk / 2], h + 1),
                                    lut_pair<ALUT, kRow>(lutk_base, w1.w[kk / 2], h + 1)};
            dev::mma_16816(st[m], ka, qf[kk][0], qf[kk][2]);
          }
        } else {
          uint32_t lo0[CSK / 4], hi0[CSK / 4], lo1[CSK / 4], hi1[CSK / 4];
          decode_chunk_at<MK, CSK>(tk, ks + koff + 16 * m * KRB, ks + k1off + 16 * m * KRB, kal, lo0, hi0);
          decode_chunk_at<MK, CSK>(tk, ks + koff + (16 * m + 8) * KRB, ks + k1off + (16 * m + 8) * KRB, kal, lo1,
                                   hi1);
#pragma unroll
          for (int kk = 0; kk < KSTEPS; ++kk) {
            const uint32_t ka[4] = {prmt(lo0[kk], hi0[kk], 0x5140u), prmt(lo1[kk], hi1[kk], 0x5140u),
                                    prmt(lo0[kk], hi0[kk], 0x7362u), prmt(lo1[kk], hi1[kk], 0x7362u)};
            dev::mma_16816(st[m], ka, qf[kk][0], qf[kk][2]);
          }
        }
      }
      // gamma_K, soft-cap, mask, validity of tokens 16m + 8h + qr (rows past the end may hold NaN norms).
      float vn[2][2], madd[2][2][2];  // [m][h], [m][h][r]
#pragma unroll
      for (int m = 0; m < 2; ++m) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int tok = 16 * m + 8 * h;  // + qr
          const float kn = __half2float(*reinterpret_cast<const __half*>(ks + knoff_t + tok * KRB));
          vn[m][h] = __half2float(*reinterpret_cast<const __half*>(vs + vnoff_t + tok * VRB));
          const bool ok = tok + qr < ncols;
          if (!ok) vn[m][h] = 0.0f;
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            st[m][2 * h + r] *= kn;
            madd[m][h][r] = ok && mrow_t[r] >= 0 ? 0.0f : kNegInf;
          }
        }
      }
      if constexpr (SOFTCAP) {
#pragma unroll
        for (int m = 0; m < 2; ++m)
#pragma unroll
          for (int i = 0; i < 4; ++i) st[m][i] = p.softcap * tanhf(st[m][i] / p.softcap);
      }
      if constexpr ((kExpSkip & 1) == 0) {
        // One mask row for every query row of this kv head (mask_heads == 1, S == 1): one coalesced probe per
        // warp (lane l reads the mask at token ct + l). When every visible value is 0 (an all-visible mask),
        // madd already holds the result and the per-element loads are skipped. Exact for any mask: any other
        // value (a bool false's -inf, NaN, a bias) takes the per-element path.
        bool per_element = true;
        if (one_mask_row) {
          if constexpr (!TQ_DECODE_EARLY_PROBE)
            probe = lane < ncols ? load(mrow_one + ct + p.sink_tokens + lane) : 0.0f;
          per_element = !split_visible && __any_sync(0xffffffffu, probe != 0.0f);
        }
        if (per_element) {
          const int64_t t0 = ct + qr + p.sink_tokens;  // token of row qr
#pragma unroll
          for (int m = 0; m < 2; ++m)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int64_t t = t0 + 16 * m + 8 * h;
              if (madd[m][h][0] == 0.0f) madd[m][h][0] = load(mrow_t[0] + t);
              if (madd[m][h][1] == 0.0f) madd[m][h][1] = one_mask_row ? madd[m][h][0] : load(mrow_t[1] + t);
            }
        }
      }
      // Online softmax of rows 2qc + r over this warp's 32 tokens (8 lanes with the same qc hold them).
      float tile_max[2] = {kNegInf, kNegInf};
#pragma unroll
      for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float sc = fmaxf(st[m][i] + madd[m][i >> 1][i & 1], kNegInf);  // NaN -> -inf
          st[m][i] = sc;
          tile_max[i & 1] = fmaxf(tile_max[i & 1], sc);
        }
      float alpha[2], m_use[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 4));
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 8));
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 16));
        const float m_new = fmaxf(m_run[r], tile_max[r]);
        m_use[r] = m_new == kNegInf ? 0.0f : m_new;
        alpha[r] = m_new == m_run[r] ? 1.0f : __expf(m_run[r] - m_use[r]);
        m_run[r] = m_new;
        l_run[r] *= alpha[r];
      }
      if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {  // the running max moved
#pragma unroll
        for (int i = 0; i < CSV / 2; ++i) {  // O^T: element 2e + r is query row 2qc + r
          oacc[i][0] *= alpha[0];
          oacc[i][1] *= alpha[1];
          oacc[i][2] *= alpha[0];
          oacc[i][3] *= alpha[1];
        }
      }
      // P * gamma_V: half2 (row 2qc, row 2qc + 1) of token 16m + 8h + qr is the m8n8 fragment of P (tokens x
      // rows); its transpose holds (tokens 16m + 8h + 2qc, +1) of row qr: the B operand of P V (O^T = V^T P^T).
      // e^(s - m) as 2^(s log2e - m log2e), the product fused: FFMA + MUFU per probability.
      constexpr float kLog2e = 1.4426950408889634f;
      const float ml0 = m_use[0] * kLog2e, ml1 = m_use[1] * kLog2e;
#pragma unroll
      for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const float p0 = exp2_ftz(fmaf(st[m][2 * h], kLog2e, -ml0));
          const float p1 = exp2_ftz(fmaf(st[m][2 * h + 1], kLog2e, -ml1));
          l_run[0] += p0;
          l_run[1] += p1;
          pf[2 * m + h][0] = movmatrix_trans(dev::pack_half2(p0 * vn[m][h], p1 * vn[m][h]));
          pf[2 * m + h][1] = 0u;
        }
    }
    // O += P V, two 16-token k-steps. V tokens of this thread: 16s + 2qc + {0, 1} (b0), + 8 (b1); chunk qr.
    // HALF2: O = P V with P as the A operand (16 query rows), one mma per n-tile (a coordinate of each thread's
    // chunk). Otherwise (G <= 8): O^T = V^T P^T, V^T as the A operand (m-tile i = chunk positions 2i, 2i+1 of
    // every thread's chunk, i.e. the same decoded pairs) and P^T as B (the S fragment of row qr is already the
    // B operand's layout): half the mma count, and no accumulator registers for padding rows 8..15.
#pragma unroll
    for (int s = 0; s < ((kExpSkip & 2) != 0 ? 0 : 2); ++s) {
      const uint32_t af[4] = {pf[2 * s][0], pf[2 * s][1], pf[2 * s + 1][0], pf[2 * s + 1][1]};
      (void)af;
      uint32_t xs[2][CSV / 4];  // [b0/b1]: selectors of the token pair 2qc (+8), 2qc+1 (+8)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int tok = 16 * s + 8 * h;  // relative to column 2qc; its pair partner is tok + 1
        constexpr int CSL = VHALF ? 2 * CSV : CSV;  // coordinates loaded
        const auto wa = load_chunk<MV, CSL>(vs + voff + tok * VRB - val0, vs + v1off + tok * VRB, val0);
        const auto wb = load_chunk<MV, CSL>(vs + voff + (tok + 1) * VRB - val1, vs + v1off + (tok + 1) * VRB, val1);
        if constexpr (VHALF) {
          const uint32_t sa = half_unit_selector<MV>(wa.w[0], wa.w1[0], qr & 1);
          const uint32_t sb = half_unit_selector<MV>(wb.w[0], wb.w1[0], qr & 1);
          xs[h][0] = prmt(sa, sb, 0x5140u);
          xs[h][1] = prmt(sa, sb, 0x7362u);
        } else if constexpr (LV) {
          // Pair bytes (a_p | b_p << 4): word 2u byte k = position 8u + 2k, word 2u + 1 byte k = 8u + 2k + 1.
#pragma unroll
          for (int u = 0; u < CSV / 8; ++u) {
            xs[h][2 * u] = (wa.w[u] & 0x0f0f0f0fu) | ((wb.w[u] << 4) & 0xf0f0f0f0u);
            xs[h][2 * u + 1] = ((wa.w[u] >> 4) & 0x0f0f0f0fu) | (wb.w[u] & 0xf0f0f0f0u);
          }
        } else {
          pair_selectors<MV, CSV>(wa, wb, xs[h]);
        }
      }
#pragma unroll
      for (int j = 0; j < CSV / 4; ++j) {  // n-tiles 4j .. 4j+3
        uint32_t b0[4], b1[4];
        if constexpr (LV) {  // position 4j + e: word 2 (j / 2) + e % 2, byte 2 (j % 2) + e / 2
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            b0[e] = lut_pair<ALUT, kRow>(lutv_base, xs[0][2 * (j / 2) + e % 2], 2 * (j % 2) + e / 2);
            b1[e] = lut_pair<ALUT, kRow>(lutv_base, xs[1][2 * (j / 2) + e % 2], 2 * (j % 2) + e / 2);
          }
        } else {
          pair_lookup<MV>(tv, xs[0][j], b0);
          pair_lookup<MV>(tv, xs[1][j], b1);
        }
        if constexpr (HALF2) {
#pragma unroll
          for (int e = 0; e < 4; ++e) dev::mma_16816(oacc[4 * j + e], af, b0[e], b1[e]);
        } else {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const uint32_t vt[4] = {b0[2 * e], b0[2 * e + 1], b1[2 * e], b1[2 * e + 1]};
            dev::mma_16816(oacc[2 * j + e], vt, pf[2 * s][0], pf[2 * s + 1][0]);
          }
        }
      }
    }
  }
  dev::cp_async_wait<0>();
  __syncthreads();
  dev::stamp(stamp_block, 4);

  // Merge the warps through shared memory (stage space is free now), un-permuting the output columns.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if constexpr (HALF2) {  // row qr + 8h: the lanes of one qr
      l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 1);
      l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 2);
    } else {  // row 2qc + h: the lanes of one qc
      l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 4);
      l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 8);
      l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 16);
    }
  }
  float* cb_o = reinterpret_cast<float*>(smem);  // [warps][16][D]
  float* cb_m = cb_o + kFastWarps * kFastRows * D;
  float* cb_l = cb_m + kFastWarps * kFastRows;
  if constexpr (HALF2) {
#pragma unroll
    for (int nt = 0; nt < CSV; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = (2 * qc + e) * CSV + chunk_coord<MV>(nt);
        const int row = warp * kFastRows + qr;
        cb_o[row * D + merge_col(row, col)] = oacc[nt][e];
        cb_o[(row + 8) * D + merge_col(row + 8, col)] = oacc[nt][2 + e];
      }
    }
  } else {  // O^T: m-tile i, element 2e + r = chunk position 2i + e of chunk qr, query row 2qc + r
#pragma unroll
    for (int i = 0; i < CSV / 2; ++i) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = VHALF ? 16 * (qr / 2) + 2 * (2 * i + e) + (qr & 1) : qr * CSV + chunk_coord<MV>(2 * i + e);
        const int row = warp * kFastRows + 2 * qc;
        cb_o[row * D + merge_col(row, col)] = oacc[i][2 * e];
        cb_o[(row + 1) * D + merge_col(row + 1, col)] = oacc[i][2 * e + 1];
      }
    }
  }
  if (HALF2 && qc == 0) {
    cb_m[warp * kFastRows + qr] = m_run[0];
    cb_m[warp * kFastRows + qr + 8] = m_run[1];
    cb_l[warp * kFastRows + qr] = l_run[0];
    cb_l[warp * kFastRows + qr + 8] = l_run[1];
  } else if (!HALF2 && qr == 0) {
    cb_m[warp * kFastRows + 2 * qc] = m_run[0];
    cb_m[warp * kFastRows + 2 * qc + 1] = m_run[1];
    cb_l[warp * kFastRows + 2 * qc] = l_run[0];
    cb_l[warp * kFastRows + 2 * qc + 1] = l_run[1];
  }
  __syncthreads();
  float* mo = cb_l + kFastWarps * kFastRows;  // [16][D] merged o (fast_out)
  float* mol = mo + kFastRows * D;            // [16] merged l (fast_out)
  // The warps' weights per query row, once per row (thread r): cb_m[w][r] becomes exp(m_w - max) (0 for a row no
  // warp saw), cb_l[0][r] the merged l and cb_l[1][r] the max. Thread r touches only row r's entries. (Each of
  // the D elements of a row recomputed them before: ~13% of B=1 T=1K's instructions.)
  if (threadIdx.x < a.rows) {
    const int r = threadIdx.x;
    float mx = kNegInf;
#pragma unroll
    for (int w = 0; w < kFastWarps; ++w) mx = fmaxf(mx, cb_m[w * kFastRows + r]);
    float l = 0.0f;
#pragma unroll
    for (int w = 0; w < kFastWarps; ++w) {
      const float f = mx != kNegInf ? __expf(cb_m[w * kFastRows + r] - mx) : 0.0f;
      l += f * cb_l[w * kFastRows + r];
      cb_m[w * kFastRows + r] = f;
    }
    cb_l[r] = l;
    cb_l[kFastRows + r] = mx;
  }
  __syncthreads();
  dev::stamp(stamp_block, 5);
  if (a.cluster_merge) {  // the splits merge in the cluster: no reduce kernel (and no merged copy of o here)
    const float* rot = p.v_rotation + static_cast<int64_t>(p.v_rotation_heads == 1 ? 0 : g) * D * D;
    cluster_merge_pushed<NW, D>(rot, cb_o, cb_m, cb_l, reinterpret_cast<uint8_t*>(smem + a.push_off), false, a.nsp,
                                a.rows, p.out, p.dtype, decode_row(a, b, g, 0));
    dev::stamp(stamp_block, 7);
    return;
  }
  // Loads without a branch around them and 4 elements per round (independent chains; as a plain loop with the
  // loads under the branch this took ~1200 cycles at 4 rows, bench/NOTES.md "Merge swizzle").
#pragma unroll 4
  for (int idx = threadIdx.x; idx < a.rows * D; idx += blockDim.x) {
    const int r = idx / D;
    const int d = idx % D;
    float o = 0.0f;
#pragma unroll
    for (int w = 0; w < kFastWarps; ++w) {
      const int row = w * kFastRows + r;
      o += cb_m[row] * cb_o[row * D + merge_col(row, d)];
    }
    o = cb_l[kFastRows + r] != kNegInf ? o : 0.0f;  // as before: a row no warp saw is 0, whatever its warps' o hold
    if (a.fast_out) {
      mo[idx] = o;
      if (d == 0) mol[r] = cb_l[r];
    } else {
      const int64_t grow = decode_row(a, b, g, r);
      a.part_o[(grow * a.nsp + split) * D + d] = o;
      if (d == 0) a.part_ml[grow * a.nsp + split] = make_float2(cb_l[kFastRows + r], cb_l[r]);
    }
  }
  dev::stamp(stamp_block, 6);
  if (!a.fast_out) return;
  // One split and no window: un-rotate here (x = R_v^T o / l, as tq_attention_reduce_kernel) and skip that kernel.
  // A Sylvester-Hadamard R_v: fast_out_hadamard (its barriers publish mo and mol). Any other R_v: threads 0..D-1,
  // one output column each, dense.
  const float* rot = p.v_rotation + static_cast<int64_t>(p.v_rotation_heads == 1 ? 0 : g) * D * D;
  if (fast_out_hadamard<NW, D>(rot, mo, mol, a.rows, p.out, p.dtype, decode_row(a, b, g, 0), a.v_promised != 0)) {
    dev::stamp(stamp_block, 7);
    return;
  }
  // D = 256: two columns per thread (a loop only there: it moved the smaller instances' register allocation).
  constexpr int kCols = D > kFastWarps * 32 ? D / (kFastWarps * 32) : 1;
  if (threadIdx.x >= D) return;
#pragma unroll 1
  for (int j = 0; j < kCols; ++j) {
    const int i = threadIdx.x + kFastWarps * 32 * j;
    float acc[kFastRows];
#pragma unroll
    for (int r = 0; r < kFastRows; ++r) acc[r] = 0.0f;
#pragma unroll 4
    for (int k = 0; k < D; ++k) {
      const float rk = rot[k * D + i];
#pragma unroll
      for (int r = 0; r < kFastRows; ++r)
        if (r < a.rows) acc[r] = fmaf(rk, mo[r * D + k], acc[r]);
    }
#pragma unroll
    for (int r = 0; r < kFastRows; ++r) {
      if (r < a.rows) {
        const float l = mol[r];
        dev::store_from_float(p.out, p.dtype, decode_row(a, b, g, r) * D + i, l > 0.0f ? acc[r] / l : 0.0f);
      }
    }
  }
}

// Stage and merge shared memory of the decode kernel (a.fast_warps warps).
inline void fast_smem_layout(AttnArgs& a) {
  const bool wp = fast_warp_pipe(a.klay.mse_bits[0], a.rows > 8);
  a.fast_k_bytes = fast_piece_bytes_rb(a.klay.row_bytes, a.fast_warps, wp);
  const int v_bytes = fast_piece_bytes_rb(a.vlay.row_bytes, a.fast_warps, wp);
  a.fast_stage_bytes = a.fast_k_bytes + v_bytes;
  // warp partials (o, m, l), then the merged o and l of the fused epilogue
  const int nw = a.fast_warps;
  const int d = a.p.k_codec.head_dim;
  const int merge = (nw * kFastRows * d + 2 * nw * kFastRows + kFastRows * d + kFastRows) * 4;
  const int mk = a.klay.mse_bits[0], mv = a.vlay.mse_bits[0];
  const int lut = fast_lut_bytes(mk, mv, a.rows > 8, d);  // pair tables after the stages (same rule as the kernel)
  const int aligned = alut_stages(mk, mv, a.rows > 8, nw, d);  // or aligned, at any window start (alut_layout)
  const int stages = fast_stages(mk, mv, lut * kFastWarps / nw, fast_block_budget(mk, a.rows > 8, nw, d), d, wp);
  a.smem_bytes = std::max(aligned > 0 ? alut_worst_bytes(aligned, a.fast_k_bytes, v_bytes, lut)
                                      : stages * a.fast_stage_bytes + lut,
                          merge);
}

// The G > 8 (HALF2) and 8-warp instances exist only at D = 128 and at D = 64 with 4-bit V: not at D = 256
// (registers) nor with half-unit V chunks (D = 64, 2/3-bit V: S^T layout only), and each instance costs compile
// time (the CI compiles every one for the TensorRT plugin library). fast_decode_eligible and fast_warps_ok keep
// the launcher off the others.
__host__ __device__ constexpr bool fast_wide_instances(int mv, int d) { return d == kFastD || (d == 64 && mv == 4); }

// True when the fast decode kernel serves these parameters.
inline bool fast_decode_eligible(const AttentionParams& p, const RowLayout& kl, const RowLayout& vl, int rows) {
  const int d = p.k_codec.head_dim;
  auto ok = [d](const CodecConfig& c, const RowLayout& l) {  // the kernel's row size: codes, then one float16 norm
    return c.num_parts == 1 && c.qjl == 0 && l.mse_bits[0] >= 2 && l.mse_bits[0] <= 4 &&
           l.row_bytes == l.mse_bits[0] * d / 8 + 2;
  };
  const bool dim_ok = (d == kFastD || d == 64 || d == 256) && (rows <= 8 || fast_wide_instances(vl.mse_bits[0], d));
  return p.new_tokens == 1 && dim_ok && rows <= kFastRows && ok(p.k_codec, kl) && ok(p.v_codec, vl);
}

using FastKernel = void (*)(AttnArgs);

template <int MK, int MV, int MASK, int D>
FastKernel fast_kernel_s(bool softcap, bool half2, bool eight) {
  if constexpr (fast_wide_instances(MV, D)) {
    if (half2)
      return softcap ? tq_attention_decode_kernel<MK, MV, MASK, true, true, 4, D>
                     : tq_attention_decode_kernel<MK, MV, MASK, false, true, 4, D>;
  }
  if constexpr (fast_wide_instances(MV, D)) {
    if (eight)
      return softcap ? tq_attention_decode_kernel<MK, MV, MASK, true, false, 8, D>
                     : tq_attention_decode_kernel<MK, MV, MASK, false, false, 8, D>;
  }
  (void)half2;
  (void)eight;
  return softcap ? tq_attention_decode_kernel<MK, MV, MASK, true, false, 4, D>
                 : tq_attention_decode_kernel<MK, MV, MASK, false, false, 4, D>;
}

template <int MK, int MV, int D>
FastKernel fast_kernel_m(MaskType mask, bool softcap, bool half2, bool eight) {
#if defined(TQ_EXP_MINIMAL) && TQ_EXP_MINIMAL
  (void)mask;
  (void)softcap;
  constexpr int kF32 = static_cast<int>(MaskType::kFloat32);
  if constexpr (fast_wide_instances(MV, D)) {
    if (half2) return tq_attention_decode_kernel<MK, MV, kF32, false, true, 4, D>;
  }
  if constexpr (fast_wide_instances(MV, D)) {
    if (eight) return tq_attention_decode_kernel<MK, MV, kF32, false, false, 8, D>;
  }
  (void)half2;
  (void)eight;
  return tq_attention_decode_kernel<MK, MV, kF32, false, false, 4, D>;  // timing
#else
  switch (mask) {
    case MaskType::kFloat16:
      return fast_kernel_s<MK, MV, static_cast<int>(MaskType::kFloat16), D>(softcap, half2, eight);
    case MaskType::kBool: return fast_kernel_s<MK, MV, static_cast<int>(MaskType::kBool), D>(softcap, half2, eight);
    default: return fast_kernel_s<MK, MV, static_cast<int>(MaskType::kFloat32), D>(softcap, half2, eight);
  }
#endif
}

template <int MK, int D>
FastKernel fast_kernel_d(int mv, MaskType mask, bool softcap, bool half2, bool eight) {
  switch (mv) {
    case 2: return fast_kernel_m<MK, 2, D>(mask, softcap, half2, eight);
    case 3: return fast_kernel_m<MK, 3, D>(mask, softcap, half2, eight);
    default: return fast_kernel_m<MK, 4, D>(mask, softcap, half2, eight);
  }
}

template <int MK>
FastKernel fast_kernel_v(int mv, int d, MaskType mask, bool softcap, bool half2, bool eight) {
  if (d == 64) return fast_kernel_d<MK, 64>(mv, mask, softcap, half2, eight);
  if (d == 256) return fast_kernel_d<MK, 256>(mv, mask, softcap, half2, eight);
  return fast_kernel_d<MK, kFastD>(mv, mask, softcap, half2, eight);
}

// True when the decode kernel can run with this many warps per block (8 only without HALF2, i.e. G <= 8, and
// where fast_wide_instances).
inline bool fast_warps_ok(int warps, int rows, int d, int mv) {
  return warps == kFastWarps || (warps == 2 * kFastWarps && rows <= 8 && fast_wide_instances(mv, d));
}

// The decode kernel instance for these parameters (fast_decode_eligible and fast_warps_ok must hold).
inline FastKernel fast_kernel(const AttnArgs& a) {
  const MaskType mask = a.p.mask_type;
  const bool softcap = a.p.softcap > 0.0f;
  const bool half2 = a.rows > 8;
  const bool eight = a.fast_warps == 2 * kFastWarps;
  const int d = a.p.k_codec.head_dim;
  switch (a.klay.mse_bits[0]) {
    case 2: return fast_kernel_v<2>(a.vlay.mse_bits[0], d, mask, softcap, half2, eight);
    case 3: return fast_kernel_v<3>(a.vlay.mse_bits[0], d, mask, softcap, half2, eight);
    default: return fast_kernel_v<4>(a.vlay.mse_bits[0], d, mask, softcap, half2, eight);
  }
}
