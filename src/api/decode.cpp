// mla::decode: validation, then main kernel (sm90 dense decode) and combine on one stream.
// No allocation, no synchronisation: the call can be captured in a CUDA graph.
#include <cuda_runtime_api.h>

#include <array>
#include <atomic>
#include <cmath>
#include <string>

#include "combine/combine.h"
#include "mla/decode.h"
#include "sched/metadata.h"
#include "sched/workspace.h"
#include "sm90/decode_dense/launch.h"

namespace mla {
namespace {

Status cuda_status(cudaError_t err, const char* what) {
  return Status(StatusCode::kCudaError,
                std::string(what) + " failed: " + cudaGetErrorName(err) + " (" +
                    cudaGetErrorString(err) + ")");
}

// 0: unknown, 1: Hopper (sm_90), 2: other. Cached per device: the query costs microseconds and
// decode() runs once per layer.
Status require_hopper() {
  static std::array<std::atomic<int>, 64> cache{};
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error for the caller
    return Status(StatusCode::kNoDevice,
                  std::string("libmla needs an NVIDIA Hopper GPU (sm_90); no CUDA device: ") +
                      cudaGetErrorString(err));
  }
  int known = device < 64 ? cache[device].load(std::memory_order_relaxed) : 0;
  int major = 0, minor = 0;
  if (known == 0) {
    if ((err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device)) != cudaSuccess ||
        (err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device)) != cudaSuccess)
      return cuda_status(err, "cudaDeviceGetAttribute");
    known = (major == 9 && minor == 0) ? 1 : 2;
    if (device < 64) cache[device].store(known, std::memory_order_relaxed);
  }
  if (known != 1) {
    if (major == 0) {
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    }
    return Status(StatusCode::kNoDevice, "libmla needs an NVIDIA Hopper GPU (sm_90); device " +
                                             std::to_string(device) + " is sm_" +
                                             std::to_string(major) + std::to_string(minor));
  }
  return Status::Ok();
}

}  // namespace

Status decode(const DecodeArgs& args, const DecodePlan& plan, void* schedule_buffer,
              void* workspace, cudaStream_t stream) {
  Status status = check(args);
  if (!status.ok()) return status;

  const DecodePlan expected = plan_decode(args, plan.num_sms);
  if (plan.num_sms <= 0 || plan.num_sm_parts != expected.num_sm_parts ||
      plan.num_m_blocks != expected.num_m_blocks ||
      plan.rows_per_kv_head != expected.rows_per_kv_head ||
      plan.workspace_bytes < expected.workspace_bytes) {
    return Status(StatusCode::kInvalidArgument,
                  "plan does not match args: expected plan_decode(args, num_sms=" +
                      std::to_string(plan.num_sms) + ") with num_sm_parts=" +
                      std::to_string(expected.num_sm_parts) + ", got num_sm_parts=" +
                      std::to_string(plan.num_sm_parts));
  }
  if (schedule_buffer == nullptr)
    return Status(StatusCode::kInvalidArgument,
                  "schedule_buffer is null: expected the buffer written by mla::schedule()");
  if (reinterpret_cast<uintptr_t>(schedule_buffer) % 16 != 0)
    return Status(StatusCode::kInvalidArgument, "schedule_buffer must be 16-byte aligned");
  if (workspace == nullptr)
    return Status(StatusCode::kInvalidArgument,
                  "workspace is null: expected plan.workspace_bytes=" +
                      std::to_string(plan.workspace_bytes) + " bytes of device memory");
  if (reinterpret_cast<uintptr_t>(workspace) % 16 != 0)
    return Status(StatusCode::kInvalidArgument, "workspace must be 16-byte aligned");

  status = require_hopper();
  if (!status.ok()) return status;

  const detail::WorkspaceView partials = detail::workspace_view(workspace, plan, args);
  const auto* parts = detail::schedule_parts(schedule_buffer);
  const int32_t* split_offsets = detail::schedule_split_offsets(schedule_buffer, plan.num_sm_parts);
  const int heads_per_kv = args.num_heads_q / args.num_heads_kv;

  sm90::decode_dense::Params params{};
  params.batch = args.batch;
  params.seqlen_q = args.seqlen_q;
  params.num_heads_q = args.num_heads_q;
  params.num_heads_kv = args.num_heads_kv;
  params.heads_per_kv = heads_per_kv;
  params.rows_per_kv_head = args.seqlen_q * heads_per_kv;
  params.q = args.q;
  params.q_batch_stride = args.q_batch_stride;
  params.q_seq_stride = args.q_seq_stride;
  params.q_head_stride = args.q_head_stride;
  params.block_table = args.block_table;
  params.block_table_batch_stride = args.block_table_batch_stride;
  params.cache_seqlens = args.cache_seqlens;
  params.out = args.out;
  params.out_batch_stride = args.out_batch_stride;
  params.out_seq_stride = args.out_seq_stride;
  params.out_head_stride = args.out_head_stride;
  params.lse = args.lse;
  params.o_partial = partials.o_partial;
  params.lse_partial = partials.lse_partial;
  params.parts = parts;
  params.split_offsets = split_offsets;
  // The dense kernel merges two-piece requests itself (sched/metadata.h); decode_narrow leaves
  // them to combine.
  const bool merge_two_piece = !sm90::decode_dense::runs_narrow_kernel(params.rows_per_kv_head);
  params.merge_flags = merge_two_piece ? detail::schedule_merge_flags(schedule_buffer, args.batch,
                                                                      plan.num_sm_parts)
                                       : nullptr;
  params.scale_log2 = effective_softmax_scale(args) * static_cast<float>(M_LOG2E);
  params.causal = args.causal && args.seqlen_q > 1;

  const sm90::decode_dense::KvLayout kv{
      .base = args.kv_cache,
      .num_pages = args.num_pages,
      .page_size = args.page_size,
      .num_heads_kv = args.num_heads_kv,
      .page_stride = args.kv_page_stride,
      .token_stride = args.kv_token_stride,
      .head_stride = args.kv_head_stride,
      .is_fp16 = args.dtype == DType::kFP16,
  };
  const sm90::decode_dense::LaunchShape shape{.num_m_blocks = plan.num_m_blocks,
                                              .num_sm_parts = plan.num_sm_parts};
  std::string launch_error;
  cudaError_t err = sm90::decode_dense::launch(params, kv, shape, stream, &launch_error);
  if (err != cudaSuccess) {
    if (!launch_error.empty()) return Status(StatusCode::kUnsupported, launch_error);
    return cuda_status(err, "decode kernel launch");
  }

  detail::CombineParams combine{};
  combine.batch = args.batch;
  combine.seqlen_q = args.seqlen_q;
  combine.num_heads_q = args.num_heads_q;
  combine.head_dim_v = args.head_dim_v;
  combine.split_offsets = split_offsets;
  combine.o_partial = partials.o_partial;
  combine.lse_partial = partials.lse_partial;
  combine.out = args.out;
  combine.out_batch_stride = args.out_batch_stride;
  combine.out_seq_stride = args.out_seq_stride;
  combine.out_head_stride = args.out_head_stride;
  combine.lse = args.lse;
  combine.out_is_fp16 = args.dtype == DType::kFP16;
  combine.num_sm_parts = plan.num_sm_parts;
  combine.num_sms = plan.num_sms;
  combine.two_piece_merged = merge_two_piece;
  err = detail::launch_combine(combine, stream, /*programmatic_dependent_launch=*/true);
  if (err != cudaSuccess) return cuda_status(err, "combine kernel launch");
  return Status::Ok();
}

}  // namespace mla
