// CPU tests of the split-KV heuristics, the host scheduler and the plan/workspace sizing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "mla/decode.h"
#include "sched/heuristics.h"
#include "sched/metadata.h"
#include "sched/scheduler.h"
#include "sched/workspace.h"

namespace mla::detail {
namespace {

struct Schedule {
  std::vector<PartMetadata> parts;
  std::vector<int32_t> split_offsets;
};

Schedule run_host(const std::vector<int32_t>& lens, int num_parts, const ScheduleTuning& t) {
  Schedule s;
  // Poison: every field must be written.
  s.parts.assign(num_parts, PartMetadata{.begin_req = -7, .begin_block = -7, .end_req = -7,
                                         .end_block = -7, .begin_slot = -7, .num_blocks = -7,
                                         .batch_has_split = -7, .reserved = -7});
  s.split_offsets.assign(lens.size() + 1, -7);
  schedule_host(lens.data(), static_cast<int>(lens.size()), num_parts, t, s.parts.data(),
                s.split_offsets.data());
  return s;
}

int64_t total_cost(const std::vector<int32_t>& lens, const ScheduleTuning& t) {
  int64_t total = 0;
  for (int32_t len : lens) {
    const int blocks = schedule_blocks_of(len);
    if (blocks > 0) total += blocks + t.split_overhead_blocks;
  }
  return total;
}

// Every invariant of scheduler.h, checked from the outputs alone.
::testing::AssertionResult verify(const std::vector<int32_t>& lens, int num_parts,
                                  const ScheduleTuning& t, const Schedule& s) {
  const int batch = static_cast<int>(lens.size());
  const int o = t.split_overhead_blocks;
  const int64_t payload = schedule_payload(total_cost(lens, t), num_parts, t);
  struct Piece {
    int part, lo, hi, slot;
  };
  std::vector<std::vector<Piece>> pieces(batch);
  const auto& so = s.split_offsets;
  bool seen_empty = false;
  for (int p = 0; p < num_parts; ++p) {
    const PartMetadata& m = s.parts[p];
    const std::string at = " at part " + std::to_string(p);
    if (m.reserved != 0) return ::testing::AssertionFailure() << "reserved" << at;
    if (m.batch_has_split != s.parts[0].batch_has_split) {
      return ::testing::AssertionFailure() << "batch_has_split differs from part 0's" << at;
    }
    if (m.num_blocks == 0) {
      if (m.begin_req != 0 || m.begin_block != 0 || m.end_req != -1 || m.end_block != 0 ||
          m.begin_slot != 0) {
        return ::testing::AssertionFailure() << "empty part not in canonical form" << at;
      }
      seen_empty = true;
      continue;
    }
    if (seen_empty) return ::testing::AssertionFailure() << "non-empty part after an empty one" << at;
    if (m.begin_req < 0 || m.begin_req > m.end_req || m.end_req >= batch) {
      return ::testing::AssertionFailure() << "request range [" << m.begin_req << ", "
                                           << m.end_req << "]" << at;
    }
    if (m.end_block <= 0) return ::testing::AssertionFailure() << "end_block <= 0" << at;
    int64_t blocks = 0, splits = 0;
    for (int r = m.begin_req; r <= m.end_req; ++r) {
      const int b = schedule_blocks_of(lens[r]);
      if (b == 0) {
        if (r == m.begin_req || r == m.end_req) {
          return ::testing::AssertionFailure() << "part begins/ends on empty request " << r << at;
        }
        continue;
      }
      const int lo = r == m.begin_req ? m.begin_block : 0;
      const int hi = r == m.end_req ? m.end_block : b;
      if (!(0 <= lo && lo < hi && hi <= b)) {
        return ::testing::AssertionFailure() << "bad block range [" << lo << ", " << hi
                                             << ") of request " << r << " with " << b << at;
      }
      pieces[r].push_back({p, lo, hi, r == m.begin_req ? m.begin_slot : so[r]});
      blocks += hi - lo;
      ++splits;
    }
    if (blocks != m.num_blocks) {
      return ::testing::AssertionFailure() << "num_blocks " << m.num_blocks << " != " << blocks << at;
    }
    if (blocks + o * splits > payload) {
      return ::testing::AssertionFailure() << "cost " << blocks + o * splits << " > payload "
                                           << payload << at;
    }
  }
  if (so[0] != 0) return ::testing::AssertionFailure() << "split_offsets[0] != 0";
  for (int r = 0; r < batch; ++r) {
    const std::string at = " at request " + std::to_string(r);
    const int b = schedule_blocks_of(lens[r]);
    const int n = so[r + 1] - so[r];
    if (n != static_cast<int>(pieces[r].size())) {
      return ::testing::AssertionFailure() << "num_splits " << n << " != pieces "
                                           << pieces[r].size() << at;
    }
    if (b == 0) continue;
    int expect_lo = 0;
    for (int k = 0; k < n; ++k) {
      const Piece& q = pieces[r][k];
      if (q.lo != expect_lo) return ::testing::AssertionFailure() << "gap/overlap" << at;
      if (k > 0 && q.part != pieces[r][k - 1].part + 1) {
        return ::testing::AssertionFailure() << "pieces not in consecutive parts" << at;
      }
      if (q.slot != so[r] + k) {
        return ::testing::AssertionFailure() << "slot " << q.slot << " != " << so[r] + k << at;
      }
      expect_lo = q.hi;
    }
    if (expect_lo != b) return ::testing::AssertionFailure() << "not covered to the end" << at;
  }
  if (so[batch] > batch + num_parts - 1) {
    return ::testing::AssertionFailure() << "total splits " << so[batch] << " > b + parts - 1";
  }
  bool any_split = false;
  for (const auto& v : pieces) any_split = any_split || v.size() >= 2;
  if (s.parts[0].batch_has_split != (any_split ? 1 : 0)) {
    return ::testing::AssertionFailure() << "batch_has_split " << s.parts[0].batch_has_split
                                         << " but a request with >= 2 pieces "
                                         << (any_split ? "exists" : "does not exist");
  }
  return ::testing::AssertionSuccess();
}

// The greedy written the plain way (one request at a time), independent of the prefix-sum and
// search formulation of schedule_host. Returns (begin_req, begin_block, end_req, end_block) per
// non-empty part, or an empty vector if the work did not fit.
std::vector<std::array<int, 4>> naive_greedy(const std::vector<int32_t>& lens, int num_parts,
                                             const ScheduleTuning& t) {
  const int o = t.split_overhead_blocks;
  const int64_t payload = schedule_payload(total_cost(lens, t), num_parts, t);
  const int batch = static_cast<int>(lens.size());
  std::vector<std::array<int, 4>> out;
  int req = 0, block = 0;
  for (int p = 0; p < num_parts; ++p) {
    int64_t remain = payload;
    std::array<int, 4> part{-1, -1, -1, -1};
    while (req < batch) {
      const int b = schedule_blocks_of(lens[req]);
      if (b == 0) {
        ++req;
        continue;
      }
      if (part[0] < 0) part = {req, block, -1, -1};
      const int rest = b - block;
      if (rest + o <= remain) {
        remain -= rest + o;
        part[2] = req;
        part[3] = b;
        ++req;
        block = 0;
      } else {
        if (remain - o >= 1) {
          block += static_cast<int>(remain - o);
          part[2] = req;
          part[3] = block;
        }
        break;
      }
    }
    if (part[0] >= 0) out.push_back(part);
  }
  while (req < batch && schedule_blocks_of(lens[req]) == 0) ++req;
  if (req < batch) return {};
  return out;
}

std::vector<int32_t> random_lengths(std::mt19937_64& rng, int batch) {
  std::vector<int32_t> lens(batch);
  const int mode = std::uniform_int_distribution<int>(0, 6)(rng);
  std::uniform_int_distribution<int32_t> any(0, 131072);
  std::uniform_int_distribution<int32_t> small(0, 300);
  const double mean = std::uniform_real_distribution<double>(1, 16384)(rng);
  std::normal_distribution<double> normal(mean, mean / 2);
  const int32_t fixed = any(rng);
  for (int32_t& len : lens) {
    switch (mode) {
      case 0: len = any(rng); break;
      case 1: len = (rng() % 3 == 0) ? any(rng) : 0; break;  // many zeros
      case 2: len = fixed; break;                             // equal lengths
      case 3: len = small(rng); break;                        // tiny work
      case 4: len = static_cast<int32_t>(std::max(0.0, normal(rng))); break;  // varlen
      case 5: len = (rng() % 2) ? fixed : small(rng); break;
      default: len = (rng() % 64 == 0) ? 131072 : static_cast<int32_t>(rng() % 129); break;
    }
  }
  return lens;
}

TEST(SchedHeuristics, WorkedExamples) {
  EXPECT_EQ(num_m_blocks(1, 128, 1), 2);
  EXPECT_EQ(num_m_blocks(1, 16, 1), 1);
  EXPECT_EQ(num_m_blocks(2, 128, 1), 4);
  EXPECT_EQ(num_m_blocks(4, 16, 1), 1);
  EXPECT_EQ(num_m_blocks(1, 65, 1), 2);
  EXPECT_EQ(num_sm_parts(132, 1, 1), 132);
  EXPECT_EQ(num_sm_parts(132, 2, 1), 66);
  EXPECT_EQ(num_sm_parts(132, 4, 1), 33);
  EXPECT_EQ(num_sm_parts(132, 6, 1), 22);
  EXPECT_EQ(num_sm_parts(132, 1, 2), 66);
  EXPECT_EQ(num_sm_parts(100, 2, 1), 50);
  EXPECT_EQ(num_sm_parts(132, 200, 1), 1);
  EXPECT_EQ(num_sm_parts(0, 1, 1), 1);
  const ScheduleTuning t;
  EXPECT_EQ(t.split_overhead_blocks, 5);
  EXPECT_EQ(t.min_split_blocks, 4);
  EXPECT_EQ(schedule_payload(517, 66, t), 13);      // target E
  EXPECT_EQ(schedule_payload(32 * 21, 132, t), 11);  // target F
  EXPECT_EQ(schedule_payload(21, 66, t), 9);         // small work: minimum binds
  EXPECT_EQ(schedule_payload(0, 66, t), 9);
  // The grid never exceeds the SM count.
  for (int sms = 1; sms <= 264; ++sms) {
    for (int mb = 1; mb <= 8; ++mb) {
      for (int hkv = 1; hkv <= 4; ++hkv) {
        const int parts = num_sm_parts(sms, mb, hkv);
        ASSERT_GE(parts, 1);
        if (mb * hkv <= sms) ASSERT_LE(parts * mb * hkv, sms);
        if (mb * hkv <= sms) ASSERT_GT((parts + 1) * mb * hkv, sms);
      }
    }
  }
}

TEST(SchedHost, TargetCases) {
  const ScheduleTuning t;
  {  // E: one long request over 66 parts -> 64 pieces of 8 blocks.
    const Schedule s = run_host({32768}, 66, t);
    ASSERT_TRUE(verify({32768}, 66, t, s));
    EXPECT_EQ(s.split_offsets[1], 64);
    for (int p = 0; p < 64; ++p) EXPECT_EQ(s.parts[p].num_blocks, 8) << p;
    EXPECT_EQ(s.parts[64].num_blocks, 0);
    EXPECT_EQ(s.parts[0].batch_has_split, 1);
    EXPECT_EQ(s.parts[65].batch_has_split, 1);  // empty parts carry it too
  }
  {  // A: 128 equal requests over 132 parts: greedy keeps every request whole (no combine).
    const std::vector<int32_t> lens(128, 8192);
    const Schedule s = run_host(lens, 132, t);
    ASSERT_TRUE(verify(lens, 132, t, s));
    for (int i = 0; i < 128; ++i) EXPECT_EQ(s.split_offsets[i + 1] - s.split_offsets[i], 1);
    for (int p = 0; p < 132; ++p) EXPECT_EQ(s.parts[p].batch_has_split, 0) << p;
  }
  {  // F: 32 x 16 blocks over 132 parts: pieces of 6, 6, 4.
    const std::vector<int32_t> lens(32, 1024);
    const Schedule s = run_host(lens, 132, t);
    ASSERT_TRUE(verify(lens, 132, t, s));
    for (int i = 0; i < 32; ++i) EXPECT_EQ(s.split_offsets[i + 1] - s.split_offsets[i], 3);
    EXPECT_EQ(s.parts[0].batch_has_split, 1);
  }
  {  // Small work: 16 blocks -> 4 parts of 4 blocks, the rest empty.
    const Schedule s = run_host({1024}, 66, t);
    ASSERT_TRUE(verify({1024}, 66, t, s));
    EXPECT_EQ(s.split_offsets[1], 4);
    for (int p = 0; p < 4; ++p) EXPECT_EQ(s.parts[p].num_blocks, 4);
  }
  {  // All empty: every part empty, no split.
    const std::vector<int32_t> lens(50, 0);
    const Schedule s = run_host(lens, 132, t);
    ASSERT_TRUE(verify(lens, 132, t, s));
    EXPECT_EQ(s.split_offsets[50], 0);
    EXPECT_EQ(s.parts[0].batch_has_split, 0);
  }
  {  // One part takes everything, empty requests in the middle and at both ends.
    const std::vector<int32_t> lens{0, 5, 0, 0, 700, 1, 0};
    const Schedule s = run_host(lens, 1, t);
    ASSERT_TRUE(verify(lens, 1, t, s));
    EXPECT_EQ(s.parts[0].begin_req, 1);
    EXPECT_EQ(s.parts[0].end_req, 5);
    EXPECT_EQ(s.parts[0].num_blocks, 1 + 11 + 1);
  }
}

TEST(SchedHost, RandomInvariantsAndNaiveGreedy) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 3000; ++trial) {
    const int batch = (trial % 4 == 0) ? std::uniform_int_distribution<int>(1, 1024)(rng)
                                       : std::uniform_int_distribution<int>(1, 64)(rng);
    const int parts = std::uniform_int_distribution<int>(1, 200)(rng);
    ScheduleTuning t;
    if (trial % 3 == 1) {
      t.split_overhead_blocks = std::uniform_int_distribution<int>(0, 9)(rng);
      t.min_split_blocks = std::uniform_int_distribution<int>(1, 9)(rng);
    }
    const std::vector<int32_t> lens = random_lengths(rng, batch);
    SCOPED_TRACE("trial " + std::to_string(trial) + " batch " + std::to_string(batch) +
                 " parts " + std::to_string(parts) + " o " +
                 std::to_string(t.split_overhead_blocks) + " min " +
                 std::to_string(t.min_split_blocks));
    const Schedule s = run_host(lens, parts, t);
    ASSERT_TRUE(verify(lens, parts, t, s));

    const auto naive = naive_greedy(lens, parts, t);
    const int nonempty = static_cast<int>(std::count_if(
        s.parts.begin(), s.parts.end(), [](const PartMetadata& m) { return m.num_blocks > 0; }));
    if (total_cost(lens, t) > 0) ASSERT_FALSE(naive.empty()) << "the plain greedy did not fit";
    ASSERT_EQ(static_cast<int>(naive.size()), nonempty);
    for (int p = 0; p < nonempty; ++p) {
      ASSERT_EQ(s.parts[p].begin_req, naive[p][0]) << p;
      ASSERT_EQ(s.parts[p].begin_block, naive[p][1]) << p;
      ASSERT_EQ(s.parts[p].end_req, naive[p][2]) << p;
      ASSERT_EQ(s.parts[p].end_block, naive[p][3]) << p;
    }

    // Determinism: same input, same bytes.
    const Schedule again = run_host(lens, parts, t);
    ASSERT_EQ(0, std::memcmp(s.parts.data(), again.parts.data(),
                             s.parts.size() * sizeof(PartMetadata)));
    ASSERT_EQ(s.split_offsets, again.split_offsets);
  }
}

TEST(SchedHost, BalancedBoundIsTightWhenWorkIsLarge) {
  // With large work the bound is ceil(total/parts) + o, and the busiest part is close to it.
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const ScheduleTuning t;
  for (int trial = 0; trial < 200; ++trial) {
    const int batch = std::uniform_int_distribution<int>(1, 256)(rng);
    std::vector<int32_t> lens(batch);  // 64..2048 blocks each
    for (auto& len : lens) len = std::uniform_int_distribution<int32_t>(4096, 131072)(rng);
    const int parts = std::uniform_int_distribution<int>(16, 132)(rng);
    const Schedule s = run_host(lens, parts, t);
    ASSERT_TRUE(verify(lens, parts, t, s));
    const int64_t total = total_cost(lens, t);
    const int64_t bound = (total + parts - 1) / parts + t.split_overhead_blocks;
    if ((total + parts - 1) / parts >= t.min_split_blocks) {
      ASSERT_EQ(schedule_payload(total, parts, t), bound);
    } else {
      ASSERT_EQ(schedule_payload(total, parts, t), t.min_split_blocks + t.split_overhead_blocks);
    }
    int64_t max_blocks = 0;
    for (const auto& m : s.parts) max_blocks = std::max<int64_t>(max_blocks, m.num_blocks);
    // A busiest part carries at least the average block count.
    int64_t blocks = 0;
    for (int32_t len : lens) blocks += schedule_blocks_of(len);
    ASSERT_GE(max_blocks * parts, blocks);
  }
}

TEST(SchedHost, HugeBatchAndLengths) {
  std::mt19937_64 rng(std::random_device{}());
  const ScheduleTuning t;
  std::vector<int32_t> lens(65536);
  for (auto& len : lens) len = (rng() % 4 == 0) ? 0 : static_cast<int32_t>(rng() % 131073);
  for (int parts : {1, 66, 132, kMaxScheduleParts}) {
    const Schedule s = run_host(lens, parts, t);
    ASSERT_TRUE(verify(lens, parts, t, s)) << parts;
  }
  // Lengths near INT32_MAX: positions saturate but nothing is written out of range.
  std::vector<int32_t> big(4096, INT32_MAX);
  const Schedule s = run_host(big, 132, t);
  for (const auto& m : s.parts) {
    if (m.num_blocks == 0) continue;
    ASSERT_GE(m.begin_req, 0);
    ASSERT_LT(m.end_req, 4096);
    ASSERT_LE(m.begin_req, m.end_req);
  }
}

TEST(SchedHost, VerifierCatchesCorruptedSchedules) {
  // The invariant checker must be able to fail: corrupt one field at a time.
  const ScheduleTuning t;
  const std::vector<int32_t> lens{5000, 0, 9000, 64, 70000};
  const Schedule good = run_host(lens, 16, t);
  ASSERT_TRUE(verify(lens, 16, t, good));
  ASSERT_GT(good.parts[1].num_blocks, 0);
  for (int field = 0; field < 6; ++field) {
    Schedule bad = good;
    int32_t* f = &bad.parts[1].begin_req + field;
    *f += 1;
    EXPECT_FALSE(verify(lens, 16, t, bad)) << "field " << field;
  }
  Schedule bad = good;
  bad.split_offsets[3] += 1;
  EXPECT_FALSE(verify(lens, 16, t, bad));
  ASSERT_EQ(good.parts[0].batch_has_split, 1);
  for (int p : {0, 1, 15}) {  // the flag wrong in one record (non-empty or empty)
    Schedule flag = good;
    flag.parts[p].batch_has_split = 0;
    EXPECT_FALSE(verify(lens, 16, t, flag)) << "part " << p;
  }
}

TEST(SchedHost, RejectsBadArgumentsWithoutWriting) {
  std::vector<int32_t> lens{100};
  PartMetadata part{};
  part.num_blocks = -3;
  int32_t offsets[2] = {-3, -3};
  schedule_host(lens.data(), 1, 0, ScheduleTuning{}, &part, offsets);
  schedule_host(lens.data(), 1, kMaxScheduleParts + 1, ScheduleTuning{}, &part, offsets);
  schedule_host(lens.data(), 1, 1, ScheduleTuning{.split_overhead_blocks = -1}, &part, offsets);
  schedule_host(lens.data(), 1, 1, ScheduleTuning{.min_split_blocks = 0}, &part, offsets);
  EXPECT_EQ(part.num_blocks, -3);
  EXPECT_EQ(offsets[0], -3);
}

DecodeArgs shaped_args(int batch, int s_q, int h_q, int h_kv) {
  DecodeArgs a;
  a.batch = batch;
  a.seqlen_q = s_q;
  a.num_heads_q = h_q;
  a.num_heads_kv = h_kv;
  a.num_pages = 4;
  a.max_pages_per_seq = 4;
  return a;
}

TEST(SchedPlan, SizesAndWorkspaceLayout) {
  {  // E on an H200.
    const DecodePlan plan = plan_decode(shaped_args(1, 1, 128, 1), 132);
    EXPECT_EQ(plan.num_sms, 132);
    EXPECT_EQ(plan.rows_per_kv_head, 128);
    EXPECT_EQ(plan.num_m_blocks, 2);
    EXPECT_EQ(plan.num_sm_parts, 66);
    EXPECT_EQ(plan.max_partial_slots, 67);
    // 66 parts, 2 offsets (8 bytes) and 132 merge flags (528 bytes): 2648, rounded to 16.
    EXPECT_EQ(plan.schedule_bytes, 66u * 32 + 8 + 132 * 4 + 8);
    EXPECT_EQ(plan.workspace_bytes, 67u * 128 * 512 * 4 + 67u * 128 * 4 + (256 - 67 * 128 * 4 % 256) % 256);
  }
  std::mt19937_64 rng(std::random_device{}());
  for (int trial = 0; trial < 500; ++trial) {
    const int batch = std::uniform_int_distribution<int>(1, 4096)(rng);
    const int s_q = std::uniform_int_distribution<int>(1, 8)(rng);
    const int h_kv = std::uniform_int_distribution<int>(1, 4)(rng);
    const int h_q = h_kv * std::uniform_int_distribution<int>(1, 64)(rng);
    const int sms = std::uniform_int_distribution<int>(0, 200)(rng);
    const DecodeArgs args = shaped_args(batch, s_q, h_q, h_kv);
    const DecodePlan plan = plan_decode(args, sms);
    ASSERT_GE(plan.num_sm_parts, 1);
    if (sms > 0 && plan.num_m_blocks * h_kv <= sms) {
      ASSERT_LE(plan.num_sm_parts * plan.num_m_blocks * h_kv, sms);
    }
    ASSERT_EQ(plan.max_partial_slots, batch + plan.num_sm_parts);
    ASSERT_EQ(plan.schedule_bytes % 16, 0u);
    ASSERT_GE(plan.schedule_bytes,
              schedule_buffer_bytes(batch, plan.num_sm_parts, plan.num_m_blocks * h_kv));
    ASSERT_EQ(plan.workspace_bytes, decode_workspace_size(args, sms));
    alignas(256) static char base[256];
    const WorkspaceView v = workspace_view(base, plan, args);
    const size_t o_bytes = partial_o_elems(plan.max_partial_slots, s_q, h_q, 512) * 4;
    const size_t lse_off = static_cast<size_t>(reinterpret_cast<char*>(v.lse_partial) - base);
    ASSERT_EQ(reinterpret_cast<char*>(v.o_partial), base);
    ASSERT_EQ(lse_off % 256, 0u);
    ASSERT_GE(lse_off, o_bytes);
    ASSERT_LT(lse_off, o_bytes + 256);
    ASSERT_EQ(plan.workspace_bytes % 256, 0u);
    ASSERT_GE(plan.workspace_bytes, lse_off + partial_lse_elems(plan.max_partial_slots, s_q, h_q) * 4);
  }
}

}  // namespace
}  // namespace mla::detail
