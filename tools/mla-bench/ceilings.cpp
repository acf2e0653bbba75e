#include "ceilings.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "gpu_util.h"

namespace mla_bench {
namespace {

void cublas_check(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw CudaFailure(std::string(what) + ": cuBLAS status " + std::to_string(static_cast<int>(st)));
}

// Owns a stream and two events for timing one operation at a time.
struct Timer {
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  Timer() {
    MLA_BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    MLA_BENCH_CUDA(cudaEventCreate(&start));
    MLA_BENCH_CUDA(cudaEventCreate(&stop));
  }
  ~Timer() {
    if (start) cudaEventDestroy(start);
    if (stop) cudaEventDestroy(stop);
    if (stream) cudaStreamDestroy(stream);
  }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  template <typename F>
  double time_ms(F&& op) {
    MLA_BENCH_CUDA(cudaEventRecord(start, stream));
    op();
    MLA_BENCH_CUDA(cudaEventRecord(stop, stream));
    MLA_BENCH_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    MLA_BENCH_CUDA(cudaEventElapsedTime(&ms, start, stop));
    return ms;
  }

  // Median over `reps` timed runs of op, after kWarmup untimed ones.
  template <typename F>
  double median_ms(int reps, F&& op) {
    for (int k = 0; k < kWarmup; ++k) op();
    std::vector<double> ms;
    for (int k = 0; k < reps; ++k) ms.push_back(time_ms(op));
    return median(ms);
  }

  static constexpr int kWarmup = 3;
};

}  // namespace

CopyCeiling measure_copy_ceiling(size_t bytes, int reps) {
  DeviceBuffer src(bytes, "copy ceiling source");
  DeviceBuffer dst(bytes, "copy ceiling destination");
  Timer t;
  MLA_BENCH_CUDA(cudaMemsetAsync(src.get(), 0x3c, bytes, t.stream));
  auto copy = [&] {
    MLA_BENCH_CUDA(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, t.stream));
  };
  CopyCeiling c;
  c.bytes = bytes;
  c.reps = reps;
  c.gb_per_s = 2.0 * static_cast<double>(bytes) / (t.median_ms(reps, copy) * 1e-3) / 1e9;
  return c;
}

GemmCeiling measure_gemm_ceiling(int n, int reps, BenchDType dtype) {
  const size_t elems = static_cast<size_t>(n) * n;
  DeviceBuffer a(elems * 2, "GEMM ceiling A"), b(elems * 2, "GEMM ceiling B"),
      c(elems * 2, "GEMM ceiling C");
  const bool bf16 = dtype == BenchDType::kBF16;
  const ElemType elem = bf16 ? ElemType::kBF16 : ElemType::kFP16;
  const cudaDataType_t cuda_type = bf16 ? CUDA_R_16BF : CUDA_R_16F;
  Timer t;
  fill_normal(a.get(), elems, elem, 0x5eed0001ull, 1.0f, t.stream);
  fill_normal(b.get(), elems, elem, 0x5eed0002ull, 1.0f, t.stream);

  cublasHandle_t handle = nullptr;
  cublas_check(cublasCreate(&handle), "cublasCreate");
  struct HandleGuard {
    cublasHandle_t h;
    ~HandleGuard() { cublasDestroy(h); }
  } guard{handle};
  cublas_check(cublasSetStream(handle, t.stream), "cublasSetStream");

  const float alpha = 1.0f, beta = 0.0f;
  auto gemm = [&] {
    cublas_check(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a.get(),
                              cuda_type, n, b.get(), cuda_type, n, &beta, c.get(), cuda_type, n,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx");
  };
  GemmCeiling g;
  g.n = n;
  g.reps = reps;
  g.dtype = dtype;
  g.tflops = 2.0 * static_cast<double>(n) * n * n / (t.median_ms(reps, gemm) * 1e-3) / 1e12;
  return g;
}

}  // namespace mla_bench
