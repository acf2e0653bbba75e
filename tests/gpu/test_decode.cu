// End-to-end GPU tests of mla::decode (schedule + sm90 kernel + combine) against the GPU
// reference (fp32 dot products, double softmax sums; itself checked against the float64 CPU
// reference in test_gpu_reference.cu) and, for small cases, the float64 CPU reference directly.
//
// Every case draws fresh random inputs (normal q and KV), places pages in random physical order,
// fills unused pages and the tokens past cache_seqlens in each last page with NaN, sets unused
// block-table slots to out-of-range ids, and poisons out/lse with NaN before the call.
//
// Tolerances (issue 4): out relative Frobenius error <= 3e-3 and per element
// |err| <= 1e-2 + 1e-2 |ref|; lse |err| <= 1e-4 (absolute); NaN/Inf positions identical.
#include <gtest/gtest.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gpu/hopper_gpu.h"
#include "mla/decode.h"
#include "reference/cpu_reference.h"
#include "reference/device_inputs.h"
#include "reference/gpu_reference.h"
#include "sched/metadata.h"

namespace {

namespace ref = mla::reference;

constexpr double kOutRelFrobenius = 3e-3;
constexpr double kOutAtol = 1e-2, kOutRtol = 1e-2;
constexpr double kLseAtol = 1e-4;

#define CUDA_OK(call)                                                                   \
  do {                                                                                  \
    const cudaError_t e_ = (call);                                                      \
    ASSERT_EQ(e_, cudaSuccess) << #call << ": " << cudaGetErrorString(e_);              \
  } while (0)


struct Case {
  mla::DType dtype = mla::DType::kBF16;
  int batch = 1;
  int s_q = 1;
  int seqlen = 64;  // fixed length, or mean when varlen
  int h_q = 16;
  int h_kv = 1;
  bool varlen = false;
  bool causal = false;
  bool padded_strides = false;  // q/out with non-default outer strides
  float softmax_scale = 0.0f;   // <= 0: default
  double zero_fraction = 0.0;   // varlen: share of requests with length 0
  std::string name() const {
    return std::string(mla::dtype_name(dtype)) + " b=" + std::to_string(batch) +
           " s_q=" + std::to_string(s_q) + " s_k=" + std::to_string(seqlen) +
           " h_q=" + std::to_string(h_q) + " h_kv=" + std::to_string(h_kv) +
           (varlen ? " varlen" : "") + (causal ? " causal" : "") +
           (padded_strides ? " padded" : "");
  }
};

// Owns the device buffers of one problem.
struct Problem {
  mla::DecodeArgs args;
  std::vector<int32_t> lengths;
  std::vector<int32_t> block_table;
  void* q = nullptr;
  void* kv = nullptr;
  void* out = nullptr;
  float* lse = nullptr;
  int32_t* d_block_table = nullptr;
  int32_t* d_seqlens = nullptr;
  size_t q_elems = 0, kv_elems = 0, out_elems = 0;

  ~Problem() {
    cudaFree(q);
    cudaFree(kv);
    cudaFree(out);
    cudaFree(lse);
    cudaFree(d_block_table);
    cudaFree(d_seqlens);
  }
};

// Builds the inputs of c with randomness from rng.
void make_problem(const Case& c, std::mt19937_64& rng, Problem& p) {
  mla::DecodeArgs& a = p.args;
  a.dtype = a.kv_dtype = c.dtype;
  a.batch = c.batch;
  a.seqlen_q = c.s_q;
  a.num_heads_q = c.h_q;
  a.num_heads_kv = c.h_kv;
  a.page_size = 64;
  a.softmax_scale = c.softmax_scale;
  a.causal = c.causal;

  p.lengths.resize(c.batch);
  for (int i = 0; i < c.batch; ++i) {
    if (!c.varlen) {
      p.lengths[i] = c.seqlen;
    } else if (std::uniform_real_distribution<double>(0, 1)(rng) < c.zero_fraction) {
      p.lengths[i] = 0;
    } else {
      p.lengths[i] = std::uniform_int_distribution<int>(0, 2 * c.seqlen)(rng);
    }
  }
  int max_pages = 1;
  int used_pages = 0;
  for (int len : p.lengths) {
    max_pages = std::max(max_pages, (len + 63) / 64);
    used_pages += (len + 63) / 64;
  }
  const int spare_pages = 3;  // never referenced; all NaN
  a.num_pages = used_pages + spare_pages;
  a.max_pages_per_seq = max_pages + 1;  // one more column than needed: never read

  std::vector<int32_t> physical(a.num_pages);
  std::iota(physical.begin(), physical.end(), 0);
  std::shuffle(physical.begin(), physical.end(), rng);
  std::vector<int32_t> valid_tokens(a.num_pages, 0);
  p.block_table.assign(static_cast<size_t>(c.batch) * a.max_pages_per_seq, 0);
  int next = 0;
  for (int i = 0; i < c.batch; ++i) {
    const int pages = (p.lengths[i] + 63) / 64;
    for (int j = 0; j < a.max_pages_per_seq; ++j) {
      int32_t& slot = p.block_table[static_cast<size_t>(i) * a.max_pages_per_seq + j];
      if (j < pages) {
        slot = physical[next++];
        valid_tokens[slot] = std::min(64, p.lengths[i] - j * 64);
      } else {
        slot = (j % 2) ? a.num_pages + 1000 : -7;  // out of range: must never be dereferenced
      }
    }
  }

  const int d = mla::kHeadDimQK, dv = mla::kHeadDimV;
  mla::set_contiguous_strides(a);
  if (c.padded_strides) {
    a.q_head_stride = d + 64;
    a.q_seq_stride = a.q_head_stride * c.h_q + 8;
    a.q_batch_stride = a.q_seq_stride * c.s_q + 24;
    a.out_head_stride = dv + 32;
    a.out_seq_stride = a.out_head_stride * c.h_q;
    a.out_batch_stride = a.out_seq_stride * c.s_q + 40;
  }
  p.q_elems = static_cast<size_t>(a.q_batch_stride) * c.batch;
  p.kv_elems = static_cast<size_t>(a.kv_page_stride) * a.num_pages;
  p.out_elems = static_cast<size_t>(a.out_batch_stride) * c.batch;

  ASSERT_EQ(cudaMalloc(&p.q, p.q_elems * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&p.kv, p.kv_elems * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&p.out, p.out_elems * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&p.lse, sizeof(float) * c.batch * c.h_q * c.s_q), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&p.d_block_table, sizeof(int32_t) * p.block_table.size()), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&p.d_seqlens, sizeof(int32_t) * c.batch), cudaSuccess);
  int32_t* d_valid = nullptr;
  ASSERT_EQ(cudaMalloc(&d_valid, sizeof(int32_t) * a.num_pages), cudaSuccess);

  // Device-side generation (host generation of the larger cases' KV would dominate the run).
  const uint64_t seed = rng();
  ASSERT_EQ(ref::fill_normal(p.q, p.q_elems, c.dtype, seed, 1.0f, nullptr), cudaSuccess);
  ASSERT_EQ(ref::fill_normal(p.kv, p.kv_elems, c.dtype, seed ^ 0x5555, 1.0f, nullptr), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_valid, valid_tokens.data(), sizeof(int32_t) * a.num_pages,
                       cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(ref::poison_kv(p.kv, a.num_pages, 64, static_cast<int64_t>(c.h_kv) * d, d_valid,
                           c.dtype, nullptr),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpy(p.d_block_table, p.block_table.data(),
                       sizeof(int32_t) * p.block_table.size(), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(p.d_seqlens, p.lengths.data(), sizeof(int32_t) * c.batch,
                       cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaFree(d_valid);

  a.q = p.q;
  a.kv_cache = p.kv;
  a.out = p.out;
  a.lse = p.lse;
  a.block_table = p.d_block_table;
  a.cache_seqlens = p.d_seqlens;
}

// Dense host copies of p's out (as float) and lse.
void read_results(const Problem& p, std::vector<float>* out, std::vector<float>* lse) {
  const mla::DecodeArgs& a = p.args;
  const int dv = mla::kHeadDimV;
  std::vector<uint16_t> raw(p.out_elems);
  CUDA_OK(cudaMemcpy(raw.data(), p.out, p.out_elems * 2, cudaMemcpyDeviceToHost));
  out->assign(static_cast<size_t>(a.batch) * a.seqlen_q * a.num_heads_q * dv, 0.0f);
  for (int b = 0; b < a.batch; ++b)
    for (int s = 0; s < a.seqlen_q; ++s)
      for (int h = 0; h < a.num_heads_q; ++h) {
        const size_t src = b * a.out_batch_stride + s * a.out_seq_stride + h * a.out_head_stride;
        const size_t dst = ((static_cast<size_t>(b) * a.seqlen_q + s) * a.num_heads_q + h) * dv;
        for (int e = 0; e < dv; ++e) (*out)[dst + e] = ref::half_to_float(a.dtype, raw[src + e]);
      }
  lse->resize(static_cast<size_t>(a.batch) * a.num_heads_q * a.seqlen_q);
  CUDA_OK(cudaMemcpy(lse->data(), p.lse, sizeof(float) * lse->size(), cudaMemcpyDeviceToHost));
}

// The caller-owned buffers of one decode step (plan.schedule_bytes, plan.workspace_bytes), freed
// with the test's scope.
struct StepBuffers {
  void* schedule = nullptr;
  void* workspace = nullptr;
  ~StepBuffers() {
    cudaFree(schedule);
    cudaFree(workspace);
  }
};

void alloc_step_buffers(const mla::DecodePlan& plan, StepBuffers& buffers) {
  CUDA_OK(cudaMalloc(&buffers.schedule, plan.schedule_bytes));
  CUDA_OK(cudaMalloc(&buffers.workspace, std::max<size_t>(plan.workspace_bytes, 16)));
}

// The piece count of each request in a schedule written by mla::schedule, appended to pieces.
void read_piece_counts(const void* schedule, const mla::DecodePlan& plan, int batch,
                       std::vector<int>* pieces) {
  std::vector<int32_t> offsets(batch + 1);
  CUDA_OK(cudaMemcpy(offsets.data(), mla::detail::schedule_split_offsets(schedule, plan.num_sm_parts),
                     offsets.size() * sizeof(int32_t), cudaMemcpyDeviceToHost));
  for (int i = 0; i < batch; ++i) pieces->push_back(offsets[i + 1] - offsets[i]);
}

// Poisons the schedule buffer, runs schedule, then decode twice with that schedule (as for two
// layers of a step; out, lse and the workspace poisoned before each), and returns dense host
// copies of the second call's out (as float) and lse. Checks that decode left the schedule's
// merge flags (sched/metadata.h) zero, as the next layer needs them. pieces (optional): the
// schedule's piece count of each request, appended.
void run_decode(Problem& p, std::vector<float>* out, std::vector<float>* lse,
                std::vector<int>* pieces = nullptr) {
  const mla::DecodeArgs& a = p.args;
  ASSERT_TRUE(mla::check(a).ok()) << mla::check(a).to_string();
  const int num_sms = mla::device_num_sms(0);
  const mla::DecodePlan plan = mla::plan_decode(a, num_sms);
  StepBuffers buffers;
  ASSERT_NO_FATAL_FAILURE(alloc_step_buffers(plan, buffers));
  void* schedule = buffers.schedule;
  void* workspace = buffers.workspace;
  CUDA_OK(cudaMemset(schedule, 0xFF, plan.schedule_bytes));  // schedule() must write all of it

  mla::Status st = mla::schedule(a, plan, schedule, nullptr);
  ASSERT_TRUE(st.ok()) << st.to_string();
  if (pieces) ASSERT_NO_FATAL_FAILURE(read_piece_counts(schedule, plan, a.batch, pieces));
  for (int layer = 0; layer < 2; ++layer) {
    CUDA_OK(cudaMemset(workspace, 0xFF, plan.workspace_bytes));  // NaN partials if unwritten
    CUDA_OK(cudaMemset(p.out, 0xFF, p.out_elems * 2));
    CUDA_OK(cudaMemset(p.lse, 0xFF, sizeof(float) * a.batch * a.num_heads_q * a.seqlen_q));
    st = mla::decode(a, plan, schedule, workspace, nullptr);
    ASSERT_TRUE(st.ok()) << st.to_string();
  }
  CUDA_OK(cudaDeviceSynchronize());
  const size_t num_flags =
      static_cast<size_t>(plan.num_sm_parts) * plan.num_m_blocks * a.num_heads_kv;
  std::vector<uint32_t> flags(num_flags);
  CUDA_OK(cudaMemcpy(flags.data(), mla::detail::schedule_merge_flags(schedule, a.batch, plan.num_sm_parts),
                     num_flags * sizeof(uint32_t), cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < num_flags; ++i) ASSERT_EQ(flags[i], 0u) << "merge flag " << i << " after decode";

  ASSERT_NO_FATAL_FAILURE(read_results(p, out, lse));
}

void reference_gpu(Problem& p, std::vector<float>* out, std::vector<float>* lse) {
  const mla::DecodeArgs& a = p.args;
  const size_t out_n = static_cast<size_t>(a.batch) * a.seqlen_q * a.num_heads_q * mla::kHeadDimV;
  const size_t lse_n = static_cast<size_t>(a.batch) * a.num_heads_q * a.seqlen_q;
  float *d_out = nullptr, *d_lse = nullptr;
  CUDA_OK(cudaMalloc(&d_out, out_n * sizeof(float)));
  CUDA_OK(cudaMalloc(&d_lse, lse_n * sizeof(float)));
  const mla::Status st = ref::reference_decode_gpu(a, d_out, d_lse, nullptr);
  ASSERT_TRUE(st.ok()) << st.to_string();
  out->resize(out_n);
  lse->resize(lse_n);
  CUDA_OK(cudaMemcpy(out->data(), d_out, out_n * sizeof(float), cudaMemcpyDeviceToHost));
  CUDA_OK(cudaMemcpy(lse->data(), d_lse, lse_n * sizeof(float), cudaMemcpyDeviceToHost));
  cudaFree(d_out);
  cudaFree(d_lse);
}

struct Worst {
  double out_rel = 0, out_abs = 0, lse_abs = 0;
  int cases = 0;
};

// Checks out/lse (dense host copies) against the GPU reference of p, with the tolerances above;
// updates worst-error statistics when worst is given.
void expect_matches_gpu_reference(Problem& p, const std::vector<float>& out,
                                  const std::vector<float>& lse, Worst* worst) {
  std::vector<float> out_ref, lse_ref;
  ASSERT_NO_FATAL_FAILURE(reference_gpu(p, &out_ref, &lse_ref));
  const ref::CompareResult co = ref::compare(out.data(), out_ref.data(), out.size(), kOutAtol, kOutRtol);
  const ref::CompareResult cl = ref::compare(lse.data(), lse_ref.data(), lse.size(), kLseAtol, 0.0);
  EXPECT_TRUE(co.ok) << "out: " << co.summary;
  EXPECT_LE(co.rel_frobenius, kOutRelFrobenius) << "out: " << co.summary;
  EXPECT_TRUE(cl.ok) << "lse: " << cl.summary;
  for (float v : out) {
    if (std::isnan(v)) {
      ADD_FAILURE() << "NaN in out";
      break;
    }
  }
  if (worst) {
    worst->out_rel = std::max(worst->out_rel, co.rel_frobenius);
    worst->out_abs = std::max(worst->out_abs, co.max_abs_err);
    worst->lse_abs = std::max(worst->lse_abs, cl.max_abs_err);
    worst->cases++;
  }
}

// Runs one case and checks it; updates worst-error statistics.
// pieces (optional): as run_decode's.
void check_case(const Case& c, std::mt19937_64& rng, Worst* worst, bool also_cpu_reference,
                std::vector<int>* pieces = nullptr) {
  SCOPED_TRACE(c.name());
  Problem p;
  ASSERT_NO_FATAL_FAILURE(make_problem(c, rng, p));
  std::vector<float> out, lse;
  ASSERT_NO_FATAL_FAILURE(run_decode(p, &out, &lse, pieces));
  ASSERT_NO_FATAL_FAILURE(expect_matches_gpu_reference(p, out, lse, worst));

  if (also_cpu_reference) {
    // The float64 CPU reference on the same (rounded) inputs.
    const mla::DecodeArgs& a = p.args;
    std::vector<uint16_t> q_raw(p.q_elems), kv_raw(p.kv_elems);
    CUDA_OK(cudaMemcpy(q_raw.data(), p.q, p.q_elems * 2, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(kv_raw.data(), p.kv, p.kv_elems * 2, cudaMemcpyDeviceToHost));
    const std::vector<float> qf = ref::to_float(a.dtype, q_raw);
    const std::vector<float> kvf = ref::to_float(a.dtype, kv_raw);
    const ref::RefProblem rp =
        ref::problem_from_args(a, qf.data(), kvf.data(), p.block_table.data(), p.lengths.data());
    ref::RefResult rr;
    const mla::Status st = ref::decode_reference(rp, &rr);
    ASSERT_TRUE(st.ok()) << st.to_string();
    const ref::CompareResult co2 = ref::compare(out.data(), rr.out.data(), out.size(), kOutAtol, kOutRtol);
    const ref::CompareResult cl2 = ref::compare(lse.data(), rr.lse.data(), lse.size(), kLseAtol, 0.0);
    EXPECT_TRUE(co2.ok) << "out vs CPU: " << co2.summary;
    EXPECT_LE(co2.rel_frobenius, kOutRelFrobenius) << "out vs CPU: " << co2.summary;
    EXPECT_TRUE(cl2.ok) << "lse vs CPU: " << cl2.summary;
  }
}

std::mt19937_64 fresh_rng() {
  // Fresh inputs every run; the seed is printed so a failure can be replayed.
  const uint64_t seed = std::random_device{}() ^ (static_cast<uint64_t>(std::random_device{}()) << 32);
  std::printf("[ decode  ] random seed %llu\n", static_cast<unsigned long long>(seed));
  return std::mt19937_64(seed);
}

// Holds one SM (its shared memory rules out a second CTA of this kernel or a decode CTA beside
// it) until *release is set from the host, or for at most max_ns: the safety exit lets a test
// that finds decode hung release its SMs and fail instead of hanging the suite.
constexpr int kHoldSmemBytes = 200 * 1024;
__global__ void hold_sm_kernel(volatile uint32_t* arrived, const volatile uint32_t* release,
                               uint64_t max_ns) {
  if (threadIdx.x != 0) return;
  uint64_t start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  arrived[blockIdx.x] = 1;
  __threadfence_system();
  do {
    __nanosleep(2000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (*release == 0 && now - start < max_ns);
}

// ---- tests -------------------------------------------------------------------------------------

TEST(DecodeGpu, SmallCasesMatchFloat64CpuReference) {
  MLA_SKIP_WITHOUT_HOPPER();
  auto rng = fresh_rng();
  const Case cases[] = {
      {.batch = 1, .s_q = 1, .seqlen = 20, .h_q = 1, .h_kv = 1},
      {.batch = 2, .s_q = 2, .seqlen = 140, .h_q = 9, .h_kv = 3, .causal = true},
      {.dtype = mla::DType::kFP16, .batch = 3, .s_q = 4, .seqlen = 70, .h_q = 16, .h_kv = 1,
       .varlen = true, .causal = true, .padded_strides = true},
      {.batch = 2, .s_q = 1, .seqlen = 300, .h_q = 128, .h_kv = 8, .softmax_scale = 0.02f},
  };
  for (const Case& c : cases) check_case(c, rng, nullptr, /*also_cpu_reference=*/true);
}

// The sweep of issue 4, every combination, both dtypes.
TEST(DecodeGpu, FullSweep) {
  MLA_SKIP_WITHOUT_HOPPER();
  auto rng = fresh_rng();
  const int batches[] = {1, 2, 6, 64};
  const int s_qs[] = {1, 2, 4};
  const int seqlens[] = {20, 140, 4096};
  const std::pair<int, int> heads[] = {{1, 1},  {3, 1},   {9, 3},   {63, 1}, {64, 1},
                                       {64, 2}, {126, 3}, {128, 1}, {128, 8}};
  Worst worst;
  int failures_before = 0;
  for (mla::DType dtype : {mla::DType::kBF16, mla::DType::kFP16})
    for (int b : batches)
      for (int s_q : s_qs)
        for (int s_k : seqlens)
          for (auto [h_q, h_kv] : heads)
            for (bool varlen : {false, true})
              for (bool causal : {false, true}) {
                const Case c{.dtype = dtype, .batch = b, .s_q = s_q, .seqlen = s_k, .h_q = h_q,
                             .h_kv = h_kv, .varlen = varlen, .causal = causal,
                             .padded_strides = ((b + s_q + h_q) % 3) == 0,
                             .softmax_scale = (h_q % 2) ? 0.0f : 0.05f,
                             .zero_fraction = varlen ? 0.15 : 0.0};
                check_case(c, rng, &worst, false);
                if (::testing::Test::HasFailure() && ++failures_before > 20) {
                  FAIL() << "stopping the sweep after 20 failing cases";
                }
              }
  std::printf("[ sweep   ] %d cases; worst out rel Frobenius %.3e, worst out abs %.3e, worst lse abs %.3e\n",
              worst.cases, worst.out_rel, worst.out_abs, worst.lse_abs);
}

TEST(DecodeGpu, Batch128MtpHalfEmpty) {
  MLA_SKIP_WITHOUT_HOPPER();
  auto rng = fresh_rng();
  for (mla::DType dtype : {mla::DType::kBF16, mla::DType::kFP16})
    for (bool causal : {false, true}) {
      const Case c{.dtype = dtype, .batch = 128, .s_q = 2, .seqlen = 4096, .h_q = 128, .h_kv = 1,
                   .varlen = true, .causal = causal, .zero_fraction = 0.5};
      check_case(c, rng, nullptr, false);
    }
}

TEST(DecodeGpu, LongSequencesAndSmallBatch) {
  MLA_SKIP_WITHOUT_HOPPER();
  auto rng = fresh_rng();
  const Case cases[] = {
      {.batch = 1, .s_q = 1, .seqlen = 131072, .h_q = 128, .h_kv = 1},
      {.batch = 1, .s_q = 1, .seqlen = 32768, .h_q = 16, .h_kv = 1},
      {.batch = 32, .s_q = 1, .seqlen = 1024, .h_q = 16, .h_kv = 1},
      {.batch = 3, .s_q = 8, .seqlen = 5000, .h_q = 128, .h_kv = 1, .causal = true},
      {.batch = 5, .s_q = 3, .seqlen = 2000, .h_q = 40, .h_kv = 2, .varlen = true, .causal = true},
  };
  for (const Case& c : cases) check_case(c, rng, nullptr, false);
}

// seqlen_q up to its limit of 64 (the sweep stops at 4, the cases above at 8). A kv head's query
// rows (s_q * h_q / h_kv of them) are cut into 64-row m-blocks across tokens and the causal
// window differs per token, so each of these is a case: an m-block that starts or ends inside a
// token, tokens whose causal window is empty (request shorter than s_q), the 1024-row limit, and
// decode_narrow with many tokens of few heads.
TEST(DecodeGpu, ManyQueryTokensUpToTheLimit) {
  MLA_SKIP_WITHOUT_HOPPER();
  auto rng = fresh_rng();
  const Case cpu_checked[] = {
      // 66 rows: the second m-block holds the last token's two heads only.
      {.batch = 2, .s_q = 33, .seqlen = 100, .h_q = 2, .h_kv = 1, .causal = true},
      // 16 rows per kv head (decode_narrow), 16 tokens of one head; lengths 0..60, so some
      // requests are shorter than s_q and their first tokens see no key.
      {.batch = 3, .s_q = 16, .seqlen = 30, .h_q = 1, .h_kv = 1, .varlen = true, .causal = true},
  };
  for (const Case& c : cpu_checked) check_case(c, rng, nullptr, /*also_cpu_reference=*/true);
  const Case cases[] = {
      // 1024 rows per kv head: the limit, 16 m-blocks.
      {.batch = 2, .s_q = 64, .seqlen = 5000, .h_q = 16, .h_kv = 1, .causal = true},
      {.dtype = mla::DType::kFP16, .batch = 3, .s_q = 64, .seqlen = 700, .h_q = 1, .h_kv = 1,
       .varlen = true, .causal = true},
      // 111 rows: m-blocks cut inside a token (3 heads per token).
      {.batch = 4, .s_q = 37, .seqlen = 2000, .h_q = 3, .h_kv = 1, .varlen = true, .causal = true},
      // 15 rows per kv head: decode_narrow, 3 kv heads, 5 tokens.
      {.batch = 5, .s_q = 5, .seqlen = 40, .h_q = 9, .h_kv = 3, .causal = true},
      // Every request shorter than s_q: the first 18 of the 48 tokens see no key.
      {.batch = 1, .s_q = 48, .seqlen = 30, .h_q = 4, .h_kv = 1, .causal = true},
      // Not causal, 192 rows per kv head over 8 kv heads.
      {.batch = 6, .s_q = 12, .seqlen = 9000, .h_q = 128, .h_kv = 8, .varlen = true},
  };
  for (const Case& c : cases) check_case(c, rng, nullptr, false);
}

// decode_dense merges requests of 2 pieces itself (one CTA waits for the other's partial,
// sched/metadata.h), combine those of 3 or more, both in one step. Varlen batches whose
// schedules hold requests of 2, 3 and more pieces (asserted, so the test cannot pass without
// exercising them), with one and two m-blocks per kv head and with two kv heads.
TEST(DecodeGpu, DenseInKernelMergesAndCombine) {
  MLA_SKIP_WITHOUT_HOPPER();
  auto rng = fresh_rng();
  std::vector<int> pieces;
  const Case cases[] = {
      {.batch = 64, .s_q = 1, .seqlen = 4096, .h_q = 128, .h_kv = 1, .varlen = true},
      {.dtype = mla::DType::kFP16, .batch = 64, .s_q = 1, .seqlen = 4096, .h_q = 128, .h_kv = 1,
       .varlen = true},
      {.batch = 40, .s_q = 2, .seqlen = 3000, .h_q = 64, .h_kv = 1, .varlen = true, .causal = true},
      {.batch = 24, .s_q = 1, .seqlen = 6000, .h_q = 128, .h_kv = 2, .varlen = true,
       .zero_fraction = 0.2},
  };
  for (const Case& c : cases) check_case(c, rng, nullptr, false, &pieces);
  int with_two = 0, with_three = 0, with_more = 0;
  for (int n : pieces) {
    with_two += n == 2;
    with_three += n == 3;
    with_more += n > 3;
  }
  std::printf("[ merges  ] requests of 2 pieces: %d, of 3: %d, of more: %d\n", with_two, with_three,
              with_more);
  EXPECT_GT(with_two, 0);
  EXPECT_GT(with_three, 0);
  EXPECT_GT(with_more, 0);
}

TEST(DecodeGpu, BitwiseDeterministic) {
  MLA_SKIP_WITHOUT_HOPPER();
  auto rng = fresh_rng();
  const Case c{.batch = 7, .s_q = 2, .seqlen = 3000, .h_q = 128, .h_kv = 1, .varlen = true,
               .causal = true};
  Problem p;
  ASSERT_NO_FATAL_FAILURE(make_problem(c, rng, p));
  std::vector<float> out1, lse1, out2, lse2;
  ASSERT_NO_FATAL_FAILURE(run_decode(p, &out1, &lse1));
  ASSERT_NO_FATAL_FAILURE(run_decode(p, &out2, &lse2));
  ASSERT_EQ(out1.size(), out2.size());
  EXPECT_EQ(0, std::memcmp(out1.data(), out2.data(), out1.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(lse1.data(), lse2.data(), lse1.size() * sizeof(float)));
}

// Small enough to run under compute-sanitizer memcheck / racecheck:
//   compute-sanitizer --tool memcheck build/tests/mla_gpu_tests --gtest_filter='DecodeGpu.Sanitizer*'
TEST(DecodeGpu, SanitizerSubset) {
  MLA_SKIP_WITHOUT_HOPPER();
  auto rng = fresh_rng();
  const Case cases[] = {
      {.batch = 2, .s_q = 2, .seqlen = 140, .h_q = 64, .h_kv = 2, .varlen = true, .causal = true},
      {.dtype = mla::DType::kFP16, .batch = 1, .s_q = 1, .seqlen = 1000, .h_q = 128, .h_kv = 1},
      {.batch = 3, .s_q = 4, .seqlen = 20, .h_q = 3, .h_kv = 1, .causal = true, .padded_strides = true},
      // decode_dense's in-kernel merges of 2 pieces next to combine's merges of 3 or more.
      {.batch = 12, .s_q = 1, .seqlen = 300, .h_q = 128, .h_kv = 1, .varlen = true},
      // decode_narrow with Q by TMA: several requests per CTA (Q slots reused), split requests
      // (partials + combine), partial last pages.
      {.batch = 64, .s_q = 1, .seqlen = 140, .h_q = 16, .h_kv = 1, .varlen = true},
      {.dtype = mla::DType::kFP16, .batch = 2, .s_q = 2, .seqlen = 1500, .h_q = 8, .h_kv = 1,
       .causal = true},
  };
  for (const Case& c : cases) check_case(c, rng, nullptr, false);
}

// decode_dense on short varlen requests under the sanitizers, with parts of two requests (the
// staged transition, where threads 0..63 wait on kStageRead while the others go on), which the
// dense shapes of SanitizerSubset cannot make: their parts get the minimum payload of 9 blocks
// (sched/heuristics.h) and two requests cost at least 12. Per draw, by the host scheduler: batch
// 32 of mean 600 with 2 m-blocks (66 parts on 132 SMs) about 8 parts of two requests, 13
// requests of 2 pieces (merged in the kernel) and 7 of 3; batch 96 of mean 300 with 1 m-block
// (132 parts) about 30 parts of two requests. racecheck reported shared-memory hazards on the
// first shape in a build that merges 3-piece requests too (docs/PERF.md, sixteenth session).
TEST(DecodeGpu, SanitizerDenseShortVarlen) {
  MLA_SKIP_WITHOUT_HOPPER();
  auto rng = fresh_rng();
  const Case cases[] = {
      {.batch = 32, .s_q = 1, .seqlen = 600, .h_q = 128, .h_kv = 1, .varlen = true},
      {.batch = 96, .s_q = 1, .seqlen = 300, .h_q = 64, .h_kv = 1, .varlen = true},
  };
  for (const Case& c : cases) check_case(c, rng, nullptr, false);
}

// decode() with lengths shorter than the ones schedule() saw (a contract violation: the output is
// undefined) must still finish without a fault or a hang. Parts then start on requests with no
// block left in them: decode_narrow has already requested such a request's Q (before reading its
// length) and must consume that load, decode_dense must skip to the part's next request, and
// combine reads partial slots the kernels did not write. Covers both kernels (h_q 128 and 64:
// dense, h_q 16: narrow); runs under the sanitizers with the subset above (same name prefix).
TEST(DecodeGpu, SanitizerStaleShorterLengthsComplete) {
  MLA_SKIP_WITHOUT_HOPPER();
  auto rng = fresh_rng();
  const Case cases[] = {
      {.batch = 12, .s_q = 1, .seqlen = 300, .h_q = 128, .h_kv = 1, .varlen = true},
      {.batch = 5, .s_q = 2, .seqlen = 200, .h_q = 64, .h_kv = 1, .varlen = true, .causal = true},
      {.batch = 9, .s_q = 1, .seqlen = 300, .h_q = 16, .h_kv = 1, .varlen = true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name());
    Problem p;
    ASSERT_NO_FATAL_FAILURE(make_problem(c, rng, p));
    const mla::DecodeArgs& a = p.args;
    const mla::DecodePlan plan = mla::plan_decode(a, mla::device_num_sms(0));
    StepBuffers buffers;
    ASSERT_NO_FATAL_FAILURE(alloc_step_buffers(plan, buffers));
    void* schedule = buffers.schedule;
    void* workspace = buffers.workspace;
    ASSERT_TRUE(mla::schedule(a, plan, schedule, nullptr).ok());
    for (int round = 0; round < 3; ++round) {
      // Round 0: every length 0; then each length cut to a random shorter one, half of them 0.
      std::vector<int32_t> shorter(p.lengths);
      for (int32_t& len : shorter) {
        if (round == 0 || rng() % 2 == 0) {
          len = 0;
        } else {
          len = static_cast<int32_t>(rng() % (len + 1));
        }
      }
      CUDA_OK(cudaMemcpy(p.d_seqlens, shorter.data(), sizeof(int32_t) * shorter.size(),
                         cudaMemcpyHostToDevice));
      const mla::Status st = mla::decode(a, plan, schedule, workspace, nullptr);
      EXPECT_TRUE(st.ok()) << st.to_string();
      CUDA_OK(cudaDeviceSynchronize());
    }
  }
}

// decode_dense's CTAs wait for each other (requests merged in the kernel, sched/metadata.h). The
// step must still finish when far fewer SMs are free than the plan counted (another stream's
// kernel holding the rest, as under MPS or beside a concurrent kernel): here all but one part's
// worth of SMs (num_m_blocks * h_kv) are held by hold_sm_kernel while decode runs. A CTA that
// waited for a CTA not yet started would hang this step until the holders let go (then the test
// fails on time, not by hanging).
TEST(DecodeGpu, DenseFinishesWithFewSmsFree) {
  MLA_SKIP_WITHOUT_HOPPER();
  auto rng = fresh_rng();
  // Short requests, so that parts hold several and many requests are cut in two (asserted).
  const Case c{.batch = 64, .s_q = 1, .seqlen = 256, .h_q = 128, .h_kv = 1, .varlen = true};
  SCOPED_TRACE(c.name());
  Problem p;
  ASSERT_NO_FATAL_FAILURE(make_problem(c, rng, p));
  const mla::DecodeArgs& a = p.args;
  const int num_sms = mla::device_num_sms(0);
  const mla::DecodePlan plan = mla::plan_decode(a, num_sms);
  StepBuffers buffers;
  ASSERT_NO_FATAL_FAILURE(alloc_step_buffers(plan, buffers));
  void* schedule = buffers.schedule;
  void* workspace = buffers.workspace;
  ASSERT_TRUE(mla::schedule(a, plan, schedule, nullptr).ok());
  std::vector<int> pieces;
  ASSERT_NO_FATAL_FAILURE(read_piece_counts(schedule, plan, a.batch, &pieces));
  const int two_piece = static_cast<int>(std::count(pieces.begin(), pieces.end(), 2));
  ASSERT_GT(two_piece, 0) << "the schedule has no request of two pieces: nothing waits";
  // One unhindered run first: it loads the kernels (lazy module loading can wait for the whole
  // context, holders included) and leaves the merge flags as the scheduler wrote them.
  ASSERT_TRUE(mla::decode(a, plan, schedule, workspace, nullptr).ok());
  CUDA_OK(cudaMemset(workspace, 0xFF, plan.workspace_bytes));
  CUDA_OK(cudaMemset(p.out, 0xFF, p.out_elems * 2));
  CUDA_OK(cudaMemset(p.lse, 0xFF, sizeof(float) * a.batch * a.num_heads_q * a.seqlen_q));
  CUDA_OK(cudaDeviceSynchronize());

  const int free_sms = plan.num_m_blocks * a.num_heads_kv;
  const int held_sms = num_sms - free_sms;
  ASSERT_GT(held_sms, 0);
  uint32_t* host_flags = nullptr;  // [0, held_sms): arrived; [held_sms]: release
  CUDA_OK(cudaHostAlloc(reinterpret_cast<void**>(&host_flags), sizeof(uint32_t) * (held_sms + 1),
                        cudaHostAllocMapped));
  std::fill(host_flags, host_flags + held_sms + 1, 0u);
  uint32_t* device_flags = nullptr;
  CUDA_OK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&device_flags), host_flags, 0));
  volatile uint32_t* arrived = host_flags;
  volatile uint32_t* release = host_flags + held_sms;
  cudaStream_t hold_stream = nullptr, decode_stream = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&hold_stream, cudaStreamNonBlocking));
  CUDA_OK(cudaStreamCreateWithFlags(&decode_stream, cudaStreamNonBlocking));
  CUDA_OK(cudaFuncSetAttribute(hold_sm_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               kHoldSmemBytes));
  using Clock = std::chrono::steady_clock;
  hold_sm_kernel<<<held_sms, 32, kHoldSmemBytes, hold_stream>>>(device_flags,
                                                                device_flags + held_sms,
                                                                60ull * 1000000000ull);
  CUDA_OK(cudaGetLastError());
  int holding = 0;
  for (const auto until = Clock::now() + std::chrono::seconds(10); Clock::now() < until;) {
    holding = 0;
    for (int i = 0; i < held_sms; ++i) holding += arrived[i] != 0;
    if (holding == held_sms) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  bool finished = false;
  double seconds = 0;
  mla::Status st;
  if (holding == held_sms) {  // every holder resident: exactly free_sms SMs are left for decode
    const auto start = Clock::now();
    st = mla::decode(a, plan, schedule, workspace, decode_stream);
    if (st.ok()) {
      for (const auto until = start + std::chrono::seconds(20); Clock::now() < until;) {
        const cudaError_t q = cudaStreamQuery(decode_stream);
        if (q != cudaErrorNotReady) {
          finished = q == cudaSuccess;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      seconds = std::chrono::duration<double>(Clock::now() - start).count();
    }
  }
  *release = 1;  // a hung decode finishes once the holders are gone
  const cudaError_t sync = cudaDeviceSynchronize();
  cudaStreamDestroy(hold_stream);
  cudaStreamDestroy(decode_stream);
  cudaFreeHost(host_flags);
  ASSERT_EQ(sync, cudaSuccess) << cudaGetErrorString(sync);
  if (holding != held_sms) {
    // The setup, not decode, failed: another process holds SMs (or fewer are usable than the
    // device reports), so the step cannot be confined to free_sms SMs here.
    GTEST_SKIP() << "only " << holding << " of " << held_sms
                 << " SM holders became resident within 10 s (another process on the GPU?)";
  }
  ASSERT_TRUE(st.ok()) << st.to_string();
  std::printf("[ few SMs ] %d of %d SMs free, %d requests of two pieces: decode took %.3f s\n",
              free_sms, num_sms, two_piece, seconds);
  EXPECT_TRUE(finished) << "decode did not finish within 20 s with " << free_sms
                        << " SMs free (a CTA waited for one that had not started)";

  std::vector<float> out, lse;
  ASSERT_NO_FATAL_FAILURE(read_results(p, &out, &lse));
  ASSERT_NO_FATAL_FAILURE(expect_matches_gpu_reference(p, out, lse, nullptr));
}

TEST(DecodeGpu, RejectsBadCallArguments) {
  MLA_SKIP_WITHOUT_HOPPER();
  auto rng = fresh_rng();
  Problem p;
  ASSERT_NO_FATAL_FAILURE(make_problem({.batch = 2, .seqlen = 100, .h_q = 16}, rng, p));
  const mla::DecodePlan plan = mla::plan_decode(p.args, mla::device_num_sms(0));
  void* ws = nullptr;
  CUDA_OK(cudaMalloc(&ws, plan.workspace_bytes + plan.schedule_bytes + 256));
  mla::Status st = mla::decode(p.args, plan, nullptr, ws, nullptr);
  EXPECT_EQ(st.code(), mla::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("schedule_buffer"), std::string::npos) << st.message();
  mla::DecodePlan wrong = plan;
  wrong.num_sm_parts += 1;
  st = mla::decode(p.args, wrong, ws, ws, nullptr);
  EXPECT_EQ(st.code(), mla::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("plan"), std::string::npos) << st.message();
  cudaFree(ws);
}

}  // namespace
