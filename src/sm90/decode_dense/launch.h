// Host launcher of the sm90 dense MLA decode kernel.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "sm90/decode_dense/params.h"

namespace mla::sm90::decode_dense {

// Where the kv_cache lives, for the TMA descriptor. Strides in elements; dim stride is 1.
struct KvLayout {
  const void* base;        // kv_cache [num_pages, page_size, h_kv, 576]
  int num_pages;
  int page_size;           // must be kBlockN (64)
  int num_heads_kv;
  int64_t page_stride, token_stride, head_stride;
  bool is_fp16;            // else bf16
};

struct LaunchShape {
  int num_m_blocks;        // grid.x
  int num_sm_parts;        // grid.z (grid.y = h_kv)
};

// Whether launch() runs decode_narrow (at most 16 query rows per kv head) rather than the dense
// kernel. Only the dense kernel merges two-piece requests (Params::merge_flags).
bool runs_narrow_kernel(int rows_per_kv_head);

// Launches the kernel on stream. Returns cudaSuccess or the first CUDA error; on a host-side
// contract violation returns cudaErrorInvalidValue and sets *error_message.
cudaError_t launch(const Params& params, const KvLayout& kv, const LaunchShape& shape,
                   cudaStream_t stream, std::string* error_message);

}  // namespace mla::sm90::decode_dense
