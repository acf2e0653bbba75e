// Shared by the GPU tests: whether a Hopper GPU is usable, and a skip macro. Without one (CPU-only
// CI, another architecture) every GPU test reports itself as SKIPPED with the reason.
#pragma once

#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <string>

namespace mla::test {

// "" when device 0 is a Hopper (sm_90) GPU, else why not.
inline std::string hopper_missing() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess || n == 0) {
    (void)cudaGetLastError();  // clear the sticky "no device" error for later calls
    return std::string("no CUDA GPU (") +
           (err != cudaSuccess ? cudaGetErrorString(err) : "0 devices") + ")";
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "cudaGetDeviceProperties failed";
  if (prop.major != 9 || prop.minor != 0)
    return std::string("GPU ") + prop.name + " is not sm_90 (Hopper)";
  return "";
}

}  // namespace mla::test

#define MLA_SKIP_WITHOUT_HOPPER()                                                \
  do {                                                                           \
    const std::string why_ = ::mla::test::hopper_missing();                      \
    if (!why_.empty()) GTEST_SKIP() << "needs a Hopper GPU: " << why_;           \
  } while (0)
