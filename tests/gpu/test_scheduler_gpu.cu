// GPU tests of the split-KV scheduler: the device kernel must give the host schedule bit for bit.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gpu/hopper_gpu.h"
#include "mla/decode.h"
#include "sched/heuristics.h"
#include "sched/metadata.h"
#include "sched/scheduler.h"

namespace mla::detail {
namespace {


std::vector<int32_t> lengths(std::mt19937_64& rng, int batch, int mode) {
  std::vector<int32_t> lens(batch);
  const int32_t fixed = static_cast<int32_t>(rng() % 131073);
  for (auto& len : lens) {
    switch (mode % 5) {
      case 0: len = static_cast<int32_t>(rng() % 131073); break;
      case 1: len = (rng() % 3 == 0) ? static_cast<int32_t>(rng() % 131073) : 0; break;
      case 2: len = fixed; break;
      case 3: len = static_cast<int32_t>(rng() % 300); break;
      default: len = (rng() % 64 == 0) ? 131072 : static_cast<int32_t>(rng() % 4096); break;
    }
  }
  return lens;
}

// Runs both implementations, compares every byte of the schedule buffer; the device's merge
// flags (kCtasPerPart per part, poisoned before) must come out zero.
constexpr int kCtasPerPart = 3;
void compare(const std::vector<int32_t>& lens, int parts, const ScheduleTuning& t) {
  const int batch = static_cast<int>(lens.size());
  const size_t bytes = schedule_buffer_bytes(batch, parts, kCtasPerPart);
  std::vector<uint8_t> host(bytes, 0xAB), dev(bytes, 0xCD);
  schedule_host(lens.data(), batch, parts, t, reinterpret_cast<PartMetadata*>(host.data()),
                reinterpret_cast<int32_t*>(host.data() + sizeof(PartMetadata) * parts));
  int32_t* d_lens = nullptr;
  void* d_buf = nullptr;
  ASSERT_EQ(cudaMalloc(&d_lens, sizeof(int32_t) * batch), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_buf, bytes), cudaSuccess);
  ASSERT_EQ(cudaMemset(d_buf, 0x5A, bytes), cudaSuccess);  // poison: all must be written
  ASSERT_EQ(cudaMemcpy(d_lens, lens.data(), sizeof(int32_t) * batch, cudaMemcpyHostToDevice),
            cudaSuccess);
  ASSERT_EQ(launch_schedule(d_lens, batch, parts, t, d_buf, nullptr, kCtasPerPart), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dev.data(), d_buf, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(d_lens);
  cudaFree(d_buf);
  const auto* hp = reinterpret_cast<const PartMetadata*>(host.data());
  const auto* dp = reinterpret_cast<const PartMetadata*>(dev.data());
  for (int p = 0; p < parts; ++p) {
    ASSERT_EQ(0, std::memcmp(hp + p, dp + p, sizeof(PartMetadata)))
        << "part " << p << ": host (" << hp[p].begin_req << "," << hp[p].begin_block << ")-("
        << hp[p].end_req << "," << hp[p].end_block << ") slot " << hp[p].begin_slot << " blocks "
        << hp[p].num_blocks << ", device (" << dp[p].begin_req << "," << dp[p].begin_block
        << ")-(" << dp[p].end_req << "," << dp[p].end_block << ") slot " << dp[p].begin_slot
        << " blocks " << dp[p].num_blocks;
  }
  const auto* ho = reinterpret_cast<const int32_t*>(hp + parts);
  const auto* dofs = reinterpret_cast<const int32_t*>(dp + parts);
  for (int i = 0; i <= batch; ++i) ASSERT_EQ(ho[i], dofs[i]) << "split_offsets[" << i << "]";
  const uint32_t* flags = schedule_merge_flags(dev.data(), batch, parts);
  for (int i = 0; i < parts * kCtasPerPart; ++i) ASSERT_EQ(flags[i], 0u) << "merge flag " << i;
}

TEST(SchedGpu, DeviceEqualsHost) {
  MLA_SKIP_WITHOUT_HOPPER();
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  // Batches around the shared-memory / global-scratch switch of the kernel (6143 / 6144) and
  // across several 1024-request chunks.
  const int batches[] = {1, 2, 7, 32, 128, 1000, 1024, 1025, 4097, 6142, 6143, 6144, 20000, 65536};
  const int part_counts[] = {1, 22, 33, 66, 132, kMaxScheduleParts};
  int trial = 0;
  for (int batch : batches) {
    for (int parts : part_counts) {
      for (int mode = 0; mode < 5; ++mode, ++trial) {
        ScheduleTuning t;
        if (trial % 4 == 3) {
          t.split_overhead_blocks = static_cast<int>(rng() % 10);
          t.min_split_blocks = 1 + static_cast<int>(rng() % 9);
        }
        SCOPED_TRACE("batch " + std::to_string(batch) + " parts " + std::to_string(parts) +
                     " mode " + std::to_string(mode));
        compare(lengths(rng, batch, mode), parts, t);
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST(SchedGpu, GarbageLengthsStayInBounds) {
  MLA_SKIP_WITHOUT_HOPPER();
  // Huge and negative lengths: positions saturate; device and host must still agree.
  std::mt19937_64 rng(std::random_device{}());
  std::vector<int32_t> lens(3000);
  for (auto& len : lens) len = static_cast<int32_t>(rng());
  compare(lens, 132, ScheduleTuning{});
}

TEST(SchedGpu, RejectsBadArguments) {
  MLA_SKIP_WITHOUT_HOPPER();
  int32_t* d_lens = nullptr;
  char* d_buf = nullptr;
  ASSERT_EQ(cudaMalloc(&d_lens, 64), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_buf, 4096), cudaSuccess);
  EXPECT_EQ(launch_schedule(d_lens, 0, 4, {}, d_buf, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(launch_schedule(d_lens, 4, 0, {}, d_buf, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(launch_schedule(d_lens, 4, kMaxScheduleParts + 1, {}, d_buf, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(launch_schedule(d_lens, 4, 4, {}, d_buf + 4, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(launch_schedule(d_lens, 4, 4, {}, d_buf, nullptr, -1), cudaErrorInvalidValue);
  EXPECT_EQ(launch_schedule(nullptr, 4, 4, {}, d_buf, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaFree(d_lens);
  cudaFree(d_buf);
}

}  // namespace
}  // namespace mla::detail
