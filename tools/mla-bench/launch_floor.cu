// The launch floor: what mla-bench's timing method reports for a decode step that does no work.
// A CUDA graph of two empty kernels shaped like a decode step (one CTA per SM, then a dependent
// kernel launched with programmatic stream serialisation that waits for the first, as combine
// does), replayed exactly like the decode graphs: L2 flush, event, replay, event; median.
#include "ceilings.h"

#include <cuda_runtime.h>

#include <vector>

#include "gpu_util.h"
#include "l2_flush.h"

namespace mla_bench {
namespace {

__global__ void empty_main_kernel() { asm volatile("griddepcontrol.launch_dependents;"); }
__global__ void empty_dependent_kernel() { asm volatile("griddepcontrol.wait;" ::: "memory"); }

}  // namespace

LaunchFloor measure_launch_floor(int num_sms, FlushMode flush_mode, void* flush, size_t flush_bytes,
                                 int reps) {
  cudaStream_t stream = nullptr;
  MLA_BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  struct Cleanup {
    cudaStream_t& s;
    cudaGraph_t& g;
    cudaGraphExec_t& e;
    cudaEvent_t& a;
    cudaEvent_t& b;
    ~Cleanup() {
      if (e) cudaGraphExecDestroy(e);
      if (g) cudaGraphDestroy(g);
      if (a) cudaEventDestroy(a);
      if (b) cudaEventDestroy(b);
      if (s) cudaStreamDestroy(s);
    }
  } cleanup{stream, graph, exec, start, stop};

  MLA_BENCH_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  empty_main_kernel<<<num_sms, 160, 0, stream>>>();
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(num_sms));
  config.blockDim = dim3(128);
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = 1;
  const cudaError_t launched = cudaLaunchKernelEx(&config, empty_dependent_kernel);
  const cudaError_t captured = cudaStreamEndCapture(stream, &graph);
  MLA_BENCH_CUDA(launched);
  MLA_BENCH_CUDA(captured);
  MLA_BENCH_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  MLA_BENCH_CUDA(cudaEventCreate(&start));
  MLA_BENCH_CUDA(cudaEventCreate(&stop));

  std::vector<double> us;
  for (int k = 0; k < reps + 3; ++k) {
    flush_l2(flush_mode, flush, flush_bytes, stream);
    MLA_BENCH_CUDA(cudaEventRecord(start, stream));
    MLA_BENCH_CUDA(cudaGraphLaunch(exec, stream));
    MLA_BENCH_CUDA(cudaEventRecord(stop, stream));
    MLA_BENCH_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    MLA_BENCH_CUDA(cudaEventElapsedTime(&ms, start, stop));
    if (k >= 3) us.push_back(ms * 1e3);  // the first replays warm the graph up
  }
  return LaunchFloor{.us = median(us), .reps = reps};
}

}  // namespace mla_bench
