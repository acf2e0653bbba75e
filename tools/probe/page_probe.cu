// Diagnostic, not part of the build: times mla::decode on case-C-like shapes with the KV pages
// in random order (DRAM-bound loads) and with every block-table entry pointing at one page
// (loads hit L2), to tell load latency from in-kernel compute as the per-block limit.
//   nvcc -std=c++20 -O2 -I include -I src tools/probe/page_probe.cu build/libmla.a \
//     build/libmla_reference.a -lcuda -o probe
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "probe_problem.h"

int run(int b, int s_k, int h_q, bool one_page) {
  ProbeProblem problem;
  if (!problem.init(b, s_k, h_q, /*s_q=*/1, ProbeProblem::Data::kConstant, one_page)) return 1;
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<float> ms;
  for (int it = 0; it < 30; ++it) {
    cudaEventRecord(e0);
    const mla::Status st = problem.decode();
    cudaEventRecord(e1);
    if (!st.ok()) { std::printf("%s\n", st.to_string().c_str()); return 1; }
    if (cudaEventSynchronize(e1) != cudaSuccess) return 1;
    float t;
    cudaEventElapsedTime(&t, e0, e1);
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  std::printf("b=%d s_k=%d h_q=%d %s: %.1f us\n", b, s_k, h_q,
              one_page ? "one page (L2)" : "random pages", ms[ms.size() / 2] * 1000);
  return 0;
}

int main() {
  for (int h : {16, 64, 128})
    for (bool one : {false, true}) run(128, 8192, h, one);
  return 0;
}
