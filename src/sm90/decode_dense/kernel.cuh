// sm90 dense MLA decode kernel (bf16 / fp16 q and KV, fp32 accumulation).
//
// Grid: (num_m_blocks, h_kv, num_sm_parts). A CTA owns 64 query rows (the s_q * h_q / h_kv rows
// that share kv head blockIdx.y, tile blockIdx.x) and walks the KV blocks of SM part blockIdx.z
// as the scheduler dealt them (src/sched/metadata.h): possibly the tail of one request, whole
// requests, and the head of another. One CTA per SM (about 225 KiB of shared memory).
//
// Warpgroups (384 threads):
//   WG0 (consumer): loads Q of each request, S = Q K^T (wgmma 64x64x16, 36 steps over 576 dims),
//        mask + online softmax, writes P (bf16/fp16) and per-row rescale factors to shared memory,
//        then O[:, 0:256] = diag(f) O + P V[:, 0:256] (wgmma 64x256x16).
//   WG1 (consumer): O[:, 256:512] = diag(f) O + P V[:, 256:512]. While WG1 does PV of block j,
//        WG0 already computes S of block j+1 (the two GEMMs of a block have equal FLOPs).
//   WG2 (producer, one thread): TMA loads of 64-token KV blocks (9 boxes of 64 tokens x 64 dims,
//        128-byte swizzle, EVICT_FIRST) into a 2-stage ring, completing on mbarriers.
// V is the first 512 dims of the same shared-memory K block: never loaded twice.
//
// Shared memory (1024-byte aligned; each tile 64 rows x 128 bytes, TMA SWIZZLE_128B):
//   q  [9 tiles]               72 KiB   A operand of S = Q K^T (K-major)
//   k  [2 stages][9 tiles]    144 KiB   B operand of S (K-major) and of O += P V (MN-major)
//   p  [1 tile]                 8 KiB   A operand of O += P V (K-major)
//   row_scale, row_inv_sum [64] floats; mbarriers.
//
// Tokens past cache_seqlens in a request's last page may hold NaN: their K rows are zeroed in
// shared memory before use (a masked score gives p = 0, but 0 * NaN in P V would still be NaN).
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <utility>

#include <cute/arch/mma_sm90_gmma.hpp>

#include "sm90/decode_dense/config.h"
#include "sm90/decode_dense/params.h"

namespace mla::sm90::decode_dense {

template <typename Element>
struct SharedStorage {
  alignas(1024) Element q[kNumTilesQK][kBlockM * kTileDim];
  alignas(1024) Element k[kNumStages][kNumTilesQK][kBlockN * kTileDim];
  alignas(1024) Element p[kBlockM * kTileDim];
  float row_scale[kBlockM];    // exp2(m_old - m_new) of the current block, per row
  float row_inv_sum[kBlockM];  // 1 / softmax denominator at a request's last block (0: no key)
  alignas(8) uint64_t k_full[kNumStages];   // TMA bytes of a stage landed
  alignas(8) uint64_t k_empty[kNumStages];  // all 8 consumer warps done with a stage
};

// ---- small PTX wrappers ----------------------------------------------------------------------

__device__ __forceinline__ uint32_t smem_addr(const void* ptr) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}

__device__ __forceinline__ void mbarrier_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count));
}

__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}

__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)),
               "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n .reg .pred p;\n"
        " mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
  }
}

// Orders this thread's generic-proxy shared-memory writes before later async-proxy reads
// (wgmma operands, TMA).
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

__device__ __forceinline__ void named_barrier_sync(NamedBarrier id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(static_cast<int>(id)), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(NamedBarrier id, int threads) {
  asm volatile("bar.arrive %0, %1;" ::"r"(static_cast<int>(id)), "r"(threads) : "memory");
}

template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kRegs));
}

// L2 policy for KV: read exactly once per decode step, so it should not evict anything else.
inline constexpr uint64_t kL2EvictFirst = 0x12F0000000000000ull;

__device__ __forceinline__ void tma_load_4d(const CUtensorMap* map, uint64_t* bar, void* dst,
                                            int c0, int c1, int c2, int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      ".L2::cache_hint [%0], [%1, {%3, %4, %5, %6}], [%2], %7;" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "r"(c2),
      "r"(c3), "l"(kL2EvictFirst)
      : "memory");
}

// wgmma shared-memory descriptor, 128-byte swizzle. K-major: sbo = 1024 (8 rows of 128 bytes),
// lbo unused. MN-major: lbo = bytes between 64-element column chunks, sbo = 8 rows of k.
__device__ __forceinline__ uint64_t make_desc_sw128(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  uint64_t desc = 0;
  desc |= static_cast<uint64_t>((addr & 0x3FFFF) >> 4);
  desc |= static_cast<uint64_t>((lbo >> 4) & 0x3FFF) << 16;
  desc |= static_cast<uint64_t>((sbo >> 4) & 0x3FFF) << 32;
  desc |= static_cast<uint64_t>(1) << 62;  // SWIZZLE_128B
  return desc;
}

// base advanced by byte_offset (a multiple of 16) in its start-address field. Volatile so the
// compiler materialises each descriptor right before its wgmma instead of hoisting all of them
// (36 per block for S = Q K^T) into live registers, which spills the accumulators.
__device__ __forceinline__ uint64_t desc_advance(uint64_t base, uint32_t byte_offset) {
  uint64_t desc;
  asm volatile("add.s64 %0, %1, %2;"
               : "=l"(desc)
               : "l"(base), "l"(static_cast<uint64_t>(byte_offset >> 4)));
  return desc;
}

// Byte offset of element (row, col) inside one 64 x 64 tile with the TMA 128-byte swizzle
// (16-byte chunk index XOR row % 8). Tiles are 1024-byte aligned, so this matches both TMA
// and the wgmma SWIZZLE_128B layout.
__device__ __forceinline__ uint32_t swizzled_offset(int row, int col) {
  const uint32_t chunk = static_cast<uint32_t>(col >> 3) ^ static_cast<uint32_t>(row & 7);
  return static_cast<uint32_t>(row) * 128u + chunk * 16u + static_cast<uint32_t>(col & 7) * 2u;
}

template <typename Element>
struct MmaOps;
template <>
struct MmaOps<__nv_bfloat16> {
  using QK = cute::SM90::GMMA::MMA_64x64x16_F32BF16BF16_SS<cute::SM90::GMMA::Major::K,
                                                           cute::SM90::GMMA::Major::K>;
  using PV = cute::SM90::GMMA::MMA_64x256x16_F32BF16BF16_SS<cute::SM90::GMMA::Major::K,
                                                            cute::SM90::GMMA::Major::MN>;
  static __device__ __forceinline__ uint32_t pack(float a, float b) {
    __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&v);
  }
  static __device__ __forceinline__ __nv_bfloat162 pack2(float a, float b) {
    return __floats2bfloat162_rn(a, b);
  }
};
template <>
struct MmaOps<__half> {
  using QK = cute::SM90::GMMA::MMA_64x64x16_F32F16F16_SS<cute::SM90::GMMA::Major::K,
                                                         cute::SM90::GMMA::Major::K>;
  using PV = cute::SM90::GMMA::MMA_64x256x16_F32F16F16_SS<cute::SM90::GMMA::Major::K,
                                                          cute::SM90::GMMA::Major::MN>;
  static __device__ __forceinline__ uint32_t pack(float a, float b) {
    __half2 v = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&v);
  }
  static __device__ __forceinline__ __half2 pack2(float a, float b) {
    return __floats2half2_rn(a, b);
  }
};

template <class Op, int N, size_t... I>
__device__ __forceinline__ void gmma_impl(uint64_t desc_a, uint64_t desc_b, float (&acc)[N],
                                          std::index_sequence<I...>) {
  Op::fma(desc_a, desc_b, acc[I]...);
}
template <class Op, int N>
__device__ __forceinline__ void gmma(uint64_t desc_a, uint64_t desc_b, float (&acc)[N]) {
  gmma_impl<Op>(desc_a, desc_b, acc, std::make_index_sequence<N>{});
}
template <int N>
__device__ __forceinline__ void fence_accumulator(float (&acc)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) cute::warpgroup_fence_operand(acc[i]);
}

// ---- the walk over a part's blocks, shared by producer and consumers -------------------------

struct RequestRange {
  int first_block;  // inclusive
  int end_block;    // exclusive
};

__device__ __forceinline__ RequestRange request_range(const mla::detail::PartMetadata& part,
                                                      int req, int seqlen) {
  const int num_blocks = (seqlen + kBlockN - 1) / kBlockN;
  RequestRange r;
  r.first_block = req == part.begin_req ? part.begin_block : 0;
  r.end_block = req == part.end_req ? part.end_block : num_blocks;
  if (r.end_block > num_blocks) r.end_block = num_blocks;  // defensive: never read past the KV
  return r;
}

// Producer: one thread walks the part's blocks in the consumers' order and keeps the 2-stage
// ring of K blocks full.
template <typename Element>
__device__ __forceinline__ void produce(const Params& params, const mla::detail::PartMetadata& part,
                                        const CUtensorMap& kv_map, SharedStorage<Element>& smem,
                                        int kv_head) {
  int counter = 0;
  for (int req = part.begin_req; req <= part.end_req; ++req) {
    const RequestRange range = request_range(part, req, params.cache_seqlens[req]);
    const int32_t* pages = params.block_table + req * params.block_table_batch_stride;
    for (int blk = range.first_block; blk < range.end_block; ++blk, ++counter) {
      const int stage = counter % kNumStages;
      const uint32_t phase = (counter / kNumStages) & 1;
      mbarrier_wait(&smem.k_empty[stage], phase ^ 1);
      const int page = pages[blk];
      mbarrier_arrive_expect_tx(&smem.k_full[stage], kNumTilesQK * kTileBytes);
#pragma unroll
      for (int t = 0; t < kNumTilesQK; ++t) {
        tma_load_4d(&kv_map, &smem.k_full[stage], smem.k[stage][t], t * kTileDim, 0, kv_head,
                    page);
      }
    }
  }
}

// Consumer warpgroups 0 and 1: see the comment at the top of this file.
template <typename Element>
__device__ __forceinline__ void consume(const Params& params, const mla::detail::PartMetadata& part,
                                        SharedStorage<Element>& smem, int m_block, int kv_head,
                                        int warpgroup, int wg_thread) {
  using Ops = MmaOps<Element>;
  const int warp = wg_thread / 32;
  const int lane = wg_thread % 32;
  // wgmma accumulator fragment: this thread holds rows row0 and row0 + 8 of the 64-row tile,
  // columns 8 * i + col0 + {0, 1}.
  const int row0 = warp * 16 + lane / 4;
  const int col0 = (lane % 4) * 2;
  const int first_row = m_block * kBlockM;

  float o[kHalfV / 2];  // 64 x 256 fp32 accumulator slice of this warpgroup: 128 per thread
#pragma unroll
  for (int i = 0; i < kHalfV / 2; ++i) o[i] = 0.0f;

  // Per-row softmax state (WG0 only): running max (base-2 scaled) and thread-partial sums.
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};
  float row_inv[2] = {0.0f, 0.0f};

  const uint32_t q_base = smem_addr(smem.q[0]);
  const uint32_t p_base = smem_addr(smem.p);

  // P/row-factor hand-off. kPReady: both sync once WG0 has written P and the row factors. kPFree: both warpgroups sync before every hand-off but the first (and once after
  // the last block), so WG0 rewrites P only after WG1 finished the previous block's P V and read
  // its factors. WG1 syncs there too (rather than just arriving) so that the two sides meet in a
  // full barrier; it costs nothing since WG1 waits for the next P at that point anyway.
  bool first_p_write = true;

  int counter = 0;
  for (int req = part.begin_req; req <= part.end_req; ++req) {
    const int seqlen = params.cache_seqlens[req];
    const RequestRange range = request_range(part, req, seqlen);
    if (range.first_block >= range.end_block) continue;

    if (warpgroup == 0) {
      // Q of this request: 64 rows x 72 chunks of 16 bytes, rows past the CTA's valid rows zero.
      const char* q_bytes = static_cast<const char*>(params.q);
      for (int chunk = wg_thread; chunk < kBlockM * (kHeadDimQK / 8); chunk += 128) {
        const int row = chunk / (kHeadDimQK / 8);
        const int c16 = chunk % (kHeadDimQK / 8);
        const int global_row = first_row + row;
        uint4 value = make_uint4(0, 0, 0, 0);
        if (global_row < params.rows_per_kv_head) {
          const int s = global_row / params.heads_per_kv;
          const int head = kv_head * params.heads_per_kv + global_row % params.heads_per_kv;
          const int64_t elem = req * params.q_batch_stride + s * params.q_seq_stride +
                               head * params.q_head_stride + c16 * 8;
          value = *reinterpret_cast<const uint4*>(q_bytes + elem * 2);
        }
        const int tile = c16 / 8;
        uint8_t* dst = reinterpret_cast<uint8_t*>(smem.q[tile]) + swizzled_offset(row, (c16 % 8) * 8);
        *reinterpret_cast<uint4*>(dst) = value;
      }
      fence_proxy_async();
      named_barrier_sync(NamedBarrier::kWG0, 128);
    }

    // Causal: query token s of this request sees keys [0, seqlen - s_q + s].
    int key_bound[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int s = (first_row + row0 + 8 * h) / params.heads_per_kv;
      key_bound[h] = params.causal ? min(seqlen, seqlen - params.seqlen_q + s + 1) : seqlen;
    }

    for (int blk = range.first_block; blk < range.end_block; ++blk, ++counter) {
      const int stage = counter % kNumStages;
      const uint32_t phase = (counter / kNumStages) & 1;
      const bool last_of_request = blk + 1 == range.end_block;
      const uint32_t k_base = smem_addr(smem.k[stage][0]);
      mbarrier_wait(&smem.k_full[stage], phase);

      if (warpgroup == 0) {
        const int valid_tokens = min(kBlockN, seqlen - blk * kBlockN);
        if (valid_tokens < kBlockN) {
          // Zero the K rows past the sequence end in all 9 tiles (they may hold NaN).
          const int rows = kBlockN - valid_tokens;
          for (int i = wg_thread; i < kNumTilesQK * rows * 8; i += 128) {
            const int tile = i / (rows * 8);
            const int rem = i % (rows * 8);
            uint8_t* dst = reinterpret_cast<uint8_t*>(smem.k[stage][tile]) +
                           (valid_tokens + rem / 8) * 128 + (rem % 8) * 16;
            *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
          }
          fence_proxy_async();
          named_barrier_sync(NamedBarrier::kWG0, 128);
        }

        // ---- S = Q K^T ----
        float s_acc[32];
#pragma unroll
        for (int i = 0; i < 32; ++i) s_acc[i] = 0.0f;
        fence_accumulator(s_acc);
        const uint64_t desc_q0 = make_desc_sw128(q_base, 16, 1024);
        const uint64_t desc_k0 = make_desc_sw128(k_base, 16, 1024);
        cute::warpgroup_arrive();
#pragma unroll
        for (int t = 0; t < kNumTilesQK; ++t) {
#pragma unroll
          for (int kk = 0; kk < kTileDim / 16; ++kk) {
            const uint32_t offset = t * kTileBytes + kk * 32;  // 16 dims = 32 bytes per step
            gmma<typename Ops::QK>(desc_advance(desc_q0, offset), desc_advance(desc_k0, offset),
                                   s_acc);
          }
        }
        cute::warpgroup_commit_batch();
        cute::warpgroup_wait<0>();
        fence_accumulator(s_acc);

        // ---- mask + online softmax (base 2) ----
        float scale[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int bound = key_bound[h] - blk * kBlockN;  // columns < bound are visible
          float block_max = -INFINITY;
#pragma unroll
          for (int i = 0; i < 8; ++i) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int col = 8 * i + col0 + e;
              float& v = s_acc[4 * i + 2 * h + e];
              v = col < bound ? v * params.scale_log2 : -INFINITY;
              block_max = fmaxf(block_max, v);
            }
          }
          block_max = fmaxf(block_max, __shfl_xor_sync(0xffffffff, block_max, 1));
          block_max = fmaxf(block_max, __shfl_xor_sync(0xffffffff, block_max, 2));
          const float new_max = fmaxf(row_max[h], block_max);
          // With no visible key so far the max is -inf; subtract 0 instead to avoid inf - inf.
          const float base = new_max == -INFINITY ? 0.0f : new_max;
          scale[h] = exp2f(row_max[h] - base);
          row_max[h] = new_max;
          float sum = 0.0f;
#pragma unroll
          for (int i = 0; i < 8; ++i) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              float& v = s_acc[4 * i + 2 * h + e];
              v = exp2f(v - base);
              sum += v;
            }
          }
          row_sum[h] = row_sum[h] * scale[h] + sum;
        }
        if (last_of_request) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            float total = row_sum[h];
            total += __shfl_xor_sync(0xffffffff, total, 1);
            total += __shfl_xor_sync(0xffffffff, total, 2);
            row_sum[h] = total;  // quad-reduced: used for lse in the epilogue
            row_inv[h] = total > 0.0f ? 1.0f / total : 0.0f;
          }
        }

        // ---- publish P and the row factors to WG1 ----
        if (!first_p_write) named_barrier_sync(NamedBarrier::kPFree, 256);
        first_p_write = false;
        // Swizzled P address of (row, 8 * i + col0) is row_base ^ (i << 4): one register per
        // row, made opaque here so the 16 addresses are not hoisted and kept live.
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = row0 + 8 * h;
          uint32_t row_base = p_base + row * 128 + ((row & 7) << 4) + col0 * 2;
          asm volatile("" : "+r"(row_base));
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            const uint32_t packed = Ops::pack(s_acc[4 * i + 2 * h], s_acc[4 * i + 2 * h + 1]);
            asm volatile("st.shared.b32 [%0], %1;" ::"r"(row_base ^ (i << 4)), "r"(packed) : "memory");
          }
        }
        if (lane % 4 == 0) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            smem.row_scale[row0 + 8 * h] = scale[h];
            if (last_of_request) smem.row_inv_sum[row0 + 8 * h] = row_inv[h];
          }
        }
        fence_proxy_async();
        // A full barrier (not arrive): it also gives WG0 every P row its other threads wrote,
        // and WG1 is already waiting here, so it costs WG0 nothing.
        named_barrier_sync(NamedBarrier::kPReady, 256);

#pragma unroll
        for (int i = 0; i < kHalfV / 8; ++i) {
          o[4 * i + 0] *= scale[0];
          o[4 * i + 1] *= scale[0];
          o[4 * i + 2] *= scale[1];
          o[4 * i + 3] *= scale[1];
        }
      } else {
        if (!first_p_write) named_barrier_sync(NamedBarrier::kPFree, 256);
        first_p_write = false;
        named_barrier_sync(NamedBarrier::kPReady, 256);
        const float scale0 = smem.row_scale[row0];
        const float scale1 = smem.row_scale[row0 + 8];
        if (last_of_request) {
          row_inv[0] = smem.row_inv_sum[row0];
          row_inv[1] = smem.row_inv_sum[row0 + 8];
        }
#pragma unroll
        for (int i = 0; i < kHalfV / 8; ++i) {
          o[4 * i + 0] *= scale0;
          o[4 * i + 1] *= scale0;
          o[4 * i + 2] *= scale1;
          o[4 * i + 3] *= scale1;
        }
      }

      // ---- O[:, half] += P V[:, half] ----
      {
        const uint32_t v_base = k_base + warpgroup * (kHalfV / kTileDim) * kTileBytes;
        fence_accumulator(o);
        cute::warpgroup_arrive();
        const uint64_t desc_p0 = make_desc_sw128(p_base, 16, 1024);
        // V is MN-major: 64-dim chunks are whole tiles apart (lbo), 8 tokens are 1024 bytes (sbo).
        const uint64_t desc_v0 = make_desc_sw128(v_base, kTileBytes, 1024);
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) {
          gmma<typename Ops::PV>(desc_advance(desc_p0, kk * 32), desc_advance(desc_v0, kk * 16 * 128),
                                 o);
        }
        cute::warpgroup_commit_batch();
        cute::warpgroup_wait<0>();
        fence_accumulator(o);
      }
      __syncwarp();
      if (lane == 0) mbarrier_arrive(&smem.k_empty[stage]);

    }


    // ---- epilogue of this request: final output, or a partial for combine ----
    const int split_begin = params.split_offsets[req];
    const int num_splits = params.split_offsets[req + 1] - split_begin;
    const int slot = req == part.begin_req ? part.begin_slot : split_begin;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int global_row = first_row + row0 + 8 * h;
      if (global_row >= params.rows_per_kv_head) continue;
      const int s = global_row / params.heads_per_kv;
      const int head = kv_head * params.heads_per_kv + global_row % params.heads_per_kv;
      const float inv = row_inv[h];
      const int dim0 = warpgroup * kHalfV + col0;
      // Stores go through volatile asm so they stay in program order: left to itself the
      // compiler computes all 64 products before storing and spills.
      if (num_splits == 1) {
        Element* out = static_cast<Element*>(params.out) + req * params.out_batch_stride +
                       s * params.out_seq_stride + head * params.out_head_stride + dim0;
#pragma unroll
        for (int i = 0; i < kHalfV / 8; ++i) {
          const uint32_t packed = Ops::pack(o[4 * i + 2 * h] * inv, o[4 * i + 2 * h + 1] * inv);
          asm volatile("st.global.b32 [%0], %1;" ::"l"(out + 8 * i), "r"(packed) : "memory");
        }
      } else {
        float* out = params.o_partial +
                     ((static_cast<int64_t>(slot) * params.seqlen_q + s) * params.num_heads_q +
                      head) * kHeadDimV + dim0;
#pragma unroll
        for (int i = 0; i < kHalfV / 8; ++i) {
          asm volatile("st.global.v2.f32 [%0], {%1, %2};" ::"l"(out + 8 * i),
                       "f"(o[4 * i + 2 * h] * inv), "f"(o[4 * i + 2 * h + 1] * inv)
                       : "memory");
        }
      }
      if (warpgroup == 0 && lane % 4 == 0) {
        const bool any_key = row_sum[h] > 0.0f;
        // lse = ln(sum) + max * ln(2): row_max is in the base-2 scaled domain.
        const float lse = (row_max[h] + log2f(row_sum[h])) * 0.69314718055994530942f;
        if (num_splits == 1) {
          params.lse[(static_cast<int64_t>(req) * params.num_heads_q + head) * params.seqlen_q + s] =
              any_key ? lse : INFINITY;
        } else {
          params.lse_partial[(static_cast<int64_t>(slot) * params.seqlen_q + s) *
                                 params.num_heads_q + head] = any_key ? lse : -INFINITY;
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kHalfV / 2; ++i) o[i] = 0.0f;
    row_max[0] = row_max[1] = -INFINITY;
    row_sum[0] = row_sum[1] = 0.0f;
  }
  if (!first_p_write) named_barrier_sync(NamedBarrier::kPFree, 256);
}


// ---- the kernel ------------------------------------------------------------------------------

template <typename Element>
__global__ void __launch_bounds__(kThreads, 1)
    decode_dense_kernel(const __grid_constant__ Params params,
                        const __grid_constant__ CUtensorMap kv_map) {
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  // The dynamic allocation is over-sized by 1 KiB so the tiles can sit on 1024-byte boundaries.
  auto& smem = *reinterpret_cast<SharedStorage<Element>*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~static_cast<uintptr_t>(1023));

  const int m_block = blockIdx.x;
  const int kv_head = blockIdx.y;
  const mla::detail::PartMetadata part = params.parts[blockIdx.z];
  // Lets combine (launched with programmatic dependent launch) get its CTAs resident early; it
  // still waits for this whole grid to finish before reading partials.
  asm volatile("griddepcontrol.launch_dependents;");
  if (part.num_blocks <= 0) return;

  const int warpgroup = threadIdx.x / 128;
  const int wg_thread = threadIdx.x % 128;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kNumStages; ++s) {
      mbarrier_init(&smem.k_full[s], 1);
      mbarrier_init(&smem.k_empty[s], 8);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  if (warpgroup == 2) {
    setmaxnreg_dec<kProducerRegs>();
    if (wg_thread == 0) produce(params, part, kv_map, smem, kv_head);
  } else {
    setmaxnreg_inc<kConsumerRegs>();
    consume(params, part, smem, m_block, kv_head, warpgroup, wg_thread);
  }
}

}  // namespace mla::sm90::decode_dense
