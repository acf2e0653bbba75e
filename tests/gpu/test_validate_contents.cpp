// GPU tests of mla::validate_contents: a bad block_table / cache_seqlens entry is reported with
// its position and value instead of faulting; entries the kernels never read are ignored.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gpu/hopper_gpu.h"
#include "mla/decode.h"

namespace {

bool have_any_gpu() {
  int n = 0;
  const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  (void)cudaGetLastError();
  return ok;
}


template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  explicit DeviceBuffer(size_t n) { EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&ptr), sizeof(T) * (n ? n : 1)), cudaSuccess); }
  ~DeviceBuffer() { cudaFree(ptr); }
  void upload(const std::vector<T>& h) {
    ASSERT_EQ(cudaMemcpy(ptr, h.data(), sizeof(T) * h.size(), cudaMemcpyHostToDevice), cudaSuccess);
  }
};

// A small, valid decode problem. q/kv/out/lse are allocated so that check() passes; only
// block_table and cache_seqlens are read by validate_contents.
struct Problem {
  int batch = 6, max_pages = 5, num_pages = 20, h_q = 16;
  std::vector<int32_t> table, lens;
  DeviceBuffer<uint16_t> q{size_t(6) * 16 * mla::kHeadDimQK};
  DeviceBuffer<uint16_t> kv{size_t(20) * mla::kPageSize * mla::kHeadDimQK};
  DeviceBuffer<uint16_t> out{size_t(6) * 16 * mla::kHeadDimV};
  DeviceBuffer<float> lse{size_t(6) * 16};
  DeviceBuffer<int32_t> d_table{size_t(6) * 5};
  DeviceBuffer<int32_t> d_lens{6};

  Problem() {
    std::mt19937 rng(std::random_device{}());
    lens.resize(batch);
    table.assign(size_t(batch) * max_pages, -7);  // poison: unused slots hold invalid ids
    for (int i = 0; i < batch; ++i) {
      lens[i] = std::uniform_int_distribution<int>(0, max_pages * mla::kPageSize)(rng);
      const int used = (lens[i] + mla::kPageSize - 1) / mla::kPageSize;
      for (int j = 0; j < used; ++j) table[i * max_pages + j] = std::uniform_int_distribution<int>(0, num_pages - 1)(rng);
    }
    lens[0] = 1;  // request 0 always uses exactly page 0 of its row
    table[0] = 3;
  }
  mla::DecodeArgs args() {
    d_table.upload(table);
    d_lens.upload(lens);
    mla::DecodeArgs a;
    a.batch = batch;
    a.num_heads_q = h_q;
    a.num_pages = num_pages;
    a.max_pages_per_seq = max_pages;
    mla::set_contiguous_strides(a);
    a.q = q.ptr;
    a.kv_cache = kv.ptr;
    a.out = out.ptr;
    a.lse = lse.ptr;
    a.block_table = d_table.ptr;
    a.cache_seqlens = d_lens.ptr;
    return a;
  }
};

TEST(ValidateContentsGpu, AcceptsValidContentsWithPoisonedUnusedSlots) {
  MLA_SKIP_WITHOUT_HOPPER();
  Problem p;
  const mla::Status st = mla::validate_contents(p.args(), nullptr);
  EXPECT_TRUE(st.ok()) << st.to_string();
}

TEST(ValidateContentsGpu, ReportsFirstBadPageWithPosition) {
  MLA_SKIP_WITHOUT_HOPPER();
  Problem p;
  p.lens[2] = 3 * mla::kPageSize;  // uses logical pages 0..2
  for (int j = 0; j < 3; ++j) p.table[2 * p.max_pages + j] = j;
  p.table[2 * p.max_pages + 1] = p.num_pages;  // one past the last page
  p.lens[4] = 2 * mla::kPageSize;
  p.table[4 * p.max_pages + 0] = -1;           // later request: must not be the one reported
  p.table[4 * p.max_pages + 1] = 0;
  const mla::Status st = mla::validate_contents(p.args(), nullptr);
  EXPECT_EQ(st.code(), mla::StatusCode::kInvalidContents) << st.to_string();
  EXPECT_NE(st.message().find("block_table[2][1]=20"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("request 2"), std::string::npos) << st.message();
}

TEST(ValidateContentsGpu, ReportsNegativeLength) {
  MLA_SKIP_WITHOUT_HOPPER();
  Problem p;
  p.lens[3] = -5;
  const mla::Status st = mla::validate_contents(p.args(), nullptr);
  EXPECT_EQ(st.code(), mla::StatusCode::kInvalidContents) << st.to_string();
  EXPECT_NE(st.message().find("cache_seqlens[3]=-5"), std::string::npos) << st.message();
}

TEST(ValidateContentsGpu, ReportsLengthBeyondBlockTableRow) {
  MLA_SKIP_WITHOUT_HOPPER();
  Problem p;
  p.lens[5] = p.max_pages * mla::kPageSize + 1;
  const mla::Status st = mla::validate_contents(p.args(), nullptr);
  EXPECT_EQ(st.code(), mla::StatusCode::kInvalidContents) << st.to_string();
  EXPECT_NE(st.message().find("cache_seqlens[5]=" + std::to_string(p.lens[5])), std::string::npos)
      << st.message();
}

TEST(ValidateContentsGpu, RejectsPlainHostBlockTable) {
  MLA_SKIP_WITHOUT_HOPPER();
  Problem p;
  mla::DecodeArgs a = p.args();
  a.block_table = p.table.data();
  const mla::Status st = mla::validate_contents(a, nullptr);
  EXPECT_EQ(st.code(), mla::StatusCode::kInvalidArgument) << st.to_string();
  EXPECT_NE(st.message().find("block_table"), std::string::npos) << st.message();
}

TEST(ValidateContentsGpu, RunsCheckFirst) {
  MLA_SKIP_WITHOUT_HOPPER();
  Problem p;
  mla::DecodeArgs a = p.args();
  a.page_size = 32;
  EXPECT_EQ(mla::validate_contents(a, nullptr).code(), mla::StatusCode::kUnsupported);
}

// The only test here that needs the *absence* of a GPU: the no-device path must be a Status.
TEST(ValidateContentsGpu, ReturnsNoDeviceWithoutGpu) {
  if (have_any_gpu()) GTEST_SKIP() << "a GPU is present; this test covers the no-GPU path";
  mla::DecodeArgs a;
  a.batch = 1;
  a.num_heads_q = 16;
  a.num_pages = 1;
  a.max_pages_per_seq = 1;
  mla::set_contiguous_strides(a);
  // Addresses are never dereferenced without a device; they only have to pass check().
  a.q = reinterpret_cast<const void*>(uintptr_t{1} << 32);
  a.kv_cache = reinterpret_cast<const void*>(uintptr_t{2} << 32);
  a.out = reinterpret_cast<void*>(uintptr_t{3} << 32);
  a.lse = reinterpret_cast<float*>(uintptr_t{4} << 32);
  a.block_table = reinterpret_cast<const int32_t*>(uintptr_t{5} << 32);
  a.cache_seqlens = reinterpret_cast<const int32_t*>(uintptr_t{6} << 32);
  const mla::Status st = mla::validate_contents(a, nullptr);
  EXPECT_EQ(st.code(), mla::StatusCode::kNoDevice) << st.to_string();
}

}  // namespace
