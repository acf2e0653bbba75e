// Diagnostic, not part of the build: does a read-once stream pay for the dirty lines an L2 flush
// left behind, and does its L2 eviction policy change that? A 1.2 GB buffer is streamed once per
// timing (16-byte loads through L2 with a createpolicy cache hint, as decode reads KV once) after
// each of four flushes of a 2 x L2 buffer: cudaMemsetAsync (mla-bench's method), a kernel of
// plain stores, a kernel of streaming (.cs) stores, and a read-only sweep (nothing left dirty);
// then, for two policies, the same read with 4 to 12 MiB of loads in flight instead of 16.
//   nvcc -std=c++20 -O3 -gencode=arch=compute_90a,code=sm_90a tools/probe/l2_dirty_probe.cu -o p
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

enum Policy { kNoHint, kEvictFirst, kEvictNormal, kEvictUnchanged, kEvictLast };
const char* const kPolicyNames[] = {"no hint", "evict_first", "evict_normal", "evict_unchanged",
                                    "evict_last"};

template <int P>
__device__ __forceinline__ uint64_t make_policy() {
  uint64_t p = 0;
  if constexpr (P == kEvictFirst)
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
  if constexpr (P == kEvictNormal)
    asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(p));
  if constexpr (P == kEvictUnchanged)
    asm volatile("createpolicy.fractional.L2::evict_unchanged.b64 %0, 1.0;" : "=l"(p));
  if constexpr (P == kEvictLast)
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(p));
  return p;
}

template <int P>
__device__ __forceinline__ uint4 load(const uint4* a, uint64_t policy) {
  uint4 v;
  if constexpr (P == kNoHint) {
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(a));
  } else {
    asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0,%1,%2,%3}, [%4], %5;"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(a), "l"(policy));
  }
  return v;
}

template <int P>
__global__ void __launch_bounds__(512) stream_read(const uint4* __restrict__ data, size_t n,
                                                   unsigned* sink) {
  const uint64_t policy = make_policy<P>();
  unsigned acc = 0;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = load<P>(data + i + u * stride, policy);
#pragma unroll
    for (int u = 0; u < 4; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n; i += stride) {
    const uint4 v = load<P>(data + i, policy);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9E3779B9u) *sink = acc;
}

template <bool kStreaming>
__global__ void store_flush(uint4* data, size_t n) {
  const uint4 z = make_uint4(0, 0, 0, 0);
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    if constexpr (kStreaming) __stcs(data + i, z); else data[i] = z;
  }
}

int main() {
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  int l2 = 0;
  cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0);
  const size_t data_bytes = 1200ull << 20, flush_bytes = 2ull * l2;
  uint4 *data = nullptr, *flush = nullptr;
  unsigned* sink = nullptr;
  if (cudaMalloc(&data, data_bytes) != cudaSuccess ||
      cudaMalloc(&flush, flush_bytes) != cudaSuccess || cudaMalloc(&sink, 4) != cudaSuccess) {
    std::printf("alloc failed\n");
    return 1;
  }
  cudaMemset(data, 0, data_bytes);
  cudaMemset(flush, 0, flush_bytes);
  const size_t n = data_bytes / 16, fn = flush_bytes / 16;
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  const char* const flush_names[] = {"memset", "plain stores", "streaming stores", "read sweep"};
  std::printf("L2 %d MiB, %d SMs; stream-read %zu MiB; median of 15 (us, GB/s)\n", l2 >> 20, sms,
              data_bytes >> 20);
  // ctas_per_sm sets the bytes in flight: CTAs x 512 threads x 4 loads x 16 bytes.
  auto time_read = [&](int f, int p, int ctas_per_sm) {
    const int grid = sms * ctas_per_sm;
    std::vector<float> t;
    for (int it = 0; it < 18; ++it) {
      if (f == 0) cudaMemsetAsync(flush, it & 0xff, flush_bytes);
      if (f == 1) store_flush<false><<<sms * 4, 512>>>(flush, fn);
      if (f == 2) store_flush<true><<<sms * 4, 512>>>(flush, fn);
      if (f == 3) stream_read<kNoHint><<<sms * 4, 512>>>(flush, fn, sink);
      cudaEventRecord(e0);
      switch (p) {
        case kNoHint: stream_read<kNoHint><<<grid, 512>>>(data, n, sink); break;
        case kEvictFirst: stream_read<kEvictFirst><<<grid, 512>>>(data, n, sink); break;
        case kEvictNormal: stream_read<kEvictNormal><<<grid, 512>>>(data, n, sink); break;
        case kEvictUnchanged: stream_read<kEvictUnchanged><<<grid, 512>>>(data, n, sink); break;
        case kEvictLast: stream_read<kEvictLast><<<grid, 512>>>(data, n, sink); break;
      }
      cudaEventRecord(e1);
      cudaEventSynchronize(e1);
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      if (it >= 3) t.push_back(ms * 1000);
    }
    if (cudaGetLastError() != cudaSuccess) { std::printf("CUDA error\n"); return false; }
    std::sort(t.begin(), t.end());
    const float med = t[t.size() / 2];
    std::printf("flush %-16s read %-15s %5.1f MiB in flight %8.1f us %6.0f GB/s\n",
                flush_names[f], kPolicyNames[p], grid * 512.0 * 64 / (1 << 20), med,
                data_bytes / (med * 1e-6) / 1e9);
    return true;
  };
  for (int f = 0; f < 4; ++f)
    for (int p = 0; p < 5; ++p)
      if (!time_read(f, p, 4)) return 1;
  // Does the footprint of the loads in flight decide how much dirty data is written back?
  for (int f : {0, 3})
    for (int p : {kEvictFirst, kEvictUnchanged})
      for (int c : {1, 2, 3})
        if (!time_read(f, p, c)) return 1;
  return 0;
}
