// CPU reference (DESIGN.md section 1) and the host helpers shared with GPU tests and mla-bench.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "reference/cpu_reference.h"

namespace {

using mla::DType;
using mla::reference::RefProblem;
using mla::reference::RefResult;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

unsigned fresh_seed() { return std::random_device{}(); }

// Owns host arrays of a contiguous paged problem. Physical pages are assigned in a random order
// and every slot of the block table that no request uses holds an out-of-range id, so a reference
// that reads past cache_seqlens fails loudly.
struct HostProblem {
  int batch, s_q, h_q, h_kv, d_qk, d_v, page_size, max_pages, num_pages;
  bool causal = false;
  double scale = 0.0;
  std::vector<float> q, kv;
  std::vector<int32_t> table, lens;

  HostProblem(std::mt19937& rng, int batch_, int s_q_, int h_q_, int h_kv_, int d_qk_, int d_v_,
              int page_size_, std::vector<int32_t> lens_, int spare_pages = 3)
      : batch(batch_), s_q(s_q_), h_q(h_q_), h_kv(h_kv_), d_qk(d_qk_), d_v(d_v_),
        page_size(page_size_), lens(std::move(lens_)) {
    max_pages = 1;
    int used_total = 0;
    for (int32_t n : lens) {
      const int used = (n + page_size - 1) / page_size;
      max_pages = std::max(max_pages, used + 1);  // one spare column: never read
      used_total += used;
    }
    num_pages = used_total + spare_pages;
    std::vector<int32_t> perm(num_pages);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    table.assign(size_t(batch) * max_pages, 1 << 30);
    int next = 0;
    for (int i = 0; i < batch; ++i) {
      for (int j = 0; j < (lens[i] + page_size - 1) / page_size; ++j) table[i * max_pages + j] = perm[next++];
    }
    std::normal_distribution<float> nd(0.0f, 1.0f);
    q.resize(size_t(batch) * s_q * h_q * d_qk);
    for (float& x : q) x = nd(rng);
    kv.resize(size_t(num_pages) * page_size * h_kv * d_qk);
    for (float& x : kv) x = nd(rng);
  }

  RefProblem problem() const {
    return RefProblem{.batch = batch, .seqlen_q = s_q, .num_heads_q = h_q, .num_heads_kv = h_kv,
                      .head_dim_qk = d_qk, .head_dim_v = d_v, .page_size = page_size,
                      .num_pages = num_pages, .max_pages_per_seq = max_pages,
                      .q = q.data(), .q_batch_stride = int64_t{s_q} * h_q * d_qk,
                      .q_seq_stride = int64_t{h_q} * d_qk, .q_head_stride = d_qk,
                      .kv = kv.data(), .kv_page_stride = int64_t{page_size} * h_kv * d_qk,
                      .kv_token_stride = int64_t{h_kv} * d_qk, .kv_head_stride = d_qk,
                      .block_table = table.data(), .block_table_batch_stride = max_pages,
                      .cache_seqlens = lens.data(), .softmax_scale = scale, .causal = causal};
  }

  // Pointer to K row of token t of request i for kv head hk (used by the tests' own formulas).
  const float* key(int i, int t, int hk) const {
    const int page = table[i * max_pages + t / page_size];
    return kv.data() + ((size_t(page) * page_size + t % page_size) * h_kv + hk) * d_qk;
  }
  // Every kv element that no request may read.
  std::vector<size_t> unused_kv_elements() const {
    std::vector<char> used(kv.size(), 0);
    for (int i = 0; i < batch; ++i)
      for (int t = 0; t < lens[i]; ++t)
        for (int hk = 0; hk < h_kv; ++hk) {
          const size_t off = key(i, t, hk) - kv.data();
          std::fill(used.begin() + off, used.begin() + off + d_qk, 1);
        }
    std::vector<size_t> r;
    for (size_t e = 0; e < kv.size(); ++e)
      if (!used[e]) r.push_back(e);
    return r;
  }
};

RefResult run(const RefProblem& p) {
  RefResult r;
  const mla::Status st = mla::reference::decode_reference(p, &r);
  EXPECT_TRUE(st.ok()) << st.to_string();
  return r;
}

// Differently structured formula: gather the request's keys into a contiguous matrix, form the
// logits with a mask, exponentiate without max-subtraction (inputs are tiny) and normalise.
void direct_formula(const HostProblem& hp, RefResult* r) {
  const double scale = hp.scale > 0 ? hp.scale : 1.0 / std::sqrt(double(hp.d_qk));
  r->out.assign(size_t(hp.batch) * hp.s_q * hp.h_q * hp.d_v, -1.0);
  r->lse.assign(size_t(hp.batch) * hp.h_q * hp.s_q, -1.0);
  const int group = hp.h_q / hp.h_kv;
  for (int i = 0; i < hp.batch; ++i) {
    const int n = hp.lens[i];
    for (int h = 0; h < hp.h_q; ++h) {
      std::vector<double> K(size_t(n) * hp.d_qk);
      for (int t = 0; t < n; ++t)
        for (int d = 0; d < hp.d_qk; ++d) K[size_t(t) * hp.d_qk + d] = hp.key(i, t, h / group)[d];
      for (int s = 0; s < hp.s_q; ++s) {
        const float* qv = &hp.q[((size_t(i) * hp.s_q + s) * hp.h_q + h) * hp.d_qk];
        std::vector<double> e(n, 0.0);
        double z = 0.0;
        for (int t = 0; t < n; ++t) {
          const bool masked = hp.causal && t > n - hp.s_q + s;
          if (masked) continue;
          double logit = 0.0;
          for (int d = 0; d < hp.d_qk; ++d) logit += qv[d] * K[size_t(t) * hp.d_qk + d];
          e[t] = std::exp(scale * logit);
          z += e[t];
        }
        double* o = &r->out[((size_t(i) * hp.s_q + s) * hp.h_q + h) * hp.d_v];
        for (int d = 0; d < hp.d_v; ++d) {
          double acc = 0.0;
          for (int t = 0; t < n; ++t) acc += e[t] * K[size_t(t) * hp.d_qk + d];
          o[d] = z > 0 ? acc / z : 0.0;
        }
        r->lse[(size_t(i) * hp.h_q + h) * hp.s_q + s] = z > 0 ? std::log(z) : kInf;
      }
    }
  }
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  const auto c = mla::reference::compare(got.data(), want.data(), got.size(), tol, tol);
  EXPECT_TRUE(c.ok) << c.summary;
}

// ---- the reference against independent formulas ----

TEST(Reference, MatchesDirectFormulaOnTinyRandomProblems) {
  const unsigned seed = fresh_seed();
  std::mt19937 rng(seed);
  for (int trial = 0; trial < 12; ++trial) {
    const int h_kv = 1 + trial % 3;
    std::uniform_int_distribution<int> len(0, 13);
    std::vector<int32_t> lens = {len(rng), len(rng), len(rng)};
    HostProblem hp(rng, 3, 1 + trial % 4, h_kv * (1 + trial % 2), h_kv, 16, 12, 4, lens);
    hp.causal = trial % 2;
    hp.scale = trial % 3 == 0 ? 0.0 : 0.3;
    RefResult want;
    direct_formula(hp, &want);
    const RefResult got = run(hp.problem());
    SCOPED_TRACE("seed " + std::to_string(seed) + " trial " + std::to_string(trial));
    expect_close(got.out, want.out, 1e-12);
    expect_close(got.lse, want.lse, 1e-12);
  }
}

TEST(Reference, MatchesDirectFormulaAtMlaDimensions) {
  const unsigned seed = fresh_seed();
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> len(1, 200);
  HostProblem hp(rng, 2, 2, 8, 1, mla::kHeadDimQK, mla::kHeadDimV, mla::kPageSize, {len(rng), len(rng)});
  hp.causal = true;
  // Scale down so that exp() without max-subtraction in the direct formula stays in range.
  for (float& x : hp.q) x *= 0.1f;
  RefResult want;
  direct_formula(hp, &want);
  const RefResult got = run(hp.problem());
  SCOPED_TRACE("seed " + std::to_string(seed));
  expect_close(got.out, want.out, 1e-11);
  expect_close(got.lse, want.lse, 1e-11);
}

TEST(Reference, HandWorkedTwoKeys) {
  // q = [1, 0], k0 = [0, 5], k1 = [ln 3, 7], scale 1: scores 0 and ln 3, weights 1/4 and 3/4.
  // V is the first d_v = 1 dims of K: out = (1/4) * 0 + (3/4) * ln 3, lse = ln(1 + 3).
  const std::vector<float> q = {1.0f, 0.0f};
  const float ln3 = static_cast<float>(std::log(3.0));
  const std::vector<float> kv = {0.0f, 5.0f, ln3, 7.0f};  // one page of 2 tokens
  const std::vector<int32_t> table = {0}, lens = {2};
  RefProblem p{.batch = 1, .seqlen_q = 1, .num_heads_q = 1, .num_heads_kv = 1, .head_dim_qk = 2,
               .head_dim_v = 1, .page_size = 2, .num_pages = 1, .max_pages_per_seq = 1,
               .q = q.data(), .q_batch_stride = 2, .q_seq_stride = 2, .q_head_stride = 2,
               .kv = kv.data(), .kv_page_stride = 4, .kv_token_stride = 2, .kv_head_stride = 2,
               .block_table = table.data(), .block_table_batch_stride = 1,
               .cache_seqlens = lens.data(), .softmax_scale = 1.0};
  const RefResult r = run(p);
  // q and k hold float(ln 3): compare against the float-rounded value the reference sees.
  EXPECT_NEAR(r.out[0], 0.75 * double(ln3), 1e-7);
  EXPECT_NEAR(r.lse[0], std::log(4.0), 1e-7);
}

TEST(Reference, CausalIsBottomRightAlignedHandWorked) {
  // One request of 4 keys k_j = v_j = j (d = 1), q = 1, scale 1, s_q = 3. Query i sees keys
  // [0, 4 - 3 + i]: query 0 sees {0, 1}, query 1 {0, 1, 2}, query 2 all four.
  const std::vector<float> q = {1.0f, 1.0f, 1.0f};
  const std::vector<float> kv = {0.0f, 1.0f, 2.0f, 3.0f};
  const std::vector<int32_t> table = {0}, lens = {4};
  RefProblem p{.batch = 1, .seqlen_q = 3, .num_heads_q = 1, .num_heads_kv = 1, .head_dim_qk = 1,
               .head_dim_v = 1, .page_size = 4, .num_pages = 1, .max_pages_per_seq = 1,
               .q = q.data(), .q_batch_stride = 3, .q_seq_stride = 1, .q_head_stride = 1,
               .kv = kv.data(), .kv_page_stride = 4, .kv_token_stride = 1, .kv_head_stride = 1,
               .block_table = table.data(), .block_table_batch_stride = 1,
               .cache_seqlens = lens.data(), .softmax_scale = 1.0, .causal = true};
  const RefResult r = run(p);
  const double e = std::exp(1.0), e2 = e * e, e3 = e2 * e;
  EXPECT_NEAR(r.out[0], e / (1 + e), 1e-12);
  EXPECT_NEAR(r.out[1], (e + 2 * e2) / (1 + e + e2), 1e-12);
  EXPECT_NEAR(r.out[2], (e + 2 * e2 + 3 * e3) / (1 + e + e2 + e3), 1e-12);
  EXPECT_NEAR(r.lse[0], std::log(1 + e), 1e-12);
  EXPECT_NEAR(r.lse[1], std::log(1 + e + e2), 1e-12);
  EXPECT_NEAR(r.lse[2], std::log(1 + e + e2 + e3), 1e-12);

  // With a single key, the first two queries see nothing: out 0, lse +inf; the last sees key 0.
  const std::vector<int32_t> short_len = {1};
  p.cache_seqlens = short_len.data();
  const RefResult s = run(p);
  EXPECT_EQ(s.out[0], 0.0);
  EXPECT_EQ(s.out[1], 0.0);
  EXPECT_EQ(s.lse[0], kInf);
  EXPECT_EQ(s.lse[1], kInf);
  EXPECT_NEAR(s.out[2], 0.0, 1e-15);  // v_0 = 0
  EXPECT_NEAR(s.lse[2], 0.0, 1e-15);  // log(exp(0))
}

// ---- semantics of DESIGN.md section 1 ----

TEST(Reference, PoisonInUnusedPagesAndTailsNeverReachesOutput) {
  const unsigned seed = fresh_seed();
  std::mt19937 rng(seed);
  HostProblem hp(rng, 4, 2, 4, 2, 24, 16, 8, {5, 0, 17, 8});
  hp.causal = true;
  const RefResult clean = run(hp.problem());
  for (size_t e : hp.unused_kv_elements()) hp.kv[e] = (e % 2) ? kNaN : std::numeric_limits<float>::infinity();
  const RefResult poisoned = run(hp.problem());
  SCOPED_TRACE("seed " + std::to_string(seed));
  ASSERT_EQ(clean.out, poisoned.out);  // bitwise: the poisoned values are never even read
  for (size_t k = 0; k < clean.lse.size(); ++k) {
    EXPECT_TRUE(clean.lse[k] == poisoned.lse[k]) << k;
  }
  for (double x : poisoned.out) ASSERT_TRUE(std::isfinite(x));
}

TEST(Reference, PermutingPhysicalPagesLeavesResultIdentical) {
  const unsigned seed = fresh_seed();
  std::mt19937 rng(seed);
  HostProblem hp(rng, 3, 1, 4, 1, 20, 16, 4, {9, 13, 4});
  const RefResult before = run(hp.problem());
  std::vector<int32_t> perm(hp.num_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  HostProblem moved = hp;
  const size_t page_elems = size_t(hp.page_size) * hp.h_kv * hp.d_qk;
  for (int pg = 0; pg < hp.num_pages; ++pg) {
    std::copy_n(hp.kv.begin() + pg * page_elems, page_elems, moved.kv.begin() + perm[pg] * page_elems);
  }
  for (int32_t& e : moved.table)
    if (e >= 0 && e < hp.num_pages) e = perm[e];
  const RefResult after = run(moved.problem());
  SCOPED_TRACE("seed " + std::to_string(seed));
  EXPECT_EQ(before.out, after.out);
  EXPECT_EQ(before.lse, after.lse);
}

TEST(Reference, CausalWithOneQueryTokenEqualsNonCausal) {
  std::mt19937 rng(fresh_seed());
  HostProblem hp(rng, 3, 1, 4, 2, 16, 8, 4, {7, 1, 12});
  hp.causal = false;
  const RefResult plain = run(hp.problem());
  hp.causal = true;
  const RefResult causal = run(hp.problem());
  EXPECT_EQ(plain.out, causal.out);
  EXPECT_EQ(plain.lse, causal.lse);
}

TEST(Reference, CausalWithSeveralQueryTokensDiffersFromNonCausal) {
  // Guards the previous test against a reference that ignores `causal` altogether.
  std::mt19937 rng(fresh_seed());
  HostProblem hp(rng, 1, 3, 2, 1, 16, 8, 4, {10});
  const RefResult plain = run(hp.problem());
  hp.causal = true;
  const RefResult causal = run(hp.problem());
  EXPECT_NE(plain.lse, causal.lse);
}

TEST(Reference, ZeroLengthRequestGivesZeroOutAndInfiniteLse) {
  std::mt19937 rng(fresh_seed());
  HostProblem hp(rng, 3, 2, 4, 1, 16, 8, 4, {6, 0, 3});
  const RefResult r = run(hp.problem());
  const size_t row_out = size_t(hp.s_q) * hp.h_q * hp.d_v, row_lse = size_t(hp.h_q) * hp.s_q;
  for (size_t k = 0; k < row_out; ++k) EXPECT_EQ(r.out[row_out + k], 0.0);
  for (size_t k = 0; k < row_lse; ++k) {
    EXPECT_EQ(r.lse[row_lse + k], kInf);
    EXPECT_TRUE(std::isfinite(r.lse[k]));  // request 0 has keys
    EXPECT_TRUE(std::isfinite(r.lse[2 * row_lse + k]));
  }
}

TEST(Reference, QueryHeadsShareKvHeadsInContiguousGroups) {
  // h_q = 6, h_kv = 3: heads {0,1} read kv head 0, {2,3} kv head 1, {4,5} kv head 2. Poisoning
  // kv head 1 must reach exactly heads 2 and 3.
  std::mt19937 rng(fresh_seed());
  HostProblem hp(rng, 2, 1, 6, 3, 8, 8, 4, {5, 3});
  for (size_t tok = 0; tok < size_t(hp.num_pages) * hp.page_size; ++tok)
    for (int d = 0; d < hp.d_qk; ++d) hp.kv[(tok * hp.h_kv + 1) * hp.d_qk + d] = kNaN;
  const RefResult r = run(hp.problem());
  for (int i = 0; i < hp.batch; ++i)
    for (int h = 0; h < hp.h_q; ++h) {
      const double lse = r.lse[size_t(i) * hp.h_q + h];
      EXPECT_EQ(std::isnan(lse), h == 2 || h == 3) << "request " << i << " head " << h;
    }
}

TEST(Reference, PaddedStridesGiveTheSameResultAsContiguous) {
  std::mt19937 rng(fresh_seed());
  HostProblem hp(rng, 2, 2, 4, 2, 16, 8, 4, {7, 5});
  const RefResult contiguous = run(hp.problem());
  // Re-lay q with padded head and batch strides.
  const int64_t qhs = 24, qss = qhs * hp.h_q + 8, qbs = qss * hp.s_q + 40;
  std::vector<float> q2(size_t(qbs) * hp.batch, kNaN);  // padding is poison
  for (int i = 0; i < hp.batch; ++i)
    for (int s = 0; s < hp.s_q; ++s)
      for (int h = 0; h < hp.h_q; ++h)
        for (int d = 0; d < hp.d_qk; ++d)
          q2[i * qbs + s * qss + h * qhs + d] = hp.q[((size_t(i) * hp.s_q + s) * hp.h_q + h) * hp.d_qk + d];
  RefProblem p = hp.problem();
  p.q = q2.data();
  p.q_batch_stride = qbs;
  p.q_seq_stride = qss;
  p.q_head_stride = qhs;
  const RefResult padded = run(p);
  EXPECT_EQ(contiguous.out, padded.out);
  EXPECT_EQ(contiguous.lse, padded.lse);
}

TEST(Reference, SingleRequestMatchesWholeBatch) {
  std::mt19937 rng(fresh_seed());
  HostProblem hp(rng, 3, 2, 4, 1, 16, 8, 4, {4, 9, 2});
  const RefResult all = run(hp.problem());
  std::vector<double> out, lse;
  ASSERT_TRUE(mla::reference::decode_reference_request(hp.problem(), 1, &out, &lse).ok());
  const size_t ro = size_t(hp.s_q) * hp.h_q * hp.d_v, rl = size_t(hp.s_q) * hp.h_q;
  EXPECT_EQ(out, std::vector<double>(all.out.begin() + ro, all.out.begin() + 2 * ro));
  EXPECT_EQ(lse, std::vector<double>(all.lse.begin() + rl, all.lse.begin() + 2 * rl));
  EXPECT_FALSE(mla::reference::decode_reference_request(hp.problem(), 3, &out, &lse).ok());
}

TEST(Reference, RejectsBadTableInsteadOfReadingOutOfBounds) {
  std::mt19937 rng(fresh_seed());
  HostProblem hp(rng, 2, 1, 2, 1, 8, 8, 4, {5, 3});
  hp.table[hp.max_pages + 0] = hp.num_pages;  // request 1, page 0: one past the end
  RefResult r;
  mla::Status st = mla::reference::decode_reference(hp.problem(), &r);
  EXPECT_EQ(st.code(), mla::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("block_table[1][0]"), std::string::npos) << st.message();
  hp.table[hp.max_pages] = 0;
  hp.lens[0] = -2;
  st = mla::reference::decode_reference(hp.problem(), &r);
  EXPECT_NE(st.message().find("cache_seqlens[0]=-2"), std::string::npos) << st.message();
}

TEST(Reference, ProblemFromArgsCopiesLayout) {
  mla::DecodeArgs a;
  a.batch = 2;
  a.seqlen_q = 3;
  a.num_heads_q = 8;
  a.num_heads_kv = 2;
  a.num_pages = 5;
  a.max_pages_per_seq = 4;
  a.softmax_scale = 0.25f;
  a.causal = true;
  mla::set_contiguous_strides(a);
  a.kv_page_stride += 64;
  const float q = 0, kv = 0;
  const int32_t bt = 0, sl = 0;
  const RefProblem p = mla::reference::problem_from_args(a, &q, &kv, &bt, &sl);
  EXPECT_EQ(p.batch, 2);
  EXPECT_EQ(p.seqlen_q, 3);
  EXPECT_EQ(p.num_heads_kv, 2);
  EXPECT_EQ(p.q_seq_stride, 8 * 576);
  EXPECT_EQ(p.kv_page_stride, a.kv_page_stride);
  EXPECT_EQ(p.block_table_batch_stride, 4);
  EXPECT_EQ(p.softmax_scale, 0.25);
  EXPECT_TRUE(p.causal);
  EXPECT_EQ(p.q, &q);
  EXPECT_EQ(p.cache_seqlens, &sl);
}

// ---- half conversion ----

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(Conversion, EveryBf16AndFp16ValueRoundTrips) {
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    const uint16_t h = static_cast<uint16_t>(b);
    for (DType dt : {DType::kBF16, DType::kFP16}) {
      const float f = mla::reference::half_to_float(dt, h);
      const uint16_t back = mla::reference::float_to_half(dt, f);
      if (std::isnan(f)) {
        EXPECT_TRUE(std::isnan(mla::reference::half_to_float(dt, back))) << std::hex << b;
        EXPECT_EQ(back & 0x8000, h & 0x8000) << "NaN sign " << std::hex << b;
      } else {
        ASSERT_EQ(back, h) << mla::dtype_name(dt) << " bits 0x" << std::hex << b;
      }
    }
  }
}

TEST(Conversion, KnownValuesAndSpecials) {
  using namespace mla::reference;
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(float_to_fp16(1.0f), 0x3c00);
  EXPECT_EQ(float_to_fp16(-2.0f), 0xc000);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(float_to_fp16(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(kNaN))));
  EXPECT_TRUE(std::isnan(fp16_to_float(float_to_fp16(kNaN))));
  // A signalling-looking NaN whose payload lives only in the low bits must not become Inf.
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(float_of(0x7f800001u)))));
  EXPECT_TRUE(std::isnan(fp16_to_float(float_to_fp16(float_of(0x7f800001u)))));
  // Overflow: largest finite fp16 is 65504; 65520 is the rounding boundary to Inf.
  EXPECT_EQ(float_to_fp16(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_fp16(65519.0f), 0x7bff);
  EXPECT_EQ(float_to_fp16(65520.0f), 0x7c00);
  EXPECT_EQ(float_to_fp16(1e10f), 0x7c00);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds up to Inf
  // Ties to even.
  EXPECT_EQ(float_to_bf16(1.0f + 0x1p-8f), 0x3f80);
  EXPECT_EQ(float_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
  EXPECT_EQ(float_to_fp16(1.0f + 0x1p-11f), 0x3c00);
  EXPECT_EQ(float_to_fp16(1.0f + 3 * 0x1p-11f), 0x3c02);
  // fp16 subnormals: unit 2^-24.
  EXPECT_EQ(float_to_fp16(0x1p-24f), 0x0001);
  EXPECT_EQ(float_to_fp16(0x1p-25f), 0x0000);           // tie to even (0)
  EXPECT_EQ(float_to_fp16(1.5f * 0x1p-25f), 0x0001);
  EXPECT_EQ(float_to_fp16(3 * 0x1p-25f), 0x0002);       // tie between 1 and 2 units -> 2
  EXPECT_EQ(float_to_fp16(-0x1p-14f * 0.5f), 0x8200);
  EXPECT_EQ(fp16_to_float(0x0001), 0x1p-24f);
  EXPECT_EQ(fp16_to_float(0x03ff), 1023 * 0x1p-24f);
  EXPECT_EQ(float_to_fp16(1023.75f * 0x1p-24f), 0x0400);  // rounds up into the smallest normal
  // bf16 keeps float's denormals.
  EXPECT_EQ(bf16_to_float(0x0001), float_of(0x00010000u));
  EXPECT_EQ(float_to_bf16(-0.0f), 0x8000);
}

TEST(Conversion, RandomFloatsRoundToNearest) {
  const unsigned seed = fresh_seed();
  std::mt19937 rng(seed);
  std::uniform_int_distribution<uint32_t> any_bits;
  std::uniform_real_distribution<float> fp16_range(-70000.0f, 70000.0f);
  for (int k = 0; k < 100000; ++k) {
    for (DType dt : {DType::kBF16, DType::kFP16}) {
      float f = dt == DType::kBF16 ? float_of(any_bits(rng)) : fp16_range(rng);
      if (dt == DType::kFP16 && k % 2) f = std::ldexp(fp16_range(rng) / 70000.0f, -(k % 30));
      if (!std::isfinite(f)) continue;
      const uint16_t h = mla::reference::float_to_half(dt, f);
      const double got = mla::reference::half_to_float(dt, h);
      // No representable neighbour of the result may be strictly closer to f.
      for (int step : {-1, 1}) {
        const uint16_t nb = static_cast<uint16_t>(h + step);
        const double other = mla::reference::half_to_float(dt, nb);
        if (!std::isfinite(other) || std::signbit(other) != std::signbit(got)) continue;
        if (std::isinf(got)) continue;
        ASSERT_LE(std::abs(got - f), std::abs(other - f))
            << mla::dtype_name(dt) << " seed " << seed << " f=" << f << " bits 0x" << std::hex << h;
      }
    }
  }
}

// ---- comparison helper ----

TEST(Compare, AcceptsEqualAndCatchesPlantedError) {
  std::mt19937 rng(fresh_seed());
  std::normal_distribution<double> nd;
  std::vector<double> ref(1000);
  for (double& x : ref) x = nd(rng);
  std::vector<float> got(ref.begin(), ref.end());
  auto c = mla::reference::compare(got.data(), ref.data(), ref.size(), 1e-6, 1e-6);
  EXPECT_TRUE(c.ok) << c.summary;
  EXPECT_EQ(c.num_violations, 0u);
  EXPECT_LT(c.rel_frobenius, 1e-7);

  got[417] += 0.5f;
  c = mla::reference::compare(got.data(), ref.data(), ref.size(), 1e-3, 1e-3);
  EXPECT_FALSE(c.ok);
  EXPECT_EQ(c.num_violations, 1u);
  EXPECT_EQ(c.first_violation, 417u);
  EXPECT_EQ(c.max_abs_index, 417u);
  EXPECT_NEAR(c.max_abs_err, 0.5, 1e-6);
  EXPECT_NE(c.summary.find("MISMATCH"), std::string::npos) << c.summary;
  EXPECT_NE(c.summary.find("[417]"), std::string::npos) << c.summary;
}

TEST(Compare, RelativeFrobeniusOfUniformScaling) {
  std::vector<double> ref = {3.0, -4.0, 0.0, 12.0};
  std::vector<double> got = ref;
  for (double& x : got) x *= 1.01;
  const auto c = mla::reference::compare(got.data(), ref.data(), ref.size(), 1.0, 0.0);
  EXPECT_NEAR(c.rel_frobenius, 0.01, 1e-12);
  EXPECT_TRUE(c.ok) << c.summary;
}

TEST(Compare, NanAndInfPositionsMustMatch) {
  std::vector<double> ref = {1.0, kInf, 2.0, -kInf, 3.0};
  std::vector<float> got = {1.0f, std::numeric_limits<float>::infinity(), 2.0f,
                            -std::numeric_limits<float>::infinity(), 3.0f};
  auto c = mla::reference::compare(got.data(), ref.data(), ref.size(), 0.0, 0.0);
  EXPECT_TRUE(c.ok) << c.summary;  // same Inf at the same places is agreement

  got[2] = kNaN;
  c = mla::reference::compare(got.data(), ref.data(), ref.size(), 1e9, 1e9);
  EXPECT_FALSE(c.ok) << "a NaN must fail however loose the tolerance";
  EXPECT_EQ(c.nan_inf_mismatches, 1u);
  EXPECT_EQ(c.first_nan_inf_mismatch, 2u);

  got[2] = 2.0f;
  got[1] = 5.0f;  // finite where the reference has +inf (e.g. an empty row's lse)
  c = mla::reference::compare(got.data(), ref.data(), ref.size(), 1e9, 1e9);
  EXPECT_EQ(c.nan_inf_mismatches, 1u);
  got[1] = std::numeric_limits<float>::infinity();
  got[3] = std::numeric_limits<float>::infinity();  // wrong sign of Inf
  c = mla::reference::compare(got.data(), ref.data(), ref.size(), 1e9, 1e9);
  EXPECT_EQ(c.nan_inf_mismatches, 1u);
  EXPECT_EQ(c.first_nan_inf_mismatch, 3u);
}

TEST(Compare, ToleranceIsAbsolutePlusRelative) {
  const std::vector<double> ref = {100.0, 0.0};
  std::vector<double> got = {100.5, 0.0};
  EXPECT_TRUE(mla::reference::compare(got.data(), ref.data(), 2, 0.1, 0.005).ok);   // 0.5 <= 0.1 + 0.5
  EXPECT_FALSE(mla::reference::compare(got.data(), ref.data(), 2, 0.1, 0.003).ok);  // 0.5 > 0.1 + 0.3
  got = {100.0, 0.2};
  EXPECT_FALSE(mla::reference::compare(got.data(), ref.data(), 2, 0.1, 0.5).ok);    // |ref| = 0
}

}  // namespace
