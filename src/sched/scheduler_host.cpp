// Host implementation of the split-KV scheduler (algorithm in scheduler.h). Its phases mirror the
// GPU kernel in scheduler.cu one for one, and the two that decide (the greedy walk and the part
// records) are the same code (greedy_walk.h), so both give the same bits.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

#include "sched/greedy_walk.h"
#include "sched/scheduler.h"

namespace mla::detail {
namespace {

// lo - 1 + #{r in [lo, hi] : cost_prefix[r] <= y}; for a non-decreasing prefix and
// cost_prefix[lo] <= y this is the last r in [lo, hi] with cost_prefix[r] <= y.
int search_last_le(const std::vector<int32_t>& cost_prefix, int lo, int hi, int64_t y) {
  const auto first = cost_prefix.begin() + lo;
  const auto last = cost_prefix.begin() + hi + 1;
  return lo - 1 + static_cast<int>(std::upper_bound(first, last, y,
                                                    [](int64_t v, int32_t c) { return v < c; }) -
                                   first);
}

}  // namespace

void schedule_host(const int32_t* cache_seqlens, int batch, int num_sm_parts,
                   const ScheduleTuning& tuning, PartMetadata* parts, int32_t* split_offsets) {
  if (!schedule_args_valid(batch, num_sm_parts, tuning) || cache_seqlens == nullptr ||
      parts == nullptr || split_offsets == nullptr) {
    return;
  }
  const int o = tuning.split_overhead_blocks;

  // Phase 1: cost_prefix[i] = sum of cost(r) for r < i, saturated to int32.
  std::vector<int32_t> cost_prefix(static_cast<size_t>(batch) + 1);
  int64_t acc = 0;
  cost_prefix[0] = 0;
  for (int i = 0; i < batch; ++i) {
    const int32_t blocks = schedule_blocks_of(cache_seqlens[i]);
    acc += blocks > 0 ? static_cast<int64_t>(blocks) + o : 0;
    cost_prefix[i + 1] = static_cast<int32_t>(std::min<int64_t>(acc, INT32_MAX));
  }

  // Phase 2: the greedy walk over parts.
  std::vector<PartRecord> rec(num_sm_parts);
  const int num_nonempty = greedy_walk(
      batch, num_sm_parts, tuning,
      [&](int r) { return static_cast<int64_t>(cost_prefix[r]); },
      [&](int lo, int hi, int64_t y) { return search_last_le(cost_prefix, lo, hi, y); },
      [&](int r) { return schedule_blocks_of(cache_seqlens[r]); },
      [&](int p, const PartRecord& r) { rec[p] = r; });

  // Phase 3: splits per request = 1 + parts that continue it (start inside it), exclusive scan.
  int64_t running = 0;
  for (int i = 0; i < batch; ++i) {
    int splits = 0;
    if (schedule_blocks_of(cache_seqlens[i]) > 0) {
      const auto begin = rec.begin();
      const auto end = rec.begin() + num_nonempty;
      const auto after_head = std::upper_bound(begin, end, i, [](int req, const PartRecord& q) {
        return req < q.begin_req || (req == q.begin_req && 0 < q.begin_block);
      });
      const auto after_req = std::upper_bound(
          begin, end, i, [](int req, const PartRecord& q) { return req < q.begin_req; });
      splits = 1 + static_cast<int>(after_req - after_head);
    }
    split_offsets[i] = saturate_i32(running);
    running += splits;
  }
  split_offsets[batch] = saturate_i32(running);

  // Phase 4: the PartMetadata records. A request is cut iff some part starts inside it.
  const bool any_split = std::any_of(rec.begin(), rec.begin() + num_nonempty,
                                     [](const PartRecord& r) { return r.begin_block > 0; });
  for (int p = 0; p < num_sm_parts; ++p) {
    parts[p] = p < num_nonempty
                   ? part_metadata(rec[p], split_offsets,
                                   schedule_blocks_of(cache_seqlens[rec[p].begin_req]), o)
                   : empty_part_metadata();
    parts[p].batch_has_split = any_split ? 1 : 0;
  }
}

}  // namespace mla::detail
