// libmla._C: the nanobind layer between the Python package and the C++ API in mla/decode.h.
//
// This layer never allocates device memory on the hot path: the Python package allocates out,
// lse, the schedule buffer and the workspace in the caller's framework (torch, CuPy, ...) and
// passes them here as DLPack arrays together with the caller's stream. Keeping allocation in the
// framework is what makes the op safe inside CUDA-graph capture (the framework's caching
// allocator knows about graph pools, we do not).
//
// Errors: every failure is raised with the C++ Status message unchanged, as
//   kInvalidArgument / kInvalidContents -> ValueError
//   kUnsupported                        -> libmla.UnsupportedError (a ValueError and a
//                                          NotImplementedError: valid in principle, not built)
//   either of the above about a dtype   -> TypeError
//   kNoDevice, kCudaError               -> RuntimeError
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/optional.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "mla/decode.h"
#include "mla/status.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using InArray = nb::ndarray<nb::ro>;
using OutArray = nb::ndarray<>;

constexpr int kDLCPU = 1;
constexpr int kDLCUDA = 2;
constexpr int kDLCUDAHost = 3;
constexpr int kDLCUDAManaged = 13;

[[noreturn]] void raise(PyObject* type, const std::string& message) {
  PyErr_SetString(type, message.c_str());
  throw nb::python_error();
}

// libmla._C.UnsupportedError, created at module initialisation.
PyObject* g_unsupported_error = nullptr;

bool mentions_dtype(const std::string& message) {
  return message.find("dtype") != std::string::npos;
}

// The one place where a C++ Status becomes a Python exception, so that the mapping documented at
// the top of this file holds for every entry point.
void throw_if_error(const mla::Status& status) {
  if (status.ok()) return;
  const std::string& msg = status.message();
  switch (status.code()) {
    case mla::StatusCode::kInvalidArgument:
    case mla::StatusCode::kInvalidContents:
      raise(mentions_dtype(msg) ? PyExc_TypeError : PyExc_ValueError, msg);
    case mla::StatusCode::kUnsupported:
      raise(mentions_dtype(msg) ? PyExc_TypeError : g_unsupported_error, msg);
    case mla::StatusCode::kNoDevice:
    case mla::StatusCode::kCudaError:
    case mla::StatusCode::kOk:
      break;
  }
  raise(PyExc_RuntimeError, msg);
}

// ---- device checks ------------------------------------------------------------------------------

// Hopper check result per device, cached: cudaGetDeviceProperties is slow and this runs on every
// call (also during CUDA-graph capture, where it is legal but should not cost milliseconds).
struct DeviceInfo {
  bool queried = false;
  int major = 0, minor = 0, num_sms = 0;
  std::string name;
};

std::mutex g_device_mutex;
std::vector<DeviceInfo> g_devices;

// The reason libmla cannot run (empty when a Hopper device is usable). device < 0: any device.
std::string hopper_problem(int device) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count <= 0) {
    cudaGetLastError();  // clear the sticky "no device" error so later CUDA users are unaffected
    return std::string("libmla needs a Hopper GPU (sm_90), but no CUDA device is available (") +
           (err != cudaSuccess ? cudaGetErrorString(err) : "device count is 0") + ")";
  }
  if (device < 0) {
    if (cudaGetDevice(&device) != cudaSuccess) device = 0;
  }
  if (device >= count) {
    return "libmla needs a Hopper GPU (sm_90): device " + std::to_string(device) +
           " does not exist (" + std::to_string(count) + " CUDA devices)";
  }
  std::lock_guard<std::mutex> lock(g_device_mutex);
  if (g_devices.size() < static_cast<size_t>(count)) g_devices.resize(count);
  DeviceInfo& info = g_devices[device];
  if (!info.queried) {
    cudaDeviceProp prop{};
    err = cudaGetDeviceProperties(&prop, device);
    if (err != cudaSuccess) {
      return std::string("libmla needs a Hopper GPU (sm_90): cudaGetDeviceProperties failed (") +
             cudaGetErrorString(err) + ")";
    }
    info = DeviceInfo{.queried = true, .major = prop.major, .minor = prop.minor,
                      .num_sms = prop.multiProcessorCount, .name = prop.name};
  }
  if (info.major != 9) {
    return "libmla needs a Hopper GPU (sm_90), but device " + std::to_string(device) + " (" +
           info.name + ") is sm_" + std::to_string(info.major) + std::to_string(info.minor);
  }
  return {};
}

void require_hopper(int device) {
  std::string problem = hopper_problem(device);
  if (!problem.empty()) raise(PyExc_RuntimeError, problem);
}

// Runs the body with `device` current and restores the caller's device afterwards: the arrays may
// live on a device other than the current one (torch does the same with a device guard).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&previous_) == cudaSuccess && previous_ != device) {
      if (cudaSetDevice(device) != cudaSuccess) {
        raise(PyExc_RuntimeError, "cudaSetDevice(" + std::to_string(device) + ") failed");
      }
      switched_ = true;
    }
  }
  ~DeviceGuard() {
    if (switched_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool switched_ = false;
};

// ---- importing input arrays ---------------------------------------------------------------------

bool is_numpy_ndarray(nb::handle obj) {
  return std::strcmp(Py_TYPE(obj.ptr())->tp_name, "numpy.ndarray") == 0;
}

// Input arrays arrive as plain handles and are imported here rather than by nanobind's argument
// caster, for two reasons. (1) A numpy array is imported through its versioned DLPack capsule
// (__dlpack__(max_version=(1, 0)), DLPack >= 1.0): for read-only ndarrays nanobind otherwise asks
// numpy for the legacy unversioned capsule, the one export path that differs between numpy
// releases and the prime suspect of a segfault seen with numpy 2.5.2 / Python 3.12 (see
// scripts/py_gpu_debug.sh). Torch and CuPy arrays keep nanobind's own import: calling their
// __dlpack__ here would add stream synchronisation (illegal during CUDA-graph capture).
// (2) An argument that is not an array gets a TypeError naming it, not nanobind's generic
// "incompatible function arguments".
InArray import_input(nb::handle obj, const char* name) {
  nb::object src = nb::borrow(obj);
  if (is_numpy_ndarray(obj)) {
    try {
      src = obj.attr("__dlpack__")("max_version"_a = nb::make_tuple(1, 0));
    } catch (nb::python_error&) {
      src = nb::borrow(obj);  // numpy < 2.1 has no max_version: its legacy export is all there is
    }
  }
  InArray array;
  if (!obj.is_none() && nb::try_cast<InArray>(src, array)) {
    if (array.ndim() > 0 && (array.shape_ptr() == nullptr || array.stride_ptr() == nullptr)) {
      raise(PyExc_TypeError, std::string(name) + ": the array's DLPack export has no shape/strides");
    }
    return array;
  }
  std::string type_name = nb::type_name(nb::handle(reinterpret_cast<PyObject*>(Py_TYPE(obj.ptr())))).c_str();
  raise(PyExc_TypeError, std::string(name) +
                             " must be an array supporting DLPack (torch.Tensor, cupy.ndarray, "
                             "numpy.ndarray; got " + type_name + ")");
}

// ---- array helpers ------------------------------------------------------------------------------

const char* device_name(int device_type) {
  switch (device_type) {
    case kDLCPU: return "cpu";
    case kDLCUDA: return "cuda";
    case kDLCUDAHost: return "cuda_host";
    case kDLCUDAManaged: return "cuda_managed";
    default: return "other";
  }
}

std::string dtype_str(nb::dlpack::dtype dt) {
  using code = nb::dlpack::dtype_code;
  std::string kind;
  switch (static_cast<code>(dt.code)) {
    case code::Int: kind = "int"; break;
    case code::UInt: kind = "uint"; break;
    case code::Float: kind = "float"; break;
    case code::Bfloat: kind = "bfloat"; break;
    case code::Bool: kind = "bool"; break;
    default: kind = "type" + std::to_string(dt.code) + "_"; break;
  }
  return kind + std::to_string(dt.bits);
}

bool is_dtype(nb::dlpack::dtype dt, nb::dlpack::dtype_code code, int bits) {
  return dt.code == static_cast<uint8_t>(code) && dt.bits == bits && dt.lanes == 1;
}

template <typename A>
void require_ndim(const A& a, const char* name, size_t ndim, const char* shape) {
  if (a.ndim() != ndim) {
    raise(PyExc_ValueError, std::string(name) + " must be " + std::to_string(ndim) + "-D " +
                                shape + " (got ndim=" + std::to_string(a.ndim()) + ")");
  }
}

template <typename A>
void require_dim(const A& a, const char* name, size_t dim, int64_t expected, const char* what) {
  if (static_cast<int64_t>(a.shape(dim)) != expected) {
    raise(PyExc_ValueError, std::string(name) + ".shape[" + std::to_string(dim) + "] (" + what +
                                ") must be " + std::to_string(expected) + " (got " +
                                std::to_string(a.shape(dim)) + ")");
  }
}

template <typename A>
void require_int32(const A& a, const char* name) {
  if (!is_dtype(a.dtype(), nb::dlpack::dtype_code::Int, 32)) {
    raise(PyExc_TypeError,
          std::string(name) + " dtype must be int32 (got " + dtype_str(a.dtype()) + ")");
  }
}

template <typename A>
mla::DType attention_dtype(const A& a, const char* name) {
  if (is_dtype(a.dtype(), nb::dlpack::dtype_code::Bfloat, 16)) return mla::DType::kBF16;
  if (is_dtype(a.dtype(), nb::dlpack::dtype_code::Float, 16)) return mla::DType::kFP16;
  raise(PyExc_TypeError, std::string(name) + " dtype must be bfloat16 or float16 (got " +
                             dtype_str(a.dtype()) + ")");
}

int to_int(size_t v, const char* what) {
  if (v > static_cast<size_t>(INT32_MAX)) {
    raise(PyExc_ValueError, std::string(what) + " must fit in int32 (got " + std::to_string(v) + ")");
  }
  return static_cast<int>(v);
}

struct DecodeArrays {
  const InArray& q;
  const InArray& k_cache;
  const InArray& block_table;
  const InArray& cache_seqlens;
  const OutArray* out;  // nullptr: check the inputs only (synthetic out/lse, see below)
  const OutArray* lse;
};

// One past the last byte an array can touch (its strides may be in any order).
template <typename A>
uint64_t end_address(const A& a, int64_t elem_bytes) {
  uint64_t last = 0;
  for (size_t i = 0; i < a.ndim(); ++i) {
    if (a.shape(i) == 0) return reinterpret_cast<uintptr_t>(a.data());
    const int64_t st = a.stride(i);
    last += static_cast<uint64_t>(a.shape(i) - 1) * static_cast<uint64_t>(st < 0 ? -st : st);
  }
  return reinterpret_cast<uintptr_t>(a.data()) + (last + 1) * static_cast<uint64_t>(elem_bytes);
}

// Builds DecodeArgs from the arrays, checking what DecodeArgs cannot express (ranks, dtypes
// coming from DLPack codes, agreement of sizes between arrays). Everything expressible in
// DecodeArgs is left to mla::check() so the messages are the C++ ones.
mla::DecodeArgs make_args(const DecodeArrays& a, int head_dim_v, double softmax_scale, bool causal) {
  require_ndim(a.q, "q", 4, "[b, s_q, h_q, d_qk]");
  require_ndim(a.k_cache, "k_cache", 4, "[num_pages, page_size, h_kv, d_qk]");
  require_ndim(a.block_table, "block_table", 2, "[b, max_pages_per_seq]");
  require_ndim(a.cache_seqlens, "cache_seqlens", 1, "[b]");

  const mla::DType dtype = attention_dtype(a.q, "q");
  const mla::DType kv_dtype = attention_dtype(a.k_cache, "k_cache");
  require_int32(a.block_table, "block_table");
  require_int32(a.cache_seqlens, "cache_seqlens");

  const int64_t b = a.q.shape(0), s_q = a.q.shape(1), h_q = a.q.shape(2);
  require_dim(a.block_table, "block_table", 0, b, "batch, q.shape[0]");
  require_dim(a.cache_seqlens, "cache_seqlens", 0, b, "batch, q.shape[0]");
  if (a.block_table.shape(1) > 1 && a.block_table.stride(1) != 1) {
    raise(PyExc_ValueError, "block_table must be contiguous along its last dim (stride 1, got " +
                                std::to_string(a.block_table.stride(1)) + ")");
  }
  if (b > 1 && a.cache_seqlens.stride(0) != 1) {
    raise(PyExc_ValueError, "cache_seqlens must be contiguous (stride 1, got " +
                                std::to_string(a.cache_seqlens.stride(0)) + ")");
  }
  if (a.k_cache.shape(3) != a.q.shape(3)) {
    raise(PyExc_ValueError, "k_cache.shape[3] (d_qk) must equal q.shape[3] = " +
                                std::to_string(a.q.shape(3)) + " (got " +
                                std::to_string(a.k_cache.shape(3)) + ")");
  }

  mla::DecodeArgs args;
  args.dtype = dtype;
  args.kv_dtype = kv_dtype;
  args.batch = to_int(b, "batch");
  args.seqlen_q = to_int(s_q, "s_q");
  args.num_heads_q = to_int(h_q, "h_q");
  args.num_heads_kv = to_int(a.k_cache.shape(2), "h_kv");
  args.head_dim_qk = to_int(a.q.shape(3), "q.shape[3]");
  args.head_dim_v = head_dim_v;
  args.page_size = to_int(a.k_cache.shape(1), "page_size");
  args.num_pages = to_int(a.k_cache.shape(0), "num_pages");
  args.max_pages_per_seq = to_int(a.block_table.shape(1), "max_pages_per_seq");

  args.q = a.q.data();
  args.q_batch_stride = a.q.stride(0);
  args.q_seq_stride = a.q.stride(1);
  args.q_head_stride = a.q.stride(2);
  args.q_dim_stride = a.q.stride(3);

  args.kv_cache = a.k_cache.data();
  args.kv_page_stride = a.k_cache.stride(0);
  args.kv_token_stride = a.k_cache.stride(1);
  args.kv_head_stride = a.k_cache.stride(2);
  args.kv_dim_stride = a.k_cache.stride(3);

  args.block_table = static_cast<const int32_t*>(a.block_table.data());
  args.block_table_batch_stride = a.block_table.stride(0);
  args.cache_seqlens = static_cast<const int32_t*>(a.cache_seqlens.data());
  // A host-resident cache_seqlens (CPU arrays, used by the CPU-side checks) lets check() also
  // validate the lengths themselves.
  if (a.cache_seqlens.device_type() == kDLCPU) args.host_cache_seqlens = args.cache_seqlens;
  args.softmax_scale = static_cast<float>(softmax_scale);
  args.causal = causal;

  if (a.out == nullptr || a.lse == nullptr) {
    // Inputs-only check (before the outputs exist): out and lse get synthetic addresses past
    // every input, contiguous, so check() validates the inputs exactly as for a real call; the
    // outputs libmla allocates itself are always fresh and contiguous.
    mla::set_contiguous_strides(args);
    args.q_batch_stride = a.q.stride(0);
    args.q_seq_stride = a.q.stride(1);
    args.q_head_stride = a.q.stride(2);
    args.q_dim_stride = a.q.stride(3);
    args.kv_page_stride = a.k_cache.stride(0);
    args.kv_token_stride = a.k_cache.stride(1);
    args.kv_head_stride = a.k_cache.stride(2);
    args.kv_dim_stride = a.k_cache.stride(3);
    args.block_table_batch_stride = a.block_table.stride(0);
    uint64_t end = std::max({end_address(a.q, 2), end_address(a.k_cache, 2),
                             end_address(a.block_table, 4), end_address(a.cache_seqlens, 4)});
    end = (end + 255) / 256 * 256;
    const uint64_t out_bytes =
        static_cast<uint64_t>(b) * s_q * h_q * static_cast<uint64_t>(head_dim_v > 0 ? head_dim_v : 0) * 2;
    args.out = reinterpret_cast<void*>(static_cast<uintptr_t>(end));
    args.lse = reinterpret_cast<float*>(static_cast<uintptr_t>((end + out_bytes + 255) / 256 * 256));
    return args;
  }

  const OutArray& out = *a.out;
  const OutArray& lse = *a.lse;
  require_ndim(out, "out", 4, "[b, s_q, h_q, d_v]");
  require_ndim(lse, "lse", 3, "[b, h_q, s_q]");
  if (out.dtype() != a.q.dtype()) {
    raise(PyExc_TypeError, "out dtype must equal q dtype " + dtype_str(a.q.dtype()) + " (got " +
                               dtype_str(out.dtype()) + ")");
  }
  if (!is_dtype(lse.dtype(), nb::dlpack::dtype_code::Float, 32)) {
    raise(PyExc_TypeError, "lse dtype must be float32 (got " + dtype_str(lse.dtype()) + ")");
  }
  require_dim(out, "out", 0, b, "batch, q.shape[0]");
  require_dim(out, "out", 1, s_q, "s_q, q.shape[1]");
  require_dim(out, "out", 2, h_q, "h_q, q.shape[2]");
  require_dim(out, "out", 3, head_dim_v, "head_dim_v");
  require_dim(lse, "lse", 0, b, "batch, q.shape[0]");
  require_dim(lse, "lse", 1, h_q, "h_q, q.shape[2]");
  require_dim(lse, "lse", 2, s_q, "s_q, q.shape[1]");
  // The kernel writes lse as [b, h_q, s_q] densely packed (FlashMLA's layout).
  const bool lse_dense = (s_q <= 1 || lse.stride(2) == 1) && (h_q <= 1 || lse.stride(1) == s_q) &&
                         (b <= 1 || lse.stride(0) == h_q * s_q);
  if (!lse_dense) raise(PyExc_ValueError, "lse must be contiguous [b, h_q, s_q]");
  args.out = out.data();
  args.out_batch_stride = out.stride(0);
  args.out_seq_stride = out.stride(1);
  args.out_head_stride = out.stride(2);
  args.out_dim_stride = out.stride(3);
  args.lse = static_cast<float*>(lse.data());
  return args;
}

// All arrays of one call on one CUDA device; returns that device.
template <typename... A>
int common_cuda_device(const std::pair<const char*, const A*>&... named) {
  int device = -1;
  std::string problem;
  auto visit = [&](const char* name, auto* a) {
    if (!problem.empty()) return;
    if (a->device_type() != kDLCUDA) {
      problem = std::string(name) + " must be a CUDA device array (got device " +
                device_name(a->device_type()) + ")";
    } else if (device < 0) {
      device = a->device_id();
    } else if (a->device_id() != device) {
      problem = std::string(name) + " must be on cuda:" + std::to_string(device) + " (got cuda:" +
                std::to_string(a->device_id()) + ")";
    }
  };
  (visit(named.first, named.second), ...);
  if (!problem.empty()) raise(PyExc_ValueError, problem);
  return device;
}

// Schedule buffer [parts (8 int32 each) | split_offsets (b + 1) | merge flags]: the two FlashMLA
// tensors (tile_scheduler_metadata, num_splits) are views of its first two sections.
void* schedule_pointer(const InArray& tile_scheduler_metadata, const InArray& num_splits,
                             const mla::DecodePlan& plan, int batch) {
  require_int32(tile_scheduler_metadata, "tile_scheduler_metadata");
  require_int32(num_splits, "num_splits");
  require_ndim(tile_scheduler_metadata, "tile_scheduler_metadata", 2, "[num_sm_parts, 8]");
  require_ndim(num_splits, "num_splits", 1, "[b + 1]");
  if (static_cast<int64_t>(tile_scheduler_metadata.shape(0)) != plan.num_sm_parts) {
    raise(PyExc_ValueError,
          "tile_scheduler_metadata.shape[0] (num_sm_parts) must be " +
              std::to_string(plan.num_sm_parts) + " for these shapes on this GPU (got " +
              std::to_string(tile_scheduler_metadata.shape(0)) +
              "): the metadata was made for other shapes (batch, s_q * h_q / h_kv, h_kv)");
  }
  require_dim(tile_scheduler_metadata, "tile_scheduler_metadata", 1, 8, "int32 per part");
  require_dim(num_splits, "num_splits", 0, static_cast<int64_t>(batch) + 1, "batch + 1");
  const auto* base = static_cast<const char*>(tile_scheduler_metadata.data());
  const bool dense = plan.num_sm_parts == 0 || (tile_scheduler_metadata.stride(1) == 1 &&
                                                tile_scheduler_metadata.stride(0) == 8);
  const bool adjacent =
      static_cast<const char*>(num_splits.data()) ==
      base + sizeof(int32_t) * 8 * static_cast<size_t>(plan.num_sm_parts);
  if (!dense || !adjacent || num_splits.stride(0) != 1) {
    raise(PyExc_ValueError,
          "num_splits must directly follow tile_scheduler_metadata in memory (both views of the "
          "buffer returned by get_mla_metadata)");
  }
  if (reinterpret_cast<uintptr_t>(base) % 16 != 0) {
    raise(PyExc_ValueError, "tile_scheduler_metadata must be 16-byte aligned");
  }
  // decode() uses the merge flags after num_splits in the same buffer (sched/metadata.h) and
  // leaves them zero; the views come from get_mla_metadata's buffer, which holds them.
  return const_cast<char*>(base);
}

void* workspace_pointer(const OutArray& workspace, size_t needed) {
  const size_t bytes = workspace.nbytes();
  if (bytes < needed) {
    raise(PyExc_ValueError, "workspace must hold at least " + std::to_string(needed) +
                                " bytes (got " + std::to_string(bytes) + ")");
  }
  if (needed > 0 && reinterpret_cast<uintptr_t>(workspace.data()) % 16 != 0) {
    raise(PyExc_ValueError, "workspace must be 16-byte aligned");
  }
  return needed > 0 ? workspace.data() : nullptr;
}

// DecodeArgs holding only the shape fields the plan reads (plan_decode is a pure host function
// of the shapes).
mla::DecodeArgs shape_args(int batch, int s_q, int h_q, int h_kv) {
  mla::DecodeArgs args;
  args.batch = batch;
  args.seqlen_q = s_q;
  args.num_heads_q = h_q;
  args.num_heads_kv = h_kv;
  return args;
}

// mla::schedule() validates its DecodeArgs with mla::check(), but get_mla_metadata (FlashMLA's
// interface) only has cache_seqlens: the schedule depends on nothing else than the lengths and
// the shapes. The other arrays get synthetic, never dereferenced addresses: 256-byte aligned,
// disjoint from one another and from cache_seqlens, so that check() sees a well-formed call.
mla::DecodeArgs schedule_args(const int32_t* cache_seqlens, int batch, int s_q, int h_q, int h_kv) {
  mla::DecodeArgs args = shape_args(batch, s_q, h_q, h_kv);
  args.num_pages = 1;
  args.max_pages_per_seq = 1;
  mla::set_contiguous_strides(args);
  auto round_up = [](uint64_t v) { return (v + 255) / 256 * 256; };
  const uint64_t rows = static_cast<uint64_t>(batch) * s_q * h_q;
  const uint64_t q_bytes = round_up(rows * mla::kHeadDimQK * 2);
  const uint64_t kv_bytes = round_up(static_cast<uint64_t>(mla::kPageSize) * h_kv * mla::kHeadDimQK * 2);
  const uint64_t out_bytes = round_up(rows * mla::kHeadDimV * 2);
  const uint64_t lse_bytes = round_up(rows * 4);
  const uint64_t bt_bytes = round_up(static_cast<uint64_t>(batch) * 4);
  const uint64_t total = q_bytes + kv_bytes + out_bytes + lse_bytes + bt_bytes;
  const uint64_t seqlens = reinterpret_cast<uintptr_t>(cache_seqlens);
  uint64_t base = uint64_t{1} << 44;
  if (seqlens + static_cast<uint64_t>(batch) * 4 > base && seqlens < base + total) {
    base = round_up(seqlens + static_cast<uint64_t>(batch) * 4);
  }
  auto at = [](uint64_t a) { return reinterpret_cast<void*>(static_cast<uintptr_t>(a)); };
  args.q = at(base);
  args.kv_cache = at(base + q_bytes);
  args.out = at(base + q_bytes + kv_bytes);
  args.lse = static_cast<float*>(at(base + q_bytes + kv_bytes + out_bytes));
  args.block_table = static_cast<const int32_t*>(at(base + q_bytes + kv_bytes + out_bytes + lse_bytes));
  args.cache_seqlens = cache_seqlens;
  return args;
}

void check_plan_shapes(int batch, int s_q, int h_q, int h_kv, int num_sms) {
  auto positive = [](const char* name, int v) {
    if (v <= 0) raise(PyExc_ValueError, std::string(name) + " must be > 0 (got " + std::to_string(v) + ")");
  };
  positive("batch", batch);
  positive("s_q", s_q);
  positive("num_heads_q", h_q);
  positive("num_heads_k", h_kv);
  positive("num_sms", num_sms);
  if (h_q % h_kv != 0) {
    raise(PyExc_ValueError, "num_heads_k (" + std::to_string(h_kv) +
                                ") must divide num_heads_q (got num_heads_q=" +
                                std::to_string(h_q) + ")");
  }
}

nb::dict plan_dict(const mla::DecodePlan& plan, int h_kv) {
  nb::dict d;
  d["num_sms"] = plan.num_sms;
  d["rows_per_kv_head"] = plan.rows_per_kv_head;
  d["num_m_blocks"] = plan.num_m_blocks;
  d["num_sm_parts"] = plan.num_sm_parts;
  d["max_partial_slots"] = plan.max_partial_slots;
  d["schedule_bytes"] = plan.schedule_bytes;
  // int32 merge flags after split_offsets in the schedule buffer (sched/metadata.h): one per
  // decode CTA, i.e. num_sm_parts * num_m_blocks * h_kv; per part the m-blocks times h_kv.
  d["num_merge_flags"] = plan.num_sm_parts * plan.num_m_blocks * h_kv;
  d["workspace_bytes"] = plan.workspace_bytes;
  return d;
}

cudaStream_t as_stream(uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

}  // namespace

// mla::check on DecodeArgs built from Python objects (check_status / check): inputs imported,
// outputs optional (without them only the inputs are checked). The imported arrays stay alive
// for the whole call, since check() reads a host cache_seqlens through the args.
mla::Status check_objects(nb::handle q_obj, nb::handle k_cache_obj, nb::handle block_table_obj,
                          nb::handle cache_seqlens_obj, int head_dim_v, double softmax_scale,
                          bool causal, const std::optional<OutArray>& out,
                          const std::optional<OutArray>& lse) {
  const InArray q = import_input(q_obj, "q");
  const InArray k_cache = import_input(k_cache_obj, "k_cache");
  const InArray block_table = import_input(block_table_obj, "block_table");
  const InArray cache_seqlens = import_input(cache_seqlens_obj, "cache_seqlens");
  const mla::DecodeArgs args =
      make_args(DecodeArrays{q, k_cache, block_table, cache_seqlens, out ? &*out : nullptr,
                             lse ? &*lse : nullptr},
                head_dim_v, softmax_scale, causal);
  return mla::check(args);
}

NB_MODULE(_C, m) {
  m.doc() = "libmla C++ core (nanobind). Use the libmla package, not this module.";
#ifdef MLA_VERSION
  m.attr("__version__") = MLA_VERSION;
#else
  m.attr("__version__") = "unknown";
#endif
  g_unsupported_error = PyErr_NewExceptionWithDoc(
      "libmla.UnsupportedError",
      "Valid in principle but not supported by this build (mla::StatusCode::kUnsupported).",
      nb::make_tuple(nb::handle(PyExc_ValueError), nb::handle(PyExc_NotImplementedError)).ptr(),
      nullptr);
  if (!g_unsupported_error) throw nb::python_error();
  m.attr("UnsupportedError") = nb::handle(g_unsupported_error);
  m.attr("HEAD_DIM_QK") = mla::kHeadDimQK;
  m.attr("HEAD_DIM_V") = mla::kHeadDimV;
  m.attr("PAGE_SIZE") = mla::kPageSize;
  m.attr("TILE_SCHEDULER_METADATA_SIZE") = 8;

  m.def("hopper_problem", &hopper_problem, "device"_a = -1,
        "Why libmla cannot run on the device ('' when a Hopper GPU is usable).");

  m.def(
      "device_num_sms",
      [](int device) {
        require_hopper(device);
        return mla::device_num_sms(device);
      },
      "device"_a);

  m.def(
      "plan",
      [](int batch, int s_q, int h_q, int h_kv, int num_sms) {
        check_plan_shapes(batch, s_q, h_q, h_kv, num_sms);
        return plan_dict(mla::plan_decode(shape_args(batch, s_q, h_q, h_kv), num_sms), h_kv);
      },
      "batch"_a, "s_q"_a, "h_q"_a, "h_kv"_a, "num_sms"_a,
      "The host-side plan (sizes of the schedule buffer and workspace) for these shapes.");

  m.def(
      "describe",
      [](nb::handle obj) {
        const InArray a = import_input(obj, "array");
        nb::list shape, strides;
        for (size_t i = 0; i < a.ndim(); ++i) {
          shape.append(a.shape(i));
          strides.append(a.stride(i));
        }
        nb::dict d;
        d["device"] = std::string(device_name(a.device_type()));
        d["device_id"] = a.device_id();
        d["dtype"] = dtype_str(a.dtype());
        d["lanes"] = static_cast<int>(a.dtype().lanes);
        d["shape"] = shape;
        d["strides"] = strides;
        d["data"] = reinterpret_cast<uintptr_t>(a.data());
        return d;
      },
      "array"_a,
      "Debug aid: what libmla sees of an array after the DLPack import (no data is read).");

  m.def(
      "check_status",
      [](nb::handle q_obj, nb::handle k_cache_obj, nb::handle block_table_obj,
         nb::handle cache_seqlens_obj, int head_dim_v, double softmax_scale, bool causal,
         std::optional<OutArray> out, std::optional<OutArray> lse) {
        const mla::Status st = check_objects(q_obj, k_cache_obj, block_table_obj,
                                             cache_seqlens_obj, head_dim_v, softmax_scale, causal,
                                             out, lse);
        return std::make_tuple(std::string(mla::status_code_name(st.code())), st.message());
      },
      "q"_a, "k_cache"_a, "block_table"_a, "cache_seqlens"_a, "head_dim_v"_a, "softmax_scale"_a,
      "causal"_a, "out"_a = nb::none(), "lse"_a = nb::none(),
      "mla::check() on the arrays without raising: (status code name, message). Without out/lse\n"
      "only the inputs are checked.");

  m.def(
      "check",
      [](nb::handle q_obj, nb::handle k_cache_obj, nb::handle block_table_obj,
         nb::handle cache_seqlens_obj, int head_dim_v, double softmax_scale, bool causal,
         std::optional<OutArray> out, std::optional<OutArray> lse) {
        throw_if_error(check_objects(q_obj, k_cache_obj, block_table_obj, cache_seqlens_obj,
                                     head_dim_v, softmax_scale, causal, out, lse));
      },
      "q"_a, "k_cache"_a, "block_table"_a, "cache_seqlens"_a, "head_dim_v"_a, "softmax_scale"_a,
      "causal"_a, "out"_a = nb::none(), "lse"_a = nb::none(),
      "Host-only validation (mla::check); raises ValueError/TypeError with the C++ message.");

  m.def(
      "schedule",
      [](nb::handle cache_seqlens_obj, int s_q, int h_q, int h_kv, int num_sms,
         const OutArray& schedule_buffer, uintptr_t stream) {
        const InArray cache_seqlens = import_input(cache_seqlens_obj, "cache_seqlens");
        require_ndim(cache_seqlens, "cache_seqlens", 1, "[b]");
        require_int32(cache_seqlens, "cache_seqlens");
        require_int32(schedule_buffer, "schedule_buffer");
        const int batch = to_int(cache_seqlens.shape(0), "batch");
        check_plan_shapes(batch, s_q, h_q, h_kv, num_sms);
        require_hopper(cache_seqlens.device_type() == kDLCUDA ? cache_seqlens.device_id() : -1);
        const int device = common_cuda_device(std::pair{"cache_seqlens", &cache_seqlens},
                                              std::pair{"schedule_buffer", &schedule_buffer});
        if (cache_seqlens.stride(0) != 1 && batch > 1) {
          raise(PyExc_ValueError, "cache_seqlens must be contiguous (stride 1)");
        }
        mla::DecodeArgs args = schedule_args(static_cast<const int32_t*>(cache_seqlens.data()),
                                             batch, s_q, h_q, h_kv);
        const mla::DecodePlan plan = mla::plan_decode(args, num_sms);
        // The layout's exact size (plan.schedule_bytes rounds it up to 16 for raw allocations;
        // the Python buffer is exactly [num_sm_parts * 8 + b + 1 + merge flags] int32).
        const size_t needed =
            sizeof(int32_t) * (8 * static_cast<size_t>(plan.num_sm_parts) +
                               static_cast<size_t>(batch) + 1 +
                               static_cast<size_t>(plan.num_sm_parts) * plan.num_m_blocks * h_kv);
        if (schedule_buffer.nbytes() < needed) {
          raise(PyExc_ValueError, "schedule_buffer must hold at least " +
                                      std::to_string(needed) + " bytes (got " +
                                      std::to_string(schedule_buffer.nbytes()) + ")");
        }
        if (reinterpret_cast<uintptr_t>(schedule_buffer.data()) % 16 != 0) {
          raise(PyExc_ValueError, "schedule_buffer must be 16-byte aligned");
        }
        DeviceGuard guard(device);
        mla::Status st;
        {
          nb::gil_scoped_release release;
          st = mla::schedule(args, plan, schedule_buffer.data(), as_stream(stream));
        }
        throw_if_error(st);
      },
      "cache_seqlens"_a, "s_q"_a, "h_q"_a, "h_kv"_a, "num_sms"_a, "schedule_buffer"_a,
      "stream"_a,
      "mla::schedule: writes [parts | split_offsets | zeroed merge flags] into schedule_buffer on "
      "stream.");

  m.def(
      "decode",
      [](nb::handle q_obj, nb::handle k_cache_obj, nb::handle block_table_obj,
         nb::handle cache_seqlens_obj, nb::handle tile_scheduler_metadata_obj,
         nb::handle num_splits_obj, const OutArray& out, const OutArray& lse,
         const OutArray& workspace, int head_dim_v, double softmax_scale, bool causal,
         int num_sms, uintptr_t stream) {
        const InArray q = import_input(q_obj, "q");
        const InArray k_cache = import_input(k_cache_obj, "k_cache");
        const InArray block_table = import_input(block_table_obj, "block_table");
        const InArray cache_seqlens = import_input(cache_seqlens_obj, "cache_seqlens");
        const InArray tile_scheduler_metadata = import_input(tile_scheduler_metadata_obj, "tile_scheduler_metadata");
        const InArray num_splits = import_input(num_splits_obj, "num_splits");
        mla::DecodeArgs args = make_args(
            DecodeArrays{q, k_cache, block_table, cache_seqlens, &out, &lse}, head_dim_v,
            softmax_scale, causal);
        // The host copy is only for CPU-side checks; on the GPU path the lengths stay on the GPU.
        args.host_cache_seqlens = nullptr;
        throw_if_error(mla::check(args));
        require_hopper(q.device_type() == kDLCUDA ? q.device_id() : -1);
        const int device = common_cuda_device(
            std::pair{"q", &q}, std::pair{"k_cache", &k_cache},
            std::pair{"block_table", &block_table}, std::pair{"cache_seqlens", &cache_seqlens},
            std::pair{"tile_scheduler_metadata", &tile_scheduler_metadata},
            std::pair{"num_splits", &num_splits}, std::pair{"out", &out}, std::pair{"lse", &lse});
        if (num_sms <= 0) {
          raise(PyExc_ValueError, "num_sms must be > 0 (got " + std::to_string(num_sms) + ")");
        }
        const mla::DecodePlan plan = mla::plan_decode(args, num_sms);
        void* sched = schedule_pointer(tile_scheduler_metadata, num_splits, plan, args.batch);
        void* ws = workspace_pointer(workspace, plan.workspace_bytes);
        DeviceGuard guard(device);
        mla::Status st;
        {
          nb::gil_scoped_release release;
          st = mla::decode(args, plan, sched, ws, as_stream(stream));
        }
        throw_if_error(st);
      },
      "q"_a, "k_cache"_a, "block_table"_a, "cache_seqlens"_a, "tile_scheduler_metadata"_a,
      "num_splits"_a, "out"_a, "lse"_a, "workspace"_a, "head_dim_v"_a, "softmax_scale"_a,
      "causal"_a, "num_sms"_a, "stream"_a,
      "mla::check + mla::decode on stream, writing out and lse.");

  m.def(
      "validate_contents",
      [](nb::handle q_obj, nb::handle k_cache_obj, nb::handle block_table_obj,
         nb::handle cache_seqlens_obj, const OutArray& out, const OutArray& lse, int head_dim_v,
         uintptr_t stream) {
        const InArray q = import_input(q_obj, "q");
        const InArray k_cache = import_input(k_cache_obj, "k_cache");
        const InArray block_table = import_input(block_table_obj, "block_table");
        const InArray cache_seqlens = import_input(cache_seqlens_obj, "cache_seqlens");
        mla::DecodeArgs args = make_args(
            DecodeArrays{q, k_cache, block_table, cache_seqlens, &out, &lse}, head_dim_v, 0.0, false);
        args.host_cache_seqlens = nullptr;
        require_hopper(q.device_type() == kDLCUDA ? q.device_id() : -1);
        const int device = common_cuda_device(std::pair{"block_table", &block_table},
                                              std::pair{"cache_seqlens", &cache_seqlens});
        DeviceGuard guard(device);
        mla::Status st;
        {
          nb::gil_scoped_release release;
          st = mla::validate_contents(args, as_stream(stream));
        }
        throw_if_error(st);
      },
      "q"_a, "k_cache"_a, "block_table"_a, "cache_seqlens"_a, "out"_a, "lse"_a, "head_dim_v"_a,
      "stream"_a, "Debug aid: mla::validate_contents (synchronises on stream).");
}
