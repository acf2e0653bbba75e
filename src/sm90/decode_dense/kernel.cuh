// sm90 dense MLA decode kernel (bf16 / fp16 q and KV, fp32 accumulation).
//
// Grid: (num_m_blocks, h_kv, num_sm_parts). A CTA owns 64 query rows (the s_q * h_q / h_kv rows
// that share kv head blockIdx.y, tile blockIdx.x) and walks the KV blocks of SM part
// part_index() (gridDim.z - 1 - blockIdx.z: later parts start first) as the scheduler dealt
// them (src/sched/metadata.h): possibly the tail of one request, whole requests, and the head of
// another. One CTA per SM (about 225 KiB of shared memory).
//
// Two warpgroups, "seesaw" schedule (the idea of FlashMLA's public deep-dive): the 64 x 512 fp32
// output is split by columns, O_L (dims 0..255) in WG0's registers and O_R (256..511) in WG1's.
// A request's blocks are taken in pairs (A, B); A sits in K buffer 0, B in buffer 1.
//   WG0: S_A = Q K_A^T (all 576 dims)         WG1: S_B = Q K_B^T
//   WG0: softmax of A against the running max m -> m', alpha; P_A (relative to m') to smem
//   WG0: O_L = alpha O_L + P_A V_A,L            WG1: softmax of B against m' -> m'', beta;
//                                                    then O_R = alpha O_R + P_A V_A,R
//   WG0: O_L = beta O_L + P_B V_B,L             WG1: O_R = beta O_R + P_B V_B,R
// so one warpgroup's softmax runs while the other's wgmmas keep the tensor cores busy. (FlashMLA
// orders WG1's products the other way, with P_A rescaled by beta; doing P_A V first in both
// warpgroups frees buffer 0 half a pair earlier, which measured 4-6% faster, and 8-13% faster
// again when re-measured against FlashMLA's order on this kernel: docs/PERF.md, ninth session.)
// P of the own block is the register A operand (wgmma RS); the other warpgroup's P comes through
// shared memory. The running maxima go through shared-memory mailboxes, published at named
// barriers (config.h).
//
// Loads: no producer warp. A K block is 9 TMA boxes (64 tokens x 64 dims, 128-byte swizzle, L2
// policy from read_once_l2_policy), each completing its own mbarrier so that S = Q K^T starts on
// the first tile.
// The next pair's blocks are requested in two halves, each by the warpgroup that reads it last,
// as soon as its last wgmma on it completed:
//   buffer 0, tiles 0..3 (V_A,L): WG0 after P_A V_A,L      tiles 4..8: WG1 after P_A V_A,R
//   buffer 1, tiles 0..3 (V_B,L): WG0 after P_B V_B,L      tiles 4..8: WG1 after P_B V_B,R
// Within a request the next pair's loads overlap the current pair's work; the first two blocks of
// the next request (and its Q) are requested when the current request's last pair is done, except
// that a K buffer holding staged output rows is refilled once the bulk copies have read it.
//
// Shared memory (1024-byte aligned; each tile 64 rows x 128 bytes, TMA SWIZZLE_128B):
//   q  [9 tiles]                 72 KiB   A operand of S = Q K^T (K-major); the rope tile is
//                                         also copied to registers once per request, and S
//                                         over the rope dims takes Q from there (wgmma RS)
//   k  [2 buffers][9 tiles]     144 KiB   B operand of S (K-major) and of P V (MN-major)
//   p1 [1 tile]                   8 KiB   P_B for WG0 (K-major)
//   P_A for WG1 lives in buffer 0's tile 8 (rope dims of block A, dead once S_A is done; the
//   next load of that tile is issued by WG1 after its last read of P_A).
//   An epilogue may stage output rows in the K buffers while they are idle (see below).
//
// Epilogue: rows normalised by the row sums, stored as 16-bit output (unsplit request) or fp32
// partials (split). At a transition to the CTA's next request, and at the last request of a CTA
// with one m-block, the rows are staged in idle K buffers and written with bulk copies
// (store_rows_staged); otherwise they are stored from the registers. Piece 0 of a request cut
// into two pieces (the part's last request) is merged here with piece 1's partial, published by
// the next part's CTA through a merge flag (sched/metadata.h), and written as final rows.
//
// Tokens past cache_seqlens in a request's last page may hold NaN: their scores are replaced by
// -inf (a select, so NaN does not propagate), and their V rows are zeroed in shared memory before
// P V (p = 0 there, but 0 * NaN would still be NaN).
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <utility>

#include <cute/arch/mma_sm90_gmma.hpp>

#include "sm90/decode_dense/config.h"
#include "sm90/decode_dense/device_ops.cuh"
#include "sm90/decode_dense/params.h"

namespace mla::sm90::decode_dense {

template <typename Element>
struct SharedStorage {
  alignas(1024) Element q[kNumTilesQK][kBlockM * kTileDim];
  alignas(1024) Element k[kNumBuffers][kNumTilesQK][kBlockN * kTileDim];
  alignas(1024) Element p1[kBlockM * kTileDim];
  // The running max after block A (from WG0) and after block B (from WG1). The receiver derives
  // the rescale factor from its own copy of the previous max with the same arithmetic.
  float mailbox_a[kBlockM];
  float mailbox_b[kBlockM];
  float row_sums[2][2][kBlockM];   // [request parity][warpgroup]: row sums at a request's end
  alignas(8) uint64_t k_full[kNumBuffers][kNumTilesQK];  // [buffer][tile]: TMA bytes landed
  alignas(8) uint64_t q_full;                  // TMA bytes of a request's Q landed
};

// ---- TMA issue (one thread each) -------------------------------------------------------------

// The 9 boxes (64 rows x 64 dims each) of request req's Q rows into smem.q, on q_full.
template <typename Element>
__device__ __forceinline__ void issue_q_load(const Params& params, const CUtensorMap& q_map,
                                             SharedStorage<Element>& smem, int m_block,
                                             int kv_head, int req, uint64_t l2_policy) {
  const int first_row = m_block * kBlockM;
  const RowPosition first = row_position(params, kv_head, first_row);
  mbarrier_arrive_expect_tx(&smem.q_full, kNumTilesQK * kTileBytes);
#pragma unroll
  for (int t = 0; t < kNumTilesQK; ++t) {
    tma_load_4d(&q_map, &smem.q_full, smem.q[t], t * kTileDim, first.head, first.sq, req,
                l2_policy);
  }
}

// One half of KV page `page` (kHalf 0: tiles 0..3, 1: tiles 4..8) into K buffer buf.
template <int kHalf, typename Element>
__device__ __forceinline__ void issue_k_half(const CUtensorMap& kv_map,
                                             SharedStorage<Element>& smem, int buf, int kv_head,
                                             int page, uint64_t l2_policy) {
  constexpr int kFirst = kHalf == 0 ? 0 : kTilesLeft;
  constexpr int kCount = kHalf == 0 ? kTilesLeft : kTilesRight;
#pragma unroll
  for (int t = kFirst; t < kFirst + kCount; ++t) {
    mbarrier_arrive_expect_tx(&smem.k_full[buf][t], kTileBytes);
    tma_load_4d(&kv_map, &smem.k_full[buf][t], smem.k[buf][t], t * kTileDim, 0, kv_head, page,
                l2_policy);
  }
}

// What issue_request_start requests: Q (by TMA, when params.q_tma), block A into buffer 0,
// block B into buffer 1. A request transition whose epilogue stages rows in a K buffer requests
// that buffer's block only once the bulk copies have read it (store_rows_staged).
enum RequestStartLoads : unsigned {
  kLoadQ = 1u,
  kLoadA = 2u,
  kLoadB = 4u,
  kLoadAll = kLoadQ | kLoadA | kLoadB,
};

// Start of a request's blocks: the `loads` among its Q and its first two blocks (A into buffer 0,
// B into buffer 1, if the request has a second block). Their buffers must be free.
template <typename Element>
__device__ __forceinline__ void issue_request_start(const Params& params,
                                                    const mla::detail::PartMetadata& part,
                                                    const CUtensorMap& kv_map,
                                                    const CUtensorMap& q_map,
                                                    SharedStorage<Element>& smem, int m_block,
                                                    int kv_head, int req, uint64_t l2_policy,
                                                    unsigned loads) {
  const RequestRange r = request_range(part, req, params.cache_seqlens[req]);
  const int32_t* pages = params.block_table + req * params.block_table_batch_stride;
  if ((loads & kLoadQ) && params.q_tma)
    issue_q_load(params, q_map, smem, m_block, kv_head, req, l2_policy);
  if (loads & kLoadA) {
    const int page_a = pages[r.first_block];
    issue_k_half<0>(kv_map, smem, 0, kv_head, page_a, l2_policy);
    issue_k_half<1>(kv_map, smem, 0, kv_head, page_a, l2_policy);
  }
  if ((loads & kLoadB) && r.first_block + 1 < r.end_block) {
    const int page_b = pages[r.first_block + 1];
    issue_k_half<1>(kv_map, smem, 1, kv_head, page_b, l2_policy);
    issue_k_half<0>(kv_map, smem, 1, kv_head, page_b, l2_policy);
  }
}

// ---- warpgroup-wide pieces of the block step ---------------------------------------------------

// S += Q K^T over tiles [kFirst, kLast) of the K block at k_base (wgmma 64x64x16, 4 per tile;
// the rope tile with Q from the q_rope registers, the others with Q from shared memory).
// Each tile is waited for on its own barrier and committed as its own group, so the product
// starts on the first 8 KiB while the rest of the block is still arriving. The barrier of tile
// t + 1 is probed before tile t's wgmmas are issued, so the probe's round trip overlaps them.
template <typename Ops, int kFirst, int kLast>
__device__ __forceinline__ void issue_qk(uint32_t q_base, uint32_t k_base, uint64_t* tile_full,
                                         uint32_t phase, const uint32_t (&q_rope)[kQRopeRegs],
                                         float (&s)[kBlockN / 2], Trace& trace) {
  const uint64_t desc_q0 = make_desc_sw128(q_base, 16, 1024);
  const uint64_t desc_k0 = make_desc_sw128(k_base, 16, 1024);
  uint32_t ready = mbarrier_probe(&tile_full[kFirst], phase);
#pragma unroll
  for (int t = kFirst; t < kLast; ++t) {
    if (!ready) mbarrier_wait(&tile_full[t], phase);
    trace(kEvTileWaited + t);
    if (t + 1 < kLast) ready = mbarrier_probe(&tile_full[t + 1], phase);
    cute::warpgroup_arrive();
#pragma unroll
    for (int kk = 0; kk < kTileDim / 16; ++kk) {
      const uint32_t offset = t * kTileBytes + kk * 32;  // 16 dims = 32 bytes per step
      if (t == kNumTilesQK - 1) {
        // Q's rope tile from registers: the kernel is bound by shared-memory bandwidth as much
        // as by the tensor cores, Q's reads are a quarter of its traffic, and the registers left
        // next to the accumulators hold one of Q's nine tiles, not two. docs/PERF.md: C and D
        // 2-4% faster.
        const uint32_t a[4] = {q_rope[4 * kk], q_rope[4 * kk + 1], q_rope[4 * kk + 2],
                               q_rope[4 * kk + 3]};
        gmma_rs<typename Ops::QKRegs>(a, desc_advance(desc_k0, offset), s);
      } else {
        gmma<typename Ops::QK>(desc_advance(desc_q0, offset), desc_advance(desc_k0, offset), s);
      }
    }
    cute::warpgroup_commit_batch();
  }
}

// This thread's wgmma A fragment of Q's rope tile (64 rows x 64 dims, swizzled, at q_rope_base):
// k-step kk is registers 4 kk .. 4 kk + 3 = (row0, 16 kk + col0), (row0 + 8, 16 kk + col0),
// (row0, 16 kk + 8 + col0), (row0 + 8, 16 kk + 8 + col0), two 16-bit dims each.
__device__ __forceinline__ void load_q_rope_fragment(uint32_t q_rope_base, int row0, int col0,
                                                     uint32_t (&q_rope)[kQRopeRegs]) {
#pragma unroll
  for (int kk = 0; kk < kTileDim / 16; ++kk) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int row = row0 + 8 * (r % 2);
      const int col = 16 * kk + 8 * (r / 2) + col0;
      asm volatile("ld.shared.b32 %0, [%1];"
                   : "=r"(q_rope[4 * kk + r])
                   : "r"(q_rope_base + swizzled_offset(row, col)));
    }
  }
}

// The four V tiles [kFirst, kFirst + 4) of a K buffer that the other warpgroup computed S from:
// landed already, but this warpgroup must still observe their barriers before its P V reads them
// (that makes the TMA bytes visible to it). probe_v_tiles is issued early, where its round trip
// hides behind other work; wait_v_tiles only spins if that probe did not see all four complete.
template <int kFirst>
__device__ __forceinline__ uint32_t probe_v_tiles(uint64_t* tile_full, uint32_t phase) {
  static_assert(kTilesLeft == 4, "mbarrier_probe4 covers one warpgroup's V tiles");
  return mbarrier_probe4(&tile_full[kFirst], phase);
}
template <int kFirst>
__device__ __forceinline__ void wait_v_tiles(uint32_t probed, uint64_t* tile_full, uint32_t phase) {
  while (!probed) probed = probe_v_tiles<kFirst>(tile_full, phase);
}

// V is MN-major: 64-dim chunks are whole tiles apart (lbo), 8 tokens are 1024 bytes (sbo).
__device__ __forceinline__ uint64_t v_descriptor(uint32_t v_base) {
  return make_desc_sw128(v_base, kTileBytes, 1024);
}

// O += P V[:, half] with P in registers (this warpgroup's own block).
template <typename Ops>
__device__ __forceinline__ void issue_pv_regs(const uint32_t (&p)[kBlockN / 4], uint32_t v_base,
                                              float (&o)[kHalfV / 2]) {
  const uint64_t desc_v0 = v_descriptor(v_base);
#pragma unroll
  for (int kk = 0; kk < kBlockN / 16; ++kk) {
    const uint32_t a[4] = {p[4 * kk], p[4 * kk + 1], p[4 * kk + 2], p[4 * kk + 3]};
    gmma_rs<typename Ops::PVRegs>(a, desc_advance(desc_v0, kk * 16 * 128), o);
  }
}

// O += P V[:, half] with P in shared memory (the other warpgroup's block).
template <typename Ops>
__device__ __forceinline__ void issue_pv_smem(uint32_t p_base, uint32_t v_base,
                                              float (&o)[kHalfV / 2]) {
  const uint64_t desc_p0 = make_desc_sw128(p_base, 16, 1024);
  const uint64_t desc_v0 = v_descriptor(v_base);
#pragma unroll
  for (int kk = 0; kk < kBlockN / 16; ++kk) {
    gmma<typename Ops::PV>(desc_advance(desc_p0, kk * 32), desc_advance(desc_v0, kk * 16 * 128), o);
  }
}

// ---- per-thread softmax pieces (accumulator layout: this thread holds rows row0 and row0 + 8,
//      columns 8 i + col0 + {0, 1}; s[4 i + 2 h + e] is row row0 + 8 h, column 8 i + col0 + e) ---

// Row maxima of one block's raw scores, in the base-2 domain (scale_log2 > 0, so scaling the
// maximum equals the maximum of the scaled scores, rounding included). When `masked`, the scores
// of tokens at or past the row's key bound (relative to the block) are first replaced by -inf.
// The scores themselves stay unscaled: exponentiate() folds the scale into one FFMA.
__device__ __forceinline__ void mask_block_max(float (&s)[kBlockN / 2], float scale_log2,
                                               bool masked, const int (&bound)[2], int col0,
                                               float (&block_max)[2]) {
  if (masked) {  // uniform per block: most blocks skip the per-score compares entirely
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int i = 0; i < kBlockN / 8; ++i) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& v = s[4 * i + 2 * h + e];
          v = 8 * i + col0 + e < bound[h] ? v : -INFINITY;
        }
      }
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    // Two interleaved chains: the maximum is not a 32-long dependent sequence.
    float m0 = -INFINITY, m1 = -INFINITY;
#pragma unroll
    for (int i = 0; i < kBlockN / 8; i += 2) {
      m0 = fmaxf(m0, fmaxf(s[4 * i + 2 * h], s[4 * i + 2 * h + 1]));
      m1 = fmaxf(m1, fmaxf(s[4 * (i + 1) + 2 * h], s[4 * (i + 1) + 2 * h + 1]));
    }
    float m = fmaxf(m0, m1);
    m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, 1));
    m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, 2));
    block_max[h] = m * scale_log2;
  }
}

// New running max from the old one and a block's maxima: returns the exponent base (0 instead of
// -inf while no key was visible, so that -inf - -inf never happens) and the factor for the old
// accumulators (exactly 1 when the max did not move, which lets scale_rows skip the work).
__device__ __forceinline__ void update_max(float (&row_max)[2], const float (&block_max)[2],
                                           float (&base)[2], float (&rescale)[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float new_max = fmaxf(row_max[h], block_max[h]);
    base[h] = new_max == -INFINITY ? 0.0f : new_max;
    rescale[h] = row_max[h] == base[h] ? 1.0f : fast_exp2(row_max[h] - base[h]);
    row_max[h] = new_max;
  }
}

// p = 2^(s * scale_log2 - base) in place (raw scores in, one FFMA and one MUFU each); adds this
// thread's part of the row sums to row_sum (scaled first).
__device__ __forceinline__ void exponentiate(float (&s)[kBlockN / 2], float scale_log2,
                                             const float (&base)[2], const float (&rescale)[2],
                                             float (&row_sum)[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float neg_base = -base[h];
    float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
    for (int i = 0; i < kBlockN / 8; ++i) {
      float& v0 = s[4 * i + 2 * h];
      float& v1 = s[4 * i + 2 * h + 1];
      v0 = fast_exp2(fmaf(v0, scale_log2, neg_base));
      v1 = fast_exp2(fmaf(v1, scale_log2, neg_base));
      sum0 += v0;
      sum1 += v1;
    }
    row_sum[h] = row_sum[h] * rescale[h] + (sum0 + sum1);
  }
}

// Skipped when every factor of the warp is exactly 1 (the running max did not move, the usual
// case once a request's first blocks are done): 128 multiplies between two wgmmas saved.
__device__ __forceinline__ void scale_rows(float (&o)[kHalfV / 2], const float (&f)[2]) {
  if (!__any_sync(0xffffffff, f[0] != 1.0f || f[1] != 1.0f)) return;
#pragma unroll
  for (int i = 0; i < kHalfV / 8; ++i) {
    o[4 * i + 0] *= f[0];
    o[4 * i + 1] *= f[0];
    o[4 * i + 2] *= f[1];
    o[4 * i + 3] *= f[1];
  }
}

// P (accumulator layout, fp32) -> 16-bit pairs. Pair n holds s[2n], s[2n+1]
// (row row0 + 8 (n % 2), columns 8 (n / 2) + col0 + {0, 1}). These are exactly the registers of
// the wgmma A fragments: k-step kk (tokens 16 kk .. 16 kk + 15) is pairs 4 kk .. 4 kk + 3.
template <typename Ops>
__device__ __forceinline__ void pack_p(const float (&s)[kBlockN / 2], uint32_t (&p)[kBlockN / 4]) {
#pragma unroll
  for (int n = 0; n < kBlockN / 4; ++n) p[n] = Ops::pack(s[2 * n], s[2 * n + 1]);
}

// Writes packed P into a 64 x 64 K-major tile with the 128-byte swizzle (the wgmma A layout).
__device__ __forceinline__ void store_p(uint32_t p_base, const uint32_t (&p)[kBlockN / 4],
                                        int row0, int col0) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = row0 + 8 * h;
    // Swizzled address of (row, 8 i + col0) is row_base ^ (i << 4) (see swizzled_offset).
    uint32_t row_base = p_base + row * 128 + ((row & 7) << 4) + col0 * 2;
    asm volatile("" : "+r"(row_base));
#pragma unroll
    for (int i = 0; i < kBlockN / 8; ++i) {
      asm volatile("st.shared.b32 [%0], %1;" ::"r"(row_base ^ (i << 4)), "r"(p[2 * i + h])
                   : "memory");
    }
  }
}

// Zeroes rows [valid_tokens, 64) of the 4 V tiles of warpgroup w's half of a K buffer (tokens
// past the end of a request's last page), then makes the zeros visible to this warpgroup's wgmma.
template <typename Element>
__device__ __forceinline__ void zero_tail_v_rows(Element (&buffer)[kNumTilesQK][kBlockN * kTileDim],
                                                 int w, int valid_tokens, int wg_thread) {
  const int first_tile = w * kTilesLeft;
  const NamedBarrier warpgroup_barrier =
      w == 0 ? NamedBarrier::kWarpgroup0 : NamedBarrier::kWarpgroup1;
  const int rows = kBlockN - valid_tokens;
  for (int i = wg_thread; i < kTilesLeft * rows * 8; i += 128) {
    const int tile = first_tile + i / (rows * 8);
    const int rem = i % (rows * 8);
    uint8_t* dst = reinterpret_cast<uint8_t*>(buffer[tile]) + (valid_tokens + rem / 8) * 128 +
                   (rem % 8) * 16;
    *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
  }
  fence_proxy_async();
  named_barrier_sync(warpgroup_barrier, 128);
}

// O += P V[:, this warpgroup's half] for the warpgroup's own block (P in registers), waited for:
// the block's tail V rows are zeroed first when it is a request's partial last page.
template <typename Ops, typename Element>
__device__ __forceinline__ void own_block_pv(uint32_t (&p_frag)[kBlockN / 4], uint32_t v_base,
                                             float (&o)[kHalfV / 2],
                                             Element (&buffer)[kNumTilesQK][kBlockN * kTileDim],
                                             int warpgroup, int valid_tokens, int wg_thread) {
  if (valid_tokens < kBlockN) zero_tail_v_rows(buffer, warpgroup, valid_tokens, wg_thread);
  fence_accumulator(o);
  fence_fragment(p_frag);
  cute::warpgroup_arrive();
  issue_pv_regs<Ops>(p_frag, v_base, o);
  cute::warpgroup_commit_batch();
  cute::warpgroup_wait<0>();
  fence_accumulator(o);
  fence_fragment(p_frag);
}

// O += P V[:, this warpgroup's half] for the other warpgroup's block (P in shared memory at
// p_base), issued and not waited for. The half's four V tiles (from kFirstTile) must be observed
// complete by this warpgroup first (probed: an earlier probe_v_tiles result), and the block's
// tail V rows are zeroed when it is a request's partial last page. ready / issued: trace events.
template <typename Ops, int kFirstTile, typename Element>
__device__ __forceinline__ void issue_other_block_pv(
    uint32_t probed, uint64_t* tile_full, uint32_t phase,
    Element (&buffer)[kNumTilesQK][kBlockN * kTileDim], int warpgroup, int valid_tokens,
    int wg_thread, uint32_t p_base, uint32_t v_base, float (&o)[kHalfV / 2], Trace& trace,
    int ready, int issued) {
  wait_v_tiles<kFirstTile>(probed, tile_full, phase);
  if (valid_tokens < kBlockN) zero_tail_v_rows(buffer, warpgroup, valid_tokens, wg_thread);
  trace(ready);
  fence_accumulator(o);
  cute::warpgroup_arrive();
  issue_pv_smem<Ops>(p_base, v_base, o);
  cute::warpgroup_commit_batch();
  trace(issued);
}

// Epilogue through shared memory: both warpgroups write their normalised output rows (fp32
// partials when `partial`, else 16-bit output) at `stage` (row pitch kStagePitch*, see config.h),
// then threads 0..63 copy one row each to global memory with cp.async.bulk and wait for their
// copy to have read shared memory. The stage must be idle: no wgmma reading it and no TMA load in
// flight into it. Output rows need params.out_rows_bulk (16-byte aligned). Used at a CTA's last
// request (the K buffers, then idle) and at a transition to the next request (see attend).
template <typename Ops, typename Element>
__device__ __forceinline__ void store_rows_staged(const Params& params,
                                                  const float (&o)[kHalfV / 2],
                                                  const float (&row_inv)[2], bool partial,
                                                  uint64_t partial_policy, int first_row, int slot,
                                                  int req, int kv_head, int warpgroup, int row0,
                                                  int col0, uint32_t stage) {
  const int dim0 = warpgroup * kHalfV + col0;
  // This thread's normalised pairs (dims dim0 + 8 i + {0, 1} of rows row0 and row0 + 8), each
  // stored by store(shared address of the pair, first, second) into rows of `pitch` bytes with
  // `dim_bytes` bytes per dim.
  auto stage_pairs = [&](int pitch, int dim_bytes, auto store) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint32_t row_addr = stage + (row0 + 8 * h) * pitch + dim0 * dim_bytes;
      const float inv = row_inv[h];
#pragma unroll
      for (int i = 0; i < kHalfV / 8; ++i)
        store(row_addr + 8 * dim_bytes * i, o[4 * i + 2 * h] * inv, o[4 * i + 2 * h + 1] * inv);
    }
  };
  if (partial) {
    stage_pairs(kStagePitchF32, 4, [](uint32_t addr, float a, float b) {
      asm volatile("st.shared.v2.f32 [%0], {%1, %2};" ::"r"(addr), "f"(a), "f"(b) : "memory");
    });
  } else {
    stage_pairs(kStagePitch16, 2, [](uint32_t addr, float a, float b) {
      asm volatile("st.shared.b32 [%0], %1;" ::"r"(addr), "r"(Ops::pack(a, b)) : "memory");
    });
  }
  fence_proxy_async();  // the bulk copies read shared memory through the async proxy
  __syncthreads();
  const int r = threadIdx.x;
  const int global_row = first_row + r;
  if (r < kBlockM && global_row < params.rows_per_kv_head) {
    const RowPosition pos = row_position(params, kv_head, global_row);
    if (partial) {
      const float* dst =
          params.o_partial +
          ((static_cast<int64_t>(slot) * params.seqlen_q + pos.sq) * params.num_heads_q +
           pos.head) * kHeadDimV;
      asm volatile(
          "cp.async.bulk.global.shared::cta.bulk_group.L2::cache_hint [%0], [%1], %2, %3;"
          ::"l"(dst), "r"(stage + r * kStagePitchF32), "n"(kHeadDimV * 4), "l"(partial_policy)
          : "memory");
    } else {
      const Element* dst = static_cast<const Element*>(params.out) + req * params.out_batch_stride +
                           pos.sq * params.out_seq_stride + pos.head * params.out_head_stride;
      asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;" ::"l"(dst),
                   "r"(stage + r * kStagePitch16), "n"(kHeadDimV * 2)
                   : "memory");
    }
    asm volatile("cp.async.bulk.commit_group;" ::: "memory");
    asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
  }
}

// ---- both warpgroups: see the comment at the top of this file ----------------------------------

template <typename Element>
__device__ __forceinline__ void attend(const Params& params, const mla::detail::PartMetadata& part,
                                       const CUtensorMap& kv_map, const CUtensorMap& q_map,
                                       SharedStorage<Element>& smem, int m_block, int kv_head,
                                       int warpgroup, int wg_thread) {
  using Ops = MmaOps<Element>;
  const int warp = wg_thread / 32;
  const int lane = wg_thread % 32;
  const int row0 = warp * 16 + lane / 4;
  const int col0 = (lane % 4) * 2;
  const int first_row = m_block * kBlockM;
  const int other = warpgroup ^ 1;
  const bool issuer = wg_thread == 0;  // this warpgroup's TMA-issuing thread
  const uint64_t kv_policy = read_once_l2_policy(part);

  float o[kHalfV / 2];        // 64 x 256 fp32 output slice of this warpgroup: 128 per thread
  float s[kBlockN / 2];       // scores, then P, of this warpgroup's block of the pair
  uint32_t p_frag[kBlockN / 4];  // P as 16-bit wgmma A fragments
  uint32_t q_rope[kQRopeRegs];   // Q's rope tile as wgmma A fragments, per request
#pragma unroll
  for (int i = 0; i < kHalfV / 2; ++i) o[i] = 0.0f;
  // Per-row softmax state: running max in the base-2 scaled domain (kept equal in both
  // warpgroups through the mailboxes) and this thread's partial sum over the columns of the
  // blocks whose softmax this warpgroup computed.
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};

  const uint32_t q_base = smem_addr(smem.q[0]);
  const uint32_t k_base[kNumBuffers] = {smem_addr(smem.k[0][0]), smem_addr(smem.k[1][0])};
  const uint32_t p0_base = smem_addr(smem.k[0][kNumTilesQK - 1]);
  const uint32_t p1_base = smem_addr(smem.p1);
  // This warpgroup's V half of each buffer.
  const uint32_t v_base[kNumBuffers] = {k_base[0] + warpgroup * kTilesLeft * kTileBytes,
                                        k_base[1] + warpgroup * kTilesLeft * kTileBytes};
  uint32_t k_phase[kNumBuffers] = {0, 0};
  uint32_t q_phase = 0;
  int request_parity = 0;
  Trace trace(warpgroup, wg_thread);
  trace(kEvKernelStart);

  // Two-piece requests (metadata.h): this CTA's merge flag. When the CTA's first request is piece
  // 1 of a two-piece request, the flag is set once that piece's partial is written (publish
  // pending until then); the CTA that computes piece 0 (the previous part's, same m-block and kv
  // head) waits for it and merges.
  // (Recomputed where used from the kernel parameters: no registers held across the loop.)
  auto my_merge_flag = [&]() {
    return params.merge_flags + (part_index() * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  };
  bool publish_pending =
      params.merge_flags != nullptr && part.begin_block > 0 &&
      params.split_offsets[part.begin_req + 1] - params.split_offsets[part.begin_req] == 2;

  if (threadIdx.x == 0) {
    const int first_req = next_nonempty_request(params, part, part.begin_req);
    if (first_req >= 0)
      issue_request_start(params, part, kv_map, q_map, smem, m_block, kv_head, first_req,
                          kv_policy, kLoadAll);
  }

  for (int req = part.begin_req; req <= part.end_req; ++req) {
    const int seqlen = params.cache_seqlens[req];
    const RequestRange range = request_range(part, req, seqlen);
    if (range.first_block >= range.end_block) continue;
    const int32_t* pages = params.block_table + req * params.block_table_batch_stride;
    if (publish_pending && req != part.begin_req) {
      // Piece 1 was the previous request, its rows staged and copied out at the transition: the
      // copies' writes complete while this request's Q and first blocks are on their way.
      publish_merge_piece(my_merge_flag());
      publish_pending = false;
    }

    if (params.q_tma) {
      mbarrier_wait(&smem.q_full, q_phase);
      q_phase ^= 1;
    } else {
      // Q of this request, loaded by both warpgroups: 64 rows, 18 chunks of 16 bytes per thread
      // issued 9 at a time. The previous request's S products all completed before its
      // kSegmentEnd barrier, so Q can be overwritten.
      load_q_rows<kBlockM, kThreads, 9>(params, reinterpret_cast<uint8_t*>(smem.q[0]), first_row,
                                        kv_head, req, threadIdx.x);
      named_barrier_sync(NamedBarrier::kQReady, kThreads);
    }
    load_q_rope_fragment(q_base + (kNumTilesQK - 1) * kTileBytes, row0, col0, q_rope);
    trace(kEvRequestStart);

    // Causal: query token sq of this request sees keys [0, seqlen - s_q + sq]. mask_start is the
    // smallest bound over the CTA's rows: blocks ending at or before it need no mask.
    int key_bound[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int sq = (first_row + row0 + 8 * h) / params.heads_per_kv;
      key_bound[h] = params.causal ? min(seqlen, seqlen - params.seqlen_q + sq + 1) : seqlen;
    }
    const int mask_start =
        params.causal ? min(seqlen, seqlen - params.seqlen_q + first_row / params.heads_per_kv + 1)
                      : seqlen;

    // S of the first pair: WG0 block A (buffer 0), WG1 block B (buffer 1), if there is one.
    const int first = range.first_block;
    const int end = range.end_block;
    if (warpgroup == 0 || first + 1 < end) {
      const int buf = warpgroup;
      // Selects, not array indexing, so the small arrays stay in registers.
      const uint32_t phase = buf == 0 ? k_phase[0] : k_phase[1];
#pragma unroll
      for (int i = 0; i < kBlockN / 2; ++i) s[i] = 0.0f;
      fence_accumulator(s);
      issue_qk<Ops, 0, kNumTilesQK>(q_base, buf == 0 ? k_base[0] : k_base[1], smem.k_full[buf],
                                    phase, q_rope, s, trace);
      cute::warpgroup_wait<0>();
      fence_accumulator(s);
      trace(kEvFirstS);
    }

    for (int a = first; a < end; a += 2) {
      const int b = a + 1;
      const bool has_b = b < end;
      const bool next_a = a + 2 < end;
      const bool next_b = b + 2 < end;
      // Page numbers for the loads this warpgroup issues later in the pair, read early.
      int next_page_a = 0, next_page_b = 0;
      if (issuer) {
        if (next_a) next_page_a = __ldg(pages + a + 2);
        if (next_b) next_page_b = __ldg(pages + b + 2);
      }
      float block_max[2], base[2], alpha[2];

      if (warpgroup == 0) {
        // ---- softmax of A: running max m -> m'; m' and P_A published for WG1 ----
        int bound[2] = {key_bound[0] - a * kBlockN, key_bound[1] - a * kBlockN};
        mask_block_max(s, params.scale_log2, (a + 1) * kBlockN > mask_start, bound, col0,
                       block_max);
        update_max(row_max, block_max, base, alpha);
        if (lane % 4 == 0) {
          smem.mailbox_a[row0] = row_max[0];
          smem.mailbox_a[row0 + 8] = row_max[1];
        }
        exponentiate(s, params.scale_log2, base, alpha, row_sum);
        pack_p<Ops>(s, p_frag);
        // P_A goes into buffer 0's tile 8: the rope dims of A, dead since S_A completed.
        store_p(p0_base, p_frag, row0, col0);
        fence_proxy_async();
        trace(kEvA_SoftmaxDone);
        // Full barrier (see kScaleB below for why not bar.arrive). WG1 is usually already
        // waiting here with S_B done; if it is not, its S_B is ahead of P_A V_A,L in the tensor
        // pipe anyway.
        named_barrier_sync(NamedBarrier::kScaleA, kThreads);
        trace(kEvA_ScaleA);
        // WG1 finished S_B before kScaleA: buffer 1's V tiles have landed (used after kScaleB).
        const uint32_t b_left_probed = has_b ? probe_v_tiles<0>(smem.k_full[1], k_phase[1]) : 1;
        scale_rows(o, alpha);

        // ---- O_L = alpha O_L + P_A V_A,L ----
        own_block_pv<Ops>(p_frag, v_base[0], o, smem.k[0], 0, seqlen - a * kBlockN, wg_thread);
        trace(kEvA_PvAL);
        if (issuer && next_a) issue_k_half<0>(kv_map, smem, 0, kv_head, next_page_a, kv_policy);

        if (has_b) {
          // ---- m'' and P_B from WG1: O_L = beta O_L + P_B V_B,L ----
          named_barrier_sync(NamedBarrier::kScaleB, kThreads);
          trace(kEvA_ScaleB);
          const float max_b[2] = {smem.mailbox_b[row0], smem.mailbox_b[row0 + 8]};
          float beta[2];
          update_max(row_max, max_b, base, beta);
          scale_rows(o, beta);
          row_sum[0] *= beta[0];
          row_sum[1] *= beta[1];
          // V_B,L landed long ago (WG1 computed S_B from it); the wait makes the TMA bytes
          // visible here.
          issue_other_block_pv<Ops, 0>(b_left_probed, smem.k_full[1], k_phase[1], smem.k[1], 0,
                                       seqlen - b * kBlockN, wg_thread, p1_base, v_base[1], o,
                                       trace, kEvA_PvBLReady, kEvA_PvBLIssued);
        }
        k_phase[0] ^= 1;
        if (has_b) k_phase[1] ^= 1;

        if (next_a) {
          // ---- S of the next A, after P_B V_B,L (overlapping WG1's P_B V_B,R) ----
#pragma unroll
          for (int i = 0; i < kBlockN / 2; ++i) s[i] = 0.0f;
          fence_accumulator(s);
          if (has_b) {
            // P_B V_B,L done: buffer 1's left half is free. Its next load is requested before S
            // of the next A is issued, not after S's first tile groups: WG1 starts S of the next
            // B on these tiles right after its P_B V_B,R, so their latency is what it waits for.
            // S of the next A then overlaps WG1's P_B V_B,R rather than P_B V_B,L (A/B on the
            // H200: C, B and H 1-5% shorter, the others unchanged; docs/PERF.md).
            cute::warpgroup_wait<0>();
            trace(kEvA_PvBLDone);
            if (issuer && next_b) issue_k_half<0>(kv_map, smem, 1, kv_head, next_page_b, kv_policy);
          }
          issue_qk<Ops, 0, kNumTilesQK>(q_base, k_base[0], smem.k_full[0], k_phase[0], q_rope, s,
                                        trace);
        }
        cute::warpgroup_wait<0>();
        fence_accumulator(s);
        fence_accumulator(o);
        trace(kEvA_NextS);
      } else {
        // ---- WG1: m' from WG0; the softmax of B first, while WG0's P_A V_A,L runs ----
        named_barrier_sync(NamedBarrier::kScaleA, kThreads);
        trace(kEvB_ScaleA);
        // WG0 finished S_A before kScaleA: buffer 0's V tiles have landed (used after softmax B).
        const uint32_t a_right_probed = probe_v_tiles<kTilesLeft>(smem.k_full[0], k_phase[0]);
        const float max_a[2] = {smem.mailbox_a[row0], smem.mailbox_a[row0 + 8]};
        update_max(row_max, max_a, base, alpha);
        float beta[2] = {1.0f, 1.0f};
        if (has_b) {
          // Softmax of B against m': m'', published with P_B at kScaleB. Doing it before issuing
          // P_A V_A,R (not under it) lets it overlap WG0's P_A V_A,L: a wgmma issued behind the
          // other warpgroup's in the tensor pipe stalls its issuing warp, which would otherwise
          // push the whole softmax back by one P V.
          int bound[2] = {key_bound[0] - b * kBlockN, key_bound[1] - b * kBlockN};
          mask_block_max(s, params.scale_log2, (b + 1) * kBlockN > mask_start, bound, col0,
                         block_max);
          update_max(row_max, block_max, base, beta);
          if (lane % 4 == 0) {
            smem.mailbox_b[row0] = row_max[0];
            smem.mailbox_b[row0 + 8] = row_max[1];
          }
          const float rescale[2] = {alpha[0] * beta[0], alpha[1] * beta[1]};
          exponentiate(s, params.scale_log2, base, rescale, row_sum);
          pack_p<Ops>(s, p_frag);
          store_p(p1_base, p_frag, row0, col0);
          fence_proxy_async();
          trace(kEvB_SoftmaxDone);
        } else {
          row_sum[0] *= alpha[0];
          row_sum[1] *= alpha[1];
        }

        // ---- O_R = alpha O_R + P_A V_A,R ----
        scale_rows(o, alpha);
        issue_other_block_pv<Ops, kTilesLeft>(a_right_probed, smem.k_full[0], k_phase[0], smem.k[0],
                                              1, seqlen - a * kBlockN, wg_thread, p0_base,
                                              v_base[0], o, trace, kEvB_PvARReady, kEvB_PvARIssued);

        if (has_b) {
          // A full barrier, not a one-way bar.arrive: with bar.arrive hand-offs,
          // compute-sanitizer racecheck reported RAW hazards on shared memory ordered by later
          // full barriers. WG0 is usually waiting here already (its P_A V_A,L is shorter than
          // the softmax of B).
          named_barrier_sync(NamedBarrier::kScaleB, kThreads);
          trace(kEvB_ScaleB);

          cute::warpgroup_wait<0>();  // P_A V_A,R done: buffer 0's right half (and P_A) is free
          fence_accumulator(o);
          trace(kEvB_PvARDone);
          if (issuer && next_a) issue_k_half<1>(kv_map, smem, 0, kv_head, next_page_a, kv_policy);

          // ---- O_R = beta O_R + P_B V_B,R; then buffer 1's right half is free ----
          scale_rows(o, beta);
          own_block_pv<Ops>(p_frag, v_base[1], o, smem.k[1], 1, seqlen - b * kBlockN, wg_thread);
          trace(kEvB_PvBR);
          if (issuer && next_b) issue_k_half<1>(kv_map, smem, 1, kv_head, next_page_b, kv_policy);
        } else {
          cute::warpgroup_wait<0>();
          fence_accumulator(o);
          if (issuer && next_a) issue_k_half<1>(kv_map, smem, 0, kv_head, next_page_a, kv_policy);
        }
        k_phase[0] ^= 1;
        if (has_b) k_phase[1] ^= 1;

        if (next_b) {
          // ---- S of the next B: left half first. WG0 requested it when its P_B V_B,L completed,
          // which is before WG1's P_B V_B,R (queued behind P_A V_A,R) freed the right half, just
          // requested above: the left tiles land first.
#pragma unroll
          for (int i = 0; i < kBlockN / 2; ++i) s[i] = 0.0f;
          fence_accumulator(s);
          issue_qk<Ops, 0, kTilesLeft>(q_base, k_base[1], smem.k_full[1], k_phase[1], q_rope, s,
                                       trace);
          issue_qk<Ops, kTilesLeft, kNumTilesQK>(q_base, k_base[1], smem.k_full[1], k_phase[1],
                                                 q_rope, s, trace);
          cute::warpgroup_wait<0>();
          fence_accumulator(s);
          trace(kEvB_NextS);
        }
      }
    }

    // ---- end of this request's blocks: exchange row sums; start the next request's loads ----
    float total_sum[2], row_inv[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float sum = row_sum[h];
      sum += __shfl_xor_sync(0xffffffff, sum, 1);
      sum += __shfl_xor_sync(0xffffffff, sum, 2);
      total_sum[h] = sum;
      // Two slots by request parity: a warpgroup may write the next request's sums before the
      // other has read these, but not before both passed the next kSegmentEnd.
      if (lane % 4 == 0) smem.row_sums[request_parity][warpgroup][row0 + 8 * h] = sum;
    }
    trace(kEvSegmentArrive);
    named_barrier_sync(NamedBarrier::kSegmentEnd, kThreads);
    trace(kEvSegmentEnd);
    const int split_begin = params.split_offsets[req];
    const int num_splits = params.split_offsets[req + 1] - split_begin;
    const int slot = req == part.begin_req ? part.begin_slot : split_begin;
    const bool partial = num_splits != 1;
    const uint64_t partial_policy = l2_partial_policy(gridDim.x == 1);  // one m-block
    // Rows can leave through shared memory and bulk copies (whole lines per row) rather than as
    // stores from the accumulator layout (8 rows x 16-32 bytes per instruction, about 6-8 bytes
    // per clock per SM: 8350 clocks for a CTA's 64 KiB of 16-bit rows in the trace of case C,
    // with the tensor cores idle meanwhile).
    const bool can_stage = partial || params.out_rows_bulk;
    // All wgmmas of this request completed before the barrier: Q and both K buffers are free.
    // At a transition to a next request, the rows are staged in the K buffer(s) they fit in
    // (16-bit rows: buffer 1; fp32 partials: both), and the loads into those buffers are
    // requested once the bulk copies have read them; Q and the other block go at once. (A/B in
    // whole mla-bench runs: B 0.7% and H 1.2% shorter, the other cases unchanged; docs/PERF.md.)
    const int next_req = next_nonempty_request(params, part, req + 1);
    const bool staged_transition = next_req >= 0 && can_stage;
    const unsigned deferred_loads =
        !staged_transition ? 0u : (partial ? (kLoadA | kLoadB) : kLoadB);
    if (threadIdx.x == 0 && next_req >= 0)
      issue_request_start(params, part, kv_map, q_map, smem, m_block, kv_head, next_req,
                          kv_policy, kLoadAll & ~deferred_loads);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      total_sum[h] += smem.row_sums[request_parity][other][row0 + 8 * h];
      row_inv[h] = total_sum[h] > 0.0f ? 1.0f / total_sum[h] : 0.0f;
    }
    request_parity ^= 1;

    // This thread's two rows (row0, row0 + 8): whether they exist, and where they go.
    bool row_valid[2];
    RowPosition pos[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int global_row = first_row + row0 + 8 * h;
      row_valid[h] = global_row < params.rows_per_kv_head;
      pos[h] = row_position(params, kv_head, global_row);
    }
    // lse = ln(sum) + max * ln(2) (row_max is in the base-2 scaled domain); -inf without a key.
    auto row_lse = [&](int h) {
      return total_sum[h] > 0.0f ? (row_max[h] + log2f(total_sum[h])) * 0.69314718055994530942f
                                 : -INFINITY;
    };

    // Piece 0 of a two-piece request (always its part's last request; piece 1 opens the next
    // part): merged here with piece 1's partial into the final rows, and combine skips the
    // request. Replaces writing this piece's 64 fp32 rows and combine reading both pieces back.
    const bool merge_here = params.merge_flags != nullptr && num_splits == 2 && slot == split_begin;
    bool write_partial = partial;
    if (merge_here) {
      const int piece1_slot = split_begin + 1;
      const int valid_rows = min(kBlockM, params.rows_per_kv_head - first_row);
      if (threadIdx.x == 0) {
        // The next part's CTA of this m-block and kv head computed piece 1.
        acquire_merge_piece(my_merge_flag() + gridDim.x * gridDim.y);
        mbarrier_arrive_expect_tx(&smem.q_full, valid_rows * kHeadDimV * 4);
      }
      __syncthreads();  // everyone's reads of piece 1 after thread 0's acquire
      // Piece 1's rows into the K buffers (idle: nothing follows this request), one bulk copy
      // per row by threads 0..63, pitch as the staged fp32 rows so that the accumulator-layout
      // reads below are free of bank conflicts.
      if (static_cast<int>(threadIdx.x) < valid_rows) {
        const RowPosition p = row_position(params, kv_head, first_row + threadIdx.x);
        asm volatile("fence.proxy.async.global;" ::: "memory");
        bulk_load(k_base[0] + threadIdx.x * kStagePitchF32,
                  params.o_partial + ((static_cast<int64_t>(piece1_slot) * params.seqlen_q + p.sq) *
                                          params.num_heads_q + p.head) * kHeadDimV,
                  kHeadDimV * 4, &smem.q_full);
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float lse1 =
            row_valid[h]
                ? __ldcg(params.lse_partial +
                         (static_cast<int64_t>(piece1_slot) * params.seqlen_q + pos[h].sq) *
                             params.num_heads_q + pos[h].head)
                : -INFINITY;
        // As combine: pieces without a visible key (lse -inf) weigh nothing; the merged lse is
        // stored here (+inf when neither piece saw a key).
        const float lse0 = row_lse(h);
        const float m = fmaxf(lse0, lse1);
        float w0 = 0.0f, w1 = 0.0f, merged_lse = INFINITY;
        if (m != -INFINITY) {
          const float e0 = expf(lse0 - m), e1 = expf(lse1 - m);
          const float sum = e0 + e1;
          merged_lse = m + logf(sum);
          w0 = e0 / sum * row_inv[h];  // o holds this piece unnormalised
          w1 = e1 / sum;
        }
        if (row_valid[h] && warpgroup == 0 && lane % 4 == 0) {
          const int64_t row = static_cast<int64_t>(req) * params.num_heads_q + pos[h].head;
          params.lse[row * params.seqlen_q + pos[h].sq] = merged_lse;
        }
        row_inv[h] = w0;
        if (h == 0) row_sum[0] = w1; else row_sum[1] = w1;  // row_sum is free now: piece 1's weight
      }
      mbarrier_wait(&smem.q_full, q_phase);
      q_phase ^= 1;
      const uint32_t piece1_base = k_base[0] + warpgroup * kHalfV * 4 + col0 * 4;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint32_t row_addr = piece1_base + (row0 + 8 * h) * kStagePitchF32;
#pragma unroll
        for (int i = 0; i < kHalfV / 8; ++i) {
          float a, b;
          asm volatile("ld.shared.v2.f32 {%0, %1}, [%2];" : "=f"(a), "=f"(b) : "r"(row_addr + 32 * i));
          o[4 * i + 2 * h] = o[4 * i + 2 * h] * row_inv[h] + a * row_sum[h];
          o[4 * i + 2 * h + 1] = o[4 * i + 2 * h + 1] * row_inv[h] + b * row_sum[h];
        }
      }
      row_inv[0] = row_inv[1] = 1.0f;  // o is final now
      write_partial = false;
    }

    if (staged_transition) {
      store_rows_staged<Ops, Element>(params, o, row_inv, partial, partial_policy, first_row, slot,
                                      req, kv_head, warpgroup, row0, col0,
                                      partial ? k_base[0] : k_base[1]);
      // Threads 0..63 each waited for their row's copy to read the stage; then the deferred
      // loads may overwrite it. The other threads go on to the next request, where they wait
      // for its Q and tiles as usual.
      if (threadIdx.x < kBlockM) {
        named_barrier_sync(NamedBarrier::kStageRead, kBlockM);
        if (threadIdx.x == 0)
          issue_request_start(params, part, kv_map, q_map, smem, m_block, kv_head, next_req,
                              kv_policy, deferred_loads);
      }
    } else if (merge_here && params.out_rows_bulk) {
      // The merged rows, staged in Q's buffer (the K buffers hold piece 1).
      store_rows_staged<Ops, Element>(params, o, row_inv, false, partial_policy, first_row, slot,
                                      req, kv_head, warpgroup, row0, col0, q_base);
    } else if (!merge_here && next_req < 0 && gridDim.x == 1 && can_stage) {
      // The part's last request with one m-block: nothing is in flight into the K buffers, so
      // the rows are staged there. With several m-blocks (C, E, G), where all CTAs write their
      // last rows at about the same time, the A/B runs showed no gain (E's 17 MB of partials
      // written at once are bound by L2, not by the SM) and possibly a loss.
      store_rows_staged<Ops, Element>(params, o, row_inv, partial, partial_policy, first_row, slot,
                                      req, kv_head, warpgroup, row0, col0, k_base[0]);
    } else {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if (!row_valid[h]) continue;
        const float inv = row_inv[h];
        const int dim0 = warpgroup * kHalfV + col0;
        // Stores go through volatile asm so they stay in program order: left to itself the
        // compiler computes all 64 products before storing and spills.
        if (!write_partial) {
          Element* out = static_cast<Element*>(params.out) + req * params.out_batch_stride +
                         pos[h].sq * params.out_seq_stride + pos[h].head * params.out_head_stride +
                         dim0;
#pragma unroll
          for (int i = 0; i < kHalfV / 8; ++i) {
            const uint32_t packed = Ops::pack(o[4 * i + 2 * h] * inv, o[4 * i + 2 * h + 1] * inv);
            asm volatile("st.global.b32 [%0], %1;" ::"l"(out + 8 * i), "r"(packed) : "memory");
          }
        } else {
          float* out = params.o_partial +
                       ((static_cast<int64_t>(slot) * params.seqlen_q + pos[h].sq) *
                            params.num_heads_q + pos[h].head) * kHeadDimV + dim0;
#pragma unroll
          for (int i = 0; i < kHalfV / 8; ++i) {
            asm volatile("st.global.L2::cache_hint.v2.f32 [%0], {%1, %2}, %3;" ::"l"(out + 8 * i),
                         "f"(o[4 * i + 2 * h] * inv), "f"(o[4 * i + 2 * h + 1] * inv),
                         "l"(partial_policy)
                         : "memory");
          }
        }
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (merge_here || !row_valid[h] || warpgroup != 0 || lane % 4 != 0) continue;
      const float lse = row_lse(h);
      if (!partial) {
        const int64_t row = static_cast<int64_t>(req) * params.num_heads_q + pos[h].head;
        params.lse[row * params.seqlen_q + pos[h].sq] = lse == -INFINITY ? INFINITY : lse;
      } else {
        params.lse_partial[(static_cast<int64_t>(slot) * params.seqlen_q + pos[h].sq) *
                               params.num_heads_q + pos[h].head] = lse;
      }
    }
    trace(kEvEpilogueDone);
#pragma unroll
    for (int i = 0; i < kHalfV / 2; ++i) o[i] = 0.0f;
    row_max[0] = row_max[1] = -INFINITY;
    row_sum[0] = row_sum[1] = 0.0f;
  }
  // A part of one request that is piece 1 of a two-piece request: its rows were this CTA's last
  // epilogue.
  if (publish_pending) publish_merge_piece(my_merge_flag());
  // Piece 0 of a two-piece request that had no blocks to walk (cache_seqlens shorter than when
  // the schedule was made: results unspecified, but the hand-off must stay balanced): its merge
  // never ran, so the next part's flag is taken and cleared here, leaving every flag zero.
  if (params.merge_flags != nullptr && threadIdx.x == 0 &&
      (part.end_req != part.begin_req || part.begin_block == 0) &&
      params.split_offsets[part.end_req + 1] - params.split_offsets[part.end_req] == 2) {
    const RequestRange last = request_range(part, part.end_req, params.cache_seqlens[part.end_req]);
    if (last.first_block >= last.end_block)
      acquire_merge_piece(my_merge_flag() + gridDim.x * gridDim.y);
  }
}

// ---- the kernel ------------------------------------------------------------------------------

template <typename Element>
__global__ void __launch_bounds__(kThreads, 1)
    decode_dense_kernel(const __grid_constant__ Params params,
                        const __grid_constant__ CUtensorMap kv_map,
                        const __grid_constant__ CUtensorMap q_map) {
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  auto& smem = aligned_shared_storage<SharedStorage<Element>>(smem_raw);

  const int m_block = blockIdx.x;
  const int kv_head = blockIdx.y;
  const mla::detail::PartMetadata part = begin_part(params);
  if (part.num_blocks <= 0) return;

  if (threadIdx.x == 0) {
    for (int b = 0; b < kNumBuffers; ++b) {
      for (int t = 0; t < kNumTilesQK; ++t) mbarrier_init(&smem.k_full[b][t], 1);
    }
    mbarrier_init(&smem.q_full, 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  attend(params, part, kv_map, q_map, smem, m_block, kv_head, threadIdx.x / 128, threadIdx.x % 128);
}

}  // namespace mla::sm90::decode_dense
