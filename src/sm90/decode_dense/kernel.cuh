// sm90 dense MLA decode kernel (bf16 / fp16 q and KV, fp32 accumulation).
//
// Grid: (num_m_blocks, h_kv, num_sm_parts). A CTA owns 64 query rows (the s_q * h_q / h_kv rows
// that share kv head blockIdx.y, tile blockIdx.x) and walks the KV blocks of SM part blockIdx.z
// as the scheduler dealt them (src/sched/metadata.h): possibly the tail of one request, whole
// requests, and the head of another. One CTA per SM (about 225 KiB of shared memory).
//
// Warpgroups (384 threads):
//   WG0, WG1 (consumers), symmetric: for each 64-token block, WG w computes the scores of tokens
//        [32w, 32w + 32) for all 64 rows (S = Q K^T, wgmma 64x32x16, 36 steps over 576 dims),
//        masks them, exchanges row maxima with the other warpgroup through shared memory (so both
//        keep the same running max), writes its 32 columns of P (bf16/fp16), and after a barrier
//        computes O[:, 256w : 256w + 256] = diag(f) O + P V[:, 256w : 256w + 256] (wgmma
//        64x256x16) with the whole P. Each warpgroup thus does half of both GEMMs and half of the
//        softmax: the tensor-core work is balanced.
//   WG2 (producer, one thread): TMA loads of 64-token KV blocks (9 boxes of 64 tokens x 64 dims,
//        128-byte swizzle, EVICT_FIRST) into a 2-stage ring, completing on mbarriers.
// V is the first 512 dims of the same shared-memory K block: never loaded twice.
//
// Shared memory (1024-byte aligned; each tile 64 rows x 128 bytes, TMA SWIZZLE_128B):
//   q  [9 tiles]               72 KiB   A operand of S = Q K^T (K-major)
//   k  [2 stages][9 tiles]    144 KiB   B operand of S (K-major) and of O += P V (MN-major)
//   p  [1 tile]                 8 KiB   A operand of O += P V (K-major)
//   exchange [2][64] floats (row maxima / row sums between the warpgroups); mbarriers.
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
#include "sm90/decode_dense/params.h"

namespace mla::sm90::decode_dense {

template <typename Element>
struct SharedStorage {
  alignas(1024) Element q[kNumTilesQK][kBlockM * kTileDim];
  alignas(1024) Element k[kNumStages][kNumTilesQK][kBlockN * kTileDim];
  alignas(1024) Element p[kBlockM * kTileDim];
  float exchange[2][kBlockM];  // per warpgroup: block row maxima, then a request's row sums
  alignas(8) uint64_t k_full[kNumStages];   // TMA bytes of a stage landed
  alignas(8) uint64_t k_empty[kNumStages];  // all 8 consumer warps done with a stage
  alignas(8) uint64_t q_full;                // TMA bytes of a request's Q landed
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
  using QK = cute::SM90::GMMA::MMA_64x32x16_F32BF16BF16_SS<cute::SM90::GMMA::Major::K,
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
  using QK = cute::SM90::GMMA::MMA_64x32x16_F32F16F16_SS<cute::SM90::GMMA::Major::K,
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
      // One barrier for the 9 tiles. (A barrier per tile, waited between the wgmmas of S, was
      // measured slower: ptxas then inserts a warpgroup.arrive before each wgmma.)
      mbarrier_arrive_expect_tx(&smem.k_full[stage], kNumTilesQK * kTileBytes);
#pragma unroll
      for (int t = 0; t < kNumTilesQK; ++t) {
        tma_load_4d(&kv_map, &smem.k_full[stage], smem.k[stage][t], t * kTileDim, 0, kv_head,
                    page);
      }
    }
  }
}

// First request at or after req (up to the part's last) with KV blocks in this part; -1 if none.
__device__ __forceinline__ int next_nonempty_request(const Params& params,
                                                     const mla::detail::PartMetadata& part,
                                                     int req) {
  for (; req <= part.end_req; ++req) {
    const RequestRange r = request_range(part, req, params.cache_seqlens[req]);
    if (r.first_block < r.end_block) return req;
  }
  return -1;
}

// One thread: the 9 boxes of Q (64 rows x 64 dims each) of request req into smem.q, on q_full.
template <typename Element>
__device__ __forceinline__ void issue_q_load(const Params& params, const CUtensorMap& q_map,
                                             SharedStorage<Element>& smem, int m_block,
                                             int kv_head, int req) {
  const int first_row = m_block * kBlockM;
  const int first_head = kv_head * params.heads_per_kv + first_row % params.heads_per_kv;
  const int first_s = first_row / params.heads_per_kv;
  mbarrier_arrive_expect_tx(&smem.q_full, kNumTilesQK * kTileBytes);
#pragma unroll
  for (int t = 0; t < kNumTilesQK; ++t) {
    tma_load_4d(&q_map, &smem.q_full, smem.q[t], t * kTileDim, first_head, first_s, req);
  }
}

// Consumer warpgroups 0 and 1: see the comment at the top of this file.
template <typename Element>
__device__ __forceinline__ void consume(const Params& params, const mla::detail::PartMetadata& part,
                                        const CUtensorMap& q_map, SharedStorage<Element>& smem,
                                        int m_block, int kv_head, int warpgroup, int wg_thread) {
  using Ops = MmaOps<Element>;
  const int warp = wg_thread / 32;
  const int lane = wg_thread % 32;
  // wgmma accumulator fragment: this thread holds rows row0 and row0 + 8 of the 64-row tile,
  // columns 8 * i + col0 + {0, 1}.
  const int row0 = warp * 16 + lane / 4;
  const int col0 = (lane % 4) * 2;
  const int first_row = m_block * kBlockM;
  const int other = warpgroup ^ 1;
  // This warpgroup's tokens of a block for S: [token0, token0 + 32).
  const int token0 = warpgroup * kHalfN;

  float o[kHalfV / 2];  // 64 x 256 fp32 accumulator slice of this warpgroup: 128 per thread
#pragma unroll
  for (int i = 0; i < kHalfV / 2; ++i) o[i] = 0.0f;

  // Per-row softmax state, identical in both warpgroups (the block maxima are exchanged):
  // running max in the base-2 scaled domain, and this thread's partial sum over its columns.
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};

  const uint32_t q_base = smem_addr(smem.q[0]);
  const uint32_t p_base = smem_addr(smem.p);

  // Q by TMA: the first request's Q is requested now; each later one as soon as both warpgroups
  // finished the previous request's last S (so it lands during that block's softmax and P V).
  uint32_t q_phase = 0;
  if (params.q_tma && threadIdx.x == 0) {
    const int first_req = next_nonempty_request(params, part, part.begin_req);
    if (first_req >= 0) issue_q_load(params, q_map, smem, m_block, kv_head, first_req);
  }

  int counter = 0;
  for (int req = part.begin_req; req <= part.end_req; ++req) {
    const int seqlen = params.cache_seqlens[req];
    const RequestRange range = request_range(part, req, seqlen);
    if (range.first_block >= range.end_block) continue;

    if (params.q_tma) {
      mbarrier_wait(&smem.q_full, q_phase);
      q_phase ^= 1;
    } else {
      // Q of this request, loaded by both warpgroups: 64 rows x 72 chunks of 16 bytes; rows past
      // the CTA's valid rows are zero. The previous request's last S was waited for before its
      // last kMax barrier, which both warpgroups passed, so Q can be overwritten.
      const char* q_bytes = static_cast<const char*>(params.q);
      // 18 chunks per thread, issued 9 at a time so that the loads overlap: Q sits on the
      // critical path of every request (a CTA of a small batch may see only one or two).
      constexpr int kChunks = kBlockM * (kHeadDimQK / 8);
      constexpr int kBatch = 9;
      static_assert(kChunks % (256 * kBatch) == 0, "Q chunks must split evenly over the batches");
#pragma unroll 1
      for (int first_chunk = 0; first_chunk < kChunks; first_chunk += 256 * kBatch) {
        uint4 value[kBatch];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int chunk = first_chunk + u * 256 + threadIdx.x;
          const int global_row = first_row + chunk / (kHeadDimQK / 8);
          const int c16 = chunk % (kHeadDimQK / 8);
          value[u] = make_uint4(0, 0, 0, 0);
          if (global_row < params.rows_per_kv_head) {
            const int s = global_row / params.heads_per_kv;
            const int head = kv_head * params.heads_per_kv + global_row % params.heads_per_kv;
            const int64_t elem = req * params.q_batch_stride + s * params.q_seq_stride +
                                 head * params.q_head_stride + c16 * 8;
            value[u] = __ldg(reinterpret_cast<const uint4*>(q_bytes + elem * 2));
          }
        }
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int chunk = first_chunk + u * 256 + threadIdx.x;
          const int row = chunk / (kHeadDimQK / 8);
          const int c16 = chunk % (kHeadDimQK / 8);
          uint8_t* dst = reinterpret_cast<uint8_t*>(smem.q[c16 / 8]) + swizzled_offset(row, (c16 % 8) * 8);
          *reinterpret_cast<uint4*>(dst) = value[u];
        }
      }
      fence_proxy_async();
      named_barrier_sync(NamedBarrier::kQReady, 256);
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
      const uint32_t k_base = smem_addr(smem.k[stage][0]);
      mbarrier_wait(&smem.k_full[stage], phase);

      // ---- S[:, token0 : token0 + 32] = Q K^T (NaN K rows past the end only reach masked
      //      columns, which the select below replaces) ----
      float s_acc[kHalfN / 2];
#pragma unroll
      for (int i = 0; i < kHalfN / 2; ++i) s_acc[i] = 0.0f;
      fence_accumulator(s_acc);
      {
        const uint64_t desc_q0 = make_desc_sw128(q_base, 16, 1024);
        const uint64_t desc_k0 = make_desc_sw128(k_base + token0 * 128, 16, 1024);
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
      }
      fence_accumulator(s_acc);

      // ---- mask + block max, exchanged with the other warpgroup ----
      float block_max[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int bound = key_bound[h] - blk * kBlockN - token0;  // columns < bound are visible
        float m = -INFINITY;
#pragma unroll
        for (int i = 0; i < kHalfN / 8; ++i) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& v = s_acc[4 * i + 2 * h + e];
            v = 8 * i + col0 + e < bound ? v * params.scale_log2 : -INFINITY;
            m = fmaxf(m, v);
          }
        }
        m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, 1));
        m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, 2));
        block_max[h] = m;
        if (lane % 4 == 0) smem.exchange[warpgroup][row0 + 8 * h] = m;
      }
      named_barrier_sync(NamedBarrier::kMax, 256);
      if (params.q_tma && threadIdx.x == 0 && blk + 1 == range.end_block) {
        // Both warpgroups' S of this request are complete: Q may be replaced.
        const int next_req = next_nonempty_request(params, part, req + 1);
        if (next_req >= 0) issue_q_load(params, q_map, smem, m_block, kv_head, next_req);
      }
      float scale[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float new_max =
            fmaxf(row_max[h], fmaxf(block_max[h], smem.exchange[other][row0 + 8 * h]));
        // With no visible key so far the max is -inf; subtract 0 instead to avoid inf - inf.
        const float base = new_max == -INFINITY ? 0.0f : new_max;
        scale[h] = exp2f(row_max[h] - base);
        row_max[h] = new_max;
        float sum = 0.0f;
#pragma unroll
        for (int i = 0; i < kHalfN / 8; ++i) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& v = s_acc[4 * i + 2 * h + e];
            v = exp2f(v - base);
            sum += v;
          }
        }
        row_sum[h] = row_sum[h] * scale[h] + sum;
      }

      // ---- tokens past the end in this (last) block: zero this warpgroup's V rows, since
      //      0 * NaN in P V would still be NaN. Both S products are complete (kMax). ----
      const int valid_tokens = min(kBlockN, seqlen - blk * kBlockN);
      if (valid_tokens < kBlockN) {
        const int rows = kBlockN - valid_tokens;
        const int first_tile = warpgroup * (kHalfV / kTileDim);
        for (int i = wg_thread; i < (kHalfV / kTileDim) * rows * 8; i += 128) {
          const int tile = first_tile + i / (rows * 8);
          const int rem = i % (rows * 8);
          uint8_t* dst = reinterpret_cast<uint8_t*>(smem.k[stage][tile]) +
                         (valid_tokens + rem / 8) * 128 + (rem % 8) * 16;
          *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
        }
      }

      // ---- this warpgroup's 32 columns of P; both halves are needed by both P V products ----
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = row0 + 8 * h;
        // Swizzled address of (row, token0 + 8 i + col0) is row_base ^ ((token0 / 8 + i) << 4).
        uint32_t row_base = p_base + row * 128 + ((row & 7) << 4) + col0 * 2;
        asm volatile("" : "+r"(row_base));
#pragma unroll
        for (int i = 0; i < kHalfN / 8; ++i) {
          const uint32_t packed = Ops::pack(s_acc[4 * i + 2 * h], s_acc[4 * i + 2 * h + 1]);
          asm volatile("st.shared.b32 [%0], %1;" ::"r"(row_base ^ ((token0 / 8 + i) << 4)),
                       "r"(packed)
                       : "memory");
        }
      }
      fence_proxy_async();
      named_barrier_sync(NamedBarrier::kPReady, 256);

      // ---- O[:, half] = diag(scale) O + P V[:, half] ----
#pragma unroll
      for (int i = 0; i < kHalfV / 8; ++i) {
        o[4 * i + 0] *= scale[0];
        o[4 * i + 1] *= scale[0];
        o[4 * i + 2] *= scale[1];
        o[4 * i + 3] *= scale[1];
      }
      {
        const uint32_t v_base = k_base + warpgroup * (kHalfV / kTileDim) * kTileBytes;
        const uint64_t desc_p0 = make_desc_sw128(p_base, 16, 1024);
        // V is MN-major: 64-dim chunks are whole tiles apart (lbo), 8 tokens are 1024 bytes (sbo).
        const uint64_t desc_v0 = make_desc_sw128(v_base, kTileBytes, 1024);
        fence_accumulator(o);
        cute::warpgroup_arrive();
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) {
          gmma<typename Ops::PV>(desc_advance(desc_p0, kk * 32), desc_advance(desc_v0, kk * 16 * 128),
                                 o);
        }
        cute::warpgroup_commit_batch();
        cute::warpgroup_wait<0>();
        fence_accumulator(o);
      }
      // P and this stage are free once both warpgroups pass the next kMax / k_empty.
      __syncwarp();
      if (lane == 0) mbarrier_arrive(&smem.k_empty[stage]);
    }

    // ---- epilogue of this request: final output, or a partial for combine ----
    float row_inv[2], total_sum[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float sum = row_sum[h];
      sum += __shfl_xor_sync(0xffffffff, sum, 1);
      sum += __shfl_xor_sync(0xffffffff, sum, 2);
      total_sum[h] = sum;
    }
    // The exchange slots were last read before the last kPReady, which both passed.
    if (lane % 4 == 0) {
      smem.exchange[warpgroup][row0] = total_sum[0];
      smem.exchange[warpgroup][row0 + 8] = total_sum[1];
    }
    named_barrier_sync(NamedBarrier::kMax, 256);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      total_sum[h] += smem.exchange[other][row0 + 8 * h];
      row_inv[h] = total_sum[h] > 0.0f ? 1.0f / total_sum[h] : 0.0f;
    }
    // The next writer of the exchange slots (the next block's maxima) must wait for these reads.
    named_barrier_sync(NamedBarrier::kPReady, 256);

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
        const bool any_key = total_sum[h] > 0.0f;
        // lse = ln(sum) + max * ln(2): row_max is in the base-2 scaled domain.
        const float lse = (row_max[h] + log2f(total_sum[h])) * 0.69314718055994530942f;
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
}

// ---- the kernel ------------------------------------------------------------------------------

template <typename Element>
__global__ void __launch_bounds__(kThreads, 1)
    decode_dense_kernel(const __grid_constant__ Params params,
                        const __grid_constant__ CUtensorMap kv_map,
                        const __grid_constant__ CUtensorMap q_map) {
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
    mbarrier_init(&smem.q_full, 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  if (warpgroup == 2) {
    setmaxnreg_dec<kProducerRegs>();
    if (wg_thread == 0) produce(params, part, kv_map, smem, kv_head);
  } else {
    setmaxnreg_inc<kConsumerRegs>();
    consume(params, part, q_map, smem, m_block, kv_head, warpgroup, wg_thread);
  }
}

}  // namespace mla::sm90::decode_dense
