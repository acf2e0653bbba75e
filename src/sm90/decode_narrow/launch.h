// Host entry of the sm90 narrow decode kernel. decode_dense::launch (the one host launcher of
// dense decode) encodes the TMA descriptors and picks this kernel when a kv head has at most
// kRows query rows.
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include "sm90/decode_dense/params.h"
#include "sm90/decode_narrow/config.h"

namespace mla::sm90::decode_narrow {

// grid = (1, h_kv, num_sm_parts). q_map's box is 64 dims x kRows rows when params.q_tma.
// Defined in instantiations/<dtype>.cu, one translation unit each.
template <typename Element>
cudaError_t launch_kernel(const decode_dense::Params& params, const CUtensorMap& kv_map,
                          const CUtensorMap& q_map, dim3 grid, cudaStream_t stream);

}  // namespace mla::sm90::decode_narrow
