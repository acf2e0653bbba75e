// Shared body of the per-dtype instantiation units.
#pragma once

#include <cuda_runtime.h>

#include "sm90/decode_dense/launch_with_smem.cuh"
#include "sm90/decode_narrow/kernel.cuh"
#include "sm90/decode_narrow/launch.h"

namespace mla::sm90::decode_narrow {

using decode_dense::launch_with_storage;

template <typename Element>
cudaError_t launch_kernel(const decode_dense::Params& params, const CUtensorMap& kv_map,
                          const CUtensorMap& q_map, dim3 grid, cudaStream_t stream) {
  return launch_with_storage<SharedStorage<Element>>(decode_narrow_kernel<Element>, kThreads,
                                                     params, kv_map, q_map, grid, stream);
}

}  // namespace mla::sm90::decode_narrow
