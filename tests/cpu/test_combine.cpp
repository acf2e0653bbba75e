// CPU tests of the host combine reference against a direct softmax over all keys of a request.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "combine/combine_host.h"

namespace mla::detail {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr uint16_t kPoison = 0x7fc1;  // a NaN in both bf16 and fp16

// One batch of split requests with known full-softmax answers.
struct Case {
  int batch, s_q, h_q, d_v;
  std::vector<int32_t> split_offsets;
  std::vector<float> o_partial, lse_partial;
  std::vector<double> expect_out;  // [b, s_q, h_q, d_v]
  std::vector<double> expect_lse;  // [b, h_q, s_q]
};

// Each request gets num_splits[i] pieces; each row has its own random keys, cut into the pieces
// at random points (pieces may be empty: lse -inf, o poisoned with NaN).
Case make_case(std::mt19937_64& rng, int s_q, int h_q, int d_v,
               const std::vector<int>& num_splits, double empty_piece_rate) {
  Case c{.batch = static_cast<int>(num_splits.size()), .s_q = s_q, .h_q = h_q, .d_v = d_v};
  c.split_offsets.push_back(0);
  for (int n : num_splits) c.split_offsets.push_back(c.split_offsets.back() + n);
  const int slots = c.split_offsets.back();
  const int64_t rows = static_cast<int64_t>(s_q) * h_q;
  c.o_partial.assign(static_cast<size_t>(slots) * rows * d_v, kNaN);
  c.lse_partial.assign(static_cast<size_t>(slots) * rows, kNaN);
  c.expect_out.assign(static_cast<size_t>(c.batch) * rows * d_v, 0.0);
  c.expect_lse.assign(static_cast<size_t>(c.batch) * rows, kInf);
  std::normal_distribution<double> score(0.0, 4.0), value(0.0, 1.0);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int i = 0; i < c.batch; ++i) {
    const int n = num_splits[i];
    for (int s = 0; s < s_q; ++s) {
      for (int h = 0; h < h_q; ++h) {
        const int64_t row = static_cast<int64_t>(s) * h_q + h;
        // keys per piece
        std::vector<int> keys(n);
        for (int k = 0; k < n; ++k) keys[k] = unit(rng) < empty_piece_rate ? 0 : 1 + rng() % 40;
        std::vector<double> all_scores;
        std::vector<std::vector<double>> all_values;
        for (int k = 0; k < n; ++k) {
          std::vector<double> sc(keys[k]);
          std::vector<std::vector<double>> v(keys[k], std::vector<double>(d_v));
          for (int j = 0; j < keys[k]; ++j) {
            sc[j] = score(rng);
            for (double& x : v[j]) x = value(rng);
          }
          const int64_t slot_row = (c.split_offsets[i] + k) * rows + row;
          if (keys[k] == 0) {
            c.lse_partial[slot_row] = -std::numeric_limits<float>::infinity();
          } else {
            double m = -kInf;
            for (double x : sc) m = std::max(m, x);
            double sum = 0;
            for (double x : sc) sum += std::exp(x - m);
            c.lse_partial[slot_row] = static_cast<float>(m + std::log(sum));
            for (int d = 0; d < d_v; ++d) {
              double acc = 0;
              for (int j = 0; j < keys[k]; ++j) acc += std::exp(sc[j] - m) / sum * v[j][d];
              c.o_partial[slot_row * d_v + d] = static_cast<float>(acc);
            }
          }
          all_scores.insert(all_scores.end(), sc.begin(), sc.end());
          all_values.insert(all_values.end(), v.begin(), v.end());
        }
        if (all_scores.empty()) continue;  // expect 0 / +inf
        double m = -kInf;
        for (double x : all_scores) m = std::max(m, x);
        double sum = 0;
        for (double x : all_scores) sum += std::exp(x - m);
        c.expect_lse[(static_cast<int64_t>(i) * h_q + h) * s_q + s] = m + std::log(sum);
        for (int d = 0; d < d_v; ++d) {
          double acc = 0;
          for (size_t j = 0; j < all_scores.size(); ++j) {
            acc += std::exp(all_scores[j] - m) / sum * all_values[j][d];
          }
          c.expect_out[((static_cast<int64_t>(i) * s_q + s) * h_q + h) * d_v + d] = acc;
        }
      }
    }
  }
  return c;
}

struct Result {
  std::vector<uint16_t> out;  // with padding per head (strided layout)
  std::vector<float> lse;
  std::vector<double> out_f64;
  int64_t head_stride;
};

Result run(const Case& c, bool fp16, int head_pad) {
  Result r;
  r.head_stride = c.d_v + head_pad;
  r.out.assign(static_cast<size_t>(c.batch) * c.s_q * c.h_q * r.head_stride, kPoison);
  r.lse.assign(static_cast<size_t>(c.batch) * c.h_q * c.s_q, -12345.f);
  r.out_f64.assign(static_cast<size_t>(c.batch) * c.s_q * c.h_q * c.d_v, -99.0);
  CombineParams p{.batch = c.batch, .seqlen_q = c.s_q, .num_heads_q = c.h_q, .head_dim_v = c.d_v,
                  .split_offsets = c.split_offsets.data(), .o_partial = c.o_partial.data(),
                  .lse_partial = c.lse_partial.data(), .out = r.out.data(),
                  .out_batch_stride = c.s_q * c.h_q * r.head_stride,
                  .out_seq_stride = c.h_q * r.head_stride, .out_head_stride = r.head_stride,
                  .lse = r.lse.data(), .out_is_fp16 = fp16};
  combine_host(p, r.out_f64.data());
  return r;
}

uint16_t round_to(double x, bool fp16) {
  uint16_t bits;
  if (fp16) {
    const __half h = __double2half(x);
    std::memcpy(&bits, &h, 2);
  } else {
    const __nv_bfloat16 b = __double2bfloat16(x);
    std::memcpy(&bits, &b, 2);
  }
  return bits;
}

void expect_matches(const Case& c, const Result& r, bool fp16) {
  for (int i = 0; i < c.batch; ++i) {
    const int n = c.split_offsets[i + 1] - c.split_offsets[i];
    for (int s = 0; s < c.s_q; ++s) {
      for (int h = 0; h < c.h_q; ++h) {
        const int64_t lse_idx = (static_cast<int64_t>(i) * c.h_q + h) * c.s_q + s;
        const int64_t row = (static_cast<int64_t>(i) * c.s_q + s) * c.h_q + h;
        const std::string at = "request " + std::to_string(i) + " s " + std::to_string(s) +
                               " h " + std::to_string(h) + " splits " + std::to_string(n);
        if (n == 1) {  // untouched
          ASSERT_EQ(r.lse[lse_idx], -12345.f) << at;
          for (int d = 0; d < c.d_v; ++d) ASSERT_EQ(r.out[row * r.head_stride + d], kPoison) << at;
          continue;
        }
        const double want_lse = c.expect_lse[lse_idx];
        if (std::isinf(want_lse)) {
          ASSERT_EQ(r.lse[lse_idx], std::numeric_limits<float>::infinity()) << at;
        } else {
          ASSERT_NEAR(r.lse[lse_idx], want_lse, 1e-5 * (1 + std::fabs(want_lse))) << at;
        }
        for (int d = 0; d < c.d_v; ++d) {
          const double got = r.out_f64[row * c.d_v + d];
          const double want = c.expect_out[row * c.d_v + d];
          ASSERT_TRUE(std::isfinite(got)) << at;
          ASSERT_NEAR(got, want, 1e-5 * (1 + std::fabs(want))) << at << " d " << d;
          ASSERT_EQ(r.out[row * r.head_stride + d], round_to(got, fp16)) << at << " d " << d;
        }
        for (int d = c.d_v; d < r.head_stride; ++d) {
          ASSERT_EQ(r.out[row * r.head_stride + d], kPoison) << "padding written " << at;
        }
      }
    }
  }
}

TEST(CombineHost, MatchesDirectSoftmaxManyPieces) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<int> splits(1 + rng() % 5);
    for (int& n : splits) n = static_cast<int>(rng() % 70);  // 0, 1, and many pieces
    const int s_q = 1 + rng() % 2, h_q = 1 + rng() % 3, d_v = 4 * (1 + rng() % 4);
    const Case c = make_case(rng, s_q, h_q, d_v, splits, trial % 2 ? 0.3 : 0.0);
    const bool fp16 = trial % 2;
    const Result r = run(c, fp16, trial % 3 == 0 ? 4 : 0);
    expect_matches(c, r, fp16);
  }
}

TEST(CombineHost, EdgeCases) {
  std::mt19937_64 rng(std::random_device{}());
  // 0 splits -> 0 / +inf; 1 split -> untouched; 2 splits with one empty piece -> the other piece
  // exactly (weight exp(0) = 1); all pieces empty -> 0 / +inf.
  Case c = make_case(rng, 1, 2, 8, {0, 1, 2, 3}, 0.0);
  const int64_t rows = c.s_q * c.h_q;
  // request 2: first piece empty
  for (int64_t r = 0; r < rows; ++r) {
    c.lse_partial[(c.split_offsets[2] + 0) * rows + r] = -INFINITY;
    for (int d = 0; d < c.d_v; ++d) c.o_partial[((c.split_offsets[2] + 0) * rows + r) * c.d_v + d] = kNaN;
  }
  // request 3: all pieces empty
  for (int k = 0; k < 3; ++k) {
    for (int64_t r = 0; r < rows; ++r) c.lse_partial[(c.split_offsets[3] + k) * rows + r] = -INFINITY;
  }
  const Result res = run(c, false, 0);
  for (int h = 0; h < c.h_q; ++h) {
    EXPECT_EQ(res.lse[(0 * c.h_q + h)], INFINITY);
    EXPECT_EQ(res.lse[(3 * c.h_q + h)], INFINITY);
    EXPECT_EQ(res.lse[(1 * c.h_q + h)], -12345.f);
    EXPECT_FLOAT_EQ(res.lse[2 * c.h_q + h], c.lse_partial[(c.split_offsets[2] + 1) * rows + h]);
    for (int d = 0; d < c.d_v; ++d) {
      EXPECT_EQ(res.out[(0 * c.h_q + h) * c.d_v + d], 0);
      EXPECT_EQ(res.out[(3 * c.h_q + h) * c.d_v + d], 0);
      EXPECT_EQ(res.out[(1 * c.h_q + h) * c.d_v + d], kPoison);
      // a single surviving piece is passed through with weight exactly 1
      EXPECT_EQ(res.out_f64[(2 * c.h_q + h) * c.d_v + d],
                static_cast<double>(c.o_partial[((c.split_offsets[2] + 1) * rows + h) * c.d_v + d]));
    }
  }
}

TEST(CombineHost, ExtremeLseValues) {
  // Very different magnitudes: the max-shift must keep exp() finite.
  std::vector<int32_t> offsets{0, 3};
  const int d_v = 4;
  std::vector<float> lse{1000.f, -1000.f, 999.f};
  std::vector<float> o{1, 1, 1, 1, 5, 5, 5, 5, 2, 2, 2, 2};
  std::vector<uint16_t> out(d_v, kPoison);
  float out_lse = 0;
  std::vector<double> f64(d_v);
  CombineParams p{.batch = 1, .seqlen_q = 1, .num_heads_q = 1, .head_dim_v = d_v,
                  .split_offsets = offsets.data(), .o_partial = o.data(), .lse_partial = lse.data(),
                  .out = out.data(), .out_batch_stride = d_v, .out_seq_stride = d_v,
                  .out_head_stride = d_v, .lse = &out_lse, .out_is_fp16 = true};
  combine_host(p, f64.data());
  const double w0 = 1 / (1 + std::exp(-1.0)), w2 = std::exp(-1.0) / (1 + std::exp(-1.0));
  EXPECT_NEAR(out_lse, 1000 + std::log1p(std::exp(-1.0)), 1e-3);
  for (int d = 0; d < d_v; ++d) EXPECT_NEAR(f64[d], w0 * 1 + w2 * 2, 1e-12);
}

// The launch shape of combine: the kernel per row count and the column-chunk rule (H200: 132 SMs).
TEST(CombineShape, ColumnChunks) {
  // (rows, SMs, warp per row, batch, parts): 528 CTAs resident on 132 SMs, >= 2 pieces per group.
  EXPECT_EQ(combine_column_chunks(16, 132, false, 1, 132), 4);    // b = 1, h_q = 16
  EXPECT_EQ(combine_column_chunks(128, 132, false, 1, 66), 4);    // E: b = 1, h_q = 128
  EXPECT_EQ(combine_column_chunks(132, 132, false, 1, 66), 4);    // 528 CTAs: all resident
  EXPECT_EQ(combine_column_chunks(133, 132, false, 1, 66), 2);
  EXPECT_EQ(combine_column_chunks(256, 132, false, 2, 66), 2);    // b = 2, h_q = 128
  EXPECT_EQ(combine_column_chunks(264, 132, false, 2, 66), 2);
  EXPECT_EQ(combine_column_chunks(265, 132, false, 2, 66), 1);
  EXPECT_EQ(combine_column_chunks(128, 132, false, 8, 132), 2);   // 17 pieces: 8 x 4 > 17
  EXPECT_EQ(combine_column_chunks(64, 132, false, 5, 132), 2);    // 27 pieces: 4 x 8 > 27
  EXPECT_EQ(combine_column_chunks(64, 132, false, 4, 132), 4);    // 33 pieces
  EXPECT_EQ(combine_column_chunks(64, 132, false, 9, 132), 1);    // 15 pieces: 8 x 2 > 15
  EXPECT_EQ(combine_column_chunks(512, 132, false, 32, 132), 1);  // F
  EXPECT_EQ(combine_column_chunks(1, 132, false, 1, 132), 4);
  EXPECT_EQ(combine_column_chunks(16, 132, false, 1, 0), 4);      // parts unknown: many pieces
  EXPECT_EQ(combine_column_chunks(16, 132, true, 1, 132), 1);     // warp per row: never cut
  EXPECT_EQ(combine_column_chunks(16, 0, false, 1, 132), 1);      // no SM count known
  CombineParams p;
  p.batch = 32;
  p.num_sm_parts = 132;
  EXPECT_FALSE(combine_warp_per_row(p));  // F: more parts than 2 x batch
  p.batch = 128;
  EXPECT_TRUE(combine_warp_per_row(p));   // A, C, H
  p.num_sm_parts = 0;
  EXPECT_FALSE(combine_warp_per_row(p));  // 0: the CTA-per-row kernel
}

}  // namespace
}  // namespace mla::detail
