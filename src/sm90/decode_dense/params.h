// Kernel parameters of the sm90 dense MLA decode kernel: plain data, no user-facing types.
#pragma once

#include <cstdint>

#include "sched/metadata.h"

namespace mla::sm90::decode_dense {

struct Params {
  int batch;               // b
  int seqlen_q;            // s_q
  int num_heads_q;         // h_q
  int num_heads_kv;        // h_kv
  int heads_per_kv;        // h_q / h_kv
  int rows_per_kv_head;    // s_q * heads_per_kv; CTA row r of m-block m is (s, j) with
                           // m*64 + r = s * heads_per_kv + j, head = kv_head * heads_per_kv + j

  const void* q;           // [b, s_q, h_q, 576], dim stride 1
  int64_t q_batch_stride, q_seq_stride, q_head_stride;

  const int32_t* block_table;  // [b, max_pages_per_seq]
  int64_t block_table_batch_stride;
  const int32_t* cache_seqlens;  // [b]

  void* out;               // [b, s_q, h_q, 512], dim stride 1, dtype of q
  int64_t out_batch_stride, out_seq_stride, out_head_stride;
  float* lse;              // [b, h_q, s_q] contiguous

  float* o_partial;        // [slots, s_q, h_q, 512] fp32, contiguous
  float* lse_partial;      // [slots, s_q, h_q] fp32 (natural log, -inf for no key)

  const mla::detail::PartMetadata* parts;  // [num_sm_parts]
  const int32_t* split_offsets;            // [b + 1]
  // [num_sm_parts * h_kv * num_m_blocks], zero on entry and on exit (metadata.h): the hand-off of
  // two-piece requests. nullptr: every split piece is written as a partial for combine.
  uint32_t* merge_flags;

  float scale_log2;        // softmax_scale * log2(e): scores live in the base-2 domain
  int causal;              // bottom-right aligned causal mask when s_q > 1

  // Q by TMA (q_map) when the CTA's R rows (64; 16 in decode_narrow) form one box of the 4-D
  // view (dim, head, s, b): heads_per_kv a multiple of R (box R heads x 1 token) or a divisor of
  // R (box heads_per_kv heads x R / heads_per_kv tokens; tokens past s_q come back as zeros).
  // Otherwise 0: plain loads by the consumer threads.
  int q_tma;
  int q_box_heads;         // heads per box (min(heads_per_kv, rows per CTA))
  // 1 when every output row (request, token, head) starts on a 16-byte boundary (out and the
  // strides of its dimensions of size > 1), so decode_dense may write rows with bulk copies.
  // The public API requires that alignment (api/check.cpp); the kernel does not rely on it.
  int out_rows_bulk;
};

}  // namespace mla::sm90::decode_dense
