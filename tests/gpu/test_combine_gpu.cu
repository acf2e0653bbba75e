// GPU tests of the combine kernel against its host reference, and of a CUDA graph holding
// scheduler + combine that is replayed after cache_seqlens changes in place.
#include <cuda_runtime.h>
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

#include "combine/combine.h"
#include "gpu/hopper_gpu.h"
#include "combine/combine_host.h"
#include "sched/metadata.h"
#include "sched/scheduler.h"

namespace mla::detail {
namespace {


#define CUDA_OK(expr) ASSERT_EQ((expr), cudaSuccess) << #expr

constexpr uint16_t kPoison = 0x7fc1;  // NaN in bf16 and fp16
constexpr float kLsePoison = -12345.f;

float to_float(uint16_t bits, bool fp16) {
  if (fp16) {
    __half_raw h;
    h.x = bits;
    return __half2float(__half(h));
  }
  __nv_bfloat16_raw b;
  b.x = bits;
  return __bfloat162float(__nv_bfloat16(b));
}

// Random partials for `slots` slots; a fraction of the (slot, row) pairs have no key (lse -inf,
// o NaN: must never be read into the result).
void fill_partials(std::mt19937_64& rng, int slots, int rows, int d_v, double empty_rate,
                   std::vector<float>& o, std::vector<float>& lse) {
  o.resize(static_cast<size_t>(slots) * rows * d_v);
  lse.resize(static_cast<size_t>(slots) * rows);
  std::normal_distribution<float> val(0.f, 1.f), l(0.f, 6.f);
  std::uniform_real_distribution<double> unit(0, 1);
  for (size_t r = 0; r < lse.size(); ++r) {
    const bool empty = unit(rng) < empty_rate;
    lse[r] = empty ? -std::numeric_limits<float>::infinity() : l(rng);
    for (int d = 0; d < d_v; ++d) {
      o[r * d_v + d] = empty ? std::numeric_limits<float>::quiet_NaN() : val(rng);
    }
  }
}

struct Shape {
  int batch, s_q, h_q, d_v;
  int head_pad;  // extra elements per head in out (strided output)
};

// Device buffers of one combine problem.
struct DeviceCombine {
  Shape sh;
  int slots;
  int32_t* offsets = nullptr;
  float *o = nullptr, *lse_part = nullptr, *lse = nullptr;
  uint16_t* out = nullptr;
  size_t out_elems, lse_elems;
  DeviceCombine(const Shape& s, int slots_) : sh(s), slots(slots_) {
    out_elems = static_cast<size_t>(s.batch) * s.s_q * s.h_q * (s.d_v + s.head_pad);
    lse_elems = static_cast<size_t>(s.batch) * s.h_q * s.s_q;
    cudaMalloc(&offsets, sizeof(int32_t) * (s.batch + 1));
    cudaMalloc(&o, sizeof(float) * static_cast<size_t>(slots) * s.s_q * s.h_q * s.d_v);
    cudaMalloc(&lse_part, sizeof(float) * static_cast<size_t>(slots) * s.s_q * s.h_q);
    cudaMalloc(&lse, sizeof(float) * lse_elems);
    cudaMalloc(&out, sizeof(uint16_t) * out_elems);
  }
  ~DeviceCombine() {
    cudaFree(offsets);
    cudaFree(o);
    cudaFree(lse_part);
    cudaFree(lse);
    cudaFree(out);
  }
  CombineParams params(bool fp16) const {
    const int64_t hs = sh.d_v + sh.head_pad;
    return CombineParams{.batch = sh.batch, .seqlen_q = sh.s_q, .num_heads_q = sh.h_q,
                         .head_dim_v = sh.d_v, .split_offsets = offsets, .o_partial = o,
                         .lse_partial = lse_part, .out = out,
                         .out_batch_stride = sh.s_q * sh.h_q * hs,
                         .out_seq_stride = sh.h_q * hs, .out_head_stride = hs, .lse = lse,
                         .out_is_fp16 = fp16};
  }
  void poison_outputs() {
    std::vector<uint16_t> out_p(out_elems, kPoison);
    std::vector<float> lse_p(lse_elems, kLsePoison);
    cudaMemcpy(out, out_p.data(), out_elems * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(lse, lse_p.data(), lse_elems * 4, cudaMemcpyHostToDevice);
  }
};

// Compares device out/lse with combine_host on the same host inputs. Rows of single-split
// requests (and of two-split ones with two_piece_merged) must be left untouched.
void expect_same_as_host(const DeviceCombine& dc, bool fp16, const std::vector<int32_t>& offsets,
                         const std::vector<float>& o, const std::vector<float>& lse_part,
                         bool two_piece_merged) {
  const Shape& s = dc.sh;
  std::vector<uint16_t> dev_out(dc.out_elems), host_out(dc.out_elems, kPoison);
  std::vector<float> dev_lse(dc.lse_elems), host_lse(dc.lse_elems, kLsePoison);
  ASSERT_EQ(cudaMemcpy(dev_out.data(), dc.out, dc.out_elems * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dev_lse.data(), dc.lse, dc.lse_elems * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  CombineParams hp = dc.params(fp16);
  hp.split_offsets = offsets.data();
  hp.o_partial = o.data();
  hp.lse_partial = lse_part.data();
  hp.out = host_out.data();
  hp.lse = host_lse.data();
  std::vector<double> f64(static_cast<size_t>(s.batch) * s.s_q * s.h_q * s.d_v, 0.0);
  combine_host(hp, f64.data());
  const int64_t hs = s.d_v + s.head_pad;
  int64_t checked = 0;
  for (int i = 0; i < s.batch; ++i) {
    const int n = offsets[i + 1] - offsets[i];
    const bool untouched = n == 1 || (two_piece_merged && n == 2);
    for (int q = 0; q < s.s_q; ++q) {
      for (int h = 0; h < s.h_q; ++h) {
        const std::string at = "request " + std::to_string(i) + " (" + std::to_string(n) +
                               " splits) s " + std::to_string(q) + " h " + std::to_string(h);
        const int64_t li = (static_cast<int64_t>(i) * s.h_q + h) * s.s_q + q;
        if (untouched) {
          ASSERT_EQ(dev_lse[li], kLsePoison) << "row the main kernel writes touched: " << at;
        } else if (std::isinf(host_lse[li])) {
          ASSERT_EQ(dev_lse[li], host_lse[li]) << at;
        } else {
          ASSERT_NEAR(dev_lse[li], host_lse[li], 2e-6f * (1 + std::fabs(host_lse[li]))) << at;
        }
        const int64_t row = (static_cast<int64_t>(i) * s.s_q + q) * s.h_q + h;
        for (int d = 0; d < hs; ++d) {
          const uint16_t got = dev_out[row * hs + d];
          if (untouched || d >= s.d_v) {
            ASSERT_EQ(got, kPoison) << "must not be written: " << at << " d " << d;
            continue;
          }
          const double want = f64[row * s.d_v + d];
          const float g = to_float(got, fp16);
          ASSERT_TRUE(std::isfinite(g)) << at << " d " << d;
          // fp32 accumulation vs double, then one rounding to 8 (bf16) / 11 (fp16) bits.
          const double ulp = fp16 ? 1.0 / 1024 : 1.0 / 128;
          ASSERT_NEAR(g, want, ulp * std::fabs(want) + 1e-5) << at << " d " << d;
          ++checked;
        }
      }
    }
  }
  (void)checked;
}

void run_case(std::mt19937_64& rng, const Shape& s, const std::vector<int>& splits, bool fp16,
              bool pdl, double empty_rate, bool two_piece_merged = false) {
  std::vector<int32_t> offsets{0};
  for (int n : splits) offsets.push_back(offsets.back() + n);
  const int slots = std::max(1, offsets.back());
  std::vector<float> o, lse_part;
  fill_partials(rng, slots, s.s_q * s.h_q, s.d_v, empty_rate, o, lse_part);
  DeviceCombine dc(s, slots);
  CUDA_OK(cudaMemcpy(dc.offsets, offsets.data(), offsets.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dc.o, o.data(), o.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dc.lse_part, lse_part.data(), lse_part.size() * 4, cudaMemcpyHostToDevice));
  // All kernel variants: CTA per row (num_sm_parts = 0), warp per row (few parts), and CTA per
  // row cut into column chunks (for an H200's 132 SMs with the piece count unknown: 4 chunks up to
  // 132 rows, 2 up to 264; combine_column_chunks).
  for (int variant : {0, 1, 2}) {
    SCOPED_TRACE(variant == 1 ? "warp-per-row combine"
                              : (variant == 2 ? "CTA-per-row combine, column chunks for 132 SMs"
                                              : "CTA-per-row combine"));
    dc.poison_outputs();
    CombineParams p = dc.params(fp16);
    p.num_sm_parts = variant == 1 ? 1 : 0;
    p.num_sms = variant == 2 ? 132 : 0;
    p.two_piece_merged = two_piece_merged;
    CUDA_OK(launch_combine(p, nullptr, pdl));
    CUDA_OK(cudaDeviceSynchronize());
    expect_same_as_host(dc, fp16, offsets, o, lse_part, two_piece_merged);
  }
}

TEST(CombineGpu, EqualsHostReference) {
  MLA_SKIP_WITHOUT_HOPPER();
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int fp16 = 0; fp16 < 2; ++fp16) {
    for (int pdl = 0; pdl < 2; ++pdl) {
      SCOPED_TRACE(std::string(fp16 ? "fp16" : "bf16") + (pdl ? " pdl" : ""));
      // Mixed: 0, 1, 2 and many splits, MTP rows, some pieces without keys, strided out.
      std::vector<int> splits(40);
      for (int& n : splits) n = static_cast<int>(rng() % 5 == 0 ? rng() % 100 : rng() % 3);
      run_case(rng, {40, 2, 16, 512, 8}, splits, fp16, pdl, 0.1);
      // b = 1, 80 splits, h = 128 (target E shape).
      run_case(rng, {1, 1, 128, 512, 0}, {80}, fp16, pdl, 0.0);
      // Every piece of some rows empty.
      run_case(rng, {3, 1, 8, 512, 0}, {4, 2, 0}, fp16, pdl, 0.7);
      // As decode_dense runs it: two-piece requests were merged by the main kernel.
      run_case(rng, {40, 2, 16, 512, 8}, splits, fp16, pdl, 0.1, /*two_piece_merged=*/true);
    }
  }
  // b = 128, h = 128, every request in 2 pieces (target C shape).
  run_case(rng, {128, 1, 128, 512, 0}, std::vector<int>(128, 2), false, true, 0.0);
  // head_dim_v other than 512, odd head stride (scalar-store path); 15 rows: 4 column chunks of
  // 5, 5, 5 and 2 float4 columns for 132 SMs.
  run_case(rng, {5, 1, 3, 68, 1}, {2, 3, 1, 0, 7}, true, false, 0.2);
  // 200 rows (2 column chunks for 132 SMs), 40 rows (4 chunks) and 16 rows (4 chunks, one split
  // per SM).
  run_case(rng, {1, 1, 200, 512, 0}, {70}, false, true, 0.05);
  run_case(rng, {1, 1, 40, 512, 0}, {70}, false, true, 0.05);
  run_case(rng, {1, 1, 16, 512, 0}, {132}, true, true, 0.0);
}

TEST(CombineGpu, RejectsBadArguments) {
  MLA_SKIP_WITHOUT_HOPPER();
  DeviceCombine dc({1, 1, 1, 512, 0}, 2);
  CombineParams p = dc.params(false);
  p.head_dim_v = 510;
  EXPECT_EQ(launch_combine(p, nullptr, false), cudaErrorInvalidValue);
  p = dc.params(false);
  p.split_offsets = nullptr;
  EXPECT_EQ(launch_combine(p, nullptr, false), cudaErrorInvalidValue);
  p = dc.params(false);
  p.batch = 0;
  EXPECT_EQ(launch_combine(p, nullptr, true), cudaErrorInvalidValue);
}

// A graph of scheduler + combine (PDL edge) captured once, replayed after the lengths change in
// place: the schedule (and so which requests combine merges) must follow the new lengths.
TEST(CombineGpu, GraphReplayFollowsNewLengths) {
  MLA_SKIP_WITHOUT_HOPPER();
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int batch = 24, parts = 66;
  const Shape s{batch, 1, 32, 512, 0};
  const int slots = batch + parts;
  const ScheduleTuning tuning;
  std::vector<float> o, lse_part;
  fill_partials(rng, slots, s.s_q * s.h_q, s.d_v, 0.05, o, lse_part);

  DeviceCombine dc(s, slots);
  int32_t* d_lens = nullptr;
  void* d_sched = nullptr;
  const size_t sched_bytes = schedule_buffer_bytes(batch, parts, 0);
  CUDA_OK(cudaMalloc(&d_lens, sizeof(int32_t) * batch));
  CUDA_OK(cudaMalloc(&d_sched, sched_bytes));
  CUDA_OK(cudaMemcpy(dc.o, o.data(), o.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dc.lse_part, lse_part.data(), lse_part.size() * 4, cudaMemcpyHostToDevice));
  // Combine reads split_offsets straight from the schedule buffer.
  CombineParams p = dc.params(false);
  p.split_offsets = static_cast<const int32_t*>(schedule_split_offsets(d_sched, parts));

  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::vector<int32_t> lens(batch, 1);
  CUDA_OK(cudaMemcpy(d_lens, lens.data(), batch * 4, cudaMemcpyHostToDevice));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  CUDA_OK(launch_schedule(d_lens, batch, parts, tuning, d_sched, stream));
  CUDA_OK(launch_combine(p, stream, true));
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));

  for (int round = 0; round < 6; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    for (auto& len : lens) {
      len = (rng() % 4 == 0) ? 0 : static_cast<int32_t>(rng() % (round < 3 ? 40000 : 3000));
    }
    CUDA_OK(cudaMemcpy(d_lens, lens.data(), batch * 4, cudaMemcpyHostToDevice));
    dc.poison_outputs();
    CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));

    std::vector<PartMetadata> hparts(parts);
    std::vector<int32_t> hoffsets(batch + 1);
    schedule_host(lens.data(), batch, parts, tuning, hparts.data(), hoffsets.data());
    std::vector<int32_t> doffsets(batch + 1);
    CUDA_OK(cudaMemcpy(doffsets.data(), p.split_offsets, (batch + 1) * 4, cudaMemcpyDeviceToHost));
    ASSERT_EQ(doffsets, hoffsets);
    int multi = 0;
    for (int i = 0; i < batch; ++i) multi += hoffsets[i + 1] - hoffsets[i] >= 2;
    if (round == 0) ASSERT_GT(multi, 0) << "the lengths should make some requests split";
    expect_same_as_host(dc, false, hoffsets, o, lse_part, false);
    if (HasFatalFailure()) break;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  cudaFree(d_lens);
  cudaFree(d_sched);
}

}  // namespace
}  // namespace mla::detail
