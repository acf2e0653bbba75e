// mla-bench: verifies libmla's MLA decode against the GPU reference and times it on the GPU at
// hand, next to a copy and a GEMM ceiling measured in the same run (DESIGN.md section 5).
#include <cuda_runtime_api.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cases.h"
#include "ceilings.h"
#include "gpu_util.h"
#include "l2_flush.h"
#include "mla/decode.h"
#include "options.h"
#include "reference/gpu_reference.h"
#include "verify.h"

namespace mla_bench {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitBadOptions = 2;
constexpr int kExitNoHopper = 3;

constexpr size_t kCopyCeilingBytes = size_t{2} << 30;  // 2 GiB read + 2 GiB written
constexpr int kCopyCeilingReps = 10;
constexpr int kGemmCeilingN = 8192;
constexpr int kGemmCeilingReps = 20;
constexpr int kLaunchFloorReps = 200;
constexpr int kWarmupReplays = 3;

struct GpuInfo {
  int device = 0;
  std::string name;
  int sm_count = 0;
  int cc_major = 0, cc_minor = 0;
  size_t l2_bytes = 0;
  size_t global_mem = 0;
  int runtime_version = 0, driver_version = 0;
};

enum class VerifyStatus { kPass, kFail, kSkipped, kNotRun };

struct CaseResult {
  CaseSpec spec;
  bool causal = false;
  int64_t sum_len = 0;
  double flops = 0, bytes = 0;
  std::optional<double> time_us, time_us_min, time_us_max;
  double tflops = 0, gb_per_s = 0;
  VerifyStatus verify = VerifyStatus::kNotRun;
  VerifyResult check;             // worse of the eager call and the graph replays
  std::string error;              // non-empty: the case could not run to the end
};

// Progress on stderr: rewritten in place on a terminal, one line per step otherwise.
class Progress {
 public:
  Progress() : tty_(isatty(fileno(stderr)) != 0) {}
  void show(const std::string& line) {
    if (tty_) {
      std::fprintf(stderr, "\r\033[K%s", line.c_str());
    } else {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
    std::fflush(stderr);
  }
  void clear() {
    if (tty_) std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
  }

 private:
  bool tty_;
};

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

// Returns an error line when there is no usable Hopper GPU.
std::optional<std::string> find_hopper(GpuInfo* info) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    std::string found = e != cudaSuccess ? std::string("no usable CUDA device or driver (") +
                                               cudaGetErrorName(e) + ": " +
                                               cudaGetErrorString(e) + ")"
                                         : std::string("no CUDA device");
    return "mla-bench: needs an NVIDIA Hopper GPU (sm_90); found: " + found;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, info->device) != cudaSuccess)
    return "mla-bench: needs an NVIDIA Hopper GPU (sm_90); found: a device whose properties "
           "cannot be read";
  if (!(prop.major == 9 && prop.minor == 0)) {
    return "mla-bench: needs an NVIDIA Hopper GPU (sm_90); found: " + std::string(prop.name) +
           " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ")";
  }
  info->name = prop.name;
  info->sm_count = prop.multiProcessorCount;
  info->cc_major = prop.major;
  info->cc_minor = prop.minor;
  info->l2_bytes = static_cast<size_t>(prop.l2CacheSize);
  info->global_mem = prop.totalGlobalMem;
  cudaRuntimeGetVersion(&info->runtime_version);
  cudaDriverGetVersion(&info->driver_version);
  return std::nullopt;
}

// Everything one case needs on the device, owned together.
struct CaseBuffers {
  DeviceBuffer q, kv, block_table, seqlens, valid_tokens, out, lse, schedule, workspace;
  DeviceBuffer out_ref, lse_ref, out_f;
};

VerifyResult verify_against(const CaseBuffers& buf, size_t n_out, size_t n_lse, ElemType et,
                            Tolerance tol, cudaStream_t stream) {
  to_float(buf.out.get(), n_out, et, buf.out_f.as<float>(), stream);
  std::vector<float> out(n_out), out_ref(n_out), lse(n_lse), lse_ref(n_lse);
  MLA_BENCH_CUDA(cudaMemcpyAsync(out.data(), buf.out_f.get(), n_out * 4, cudaMemcpyDeviceToHost, stream));
  MLA_BENCH_CUDA(cudaMemcpyAsync(out_ref.data(), buf.out_ref.get(), n_out * 4, cudaMemcpyDeviceToHost, stream));
  MLA_BENCH_CUDA(cudaMemcpyAsync(lse.data(), buf.lse.get(), n_lse * 4, cudaMemcpyDeviceToHost, stream));
  MLA_BENCH_CUDA(cudaMemcpyAsync(lse_ref.data(), buf.lse_ref.get(), n_lse * 4, cudaMemcpyDeviceToHost, stream));
  MLA_BENCH_CUDA(cudaStreamSynchronize(stream));
  return compare_outputs(out.data(), out_ref.data(), n_out, lse.data(), lse_ref.data(), n_lse, tol);
}

// Fills out and lse with NaN so that any position a kernel forgets to write fails verification.
void poison_outputs(const CaseBuffers& buf, cudaStream_t stream) {
  MLA_BENCH_CUDA(cudaMemsetAsync(buf.out.get(), 0xFF, buf.out.bytes(), stream));
  MLA_BENCH_CUDA(cudaMemsetAsync(buf.lse.get(), 0xFF, buf.lse.bytes(), stream));
}

void run_case(const Options& opt, const GpuInfo& gpu, const DeviceBuffer& flush_buffer,
              cudaStream_t stream, uint64_t data_seed, const std::string& tag, Progress& progress,
              CaseResult& res) {
  const CaseSpec& c = res.spec;
  const bool bf16 = opt.dtype == BenchDType::kBF16;
  const ElemType et = bf16 ? ElemType::kBF16 : ElemType::kFP16;
  const mla::DType dt = bf16 ? mla::DType::kBF16 : mla::DType::kFP16;
  const int elem = 2;

  progress.show(tag + ": building inputs");
  const std::vector<int32_t> lengths = case_lengths(c);
  const PageLayout pages = make_page_layout(lengths, kBenchPageSize, data_seed ^ 0xB10Cull);
  for (int32_t l : lengths) res.sum_len += l;
  res.flops = case_flops(c.seqlen_q, res.sum_len, c.heads_q);
  res.bytes = case_bytes(c.batch, c.seqlen_q, res.sum_len, c.heads_q, c.heads_kv, elem);

  mla::DecodeArgs args;
  args.dtype = dt;
  args.kv_dtype = dt;
  args.batch = c.batch;
  args.seqlen_q = c.seqlen_q;
  args.num_heads_q = c.heads_q;
  args.num_heads_kv = c.heads_kv;
  args.page_size = kBenchPageSize;
  args.num_pages = static_cast<int>(pages.num_pages);
  args.max_pages_per_seq = pages.max_pages_per_seq;
  args.causal = opt.causal;
  mla::set_contiguous_strides(args);

  const size_t n_q = static_cast<size_t>(c.batch) * c.seqlen_q * c.heads_q * mla::kHeadDimQK;
  const size_t n_kv = static_cast<size_t>(pages.num_pages) * kBenchPageSize * c.heads_kv *
                      mla::kHeadDimQK;
  const size_t n_out = static_cast<size_t>(c.batch) * c.seqlen_q * c.heads_q * mla::kHeadDimV;
  const size_t n_lse = static_cast<size_t>(c.batch) * c.heads_q * c.seqlen_q;

  CaseBuffers buf;
  buf.q = DeviceBuffer(n_q * elem, "q");
  buf.kv = DeviceBuffer(n_kv * elem, "kv_cache");
  buf.block_table = DeviceBuffer(pages.block_table.size() * 4, "block_table");
  buf.seqlens = DeviceBuffer(lengths.size() * 4, "cache_seqlens");
  buf.valid_tokens = DeviceBuffer(pages.valid_tokens.size() * 4, "page fill counts");
  buf.out = DeviceBuffer(n_out * elem, "out");
  buf.lse = DeviceBuffer(n_lse * 4, "lse");

  MLA_BENCH_CUDA(cudaMemcpyAsync(buf.block_table.get(), pages.block_table.data(),
                                 buf.block_table.bytes(), cudaMemcpyHostToDevice, stream));
  MLA_BENCH_CUDA(cudaMemcpyAsync(buf.seqlens.get(), lengths.data(), buf.seqlens.bytes(),
                                 cudaMemcpyHostToDevice, stream));
  MLA_BENCH_CUDA(cudaMemcpyAsync(buf.valid_tokens.get(), pages.valid_tokens.data(),
                                 buf.valid_tokens.bytes(), cudaMemcpyHostToDevice, stream));
  // N(0, 1) q and k make the scaled scores (d_qk^-0.5 * q.k) roughly N(0, 1): a softmax that is
  // neither flat nor one-hot.
  fill_normal(buf.q.get(), n_q, et, data_seed ^ 0x51ull, 1.0f, stream);
  fill_normal(buf.kv.get(), n_kv, et, data_seed ^ 0x4Bull, 1.0f, stream);
  poison_kv(buf.kv.get(), pages.num_pages, kBenchPageSize,
            static_cast<int64_t>(c.heads_kv) * mla::kHeadDimQK, buf.valid_tokens.as<int32_t>(),
            et, stream);

  args.q = buf.q.get();
  args.kv_cache = buf.kv.get();
  args.block_table = buf.block_table.as<int32_t>();
  args.cache_seqlens = buf.seqlens.as<int32_t>();
  args.host_cache_seqlens = lengths.data();
  args.out = buf.out.get();
  args.lse = buf.lse.as<float>();

  if (mla::Status st = mla::check(args); !st.ok()) {
    res.error = "mla::check: " + st.to_string();
    return;
  }
  const mla::DecodePlan plan = mla::plan_decode(args, gpu.sm_count);
  buf.schedule = DeviceBuffer(plan.schedule_bytes, "schedule buffer");
  buf.workspace = DeviceBuffer(plan.workspace_bytes, "workspace");

  // The metadata is made once per step and reused by every layer: outside the timed region.
  progress.show(tag + ": schedule + decode");
  poison_outputs(buf, stream);
  if (mla::Status st = mla::schedule(args, plan, buf.schedule.get(), stream); !st.ok()) {
    res.error = "mla::schedule: " + st.to_string();
    return;
  }
  if (mla::Status st = mla::decode(args, plan, buf.schedule.get(), buf.workspace.get(), stream);
      !st.ok()) {
    res.error = "mla::decode: " + st.to_string();
    return;
  }
  MLA_BENCH_CUDA(cudaStreamSynchronize(stream));

  const Tolerance tol = tolerance_for(bf16);
  if (opt.verify) {
    progress.show(tag + ": GPU reference + verify");
    buf.out_ref = DeviceBuffer(n_out * 4, "reference out");
    buf.lse_ref = DeviceBuffer(n_lse * 4, "reference lse");
    buf.out_f = DeviceBuffer(n_out * 4, "out as float");
    if (mla::Status st = mla::reference::reference_decode_gpu(args, buf.out_ref.as<float>(),
                                                              buf.lse_ref.as<float>(), stream);
        !st.ok()) {
      res.error = "reference: " + st.to_string();
      return;
    }
    res.check = verify_against(buf, n_out, n_lse, et, tol, stream);
    res.verify = res.check.pass ? VerifyStatus::kPass : VerifyStatus::kFail;
  } else {
    res.verify = VerifyStatus::kSkipped;
  }

  progress.show(tag + ": capturing graph");
  cudaGraph_t graph = nullptr;
  MLA_BENCH_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  const mla::Status cap = mla::decode(args, plan, buf.schedule.get(), buf.workspace.get(), stream);
  const cudaError_t end = cudaStreamEndCapture(stream, &graph);
  if (!cap.ok()) {
    if (graph) cudaGraphDestroy(graph);
    res.error = "mla::decode under graph capture: " + cap.to_string();
    return;
  }
  if (end != cudaSuccess) {
    res.error = std::string("mla::decode is not graph-capturable: ") + cudaGetErrorString(end);
    return;
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  MLA_BENCH_CUDA(inst);
  struct ExecGuard {
    cudaGraphExec_t e;
    ~ExecGuard() { cudaGraphExecDestroy(e); }
  } exec_guard{exec};

  progress.show(tag + ": timing " + std::to_string(opt.iters) + " graph replays");
  poison_outputs(buf, stream);
  auto flush = [&] { flush_l2(opt.flush, flush_buffer.get(), flush_buffer.bytes(), stream); };
  for (int k = 0; k < kWarmupReplays; ++k) {
    flush();
    MLA_BENCH_CUDA(cudaGraphLaunch(exec, stream));
  }
  // All replays are queued before waiting, so the GPU never idles between a start event and its
  // replay waiting for the host: the flush ahead of each keeps the queue fed.
  std::vector<cudaEvent_t> starts(opt.iters), stops(opt.iters);
  struct EventsGuard {
    std::vector<cudaEvent_t>& a;
    std::vector<cudaEvent_t>& b;
    ~EventsGuard() {
      for (auto e : a) if (e) cudaEventDestroy(e);
      for (auto e : b) if (e) cudaEventDestroy(e);
    }
  } events_guard{starts, stops};
  for (int k = 0; k < opt.iters; ++k) {
    MLA_BENCH_CUDA(cudaEventCreate(&starts[k]));
    MLA_BENCH_CUDA(cudaEventCreate(&stops[k]));
  }
  for (int k = 0; k < opt.iters; ++k) {
    flush();
    MLA_BENCH_CUDA(cudaEventRecord(starts[k], stream));
    MLA_BENCH_CUDA(cudaGraphLaunch(exec, stream));
    MLA_BENCH_CUDA(cudaEventRecord(stops[k], stream));
  }
  MLA_BENCH_CUDA(cudaStreamSynchronize(stream));
  std::vector<double> us;
  for (int k = 0; k < opt.iters; ++k) {
    float ms = 0;
    MLA_BENCH_CUDA(cudaEventElapsedTime(&ms, starts[k], stops[k]));
    us.push_back(1e3 * ms);
  }
  res.time_us = median(us);
  res.time_us_min = *std::min_element(us.begin(), us.end());
  res.time_us_max = *std::max_element(us.begin(), us.end());
  res.tflops = res.flops / (*res.time_us * 1e-6) / 1e12;
  res.gb_per_s = res.bytes / (*res.time_us * 1e-6) / 1e9;

  if (opt.verify) {
    // What was timed is verified too: the replays' output must match the reference as well.
    progress.show(tag + ": verifying graph replay output");
    const VerifyResult again = verify_against(buf, n_out, n_lse, et, tol, stream);
    if (!again.pass || again.out_rel_err > res.check.out_rel_err) {
      const bool first_pass = res.check.pass;
      res.check = again;
      res.check.pass = first_pass && again.pass;
    }
    res.verify = res.check.pass ? VerifyStatus::kPass : VerifyStatus::kFail;
  }
}

// ---- output ---------------------------------------------------------------------------------

std::string verify_cell(const CaseResult& r) {
  if (!r.error.empty()) return "ERROR";
  switch (r.verify) {
    case VerifyStatus::kPass: return "PASS " + fmt("%.1e", r.check.out_rel_err);
    case VerifyStatus::kFail: return "FAIL " + r.check.summary();
    case VerifyStatus::kSkipped: return "skipped";
    case VerifyStatus::kNotRun: return "-";
  }
  return "-";
}

void print_row(const CaseResult& r, double copy_gbs, double gemm_tflops) {
  const CaseSpec& c = r.spec;
  const std::string sk = std::to_string(c.seqlen_k) + (c.varlen ? "~" : "");
  std::string t = "-", tf = "-", gb = "-", pc = "-", pg = "-";
  if (r.time_us) {
    t = fmt("%.1f", *r.time_us);
    tf = fmt("%.1f", r.tflops);
    gb = fmt("%.0f", r.gb_per_s);
    if (copy_gbs > 0) pc = fmt("%.1f%%", 100.0 * r.gb_per_s / copy_gbs);
    if (gemm_tflops > 0) pg = fmt("%.1f%%", 100.0 * r.tflops / gemm_tflops);
  }
  std::printf("%-6s %5d %4d %7s %5d %5d %6s | %9s %8s %7s %7s %7s | %s\n", c.name.c_str(),
              c.batch, c.seqlen_q, sk.c_str(), c.heads_q, c.heads_kv, c.varlen ? "yes" : "no",
              t.c_str(), tf.c_str(), gb.c_str(), pc.c_str(), pg.c_str(), verify_cell(r).c_str());
  std::fflush(stdout);
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (unsigned char ch : s) {
    switch (ch) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\t': o += "\\t"; break;
      case '\r': o += "\\r"; break;
      default:
        if (ch < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", ch);
          o += buf;
        } else {
          o += static_cast<char>(ch);
        }
    }
  }
  return "\"" + o + "\"";
}

// JSON has no NaN/Inf: those become null.
std::string json_num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.10g", v);
  return buf;
}
std::string json_num(const std::optional<double>& v) { return v ? json_num(*v) : "null"; }

bool write_json(const std::string& path, const std::string& command, const Options& opt,
                const GpuInfo& gpu, const std::optional<CopyCeiling>& copy,
                const std::optional<GemmCeiling>& gemm,
                const std::optional<GemmCeiling>& gemm_fp16,
                const std::optional<LaunchFloor>& floor, const std::vector<CaseResult>& results,
                bool all_ok, uint64_t data_seed) {
  std::ostringstream j;
  const double copy_gbs = copy ? copy->gb_per_s : 0, gemm_tf = gemm ? gemm->tflops : 0;
  j << "{\n  \"tool\": \"mla-bench\",\n";
  j << "  \"command\": " << json_escape(command) << ",\n";
  j << "  \"gpu\": {\"name\": " << json_escape(gpu.name) << ", \"sm_count\": " << gpu.sm_count
    << ", \"compute_capability\": \"" << gpu.cc_major << "." << gpu.cc_minor
    << "\", \"l2_bytes\": " << gpu.l2_bytes << ", \"memory_bytes\": " << gpu.global_mem
    << ", \"cuda_runtime\": " << gpu.runtime_version << ", \"cuda_driver\": "
    << gpu.driver_version << "},\n";
  j << "  \"settings\": {\"dtype\": \"" << bench_dtype_name(opt.dtype) << "\", \"causal\": "
    << (opt.causal ? "true" : "false") << ", \"iters\": " << opt.iters
    << ", \"verify\": " << (opt.verify ? "true" : "false") << ", \"l2_flush\": \""
    << flush_mode_name(opt.flush) << "\", \"page_size\": "
    << kBenchPageSize << ", \"data_seed\": " << data_seed << "},\n";
  j << "  \"ceilings\": {\"copy_gb_per_s\": " << (copy ? json_num(copy->gb_per_s) : "null")
    << ", \"copy_bytes\": " << (copy ? std::to_string(copy->bytes) : "null")
    << ", \"gemm_tflops\": " << (gemm ? json_num(gemm->tflops) : "null")
    << ", \"gemm_n\": " << (gemm ? std::to_string(gemm->n) : "null")
    << ", \"gemm_fp16_tflops\": " << (gemm_fp16 ? json_num(gemm_fp16->tflops) : "null")
    << ", \"launch_floor_us\": " << (floor ? json_num(floor->us) : "null") << "},\n";
  j << "  \"cases\": [";
  for (size_t k = 0; k < results.size(); ++k) {
    const CaseResult& r = results[k];
    const CaseSpec& c = r.spec;
    const char* vs = !r.error.empty()                    ? "ERROR"
                     : r.verify == VerifyStatus::kPass    ? "PASS"
                     : r.verify == VerifyStatus::kFail    ? "FAIL"
                     : r.verify == VerifyStatus::kSkipped ? "SKIPPED"
                                                          : "NOT_RUN";
    j << (k ? ",\n    " : "\n    ") << "{\"case\": " << json_escape(c.name)
      << ", \"batch\": " << c.batch << ", \"seqlen_q\": " << c.seqlen_q
      << ", \"seqlen_k\": " << c.seqlen_k << ", \"heads_q\": " << c.heads_q
      << ", \"heads_kv\": " << c.heads_kv << ", \"varlen\": " << (c.varlen ? "true" : "false")
      << ", \"causal\": " << (r.causal ? "true" : "false") << ", \"sum_seqlens\": " << r.sum_len
      << ", \"flops\": " << json_num(r.flops) << ", \"bytes\": " << json_num(r.bytes)
      << ", \"time_us\": " << json_num(r.time_us) << ", \"time_us_min\": "
      << json_num(r.time_us_min) << ", \"time_us_max\": " << json_num(r.time_us_max)
      << ", \"tflops\": " << (r.time_us ? json_num(r.tflops) : "null")
      << ", \"gb_per_s\": " << (r.time_us ? json_num(r.gb_per_s) : "null")
      << ", \"pct_copy_ceiling\": "
      << (r.time_us && copy_gbs > 0 ? json_num(100.0 * r.gb_per_s / copy_gbs) : "null")
      << ", \"pct_gemm_ceiling\": "
      << (r.time_us && gemm_tf > 0 ? json_num(100.0 * r.tflops / gemm_tf) : "null")
      << ", \"verify\": \"" << vs << "\"";
    if (r.verify == VerifyStatus::kPass || r.verify == VerifyStatus::kFail) {
      j << ", \"out_rel_err\": " << json_num(r.check.out_rel_err)
        << ", \"lse_err\": " << json_num(r.check.lse_err) << ", \"nonfinite_mismatch\": "
        << (r.check.out_nonfinite_mismatch + r.check.lse_nonfinite_mismatch);
    }
    j << ", \"error\": " << (r.error.empty() ? "null" : json_escape(r.error)) << "}";
  }
  j << "\n  ],\n  \"all_passed\": " << (all_ok ? "true" : "false") << "\n}\n";
  std::ofstream f(path);
  if (!f) return false;
  f << j.str();
  return static_cast<bool>(f);
}

int run(int argc, char** argv) {
  const ParseResult parsed = parse_options(argc, argv);
  if (!parsed.ok) {
    std::fprintf(stderr, "%s\n", parsed.error.c_str());
    return kExitBadOptions;
  }
  const Options& opt = parsed.options;
  if (opt.help) {
    std::fputs(usage_text(), stdout);
    return kExitOk;
  }
  std::string command = "mla-bench";
  for (int k = 1; k < argc; ++k) command += std::string(" ") + argv[k];

  GpuInfo gpu;
  if (auto err = find_hopper(&gpu)) {
    std::fprintf(stderr, "%s\n", err->c_str());
    return kExitNoHopper;
  }
  MLA_BENCH_CUDA(cudaSetDevice(gpu.device));

  std::vector<CaseSpec> cases;
  if (opt.custom) {
    cases.push_back(CaseSpec{.name = "custom", .batch = opt.batch, .seqlen_q = opt.mtp,
                             .seqlen_k = opt.seqlen, .heads_q = opt.heads,
                             .heads_kv = opt.kv_heads, .varlen = opt.varlen, .length_seed = 999});
  } else {
    for (const CaseSpec& c : default_cases())
      if (!opt.only_case || c.name[0] == opt.only_case) cases.push_back(c);
  }

  // Fresh data every run (the lengths stay fixed per case); printed so a failure can be replayed.
  const uint64_t data_seed =
      (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}() ^
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());

  std::printf("mla-bench  GPU: %s (%d SMs, L2 %.0f MiB, CUDA runtime %d, driver %d)\n",
              gpu.name.c_str(), gpu.sm_count, gpu.l2_bytes / 1048576.0, gpu.runtime_version,
              gpu.driver_version);
  std::printf("dtype %s, causal %s, h_kv as listed, page size %d, random page order, %d graph "
              "replays (L2 flush: %s), median; data seed %llu\n",
              bench_dtype_name(opt.dtype), opt.causal ? "yes" : "no", kBenchPageSize, opt.iters,
              flush_mode_name(opt.flush), static_cast<unsigned long long>(data_seed));

  Progress progress;
  std::optional<CopyCeiling> copy;
  std::optional<GemmCeiling> gemm;
  bool ok = true;
  try {
    progress.show("mla-bench: measuring copy ceiling");
    copy = measure_copy_ceiling(kCopyCeilingBytes, kCopyCeilingReps);
  } catch (const std::exception& e) {
    progress.clear();
    std::fprintf(stderr, "mla-bench: copy ceiling failed: %s\n", e.what());
  }
  // One GEMM measurement; a failure is reported and leaves the figure out (n/a).
  auto try_gemm = [&](BenchDType dtype, const char* what) -> std::optional<GemmCeiling> {
    try {
      progress.show(std::string("mla-bench: measuring ") + what);
      return measure_gemm_ceiling(kGemmCeilingN, kGemmCeilingReps, dtype);
    } catch (const std::exception& e) {
      progress.clear();
      std::fprintf(stderr, "mla-bench: %s failed: %s\n", what, e.what());
      return std::nullopt;
    }
  };
  gemm = try_gemm(BenchDType::kBF16, "GEMM ceiling");
  // An fp16 run also times cuBLAS's fp16 GEMM (not a ceiling of record: %GEMM stays against
  // bf16, DESIGN.md section 5), so that the tensor cores' own fp16/bf16 ratio on random data is
  // in the same run as the fp16 cases.
  const std::optional<GemmCeiling> gemm_fp16 =
      opt.dtype == BenchDType::kFP16 ? try_gemm(BenchDType::kFP16, "fp16 GEMM") : std::nullopt;
  progress.clear();
  const double copy_gbs = copy ? copy->gb_per_s : 0, gemm_tf = gemm ? gemm->tflops : 0;
  std::printf("ceilings: copy %s GB/s (cudaMemcpy D2D %.0f GiB, read+write, median of %d); "
              "GEMM %s TFLOP/s (cublasGemmEx bf16 %d^3, fp32 compute, median of %d)\n",
              copy ? fmt("%.0f", copy_gbs).c_str() : "n/a",
              static_cast<double>(kCopyCeilingBytes) / (1u << 30), kCopyCeilingReps,
              gemm ? fmt("%.1f", gemm_tf).c_str() : "n/a", kGemmCeilingN, kGemmCeilingReps);
  if (opt.dtype == BenchDType::kFP16) {
    std::printf("fp16 GEMM: %s TFLOP/s (the same GEMM with fp16 inputs and output)%s\n",
                gemm_fp16 ? fmt("%.1f", gemm_fp16->tflops).c_str() : "n/a",
                gemm && gemm_fp16
                    ? fmt(", %.1f%% of bf16's", 100.0 * gemm_fp16->tflops / gemm_tf).c_str()
                    : "");
  }

  std::vector<CaseResult> results;
  std::optional<DeviceBuffer> flush;
  cudaStream_t stream = nullptr;
  try {
    MLA_BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    flush.emplace(std::max<size_t>(2 * gpu.l2_bytes, size_t{64} << 20), "L2 flush buffer");
    MLA_BENCH_CUDA(cudaMemset(flush->get(), 0, flush->bytes()));  // the read flush needs zeros
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mla-bench: setup failed: %s\n", e.what());
    return kExitFailed;
  }
  // The third ceiling, for the latency-bound cases (E, F): no decode can be timed below it.
  std::optional<LaunchFloor> floor;
  try {
    progress.show("mla-bench: measuring launch floor");
    floor = measure_launch_floor(gpu.sm_count, opt.flush, flush->get(), flush->bytes(),
                                 kLaunchFloorReps);
  } catch (const std::exception& e) {
    progress.clear();
    std::fprintf(stderr, "mla-bench: launch floor failed: %s\n", e.what());
  }
  progress.clear();
  std::printf("launch floor: %s us (graph of two empty kernels, %d CTAs + a dependent one, timed "
              "like the cases, median of %d)\n",
              floor ? fmt("%.1f", floor->us).c_str() : "n/a", gpu.sm_count, kLaunchFloorReps);
  std::printf("\n%-6s %5s %4s %7s %5s %5s %6s | %9s %8s %7s %7s %7s | %s\n", "case", "b", "s_q",
              "s_k", "h_q", "h_kv", "varlen", "time us", "TFLOP/s", "GB/s", "%copy", "%GEMM",
              "verify");
  std::fflush(stdout);
  for (size_t k = 0; k < cases.size(); ++k) {
    CaseResult r;
    r.spec = cases[k];
    r.causal = opt.causal;
    const std::string tag = "mla-bench: [" + std::to_string(k + 1) + "/" +
                            std::to_string(cases.size()) + "] case " + cases[k].name;
    try {
      run_case(opt, gpu, *flush, stream, data_seed + 0x9E3779B97F4A7C15ull * (k + 1), tag,
               progress, r);
    } catch (const std::exception& e) {
      r.error = e.what();
      // A failed case leaves the stream possibly mid-capture or with queued work: drain it.
      cudaGraph_t g = nullptr;
      if (cudaStreamEndCapture(stream, &g) == cudaSuccess && g) cudaGraphDestroy(g);
      cudaStreamSynchronize(stream);
      cudaGetLastError();
    }
    progress.clear();
    print_row(r, copy_gbs, gemm_tf);
    if (!r.error.empty() || r.verify == VerifyStatus::kFail) ok = false;
    results.push_back(std::move(r));
  }
  cudaStreamDestroy(stream);

  bool printed_header = false;
  for (const CaseResult& r : results) {
    if (r.error.empty() && r.verify != VerifyStatus::kFail) continue;
    if (!printed_header) std::printf("\n");
    printed_header = true;
    if (!r.error.empty()) {
      std::printf("case %s: ERROR: %s\n", r.spec.name.c_str(), r.error.c_str());
    } else {
      const Tolerance t = tolerance_for(opt.dtype == BenchDType::kBF16);
      std::printf("case %s: verification FAILED: %s (tolerance out_err <= %.0e, lse_err <= "
                  "%.0e, nonfinite_mismatch == 0)\n",
                  r.spec.name.c_str(), r.check.summary().c_str(), t.out_rel_fro, t.lse_rel);
    }
  }
  if (!copy || !gemm) ok = false;

  if (!opt.json_path.empty()) {
    if (!write_json(opt.json_path, command, opt, gpu, copy, gemm, gemm_fp16, floor, results, ok,
                    data_seed)) {
      std::fprintf(stderr, "mla-bench: cannot write --json file '%s'\n", opt.json_path.c_str());
      ok = false;
    }
  }
  std::printf("\n%s\n", ok ? "mla-bench: all cases verified"
                           : "mla-bench: FAILED (see the errors above)");
  return ok ? kExitOk : kExitFailed;
}

}  // namespace
}  // namespace mla_bench

int main(int argc, char** argv) {
  try {
    return mla_bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mla-bench: %s\n", e.what());
    return 1;
  }
}
