// The two ceilings mla-bench prints next to every result, measured on the GPU at hand.
#pragma once

#include <cstddef>

#include "options.h"

namespace mla_bench {

struct CopyCeiling {
  double gb_per_s = 0;  // (bytes read + bytes written) / median time, 1e9 bytes
  size_t bytes = 0;     // bytes of one copy (read once, written once)
  int reps = 0;
};

struct GemmCeiling {
  double tflops = 0;  // 2 n^3 / median time
  int n = 0;
  int reps = 0;
  BenchDType dtype = BenchDType::kBF16;  // of A, B and C
};

struct LaunchFloor {
  double us = 0;  // median time of an empty two-kernel decode-shaped graph (launch_floor.cu)
  int reps = 0;
};

// Device-to-device cudaMemcpyAsync of `bytes`, median of `reps` timed copies.
CopyCeiling measure_copy_ceiling(size_t bytes, int reps);

// n x n x n GEMM through cublasGemmEx (fp32 compute; inputs and output of `dtype`), standard
// normal inputs, median of `reps` timed calls. The ceiling of record is bf16 (DESIGN.md section
// 5); an fp16 run measures the fp16 GEMM too, so that the tensor cores' own fp16/bf16 ratio on
// random data is printed beside the cases.
GemmCeiling measure_gemm_ceiling(int n, int reps, BenchDType dtype);

// The floor of a decode step under mla-bench's method: a graph of two empty kernels (num_sms
// CTAs, then a programmatically dependent one), replayed after an L2 flush of `flush`.
LaunchFloor measure_launch_floor(int num_sms, FlushMode flush_mode, void* flush, size_t flush_bytes,
                                 int reps);

}  // namespace mla_bench
