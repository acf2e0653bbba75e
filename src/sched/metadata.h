// Split-KV schedule: the contract between the scheduler, the main decode kernel and combine.
//
// The KV of every request is cut into 64-token blocks (kBlockTokens). Request i has
// num_blocks(i) = ceil(cache_seqlens[i] / 64) blocks. The blocks of the whole batch, taken in
// order (request 0 block 0, ..., request b-1 last block), are dealt to num_sm_parts "SM parts"
// as contiguous runs. A part may cover the tail of one request, several whole requests and the
// head of another. The piece of one request that lies in one part is a "split"; each split has a
// global partial slot where it writes its fp32 partial output and log-sum-exp.
//
// Schedule buffer layout (plan.schedule_bytes):
//   PartMetadata parts[num_sm_parts];
//   int32_t      split_offsets[batch + 1];   // exclusive prefix sum of splits per request
//   uint32_t     merge_flags[num_sm_parts * ctas_per_part];   // ctas_per_part = m-blocks x h_kv
//
// merge_flags: zeroed by the scheduler; decode_dense uses them during a step and leaves them zero
// (see "two-piece requests" below), so the buffer serves every layer of the step in turn, but
// two decode calls that may run at the same time need schedule buffers of their own.
//
// Request i has num_splits(i) = split_offsets[i+1] - split_offsets[i] splits, using partial
// slots [split_offsets[i], split_offsets[i+1]).
//   num_splits(i) == 0: the request has no KV (length 0); combine writes out = 0, lse = +inf.
//   num_splits(i) == 1: the main kernel writes out/lse of request i directly (final values).
//   num_splits(i) >= 2: the main kernel writes partials; combine merges them into out/lse.
//
// Two-piece requests in decode_dense (num_splits(i) == 2): piece 1 is the first request of its
// part and piece 0 the last request of the part before. The CTA that computed piece 1 writes its
// partial, then sets its merge flag (index: (part * h_kv + kv head) * m-blocks + m-block); the
// CTA of the same m-block and kv head that computes piece 0 waits for that flag, clears it, and
// merges the partial with its own accumulators into out/lse. Combine skips these requests then.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mla::detail {

inline constexpr int kBlockTokens = 64;  // KV tokens per scheduling block and per kernel tile

struct alignas(32) PartMetadata {
  int32_t begin_req;    // first request of this part (inclusive)
  int32_t begin_block;  // first block of begin_req (inclusive)
  int32_t end_req;      // last request of this part (inclusive)
  int32_t end_block;    // block bound within end_req (exclusive); > 0 unless the part is empty
  int32_t begin_slot;   // partial slot of the split of begin_req; later requests of the part
                        // use split_offsets[req] (their first split)
  int32_t num_blocks;   // total blocks of this part (0: empty part, the kernel returns early)
  int32_t batch_has_split;  // 1 when some request of the batch is cut into >= 2 pieces (the step
                            // writes partials for combine), else 0; the same in every record
  int32_t reserved;
};
static_assert(sizeof(PartMetadata) == 32, "PartMetadata is read as two 16-byte vectors");

// Bytes of the schedule buffer for a batch, part count and CTAs per part (m-blocks x h_kv, the
// merge flags; 0: none).
inline size_t schedule_buffer_bytes(int batch, int num_sm_parts, int ctas_per_part) {
  return sizeof(PartMetadata) * static_cast<size_t>(num_sm_parts) +
         sizeof(int32_t) * (static_cast<size_t>(batch) + 1) +
         sizeof(uint32_t) * static_cast<size_t>(num_sm_parts) * static_cast<size_t>(ctas_per_part);
}

inline const PartMetadata* schedule_parts(const void* buffer) {
  return static_cast<const PartMetadata*>(buffer);
}
inline const int32_t* schedule_split_offsets(const void* buffer, int num_sm_parts) {
  return reinterpret_cast<const int32_t*>(static_cast<const PartMetadata*>(buffer) + num_sm_parts);
}
inline uint32_t* schedule_merge_flags(void* buffer, int batch, int num_sm_parts) {
  return reinterpret_cast<uint32_t*>(reinterpret_cast<int32_t*>(static_cast<PartMetadata*>(buffer) +
                                                                num_sm_parts) +
                                     batch + 1);
}

// Workspace layout (plan.workspace_bytes), max_partial_slots = batch + num_sm_parts:
//   float o_partial  [max_partial_slots, s_q, h_q, d_v]
//   float lse_partial[max_partial_slots, s_q, h_q]        (natural log; -inf for no key)
inline size_t partial_o_elems(int slots, int s_q, int h_q, int d_v) {
  return static_cast<size_t>(slots) * s_q * h_q * d_v;
}
inline size_t partial_lse_elems(int slots, int s_q, int h_q) {
  return static_cast<size_t>(slots) * s_q * h_q;
}

}  // namespace mla::detail
