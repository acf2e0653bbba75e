// Shared set-up of the diagnostic probes (page_probe.cu, trace_probe.cu): one bf16 decode problem
// on the GPU with h_kv = 1, contiguous layout, fixed lengths, pages in random physical order (or
// all on one page), scheduled and ready for mla::decode. Not part of the build.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "mla/decode.h"
#include "reference/device_inputs.h"

#define PROBE_CK(x)                                                    \
  do {                                                                 \
    cudaError_t e_ = (x);                                              \
    if (e_ != cudaSuccess) {                                           \
      std::printf("%s: %s\n", #x, cudaGetErrorString(e_));             \
      return false;                                                    \
    }                                                                  \
  } while (0)

struct ProbeProblem {
  enum class Data { kConstant, kNormal };

  mla::DecodeArgs args;
  mla::DecodePlan plan{};
  void* schedule_buffer = nullptr;
  void* workspace = nullptr;
  std::vector<void*> allocations;

  ProbeProblem() = default;
  ProbeProblem(const ProbeProblem&) = delete;
  ProbeProblem& operator=(const ProbeProblem&) = delete;
  ~ProbeProblem() {
    for (void* p : allocations) cudaFree(p);
  }

  // b requests of s_k tokens each (a multiple of 64), s_q query tokens, h_q heads. kConstant
  // fills q and KV with one bf16 value (timing comparisons only), kNormal with N(0, 1).
  // one_page: every block-table entry points at page 0 (all KV loads hit L2). Prints and returns
  // false on failure.
  bool init(int b, int s_k, int h_q, int s_q, Data data, bool one_page) {
    args.batch = b;
    args.seqlen_q = s_q;
    args.num_heads_q = h_q;
    args.num_heads_kv = 1;
    args.causal = s_q > 1;
    const int pages_per_seq = s_k / 64;
    args.num_pages = b * pages_per_seq;
    args.max_pages_per_seq = pages_per_seq;
    mla::set_contiguous_strides(args);
    const size_t q_elems = size_t(b) * s_q * h_q * 576;
    const size_t kv_elems = size_t(args.num_pages) * 64 * 576;
    void *q, *kv, *out, *lse, *block_table, *lengths;
    if (!alloc(&q, q_elems * 2) || !alloc(&kv, kv_elems * 2) ||
        !alloc(&out, size_t(b) * s_q * h_q * 512 * 2) || !alloc(&lse, size_t(b) * s_q * h_q * 4) ||
        !alloc(&block_table, size_t(args.num_pages) * 4) || !alloc(&lengths, size_t(b) * 4)) {
      return false;
    }
    if (data == Data::kConstant) {
      PROBE_CK(cudaMemset(q, 0x3c, q_elems * 2));
      PROBE_CK(cudaMemset(kv, 0x3c, kv_elems * 2));
    } else {
      PROBE_CK(mla::reference::fill_normal(q, q_elems, mla::DType::kBF16, 1, 1.0f, nullptr));
      PROBE_CK(mla::reference::fill_normal(kv, kv_elems, mla::DType::kBF16, 2, 1.0f, nullptr));
    }
    std::vector<int32_t> table(args.num_pages), lens(b, s_k);
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), std::mt19937(1));
    if (one_page) std::fill(table.begin(), table.end(), 0);
    PROBE_CK(cudaMemcpy(block_table, table.data(), table.size() * 4, cudaMemcpyHostToDevice));
    PROBE_CK(cudaMemcpy(lengths, lens.data(), lens.size() * 4, cudaMemcpyHostToDevice));
    args.q = q;
    args.kv_cache = kv;
    args.out = out;
    args.lse = static_cast<float*>(lse);
    args.block_table = static_cast<const int32_t*>(block_table);
    args.cache_seqlens = static_cast<const int32_t*>(lengths);
    plan = mla::plan_decode(args, mla::device_num_sms(0));
    if (!alloc(&schedule_buffer, plan.schedule_bytes) || !alloc(&workspace, plan.workspace_bytes))
      return false;
    const mla::Status st = mla::schedule(args, plan, schedule_buffer, nullptr);
    if (!st.ok()) {
      std::printf("mla::schedule: %s\n", st.to_string().c_str());
      return false;
    }
    return true;
  }

  // One decode step on the default stream (asynchronous).
  mla::Status decode() const { return mla::decode(args, plan, schedule_buffer, workspace, nullptr); }

  bool alloc(void** p, size_t bytes) {
    PROBE_CK(cudaMalloc(p, bytes));
    allocations.push_back(*p);
    return true;
  }
};
