// Split-KV combine: merges the fp32 partials of the requests the scheduler cut into pieces.
//
// For every request i (split_offsets from the schedule buffer, metadata.h), query token s, head h:
//   num_splits == 0: out = 0, lse = +inf (no key).
//   num_splits == 1: not touched (the main kernel wrote the final out/lse).
//   num_splits == 2 with two_piece_merged: not touched either (decode_dense merged the two pieces
//     itself, sched/metadata.h).
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
  // The main kernel merged every request of exactly two pieces (decode_dense with merge flags).
  bool two_piece_merged = false;
  // Kernel choice only (results are identical): the schedule's part count. With few splits per
  // request (num_sm_parts <= 2 * batch) a warp merges a row; otherwise a CTA of 512 threads.
  // 0 picks the CTA-per-row kernel.
  int num_sm_parts = 0;
  // Kernel shape only (results identical up to fp32 summation order, and deterministic): the
  // GPU's SM count. The CTA-per-row kernel cuts each row into 2 or 4 column chunks when the rows
  // are few and have many pieces (combine_column_chunks). 0: one CTA per row.
  int num_sms = 0;
};

// Kernel choice of launch_combine, exposed for tests. A warp per row when requests have few pieces
// on average (num_sm_parts <= 2 * batch); otherwise a 512-thread CTA per row.
inline bool combine_warp_per_row(const CombineParams& params) {
  return params.num_sm_parts > 0 && params.num_sm_parts <= 2 * params.batch;
}

// CTAs per row of the CTA-per-row kernel (1, 2 or 4). A row's pieces are walked by 4 x chunks
// groups of threads with four loads in flight each, so a row of n pieces takes about
// n / (16 x chunks) dependent rounds of L2 round trips: with many pieces per row (small batches
// over long sequences) combine is latency-bound and more chunks take rounds off, as long as every
// CTA is resident at once (kCombineCtasPerSm per SM, the kernel's launch bounds) and every group
// still has two pieces to walk. Rule: the largest chunks in {4, 2, 1} with
//   rows x chunks <= kCombineCtasPerSm x num_sms   and   8 x chunks <= pieces per request,
// pieces per request estimated as ceil(num_sm_parts / batch) (num_sm_parts <= 0: unknown, taken as
// many). Worked examples for 132 SMs (528 resident CTAs):
//   b = 1, h_q = 16, 132 parts: 16 rows, 132 pieces -> 4
//   b = 1, h_q = 128, 66 parts (case E): 128 rows, 66 pieces -> 4
//   b = 2, h_q = 128, 66 parts: 256 rows, 33 pieces -> 2 (4 would be 1024 CTAs)
//   b = 8, h_q = 16, 132 parts: 128 rows, 17 pieces -> 2 (8 groups of about 2 pieces each)
//   b = 32, h_q = 16 (case F): 512 rows -> 1
// Measured (A/B, H200, docs/PERF.md tenth session): case E 39.7 vs 41.95 us (4 chunks, was 1);
// b = 1, s_k = 131072, h_q = 128 85.05 vs 91.3 us; other small-batch shapes within 1 us.
// 1 for the warp-per-row kernel and for num_sms <= 0.
inline constexpr int kCombineMaxColumnChunks = 4;
inline constexpr int kCombineCtasPerSm = 4;
inline int combine_column_chunks(int64_t rows, int num_sms, bool warp_per_row, int batch,
                                 int num_sm_parts) {
  if (warp_per_row || num_sms <= 0 || rows <= 0) return 1;
  const int64_t pieces = num_sm_parts > 0 && batch > 0
                             ? (static_cast<int64_t>(num_sm_parts) + batch - 1) / batch
                             : int64_t{1} << 30;
  for (int chunks = kCombineMaxColumnChunks; chunks > 1; chunks /= 2) {
    if (rows * chunks <= static_cast<int64_t>(kCombineCtasPerSm) * num_sms && 8 * chunks <= pieces)
      return chunks;
  }
  return 1;
}

// One CTA per (request, query token, group of heads); asynchronous on stream. With
// programmatic_dependent_launch the kernel may start while the previous kernel on the stream
// (the main decode kernel) finishes, and waits (griddepcontrol.wait) before reading anything.
// Returns cudaErrorInvalidValue for bad shapes (non-positive sizes, head_dim_v not a multiple
// of 4, null pointers), else the launch error.
cudaError_t launch_combine(const CombineParams& params, cudaStream_t stream,
                           bool programmatic_dependent_launch);

}  // namespace mla::detail
