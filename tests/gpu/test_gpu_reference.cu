// The GPU reference (used by mla-bench to verify large cases) equals the double-precision CPU
// reference on small random problems: paged KV in random physical order with poisoned tails and
// unused pages, varlen incl. empty requests, causal MTP, h_kv grouping, padded strides.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gpu/hopper_gpu.h"
#include "mla/decode.h"
#include "reference/cpu_reference.h"
#include "reference/gpu_reference.h"

namespace {

namespace ref = mla::reference;

#define ASSERT_CUDA(call)                                                             \
  do {                                                                                \
    const cudaError_t e_ = (call);                                                    \
    ASSERT_EQ(e_, cudaSuccess) << #call << ": " << cudaGetErrorString(e_);            \
  } while (0)

struct Config {
  mla::DType dtype = mla::DType::kBF16;
  int batch = 3;
  int s_q = 1;
  int h_q = 16;
  int h_kv = 1;
  int page_size = 64;
  int max_len = 200;
  bool causal = false;
  float scale = 0.0f;  // <= 0: default
  int pad = 0;         // extra elements in every stride (exercises strides != contiguous)
  std::vector<int> fixed_lengths;  // when non-empty: the lengths to use
};

template <typename T>
struct DeviceArray {
  T* ptr = nullptr;
  explicit DeviceArray(size_t n) { EXPECT_EQ(cudaMalloc(&ptr, std::max<size_t>(n, 1) * sizeof(T)), cudaSuccess); }
  ~DeviceArray() { cudaFree(ptr); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
};

void run_and_compare(const Config& cfg, std::mt19937_64& rng) {
  const int d = mla::kHeadDimQK;
  std::vector<int32_t> lengths(cfg.batch);
  if (!cfg.fixed_lengths.empty()) {
    ASSERT_EQ(static_cast<int>(cfg.fixed_lengths.size()), cfg.batch);
    std::copy(cfg.fixed_lengths.begin(), cfg.fixed_lengths.end(), lengths.begin());
  } else {
    std::uniform_int_distribution<int> len_dist(0, cfg.max_len);
    for (auto& l : lengths) l = len_dist(rng);
  }

  // Pages: random physical order, a few spare pages nobody references.
  int max_pages = 1;
  int used = 0;
  for (int l : lengths) {
    const int p = (l + cfg.page_size - 1) / cfg.page_size;
    used += p;
    max_pages = std::max(max_pages, p);
  }
  const int num_pages = used + 3;
  std::vector<int32_t> perm(num_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);

  mla::DecodeArgs args;
  args.dtype = cfg.dtype;
  args.kv_dtype = cfg.dtype;
  args.batch = cfg.batch;
  args.seqlen_q = cfg.s_q;
  args.num_heads_q = cfg.h_q;
  args.num_heads_kv = cfg.h_kv;
  args.page_size = cfg.page_size;
  args.num_pages = num_pages;
  args.max_pages_per_seq = max_pages;
  args.causal = cfg.causal;
  args.softmax_scale = cfg.scale;
  // Padded strides, innermost first; dims stay unit-stride as the kernels need.
  args.q_dim_stride = 1;
  args.q_head_stride = d + cfg.pad;
  args.q_seq_stride = args.q_head_stride * cfg.h_q + cfg.pad;
  args.q_batch_stride = args.q_seq_stride * cfg.s_q + cfg.pad;
  args.kv_dim_stride = 1;
  args.kv_head_stride = d + cfg.pad;
  args.kv_token_stride = args.kv_head_stride * cfg.h_kv + cfg.pad;
  args.kv_page_stride = args.kv_token_stride * cfg.page_size + cfg.pad;
  args.block_table_batch_stride = max_pages + cfg.pad;

  const size_t n_q = static_cast<size_t>(args.q_batch_stride) * cfg.batch;
  const size_t n_kv = static_cast<size_t>(args.kv_page_stride) * num_pages;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // Everything not written below stays NaN: padding, tails past a length, spare pages.
  std::vector<float> q(n_q, nan), kv(n_kv, nan);
  std::vector<int32_t> block_table(static_cast<size_t>(args.block_table_batch_stride) * cfg.batch,
                                   std::numeric_limits<int32_t>::max());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto rounded = [&](float x) { return ref::half_to_float(cfg.dtype, ref::float_to_half(cfg.dtype, x)); };

  for (int i = 0; i < cfg.batch; ++i)
    for (int s = 0; s < cfg.s_q; ++s)
      for (int h = 0; h < cfg.h_q; ++h)
        for (int k = 0; k < d; ++k)
          q[i * args.q_batch_stride + s * args.q_seq_stride + h * args.q_head_stride + k] =
              rounded(normal(rng));
  int next = 0;
  for (int i = 0; i < cfg.batch; ++i) {
    const int pages = (lengths[i] + cfg.page_size - 1) / cfg.page_size;
    for (int j = 0; j < pages; ++j) {
      const int phys = perm[next++];
      block_table[i * args.block_table_batch_stride + j] = phys;
      const int valid = std::min(cfg.page_size, lengths[i] - j * cfg.page_size);
      for (int t = 0; t < valid; ++t)
        for (int g = 0; g < cfg.h_kv; ++g)
          for (int k = 0; k < d; ++k)
            kv[phys * args.kv_page_stride + t * args.kv_token_stride + g * args.kv_head_stride +
               k] = rounded(normal(rng));
    }
  }

  // CPU reference (double).
  ref::RefResult want;
  const ref::RefProblem prob =
      ref::problem_from_args(args, q.data(), kv.data(), block_table.data(), lengths.data());
  const mla::Status cst = ref::decode_reference(prob, &want);
  ASSERT_TRUE(cst.ok()) << cst.to_string();

  // GPU reference on the same (rounded) values.
  const std::vector<uint16_t> q_h = ref::to_half(cfg.dtype, q), kv_h = ref::to_half(cfg.dtype, kv);
  const size_t n_out = static_cast<size_t>(cfg.batch) * cfg.s_q * cfg.h_q * mla::kHeadDimV;
  const size_t n_lse = static_cast<size_t>(cfg.batch) * cfg.h_q * cfg.s_q;
  DeviceArray<uint16_t> dq(n_q), dkv(n_kv);
  DeviceArray<int32_t> dbt(block_table.size()), dlen(lengths.size());
  DeviceArray<float> dout(n_out), dlse(n_lse);
  ASSERT_CUDA(cudaMemcpy(dq.ptr, q_h.data(), n_q * 2, cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaMemcpy(dkv.ptr, kv_h.data(), n_kv * 2, cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaMemcpy(dbt.ptr, block_table.data(), block_table.size() * 4, cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaMemcpy(dlen.ptr, lengths.data(), lengths.size() * 4, cudaMemcpyHostToDevice));
  // NaN-filled outputs: a position the reference forgets to write shows up as a mismatch.
  ASSERT_CUDA(cudaMemset(dout.ptr, 0xFF, n_out * 4));
  ASSERT_CUDA(cudaMemset(dlse.ptr, 0xFF, n_lse * 4));
  args.q = dq.ptr;
  args.kv_cache = dkv.ptr;
  args.block_table = dbt.ptr;
  args.cache_seqlens = dlen.ptr;

  const mla::Status gst = ref::reference_decode_gpu(args, dout.ptr, dlse.ptr, nullptr);
  ASSERT_TRUE(gst.ok()) << gst.to_string();
  ASSERT_CUDA(cudaDeviceSynchronize());
  std::vector<float> got_out(n_out), got_lse(n_lse);
  ASSERT_CUDA(cudaMemcpy(got_out.data(), dout.ptr, n_out * 4, cudaMemcpyDeviceToHost));
  ASSERT_CUDA(cudaMemcpy(got_lse.data(), dlse.ptr, n_lse * 4, cudaMemcpyDeviceToHost));

  // fp32 dot products of 576 terms and fp32 P.V sums: ~1e-6 relative; 2e-5 leaves room.
  const ref::CompareResult co = ref::compare(got_out.data(), want.out.data(), n_out, 2e-5, 2e-5);
  EXPECT_TRUE(co.ok) << "out: " << co.summary;
  EXPECT_LT(co.rel_frobenius, 1e-5) << co.summary;
  const ref::CompareResult cl = ref::compare(got_lse.data(), want.lse.data(), n_lse, 2e-5, 2e-5);
  EXPECT_TRUE(cl.ok) << "lse: " << cl.summary;

  // The problem must not be degenerate: some rows have keys, and their outputs are non-zero.
  const bool any_nonzero =
      std::any_of(got_out.begin(), got_out.end(), [](float v) { return v != 0.0f; });
  EXPECT_TRUE(any_nonzero);
}

std::mt19937_64 fresh_rng() {
  const uint64_t seed = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  std::printf("[ seed     ] %llu\n", static_cast<unsigned long long>(seed));
  return std::mt19937_64(seed);
}

TEST(GpuReference, Bf16VarlenWithEmptyRequest) {
  MLA_SKIP_WITHOUT_HOPPER();
  auto rng = fresh_rng();
  Config c;
  c.batch = 4;
  c.h_q = 16;
  c.max_len = 300;
  c.fixed_lengths = {0, 1, 130, std::uniform_int_distribution<int>(64, 300)(rng)};
  run_and_compare(c, rng);
}

TEST(GpuReference, Fp16CausalMtpGroupedHeadsSmallPages) {
  MLA_SKIP_WITHOUT_HOPPER();
  auto rng = fresh_rng();
  Config c;
  c.dtype = mla::DType::kFP16;
  c.batch = 5;
  c.s_q = 3;
  c.h_q = 8;
  c.h_kv = 2;  // 4 heads per kv head: a partly filled head block
  c.page_size = 16;
  c.causal = true;
  // Lengths 1 and 2 leave the first causal rows without a visible key.
  c.fixed_lengths = {1, 2, 3, 77, std::uniform_int_distribution<int>(3, 200)(rng)};
  run_and_compare(c, rng);
}

TEST(GpuReference, PaddedStridesTwoHeadBlocksCustomScale) {
  MLA_SKIP_WITHOUT_HOPPER();
  auto rng = fresh_rng();
  Config c;
  c.batch = 3;
  c.s_q = 2;
  c.h_q = 24;
  c.h_kv = 2;  // 12 heads per kv head: one full and one partial block of 8
  c.pad = 8;
  c.scale = 0.07f;
  c.max_len = 257;
  run_and_compare(c, rng);
}

TEST(GpuReference, RandomShapes) {
  MLA_SKIP_WITHOUT_HOPPER();
  auto rng = fresh_rng();
  for (int rep = 0; rep < 4; ++rep) {
    Config c;
    c.dtype = rep % 2 ? mla::DType::kFP16 : mla::DType::kBF16;
    c.batch = std::uniform_int_distribution<int>(1, 6)(rng);
    c.s_q = std::uniform_int_distribution<int>(1, 4)(rng);
    c.h_kv = std::uniform_int_distribution<int>(1, 2)(rng);
    c.h_q = c.h_kv * std::uniform_int_distribution<int>(1, 20)(rng);
    c.page_size = rep < 2 ? 64 : std::uniform_int_distribution<int>(1, 80)(rng);
    c.causal = std::uniform_int_distribution<int>(0, 1)(rng) == 1;
    c.max_len = 400;
    SCOPED_TRACE("rep " + std::to_string(rep) + ": b=" + std::to_string(c.batch) +
                 " s_q=" + std::to_string(c.s_q) + " h_q=" + std::to_string(c.h_q) +
                 " h_kv=" + std::to_string(c.h_kv) + " page=" + std::to_string(c.page_size) +
                 " causal=" + std::to_string(c.causal));
    run_and_compare(c, rng);
  }
}

TEST(GpuReference, RejectsBadArguments) {
  // Host-side checks only: no GPU needed.
  mla::DecodeArgs args;
  args.batch = 1;
  args.num_heads_q = 6;
  args.num_heads_kv = 4;
  float dummy = 0;
  mla::Status st = ref::reference_decode_gpu(args, &dummy, &dummy, nullptr);
  EXPECT_EQ(st.code(), mla::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("num_heads_kv"), std::string::npos) << st.message();
  args.num_heads_kv = 1;
  args.head_dim_qk = 128;
  st = ref::reference_decode_gpu(args, &dummy, &dummy, nullptr);
  EXPECT_NE(st.message().find("head_dim_qk"), std::string::npos) << st.message();
}

}  // namespace
