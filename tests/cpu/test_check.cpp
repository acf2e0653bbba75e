// mla::check: one test per rejection, acceptance of valid arguments, and the message contract
// (every message names the offending argument and says what was expected).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "mla/decode.h"

namespace {

using mla::DecodeArgs;
using mla::DType;
using mla::StatusCode;

// check() never dereferences device pointers, so tests use fake, well-separated addresses
// (1 TiB apart: no valid test shape makes two tensors overlap by accident).
template <typename T>
T* fake_ptr(int slot) {
  return reinterpret_cast<T*>(static_cast<uintptr_t>(slot) << 40);
}

DecodeArgs valid_args(int batch = 4, int s_q = 1, int h_q = 128, int h_kv = 1, int num_pages = 64,
                      int max_pages = 16) {
  DecodeArgs a;
  a.batch = batch;
  a.seqlen_q = s_q;
  a.num_heads_q = h_q;
  a.num_heads_kv = h_kv;
  a.num_pages = num_pages;
  a.max_pages_per_seq = max_pages;
  mla::set_contiguous_strides(a);
  a.q = fake_ptr<const void>(1);
  a.kv_cache = fake_ptr<const void>(2);
  a.block_table = fake_ptr<const int32_t>(3);
  a.cache_seqlens = fake_ptr<const int32_t>(4);
  a.out = fake_ptr<void>(5);
  a.lse = fake_ptr<float>(6);
  return a;
}

// Asserts a rejection with the given code whose message mentions every given fragment, plus the
// shape all messages share: "<expression> failed: <values> (<expectation>)".
void expect_reject(const DecodeArgs& a, StatusCode code, std::initializer_list<const char*> fragments) {
  const mla::Status st = mla::check(a);
  ASSERT_FALSE(st.ok()) << "expected a rejection";
  EXPECT_EQ(st.code(), code) << st.to_string();
  EXPECT_NE(st.message().find(" failed: "), std::string::npos) << st.message();
  EXPECT_EQ(st.message().back(), ')') << st.message();
  for (const char* f : fragments) {
    EXPECT_NE(st.message().find(f), std::string::npos) << "missing '" << f << "' in: " << st.message();
  }
}

// ---- acceptance ----

TEST(Check, AcceptsDeepSeekDecodeShape) {
  const mla::Status st = mla::check(valid_args());
  EXPECT_TRUE(st.ok()) << st.to_string();
}

TEST(Check, AcceptsRandomValidShapes) {
  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int trial = 0; trial < 200; ++trial) {
    const int h_kv = 1 << pick(0, 3);
    const int s_q = pick(1, 8);
    const int h_q = h_kv * pick(1, 1024 / s_q);  // keeps s_q * h_q / h_kv <= 1024
    DecodeArgs a = valid_args(pick(1, 300), s_q, h_q, h_kv, pick(1, 5000), pick(1, 600));
    a.dtype = a.kv_dtype = pick(0, 1) ? DType::kFP16 : DType::kBF16;
    a.causal = pick(0, 1);
    a.softmax_scale = pick(0, 1) ? 0.0f : 0.01f * pick(1, 100);
    const mla::Status st = mla::check(a);
    EXPECT_TRUE(st.ok()) << "seed " << seed << " trial " << trial << ": " << st.to_string();
  }
}

TEST(Check, AcceptsPaddedAlignedStrides) {
  DecodeArgs a = valid_args(8, 2, 64, 2);
  a.q_head_stride = 640;
  a.q_seq_stride = a.q_head_stride * 64 + 8;
  a.q_batch_stride = a.q_seq_stride * 2;
  a.kv_head_stride = 584;
  a.kv_token_stride = 2 * 584;
  a.kv_page_stride = 64 * a.kv_token_stride + 64;
  a.out_head_stride = 520;
  a.out_seq_stride = 520 * 64;
  a.out_batch_stride = a.out_seq_stride * 2;
  a.block_table_batch_stride = 100;
  const mla::Status st = mla::check(a);
  EXPECT_TRUE(st.ok()) << st.to_string();
}

TEST(Check, IgnoresStrideOfSizeOneDimension) {
  // A size-1 dimension never contributes its stride to an address (e.g. h_kv = 1, s_q = 1).
  DecodeArgs a = valid_args(4, 1, 16, 1);
  a.kv_head_stride = 1;
  a.q_seq_stride = 3;
  a.out_seq_stride = 5;
  const mla::Status st = mla::check(a);
  EXPECT_TRUE(st.ok()) << st.to_string();
}

TEST(Check, AcceptsHostLengthsAtTheLimits) {
  DecodeArgs a = valid_args(3);
  const std::vector<int32_t> lens = {0, 1, a.max_pages_per_seq * a.page_size};
  a.host_cache_seqlens = lens.data();
  const mla::Status st = mla::check(a);
  EXPECT_TRUE(st.ok()) << st.to_string();
}

TEST(Check, SetContiguousStridesMatchesDocumentedLayout) {
  DecodeArgs a = valid_args(3, 2, 32, 4, 10, 7);
  EXPECT_EQ(a.q_head_stride, 576);
  EXPECT_EQ(a.q_seq_stride, 32 * 576);
  EXPECT_EQ(a.q_batch_stride, 2 * 32 * 576);
  EXPECT_EQ(a.kv_head_stride, 576);
  EXPECT_EQ(a.kv_token_stride, 4 * 576);
  EXPECT_EQ(a.kv_page_stride, 64 * 4 * 576);
  EXPECT_EQ(a.out_head_stride, 512);
  EXPECT_EQ(a.out_seq_stride, 32 * 512);
  EXPECT_EQ(a.out_batch_stride, 2 * 32 * 512);
  EXPECT_EQ(a.block_table_batch_stride, 7);
  EXPECT_EQ(a.q_dim_stride, 1);
  EXPECT_EQ(a.kv_dim_stride, 1);
  EXPECT_EQ(a.out_dim_stride, 1);
}

TEST(Check, EffectiveSoftmaxScale) {
  DecodeArgs a = valid_args();
  a.softmax_scale = 0.0f;
  EXPECT_FLOAT_EQ(mla::effective_softmax_scale(a), 1.0f / 24.0f);
  a.softmax_scale = -1.0f;
  EXPECT_FLOAT_EQ(mla::effective_softmax_scale(a), 1.0f / 24.0f);
  a.softmax_scale = 0.125f;
  EXPECT_FLOAT_EQ(mla::effective_softmax_scale(a), 0.125f);
}

TEST(Check, DtypeNames) {
  EXPECT_STREQ(mla::dtype_name(DType::kBF16), "bf16");
  EXPECT_STREQ(mla::dtype_name(DType::kFP16), "fp16");
  EXPECT_STREQ(mla::dtype_name(static_cast<DType>(7)), "unknown");
}

// ---- dtype ----

TEST(CheckReject, UnknownDtype) {
  DecodeArgs a = valid_args();
  a.dtype = a.kv_dtype = static_cast<DType>(9);
  expect_reject(a, StatusCode::kInvalidArgument, {"dtype=unknown(9)", "kBF16"});
}

TEST(CheckReject, KvDtypeDiffersFromQ) {
  DecodeArgs a = valid_args();
  a.kv_dtype = DType::kFP16;
  expect_reject(a, StatusCode::kUnsupported, {"kv_dtype == dtype", "dtype=bf16", "kv_dtype=fp16"});
}

// ---- layout ----

TEST(CheckReject, LastDimStrideNotOne) {
  DecodeArgs a = valid_args();
  a.q_dim_stride = 2;
  expect_reject(a, StatusCode::kUnsupported, {"q_dim_stride=2"});
  a = valid_args();
  a.kv_dim_stride = 0;
  expect_reject(a, StatusCode::kUnsupported, {"kv_dim_stride=0"});
  a = valid_args();
  a.out_dim_stride = -1;
  expect_reject(a, StatusCode::kUnsupported, {"out_dim_stride=-1"});
}

TEST(CheckReject, NegativeStrides) {
  DecodeArgs a = valid_args();
  a.q_seq_stride = -576;
  expect_reject(a, StatusCode::kUnsupported, {"q_seq_stride=-576", ">= 0"});
  a = valid_args();
  a.kv_page_stride = -8;
  expect_reject(a, StatusCode::kUnsupported, {"kv_page_stride=-8"});
  a = valid_args();
  a.out_batch_stride = -512;
  expect_reject(a, StatusCode::kUnsupported, {"out_batch_stride=-512"});
  a = valid_args();
  a.block_table_batch_stride = -1;
  expect_reject(a, StatusCode::kUnsupported, {"block_table_batch_stride=-1"});
}

TEST(CheckReject, KvStridesNotMultipleOf8) {
  DecodeArgs a = valid_args();
  a.kv_token_stride = 580;
  a.kv_page_stride = 64 * 580;
  expect_reject(a, StatusCode::kUnsupported, {"kv_token_stride=580", "TMA"});
  a = valid_args();
  a.kv_page_stride += 4;
  expect_reject(a, StatusCode::kUnsupported, {"kv_page_stride", "multiple of 8"});
  a = valid_args(4, 1, 16, 2);
  a.kv_head_stride = 577;
  a.kv_token_stride = 2 * 584;
  a.kv_page_stride = 64 * 2 * 584;
  expect_reject(a, StatusCode::kUnsupported, {"kv_head_stride=577"});
}

TEST(CheckReject, KvCacheMisaligned) {
  DecodeArgs a = valid_args();
  a.kv_cache = reinterpret_cast<const void*>((uintptr_t{2} << 40) + 8);
  expect_reject(a, StatusCode::kUnsupported, {"kv_cache=", "16-byte aligned", "TMA"});
}

TEST(CheckReject, QAndOutMisaligned) {
  DecodeArgs a = valid_args();
  a.q = reinterpret_cast<const void*>((uintptr_t{1} << 40) + 2);
  expect_reject(a, StatusCode::kUnsupported, {"q=", "16-byte aligned"});
  a = valid_args();
  a.out = reinterpret_cast<void*>((uintptr_t{5} << 40) + 6);
  expect_reject(a, StatusCode::kUnsupported, {"out=", "16-byte aligned"});
}

TEST(CheckReject, QAndOutStridesNotMultipleOf8) {
  DecodeArgs a = valid_args();
  a.q_head_stride = 578;
  expect_reject(a, StatusCode::kUnsupported, {"q_head_stride=578"});
  a = valid_args(4, 2);
  a.q_seq_stride += 1;
  expect_reject(a, StatusCode::kUnsupported, {"q_seq_stride"});
  a = valid_args();
  a.q_batch_stride += 4;
  expect_reject(a, StatusCode::kUnsupported, {"q_batch_stride"});
  a = valid_args();
  a.out_head_stride = 516;
  expect_reject(a, StatusCode::kUnsupported, {"out_head_stride=516"});
  a = valid_args();
  a.out_batch_stride += 2;
  expect_reject(a, StatusCode::kUnsupported, {"out_batch_stride"});
}

TEST(CheckReject, LseAndIndexArraysMisaligned) {
  DecodeArgs a = valid_args();
  a.lse = reinterpret_cast<float*>((uintptr_t{6} << 40) + 2);
  expect_reject(a, StatusCode::kInvalidArgument, {"lse=", "4-byte"});
  a = valid_args();
  a.block_table = reinterpret_cast<const int32_t*>((uintptr_t{3} << 40) + 1);
  expect_reject(a, StatusCode::kInvalidArgument, {"block_table="});
  a = valid_args();
  a.cache_seqlens = reinterpret_cast<const int32_t*>((uintptr_t{4} << 40) + 3);
  expect_reject(a, StatusCode::kInvalidArgument, {"cache_seqlens="});
}

// ---- shape ----

TEST(CheckReject, BatchNotPositive) {
  DecodeArgs a = valid_args();
  a.batch = 0;
  expect_reject(a, StatusCode::kInvalidArgument, {"batch > 0", "batch=0"});
  a.batch = -3;
  expect_reject(a, StatusCode::kInvalidArgument, {"batch=-3"});
}

TEST(CheckReject, SeqlenQNotPositive) {
  DecodeArgs a = valid_args();
  a.seqlen_q = 0;
  expect_reject(a, StatusCode::kInvalidArgument, {"seqlen_q=0"});
}

TEST(CheckReject, NumHeadsQNotPositive) {
  DecodeArgs a = valid_args();
  a.num_heads_q = 0;
  expect_reject(a, StatusCode::kInvalidArgument, {"num_heads_q=0"});
}

TEST(CheckReject, NumHeadsKvNotPositive) {
  DecodeArgs a = valid_args();
  a.num_heads_kv = 0;
  expect_reject(a, StatusCode::kInvalidArgument, {"num_heads_kv=0"});
}

TEST(CheckReject, KvHeadsDoNotDivideQHeads) {
  DecodeArgs a = valid_args(2, 1, 10, 3);
  a.kv_head_stride = 576;
  const mla::Status st = mla::check(a);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(),
            "num_heads_q % num_heads_kv == 0 failed: num_heads_q=10, num_heads_kv=3 "
            "(h_kv must divide h_q)");
}

TEST(CheckReject, HeadDimQK) {
  DecodeArgs a = valid_args();
  a.head_dim_qk = 512;
  expect_reject(a, StatusCode::kUnsupported, {"head_dim_qk=512", "576"});
}

TEST(CheckReject, HeadDimV) {
  DecodeArgs a = valid_args();
  a.head_dim_v = 576;
  expect_reject(a, StatusCode::kUnsupported, {"head_dim_v=576", "512"});
}

TEST(CheckReject, PageSizeNot64) {
  for (int ps : {1, 16, 32, 128, 256}) {
    DecodeArgs a = valid_args();
    a.page_size = ps;
    mla::set_contiguous_strides(a);
    expect_reject(a, StatusCode::kUnsupported, {"page_size=", "64 is the supported page_size"});
  }
}

TEST(CheckReject, PageSizeNotPositive) {
  DecodeArgs a = valid_args();
  a.page_size = 0;
  expect_reject(a, StatusCode::kInvalidArgument, {"page_size=0"});
}

TEST(CheckReject, NumPagesNotPositive) {
  DecodeArgs a = valid_args();
  a.num_pages = 0;
  expect_reject(a, StatusCode::kInvalidArgument, {"num_pages=0"});
}

TEST(CheckReject, MaxPagesPerSeqNotPositive) {
  DecodeArgs a = valid_args();
  a.max_pages_per_seq = -1;
  expect_reject(a, StatusCode::kInvalidArgument, {"max_pages_per_seq=-1"});
}

TEST(CheckReject, SeqlenQAbove64) {
  DecodeArgs a = valid_args(2, 65, 1, 1);
  expect_reject(a, StatusCode::kUnsupported, {"seqlen_q=65", "<= 64"});
}

TEST(CheckReject, RowsPerKvHeadAbove1024) {
  DecodeArgs a = valid_args(2, 16, 128, 1);
  expect_reject(a, StatusCode::kUnsupported, {"rows_per_kv_head=2048", "1024"});
  // The same heads spread over 2 kv heads fit.
  a = valid_args(2, 16, 128, 2);
  EXPECT_TRUE(mla::check(a).ok()) << mla::check(a).to_string();
}

TEST(CheckReject, KvRowsOverflowInt32) {
  DecodeArgs a = valid_args(1, 1, 16, 1, 1 << 25, 4);  // 2^25 pages * 64 tokens = 2^31 rows
  expect_reject(a, StatusCode::kUnsupported, {"kv_rows=2147483648", "2^31"});
  a = valid_args(1, 1, 16, 1, (1 << 25) - 1, 4);
  EXPECT_TRUE(mla::check(a).ok()) << mla::check(a).to_string();
}

TEST(CheckReject, BlockTableEntriesOverflowInt32) {
  DecodeArgs a = valid_args(1 << 16, 1, 16, 1, 64, 1 << 15);
  expect_reject(a, StatusCode::kUnsupported, {"block_table_entries=2147483648"});
}

TEST(CheckReject, SequenceTokensOverflowInt32) {
  DecodeArgs a = valid_args(1, 1, 16, 1, 64, 1 << 25);
  expect_reject(a, StatusCode::kUnsupported, {"max_seq_tokens=2147483648"});
}

TEST(CheckReject, QueryRowsOverflowInt32) {
  DecodeArgs a = valid_args(1 << 21, 8, 128, 1, 64, 1);
  expect_reject(a, StatusCode::kUnsupported, {"query_rows=2147483648"});
}

TEST(CheckReject, NonFiniteSoftmaxScale) {
  DecodeArgs a = valid_args();
  a.softmax_scale = std::numeric_limits<float>::quiet_NaN();
  expect_reject(a, StatusCode::kInvalidArgument, {"softmax_scale=nan", "finite"});
  a.softmax_scale = std::numeric_limits<float>::infinity();
  expect_reject(a, StatusCode::kInvalidArgument, {"softmax_scale=inf"});
  a.softmax_scale = -std::numeric_limits<float>::infinity();
  expect_reject(a, StatusCode::kInvalidArgument, {"softmax_scale=-inf"});
}

// ---- pointers ----

// Each required pointer, set to null on its own, is rejected with its own name in the message.
TEST(CheckReject, NullPointers) {
  struct Case {
    const char* expected;
    void (*make_null)(DecodeArgs&);
  };
  const Case cases[] = {
      {"q != nullptr", [](DecodeArgs& a) { a.q = nullptr; }},
      {"kv_cache != nullptr", [](DecodeArgs& a) { a.kv_cache = nullptr; }},
      {"block_table != nullptr", [](DecodeArgs& a) { a.block_table = nullptr; }},
      {"cache_seqlens != nullptr", [](DecodeArgs& a) { a.cache_seqlens = nullptr; }},
      {"out != nullptr", [](DecodeArgs& a) { a.out = nullptr; }},
      {"lse != nullptr", [](DecodeArgs& a) { a.lse = nullptr; }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.expected);
    DecodeArgs a = valid_args();
    c.make_null(a);
    expect_reject(a, StatusCode::kInvalidArgument, {c.expected});
  }
}

// ---- aliasing ----

TEST(CheckReject, OutOverlapsQ) {
  DecodeArgs a = valid_args();
  // out starts inside the last byte range of q.
  a.out = static_cast<char*>(const_cast<void*>(a.q)) + 2 * (a.q_batch_stride * a.batch - 576);
  expect_reject(a, StatusCode::kInvalidArgument, {"out must not overlap q", "out_bytes=", "q_bytes="});
}

TEST(CheckReject, OutIsQ) {
  DecodeArgs a = valid_args();
  a.out = const_cast<void*>(a.q);
  expect_reject(a, StatusCode::kInvalidArgument, {"out must not overlap q"});
}

TEST(CheckReject, OutOverlapsKvCache) {
  DecodeArgs a = valid_args();
  a.out = static_cast<char*>(const_cast<void*>(a.kv_cache)) + 2 * a.kv_page_stride * 3;
  expect_reject(a, StatusCode::kInvalidArgument, {"out must not overlap kv_cache"});
}

TEST(CheckReject, OutOverlapsIndexArrays) {
  DecodeArgs a = valid_args();
  a.out = reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(a.block_table) - 16);
  expect_reject(a, StatusCode::kInvalidArgument, {"out must not overlap block_table"});
  a = valid_args();
  a.out = reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(a.cache_seqlens));
  expect_reject(a, StatusCode::kInvalidArgument, {"out must not overlap cache_seqlens"});
}

TEST(CheckReject, LseOverlapsOut) {
  DecodeArgs a = valid_args();
  a.lse = reinterpret_cast<float*>(static_cast<char*>(a.out) + 1024);
  expect_reject(a, StatusCode::kInvalidArgument, {"out must not overlap lse"});
}

TEST(CheckReject, LseOverlapsInputs) {
  DecodeArgs a = valid_args();
  a.lse = reinterpret_cast<float*>(const_cast<void*>(a.q));
  expect_reject(a, StatusCode::kInvalidArgument, {"lse must not overlap q"});
  a = valid_args();
  a.lse = reinterpret_cast<float*>(static_cast<char*>(const_cast<void*>(a.kv_cache)) + 64);
  expect_reject(a, StatusCode::kInvalidArgument, {"lse must not overlap kv_cache"});
  a = valid_args();
  a.lse = reinterpret_cast<float*>(const_cast<int32_t*>(a.block_table));
  expect_reject(a, StatusCode::kInvalidArgument, {"lse must not overlap block_table"});
  a = valid_args();
  a.lse = reinterpret_cast<float*>(const_cast<int32_t*>(a.cache_seqlens));
  expect_reject(a, StatusCode::kInvalidArgument, {"lse must not overlap cache_seqlens"});
}

TEST(CheckReject, OutRowsOverlapEachOther) {
  DecodeArgs a = valid_args(4, 1, 16);
  a.out_head_stride = 256;  // heads would share 256 of their 512 elements
  expect_reject(a, StatusCode::kInvalidArgument, {"out_head_stride=256", "own 512 elements"});
  a = valid_args(4, 1, 16);
  a.out_batch_stride = 0;  // broadcast over batch: every request writes the same rows
  expect_reject(a, StatusCode::kInvalidArgument, {"out_batch_stride=0"});
}

TEST(CheckReject, InputsMaySharePagesButNotWithOutputs) {
  // Reading q and kv from one buffer is legal (both are read-only).
  DecodeArgs a = valid_args();
  a.q = a.kv_cache;
  EXPECT_TRUE(mla::check(a).ok()) << mla::check(a).to_string();
}

TEST(CheckReject, StridesBeyondAddressSpace) {
  DecodeArgs a = valid_args();
  a.q_batch_stride = int64_t{1} << 62;
  expect_reject(a, StatusCode::kInvalidArgument, {"q_batch_stride=", "address space"});
}

// ---- host lengths ----

TEST(CheckReject, NegativeHostLength) {
  DecodeArgs a = valid_args(5);
  const std::vector<int32_t> lens = {10, 0, 64, -1, 7};
  a.host_cache_seqlens = lens.data();
  expect_reject(a, StatusCode::kInvalidArgument, {"host_cache_seqlens[3]=-1", "request 3"});
}

TEST(CheckReject, HostLengthBeyondBlockTableRow) {
  DecodeArgs a = valid_args(3);
  const int32_t too_long = a.max_pages_per_seq * a.page_size + 1;
  const std::vector<int32_t> lens = {1, too_long, 2};
  a.host_cache_seqlens = lens.data();
  expect_reject(a, StatusCode::kInvalidArgument,
                {"host_cache_seqlens[1]=1025", "request 1", "max_pages_per_seq=16", "page_size=64"});
}

// ---- order ----

TEST(CheckOrder, DtypeIsReportedBeforeShapeAndPointers) {
  DecodeArgs a;  // everything wrong: batch 0, null pointers
  a.kv_dtype = DType::kFP16;
  expect_reject(a, StatusCode::kUnsupported, {"kv_dtype"});
  a.kv_dtype = DType::kBF16;
  expect_reject(a, StatusCode::kInvalidArgument, {"batch=0"});
}

TEST(CheckOrder, DefaultConstructedArgsAreRejectedNotCrashed) {
  const mla::Status st = mla::check(DecodeArgs{});
  EXPECT_FALSE(st.ok());
  EXPECT_FALSE(st.message().empty());
}

}  // namespace
