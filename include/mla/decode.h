// libmla public API: paged-KV Multi-head Latent Attention decoding (absorbed / MQA form).
//
// One decoding step of one layer computes, for every request i, query token s and head h:
//   out[i, s, h, :] = softmax(scale * q[i, s, h, :] . K_i^T) V_i      (V = first d_v dims of K)
//   lse[i, h, s]    = log(sum_j exp(scale * q . k_j))                  (natural log)
// over the keys j visible to (i, s): [0, cache_seqlens[i]) or, with causal and s_q > 1,
// [0, cache_seqlens[i] - s_q + s] (bottom-right aligned). A row with no visible key gets
// out = 0 and lse = +inf.
//
// Usage per step (see README):
//   DecodePlan plan = mla::plan_decode(args, num_sms);        // pure host, no GPU
//   mla::check(args);                                         // pure host, no GPU
//   mla::schedule(args, plan, schedule_buf, stream);          // once per step (reads cache_seqlens on GPU)
//   for each layer: mla::decode(args_layer, plan, schedule_buf, workspace, stream);
// None of these allocate or synchronise; schedule + decode can be captured in a CUDA graph.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "mla/status.h"

namespace mla {

enum class DType : int {
  kBF16 = 0,
  kFP16 = 1,
};

const char* dtype_name(DType dtype);

inline constexpr int kHeadDimQK = 576;  // 512 latent (NoPE) + 64 RoPE dims
inline constexpr int kHeadDimV = 512;   // V is the first 512 dims of each K row
inline constexpr int kPageSize = 64;    // tokens per KV page supported by the sm90 kernels

// All pointers are device pointers unless named host_*. All strides are in elements.
struct DecodeArgs {
  DType dtype = DType::kBF16;     // dtype of q and out
  DType kv_dtype = DType::kBF16;  // dtype of kv_cache; must equal dtype

  int batch = 0;              // b: number of requests
  int seqlen_q = 1;           // s_q: query tokens per request (1, or >1 for MTP)
  int num_heads_q = 0;        // h_q
  int num_heads_kv = 1;       // h_kv: must divide h_q; head h uses kv head h / (h_q / h_kv)
  int head_dim_qk = kHeadDimQK;
  int head_dim_v = kHeadDimV;
  int page_size = kPageSize;  // tokens per page
  int num_pages = 0;          // physical pages in kv_cache
  int max_pages_per_seq = 0;  // columns of block_table

  // q [b, s_q, h_q, d_qk]
  const void* q = nullptr;
  int64_t q_batch_stride = 0, q_seq_stride = 0, q_head_stride = 0, q_dim_stride = 1;

  // kv_cache [num_pages, page_size, h_kv, d_qk]; K = all 576 dims, V = the first 512.
  const void* kv_cache = nullptr;
  int64_t kv_page_stride = 0, kv_token_stride = 0, kv_head_stride = 0, kv_dim_stride = 1;

  // block_table [b, max_pages_per_seq] int32: logical page j of request i is physical page
  // block_table[i * block_table_batch_stride + j]. Entries past the request's last page are
  // never read.
  const int32_t* block_table = nullptr;
  int64_t block_table_batch_stride = 0;

  // cache_seqlens [b] int32 (device): valid tokens of each request.
  const int32_t* cache_seqlens = nullptr;
  // Optional host copy of cache_seqlens [b]; when set, check() also validates the lengths
  // (non-negative, fit in max_pages_per_seq * page_size). Never read by schedule()/decode().
  const int32_t* host_cache_seqlens = nullptr;

  // out [b, s_q, h_q, d_v], dtype of q.
  void* out = nullptr;
  int64_t out_batch_stride = 0, out_seq_stride = 0, out_head_stride = 0, out_dim_stride = 1;

  // lse [b, h_q, s_q] fp32, contiguous (FlashMLA's layout).
  float* lse = nullptr;

  float softmax_scale = 0.0f;  // <= 0 means the default d_qk^-0.5
  bool causal = false;         // bottom-right aligned causal mask among the s_q query tokens
};

// Fills every stride of args for densely packed tensors of the shapes documented above
// (block_table with max_pages_per_seq columns).
void set_contiguous_strides(DecodeArgs& args);

// The default softmax scale resolved: d_qk^-0.5 when args.softmax_scale <= 0.
float effective_softmax_scale(const DecodeArgs& args);

// Host-only validation; runs without a GPU. Checks, in order: dtype, layout (strides,
// alignment), shape (sizes, divisibility, index-arithmetic overflow), pointers, aliasing and,
// when host_cache_seqlens is given, the lengths.
Status check(const DecodeArgs& args);

// How one decode step is cut into work: computed on the host from shapes only.
struct DecodePlan {
  int num_sms = 0;             // SMs the plan was made for
  int rows_per_kv_head = 0;    // s_q * h_q / h_kv query rows that share one kv head
  int num_m_blocks = 0;        // ceil(rows_per_kv_head / 64): 64-row tiles per kv head
  int num_sm_parts = 0;        // parallel "SM parts" the KV of the whole batch is dealt to
  int max_partial_slots = 0;   // upper bound of split pieces over the batch (batch + parts)
  size_t schedule_bytes = 0;   // size of the schedule buffer written by schedule()
  size_t workspace_bytes = 0;  // size of the workspace used by decode() (fp32 partials)
};

// Pure host function: the plan for args' shapes on a GPU with num_sms multiprocessors.
// args must pass check() (only shape fields are read).
DecodePlan plan_decode(const DecodeArgs& args, int num_sms);

// Convenience: plan_decode(args, num_sms).workspace_bytes.
size_t decode_workspace_size(const DecodeArgs& args, int num_sms);

// Number of multiprocessors of a CUDA device (0 with no device).
int device_num_sms(int device);

// Once per decoding step: reads cache_seqlens on the GPU and writes the split-KV metadata into
// schedule_buffer (plan.schedule_bytes, 16-byte aligned). Asynchronous on stream; no allocation.
Status schedule(const DecodeArgs& args, const DecodePlan& plan, void* schedule_buffer,
                cudaStream_t stream);

// One layer's attention: main kernel + combine on stream, reusing schedule_buffer written by
// schedule() for the same cache_seqlens. workspace: plan.workspace_bytes, 16-byte aligned.
// decode() also uses a few words of schedule_buffer as flags between its CTAs and leaves them as
// schedule() wrote them (zero), so the buffer serves every layer of a step in turn; two decode()
// calls that may run at the same time need schedule buffers of their own, as they need their
// own workspaces. The main kernel's CTAs hand partial results to each other, each waiting only
// for CTAs the GPU started before it (docs/decode_dense.md).
Status decode(const DecodeArgs& args, const DecodePlan& plan, void* schedule_buffer,
              void* workspace, cudaStream_t stream);

// Debug aid: validates the contents of block_table (page ids in [0, num_pages) for every page
// a request uses) and cache_seqlens (0 <= len <= max_pages_per_seq * page_size) on the GPU,
// synchronising on stream, and reports the first bad entry as kInvalidContents.
Status validate_contents(const DecodeArgs& args, cudaStream_t stream);

}  // namespace mla
