#include "reference/device_inputs.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <type_traits>

namespace mla::reference {
namespace {

__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

template <typename T>
__device__ __forceinline__ T from_float(float v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(v);
  } else {
    return __float2bfloat16_rn(v);
  }
}

template <typename T>
__global__ void fill_normal_kernel(T* dst, size_t n, uint64_t seed, float scale) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t k = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; k < n; k += stride) {
    const uint64_t r = splitmix64(seed ^ splitmix64(k));
    // Box-Muller on two 24-bit uniforms; u1 in (0, 1] keeps the log finite.
    const float u1 = (static_cast<float>(r >> 40) + 1.0f) * (1.0f / 16777216.0f);
    const float u2 = static_cast<float>((r >> 8) & 0xFFFFFFu) * (1.0f / 16777216.0f);
    const float z = sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
    dst[k] = from_float<T>(scale * z);
  }
}

template <typename T>
__global__ void poison_kv_kernel(T* kv, int64_t num_pages, int page_size, int64_t row_elems,
                                 const int32_t* valid_tokens) {
  const int64_t total = num_pages * page_size * row_elems;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const T nan = from_float<T>(NAN);
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += stride) {
    const int64_t token = k / row_elems;
    const int64_t page = token / page_size;
    if (token % page_size >= valid_tokens[page]) kv[k] = nan;
  }
}

template <typename T>
__global__ void to_float_kernel(const T* src, size_t n, float* dst) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t k = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; k < n; k += stride) {
    if constexpr (std::is_same_v<T, __half>) {
      dst[k] = __half2float(src[k]);
    } else {
      dst[k] = __bfloat162float(src[k]);
    }
  }
}

constexpr int kThreads = 256;

unsigned grid_for(size_t n) {
  const size_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65536 ? (blocks ? blocks : 1) : 65536);
}

}  // namespace

cudaError_t fill_normal(void* dst, size_t n, DType dtype, uint64_t seed, float scale,
                        cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (dtype == DType::kFP16) {
    fill_normal_kernel<<<grid_for(n), kThreads, 0, stream>>>(static_cast<__half*>(dst), n, seed,
                                                             scale);
  } else {
    fill_normal_kernel<<<grid_for(n), kThreads, 0, stream>>>(static_cast<__nv_bfloat16*>(dst), n,
                                                             seed, scale);
  }
  return cudaGetLastError();
}

cudaError_t poison_kv(void* kv, int64_t num_pages, int page_size, int64_t row_elems,
                      const int32_t* valid_tokens, DType dtype, cudaStream_t stream) {
  const size_t n = static_cast<size_t>(num_pages) * page_size * row_elems;
  if (n == 0) return cudaSuccess;
  if (dtype == DType::kFP16) {
    poison_kv_kernel<<<grid_for(n), kThreads, 0, stream>>>(static_cast<__half*>(kv), num_pages,
                                                           page_size, row_elems, valid_tokens);
  } else {
    poison_kv_kernel<<<grid_for(n), kThreads, 0, stream>>>(static_cast<__nv_bfloat16*>(kv),
                                                           num_pages, page_size, row_elems,
                                                           valid_tokens);
  }
  return cudaGetLastError();
}

cudaError_t to_float(const void* src, size_t n, DType dtype, float* dst, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (dtype == DType::kFP16) {
    to_float_kernel<<<grid_for(n), kThreads, 0, stream>>>(static_cast<const __half*>(src), n, dst);
  } else {
    to_float_kernel<<<grid_for(n), kThreads, 0, stream>>>(static_cast<const __nv_bfloat16*>(src),
                                                          n, dst);
  }
  return cudaGetLastError();
}

}  // namespace mla::reference
