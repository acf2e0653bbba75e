// mla::schedule: validates, then launches the GPU scheduler (src/sched/scheduler.cu).
#include <cstdint>
#include <string>

#include <cuda_runtime_api.h>

#include "mla/decode.h"
#include "sched/heuristics.h"
#include "sched/metadata.h"
#include "sched/scheduler.h"

namespace mla {
namespace {

Status invalid(const std::string& message) {
  return Status(StatusCode::kInvalidArgument, message);
}

}  // namespace

Status schedule(const DecodeArgs& args, const DecodePlan& plan, void* schedule_buffer,
                cudaStream_t stream) {
  if (Status st = check(args); !st.ok()) return st;
  if (plan.num_sm_parts <= 0 || plan.num_sm_parts > detail::kMaxScheduleParts) {
    return invalid("plan.num_sm_parts in [1, " + std::to_string(detail::kMaxScheduleParts) +
                   "] failed: plan.num_sm_parts=" + std::to_string(plan.num_sm_parts) +
                   " (use the plan returned by plan_decode)");
  }
  const DecodePlan expected = plan_decode(args, plan.num_sms);
  if (expected.num_sm_parts != plan.num_sm_parts ||
      expected.schedule_bytes != plan.schedule_bytes ||
      expected.max_partial_slots != plan.max_partial_slots) {
    return invalid("plan == plan_decode(args, plan.num_sms) failed: plan.num_sm_parts=" +
                   std::to_string(plan.num_sm_parts) + ", expected " +
                   std::to_string(expected.num_sm_parts) + "; plan.schedule_bytes=" +
                   std::to_string(plan.schedule_bytes) + ", expected " +
                   std::to_string(expected.schedule_bytes) + " (plan made for other shapes, batch=" +
                   std::to_string(args.batch) + ")");
  }
  if (schedule_buffer == nullptr) {
    return invalid("schedule_buffer != nullptr failed: schedule_buffer=0 (expected a device "
                   "buffer of plan.schedule_bytes=" + std::to_string(plan.schedule_bytes) +
                   " bytes)");
  }
  if (reinterpret_cast<uintptr_t>(schedule_buffer) % 16 != 0) {
    return invalid("schedule_buffer % 16 == 0 failed: schedule_buffer=" +
                   std::to_string(reinterpret_cast<uintptr_t>(schedule_buffer)) +
                   " (expected 16-byte alignment)");
  }
  int device_count = 0;
  if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) {
    cudaGetLastError();
    return Status(StatusCode::kNoDevice, "cudaGetDeviceCount found no CUDA device");
  }
  const detail::ScheduleTuning tuning{
      .split_overhead_blocks = detail::split_overhead_blocks(),
      .min_split_blocks = detail::min_split_blocks()};
  // One merge flag per decode CTA (m-block, kv head, part): metadata.h.
  const cudaError_t err = detail::launch_schedule(args.cache_seqlens, args.batch,
                                                  plan.num_sm_parts, tuning, schedule_buffer,
                                                  stream, expected.num_m_blocks * args.num_heads_kv);
  if (err != cudaSuccess) {
    return Status(StatusCode::kCudaError,
                  std::string("launch_schedule failed: ") + cudaGetErrorName(err) + " (" +
                      cudaGetErrorString(err) + ")");
  }
  return Status::Ok();
}

}  // namespace mla
