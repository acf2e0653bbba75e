// Host implementation of the split-KV scheduler (algorithm in scheduler.h). Its phases mirror the
// GPU kernel in scheduler.cu one for one, so that both give the same bits.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

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

struct PartRecord {
  int32_t begin_req, begin_block, end_req, end_block, split_index, inner_cost;
};

int32_t clamp_i32(int64_t v) {
  return static_cast<int32_t>(std::clamp<int64_t>(v, 0, INT32_MAX));
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
  const int64_t total = cost_prefix[batch];
  const int64_t payload = schedule_payload(total, num_sm_parts, tuning);

  // Phase 2: the greedy walk over parts. x is the cost position where the next part starts; a
  // part that continues a cut request ("mid") pays the overhead again.
  std::vector<PartRecord> rec(num_sm_parts);
  int num_nonempty = 0;
  if (total > 0) {
    const int last_nonempty = search_last_le(cost_prefix, 0, batch, total - 1);
    int cur_req = search_last_le(cost_prefix, 0, batch, 0);
    int cur_block = 0, split_index = 0;
    int64_t x = 0;
    bool mid = false;
    for (int p = 0; p < num_sm_parts && x < total; ++p) {
      PartRecord r{.begin_req = cur_req, .begin_block = cur_block, .end_req = 0, .end_block = 0,
                   .split_index = split_index, .inner_cost = 0};
      const int64_t end = x + payload - (mid ? o : 0);
      if (end >= total) {
        r.end_req = std::max(last_nonempty, cur_req);
        r.end_block = schedule_blocks_of(cache_seqlens[r.end_req]);
        x = total;
      } else {
        const int j = search_last_le(cost_prefix, cur_req, batch, end);
        const int64_t cut = end - cost_prefix[j] - o;
        if (cut >= 1) {
          r.end_req = j;
          r.end_block = static_cast<int32_t>(cut);
          split_index = (j == cur_req) ? split_index + 1 : 1;
          cur_req = j;
          cur_block = static_cast<int32_t>(cut);
          mid = true;
          x = end;
        } else {
          r.end_req = std::max(search_last_le(cost_prefix, cur_req, batch,
                                              static_cast<int64_t>(cost_prefix[j]) - 1),
                               cur_req);
          r.end_block = schedule_blocks_of(cache_seqlens[r.end_req]);
          split_index = 0;
          cur_req = j;
          cur_block = 0;
          mid = false;
          x = cost_prefix[j];
        }
      }
      if (r.end_req > r.begin_req) {
        r.inner_cost = clamp_i32(static_cast<int64_t>(cost_prefix[r.end_req]) -
                                 cost_prefix[r.begin_req + 1]);
      }
      rec[p] = r;
      num_nonempty = p + 1;
    }
  }

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
    split_offsets[i] = clamp_i32(running);
    running += splits;
  }
  split_offsets[batch] = clamp_i32(running);

  // Phase 4: the PartMetadata records.
  for (int p = 0; p < num_sm_parts; ++p) {
    PartMetadata m{.begin_req = 0, .begin_block = 0, .end_req = -1, .end_block = 0,
                   .begin_slot = 0, .num_blocks = 0, .reserved = {0, 0}};
    if (p < num_nonempty) {
      const PartRecord& r = rec[p];
      m.begin_req = r.begin_req;
      m.begin_block = r.begin_block;
      m.end_req = r.end_req;
      m.end_block = r.end_block;
      m.begin_slot = clamp_i32(static_cast<int64_t>(split_offsets[r.begin_req]) + r.split_index);
      int64_t blocks;
      if (r.end_req == r.begin_req) {
        blocks = static_cast<int64_t>(r.end_block) - r.begin_block;
      } else {
        const int64_t inner_splits =
            static_cast<int64_t>(split_offsets[r.end_req]) - split_offsets[r.begin_req + 1];
        blocks = static_cast<int64_t>(schedule_blocks_of(cache_seqlens[r.begin_req])) -
                 r.begin_block + r.end_block + r.inner_cost - o * inner_splits;
      }
      m.num_blocks = clamp_i32(blocks);
    }
    parts[p] = m;
  }
}

}  // namespace mla::detail
