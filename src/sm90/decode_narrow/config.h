// Compile-time constants of the sm90 "narrow" MLA decode kernel: the variant for at most 16
// query rows per kv head (s_q * h_q / h_kv <= 16, e.g. h_q = 16 with s_q = 1, the DeepSeek
// heads of one GPU under 8-way tensor parallelism).
#pragma once

#include "sm90/decode_dense/config.h"

namespace mla::sm90::decode_narrow {

using decode_dense::kBlockN;
using decode_dense::kHeadDimQK;
using decode_dense::kHeadDimV;
using decode_dense::kNumTilesQK;
using decode_dense::kNumTilesV;
using decode_dense::kTileBytes;
using decode_dense::kTileDim;

// Query rows per CTA: the N of the transposed products S^T = K Q^T and O^T = V^T P^T. The
// dense kernel's Q K^T puts the rows in wgmma's M, which is at least 64: with 16 rows three
// quarters of its tensor work and of its Q operand traffic are padding.
inline constexpr int kRows = 16;
inline constexpr int kQTileBytes = kRows * kTileDim * 2;  // 2 KiB: 16 rows x 64 dims

// KV tiles (64 tokens x 64 dims, 8 KiB, one TMA box) in a ring; a block is 9 consecutive ring
// positions. 18 tiles (2 blocks): the consumer holds at most one block, so 9 or more tiles
// (72 KiB per SM, about 9 MiB over the GPU) are always being loaded. Measured on b = 128, s_k =
// 8192 (case A, DRAM-bound; three alternations each): 18 tiles 0.8% faster than 23 (all that fits
// next to two Q slots) in 6 of 6 pairs, 16 tiles 2% slower than 23; case F alike for all three.
inline constexpr int kRingTiles = 18;
inline constexpr int kNumQSlots = 2;  // Q of the current request and the next one

inline constexpr int kConsumerThreads = 128;  // one warpgroup: both products and the softmax
inline constexpr int kConsumerWarps = kConsumerThreads / 32;
inline constexpr int kThreads = kConsumerThreads + 32;  // + one producer warp issuing the TMA

static_assert(kRows % 8 == 0 && kRows <= 256, "kRows must be a valid wgmma N");

// Named barriers (id 0 is __syncthreads), all over the 128 consumer threads.
enum class NamedBarrier : int {
  kColumnMax = 1,   // per-warp column maxima of a block's scores published
  kPReady = 2,      // P of a block (and zeroed tail V rows) in shared memory
  kQReady = 3,      // Q of a request written by plain loads
  kColumnSum = 4,   // per-warp column sums published at a request's end
  kStage = 5,       // output rows staged in shared memory (and read back, between passes)
};

}  // namespace mla::sm90::decode_narrow
