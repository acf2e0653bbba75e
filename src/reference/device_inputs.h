// Device-side generation of test and benchmark inputs (host generation of gigabytes of KV would
// dominate a run): normal-distributed q / KV, NaN poison for KV that must never be read, and
// 16-bit to float conversion. Shared by the GPU tests and mla-bench.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "mla/decode.h"

namespace mla::reference {

// dst[k] = scale * N(0, 1) for k < n, rounded to dtype. The value depends on (seed, k) only
// (a counter-based generator), not on the launch shape. Asynchronous on stream.
cudaError_t fill_normal(void* dst, size_t n, DType dtype, uint64_t seed, float scale,
                        cudaStream_t stream);

// kv is [num_pages, page_size, row_elems] (row_elems = h_kv * d_qk for the contiguous layout).
// Writes NaN into every token whose index within its page is >= valid_tokens[page]
// (valid_tokens: device int32 [num_pages], 0 for pages no request uses), so a kernel that reads
// past a request's length, or an unused page, produces NaN. Asynchronous on stream.
cudaError_t poison_kv(void* kv, int64_t num_pages, int page_size, int64_t row_elems,
                      const int32_t* valid_tokens, DType dtype, cudaStream_t stream);

// dst[k] = float(src[k]) for k < n, src in dtype. Asynchronous on stream.
cudaError_t to_float(const void* src, size_t n, DType dtype, float* dst, cudaStream_t stream);

}  // namespace mla::reference
