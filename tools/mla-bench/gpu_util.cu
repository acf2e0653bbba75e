#include "gpu_util.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <type_traits>

namespace mla_bench {

void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw CudaFailure(std::string(what) + ": " + cudaGetErrorName(e) + " (" +
                      cudaGetErrorString(e) + ")");
}

DeviceBuffer::DeviceBuffer(size_t bytes, const char* what) : bytes_(bytes) {
  if (bytes == 0) return;
  const cudaError_t e = cudaMalloc(&ptr_, bytes);
  if (e != cudaSuccess) {
    ptr_ = nullptr;
    throw CudaFailure(std::string("cudaMalloc of ") + std::to_string(bytes) + " bytes for " +
                      what + ": " + cudaGetErrorString(e));
  }
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);  // errors here would only mask the one being reported
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = o.bytes_;
  }
  return *this;
}

namespace {

__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}

template <typename T>
__global__ void fill_normal_kernel(T* dst, size_t n, uint64_t seed, float scale) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t k = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; k < n; k += stride) {
    const uint64_t r = splitmix64(seed ^ splitmix64(k));
    // Box-Muller on two 24-bit uniforms; u1 in (0, 1] keeps log finite.
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
    const int64_t tok = k / row_elems;
    const int64_t page = tok / page_size;
    if (tok % page_size >= valid_tokens[page]) kv[k] = nan;
  }
}

template <typename T>
__global__ void to_float_kernel(const T* src, size_t n, float* dst) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t k = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; k < n; k += stride) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      dst[k] = __bfloat162float(src[k]);
    } else {
      dst[k] = __half2float(src[k]);
    }
  }
}

constexpr int kThreads = 256;
unsigned grid_for(size_t n) {
  const size_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65536 ? (blocks ? blocks : 1) : 65536);
}

}  // namespace

void fill_normal(void* dst, size_t n, ElemType type, uint64_t seed, float scale, cudaStream_t s) {
  if (n == 0) return;
  if (type == ElemType::kBF16) {
    fill_normal_kernel<<<grid_for(n), kThreads, 0, s>>>(static_cast<__nv_bfloat16*>(dst), n, seed,
                                                         scale);
  } else {
    fill_normal_kernel<<<grid_for(n), kThreads, 0, s>>>(static_cast<__half*>(dst), n, seed, scale);
  }
  MLA_BENCH_CUDA(cudaGetLastError());
}

void poison_kv(void* kv, int64_t num_pages, int page_size, int64_t row_elems,
               const int32_t* valid_tokens, ElemType type, cudaStream_t s) {
  const size_t n = static_cast<size_t>(num_pages) * page_size * row_elems;
  if (n == 0) return;
  if (type == ElemType::kBF16) {
    poison_kv_kernel<<<grid_for(n), kThreads, 0, s>>>(static_cast<__nv_bfloat16*>(kv), num_pages,
                                                       page_size, row_elems, valid_tokens);
  } else {
    poison_kv_kernel<<<grid_for(n), kThreads, 0, s>>>(static_cast<__half*>(kv), num_pages,
                                                       page_size, row_elems, valid_tokens);
  }
  MLA_BENCH_CUDA(cudaGetLastError());
}

void to_float(const void* src, size_t n, ElemType type, float* dst, cudaStream_t s) {
  if (n == 0) return;
  if (type == ElemType::kBF16) {
    to_float_kernel<<<grid_for(n), kThreads, 0, s>>>(static_cast<const __nv_bfloat16*>(src), n,
                                                      dst);
  } else {
    to_float_kernel<<<grid_for(n), kThreads, 0, s>>>(static_cast<const __half*>(src), n, dst);
  }
  MLA_BENCH_CUDA(cudaGetLastError());
}

}  // namespace mla_bench
