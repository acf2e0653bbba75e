// CPU reference of MLA decoding (DESIGN.md section 1) and host helpers shared by the tests and
// mla-bench: bf16/fp16 <-> float conversion and a result comparison.
//
// The reference is written for obviousness, not speed: one (request, query token, head) row at
// a time, every dot product and the softmax accumulated in double.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "mla/decode.h"
#include "mla/status.h"

namespace mla::reference {

// ---- half-precision conversion (host) ----
// Round-to-nearest-even; NaN stays NaN (quiet, sign kept), +-Inf stays +-Inf, values beyond the
// largest finite half become Inf, subnormals are produced and read exactly.
uint16_t float_to_bf16(float x);
float bf16_to_float(uint16_t bits);
uint16_t float_to_fp16(float x);
float fp16_to_float(uint16_t bits);
uint16_t float_to_half(DType dtype, float x);
float half_to_float(DType dtype, uint16_t bits);
std::vector<uint16_t> to_half(DType dtype, const std::vector<float>& x);
std::vector<float> to_float(DType dtype, const std::vector<uint16_t>& bits);

// ---- problem ----
// Host view of one decode step, with the shapes and stride semantics of mla::DecodeArgs (strides
// in elements), but q and kv already converted to float by the caller.
struct RefProblem {
  int batch = 0;
  int seqlen_q = 1;
  int num_heads_q = 0;
  int num_heads_kv = 1;
  int head_dim_qk = kHeadDimQK;
  int head_dim_v = kHeadDimV;
  int page_size = kPageSize;
  int num_pages = 0;
  int max_pages_per_seq = 0;

  const float* q = nullptr;  // [b, s_q, h_q, d_qk]
  int64_t q_batch_stride = 0, q_seq_stride = 0, q_head_stride = 0, q_dim_stride = 1;
  const float* kv = nullptr;  // [num_pages, page_size, h_kv, d_qk]; V = the first d_v dims
  int64_t kv_page_stride = 0, kv_token_stride = 0, kv_head_stride = 0, kv_dim_stride = 1;
  const int32_t* block_table = nullptr;  // [b, max_pages_per_seq]
  int64_t block_table_batch_stride = 0;
  const int32_t* cache_seqlens = nullptr;  // [b]

  double softmax_scale = 0.0;  // <= 0: d_qk^-0.5
  bool causal = false;
};

// Copies sizes, strides, scale and causal from args and points at the given host arrays, which
// must have the layouts args describes.
RefProblem problem_from_args(const DecodeArgs& args, const float* q, const float* kv,
                             const int32_t* block_table, const int32_t* cache_seqlens);

// Contiguous outputs.
struct RefResult {
  std::vector<double> out;  // [b, s_q, h_q, d_v]; 0 for a row with no visible key
  std::vector<double> lse;  // [b, h_q, s_q]; natural log of the scaled softmax denominator, +inf
                            // for a row with no visible key
};

// Whole batch. kInvalidArgument if sizes are not positive or a length / used page id is out of
// range (the reference never reads outside the arrays it was given).
Status decode_reference(const RefProblem& p, RefResult* result);

// One request only (to spot-check large problems): out [s_q, h_q, d_v], lse [h_q, s_q],
// contiguous, both sized by the function.
Status decode_reference_request(const RefProblem& p, int request, std::vector<double>* out,
                                std::vector<double>* lse);

// ---- comparison ----
struct CompareResult {
  size_t count = 0;                 // elements compared
  double rel_frobenius = 0.0;       // ||got - ref||_F / ||ref||_F over elements finite in both
  double max_abs_err = 0.0;         // over elements finite in both
  size_t max_abs_index = 0;
  size_t num_violations = 0;        // finite elements with |got - ref| > atol + rtol * |ref|
  size_t first_violation = SIZE_MAX;
  size_t nan_inf_mismatches = 0;    // positions where got and ref differ in NaN / +Inf / -Inf
  size_t first_nan_inf_mismatch = SIZE_MAX;
  bool ok = false;                  // no violation and no NaN/Inf mismatch
  std::string summary;              // one line, for logs and test failure messages
};

CompareResult compare(const float* got, const double* ref, size_t n, double atol, double rtol);
CompareResult compare(const double* got, const double* ref, size_t n, double atol, double rtol);
CompareResult compare(const float* got, const float* ref, size_t n, double atol, double rtol);

}  // namespace mla::reference
