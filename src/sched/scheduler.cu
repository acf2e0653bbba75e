// GPU implementation of the split-KV scheduler (algorithm in scheduler.h, host twin in
// scheduler_host.cpp: keep the phases in step; the greedy walk and the part records are shared
// code, greedy_walk.h).
//
// Grid: one CTA of 1024 threads. The batch is processed in chunks of 1024 requests (any batch
// size in one launch). Phases:
//   1. all threads: cost prefix sums (block scan per chunk, carried across chunks). They live in
//      shared memory when the batch is small enough, else in the split_offsets area of the
//      output buffer, used as scratch until phase 3 overwrites it.
//   2. warp 0: the greedy walk over parts, one 32-way search per part (lane-uniform state), per-
//      part records in shared memory. This is the only sequential part: O(parts * log32(batch)).
//   3. all threads: splits per request (binary search over the part records), exclusive scan
//      into split_offsets.
//   4. all threads: PartMetadata of every part, written as two 16-byte stores; batch_has_split
//      comes from one CTA-wide vote (a request is cut iff some part starts inside it).
#include <climits>
#include <cstdint>

#include <cuda_runtime.h>

#include "sched/greedy_walk.h"
#include "sched/scheduler.h"

namespace mla::detail {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kSmemCostCap = 6144;  // cost prefix entries kept in shared memory (24 KB)
constexpr unsigned kFullMask = 0xffffffffu;
static_assert(kWarps == 32, "the block scan finishes with one warp over the per-warp sums");

struct Shared {
  int32_t cost_prefix[kSmemCostCap];
  PartRecord rec[kMaxScheduleParts];
  int64_t warp_sums[kWarps];
  int num_nonempty;
};

// Inclusive scan of v over the CTA; *total gets the CTA sum. Every thread must call it.
__device__ int64_t block_inclusive_scan(int64_t v, int64_t* warp_sums, int64_t* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int d = 1; d < 32; d *= 2) {
    const int64_t t = __shfl_up_sync(kFullMask, v, d);
    if (lane >= d) v += t;
  }
  if (lane == 31) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    int64_t w = warp_sums[lane];
#pragma unroll
    for (int d = 1; d < 32; d *= 2) {
      const int64_t t = __shfl_up_sync(kFullMask, w, d);
      if (lane >= d) w += t;
    }
    warp_sums[lane] = w;
  }
  __syncthreads();
  *total = warp_sums[kWarps - 1];
  if (warp > 0) v += warp_sums[warp - 1];
  __syncthreads();  // warp_sums is reused by the next call
  return v;
}

// The cost prefix lives in shared memory (small batch) or in global scratch. Global reads go
// through L2 (__ldcg): the values were written by other warps of this CTA in phase 1.
struct CostPrefix {
  const int32_t* smem;
  const int32_t* gmem;
  __device__ __forceinline__ int64_t operator[](int i) const {
    return smem != nullptr ? smem[i] : __ldcg(gmem + i);
  }
};

// lo - 1 + #{r in [lo, hi] : c[r] <= y} for non-decreasing c, by the whole warp (same result on
// every lane): 32-way narrowing, then one last probe of at most 32 entries.
__device__ int warp_search_last_le(const CostPrefix& c, int lo, int hi, int64_t y) {
  const int lane = threadIdx.x & 31;
  int base = lo - 1;  // every r in [lo, base] satisfies c[r] <= y
  int left = hi - base;
  while (left > 32) {
    const int step = (left + 31) / 32;
    const int probe = base + (lane + 1) * step;
    const bool ok = probe <= hi && c[probe] <= y;
    const int count = __popc(__ballot_sync(kFullMask, ok));
    base += count * step;
    left = min(hi - base, step - 1);
  }
  const bool ok = lane < left && c[base + 1 + lane] <= y;
  return base + __popc(__ballot_sync(kFullMask, ok));
}

__global__ void __launch_bounds__(kThreads, 1)
    schedule_kernel(const int32_t* __restrict__ cache_seqlens, int batch, int num_sm_parts,
                    ScheduleTuning tuning, PartMetadata* __restrict__ parts,
                    int32_t* split_offsets, int num_merge_flags) {
  __shared__ Shared sh;
  const int tid = threadIdx.x;
  const int o = tuning.split_overhead_blocks;
  // The merge flags (metadata.h) start at zero for every step.
  uint32_t* merge_flags = reinterpret_cast<uint32_t*>(split_offsets + batch + 1);
  for (int i = tid; i < num_merge_flags; i += kThreads) merge_flags[i] = 0;
  const bool in_smem = batch + 1 <= kSmemCostCap;
  int32_t* cost_store = in_smem ? sh.cost_prefix : split_offsets;

  // Phase 1.
  int64_t carry = 0;
  for (int base = 0; base < batch; base += kThreads) {
    const int i = base + tid;
    int64_t cost = 0;
    if (i < batch) {
      const int32_t blocks = schedule_blocks_of(cache_seqlens[i]);
      cost = blocks > 0 ? static_cast<int64_t>(blocks) + o : 0;
    }
    int64_t chunk_total;
    const int64_t incl = block_inclusive_scan(cost, sh.warp_sums, &chunk_total);
    if (i < batch) {
      const int64_t v = carry + incl;
      cost_store[i + 1] = static_cast<int32_t>(v > INT32_MAX ? INT32_MAX : v);
    }
    carry += chunk_total;
  }
  if (tid == 0) cost_store[0] = 0;
  __syncthreads();

  // Phase 2: warp 0 walks (the search is warp-collective), lane 0 stores the records.
  if (tid < 32) {
    const CostPrefix c{in_smem ? sh.cost_prefix : nullptr, in_smem ? nullptr : split_offsets};
    const int num_nonempty = greedy_walk(
        batch, num_sm_parts, tuning, [&](int r) { return c[r]; },
        [&](int lo, int hi, int64_t y) { return warp_search_last_le(c, lo, hi, y); },
        [&](int r) { return schedule_blocks_of(cache_seqlens[r]); },
        [&](int p, const PartRecord& r) {
          if (tid == 0) sh.rec[p] = r;
        });
    if (tid == 0) sh.num_nonempty = num_nonempty;
  }
  __syncthreads();

  // Phase 3. From here on split_offsets is output, no longer cost scratch.
  const int num_nonempty = sh.num_nonempty;
  carry = 0;
  for (int base = 0; base < batch; base += kThreads) {
    const int i = base + tid;
    int64_t splits = 0;
    if (i < batch && schedule_blocks_of(cache_seqlens[i]) > 0) {
      // first part with (begin_req, begin_block) > (i, 0), then first part with begin_req > i
      int lo = 0, hi = num_nonempty;
      while (lo < hi) {
        const int mid = (lo + hi) / 2;
        const PartRecord& q = sh.rec[mid];
        if (i < q.begin_req || (i == q.begin_req && 0 < q.begin_block)) hi = mid; else lo = mid + 1;
      }
      const int after_head = lo;
      hi = num_nonempty;
      while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (i < sh.rec[mid].begin_req) hi = mid; else lo = mid + 1;
      }
      splits = 1 + (lo - after_head);
    }
    int64_t chunk_total;
    const int64_t incl = block_inclusive_scan(splits, sh.warp_sums, &chunk_total);
    if (i < batch) split_offsets[i] = saturate_i32(carry + incl - splits);
    carry += chunk_total;
  }
  if (tid == 0) split_offsets[batch] = saturate_i32(carry);
  __syncthreads();

  // Phase 4: two 16-byte stores per record (parts <= kMaxScheduleParts < threads: one vote).
  static_assert(kMaxScheduleParts <= kThreads, "one thread per part record in the vote");
  const int any_split = __syncthreads_or(tid < num_nonempty && sh.rec[tid].begin_block > 0);
  for (int p = tid; p < num_sm_parts; p += kThreads) {
    const PartMetadata m =
        p < num_nonempty
            ? part_metadata(sh.rec[p], split_offsets,
                            schedule_blocks_of(cache_seqlens[sh.rec[p].begin_req]),
                            tuning.split_overhead_blocks)
            : empty_part_metadata();
    int4* dst = reinterpret_cast<int4*>(parts + p);
    dst[0] = make_int4(m.begin_req, m.begin_block, m.end_req, m.end_block);
    dst[1] = make_int4(m.begin_slot, m.num_blocks, any_split ? 1 : 0, 0);
  }
}

}  // namespace

cudaError_t launch_schedule(const int32_t* cache_seqlens_device, int batch, int num_sm_parts,
                            const ScheduleTuning& tuning, void* schedule_buffer,
                            cudaStream_t stream, int ctas_per_part) {
  if (!schedule_args_valid(batch, num_sm_parts, tuning) || cache_seqlens_device == nullptr ||
      schedule_buffer == nullptr || reinterpret_cast<uintptr_t>(schedule_buffer) % 16 != 0 ||
      ctas_per_part < 0 || static_cast<int64_t>(ctas_per_part) * num_sm_parts > INT32_MAX) {
    return cudaErrorInvalidValue;
  }
  auto* parts = static_cast<PartMetadata*>(schedule_buffer);
  int32_t* split_offsets = reinterpret_cast<int32_t*>(parts + num_sm_parts);
  schedule_kernel<<<1, kThreads, 0, stream>>>(cache_seqlens_device, batch, num_sm_parts, tuning,
                                              parts, split_offsets,
                                              ctas_per_part * num_sm_parts);
  return cudaGetLastError();
}

}  // namespace mla::detail
