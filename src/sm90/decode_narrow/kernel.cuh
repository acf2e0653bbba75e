// sm90 "narrow" MLA decode kernel: at most 16 query rows per kv head (bf16 / fp16 q and KV,
// fp32 accumulation).
//
// Same contract as decode_dense (its Params, the scheduler's parts, grid (1, h_kv, num_sm_parts),
// the same fp32 partials for combine); only the arithmetic is laid out differently. wgmma's M is
// at least 64, and decode_dense puts the query rows there: with 16 rows (h_q = 16, s_q = 1),
// three quarters of its tensor work and Q operand reads are padding, and a 64-token block costs
// as much as at h_q = 64. Here the products are transposed so the rows are wgmma's N (16):
//   S^T = K Q^T        64 tokens x 16 rows, A = K tile (K-major), B = Q tile (K-major),
//                      9 tiles x 4 wgmma 64x16x16
//   O^T += V^T P^T     512 dims x 16 rows: 8 accumulators of 64 dims, A = V tile read
//                      transposed (MN-major), B = P as [row][token] (K-major), 8 x 4 wgmma
// That cuts the shared-memory operand traffic of a block from about 290 KiB to 170 KiB and the
// tensor work by 4x, so the kernel is bound by HBM: a block is 72 KiB of KV and at the copy ceiling
// an SM receives one every ~2.3 us, against ~3000 clocks (~1.6 us) of work per block in one
// warpgroup (docs/decode_narrow.md).
//
// Threads: one consumer warpgroup (both products, the softmax, the epilogue) and one producer
// warp whose lane 0 walks the same blocks and issues the TMA. KV tiles (64 tokens x 64 dims,
// 8 KiB) go through a ring of kRingTiles slots, each with a full barrier (TMA bytes landed) and
// an empty barrier (one arrival per consumer warp once its wgmmas no longer read the slot). A
// block's rope tile is released right after S^T, its eight V tiles after O^T, so at least
// kRingTiles - 9 tiles are always in flight. Q of the next request is loaded into the other of
// two Q slots.
//
// Softmax over a block's 64 tokens is a reduction over the accumulator's M, i.e. across lanes
// (three shuffles) and across the four warps (shared memory and one named barrier per block).
// Accumulator layout (wgmma m64n16, f32): this thread holds tokens (or V dims) key0 and key0 + 8
// with key0 = 16 warp + lane / 4, and rows 8 j + col0 + e (j, e in {0, 1}, col0 = 2 (lane % 4));
// element s[4 j + 2 h + e] is token key0 + 8 h, row 8 j + col0 + e. The four rows of a thread are
// its "columns" c = 2 j + e below.
//
// Tokens past cache_seqlens in a request's last page may hold NaN: their scores are replaced by
// -inf (a select), and their V rows are zeroed in shared memory before O^T (0 * NaN = NaN).
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include <cute/arch/mma_sm90_gmma.hpp>

#include "sm90/decode_dense/device_ops.cuh"
#include "sm90/decode_dense/params.h"
#include "sm90/decode_narrow/config.h"

namespace mla::sm90::decode_narrow {

using decode_dense::desc_advance;
using decode_dense::fast_exp2;
using decode_dense::fence_accumulator;
using decode_dense::fence_proxy_async;
using decode_dense::gmma;
using decode_dense::make_desc_sw128;
using decode_dense::mbarrier_arrive;
using decode_dense::mbarrier_arrive_expect_tx;
using decode_dense::mbarrier_init;
using decode_dense::mbarrier_probe;
using decode_dense::load_q_rows;
using decode_dense::mbarrier_wait;
using decode_dense::MmaOps;
using decode_dense::aligned_shared_storage;
using decode_dense::begin_part;
using decode_dense::Params;
using decode_dense::request_range;
using decode_dense::RequestRange;
using decode_dense::smem_addr;
using decode_dense::swizzled_offset;
using decode_dense::read_once_l2_policy;
using decode_dense::tma_load_4d;
using decode_dense::Trace;
using namespace decode_dense::trace_events;

static_assert(kRows == 16, "the wgmma shapes below are m64n16k16");

template <typename Element>
struct SharedStorage {
  alignas(1024) Element ring[kRingTiles][kBlockN * kTileDim];        // 144 KiB of KV tiles
  alignas(1024) Element q[kNumQSlots][kNumTilesQK][kRows * kTileDim];  // 2 x 18 KiB
  alignas(1024) Element p[kRows * kBlockN];  // P of one block, [row][token], 128-byte swizzle
  float column_max[kConsumerWarps][kRows];   // per-warp maxima of a block's scores per row
  float column_sum[kConsumerWarps][kRows];   // per-warp row sums at a request's end
  // Per request (by Q slot): where each row's output and lse go (0 for padding rows), computed
  // once at the request's start instead of per store in the epilogue.
  uint64_t row_out[kNumQSlots][kRows];
  uint64_t row_lse[kNumQSlots][kRows];
  alignas(8) uint64_t tile_full[kRingTiles];
  uint64_t tile_empty[kRingTiles];
  uint64_t q_full[kNumQSlots];
  uint64_t q_empty[kNumQSlots];
};

// Ring slot and phase parity of the pos-th KV tile of the part (both sides count tiles alike).
__device__ __forceinline__ int ring_slot(int pos) { return pos % kRingTiles; }
__device__ __forceinline__ uint32_t ring_phase(int pos) { return (pos / kRingTiles) & 1; }

// ---- producer: lane 0 of the last warp ---------------------------------------------------------

template <typename Element>
__device__ void produce(const Params& params, const mla::detail::PartMetadata& part,
                        const CUtensorMap& kv_map, const CUtensorMap& q_map,
                        SharedStorage<Element>& smem, int kv_head) {
  Trace trace(1, 0);
  trace(kEvN_ProducerStart);
  int pos = 0;       // ring position of the next KV tile
  int q_count = 0;   // Q loads so far (non-empty requests, see below): Q slot q_count % 2
  const uint64_t l2_policy = read_once_l2_policy(part);
  auto issue_q = [&](int req) {
    if (!params.q_tma) return;
    const int slot = q_count % kNumQSlots;
    const int use = q_count / kNumQSlots;
    if (use > 0) mbarrier_wait(&smem.q_empty[slot], (use - 1) & 1);
    mbarrier_arrive_expect_tx(&smem.q_full[slot], kNumTilesQK * kQTileBytes);
#pragma unroll
    for (int t = 0; t < kNumTilesQK; ++t) {
      tma_load_4d(&q_map, &smem.q_full[slot], smem.q[slot][t], t * kTileDim,
                  kv_head * params.heads_per_kv, 0, req, l2_policy);
    }
  };
  for (int req = part.begin_req; req <= part.end_req; ++req) {
    const int32_t* pages = params.block_table + req * params.block_table_batch_stride;
    // The part's first request is never empty (the scheduler starts a part at one of its
    // blocks), so its Q and first page id are requested before its length arrives: at kernel
    // start every step of this chain is a DRAM round trip.
    const bool first_req = req == part.begin_req;
    int page = 0;
    if (first_req) {
      issue_q(req);
      page = __ldg(pages + part.begin_block);
    }
    const RequestRange range = request_range(part, req, params.cache_seqlens[req]);
    if (range.first_block >= range.end_block) {
      if (first_req) ++q_count;  // (only with lengths shorter than scheduled) its Q slot is used
      continue;
    }
    if (!first_req) {
      issue_q(req);
      page = __ldg(pages + range.first_block);
    }
    ++q_count;
    for (int blk = range.first_block; blk < range.end_block; ++blk) {
      // The next page id is read a block ahead, so its latency hides behind this block's waits.
      const int next_page = blk + 1 < range.end_block ? __ldg(pages + blk + 1) : 0;
#pragma unroll 1
      for (int t = 0; t < kNumTilesQK; ++t, ++pos) {
        const int slot = ring_slot(pos);
        if (pos >= kRingTiles) mbarrier_wait(&smem.tile_empty[slot], ring_phase(pos) ^ 1);
        mbarrier_arrive_expect_tx(&smem.tile_full[slot], kTileBytes);
        tma_load_4d(&kv_map, &smem.tile_full[slot], smem.ring[slot], t * kTileDim, 0, kv_head,
                    page, l2_policy);
        if (pos == 0) trace(kEvN_ProducerFirstIssue);
      }
      page = next_page;
    }
  }
  trace(kEvN_ProducerDone);
}

// ---- consumer pieces -------------------------------------------------------------------------

// Index in a thread's m64n16 accumulator of its column c (row 8 (c / 2) + col0 + c % 2) and
// token (or dim) key0 + 8 h.
__device__ __forceinline__ constexpr int acc_index(int c, int h) { return 4 * (c / 2) + 2 * h + (c % 2); }
__device__ __forceinline__ int column_row(int c, int col0) { return 8 * (c / 2) + col0 + (c % 2); }

__device__ __forceinline__ void consumer_barrier(NamedBarrier id) {
  asm volatile("bar.sync %0, %1;" ::"r"(static_cast<int>(id)), "r"(kConsumerThreads) : "memory");
}

// Explicit shared-memory accesses: the SharedStorage reference is derived from an integer, so the
// compiler would emit generic loads and stores for its fields.
__device__ __forceinline__ void st_shared(uint32_t addr, float v) {
  asm volatile("st.shared.f32 [%0], %1;" ::"r"(addr), "f"(v) : "memory");
}
__device__ __forceinline__ float ld_shared(uint32_t addr) {
  float v;
  asm volatile("ld.shared.f32 %0, [%1];" : "=f"(v) : "r"(addr) : "memory");
  return v;
}

// Completes v[c] (this thread's partial value of its column c: 2 of a block's 64 tokens) to the
// maximum (kMax) or sum over all 64: across the 8 lanes with the same lane % 4 (shuffles, the
// four columns interleaved), then across the 4 warps through table ([warp][row] floats in shared
// memory) and the named barrier `id`.
template <bool kMax>
__device__ __forceinline__ void reduce_columns(float (&v)[4], uint32_t table, int warp, int lane,
                                               int col0, NamedBarrier id) {
  auto op = [](float a, float b) { return kMax ? fmaxf(a, b) : a + b; };
#pragma unroll
  for (int offset = 4; offset < 32; offset *= 2) {
    float other[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) other[c] = __shfl_xor_sync(0xffffffff, v[c], offset);
#pragma unroll
    for (int c = 0; c < 4; ++c) v[c] = op(v[c], other[c]);
  }
  if (lane < 4) {  // lanes 0..3 hold the 16 rows between them
#pragma unroll
    for (int c = 0; c < 4; ++c) st_shared(table + (warp * kRows + column_row(c, col0)) * 4, v[c]);
  }
  consumer_barrier(id);
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    const uint32_t row_addr = table + column_row(c, col0) * 4;
    const float w0 = ld_shared(row_addr), w1 = ld_shared(row_addr + kRows * 4);
    const float w2 = ld_shared(row_addr + 2 * kRows * 4), w3 = ld_shared(row_addr + 3 * kRows * 4);
    v[c] = op(op(w0, w1), op(w2, w3));
  }
}

// One arrival per warp (lane 0, after the warp's wgmmas on the slot completed).
__device__ __forceinline__ void release(uint64_t* bar, int lane) {
  if (lane == 0) mbarrier_arrive(bar);
}

// Writes this request's output rows (O^T accumulators times the rows' 1 / sum) to row_out[row]
// (0: padding row, skipped), as Out: Element (the final output of an unsplit request) or float
// (the split's fp32 partial). Staged through `stage` (a free Q slot, 18 KiB) in passes of 16 rows
// x 16 KiB; rows are padded by 16 bytes so the scattered writes (8 lanes with consecutive dims
// on each of 4 rows) do not hit the same banks. Each thread then moves one 16-byte chunk of 8
// rows per pass, all loads before all stores.
template <typename Out>
__device__ __forceinline__ void store_rows(const float (&o)[kNumTilesV][8], const float (&inv)[4],
                                           uint32_t stage, const uint64_t (&row_out)[kRows],
                                           int wg_thread) {
  constexpr int kDimsPerPass = 16384 / (kRows * static_cast<int>(sizeof(Out)));  // 256 or 512
  constexpr int kPasses = kHeadDimV / kDimsPerPass;
  constexpr int kTilesPerPass = kDimsPerPass / 64;
  constexpr int kRowBytes = kDimsPerPass * static_cast<int>(sizeof(Out)) + 16;
  constexpr int kChunksPerRow = kDimsPerPass * static_cast<int>(sizeof(Out)) / 16;  // 64
  constexpr int kRowsPerStep = kConsumerThreads / kChunksPerRow;                    // 2
  constexpr int kSteps = kRows / kRowsPerStep;                                      // 8
  static_assert(kRows * kRowBytes <= kNumTilesQK * kQTileBytes, "staging exceeds a Q slot");
  static_assert(kConsumerThreads % kChunksPerRow == 0, "a step covers whole rows");
  const int warp = wg_thread / 32, lane = wg_thread % 32;
  const int key0 = warp * 16 + lane / 4;
  const int col0 = (lane % 4) * 2;
  const int chunk = wg_thread % kChunksPerRow;
  const int first_row = wg_thread / kChunksPerRow;
  uint64_t dst[kSteps];
#pragma unroll
  for (int k = 0; k < kSteps; ++k) dst[k] = row_out[first_row + k * kRowsPerStep];
#pragma unroll
  for (int pass = 0; pass < kPasses; ++pass) {
    if (pass > 0) consumer_barrier(NamedBarrier::kStage);  // previous pass's reads done
#pragma unroll
    for (int t = 0; t < kTilesPerPass; ++t) {
      const int m = pass * kTilesPerPass + t;
#pragma unroll
      for (int c = 0; c < 4; ++c) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const uint32_t addr = stage + column_row(c, col0) * kRowBytes +
                                (t * 64 + key0 + 8 * h) * static_cast<int>(sizeof(Out));
          const float v = o[m][acc_index(c, h)] * inv[c];
          if constexpr (sizeof(Out) == 4) {
            st_shared(addr, v);
          } else {
            asm volatile("st.shared.b16 [%0], %1;" ::"r"(addr), "h"(MmaOps<Out>::bits(v))
                         : "memory");
          }
        }
      }
    }
    consumer_barrier(NamedBarrier::kStage);
    uint4 v[kSteps];
#pragma unroll
    for (int k = 0; k < kSteps; ++k) {
      asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];"
                   : "=r"(v[k].x), "=r"(v[k].y), "=r"(v[k].z), "=r"(v[k].w)
                   : "r"(stage + (first_row + k * kRowsPerStep) * kRowBytes + chunk * 16)
                   : "memory");
    }
#pragma unroll
    for (int k = 0; k < kSteps; ++k) {
      if (dst[k] == 0) continue;
      const uint64_t addr = dst[k] + pass * kDimsPerPass * sizeof(Out) + chunk * 16;
      asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(addr), "r"(v[k].x),
                   "r"(v[k].y), "r"(v[k].z), "r"(v[k].w)
                   : "memory");
    }
  }
}

template <typename Element>
__device__ void consume(const Params& params, const mla::detail::PartMetadata& part,
                        SharedStorage<Element>& smem, int kv_head, int wg_thread) {
  using Mma = MmaOps<Element>;
  const int warp = wg_thread / 32;
  const int lane = wg_thread % 32;
  const int key0 = warp * 16 + lane / 4;
  const int col0 = (lane % 4) * 2;
  const int hpk = params.heads_per_kv;

  float o[kNumTilesV][8];  // O^T: dims 64 m + key0 + 8 h, this thread's four rows
  float row_max[4], row_sum[4];

  const uint32_t ring_base = smem_addr(smem.ring[0]);
  const uint32_t column_max_base = smem_addr(smem.column_max);
  const uint32_t column_sum_base = smem_addr(smem.column_sum);
  const uint32_t p_base = smem_addr(smem.p);
  // P as the B operand of O^T: 16 rows x 64 tokens, K-major (tokens contiguous per row).
  const uint64_t desc_p = make_desc_sw128(p_base, 16, 1024);
  int pos = 0;
  int q_count = 0;
  Trace trace(0, wg_thread);
  trace(kEvKernelStart);

  for (int req = part.begin_req; req <= part.end_req; ++req) {
    const int seqlen = params.cache_seqlens[req];
    const RequestRange range = request_range(part, req, seqlen);
    const int q_slot = q_count % kNumQSlots;
    const uint32_t q_phase = (q_count / kNumQSlots) & 1;
    if (range.first_block >= range.end_block) {
      // The producer loads the part's first request's Q before it sees the length; if the
      // lengths are shorter than the schedule assumed, that request is empty here, and its Q
      // slot use is consumed so both sides stay in step.
      if (req == part.begin_req) {
        ++q_count;
        if (params.q_tma) {
          mbarrier_wait(&smem.q_full[q_slot], q_phase);
          release(&smem.q_empty[q_slot], lane);
        }
      }
      continue;
    }
    ++q_count;
    if (params.q_tma) {
      mbarrier_wait(&smem.q_full[q_slot], q_phase);
    } else {
      // Q by plain loads (no TMA box fits the rows): 16 rows, 9 chunks of 16 bytes per thread.
      // The slot's previous Q (two requests back) is no longer read: this warpgroup waited for
      // all of its S^T products.
      load_q_rows<kRows, kConsumerThreads, 9>(params, reinterpret_cast<uint8_t*>(smem.q[q_slot][0]),
                                              0, kv_head, req, wg_thread);
      consumer_barrier(NamedBarrier::kQReady);
    }
    const uint32_t q_base = smem_addr(smem.q[q_slot][0]);
    trace(kEvRequestStart);
    // Read now, used by the epilogue: a global load there would add a round trip per request.
    const int split_begin = __ldg(params.split_offsets + req);
    const int num_splits = __ldg(params.split_offsets + req + 1) - split_begin;
    const int out_slot = req == part.begin_req ? part.begin_slot : split_begin;
    // Destinations of the request's rows (output row and lse entry), for the epilogue; 0 marks a
    // padding row. The integer divisions and 64-bit products stay out of the store loops.
    if (wg_thread < kRows) {
      const int row = wg_thread;
      uint64_t out_addr = 0, lse_addr = 0;
      if (row < params.rows_per_kv_head) {
        const int sq = row / hpk;
        const int head = kv_head * hpk + row % hpk;
        if (num_splits == 1) {
          out_addr = reinterpret_cast<uint64_t>(
              static_cast<Element*>(params.out) + req * params.out_batch_stride +
              sq * params.out_seq_stride + head * params.out_head_stride);
          lse_addr = reinterpret_cast<uint64_t>(
              params.lse + (static_cast<int64_t>(req) * params.num_heads_q + head) *
                               params.seqlen_q + sq);
        } else {
          const int64_t row_index =
              (static_cast<int64_t>(out_slot) * params.seqlen_q + sq) * params.num_heads_q + head;
          out_addr = reinterpret_cast<uint64_t>(params.o_partial + row_index * kHeadDimV);
          lse_addr = reinterpret_cast<uint64_t>(params.lse_partial + row_index);
        }
      }
      smem.row_out[q_slot][row] = out_addr;
      smem.row_lse[q_slot][row] = lse_addr;
    }

    // Causal: query token sq sees keys [0, seqlen - s_q + sq]. Row 0 has the smallest bound, so
    // blocks ending at or before mask_start need no mask.
    int bound[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int sq = column_row(c, col0) / hpk;
      bound[c] = params.causal ? min(seqlen, seqlen - params.seqlen_q + sq + 1) : seqlen;
    }
    const int mask_start =
        params.causal ? min(seqlen, seqlen - params.seqlen_q + 1) : seqlen;

#pragma unroll
    for (int m = 0; m < kNumTilesV; ++m) {
#pragma unroll
      for (int i = 0; i < 8; ++i) o[m][i] = 0.0f;
    }
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      row_max[c] = -INFINITY;
      row_sum[c] = 0.0f;
    }

    for (int blk = range.first_block; blk < range.end_block; ++blk) {
      const int first_pos = pos;
      pos += kNumTilesQK;

      // ---- S^T = K Q^T, tile by tile as the TMA lands ----
      // A 64x16x16 wgmma is 8 clocks of tensor work, well below its latency, so the 36 steps
      // rotate over four accumulators (one per 16-dim step of a tile) instead of forming one
      // dependent chain; they are summed afterwards.
      float s[8];
      float s_part[4][8];
#pragma unroll
      for (int a = 0; a < 4; ++a) {
#pragma unroll
        for (int i = 0; i < 8; ++i) s_part[a][i] = 0.0f;
        fence_accumulator(s_part[a]);
      }
      // Tile t + 1's barrier is probed before tile t's wgmmas are issued, so the probe's round
      // trip overlaps them (as in decode_dense).
      uint32_t ready = mbarrier_probe(&smem.tile_full[ring_slot(first_pos)], ring_phase(first_pos));
#pragma unroll
      for (int t = 0; t < kNumTilesQK; ++t) {
        const int slot = ring_slot(first_pos + t);
        if (!ready) mbarrier_wait(&smem.tile_full[slot], ring_phase(first_pos + t));
        if (t + 1 < kNumTilesQK) {
          ready = mbarrier_probe(&smem.tile_full[ring_slot(first_pos + t + 1)],
                                 ring_phase(first_pos + t + 1));
        }
        const uint64_t desc_k = make_desc_sw128(ring_base + slot * kTileBytes, 16, 1024);
        const uint64_t desc_q = make_desc_sw128(q_base + t * kQTileBytes, 16, 1024);
        cute::warpgroup_arrive();
#pragma unroll
        for (int kk = 0; kk < kTileDim / 16; ++kk) {
          gmma<typename Mma::NarrowST>(desc_advance(desc_k, kk * 32), desc_advance(desc_q, kk * 32),
                                 s_part[kk]);
        }
        cute::warpgroup_commit_batch();
      }
      cute::warpgroup_wait<0>();
#pragma unroll
      for (int a = 0; a < 4; ++a) fence_accumulator(s_part[a]);
#pragma unroll
      for (int i = 0; i < 8; ++i) s[i] = (s_part[0][i] + s_part[1][i]) + (s_part[2][i] + s_part[3][i]);
      trace(kEvN_SDone);
      release(&smem.tile_empty[ring_slot(first_pos + kNumTilesV)], lane);  // the rope tile

      // ---- softmax over the block's tokens, per row ----
      if ((blk + 1) * kBlockN > mask_start) {  // uniform per block: most blocks skip this
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int key = blk * kBlockN + key0 + 8 * h;
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            float& v = s[acc_index(c, h)];
            v = key < bound[c] ? v : -INFINITY;
          }
        }
      }
      float block_max[4];
#pragma unroll
      for (int c = 0; c < 4; ++c) block_max[c] = fmaxf(s[acc_index(c, 0)], s[acc_index(c, 1)]);
      reduce_columns<true>(block_max, column_max_base, warp, lane, col0, NamedBarrier::kColumnMax);
      trace(kEvN_MaxExchanged);
      float base[4], alpha[4];
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        // Raw scores: the scale (> 0) is applied to the maximum, as in decode_dense.
        const float new_max = fmaxf(row_max[c], block_max[c] * params.scale_log2);
        base[c] = new_max == -INFINITY ? 0.0f : new_max;
        alpha[c] = row_max[c] == base[c] ? 1.0f : fast_exp2(row_max[c] - base[c]);
        row_max[c] = new_max;
      }
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        float& v0 = s[acc_index(c, 0)];
        float& v1 = s[acc_index(c, 1)];
        v0 = fast_exp2(fmaf(v0, params.scale_log2, -base[c]));
        v1 = fast_exp2(fmaf(v1, params.scale_log2, -base[c]));
        row_sum[c] = row_sum[c] * alpha[c] + (v0 + v1);
      }
      if (__any_sync(0xffffffff, alpha[0] != 1.0f || alpha[1] != 1.0f || alpha[2] != 1.0f ||
                                     alpha[3] != 1.0f)) {
#pragma unroll
        for (int m = 0; m < kNumTilesV; ++m) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
#pragma unroll
            for (int c = 0; c < 4; ++c) o[m][acc_index(c, h)] *= alpha[c];
          }
        }
      }
      // P to shared memory as [row][token] (the K-major B operand of O^T).
#pragma unroll
      for (int c = 0; c < 4; ++c) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const uint32_t addr = p_base + swizzled_offset(column_row(c, col0), key0 + 8 * h);
          asm volatile("st.shared.b16 [%0], %1;" ::"r"(addr), "h"(Mma::bits(s[acc_index(c, h)]))
                       : "memory");
        }
      }
      const int valid = seqlen - blk * kBlockN;
      if (valid < kBlockN) {
        // The request's last page: zero V rows [valid, 64) of the 8 V tiles.
        const int rows = kBlockN - valid;
        for (int i = wg_thread; i < kNumTilesV * rows * 8; i += kConsumerThreads) {
          const int t = i / (rows * 8);
          const int rem = i % (rows * 8);
          uint8_t* dst = reinterpret_cast<uint8_t*>(smem.ring[ring_slot(first_pos + t)]) +
                         (valid + rem / 8) * 128 + (rem % 8) * 16;
          *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
        }
      }
      fence_proxy_async();
      consumer_barrier(NamedBarrier::kPReady);
      trace(kEvN_PReady);

      // ---- O^T += V^T P^T: 8 accumulators of 64 dims ----
      // Token steps outermost: consecutive wgmmas go to different accumulators.
#pragma unroll
      for (int m = 0; m < kNumTilesV; ++m) fence_accumulator(o[m]);
      cute::warpgroup_arrive();
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
#pragma unroll
        for (int m = 0; m < kNumTilesV; ++m) {
          // V tile m read as V^T (dims x tokens, MN-major): 8 tokens = 1024 bytes.
          const uint64_t desc_v = make_desc_sw128(
              ring_base + ring_slot(first_pos + m) * kTileBytes + kk * 16 * 128, kTileBytes, 1024);
          gmma<typename Mma::NarrowOT>(desc_v, desc_advance(desc_p, kk * 32), o[m]);
        }
      }
      cute::warpgroup_commit_batch();
      cute::warpgroup_wait<0>();
#pragma unroll
      for (int m = 0; m < kNumTilesV; ++m) fence_accumulator(o[m]);
#pragma unroll
      for (int m = 0; m < kNumTilesV; ++m) release(&smem.tile_empty[ring_slot(first_pos + m)], lane);
      trace(kEvN_ODone);
    }

    // ---- end of this request's blocks: row sums over all tokens, then the output ----
    float total[4] = {row_sum[0], row_sum[1], row_sum[2], row_sum[3]};
    reduce_columns<false>(total, column_sum_base, warp, lane, col0, NamedBarrier::kColumnSum);
    trace(kEvN_SumsReduced);

    float inv[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) inv[c] = total[c] > 0.0f ? __frcp_rn(total[c]) : 0.0f;
    if (warp == 0 && lane < 4) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        float* lse_dst = reinterpret_cast<float*>(smem.row_lse[q_slot][column_row(c, col0)]);
        if (lse_dst == nullptr) continue;
        const bool any_key = total[c] > 0.0f;
        // lse = ln(sum) + max * ln(2): row_max is in the base-2 scaled domain.
        const float lse = (row_max[c] + __log2f(total[c])) * 0.69314718055994530942f;
        *lse_dst = any_key ? lse : (num_splits == 1 ? INFINITY : -INFINITY);
      }
    }
    trace(kEvN_LseStored);
    if (num_splits == 1) {
      store_rows<Element>(o, inv, q_base, smem.row_out[q_slot], wg_thread);
    } else {
      store_rows<float>(o, inv, q_base, smem.row_out[q_slot], wg_thread);
    }
    if (params.q_tma) release(&smem.q_empty[q_slot], lane);
    trace(kEvEpilogueDone);
  }
}

// ---- the kernel ------------------------------------------------------------------------------

template <typename Element>
__global__ void __launch_bounds__(kThreads, 1)
    decode_narrow_kernel(const __grid_constant__ Params params,
                         const __grid_constant__ CUtensorMap kv_map,
                         const __grid_constant__ CUtensorMap q_map) {
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  auto& smem = aligned_shared_storage<SharedStorage<Element>>(smem_raw);

  const int kv_head = blockIdx.y;
  const mla::detail::PartMetadata part = begin_part(params);
  if (part.num_blocks <= 0) return;

  if (threadIdx.x == 0) {
    for (int i = 0; i < kRingTiles; ++i) {
      mbarrier_init(&smem.tile_full[i], 1);
      mbarrier_init(&smem.tile_empty[i], kConsumerWarps);
    }
    for (int i = 0; i < kNumQSlots; ++i) {
      mbarrier_init(&smem.q_full[i], 1);
      mbarrier_init(&smem.q_empty[i], kConsumerWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  if (threadIdx.x >= kConsumerThreads) {
    if (threadIdx.x == kConsumerThreads) produce(params, part, kv_map, q_map, smem, kv_head);
    return;
  }
  consume(params, part, smem, kv_head, threadIdx.x);
}

}  // namespace mla::sm90::decode_narrow
