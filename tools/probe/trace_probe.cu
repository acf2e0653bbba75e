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
#if !defined(MLA_DECODE_TRACE) && !defined(MLA_DECODE_TRACE_LIGHT)
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
#include "sched/metadata.h"

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

// Light mode (built with MLA_DECODE_TRACE_LIGHT: `TRACE_LIGHT=1 scripts/gpu_check.sh trace`):
// thread 0 of each CTA stamps only its start (and SM) and its epilogues' end, so the traced runs
// take about as long as untraced ones. Prints, per CTA over several runs, when its last epilogue
// ended, with its part's pieces and blocks and its SM in each run, then per SM: whether the
// spread of CTA end times follows the schedule, the SM, or neither.
static int run_light(const char* name, int b, int s_k, int h_q, int s_q) {
  ProbeProblem problem;
  if (!problem.init(b, s_k, h_q, s_q, ProbeProblem::Data::kNormal, /*one_page=*/false)) return 1;
  const mla::DecodePlan& plan = problem.plan;
  void* flush = nullptr;
  if (!problem.alloc(&flush, 256 << 20)) return 1;
  const int ctas = plan.num_m_blocks * problem.args.num_heads_kv * plan.num_sm_parts;
  const size_t global_elems = size_t(ctas) * dd::kTraceEventIds * 2;
  uint64_t* global = nullptr;
  if (!problem.alloc(reinterpret_cast<void**>(&global), global_elems * 8)) return 1;
  uint64_t* null_trace = nullptr;
  CK(cudaMemcpyToSymbol(dd::decode_trace_buffer, &null_trace, sizeof(null_trace)));
  std::vector<mla::detail::PartMetadata> parts(plan.num_sm_parts);
  CK(cudaMemcpy(parts.data(), problem.schedule_buffer, parts.size() * sizeof(parts[0]),
                cudaMemcpyDeviceToHost));
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0); cudaEventCreate(&e1);
  constexpr int kRuns = 10, kWarmups = 100;  // warm-ups: the clocks ramp up first
  std::vector<std::vector<double>> end_ns(kRuns, std::vector<double>(ctas, -1));
  std::vector<std::vector<int>> smid(kRuns, std::vector<int>(ctas, -1));
  std::printf("\n== %s (light trace): b=%d s_k=%d h_q=%d s_q=%d, %d CTAs (%d m-blocks x %d parts)\n",
              name, b, s_k, h_q, s_q, ctas, plan.num_m_blocks, plan.num_sm_parts);
  for (int it = 0; it < kWarmups + kRuns; ++it) {
    const int run = it - kWarmups;
    const bool traced = run >= 0;
    CK(cudaMemcpyToSymbol(dd::decode_trace_global, traced ? &global : &null_trace, sizeof(global)));
    if (traced) CK(cudaMemset(global, 0xff, global_elems * 8));
    CK(cudaMemset(flush, it, 256 << 20));
    cudaEventRecord(e0);
    const mla::Status st = problem.decode();
    cudaEventRecord(e1);
    if (!st.ok()) { std::printf("%s\n", st.to_string().c_str()); return 1; }
    CK(cudaEventSynchronize(e1));
    float ms; cudaEventElapsedTime(&ms, e0, e1);
    if (!traced) {
      if (it >= kWarmups - 3) std::printf("   untraced step %.1f us\n", ms * 1e3);
      continue;
    }
    std::vector<uint64_t> g(global_elems);
    CK(cudaMemcpy(g.data(), global, global_elems * 8, cudaMemcpyDeviceToHost));
    auto at = [&](int c, int id, int which) { return g[(size_t(c) * dd::kTraceEventIds + id) * 2 + which]; };
    uint64_t t0 = ~0ull;
    for (int c = 0; c < ctas; ++c) t0 = std::min(t0, at(c, dd::kEvKernelStart, 0));
    double start_max = 0, end_min = 1e30, end_sum = 0, end_max = 0;
    int n = 0;
    for (int c = 0; c < ctas; ++c) {
      if (at(c, dd::kEvKernelStart, 0) == ~0ull) continue;
      smid[run][c] = int(at(c, dd::kTraceEventIds - 1, 0));
      start_max = std::max(start_max, double(at(c, dd::kEvKernelStart, 0) - t0));
      const uint64_t e = at(c, dd::kEvEpilogueDone, 1);
      if (e == ~0ull) continue;
      const double d = double(e - t0);
      end_ns[run][c] = d;
      end_min = std::min(end_min, d); end_max = std::max(end_max, d); end_sum += d; ++n;
    }
    std::printf("   light-traced step %.1f us: CTA starts within %.1f us; last epilogue ends min / mean / "
                "max %.1f / %.1f / %.1f us after the first start\n",
                ms * 1e3, start_max * 1e-3, end_min * 1e-3, end_sum / n * 1e-3, end_max * 1e-3);
  }
  // Per CTA: part, m-block, SM, pieces, blocks, end time per run (us), and its rank.
  std::printf("   cta part m sm pieces blocks | last epilogue end per run (us) | mean\n");
  std::vector<std::pair<double, int>> order;
  for (int c = 0; c < ctas; ++c) {
    double sum = 0; int k = 0;
    for (int r = 0; r < kRuns; ++r) if (end_ns[r][c] >= 0) { sum += end_ns[r][c]; ++k; }
    if (k) order.push_back({sum / k, c});
  }
  std::sort(order.begin(), order.end());
  std::map<int, std::pair<double, int>> by_pieces;
  for (const auto& [mean, c] : order) {
    const int x = c % plan.num_m_blocks;
    // c is the CTA's linear grid index; decode_dense numbers parts from the last grid.z down.
    const int z = plan.num_sm_parts - 1 - c / (plan.num_m_blocks * problem.args.num_heads_kv);
    const mla::detail::PartMetadata& p = parts[z];
    const int pieces = p.end_req - p.begin_req + 1;
    std::printf("   %3d %4d %d %3d %6d %6d |", c, z, x, smid[0][c], pieces, p.num_blocks);
    for (int r = 0; r < kRuns; ++r) std::printf(" %7.1f@%-3d", end_ns[r][c] * 1e-3, smid[r][c]);
    std::printf(" | %7.1f\n", mean * 1e-3);
    by_pieces[pieces].first += mean;
    by_pieces[pieces].second += 1;
  }
  // Per SM over the runs (the CTA -> SM mapping may change between launches): is an SM slow in
  // every run, whichever part it gets?
  {
    std::map<int, std::vector<double>> by_sm;  // end time minus the run's mean end
    for (int r = 0; r < kRuns; ++r) {
      double sum = 0; int k = 0;
      for (int c = 0; c < ctas; ++c) if (end_ns[r][c] >= 0) { sum += end_ns[r][c]; ++k; }
      for (int c = 0; c < ctas; ++c)
        if (end_ns[r][c] >= 0) by_sm[smid[r][c]].push_back((end_ns[r][c] - sum / k) * 1e-3);
    }
    std::printf("   per SM: end minus the run's mean end (us), each run\n");
    for (const auto& [sm, v] : by_sm) {
      double m = 0;
      for (double d : v) m += d;
      std::printf("   sm %3d mean %+6.1f |", sm, m / v.size());
      for (double d : v) std::printf(" %+6.1f", d);
      std::printf("\n");
    }
  }
  for (const auto& [pieces, acc] : by_pieces)
    std::printf("   parts of %d pieces: %d CTAs, mean end %.1f us\n", pieces, acc.second,
                acc.first / acc.second * 1e-3);
  return 0;
}

int main(int argc, char** argv) {
  const std::string only = argc > 1 ? argv[1] : "";
#ifdef MLA_DECODE_TRACE_LIGHT
  const bool light = true;  // built with the light Trace (gpu_check.sh trace, TRACE_LIGHT=1)
#else
  const bool light = false;
#endif
  struct Shape { const char* name; int b, s_k, h_q, s_q; };
  const Shape shapes[] = {{"C", 128, 8192, 128, 1}, {"A", 128, 8192, 16, 1}, {"B", 128, 8192, 64, 1},
                          {"D", 128, 8192, 128, 2}, {"E", 1, 32768, 128, 1}, {"F", 32, 1024, 16, 1},
                          // G and H at their mean length (mla-bench draws theirs at random)
                          {"G", 64, 4096, 128, 1}, {"H", 128, 4096, 16, 4}};
  for (const Shape& s : shapes) {
    if (!only.empty() && only.find(s.name) == std::string::npos) continue;
    if (light ? run_light(s.name, s.b, s.s_k, s.h_q, s.s_q) : run(s.name, s.b, s.s_k, s.h_q, s.s_q))
      return 1;
  }
  return 0;
}
