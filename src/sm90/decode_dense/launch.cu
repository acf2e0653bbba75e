// Host side of the sm90 dense decode kernel: TMA descriptor, launch configuration, and the
// host/kernel contract re-asserted (the API layer validated the user's arguments already).
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <mutex>
#include <string>

#include "sm90/decode_dense/config.h"
#include "sm90/decode_dense/launch.h"
#include "sm90/decode_narrow/launch.h"

namespace mla::sm90::decode_dense {

// Defined in instantiations/<dtype>.cu, one translation unit each.
template <typename Element>
cudaError_t launch_kernel(const Params& params, const CUtensorMap& kv_map,
                          const CUtensorMap& q_map, dim3 grid, cudaStream_t stream);

namespace {

PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 encoder = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult query{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                         &query) == cudaSuccess &&
        query == cudaDriverEntryPointSuccess) {
      encoder = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
    }
  });
  return encoder;
}

}  // namespace

bool runs_narrow_kernel(int rows_per_kv_head) { return rows_per_kv_head <= decode_narrow::kRows; }

cudaError_t launch(const Params& params, const KvLayout& kv, const LaunchShape& shape,
                   cudaStream_t stream, std::string* error_message) {
  auto fail = [&](const std::string& why) {
    if (error_message) *error_message = "sm90 decode launch: " + why;
    return cudaErrorInvalidValue;
  };
  if (kv.page_size != kBlockN) return fail("page_size must be 64");
  if ((reinterpret_cast<uintptr_t>(kv.base) & 15) != 0) return fail("kv_cache must be 16-byte aligned");
  if (kv.token_stride % 8 || kv.head_stride % 8 || kv.page_stride % 8)
    return fail("kv strides must be multiples of 8 elements (TMA needs 16-byte strides)");
  if (shape.num_m_blocks <= 0 || shape.num_sm_parts <= 0 || params.num_heads_kv <= 0)
    return fail("empty grid");

  auto encode = tensor_map_encoder();
  if (!encode) return fail("cuTensorMapEncodeTiled is unavailable (driver too old?)");

  // 4-D view of the cache, innermost first: (dim, token in page, kv head, page).
  CUtensorMap kv_map;
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(kHeadDimQK),
                              static_cast<cuuint64_t>(kv.page_size),
                              static_cast<cuuint64_t>(kv.num_heads_kv),
                              static_cast<cuuint64_t>(kv.num_pages)};
  const cuuint64_t strides_bytes[3] = {static_cast<cuuint64_t>(kv.token_stride) * 2,
                                       static_cast<cuuint64_t>(kv.head_stride) * 2,
                                       static_cast<cuuint64_t>(kv.page_stride) * 2};
  const cuuint32_t box[4] = {kTileDim, kBlockN, 1, 1};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  CUresult res = encode(&kv_map,
                        kv.is_fp16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                        4, const_cast<void*>(kv.base), dims, strides_bytes, box, element_strides,
                        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                        CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (res != CUDA_SUCCESS) return fail("cuTensorMapEncodeTiled failed with CUresult " + std::to_string(res));

  // At most 16 rows per kv head: the narrow kernel (transposed products, rows as wgmma's N).
  const bool narrow = runs_narrow_kernel(params.rows_per_kv_head);
  if (narrow && shape.num_m_blocks != 1) return fail("narrow kernel expects one m-block");
  const int cta_rows = narrow ? decode_narrow::kRows : kBlockM;

  // Q by TMA when a CTA's rows are one box of the view (dim, head, s, b); see params.h.
  Params p = params;
  CUtensorMap q_map{};
  p.q_tma = 0;
  p.q_box_heads = 0;
  const int hpg = params.heads_per_kv;
  const bool q_box_fits = hpg % cta_rows == 0 || cta_rows % hpg == 0;
  // A stride of a size-1 dimension is never applied; TMA still wants it 16-byte aligned.
  auto q_stride_bytes = [](int64_t stride_elems, int size) -> cuuint64_t {
    return size == 1 ? 16 : static_cast<cuuint64_t>(stride_elems) * 2;
  };
  const cuuint64_t q_strides[3] = {q_stride_bytes(params.q_head_stride, params.num_heads_q),
                                   q_stride_bytes(params.q_seq_stride, params.seqlen_q),
                                   q_stride_bytes(params.q_batch_stride, params.batch)};
  const bool q_strides_ok = q_strides[0] % 16 == 0 && q_strides[1] % 16 == 0 &&
                            q_strides[2] % 16 == 0 && q_strides[0] > 0 && q_strides[1] > 0 &&
                            q_strides[2] > 0 && (reinterpret_cast<uintptr_t>(params.q) & 15) == 0;
  if (q_box_fits && q_strides_ok) {
    const int box_heads = hpg < cta_rows ? hpg : cta_rows;
    const cuuint64_t q_dims[4] = {static_cast<cuuint64_t>(kHeadDimQK),
                                  static_cast<cuuint64_t>(params.num_heads_q),
                                  static_cast<cuuint64_t>(params.seqlen_q),
                                  static_cast<cuuint64_t>(params.batch)};
    const cuuint32_t q_box[4] = {kTileDim, static_cast<cuuint32_t>(box_heads),
                                 static_cast<cuuint32_t>(cta_rows / box_heads), 1};
    res = encode(&q_map,
                 kv.is_fp16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4,
                 const_cast<void*>(params.q), q_dims, q_strides, q_box, element_strides,
                 CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                 CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (res == CUDA_SUCCESS) {
      p.q_tma = 1;
      p.q_box_heads = box_heads;
    }
  }

  auto row_stride_ok = [](int64_t stride_elems, int size) {
    return size == 1 || (stride_elems * 2) % 16 == 0;
  };
  p.out_rows_bulk = (reinterpret_cast<uintptr_t>(params.out) & 15) == 0 &&
                    row_stride_ok(params.out_head_stride, params.num_heads_q) &&
                    row_stride_ok(params.out_seq_stride, params.seqlen_q) &&
                    row_stride_ok(params.out_batch_stride, params.batch);

  const dim3 grid(shape.num_m_blocks, params.num_heads_kv, shape.num_sm_parts);
  if (narrow) {
    return kv.is_fp16 ? decode_narrow::launch_kernel<__half>(p, kv_map, q_map, grid, stream)
                      : decode_narrow::launch_kernel<__nv_bfloat16>(p, kv_map, q_map, grid, stream);
  }
  return kv.is_fp16 ? launch_kernel<__half>(p, kv_map, q_map, grid, stream)
                    : launch_kernel<__nv_bfloat16>(p, kv_map, q_map, grid, stream);
}

}  // namespace mla::sm90::decode_dense
