#include "sm90/decode_narrow/instantiations/launch_kernel.cuh"

namespace mla::sm90::decode_narrow {
template cudaError_t launch_kernel<__nv_bfloat16>(const decode_dense::Params&, const CUtensorMap&,
                                                  const CUtensorMap&, dim3, cudaStream_t);
}  // namespace mla::sm90::decode_narrow
