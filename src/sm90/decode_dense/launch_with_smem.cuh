// Host-side launch of an sm90 decode kernel (decode_dense or decode_narrow) whose shared storage
// is one struct placed in dynamic shared memory by aligned_shared_storage (device_ops.cuh).
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstddef>

#include "sm90/decode_dense/params.h"

namespace mla::sm90::decode_dense {

using DecodeKernel = void (*)(Params, CUtensorMap, CUtensorMap);

// Raises the kernel's dynamic shared-memory limit to what Storage needs and launches it with
// `threads` threads per CTA. Returns the first CUDA error.
template <class Storage>
cudaError_t launch_with_storage(DecodeKernel kernel, int threads, const Params& params,
                                const CUtensorMap& kv_map, const CUtensorMap& q_map, dim3 grid,
                                cudaStream_t stream) {
  // +1 KiB: the kernel rounds the dynamic shared-memory base up to a 1024-byte boundary.
  constexpr size_t smem_bytes = sizeof(Storage) + 1024;
  static_assert(smem_bytes <= 227 * 1024, "shared memory plan exceeds the sm90 limit");
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
  if (err != cudaSuccess) return err;
  kernel<<<grid, threads, smem_bytes, stream>>>(params, kv_map, q_map);
  return cudaGetLastError();
}

}  // namespace mla::sm90::decode_dense
