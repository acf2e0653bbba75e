// A simple GPU reference of MLA decoding (DESIGN.md section 1), used to verify the optimised
// kernels on shapes too large for the CPU reference (mla-bench, GPU tests).
//
// It is written to be obviously correct rather than fast: two passes over the visible keys (the
// row maximum first, then exp / sum / weighted V with that fixed maximum, so no rescaling),
// fp32 dot products and accumulators, double for the softmax denominator. It still reuses each
// KV tile across the heads that share a kv head, so b = 128, s_k = 8192, h_q = 128 takes on the
// order of 0.1 s on a Hopper GPU.
#pragma once

#include <cuda_runtime_api.h>

#include "mla/decode.h"
#include "mla/status.h"

namespace mla::reference {

// Computes the attention of args (q, kv_cache, block_table, cache_seqlens, strides, dtype,
// softmax_scale, causal as documented in mla/decode.h; args.out and args.lse are ignored) into
//   out_ref [b, s_q, h_q, d_v] float, contiguous      (device)
//   lse_ref [b, h_q, s_q]      float, contiguous      (device)
// Rows without a visible key get out = 0 and lse = +inf. Only the pages a request uses are
// read, and within its last page only its valid tokens, so poisoned memory never leaks in.
// Asynchronous on stream. Requires d_qk = 576 and d_v = 512. Does not validate the contents of
// block_table / cache_seqlens (use mla::validate_contents for that).
Status reference_decode_gpu(const DecodeArgs& args, float* out_ref, float* lse_ref,
                            cudaStream_t stream);

}  // namespace mla::reference
