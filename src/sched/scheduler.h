// Split-KV scheduler: deals the 64-token blocks of the whole batch to num_sm_parts parts.
//
// One algorithm, two implementations with bit-identical output: schedule_host (tests, tools) and
// a one-CTA GPU kernel (launch_schedule) that reads cache_seqlens on the device, so the decode
// step needs no device-to-host copy and can be captured in a CUDA graph.
//
// Algorithm (greedy balanced dealing, as FlashMLA's get_mla_metadata):
//   blocks(i) = ceil(max(len_i, 0) / 64); a request with 0 blocks costs nothing and gets 0 splits.
//   cost(i)   = blocks(i) + o for non-empty requests, o = tuning.split_overhead_blocks.
//   P         = schedule_payload(sum cost, num_sm_parts, tuning)  (heuristics.h)
//   Parts are filled in order, each up to cost P, where a split costs its blocks + o. A part takes
//   whole requests (the rest of the current one, then the next ones) while they fit; the first
//   request that does not fit is cut if at least one of its blocks fits after paying o, and the
//   next part continues it; otherwise the part stops (wasting at most o) and the next part starts
//   with that request. Parts after the work is done are empty (num_blocks = 0).
//
// Guarantees (tested in tests/cpu/test_scheduler.cpp):
//   - every block of every request is in exactly one part; each request's pieces lie in
//     consecutive parts in block order; zero-length requests have no piece;
//   - every part's cost (blocks + o * splits) is <= P, i.e. <= ceil(total/parts) + o when the
//     minimum payload does not bind; all the work fits in num_sm_parts parts (amortised: a part
//     that starts with a continued piece pays an extra o only after a part that cut, which had
//     used its whole payload);
//   - total splits <= batch + num_sm_parts - 1 (each part cuts at most one request);
//   - deterministic: integer arithmetic only, no atomics.
//
// PartMetadata of a part (see metadata.h): requests begin_req..end_req (both inclusive), from
// block begin_block of begin_req to block end_block (exclusive) of end_req. begin_req and end_req
// are never empty requests; requests strictly between them may be empty (0 blocks): the kernel
// skips them (their split_offsets[r] == split_offsets[r + 1]). begin_slot = split_offsets[begin_req]
// + index of this piece among the pieces of begin_req. An empty part has begin_req = 0,
// begin_block = 0, end_req = -1, end_block = 0, begin_slot = 0, num_blocks = 0; empty parts only
// follow non-empty ones.
//
// Positions are int32 after saturation: the sum of (blocks + o) over the batch must stay below
// 2^31 (about 137 G tokens of KV, far beyond any GPU memory); larger (garbage) lengths give an
// unspecified schedule that still never indexes outside the buffers.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "sched/heuristics.h"
#include "sched/metadata.h"

namespace mla::detail {

// The GPU kernel keeps per-part records in shared memory. Parts are at most one per SM.
inline constexpr int kMaxScheduleParts = 512;

// Host implementation. cache_seqlens[batch] (host), parts[num_sm_parts], split_offsets[batch + 1].
// Requires batch >= 1, 1 <= num_sm_parts <= kMaxScheduleParts, tuning.split_overhead_blocks >= 0,
// tuning.min_split_blocks >= 1 (otherwise writes nothing).
void schedule_host(const int32_t* cache_seqlens, int batch, int num_sm_parts,
                   const ScheduleTuning& tuning, PartMetadata* parts, int32_t* split_offsets);

// GPU implementation: reads cache_seqlens_device[batch] and writes the schedule buffer layout of
// metadata.h (parts, split_offsets, then ctas_per_part * num_sm_parts zeroed merge flags) into
// schedule_buffer (schedule_buffer_bytes(batch, num_sm_parts, ctas_per_part) bytes, 16-byte
// aligned). One CTA; asynchronous on stream; no allocation, no sync; graph-capturable. Returns
// cudaErrorInvalidValue for arguments outside the ranges above, ctas_per_part < 0 or a misaligned
// buffer, else the launch error.
cudaError_t launch_schedule(const int32_t* cache_seqlens_device, int batch, int num_sm_parts,
                            const ScheduleTuning& tuning, void* schedule_buffer,
                            cudaStream_t stream, int ctas_per_part = 0);

// Shared by both implementations.
MLA_SCHED_HD inline int32_t schedule_blocks_of(int32_t len) {
  return len <= 0 ? 0
                  : static_cast<int32_t>((static_cast<int64_t>(len) + kBlockTokens - 1) /
                                         kBlockTokens);
}
inline bool schedule_args_valid(int batch, int num_sm_parts, const ScheduleTuning& t) {
  return batch >= 1 && num_sm_parts >= 1 && num_sm_parts <= kMaxScheduleParts &&
         t.split_overhead_blocks >= 0 && t.min_split_blocks >= 1;
}

}  // namespace mla::detail
