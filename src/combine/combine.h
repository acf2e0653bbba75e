// Split-KV combine: merges the fp32 partials of the requests the scheduler cut into pieces.
//
// For every request i (split_offsets from the schedule buffer, metadata.h), query token s, head h:
//   num_splits == 0: out = 0, lse = +inf (no key).
//   num_splits == 1: not touched (the main kernel wrote the final out/lse).
//   num_splits >= 2: with lse_k, o_k the pieces' log-sum-exps and (already normalised) outputs,
//     L = log(sum_k exp(lse_k)), out = sum_k exp(lse_k - L) * o_k, lse = L. Pieces with
//     lse_k = -inf (no visible key, e.g. causal MTP rows) are skipped, whatever their o_k holds;
//     if all are -inf: out = 0, lse = +inf.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace mla::detail {

struct CombineParams {
  int batch = 0;
  int seqlen_q = 0;
  int num_heads_q = 0;
  int head_dim_v = 0;                     // multiple of 4
  const int32_t* split_offsets = nullptr;  // [batch + 1], the schedule buffer's
  const float* o_partial = nullptr;        // [slots, s_q, h_q, d_v], contiguous
  const float* lse_partial = nullptr;      // [slots, s_q, h_q], contiguous, natural log
  void* out = nullptr;                     // [b, s_q, h_q, d_v], dim stride 1, elements below
  int64_t out_batch_stride = 0, out_seq_stride = 0, out_head_stride = 0;
  float* lse = nullptr;  // [b, h_q, s_q] contiguous
  bool out_is_fp16 = false;  // else bf16
  // Kernel choice only (results are identical): the schedule's part count. With few splits per
  // request (num_sm_parts <= 2 * batch) a warp merges a row; otherwise a CTA of 512 threads.
  // 0 picks the CTA-per-row kernel.
  int num_sm_parts = 0;
  // Kernel shape only (results identical up to fp32 summation order, and deterministic): the
  // GPU's SM count. The CTA-per-row kernel cuts each row into 2 column chunks when there are at
  // most num_sms / 2 rows, 4 when at most num_sms / 4. 0: one CTA per row.
  int num_sms = 0;
};

// Kernel choice of launch_combine, exposed for tests. A warp per row when requests have few pieces
// on average (num_sm_parts <= 2 * batch); otherwise a 512-thread CTA per row.
inline bool combine_warp_per_row(const CombineParams& params) {
  return params.num_sm_parts > 0 && params.num_sm_parts <= 2 * params.batch;
}

// CTAs per row of the CTA-per-row kernel (1, 2 or 4): with few rows for the GPU (b = 1, h_q = 16:
// 16 rows, each of up to one piece per SM) each row is cut into column chunks while
// 2 * rows * chunks <= num_sms, i.e. 2 chunks up to num_sms / 2 rows, 4 up to num_sms / 4.
// Measured (A/B, H200): b = 1, s_k = 32768, h_q = 16: 27.4 vs 32.7 us; with 128 or 256 rows
// (b = 1 or 2, h_q = 128) chunks were slower (29.6 vs 25.3, 42.7 vs 37.8 us): every chunk repeats
// the row's lse round trip and weights, and the GPU was already full. 1 for the warp-per-row
// kernel and for num_sms <= 0.
inline constexpr int kCombineMaxColumnChunks = 4;
inline int combine_column_chunks(int64_t rows, int num_sms, bool warp_per_row) {
  int chunks = 1;
  while (!warp_per_row && chunks < kCombineMaxColumnChunks &&
         rows * chunks * 2 <= static_cast<int64_t>(num_sms)) {
    chunks *= 2;
  }
  return chunks;
}

// One CTA per (request, query token, group of heads); asynchronous on stream. With
// programmatic_dependent_launch the kernel may start while the previous kernel on the stream
// (the main decode kernel) finishes, and waits (griddepcontrol.wait) before reading anything.
// Returns cudaErrorInvalidValue for bad shapes (non-positive sizes, head_dim_v not a multiple
// of 4, null pointers), else the launch error.
cudaError_t launch_combine(const CombineParams& params, cudaStream_t stream,
                           bool programmatic_dependent_launch);

}  // namespace mla::detail
