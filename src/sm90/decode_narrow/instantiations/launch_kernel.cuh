// Shared body of the per-dtype instantiation units.
#pragma once

#include <cuda_runtime.h>

#include "sm90/decode_narrow/kernel.cuh"
#include "sm90/decode_narrow/launch.h"

namespace mla::sm90::decode_narrow {

template <typename Element>
cudaError_t launch_kernel(const decode_dense::Params& params, const CUtensorMap& kv_map,
                          const CUtensorMap& q_map, dim3 grid, cudaStream_t stream) {
  // +1 KiB: the kernel rounds the dynamic shared-memory base up to a 1024-byte boundary.
  constexpr size_t smem_bytes = sizeof(SharedStorage<Element>) + 1024;
  static_assert(smem_bytes <= 227 * 1024, "shared memory plan exceeds the sm90 limit");
  auto kernel = decode_narrow_kernel<Element>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
  if (err != cudaSuccess) return err;
  kernel<<<grid, kThreads, smem_bytes, stream>>>(params, kv_map, q_map);
  return cudaGetLastError();
}

}  // namespace mla::sm90::decode_narrow
