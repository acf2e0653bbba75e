// The two steps of the scheduler (scheduler.h) that carry its decisions, written once for both
// implementations: the greedy walk that cuts the batch into parts (phase 2) and the PartMetadata
// record of a part (phase 4). schedule_host (scheduler_host.cpp) and the GPU kernel
// (scheduler.cu) differ only in how they hold the cost prefix, search it and store the results,
// which they pass in; so both give the same bits by construction.
#pragma once

#include <climits>
#include <cstdint>

#include "sched/heuristics.h"
#include "sched/metadata.h"
#include "sched/scheduler.h"

namespace mla::detail {

// A part as the walk leaves it: requests begin_req..end_req, from block begin_block of the first
// to block end_block (exclusive) of the last; split_index = index of this piece among the pieces
// of begin_req; inner_cost = cost of the requests strictly between begin_req and end_req.
struct PartRecord {
  int32_t begin_req, begin_block, end_req, end_block, split_index, inner_cost;
};

MLA_SCHED_HD inline int32_t saturate_i32(int64_t v) {
  return static_cast<int32_t>(v < 0 ? 0 : (v > INT32_MAX ? INT32_MAX : v));
}

// Phase 2. cost(r): the cost prefix (sum of cost over requests < r, non-decreasing, r in
// [0, batch]); search_last_le(lo, hi, y): lo - 1 + #{r in [lo, hi] : cost(r) <= y};
// blocks_of(r): blocks of request r; emit(p, record): stores part p. Returns the number of
// non-empty parts (they come first). On the GPU all lanes of one warp run this together (the
// search is warp-collective and every value here is warp-uniform); emit stores from one lane.
template <class Cost, class SearchLastLe, class BlocksOf, class Emit>
MLA_SCHED_HD int greedy_walk(int batch, int num_sm_parts, const ScheduleTuning& tuning,
                             const Cost& cost, const SearchLastLe& search_last_le,
                             const BlocksOf& blocks_of, const Emit& emit) {
  const int o = tuning.split_overhead_blocks;
  const int64_t total = cost(batch);
  if (total <= 0) return 0;
  const int64_t payload = schedule_payload(total, num_sm_parts, tuning);
  const int last_nonempty = search_last_le(0, batch, total - 1);
  int cur_req = search_last_le(0, batch, 0);
  int cur_block = 0, split_index = 0;
  // x: the cost position where the next part starts; a part that continues a cut request
  // ("mid") pays the overhead again.
  int64_t x = 0;
  bool mid = false;
  int num_nonempty = 0;
  for (int p = 0; p < num_sm_parts && x < total; ++p) {
    PartRecord r{cur_req, cur_block, 0, 0, split_index, 0};
    const int64_t end = x + payload - (mid ? o : 0);
    if (end >= total) {
      r.end_req = last_nonempty > cur_req ? last_nonempty : cur_req;
      r.end_block = blocks_of(r.end_req);
      x = total;
    } else {
      const int j = search_last_le(cur_req, batch, end);
      const int64_t cost_j = cost(j);
      const int64_t cut = end - cost_j - o;
      if (cut >= 1) {  // request j is cut: this part takes its first `cut` blocks
        r.end_req = j;
        r.end_block = static_cast<int32_t>(cut);
        split_index = (j == cur_req) ? split_index + 1 : 1;
        cur_req = j;
        cur_block = static_cast<int32_t>(cut);
        mid = true;
        x = end;
      } else {  // request j does not fit: the part stops before it
        const int last = search_last_le(cur_req, batch, cost_j - 1);
        r.end_req = last > cur_req ? last : cur_req;
        r.end_block = blocks_of(r.end_req);
        split_index = 0;
        cur_req = j;
        cur_block = 0;
        mid = false;
        x = cost_j;
      }
    }
    if (r.end_req > r.begin_req) {
      r.inner_cost = saturate_i32(cost(r.end_req) - cost(r.begin_req + 1));
    }
    emit(p, r);
    num_nonempty = p + 1;
  }
  return num_nonempty;
}

// Phase 4: the metadata of part record r (non-empty), given split_offsets of the batch and the
// blocks of its first request.
MLA_SCHED_HD inline PartMetadata part_metadata(const PartRecord& r, const int32_t* split_offsets,
                                               int32_t begin_req_blocks,
                                               int split_overhead_blocks) {
  int64_t blocks;
  if (r.end_req == r.begin_req) {
    blocks = static_cast<int64_t>(r.end_block) - r.begin_block;
  } else {
    // The requests in between were counted in inner_cost with one overhead per piece each.
    const int64_t inner_splits =
        static_cast<int64_t>(split_offsets[r.end_req]) - split_offsets[r.begin_req + 1];
    blocks = static_cast<int64_t>(begin_req_blocks) - r.begin_block + r.end_block + r.inner_cost -
             split_overhead_blocks * inner_splits;
  }
  PartMetadata m{};
  m.begin_req = r.begin_req;
  m.begin_block = r.begin_block;
  m.end_req = r.end_req;
  m.end_block = r.end_block;
  m.begin_slot = saturate_i32(static_cast<int64_t>(split_offsets[r.begin_req]) + r.split_index);
  m.num_blocks = saturate_i32(blocks);
  return m;
}

// The record of a part with no work.
MLA_SCHED_HD inline PartMetadata empty_part_metadata() {
  PartMetadata m{};
  m.begin_req = 0;
  m.begin_block = 0;
  m.end_req = -1;
  m.end_block = 0;
  m.begin_slot = 0;
  m.num_blocks = 0;
  return m;
}

}  // namespace mla::detail
