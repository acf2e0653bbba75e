// Host-only validation of DecodeArgs (mla::check) and the small helpers around it.
//
// Every rejection goes through MLA_REQUIRE, so each message has one shape:
//   "<expression> failed: <name>=<value>, ... (<what is expected>)"
// Field values are copied into locals named exactly like the DecodeArgs fields, so that the
// printed expression reads in the user's vocabulary ("num_heads_q % num_heads_kv == 0").
//
// Order (documented in decode.h): dtype, layout, shape, pointers, aliasing, host lengths. Shape
// comes after layout because the layout checks do not depend on valid sizes, while aliasing
// needs sizes that are known to be sane.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <cstdio>
#include <string>
#include <utility>

#include "mla/decode.h"

namespace mla {
namespace {

std::string named(const char* name, long long value) {
  return std::string(name) + "=" + std::to_string(value);
}
std::string named(const char* name, int value) { return named(name, static_cast<long long>(value)); }
std::string named(const char* name, long value) { return named(name, static_cast<long long>(value)); }
// snprintf rather than iostreams: check() runs inside other programs' processes (the Python
// extension among them), and an iostream call there jumped to a null address on one machine.
std::string named(const char* name, double value) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%g", value);
  return std::string(name) + "=" + buf;
}
std::string named(const char* name, float value) { return named(name, static_cast<double>(value)); }
std::string named(const char* name, const void* value) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%p", value);
  return std::string(name) + "=" + buf;
}
std::string named(const char* name, const std::string& value) {
  return std::string(name) + "=" + value;
}
std::string named(const char* name, DType value) {
  return std::string(name) + "=" + dtype_name(value) + "(" +
         std::to_string(static_cast<int>(value)) + ")";
}

Status fail(StatusCode code, const char* expr, const std::string& why,
            std::initializer_list<std::string> values) {
  std::string msg = std::string(expr) + " failed: ";
  bool first = true;
  for (const std::string& v : values) {
    if (!first) msg += ", ";
    msg += v;
    first = false;
  }
  msg += " (" + why + ")";
  return Status(code, std::move(msg));
}

// One-line checks: MLA_REQUIRE(code, condition, why, MLA_VAL(x), ...).
#define MLA_VAL(x) named(#x, (x))
#define MLA_REQUIRE(code, cond, why, ...)                                     \
  do {                                                                        \
    if (!(cond)) return fail(StatusCode::code, #cond, (why), {__VA_ARGS__}); \
  } while (0)

constexpr int64_t kInt32Limit = int64_t{1} << 31;  // kernels index with int32: values must be < this
constexpr int kTmaAlignBytes = 16;                 // TMA: global address and strides in 16 B units
constexpr int kMaxSeqlenQ = 64;                    // one 64-row tile holds all query tokens
constexpr int kMaxRowsPerKvHead = 1024;            // s_q * h_q / h_kv rows per kv head

// Saturating arithmetic for extents: a saturated value is reported as "too large" rather than
// wrapping into a small, plausible-looking number.
int64_t sat_mul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::numeric_limits<int64_t>::max();
  return r;
}
int64_t sat_add(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::numeric_limits<int64_t>::max();
  return r;
}

bool is_known_dtype(DType d) { return d == DType::kBF16 || d == DType::kFP16; }

uintptr_t addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

// Byte interval [begin, end) that a strided tensor can touch. Sizes are positive (checked
// before), strides non-negative (checked before).
struct Extent {
  uintptr_t begin = 0;
  uintptr_t end = 0;
  bool too_large = false;
};

template <size_t N>
Extent extent_of(const void* base, const std::array<int64_t, N>& sizes,
                 const std::array<int64_t, N>& strides, int64_t elem_bytes) {
  int64_t last = 0;  // element offset of the last element
  for (size_t i = 0; i < N; ++i) last = sat_add(last, sat_mul(sizes[i] - 1, strides[i]));
  const int64_t bytes = sat_mul(sat_add(last, 1), elem_bytes);
  Extent e;
  e.begin = addr(base);
  e.too_large = bytes == std::numeric_limits<int64_t>::max() ||
                static_cast<uint64_t>(bytes) > std::numeric_limits<uintptr_t>::max() - e.begin;
  e.end = e.too_large ? std::numeric_limits<uintptr_t>::max() : e.begin + static_cast<uintptr_t>(bytes);
  return e;
}

bool overlaps(const Extent& a, const Extent& b) { return a.begin < b.end && b.begin < a.end; }

std::string interval(const Extent& e) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "[%p, %p)", reinterpret_cast<const void*>(e.begin),
                reinterpret_cast<const void*>(e.end));
  return buf;
}

// A sufficient condition for distinct (b, s, h) rows of out never sharing an element: ordering
// the dimensions of size > 1 by stride, each stride must step past everything the smaller
// dimensions span. Concurrent CTAs write different rows, so shared elements would be a race.
bool rows_disjoint(std::array<int64_t, 3> sizes, std::array<int64_t, 3> strides, int64_t row_elems) {
  std::array<int, 3> order = {0, 1, 2};
  std::sort(order.begin(), order.end(), [&](int x, int y) { return strides[x] < strides[y]; });
  int64_t span = row_elems;
  for (int d : order) {
    if (sizes[d] <= 1) continue;
    if (strides[d] < span) return false;
    span = sat_add(span, sat_mul(sizes[d] - 1, strides[d]));
  }
  return true;
}

}  // namespace

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kBF16: return "bf16";
    case DType::kFP16: return "fp16";
  }
  return "unknown";
}

void set_contiguous_strides(DecodeArgs& args) {
  const int64_t d_qk = args.head_dim_qk;
  const int64_t d_v = args.head_dim_v;
  args.q_dim_stride = 1;
  args.q_head_stride = d_qk;
  args.q_seq_stride = args.num_heads_q * d_qk;
  args.q_batch_stride = args.seqlen_q * args.q_seq_stride;

  args.kv_dim_stride = 1;
  args.kv_head_stride = d_qk;
  args.kv_token_stride = args.num_heads_kv * d_qk;
  args.kv_page_stride = args.page_size * args.kv_token_stride;

  args.block_table_batch_stride = args.max_pages_per_seq;

  args.out_dim_stride = 1;
  args.out_head_stride = d_v;
  args.out_seq_stride = args.num_heads_q * d_v;
  args.out_batch_stride = args.seqlen_q * args.out_seq_stride;
}

float effective_softmax_scale(const DecodeArgs& args) {
  // NaN compares false and falls through to the default; check() rejects it anyway.
  if (args.softmax_scale > 0.0f) return args.softmax_scale;
  const int d = args.head_dim_qk > 0 ? args.head_dim_qk : kHeadDimQK;
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
}

Status check(const DecodeArgs& args) {
  const DType dtype = args.dtype;
  const DType kv_dtype = args.kv_dtype;
  const int batch = args.batch;
  const int seqlen_q = args.seqlen_q;
  const int num_heads_q = args.num_heads_q;
  const int num_heads_kv = args.num_heads_kv;
  const int head_dim_qk = args.head_dim_qk;
  const int head_dim_v = args.head_dim_v;
  const int page_size = args.page_size;
  const int num_pages = args.num_pages;
  const int max_pages_per_seq = args.max_pages_per_seq;
  const void* q = args.q;
  const int64_t q_batch_stride = args.q_batch_stride, q_seq_stride = args.q_seq_stride,
                q_head_stride = args.q_head_stride, q_dim_stride = args.q_dim_stride;
  const void* kv_cache = args.kv_cache;
  const int64_t kv_page_stride = args.kv_page_stride, kv_token_stride = args.kv_token_stride,
                kv_head_stride = args.kv_head_stride, kv_dim_stride = args.kv_dim_stride;
  const void* block_table = args.block_table;
  const int64_t block_table_batch_stride = args.block_table_batch_stride;
  const void* cache_seqlens = args.cache_seqlens;
  const void* out = args.out;
  const int64_t out_batch_stride = args.out_batch_stride, out_seq_stride = args.out_seq_stride,
                out_head_stride = args.out_head_stride, out_dim_stride = args.out_dim_stride;
  const void* lse = args.lse;
  const float softmax_scale = args.softmax_scale;

  // ---- dtype ----
  MLA_REQUIRE(kInvalidArgument, is_known_dtype(dtype), "dtype must be DType::kBF16 or DType::kFP16",
              MLA_VAL(dtype));
  MLA_REQUIRE(kInvalidArgument, is_known_dtype(kv_dtype),
              "kv_dtype must be DType::kBF16 or DType::kFP16", MLA_VAL(kv_dtype));
  MLA_REQUIRE(kUnsupported, kv_dtype == dtype,
              "kv_cache must have the dtype of q (FP8 KV cache is not supported yet)",
              MLA_VAL(dtype), MLA_VAL(kv_dtype));

  // ---- layout: strides and alignment ----
  MLA_REQUIRE(kUnsupported, q_dim_stride == 1, "the last dimension of q must be contiguous",
              MLA_VAL(q_dim_stride));
  MLA_REQUIRE(kUnsupported, kv_dim_stride == 1, "the last dimension of kv_cache must be contiguous",
              MLA_VAL(kv_dim_stride));
  MLA_REQUIRE(kUnsupported, out_dim_stride == 1, "the last dimension of out must be contiguous",
              MLA_VAL(out_dim_stride));
  MLA_REQUIRE(kUnsupported, q_batch_stride >= 0 && q_seq_stride >= 0 && q_head_stride >= 0,
              "q strides must be >= 0", MLA_VAL(q_batch_stride), MLA_VAL(q_seq_stride),
              MLA_VAL(q_head_stride));
  MLA_REQUIRE(kUnsupported, kv_page_stride >= 0 && kv_token_stride >= 0 && kv_head_stride >= 0,
              "kv_cache strides must be >= 0", MLA_VAL(kv_page_stride), MLA_VAL(kv_token_stride),
              MLA_VAL(kv_head_stride));
  MLA_REQUIRE(kUnsupported, out_batch_stride >= 0 && out_seq_stride >= 0 && out_head_stride >= 0,
              "out strides must be >= 0", MLA_VAL(out_batch_stride), MLA_VAL(out_seq_stride),
              MLA_VAL(out_head_stride));
  MLA_REQUIRE(kUnsupported, block_table_batch_stride >= 0, "block_table_batch_stride must be >= 0",
              MLA_VAL(block_table_batch_stride));

  // 16-byte vector/TMA access: with 2-byte elements, strides must be multiples of 8 elements.
  // A dimension of size 1 never contributes its stride to an address, so its stride is free.
  constexpr int64_t kAlignElems = kTmaAlignBytes / 2;
  const uintptr_t q_addr = addr(q), kv_cache_addr = addr(kv_cache), out_addr = addr(out);
  const uintptr_t lse_addr = addr(lse), block_table_addr = addr(block_table),
                  cache_seqlens_addr = addr(cache_seqlens);
  MLA_REQUIRE(kUnsupported, kv_cache_addr % kTmaAlignBytes == 0,
              "kv_cache must be 16-byte aligned: the kernel loads KV with TMA", MLA_VAL(kv_cache));
  MLA_REQUIRE(kUnsupported, num_pages <= 1 || kv_page_stride % kAlignElems == 0,
              "kv_page_stride must be a multiple of 8 elements (16 bytes) for TMA",
              MLA_VAL(kv_page_stride));
  MLA_REQUIRE(kUnsupported, page_size <= 1 || kv_token_stride % kAlignElems == 0,
              "kv_token_stride must be a multiple of 8 elements (16 bytes) for TMA",
              MLA_VAL(kv_token_stride));
  MLA_REQUIRE(kUnsupported, num_heads_kv <= 1 || kv_head_stride % kAlignElems == 0,
              "kv_head_stride must be a multiple of 8 elements (16 bytes) for TMA",
              MLA_VAL(kv_head_stride));
  MLA_REQUIRE(kUnsupported, q_addr % kTmaAlignBytes == 0,
              "q must be 16-byte aligned for vectorised loads", MLA_VAL(q));
  MLA_REQUIRE(kUnsupported, batch <= 1 || q_batch_stride % kAlignElems == 0,
              "q_batch_stride must be a multiple of 8 elements (16 bytes)", MLA_VAL(q_batch_stride));
  MLA_REQUIRE(kUnsupported, seqlen_q <= 1 || q_seq_stride % kAlignElems == 0,
              "q_seq_stride must be a multiple of 8 elements (16 bytes)", MLA_VAL(q_seq_stride));
  MLA_REQUIRE(kUnsupported, num_heads_q <= 1 || q_head_stride % kAlignElems == 0,
              "q_head_stride must be a multiple of 8 elements (16 bytes)", MLA_VAL(q_head_stride));
  MLA_REQUIRE(kUnsupported, out_addr % kTmaAlignBytes == 0,
              "out must be 16-byte aligned for vectorised stores", MLA_VAL(out));
  MLA_REQUIRE(kUnsupported, batch <= 1 || out_batch_stride % kAlignElems == 0,
              "out_batch_stride must be a multiple of 8 elements (16 bytes)",
              MLA_VAL(out_batch_stride));
  MLA_REQUIRE(kUnsupported, seqlen_q <= 1 || out_seq_stride % kAlignElems == 0,
              "out_seq_stride must be a multiple of 8 elements (16 bytes)", MLA_VAL(out_seq_stride));
  MLA_REQUIRE(kUnsupported, num_heads_q <= 1 || out_head_stride % kAlignElems == 0,
              "out_head_stride must be a multiple of 8 elements (16 bytes)",
              MLA_VAL(out_head_stride));
  MLA_REQUIRE(kInvalidArgument, lse_addr % alignof(float) == 0, "lse must be 4-byte aligned (fp32)",
              MLA_VAL(lse));
  MLA_REQUIRE(kInvalidArgument, block_table_addr % alignof(int32_t) == 0,
              "block_table must be 4-byte aligned (int32)", MLA_VAL(block_table));
  MLA_REQUIRE(kInvalidArgument, cache_seqlens_addr % alignof(int32_t) == 0,
              "cache_seqlens must be 4-byte aligned (int32)", MLA_VAL(cache_seqlens));

  // ---- shape ----
  MLA_REQUIRE(kInvalidArgument, batch > 0, "batch must be > 0", MLA_VAL(batch));
  MLA_REQUIRE(kInvalidArgument, seqlen_q > 0, "seqlen_q must be > 0", MLA_VAL(seqlen_q));
  MLA_REQUIRE(kInvalidArgument, num_heads_q > 0, "num_heads_q must be > 0", MLA_VAL(num_heads_q));
  MLA_REQUIRE(kInvalidArgument, num_heads_kv > 0, "num_heads_kv must be > 0", MLA_VAL(num_heads_kv));
  MLA_REQUIRE(kInvalidArgument, num_heads_q % num_heads_kv == 0, "h_kv must divide h_q",
              MLA_VAL(num_heads_q), MLA_VAL(num_heads_kv));
  MLA_REQUIRE(kUnsupported, head_dim_qk == kHeadDimQK,
              "head_dim_qk must be 576 (512 latent + 64 RoPE dims)", MLA_VAL(head_dim_qk));
  MLA_REQUIRE(kUnsupported, head_dim_v == kHeadDimV,
              "head_dim_v must be 512 (the latent part of each KV row)", MLA_VAL(head_dim_v));
  MLA_REQUIRE(kInvalidArgument, page_size > 0, "page_size must be > 0", MLA_VAL(page_size));
  MLA_REQUIRE(kUnsupported, page_size == kPageSize, "64 is the supported page_size",
              MLA_VAL(page_size));
  MLA_REQUIRE(kInvalidArgument, num_pages > 0, "num_pages must be > 0", MLA_VAL(num_pages));
  MLA_REQUIRE(kInvalidArgument, max_pages_per_seq > 0, "max_pages_per_seq must be > 0",
              MLA_VAL(max_pages_per_seq));
  MLA_REQUIRE(kUnsupported, seqlen_q <= kMaxSeqlenQ,
              "seqlen_q must be <= 64: all query tokens of a request share one 64-row tile",
              MLA_VAL(seqlen_q));
  const int64_t rows_per_kv_head = int64_t{seqlen_q} * num_heads_q / num_heads_kv;
  MLA_REQUIRE(kUnsupported, rows_per_kv_head <= kMaxRowsPerKvHead,
              "seqlen_q * num_heads_q / num_heads_kv must be <= 1024 query rows per kv head",
              MLA_VAL(seqlen_q), MLA_VAL(num_heads_q), MLA_VAL(num_heads_kv),
              MLA_VAL(rows_per_kv_head));

  // The kernels index these quantities with int32.
  const int64_t kv_rows = sat_mul(sat_mul(num_pages, page_size), num_heads_kv);
  MLA_REQUIRE(kUnsupported, kv_rows < kInt32Limit,
              "num_pages * page_size * num_heads_kv (KV rows of the TMA descriptor) must be < 2^31",
              MLA_VAL(num_pages), MLA_VAL(page_size), MLA_VAL(num_heads_kv), MLA_VAL(kv_rows));
  const int64_t max_seq_tokens = int64_t{max_pages_per_seq} * page_size;
  MLA_REQUIRE(kUnsupported, max_seq_tokens < kInt32Limit,
              "max_pages_per_seq * page_size (tokens of one request) must be < 2^31",
              MLA_VAL(max_pages_per_seq), MLA_VAL(page_size), MLA_VAL(max_seq_tokens));
  const int64_t block_table_entries = int64_t{batch} * max_pages_per_seq;
  MLA_REQUIRE(kUnsupported, block_table_entries < kInt32Limit,
              "batch * max_pages_per_seq (block_table entries) must be < 2^31", MLA_VAL(batch),
              MLA_VAL(max_pages_per_seq), MLA_VAL(block_table_entries));
  const int64_t query_rows = sat_mul(int64_t{batch} * seqlen_q, num_heads_q);
  MLA_REQUIRE(kUnsupported, query_rows < kInt32Limit,
              "batch * seqlen_q * num_heads_q (query rows, lse elements) must be < 2^31",
              MLA_VAL(batch), MLA_VAL(seqlen_q), MLA_VAL(num_heads_q), MLA_VAL(query_rows));

  // ---- scalars ----
  MLA_REQUIRE(kInvalidArgument, std::isfinite(softmax_scale),
              "softmax_scale must be finite (> 0, or <= 0 for the default 576^-0.5)",
              MLA_VAL(softmax_scale));

  // ---- pointers ----
  MLA_REQUIRE(kInvalidArgument, q != nullptr, "q must be a device pointer", MLA_VAL(q));
  MLA_REQUIRE(kInvalidArgument, kv_cache != nullptr, "kv_cache must be a device pointer",
              MLA_VAL(kv_cache));
  MLA_REQUIRE(kInvalidArgument, block_table != nullptr, "block_table must be a device pointer",
              MLA_VAL(block_table));
  MLA_REQUIRE(kInvalidArgument, cache_seqlens != nullptr, "cache_seqlens must be a device pointer",
              MLA_VAL(cache_seqlens));
  MLA_REQUIRE(kInvalidArgument, out != nullptr, "out must be a device pointer", MLA_VAL(out));
  MLA_REQUIRE(kInvalidArgument, lse != nullptr, "lse must be a device pointer", MLA_VAL(lse));

  // ---- aliasing: what is written (out, lse) must not overlap anything else ----
  const int64_t elem = 2;
  const Extent q_ext = extent_of<4>(q, {batch, seqlen_q, num_heads_q, head_dim_qk},
                                    {q_batch_stride, q_seq_stride, q_head_stride, 1}, elem);
  const Extent kv_ext = extent_of<4>(kv_cache, {num_pages, page_size, num_heads_kv, head_dim_qk},
                                     {kv_page_stride, kv_token_stride, kv_head_stride, 1}, elem);
  const Extent out_ext = extent_of<4>(out, {batch, seqlen_q, num_heads_q, head_dim_v},
                                      {out_batch_stride, out_seq_stride, out_head_stride, 1}, elem);
  const Extent lse_ext = extent_of<1>(lse, {query_rows}, {1}, sizeof(float));
  const Extent bt_ext = extent_of<2>(block_table, {batch, max_pages_per_seq},
                                     {block_table_batch_stride, 1}, sizeof(int32_t));
  const Extent sl_ext = extent_of<1>(cache_seqlens, {batch}, {1}, sizeof(int32_t));
  MLA_REQUIRE(kInvalidArgument, !q_ext.too_large, "q strides address more than the address space",
              MLA_VAL(q_batch_stride), MLA_VAL(q_seq_stride), MLA_VAL(q_head_stride));
  MLA_REQUIRE(kInvalidArgument, !kv_ext.too_large,
              "kv_cache strides address more than the address space", MLA_VAL(kv_page_stride),
              MLA_VAL(kv_token_stride), MLA_VAL(kv_head_stride));
  MLA_REQUIRE(kInvalidArgument, !out_ext.too_large,
              "out strides address more than the address space", MLA_VAL(out_batch_stride),
              MLA_VAL(out_seq_stride), MLA_VAL(out_head_stride));
  MLA_REQUIRE(kInvalidArgument, !bt_ext.too_large,
              "block_table_batch_stride addresses more than the address space",
              MLA_VAL(block_table_batch_stride));
  MLA_REQUIRE(kInvalidArgument,
              rows_disjoint({batch, seqlen_q, num_heads_q},
                            {out_batch_stride, out_seq_stride, out_head_stride}, head_dim_v),
              "out strides must give every (batch, seq, head) row its own 512 elements",
              MLA_VAL(out_batch_stride), MLA_VAL(out_seq_stride), MLA_VAL(out_head_stride));
  // Each written tensor against every other one, in this order. The byte intervals are only
  // formatted when a check fails.
  struct NamedExtent {
    const char* name;
    const Extent* ext;
  };
  const NamedExtent q_n{"q", &q_ext}, kv_n{"kv_cache", &kv_ext}, out_n{"out", &out_ext},
      lse_n{"lse", &lse_ext}, bt_n{"block_table", &bt_ext}, sl_n{"cache_seqlens", &sl_ext};
  const std::pair<NamedExtent, NamedExtent> must_not_overlap[] = {
      {out_n, q_n},  {out_n, kv_n}, {out_n, lse_n}, {out_n, bt_n}, {out_n, sl_n},
      {lse_n, q_n},  {lse_n, kv_n}, {lse_n, bt_n},  {lse_n, sl_n}};
  for (const auto& [written, other] : must_not_overlap) {
    if (!overlaps(*written.ext, *other.ext)) continue;
    const std::string w(written.name), o(other.name);
    return fail(StatusCode::kInvalidArgument, ("!overlaps(" + w + ", " + o + ")").c_str(),
                w + " must not overlap " + o,
                {named((w + "_bytes").c_str(), interval(*written.ext)),
                 named((o + "_bytes").c_str(), interval(*other.ext))});
  }

  // ---- host-visible lengths ----
  if (args.host_cache_seqlens != nullptr) {
    for (int i = 0; i < batch; ++i) {
      const std::string request = "request " + std::to_string(i);
      const int32_t len = args.host_cache_seqlens[i];
      const std::string name = "host_cache_seqlens[" + std::to_string(i) + "]";
      if (len < 0) {
        return fail(StatusCode::kInvalidArgument, (name + " >= 0").c_str(),
                    "cache length of " + request + " must be >= 0",
                    {named(name.c_str(), len)});
      }
      if (len > max_seq_tokens) {
        return fail(StatusCode::kInvalidArgument,
                    (name + " <= max_pages_per_seq * page_size").c_str(),
                    "cache length of " + request + " does not fit in its block_table row",
                    {named(name.c_str(), len), MLA_VAL(max_pages_per_seq), MLA_VAL(page_size)});
      }
    }
  }
  return Status::Ok();
}

#undef MLA_REQUIRE
#undef MLA_VAL

}  // namespace mla
