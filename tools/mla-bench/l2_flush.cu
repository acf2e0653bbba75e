// How mla-bench empties L2 between replays. DESIGN.md's method is the default: a memset of a
// buffer twice the L2 size, which leaves L2 full of dirty lines that the timed step must write
// back as it evicts them. The other modes exist to measure what that costs (docs/PERF.md).
#include "l2_flush.h"

#include <cuda_runtime.h>

#include "gpu_util.h"

namespace mla_bench {
namespace {

// Reads every 16 bytes of the buffer once; the result is stored only if it equals a value the
// flush data never sums to, which keeps the loads alive without writing anything.
__global__ void read_flush_kernel(const uint4* __restrict__ data, size_t n, unsigned* sink) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint4 v = data[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9E3779B9u) *sink = acc;
}

}  // namespace

void flush_l2(FlushMode mode, void* buffer, size_t bytes, cudaStream_t stream) {
  switch (mode) {
    case FlushMode::kMemset:
      MLA_BENCH_CUDA(cudaMemsetAsync(buffer, 0, bytes, stream));
      break;
    case FlushMode::kRead: {
      // The buffer's last 16 bytes hold the sink and are not read: it is never written, since
      // the buffer was zeroed once and the xor of zeros is 0.
      const size_t n = bytes / sizeof(uint4) - 1;
      read_flush_kernel<<<1024, 512, 0, stream>>>(
          static_cast<const uint4*>(buffer), n,
          reinterpret_cast<unsigned*>(static_cast<char*>(buffer) + bytes - sizeof(unsigned)));
      MLA_BENCH_CUDA(cudaGetLastError());
      break;
    }
    case FlushMode::kNone:
      break;
  }
}

}  // namespace mla_bench
