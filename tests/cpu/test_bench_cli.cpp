// mla-bench option parsing: good options land in the right fields, bad ones give one clear
// message naming the option and what is allowed.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "../../tools/mla-bench/options.h"

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

}  // namespace
