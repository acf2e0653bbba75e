// Host-side sizing of one decode step: mla::plan_decode, mla::decode_workspace_size,
// mla::device_num_sms. Pure functions of the shapes (plus the SM count), no GPU work.
#include <array>
#include <atomic>

#include <cuda_runtime_api.h>

#include "mla/decode.h"
#include "sched/heuristics.h"
#include "sched/metadata.h"
#include "sched/scheduler.h"
#include "sched/workspace.h"

namespace mla {

DecodePlan plan_decode(const DecodeArgs& args, int num_sms) {
  DecodePlan plan;
  plan.num_sms = num_sms;
  const int h_kv = args.num_heads_kv > 0 ? args.num_heads_kv : 1;
  plan.rows_per_kv_head = args.seqlen_q * args.num_heads_q / h_kv;
  plan.num_m_blocks = detail::num_m_blocks(args.seqlen_q, args.num_heads_q, h_kv);
  // num_sms <= 0 (no device known) still gives a usable plan: one part, no split.
  plan.num_sm_parts = detail::num_sm_parts(num_sms > 0 ? num_sms : 1, plan.num_m_blocks, h_kv);
  if (plan.num_sm_parts > detail::kMaxScheduleParts) plan.num_sm_parts = detail::kMaxScheduleParts;
  // Each part cuts at most one request, so there are at most batch + parts - 1 pieces.
  plan.max_partial_slots = args.batch + plan.num_sm_parts;
  plan.schedule_bytes = detail::round_up(
      detail::schedule_buffer_bytes(args.batch, plan.num_sm_parts, plan.num_m_blocks * h_kv), 16);
  plan.workspace_bytes = detail::workspace_bytes(plan.max_partial_slots, args.seqlen_q,
                                                 args.num_heads_q, args.head_dim_v);
  return plan;
}

size_t decode_workspace_size(const DecodeArgs& args, int num_sms) {
  return plan_decode(args, num_sms).workspace_bytes;
}

int device_num_sms(int device) {
  // cudaGetDeviceProperties is slow (tens of microseconds): cache per device. 0 = not cached;
  // -1 = no such device. Races only ever store the same value.
  constexpr int kMaxCachedDevices = 64;
  static std::array<std::atomic<int>, kMaxCachedDevices> cache{};
  if (device >= 0 && device < kMaxCachedDevices) {
    const int cached = cache[device].load(std::memory_order_relaxed);
    if (cached != 0) return cached > 0 ? cached : 0;
  }
  int count = 0;
  int sms = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || device < 0 || device >= count ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    cudaGetLastError();  // do not leave a sticky-looking error for the caller's next check
    sms = 0;
  }
  if (device >= 0 && device < kMaxCachedDevices) {
    cache[device].store(sms > 0 ? sms : -1, std::memory_order_relaxed);
  }
  return sms;
}

}  // namespace mla
