// Device-side building blocks shared by the sm90 decode kernels (decode_dense and decode_narrow):
// PTX wrappers for mbarriers, TMA and wgmma descriptors, the wgmma call helpers, the fast exp2,
// the optional timeline trace, and the walk over the KV blocks of a scheduler part.
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

// One probe of a phase: 1 if it completed (with the same acquire semantics as mbarrier_wait), 0 if
// not yet. Lets the caller put independent work between the probe and the use of its result.
__device__ __forceinline__ uint32_t mbarrier_probe(uint64_t* bar, uint32_t parity) {
  uint32_t done;
  asm volatile(
      "{\n .reg .pred p;\n"
      " mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      " selp.u32 %0, 1, 0, p;\n}"
      : "=r"(done)
      : "r"(smem_addr(bar)), "r"(parity)
      : "memory");
  return done;
}

// One probe of four consecutive barriers (bars[0..3]) at once: the four probes are in flight
// together instead of one round trip each. 1 if all four phases completed.
__device__ __forceinline__ uint32_t mbarrier_probe4(uint64_t* bars, uint32_t parity) {
  uint32_t done;
  asm volatile(
      "{\n .reg .pred p0, p1, p2, p3;\n"
      " mbarrier.try_wait.parity.shared::cta.b64 p0, [%1], %2;\n"
      " mbarrier.try_wait.parity.shared::cta.b64 p1, [%1+8], %2;\n"
      " mbarrier.try_wait.parity.shared::cta.b64 p2, [%1+16], %2;\n"
      " mbarrier.try_wait.parity.shared::cta.b64 p3, [%1+24], %2;\n"
      " and.pred p0, p0, p1;\n"
      " and.pred p2, p2, p3;\n"
      " and.pred p0, p0, p2;\n"
      " selp.u32 %0, 1, 0, p0;\n}"
      : "=r"(done)
      : "r"(smem_addr(bars)), "r"(parity)
      : "memory");
  return done;
}

// Orders this thread's generic-proxy shared-memory writes before later async-proxy reads
// (wgmma operands, TMA).
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

__device__ __forceinline__ void named_barrier_sync(NamedBarrier id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(static_cast<int>(id)), "r"(threads) : "memory");
}

// L2 policy for KV and Q, which a decode step reads exactly once.
//  - evict_first (the encoding of CUTLASS's CacheHintSm90::EVICT_FIRST) when the step needs L2
//    room of its own: split requests, whose fp32 partials combine reads back, or several m-blocks
//    per kv head, whose CTAs read the same pages and count on L2 for the second read.
//  - evict_unchanged otherwise (a pure stream): the lines already in L2 stay where they are,
//    dirty ones included, so the step does not write back what earlier kernels left in L2 while
//    it is bound by DRAM. tools/probe/l2_dirty_probe.cu: 1.2 GB read once after a memset of
//    2 x L2 takes 302 us with evict_first, 289 us with evict_unchanged, 279 us from a clean L2,
//    where the two tie. But with evict_unchanged the step's own L2 room shrinks to what the
//    earlier data leaves: cases G and H (partials) and E lost 2-14 us with it, hence the rule.
inline constexpr uint64_t kL2EvictFirst = 0x12F0000000000000ull;
__device__ __forceinline__ uint64_t read_once_l2_policy(const mla::detail::PartMetadata& part) {
  if (gridDim.x != 1 || part.batch_has_split != 0) return kL2EvictFirst;
  uint64_t policy;
  asm("createpolicy.fractional.L2::evict_unchanged.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}

// L2 policy for decode_dense's fp32 partials of split requests: written once, read once by
// combine right after the kernel (which reads them with an evict-first policy, demoting them
// again). With one m-block per kv head no two CTAs read the same KV, so the partials are kept
// ahead of everything else (evict_last) and combine finds them in L2 (b = 128, s_q = 4, h_q = 16:
// about 33 MB of partials; case H 1.5-11 us shorter in 8 of 8 A/B pairs). With several m-blocks
// the CTAs of one part read the same pages, relying on L2 to serve the second read; there,
// partials pinned in L2 crowd out those KV lines (case G up to 19 us longer in 7 of 8 pairs), so
// they get the normal policy.
__device__ __forceinline__ uint64_t l2_partial_policy(bool keep_in_l2) {
  uint64_t policy;
  if (keep_in_l2) {
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(policy));
  } else {
    asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(policy));
  }
  return policy;
}

// policy: an L2 cache policy (read_once_l2_policy).
__device__ __forceinline__ void tma_load_4d(const CUtensorMap* map, uint64_t* bar, void* dst,
                                            int c0, int c1, int c2, int c3, uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      ".L2::cache_hint [%0], [%1, {%3, %4, %5, %6}], [%2], %7;" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "r"(c2),
      "r"(c3), "l"(policy)
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
  // S over the rope dims with Q from registers (a per-request fragment, kernel.cuh).
  using QKRegs = cute::SM90::GMMA::MMA_64x64x16_F32BF16BF16_RS<cute::SM90::GMMA::Major::K,
                                                          cute::SM90::GMMA::Major::K>;
  using PV = cute::SM90::GMMA::MMA_64x256x16_F32BF16BF16_SS<cute::SM90::GMMA::Major::K,
                                                            cute::SM90::GMMA::Major::MN>;
  using PVRegs = cute::SM90::GMMA::MMA_64x256x16_F32BF16BF16_RS<cute::SM90::GMMA::Major::K,
                                                                cute::SM90::GMMA::Major::MN>;
  // decode_narrow: S^T = K Q^T and O^T += V^T P^T with the query rows as N = 16.
  using NarrowST = cute::SM90::GMMA::MMA_64x16x16_F32BF16BF16_SS<cute::SM90::GMMA::Major::K,
                                                                 cute::SM90::GMMA::Major::K>;
  using NarrowOT = cute::SM90::GMMA::MMA_64x16x16_F32BF16BF16_SS<cute::SM90::GMMA::Major::MN,
                                                                 cute::SM90::GMMA::Major::K>;
  static __device__ __forceinline__ uint32_t pack(float a, float b) {
    __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&v);
  }
  static __device__ __forceinline__ uint16_t bits(float x) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(x));
  }
};
template <>
struct MmaOps<__half> {
  using QK = cute::SM90::GMMA::MMA_64x64x16_F32F16F16_SS<cute::SM90::GMMA::Major::K,
                                                         cute::SM90::GMMA::Major::K>;
  // S over the rope dims with Q from registers (a per-request fragment, kernel.cuh).
  using QKRegs = cute::SM90::GMMA::MMA_64x64x16_F32F16F16_RS<cute::SM90::GMMA::Major::K,
                                                          cute::SM90::GMMA::Major::K>;
  using PV = cute::SM90::GMMA::MMA_64x256x16_F32F16F16_SS<cute::SM90::GMMA::Major::K,
                                                          cute::SM90::GMMA::Major::MN>;
  using PVRegs = cute::SM90::GMMA::MMA_64x256x16_F32F16F16_RS<cute::SM90::GMMA::Major::K,
                                                              cute::SM90::GMMA::Major::MN>;
  using NarrowST = cute::SM90::GMMA::MMA_64x16x16_F32F16F16_SS<cute::SM90::GMMA::Major::K,
                                                               cute::SM90::GMMA::Major::K>;
  using NarrowOT = cute::SM90::GMMA::MMA_64x16x16_F32F16F16_SS<cute::SM90::GMMA::Major::MN,
                                                               cute::SM90::GMMA::Major::K>;
  static __device__ __forceinline__ uint32_t pack(float a, float b) {
    __half2 v = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&v);
  }
  static __device__ __forceinline__ uint16_t bits(float x) {
    return __half_as_ushort(__float2half_rn(x));
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
template <class Op, int N, size_t... I>
__device__ __forceinline__ void gmma_rs_impl(const uint32_t (&a)[4], uint64_t desc_b,
                                             float (&acc)[N], std::index_sequence<I...>) {
  Op::fma(a[0], a[1], a[2], a[3], desc_b, acc[I]...);
}
// wgmma with A (64 x 16) from registers: a[] is this thread's fragment (see p_fragment below).
template <class Op, int N>
__device__ __forceinline__ void gmma_rs(const uint32_t (&a)[4], uint64_t desc_b, float (&acc)[N]) {
  gmma_rs_impl<Op>(a, desc_b, acc, std::make_index_sequence<N>{});
}
template <int N>
__device__ __forceinline__ void fence_fragment(uint32_t (&frag)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(frag[i])::"memory");
}
template <int N>
__device__ __forceinline__ void fence_accumulator(float (&acc)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) cute::warpgroup_fence_operand(acc[i]);
}

// 2^x by the SFU alone. exp2f would add a denormal-range fix-up around every MUFU.EX2 (three more
// instructions per score); results below 2^-126 flush to zero instead, which a softmax weight
// relative to the row maximum never needs.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// ---- optional timeline trace (diagnostics only: tools/probe/trace_probe.cu) -------------------
// With MLA_DECODE_TRACE defined, lane 0 of each warp appends (event id, clock64) records to
// decode_trace_buffer[cta][warp][kTraceEvents] (warp = 4 * warpgroup + warp in the warpgroup;
// decode_narrow's producer warp is "warpgroup" 1). Without it Trace is empty and the kernel is
// unchanged.
inline constexpr int kTraceWarps = 8;  // per CTA
#ifdef MLA_DECODE_TRACE
inline constexpr int kTraceEvents = 8192;
inline constexpr int kTraceEventIds = 128;
__device__ uint64_t* decode_trace_buffer;
// Optional: decode_trace_global[cta][event id][2] = %globaltimer (ns) of the first and the last
// occurrence of each event in warp 0 of the CTA, to line CTAs up against each other.
__device__ uint64_t* decode_trace_global;
struct Trace {
  int warpgroup, wg_thread, count = 0;
  uint64_t seen[kTraceEventIds / 64] = {};  // events already stamped in decode_trace_global
  __device__ Trace(int w, int t) : warpgroup(w), wg_thread(t) {}
  __device__ __forceinline__ void operator()(int id) {
    if (wg_thread % 32 != 0 || decode_trace_buffer == nullptr || count >= kTraceEvents) return;
    const int cta = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    if (decode_trace_global != nullptr && warpgroup == 0 && wg_thread == 0 && id < kTraceEventIds) {
      // Stores only (no read back): a load here would put a memory round trip on every event.
      uint64_t ns;
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns)::"memory");
      uint64_t* g = decode_trace_global + (static_cast<int64_t>(cta) * kTraceEventIds + id) * 2;
      const uint64_t bit = 1ull << (id % 64);
      if (!(seen[id / 64] & bit)) g[0] = ns;
      seen[id / 64] |= bit;
      g[1] = ns;
    }
    const int warp = warpgroup * 4 + wg_thread / 32;
    uint64_t now;
    asm volatile("mov.u64 %0, %%clock64;" : "=l"(now)::"memory");
    decode_trace_buffer[(static_cast<int64_t>(cta) * kTraceWarps + warp) * kTraceEvents + count] =
        (static_cast<uint64_t>(id) << 56) | (now & ((1ull << 56) - 1));
    ++count;
  }
};
#elif defined(MLA_DECODE_TRACE_LIGHT)
// Light timeline (tools/probe/trace_probe.cu with TRACE_LIGHT=1): thread 0 of each CTA stamps
// %globaltimer at the kernel start (with %smid) and at each epilogue's end, nothing else, so a
// traced run takes about as long as an untraced one. Layout as decode_trace_global above:
// [cta][event id][2]; kernel start in slot 0, the last epilogue end in slot 1, the SM in the
// last event id's slot 0.
inline constexpr int kTraceEvents = 1;
inline constexpr int kTraceEventIds = 128;
__device__ uint64_t* decode_trace_buffer;  // unused here; declared for the probe
__device__ uint64_t* decode_trace_global;
struct Trace {
  bool stamper;
  __device__ Trace(int w, int t) : stamper(w == 0 && t == 0) {}
  __device__ __forceinline__ void operator()(int id) const {
    constexpr int kStart = 0, kEpilogueDone = 52;  // kEvKernelStart, kEvEpilogueDone (below)
    if ((id != kStart && id != kEpilogueDone) || !stamper) return;
    uint64_t* g = decode_trace_global;
    if (g == nullptr) return;
    const int cta = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    g += static_cast<int64_t>(cta) * kTraceEventIds * 2;
    uint64_t ns;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns)::"memory");
    if (id == kStart) {
      uint32_t sm;
      asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
      g[2 * kStart] = ns;
      g[2 * (kTraceEventIds - 1)] = sm;
    } else {
      g[2 * kEpilogueDone + 1] = ns;
    }
  }
};
#else
struct Trace {
  __device__ Trace(int, int) {}
  __device__ __forceinline__ void operator()(int) const {}
};
#endif

// Event ids of the trace (names in tools/probe/trace_probe.cu). decode_dense: kEvA_* are WG0's
// steps of a pair, kEvB_* WG1's. decode_narrow: kEvN_*.
namespace trace_events {
enum TraceEvent : int {
  kEvKernelStart = 0, kEvRequestStart = 1, kEvFirstS = 2,
  kEvA_SoftmaxDone = 10, kEvA_ScaleA = 11, kEvA_PvAL = 12, kEvA_ScaleB = 13, kEvA_PvBLIssued = 14,
  kEvA_PvBLDone = 15, kEvA_NextS = 16, kEvA_PvBLReady = 17,
  kEvB_ScaleA = 20, kEvB_PvARIssued = 21, kEvB_SoftmaxDone = 22, kEvB_ScaleB = 23,
  kEvB_PvARDone = 24, kEvB_PvBR = 25, kEvB_NextS = 26, kEvB_PvARReady = 27,
  kEvTileWaited = 40,  // + tile index: mbarrier wait of a K tile done inside S
  kEvSegmentArrive = 50, kEvSegmentEnd = 51, kEvEpilogueDone = 52,
  kEvN_SDone = 60, kEvN_MaxExchanged = 61, kEvN_PReady = 62, kEvN_ODone = 63,
  kEvN_ProducerStart = 64, kEvN_ProducerFirstIssue = 65, kEvN_ProducerDone = 66,
  kEvN_SumsReduced = 67, kEvN_LseStored = 68,
};
}  // namespace trace_events
using namespace trace_events;
static_assert(kEvKernelStart == 0 && kEvEpilogueDone == 52, "ids stamped by the light Trace");

// ---- kernel set-up -----------------------------------------------------------------------------

// The kernel's shared storage on a 1024-byte boundary (tiles with the 128-byte swizzle need it);
// the dynamic allocation is over-sized by 1 KiB for this.
template <class Storage>
__device__ __forceinline__ Storage& aligned_shared_storage(uint8_t* smem_raw) {
  return *reinterpret_cast<Storage*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) &
                                     ~static_cast<uintptr_t>(1023));
}

// Query token and head of row global_row (< rows_per_kv_head) of kv head kv_head (params.h).
struct RowPosition {
  int sq, head;
};
__device__ __forceinline__ RowPosition row_position(const Params& params, int kv_head,
                                                    int global_row) {
  return {global_row / params.heads_per_kv,
          kv_head * params.heads_per_kv + global_row % params.heads_per_kv};
}

// Q rows [first_row, first_row + kCtaRows) of kv head kv_head in request req, by plain 16-byte
// loads (when no TMA box fits the rows), into kNumTilesQK 128-byte-swizzled tiles of kCtaRows
// rows at q_tiles. kThreadCount threads (this one is `thread`) each keep kBatch loads in flight:
// Q sits on the critical path of every request. Rows past rows_per_kv_head are zero. Ends with
// fence.proxy.async; the caller publishes the tiles with a barrier.
template <int kCtaRows, int kThreadCount, int kBatch>
__device__ __forceinline__ void load_q_rows(const Params& params, uint8_t* q_tiles, int first_row,
                                            int kv_head, int req, int thread) {
  constexpr int kChunksPerRow = kHeadDimQK / 8;
  constexpr int kChunks = kCtaRows * kChunksPerRow;
  constexpr int kTileBytesQ = kCtaRows * kTileDim * 2;
  static_assert(kChunks % (kThreadCount * kBatch) == 0,
                "Q chunks must split evenly over the batches");
  const char* q_bytes = static_cast<const char*>(params.q);
#pragma unroll 1
  for (int first_chunk = 0; first_chunk < kChunks; first_chunk += kThreadCount * kBatch) {
    uint4 value[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int chunk = first_chunk + u * kThreadCount + thread;
      const int global_row = first_row + chunk / kChunksPerRow;
      const int c16 = chunk % kChunksPerRow;
      value[u] = make_uint4(0, 0, 0, 0);
      if (global_row < params.rows_per_kv_head) {
        const RowPosition pos = row_position(params, kv_head, global_row);
        const int64_t elem = req * params.q_batch_stride + pos.sq * params.q_seq_stride +
                             pos.head * params.q_head_stride + c16 * 8;
        value[u] = __ldg(reinterpret_cast<const uint4*>(q_bytes + elem * 2));
      }
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int chunk = first_chunk + u * kThreadCount + thread;
      const int row = chunk / kChunksPerRow;
      const int c16 = chunk % kChunksPerRow;
      uint8_t* dst = q_tiles + (c16 / 8) * kTileBytesQ + swizzled_offset(row, (c16 % 8) * 8);
      *reinterpret_cast<uint4*>(dst) = value[u];
    }
  }
  fence_proxy_async();
}

// ---- two-piece requests: the hand-off between the CTAs of their two pieces (metadata.h) -------

// Called by all threads of the CTA that wrote piece 1 of a two-piece request (its partial rows,
// by bulk copies or stores, and their lse), once every write of that piece has been issued: waits
// until the writes are complete and visible at GPU scope, then thread 0 sets the flag (release).
__device__ __forceinline__ void publish_merge_piece(uint32_t* flag) {
  asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");  // this thread's bulk copies
  asm volatile("fence.proxy.async.global;" ::: "memory");    // their writes, to the generic proxy
  asm volatile("fence.acq_rel.gpu;" ::: "memory");
  __syncthreads();
  if (threadIdx.x == 0) asm volatile("st.release.gpu.global.u32 [%0], 1;" ::"l"(flag) : "memory");
}

// Thread 0 of the CTA that merges piece 0: waits for piece 1's flag (acquire), then clears it for
// the next decode step that uses the schedule. The caller orders the other threads' reads after
// this with a barrier; bulk copies issued by this thread afterwards are ordered by the proxy fence.
__device__ __forceinline__ void acquire_merge_piece(uint32_t* flag) {
  uint32_t ready = 0;
  while (true) {
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(ready) : "l"(flag) : "memory");
    if (ready != 0) break;
    __nanosleep(100);
  }
  asm volatile("st.relaxed.gpu.global.u32 [%0], 0;" ::"l"(flag) : "memory");
  asm volatile("fence.proxy.async.global;" ::: "memory");
}

// bytes (a multiple of 16) from global src to shared dst, completing on mbarrier bar.
__device__ __forceinline__ void bulk_load(uint32_t dst, const void* src, uint32_t bytes,
                                          uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
      ::"r"(dst), "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
}

// ---- the walk over a part's blocks ------------------------------------------------------------

// The CTA's SM part. Parts are numbered from the last grid.z index down, so that the CTAs of
// later parts start first (CTAs start in index order): a CTA that merges waits for a CTA of the
// next part (metadata.h), which is then always running already, however few SMs are free.
__device__ __forceinline__ int part_index() {
  return static_cast<int>(gridDim.z - 1 - blockIdx.z);
}

// The CTA's part of the schedule, read first thing. Also lets combine (launched with
// programmatic dependent launch) get its CTAs resident early; it still waits for this whole grid
// to finish before reading partials.
__device__ __forceinline__ mla::detail::PartMetadata begin_part(const Params& params) {
  const mla::detail::PartMetadata part = params.parts[part_index()];
  asm volatile("griddepcontrol.launch_dependents;");
  return part;
}

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

}  // namespace mla::sm90::decode_dense
