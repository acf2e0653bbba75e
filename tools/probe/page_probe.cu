// Diagnostic, not part of the build: times mla::decode on case-C-like shapes with the KV pages
// in random order (DRAM-bound loads) and with every block-table entry pointing at one page
// (loads hit L2), to tell load latency from in-kernel compute as the per-block limit.
//   nvcc -std=c++20 -O2 -I include tools/probe/page_probe.cu build/libmla.a -lcuda -o probe
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "mla/decode.h"

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { std::printf("%s: %s\n", #x, cudaGetErrorString(e)); return 1; } } while (0)

int run(int b, int s_k, int h_q, bool one_page) {
  mla::DecodeArgs a;
  a.batch = b; a.seqlen_q = 1; a.num_heads_q = h_q; a.num_heads_kv = 1;
  const int pages_per = s_k / 64;
  a.num_pages = b * pages_per; a.max_pages_per_seq = pages_per;
  mla::set_contiguous_strides(a);
  void *q, *kv, *out; float* lse; int32_t *bt, *lens;
  CK(cudaMalloc(&q, size_t(b) * h_q * 576 * 2));
  CK(cudaMalloc(&kv, size_t(a.num_pages) * 64 * 576 * 2));
  CK(cudaMemset(kv, 0x3c, size_t(a.num_pages) * 64 * 576 * 2));
  CK(cudaMemset(q, 0x3c, size_t(b) * h_q * 576 * 2));
  CK(cudaMalloc(&out, size_t(b) * h_q * 512 * 2));
  CK(cudaMalloc(&lse, size_t(b) * h_q * 4));
  CK(cudaMalloc(&bt, size_t(a.num_pages) * 4));
  CK(cudaMalloc(&lens, size_t(b) * 4));
  std::vector<int32_t> table(a.num_pages), l(b, s_k);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937(1));
  if (one_page) std::fill(table.begin(), table.end(), 0);
  CK(cudaMemcpy(bt, table.data(), table.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(lens, l.data(), l.size() * 4, cudaMemcpyHostToDevice));
  a.q = q; a.kv_cache = kv; a.out = out; a.lse = lse; a.block_table = bt; a.cache_seqlens = lens;
  const auto plan = mla::plan_decode(a, mla::device_num_sms(0));
  void *sched, *ws;
  CK(cudaMalloc(&sched, plan.schedule_bytes));
  CK(cudaMalloc(&ws, plan.workspace_bytes));
  if (!mla::schedule(a, plan, sched, nullptr).ok()) return 1;
  cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
  std::vector<float> ms;
  for (int it = 0; it < 30; ++it) {
    cudaEventRecord(e0);
    mla::Status st = mla::decode(a, plan, sched, ws, nullptr);
    cudaEventRecord(e1);
    if (!st.ok()) { std::printf("%s\n", st.to_string().c_str()); return 1; }
    CK(cudaEventSynchronize(e1));
    float t; cudaEventElapsedTime(&t, e0, e1); ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  std::printf("b=%d s_k=%d h_q=%d %s: %.1f us\n", b, s_k, h_q, one_page ? "one page (L2)" : "random pages", ms[ms.size() / 2] * 1000);
  cudaFree(q); cudaFree(kv); cudaFree(out); cudaFree(lse); cudaFree(bt); cudaFree(lens); cudaFree(sched); cudaFree(ws);
  return 0;
}

int main() {
  for (int h : {16, 64, 128})
    for (bool one : {false, true}) run(128, 8192, h, one);
  return 0;
}
