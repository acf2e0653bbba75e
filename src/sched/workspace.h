// Decode workspace layout (plan.workspace_bytes), shared by plan_decode (sizes) and decode
// (pointers). With S = plan.max_partial_slots:
//   offset 0:                  float o_partial  [S, s_q, h_q, d_v]
//   offset lse_offset (below): float lse_partial[S, s_q, h_q]
// lse_offset = o_partial bytes rounded up to 256 and the total is rounded up to 256 as well, so
// both arrays start on a 256-byte boundary when the workspace does (TMA / vector stores want 16).
#pragma once

#include <cstddef>
#include <cstdint>

#include "mla/decode.h"
#include "sched/metadata.h"

namespace mla::detail {

inline constexpr size_t kWorkspaceAlign = 256;

inline size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

inline size_t workspace_lse_offset(int slots, int s_q, int h_q, int d_v) {
  return round_up(partial_o_elems(slots, s_q, h_q, d_v) * sizeof(float), kWorkspaceAlign);
}

inline size_t workspace_bytes(int slots, int s_q, int h_q, int d_v) {
  return round_up(workspace_lse_offset(slots, s_q, h_q, d_v) +
                      partial_lse_elems(slots, s_q, h_q) * sizeof(float),
                  kWorkspaceAlign);
}

struct WorkspaceView {
  float* o_partial;    // [plan.max_partial_slots, s_q, h_q, d_v]
  float* lse_partial;  // [plan.max_partial_slots, s_q, h_q]
};

inline WorkspaceView workspace_view(void* workspace, const DecodePlan& plan,
                                    const DecodeArgs& args) {
  auto* base = static_cast<char*>(workspace);
  const size_t lse_offset = workspace_lse_offset(plan.max_partial_slots, args.seqlen_q,
                                                 args.num_heads_q, args.head_dim_v);
  return WorkspaceView{.o_partial = reinterpret_cast<float*>(base),
                       .lse_partial = reinterpret_cast<float*>(base + lse_offset)};
}

}  // namespace mla::detail
