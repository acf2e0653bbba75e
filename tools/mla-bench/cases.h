// mla-bench cases: the default DeepSeek-V3 decode shapes (DESIGN.md section 5) and the
// host-side construction of one case's lengths and page table.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace mla_bench {

inline constexpr int kBenchPageSize = 64;

struct CaseSpec {
  std::string name;
  int batch = 0;
  int seqlen_q = 1;
  int seqlen_k = 0;  // every request's length, or the mean length when varlen
  int heads_q = 0;
  int heads_kv = 1;
  bool varlen = false;
  uint64_t length_seed = 0;  // fixed per case: the same lengths every run
};

inline std::vector<CaseSpec> default_cases() {
  // name, b, s_q, s_k, h_q, h_kv, varlen, seed
  return {
      {"A", 128, 1, 8192, 16, 1, false, 1001}, {"B", 128, 1, 8192, 64, 1, false, 1002},
      {"C", 128, 1, 8192, 128, 1, false, 1003}, {"D", 128, 2, 8192, 128, 1, false, 1004},
      {"E", 1, 1, 32768, 128, 1, false, 1005},  {"F", 32, 1, 1024, 16, 1, false, 1006},
      {"G", 64, 1, 4096, 128, 1, true, 1007},   {"H", 128, 4, 4096, 16, 1, true, 1008},
  };
}

// Request lengths: seqlen_k each, or max(normal(mean, mean / 2), s_q) with the case's seed.
inline std::vector<int32_t> case_lengths(const CaseSpec& c) {
  std::vector<int32_t> len(static_cast<size_t>(c.batch), c.seqlen_k);
  if (!c.varlen) return len;
  std::mt19937_64 rng(c.length_seed);
  std::normal_distribution<double> normal(c.seqlen_k, c.seqlen_k / 2.0);
  // The upper clamp only guards int32 arithmetic; at mean + 6 sigma it never binds in practice.
  const double hi = std::min<double>(std::numeric_limits<int32_t>::max() / 2, 4.0 * c.seqlen_k + 64);
  for (auto& l : len) {
    const double x = std::round(normal(rng));
    l = static_cast<int32_t>(std::clamp<double>(x, c.seqlen_q, hi));
  }
  return len;
}

// Paged layout of one case: every request's pages placed at random physical pages, plus spare
// pages nobody references (they get poisoned).
struct PageLayout {
  int64_t num_pages = 0;
  int max_pages_per_seq = 0;
  std::vector<int32_t> block_table;   // [batch, max_pages_per_seq]; unused slots kUnusedSlot
  std::vector<int32_t> valid_tokens;  // [num_pages]: tokens of each physical page in use
};

// Out of range for every case, so a kernel that follows an unused slot faults or is caught
// by validate_contents instead of silently reading a real page.
inline constexpr int32_t kUnusedSlot = std::numeric_limits<int32_t>::max();

inline PageLayout make_page_layout(const std::vector<int32_t>& lengths, int page_size,
                                   uint64_t seed) {
  PageLayout p;
  int64_t used = 0;
  int max_pages = 1;
  for (int32_t l : lengths) {
    const int pages = (l + page_size - 1) / page_size;
    used += pages;
    max_pages = std::max(max_pages, pages);
  }
  p.num_pages = used + used / 16 + 1;
  p.max_pages_per_seq = max_pages;
  std::vector<int32_t> perm(static_cast<size_t>(p.num_pages));
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(perm.begin(), perm.end(), rng);

  p.block_table.assign(lengths.size() * static_cast<size_t>(max_pages), kUnusedSlot);
  p.valid_tokens.assign(static_cast<size_t>(p.num_pages), 0);
  size_t next = 0;
  for (size_t i = 0; i < lengths.size(); ++i) {
    const int pages = (lengths[i] + page_size - 1) / page_size;
    for (int j = 0; j < pages; ++j) {
      const int32_t phys = perm[next++];
      p.block_table[i * max_pages + j] = phys;
      p.valid_tokens[phys] = std::min(page_size, lengths[i] - j * page_size);
    }
  }
  return p;
}

// FlashMLA's counting (DESIGN.md section 5).
inline double case_flops(int s_q, int64_t sum_len, int h_q) {
  return 2.0 * s_q * static_cast<double>(sum_len) * h_q * (576 + 512);
}
inline double case_bytes(int b, int s_q, int64_t sum_len, int h_q, int h_kv, int elem_bytes) {
  return (static_cast<double>(sum_len) * h_kv * 576 +
          static_cast<double>(b) * s_q * h_q * (576 + 512)) *
         elem_bytes;
}

}  // namespace mla_bench
