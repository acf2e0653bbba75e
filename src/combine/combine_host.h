// Host reference of the split-KV combine (combine.h), in double.
#pragma once

#include "combine/combine.h"

namespace mla::detail {

// Same semantics as launch_combine, with every pointer of params in host memory. Accumulates in
// double, rounds once to out's dtype (round to nearest even). When out_f64 is not null it also
// receives the unrounded result of every row combine writes ([b, s_q, h_q, d_v] contiguous;
// rows of single-split requests are left untouched).
void combine_host(const CombineParams& params, double* out_f64 = nullptr);

}  // namespace mla::detail
