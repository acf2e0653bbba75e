#include "gpu_util.h"

#include "reference/device_inputs.h"

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

mla::DType dtype_of(ElemType type) {
  return type == ElemType::kFP16 ? mla::DType::kFP16 : mla::DType::kBF16;
}

}  // namespace

void fill_normal(void* dst, size_t n, ElemType type, uint64_t seed, float scale, cudaStream_t s) {
  MLA_BENCH_CUDA(mla::reference::fill_normal(dst, n, dtype_of(type), seed, scale, s));
}

void poison_kv(void* kv, int64_t num_pages, int page_size, int64_t row_elems,
               const int32_t* valid_tokens, ElemType type, cudaStream_t s) {
  MLA_BENCH_CUDA(
      mla::reference::poison_kv(kv, num_pages, page_size, row_elems, valid_tokens, dtype_of(type), s));
}

void to_float(const void* src, size_t n, ElemType type, float* dst, cudaStream_t s) {
  MLA_BENCH_CUDA(mla::reference::to_float(src, n, dtype_of(type), dst, s));
}

}  // namespace mla_bench
