// mla-bench option parsing: good options land in the right fields, bad ones give one clear
// message naming the option and what is allowed.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "../../tools/mla-bench/cases.h"
#include "../../tools/mla-bench/options.h"
#include "../../tools/mla-bench/verify.h"

namespace {

using mla_bench::BenchDType;
using mla_bench::parse_options;

TEST(BenchCli, DefaultsRunAllDefaultCases) {
  const auto r = parse_options(std::vector<std::string>{});
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_FALSE(r.options.custom);
  EXPECT_EQ(r.options.only_case, 0);
  EXPECT_EQ(r.options.iters, 50);
  EXPECT_TRUE(r.options.verify);
  EXPECT_EQ(r.options.dtype, BenchDType::kBF16);
  EXPECT_FALSE(r.options.causal);
  EXPECT_TRUE(r.options.json_path.empty());
  EXPECT_EQ(r.options.flush, mla_bench::FlushMode::kMemset);
}

TEST(BenchCli, ShapeOptionsMakeOneCustomCase) {
  std::mt19937 rng(std::random_device{}());
  const int batch = std::uniform_int_distribution<int>(1, 4096)(rng);
  const int seqlen = std::uniform_int_distribution<int>(1, 100000)(rng);
  const int kv = std::uniform_int_distribution<int>(1, 8)(rng);
  const int heads = kv * std::uniform_int_distribution<int>(1, 16)(rng);
  const int mtp = std::uniform_int_distribution<int>(1, 8)(rng);
  const auto r = parse_options(std::vector<std::string>{
      "--batch", std::to_string(batch), "--seqlen=" + std::to_string(seqlen), "--heads",
      std::to_string(heads), "--kv-heads", std::to_string(kv), "--mtp", std::to_string(mtp),
      "--varlen", "--causal", "--dtype", "fp16", "--iters", "7", "--no-verify", "--json",
      "out.json"});
  ASSERT_TRUE(r.ok) << r.error;
  const auto& o = r.options;
  EXPECT_TRUE(o.custom);
  EXPECT_EQ(o.batch, batch);
  EXPECT_EQ(o.seqlen, seqlen);
  EXPECT_EQ(o.heads, heads);
  EXPECT_EQ(o.kv_heads, kv);
  EXPECT_EQ(o.mtp, mtp);
  EXPECT_TRUE(o.varlen);
  EXPECT_TRUE(o.causal);
  EXPECT_EQ(o.dtype, BenchDType::kFP16);
  EXPECT_EQ(o.iters, 7);
  EXPECT_FALSE(o.verify);
  EXPECT_EQ(o.json_path, "out.json");
}

TEST(BenchCli, NonShapeOptionsKeepDefaultCases) {
  const auto r = parse_options(std::vector<std::string>{"--causal", "--iters", "3", "--case", "g"});
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_FALSE(r.options.custom);
  EXPECT_EQ(r.options.only_case, 'G');
  EXPECT_TRUE(r.options.causal);
}

TEST(BenchCli, FlushModes) {
  using mla_bench::FlushMode;
  const std::pair<const char*, FlushMode> modes[] = {
      {"memset", FlushMode::kMemset}, {"read", FlushMode::kRead}, {"none", FlushMode::kNone}};
  for (const auto& [name, mode] : modes) {
    const auto r = parse_options(std::vector<std::string>{"--flush", name});
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.options.flush, mode);
    EXPECT_FALSE(r.options.custom);
    EXPECT_STREQ(mla_bench::flush_mode_name(mode), name);
  }
}

TEST(BenchCli, HelpIsRecognised) {
  EXPECT_TRUE(parse_options(std::vector<std::string>{"--help"}).options.help);
  EXPECT_NE(std::string(mla_bench::usage_text()).find("--dtype"), std::string::npos);
}

// Every bad input fails, and the message names the option and says what is allowed.
TEST(BenchCli, BadOptionsNameTheOptionAndAllowedValues) {
  struct Bad {
    std::vector<std::string> args;
    std::vector<std::string> must_mention;
  };
  const std::vector<Bad> bad = {
      {{"--batch", "0"}, {"--batch", "[1,", "'0'"}},
      {{"--batch", "-4"}, {"--batch", "'-4'"}},
      {{"--batch", "12x"}, {"--batch", "'12x'"}},
      {{"--batch", "99999999999999999999"}, {"--batch"}},
      {{"--batch"}, {"--batch", "needs a value"}},
      {{"--seqlen", "abc"}, {"--seqlen", "'abc'"}},
      {{"--heads", ""}, {"--heads"}},
      {{"--mtp", "0"}, {"--mtp"}},
      {{"--iters", "0"}, {"--iters"}},
      {{"--dtype", "int4"}, {"--dtype", "bf16", "fp16", "'int4'"}},
      {{"--dtype"}, {"--dtype", "bf16"}},
      {{"--flush", "clean"}, {"--flush", "memset", "read", "none", "'clean'"}},
      {{"--flush"}, {"--flush", "memset"}},
      {{"--case", "Z"}, {"--case", "A, B"}},
      {{"--case", "C", "--batch", "2"}, {"--case"}},
      {{"--heads", "12", "--kv-heads", "5"}, {"--kv-heads", "divide"}},
      {{"--frobnicate"}, {"unknown option", "--frobnicate", "--batch"}},
      {{"--varlen=1"}, {"--varlen", "no value"}},
      {{"--json"}, {"--json"}},
      {{"positional"}, {"unknown option", "positional"}},
  };
  for (const Bad& b : bad) {
    const auto r = parse_options(b.args);
    std::string joined;
    for (const auto& a : b.args) joined += a + " ";
    EXPECT_FALSE(r.ok) << "accepted: " << joined;
    EXPECT_EQ(r.error.find('\n'), std::string::npos) << r.error;
    EXPECT_EQ(r.error.rfind("mla-bench: ", 0), 0u) << r.error;
    for (const auto& m : b.must_mention)
      EXPECT_NE(r.error.find(m), std::string::npos) << "'" << m << "' missing in: " << r.error;
  }
}

// ---- cases ----------------------------------------------------------------------------------

TEST(BenchCases, DefaultCasesAreDesignSection5) {
  const auto cases = mla_bench::default_cases();
  ASSERT_EQ(cases.size(), 8u);
  // name, b, s_q, s_k, h_q, varlen
  const struct { const char* n; int b, s_q, s_k, h_q; bool varlen; } want[] = {
      {"A", 128, 1, 8192, 16, false}, {"B", 128, 1, 8192, 64, false},
      {"C", 128, 1, 8192, 128, false}, {"D", 128, 2, 8192, 128, false},
      {"E", 1, 1, 32768, 128, false},  {"F", 32, 1, 1024, 16, false},
      {"G", 64, 1, 4096, 128, true},   {"H", 128, 4, 4096, 16, true}};
  for (size_t k = 0; k < cases.size(); ++k) {
    EXPECT_EQ(cases[k].name, want[k].n);
    EXPECT_EQ(cases[k].batch, want[k].b) << want[k].n;
    EXPECT_EQ(cases[k].seqlen_q, want[k].s_q) << want[k].n;
    EXPECT_EQ(cases[k].seqlen_k, want[k].s_k) << want[k].n;
    EXPECT_EQ(cases[k].heads_q, want[k].h_q) << want[k].n;
    EXPECT_EQ(cases[k].heads_kv, 1) << want[k].n;
    EXPECT_EQ(cases[k].varlen, want[k].varlen) << want[k].n;
  }
}

TEST(BenchCases, VarlenLengthsAreFixedPerSeedAndFollowTheDistribution) {
  std::mt19937 rng(std::random_device{}());
  mla_bench::CaseSpec c{.name = "x", .batch = 4000, .seqlen_q = 4,
                        .seqlen_k = std::uniform_int_distribution<int>(64, 8192)(rng),
                        .heads_q = 16, .heads_kv = 1, .varlen = true,
                        .length_seed = std::uniform_int_distribution<uint64_t>()(rng)};
  const auto a = mla_bench::case_lengths(c);
  EXPECT_EQ(a, mla_bench::case_lengths(c));  // same seed, same lengths
  double sum = 0;
  int clamped = 0;
  for (int32_t l : a) {
    EXPECT_GE(l, c.seqlen_q);
    sum += l;
    clamped += l == c.seqlen_q;
  }
  // max(normal(m, m/2), s_q): about 2.3% of draws fall below 0 and get clamped; mean ~1.004 m.
  EXPECT_NEAR(sum / a.size(), c.seqlen_k, 0.05 * c.seqlen_k);
  EXPECT_GT(clamped, 0);
  EXPECT_LT(clamped, 0.06 * a.size());
  c.length_seed ^= 1;
  EXPECT_NE(a, mla_bench::case_lengths(c));
  c.varlen = false;
  for (int32_t l : mla_bench::case_lengths(c)) EXPECT_EQ(l, c.seqlen_k);
}

TEST(BenchCases, PageLayoutIsAPermutationWithPoisonableSpares) {
  std::mt19937_64 rng(std::random_device{}());
  const int page = 64;
  std::vector<int32_t> lengths(std::uniform_int_distribution<int>(1, 40)(rng));
  for (auto& l : lengths) l = std::uniform_int_distribution<int>(0, 1000)(rng);
  const auto p = mla_bench::make_page_layout(lengths, page, rng());
  std::set<int32_t> seen;
  int64_t tokens = 0;
  bool in_order = true;
  int32_t prev = -1;
  for (size_t i = 0; i < lengths.size(); ++i) {
    const int pages = (lengths[i] + page - 1) / page;
    for (int j = 0; j < p.max_pages_per_seq; ++j) {
      const int32_t id = p.block_table[i * p.max_pages_per_seq + j];
      if (j >= pages) {
        EXPECT_EQ(id, mla_bench::kUnusedSlot);
        continue;
      }
      ASSERT_GE(id, 0);
      ASSERT_LT(id, p.num_pages);
      EXPECT_TRUE(seen.insert(id).second) << "page " << id << " used twice";
      EXPECT_EQ(p.valid_tokens[id], std::min(page, lengths[i] - j * page));
      tokens += p.valid_tokens[id];
      in_order = in_order && id == prev + 1;
      prev = id;
    }
  }
  int64_t want_tokens = 0;
  for (auto l : lengths) want_tokens += l;
  EXPECT_EQ(tokens, want_tokens);
  EXPECT_GT(p.num_pages, static_cast<int64_t>(seen.size()));  // spare pages exist
  for (int64_t k = 0; k < p.num_pages; ++k)
    if (!seen.count(static_cast<int32_t>(k))) EXPECT_EQ(p.valid_tokens[k], 0);
  if (seen.size() > 8) EXPECT_FALSE(in_order) << "pages should be in random physical order";
}

TEST(BenchCases, FlopsAndBytesCountLikeFlashMla) {
  // Case C: b=128, s_q=1, s_k=8192, h_q=128, h_kv=1, bf16.
  const int64_t sum = int64_t{128} * 8192;
  EXPECT_DOUBLE_EQ(mla_bench::case_flops(1, sum, 128), 2.0 * 1 * 1048576.0 * 128 * 1088);
  EXPECT_DOUBLE_EQ(mla_bench::case_bytes(128, 1, sum, 128, 1, 2),
                   (1048576.0 * 576 + 128.0 * 128 * 1088) * 2);
  // At the reference 515 us that is ~567 TFLOP/s, DESIGN.md's FlashMLA figure for case C.
  EXPECT_NEAR(mla_bench::case_flops(1, sum, 128) / 515e-6 / 1e12, 567, 1.0);
}

// ---- verification -----------------------------------------------------------------------------

TEST(BenchVerify, MeasuresErrorAndNonFinitePositions) {
  std::mt19937 rng(std::random_device{}());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const size_t n = 4096, m = 64;
  std::vector<float> ref(n), lse_ref(m);
  for (auto& v : ref) v = normal(rng);
  for (auto& v : lse_ref) v = 5.0f * normal(rng);
  lse_ref[3] = std::numeric_limits<float>::infinity();  // an empty row
  const auto tol = mla_bench::tolerance_for(true);

  auto same = mla_bench::compare_outputs(ref.data(), ref.data(), n, lse_ref.data(),
                                         lse_ref.data(), m, tol);
  EXPECT_TRUE(same.pass);
  EXPECT_EQ(same.out_rel_err, 0.0);

  // Relative perturbation of size e on every element: Frobenius error ~ e.
  for (double e : {1e-3, 1e-2}) {
    std::vector<float> got(ref);
    for (size_t k = 0; k < n; ++k) got[k] = ref[k] * static_cast<float>(1.0 + (k % 2 ? e : -e));
    auto r = mla_bench::compare_outputs(got.data(), ref.data(), n, lse_ref.data(), lse_ref.data(),
                                        m, tol);
    EXPECT_NEAR(r.out_rel_err, e, 0.01 * e);
    EXPECT_EQ(r.pass, e < tol.out_rel_fro);
  }

  std::vector<float> got(ref);
  got[std::uniform_int_distribution<size_t>(0, n - 1)(rng)] = std::nanf("");
  auto r = mla_bench::compare_outputs(got.data(), ref.data(), n, lse_ref.data(), lse_ref.data(),
                                      m, tol);
  EXPECT_FALSE(r.pass);
  EXPECT_EQ(r.out_nonfinite_mismatch, 1u);

  std::vector<float> lse(lse_ref);
  lse[3] = 0.0f;  // empty row reported as finite
  r = mla_bench::compare_outputs(ref.data(), ref.data(), n, lse.data(), lse_ref.data(), m, tol);
  EXPECT_FALSE(r.pass);
  EXPECT_EQ(r.lse_nonfinite_mismatch, 1u);

  lse = lse_ref;
  lse[0] = lse_ref[0] + 1e-3f * std::max(1.0f, std::fabs(lse_ref[0]));  // 10x the tolerance
  r = mla_bench::compare_outputs(ref.data(), ref.data(), n, lse.data(), lse_ref.data(), m, tol);
  EXPECT_FALSE(r.pass);
  EXPECT_GT(r.lse_err, tol.lse_rel);
}

}  // namespace
