// Diagnostic, not part of the build: the decode kernels' timeline, per warpgroup.
//
// This unit compiles the bf16 kernels (decode_dense and decode_narrow) with MLA_DECODE_TRACE
// (device_ops.cuh), so lane 0 of each warp logs (event, clock64) at the steps of the schedule.
// Linked before libmla.a, its launch_kernel<bf16> instances replace the library's. For each shape it runs mla::decode a few times on
// random data with random page order (L2 flushed before the traced run), then prints, over all
// CTAs, the mean clocks between consecutive events of each warpgroup, each step's share, and how
// far the four warps of a warpgroup drift apart; and a timeline across CTAs: when each event
// first and last happened in each CTA (warp 0's %globaltimer, ns from the first CTA's start).
// Built and run by `scripts/gpu_check.sh trace`:
//   nvcc -std=c++20 -O3 -DMLA_DECODE_TRACE -I include -I src -isystem .deps/cutlass/include \
//     -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr \
//     tools/probe/trace_probe.cu build/libmla.a build/libmla_reference.a -lcuda -o trace_probe
#ifndef MLA_DECODE_TRACE
#define MLA_DECODE_TRACE 1
#endif
#include "sm90/decode_dense/instantiations/launch_kernel.cuh"
#include "sm90/decode_narrow/instantiations/launch_kernel.cuh"

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "mla/decode.h"
#include "probe_problem.h"

namespace mla::sm90::decode_dense {
template cudaError_t launch_kernel<__nv_bfloat16>(const Params&, const CUtensorMap&,
                                                  const CUtensorMap&, dim3, cudaStream_t);
}

namespace mla::sm90::decode_narrow {
template cudaError_t launch_kernel<__nv_bfloat16>(const decode_dense::Params&, const CUtensorMap&,
                                                  const CUtensorMap&, dim3, cudaStream_t);
}

namespace dd = mla::sm90::decode_dense;

#define CK(x)                                                                         \
  do {                                                                                \
    cudaError_t e = (x);                                                              \
    if (e != cudaSuccess) {                                                           \
      std::printf("%s: %s\n", #x, cudaGetErrorString(e));                             \
      return 1;                                                                       \
    }                                                                                 \
  } while (0)

static std::string event_name(int id) {
  switch (id) {
    case dd::kEvKernelStart: return "kernel start";
    case dd::kEvRequestStart: return "request start (Q ready)";
    case dd::kEvFirstS: return "first S done";
    case dd::kEvA_SoftmaxDone: return "WG0 softmax A done";
    case dd::kEvA_ScaleA: return "WG0 passed ScaleA";
    case dd::kEvA_PvAL: return "WG0 P_A V_L done";
    case dd::kEvA_ScaleB: return "WG0 passed ScaleB";
    case dd::kEvA_PvBLIssued: return "WG0 P_B V_L issued";
    case dd::kEvA_PvBLDone: return "WG0 P_B V_L done";
    case dd::kEvA_NextS: return "WG0 next S_A done";
    case dd::kEvB_ScaleA: return "WG1 passed ScaleA";
    case dd::kEvB_PvARIssued: return "WG1 P_A V_R issued";
    case dd::kEvB_SoftmaxDone: return "WG1 softmax B done";
    case dd::kEvB_ScaleB: return "WG1 passed ScaleB";
    case dd::kEvB_PvARDone: return "WG1 P_A V_R done";
    case dd::kEvB_PvBR: return "WG1 P_B V_R done";
    case dd::kEvB_NextS: return "WG1 next S_B done";
    case dd::kEvA_PvBLReady: return "WG0 P_B V_L ready to issue";
    case dd::kEvB_PvARReady: return "WG1 P_A V_R ready to issue";
    case dd::kEvSegmentArrive: return "segment end arrive";
    case dd::kEvSegmentEnd: return "segment end passed";
    case dd::kEvEpilogueDone: return "epilogue stored";
    case dd::kEvN_SDone: return "S^T done";
    case dd::kEvN_MaxExchanged: return "column max exchanged";
    case dd::kEvN_PReady: return "P ready";
    case dd::kEvN_ODone: return "O^T done";
    case dd::kEvN_ProducerStart: return "producer start";
    case dd::kEvN_ProducerFirstIssue: return "producer first KV issued";
    case dd::kEvN_ProducerDone: return "producer done";
    case dd::kEvN_SumsReduced: return "row sums reduced";
    case dd::kEvN_LseStored: return "lse stored";
    default:
      if (id >= dd::kEvTileWaited && id < dd::kEvTileWaited + 9)
        return "tile " + std::to_string(id - dd::kEvTileWaited) + " waited";
      return "event " + std::to_string(id);
  }
}

static int run(const char* name, int b, int s_k, int h_q, int s_q) {
  ProbeProblem problem;
  if (!problem.init(b, s_k, h_q, s_q, ProbeProblem::Data::kNormal, /*one_page=*/false)) return 1;
  const mla::DecodePlan& plan = problem.plan;
  void* flush = nullptr;
  if (!problem.alloc(&flush, 256 << 20)) return 1;

  const int ctas = plan.num_m_blocks * problem.args.num_heads_kv * plan.num_sm_parts;
  const size_t trace_elems = size_t(ctas) * dd::kTraceWarps * dd::kTraceEvents;
  uint64_t* trace = nullptr;
  if (!problem.alloc(reinterpret_cast<void**>(&trace), trace_elems * 8)) return 1;
  const size_t global_elems = size_t(ctas) * dd::kTraceEventIds * 2;
  uint64_t* global = nullptr;
  if (!problem.alloc(reinterpret_cast<void**>(&global), global_elems * 8)) return 1;
  uint64_t* null_trace = nullptr;
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0); cudaEventCreate(&e1);
  float untraced_ms = 0, traced_ms = 0;
  for (int it = 0; it < 6; ++it) {
    const bool traced = it == 5;
    CK(cudaMemcpyToSymbol(dd::decode_trace_buffer, traced ? &trace : &null_trace, sizeof(trace)));
    CK(cudaMemcpyToSymbol(dd::decode_trace_global, traced ? &global : &null_trace, sizeof(global)));
    if (traced) CK(cudaMemset(trace, 0xff, trace_elems * 8));
    if (traced) CK(cudaMemset(global, 0xff, global_elems * 8));
    CK(cudaMemset(flush, it, 256 << 20));
    cudaEventRecord(e0);
    const mla::Status st = problem.decode();
    cudaEventRecord(e1);
    if (!st.ok()) { std::printf("%s\n", st.to_string().c_str()); return 1; }
    CK(cudaEventSynchronize(e1));
    float t; cudaEventElapsedTime(&t, e0, e1);
    (traced ? traced_ms : untraced_ms) = t;
  }
  std::vector<uint64_t> h(trace_elems);
  CK(cudaMemcpy(h.data(), trace, trace_elems * 8, cudaMemcpyDeviceToHost));

  std::printf("\n== %s: b=%d s_k=%d h_q=%d s_q=%d, %d CTAs (%d m-blocks x %d parts); decode %.1f us "
              "(traced run %.1f us)\n",
              name, b, s_k, h_q, s_q, ctas, plan.num_m_blocks, plan.num_sm_parts,
              untraced_ms * 1e3, traced_ms * 1e3);
  // Timeline across CTAs (warp 0's %globaltimer): when each event first and last happened,
  // relative to the earliest CTA start, over the CTAs that logged it.
  {
    std::vector<uint64_t> g(global_elems);
    CK(cudaMemcpy(g.data(), global, global_elems * 8, cudaMemcpyDeviceToHost));
    uint64_t t0 = ~0ull;
    for (int c = 0; c < ctas; ++c) t0 = std::min(t0, g[(size_t(c) * dd::kTraceEventIds + dd::kEvKernelStart) * 2]);
    if (t0 != ~0ull) {
      std::printf("   timeline (ns from the first CTA start; over CTAs: min / mean / max)\n");
      for (int id = 0; id < dd::kTraceEventIds; ++id) {
        for (int which = 0; which < 2; ++which) {
          double lo = 1e30, hi = 0, sum = 0;
          int n = 0;
          for (int c = 0; c < ctas; ++c) {
            const uint64_t v = g[(size_t(c) * dd::kTraceEventIds + id) * 2 + which];
            if (v == ~0ull) continue;
            const double d = double(v - t0);
            lo = std::min(lo, d); hi = std::max(hi, d); sum += d; ++n;
          }
          if (n == 0) continue;
          std::printf("   %-5s %-32s %4d CTAs %8.0f %8.0f %8.0f\n", which ? "last" : "first",
                      event_name(id).c_str(), n, lo, sum / n, hi);
        }
      }
    }
  }
  const uint64_t mask = (1ull << 56) - 1;
  for (int wg = 0; wg < dd::kTraceWarps / 4; ++wg) {
    struct Acc { double sum = 0; long n = 0; double max = 0; double skew = 0; };
    std::map<std::pair<int, int>, Acc> steps;
    double total = 0, span_max = 0;
    long pairs = 0;
    int busy = 0, busy_ctas_of_wg = 0;
    for (int c = 0; c < ctas; ++c) {
      // The warps of this warpgroup that logged events (decode_narrow's second "warpgroup" is
      // its single producer warp).
      const uint64_t* warp_ev[4];
      int nw = 0;
      int n = dd::kTraceEvents;
      for (int w = 0; w < 4; ++w) {
        const uint64_t* ev = h.data() + (size_t(c) * dd::kTraceWarps + wg * 4 + w) * dd::kTraceEvents;
        int k = 0;
        while (k < dd::kTraceEvents && ev[k] != ~0ull) ++k;
        if (k == 0) continue;
        warp_ev[nw++] = ev;
        n = std::min(n, k);
      }
      if (nw == 0 || n < 2) continue;
      ++busy_ctas_of_wg;
      for (int w = 0; w < nw; ++w) {
        const uint64_t* ev = warp_ev[w];
        ++busy;
        const double span = double((ev[n - 1] & mask) - (ev[0] & mask));
        total += span;
        span_max = std::max(span_max, span);
        for (int k = 1; k < n; ++k) {
          const int from = int(ev[k - 1] >> 56), to = int(ev[k] >> 56);
          const double d = double((ev[k] & mask) - (ev[k - 1] & mask));
          Acc& acc = steps[{from, to}];
          acc.sum += d; acc.n += 1; acc.max = std::max(acc.max, d);
          if (w == 0) {
            // Skew at this event: how far the last warp of the warpgroup lags the first.
            uint64_t lo = ~0ull, hi = 0;
            for (int v = 0; v < nw; ++v) {
              lo = std::min(lo, warp_ev[v][k] & mask);
              hi = std::max(hi, warp_ev[v][k] & mask);
            }
            acc.skew += nw * double(hi - lo);  // weighted like the warps' samples
          }
          // Pairs of blocks (decode_dense) or blocks (decode_narrow).
          if (w == 0 && (to == (wg == 0 ? dd::kEvA_ScaleA : dd::kEvB_ScaleA) || to == dd::kEvN_ODone))
            ++pairs;
        }
      }
    }
    if (busy == 0) continue;
    const int busy_ctas = busy_ctas_of_wg;
    std::printf("-- WG%d: %d CTAs, mean span %.0f clk (max %.0f), %.1f pairs (dense) or blocks "
                "(narrow) per CTA, %.0f clk each\n",
                wg, busy_ctas, total / busy, span_max, double(pairs) / busy_ctas,
                pairs ? total / (double(busy) / busy_ctas) / pairs : 0.0);
    std::vector<std::pair<std::pair<int, int>, Acc>> sorted(steps.begin(), steps.end());
    std::sort(sorted.begin(), sorted.end(),
              [](const auto& x, const auto& y) { return x.second.sum > y.second.sum; });
    std::printf("   %-28s -> %-28s %9s %9s %8s %6s %9s\n", "from", "to", "mean clk", "max", "count",
                "share", "warp skew");
    for (const auto& [key, acc] : sorted) {
      if (acc.sum / total < 0.004) continue;
      std::printf("   %-28s -> %-28s %9.0f %9.0f %8ld %5.1f%% %9.0f\n", event_name(key.first).c_str(),
                  event_name(key.second).c_str(), acc.sum / acc.n, acc.max, acc.n,
                  100.0 * acc.sum / total, acc.skew / acc.n);
    }
  }
  return 0;
}

int main(int argc, char** argv) {
  const std::string only = argc > 1 ? argv[1] : "";
  struct Shape { const char* name; int b, s_k, h_q, s_q; };
  const Shape shapes[] = {{"C", 128, 8192, 128, 1}, {"A", 128, 8192, 16, 1}, {"B", 128, 8192, 64, 1},
                          {"D", 128, 8192, 128, 2}, {"E", 1, 32768, 128, 1}, {"F", 32, 1024, 16, 1},
                          // G and H at their mean length (mla-bench draws theirs at random)
                          {"G", 64, 4096, 128, 1}, {"H", 128, 4096, 16, 4}};
  for (const Shape& s : shapes) {
    if (!only.empty() && only.find(s.name) == std::string::npos) continue;
    if (run(s.name, s.b, s.s_k, s.h_q, s.s_q)) return 1;
  }
  return 0;
}
