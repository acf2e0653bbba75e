// Host reference of the split-KV combine: the same decisions as combine.cu, in double.
#include "combine/combine_host.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace mla::detail {

void combine_host(const CombineParams& p, double* out_f64) {
  // The partials are read only for requests with two or more splits: a batch without any may
  // pass empty (null) partial arrays and still gets its empty requests written.
  if (p.batch <= 0 || p.seqlen_q <= 0 || p.num_heads_q <= 0 || p.head_dim_v <= 0 ||
      p.split_offsets == nullptr || p.out == nullptr || p.lse == nullptr) {
    return;
  }
  const double inf = std::numeric_limits<double>::infinity();
  const int64_t rows_per_slot = static_cast<int64_t>(p.seqlen_q) * p.num_heads_q;
  const int d_v = p.head_dim_v;
  for (int i = 0; i < p.batch; ++i) {
    const int first = p.split_offsets[i];
    const int num_splits = p.split_offsets[i + 1] - first;
    if (num_splits == 1) continue;
    if (num_splits >= 2 && (p.o_partial == nullptr || p.lse_partial == nullptr)) continue;
    const int n = num_splits < 0 ? 0 : num_splits;
    for (int s = 0; s < p.seqlen_q; ++s) {
      for (int h = 0; h < p.num_heads_q; ++h) {
        const int64_t lse_row = static_cast<int64_t>(s) * p.num_heads_q + h;
        double m = -inf;
        for (int k = 0; k < n; ++k) {
          m = std::fmax(m, p.lse_partial[(first + k) * rows_per_slot + lse_row]);
        }
        double lse = -inf;
        if (m != -inf) {
          double sum = 0;
          for (int k = 0; k < n; ++k) {
            sum += std::exp(p.lse_partial[(first + k) * rows_per_slot + lse_row] - m);
          }
          lse = m + std::log(sum);
        }
        const int64_t out_off = i * p.out_batch_stride + s * p.out_seq_stride +
                                h * p.out_head_stride;
        const int64_t f64_off = ((static_cast<int64_t>(i) * p.seqlen_q + s) * p.num_heads_q + h) * d_v;
        for (int d = 0; d < d_v; ++d) {
          double acc = 0;
          if (lse != -inf) {
            for (int k = 0; k < n; ++k) {
              const double l = p.lse_partial[(first + k) * rows_per_slot + lse_row];
              if (l == -inf) continue;  // o_k of a piece with no key may hold anything
              acc += std::exp(l - lse) * p.o_partial[((first + k) * rows_per_slot + lse_row) * d_v + d];
            }
          }
          if (out_f64 != nullptr) out_f64[f64_off + d] = acc;
          if (p.out_is_fp16) {
            static_cast<__half*>(p.out)[out_off + d] = __double2half(acc);
          } else {
            static_cast<__nv_bfloat16*>(p.out)[out_off + d] = __double2bfloat16(acc);
          }
        }
        p.lse[(static_cast<int64_t>(i) * p.num_heads_q + h) * p.seqlen_q + s] =
            static_cast<float>(lse == -inf ? inf : lse);
      }
    }
  }
}

}  // namespace mla::detail
