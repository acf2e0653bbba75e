// mla::validate_contents: a debug check of the *contents* of block_table and cache_seqlens.
//
// check() can only look at shapes and pointers on the host. A page id out of range in the block
// table would make the decode kernel read outside kv_cache (a fault, or silently wrong output),
// so this pass reads the same entries the kernels will read and reports the first bad one as a
// Status instead. It allocates and synchronises: it is meant for debugging and tests, never for
// the decode hot path.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "mla/decode.h"

namespace mla {
namespace {

constexpr unsigned long long kNoBadEntry = ~0ull;
constexpr int kThreads = 128;
constexpr int kMaxBlocks = 65535;

// Every entry gets a key ordered like (request, slot) where slot 0 is the request's length and
// slot j + 1 its logical page j; atomicMin over the keys leaves the first bad entry, so the report
// does not depend on thread scheduling.
__global__ void find_first_bad_entry(const int32_t* __restrict__ block_table,
                                     int64_t block_table_batch_stride,
                                     const int32_t* __restrict__ cache_seqlens, int batch,
                                     int max_pages_per_seq, int page_size, int num_pages,
                                     unsigned long long* first_bad) {
  const unsigned long long slots_per_request = static_cast<unsigned long long>(max_pages_per_seq) + 1;
  for (int i = blockIdx.x; i < batch; i += gridDim.x) {
    const int len = cache_seqlens[i];
    const unsigned long long key = static_cast<unsigned long long>(i) * slots_per_request;
    if (len < 0 || static_cast<long long>(len) > static_cast<long long>(max_pages_per_seq) * page_size) {
      // The page count of a bad length is meaningless: do not read block_table for it.
      if (threadIdx.x == 0) atomicMin(first_bad, key);
      continue;
    }
    const int pages = (len + page_size - 1) / page_size;
    const int32_t* row = block_table + static_cast<int64_t>(i) * block_table_batch_stride;
    for (int j = threadIdx.x; j < pages; j += blockDim.x) {
      const int32_t page = row[j];
      if (page < 0 || page >= num_pages) atomicMin(first_bad, key + 1 + j);
    }
  }
}

Status cuda_failure(const char* what, cudaError_t err) {
  (void)cudaGetLastError();  // clear a non-sticky error so later calls are not blamed for it
  return Status(StatusCode::kCudaError,
                std::string("validate_contents: ") + what + " failed: " + cudaGetErrorString(err));
}

#define MLA_CUDA_TRY(call)                                 \
  do {                                                     \
    const cudaError_t mla_err_ = (call);                   \
    if (mla_err_ != cudaSuccess) return cuda_failure(#call, mla_err_); \
  } while (0)

// A plain (unregistered) host pointer would fault inside the kernel, which is exactly what this
// debug pass exists to avoid.
Status require_device_accessible(const char* name, const void* ptr) {
  cudaPointerAttributes attr{};
  const cudaError_t err = cudaPointerGetAttributes(&attr, ptr);
  if (err != cudaSuccess) return cuda_failure("cudaPointerGetAttributes", err);
  if (attr.type == cudaMemoryTypeUnregistered) {
    return Status(StatusCode::kInvalidArgument,
                  std::string(name) + " is a host pointer unknown to CUDA (expected device, " +
                      "managed or registered host memory)");
  }
  return Status::Ok();
}

}  // namespace

Status validate_contents(const DecodeArgs& args, cudaStream_t stream) {
  if (Status st = check(args); !st.ok()) return st;

  int device_count = 0;
  const cudaError_t count_err = cudaGetDeviceCount(&device_count);
  if (count_err != cudaSuccess || device_count == 0) {
    (void)cudaGetLastError();
    return Status(StatusCode::kNoDevice,
                  std::string("validate_contents needs a CUDA device: ") +
                      (count_err != cudaSuccess ? cudaGetErrorString(count_err) : "no device found"));
  }

  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  MLA_CUDA_TRY(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) {
    return Status(StatusCode::kInvalidArgument,
                  "validate_contents synchronises stream, which is capturing a CUDA graph: call it "
                  "outside capture");
  }
  if (Status st = require_device_accessible("block_table", args.block_table); !st.ok()) return st;
  if (Status st = require_device_accessible("cache_seqlens", args.cache_seqlens); !st.ok()) return st;

  unsigned long long* first_bad = nullptr;
  MLA_CUDA_TRY(cudaMallocAsync(&first_bad, sizeof(*first_bad), stream));
  unsigned long long host_first_bad = kNoBadEntry;
  cudaError_t err = cudaMemcpyAsync(first_bad, &host_first_bad, sizeof(host_first_bad),
                                    cudaMemcpyHostToDevice, stream);
  if (err == cudaSuccess) {
    const int blocks = std::min(args.batch, kMaxBlocks);
    find_first_bad_entry<<<blocks, kThreads, 0, stream>>>(
        args.block_table, args.block_table_batch_stride, args.cache_seqlens, args.batch,
        args.max_pages_per_seq, args.page_size, args.num_pages, first_bad);
    err = cudaGetLastError();
  }
  if (err == cudaSuccess) {
    err = cudaMemcpyAsync(&host_first_bad, first_bad, sizeof(host_first_bad),
                          cudaMemcpyDeviceToHost, stream);
  }
  // Free on every path so a failed launch does not leak the buffer.
  const cudaError_t free_err = cudaFreeAsync(first_bad, stream);
  if (err == cudaSuccess) err = free_err;
  if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) return cuda_failure("scanning block_table/cache_seqlens", err);

  if (host_first_bad == kNoBadEntry) return Status::Ok();

  const unsigned long long slots_per_request = static_cast<unsigned long long>(args.max_pages_per_seq) + 1;
  const int request = static_cast<int>(host_first_bad / slots_per_request);
  const int slot = static_cast<int>(host_first_bad % slots_per_request);
  int32_t len = 0;
  MLA_CUDA_TRY(cudaMemcpy(&len, args.cache_seqlens + request, sizeof(len), cudaMemcpyDeviceToHost));
  const long long max_len = static_cast<long long>(args.max_pages_per_seq) * args.page_size;
  if (slot == 0) {
    return Status(StatusCode::kInvalidContents,
                  "cache_seqlens[" + std::to_string(request) + "]=" + std::to_string(len) +
                      " (request " + std::to_string(request) + ") is outside [0, " +
                      std::to_string(max_len) + "] (max_pages_per_seq * page_size)");
  }
  const int page_index = slot - 1;
  int32_t page = 0;
  MLA_CUDA_TRY(cudaMemcpy(&page,
                          args.block_table + static_cast<int64_t>(request) * args.block_table_batch_stride +
                              page_index,
                          sizeof(page), cudaMemcpyDeviceToHost));
  return Status(StatusCode::kInvalidContents,
                "block_table[" + std::to_string(request) + "][" + std::to_string(page_index) +
                    "]=" + std::to_string(page) + " (request " + std::to_string(request) +
                    ", logical page " + std::to_string(page_index) + ", cache_seqlens=" +
                    std::to_string(len) + ") is not a page id in [0, num_pages=" +
                    std::to_string(args.num_pages) + ")");
}

#undef MLA_CUDA_TRY

}  // namespace mla
