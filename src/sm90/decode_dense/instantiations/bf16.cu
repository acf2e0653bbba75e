#include "sm90/decode_dense/instantiations/launch_kernel.cuh"

namespace mla::sm90::decode_dense {
template cudaError_t launch_kernel<__nv_bfloat16>(const Params&, const CUtensorMap&,
                                                  const CUtensorMap&, dim3, cudaStream_t);
}  // namespace mla::sm90::decode_dense
