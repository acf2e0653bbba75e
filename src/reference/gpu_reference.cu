// Simple GPU reference of MLA decoding: see gpu_reference.h for the contract.
//
// Grid: one CTA per (request i, query token s, block of up to kRows heads sharing one kv head),
// flattened into blockIdx.x. Warp r of the CTA owns head row r when scoring (lane j scores key
// j of the tile), and thread t owns output dims t and t + 256 of every row when accumulating
// P.V. Shared memory: q rows and one KV tile, both converted to float; the tile row stride is
// padded to 577 floats so that 32 lanes reading 32 different keys hit 32 different banks.
#include "reference/gpu_reference.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

namespace mla::reference {
namespace {

constexpr int kDqk = 576;
constexpr int kDv = 512;
constexpr int kRows = 8;        // heads per CTA: one warp each while scoring
constexpr int kTile = 32;       // keys per tile: one per lane while scoring
constexpr int kThreads = kRows * 32;
constexpr int kTileStride = kDqk + 1;  // padding: see the file comment
static_assert(kDv == 2 * kThreads, "each thread owns exactly two output dims per row");

constexpr size_t kSmemBytes =
    sizeof(float) * (kRows * kDqk + kTile * kTileStride + kRows * kTile) + sizeof(double) * kRows;

struct RefParams {
  const void* q;  // [b, s_q, h_q, 576]
  int64_t q_b, q_s, q_h, q_d;
  const void* kv;  // [num_pages, page_size, h_kv, 576]
  int64_t kv_p, kv_t, kv_h, kv_d;
  const int32_t* block_table;  // [b, max_pages_per_seq]
  int64_t bt_b;
  const int32_t* seqlens;  // [b]
  float* out;              // [b, s_q, h_q, 512] float
  float* lse;              // [b, h_q, s_q] float
  int s_q, h_q, h_kv, page_size;
  int heads_per_kv;      // h_q / h_kv
  int head_blocks;       // ceil(heads_per_kv / kRows): CTAs per (request, token, kv head)
  float scale;
  bool causal;
};

__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Loads keys [t0, t0 + kTile) of request i, kv head g into k_s (zeros past n_vis: those keys
// are masked anyway, and zeros keep poisoned memory out of the arithmetic).
template <typename T>
__device__ void load_tile(const RefParams& p, int i, int g, int t0, int n_vis, float* k_s) {
  const T* kv = static_cast<const T*>(p.kv);
  for (int idx = threadIdx.x; idx < kTile * kDqk; idx += kThreads) {
    const int j = idx / kDqk;
    const int d = idx % kDqk;
    const int tok = t0 + j;
    float v = 0.0f;
    if (tok < n_vis) {
      const int64_t page = p.block_table[i * p.bt_b + tok / p.page_size];
      const int64_t off = page * p.kv_p + static_cast<int64_t>(tok % p.page_size) * p.kv_t +
                          static_cast<int64_t>(g) * p.kv_h + static_cast<int64_t>(d) * p.kv_d;
      v = to_float(kv[off]);
    }
    k_s[j * kTileStride + d] = v;
  }
}

// Scaled score of head row r against key j of the tile (fp32, fixed summation order so both
// passes produce bit-identical values).
__device__ __forceinline__ float score(const float* q_s, const float* k_s, int r, int j,
                                       float scale) {
  const float* qr = q_s + r * kDqk;
  const float* kj = k_s + j * kTileStride;
  float acc = 0.0f;
#pragma unroll 8
  for (int d = 0; d < kDqk; ++d) acc = fmaf(qr[d], kj[d], acc);
  return acc * scale;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) reference_kernel(RefParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* q_s = reinterpret_cast<float*>(smem_raw);
  float* k_s = q_s + kRows * kDqk;
  float* p_s = k_s + kTile * kTileStride;
  double* l_s = reinterpret_cast<double*>(p_s + kRows * kTile);

  int64_t bid = blockIdx.x;
  const int hb = static_cast<int>(bid % (static_cast<int64_t>(p.h_kv) * p.head_blocks));
  bid /= static_cast<int64_t>(p.h_kv) * p.head_blocks;
  const int s = static_cast<int>(bid % p.s_q);
  const int i = static_cast<int>(bid / p.s_q);
  const int g = hb / p.head_blocks;
  const int row0 = (hb % p.head_blocks) * kRows;  // within the kv head's group
  const int head0 = g * p.heads_per_kv + row0;
  const int nrows = min(kRows, p.heads_per_kv - row0);

  const int len = max(p.seqlens[i], 0);
  // Bottom-right aligned causal: query s sees keys [0, len - s_q + s].
  const int n_vis = p.causal ? min(len, max(0, len - p.s_q + s + 1)) : len;

  const int tid = threadIdx.x;
  const int r = tid / 32;  // scoring: head row of this warp
  const int lane = tid % 32;

  const T* q = static_cast<const T*>(p.q);
  for (int idx = tid; idx < kRows * kDqk; idx += kThreads) {
    const int rr = idx / kDqk;
    const int d = idx % kDqk;
    float v = 0.0f;
    if (rr < nrows) {
      v = to_float(q[i * p.q_b + s * p.q_s + static_cast<int64_t>(head0 + rr) * p.q_h +
                     static_cast<int64_t>(d) * p.q_d]);
    }
    q_s[idx] = v;
  }

  // Pass 1: the row maximum of the scaled scores.
  float m = -INFINITY;
  for (int t0 = 0; t0 < n_vis; t0 += kTile) {
    __syncthreads();  // previous tile fully consumed (and q_s written, first time)
    load_tile<T>(p, i, g, t0, n_vis, k_s);
    __syncthreads();
    const float sc = (t0 + lane < n_vis && r < nrows) ? score(q_s, k_s, r, lane, p.scale)
                                                      : -INFINITY;
    m = fmaxf(m, warp_max(sc));
  }

  // Pass 2: with m fixed, p = exp(score - m) <= 1; accumulate sum(p) and sum(p * v).
  double l = 0.0;
  float acc[kRows][2];
#pragma unroll
  for (int rr = 0; rr < kRows; ++rr) acc[rr][0] = acc[rr][1] = 0.0f;
  for (int t0 = 0; t0 < n_vis; t0 += kTile) {
    __syncthreads();
    load_tile<T>(p, i, g, t0, n_vis, k_s);
    __syncthreads();
    float pr = 0.0f;
    if (t0 + lane < n_vis && r < nrows) pr = expf(score(q_s, k_s, r, lane, p.scale) - m);
    p_s[r * kTile + lane] = pr;
    l += static_cast<double>(warp_sum(pr));
    __syncthreads();
    const int d0 = tid;
    const int d1 = tid + kThreads;
#pragma unroll
    for (int rr = 0; rr < kRows; ++rr) {
      for (int j = 0; j < kTile; ++j) {
        const float pj = p_s[rr * kTile + j];
        acc[rr][0] = fmaf(pj, k_s[j * kTileStride + d0], acc[rr][0]);
        acc[rr][1] = fmaf(pj, k_s[j * kTileStride + d1], acc[rr][1]);
      }
    }
  }

  if (lane == 0) l_s[r] = l;
  // The row max lives in warp r's registers; publish it through p_s (free after the loop).
  __syncthreads();
  if (lane == 0) p_s[r] = m;
  __syncthreads();

  // Full unroll over kRows (not nrows) keeps acc[][] indices compile-time: no local memory.
#pragma unroll
  for (int rr = 0; rr < kRows; ++rr) {
    if (rr >= nrows) break;
    const int h = head0 + rr;
    float* o = p.out + ((static_cast<int64_t>(i) * p.s_q + s) * p.h_q + h) * kDv;
    const double lr = l_s[rr];
    const bool any = n_vis > 0;
    o[tid] = any ? static_cast<float>(acc[rr][0] / lr) : 0.0f;
    o[tid + kThreads] = any ? static_cast<float>(acc[rr][1] / lr) : 0.0f;
    if (tid == 0) {
      const float lse = any ? static_cast<float>(static_cast<double>(p_s[rr]) + log(lr))
                            : INFINITY;
      p.lse[(static_cast<int64_t>(i) * p.h_q + h) * p.s_q + s] = lse;
    }
  }
}

Status invalid(const std::string& msg) {
  return Status(StatusCode::kInvalidArgument, "reference_decode_gpu: " + msg);
}

}  // namespace

Status reference_decode_gpu(const DecodeArgs& args, float* out_ref, float* lse_ref,
                            cudaStream_t stream) {
  if (args.dtype != DType::kBF16 && args.dtype != DType::kFP16)
    return invalid("dtype must be bf16 or fp16");
  if (args.kv_dtype != args.dtype) return invalid("kv_dtype must equal dtype");
  if (args.head_dim_qk != kDqk)
    return invalid("head_dim_qk must be 576 (got " + std::to_string(args.head_dim_qk) + ")");
  if (args.head_dim_v != kDv)
    return invalid("head_dim_v must be 512 (got " + std::to_string(args.head_dim_v) + ")");
  if (args.batch < 0) return invalid("batch must be >= 0 (got " + std::to_string(args.batch) + ")");
  if (args.batch == 0) return Status::Ok();
  if (args.seqlen_q < 1)
    return invalid("seqlen_q must be >= 1 (got " + std::to_string(args.seqlen_q) + ")");
  if (args.num_heads_q < 1 || args.num_heads_kv < 1 || args.num_heads_q % args.num_heads_kv != 0)
    return invalid("num_heads_kv must be >= 1 and divide num_heads_q (got h_q=" +
                   std::to_string(args.num_heads_q) + ", h_kv=" +
                   std::to_string(args.num_heads_kv) + ")");
  if (args.page_size < 1)
    return invalid("page_size must be >= 1 (got " + std::to_string(args.page_size) + ")");
  if (!args.q || !args.kv_cache || !args.block_table || !args.cache_seqlens)
    return invalid("q, kv_cache, block_table and cache_seqlens must be non-null");
  if (!out_ref || !lse_ref) return invalid("out_ref and lse_ref must be non-null");

  const int heads_per_kv = args.num_heads_q / args.num_heads_kv;
  const int head_blocks = (heads_per_kv + kRows - 1) / kRows;
  const int64_t ctas = static_cast<int64_t>(args.batch) * args.seqlen_q * args.num_heads_kv *
                       head_blocks;
  if (ctas > INT_MAX)
    return invalid("batch * seqlen_q * h_kv * ceil(h_q / h_kv / 8) must be <= INT_MAX");

  const RefParams p{
      .q = args.q,
      .q_b = args.q_batch_stride, .q_s = args.q_seq_stride, .q_h = args.q_head_stride,
      .q_d = args.q_dim_stride,
      .kv = args.kv_cache,
      .kv_p = args.kv_page_stride, .kv_t = args.kv_token_stride, .kv_h = args.kv_head_stride,
      .kv_d = args.kv_dim_stride,
      .block_table = args.block_table,
      .bt_b = args.block_table_batch_stride,
      .seqlens = args.cache_seqlens,
      .out = out_ref,
      .lse = lse_ref,
      .s_q = args.seqlen_q, .h_q = args.num_heads_q, .h_kv = args.num_heads_kv,
      .page_size = args.page_size,
      .heads_per_kv = heads_per_kv,
      .head_blocks = head_blocks,
      .scale = args.softmax_scale > 0.0f ? args.softmax_scale
                                         : 1.0f / std::sqrt(static_cast<float>(kDqk)),
      .causal = args.causal,
  };

  auto launch = [&](auto kernel) -> Status {
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(kSmemBytes));
    if (e != cudaSuccess)
      return Status(StatusCode::kCudaError, std::string("reference_decode_gpu: ") +
                                                cudaGetErrorString(e));
    kernel<<<static_cast<unsigned>(ctas), kThreads, kSmemBytes, stream>>>(p);
    e = cudaGetLastError();
    if (e != cudaSuccess)
      return Status(StatusCode::kCudaError, std::string("reference_decode_gpu launch: ") +
                                                cudaGetErrorString(e));
    return Status::Ok();
  };
  return args.dtype == DType::kBF16 ? launch(reference_kernel<__nv_bfloat16>)
                                    : launch(reference_kernel<__half>);
}

}  // namespace mla::reference
