// Split-KV heuristics: pure host functions, no GPU, unit-tested on the CPU.
//
// The main decode kernel runs one CTA per SM (about 225 KB of shared memory each) on a grid
// (num_m_blocks, h_kv, num_sm_parts). The numbers below decide how many CTAs share the KV of
// the batch and how finely the scheduler may cut it.
#pragma once

#include <cstdint>

#include "sched/metadata.h"

// The scheduler kernel evaluates schedule_payload on the GPU too (same bits as the host).
#if defined(__CUDACC__)
#define MLA_SCHED_HD __host__ __device__
#else
#define MLA_SCHED_HD
#endif

namespace mla::detail {

// Query rows one CTA holds: 64 rows of one kv head (the wgmma M tile).
inline constexpr int kRowsPerMBlock = 64;

// 64-row tiles per kv head: every query token of every q head that shares one kv head is a row,
// because MQA lets all of them reuse the same K/V tile.
//   DeepSeek decode, s_q = 1, h_q = 128, h_kv = 1: 128 rows -> 2 m-blocks.
//   s_q = 1, h_q = 16, h_kv = 1:  16 rows -> 1 m-block (48 of its 64 rows idle).
//   MTP s_q = 2, h_q = 128:       256 rows -> 4 m-blocks.
//   s_q = 4, h_q = 16:             64 rows -> 1 m-block.
inline int num_m_blocks(int s_q, int h_q, int h_kv) {
  const int64_t rows = static_cast<int64_t>(s_q) * h_q / (h_kv > 0 ? h_kv : 1);
  return static_cast<int>((rows + kRowsPerMBlock - 1) / kRowsPerMBlock);
}

// SM parts: each (m-block, kv head) pair is replicated over num_sm_parts CTAs, so the grid has
// num_m_blocks * h_kv * num_sm_parts CTAs; with one CTA per SM that product must not exceed the
// SM count (a second wave would double the latency), and should come close to it.
//   H200 (132 SMs), h_q = 16, s_q = 1:   1 m-block  -> 132 parts (132 CTAs).
//   H200, h_q = 128, s_q = 1:            2 m-blocks ->  66 parts (132 CTAs).
//   H200, h_q = 128, s_q = 2:            4 m-blocks ->  33 parts (132 CTAs).
//   H200, h_q = 128, s_q = 3:            6 m-blocks ->  22 parts (132 CTAs).
//   H200, h_q = 64, h_kv = 2, s_q = 1:   1 m-block  ->  66 parts (132 CTAs).
//   A 100-SM part, 2 m-blocks:           50 parts.  More rows than SMs: 1 part (several waves).
inline int num_sm_parts(int num_sms, int num_m_blocks, int h_kv) {
  const int64_t per_part = static_cast<int64_t>(num_m_blocks > 0 ? num_m_blocks : 1) *
                           (h_kv > 0 ? h_kv : 1);
  const int64_t parts = static_cast<int64_t>(num_sms) / per_part;
  return parts > 1 ? static_cast<int>(parts) : 1;
}

// Fixed cost of one split, in 64-token blocks of KV work, used by the scheduler to weigh "one
// more piece" against "more blocks in one part". A split pays, once: loading its 64x576 Q tile
// (as many bytes as one KV block), filling the TMA pipeline before the first wgmma (one block of
// latency that no other work hides), the epilogue writing a 64x512 fp32 partial (twice the bytes
// of a KV block) and combine reading that partial back. FlashMLA's scheduler uses 5 blocks on
// Hopper; that is also where a split stops paying off: cutting a run of 2*5 blocks in two
// saves 5 block-times and costs 5.
inline constexpr int kSplitOverheadBlocks = 5;
inline int split_overhead_blocks() { return kSplitOverheadBlocks; }

// Smallest payload (in blocks, excluding the overhead) the scheduler aims to give one part.
//
// When the total work is large, the balanced payload ceil(total / parts) is far above this and it
// changes nothing:
//   target E (b = 1, s_k = 32768, h_q = 128): 512 blocks over 66 parts -> 8 blocks per part.
//   target F (b = 32, s_k = 1024, h_q = 16): 32 * (16 + 5) cost over 132 parts -> 6 per part.
//   b = 128, s_k = 8192, h_q = 16: 128 * 133 over 132 parts -> 129 per part.
// When the total work is small, pure balancing would cut it into 1-block pieces, e.g. b = 1,
// s_k = 1024 (16 blocks), h_q = 128 -> 16 parts of 1 block. Each of those CTAs spends most of
// its time on the fixed per-split costs above, and combine must read 16 partials instead of 4.
// The latency model of a part is (blocks + overhead): 16 parts of 1 block -> 1 + 5 = 6 block
// times, 4 parts of 4 blocks -> 4 + 5 = 9, but the model leaves out the combine pass, which grows
// with the number of splits per row (16 * 128 heads * 2 KB of partials read for one request at
// h_q = 128), and the extra DRAM traffic of the partial writes. Our estimate (not yet measured:
// tune with mla-bench) is that below about 4 blocks per piece the extra splits cost about as much
// as they save. So the scheduler payload is at least
// 4 blocks + overhead: 16 blocks -> 4 parts of 4 blocks (the other parts stay empty and their
// CTAs exit at once).
inline constexpr int kMinSplitBlocks = 4;
inline int min_split_blocks() { return kMinSplitBlocks; }

// Knobs of the scheduler (see scheduler.h). Defaults are the heuristics above.
struct ScheduleTuning {
  int split_overhead_blocks = kSplitOverheadBlocks;  // >= 0
  int min_split_blocks = kMinSplitBlocks;            // >= 1
};

// Payload of every part (blocks + overhead per split), the scheduler's balanced bound:
//   max(ceil(total_cost / num_sm_parts) + overhead, min_split_blocks + overhead)
// where total_cost = sum over non-empty requests of (blocks + overhead). Worked examples:
//   E: total 512 + 5 = 517, 66 parts -> ceil(517/66) + 5 = 8 + 5 = 13.
//   F: total 32 * 21 = 672, 132 parts -> 6 + 5 = 11 (min 4 + 5 = 9 does not bind).
//   b = 1, 16 blocks, 66 parts -> max(1 + 5, 4 + 5) = 9.
//   all requests empty -> total 0 -> max(0 + 5, 9) = 9 (no part gets work).
MLA_SCHED_HD inline int64_t schedule_payload(int64_t total_cost, int num_sm_parts, const ScheduleTuning& t) {
  const int64_t parts = num_sm_parts > 0 ? num_sm_parts : 1;
  const int64_t balanced = (total_cost + parts - 1) / parts + t.split_overhead_blocks;
  const int64_t minimum = static_cast<int64_t>(t.min_split_blocks) + t.split_overhead_blocks;
  return balanced > minimum ? balanced : minimum;
}

}  // namespace mla::detail
