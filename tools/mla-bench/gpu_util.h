// mla-bench GPU helpers: error handling, owned device buffers, input generation (the kernels
// live in mla_reference, src/reference/device_inputs.h, shared with the GPU tests).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <algorithm>
#include <vector>

namespace mla_bench {

enum class ElemType { kBF16, kFP16 };

// A failed CUDA call inside the tool: caught in main, reported, turned into an exit status.
struct CudaFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void cuda_check(cudaError_t e, const char* what);
#define MLA_BENCH_CUDA(call) ::mla_bench::cuda_check((call), #call)

// A device allocation freed on scope exit.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes, const char* what);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(o.bytes_) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Fills n elements with scale * N(0, 1) drawn from a counter-based generator keyed by seed
// (independent of launch shape, so the data depends on the seed only).
void fill_normal(void* dst, size_t n, ElemType type, uint64_t seed, float scale, cudaStream_t s);

// Writes NaN into every token of kv_cache [num_pages, page_size, row_elems] whose index within
// its page is >= valid_tokens[page] (valid_tokens: device int32 [num_pages]; 0 for unused
// pages). A kernel that reads past a request's length or an unused page then produces NaN.
void poison_kv(void* kv, int64_t num_pages, int page_size, int64_t row_elems,
               const int32_t* valid_tokens, ElemType type, cudaStream_t s);

// dst[k] = float(src[k]) for k < n.
void to_float(const void* src, size_t n, ElemType type, float* dst, cudaStream_t s);

// Median of a non-empty sample (mean of the two middle values for an even count).
inline double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

}  // namespace mla_bench
