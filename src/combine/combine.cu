// Split-KV combine kernel (semantics in combine.h).
//
// Grid: 1, 2 or 4 CTAs of 512 threads per output row (request, query token, head), rows of
// one request adjacent. A row is d_v = 512 floats (128 float4 columns); a CTA takes 128 / chunks
// of them: groups of 128 / chunks threads each own every (4 chunks)-th split, each thread one
// float4 column with four loads in flight, and the groups' sums are added in a fixed order
// through shared memory. A large batch (b = 128, h = 128: 16384 rows) fills the GPU many times
// over with one CTA per row. With few rows of many splits (b = 1, h = 16: 16 rows of up to 132
// splits; b = 1, h = 128: 128 rows of 66) one CTA per row walks its splits in many dependent
// rounds; there each row is cut into 2 or 4 column chunks while all CTAs stay resident
// (combine_column_chunks in combine.h), so the splits are requested in fewer rounds. Rows of
// unsplit requests return at once, and rows of empty requests are written without waiting for
// the main kernel (it never writes them).
#include <cmath>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "combine/combine.h"
#include "sched/scheduler.h"

namespace mla::detail {
namespace {

constexpr int kColumnThreads = 128;  // one float4 column of d_v = 512 each (one column chunk)
constexpr int kSplitGroups = 4;      // groups that walk disjoint subsets of the splits (ditto)
constexpr int kThreads = kColumnThreads * kSplitGroups;
constexpr int kWarpRowsPerCta = 4;      // warp-per-row variant
constexpr int kWarpColumnsPerLane = 4;  // float4 columns per lane and pass: 4 x 32 x 4 = 512
constexpr unsigned kFullMask = 0xffffffffu;
// Splits of one request: at most one per part (scheduler.h).
constexpr int kMaxSplits = kMaxScheduleParts;

__device__ __forceinline__ void wait_for_previous_grid() {
  // No-op unless launched with programmatic stream serialisation; then it blocks until the
  // preceding kernel's writes (the partials) are visible.
  asm volatile("griddepcontrol.wait;" ::: "memory");
}

// The partials are read exactly once, here: an evict-first L2 policy on the reads, so lines the
// main kernel kept in L2 (decode_dense writes them evict_last) do not outstay this kernel.
__device__ __forceinline__ uint64_t l2_evict_first_policy() {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}

__device__ __forceinline__ float4 load_partial(const float4* p, uint64_t policy) {
  float4 v;
  asm("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.f32 {%0, %1, %2, %3}, [%4], %5;"
      : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
      : "l"(p), "l"(policy));
  return v;
}

template <bool kFp16>
__device__ __forceinline__ void store4(void* out, int64_t offset, float4 v, bool vectorised) {
  if constexpr (kFp16) {
    __half* p = static_cast<__half*>(out) + offset;
    const __half2 a = __floats2half2_rn(v.x, v.y), b = __floats2half2_rn(v.z, v.w);
    if (vectorised) {
      uint2 packed;
      packed.x = *reinterpret_cast<const uint32_t*>(&a);
      packed.y = *reinterpret_cast<const uint32_t*>(&b);
      *reinterpret_cast<uint2*>(p) = packed;
    } else {
      p[0] = a.x; p[1] = a.y; p[2] = b.x; p[3] = b.y;
    }
  } else {
    __nv_bfloat16* p = static_cast<__nv_bfloat16*>(out) + offset;
    const __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
    if (vectorised) {
      uint2 packed;
      packed.x = *reinterpret_cast<const uint32_t*>(&a);
      packed.y = *reinterpret_cast<const uint32_t*>(&b);
      *reinterpret_cast<uint2*>(p) = packed;
    } else {
      p[0] = a.x; p[1] = a.y; p[2] = b.x; p[3] = b.y;
    }
  }
}

// Where output row `row` (request, query token, head; rows of one request adjacent) lives.
struct RowLocation {
  int request, token, head;
  int64_t out_offset;  // element offset of the row in params.out
  // Index of the row in params.lse ([b, h_q, s_q]), computed where it is stored.
  __device__ __forceinline__ int64_t lse_index(const CombineParams& params) const {
    return (static_cast<int64_t>(request) * params.num_heads_q + head) * params.seqlen_q + token;
  }
};

__device__ __forceinline__ RowLocation locate_row(const CombineParams& params, int64_t row) {
  const int h_q = params.num_heads_q, s_q = params.seqlen_q;
  RowLocation r;
  r.head = static_cast<int>(row % h_q);
  r.token = static_cast<int>((row / h_q) % s_q);
  r.request = static_cast<int>(row / (static_cast<int64_t>(h_q) * s_q));
  r.out_offset = static_cast<int64_t>(r.request) * params.out_batch_stride +
                 static_cast<int64_t>(r.token) * params.out_seq_stride +
                 static_cast<int64_t>(r.head) * params.out_head_stride;
  return r;
}

// Four CTAs per SM (at most 32 registers): with 512 rows (case F) one wave of 528 CTAs; at 40
// registers only three fit and F's combine took two waves (docs/PERF.md).
// kColumnChunks (1, 2 or 4) CTAs per row, a compile-time constant so the thread layout below is
// shifts and masks.
template <bool kFp16, int kColumnChunks>
__global__ void __launch_bounds__(kThreads, kCombineCtasPerSm)
    combine_kernel(CombineParams params, bool vectorised_store) {
  constexpr int column_threads = kColumnThreads / kColumnChunks;
  constexpr int groups = kThreads / column_threads;
  __shared__ float weights[kMaxSplits];  // first the split lse values, then their weights
  __shared__ float4 partial_acc[groups - 1][column_threads];  // groups 1.. of a column pass
  __shared__ float row_lse;

  const int h_q = params.num_heads_q, s_q = params.seqlen_q;
  const int chunk = static_cast<int>(blockIdx.x % kColumnChunks);
  const RowLocation loc = locate_row(params, blockIdx.x / kColumnChunks);
  const int h = loc.head, s = loc.token, i = loc.request;
  const int64_t out_offset = loc.out_offset;
  const int d4 = params.head_dim_v / 4;
  // This CTA's float4 columns [col_begin, col_end) and its thread layout: column_threads
  // columns at a time, `groups` groups walking the splits.
  const int cols_per_chunk = (d4 + kColumnChunks - 1) / kColumnChunks;
  const int col_begin = chunk * cols_per_chunk;
  const int col_end = min(d4, col_begin + cols_per_chunk);

  // split_offsets was written by the scheduler, before the main kernel started, so it may be read
  // before waiting for the main kernel; so may the rows the main kernel never writes.
  const int first = __ldg(params.split_offsets + i);
  const int num_splits = __ldg(params.split_offsets + i + 1) - first;
  // Final values written by the main kernel.
  if (num_splits == 1 || (num_splits == 2 && params.two_piece_merged)) return;
  if (num_splits <= 0) {
    for (int c = col_begin + static_cast<int>(threadIdx.x); c < col_end; c += kThreads)
      store4<kFp16>(params.out, out_offset + 4 * c, make_float4(0.f, 0.f, 0.f, 0.f), vectorised_store);
    if (chunk == 0 && threadIdx.x == 0) params.lse[loc.lse_index(params)] = INFINITY;
    return;
  }

  wait_for_previous_grid();
  const uint64_t read_once = l2_evict_first_policy();

  const int64_t rows_per_slot = static_cast<int64_t>(s_q) * h_q;
  const int64_t lse_row = static_cast<int64_t>(s) * h_q + h;  // within one slot
  const int n = num_splits > kMaxSplits ? kMaxSplits : num_splits;

  // All split lse values in one round of loads, then warp 0 turns them into weights.
  for (int k = threadIdx.x; k < n; k += kThreads)
    weights[k] = __ldg(params.lse_partial + (first + k) * rows_per_slot + lse_row);
  __syncthreads();
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    float m = -INFINITY;
    for (int k = lane; k < n; k += 32) m = fmaxf(m, weights[k]);
#pragma unroll
    for (int d = 16; d > 0; d /= 2) m = fmaxf(m, __shfl_xor_sync(kFullMask, m, d));
    float sum = 0.f;
    if (m != -INFINITY) {
      for (int k = lane; k < n; k += 32) sum += expf(weights[k] - m);
    }
#pragma unroll
    for (int d = 16; d > 0; d /= 2) sum += __shfl_xor_sync(kFullMask, sum, d);
    const float L = (m == -INFINITY) ? -INFINITY : m + logf(sum);
    __syncwarp();
    for (int k = lane; k < n; k += 32) {
      const float l = weights[k];
      weights[k] = (L == -INFINITY || l == -INFINITY) ? 0.f : expf(l - L);
    }
    if (lane == 0) row_lse = (L == -INFINITY) ? INFINITY : L;
  }
  __syncthreads();

  // `groups` groups of threads take every groups-th split, each thread one float4 column, four
  // loads in flight: with many splits (b = 1) the row is latency-bound, so the loads in flight
  // per row matter more than anything else here.
  const int group = threadIdx.x / column_threads;
  const int c = threadIdx.x % column_threads;
  const float4* o4 = reinterpret_cast<const float4*>(params.o_partial);
  const int64_t slot_stride4 = rows_per_slot * d4;
  const int64_t row4 = lse_row * d4;
  for (int c0 = col_begin; c0 < col_end; c0 += column_threads) {
    const int col = c0 + c;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    if (col < col_end) {
      const float4* src = o4 + first * slot_stride4 + row4 + col;
      int k = group;
      for (; k + 3 * groups < n; k += 4 * groups) {
        float4 v[4];
        float w[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          w[u] = weights[k + u * groups];
          v[u] = w[u] != 0.f ? load_partial(src + (k + u * groups) * slot_stride4, read_once)
                             : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          acc.x = fmaf(w[u], v[u].x, acc.x);
          acc.y = fmaf(w[u], v[u].y, acc.y);
          acc.z = fmaf(w[u], v[u].z, acc.z);
          acc.w = fmaf(w[u], v[u].w, acc.w);
        }
      }
      for (; k < n; k += groups) {
        const float w = weights[k];
        if (w != 0.f) {
          const float4 v = load_partial(src + k * slot_stride4, read_once);
          acc.x = fmaf(w, v.x, acc.x);
          acc.y = fmaf(w, v.y, acc.y);
          acc.z = fmaf(w, v.z, acc.z);
          acc.w = fmaf(w, v.w, acc.w);
        }
      }
    }
    // Fixed summation order (group 0 + 1 + 2 + ...): the result is deterministic.
    if (group > 0) partial_acc[group - 1][c] = acc;
    __syncthreads();
    if (group == 0 && col < col_end) {
#pragma unroll
      for (int g = 1; g < groups; ++g) {
        const float4 v = partial_acc[g - 1][c];
        acc.x += v.x;
        acc.y += v.y;
        acc.z += v.z;
        acc.w += v.w;
      }
      store4<kFp16>(params.out, out_offset + 4 * col, acc, vectorised_store);
    }
    __syncthreads();
  }
  if (chunk == 0 && threadIdx.x == 0) {
    params.lse[loc.lse_index(params)] = row_lse;
  }
}

// Few splits per request (large batches): one warp per row, four rows per CTA, no block-wide
// synchronisation. Each lane owns d_v / 128 float4 columns and keeps two splits' loads in flight.
template <bool kFp16>
__global__ void __launch_bounds__(kWarpRowsPerCta * 32)
    combine_warp_per_row_kernel(CombineParams params, bool vectorised_store) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpRowsPerCta + threadIdx.x / 32;
  const int h_q = params.num_heads_q, s_q = params.seqlen_q;
  if (row >= static_cast<int64_t>(params.batch) * s_q * h_q) return;
  const RowLocation loc = locate_row(params, row);
  const int h = loc.head, s = loc.token, i = loc.request;
  const int64_t out_offset = loc.out_offset;
  const int d4 = params.head_dim_v / 4;

  const int first = __ldg(params.split_offsets + i);
  const int num_splits = __ldg(params.split_offsets + i + 1) - first;
  if (num_splits == 1 || (num_splits == 2 && params.two_piece_merged)) return;
  if (num_splits <= 0) {
    for (int c = lane; c < d4; c += 32)
      store4<kFp16>(params.out, out_offset + 4 * c, make_float4(0.f, 0.f, 0.f, 0.f), vectorised_store);
    if (lane == 0) params.lse[loc.lse_index(params)] = INFINITY;
    return;
  }
  wait_for_previous_grid();
  const uint64_t read_once = l2_evict_first_policy();

  const int64_t rows_per_slot = static_cast<int64_t>(s_q) * h_q;
  const int64_t lse_row = static_cast<int64_t>(s) * h_q + h;
  const int n = num_splits > kMaxSplits ? kMaxSplits : num_splits;
  float m = -INFINITY;
  for (int k = lane; k < n; k += 32)
    m = fmaxf(m, __ldg(params.lse_partial + (first + k) * rows_per_slot + lse_row));
#pragma unroll
  for (int d = 16; d > 0; d /= 2) m = fmaxf(m, __shfl_xor_sync(kFullMask, m, d));
  float sum = 0.f;
  if (m != -INFINITY) {
    for (int k = lane; k < n; k += 32)
      sum += expf(__ldg(params.lse_partial + (first + k) * rows_per_slot + lse_row) - m);
  }
#pragma unroll
  for (int d = 16; d > 0; d /= 2) sum += __shfl_xor_sync(kFullMask, sum, d);
  const float L = (m == -INFINITY) ? -INFINITY : m + logf(sum);

  const float4* o4 = reinterpret_cast<const float4*>(params.o_partial);
  const int64_t slot_stride4 = rows_per_slot * d4;
  const float4* src = o4 + first * slot_stride4 + lse_row * d4;
  for (int c0 = 0; c0 < d4; c0 += 32 * kWarpColumnsPerLane) {
    float4 acc[kWarpColumnsPerLane];
#pragma unroll
    for (int u = 0; u < kWarpColumnsPerLane; ++u) acc[u] = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int k = 0; k < n; ++k) {
      // Each lane reads split k's lse itself (a broadcast load): no shuffles in the loop.
      const float l = __ldg(params.lse_partial + (first + k) * rows_per_slot + lse_row);
      const float w = (L == -INFINITY || l == -INFINITY) ? 0.f : expf(l - L);
      if (w == 0.f) continue;
      float4 v[kWarpColumnsPerLane];
#pragma unroll
      for (int u = 0; u < kWarpColumnsPerLane; ++u) {
        const int col = c0 + u * 32 + lane;
        v[u] = col < d4 ? load_partial(src + k * slot_stride4 + col, read_once)
                        : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int u = 0; u < kWarpColumnsPerLane; ++u) {
        acc[u].x = fmaf(w, v[u].x, acc[u].x);
        acc[u].y = fmaf(w, v[u].y, acc[u].y);
        acc[u].z = fmaf(w, v[u].z, acc[u].z);
        acc[u].w = fmaf(w, v[u].w, acc[u].w);
      }
    }
#pragma unroll
    for (int u = 0; u < kWarpColumnsPerLane; ++u) {
      const int col = c0 + u * 32 + lane;
      if (col < d4) store4<kFp16>(params.out, out_offset + 4 * col, acc[u], vectorised_store);
    }
  }
  if (lane == 0)
    params.lse[loc.lse_index(params)] = (L == -INFINITY) ? INFINITY : L;
}

}  // namespace

cudaError_t launch_combine(const CombineParams& params, cudaStream_t stream,
                           bool programmatic_dependent_launch) {
  if (params.batch <= 0 || params.seqlen_q <= 0 || params.num_heads_q <= 0 ||
      params.head_dim_v <= 0 || params.head_dim_v % 4 != 0 || params.split_offsets == nullptr ||
      params.o_partial == nullptr || params.lse_partial == nullptr || params.out == nullptr ||
      params.lse == nullptr || reinterpret_cast<uintptr_t>(params.o_partial) % 16 != 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t rows =
      static_cast<int64_t>(params.batch) * params.seqlen_q * params.num_heads_q;
  if (rows * kCombineMaxColumnChunks > INT32_MAX) return cudaErrorInvalidValue;
  // 8-byte stores of 4 elements need every row start 4-element aligned.
  const bool vectorised = reinterpret_cast<uintptr_t>(params.out) % 8 == 0 &&
                          params.out_batch_stride % 4 == 0 && params.out_seq_stride % 4 == 0 &&
                          params.out_head_stride % 4 == 0;

  // Few splits per request on average (batch large against the parts): a warp per row. Many
  // splits (small batch, long sequences): a whole CTA per row for loads in flight, cut into
  // column chunks when the rows are few and have many pieces (combine.h).
  const bool warp_per_row = combine_warp_per_row(params);
  const int column_chunks = combine_column_chunks(rows, params.num_sms, warp_per_row,
                                                   params.batch, params.num_sm_parts);
  cudaLaunchConfig_t config = {};
  config.gridDim = warp_per_row
                       ? dim3(static_cast<unsigned>((rows + kWarpRowsPerCta - 1) / kWarpRowsPerCta))
                       : dim3(static_cast<unsigned>(rows * column_chunks));
  config.blockDim = dim3(warp_per_row ? kWarpRowsPerCta * 32 : kThreads);
  config.dynamicSmemBytes = 0;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = programmatic_dependent_launch ? 1 : 0;
  if (warp_per_row) {
    return params.out_is_fp16
               ? cudaLaunchKernelEx(&config, combine_warp_per_row_kernel<true>, params, vectorised)
               : cudaLaunchKernelEx(&config, combine_warp_per_row_kernel<false>, params, vectorised);
  }
  auto launch = [&](auto kernel) { return cudaLaunchKernelEx(&config, kernel, params, vectorised); };
  switch (column_chunks) {
    case 1:
      return params.out_is_fp16 ? launch(combine_kernel<true, 1>) : launch(combine_kernel<false, 1>);
    case 2:
      return params.out_is_fp16 ? launch(combine_kernel<true, 2>) : launch(combine_kernel<false, 2>);
    default:
      return params.out_is_fp16 ? launch(combine_kernel<true, kCombineMaxColumnChunks>)
                                : launch(combine_kernel<false, kCombineMaxColumnChunks>);
  }
}

}  // namespace mla::detail
